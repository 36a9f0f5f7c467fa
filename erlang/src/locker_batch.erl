%% @doc Natural batching of the coordinators' requests to remote masters
%% (the sender of this node, registered `locker_batch' while batching is
%% on).
%%
%% A coordinator ({@link locker_call}) sends a request for a master known
%% to understand batches itself, plainly, when nothing is in flight from
%% this node to that master: it takes the master's gate ({@link
%% take_gate/1}, an atomic flag) for its round, so that a lone client
%% pays nothing. Otherwise it hands the request to this process, which
%% queues it; what accumulated goes in one message,
%% `{'$locker_batch', Requests}' (at most 1024), when the request in
%% flight is answered: the reply to this process's batch comes, or the
%% coordinator holding the gate ends its round and hands the gate over
%% ({@link release_gate/3}). The master (the BEAM server,
%% {@link locker_server}, or `lockerd') decodes the whole batch before it
%% applies anything, applies the requests in order and answers
%% `{ok, Replies}' in one message; this process hands each caller its
%% reply on the caller's own alias, as if the master had answered it: the
%% coordinator's failure detection (its monitors, `'$locker_down''), its
%% timeouts and the dropping of late replies (deactivated aliases) do not
%% change.
%%
%% A batch goes only to masters known to be nodes of this project: the
%% masters of this node's configuration when it was set through epochs
%% ({@link locker_membership}); the others (original nodes) get the plain
%% requests from the coordinator itself. A master that answers a batch
%% with anything but `{ok, Replies}' (an older version that does not know
%% batches answers `{error, {unknown_request, _}}', nothing applied; a
%% batch it found malformed, `{error, bad_batch}') gets each request of
%% that batch again, plainly, on behalf of its caller, which gets the
%% master's own reply; a master that did not know batches gets plain
%% requests from then on.
%%
%% An operation uses the sender registered when it starts for all its
%% rounds (or none, if batching was off), so that a master gets an
%% operation's requests, and the operation the master's replies, in the
%% order they were sent, whatever happens to the registration meanwhile.
%%
%% The `locker' server starts this process ({@link start/1}, with the
%% `batching' application key, `true' by default) and starts another if
%% it dies. When the server dies, operations started later do not use
%% it; it still serves the operations that do, and ends once nothing was
%% queued, in flight or sent to it for 60 s.
%% @end
-module(locker_batch).

-export([start/1, enable/1, enabled/0, send/4, take_gate/1, release_gate/3, stats/0, reset_stats/0, pending/1]).
-export([count_direct/0, count_received/1, count_rejected/0]).
-export([init/2]).

-include_lib("kernel/include/logger.hrl").

-dialyzer({no_improper_lists, [plain/3, send_batch/3]}).

%% The most requests in one batch (as locker_core::protocol::MAX_BATCH).
-define(MAX_BATCH, 1024).
%% A batch not answered after this long no longer holds back the requests
%% queued behind it (its reply is still handed on if it comes).
-define(STALL_MS, 1000).
%% How long a sender whose server died still hands on replies at most.
-define(DRAIN_MS, 60000).
-define(COUNTERS, {?MODULE, counters}).
%% Counter indexes.
-define(SENT_BATCHES, 1).
-define(SENT_REQUESTS, 2).
-define(PLAIN, 3).
-define(RECEIVED_BATCHES, 4).
-define(RECEIVED_REQUESTS, 5).
-define(REJECTED, 6).
-define(DIRECT, 7).
-define(N_COUNTERS, 7).
%% A master's gate: whether something is in flight to it (from a
%% coordinator that found nothing in flight, or from the sender), and
%% whether the sender has requests waiting for it.
-define(GATE(Node), {?MODULE, gate, Node}).
-define(BUSY, 1).
-define(WAITING, 2).
%% Requests waiting for a gate that was not given back (its holder died
%% mid-round) go after this long.
-define(GATE_STALL_MS, 1000).

-record(st, {
    %% The server's monitor; undefined once it died (draining).
    server :: reference() | undefined,
    enabled :: boolean(),
    %% Requests waiting for a master's batch in flight: reversed, counted.
    queues = #{} :: #{node() => {non_neg_integer(), [entry()]}},
    %% The batch in flight to each master (its alias).
    inflight = #{} :: #{node() => reference()},
    %% Batches sent and not answered: their master, requests and stall timer.
    batches = #{} :: #{reference() => {node(), [entry()], reference()}},
    %% One long-lived monitor per master a batch went to.
    mons = #{} :: #{node() => reference()},
    monitored = #{} :: #{reference() => node()},
    %% Masters that answered a batch as an unknown request.
    plain = #{} :: #{node() => true},
    warned = {0, 0} :: {integer(), non_neg_integer()}
}).

-type entry() :: {pid(), reference(), term()}.

%% @doc Starts the sender for the calling process (the `locker' server):
%% it stops when that process does. Registered as `locker_batch' while
%% `Enabled'.
-spec start(boolean()) -> {pid(), reference()}.
start(Enabled) ->
    Server = self(),
    _ = counters(),
    proc_lib:spawn_opt(?MODULE, init, [Server, Enabled], [monitor, {message_queue_data, off_heap}]).

%% @doc Turns batching on or off on this node (at once: coordinators use
%% the sender only while it is registered).
-spec enable(boolean()) -> ok | {error, not_running}.
enable(On) when is_boolean(On) ->
    case whereis(locker) of
        undefined -> {error, not_running};
        Server -> gen_server:call(Server, {'$locker_batching', On})
    end.

%% @doc Whether coordinators on this node batch.
-spec enabled() -> boolean().
enabled() ->
    whereis(?MODULE) =/= undefined.

%% @doc Hands `Request' for the nodes of `To' (each with the caller's
%% alias on which its reply is expected) to the sender `Pid'.
-spec send(pid(), pid(), term(), [{node(), reference()}]) -> ok.
send(Pid, Caller, Request, To) ->
    Pid ! {send, Caller, Request, To},
    ok.

%% @doc Takes `Node''s gate if nothing is in flight to it (the caller then
%% sends its request itself, and gives the gate back with {@link
%% release_gate/3} when its round is over); `busy' otherwise (or before
%% the sender first sent to it): the request goes through the sender.
-spec take_gate(node()) -> {ok, atomics:atomics_ref()} | busy.
take_gate(Node) ->
    case persistent_term:get(?GATE(Node), undefined) of
        undefined ->
            busy;
        Gate ->
            case atomics:compare_exchange(Gate, ?BUSY, 0, 1) of
                ok -> {ok, Gate};
                _ -> busy
            end
    end.

%% @doc Gives back a gate taken with {@link take_gate/1}: to the sender
%% `Pid' if it has requests waiting for it (it sends them at once).
-spec release_gate(pid(), node(), atomics:atomics_ref()) -> ok.
release_gate(Pid, Node, Gate) ->
    case atomics:get(Gate, ?WAITING) of
        1 ->
            Pid ! {flush, Node},
            ok;
        _ ->
            atomics:put(Gate, ?BUSY, 0),
            %% The sender may have queued meanwhile (it checks the gate
            %% again after it marks itself waiting): one of us sends.
            case atomics:get(Gate, ?WAITING) =:= 1 andalso atomics:compare_exchange(Gate, ?BUSY, 0, 1) =:= ok of
                true -> Pid ! {flush, Node}, ok;
                false -> ok
            end
    end.

%% @doc This node's counts: batches and the requests in them sent by its
%% coordinators, requests they sent themselves because nothing was in
%% flight to the master (`direct_requests'), requests sent plainly after
%% a batch was refused, and batches and requests received by its server,
%% batches it rejected.
-spec stats() -> #{atom() => non_neg_integer()}.
stats() ->
    C = counters(),
    #{
        sent_batches => counters:get(C, ?SENT_BATCHES),
        sent_requests => counters:get(C, ?SENT_REQUESTS),
        direct_requests => counters:get(C, ?DIRECT),
        plain_requests => counters:get(C, ?PLAIN),
        received_batches => counters:get(C, ?RECEIVED_BATCHES),
        received_requests => counters:get(C, ?RECEIVED_REQUESTS),
        rejected_batches => counters:get(C, ?REJECTED)
    }.

%% @doc The sender's requests for `Node' not answered yet: `sent' in
%% batches sent and not answered, `queued' behind them or behind the gate
%% (see {@link take_gate/1}), and whether a batch is `in_flight' (holding
%% back the next one); `{error, not_running}' without a sender.
-spec pending(node()) ->
    #{in_flight := boolean(), sent := non_neg_integer(), queued := non_neg_integer()} | {error, not_running}.
pending(Node) ->
    case whereis(locker) of
        undefined ->
            {error, not_running};
        Server ->
            case gen_server:call(Server, '$locker_batcher') of
                Pid when is_pid(Pid) ->
                    Ref = erlang:monitor(process, Pid),
                    Pid ! {pending, self(), Ref, Node},
                    receive
                        {Ref, Answer} ->
                            erlang:demonitor(Ref, [flush]),
                            Answer;
                        {'DOWN', Ref, _, _, _} ->
                            {error, not_running}
                    end;
                _ ->
                    {error, not_running}
            end
    end.

%% @doc Sets the counts of {@link stats/0} to zero.
-spec reset_stats() -> ok.
reset_stats() ->
    C = counters(),
    lists:foreach(fun(I) -> counters:put(C, I, 0) end, lists:seq(1, ?N_COUNTERS)).

%% @private The server counts a batch of `N' requests it served.
-spec count_received(pos_integer()) -> ok.
count_received(N) ->
    C = counters(),
    counters:add(C, ?RECEIVED_BATCHES, 1),
    counters:add(C, ?RECEIVED_REQUESTS, N).

%% @private A coordinator counts a request it sent itself, nothing being
%% in flight to the master.
-spec count_direct() -> ok.
count_direct() ->
    counters:add(counters(), ?DIRECT, 1).

%% @private The server counts a batch it rejected.
-spec count_rejected() -> ok.
count_rejected() ->
    counters:add(counters(), ?REJECTED, 1).

counters() ->
    case persistent_term:get(?COUNTERS, undefined) of
        undefined ->
            C = counters:new(?N_COUNTERS, [write_concurrency]),
            persistent_term:put(?COUNTERS, C),
            C;
        C ->
            C
    end.

%%--------------------------------------------------------------------
%% The sender
%%--------------------------------------------------------------------

%% @private
-spec init(pid(), boolean()) -> no_return().
init(Server, Enabled) ->
    %% A hop on every remote request's way out and back: scheduled ahead
    %% of the callers (it does little per message).
    _ = process_flag(priority, high),
    Mref = erlang:monitor(process, Server),
    _ = Enabled andalso register_self(),
    loop(#st{server = Mref, enabled = Enabled}).

%% Takes the name from the sender of a server that died (which may not
%% have seen its server's end yet).
register_self() ->
    _ = catch unregister(?MODULE),
    try
        register(?MODULE, self())
    catch
        error:badarg -> false
    end.

loop(St) ->
    receive
        Msg -> loop(handle(Msg, St))
    after idle(St) ->
        %% The server died, and nothing was queued, in flight or sent here
        %% for ?DRAIN_MS: the operations that used this sender are over.
        exit(normal)
    end.

%% How long to wait for a message: forever while the server runs or
%% something is queued or in flight.
idle(#st{server = undefined, batches = B, queues = Q}) when map_size(B) =:= 0, map_size(Q) =:= 0 -> ?DRAIN_MS;
idle(_) -> infinity.

handle({send, Caller, Request, To}, St) ->
    lists:foldl(fun({Node, Alias}, Acc) -> enqueue(Node, {Caller, Alias, Request}, Acc) end, St, To);
handle({[alias | BAlias], Reply}, #st{batches = Batches} = St) when is_map_key(BAlias, Batches) ->
    erlang:unalias(BAlias),
    {{Node, Entries, Timer}, Rest} = maps:take(BAlias, Batches),
    _ = erlang:cancel_timer(Timer, [{async, true}, {info, false}]),
    %% The next batch goes (or the gate is given back) before the
    %% callers get their replies: a caller's next round finds the gate
    %% free if nothing else waits.
    St1 = next(Node, ungate(Node, BAlias, St#st{batches = Rest})),
    answered(Node, Entries, Reply, St1);
handle({timeout, _, {stall, Node, BAlias}}, St) ->
    next(Node, ungate(Node, BAlias, St));
handle({flush, Node}, St) ->
    %% A coordinator gave Node's gate to this process.
    next(Node, St);
handle({timeout, _, {gate_stall, Node}}, #st{inflight = Inflight, queues = Queues} = St) ->
    case is_map_key(Node, Queues) andalso not is_map_key(Node, Inflight) of
        true ->
            %% Still waiting for the gate: its holder died mid-round.
            atomics:put(gate(Node), ?BUSY, 1),
            next(Node, St);
        false ->
            St
    end;
handle({'DOWN', Mref, process, _, _}, #st{monitored = Monitored} = St) when is_map_key(Mref, Monitored) ->
    %% The master's server went down: its batches in flight will not be
    %% answered (their callers see the same down); what is queued goes
    %% now, to a server that may be back.
    {Node, Monitored1} = maps:take(Mref, Monitored),
    Lost = [A || {A, {N, _, _}} <- maps:to_list(St#st.batches), N =:= Node],
    lists:foreach(
        fun(A) ->
            erlang:unalias(A),
            {_, _, Timer} = maps:get(A, St#st.batches),
            erlang:cancel_timer(Timer, [{async, true}, {info, false}])
        end,
        Lost
    ),
    St1 = St#st{
        monitored = Monitored1,
        mons = maps:remove(Node, St#st.mons),
        batches = maps:without(Lost, St#st.batches),
        inflight = maps:remove(Node, St#st.inflight)
    },
    next(Node, St1);
handle({'DOWN', Mref, process, _, _}, #st{server = Mref} = St) ->
    %% The server is gone: operations started from now on do not use
    %% this sender (the next server starts its own); those that do still
    %% get their requests sent and their replies handed on.
    _ = whereis(?MODULE) =:= self() andalso (catch unregister(?MODULE)),
    St#st{server = undefined};
handle({pending, From, Ref, Node}, #st{inflight = Inflight, queues = Queues, batches = Batches} = St) ->
    Queued =
        case Queues of
            #{Node := {N, _}} -> N;
            #{} -> 0
        end,
    Sent = lists:sum([length(Es) || {N, Es, _} <- maps:values(Batches), N =:= Node]),
    From ! {Ref, #{in_flight => is_map_key(Node, Inflight), sent => Sent, queued => Queued}},
    St;
handle({enable, From, On}, St) ->
    _ =
        case On of
            true when St#st.server =/= undefined -> register_self();
            true -> false;
            false -> whereis(?MODULE) =:= self() andalso (catch unregister(?MODULE))
        end,
    From ! {self(), enabled},
    St#st{enabled = On};
handle(Msg, St) ->
    warn(St, "locker_batch: unexpected message ~0P dropped", [Msg, 20]).

%% A request for Node: sent at once if nothing is in flight to Node;
%% otherwise queued, until the sender's batch in flight is answered or the
%% coordinator that holds Node's gate gives it back.
enqueue(Node, Entry, #st{plain = Plain} = St) when is_map_key(Node, Plain) ->
    plain(Node, Entry, St),
    St;
enqueue(Node, Entry, #st{inflight = Inflight, queues = Queues} = St) when
    is_map_key(Node, Inflight); is_map_key(Node, Queues)
->
    Q =
        case Queues of
            #{Node := {N, Es}} -> {N + 1, [Entry | Es]};
            #{} -> {1, [Entry]}
        end,
    St#st{queues = Queues#{Node => Q}};
enqueue(Node, Entry, St) ->
    Gate = gate(Node),
    case atomics:compare_exchange(Gate, ?BUSY, 0, 1) of
        ok ->
            send_batch(Node, [Entry], St);
        _ ->
            %% A coordinator's request is in flight: wait for its round
            %% to end (it hands the gate over), checking once more after
            %% saying so.
            atomics:put(Gate, ?WAITING, 1),
            St1 = St#st{queues = (St#st.queues)#{Node => {1, [Entry]}}},
            case atomics:compare_exchange(Gate, ?BUSY, 0, 1) of
                ok ->
                    next(Node, St1);
                _ ->
                    erlang:start_timer(?GATE_STALL_MS, self(), {gate_stall, Node}),
                    St1
            end
    end.

%% Node's gate, made on first use (only this process makes gates).
gate(Node) ->
    case persistent_term:get(?GATE(Node), undefined) of
        undefined ->
            Gate = atomics:new(2, []),
            persistent_term:put(?GATE(Node), Gate),
            Gate;
        Gate ->
            Gate
    end.

%% The sender holds Node's gate (a reply came, a coordinator handed the
%% gate over, or a wait ran out): sends what is queued for Node (at most
%% ?MAX_BATCH), or gives the gate back.
next(Node, #st{inflight = Inflight} = St) when is_map_key(Node, Inflight) ->
    St;
next(Node, #st{queues = Queues} = St) ->
    case Queues of
        #{Node := {N, Rev}} when N =< ?MAX_BATCH ->
            atomics:put(gate(Node), ?WAITING, 0),
            send_batch(Node, lists:reverse(Rev), St#st{queues = maps:remove(Node, Queues)});
        #{Node := {N, Rev}} ->
            {Later, First} = lists:split(N - ?MAX_BATCH, Rev),
            send_batch(Node, lists:reverse(First), St#st{queues = Queues#{Node := {N - ?MAX_BATCH, Later}}});
        #{} ->
            atomics:put(gate(Node), ?BUSY, 0),
            St
    end.

send_batch(Node, Entries, #st{plain = Plain} = St) when is_map_key(Node, Plain) ->
    lists:foreach(fun(E) -> plain(Node, E, St) end, Entries),
    St;
send_batch(Node, Entries, St) ->
    St1 = monitor_node_server(Node, St),
    BAlias = erlang:alias(),
    Requests = [R || {_, _, R} <- Entries],
    _ = erlang:send({locker, Node}, {'$gen_call', {self(), [alias | BAlias]}, {'$locker_batch', Requests}}, [noconnect]),
    Timer = erlang:start_timer(?STALL_MS, self(), {stall, Node, BAlias}),
    C = counters(),
    counters:add(C, ?SENT_BATCHES, 1),
    counters:add(C, ?SENT_REQUESTS, length(Entries)),
    St1#st{
        inflight = (St1#st.inflight)#{Node => BAlias},
        batches = (St1#st.batches)#{BAlias => {Node, Entries, Timer}}
    }.

monitor_node_server(Node, #st{mons = Mons} = St) when is_map_key(Node, Mons) ->
    St;
monitor_node_server(Node, #st{mons = Mons, monitored = Monitored} = St) ->
    Mref = erlang:monitor(process, {locker, Node}),
    St#st{mons = Mons#{Node => Mref}, monitored = Monitored#{Mref => Node}}.

ungate(Node, BAlias, #st{inflight = Inflight} = St) ->
    case Inflight of
        #{Node := BAlias} -> St#st{inflight = maps:remove(Node, Inflight)};
        #{} -> St
    end.

%% Hands each caller its reply; a batch refused whole is sent again,
%% request by request, on behalf of its callers (nothing was applied).
answered(_Node, Entries, {ok, Replies}, St) when length(Replies) =:= length(Entries) ->
    lists:foreach(
        fun({{_, Alias, _}, Reply}) -> erlang:send(Alias, {[alias | Alias], Reply}) end,
        lists:zip(Entries, Replies)
    ),
    St;
answered(Node, Entries, {error, {unknown_request, _}}, St) ->
    %% An older version of this project: nothing applied.
    St1 = warn(
        St#st{plain = (St#st.plain)#{Node => true}},
        "locker_batch: ~p does not know batches: it gets plain requests from now on",
        [Node]
    ),
    lists:foreach(fun(E) -> plain(Node, E, St1) end, Entries),
    St1;
answered(Node, Entries, {error, bad_batch}, St) ->
    %% Refused whole, nothing applied: each request gets its own answer
    %% (a bad argument in one of them is answered to its caller only).
    St1 = warn(St, "locker_batch: batch of ~b refused by ~p: sent again request by request", [length(Entries), Node]),
    lists:foreach(fun(E) -> plain(Node, E, St1) end, Entries),
    St1;
answered(Node, Entries, Reply, St) ->
    %% Not known to have applied nothing: not sent again (the callers
    %% count the master as not answering).
    warn(St, "locker_batch: unexpected answer ~0P from ~p to a batch of ~b dropped", [Reply, 10, Node, length(Entries)]).

%% A request sent as the caller would have sent it: the master answers
%% the caller.
plain(Node, {Caller, Alias, Request}, _St) ->
    counters:add(counters(), ?PLAIN, 1),
    _ = erlang:send({locker, Node}, {'$gen_call', {Caller, [alias | Alias]}, Request}, [noconnect]),
    ok.

%% At most 20 warnings a second.
warn(#st{warned = {Second, Count}} = St, Format, Args) ->
    Now = erlang:monotonic_time(second),
    case Now =:= Second of
        true when Count >= 20 ->
            St#st{warned = {Second, Count + 1}};
        true ->
            ?LOG_WARNING(Format, Args),
            St#st{warned = {Second, Count + 1}};
        false ->
            ?LOG_WARNING(Format, Args),
            St#st{warned = {Now, 1}}
    end.
