%% @doc Automatic membership: the masters follow the connected nodes that
%% run this project's `locker' in automatic mode (`{masters, auto}').
%%
%% One `locker_auto' process per node (registered locally). It learns about
%% nodes through `net_kernel:monitor_nodes/1' and tells whether a connected
%% node takes part by exchanging `{locker_auto, ...}' messages with the
%% `locker_auto' process of that node: a node without one (an original
%% locker, a node of this project started with fixed masters, a node
%% without locker) drops them, so no unknown request ever reaches a
%% server. Nothing is decided from the connection alone.
%%
%% Rules (argued in README.md, section "Clusters"):
%% <ul>
%% <li>A node starts alone: masters `[node()]' with the quorum W of the
%%     expected cluster (`cluster_size' N gives W = N div 2 + 1, or the minimum
%%     quorum `w'). With N > 1 that W cannot be reached by the node alone, so it
%%     grants nothing: callers get `{error, no_quorum}' at once and this
%%     process logs why (once per change of what it sees).</li>
%% <li>Fresh nodes (never part of a formed cluster) merge once at least W of
%%     them are connected: the smallest node name among them proposes, every
%%     other fresh node promises itself to that one proposal only, and the
%%     cluster is formed when all promised. Their one-node configurations
%%     could never grant anything, so installing the common one directly
%%     is safe; the exclusive promise keeps a node from joining two
%%     clusters formed at once on a partly connected network.</li>
%% <li>A formed cluster has an identity. Its proposer is the smallest node
%%     name among its masters that are up. It adds fresh nodes and nodes of
%%     its own cluster that came back, and removes masters gone for longer
%%     than `leave_grace_ms', one change at a time, through the safe path
%%     `locker_membership:change/3' (never by overwriting). It never goes
%%     below the expected quorum of masters, W never below the expected W
%%     and always a majority of the masters.</li>
%% <li>A connected node of another formed cluster is refused: no change is
%%     made while one is connected, and an error is logged (bounded).</li>
%% </ul>
%% @end
-module(locker_auto).
-behaviour(gen_server).

-export([start_link/1, child_spec/1, options/1, status/0, initial_w/1, start_server/2]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2, code_change/3]).
-export_type([options/0, status/0]).

-include_lib("kernel/include/logger.hrl").

-define(VSN, 1).
-define(CLUSTER, {?MODULE, cluster}).
%% A proposal waits this long for the promises of the other fresh nodes.
-define(BOOTSTRAP_TIMEOUT_MS, 5000).
%% Conflicts and failed changes are logged at most once per this period.
-define(REPEAT_LOG_MS, 30000).

-type options() :: #{
    cluster_size => pos_integer() | undefined,
    w => pos_integer() | undefined,
    leave_grace_ms => non_neg_integer(),
    tick_ms => pos_integer(),
    replicas => [node()]
}.

-type cluster_id() :: {node(), integer(), integer()}.

-type status() :: #{
    cluster := cluster_id() | undefined,
    masters := [node()],
    w := pos_integer(),
    present := [node()],
    quorum := boolean(),
    peers := #{node() => cluster_id() | undefined},
    conflicts := [node()],
    changing := boolean()
}.

-record(peer, {
    cluster :: cluster_id() | undefined,
    masters :: [node()],
    mref :: reference()
}).

-record(state, {
    wmin :: pos_integer(),
    expected :: pos_integer() | undefined,
    grace :: non_neg_integer(),
    tick :: pos_integer(),
    peers = #{} :: #{node() => #peer{}},
    %% Masters not seen up, since when (monotonic ms).
    absent = #{} :: #{node() => integer()},
    %% A running change: {change, Pid, Mref, Masters, W} or a bootstrap
    %% this node proposed: {bootstrap, Ref, Members, W, Acked, Timer}.
    change = undefined :: undefined | tuple(),
    %% The bootstrap this (fresh) node promised itself to: {Ref, Proposer}.
    promised = undefined :: undefined | {reference(), node()},
    %% Monitor of the proposer's locker_auto while promised: the promise
    %% ends with the proposal (commit, abort), or with the proposer.
    promise_mref = undefined :: undefined | reference(),
    %% What was last logged about the quorum, to log each change once.
    said = undefined :: term(),
    %% Last time a repeated error was logged, per kind.
    logged = #{} :: #{term() => integer()},
    %% No new proposal before this (monotonic ms): after a failed one.
    backoff_until = undefined :: undefined | integer()
}).

%%--------------------------------------------------------------------
%% API
%%--------------------------------------------------------------------

%% @doc Starts `locker_auto' (registered locally) with checked options
%% (see {@link options/1}). The `locker' server must already run.
-spec start_link(options()) -> {ok, pid()} | {error, term()}.
start_link(Opts) ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, Opts, []).

%% @doc A child spec for a supervisor, to start after the `locker' server.
-spec child_spec(options()) -> supervisor:child_spec().
child_spec(Opts) ->
    #{
        id => ?MODULE,
        start => {?MODULE, start_link, [Opts]},
        type => worker,
        shutdown => 5000,
        modules => [?MODULE]
    }.

%% @doc Checks the automatic mode's keys (from the application environment
%% or a proplist/map of the same keys) and fills in the defaults:
%% `cluster_size' (the expected number of masters) or `w' (a minimum
%% quorum), at least one of them; `leave_grace_ms' (30000), `tick_ms'
%% (1000), `replicas' ([]: kept as they are, the masters change). A bad value is `{error, {bad_app_env, Key, Value, Expected}}'.
-spec options(map() | [{atom(), term()}]) -> {ok, options()} | {error, term()}.
options(Env) when is_list(Env) ->
    options(maps:from_list([KV || {_, _} = KV <- Env]));
options(Env) when is_map(Env) ->
    Checks = [
        {cluster_size, undefined, fun(V) -> V =:= undefined orelse (is_integer(V) andalso V > 0) end,
         "a positive integer: the number of nodes the cluster is expected to have"},
        {w, undefined, fun(V) -> V =:= undefined orelse (is_integer(V) andalso V > 0) end,
         "a positive integer: the write quorum"},
        {leave_grace_ms, 30000, fun(V) -> is_integer(V) andalso V >= 0 end,
         "a non-negative integer: how long a master may be gone before it is removed (ms)"},
        {tick_ms, 1000, fun(V) -> is_integer(V) andalso V > 0 end,
         "a positive integer: how often nodes exchange their views (ms)"},
        {replicas, [], fun(V) -> is_list(V) andalso lists:all(fun is_atom/1, V) end,
         "a list of node names"}
    ],
    try
        Opts = maps:from_list([
            begin
                %% `nil' (Elixir's unset) is unset too.
                V = case maps:get(K, Env, D) of
                    nil -> D;
                    V0 -> V0
                end,
                F(V) orelse throw({bad_app_env, K, V, Expected}),
                {K, V}
            end
         || {K, D, F, Expected} <- Checks
        ]),
        case Opts of
            #{cluster_size := undefined, w := undefined} ->
                {error,
                 {bad_app_env, cluster_size, undefined,
                  "masters = auto needs the expected cluster size (cluster_size, 1 for a single node) "
                  "or a minimum quorum (w): a node must not grant locks alone before it met its peers"}};
            #{cluster_size := N, w := W} when is_integer(N), is_integer(W), (W =< N div 2 orelse W > N) ->
                {error,
                 {bad_app_env, w, W,
                  lists:flatten(io_lib:format("a quorum from ~b to ~b (a majority of cluster_size ~b)",
                                              [N div 2 + 1, N, N]))}};
            _ ->
                {ok, Opts}
        end
    catch
        throw:{bad_app_env, _, _, _} = Bad -> {error, Bad}
    end.

%% @doc The quorum a node starts with (alone): `w' if set, else a majority
%% of `cluster_size'.
-spec initial_w(options()) -> pos_integer().
initial_w(#{w := W}) when is_integer(W) -> W;
initial_w(#{cluster_size := N}) -> N div 2 + 1.

%% @doc Starts the `locker' server for automatic mode (`Args' as
%% {@link locker:start_link/4}, W first): alone, with W as given, the first
%% time; with the configuration it had when the server restarts in a
%% running VM (its leases and cluster survive the restart, see
%% {@link locker_server}).
-spec start_server([pos_integer()], options()) -> {ok, pid()} | {error, term()}.
start_server([_ | Intervals] = Args, Opts) ->
    case locker_meta:current() of
        undefined ->
            locker_server:start_configured(Args, [node()], maps:get(replicas, Opts, []));
        {Masters, Replicas, W} ->
            locker_server:start_configured([W | Intervals], Masters, Replicas)
    end.

%% @doc This node's view: its cluster (undefined before it formed or
%% joined one), masters and W, the masters present, whether they reach W,
%% the automatic-mode peers it sees (with their cluster), the connected
%% nodes of another formed cluster, whether a change is running.
-spec status() -> status().
status() ->
    gen_server:call(?MODULE, status).

%%--------------------------------------------------------------------
%% gen_server
%%--------------------------------------------------------------------

%% @private
init(Opts0) ->
    case options(Opts0) of
        {ok, #{cluster_size := N, leave_grace_ms := Grace, tick_ms := Tick} = Opts} ->
            Wmin = initial_w(Opts),
            ok = net_kernel:monitor_nodes(true),
            S = #state{wmin = Wmin, expected = N, grace = Grace, tick = Tick},
            [hello(Node, S) || Node <- nodes()],
            erlang:send_after(Tick, self(), tick),
            {ok, evaluate(S)};
        {error, Reason} ->
            ?LOG_ERROR("locker: automatic membership not started: ~0p", [Reason]),
            {stop, Reason}
    end.

%% @private
handle_call(status, _From, S) ->
    {reply, view(S), S};
handle_call(Request, _From, S) ->
    {reply, {error, {unknown_request, Request}}, bad_input(Request, S)}.

%% @private
handle_cast(Msg, S) ->
    {noreply, bad_input(Msg, S)}.

%% @private
handle_info({nodeup, Node}, S) ->
    hello(Node, S),
    {noreply, S};
handle_info({nodedown, Node}, S) ->
    {noreply, evaluate(forget(Node, S))};
handle_info({'DOWN', Mref, process, _, _}, #state{change = {change, _, Mref, _, _}} = S) ->
    %% The change process exited without a result (it reports before exiting).
    {noreply, evaluate(S#state{change = undefined})};
handle_info({'DOWN', Mref, process, {?MODULE, Node}, _}, #state{promise_mref = Mref} = S) ->
    {noreply, evaluate(forget(Node, S))};
handle_info({'DOWN', Mref, process, {?MODULE, Node}, _}, S) ->
    case S#state.peers of
        #{Node := #peer{mref = Mref}} -> {noreply, evaluate(forget(Node, S))};
        _ -> {noreply, S}
    end;
handle_info(tick, #state{tick = Tick} = S) ->
    [hello(Node, S) || Node <- nodes()],
    erlang:send_after(Tick, self(), tick),
    {noreply, evaluate(S)};
handle_info({?MODULE, Vsn, Msg}, S) when Vsn =:= ?VSN ->
    try
        {noreply, message(Msg, S)}
    catch
        %% Malformed: dropped, logged (bounded).
        error:_ -> {noreply, bad_input(Msg, S)}
    end;
handle_info({change_done, Pid, Result}, #state{change = {change, Pid, Mref, Masters, W}} = S) ->
    erlang:demonitor(Mref, [flush]),
    S1 = S#state{change = undefined},
    case Result of
        ok ->
            ?LOG_NOTICE("locker: cluster ~0p now has masters ~0p, W = ~b", [cluster_id(), Masters, W]),
            Id = cluster_id(),
            [send(N, {adopt, node(), Id, keep}) || N <- Masters, N =/= node()],
            {noreply, evaluate(S1#state{absent = maps:with(Masters, S1#state.absent)})};
        Error ->
            {noreply, evaluate(backoff(log_repeated(
                {change_failed, Masters, W}, S1,
                "locker: membership change to masters ~0p, W = ~b failed: ~0p (retried)", [Masters, W, Error])))}
    end;
handle_info({bootstrap_timeout, Ref}, #state{change = {bootstrap, Ref, Members, _, _, _}} = S) ->
    ?LOG_WARNING("locker: forming a cluster of ~0p: not every node promised in time; retried", [Members]),
    {noreply, evaluate(backoff(abort_bootstrap(S)))};
handle_info({bootstrap_timeout, _}, S) ->
    %% Of a proposal that is over.
    {noreply, S};
handle_info(Info, S) ->
    {noreply, bad_input(Info, S)}.

%% @private
terminate(_Reason, _S) ->
    ok.

%% @private
code_change(_OldVsn, S, _Extra) ->
    {ok, S}.

%%--------------------------------------------------------------------
%% Messages between locker_auto processes
%%--------------------------------------------------------------------

send(Node, Msg) ->
    erlang:send({?MODULE, Node}, {?MODULE, ?VSN, Msg}, [noconnect]).

hello(Node, #state{wmin = Wmin}) ->
    {Masters, _, _} = meta(),
    send(Node, {hello, node(), cluster_id(), Masters, Wmin}).

%% A peer's view. A peer that expects another quorum (another
%% cluster_size or w) is not taken into account: the expected quorum is
%% what keeps two groups from forming at once.
message({hello, From, Cluster, Masters, Wmin}, #state{peers = Peers} = S) when
    is_atom(From), From =/= node(), is_list(Masters), is_integer(Wmin)
->
    true = is_cluster(Cluster),
    lists:all(fun is_atom/1, Masters) orelse error(function_clause),
    case lists:member(From, nodes(connected)) of
        false ->
            S;
        true when Wmin =/= S#state.wmin ->
            log_repeated(
                {wmin, From}, S,
                "locker: ignoring ~p: it expects a quorum of ~b, this node ~b; give every node the "
                "same cluster_size (or w)",
                [From, Wmin, S#state.wmin]);
        true ->
            Peer =
                case Peers of
                    #{From := P} ->
                        P#peer{cluster = Cluster, masters = Masters};
                    _ ->
                        %% A new peer: answer, so that it knows this node at once.
                        hello(From, S),
                        #peer{cluster = Cluster, masters = Masters,
                              mref = erlang:monitor(process, {?MODULE, From})}
                end,
            evaluate(S#state{peers = Peers#{From => Peer}})
    end;
%% Bootstrap: a fresh node asks the fresh nodes it sees to form a cluster.
message({prepare, Ref, From, Members, W}, S) when
    is_reference(Ref), is_atom(From), is_list(Members), is_integer(W), W > 0
->
    lists:all(fun is_atom/1, Members) orelse error(function_clause),
    Yes =
        cluster_id() =:= undefined andalso
            lists:member(node(), Members) andalso
            case S#state.promised of
                undefined -> true;
                {Ref, From} -> true;
                _ -> false
            end,
    send(From, {promise, Ref, node(), Yes}),
    case {Yes, S#state.promised} of
        {true, undefined} ->
            S#state{promised = {Ref, From}, promise_mref = erlang:monitor(process, {?MODULE, From})};
        _ ->
            S
    end;
message({promise, Ref, From, Yes}, #state{change = {bootstrap, Ref, Members, W, Acked, Timer}} = S) when
    is_atom(From), is_boolean(Yes)
->
    case {Yes, lists:member(From, Members)} of
        {true, true} ->
            Acked1 = lists:usort([From | Acked]),
            case Acked1 =:= lists:usort(Members) of
                true -> commit_bootstrap(S#state{change = {bootstrap, Ref, Members, W, Acked1, Timer}});
                false -> S#state{change = {bootstrap, Ref, Members, W, Acked1, Timer}}
            end;
        {false, true} ->
            ?LOG_INFO("locker: ~0p did not promise itself to forming a cluster of ~0p; retried", [From, Members]),
            evaluate(backoff(abort_bootstrap(S)));
        _ ->
            S
    end;
message({promise, Ref, _, _}, S) when is_reference(Ref) ->
    %% For a proposal that is over.
    S;
message({commit, Ref, From, Id, Masters, W}, #state{promised = {Ref, From}} = S) when
    is_list(Masters), is_integer(W), W > 0
->
    true = is_cluster(Id) andalso Id =/= undefined,
    lists:all(fun is_atom/1, Masters) orelse error(function_clause),
    install_local(Masters, W),
    set_cluster_id(Id),
    ?LOG_NOTICE("locker: joined the new cluster ~0p: masters ~0p, W = ~b", [Id, Masters, W]),
    [hello(N, S) || N <- nodes()],
    evaluate(mark(Masters, Id, unpromise(S)));
message({commit, Ref, _, _, _, _}, S) when is_reference(Ref) ->
    S;
message({abort, Ref, From}, #state{promised = {Ref, From}} = S) ->
    evaluate(unpromise(S));
message({abort, Ref, _}, S) when is_reference(Ref) ->
    S;
%% A formed cluster tells a node its identity: after adding it through a
%% change (`keep': the change installed the configuration), or when the
%% node restarted fresh under a name that is still a master (the cluster's
%% configuration is installed on it: it never granted anything alone).
message({adopt, From, Id, Config}, S) when is_atom(From) ->
    true = is_cluster(Id) andalso Id =/= undefined,
    case {cluster_id(), Config} of
        {undefined, keep} ->
            {Masters, _, _} = meta(),
            case lists:member(node(), Masters) andalso lists:member(From, Masters) of
                true ->
                    set_cluster_id(Id),
                    evaluate(S);
                false ->
                    S
            end;
        {undefined, {Masters, W}} when is_list(Masters), is_integer(W), W > 0 ->
            lists:all(fun is_atom/1, Masters) orelse error(function_clause),
            case lists:member(node(), Masters) andalso S#state.promised =:= undefined of
                true ->
                    install_local(Masters, W),
                    set_cluster_id(Id),
                    ?LOG_NOTICE("locker: rejoined cluster ~0p: masters ~0p, W = ~b", [Id, Masters, W]),
                    %% Then take the cluster's current configuration (its
                    %% epoch) from those masters, now trusted.
                    catch_up(Masters -- [node()]),
                    evaluate(S);
                false ->
                    S
            end;
        {Id, _} ->
            S;
        {_Other, _} ->
            S
    end.

is_cluster(undefined) -> true;
is_cluster({N, A, B}) -> is_atom(N) andalso is_integer(A) andalso is_integer(B);
is_cluster(_) -> false.

%% At most one line per ?REPEAT_LOG_MS about unexpected input.
bad_input(Msg, S) ->
    log_repeated(warning, bad_input, S, "locker: unexpected or malformed membership message ~0P dropped", [Msg, 20]).

%% A node gone (disconnected, or its locker_auto stopped): no longer a
%% peer; a promise to it ends; a proposal that counted on it is aborted.
forget(Node, #state{peers = Peers} = S) ->
    S1 =
        case maps:take(Node, Peers) of
            {#peer{mref = Mref}, Rest} ->
                erlang:demonitor(Mref, [flush]),
                S#state{peers = Rest};
            error ->
                S
        end,
    S2 =
        case S1#state.promised of
            {_, Node} -> unpromise(S1);
            _ -> S1
        end,
    case S2#state.change of
        {bootstrap, _, Members, _, _, _} ->
            case lists:member(Node, Members) of
                true -> backoff(abort_bootstrap(S2));
                false -> S2
            end;
        _ ->
            S2
    end.

unpromise(#state{promise_mref = Mref} = S) ->
    _ = is_reference(Mref) andalso erlang:demonitor(Mref, [flush]),
    S#state{promised = undefined, promise_mref = undefined}.

%%--------------------------------------------------------------------
%% Decisions
%%--------------------------------------------------------------------

%% Looks at the current view and does what the rules say (at most one
%% change at a time, only on the proposer).
evaluate(S0) ->
    S = track_absent(S0),
    S1 = say(S),
    Waiting = S1#state.backoff_until =/= undefined andalso
        erlang:monotonic_time(millisecond) < S1#state.backoff_until,
    case {S1#state.change, cluster_id()} of
        _ when Waiting -> S1;
        {undefined, undefined} -> fresh(S1);
        {undefined, Id} -> formed(Id, S1);
        _ -> S1
    end.

%% After a failed proposal: the next one waits a tick or two (jittered, so
%% that two nodes that refused each other do not meet again at once).
backoff(#state{tick = Tick} = S) ->
    S#state{backoff_until = erlang:monotonic_time(millisecond) + Tick + rand:uniform(Tick)}.

%% A node of no cluster yet: it waits to be added by a formed cluster it
%% sees, or forms one with the fresh nodes it sees.
fresh(#state{peers = Peers, wmin = Wmin, promised = Promised} = S) ->
    Formed = [N || {N, C} <- clusters(Peers), C =/= undefined],
    Fresh = lists:sort([node() | [N || {N, undefined} <- clusters(Peers)]]),
    case Formed =:= [] andalso Promised =:= undefined andalso hd(Fresh) =:= node() of
        true when length(Fresh) >= Wmin ->
            propose_bootstrap(Fresh, target_w(Fresh, S), S);
        _ ->
            S
    end.

clusters(Peers) ->
    [{N, C} || {N, #peer{cluster = C}} <- maps:to_list(Peers)].


%% A member of a formed cluster: the proposer adds and removes masters.
formed(Id, #state{peers = Peers} = S) ->
    {Masters, Replicas, W} = meta(),
    Foreign = [N || {N, C} <- clusters(Peers), C =/= undefined, C =/= Id],
    Members = [N || {N, C} <- clusters(Peers), C =:= Id],
    UpMasters = [N || N <- Masters, N =:= node() orelse lists:member(N, Members)],
    IsProposer = UpMasters =/= [] andalso lists:min(UpMasters) =:= node(),
    case {Foreign, IsProposer} of
        {[_ | _], _} ->
            log_repeated(
                {conflict, lists:sort(Foreign)}, S,
                "locker: refusing to merge with ~0p: they belong to another formed cluster (~0p) "
                "that may hold leases; this cluster is ~0p. Nothing is changed while they are "
                "connected: stop one side, or disconnect them",
                [lists:sort(Foreign), lists:usort([C || {N, C} <- clusters(Peers), lists:member(N, Foreign)]), Id]);
        {[], false} ->
            S;
        {[], true} ->
            %% Fresh nodes restarted under a master's name get the
            %% configuration; fresh nodes and returning members that are
            %% not masters are added; long-gone masters are removed.
            [send(N, {adopt, node(), Id, {Masters, W}})
             || {N, undefined} <- clusters(Peers), lists:member(N, Masters)],
            Joiners = lists:sort([N || {N, C} <- clusters(Peers), C =:= undefined orelse C =:= Id,
                                       not lists:member(N, Masters)]),
            Now = erlang:monotonic_time(millisecond),
            Gone = lists:sort([{Since, N} || {N, Since} <- maps:to_list(S#state.absent), Now - Since >= S#state.grace]),
            target(Masters, Replicas, W, Joiners, [N || {_, N} <- Gone], S)
    end.

target(Masters, Replicas, W, Joiners, Gone, #state{wmin = Wmin} = S) ->
    %% Remove the longest gone first, never below Wmin masters.
    Removable = max(length(Masters) - Wmin, 0),
    Remove = lists:sublist(Gone, Removable),
    Kept = Masters -- Remove,
    New = lists:sort(Kept ++ Joiners),
    NewW = target_w(New, S),
    case New =:= lists:sort(Masters) andalso NewW =:= W of
        false ->
            start_change(New, Replicas, NewW, S);
        true ->
            %% The same configuration still without an epoch (the change
            %% made when the cluster formed failed): through the safe path
            %% again, at most every ?REPEAT_LOG_MS.
            Now = erlang:monotonic_time(millisecond),
            case legacy() andalso Now - maps:get(epoch_retry, S#state.logged, Now - ?REPEAT_LOG_MS) >= ?REPEAT_LOG_MS of
                true -> start_change(New, Replicas, NewW, S#state{logged = (S#state.logged)#{epoch_retry => Now}});
                false -> S
            end
    end.

%% Whether this node's configuration was set without an epoch.
legacy() ->
    membership_path() andalso
        case locker_meta:config() of
            #{mode := legacy} -> true;
            _ -> false
        end.

%% W for a master set: a majority, never below the expected quorum.
target_w(Masters, #state{wmin = Wmin}) ->
    max(Wmin, length(Masters) div 2 + 1).

track_absent(#state{peers = Peers, absent = Absent} = S) ->
    case meta_or_undefined() of
        undefined ->
            S;
        {Masters, _, _} ->
            Now = erlang:monotonic_time(millisecond),
            Id = cluster_id(),
            %% Connected and running the automatic mode: a master just
            %% added learns the cluster's identity after the change, and a
            %% master restarted empty is given the configuration; neither
            %% is gone.
            Up = fun(N) ->
                N =:= node() orelse
                    case Peers of
                        #{N := #peer{cluster = C}} -> C =:= Id orelse C =:= undefined;
                        _ -> false
                    end
            end,
            Absent1 = maps:from_list([
                {N, maps:get(N, Absent, Now)}
             || N <- Masters, not Up(N)
            ]),
            S#state{absent = Absent1}
    end.

%%--------------------------------------------------------------------
%% Bootstrap of fresh nodes
%%--------------------------------------------------------------------

propose_bootstrap([Me], W, S) when Me =:= node() ->
    %% A cluster of one (cluster_size 1, or w 1).
    Id = new_cluster_id(),
    install_local([Me], W),
    set_cluster_id(Id),
    ?LOG_NOTICE("locker: formed the cluster ~0p alone: masters ~0p, W = ~b", [Id, [Me], W]),
    S;
propose_bootstrap(Members, W, S) ->
    Ref = make_ref(),
    [send(N, {prepare, Ref, node(), Members, W}) || N <- Members, N =/= node()],
    Timer = erlang:send_after(?BOOTSTRAP_TIMEOUT_MS, self(), {bootstrap_timeout, Ref}),
    ?LOG_INFO("locker: proposing to form a cluster of ~0p, W = ~b", [Members, W]),
    S#state{change = {bootstrap, Ref, Members, W, [node()], Timer}, promised = {Ref, node()}}.

commit_bootstrap(#state{change = {bootstrap, Ref, Members, W, _, Timer}} = S) ->
    _ = erlang:cancel_timer(Timer),
    Id = new_cluster_id(),
    %% Every member promised itself to this proposal only: install here,
    %% then on them.
    install_local(Members, W),
    set_cluster_id(Id),
    [send(N, {commit, Ref, node(), Id, Members, W}) || N <- Members, N =/= node()],
    ?LOG_NOTICE("locker: formed the cluster ~0p: masters ~0p, W = ~b", [Id, Members, W]),
    S1 = mark(Members, Id, S#state{change = undefined, promised = undefined}),
    %% The same configuration again through the safe path: it then carries
    %% a configuration epoch, and the masters refuse views and votes made
    %% outside it from now on.
    case membership_path() of
        true -> start_change(Members, [], W, S1);
        false -> S1
    end.

%% Peers known to have joined cluster Id (before their next hello says so).
mark(Nodes, Id, #state{peers = Peers} = S) ->
    Connected = nodes(connected),
    Marked = lists:foldl(
        fun(N, Acc) ->
            case Acc of
                #{N := P} ->
                    Acc#{N := P#peer{cluster = Id}};
                _ ->
                    case lists:member(N, Connected) of
                        true ->
                            Acc#{N => #peer{cluster = Id, masters = Nodes,
                                            mref = erlang:monitor(process, {?MODULE, N})}};
                        false ->
                            Acc
                    end
            end
        end,
        Peers,
        Nodes -- [node()]
    ),
    S#state{peers = Marked}.

abort_bootstrap(#state{change = {bootstrap, Ref, Members, _, _, Timer}} = S) ->
    _ = erlang:cancel_timer(Timer),
    [send(N, {abort, Ref, node()}) || N <- Members, N =/= node()],
    S#state{change = undefined, promised = undefined}.

new_cluster_id() ->
    {node(), erlang:system_time(microsecond), erlang:unique_integer([positive])}.

%% The configuration of this node alone, installed on its own server:
%% only for nodes whose previous configuration could not grant anything.
install_local(Masters, W) ->
    {_, Replicas, OldW} = meta(),
    %% Raise W before adding masters, lower it after: no moment where W is
    %% a minority of the masters.
    case W >= OldW of
        true ->
            ok = gen_server:call(locker, {set_w, W}),
            ok = gen_server:call(locker, {set_nodes, Masters, Replicas});
        false ->
            ok = gen_server:call(locker, {set_nodes, Masters, Replicas}),
            ok = gen_server:call(locker, {set_w, W})
    end.

%%--------------------------------------------------------------------
%% Changes of a formed cluster
%%--------------------------------------------------------------------

start_change(Masters, Replicas, W, S) ->
    case membership_path() of
        false ->
            log_repeated(
                no_membership, S,
                "locker: cannot change the masters to ~0p: locker_membership:change/3 (the safe "
                "reconfiguration path) is not available on this node, and overwriting views "
                "is not safe",
                [Masters]);
        true ->
            Self = self(),
            ?LOG_INFO("locker: changing the masters to ~0p, W = ~b", [Masters, W]),
            {Pid, Mref} = spawn_monitor(fun() ->
                Result =
                    try
                        locker_membership:change(Masters, Replicas, W)
                    catch
                        Class:Reason -> {error, {Class, Reason}}
                    end,
                Self ! {change_done, self(), Result}
            end),
            S#state{change = {change, Pid, Mref, Masters, W}}
    end.

%% Asks `Masters' for a newer configuration (locker_membership's catch-up).
catch_up(Masters) ->
    _ = code:ensure_loaded(locker_membership),
    case erlang:function_exported(locker_membership, pull, 1) of
        true -> _ = (catch locker_membership:pull(Masters)), ok;
        false -> ok
    end.

membership_path() ->
    _ = code:ensure_loaded(locker_membership),
    erlang:function_exported(locker_membership, change, 3).

%%--------------------------------------------------------------------
%% Views and logs
%%--------------------------------------------------------------------

meta() ->
    case meta_or_undefined() of
        undefined -> {[node()], [], 1};
        Meta -> Meta
    end.

meta_or_undefined() ->
    locker_meta:current().

cluster_id() ->
    persistent_term:get(?CLUSTER, undefined).

set_cluster_id(Id) ->
    _ = cluster_id() =:= Id orelse persistent_term:put(?CLUSTER, Id),
    ok.

view(#state{peers = Peers, change = Change} = S) ->
    {Masters, _, W} = meta(),
    Id = cluster_id(),
    Present = present(Masters, S),
    #{
        cluster => Id,
        masters => Masters,
        w => W,
        present => Present,
        quorum => Id =/= undefined andalso length(Present) >= W,
        peers => maps:map(fun(_, #peer{cluster = C}) -> C end, Peers),
        conflicts => lists:sort([N || {N, C} <- clusters(Peers), Id =/= undefined,
                                      C =/= undefined, C =/= Id]),
        changing => Change =/= undefined
    }.

%% The masters up (before a cluster formed: this node and the fresh nodes
%% it sees, which is what the first configuration will be made of).
present(Masters, #state{peers = Peers}) ->
    case cluster_id() of
        undefined ->
            lists:sort([node() | [N || {N, undefined} <- clusters(Peers)]]);
        Id ->
            [N || N <- Masters, N =:= node() orelse
                     (maps:is_key(N, Peers) andalso (maps:get(N, Peers))#peer.cluster =:= Id)]
    end.

%% Logs what the node sees about its quorum, once per change.
say(#state{expected = Expected} = S) ->
    #{masters := Masters, w := W, present := Present, cluster := Id} = view(S),
    Said = {Id, Masters, W, Present},
    case Said =:= S#state.said of
        true ->
            S;
        false ->
            case {Id, length(Present) >= W} of
                {undefined, true} ->
                    %% Forming (or waiting for a formed cluster to add it).
                    ok;
                {undefined, false} ->
                    ?LOG_WARNING(
                        "locker: no quorum: ~b of the ~s masters present (~0p); locks and "
                        "registrations answer {error, no_quorum} until ~b are connected",
                        [length(Present), expected(Expected, W), Present, W]);
                {_, false} ->
                    ?LOG_WARNING(
                        "locker: no quorum: ~b of the ~b masters present (~0p, W = ~b); locks and "
                        "registrations answer {error, no_quorum} until ~b are up",
                        [length(Present), length(Masters), Present, W, W]);
                {_, true} when is_tuple(S#state.said), element(1, S#state.said) =:= Id,
                               length(element(4, S#state.said)) < element(3, S#state.said) ->
                    ?LOG_NOTICE("locker: quorum back: ~b of the ~b masters present (W = ~b)",
                                [length(Present), length(Masters), W]);
                _ ->
                    ok
            end,
            S#state{said = Said}
    end.

expected(undefined, W) -> lists:flatten(io_lib:format("at least ~b", [W]));
expected(N, _) -> lists:flatten(io_lib:format("~b expected", [N])).

log_repeated(Kind, S, Format, Args) ->
    log_repeated(error, Kind, S, Format, Args).

log_repeated(Level, Kind, #state{logged = Logged} = S, Format, Args) ->
    Now = erlang:monotonic_time(millisecond),
    case Logged of
        #{Kind := T} when Now - T < ?REPEAT_LOG_MS ->
            S;
        _ ->
            logger:log(Level, Format, Args, ?LOCATION),
            S#state{logged = maps:put(Kind, Now, maps:filter(fun(_, T) -> Now - T < ?REPEAT_LOG_MS end, Logged))}
    end.
