%% A/B of two builds of the NIF's hot path in one run (scripts/nif_ab.sh):
%% two peer VMs, one per build, measured alternately (which goes first
%% alternates too); per round, ns per get_write_lock + write + release of a
%% fresh key, and per dirty_read of a hot key, of a missing one and of a
%% hot set of 1,024 keys (random order). Prints
%% each round, then medians, minimums and the new/old ratios: on a shared
%% machine the per-round ratios show the noise.
%% main(["OldDir", "NewDir", Rounds]): each Dir holds locker/ebin and
%% locker/priv (the NIF).
-module(locker_bench_nif_ab).
-export([main/1, cycle/1, reads/1]).

main([Old, New, Rounds0]) ->
    Rounds = list_to_integer(Rounds0),
    {ok, PA, NA} = peer:start(#{name => locker_nif_ab_old, host => "127.0.0.1", longnames => true, args => ["-pa", Old ++ "/locker/ebin", "-pa", filename:dirname(code:which(?MODULE))]}),
    {ok, PB, NB} = peer:start(#{name => locker_nif_ab_new, host => "127.0.0.1", longnames => true, args => ["-pa", New ++ "/locker/ebin", "-pa", filename:dirname(code:which(?MODULE))]}),
    [{module, locker_nif} = erpc:call(N, code, ensure_loaded, [locker_nif]) || N <- [NA, NB]],
    io:format("old so: ~s~nnew so: ~s~n", [erpc:call(NA, code, priv_dir, [locker]), erpc:call(NB, code, priv_dir, [locker])]),
    Res = [begin
               %% Alternate which build goes first.
               {First, Second} = case R rem 2 of 1 -> {NA, NB}; 0 -> {NB, NA} end,
               C1 = erpc:call(First, ?MODULE, cycle, [100000]), C2 = erpc:call(Second, ?MODULE, cycle, [100000]),
               R1 = erpc:call(First, ?MODULE, reads, [300000]), R2 = erpc:call(Second, ?MODULE, reads, [300000]),
               {A, B, {RA, MA, HA}, {RB, MB, HB}} = case First of NA -> {C1, C2, R1, R2}; NB -> {C2, C1, R2, R1} end,
               io:format("round ~b: lock cycle old ~.1f new ~.1f ns | dirty_read hit old ~.1f new ~.1f | miss old ~.1f new ~.1f | hot set old ~.1f new ~.1f~n", [R, A, B, RA, RB, MA, MB, HA, HB]),
               {A, B, RA, RB, MA, MB, HA, HB}
           end || R <- lists:seq(1, Rounds)],
    Med = fun(L) -> lists:nth((length(L) + 1) div 2, lists:sort(L)) end,
    Col = fun(I) -> [element(I, T) || T <- Res] end,
    [io:format("~s: median old ~.1f ns, new ~.1f ns, new/old ~.3f; min old ~.1f, new ~.1f, new/old ~.3f (per-round ratios ~s)~n",
               [Name, Med(Col(I)), Med(Col(I + 1)), Med(Col(I + 1)) / Med(Col(I)),
                lists:min(Col(I)), lists:min(Col(I + 1)), lists:min(Col(I + 1)) / lists:min(Col(I)),
                string:join([io_lib:format("~.2f", [element(I + 1, T) / element(I, T)]) || T <- Res], " ")])
     || {Name, I} <- [{"lock cycle (get_write_lock+write+release)", 1}, {"dirty_read hit", 3}, {"dirty_read miss", 5},
                      {"dirty_read hot set (1,024 keys, random order)", 7}]],
    peer:stop(PA), peer:stop(PB),
    ok.

%% ns per get_write_lock + write + release of a fresh 16-byte key.
cycle(N) ->
    ok = locker_nif:clear(),
    Me = self(),
    T0 = erlang:monotonic_time(nanosecond),
    loop(N, Me),
    (erlang:monotonic_time(nanosecond) - T0) / N.

loop(0, _) -> ok;
loop(I, Me) ->
    K = <<I:128>>,
    Tag = {'$locker_token', Me, 0},
    ok = locker_nif:get_write_lock(K, not_found, Tag),
    {ok, _} = locker_nif:write(Tag, K, Me, 60000),
    {ok, _} = locker_nif:release(K, Me, Tag),
    loop(I - 1, Me).

%% ns per dirty_read of a hot key, of a missing one, and of random keys
%% of a hot set of 1,024 leases.
reads(N) ->
    ok = locker_nif:clear(),
    K = <<7:128>>, T = make_ref(),
    ok = locker_nif:get_write_lock(K, not_found, T),
    {ok, _} = locker_nif:write(T, K, self(), 600000),
    [{ok, _} = locker_nif:write(t, <<I:128>>, self(), 600000) || I <- lists:seq(1000, 2023)],
    rand:seed(exsss, {4, 5, 6}),
    Keys = list_to_tuple([<<(999 + rand:uniform(1024)):128>> || _ <- lists:seq(1, 65536)]),
    {time(N, K), time(N, <<8:128>>), hot(N, Keys)}.

hot(N, Keys) ->
    T0 = erlang:monotonic_time(nanosecond),
    hl(N, Keys),
    (erlang:monotonic_time(nanosecond) - T0) / N.

hl(0, _) -> ok;
hl(I, Keys) -> _ = locker_nif:dirty_read(element((I band 65535) + 1, Keys)), hl(I - 1, Keys).

time(N, K) ->
    T0 = erlang:monotonic_time(nanosecond),
    rl(N, K),
    (erlang:monotonic_time(nanosecond) - T0) / N.

rl(0, _) -> ok;
rl(I, K) -> _ = locker_nif:dirty_read(K), rl(I - 1, K).
