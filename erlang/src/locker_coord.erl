%% @doc The two-phase coordinator's decisions, without I/O: {@link locker}
%% sends the requests and feeds in the answers; this module decides when
%% phase one is over, whether phase two may start, and what the operation
%% answers. The same machine as `locker_core::coordinator' in Rust (used by
%% lockerd's client); both run the scenarios of
%% `tests/coordinator_scenarios.txt'.
%% @end
-module(locker_coord).

-export([new/3, vote/2, decided/1, after_phase_one/2, late_vote/2, commit/3, outcome/1, to_vote/1]).
-export_type([op/0, vote/0, outcome/0]).

-record(op, {
    w :: non_neg_integer(),
    masters :: non_neg_integer(),
    started :: integer(),
    votes = 0 :: non_neg_integer(),
    answered = 0 :: non_neg_integer(),
    floor = undefined :: undefined | non_neg_integer(),
    phase_two = false :: boolean(),
    late_votes = 0 :: non_neg_integer(),
    master_commits = 0 :: non_neg_integer(),
    commits = 0 :: non_neg_integer()
}).

-opaque op() :: #op{}.
-type vote() :: ok | refused | missing | {stale_token, non_neg_integer()}.
-type outcome() ::
    {ok, W :: non_neg_integer(), Votes :: non_neg_integer(), Commits :: non_neg_integer()}
    | {no_quorum, RetryAbove :: undefined | non_neg_integer()}.

%% @doc An operation with quorum `W' over `Masters' masters, whose phase
%% one is sent at `NowMs' (monotonic milliseconds).
-spec new(non_neg_integer(), non_neg_integer(), integer()) -> op().
new(W, Masters, NowMs) ->
    #op{w = W, masters = Masters, started = NowMs}.

%% @doc A master's phase-one reply, as a {@link vote()}.
-spec to_vote(term()) -> vote().
to_vote(ok) -> ok;
to_vote({error, {stale_token, F}}) when is_integer(F), F >= 0 -> {stale_token, F};
to_vote(_) -> refused.

%% @doc Records one master's phase-one answer.
-spec vote(vote(), op()) -> op().
vote(Vote, #op{answered = A} = Op) ->
    count(Vote, Op#op{answered = A + 1}).

count(ok, #op{votes = V} = Op) -> Op#op{votes = V + 1};
count({stale_token, F}, #op{floor = undefined} = Op) -> Op#op{floor = F};
count({stale_token, F}, #op{floor = G} = Op) -> Op#op{floor = max(F, G)};
count(_, Op) -> Op.

%% @doc Whether phase one's outcome is known: W promised, or W can no
%% longer promise (stop waiting for the other masters then).
-spec decided(op()) -> boolean().
decided(#op{w = W, masters = M, votes = V, answered = A}) ->
    V >= W orelse V + max(M - A, 0) < W.

%% @doc What to do when phase one is over (decided, or its wait ran out):
%% phase two only with W promises, within the phase-two budget counted
%% from when phase one was sent ({@link locker:phase_two_budget_ms/0}).
-spec after_phase_one(integer(), op()) -> {phase_two | abort, op()}.
after_phase_one(NowMs, #op{w = W, votes = V, started = T0} = Op) ->
    Go = W > 0 andalso V >= W andalso NowMs - T0 < locker:phase_two_budget_ms(),
    {
        case Go of
            true -> phase_two;
            false -> abort
        end,
        Op#op{phase_two = Go}
    }.

%% @doc A phase-one answer that came after phase one was over: counted in
%% the reported votes, and its stale-token floor in the retry.
-spec late_vote(vote(), op()) -> op().
late_vote(ok, #op{late_votes = L} = Op) -> Op#op{late_votes = L + 1};
late_vote(Vote, Op) -> count(Vote, Op).

%% @doc Records one phase-two answer from a master (`true') or a replica,
%% applied (`true') or not.
-spec commit(boolean(), boolean(), op()) -> op().
commit(_, false, Op) -> Op;
commit(true, true, #op{commits = C, master_commits = MC} = Op) -> Op#op{commits = C + 1, master_commits = MC + 1};
commit(false, true, #op{commits = C} = Op) -> Op#op{commits = C + 1}.

%% @doc The answer: a success needs W masters that applied phase two. A
%% stale-token floor is offered for a retry only when phase one failed.
-spec outcome(op()) -> outcome().
outcome(#op{phase_two = true, w = W, master_commits = MC, votes = V, late_votes = L, commits = C}) when MC >= W ->
    {ok, W, V + L, C};
outcome(#op{phase_two = true}) ->
    {no_quorum, undefined};
outcome(#op{floor = F}) ->
    {no_quorum, F}.
