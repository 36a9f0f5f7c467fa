%% @doc The `locker' server of one node: answers the requests of the
%% locker wire protocol, replays and pushes the transaction log, and runs
%% the expiry timers. State transitions happen in the Rust store
%% ({@link locker_nif}); this process owns the waiters and the timers.
%%
%% Unknown calls are answered `{error, {unknown_request, Request}}'; unknown
%% casts and messages are dropped; bad arguments in a known request are
%% answered `{error, badarg}'. None of them stop the server, and at most
%% 20 warnings a second are logged about them (the rest are counted).
%% @end
-module(locker_server).
-behaviour(gen_server).

-export([start_configured/3, handle_local/1]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2, code_change/3]).

-include_lib("kernel/include/logger.hrl").

%% Leases (and promises, waiters) handled per NIF call while sweeping, and
%% log entries per replay call: each call stays well under a millisecond.
-define(SWEEP_BUDGET, 1000).
-define(REPLAY_CHUNK, 2000).
-define(PUSH_CHUNK, 10000).
-define(PROMISE_TTL_MS, locker:promise_ttl_ms()).
%% Warnings about bad input logged per second; the rest are counted.
-define(WARN_BURST, 20).

-record(state, {
    waiters = #{} :: #{non_neg_integer() => gen_server:from()},
    next_id = 0 :: non_neg_integer(),
    lease_expire_ref :: timer:tref(),
    write_locks_expire_ref :: timer:tref(),
    push_trans_log_ref :: timer:tref(),
    wakeup = undefined :: undefined | {reference(), integer()},
    watch = #{} :: locker_watch:watch(),
    sweeping = false :: boolean(),
    %% The store's count of log entries dropped at its limit, last seen.
    log_dropped = 0 :: non_neg_integer(),
    %% Warnings about bad input in the current second: {Second, Count}.
    warned = {0, 0} :: {integer(), non_neg_integer()}
}).

%% @doc Starts `locker' (as {@link locker:start_link/4}) and sets this
%% node's view of the masters and replicas.
-spec start_configured([pos_integer()], [node()], [node()]) -> {ok, pid()} | {error, term()}.
start_configured(Args, Masters, Replicas) ->
    case gen_server:start_link({local, locker}, ?MODULE, Args, []) of
        {ok, Pid} ->
            ok = gen_server:call(Pid, {set_nodes, Masters, Replicas}),
            {ok, Pid};
        Error ->
            Error
    end.

init([W, LeaseExpireInterval, LockExpireInterval, PushTransInterval]) ->
    ok = locker_nif:reset_volatile(),
    %% Safe mode (off by default): a master whose VM started empty refuses
    %% promises on unknown keys for this long (the longest lease in use).
    ok = locker_nif:abstain_after_start(application:get_env(locker, restart_abstain_ms, 0)),
    _ = locker:token_counter(),
    %% A server restarted in a running VM keeps the cluster view, as it
    %% keeps the leases: coordinators on this node must not see an empty
    %% cluster (and answer no_quorum at once) until set_nodes comes again.
    {Masters, Replicas} =
        case persistent_term:get({locker, meta}, undefined) of
            {M, R, _} -> {M, R};
            undefined -> {[], []}
        end,
    Watch = locker_watch:update(Masters ++ Replicas, locker_watch:init()),
    put_meta(Masters, Replicas, W),
    {ok, LeaseRef} = timer:send_interval(LeaseExpireInterval, expire_leases),
    {ok, LockRef} = timer:send_interval(LockExpireInterval, expire_locks),
    {ok, PushRef} = timer:send_interval(PushTransInterval, push_trans_log),
    #{log_dropped := Dropped} = locker_nif:stats(),
    {ok, #state{
        log_dropped = Dropped,
        watch = Watch,
        lease_expire_ref = LeaseRef,
        write_locks_expire_ref = LockRef,
        push_trans_log_ref = PushRef
    }}.

%%--------------------------------------------------------------------
%% Calls
%%--------------------------------------------------------------------

handle_call(Request, From, State) ->
    try
        call(Request, From, State)
    catch
        error:badarg ->
            {reply, {error, badarg}, warn(State, "locker: bad arguments in ~0P", [Request, 20])}
    end.

call(Request, _From, State) when
    element(1, Request) =:= get_write_lock;
    element(1, Request) =:= release_write_lock;
    element(1, Request) =:= write;
    element(1, Request) =:= update;
    element(1, Request) =:= extend_lease;
    element(1, Request) =:= release
->
    case local(Request) of
        {{error, {unknown_request, _}} = Reply, []} ->
            {reply, Reply, warn(State, "locker: unknown request ~0P", [Request, 20])};
        {Reply, Wakes} ->
            {reply, Reply, rearm(woken(Wakes, State))}
    end;
call({wait_for, Key, Timeout}, From, #state{next_id = Id} = State) ->
    case locker_nif:wait_for(Key, Id, Timeout) of
        pending -> {noreply, add_waiter(Id, From, State)};
        Ready -> {reply, Ready, State}
    end;
call({wait_for_release, Key, Timeout}, From, #state{next_id = Id} = State) ->
    case locker_nif:wait_for_release(Key, Id, Timeout) of
        pending -> {noreply, add_waiter(Id, From, State)};
        Ready -> {reply, Ready, State}
    end;
call({set_nodes, Primaries, Replicas}, _From, #state{watch = Watch} = State) when
    is_list(Primaries), is_list(Replicas)
->
    {_, _, W} = locker:get_meta(),
    %% Watch the servers before coordinators can see them in the metadata.
    Watch1 = locker_watch:update(Primaries ++ Replicas, Watch),
    put_meta(Primaries, Replicas, W),
    {reply, ok, State#state{watch = Watch1}};
call({set_w, W}, _From, State) when is_integer(W), W > 0 ->
    {Nodes, Replicas, _} = locker:get_meta(),
    put_meta(Nodes, Replicas, W),
    {reply, ok, State};
call(get_debug_state, _From, State) ->
    {Promises, Leases} = locker_nif:debug_state(),
    #state{lease_expire_ref = R1, write_locks_expire_ref = R2, push_trans_log_ref = R3} = State,
    {reply, {ok, Promises, Leases, R1, R2, R3}, State};
call(Request, {Pid, _}, State) ->
    State1 = warn(State, "locker: unknown request ~0P from ~p", [Request, 20, Pid]),
    {reply, {error, {unknown_request, Request}}, State1}.

%% @doc Performs a coordinator's request on this node's store from the
%% coordinator's own process (no message to the server), with the reply
%% the server would give. Waiters woken by it are handed to the server.
-spec handle_local(term()) -> term().
handle_local(Request) ->
    try local(Request) of
        {Reply, []} ->
            Reply;
        {Reply, Wakes} ->
            %% No server (it is restarting): its waiters are gone with it.
            _ = whereis(locker) =/= undefined andalso (catch locker ! {locker_wakes, Wakes}),
            Reply
    catch
        error:badarg -> {error, badarg}
    end.

local({get_write_lock, Key, Expected, Tag}) ->
    {locker_nif:get_write_lock(Key, Expected, Tag), []};
local({release_write_lock, Tag}) ->
    {locker_nif:release_write_lock(Tag), []};
local({write, Tag, Key, Value, LeaseLength}) ->
    committed(locker_nif:write(Tag, Key, Value, LeaseLength));
local({update, Tag, Key, Value}) ->
    {locker_nif:update(Tag, Key, Value), []};
local({extend_lease, Tag, Key, Value, LeaseLength}) ->
    committed(locker_nif:extend_lease(Tag, Key, Value, LeaseLength));
local({release, Key, Value, Tag}) ->
    case locker_nif:release(Key, Value, Tag) of
        {ok, Wakes} -> {ok, Wakes};
        Error -> {Error, []}
    end;
local(Request) ->
    {{error, {unknown_request, Request}}, []}.

%% A phase two that the store refused (its promise is gone and applying
%% it could displace another holder) is answered `{error, no_promise}',
%% which coordinators count as no commit.
committed({ok, Wakes}) -> {ok, Wakes};
committed({error, no_promise} = Error) -> {Error, []}.

%%--------------------------------------------------------------------
%% Replication
%%--------------------------------------------------------------------

handle_cast({trans_log, _FromNode, Entries}, State) when is_list(Entries) ->
    try
        {noreply, replay(Entries, State)}
    catch
        error:badarg ->
            {noreply, warn(State, "locker: malformed transaction log from ~p", [_FromNode])}
    end;
handle_cast(Msg, State) ->
    {noreply, warn(State, "locker: unknown cast ~0P", [Msg, 20])}.

replay([], State) ->
    State;
replay(Entries, State) ->
    {Wakes, Rest, Skipped} = locker_nif:replay(Entries, ?REPLAY_CHUNK),
    Skipped > 0 andalso ?LOG_WARNING("locker: skipped ~b unknown log entries", [Skipped]),
    replay(Rest, woken(Wakes, State)).

%%--------------------------------------------------------------------
%% Timers
%%--------------------------------------------------------------------

handle_info(Sweep, State) when Sweep =:= expire_leases; Sweep =:= expire_locks ->
    {noreply, sweep(State)};
handle_info({timeout, Ref, wakeup}, #state{wakeup = {Ref, _}} = State) ->
    {noreply, sweep(State#state{wakeup = undefined})};
handle_info(sweep_more, State) ->
    {noreply, sweep(State#state{sweeping = false})};
handle_info({'DOWN', Mref, process, {locker, Node}, _}, #state{watch = Watch} = State) ->
    case locker_watch:down(Mref, Watch, Node) of
        {true, Watch1} -> {noreply, State#state{watch = Watch1}};
        false -> {noreply, State}
    end;
handle_info({locker_rewatch, Node}, #state{watch = Watch} = State) ->
    {noreply, State#state{watch = locker_watch:rewatch(Node, Watch)}};
handle_info({locker_wakes, Wakes}, State) ->
    {noreply, rearm(woken(Wakes, State))};
handle_info(push_trans_log, State) ->
    push_trans_log(),
    {noreply, note_log_dropped(State)};
handle_info(Info, State) ->
    ?LOG_DEBUG("locker: unexpected message ~0P", [Info, 20]),
    {noreply, State}.

%% Deletes what expired, one budget at a time; when more is due, yields to
%% the mailbox (calls keep being answered) and continues with `sweep_more'.
sweep(#state{sweeping = true} = State) ->
    State;
sweep(State) ->
    {Done, Wakes, TimedOut, _Leases, _Promises} = locker_nif:sweep(?SWEEP_BUDGET),
    State1 = woken(Wakes, forget(TimedOut, State)),
    case Done of
        true ->
            arm_wakeup(State1);
        false ->
            self() ! sweep_more,
            State1#state{sweeping = true}
    end.

push_trans_log() ->
    {Nodes, Replicas, _} = locker:get_meta(),
    case lists:member(node(), Nodes) andalso lists:delete(node(), Replicas) of
        false -> ok;
        [] -> ok;
        To -> push_trans_log(To)
    end.

%% Logs a warning about bad input, at most ?WARN_BURST a second: a flood
%% of bad requests must not turn into as many formatted log events (each
%% costs the server more than answering the request). What is held back
%% is counted and reported by the next second's first warning.
warn(#state{warned = {Second, Count}} = State, Format, Args) ->
    Now = erlang:monotonic_time(second),
    case Now =:= Second of
        true when Count >= ?WARN_BURST ->
            State#state{warned = {Second, Count + 1}};
        true ->
            ?LOG_WARNING(Format, Args),
            State#state{warned = {Second, Count + 1}};
        false ->
            Count > ?WARN_BURST andalso
                ?LOG_WARNING("locker: ~b more warnings about bad input suppressed", [Count - ?WARN_BURST]),
            ?LOG_WARNING(Format, Args),
            State#state{warned = {Now, 1}}
    end.

%% The transaction log is bounded (1M entries): past it the oldest entries
%% are dropped, and replicas catch up through later writes and extensions.
note_log_dropped(#state{log_dropped = Seen} = State) ->
    case locker_nif:stats() of
        #{log_dropped := Dropped} when Dropped > Seen ->
            ?LOG_WARNING(
                "locker: transaction log limit reached: ~b entries dropped since the last push; "
                "replicas catch up through later writes and extensions",
                [Dropped - Seen]
            ),
            State#state{log_dropped = Dropped};
        _ ->
            State
    end.

push_trans_log(To) ->
    case locker_nif:take_log(?PUSH_CHUNK) of
        [] ->
            ok;
        Entries ->
            gen_server:abcast(To, locker, {trans_log, node(), Entries}),
            push_trans_log(To)
    end.

%%--------------------------------------------------------------------
%% Waiters
%%--------------------------------------------------------------------

add_waiter(Id, From, #state{waiters = Waiters} = State) ->
    arm_wakeup(State#state{waiters = Waiters#{Id => From}, next_id = Id + 1}).

woken([], State) ->
    State;
woken(Wakes, #state{waiters = Waiters0} = State) ->
    Waiters = lists:foldl(
        fun({Id, Reply}, Acc) ->
            case maps:take(Id, Acc) of
                {From, Rest} ->
                    gen_server:reply(From, Reply),
                    Rest;
                error ->
                    Acc
            end
        end,
        Waiters0,
        Wakes
    ),
    State#state{waiters = Waiters}.

%% A write may move a watched lease's expiry: re-check the wakeup timer.
rearm(#state{waiters = Waiters} = State) when map_size(Waiters) =:= 0 -> State;
rearm(State) -> arm_wakeup(State).

forget(Ids, #state{waiters = Waiters} = State) ->
    State#state{waiters = maps:without(Ids, Waiters)}.

%% Keeps one timer for the earliest moment a waiter needs an answer (a
%% watched lease expiring, a waiter timing out), so `wait_for_release'
%% wakes at expiry to the millisecond, not at the next interval tick.
arm_wakeup(#state{waiters = Waiters} = State) when map_size(Waiters) =:= 0 ->
    cancel_wakeup(State);
arm_wakeup(#state{wakeup = Current} = State) ->
    case locker_nif:next_wakeup() of
        infinity ->
            cancel_wakeup(State);
        Ms ->
            At = erlang:monotonic_time(millisecond) + Ms,
            case Current of
                {_, T} when T =< At -> State;
                _ ->
                    State1 = cancel_wakeup(State),
                    State1#state{wakeup = {erlang:start_timer(Ms + 1, self(), wakeup), At}}
            end
    end.

cancel_wakeup(#state{wakeup = undefined} = State) ->
    State;
cancel_wakeup(#state{wakeup = {Ref, _}} = State) ->
    _ = erlang:cancel_timer(Ref),
    State#state{wakeup = undefined}.

%%--------------------------------------------------------------------
%% Metadata
%%--------------------------------------------------------------------

put_meta(Nodes0, Replicas0, W) ->
    Nodes = ordsets:from_list(Nodes0),
    Replicas = ordsets:from_list(Replicas0),
    case persistent_term:get({locker, meta}, undefined) of
        {Nodes, Replicas, W} -> ok;
        _ -> persistent_term:put({locker, meta}, {Nodes, Replicas, W})
    end,
    LogEnabled = lists:member(node(), Nodes) andalso lists:delete(node(), Replicas) =/= [],
    ok = locker_nif:configure(?PROMISE_TTL_MS, LogEnabled).

terminate(_Reason, _State) ->
    ok.

code_change(_OldVsn, State, _Extra) ->
    {ok, State}.
