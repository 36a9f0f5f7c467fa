%% The targets of issue 14 (point 4), measured in one run on the same
%% three masters (W = 2) and each printed as a ratio against its floor,
%% with the target beside it (met / not met):
%%
%% - lock and release medians <= 0.4x two `gen_server:multi_call' rounds
%%   to a trivial server on the same nodes, and <= 1.3x one raw message
%%   round trip to them;
%% - lock+release pairs per second from 16 clients >= 20,000;
%% - `Locker.Registry' register + unregister <= 0.15x `:global''s;
%% - `dirty_read' of a cache-resident hot set of 1,024 keys <= 1.0x a
%%   plain `ets:lookup' of the same data (one and two readers);
%% - with 9 masters in 3 groups of 3 (only when a group configuration is
%%   given, see below): lock median <= 1.1x the 3-master cluster's, and
%%   the distribution packets per operation the same as with 3 masters.
%%
%% Run: `scripts/bench.sh targets' (`quick' for a short run). Parameters,
%% as environment variables holding Erlang terms, so that the switches of
%% other branches are picked up without changing this file:
%%
%% - `LOCKER_BENCH_VARIANTS': a list of `{Name, Env}': each variant
%%   restarts `locker' on the three masters with the application
%%   environment `Env' (`[{Key, Value}]' for `locker', or
%%   `[{App, Key, Value}]') and measures lock, release, throughput,
%%   packets per operation and the registry under it; the floors are
%%   measured in the same loops. Default `[{"default", []}]'. Example
%%   for the one-round and batching switches:
%%   `[{"two-phase", [{one_round, false}]}, {"one-round", [{one_round, true}]}]'.
%% - `LOCKER_BENCH_GROUPS': how to put 9 masters into 3 groups of 3:
%%   `{env, Key}' sets the application environment `Key' of `locker' to
%%   the groups (a list of three lists of three nodes) on every node before
%%   it starts, with `masters' its own group; `{call, Mod, Fun}' calls
%%   `Mod:Fun(Groups)' on every node after `locker' started (its masters:
%%   its own group). Unset: the groups row is skipped.
%%
%% Never a test: nothing here asserts on time.
-module(locker_bench_targets).
-export([run/1]).
-export([latency_loop/2, packets/0, hot_reads/1, lock_loop/2, lock_times/1]).

-define(REG, 'Elixir.Locker.Registry').
-define(HOT, 1024).
-define(SAMPLE, 65536).
-define(BATCH, 1000).

run(Quick) ->
    Variants = env_term("LOCKER_BENCH_VARIANTS", [{"default", []}]),
    Groups = env_term("LOCKER_BENCH_GROUPS", undefined),
    Rounds = case Quick of true -> 1500; false -> 6000 end,
    Ms = case Quick of true -> 2000; false -> 5000 end,
    RegRounds = case Quick of true -> 300; false -> 1500 end,
    Ebin = ebin(),
    Names = [list_to_atom("btgt" ++ integer_to_list(I) ++ "@127.0.0.1") || I <- [1, 2, 3]],
    Rows = lists:append([variant(V, Names, Ebin, Rounds, Ms, RegRounds, Groups) || V <- Variants]),
    Rows ++ reads(Names, Ebin, Quick).

env_term(Var, Default) ->
    case os:getenv(Var) of
        false -> Default;
        "" -> Default;
        S ->
            {ok, Toks, _} = erl_scan:string(S ++ "."),
            {ok, T} = erl_parse:parse_term(Toks),
            T
    end.

%% The Mix build (with Locker.Registry) when there is one, else rebar3's.
ebin() ->
    Dir = filename:absname("_build/mix/dev/lib/locker/ebin"),
    case filelib:is_file(filename:join(Dir, "Elixir.Locker.Registry.beam")) of
        true -> {mix, Dir};
        false -> {rebar, filename:dirname(code:which(locker))}
    end.

%%--------------------------------------------------------------------
%% One variant: latency, throughput, packets per operation, registry
%%--------------------------------------------------------------------

variant({Name, Env}, Names, Ebin, Rounds, Ms, RegRounds, Groups) ->
    io:format("   variant ~s: ~p~n", [Name, Env]),
    Peers = [start(N, Ebin, Names, Env) || N <- Names],
    [A | _] = Names,
    [true = rpc:call(X, net_kernel, connect_node, [Y]) || X <- Names, Y <- Names, X =/= Y],
    %% The application environment configures the masters the original
    %% way (`legacy': two phases, no batches, as with original masters);
    %% set_nodes takes them through a configuration epoch, where one-round
    %% operations and batching apply (each variant's switches decide).
    ok = rpc:call(A, locker, set_nodes, [Names, Names, []]),
    [ok = rpc:call(N, locker_bench_cluster, echo_server_init, []) || N <- Names],
    _ = rpc:call(A, ?MODULE, latency_loop, [Names, 300], infinity),
    Samples = rpc:call(A, ?MODULE, latency_loop, [Names, Rounds], infinity),
    Col = fun(I) -> locker_bench:stats([element(I, S) || S <- Samples]) end,
    [Lock, Release, Mc2, Raw1] = [Col(I) || I <- [1, 2, 3, 4]],
    {LockPk, RelPk} = packets_per_op(A, Names, 500),
    _ = rpc:call(A, locker_bench_throughput, measure, [Names, lock, 300], infinity),
    Pairs = rpc:call(A, locker_bench_throughput, measure, [Names, lock, Ms], infinity),
    McPairs = rpc:call(A, locker_bench_throughput, measure, [Names, multi_call, Ms], infinity),
    Reg = registry(A, Ebin, RegRounds),
    locker_bench:stop_peers(Peers),
    GroupRows = groups(Groups, Name, Env, Ebin, Rounds, maps:get(median, Lock), LockPk),
    Tag = fun(S) -> lists:flatten(io_lib:format("[~s] ~s", [Name, S])) end,
    M2 = {"2 multi_call rounds", maps:get(median, Mc2)},
    R1 = {"1 raw round trip", maps:get(median, Raw1)},
    Point = fun(X) -> #{median => float(X), p99 => float(X), max => float(X), n => 1} end,
    [
        target(Tag("lock, 3 masters W=2"), us, Lock, M2, 0.4),
        target(Tag("lock vs 1 raw round trip"), us, Lock, R1, 1.3),
        target(Tag("release"), us, Release, M2, 0.4),
        target(Tag("release vs 1 raw round trip"), us, Release, R1, 1.3),
        locker_bench:row(Tag("  floor: 2 gen_server:multi_call rounds"), us, Mc2, ""),
        locker_bench:row(Tag("  floor: 1 raw round trip to the 3 nodes"), us, Raw1, ""),
        target(Tag("lock+release pairs/s, 16 clients"), per_s, Point(Pairs), {"target 20,000 /s", 20000}, {at_least, 1.0}),
        locker_bench:row(Tag("  16 clients, 4 multi_call rounds (original's floor)"), per_s, Point(McPairs), ""),
        locker_bench:row(Tag("dist packets per lock (all nodes)"), count, Point(LockPk), ""),
        locker_bench:row(Tag("dist packets per release (all nodes)"), count, Point(RelPk), "")
    ] ++
        [R#{name => Tag(N)} || R = #{name := N} <- Reg] ++ GroupRows.

%% A row with a target: `Max' is the highest ratio that meets it, or
%% `{at_least, Min}' for rates.
target(Name, Unit, Stats, Baseline, Target) ->
    Row = locker_bench:row(Name, Unit, Stats, Baseline, ""),
    Ratio = maps:get(ratio, Row, undefined),
    {Met, Text} =
        case Target of
            {at_least, Min} -> {is_number(Ratio) andalso Ratio >= Min, io_lib:format(">= ~.2fx", [float(Min)])};
            Max -> {is_number(Ratio) andalso Ratio =< Max, io_lib:format("<= ~.2fx", [float(Max)])}
        end,
    Row#{target => lists:flatten(Text), met => Met,
         note => lists:flatten([Text, " ", case Met of true -> "met"; false -> "NOT met" end])}.

start(Name, {Kind, Ebin}, Masters, Env) ->
    [Short, _] = string:split(atom_to_list(Name), "@"),
    Paths = case Kind of
        mix -> [Ebin | locker_bench:bench_paths() -- [filename:dirname(code:which(locker))]];
        rebar -> locker_bench:bench_paths()
    end,
    {ok, Peer, Name} = peer:start(#{
        name => list_to_atom(Short),
        host => "127.0.0.1",
        longnames => true,
        args => ["-setcookie", atom_to_list(erlang:get_cookie()) | locker_bench:sched_args()] ++
            lists:append([["-pa", P] || P <- Paths])
    }),
    ok = rpc:call(Name, application, load, [locker]),
    ok = rpc:call(Name, application, set_env, [locker, masters, Masters]),
    ok = rpc:call(Name, application, set_env, [locker, quorum, length(Masters) div 2 + 1]),
    [ok = rpc:call(Name, application, set_env, app_env(E)) || E <- Env],
    {ok, _} = rpc:call(Name, application, ensure_all_started, [locker]),
    {Peer, Name}.

app_env({K, V}) -> [locker, K, V];
app_env({App, K, V}) -> [App, K, V].

%% Runs on a master: per round one lock, one release, two multi_call
%% rounds and one raw round trip, so that drift hits them alike.
latency_loop(Nodes, Rounds) ->
    Self = self(),
    [begin
        K = {target, I},
        {T1, {ok, _, _, _}} = timer:tc(locker, lock, [K, Self, 60000]),
        {T2, {ok, _, _, _}} = timer:tc(locker, release, [K, Self]),
        {T3, _} = timer:tc(fun() ->
            {_, []} = gen_server:multi_call(Nodes, bench_echo, ping, 5000),
            {_, []} = gen_server:multi_call(Nodes, bench_echo, ping, 5000)
        end),
        {T4, _} = timer:tc(locker_bench_cluster, raw_round, [Nodes]),
        {T1, T2, T3, T4}
    end || I <- lists:seq(1, Rounds)].

%% Distribution packets sent by all of `Nodes' per sequential lock and per
%% release run on `A' (from the sockets' send counters: each message on a
%% distribution connection is one packet).
packets_per_op(A, Nodes, N) ->
    %% The bench node's own rpc calls travel on the same counters: what
    %% an empty loop costs is subtracted.
    Delta = fun(What, K) ->
        P0 = total_packets(Nodes),
        ok = rpc:call(A, ?MODULE, lock_loop, [What, K], infinity),
        total_packets(Nodes) - P0
    end,
    Overhead = Delta(lock, 0),
    {(Delta(lock, N) - Overhead) / N, (Delta(release, N) - Overhead) / N}.

total_packets(Nodes) ->
    lists:sum([rpc:call(N, ?MODULE, packets, []) || N <- Nodes]).

%% Packets sent on this node's distribution connections.
packets() ->
    lists:sum([case inet:getstat(Port, [send_cnt]) of
                   {ok, [{send_cnt, C}]} -> C;
                   _ -> 0
               end || {_Node, Port} <- erlang:system_info(dist_ctrl), is_port(Port)]).

lock_loop(lock, N) ->
    [{ok, _, _, _} = locker:lock({packets, I}, packets, 60000) || I <- lists:seq(1, N)],
    ok;
lock_loop(release, N) ->
    [{ok, _, _, _} = locker:release({packets, I}, packets) || I <- lists:seq(1, N)],
    ok.

%% Microseconds of each of `N' sequential locks (each released after).
lock_times(N) ->
    Self = self(),
    [begin
        {T, {ok, _, _, _}} = timer:tc(locker, lock, [{times, I}, Self, 60000]),
        {ok, _, _, _} = locker:release({times, I}, Self),
        T
    end || I <- lists:seq(1, N)].

registry(A, {mix, _}, Rounds) ->
    ok = rpc:call(A, global, sync, []),
    _ = rpc:call(A, locker_bench_registry, reg_loop, [locker, 50], infinity),
    _ = rpc:call(A, locker_bench_registry, reg_loop, [global, 50], infinity),
    %% Interleaved halves, so that drift hits both alike.
    Half = Rounds div 2,
    [O1, G1, O2, G2] = [rpc:call(A, locker_bench_registry, reg_loop, [K, Half], infinity)
                        || K <- [locker, global, locker, global]],
    Ours = locker_bench:stats(O1 ++ O2),
    Global = locker_bench:stats(G1 ++ G2),
    [
        target("Registry register + unregister", us, Ours, {":global", maps:get(median, Global)}, 0.15),
        locker_bench:row("  :global register + unregister", us, Global, "")
    ];
registry(_A, {rebar, _}, _Rounds) ->
    io:format("   registry skipped: no Mix build of locker (run `mix compile`)~n"),
    [].

%%--------------------------------------------------------------------
%% 9 masters in 3 groups of 3
%%--------------------------------------------------------------------

groups(undefined, _Name, _Env, _Ebin, _Rounds, _Lock3, _Pk3) ->
    io:format("   groups skipped: set LOCKER_BENCH_GROUPS (see bench/locker_bench_targets.erl)~n"),
    [];
groups(How, Name, Env, Ebin, Rounds, Lock3, Pk3) ->
    Groups = [[list_to_atom(lists:flatten(io_lib:format("btgtg~b_~b@127.0.0.1", [G, I]))) || I <- [1, 2, 3]]
              || G <- [1, 2, 3]],
    All = lists:append(Groups),
    Peers = [start_grouped(N, G, Groups, How, Ebin, Env) || G <- Groups, N <- G],
    [true = rpc:call(X, net_kernel, connect_node, [Y]) || X <- All, Y <- All, X =/= Y],
    [ok = rpc:call(N, M, F, [Groups]) || {call, M, F} <- [How], N <- All],
    [A | _] = All,
    _ = rpc:call(A, ?MODULE, lock_loop, [lock, 200], infinity),
    _ = rpc:call(A, ?MODULE, lock_loop, [release, 200], infinity),
    Lat = locker_bench:stats(rpc:call(A, ?MODULE, lock_times, [Rounds div 2], infinity)),
    {LockPk, _} = packets_per_op(A, All, 500),
    locker_bench:stop_peers(Peers),
    Tag = fun(S) -> lists:flatten(io_lib:format("[~s] ~s", [Name, S])) end,
    Point = fun(X) -> #{median => float(X), p99 => float(X), max => float(X), n => 1} end,
    [
        target(Tag("lock, 9 masters in 3 groups of 3"), us, Lat, {"lock, 3 masters", Lock3}, 1.1),
        target(Tag("dist packets per lock, 3 groups"), count, Point(LockPk), {"3 masters", Pk3}, 1.0)
    ].

start_grouped(Name, Group, Groups, How, Ebin, Env) ->
    Extra = case How of
        {env, Key} -> [{Key, Groups}];
        {call, _, _} -> []
    end,
    start(Name, Ebin, Group, Env ++ Extra).

%%--------------------------------------------------------------------
%% dirty_read of a hot set against ets:lookup of the same data
%%--------------------------------------------------------------------

reads(Names, Ebin, Quick) ->
    Batches = case Quick of true -> 300; false -> 1500 end,
    Peers = [start(hd(Names), Ebin, [hd(Names)], [])],
    Rows = rpc:call(hd(Names), ?MODULE, hot_reads, [Batches], infinity),
    locker_bench:stop_peers(Peers),
    Rows.

%% On a master: 1,024 leases with pid values, and the same {Key, Pid}
%% rows in a plain ETS set; reads of random keys of that hot set, from
%% one and two readers, interleaved over three passes (each keeps its
%% best pass by median).
hot_reads(Batches) ->
    Pid = self(),
    Plain = ets:new(plain, [set, public]),
    [begin
         K = <<I:128>>,
         {ok, []} = locker_nif:write(t, K, Pid, 3600000),
         true = ets:insert(Plain, {K, Pid})
     end || I <- lists:seq(1, ?HOT)],
    rand:seed(exsss, {4, 5, 6}),
    Keys = list_to_tuple([<<(rand:uniform(?HOT)):128>> || _ <- lists:seq(1, ?SAMPLE)]),
    {ok, Pid} = locker:dirty_read(element(1, Keys)),
    Cases = [{What, P} || P <- [1, 2], What <- [dirty, ets]],
    Best = lists:foldl(
        fun(_, Acc) ->
            lists:foldl(
                fun(C = {What, P}, Acc1) ->
                    S = locker_bench:stats(measure(What, Plain, Keys, P, Batches)),
                    case maps:find(C, Acc1) of
                        {ok, #{median := M}} when M =< map_get(median, S) -> Acc1;
                        _ -> Acc1#{C => S}
                    end
                end,
                Acc, Cases)
        end,
        #{}, [1, 2, 3]),
    lists:append([begin
        Ets = maps:get({ets, P}, Best),
        R = io_lib:format("~b reader~s", [P, case P of 1 -> ""; _ -> "s" end]),
        [target(lists:flatten(io_lib:format("dirty_read, hot set of 1,024 keys, ~s", [R])), ns,
                maps:get({dirty, P}, Best), {"ets:lookup, plain set", maps:get(median, Ets)}, 1.0),
         locker_bench:row(lists:flatten(io_lib:format("  ets:lookup of the same {Key, Pid}, ~s", [R])), ns, Ets, "")]
    end || P <- [1, 2]]).

measure(What, Tab, Keys, P, Batches) ->
    Parent = self(),
    Pids = [spawn_link(fun() ->
                receive go -> ok end,
                Parent ! {samples, self(), batches(What, Tab, Keys, Batches, 0, [])}
            end) || _ <- lists:seq(1, P)],
    [Pid ! go || Pid <- Pids],
    lists:append([receive {samples, Pid, S} -> S end || Pid <- Pids]).

batches(_What, _Tab, _Keys, N, N, Acc) ->
    Acc;
batches(What, Tab, Keys, N, I, Acc) ->
    Offset = (I * ?BATCH) band (?SAMPLE - 1),
    T0 = erlang:monotonic_time(nanosecond),
    case What of
        dirty -> dirty_loop(Keys, Offset, ?BATCH);
        ets -> ets_loop(Tab, Keys, Offset, ?BATCH)
    end,
    T = erlang:monotonic_time(nanosecond) - T0,
    batches(What, Tab, Keys, N, I + 1, [T / ?BATCH | Acc]).

dirty_loop(_Keys, _Offset, 0) -> ok;
dirty_loop(Keys, Offset, N) ->
    _ = locker:dirty_read(element(((Offset + N) band (?SAMPLE - 1)) + 1, Keys)),
    dirty_loop(Keys, Offset, N - 1).

ets_loop(_T, _Keys, _Offset, 0) -> ok;
ets_loop(T, Keys, Offset, N) ->
    _ = ets:lookup(T, element(((Offset + N) band (?SAMPLE - 1)) + 1, Keys)),
    ets_loop(T, Keys, Offset, N - 1).
