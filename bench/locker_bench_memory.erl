%% Memory per lease with 1M leases (16-byte binary key, pid value): the
%% NIF store's heap bytes (counted by its allocator) against an ETS table
%% with the original's options holding the same {Key, Pid, Int} rows.
-module(locker_bench_memory).
-export([run/1, measure/1, nif_per_lease/1]).

run(Quick) ->
    N = case Quick of true -> 200000; false -> 1000000 end,
    {Peers, [Node]} = locker_bench:start_peers("bm", 1, []),
    {Ours, Ets} = rpc:call(Node, ?MODULE, measure, [N], infinity),
    locker_bench:stop_peers(Peers),
    Point = fun(X) -> #{median => X, p99 => X, max => X, n => 1} end,
    [
        locker_bench:row(io_lib:format("memory per lease, ~b leases (NIF store)", [N]), bytes, Point(Ours),
            {"ets r+w row", Ets}, "lower is better"),
        locker_bench:row("  ets row {Key, Pid, Int}, read+write concurrency", bytes, Point(Ets), "")
    ].

measure(N) ->
    Pid = self(),
    Ours = nif_per_lease(N),
    T = ets:new(t, [set, {read_concurrency, true}, {write_concurrency, true}]),
    [ets:insert(T, {<<I:128>>, Pid, 0}) || I <- lists:seq(1, N)],
    Ets = ets:info(T, memory) * erlang:system_info(wordsize) / N,
    {Ours, Ets}.

%% @doc Heap bytes per lease of the NIF store after writing `N' leases
%% (also the lockerd group's context for lockerd's figure).
nif_per_lease(N) ->
    Pid = self(),
    M0 = locker_nif:memory(),
    [{ok, []} = locker_nif:write(t, <<I:128>>, Pid, 3600000) || I <- lists:seq(1, N)],
    (locker_nif:memory() - M0) / N.
