#!/bin/sh
# Short fuzzing run (CI): replays the fuzz regression tests, then builds
# every cargo-fuzz target in fuzz/ and runs each for SECONDS (default 20),
# starting from the committed seeds in fuzz/seeds/<target>. Exits non-zero
# on a crash, leaving the crashing input in the printed directory.
#
#   scripts/fuzz.sh          # 20 s per target
#   scripts/fuzz.sh 600      # the 10-minute runs of fuzz/README.md
#
# cargo-fuzz needs nightly flags: RUSTC_BOOTSTRAP=1 lets the stable
# toolchain take them. cargo-fuzz is installed from crates.io when
# missing. When AddressSanitizer cannot be built, the targets run with
# `--sanitizer none`. When cargo-fuzz or libFuzzer cannot be built at
# all, only the regression tests run (and the script says so).
set -eu
cd "$(dirname "$0")/.."
secs="${1:-20}"
targets="core_requests frame term handshake"
step() { printf '\n==> %s\n' "$*"; }

step "fuzz regression tests"
cargo test --quiet -p locker_core --test fuzz_regressions
cargo test --quiet -p lockerd --test fuzz_regressions

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  step "installing cargo-fuzz"
  if ! cargo install --quiet --locked cargo-fuzz; then
    echo "fuzz.sh: cargo-fuzz could not be installed: ran the regression tests only" >&2
    exit 0
  fi
fi

export RUSTC_BOOTSTRAP=1
work="$(mktemp -d "${TMPDIR:-/tmp}/locker-fuzz.XXXXXX")"
sanitizer=address
step "building the fuzz targets (sanitizer: $sanitizer)"
if ! nice cargo fuzz build --sanitizer "$sanitizer" >"$work/build.log" 2>&1; then
  tail -n 20 "$work/build.log" >&2
  sanitizer=none
  echo "fuzz.sh: the AddressSanitizer build failed; using --sanitizer none" >&2
  if ! nice cargo fuzz build --sanitizer none; then
    echo "fuzz.sh: libFuzzer targets do not build here: ran the regression tests only" >&2
    exit 0
  fi
fi
for t in $targets; do
  step "fuzz $t for ${secs}s"
  mkdir -p "$work/corpus/$t" "$work/artifacts/$t"
  if [ -d "fuzz/seeds/$t" ]; then
    cp -R "fuzz/seeds/$t/." "$work/corpus/$t/"
  fi
  if ! nice cargo fuzz run --sanitizer "$sanitizer" "$t" "$work/corpus/$t" -- \
      -max_total_time="$secs" -print_final_stats=1 \
      -artifact_prefix="$work/artifacts/$t/" >"$work/$t.log" 2>&1; then
    tail -n 60 "$work/$t.log" >&2
    echo "fuzz.sh: $t failed; crashing input in $work/artifacts/$t/ (copy it to fuzz/regressions/$t/)" >&2
    exit 1
  fi
  grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "$work/$t.log" || true
  grep -E '^#[0-9]+[[:space:]]+DONE' "$work/$t.log" || true
done
rm -rf "$work"
printf '\nfuzz: every target ran %ss without a crash.\n' "$secs"
