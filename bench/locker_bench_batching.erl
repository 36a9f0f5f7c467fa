%% Natural batching (locker_batch) on vs off, side by side in one run, on
%% three masters (W = 2) with the clients on one of them: distribution
%% messages per operation (a lock or a release, each two rounds to the two
%% other masters) with 1 client and with 16, and lock+release pairs per
%% second with 16 clients. Batching is switched at run time on the client
%% node (locker_batch:enable/1); short periods alternate off/on and on/off
%% so that the machine's drift hits both alike.
%%
%% Messages are counted without tracing: the packets the client node's
%% distribution connections to the two other masters sent and received
%% (inet:getstat/2 of each connection's port, `send_cnt' + `recv_cnt'),
%% over the period, divided by the operations done. Unbatched, one
%% operation costs 8: two rounds, each a request and a reply per remote
%% master (the local master is served through the NIF). Ticks and other
%% traffic count too (a few per period).
-module(locker_bench_batching).
-export([run/1, measure/3, dist_packets/1]).

-define(CLIENTS, 16).

run(Quick) ->
    Ms = case Quick of true -> 750; false -> 1500 end,
    Periods = case Quick of true -> 4; false -> 10 end,
    {Peers, Nodes} = locker_bench:start_peers("bb", 3, []),
    [A | Others] = Nodes,
    %% Warm-up, both ways.
    [begin ok = rpc:call(A, locker_batch, enable, [On]), rpc:call(A, ?MODULE, measure, [Others, 4, 300], infinity) end
     || On <- [false, true]],
    Runs = [
        {On, Clients, rpc:call(A, ?MODULE, measure, [Others, Clients, Ms], infinity)}
     || P <- lists:seq(1, Periods), Clients <- [1, ?CLIENTS], On <- order(P),
        ok =:= rpc:call(A, locker_batch, enable, [On])
    ],
    ok = rpc:call(A, locker_batch, enable, [true]),
    locker_bench:stop_peers(Peers),
    Sum = fun(On, Clients) ->
        lists:foldl(
            fun({O, C, #{ops := Ops, packets := P, ms := T, batches := B, requests := R, direct := D}}, Acc) when
                    O =:= On, C =:= Clients ->
                    #{ops := Ops0, packets := P0, ms := T0, batches := B0, requests := R0, direct := D0} = Acc,
                    Acc#{ops := Ops0 + Ops, packets := P0 + P, ms := T0 + T, batches := B0 + B, requests := R0 + R,
                         direct := D0 + D};
               (_, Acc) ->
                    Acc
            end,
            #{ops => 0, packets => 0, ms => 0, batches => 0, requests => 0, direct => 0},
            Runs
        )
    end,
    PerOp = fun(#{ops := Ops, packets := P}) -> P / max(Ops, 1) end,
    Pairs = fun(#{ops := Ops, ms := T}) -> Ops / 2 * 1000 / max(T, 1) end,
    PerBatch = fun(#{batches := B, requests := R}) -> R / max(B, 1) end,
    [On1, Off1, On16, Off16] = [Sum(On, C) || {On, C} <- [{true, 1}, {false, 1}, {true, ?CLIENTS}, {false, ?CLIENTS}]],
    io:format("   batching on, 1 client: ~p~n   off, 1 client: ~p~n   on, 16 clients: ~p~n   off, 16 clients: ~p~n",
        [On1, Off1, On16, Off16]),
    [
        locker_bench:row("msgs/op, 1 client, batching on", count, point(PerOp(On1)),
            {"batching off", PerOp(Off1)}, "dist packets to/from 2 masters; lower is better"),
        locker_bench:row("  msgs/op, 1 client, batching off", count, point(PerOp(Off1)), "8 = 2 rounds x 2 masters x 2"),
        locker_bench:row("msgs/op, 16 clients, batching on", count, point(PerOp(On16)),
            {"batching off", PerOp(Off16)}, "lower is better"),
        locker_bench:row("  msgs/op, 16 clients, batching off", count, point(PerOp(Off16)), ""),
        locker_bench:row("  requests per batch, 16 clients", count, point(PerBatch(On16)), ""),
        locker_bench:row("lock+release pairs/s, 16 clients, batching on", per_s, point(Pairs(On16)),
            {"batching off", Pairs(Off16)}, "higher is better"),
        locker_bench:row("  lock+release pairs/s, 16 clients, batching off", per_s, point(Pairs(Off16)), ""),
        locker_bench:row("lock+release pairs/s, 1 client, batching on", per_s, point(Pairs(On1)),
            {"batching off", Pairs(Off1)}, "a lone client waits for nothing")
    ].

%% Off first in odd periods, on first in even ones (drift cancels out).
order(P) when P rem 2 =:= 1 -> [false, true];
order(_) -> [true, false].

point(X) -> #{median => float(X), p99 => float(X), max => float(X), n => 1}.

%% Runs on the client node: `Clients' processes doing lock+release pairs
%% for `Ms' milliseconds; the operations done, the distribution packets
%% exchanged with `Others' meanwhile, and the sender's counts.
measure(Others, Clients, Ms) ->
    Parent = self(),
    ok = locker_batch:reset_stats(),
    P0 = dist_packets(Others),
    T0 = erlang:monotonic_time(millisecond),
    Stop = T0 + Ms,
    Pids = [spawn_link(fun() -> Parent ! {count, self(), client(I, Stop, 0)} end) || I <- lists:seq(1, Clients)],
    Pairs = lists:sum([receive {count, P, C} -> C end || P <- Pids]),
    T1 = erlang:monotonic_time(millisecond),
    P1 = dist_packets(Others),
    #{sent_batches := B, sent_requests := R, direct_requests := D} = locker_batch:stats(),
    #{ops => 2 * Pairs, packets => P1 - P0, ms => T1 - T0, batches => B, requests => R, direct => D}.

client(Id, Stop, N) ->
    case erlang:monotonic_time(millisecond) >= Stop of
        true ->
            N;
        false ->
            K = {Id, N},
            {ok, _, _, _} = locker:lock(K, self()),
            {ok, _, _, _} = locker:release(K, self()),
            client(Id, Stop, N + 1)
    end.

%% Packets sent and received on this node's distribution connections to
%% `Nodes'.
dist_packets(Nodes) ->
    lists:sum([
        S + R
     || {Node, Port} <- erlang:system_info(dist_ctrl),
        lists:member(Node, Nodes),
        {ok, Stat} <- [inet:getstat(Port, [recv_cnt, send_cnt])],
        {recv_cnt, R} <- [lists:keyfind(recv_cnt, 1, Stat)],
        {send_cnt, S} <- [lists:keyfind(send_cnt, 1, Stat)]
    ]).
