%% Expiring many leases due in the same second: total sweep time, and how
%% long calls to the server wait meanwhile, against the same prober with
%% nothing to sweep.
-module(locker_bench_expiry).
-export([run/1]).

run(Quick) ->
    Count = case Quick of true -> 200000; false -> 1000000 end,
    {ok, _} = gen_server:start({local, locker}, locker_server, [1, 3600000, 3600000, 3600000], []),
    ok = locker:set_nodes([node()], [node()], []),
    Pid = self(),
    [{ok, []} = locker_nif:write(t, <<I:128>>, Pid, 1000) || I <- lists:seq(1, Count)],
    %% Let every lease's due millisecond pass (a benchmark, not a test:
    %% waiting on the clock is the point).
    receive after 1100 -> ok end,
    Idle = probe_for(300),
    Prober = start_probe(),
    receive after 20 -> ok end,
    T0 = erlang:monotonic_time(microsecond),
    locker ! expire_leases,
    wait_empty(),
    Total = (erlang:monotonic_time(microsecond) - T0) / 1000,
    Busy = stop_probe(Prober),
    ok = gen_server:stop(locker),
    IdleS = locker_bench:stats([T / 1000 || T <- Idle]),
    BusyS = locker_bench:stats([T / 1000 || T <- Busy]),
    [
        locker_bench:row(io_lib:format("expire ~b leases due at once: total", [Count]), ms,
            #{median => Total, p99 => Total, max => Total, n => 1}, "one sweep, in chunks"),
        locker_bench:row("  call wait during the sweep", ms, BusyS, {"idle server", maps:get(median, IdleS)},
            "max is the longest pause"),
        locker_bench:row("  call wait, idle server", ms, IdleS, "")
    ].

probe_for(Ms) ->
    P = start_probe(),
    receive after Ms -> ok end,
    stop_probe(P).

start_probe() ->
    Parent = self(),
    spawn_link(fun() -> probe(Parent, []) end).

stop_probe(P) ->
    P ! stop,
    receive {probe, P, L} -> L end.

probe(Parent, Acc) ->
    receive
        stop -> Parent ! {probe, self(), Acc}
    after 1 ->
        {T, _} = timer:tc(gen_server, call, [locker, {wait_for_release, '$probe', 0}]),
        probe(Parent, [T | Acc])
    end.

%% Polls the lease count (shard read locks only, never the engine lock the
%% sweep holds) until the sweep is done.
wait_empty() ->
    case locker_nif:lease_count() of
        0 -> ok;
        _ -> receive after 1 -> wait_empty() end
    end.
