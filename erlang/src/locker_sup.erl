%% @doc Top supervisor of the `locker' application.
%%
%% Application environment (all optional):
%% <ul>
%% <li>`start_server' (default `false' for rebar3 builds): start `locker'.</li>
%% <li>`w' (2), `lease_expire_interval' (1000), `lock_expire_interval'
%%     (1000), `push_trans_log_interval' (100).</li>
%% <li>`masters', `replicas': initial node lists (default: this node as the
%%     only master, no replicas).</li>
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
            true -> [server_spec(maps:from_list(application:get_all_env(locker)))];
            false -> []
        end,
    {ok, {#{strategy => one_for_one, intensity => 10, period => 10}, Children}}.

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
