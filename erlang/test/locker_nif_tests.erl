%% EUnit tests of the NIF store `locker_nif'.
%%
%% - Keys: a term stored under key A is read back through key B exactly when
%%   A =:= B (the store's canonical encoding against Erlang's =:=), over a
%%   few thousand random pairs drawn to be often equal-ish.
%% - Values round-trip (V2 =:= V), deep and large ones included, and
%%   get_write_lock/3 grants exactly when Expected =:= the stored value.
%% - Bad arguments raise badarg and leave the VM up; random terms thrown
%%   at every NIF function either work or raise badarg, and leave no heap
%%   behind once the store is cleared; leases expire on read.
%%
%% The random terms come from `rand' (no PropEr): atoms only from a fixed
%% list. A failing case prints its seed; rerun it with
%% LOCKER_NIF_SEED=<seed> rebar3 eunit --module=locker_nif_tests
-module(locker_nif_tests).

-include_lib("eunit/include/eunit.hrl").

-define(KEY_CASES, 5000).
-define(VALUE_CASES, 2000).
-define(EXPECT_CASES, 3000).
-define(RANDOM_CALLS, 4000).
-define(LEASE, 60000).

%% Atoms the generator draws from (never made from random data).
-define(ATOMS, [
    a, b, ok, error, not_found, true, false, undefined, nil, '', 'hello world',
    'other@host', 'ünïcödé', value, locker
]).

%%====================================================================
%% Tests
%%====================================================================

keys_match_exactly_when_exact_equal_test_() ->
    {timeout, 600, fun() -> with_ctx(fun prop_keys/2) end}.

values_round_trip_test_() ->
    {timeout, 600, fun() -> with_ctx(fun prop_values/2) end}.

deep_and_large_values_round_trip_test_() ->
    {timeout, 120, fun deep_values/0}.

get_write_lock_expected_value_test_() ->
    {timeout, 600, fun() -> with_ctx(fun prop_expected/2) end}.

not_found_grants_on_absent_key_test() ->
    ok = locker_nif:clear(),
    ?assertEqual({error, not_found}, locker_nif:dirty_read(k)),
    ?assertEqual(ok, locker_nif:get_write_lock(k, not_found, t1)),
    ?assertEqual({error, already_locked}, locker_nif:get_write_lock(k, not_found, t2)),
    ok = locker_nif:release_write_lock(t1),
    %% Any other expected value is refused on an absent key.
    ?assertEqual({error, not_expected_value}, locker_nif:get_write_lock(k, v, t3)),
    %% A stored `not_found' atom also matches the marker.
    ok = locker_nif:get_write_lock(k, not_found, t4),
    _ = locker_nif:write(t4, k, not_found, ?LEASE),
    ?assertEqual(ok, locker_nif:get_write_lock(k, not_found, t5)),
    ok = locker_nif:clear().

%% Known pairs that `term_to_binary' alone tells apart although they are
%% =:= (the store used to, too), each as key and as expected value.
exact_equal_corner_cases_test() ->
    Self = self(),
    Maker = spawn_link(fun() -> maker() end),
    Large = [{I, I} || I <- lists:seq(1, 40)],
    Pairs = [
        {deep(0.0, 70), deep(-0.0, 70)},
        {#{deep(-0.0, 66) => 1}, #{deep(0.0, 66) => 1}},
        {mk_fun(), make_fun(Maker, none)},
        {mk_fun(0.0), mk_fun(-0.0)},
        {deep(mk_fun(Self), 70), deep(make_fun(Maker, {value, Self}), 70)},
        {remote_ref([7, 1, 2]), remote_ref([7, 1, 2, 0])},
        {remote_ref([7, 1]), remote_ref([7, 1, 0, 0, 0])},
        {deep(remote_ref([7, 1, 2, 3]), 70), deep(remote_ref([7, 1, 2, 3, 0]), 70)},
        %% Large maps (hash tries) in two insertion orders, deep.
        {deep(maps:from_list(Large), 70), deep(maps:from_list(lists:reverse(Large)), 70)},
        {deep(maps:from_list([{-0.0, z} | Large]), 70),
            deep(maps:from_list([{0.0, z} | Large]), 70)},
        {deep(maps:from_list([{{-0.0}, z} | Large]), 70),
            deep(maps:from_list([{{0.0}, z} | Large]), 70)}
    ],
    %% (All =:= on OTP 25; -0.0 and 0.0 differ from OTP 27 on.)
    lists:foreach(
        fun({A, B}) ->
            {Found, Granted} =
                case A =:= B of
                    true -> {{ok, value}, ok};
                    false -> {{error, not_found}, {error, not_expected_value}}
                end,
            ?assertEqual(Found, store_and_read(A, B)),
            ?assertEqual(Granted, store_and_expect(A, B))
        end,
        Pairs
    ),
    unlink(Maker),
    exit(Maker, kill),
    ok = locker_nif:clear().

bad_arguments_raise_badarg_test_() ->
    {setup, fun() -> ok = locker_nif:clear() end, [
        ?_assertError(badarg, locker_nif:write(t, k, v, foo)),
        ?_assertError(badarg, locker_nif:write(t, k, v, "10")),
        ?_assertError(badarg, locker_nif:write(t, k, v, {10})),
        ?_assertError(badarg, locker_nif:extend_lease(t, k, v, foo)),
        ?_assertError(badarg, locker_nif:extend_lease(t, k, v, <<"10">>)),
        ?_assertError(badarg, locker_nif:wait_for(k, -1, 100)),
        ?_assertError(badarg, locker_nif:wait_for(k, foo, 100)),
        ?_assertError(badarg, locker_nif:wait_for(k, 1 bsl 64, 100)),
        ?_assertError(badarg, locker_nif:wait_for(k, 1, foo)),
        ?_assertError(badarg, locker_nif:wait_for_release(k, -1, 100)),
        ?_assertError(badarg, locker_nif:wait_for_release(k, 1.0, 100)),
        ?_assertError(badarg, locker_nif:wait_for_release(k, 1, [100])),
        ?_assertError(badarg, locker_nif:sweep(-1)),
        ?_assertError(badarg, locker_nif:sweep(foo)),
        ?_assertError(badarg, locker_nif:sweep(1.5)),
        ?_assertError(badarg, locker_nif:take_log(bad)),
        ?_assertError(badarg, locker_nif:take_log(-1)),
        ?_assertError(badarg, locker_nif:replay(not_a_list, 10)),
        ?_assertError(badarg, locker_nif:replay([1 | 2], 10)),
        ?_assertError(badarg, locker_nif:replay([], -1)),
        ?_assertError(badarg, locker_nif:replay([], foo)),
        ?_assertError(badarg, locker_nif:configure(foo, bar)),
        ?_assertError(badarg, locker_nif:configure(foo, true)),
        ?_assertError(badarg, locker_nif:configure(1000, bar)),
        ?_assertError(badarg, locker_nif:set_intervals(foo, 1000, 100)),
        ?_assertError(badarg, locker_nif:pause_timers([nope], true)),
        ?_assertError(badarg, locker_nif:pause_timers(push_trans_log, true)),
        ?_assertError(badarg, locker_nif:pause_timers([push_trans_log], maybe))
    ]}.

%% The server's one timer through the NIF: when it is due, what is due,
%% paused tasks (locker_core's tests model the schedule itself).
timer_schedule_test() ->
    ok = locker_nif:clear(),
    ok = locker_nif:set_intervals(1000, 1000, 100),
    {L, P, Push} = locker_nif:timers(),
    ?assert(L =< 1000 andalso P =< 1000 andalso Push =< 100),
    Next = locker_nif:next_due(),
    ?assert(is_integer(Next) andalso Next =< 100),
    ok = locker_nif:pause_timers([expire_leases, expire_locks, push_trans_log], true),
    ?assertEqual({paused, paused, paused}, locker_nif:timers()),
    ?assertEqual(infinity, locker_nif:next_due()),
    ?assertEqual({false, false}, locker_nif:take_due()),
    %% A waiter still needs an answer: a wait_for times out in 50 ms.
    ?assertEqual(pending, locker_nif:wait_for(k, 1, 50)),
    Wake = locker_nif:next_due(),
    ?assert(is_integer(Wake) andalso Wake =< 51),
    ok = locker_nif:pause_timers([push_trans_log], false),
    {paused, paused, Push2} = locker_nif:timers(),
    ?assert(is_integer(Push2) andalso Push2 =< 100),
    ok = locker_nif:set_intervals(1000, 1000, 100),
    ok = locker_nif:clear().

%% Every NIF function, with random terms (of every type, often of the wrong
%% one) for each argument: each call returns or raises error:badarg, never
%% anything else, and the VM survives. The store's heap, counted by its
%% allocator, is back to where it was once the store is cleared: nothing
%% leaks on any path, the error paths included.
%% The token floor only rises and survives clear/0: a random floor near
%% 2^64 would leave the store of this VM unable to grant a token to the
%% suites that run after this one (the coordinator's token counter is a
%% signed 64-bit atomic). Large floors are still thrown, capped at 2^53.
capped(raise_token_floor, I) when is_integer(I), I > 1 bsl 53 -> 1 bsl 53;
capped(_, T) -> T.

random_arguments_to_every_nif_test_() ->
    {timeout, 120, fun() -> with_ctx(fun prop_random_calls/2) end}.

prop_random_calls(Ctx, Seed) ->
    Funs = [{F, A} || {F, A} <- locker_nif:module_info(exports), F =/= module_info, F =/= load],
    ?assertEqual(32, length(Funs)),
    Call = fun(N) ->
        {F, A} = pick(Funs),
        Args = [capped(F, random_argument(Ctx)) || _ <- lists:seq(1, A)],
        try apply(locker_nif, F, Args) of
            _ -> ok
        catch
            error:badarg -> ok;
            C:R -> erlang:error({unexpected, Seed, N, F, Args, C, R})
        end
    end,
    Restore = fun() ->
        ok = locker_nif:configure(10000, false),
        ok = locker_nif:abstain_after_start(0),
        ok = locker_nif:set_joint(false),
        ok = locker_nif:clear()
    end,
    %% A first pass warms up what is kept for good (atom tables, caches of
    %% the allocator); the second must leave nothing.
    lists:foreach(Call, lists:seq(1, ?RANDOM_CALLS)),
    Restore(),
    Before = locker_nif:memory(),
    lists:foreach(Call, lists:seq(1, ?RANDOM_CALLS)),
    Restore(),
    After = locker_nif:memory(),
    ?assert(After - Before =< 64 * 1024, {leaked, After - Before, seed, Seed}),
    %% Still a working store.
    ok = locker_nif:get_write_lock(k, not_found, t),
    _ = locker_nif:write(t, k, v, ?LEASE),
    ?assertEqual({ok, v}, locker_nif:dirty_read(k)).

%% Mostly small integers and atoms (the types the functions want, some
%% out of range), else any term.
random_argument(Ctx) ->
    case rand:uniform(6) of
        1 -> rand:uniform(2000) - 1000;
        2 -> pick([0, 1, 100, 60000, -1, 1 bsl 64, 1.5, infinity, true, false, not_found]);
        3 -> gen(Ctx, 1);
        _ -> gen(Ctx, 3)
    end.

%% Arguments that are not refused; afterwards the VM and store still work.
odd_arguments_test() ->
    ok = locker_nif:clear(),
    %% Negative lengths are clamped to 0, not refused.
    ?assertMatch({ok, []}, locker_nif:write(t, k, v, -1)),
    ?assertMatch({ok, []}, locker_nif:write(t, k, v, -1.5)),
    ?assertMatch({ok, []}, locker_nif:extend_lease(t, k, v, -1)),
    ?assertEqual({error, not_found}, locker_nif:dirty_read(k)),
    %% Functions whose arguments are any terms take the odd ones.
    Odd = [deep(x, 200), lists:seq(1, 1000), self(), make_ref(), fun mk_fun/0, <<1:3>>],
    lists:foreach(
        fun(T) ->
            ?assertEqual({error, not_found}, locker_nif:dirty_read(T)),
            ?assertEqual({error, not_expected_value}, locker_nif:get_write_lock(T, T, T)),
            ?assertEqual(ok, locker_nif:release_write_lock(T)),
            ?assertEqual({error, no_promise}, locker_nif:update(T, T, T)),
            ?assertEqual({error, not_found}, locker_nif:release(T, T, T))
        end,
        Odd
    ),
    %% Entries of an unknown shape are skipped and counted.
    ?assertEqual({[], [], 2}, locker_nif:replay([garbage, {write}, {release, k}], 10)),
    ?assertMatch({[], [_], 1}, locker_nif:replay([garbage, {release, k}], 1)),
    %% The VM and the store are still fine.
    ?assert(is_map(locker_nif:stats())),
    ?assertMatch({_, _}, locker_nif:debug_state()),
    ok = locker_nif:get_write_lock(k, not_found, t),
    _ = locker_nif:write(t, k, v, ?LEASE),
    ?assertEqual({ok, v}, locker_nif:dirty_read(k)),
    ok = locker_nif:clear().

lease_expires_on_read_test() ->
    ok = locker_nif:clear(),
    T0 = erlang:monotonic_time(microsecond),
    _ = locker_nif:write(t, k, v, 5),
    Before = locker_nif:dirty_read(k),
    T1 = erlang:monotonic_time(microsecond),
    %% Only meaningful if this process was not descheduled for the lease.
    case T1 - T0 < 4000 of
        true -> ?assertEqual({ok, v}, Before);
        false -> ok
    end,
    timer:sleep(10),
    ?assertEqual({error, not_found}, locker_nif:dirty_read(k)),
    %% get_write_lock/3 sees the key as absent too.
    ?assertEqual({error, not_expected_value}, locker_nif:get_write_lock(k, v, t)),
    ?assertEqual(ok, locker_nif:get_write_lock(k, not_found, t)),
    ok = locker_nif:release_write_lock(t),
    lists:foreach(
        fun(Lease) ->
            _ = locker_nif:write(t, k0, v, Lease),
            ?assertEqual({error, not_found}, locker_nif:dirty_read(k0))
        end,
        [0, 0.0, 0.5, -1, -10.0]
    ),
    %% Huge leases last (they are not wrapped around).
    lists:foreach(
        fun(Lease) ->
            _ = locker_nif:write(t, k1, v, Lease),
            ?assertEqual({ok, v}, locker_nif:dirty_read(k1))
        end,
        [1 bsl 63, 1 bsl 64 + 1, 1 bsl 200, 1.0e300, infinity]
    ),
    ok = locker_nif:clear().

%% dirty_read answers from the time stamp counter when it proves a lease
%% still valid (clock:is_before_fast in locker_core): a read begun once
%% the lease's length has passed since its write returned never finds it
%% (for 400 ms of leases: past the shortcut's calibration, 200 ms after
%% the NIF loads, whenever it loaded). Erlang's monotonic clock is CLOCK_MONOTONIC too; the 2 us cover
%% the two clocks' rounding to microseconds.
lease_never_read_past_expiry_test_() ->
    {timeout, 60, fun() ->
        ok = locker_nif:clear(),
        Start = erlang:monotonic_time(millisecond),
        Checked = expiry_rounds(Start + 400, 0),
        ?assert(Checked > 0),
        ok = locker_nif:clear()
    end}.

expiry_rounds(Until, N) ->
    case erlang:monotonic_time(millisecond) > Until of
        true ->
            N;
        false ->
            [read_until_gone(term_to_binary({N, L}), L) || L <- [1, 3]],
            expiry_rounds(Until, N + 1)
    end.

read_until_gone(K, LeaseMs) ->
    {ok, _} = locker_nif:write(t, K, v, LeaseMs),
    Deadline = erlang:monotonic_time(microsecond) + LeaseMs * 1000 + 2,
    spin_until_gone(K, Deadline).

spin_until_gone(K, Deadline) ->
    Started = erlang:monotonic_time(microsecond),
    case locker_nif:dirty_read(K) of
        {ok, v} when Started >= Deadline -> ?assertEqual({read_past_expiry, 0}, {read_past_expiry, Started - Deadline});
        {ok, v} -> spin_until_gone(K, Deadline);
        {error, not_found} -> ok
    end.

%%====================================================================
%% Properties
%%====================================================================

%% Store under A, read through B: found iff A =:= B.
prop_keys(Ctx, Seed) ->
    Equal = lists:foldl(
        fun(N, Acc) ->
            {A, B} = pair(Ctx),
            Eq = A =:= B,
            Expected = case Eq of true -> {ok, value}; false -> {error, not_found} end,
            check(Seed, N, {A, B}, Expected, store_and_read(A, B)),
            %% A itself must always find its value.
            check(Seed, N, A, {ok, value}, locker_nif:dirty_read(A)),
            Acc + bool(Eq)
        end,
        0,
        lists:seq(1, ?KEY_CASES)
    ),
    assert_mixed(Equal, ?KEY_CASES).

%% write/4 then dirty_read/1 gives back a value =:= to the one written.
prop_values(Ctx, Seed) ->
    lists:foreach(
        fun(N) ->
            V = maybe_deep(gen(Ctx, 4)),
            K = gen(Ctx, 2),
            check(Seed, N, V, true, round_trips(K, V))
        end,
        lists:seq(1, ?VALUE_CASES)
    ).

%% get_write_lock(K, B, Tag) on a key holding A: ok iff B =:= A.
prop_expected(Ctx, Seed) ->
    Equal = lists:foldl(
        fun(N, Acc) ->
            {A, B} = pair(Ctx),
            Eq = A =:= B,
            Expected = case Eq of true -> ok; false -> {error, not_expected_value} end,
            check(Seed, N, {A, B}, Expected, store_and_expect(A, B)),
            Acc + bool(Eq)
        end,
        0,
        lists:seq(1, ?EXPECT_CASES)
    ),
    assert_mixed(Equal, ?EXPECT_CASES).

deep_values() ->
    Values = [
        deep(leaf, 200),
        deep({1.5, <<"bin">>, self()}, 200),
        deep_list(x, 200),
        deep_map(v, 100),
        deep_map(-0.0, 100),
        lists:seq(1, 100000),
        [{I, float(I), <<I:32>>} || I <- lists:seq(1, 100000)],
        maps:from_list([{I, deep(I, 70)} || I <- lists:seq(1, 100)]),
        lists:foldl(fun(I, Acc) -> [Acc | I] end, [], lists:seq(1, 300))
    ],
    lists:foreach(
        fun(V) ->
            ?assert(round_trips(k, V)),
            %% Deep and large terms as keys too, read through a copy.
            Copy = binary_to_term(term_to_binary(V)),
            ?assertEqual({ok, value}, store_and_read(V, Copy))
        end,
        Values
    ).

%%====================================================================
%% Store helpers
%%====================================================================

store_and_read(A, B) ->
    ok = locker_nif:clear(),
    ok = locker_nif:get_write_lock(A, not_found, tag),
    ?assertEqual({ok, []}, locker_nif:write(tag, A, value, ?LEASE)),
    locker_nif:dirty_read(B).

store_and_expect(A, B) ->
    ok = locker_nif:clear(),
    _ = locker_nif:write(tag, key, A, ?LEASE),
    locker_nif:get_write_lock(key, B, tag2).

round_trips(K, V) ->
    ok = locker_nif:clear(),
    _ = locker_nif:write(tag, K, V, ?LEASE),
    case locker_nif:dirty_read(K) of
        {ok, V2} when V2 =:= V -> true;
        Other -> {read, Other}
    end.

check(_Seed, _N, _Terms, Expected, Expected) ->
    ok;
check(Seed, N, Terms, Expected, Actual) ->
    Info = {{seed, Seed}, {'case', N}, Terms},
    ?assertEqual({Expected, Info}, {Actual, Info}).

bool(true) -> 1;
bool(false) -> 0.

%% The pairs are worth something only if both outcomes are common.
assert_mixed(Equal, Total) ->
    ?assert(Equal > Total div 5),
    ?assert(Total - Equal > Total div 10).

%%====================================================================
%% Context: pids, refs, ports and funs to draw from
%%====================================================================

with_ctx(Prop) ->
    Seed = seed(),
    _ = rand:seed(exsss, {Seed, Seed bxor 16#5bd1e995, 42}),
    Maker = spawn_link(fun() -> maker() end),
    Spawned = [spawn_link(fun() -> receive stop -> ok end end) || _ <- lists:seq(1, 3)],
    Port = open_port({spawn, "true"}, []),
    Monitor = monitor(process, Maker),
    Alias = alias(),
    Ctx = #{
        maker => Maker,
        pids => [self(), Maker, list_to_pid("<0.1.2>"), remote_pid(5, 0), remote_pid(6, 1)
                 | Spawned],
        refs => [make_ref(), Monitor, Alias, remote_ref([9, 8, 7])],
        ports => [Port, hd(erlang:ports()), remote_port(3), remote_port(1 bsl 40)]
    },
    try
        Prop(Ctx, Seed)
    after
        true = demonitor(Monitor, [flush]),
        _ = unalias(Alias),
        lists:foreach(fun(P) -> unlink(P), exit(P, kill) end, [Maker | Spawned]),
        catch port_close(Port),
        ok = locker_nif:clear()
    end.

seed() ->
    case os:getenv("LOCKER_NIF_SEED") of
        false -> erlang:phash2({erlang:monotonic_time(), make_ref()});
        S -> list_to_integer(S)
    end.

%% A process that makes funs: equal to ours, with another creator.
maker() ->
    receive
        {make, From, Env} ->
            From ! {made, self(), make_here(Env)},
            maker()
    end.

make_fun(Maker, Env) ->
    Maker ! {make, self(), Env},
    receive
        {made, Maker, F} -> F
    end.

make_here(none) -> mk_fun();
make_here({value, X}) -> mk_fun(X).

mk_fun() -> fun() -> ok end.
mk_fun(X) -> fun() -> X end.

%% Pids, ports and references of another node, in external term format.
node_ext() ->
    Name = atom_to_binary('other@host', utf8),
    <<119, (byte_size(Name)), Name/binary>>.

remote_pid(Id, Serial) ->
    binary_to_term(<<131, 88, (node_ext())/binary, Id:32, Serial:32, 7:32>>).

remote_port(Id) when Id < 1 bsl 32 ->
    binary_to_term(<<131, 89, (node_ext())/binary, Id:32, 7:32>>);
remote_port(Id) ->
    binary_to_term(<<131, 120, (node_ext())/binary, Id:64, 7:32>>).

remote_ref(Words) ->
    Ids = <<<<W:32>> || W <- Words>>,
    binary_to_term(<<131, 90, (length(Words)):16, (node_ext())/binary, 7:32, Ids/binary>>).

%%====================================================================
%% Random terms
%%====================================================================

pick(L) -> lists:nth(rand:uniform(length(L)), L).

chance(Percent) -> rand:uniform(100) =< Percent.

shuffle(L) -> [X || {_, X} <- lists:sort([{rand:uniform(), X} || X <- L])].

gen(Ctx, Depth) when Depth =< 0 ->
    leaf(Ctx);
gen(Ctx, Depth) ->
    case rand:uniform(10) of
        N when N =< 4 -> leaf(Ctx);
        5 -> list_to_tuple(gen_list(Ctx, Depth, 5));
        6 -> gen_list(Ctx, Depth, 5);
        7 -> improper(Ctx, Depth);
        8 -> small_map(Ctx, Depth);
        9 when Depth >= 2 ->
            case chance(15) of
                true -> large_map(Ctx, Depth);
                false -> small_map(Ctx, Depth)
            end;
        _ -> gen_fun(Ctx, Depth)
    end.

gen_list(Ctx, Depth, Max) ->
    [gen(Ctx, Depth - 1) || _ <- lists:seq(1, rand:uniform(Max + 1) - 1)].

improper(Ctx, Depth) ->
    Tail =
        case leaf(Ctx) of
            L when is_list(L) -> {L};
            T -> T
        end,
    lists:foldl(fun(X, Acc) -> [X | Acc] end, Tail, gen_list(Ctx, Depth, 3) ++ [leaf(Ctx)]).

small_map(Ctx, Depth) ->
    N = rand:uniform(7) - 1,
    maps:from_list([{gen(Ctx, Depth - 2), gen(Ctx, Depth - 1)} || _ <- lists:seq(1, N)]).

large_map(Ctx, Depth) ->
    N = 33 + rand:uniform(15),
    maps:from_list([{key(Ctx, I), gen(Ctx, Depth - 2)} || I <- lists:seq(1, N)]).

key(Ctx, I) ->
    case rand:uniform(4) of
        1 -> I;
        2 -> {I, leaf(Ctx)};
        3 -> integer_to_binary(I);
        4 -> float(I)
    end.

gen_fun(Ctx, Depth) ->
    case rand:uniform(4) of
        1 -> mk_fun();
        2 -> mk_fun(gen(Ctx, Depth - 1));
        3 -> make_fun(maps:get(maker, Ctx), {value, gen(Ctx, Depth - 1)});
        4 -> pick([fun lists:map/2, fun ?MODULE:gen/2, fun erlang:self/0])
    end.

leaf(Ctx) ->
    case rand:uniform(12) of
        1 -> pick(?ATOMS);
        2 -> rand:uniform(2001) - 1001;
        3 -> boundary_int();
        4 -> gen_float();
        5 -> gen_binary();
        6 -> gen_bits();
        7 -> pick(maps:get(pids, Ctx));
        8 -> pick(maps:get(refs, Ctx));
        9 -> pick(maps:get(ports, Ctx));
        10 -> gen_string();
        11 -> pick([[], {}, #{}, <<>>, "", 0, 1, 1.0, 0.0, -0.0]);
        12 -> pick([make_ref(), remote_ref([rand:uniform(3), 0, 1]), remote_pid(2, 0)])
    end.

boundary_int() ->
    E = pick([8, 27, 28, 31, 32, 59, 60, 63, 64, 65, 100, 128]),
    Sign = pick([1, -1]),
    Sign * ((1 bsl E) + rand:uniform(3) - 2).

gen_float() ->
    case rand:uniform(6) of
        1 -> pick([0.0, -0.0, 1.0, -1.0, 0.5, 1.0e300, -1.0e-300, 5.0e-324]);
        2 -> float(boundary_int());
        3 -> float(rand:uniform(5) - 3);
        _ -> (rand:uniform() - 0.5) * 1.0e6
    end.

gen_binary() ->
    case rand:uniform(5) of
        1 -> <<>>;
        2 -> rand:bytes(65 + rand:uniform(300));
        3 ->
            Big = rand:bytes(200),
            Start = rand:uniform(100),
            binary:part(Big, Start, rand:uniform(99));
        _ -> rand:bytes(rand:uniform(12))
    end.

gen_bits() ->
    case rand:uniform(3) of
        1 -> pick([<<1:3>>, <<0:1>>, <<255, 1:1>>]);
        2 ->
            Size = rand:uniform(40),
            <<X:Size/bits, _/bits>> = rand:bytes(6),
            X;
        3 ->
            %% Unaligned: starts mid-byte of a larger binary.
            Size = rand:uniform(60),
            <<_:3, X:Size/bits, _/bits>> = rand:bytes(9),
            X
    end.

gen_string() ->
    case rand:uniform(3) of
        1 -> [rand:uniform(256) - 1 || _ <- lists:seq(1, rand:uniform(10))];
        2 -> [rand:uniform(16#10000) || _ <- lists:seq(1, rand:uniform(5))];
        3 -> "hello"
    end.

%% Nesting beyond the store's walk depth, same shape around both.
maybe_deep(T) ->
    case chance(10) of
        true -> wrap(T, wrappers());
        false -> T
    end.

wrappers() ->
    [pick([tuple, list, map, improper, key]) || _ <- lists:seq(1, 55 + rand:uniform(20))].

wrap(T, Ws) ->
    lists:foldl(
        fun
            (tuple, X) -> {X};
            (list, X) -> [a, X];
            (map, X) -> #{k => X, j => 1};
            (improper, X) -> [1 | X];
            (key, X) -> #{X => v}
        end,
        T,
        Ws
    ).

deep(X, 0) -> X;
deep(X, N) -> deep({X}, N - 1).

deep_list(X, 0) -> X;
deep_list(X, N) -> deep_list([X], N - 1).

deep_map(X, 0) -> X;
deep_map(X, N) -> deep_map(#{N => X, other => N}, N - 1).

%%====================================================================
%% Pairs that are often equal-ish
%%====================================================================

pair(Ctx) ->
    A = gen(Ctx, 4),
    B =
        case rand:uniform(8) of
            1 -> A;
            2 -> binary_to_term(term_to_binary(A));
            3 -> gen(Ctx, 4);
            _ -> twin(Ctx, A)
        end,
    case chance(15) of
        true ->
            Ws = wrappers(),
            {wrap(A, Ws), wrap(B, Ws)};
        false ->
            {A, B}
    end.

%% A term built anew from T: mostly =:= to it (maps in another insertion
%% order, -0.0 for 0.0, binaries as sub-binaries, funs made by another
%% process, refs with trailing zero words), sometimes changed a little
%% (1 for 1.0, a leaf replaced).
twin(Ctx, T) ->
    case chance(2) of
        true -> leaf(Ctx);
        false -> twin1(Ctx, T)
    end.

twin1(_Ctx, I) when is_integer(I) ->
    case chance(5) of
        true -> float(I);
        false -> I
    end;
twin1(_Ctx, F) when is_float(F), F == 0 ->
    case chance(5) of
        true -> 0;
        false -> pick([0.0, -0.0])
    end;
twin1(_Ctx, F) when is_float(F) ->
    case chance(5) andalso F == round(F) of
        true -> round(F);
        false -> F
    end;
twin1(_Ctx, B) when is_bitstring(B) ->
    Pad = rand:uniform(8) - 1,
    Size = bit_size(B),
    <<_:Pad, Copy:Size/bits, _/bits>> = <<0:Pad, B/bits, (rand:bytes(2))/binary>>,
    Copy;
twin1(Ctx, T) when is_tuple(T) ->
    list_to_tuple([twin(Ctx, X) || X <- tuple_to_list(T)]);
twin1(Ctx, [H | T]) ->
    [twin(Ctx, H) | twin1(Ctx, T)];
twin1(Ctx, M) when is_map(M) ->
    Pairs = shuffle([{twin(Ctx, K), twin(Ctx, V)} || {K, V} <- maps:to_list(M)]),
    case rand:uniform(3) of
        1 ->
            maps:from_list(Pairs);
        2 ->
            lists:foldl(fun({K, V}, Acc) -> Acc#{K => V} end, #{}, Pairs);
        3 ->
            %% Through a large map, then shrunk back.
            Extra = [{{extra, I}, I} || I <- lists:seq(1, 40)],
            maps:without([K || {K, _} <- Extra], maps:from_list(Extra ++ Pairs))
    end;
twin1(Ctx, F) when is_function(F) ->
    case erlang:fun_info(F, type) of
        {type, local} ->
            {env, Env} = erlang:fun_info(F, env),
            Arg =
                case Env of
                    [] -> none;
                    [X] -> {value, twin(Ctx, X)}
                end,
            case chance(50) of
                true -> make_here(Arg);
                false -> make_fun(maps:get(maker, Ctx), Arg)
            end;
        {type, external} ->
            F
    end;
twin1(_Ctx, R) when is_reference(R), node(R) =:= 'other@host' ->
    <<131, 90, Len:16, Rest/binary>> = term_to_binary(R),
    NodeLen = byte_size(node_ext()) + 4,
    <<_:NodeLen/binary, Ids/binary>> = Rest,
    Words = [W || <<W:32>> <= Ids],
    Len = length(Words),
    remote_ref(Words ++ lists:duplicate(rand:uniform(max(1, 6 - Len)) - 1, 0));
twin1(_Ctx, T) ->
    T.

%% A batch is decoded whole before any of it is applied; refused requests
%% get the given reply and are not applied; replies come in order.
handle_batch_test() ->
    ok = locker_nif:clear(),
    Lock = {get_write_lock, bk, not_found, bt},
    ?assertEqual(bad_batch, locker_nif:handle_batch([Lock | improper], [none])),
    ?assertEqual(bad_batch, locker_nif:handle_batch([Lock, {write, bt, bk, v, soon}], [none, none])),
    ?assertEqual(bad_batch, locker_nif:handle_batch([Lock, {wait_for, bk, 10}], [none, none])),
    ?assertEqual(bad_batch, locker_nif:handle_batch([], [])),
    ?assertEqual(bad_batch, locker_nif:handle_batch(lists:duplicate(1025, {release_write_lock, bt}),
                                                    lists:duplicate(1025, none))),
    ?assertError(badarg, locker_nif:handle_batch([Lock], [])),
    %% Nothing was applied: another tag gets the promise.
    ?assertMatch({[ok, ok], []}, locker_nif:handle_batch([{get_write_lock, bk, not_found, other},
                                                         {release_write_lock, other}], [none, none])),
    ?assertMatch(
        {[ok, {error, already_locked}, refused, ok], []},
        locker_nif:handle_batch(
            [Lock, {get_write_lock, bk, not_found, other}, {get_write_lock, bk2, not_found, other},
             {write, bt, bk, v, 1000}],
            [none, none, refused, none]
        )
    ),
    ?assertEqual({ok, v}, locker_nif:dirty_read(bk)),
    ?assertEqual({error, not_found}, locker_nif:dirty_read(bk2)),
    ok = locker_nif:clear().
