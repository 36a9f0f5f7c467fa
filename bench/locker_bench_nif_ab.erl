%% A/B of two builds of the NIF's hot path in one run (scripts/nif_ab.sh):
%% two peer VMs, one per build, measured alternately (which goes first
%% alternates too). Per round, ns per operation of each workload:
%% - lock cycle: get_write_lock + write + release of a fresh key;
%% - dirty_read of one hot key, of a missing key, of random keys of a hot
%%   set of 1,024 leases (one reader, and two at once), and of random keys
%%   among 100,000 leases (one and two readers);
%% - write: replacing the lease of a random key among the 100,000.
%% Two readers: each does the same number of reads; the time is the wall
%% time over the reads of one reader. Prints each round, then medians,
%% minimums and the new/old ratios: on a shared machine the per-round
%% ratios show the noise.
%% main(["OldDir", "NewDir", Rounds]): each Dir holds locker/ebin and
%% locker/priv (the NIF).
-module(locker_bench_nif_ab).
-export([main/1, cycle/1, reads/1]).

-define(WORKLOADS, [
    {cycle, "lock cycle (get_write_lock+write+release)"},
    {hit, "dirty_read of one hot key"},
    {miss, "dirty_read miss"},
    {hot, "dirty_read hot set (1,024 keys)"},
    {hot2, "dirty_read hot set, 2 readers"},
    {random, "dirty_read random of 100k leases"},
    {random2, "dirty_read random of 100k, 2 readers"},
    {write, "write (replace a lease of 100k)"}
]).

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
               R1 = erpc:call(First, ?MODULE, reads, [200000], infinity), R2 = erpc:call(Second, ?MODULE, reads, [200000], infinity),
               {A, B, RA, RB} = case First of NA -> {C1, C2, R1, R2}; NB -> {C2, C1, R2, R1} end,
               Old1 = RA#{cycle => A}, New1 = RB#{cycle => B},
               io:format("round ~b:~s~n", [R, [io_lib:format(" ~s ~b/~b", [W, round(maps:get(W, Old1)), round(maps:get(W, New1))]) || {W, _} <- ?WORKLOADS]]),
               {Old1, New1}
           end || R <- lists:seq(1, Rounds)],
    Med = fun(L) -> lists:nth((length(L) + 1) div 2, lists:sort(L)) end,
    io:format("~nns per operation, old/new per round above; new/old below~n"),
    [begin
         Os = [maps:get(W, O) || {O, _} <- Res],
         Ns = [maps:get(W, N) || {_, N} <- Res],
         io:format("~-40s median old ~7.1f new ~7.1f new/old ~.3f; min old ~7.1f new ~7.1f new/old ~.3f (rounds ~s)~n",
                   [Name, Med(Os), Med(Ns), Med(Ns) / Med(Os), lists:min(Os), lists:min(Ns), lists:min(Ns) / lists:min(Os),
                    string:join([io_lib:format("~.2f", [maps:get(W, N) / maps:get(W, O)]) || {O, N} <- Res], " ")])
     end || {W, Name} <- ?WORKLOADS],
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

%% ns per operation of each read workload and of writes.
reads(N) ->
    ok = locker_nif:clear(),
    Me = self(),
    K = <<7:128>>, T = make_ref(),
    ok = locker_nif:get_write_lock(K, not_found, T),
    {ok, _} = locker_nif:write(T, K, Me, 600000),
    [{ok, _} = locker_nif:write(t, <<I:128>>, Me, 600000) || I <- lists:seq(1000, 100999)],
    rand:seed(exsss, {4, 5, 6}),
    Hot = list_to_tuple([<<(999 + rand:uniform(1024)):128>> || _ <- lists:seq(1, 65536)]),
    Random = list_to_tuple([<<(999 + rand:uniform(100000)):128>> || _ <- lists:seq(1, 65536)]),
    #{hit => time(N, K), miss => time(N, <<8:128>>),
      hot => keys(N, Hot, 1), hot2 => keys(N, Hot, 2),
      random => keys(N, Random, 1), random2 => keys(N, Random, 2),
      write => writes(N div 2, Random)}.

time(N, K) ->
    T0 = erlang:monotonic_time(nanosecond),
    rl(N, K),
    (erlang:monotonic_time(nanosecond) - T0) / N.

rl(0, _) -> ok;
rl(I, K) -> _ = locker_nif:dirty_read(K), rl(I - 1, K).

%% Reads of the keys of `Keys' in order, by P readers at once.
keys(N, Keys, P) ->
    Parent = self(),
    Pids = [spawn_link(fun() -> receive go -> ok end, hl(N, Keys, I * 7919), Parent ! {done, self()} end) || I <- lists:seq(1, P)],
    T0 = erlang:monotonic_time(nanosecond),
    [Pid ! go || Pid <- Pids],
    [receive {done, Pid} -> ok end || Pid <- Pids],
    (erlang:monotonic_time(nanosecond) - T0) / N.

hl(0, _, _) -> ok;
hl(I, Keys, Off) -> _ = locker_nif:dirty_read(element(((I + Off) band 65535) + 1, Keys)), hl(I - 1, Keys, Off).

writes(N, Keys) ->
    Me = self(),
    T0 = erlang:monotonic_time(nanosecond),
    wl(N, Keys, Me),
    (erlang:monotonic_time(nanosecond) - T0) / N.

wl(0, _, _) -> ok;
wl(I, Keys, Me) -> {ok, _} = locker_nif:write(t, element((I band 65535) + 1, Keys), Me, 600000), wl(I - 1, Keys, Me).
