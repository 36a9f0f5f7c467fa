#!/bin/sh
# Benchmarks (not tests): ratios of locker against plain BEAM baselines,
# measured in one run. `scripts/bench.sh quick' for a short run.
set -eu
cd "$(dirname "$0")/.."
sh scripts/ensure-toolchain.sh
rebar3 compile >/dev/null
mkdir -p _build/bench
erlc -o _build/bench bench/locker_bench.erl
exec erl -noshell +sbwt very_long +sbwtdcpu very_long +sbwtdio very_long -name "locker_bench_$$@127.0.0.1" -setcookie locker_bench \
  -pa _build/default/lib/locker/ebin -pa _build/bench \
  -eval "try locker_bench:main([\"${1:-full}\"]) of ok -> halt(0) catch C:R:S -> io:format(\"~p:~p~n~p~n\", [C, R, S]), halt(1) end."
