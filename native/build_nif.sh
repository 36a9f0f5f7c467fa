#!/bin/sh
# Builds the NIF with cargo and installs it as priv/liblocker_nif.so, with
# priv/liblocker_nif.so.vsn holding the version it was built from.
# Called by rebar3 (pre-compile hook) and by Mix (the :locker_nif compiler
# in mix.exs). Copies to a temporary name and renames, so that a running
# VM that has the old .so loaded is not disturbed.
#
# Without a Rust toolchain (a release build machine, say):
#   LOCKER_NIF_PREBUILT=/path/to/liblocker_nif.so   installs that file,
#     if /path/to/liblocker_nif.so.vsn names this version;
#   a priv/liblocker_nif.so with a matching priv/liblocker_nif.so.vsn is
#     used as it is when cargo is not installed.
# LOCKER_NIF_PROFILE=debug builds without optimizations.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
say() { printf 'locker: %s\n' "$*" >&2; }
vsn=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
need=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
mkdir -p priv

install_so() { # $1: the .so to install
  if ! cmp -s "$1" priv/liblocker_nif.so 2>/dev/null; then
    cp "$1" priv/liblocker_nif.so.tmp
    mv -f priv/liblocker_nif.so.tmp priv/liblocker_nif.so
  fi
  printf '%s\n' "$vsn" > priv/liblocker_nif.so.vsn
}

if [ -n "${LOCKER_NIF_PREBUILT:-}" ]; then
  got=$(cat "$LOCKER_NIF_PREBUILT.vsn" 2>/dev/null || echo "unknown")
  if [ ! -f "$LOCKER_NIF_PREBUILT" ] || [ "$got" != "$vsn" ]; then
    say "LOCKER_NIF_PREBUILT=$LOCKER_NIF_PREBUILT: expected a NIF built from locker $vsn (with a .vsn file beside it naming $vsn), found version $got"
    exit 1
  fi
  say "using the prebuilt NIF $LOCKER_NIF_PREBUILT ($vsn)"
  install_so "$LOCKER_NIF_PREBUILT"
  exit 0
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -f priv/liblocker_nif.so ] && [ "$(cat priv/liblocker_nif.so.vsn 2>/dev/null)" = "$vsn" ]; then
    say "cargo not found: using the prebuilt priv/liblocker_nif.so ($vsn)"
    exit 0
  fi
  say "the NIF is built with Rust's cargo, which was not found. Install Rust $need or newer"
  say "(https://rustup.rs: curl https://sh.rustup.rs -sSf | sh), or set LOCKER_NIF_PREBUILT"
  say "to a liblocker_nif.so built from locker $vsn (see native/build_nif.sh)."
  exit 1
fi

have=$(rustc --version 2>/dev/null | awk '{print $2}')
if [ -n "$have" ] && [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -n 1)" != "$need" ]; then
  say "Rust $have is too old: the NIF needs Rust $need or newer (rustup update)."
  exit 1
fi

profile=${LOCKER_NIF_PROFILE:-release}
if [ "$profile" = release ]; then flag=--release; else flag=; fi
if [ ! -f priv/liblocker_nif.so ]; then
  say "building the NIF with cargo (Rust $have, $profile): the first build takes a minute or two"
fi
cargo build --quiet $flag -p locker_nif
install_so "${CARGO_TARGET_DIR:-target}/$profile/liblocker_nif.so"
