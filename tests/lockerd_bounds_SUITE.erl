%% Links and monitors that BEAM processes hold on lockerd's `locker'
%% process, against lockerd's caps (set low here): what a real BEAM peer
%% sees when a link or monitor is refused (an exit signal or a DOWN with
%% `noproc', as for a process that is gone), that a repeated link is one
%% link, and that lockerd drops what the node held when it disconnects.
%% The test node itself is lockerd's peer; lockerd's node names start with
%% `bndct'. The sizes and memory are measured by native/lockerd/tests/bounds.rs.
-module(lockerd_bounds_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, suite/0, init_per_suite/1, end_per_suite/1, init_per_testcase/2, end_per_testcase/2]).
-export([links_past_the_cap_get_noproc/1, monitors_past_the_cap_get_noproc/1]).

all() ->
    [links_past_the_cap_get_noproc, monitors_past_the_cap_get_noproc].

suite() ->
    [{timetrap, {seconds, 60}}].

init_per_suite(Config) ->
    ok = locker_ct:ensure_distributed(),
    #{lockerd := Bin} = locker_ct:lockerd_binaries(),
    [{lockerd, Bin} | Config].

end_per_suite(_Config) ->
    ok.

init_per_testcase(_Case, Config) ->
    Config.

end_per_testcase(_Case, Config) ->
    case get(lockerd) of
        #{os_pid := OsPid} -> os:cmd("kill -9 " ++ integer_to_list(OsPid));
        _ -> ok
    end,
    Config.

%% Starts lockerd (a master of its own) with Args and a metrics endpoint;
%% returns its node, the pid of its `locker' process and a scraper. It is
%% killed at the end of the case.
lockerd(Config, Args) ->
    {ok, LSock} = gen_tcp:listen(0, [{ip, {127, 0, 0, 1}}]),
    {ok, MPort} = inet:port(LSock),
    gen_tcp:close(LSock),
    NodeS = "bndct_" ++ integer_to_list(erlang:unique_integer([positive])) ++ "@127.0.0.1",
    Log = filename:join(?config(priv_dir, Config), NodeS ++ ".log"),
    All = ["--name", NodeS, "--cookie", atom_to_list(erlang:get_cookie()), "--masters", NodeS,
           "--announce", "--log", "info", "--metrics", "127.0.0.1:" ++ integer_to_list(MPort) | Args],
    LD = locker_ct:start_os(?config(lockerd, Config), All, Log),
    #{os_pid := OsPid} = LD,
    put(lockerd, #{os_pid => OsPid}),
    Creation = locker_ct:creation(LD),
    Node = list_to_atom(NodeS),
    %% lockerd starts net_kernel, then locker: locker is its second pid.
    Name = list_to_binary(NodeS),
    Locker = binary_to_term(<<131, 88, 119, (byte_size(Name)), Name/binary, 2:32, 0:32, Creation:32>>),
    pong = net_adm:ping(Node),
    Metric = fun(M) -> metric(MPort, M) end,
    {Node, Locker, Metric}.

metric(MPort, Name) ->
    {ok, S} = gen_tcp:connect("127.0.0.1", MPort, [binary, {active, false}]),
    ok = gen_tcp:send(S, <<"GET /metrics HTTP/1.0\r\n\r\n">>),
    Text = recv_all(S, <<>>),
    {match, [V]} = re:run(Text, ["\n", Name, " ([0-9]+)\n"], [{capture, all_but_first, binary}]),
    binary_to_integer(V).

recv_all(S, Acc) ->
    case gen_tcp:recv(S, 0, 5000) of
        {ok, B} -> recv_all(S, <<Acc/binary, B/binary>>);
        {error, closed} -> Acc
    end.

%% Waits until the metric is Want (it follows a disconnection, which
%% lockerd handles on its own time).
await_metric(Metric, Name, Want) -> await_metric(Metric, Name, Want, 500).
await_metric(Metric, Name, Want, 0) -> ct:fail({metric, Name, Metric(Name), Want});
await_metric(Metric, Name, Want, N) ->
    case Metric(Name) of
        Want -> ok;
        _ -> timer:sleep(10), await_metric(Metric, Name, Want, N - 1)
    end.

%% Returns once lockerd has handled every signal sent to it from this node
%% so far, and everything it sent back before has arrived: a monitor of a
%% name nobody has is answered at once, in order with the rest.
sync(Node) ->
    M = erlang:monitor(process, {bounds_barrier, Node}),
    receive {'DOWN', M, process, _, noproc} -> ok
    after 10000 -> ct:fail(no_barrier)
    end.

%% A process trapping exits that links to Locker on request and reports
%% what came of it.
linker(Node, Locker) ->
    Parent = self(),
    spawn(fun() ->
        process_flag(trap_exit, true),
        linker_loop(Parent, Node, Locker)
    end).

linker_loop(Parent, Node, Locker) ->
    receive
        {Parent, Op} ->
            case Op of
                link -> true = link(Locker);
                unlink -> true = unlink(Locker);
                wait -> ok
            end,
            sync(Node),
            Got = receive {'EXIT', Locker, Reason} -> {exit, Reason} after 0 -> none end,
            {links, Links} = process_info(self(), links),
            Parent ! {self(), Got, lists:member(Locker, Links)},
            linker_loop(Parent, Node, Locker)
    end.

ask(Linker, Op) ->
    Linker ! {self(), Op},
    receive {Linker, Got, Linked} -> {Got, Linked}
    after 15000 -> ct:fail({no_answer, Op})
    end.

%% Two links per node on one process: the third is refused with an exit
%% signal `noproc' (the BEAM side drops its half of the link); a repeated
%% link is the same link; an unlink frees its place; a disconnection
%% drops the node's links in lockerd.
links_past_the_cap_get_noproc(Config) ->
    {Node, Locker, Metric} = lockerd(Config, ["--max-peer-links", "2"]),
    [A, B, C] = [linker(Node, Locker) || _ <- [1, 2, 3]],
    {none, true} = ask(A, link),
    {none, true} = ask(B, link),
    {none, true} = ask(A, link),
    2 = Metric("locker_remote_links"),
    {{exit, noproc}, false} = ask(C, link),
    2 = Metric("locker_remote_links"),
    1 = Metric("locker_refused_links_total"),
    {none, false} = ask(A, unlink),
    1 = Metric("locker_remote_links"),
    {none, true} = ask(C, link),
    2 = Metric("locker_remote_links"),
    %% The node goes: both sides drop the links.
    true = erlang:disconnect_node(Node),
    {{exit, noconnection}, false} = ask(B, wait),
    {{exit, noconnection}, false} = ask(C, wait),
    await_metric(Metric, "locker_remote_links", 0),
    ok.

%% Two monitors per node on one process: a third is answered DOWN
%% `noproc', and so is a gen_server:call made while the cap is full (its
%% monitor is refused); a demonitor frees a place; a disconnection drops
%% the node's monitors in lockerd.
monitors_past_the_cap_get_noproc(Config) ->
    {Node, _Locker, Metric} = lockerd(Config, ["--max-peer-monitors", "2"]),
    Target = {locker, Node},
    M1 = erlang:monitor(process, Target),
    M2 = erlang:monitor(process, Target),
    sync(Node),
    2 = Metric("locker_remote_monitors"),
    M3 = erlang:monitor(process, Target),
    receive {'DOWN', M3, process, Target, noproc} -> ok
    after 10000 -> ct:fail(no_down)
    end,
    {'EXIT', {noproc, _}} = (catch gen_server:call(Target, get_debug_state, 10000)),
    2 = Metric("locker_refused_monitors_total"),
    [receive {'DOWN', M, _, _, R} -> ct:fail({down, M, R}) after 0 -> ok end || M <- [M1, M2]],
    true = erlang:demonitor(M1),
    sync(Node),
    1 = Metric("locker_remote_monitors"),
    true = is_tuple(gen_server:call(Target, get_debug_state, 10000)),
    1 = Metric("locker_remote_monitors"),
    true = erlang:disconnect_node(Node),
    receive {'DOWN', M2, process, Target, noconnection} -> ok
    after 10000 -> ct:fail(no_noconnection)
    end,
    await_metric(Metric, "locker_remote_monitors", 0),
    ok.
