%% The NIF store against the same `=:=' oracle corpus as lockerd's store.
%%
%% The two stores keep different canonical encodings (the NIF keeps
%% immediates as their VM word and walks the rest in the VM; lockerd
%% encodes its own decoded terms, with short pids), but both must give
%% equal bytes exactly when the terms are `=:='. `native/lockerd/tests/
%% eq_oracle.escript gen' writes the corpus: pairs of random terms, often
%% one term encoded another way (integers against floats, `-0.0', big
%% integers, atoms in every external encoding, maps in another insertion
%% order, bitstrings, local and remote pids, references with padded id
%% words, ports, funs) with Erlang's `=:=' verdict. lockerd's
%% `tests/term_eq.rs' runs seeds 1 to 3 of 2000 pairs; so does this test,
%% through the NIF: a value stored under A is read back through B exactly
%% when A =:= B, and is `=:=' to what was stored.
-module(locker_oracle_tests).

-include_lib("eunit/include/eunit.hrl").

-define(LEASE, 60000).

shared_corpus_test_() ->
    {timeout, 600, fun shared_corpus/0}.

shared_corpus() ->
    Script = filename:absname("native/lockerd/tests/eq_oracle.escript"),
    ?assert(filelib:is_regular(Script)),
    Dir = filename:join(
        os:getenv("TMPDIR", "/tmp"), "locker_oracle_" ++ os:getpid()
    ),
    ok = filelib:ensure_path(Dir),
    try
        Counts = [run_seed(Script, Dir, Seed) || Seed <- ["1", "2", "3"]],
        {Total, Equal} = lists:foldl(
            fun({T, E}, {T0, E0}) -> {T0 + T, E0 + E} end, {0, 0}, Counts
        ),
        %% The corpus must exercise both verdicts.
        ?assertEqual(6000, Total),
        ?assert(Equal > 500 andalso Equal < Total - 500)
    after
        ok = locker_nif:clear(),
        _ = file:del_dir_r(Dir)
    end.

run_seed(Script, Dir, Seed) ->
    Out = filename:join(Dir, "pairs_" ++ Seed),
    Cmd = "escript " ++ Script ++ " gen " ++ Out ++ " 2000 " ++ Seed ++ " 2>&1; echo exit=$?",
    ?assertMatch({match, _}, re:run(os:cmd(Cmd), "exit=0")),
    {ok, Bin} = file:read_file(Out),
    check(Bin, 0, 0).

check(<<>>, N, Equal) ->
    {N, Equal};
check(<<LA:32, EA:LA/binary, LB:32, EB:LB/binary, V, Rest/binary>>, N, Equal) ->
    A = binary_to_term(EA),
    B = binary_to_term(EB),
    Verdict = V =:= 1,
    ?assertEqual({A, B, Verdict}, {A, B, A =:= B}),
    ok = locker_nif:clear(),
    Tag = make_ref(),
    ok = locker_nif:get_write_lock(A, not_found, Tag),
    {ok, []} = locker_nif:write(Tag, A, A, ?LEASE),
    Found =
        case locker_nif:dirty_read(B) of
            {ok, Stored} ->
                ?assert(Stored =:= A),
                true;
            {error, not_found} ->
                false
        end,
    ?assertEqual({A, B, Verdict}, {A, B, Found}),
    check(Rest, N + 1, Equal + V).
