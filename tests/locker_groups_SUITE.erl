%% Cluster mode (locker_groups): keys spread over quorum groups. Nine BEAM
%% masters in three groups of three (W = 2 each, configured through
%% configuration epochs per group) and one node in no group; a mixed group
%% with lockerd as a master. Peers are named `grp_*' (unique on this
%% machine).
-module(locker_groups_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([vector_key/1]).
-export([all/0, suite/0, init_per_suite/1, end_per_suite/1, init_per_testcase/2, end_per_testcase/2]).
-export([
    hash_vectors/1,
    bad_configurations/1,
    keys_land_in_their_group/1,
    mutual_exclusion_per_key/1,
    dirty_read_where/1,
    epoch_change_in_a_group/1,
    other_table_refused/1,
    add_a_group_while_contending/1,
    remove_a_group/1,
    lockerd_master_of_a_group/1
]).

all() ->
    [
        hash_vectors,
        bad_configurations,
        keys_land_in_their_group,
        mutual_exclusion_per_key,
        dirty_read_where,
        epoch_change_in_a_group,
        other_table_refused,
        add_a_group_while_contending,
        remove_a_group,
        lockerd_master_of_a_group
    ].

suite() ->
    [{timetrap, {seconds, 180}}].

init_per_suite(Config) ->
    ok = locker_ct:ensure_distributed(),
    Config.

end_per_suite(_Config) ->
    ok.

-define(CLUSTER_CASES, [
    keys_land_in_their_group,
    mutual_exclusion_per_key,
    dirty_read_where,
    epoch_change_in_a_group,
    other_table_refused,
    add_a_group_while_contending,
    remove_a_group
]).

init_per_testcase(Case, Config0) ->
    Config = [{cleanup, ets:new(cleanup, [public, bag])} | Config0],
    case lists:member(Case, ?CLUSTER_CASES) of
        true -> nine(Config);
        false -> Config
    end.

end_per_testcase(_Case, Config) ->
    T = ?config(cleanup, Config),
    [catch locker_ct:stop_os(O) || {os, O} <- ets:lookup(T, os)],
    [catch peer:stop(P) || {peer, P} <- ets:lookup(T, peer)],
    ets:delete(T),
    ok.

%% Nine masters in three groups of three and a client in no group. The
%% table is set on every node first; then each group is configured through
%% locker_membership (epoch mode) from one of its masters, so a
%% coordinator of another group first tags with the initial epoch, is
%% refused, and catches up from the group's masters.
nine(Config) ->
    [_ | _] = Nodes = [peer_node(Config) || _ <- lists:seq(1, 10)],
    {Masters, [Client]} = lists:split(9, Nodes),
    [G1, G2, G3] = [lists:sublist(Masters, I, 3) || I <- [1, 4, 7]],
    Groups = [#{id => 1, masters => G1, w => 2}, #{id => 2, masters => G2, w => 2}, #{id => 3, masters => G3, w => 2}],
    [ok = rpc:call(N, locker_groups, set, [Groups]) || N <- Nodes],
    [ok = rpc:call(hd(G), locker, set_nodes, [G, G, []]) || G <- [G1, G2, G3]],
    [{groups, Groups}, {client, Client}, {masters, Masters} | Config].

peer_node(Config) ->
    {Peer, Node} = locker_ct:start_peer(list_to_atom(locker_ct:unique("grp")), []),
    ets:insert(?config(cleanup, Config), [{peer, Peer}, {node, Node, Peer}]),
    Node.

%% Stops a peer started by peer_node/1 and waits for its nodedown.
stop_node(Node, Config) ->
    [{node, Node, Peer}] = [X || {node, N, _} = X <- ets:lookup(?config(cleanup, Config), node), N =:= Node],
    erlang:monitor_node(Node, true),
    peer:stop(Peer),
    receive
        {nodedown, Node} -> ok
    after 10000 -> ct:fail({still_up, Node})
    end.

%%--------------------------------------------------------------------
%% Cases
%%--------------------------------------------------------------------

%% The hash of tests/group_vectors.txt (which the Rust client's test reads
%% too): the key's bytes and its group for each named key.
hash_vectors(_Config) ->
    Path = filename:join(locker_ct:root(), "tests/group_vectors.txt"),
    {ok, Bin} = file:read_file(Path),
    Lines = [L || L <- string:split(Bin, "\n", all), L =/= <<>>, binary:first(L) =/= $#],
    ?assert(length(Lines) >= 20),
    lists:foreach(
        fun(Line) ->
            [Name, Hex, IdsS, GroupS] = string:split(Line, "\t", all),
            Key = vector_key(binary_to_atom(Name)),
            ?assertEqual(Hex, hex(locker_groups:key_bytes(Key)), Name),
            Ids = [binary_to_integer(I) || I <- string:split(IdsS, ",", all)],
            Table = locker_groups:normalize([#{id => I, masters => [n], w => 1} || I <- Ids]),
            ?assertEqual(binary_to_integer(GroupS), maps:get(id, locker_groups:pick(Key, Table)), Name)
        end,
        Lines
    ).

%% The keys of the vectors (the Rust test builds the same terms).
vector_key(atom_a) -> a;
vector_key(atom_utf8) -> 'clé';
vector_key(int_0) -> 0;
vector_key(int_255) -> 255;
vector_key(int_256) -> 256;
vector_key(int_neg) -> -1;
vector_key(int_big) -> 1 bsl 40;
vector_key(int_neg_big) -> -(1 bsl 40);
vector_key(bin_empty) -> <<>>;
vector_key(bin_hello) -> <<"hello">>;
vector_key(tuple_user) -> {user, 42};
vector_key(tuple_nested) -> {invoice, {2026, 12}, <<"eu">>};
vector_key(list_empty) -> [];
vector_key(list_atoms) -> [a, b, c];
vector_key(list_bytes) -> [1, 2, 3];
vector_key(list_mixed) -> [1, 300, a];
vector_key(float_pi) -> 3.25;
vector_key(key_1) -> {key, 1};
vector_key(key_2) -> {key, 2};
vector_key(key_3) -> {key, 3};
vector_key(key_4) -> {key, 4};
vector_key(key_5) -> {key, 5};
vector_key(key_6) -> {key, 6};
vector_key(key_7) -> {key, 7};
vector_key(key_8) -> {key, 8};
vector_key(name_bin) -> {name, <<"worker-17">>}.

%% Bad tables are refused with an error naming the value, by the
%% application environment's check and by set/1; a table other than the
%% one in place is refused, not overwritten.
bad_configurations(_Config) ->
    Bad = [
        {[], []},
        {not_a_list, not_a_list},
        {[#{masters => [a@h, b@h, c@h], w => 1}], 1},
        {[#{masters => [a@h, b@h, c@h], w => 4}], 4},
        {[#{masters => [], w => 1}], []},
        {[#{masters => [a@h, "b@h"], w => 2}], "b@h"},
        {[#{masters => [a@h, a@h], w => 2}], [a@h, a@h]},
        {[#{masters => [a@h], w => 1, id => -1}], -1},
        {[#{masters => [a@h], w => 1}, #{masters => [a@h], w => 1}], a@h},
        {[#{masters => [a@h], w => 1, id => 7}, #{masters => [b@h], w => 1, id => 7}], 7},
        {[#{masters => [a@h], w => 1}, #{masters => [b@h], replicas => [a@h], w => 1}], a@h},
        {[#{masters => [a@h], w => 1, colour => red}], #{masters => [a@h], w => 1, colour => red}},
        {[#{masters => [a@h]}], #{masters => [a@h]}}
    ],
    lists:foreach(
        fun({Groups, Named}) ->
            ?assertMatch({error, {bad_groups, Named, _}}, locker_groups:check(Groups), Groups),
            ?assertMatch({error, {bad_groups, Named, _}}, locker_groups:set(Groups), Groups),
            {error, [{groups, Groups, Text}]} = locker_config:check(#{groups => Groups}),
            Msg = locker_config:format({groups, Groups, Text}),
            ?assertNotEqual(nomatch, string:find(Msg, io_lib:format("~0p", [Named])), Msg)
        end,
        Bad
    ),
    Good = [#{masters => [node()], w => 1}],
    ok = locker_config:check(#{groups => Good}),
    {error, [{groups, Good, _}]} = locker_config:check(#{groups => Good, masters => [node()]}),
    %% Once set, the same table again is fine; another one is refused.
    try
        ok = locker_groups:set(Good),
        ok = locker_groups:set(Good),
        Other = [#{masters => [node()], w => 1}, #{masters => [x@h], w => 1}],
        {error, {table_in_place, _, _}} = locker_groups:set(Other),
        1 = locker_groups:own()
    after
        locker_groups:reset()
    end.

%% Keys land in their group only: every master of a key's group stores it
%% (W = 2 of 3 at least), no master of another group does, whoever
%% coordinates (the client in no group, or a master of any group).
keys_land_in_their_group(Config) ->
    Groups = ?config(groups, Config),
    Client = ?config(client, Config),
    Masters = ?config(masters, Config),
    Keys = [{k, I} || I <- lists:seq(1, 60)],
    Coordinators = [Client | Masters],
    Pid = self(),
    lists:foreach(
        fun({I, K}) ->
            C = lists:nth(1 + I rem length(Coordinators), Coordinators),
            {ok, 2, _, Commits} = rpc:call(C, locker, lock, [K, Pid, 60000]),
            ?assert(Commits >= 2)
        end,
        lists:enumerate(Keys)
    ),
    Held = maps:from_list([{M, leases(M)} || M <- Masters]),
    Table = locker_groups:normalize(Groups),
    Counts = lists:foldl(
        fun(K, Acc) ->
            #{id := Id, masters := In} = locker_groups:pick(K, Table),
            %% Every node computes the same group.
            [Id = rpc:call(N, locker_groups, group_of, [K]) || N <- [Client | In]],
            Holders = [M || M <- Masters, lists:member({K, Pid}, maps:get(M, Held))],
            ?assert(length(Holders) >= 2, {K, Holders}),
            ?assertEqual([], Holders -- In, {K, Id}),
            maps:update_with(Id, fun(X) -> X + 1 end, 1, Acc)
        end,
        #{},
        Keys
    ),
    ct:log("keys per group: ~p", [Counts]),
    %% 60 keys over 3 groups: each group gets some.
    ?assertEqual([1, 2, 3], lists:sort(maps:keys(Counts))),
    %% Releases route the same way, from another coordinator.
    [{ok, 2, _, _} = rpc:call(lists:last(Masters), locker, release, [K, Pid]) || K <- Keys],
    [?assertEqual([], [L || {{k, _}, _} = L <- leases(M)]) || M <- Masters].

%% Mutual exclusion per key under contention from every group and the
%% client: each holder enters a checker on this node, which fails if two
%% are inside at once or if a token does not increase per key. Midway one
%% master of each group stops (W = 2 of the 2 left): the groups go on.
mutual_exclusion_per_key(Config) ->
    Client = ?config(client, Config),
    Masters = ?config(masters, Config),
    Workers = [Client | [lists:nth(I, Masters) || I <- [1, 4, 7, 9]]],
    Keys = [{contended, I} || I <- lists:seq(1, 6)],
    Rounds = list_to_integer(os:getenv("LOCKER_GROUPS_ROUNDS", "15")),
    Checker = spawn_link(fun() -> checker(#{}, #{}, 0) end),
    Self = self(),
    Checker ! {notify_at, 10, Self},
    Pids = [
        spawn_link(fun() -> Self ! {done, self(), worker(N, K, Checker, Rounds, 0)} end)
     || N <- Workers, K <- Keys
    ],
    receive {reached, 10} -> ok after 120000 -> ct:fail(no_progress) end,
    [stop_node(lists:nth(I, Masters), Config) || I <- [2, 5, 8]],
    Checker ! {entries, Self},
    Before = receive {entries, E0} -> E0 end,
    Wins = [receive {done, P, Won} -> Won after 170000 -> ct:fail(worker_timeout) end || P <- Pids],
    Checker ! {report, self()},
    {Entries, Violations} = receive {checker, E, V} -> {E, V} end,
    ct:log("~b acquisitions over ~b keys, ~b workers", [Entries, length(Keys), length(Workers)]),
    ct:log("~b acquisitions after the stops", [Entries - Before]),
    ?assertEqual([], Violations),
    ?assertEqual(lists:sum(Wins), Entries),
    ?assert(Entries >= length(Keys)),
    %% The groups kept granting with one master down each.
    ?assert(Entries > Before).

%% One worker on node N: Rounds times, takes K with a token (lease 30 s,
%% held a few ms: far shorter than the lease, whatever the load), enters the checker, leaves, releases.
worker(_N, _K, _Checker, 0, Won) ->
    Won;
worker(N, K, Checker, Rounds, Won) ->
    Me = {self(), Rounds},
    case rpc:call(N, locker, lock_with_token, [K, Me, 30000, 5000]) of
        {ok, Token} ->
            Checker ! {enter, K, Token, Me},
            timer:sleep(2),
            Checker ! {leave, K, Me},
            _ = rpc:call(N, locker, release, [K, Me]),
            worker(N, K, Checker, Rounds - 1, Won + 1);
        {error, no_quorum} ->
            worker(N, K, Checker, Rounds - 1, Won)
    end.

%% Inside: key => holder; Last: key => last token.
checker(Inside, Last, Entries) ->
    receive
        {enter, K, Token, Who} ->
            V1 = [{two_holders, K, Who, maps:get(K, Inside)} || is_map_key(K, Inside)],
            V2 = [{token_not_increasing, K, Token, maps:get(K, Last)} || maps:get(K, Last, 0) >= Token],
            [put(violations, [V | get_violations()]) || V <- V1 ++ V2],
            case get(notify) of
                {N, To} when Entries + 1 >= N -> erase(notify), To ! {reached, N};
                _ -> ok
            end,
            checker(Inside#{K => Who}, Last#{K => Token}, Entries + 1);
        {notify_at, N, To} when Entries >= N ->
            To ! {reached, N},
            checker(Inside, Last, Entries);
        {notify_at, N, To} ->
            put(notify, {N, To}),
            checker(Inside, Last, Entries);
        {entries, To} ->
            To ! {entries, Entries},
            checker(Inside, Last, Entries);
        {leave, K, Who} ->
            case Inside of
                #{K := Who} -> checker(maps:remove(K, Inside), Last, Entries);
                _ -> checker(Inside, Last, Entries)
            end;
        {report, To} ->
            To ! {checker, Entries, lists:reverse(get_violations())}
    end.

get_violations() ->
    case get(violations) of
        undefined -> [];
        V -> V
    end.

%% dirty_read is local: on a master of the key's group it sees the key;
%% on a master of another group and on the client it does not (the key is
%% not stored there), and holds/1 says so; master_dirty_read routes to the
%% key's group from anywhere.
dirty_read_where(Config) ->
    Groups = locker_groups:normalize(?config(groups, Config)),
    Client = ?config(client, Config),
    Masters = ?config(masters, Config),
    Key = {read_me, 1},
    #{masters := In} = locker_groups:pick(Key, Groups),
    Out = Masters -- In,
    {ok, 2, _, _} = rpc:call(Client, locker, lock, [Key, v, 60000]),
    Stored = [M || M <- In, rpc:call(M, locker, dirty_read, [Key]) =:= {ok, v}],
    ?assert(length(Stored) >= 2),
    [true = rpc:call(M, locker, holds, [Key]) || M <- In],
    [false = rpc:call(N, locker, holds, [Key]) || N <- [Client | Out]],
    [{error, not_found} = rpc:call(N, locker, dirty_read, [Key]) || N <- [Client | Out]],
    [{ok, v} = rpc:call(N, locker, master_dirty_read, [Key]) || N <- [Client, hd(Out)]],
    {ok, 2, _, _} = rpc:call(hd(Out), locker, release, [Key, v]).

%% A group's masters change through locker_membership (a master replaced
%% by the client node): only that group's configuration moves to a new
%% epoch; coordinators elsewhere are refused under the old epoch, catch up
%% from the group's masters and go on; the other groups are untouched.
epoch_change_in_a_group(Config) ->
    Groups = locker_groups:normalize(?config(groups, Config)),
    Masters = ?config(masters, Config),
    [#{masters := G1}, #{masters := G2}, #{masters := G3}] = Groups,
    Key = hd([K || I <- lists:seq(1, 100), K <- [{moving, I}], maps:get(id, locker_groups:pick(K, Groups)) =:= 2]),
    Pid = self(),
    {ok, 2, _, _} = rpc:call(hd(G1), locker, lock, [Key, Pid, 60000]),
    E0 = rpc:call(hd(G2), locker_meta, epoch, []),
    %% W 2 to 3 in group 2 (same masters): a new epoch there only.
    ok = rpc:call(hd(G2), locker, set_w, [G2, 3]),
    E1 = rpc:call(hd(G2), locker_meta, epoch, []),
    ?assert(E1 > E0),
    [E1 = rpc:call(M, locker_meta, epoch, []) || M <- G2],
    [?assertNotEqual(E1, rpc:call(M, locker_meta, epoch, [])) || M <- G1 ++ G3],
    %% A coordinator of group 1 still tags with the epoch it knew: refused,
    %% catches up, and the lock is held (W = 3 now).
    {error, no_quorum} = rpc:call(hd(G3), locker, lock, [Key, other, 60000]),
    {ok, 3, _, 3} = rpc:call(lists:last(G1), locker, release, [Key, Pid]),
    {ok, 3, 3, 3} = rpc:call(hd(G3), locker, lock, [Key, other, 60000]),
    #{epoch := E1, w := 3} = rpc:call(hd(G3), persistent_term, get, [{locker, group_config, 2}]),
    [?assertEqual([], [L || {{moving, _}, _} = L <- leases(M)]) || M <- Masters -- G2].

%% A node whose table differs from the masters' (group 3 left out, as a
%% node not yet given a new table would have it): keys that both tables
%% put in the same group work; a key of group 3 that it routes to group 1
%% or 2 is refused there (wrong_group), so it never holds a key that a
%% node with the masters' table holds in group 3.
other_table_refused(Config) ->
    Groups = locker_groups:normalize(?config(groups, Config)),
    Client = ?config(client, Config),
    [#{masters := G1}, _, #{masters := G3}] = Groups,
    ok = rpc:call(Client, locker_groups, reset, []),
    ok = rpc:call(Client, locker_groups, set, [lists:sublist(Groups, 2)]),
    Keys = [{other_table, I} || I <- lists:seq(1, 30)],
    {Moved, Kept} = lists:partition(fun(K) -> maps:get(id, locker_groups:pick(K, Groups)) =:= 3 end, Keys),
    ?assert(Moved =/= [] andalso Kept =/= []),
    Pid = self(),
    [{ok, 2, _, _} = rpc:call(hd(G3), locker, lock, [K, Pid, 60000]) || K <- Moved],
    [{error, no_quorum} = rpc:call(Client, locker, lock, [K, other, 60000]) || K <- Moved],
    [{ok, 2, _, _} = rpc:call(Client, locker, lock, [K, Pid, 60000]) || K <- Kept],
    %% The refusal is the group's, not a held key's: a fresh key of group
    %% 3 is refused to this node too.
    Fresh = hd([K || I <- lists:seq(1, 200), K <- [{fresh, I}], maps:get(id, locker_groups:pick(K, Groups)) =:= 3]),
    {error, no_quorum} = rpc:call(Client, locker, lock, [Fresh, other, 60000]),
    {ok, 2, _, _} = rpc:call(hd(G1), locker, lock, [Fresh, Pid, 60000]).

%% A fourth group added while clients of every group contend for keys,
%% some of which move to it: the change goes through the joint table (the
%% moving keys need a quorum of their old group and of the new one), waits
%% for the leases held when it began, then installs the new table. One
%% holder per key and increasing tokens throughout (the checker); after
%% it, every node has the new table and the moved keys are on the new
%% group's masters; a node given the old table back is refused on them.
add_a_group_while_contending(Config) ->
    Groups = ?config(groups, Config),
    Client = ?config(client, Config),
    Masters = ?config(masters, Config),
    G4 = [peer_node(Config) || _ <- lists:seq(1, 3)],
    ok = rpc:call(hd(G4), locker_membership, change, [G4, [], 2]),
    New = Groups ++ [#{id => 4, masters => G4, w => 2}],
    NewTable = locker_groups:normalize(New),
    OldTable = locker_groups:normalize(Groups),
    Keys = [{adding, I} || I <- lists:seq(1, 12)],
    Moving = [K || K <- Keys, maps:get(id, locker_groups:pick(K, NewTable)) =:= 4],
    ?assert(Moving =/= []),
    Workers = [Client | [lists:nth(I, Masters) || I <- [1, 4, 7]]],
    Checker = spawn_link(fun() -> checker(#{}, #{}, 0) end),
    Self = self(),
    Pids = [spawn_link(fun() -> Self ! {done, self(), until_stopped(N, K, Checker, 0)} end) || N <- Workers, K <- Keys],
    Checker ! {notify_at, 20, Self},
    receive {reached, 20} -> ok after 120000 -> ct:fail(no_progress) end,
    T0 = erlang:monotonic_time(millisecond),
    ok = rpc:call(hd(Masters), locker_groups, change, [New, #{wait => 60000}], 120000),
    ct:log("change took ~b ms", [erlang:monotonic_time(millisecond) - T0]),
    Checker ! {entries, Self},
    AtChange = receive {entries, E0} -> E0 end,
    Checker ! {notify_at, AtChange + 20, Self},
    receive {reached, _} -> ok after 120000 -> ct:fail(no_progress_after_change) end,
    [P ! stop || P <- Pids],
    Wins = [receive {done, P, Won} -> Won after 60000 -> ct:fail(worker_timeout) end || P <- Pids],
    Checker ! {report, self()},
    {Entries, Violations} = receive {checker, E, V} -> {E, V} end,
    ct:log("~b acquisitions, ~b at the change; moving keys ~p", [Entries, AtChange, Moving]),
    ?assertEqual([], Violations),
    ?assertEqual(lists:sum(Wins), Entries),
    %% Every node has the new table, none is joint.
    [?assertEqual({NewTable, undefined}, {rpc:call(N, locker_groups, table, []), rpc:call(N, locker_groups, joint, [])})
     || N <- [Client | Masters ++ G4]],
    %% A key of the new group is on its masters only (a fresh one: a
    %% contended key may still be held by a worker whose release failed).
    K1 = hd([K || I <- lists:seq(1, 500), K <- [{moved_fresh, I}], maps:get(id, locker_groups:pick(K, NewTable)) =:= 4]),
    {ok, 2, _, _} = rpc:call(Client, locker, lock, [K1, Self, 60000]),
    Held = [M || M <- Masters ++ G4, rpc:call(M, locker, dirty_read, [K1]) =:= {ok, Self}],
    ?assert(length(Held) >= 2),
    ?assertEqual([], Held -- G4),
    %% A node given the old table back cannot take it in its old group.
    ok = rpc:call(Client, locker_groups, reset, []),
    ok = rpc:call(Client, locker_groups, set, [Groups]),
    Fresh = hd([K || I <- lists:seq(1, 500), K <- [{moved, I}], maps:get(id, locker_groups:pick(K, NewTable)) =:= 4]),
    ?assertNotEqual(4, maps:get(id, locker_groups:pick(Fresh, OldTable))),
    {error, no_quorum} = rpc:call(Client, locker, lock, [Fresh, x, 60000]).

%% Changes refused: a bad or incompatible table (an error naming the
%% value, nothing changed), a group whose masters cannot take the joint
%% table (rolled back everywhere). Then group 3 removed while one of its
%% keys is held: the change waits for that lease, the key is then taken
%% in its new group, and the removed group's masters (in no group now)
%% refuse a node that still has the old table.
remove_a_group(Config) ->
    Groups = ?config(groups, Config),
    Client = ?config(client, Config),
    Masters = ?config(masters, Config),
    OldTable = locker_groups:normalize(Groups),
    [#{masters := G1}, _, #{masters := G3}] = OldTable,
    Changed = [(hd(Groups))#{w => 3} | tl(Groups)],
    {error, {bad_groups, 1, _}} = rpc:call(hd(G1), locker_groups, change, [Changed]),
    {error, {bad_groups, _, _}} = rpc:call(hd(G1), locker_groups, change, [[#{masters => [], w => 1}]]),
    Dead = [list_to_atom("grp_dead_" ++ integer_to_list(I) ++ "@127.0.0.1") || I <- [1, 2, 3]],
    {error, {refused, Why}} =
        rpc:call(hd(G1), locker_groups, change, [Groups ++ [#{id => 9, masters => Dead, w => 2}]], 60000),
    ?assertEqual(Dead, lists:sort([N || {N, _} <- Why, lists:member(N, Dead)])),
    [?assertEqual({OldTable, undefined}, {rpc:call(N, locker_groups, table, []), rpc:call(N, locker_groups, joint, [])})
     || N <- [Client | Masters]],
    %% Remove group 3 while one of its keys is held for 3 s.
    K = hd([X || I <- lists:seq(1, 100), X <- [{removed, I}], maps:get(id, locker_groups:pick(X, OldTable)) =:= 3]),
    Pid = self(),
    {ok, 2, _, _} = rpc:call(Client, locker, lock, [K, Pid, 3000]),
    T0 = erlang:monotonic_time(millisecond),
    NewGroups = lists:sublist(Groups, 2),
    ok = rpc:call(hd(G1), locker_groups, change, [NewGroups], 60000),
    Took = erlang:monotonic_time(millisecond) - T0,
    ct:log("change took ~b ms", [Took]),
    NewTable = locker_groups:normalize(NewGroups),
    #{masters := To} = locker_groups:pick(K, NewTable),
    {ok, 2, _, _} = rpc:call(Client, locker, lock, [K, other, 60000]),
    ?assert(length([M || M <- To, rpc:call(M, locker, dirty_read, [K]) =:= {ok, other}]) >= 2),
    [false = rpc:call(M, locker, holds, [K]) || M <- G3],
    %% A node with the old table back: refused by the removed masters.
    ok = rpc:call(Client, locker_groups, reset, []),
    ok = rpc:call(Client, locker_groups, set, [Groups]),
    K2 = hd([X || I <- lists:seq(1, 100), X <- [{removed2, I}], maps:get(id, locker_groups:pick(X, OldTable)) =:= 3]),
    {error, no_quorum} = rpc:call(Client, locker, lock, [K2, x, 60000]),
    {ok, 2, _, _} = rpc:call(hd(G1), locker, lock, [K2, x, 60000]).

%% A worker that contends for K until told to stop (lease 10 s, held a
%% few ms).
until_stopped(N, K, Checker, Won) ->
    receive
        stop -> Won
    after 0 ->
        Me = {self(), Won, erlang:unique_integer()},
        case rpc:call(N, locker, lock_with_token, [K, Me, 10000, 5000]) of
            {ok, Token} ->
                Checker ! {enter, K, Token, Me},
                timer:sleep(2),
                Checker ! {leave, K, Me},
                _ = rpc:call(N, locker, release, [K, Me]),
                until_stopped(N, K, Checker, Won + 1);
            _ ->
                timer:sleep(5),
                until_stopped(N, K, Checker, Won)
        end
    end.

%% lockerd as a master of one group (with two BEAM masters, W = 2) and a
%% BEAM group of one: keys of the first group are on lockerd, keys of the
%% second never are; lockerd needs nothing but its group's masters.
lockerd_master_of_a_group(Config) ->
    #{lockerd := Bin} = locker_ct:lockerd_binaries(),
    [A, B, C] = [peer_node(Config) || _ <- lists:seq(1, 3)],
    LName = locker_ct:unique("grp_ld"),
    L = list_to_atom(LName ++ "@127.0.0.1"),
    Log = filename:join(?config(priv_dir, Config), LName ++ ".log"),
    G1 = [A, B, L],
    O = locker_ct:start_os(Bin, ["--name", LName ++ "@127.0.0.1", "--cookie", atom_to_list(erlang:get_cookie()),
                                 "--announce", "--masters", string:join([atom_to_list(N) || N <- G1], ","),
                                 "--w", "2"], Log),
    ets:insert(?config(cleanup, Config), {os, O}),
    Groups = [#{id => 10, masters => G1, w => 2}, #{id => 20, masters => [C], w => 1}],
    [ok = rpc:call(N, locker_groups, set, [Groups]) || N <- [A, B, C]],
    ok = rpc:call(A, locker, set_nodes, [G1, G1, []]),
    ok = rpc:call(C, locker_membership, change, [[C], [], 1]),
    Table = locker_groups:normalize(Groups),
    Keys = [{ld, I} || I <- lists:seq(1, 30)],
    {In1, In2} = lists:partition(fun(K) -> maps:get(id, locker_groups:pick(K, Table)) =:= 10 end, Keys),
    ?assert(In1 =/= [] andalso In2 =/= []),
    Pid = self(),
    [{ok, _} = rpc:call(C, locker, lock_with_token, [K, Pid, 60000, 5000]) || K <- In1],
    [{ok, 1, 1, 1} = rpc:call(A, locker, lock, [K, Pid, 60000]) || K <- In2],
    LHeld = leases(L),
    [?assert(lists:member({K, Pid}, LHeld), K) || K <- In1],
    [?assertNot(lists:keymember(K, 1, LHeld), K) || K <- In2],
    [{error, no_quorum} = rpc:call(A, locker, lock, [K, other, 60000]) || K <- In1],
    [{ok, 2, _, _} = rpc:call(C, locker, release, [K, Pid]) || K <- In1],
    [] = [X || {{ld, _}, _} = X <- leases(L)].

%%--------------------------------------------------------------------
%% Helpers
%%--------------------------------------------------------------------

hex(B) ->
    list_to_binary([io_lib:format("~2.16.0b", [X]) || <<X>> <= B]).

leases(N) ->
    {ok, _, L, _, _, _} = gen_server:call({locker, N}, get_debug_state),
    lists:sort([{K, V} || {K, V, _} <- L]).
