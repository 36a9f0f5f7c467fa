%% Sequential latency of lock, release, extend_lease and update on three
%% local masters (W = 2), interleaved in one loop with two baselines: two
%% `gen_server:multi_call' rounds to a trivial server on the same nodes
%% (the floor of the original's coordinator) and two raw message round
%% trips to the same nodes.
-module(locker_bench_cluster).
-export([run/1, loop/2, echo_server_init/0, raw_round/1]).

run(Quick) ->
    Rounds = case Quick of true -> 1500; false -> 8000 end,
    {Peers, Nodes} = locker_bench:start_peers("bc", 3, []),
    [A | _] = Nodes,
    [ok = rpc:call(N, ?MODULE, echo_server_init, []) || N <- Nodes],
    _ = rpc:call(A, ?MODULE, loop, [Nodes, 200], infinity),
    Samples = rpc:call(A, ?MODULE, loop, [Nodes, Rounds], infinity),
    locker_bench:stop_peers(Peers),
    rows(Samples).

rows(Samples) ->
    Col = fun(I) -> locker_bench:stats([element(I, S) || S <- Samples]) end,
    [Lock, Release, Extend, Update, Floor, Raw] = [Col(I) || I <- lists:seq(1, 6)],
    F = {"2 multi_call rounds", maps:get(median, Floor)},
    [
        locker_bench:row("lock, 3 masters W=2", us, Lock, F, ""),
        locker_bench:row("release", us, Release, F, ""),
        locker_bench:row("extend_lease", us, Extend, F, "returns ok"),
        locker_bench:row("update", us, Update, F, ""),
        locker_bench:row("  floor: 2 gen_server:multi_call rounds", us, Floor, ""),
        locker_bench:row("  2 raw round trips to the 3 nodes", us, Raw, ""),
        locker_bench:row("lock vs 2 raw round trips", us, Lock, {"2 raw round trips", maps:get(median, Raw)}, "")
    ].

%% Runs on a master: one sample of each measure per round, so that the
%% machine's drift hits them alike.
loop(Nodes, Rounds) ->
    Self = self(),
    [begin
        K = {bench, I},
        {T1, {ok, _, _, _}} = timer:tc(locker, lock, [K, Self, 60000]),
        {T3, ok} = timer:tc(locker, extend_lease, [K, Self, 60000]),
        {T4, {ok, _, _, _}} = timer:tc(locker, update, [K, Self, {Self, 2}]),
        {T2, {ok, _, _, _}} = timer:tc(locker, release, [K, {Self, 2}]),
        {T5, _} = timer:tc(fun() ->
            {_, []} = gen_server:multi_call(Nodes, bench_echo, ping, 5000),
            {_, []} = gen_server:multi_call(Nodes, bench_echo, ping, 5000)
        end),
        {T6, _} = timer:tc(fun() -> raw_round(Nodes), raw_round(Nodes) end),
        {T1, T2, T3, T4, T5, T6}
    end || I <- lists:seq(1, Rounds)].

raw_round(Nodes) ->
    Ref = make_ref(),
    [{bench_echo, N} ! {ping, self(), Ref} || N <- Nodes],
    [receive {pong, Ref} -> ok end || _ <- Nodes].

echo_server_init() ->
    Parent = self(),
    Pid = spawn(fun() -> register(bench_echo, self()), Parent ! registered, echo_loop() end),
    receive registered -> ok end,
    _ = Pid,
    ok.

%% A trivial gen_server-compatible echo: replies `ok' to any call, and
%% echoes raw `{ping, From, Ref}' messages.
echo_loop() ->
    receive
        {'$gen_call', From, _Req} -> gen:reply(From, ok);
        {ping, From, Ref} -> From ! {pong, Ref};
        _ -> ok
    end,
    echo_loop().
