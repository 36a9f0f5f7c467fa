%% Adversarial review of the one-round operations (issue 14 point 1;
%% docs/protocol.md, "One-round operations"): each case is an attack across
%% real nodes and FAILS when the attack gets through (two holders of a key
%% at once, by the rules the doc states for what a caller may believe
%% after each reply; tokens out of order; a master changed by a bad
%% request or crashed by it). A case that passes shows the defence
%% holding.
%%
%% Pauses are real: a master's `locker' server suspended with
%% `erlang:suspend_process' (as a long GC or a descheduled process would
%% stall it) so that requests queue in its mailbox in a known order (the
%% suite waits until they are there, reading the mailbox over `rpc'). A
%% coordinator paused between its write and its undo is played on the wire
%% (the requests `locker.erl' sends, with the tags it makes), so that the
%% pause can be placed exactly.
%%
%% The checker (check_holds/2) records each grant with its lease window
%% as the client must count it (from before the call to call + lease) and
%% each release with its outcome, and reports any overlap of two holders
%% of one key. Under `strict' rules a release that answered
%% `{error, no_quorum}' does not end the hold (docs/protocol.md: "release
%% no_quorum: the caller still holds the key until its lease ends");
%% under `conventional' rules a hold ends when its release is called
%% (locker_fault_SUITE's rule).
%%
%% Cases in ?OPEN are attacks that still get through (see each case's
%% comment): they fail until the code or the doc is fixed, and are skipped
%% by default (CI runs every suite). LOCKER_ORA_OPEN=run runs them.
%%
%% Peers are named `ora_<name>_<unique integer>'.
-module(locker_oneround_adv_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, suite/0, init_per_suite/1, end_per_suite/1, init_per_testcase/2, end_per_testcase/2]).
-export([
    failed_release_frees_key_for_rival/1,
    failed_release_two_phase_keeps_key/1,
    failed_release_undo_too_late/1,
    failed_shortening_extend_undo_too_late/1,
    failed_shortening_extend_two_phase_keeps_key/1,
    expired_lease_extended_back/1,
    expired_lease_two_phase_not_extended_back/1,
    late_write_undone_in_order/1,
    failed_lock_undo_late_still_undone/1,
    killed_coordinator_leaves_no_holder/1,
    lock_undo_spares_same_value_successor/1,
    release_undo_after_rival_write/1,
    release_undo_blocked_by_rival_promise/1,
    release_undo_after_record_lifetime/1,
    update_partial_keeps_holder/1,
    extend_partial_no_resurrection/1,
    extend_catch_up_arrives_late/1,
    tokens_increase_across_paths/1,
    two_phase_paused_around_one_round/1,
    partition_during_one_round_ops/1,
    mixed_paths_contention/1,
    mixed_paths_across_changes/1,
    malformed_one_round_requests/1,
    lockerd_late_write_undone_in_order/1,
    lockerd_failed_release_frees_key_for_rival/1,
    lockerd_malformed_one_round_requests/1
]).

-define(LONG_LEASE, 60000).
-define(PROMISE_TTL_MS, 10000).

%% Attacks that still get through (the cases fail; skipped by default):
%% none at the moment. The attacks below got through and were answered
%% on branch oneround; their cases now check the answer (and log whether
%% the earlier rule was broken):
%%
%% - failed_release_frees_key_for_rival (and its lockerd form),
%%   failed_release_undo_too_late: a one-round release that fails has
%%   deleted the lease where it applied, with no promise keeping rivals
%%   off until its undo (or with its undo past the records' 10 s): a
%%   rival was granted while the doc (e6413be) said "release no_quorum:
%%   the caller still holds the key until its lease ends". Answer
%%   (a0e0412): the caller counts the key as given up.
%% - failed_shortening_extend_undo_too_late: an extension that shortens
%%   the lease (60 s left, extended to 2 s) applied on every master after
%%   the caller gave up, its undo past the records' lifetime: a rival was
%%   granted 58 s before the old expiry the doc said the caller must
%%   assume. Answer (4b25c04): the caller counts its lease as ending at
%%   the earlier of the old expiry and LeaseMs after the call.
%% - expired_lease_extended_back: with 3bef1b1's `{ok, restored}' (a
%%   one-round extend storing the lease again where the key was free)
%%   and a late undo, a caller whose lease had expired everywhere, after
%%   another holder, got `ok' from its next extend (token below the other
%%   holder's). Answer (4b25c04): no restore in the conditional write;
%%   masters that lacked the key get the original phase two after a
%%   success only.
-define(OPEN, []).

all() ->
    [
        failed_release_frees_key_for_rival,
        failed_release_two_phase_keeps_key,
        failed_release_undo_too_late,
        failed_shortening_extend_undo_too_late,
        failed_shortening_extend_two_phase_keeps_key,
        expired_lease_extended_back,
        expired_lease_two_phase_not_extended_back,
        late_write_undone_in_order,
        failed_lock_undo_late_still_undone,
        killed_coordinator_leaves_no_holder,
        lock_undo_spares_same_value_successor,
        release_undo_after_rival_write,
        release_undo_blocked_by_rival_promise,
        release_undo_after_record_lifetime,
        update_partial_keeps_holder,
        extend_partial_no_resurrection,
        extend_catch_up_arrives_late,
        tokens_increase_across_paths,
        two_phase_paused_around_one_round,
        partition_during_one_round_ops,
        mixed_paths_contention,
        mixed_paths_across_changes,
        malformed_one_round_requests,
        lockerd_late_write_undone_in_order,
        lockerd_failed_release_frees_key_for_rival,
        lockerd_malformed_one_round_requests
    ].

suite() ->
    [{timetrap, {minutes, 5}}].

init_per_suite(Config) ->
    ok = locker_ct:ensure_distributed(),
    Config.

end_per_suite(_Config) ->
    ok.

init_per_testcase(Case, Config) ->
    case lists:member(Case, ?OPEN) andalso os:getenv("LOCKER_ORA_OPEN") =/= "run" of
        true -> {skip, "open attack (LOCKER_ORA_OPEN=run runs it)"};
        false -> [{cleanup, ets:new(ora_cleanup, [public, bag])} | Config]
    end.

end_per_testcase(_Case, Config) ->
    T = ?config(cleanup, Config),
    %% Stallers still waiting resume their server (no wait: peers stop next).
    [P ! {resume, self()} || {stall, P} <- ets:lookup(T, stall)],
    [os:cmd("kill -CONT " ++ P ++ "; kill -9 " ++ P) || {os_pid, P} <- ets:lookup(T, os_pid)],
    [catch peer:stop(P) || {peer, P} <- ets:lookup(T, peer)],
    ets:delete(T),
    ok.

%%--------------------------------------------------------------------
%% Release: what a caller may believe after `{error, no_quorum}'
%%--------------------------------------------------------------------

%% Three masters (W 2), A holds k on all three (60 s lease).
%% M2 and M3 stall. A's one-round release deletes k on M1 at once and
%% waits for M2 and M3. B's lock arrives: on M1 the key is free, so B's
%% `cond_write' applies there (and drops the undo record of A's release);
%% on M2 and M3 it queues behind A's `cond_release'. A's release times out:
%% `{error, no_quorum}', and its undo goes to every master (M1: no record,
%% nothing; M2, M3: queued behind B's write). M3 resumes: A's
%% `cond_release' deletes A's lease, B's `cond_write' stores B's, A's undo
%% finds no record. B has M1 and M3: granted, 60 s before A's lease ends,
%% while A was told its release failed. This broke the rule of the doc
%% as of e6413be ("release `no_quorum`: the caller still holds the key
%% until its lease ends"): a one-round release that fails has deleted
%% the lease where it applied, with nothing (no promise) keeping rivals
%% off until its undo. The doc now says the caller counts the key as
%% given up (a0e0412); the case checks that rule and B's higher token.
failed_release_frees_key_for_rival(Config) ->
    Facts = release_race(Config, one_round),
    ct:log("facts: ~p", [Facts]),
    #{a_release := {error, no_quorum}} = Facts,
    judge_release(holds_of(Facts)).

%% The same schedule with every coordinator forced to two phases
%% (`{one_round, false}'): A's phase one promises k on M1; B's phase one
%% is refused there (the lease is still there) and behind A's promise on
%% M3. A's release fails and A keeps the key: B is never granted.
failed_release_two_phase_keeps_key(Config) ->
    Facts = release_race(Config, two_phase),
    ct:log("facts: ~p", [Facts]),
    #{a_release := {error, no_quorum}, b_lock := BLock} = Facts,
    ?assertMatch({error, no_quorum}, BLock),
    ?assertEqual([], check_holds(strict, holds_of(Facts))).

%% A holds k on M1-M3. A's one-round release (timeout 1 s) reaches
%% no master in time (each stalled), fails, and its undo follows; each
%% master then handles the release and stalls again (a system suspend
%% queued between the two requests) for more than the undo records'
%% lifetime before it handles the undo. The lease is gone everywhere;
%% A was told `{error, no_quorum}'; B is granted at once (the earlier
%% rule, "still holds", broken without any race; the current one holds).
failed_release_undo_too_late(Config) ->
    #{masters := Ms, coords := [CA, CB]} = cluster(Config, 3, 2, one_round),
    {ok, TokA, T1A, T2A} = timed_lock(CA, k, a, ?LONG_LEASE, 10000),
    await_all(fun() -> [dirty(M, k) || M <- Ms] =:= lists:duplicate(3, {ok, a}) end, all_hold_a),
    {ARel, _, T3A} = late_undo_schedule(Ms, CA, locker, release, [k, a, 1000], Config),
    ct:log("A's release: ~p; masters hold ~p", [ARel, [dirty(M, k) || M <- Ms]]),
    ?assertEqual({error, no_quorum}, ARel),
    T1B = now_us(),
    BLock = rpc:call(CB, locker, lock_with_token, [k, b, ?LONG_LEASE, 5000]),
    T2B = now_us(),
    ct:log("B's lock: ~p", [BLock]),
    A = #{key => k, value => a, token => TokA, t1 => T1A, t2 => T2A, lease => ?LONG_LEASE, release => {ARel, T3A}},
    Bs = [#{key => k, value => b, token => TB, t1 => T1B, t2 => T2B, lease => ?LONG_LEASE, release => none}
          || {ok, TB} <- [BLock]],
    judge_release([A | Bs]).

%% A holds k for 60 s and shortens its lease to 2 s with a one-round
%% extend (timeout 1 s) under the late-undo schedule: the extend fails,
%% every master kept the 2 s lease; once it ran out, B is granted. The
%% earlier rule (A assumes the old expiry, 60 s) is broken; the current
%% one (the earlier of the old expiry and 2 s after the call) holds.
failed_shortening_extend_undo_too_late(Config) ->
    shortening_extend(Config, one_round).

%% The same schedule in two phases: A's phase one is promised on each
%% master after A gave up, its release_write_lock comes late; nothing
%% else changed: A keeps its 60 s lease and B is refused.
failed_shortening_extend_two_phase_keeps_key(Config) ->
    shortening_extend(Config, two_phase).

%% A's lease (1.5 s) runs out on every master; B locks the key and
%% releases it; A (paused past its lease) extends under the late-undo
%% schedule, then extends again: both fail. (With 3bef1b1's restore,
%% every master stored A's lease again, the undo came after the records'
%% lifetime, and the second extend got `ok' on every master: a lease that
%% had expired everywhere extended back, after another holder, with a
%% token below B's.)
expired_lease_extended_back(Config) ->
    expired_extend(Config, one_round).

%% The same schedule in two phases: A's phase one finds no `a' anywhere;
%% its second extend fails too.
expired_lease_two_phase_not_extended_back(Config) ->
    expired_extend(Config, two_phase).

expired_extend(Config, Path) ->
    #{masters := Ms, coords := [CA, CB]} = cluster(Config, 3, 2, Path),
    {ok, TokA, _, _} = timed_lock(CA, k, a, 1500, 5000),
    await_all(fun() -> [dirty(M, k) || M <- Ms] =:= lists:duplicate(3, {error, not_found}) end, a_ran_out),
    {ok, TokB} = rpc:call(CB, locker, lock_with_token, [k, b, ?LONG_LEASE, 5000]),
    {ok, _, _, _} = rpc:call(CB, locker, release, [k, b, 5000]),
    {Ext1, _, _} = late_undo_schedule(Ms, CA, locker, extend_lease, [k, a, ?LONG_LEASE, 1000], Config),
    ct:log("A's first extend: ~p; masters hold ~p", [Ext1, [dirty(M, k) || M <- Ms]]),
    ?assertEqual({error, no_quorum}, Ext1),
    Ext2 = rpc:call(CA, locker, extend_lease, [k, a, ?LONG_LEASE, 5000]),
    ct:log("A's second extend: ~p (A's token ~p, B's ~p); masters hold ~p; C's lock ~p",
           [Ext2, TokA, TokB, [dirty(M, k) || M <- Ms], rpc:call(CB, locker, lock, [k, c, 1000, 1000])]),
    ?assert(TokB > TokA),
    ?assertEqual({error, no_quorum}, Ext2, "a lease that expired everywhere was extended back").

shortening_extend(Config, Path) ->
    #{masters := Ms, coords := [CA, CB]} = cluster(Config, 3, 2, Path),
    {ok, TokA, T1A, T2A} = timed_lock(CA, k, a, ?LONG_LEASE, 10000),
    await_all(fun() -> [dirty(M, k) || M <- Ms] =:= lists:duplicate(3, {ok, a}) end, all_hold_a),
    {AExt, TExt, _} = late_undo_schedule(Ms, CA, locker, extend_lease, [k, a, 2000, 1000], Config),
    ct:log("A's extend: ~p; masters hold ~p", [AExt, [dirty(M, k) || M <- Ms]]),
    ?assertEqual({error, no_quorum}, AExt),
    T1B = now_us(),
    BLock = rpc:call(CB, locker, lock_with_token, [k, b, ?LONG_LEASE, 5000]),
    T2B = now_us(),
    ct:log("B's lock: ~p", [BLock]),
    A = #{key => k, value => a, token => TokA, t1 => T1A, t2 => T2A, lease => ?LONG_LEASE, release => none},
    Bs = [#{key => k, value => b, token => TB, t1 => T1B, t2 => T2B, lease => ?LONG_LEASE, release => none}
          || {ok, TB} <- [BLock]],
    Old = check_holds(strict, [A | Bs]),
    ct:log("the earlier rule (a failed extend keeps the old expiry): ~s~n~p",
           [case Old of [] -> "kept"; _ -> "BROKEN" end, Old]),
    %% The rule since 4b25c04: after a failed extend_lease, the lease ends
    %% at the earlier of the old expiry and LeaseMs after the call.
    ANow = A#{ends => TExt + 2000 * 1000},
    ?assertEqual([], check_holds(strict, [ANow | Bs])),
    ?assertEqual([], check_tokens([ANow | Bs])).

%% Every master stalls; the operation (on Coord, with a short timeout)
%% queues its request on each and fails; a system suspend is queued
%% behind the request on each master, then the operation's undo. The
%% masters resume: each handles the request, then suspends (sys) with the
%% undo still queued. After the undo records' lifetime (10 s from the
%% request's application, on the masters' clocks), the masters resume and
%% handle the undo. Returns the operation's result, call and return times.
late_undo_schedule(Ms, Coord, M, F, A, Config) ->
    Stalls = [stall(N, Config) || N <- Ms],
    Op = async(Coord, M, F, A),
    [await_all(fun() -> queued_count(N, k) >= 1 end, {request_queued, N}) || N <- Ms],
    [spawn(fun() -> sys:suspend({locker, N}, infinity) end) || N <- Ms],
    [await_all(fun() -> queued(N, fun({system, _, suspend}) -> true; (_) -> false end) end, {suspend_queued, N})
     || N <- Ms],
    {Result, T1, T3} = await_async(Op),
    [await_all(fun() -> queued_count(N, k) >= 2 end, {undo_queued, N}) || N <- Ms],
    [ok = resume_server(S) || S <- Stalls],
    Applied = erlang:monotonic_time(millisecond),
    await_all(fun() -> erlang:monotonic_time(millisecond) > Applied + ?PROMISE_TTL_MS + 1000 end,
              undo_record_lifetime, 30000),
    [ok = sys:resume({locker, N}, 10000) || N <- Ms],
    %% The undo has been handled once a later call is answered.
    [_ = rpc:call(N, locker, dirty_read, [k]) || N <- Ms],
    [_ = gen_server:call({locker, N}, get_debug_state, 10000) || N <- Ms],
    {Result, T1, T3}.

%% The schedule of the first two cases above. Returns what happened:
%% A's grant, A's release result, B's lock result, with times.
release_race(Config, Path) ->
    #{masters := [M1, M2, M3], coords := [CA, CB]} = cluster(Config, 3, 2, Path),
    {ok, TokA, T1A, T2A} = timed_lock(CA, k, a, ?LONG_LEASE, 10000),
    await_all(fun() -> [dirty(M, k) || M <- [M1, M2, M3]] =:= [{ok, a}, {ok, a}, {ok, a}] end, all_hold_a),
    S2 = stall(M2, Config),
    S3 = stall(M3, Config),
    Rel = async(CA, locker, release, [k, a, 4000]),
    await_all(fun() -> queued(M3, cond_release_or_gwl(k)) end, a_release_queued_on_m3),
    case Path of
        one_round -> await_all(fun() -> dirty(M1, k) =:= {error, not_found} end, m1_freed);
        two_phase -> ok
    end,
    T1B = now_us(),
    Lock = async(CB, locker, lock_with_token, [k, b, ?LONG_LEASE, 8000]),
    await_all(fun() -> queued_count(M3, k) >= 2 end, b_queued_on_m3),
    %% The schedule needs B's request on M3 before A's undo.
    {_, RelPid} = Rel,
    true = rpc:call(CA, erlang, is_process_alive, [RelPid]) orelse ct:fail(inconclusive_a_returned_too_early),
    {ARel, _, T3A} = await_async(Rel),
    ct:log("A's release: ~p; M1 holds ~p", [ARel, dirty(M1, k)]),
    ok = resume_server(S3),
    {BLock, _, T2B} = await_async(Lock),
    ok = resume_server(S2),
    ct:log("B's lock: ~p; masters hold ~p", [BLock, [dirty(M, k) || M <- [M1, M2, M3]]]),
    #{
        a_grant => {TokA, T1A, T2A},
        a_release => ARel,
        a_release_t => T3A,
        b_lock => BLock,
        b_t1 => T1B,
        b_t2 => T2B
    }.

%% After a release that answered `no_quorum', the caller counts the key as
%% given up (docs/protocol.md since a0e0412): no overlap under the
%% conventional rules, tokens in grant order. Logs whether the earlier
%% rule ("still holds until its lease ends") was broken.
judge_release(Holds) ->
    Old = check_holds(strict, Holds),
    ct:log("the earlier rule (a failed release keeps the key): ~s~n~p",
           [case Old of [] -> "kept"; _ -> "BROKEN" end, Old]),
    ?assertEqual([], check_holds(conventional, Holds)),
    ?assertEqual([], check_tokens(Holds)).

holds_of(#{a_grant := {TokA, T1A, T2A}, a_release := ARel, a_release_t := T3A, b_lock := BLock} = F) ->
    A = #{key => k, value => a, token => TokA, t1 => T1A, t2 => T2A, lease => ?LONG_LEASE,
          release => {ARel, T3A}},
    case BLock of
        {ok, TokB} ->
            [A, #{key => k, value => b, token => TokB, t1 => maps:get(b_t1, F), t2 => maps:get(b_t2, F),
                  lease => ?LONG_LEASE, release => none}];
        _ ->
            [A]
    end.

%%--------------------------------------------------------------------
%% lock: write and undo ordering, late writes, dead coordinators
%%--------------------------------------------------------------------

%% M2 and M3 stall; A's one-round lock applies on M1 only and times out;
%% its undo goes to every master, on M2 and M3 behind its write. They
%% resume: the write applies, then the undo takes it back. No lease is
%% left anywhere, and B takes the key at once (with a higher token).
late_write_undone_in_order(Config) ->
    #{masters := [M1, M2, M3], coords := [CA, CB]} = cluster(Config, 3, 2, one_round),
    S2 = stall(M2, Config),
    S3 = stall(M3, Config),
    Lock = async(CA, locker, lock_with_token, [k, a, ?LONG_LEASE, 1500]),
    {ALock, _, _} = await_async(Lock),
    ?assertEqual({error, no_quorum}, ALock),
    %% Both A's write and its undo wait in M3's and M2's mailboxes.
    await_all(fun() -> queued_count(M3, k) >= 2 andalso queued_count(M2, k) >= 2 end, write_and_undo_queued),
    ok = resume_server(S3),
    ok = resume_server(S2),
    await_all(fun() -> [dirty(M, k) || M <- [M1, M2, M3]] =:= lists:duplicate(3, {error, not_found}) end, all_free),
    {ok, TokB, _, _} = timed_lock(CB, k, b, 1000, 5000),
    ct:log("B's token ~p", [TokB]),
    #{one_round := N} = rpc:call(CA, locker, path_counts, []),
    ?assert(N >= 1).

%% The late-undo schedule for a lock: every master stores A's lease after
%% A gave up, and handles the undo more than 10 s later. A lock's undo is
%% a release carrying the attempt's token, which needs no record: the
%% leases go, and B locks at once.
failed_lock_undo_late_still_undone(Config) ->
    #{masters := Ms, coords := [CA, CB]} = cluster(Config, 3, 2, one_round),
    {Lock, _, _} = late_undo_schedule(Ms, CA, locker, lock_with_token, [k, a, ?LONG_LEASE, 1000], Config),
    ?assertEqual({error, no_quorum}, Lock),
    ?assertEqual(lists:duplicate(3, {error, not_found}), [dirty(M, k) || M <- Ms]),
    {ok, _} = rpc:call(CB, locker, lock_with_token, [k, b, 1000, 5000]).

%% A's one-round lock applies on M1 (M2, M3 stalled, A's write queued
%% there) and A's coordinator is killed before its undo. M2 and M3 resume
%% and apply the write: A's lease is left on all three masters, and
%% nobody believes they hold it (A got no reply). B cannot lock until it
%% runs out (the liveness cost the doc states), then can. The checker
%% sees B's hold only.
killed_coordinator_leaves_no_holder(Config) ->
    #{masters := [M1, M2, M3], coords := [CA, CB]} = cluster(Config, 3, 2, one_round),
    S2 = stall(M2, Config),
    S3 = stall(M3, Config),
    Lease = 3000,
    Lock = async(CA, locker, lock_with_token, [k, a, Lease, 30000]),
    await_all(fun() -> dirty(M1, k) =:= {ok, a} andalso queued_count(M3, k) >= 1 end, a_written_on_m1),
    kill_async(Lock),
    ok = resume_server(S3),
    ok = resume_server(S2),
    await_all(fun() -> [dirty(M, k) || M <- [M1, M2, M3]] =:= lists:duplicate(3, {ok, a}) end, orphan_everywhere),
    ?assertEqual({error, no_quorum}, rpc:call(CB, locker, lock, [k, b, 1000, 500])),
    %% Once the orphan runs out, B is granted.
    T1 = now_us(),
    {ok, TokB} = retry_lock(CB, k, b, 60000, 100),
    T2 = now_us(),
    ?assertEqual([], check_holds(strict, [#{key => k, value => b, token => TokB, t1 => T1, t2 => T2,
                                             lease => 60000, release => none}])).

%% A coordinator paused between its write and its undo (played on the
%% wire): A's `cond_write' (token TA, value v, 300 ms) applies on M1,
%% runs out; B locks the key with the same value v (same caller
%% identity, a new acquisition) on every master, token TB > TA. A's
%% undo, `{release, k, v, TagA}', arrives at M1 late: it must not delete
%% B's lease (another token), even with the same value.
lock_undo_spares_same_value_successor(Config) ->
    #{masters := [M1, M2, M3], coords := [_CA, CB]} = cluster(Config, 3, 2, one_round),
    Epoch = epoch(M1),
    TA = erlang:system_time(microsecond),
    TagA = token_tag(Epoch, TA),
    ok = gen_server:call({locker, M1}, {cond_write, TagA, k, v, 300}),
    await_all(fun() -> dirty(M1, k) =:= {error, not_found} end, a_ran_out),
    {ok, TB} = rpc:call(CB, locker, lock_with_token, [k, v, ?LONG_LEASE, 5000]),
    ?assert(TB > TA),
    await_all(fun() -> [dirty(M, k) || M <- [M1, M2, M3]] =:= lists:duplicate(3, {ok, v}) end, b_everywhere),
    Undo = gen_server:call({locker, M1}, {release, k, v, TagA}),
    ct:log("A's late undo on M1: ~p", [Undo]),
    ?assertNotEqual(ok, Undo),
    ?assertEqual({ok, v}, dirty(M1, k)),
    %% B still holds: its extend succeeds on every master.
    ?assertEqual(ok, rpc:call(CB, locker, extend_lease, [k, v, ?LONG_LEASE])).

%%--------------------------------------------------------------------
%% Undo records (update, extend_lease, release)
%%--------------------------------------------------------------------

%% A holds k. A's `cond_release' applies on M1 (played on the wire: its
%% coordinator then pauses). B's `cond_write' applies on M1 (the key is
%% free there). A's undo arrives: it must not put A's lease back over
%% B's. Then B's undo (its lock failed) and A's undo again: nothing comes
%% back.
release_undo_after_rival_write(Config) ->
    #{masters := [M1 | _], coords := [CA, _]} = cluster(Config, 3, 2, one_round),
    {ok, _, _, _} = timed_lock(CA, k, a, ?LONG_LEASE, 5000),
    Epoch = epoch(M1),
    TagR = epoch_tag(Epoch),
    ok = gen_server:call({locker, M1}, {cond_release, TagR, k, a}),
    TagB = token_tag(Epoch, erlang:system_time(microsecond)),
    ok = gen_server:call({locker, M1}, {cond_write, TagB, k, b, ?LONG_LEASE}),
    ok = gen_server:call({locker, M1}, {undo, TagR, k}),
    ?assertEqual({ok, b}, dirty(M1, k)),
    ok = gen_server:call({locker, M1}, {release, k, b, TagB}),
    ok = gen_server:call({locker, M1}, {undo, TagR, k}),
    ?assertEqual({error, not_found}, dirty(M1, k)),
    ?assertEqual(0, undo_records(M1)).

%% A's `cond_release' applies on M1; C's two-phase phase one gets a
%% promise on the now free key there; A's undo comes while C's promise
%% lives: nothing is put back, and C's phase two stores its lease.
release_undo_blocked_by_rival_promise(Config) ->
    #{masters := [M1 | _], coords := [CA, _]} = cluster(Config, 3, 2, one_round),
    {ok, _, _, _} = timed_lock(CA, k, a, ?LONG_LEASE, 5000),
    Epoch = epoch(M1),
    TagR = epoch_tag(Epoch),
    ok = gen_server:call({locker, M1}, {cond_release, TagR, k, a}),
    TagC = token_tag(Epoch, erlang:system_time(microsecond)),
    ok = gen_server:call({locker, M1}, {get_write_lock, k, not_found, TagC}),
    ok = gen_server:call({locker, M1}, {undo, TagR, k}),
    ?assertEqual({error, not_found}, dirty(M1, k)),
    ok = gen_server:call({locker, M1}, {write, TagC, k, c, ?LONG_LEASE}),
    ?assertEqual({ok, c}, dirty(M1, k)).

%% A master stalls between A's `cond_release' and its undo for longer
%% than the record lifetime (10 s): the undo does nothing, the lease A's
%% failed release deleted there stays deleted. A still holds the key on
%% the two other masters (W 2), so no rival can be granted: with A's
%% lease on every master, a failed release that loses one master keeps
%% the key. (A rival needs a second master freed: see
%% failed_release_frees_key_for_rival.)
release_undo_after_record_lifetime(Config) ->
    #{masters := [M1, M2, M3], coords := [CA, CB]} = cluster(Config, 3, 2, one_round),
    {ok, _, _, _} = timed_lock(CA, k, a, ?LONG_LEASE, 5000),
    Epoch = epoch(M1),
    TagR = epoch_tag(Epoch),
    ok = gen_server:call({locker, M1}, {cond_release, TagR, k, a}),
    S1 = stall(M1, Config),
    Undo = async(node(), gen_server, call, [{locker, M1}, {undo, TagR, k}, 60000]),
    await_all(fun() -> queued(M1, fun({'$gen_call', _, {undo, T, k}}) -> T =:= TagR; (_) -> false end) end,
              undo_queued),
    %% Past the record's lifetime (10 s, counted on M1's clock from the
    %% release): a rival on M2/M3 meanwhile gets nothing.
    ?assertEqual({error, no_quorum}, rpc:call(CB, locker, lock, [k, b, 1000, 1000])),
    Deadline = erlang:monotonic_time(millisecond) + ?PROMISE_TTL_MS + 500,
    await_all(fun() -> erlang:monotonic_time(millisecond) > Deadline end, record_lifetime_passed, 30000),
    ok = resume_server(S1),
    {ok, _, _} = await_async(Undo),
    ?assertEqual({error, not_found}, dirty(M1, k)),
    [?assertEqual({ok, a}, dirty(M, k)) || M <- [M2, M3]],
    ?assertEqual({error, no_quorum}, rpc:call(CB, locker, lock, [k, b, 1000, 1000])),
    %% A's extend still reaches W (M2, M3): A holds.
    ?assertEqual(ok, rpc:call(CA, locker, extend_lease, [k, a, ?LONG_LEASE])).

%% A's one-round update a -> a2 applies on M1 only (M2, M3 stalled) and
%% fails; its undo puts a back on M1, and the requests queued on M2/M3
%% apply then undo in order. A still holds `a' on every master; B cannot
%% lock; A's release of `a' succeeds.
update_partial_keeps_holder(Config) ->
    #{masters := [M1, M2, M3], coords := [CA, CB]} = cluster(Config, 3, 2, one_round),
    {ok, _, _, _} = timed_lock(CA, k, a, ?LONG_LEASE, 5000),
    await_all(fun() -> [dirty(M, k) || M <- [M1, M2, M3]] =:= lists:duplicate(3, {ok, a}) end, all_hold_a),
    S2 = stall(M2, Config),
    S3 = stall(M3, Config),
    ?assertEqual({error, no_quorum}, rpc:call(CA, locker, update, [k, a, a2, 1500])),
    ?assertEqual({ok, a}, dirty(M1, k)),
    ok = resume_server(S2),
    ok = resume_server(S3),
    await_all(fun() -> [dirty(M, k) || M <- [M1, M2, M3]] =:= lists:duplicate(3, {ok, a}) end, a_back_everywhere),
    ?assertEqual({error, no_quorum}, rpc:call(CB, locker, lock, [k, b, 1000, 1000])),
    ?assertMatch({ok, _, _, _}, rpc:call(CA, locker, release, [k, a, 5000])).

%% A's lease (2 s) is about to run out; its one-round extend applies on M1
%% only (M2, M3 stalled) and fails. The stalled masters resume after A's
%% lease ran out: their `cond_extend' finds nothing live and changes
%% nothing (no resurrection), the undo on M1 puts the old expiry back (or
%% deletes the lease if that expiry has passed). B is granted once the
%% lease has run out by A's own count, never before.
extend_partial_no_resurrection(Config) ->
    #{masters := [M1, M2, M3], coords := [CA, CB]} = cluster(Config, 3, 2, one_round),
    Lease = 2000,
    {ok, TokA, T1A, T2A} = timed_lock(CA, k, a, Lease, 5000),
    S2 = stall(M2, Config),
    S3 = stall(M3, Config),
    ?assertEqual({error, no_quorum}, rpc:call(CA, locker, extend_lease, [k, a, ?LONG_LEASE, 500])),
    %% Past A's lease by A's count.
    EndA = T1A + Lease * 1000,
    await_all(fun() -> now_us() > EndA + 200000 end, a_lease_over, 30000),
    ok = resume_server(S2),
    ok = resume_server(S3),
    await_all(fun() -> [dirty(M, k) || M <- [M1, M2, M3]] =:= lists:duplicate(3, {error, not_found}) end, all_free),
    T1B = now_us(),
    {ok, TokB} = rpc:call(CB, locker, lock_with_token, [k, b, ?LONG_LEASE, 5000]),
    T2B = now_us(),
    ?assert(TokB > TokA),
    ?assertEqual([], check_holds(strict, [
        #{key => k, value => a, token => TokA, t1 => T1A, t2 => T2A, lease => Lease, release => none},
        #{key => k, value => b, token => TokB, t1 => T1B, t2 => T2B, lease => ?LONG_LEASE, release => none}
    ])).

%% The catch-up after a successful one-round extend (4b25c04: the
%% original phase two to the masters that did not apply it) reaching a
%% stalled master after the lease ran out: A holds k on M1 and M2 only
%% (M3 lost it); A's extend (2 s) succeeds on M1, M2 and M3 answers
%% not_expected_value, then stalls; A's catch-up waits on M3. Once A's lease has run out by A's count, B
%% locks k (M1, M2). M3 resumes and stores A's lease again (nothing
%% conflicts there): a lease of A on one master (N - W at most), which
%% nobody holds: A's next extend fails, B keeps the key.
extend_catch_up_arrives_late(Config) ->
    #{masters := [M1, M2, M3] = Ms, coords := [CA, CB]} = cluster(Config, 3, 2, one_round),
    {ok, TokA, T1A, T2A} = timed_lock(CA, k, a, ?LONG_LEASE, 5000),
    await_all(fun() -> [dirty(M, k) || M <- Ms] =:= lists:duplicate(3, {ok, a}) end, all_hold_a),
    ok = gen_server:call({locker, M3}, {release, k, a, epoch_tag(epoch(M3))}),
    %% M3 answers the extension (not_expected_value), then suspends (sys)
    %% with the catch-up queued behind.
    S3 = stall(M3, Config),
    TExt = now_us(),
    Ext = async(CA, locker, extend_lease, [k, a, 2000, 5000]),
    await_all(fun() -> queued_count(M3, k) >= 1 end, extend_queued_on_m3),
    spawn(fun() -> sys:suspend({locker, M3}, infinity) end),
    await_all(fun() -> queued(M3, fun({system, _, suspend}) -> true; (_) -> false end) end, suspend_queued),
    ok = resume_server(S3),
    ?assertMatch({ok, _, _}, await_async(Ext)),
    await_all(fun() -> queued_count(M3, k) >= 1 end, catch_up_queued_on_m3),
    await_all(fun() -> now_us() > TExt + 2000 * 1000 + 200000 end, a_lease_over, 30000),
    await_all(fun() -> [dirty(M, k) || M <- [M1, M2]] =:= lists:duplicate(2, {error, not_found}) end, a_gone),
    T1B = now_us(),
    {ok, TokB} = rpc:call(CB, locker, lock_with_token, [k, b, ?LONG_LEASE, 5000]),
    T2B = now_us(),
    ok = sys:resume({locker, M3}, 10000),
    ct:log("after M3 resumed: ~p", [[dirty(M, k) || M <- Ms]]),
    ?assertEqual({error, no_quorum}, rpc:call(CA, locker, extend_lease, [k, a, ?LONG_LEASE, 2000])),
    [?assertEqual({ok, b}, dirty(M, k)) || M <- [M1, M2]],
    A = #{key => k, value => a, token => TokA, t1 => T1A, t2 => T2A, lease => ?LONG_LEASE, release => none,
          ends => TExt + 2000 * 1000},
    B = #{key => k, value => b, token => TokB, t1 => T1B, t2 => T2B, lease => ?LONG_LEASE, release => none},
    ?assertEqual([], check_holds(strict, [A, B])),
    ?assertEqual([], check_tokens([A, B])).

%%--------------------------------------------------------------------
%% Tokens
%%--------------------------------------------------------------------

%% Grants of one key alternate between a one-round coordinator (CA) and
%% a two-phase one (CB, `{one_round, false}'), with failed one-round
%% attempts (two masters stalled: written on one, undone) between them,
%% and a forged `cond_write' carrying an old token: every grant's token is
%% above the previous grant's, and the old token is refused wherever the
%% key was held before.
tokens_increase_across_paths(Config) ->
    #{masters := [M1, M2, M3] = Ms, coords := [CA, CB]} = cluster(Config, 3, 2, one_round),
    ok = rpc:call(CB, application, set_env, [locker, one_round, false]),
    Epoch = epoch(M1),
    Old = erlang:system_time(microsecond),
    Tokens = lists:map(
        fun(I) ->
            Coord = lists:nth(1 + I rem 2, [CA, CB]),
            V = {v, I},
            %% A failed one-round attempt first (written on M1, undone).
            case I rem 3 of
                0 ->
                    S2 = stall(M2, Config),
                    S3 = stall(M3, Config),
                    {error, no_quorum} = rpc:call(CA, locker, lock, [k, {failed, I}, 5000, 300]),
                    ok = resume_server(S2),
                    ok = resume_server(S3);
                _ ->
                    ok
            end,
            {ok, T} = retry_lock(Coord, k, V, 5000, 50),
            {ok, _, _, _} = rpc:call(Coord, locker, release, [k, V, 5000]),
            T
        end,
        lists:seq(1, 9)
    ),
    ct:log("tokens: ~p", [Tokens]),
    ?assertEqual(Tokens, lists:usort(Tokens)),
    #{two_phase := TP} = rpc:call(CB, locker, path_counts, []),
    ?assert(TP > 0),
    %% A coordinator whose clock is behind (token Old, from before every
    %% grant): refused on every master, with the floor.
    Forged = token_tag(Epoch, Old),
    Replies = [gen_server:call({locker, M}, {cond_write, Forged, k, x, 5000}) || M <- Ms],
    ct:log("old token: ~p", [Replies]),
    [?assertMatch({error, {stale_token, F}} when F >= Old, R) || R <- Replies].

%% A two-phase coordinator X paused between its rounds (played on the
%% wire, with the tag locker.erl makes): while its promises on M1 and M2
%% live, B's one-round lock is refused there (no quorum). X's phase two
%% then stores its lease. On a second key, X pauses past the promise
%% lifetime (10 s): B's one-round lock is granted on every master, and
%% X's late phase two, without a promise, is refused everywhere; B's
%% lease stays.
two_phase_paused_around_one_round(Config) ->
    #{masters := [M1, M2, M3] = Ms, coords := [_CA, CB]} = cluster(Config, 3, 2, one_round),
    Epoch = epoch(M1),
    TagX = token_tag(Epoch, erlang:system_time(microsecond)),
    [ok = gen_server:call({locker, M}, {get_write_lock, k, not_found, TagX}) || M <- [M1, M2]],
    ?assertEqual({error, no_quorum}, rpc:call(CB, locker, lock_with_token, [k, b, ?LONG_LEASE, 2000])),
    [ok = gen_server:call({locker, M}, {write, TagX, k, x, ?LONG_LEASE}) || M <- [M1, M2]],
    [?assertEqual({ok, x}, dirty(M, k)) || M <- [M1, M2]],
    ?assertNotEqual({ok, b}, dirty(M3, k)),
    %% Past the promise lifetime.
    TagY = token_tag(Epoch, erlang:system_time(microsecond)),
    [ok = gen_server:call({locker, M}, {get_write_lock, k2, not_found, TagY}) || M <- [M1, M2]],
    Deadline = erlang:monotonic_time(millisecond) + ?PROMISE_TTL_MS + 1000,
    await_all(fun() -> erlang:monotonic_time(millisecond) > Deadline end, promise_lifetime_passed, 30000),
    {ok, TB} = rpc:call(CB, locker, lock_with_token, [k2, b, ?LONG_LEASE, 5000]),
    await_all(fun() -> [dirty(M, k2) || M <- Ms] =:= lists:duplicate(3, {ok, b}) end, b_everywhere),
    Late = [gen_server:call({locker, M}, {write, TagY, k2, y, ?LONG_LEASE}) || M <- Ms],
    ct:log("X's late phase two: ~p (B's token ~p)", [Late, TB]),
    [?assertNotEqual(ok, R) || R <- Late],
    [?assertEqual({ok, b}, dirty(M, k2)) || M <- Ms].

%%--------------------------------------------------------------------
%% Partitions
%%--------------------------------------------------------------------

%% CA is cut off from M2 and M3 (disconnected, reconnection refused by
%% net_kernel:allow/1 on CA). A's one-round lock from CA applies on M1,
%% fails at once (M2, M3 down), and is undone on M1: B (CB) then locks.
%% A's one-round release of a key it holds on all three masters deletes
%% it on M1, fails, and the undo puts it back there (nothing came in
%% between): the key is held on all three masters again, B cannot lock
%% it, and, as the doc says, A counts it as given up; it runs out.
partition_during_one_round_ops(Config) ->
    #{masters := [M1, M2, M3], coords := [CA, CB]} = cluster(Config, 3, 2, one_round),
    {ok, _, _, _} = timed_lock(CA, held, a, 3000, 5000),
    await_all(fun() -> [dirty(M, held) || M <- [M1, M2, M3]] =:= lists:duplicate(3, {ok, a}) end, all_hold_a),
    ok = rpc:call(CA, net_kernel, allow, [[node(), M1, CB]]),
    [true = rpc:call(CA, erlang, disconnect_node, [M]) || M <- [M2, M3]],
    ?assertEqual(pang, rpc:call(CA, net_adm, ping, [M2])),
    %% lock: written on M1, undone there.
    ?assertEqual({error, no_quorum}, rpc:call(CA, locker, lock_with_token, [k, a, ?LONG_LEASE, 5000])),
    ?assertEqual({error, not_found}, dirty(M1, k)),
    {ok, _} = rpc:call(CB, locker, lock_with_token, [k, b, ?LONG_LEASE, 5000]),
    %% release: deleted on M1, put back.
    ?assertEqual({error, no_quorum}, rpc:call(CA, locker, release, [held, a, 5000])),
    ?assertEqual({ok, a}, dirty(M1, held)),
    ?assertEqual({error, no_quorum}, rpc:call(CB, locker, lock, [held, b, 1000, 1000])),
    {ok, _} = retry_lock(CB, held, b, 1000, 1000).

%%--------------------------------------------------------------------
%% Mixed paths under contention, with stalls
%%--------------------------------------------------------------------

%% Clients on a one-round node and a two-phase node (`{one_round, false}')
%% contend for two keys (lock, extend, update, release, unique values,
%% short leases) while masters are stalled and resumed at random. The
%% checker (conventional rules: a hold ends at its release call) finds
%% no overlap and tokens in grant order. ORA_MIX_SECONDS (default 15)
%% sets the length.
mixed_paths_contention(Config) ->
    #{masters := Ms, coords := [CA, CB]} = cluster(Config, 3, 2, one_round),
    ok = rpc:call(CB, application, set_env, [locker, one_round, false]),
    Until = now_us() + 1000000 * list_to_integer(os:getenv("ORA_MIX_SECONDS", "15")),
    Self = self(),
    Clients = [
        spawn_link(Node, fun() -> Self ! {done, self(), client(Node, I, Until, [])} end)
     || {Node, I} <- [{CA, 1}, {CA, 2}, {CB, 3}, {CB, 4}]
    ],
    Nemesis = spawn_link(fun() -> nemesis(Ms, Config) end),
    Events = lists:append([receive {done, C, Ev} -> Ev after 240000 -> ct:fail(client_stuck) end || C <- Clients]),
    Nemesis ! {stop, self()},
    receive {stopped, Nemesis} -> ok after 30000 -> ct:fail(nemesis_stuck) end,
    Holds = [H || {hold, H} <- Events],
    ct:log("acquisitions ~b, attempts ~b, paths ~p / ~p", [length(Holds), length(Events),
        rpc:call(CA, locker, path_counts, []), rpc:call(CB, locker, path_counts, [])]),
    ?assert(length(Holds) > 0),
    ?assertEqual([], check_holds(conventional, Holds)),
    ?assertEqual([], check_tokens(Holds)).

%% The contention of mixed_paths_contention while an agent changes the
%% masters {M1, M2, M3} <-> {M1, M2, M4} (joint configurations, new
%% epochs) through locker_membership:change/4, and masters stall at
%% random: one-round and two-phase operations cross every step of the
%% changes. Same checker. ORA_MIX_SECONDS (default 15) sets the length.
mixed_paths_across_changes(Config) ->
    #{masters := [M1, M2, M3] = Ms, coords := [CA, CB], spares := [M4]} = cluster(Config, 3, 2, one_round, 1),
    ok = rpc:call(CB, application, set_env, [locker, one_round, false]),
    Until = now_us() + 1000000 * list_to_integer(os:getenv("ORA_MIX_SECONDS", "15")),
    Self = self(),
    Clients = [
        spawn_link(Node, fun() -> Self ! {done, self(), client(Node, I, Until, [])} end)
     || {Node, I} <- [{CA, 1}, {CA, 2}, {CB, 3}, {CB, 4}]
    ],
    Nemesis = spawn_link(fun() -> nemesis(Ms ++ [M4], Config) end),
    Agent = spawn_link(fun() -> changer(CA, [[M1, M2, M4], [M1, M2, M3]], []) end),
    Events = lists:append([receive {done, C, Ev} -> Ev after 280000 -> ct:fail(client_stuck) end || C <- Clients]),
    Agent ! {stop, self()},
    Changes = receive {changes, Agent, Cs} -> Cs after 60000 -> ct:fail(agent_stuck) end,
    Nemesis ! {stop, self()},
    receive {stopped, Nemesis} -> ok after 30000 -> ct:fail(nemesis_stuck) end,
    Holds = [H || {hold, H} <- Events],
    ct:log("acquisitions ~b, attempts ~b, changes ~p, paths ~p / ~p", [length(Holds), length(Events), Changes,
        rpc:call(CA, locker, path_counts, []), rpc:call(CB, locker, path_counts, [])]),
    ?assert(length(Holds) > 0),
    ?assert(lists:member(ok, Changes)),
    ?assertEqual([], check_holds(conventional, Holds)),
    ?assertEqual([], check_tokens(Holds)).

%% Changes the masters to each set in turn, round and round, until told
%% to stop; returns the results.
changer(Node, [Next | Rest], Acc) ->
    receive
        {stop, From} -> From ! {changes, self(), lists:reverse(Acc)}
    after 0 ->
        R = rpc:call(Node, locker_membership, change, [Next, [], 2, #{wait => 15000}]),
        changer(Node, Rest ++ [Next], [R | Acc])
    end.

%% Locks, then extends, updates (to the same value) or does nothing, and
%% releases, until the wall clock passes Until (microseconds).
client(Node, I, Until, Acc) ->
    case now_us() > Until of
        true -> Acc;
        false -> client_op(Node, I, Until, length(Acc), Acc)
    end.

client_op(Node, I, Until, N, Acc) ->
    Key = {k, rand:uniform(2)},
    V = {I, N},
    Lease = 300 + rand:uniform(500),
    T1 = now_us(),
    case locker:lock_with_token(Key, V, Lease, 400) of
        {ok, Tok} ->
            T2 = now_us(),
            _ = case rand:uniform(3) of
                1 -> locker:extend_lease(Key, V, Lease, 200);
                2 -> locker:update(Key, V, V, 200);
                3 -> ok
            end,
            T3 = now_us(),
            R = locker:release(Key, V, 300),
            client(Node, I, Until, [{hold, #{key => Key, value => V, token => Tok, t1 => T1, t2 => T2,
                                             lease => Lease, release => {R, T3}}} | Acc]);
        _ ->
            client(Node, I, Until, [{failed, V} | Acc])
    end.

%% Stalls one or two masters for 50-600 ms at a time, until told to stop.
nemesis(Ms, Config) ->
    receive
        {stop, From} -> From ! {stopped, self()}
    after rand:uniform(300) ->
        Victims = lists:sublist(shuffle(Ms), rand:uniform(2)),
        Stalls = [stall(M, Config) || M <- Victims],
        receive after 50 + rand:uniform(550) -> ok end,
        [ok = resume_server(S) || S <- Stalls],
        nemesis(Ms, Config)
    end.

%%--------------------------------------------------------------------
%% Bad requests
%%--------------------------------------------------------------------

%% Malformed and forged one-round requests to a master: every call is
%% answered with an error (never `ok'), nothing is stored or deleted, no
%% undo record is left, the server does not crash; and an `undo' of a tag
%% that made no change changes nothing.
malformed_one_round_requests(Config) ->
    #{masters := [M1 | _], coords := [CA, _]} = cluster(Config, 3, 2, one_round),
    {ok, _, _, _} = timed_lock(CA, k, a, ?LONG_LEASE, 5000),
    Pid = rpc:call(M1, erlang, whereis, [locker]),
    Epoch = epoch(M1),
    Bad = bad_requests(Epoch),
    Replies = [{R, catch gen_server:call({locker, M1}, R, 5000)} || R <- Bad],
    ct:log("~p", [Replies]),
    [?assertNotEqual(ok, Reply, R) || {R, Reply} <- Replies, not acceptable_ok(R)],
    ?assertEqual(Pid, rpc:call(M1, erlang, whereis, [locker])),
    ?assertEqual({ok, a}, dirty(M1, k)),
    ok = gen_server:call({locker, M1}, {undo, epoch_tag(Epoch), k}),
    ?assertEqual({ok, a}, dirty(M1, k)),
    ?assertEqual(0, undo_records(M1)).

%% Malformed and forged one-round requests.
bad_requests(Epoch) ->
    Tag = epoch_tag(Epoch),
    [
        {cond_write, Tag, k2, v, -1},
        {cond_write, Tag, k2, v, nan},
        {cond_write, Tag, k2, v, 1 bsl 70},
        {cond_write, Tag, k2, v},
        {cond_write, Tag, k2, v, 1000, extra},
        {cond_update, Tag, k, a},
        {cond_update, Tag, k, a, b, c},
        {cond_extend, Tag, k, a, <<"1000">>},
        {cond_extend, Tag, k, a},
        {cond_release, Tag, k},
        {cond_release, Tag, k, a, a},
        {undo, Tag},
        {undo, Tag, k, extra},
        {undo},
        {cond_write},
        cond_write,
        {cond_write, {'$locker_token', Tag, -7}, k2, v, 1000},
        {cond_write, {'$locker_token', Tag, 1 bsl 64}, k2, v, 1000}
    ].

%% A `cond_write' whose token field is not a token (negative, above
%% 2^64) is a tag like any other: it may be stored as a token-less write
%% on a free key; that is no partial application (but see the report:
%% such a write skips the token floor).
acceptable_ok({cond_write, {'$locker_token', _, _}, k2, v, 1000}) -> true;
%% Lease lengths are read as every request reads them (locker_core's
%% `millis': a negative number is 0, a bignum is forever): well formed.
acceptable_ok({cond_write, _, k2, v, L}) when is_integer(L) -> true;
acceptable_ok(_) -> false.

%%--------------------------------------------------------------------
%% lockerd as a master (SIGSTOP of its OS process)
%%--------------------------------------------------------------------

%% Masters A, B (BEAM) and L (lockerd), W 2, epoch mode. L is stopped
%% (SIGSTOP) and B stalled; CA's one-round lock applies on A only, times
%% out, and its undo follows its write in L's socket and in B's mailbox.
%% L continues, B resumes: the write applies, then the undo takes it
%% back (lockerd handles one connection's requests in order). No lease is
%% left; CB then locks with A stalled (it needs B and L).
lockerd_late_write_undone_in_order(Config) ->
    #{masters := [A, B, L], coords := [CA, CB], lockerd := OsPid} = mixed_cluster(Config),
    stop_os(OsPid),
    SB = stall(B, Config),
    ?assertEqual({error, no_quorum}, rpc:call(CA, locker, lock_with_token, [k, a, ?LONG_LEASE, 1500])),
    await_all(fun() -> queued_count(B, k) >= 2 end, write_and_undo_queued_on_b),
    cont_os(OsPid),
    ok = resume_server(SB),
    await_all(fun() -> [dirty(M, k) || M <- [A, B, L]] =:= lists:duplicate(3, {error, not_found}) end, all_free),
    SA = stall(A, Config),
    {ok, _} = rpc:call(CB, locker, lock_with_token, [k, b, 1000, 5000]),
    ok = resume_server(SA).

%% The lockerd form of failed_release_frees_key_for_rival. A holds
%% k on A, B and L. The BEAM masters A and B stall; lockerd serves. A's
%% one-round release deletes k on L at once; B's lock writes there and
%% queues on A and B behind A's release; A's release times out
%% (`no_quorum'), its undo queues behind B's write. B
%% resumes: A's release, B's write, A's undo (no record): B has L and B,
%% granted. (A SIGSTOPped lockerd cannot play the slow master here: after
%% SIGCONT it reads the two coordinators' connections in either order.)
lockerd_failed_release_frees_key_for_rival(Config) ->
    #{masters := [A, B, L], coords := [CA, CB]} = mixed_cluster(Config),
    {ok, TokA, T1A, T2A} = timed_lock(CA, k, a, ?LONG_LEASE, 10000),
    await_all(fun() -> [dirty(M, k) || M <- [A, B, L]] =:= lists:duplicate(3, {ok, a}) end, all_hold_a),
    SA = stall(A, Config),
    SB = stall(B, Config),
    Rel = async(CA, locker, release, [k, a, 4000]),
    await_all(fun() -> dirty(L, k) =:= {error, not_found} andalso queued_count(B, k) >= 1 end, l_freed),
    T1B = now_us(),
    Lock = async(CB, locker, lock_with_token, [k, b, ?LONG_LEASE, 8000]),
    await_all(fun() -> dirty(L, k) =:= {ok, b} andalso queued_count(B, k) >= 2 end, b_written_on_l),
    {_, RelPid} = Rel,
    true = rpc:call(CA, erlang, is_process_alive, [RelPid]) orelse ct:fail(inconclusive_a_returned_too_early),
    {ARel, _, T3A} = await_async(Rel),
    ok = resume_server(SB),
    {BLock, _, T2B} = await_async(Lock),
    ok = resume_server(SA),
    ct:log("A's release ~p, B's lock ~p, masters ~p", [ARel, BLock, [dirty(M, k) || M <- [A, B, L]]]),
    ?assertEqual({error, no_quorum}, ARel),
    Facts = #{a_grant => {TokA, T1A, T2A}, a_release => ARel, a_release_t => T3A, b_lock => BLock,
              b_t1 => T1B, b_t2 => T2B},
    judge_release(holds_of(Facts)).

%% The bad requests of malformed_one_round_requests sent to lockerd: each
%% answered, never `ok' (but the lease-length number rules), lockerd
%% keeps serving, k unchanged.
lockerd_malformed_one_round_requests(Config) ->
    #{masters := [_, _, L], coords := [CA, _]} = mixed_cluster(Config),
    {ok, _, _, _} = timed_lock(CA, k, a, ?LONG_LEASE, 5000),
    await_all(fun() -> dirty(L, k) =:= {ok, a} end, l_holds_a),
    Replies = [{R, catch gen_server:call({locker, L}, R, 5000)} || R <- bad_requests(epoch(CA))],
    ct:log("~p", [Replies]),
    [?assertNotEqual(ok, Reply, R) || {R, Reply} <- Replies, not acceptable_ok(R)],
    [?assertMatch({error, _}, Reply, R) || {R, Reply} <- Replies, not acceptable_ok(R)],
    ?assertEqual({ok, a}, dirty(L, k)),
    ok = gen_server:call({locker, L}, {undo, epoch_tag(epoch(CA)), k}),
    ?assertEqual({ok, a}, dirty(L, k)).

%% Masters A, B (BEAM) and L (lockerd), W 2, and two coordinator-only
%% BEAM nodes, configured in epoch mode (one round).
mixed_cluster(Config) ->
    [A, B] = [start_peer(N, Config) || N <- [ma, mb]],
    Coords = [start_peer(C, Config) || C <- [ca, cb]],
    U = list_to_atom(lists:concat(["ora_l_", erlang:unique_integer([positive])])),
    Lnode = list_to_atom(atom_to_list(U) ++ "@127.0.0.1"),
    {{lockerd, _}, L, OsPid} = locker_fault_SUITE:start_lockerd(
        U, locker_fault_SUITE:lockerd_binary(), ?config(priv_dir, Config), lists:sort([A, B, Lnode]), 0,
        ?config(cleanup, Config)
    ),
    Masters = [A, B, L],
    Beams = [A, B | Coords],
    ok = rpc:call(A, locker, set_nodes, [Beams ++ [L], Masters, []]),
    await_all(fun() ->
        lists:usort([maps:with([mode, masters, w, joint], C) || C <- configs(Beams)]) =:=
            [#{mode => epoch, masters => lists:sort(Masters), w => 2, joint => none}]
    end, same_epoch_config),
    {ok, #{mode := epoch}} = gen_server:call({locker, L}, {'$locker_config', get}),
    #{masters => Masters, coords => Coords, lockerd => OsPid}.

stop_os(OsPid) ->
    _ = os:cmd("kill -STOP " ++ OsPid),
    ok.

cont_os(OsPid) ->
    _ = os:cmd("kill -CONT " ++ OsPid),
    ok.

%%--------------------------------------------------------------------
%% Checker
%%--------------------------------------------------------------------

%% Overlaps of holds of one key by different values. A hold runs from
%% `t2' (lock returned) to the earliest of `t1 + lease' (its lease counted
%% from before the call) and the moment its release was called when that
%% release ends the hold: under `conventional' rules any release; under
%% `strict' rules (the doc's) only a release that answered `{ok, ...}'.
check_holds(Rules, Holds) ->
    Spans = [span(Rules, H) || H <- Holds],
    Valid = [S || {_, S0, E0, _} = S <- Spans, S0 < E0],
    ByKey = maps:groups_from_list(fun({#{key := K}, _, _, _}) -> K end, Valid),
    lists:append([overlaps(lists:keysort(2, Ss)) || Ss <- maps:values(ByKey)]).

span(Rules, #{t1 := T1, t2 := T2, lease := Lease, release := Rel} = H) ->
    Expiry = T1 + Lease * 1000 - 1000,
    End = case {Rules, Rel} of
        {_, none} -> Expiry;
        {conventional, {_, T3}} -> min(Expiry, T3);
        {strict, {{ok, _, _, _}, T3}} -> min(Expiry, T3);
        {strict, {_, _}} -> Expiry
    end,
    %% `ends': an earlier end the caller must count with (a failed
    %% extension that may have shortened the lease).
    {H, T2, min(End, maps:get(ends, H, End)), maps:get(value, H)}.

overlaps([]) ->
    [];
overlaps([{H, _S, E, V} | Rest]) ->
    [{overlap, #{first => H, second => H2, overlap_ms => (E - S2) div 1000}}
     || {H2, S2, _, V2} <- Rest, S2 < E, V2 =/= V] ++ overlaps(Rest).

%% Tokens increase in the order the holds started (lock returned), per key.
check_tokens(Holds) ->
    ByKey = maps:groups_from_list(fun(#{key := K}) -> K end, Holds),
    lists:append([
        token_order(lists:sort(fun(#{t2 := A}, #{t2 := B}) -> A =< B end, Hs))
     || Hs <- maps:values(ByKey)
    ]).

token_order([#{token := A} = HA, #{token := B} = HB | Rest]) ->
    [{token_order, HA, HB} || B =< A] ++ token_order([HB | Rest]);
token_order(_) ->
    [].

%%--------------------------------------------------------------------
%% Helpers
%%--------------------------------------------------------------------

%% N masters with quorum W and two coordinator-only nodes, configured in
%% epoch mode (where one round is used); Path two_phase sets
%% `{one_round, false}' on the coordinators.
cluster(Config, N, W, Path) ->
    cluster(Config, N, W, Path, 0).

%% With Spares more BEAM nodes in the cluster, not masters.
cluster(Config, N, W, Path, Spares) ->
    Masters = [start_peer(list_to_atom("m" ++ integer_to_list(I)), Config) || I <- lists:seq(1, N)],
    Coords = [start_peer(C, Config) || C <- [ca, cb]],
    SpareNodes = [start_peer(list_to_atom("m" ++ integer_to_list(I)), Config) || I <- lists:seq(N + 1, N + Spares)],
    All = Masters ++ Coords ++ SpareNodes,
    [M1 | _] = Masters,
    ok = rpc:call(M1, locker, set_nodes, [All, Masters, []]),
    await_all(fun() ->
        lists:usort([maps:with([mode, masters, w, joint, epoch], C) || C <- configs(All)]) =:=
            [#{mode => epoch, masters => lists:sort(Masters), w => W, joint => none, epoch => epoch(M1)}]
    end, same_epoch_config),
    case Path of
        two_phase -> [ok = rpc:call(C, application, set_env, [locker, one_round, false]) || C <- Coords];
        one_round -> ok
    end,
    #{masters => Masters, coords => Coords, spares => SpareNodes}.

configs(Nodes) ->
    [rpc:call(N, locker_membership, config, []) || N <- Nodes].

epoch(Node) ->
    #{epoch := E} = rpc:call(Node, locker_membership, config, []),
    E.

%% The tags locker.erl makes: an epoch tag, and an acquisition's token tag.
epoch_tag(Epoch) ->
    {'$locker_epoch', Epoch, make_ref()}.

token_tag(Epoch, Token) ->
    {'$locker_token', epoch_tag(Epoch), Token}.

start_peer(Name, Config) ->
    Unique = list_to_atom(lists:concat(["ora_", Name, "_", erlang:unique_integer([positive])])),
    %% These schedules place single requests in the masters' mailboxes and
    %% hold them there: the coordinators send plain requests (batching,
    %% which can carry a request inside a '$locker_batch' message, is
    %% attacked with the fault suite's checker in locker_batch_SUITE).
    {Peer, Node} = locker_ct:start_peer(Unique, [{batching, false}]),
    ets:insert(?config(cleanup, Config), {peer, Peer}),
    ets:insert(?config(cleanup, Config), {os_pid, locker_ct:os_pid(Node)}),
    Node.

dirty(Node, Key) ->
    rpc:call(Node, locker, dirty_read, [Key]).

undo_records(Node) ->
    %% 0 when the NIF's stats do not report undo records (yet).
    maps:get(undo_records, rpc:call(Node, locker_nif, stats, []), 0).

now_us() ->
    erlang:system_time(microsecond).

%% lock_with_token on Node, with the times before and after.
timed_lock(Node, Key, Value, Lease, Timeout) ->
    T1 = now_us(),
    {ok, Tok} = rpc:call(Node, locker, lock_with_token, [Key, Value, Lease, Timeout]),
    {ok, Tok, T1, now_us()}.

%% lock_with_token on Node until it succeeds (up to 600 tries).
retry_lock(Node, Key, Value, Lease, Timeout) ->
    retry_lock(Node, Key, Value, Lease, Timeout, 600).

retry_lock(_Node, _Key, _Value, _Lease, _Timeout, 0) ->
    ct:fail(never_granted);
retry_lock(Node, Key, Value, Lease, Timeout, N) ->
    case rpc:call(Node, locker, lock_with_token, [Key, Value, Lease, Timeout]) of
        {ok, Tok} -> {ok, Tok};
        _ -> receive after 100 -> retry_lock(Node, Key, Value, Lease, Timeout, N - 1) end
    end.

%% M:F(A) in a process of its own on Node; await_async/1 gets
%% {Result, StartUs, EndUs}.
async(Node, M, F, A) ->
    Self = self(),
    Ref = make_ref(),
    Pid = spawn(Node, fun() ->
        T1 = now_us(),
        R = (catch apply(M, F, A)),
        Self ! {Ref, R, T1, now_us()}
    end),
    {Ref, Pid}.

await_async({Ref, _Pid}) ->
    receive
        {Ref, R, T1, T2} -> {R, T1, T2}
    after 120000 -> ct:fail(async_call_stuck)
    end.

kill_async({_Ref, Pid}) ->
    exit(Pid, kill).

%% Polls Cond (a remote state, which sends no message when it changes)
%% every 20 ms, up to Max ms.
await_all(Cond, What) ->
    await_all(Cond, What, 20000).

await_all(Cond, What, Max) ->
    Deadline = erlang:monotonic_time(millisecond) + Max,
    await_loop(Cond, What, Deadline).

await_loop(Cond, What, Deadline) ->
    case Cond() of
        true ->
            ok;
        false ->
            case erlang:monotonic_time(millisecond) > Deadline of
                true -> ct:fail({timeout_waiting_for, What});
                false -> receive after 20 -> await_loop(Cond, What, Deadline) end
            end
    end.

%% Suspends Node's `locker' server from a process on Node that keeps it
%% suspended until resume_server/1 (a suspension ends with its suspender).
stall(Node, Config) ->
    Self = self(),
    Pid = spawn(Node, fun() ->
        true = erlang:suspend_process(whereis(locker)),
        Self ! {stalled, self()},
        receive
            {resume, From} -> true = erlang:resume_process(whereis(locker)), From ! {resumed, self()}
        end
    end),
    receive
        {stalled, Pid} ->
            ets:insert(?config(cleanup, Config), {stall, Pid}),
            Pid
    after 10000 -> ct:fail({not_stalled, Node})
    end.

resume_server(Pid) ->
    Pid ! {resume, self()},
    receive
        {resumed, Pid} -> ok
    after 10000 -> {error, not_resumed}
    end.

%% The requests in Node's (stalled) server mailbox that match Pred.
queued(Node, Pred) ->
    Pid = rpc:call(Node, erlang, whereis, [locker]),
    case rpc:call(Node, erlang, process_info, [Pid, messages]) of
        {messages, Ms} -> lists:any(Pred, Ms);
        _ -> false
    end.

%% How many one-round or two-phase requests on Key wait in Node's mailbox.
queued_count(Node, Key) ->
    Pid = rpc:call(Node, erlang, whereis, [locker]),
    case rpc:call(Node, erlang, process_info, [Pid, messages]) of
        {messages, Ms} -> length([M || M <- Ms, on_key(M, Key)]);
        _ -> 0
    end.

on_key({'$gen_call', _, Req}, Key) when is_tuple(Req), tuple_size(Req) >= 2 ->
    lists:member(Key, tl(tuple_to_list(Req))) orelse
        (element(1, Req) =:= release_write_lock);
on_key(_, _) ->
    false.

cond_release_or_gwl(Key) ->
    fun
        ({'$gen_call', _, {cond_release, _, K, _}}) -> K =:= Key;
        ({'$gen_call', _, {get_write_lock, K, _, _}}) -> K =:= Key;
        (_) -> false
    end.

shuffle(L) ->
    [X || {_, X} <- lists:sort([{rand:uniform(), X} || X <- L])].
