%% @doc The `locker' application: a supervisor that, when the application
%% environment asks for it (`{start_server, true}'), starts the `locker'
%% server with the configured quorum and intervals. Erlang users of the
%% original library keep starting it themselves with
%% {@link locker:start_link/1}.
%%
%% The application environment is checked first ({@link locker_config}):
%% with a bad key the application does not start, and says why, one line
%% per bad key (`{bad_config, Messages}', each also logged as an error).
%% @end
-module(locker_app).
-behaviour(application).

-export([start/2, stop/1]).

start(_Type, _Args) ->
    case locker_config:check_env() of
        ok ->
            locker_sup:start_link();
        {error, Problems} ->
            Messages = locker_config:messages(Problems),
            [logger:error("~ts", [M]) || M <- Messages],
            {error, {bad_config, Messages}}
    end.

stop(_State) ->
    ok.
