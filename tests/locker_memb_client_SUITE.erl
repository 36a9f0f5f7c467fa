%% Configuration epochs beyond the BEAM coordinator, across real nodes:
%% the Rust client (`native/locker_client`, driven through the example
%% `client_cli`) as an epoch coordinator against BEAM masters and
%% lockerd, and lockerd asking its masters for a configuration it missed.
%%
%% Each case FAILS when the defence does not hold: the client keeps an
%% old view (its votes untagged or under an old epoch and still counted),
%% two holders of a key at once, lockerd staying at an old epoch.
%%
%% Peers are named `mbc_<name>_<unique integer>'.
-module(locker_memb_client_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, suite/0, init_per_suite/1, end_per_suite/1, init_per_testcase/2, end_per_testcase/2]).
-export([
    lockerd_pulls_a_missed_configuration/1,
    client_learns_and_follows_a_change_while_holding/1,
    client_with_old_view_catches_up/1,
    old_view_client_cannot_be_a_second_holder/1,
    client_with_a_lockerd_master_through_a_change/1,
    client_contends_through_changes/1
]).

-define(LONG_LEASE, 60000).

all() ->
    [
        lockerd_pulls_a_missed_configuration,
        client_learns_and_follows_a_change_while_holding,
        client_with_old_view_catches_up,
        old_view_client_cannot_be_a_second_holder,
        client_with_a_lockerd_master_through_a_change,
        client_contends_through_changes
    ].

suite() ->
    [{timetrap, {minutes, 5}}].

init_per_suite(Config) ->
    ok = locker_ct:ensure_distributed(),
    #{lockerd := Lockerd} = locker_ct:lockerd_binaries(),
    Cli = filename:join(filename:dirname(Lockerd), "examples/client_cli"),
    true = filelib:is_regular(Cli),
    [{lockerd, Lockerd}, {cli, Cli} | Config].

end_per_suite(_Config) ->
    ok.

init_per_testcase(_Case, Config) ->
    [{cleanup, ets:new(mbc_cleanup, [public, bag])} | Config].

end_per_testcase(_Case, Config) ->
    T = ?config(cleanup, Config),
    [catch port_close(P) || {port, P} <- ets:lookup(T, port)],
    [os:cmd("kill -9 " ++ P) || {os_pid, P} <- ets:lookup(T, os_pid)],
    [catch peer:stop(P) || {peer, P} <- ets:lookup(T, peer)],
    ets:delete(T),
    ok.

%%--------------------------------------------------------------------
%% Cases
%%--------------------------------------------------------------------

%% lockerd is a master of {A, B, L} (W 2) and misses a configuration that
%% A and B took (installed by hand, as a change whose install to lockerd
%% was lost). A's coordinator locks under the new epoch: lockerd refuses
%% it as made under a newer epoch than its own, asks its masters, and
%% takes the configuration a quorum of them reports. Before that, while
%% only A had it, lockerd must not have taken it (one master is no
%% quorum).
lockerd_pulls_a_missed_configuration(Config) ->
    [A, B] = start_peers([a, b], Config),
    L = start_lockerd(lists:sort([A, B]), Config),
    Masters = lists:sort([A, B, L]),
    ok = rpc:call(A, locker_membership, change, [Masters, [], 2]),
    {ok, #{epoch := {C, _} = E0} = Cur} = gen_server:call({locker, L}, {'$locker_config', get}),
    E1 = {C + 1, node()},
    Next = Cur#{epoch := E1},
    Install = {'$locker_config', {install, E0, Next, 0}},
    %% Only A at first: lockerd refuses A's votes, pulls, finds no quorum.
    ok = gen_server:call({locker, A}, Install),
    {error, no_quorum} = rpc:call(A, locker, lock, [k1, v, 1000]),
    {ok, #{epoch := E0}} = gen_server:call({locker, L}, {'$locker_config', get}),
    %% B too: lockerd's next pull finds a quorum of its masters at E1.
    ok = gen_server:call({locker, B}, Install),
    ok = await(
        fun() ->
            _ = rpc:call(A, locker, lock, [{k2, erlang:unique_integer()}, v, 1000]),
            {ok, #{epoch := E}} = gen_server:call({locker, L}, {'$locker_config', get}),
            E =:= E1
        end,
        100
    ),
    ct:log("lockerd took ~p from its masters (it was at ~p)", [E1, E0]),
    %% lockerd votes again: a lock that needs it (B's server stalled).
    Stall = locker_ct:stall_server(B),
    R = rpc:call(A, locker, lock, [k3, v, 1000]),
    ok = locker_ct:resume_server(Stall),
    ?assertMatch({ok, 2, _, _}, R),
    ok.

%% The client starts with the masters' names only, at epoch {0, none}: its
%% first operation is refused by masters set through epochs, it learns
%% their configuration (a quorum of its masters reports it) and succeeds.
%% It holds a key while the cluster changes {A, B, C} -> {B, C, D}; the
%% change stays joint (the lease outlives its wait). Under the joint
%% configuration the client (refused, then caught up) extends and
%% releases its lease, a BEAM rival is refused meanwhile, the change
%% completes, and the client follows it to the final configuration.
client_learns_and_follows_a_change_while_holding(Config) ->
    [A, B, C, D] = Nodes = start_peers([a, b, c, d], Config),
    ok = rpc:call(A, locker, set_nodes, [Nodes, [A, B, C], []]),
    {E0, _} = same_config(Nodes, [A, B, C], 2),
    Cli = start_client([A, B, C], Config),
    {ok, _} = cli(Cli, "token k x ~b", [?LONG_LEASE]),
    {view, E0, 2, single, _} = view(Cli),
    %% A BEAM rival cannot take it.
    {error, no_quorum} = rpc:call(D, locker, lock, [<<"k">>, y, ?LONG_LEASE, 5000]),
    %% {A, B, C} -> {B, C, D}: joint, held by the client's lease.
    {error, {joint, _}} = rpc:call(A, locker_membership, change, [[B, C, D], [], 2, #{wait => 500}]),
    [#{joint := {_, 2}, epoch := {E1, _}}] = lists:usort(configs(Nodes)),
    {ok, _} = cli(Cli, "extend k x ~b", [?LONG_LEASE]),
    {view, E1, 2, joint, _} = view(Cli),
    {ok, <<"x">>} = rpc:call(D, locker, dirty_read, [<<"k">>]),
    {error, no_quorum} = rpc:call(D, locker, lock, [<<"k">>, y, ?LONG_LEASE, 5000]),
    {error, no_quorum} = cli(Cli, "release k wrong", []),
    {ok, _} = cli(Cli, "release k x", []),
    [{error, not_found} = rpc:call(N, locker, dirty_read, [<<"k">>]) || N <- Nodes],
    %% The change completes; the client follows at its next operation.
    ok = rpc:call(B, locker_membership, change, [[B, C, D], [], 2, #{wait => 20000}]),
    {E2, _} = same_config(Nodes, [B, C, D], 2),
    {ok, _} = cli(Cli, "lock k2 x 1000", []),
    {view, E2, 2, single, Ms} = view(Cli),
    ?assertEqual(lists:sort([atom_to_binary(N) || N <- [B, C, D]]), lists:sort(Ms)),
    %% And the BEAM rival now takes the key the client gave up.
    {ok, 2, _, _} = rpc:call(D, locker, lock, [<<"k">>, y, 1000, 5000]),
    ok.

%% The client learnt the configuration, then the cluster changed twice
%% ({A, B, C} -> {A, B, C, D} W 3 -> {B, C, D} W 2) while it was idle: its
%% next operations are refused (old epoch), it asks its masters, takes the
%% newest configuration W of its own masters report, and succeeds.
client_with_old_view_catches_up(Config) ->
    [A, B, C, D] = Nodes = start_peers([a, b, c, d], Config),
    ok = rpc:call(A, locker, set_nodes, [Nodes, [A, B, C], []]),
    {E0, _} = same_config(Nodes, [A, B, C], 2),
    Cli = start_client([A, B, C], Config),
    {ok, _} = cli(Cli, "lock k1 x 1000", []),
    {view, E0, 2, single, _} = view(Cli),
    ok = rpc:call(A, locker_membership, change, [[A, B, C, D], [], 3]),
    _ = same_config(Nodes, [A, B, C, D], 3),
    ok = rpc:call(B, locker_membership, change, [[B, C, D], [], 2]),
    {E2, _} = same_config(Nodes, [B, C, D], 2),
    {ok, _} = cli(Cli, "lock k2 x 1000", []),
    {view, E2, 2, single, _} = view(Cli),
    %% Refused where it must be: a key a BEAM coordinator holds.
    {ok, 2, _, _} = rpc:call(D, locker, lock, [<<"k3">>, y, ?LONG_LEASE, 5000]),
    {error, no_quorum} = cli(Cli, "lock k3 x 1000", []),
    ok.

%% The documented limit of untagged coordinators: {A, B, C} W 2 ->
%% {B, C, D, E, F} W 3. A holder under the new configuration whose lease
%% is on D, E and F only; the client, with the old view {A, B, C}, locks
%% the key. B and C hold nothing for it: an untagged coordinator gets
%% their two votes (W_old = 2) and becomes a second holder. The client
%% tags its votes with its epoch: B and C refuse them, it catches up and
%% is refused by D, E and F.
old_view_client_cannot_be_a_second_holder(Config) ->
    [A, B, C, D, E, F] = Nodes = start_peers([a, b, c, d, e, f], Config),
    ok = rpc:call(A, locker, set_nodes, [Nodes, [A, B, C], []]),
    {E0, _} = same_config(Nodes, [A, B, C], 2),
    Cli = start_client([A, B, C], Config),
    {ok, _} = cli(Cli, "lock k0 x 1000", []),
    {view, E0, 2, single, _} = view(Cli),
    ok = rpc:call(A, locker_membership, change, [[B, C, D, E, F], [], 3]),
    {_, Epoch} = same_config(Nodes, [B, C, D, E, F], 3),
    %% Y holds k on D, E, F (the requests of a coordinator of this
    %% project under the new epoch, B and C left out).
    Tag = {'$locker_epoch', Epoch, make_ref()},
    [ok = gen_server:call({locker, N}, {get_write_lock, <<"k">>, not_found, Tag}) || N <- [D, E, F]],
    [ok = gen_server:call({locker, N}, {write, Tag, <<"k">>, <<"y">>, ?LONG_LEASE}) || N <- [D, E, F]],
    X = cli(Cli, "lock k x ~b", [?LONG_LEASE]),
    Held = [{N, rpc:call(N, locker, dirty_read, [<<"k">>])} || N <- Nodes],
    ct:log("the client with the old view: ~p; k on ~p; its view ~p", [X, Held, view(Cli)]),
    ?assertEqual({error, no_quorum}, X, "two holders: the client with the old view and Y"),
    ok.

%% The same with lockerd among the masters: {A, B, L} -> {B, L, C}, W 2.
%% The client learns the configuration (lockerd refuses its first votes
%% too and answers its question), holds a key across the change (joint,
%% then final), extends and releases it under the joint configuration on
%% the new master C that lacked it, and follows the change, which
%% completes on lockerd's report that the released lease is gone.
client_with_a_lockerd_master_through_a_change(Config) ->
    [A, B, C] = Beams = start_peers([a, b, c], Config),
    L = start_lockerd(lists:sort(Beams), Config),
    Nodes = [L | Beams],
    ok = rpc:call(A, locker_membership, change, [[A, B, L], [], 2, #{nodes => Beams}]),
    {ok, #{epoch := {E0, _}}} = gen_server:call({locker, L}, {'$locker_config', get}),
    Cli = start_client([A, B, L], Config),
    {ok, _} = cli(Cli, "token k x ~b", [?LONG_LEASE]),
    {view, E0, 2, single, _} = view(Cli),
    {ok, _, Leases, _, _, _} = gen_server:call({locker, L}, get_debug_state),
    {<<"k">>, <<"x">>, _} = lists:keyfind(<<"k">>, 1, Leases),
    {error, {joint, _}} = rpc:call(A, locker_membership, change, [[B, C, L], [], 2, #{wait => 500}]),
    {ok, #{joint := {_, 2}, epoch := {E1, _}}} = gen_server:call({locker, L}, {'$locker_config', get}),
    {ok, _} = cli(Cli, "extend k x ~b", [?LONG_LEASE]),
    {view, E1, 2, joint, _} = view(Cli),
    {ok, <<"x">>} = rpc:call(C, locker, dirty_read, [<<"k">>]),
    {error, no_quorum} = rpc:call(C, locker, lock, [<<"k">>, y, ?LONG_LEASE, 5000]),
    {ok, _} = cli(Cli, "release k x", []),
    %% The change completes once two old masters report that the leases
    %% they held at the joint epoch are gone: with A's server stalled,
    %% lockerd must be one of them (its horizon shrank with the release).
    Stall = locker_ct:stall_server(A),
    Finish = rpc:call(B, locker_membership, change, [[B, C, L], [], 2, #{wait => 20000}]),
    ok = locker_ct:resume_server(Stall),
    ?assertEqual(ok, Finish, "lockerd's horizon outlived the released lease"),
    {ok, #{joint := none, epoch := {E2, _}}} = gen_server:call({locker, L}, {'$locker_config', get}),
    {ok, _} = cli(Cli, "lock k2 x 1000", []),
    {view, E2, 2, single, Ms} = view(Cli),
    ?assertEqual(lists:sort([atom_to_binary(N) || N <- [B, C, L]]), lists:sort(Ms)),
    {ok, 2, _, _} = rpc:call(C, locker, lock, [<<"k">>, y, 1000, 5000]),
    _ = Nodes,
    ok.

%% The client and a BEAM coordinator contend for one key (lock, then
%% release at once) while the cluster changes twice ({A, B, C} -> {B, C,
%% D} -> {A, B, D}, W 2). Each success is timed on this node: the key is
%% surely held from the lock's answer to the release's call (each holder
%% works 100 ms with it); two such intervals must never overlap. Both must win the key at times, and the
%% client must end under the final configuration.
client_contends_through_changes(Config) ->
    [A, B, C, D] = Nodes = start_peers([a, b, c, d], Config),
    ok = rpc:call(A, locker, set_nodes, [Nodes, [A, B, C], []]),
    _ = same_config(Nodes, [A, B, C], 2),
    Cli = start_client([A, B, C], Config),
    Self = self(),
    Changer = spawn_link(fun() ->
        R1 = rpc:call(A, locker_membership, change, [[B, C, D], [], 2]),
        R2 = rpc:call(B, locker_membership, change, [[A, B, D], [], 2]),
        Self ! {changed, self(), [R1, R2]}
    end),
    Rival = spawn_link(fun() -> rival(Self, D, 0) end),
    {Mine, Changes} = contend(Cli, Changer, [], 0, undefined),
    Rival ! {stop, self()},
    Theirs = receive {rival_done, Hs} -> Hs after 60000 -> ct:fail(rival_hangs) end,
    {E2, _} = same_config(Nodes, [A, B, D], 2),
    {view, E2, 2, single, _} = view(Cli),
    ct:log("changes ~p; client held ~b times, the rival ~b times", [Changes, length(Mine), length(Theirs)]),
    [ok, ok] = Changes,
    ?assert(length(Mine) > 0),
    ?assert(length(Theirs) > 0),
    Overlaps = [{X, Y} || {S1, E1} = X <- Mine, {S2, E3} = Y <- Theirs, S1 < E3, S2 < E1],
    ?assertEqual([], Overlaps, "two holders of the key at once"),
    ok.

%% The client's side: lock and release until the changes are done, then
%% ten more rounds. Its holds, as {LockAnswered, ReleaseCalled}.
contend(Cli, Changer, Holds, After, Changes) when After >= 10 ->
    _ = Cli, _ = Changer,
    {Holds, Changes};
contend(Cli, Changer, Holds, After, Changes0) ->
    Changes =
        case Changes0 of
            undefined -> receive {changed, Changer, Rs} -> Rs after 0 -> undefined end;
            _ -> Changes0
        end,
    Next = case Changes of undefined -> After; _ -> After + 1 end,
    case cli(Cli, "lock c x 2000", []) of
        {ok, _} ->
            T1 = erlang:monotonic_time(),
            hold(),
            T2 = erlang:monotonic_time(),
            %% A release that fails gives the key up all the same (its
            %% lease runs out on the masters that kept it).
            _ = cli(Cli, "release c x", []),
            contend(Cli, Changer, [{T1, T2} | Holds], Next, Changes);
        {error, no_quorum} ->
            contend(Cli, Changer, Holds, Next, Changes)
    end.

%% The BEAM coordinator on Node: the same, until told to stop.
rival(Parent, Node, N) ->
    receive
        {stop, Parent} -> Parent ! {rival_done, rival_holds()}
    after 0 ->
        case rpc:call(Node, locker, lock, [<<"c">>, <<"y">>, 2000, 5000]) of
            {ok, _, _, _} ->
                T1 = erlang:monotonic_time(),
                hold(),
                T2 = erlang:monotonic_time(),
                _ = rpc:call(Node, locker, release, [<<"c">>, <<"y">>]),
                put(holds, [{T1, T2} | rival_holds()]);
            {error, no_quorum} ->
                ok
        end,
        rival(Parent, Node, N + 1)
    end.

%% Works while holding the key (a rival that gets it meanwhile overlaps).
hold() ->
    receive after 100 -> ok end.

rival_holds() ->
    case get(holds) of
        undefined -> [];
        Hs -> Hs
    end.

%%--------------------------------------------------------------------
%% Helpers
%%--------------------------------------------------------------------

start_peers(Names, Config) ->
    [
        begin
            {Peer, Node} = locker_ct:start_peer(unique(Name), []),
            ets:insert(?config(cleanup, Config), {peer, Peer}),
            ets:insert(?config(cleanup, Config), {os_pid, locker_ct:os_pid(Node)}),
            Node
        end
     || Name <- Names
    ].

unique(Name) ->
    list_to_atom(lists:concat(["mbc_", Name, "_", erlang:unique_integer([positive])])).

start_lockerd(Masters, Config) ->
    {{lockerd, _}, L, _} = locker_fault_SUITE:start_lockerd(
        unique(l), ?config(lockerd, Config), ?config(priv_dir, Config), Masters, 0, ?config(cleanup, Config)
    ),
    L.

%% The Rust client (client_cli) with masters `Masters' (W a majority).
start_client(Masters, Config) ->
    Name = atom_to_list(unique(cli)) ++ "@127.0.0.1",
    Args = ["--name", Name, "--cookie", atom_to_list(erlang:get_cookie()),
            "--masters", string:join([atom_to_list(M) || M <- Masters], ",")],
    Port = open_port({spawn_executable, ?config(cli, Config)}, [
        {args, Args}, {line, 8192}, binary, exit_status, stderr_to_stdout, use_stdio
    ]),
    ets:insert(?config(cleanup, Config), {port, Port}),
    {os_pid, OsPid} = erlang:port_info(Port, os_pid),
    ets:insert(?config(cleanup, Config), {os_pid, integer_to_list(OsPid)}),
    _ = line(Port, <<"client ready">>),
    Port.

%% One request to the client: its answer, as a term.
cli(Port, Fmt, Args) ->
    true = port_command(Port, [io_lib:format(Fmt, Args), $\n]),
    Reply = line(Port, <<"reply ">>),
    ct:log("client: ~s -> ~s", [io_lib:format(Fmt, Args), Reply]),
    case binary:split(Reply, <<" ">>, [global]) of
        [<<"ok">>, W, V, Cm] -> {ok, {binary_to_integer(W), binary_to_integer(V), binary_to_integer(Cm)}};
        [<<"ok">>, Token] -> {ok, binary_to_integer(Token)};
        [<<"error">>, Why] -> {error, binary_to_atom(Why)};
        [<<"view">>, Counter, _Proposer, W, Joint, Ms] ->
            {view, binary_to_integer(Counter), binary_to_integer(W), binary_to_atom(Joint),
                binary:split(Ms, <<",">>, [global])};
        Other -> {unexpected, Other}
    end.

view(Port) ->
    cli(Port, "view", []).

%% The next line starting with Prefix (other lines are the client's log),
%% without the prefix.
line(Port, Prefix) ->
    receive
        {Port, {data, {eol, Line}}} ->
            case string:prefix(Line, Prefix) of
                nomatch ->
                    ct:log("client log: ~s", [Line]),
                    line(Port, Prefix);
                Rest ->
                    Rest
            end;
        {Port, {data, {noeol, _}}} ->
            line(Port, Prefix);
        {Port, {exit_status, S}} ->
            ct:fail({client_exited, S})
    after 60000 ->
        ct:fail({no_line_from_client, Prefix})
    end.

%% Calls Check until it returns true, at most Tries times, 100 ms apart
%% (lockerd asks its masters at most once a second).
await(_Check, 0) ->
    ct:fail(condition_not_reached);
await(Check, Tries) ->
    case Check() of
        true ->
            ok;
        false ->
            receive after 100 -> ok end,
            await(Check, Tries - 1)
    end.

configs(Nodes) ->
    [rpc:call(N, locker_membership, config, []) || N <- Nodes].

%% Every node has the same configuration, set through epochs, not joint:
%% its epoch's counter, and the epoch.
same_config(Nodes, Masters, W) ->
    [#{mode := epoch, masters := Ms, w := W, joint := none, epoch := {Counter, _} = Epoch}] =
        lists:usort(configs(Nodes)),
    ?assertEqual(lists:sort(Masters), Ms),
    {Counter, Epoch}.

