%% @doc This node's view of the cluster and its fencing-token counter: the
%% one owner of both (kept in `persistent_term', read by coordinators
%% without a message, written by the `locker' server).
%% @end
-module(locker_meta).

-export([get/0, current/0, put/3, push_targets/0, token_counter/0]).

-define(META, {locker, meta}).
-define(TOKENS, {locker, token_counter}).

%% @doc `{Masters, Replicas, W}'. Throws `{locker, no_such_meta_key}' when
%% the server never started on this node (as the original).
-spec get() -> {[node()], [node()], pos_integer()}.
get() ->
    case current() of
        undefined -> throw({locker, no_such_meta_key});
        Meta -> Meta
    end.

%% @doc The view, or `undefined' before the server first started.
-spec current() -> {[node()], [node()], pos_integer()} | undefined.
current() ->
    persistent_term:get(?META, undefined).

%% @doc Sets the view (as ordsets). Returns whether this node is a master
%% with replicas to push its transaction log to (see {@link push_targets/0}).
-spec put([node()], [node()], pos_integer()) -> boolean().
put(Masters0, Replicas0, W) ->
    Meta = {ordsets:from_list(Masters0), ordsets:from_list(Replicas0), W},
    %% persistent_term:put/2 of an equal term is cheap, but a changed one
    %% costs a global GC: only when it changes.
    _ = current() =:= Meta orelse persistent_term:put(?META, Meta),
    push_targets() =/= [].

%% @doc The replicas this node pushes its transaction log to: none unless
%% it is a master; never another master (a node listed among both), whose
%% promises a replayed log would bypass.
-spec push_targets() -> [node()].
push_targets() ->
    case current() of
        {Masters, Replicas, _} ->
            case lists:member(node(), Masters) of
                true -> (Replicas -- Masters) -- [node()];
                false -> []
            end;
        undefined ->
            []
    end.

%% @doc The node's fencing-token counter (an atomic), created on first use:
%% by the server at start, or by a coordinator that runs before it (a lost
%% race only means two counters for a moment; the masters' floors keep
%% tokens increasing anyway).
-spec token_counter() -> atomics:atomics_ref().
token_counter() ->
    case persistent_term:get(?TOKENS, undefined) of
        undefined ->
            C = atomics:new(1, [{signed, true}]),
            persistent_term:put(?TOKENS, C),
            C;
        Counter ->
            Counter
    end.
