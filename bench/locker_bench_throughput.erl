%% Throughput of lock+release pairs from 16 client processes on one of
%% three masters (W = 2), against the same clients doing the original
%% coordinator's four `gen_server:multi_call' rounds to a trivial server,
%% and four raw message rounds to a trivial process on the three nodes
%% (what the messages alone cost: no locker can beat it).
-module(locker_bench_throughput).
-export([run/1, measure/3]).

-define(CLIENTS, 16).

run(Quick) ->
    Ms = case Quick of true -> 2000; false -> 6000 end,
    {Peers, Nodes} = locker_bench:start_peers("bt", 3, []),
    [A | _] = Nodes,
    [ok = rpc:call(N, locker_bench_cluster, echo_server_init, []) || N <- Nodes],
    _ = rpc:call(A, ?MODULE, measure, [Nodes, lock, 300], infinity),
    Ours = rpc:call(A, ?MODULE, measure, [Nodes, lock, Ms], infinity),
    Floor = rpc:call(A, ?MODULE, measure, [Nodes, multi_call, Ms], infinity),
    Raw = rpc:call(A, ?MODULE, measure, [Nodes, raw, Ms], infinity),
    locker_bench:stop_peers(Peers),
    [
        locker_bench:row("lock+release pairs/s, 16 clients, 3 masters", per_s, point(Ours),
            {"4 multi_call rounds/s", Floor}, "higher is better"),
        locker_bench:row("  16 clients, 4 multi_call rounds (original's floor)", per_s, point(Floor), ""),
        locker_bench:row("lock+release pairs/s vs raw messages", per_s, point(Ours),
            {"4 raw rounds/s", Raw}, "higher is better"),
        locker_bench:row("  16 clients, 4 raw message rounds (message floor)", per_s, point(Raw), "")
    ].

point(X) -> #{median => float(X), p99 => float(X), max => float(X), n => 1}.

%% Pairs per second from 16 clients over `Ms' milliseconds.
measure(Nodes, What, Ms) ->
    Parent = self(),
    Stop = erlang:monotonic_time(millisecond) + Ms,
    Pids = [spawn_link(fun() -> Parent ! {count, self(), client(What, Nodes, I, Stop, 0)} end) || I <- lists:seq(1, ?CLIENTS)],
    Total = lists:sum([receive {count, P, C} -> C end || P <- Pids]),
    Total * 1000 / Ms.

client(What, Nodes, Id, Stop, N) ->
    case erlang:monotonic_time(millisecond) >= Stop of
        true ->
            N;
        false ->
            one(What, Nodes, {Id, N}),
            client(What, Nodes, Id, Stop, N + 1)
    end.

one(lock, _Nodes, K) ->
    {ok, _, _, _} = locker:lock(K, self()),
    {ok, _, _, _} = locker:release(K, self());
one(multi_call, Nodes, _K) ->
    [{_, []} = gen_server:multi_call(Nodes, bench_echo, ping, 5000) || _ <- [1, 2, 3, 4]];
one(raw, Nodes, _K) ->
    [locker_bench_cluster:raw_round(Nodes) || _ <- [1, 2, 3, 4]].
