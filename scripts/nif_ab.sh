#!/bin/sh
# A/B of the NIF's hot path (lock cycle, dirty_read hit and miss): this
# working tree's build against the one of git revision REV, in one run.
#   scripts/nif_ab.sh REV [ROUNDS]
# Builds REV's NIF into target/nif_ab/target, then this tree's, and
# measures both in two peer VMs, alternately.
# NIF_AB_OLD_FEATURES / NIF_AB_NEW_FEATURES: cargo features of locker_nif
# for either build, e.g. the store's map on dashmap against LeaseMap:
#   NIF_AB_NEW_FEATURES=dashmap scripts/nif_ab.sh HEAD
set -eu
cd "$(dirname "$0")/.."
rev=$1
rounds=${2:-11}
root=$(pwd)
work=$root/target/nif_ab
# The old build's target directory is kept between runs (incremental).
rm -rf "$work/src" "$work/old" "$work/new"
mkdir -p "$work/src" "$work/old/locker/ebin" "$work/new/locker/priv" "$work/old/locker/priv"
git archive "$rev" | tar -x -C "$work/src"
old_features=${NIF_AB_OLD_FEATURES:-}
new_features=${NIF_AB_NEW_FEATURES:-}
(cd "$work/src" && CARGO_TARGET_DIR="$work/target" cargo build --release -q -p locker_nif ${old_features:+--features "$old_features"})
cp "$work/target/release/liblocker_nif.so" "$work/old/locker/priv/"
cp "$work/src/erlang/src/locker.app.src" "$work/old/locker/ebin/locker.app"
erlc -o "$work/old/locker/ebin" "$work/src/erlang/src/"*.erl
sh native/build_nif.sh
rebar3 compile >/dev/null
cp -r _build/default/lib/locker/ebin "$work/new/locker/"
if [ -n "$new_features" ]; then
  cargo build --release -q -p locker_nif --features "$new_features"
  cp "${CARGO_TARGET_DIR:-target}/release/liblocker_nif.so" "$work/new/locker/priv/"
  # Leave target/ as build_nif.sh builds it.
  cargo build --release -q -p locker_nif
else
  cp priv/liblocker_nif.so "$work/new/locker/priv/"
fi
vsn=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
for d in old new; do printf '%s\n' "$vsn" > "$work/$d/locker/priv/liblocker_nif.so.vsn"; done
erlc -o "$work" bench/locker_bench_nif_ab.erl
erl -noshell -name "locker_nif_ab_$$@127.0.0.1" -pa "$work" \
  -eval "locker_bench_nif_ab:main([\"$work/old\", \"$work/new\", \"$rounds\"]), halt()."
