#!/bin/sh
# Builds the NIF with cargo and installs it as priv/liblocker_nif.so.
# Called by rebar3 (pre-compile hook) and by Mix (the :locker_nif compiler
# in mix.exs). Copies to a temporary name and renames, so that a running
# VM that has the old .so loaded is not disturbed.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
profile=${LOCKER_NIF_PROFILE:-release}
if [ "$profile" = release ]; then flag=--release; else flag=; fi
cargo build --quiet $flag -p locker_nif
mkdir -p priv
src="${CARGO_TARGET_DIR:-target}/$profile/liblocker_nif.so"
if ! cmp -s "$src" priv/liblocker_nif.so 2>/dev/null; then
  cp "$src" priv/liblocker_nif.so.tmp
  mv -f priv/liblocker_nif.so.tmp priv/liblocker_nif.so
fi
