%% Helpers shared by the Common Test suites: a distributed test node and
%% `locker' peers on loopback.
-module(locker_ct).

-export([ensure_distributed/0, start_peer/2, start_server/2, os_pid/1, code_paths/0, flood_unknown/3]).
-export([pause_timers/1, pause_timers/2, check_timer_controls/1]).
-export([init_cleanup/1, cleanup/1, start_bare_peer/2]).
-export([unique/1, root/0, lockerd_binaries/0, start_os/3, await_line/3, stop_os/1, kill9/1, dist_port/1,
         creation/1]).
-export([count_acquisitions/1, collect_acquisitions/3, stop_clients/2]).
-export([stall_server/1, resume_server/1]).

%% Makes the test node distributed (longnames on 127.0.0.1), starting
%% epmd if needed.
-spec ensure_distributed() -> ok.
ensure_distributed() ->
    case node() of
        nonode@nohost ->
            _ = os:cmd("epmd -daemon"),
            %% Fault tests cut single connections on purpose; OTP 25's
            %% global would turn each into a wider partition.
            application:set_env(kernel, prevent_overlapping_partitions, false),
            Name = list_to_atom("locker_ct_" ++ os:getpid() ++ "@127.0.0.1"),
            {ok, _} = net_kernel:start([Name, longnames]),
            erlang:set_cookie(node(), locker_test),
            ok;
        _ ->
            ok
    end.

%% Adds to a case's Config a table of what its end must stop, under
%% `cleanup': `{peer, Peer}' (peer:stop/1), `{os, Started}' (a process of
%% {@link start_os/3}, stopped), `{os_pid, OsPidString}' (kill -CONT, then
%% kill -9: it may be stopped). Call from init_per_testcase.
-spec init_cleanup(list()) -> list().
init_cleanup(Config) ->
    [{cleanup, ets:new(locker_ct_cleanup, [public, bag])} | Config].

%% Stops what the case's cleanup table lists, whatever happened to the
%% case: no node stays stopped or running. Call from end_per_testcase.
-spec cleanup(list()) -> ok.
cleanup(Config) ->
    T = proplists:get_value(cleanup, Config),
    [os:cmd("kill -CONT " ++ P ++ "; kill -9 " ++ P) || {os_pid, P} <- ets:lookup(T, os_pid)],
    [catch stop_os(O) || {os, O} <- ets:lookup(T, os)],
    [catch peer:stop(P) || {peer, P} <- ets:lookup(T, peer)],
    ets:delete(T),
    ok.

%% Holds time still on `Node''s locker server (a BEAM node or lockerd): its
%% periodic tasks (lease and promise sweeps, log push) stop until resumed
%% and run by hand (the `expire_leases', `expire_locks', `push_trans_log'
%% messages), as the original suite did by cancelling its timers. Waiters
%% are still answered on time.
-spec pause_timers(node()) -> ok.
pause_timers(Node) ->
    pause_timers(Node, all).

%% {@link pause_timers/1} for some of the tasks only.
-spec pause_timers(node(), all | [expire_leases | expire_locks | push_trans_log]) -> ok.
pause_timers(Node, Which) ->
    ok = gen_server:call({locker, Node}, {'$locker_debug', {pause_timers, Which}}, 10000).

%% Checks the `{'$locker_debug', _}' timer controls of `Node''s server (the
%% BEAM server and lockerd answer alike), and leaves every task running.
%% `get_debug_state''s three timer slots say how long until each periodic
%% task is due (ms), or `paused'.
-spec check_timer_controls(node()) -> ok.
check_timer_controls(Node) ->
    Call = fun(R) -> gen_server:call({locker, Node}, R, 10000) end,
    ok = pause_timers(Node),
    {ok, _, _, paused, paused, paused} = Call(get_debug_state),
    ok = Call({'$locker_debug', {resume_timers, [push_trans_log]}}),
    {ok, _, _, paused, paused, Push} = Call(get_debug_state),
    true = is_integer(Push) andalso Push >= 0,
    ok = Call({'$locker_debug', {pause_timers, [push_trans_log, expire_locks]}}),
    {ok, _, _, paused, paused, paused} = Call(get_debug_state),
    {error, badarg} = Call({'$locker_debug', {pause_timers, [nope]}}),
    {error, badarg} = Call({'$locker_debug', {resume_timers, not_a_list}}),
    {error, {unknown_request, {'$locker_debug', nope}}} = Call({'$locker_debug', nope}),
    ok = Call({'$locker_debug', resume_timers}),
    {ok, _, _, T1, T2, T3} = Call(get_debug_state),
    true = lists:all(fun(T) -> is_integer(T) andalso T >= 0 end, [T1, T2, T3]),
    ok.

%% The code paths a peer needs: the locker application and the suites.
-spec code_paths() -> [string()].
code_paths() ->
    lists:usort([filename:dirname(code:which(locker)), filename:dirname(code:which(?MODULE))]).

%% Starts an unlinked peer named `Name'@127.0.0.1 with the locker code, an
%% optional list of `{Key, Value}' locker application env entries, and its
%% `locker' server (W = 2, default intervals).
-spec start_peer(atom(), [{atom(), term()}]) -> {pid(), node()}.
start_peer(Name, Env) ->
    {Peer, Node} = start_bare_peer(Name, []),
    [ok = rpc:call(Node, application, set_env, [locker, K, V]) || {K, V} <- Env],
    {ok, _} = start_server(Node, [2, 1000, 1000, 100]),
    {Peer, Node}.

%% Starts an unlinked peer named `Name'@127.0.0.1 (a name with a host
%% part: the host is dropped) with the locker code and the application
%% loaded, nothing started, and `ExtraArgs' on its command line.
-spec start_bare_peer(atom(), [string()]) -> {pid(), node()}.
start_bare_peer(Name0, ExtraArgs) ->
    Name = list_to_atom(hd(string:split(atom_to_list(Name0), "@"))),
    Args = ["-setcookie", atom_to_list(erlang:get_cookie()),
            "-kernel", "prevent_overlapping_partitions", "false"] ++ ExtraArgs ++
        lists:append([["-pa", P] || P <- code_paths()]),
    {ok, Peer, Node} = peer:start(#{name => Name, host => "127.0.0.1", longnames => true, args => Args}),
    ok = rpc:call(Node, application, load, [locker]),
    {Peer, Node}.

%% locker:start_link/1 through rpc would link the server to the
%% short-lived rpc process (which exits with the call's result in OTP 25);
%% start it unlinked, as a supervisor would own it.
-spec start_server(node(), [pos_integer()]) -> {ok, pid()} | {error, term()}.
start_server(Node, Args) ->
    rpc:call(Node, gen_server, start, [{local, locker}, locker_server, Args, []]).

%% The OS process id of a node.
-spec os_pid(node()) -> string().
os_pid(Node) ->
    rpc:call(Node, os, getpid, []).

%% Sends `{locker, Node}' (a BEAM node or lockerd) the unknown calls
%% (1 KB each), casts and plain messages numbered From..To, with names in
%% them that look like atoms-to-be ("no_such_I", as strings and binaries),
%% and waits up to 60 s until every call is answered
%% `{error, {unknown_request, _}}'. Returns ok, or how many replies are
%% missing.
-spec flood_unknown(node(), pos_integer(), pos_integer()) -> ok | {replies_missing, pos_integer()}.
flood_unknown(Node, From, To) ->
    Self = self(),
    Sink = spawn_link(fun() -> count_replies(Self, To - From + 1) end),
    lists:foreach(
        fun(I) ->
            Name = "no_such_" ++ integer_to_list(I),
            Req = {no_such_request, list_to_binary(Name), <<I:64, 0:8000>>},
            {locker, Node} ! {'$gen_call', {Sink, make_ref()}, Req},
            gen_server:cast({locker, Node}, {no_such_cast, Name}),
            {locker, Node} ! {no_such_message, Name}
        end,
        lists:seq(From, To)
    ),
    receive
        {Sink, done} -> ok
    after 60000 ->
        Sink ! {left, self()},
        receive {Sink, left, Left} -> {replies_missing, Left} end
    end.

%% Counts the unknown_request replies down; tells Parent when all came.
count_replies(Parent, 0) ->
    Parent ! {self(), done};
count_replies(Parent, N) ->
    receive
        {_Ref, {error, {unknown_request, {no_such_request, _, _}}}} -> count_replies(Parent, N - 1);
        {left, From} -> From ! {self(), left, N}
    end.

%% A name made unique on this machine for this run: `Prefix_N'.
-spec unique(string()) -> string().
unique(Prefix) ->
    Prefix ++ "_" ++ integer_to_list(erlang:unique_integer([positive])).

%% The project root: the first directory above this module's source (or
%% the current directory) that holds native/lockerd/Cargo.toml.
-spec root() -> file:filename().
root() ->
    Source = proplists:get_value(source, ?MODULE:module_info(compile)),
    {ok, Cwd} = file:get_cwd(),
    case [D || Start <- [filename:dirname(Source), Cwd], D <- ancestors(Start),
               filelib:is_regular(filename:join(D, "native/lockerd/Cargo.toml"))] of
        [Root | _] -> Root;
        [] -> ct:fail({no_project_root, Source, Cwd})
    end.

ancestors("/") -> ["/"];
ancestors(D) -> [D | ancestors(filename:dirname(D))].

%% Builds lockerd and its examples (incremental, so the binaries match the
%% sources) and returns their paths, in cargo's target directory
%% ($CARGO_TARGET_DIR, relative to the root, or target/).
-spec lockerd_binaries() -> #{lockerd := file:filename(), registry_owner := file:filename()}.
lockerd_binaries() ->
    Root = root(),
    Cmd = "cd " ++ Root ++ " && cargo build --release --quiet -p lockerd --bins --examples 2>&1; echo \"exit=$?\"",
    Out = os:cmd(Cmd),
    ct:log("~s~n~s", [Cmd, Out]),
    Target = filename:absname(os:getenv("CARGO_TARGET_DIR", "target"), Root),
    Bins = #{lockerd => filename:join(Target, "release/lockerd"),
             registry_owner => filename:join(Target, "release/examples/registry_owner")},
    case lists:all(fun filelib:is_regular/1, maps:values(Bins)) of
        true -> Bins;
        false -> ct:fail({cannot_build_lockerd, Out})
    end.

%% Starts an OS process (lockerd, or one of its examples) owned by a
%% process that appends its output to Log, and waits for its first
%% `lockerd ready Port Creation' or `registered Name Pid' line. Returns
%% `#{owner, os_pid, ready, log}'; fails the case if it exits first or is
%% not ready within 15 s.
-spec start_os(file:filename(), [string()], file:filename()) -> map().
start_os(Bin, Args, Log) ->
    Parent = self(),
    Owner = spawn(fun() ->
        {ok, F} = file:open(Log, [append]),
        Port = open_port({spawn_executable, Bin}, [{args, Args}, {line, 16384}, exit_status, stderr_to_stdout, binary]),
        {os_pid, OsPid} = erlang:port_info(Port, os_pid),
        Parent ! {self(), os_pid, OsPid},
        owner(Port, F, Parent, [])
    end),
    OsPid = receive {Owner, os_pid, P} -> P after 5000 -> ct:fail(no_os_pid) end,
    Ready = receive
        {Owner, ready, Line} -> Line;
        {Owner, exited, S} -> ct:fail({exited_at_start, Bin, S, file:read_file(Log)})
    after 15000 -> ct:fail({not_ready, Bin, file:read_file(Log)})
    end,
    ct:log("started ~s (OS pid ~p, log ~s)", [Bin, OsPid, Log]),
    #{owner => Owner, os_pid => OsPid, ready => Ready, log => Log}.

owner(Port, F, Parent, Waiters) ->
    receive
        {Port, {data, {eol, Line}}} ->
            ok = file:write(F, [Line, $\n]),
            Matched = [W || {line, Sub, W} <- Waiters, binary:match(Line, Sub) =/= nomatch],
            [W ! {self(), line, Line} || W <- Matched],
            Waiters1 = [X || X <- Waiters, not (is_tuple(X) andalso lists:member(element(3, X), Matched))],
            case Line of
                <<"lockerd ready ", _/binary>> -> Parent ! {self(), ready, Line};
                <<"registered ", _/binary>> -> Parent ! {self(), ready, Line};
                <<"released ", _/binary>> -> Parent ! {self(), released, Line};
                _ -> ok
            end,
            owner(Port, F, Parent, Waiters1);
        {Port, {data, {noeol, Part}}} ->
            ok = file:write(F, Part),
            owner(Port, F, Parent, Waiters);
        {Port, {exit_status, S}} ->
            ok = file:write(F, io_lib:format("exit_status ~p~n", [S])),
            ok = file:close(F),
            [W ! {self(), exited, S} || W <- [Parent | Waiters], is_pid(W)],
            ok;
        {wait, W} ->
            owner(Port, F, Parent, [W | Waiters]);
        {wait_line, Sub, W} ->
            owner(Port, F, Parent, [{line, Sub, W} | Waiters])
    end.

%% Waits for a line of the process's output that contains Sub (from now on).
-spec await_line(map(), binary(), timeout()) -> binary().
await_line(#{owner := Owner}, Sub, Timeout) ->
    Owner ! {wait_line, Sub, self()},
    receive {Owner, line, Line} -> Line
    after Timeout -> ct:fail({no_line, Sub})
    end.

%% kill -TERM and wait for the exit status (kill -9 after 10 s).
-spec stop_os(map()) -> gone | timeout | integer().
stop_os(#{owner := Owner, os_pid := OsPid}) ->
    case is_process_alive(Owner) of
        false ->
            gone;
        true ->
            Owner ! {wait, self()},
            _ = os:cmd("kill -TERM " ++ integer_to_list(OsPid)),
            receive {Owner, exited, S} -> S after 10000 -> _ = os:cmd("kill -9 " ++ integer_to_list(OsPid)), timeout end
    end.

%% kill -9 and wait for the exit status.
-spec kill9(map()) -> integer().
kill9(#{owner := Owner, os_pid := OsPid}) ->
    Owner ! {wait, self()},
    _ = os:cmd("kill -9 " ++ integer_to_list(OsPid)),
    receive {Owner, exited, S} -> S after 10000 -> ct:fail(not_killed) end.

%% The distribution port and the creation from a `lockerd ready Port
%% Creation' line.
-spec dist_port(map()) -> inet:port_number().
dist_port(#{ready := Line}) ->
    [<<"lockerd">>, <<"ready">>, Port | _] = binary:split(Line, <<" ">>, [global]),
    binary_to_integer(Port).

-spec creation(map()) -> non_neg_integer().
creation(#{ready := Line}) ->
    [<<"lockerd">>, <<"ready">>, _Port, Creation | _] = binary:split(Line, <<" ">>, [global]),
    binary_to_integer(Creation).

%% Contending clients (the fault suite's checker's events): each client
%% reports `{acquired, Value, Key, {token, Token}, Lease, Timeout, T1, T2}'
%% and `{releasing, Value, T}' to the collecting process, and answers
%% `{stop, Collector}' with `{counted, self(), AcquisitionsMade}'.

%% How many acquisitions a history (the reports taken so far) holds.
-spec count_acquisitions([tuple()]) -> non_neg_integer().
count_acquisitions(History) ->
    length([x || {acquired, _, _, _, _, _, _, _} <- History]).

%% Takes reports (newest first onto History) until Want more acquisitions
%% came than the Seen it held; fails the case if none comes for 60 s.
-spec collect_acquisitions([tuple()], non_neg_integer(), non_neg_integer()) -> [tuple()].
collect_acquisitions(History, Seen, Want) ->
    case count_acquisitions(History) >= Seen + Want of
        true ->
            History;
        false ->
            receive
                {acquired, _, _, _, _, _, _, _} = E -> collect_acquisitions([E | History], Seen, Want);
                {releasing, _, _} = E -> collect_acquisitions([E | History], Seen, Want)
            after 60000 ->
                ct:fail({no_acquisitions, count_acquisitions(History) - Seen, Want})
            end
    end.

%% Stops the clients and takes their last reports: `{Events, Counted}',
%% the whole history oldest first and the acquisitions the clients say
%% they made. Fails the case if a client (monitored by the caller) dies
%% or they do not all stop within 60 s.
-spec stop_clients([pid()], [tuple()]) -> {[tuple()], non_neg_integer()}.
stop_clients(Clients, History) ->
    [P ! {stop, self()} || P <- Clients],
    drain(Clients, History, 0).

drain([], History, Counted) ->
    {lists:reverse(History), Counted};
drain(Clients, History, Counted) ->
    receive
        {acquired, _, _, _, _, _, _, _} = E -> drain(Clients, [E | History], Counted);
        {releasing, _, _} = E -> drain(Clients, [E | History], Counted);
        {counted, Pid, N} -> drain(Clients -- [Pid], History, Counted + N);
        {'DOWN', _, process, Pid, Why} when Why =/= normal -> ct:fail({client_died, Pid, Why})
    after 60000 ->
        ct:fail({clients_did_not_stop, Clients})
    end.

%% Suspends Node's `locker' server from a process on Node that keeps it
%% suspended until {@link resume_server/1} (a suspension ends with its
%% suspender); returns that process. Fails the case if it does not
%% report within 10 s.
-spec stall_server(node()) -> pid().
stall_server(Node) ->
    Self = self(),
    Pid = spawn(Node, fun() ->
        true = erlang:suspend_process(whereis(locker)),
        Self ! {stalled, self()},
        receive
            resume -> true = erlang:resume_process(whereis(locker)), Self ! {resumed, self()}
        end
    end),
    receive
        {stalled, Pid} -> Pid
    after 10000 -> ct:fail({not_stalled, Node})
    end.

%% Resumes a server {@link stall_server/1} suspended.
-spec resume_server(pid()) -> ok.
resume_server(Pid) ->
    Pid ! resume,
    receive
        {resumed, Pid} -> ok
    after 10000 -> ct:fail({not_resumed, Pid})
    end.
