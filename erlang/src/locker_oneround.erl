%% @doc The one-round coordinator's decisions, without I/O: {@link locker}
%% sends each master the conditional request of an operation
%% (`cond_write', `cond_update', `cond_extend', `cond_release') and feeds
%% in the answers; this module says when the outcome is known and what it
%% is. One machine per quorum (two during a joint configuration). See
%% docs/protocol.md, "One-round operations".
%% @end
-module(locker_oneround).

-export([new/2, to_reply/1, reply/2, decided/1, outcome/1]).
-export_type([st/0, reply/0, outcome/0]).

-record(st, {
    w :: non_neg_integer(),
    masters :: non_neg_integer(),
    applied = 0 :: non_neg_integer(),
    answered = 0 :: non_neg_integer(),
    floor = undefined :: undefined | non_neg_integer(),
    unknown = false :: boolean()
}).

-opaque st() :: #st{}.
-type reply() :: ok | refused | missing | unknown | {stale_token, non_neg_integer()}.
-type outcome() ::
    {ok, W :: non_neg_integer(), Applied :: non_neg_integer()}
    | {no_quorum, RetryAbove :: undefined | non_neg_integer()}
    | two_phase.

%% @doc A one-round operation with quorum `W' over `Masters' masters.
-spec new(non_neg_integer(), non_neg_integer()) -> st().
new(W, Masters) ->
    #st{w = W, masters = Masters}.

%% @doc A master's answer as a {@link reply()}: `unknown' for a master
%% that does not know the one-round requests (the operation is then done
%% in two phases).
-spec to_reply(term()) -> reply().
to_reply(ok) -> ok;
to_reply({error, {stale_token, F}}) when is_integer(F), F >= 0 -> {stale_token, F};
to_reply({error, {unknown_request, _}}) -> unknown;
to_reply(_) -> refused.

%% @doc Records one master's answer (`missing': down, or no answer).
-spec reply(reply(), st()) -> st().
reply(R, #st{answered = A} = St) ->
    count(R, St#st{answered = A + 1}).

count(ok, #st{applied = N} = St) -> St#st{applied = N + 1};
count({stale_token, F}, #st{floor = undefined} = St) -> St#st{floor = F};
count({stale_token, F}, #st{floor = G} = St) -> St#st{floor = max(F, G)};
count(unknown, St) -> St#st{unknown = true};
count(_, St) -> St.

%% @doc Whether waiting for more answers can change the outcome: every
%% master answered, W applied can no longer come, or a master does not
%% know the requests.
-spec decided(st()) -> boolean().
decided(#st{unknown = true}) -> true;
decided(#st{w = W, masters = M, applied = N, answered = A}) -> A >= M orelse N + max(M - A, 0) < W.

%% @doc The outcome: a success needs W masters that applied the request
%% (and W > 0); a stale-token floor is offered for a retry.
-spec outcome(st()) -> outcome().
outcome(#st{unknown = true}) -> two_phase;
outcome(#st{w = W, applied = N}) when W > 0, N >= W -> {ok, W, N};
outcome(#st{floor = F}) -> {no_quorum, F}.
