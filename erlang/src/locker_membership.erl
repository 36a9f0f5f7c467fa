%% @doc Safe reconfiguration: changes the masters, the replicas or the
%% write quorum W of a running cluster without ever letting two holders of
%% one key coexist.
%%
%% {@link change/3} (and {@link locker:set_nodes/3}, {@link locker:set_w/2},
%% which go through it) checks its input, then moves the cluster through
%% configuration epochs:
%% <ol>
%% <li>Every node it configures is probed (over `rpc', which an original
%%     node answers without harm): a node of the new configuration that
%%     is down or does not run `locker' is an error naming it, and nothing
%%     changes anywhere. A W that does not fit the masters (`W =< N/2' or
%%     `W > N') is an error naming W and N.</li>
%% <li>The joint configuration (epoch e+1: new masters and W, with the old
%%     masters and W) is installed on every node. A node accepts it only
%%     if it is newer than its own and made from its own configuration
%%     (or if its configuration was never set through epochs). It must be
%%     accepted by W_old of the old masters and W_new of the new ones;
%%     otherwise the nodes that took it go back, and the error names the
%%     masters that refused it or could not be reached.</li>
%% <li>While it is joint, every operation needs W_old votes and commits of
%%     the old masters and W_new of the new ones. The call waits until no
%%     lease stored under the old configuration can still be live (enough
%%     old masters report that the leases they held when they took epoch
%%     e+1 have run out), then installs the new configuration (epoch e+2,
%%     accepted from e+1 only) with the highest token floor the old
%%     masters reported, so that fencing tokens keep increasing.</li>
%% </ol>
%% `lockerd' takes part like a BEAM node (it is probed with a request that
%% it answers and that only it receives). When a master of the old or the
%% new configuration does not know epochs (an original `locker' node, an
%% older version of this project or of lockerd), the change falls back to the original semantics (the view is
%% overwritten on every node, as the original `set_nodes' did) and logs a
%% warning: such a change is not protected. See docs/protocol.md,
%% "Configurations and epochs".
%% @end
-module(locker_membership).

-export([change/3, change/4, set_nodes/3, set_w/2, config/0]).
%% Called by the `locker' server and over rpc.
-export([info/0, pull/0, pull/1]).
%% The rule a configuration must fit (locker_server checks installs).
-export([fits/1]).

-include_lib("kernel/include/logger.hrl").

-define(PROBE_TIMEOUT, 5000).
-define(CALL_TIMEOUT, 5000).
%% Longest pause between two questions about the old leases.
-define(POLL_MS, 500).

-type reason() ::
    not_started
    | no_masters
    | {bad_w, W :: integer(), N :: non_neg_integer()}
    | {unreachable, node()}
    | {not_running, node()}
    | {refused, [{node(), term()}]}
    | {joint, RemainingMs :: non_neg_integer()}
    | busy.
-type options() :: #{nodes => [node()], wait => timeout()}.
-export_type([reason/0, options/0]).

%% @equiv change(Masters, Replicas, W, #{})
-spec change([node()], [node()], pos_integer()) -> ok | {error, reason()}.
change(Masters, Replicas, W) ->
    change(Masters, Replicas, W, #{}).

%% @doc Makes `Masters', `Replicas' and `W' the configuration of the
%% cluster, safely (see the module documentation). The nodes configured
%% are the old and the new masters and replicas, this node, and the
%% option `nodes'. `wait' (default `infinity') bounds how long the call
%% waits for the leases of the old configuration to run out: past it the
%% cluster stays in the joint configuration (safe; operations need both
%% quorums) and the call returns `{error, {joint, RemainingMs}}'; calling
%% it again finishes the change.
%%
%% Errors (nothing changed unless said): `not_started' (no `locker' server
%% here), `no_masters', `{bad_w, W, N}', `{unreachable, Node}' and
%% `{not_running, Node}' (a node of the new configuration),
%% `{refused, [{Node, Why}]}' (the masters that refused the new
%% configuration or did not answer), `{joint, RemainingMs}', `busy'
%% (another change held the cluster too long).
-spec change([node()], [node()], pos_integer(), options()) -> ok | {error, reason()}.
change(Masters0, Replicas0, W, Opts) when is_map(Opts) ->
    is_node_list(Masters0) andalso is_node_list(Replicas0) andalso is_integer(W) andalso
        is_node_list(maps:get(nodes, Opts, [])) orelse error(badarg, [Masters0, Replicas0, W, Opts]),
    Masters = ordsets:from_list(Masters0),
    Replicas = ordsets:from_list(Replicas0),
    N = length(Masters),
    Fits = quorum_fits(N, W),
    if
        N =:= 0 ->
            {error, no_masters};
        not Fits ->
            {error, {bad_w, W, N}};
        true ->
            case locker_meta:config() of
                undefined ->
                    {error, not_started};
                _ ->
                    Run = fun() -> run(Masters, Replicas, W, Opts, 3) end,
                    case global:trans({?MODULE, self()}, Run, [node() | nodes()], 20) of
                        aborted -> {error, busy};
                        Result -> Result
                    end
            end
    end.

%% @doc {@link locker:set_nodes/3}: masters `Primaries' and replicas
%% `Replicas' with this node's W, configuring `Cluster' too.
-spec set_nodes([node()], [node()], [node()]) -> ok | {error, reason()}.
set_nodes(Cluster, Primaries, Replicas) ->
    case locker_meta:config() of
        undefined -> {error, not_started};
        #{w := W} -> change(Primaries, Replicas, W, #{nodes => Cluster})
    end.

%% @doc {@link locker:set_w/2}: quorum `W' with this node's masters and
%% replicas, configuring `Cluster' too. On a node that has no masters yet
%% (never configured) there is nothing to protect: `W' is set on this node
%% and on `Cluster' by the original request, as the original did; the
%% nodes that refuse it (configured through epochs) are reported as
%% `{error, {refused, [{Node, Why}]}}'.
-spec set_w([node()], pos_integer()) -> ok | {error, reason()}.
set_w(Cluster, W) ->
    case locker_meta:config() of
        undefined ->
            {error, not_started};
        #{masters := [], mode := legacy} ->
            {Replies, Down} = gen_server:multi_call(lists:usort([node() | Cluster]), locker, {set_w, W}, ?CALL_TIMEOUT),
            %% A node configured through epochs refuses the original
            %% request: W was not set there.
            case [{N, why(R)} || {N, R} <- Replies, R =/= ok] of
                [] when Down =:= [] -> ok;
                [] -> {error, {unreachable, hd(Down)}};
                Refused -> {error, {refused, Refused ++ [{N, unreachable} || N <- Down]}}
            end;
        #{masters := M, replicas := R} ->
            change(M, R, W, #{nodes => Cluster})
    end.

%% @doc This node's configuration (`undefined' before the server started).
-spec config() -> locker_meta:config() | undefined.
config() ->
    locker_meta:config().

%% @private What a change asks each node over `rpc': its configuration and
%% token floor (raised to every live lease's token).
-spec info() -> {ok, locker_meta:config(), non_neg_integer()} | {error, not_running}.
info() ->
    case {whereis(locker), locker_meta:config()} of
        {Pid, #{} = Config} when is_pid(Pid) ->
            {Floor, _} = locker_nif:membership_snapshot(),
            {ok, Config, Floor};
        _ ->
            {error, not_running}
    end.

%% @private Asks this node's masters for their configuration and takes the
%% newest one if it is newer than this node's (a node that missed a change
%% catches up). Only when this node's configuration was set through
%% epochs: its masters are then all nodes of this project (an original
%% node must never get a request it does not know).
-spec pull() -> ok.
pull() ->
    case locker_meta:config() of
        #{mode := epoch} = Config -> pull(locker_meta:voters(Config) -- [node()]);
        _ -> ok
    end.

%% @private {@link pull/0} from the masters `From' (and, when this node's
%% configuration was set through epochs, its own masters too).
%%
%% A newer configuration is taken only if it is backed: a quorum of this
%% node's own configuration (W of its masters; of either side when it is
%% joint) reports an epoch at least as new. A node that never had masters
%% (restarted empty, in `legacy' mode) takes one that a majority of
%% `From' reports. One master of this node's view alone (a master
%% restarted with a wrong view, which made itself a newer epoch) is not
%% believed: a real change past this node's epoch was taken by a quorum of
%% its masters (docs/protocol.md, "A node that missed a change").
-spec pull([node()]) -> ok.
pull(From) ->
    pull(From, fun(_) -> true end).

%% pull/1, taking only configurations `Wanted' accepts.
pull(From, Wanted) ->
    Own = locker_meta:config(),
    Ask =
        case Own of
            #{mode := epoch} -> lists:usort(From ++ locker_meta:voters(Own)) -- [node()];
            _ -> lists:usort(From) -- [node()]
        end,
    {Replies, _} = gen_server:multi_call(Ask, locker, {'$locker_config', get}, ?CALL_TIMEOUT),
    OwnE = locker_meta:epoch(),
    Reported = [{N, E} || {N, {ok, #{epoch := E}}} <- Replies],
    Newer = [{E, N, C} || {N, {ok, #{mode := epoch, epoch := E} = C}} <- Replies, E > OwnE, Wanted(C)],
    Backed = [X || {E, _, _} = X <- Newer, backed(E, Own, lists:usort(From), Reported)],
    case lists:reverse(lists:sort(Backed)) of
        [{_, Node, Config} | _] ->
            _ = catch gen_server:call(locker, {'$locker_config', {catch_up, Config, Node}}, ?CALL_TIMEOUT),
            ok;
        [] ->
            %% None, or none backed (not logged here: this runs after
            %% failed operations; the refusals are logged where they
            %% happen).
            ok
    end.

%% Whether `Epoch' is reported by a quorum of `Own' (see pull/1).
backed(Epoch, Own, From, Reported) ->
    AtLeast = fun(Set) -> length([N || {N, E} <- Reported, E >= Epoch, lists:member(N, Set)]) end,
    case locker_meta:voters(Own) of
        [] -> 2 * AtLeast(From) > length(From);
        _ -> lists:any(fun({Set, W}) -> AtLeast(Set) >= W end, locker_meta:quorums(Own))
    end.

%%====================================================================
%% The change
%%====================================================================

run(Masters, Replicas, W, Opts, Attempts) ->
    Cur = locker_meta:config(),
    Extra = maps:get(nodes, Opts, []),
    Old = ordsets:union([locker_meta:voters(Cur), maps:get(replicas, Cur)]),
    New = ordsets:union([Masters, Replicas, ordsets:from_list(Extra), [node()]]),
    Involved = ordsets:union(Old, New),
    Probes = maps:from_list([{N, probe(N)} || N <- Involved]),
    Bad = [{N, P} || N <- New, P <- [maps:get(N, Probes)], P =:= unreachable orelse P =:= not_running],
    case Bad of
        [{Node, What} | _] ->
            {error, {What, Node}};
        [] ->
            Foreign = [N || {N, foreign} <- maps:to_list(Probes)],
            AllMasters = ordsets:union(Masters, locker_meta:voters(Cur)),
            Project = [{N, C, F} || {N, {project, C, F}} <- maps:to_list(Probes)],
            %% The masters this node trusts for a catch-up: its own, or
            %% (it never had any: restarted empty, say) those the caller
            %% asked for; pull/1 takes a newer configuration only if a
            %% quorum of them reports it.
            %% A node without masters only rejoins this way: it takes the
            %% configuration the caller asked for (the README's quick
            %% start on a restarted node), not another one, which it
            %% would then change (a joining node with a wrong view must
            %% not rewrite the cluster: it gets `conflict').
            {Trust, Wanted} =
                case locker_meta:voters(Cur) of
                    [] -> {Masters, fun(C) -> is_target(C, Masters, W) end};
                    Voters -> {Voters, fun(_) -> true end}
                end,
            Newer = [N || {N, #{mode := epoch, epoch := E} = C, _} <- Project, E > maps:get(epoch, Cur),
                          lists:member(N, Trust), Wanted(C)],
            if
                Newer =/= [], Attempts > 0 ->
                    %% This node missed a change: catch up, then decide.
                    ok = pull(Trust, Wanted),
                    run(Masters, Replicas, W, Opts, Attempts - 1);
                true ->
                    case [N || N <- Foreign, lists:member(N, AllMasters)] of
                        [] ->
                            epochs(Cur, Masters, Replicas, W, Opts, Project, Foreign, Attempts);
                        Originals ->
                            fallback(Cur, Masters, Replicas, W, Project, Foreign, Originals)
                    end
            end
    end.

is_target(#{masters := M, w := W, joint := none}, Masters, W) -> M =:= Masters;
is_target(_, _, _) -> false.

%% `{project, Config, Floor}': runs this project's locker; `foreign': runs
%% a locker that does not know epochs (original, older version);
%% `unreachable'; `not_running'.
probe(Node) when Node =:= node() ->
    case info() of
        {ok, C, F} -> {project, C, F};
        {error, not_running} -> not_running
    end;
probe(Node) ->
    case rpc:call(Node, ?MODULE, info, [], ?PROBE_TIMEOUT) of
        {ok, #{} = C, F} when is_integer(F) ->
            {project, C, F};
        {error, not_running} ->
            not_running;
        {badrpc, {'EXIT', {undef, _}}} ->
            case rpc:call(Node, erlang, whereis, [locker], ?PROBE_TIMEOUT) of
                Pid when is_pid(Pid) -> foreign;
                undefined -> not_running;
                %% lockerd serves only locker's own rpc functions, and
                %% answers a request it does not know (an original node
                %% would crash): it knows epochs if it answers this one.
                {badrpc, {'EXIT', {undef, _}}} -> lockerd_probe(Node);
                _ -> unreachable
            end;
        _ ->
            unreachable
    end.

lockerd_probe(Node) ->
    case catch gen_server:call({locker, Node}, {'$locker_config', info}, ?PROBE_TIMEOUT) of
        {ok, #{} = C, F} when is_integer(F) -> {project, C, F};
        {error, {unknown_request, _}} -> foreign;
        {'EXIT', {timeout, _}} -> unreachable;
        {'EXIT', {noproc, _}} -> not_running;
        {'EXIT', _} -> unreachable;
        _ -> foreign
    end.

epochs(#{joint := {_, _}} = Cur, Masters, Replicas, W, Opts, Project, _Foreign, Attempts) ->
    %% A change left joint (its wait ran out, or its caller died): finish
    %% it first.
    case finish(Cur, nodes_of(Project), Opts) of
        ok when Attempts > 0 -> run(Masters, Replicas, W, Opts, Attempts - 1);
        ok -> {error, busy};
        Error -> Error
    end;
epochs(Cur, Masters, Replicas, W, Opts, Project, Foreign, Attempts) ->
    %% Nodes that do not know epochs (replicas, coordinators with their own
    %% view) get the new view only once the final configuration is in
    %% place: their votes carry no epoch, so before that they could lock
    %% on the new masters alone while a lease of the old configuration
    %% may still live.
    case epochs_(Cur, Masters, Replicas, W, Opts, Project, Attempts) of
        ok -> set_foreign_replicas(Foreign, Masters, Replicas, W);
        Error -> Error
    end.

epochs_(Cur, Masters, Replicas, W, Opts, Project, _Attempts) ->
    #{epoch := Base, masters := OldM, w := OldW, mode := Mode} = Cur,
    Target = #{masters => Masters, replicas => Replicas, w => W, mode => epoch},
    %% Above every epoch probed and every epoch this node ever proposed or
    %% took (an aborted change's epoch is never proposed again).
    Counter = lists:max(
        [element(1, maps:get(epoch, C)) || {_, C, _} <- Project] ++ [element(1, Base), locker_meta:highest_counter()]
    ),
    Floor = lists:max([0 | [F || {_, _, F} <- Project]]),
    Nodes = nodes_of(Project),
    SameQuorums = OldM =:= Masters andalso OldW =:= W,
    if
        SameQuorums, Mode =:= epoch, map_get(replicas, Cur) =:= Replicas ->
            %% Nothing changes, unless a node involved has another
            %% configuration (a node restarted empty, one that missed a
            %% change): then the same configuration under a new epoch.
            case [N || {N, C, _} <- Project, C =/= Cur] of
                [] ->
                    ok;
                _ ->
                    Next = Target#{epoch => {Counter + 1, node()}, joint => none},
                    install(Base, Next, Floor, Nodes, [{Masters, W}], Cur)
            end;
        SameQuorums; OldM =:= []; OldW > length(OldM) ->
            %% The same votes decide before and after, or no quorum could
            %% form before (no masters, or a W above their number, as on a
            %% node started with start_link(W) that knows only itself, the
            %% README's quick start): one step.
            Next = Target#{epoch => {Counter + 1, node()}, joint => none},
            install(Base, Next, Floor, Nodes, [{Masters, W}], Cur);
        true ->
            Joint = Target#{epoch => {Counter + 1, node()}, joint => {OldM, OldW}},
            case install(Base, Joint, Floor, Nodes, [{OldM, OldW}, {Masters, W}], Cur) of
                ok -> finish(Joint, Nodes, Opts);
                Error -> Error
            end
    end.

nodes_of(Project) ->
    [N || {N, _, _} <- Project].

%% Installs `Next' (made from epoch `Base') on `Nodes': it must be taken by
%% W of each quorum's masters, else those that took it go back to `Prev'.
install(Base, Next, Floor, Nodes, Quorums, Prev) ->
    #{epoch := E} = Next,
    ok = locker_meta:note_epoch(E),
    Request = {'$locker_config', {install, Base, Next, Floor}},
    {Replies, Down} = gen_server:multi_call(Nodes, locker, Request, ?CALL_TIMEOUT),
    Took = [N || {N, ok} <- Replies],
    Short = [Q || {Set, Wq} = Q <- Quorums, length([N || N <- Set, lists:member(N, Took)]) < Wq],
    case Short of
        [] ->
            ok;
        _ ->
            %% To every node of the change, those that did not answer
            %% too: one that is slow takes the install later (or the abort
            %% first, and then remembers the epoch as aborted).
            _ = gen_server:multi_call(Nodes, locker, {'$locker_config', {abort, E, Prev}}, ?CALL_TIMEOUT),
            Voters = lists:usort(lists:append([Set || {Set, _} <- Quorums])),
            Why =
                [{N, why(R)} || {N, R} <- Replies, R =/= ok, lists:member(N, Voters)] ++
                    [{N, unreachable} || N <- Voters, lists:member(N, Down) orelse not lists:member(N, Nodes)],
            ?LOG_WARNING("locker: configuration epoch ~0p not taken (masters ~0p, W ~b): ~0p", [
                E, maps:get(masters, Next), maps:get(w, Next), Why
            ]),
            {error, {refused, lists:ukeysort(1, Why)}}
    end.

%% The joint configuration `Joint' is in place: waits until the old
%% configuration's leases have run out, then installs the new one.
finish(#{joint := {OldM, OldW}, epoch := {C, _} = E1, masters := Masters, w := W} = Joint, Nodes, Opts) ->
    Deadline =
        case maps:get(wait, Opts, infinity) of
            infinity -> infinity;
            Ms -> erlang:monotonic_time(millisecond) + Ms
        end,
    %% Every lease of the old configuration is on W_old old masters, so on
    %% at least W_old - |Old \ New| new ones; if that many meet every W_new
    %% of the N_new new masters (few old masters leave), every new quorum
    %% meets every old lease: nothing to wait for.
    Need =
        case OldW - length(OldM -- Masters) >= length(Masters) - W + 1 of
            true -> 0;
            false -> length(OldM) - OldW + 1
        end,
    case wait_old_leases(OldM, Need, E1, Deadline) of
        {ok, Floor} ->
            Final = Joint#{epoch := {max(C, locker_meta:highest_counter()) + 1, node()}, joint := none},
            install(E1, Final, Floor, Nodes, [{Masters, W}], Joint);
        {error, _} = Error ->
            Error
    end.

%% Asks the old masters how long the leases they held when they took epoch
%% `E1' may still live; done when `Need' of them (enough to meet every
%% quorum of the old configuration) answer none. Returns the highest token
%% floor they reported.
wait_old_leases(OldM, Need, E1, Deadline) ->
    {Replies, _} = gen_server:multi_call(OldM, locker, {'$locker_config', horizon}, ?CALL_TIMEOUT),
    Reports = [{Left, F} || {_, {ok, E, Left, F}} <- Replies, E >= E1],
    Done = [F || {0, F} <- Reports],
    case length(Done) >= Need of
        true ->
            {ok, lists:max([0 | [F || {_, F} <- Reports]])};
        false ->
            Lefts = lists:sort([L || {L, _} <- Reports, L > 0]),
            Pause = max(10, min(?POLL_MS, case Lefts of [] -> ?POLL_MS; [L | _] -> L end)),
            Now = erlang:monotonic_time(millisecond),
            case Deadline =/= infinity andalso Now + Pause > Deadline of
                true ->
                    {error, {joint, case Lefts of [] -> 0; _ -> lists:max(Lefts) end}};
                false ->
                    timer:sleep(Pause),
                    wait_old_leases(OldM, Need, E1, Deadline)
            end
    end.

%% Replicas that do not know epochs get the view through the original
%% requests (they do not vote).
set_foreign_replicas([], _, _, _) ->
    ok;
set_foreign_replicas(Foreign, Masters, Replicas, W) ->
    _ = gen_server:multi_call(Foreign, locker, {set_nodes, Masters, Replicas}, ?CALL_TIMEOUT),
    _ = gen_server:multi_call(Foreign, locker, {set_w, W}, ?CALL_TIMEOUT),
    ok.

%% A master does not know epochs: the original semantics, loudly.
fallback(Cur, Masters, Replicas, W, Project, Foreign, Originals) ->
    ?LOG_WARNING(
        "locker: masters ~0p do not know configuration epochs (original locker or an older version): "
        "the view is overwritten on every node as the original set_nodes/set_w did; "
        "this change is not protected against two holders of a key (see docs/protocol.md)",
        [Originals]
    ),
    #{epoch := {C, _} = Base} = Cur,
    Counter = lists:max([C, locker_meta:highest_counter() | [element(1, maps:get(epoch, Cfg)) || {_, Cfg, _} <- Project]]),
    Next = #{
        epoch => {Counter + 1, node()}, masters => Masters, replicas => Replicas, w => W, joint => none, mode => legacy
    },
    {Replies, Down} = gen_server:multi_call(
        nodes_of(Project), locker, {'$locker_config', {force, Base, Next}}, ?CALL_TIMEOUT
    ),
    ok = set_foreign_replicas(Foreign, Masters, Replicas, W),
    case [{N, why(R)} || {N, R} <- Replies, R =/= ok] ++ [{N, unreachable} || N <- Down] of
        [] -> ok;
        Why -> {error, {refused, Why}}
    end.

why({error, Reason}) -> Reason;
why(Other) -> Other.

%% @private Whether a configuration can work, as change/4 requires of a new
%% one (locker_core::membership::config_fits, which lockerd applies): set
%% through epochs, it has masters, and W is at most their number and a
%% majority of them; its joint old side (the previous masters and W, which
%% the original requests may have set to a W that is no majority) has
%% masters and 1 =< W_old =< their number. One set by the original
%% requests is taken as it is.
-spec fits(locker_meta:config()) -> boolean().
fits(#{mode := legacy}) ->
    true;
fits(#{masters := M, w := W, joint := J}) ->
    quorum_fits(length(M), W) andalso
        case J of
            none -> true;
            {OldM, OldW} -> OldM =/= [] andalso OldW >= 1 andalso OldW =< length(OldM)
        end.

quorum_fits(N, W) ->
    N > 0 andalso W =< N andalso 2 * W > N.

is_node_list([]) -> true;
is_node_list([N | T]) when is_atom(N) -> is_node_list(T);
is_node_list(_) -> false.
