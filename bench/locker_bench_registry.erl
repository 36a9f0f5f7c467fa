%% Locker.Registry against :global on the same three nodes: register +
%% unregister latency, whereis_name, and how long a name takes to be freed
%% on every node after its owner is killed. Needs the Mix build (Elixir).
-module(locker_bench_registry).
-export([run/1]).

run(_Quick) ->
    case code:which('Elixir.Locker.Registry') of
        non_existing ->
            io:format("   skipped: Locker.Registry not built (run `mix compile` first)~n"),
            [];
        _ ->
            io:format("   skipped: not written yet~n"),
            []
    end.
