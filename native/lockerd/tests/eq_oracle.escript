#!/usr/bin/env escript
%% -*- erlang -*-
-mode(compile).
%% The =:= oracle for lockerd's term tests (run by tests/term_eq.rs).
%%
%%   eq_oracle.escript gen Out N Seed
%%       writes N records <<LenA:32, A, LenB:32, B, Verdict:8>> where A and B
%%       are term_to_binary of random terms (often the same term encoded
%%       another way, or a near variant) and Verdict is A =:= B.
%%   eq_oracle.escript check Pairs ReEncoded
%%       ReEncoded holds, per record of Pairs, <<Len:32, Bytes>>: lockerd's
%%       encoding of A; prints "ok N" if each decodes to a term =:= A.
%%
%% Atoms come from a fixed pool (plus node names made here): nothing
%% from outside becomes an atom.

main(["gen", Out, N, Seed]) ->
    rand:seed(exsss, {list_to_integer(Seed), 7, 11}),
    Recs = [record() || _ <- lists:seq(1, list_to_integer(N))],
    ok = file:write_file(Out, Recs);
main(["check", Pairs, Re]) ->
    {ok, P} = file:read_file(Pairs),
    {ok, R} = file:read_file(Re),
    check(P, R, 0, 0);
main(_) ->
    io:format("usage: gen Out N Seed | check Pairs ReEncoded~n"),
    halt(2).

check(<<>>, <<>>, N, 0) ->
    io:format("ok ~b~n", [N]);
check(<<>>, _, N, Bad) ->
    io:format("bad ~b of ~b~n", [Bad, N]),
    halt(1);
check(<<LA:32, A:LA/binary, LB:32, _:LB/binary, _V, P/binary>>, <<LE:32, E:LE/binary, R/binary>>, N, Bad) ->
    TA = binary_to_term(A),
    Ok = try binary_to_term(E) =:= TA catch _:_ -> false end,
    Ok orelse io:format("mismatch: ~p~n  lockerd: ~p~n", [TA, E]),
    check(P, R, N + 1, Bad + if Ok -> 0; true -> 1 end).

record() ->
    A = term(3),
    B = case rand:uniform(4) of
        1 -> term(3);
        2 -> A;
        _ -> variant(A)
    end,
    EA = enc(A),
    EB = enc(B),
    V = if A =:= B -> 1; true -> 0 end,
    <<(byte_size(EA)):32, EA/binary, (byte_size(EB)):32, EB/binary, V>>.

%% Random encoding options: minor version 0 (FLOAT_EXT text floats,
%% Latin-1 atoms), 1 (Latin-1 atoms where possible) or 2.
enc(T) ->
    case rand:uniform(3) of
        1 -> term_to_binary(T, [{minor_version, 0}]);
        2 -> term_to_binary(T, [{minor_version, 1}]);
        3 -> term_to_binary(T)
    end.

pick(L) -> lists:nth(rand:uniform(length(L)), L).

atoms() -> [a, b, ok, error, not_found, 'héllo', 'ünïcödé', '日本', '', 'with space', true, false, undefined].

term(0) -> leaf();
term(D) ->
    case rand:uniform(9) of
        1 -> list_to_tuple([term(D - 1) || _ <- lists:seq(1, rand:uniform(4) - 1)]);
        2 -> [term(D - 1) || _ <- lists:seq(1, rand:uniform(4) - 1)];
        3 -> maps:from_list([{term(D - 1), term(D - 1)} || _ <- lists:seq(1, rand:uniform(4) - 1)]);
        4 -> big_map(D - 1);
        5 -> [term(D - 1) | leaf()];
        6 -> fun_with(term(D - 1));
        _ -> leaf()
    end.

big_map(D) ->
    maps:from_list([{K, term(D div 2)} || K <- lists:seq(1, 33 + rand:uniform(10))]).

fun_with(X) -> fun() -> X end.

leaf() ->
    case rand:uniform(16) of
        1 -> rand:uniform(300) - 150;
        2 -> rand:uniform(1 bsl 40) - (1 bsl 39);
        3 -> (rand:uniform(1 bsl 62) + (1 bsl 62)) * pick([1, -1]);
        4 -> rand:uniform(1 bsl 100) * pick([1, -1]);
        5 -> pick([0.0, -0.0, 1.0, -1.5, 3.141592653589793, 1.0e300, 5.0e-324]);
        6 -> pick(atoms());
        7 -> list_to_binary([rand:uniform(256) - 1 || _ <- lists:seq(1, rand:uniform(5) - 1)]);
        8 -> <<(rand:uniform(200)):(rand:uniform(7))>>;
        9 -> pick([self(), remote_pid(), remote_pid_old()]);
        10 -> pick([make_ref(), remote_ref(), padded(remote_ref())]);
        11 -> pick(["abc", "", [1, 2, 300]]);
        12 -> pick([fun lists:map/2, fun erlang:node/0]);
        13 -> pick([hd(erlang:ports()), remote_port()]);
        14 -> pick([1, 1.0, 2, 2.0]);
        15 -> pick([[], {}, #{}]);
        16 -> pick([1 bsl 63, -(1 bsl 63), (1 bsl 63) - 1, 1 bsl 64])
    end.

remote_pid() ->
    N = pick([<<"other@host">>, <<"x@y">>]),
    binary_to_term(<<131, 88, 119, (byte_size(N)), N/binary, (rand:uniform(3)):32, 0:32, (pick([1, 2])):32>>).

remote_pid_old() ->
    N = <<"other@host">>,
    binary_to_term(<<131, 103, 100, (byte_size(N)):16, N/binary, (rand:uniform(3)):32, 0:32, 1:8>>).

remote_ref() ->
    N = <<"other@host">>,
    binary_to_term(<<131, 90, 3:16, 119, (byte_size(N)), N/binary, 1:32, (rand:uniform(3)):32, 7:32, 0:32>>).

remote_port() ->
    N = <<"other@host">>,
    binary_to_term(<<131, 89, 119, (byte_size(N)), N/binary, (rand:uniform(3)):32, 1:32>>).

%% The same (remote) reference with one or two more zero id words.
padded(R) when node(R) =:= node() -> R;
padded(R) ->
    <<131, 90, Len:16, Rest/binary>> = term_to_binary(R),
    Z = min(rand:uniform(2), 5 - Len),
    binary_to_term(<<131, 90, (Len + Z):16, Rest/binary, 0:(32 * Z)>>).

%% A term equal to T built another way, or slightly different.
variant(T) when is_integer(T), abs(T) < 1 bsl 50 -> pick([float(T), T + 1, T]);
variant(T) when is_float(T) -> pick([-T, T, T + 1.0]);
variant(T) when is_map(T) ->
    %% Same pairs, inserted in reverse order (or one value changed).
    L = lists:reverse(maps:to_list(T)),
    case {rand:uniform(2), L} of
        {1, [{K, V} | Rest]} -> maps:from_list([{K, variant(V)} | Rest]);
        _ -> lists:foldl(fun({K, V}, M) -> M#{K => V} end, #{}, L)
    end;
variant(T) when is_tuple(T), tuple_size(T) > 0 ->
    I = rand:uniform(tuple_size(T)),
    setelement(I, T, variant(element(I, T)));
variant([H | T]) when is_list(T) -> [variant(H) | T];
variant(T) when is_reference(T) -> pick([padded(T), T, remote_ref()]);
variant(T) when is_binary(T) -> pick([T, <<T/binary, 0>>]);
variant(T) when is_atom(T) -> pick([T, pick(atoms())]);
variant(T) -> T.
