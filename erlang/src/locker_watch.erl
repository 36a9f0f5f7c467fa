%% @doc The server's long-lived monitors on the other nodes' `locker'
%% servers, so that coordinators need no monitor per operation.
%%
%% Two public tables, owned by the server:
%% <ul>
%% <li>`locker_down': the nodes whose `locker' is known down (a
%%     coordinator sends them nothing and counts them as missing votes);</li>
%% <li>`locker_inflight': one row per running coordinator session,
%%     `{SessionAlias, Pid, RemoteNodes}'. When a watched server goes down,
%%     every session waiting on it gets `{'$locker_down', Alias, Node}' on
%%     its alias (dropped by the runtime once the session has ended).</li>
%% </ul>
%% A coordinator registers its session before reading `locker_down', and
%% the server marks a node down before scanning the sessions: whichever
%% comes second sees the other, so no session waits on a dead server
%% until its timeout. A node found down is watched again every 500 ms.
%% @end
-module(locker_watch).

-export([init/0, update/2, down/3, rewatch/2, active/0]).
-export_type([watch/0]).

-define(DOWN, locker_down).
-define(INFLIGHT, locker_inflight).
-define(RETRY_MS, 500).

-type watch() :: #{node() => reference() | down}.

%% @doc Creates the tables (owned by the calling server).
-spec init() -> watch().
init() ->
    ?DOWN = ets:new(?DOWN, [named_table, public, set, {read_concurrency, true}]),
    ?INFLIGHT = ets:new(?INFLIGHT, [named_table, public, set, {write_concurrency, true}]),
    #{}.

%% @doc Whether the tables exist (a server runs on this node).
-spec active() -> boolean().
active() ->
    ets:whereis(?INFLIGHT) =/= undefined.

%% @doc Watches exactly the `locker' servers of `Nodes' (minus this node)
%% and of the nodes of every group ({@link locker_groups:nodes/0}).
-spec update([node()], watch()) -> watch().
update(Nodes0, Watch) ->
    %% In cluster mode the masters and replicas of every group too: this
    %% node coordinates operations on all of them (see locker_groups).
    Nodes = lists:usort(Nodes0 ++ locker_groups:nodes()) -- [node()],
    Gone = maps:without(Nodes, Watch),
    maps:foreach(
        fun(N, Ref) ->
            _ = is_reference(Ref) andalso erlang:demonitor(Ref, [flush]),
            ets:delete(?DOWN, N)
        end,
        Gone
    ),
    Kept = maps:with(Nodes, Watch),
    %% New nodes are watched, and nodes found down are looked at again at
    %% once (a cluster forming: their servers may have just started).
    lists:foldl(
        fun(N, W) ->
            case maps:find(N, W) of
                {ok, Ref} when is_reference(Ref) -> W;
                {ok, down} -> rewatch(N, W);
                error -> W#{N => monitor_server(N)}
            end
        end,
        Kept,
        Nodes
    ).

%% @doc A watched server went down (or could not be monitored): mark it,
%% tell the sessions waiting on it, and try again later. Returns `false'
%% for a monitor that is not one of ours.
-spec down(reference(), watch(), node() | undefined) -> {true, watch()} | false.
down(Mref, Watch, Node) ->
    case maps:find(Node, Watch) of
        {ok, Mref} ->
            true = ets:insert(?DOWN, {Node}),
            ets:foldl(
                fun({Alias, _Pid, Remote}, ok) ->
                    _ = lists:member(Node, Remote) andalso (Alias ! {'$locker_down', Alias, Node}),
                    ok
                end,
                ok,
                ?INFLIGHT
            ),
            erlang:send_after(?RETRY_MS, self(), {locker_rewatch, Node}),
            {true, Watch#{Node := down}};
        _ ->
            false
    end.

%% @doc Watches a node found down again; it counts as up until the new
%% monitor says otherwise (then `down/3' runs again).
-spec rewatch(node(), watch()) -> watch().
rewatch(Node, Watch) ->
    case maps:find(Node, Watch) of
        {ok, down} ->
            Ref = monitor_server(Node),
            ets:delete(?DOWN, Node),
            Watch#{Node := Ref};
        _ ->
            Watch
    end.

%% Monitors a node's server. A node this one cannot reach at all (it is
%% not distributed) is reported down like an unreachable one.
monitor_server(Node) ->
    try
        erlang:monitor(process, {locker, Node})
    catch
        error:badarg ->
            Ref = make_ref(),
            self() ! {'DOWN', Ref, process, {locker, Node}, noconnection},
            Ref
    end.
