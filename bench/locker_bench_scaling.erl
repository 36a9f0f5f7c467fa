%% How lock latency and throughput change with the number of masters
%% (3, 5, 7; W = majority), and lock latency with the number of stored
%% leases (10k, 100k, 1M on every master): the cost must stay flat in the
%% number of leases.
-module(locker_bench_scaling).
-export([run/1, preload/1, lock_loop/1]).

run(Quick) ->
    Rounds = case Quick of true -> 500; false -> 2000 end,
    Ms = case Quick of true -> 1000; false -> 3000 end,
    Masters = lists:append([masters(N, Rounds, Ms) || N <- [3, 5, 7]]),
    Leases = leases(case Quick of true -> [10000, 100000]; false -> [10000, 100000, 1000000] end, Rounds),
    Masters ++ Leases.

masters(N, Rounds, Ms) ->
    {Peers, Nodes} = locker_bench:start_peers("bs" ++ integer_to_list(N) ++ "_", N, []),
    [A | _] = Nodes,
    _ = rpc:call(A, ?MODULE, lock_loop, [200], infinity),
    Lat = locker_bench:stats(rpc:call(A, ?MODULE, lock_loop, [Rounds], infinity)),
    Tput = rpc:call(A, locker_bench_throughput, measure, [Nodes, lock, Ms], infinity),
    locker_bench:stop_peers(Peers),
    [
        locker_bench:row(io_lib:format("lock, ~b masters W=~b", [N, N div 2 + 1]), us, Lat, ""),
        locker_bench:row(io_lib:format("  lock+release pairs/s, 16 clients, ~b masters", [N]), per_s,
            #{median => Tput, p99 => Tput, max => Tput, n => 1}, "")
    ].

leases(Counts, Rounds) ->
    {Peers, Nodes} = locker_bench:start_peers("bl", 3, []),
    [A | _] = Nodes,
    Rows = lists:foldl(
        fun(Count, {Loaded, Acc}) ->
            [ok = rpc:call(N, ?MODULE, preload, [{Loaded, Count}], infinity) || N <- Nodes],
            _ = rpc:call(A, ?MODULE, lock_loop, [200], infinity),
            S = locker_bench:stats(rpc:call(A, ?MODULE, lock_loop, [Rounds], infinity)),
            Base = case Acc of [] -> maps:get(median, S); _ -> maps:get(base, hd(Acc)) end,
            Row = locker_bench:row(io_lib:format("lock with ~b leases stored", [Count]), us, S,
                {"lock with " ++ integer_to_list(hd(Counts)) ++ " leases", Base}, ""),
            {Count, [Row#{base => Base} | Acc]}
        end,
        {0, []},
        Counts
    ),
    locker_bench:stop_peers(Peers),
    [maps:remove(base, R) || R <- lists:reverse(element(2, Rows))].

%% Stores leases From+1..To directly in this node's store.
preload({From, To}) ->
    Pid = self(),
    [{ok, []} = locker_nif:write(t, <<I:128>>, Pid, 3600000) || I <- lists:seq(From + 1, To)],
    ok.

lock_loop(Rounds) ->
    Self = self(),
    [begin
        K = {scale, I},
        {T, {ok, _, _, _}} = timer:tc(locker, lock, [K, Self]),
        {ok, _, _, _} = locker:release(K, Self),
        T
    end || I <- lists:seq(1, Rounds)].
