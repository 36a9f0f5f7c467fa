%% Wrong arguments to the public API fail at once with badarg and an
%% error_info naming the argument and what was expected (before any
%% message is sent: no server needs to run).
-module(locker_args_tests).

-include_lib("eunit/include/eunit.hrl").

bad_arguments_test_() ->
    Cases = [
        {fun() -> locker:lock(k, v, forever) end, [3]},
        {fun() -> locker:lock(k, v, "5000") end, [3]},
        {fun() -> locker:lock(k, v, -5) end, [3]},
        {fun() -> locker:lock(k, v, 1.5) end, [3]},
        {fun() -> locker:lock(k, v, infinity, 100) end, [3]},
        {fun() -> locker:lock(k, v, 100, -1) end, [4]},
        {fun() -> locker:lock(k, v, -1, soon) end, [3, 4]},
        {fun() -> locker:lock_with_token(k, v, x, 100) end, [3]},
        {fun() -> locker:update(k, v, w, "1") end, [4]},
        {fun() -> locker:extend_lease(k, v, -10) end, [3]},
        {fun() -> locker:extend_lease(k, v, 10, x) end, [4]},
        {fun() -> locker:release(k, v, -3) end, [3]},
        {fun() -> locker:wait_for(k, x) end, [2]},
        {fun() -> locker:wait_for_release(k, -1) end, [2]},
        {fun() -> locker:set_w([node()], 0) end, [2]},
        {fun() -> locker:set_w(not_a_list, 2) end, [1]},
        {fun() -> locker:set_nodes([a | b], [a], []) end, [1]},
        {fun() -> locker:set_nodes([a], ["a@host"], []) end, [2]},
        {fun() -> locker:set_nodes([a], [a], x) end, [3]}
    ],
    [?_test(expect_badarg(F, Positions)) || {F, Positions} <- Cases].

expect_badarg(F, Positions) ->
    try F() of
        Other -> ?assertEqual(badarg, {returned, Other})
    catch
        error:badarg:Stack ->
            [{locker, _, Args, Info} | _] = Stack,
            ?assert(is_list(Args)),
            Text = locker:format_error(badarg, Stack),
            ?assertEqual(Positions, lists:sort(maps:keys(Text))),
            [?assertMatch("expected " ++ _, lists:flatten(T)) || T <- maps:values(Text)],
            ?assertMatch(#{module := locker}, proplists:get_value(error_info, Info))
    end.
