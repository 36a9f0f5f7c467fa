%% Mutual exclusion and fencing under faults (a small Jepsen-style run).
%%
%% Clients on three masters (W = 2) contend for a few keys with
%% `locker:lock_with_token/4', hold briefly and release, recording times
%% from the host's clock (all nodes share one kernel clock: it is the
%% single observer). Meanwhile a nemesis kills nodes with `kill -9' and
%% restarts them empty (in safe mode), pauses them with SIGSTOP past the
%% lease length, cuts connections with `erlang:disconnect_node/1', and
%% changes the membership with `set_nodes'. The checker then verifies, per
%% key, that no two holders' valid intervals overlap (a holder's interval
%% is [lock returned, min(release called, lock called + lease)]), that
%% fencing tokens increase along those intervals, and that every `lock/4'
%% success (half the attempts use it) carries a quorum of votes and of
%% commits. After the nemesis stops and the cluster heals, a quiet phase
%% checks that `{error, no_quorum}' is never given without a reason: each
%% BEAM master locks and releases a fresh key of its own, uncontended, and
%% every attempt must succeed.
%%
%% The second case runs the same with `lockerd' (the Rust node) as the
%% third master, killed, paused and restarted like the others; clients run
%% on the two BEAM masters.
%%
%% LOCKER_FAULT_ACQUISITIONS sets how many successful acquisitions to
%% reach (default 400, the CI's short mode; 10000 for a long run).
%% LOCKER_FAULT_W=1 runs with a quorum of one, which must make the checker
%% report violations (a check of the checker).
-module(locker_fault_SUITE).

-include_lib("common_test/include/ct.hrl").

-export([all/0, init_per_suite/1, end_per_suite/1]).
-export([mutual_exclusion_under_faults/1, mutual_exclusion_mixed_cluster/1]).
%% Run on the peers.
-export([client/5, quiet_client/3]).

-define(LEASE, 400).
-define(KEYS, [k1, k2, k3]).
-define(CLIENTS_PER_NODE, 2).
-define(NAMES, [fa, fb, fc]).

all() -> [mutual_exclusion_under_faults, mutual_exclusion_mixed_cluster].

init_per_suite(Config) ->
    ok = locker_ct:ensure_distributed(),
    Config.

end_per_suite(_Config) ->
    ok.

target() ->
    list_to_integer(os:getenv("LOCKER_FAULT_ACQUISITIONS", "400")).

env() ->
    %% Safe mode: a master that restarts empty abstains on unknown keys for
    %% longer than any lease.
    [{restart_abstain_ms, 2 * ?LEASE}].

mutual_exclusion_under_faults(_Config) ->
    run_case(?NAMES, []).

mutual_exclusion_mixed_cluster(Config) ->
    Bin = lockerd_binary(),
    run_case([fa, fb], [{fl, Bin, ?config(priv_dir, Config)}]).

run_case(BeamNames, Lockerds) ->
    Target = target(),
    Collector = self(),
    Beams = [{Name, start_member(Name)} || Name <- BeamNames],
    Masters = [N || {_, {_, N, _}} <- Beams],
    LNames = [{Name, unique(Name)} || {Name, _, _} <- Lockerds],
    AllMasters = Masters ++ [lnode(U) || {_, U} <- LNames],
    Ls = [{Name, start_lockerd(U, Bin, Dir, AllMasters)} || {{Name, Bin, Dir}, {Name, U}} <- lists:zip(Lockerds, LNames)],
    Members = maps:from_list(Beams ++ Ls),
    set_cluster(Members),
    [spawn_clients(Name, Node, Collector) || {Name, {_, Node, _}} <- Beams],
    Start = erlang:monotonic_time(millisecond),
    {Members1, Faults, Events} = run(Members, Target, #{}, [], 0),
    Elapsed = erlang:monotonic_time(millisecond) - Start,
    Quiet = quiet_phase(Members1),
    [stop_member(M) || M <- maps:values(Members1)],
    Events1 = drain(Events),
    {Acquisitions, Violations0, Failures} = check(Events1),
    Violations = Violations0 ++ Quiet,
    Summary = io_lib:format(
        "~b acquisitions, ~b failed attempts ~p, faults ~p, ~b violations in ~b ms",
        [Acquisitions, Failures, failures(Events1), Faults, length(Violations), Elapsed]
    ),
    ct:log("~s~nviolations: ~p", [Summary, Violations]),
    [] = Violations,
    true = Acquisitions >= Target,
    true = maps:size(Faults) >= 1,
    {comment, lists:flatten(Summary)}.

%%--------------------------------------------------------------------
%% Cluster and clients
%%--------------------------------------------------------------------

start_member(Name) ->
    {Peer, Node} = locker_ct:start_peer(unique(Name), env()),
    {Peer, Node, locker_ct:os_pid(Node)}.

stop_member({{lockerd, Owner}, _Node, OsPid}) ->
    _ = os:cmd("kill -9 " ++ OsPid),
    exit(Owner, kill);
stop_member({Peer, _Node, _OsPid}) ->
    catch peer:stop(Peer).

%% lockerd, built by scripts/test.sh (or here if missing).
lockerd_binary() ->
    Root = filename:dirname(filename:dirname(code:which(locker))),
    Top = find_root(Root),
    Bin = filename:join([os:getenv("CARGO_TARGET_DIR", filename:join(Top, "target")), "release", "lockerd"]),
    case filelib:is_regular(Bin) of
        true -> Bin;
        false ->
            _ = os:cmd("cd " ++ Top ++ " && cargo build --release --quiet -p lockerd"),
            true = filelib:is_regular(Bin),
            Bin
    end.

%% The repository root: the first ancestor holding Cargo.toml.
find_root("/") -> ct:fail(no_repository_root);
find_root(Dir) ->
    case filelib:is_regular(filename:join(Dir, "Cargo.toml")) of
        true -> Dir;
        false -> find_root(filename:dirname(Dir))
    end.

lnode(Unique) -> list_to_atom(atom_to_list(Unique) ++ "@127.0.0.1").

%% Starts lockerd as a master (safe mode like the BEAM masters) and waits
%% for its `lockerd ready' line.
start_lockerd(Unique, Bin, Dir, Masters) ->
    Node = lnode(Unique),
    Args = ["--name", atom_to_list(Node), "--cookie", atom_to_list(erlang:get_cookie()),
            "--masters", string:join([atom_to_list(M) || M <- Masters], ","),
            "--restart-abstain-ms", integer_to_list(2 * ?LEASE), "--announce"],
    Log = filename:join(Dir, atom_to_list(Unique) ++ ".log"),
    Parent = self(),
    Owner = spawn(fun() ->
        {ok, F} = file:open(Log, [append]),
        Port = open_port({spawn_executable, Bin}, [{args, Args}, {line, 4096}, exit_status, stderr_to_stdout, binary]),
        {os_pid, OsPid} = erlang:port_info(Port, os_pid),
        Parent ! {self(), os_pid, OsPid},
        lockerd_owner(Port, F, Parent)
    end),
    OsPid = receive {Owner, os_pid, P} -> P after 5000 -> ct:fail(no_os_pid) end,
    receive {Owner, ready} -> ok after 15000 -> ct:fail({lockerd_not_ready, Log}) end,
    {{lockerd, Owner}, Node, integer_to_list(OsPid)}.

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

unique(Name) ->
    list_to_atom(atom_to_list(Name) ++ "_" ++ integer_to_list(erlang:unique_integer([positive]))).

%% Through the protocol's own requests, which BEAM nodes and lockerd serve.
set_cluster(Members) ->
    Nodes = lists:sort([N || {_, N, _} <- maps:values(Members)]),
    W = list_to_integer(os:getenv("LOCKER_FAULT_W", "2")),
    [catch gen_server:call({locker, N}, {set_w, W}, 2000) || N <- Nodes],
    [catch gen_server:call({locker, N}, {set_nodes, Nodes, []}, 2000) || N <- Nodes],
    ok.

beam_nodes(Members) ->
    [N || {Peer, N, _} <- maps:values(Members), is_pid(Peer)].

spawn_clients(Name, Node, Collector) ->
    [spawn(Node, ?MODULE, client, [{Name, I}, Collector, ?KEYS, ?LEASE, 0]) || I <- lists:seq(1, ?CLIENTS_PER_NODE)].

%% One client: lock a random key, hold it briefly, release; report times
%% (host clock, microseconds) to the collector.
client(Id, Collector, Keys, Lease, N) ->
    Key = lists:nth(rand:uniform(length(Keys)), Keys),
    Value = {Id, N},
    T1 = os:system_time(microsecond),
    %% Every other attempt through lock/4, whose reply shows the votes.
    Reply =
        case N rem 2 of
            0 -> catch locker:lock_with_token(Key, Value, Lease, 300);
            1 -> catch locker:lock(Key, Value, Lease, 300)
        end,
    case Reply of
        {ok, Token} ->
            held(Collector, Key, Value, {token, Token}, T1);
        {ok, W, Votes, Commits} ->
            held(Collector, Key, Value, {votes, W, Votes, Commits}, T1);
        Error ->
            Collector ! {failed, Value, failure(Error)},
            receive after rand:uniform(20) -> ok end
    end,
    client(Id, Collector, Keys, Lease, N + 1).

held(Collector, Key, Value, Proof, T1) ->
    T2 = os:system_time(microsecond),
    Collector ! {acquired, Value, Key, Proof, T1, T2},
    receive after rand:uniform(30) -> ok end,
    T3 = os:system_time(microsecond),
    Collector ! {releasing, Value, T3},
    _ = catch locker:release(Key, Value, 300).

failure({error, no_quorum}) -> no_quorum;
failure({'EXIT', _}) -> exit;
failure(_) -> other.

%% The quiet phase: Rounds lock/release cycles on a key nobody else uses,
%% with no fault running; replies the list of non-successes.
quiet_client(Key, Lease, Rounds) ->
    lists:append([
        begin
            Value = {quiet, I},
            case catch locker:lock(Key, Value, Lease, 2000) of
                {ok, W, Votes, Commits} when Votes >= W, Commits >= W ->
                    {ok, _, _, _} = locker:release(Key, Value, 2000),
                    [];
                Other ->
                    [{quiet_attempt_failed, Key, I, Other}]
            end
        end
     || I <- lists:seq(1, Rounds)
    ]).

%%--------------------------------------------------------------------
%% Nemesis
%%--------------------------------------------------------------------

run(Members, Target, Faults, Events, Acquired) when Acquired >= Target ->
    {Members, Faults, Events};
run(Members, Target, Faults, Events, Acquired) ->
    {Events1, Acquired1} = collect(Events, Acquired, 150 + rand:uniform(300)),
    Fault = lists:nth(rand:uniform(4), [kill, pause, disconnect, membership]),
    Members1 = inject(Fault, Members),
    run(Members1, Target, maps:update_with(Fault, fun(C) -> C + 1 end, 1, Faults), Events1, Acquired1).

%% Gathers client reports for `Ms' milliseconds.
collect(Events, Acquired, Ms) ->
    Deadline = erlang:monotonic_time(millisecond) + Ms,
    collect_until(Events, Acquired, Deadline).

collect_until(Events, Acquired, Deadline) ->
    Left = max(0, Deadline - erlang:monotonic_time(millisecond)),
    receive
        {acquired, _, _, _, _, _} = E -> collect_until([E | Events], Acquired + 1, Deadline);
        {releasing, _, _} = E -> collect_until([E | Events], Acquired, Deadline);
        {failed, _, _} = E -> collect_until([E | Events], Acquired, Deadline)
    after Left ->
        {Events, Acquired}
    end.

drain(Events) ->
    receive
        {acquired, _, _, _, _, _} = E -> drain([E | Events]);
        {releasing, _, _} = E -> drain([E | Events]);
        {failed, _, _} = E -> drain([E | Events])
    after 500 -> Events
    end.

inject(kill, Members) ->
    Name = pick(Members),
    {Peer, Node, OsPid} = Member = maps:get(Name, Members),
    _ = os:cmd("kill -9 " ++ OsPid),
    %% (The test node sees a BEAM node go; lockerd is hidden.)
    wait_gone(OsPid),
    stop_member(Member),
    case Peer of
        {lockerd, _} ->
            Others = [N || {K, {_, N, _}} <- maps:to_list(Members), K =/= Name],
            U = unique(Name),
            New = start_lockerd(U, lockerd_binary(), "/tmp", Others ++ [lnode(U)]),
            Members1 = Members#{Name := New},
            set_cluster(Members1),
            Members1;
        _ ->
            _ = Node,
            {_, NewNode, _} = New = start_member(Name),
            Members1 = Members#{Name := New},
            set_cluster(Members1),
            spawn_clients(Name, NewNode, self()),
            Members1
    end;
inject(pause, Members) ->
    {_, _, OsPid} = maps:get(pick(Members), Members),
    _ = os:cmd("kill -STOP " ++ OsPid),
    %% The nemesis's own clock is the point here: past the lease length.
    receive after ?LEASE + 100 + rand:uniform(200) -> ok end,
    _ = os:cmd("kill -CONT " ++ OsPid),
    Members;
inject(disconnect, Members) ->
    [A | _] = shuffle(beam_nodes(Members)),
    [B | _] = shuffle([N || {_, N, _} <- maps:values(Members), N =/= A]),
    _ = rpc:call(A, erlang, disconnect_node, [B]),
    Members;
inject(membership, Members) ->
    %% Drop one master (W = 2 of the two left), then restore it.
    Name = pick(Members),
    Rest = lists:sort([N || {K, {_, N, _}} <- maps:to_list(Members), K =/= Name]),
    All = lists:sort([N || {_, N, _} <- maps:values(Members)]),
    [catch gen_server:call({locker, N}, {set_nodes, Rest, []}, 2000) || N <- All],
    receive after 100 + rand:uniform(200) -> ok end,
    set_cluster(Members),
    Members.

%% The nemesis has stopped (every paused node was continued, every
%% membership change undone): heal the membership, wait out the safe-mode
%% window of the last restart (a protocol duration, not a guess), and let
%% one client per BEAM master lock and release a fresh key 20 times.
%% Without contention and without faults, every attempt must succeed: an
%% `{error, no_quorum}' here would have no reason.
quiet_phase(Members) ->
    [pong = net_adm:ping(N) || N <- beam_nodes(Members)],
    set_cluster(Members),
    receive after 2 * ?LEASE + 100 -> ok end,
    Parent = self(),
    Pids = [
        spawn_link(fun() ->
            Parent ! {quiet, self(), rpc:call(N, ?MODULE, quiet_client, [{quiet_key, N}, ?LEASE, 20], 60000)}
        end)
     || N <- beam_nodes(Members)
    ],
    lists:append([receive {quiet, P, R} when is_list(R) -> R; {quiet, P, Bad} -> [{quiet_client_crashed, Bad}] end || P <- Pids]).

%% Waits until the OS process is gone.
wait_gone(OsPid) ->
    case os:cmd("kill -0 " ++ OsPid ++ " 2>/dev/null && echo alive") of
        "alive" ++ _ -> erlang:yield(), wait_gone(OsPid);
        _ -> ok
    end.

pick(Members) ->
    lists:nth(rand:uniform(maps:size(Members)), lists:sort(maps:keys(Members))).

shuffle(L) ->
    [X || {_, X} <- lists:sort([{rand:uniform(), X} || X <- L])].

%%--------------------------------------------------------------------
%% Checker
%%--------------------------------------------------------------------

%% Returns {Acquisitions, Violations, FailedAttempts}.
check(Events) ->
    Releases = maps:from_list([{V, T3} || {releasing, V, T3} <- Events]),
    Holds = [
        {Key, T2, min(maps:get(V, Releases, infinity), T1 + ?LEASE * 1000), Proof, V}
     || {acquired, V, Key, Proof, T1, T2} <- Events
    ],
    W = list_to_integer(os:getenv("LOCKER_FAULT_W", "2")),
    NoQuorum = [
        {success_without_quorum, V, Proof}
     || {_, _, _, {votes, W1, Votes, Commits} = Proof, V} <- Holds,
        W1 =/= W orelse Votes < W orelse Commits < W
    ],
    Violations = NoQuorum ++ lists:append([check_key(Key, [H || {K, _, _, _, _} = H <- Holds, K =:= Key]) || Key <- ?KEYS]),
    {length(Holds), Violations, length([x || {failed, _, _} <- Events])}.

%% How the failed attempts failed.
failures(Events) ->
    lists:foldl(fun({failed, _, R}, M) -> maps:update_with(R, fun(C) -> C + 1 end, 1, M); (_, M) -> M end, #{}, Events).

check_key(_Key, Holds) ->
    %% Only holders whose interval is not empty could act on the resource.
    Valid = lists:keysort(2, [H || {_, Start, End, _, _} = H <- Holds, Start < End]),
    overlaps(Valid, []) ++ tokens([H || {_, _, _, {token, _}, _} = H <- Valid], []).

overlaps([A, B | Rest], Acc) ->
    {Key, _StartA, EndA, _, VA} = A,
    {Key, StartB, _EndB, _, VB} = B,
    case StartB < EndA of
        true -> overlaps([B | Rest], [{overlap, Key, VA, VB} | Acc]);
        false -> overlaps([B | Rest], Acc)
    end;
overlaps(_, Acc) ->
    lists:reverse(Acc).

%% Fencing tokens increase along the valid intervals of token holders.
tokens([A, B | Rest], Acc) ->
    {Key, _, _, {token, TokenA}, VA} = A,
    {Key, _, _, {token, TokenB}, VB} = B,
    case TokenB > TokenA of
        true -> tokens([B | Rest], Acc);
        false -> tokens([B | Rest], [{token_order, Key, {VA, TokenA}, {VB, TokenB}} | Acc])
    end;
tokens(_, Acc) ->
    lists:reverse(Acc).
