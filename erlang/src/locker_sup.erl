%% @doc Top supervisor of the `locker' application.
%%
%% Application environment (all optional):
%% <ul>
%% <li>`start_server' (default `false' for rebar3 builds): start `locker'.</li>
%% <li>`w' (2), `lease_expire_interval' (1000), `lock_expire_interval'
%%     (1000), `push_trans_log_interval' (100).</li>
%% <li>`masters', `replicas': initial node lists (default: this node as the
%%     only master, no replicas).</li>
%% <li>`{masters, auto}' (opt-in): automatic membership, see
%%     {@link locker_auto}: the masters follow the connected nodes that run
%%     `locker' in this mode. Needs `cluster_size' (the expected number of
%%     nodes) or `w' (a minimum quorum); `leave_grace_ms' (30000) and
%%     `tick_ms' (1000) are optional. The node starts alone, with a W it
%%     cannot reach alone. A bad value stops the start with
%%     `{bad_app_env, Key, Value, Expected}'.</li>
%% <li>`groups' (opt-in): cluster mode, keys spread over quorum groups,
%%     see {@link locker_groups}; this node's configuration is then its
%%     group's (no masters when it is in none), and `masters' must not be
%%     set.</li>
%% <li>`restart_abstain_ms' (0: off), `state_dir' (none): safe mode, see
%%     {@link locker_safe_mode}. A bad value stops the server's start with
%%     `{bad_app_env, Key, Value, Expected}'.</li>
%% </ul>
%% The application checks every key first ({@link locker_config}) and does
%% not start with a bad one: `{bad_config, Messages}'.
%% @end
-module(locker_sup).
-behaviour(supervisor).

-export([start_link/0, init/1, server_spec/1]).

-spec start_link() -> supervisor:startlink_ret().
start_link() ->
    supervisor:start_link({local, ?MODULE}, ?MODULE, []).

init([]) ->
    Children =
        case application:get_env(locker, start_server, false) of
            true ->
                children(maps:from_list(application:get_all_env(locker)));
            false ->
                _ = application:get_env(locker, masters) =:= {ok, auto} andalso
                    logger:warning("locker: {masters, auto} is set but {start_server, true} is not: "
                                   "no server and no automatic membership started"),
                []
        end,
    {ok, {#{strategy => one_for_one, intensity => 10, period => 10}, Children}}.

%% The server, and in automatic mode `locker_auto' after it.
children(#{masters := auto} = Env) ->
    case locker_auto:options(Env) of
        {ok, Opts} ->
            W = locker_auto:initial_w(Opts),
            Server = server_spec(Env#{w => W}),
            #{start := {_, _, [Args, _, _]}} = Server,
            [Server#{start => {locker_auto, start_server, [Args, Opts]}}, locker_auto:child_spec(Opts)];
        {error, Reason} ->
            logger:error("locker: not started: ~0p", [Reason]),
            exit(Reason)
    end;
children(#{groups := Groups} = Env) ->
    %% Cluster mode: the table first (coordinators route by it), then the
    %% server with this node's group as its configuration.
    case locker_groups:set(Groups) of
        ok ->
            {Masters, Replicas, W} = locker_groups:own_view(Groups),
            [server_spec(Env#{masters => Masters, replicas => Replicas, w => W})];
        {error, Reason} ->
            logger:error("locker: not started: ~0p", [Reason]),
            exit(Reason)
    end;
children(Env) ->
    [server_spec(Env)].

%% @doc A child spec for the `locker' server from an options map (keys as
%% in the application environment).
-spec server_spec(map()) -> supervisor:child_spec().
server_spec(Opts) ->
    W = maps:get(w, Opts, 2),
    Args = [
        W,
        maps:get(lease_expire_interval, Opts, 1000),
        maps:get(lock_expire_interval, Opts, 1000),
        maps:get(push_trans_log_interval, Opts, 100)
    ],
    #{
        id => locker,
        start => {locker_server, start_configured, [Args, maps:get(masters, Opts, [node()]), maps:get(replicas, Opts, [])]},
        type => worker,
        shutdown => 5000,
        modules => [locker_server]
    }.
