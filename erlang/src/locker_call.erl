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
%% While batching is on, a request for a master of a configuration set
%% through epochs is sent from here when nothing is in flight from this
%% node to that master, and otherwise goes through this node's batch
%% sender ({@link locker_batch}): concurrent requests to one master then
%% travel in one message, and each reply still comes on its request's own
%% alias.
%%
%% This node votes through the NIF store directly, without a message, when
%% its `locker' server is running (as it would if the request had been
%% sent to it).
%% @end
-module(locker_call).

-export([open/1, round/3, round/4, round/5, round/6, late/1, notify_down/3, close/1, multi_call/3]).
-export_type([session/0, late/0]).

%% `[alias | A]' is the improper list OTP's own gen:call sends.
-dialyzer({no_improper_lists, send/5}).

-record(session, {
    local :: boolean(),
    %% Remote nodes still up, with this operation's monitor, or `watched'
    %% when the local server watches them for us.
    remote :: #{node() => reference() | watched},
    %% Nodes found down by an earlier round: missing in the later ones.
    down = [] :: [node()],
    %% The session's alias, on which the local server reports servers down.
    alias :: reference() | undefined,
    %% A monitor on the local server while it watches remote servers for
    %% this session: if it dies, the session monitors them itself.
    server :: reference() | undefined,
    %% The batch sender this operation uses for all its rounds, with the
    %% masters it may send batches to (see batcher/0), or none.
    batcher = none :: none | {pid(), [node()]},
    %% Masters this operation sent a request to through the sender: all
    %% its later requests to them go the same way (in order).
    sticky = [] :: [node()]
}).

-opaque session() :: #session{}.
-opaque late() :: #{reference() => node()}.

%% What a round's collection needs besides its pending requests.
-record(collect, {
    alias :: reference() | undefined,
    server :: reference() | undefined,
    deadline :: integer() | infinity,
    decided :: fun(([{node(), term()}], non_neg_integer()) -> boolean()),
    soft = none :: none | {fun(([{node(), term()}]) -> boolean()), integer()}
}).

%% @doc Starts an operation on `Nodes'.
-spec open([node()]) -> session().
open(Nodes) ->
    Self = node(),
    Server = whereis(locker) =/= undefined,
    Local = Server andalso lists:member(Self, Nodes),
    Others = lists:usort(Nodes) -- [Self],
    Watched = Server andalso Others =/= [] andalso watched_session(Others),
    case Watched of
        {true, Alias, ServerMon} ->
            %% A server known down gets the requests all the same (it may be
            %% back, and must catch up), under a monitor of this operation's
            %% own, as the original coordinator would.
            Remote = maps:from_list([
                {N,
                    case is_down(N) of
                        true -> erlang:monitor(process, {locker, N});
                        false -> watched
                    end}
             || N <- Others
            ]),
            #session{local = Local, remote = Remote, alias = Alias, server = ServerMon, batcher = batcher()};
        false ->
            Remote = maps:from_list([{N, erlang:monitor(process, {locker, N})} || N <- Others]),
            #session{local = Local, remote = Remote, batcher = batcher()}
    end.

%% Registers the session with the local server's watch, under a monitor of
%% the server (its tables die with it); false if it is not running.
watched_session(Others) ->
    case whereis(locker) of
        undefined ->
            false;
        Pid ->
            ServerMon = erlang:monitor(process, Pid),
            Alias = erlang:alias(),
            %% Register first, then read who is down (see locker_watch).
            try ets:insert(locker_inflight, {Alias, self(), Others}) of
                true -> {true, Alias, ServerMon}
            catch
                error:badarg ->
                    erlang:demonitor(ServerMon, [flush]),
                    erlang:unalias(Alias),
                    false
            end
    end.

%% Whether the local server has marked Node's server down; a table gone
%% with its server counts as down (the session then monitors Node itself).
is_down(Node) ->
    try
        ets:member(locker_down, Node)
    catch
        error:badarg -> true
    end.

%% @doc Ends an operation: drops the monitors or the registration. Never
%% fails, even if the local server (owner of the registration table) died
%% meanwhile.
-spec close(session()) -> ok.
close(#session{alias = undefined, remote = Remote}) ->
    maps:foreach(fun(_, Mref) -> erlang:demonitor(Mref, [flush]) end, Remote);
close(#session{alias = Alias, remote = Remote, server = ServerMon}) ->
    try
        ets:delete(locker_inflight, Alias)
    catch
        error:badarg -> true
    end,
    erlang:unalias(Alias),
    _ = is_reference(ServerMon) andalso erlang:demonitor(ServerMon, [flush]),
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
round(S, Nodes, Request, Timeout) ->
    {Replies, Bad, S1, #{}} = round(S, Nodes, Request, Timeout, fun(_, _) -> false end),
    {Replies, Bad, S1}.

%% @doc {@link round/4} that stops waiting as soon as
%% `Decided(RepliesSoFar, StillPending)' is true. The requests still
%% pending then are returned as `Late': their replies can be picked up
%% later with {@link late/1} (which must be called once for them).
-spec round(session(), [node()], term(), timeout(), fun(([{node(), term()}], non_neg_integer()) -> boolean())) ->
    {[{node(), term()}], [node()], session(), late()}.
round(S0, Nodes, Request, Timeout, Decided) ->
    round(S0, Nodes, Request, Timeout, Decided, none).

%% @doc {@link round/5} that, once `Enough(RepliesSoFar)' holds, waits for
%% the other nodes only until `SoftDeadline' (monotonic milliseconds):
%% how phase two of an acquisition stops waiting for a straggler once W
%% masters stored the lease and the lease has run out anyway.
-spec round(
    session(),
    [node()],
    term(),
    timeout(),
    fun(([{node(), term()}], non_neg_integer()) -> boolean()),
    none | {fun(([{node(), term()}]) -> boolean()), integer()}
) ->
    {[{node(), term()}], [node()], session(), late()}.
round(S0, Nodes, Request, Timeout, Decided, Soft) ->
    S = watch_if_server_died(S0),
    #session{local = Local0, remote = Remote0, down = Down0, alias = SAlias, server = ServerMon} = S,
    Deadline = deadline(Timeout),
    Local = Local0 andalso lists:member(node(), Nodes),
    Remote = maps:with(Nodes, Remote0),
    KnownDown = [N || N <- Down0, lists:member(N, Nodes)],
    #session{batcher = Batcher, sticky = Sticky0} = S,
    {Pending, Gates, Sticky} = send(Remote, Request, Batcher, Sticky0, true),
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
            true -> [{node(), locker_store:apply_here(Request)}];
            false -> []
        end,
    C = #collect{alias = SAlias, server = ServerMon, deadline = Deadline, decided = Decided, soft = Soft},
    {Replies, Bad, Down, Server, Late} = collect(C, Pending, Mons, Replies0, KnownDown, []),
    ok = release_gates(Gates, Batcher),
    {Remote1, ServerMon1} =
        case Server of
            alive ->
                {S#session.remote, ServerMon};
            {died, Taken} ->
                %% Nodes of the session outside this round are monitored now.
                {maps:map(
                    fun
                        (N, watched) ->
                            case Taken of
                                #{N := Mref} -> Mref;
                                #{} -> erlang:monitor(process, {locker, N})
                            end;
                        (_, Mref) ->
                            Mref
                    end,
                    S#session.remote
                ), undefined}
        end,
    {Replies, Bad, S#session{
        remote = maps:without(Down, Remote1), down = lists:usort(Down ++ Down0), server = ServerMon1, sticky = Sticky
    }, Late}.

%% @doc The replies of a round's late requests that have arrived by now;
%% later ones are dropped on arrival. A node answers in the order it was
%% asked, so after a later round to the same nodes has been answered,
%% their earlier replies are here.
-spec late(late()) -> [{node(), term()}].
late(Late) ->
    late(Late, []).

late(Late, Acc) when map_size(Late) =:= 0 ->
    Acc;
late(Late, Acc) ->
    receive
        {[alias | Alias], Reply} when is_map_key(Alias, Late) ->
            erlang:unalias(Alias),
            {Node, Rest} = maps:take(Alias, Late),
            late(Rest, [{Node, Reply} | Acc])
    after 0 ->
        maps:foreach(fun(Alias, _) -> erlang:unalias(Alias) end, Late),
        Acc
    end.

%% If the local server died since the last round, the nodes it watched
%% for this session are monitored by the session from now on.
watch_if_server_died(#session{server = undefined} = S) ->
    S;
watch_if_server_died(#session{server = ServerMon, remote = Remote} = S) ->
    receive
        {'DOWN', ServerMon, process, _, _} ->
            S#session{server = undefined, remote = monitor_watched(Remote)}
    after 0 ->
        S
    end.

monitor_watched(Remote) ->
    maps:map(
        fun
            (N, watched) -> erlang:monitor(process, {locker, N});
            (_, Mref) -> Mref
        end,
        Remote
    ).

%% @doc Sends `Request' to the nodes of `Nodes' that the session found
%% down, without waiting for an answer (dropped on arrival). For requests
%% that only clean up (dropping promises): such a node may be back, or
%% may only have been cut off for a moment.
-spec notify_down(session(), [node()], term()) -> ok.
notify_down(#session{down = Down, batcher = Batcher, sticky = Sticky}, Nodes, Request) ->
    To = maps:from_list([{N, none} || N <- Down, lists:member(N, Nodes), N =/= node()]),
    {Pending, [], _} = send(To, Request, Batcher, Sticky, false),
    maps:foreach(fun(Alias, _) -> erlang:unalias(Alias) end, Pending).

%% Sends `Request' to the `locker' server of each node of `To' (a map
%% from the node to its monitor) with a fresh alias per node; returns
%% `{#{Alias => {Node, Monitor}}, Gates, Sticky}'.
%%
%% With a batch sender ({@link locker_batch}), a request for a master
%% known to understand batches is sent from here, plainly, when nothing is
%% in flight to that master (this process takes the master's gate, and
%% gives it back when the round is over: `Gates'), so that a lone client
%% pays no extra hop; otherwise it goes through the sender, which sends
%% it with whatever else accumulated when the master answers. Once an
%% operation sent a master a request through the sender, its later
%% requests to that master go the same way (`Sticky'), in order.
%% `Gated' false (requests nobody waits for): no gate is taken.
send(To, _Request, _Batcher, Sticky, _Gated) when map_size(To) =:= 0 ->
    {#{}, [], Sticky};
send(To, Request, Batcher, Sticky0, Gated) ->
    {Pending, Batched, Gates, Sticky} = maps:fold(
        fun(Node, Mref, {P, B, G, St}) ->
            Alias = erlang:alias(),
            P1 = P#{Alias => {Node, Mref}},
            case route(Node, Batcher, St, Gated) of
                direct ->
                    _ = erlang:send({locker, Node}, {'$gen_call', {self(), [alias | Alias]}, Request}, [noconnect]),
                    {P1, B, G, St};
                {gate, Gate} ->
                    ok = locker_batch:count_direct(),
                    _ = erlang:send({locker, Node}, {'$gen_call', {self(), [alias | Alias]}, Request}, [noconnect]),
                    {P1, B, [{Node, Gate} | G], St};
                batch ->
                    {P1, [{Node, Alias} | B], G, [Node | St -- [Node]]}
            end
        end,
        {#{}, [], [], Sticky0},
        To
    ),
    case Batched of
        [] ->
            ok;
        _ ->
            {Pid, _} = Batcher,
            case is_process_alive(Pid) of
                true ->
                    locker_batch:send(Pid, self(), Request, Batched);
                false ->
                    %% The sender is gone (it ended, or died): sent from
                    %% here, as without batching.
                    lists:foreach(
                        fun({Node, Alias}) ->
                            erlang:send({locker, Node}, {'$gen_call', {self(), [alias | Alias]}, Request}, [noconnect])
                        end,
                        Batched
                    )
            end
    end,
    {Pending, Gates, Sticky}.

%% How a request for Node goes: `direct' (not batched), `{gate, Gate}'
%% (direct, nothing was in flight: Gate taken), or `batch'.
route(_Node, none, _Sticky, _Gated) ->
    direct;
route(Node, {_, Voters}, Sticky, Gated) ->
    case lists:member(Node, Voters) of
        false ->
            direct;
        true ->
            case lists:member(Node, Sticky) of
                true ->
                    batch;
                false when not Gated ->
                    direct;
                false ->
                    case locker_batch:take_gate(Node) of
                        {ok, Gate} -> {gate, Gate};
                        busy -> batch
                    end
            end
    end.

release_gates([], _Batcher) ->
    ok;
release_gates(Gates, {Pid, _}) ->
    lists:foreach(fun({Node, Gate}) -> locker_batch:release_gate(Pid, Node, Gate) end, Gates).

%% The sender, with the masters it may send batches to: the masters of
%% this node's configuration when it was set through epochs (nodes of this
%% project: an original node must never get a request it does not know).
%% A session keeps it for all its rounds (see locker_batch).
batcher() ->
    case whereis(locker_batch) of
        undefined ->
            none;
        Pid ->
            case locker_meta:config() of
                #{mode := epoch} = Config -> {Pid, locker_meta:voters(Config)};
                _ -> none
            end
    end.

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

collect(C, Pending, Mons, Replies, Bad, Down) ->
    collect(C, Pending, Mons, Replies, Bad, Down, alive).

collect(_C, Pending, _Mons, Replies, Bad, Down, Server) when map_size(Pending) =:= 0 ->
    {Replies, Bad, Down, Server, #{}};
collect(#collect{decided = Decided} = C, Pending, Mons, Replies, Bad, Down, Server) ->
    case Decided(Replies, map_size(Pending)) of
        true ->
            Late = maps:map(fun(_, {Node, _}) -> Node end, Pending),
            {Replies, maps:values(Late) ++ Bad, Down, Server, Late};
        false ->
            wait(C, Pending, Mons, Replies, Bad, Down, Server)
    end.

wait(#collect{alias = SAlias, server = ServerMon, deadline = Deadline0, soft = Soft} = C, Pending, Mons, Replies, Bad, Down, Server) ->
    Deadline =
        case Soft of
            {Enough, SoftDeadline} ->
                case Enough(Replies) of
                    true when Deadline0 =:= infinity -> SoftDeadline;
                    true -> min(Deadline0, SoftDeadline);
                    false -> Deadline0
                end;
            none ->
                Deadline0
        end,
    receive
        {[alias | Alias], Reply} when is_map_key(Alias, Pending) ->
            erlang:unalias(Alias),
            {{Node, Mref}, Rest} = maps:take(Alias, Pending),
            collect(C, Rest, maps:remove(key(Alias, Mref), Mons), [{Node, Reply} | Replies], Bad, Down, Server);
        {'DOWN', Mref, process, _, _} when is_map_key(Mref, Mons) ->
            {Alias, Mons1} = maps:take(Mref, Mons),
            erlang:unalias(Alias),
            case maps:take(Alias, Pending) of
                {{Node, _}, Rest} ->
                    collect(C, Rest, Mons1, Replies, [Node | Bad], [Node | Down], Server);
                error ->
                    %% Its request was settled meanwhile.
                    collect(C, Pending, Mons1, Replies, Bad, Down, Server)
            end;
        {'$locker_down', SAlias, Node} when is_reference(SAlias) ->
            %% The local server saw Node's locker go down.
            case [{A, M} || {A, {N, M}} <- maps:to_list(Pending), N =:= Node] of
                [{Alias, M}] ->
                    erlang:unalias(Alias),
                    Rest = maps:remove(Alias, Pending),
                    %% A node this operation monitors itself (it was known
                    %% down when the operation began) may be reported by
                    %% both: its monitor's entry goes with its request.
                    collect(C, Rest, maps:remove(key(Alias, M), Mons), Replies, [Node | Bad], [Node | Down], Server);
                [] ->
                    %% It answered this round; later rounds skip it.
                    collect(C, Pending, Mons, Replies, Bad, [Node | Down], Server)
            end;
        {'DOWN', ServerMon, process, _, _} when is_reference(ServerMon), Server =:= alive ->
            %% The local server died: nobody will report the servers it
            %% watched for this session; monitor those still pending here.
            {Pending1, Mons1, Taken} = maps:fold(
                fun
                    (Alias, {Node, watched}, {P, M, T}) ->
                        Mref = erlang:monitor(process, {locker, Node}),
                        {P#{Alias := {Node, Mref}}, (maps:remove(Alias, M))#{Mref => Alias}, T#{Node => Mref}};
                    (_, _, Acc) ->
                        Acc
                end,
                {Pending, Mons, #{}},
                Pending
            ),
            collect(C, Pending1, Mons1, Replies, Bad, Down, {died, Taken})
    after remaining(Deadline) ->
        {Replies, give_up(Pending) ++ Bad, Down, Server, #{}}
    end.

%% Stops waiting for the pending replies: they will be dropped on arrival.
give_up(Pending) ->
    maps:fold(
        fun(Alias, {Node, _}, Acc) ->
            erlang:unalias(Alias),
            [Node | Acc]
        end,
        [],
        Pending
    ).

key(Alias, watched) -> Alias;
key(_Alias, Mref) -> Mref.
