%% Benchmark (not a test: nothing asserts on time) of lockerd against BEAM
%% locker nodes, measured side by side in one run:
%%
%%   1. service rate of one master: C concurrent callers on this node send
%%      gen_server:call get_write_lock / release_write_lock pairs to
%%      `{locker, Master}' for a fixed time; lockerd vs a BEAM peer.
%%   2. lock + release latency seen by a BEAM coordinator node (not a
%%      master) against three masters, W = 2: all-BEAM, mixed (2 BEAM + 1
%%      lockerd) and all-lockerd clusters.
%%
%% Run from the project root after `rebar3 compile' and
%% `cargo build --release -p lockerd':
%%
%%   erlc -o _build/lockerd_bench tests/lockerd_bench.erl
%%   erl -noshell -name lb@127.0.0.1 -setcookie lb -pa _build/default/lib/locker/ebin \
%%       -pa _build/lockerd_bench -eval 'lockerd_bench:main([]), halt().'
%%
%% `lockerd_bench:main(["quick"])' runs shorter.
-module(lockerd_bench).

-export([main/1, latency_loop/2]).

main(Args) ->
    try run(Args) catch throw:done -> ok end,
    [os:cmd("kill " ++ P) || P <- get(lockerd_pids)],
    ok.

run(Args) ->
    Quick = lists:member("quick", Args),
    RateMs = if Quick -> 1000; true -> 3000 end,
    Pairs = if Quick -> 500; true -> 3000 end,
    Bin = filename:join(filename:absname(os:getenv("CARGO_TARGET_DIR", "target")), "release/lockerd"),
    true = filelib:is_regular(Bin),
    io:format("lockerd bench (~s), OTP ~s, ~b schedulers here~n",
              [if Quick -> "quick"; true -> "full" end, erlang:system_info(otp_release),
               erlang:system_info(schedulers_online)]),
    %% 1. Service rate of one master.
    B1 = peer_node("rate_beam"),
    L1 = lockerd(Bin, "rate_ld", []),
    ok = gen_server:call({locker, B1}, {set_nodes, [B1], []}),
    ok = gen_server:call({locker, L1}, {set_nodes, [L1], []}),
    _ = [rate(N, 4, 300) || N <- [B1, L1]],  % warm up
    %% Interleaved runs (BEAM, lockerd, lockerd, BEAM) against drift.
    Rates = [begin
                 Rb1 = rate(B1, Callers, RateMs div 2),
                 Rl1 = rate(L1, Callers, RateMs div 2),
                 Rl2 = rate(L1, Callers, RateMs div 2),
                 Rb2 = rate(B1, Callers, RateMs div 2),
                 {Callers, (Rb1 + Rb2) / 2, (Rl1 + Rl2) / 2}
             end || Callers <- [1, 8, 32]],
    io:format("~n== service rate of one master (calls/s, get_write_lock + release_write_lock)~n"),
    io:format("~8s ~14s ~14s ~8s~n", ["callers", "BEAM master", "lockerd", "ratio"]),
    [io:format("~8b ~14.1f ~14.1f ~7.2fx~n", [C, Rb, Rl, Rl / Rb]) || {C, Rb, Rl} <- Rates],
    lists:member("rate", Args) andalso throw(done),
    %% 2. lock + release latency from a BEAM coordinator.
    C = peer_node("coord"),
    Beam = [peer_node("m" ++ integer_to_list(I)) || I <- [1, 2, 3]],
    Lds = [lockerd(Bin, "ld" ++ integer_to_list(I), []) || I <- [1, 2, 3]],
    Clusters = [
        {"all-BEAM (3 BEAM masters)", Beam},
        {"mixed (2 BEAM + 1 lockerd)", [hd(Beam), lists:nth(2, Beam), hd(Lds)]},
        {"all-lockerd (3 lockerd masters)", Lds}
    ],
    Results = [{Name, latency(C, Masters, Pairs)} || {Name, Masters} <- Clusters],
    %% Second pass in reverse order, to even out drift.
    Results2 = [{Name, latency(C, Masters, Pairs)} || {Name, Masters} <- lists:reverse(Clusters)],
    io:format("~n== lock + release latency from a BEAM coordinator (us, W = 2, ~b pairs x 2 passes)~n", [Pairs]),
    io:format("~-34s ~9s ~9s ~9s ~8s~n", ["cluster", "median", "p90", "p99", "vs BEAM"]),
    {_, BaseSamples} = hd(Results),
    {_, BaseSamples2} = lists:last(Results2),
    BaseMed = median(BaseSamples ++ BaseSamples2),
    [begin
         {Name, S2} = lists:keyfind(Name, 1, Results2),
         All = lists:sort(S ++ S2),
         Med = median(All),
         io:format("~-34s ~9.1f ~9.1f ~9.1f ~7.2fx~n", [Name, float(Med), float(pct(All, 0.90)), float(pct(All, 0.99)), Med / BaseMed])
     end || {Name, S} <- Results],
    ok.

%% Calls per second that `Callers' processes get from {locker, Node}.
rate(Node, Callers, Ms) ->
    Parent = self(),
    Deadline = erlang:monotonic_time(millisecond) + Ms,
    Pids = [spawn_link(fun() -> Parent ! {self(), caller(Node, I, Deadline, 0)} end) || I <- lists:seq(1, Callers)],
    Total = lists:sum([receive {P, N} -> N end || P <- Pids]),
    Total * 1000 / Ms.

caller(Node, I, Deadline, N) ->
    case erlang:monotonic_time(millisecond) < Deadline of
        false ->
            N;
        true ->
            Tag = {I, N},
            ok = gen_server:call({locker, Node}, {get_write_lock, {bench, I, N}, not_found, Tag}),
            ok = gen_server:call({locker, Node}, {release_write_lock, Tag}),
            caller(Node, I, Deadline, N + 2)
    end.

latency(C, Masters, Pairs) ->
    ok = rpc:call(C, locker, set_nodes, [[C], Masters, []]),
    _ = rpc:call(C, ?MODULE, latency_loop, [100, Masters]),
    rpc:call(C, ?MODULE, latency_loop, [Pairs, Masters], infinity).

%% On the coordinator: microseconds per lock + release pair.
latency_loop(Pairs, _Masters) ->
    [begin
         K = {lat, I, erlang:unique_integer()},
         {T, {{ok, 2, _, _}, {ok, 2, _, _}}} = timer:tc(fun() -> {locker:lock(K, v), locker:release(K, v)} end),
         T
     end || I <- lists:seq(1, Pairs)].

median(S) -> pct(lists:sort(S), 0.5).

pct(Sorted, P) ->
    lists:nth(max(1, round(P * length(Sorted))), Sorted).

peer_node(Prefix) ->
    Name = list_to_atom(Prefix ++ "_" ++ os:getpid()),
    Paths = lists:usort([filename:dirname(code:which(locker)), filename:dirname(code:which(?MODULE))]),
    Args = ["-setcookie", atom_to_list(erlang:get_cookie())] ++ lists:append([["-pa", P] || P <- Paths]),
    {ok, _Peer, Node} = peer:start(#{name => Name, host => "127.0.0.1", longnames => true, args => Args}),
    {ok, _} = rpc:call(Node, gen_server, start, [{local, locker}, locker_server, [2, 1000, 1000, 100], []]),
    Node.

lockerd(Bin, Prefix, Extra) ->
    NodeS = Prefix ++ "_" ++ os:getpid() ++ "@127.0.0.1",
    Parent = self(),
    spawn(fun() ->
        Port = open_port({spawn_executable, Bin},
                         [{args, ["--name", NodeS, "--cookie", atom_to_list(erlang:get_cookie()),
                                  "--announce", "--log", "warn" | Extra]},
                          {line, 4096}, exit_status, binary]),
        {os_pid, OsPid} = erlang:port_info(Port, os_pid),
        Parent ! {lockerd_os_pid, integer_to_list(OsPid)},
        drain(Port, Parent)
    end),
    receive {lockerd_os_pid, P} -> put(lockerd_pids, [P | case get(lockerd_pids) of undefined -> []; L -> L end]) end,
    receive {lockerd_ready, _} -> list_to_atom(NodeS) after 10000 -> error({lockerd_not_ready, NodeS}) end.

drain(Port, Parent) ->
    receive
        {Port, {data, {eol, <<"lockerd ready", _/binary>> = L}}} -> Parent ! {lockerd_ready, L}, drain(Port, Parent);
        {Port, {exit_status, _}} -> ok;
        {Port, _} -> drain(Port, Parent)
    end.
