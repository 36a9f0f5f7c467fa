%% Mixed clusters of BEAM locker nodes (OTP `peer') and `lockerd', the Rust
%% C-node (started as OS processes with open_port), on loopback. The BEAM
%% side uses nothing but the ordinary locker API and gen_server calls: it
%% cannot tell that a node is Rust.
%%
%% lockerd is built by init_per_suite (`cargo build --release -p lockerd
%% --bins --examples', incremental). Each lockerd's output goes to a log
%% file in the case's priv_dir.
-module(lockerd_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, suite/0, init_per_suite/1, end_per_suite/1, init_per_testcase/2, end_per_testcase/2]).
-export([
    ping_and_every_request/1,
    mixed_cluster/1,
    mixed_cluster_kill_and_restart/1,
    lockerd_masters_beam_replicas/1,
    rust_client_owns_a_name/1,
    bad_input/1,
    flood_of_unknown_requests/1,
    peer_limit_and_metrics/1,
    graceful_shutdown_pushes_log/1,
    short_names/1,
    ticks_keep_idle_links_up/1,
    silent_peer_is_dropped/1
]).

-dialyzer({no_improper_lists, raw_call/3}).

all() ->
    [
        ping_and_every_request,
        mixed_cluster,
        mixed_cluster_kill_and_restart,
        lockerd_masters_beam_replicas,
        rust_client_owns_a_name,
        bad_input,
        flood_of_unknown_requests,
        peer_limit_and_metrics,
        graceful_shutdown_pushes_log,
        short_names,
        ticks_keep_idle_links_up,
        silent_peer_is_dropped
    ].

suite() ->
    [{timetrap, {seconds, 60}}].

%%--------------------------------------------------------------------
%% Setup
%%--------------------------------------------------------------------

init_per_suite(Config) ->
    ok = locker_ct:ensure_distributed(),
    #{lockerd := Bin, registry_owner := Example} = locker_ct:lockerd_binaries(),
    [{lockerd, Bin}, {example, Example} | Config].

end_per_suite(_Config) ->
    ok.

init_per_testcase(_Case, Config) ->
    locker_ct:init_cleanup(Config).

end_per_testcase(_Case, Config) ->
    locker_ct:cleanup(Config).

cookie() ->
    atom_to_list(erlang:get_cookie()).

%% A BEAM locker node (the locker server runs with default intervals).
beam(Prefix, Config) ->
    {Peer, Node} = locker_ct:start_peer(list_to_atom(locker_ct:unique(Prefix)), []),
    ets:insert(?config(cleanup, Config), {peer, Peer}),
    Node.

%% Starts lockerd as `Name'@127.0.0.1 with extra arguments; returns a map
%% with its node, OS pid, distribution port and owner process.
lockerd(Config, Name, Args) ->
    lockerd(Config, Name ++ "@127.0.0.1", Args, long).

%% `Kind': `long' (`--name', as `erl -name') or `short' (`--sname', as
%% `erl -sname').
lockerd(Config, NodeS, Args, Kind) ->
    Log = filename:join(?config(priv_dir, Config), NodeS ++ ".log"),
    Bin = ?config(lockerd, Config),
    Flag = case Kind of long -> "--name"; short -> "--sname" end,
    L = locker_ct:start_os(Bin, [Flag, NodeS, "--cookie", cookie(), "--announce", "--net-ticktime", "10" | Args], Log),
    ets:insert(?config(cleanup, Config), {os, L}),
    L#{node => list_to_atom(NodeS)}.

new_lockerd(Config, Args) ->
    lockerd(Config, locker_ct:unique("ld"), Args).

call(N, F, A) ->
    rpc:call(N, locker, F, A).

%% The leases a node reports ({Key, Value} pairs, sorted).
leases(N) ->
    {ok, _, L, _, _, _} = gen_server:call({locker, N}, get_debug_state),
    lists:sort([{K, V} || {K, V, _} <- L]).

%% Polls (on replies) until F() returns true, up to ~5 s.
until(F) -> until(F, 500).
until(F, 0) -> ct:fail({condition_never_met, F()});
until(F, N) ->
    case F() of
        true -> ok;
        _ -> timer:sleep(10), until(F, N - 1)
    end.

raw_call(Node, Tag, Request) ->
    Mref = erlang:monitor(process, {locker, Node}),
    {locker, Node} ! {'$gen_call', {self(), Tag}, Request},
    Reply =
        receive
            {Tag, R} -> R;
            {'DOWN', Mref, _, _, Reason} -> ct:fail({down, Reason})
        after 5000 -> ct:fail({no_reply, Request})
        end,
    erlang:demonitor(Mref, [flush]),
    Reply.

%%--------------------------------------------------------------------
%% Cases
%%--------------------------------------------------------------------

%% net_adm:ping, every request of the protocol with each tag shape and the
%% BEAM node's replies, rpc of locker:dirty_read and refusal of other MFAs,
%% monitors of missing names.
ping_and_every_request(Config) ->
    #{node := L} = new_lockerd(Config, []),
    pong = net_adm:ping(L),
    [L] = [N || N <- nodes(hidden), N =:= L],
    ok = gen_server:call({locker, L}, {set_nodes, [L], []}),
    Shapes = [fun() -> make_ref() end, fun() -> {make_ref(), node()} end, fun() -> [alias | alias()] end],
    lists:foreach(
        fun(Shape) ->
            T = erlang:phash2(Shape()),
            K = {raw, T},
            Expect = [
                {{get_write_lock, K, not_found, T}, ok},
                {{get_write_lock, K, not_found, other}, {error, already_locked}},
                {{release_write_lock, T}, ok},
                {{get_write_lock, K, some_value, T}, {error, not_expected_value}},
                {{get_write_lock, K, not_found, T}, ok},
                {{write, T, K, v, 60000}, ok},
                %% Phase two without a live promise does not displace a value.
                {{update, T, K, v2}, {error, no_promise}},
                {{get_write_lock, K, v, T}, ok},
                {{update, T, K, v2}, ok},
                {{get_write_lock, K, v2, T}, ok},
                {{extend_lease, T, K, v2, 60000}, ok},
                {{release, K, wrong, T}, {error, not_owner}},
                {{wait_for, K, 100}, {ok, v2}},
                {{release, K, v2, T}, ok},
                {{release, K, v2, T}, {error, not_found}},
                {{wait_for_release, K, 100}, {ok, released}},
                {{set_w, 2}, ok},
                {{set_nodes, [L], []}, ok},
                {{write, T, K, v, not_a_number}, {error, badarg}},
                {{no_such, request}, {error, {unknown_request, {no_such, request}}}},
                {42, {error, {unknown_request, 42}}},
                {{set_w, 0}, {error, {unknown_request, {set_w, 0}}}}
            ],
            [?assertEqual(Reply, raw_call(L, Shape(), Req), Req) || {Req, Reply} <- Expect],
            {ok, [], [], _, _, _} = raw_call(L, Shape(), get_debug_state)
        end,
        Shapes
    ),
    %% The manual triggers: expire_leases sweeps, push_trans_log and
    %% expire_locks are accepted (and harmless here).
    ok = gen_server:call({locker, L}, {write, t, short, v, 1}),
    timer:sleep(5),
    [{locker, L} ! M || M <- [expire_leases, expire_locks, push_trans_log]],
    {ok, [], [], _, _, _} = gen_server:call({locker, L}, get_debug_state),
    %% The timers held still and resumed, as on the BEAM server.
    ok = locker_ct:check_timer_controls(L),
    %% A waiter answered later, by a write.
    Self = self(),
    spawn_link(fun() -> Self ! {waited, gen_server:call({locker, L}, {wait_for, later, 5000})} end),
    timer:sleep(200),
    ok = gen_server:call({locker, L}, {write, t, later, 7, 60000}),
    receive {waited, {ok, 7}} -> ok after 5000 -> ct:fail(no_wakeup) end,
    %% rpc: locker:dirty_read/1 is served (what master_dirty_read uses).
    {ok, 7} = rpc:call(L, locker, dirty_read, [later]),
    {ok, 7} = erpc:call(L, locker, dirty_read, [later]),
    {error, not_found} = rpc:call(L, locker, dirty_read, [[1, 2, 3]]),
    {badrpc, {'EXIT', {undef, _}}} = rpc:call(L, os, cmd, ["touch /tmp/x"]),
    %% Monitors: a missing name answers noproc at once, not at the timeout.
    {T0, {'EXIT', {noproc, _}}} = timer:tc(fun() -> catch gen_server:call({no_such_name, L}, hello, 3000) end),
    ?assert(T0 < 1000000),
    {no_such_name, L} ! hello,
    Mref = erlang:monitor(process, {locker, L}),
    true = erlang:demonitor(Mref),
    ok.

%% 2 BEAM masters + 1 lockerd master, W = 2: the replies of the BEAM-only
%% suite, concurrent lockers, and lockerd's view of the store.
mixed_cluster(Config) ->
    A = beam("a", Config),
    B = beam("b", Config),
    LName = locker_ct:unique("ld"),
    L = list_to_atom(LName ++ "@127.0.0.1"),
    Cluster = [A, B, L],
    #{node := L} = lockerd(Config, LName, ["--masters", join(Cluster)]),
    ok = call(A, set_nodes, [Cluster, Cluster, []]),
    {Cluster1, [], 2} = call(A, get_meta, []),
    ?assertEqual(lists:sort(Cluster), Cluster1),
    Pid = self(),
    {ok, 2, 3, 3} = call(A, lock, [123, Pid]),
    [{123, Pid}] = leases(L),
    {ok, Pid} = call(B, dirty_read, [123]),
    {error, no_quorum} = call(B, lock, [123, other]),
    {ok, 2, 3, 3} = call(B, update, [123, Pid, new_value]),
    [{123, new_value}] = leases(L),
    {error, no_quorum} = call(A, update, [123, wrong_value, x]),
    ok = call(B, extend_lease, [123, new_value, 60000]),
    {error, no_quorum} = call(B, extend_lease, [123, other_owner, 2000]),
    {ok, 2, 3, 3} = call(A, release, [123, new_value]),
    [] = leases(L),
    {ok, T} = call(A, lock_with_token, [tok, Pid, 60000, 5000]),
    true = is_integer(T),
    {ok, 2, 3, 3} = call(A, release, [tok, Pid]),
    %% Concurrent coordinators on both BEAM nodes: one winner per key at
    %% most, and every node (lockerd included) agrees.
    Parent = self(),
    Keys = lists:seq(1, 40),
    [spawn(fun() -> Parent ! {K, N, call(N, lock, [K, N, 60000])} end) || K <- Keys, N <- [A, B]],
    Results = [receive {K, N, R} -> {K, N, R} after 10000 -> ct:fail(timeout) end || K <- Keys, N <- [A, B]],
    Winners = [{K, N} || {K, N, {ok, 2, _, _}} <- Results],
    ?assertEqual(length(Winners), length(lists:ukeysort(1, Winners))),
    %% Each winner is stored on at least W masters, and no master holds
    %% another value for its key (a master that promised the loser in
    %% between refuses the winner's write rather than displace it).
    LView = leases(L),
    [
        begin
            Views = [call(A, dirty_read, [K]), call(B, dirty_read, [K]), proplists:lookup(K, LView)],
            Held = [ok || V <- Views, V =:= {ok, N} orelse V =:= {K, N}],
            ?assert(length(Held) >= 2, {K, N, Views}),
            ?assertEqual([], [V || V <- Views, V =/= {ok, N}, V =/= {K, N}, V =/= none, V =/= {error, not_found}])
        end
     || {K, N} <- Winners
    ],
    ct:log("~b of ~b keys won", [length(Winners), length(Keys)]),
    ?assert(length(Winners) > 0),
    %% lockerd as a replica of the BEAM masters: it replays their
    %% transaction log (a waiter on it is woken) and release reaches it.
    ok = call(A, set_nodes, [Cluster, [A, B], [L]]),
    Parent2 = self(),
    spawn_link(fun() -> Parent2 ! {replayed, gen_server:call({locker, L}, {wait_for, replicated, 5000}, 6000)} end),
    timer:sleep(100),
    {ok, 2, 2, 2} = call(A, lock, [replicated, v, 60000]),
    receive {replayed, {ok, v}} -> ok after 5000 -> ct:fail(no_replay) end,
    {ok, v} = rpc:call(L, locker, dirty_read, [replicated]),
    {ok, 2, 2, 2} = call(A, update, [replicated, v, v2]),
    until(fun() -> rpc:call(L, locker, dirty_read, [replicated]) =:= {ok, v2} end),
    {ok, 2, 2, 3} = call(B, release, [replicated, v2]),
    {error, not_found} = rpc:call(L, locker, dirty_read, [replicated]).

%% kill -9 lockerd mid-run: the BEAM masters keep the quorum; restarted
%% (empty), it catches up through extend_lease.
mixed_cluster_kill_and_restart(Config) ->
    A = beam("a", Config),
    B = beam("b", Config),
    LName = locker_ct:unique("ld"),
    L = list_to_atom(LName ++ "@127.0.0.1"),
    Cluster = [A, B, L],
    Args = ["--masters", join(Cluster)],
    LD = lockerd(Config, LName, Args),
    ok = call(A, set_nodes, [Cluster, Cluster, []]),
    {ok, 2, 3, 3} = call(A, lock, [kept, v, 60000]),
    %% A stream of lock/release pairs while lockerd is killed.
    Parent = self(),
    Worker = spawn_link(fun() -> churn(A, Parent, 0) end),
    timer:sleep(100),
    137 = locker_ct:kill9(LD),
    timer:sleep(200),
    Worker ! stop,
    Done = receive {churned, N, Bad} -> {N, Bad} after 10000 -> ct:fail(no_churn) end,
    ct:log("lock/release pairs during the kill: ~p", [Done]),
    {_, []} = Done,
    {ok, 2, 2, 2} = call(B, lock, [during, v, 60000]),
    {ok, v} = call(A, dirty_read, [kept]),
    %% Restart with the same name: it comes back empty.
    _ = lockerd(Config, LName, Args),
    until(fun() -> lists:member(L, rpc:call(A, erlang, nodes, [hidden])) orelse net_adm:ping(L) =:= pong end),
    [] = leases(L),
    ok = call(A, extend_lease, [kept, v, 60000]),
    [{kept, v}] = leases(L),
    {ok, 2, 3, 3} = call(B, release, [kept, v]),
    {ok, 2, 3, 3} = call(A, lock, [after_restart, v]),
    [{after_restart, v}] = leases(L).

churn(A, Parent, N) ->
    receive
        stop -> Parent ! {churned, N, []}
    after 0 ->
        K = {churn, N},
        case {call(A, lock, [K, v, 60000]), call(A, release, [K, v])} of
            {{ok, 2, _, _}, {ok, 2, _, _}} -> churn(A, Parent, N + 1);
            Other -> Parent ! {churned, N, [Other]}
        end
    end.

%% Three lockerd masters, a BEAM replica: the replica coordinates, gets
%% the log (wait_for, dirty_read) and reads masters with master_dirty_read.
lockerd_masters_beam_replicas(Config) ->
    R = beam("r", Config),
    Names = [locker_ct:unique("ld") || _ <- [1, 2, 3]],
    Masters = [list_to_atom(N ++ "@127.0.0.1") || N <- Names],
    Args = ["--masters", join(Masters), "--replicas", atom_to_list(R), "--push-ms", "50"],
    [lockerd(Config, N, Args) || N <- Names],
    ok = rpc:call(R, locker, set_nodes, [[R], Masters, [R]]),
    Pid = self(),
    {ok, 2, 3, 3} = call(R, lock, [k, Pid]),
    {ok, Pid} = call(R, wait_for, [k, 5000]),
    {ok, Pid} = call(R, dirty_read, [k]),
    {ok, Pid} = call(R, master_dirty_read, [k]),
    {error, not_found} = call(R, master_dirty_read, [nope]),
    [[{k, Pid}] = leases(M) || M <- Masters],
    {ok, 2, 3, 3} = call(R, update, [k, Pid, v2]),
    until(fun() -> call(R, dirty_read, [k]) =:= {ok, v2} end),
    %% Release reaches the replica directly: 3 masters + 1 replica commit.
    {ok, 2, 3, 4} = call(R, release, [k, v2]),
    {error, not_found} = call(R, dirty_read, [k]),
    %% A replica's wait_for_release is woken by the release.
    {ok, 2, 3, 3} = call(R, lock, [k2, v, 60000]),
    {ok, v} = call(R, wait_for, [k2, 5000]),
    Parent = self(),
    spawn_link(fun() -> Parent ! {released, call(R, wait_for_release, [k2, 5000])} end),
    timer:sleep(100),
    {ok, 2, 3, 4} = call(R, release, [k2, v]),
    receive {released, {ok, released}} -> ok after 5000 -> ct:fail(no_release_wakeup) end.

%% The Rust client example owns `worker1' in the registry; a BEAM node
%% calls it through `{via, lockerd_via, worker1}' (Locker.Registry's logic).
rust_client_owns_a_name(Config) ->
    A = beam("a", Config),
    B = beam("b", Config),
    LName = locker_ct:unique("ld"),
    L = list_to_atom(LName ++ "@127.0.0.1"),
    Cluster = [A, B, L],
    _ = lockerd(Config, LName, ["--masters", join(Cluster)]),
    ok = call(A, set_nodes, [Cluster, Cluster, []]),
    SvcS = locker_ct:unique("svc") ++ "@127.0.0.1",
    Svc = list_to_atom(SvcS),
    Log = filename:join(?config(priv_dir, Config), SvcS ++ ".log"),
    Name = list_to_atom(locker_ct:unique("worker")),
    Ex = locker_ct:start_os(?config(example, Config), ["--name", SvcS, "--cookie", cookie(), "--masters", join(Cluster),
                                             "--w", "2", "--register", atom_to_list(Name), "--lease-ms", "1500"], Log),
    ets:insert(?config(cleanup, Config), {os, Ex}),
    {ok, Owner} = call(A, dirty_read, [Name]),
    Svc = node(Owner),
    Owner = rpc:call(B, lockerd_via, send, [Name, hello]),
    pong = rpc:call(B, gen_server, call, [{via, lockerd_via, Name}, ping]),
    {echo, 42, Svc} = rpc:call(A, gen_server, call, [{via, lockerd_via, Name}, {echo, 42}]),
    {error, {unknown_request, what}} = rpc:call(A, gen_server, call, [{via, lockerd_via, Name}, what]),
    %% The project's own Elixir Locker.Registry, when elixirc is here.
    case elixir_registry(Config) of
        {ok, Paths} ->
            ok = rpc:call(B, code, add_pathsz, [Paths]),
            Owner = rpc:call(B, 'Elixir.Locker.Registry', whereis_name, [Name]),
            {echo, ex, Svc} = rpc:call(B, 'Elixir.GenServer', call, [{via, 'Elixir.Locker.Registry', Name}, {echo, ex}]);
        {skip, Why} ->
            ct:log("Elixir Locker.Registry not tried: ~p", [Why])
    end,
    %% The lease (1.5 s) is kept alive past its length.
    timer:sleep(2000),
    {ok, Owner} = call(B, dirty_read, [Name]),
    [{Name, Owner}] = [X || {Name2, _} = X <- leases(L), Name2 =:= Name],
    pong = rpc:call(B, gen_server, call, [{via, lockerd_via, Name}, ping]),
    %% Stopping releases the name.
    ok = rpc:call(A, gen_server, call, [{via, lockerd_via, Name}, stop]),
    #{owner := ExOwner} = Ex,
    receive {ExOwner, released, Line} -> ct:log("~s", [Line]) after 5000 -> ct:fail(not_released) end,
    until(fun() -> call(A, dirty_read, [Name]) =:= {error, not_found} end),
    {badrpc, {'EXIT', {badarg, {Name, x}}}} = rpc:call(A, lockerd_via, send, [Name, x]),
    ok.

%% Compiles the project's Locker.Registry (elixir/lib/locker/registry.ex)
%% alone with elixirc: its whereis_name/1 needs nothing else at run time.
elixir_registry(Config) ->
    case {os:find_executable("elixirc"), filelib:is_dir("/usr/lib/elixir/lib/elixir/ebin")} of
        {false, _} -> {skip, no_elixirc};
        {_, false} -> {skip, no_elixir_ebin};
        {Elixirc, true} ->
            Out = filename:join(?config(priv_dir, Config), "elixir_registry"),
            ok = filelib:ensure_path(Out),
            Src = filename:join(locker_ct:root(), "elixir/lib/locker/registry.ex"),
            Log = os:cmd(Elixirc ++ " --ignore-module-conflict -o " ++ Out ++ " " ++ Src ++ " 2>&1"),
            case filelib:is_regular(filename:join(Out, "Elixir.Locker.Registry.beam")) of
                true -> {ok, ["/usr/lib/elixir/lib/elixir/ebin", Out]};
                false -> {skip, {elixirc_failed, Log}}
            end
    end.

%% Wrong cookie, garbage on the port, malformed, oversized and undecodable
%% frames, bad requests and casts, unknown names: logged, never fatal, and
%% no lease is lost.
bad_input(Config) ->
    LD = new_lockerd(Config, ["--max-frame", "100000"]),
    #{node := L} = LD,
    ok = gen_server:call({locker, L}, {set_nodes, [L], []}),
    ok = gen_server:call({locker, L}, {write, t, kept, v, 60000}),
    %% Wrong cookie: refused at the handshake.
    Right = erlang:get_cookie(),
    true = erlang:disconnect_node(L),
    true = erlang:set_cookie(L, wrong_cookie),
    pang = net_adm:ping(L),
    true = erlang:set_cookie(L, Right),
    pong = net_adm:ping(L),
    %% Wrong cookie, outgoing: a lockerd with another cookie cannot reach
    %% this node (it logs the failure and keeps running).
    LName = locker_ct:unique("ldwrong"),
    Wrong = locker_ct:start_os(?config(lockerd, Config), ["--name", LName ++ "@127.0.0.1", "--cookie", "not_the_cookie",
                                                "--announce", "--masters", atom_to_list(node())],
                     filename:join(?config(priv_dir, Config), LName ++ ".log")),
    ets:insert(?config(cleanup, Config), {os, Wrong}),
    until(fun() -> {ok, T} = file:read_file(maps:get(log, Wrong)), binary:match(T, <<"wrong cookie">>) =/= nomatch end),
    false = lists:member(list_to_atom(LName ++ "@127.0.0.1"), nodes(hidden)),
    %% Garbage on the distribution port, before any handshake.
    Port = locker_ct:dist_port(LD),
    [begin
        {ok, S} = gen_tcp:connect("127.0.0.1", Port, [binary, {active, false}]),
        ok = gen_tcp:send(S, G),
        _ = gen_tcp:recv(S, 0, 500),
        gen_tcp:close(S)
     end || G <- [<<"GET / HTTP/1.0\r\n\r\n">>, crypto_bytes(3000), <<0, 5, "Nabcdefgh">>, <<255, 255>>]],
    %% After a real handshake: frames that are garbage, undecodable,
    %% malformed, for unknown names, and finally oversized (closes).
    {S1, Me} = handshake(Port, atom_to_list(L)),
    Pid = {fake_pid, Me},
    Frames = [
        <<1, 2, 3>>,
        <<112, 131, 200, 1, 2>>,
        <<112, 131, 104, 1, 97, 2>>,
        <<112, (term_to_binary({6, self(), '', locker}))/binary, 131, 104>>,
        <<112, (term_to_binary({2, '', self()}))/binary, (term_to_binary(x))/binary>>,
        <<112, (term_to_binary({6, self(), '', no_such_name}))/binary, (term_to_binary(hello))/binary>>,
        <<112, (term_to_binary({19, self(), no_such_name, make_ref()}))/binary>>,
        <<112, (term_to_binary({99, x}))/binary>>,
        <<112, (term_to_binary({6, self(), '', locker}))/binary, (term_to_binary({'$gen_cast', {trans_log, x, [garbage, {write} | improper]}}))/binary>>,
        <<112, 131, 108, 255, 255, 255, 255, 106>>,
        <<112, (term_to_binary({6, self(), '', locker}))/binary, (nested(200))/binary>>
    ],
    ct:log("fake node ~p ~p", [Me, Pid]),
    [ok = gen_tcp:send(S1, <<(byte_size(F)):32, F/binary>>) || F <- Frames],
    ok = gen_tcp:send(S1, <<200000:32, 0:8000>>),
    {error, closed} = recv_until_closed(S1),
    %% Bad requests and casts over a normal connection.
    {error, {unknown_request, {no_such, request}}} = gen_server:call({locker, L}, {no_such, request}),
    {error, badarg} = gen_server:call({locker, L}, {extend_lease, t, k, v, <<"x">>}),
    gen_server:cast({locker, L}, {no_such, cast}),
    gen_server:cast({locker, L}, {trans_log, x, not_a_list}),
    {locker, L} ! {some, random, message},
    {'EXIT', {noproc, _}} = (catch gen_server:call({rex, L}, x, 2000)),
    %% Still the same node, still serving, nothing lost.
    pong = net_adm:ping(L),
    [{kept, v}] = leases(L),
    {ok, v} = rpc:call(L, locker, dirty_read, [kept]),
    ok = gen_server:call({locker, L}, {get_write_lock, after_garbage, not_found, t2}),
    Log = maps:get(log, LD),
    %% The log lines reach the file through the port owner: poll.
    [until(fun() -> {ok, Text} = file:read_file(Log), binary:match(Text, P) =/= nomatch end)
     || P <- [<<"oversized frame">>, <<"undecodable frame">>, <<"unknown registered name">>, <<"cookie">>,
              <<"unknown request">>, <<"incoming handshake failed">>]],
    ok.

%% 100k unknown calls (1 KB each), casts and messages: every call is
%% answered, the leases stay, and lockerd's resident memory does not keep
%% what it was sent.
flood_of_unknown_requests(Config) ->
    LD = new_lockerd(Config, []),
    #{node := L, os_pid := OsPid} = LD,
    ok = gen_server:call({locker, L}, {set_nodes, [L], []}),
    ok = gen_server:call({locker, L}, {write, t, kept, v, 600000}),
    Before = rss_kb(OsPid),
    N = 100000,
    ok = locker_ct:flood_unknown(L, 1, N),
    [{kept, v}] = leases(L),
    pong = net_adm:ping(L),
    After = rss_kb(OsPid),
    ct:log("lockerd VmRSS: ~b kB before, ~b kB after ~b unknown calls, casts and messages", [Before, After, N]),
    %% The calls alone carried 100 MB; a full mailbox pauses the
    %% connection's reader (4096 signals), so lockerd holds a bounded part.
    true = After - Before < 48 * 1024,
    %% Not one log line per bad request: at most 20 a second, the rest
    %% counted in one line.
    #{log := Log} = LD,
    pong = net_adm:ping(L),
    %% The count of the flood's last second is reported by lockerd's
    %% once-a-second flush, and reaches the file through the port owner:
    %% poll for it.
    until(fun() ->
              {ok, T} = file:read_file(Log),
              re:run(T, "[0-9]+ more warnings about bad input suppressed") =/= nomatch
          end),
    {ok, Text} = file:read_file(Log),
    Lines = length(binary:matches(Text, <<"unknown request">>)),
    ct:log("~b 'unknown request' lines for ~b unknown calls", [Lines, N]),
    true = Lines < N div 10,
    ok.

rss_kb(OsPid) ->
    {ok, Status} = file:read_file("/proc/" ++ integer_to_list(OsPid) ++ "/status"),
    {match, [Kb]} = re:run(Status, "VmRSS:\\s+([0-9]+) kB", [{capture, all_but_first, list}]),
    list_to_integer(Kb).

crypto_bytes(N) -> list_to_binary([rand:uniform(256) - 1 || _ <- lists:seq(1, N)]).

%% An external term nested N tuples deep (beyond lockerd's bound).
nested(N) -> <<131, (binary:copy(<<104, 1>>, N))/binary, 106>>.

recv_until_closed(S) ->
    case gen_tcp:recv(S, 0, 5000) of
        {ok, _} -> recv_until_closed(S);
        Other -> Other
    end.

%% The distribution handshake (OTP 23+ 'N' messages) from a raw socket,
%% as a hidden node with this node's cookie. Returns the socket and the
%% fake node name.
handshake(Port, _Peer) ->
    Me = "fake_" ++ integer_to_list(erlang:unique_integer([positive])) ++ "@127.0.0.1",
    {ok, S} = gen_tcp:connect("127.0.0.1", Port, [binary, {active, false}, {packet, 2}]),
    Flags = 16#507070fbc,
    ok = gen_tcp:send(S, <<$N, Flags:64, 1:32, (length(Me)):16, (list_to_binary(Me))/binary>>),
    {ok, <<$s, "ok">>} = gen_tcp:recv(S, 0, 5000),
    {ok, <<$N, _PeerFlags:64, Challenge:32, _Creation:32, NLen:16, _Name:NLen/binary>>} = gen_tcp:recv(S, 0, 5000),
    Cookie = cookie(),
    Digest = erlang:md5(Cookie ++ integer_to_list(Challenge)),
    Mine = 12345,
    ok = gen_tcp:send(S, <<$r, Mine:32, Digest/binary>>),
    MyDigest = erlang:md5(Cookie ++ integer_to_list(Mine)),
    {ok, <<$a, MyDigest/binary>>} = gen_tcp:recv(S, 0, 5000),
    ok = inet:setopts(S, [{packet, raw}]),
    {S, Me}.

%% The peer limit refuses connections beyond it; /metrics answers.
peer_limit_and_metrics(Config) ->
    {ok, LSock} = gen_tcp:listen(0, [{ip, {127, 0, 0, 1}}]),
    {ok, MPort} = inet:port(LSock),
    gen_tcp:close(LSock),
    #{node := L} = new_lockerd(Config, ["--max-peers", "1", "--metrics", "127.0.0.1:" ++ integer_to_list(MPort)]),
    pong = net_adm:ping(L),
    ok = gen_server:call({locker, L}, {get_write_lock, m, not_found, t}),
    {error, already_locked} = gen_server:call({locker, L}, {get_write_lock, m, not_found, t2}),
    A = beam("a", Config),
    pang = rpc:call(A, net_adm, ping, [L]),
    pong = net_adm:ping(L),
    Scrape = fun() ->
        {ok, S} = gen_tcp:connect("127.0.0.1", MPort, [binary, {active, false}]),
        ok = gen_tcp:send(S, <<"GET /metrics HTTP/1.0\r\n\r\n">>),
        recv_all(S, <<>>)
    end,
    ct:log("~s", [Scrape()]),
    %% Gauges follow the store within a few milliseconds: poll.
    [until(fun() -> binary:match(Scrape(), P) =/= nomatch end) || P <- [
        <<"HTTP/1.0 200 OK">>,
        <<"locker_requests_total{kind=\"get_write_lock\"} 2">>,
        <<"locker_request_duration_seconds_bucket{le=\"+Inf\"}">>,
        <<"locker_promises 1">>,
        <<"locker_peers 1">>,
        <<"locker_rejected_connections_total 1">>
    ]],
    ok.

recv_all(S, Acc) ->
    case gen_tcp:recv(S, 0, 5000) of
        {ok, B} -> recv_all(S, <<Acc/binary, B/binary>>);
        {error, closed} -> Acc
    end.

%% SIGTERM: in-flight calls answered, the log pushed to the replica, exit 0.
graceful_shutdown_pushes_log(Config) ->
    R = beam("r", Config),
    LName = locker_ct:unique("ld"),
    L = list_to_atom(LName ++ "@127.0.0.1"),
    LD = lockerd(Config, LName, ["--masters", atom_to_list(L), "--replicas", atom_to_list(R), "--push-ms", "600000", "--w", "1"]),
    %% (W first: set_nodes keeps the node's W, and W = 2 does not fit one
    %% master.)
    ok = rpc:call(R, locker, set_w, [[R], 1]),
    ok = rpc:call(R, locker, set_nodes, [[R], [L], [R]]),
    {ok, 1, 1, 1} = call(R, lock, [pushed_at_exit, v, 60000]),
    {error, not_found} = call(R, dirty_read, [pushed_at_exit]),
    Parent = self(),
    spawn_link(fun() -> Parent ! {waited, call(R, wait_for, [pushed_at_exit, 10000])} end),
    timer:sleep(100),
    0 = locker_ct:stop_os(LD),
    receive {waited, {ok, v}} -> ok after 5000 -> ct:fail(log_not_pushed) end,
    {ok, v} = call(R, dirty_read, [pushed_at_exit]).

join(Nodes) ->
    string:join([atom_to_list(N) || N <- Nodes], ",").

%% Short names (`x@host', lockerd's `--sname' with `erl -sname'): a short-named BEAM node pings
%% lockerd, calls it, and lockerd connects back to push its log to it.
short_names(Config) ->
    {ok, Host} = inet:gethostname(),
    Short = hd(string:split(Host, ".")),
    LName = locker_ct:unique("lds"),
    Me = locker_ct:unique("sn"),
    MeNode = Me ++ "@" ++ Short,
    L = LName ++ "@" ++ Short,
    _ = lockerd(Config, LName ++ "@" ++ Short, [], short),
    Script = "L = list_to_atom(\"" ++ L ++ "\"), Me = node(), "
        "P = net_adm:ping(L), "
        "ok = gen_server:call({locker, L}, {set_nodes, [L], [Me]}), "
        "ok = gen_server:call({locker, L}, {write, t, k, v, 60000}), "
        "register(locker, self()), ok = gen_server:call({locker, L}, {set_nodes, [L], [Me]}), "
        "{locker, L} ! push_trans_log, "
        "R = receive {_, {trans_log, _, E}} -> E after 5000 -> none end, "
        "io:format(\"~p~n\", [{P, R}]), halt().",
    Erl = os:find_executable("erl"),
    Out = os:cmd(Erl ++ " -noshell -sname " ++ MeNode ++ " -setcookie " ++ cookie() ++ " -eval '" ++ Script ++ "'"),
    ct:log("~s", [Out]),
    {match, _} = re:run(Out, "\\{pong,\\[\\{write,k,v,60000\\}\\]\\}"),
    ok.

%% An idle link stays up under a short net_ticktime: a BEAM node with
%% net_ticktime 2 (controlled over stdio, not distribution) and lockerd
%% (net_ticktime 10) exchange ticks for 6 s without any other traffic.
ticks_keep_idle_links_up(Config) ->
    #{node := L, log := Log} = new_lockerd(Config, []),
    {ok, Peer, P} = peer:start(#{name => list_to_atom(locker_ct:unique("tick")), host => "127.0.0.1", longnames => true,
                                  connection => standard_io,
                                  args => ["-setcookie", cookie(), "-kernel", "net_ticktime", "2"]}),
    ets:insert(?config(cleanup, Config), {peer, Peer}),
    pong = peer:call(Peer, net_adm, ping, [L]),
    timer:sleep(6000),
    true = lists:member(L, peer:call(Peer, erlang, nodes, [hidden])),
    {ok, Text} = file:read_file(Log),
    nomatch = binary:match(Text, <<"connection closed peer=", (atom_to_binary(P))/binary>>),
    {match, _} = re:run(Text, <<"connection up peer=", (atom_to_binary(P))/binary>>),
    ok.

%% A peer that stops answering (its OS process stopped: no data, no ticks)
%% is dropped after net_ticktime (2 s here), and the connection comes back
%% once the peer runs again.
silent_peer_is_dropped(Config) ->
    NodeS = locker_ct:unique("ldsilent") ++ "@127.0.0.1",
    Log = filename:join(?config(priv_dir, Config), NodeS ++ ".log"),
    L0 = locker_ct:start_os(?config(lockerd, Config), ["--name", NodeS, "--cookie", cookie(), "--announce",
                                            "--net-ticktime", "2", "--log", "info"], Log),
    ets:insert(?config(cleanup, Config), {os, L0}),
    L = list_to_atom(NodeS),
    {ok, Peer, P} = peer:start(#{name => list_to_atom(locker_ct:unique("silent")), host => "127.0.0.1", longnames => true,
                                  connection => standard_io, args => ["-setcookie", cookie()]}),
    ets:insert(?config(cleanup, Config), {peer, Peer}),
    pong = peer:call(Peer, net_adm, ping, [L]),
    OsPid = peer:call(Peer, os, getpid, []),
    Closed = <<"connection closed peer=", (atom_to_binary(P))/binary>>,
    T0 = erlang:monotonic_time(millisecond),
    "" = os:cmd("kill -STOP " ++ OsPid),
    Line = try locker_ct:await_line(L0, Closed, 10000) after os:cmd("kill -CONT " ++ OsPid) end,
    Silent = erlang:monotonic_time(millisecond) - T0,
    ct:log("dropped after ~b ms: ~s", [Silent, Line]),
    {match, _} = re:run(Line, "no data or tick"),
    true = Silent >= 1500,
    pong = peer:call(Peer, net_adm, ping, [L]),
    ok.
