%% One-round against two-phase operations, side by side in one run:
%% sequential lock, update, extend_lease and release on three local
%% masters (W = 2), with the coordinating node switching between the
%% one-round path and the forced two-phase path (the application
%% environment `one_round') every iteration, so that the machine's drift
%% hits both alike. Run alone (prints a table; nothing asserted):
%%
%%   rebar3 compile && mkdir -p _build/bench && erlc -o _build/bench bench/*.erl &&
%%   erl -noshell -name ob@127.0.0.1 -setcookie locker_bench \
%%     +sbwt very_long +sbwtdcpu very_long +sbwtdio very_long \
%%     -pa _build/default/lib/locker/ebin -pa _build/bench \
%%     -eval 'locker_bench_oneround:main(), halt().'
%%
%% or as a group: run/1 returns the rows of locker_bench.
-module(locker_bench_oneround).
-export([main/0, run/1, loop/1]).

main() ->
    Rows = run(os:getenv("LOCKER_BENCH_QUICK") =:= "1"),
    io:format("~n~-44s ~10s ~10s ~10s~n", ["measure (us)", "median", "p99", "n"]),
    [io:format("~-44s ~10.1f ~10.1f ~10b~n", [Name, M, P, N])
     || #{name := Name, median := M, p99 := P, n := N} <- Rows],
    ok.

run(Quick) ->
    Rounds = case Quick of true -> 1000; false -> 5000 end,
    {Peers, Nodes} = locker_bench:start_peers("bo", 3, []),
    [A | _] = Nodes,
    #{mode := epoch} = rpc:call(A, locker_membership, config, []),
    _ = rpc:call(A, ?MODULE, loop, [200], infinity),
    Samples = rpc:call(A, ?MODULE, loop, [Rounds], infinity),
    locker_bench:stop_peers(Peers),
    Col = fun(Path, I) -> locker_bench:stats([element(I, S) || {P, S} <- Samples, P =:= Path]) end,
    Names = ["lock", "update", "extend_lease", "release"],
    [
        maps:put(name, lists:flatten(io_lib:format("~s, ~s, 3 masters W=2", [N, Label])), Col(Path, I))
     || {I, N} <- lists:zip(lists:seq(1, 4), Names), {Path, Label} <- [{one_round, "one round"}, {two_phase, "two phases"}]
    ].

%% On a master: alternates the paths, one sample of each operation per
%% iteration.
loop(Rounds) ->
    Self = self(),
    Out = [begin
        Path = case I rem 2 of 0 -> one_round; 1 -> two_phase end,
        ok = application:set_env(locker, one_round, Path =:= one_round),
        K = {bench, I},
        {T1, {ok, _, _, _}} = timer:tc(locker, lock, [K, Self, 60000]),
        {T2, {ok, _, _, _}} = timer:tc(locker, update, [K, Self, {Self, 2}]),
        {T3, ok} = timer:tc(locker, extend_lease, [K, {Self, 2}, 60000]),
        {T4, {ok, _, _, _}} = timer:tc(locker, release, [K, {Self, 2}]),
        {Path, {T1, T2, T3, T4}}
    end || I <- lists:seq(1, Rounds)],
    ok = application:set_env(locker, one_round, true),
    Out.
