%% The README's demo: a local three-master cluster (W = 2) of real BEAM
%% nodes; a lock taken on one node and read on the others, a release, and
%% a lease running out to the millisecond.
-module(locker_demo).
-export([main/0]).

main() ->
    Ebin = filename:dirname(code:which(locker)),
    say("starting three locker masters on 127.0.0.1 (W = 2)"),
    Peers = [start_peer(Name, Ebin) || Name <- [demo_a, demo_b, demo_c]],
    Nodes = [N || {_, N} <- Peers],
    [A, B, C] = Nodes,
    ok = rpc:call(A, locker, set_nodes, [Nodes, Nodes, []]),
    say("cluster: ~0p", [rpc:call(B, locker, get_meta, [])]),

    Owner = rpc:call(A, erlang, whereis, [init]),
    say("~s: locker:lock(<<\"invoice-42\">>, ~0p, 10000)  -> ~0p",
        [A, Owner, rpc:call(A, locker, lock, [<<"invoice-42">>, Owner, 10000])]),
    [say("~s: locker:dirty_read(<<\"invoice-42\">>)  -> ~0p", [N, rpc:call(N, locker, dirty_read, [<<"invoice-42">>])])
     || N <- [B, C]],
    say("~s: a second lock on the same key  -> ~0p",
        [C, rpc:call(C, locker, lock, [<<"invoice-42">>, other, 10000])]),
    say("~s: locker:release(<<\"invoice-42\">>, ~0p)  -> ~0p",
        [A, Owner, rpc:call(A, locker, release, [<<"invoice-42">>, Owner])]),
    say("~s: locker:dirty_read(<<\"invoice-42\">>)  -> ~0p", [B, rpc:call(B, locker, dirty_read, [<<"invoice-42">>])]),

    say("~s: locker:lock(<<\"session-7\">>, owner, 250)  -> ~0p",
        [B, rpc:call(B, locker, lock, [<<"session-7">>, owner, 250])]),
    T0 = erlang:monotonic_time(microsecond),
    Released = rpc:call(C, locker, wait_for_release, [<<"session-7">>, 5000]),
    Waited = (erlang:monotonic_time(microsecond) - T0) / 1000,
    say("~s: locker:wait_for_release(<<\"session-7\">>, 5000)  -> ~0p after ~.1f ms (lease 250 ms)",
        [C, Released, Waited]),
    [say("~s: locker:dirty_read(<<\"session-7\">>)  -> ~0p", [N, rpc:call(N, locker, dirty_read, [<<"session-7">>])])
     || N <- Nodes],
    say("~s: locker:lag()  -> ~0p", [A, rpc:call(A, locker, lag, [])]),
    logger:set_primary_config(level, error),
    [peer:stop(P) || {P, _} <- Peers],
    say("done"),
    ok.

start_peer(Name, Ebin) ->
    {ok, Peer, Node} = peer:start_link(#{
        name => Name,
        host => "127.0.0.1",
        longnames => true,
        args => ["-setcookie", atom_to_list(erlang:get_cookie()), "-pa", Ebin]
    }),
    ok = rpc:call(Node, application, load, [locker]),
    ok = rpc:call(Node, application, set_env, [locker, start_server, true]),
    ok = rpc:call(Node, application, set_env, [locker, w, 2]),
    {ok, _} = rpc:call(Node, application, ensure_all_started, [locker]),
    {Peer, Node}.

say(Fmt) -> say(Fmt, []).
say(Fmt, Args) -> io:format("[demo] " ++ Fmt ++ "~n", Args).
