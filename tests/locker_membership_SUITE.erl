%% Safe reconfiguration across real nodes (locker_membership): the cluster
%% grows from 3 to 5 masters and back, and a master is replaced, while
%% clients on every node contend for three keys (checked by the fault
%% suite's checker: no two holders of a key at once, tokens increasing,
%% and as many intervals checked as the clients counted acquisitions); a
%% misconfigured node joining a running cluster changes nothing there and
%% is logged by the nodes it reached; bad input (an unreachable node, a
%% node without locker, a W that does not fit) is an error naming it and
%% changes nothing; lockerd joins and leaves a mixed cluster through
%% epochs while clients contend; a master that does not know epochs (an
%% original node, played by a BEAM node without locker_membership) makes
%% changes fall back to the original overwrite, with a warning, and the
%% cluster goes back to epochs once it left.
%%
%% Peers are named `mb_<name>_<unique integer>'.
-module(locker_membership_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, suite/0, init_per_suite/1, end_per_suite/1, init_per_testcase/2, end_per_testcase/2]).
-export([
    grow_shrink_and_replace_under_contention/1,
    misconfigured_node_joins/1,
    bad_input_changes_nothing/1,
    lockerd_joins_and_leaves/1,
    original_master_falls_back/1
]).
%% Run on the peers.
-export([client/3, log/2]).

-define(KEYS, [k1, k2, k3]).
-define(LEASE, 300).
-define(TIMEOUT, 1000).

all() ->
    [grow_shrink_and_replace_under_contention, misconfigured_node_joins, bad_input_changes_nothing,
     lockerd_joins_and_leaves, original_master_falls_back].

suite() ->
    [{timetrap, {minutes, 10}}].

init_per_suite(Config) ->
    ok = locker_ct:ensure_distributed(),
    Config.

end_per_suite(_Config) ->
    ok.

init_per_testcase(_Case, Config) ->
    locker_ct:init_cleanup(Config).

end_per_testcase(_Case, Config) ->
    locker_ct:cleanup(Config).

%%--------------------------------------------------------------------
%% Cases
%%--------------------------------------------------------------------

grow_shrink_and_replace_under_contention(Config) ->
    [A, B, C, D, E] = Nodes = start_peers([a, b, c, d, e], Config),
    ok = rpc:call(A, locker, set_nodes, [Nodes, [A, B, C], []]),
    Epoch0 = same_config(Nodes, [A, B, C], 2),
    Clients = spawn_clients(Nodes),
    H0 = locker_ct:collect_acquisitions([], 0, 40),
    %% 3 -> 5 masters (W 2 -> 3), from B.
    ok = rpc:call(B, locker_membership, change, [Nodes, [], 3]),
    Epoch1 = same_config(Nodes, Nodes, 3),
    H1 = locker_ct:collect_acquisitions(H0, locker_ct:count_acquisitions(H0), 40),
    %% 5 -> 3 (W 3 -> 2), from E (which stops being a master).
    ok = rpc:call(E, locker_membership, change, [[A, B, C], [], 2]),
    Epoch2 = same_config(Nodes, [A, B, C], 2),
    H2 = locker_ct:collect_acquisitions(H1, locker_ct:count_acquisitions(H1), 40),
    %% C replaced by D, from C.
    ok = rpc:call(C, locker_membership, change, [[A, B, D], [], 2]),
    Epoch3 = same_config(Nodes, [A, B, D], 2),
    H3 = locker_ct:collect_acquisitions(H2, locker_ct:count_acquisitions(H2), 40),
    ?assert(Epoch0 < Epoch1 andalso Epoch1 < Epoch2 andalso Epoch2 < Epoch3, [Epoch0, Epoch1, Epoch2, Epoch3]),
    {Events, Counted} = locker_ct:stop_clients(Clients, H3),
    check(Events, Counted).

misconfigured_node_joins(Config) ->
    [A, B, C] = Cluster = start_peers([a, b, c], Config),
    ok = rpc:call(A, locker, set_nodes, [Cluster, Cluster, []]),
    {ok, Token} = rpc:call(A, locker, lock_with_token, [held, a_value, 60000, 5000]),
    Before = configs(Cluster),
    [M] = start_peers([m], Config),
    capture_logs(Cluster),
    %% M sees itself, A and B as the masters and tries to make it so.
    {error, {refused, Refused}} = rpc:call(M, locker, set_nodes, [[M, A, B], [M, A, B], []]),
    ct:log("refused: ~p", [Refused]),
    [{A, {conflict, _, _}}, {B, {conflict, _, _}}] = lists:sort([R || {N, _} = R <- Refused, N =/= M]),
    Before = configs(Cluster),
    [await_log(N, ["refused configuration epoch", atom_to_list(M)]) || N <- [A, B]],
    %% Its view set by the original request, on itself only.
    ok = gen_server:call({locker, M}, {set_nodes, [M, A, B], []}),
    %% The original requests do not rewrite a node configured by epochs.
    {error, {epoch_configured, _}} = rpc:call(M, gen_server, call, [{locker, A}, {set_nodes, [M, A, B], []}]),
    {error, {epoch_configured, _}} = rpc:call(M, gen_server, call, [{locker, B}, {set_w, 1}]),
    [await_log(N, ["refused", atom_to_list(M)]) || N <- [A, B]],
    %% A configuration older than the node's own.
    #{epoch := Own} = OwnConfig = rpc:call(A, locker_membership, config, []),
    Stale = OwnConfig#{epoch := {0, M}, masters := [M, A, B]},
    {error, {stale_epoch, {0, M}, Own}} =
        rpc:call(M, gen_server, call, [{locker, A}, {'$locker_config', {install, {0, none}, Stale, 0}}]),
    await_log(A, ["refused configuration epoch", atom_to_list(M)]),
    Before = configs(Cluster),
    %% M coordinates under its own view: the masters refuse its votes
    %% (another epoch), it takes the cluster's configuration from them
    %% and the lock is refused under it (the key is held).
    {error, no_quorum} = rpc:call(M, locker, lock, [held, m_value, 1000, 2000]),
    OwnConfig = rpc:call(M, locker_membership, config, []),
    [{ok, a_value} = rpc:call(N, locker, dirty_read, [held]) || N <- Cluster],
    {ok, Token2} = rpc:call(C, locker, lock_with_token, [other_key, c_value, 1000, 5000]),
    ?assert(Token2 > Token),
    Before = configs(Cluster).

bad_input_changes_nothing(Config) ->
    [A, B, C] = Cluster = start_peers([a, b, c], Config),
    ok = rpc:call(A, locker, set_nodes, [Cluster, Cluster, []]),
    Before = configs(Cluster),
    Ghost = list_to_atom(lists:concat(["mb_ghost_", erlang:unique_integer([positive]), "@127.0.0.1"])),
    {error, {unreachable, Ghost}} = rpc:call(A, locker, set_nodes, [Cluster, [A, B, Ghost], []]),
    {error, {unreachable, Ghost}} = rpc:call(B, locker_membership, change, [[A, B, C], [Ghost], 2]),
    Bare = start_bare(bare, Config),
    {error, {not_running, Bare}} = rpc:call(A, locker, set_nodes, [Cluster, [A, B, Bare], []]),
    {error, {not_running, Bare}} = rpc:call(A, locker, set_nodes, [[Bare | Cluster], Cluster, []]),
    {error, {bad_w, 1, 3}} = rpc:call(A, locker, set_w, [Cluster, 1]),
    {error, {bad_w, 4, 3}} = rpc:call(B, locker, set_w, [Cluster, 4]),
    {error, {bad_w, 2, 4}} = rpc:call(C, locker_membership, change, [[A, B, C, Bare], [], 2]),
    {error, no_masters} = rpc:call(C, locker_membership, change, [[], [A], 1]),
    {badrpc, {'EXIT', {badarg, _}}} = rpc:call(A, locker, set_w, [Cluster, 0]),
    Before = configs(Cluster),
    {ok, 2, 3, 3} = rpc:call(A, locker, lock, [k, v, 1000]).

lockerd_joins_and_leaves(Config) ->
    [A, B, C] = Beams = start_peers([a, b, c], Config),
    ok = rpc:call(A, locker, set_nodes, [Beams, Beams, []]),
    U = list_to_atom(lists:concat(["mb_l_", erlang:unique_integer([positive])])),
    {{lockerd, _}, L, _} = locker_fault_SUITE:start_lockerd(
        U, locker_fault_SUITE:lockerd_binary(), ?config(priv_dir, Config), lists:sort([A, B, C]), 0,
        ?config(cleanup, Config)
    ),
    Clients = spawn_clients(Beams),
    H0 = locker_ct:collect_acquisitions([], 0, 20),
    %% lockerd joins as a fourth master (W 2 -> 3), through epochs like
    %% the BEAM nodes.
    ok = rpc:call(A, locker_membership, change, [[A, B, C, L], [], 3]),
    Epoch1 = same_config(Beams, [A, B, C, L], 3),
    {ok, #{epoch := Epoch1, mode := epoch}} = gen_server:call({locker, L}, {'$locker_config', get}),
    {ok, 3, _, _} = rpc:call(B, locker, lock, [joined, v, 2000]),
    {ok, _, Leases, _, _, _} = gen_server:call({locker, L}, get_debug_state),
    {joined, v, _} = lists:keyfind(joined, 1, Leases),
    %% It refuses votes made under another epoch, and the original
    %% requests that would change its view.
    {error, {config_epoch, Epoch1}} =
        gen_server:call({locker, L}, {get_write_lock, x, not_found, {'$locker_epoch', {0, none}, make_ref()}}),
    {error, {epoch_configured, Epoch1}} = gen_server:call({locker, L}, {set_nodes, [L], []}),
    H1 = locker_ct:collect_acquisitions(H0, locker_ct:count_acquisitions(H0), 20),
    %% lockerd leaves (W 3 -> 2).
    ok = rpc:call(B, locker_membership, change, [[A, B, C], [], 2]),
    Epoch2 = same_config(Beams, Beams, 2),
    {ok, #{epoch := Epoch2, masters := Ms}} = gen_server:call({locker, L}, {'$locker_config', get}),
    ?assertEqual(lists:sort(Beams), Ms),
    H2 = locker_ct:collect_acquisitions(H1, locker_ct:count_acquisitions(H1), 20),
    {Events, Counted} = locker_ct:stop_clients(Clients, H2),
    check(Events, Counted).

original_master_falls_back(Config) ->
    [A, B, C, O] = Nodes = start_peers([a, b, c, o], Config),
    ok = rpc:call(A, locker, set_nodes, [[A, B, C], [A, B, C], []]),
    %% O plays an original node: it has no locker_membership (a module of
    %% that name without its functions is loaded there).
    {ok, locker_membership, Bin} = compile:forms(
        [{attribute, 1, module, locker_membership}, {attribute, 1, export, []}], [binary]
    ),
    {module, locker_membership} = rpc:call(O, code, load_binary, [locker_membership, "none", Bin]),
    capture_logs([A, B]),
    %% O joins: the original overwrite, with a warning.
    ok = rpc:call(A, locker_membership, change, [Nodes, [], 3]),
    await_log(A, ["do not know configuration epochs", atom_to_list(O)]),
    [#{mode := legacy, masters := Ms, w := 3}] = lists:usort(configs([A, B, C])),
    ?assertEqual(lists:sort(Nodes), Ms),
    {Ms, [], 3} = rpc:call(O, locker, get_meta, []),
    {ok, 3, 4, 4} = rpc:call(B, locker, lock, [joined, v, 2000]),
    %% O leaves: still the overwrite (it was a master).
    ok = rpc:call(B, locker_membership, change, [[A, B, C], [], 2]),
    await_log(B, ["do not know configuration epochs", atom_to_list(O)]),
    [#{mode := legacy, w := 2}] = lists:usort(configs([A, B, C])),
    %% Only this project's masters: back to epochs.
    ok = rpc:call(C, locker_membership, change, [[A, B, C], [], 2]),
    _ = same_config([A, B, C], [A, B, C], 2),
    {ok, 2, 3, 3} = rpc:call(A, locker, lock, [back, v, 2000]).

%%--------------------------------------------------------------------
%% Helpers
%%--------------------------------------------------------------------

start_peers(Names, Config) ->
    [begin
        {Peer, Node} = locker_ct:start_peer(unique(Name), []),
        ets:insert(?config(cleanup, Config), {peer, Peer}),
        Node
     end || Name <- Names].

unique(Name) ->
    list_to_atom(lists:concat(["mb_", Name, "_", erlang:unique_integer([positive])])).

%% A node with the locker code but no locker server.
start_bare(Name, Config) ->
    {Peer, Node} = locker_ct:start_bare_peer(unique(Name), []),
    ets:insert(?config(cleanup, Config), {peer, Peer}),
    Node.

configs(Nodes) ->
    [rpc:call(N, locker_membership, config, []) || N <- Nodes].

%% Every node has the same configuration, set through epochs, not joint:
%% its epoch. A change needs only quorums of the masters to take it: a
%% node that missed it (an install that reached it in the wrong order
%% with its own catch-up) takes it from its masters when its requests are
%% refused, which the clients of these cases do; waited for up to 10 s.
same_config(Nodes, Masters, W) ->
    same_config(Nodes, Masters, W, 100).

same_config(Nodes, Masters, W, Tries) ->
    case lists:usort(configs(Nodes)) of
        [#{mode := epoch, masters := Ms, w := W, joint := none, epoch := Epoch}] ->
            ?assertEqual(lists:sort(Masters), Ms),
            Epoch;
        Other when Tries > 0 ->
            ct:log("not the same configuration everywhere yet: ~p", [Other]),
            _ = [rpc:call(N, locker_membership, pull, []) || N <- Nodes],
            timer:sleep(100),
            same_config(Nodes, Masters, W, Tries - 1);
        Other ->
            ct:fail({configurations_differ, Other})
    end.

%% Log events of the `locker' application on Nodes come to this process.
capture_logs(Nodes) ->
    [ok = rpc:call(N, logger, add_handler, [mb_capture, ?MODULE, #{config => #{pid => self()}}]) || N <- Nodes],
    ok.

%% @private Logger handler on the peers.
log(#{msg := Msg}, #{config := #{pid := Pid}}) ->
    Text =
        case Msg of
            {string, S} -> S;
            {report, R} -> io_lib:format("~0p", [R]);
            {F, A} -> io_lib:format(F, A)
        end,
    Pid ! {mb_log, node(), unicode:characters_to_list(Text)},
    ok.

%% Waits for a log line on Node holding every one of Parts.
await_log(Node, Parts) ->
    receive
        {mb_log, Node, Text} ->
            case lists:all(fun(P) -> string:find(Text, P) =/= nomatch end, Parts) of
                true -> ct:log("~p logged: ~s", [Node, Text]);
                false -> await_log(Node, Parts)
            end
    after 10000 ->
        ct:fail({no_log_line, Node, Parts})
    end.

%% Two contending clients per node.
spawn_clients(Nodes) ->
    [begin
        Pid = spawn(N, ?MODULE, client, [self(), {N, I}, 0]),
        _ = erlang:monitor(process, Pid),
        Pid
     end || N <- Nodes, I <- [1, 2]].

%% @private One client: lock a random key with a token, hold it, release,
%% report (host clock, microseconds); at `stop' it reports how many
%% acquisitions it made.
client(Collector, Id, N) ->
    receive
        {stop, Collector} -> Collector ! {counted, self(), N}
    after 0 ->
        Key = lists:nth(rand:uniform(length(?KEYS)), ?KEYS),
        Value = {Id, erlang:unique_integer()},
        T1 = os:system_time(microsecond),
        case catch locker:lock_with_token(Key, Value, ?LEASE, ?TIMEOUT) of
            {ok, Token} ->
                T2 = os:system_time(microsecond),
                Collector ! {acquired, Value, Key, {token, Token}, ?LEASE, ?TIMEOUT, T1, T2},
                receive after rand:uniform(30) -> ok end,
                Collector ! {releasing, Value, os:system_time(microsecond)},
                _ = (catch locker:release(Key, Value, ?TIMEOUT)),
                client(Collector, Id, N + 1);
            _ ->
                receive after rand:uniform(20) -> ok end,
                client(Collector, Id, N)
        end
    end.

%% The fault suite's checker; every acquisition here carries a token.
check(Events, Counted) ->
    Stats = locker_fault_SUITE:check(Events, Counted, Counted, 2),
    ct:pal("~b acquisitions counted by the clients; checker: ~p", [Counted, Stats]),
    #{violations := [], intervals := Counted} = Stats,
    {comment, lists:flatten(io_lib:format("~b acquisitions, 0 violations", [Counted]))}.
