%% Cluster mode (locker_groups): nine masters in three groups of three
%% (W = 2 each) against three masters in one group (W = 2), in the same
%% run, on the same masters: one coordinator node routes keys over the
%% three groups, another has no group table and the first group's masters
%% as its own (today's one-group cluster). Both coordinators are in no
%% group, so every vote is remote for both. Chunks of the two loops
%% alternate, so that the machine's drift hits them alike. Then the
%% messages each coordinator sends per lock and per release (counted with
%% a send trace over a short run): they must not depend on the number of
%% groups.
%%
%%   scripts/bench.sh [quick] groups
-module(locker_bench_groups).
-export([run/1, loop/2, count_sends/2, spread/1]).

run(Quick) ->
    {Chunks, PerChunk} = case Quick of true -> {10, 100}; false -> {40, 150} end,
    Prefix = "bg" ++ os:getpid() ++ "_",
    Peers = [start_peer(list_to_atom(Prefix ++ integer_to_list(I))) || I <- lists:seq(1, 11)],
    Nodes = [N || {_, N} <- Peers],
    {Masters, [C, D]} = lists:split(9, Nodes),
    [G1, G2, G3] = [lists:sublist(Masters, I, 3) || I <- [1, 4, 7]],
    %% Each group's masters: a legacy one-group view of their own.
    [configure(M, G) || G <- [G1, G2, G3], M <- G],
    %% D: today's cluster of three (no table); C: the three groups.
    configure(D, G1),
    ok = rpc:call(C, locker_groups, set, [[#{id => I, masters => G, w => 2} || {I, G} <- lists:enumerate([G1, G2, G3])]]),
    %% Warm up both (connections, catch-up).
    _ = rpc:call(C, ?MODULE, loop, [warm, 200], infinity),
    _ = rpc:call(D, ?MODULE, loop, [warm, 200], infinity),
    %% Keys of the first group only, through C's routing: the same three
    %% masters as D's, so the difference from D is routing alone.
    Table = rpc:call(C, locker_groups, table, []),
    Own = lists:sublist(
        [K || I <- lists:seq(1, 5 * Chunks * PerChunk), K <- [{h, I}], maps:get(id, locker_groups:pick(K, Table)) =:= 1],
        Chunks * PerChunk
    ),
    Samples = lists:foldl(
        fun(I, {Gs, Ss, Hs}) ->
            G = rpc:call(C, ?MODULE, loop, [{g, I}, PerChunk], infinity),
            S = rpc:call(D, ?MODULE, loop, [{s, I}, PerChunk], infinity),
            H = rpc:call(C, ?MODULE, loop, [lists:sublist(Own, (I - 1) * PerChunk + 1, PerChunk), PerChunk], infinity),
            {G ++ Gs, S ++ Ss, H ++ Hs}
        end,
        {[], [], []},
        lists:seq(1, Chunks)
    ),
    {GroupS, OneS, OwnS} = Samples,
    MsgG = rpc:call(C, ?MODULE, count_sends, [msg_g, 200], infinity),
    MsgS = rpc:call(D, ?MODULE, count_sends, [msg_s, 200], infinity),
    Spread = rpc:call(C, ?MODULE, spread, [1000]),
    locker_bench:stop_peers(Peers),
    rows(GroupS, OneS, OwnS, MsgG, MsgS, Spread).

rows(GroupS, OneS, OwnS, {LockG, RelG}, {LockS, RelS}, Spread) ->
    Col = fun(Samples, I) -> locker_bench:stats([element(I, X) || X <- Samples]) end,
    [LG, RG, LS, RS, LO] = [Col(GroupS, 1), Col(GroupS, 2), Col(OneS, 1), Col(OneS, 2), Col(OwnS, 1)],
    One = fun(Stats) -> {"3 masters, one group", maps:get(median, Stats)} end,
    Msgs = fun(Name, V, Base) -> locker_bench:row(Name, msgs, #{median => V, p99 => V, max => V, n => 200}, Base, "") end,
    [
        locker_bench:row("lock, 9 masters in 3 groups (W=2 each)", us, LG, One(LS),
                         lists:flatten(io_lib:format("keys of every group (of 1000 keys: ~w)", [Spread]))),
        locker_bench:row("lock, 3 groups, keys of group 1 only", us, LO, One(LS), "same masters as the baseline: routing alone"),
        locker_bench:row("release, 9 masters in 3 groups", us, RG, One(RS), ""),
        locker_bench:row("  lock, 3 masters in one group W=2", us, LS, ""),
        locker_bench:row("  release, 3 masters in one group", us, RS, ""),
        Msgs("messages per lock, 3 groups", LockG, {"one group", LockS}),
        Msgs("messages per release, 3 groups", RelG, {"one group", RelS}),
        Msgs("  messages per lock, one group", LockS, undefined),
        Msgs("  messages per release, one group", RelS, undefined)
    ].

configure(Node, Masters) ->
    ok = gen_server:call({locker, Node}, {set_nodes, Masters, []}),
    ok = gen_server:call({locker, Node}, {set_w, 2}).

start_peer(Name) ->
    {ok, Peer, Node} = peer:start(#{
        name => Name,
        host => "127.0.0.1",
        longnames => true,
        args => ["-setcookie", atom_to_list(erlang:get_cookie()),
                 "-kernel", "prevent_overlapping_partitions", "false" | locker_bench:sched_args()] ++
            lists:append([["-pa", P] || P <- locker_bench:bench_paths()])
    }),
    ok = rpc:call(Node, application, load, [locker]),
    {ok, _} = rpc:call(Node, gen_server, start, [{local, locker}, locker_server, [2, 1000, 1000, 100], []]),
    {Peer, Node}.

%% Runs on a coordinator: lock then release of a fresh key per round
%% (`{Prefix, I}', or the keys given).
loop(Keys, _Rounds) when is_list(Keys) ->
    Self = self(),
    [begin
        {T1, {ok, _, _, _}} = timer:tc(locker, lock, [K, Self, 60000]),
        {T2, {ok, _, _, _}} = timer:tc(locker, release, [K, Self]),
        {T1, T2}
    end || K <- Keys];
loop(Prefix, Rounds) ->
    Self = self(),
    [begin
        K = {Prefix, I},
        {T1, {ok, _, _, _}} = timer:tc(locker, lock, [K, Self, 60000]),
        {T2, {ok, _, _, _}} = timer:tc(locker, release, [K, Self]),
        {T1, T2}
    end || I <- lists:seq(1, Rounds)].

%% Runs on a coordinator: the messages this process sends per lock and
%% per release, over Rounds of each (a send trace, off the timed loops).
count_sends(Prefix, Rounds) ->
    Self = self(),
    Count = fun(F) ->
        Counter = spawn(fun() -> counter(0) end),
        erlang:trace(Self, true, [send, {tracer, Counter}]),
        F(),
        erlang:trace(Self, false, [send]),
        Counter ! {get, Self},
        receive {sent, N} -> N / Rounds end
    end,
    Keys = [{Prefix, I} || I <- lists:seq(1, Rounds)],
    Lock = Count(fun() -> [{ok, _, _, _} = locker:lock(K, Self, 60000) || K <- Keys] end),
    Release = Count(fun() -> [{ok, _, _, _} = locker:release(K, Self) || K <- Keys] end),
    {Lock, Release}.

%% Counts the trace messages of sends to another process than the tracer
%% (the counter's own `get' reply is not one of them).
counter(N) ->
    receive
        {trace, _, send, _, _} -> counter(N + 1);
        {get, From} ->
            %% Traces sent before trace was turned off are all in the queue.
            timer:sleep(100),
            From ! {sent, drain(N)}
    end.

drain(N) ->
    receive {trace, _, send, _, _} -> drain(N + 1) after 0 -> N end.

%% How 1000 keys spread over the groups.
spread(N) ->
    lists:foldl(fun(I, Acc) -> maps:update_with(locker_groups:group_of({spread, I}), fun(X) -> X + 1 end, 1, Acc) end,
                #{}, lists:seq(1, N)).
