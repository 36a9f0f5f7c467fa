%% Adversarial schedules against the phase-two rule (docs/protocol.md),
%% across real nodes: three masters (W = 2) started with OTP's `peer'
%% (names prefixed `adv_'), real `locker:lock/4' calls for the holders and
%% rivals, and a hand-driven coordinator for the one that is "paused":
%% this test node sends exactly the requests `locker.erl' sends, and
%% pausing between them is what `erlang:suspend_process/1' of a real
%% coordinator right after its budget check (`InTime' computed, `Commit'
%% not yet called) does, or a write delayed in the network past the
%% promise lifetime.
%%
%% To keep the suite short the masters' promise lifetime is set to 1 s
%% (`locker_nif:configure/2'); nothing else depends on it.
%%
%% Each case is an attack of the adversarial review of the phase-two
%% rule; the first four broke mutual exclusion or the fencing-token order
%% with the code as of commit d903db8 (same-value late write, undo of a
%% failed same-value lock, a value that is the atom not_found, masters
%% replaying each other's logs) and now hold.
-module(locker_adv_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_suite/1, end_per_suite/1, init_per_testcase/2, end_per_testcase/2]).
-export([
    holds_late_write_over_a_rival/1,
    holds_same_value_late_write_no_second_success/1,
    holds_undo_of_failed_same_value_lock/1,
    not_found_is_not_a_value/1,
    masters_do_not_replay_logs/1
]).

-define(TTL_MS, 1000).

all() ->
    [
        holds_late_write_over_a_rival,
        holds_same_value_late_write_no_second_success,
        holds_undo_of_failed_same_value_lock,
        not_found_is_not_a_value,
        masters_do_not_replay_logs
    ].

init_per_suite(Config) ->
    ok = locker_ct:ensure_distributed(),
    Config.

end_per_suite(_Config) ->
    ok.

init_per_testcase(_Case, Config) ->
    Peers = [
        locker_ct:start_peer(list_to_atom("adv_" ++ N ++ "_" ++ integer_to_list(erlang:unique_integer([positive]))), [])
     || N <- ["m1", "m2", "m3"]
    ],
    [{peers, Peers} | Config].

end_per_testcase(_Case, Config) ->
    [catch peer:stop(P) || {P, _} <- ?config(peers, Config)],
    ok.

nodes_of(Config) ->
    [N || {_, N} <- ?config(peers, Config)].

call(N, F, A) ->
    rpc:call(N, locker, F, A).

%% Masters = the three nodes, no replicas, W = 2, short promises.
cluster(Config) ->
    [A | _] = Cluster = nodes_of(Config),
    ok = call(A, set_nodes, [Cluster, Cluster, []]),
    [ok = rpc:call(N, locker_nif, configure, [?TTL_MS, false]) || N <- Cluster],
    Cluster.

%% The paused coordinator's requests, as locker.erl sends them.
req(Node, Request) ->
    gen_server:call({locker, Node}, Request, 5000).

token_tag() ->
    {'$locker_token', make_ref(), erlang:system_time(microsecond)}.

%% Waits (on the masters' own clocks) until Tag's promises have expired.
await_promises_gone(Nodes, Tag) ->
    Live = [
        N
     || N <- Nodes,
        begin
            {ok, Ps, _, _, _, _} = rpc:call(N, locker, get_debug_state, []),
            lists:keymember(Tag, 2, Ps)
        end
    ],
    case Live of
        [] ->
            ok;
        _ ->
            receive after 100 -> ok end,
            await_promises_gone(Live, Tag)
    end.

values(Nodes, Key) ->
    [{N, rpc:call(N, locker, dirty_read, [Key])} || N <- Nodes].

%%--------------------------------------------------------------------
%% Cases
%%--------------------------------------------------------------------

%% B gets W promises and is paused past their lifetime; A (another value)
%% locks. B's late write is refused everywhere: the rule works.
holds_late_write_over_a_rival(Config) ->
    [M1, M2, M3] = Cluster = cluster(Config),
    Key = adv_k1,
    Tag = token_tag(),
    [ok, ok] = [req(N, {get_write_lock, Key, not_found, Tag}) || N <- [M1, M2]],
    ok = await_promises_gone([M1, M2], Tag),
    {ok, 2, _, _} = call(M3, lock, [Key, holder_a, 60000]),
    Late = [req(N, {write, Tag, Key, paused_b, 60000}) || N <- Cluster],
    ?assertEqual([{error, no_promise}, {error, no_promise}, {error, no_promise}], Late),
    [{_, {ok, holder_a}}, {_, {ok, holder_a}}, {_, {ok, holder_a}}] = values(Cluster, Key).

%% Two callers lock with the same value (e.g. `node()', a service name).
%% B is paused after its budget check past its promises' lifetime; A
%% locks with lock_with_token and holds token TA. B's write then commits
%% on every master ("the key already holds the caller's value"): B
%% succeeds second, with a token lower than TA.
holds_same_value_late_write_no_second_success(Config) ->
    [M1, _, _] = Cluster = cluster(Config),
    Key = adv_k2,
    V = {singleton, service},
    {_, _, TB} = TagB = token_tag(),
    [ok, ok, ok] = [req(N, {get_write_lock, Key, not_found, TagB}) || N <- Cluster],
    ok = await_promises_gone(Cluster, TagB),
    {ok, TA} = call(M1, lock_with_token, [Key, V, 60000, 5000]),
    true = TB < TA,
    Commits = [N || N <- Cluster, req(N, {write, TagB, Key, V, 60000}) =:= ok],
    ct:pal("B (token ~p) committed on ~p after A took token ~p", [TB, Commits, TA]),
    ?assert(length(Commits) < 2).

%% The undo of a failed lock (`{release, Key, Value, make_ref()}' on the
%% masters that stored it) deletes a legitimate holder's lease when they
%% share the value, and a rival with another value then locks the key
%% while the holder's lease runs.
%%
%% 1. B (value V) gets promises on m1, m2; paused past their lifetime.
%% 2. X, a rival in its phase one, holds a promise on m3.
%% 3. A (value V) locks for 60 s: m1, m2 commit, m3 refuses. A holds K.
%% 4. B resumes cut off from m2, m3: its write reaches m1 only, which
%%    answers ok (it holds V). One commit: B fails, drops its promises and
%%    undoes on m1: A's lease is gone there.
%% 5. X gives up. C (another value) locks K: m1 and m3 are free.
holds_undo_of_failed_same_value_lock(Config) ->
    [M1, M2, M3] = Cluster = cluster(Config),
    Key = adv_k3,
    V = {singleton, service},
    TagB = token_tag(),
    [ok, ok] = [req(N, {get_write_lock, Key, not_found, TagB}) || N <- [M1, M2]],
    ok = await_promises_gone([M1, M2], TagB),
    TagX = token_tag(),
    ok = req(M3, {get_write_lock, Key, not_found, TagX}),
    {ok, 2, 2, 2} = call(M1, lock, [Key, V, 60000]),
    %% B resumes; only m1 is reachable.
    %% m1 holds "the caller's value" and (as of d903db8) answers ok; B
    %% then undoes there, as locker.erl's Undo does for Stored = [m1].
    Stored = req(M1, {write, TagB, Key, V, 60000}),
    ok = req(M1, {release_write_lock, TagB}),
    _ = Stored =:= ok andalso req(M1, {release, Key, V, make_ref()}),
    ok = req(M3, {release_write_lock, TagX}),
    Rival = call(M2, lock, [Key, rival_c, 2000]),
    ct:pal("A holds ~p for 60 s; C's lock: ~p; masters: ~p", [V, Rival, values(Cluster, Key)]),
    ?assertEqual({error, no_quorum}, Rival).

%% lock(K, not_found) stores the atom `not_found', which every later
%% lock's phase one reads as "absent": a second lock succeeds at once.
not_found_is_not_a_value(Config) ->
    [M1, _, _] = Cluster = cluster(Config),
    Key = adv_k4,
    %% The wire's expected `not_found' means "absent", so a lease holding
    %% the atom would be granted again: every API refuses it as a value.
    {badrpc, {'EXIT', {badarg, _}}} = call(M1, lock, [Key, not_found, 60000]),
    {badrpc, {'EXIT', {badarg, _}}} = call(M1, lock_with_token, [Key, not_found, 60000, 5000]),
    {badrpc, {'EXIT', {badarg, _}}} = call(M1, update, [Key, v, not_found]),
    ?assertEqual([{N, {error, not_found}} || N <- Cluster], values(Cluster, Key)).

%% Masters listed as replicas too (set_nodes(Cluster, Cluster, Cluster),
%% which set_nodes accepts and push_trans_log handles by skipping only
%% the node itself) replay each other's log without any check.
%%
%% 1. H1 locks K and releases it; m1 logs {write, K, h1, _}, {release, K}.
%% 2. X, a rival in its phase one, holds a promise on m1.
%% 3. H2 locks K for 60 s: m2, m3 commit (m1 refuses: X's promise).
%% 4. m1 pushes its log: m2 and m3 replay {write, K, h1}, {release, K}:
%%    H2's lease is gone.
%% 5. X gives up; H3 locks K while H2's lease runs.
masters_do_not_replay_logs(Config) ->
    [M1, M2, M3] = Cluster = nodes_of(Config),
    ok = call(M1, set_nodes, [Cluster, Cluster, Cluster]),
    %% Push the logs by hand.
    [ok = locker_ct:pause_timers(N, [push_trans_log]) || N <- Cluster],
    Key = adv_k5,
    {ok, 2, 3, 3} = call(M1, lock, [Key, h1, 60000]),
    {ok, 2, 3, 3} = call(M1, release, [Key, h1]),
    TagX = token_tag(),
    ok = req(M1, {get_write_lock, Key, not_found, TagX}),
    {ok, 2, 2, 2} = call(M2, lock, [Key, h2, 60000]),
    Waits = [rpc:async_call(N, locker, wait_for_release, [Key, 5000]) || N <- [M2, M3]],
    {locker, M1} ! push_trans_log,
    [_, _] = [rpc:yield(W) || W <- Waits],
    ok = req(M1, {release_write_lock, TagX}),
    H3 = call(M3, lock, [Key, h3, 2000]),
    ct:pal("H2 holds K for 60 s; H3's lock: ~p; masters: ~p", [H3, values(Cluster, Key)]),
    ?assertEqual({error, no_quorum}, H3).
