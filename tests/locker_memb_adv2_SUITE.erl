%% Second adversarial review of membership (issue 13, lane `memb2'): the
%% holder's `extend_lease'/`release' under a joint configuration, the
%% horizon that shrinks when the leases it covered are gone
%% (`locker_core::membership::horizon_until'), the Rust client as an
%% epoch coordinator, lockerd pulling configurations.
%%
%% Every case runs across real nodes (peer VMs, real distribution, the
%% `locker' server really suspended with `erlang:suspend_process', VMs
%% really restarted, the Rust client's OS process really stopped with
%% SIGSTOP). A coordinator whose pause must fall exactly between its
%% phases, or whose messages to one master are lost, is played on the
%% wire with the requests and the tag `locker.erl' would send.
%%
%% The checker: every grant a caller believes it holds is recorded with
%% its lease window, measured on this node's monotonic clock from before
%% the call that granted it (so a window never starts late nor ends
%% late), and the case fails on any overlap of two callers' windows on one
%% key (check_grants/1).
%%
%% Cases in ?OPEN are attacks that get through (see each case's comment:
%% the sequence of events and the rule that is wrong): they FAIL, and are
%% skipped unless LOCKER_MA2_OPEN=run, so that the suite stays green.
%% Every other case is an attack the design resists and passes.
%%
%% Peers are named `ma2_<name>_<unique integer>'.
-module(locker_memb_adv2_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, suite/0, init_per_suite/1, end_per_suite/1, init_per_testcase/2, end_per_testcase/2]).
-export([
    failed_shortening_extend_shrinks_horizon/1,
    failed_shortening_extend_slow_new_master/1,
    failed_lengthening_extend_keeps_horizon/1,
    failed_shortening_extend_shrinks_lockerd_horizon/1,
    untagged_lock_during_joint_outlives_horizon/1,
    holder_paused_across_change_extend_lands_late/1,
    holder_release_on_some_masters_keeps_change_joint/1,
    master_restarted_in_safe_mode_while_joint/1,
    lockerd_restarted_with_stale_view_while_joint/1,
    lockerd_ignores_one_master_with_a_wrong_newer_view/1,
    client_paused_between_phases_across_change/1,
    client_caught_up_to_aborted_joint_stays_stuck/1,
    client_ignores_one_master_with_a_wrong_newer_view/1,
    client_failed_shortening_extend_shrinks_horizon/1,
    catch_up_from_another_node_refused/1
]).

-define(LONG_LEASE, 60000).
%% Attacks that get through (the cases fail; skipped by default).
-define(OPEN, []).

all() ->
    [
        failed_shortening_extend_shrinks_horizon,
        failed_shortening_extend_slow_new_master,
        failed_lengthening_extend_keeps_horizon,
        failed_shortening_extend_shrinks_lockerd_horizon,
        untagged_lock_during_joint_outlives_horizon,
        holder_paused_across_change_extend_lands_late,
        holder_release_on_some_masters_keeps_change_joint,
        master_restarted_in_safe_mode_while_joint,
        lockerd_restarted_with_stale_view_while_joint,
        lockerd_ignores_one_master_with_a_wrong_newer_view,
        client_paused_between_phases_across_change,
        client_caught_up_to_aborted_joint_stays_stuck,
        client_ignores_one_master_with_a_wrong_newer_view,
        client_failed_shortening_extend_shrinks_horizon,
        catch_up_from_another_node_refused
    ].

suite() ->
    [{timetrap, {minutes, 5}}].

init_per_suite(Config) ->
    ok = locker_ct:ensure_distributed(),
    %% The Rust client's cases drive it through lockerd's example
    %% client_cli (built with lockerd's binaries).
    #{lockerd := Lockerd} = locker_ct:lockerd_binaries(),
    Cli = filename:join(filename:dirname(Lockerd), "examples/client_cli"),
    true = filelib:is_regular(Cli),
    [{cli, Cli}, {lockerd, Lockerd} | Config].

end_per_suite(_Config) ->
    ok.

init_per_testcase(Case, Config) ->
    case lists:member(Case, ?OPEN) andalso os:getenv("LOCKER_MA2_OPEN") =/= "run" of
        true -> {skip, "open attack (LOCKER_MA2_OPEN=run runs it)"};
        false -> [{cleanup, ets:new(ma2_cleanup, [public, bag])} | Config]
    end.

end_per_testcase(_Case, Config) ->
    T = ?config(cleanup, Config),
    [catch port_close(P) || {port, P} <- ets:lookup(T, port)],
    [os:cmd("kill -CONT " ++ P ++ "; kill -9 " ++ P) || {os_pid, P} <- ets:lookup(T, os_pid)],
    [catch peer:stop(P) || {peer, P} <- ets:lookup(T, peer)],
    ets:delete(T),
    ok.

%%--------------------------------------------------------------------
%% Cases
%%--------------------------------------------------------------------

%% Resisted since memfix2 (it was OPEN): while a master is joint an
%% extension never shortens a live lease (membership::stored_expiry).
%% Before: A failed extend_lease under a joint configuration shrinks the
%% old masters' horizon while its holder still counts on its lease.
%%
%% Sequence: X holds k (value x) for 60 s on {A, B, C} (W 2). The change
%% {A, B, C} -> {C, D} (W 2) stays joint (X's lease outlives its wait).
%% X calls extend_lease(k, x, 200) under the joint configuration (a
%% shorter lease than it has left: "I will be done in 200 ms"). Phase
%% one: A, B, C promise (they hold x); D answers not_expected_value,
%% which the holder's rule counts as a promise. Before X's phase two
%% reaches D, a rival's phase one (under the joint epoch) takes a promise
%% on k at D (D's server was slow: both requests were queued, the rival's
%% behind X's). Phase two: A, B, C apply the extension (their lease of k
%% now ends in 200 ms), D answers no_promise. The new side has 1 < W_new
%% commits: extend_lease answers {error, no_quorum}. docs/protocol.md
%% ("The holder under a joint configuration") says of such a failed
%% extension: "its caller keeps only the lease it had, which the horizon
%% covers", so X keeps counting on its 60 s. But A, B and C no longer hold
%% a lease of k that lives longer than 200 ms: their horizon (noted at
%% the joint install, shrunk to their longest live lease by
%% horizon_until) passes 200 ms later, the change completes, and Y locks
%% k on {C, D} under the final configuration while X's lease (as X was
%% told it stands) has 59 s left: two holders.
%%
%% The rule that is wrong: horizon_until lets the horizon shrink on an
%% old master to its longest *live* lease, which an operation reported
%% as failed (a shortening extension applied on W_old old masters but
%% not on W_new new ones) has changed. Without a change the same failed
%% extension cannot shrink a quorum (it fails only when fewer than W
%% masters applied it, or on a lost reply). Fixes: an old master under a
%% joint epoch keeps, for the horizon, the expiry a lease had when it
%% took the epoch unless the lease is deleted (release) or replaced by a
%% longer one (i.e. an extension never lowers what the horizon counts);
%% or the coordinator refuses (or runs as max(left, new)) a shortening
%% extension under a joint configuration.
failed_shortening_extend_shrinks_horizon(Config) ->
    {Outcome, Grants} = failed_extend_under_joint(200, rival, Config),
    ct:log("outcome: ~p", [Outcome]),
    check_grants(Grants).

%% Resisted since memfix2 (it was OPEN): while a master is joint an
%% extension never shortens a live lease (membership::stored_expiry).
%% Before: failed_shortening_extend_shrinks_horizon without a rival: the
%% new master D is slow for X's phase two only (its server answers X's
%% phase one, then is suspended with sys:suspend, as a long GC would
%% stall it), X's phase two times out there, extend_lease(k, x, 200)
%% fails, the old masters applied it, their horizon shrinks, the change
%% completes and Y locks k while X counts on its 60 s.
failed_shortening_extend_slow_new_master(Config) ->
    {Outcome, Grants} = failed_extend_under_joint(200, slow, Config),
    ct:log("outcome: ~p", [Outcome]),
    check_grants(Grants).

%% The same failed extension, lengthening the lease (the usual use of
%% extend_lease): the old masters' horizon stays the one noted at the
%% joint install, the change stays joint, the rival is refused.
failed_lengthening_extend_keeps_horizon(Config) ->
    {Outcome, Grants} = failed_extend_under_joint(2 * ?LONG_LEASE, rival, Config),
    ct:log("outcome: ~p", [Outcome]),
    #{finish := Finish, rival := Y} = Outcome,
    check_grants(Grants),
    ?assertMatch({error, {joint, _}}, Finish),
    ?assertEqual({error, no_quorum}, Y).

%% {A, B, C} W 2 holding k for X (60 s), change to {C, D} left joint,
%% X's extend_lease(k, x, LeaseMs) failing on D (How: `rival', a rival's
%% phase one queued between X's phases there, see
%% failed_shortening_extend_shrinks_horizon; `slow', D's server suspended
%% right after it answered X's phase one), then the change finished
%% (wait 3 s, or 20 s for a short extension) and a rival Y locking k on
%% D (trying again for a while when the change completed).
failed_extend_under_joint(LeaseMs, How, Config) ->
    [A, B, C, D] = Nodes = start_peers([a, b, c, d], Config),
    ok = rpc:call(A, locker, set_nodes, [Nodes, [A, B, C], []]),
    _ = same_config(Nodes, [A, B, C], 2),
    T0 = now_ms(),
    {ok, _} = rpc:call(A, locker, lock_with_token, [k, x, ?LONG_LEASE, 5000]),
    X = {x, T0, T0 + ?LONG_LEASE},
    {error, {joint, _}} = rpc:call(B, locker_membership, change, [[C, D], [], 2, #{wait => 1000}]),
    [#{epoch := Joint, joint := {_, 2}}] = lists:usort(configs(Nodes)),
    %% D's server is slow: X's phase one waits in its queue.
    DPid = rpc:call(D, erlang, whereis, [locker]),
    Stall = locker_ct:stall_server(D),
    Self = self(),
    _ = spawn_link(fun() -> Self ! {extend, rpc:call(A, locker, extend_lease, [k, x, LeaseMs, 3000])} end),
    ok = await(fun() -> queued(D, get_write_lock) >= 1 end, 200),
    RivalTag = {'$locker_token', {'$locker_epoch', Joint, make_ref()}, erlang:system_time(microsecond)},
    RivalVote =
        case How of
            rival ->
                %% A rival's phase one under the joint epoch, queued
                %% behind X's: D promises k to it before X's phase two.
                RivalRef = make_ref(),
                {locker, D} ! {'$gen_call', {self(), RivalRef}, {get_write_lock, k, not_found, RivalTag}},
                ok = await(fun() -> queued(D, get_write_lock) >= 2 end, 200),
                ok = locker_ct:resume_server(Stall),
                receive {RivalRef, V} -> V after 10000 -> ct:fail(no_rival_vote) end;
            slow ->
                %% No rival: D's server is suspended (sys:suspend) right
                %% after it answered X's phase one, and X's phase two
                %% times out there.
                _ = spawn(fun() -> Self ! {suspended, sys:suspend(DPid, 60000)} end),
                ok = await(fun() -> queue_len(D) >= 2 end, 200),
                ok = locker_ct:resume_server(Stall),
                receive {suspended, ok} -> ok after 10000 -> ct:fail(not_suspended) end
        end,
    Ext = receive {extend, R} -> R after 30000 -> ct:fail(extend_hangs) end,
    _ = How =:= slow andalso sys:resume(DPid, 10000),
    Dirty = [{N, rpc:call(N, locker, dirty_read, [k])} || N <- Nodes],
    ct:log("extend_lease(k, x, ~b) under joint: ~p; D: ~p (~p); k on ~p", [LeaseMs, Ext, How, RivalVote, Dirty]),
    %% The setup: the extension failed (on D).
    ok = RivalVote,
    {error, no_quorum} = Ext,
    %% The rival aborts (the old masters refused it: x lives there).
    ok = gen_server:call({locker, D}, {release_write_lock, RivalTag}),
    %% (D stored X's 200 ms lease when it resumed, in the slow case: it
    %% runs out at once.)
    Wait =
        case LeaseMs < ?LONG_LEASE of
            true -> 20000;
            false -> 3000
        end,
    Finish = rpc:call(B, locker_membership, change, [[C, D], [], 2, #{wait => Wait}]),
    T1 = now_ms(),
    %% A rival that tries again for a while once the change completed.
    Y =
        case Finish of
            ok -> await_lock(D, k, y, ?LONG_LEASE, 10);
            _ -> rpc:call(D, locker, lock, [k, y, ?LONG_LEASE, 5000])
        end,
    ct:log("finishing the change: ~p; Y on D: ~p; configs ~p", [Finish, Y, configs(Nodes)]),
    %% X's extension failed: X keeps the lease it had (docs/protocol.md).
    {#{extend => Ext, finish => Finish, rival => Y}, [X | granted(y, T1, ?LONG_LEASE, Y)]}.

%% Resisted since memfix2 (it was OPEN): while a master is joint an
%% extension never shortens a live lease (membership::stored_expiry).
%% Before: failed_shortening_extend_shrinks_horizon with lockerd as an old
%% master (it applies the same rule, horizon_until, to its store).
%%
%% {A, B, L} W 2 (L is lockerd) -> {L, D} W 2. B also holds a 60 s lease
%% of another key (k2, stored on B alone under the old epoch: a leftover),
%% so B's horizon stays the one it noted; the change can complete only
%% on the word of A and L (N_old - W_old + 1 = 2). X's failed extension
%% extend_lease(k, x, 200) (D refuses phase two: a rival's promise)
%% shortens k on A, B and L; A's and L's horizons shrink, the change
%% completes, and Y locks k on {L, D} while X counts on its 60 s.
failed_shortening_extend_shrinks_lockerd_horizon(Config) ->
    [A, B, D] = start_peers([a, b, d], Config),
    {{lockerd, _}, L, _} = locker_fault_SUITE:start_lockerd(
        unique(l), ?config(lockerd, Config), ?config(priv_dir, Config), [A, B], 0, ?config(cleanup, Config)
    ),
    Nodes = [A, B, D, L],
    ok = rpc:call(A, locker_membership, change, [[A, B, L], [], 2, #{nodes => Nodes}]),
    Epoch0 = same_config([A, B, D], [A, B, L], 2),
    {ok, #{epoch := Epoch0}} = gen_server:call({locker, L}, {'$locker_config', get}),
    %% A leftover on B alone: B's horizon does not shrink.
    Tag2 = {'$locker_epoch', Epoch0, make_ref()},
    ok = gen_server:call({locker, B}, {get_write_lock, k2, not_found, Tag2}),
    ok = gen_server:call({locker, B}, {write, Tag2, k2, b, ?LONG_LEASE}),
    T0 = now_ms(),
    {ok, _} = rpc:call(A, locker, lock_with_token, [k, x, ?LONG_LEASE, 5000]),
    X = {x, T0, T0 + ?LONG_LEASE},
    {error, {joint, _}} = rpc:call(A, locker_membership, change, [[L, D], [], 2, #{wait => 1000}]),
    {ok, #{epoch := Joint, joint := {_, 2}}} = gen_server:call({locker, L}, {'$locker_config', get}),
    Stall = locker_ct:stall_server(D),
    Self = self(),
    _ = spawn_link(fun() -> Self ! {extend, rpc:call(A, locker, extend_lease, [k, x, 200, 10000])} end),
    ok = await(fun() -> queued(D, get_write_lock) >= 1 end, 200),
    RivalTag = {'$locker_token', {'$locker_epoch', Joint, make_ref()}, erlang:system_time(microsecond)},
    RivalRef = make_ref(),
    {locker, D} ! {'$gen_call', {self(), RivalRef}, {get_write_lock, k, not_found, RivalTag}},
    ok = await(fun() -> queued(D, get_write_lock) >= 2 end, 200),
    ok = locker_ct:resume_server(Stall),
    RivalVote = receive {RivalRef, V} -> V after 10000 -> ct:fail(no_rival_vote) end,
    Ext = receive {extend, R} -> R after 30000 -> ct:fail(extend_hangs) end,
    ct:log("extend_lease(k, x, 200) under joint: ~p; the rival's vote on D: ~p", [Ext, RivalVote]),
    ok = RivalVote,
    {error, no_quorum} = Ext,
    ok = gen_server:call({locker, D}, {release_write_lock, RivalTag}),
    Horizons = [{N, gen_server:call({locker, N}, {'$locker_config', horizon})} || N <- [A, B, L]],
    Finish = rpc:call(A, locker_membership, change, [[L, D], [], 2, #{wait => 20000}]),
    T1 = now_ms(),
    Y = rpc:call(D, locker, lock, [k, y, ?LONG_LEASE, 5000]),
    ct:log("horizons after the failed extension: ~p; finishing the change: ~p; Y on D: ~p", [Horizons, Finish, Y]),
    check_grants([X | granted(y, T1, ?LONG_LEASE, Y)]).

%% Resisted since memfix2 (it was OPEN): while a master is joint it
%% refuses untagged votes and phase two (membership::refuses_untagged).
%% Before: An untagged coordinator (an original node coordinating with the
%% view it was given; docs/protocol.md: nodes that do not know epochs get
%% the new view only once the change's final configuration is in place)
%% locks a key on the old masters while the change is joint. Its lease is
%% stored after the old masters noted their horizon, so the change's
%% wait does not cover it: the change completes and a coordinator of this
%% project locks the key on the new masters. Two holders.
%%
%% Sequence: {A, B, C} W 2 -> {D, E} W 2, left joint by a 4 s lease on
%% k0. The original coordinator (view {A, B, C}, W 2) sends
%% {get_write_lock, k, not_found, Ref} and {write, Ref, k, x, 60000} to
%% A, B, C: they are voters of the joint configuration, untagged votes
%% are not checked, all three promise and store x. Their horizon is the
%% one noted at the joint install (k0's 4 s; min(noted, longest live)
%% keeps it): 4 s later the change completes, and Y locks k on D and E,
%% which never saw x. docs/protocol.md ("Limit (untagged coordinators
%% with an old view)") says changes "that keep fewer than W_old old
%% masters ... are safe for them": this one keeps none.
%%
%% The rule that is wrong: a master under a joint configuration accepts
%% untagged phase one (and untagged phase two) on the old side, yet its
%% horizon only covers leases stored before it took the joint epoch. Fix:
%% under a joint configuration, refuse untagged votes (the old view is
%% not a quorum rule the joint configuration honours), or let an untagged
%% write stored under a joint epoch raise the horizon (as the fast path's
%% late write does, docs/protocol.md "Limits").
untagged_lock_during_joint_outlives_horizon(Config) ->
    [A, B, C, D, E] = Nodes = start_peers([a, b, c, d, e], Config),
    ok = rpc:call(A, locker, set_nodes, [Nodes, [A, B, C], []]),
    _ = same_config(Nodes, [A, B, C], 2),
    {ok, 2, _, _} = rpc:call(A, locker, lock, [k0, v, 4000]),
    {error, {joint, _}} = rpc:call(B, locker_membership, change, [[D, E], [], 2, #{wait => 500}]),
    [#{joint := {_, 2}}] = lists:usort(configs(Nodes)),
    %% The original coordinator's requests (as in locker_memb_adv_SUITE's
    %% untagged_coordinator_with_old_view), view {A, B, C}, W 2.
    Old = [A, B, C],
    T0 = now_ms(),
    Tag = make_ref(),
    {Votes, []} = gen_server:multi_call(Old, locker, {get_write_lock, k, not_found, Tag}, 5000),
    XHolds =
        case length([ok || {_, ok} <- Votes]) >= 2 of
            true ->
                {Commits, []} = gen_server:multi_call(Old, locker, {write, Tag, k, x, ?LONG_LEASE}, 5000),
                length([ok || {_, ok} <- Commits]) >= 2;
            false ->
                false
        end,
    Finish = rpc:call(B, locker_membership, change, [[D, E], [], 2, #{wait => 20000}]),
    T1 = now_ms(),
    Y = rpc:call(D, locker, lock, [k, y, ?LONG_LEASE, 5000]),
    ct:log("untagged votes under joint: ~p, X holds: ~p; finishing the change: ~p; Y on D: ~p; k on ~p", [
        Votes, XHolds, Finish, Y, [{N, rpc:call(N, locker, dirty_read, [k])} || N <- Nodes]
    ]),
    X = [{x, T0, T0 + ?LONG_LEASE} || XHolds],
    check_grants(X ++ granted(y, T1, ?LONG_LEASE, Y)).

%% Resisted. The holder's extend_lease under the joint configuration is
%% paused between its phases across the end of the change: phase one
%% (A, B, C promise, D answers not_expected_value, counted), then X's
%% lease (3 s) runs out, the change completes (the horizon passed), and
%% X's phase two lands (extending to 60 s, tagged with the joint epoch):
%% every master now at the final epoch refuses it (config_epoch), the
%% extension does not reach W_new new masters, and a rival takes k.
holder_paused_across_change_extend_lands_late(Config) ->
    [A, B, C, D] = Nodes = start_peers([a, b, c, d], Config),
    ok = rpc:call(A, locker, set_nodes, [Nodes, [A, B, C], []]),
    _ = same_config(Nodes, [A, B, C], 2),
    T0 = now_ms(),
    {ok, _} = rpc:call(A, locker, lock_with_token, [k, x, 3000, 5000]),
    {error, {joint, _}} = rpc:call(B, locker_membership, change, [[C, D], [], 2, #{wait => 200}]),
    [#{epoch := Joint, joint := {OldMs, 2}, masters := NewMs}] = lists:usort(configs(Nodes)),
    %% X's extend_lease, phase one (the coordinator on A: its own vote
    %% through the fast path).
    Tag = {'$locker_epoch', Joint, make_ref()},
    P1 = {get_write_lock, k, x, Tag},
    Votes = [{A, rpc:call(A, locker_store, apply_here, [P1])} | [{N, gen_server:call({locker, N}, P1)} || N <- [B, C, D]]],
    ct:log("X's phase one under joint: ~p", [Votes]),
    [ok, ok, ok, {error, not_expected_value}] = [V || {_, V} <- Votes],
    %% X pauses; its lease runs out, the change completes.
    ok = rpc:call(B, locker_membership, change, [[C, D], [], 2, #{wait => 30000}]),
    _ = same_config(Nodes, [C, D], 2),
    %% X resumes: phase two.
    TExt = now_ms(),
    P2 = {extend_lease, Tag, k, x, ?LONG_LEASE},
    Commits = [{A, rpc:call(A, locker_store, apply_here, [P2])} | [{N, gen_server:call({locker, N}, P2)} || N <- [B, C, D]]],
    Extended = holder_counts(extend, OldMs, NewMs, Votes, Commits),
    ct:log("X's phase two after the change: ~p; X counts it as extended: ~p", [Commits, Extended]),
    %% A rival on the new masters (X's promises may block it a few
    %% seconds: they live 10 s).
    T1 = now_ms(),
    Y = await_lock(D, k, y, ?LONG_LEASE, 40),
    ct:log("Y on D: ~p; k on ~p", [Y, [{N, rpc:call(N, locker, dirty_read, [k])} || N <- Nodes]]),
    XWindows = [{x, T0, T0 + 3000}] ++ [{x, TExt, TExt + ?LONG_LEASE} || Extended],
    check_grants(XWindows ++ granted(y, T1, ?LONG_LEASE, Y)),
    ?assertNot(Extended),
    ?assertMatch({ok, _, _, _}, Y).

%% Resisted. The holder's release under the joint configuration reaches
%% one old master only (its messages to the others are lost): that
%% master's horizon shrinks at once, but N_old - W_old + 1 = 2 old masters
%% must report theirs passed, and the other two still hold the lease, so
%% the change stays joint and a rival is refused. (X gave the lease up
%% although the release failed, as docs/protocol.md allows: safe either
%% way, the point is that the horizon does not pass on the word of one
%% master.)
holder_release_on_some_masters_keeps_change_joint(Config) ->
    [A, B, C, D] = Nodes = start_peers([a, b, c, d], Config),
    ok = rpc:call(A, locker, set_nodes, [Nodes, [A, B, C], []]),
    _ = same_config(Nodes, [A, B, C], 2),
    T0 = now_ms(),
    {ok, _} = rpc:call(A, locker, lock_with_token, [k, x, ?LONG_LEASE, 5000]),
    {error, {joint, _}} = rpc:call(B, locker_membership, change, [[C, D], [], 2, #{wait => 500}]),
    [#{epoch := Joint, joint := {_, 2}}] = lists:usort(configs(Nodes)),
    %% X's release, on the wire, reaching A only.
    Tag = {'$locker_epoch', Joint, make_ref()},
    ok = rpc:call(A, locker_store, apply_here, [{get_write_lock, k, x, Tag}]),
    Rel = rpc:call(A, locker_store, apply_here, [{release, k, x, Tag}]),
    ct:log("X's release on A only: ~p", [Rel]),
    {error, not_found} = rpc:call(A, locker, dirty_read, [k]),
    Finish = rpc:call(B, locker_membership, change, [[C, D], [], 2, #{wait => 3000}]),
    T1 = now_ms(),
    Y = rpc:call(D, locker, lock, [k, y, ?LONG_LEASE, 5000]),
    ct:log("finishing the change: ~p; Y: ~p; k on ~p", [Finish, Y, [{N, rpc:call(N, locker, dirty_read, [k])} || N <- Nodes]]),
    %% X counts on nothing after its release; B and C still hold x, and
    %% the checker treats x as held until its lease ends there.
    check_grants([{x, T0, T0 + ?LONG_LEASE} | granted(y, T1, ?LONG_LEASE, Y)]),
    ?assertMatch({error, {joint, _}}, Finish),
    ?assertEqual({error, no_quorum}, Y).

%% Resisted. X's lease is on A and B only (its lock's messages to C were
%% lost: W 2 of {A, B, C}). The change {A, B, C} -> {C, D} goes joint
%% (wait 500 ms). A's VM then restarts empty in safe mode (window 120 s,
%% longer than every lease) and catches up to the cluster's joint
%% configuration. C's store never had k (horizon 0), A's is empty: two
%% old masters with no lease of k, N_old - W_old + 1 = 2. The change must
%% still wait: A, in safe mode, reports at least its window's rest.
master_restarted_in_safe_mode_while_joint(Config) ->
    [{PA, A}, {_, B}, {_, C}, {_, D}] = [start_named(unique(N), [], Config) || N <- [a, b, c, d]],
    Nodes = [A, B, C, D],
    ok = rpc:call(A, locker, set_nodes, [Nodes, [A, B, C], []]),
    Epoch0 = same_config(Nodes, [A, B, C], 2),
    %% X's lock_with_token on the wire, to A and B (C's copies lost).
    T0 = now_ms(),
    Tag = {'$locker_token', {'$locker_epoch', Epoch0, make_ref()}, erlang:system_time(microsecond)},
    [ok = gen_server:call({locker, N}, {get_write_lock, k, not_found, Tag}) || N <- [A, B]],
    [ok = gen_server:call({locker, N}, {write, Tag, k, x, ?LONG_LEASE}) || N <- [A, B]],
    {error, not_found} = rpc:call(C, locker, dirty_read, [k]),
    {error, {joint, _}} = rpc:call(B, locker_membership, change, [[C, D], [], 2, #{wait => 500}]),
    [#{joint := {_, 2}} = JointCfg] = lists:usort(configs(Nodes)),
    %% A restarts empty, in safe mode, and catches up from the cluster.
    [NameA, _] = string:split(atom_to_list(A), "@"),
    ok = peer:stop(PA),
    {_, A} = start_named(list_to_atom(NameA), [{restart_abstain_ms, 120000}], Config),
    Pull = rpc:call(A, locker_membership, pull, [[B, C, D]]),
    ACfg = rpc:call(A, locker_membership, config, []),
    ct:log("A restarted, pull: ~p; its configuration ~p (the cluster's ~p)", [Pull, ACfg, JointCfg]),
    Finish = rpc:call(B, locker_membership, change, [[C, D], [], 2, #{wait => 5000}]),
    T1 = now_ms(),
    Y = rpc:call(D, locker, lock, [k, y, ?LONG_LEASE, 5000]),
    ct:log("finishing the change: ~p; Y: ~p; configs ~p", [Finish, Y, configs(Nodes)]),
    check_grants([{x, T0, T0 + ?LONG_LEASE} | granted(y, T1, ?LONG_LEASE, Y)]),
    ?assertMatch({error, {joint, _}}, Finish),
    ?assertEqual({error, no_quorum}, Y).

%% Resisted. lockerd restarted with a stale configuration while a change
%% is joint. {A, B, L} W 2 (L is lockerd) -> {B, D} W 2, left joint by
%% X's 60 s lease, which is on A and L only (its messages to B were
%% lost). L's process is killed and started again, empty, in safe mode
%% (window 120 s), with the masters its command line still names
%% ([A, B]: a stale view, in legacy mode at epoch {0, none}). B's store
%% never had k, L's is empty: if the change counted L's empty store as
%% "its old leases are gone" it would complete on B and L while X's lease
%% lives on A. It must stay joint, and a rival must be refused.
lockerd_restarted_with_stale_view_while_joint(Config) ->
    [A, B, D] = start_peers([a, b, d], Config),
    LName = unique(l),
    Start = fun(Abstain) ->
        locker_fault_SUITE:start_lockerd(
            LName, ?config(lockerd, Config), ?config(priv_dir, Config), [A, B], Abstain, ?config(cleanup, Config)
        )
    end,
    {{lockerd, _}, L, LPid} = Start(0),
    Nodes = [A, B, D, L],
    ok = rpc:call(A, locker_membership, change, [[A, B, L], [], 2, #{nodes => Nodes}]),
    Epoch0 = same_config([A, B, D], [A, B, L], 2),
    T0 = now_ms(),
    Tag = {'$locker_token', {'$locker_epoch', Epoch0, make_ref()}, erlang:system_time(microsecond)},
    [ok = gen_server:call({locker, N}, {get_write_lock, k, not_found, Tag}) || N <- [A, L]],
    [ok = gen_server:call({locker, N}, {write, Tag, k, x, ?LONG_LEASE}) || N <- [A, L]],
    {error, {joint, _}} = rpc:call(B, locker_membership, change, [[B, D], [], 2, #{wait => 500}]),
    %% L dies and comes back empty, in safe mode, with its stale view.
    _ = os:cmd("kill -9 " ++ LPid),
    {{lockerd, _}, L, _} = Start(120000),
    LCfg = gen_server:call({locker, L}, {'$locker_config', get}),
    Finish = rpc:call(B, locker_membership, change, [[B, D], [], 2, #{wait => 5000}]),
    T1 = now_ms(),
    Y = rpc:call(D, locker, lock, [k, y, ?LONG_LEASE, 5000]),
    ct:log("L restarted: ~p; finishing the change: ~p; Y on D: ~p; configs ~p; L ~p", [
        LCfg, Finish, Y, configs([A, B, D]), gen_server:call({locker, L}, {'$locker_config', get})
    ]),
    check_grants([{x, T0, T0 + ?LONG_LEASE} | granted(y, T1, ?LONG_LEASE, Y)]),
    ?assertMatch({error, _}, Finish),
    ?assertEqual({error, no_quorum}, Y).

%% Resisted. lockerd pulls from a master with a wrong view. {A, C, L}
%% W 2 (L is lockerd). C takes a configuration of its own at a newer
%% epoch ([C, L] W 2, made from the cluster's epoch: a master restarted
%% with a wrong view). C's coordinator locks: L refuses its votes as made
%% under a newer epoch and asks its masters; only C reports that epoch,
%% no quorum of L's configuration: L keeps its own (C's locks fail), and
%% a lock from A still works on A and L.
lockerd_ignores_one_master_with_a_wrong_newer_view(Config) ->
    [A, C] = start_peers([a, c], Config),
    {{lockerd, _}, L, _} = locker_fault_SUITE:start_lockerd(
        unique(l), ?config(lockerd, Config), ?config(priv_dir, Config), [A, C], 0, ?config(cleanup, Config)
    ),
    Nodes = [A, C, L],
    ok = rpc:call(A, locker_membership, change, [[A, C, L], [], 2, #{nodes => Nodes}]),
    {Counter, _} = Epoch0 = same_config([A, C], [A, C, L], 2),
    {ok, #{epoch := Epoch0}} = gen_server:call({locker, L}, {'$locker_config', get}),
    {ok, Cur} = gen_server:call({locker, C}, {'$locker_config', get}),
    Wrong = Cur#{epoch := {Counter + 5, C}, masters := lists:sort([C, L]), w := 2},
    ok = gen_server:call({locker, C}, {'$locker_config', {install, Epoch0, Wrong, 0}}),
    %% C's coordinator (its votes go to C and L), twice (L pulls at most once a second).
    CLocks = [rpc:call(C, locker, lock, [{kc, I}, c, ?LONG_LEASE, 2000]) || I <- [1, 2]],
    %% L's pull asks A and C and decides when both answered (at once
    %% here); a lock from A after it, then L's configuration.
    receive after 1500 -> ok end,
    LCfg = gen_server:call({locker, L}, {'$locker_config', get}),
    T1 = now_ms(),
    Y = rpc:call(A, locker, lock, [k, a, ?LONG_LEASE, 5000]),
    ct:log("C's locks under its wrong view: ~p; L's configuration after: ~p; A's lock: ~p", [CLocks, LCfg, Y]),
    ?assertMatch({ok, #{epoch := Epoch0, masters := [_, _, _], w := 2}}, LCfg),
    [?assertMatch({error, _}, R) || R <- CLocks],
    ?assertMatch({ok, 2, _, _}, Y),
    check_grants(granted(a, T1, ?LONG_LEASE, Y)).

%% Resisted. The Rust client (a real OS process) holds k (2 s lease)
%% and extends it; its phase one reaches A, B and C, whose servers are
%% slow (B and C suspended), and the client's process is stopped
%% (SIGSTOP) before it reads their answers: it is paused between its
%% phases, holding three promises under epoch e. Meanwhile its lease runs
%% out and the change {A, B, C} -> {C, D} completes (e -> e+1 -> e+2).
%% The client resumes (SIGCONT) and sends phase two under e: refused by
%% every master (config_epoch), it catches up and tries once more under
%% e+2, where k is not its own. A rival then takes k. (If the machine is
%% so slow that the client's 9 s phase-two budget passes while it is
%% stopped, it aborts instead: the checker holds either way.)
client_paused_between_phases_across_change(Config) ->
    [A, B, C, D] = Nodes = start_peers([a, b, c, d], Config),
    ok = rpc:call(A, locker, set_nodes, [Nodes, [A, B, C], []]),
    _ = same_config(Nodes, [A, B, C], 2),
    {Cli, OsPid} = start_client([A, B, C], Config),
    T0 = now_ms(),
    {ok, _} = cli(Cli, "token k x 2000", []),
    X0 = {x, T0, T0 + 2000},
    StallB = locker_ct:stall_server(B),
    StallC = locker_ct:stall_server(C),
    TE = now_ms(),
    true = port_command(Cli, "extend k x 60000\n"),
    ok = await(fun() -> queued(B, get_write_lock) >= 1 andalso queued(C, get_write_lock) >= 1 end, 200),
    "" = os:cmd("kill -STOP " ++ OsPid),
    ok = locker_ct:resume_server(StallB),
    ok = locker_ct:resume_server(StallC),
    Finish = rpc:call(C, locker_membership, change, [[C, D], [], 2, #{wait => 30000}]),
    Configs = configs(Nodes),
    "" = os:cmd("kill -CONT " ++ OsPid),
    Ext = reply(Cli),
    ct:log("change while the client was stopped: ~p (~p); the client's extend: ~p", [Finish, Configs, Ext]),
    T1 = now_ms(),
    Y = await_lock(D, <<"k">>, y, ?LONG_LEASE, 40),
    ct:log("Y on D: ~p; k on ~p; the client's view ~p", [
        Y, [{N, rpc:call(N, locker, dirty_read, [<<"k">>])} || N <- Nodes], view(Cli)
    ]),
    XExt = [{x, TE, TE + ?LONG_LEASE} || element(1, Ext) =:= ok],
    check_grants([X0 | XExt] ++ granted(y, T1, ?LONG_LEASE, Y)),
    ok = Finish,
    ?assertMatch({error, _}, Ext),
    ?assertMatch({ok, _, _, _}, Y).

%% Resisted since memfix2 (it was OPEN): under a joint view the client
%% also asks masters that refuse it with an older epoch, and takes the
%% configuration W_old of the old side went back to
%% (membership::rollback_choice).
%% Before (liveness, not safety): The Rust client is no node of a change:
%% nobody sends it the change's abort. It catches up to a joint
%% configuration that the change then aborts, and stays there.
%%
%% Sequence: {A, B, C} W 2 (epoch e), the client with that view. A change
%% to {A, D} while D's server is stalled: A, B and C take the joint
%% configuration e+1, D does not answer, the change fails and sends the
%% abort to every node of the change (they go back to e and remember e+1
%% as aborted). Between the install and the abort the client operates:
%% refused by A, B, C ({config_epoch, e+1}), it asks them, W_old of its
%% masters report e+1, it takes it (catch_up_choice). After the abort
%% every master refuses its votes with {config_epoch, e}, an epoch older
%% than the client's, which the client ignores (it catches up only to
%% newer epochs): every operation of the client fails with no_quorum
%% until another change moves the masters past e+1. BEAM coordinators on
%% the change's nodes roll back with their node.
%%
%% The rule that is wrong: the client's catch-up (and the masters'
%% refusal) has no way back from an aborted epoch. Fix: a master could
%% answer a vote made under an epoch it knows as aborted with its own
%% configuration (or `{aborted_epoch, E}`), and the client then takes the
%% configuration a quorum of its masters reports even if older than its
%% own aborted one; or the client takes a joint configuration only once
%% W_new of the new masters report it.
client_caught_up_to_aborted_joint_stays_stuck(Config) ->
    [A, B, C, D] = Nodes = start_peers([a, b, c, d], Config),
    ok = rpc:call(A, locker, set_nodes, [Nodes, [A, B, C], []]),
    Epoch0 = same_config(Nodes, [A, B, C], 2),
    {Cli, _} = start_client([A, B, C], Config),
    {ok, _, _, _} = cli(Cli, "lock k0 x 1000", []),
    Stall = locker_ct:stall_server(D),
    Self = self(),
    _ = spawn_link(fun() -> Self ! {change, rpc:call(B, locker_membership, change, [[A, D], [], 2, #{wait => 20000}])} end),
    ok = await(fun() -> lists:all(fun(#{joint := J}) -> J =/= none end, configs([A, B, C])) end, 400),
    During = cli(Cli, "lock k1 x 1000", []),
    ViewDuring = view(Cli),
    Change = receive {change, R} -> R after 120000 -> ct:fail(change_hangs) end,
    ok = locker_ct:resume_server(Stall),
    ct:log("change with D stalled: ~p; the client during it: ~p, view ~p; configs after ~p", [
        Change, During, ViewDuring, configs(Nodes)
    ]),
    {error, {refused, _}} = Change,
    [#{epoch := Epoch0, joint := none}] = lists:usort(configs([A, B, C])),
    %% The cluster serves again (a BEAM coordinator locks); the client?
    {ok, 2, _, _} = rpc:call(A, locker, lock, [k2, a, 1000]),
    After = [cli(Cli, "lock k~b x 1000", [I]) || I <- lists:seq(3, 7)],
    ct:log("the client after the abort: ~p; its view ~p", [After, view(Cli)]),
    ?assert(lists:any(fun(R) -> element(1, R) =:= ok end, After), "the client is stuck at an aborted epoch").

%% Resisted. One master of the Rust client's view answers
%% `{'$locker_config', get}' with a wrong configuration at a newer epoch
%% (C took a configuration of its own, [C] W 1, made from the cluster's
%% epoch: what a master restarted with a wrong view, or a forged answer,
%% reports). C refuses the client's votes with that newer epoch, the
%% client asks its masters, and only C reports it: no quorum of the
%% client's view backs it (catch_up_choice), so the client keeps its
%% view, and it never locks on C alone. Its operations keep working on A
%% and B, and the key it holds is not granted to a rival.
client_ignores_one_master_with_a_wrong_newer_view(Config) ->
    [A, B, C] = Nodes = start_peers([a, b, c], Config),
    ok = rpc:call(A, locker, set_nodes, [Nodes, Nodes, []]),
    {Counter, _} = Epoch0 = same_config(Nodes, Nodes, 2),
    {Cli, _} = start_client(Nodes, Config),
    {ok, _, _, _} = cli(Cli, "lock k0 x 1000", []),
    {view, Counter, 2, <<"single">>, _} = view(Cli),
    {ok, Cur} = gen_server:call({locker, C}, {'$locker_config', get}),
    Wrong = Cur#{epoch := {Counter + 5, C}, masters := [C], w := 1},
    ok = gen_server:call({locker, C}, {'$locker_config', {install, Epoch0, Wrong, 0}}),
    T0 = now_ms(),
    X = cli(Cli, "lock k x ~b", [?LONG_LEASE]),
    ViewAfter = view(Cli),
    %% With A stalled, the client cannot lock (C alone is no quorum of
    %% its view), whatever C answers.
    StallA = locker_ct:stall_server(A),
    Z = cli(Cli, "lock kz x 1000", []),
    ok = locker_ct:resume_server(StallA),
    T1 = now_ms(),
    Y = rpc:call(B, locker, lock, [<<"k">>, y, ?LONG_LEASE, 5000]),
    ct:log("the client's lock with C's wrong view around: ~p, view ~p; with A stalled: ~p; a BEAM rival: ~p", [
        X, ViewAfter, Z, Y
    ]),
    check_grants(granted(x, T0, ?LONG_LEASE, X) ++ granted(y, T1, ?LONG_LEASE, Y)),
    ?assertMatch({ok, _, _, _}, X),
    ?assertMatch({view, Counter, 2, <<"single">>, _}, ViewAfter),
    ?assertMatch({error, _}, Z).

%% Resisted since memfix2 (it was OPEN): while a master is joint an
%% extension never shortens a live lease (membership::stored_expiry).
%% Before: failed_shortening_extend_shrinks_horizon with the Rust client as
%% the holder (it counts the holder's answers by the same rule,
%% locker_core::membership::holder_new_side_ok): its extend_lease(k, x,
%% 200) under the joint configuration fails on the new side (D refuses
%% phase two: a rival's promise came in between), is reported as an
%% error, and shortened k on A, B and C; the change completes and a BEAM
%% rival locks k while the client counts on its 60 s.
client_failed_shortening_extend_shrinks_horizon(Config) ->
    [A, B, C, D] = Nodes = start_peers([a, b, c, d], Config),
    ok = rpc:call(A, locker, set_nodes, [Nodes, [A, B, C], []]),
    _ = same_config(Nodes, [A, B, C], 2),
    {Cli, _} = start_client([A, B, C], Config),
    T0 = now_ms(),
    {ok, _} = cli(Cli, "token k x ~b", [?LONG_LEASE]),
    X = {x, T0, T0 + ?LONG_LEASE},
    {error, {joint, _}} = rpc:call(B, locker_membership, change, [[C, D], [], 2, #{wait => 1000}]),
    [#{epoch := Joint, joint := {_, 2}}] = lists:usort(configs(Nodes)),
    %% The client learns the joint configuration (another key).
    {ok, _, _, _} = cli(Cli, "lock other x 1000", []),
    {view, _, 2, <<"joint">>, _} = view(Cli),
    Stall = locker_ct:stall_server(D),
    true = port_command(Cli, "extend k x 200\n"),
    ok = await(fun() -> queued(D, get_write_lock) >= 1 end, 200),
    RivalTag = {'$locker_token', {'$locker_epoch', Joint, make_ref()}, erlang:system_time(microsecond)},
    RivalRef = make_ref(),
    {locker, D} ! {'$gen_call', {self(), RivalRef}, {get_write_lock, <<"k">>, not_found, RivalTag}},
    ok = await(fun() -> queued(D, get_write_lock) >= 2 end, 200),
    ok = locker_ct:resume_server(Stall),
    RivalVote = receive {RivalRef, V} -> V after 10000 -> ct:fail(no_rival_vote) end,
    Ext = reply(Cli),
    ct:log("the client's extend k x 200 under joint: ~p; the rival's vote on D: ~p; k on ~p", [
        Ext, RivalVote, [{N, rpc:call(N, locker, dirty_read, [<<"k">>])} || N <- Nodes]
    ]),
    ok = RivalVote,
    {error, _} = Ext,
    ok = gen_server:call({locker, D}, {release_write_lock, RivalTag}),
    Finish = rpc:call(B, locker_membership, change, [[C, D], [], 2, #{wait => 20000}]),
    T1 = now_ms(),
    Y = rpc:call(D, locker, lock, [<<"k">>, y, ?LONG_LEASE, 5000]),
    ct:log("finishing the change: ~p; Y on D: ~p", [Finish, Y]),
    check_grants([X | granted(y, T1, ?LONG_LEASE, Y)]).

%% Resisted since memfix2 (hardening, issue 13 point 4). The catch-up
%% request `{'$locker_config', {catch_up, Cfg, FromNode}}' is what a
%% node's own pull (locker_membership:pull/1, lockerd's pull) sends its
%% own server once a quorum of its masters reported Cfg; the server used
%% to trust FromNode as given. Another node sends it naming a master of
%% the target's configuration, with a newer configuration of its own
%% making (masters {A, B, L}, W 3): every master, BEAM and lockerd,
%% refuses it (`{error, not_local}') and keeps its configuration.
catch_up_from_another_node_refused(Config) ->
    [A, B] = start_peers([a, b], Config),
    {{lockerd, _}, L, _} = locker_fault_SUITE:start_lockerd(
        unique(l), ?config(lockerd, Config), ?config(priv_dir, Config), [A, B], 0, ?config(cleanup, Config)
    ),
    Nodes = [A, B, L],
    ok = rpc:call(A, locker_membership, change, [[A, B, L], [], 2, #{nodes => Nodes}]),
    {C, P} = Epoch0 = same_config([A, B], [A, B, L], 2),
    {ok, Own} = gen_server:call({locker, L}, {'$locker_config', get}),
    #{epoch := Epoch0} = Own,
    Forged = Own#{epoch := {C + 5, P}, w := 3},
    Replies = [{N, gen_server:call({locker, N}, {'$locker_config', {catch_up, Forged, A}})} || N <- Nodes],
    ct:log("forged catch_up replies: ~p", [Replies]),
    [?assertEqual({error, not_local}, R, N) || {N, R} <- Replies],
    Epoch0 = same_config([A, B], [A, B, L], 2),
    ?assertMatch({ok, #{epoch := Epoch0, w := 2}}, gen_server:call({locker, L}, {'$locker_config', get})).

%%--------------------------------------------------------------------
%% The checker
%%--------------------------------------------------------------------

%% Grants: {Holder, From, Until} on one key, this node's monotonic
%% milliseconds. Fails if two holders' windows overlap.
check_grants(Grants) ->
    Overlaps = [
        {G1, G2}
     || {H1, F1, U1} = G1 <- Grants,
        {H2, F2, U2} = G2 <- Grants,
        H1 < H2,
        F1 < U2,
        F2 < U1
    ],
    ct:log("grants ~p", [Grants]),
    case Overlaps of
        [] -> ok;
        _ -> ct:fail({two_holders, Overlaps})
    end.

%% The window of a lock that returned Reply, asked at From.
granted(Holder, From, LeaseMs, {ok, _, _, _}) -> [{Holder, From, From + LeaseMs}];
granted(Holder, From, LeaseMs, {ok, Token}) when is_integer(Token) -> [{Holder, From, From + LeaseMs}];
granted(_, _, _, _) -> [].

now_ms() ->
    erlang:monotonic_time(millisecond).

%% How locker.erl counts the holder's operation under a joint
%% configuration (counted/3): the old side as it is, the new side with
%% not_expected_value as a promise (and not_found as a release).
holder_counts(Op, OldMs, NewMs, Votes, Commits) ->
    Count = fun(Side, Phase, Replies) ->
        length([
            N
         || {N, R} <- Replies,
            lists:member(N, Side),
            R =:= ok orelse
                (Side =:= NewMs andalso
                    ((Phase =:= one andalso R =:= {error, not_expected_value}) orelse
                        (Phase =:= two andalso Op =:= release andalso R =:= {error, not_found})))
        ])
    end,
    Count(OldMs, one, Votes) >= 2 andalso Count(NewMs, one, Votes) >= 2 andalso
        Count(OldMs, two, Commits) >= 2 andalso Count(NewMs, two, Commits) >= 2.

%%--------------------------------------------------------------------
%% Helpers
%%--------------------------------------------------------------------

start_peers(Names, Config) ->
    [N || {_, N} <- [start_named(unique(Name), [], Config) || Name <- Names]].

start_named(Name, Env, Config) ->
    {Peer, Node} = locker_ct:start_peer(Name, Env),
    ets:insert(?config(cleanup, Config), {peer, Peer}),
    ets:insert(?config(cleanup, Config), {os_pid, locker_ct:os_pid(Node)}),
    {Peer, Node}.

unique(Name) ->
    list_to_atom(lists:concat(["ma2_", Name, "_", erlang:unique_integer([positive])])).

%% The Rust client (client_cli) with masters Masters (W a majority): its
%% port and OS pid.
start_client(Masters, Config) ->
    Name = atom_to_list(unique(cli)) ++ "@127.0.0.1",
    Args = ["--name", Name, "--cookie", atom_to_list(erlang:get_cookie()),
            "--masters", string:join([atom_to_list(M) || M <- Masters], ",")],
    Port = open_port({spawn_executable, ?config(cli, Config)}, [
        {args, Args}, {line, 8192}, binary, exit_status, stderr_to_stdout, use_stdio
    ]),
    ets:insert(?config(cleanup, Config), {port, Port}),
    {os_pid, OsPid} = erlang:port_info(Port, os_pid),
    ets:insert(?config(cleanup, Config), {os_pid, integer_to_list(OsPid)}),
    _ = line(Port, <<"reply ">>, <<"client ready">>),
    {Port, integer_to_list(OsPid)}.

%% One request to the client: its answer, as a term.
cli(Port, Fmt, Args) ->
    true = port_command(Port, [io_lib:format(Fmt, Args), $\n]),
    R = reply(Port),
    ct:log("client: ~s -> ~p", [io_lib:format(Fmt, Args), R]),
    R.

%% The client's next answer, as a term.
reply(Port) ->
    Reply = line(Port, <<"reply ">>, none),
    case binary:split(Reply, <<" ">>, [global]) of
        [<<"ok">>, W, V, Cm] -> {ok, binary_to_integer(W), binary_to_integer(V), binary_to_integer(Cm)};
        [<<"ok">>, Token] -> {ok, binary_to_integer(Token)};
        [<<"error">>, Why] -> {error, Why};
        [<<"view">>, Counter, _Proposer, W, Joint, Ms] ->
            {view, binary_to_integer(Counter), binary_to_integer(W), Joint, binary:split(Ms, <<",">>, [global])};
        Other -> {unexpected, Other}
    end.

view(Port) ->
    cli(Port, "view", []).

%% The next line starting with Prefix (or equal to Whole), without the
%% prefix; other lines are the client's log.
line(Port, Prefix, Whole) ->
    receive
        {Port, {data, {eol, Whole}}} ->
            Whole;
        {Port, {data, {eol, Line}}} ->
            case string:prefix(Line, Prefix) of
                nomatch ->
                    ct:log("client log: ~s", [Line]),
                    line(Port, Prefix, Whole);
                Rest ->
                    Rest
            end;
        {Port, {data, {noeol, _}}} ->
            line(Port, Prefix, Whole);
        {Port, {exit_status, S}} ->
            ct:fail({client_exited, S})
    after 60000 ->
        ct:fail({no_line_from_client, Prefix})
    end.

configs(Nodes) ->
    [rpc:call(N, locker_membership, config, []) || N <- Nodes].

%% Every node has the same configuration, set through epochs, not joint:
%% its epoch.
same_config(Nodes, Masters, W) ->
    [#{mode := epoch, masters := Ms, w := W, joint := none, epoch := Epoch}] = lists:usort(configs(Nodes)),
    ?assertEqual(lists:sort(Masters), Ms),
    Epoch.

%% How many requests of the given kind wait in Node's locker server queue.
queued(Node, Kind) ->
    case rpc:call(Node, erlang, process_info, [rpc:call(Node, erlang, whereis, [locker]), messages]) of
        %% (A coordinator's request may come alone or in a batch.)
        {messages, Ms} -> length([R || {'$gen_call', _, Req} <- Ms, R <- requests(Req), element(1, R) =:= Kind]);
        _ -> 0
    end.

requests({'$locker_batch', Reqs}) when is_list(Reqs) -> [R || R <- Reqs, is_tuple(R), tuple_size(R) > 0];
requests(Req) when is_tuple(Req), tuple_size(Req) > 0 -> [Req];
requests(_) -> [].

%% How many messages wait in Node's locker server queue.
queue_len(Node) ->
    case rpc:call(Node, erlang, process_info, [rpc:call(Node, erlang, whereis, [locker]), message_queue_len]) of
        {message_queue_len, N} -> N;
        _ -> 0
    end.

%% A lock that may be refused for a while (promises live 10 s): tried
%% until it succeeds, Tries times at most.
await_lock(Node, Key, Value, LeaseMs, Tries) ->
    case rpc:call(Node, locker, lock, [Key, Value, LeaseMs, 5000]) of
        {ok, _, _, _} = R -> R;
        R when Tries =< 1 -> R;
        _ -> receive after 500 -> ok end, await_lock(Node, Key, Value, LeaseMs, Tries - 1)
    end.

%% Calls Check until it returns true, at most Tries times, 50 ms apart.
await(_Check, 0) ->
    ct:fail(condition_not_reached);
await(Check, Tries) ->
    case Check() of
        true ->
            ok;
        false ->
            receive after 50 -> ok end,
            await(Check, Tries - 1)
    end.

