#!/bin/sh
# Runs every check and test of the project; exits non-zero on the first
# failure. Used by CI (.ci/run) and by the README.
set -eu
cd "$(dirname "$0")/.."
sh scripts/ensure-toolchain.sh
step() { printf '\n==> %s\n' "$*"; }

step "Rust: format, lint (warnings are errors), tests"
cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace --quiet

step "Fuzzing: regression inputs, then a short run of every cargo-fuzz target"
sh scripts/fuzz.sh "${LOCKER_FUZZ_SECONDS:-20}"

step "Erlang (rebar3): compile with warnings as errors, eunit, multi-node common test, dialyzer"
# The lockerd suite starts real lockerd processes: build them first.
cargo build --release --quiet -p lockerd --bins --examples
rebar3 compile
rebar3 eunit
rebar3 ct
rebar3 dialyzer

step "Elixir (Mix): format, compile with warnings as errors, tests"
mix format --check-formatted
mix compile --warnings-as-errors --force
# elixir/test/locker_docs_test.exs runs the code blocks of README.md,
# docs/*.md and the other READMEs (or lists why one cannot run) and the
# @doc examples.
mix test
sh scripts/dialyzer-elixir.sh

step "Consumers: rebar3 (git, _checkouts) and Mix (path, git) projects that depend on this one"
sh scripts/consumer-test.sh

step "The README's demo (scripts/demo.sh): both local clusters, start to finish"
demo_log=$(mktemp)
sh scripts/demo.sh >"$demo_log" 2>&1 || { cat "$demo_log"; echo "the demo failed" >&2; exit 1; }
rm -f "$demo_log"

step "lockerd: --help"
cargo run --quiet -p lockerd -- --help >/dev/null

printf '\nAll checks passed.\n'
