%% Benchmarks of locker against plain BEAM baselines, measured side by
%% side in one run (`scripts/bench.sh'). Prints a table of ratios; never
%% asserts on time.
-module(locker_bench).
-export([main/1]).
%% Run on peer nodes.
-export([echo_loop/0, echo_server_init/0, lock_loop/3]).

-define(KEYS, 100000).
-define(SAMPLE, 65536).

main(Args) ->
    Only = [list_to_atom(A) || A <- Args, lists:member(A, ["reads", "cluster", "expiry"])],
    Quick = lists:member("quick", Args),
    N = case Quick of true -> 300000; false -> 2000000 end,
    Rounds = case Quick of true -> 2000; false -> 10000 end,
    Expire = case Quick of true -> 200000; false -> 1000000 end,
    io:format("locker bench (~s), OTP ~s, ~b schedulers, ~s~n",
        [mode(Quick), erlang:system_info(otp_release), erlang:system_info(schedulers_online), cpu()]),
    Run = fun(Part, F) -> case Only =:= [] orelse lists:member(Part, Only) of true -> F(); false -> [] end end,
    Rows = Run(reads, fun() -> dirty_read_bench(N) end) ++
        Run(cluster, fun() -> cluster_bench(Rounds) end) ++
        Run(expiry, fun() -> expiry_bench(Expire) end),
    io:format("~n~-58s ~12s  ~s~n", ["measure", "value", "ratio"]),
    [io:format("~-58s ~12s  ~s~n", [Name, fmt(V, Unit), ratio(Ratio)]) || {Name, V, Unit, Ratio} <- Rows],
    ok.

mode(true) -> "quick";
mode(false) -> "full".

cpu() ->
    case file:read_file("/proc/cpuinfo") of
        {ok, B} ->
            case re:run(B, "model name\\s*:\\s*([^\\n]*)", [{capture, all_but_first, list}]) of
                {match, [M]} -> M;
                _ -> "unknown cpu"
            end;
        _ -> "unknown cpu"
    end.

fmt(V, ns) -> io_lib:format("~.1f ns", [float(V)]);
fmt(V, us) -> io_lib:format("~.1f us", [float(V)]);
fmt(V, ms) -> io_lib:format("~.1f ms", [float(V)]);
fmt(V, count) -> io_lib:format("~b", [V]).

ratio(undefined) -> "";
ratio({X, Of}) -> io_lib:format("~.2fx ~s", [X, Of]).

%%--------------------------------------------------------------------
%% dirty_read vs ets:lookup
%%--------------------------------------------------------------------

dirty_read_bench(N) ->
    {ok, _} = gen_server:start({local, locker}, locker_server, [1, 3600000, 3600000, 3600000], []),
    ok = locker:set_nodes([node()], [node()], []),
    %% Reads cycle over 65536 of the stored keys in random order (reading
    %% in insertion order would favour ETS, whose objects sit in memory in
    %% that order).
    rand:seed(exsss, {1, 2, 3}),
    Keys = list_to_tuple(shuffle([<<(rand:uniform(?KEYS)):128>> || _ <- lists:seq(1, ?SAMPLE)])),
    Pid = self(),
    Plain = ets:new(plain, [set, public]),
    Orig = ets:new(orig, [set, public, {read_concurrency, true}, {write_concurrency, true}]),
    [begin
         K = <<I:128>>,
         [] = locker_nif:write(t, K, Pid, 3600000),
         ets:insert(Plain, {K, Pid, 0}),
         ets:insert(Orig, {K, Pid, 0})
     end || I <- lists:seq(1, ?KEYS)],
    Hot = erlang:make_tuple(?SAMPLE, element(1, Keys)),
    Miss = list_to_tuple(shuffle([<<I:128>> || I <- lists:seq(?KEYS + 1, ?KEYS + ?SAMPLE)])),
    Cases = [
        {"dirty_read hit, 1 reader", dirty, Keys, 1},
        {"ets:lookup plain set hit, 1 reader", {ets, Plain}, Keys, 1},
        {"ets:lookup read+write concurrency hit, 1 reader", {ets, Orig}, Keys, 1},
        {"dirty_read hot key, 1 reader", dirty, Hot, 1},
        {"ets:lookup plain set hot key, 1 reader", {ets, Plain}, Hot, 1},
        {"ets:lookup read+write concurrency hot key, 1 reader", {ets, Orig}, Hot, 1},
        {"dirty_read miss, 1 reader", dirty, Miss, 1},
        {"ets:lookup plain set miss, 1 reader", {ets, Plain}, Miss, 1},
        {"dirty_read hit, 2 readers", dirty, Keys, 2},
        {"ets:lookup plain set hit, 2 readers", {ets, Plain}, Keys, 2},
        {"ets:lookup read+write concurrency hit, 2 readers", {ets, Orig}, Keys, 2}
    ],
    %% Interleave repetitions so that drift hits every case alike.
    Times = lists:foldl(
        fun(_Rep, Acc) ->
            maps:merge(Acc, maps:from_list([{Name, [per_op(F, Ks, N, P) | maps:get(Name, Acc, [])]} || {Name, F, Ks, P} <- Cases]))
        end,
        #{},
        lists:seq(1, 3)
    ),
    Best = fun(Name) -> lists:min(maps:get(Name, Times)) end,
    ok = gen_server:stop(locker),
    ok = locker_nif:clear(),
    [
        {"dirty_read hit (pid value, 100k leases), 1 reader", Best("dirty_read hit, 1 reader"), ns,
            {Best("dirty_read hit, 1 reader") / Best("ets:lookup plain set hit, 1 reader"), "of ets plain set"}},
        {"  same, vs ets with read+write concurrency (original)", Best("dirty_read hit, 1 reader"), ns,
            {Best("dirty_read hit, 1 reader") / Best("ets:lookup read+write concurrency hit, 1 reader"), "of ets r+w conc."}},
        {"ets:lookup plain set, 1 reader", Best("ets:lookup plain set hit, 1 reader"), ns, undefined},
        {"ets:lookup read+write concurrency, 1 reader", Best("ets:lookup read+write concurrency hit, 1 reader"), ns, undefined},
        {"dirty_read of one hot key, 1 reader", Best("dirty_read hot key, 1 reader"), ns,
            {Best("dirty_read hot key, 1 reader") / Best("ets:lookup plain set hot key, 1 reader"), "of ets plain set"}},
        {"  same, vs ets with read+write concurrency (original)", Best("dirty_read hot key, 1 reader"), ns,
            {Best("dirty_read hot key, 1 reader") / Best("ets:lookup read+write concurrency hot key, 1 reader"), "of ets r+w conc."}},
        {"dirty_read miss, 1 reader", Best("dirty_read miss, 1 reader"), ns,
            {Best("dirty_read miss, 1 reader") / Best("ets:lookup plain set miss, 1 reader"), "of ets plain set"}},
        {"dirty_read hit, 2 concurrent readers", Best("dirty_read hit, 2 readers"), ns,
            {Best("dirty_read hit, 2 readers") / Best("ets:lookup plain set hit, 2 readers"), "of ets plain set"}},
        {"  same, vs ets with read+write concurrency (original)", Best("dirty_read hit, 2 readers"), ns,
            {Best("dirty_read hit, 2 readers") / Best("ets:lookup read+write concurrency hit, 2 readers"), "of ets r+w conc."}}
    ].

shuffle(L) ->
    [X || {_, X} <- lists:sort([{rand:uniform(), X} || X <- L])].

%% Nanoseconds per operation with P parallel readers (each doing N ops).
%% Each case has its own tight loop, so the loop costs the same for all.
per_op(What, Keys, N, P) ->
    Parent = self(),
    Pids = [spawn_link(fun() ->
                receive go -> ok end,
                T0 = erlang:monotonic_time(nanosecond),
                run_loop(What, Keys, N),
                Parent ! {done, self(), erlang:monotonic_time(nanosecond) - T0}
            end) || _ <- lists:seq(1, P)],
    [Pid ! go || Pid <- Pids],
    Ts = [receive {done, Pid, T} -> T end || Pid <- Pids],
    lists:max(Ts) / N.

run_loop(dirty, Keys, N) -> dirty_loop(Keys, N);
run_loop({ets, T}, Keys, N) -> ets_loop(T, Keys, N).

dirty_loop(_Keys, 0) -> ok;
dirty_loop(Keys, N) ->
    _ = locker:dirty_read(element((N band 16#FFFF) + 1, Keys)),
    dirty_loop(Keys, N - 1).

ets_loop(_T, _Keys, 0) -> ok;
ets_loop(T, Keys, N) ->
    _ = ets:lookup(T, element((N band 16#FFFF) + 1, Keys)),
    ets_loop(T, Keys, N - 1).

%%--------------------------------------------------------------------
%% lock / release on three masters, against floors
%%--------------------------------------------------------------------

cluster_bench(Rounds) ->
    BenchEbin = filename:dirname(code:which(?MODULE)),
    Ebin = filename:dirname(code:which(locker)),
    Peers = [start_peer(Name, [Ebin, BenchEbin]) || Name <- [bench_a, bench_b, bench_c]],
    Nodes = [Nd || {_, Nd} <- Peers],
    [A | _] = Nodes,
    ok = rpc:call(A, locker, set_nodes, [Nodes, Nodes, []]),
    [ok = rpc:call(Nd, ?MODULE, echo_server_init, []) || Nd <- Nodes],
    %% Warm up connections and code.
    _ = rpc:call(A, ?MODULE, lock_loop, [Nodes, 200, all], infinity),
    %% One loop interleaves the four measures, so that the machine's drift
    %% (two cores shared by four VMs) hits them alike.
    Samples = rpc:call(A, ?MODULE, lock_loop, [Nodes, Rounds, all], infinity),
    [peer:stop(P) || {P, _} <- Peers],
    Col = fun(I) -> [element(I, S) || S <- Samples] end,
    [LockS, ReleaseS, FloorS, RawS] = [Col(I) || I <- [1, 2, 3, 4]],
    Med = fun median/1,
    FloorMed = Med(FloorS),
    [
        {"lock median, 3 masters W=2", Med(LockS), us, {Med(LockS) / FloorMed, "of 2 multi_call rounds"}},
        {"lock p99", percentile(LockS, 0.99), us, undefined},
        {"release median", Med(ReleaseS), us, {Med(ReleaseS) / FloorMed, "of 2 multi_call rounds"}},
        {"release p99", percentile(ReleaseS, 0.99), us, undefined},
        {"floor: 2 gen_server:multi_call rounds to a trivial server", FloorMed, us, undefined},
        {"2 raw message round trips to the same 3 nodes", Med(RawS), us, {Med(LockS) / Med(RawS), "lock / raw"}}
    ].

start_peer(Name, Paths) ->
    {ok, Peer, Node} = peer:start_link(#{
        name => Name,
        host => "127.0.0.1",
        longnames => true,
        args => ["-setcookie", atom_to_list(erlang:get_cookie()) | sched_args()] ++ lists:append([["-pa", P] || P <- Paths])
    }),
    {ok, _} = rpc:call(Node, gen_server, start, [{local, locker}, locker_server, [2, 1000, 1000, 100], []]),
    {Peer, Node}.

lock_loop(Nodes, Rounds, all) ->
    Self = self(),
    [begin
        K = {bench, I},
        {T1, {ok, 2, 3, 3}} = timer:tc(locker, lock, [K, Self]),
        {T2, {ok, 2, 3, 3}} = timer:tc(locker, release, [K, Self]),
        {T3, _} = timer:tc(fun() ->
            {_, []} = gen_server:multi_call(Nodes, bench_echo, ping, 5000),
            {_, []} = gen_server:multi_call(Nodes, bench_echo, ping, 5000)
        end),
        {T4, _} = timer:tc(fun() -> raw_round(Nodes), raw_round(Nodes) end),
        {T1, T2, T3, T4}
    end || I <- lists:seq(1, Rounds)].

echo_server_init() ->
    Pid = spawn(fun() -> register(bench_echo, self()), echo_loop() end),
    wait_registered(Pid).

wait_registered(Pid) ->
    case whereis(bench_echo) of
        Pid -> ok;
        _ -> erlang:yield(), wait_registered(Pid)
    end.

%% A trivial gen_server-compatible echo: replies `ok' to any call, and
%% echoes raw `{ping, From, Ref}' messages.
echo_loop() ->
    receive
        {'$gen_call', From, _Req} -> gen:reply(From, ok);
        {ping, From, Ref} -> From ! {pong, Ref};
        _ -> ok
    end,
    echo_loop().

raw_round(Nodes) ->
    Ref = make_ref(),
    [{bench_echo, N} ! {ping, self(), Ref} || N <- Nodes],
    [receive {pong, Ref} -> ok end || _ <- Nodes].

median(L) -> percentile(L, 0.5).

percentile(L, P) ->
    S = lists:sort(L),
    lists:nth(max(1, min(length(S), round(P * length(S)))), S).

%%--------------------------------------------------------------------
%% Expiring many leases due at once
%%--------------------------------------------------------------------

expiry_bench(Count) ->
    {ok, _} = gen_server:start({local, locker}, locker_server, [1, 3600000, 3600000, 3600000], []),
    ok = locker:set_nodes([node()], [node()], []),
    Pid = self(),
    [[] = locker_nif:write(t, <<I:128>>, Pid, 1000) || I <- lists:seq(1, Count)],
    %% Let every lease's due millisecond pass (a benchmark, not a test:
    %% waiting on the clock is the point).
    receive after 1100 -> ok end,
    Parent = self(),
    %% Baseline: the same prober for 300 ms with nothing to sweep-wait on
    %% (the machine's own scheduling noise).
    Idle = spawn_link(fun() -> probe(Parent, 0, []) end),
    receive after 300 -> ok end,
    Idle ! stop,
    IdleLat = receive {probe, IL} -> IL end,
    Prober = spawn_link(fun() -> probe(Parent, 0, []) end),
    receive after 20 -> ok end,
    T0 = erlang:monotonic_time(microsecond),
    locker ! expire_leases,
    wait_empty(),
    Total = (erlang:monotonic_time(microsecond) - T0) / 1000,
    Prober ! stop,
    Lat = receive {probe, L} -> L end,
    ok = gen_server:stop(locker),
    [
        {io_lib:format("expire ~b leases due at once: total", [Count]), Total, ms, undefined},
        {"  longest call wait during the sweep", lists:max(Lat) / 1000, ms,
            {lists:max(Lat) / lists:max(IdleLat), "of idle"}},
        {"  longest call wait, idle server, same prober", lists:max(IdleLat) / 1000, ms, undefined},
        {"  calls answered during the sweep", length(Lat), count, undefined}
    ].

probe(Parent, N, Acc) ->
    receive stop -> Parent ! {probe, Acc}
    after 1 ->
        {T, _} = timer:tc(gen_server, call, [locker, {wait_for_release, '$probe', 0}]),
        probe(Parent, N + 1, [T | Acc])
    end.

%% Polls the lease count (shard read locks only, never the engine lock the
%% sweep holds) until the sweep is done.
wait_empty() ->
    case locker_nif:lease_count() of
        0 -> ok;
        _ -> receive after 1 -> wait_empty() end
    end.

%% Every VM of the bench keeps its schedulers spinning longer before they
%% sleep: on this 2-vCPU guest a sleeping scheduler takes tens of us to
%% wake, which otherwise dominates every round trip (ours and the
%% baselines' alike). LOCKER_BENCH_SBWT=default keeps the VM's default.
sched_args() ->
    case os:getenv("LOCKER_BENCH_SBWT", "very_long") of
        "default" -> [];
        V -> ["+sbwt", V, "+sbwtdcpu", V, "+sbwtdio", V]
    end.
