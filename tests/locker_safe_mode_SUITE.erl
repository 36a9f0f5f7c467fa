%% Safe mode across real nodes (`restart_abstain_ms', `state_dir'): a new
%% cluster serves at once; a master restarting with its record, a whole
%% cluster restarting, and a fresh node replacing a master refuse unknown
%% keys for the window and serve after it; bad values in the application
%% environment stop the start with a clear reason.
%%
%% Peers are named `sm_*'. A state directory per node lives in the case's
%% priv_dir. The windows of the restart cases are 20 s: each waits for
%% one (on polls of the node's state, not on sleeps of that length).
-module(locker_safe_mode_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, suite/0, init_per_suite/1, end_per_suite/1, init_per_testcase/2, end_per_testcase/2]).
-export([
    first_start_serves_at_once/1,
    master_restart_abstains/1,
    whole_cluster_restart_abstains/1,
    fresh_node_replacing_a_master_abstains/1,
    no_state_dir_abstains_at_every_start/1,
    bad_environment_stops_the_start/1
]).

%% Long enough that a new cluster cannot be serving because it ran out.
-define(LONG_WINDOW, 600000).
-define(WINDOW, 20000).

all() ->
    [
        first_start_serves_at_once,
        master_restart_abstains,
        whole_cluster_restart_abstains,
        fresh_node_replacing_a_master_abstains,
        no_state_dir_abstains_at_every_start,
        bad_environment_stops_the_start
    ].

suite() ->
    [{timetrap, {minutes, 3}}].

init_per_suite(Config) ->
    ok = locker_ct:ensure_distributed(),
    Config.

end_per_suite(_Config) ->
    ok.

init_per_testcase(_Case, Config) ->
    [{peers, ets:new(peers, [public, set])} | Config].

end_per_testcase(_Case, Config) ->
    T = ?config(peers, Config),
    [catch peer:stop(P) || {_, P} <- ets:tab2list(T)],
    ets:delete(T),
    ok.

%%--------------------------------------------------------------------
%% Helpers
%%--------------------------------------------------------------------

name(Prefix) ->
    list_to_atom(Prefix ++ "_" ++ integer_to_list(erlang:unique_integer([positive]))).

node_of(Name) ->
    list_to_atom(atom_to_list(Name) ++ "@127.0.0.1").

dir(Name, Config) ->
    filename:join(?config(priv_dir, Config), atom_to_list(Name)).

%% Starts peer Name with its locker server, safe mode on (Window) and its
%% own state directory.
start(Name, Window, Config) ->
    Env = [{restart_abstain_ms, Window}, {state_dir, dir(Name, Config)}],
    {Peer, Node} = locker_ct:start_peer(Name, Env),
    true = ets:insert(?config(peers, Config), {Node, Peer}),
    Node.

%% Stops a peer and waits for its nodedown.
stop(Node, Config) ->
    [{Node, Peer}] = ets:lookup(?config(peers, Config), Node),
    erlang:monitor_node(Node, true),
    ok = peer:stop(Peer),
    receive {nodedown, Node} -> ok after 10000 -> ct:fail({still_up, Node}) end,
    ets:delete(?config(peers, Config), Node).

set_nodes(Cluster) ->
    ok = rpc:call(hd(Cluster), locker, set_nodes, [Cluster, Cluster, []]).

status(Node) ->
    rpc:call(Node, locker_safe_mode, status, []).

%% Phase one on Node's server for a key nobody holds.
promise(Node) ->
    Key = {fresh, erlang:unique_integer()},
    %% Tagged with the node's own epoch, as this project's coordinators do
    %% (while a configuration is joint, masters refuse untagged votes).
    Tag =
        case rpc:call(Node, locker_meta, config, []) of
            #{mode := epoch, epoch := Epoch} -> {'$locker_epoch', Epoch, make_ref()};
            _ -> make_ref()
        end,
    case gen_server:call({locker, Node}, {get_write_lock, Key, not_found, Tag}) of
        ok ->
            ok = gen_server:call({locker, Node}, {release_write_lock, Tag}),
            ok;
        Refused ->
            Refused
    end.

%% Polls F (every 100 ms, up to 60 s) until it returns true.
await(What, F) ->
    await(What, F, 600).

await(What, _F, 0) ->
    ct:fail({never, What});
await(What, F, N) ->
    case F() of
        true -> ok;
        _ -> timer:sleep(100), await(What, F, N - 1)
    end.

await_mode(Node, Mode) ->
    await({Node, Mode}, fun() -> maps:get(mode, status(Node), none) =:= Mode end).

%% A lock on a fresh key from Node: the votes and commits it got.
lock(Node) ->
    rpc:call(Node, locker, lock, [{k, erlang:unique_integer()}, v, 60000]).

%% A cluster started for the first time, serving.
new_cluster(Config) ->
    Names = [name(P) || P <- ["sm_a", "sm_b", "sm_c"]],
    Cluster = [start(N, ?LONG_WINDOW, Config) || N <- Names],
    set_nodes(Cluster),
    [await_mode(N, lifted) || N <- Cluster],
    {Names, Cluster}.

%%--------------------------------------------------------------------
%% Cases
%%--------------------------------------------------------------------

%% No record anywhere: the masters learn from each other that the cluster
%% is new and serve at once (the window is 10 minutes), each having written
%% its record first. A restart of the server inside the VM keeps serving.
first_start_serves_at_once(Config) ->
    {Names, Cluster} = new_cluster(Config),
    [{ok, 2, 3, 3} = lock(N) || N <- Cluster, _ <- lists:seq(1, 20)],
    [{ok, [{locker_master_record, 1, #{how := new_cluster}}]} =
         file:consult(filename:join(dir(Name, Config), "locker_master_" ++ atom_to_list(node_of(Name))))
     || Name <- Names],
    [_, _, C] = Cluster,
    Pid = rpc:call(C, erlang, whereis, [locker]),
    true = rpc:call(C, erlang, exit, [Pid, kill]),
    {ok, _} = locker_ct:start_server(C, [2, 1000, 1000, 100]),
    set_nodes(Cluster),
    #{mode := lifted} = status(C),
    ok = promise(C).

%% A master restarting with its record refuses unknown keys for the
%% window, and serves after it. The lease on k2 is held by B and C only
%% (A's server was down when it was granted): without safe mode the empty
%% C and A would grant k2 to a rival.
master_restart_abstains(Config) ->
    {[_, _, CName], [A, B, C] = Cluster} = new_cluster(Config),
    ok = lock_without(A, k2, B, Cluster),
    stop(C, Config),
    C = start(CName, ?WINDOW, Config),
    set_nodes(Cluster),
    #{mode := timed, fresh := false} = status(C),
    {error, already_locked} = promise(C),
    {error, no_quorum} = rpc:call(A, locker, lock, [k2, rival]),
    %% Other keys: A and B make the quorum (C refused its vote; whether it
    %% applies the write without a promise is phase two's business).
    {ok, 2, 2, _} = lock(A),
    await(served_after_the_window, fun() -> promise(C) =:= ok end),
    {ok, 2, 3, 3} = lock(C).

%% Locks Key for v on the masters but Down, whose server is killed for
%% the time of the lock and started again (empty of Key), from From.
lock_without(Down, Key, From, Cluster) ->
    Pid = rpc:call(Down, erlang, whereis, [locker]),
    true = rpc:call(Down, erlang, exit, [Pid, kill]),
    {ok, 2, 2, 2} = rpc:call(From, locker, lock, [Key, v, 600000]),
    {ok, _} = locker_ct:start_server(Down, [2, 1000, 1000, 100]),
    set_nodes(Cluster),
    {error, not_found} = rpc:call(Down, locker, dirty_read, [Key]),
    ok.

%% Every master restarts at once, each with its record: although its
%% peers are all starting too, none serves unknown keys before its window
%% ends (holders may still believe they hold the leases lost).
whole_cluster_restart_abstains(Config) ->
    {Names, Cluster} = new_cluster(Config),
    {ok, 2, 3, 3} = lock(hd(Cluster)),
    [stop(N, Config) || N <- Cluster],
    Cluster = [start(N, ?WINDOW, Config) || N <- Names],
    set_nodes(Cluster),
    [#{mode := timed} = status(N) || N <- Cluster],
    [{error, already_locked} = promise(N) || N <- Cluster],
    {error, no_quorum} = lock(hd(Cluster)),
    await(served_after_the_window, fun() -> lists:all(fun(N) -> promise(N) =:= ok end, Cluster) end),
    [{ok, 2, 3, 3} = lock(N) || N <- Cluster].

%% A node with an empty state directory replacing a master whose state is
%% gone: for the cluster it is a restart. Its peers are serving, so it
%% abstains for the window (k2, held by B and the lost C only, is not
%% granted again), then writes its record and serves.
fresh_node_replacing_a_master_abstains(Config) ->
    {_, [A, B, C] = Cluster0} = new_cluster(Config),
    ok = lock_without(A, k2, B, Cluster0),
    stop(C, Config),
    DName = name("sm_d"),
    D = start(DName, ?WINDOW, Config),
    Cluster = [A, B, D],
    %% Replacing C by D through locker_membership waits for the leases C
    %% may hold (k2: 10 minutes) before it drops C; meanwhile the cluster
    %% is in the joint configuration (W of the old masters and W of the
    %% new ones), which is what this case runs under.
    {error, {joint, _}} = rpc:call(A, locker_membership, change, [Cluster, [], 2, #{nodes => Cluster, wait => 0}]),
    #{mode := provisional} = status(D),
    {error, already_locked} = promise(D),
    {error, no_quorum} = rpc:call(A, locker, lock, [k2, rival]),
    await_mode(D, lifted),
    ok = promise(D),
    {ok, [{locker_master_record, 1, #{how := window_end}}]} =
        file:consult(filename:join(dir(DName, Config), "locker_master_" ++ atom_to_list(D))),
    {ok, 2, 3, 3} = lock(D).

%% Without a state directory a node cannot tell a first start from a
%% restart: the window opens at its first start too (and ends).
no_state_dir_abstains_at_every_start(Config) ->
    {Peer, Node} = locker_ct:start_peer(name("sm_n"), [{restart_abstain_ms, 2000}]),
    true = ets:insert(?config(peers, Config), {Node, Peer}),
    %% (W first: set_nodes keeps the node's W, and W = 2 does not fit one
    %% master.)
    ok = rpc:call(Node, locker, set_w, [[Node], 1]),
    ok = rpc:call(Node, locker, set_nodes, [[Node], [Node], []]),
    #{mode := timed} = status(Node),
    await(served_after_the_window, fun() -> promise(Node) =:= ok end).

%% Bad values stop the server's start with {bad_app_env, Key, Value,
%% Expected} (and the application's with {bad_config, Messages}).
bad_environment_stops_the_start(Config) ->
    Args = ["-setcookie", atom_to_list(erlang:get_cookie())] ++
        lists:append([["-pa", P] || P <- locker_ct:code_paths()]),
    {ok, Peer, Node} = peer:start(#{name => name("sm_bad"), host => "127.0.0.1", longnames => true, args => Args}),
    true = ets:insert(?config(peers, Config), {Node, Peer}),
    ok = rpc:call(Node, application, load, [locker]),
    NotADir = filename:join(?config(priv_dir, Config), "a_file"),
    ok = file:write_file(NotADir, <<"x">>),
    Bad = [
        {restart_abstain_ms, -1},
        {restart_abstain_ms, 1.5},
        {restart_abstain_ms, infinity},
        {state_dir, 42},
        {state_dir, ""},
        {state_dir, [a, b]},
        {state_dir, NotADir},
        {state_dir, filename:join(NotADir, "sub")}
    ],
    lists:foreach(
        fun({K, V}) ->
            ok = rpc:call(Node, application, set_env, [locker, restart_abstain_ms, 1000]),
            ok = rpc:call(Node, application, unset_env, [locker, state_dir]),
            ok = rpc:call(Node, application, set_env, [locker, K, V]),
            {error, {bad_app_env, K, V, Expected}} = locker_ct:start_server(Node, [2, 1000, 1000, 100]),
            ct:log("~p = ~p: ~s", [K, V, Expected]),
            undefined = rpc:call(Node, erlang, whereis, [locker])
        end,
        Bad
    ),
    ok = rpc:call(Node, application, unset_env, [locker, state_dir]),
    {error, {badarg, [0, 1000, 1000, 100]}} = locker_ct:start_server(Node, [0, 1000, 1000, 100]),
    %% Through the application: it does not start, and says why (its
    %% environment is checked before anything starts: locker_config).
    ok = rpc:call(Node, application, set_env, [locker, start_server, true]),
    ok = rpc:call(Node, application, set_env, [locker, restart_abstain_ms, -1]),
    {error, {locker, {{bad_config, [Message]}, _}}} = rpc:call(Node, application, ensure_all_started, [locker]),
    {match, _} = re:run(Message, "restart_abstain_ms = -1: expected a non-negative integer"),
    ok = rpc:call(Node, application, set_env, [locker, restart_abstain_ms, 0]),
    {ok, _} = rpc:call(Node, application, ensure_all_started, [locker]),
    ?assert(is_pid(rpc:call(Node, erlang, whereis, [locker]))).
