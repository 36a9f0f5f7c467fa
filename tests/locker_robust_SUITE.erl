%% No message can stop a `locker' server: thousands of random terms (of
%% every type, nested, and shaped like the protocol's requests with random
%% arguments) thrown at a running server on a real peer node as calls,
%% casts, plain messages, calls and system messages with a malformed
%% From, and forged exit messages. Every call is answered, the server keeps
%% its pid and still serves a lock afterwards; under the application's
%% supervisor the application stays up; a real lockerd keeps its OS pid.
%%
%% Peers are named `rb_*' (unique in epmd next to the other suites).
%% LOCKER_ROBUST_TERMS sets how many terms of each kind are sent (default
%% 5000), LOCKER_ROBUST_SEED the random seed (logged by every case).
-module(locker_robust_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, suite/0, init_per_suite/1, end_per_suite/1, init_per_testcase/2, end_per_testcase/2]).
-export([
    reviewer_messages/1,
    random_terms_never_stop_server/1,
    bad_input_never_stops_application/1,
    bad_node_lists_and_quorum/1,
    wait_without_timeout/1,
    random_terms_never_stop_lockerd/1
]).

-dialyzer({no_improper_lists, [reviewer_calls/0, reviewer_plain_messages/1, node_list/0, term/1, bad_from/0, bad_node_lists_and_quorum/1]}).

all() ->
    [
        reviewer_messages,
        random_terms_never_stop_server,
        bad_input_never_stops_application,
        bad_node_lists_and_quorum,
        wait_without_timeout,
        random_terms_never_stop_lockerd
    ].

suite() ->
    [{timetrap, {minutes, 5}}].

%%--------------------------------------------------------------------
%% Setup
%%--------------------------------------------------------------------

init_per_suite(Config) ->
    ok = locker_ct:ensure_distributed(),
    Config.

end_per_suite(_Config) ->
    ok.

init_per_testcase(Case, Config) ->
    Seed =
        case os:getenv("LOCKER_ROBUST_SEED") of
            false -> erlang:phash2({os:timestamp(), Case});
            S -> list_to_integer(S)
        end,
    _ = rand:seed(exsss, Seed),
    ct:log("LOCKER_ROBUST_SEED=~b", [Seed]),
    locker_ct:init_cleanup(Config).

end_per_testcase(_Case, Config) ->
    locker_ct:cleanup(Config).

unique(Prefix) ->
    locker_ct:unique(Prefix).

%% A peer with its locker server started as the other suites do
%% (gen_server:start, W = 2).
peer(Prefix, Config) ->
    {Peer, Node} = locker_ct:start_peer(list_to_atom(unique(Prefix)), []),
    ets:insert(?config(cleanup, Config), {peer, Peer}),
    Node.

cluster(Config) ->
    Cluster = [peer(P, Config) || P <- ["rb_a", "rb_b", "rb_c"]],
    ok = rpc:call(hd(Cluster), locker, set_nodes, [Cluster, Cluster, []]),
    Cluster.

terms_per_kind() ->
    case os:getenv("LOCKER_ROBUST_TERMS") of
        false -> 5000;
        N -> list_to_integer(N)
    end.

%%--------------------------------------------------------------------
%% Cases
%%--------------------------------------------------------------------

%% The messages a reviewer found to kill the server, one at a time, each
%% followed by a call that must be answered by the same process.
reviewer_messages(Config) ->
    [A, B, _] = cluster(Config),
    Server = rpc:call(B, erlang, whereis, [locker]),
    Mref = erlang:monitor(process, Server),
    Check = fun(What) ->
        Tag = make_ref(),
        Server ! {'$gen_call', {self(), Tag}, {no_such, request}},
        receive
            {Tag, {error, {unknown_request, {no_such, request}}}} -> ok;
            {'DOWN', Mref, _, _, Reason} -> ct:fail({server_died, What, Reason})
        after 30000 -> ct:fail({no_reply_after, What})
        end
    end,
    lists:foreach(
        fun(Msg) ->
            Server ! Msg,
            Check(Msg)
        end,
        reviewer_plain_messages(Server)
    ),
    lists:foreach(
        fun({Req, Expect}) ->
            ?assertEqual(Expect, gen_server:call(Server, Req)),
            Check(Req)
        end,
        reviewer_calls()
    ),
    {ok, 2, 3, 3} = rpc:call(A, locker, lock, [after_reviewer, v]),
    Server = rpc:call(B, erlang, whereis, [locker]).

reviewer_plain_messages(Server) ->
    [
        {locker_wakes, x},
        {locker_wakes, [x]},
        {locker_wakes, [{x, y} | z]},
        {'$gen_call', not_a_from, {get_write_lock, k, not_found, t}},
        {'$gen_call', not_a_from, {no_such, request}},
        {'$gen_call', {self()}, get_debug_state},
        {'$gen_call', {not_a_pid, tag}, get_debug_state},
        {system, not_a_from, get_state},
        {system, {self()}, get_status},
        {'EXIT', Server, boom},
        {'EXIT', self(), kill}
    ].

reviewer_calls() ->
    [
        {{set_nodes, [a | b], []}, {error, badarg}},
        {{set_nodes, [], [a | b]}, {error, badarg}},
        {{set_nodes, [1, 2], []}, {error, badarg}},
        {{set_nodes, not_a_list, []}, {error, badarg}},
        {{set_w, 0}, {error, badarg}},
        {{set_w, -1}, {error, badarg}},
        {{set_w, 2.0}, {error, badarg}},
        {{set_w, two}, {error, badarg}}
    ].

%% Thousands of random terms of each kind at B's server.
random_terms_never_stop_server(Config) ->
    [A, B, C] = Cluster = cluster(Config),
    Server = rpc:call(B, erlang, whereis, [locker]),
    {ok, 2, 3, 3} = rpc:call(A, locker, lock, [kept, v, 600000]),
    Stats = throw_terms({locker, B}, Server, [Server], terms_per_kind()),
    ct:log("replies by kind: ~p", [Stats]),
    Server = rpc:call(B, erlang, whereis, [locker]),
    %% Random set_nodes and set_w calls may have changed B's view: restore.
    ok = rpc:call(A, locker, set_nodes, [Cluster, Cluster, []]),
    ok = rpc:call(A, locker, set_w, [Cluster, 2]),
    [{Cluster, [], 2} = rpc:call(N, locker, get_meta, []) || N <- [A, B, C]],
    {ok, v} = rpc:call(B, locker, dirty_read, [kept]),
    {ok, 2, 3, 3} = rpc:call(A, locker, lock, [after_fuzz, v]),
    {ok, v} = rpc:call(B, locker, dirty_read, [after_fuzz]),
    Server = rpc:call(B, erlang, whereis, [locker]).

%% The application with its supervisor (intensity 10 in 10 s): a flood of
%% bad input (the reviewer's messages many times over, random terms, a
%% forged exit from the supervisor) leaves it running with the same server.
bad_input_never_stops_application(Config) ->
    Node = app_peer("rb_app", Config),
    Sup = rpc:call(Node, erlang, whereis, [locker_sup]),
    Server = rpc:call(Node, erlang, whereis, [locker]),
    true = is_pid(Sup) andalso is_pid(Server),
    Mref = erlang:monitor(process, Server),
    Reviewer = reviewer_plain_messages(Server) ++ [{'EXIT', Sup, boom}, {'EXIT', Sup, shutdown}],
    [Server ! M || _ <- lists:seq(1, 50), M <- Reviewer],
    [?assertEqual(E, gen_server:call(Server, R)) || _ <- lists:seq(1, 50), {R, E} <- reviewer_calls()],
    Stats = throw_terms({locker, Node}, Server, [Server, Sup], terms_per_kind() div 4),
    ct:log("replies by kind: ~p", [Stats]),
    receive {'DOWN', Mref, _, _, Reason} -> ct:fail({server_died, Reason}) after 0 -> ok end,
    Apps = rpc:call(Node, application, which_applications, []),
    ?assert(lists:keymember(locker, 1, Apps), Apps),
    Server = rpc:call(Node, erlang, whereis, [locker]),
    Sup = rpc:call(Node, erlang, whereis, [locker_sup]),
    %% The flood's random set_nodes and set_w requests may have set any
    %% view on this node (never configured through epochs, it takes the
    %% original requests): set it back with them, then through epochs.
    ok = gen_server:call({locker, Node}, {set_nodes, [Node], []}),
    ok = gen_server:call({locker, Node}, {set_w, 1}),
    ok = rpc:call(Node, locker, set_nodes, [[Node], [Node], []]),
    #{mode := epoch} = rpc:call(Node, locker_membership, config, []),
    {ok, 1, 1, 1} = rpc:call(Node, locker, lock, [after_flood, v]).

%% Known requests with bad arguments are answered {error, badarg} and
%% change nothing; good ones still work.
bad_node_lists_and_quorum(Config) ->
    [A, B, _] = Cluster = cluster(Config),
    Before = rpc:call(B, locker, get_meta, []),
    [?assertEqual(E, gen_server:call({locker, B}, R)) || {R, E} <- reviewer_calls()],
    {error, badarg} = gen_server:call({locker, B}, {set_nodes, [A, "b"], []}),
    {error, badarg} = gen_server:call({locker, B}, {set_nodes, [A], [B | {x}]}),
    {error, badarg} = gen_server:call({locker, B}, {set_nodes, [A], [<<"x">>]}),
    {error, {unknown_request, {set_nodes, [A]}}} = gen_server:call({locker, B}, {set_nodes, [A]}),
    {error, {unknown_request, {set_w}}} = gen_server:call({locker, B}, {set_w}),
    Before = rpc:call(B, locker, get_meta, []),
    %% A node configured through epochs (set_nodes) refuses the original
    %% requests that would change its view, and takes those that do not.
    {error, {epoch_configured, _}} = gen_server:call({locker, B}, {set_w, 3}),
    ok = gen_server:call({locker, B}, {set_w, 2}),
    {Cluster, [], 2} = rpc:call(B, locker, get_meta, []),
    ok = rpc:call(A, locker, set_w, [Cluster, 3]),
    {Cluster, [], 3} = rpc:call(B, locker, get_meta, []),
    ok = rpc:call(A, locker, set_w, [Cluster, 2]),
    {ok, 2, 3, 3} = rpc:call(B, locker, lock, [k, v]).

%% `wait_for' and `wait_for_release' with an infinite timeout (a timer that
%% far away is more than erlang:start_timer takes) are served.
wait_without_timeout(Config) ->
    [A, B, _] = cluster(Config),
    Parent = self(),
    Waiter = fun(F, Args) -> spawn_link(fun() -> Parent ! {self(), rpc:call(B, locker, F, Args)} end) end,
    W1 = Waiter(wait_for, [forever, infinity]),
    until_waiting(B, 1),
    {ok, 2, 3, 3} = rpc:call(A, locker, lock, [forever, v, 1 bsl 50]),
    receive {W1, R1} -> {ok, v} = R1 after 30000 -> ct:fail(wait_for_not_answered) end,
    W2 = Waiter(wait_for_release, [forever, infinity]),
    until_waiting(B, 1),
    {ok, 2, 3, 3} = rpc:call(A, locker, release, [forever, v]),
    receive {W2, R2} -> {ok, released} = R2 after 30000 -> ct:fail(wait_for_release_not_answered) end,
    %% Waiters on other keys are still served, with fresh ids.
    W3 = Waiter(wait_for, [later, 60000]),
    until_waiting(B, 1),
    {ok, 2, 3, 3} = rpc:call(A, locker, lock, [later, v]),
    receive {W3, R3} -> {ok, v} = R3 after 30000 -> ct:fail(wait_for_not_answered) end.

until_waiting(Node, N) ->
    case rpc:call(Node, locker_nif, stats, []) of
        #{waiters := W} when W >= N -> ok;
        _ -> erlang:yield(), until_waiting(Node, N)
    end.

%% The same random terms at a real lockerd: it answers every call and
%% keeps its OS pid.
random_terms_never_stop_lockerd(Config) ->
    #{node := L, os_pid := OsPid, owner := Owner} = lockerd(Config),
    ok = gen_server:call({locker, L}, {set_nodes, [L], []}),
    ok = gen_server:call({locker, L}, {write, t, kept, v, 600000}),
    Stats = throw_terms({locker, L}, undefined, [], terms_per_kind()),
    ct:log("replies by kind: ~p", [Stats]),
    %% The process started is still running (its owner leaves at its exit
    %% status).
    true = is_process_alive(Owner),
    {ok, _} = file:read_file_info("/proc/" ++ integer_to_list(OsPid)),
    ok = gen_server:call({locker, L}, {set_nodes, [L], []}),
    ok = gen_server:call({locker, L}, {set_w, 1}),
    {ok, v} = rpc:call(L, locker, dirty_read, [kept]),
    ok = gen_server:call({locker, L}, {get_write_lock, after_fuzz, not_found, t2}),
    true = is_process_alive(Owner).

%%--------------------------------------------------------------------
%% The flood
%%--------------------------------------------------------------------

%% Sends N terms of each kind to Dest, interleaved: calls with a good From
%% (random terms, and the protocol's requests with random arguments),
%% casts, plain messages, calls and system messages with a malformed From,
%% and forged exit messages naming the pids in Pids. Fails if Server
%% (when a pid) goes down, or if a call is not answered within 60 s.
%% Returns the replies counted by shape.
throw_terms(Dest, Server, Pids, N) ->
    Mref =
        case is_pid(Server) of
            true -> erlang:monitor(process, Server);
            false -> undefined
        end,
    put(pids, Pids ++ [self(), spawn(fun() -> ok end)]),
    Kinds = [call, request, cast, message, shaped_message, bad_from, bad_system, exit],
    Plan = shuffle([K || K <- Kinds, _ <- lists:seq(1, N)]),
    Pending = lists:foldl(fun(K, Acc) -> send(K, Dest, Acc) end, #{}, Plan),
    ct:log("~b terms sent, ~b calls awaiting a reply", [length(Plan), map_size(Pending)]),
    Deadline = erlang:monotonic_time(millisecond) + 60000,
    collect(Pending, Mref, Deadline, #{}).

send(call, Dest, Pending) ->
    call(Dest, term(3), Pending);
send(request, Dest, Pending) ->
    call(Dest, request(), Pending);
send(cast, Dest, Pending) ->
    gen_server:cast(Dest, pick([fun() -> term(3) end, fun() -> {trans_log, term(1), log_entries()} end])),
    Pending;
send(message, Dest, Pending) ->
    Dest ! term(3),
    Pending;
send(shaped_message, Dest, Pending) ->
    Dest ! shaped_message(),
    Pending;
send(bad_from, Dest, Pending) ->
    Dest ! {'$gen_call', bad_from(), pick([fun() -> term(2) end, fun request/0])},
    Pending;
send(bad_system, Dest, Pending) ->
    Dest ! {system, bad_from(), pick([get_state, get_status, fun() -> term(2) end])},
    Pending;
send(exit, Dest, Pending) ->
    Dest ! {'EXIT', pick(get(pids)), term(1)},
    Pending.

%% A waiter the awaited key never comes to is not answered (its caller
%% times out, as with the original): waits are not awaited.
call(Dest, Req, Pending) ->
    Tag = make_ref(),
    Dest ! {'$gen_call', {self(), Tag}, Req},
    case Req of
        {W, _, _} when W =:= wait_for; W =:= wait_for_release -> Pending;
        _ -> Pending#{Tag => Req}
    end.

collect(Pending, Mref, _Deadline, Stats) when map_size(Pending) =:= 0 ->
    _ = is_reference(Mref) andalso erlang:demonitor(Mref, [flush]),
    Stats;
collect(Pending, Mref, Deadline, Stats) ->
    Left = max(0, Deadline - erlang:monotonic_time(millisecond)),
    receive
        {Tag, Reply} when is_map_key(Tag, Pending) ->
            collect(maps:remove(Tag, Pending), Mref, Deadline, maps:update_with(shape(Reply), fun(C) -> C + 1 end, 1, Stats));
        {'DOWN', Mref, process, _, Reason} ->
            ct:fail({server_died, Reason})
    after Left ->
        ct:fail({calls_not_answered, map_size(Pending), lists:sublist(maps:values(Pending), 10)})
    end.

shape({error, {unknown_request, _}}) -> unknown_request;
shape({error, badarg}) -> badarg;
shape({error, E}) when is_atom(E) -> {error, E};
shape(ok) -> ok;
shape({ok, _}) -> ok_value;
shape(T) when is_tuple(T), tuple_size(T) > 0, is_atom(element(1, T)) -> {element(1, T), tuple_size(T)};
shape(_) -> other.

%% The protocol's requests (and their neighbours: wrong arity) with
%% random arguments. Timeouts of waits are short or invalid, so that every
%% call is answered soon.
request() ->
    R = fun() -> term(2) end,
    pick([
        fun() -> {get_write_lock, R(), R(), R()} end,
        fun() -> {get_write_lock, key(), not_found, R()} end,
        fun() -> {release_write_lock, R()} end,
        fun() -> {write, R(), key(), R(), lease()} end,
        fun() -> {update, R(), key(), R()} end,
        fun() -> {extend_lease, R(), key(), R(), lease()} end,
        fun() -> {release, key(), R(), R()} end,
        fun() -> {wait_for, key(), wait_timeout()} end,
        fun() -> {wait_for_release, key(), wait_timeout()} end,
        fun() -> {set_nodes, node_list(), node_list()} end,
        fun() -> {set_w, R()} end,
        fun() -> {set_w, rand:uniform(5) - 2} end,
        fun() -> get_debug_state end,
        fun() -> list_to_tuple([pick(request_tags()) | [R() || _ <- lists:seq(1, rand:uniform(6) - 1)]]) end
    ]).

request_tags() ->
    [get_write_lock, release_write_lock, write, update, extend_lease, release, wait_for, wait_for_release,
     set_nodes, set_w, get_debug_state].

key() -> pick([fun() -> rand:uniform(20) end, fun() -> term(1) end]).

lease() ->
    pick([
        fun() -> rand:uniform(100000) end,
        fun() -> -rand:uniform(1000) end,
        fun() -> rand:uniform() * 1000 end,
        fun() -> 1 bsl (30 + rand:uniform(100)) end,
        infinity,
        fun() -> term(1) end
    ]).

%% Short, negative or not a number: never a long wait.
wait_timeout() ->
    pick([
        fun() -> rand:uniform(200) - 1 end,
        fun() -> -rand:uniform(1000) end,
        fun() -> rand:uniform() * 200 end,
        fun() -> pick([x, <<"1">>, "10", {1}, [1], make_ref(), self()]) end
    ]).

node_list() ->
    pick([
        fun() -> [atom() || _ <- lists:seq(1, rand:uniform(4) - 1)] end,
        fun() -> [atom() | atom()] end,
        fun() -> [atom(), leaf()] end,
        fun() -> term(2) end
    ]).

log_entries() ->
    [
        pick([
            fun() -> {write, key(), term(1), lease()} end,
            fun() -> {extend_lease, key(), term(1), lease()} end,
            fun() -> {release, key()} end,
            fun() -> {update, key(), term(1)} end,
            fun() -> term(2) end
        ])
     || _ <- lists:seq(1, rand:uniform(5) - 1)
    ] ++ pick([[], improper_tail]).

shaped_message() ->
    R = fun() -> term(2) end,
    pick([
        fun() -> {locker_wakes, R()} end,
        fun() -> {locker_wakes, [R() || _ <- lists:seq(1, rand:uniform(3))]} end,
        fun() -> {locker_wakes, [{rand:uniform(50) - 1, R()}]} end,
        fun() -> {timeout, R(), R()} end,
        fun() -> {timeout, make_ref(), wakeup} end,
        fun() -> {'DOWN', R(), process, R(), R()} end,
        fun() -> {'DOWN', make_ref(), process, {locker, atom()}, R()} end,
        fun() -> {locker_rewatch, R()} end,
        fun() -> {'$gen_cast', R()} end,
        fun() -> {'$gen_call', R()} end,
        fun() -> {'$gen_call', R(), R(), R()} end,
        fun() -> {system, R()} end,
        fun() -> pick([expire_leases, expire_locks, sweep_more, push_trans_log]) end
    ]).

%% A From that is not {Pid, Tag}.
bad_from() ->
    pick([
        not_a_from,
        fun() -> leaf() end,
        fun() -> {} end,
        fun() -> {self()} end,
        fun() -> {self(), make_ref(), x} end,
        fun() -> {leaf(), make_ref()} end,
        fun() -> [self() | make_ref()] end,
        fun() -> term(2) end
    ]).

%% A random term at most Depth levels deep.
term(0) ->
    leaf();
term(Depth) ->
    D = Depth - 1,
    case rand:uniform(9) of
        N when N =< 3 -> leaf();
        4 -> [term(D) || _ <- lists:seq(1, rand:uniform(5) - 1)];
        5 -> [term(D) | term(D)];
        6 -> list_to_tuple([term(D) || _ <- lists:seq(1, rand:uniform(7) - 1)]);
        7 -> maps:from_list([{term(D), term(D)} || _ <- lists:seq(1, rand:uniform(4) - 1)]);
        8 -> list_to_tuple([atom() | [term(D) || _ <- lists:seq(1, rand:uniform(5) - 1)]]);
        9 -> [atom() || _ <- lists:seq(1, rand:uniform(3))]
    end.

leaf() ->
    pick([
        fun() -> rand:uniform(1000) - 500 end,
        fun() -> rand:uniform(1 bsl 62) * pick([1, -1]) end,
        fun() -> rand:uniform(1 bsl 62) bsl rand:uniform(200) end,
        fun() -> (rand:uniform() - 0.5) * math:pow(10, rand:uniform(300)) end,
        -0.0,
        fun atom/0,
        fun atom/0,
        fun() -> crypto_bytes(rand:uniform(40) - 1) end,
        fun() -> <<(rand:uniform(127)):7>> end,
        fun() -> [rand:uniform(1114111) || _ <- lists:seq(1, rand:uniform(5))] end,
        fun() -> make_ref() end,
        fun() -> alias() end,
        fun() -> pick(get(pids)) end,
        fun() -> hd(erlang:ports()) end,
        fun() -> fun() -> ok end end,
        fun() -> fun lists:sort/1 end,
        [],
        {},
        #{}
    ]).

%% Atoms the server knows (and some it does not). Not the ones that make
%% a well-formed system message an operator's command (suspend, terminate,
%% replace_state, debug, change_code): those are served as such.
atom() ->
    pick([get_write_lock, release_write_lock, write, update, extend_lease, release, wait_for, wait_for_release,
          set_nodes, set_w, get_debug_state, trans_log, locker_wakes, locker_rewatch, expire_leases, expire_locks,
          push_trans_log, sweep_more, timeout, wakeup, 'DOWN', process, locker, '$gen_call', '$gen_cast', system,
          'EXIT', alias, ok, error, not_found, infinity, undefined, true, false, get_state, get_status, badarg,
          kill, normal, shutdown, '$locker_token', '$locker_down', x, '', 'nonode@nohost', 'no_such@127.0.0.1',
          node(), 'ä']).

pick(L) when is_list(L) ->
    case lists:nth(rand:uniform(length(L)), L) of
        F when is_function(F, 0) -> F();
        X -> X
    end.

shuffle(L) ->
    [X || {_, X} <- lists:sort([{rand:uniform(), X} || X <- L])].

crypto_bytes(N) -> list_to_binary([rand:uniform(256) - 1 || _ <- lists:seq(1, N)]).

%%--------------------------------------------------------------------
%% The application on a peer, and lockerd
%%--------------------------------------------------------------------

%% A peer running the locker application with its supervisor (one master,
%% W = 1), nothing started from this node.
app_peer(Prefix, Config) ->
    {Peer, Node} = locker_ct:start_bare_peer(list_to_atom(unique(Prefix)), []),
    ets:insert(?config(cleanup, Config), {peer, Peer}),
    [ok = rpc:call(Node, application, set_env, [locker, K, V]) || {K, V} <- [{start_server, true}, {w, 1}, {masters, [Node]}]],
    {ok, _} = rpc:call(Node, application, ensure_all_started, [locker]),
    Node.

%% Starts lockerd (built incrementally, as the lockerd suite does) as
%% rb_ld_*@127.0.0.1, its output in a file of the case's priv_dir; returns
%% once it is ready.
lockerd(Config) ->
    #{lockerd := Bin} = locker_ct:lockerd_binaries(),
    Name = unique("rb_ld") ++ "@127.0.0.1",
    Log = filename:join(?config(priv_dir, Config), Name ++ ".log"),
    Args = ["--name", Name, "--cookie", atom_to_list(erlang:get_cookie()), "--announce"],
    LD = locker_ct:start_os(Bin, Args, Log),
    ets:insert(?config(cleanup, Config), {os, LD}),
    LD#{node => list_to_atom(Name)}.
