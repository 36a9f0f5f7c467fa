%% Locker.Registry against :global on the same three nodes (the bench node
%% itself runs hidden, so :global spans exactly those three): register +
%% unregister latency, whereis_name of a name owned on another node, and
%% how long a name takes to be freed on every node after its owner is
%% killed. Needs the Mix build (scripts/bench.sh runs `mix compile`).
-module(locker_bench_registry).
-export([run/1, reg_loop/2, whereis_loop/3, owner/1, owner_of/2, release_probe/3]).

-define(REG, 'Elixir.Locker.Registry').

run(Quick) ->
    case mix_ebin() of
        false ->
            io:format("   skipped: no Mix build of locker (run `mix compile`)~n"),
            [];
        Ebin ->
            Rounds = case Quick of true -> 300; false -> 1500 end,
            Kills = case Quick of true -> 20; false -> 100 end,
            measure(Ebin, Rounds, Kills)
    end.

mix_ebin() ->
    Dir = filename:absname("_build/mix/dev/lib/locker/ebin"),
    filelib:is_file(filename:join(Dir, "Elixir.Locker.Registry.beam")) andalso Dir.

measure(Ebin, Rounds, Kills) ->
    Names = [list_to_atom("breg" ++ integer_to_list(I) ++ "@127.0.0.1") || I <- [1, 2, 3]],
    Peers = [start(N, Ebin, Names) || N <- Names],
    [A, B, C] = Names,
    %% A full mesh before :global is timed.
    [true = rpc:call(X, net_kernel, connect_node, [Y]) || X <- Names, Y <- Names, X =/= Y],
    ok = rpc:call(A, global, sync, []),
    _ = rpc:call(A, ?MODULE, reg_loop, [locker, 50], infinity),
    _ = rpc:call(A, ?MODULE, reg_loop, [global, 50], infinity),
    Ours = locker_bench:stats(rpc:call(A, ?MODULE, reg_loop, [locker, Rounds], infinity)),
    Global = locker_bench:stats(rpc:call(A, ?MODULE, reg_loop, [global, Rounds], infinity)),
    %% whereis_name of a name owned by a process on B, read on A.
    Owner = rpc:call(B, ?MODULE, owner, [whereis_bench]),
    WOurs = locker_bench:stats(rpc:call(A, ?MODULE, whereis_loop, [locker, whereis_bench, 300], infinity)),
    WGlobal = locker_bench:stats(rpc:call(A, ?MODULE, whereis_loop, [global, whereis_bench, 300], infinity)),
    exit(Owner, kill),
    Release = locker_bench:stats([release_time(locker, B, [A, C], I) || I <- lists:seq(1, Kills)]),
    GRelease = locker_bench:stats([release_time(global, B, [A, C], I) || I <- lists:seq(1, Kills)]),
    locker_bench:stop_peers(Peers),
    [
        locker_bench:row("Registry register_name + unregister_name", us, Ours,
            {":global register + unregister", maps:get(median, Global)}, "3 masters, W = 2"),
        locker_bench:row("  :global.register_name + unregister_name", us, Global, ""),
        locker_bench:row("Registry whereis_name (owner on another node)", ns, WOurs,
            {":global.whereis_name", maps:get(median, WGlobal)}, "local NIF read"),
        locker_bench:row("  :global.whereis_name", ns, WGlobal, ""),
        locker_bench:row("name gone on the 2 other nodes after :kill", ms, Release,
            {":global", maps:get(median, GRelease)}, "keeper releases at once"),
        locker_bench:row("  :global name gone after :kill", ms, GRelease, "")
    ].

start(Name, Ebin, Masters) ->
    [Short, _] = string:split(atom_to_list(Name), "@"),
    %% The Mix build of locker (with the Elixir modules), not rebar3's.
    Paths = [Ebin | locker_bench:bench_paths() -- [filename:dirname(code:which(locker))]],
    {ok, Peer, Name} = peer:start(#{
        name => list_to_atom(Short),
        host => "127.0.0.1",
        longnames => true,
        args => ["-setcookie", atom_to_list(erlang:get_cookie()) | locker_bench:sched_args()] ++
            lists:append([["-pa", P] || P <- Paths])
    }),
    ok = rpc:call(Name, application, load, [locker]),
    ok = rpc:call(Name, application, set_env, [locker, masters, Masters]),
    ok = rpc:call(Name, application, set_env, [locker, quorum, 2]),
    {ok, _} = rpc:call(Name, application, ensure_all_started, [locker]),
    {Peer, Name}.

%% Microseconds of register_name + unregister_name, one name per round.
reg_loop(Kind, Rounds) ->
    Self = self(),
    [begin
        Name = {bench_reg, I, erlang:unique_integer()},
        {T, _} = timer:tc(fun() ->
            yes = register(Kind, Name, Self),
            _ = unregister(Kind, Name)
        end),
        T
    end || I <- lists:seq(1, Rounds)].

register(locker, Name, Pid) -> ?REG:register_name(Name, Pid);
register(global, Name, Pid) -> global:register_name(Name, Pid).

unregister(locker, Name) -> ?REG:unregister_name(Name);
unregister(global, Name) -> global:unregister_name(Name).

whereis(locker, Name) -> ?REG:whereis_name(Name);
whereis(global, Name) -> global:whereis_name(Name).

%% A process that owns `Name' in both registries and waits to be killed.
owner(Name) ->
    Parent = self(),
    Pid = spawn(fun() ->
        yes = ?REG:register_name(Name, self()),
        yes = global:register_name(Name, self()),
        Parent ! {owned, self()},
        receive never -> ok end
    end),
    receive {owned, Pid} -> Pid end.

%% A process owning `Name' in one registry, waiting to be killed.
owner_of(Kind, Name) ->
    Parent = self(),
    Pid = spawn(fun() ->
        yes = register(Kind, Name, self()),
        Parent ! {owned, self()},
        receive never -> ok end
    end),
    receive {owned, Pid} -> Pid end.

%% Per-call nanoseconds of whereis_name, batches of 1000.
whereis_loop(Kind, Name, Batches) ->
    Pid = whereis(Kind, Name),
    true = is_pid(Pid),
    [begin
        T0 = erlang:monotonic_time(nanosecond),
        whereis_n(Kind, Name, 1000),
        (erlang:monotonic_time(nanosecond) - T0) / 1000
    end || _ <- lists:seq(1, Batches)].

whereis_n(_Kind, _Name, 0) -> ok;
whereis_n(Kind, Name, N) ->
    _ = whereis(Kind, Name),
    whereis_n(Kind, Name, N - 1).

%% Kills an owner on `On' and returns the milliseconds until the name is
%% gone on every node of `Others' (each polls its own local view).
release_time(Kind, On, Others, I) ->
    Name = {release_bench, Kind, I},
    Owner = rpc:call(On, ?MODULE, owner_of, [Kind, Name]),
    Parent = self(),
    Probes = [spawn(N, ?MODULE, release_probe, [Kind, Name, Parent]) || N <- Others],
    [receive {probing, P} -> ok end || P <- Probes],
    T0 = os:system_time(microsecond),
    exit(Owner, kill),
    Ends = [receive {gone, P, T} -> T end || P <- Probes],
    (lists:max(Ends) - T0) / 1000.

release_probe(Kind, Name, Parent) ->
    wait_owned(Kind, Name),
    Parent ! {probing, self()},
    wait_gone(Kind, Name),
    Parent ! {gone, self(), os:system_time(microsecond)}.

wait_owned(Kind, Name) ->
    case is_pid(whereis(Kind, Name)) of
        true -> ok;
        false -> erlang:yield(), wait_owned(Kind, Name)
    end.

wait_gone(Kind, Name) ->
    case whereis(Kind, Name) of
        undefined -> ok;
        _ -> erlang:yield(), wait_gone(Kind, Name)
    end.
