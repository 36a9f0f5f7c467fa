%% The benchmark driver (`scripts/bench.sh [quick] [GROUP...]'): runs the
%% groups, each of which starts its own nodes and measures locker against
%% a plain BEAM baseline in the same run, prints one table of ratios and
%% writes bench/results/latest.json (plotted by bench/plot.py). Never a
%% test: nothing here asserts on time.
-module(locker_bench).
-export([main/1]).
-export([stats/1, row/4, row/5, start_peers/3, stop_peers/1, sched_args/0, bench_paths/0]).

-define(GROUPS, [reads, cluster, groups, throughput, batching, scaling, memory, expiry, registry, lockerd]).
%% Run only when named: `targets' (issue 14's targets, each against its
%% floor in one run; see locker_bench_targets.erl).
-define(ON_REQUEST, [targets]).

main(Args) ->
    Quick = lists:member("quick", Args),
    Asked = [list_to_atom(A) || A <- Args, lists:member(list_to_atom(A), ?GROUPS ++ ?ON_REQUEST)],
    Groups = case Asked of [] -> ?GROUPS; _ -> Asked end,
    Env = #{
        quick => Quick,
        otp => erlang:system_info(otp_release),
        schedulers => erlang:system_info(schedulers_online),
        cpu => cpu()
    },
    io:format("locker bench (~s), OTP ~s, ~b schedulers, ~s~n",
        [mode(Quick), maps:get(otp, Env), maps:get(schedulers, Env), maps:get(cpu, Env)]),
    Rows = lists:append([run_group(G, Quick) || G <- Groups]),
    print(Rows),
    %% The targets alone go to their own file (the full run's stays).
    Out = case Groups of
        [targets] -> "bench/results/targets.json";
        _ -> "bench/results/latest.json"
    end,
    write_json(Out, Env, Rows),
    ok.

run_group(Group, Quick) ->
    Module = list_to_atom("locker_bench_" ++ atom_to_list(Group)),
    io:format("~n== ~s~n", [Group]),
    T0 = erlang:monotonic_time(millisecond),
    Rows = Module:run(Quick),
    io:format("   (~.1f s)~n", [(erlang:monotonic_time(millisecond) - T0) / 1000]),
    [R#{group => Group} || R <- Rows].

mode(true) -> "quick";
mode(false) -> "full".

cpu() ->
    case file:read_file("/proc/cpuinfo") of
        {ok, B} ->
            case re:run(B, "model name\\s*:\\s*([^\\n]*)", [{capture, all_but_first, list}]) of
                {match, [M]} -> M;
                _ -> "unknown cpu"
            end;
        _ ->
            "unknown cpu"
    end.

%%--------------------------------------------------------------------
%% Rows
%%--------------------------------------------------------------------

%% @doc Median, p99 and max of a list of samples.
stats([]) ->
    #{median => 0.0, p99 => 0.0, max => 0.0, n => 0};
stats(Samples) ->
    S = list_to_tuple(lists:sort(Samples)),
    N = tuple_size(S),
    At = fun(P) -> float(element(max(1, min(N, round(P * N))), S)) end,
    #{median => At(0.5), p99 => At(0.99), max => float(element(N, S)), n => N}.

%% @doc A measure without a baseline.
row(Name, Unit, Stats, Note) ->
    row(Name, Unit, Stats, undefined, Note).

%% @doc A measure against a baseline `{BaselineName, BaselineMedian}';
%% the ratio is of the medians (ours / baseline).
row(Name, Unit, Stats, Baseline, Note) ->
    Base =
        case Baseline of
            undefined -> #{};
            {BName, BValue} when BValue > 0 ->
                #{baseline => BName, baseline_value => float(BValue), ratio => maps:get(median, Stats) / BValue};
            {BName, _} ->
                #{baseline => BName}
        end,
    maps:merge(Stats#{name => Name, unit => Unit, note => Note}, Base).

print(Rows) ->
    io:format("~n~-60s ~11s ~11s ~11s  ~s~n", ["measure", "median", "p99", "max", "ratio (of median)"]),
    lists:foreach(
        fun(R = #{name := Name, unit := Unit}) ->
            Ratio =
                case R of
                    #{ratio := X, baseline := B, target := _, note := Note} ->
                        io_lib:format("~.2fx ~s (target ~s)", [X, B, Note]);
                    #{ratio := X, baseline := B} ->
                        io_lib:format("~.2fx ~s", [X, B]);
                    _ -> ""
                end,
            io:format("~-60s ~11s ~11s ~11s  ~s~n",
                [Name, fmt(maps:get(median, R), Unit), fmt(maps:get(p99, R), Unit), fmt(maps:get(max, R), Unit), Ratio])
        end,
        Rows
    ).

fmt(V, ns) -> io_lib:format("~.1f ns", [V]);
fmt(V, us) -> io_lib:format("~.1f us", [V]);
fmt(V, ms) -> io_lib:format("~.1f ms", [V]);
fmt(V, bytes) -> io_lib:format("~.1f B", [V]);
fmt(V, per_s) -> io_lib:format("~b /s", [round(V)]);
fmt(V, msgs) -> io_lib:format("~.1f msg", [V]);
fmt(V, count) -> io_lib:format("~.2f", [V]).

%%--------------------------------------------------------------------
%% JSON (no dependency: a small encoder for our own rows)
%%--------------------------------------------------------------------

write_json(Path, Env, Rows) ->
    Doc = #{
        environment => Env#{taken_at => list_to_binary(calendar:system_time_to_rfc3339(erlang:system_time(second)))},
        rows => Rows
    },
    ok = filelib:ensure_dir(Path),
    ok = file:write_file(Path, [json(Doc), "\n"]),
    io:format("~nwrote ~s~n", [Path]).

json(M) when is_map(M) ->
    ["{", lists:join(",", [[json(atom_to_binary(K)), ":", json(V)] || {K, V} <- lists:sort(maps:to_list(M))]), "}"];
json(L) when is_list(L) ->
    case io_lib:printable_unicode_list(L) of
        true -> json(unicode:characters_to_binary(L));
        false -> ["[", lists:join(",", [json(X) || X <- L]), "]"]
    end;
json(B) when is_binary(B) ->
    [$", escape(B), $"];
json(true) -> "true";
json(false) -> "false";
json(undefined) -> "null";
json(A) when is_atom(A) -> json(atom_to_binary(A));
json(I) when is_integer(I) -> integer_to_list(I);
json(F) when is_float(F) -> io_lib:format("~.6g", [F]).

escape(B) ->
    [case C of
         $" -> "\\\"";
         $\\ -> "\\\\";
         $\n -> "\\n";
         _ when C < 32 -> io_lib:format("\\u~4.16.0B", [C]);
         _ -> <<C/utf8>>
     end || <<C/utf8>> <= B].

%%--------------------------------------------------------------------
%% Nodes
%%--------------------------------------------------------------------

%% @doc Starts `N' masters (W = majority) with `locker' running, all VMs
%% with the same scheduler flags as this one.
start_peers(Prefix, N, Env) ->
    Peers = [start_peer(list_to_atom(Prefix ++ integer_to_list(I)), Env) || I <- lists:seq(1, N)],
    Nodes = [Nd || {_, Nd} <- Peers],
    W = N div 2 + 1,
    [ok = rpc:call(Nd, locker, set_w, [[Nd], W]) || Nd <- Nodes],
    [ok = rpc:call(Nd, locker, set_nodes, [[Nd], Nodes, []]) || Nd <- Nodes],
    {Peers, Nodes}.

start_peer(Name, Env) ->
    Paths = bench_paths(),
    {ok, Peer, Node} = peer:start(#{
        name => Name,
        host => "127.0.0.1",
        longnames => true,
        args => ["-setcookie", atom_to_list(erlang:get_cookie()) | sched_args()] ++
            lists:append([["-pa", P] || P <- Paths])
    }),
    ok = rpc:call(Node, application, load, [locker]),
    [ok = rpc:call(Node, application, set_env, [locker, K, V]) || {K, V} <- Env],
    {ok, _} = rpc:call(Node, gen_server, start, [{local, locker}, locker_server, [2, 1000, 1000, 100], []]),
    {Peer, Node}.

stop_peers(Peers) ->
    logger:set_primary_config(level, error),
    [catch peer:stop(P) || {P, _} <- Peers],
    logger:set_primary_config(level, notice),
    ok.

%% @doc The code paths peers need: locker, Elixir (for the registry group)
%% and the bench modules.
bench_paths() ->
    Own = [filename:dirname(code:which(M)) || M <- [locker, ?MODULE]],
    Elixir = [D || D <- [code:lib_dir(elixir, ebin), code:lib_dir(logger, ebin)], is_list(D)],
    lists:usort(Own ++ Elixir).

%% Every VM of the bench keeps its schedulers spinning longer before they
%% sleep: on a 2-vCPU guest a sleeping scheduler takes tens of us to wake,
%% which otherwise dominates every round trip (ours and the baselines'
%% alike). LOCKER_BENCH_SBWT=default keeps the VM's default.
sched_args() ->
    case os:getenv("LOCKER_BENCH_SBWT", "very_long") of
        "default" -> [];
        V -> ["+sbwt", V, "+sbwtdcpu", V, "+sbwtdio", V]
    end.
