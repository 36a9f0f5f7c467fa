%% @doc Cluster mode: the key space spread over several quorum groups,
%% each with its own masters, replicas and write quorum W (as Redlock's
%% cluster mode, with static groups).
%%
%% The group table is a list of groups `#{id => Id, masters => [node()],
%% replicas => [node()], w => W}' (`id' defaults to the group's position,
%% counted from 1; `replicas' to `[]'), set once per node from the
%% application environment (`groups') or with {@link set/1}. Without a
%% table (the default) there is one group, the node's configuration, and
%% nothing changes.
%%
%% A key belongs to the group of highest score under rendezvous hashing:
%% the score of group `Id' for `Key' is the MD5 digest of the group id as a
%% 64-bit big-endian unsigned integer followed by the key's external term
%% format as `term_to_binary(Key, [{minor_version, 2}])' writes it (atoms
%% in UTF-8), compared as 16-byte big-endian numbers. Adding a group moves
%% only the keys whose new highest score is the new group's. The Rust
%% client computes the same function (`locker_client::groups`), and both
%% are checked against `tests/group_vectors.txt'.
%%
%% Each group is its own membership cluster: a node is a master or a
%% replica of at most one group, and its own configuration
%% ({@link locker_meta}) is its group's. A coordinator routes each key to
%% its group: its own configuration when the key is in its own group, else
%% the group's entry, kept per node with the epoch last seen from that
%% group's masters (a refusal made under a newer epoch is caught up from
%% them under the rule of {@link locker_membership:pull/1}: W of the
%% masters it knows must report it).
%%
%% Changing the table (adding, removing or resizing groups) is not done:
%% {@link set/1} refuses a table other than the one in place with
%% `{error, {groups_change_unsupported, Current, New}}' rather than
%% overwrite it (two nodes routing a key to different groups could both
%% grant it). A group's own masters and W change through
%% {@link locker_membership:change/3} run on a node of that group.
%% @end
-module(locker_groups).

-export([set/1, table/0, own/0, check/1, normalize/1, pick/2, group_of/1, score/2, key_bytes/1]).
-export([config_for/1, holds/1, catch_up/2, own_view/1, reset/0, nodes/0, refusal/1]).
-export_type([group/0, table/0]).

-define(TABLE, {locker, groups}).
-define(OWN, {locker, own_group}).
-define(CACHE(Id), {locker, group_config, Id}).
-define(CALL_TIMEOUT, 5000).

-type id() :: non_neg_integer().
-type group() :: #{id := id(), masters := [node()], replicas := [node()], w := pos_integer()}.
-type table() :: [group()].

%%====================================================================
%% The table
%%====================================================================

%% @doc Sets this node's group table (checked as {@link check/1}). Setting
%% the table in place again is `ok'; another table is refused.
-spec set([map()]) -> ok | {error, term()}.
set(Groups) ->
    case check(Groups) of
        ok ->
            Table = normalize(Groups),
            case table() of
                undefined ->
                    Own = own_of(Table),
                    persistent_term:put(?OWN, Own),
                    persistent_term:put(?TABLE, Table),
                    rewatch();
                Table ->
                    ok;
                Current ->
                    {error, {groups_change_unsupported, Current, Table}}
            end;
        {error, _} = Error ->
            Error
    end.

%% @private Forgets the table and the cached group configurations (tests).
-spec reset() -> ok.
reset() ->
    case table() of
        undefined ->
            ok;
        Table ->
            _ = [persistent_term:erase(?CACHE(Id)) || #{id := Id} <- Table],
            _ = persistent_term:erase(?TABLE),
            _ = persistent_term:erase(?OWN),
            ok
    end.

%% @doc This node's group table, `undefined' when none is set.
-spec table() -> table() | undefined.
table() ->
    persistent_term:get(?TABLE, undefined).

%% @doc The id of the group this node is a master or replica of, `none'
%% when it holds no group (or when no table is set).
-spec own() -> id() | none.
own() ->
    persistent_term:get(?OWN, none).

%% @doc `{Masters, Replicas, W}' for this node's own configuration under
%% `Groups': its group's, or no masters when it holds no group (a node
%% that only coordinates).
-spec own_view([map()]) -> {[node()], [node()], pos_integer()}.
own_view(Groups) ->
    Table = normalize(Groups),
    case [G || G <- Table, maps:get(id, G) =:= own_of(Table)] of
        [#{masters := M, replicas := R, w := W}] -> {M, R, W};
        [] -> {[], [], 1}
    end.

own_of(Table) ->
    case [Id || #{id := Id, masters := M, replicas := R} <- Table, lists:member(node(), M ++ R)] of
        [Id] -> Id;
        [] -> none
    end.

%% @doc Checks a group table: a non-empty list of maps with `masters' (a
%% non-empty list of distinct node names), `w' (`2W > N', `W =< N'), and
%% optionally `id' (distinct non-negative integers below 2^64) and
%% `replicas'; a node may be a master or a replica of one group only.
%% The error names the bad value: `{error, {bad_groups, Value, Expected}}'.
-spec check(term()) -> ok | {error, {bad_groups, term(), string()}}.
check([_ | _] = Groups) ->
    case lists:dropwhile(fun(G) -> check_group(G) =:= ok end, Groups) of
        [Bad | _] ->
            check_group(Bad);
        [] ->
            Table = normalize(Groups),
            Ids = [Id || #{id := Id} <- Table],
            Nodes = lists:append([M ++ (R -- M) || #{masters := M, replicas := R} <- Table]),
            case {Ids -- lists:usort(Ids), Nodes -- lists:usort(Nodes)} of
                {[Dup | _], _} ->
                    bad(Dup, "distinct group ids");
                {[], [Node | _]} ->
                    bad(Node, "a node in one group only (a master or a replica of one group)");
                {[], []} ->
                    ok
            end
    end;
check(Other) ->
    bad(Other, "a non-empty list of groups (maps with masters and w)").

check_group(#{masters := M, w := W} = G) ->
    Extra = maps:keys(G) -- [id, masters, replicas, w],
    Id = maps:get(id, G, 1),
    Replicas = maps:get(replicas, G, []),
    if
        Extra =/= [] ->
            bad(G, "a group with keys id, masters, replicas and w only");
        not (is_integer(Id) andalso Id >= 0 andalso Id < 1 bsl 64) ->
            bad(Id, "a group id: a non-negative integer below 2^64");
        not (is_list(M) andalso M =/= []) ->
            bad(M, "a non-empty list of master node names (atoms)");
        not is_list(Replicas) ->
            bad(Replicas, "a list of replica node names (atoms)");
        true ->
            Distinct = length(M) =:= length(lists:usort(M)),
            case [N || N <- M ++ Replicas, not is_atom(N)] of
                [N | _] ->
                    bad(N, "a node name (an atom)");
                [] when not Distinct ->
                    bad(M, "distinct masters");
                [] when not is_integer(W) ->
                    bad(W, "a write quorum: a positive integer");
                [] when W > length(M); 2 * W =< length(M) ->
                    bad(W, lists:flatten(io_lib:format("a write quorum W with 2W > N and W =< N (N = ~b masters)", [length(M)])));
                [] ->
                    ok
            end
    end;
check_group(G) ->
    bad(G, "a group: a map with masters and w").

bad(Value, Expected) ->
    {error, {bad_groups, Value, Expected}}.

%% @doc The table with every default filled in (ids by position from 1,
%% `replicas' `[]'), node lists as ordsets, sorted by id.
-spec normalize([map()]) -> table().
normalize(Groups) ->
    {Table, _} = lists:mapfoldl(
        fun(G, Pos) ->
            {#{
                    id => maps:get(id, G, Pos),
                    masters => lists:usort(maps:get(masters, G)),
                    replicas => lists:usort(maps:get(replicas, G, [])),
                    w => maps:get(w, G)
                },
                Pos + 1}
        end,
        1,
        Groups
    ),
    lists:sort(fun(#{id := A}, #{id := B}) -> A =< B end, Table).

%%====================================================================
%% The hash
%%====================================================================

%% @doc The bytes a key is hashed by: its external term format with atoms
%% in UTF-8 (`minor_version' 2), which does not depend on the OTP release.
-spec key_bytes(term()) -> binary().
key_bytes(Key) ->
    term_to_binary(Key, [{minor_version, 2}]).

%% @doc The score of group `Id' for a key's bytes (see the module doc).
-spec score(id(), binary()) -> binary().
score(Id, Bytes) ->
    erlang:md5([<<Id:64>>, Bytes]).

%% @doc The group of `Key' in `Table' (highest score; on a tie, which
%% MD5 makes unlikely, the lower id).
-spec pick(term(), table()) -> group().
pick(_Key, [Only]) ->
    Only;
pick(Key, [First | Rest]) ->
    Bytes = key_bytes(Key),
    {_, Best} = lists:foldl(
        fun(#{id := Id} = G, {Top, _} = Acc) ->
            case score(Id, Bytes) of
                S when S > Top -> {S, G};
                _ -> Acc
            end
        end,
        {score(maps:get(id, First), Bytes), First},
        Rest
    ),
    Best.

%% @doc The id of `Key''s group in this node's table (`none' without one).
-spec group_of(term()) -> id() | none.
group_of(Key) ->
    case table() of
        undefined -> none;
        Table -> maps:get(id, pick(Key, Table))
    end.

%%====================================================================
%% Routing
%%====================================================================

%% @doc The configuration an operation on `Key' runs under: this node's
%% own when there is no table or the key is in its group, else the key's
%% group's (as last caught up with).
-spec config_for(term()) -> {own | id(), locker_meta:config()} | own.
config_for(Key) ->
    case table() of
        undefined ->
            own;
        Table ->
            #{id := Id} = G = pick(Key, Table),
            case own() of
                Id -> own;
                _ -> {Id, cached(G)}
            end
    end.

cached(#{id := Id, masters := M, replicas := R, w := W}) ->
    case persistent_term:get(?CACHE(Id), undefined) of
        undefined ->
            #{epoch => locker_meta:initial_epoch(), masters => M, replicas => R, w => W, joint => none, mode => legacy};
        Config ->
            Config
    end.

%% @doc What a master answers a vote on `Key' from the group point of
%% view: `none' (no table, this node in no group, or the key is in its
%% group), else `{error, {wrong_group, OwnGroup}}': the coordinator routed
%% the key by another table than this node's. Refusing keeps two
%% coordinators with different tables from granting one key in two groups,
%% as long as the masters agree on the table.
-spec refusal(term()) -> none | {error, {wrong_group, id()}}.
refusal(Key) ->
    case table() of
        undefined ->
            none;
        Table ->
            case own() of
                none ->
                    none;
                Own ->
                    case maps:get(id, pick(Key, Table)) of
                        Own -> none;
                        _ -> {error, {wrong_group, Own}}
                    end
            end
    end.

%% @doc Whether this node stores `Key' (a master or a replica of its
%% group): where {@link locker:dirty_read/1} can see it.
-spec holds(term()) -> boolean().
holds(Key) ->
    case config_for(Key) of
        own ->
            case locker_meta:current() of
                {Masters, Replicas, _} -> lists:member(node(), Masters) orelse lists:member(node(), Replicas);
                undefined -> false
            end;
        {_, _} ->
            false
    end.

%% @doc After masters `From' of group `Id' refused an operation as made
%% under an older epoch: asks them and the group's masters this node knows
%% for their configuration, and keeps the newest one that W of the known
%% masters (of either side when joint) report at an epoch at least as new
%% (the rule of {@link locker_membership:pull/1}). Returns whether it took
%% a newer one.
-spec catch_up(id(), [node()]) -> boolean().
catch_up(Id, From) ->
    case [G || #{id := I} = G <- table_or_empty(), I =:= Id] of
        [G] ->
            Own = cached(G),
            Ask = lists:usort(From ++ locker_meta:voters(Own)),
            {Replies, _} = gen_server:multi_call(Ask, locker, {'$locker_config', get}, ?CALL_TIMEOUT),
            #{epoch := OwnE} = Own,
            Reported = [{N, E} || {N, {ok, #{epoch := E}}} <- Replies],
            Newer = [{E, C} || {_, {ok, #{mode := epoch, epoch := E} = C}} <- Replies, E > OwnE, fits(C)],
            Backed = [X || {E, _} = X <- Newer, backed(E, Own, Reported)],
            case lists:reverse(lists:sort(Backed)) of
                [{_, Config} | _] ->
                    persistent_term:put(?CACHE(Id), Config),
                    ok = rewatch(),
                    true;
                [] ->
                    false
            end;
        [] ->
            false
    end.

%% @doc The masters and replicas of every group, as this node knows them
%% (the table, and each group's configuration as last caught up with):
%% the `locker' servers this node's server watches for its coordinators.
-spec nodes() -> [node()].
nodes() ->
    lists:usort(
        lists:append([
            locker_meta:voters(C) ++ maps:get(replicas, C) ++ M ++ R
         || #{masters := M, replicas := R} = G <- table_or_empty(), C <- [cached(G)]
        ])
    ).

%% Has the local server (if it runs) watch the nodes of every group.
rewatch() ->
    case whereis(locker) of
        undefined ->
            ok;
        _ ->
            try gen_server:call(locker, {'$locker_groups', rewatch}, ?CALL_TIMEOUT) of
                _ -> ok
            catch
                exit:_ -> ok
            end
    end.

table_or_empty() ->
    case table() of
        undefined -> [];
        T -> T
    end.

fits(#{masters := M, w := W, joint := J} = C) when is_list(M), is_integer(W) ->
    is_map_key(replicas, C) andalso locker_membership:fits(C) andalso (J =:= none orelse is_tuple(J));
fits(_) ->
    false.

backed(Epoch, Own, Reported) ->
    AtLeast = fun(Set) -> length([N || {N, E} <- Reported, E >= Epoch, lists:member(N, Set)]) end,
    lists:any(fun({Set, W}) -> AtLeast(Set) >= W end, locker_meta:quorums(Own)).
