%% @doc The coordinator's transport: the rounds of a two-phase write sent
%% to the `locker' servers of a set of masters.
%%
%% Each round sends `{'$gen_call', {self(), [alias | A]}, Req}' with a
%% fresh alias per node (the tag shape of OTP's own `gen_server:call/3',
%% which every locker node answers) and waits for the replies, the news
%% that a server is down, or the timeout. Late replies go to deactivated
%% aliases and are dropped by the runtime: no middleman process, and the
%% caller's mailbox stays clean.
%%
%% Failure detection costs no message on the wire when this node runs a
%% `locker' server: the server watches the other servers with long-lived
%% monitors ({@link locker_watch}) and tells the sessions waiting on one
%% that goes down. Without a local server, a session monitors each remote
%% server once for all the rounds of its operation.
%%
%% This node votes through the NIF store directly, without a message, when
%% its `locker' server is running (as it would if the request had been
%% sent to it).
%% @end
-module(locker_call).

-export([open/1, round/3, round/4, close/1, multi_call/3]).
-export_type([session/0]).

%% `[alias | A]' is the improper list OTP's own gen:call sends.
-dialyzer({no_improper_lists, round/4}).

-record(session, {
    local :: boolean(),
    %% Remote nodes still up, with this operation's monitor, or `watched'
    %% when the local server watches them for us.
    remote :: #{node() => reference() | watched},
    %% Nodes found down by an earlier round: missing in the later ones.
    down = [] :: [node()],
    %% The session's alias, on which the local server reports servers down.
    alias :: reference() | undefined
}).

-opaque session() :: #session{}.

%% @doc Starts an operation on `Nodes'.
-spec open([node()]) -> session().
open(Nodes) ->
    Self = node(),
    Server = whereis(locker) =/= undefined,
    Local = Server andalso lists:member(Self, Nodes),
    Others = lists:usort(Nodes) -- [Self],
    case Server andalso locker_watch:active() of
        true ->
            Alias = erlang:alias(),
            %% Register first, then read who is down (see locker_watch).
            true = ets:insert(locker_inflight, {Alias, self(), Others}),
            %% A server known down gets the requests all the same (it may be
            %% back, and must catch up), under a monitor of this operation's
            %% own, as the original coordinator would.
            Remote = maps:from_list([
                {N,
                    case ets:member(locker_down, N) of
                        true -> erlang:monitor(process, {locker, N});
                        false -> watched
                    end}
             || N <- Others
            ]),
            #session{local = Local, remote = Remote, alias = Alias};
        false ->
            Remote = maps:from_list([{N, erlang:monitor(process, {locker, N})} || N <- Others]),
            #session{local = Local, remote = Remote}
    end.

%% @doc Ends an operation: drops the monitors or the registration.
-spec close(session()) -> ok.
close(#session{alias = undefined, remote = Remote}) ->
    maps:foreach(fun(_, Mref) -> erlang:demonitor(Mref, [flush]) end, Remote);
close(#session{alias = Alias, remote = Remote}) ->
    _ = ets:delete(locker_inflight, Alias),
    erlang:unalias(Alias),
    maps:foreach(fun(_, M) -> is_reference(M) andalso erlang:demonitor(M, [flush]) end, Remote),
    flush_down(Alias).

%% Drops reports that arrived after the last round (none can come later:
%% the alias is gone).
flush_down(Alias) ->
    receive
        {'$locker_down', Alias, _} -> flush_down(Alias)
    after 0 -> ok
    end.

%% @doc One round to every node of the session: see {@link round/4}.
-spec round(session(), term(), timeout()) -> {[{node(), term()}], [node()], session()}.
round(#session{remote = Remote} = S, Request, Timeout) ->
    round(S, [node() | maps:keys(Remote)], Request, Timeout).

%% @doc One round: sends `Request' to the nodes of the session that are in
%% `Nodes' and returns the replies, the nodes that did not answer, and the
%% session without the nodes found down.
-spec round(session(), [node()], term(), timeout()) -> {[{node(), term()}], [node()], session()}.
round(#session{local = Local0, remote = Remote0, down = Down0, alias = SAlias} = S, Nodes, Request, Timeout) ->
    Deadline = deadline(Timeout),
    Local = Local0 andalso lists:member(node(), Nodes),
    Remote = maps:with(Nodes, Remote0),
    KnownDown = [N || N <- Down0, lists:member(N, Nodes)],
    Pending = maps:fold(
        fun(Node, Mref, Acc) ->
            Alias = erlang:alias(),
            _ = erlang:send({locker, Node}, {'$gen_call', {self(), [alias | Alias]}, Request}, [noconnect]),
            Acc#{Alias => {Node, Mref}}
        end,
        #{},
        Remote
    ),
    Mons = maps:fold(
        fun
            (Alias, {_, watched}, Acc) -> Acc#{Alias => Alias};
            (Alias, {_, Mref}, Acc) -> Acc#{Mref => Alias}
        end,
        #{},
        Pending
    ),
    Replies0 =
        case Local of
            true -> [{node(), locker_server:handle_local(Request)}];
            false -> []
        end,
    {Replies, Bad, Down} = collect(SAlias, Pending, Mons, Deadline, Replies0, KnownDown, []),
    {Replies, Bad, S#session{remote = maps:without(Down, Remote0), down = lists:usort(Down ++ Down0)}}.

%% @doc `gen_server:multi_call(Nodes, locker, Request, Timeout)' without
%% the middleman: `{Replies, BadNodes}'.
-spec multi_call([node()], term(), timeout()) -> {[{node(), term()}], [node()]}.
multi_call(Nodes, Request, Timeout) ->
    S = open(Nodes),
    {Replies, Bad, S1} = round(S, Request, Timeout),
    ok = close(S1),
    {Replies, Bad}.

deadline(infinity) -> infinity;
deadline(T) when is_integer(T), T >= 0 -> erlang:monotonic_time(millisecond) + T.

remaining(infinity) -> infinity;
remaining(Deadline) -> max(0, Deadline - erlang:monotonic_time(millisecond)).

collect(_SAlias, Pending, _Mons, _Deadline, Replies, Bad, Down) when map_size(Pending) =:= 0 ->
    {Replies, Bad, Down};
collect(SAlias, Pending, Mons, Deadline, Replies, Bad, Down) ->
    receive
        {[alias | Alias], Reply} when is_map_key(Alias, Pending) ->
            erlang:unalias(Alias),
            {{Node, Mref}, Rest} = maps:take(Alias, Pending),
            collect(SAlias, Rest, maps:remove(key(Alias, Mref), Mons), Deadline, [{Node, Reply} | Replies], Bad, Down);
        {'DOWN', Mref, process, _, _} when is_map_key(Mref, Mons) ->
            {Alias, Mons1} = maps:take(Mref, Mons),
            erlang:unalias(Alias),
            {{Node, Mref}, Rest} = maps:take(Alias, Pending),
            collect(SAlias, Rest, Mons1, Deadline, Replies, [Node | Bad], [Node | Down]);
        {'$locker_down', SAlias, Node} when is_reference(SAlias) ->
            %% The local server saw Node's locker go down.
            case [A || {A, {N, _}} <- maps:to_list(Pending), N =:= Node] of
                [Alias] ->
                    erlang:unalias(Alias),
                    Rest = maps:remove(Alias, Pending),
                    collect(SAlias, Rest, maps:remove(Alias, Mons), Deadline, Replies, [Node | Bad], [Node | Down]);
                [] ->
                    %% It answered this round; later rounds skip it.
                    collect(SAlias, Pending, Mons, Deadline, Replies, Bad, [Node | Down])
            end
    after remaining(Deadline) ->
        Late = maps:fold(
            fun(Alias, {Node, _}, Acc) ->
                erlang:unalias(Alias),
                [Node | Acc]
            end,
            [],
            Pending
        ),
        {Replies, Late ++ Bad, Down}
    end.

key(Alias, watched) -> Alias;
key(_Alias, Mref) -> Mref.
