%% @doc The `locker' server of one node: answers the requests of the
%% locker wire protocol, replays and pushes the transaction log, and runs
%% the expiry timers. State transitions happen in the Rust store
%% ({@link locker_nif}); this process owns the waiters and one timer, armed
%% to the moment the store's schedule says something is next due (a lease
%% or promise sweep, the log push, a waiter's answer).
%%
%% Unknown calls are answered `{error, {unknown_request, Request}}'; unknown
%% casts and messages are dropped; bad arguments in a known request are
%% answered `{error, badarg}'. None of them stop the server, and at most
%% 20 warnings a second are logged about them (the rest are counted).
%% Messages that OTP's gen_server would stop on before any callback runs
%% (a call or system message whose From is not `{Pid, Tag}', a forged
%% `{'EXIT', Parent, _}') are dropped too: the server runs in
%% {@link locker_loop} once started.
%% @end
-module(locker_server).
-behaviour(gen_server).

-export([start_configured/3]).
-export_type([timer_task/0]).
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
%% The most requests in one batch (as locker_core::protocol::MAX_BATCH).
-define(MAX_BATCH, 1024).

%% A periodic task of the server, named after the message that runs it by
%% hand; `{'$locker_debug', {pause_timers, [Task]}}' pauses it.
-type timer_task() :: expire_leases | expire_locks | push_trans_log.

-record(state, {
    waiters = #{} :: #{non_neg_integer() => gen_server:from()},
    next_id = 0 :: non_neg_integer(),
    %% The one timer: its reference and when (monotonic ms) it fires.
    timer = undefined :: undefined | {reference(), integer()},
    watch = #{} :: locker_watch:watch(),
    sweeping = false :: boolean(),
    %% The store's count of log entries dropped at its limit, last seen.
    log_dropped = 0 :: non_neg_integer(),
    %% Warnings about bad input in the current second: {Second, Count}.
    warned = {0, 0} :: {integer(), non_neg_integer()},
    safe :: locker_safe_mode:safe_mode(),
    %% Until when (monotonic ms) a lease stored under an epoch before this
    %% node's current one may live: the longest lease it held when it
    %% took the current epoch (see locker_membership).
    horizon_at = 0 :: integer(),
    %% When this node last asked its masters for a newer configuration.
    pulled_at = undefined :: undefined | integer(),
    %% Epochs whose change was aborted (the latest first, at most
    %% ?ABORTED_KEPT): never taken afterwards, whatever the order in which
    %% the install and the abort arrive.
    aborted = [] :: [locker_meta:epoch()],
    %% This node's batch sender (see locker_batch) and its monitor.
    batcher :: {pid(), reference()} | undefined
}).

-define(ABORTED_KEPT, 32).

%% Longest timer armed at once (about 49 days): a later wakeup re-arms.
-define(MAX_TIMER_MS, 16#FFFFFFFF).

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

%% @private Checks the arguments and the safe-mode environment (a bad one
%% stops the start with `{badarg, Args}' or `{bad_app_env, Key, Value,
%% Expected}'), then serves in {@link locker_loop} (never returns).
init([W, LeaseExpireInterval, LockExpireInterval, PushTransInterval]) when
    is_integer(W), W > 0,
    is_integer(LeaseExpireInterval), LeaseExpireInterval > 0,
    is_integer(LockExpireInterval), LockExpireInterval > 0,
    is_integer(PushTransInterval), PushTransInterval > 0
->
    ok = locker_nif:reset_volatile(),
    %% Safe mode (off by default): a master whose VM started empty refuses
    %% promises on unknown keys for a while (see locker_safe_mode).
    case locker_safe_mode:init() of
        {ok, Safe} ->
            _ = locker_meta:token_counter(),
            _ = locker_meta:path_counter(),
            %% A server restarted in a running VM keeps the cluster view, as it
            %% keeps the leases: coordinators on this node must not see an empty
            %% cluster (and answer no_quorum at once) until set_nodes comes again.
            %% A configuration set through epochs is kept whole (its W too).
            {Masters, Replicas} =
                case locker_meta:config() of
                    #{mode := epoch} = Config ->
                        put_config(Config),
                        {locker_meta:voters(Config), maps:get(replicas, Config)};
                    _ ->
                        {M, R} =
                            case locker_meta:current() of
                                {M0, R0, _} -> {M0, R0};
                                undefined -> {[], []}
                            end,
                        put_meta(M, R, W),
                        {M, R}
                end,
            Watch = locker_watch:update(Masters ++ Replicas, locker_watch:init()),
            {_, HorizonMs} = locker_nif:membership_snapshot(),
            ok = locker_nif:set_intervals(LeaseExpireInterval, LockExpireInterval, PushTransInterval),
            #{log_dropped := Dropped} = locker_nif:stats(),
            Batcher = locker_batch:start(application:get_env(locker, batching, true) =:= true),
            locker_loop:enter(?MODULE, arm(#state{
                batcher = Batcher,
                log_dropped = Dropped,
                watch = Watch,
                horizon_at = erlang:monotonic_time(millisecond) + HorizonMs,
                safe = locker_safe_mode:set_masters(Masters, Safe)
            }));
        {error, Reason} ->
            ?LOG_ERROR("locker: not started: ~0p", [Reason]),
            {stop, Reason}
    end;
init(Args) ->
    ?LOG_ERROR("locker: not started: bad arguments ~0p (W and three intervals, positive integers)", [Args]),
    {stop, {badarg, Args}}.

%%--------------------------------------------------------------------
%% Calls
%%--------------------------------------------------------------------

%% @private
handle_call(Request, From, State) ->
    try
        call(Request, From, State)
    catch
        error:badarg ->
            {reply, {error, badarg}, warn(State, "locker: bad arguments in ~0P", [Request, 20])};
        Class:Reason:Stack ->
            %% A request this server does not survive is a bug: answered as
            %% bad input, logged (bounded) with where it failed.
            {reply, {error, badarg},
             warn(State, "locker: request ~0P failed: ~p:~0P at ~0P", [Request, 20, Class, Reason, 20, Stack, 20])}
    end.

%% The store's requests (waits included) are decoded and answered in the
%% Rust core, after the configuration epoch check (a vote or phase two made
%% under another epoch changes nothing); the rest are this server's own.
call(Request, From, #state{next_id = Id} = State) ->
    case locker_store:epoch_refusal(Request) of
        {error, {config_epoch, Own}} = Reply ->
            {reply, Reply, epoch_refused(Request, Own, From, State)};
        {error, {wrong_group, Own}} = Reply ->
            {Pid, _} = From,
            {reply, Reply,
             warn(State, "locker: refused a vote on a key of another group than this node's (~0p) from ~p: "
                  "its group table differs from this node's", [Own, node(Pid)])};
        {error, {table_epoch, TE}} = Reply ->
            {Pid, _} = From,
            {reply, Reply,
             warn(State, "locker: refused a request on a key that moves in group table change ~0p from ~p: "
                  "it was made under another table", [TE, node(Pid)])};
        none ->
            case locker_nif:handle(Request, Id) of
                unknown_request -> own_call(Request, From, State);
                {pending, []} -> {noreply, add_waiter(Id, From, State)};
                {Reply, Wakes} -> {reply, Reply, rearm(woken(Wakes, State))}
            end
    end.

own_call({set_nodes, Primaries, Replicas}, From, #state{watch = Watch, safe = Safe} = State) ->
    case is_node_list(Primaries) andalso is_node_list(Replicas) of
        true ->
            case legacy() of
                true ->
                    {_, _, W} = locker_meta:get(),
                    %% Watch the servers before coordinators can see them in the metadata.
                    Watch1 = locker_watch:update(Primaries ++ Replicas, Watch),
                    put_meta(Primaries, Replicas, W),
                    {reply, ok, State#state{watch = Watch1, safe = locker_safe_mode:set_masters(Primaries, Safe)}};
                false ->
                    legacy_refused({set_nodes, Primaries, Replicas}, From, State)
            end;
        false ->
            error(badarg)
    end;
own_call({set_w, W}, From, State) when is_integer(W), W > 0 ->
    case legacy() of
        true ->
            {Nodes, Replicas, _} = locker_meta:get(),
            put_meta(Nodes, Replicas, W),
            {reply, ok, State};
        false ->
            legacy_refused({set_w, W}, From, State)
    end;
own_call({set_w, _}, _From, _State) ->
    error(badarg);
own_call({'$locker_batch', Requests}, From, State) ->
    batch(Requests, From, State);
own_call({'$locker_batching', On}, {Pid, _}, #state{batcher = {Batcher, _}} = State) when
    is_boolean(On), node(Pid) =:= node()
->
    %% locker_batch:enable/1, from this node only.
    Batcher ! {enable, self(), On},
    receive
        {Batcher, enabled} -> ok
    after 5000 -> ok
    end,
    {reply, ok, State};
own_call('$locker_batcher', {Pid, _}, #state{batcher = {Batcher, _}} = State) when node(Pid) =:= node() ->
    {reply, Batcher, State};
own_call({'$locker_config', Request}, From, State) ->
    config_call(Request, From, State);
own_call({'$locker_groups', rewatch}, {Pid, _}, #state{watch = Watch} = State) when node(Pid) =:= node() ->
    %% Cluster mode: the group table or a group's configuration changed on
    %% this node (locker_groups); watch the nodes of every group.
    {Masters, Replicas, _} = locker_meta:get(),
    {reply, ok, State#state{watch = locker_watch:update(Masters ++ Replicas, Watch)}};
own_call({'$locker_groups', Request}, _From, #state{watch = Watch, horizon_at = H} = State) ->
    %% Cluster mode: a group table change (locker_groups:change/2).
    {Reply, Note} = locker_groups:server_request(Request),
    H1 =
        case Note of
            true ->
                %% After the joint table: leases stored so far on keys that
                %% move may live this long (the change waits for them).
                {_, HorizonMs} = locker_nif:membership_snapshot(),
                max(H, erlang:monotonic_time(millisecond) + HorizonMs);
            false ->
                H
        end,
    {Masters, Replicas, _} = locker_meta:get(),
    {reply, Reply, State#state{watch = locker_watch:update(Masters ++ Replicas, Watch), horizon_at = H1}};
own_call(get_debug_state, _From, State) ->
    %% The original's reply shape; its three timer references are, here,
    %% how long until the lease sweep, the promise sweep and the log push
    %% are next due (ms), or `paused' (see docs/protocol.md, Timers).
    {Promises, Leases} = locker_nif:debug_state(),
    {T1, T2, T3} = locker_nif:timers(),
    {reply, {ok, Promises, Leases, T1, T2, T3}, State};
own_call({'$locker_debug', Request}, From, State) ->
    debug_call(Request, From, State);
own_call(Request, {Pid, _}, State) ->
    State1 = warn(State, "locker: unknown request ~0P from ~p", [Request, 20, Pid]),
    {reply, {error, {unknown_request, Request}}, State1}.


%% Tests hold time still: the periodic tasks (all, or those named) stop
%% until resumed, and run by hand (`expire_leases', `expire_locks',
%% `push_trans_log' messages). Waiters are still answered on time.
debug_call(pause_timers, From, State) ->
    debug_call({pause_timers, all}, From, State);
debug_call(resume_timers, From, State) ->
    debug_call({resume_timers, all}, From, State);
debug_call({pause_timers, Which}, _From, State) ->
    ok = locker_nif:pause_timers(timer_tasks(Which), true),
    {reply, ok, arm(State)};
debug_call({resume_timers, Which}, _From, State) ->
    ok = locker_nif:pause_timers(timer_tasks(Which), false),
    {reply, ok, arm(State)};
debug_call(Request, {Pid, _}, State) ->
    State1 = warn(State, "locker: unknown debug request ~0P from ~p", [Request, 20, Pid]),
    {reply, {error, {unknown_request, {'$locker_debug', Request}}}, State1}.

timer_tasks(all) -> [expire_leases, expire_locks, push_trans_log];
timer_tasks(Tasks) when is_list(Tasks) -> Tasks;
timer_tasks(_) -> error(badarg).

%%--------------------------------------------------------------------
%% Batches (see locker_batch)
%%--------------------------------------------------------------------

%% A coordinator's batch: a proper list of at most ?MAX_BATCH requests,
%% every one a store request answered at once (checked by the NIF before
%% it applies any); else rejected whole, nothing applied, with a bounded
%% log line. Each request gets the epoch check a request sent alone gets;
%% the others are applied in order in one NIF call. `{ok, Replies}' in
%% the order of the requests.
batch(Requests, {Pid, _} = From, State) ->
    case proper_length(Requests, ?MAX_BATCH) of
        N when is_integer(N), N > 0 ->
            Refusals = [locker_store:epoch_refusal(R) || R <- Requests],
            case locker_nif:handle_batch(Requests, Refusals) of
                {Replies, Wakes} ->
                    ok = locker_batch:count_received(N),
                    State1 = lists:foldl(
                        fun
                            ({R, {error, {config_epoch, Own}}}, S) -> epoch_refused(R, Own, From, S);
                            (_, S) -> S
                        end,
                        State,
                        lists:zip(Requests, Refusals)
                    ),
                    {reply, {ok, Replies}, rearm(woken(Wakes, State1))};
                bad_batch ->
                    bad_batch(Requests, Pid, State)
            end;
        _ ->
            bad_batch(Requests, Pid, State)
    end.

bad_batch(Requests, Pid, State) ->
    ok = locker_batch:count_rejected(),
    {reply, {error, bad_batch}, warn(State, "locker: malformed batch from ~p rejected whole, nothing applied: ~0P", [
        node(Pid), Requests, 20
    ])}.

%% The length of a proper list of at most Max elements; false otherwise.
proper_length(L, Max) -> proper_length(L, Max, 0).

proper_length([], _Max, N) -> N;
proper_length([_ | T], Max, N) when N < Max -> proper_length(T, Max, N + 1);
proper_length(_, _, _) -> false.

%%--------------------------------------------------------------------
%% Configurations (see locker_membership)
%%--------------------------------------------------------------------

%% Whether this node's configuration may still be set by the original
%% requests (it was never set through epochs).
legacy() ->
    case locker_meta:config() of
        #{mode := epoch} -> false;
        _ -> true
    end.

%% The original requests `set_nodes' and `set_w' still set the view of a
%% node configured by them (or never configured). Once its configuration
%% was set through epochs, they are answered `ok' if they change nothing,
%% else refused (nothing changes) and logged: a joining or misconfigured
%% node must not rewrite a running cluster's view.
legacy_refused(Request, {Pid, _}, State) ->
    #{masters := Masters, replicas := Replicas, w := W, joint := Joint, epoch := Epoch} = locker_meta:config(),
    Same =
        Joint =:= none andalso
            case Request of
                {set_nodes, M, R} -> ordsets:from_list(M) =:= Masters andalso ordsets:from_list(R) =:= Replicas;
                {set_w, W1} -> W1 =:= W
            end,
    case Same of
        true ->
            {reply, ok, State};
        false ->
            State1 = warn(
                State,
                "locker: refused ~0P from ~p: this node's configuration (epoch ~0p, masters ~0P, W ~b) "
                "changes only through locker_membership:change/3",
                [Request, 10, node(Pid), Epoch, Masters, 10, W]
            ),
            {reply, {error, {epoch_configured, Epoch}}, State1}
    end.

%% A vote or phase two made under another epoch: logged; if the caller's
%% epoch is newer than ours, this node may have missed a change: it asks
%% its masters for their configuration (at most once a second).
epoch_refused(Request, Own, {Pid, _}, State) ->
    Theirs = locker_store:tag_epoch(element(2, checked_tag(Request))),
    State1 = warn(
        State,
        "locker: refused ~p from ~p made under configuration epoch ~0p: this node is at epoch ~0p",
        [element(1, Request), node(Pid), Theirs, Own]
    ),
    case Theirs > Own of
        true -> maybe_pull(State1);
        false -> State1
    end.

checked_tag({get_write_lock, _, _, Tag}) -> {tag, Tag};
checked_tag(Request) -> {tag, element(2, Request)}.

maybe_pull(#state{pulled_at = At} = State) ->
    Now = erlang:monotonic_time(millisecond),
    case At =:= undefined orelse Now - At >= 1000 of
        true ->
            _ = proc_lib:spawn(locker_membership, pull, []),
            State#state{pulled_at = Now};
        false ->
            State
    end.

config_call(get, _From, State) ->
    {reply, {ok, locker_meta:config()}, State};
config_call(horizon, _From, #state{horizon_at = H} = State) ->
    {Floor, LongestMs} = locker_nif:membership_snapshot(),
    %% The leases stored under the previous epoch that still live are in
    %% the store: the horizon noted when this node took the epoch, or
    %% sooner if the longest live lease ends sooner (those leases were
    %% released, or ran out, since). A master in safe mode may have
    %% forgotten leases that still live: while it refuses unknown keys,
    %% its old leases may last that long.
    Noted = max(0, H - erlang:monotonic_time(millisecond)),
    Left = max(min(Noted, LongestMs), locker_nif:abstain_left()),
    {reply, {ok, locker_meta:epoch(), Left, Floor}, State};
config_call({install, Base, New, Floor}, {Pid, _}, State) ->
    true = is_config(New) andalso is_epoch(Base) andalso is_integer(Floor) andalso Floor >= 0 orelse error(badarg),
    Own = locker_meta:config(),
    #{epoch := E} = New,
    #{epoch := OwnE} = Own,
    Fits = locker_membership:fits(New),
    Aborted = lists:member(E, State#state.aborted),
    if
        Aborted ->
            {reply, {error, {aborted_epoch, E}}, config_refused(Pid, New, "was aborted by its proposer, unlike", State)};
        not Fits ->
            #{masters := M, w := W} = New,
            {reply, {error, {unfit_config, M, W}}, config_refused(Pid, New, "cannot work (masters, W), unlike", State)};
        Own =:= New ->
            ok = locker_nif:raise_token_floor(Floor),
            {reply, ok, State};
        E =< OwnE ->
            {reply, {error, {stale_epoch, E, OwnE}}, config_refused(Pid, New, "is not newer than", State)};
        map_get(mode, Own) =:= epoch, OwnE =/= Base ->
            %% Newer, but not made from this node's configuration: this
            %% node may have missed a step; it asks its masters (a quorum
            %% of them decides, see locker_membership:pull/1).
            State1 = config_refused(Pid, New, "was made from another configuration than", State),
            {reply, {error, {conflict, Base, OwnE}}, maybe_pull(State1)};
        true ->
            ok = locker_nif:raise_token_floor(Floor),
            {reply, ok, install(New, State)}
    end;
config_call({abort, Epoch, Prev}, _From, State) ->
    true = is_epoch(Epoch) andalso is_config(Prev) orelse error(badarg),
    Aborted = lists:sublist([Epoch | lists:delete(Epoch, State#state.aborted)], ?ABORTED_KEPT),
    State1 = State#state{aborted = Aborted},
    case locker_meta:epoch() of
        Epoch -> {reply, ok, install(Prev, State1)};
        _ -> {reply, ok, State1}
    end;
config_call({force, Base, New}, {Pid, _}, State) ->
    %% The original semantics (a cluster with original masters): the view
    %% is overwritten, unless this node was set through epochs from
    %% another configuration than the sender's.
    true = is_config(New) andalso is_epoch(Base) orelse error(badarg),
    case locker_meta:config() of
        #{mode := epoch, epoch := OwnE} when OwnE =/= Base ->
            {reply, {error, {conflict, Base, OwnE}}, config_refused(Pid, New, "was made from another configuration than", State)};
        _ ->
            {reply, ok, install(New, State)}
    end;
config_call({catch_up, _, _}, {Pid, _}, State) when node(Pid) =/= node() ->
    %% Only this node's own pull (locker_membership:pull/1, which checked
    %% that a quorum of its masters reports the configuration) sends it:
    %% another node must not skip that check by naming a master.
    {reply, {error, not_local}, warn(State, "locker: refused a catch-up request from ~p: only this node's own pull sends it", [Pid])};
config_call({catch_up, New, FromNode}, _From, State) ->
    true = is_config(New) andalso is_atom(FromNode) orelse error(badarg),
    Own = locker_meta:config(),
    %% From a master of this node's configuration, or any node when it
    %% never had masters (locker_membership:pull/1 checked that a quorum
    %% reports the configuration).
    Trusted = lists:member(FromNode, locker_meta:voters(Own)) orelse locker_meta:voters(Own) =:= [],
    case maps:get(epoch, New) > maps:get(epoch, Own) andalso map_get(mode, New) =:= epoch andalso
        locker_membership:fits(New) andalso not lists:member(maps:get(epoch, New), State#state.aborted)
    of
        true when Trusted ->
            ?LOG_NOTICE("locker: configuration epoch ~0p taken from master ~p (this node was at ~0p)", [
                maps:get(epoch, New), FromNode, maps:get(epoch, Own)
            ]),
            {reply, ok, install(New, State)};
        _ ->
            {reply, {error, not_newer}, State}
    end;
config_call(Request, {Pid, _}, State) ->
    State1 = warn(State, "locker: unknown configuration request ~0P from ~p", [Request, 20, Pid]),
    {reply, {error, {unknown_request, {'$locker_config', Request}}}, State1}.

config_refused(Pid, #{epoch := E, masters := M, w := W}, Why, State) ->
    #{epoch := OwnE, masters := OwnM, w := OwnW} = locker_meta:config(),
    warn(
        State,
        "locker: refused configuration epoch ~0p (masters ~0P, W ~b) from ~p: it ~s this node's epoch ~0p (masters ~0P, W ~b)",
        [E, M, 10, W, node(Pid), Why, OwnE, OwnM, 10, OwnW]
    ).

%% Takes a configuration: watches its nodes, sets safe mode's masters, and
%% if the epoch changes, notes how long the leases stored so far may live.
install(New, #state{watch = Watch, safe = Safe, horizon_at = H} = State) ->
    OldEpoch = locker_meta:epoch(),
    Voters = locker_meta:voters(New),
    Watch1 = locker_watch:update(Voters ++ maps:get(replicas, New), Watch),
    put_config(New),
    H1 =
        case maps:get(epoch, New) of
            OldEpoch ->
                H;
            _ ->
                %% After the configuration: from now on, nothing made under
                %% the old epoch is stored here (but see locker_late_lease).
                {_, HorizonMs} = locker_nif:membership_snapshot(),
                max(H, erlang:monotonic_time(millisecond) + HorizonMs)
        end,
    State#state{watch = Watch1, safe = locker_safe_mode:set_masters(Voters, Safe), horizon_at = H1}.

is_config(#{epoch := E, masters := M, replicas := R, w := W, joint := J, mode := Mode} = C) when
    map_size(C) =:= 6, is_integer(W), W > 0, Mode =:= epoch orelse Mode =:= legacy
->
    is_epoch(E) andalso is_node_list(M) andalso is_node_list(R) andalso
        case J of
            none -> true;
            {Old, OldW} -> is_node_list(Old) andalso is_integer(OldW) andalso OldW > 0;
            _ -> false
        end;
is_config(_) ->
    false.

is_epoch({C, P}) -> is_integer(C) andalso C >= 0 andalso is_atom(P);
is_epoch(_) -> false.

%%--------------------------------------------------------------------
%% Replication
%%--------------------------------------------------------------------

%% @private
handle_cast(Msg, State) ->
    try
        cast(Msg, State)
    catch
        Class:Reason:Stack ->
            {noreply, warn(State, "locker: cast ~0P failed: ~p:~0P at ~0P", [Msg, 20, Class, Reason, 20, Stack, 20])}
    end.

cast({trans_log, FromNode, Entries}, State) when is_list(Entries) ->
    {Masters, _, _} = locker_meta:get(),
    case lists:member(node(), Masters) of
        true ->
            %% A master learns leases through votes and phase two only: a
            %% log replayed here would bypass its promises (a pushed
            %% release could delete the lease of the next holder).
            {noreply, warn(State, "locker: transaction log from ~0P dropped: this node is a master", [FromNode, 5])};
        false ->
            replay_log(FromNode, Entries, State)
    end;
cast(Msg, State) ->
    {noreply, warn(State, "locker: unknown cast ~0P", [Msg, 20])}.

replay_log(FromNode, Entries, State) ->
    try
        {noreply, replay(Entries, State)}
    catch
        error:badarg ->
            {noreply, warn(State, "locker: malformed transaction log from ~0P", [FromNode, 10])}
    end.

replay([], State) ->
    State;
replay(Entries, State) ->
    {Wakes, Rest, Skipped} = locker_nif:replay(Entries, ?REPLAY_CHUNK),
    Skipped > 0 andalso ?LOG_WARNING("locker: skipped ~b unknown log entries", [Skipped]),
    replay(Rest, woken(Wakes, State)).

%%--------------------------------------------------------------------
%% Timers
%%--------------------------------------------------------------------

%% @private
handle_info(Info, State) ->
    try
        info(Info, State)
    catch
        Class:Reason:Stack ->
            {noreply, warn(State, "locker: message ~0P failed: ~p:~0P at ~0P", [Info, 20, Class, Reason, 20, Stack, 20])}
    end.

info(Sweep, State) when Sweep =:= expire_leases; Sweep =:= expire_locks ->
    {noreply, sweep(State)};
info({timeout, Ref, wakeup}, #state{timer = {Ref, _}} = State) ->
    {noreply, arm(tick(State#state{timer = undefined}))};
info({timeout, _, wakeup}, State) ->
    %% A timer cancelled after it fired.
    {noreply, State};
info({timeout, Ref, {locker_safe_mode, What}}, #state{safe = Safe} = State) ->
    {noreply, State#state{safe = locker_safe_mode:timeout(Ref, What, Safe)}};
info({locker_safe_mode_answers, Ref, Answers}, #state{safe = Safe} = State) ->
    {noreply, State#state{safe = locker_safe_mode:answers(Ref, Answers, Safe)}};
info(sweep_more, State) ->
    {noreply, sweep(State#state{sweeping = false})};
info({'DOWN', Mref, process, Pid, Reason}, #state{batcher = {Pid, Mref}} = State) ->
    %% The batch sender died (a bug): its callers' requests in it get no
    %% answer (they time out); a new one serves the next requests.
    ?LOG_ERROR("locker: batch sender died: ~0P; restarted", [Reason, 20]),
    {noreply, State#state{batcher = locker_batch:start(application:get_env(locker, batching, true) =:= true)}};
info({'DOWN', Mref, process, {locker, Node}, _}, #state{watch = Watch} = State) ->
    case locker_watch:down(Mref, Watch, Node) of
        {true, Watch1} -> {noreply, State#state{watch = Watch1}};
        false -> {noreply, State}
    end;
info({locker_late_lease, Until}, #state{horizon_at = H} = State) when is_integer(Until) ->
    %% A coordinator on this node stored a lease of the previous epoch
    %% just after this node left it (see locker_store:apply_here/1).
    {noreply, State#state{horizon_at = max(H, Until)}};
info({locker_rewatch, Node}, #state{watch = Watch} = State) ->
    {noreply, State#state{watch = locker_watch:rewatch(Node, Watch)}};
info({locker_wakes, Wakes} = Info, State) ->
    case is_wakes(Wakes) of
        true -> {noreply, rearm(woken(Wakes, State))};
        false -> {noreply, warn(State, "locker: malformed message ~0P", [Info, 20])}
    end;
info(push_trans_log, State) ->
    {noreply, push(State)};
info({'$gen_call', From, Request}, State) ->
    %% Routed here by locker_loop: no {Pid, Tag} to answer.
    {noreply, warn(State, "locker: call ~0P with a malformed From ~0P dropped", [Request, 20, From, 10])};
info({system, From, Request}, State) ->
    {noreply, warn(State, "locker: system message ~0P with a malformed From ~0P dropped", [Request, 20, From, 10])};
info({'EXIT', From, Reason}, State) ->
    %% The server does not trap exits: this was sent as a message.
    {noreply, warn(State, "locker: exit message from ~0P (~0P) dropped", [From, 10, Reason, 20])};
info(Info, State) ->
    {noreply, warn(State, "locker: unexpected message ~0P", [Info, 20])}.

%% `[{Id, Reply}]' from the store (a proper list).
is_wakes([]) -> true;
is_wakes([{Id, _} | T]) when is_integer(Id), Id >= 0 -> is_wakes(T);
is_wakes(_) -> false.

%% A proper list of atoms.
is_node_list([]) -> true;
is_node_list([N | T]) when is_atom(N) -> is_node_list(T);
is_node_list(_) -> false.

%% The timer fired: does what the store's schedule says is due.
tick(State) ->
    {Sweep, Push} = locker_nif:take_due(),
    State1 =
        case Push of
            true -> push(State);
            false -> State
        end,
    case Sweep of
        true -> sweep(State1);
        false -> State1
    end.

push(State) ->
    push_trans_log(),
    note_log_dropped(State).

%% Deletes what expired, one budget at a time; when more is due, yields to
%% the mailbox (calls keep being answered) and continues with `sweep_more'.
sweep(#state{sweeping = true} = State) ->
    State;
sweep(State) ->
    {Done, Wakes, TimedOut, _Leases, _Promises} = locker_nif:sweep(?SWEEP_BUDGET),
    State1 = woken(Wakes, forget(TimedOut, State)),
    case Done of
        true ->
            arm(State1);
        false ->
            self() ! sweep_more,
            State1#state{sweeping = true}
    end.

push_trans_log() ->
    case locker_meta:push_targets() of
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
    arm(State#state{waiters = Waiters#{Id => From}, next_id = Id + 1}).

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

%% A write may move a watched lease's expiry: re-check the timer.
rearm(#state{waiters = Waiters} = State) when map_size(Waiters) =:= 0 -> State;
rearm(State) -> arm(State).

forget(Ids, #state{waiters = Waiters} = State) ->
    State#state{waiters = maps:without(Ids, Waiters)}.

%% Keeps the one timer armed to the earliest moment the store's schedule
%% says something is due: a periodic task (sweeps, log push), or a waiter
%% needing an answer (a watched lease expiring, a waiter timing out), so
%% `wait_for_release' wakes at expiry to the millisecond, not at the next
%% sweep. A timer already armed earlier is kept (it fires, finds nothing
%% due, and is armed again). While a sweep runs in steps, it arms when done.
arm(#state{sweeping = true} = State) ->
    State;
arm(#state{timer = Current} = State) ->
    case locker_nif:next_due() of
        infinity ->
            cancel_timer(State);
        Ms0 ->
            %% A timer that far (every task paused, an infinite wait)
            %% fires early and re-arms.
            Ms = min(Ms0, ?MAX_TIMER_MS),
            At = erlang:monotonic_time(millisecond) + Ms,
            case Current of
                {_, T} when T =< At -> State;
                _ ->
                    State1 = cancel_timer(State),
                    State1#state{timer = {erlang:start_timer(Ms, self(), wakeup), At}}
            end
    end.

cancel_timer(#state{timer = undefined} = State) ->
    State;
cancel_timer(#state{timer = {Ref, _}} = State) ->
    _ = erlang:cancel_timer(Ref),
    State#state{timer = undefined}.

%%--------------------------------------------------------------------
%% Metadata
%%--------------------------------------------------------------------

put_config(#{joint := Joint} = Config) ->
    %% The store keeps later expiries while the configuration is joint
    %% (locker_core::membership::stored_expiry): it is told before a
    %% joint configuration is visible to coordinators on this node, and
    %% after it was left, so that no extension under the joint epoch is
    %% stored without the rule.
    _ = Joint =:= none orelse locker_nif:set_joint(true),
    LogEnabled = locker_meta:put_config(Config),
    _ = Joint =/= none orelse locker_nif:set_joint(false),
    ok = locker_nif:configure(?PROMISE_TTL_MS, LogEnabled).

put_meta(Nodes, Replicas, W) ->
    %% Log only what will be pushed (a master with replicas that are not
    %% masters): a log nobody takes would fill up to its limit.
    LogEnabled = locker_meta:put(Nodes, Replicas, W),
    ok = locker_nif:set_joint(false),
    ok = locker_nif:configure(?PROMISE_TTL_MS, LogEnabled).

%% @private
terminate(_Reason, _State) ->
    ok.

%% @private
code_change(_OldVsn, State, _Extra) ->
    {ok, State}.
