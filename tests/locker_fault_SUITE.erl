%% Mutual exclusion and fencing under faults (a small Jepsen-style run).
%%
%% Three masters (W = 2) and one coordinator-only node; clients on every
%% BEAM node contend for three keys with `locker:lock_with_token/4' and
%% `locker:lock/4' (every other attempt), hold and release, recording
%% times from the host's clock (all nodes share one kernel clock: it is
%% the single observer). Every attempt has its own value, unique in the
%% run: `{{Name, I, Incarnation}, N}', Incarnation a unique integer of the
%% test node given to each client it spawns.
%%
%% The workload mixes what the protocol must survive:
%% - leases of 400 ms and of 12-20 s (longer than the 10 s promise
%%   lifetime), half each;
%% - per BEAM node, two callers with a 300 ms timeout and two with 15-30 s
%%   timeouts (longer than the promise lifetime);
%% - holds of up to 30 ms, and one in twenty long-lease holds of 0.5-2.5 s;
%%   releases with a 300 ms timeout; 10-100 ms between a failed attempt
%%   and the next.
%%
%% A nemesis injects, between bursts of 150-450 ms:
%% - `kill': `kill -9' of a node (a master, lockerd, or the coordinator
%%   node), restarted empty; a restarted master is in safe mode
%%   (`restart_abstain_ms' = 20 s, the longest lease). A master is killed
%%   only while no other master is in safe mode (so that a quorum can
%%   vote at all);
%% - `pause': SIGSTOP of any node for 0.5-0.9 s (past the short lease);
%% - `disconnect': `erlang:disconnect_node/1' between two nodes;
%% - `membership': one master dropped from every view, then restored;
%% - `server_kill': `exit(whereis(locker), kill)' on a BEAM master, and a
%%   new server started at once (leases live on in the NIF store,
%%   promises are dropped): at random moments under load, so some land
%%   between a coordinator's two phases.
%% and, spread evenly over the run, in turn: `long_pause_master_and_coordinator'
%% (SIGSTOP of a master, and 0.3-2 s later, while coordinators wait for
%% its vote, of the coordinator node), `long_pause_master' (a master with
%% its own coordinators) and `long_pause_coordinator' (the coordinator
%% node), each node stopped for 10.5-13 s, past the promise lifetime and
%% shorter than the longest lease; meanwhile the locker servers of the
%% BEAM masters not stopped are killed and restarted
%% every 0.5-3 s (`server_kill_in_long_pause').
%%
%% The checker (see check/4) verifies, per key, that no two valid
%% intervals of different values overlap, that fencing tokens increase
%% in acquisition order, that every `lock/4' success carries a quorum of
%% votes and of commits, and it counts what it checked against what
%% happened: as many intervals as successful acquisitions, as many token
%% holds in the order check as token acquisitions with a non-empty
%% interval (the others are counted apart). After the nemesis stops and
%% every restarted master is out of safe mode, a quiet phase has each
%% BEAM node lock and release a fresh key of its own 20 times, uncontended
%% (the clients keep running on the three keys): every attempt must
%% succeed; a failed one is reported with the replies of each round
%% (traced on the coordinator) and each master's promises on the key.
%%
%% The second case runs the same with `lockerd' (the Rust node) as the
%% third master (killed, paused and long-paused like the others; it has
%% no separate server process to kill); clients run on the BEAM nodes.
%%
%% Environment:
%% - LOCKER_FAULT_ACQUISITIONS: successful acquisitions to reach per case
%%   (default 400, the CI's short mode; 10000 for a long run);
%% - LOCKER_FAULT_LONG_PAUSES: long-pause episodes per case (default 3,
%%   the CI's: one of each; e.g. 40 with 10000 acquisitions);
%% - LOCKER_FAULT_W=1 runs with a quorum of one, which must make the
%%   checker report violations (a check of the checker).
%% - LOCKER_FAULT_ONE_ROUND=false makes the coordinators use the two-phase
%%   protocol only (by default they take one round once the membership
%%   agent set the configuration through epochs; the summary prints how
%%   many attempts took each path, and the case fails if none took one
%%   round by default).
-module(locker_fault_SUITE).

-include_lib("common_test/include/ct.hrl").

-export([all/0, suite/0, init_per_suite/1, end_per_suite/1, init_per_testcase/2, end_per_testcase/2]).
-export([checker_finds_violations/1, mutual_exclusion_under_faults/1, mutual_exclusion_mixed_cluster/1]).
%% Run on the peers.
-export([client/2, quiet_client/3]).
%% Shared with locker_membership_SUITE.
-export([check/4, lockerd_binary/0, start_lockerd/6]).

-define(KEYS, [k1, k2, k3]).
%% Leases: short (below every pause) or long (past the promise lifetime
%% and every pause).
-define(SHORT_LEASE, 400).
-define(LONG_LEASE, {12000, 20000}).
%% Caller timeouts (per round of the two-phase write).
-define(SHORT_TIMEOUT, 300).
-define(LONG_TIMEOUT, {15000, 30000}).
%% The masters' promise lifetime (locker_server, lockerd).
-define(PROMISE_TTL, 10000).
-define(LONG_PAUSE, {?PROMISE_TTL + 500, 13000}).
%% Safe mode of a restarted master: the longest lease.
-define(ABSTAIN, 20000).
%% Short callers and long callers per BEAM node.
-define(SHORT_CALLERS, 2).
-define(LONG_CALLERS, 2).
%% How far the end of a hold is moved back for the clocks (see check/4).
-define(CLOCK_MARGIN_US, 1000).
%% A run without a single acquisition for this long has lost liveness.
-define(STALL_MS, 120000).

-record(run, {
    %% Name => {Peer | {lockerd, Owner}, Node, OsPid}.
    members :: #{atom() => tuple()},
    %% Names of the coordinator-only nodes (not masters).
    coords :: [atom()],
    bin :: string() | undefined,
    dir :: string(),
    cleanup :: ets:tid(),
    %% Name => monotonic ms (after the restart) of a master's last restart.
    restarted = #{} :: #{atom() => integer()},
    %% Client pid (monitored) => member name.
    clients = #{} :: #{pid() => atom()},
    faults = #{} :: #{term() => pos_integer()},
    %% {FromUs, ToUs, Fault, Name}, host clock.
    timeline = [] :: list(),
    events = [] :: list(),
    acquired = 0 :: non_neg_integer(),
    token_acquired = 0 :: non_neg_integer(),
    last_acquired :: integer(),
    target :: pos_integer(),
    long_total :: non_neg_integer(),
    long_done = 0 :: non_neg_integer(),
    %% The process that changes the membership through locker_membership
    %% (undefined with LOCKER_FAULT_W=1, which fits no change), and the
    %% table where it counts its changes and errors.
    agent :: pid() | undefined,
    changes :: ets:tid() | undefined
}).

all() -> [checker_finds_violations, mutual_exclusion_under_faults, mutual_exclusion_mixed_cluster].

suite() ->
    %% A 10,000-acquisition run with 40 long pauses takes about 10 minutes.
    [{timetrap, {minutes, max(30, target() div 200 + long_pauses())}}].

init_per_suite(Config) ->
    ok = locker_ct:ensure_distributed(),
    Config.

end_per_suite(_Config) ->
    ok.

init_per_testcase(_Case, Config) ->
    [{cleanup, ets:new(fault_cleanup, [public, bag])} | Config].

%% Whatever happened to the case: no node stays stopped or running.
end_per_testcase(_Case, Config) ->
    T = ?config(cleanup, Config),
    [os:cmd("kill -CONT " ++ P ++ "; kill -9 " ++ P) || {os_pid, P} <- ets:lookup(T, os_pid)],
    [catch peer:stop(P) || {peer, P} <- ets:lookup(T, peer)],
    ets:delete(T),
    ok.

target() ->
    list_to_integer(os:getenv("LOCKER_FAULT_ACQUISITIONS", "400")).

long_pauses() ->
    list_to_integer(os:getenv("LOCKER_FAULT_LONG_PAUSES", "3")).

w() ->
    list_to_integer(os:getenv("LOCKER_FAULT_W", "2")).

%% The checker, on made-up histories: each kind of violation is reported,
%% and the coverage counts add up.
checker_finds_violations(_Config) ->
    W = 2,
    Ms = 1000,
    Acq = fun(V, Key, Proof, Lease, T1, T2) -> {acquired, V, Key, Proof, Lease, 300, T1 * Ms, T2 * Ms} end,
    Rel = fun(V, T3) -> {releasing, V, T3 * Ms} end,
    Clean = [
        Acq(a, k1, {token, 10}, 400, 0, 10), Rel(a, 50),
        Acq(b, k1, {token, 20}, 400, 40, 60), Rel(b, 70),
        Acq(c, k1, {votes, 2, 2, 2}, 400, 65, 80), Rel(c, 90),
        %% Succeeded after its own lease ran out: an empty interval.
        Acq(d, k1, {token, 5}, 400, 100, 600), Rel(d, 610),
        Acq(e, k2, {token, 1}, 400, 0, 5)
    ],
    #{violations := [], acquisitions := 5, intervals := 5, valid := 4, empty := 1,
      token_acquisitions := 4, token_ordered := 3, token_comparisons := 1, quorum_checked := 1} =
        check(Clean, 5, 4, W),
    Bad = [
        %% Overlap: f holds [10, 100), g [50, 60), h [70, 80).
        Acq(f, k1, {token, 30}, 400, 0, 10), Rel(f, 100),
        Acq(g, k1, {token, 20}, 400, 40, 50), Rel(g, 60),
        Acq(h, k1, {token, 40}, 400, 65, 70), Rel(h, 80),
        %% Tokens out of order without overlap.
        Acq(i, k2, {token, 9}, 400, 0, 10), Rel(i, 20),
        Acq(j, k2, {token, 8}, 400, 25, 30), Rel(j, 40),
        %% No quorum of commits; a value acquired twice; a stray release.
        Acq(k, k3, {votes, 2, 3, 1}, 400, 0, 10), Rel(k, 20),
        Acq(k, k3, {votes, 2, 3, 3}, 400, 30, 40),
        Rel(nobody, 50)
    ],
    #{violations := V} = check(Bad, 8, 5, W),
    Kinds = lists:sort([element(1, X) || X <- V]),
    ct:log("~p", [V]),
    %% Eight acquisitions happened, the history shows seven: the intervals
    %% and the quorum checks come out one short.
    [coverage, coverage, coverage, duplicate_values, overlap, overlap, release_without_acquisition,
     success_without_quorum, token_order, token_order] = Kinds,
    ok.

mutual_exclusion_under_faults(Config) ->
    run_case([fa, fb, fc], [], [fd], Config).

mutual_exclusion_mixed_cluster(Config) ->
    run_case([fa, fb], [fl], [fd], Config).

run_case(BeamMasters, Lockerds, Coords, Config) ->
    Cleanup = ?config(cleanup, Config),
    Dir = ?config(priv_dir, Config),
    Bin = case Lockerds of [] -> undefined; _ -> lockerd_binary() end,
    Beams = [{Name, start_member(Name, 0, Cleanup)} || Name <- BeamMasters ++ Coords],
    MasterNodes = [N || {Name, {_, N, _}} <- Beams, not lists:member(Name, Coords)],
    LNames = [{Name, unique(Name)} || Name <- Lockerds],
    AllMasters = MasterNodes ++ [lnode(U) || {_, U} <- LNames],
    Ls = [{Name, start_lockerd(U, Bin, Dir, AllMasters, 0, Cleanup)} || {Name, U} <- LNames],
    R0 = #run{
        members = maps:from_list(Beams ++ Ls), coords = Coords, bin = Bin, dir = Dir, cleanup = Cleanup,
        target = target(), long_total = long_pauses(), last_acquired = now_ms()
    },
    [] = set_cluster(R0),
    %% From the original requests to configuration epochs (a fallback to the
    %% original overwrite when lockerd is a master).
    R0b = start_agent(R0),
    R0c = sync_agent(target(R0b)),
    R1 = lists:foldl(fun({Name, {_, Node, _}}, R) -> spawn_clients(Name, Node, R) end, R0c, Beams),
    Clock0 = clock_sample(),
    T0 = os:system_time(microsecond),
    Start = now_ms(),
    R2 = sync_agent(target(run(R1))),
    Elapsed = now_ms() - Start,
    {Quiet, QuietAttempts, R3} = quiet_phase(R2),
    R4 = stop_clients(R3),
    Clock = clock_check(Clock0, clock_sample()),
    Paths = path_counts(R4),
    [stop_member(M, Cleanup) || M <- maps:values(R4#run.members)],
    #run{events = Events, acquired = Acquired, token_acquired = TokenAcquired, faults = Faults} = R4,
    %% The history, for a look after the run: binary_to_term of the file.
    History = filename:join(Dir, lists:concat(["history_", length(Lockerds), "_lockerd.bin"])),
    ok = file:write_file(History, term_to_binary(#{t0 => T0, events => Events, timeline => R4#run.timeline})),
    ct:log("history: ~s", [History]),
    Stats = check(Events, Acquired, TokenAcquired, w()),
    #{violations := Violations0} = Stats,
    Violations = [annotate(V, T0, R4#run.timeline) || V <- Violations0] ++ Quiet ++ Clock,
    Summary = io_lib:format(
        "~b acquisitions (~b with a token, ~b through lock/4; ~b long leases; ~b took over 10 s), ~b failed attempts ~0p; "
        "faults ~0p; membership changes through locker_membership ~0p; intervals checked ~b (~b non-empty checked for overlap, ~b empty: success after the "
        "lease ran out), token holds in order ~b (~b comparisons, ~b token acquisitions with an empty "
        "interval), quorum checks ~b; quiet phase ~b attempts; ~b violations; nemesis ran ~b ms; "
        "coordinator attempts on the BEAM nodes up at the end: ~b in one round, ~b in two phases",
        [Acquired, TokenAcquired, Acquired - TokenAcquired, maps:get(long_leases, Stats), maps:get(slow, Stats),
         length(failed(Events)),
         failures(Events), Faults, changes(R4), maps:get(intervals, Stats), maps:get(valid, Stats), maps:get(empty, Stats),
         maps:get(token_ordered, Stats), maps:get(token_comparisons, Stats), maps:get(token_empty, Stats),
         maps:get(quorum_checked, Stats), QuietAttempts, length(Violations), Elapsed,
         maps:get(one_round, Paths), maps:get(two_phase, Paths)]
    ),
    ct:pal("~s", [Summary]),
    [ct:pal("violation: ~p", [V]) || V <- Violations],
    ct:log("fault timeline (ms from the start, fault, node):~n~p",
           [[{rel(F, T0), rel(To, T0), Fault, Name} || {F, To, Fault, Name} <- lists:reverse(R4#run.timeline)]]),
    [] = Violations,
    true = Acquired >= R4#run.target,
    true = R4#run.long_done =:= R4#run.long_total,
    %% The coordinators took the one-round path (configurations set
    %% through epochs) unless LOCKER_FAULT_ONE_ROUND=false forced two phases.
    true = (maps:get(one_round, Paths) > 0) =:= (one_round() andalso R4#run.agent =/= undefined),
    {comment, lists:flatten(Summary)}.

%% LOCKER_FAULT_ONE_ROUND=false: the nodes' coordinators use the two-phase
%% protocol only (the application environment `one_round').
one_round() ->
    os:getenv("LOCKER_FAULT_ONE_ROUND", "true") =/= "false".

%% Operation attempts in one round and in two phases, summed over the BEAM
%% nodes up now (a node killed during the run took its counts with it).
path_counts(R) ->
    lists:foldl(
        fun(N, #{one_round := O, two_phase := T} = Acc) ->
            case catch rpc:call(N, locker, path_counts, [], 5000) of
                #{one_round := O1, two_phase := T1} -> #{one_round => O + O1, two_phase => T + T1};
                _ -> Acc
            end
        end,
        #{one_round => 0, two_phase => 0},
        beam_nodes(R)
    ).

%%--------------------------------------------------------------------
%% Cluster and clients
%%--------------------------------------------------------------------

%% A BEAM node (master or coordinator) with its locker server; Abstain is
%% its safe-mode window (0 for the first start: nothing was granted yet).
start_member(Name, Abstain, Cleanup) ->
    {Peer, Node} = locker_ct:start_peer(unique(Name), [{restart_abstain_ms, Abstain}, {one_round, one_round()}]),
    OsPid = locker_ct:os_pid(Node),
    ets:insert(Cleanup, [{peer, Peer}, {os_pid, OsPid}]),
    {Peer, Node, OsPid}.

%% (Its OS pid leaves the cleanup table: it may be reused.)
stop_member({{lockerd, Owner}, _Node, OsPid}, Cleanup) ->
    _ = os:cmd("kill -9 " ++ OsPid),
    ets:delete_object(Cleanup, {os_pid, OsPid}),
    exit(Owner, kill);
stop_member({Peer, _Node, OsPid}, Cleanup) ->
    _ = (catch peer:stop(Peer)),
    wait_gone(OsPid),
    ets:delete_object(Cleanup, {os_pid, OsPid}).

%% lockerd, built by scripts/test.sh (or here if missing).
lockerd_binary() ->
    Top = locker_ct:root(),
    Bin = filename:join([os:getenv("CARGO_TARGET_DIR", filename:join(Top, "target")), "release", "lockerd"]),
    case filelib:is_regular(Bin) of
        true -> Bin;
        false ->
            _ = os:cmd("cd " ++ Top ++ " && cargo build --release --quiet -p lockerd"),
            true = filelib:is_regular(Bin),
            Bin
    end.

lnode(Unique) -> list_to_atom(atom_to_list(Unique) ++ "@127.0.0.1").

%% Starts lockerd as a master (safe mode for Abstain ms) and waits for its
%% `lockerd ready' line.
start_lockerd(Unique, Bin, Dir, Masters, Abstain, Cleanup) ->
    Node = lnode(Unique),
    Args = ["--name", atom_to_list(Node), "--cookie", atom_to_list(erlang:get_cookie()),
            "--masters", string:join([atom_to_list(M) || M <- Masters], ","),
            "--restart-abstain-ms", integer_to_list(Abstain), "--announce"],
    Log = filename:join(Dir, atom_to_list(Unique) ++ ".log"),
    Parent = self(),
    Owner = spawn(fun() ->
        {ok, F} = file:open(Log, [append]),
        Port = open_port({spawn_executable, Bin}, [{args, Args}, {line, 4096}, exit_status, stderr_to_stdout, binary]),
        {os_pid, OsPid} = erlang:port_info(Port, os_pid),
        Parent ! {self(), os_pid, OsPid},
        lockerd_owner(Port, F, Parent)
    end),
    OsPid = receive {Owner, os_pid, P} -> integer_to_list(P) after 5000 -> ct:fail(no_os_pid) end,
    ets:insert(Cleanup, {os_pid, OsPid}),
    receive {Owner, ready} -> ok after 15000 -> ct:fail({lockerd_not_ready, Log}) end,
    {{lockerd, Owner}, Node, OsPid}.

lockerd_owner(Port, F, Parent) ->
    receive
        {Port, {data, {eol, <<"lockerd ready ", _/binary>> = Line}}} ->
            ok = file:write(F, [Line, $\n]),
            Parent ! {self(), ready},
            lockerd_owner(Port, F, Parent);
        {Port, {data, {eol, Line}}} ->
            ok = file:write(F, [Line, $\n]),
            lockerd_owner(Port, F, Parent);
        {Port, {data, {noeol, Part}}} ->
            ok = file:write(F, Part),
            lockerd_owner(Port, F, Parent);
        {Port, {exit_status, _}} ->
            file:close(F)
    end.

%% Node names of this suite: its own prefix and the test node's OS pid, so
%% that two runs on one machine never meet in epmd.
unique(Name) ->
    list_to_atom(lists:concat(["lf_", Name, "_", os:getpid(), "_", erlang:unique_integer([positive])])).

masters(#run{members = Members, coords = Coords}) ->
    lists:sort([N || {Name, {_, N, _}} <- maps:to_list(Members), not lists:member(Name, Coords)]).

master_names(#run{members = Members, coords = Coords}) ->
    lists:sort(maps:keys(Members) -- Coords).

beam_names(#run{members = Members}) ->
    lists:sort([Name || {Name, {Peer, _, _}} <- maps:to_list(Members), is_pid(Peer)]).

beam_nodes(#run{members = Members} = R) ->
    [element(2, maps:get(Name, Members)) || Name <- beam_names(R)].

node_of(Name, #run{members = Members}) ->
    element(2, maps:get(Name, Members)).

%% Through the protocol's own requests, which BEAM nodes and lockerd serve:
%% every node (coordinators too) gets the same view of the masters.
%% Replies the nodes that could not be configured.
set_cluster(R) ->
    Masters = masters(R),
    lists:append([configure(N, Masters) || {_, N, _} <- maps:values(R#run.members)]).

configure(Node, Masters) ->
    case {catch gen_server:call({locker, Node}, {set_w, w()}, 2000),
          catch gen_server:call({locker, Node}, {set_nodes, Masters, []}, 2000)} of
        {ok, ok} -> [];
        Other -> [{Node, Other}]
    end.

%% During the run a node that could not be configured (paused, going
%% down) is counted; the quiet phase configures every node again.
reconfigure(R) ->
    case set_cluster(R) of
        [] -> R;
        Failed -> target(count(configure_failed, length(Failed), R))
    end.

%%--------------------------------------------------------------------
%% Membership changes through locker_membership
%%--------------------------------------------------------------------

%% The agent applies the targets it is sent, in order, through
%% locker_membership:change/4 on a BEAM member; a failed change is tried
%% again every 300 ms until it succeeds or a newer target is waiting. A
%% change that waits for the old leases to run out does not hold the
%% nemesis up. The table counts the targets sent and those done: while
%% they differ, no master is killed (a master killed comes back under a
%% new name, i.e. it is replaced: killing another one before the
%% configuration took the replacement would leave fewer than W of the
%% configured masters, for good, which no safe change can undo).
start_agent(R) ->
    case w() >= 2 of
        true ->
            Changes = ets:new(fault_changes, [public]),
            true = ets:insert(Changes, [{longest_change_ms, 0}, {sent, 0}, {done, 0}]),
            W = w(),
            R#run{agent = spawn_link(fun() -> agent(W, Changes) end), changes = Changes};
        false ->
            R
    end.

%% Asks the agent to make the current masters the configuration.
target(#run{agent = undefined} = R) ->
    R;
target(R) ->
    target(R, masters(R)).

target(#run{agent = undefined} = R, _Masters) ->
    R;
target(#run{agent = Agent, changes = T} = R, Masters) ->
    All = lists:sort([N || {_, N, _} <- maps:values(R#run.members)]),
    _ = ets:update_counter(T, sent, 1),
    Agent ! {target, Masters, All, beam_nodes(R)},
    R.

%% Whether every target sent was applied.
settled(#run{agent = undefined}) -> true;
settled(#run{changes = T}) -> ets:lookup_element(T, sent, 2) =:= ets:lookup_element(T, done, 2).

%% Waits (taking the clients' reports) until the agent applied every
%% target sent so far.
sync_agent(#run{agent = undefined} = R) ->
    R;
sync_agent(R) ->
    sync_wait(R, now_ms() + 300000).

sync_wait(R, Deadline) ->
    case settled(R) of
        true -> R;
        false ->
            now_ms() > Deadline andalso ct:fail({membership_agent_stuck, changes(R)}),
            sync_wait(collect(R, 100), Deadline)
    end.

changes(#run{changes = undefined}) -> [];
changes(#run{changes = T}) -> lists:sort([E || {K, _} = E <- ets:tab2list(T), K =/= sent, K =/= done]).

agent(W, Changes) ->
    receive
        {target, Masters, All, Beams} ->
            ok = change(W, Changes, Masters, All, Beams),
            _ = ets:update_counter(Changes, done, 1),
            agent(W, Changes)
    end.

change(W, Changes, Masters, All, Beams) ->
    Node = pick(Beams),
    Start = now_ms(),
    Result = rpc:call(Node, locker_membership, change, [Masters, [], W, #{nodes => All, wait => 60000}], 120000),
    Key =
        case Result of
            ok -> ok;
            {error, {Why, _}} when is_atom(Why) -> {error, Why};
            {error, Why} when is_atom(Why) -> {error, Why};
            {badrpc, Why} -> {badrpc, brief(Why)};
            _ -> other
        end,
    _ = ets:update_counter(Changes, Key, 1, {Key, 0}),
    Took = now_ms() - Start,
    _ = Result =:= ok andalso
        ets:insert(Changes, {longest_change_ms, max(Took, ets:lookup_element(Changes, longest_change_ms, 2))}),
    {message_queue_len, Waiting} = process_info(self(), message_queue_len),
    case Result of
        ok -> ok;
        _ when Waiting > 0 -> ok;
        _ -> receive after 300 -> ok end, change(W, Changes, Masters, All, Beams)
    end.

spawn_clients(Name, Node, R) ->
    Modes = lists:duplicate(?SHORT_CALLERS, short) ++ lists:duplicate(?LONG_CALLERS, long),
    lists:foldl(
        fun({I, Mode}, Acc) ->
            Cfg = #{id => {Name, I, erlang:unique_integer([positive])}, collector => self(), mode => Mode},
            Pid = spawn(Node, ?MODULE, client, [Cfg, 0]),
            _ = erlang:monitor(process, Pid),
            Acc#run{clients = (Acc#run.clients)#{Pid => Name}}
        end,
        R,
        lists:zip(lists:seq(1, length(Modes)), Modes)
    ).

%% One client: lock a random key, hold it, release; report times (host
%% clock, microseconds) to the collector. Stops between attempts when
%% told to (its last report then precedes its exit).
client(#{collector := Collector} = Cfg, N) ->
    receive
        {stop, Collector} -> ok
    after 0 ->
        attempt(Cfg, N),
        client(Cfg, N + 1)
    end.

attempt(#{id := Id, collector := Collector, mode := Mode}, N) ->
    Key = lists:nth(rand:uniform(length(?KEYS)), ?KEYS),
    Value = {Id, N},
    Lease = case rand:uniform(2) of 1 -> ?SHORT_LEASE; 2 -> uniform(?LONG_LEASE) end,
    Timeout = case Mode of short -> ?SHORT_TIMEOUT; long -> uniform(?LONG_TIMEOUT) end,
    T1 = os:system_time(microsecond),
    %% Every other attempt through lock/4, whose reply shows the votes.
    Reply =
        try
            case N rem 2 of
                0 -> locker:lock_with_token(Key, Value, Lease, Timeout);
                1 -> locker:lock(Key, Value, Lease, Timeout)
            end
        catch
            Class:Reason:Stack -> {caught, Class, Reason, top(Stack)}
        end,
    case Reply of
        {ok, Token} ->
            held(Collector, Key, Value, {token, Token}, Lease, Timeout, T1);
        {ok, W, Votes, Commits} ->
            held(Collector, Key, Value, {votes, W, Votes, Commits}, Lease, Timeout, T1);
        Error ->
            Collector ! {failed, Value, failure(Error), Lease, Timeout, T1, os:system_time(microsecond)},
            receive after uniform({10, 100}) -> ok end
    end.

held(Collector, Key, Value, Proof, Lease, Timeout, T1) ->
    T2 = os:system_time(microsecond),
    Collector ! {acquired, Value, Key, Proof, Lease, Timeout, T1, T2},
    receive after hold_ms(Lease) -> ok end,
    T3 = os:system_time(microsecond),
    Collector ! {releasing, Value, T3},
    %% (A release waiting 30 s for a stopped master would keep the key
    %% from everyone meanwhile.)
    _ = (catch locker:release(Key, Value, ?SHORT_TIMEOUT)).

hold_ms(?SHORT_LEASE) ->
    rand:uniform(30);
hold_ms(_Long) ->
    case rand:uniform(20) of
        1 -> uniform({500, 2500});
        _ -> rand:uniform(30)
    end.

top([{M, F, A, _} | _]) when is_integer(A) -> {M, F, A};
top([{M, F, Args, _} | _]) when is_list(Args) -> {M, F, length(Args)};
top(_) -> unknown.

failure({error, no_quorum}) -> no_quorum;
failure({caught, Class, Reason, Where}) -> {Class, brief(Reason), Where};
failure(Other) -> {other, brief(Other)}.

brief(A) when is_atom(A) -> A;
brief(T) when is_tuple(T), tuple_size(T) > 0, is_atom(element(1, T)) -> element(1, T);
brief(_) -> term.

uniform({Lo, Hi}) -> Lo - 1 + rand:uniform(Hi - Lo + 1).

now_ms() -> erlang:monotonic_time(millisecond).

%%--------------------------------------------------------------------
%% Collector
%%--------------------------------------------------------------------

%% Takes one report (or a client's exit) into the run.
note({acquired, _, _, Proof, _, _, _, _} = E, R) ->
    Tokens = case Proof of {token, _} -> 1; _ -> 0 end,
    R#run{events = [E | R#run.events], acquired = R#run.acquired + 1,
          token_acquired = R#run.token_acquired + Tokens, last_acquired = now_ms()};
note({releasing, _, _} = E, R) ->
    R#run{events = [E | R#run.events]};
note({failed, _, _, _, _, _, _} = E, R) ->
    R#run{events = [E | R#run.events]};
note({'DOWN', _, process, Pid, _}, R) ->
    R#run{clients = maps:remove(Pid, R#run.clients)}.

%% Gathers reports for Ms milliseconds.
collect(R, Ms) ->
    collect_until(R, now_ms() + Ms).

collect_until(R, Deadline) ->
    receive
        Msg when element(1, Msg) =:= acquired; element(1, Msg) =:= releasing; element(1, Msg) =:= failed;
                 element(1, Msg) =:= 'DOWN' ->
            collect_until(note(Msg, R), Deadline)
    after max(0, Deadline - now_ms()) ->
        R
    end.

%% Tells every client to stop and takes their reports until each has
%% exited (a client's reports come before its exit signal).
stop_clients(R) ->
    [Pid ! {stop, self()} || Pid <- maps:keys(R#run.clients)],
    wait_stopped(R, now_ms() + 120000).

wait_stopped(#run{clients = C} = R, _Deadline) when map_size(C) =:= 0 ->
    R;
wait_stopped(R, Deadline) ->
    receive
        Msg when element(1, Msg) =:= acquired; element(1, Msg) =:= releasing; element(1, Msg) =:= failed;
                 element(1, Msg) =:= 'DOWN' ->
            wait_stopped(note(Msg, R), Deadline)
    after max(0, Deadline - now_ms()) ->
        ct:fail({clients_did_not_stop, R#run.clients})
    end.

count(Fault, R) -> count(Fault, 1, R).

count(Fault, N, R) ->
    R#run{faults = maps:update_with(Fault, fun(C) -> C + N end, N, R#run.faults)}.

%% Runs Fun(R) -> R as fault Fault on Name, in the timeline and counts.
fault(Fault, Name, Fun, R) ->
    From = os:system_time(microsecond),
    R1 = Fun(R),
    To = os:system_time(microsecond),
    count(Fault, R1#run{timeline = [{From, To, Fault, Name} | R1#run.timeline]}).

%%--------------------------------------------------------------------
%% Nemesis
%%--------------------------------------------------------------------

run(#run{acquired = A, target = T, long_done = D, long_total = D} = R) when A >= T ->
    R;
run(#run{acquired = A, target = T, long_done = D, long_total = L} = R) ->
    now_ms() - R#run.last_acquired > ?STALL_MS andalso ct:fail({no_acquisition_for_ms, ?STALL_MS, R#run.faults}),
    case D < L andalso A >= (D + 1) * T div (L + 1) of
        true ->
            run(long_pause(R));
        false ->
            R1 = collect(R, uniform({150, 450})),
            Fault = lists:nth(rand:uniform(6), [kill, pause, disconnect, membership, server_kill, partition]),
            run(inject(Fault, R1))
    end.

inject(kill, R) ->
    case kill_candidates(R) of
        [] -> inject(pause, R);
        Names -> kill_member(pick(Names), R)
    end;
inject(pause, R) ->
    Name = pick(maps:keys(R#run.members)),
    {_, _, OsPid} = maps:get(Name, R#run.members),
    fault(pause, Name, fun(R0) -> stopped(OsPid, ?SHORT_LEASE + 100 + rand:uniform(400), R0) end, R);
inject(disconnect, R) ->
    A = pick(beam_nodes(R)),
    B = pick([N || {_, N, _} <- maps:values(R#run.members), N =/= A]),
    fault(disconnect, A, fun(R0) -> _ = rpc:call(A, erlang, disconnect_node, [B], 5000), R0 end, R);
inject(membership, #run{agent = Agent} = R) when is_pid(Agent) ->
    %% Through locker_membership: drop one master (W = 2 of the two left),
    %% then restore it; the agent applies both in turn while the nemesis
    %% goes on. The original requests, tried too, change nothing on nodes
    %% configured through epochs.
    Name = pick(master_names(R)),
    Rest = masters(R) -- [node_of(Name, R)],
    fault(membership, Name, fun(R0) ->
        _ = [catch gen_server:call({locker, N}, {set_nodes, Rest, []}, 2000) || N <- beam_nodes(R0)],
        R1 = target(R0, Rest),
        reconfigure(collect(R1, 100 + rand:uniform(200)))
    end, R);
inject(membership, R) ->
    %% Drop one master from every view (W = 2 of the two left), then
    %% restore it.
    Name = pick(master_names(R)),
    Rest = masters(R) -- [node_of(Name, R)],
    fault(membership, Name, fun(R0) ->
        [catch gen_server:call({locker, N}, {set_nodes, Rest, []}, 2000) || {_, N, _} <- maps:values(R0#run.members)],
        reconfigure(collect(R0, 100 + rand:uniform(200)))
    end, R);
inject(partition, R) ->
    %% One node cut from every other member for 0.5-1.5 s: its connections
    %% are dropped again every 50 ms on both sides (the test node stays
    %% connected to drive it).
    Name = pick(maps:keys(R#run.members)),
    Victim = node_of(Name, R),
    Others = [N || {_, N, _} <- maps:values(R#run.members), N =/= Victim],
    Beams = beam_nodes(R),
    fault(partition, Name, fun(R0) -> cut(Victim, Others, Beams, now_ms() + uniform({500, 1500}), R0) end, R);
inject(server_kill, R) ->
    Name = pick(beam_masters(R)),
    fault(server_kill, Name, fun(R0) -> restart_server(Name, R0) end, R).

beam_masters(R) ->
    beam_names(R) -- R#run.coords.

cut(Victim, Others, Beams, Until, R) ->
    case now_ms() < Until of
        true ->
            _ = [rpc:call(N, erlang, disconnect_node, [Victim], 1000) || N <- Others, lists:member(N, Beams)],
            _ = lists:member(Victim, Beams) andalso
                [rpc:call(Victim, erlang, disconnect_node, [N], 1000) || N <- Others],
            cut(Victim, Others, Beams, Until, collect(R, 50));
        false ->
            R
    end.

%% A master may be killed only while no other master is in safe mode
%% (else no quorum could vote on a free key for up to 20 s), and while the
%% membership agent has applied every change it was sent (see
%% start_agent/1); the coordinator node any time.
kill_candidates(R) ->
    Now = now_ms(),
    InSafeMode = [N || {N, T} <- maps:to_list(R#run.restarted), Now < T + ?ABSTAIN + 500],
    Masters = [M || M <- master_names(R), InSafeMode -- [M] =:= [], settled(R)],
    R#run.coords ++ Masters.

kill_member(Name, R) ->
    fault(kill, Name, fun(R0) -> kill_and_restart(Name, R0) end, R).

kill_and_restart(Name, R) ->
    #run{members = Members, cleanup = Cleanup} = R,
    {Peer, _Node, OsPid} = Member = maps:get(Name, Members),
    _ = os:cmd("kill -9 " ++ OsPid),
    %% (The test node sees a BEAM node go; lockerd is hidden.)
    wait_gone(OsPid),
    stop_member(Member, Cleanup),
    IsMaster = not lists:member(Name, R#run.coords),
    New =
        case Peer of
            {lockerd, _} ->
                U = unique(Name),
                Masters = masters(R) -- [element(2, Member)],
                start_lockerd(U, R#run.bin, R#run.dir, lists:sort([lnode(U) | Masters]), ?ABSTAIN, Cleanup);
            _ ->
                start_member(Name, ?ABSTAIN, Cleanup)
        end,
    R1 = R#run{members = Members#{Name := New}},
    R2 = case IsMaster of
        true -> R1#run{restarted = (R1#run.restarted)#{Name => now_ms()}};
        false -> R1
    end,
    R3 = reconfigure(R2),
    case New of
        {P, NewNode, _} when is_pid(P) -> spawn_clients(Name, NewNode, R3);
        _ -> R3
    end.

%% SIGSTOP for Ms milliseconds (reports are gathered meanwhile).
stopped(OsPid, Ms, R) ->
    _ = os:cmd("kill -STOP " ++ OsPid),
    R1 = collect(R, Ms),
    _ = os:cmd("kill -CONT " ++ OsPid),
    R1.

%% Kills the locker server of a BEAM node and starts a new one at once
%% (as its supervisor would), configured like the others.
restart_server(Name, R) ->
    Node = node_of(Name, R),
    case rpc:call(Node, erlang, whereis, [locker], 5000) of
        Pid when is_pid(Pid) -> true = rpc:call(Node, erlang, exit, [Pid, kill], 5000);
        _ -> ok
    end,
    R1 = start_server(Node, R, 100),
    case configure(Node, masters(R1)) of
        [] -> R1;
        _ -> count(configure_failed, R1)
    end.

%% The old server's name and tables go with it: retry until they did.
start_server(Node, R, 0) ->
    ct:fail({cannot_restart_server, Node, rpc:call(Node, erlang, whereis, [locker])}),
    R;
start_server(Node, R, Tries) ->
    case locker_ct:start_server(Node, [2, 1000, 1000, 100]) of
        {ok, _} -> R;
        _ -> start_server(Node, collect(R, 10), Tries - 1)
    end.

%% Stopped past the promise lifetime, in turn: a master and, 0.3-2 s
%% later (while coordinators wait for that master's vote), the
%% coordinator node; a master alone (with its own coordinators); the
%% coordinator node alone. Each is stopped for 10.5-13 s, and meanwhile
%% the servers of the BEAM masters not stopped are killed and restarted
%% every 0.5-3 s.
long_pause(#run{long_done = D} = R) ->
    Kind = lists:nth(D rem 3 + 1, [long_pause_master_and_coordinator, long_pause_master, long_pause_coordinator]),
    Stops =
        case Kind of
            long_pause_master -> [{pick(master_names(R)), 0}];
            long_pause_coordinator -> [{pick(R#run.coords), 0}];
            long_pause_master_and_coordinator -> [{pick(master_names(R)), 0}, {pick(R#run.coords), uniform({300, 2000})}]
        end,
    Start = now_ms(),
    Plan = lists:sort(lists:append([
        [{Start + Off, stop, Name}, {Start + Off + uniform(?LONG_PAUSE), cont, Name}] || {Name, Off} <- Stops
    ])),
    R1 = follow(Plan, [Name || {Name, _} <- Stops], #{}, R),
    count(Kind, R1#run{long_done = D + 1}).

follow([], _Victims, _Stopped, R) ->
    R;
follow([{At, Action, Name} | Rest], Victims, Stopped, R) ->
    R1 = storm(Victims, At, R),
    {_, _, OsPid} = maps:get(Name, R1#run.members),
    Now = os:system_time(microsecond),
    case Action of
        stop ->
            _ = os:cmd("kill -STOP " ++ OsPid),
            follow(Rest, Victims, Stopped#{Name => Now}, R1);
        cont ->
            _ = os:cmd("kill -CONT " ++ OsPid),
            Entry = {maps:get(Name, Stopped), os:system_time(microsecond), long_pause, Name},
            follow(Rest, Victims, Stopped, R1#run{timeline = [Entry | R1#run.timeline]})
    end.

%% Until Deadline: gathers reports, and kills and restarts the server of
%% a BEAM master not stopped every 0.5-3 s.
storm(Victims, Deadline, R) ->
    R1 = collect(R, min(uniform({500, 3000}), max(0, Deadline - now_ms()))),
    case now_ms() < Deadline of
        true ->
            Name = pick(beam_masters(R1) -- Victims),
            storm(Victims, Deadline, fault(server_kill_in_long_pause, Name, fun(R0) -> restart_server(Name, R0) end, R1));
        false ->
            R1
    end.

%% The nemesis has stopped (every paused node was continued, every
%% membership change undone): configure every node again, wait until
%% every restarted master is out of safe mode (a protocol duration, not a
%% guess), and let one client per BEAM node lock and release a fresh key
%% 20 times. The clients keep running on the three keys. Without
%% contention on these keys and without faults, every attempt must
%% succeed: an `{error, no_quorum}' here would have no reason.
quiet_phase(R) ->
    [pong = net_adm:ping(N) || N <- beam_nodes(R)],
    Now = now_ms(),
    SafeUntil = lists:max([Now | [T + ?ABSTAIN + 200 || T <- maps:values(R#run.restarted)]]),
    R1 = collect(R, SafeUntil - Now),
    Unconfigured = [{quiet_phase_configure_failed, F} || F <- set_cluster(R1)],
    Rounds = 20,
    Parent = self(),
    Nodes = beam_nodes(R1),
    Pids = [
        spawn_link(fun() ->
            Parent ! {quiet, self(), rpc:call(N, ?MODULE, quiet_client, [{quiet_key, N}, ?SHORT_LEASE, Rounds], 120000)}
        end)
     || N <- Nodes
    ],
    {Failures, R2} = quiet_wait(Pids, [], R1),
    {Unconfigured ++ Failures, Rounds * length(Nodes), R2}.

quiet_wait([], Acc, R) ->
    {Acc, R};
quiet_wait([P | Rest], Acc, R) ->
    receive
        {quiet, P, Failures} when is_list(Failures) -> quiet_wait(Rest, Acc ++ Failures, R);
        {quiet, P, Bad} -> quiet_wait(Rest, Acc ++ [{quiet_client_crashed, Bad}], R);
        Msg when element(1, Msg) =:= acquired; element(1, Msg) =:= releasing; element(1, Msg) =:= failed;
                 element(1, Msg) =:= 'DOWN' ->
            quiet_wait([P | Rest], Acc, note(Msg, R))
    end.

%% The quiet phase on one node: Rounds lock/release cycles on a key nobody
%% else uses; replies the list of non-successes, each with the rounds of
%% the two-phase write as the coordinator saw them (traced) and what the
%% masters hold for the key.
quiet_client(Key, Lease, Rounds) ->
    Tracer = spawn_link(fun() -> round_tracer([]) end),
    1 = erlang:trace_pattern({locker_call, round, 4}, [{'_', [], [{return_trace}]}], [local]),
    1 = erlang:trace(self(), true, [call, {tracer, Tracer}]),
    Failures = lists:append([quiet_attempt(Key, Lease, I, Tracer) || I <- lists:seq(1, Rounds)]),
    _ = erlang:trace(self(), false, [call]),
    unlink(Tracer),
    exit(Tracer, kill),
    Failures.

quiet_attempt(Key, Lease, I, Tracer) ->
    Value = {quiet, I},
    Result = (catch locker:lock(Key, Value, Lease, 2000)),
    Trace = round_trace(Tracer),
    case Result of
        {ok, W, Votes, Commits} when Votes >= W, Commits >= W ->
            _ = (catch locker:release(Key, Value, 2000)),
            _ = round_trace(Tracer),
            [];
        Other ->
            Meta = (catch locker:get_meta()),
            Masters = case Meta of {Ms, _, _} when is_list(Ms) -> Ms; _ -> [] end,
            Held = [{M, catch promises_and_leases(M, Key)} || M <- Masters],
            [{quiet_attempt_failed, node(), Key, I, Other, #{
                rounds => Trace,
                meta => Meta,
                connected => lists:sort(nodes(connected)),
                locker_down => (catch ets:tab2list(locker_down)),
                held => Held
            }}]
    end.

promises_and_leases(Master, Key) ->
    {ok, Promises, Leases, _, _, _} = gen_server:call({locker, Master}, get_debug_state, 2000),
    {[P || P <- Promises, element(1, P) =:= Key], [L || L <- Leases, element(1, L) =:= Key]}.

%% Keeps the traced rounds (request, replies, nodes missing) until asked.
round_tracer(Acc) ->
    receive
        {trace, _, call, {locker_call, round, [_S, _Nodes, Request, _Timeout]}} ->
            round_tracer([{request, Request} | Acc]);
        {trace, _, return_from, {locker_call, round, 4}, {Replies, Bad, _S}} ->
            round_tracer([{replies, lists:sort(Replies), lists:sort(Bad)} | Acc]);
        {take, From} ->
            From ! {rounds, self(), lists:reverse(Acc)},
            round_tracer([]);
        _ ->
            round_tracer(Acc)
    end.

%% Once trace_delivered answers, every trace message of this process so
%% far is in the tracer's mailbox.
round_trace(Tracer) ->
    Ref = erlang:trace_delivered(self()),
    receive {trace_delivered, _, Ref} -> ok end,
    Tracer ! {take, self()},
    receive {rounds, Tracer, Rounds} -> Rounds after 5000 -> tracer_lost end.

%% Waits until the OS process is gone.
wait_gone(OsPid) ->
    case os:cmd("kill -0 " ++ OsPid ++ " 2>/dev/null && echo alive") of
        "alive" ++ _ -> erlang:yield(), wait_gone(OsPid);
        _ -> ok
    end.

pick(L) ->
    lists:nth(rand:uniform(length(L)), lists:sort(L)).

%%--------------------------------------------------------------------
%% Clock
%%--------------------------------------------------------------------

%% The checker compares instants read by clients with os:system_time
%% (CLOCK_REALTIME) to leases the masters time with CLOCK_MONOTONIC, on
%% one kernel: both advance at the same rate (same frequency correction),
%% unless the wall clock is stepped. A sample pairs the wall clock with
%% the boot clock (/proc/uptime, 10 ms steps), which is never stepped.
clock_sample() ->
    case file:read_file("/proc/uptime") of
        {ok, Bin} ->
            [Up | _] = string:split(Bin, " "),
            {os:system_time(millisecond), round(binary_to_float(Up) * 1000)};
        _ ->
            none
    end.

%% A violation if the wall clock moved by more than 50 ms against the boot
%% clock during the run (the checker's intervals would not be the masters').
clock_check(none, _) ->
    [];
clock_check({Wall0, Up0}, {Wall1, Up1}) ->
    Step = (Wall1 - Wall0) - (Up1 - Up0),
    ct:log("wall clock against the boot clock over the run: ~b ms", [Step]),
    case abs(Step) > 50 of
        true -> [{clock_stepped_ms, Step}];
        false -> []
    end.

%%--------------------------------------------------------------------
%% Checker
%%--------------------------------------------------------------------

%% Checks a history: Acquired and TokenAcquired are the successful
%% acquisitions (and those with a token) the collector counted as they
%% came; every one of them must be checked.
%%
%% A hold is what its client may act on: from the moment `lock' returned
%% (T2; the masters stored the lease before, so this is the latest start,
%% which only helps the holder) to the earliest of the moment it called
%% `release' (T3) and its expiry counted as the client must count it,
%% from before it sent phase one: T1 + lease. The masters count the lease
%% from their write, after T1, on CLOCK_MONOTONIC, which runs at the rate
%% of the clients' clock (one kernel; clock_check/2 verifies the wall
%% clock was not stepped), so no margin is needed for drift; the end is
%% moved back by 1 ms only for clock reads at microsecond resolution. A
%% hold whose end is not after its start (`lock' returned after the lease
%% ran out by the client's count) is empty: the client holds nothing, and
%% the moment its write was committed is not known, so it has no place in
%% the order; such holds are counted apart.
%%
%% Violations: two non-empty holds of different values on one key that
%% overlap; fencing tokens that do not increase along the non-empty holds
%% of a key in the order they started (acquisition order); a `lock/4'
%% success without W votes and W commits; a value acquired twice (values
%% are unique); a release of a value never acquired; and any count of
%% what was checked that differs from what happened.
check(Events, Acquired, TokenAcquired, W) ->
    Acqs = [E || {acquired, _, _, _, _, _, _, _} = E <- Events],
    Values = [V || {acquired, V, _, _, _, _, _, _} <- Acqs],
    Dups = length(Values) - length(lists:usort(Values)),
    Acquisitions = maps:from_list([{V, true} || V <- Values]),
    Releases = maps:from_list([{V, T3} || {releasing, V, T3} <- Events]),
    Stray = [{release_without_acquisition, V} || V <- maps:keys(Releases), not maps:is_key(V, Acquisitions)],
    Holds = [hold(E, Releases) || E <- Acqs],
    {Valid, Empty} = lists:partition(fun(#{start := S, 'end' := E}) -> S < E end, Holds),
    NoQuorum = [
        {success_without_quorum, V, Proof}
     || #{proof := {votes, W1, Votes, Commits} = Proof, value := V} <- Holds,
        W1 =/= W orelse Votes < W orelse Commits < W
    ],
    QuorumChecked = length([x || #{proof := {votes, _, _, _}} <- Holds]),
    ByKey = maps:groups_from_list(fun(#{key := K}) -> K end, Valid),
    PerKey = [check_key(Key, KeyHolds) || {Key, KeyHolds} <- lists:sort(maps:to_list(ByKey))],
    Overlaps = lists:append([O || {O, _, _, _, _} <- PerKey]),
    Tokens = lists:append([T || {_, T, _, _, _} <- PerKey]),
    OverlapChecked = lists:sum([C || {_, _, C, _, _} <- PerKey]),
    TokenOrdered = lists:sum([C || {_, _, _, C, _} <- PerKey]),
    TokenComparisons = lists:sum([C || {_, _, _, _, C} <- PerKey]),
    TokenHolds = length([x || #{proof := {token, _}} <- Holds]),
    TokenEmpty = length([x || #{proof := {token, _}} <- Empty]),
    KeysWithTokens = length([x || {_, _, _, C, _} <- PerKey, C > 0]),
    Coverage = [
        {coverage, What, Happened, Checked}
     || {What, Happened, Checked} <- [
            {intervals, Acquired, length(Holds)},
            {intervals_classified, Acquired, length(Valid) + length(Empty)},
            {overlap_checked, length(Valid), OverlapChecked},
            {token_acquisitions, TokenAcquired, TokenHolds},
            {token_ordered, TokenAcquired - TokenEmpty, TokenOrdered},
            {token_comparisons, TokenOrdered - KeysWithTokens, TokenComparisons},
            {quorum_checked, Acquired - TokenAcquired, QuorumChecked}
        ],
        Happened =/= Checked
    ],
    Violations =
        [{duplicate_values, Dups} || Dups > 0] ++ Stray ++ NoQuorum ++ Overlaps ++ Tokens ++ Coverage,
    #{
        violations => Violations,
        acquisitions => length(Acqs),
        intervals => length(Holds),
        valid => length(Valid),
        empty => length(Empty),
        long_leases => length([x || #{lease := L} <- Holds, L > ?SHORT_LEASE]),
        %% `lock' returned more than a promise lifetime after it began.
        slow => length([x || #{t1 := T1, start := S} <- Holds, S - T1 > ?PROMISE_TTL * 1000]),
        token_acquisitions => TokenHolds,
        token_ordered => TokenOrdered,
        token_comparisons => TokenComparisons,
        token_empty => TokenEmpty,
        quorum_checked => QuorumChecked
    }.

hold({acquired, V, Key, Proof, Lease, Timeout, T1, T2}, Releases) ->
    Released = maps:get(V, Releases, undefined),
    Expiry = T1 + Lease * 1000 - ?CLOCK_MARGIN_US,
    #{key => Key, value => V, proof => Proof, lease => Lease, timeout => Timeout, t1 => T1, start => T2,
      released => Released, 'end' => min(Expiry, case Released of undefined -> Expiry; T3 -> T3 end)}.

%% {OverlapViolations, TokenViolations, HoldsCheckedForOverlap,
%%  TokenHoldsInOrder, TokenComparisons} for one key's non-empty holds.
check_key(Key, Holds) ->
    Sorted = lists:sort(fun(#{start := A}, #{start := B}) -> A =< B end, Holds),
    {Overlaps, Checked} = overlaps(Key, Sorted, [], [], 0),
    TokenHolds = [H || #{proof := {token, _}} = H <- Sorted],
    {TokenViolations, Comparisons} = tokens(Key, TokenHolds, [], 0),
    {Overlaps, TokenViolations, Checked, length(TokenHolds), Comparisons}.

%% Each hold against every earlier one still running when it started.
overlaps(_Key, [], _Active, Acc, Checked) ->
    {lists:reverse(Acc), Checked};
overlaps(Key, [#{start := S, value := V} = H | Rest], Active0, Acc, Checked) ->
    Active = [A || #{'end' := E} = A <- Active0, E > S],
    New = [{overlap, Key, (E - S) div 1000, A, H} || #{'end' := E, value := VA} = A <- Active, VA =/= V],
    overlaps(Key, Rest, [H | Active], lists:reverse(New) ++ Acc, Checked + 1).

%% Fencing tokens increase along the holds in the order they started.
tokens(Key, [A, B | Rest], Acc, N) ->
    #{proof := {token, TA}} = A,
    #{proof := {token, TB}} = B,
    case TB > TA of
        true -> tokens(Key, [B | Rest], Acc, N + 1);
        false -> tokens(Key, [B | Rest], [{token_order, Key, A, B} | Acc], N + 1)
    end;
tokens(_Key, _, Acc, N) ->
    {lists:reverse(Acc), N}.

failed(Events) ->
    [E || {failed, _, _, _, _, _, _} = E <- Events].

%% How the failed attempts failed.
failures(Events) ->
    lists:foldl(fun({failed, _, R, _, _, _, _}, M) -> maps:update_with(R, fun(C) -> C + 1 end, 1, M) end, #{}, failed(Events)).

%% A violation with its times in ms from the start of the run and the
%% faults under way from one second before the first of its acquisitions
%% began to the last moment it concerns.
annotate({overlap, Key, Ms, A, B}, T0, Timeline) ->
    {overlap, Key, #{overlap_ms => Ms, first => readable(A, T0), second => readable(B, T0),
                     faults => active(A, B, T0, Timeline)}};
annotate({token_order, Key, A, B}, T0, Timeline) ->
    {token_order, Key, #{earlier => readable(A, T0), later => readable(B, T0), faults => active(A, B, T0, Timeline)}};
annotate(V, _T0, _Timeline) ->
    V.

readable(#{t1 := T1, start := S, 'end' := E, released := Rel} = H, T0) ->
    H#{t1 := rel(T1, T0), start := rel(S, T0), 'end' := rel(E, T0),
       released := case Rel of undefined -> never; _ -> rel(Rel, T0) end}.

active(#{t1 := A1, 'end' := AE}, #{t1 := B1, 'end' := BE}, T0, Timeline) ->
    From = min(A1, B1) - 1000000,
    To = max(AE, BE),
    [{rel(F, T0), rel(T, T0), Fault, Name} || {F, T, Fault, Name} <- lists:reverse(Timeline), T >= From, F =< To].

rel(T, T0) -> (T - T0) div 1000.
