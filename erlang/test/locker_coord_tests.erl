%% The scenarios of tests/coordinator_scenarios.txt (shared with the Rust
%% coordinator's test) run against locker_coord.
-module(locker_coord_tests).

-include_lib("eunit/include/eunit.hrl").

scenarios_test() ->
    {ok, Bin} = file:read_file(table()),
    Lines = [string:trim(L) || L <- string:split(binary_to_list(Bin), "\n", all)],
    Ran = [run(L) || L <- Lines, L =/= "", hd(L) =/= $#],
    ?assert(length(Ran) >= 20).

%% The table sits in tests/ at the project root; eunit may run from the
%% root or from the build directory.
table() ->
    Candidates = [
        "tests/coordinator_scenarios.txt",
        filename:join([filename:dirname(code:which(?MODULE)), "..", "..", "..", "..", "tests", "coordinator_scenarios.txt"])
    ],
    hd([F || F <- Candidates, filelib:is_regular(F)] ++ [hd(Candidates)]).

run(Line) ->
    [Name, Rest] = string:split(Line, ":"),
    [Args, Expected] = string:split(Rest, "->"),
    KVs = [list_to_tuple(string:split(KV, "=")) || KV <- string:lexemes(Args, " ")],
    Get = fun(K, D) -> proplists:get_value(K, KVs, D) end,
    W = list_to_integer(Get("w", "0")),
    M = list_to_integer(Get("masters", "0")),
    Votes0 = string:lexemes(Get("votes", ""), ","),
    {Votes, Timeout} =
        case lists:reverse(Votes0) of
            ["timeout" | R] -> {lists:reverse(R), true};
            _ -> {Votes0, false}
        end,
    At = list_to_integer(Get("at", "1")),
    Op1 = lists:foldl(
        fun(V, Op) ->
            ?assertNot(locker_coord:decided(Op), {Name, before, V}),
            locker_coord:vote(vote(V), Op)
        end,
        locker_coord:new(W, M, 0),
        Votes
    ),
    ?assertEqual(not Timeout, locker_coord:decided(Op1), Name),
    {Step, Op2} = locker_coord:after_phase_one(At, Op1),
    Op3 = lists:foldl(fun(V, Op) -> locker_coord:late_vote(vote(V), Op) end, Op2, string:lexemes(Get("late", ""), ",")),
    Commits = string:lexemes(Get("commits", ""), ","),
    Op4 = lists:foldl(
        fun(C, Op) ->
            [Who, Ok] = string:split(C, ":"),
            locker_coord:commit(Who =:= "m", Ok =:= "ok", Op)
        end,
        Op3,
        Commits
    ),
    Exp = string:lexemes(Expected, " "),
    Retry = hd([list_to_integer(F) || "retry=" ++ F <- Exp] ++ [undefined]),
    case Exp of
        ["ok", EW, EV, EC] ->
            ?assertEqual(phase_two, Step, Name),
            ?assertEqual({ok, list_to_integer(EW), list_to_integer(EV), list_to_integer(EC)}, locker_coord:outcome(Op4), Name);
        ["no_quorum" | _] ->
            ?assertEqual(phase_two, Step, Name),
            ?assertEqual({no_quorum, Retry}, locker_coord:outcome(Op4), Name);
        ["abort" | _] ->
            ?assertEqual(abort, Step, Name),
            ?assertEqual([], Commits, Name),
            ?assertEqual({no_quorum, Retry}, locker_coord:outcome(Op4), Name)
    end,
    Name.

vote("ok") -> ok;
vote("refused") -> refused;
vote("missing") -> missing;
vote("stale:" ++ F) -> {stale_token, list_to_integer(F)}.
