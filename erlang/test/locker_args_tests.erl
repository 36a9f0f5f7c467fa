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
        {fun() -> locker:start_link(0) end, [1]},
        {fun() -> locker:start_link(2, fast, 1000, 100) end, [2]},
        {fun() -> locker:start_link(2, 1000, "1000", 0) end, [3, 4]},
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

%% Before the server ever started on this node, the coordinator says so
%% (the original threw {locker, no_such_meta_key}).
not_started_test() ->
    Saved = persistent_term:get({locker, meta}, undefined),
    _ = persistent_term:erase({locker, meta}),
    try
        Calls = [
            fun() -> locker:lock(k, v, 100) end,
            fun() -> locker:lock_with_token(k, v, 100, 100) end,
            fun() -> locker:update(k, v, w) end,
            fun() -> locker:extend_lease(k, v, 100) end,
            fun() -> locker:release(k, v) end,
            fun() -> locker:master_dirty_read(k) end
        ],
        [
            try F() of
                Other -> ?assertEqual(not_started, {returned, Other})
            catch
                error:{locker, not_started}:Stack ->
                    #{general := Text} = locker:format_error({locker, not_started}, Stack),
                    ?assertMatch("locker is not started on this node" ++ _, Text)
            end
         || F <- Calls
        ],
        %% The original's helpers keep the original's throw.
        ?assertThrow({locker, no_such_meta_key}, locker:get_meta())
    after
        Saved =/= undefined andalso persistent_term:put({locker, meta}, Saved)
    end.

%% The application environment: one problem per bad key, in a message
%% naming the key, the value and what was expected.
config_test_() ->
    Bad = [
        {masters, "a@host"},
        {masters, [a | b]},
        {w, 0},
        {quorum, 0},
        {lease_expire_interval, fast},
        {registry_lease, "5000"},
        {registry_on_lost, crash},
        {restart_abstain_ms, -1},
        {start_server, yes},
        {autostart, 1},
        {state_dir, 42},
        {batching, yes}
    ],
    [
        ?_test(begin
            {error, [{K, V, Expected}] = Problems} = locker_config:check(#{K => V}),
            [Msg] = locker_config:messages(Problems),
            ?assertNotEqual(nomatch, string:find(Msg, atom_to_list(K))),
            ?assertNotEqual(nomatch, string:find(Msg, "expected " ++ Expected))
        end)
     || {K, V} <- Bad
    ] ++
        [
            ?_assertEqual(ok, locker_config:check(#{})),
            ?_assertEqual(
                ok,
                locker_config:check(#{
                    masters => [node()],
                    replicas => [],
                    w => 1,
                    registry_lease => 5000,
                    registry_on_lost => notify,
                    state_dir => "/tmp/x",
                    some_other_key => anything
                })
            ),
            %% One message per bad key, all of them.
            ?_assertMatch(
                {error, [{w, _, _}, {lease_expire_interval, _, _}, {registry_lease, _, _}]},
                locker_config:check(#{w => -1, lease_expire_interval => fast, registry_lease => "5000"})
            ),
            ?_test(not_distributed())
        ].

%% Other nodes as masters on a node started without a name.
not_distributed() ->
    case node() of
        nonode@nohost ->
            {error, [{masters, _, Expected}]} = locker_config:check(#{masters => ['a@host', node()]}),
            ?assertNotEqual(nomatch, string:find(Expected, "not distributed")),
            ?assertEqual(ok, locker_config:check(#{masters => [node()]}));
        _ ->
            %% A distributed node may list any node.
            ?assertEqual(ok, locker_config:check(#{masters => ['a@host', node()]}))
    end.

%% The application refuses to start with a bad environment, and says why.
app_refuses_bad_config_test() ->
    _ = application:load(locker),
    Old = application:get_all_env(locker),
    ok = application:set_env(locker, w, 0),
    ok = application:set_env(locker, push_trans_log_interval, "100"),
    try
        {error, {bad_config, Messages}} = locker_app:start(normal, []),
        ?assertEqual(2, length(Messages)),
        ?assertMatch({error, {{bad_config, _}, _}}, application:start(locker))
    after
        [application:unset_env(locker, K) || {K, _} <- application:get_all_env(locker)],
        [application:set_env(locker, K, V) || {K, V} <- Old]
    end.
