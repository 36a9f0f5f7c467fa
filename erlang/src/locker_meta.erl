%% @doc This node's configuration of the cluster and its fencing-token
%% counter: the one owner of both (kept in `persistent_term', read by
%% coordinators without a message, written by the `locker' server).
%%
%% A configuration ({@link config()}) is the masters, the replicas and the
%% write quorum W, with a configuration epoch and, during a transition
%% from one set of masters (or W) to another, the previous masters and W
%% (`joint'): then every operation needs W of the new masters and the old W
%% of the old masters. The `mode' says whether the configuration was set
%% through epochs (`epoch': set by {@link locker_membership}; this node's
%% server refuses votes and views made under another epoch) or by the
%% original requests `set_nodes' and `set_w' (`legacy': original semantics,
%% nothing is checked). See docs/protocol.md, "Configurations and epochs".
%% @end
-module(locker_meta).

-export([get/0, current/0, put/3, push_targets/0, token_counter/0, path_counter/0]).
-export([config/0, put_config/1, epoch/0, voters/1, quorums/1, initial_epoch/0]).
-export([note_epoch/1, highest_counter/0]).
-export_type([config/0, epoch/0]).

-define(META, {locker, meta}).
-define(CONFIG, {locker, config}).
-define(TOKENS, {locker, token_counter}).
-define(PATHS, {locker, path_counter}).
-define(HIGHEST, {locker, highest_epoch_counter}).

%% Totally ordered: a counter, then the node that proposed it (the atom
%% `none' for a configuration set by the original requests).
-type epoch() :: {non_neg_integer(), atom()}.
-type config() :: #{
    epoch := epoch(),
    masters := [node()],
    replicas := [node()],
    w := pos_integer(),
    joint := none | {[node()], pos_integer()},
    mode := epoch | legacy
}.

%% @doc `{Masters, Replicas, W}'. Throws `{locker, no_such_meta_key}' when
%% the server never started on this node (as the original). During a
%% transition `Masters' holds the old and the new masters (every one of
%% them is asked to vote) and `W' is the new quorum: see {@link quorums/1}
%% for what a success needs.
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

%% @doc The configuration, or `undefined' before the server first started.
-spec config() -> config() | undefined.
config() ->
    persistent_term:get(?CONFIG, undefined).

%% @doc The epoch of this node's configuration (the initial epoch before
%% the server first started).
-spec epoch() -> epoch().
epoch() ->
    case config() of
        #{epoch := E} -> E;
        undefined -> initial_epoch()
    end.

%% @doc The epoch of a node that was never configured through epochs.
%% @doc Notes an epoch this node proposed or took: {@link highest_counter/0}
%% never goes down (for the life of the VM), so that this node never
%% proposes the same epoch twice, even one whose change was aborted and
%% rolled back everywhere it was seen.
-spec note_epoch(epoch()) -> ok.
note_epoch({Counter, _}) ->
    case highest_counter() >= Counter of
        true -> ok;
        false -> persistent_term:put(?HIGHEST, Counter)
    end.

%% @doc The highest epoch counter this node proposed or took.
-spec highest_counter() -> non_neg_integer().
highest_counter() ->
    persistent_term:get(?HIGHEST, 0).

-spec initial_epoch() -> epoch().
initial_epoch() ->
    {0, none}.

%% @doc Every master that votes under `Config': the new and, during a
%% transition, the old ones.
-spec voters(config()) -> [node()].
voters(#{masters := Masters, joint := none}) -> Masters;
voters(#{masters := Masters, joint := {Old, _}}) -> ordsets:union(Old, Masters).

%% @doc What a success needs under `Config': `W' masters of each set.
-spec quorums(config()) -> [{[node()], pos_integer()}].
quorums(#{masters := Masters, w := W, joint := none}) -> [{Masters, W}];
quorums(#{masters := Masters, w := W, joint := {Old, OldW}}) -> [{Old, OldW}, {Masters, W}].

%% @doc Sets the view through the original requests (`set_nodes', `set_w',
%% the application environment): a `legacy' configuration, epoch kept.
%% Returns whether this node is a master with replicas to push its
%% transaction log to (see {@link push_targets/0}).
-spec put([node()], [node()], pos_integer()) -> boolean().
put(Masters0, Replicas0, W) ->
    Epoch = epoch(),
    put_config(#{
        epoch => Epoch,
        masters => Masters0,
        replicas => Replicas0,
        w => W,
        joint => none,
        mode => legacy
    }).

%% @doc Sets the configuration (node lists as ordsets). Returns whether
%% this node pushes its transaction log (see {@link push_targets/0}).
-spec put_config(config()) -> boolean().
put_config(#{masters := M0, replicas := R0, joint := Joint0} = Config0) ->
    Joint =
        case Joint0 of
            none -> none;
            {Old, OldW} -> {ordsets:from_list(Old), OldW}
        end,
    Config = Config0#{masters := ordsets:from_list(M0), replicas := ordsets:from_list(R0), joint := Joint},
    #{replicas := Replicas, w := W} = Config,
    Meta = {voters(Config), Replicas, W},
    %% persistent_term:put/2 of an equal term is cheap, but a changed one
    %% costs a global GC: only when it changes. The configuration first:
    %% the epoch a master checks votes against.
    _ = config() =:= Config orelse persistent_term:put(?CONFIG, Config),
    ok = note_epoch(maps:get(epoch, Config)),
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

%% @doc The counters of this node's coordinators: operation attempts made
%% in one round (1) and in two phases (2) (see {@link locker:path_counts/0}).
%% Made by the `locker' server when it starts (or by the first caller).
-spec path_counter() -> counters:counters_ref().
path_counter() ->
    case persistent_term:get(?PATHS, undefined) of
        undefined ->
            C = counters:new(2, [write_concurrency]),
            persistent_term:put(?PATHS, C),
            C;
        Counter ->
            Counter
    end.
