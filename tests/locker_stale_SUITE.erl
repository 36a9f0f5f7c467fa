%% Phase two after the promise is gone (issue 11): the four ways a
%% coordinator's phase two reached the masters after its promises had
%% expired or been dropped, reproduced across real nodes, each on a
%% BEAM-only cluster (three BEAM masters) and on a mixed one (two BEAM
%% masters and lockerd), W = 2. Before the fix every case ended with two
%% owners told they hold the key at once, the later one with the smaller
%% fencing token; since, the stale operation answers `{error, no_quorum}'
%% (the coordinator gives up phase two past 9 s, and a master without the
%% promise refuses a conflicting phase two with `{error, no_promise}').
%%
%% Roles: M1 (BEAM) runs the coordinator under test and votes for it
%% locally; M2 (BEAM) is the master whose vote the coordinator waits for
%% (its `locker' server is suspended with erlang:suspend_process/1 until
%% the coordinator is where the case wants it) and runs the rival; M3
%% (the third BEAM master, or lockerd) refuses the coordinator: the test
%% holds a promise on the key there (a raw `get_write_lock'). With M1
%% `ok', M3 refused and M2 pending, the coordinator cannot end phase one
%% before M2 answers: the test decides when that happens.
%%
%%   paused_master_late_vote: here M2 holds the test's promise (and
%%     refuses) and M3 is SIGSTOPped ~13 s while M1 runs
%%     `lock_with_token(K, V, 60000, 30000)'; the promises expire, a rival
%%     locks K on M1 and M2 (from M1), M3 resumes and gives its late vote.
%%   server_restart_between_phases: the coordinator is suspended with its
%%     votes in its mailbox; M2's server is killed and restarted (its
%%     promises dropped); the test's promise on M3 is released; a rival
%%     locks K with M2 and M3; the coordinator resumes and writes.
%%   extend_paused_between_phases: the holder's `extend_lease' is
%%     suspended ~10.5 s with its votes in its mailbox; its lease and
%%     promises expire, a rival locks K, the extend resumes.
%%   coordinator_vm_stopped: M1's whole VM is SIGSTOPped ~13 s while its
%%     coordinator (30 s timeout) waits in phase one; a rival locks K with
%%     M2 and M3; M1 resumes and the coordinator gets its last vote.
%%
%% What is asserted is what a user sees: every call gets a definite answer
%% (`{ok, _}'/`ok' or `{error, no_quorum}'); no two owners are told they
%% hold K over overlapping intervals (an owner holds K from the moment its
%% call returned success until its release was called or the lease it
%% asked for, counted from the call's start, ran out; all nodes share the
%% host's clock); an acquisition that returned later has a larger token;
%% and afterwards the key can be released and taken again, with a larger
%% token. Waits are on messages and on the masters' state
%% (`get_debug_state' lists live promises and leases only); the pauses of
%% real processes are the promise lifetime (10 s) plus what the rival
%% needs, and nothing asserts on time. The suite takes about 80 s.
-module(locker_stale_SUITE).

-include_lib("common_test/include/ct.hrl").

-export([all/0, groups/0, suite/0, init_per_suite/1, end_per_suite/1]).
-export([init_per_group/2, end_per_group/2, init_per_testcase/2, end_per_testcase/2]).
-export([
    paused_master_late_vote/1,
    server_restart_between_phases/1,
    extend_paused_between_phases/1,
    coordinator_vm_stopped/1
]).
%% Runs on the peers.
-export([agent_main/1]).

%% The long lease every acquisition under test asks for: any two
%% successes of these overlap.
-define(LEASE, 60000).
%% The coordinator under test's timeout: longer than the promise lifetime.
-define(TIMEOUT, 30000).
%% The rival's timeout: the rival must get its lock on M2 and M3 while M1
%% is stopped, and this machine may be loaded (a 3 s timeout failed there
%% once with every node sharing two busy vCPUs); its phase two waits for
%% the stopped M1 at most this long.
-define(RIVAL_TIMEOUT, 15000).
%% How long a wait on the cluster's state or a reply may take before the
%% case fails (not a timing assertion: a bound against hanging).
-define(WAIT, 40000).

all() ->
    [{group, beam}, {group, mixed}].

groups() ->
    Cases = [
        paused_master_late_vote,
        server_restart_between_phases,
        extend_paused_between_phases,
        coordinator_vm_stopped
    ],
    [{beam, [], Cases}, {mixed, [], Cases}].

suite() ->
    [{timetrap, {seconds, 120}}].

%%--------------------------------------------------------------------
%% Setup
%%--------------------------------------------------------------------

init_per_suite(Config) ->
    ok = locker_ct:ensure_distributed(),
    Config.

end_per_suite(_Config) ->
    ok.

init_per_group(beam, Config) ->
    [{kind, beam} | Config];
init_per_group(mixed, Config) ->
    [{kind, mixed}, {lockerd, maps:get(lockerd, locker_ct:lockerd_binaries())} | Config].

end_per_group(_Group, _Config) ->
    ok.

init_per_testcase(_Case, Config) ->
    Cleanup = ets:new(cleanup, [public, bag]),
    Config1 = [{cleanup, Cleanup} | Config],
    A = start_beam("st_a", Config1),
    B = start_beam("st_b", Config1),
    C =
        case ?config(kind, Config) of
            beam -> start_beam("st_c", Config1);
            mixed -> start_lockerd("st_l", [A, B], Config1)
        end,
    Masters = [A, B, C],
    [ok = gen_server:call({locker, N}, {set_nodes, Masters, []}, 5000) || N <- [A, B, C]],
    %% Every connection between masters is up before anything is paused
    %% (a connection still being set up to a stopped node fails after
    %% net_setuptime, 7 s, and the coordinator would count that node down).
    [{ok, _, _, _, _, _} = rpc:call(X, gen_server, call, [{locker, N}, get_debug_state, 5000])
     || X <- [A, B], N <- Masters, N =/= X],
    [{m1, A}, {m2, B}, {m3, C}, {masters, Masters} | Config1].

end_per_testcase(_Case, Config) ->
    T = ?config(cleanup, Config),
    %% Continue whatever a failed case left stopped, then stop everything.
    [os:cmd("kill -CONT " ++ P) || {os_pid, P} <- ets:lookup(T, os_pid)],
    [catch peer:stop(P) || {peer, P} <- ets:lookup(T, peer)],
    [os:cmd("kill -9 " ++ P) || {lockerd, P} <- ets:lookup(T, lockerd)],
    ets:delete(T),
    ok.

%% These scenarios are the two-phase path's (a coordinator between its
%% phases): its coordinators are kept on it (`one_round' = false). The
%% one-round path's late writes and undo are in locker_oneround_SUITE.
start_beam(Prefix, Config) ->
    {Peer, Node} = locker_ct:start_peer(list_to_atom(locker_ct:unique(Prefix)), [{one_round, false}]),
    T = ?config(cleanup, Config),
    ets:insert(T, [{peer, Peer}, {os_pid, locker_ct:os_pid(Node)}]),
    Node.

%% lockerd as the third master (its own defaults: W = 2, promises live
%% 10 s), started with open_port; its output goes to the case's priv_dir.
start_lockerd(Prefix, Beams, Config) ->
    Name = locker_ct:unique(Prefix),
    Node = list_to_atom(Name ++ "@127.0.0.1"),
    Masters = string:join([atom_to_list(N) || N <- Beams ++ [Node]], ","),
    Args = ["--name", atom_to_list(Node), "--cookie", atom_to_list(erlang:get_cookie()),
            "--masters", Masters, "--announce"],
    Log = filename:join(?config(priv_dir, Config), Name ++ ".log"),
    #{os_pid := P} = locker_ct:start_os(?config(lockerd, Config), Args, Log),
    OsPid = integer_to_list(P),
    T = ?config(cleanup, Config),
    ets:insert(T, [{lockerd, OsPid}, {os_pid, OsPid}]),
    Node.

os_pid(Node, Config) ->
    case ?config(kind, Config) =:= mixed andalso Node =:= ?config(m3, Config) of
        true -> hd([P || {lockerd, P} <- ets:lookup(?config(cleanup, Config), lockerd)]);
        false -> locker_ct:os_pid(Node)
    end.

%%--------------------------------------------------------------------
%% Scenario 1: a master SIGSTOPped ~13 s, its vote arrives late
%%--------------------------------------------------------------------

%% M2 holds the test's promise on K, so M2 refuses the caller; M3 is
%% stopped, so the caller on M1 (M1 `ok') waits for M3's vote. Before the
%% fix it waited as long as its timeout (30 s), got the vote after its own
%% promise on M1 had expired and a rival had locked K, and wrote anyway:
%% both were told they hold K for 60 s, and the rival's token is the larger
%% although the caller's acquisition returned last.
paused_master_late_vote(Config) ->
    #{m1 := M1, m2 := M2, m3 := M3} = roles(Config),
    K = {stale, late_vote},
    ok = promise(M2, K, not_found, make_ref()),
    M3Os = os_pid(M3, Config),
    stop_os(M3Os),
    _ = op(M1, caller, fun() -> locker:lock_with_token(K, caller, ?LEASE, ?TIMEOUT) end),
    await_state("the caller's vote on M1", fun() -> promised(M1, K) =/= [] end),
    %% M1's promise for the caller and M2's for the test expire (or, once
    %% fixed, the caller gives up and drops its own).
    await_state("K free on M1 and M2", fun() -> promised(M1, K) =:= [] andalso promised(M2, K) =:= [] end),
    %% The rival runs on M1 too: M3 then gets its requests behind the
    %% caller's, on the same connection, and votes for the caller first
    %% (from M2 they would race the caller's on another connection, and
    %% M3 could promise K to the rival and refuse the caller).
    _ = op(M1, rival, fun() -> locker:lock_with_token(K, rival, ?LEASE, ?RIVAL_TIMEOUT) end),
    await_state("the rival's lease on M1 and M2", fun() -> lease(M1, K) =:= {ok, rival} andalso lease(M2, K) =:= {ok, rival} end),
    cont_os(M3Os),
    verify(K, [await_op(caller), await_op(rival)], rival, Config).

%%--------------------------------------------------------------------
%% Scenario 2: M2's server restarted between the phases
%%--------------------------------------------------------------------

%% The caller holds promises on M1 and M2 (M3 refused it); it is suspended
%% with both votes in its mailbox; M2's server is killed and restarted
%% (its promises are dropped) and M3's promise released: a rival takes K
%% with M2 and M3 (M1 still promised to the caller refuses). Before the
%% fix the caller's resumed write was applied on every master, M3
%% included, which never promised it anything: two holders.
server_restart_between_phases(Config) ->
    #{m1 := M1, m2 := M2, m3 := M3} = R = roles(Config),
    K = {stale, restart},
    Blocker = make_ref(),
    ok = promise(M3, K, not_found, Blocker),
    {A2, Server2} = suspend_server(M2),
    Caller = op(M1, caller, fun() -> locker:lock_with_token(K, caller, ?LEASE, ?TIMEOUT) end),
    A1 = hold_in_phase_one(Caller, K, R),
    {ok, Server2} = run(A2, fun() -> erlang:resume_process(Server2) andalso {ok, Server2} end),
    await_vote(A1, Caller),
    %% Restart M2's server: a crash drops its promises (leases stay).
    Masters = ?config(masters, Config),
    {ok, _} = run(A2, fun() -> restart_server(Masters) end),
    ok = release_promise(M3, Blocker),
    _ = op(M2, rival, fun() -> locker:lock_with_token(K, rival, ?LEASE, 5000) end),
    Rival = await_op(rival),
    true = run(A1, fun() -> erlang:resume_process(Caller) end),
    verify(K, [Rival, await_op(caller)], rival, Config).

%%--------------------------------------------------------------------
%% Scenario 3: extend_lease suspended between its phases ~10.5 s
%%--------------------------------------------------------------------

%% The holder locks K for 6 s and extends it by 60 s; the extend's
%% coordinator has its votes (M1, M2; M3 refused) but is suspended before
%% phase two until its promises expired; the holder's lease ran out and a
%% rival locked K. Before the fix the extend, resumed, was applied on
%% every master and answered `ok': the holder was told it holds K for 60 s
%% more while the rival holds it.
extend_paused_between_phases(Config) ->
    #{m1 := M1, m2 := M2, m3 := M3} = R = roles(Config),
    K = {stale, extend},
    _ = op(M1, holder, fun() -> locker:lock_with_token(K, holder, 6000, 5000) end),
    Holder = await_op(holder),
    {ok, _} = result(Holder),
    await_state("the holder's lease on M3", fun() -> lease(M3, K) =:= {ok, holder} end),
    Blocker = make_ref(),
    ok = promise(M3, K, holder, Blocker),
    {A2, Server2} = suspend_server(M2),
    Extend = op(M1, extend, fun() -> locker:extend_lease(K, holder, ?LEASE, ?TIMEOUT) end),
    A1 = hold_in_phase_one(Extend, K, R),
    {ok, Server2} = run(A2, fun() -> erlang:resume_process(Server2) andalso {ok, Server2} end),
    await_vote(A1, Extend),
    ok = release_promise(M3, Blocker),
    await_state("K free on every master (lease and promises expired)", fun() ->
        lists:all(fun(N) -> promised(N, K) =:= [] andalso lease(N, K) =:= none end, [M1, M2, M3])
    end),
    _ = op(M2, rival, fun() -> locker:lock_with_token(K, rival, ?LEASE, 5000) end),
    Rival = await_op(rival),
    true = run(A1, fun() -> erlang:resume_process(Extend) end),
    verify(K, [Holder, Rival, await_op(extend)], rival, Config).

%%--------------------------------------------------------------------
%% Scenario 4: the coordinator's VM stopped ~13 s in phase one
%%--------------------------------------------------------------------

%% The caller on M1 (30 s timeout) waits for M2's vote (M1 `ok', M3
%% refused) when M1's whole VM is stopped; M2 votes, the promises expire,
%% M3's is released, a rival locks K on M2 and M3; M1 continues. Before
%% the fix the caller counted the vote that had waited in its socket and
%% wrote: two holders, the later one with the smaller token.
coordinator_vm_stopped(Config) ->
    #{m1 := M1, m2 := M2, m3 := M3} = R = roles(Config),
    K = {stale, vm_stopped},
    Blocker = make_ref(),
    ok = promise(M3, K, not_found, Blocker),
    {A2, Server2} = suspend_server(M2),
    Caller = op(M1, caller, fun() -> locker:lock_with_token(K, caller, ?LEASE, ?TIMEOUT) end),
    _ = wait_in_phase_one(Caller, K, R),
    M1Os = os_pid(M1, Config),
    stop_os(M1Os),
    {ok, Server2} = run(A2, fun() -> erlang:resume_process(Server2) andalso {ok, Server2} end),
    await_state("M2's vote for the caller", fun() -> promised(M2, K) =/= [] end),
    ok = release_promise(M3, Blocker),
    await_state("K free on M2 and M3", fun() -> promised(M2, K) =:= [] andalso promised(M3, K) =:= [] end),
    _ = op(M2, rival, fun() -> locker:lock_with_token(K, rival, ?LEASE, ?RIVAL_TIMEOUT) end),
    await_state("the rival's lease on M2 and M3", fun() -> lease(M2, K) =:= {ok, rival} andalso lease(M3, K) =:= {ok, rival} end),
    cont_os(M1Os),
    verify(K, [await_op(caller), await_op(rival)], rival, Config).

%%--------------------------------------------------------------------
%% Steering the coordinator
%%--------------------------------------------------------------------

roles(Config) ->
    #{m1 => ?config(m1, Config), m2 => ?config(m2, Config), m3 => ?config(m3, Config)}.

%% Waits (in an agent on M1) until the coordinator `Coord' has voted on
%% M1 and waits in a receive: phase one's requests are then sent (the
%% local vote comes after them), and M2, whose server is suspended, has
%% not answered. Then makes sure M3 has handled the coordinator's request
%% (a call from M1 to M3 after it travels behind it on the same
%% connection), so that releasing the test's promise there cannot turn
%% M3's refusal into a vote. Returns the agent.
wait_in_phase_one(Coord, K, #{m1 := M1, m3 := M3}) ->
    A1 = agent(M1),
    ok = run(A1, fun() ->
        poll(fun() ->
            {ok, Promises, _, _, _, _} = locker:get_debug_state(),
            lists:keymember(K, 1, Promises) andalso process_info(Coord, status) =:= {status, waiting}
        end)
    end),
    {ok, _, _, _, _, _} = run(A1, fun() -> gen_server:call({locker, M3}, get_debug_state, ?WAIT) end),
    A1.

%% As wait_in_phase_one/3, and suspends the coordinator (the agent holds
%% the suspension: it ends with the agent, at the latest with the case).
hold_in_phase_one(Coord, K, R) ->
    A1 = wait_in_phase_one(Coord, K, R),
    true = run(A1, fun() -> erlang:suspend_process(Coord) end),
    A1.

%% Waits until M2's `ok' vote sits in the suspended coordinator's mailbox.
await_vote(A1, Coord) ->
    ok = run(A1, fun() ->
        poll(fun() ->
            {messages, Ms} = process_info(Coord, messages),
            lists:any(fun({_, ok}) -> true; (_) -> false end, Ms)
        end)
    end).

%% Suspends the `locker' server of a BEAM node (from an agent there, which
%% holds the suspension). Returns the agent and the server's pid.
suspend_server(Node) ->
    A = agent(Node),
    {ok, Pid} = run(A, fun() ->
        Pid = whereis(locker),
        true = erlang:suspend_process(Pid),
        {ok, Pid}
    end),
    {A, Pid}.

%% Kills this node's `locker' server and starts a new one (as a
%% supervisor would), with the cluster's masters. Runs on the node.
restart_server(Masters) ->
    Old = whereis(locker),
    Mref = erlang:monitor(process, Old),
    exit(Old, kill),
    receive {'DOWN', Mref, process, _, _} -> ok end,
    {ok, New} = gen_server:start({local, locker}, locker_server, [2, 1000, 1000, 100], []),
    ok = gen_server:call(New, {set_nodes, Masters, []}),
    {ok, New}.

%% A raw phase one from the test node: holds K on Node for Tag.
promise(Node, K, Expected, Tag) ->
    gen_server:call({locker, Node}, {get_write_lock, K, Expected, Tag}, ?WAIT).

release_promise(Node, Tag) ->
    gen_server:call({locker, Node}, {release_write_lock, Tag}, ?WAIT).

stop_os(OsPid) ->
    [] = os:cmd("kill -STOP " ++ OsPid).

cont_os(OsPid) ->
    [] = os:cmd("kill -CONT " ++ OsPid).

%%--------------------------------------------------------------------
%% Agents and operations on the peers
%%--------------------------------------------------------------------

%% A process on Node that runs funs for the case and ends with it (not
%% linked: the peers' stop must not take the case down).
agent(Node) ->
    spawn(Node, ?MODULE, agent_main, [self()]).

agent_main(Case) ->
    Mref = erlang:monitor(process, Case),
    agent_loop(Mref).

agent_loop(Mref) ->
    receive
        {run, From, Ref, F} ->
            From ! {Ref, catch F()},
            agent_loop(Mref);
        {'DOWN', Mref, process, _, _} ->
            ok
    end.

run(Agent, F) ->
    Ref = make_ref(),
    Agent ! {run, self(), Ref, F},
    receive {Ref, R} -> R after ?WAIT -> ct:fail({agent_no_reply, node(Agent)}) end.

%% Polls a condition on the node itself (every 20 ms, up to ?WAIT).
poll(F) ->
    poll(F, ?WAIT div 20).

poll(F, 0) -> {never, F()};
poll(F, N) ->
    case F() of
        true -> ok;
        _ -> timer:sleep(20), poll(F, N - 1)
    end.

%% Runs F on Node in a new process that reports its result and the host
%% clock (microseconds) at its start and end; returns the process.
op(Node, Name, F) ->
    Parent = self(),
    spawn(Node, fun() ->
        T1 = os:system_time(microsecond),
        R = (catch F()),
        T2 = os:system_time(microsecond),
        Parent ! {op, Name, T1, T2, R}
    end).

await_op(Name) ->
    receive {op, Name, T1, T2, R} -> {Name, T1, T2, R}
    after ?WAIT -> ct:fail({no_answer, Name})
    end.

result({_, _, _, R}) -> R.

%% Polls the cluster's state from the test node (every 50 ms).
await_state(What, F) ->
    await_state(What, F, ?WAIT div 50).

await_state(What, _F, 0) -> ct:fail({never, What});
await_state(What, F, N) ->
    case catch F() of
        true -> ok;
        _ -> timer:sleep(50), await_state(What, F, N - 1)
    end.

debug_state(Node) ->
    {ok, Promises, Leases, _, _, _} = gen_server:call({locker, Node}, get_debug_state, ?WAIT),
    {Promises, Leases}.

%% Live promises on K at Node (their tags).
promised(Node, K) ->
    {Promises, _} = debug_state(Node),
    [T || {K1, T, _} <- Promises, K1 =:= K].

lease(Node, K) ->
    {_, Leases} = debug_state(Node),
    case [V || {K1, V, _} <- Leases, K1 =:= K] of
        [V] -> {ok, V};
        [] -> none
    end.

%%--------------------------------------------------------------------
%% What the user sees
%%--------------------------------------------------------------------

%% Ops: what every call returned. `Rival' must have taken K (else the case
%% reproduced nothing). Checks the answers, the holds, then releases K
%% and takes it again from M2, which must work with a larger token.
verify(K, Ops, Rival, Config) ->
    ct:log("answers: ~p", [Ops]),
    [ct:fail({no_definite_answer, Name, R}) || {Name, _, _, R} <- Ops, not definite(R)],
    {Rival, _, _, {ok, _}} = lists:keyfind(Rival, 1, Ops),
    Holds = holds(Ops),
    ct:log("holds: ~p", [Holds]),
    case violations(Holds) of
        [] -> ok;
        V -> ct:fail({violations, V})
    end,
    %% Every owner told it holds K releases it; then K is taken again.
    M2 = ?config(m2, Config),
    Released = [begin
        _ = op(M2, {release, Owner}, fun() -> locker:release(K, Owner, 5000) end),
        {{release, Owner}, T1, _, _} = await_op({release, Owner}),
        {Owner, T1}
    end || Owner <- lists:usort([O || {O, _, _, _} <- Holds])],
    Ended = [{O, Tk, From, min(Until, proplists:get_value(O, Released))} || {O, Tk, From, Until} <- Holds],
    _ = op(M2, final, fun() -> locker:lock_with_token(K, final, 5000, 5000) end),
    Final = await_op(final),
    ct:log("after release: ~p", [Final]),
    {ok, _} = result(Final),
    [] = violations(Ended ++ holds([Final])),
    {comment, lists:flatten(io_lib:format("~p", [[{Name, R} || {Name, _, _, R} <- Ops]]))}.

definite({ok, T}) -> is_integer(T);
definite(ok) -> true;
definite({error, no_quorum}) -> true;
definite(_) -> false.

%% {Owner, Token, From, Until}: Owner (the value it locked K with) holds K
%% from the moment its call returned until the lease it asked for, counted
%% from the call's start, runs out. An extension carries the token of the
%% holder's acquisition.
holds(Ops) ->
    Tokens = maps:from_list([{Name, T} || {Name, _, _, {ok, T}} <- Ops, is_integer(T)]),
    [{owner(Name), maps:get(owner(Name), Tokens), T2, T1 + lease_of(Name) * 1000}
     || {Name, T1, T2, R} <- Ops, R =:= ok orelse element(1, R) =:= ok].

owner(extend) -> holder;
owner(Name) -> Name.

lease_of(holder) -> 6000;
lease_of(final) -> 5000;
lease_of(_) -> ?LEASE.

%% Two owners told they hold K at the same time; an acquisition that
%% returned later with a token not above an earlier one's.
violations(Holds) ->
    [{both_hold, A, B} || {OA, _, FA, UA} = A <- Holds, {OB, _, FB, UB} = B <- Holds,
                          OA < OB, FA < UB, FB < UA] ++
    [{token_not_increasing, A, B} || {OA, TA, FA, _} = A <- Holds, {OB, TB, FB, _} = B <- Holds,
                                     OA =/= OB, FA < FB, TA >= TB].
