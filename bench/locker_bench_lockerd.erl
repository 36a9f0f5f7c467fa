%% lockerd (the Rust C-node master, native/lockerd) against BEAM locker
%% masters, measured side by side in one run:
%%
%%   - service rate of one master: C callers on the bench node send
%%     get_write_lock + release_write_lock calls to `{locker, Master}' in
%%     short windows, interleaved BEAM, lockerd, lockerd, BEAM against drift
%%     (one sample per window). Two figures per window: calls served per
%%     second of the master's CPU time (its OS process, every thread, from
%%     /proc: the service rate, 1 / service time), and calls/s the client
%%     node gets (on a 2-vCPU machine that node, sharing the CPUs, bounds
%%     it for both masters);
%%   - sequential lock, release, extend_lease and update latency from a
%%     BEAM coordinator (a peer that is not a master) against three masters,
%%     W = 2: all-BEAM, mixed (2 BEAM + 1 lockerd) and all-lockerd, run in
%%     chunks that rotate through the clusters;
%%   - lock+release pairs/s from 16 client processes on the same
%%     coordinator, windows rotating through the same clusters;
%%   - memory per lease in a fresh lockerd: VmRSS before and after loading
%%     N leases (16-byte binary key, pid value) through trans_log casts,
%%     next to the NIF store's allocator count for the same leases (the
%%     memory group's figure, measured here again).
%%
%% lockerd is started from $CARGO_TARGET_DIR/release/lockerd (default
%% target/); scripts/bench.sh builds it. Every lockerd started here is
%% killed when the group ends, whatever happens (and by its wrapper shell
%% if this VM dies first).
-module(locker_bench_lockerd).
-export([run/1, latency_loop/2]).

run(Quick) ->
    Bin = filename:join(filename:absname(os:getenv("CARGO_TARGET_DIR", "target")), "release/lockerd"),
    filelib:is_regular(Bin) orelse error({no_lockerd_binary, Bin, "cargo build --release -p lockerd"}),
    put(lockerd_bench_cleanup, []),
    %% lockerd cannot spin-wait for work; BEAM schedulers can, and the
    %% other groups let them (+sbwt very_long). Here the BEAM peers run
    %% with default scheduler flags, as most deployments do, so that the
    %% comparison measures the servers rather than the spinning
    %% (LOCKER_BENCH_SBWT, when set, still decides).
    Sbwt = os:getenv("LOCKER_BENCH_SBWT"),
    Sbwt =:= false andalso os:putenv("LOCKER_BENCH_SBWT", "default"),
    try
        measure(Quick, Bin)
    after
        [catch F() || F <- get(lockerd_bench_cleanup)],
        erase(lockerd_bench_cleanup),
        Sbwt =:= false andalso os:unsetenv("LOCKER_BENCH_SBWT")
    end.

measure(Quick, Bin) ->
    P = params(Quick),
    {Peers, Beam} = locker_bench:start_peers("bldm", 3, []),
    on_cleanup(fun() -> locker_bench:stop_peers(Peers) end),
    {CPeers, [C]} = locker_bench:start_peers("bldc", 1, []),
    on_cleanup(fun() -> locker_bench:stop_peers(CPeers) end),
    ok = rpc:call(C, locker, set_w, [[C], 2]),
    mesh([C | Beam]),
    [{Ld1, Ld1Pid} | LdRest] = [lockerd_pid(Bin, "bld" ++ integer_to_list(I)) || I <- [1, 2, 3]],
    Lds = [Ld1 | [N || {N, _} <- LdRest]],
    BeamPid = rpc:call(hd(Beam), os, getpid, []),
    Rate = rate_rows({hd(Beam), BeamPid}, {Ld1, Ld1Pid}, P),
    Clusters = [
        {"all-BEAM", Beam},
        {"mixed", [hd(Beam), lists:nth(2, Beam), hd(Lds)]},
        {"all-lockerd", Lds}
    ],
    Latency = latency_rows(C, Clusters, P),
    Throughput = throughput_rows(C, Clusters, P),
    %% Every master still up (a dead one would have let W = 2 go on).
    [sync(N) || N <- Beam ++ Lds],
    Memory = memory_rows(Bin, C, P),
    Rate ++ Latency ++ Throughput ++ Memory.

params(true) ->
    #{callers => [1, 8, 32], rate_rounds => 3, rate_ms => 200,
      lat_chunks => 5, lat_rounds => 200,
      tp_rounds => 3, tp_ms => 500,
      leases => 200000};
params(false) ->
    #{callers => [1, 8, 32], rate_rounds => 8, rate_ms => 400,
      lat_chunks => 12, lat_rounds => 500,
      tp_rounds => 6, tp_ms => 1500,
      leases => 1000000}.

%%--------------------------------------------------------------------
%% Service rate of one master
%%--------------------------------------------------------------------

rate_rows(B, L, #{callers := Callers, rate_rounds := Rounds, rate_ms := Ms}) ->
    _ = [rate(N, 4, 300) || N <- [B, L]],
    lists:append([begin
        Samples = [begin
            Rb1 = rate(B, C, Ms),
            Rl1 = rate(L, C, Ms),
            Rl2 = rate(L, C, Ms),
            Rb2 = rate(B, C, Ms),
            {[Rb1, Rb2], [Rl1, Rl2]}
        end || _ <- lists:seq(1, Rounds)],
        Stat = fun(Which, Pick) ->
            locker_bench:stats([Pick(X) || X <- lists:append([element(Which, S) || S <- Samples])])
        end,
        Calls = fun({R, _}) -> R end,
        PerCpu = fun({_, R}) -> R end,
        [BeamRate, LdRate, BeamCpu, LdCpu] =
            [Stat(1, Calls), Stat(2, Calls), Stat(1, PerCpu), Stat(2, PerCpu)],
        [
            locker_bench:row(fmt("lockerd master calls per CPU-second, ~b caller~s", [C, plural(C)]), per_s, LdCpu,
                {"BEAM master", maps:get(median, BeamCpu)},
                "service rate: calls served per second of the master's CPU (OS process); target >= 1.0x"),
            locker_bench:row(fmt("  BEAM master calls per CPU-second, ~b caller~s", [C, plural(C)]), per_s, BeamCpu, ""),
            locker_bench:row(fmt("lockerd master calls/s, ~b caller~s", [C, plural(C)]), per_s, LdRate,
                {"BEAM master", maps:get(median, BeamRate)},
                "get_write_lock + release_write_lock from one client node (bounded by that node on 2 shared vCPUs)"),
            locker_bench:row(fmt("  BEAM master calls/s, ~b caller~s", [C, plural(C)]), per_s, BeamRate, "")
        ]
    end || C <- Callers]).

fmt(F, A) -> lists:flatten(io_lib:format(F, A)).

plural(1) -> "";
plural(_) -> "s".

%% Calls per second that `Callers' processes here get from {locker, Node}
%% in `Ms' milliseconds, and calls per second of CPU time (user + system)
%% that the master's OS process spent meanwhile.
rate({Node, OsPid}, Callers, Ms) ->
    Parent = self(),
    Cpu0 = cpu_ns(OsPid),
    T0 = erlang:monotonic_time(),
    Deadline = erlang:monotonic_time(millisecond) + Ms,
    Pids = [spawn_link(fun() -> Parent ! {self(), caller(Node, I, Deadline, 0)} end) || I <- lists:seq(1, Callers)],
    Total = lists:sum([receive {P, N} -> N end || P <- Pids]),
    Cpu = (cpu_ns(OsPid) - Cpu0) / 1.0e9,
    Secs = erlang:convert_time_unit(erlang:monotonic_time() - T0, native, microsecond) / 1.0e6,
    {Total / Secs, Total / max(Cpu, 1.0e-9)}.

%% CPU time of an OS process in nanoseconds: the sum over its threads of
%% the time they ran (/proc/PID/task/TID/schedstat, first field), which
%% is finer than the clock ticks of /proc/PID/stat.
cpu_ns(OsPid) ->
    Dir = "/proc/" ++ OsPid ++ "/task",
    {ok, Tids} = file:list_dir(Dir),
    lists:sum([case file:read_file(filename:join([Dir, T, "schedstat"])) of
        {ok, B} -> binary_to_integer(hd(binary:split(B, <<" ">>)));
        {error, _} -> 0 % the thread ended meanwhile
    end || T <- Tids]).

caller(Node, I, Deadline, N) ->
    case erlang:monotonic_time(millisecond) < Deadline of
        false ->
            N;
        true ->
            Tag = {I, N},
            ok = gen_server:call({locker, Node}, {get_write_lock, {bench, I, N}, not_found, Tag}),
            ok = gen_server:call({locker, Node}, {release_write_lock, Tag}),
            caller(Node, I, Deadline, N + 2)
    end.

%%--------------------------------------------------------------------
%% Latency and throughput from a BEAM coordinator
%%--------------------------------------------------------------------

latency_rows(C, Clusters, #{lat_chunks := Chunks, lat_rounds := Rounds}) ->
    [begin use(C, M), _ = rpc:call(C, ?MODULE, latency_loop, [{warm, Name}, 100], infinity) end
     || {Name, M} <- Clusters],
    Runs = [begin
        Order = rotate(Clusters, I),
        [begin
            use(C, M),
            {Name, rpc:call(C, ?MODULE, latency_loop, [{I, Name}, Rounds], infinity)}
        end || {Name, M} <- Order]
    end || I <- lists:seq(1, Chunks)],
    Samples = fun(Name) -> lists:append([S || {N, S} <- lists:append(Runs), N =:= Name]) end,
    Ops = [{1, "lock"}, {2, "release"}, {3, "extend_lease"}, {4, "update"}],
    ByCluster = [{Name, Samples(Name)} || {Name, _} <- Clusters],
    {_, BaseS} = hd(ByCluster),
    lists:append([begin
        Col = fun(S) -> locker_bench:stats([element(I, X) || X <- S]) end,
        Base = Col(BaseS),
        B = {"all-BEAM", maps:get(median, Base)},
        [
            locker_bench:row(Op ++ ", mixed (2 BEAM + 1 lockerd) W=2", us,
                Col(proplists:get_value("mixed", ByCluster)), B, "BEAM coordinator, not a master"),
            locker_bench:row(Op ++ ", all-lockerd (3 lockerd) W=2", us,
                Col(proplists:get_value("all-lockerd", ByCluster)), B, "BEAM coordinator, not a master"),
            locker_bench:row("  " ++ Op ++ ", all-BEAM (3 BEAM) W=2", us, Base, "")
        ]
    end || {I, Op} <- Ops]).

%% The throughput group's 16 clients (locker_bench_throughput:measure/3).
throughput_rows(C, Clusters, #{tp_rounds := Rounds, tp_ms := Ms}) ->
    [begin use(C, M), _ = rpc:call(C, locker_bench_throughput, measure, [M, lock, 300], infinity) end
     || {_, M} <- Clusters],
    Runs = lists:append([begin
        [begin
            use(C, M),
            {Name, rpc:call(C, locker_bench_throughput, measure, [M, lock, Ms], infinity)}
        end || {Name, M} <- rotate(Clusters, I)]
    end || I <- lists:seq(1, Rounds)]),
    S = fun(Name) -> locker_bench:stats([R || {N, R} <- Runs, N =:= Name]) end,
    Base = S("all-BEAM"),
    B = {"all-BEAM", maps:get(median, Base)},
    Note = fmt("~b ms windows; higher is better", [Ms]),
    [
        locker_bench:row("lock+release pairs/s, 16 clients, mixed", per_s, S("mixed"), B, Note),
        locker_bench:row("lock+release pairs/s, 16 clients, all-lockerd", per_s, S("all-lockerd"), B, Note),
        locker_bench:row("  lock+release pairs/s, 16 clients, all-BEAM", per_s, Base, "")
    ].

%% A full mesh of the BEAM peers, one connection at a time, before
%% anything is timed (else `global' may cut a connection the first
%% multi_calls open concurrently, to prevent overlapping partitions).
mesh(Nodes) ->
    [true = rpc:call(A, net_kernel, connect_node, [B]) || A <- Nodes, B <- Nodes, A < B],
    [ok = rpc:call(N, global, sync, []) || N <- Nodes],
    ok.

%% The coordinator's masters (W stays 2).
use(C, Masters) ->
    ok = rpc:call(C, locker, set_nodes, [[C], Masters, []]).

rotate(L, I) ->
    {A, B} = lists:split(I rem length(L), L),
    B ++ A.

%% On the coordinator: one {lock, release, extend_lease, update} sample
%% (microseconds) per round, the four operations on one key; all three
%% masters must vote and commit.
latency_loop(Run, Rounds) ->
    Self = self(),
    [begin
        K = {bench, Run, I},
        {T1, {ok, 2, 3, 3}} = timer:tc(locker, lock, [K, Self, 60000]),
        {T3, ok} = timer:tc(locker, extend_lease, [K, Self, 60000]),
        {T4, {ok, 2, 3, 3}} = timer:tc(locker, update, [K, Self, {Self, 2}]),
        {T2, {ok, 2, 3, 3}} = timer:tc(locker, release, [K, {Self, 2}]),
        {T1, T2, T3, T4}
    end || I <- lists:seq(1, Rounds)].

%%--------------------------------------------------------------------
%% Memory per lease
%%--------------------------------------------------------------------

memory_rows(Bin, C, #{leases := N}) ->
    {Node, OsPid} = lockerd_pid(Bin, "bldmem"),
    sync(Node),
    timer:sleep(200),
    Before = rss(OsPid),
    load(Node, N),
    timer:sleep(200),
    After = rss(OsPid),
    Ours = (After - Before) / N,
    %% The memory group's figure: the NIF store's allocator count.
    Nif = rpc:call(C, locker_bench_memory, nif_per_lease, [N], infinity),
    Point = fun(X) -> #{median => float(X), p99 => float(X), max => float(X), n => 1} end,
    [
        locker_bench:row(fmt("lockerd memory per lease, ~b leases (RSS)", [N]), bytes, Point(Ours),
            {"NIF store (allocator count)", Nif},
            fmt("VmRSS ~b -> ~b kB; target <= 100 B; lower is better", [Before div 1024, After div 1024])),
        locker_bench:row("  NIF store per lease, same leases (memory group)", bytes, Point(Nif), "")
    ].

%% N leases as replayed `write' entries (stored like a coordinator's
%% `write' calls: same engine path, token 0), 1000 per trans_log cast, each
%% cast followed by a call (answered after the cast is replayed): more
%% entries in flight leave their buffers in the RSS (about +50 B per lease
%% with 50 casts in flight); windowed `write' calls give about 5% more than
%% this and take four times as long.
load(Node, N) ->
    Me = node(),
    Pid = self(),
    lists:foreach(
        fun(I) ->
            Entries = [{write, <<K:128>>, Pid, 3600000} || K <- lists:seq(I, min(N, I + 999))],
            gen_server:cast({locker, Node}, {trans_log, Me, Entries}),
            sync(Node)
        end, lists:seq(1, N, 1000)).

sync(Node) ->
    ok = gen_server:call({locker, Node}, {release_write_lock, make_ref()}, 60000).

rss(OsPid) ->
    {ok, B} = file:read_file("/proc/" ++ OsPid ++ "/status"),
    {match, [Kb]} = re:run(B, "VmRSS:\\s*([0-9]+) kB", [{capture, all_but_first, list}]),
    list_to_integer(Kb) * 1024.

%%--------------------------------------------------------------------
%% lockerd processes
%%--------------------------------------------------------------------

on_cleanup(F) ->
    put(lockerd_bench_cleanup, [F | get(lockerd_bench_cleanup)]).

%% Starts lockerd under a shell that kills it when its stdin (the port)
%% closes, so that it cannot outlive this VM; returns its node and OS pid.
lockerd_pid(Bin, Prefix) ->
    NodeS = Prefix ++ "_" ++ os:getpid() ++ "@127.0.0.1",
    Args = ["--name", NodeS, "--cookie", atom_to_list(erlang:get_cookie()), "--announce", "--log", "warn"],
    Script = "\"$0\" \"$@\" </dev/null & p=$!; echo \"lockerd_pid $p\"; cat >/dev/null; kill $p 2>/dev/null; wait $p",
    Parent = self(),
    Owner = spawn(fun() ->
        Port = open_port({spawn_executable, "/bin/sh"},
                         [{args, ["-c", Script, Bin | Args]}, {line, 4096}, exit_status, binary]),
        drain(Port, Parent)
    end),
    OsPid = receive {lockerd_pid, Owner, P} -> P after 10000 -> error({lockerd_not_started, NodeS}) end,
    on_cleanup(fun() -> os:cmd("kill " ++ OsPid), exit(Owner, kill) end),
    receive {lockerd_ready, Owner} -> ok after 10000 -> error({lockerd_not_ready, NodeS}) end,
    {list_to_atom(NodeS), OsPid}.

drain(Port, Parent) ->
    receive
        {Port, {data, {eol, <<"lockerd_pid ", P/binary>>}}} ->
            Parent ! {lockerd_pid, self(), binary_to_list(P)},
            drain(Port, Parent);
        {Port, {data, {eol, <<"lockerd ready", _/binary>>}}} ->
            Parent ! {lockerd_ready, self()},
            drain(Port, Parent);
        {Port, {exit_status, _}} ->
            ok;
        {Port, _} ->
            drain(Port, Parent)
    end.
