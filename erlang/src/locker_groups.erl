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
%% Changing the table (adding or removing groups) goes through
%% {@link change/2}: a joint table, in which a key that moves needs a
%% quorum of its old group and of its new one, then the new table once the
%% leases held before have ended (docs/protocol.md, "Changing the table").
%% {@link set/1} refuses to overwrite a table. A group's own masters and W
%% change through {@link locker_membership:change/3} run on a node of that
%% group.
%% @end
-module(locker_groups).

-export([set/1, table/0, own/0, check/1, normalize/1, pick/2, group_of/1, score/2, key_bytes/1]).
-export([config_for/1, holds/1, catch_up/2, own_view/1, reset/0, nodes/0, refusal/1]).
-export([change/1, change/2, joint/0, table_epoch/0, server_request/1]).
-export_type([group/0, table/0, table_epoch/0]).

-define(TABLE, {locker, groups}).
-define(OWN, {locker, own_group}).
-define(CACHE(Id), {locker, group_config, Id}).
-define(JOINT, {locker, groups_joint}).
-define(TEPOCH, {locker, groups_epoch}).
-define(CALL_TIMEOUT, 5000).
%% The tag epoch of an operation on a moving key during a table change.
-define(MARK(TE), {'$locker_table', TE}).

-type id() :: non_neg_integer().
-type table_epoch() :: 0 | {pos_integer(), node()}.
-type group() :: #{id := id(), masters := [node()], replicas := [node()], w := pos_integer()}.
-type table() :: [group()].

%%====================================================================
%% The table
%%====================================================================

%% @doc Sets this node's group table (checked as {@link check/1}). Setting
%% the table in place again is `ok'; another table is refused with
%% `{error, {table_in_place, Current, New}}' (change tables with
%% {@link change/2}), except when the table in place came from a change,
%% which is kept (with a warning): an application restarted with the
%% environment it started with does not undo a change.
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
                    case table_epoch() of
                        0 ->
                            {error, {table_in_place, Current, Table}};
                        E ->
                            %% Changed at runtime (change/2) since the
                            %% environment was written: the change wins.
                            logger:warning("locker: group table ~0p from the environment ignored: "
                                           "the table changed at runtime (table epoch ~0p) is kept", [Table, E]),
                            ok
                    end
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
            _ = persistent_term:erase(?JOINT),
            _ = persistent_term:erase(?TEPOCH),
            ok
    end.

%% @doc During a table change, `{TableEpoch, OldTable}' (the table in
%% place, {@link table/0}, is then the new one); else `undefined'.
-spec joint() -> {table_epoch(), table()} | undefined.
joint() ->
    persistent_term:get(?JOINT, undefined).

%% @doc The epoch of this node's table: 0 for a table set by {@link set/1}
%% or the environment; `{Counter, Proposer}' after a {@link change/2}
%% (ordered after 0 and by counter).
-spec table_epoch() -> table_epoch().
table_epoch() ->
    persistent_term:get(?TEPOCH, 0).

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
%% Changing the table
%%====================================================================

%% @equiv change(Groups, #{})
-spec change([map()]) -> ok | {error, term()}.
change(Groups) ->
    change(Groups, #{}).

%% @doc Changes the group table of the cluster to `Groups', safely (see
%% docs/protocol.md, "Changing the table"). Groups present in both tables
%% (same id) must be equal; the nodes of groups added must be in no group
%% of the current table, those of groups removed in no group of the new
%% one. Steps: a joint table (the change's table epoch) is installed on
%% every node that has a table and on every master and replica of both
%% tables; W masters of every group of both must take it, else it is
%% rolled back (`{error, {refused, [{Node, Why}]}}'). Then the call waits
%% until, in every old group, `N - W + 1' masters report that every lease
%% they held when they took it has ended (at most `wait' ms, default
%% 60000; past it the cluster stays joint, which is safe, and
%% `{error, {old_leases, Groups}}' is returned: calling again with the
%% same table finishes the change). The new groups' masters raise their
%% token floor to the old masters', and the new table is installed.
-spec change([map()], #{wait => non_neg_integer()}) -> ok | {error, term()}.
change(Groups, Opts) ->
    %% One change at a time among the connected nodes (as membership
    %% changes); two at once in a partition cannot both get W masters of a
    %% group to take their joint tables.
    global:trans({{?MODULE, change}, self()}, fun() -> change_(Groups, Opts) end).

change_(Groups, Opts) ->
    case {check(Groups), table()} of
        {{error, _} = Error, _} ->
            Error;
        {ok, undefined} ->
            {error, no_table};
        {ok, Current} ->
            New = normalize(Groups),
            case joint() of
                undefined when New =:= Current ->
                    ok;
                undefined ->
                    case compatible(Current, New) of
                        ok -> change_from(Current, New, Opts);
                        Error -> Error
                    end;
                {TE, Old} when New =:= Current ->
                    %% A change left joint: finish it.
                    finish(TE, Old, New, targets(Old, New), Opts);
                {_, _} ->
                    {error, {change_in_progress, Current}}
            end
    end.

%% Groups in both tables are the same; added and removed groups' nodes
%% belong to no group of the other table.
compatible(Old, New) ->
    OldIds = [Id || #{id := Id} <- Old],
    NewIds = [Id || #{id := Id} <- New],
    Changed = [Id || #{id := Id} = G <- New, lists:member(Id, OldIds), not lists:member(G, Old)],
    NodesOf = fun(T) -> lists:append([M ++ R || #{masters := M, replicas := R} <- T]) end,
    Added = [G || #{id := Id} = G <- New, not lists:member(Id, OldIds)],
    Removed = [G || #{id := Id} = G <- Old, not lists:member(Id, NewIds)],
    OldNodes = NodesOf(Old),
    NewNodes = NodesOf(New),
    Moved = [N || N <- NodesOf(Added), lists:member(N, OldNodes)],
    Left = [N || N <- NodesOf(Removed), lists:member(N, NewNodes)],
    if
        Changed =/= [] -> bad(hd(Changed), "a group kept by the change unchanged (same masters, replicas and w)");
        Moved =/= [] -> bad(hd(Moved), "a node of an added group that is in no group of the current table");
        Left =/= [] -> bad(hd(Left), "a node of a removed group that is in no group of the new table");
        true -> ok
    end.

%% Every node that has a table (connected nodes are asked), and every
%% master and replica of both tables.
targets(Old, New) ->
    Named = [N || #{masters := M, replicas := R} <- Old ++ New, N <- M ++ R],
    Others = erlang:nodes(),
    With = [N || N <- Others, is_list(catch rpc:call(N, ?MODULE, table, [], ?CALL_TIMEOUT))],
    lists:usort([node() | Named ++ With]).

change_from(Old, New, Opts) ->
    Targets = targets(Old, New),
    {Epochs, _} = rpc:multicall(Targets, ?MODULE, table_epoch, [], ?CALL_TIMEOUT),
    %% Above every table epoch seen, and this node's own: two changes at
    %% once never share an epoch (an abort undoes only its own).
    TE = {1 + lists:max([0 | [C || {C, _} <- Epochs, is_integer(C)]]), node()},
    {Replies, Bad} = gen_server:multi_call(Targets, locker, {'$locker_groups', {joint, TE, Old, New}}, ?CALL_TIMEOUT),
    Took = [N || {N, ok} <- Replies],
    Short = [G || #{masters := M, w := W} = G <- Old ++ New, length([N || N <- M, lists:member(N, Took)]) < W],
    case Short of
        [] ->
            finish(TE, Old, New, Targets, Opts);
        _ ->
            _ = gen_server:multi_call(Targets, locker, {'$locker_groups', {abort, TE, Old}}, ?CALL_TIMEOUT),
            Why = [{N, R} || {N, R} <- Replies, R =/= ok] ++ [{N, no_answer} || N <- Bad],
            logger:warning("locker: group table change ~0p rolled back: ~0p", [TE, Why]),
            {error, {refused, Why}}
    end.

%% Waits for the old leases, carries the token floor over, installs the
%% new table.
finish(TE, Old, New, Targets, Opts) ->
    Deadline = erlang:monotonic_time(millisecond) + maps:get(wait, Opts, 60000),
    case wait_old_leases(Old, Deadline, 0) of
        {ok, Floor} ->
            NewMasters = lists:usort([N || #{masters := M} <- New, N <- M]),
            _ = gen_server:multi_call(NewMasters, locker, {'$locker_groups', {floor, Floor}}, ?CALL_TIMEOUT),
            {Replies, Bad} = gen_server:multi_call(Targets, locker, {'$locker_groups', {final, TE, New}}, ?CALL_TIMEOUT),
            case [{N, R} || {N, R} <- Replies, R =/= ok] ++ [{N, no_answer} || N <- Bad] of
                [] -> ok;
                Missed ->
                    %% Safe: they keep the joint table (or the old one, whose
                    %% moving keys the masters refuse) until told.
                    logger:warning("locker: group table ~0p not installed on ~0p", [TE, Missed]),
                    ok
            end;
        {waiting, Groups} ->
            {error, {old_leases, Groups}}
    end.

%% Until N - W + 1 masters of every old group report that every lease
%% they held when they took the joint table has ended: their highest
%% token floor, or the groups still waiting at the deadline.
wait_old_leases(Old, Deadline, Floor0) ->
    Answers = [
        {G, [R || M <- Masters, R <- [catch gen_server:call({locker, M}, {'$locker_config', horizon}, ?CALL_TIMEOUT)]]}
     || #{masters := Masters} = G <- Old
    ],
    Floor = lists:max([Floor0 | [F || {_, Rs} <- Answers, {ok, _, _, F} <- Rs, is_integer(F)]]),
    Waiting = [
        Id
     || {#{id := Id, masters := M, w := W}, Rs} <- Answers,
        length([ok || {ok, _, 0, _} <- Rs]) < length(M) - W + 1
    ],
    case Waiting of
        [] ->
            {ok, Floor};
        _ ->
            case erlang:monotonic_time(millisecond) >= Deadline of
                true ->
                    {waiting, Waiting};
                false ->
                    timer:sleep(100),
                    wait_old_leases(Old, Deadline, Floor)
            end
    end.

%% @private A table request to the `locker' server, run in it:
%% `{Reply, NoteHorizon}' (whether the server must note how long the leases
%% it holds may live: on taking a joint table). Raises `badarg' on bad
%% input.
-spec server_request(term()) -> {term(), boolean()}.
server_request({joint, {C, P} = TE, OldG, NewG}) when is_integer(C), C > 0, is_atom(P) ->
    {Old, New} = {checked(OldG), checked(NewG)},
    case {table(), joint()} of
        {New, {TE, Old}} ->
            {ok, false};
        {Cur, undefined} when Cur =:= Old; Cur =:= undefined ->
            case table_epoch() < TE of
                true ->
                    %% The joint state first: a reader that sees the new
                    %% table also sees it.
                    persistent_term:put(?TEPOCH, TE),
                    persistent_term:put(?JOINT, {TE, Old}),
                    persistent_term:put(?OWN, case own_of(New) of none -> own_of(Old); Id -> Id end),
                    persistent_term:put(?TABLE, New),
                    {ok, true};
                false ->
                    {{error, {stale_table_epoch, TE, table_epoch()}}, false}
            end;
        {Cur, J} ->
            {{error, {table_conflict, Cur, J}}, false}
    end;
server_request({abort, {C, P} = TE, OldG}) when is_integer(C), is_atom(P) ->
    Old = checked(OldG),
    case joint() of
        {TE, Old} ->
            persistent_term:put(?TABLE, Old),
            persistent_term:put(?OWN, own_of(Old)),
            _ = persistent_term:erase(?JOINT),
            {ok, false};
        _ ->
            {ok, false}
    end;
server_request({final, {C, P} = TE, NewG}) when is_integer(C), is_atom(P) ->
    New = checked(NewG),
    case {table(), joint()} of
        {New, {TE, _}} ->
            persistent_term:put(?OWN, own_of(New)),
            _ = persistent_term:erase(?JOINT),
            {ok, false};
        {New, undefined} ->
            {ok, false};
        {_, undefined} ->
            %% A node that missed the joint table: the old leases are gone
            %% (the change waited for them), so the new one is safe here.
            case table_epoch() < TE of
                true ->
                    persistent_term:put(?TEPOCH, TE),
                    persistent_term:put(?OWN, own_of(New)),
                    persistent_term:put(?TABLE, New),
                    {ok, false};
                false ->
                    {{error, {stale_table_epoch, TE, table_epoch()}}, false}
            end;
        {Cur, J} ->
            {{error, {table_conflict, Cur, J}}, false}
    end;
server_request({floor, F}) when is_integer(F), F >= 0 ->
    {locker_nif:raise_token_floor(F), false};
server_request(_) ->
    error(badarg).

checked(Groups) ->
    case check(Groups) of
        ok -> normalize(Groups);
        _ -> error(badarg)
    end.

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
%%
%% During a table change ({@link change/2}), a key whose group differs
%% between the old and the new table runs under both groups' quorums, as a
%% joint configuration: W of its old group's masters and W of its new
%% group's, with the change's table epoch in its tag.
-spec config_for(term()) -> {id() | {joint, table_epoch()}, locker_meta:config()} | own.
config_for(Key) ->
    case table() of
        undefined ->
            own;
        Table ->
            G = pick(Key, Table),
            case joint() of
                undefined ->
                    routed(G);
                {TE, Old} ->
                    case pick(Key, Old) of
                        G ->
                            routed(G);
                        #{masters := OldM, w := OldW, replicas := OldR} ->
                            #{masters := M, w := W, replicas := R} = G,
                            {{joint, TE}, #{
                                epoch => ?MARK(TE),
                                masters => M,
                                replicas => lists:usort(R ++ OldR),
                                w => W,
                                joint => {OldM, OldW},
                                mode => legacy
                            }}
                    end
            end
    end.

routed(#{id := Id} = G) ->
    case own() of
        Id -> own;
        _ -> {Id, cached(G)}
    end.

cached(#{id := Id, masters := M, replicas := R, w := W}) ->
    case persistent_term:get(?CACHE(Id), undefined) of
        undefined ->
            #{epoch => locker_meta:initial_epoch(), masters => M, replicas => R, w => W, joint => none, mode => legacy};
        Config ->
            Config
    end.

%% @doc What a master answers a vote or a phase two (`get_write_lock',
%% `write', `update', `extend_lease') from the group point of view: `none'
%% (no table, or the key is in this node's group), else
%% `{error, {wrong_group, OwnGroup}}': the coordinator routed the key by
%% another table than this node's. Refusing keeps two coordinators with
%% different tables from granting one key in two groups, as long as the
%% masters agree on the table. During a table change, a request on a
%% moving key of this node's old or new group is taken only with the
%% change's table epoch in its tag, else refused with
%% `{error, {table_epoch, TableEpoch}}'.
-spec refusal(term()) -> none | {error, {wrong_group, id() | none} | {table_epoch, table_epoch()}}.
refusal({get_write_lock, Key, _, Tag}) -> refusal(Key, Tag);
refusal({write, Tag, Key, _, _}) -> refusal(Key, Tag);
refusal({update, Tag, Key, _}) -> refusal(Key, Tag);
refusal({extend_lease, Tag, Key, _, _}) -> refusal(Key, Tag);
%% One-round operations (docs/protocol.md), as the phase-two requests
%% they stand for; a release (and an undo) only gives back.
refusal({cond_write, Tag, Key, _, _}) -> refusal(Key, Tag);
refusal({cond_update, Tag, Key, _, _}) -> refusal(Key, Tag);
refusal({cond_extend, Tag, Key, _, _}) -> refusal(Key, Tag);
refusal(_) -> none.

refusal(Key, Tag) ->
    case {table(), own()} of
        {undefined, _} ->
            none;
        {_, none} ->
            %% A node in no group (one that only coordinates, or the
            %% master of a group a change removed) stores no key.
            {error, {wrong_group, none}};
        {Table, Own} ->
            #{id := New} = pick(Key, Table),
            case joint() of
                undefined when New =:= Own ->
                    none;
                undefined ->
                    {error, {wrong_group, Own}};
                {TE, Old} ->
                    case maps:get(id, pick(Key, Old)) of
                        New when New =:= Own -> none;
                        New -> {error, {wrong_group, Own}};
                        OldId when OldId =/= Own, New =/= Own -> {error, {wrong_group, Own}};
                        _ ->
                            case mark(Tag) of
                                TE -> none;
                                _ -> {error, {table_epoch, TE}}
                            end
                    end
            end
    end.

%% The table epoch a coordinator's tag carries (see config_for/1), or none.
mark({'$locker_token', Inner, _}) -> mark(Inner);
mark({'$locker_epoch', ?MARK(TE), _}) -> TE;
mark(_) -> none.

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
        {{joint, _}, #{masters := M, replicas := R, joint := {OldM, _}}} ->
            lists:member(node(), M ++ R ++ OldM);
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
