%% Cluster mode's pure parts (locker_groups): the table's defaults, the
%% hash's spread and what adding or removing a group moves. The vectors
%% shared with the Rust client are checked in tests/locker_groups_SUITE.erl.
-module(locker_groups_tests).

-include_lib("eunit/include/eunit.hrl").

table(Ids) ->
    locker_groups:normalize([#{id => I, masters => [n], w => 1} || I <- Ids]).

group(Key, Table) ->
    maps:get(id, locker_groups:pick(Key, Table)).

keys() ->
    [{k, I} || I <- lists:seq(1, 3000)].

normalize_defaults_test() ->
    ?assertEqual(
        [#{id => 1, masters => [a, b], replicas => [], w => 2}, #{id => 2, masters => [c], replicas => [r], w => 1}],
        locker_groups:normalize([#{masters => [b, a], w => 2}, #{masters => [c], replicas => [r], w => 1}])
    ),
    %% Sorted by id, whatever the order given.
    ?assertMatch([#{id := 3}, #{id := 9}],
                 locker_groups:normalize([#{id => 9, masters => [a], w => 1}, #{id => 3, masters => [b], w => 1}])).

spread_test() ->
    Counts = lists:foldl(fun(K, Acc) -> maps:update_with(group(K, table([1, 2, 3])), fun(X) -> X + 1 end, 1, Acc) end,
                         #{}, keys()),
    ?assertEqual([1, 2, 3], lists:sort(maps:keys(Counts))),
    [?assert(C > 800 andalso C < 1200, {Id, C}) || {Id, C} <- maps:to_list(Counts)].

adding_a_group_moves_only_its_share_test() ->
    {Three, Four} = {table([1, 2, 3]), table([1, 2, 3, 4])},
    Moved = [{group(K, Three), group(K, Four)} || K <- keys(), group(K, Three) =/= group(K, Four)],
    ?assertEqual([4], lists:usort([To || {_, To} <- Moved])),
    ?assert(length(Moved) > 500 andalso length(Moved) < 1000).

removing_a_group_moves_only_its_keys_test() ->
    {Three, Two} = {table([1, 2, 3]), table([1, 3])},
    Moved = [group(K, Three) || K <- keys(), group(K, Three) =/= group(K, Two)],
    ?assertEqual([2], lists:usort(Moved)).

order_of_the_table_does_not_matter_test() ->
    A = locker_groups:normalize([#{id => 5, masters => [a], w => 1}, #{id => 1, masters => [b], w => 1}]),
    B = locker_groups:normalize([#{id => 1, masters => [b], w => 1}, #{id => 5, masters => [a], w => 1}]),
    [?assertEqual(group(K, A), group(K, B)) || K <- keys()].

no_table_routes_to_own_test() ->
    ok = locker_groups:reset(),
    ?assertEqual(own, locker_groups:config_for(anything)),
    ?assertEqual(none, locker_groups:refusal({get_write_lock, anything, not_found, tag})),
    ?assertEqual(none, locker_groups:group_of(anything)),
    ?assertEqual([], locker_groups:nodes()).

%% The joint table of a change, on this node (a master of group 1): a key
%% moving from group 1 to the new group 3 runs under both groups' quorums
%% with the change's table epoch in its tag, and this node takes requests
%% on it only with that epoch; keys that do not move are as before; after
%% the final table, group 3's keys are refused here.
joint_table_test_() ->
    {setup, fun() -> ok = locker_groups:reset() end, fun(_) -> locker_groups:reset() end, fun joint_table/0}.

joint_table() ->
    Old = [#{id => 1, masters => [node()], w => 1}, #{id => 2, masters => [x@h], w => 1}],
    New = Old ++ [#{id => 3, masters => [y@h], w => 1}],
    {OldT, NewT} = {locker_groups:normalize(Old), locker_groups:normalize(New)},
    ok = locker_groups:set(Old),
    TE = {1, node()},
    {ok, true} = locker_groups:server_request({joint, TE, Old, New}),
    ?assertEqual({TE, OldT}, locker_groups:joint()),
    Moving = hd([K || I <- lists:seq(1, 500), K <- [{m, I}], group(K, OldT) =:= 1, group(K, NewT) =:= 3]),
    Staying = hd([K || I <- lists:seq(1, 500), K <- [{s, I}], group(K, OldT) =:= 1, group(K, NewT) =:= 1]),
    {{joint, TE}, #{masters := [y@h], joint := {[N], 1}, epoch := Mark}} = locker_groups:config_for(Moving),
    ?assertEqual(node(), N),
    ?assertEqual(own, locker_groups:config_for(Staying)),
    Marked = {'$locker_token', {'$locker_epoch', Mark, make_ref()}, 7},
    ?assertEqual(none, locker_groups:refusal({get_write_lock, Moving, not_found, Marked})),
    ?assertEqual(none, locker_groups:refusal({write, Marked, Moving, v, 10})),
    ?assertEqual({error, {table_epoch, TE}}, locker_groups:refusal({get_write_lock, Moving, not_found, make_ref()})),
    ?assertEqual({error, {table_epoch, TE}}, locker_groups:refusal({write, make_ref(), Moving, v, 10})),
    ?assertEqual(none, locker_groups:refusal({get_write_lock, Staying, not_found, make_ref()})),
    %% An abort of another change changes nothing; the final table.
    {ok, false} = locker_groups:server_request({abort, {1, other@h}, Old}),
    ?assertEqual({TE, OldT}, locker_groups:joint()),
    {ok, false} = locker_groups:server_request({final, TE, New}),
    ?assertEqual(undefined, locker_groups:joint()),
    ?assertEqual(NewT, locker_groups:table()),
    ?assertEqual({error, {wrong_group, 1}}, locker_groups:refusal({get_write_lock, Moving, not_found, Marked})),
    %% set/1 keeps a table changed at runtime.
    ok = locker_groups:set(Old),
    ?assertEqual(NewT, locker_groups:table()),
    ?assertError(badarg, locker_groups:server_request({joint, bad, Old, New})).
