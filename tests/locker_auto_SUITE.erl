%% Automatic membership (`{masters, auto}', opt-in for Erlang users) across
%% real nodes. Peers (`au_' names) start with `-connect_all false': they are
%% connected to the test node only, and to each other when a case says so,
%% as libcluster or `net_kernel:connect_node/1' would after boot.
-module(locker_auto_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_suite/1, end_per_suite/1, init_per_testcase/2, end_per_testcase/2]).
-export([
    bad_app_env/1,
    lone_node_never_grants/1,
    forms_when_quorum_connects/1,
    join_and_leave/1,
    two_formed_clusters_refused/1,
    boot_all_at_once/1,
    restarted_master_rejoins/1,
    partition_and_heal/1,
    different_sizes_ignored/1,
    minimum_w_grows/1,
    bootstrap_promise_is_exclusive/1,
    five_boot_and_connect_at_random/1
]).
-export([log/2]).

all() ->
    [bad_app_env, lone_node_never_grants, forms_when_quorum_connects, join_and_leave,
     two_formed_clusters_refused, boot_all_at_once, restarted_master_rejoins, partition_and_heal,
     different_sizes_ignored, minimum_w_grows, bootstrap_promise_is_exclusive,
     five_boot_and_connect_at_random].

init_per_suite(Config) ->
    ok = locker_ct:ensure_distributed(),
    Config.

end_per_suite(_Config) ->
    ok.

init_per_testcase(_Case, Config) ->
    locker_ct:init_cleanup(Config).

end_per_testcase(_Case, Config) ->
    locker_ct:cleanup(Config).

%%--------------------------------------------------------------------
%% Cases
%%--------------------------------------------------------------------

%% Every bad or missing key of the automatic mode stops the start with an
%% error naming it.
bad_app_env(Config) ->
    [A] = peers(Config, 1),
    Start = fun(Env) ->
        ok = rpc:call(A, application, unload, [locker]),
        ok = rpc:call(A, application, load, [locker]),
        [ok = rpc:call(A, application, set_env, [locker, K, V]) || {K, V} <- [{start_server, true} | Env]],
        rpc:call(A, application, start, [locker])
    end,
    Reason = fun(Env) ->
        {error, R} = Start(Env),
        %% {bad_app_env, Key, Value, Expected} somewhere in the reason.
        find_bad(R)
    end,
    %% A missing size: the automatic mode's own check.
    ?assertMatch({bad_app_env, cluster_size, undefined, _}, Reason([{masters, auto}])),
    ?assertMatch({bad_app_env, w, 1, _}, Reason([{masters, auto}, {cluster_size, 3}, {w, 1}])),
    %% A bad value of one key: the application's check (locker_config),
    %% one message naming it.
    Names = fun(Env, Key) ->
        {error, R} = Start(Env),
        ct:log("~p: ~p", [Key, R]),
        case find_bad(R) of
            {bad_app_env, Key, _, _} -> true;
            _ -> lists:any(fun(M) -> string:find(M, atom_to_list(Key) ++ " = ") =/= nomatch end, messages(R))
        end
    end,
    ?assert(Names([{masters, auto}, {cluster_size, 0}], cluster_size)),
    ?assert(Names([{masters, auto}, {cluster_size, 3}, {w, 2}, {leave_grace_ms, x}], leave_grace_ms)),
    ?assert(Names([{masters, auto}, {cluster_size, 3}, {tick_ms, 0}], tick_ms)),
    ?assert(Names([{masters, auto}, {cluster_size, 3}, {leave_grace_ms, 10}, {replicas, "r@h"}], replicas)),
    ?assert(Names([{masters, automatic}, {cluster_size, 3}], masters)),
    ok.

%% The messages of a {bad_config, Messages} somewhere in the reason.
messages({bad_config, Ms}) when is_list(Ms) -> [lists:flatten(M) || M <- Ms];
messages(T) when is_tuple(T) -> messages(tuple_to_list(T));
messages(L) when is_list(L) -> lists:append([messages(E) || E <- L]);
messages(_) -> [].

find_bad({bad_app_env, _, _, _} = B) -> B;
find_bad(T) when is_tuple(T) -> find_bad(tuple_to_list(T));
find_bad([H | T]) ->
    case find_bad(H) of
        none -> find_bad(T);
        B -> B
    end;
find_bad(_) -> none.

%% A node started alone with cluster_size 3 grants nothing: a lock is
%% refused at once, and the log says why.
lone_node_never_grants(Config) ->
    [A] = peers(Config, 1),
    ok = forward_logs(A),
    start_auto(A, 3),
    ?assertEqual({error, no_quorum}, rpc:call(A, locker, lock, [k, self(), 10000])),
    ?assertEqual({error, no_quorum}, rpc:call(A, locker, lock_with_token, [k, self(), 10000, 5000])),
    #{cluster := undefined, quorum := false, masters := [A]} = rpc:call(A, locker_auto, status, []),
    Line = await_log(A, "no quorum: 1 of the 3 expected masters present"),
    ct:log("~ts", [Line]),
    %% Bad input is dropped (logged, bounded); the process stays.
    Pid = rpc:call(A, erlang, whereis, [locker_auto]),
    [{locker_auto, A} ! Bad || Bad <- [
        {locker_auto, 1, {hello, "x", undefined, [], 2}},
        {locker_auto, 1, {hello, node(), {bad}, [a], 2}},
        {locker_auto, 1, {hello, node(), undefined, [a]}},
        {locker_auto, 1, {prepare, x, y, z, w}},
        {locker_auto, 1, {adopt, node(), {x, 1, 2}, {[A], 0}}},
        {locker_auto, 1, garbage},
        {locker_auto, 99, anything},
        garbage
    ]],
    gen_server:cast({locker_auto, A}, garbage),
    {error, {unknown_request, garbage}} = gen_server:call({locker_auto, A}, garbage),
    await_log(A, "unexpected or malformed membership message"),
    ?assertEqual(Pid, rpc:call(A, erlang, whereis, [locker_auto])),
    #{cluster := undefined, masters := [A]} = rpc:call(A, locker_auto, status, []),
    ok.

%% Three nodes started alone, then connected: two form a cluster (a
%% quorum of the expected 3); before that nothing is granted anywhere.
forms_when_quorum_connects(Config) ->
    [A, B, C] = Nodes = peers(Config, 3),
    [start_auto(N, 3) || N <- Nodes],
    [?assertEqual({error, no_quorum}, rpc:call(N, locker, lock, [k, N, 10000])) || N <- Nodes],
    true = rpc:call(A, net_kernel, connect_node, [B]),
    AB = lists:sort([A, B]),
    [await_status(N, fun(#{masters := M, w := 2, quorum := true}) -> M =:= AB; (_) -> false end) || N <- AB],
    #{cluster := Id} = rpc:call(A, locker_auto, status, []),
    #{cluster := Id} = rpc:call(B, locker_auto, status, []),
    ?assertMatch({ok, 2, 2, 2}, rpc:call(A, locker, lock, [k, a, 10000])),
    ?assertMatch({error, no_quorum}, rpc:call(B, locker, lock, [k, b, 10000])),
    %% C, not connected, still alone.
    ?assertEqual({error, no_quorum}, rpc:call(C, locker, lock, [k, c, 10000])),
    ok.

%% A node connected later is added (through locker_membership:change/3),
%% a master stopped is removed after the grace period, never below the
%% expected quorum.
join_and_leave(Config) ->
    [A, B, C] = Nodes = peers(Config, 3),
    [start_auto(N, 3) || N <- Nodes],
    true = rpc:call(A, net_kernel, connect_node, [B]),
    AB = lists:sort([A, B]),
    await_status(A, fun(#{masters := M}) -> M =:= AB end),
    %% A lease taken before the join: nobody else may get the key before
    %% it runs out, during the change or after (the change itself waits
    %% for it: the joint configuration lasts until the old leases ran out).
    Lease = 3000,
    T0 = erlang:monotonic_time(millisecond),
    {ok, 2, 2, 2} = rpc:call(A, locker, lock, [held, a, Lease]),
    true = rpc:call(C, net_kernel, connect_node, [A]),
    true = rpc:call(C, net_kernel, connect_node, [B]),
    ABC = lists:sort(Nodes),
    Joined = fun() ->
        lists:all(fun(N) ->
            case rpc:call(N, locker_auto, status, []) of
                #{masters := M, w := 2, cluster := Id, changing := false} -> M =:= ABC andalso Id =/= undefined;
                _ -> false
            end
        end, Nodes)
    end,
    {Attempts, Early} = contend_until(Joined, C, held, T0 + Lease, 0, 0),
    ct:log("~b attempts on the held key from the joining node while it joined", [Attempts]),
    ?assert(Attempts > 0),
    ?assertEqual(0, Early),
    {ok, 2, _, _} = rpc:call(C, locker, lock, [k2, c, 10000]),
    %% Stop C: after the grace period it is removed.
    stop_node(Config, C),
    await_status(A, fun(#{masters := M}) -> M =:= AB end, 60000),
    %% Stop B: A keeps two masters (the expected quorum) and grants nothing.
    ok = forward_logs(A),
    stop_node(Config, B),
    await_log(A, "no quorum: 1 of the 2 masters present"),
    #{masters := AB, quorum := false} = rpc:call(A, locker_auto, status, []),
    ?assertEqual({error, no_quorum}, rpc:call(A, locker, lock, [k3, a, 10000])),
    ok.

%% Three nodes connected to each other before locker starts, then started
%% at once: one cluster of the three.
boot_all_at_once(Config) ->
    [A, B, C] = Nodes = peers(Config, 3),
    true = rpc:call(A, net_kernel, connect_node, [B]),
    true = rpc:call(A, net_kernel, connect_node, [C]),
    true = rpc:call(B, net_kernel, connect_node, [C]),
    Self = self(),
    [spawn_link(fun() -> Self ! {started, N, catch start_auto(N, 3)} end) || N <- Nodes],
    [receive {started, N, R} -> ok = R end || N <- Nodes],
    [await_status(N, fun(#{masters := M, cluster := Id, quorum := Q}) -> M =:= Nodes andalso Id =/= undefined andalso Q end, 60000)
     || N <- Nodes],
    Ids = lists:usort([maps:get(cluster, rpc:call(N, locker_auto, status, [])) || N <- Nodes]),
    ?assertMatch([_], Ids),
    {ok, 2, _, _} = rpc:call(C, locker, lock, [k, c, 10000]),
    ok.

%% A master restarted empty under the same name (a Kubernetes pod of a
%% StatefulSet), within the grace period: it gets the cluster's
%% configuration back instead of staying alone.
restarted_master_rejoins(Config) ->
    [A, B, C] = Nodes = peers(Config, 3),
    [start_auto(N, 3, 600000) || N <- Nodes],
    true = rpc:call(A, net_kernel, connect_node, [B]),
    true = rpc:call(A, net_kernel, connect_node, [C]),
    true = rpc:call(B, net_kernel, connect_node, [C]),
    [await_status(N, fun(#{masters := M, changing := Ch, quorum := Q}) -> M =:= Nodes andalso Q andalso not Ch end, 60000)
     || N <- Nodes],
    #{cluster := Id} = rpc:call(A, locker_auto, status, []),
    Epoch = rpc:call(A, locker_meta, epoch, []),
    stop_node(Config, C),
    [C] = peers(Config, [C]),
    start_auto(C, 3, 600000),
    true = rpc:call(C, net_kernel, connect_node, [A]),
    true = rpc:call(C, net_kernel, connect_node, [B]),
    await_status(C, fun(#{masters := M, cluster := Id1, quorum := Q}) -> M =:= Nodes andalso Id1 =:= Id andalso Q end),
    %% It took the cluster's configuration epoch too.
    await(fun() -> rpc:call(C, locker_meta, epoch, []) =:= Epoch end, 30000, epoch),
    {ok, 2, _, _} = rpc:call(C, locker, lock, [k, c, 10000]),
    ok.

%% A cut off from B and C (their connections refused by cookies that do
%% not match, both ways): A grants nothing; B and C remove A after the
%% grace period and keep granting; A cannot change anything. When the
%% partition heals, A is added back.
partition_and_heal(Config) ->
    [A, B, C] = Nodes = peers(Config, 3),
    [start_auto(N, 3) || N <- Nodes],
    true = rpc:call(A, net_kernel, connect_node, [B]),
    true = rpc:call(A, net_kernel, connect_node, [C]),
    true = rpc:call(B, net_kernel, connect_node, [C]),
    [await_status(N, fun(#{masters := M, quorum := Q}) -> M =:= Nodes andalso Q end, 60000) || N <- Nodes],
    EpochA = rpc:call(A, locker_meta, epoch, []),
    ok = forward_logs(A),
    Cookie = erlang:get_cookie(),
    cut(A, [B, C], a_side),
    [cut(N, [A], N) || N <- [B, C]],
    [rpc:call(A, erlang, disconnect_node, [N]) || N <- [B, C]],
    await_log(A, "no quorum"),
    BC = lists:sort([B, C]),
    await_status(B, fun(#{masters := M, quorum := Q, changing := Ch}) -> M =:= BC andalso Q andalso not Ch end, 60000),
    %% Contend from both sides: only B and C's side grants.
    Rounds = 20,
    Grants = [
        {rpc:call(A, locker, lock, [{p, I}, a, 1000]), rpc:call(B, locker, lock, [{p, I}, b, 1000])}
     || I <- lists:seq(1, Rounds)
    ],
    ?assertEqual(Rounds, length(Grants)),
    ?assertEqual([], [G || {{ok, _, _, _} = G, _} <- Grants]),
    ?assertEqual(Rounds, length([G || {_, {ok, _, _, _} = G} <- Grants])),
    %% A changed nothing: it could not reach a quorum of its masters.
    ?assertEqual(EpochA, rpc:call(A, locker_meta, epoch, [])),
    #{masters := Nodes, quorum := false} = rpc:call(A, locker_auto, status, []),
    %% Heal.
    [rpc:call(N, erlang, set_cookie, [M, Cookie]) || {N, M} <- [{A, B}, {A, C}, {B, A}, {C, A}]],
    true = rpc:call(A, net_kernel, connect_node, [B]),
    true = rpc:call(A, net_kernel, connect_node, [C]),
    [await_status(N, fun(#{masters := M, quorum := Q, changing := Ch}) -> M =:= Nodes andalso Q andalso not Ch end, 60000)
     || N <- Nodes],
    {ok, 2, _, _} = rpc:call(A, locker, lock, [healed, a, 10000]),
    ok.

%% Two nodes that expect different cluster sizes do not count each other.
different_sizes_ignored(Config) ->
    [A, B] = peers(Config, 2),
    ok = forward_logs(A),
    start_auto(A, 3),
    start_auto(B, 5),
    true = rpc:call(A, net_kernel, connect_node, [B]),
    await_log(A, "expects a quorum of 3, this node 2"),
    #{cluster := undefined, peers := Peers, quorum := false} = rpc:call(A, locker_auto, status, []),
    ?assertEqual(#{}, Peers),
    ?assertEqual({error, no_quorum}, rpc:call(A, locker, lock, [k, a, 10000])),
    ok.

%% `{w, 2}' without a size: two nodes form a cluster, and as more join W
%% stays a majority of the masters (4 masters: W = 3).
minimum_w_grows(Config) ->
    [A, B, C, D] = Nodes = peers(Config, 4),
    [start_env(N, [{w, 2}]) || N <- Nodes],
    true = rpc:call(A, net_kernel, connect_node, [B]),
    await_status(A, fun(#{masters := M, w := 2, quorum := Q}) -> M =:= lists:sort([A, B]) andalso Q end),
    [true = rpc:call(N, net_kernel, connect_node, [M]) || N <- [C, D], M <- [A, B]],
    true = rpc:call(C, net_kernel, connect_node, [D]),
    [await_status(N, fun(#{masters := M, w := W, quorum := Q, changing := Ch}) -> M =:= Nodes andalso W =:= 3 andalso Q andalso not Ch end, 60000)
     || N <- Nodes],
    {ok, 3, _, _} = rpc:call(D, locker, lock, [k, d, 10000]),
    ok.

%% The forming protocol seen from one fresh node, with this test node as
%% the proposers (a process registered as locker_auto here gets the
%% answers): a node promises itself to one proposal at a time, until it is
%% committed, aborted, or its proposer is gone; only the proposal it
%% promised to can configure it.
bootstrap_promise_is_exclusive(Config) ->
    [A] = peers(Config, 1),
    start_auto(A, 3),
    Me = node(),
    Proposer = fun() ->
        Test = self(),
        P = spawn(fun() -> true = register(locker_auto, self()), Test ! {registered, self()}, relay(Test) end),
        receive {registered, P} -> P end
    end,
    Ask = fun(Msg) -> {locker_auto, A} ! {locker_auto, 1, Msg} end,
    Answer = fun(Ref) -> receive {relayed, {locker_auto, 1, {promise, Ref, A, Yes}}} -> Yes after 10000 -> ct:fail(no_answer) end end,
    P1 = Proposer(),
    [R1, R2, R3] = [make_ref() || _ <- [1, 2, 3]],
    Ask({prepare, R1, Me, [Me, A], 2}),
    ?assert(Answer(R1)),
    %% Promised: another proposal is refused, the same one is not.
    Ask({prepare, R2, Me, [Me, A], 2}),
    ?assertNot(Answer(R2)),
    Ask({prepare, R1, Me, [Me, A], 2}),
    ?assert(Answer(R1)),
    %% A commit of a proposal it did not promise to changes nothing.
    Ask({commit, R2, Me, {Me, 1, 1}, [Me, A], 2}),
    %% (an answer to a message sent after the commit: the commit was handled)
    Ask({prepare, R1, Me, [Me, A], 2}),
    ?assert(Answer(R1)),
    ?assertEqual({error, no_quorum}, rpc:call(A, locker, lock, [k, a, 1000])),
    #{cluster := undefined, masters := [A]} = rpc:call(A, locker_auto, status, []),
    %% Aborted: free again.
    Ask({abort, R1, Me}),
    Ask({prepare, R2, Me, [Me, A], 2}),
    ?assert(Answer(R2)),
    %% The proposer's locker_auto is gone: free again.
    exit(P1, kill),
    P2 = await_new_proposer(Proposer),
    Ask({prepare, R3, Me, [Me, A], 2}),
    ?assert(Answer(R3)),
    %% The promised proposal commits: the node takes its configuration.
    Id = {Me, 2, 2},
    Ask({commit, R3, Me, Id, [Me, A], 2}),
    await_status(A, fun(#{cluster := C, masters := M, w := 2}) -> C =:= Id andalso M =:= lists:sort([Me, A]) end),
    exit(P2, kill),
    ok.

%% Five nodes started at once, connected pair by pair in a random order
%% while they start: one cluster of five (W = 3), every time.
%% LOCKER_AUTO_BOOTS rounds (default 1).
five_boot_and_connect_at_random(Config) ->
    Rounds = list_to_integer(os:getenv("LOCKER_AUTO_BOOTS", "1")),
    Seed = erlang:phash2(make_ref()),
    rand:seed(exsss, {Seed, 1, 2}),
    ct:log("seed ~b, ~b rounds", [Seed, Rounds]),
    lists:foreach(
        fun(Round) ->
            Nodes = peers(Config, 5),
            Pairs = [{A, B} || A <- Nodes, B <- Nodes, A < B],
            Shuffled = [P || {_, P} <- lists:sort([{rand:uniform(), P} || P <- Pairs])],
            Self = self(),
            [spawn_link(fun() -> Self ! {started, N, catch start_auto(N, 5)} end) || N <- Nodes],
            [begin true = rpc:call(A, net_kernel, connect_node, [B]), timer:sleep(rand:uniform(20)) end
             || {A, B} <- Shuffled],
            [receive {started, N, R} -> ok = R end || N <- Nodes],
            T0 = erlang:monotonic_time(millisecond),
            [await_status(N, fun(#{masters := M, w := W, quorum := Q, changing := Ch}) ->
                                 M =:= Nodes andalso W =:= 3 andalso Q andalso not Ch end, 60000)
             || N <- Nodes],
            Ids = lists:usort([maps:get(cluster, rpc:call(N, locker_auto, status, [])) || N <- Nodes]),
            ?assertMatch([_], Ids),
            ct:log("round ~b: one cluster of 5, settled ~b ms after the last connection",
                   [Round, erlang:monotonic_time(millisecond) - T0]),
            [stop_node(Config, N) || N <- Nodes]
        end,
        lists:seq(1, Rounds)
    ).

%% A new locker_auto stand-in here, once the old one's name is free.
await_new_proposer(Proposer) ->
    case whereis(locker_auto) of
        undefined -> Proposer();
        _ -> timer:sleep(10), await_new_proposer(Proposer)
    end.

relay(To) ->
    receive M -> To ! {relayed, M}, relay(To) end.

%% Node refuses connections with Others, both ways, until the cookies are
%% set back.
cut(Node, Others, Bad) ->
    [true = rpc:call(Node, erlang, set_cookie, [O, Bad]) || O <- Others],
    ok.

%% Node tries to take Key until Done() (at least once); counts the
%% attempts, and the grants observed before NotBefore (monotonic ms of
%% this node), when the lease of the holder could not have run out.
contend_until(Done, Node, Key, NotBefore, Attempts, Early) ->
    Early1 =
        case rpc:call(Node, locker, lock, [Key, Node, 1000]) of
            {ok, _, _, _} ->
                Now = erlang:monotonic_time(millisecond),
                ct:log("~p took ~p ~b ms after the holder's lease ran out", [Node, Key, Now - NotBefore]),
                case Now < NotBefore of
                    true -> Early + 1;
                    false -> Early
                end;
            _ ->
                Early
        end,
    case Done() of
        true -> {Attempts + 1, Early1};
        false -> timer:sleep(50), contend_until(Done, Node, Key, NotBefore, Attempts + 1, Early1)
    end.

%% Two clusters that each formed (and may hold leases) meet: nothing is
%% merged, both log the refusal.
two_formed_clusters_refused(Config) ->
    [A, B, C, D] = peers(Config, 4),
    [start_auto(N, 3) || N <- [A, B, C, D]],
    true = rpc:call(A, net_kernel, connect_node, [B]),
    true = rpc:call(C, net_kernel, connect_node, [D]),
    await_status(A, fun(#{masters := M}) -> length(M) =:= 2 end),
    await_status(C, fun(#{masters := M}) -> length(M) =:= 2 end),
    {ok, 2, 2, 2} = rpc:call(A, locker, lock, [k, a, 60000]),
    {ok, 2, 2, 2} = rpc:call(C, locker, lock, [k, c, 60000]),
    ok = forward_logs(A),
    true = rpc:call(A, net_kernel, connect_node, [C]),
    await_status(A, fun(#{conflicts := Cs}) -> lists:member(C, Cs) end),
    await_log(A, "refusing to merge"),
    #{masters := MA} = rpc:call(A, locker_auto, status, []),
    ?assertEqual(lists:sort([A, B]), MA),
    #{masters := MC} = rpc:call(C, locker_auto, status, []),
    ?assertEqual(lists:sort([C, D]), MC),
    ok.

%%--------------------------------------------------------------------
%% Helpers
%%--------------------------------------------------------------------

%% Starts N peers (not started locker), not connected to each other; or
%% peers of the given names.
peers(Config, N) when is_integer(N) ->
    peers(Config, [list_to_atom("au_" ++ integer_to_list(I) ++ "_" ++ integer_to_list(erlang:unique_integer([positive])))
                   || I <- lists:seq(1, N)]);
peers(Config, Names) ->
    Tab = ?config(cleanup, Config),
    Started = [
        begin
            {Peer, Node} = locker_ct:start_bare_peer(Name, ["-connect_all", "false"]),
            true = ets:insert(Tab, [{peer, Peer}, {peer_of, Node, Peer}]),
            Node
        end
     || Name <- Names
    ],
    lists:sort(Started).

start_auto(Node, Size) ->
    start_auto(Node, Size, 500).

start_auto(Node, Size, Grace) ->
    start_env(Node, [{cluster_size, Size}, {leave_grace_ms, Grace}]).

start_env(Node, Env0) ->
    Env = [{start_server, true}, {masters, auto}, {leave_grace_ms, 500}, {tick_ms, 200}] ++ Env0,
    [ok = rpc:call(Node, application, set_env, [locker, K, V]) || {K, V} <- Env],
    {ok, _} = rpc:call(Node, application, ensure_all_started, [locker]),
    ok.

stop_node(Config, Node) ->
    Tab = ?config(cleanup, Config),
    [{peer_of, Node, Peer}] = ets:match_object(Tab, {peer_of, Node, '_'}),
    ok = peer:stop(Peer),
    true = ets:delete_object(Tab, {peer, Peer}),
    true = ets:delete_object(Tab, {peer_of, Node, Peer}),
    ok.

await_status(Node, Pred) ->
    await_status(Node, Pred, 30000).

await_status(Node, Pred, Timeout) ->
    await(fun() ->
        case rpc:call(Node, locker_auto, status, []) of
            #{} = S -> Pred(S);
            _ -> false
        end
    end, Timeout, {status, Node}).

await(Fun, Timeout, What) ->
    Deadline = erlang:monotonic_time(millisecond) + Timeout,
    await_until(Fun, Deadline, What).

await_until(Fun, Deadline, What) ->
    case Fun() of
        true ->
            ok;
        false ->
            case erlang:monotonic_time(millisecond) > Deadline of
                true -> ct:fail({not_met, What});
                false -> timer:sleep(20), await_until(Fun, Deadline, What)
            end
    end.

%% The peer's log events (formatted) are sent to this process.
forward_logs(Node) ->
    Self = self(),
    Id = list_to_atom("au_fwd_" ++ integer_to_list(erlang:unique_integer([positive]))),
    rpc:call(Node, logger, add_handler, [Id, locker_auto_SUITE, #{config => #{to => Self}}]).

%% logger handler callback (runs on the peer).
log(#{msg := Msg, meta := Meta}, #{config := #{to := To}}) ->
    Text =
        case Msg of
            {string, S} -> unicode:characters_to_list(S);
            {report, R} -> io_lib:format("~0p", [R]);
            {Format, Args} -> io_lib:format(Format, Args)
        end,
    To ! {peer_log, node(), lists:flatten(Text), maps:get(time, Meta, 0)},
    ok.

await_log(Node, Substring) ->
    receive
        {peer_log, Node, Text, _} ->
            case string:find(Text, Substring) of
                nomatch -> await_log(Node, Substring);
                _ -> Text
            end
    after 30000 ->
        ct:fail({no_log, Node, Substring})
    end.
