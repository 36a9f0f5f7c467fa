%% @doc Distributed lease and lock store, wire-compatible with wooga's
%% `locker'.
%%
%% A cluster is a set of masters, which vote in a two-phase write with
%% quorum W, and replicas, which receive the masters' transaction log
%% asynchronously. Every node runs one server registered as `locker'
%% ({@link locker_server}); its state lives in a Rust store behind a NIF,
%% which {@link dirty_read/1} reads directly from the calling process.
%%
%% The coordinator functions ({@link lock/4}, {@link update/4},
%% {@link extend_lease/4}, {@link release/3}) run in the caller. When the
%% configuration was set through epochs (every master is this project's
%% node or `lockerd') they take one round: a conditional write on each
%% master, undone at once if W did not apply it. Otherwise they send
%% exactly the requests of the original two-phase protocol, so original
%% nodes, these nodes and `lockerd' can share a cluster. See
%% docs/protocol.md and {@link one_round_enabled/0}.
%%
%% On each of three nodes `Cluster' (W = 2):
%% ```
%% {ok, _} = locker:start_link(2),
%% ok = locker:set_nodes(Cluster, Cluster, []),
%% {ok, 2, 3, 3} = locker:lock(my_key, self(), 10000),
%% {ok, Pid} = locker:dirty_read(my_key),
%% {ok, 2, 3, 3} = locker:release(my_key, self()).
%% '''
%% @end
-module(locker).

-export([start_link/1, start_link/4]).
-export([set_w/2, set_nodes/3]).
-export([lock/2, lock/3, lock/4, update/3, update/4, extend_lease/3, extend_lease/4, release/2, release/3]).
-export([lock_with_token/4]).
-export([wait_for/2, wait_for_release/1, wait_for_release/2]).
-export([dirty_read/1, master_dirty_read/1, holds/1, masters_of/1]).
-export([lag/0, summary/0, get_meta/0, get_debug_state/0]).
-export([token_counter/0, promise_ttl_ms/0, phase_two_budget_ms/0]).
-export([path_counts/0, one_round_enabled/0]).
-export([format_error/2]).
%% The original's helpers, kept for code that calls them.
-export([get_write_lock/4, do_write/6, release_write_lock/3, get_meta_ets/1, now_to_seconds/0]).

-define(LEASE_LENGTH, 2000).
%% Raises badarg from the calling function, with OTP's error_info naming
%% the wrong arguments (see format_error/2).
-define(CHECK(Checks, Args),
    case bad(Checks) of
        Bad__ when map_size(Bad__) =:= 0 -> ok;
        Bad__ -> erlang:error(badarg, Args, [{error_info, #{module => ?MODULE, cause => Bad__}}])
    end
).
-define(TIMEOUT, 5000).
%% How long a master keeps an unused promise (the protocol's 10 s).
-define(PROMISE_TTL_MS, 10000).
%% A coordinator starts phase two at most this long after it started phase
%% one: the promise lifetime less 10 % for clock-rate differences between
%% the coordinator and the masters and for the write's delivery.
-define(PHASE_TWO_BUDGET_MS, (?PROMISE_TTL_MS * 9) div 10).

-type key() :: term().
-type value() :: term().
-type lock_result() :: {ok, W :: pos_integer(), Votes :: non_neg_integer(), Commits :: non_neg_integer()}
    | {error, no_quorum}.
-export_type([key/0, value/0, lock_result/0]).

%%====================================================================
%% Server
%%====================================================================

%% @doc Starts the `locker' server with write quorum `W' and the default
%% intervals: lease sweep 1000 ms, promise sweep 1000 ms, log push 100 ms.
-spec start_link(pos_integer()) -> {ok, pid()} | {error, term()}.
start_link(W) ->
    start_link(W, 1000, 1000, 100).

%% @doc Starts the `locker' server, registered locally as `locker'. A
%% quorum or an interval that is not a positive integer fails at once with
%% `badarg' naming it.
%% Leases survive a crash and restart of the server within the same VM
%% (they live in the NIF store); pending promises and waiters do not.
-spec start_link(pos_integer(), pos_integer(), pos_integer(), pos_integer()) ->
    {ok, pid()} | {error, term()}.
start_link(W, LeaseExpireInterval, LockExpireInterval, PushTransInterval) ->
    Args = [W, LeaseExpireInterval, LockExpireInterval, PushTransInterval],
    ?CHECK(
        [
            {1, is_integer(W) andalso W > 0, quorum},
            {2, is_interval(LeaseExpireInterval), interval},
            {3, is_interval(LockExpireInterval), interval},
            {4, is_interval(PushTransInterval), interval}
        ],
        Args
    ),
    gen_server:start_link({local, locker}, locker_server, Args, []).

%% @doc Sets the write quorum of the cluster (its masters and replicas,
%% and every node of `Cluster'), through {@link locker_membership:change/4}:
%% safely, with configuration epochs, unless a master does not know them
%% (an original node: then the original overwrite, with a warning). Returns `{error, {bad_w, W, N}}' when `W =< N/2' or `W > N'
%% (N masters), `{error, {unreachable, Node}}' or
%% `{error, {not_running, Node}}' for a node it cannot configure, and
%% changes nothing then. See {@link locker_membership:reason()}.
-spec set_w([node()], pos_integer()) -> ok | {error, locker_membership:reason()}.
set_w(Cluster, W) ->
    ?CHECK([{1, is_node_list(Cluster), nodes}, {2, is_integer(W) andalso W > 0, quorum}], [Cluster, W]),
    locker_membership:set_w(Cluster, W).

%% @doc Sets the masters (`Primaries') and replicas of the cluster (and of
%% every node of `Cluster'), keeping W, through
%% {@link locker_membership:change/4}: errors as {@link set_w/2}.
-spec set_nodes([node()], [node()], [node()]) -> ok | {error, locker_membership:reason()}.
set_nodes(Cluster, Primaries, Replicas) ->
    ?CHECK(
        [{1, is_node_list(Cluster), nodes}, {2, is_node_list(Primaries), nodes}, {3, is_node_list(Replicas), nodes}],
        [Cluster, Primaries, Replicas]
    ),
    locker_membership:set_nodes(Cluster, Primaries, Replicas).

%%====================================================================
%% Coordinator
%%====================================================================

%% @equiv lock(Key, Value, 2000)
-spec lock(key(), value()) -> lock_result().
lock(Key, Value) ->
    lock(Key, Value, ?LEASE_LENGTH).

%% @equiv lock(Key, Value, LeaseLength, 5000)
-spec lock(key(), value(), non_neg_integer()) -> lock_result().
lock(Key, Value, LeaseLength) ->
    lock(Key, Value, LeaseLength, ?TIMEOUT).

%% @doc Takes `Key' for `Value' for `LeaseLength' milliseconds if it is
%% free on a quorum of masters. Returns `{ok, W, Votes, Commits}': the
%% quorum, how many masters promised the key, how many stored it (at least
%% W); or `{error, no_quorum}': fewer than W masters promised it (nothing
%% is stored then), or fewer than W stored it (the original returned `ok'
%% with `Commits < W' then; the masters that did store it keep the lease
%% until it expires, which no quorum holds).
-spec lock(key(), value(), non_neg_integer(), timeout()) -> lock_result().
lock(Key, Value, LeaseLength, Timeout) ->
    ?CHECK(
        [{2, is_value(Value), value}, {3, is_lease(LeaseLength), lease}, {4, is_timeout(Timeout), timeout}],
        [Key, Value, LeaseLength, Timeout]
    ),
    case acquire(Key, Value, LeaseLength, Timeout) of
        {ok, W, Votes, Commits, _Token} -> {ok, W, Votes, Commits};
        Error -> Error
    end.

%% @doc {@link lock/4} that also returns the acquisition's fencing token:
%% a positive integer strictly greater than the token of every earlier
%% acquisition of `Key', as long as a quorum of this project's masters stays
%% up (original nodes in a mixed cluster vote without checking tokens; see
%% the README). Pass it to the resource you protect and have it refuse
%% requests carrying a lower token than one it has seen.
-spec lock_with_token(key(), value(), non_neg_integer(), timeout()) ->
    {ok, pos_integer()} | {error, no_quorum}.
lock_with_token(Key, Value, LeaseLength, Timeout) ->
    ?CHECK(
        [{2, is_value(Value), value}, {3, is_lease(LeaseLength), lease}, {4, is_timeout(Timeout), timeout}],
        [Key, Value, LeaseLength, Timeout]
    ),
    case acquire(Key, Value, LeaseLength, Timeout) of
        {ok, _W, _Votes, _Commits, Token} -> {ok, Token};
        Error -> Error
    end.

%% The tag `{'$locker_token', Ref, Token}' is as opaque to original nodes as
%% a plain ref; this project's nodes grant the promise on an absent key only
%% if Token is above every token they dropped for it, else they answer
%% `{error, {stale_token, Floor}}' and the coordinator retries once above
%% the highest floor it heard of.
acquire(Key, Value, LeaseLength, Timeout) ->
    acquire(Key, Value, LeaseLength, Timeout, 0, 2).

acquire(Key, Value, LeaseLength, Timeout, Floor, Attempts) ->
    case next_token(Floor) of
        exhausted ->
            %% A master reported a floor no token of this node can be
            %% above (the counter is a signed 64-bit atomic): no token
            %% can be granted, so no acquisition.
            {error, no_quorum};
        Token ->
            acquire_with(Key, Value, LeaseLength, Timeout, Token, Attempts)
    end.

acquire_with(Key, Value, LeaseLength, Timeout, Token, Attempts) ->
    %% The tag carries the configuration epoch (see epoch_tag/1).
    TagOf = fun(Epoch) -> {'$locker_token', epoch_tag(Epoch), Token} end,
    LeaseEnd = erlang:monotonic_time(millisecond) + LeaseLength,
    %% Once W masters stored the lease, a straggler (a paused master) is
    %% waited for no longer than the lease lasts, counted from before phase
    %% one: a success reported long after would be of no use.
    Write = fun(S, Masters, T, Quorums) ->
        Enough = fun(Replies) -> quorums_met(Quorums, [N || {N, ok} <- Replies]) end,
        {Commits, Bad, S1, _} = locker_call:round(
            S, Masters, {write, T, Key, Value, LeaseLength}, Timeout, fun(_, _) -> false end, {Enough, LeaseEnd}
        ),
        {Commits, Bad, S1}
    end,
    %% Masters that stored the lease of an attempt that failed (fewer than
    %% W did) give it up at once instead of holding it until it expires.
    %% The release carries the attempt's token tag: this project's masters
    %% then delete only the lease this attempt stored, not one that another
    %% caller took meanwhile with the same value.
    Undo = fun(S, Stored, Tag) ->
        locker_call:round(S, Stored, {release, Key, Value, Tag}, Timeout)
    end,
    OneRound = #{
        tag_of => TagOf,
        request => fun(T) -> {cond_write, T, Key, Value, LeaseLength} end,
        undo => fun(T) -> {release, Key, Value, T} end,
        soft_end => LeaseEnd
    },
    Result =
        case one_round_allowed(Key, OneRound) andalso one_round(OneRound, Timeout) of
            OneRoundResult when OneRoundResult =:= false; OneRoundResult =:= two_phase ->
                two_phase(Key, not_found, TagOf, Timeout, Write, Undo);
            OneRoundResult ->
                OneRoundResult
        end,
    case Result of
        {ok, W, Votes, Commits} ->
            {ok, W, Votes, Commits, Token};
        {no_quorum, Floor1} when is_integer(Floor1), Attempts > 1 ->
            acquire(Key, Value, LeaseLength, Timeout, Floor1, Attempts - 1);
        {no_quorum, _} ->
            {error, no_quorum}
    end.

%% Fencing tokens follow the wall clock in microseconds, strictly
%% increasing on this node, and above any floor a master reported;
%% `exhausted' when that would pass the largest token the counter holds
%% (a master's floor is any non-negative integer on the wire).
next_token(Floor) ->
    Counter = token_counter(),
    Want = max(erlang:system_time(microsecond), Floor + 1),
    bump(Counter, Want).

-define(MAX_TOKEN, ((1 bsl 63) - 1)).

bump(_Counter, Want) when Want > ?MAX_TOKEN ->
    exhausted;
bump(Counter, Want) ->
    Old = atomics:get(Counter, 1),
    case max(Want, Old + 1) of
        New when New > ?MAX_TOKEN ->
            exhausted;
        New ->
            case atomics:compare_exchange(Counter, 1, Old, New) of
                ok -> New;
                _ -> bump(Counter, Want)
            end
    end.

%% @private The node's token counter (see {@link locker_meta:token_counter/0}).
-spec token_counter() -> atomics:atomics_ref().
token_counter() ->
    locker_meta:token_counter().

%% @equiv update(Key, Value, NewValue, 5000)
-spec update(key(), value(), value()) -> lock_result().
update(Key, Value, NewValue) ->
    update(Key, Value, NewValue, ?TIMEOUT).

%% @doc Replaces the value of `Key' by `NewValue' if a quorum of masters
%% holds `Value'; the lease keeps its expiry. Replies as {@link lock/4}.
-spec update(key(), value(), value(), timeout()) -> lock_result().
update(Key, Value, NewValue, Timeout) ->
    ?CHECK(
        [{2, is_value(Value), value}, {3, is_value(NewValue), value}, {4, is_timeout(Timeout), timeout}],
        [Key, Value, NewValue, Timeout]
    ),
    OneRound = #{request => fun(T) -> {cond_update, T, Key, Value, NewValue} end, undo => fun(T) -> {undo, T, Key} end},
    tagged(
        either(Key, OneRound, Timeout, fun() ->
            two_phase(Key, Value, fun epoch_tag/1, Timeout, fun(S, Masters, Tag, _) ->
                locker_call:round(S, Masters, {update, Tag, Key, NewValue}, Timeout)
            end)
        end)
    ).

%% @equiv extend_lease(Key, Value, LeaseLength, 5000)
-spec extend_lease(key(), value(), non_neg_integer()) -> ok | {error, no_quorum}.
extend_lease(Key, Value, LeaseLength) ->
    extend_lease(Key, Value, LeaseLength, ?TIMEOUT).

%% @doc Makes the lease of `Key' (held by `Value') expire `LeaseLength'
%% milliseconds from now on every master that answers; a master that had
%% lost the key stores it again. Returns `ok' when at least W masters
%% applied it, else `{error, no_quorum}'.
-spec extend_lease(key(), value(), non_neg_integer(), timeout()) -> ok | {error, no_quorum}.
extend_lease(Key, Value, LeaseLength, Timeout) ->
    ?CHECK(
        [{2, is_value(Value), value}, {3, is_lease(LeaseLength), lease}, {4, is_timeout(Timeout), timeout}],
        [Key, Value, LeaseLength, Timeout]
    ),
    %% Masters that did not hold the key (it expired there, or they
    %% restarted empty) get the original phase two once W held it: they
    %% store it only where nothing conflicts, as after phase one.
    OneRound = #{
        request => fun(T) -> {cond_extend, T, Key, Value, LeaseLength} end,
        undo => fun(T) -> {undo, T, Key} end,
        catch_up => fun(T) -> {extend_lease, T, Key, Value, LeaseLength} end,
        holder => true
    },
    Result = either(Key, OneRound, Timeout, fun() ->
        two_phase(Key, Value, fun epoch_tag/1, Timeout, fun(S, Masters, Tag, _) ->
            {Replies, Bad, S1} = locker_call:round(S, Masters, {extend_lease, Tag, Key, Value, LeaseLength}, Timeout),
            Failed = [N || {N, R} <- Replies, R =/= ok],
            _ = Failed =/= [] andalso locker_call:multi_call(Failed, {release_write_lock, Tag}, Timeout),
            {Replies, Bad, S1}
        end, {holder, extend_lease})
    end),
    case Result of
        {ok, _, _, _} -> ok;
        {no_quorum, _} -> {error, no_quorum}
    end.

%% @equiv release(Key, Value, 5000)
-spec release(key(), value()) -> lock_result().
release(Key, Value) ->
    release(Key, Value, ?TIMEOUT).

%% @doc Deletes `Key' if a quorum of masters holds `Value', on masters and
%% replicas. Replies as {@link lock/4}.
-spec release(key(), value(), timeout()) -> lock_result().
release(Key, Value, Timeout) ->
    ?CHECK([{2, is_value(Value), value}, {3, is_timeout(Timeout), timeout}], [Key, Value, Timeout]),
    OneRound = #{
        request => fun(T) -> {cond_release, T, Key, Value} end,
        undo => fun(T) -> {undo, T, Key} end,
        holder => true,
        replicas => fun(T) -> {release, Key, Value, T} end
    },
    tagged(
        either(Key, OneRound, Timeout, fun() ->
            two_phase(Key, Value, fun epoch_tag/1, Timeout, fun(S, _Masters, Tag, _) ->
                %% Masters and replicas alike.
                locker_call:round(S, {release, Key, Value, Tag}, Timeout)
            end, {holder, release})
        end)
    ).

%%--------------------------------------------------------------------
%% One round (docs/protocol.md, "One-round operations")
%%--------------------------------------------------------------------

%% @doc Whether this node's coordinators use one round when they may: the
%% application environment `one_round' (default `true'; `false' forces
%% the two-phase protocol, e.g. to compare both).
-spec one_round_enabled() -> boolean().
one_round_enabled() ->
    application:get_env(locker, one_round, true) =/= false.

%% @doc How many operation attempts this node's coordinators made in one
%% round and in two phases (since the VM started): how tests and the
%% fault suite check which path was taken.
-spec path_counts() -> #{one_round := non_neg_integer(), two_phase := non_neg_integer()}.
path_counts() ->
    C = locker_meta:path_counter(),
    #{one_round => counters:get(C, 1), two_phase => counters:get(C, 2)}.

count_path(Ix) ->
    counters:add(locker_meta:path_counter(), Ix, 1).

%% One round, or the two-phase protocol (Fallback) when it may not be used.
either(Key, OneRound, Timeout, Fallback) ->
    case one_round_allowed(Key, OneRound) andalso one_round(OneRound#{tag_of => fun epoch_tag/1}, Timeout) of
        Result when Result =:= false; Result =:= two_phase -> Fallback();
        Result -> Result
    end.

%% One round serves keys of this node's own configuration (with a group
%% table: keys of this node's group; keys of other groups take two phases
%% under the group's configuration, see locker_groups). Under a joint
%% configuration, the holder's `extend_lease' and `release' take two
%% phases: the holder rule of "The holder under a joint configuration"
%% (docs/protocol.md) counts the new masters' answers to phase one.
one_round_allowed(Key, OneRound) ->
    locker_groups:config_for(Key) =:= own andalso
        (not maps:get(holder, OneRound, false) orelse
            maps:get(joint, config(), none) =:= none).

%% `two_phase' when this operation must take the two-phase path: this
%% node's configuration is not in `epoch' mode (a master may be an
%% original node, which crashes on a request it does not know), one round
%% is turned off, or a master answered that it does not know the request
%% (an earlier version of this project: it answers, it does not crash).
one_round(Op, Timeout) ->
    case one_round_enabled() andalso config() of
        #{mode := epoch} -> one_round(Op, Timeout, 1);
        _ -> two_phase
    end.

one_round(#{tag_of := TagOf} = Op, Timeout, Retries) ->
    Config = config(),
    case Config of
        #{mode := epoch} ->
            #{epoch := Epoch, replicas := Replicas} = Config,
            Nodes = locker_meta:voters(Config),
            Quorums = locker_meta:quorums(Config),
            Tag = TagOf(Epoch),
            Start = erlang:monotonic_time(millisecond),
            Others =
                case maps:is_key(replicas, Op) of
                    true -> Replicas -- Nodes;
                    false -> []
                end,
            S = locker_call:open(Nodes ++ Others),
            ok = count_path(1),
            try one_round_attempt(S, Nodes, Others, Quorums, Epoch, Start, Tag, Op, Timeout) of
                {Result, Newer, S1} ->
                    ok = locker_call:close(S1),
                    case Result of
                        {no_quorum, _} when Newer =/= [], Retries > 0 ->
                            ok = locker_membership:pull(Newer),
                            case locker_meta:epoch() of
                                Epoch -> Result;
                                _ -> one_round(Op, Timeout, Retries - 1)
                            end;
                        _ ->
                            Result
                    end
            catch
                Class:Reason:Stack ->
                    #{undo := UndoOf} = Op,
                    _ = (catch locker_call:multi_call(Nodes, UndoOf(Tag), min_timeout(Timeout, ?TIMEOUT))),
                    _ = (catch locker_call:close(S)),
                    erlang:raise(Class, Reason, Stack)
            end;
        _ ->
            two_phase
    end.

%% The conditional request to every master; success when W of each quorum
%% applied it; else the undo to every master (those that did not answer or
%% are down included: it follows the write on the same channel).
one_round_attempt(S, Nodes, Others, Quorums, Epoch, Start, Tag, Op, Timeout) ->
    #{request := RequestOf, undo := UndoOf} = Op,
    Single = length(Quorums) =:= 1,
    St0 = [{Set, locker_oneround:new(Wq, length(Set))} || {Set, Wq} <- Quorums],
    Tally = fun(Replies, Pending) ->
        [
            {Set,
                begin
                    In = replies_within(Set, Replies),
                    Missing =
                        case Single of
                            true -> max(length(Set) - length(In) - Pending, 0);
                            false -> 0
                        end,
                    St1 = lists:foldl(fun({_, R}, A) -> locker_oneround:reply(locker_oneround:to_reply(R), A) end, St, In),
                    lists:foldl(fun(_, A) -> locker_oneround:reply(missing, A) end, St1, lists:seq(1, Missing))
                end}
         || {Set, St} <- St0
        ]
    end,
    Decided = fun(Replies, Pending) -> lists:all(fun({_, St}) -> locker_oneround:decided(St) end, Tally(Replies, Pending)) end,
    Soft =
        case Op of
            #{soft_end := End} -> {fun(Replies) -> quorums_met(Quorums, [N || {N, ok} <- Replies]) end, End};
            _ -> none
        end,
    {Replies, _Bad, S1, Late} = locker_call:round(S, Nodes, RequestOf(Tag), Timeout, Decided, Soft),
    %% Replies still pending are not waited for: the undo, if any, follows
    %% them on the same channel.
    _ = locker_call:late(Late),
    Outcomes = [locker_oneround:outcome(St) || {_, St} <- Tally(Replies, 0)],
    Newer = newer(Epoch, Nodes, Replies),
    case {lists:member(two_phase, Outcomes), lists:all(fun(O) -> element(1, O) =:= ok end, Outcomes)} of
        {true, _} ->
            %% A master does not know the one-round requests: the
            %% operation is done again in two phases, once its writes
            %% are undone.
            {_, _, S2} = undo(S1, Nodes, UndoOf(Tag), Start, Timeout),
            {two_phase, [], S2};
        {false, true} ->
            Applied = length([ok || {N, ok} <- Replies, lists:member(N, Nodes)]),
            {ReplicaCommits, S2} =
                case Op of
                    #{replicas := ReplicaReq} when Others =/= [] ->
                        {RR, _, S1b} = locker_call:round(S1, Others, ReplicaReq(Tag), Timeout),
                        {length([ok || {_, ok} <- RR]), S1b};
                    #{catch_up := CatchUp} ->
                        Lagging = [N || {N, R} <- Replies, R =/= ok, lists:member(N, Nodes)],
                        S1c =
                            case Lagging of
                                [] -> S1;
                                _ -> element(3, locker_call:round(S1, Lagging, CatchUp(Tag), Timeout))
                            end,
                        {0, S1c};
                    _ ->
                        {0, S1}
                end,
            {_, W} = lists:last(Quorums),
            {{ok, W, Applied, Applied + ReplicaCommits}, Newer, S2};
        {false, false} ->
            {_, _, S2} = undo(S1, Nodes, UndoOf(Tag), Start, Timeout),
            Floors = [F || {no_quorum, F} <- Outcomes, is_integer(F)],
            Retry =
                case Floors of
                    [] -> undefined;
                    _ -> lists:max(Floors)
                end,
            {{no_quorum, Retry}, Newer, S2}
    end.

%% The undo of a failed attempt, to every master, those found down
%% included (sent without waiting for them), as drop_promises/5.
undo(S, Nodes, Undo, Start, Timeout) ->
    ok = locker_call:notify_down(S, Nodes, Undo),
    locker_call:round(S, Nodes, Undo, cleanup(Start, Timeout)).

%% @private How long a master keeps an unused write promise, in milliseconds.
-spec promise_ttl_ms() -> pos_integer().
promise_ttl_ms() ->
    ?PROMISE_TTL_MS.

%% @private The longest a coordinator waits between starting phase one and
%% starting phase two, in milliseconds.
-spec phase_two_budget_ms() -> pos_integer().
phase_two_budget_ms() ->
    ?PHASE_TWO_BUDGET_MS.

%% Phase one on the masters, then `Commit' (phase two) if W promised. The
%% session also monitors the replicas, which `release' reaches directly.
%%
%% Phase one ends as soon as its outcome is known: W masters promised, or
%% so many refused (or are down) that W promises cannot come. Phase two
%% starts only if that happened within the phase-two budget, counted from
%% before phase one was sent: every promise was granted after that instant
%% and lives ?PROMISE_TTL_MS on its master's clock, so it is still alive
%% when the write arrives unless the clocks' rates differ by more than the
%% margin or the write takes longer than it to arrive. If the budget is
%% spent (this process was descheduled, paused, or a master answered late)
%% the promises are dropped and the operation fails with no_quorum. This
%% project's masters also refuse a stale phase two that would conflict
%% (see docs/protocol.md); the budget is what protects original masters.
%%
%% Whatever happens, the caller gets an answer and the session is closed;
%% if this process raises midway (a bug), the promises it obtained are
%% dropped first.
two_phase(Key, Expected, TagOf, Timeout, Commit) ->
    two_phase(Key, Expected, TagOf, Timeout, Commit, none).

two_phase(Key, Expected, TagOf, Timeout, Commit, Undo) ->
    two_phase(Key, Expected, TagOf, Timeout, Commit, Undo, 1).

%% The configuration (masters, quorums, epoch) is read once per attempt.
%% Masters that refuse a request made under an older epoch than theirs are
%% asked for their configuration; if this node takes a newer one, the
%% operation is tried once more under it.
two_phase(Key, Expected, TagOf, Timeout, Commit, Undo, Retries) ->
    %% Cluster mode: the key's group (see locker_groups); without a group
    %% table, or for a key of this node's own group, this node's
    %% configuration.
    {Group, Config} =
        case locker_groups:config_for(Key) of
            own -> {own, config()};
            {_, _} = Foreign -> Foreign
        end,
    #{epoch := Epoch, replicas := Replicas} = Config,
    Nodes = locker_meta:voters(Config),
    Quorums = locker_meta:quorums(Config),
    Tag = TagOf(Epoch),
    Start = erlang:monotonic_time(millisecond),
    ok = count_path(2),
    S = locker_call:open(Nodes ++ (Replicas -- Nodes)),
    try phases(S, Nodes, Quorums, Epoch, Start, Key, Expected, Tag, Timeout, Commit, Undo) of
        {Result, Newer, S1} ->
            ok = locker_call:close(S1),
            case Result of
                {no_quorum, _} when Newer =/= [], Retries > 0, Group =:= own ->
                    ok = locker_membership:pull(Newer),
                    case locker_meta:epoch() of
                        Epoch -> Result;
                        _ -> two_phase(Key, Expected, TagOf, Timeout, Commit, Undo, Retries - 1)
                    end;
                {no_quorum, _} when Newer =/= [], Retries > 0 ->
                    case locker_groups:catch_up(Group, Newer) of
                        false -> Result;
                        true -> two_phase(Key, Expected, TagOf, Timeout, Commit, Undo, Retries - 1)
                    end;
                _ ->
                    Result
            end
    catch
        Class:Reason:Stack ->
            _ = (catch locker_call:multi_call(Nodes, {release_write_lock, Tag}, min_timeout(Timeout, ?TIMEOUT))),
            _ = (catch locker_call:close(S)),
            erlang:raise(Class, Reason, Stack)
    end.

config() ->
    case locker_meta:config() of
        undefined ->
            erlang:error({locker, not_started}, none, [{error_info, #{module => ?MODULE, cause => not_started}}]);
        Config ->
            Config
    end.

%% A tag that carries the configuration epoch it was made under: opaque to
%% original nodes and lockerd; this project's masters refuse votes and
%% phase two made under another epoch than theirs (see locker_store).
epoch_tag(Epoch) ->
    {'$locker_epoch', Epoch, make_ref()}.

%% Whether the nodes `Ok' hold W of each quorum's masters.
quorums_met(Quorums, Ok) ->
    lists:all(fun({Set, W}) -> length([N || N <- Ok, lists:member(N, Set)]) >= W end, Quorums).

%% Phase one and two. One quorum: W of the masters; during a transition
%% between configurations: W of the old masters and W of the new ones,
%% each counted by its own locker_coord machine, and both must agree.
phases(S, Nodes, Quorums, Epoch, Start, Key, Expected, Tag, Timeout, Commit, Undo) ->
    Single = length(Quorums) =:= 1,
    %% Each quorum's masters, with how their answers count (see counted/3).
    Ops0 = [
        {{Set, counted(Undo, Single, Side)}, locker_coord:new(Wq, length(Set), Start)}
     || {Side, {Set, Wq}} <- lists:zip(lists:seq(1, length(Quorums)), Quorums)
    ],
    %% Masters neither answered nor pending are down: missing votes (with
    %% two quorums the pending count is not split, so only answers count).
    Decided = fun(Replies, Pending) ->
        lists:all(
            fun({{Set, _} = Side, Op0}) ->
                In = within(Side, Replies),
                Missing =
                    case Single of
                        true -> length(Set) - length(In) - Pending;
                        false -> 0
                    end,
                locker_coord:decided(tally(Op0, In, Missing))
            end,
            Ops0
        )
    end,
    Budget = locker:phase_two_budget_ms(),
    {Replies, _Bad, S1, Late} = locker_call:round(
        S, Nodes, {get_write_lock, Key, Expected, Tag}, min_timeout(Timeout, Budget), Decided
    ),
    Ops1 = [
        {Side, tally(Op0, within(Side, Replies), length(Set) - length(within(Side, Replies)))}
     || {{Set, _} = Side, Op0} <- Ops0
    ],
    Now = erlang:monotonic_time(millisecond),
    Afters = [{Set, locker_coord:after_phase_one(Now, Op)} || {Set, Op} <- Ops1],
    Ops2 = [{Set, Op} || {Set, {_, Op}} <- Afters],
    case lists:all(fun({_, {Go, _}}) -> Go =:= phase_two end, Afters) of
        true ->
            {Commits, _, S2} = Commit(S1, Nodes, Tag, Quorums),
            %% Votes that came while phase two ran count too (as in the
            %% original, which waited for every vote); a node answers in
            %% order, so every master that answered phase two is here.
            LateReplies = locker_call:late(Late),
            Ops4 = [
                {Set,
                    lists:foldl(
                        fun({Node, R}, Acc) -> locker_coord:commit(member(Node, Set), applied(Set, R), Acc) end,
                        late(Op, within(Set, LateReplies)),
                        Commits
                    )}
             || {Set, Op} <- Ops2
            ],
            Newer = newer(Epoch, Nodes, Replies ++ LateReplies ++ Commits),
            Outcomes = [locker_coord:outcome(Op) || {_, Op} <- Ops4],
            case lists:all(fun(O) -> element(1, O) =:= ok end, Outcomes) of
                true when Single ->
                    {hd(Outcomes), Newer, S2};
                true ->
                    {_, W} = lists:last(Quorums),
                    Votes = length([ok || {_, ok} <- Replies ++ LateReplies]),
                    {{ok, W, Votes, length([ok || {_, ok} <- Commits])}, Newer, S2};
                false ->
                    %% Fewer than W masters applied phase two (the others
                    %% timed out, went down, or refused a phase two whose
                    %% promise was gone): no success, whatever the votes.
                    %% The original answered {ok, W, Votes, Commits} here.
                    %% Promises the write did not consume are dropped, and
                    %% a failed lock gives back what it stored.
                    {_, _, S3} = drop_promises(S2, Nodes, Tag, Start, Timeout),
                    Stored = [M || {M, ok} <- Commits, lists:member(M, Nodes)],
                    S4 =
                        case Undo of
                            none -> S3;
                            {holder, _} -> S3;
                            _ when Stored =:= [] -> S3;
                            _ -> element(3, Undo(S3, Stored, Tag))
                        end,
                    {{no_quorum, undefined}, Newer, S4}
            end;
        false ->
            {_, _, S2} = drop_promises(S1, Nodes, Tag, Start, Timeout),
            LateReplies = locker_call:late(Late),
            Floors = [
                F
             || {Set, Op} <- Ops2,
                {no_quorum, F} <- [locker_coord:outcome(late(Op, within(Set, LateReplies)))],
                is_integer(F)
            ],
            Retry =
                case Floors of
                    [] -> undefined;
                    _ -> lists:max(Floors)
                end,
            {{no_quorum, Retry}, newer(Epoch, Nodes, Replies ++ LateReplies), S2}
    end.

%% The replies of one quorum's masters, as that quorum counts them.
%% The replies of the masters of Set, as they are (one round).
replies_within(Set, Replies) ->
    [R || {N, _} = R <- Replies, lists:member(N, Set)].

within({Set, Count}, Replies) ->
    [{N, Count(phase_one, R)} || {N, R} <- Replies, lists:member(N, Set)].

member(Node, {Set, _}) -> lists:member(Node, Set).

applied({_, Count}, R) -> Count(phase_two, R) =:= ok.

%% How a quorum's masters' answers count. As they are, except for the
%% holder's `extend_lease' and `release' under a joint configuration on
%% the new masters' side (the second quorum): a new master that does not
%% hold the lease yet (it was stored under the old configuration) answers
%% phase one `not_expected_value'; that does not block (the old masters'
%% W_old promises prove the caller holds the key), and phase two decides
%% there: `extend_lease' stores the lease where nothing conflicts,
%% `release' counts a master where the key is absent (`not_found') as
%% done. See docs/protocol.md, "The holder under a joint configuration".
counted({holder, Op}, false, 2) ->
    fun
        (phase_one, {error, not_expected_value}) -> ok;
        (phase_two, {error, not_found}) when Op =:= release -> ok;
        (_, R) -> R
    end;
counted(_, _, _) ->
    fun(_, R) -> R end.

%% The masters that refused a request because their configuration is
%% newer than this node's.
newer(Epoch, Nodes, Replies) ->
    lists:usort([N || {N, {error, {config_epoch, E}}} <- Replies, E > Epoch, lists:member(N, Nodes)]).

%% Drops Tag's promises on every master, those found down included (a
%% master whose server was reported down may only have been cut off for
%% a moment and still hold a promise, which would block its key for the
%% promise's lifetime): they get the request without waiting for them.
drop_promises(S, Nodes, Tag, Start, Timeout) ->
    ok = locker_call:notify_down(S, Nodes, {release_write_lock, Tag}),
    locker_call:round(S, Nodes, {release_write_lock, Tag}, cleanup(Start, Timeout)).

tally(Op0, Replies, Missing) ->
    Op = lists:foldl(fun({_, R}, Acc) -> locker_coord:vote(locker_coord:to_vote(R), Acc) end, Op0, Replies),
    lists:foldl(fun(_, Acc) -> locker_coord:vote(missing, Acc) end, Op, lists:seq(1, Missing)).

late(Op, LateReplies) ->
    lists:foldl(fun({_, R}, Acc) -> locker_coord:late_vote(locker_coord:to_vote(R), Acc) end, Op, LateReplies).

%% How long dropping promises (and giving back a failed lock) may wait for
%% answers: what is left of the caller's timeout, at most 5 s. It is best
%% effort (an unused promise expires anyway), so a paused master does not
%% hold the caller much past its timeout; nothing waited is sent later.
cleanup(Start, Timeout) ->
    Left =
        case Timeout of
            infinity -> ?TIMEOUT;
            _ -> max(0, Start + Timeout - erlang:monotonic_time(millisecond))
        end,
    min(Left, ?TIMEOUT).

min_timeout(infinity, T) -> T;
min_timeout(T1, T2) -> min(T1, T2).

%%====================================================================
%% Arguments
%%====================================================================

%% A wrong argument fails at once with `badarg' and OTP's extended error
%% information: the shell (and Elixir's ArgumentError) tell which argument
%% is wrong and what was expected, instead of a no_quorum or a timeout.
bad(Checks) ->
    maps:from_list([{Pos, What} || {Pos, false, What} <- Checks]).

%% Leases are whole milliseconds; `infinity' is refused (an original
%% master in the same cluster would crash on it).
is_lease(L) -> is_integer(L) andalso L >= 0.

%% The atom `not_found' cannot be a value: phase one's expected value
%% `not_found' means "absent" on the wire, so a lease holding it would be
%% granted again to the next `lock' (the original has the same flaw).
is_value(V) -> V =/= not_found.

is_interval(I) -> is_integer(I) andalso I > 0.

is_timeout(infinity) -> true;
is_timeout(T) -> is_integer(T) andalso T >= 0.

is_node_list([]) -> true;
is_node_list([N | T]) when is_atom(N) -> is_node_list(T);
is_node_list(_) -> false.

%% @private The text of a wrong argument's error (OTP's error_info).
-spec format_error(term(), erlang:stacktrace()) -> #{pos_integer() => unicode:chardata()}.
format_error(_Reason, [{_M, _F, _As, Info} | _]) ->
    case proplists:get_value(error_info, Info, #{cause => #{}}) of
        #{cause := not_started} ->
            #{general => not_started_text()};
        #{cause := Cause} when is_map(Cause) ->
            maps:map(fun(_, What) -> expected(What) end, Cause);
        _ ->
            #{}
    end;
format_error(_Reason, _Stack) ->
    #{}.

not_started_text() ->
    "locker is not started on this node: start the locker application (or locker:start_link/1) first".

expected(value) -> "expected a value other than the atom not_found (the protocol's marker for an absent key)";
expected(lease) -> "expected a lease length: a non-negative integer of milliseconds";
expected(timeout) -> "expected a timeout: a non-negative integer of milliseconds or infinity";
expected(quorum) -> "expected a write quorum: a positive integer";
expected(interval) -> "expected an interval: a positive integer of milliseconds";
expected(nodes) -> "expected a proper list of node names (atoms)".

tagged({ok, _, _, _} = Ok) -> Ok;
tagged({no_quorum, _}) -> {error, no_quorum}.

%%====================================================================
%% Reads and waits
%%====================================================================

%% @doc Reads `Key' from this node's store, in the calling process (no
%% message). Not a quorum read: a replica may lag, and a value may be
%% superseded the moment it is returned. A lease past its expiry time is
%% never returned, even before the sweep deletes it. In cluster mode
%% ({@link locker_groups}) only the masters and replicas of the key's
%% group store it ({@link holds/1}): elsewhere this returns
%% `{error, not_found}'; use {@link master_dirty_read/1} there.
-spec dirty_read(key()) -> {ok, value()} | {error, not_found}.
dirty_read(Key) ->
    locker_nif:dirty_read(Key).

%% @doc A dirty read on a master of `Key''s group (see
%% {@link locker_groups}; without groups, of the cluster): locally if
%% this node is one, else on a random one through `rpc'.
-spec master_dirty_read(key()) -> {ok, value()} | {error, not_found} | {badrpc, term()}.
master_dirty_read(Key) ->
    Nodes = masters_of(Key),
    case lists:member(node(), Nodes) of
        true ->
            dirty_read(Key);
        false when Nodes =:= [] ->
            {badrpc, no_masters};
        false ->
            Master = lists:nth(rand:uniform(length(Nodes)), Nodes),
            rpc:call(Master, locker, dirty_read, [Key])
    end.

%% @doc The masters that vote on `Key': those of its group in cluster
%% mode (see {@link locker_groups}), else this node's masters (during a
%% transition, the old and the new ones).
-spec masters_of(key()) -> [node()].
masters_of(Key) ->
    case locker_groups:config_for(Key) of
        own -> element(1, meta());
        {_, Config} -> locker_meta:voters(Config)
    end.

%% @doc Whether this node stores `Key': it is a master or a replica of
%% the key's group (without groups: of the cluster), so that
%% {@link dirty_read/1} can see it.
-spec holds(key()) -> boolean().
holds(Key) ->
    locker_groups:holds(Key).

%% @doc Waits until `Key' has a value on this node (it arrives through the
%% replication log or a write). Exits like `gen_server:call/3' on timeout.
%% Unlike the original, a value that arrives between the local read and
%% the call to the server is not missed.
-spec wait_for(key(), timeout()) -> {ok, value()}.
wait_for(Key, Timeout) ->
    ?CHECK([{2, is_timeout(Timeout), timeout}], [Key, Timeout]),
    case dirty_read(Key) of
        {ok, Value} -> {ok, Value};
        {error, not_found} -> gen_server:call(locker, {wait_for, Key, Timeout}, Timeout)
    end.

%% @equiv wait_for_release(Key, 5000)
-spec wait_for_release(key()) -> {ok, released} | {error, key_not_locked}.
wait_for_release(Key) ->
    wait_for_release(Key, ?TIMEOUT).

%% @doc Waits until `Key' is released or expires on this node; returns
%% `{error, key_not_locked}' at once if it holds no value here. Exits like
%% `gen_server:call/3' on timeout.
-spec wait_for_release(key(), timeout()) -> {ok, released} | {error, key_not_locked}.
wait_for_release(Key, Timeout) ->
    ?CHECK([{2, is_timeout(Timeout), timeout}], [Key, Timeout]),
    case dirty_read(Key) of
        {ok, _} -> gen_server:call(locker, {wait_for_release, Key, Timeout}, Timeout);
        {error, not_found} -> {error, key_not_locked}
    end.

%%====================================================================
%% Operators
%%====================================================================

%% @doc Times a lock and release of a probe key: `{Millis, LockResult}'.
-spec lag() -> {float(), lock_result()}.
lag() ->
    Key = {'__lock_lag_probe', os:timestamp()},
    {Time, Result} = timer:tc(fun() -> lock(Key, foo, 2000) end),
    _ = release(Key, foo),
    {Time / 1000, Result}.

%% @doc Counts of promises and leases in this node's store (leases past
%% their expiry count until swept). O(1), read from the store directly,
%% without a message to the server.
-spec summary() -> [{write_locks | leases, non_neg_integer()}].
summary() ->
    #{promises := WriteLocks, leases := Leases} = locker_nif:stats(),
    [{write_locks, WriteLocks}, {leases, Leases}].

%%====================================================================
%% The original's helpers
%%====================================================================

%% @doc Phase one on `Nodes' with a fresh tag: `{Tag, Replies, BadNodes}'
%% (the original's helper; {@link lock/4} and the others do all of it).
-spec get_write_lock([node()], key(), value() | not_found, timeout()) ->
    {reference(), [{node(), term()}], [node()]}.
get_write_lock(Nodes, Key, Expected, Timeout) ->
    ?CHECK([{1, is_node_list(Nodes), nodes}, {4, is_timeout(Timeout), timeout}], [Nodes, Key, Expected, Timeout]),
    Tag = make_ref(),
    {Replies, Bad} = locker_call:multi_call(Nodes, {get_write_lock, Key, Expected, Tag}, Timeout),
    {Tag, Replies, Bad}.

%% @doc Phase two of a lock on `Nodes' (the original's helper):
%% `{Replies, BadNodes}'. A node whose promise for `Tag' is gone answers
%% `{error, no_promise}' where the write would displace another holder.
-spec do_write([node()], term(), key(), value(), non_neg_integer(), timeout()) -> {[{node(), term()}], [node()]}.
do_write(Nodes, Tag, Key, Value, LeaseLength, Timeout) ->
    ?CHECK(
        [{1, is_node_list(Nodes), nodes}, {5, is_lease(LeaseLength), lease}, {6, is_timeout(Timeout), timeout}],
        [Nodes, Tag, Key, Value, LeaseLength, Timeout]
    ),
    locker_call:multi_call(Nodes, {write, Tag, Key, Value, LeaseLength}, Timeout).

%% @doc Drops `Tag''s promises on `Nodes' (the original's helper):
%% `{Replies, BadNodes}'.
-spec release_write_lock([node()], term(), timeout()) -> {[{node(), term()}], [node()]}.
release_write_lock(Nodes, Tag, Timeout) ->
    ?CHECK([{1, is_node_list(Nodes), nodes}, {3, is_timeout(Timeout), timeout}], [Nodes, Tag, Timeout]),
    locker_call:multi_call(Nodes, {release_write_lock, Tag}, Timeout).

%% @doc One entry of this node's view (the original's helper): `nodes'
%% (the masters), `replicas' or `w'. Throws `{locker, no_such_meta_key}'
%% for another key or when the server is not started, as the original.
-spec get_meta_ets(nodes | replicas | w) -> [node()] | pos_integer().
get_meta_ets(nodes) -> element(1, get_meta());
get_meta_ets(replicas) -> element(2, get_meta());
get_meta_ets(w) -> element(3, get_meta());
get_meta_ets(_) -> throw({locker, no_such_meta_key}).

%% @doc The wall clock in whole seconds (the original's helper).
-spec now_to_seconds() -> integer().
now_to_seconds() ->
    erlang:system_time(second).

%% @doc This node's view of the cluster: `{Masters, Replicas, W}'.
%% Throws `{locker, no_such_meta_key}' when the server is not started.
-spec get_meta() -> {[node()], [node()], pos_integer()}.
get_meta() ->
    locker_meta:get().

%% This node's view for the coordinator and master_dirty_read/1: before
%% the server ever started on this node, an error that says so (the
%% original threw `{locker, no_such_meta_key}', which names nothing the
%% caller did; get_meta/0 and get_meta_ets/1 still throw it).
meta() ->
    case locker_meta:current() of
        undefined ->
            erlang:error({locker, not_started}, none, [{error_info, #{module => ?MODULE, cause => not_started}}]);
        Meta ->
            Meta
    end.

%% @doc `{ok, Promises, Leases, LeaseTimer, LockTimer, PushTimer}':
%% promises as `{Key, Tag, ExpiresAtMs}', leases as
%% `{Key, Value, ExpiresAtMs}' (wall-clock milliseconds), and in the
%% original's three timer slots how long until the lease sweep, the
%% promise sweep and the log push are next due (ms), or `paused'. The
%% server runs one timer; to drive time by hand (`expire_leases',
%% `expire_locks', `push_trans_log'), pause the tasks with
%% `gen_server:call(locker, {'$locker_debug', pause_timers})' (see
%% docs/protocol.md, Timers).
-spec get_debug_state() ->
    {ok, list(), list(), non_neg_integer() | paused, non_neg_integer() | paused, non_neg_integer() | paused}.
get_debug_state() ->
    gen_server:call(locker, get_debug_state).
