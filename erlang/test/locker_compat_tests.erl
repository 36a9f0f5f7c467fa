%% The original's helper exports, on a one-node cluster (this node as its
%% only master, W = 1).
-module(locker_compat_tests).

-include_lib("eunit/include/eunit.hrl").

compat_test_() ->
    {setup,
        fun() ->
            ok = locker_nif:clear(),
            {ok, Pid} = gen_server:start({local, locker}, locker_server, [1, 1000, 1000, 100], []),
            ok = locker:set_nodes([node()], [node()], []),
            Pid
        end,
        fun(Pid) ->
            gen_server:stop(Pid),
            ok = locker_nif:clear()
        end,
        [
            ?_test(helpers()),
            ?_test(meta()),
            ?_test(summary_without_the_server_queue())
        ]}.

helpers() ->
    Me = node(),
    {Tag, [{Me, ok}], []} = locker:get_write_lock([node()], ck, not_found, 1000),
    ?assertMatch({[{Me, ok}], []}, locker:do_write([node()], Tag, ck, v, 60000, 1000)),
    ?assertEqual({ok, v}, locker:dirty_read(ck)),
    {Tag2, [{Me, ok}], []} = locker:get_write_lock([node()], ck, v, 1000),
    ?assertMatch({[{Me, ok}], []}, locker:release_write_lock([node()], Tag2, 1000)),
    %% The promise is gone: another one is granted.
    {_, [{Me, ok}], []} = locker:get_write_lock([node()], ck, v, 1000),
    ?assertError(badarg, locker:do_write([node()], Tag, ck, v, forever, 1000)).

meta() ->
    Me = node(),
    ?assertEqual([Me], locker:get_meta_ets(nodes)),
    ?assertEqual([], locker:get_meta_ets(replicas)),
    ?assertEqual(1, locker:get_meta_ets(w)),
    ?assertThrow({locker, no_such_meta_key}, locker:get_meta_ets(other)),
    ?assert(abs(locker:now_to_seconds() - erlang:system_time(second)) =< 1).

summary_without_the_server_queue() ->
    {ok, _, 1, 1} = locker:lock(sk, v, 60000),
    [{write_locks, P}, {leases, L}] = locker:summary(),
    ?assert(is_integer(P) andalso L >= 1),
    %% Answered while the server is suspended.
    ok = sys:suspend(locker),
    try
        ?assertMatch([{write_locks, _}, {leases, _}], locker:summary())
    after
        sys:resume(locker)
    end.
