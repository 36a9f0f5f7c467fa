#!/bin/sh
# The demo: builds locker, starts a local 3-node cluster and shows a lock,
# dirty reads on other nodes, a release and a lease expiring (Erlang,
# demo/locker_demo.erl); then, on another 3-node cluster, a GenServer
# registered as {:via, Locker.Registry, :counter} called from every node,
# killed, and started again on another node (Elixir, demo/registry_demo.exs).
set -eu
cd "$(dirname "$0")/.."
sh scripts/ensure-toolchain.sh
rebar3 compile >/dev/null
mkdir -p _build/demo
erlc -o _build/demo demo/locker_demo.erl
erl -noshell -name "locker_demo_$$@127.0.0.1" -setcookie locker_demo \
  -pa _build/default/lib/locker/ebin -pa _build/demo \
  -eval 'try locker_demo:main() of ok -> halt(0) catch C:R:S -> io:format("~p:~p~n~p~n", [C, R, S]), halt(1) end.'
# The Elixir part runs on the Mix build (the :locker application with its
# Elixir modules).
MIX_ENV=dev mix compile >/dev/null
exec elixir --name "locker_demo_ex_$$@127.0.0.1" --cookie locker_demo \
  -pa _build/mix/dev/lib/locker/ebin demo/registry_demo.exs
