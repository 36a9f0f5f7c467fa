#!/bin/sh
# Builds throwaway projects that depend on this repository the way users
# add it, and takes a lock in each: rebar3 with a git dependency and with
# _checkouts, Mix with a path and with a git dependency. The git
# dependencies fetch the committed HEAD. Run by scripts/test.sh.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
rev=$(git -C "$root" rev-parse HEAD)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Reuse the compiled Rust dependencies of this checkout.
export CARGO_TARGET_DIR="$root/target"
step() { printf '\n==> consumer: %s\n' "$*"; }

rebar_app() { # $1: project dir
  mkdir -p "$1/src"
  cat > "$1/src/consumer.app.src" <<'APP'
{application, consumer, [{description, "uses locker"}, {vsn, "0.1.0"}, {applications, [kernel, stdlib, locker]}]}.
APP
  cat > "$1/src/consumer.erl" <<'ERL'
-module(consumer).
-export([go/0]).
go() ->
    {ok, _} = locker:start_link(1),
    ok = locker:set_nodes([node()], [node()], []),
    {ok, 1, 1, 1} = locker:lock(k, self(), 10000),
    {ok, _} = locker:dirty_read(k),
    ok.
ERL
}

rebar_check() { # $1: project dir
  (cd "$1" && rebar3 compile >/dev/null &&
    erl -noshell -pa _build/default/lib/*/ebin -pa _build/default/checkouts/*/ebin \
      -eval 'ok = consumer:go(), io:format("consumer: lock taken~n"), halt().')
}

step "rebar3, git dependency"
rebar_app "$tmp/rebar_git"
printf '{deps, [{locker, {git, "file://%s", {ref, "%s"}}}]}.\n' "$root" "$rev" > "$tmp/rebar_git/rebar.config"
rebar_check "$tmp/rebar_git"

step "rebar3, _checkouts"
rebar_app "$tmp/rebar_co"
printf '{deps, [locker]}.\n' > "$tmp/rebar_co/rebar.config"
mkdir -p "$tmp/rebar_co/_checkouts"
ln -s "$root" "$tmp/rebar_co/_checkouts/locker"
rebar_check "$tmp/rebar_co"

mix_app() { # $1: project dir, $2: the dependency
  mkdir -p "$1"
  cat > "$1/mix.exs" <<EXS
defmodule Consumer.MixProject do
  use Mix.Project
  def project, do: [app: :consumer, version: "0.1.0", deps: [$2]]
  def application, do: [extra_applications: [:logger]]
end
EXS
  (cd "$1" && mix deps.get >/dev/null && mix compile >/dev/null &&
    mix run -e '{:ok, 1, 1, 1} = Locker.lock("k", self(), 10_000); IO.puts("consumer: lock taken")')
}

step "Mix, path dependency"
mix_app "$tmp/mix_path" "{:locker, path: \"$root\"}"

step "Mix, git dependency"
mix_app "$tmp/mix_git" "{:locker, git: \"file://$root\", ref: \"$rev\"}"

step "Mix, path dependency on the package's files only (what a Hex package would ship)"
pkg="$tmp/package/locker"
mkdir -p "$pkg"
files=$(cd "$root" && elixir -e 'Mix.start(); Code.require_file("mix.exs"); IO.puts(Enum.join(Mix.Project.config()[:package][:files], " "))')
# shellcheck disable=SC2086 # the list is words on purpose
(cd "$root" && git ls-files -z -- $files | xargs -0 cp -P --parents -t "$pkg")
mix_app "$tmp/mix_package" "{:locker, path: \"$pkg\"}"
