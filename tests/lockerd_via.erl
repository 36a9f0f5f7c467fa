%% The `Locker.Registry' `:via' module of elixir_locker, in Erlang, for the
%% lockerd suite: a name is a lease in locker whose value is the owner's
%% pid, so `gen_server:call({via, lockerd_via, Name}, Msg)' (what
%% `GenServer.call({:via, Locker.Registry, name}, msg)' does) reaches the
%% process holding the name, on any node, Rust client nodes included.
-module(lockerd_via).

-export([whereis_name/1, register_name/2, unregister_name/1, send/2]).

-spec whereis_name(term()) -> pid() | undefined.
whereis_name(Name) ->
    case locker:dirty_read(Name) of
        {ok, Pid} when is_pid(Pid) -> Pid;
        _ -> undefined
    end.

-spec register_name(term(), pid()) -> yes | no.
register_name(Name, Pid) ->
    case locker:lock(Name, Pid, 5000) of
        {ok, _, _, _} -> yes;
        _ -> no
    end.

-spec unregister_name(term()) -> ok.
unregister_name(Name) ->
    case whereis_name(Name) of
        undefined -> ok;
        Pid -> _ = locker:release(Name, Pid), ok
    end.

%% Exits when the name is not registered, as the `:via' contract asks.
-spec send(term(), term()) -> pid().
send(Name, Msg) ->
    case whereis_name(Name) of
        undefined -> exit({badarg, {Name, Msg}});
        Pid -> Pid ! Msg, Pid
    end.
