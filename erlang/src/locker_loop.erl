%% @private The receive loop of the `locker' server: a gen_server-compatible
%% loop that no message can stop.
%%
%% OTP's gen_server decodes two kinds of message before any callback sees
%% them, and stops on malformed ones: a call or system message whose From
%% is not `{Pid, Tag}' (the reply, or sys's reply, raises outside the
%% callbacks), and `{'EXIT', Parent, Reason}' sent as a plain message (taken
%% for the parent's exit signal). This loop serves exactly what gen_server
%% serves (calls, casts, plain messages, sys's system messages, so that
%% `gen_server:call/3', `gen_server:multi_call/4', `sys:get_state/1',
%% `sys:suspend/1' and `gen_server:stop/1' work as before) and hands the
%% rest to the module's `handle_info/2' instead:
%% <ul>
%% <li>`{'$gen_call', From, Request}' and `{system, From, Request}' whose
%%     From is not `{Pid, Tag}' with a pid;</li>
%% <li>`{'EXIT', Pid, Reason}': the server does not trap exits, so a real
%%     exit signal never arrives as a message; this one was sent.</li>
%% </ul>
%% The module's callbacks return `{reply, Reply, State}' or
%% `{noreply, State}' and must not raise (`locker_server' catches what
%% they raise itself).
%%
%% The module's `init/1', started through `gen_server:start_link/4' (as
%% `locker:start_link/4' and the supervisor do), ends by calling
%% {@link enter/2}: it acknowledges the start to the caller, as gen_server
%% would, and continues in this loop with an empty stack.
%% @end
-module(locker_loop).

-export([enter/2, wake/4]).
-export([system_continue/3, system_terminate/4, system_code_change/4, system_get_state/1, system_replace_state/2]).

%% @doc Acknowledges the start (`{ok, self()}') to the process that called
%% `gen_server:start_link/4' or `gen_server:start/4', and serves `Mod'
%% with `State' from now on. Call it last in `Mod:init/1'.
-spec enter(module(), term()) -> no_return().
enter(Mod, State) ->
    Parent = parent(),
    ok = proc_lib:init_ack({ok, self()}),
    %% Drops gen_server's frames (its init_it and their try/catch): the
    %% loop runs on an empty stack, under proc_lib's crash reporting.
    proc_lib:hibernate(?MODULE, wake, [Parent, Mod, State, []]).

%% gen_server's parent: the starting process when it linked to us
%% (start_link), ourselves otherwise (start).
parent() ->
    Starter =
        case get('$ancestors') of
            [P | _] when is_pid(P) -> P;
            [Name | _] when is_atom(Name) -> whereis(Name);
            _ -> undefined
        end,
    {links, Links} = process_info(self(), links),
    case is_pid(Starter) andalso lists:member(Starter, Links) of
        true -> Starter;
        false -> self()
    end.

%% @doc Entry point after the hibernation that ends {@link enter/2}.
-spec wake(pid(), module(), term(), [sys:dbg_opt()]) -> no_return().
wake(Parent, Mod, State, Debug) ->
    loop(Parent, Mod, State, Debug).

loop(Parent, Mod, State, Debug) ->
    receive
        Msg -> handle(Msg, Parent, Mod, State, Debug)
    end.

handle({system, {Pid, _} = From, Request}, Parent, Mod, State, Debug) when is_pid(Pid) ->
    sys:handle_system_msg(Request, From, Parent, ?MODULE, Debug, {Mod, State});
handle({'$gen_call', {Pid, _} = From, Request} = Msg, Parent, Mod, State, Debug) when is_pid(Pid) ->
    Debug1 = debug(Debug, Mod, {in, Msg}),
    case Mod:handle_call(Request, From, State) of
        {reply, Reply, State1} ->
            _ = gen_server:reply(From, Reply),
            loop(Parent, Mod, State1, debug(Debug1, Mod, {out, Reply, From, State1}));
        {noreply, State1} ->
            loop(Parent, Mod, State1, Debug1)
    end;
handle({'$gen_cast', Request} = Msg, Parent, Mod, State, Debug) ->
    Debug1 = debug(Debug, Mod, {in, Msg}),
    {noreply, State1} = Mod:handle_cast(Request, State),
    loop(Parent, Mod, State1, Debug1);
handle(Msg, Parent, Mod, State, Debug) ->
    Debug1 = debug(Debug, Mod, {in, Msg}),
    {noreply, State1} = Mod:handle_info(Msg, State),
    loop(Parent, Mod, State1, Debug1).

debug([], _Mod, _Event) -> [];
debug(Debug, Mod, Event) -> sys:handle_debug(Debug, fun print_event/3, Mod, Event).

print_event(Dev, {in, Msg}, Mod) ->
    io:format(Dev, "*DBG* ~p got ~0p~n", [Mod, Msg]);
print_event(Dev, {out, Reply, {To, _}, _State}, Mod) ->
    io:format(Dev, "*DBG* ~p sent ~0p to ~p~n", [Mod, Reply, To]);
print_event(Dev, Event, Mod) ->
    io:format(Dev, "*DBG* ~p event ~0p~n", [Mod, Event]).

%%--------------------------------------------------------------------
%% sys callbacks
%%--------------------------------------------------------------------

%% @private
system_continue(Parent, Debug, {Mod, State}) ->
    loop(Parent, Mod, State, Debug).

%% @private
-spec system_terminate(term(), pid(), [sys:dbg_opt()], {module(), term()}) -> no_return().
system_terminate(Reason, _Parent, _Debug, {Mod, State}) ->
    _ = Mod:terminate(Reason, State),
    exit(Reason).

%% @private
system_code_change({Mod, State}, _Module, OldVsn, Extra) ->
    {ok, State1} = Mod:code_change(OldVsn, State, Extra),
    {ok, {Mod, State1}}.

%% @private
system_get_state({_Mod, State}) ->
    {ok, State}.

%% @private
system_replace_state(StateFun, {Mod, State}) ->
    State1 = StateFun(State),
    {ok, State1, {Mod, State1}}.
