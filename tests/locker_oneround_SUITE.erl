%% One-round operations across real nodes (docs/protocol.md, "One-round
%% operations"): under a configuration set through epochs, `lock',
%% `update', `extend_lease' and `release' send each remote master one
%% request (counted on the masters' servers by a trace of what they
%% receive, and by `locker:path_counts/0'); the application environment
%% `one_round' = false forces the two-phase protocol; one-round and
%% two-phase coordinators contend on the same keys (the fault suite's
%% checker: no two holders, tokens in order); a failed attempt is undone
%% on every master, those whose reply came late included; a joint
%% configuration needs W of the old and W of the new masters; `lockerd'
%% serves the requests as a master; a master that answers only the
%% original requests keeps the cluster on the two-phase path and is never
%% sent a one-round request; malformed one-round requests get a bounded,
%% logged rejection and change nothing.
%%
%% Peers are named `or_<name>_<unique integer>'.
-module(locker_oneround_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, suite/0, init_per_suite/1, end_per_suite/1, init_per_testcase/2, end_per_testcase/2]).
-export([
    one_round_is_one_request_per_master/1,
    one_round_and_two_phase_contend/1,
    failed_attempts_are_undone/1,
    extend_catches_up_a_master/1,
    tokens_increase_across_paths/1,
    joint_configuration_needs_both_quorums/1,
    mixed_with_lockerd/1,
    original_master_keeps_two_phase/1,
    malformed_requests_change_nothing/1
]).
%% Run on the peers.
-export([client/4, tracer/2, log/2, suspender/2]).

-define(KEYS, [k1, k2, k3]).
-define(LEASE, 300).
-define(TIMEOUT, 1000).
%% The requests of the two protocols (what the tracers record).
-define(OPS, [get_write_lock, release_write_lock, write, update, extend_lease, release,
              cond_write, cond_update, cond_extend, cond_release, undo]).
-define(ONE_ROUND_OPS, [cond_write, cond_update, cond_extend, cond_release, undo]).

all() ->
    [one_round_is_one_request_per_master, one_round_and_two_phase_contend, failed_attempts_are_undone,
     extend_catches_up_a_master, tokens_increase_across_paths, joint_configuration_needs_both_quorums, mixed_with_lockerd,
     original_master_keeps_two_phase, malformed_requests_change_nothing].

suite() ->
    [{timetrap, {minutes, 10}}].

init_per_suite(Config) ->
    ok = locker_ct:ensure_distributed(),
    Config.

end_per_suite(_Config) ->
    ok.

init_per_testcase(_Case, Config) ->
    [{cleanup, ets:new(or_cleanup, [public, bag])} | Config].

end_per_testcase(_Case, Config) ->
    T = ?config(cleanup, Config),
    [os:cmd("kill -9 " ++ P) || {os_pid, P} <- ets:lookup(T, os_pid)],
    [catch peer:stop(P) || {peer, P} <- ets:lookup(T, peer)],
    ets:delete(T),
    ok.

%%--------------------------------------------------------------------
%% Cases
%%--------------------------------------------------------------------

one_round_is_one_request_per_master(Config) ->
    [A, B, C] = Cluster = start_peers([a, b, c], Config),
    ok = rpc:call(A, locker, set_nodes, [Cluster, Cluster, []]),
    _ = same_config(Cluster, Cluster, 2),
    Tracers = [start_tracer(N) || N <- [B, C]],
    P0 = paths(A),
    {ok, 2, 3, 3} = rpc:call(A, locker, lock, [k, v1, 5000]),
    {ok, 2, 3, 3} = rpc:call(A, locker, update, [k, v1, v2]),
    ok = rpc:call(A, locker, extend_lease, [k, v2, 5000]),
    [{ok, v2} = rpc:call(N, locker, dirty_read, [k]) || N <- Cluster],
    {ok, 2, 3, 3} = rpc:call(A, locker, release, [k, v2]),
    [{error, not_found} = rpc:call(N, locker, dirty_read, [k]) || N <- Cluster],
    {ok, T1} = rpc:call(A, locker, lock_with_token, [k, v3, 5000, 5000]),
    ?assertEqual(#{one_round => 5, two_phase => 0}, delta(P0, paths(A))),
    %% One request per master and operation: no phase one, no undo.
    [?assertEqual([cond_write, cond_update, cond_extend, cond_release, cond_write], requests(T)) || T <- Tracers],
    %% Forced two-phase: two requests per master.
    ok = rpc:call(A, application, set_env, [locker, one_round, false]),
    P1 = paths(A),
    {ok, 2, 3, 3} = rpc:call(A, locker, release, [k, v3]),
    {ok, T2} = rpc:call(A, locker, lock_with_token, [k, v4, 5000, 5000]),
    ?assert(T2 > T1),
    ?assertEqual(#{one_round => 0, two_phase => 2}, delta(P1, paths(A))),
    [?assertEqual([get_write_lock, release, get_write_lock, write], lists:nthtail(5, requests(T))) || T <- Tracers],
    {comment, "5 operations in one request per master; 2 in two"}.

one_round_and_two_phase_contend(Config) ->
    [A, B, C] = Cluster = start_peers([a, b, c], Config),
    %% C's coordinators use two phases only.
    ok = rpc:call(C, application, set_env, [locker, one_round, false]),
    ok = rpc:call(A, locker, set_nodes, [Cluster, Cluster, []]),
    _ = same_config(Cluster, Cluster, 2),
    P0 = [paths(N) || N <- Cluster],
    Clients = spawn_clients(Cluster),
    H = locker_ct:collect_acquisitions([], 0, 300),
    {Events, Counted} = locker_ct:stop_clients(Clients, H),
    [DA, DB, DC] = [delta(P, paths(N)) || {P, N} <- lists:zip(P0, Cluster)],
    ct:pal("attempts by path: A ~p, B ~p, C ~p", [DA, DB, DC]),
    ?assert(maps:get(one_round, DA) > 0 andalso maps:get(one_round, DB) > 0),
    ?assertEqual(0, maps:get(one_round, DC)),
    ?assert(maps:get(two_phase, DC) > 0),
    _ = A, _ = B,
    check(Events, Counted, 2).

failed_attempts_are_undone(Config) ->
    [A, B, C] = Cluster = start_peers([a, b, c], Config),
    ok = rpc:call(A, locker, set_nodes, [Cluster, Cluster, []]),
    _ = same_config(Cluster, Cluster, 2),
    %% 1. B and C hold k1 for another value (stored by an untagged
    %% one-round write): A's lock applies on A only, and is undone there.
    [ok = gen_server:call({locker, N}, {cond_write, make_ref(), k1, other, 60000}) || N <- [B, C]],
    {error, no_quorum} = rpc:call(A, locker, lock, [k1, mine, 60000]),
    {error, not_found} = rpc:call(A, locker, dirty_read, [k1]),
    [{ok, other} = rpc:call(N, locker, dirty_read, [k1]) || N <- [B, C]],
    %% 2. A write whose reply comes after the coordinator gave up: C's
    %% server is suspended, B holds k2; A's attempt times out, and its
    %% undo reaches C after the write (same channel).
    ok = gen_server:call({locker, B}, {cond_write, make_ref(), k2, other, 60000}),
    CPid = rpc:call(C, erlang, whereis, [locker]),
    Pause1 = suspend(C, CPid),
    {error, no_quorum} = rpc:call(A, locker, lock, [k2, mine, 60000, 1000]),
    ok = resume(Pause1),
    {ok, _, CLeases, _, _, _} = gen_server:call({locker, C}, get_debug_state),
    false = lists:keyfind(k2, 1, CLeases),
    {error, not_found} = rpc:call(A, locker, dirty_read, [k2]),
    {ok, other} = rpc:call(B, locker, dirty_read, [k2]),
    %% 3. An update that fails (B promised k3 to another request, C late)
    %% is put back on A and on C.
    {ok, 2, 3, 3} = rpc:call(A, locker, lock, [k3, v, 60000]),
    ok = gen_server:call({locker, B}, {get_write_lock, k3, v, make_ref()}),
    Pause2 = suspend(C, CPid),
    {error, no_quorum} = rpc:call(A, locker, update, [k3, v, v2, 1000]),
    ok = resume(Pause2),
    %% (B's promise lives on: a new one, or already_locked.)
    _ = gen_server:call({locker, B}, {get_write_lock, k3, v, make_ref()}),
    _ = gen_server:call({locker, C}, get_debug_state),
    [{ok, v} = rpc:call(N, locker, dirty_read, [k3]) || N <- Cluster],
    %% 4. Same for a release (the lease comes back with its expiry) and an
    %% extension (back to the old expiry).
    {ok, _, ALeases0, _, _, _} = rpc:call(A, locker, get_debug_state, []),
    {k3, v, Expiry} = lists:keyfind(k3, 1, ALeases0),
    Pause3 = suspend(C, CPid),
    {error, no_quorum} = rpc:call(A, locker, release, [k3, v, 1000]),
    {error, no_quorum} = rpc:call(A, locker, extend_lease, [k3, v, 600000, 1000]),
    ok = resume(Pause3),
    _ = gen_server:call({locker, C}, get_debug_state),
    [{ok, v} = rpc:call(N, locker, dirty_read, [k3]) || N <- Cluster],
    [begin
        {ok, _, Ls, _, _, _} = rpc:call(N, locker, get_debug_state, []),
        {k3, v, E} = lists:keyfind(k3, 1, Ls),
        %% Wall-clock milliseconds, rounded: the expiry stored before.
        ?assert(abs(E - Expiry) =< 5000, {N, E, Expiry})
     end || N <- [A, C]],
    ok.

%% A master that lost the key (deleted there by hand) gets it back after a
%% successful one-round extend_lease (the original phase two, sent to the
%% masters that did not hold it); a failed extension stores nothing again,
%% so a caller whose lease is gone on a quorum cannot extend it back.
extend_catches_up_a_master(Config) ->
    [A, B, C] = Cluster = start_peers([a, b, c], Config),
    ok = rpc:call(A, locker, set_nodes, [Cluster, Cluster, []]),
    _ = same_config(Cluster, Cluster, 2),
    {ok, 2, 3, 3} = rpc:call(A, locker, lock, [k, v, 60000]),
    ok = gen_server:call({locker, C}, {release, k, v, make_ref()}),
    {error, not_found} = rpc:call(C, locker, dirty_read, [k]),
    P0 = paths(A),
    ok = rpc:call(A, locker, extend_lease, [k, v, 60000]),
    {ok, v} = rpc:call(C, locker, dirty_read, [k]),
    ?assertEqual(#{one_round => 1, two_phase => 0}, delta(P0, paths(A))),
    %% Gone on two masters: no quorum held it; not restored anywhere.
    [ok = gen_server:call({locker, N}, {release, k, v, make_ref()}) || N <- [B, C]],
    {error, no_quorum} = rpc:call(A, locker, extend_lease, [k, v, 60000]),
    [{ok, v} = rpc:call(N, locker, dirty_read, [k]) || N <- [A]],
    [{error, not_found} = rpc:call(N, locker, dirty_read, [k]) || N <- [B, C]],
    %% Gone everywhere: an extension fails and leaves nothing.
    ok = gen_server:call({locker, A}, {release, k, v, make_ref()}),
    {error, no_quorum} = rpc:call(B, locker, extend_lease, [k, v, 60000]),
    [{error, not_found} = rpc:call(N, locker, dirty_read, [k]) || N <- Cluster],
    ok.

tokens_increase_across_paths(Config) ->
    [A, B, C] = Cluster = start_peers([a, b, c], Config),
    ok = rpc:call(C, application, set_env, [locker, one_round, false]),
    ok = rpc:call(A, locker, set_nodes, [Cluster, Cluster, []]),
    _ = same_config(Cluster, Cluster, 2),
    Tokens = lists:map(
        fun(I) ->
            N = lists:nth(I rem 3 + 1, Cluster),
            {ok, T} = rpc:call(N, locker, lock_with_token, [tk, {v, I}, 5000, 5000]),
            {ok, 2, _, _} = rpc:call(N, locker, release, [tk, {v, I}]),
            T
        end,
        lists:seq(1, 30)
    ),
    ?assertEqual(Tokens, lists:usort(Tokens)),
    %% A master's floor above this node's clock: a one-round attempt is
    %% refused as stale and retried once above the floor it heard.
    Floor = lists:last(Tokens) + 10000000000,
    [ok = rpc:call(N, locker_nif, raise_token_floor, [Floor]) || N <- Cluster],
    {ok, T} = rpc:call(A, locker, lock_with_token, [tk, high, 5000, 5000]),
    ?assert(T > Floor),
    _ = B,
    ok.

joint_configuration_needs_both_quorums(Config) ->
    [A, B, C, D] = Nodes = start_peers([a, b, c, d], Config),
    ok = rpc:call(A, locker, set_nodes, [Nodes, [A, B, C], []]),
    _ = same_config(Nodes, [A, B, C], 2),
    %% A long lease keeps the change from [A, B, C] to [B, C, D] joint.
    {ok, 2, 3, 3} = rpc:call(A, locker, lock, [long, v, 600000]),
    {error, {joint, _}} = rpc:call(A, locker_membership, change, [[B, C, D], [], 2, #{nodes => Nodes, wait => 0}]),
    #{joint := {Old, 2}, masters := New, mode := epoch, epoch := Joint} = rpc:call(B, locker_membership, config, []),
    ?assertEqual({lists:sort([A, B, C]), lists:sort([B, C, D])}, {Old, New}),
    Tracers = [start_tracer(N) || N <- [A, D]],
    P0 = paths(B),
    %% Sent to the old and the new masters, in one round.
    {ok, 2, 4, 4} = rpc:call(B, locker, lock, [k, v, 60000]),
    [{ok, v} = rpc:call(N, locker, dirty_read, [k]) || N <- Nodes],
    %% W_old (A, B) apply, but only B of the new masters: refused, undone.
    %% (A rival's writes, tagged with the joint epoch: masters refuse
    %% untagged requests while joint.)
    [
        ok = gen_server:call({locker, N}, {cond_write, {'$locker_epoch', Joint, make_ref()}, k2, other, 60000})
     || N <- [C, D]
    ],
    ct:log("configurations: ~p", [configs(Nodes)]),
    {error, no_quorum} = rpc:call(B, locker, lock, [k2, mine, 60000]),
    ct:log("configurations: ~p", [configs(Nodes)]),
    [{error, not_found} = rpc:call(N, locker, dirty_read, [k2]) || N <- [A, B]],
    ?assertEqual(#{one_round => 2, two_phase => 0}, delta(P0, paths(B))),
    %% k on A and D, then k2 (and its undo); D also got this test's write.
    [TA, TD] = Tracers,
    ct:log("A got ~p~nD got ~p", [full_requests(TA), full_requests(TD)]),
    ?assertEqual([cond_write, cond_write, release], requests(TA)),
    ?assertEqual([cond_write, cond_write, cond_write, release], requests(TD)),
    ok.

mixed_with_lockerd(Config) ->
    [A, B] = Beams = start_peers([a, b], Config),
    U = list_to_atom(lists:concat(["or_l_", erlang:unique_integer([positive])])),
    {{lockerd, _}, L, _} = locker_fault_SUITE:start_lockerd(
        U, locker_fault_SUITE:lockerd_binary(), ?config(priv_dir, Config), lists:sort(Beams), 0,
        ?config(cleanup, Config)
    ),
    Cluster = Beams ++ [L],
    ok = rpc:call(A, locker, set_nodes, [Cluster, Cluster, []]),
    Epoch = same_config(Beams, Cluster, 2),
    {ok, #{epoch := Epoch, mode := epoch}} = gen_server:call({locker, L}, {'$locker_config', get}),
    P0 = paths(A),
    {ok, 2, 3, 3} = rpc:call(A, locker, lock, [k, v1, 5000]),
    {ok, 2, 3, 3} = rpc:call(A, locker, update, [k, v1, v2]),
    ok = rpc:call(A, locker, extend_lease, [k, v2, 5000]),
    {ok, _, Leases, _, _, _} = gen_server:call({locker, L}, get_debug_state),
    {k, v2, _} = lists:keyfind(k, 1, Leases),
    {ok, 2, 3, 3} = rpc:call(A, locker, release, [k, v2]),
    {ok, _, Leases1, _, _, _} = gen_server:call({locker, L}, get_debug_state),
    false = lists:keyfind(k, 1, Leases1),
    ?assertEqual(#{one_round => 4, two_phase => 0}, delta(P0, paths(A))),
    %% A failed attempt is undone on lockerd too (B holds k2, L late: a
    %% refusal there) ...
    ok = gen_server:call({locker, B}, {cond_write, make_ref(), k2, other, 60000}),
    ok = gen_server:call({locker, L}, {cond_write, make_ref(), k2, other, 60000}),
    {error, no_quorum} = rpc:call(A, locker, lock, [k2, mine, 60000]),
    {error, not_found} = rpc:call(A, locker, dirty_read, [k2]),
    %% ... an update is put back there.
    {ok, 2, 3, 3} = rpc:call(A, locker, lock, [k3, v, 60000]),
    ok = gen_server:call({locker, B}, {get_write_lock, k3, v, make_ref()}),
    ok = gen_server:call({locker, L}, {get_write_lock, k3, v, make_ref()}),
    {error, no_quorum} = rpc:call(A, locker, update, [k3, v, v2, 2000]),
    {ok, v} = rpc:call(A, locker, dirty_read, [k3]),
    %% Malformed one-round requests: refused, nothing stored.
    {error, {unknown_request, _}} = gen_server:call({locker, L}, {cond_write, make_ref(), bad}),
    {error, badarg} = gen_server:call({locker, L}, {cond_write, make_ref(), bad, v, not_a_length}),
    {error, badarg} = gen_server:call({locker, L}, {cond_extend, make_ref(), k3, v, "x"}),
    {error, {unknown_request, _}} = gen_server:call({locker, L}, {undo, make_ref()}),
    {ok, _, Leases2, _, _, _} = gen_server:call({locker, L}, get_debug_state),
    false = lists:keyfind(bad, 1, Leases2),
    %% BEAM clients contend with lockerd as a master.
    Clients = spawn_clients(Beams),
    H = locker_ct:collect_acquisitions([], 0, 150),
    {Events, Counted} = locker_ct:stop_clients(Clients, H),
    check(Events, Counted, 2).

original_master_keeps_two_phase(Config) ->
    [A, B, C, O] = Nodes = start_peers([a, b, c, o], Config),
    ok = rpc:call(A, locker, set_nodes, [[A, B, C], [A, B, C], []]),
    _ = same_config([A, B, C], [A, B, C], 2),
    %% O plays an original node: it has no locker_membership (as in
    %% locker_membership_SUITE), and every request its server gets is
    %% recorded.
    {ok, locker_membership, Bin} = compile:forms(
        [{attribute, 1, module, locker_membership}, {attribute, 1, export, []}], [binary]
    ),
    {module, locker_membership} = rpc:call(O, code, load_binary, [locker_membership, "none", Bin]),
    Tracer = start_tracer(O),
    ok = rpc:call(A, locker_membership, change, [Nodes, [], 3]),
    [#{mode := legacy}] = lists:usort(configs([A, B, C])),
    P0 = [paths(N) || N <- [A, B, C]],
    {ok, 3, 4, 4} = rpc:call(B, locker, lock, [k, v, 5000]),
    {ok, 3, 4, 4} = rpc:call(B, locker, update, [k, v, v2]),
    ok = rpc:call(A, locker, extend_lease, [k, v2, 5000]),
    {ok, 3, 4, 4} = rpc:call(C, locker, release, [k, v2]),
    Clients = spawn_clients([A, B, C]),
    H = locker_ct:collect_acquisitions([], 0, 60),
    {Events, Counted} = locker_ct:stop_clients(Clients, H),
    Deltas = [delta(P, paths(N)) || {P, N} <- lists:zip(P0, [A, B, C])],
    ct:pal("attempts by path on A, B, C: ~p", [Deltas]),
    [?assertEqual(0, maps:get(one_round, D)) || D <- Deltas],
    Seen = requests(Tracer),
    ct:pal("requests O received: ~p", [lists:usort(Seen)]),
    ?assert(length(Seen) > 100),
    ?assertEqual([], [R || R <- Seen, lists:member(R, ?ONE_ROUND_OPS)]),
    %% O leaves (still the overwrite: it was a master), then a change
    %% among this project's masters only: epochs, and one round again.
    ok = rpc:call(B, locker_membership, change, [[A, B, C], [], 2]),
    [#{mode := legacy}] = lists:usort(configs([A, B, C])),
    ?assertEqual([], [R || R <- requests(Tracer), lists:member(R, ?ONE_ROUND_OPS)]),
    ok = rpc:call(A, locker_membership, change, [[A, B, C], [], 2]),
    _ = same_config([A, B, C], [A, B, C], 2),
    P1 = paths(A),
    {ok, 2, 3, 3} = rpc:call(A, locker, lock, [back, v, 2000]),
    ?assertEqual(#{one_round => 1, two_phase => 0}, delta(P1, paths(A))),
    check(Events, Counted, 3).

malformed_requests_change_nothing(Config) ->
    [A, B, _] = Cluster = start_peers([a, b, c], Config),
    ok = rpc:call(A, locker, set_nodes, [Cluster, Cluster, []]),
    _ = same_config(Cluster, Cluster, 2),
    capture_logs([B]),
    T = make_ref(),
    Bad = [
        {{cond_write, T, bad}, unknown},
        {{cond_write, T, bad, v, not_a_length}, badarg},
        {{cond_write, T, bad, v, 1000, extra}, unknown},
        {{cond_update, T, bad, v}, unknown},
        {{cond_extend, T, bad, v, [1]}, badarg},
        {{cond_release, T, bad}, unknown},
        {{undo, T}, unknown},
        {{undo, T, bad, extra}, unknown},
        {cond_write, unknown}
    ],
    [case {Expect, gen_server:call({locker, B}, Req)} of
        {unknown, {error, {unknown_request, _}}} -> ok;
        {badarg, {error, badarg}} -> ok;
        Other -> ct:fail({unexpected, Req, Other})
     end || {Req, Expect} <- Bad],
    {ok, _, [], _, _, _} = gen_server:call({locker, B}, get_debug_state),
    %% A flood: answered, never crashing the server, logged at most 20 a
    %% second.
    Pid = rpc:call(B, erlang, whereis, [locker]),
    Start = erlang:monotonic_time(millisecond),
    [{error, badarg} = gen_server:call({locker, B}, {cond_write, T, {bad, I}, v, bad}) || I <- lists:seq(1, 500)],
    Secs = (erlang:monotonic_time(millisecond) - Start) div 1000 + 2,
    Pid = rpc:call(B, erlang, whereis, [locker]),
    {ok, _, [], _, _, _} = gen_server:call({locker, B}, get_debug_state),
    Lines = count_logs(B, "bad arguments"),
    ct:log("~b warnings for 500 bad requests in about ~b s", [Lines, Secs]),
    ?assert(Lines >= 1 andalso Lines =< 20 * Secs, {Lines, Secs}),
    %% The cluster still works in one round.
    {ok, 2, 3, 3} = rpc:call(A, locker, lock, [k, v, 2000]),
    ok.

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
    list_to_atom(lists:concat(["or_", Name, "_", erlang:unique_integer([positive])])).

paths(Node) ->
    rpc:call(Node, locker, path_counts, []).

delta(#{one_round := O0, two_phase := T0}, #{one_round := O1, two_phase := T1}) ->
    #{one_round => O1 - O0, two_phase => T1 - T0}.

configs(Nodes) ->
    [rpc:call(N, locker_membership, config, []) || N <- Nodes].

%% Every node has the same configuration, set through epochs, not joint.
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

%% Suspends a process of Node until resume/1 (a suspension lasts as long
%% as the process that made it).
suspend(Node, Pid) ->
    S = spawn(Node, ?MODULE, suspender, [self(), Pid]),
    receive {S, suspended} -> S after 5000 -> ct:fail({not_suspended, Node}) end.

resume(S) ->
    S ! {resume, self()},
    receive {S, resumed} -> ok after 5000 -> ct:fail(not_resumed) end.

%% @private
suspender(Parent, Pid) ->
    true = erlang:suspend_process(Pid),
    Parent ! {self(), suspended},
    receive
        {resume, From} ->
            true = erlang:resume_process(Pid),
            From ! {self(), resumed}
    end.

%% A tracer of what Node's locker server receives: the names of the
%% protocol's requests, in order.
start_tracer(Node) ->
    Server = rpc:call(Node, erlang, whereis, [locker]),
    Pid = spawn(Node, ?MODULE, tracer, [self(), Server]),
    receive {Pid, tracing} -> Pid after 5000 -> ct:fail({no_tracer, Node}) end.

%% @private
tracer(Parent, Server) ->
    1 = erlang:trace(Server, true, ['receive']),
    Parent ! {self(), tracing},
    tracer_loop([]).

tracer_loop(Acc) ->
    receive
        {trace, Self, 'receive', {'$gen_call', From, {'$locker_batch', Reqs}}} when is_list(Reqs) ->
            %% A batch (locker_batch: a request sent while another was in
            %% flight to this master) counts as the requests it carries.
            [self() ! {trace, Self, 'receive', {'$gen_call', From, R}} || R <- Reqs],
            tracer_loop(Acc);
        {trace, _, 'receive', {'$gen_call', _, Req}} ->
            Name =
                case Req of
                    _ when is_tuple(Req), tuple_size(Req) > 0 -> element(1, Req);
                    _ -> Req
                end,
            case lists:member(Name, ?OPS) of
                true -> tracer_loop([{Name, Req} | Acc]);
                false -> tracer_loop(Acc)
            end;
        {trace, _, _, _} ->
            tracer_loop(Acc);
        {get, From} ->
            From ! {self(), [N || {N, _} <- lists:reverse(Acc)]},
            tracer_loop(Acc);
        {get_full, From} ->
            From ! {self(), lists:reverse(Acc)},
            tracer_loop(Acc)
    end.

full_requests(Tracer) ->
    Tracer ! {get_full, self()},
    receive {Tracer, Seen} -> Seen after 5000 -> ct:fail(tracer_silent) end.

requests(Tracer) ->
    Tracer ! {get, self()},
    receive {Tracer, Seen} -> Seen after 5000 -> ct:fail(tracer_silent) end.

%% Log events of the `locker' application on Nodes come to this process.
capture_logs(Nodes) ->
    [ok = rpc:call(N, logger, add_handler, [or_capture, ?MODULE, #{config => #{pid => self()}}]) || N <- Nodes],
    ok.

%% @private Logger handler on the peers.
log(#{msg := Msg}, #{config := #{pid := Pid}}) ->
    Text =
        case Msg of
            {string, S} -> S;
            {report, R} -> io_lib:format("~0p", [R]);
            {F, A} -> io_lib:format(F, A)
        end,
    Pid ! {or_log, node(), unicode:characters_to_list(Text)},
    ok.

%% Log lines of Node holding Part, received so far (waits 1 s for more).
count_logs(Node, Part) ->
    receive
        {or_log, Node, Text} ->
            case string:find(Text, Part) of
                nomatch -> count_logs(Node, Part);
                _ -> 1 + count_logs(Node, Part)
            end
    after 1000 -> 0
    end.

%% Two contending clients per node.
spawn_clients(Nodes) ->
    [begin
        Pid = spawn(N, ?MODULE, client, [self(), {N, I}, 0, ?KEYS]),
        _ = erlang:monitor(process, Pid),
        Pid
     end || N <- Nodes, I <- [1, 2]].

%% @private One client: lock a random key with a token, hold it, release,
%% report (host clock, microseconds); at `stop' it reports how many
%% acquisitions it made.
client(Collector, Id, N, Keys) ->
    receive
        {stop, Collector} -> Collector ! {counted, self(), N}
    after 0 ->
        Key = lists:nth(rand:uniform(length(Keys)), Keys),
        Value = {Id, erlang:unique_integer()},
        T1 = os:system_time(microsecond),
        case catch locker:lock_with_token(Key, Value, ?LEASE, ?TIMEOUT) of
            {ok, Token} ->
                T2 = os:system_time(microsecond),
                Collector ! {acquired, Value, Key, {token, Token}, ?LEASE, ?TIMEOUT, T1, T2},
                receive after rand:uniform(30) -> ok end,
                Collector ! {releasing, Value, os:system_time(microsecond)},
                _ = (catch locker:release(Key, Value, ?TIMEOUT)),
                client(Collector, Id, N + 1, Keys);
            _ ->
                receive after rand:uniform(20) -> ok end,
                client(Collector, Id, N, Keys)
        end
    end.

%% The fault suite's checker; every acquisition here carries a token.
check(Events, Counted, W) ->
    Stats = locker_fault_SUITE:check(Events, Counted, Counted, W),
    ct:pal("~b acquisitions counted by the clients; checker: ~p", [Counted, Stats]),
    #{violations := [], intervals := Counted} = Stats,
    {comment, lists:flatten(io_lib:format("~b acquisitions, 0 violations", [Counted]))}.
