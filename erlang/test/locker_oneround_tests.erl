%% The one-round coordinator's decisions (locker_oneround).
-module(locker_oneround_tests).

-include_lib("eunit/include/eunit.hrl").

run(W, M, Replies) ->
    lists:foldl(fun(R, St) -> locker_oneround:reply(locker_oneround:to_reply(R), St) end, locker_oneround:new(W, M), Replies).

success_at_w_test() ->
    St = run(2, 3, [ok, ok]),
    ?assertNot(locker_oneround:decided(St)),
    ?assertEqual({ok, 2, 2}, locker_oneround:outcome(St)),
    St3 = locker_oneround:reply(ok, St),
    ?assert(locker_oneround:decided(St3)),
    ?assertEqual({ok, 2, 3}, locker_oneround:outcome(St3)).

refusals_decide_early_test() ->
    St = run(2, 3, [{error, not_expected_value}, {error, already_locked}]),
    ?assert(locker_oneround:decided(St)),
    ?assertEqual({no_quorum, undefined}, locker_oneround:outcome(St)).

missing_counts_as_no_test() ->
    St = locker_oneround:reply(missing, run(3, 3, [ok])),
    ?assert(locker_oneround:decided(St)),
    ?assertEqual({no_quorum, undefined}, locker_oneround:outcome(St)).

stale_token_floor_test() ->
    St = run(2, 3, [{error, {stale_token, 70}}, ok, {error, {stale_token, 90}}]),
    ?assertEqual({no_quorum, 90}, locker_oneround:outcome(St)).

unknown_request_falls_back_test() ->
    St = run(2, 3, [ok, {error, {unknown_request, {cond_write, x}}}]),
    ?assert(locker_oneround:decided(St)),
    ?assertEqual(two_phase, locker_oneround:outcome(St)).

epoch_refusal_is_a_refusal_test() ->
    ?assertEqual(refused, locker_oneround:to_reply({error, {config_epoch, {3, n}}})),
    ?assertEqual(refused, locker_oneround:to_reply({error, {stale_token, -1}})).

w_zero_never_grants_test() ->
    ?assertEqual({no_quorum, undefined}, locker_oneround:outcome(run(0, 0, []))),
    ?assertEqual({no_quorum, undefined}, locker_oneround:outcome(run(1, 0, []))).
