#!/bin/sh
# Benchmarks (not tests): ratios of locker against plain BEAM baselines,
# measured in one run on local nodes. Writes bench/results/latest.json and,
# with matplotlib, the plots in bench/results/.
#   scripts/bench.sh [quick] [reads cluster groups throughput batching scaling memory expiry registry lockerd]
#   scripts/bench.sh [quick] targets   (issue 14's targets only; parameters in
#     bench/locker_bench_targets.erl: LOCKER_BENCH_VARIANTS, LOCKER_BENCH_GROUPS)
set -eu
cd "$(dirname "$0")/.."
sh scripts/ensure-toolchain.sh
rebar3 compile >/dev/null
# The registry group needs the Mix build (Elixir modules).
mix compile >/dev/null
# The lockerd group (run unless other groups are named) needs lockerd:
# $CARGO_TARGET_DIR/release/lockerd (default target/).
lockerd=yes
for a in "$@"; do
  case $a in
    reads|cluster|groups|throughput|batching|scaling|memory|expiry|registry|targets) lockerd=no ;;
  esac
done
for a in "$@"; do
  case $a in lockerd) lockerd=yes ;; esac
done
if [ "$lockerd" = yes ]; then
  cargo build --release -q -p lockerd
fi
mkdir -p _build/bench
erlc -o _build/bench bench/*.erl
# Elixir's own ebin dirs, for the bench node and the peers it starts.
ex_pa=$(elixir -e 'IO.puts(Enum.map_join([:elixir, :logger], " ", &"-pa #{:code.lib_dir(&1, :ebin)}"))')
args=""
for a in "$@"; do args="$args\"$a\","; done
erl -noshell -hidden +sbwt very_long +sbwtdcpu very_long +sbwtdio very_long \
  -name "locker_bench_$$@127.0.0.1" -setcookie locker_bench \
  -pa _build/default/lib/locker/ebin -pa _build/bench $ex_pa \
  -eval "try locker_bench:main([${args%,}]) of ok -> halt(0) catch C:R:S -> io:format(\"~p:~p~n~p~n\", [C, R, S]), halt(1) end."
if python3 -c 'import matplotlib' 2>/dev/null || pip install -q matplotlib >/dev/null 2>&1; then
  python3 bench/plot.py
else
  echo "matplotlib unavailable: no plots (the JSON is in bench/results/latest.json)" >&2
fi
