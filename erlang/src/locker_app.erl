%% @doc The `locker' application: a supervisor that, when the application
%% environment asks for it (`{start_server, true}'), starts the `locker'
%% server with the configured quorum and intervals. Erlang users of the
%% original library keep starting it themselves with
%% {@link locker:start_link/1}.
%% @end
-module(locker_app).
-behaviour(application).

-export([start/2, stop/1]).

start(_Type, _Args) ->
    locker_sup:start_link().

stop(_State) ->
    ok.
