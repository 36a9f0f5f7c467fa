%% Multi-node tests of the locker wire protocol and coordinator: real BEAM
%% nodes started with OTP's `peer', each running its own `locker' server
%% and NIF store. Timers are cancelled as in the original suite, so time
%% is driven by hand (`push_trans_log', `expire_leases'); waits are on
%% messages (`wait_for', `wait_for_release', monitors), never on sleeps.
-module(locker_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_suite/1, end_per_suite/1, init_per_testcase/2, end_per_testcase/2]).
-export([
    api/1,
    quorum/1,
    concurrent_lockers_never_both_win/1,
    no_quorum_possible/1,
    release_without_quorum/1,
    one_node_down/1,
    killed_server_leaves_quorum/1,
    lease_extend/1,
    expire_leases/1,
    extend_propagates/1,
    add_remove_node/1,
    replica/1,
    promote/1,
    wait_for/1,
    wait_for_race/1,
    wait_for_release/1,
    update/1,
    master_dirty_read/1,
    raw_requests_every_tag_shape/1,
    bad_input_never_stops_server/1,
    server_restart_keeps_leases/1,
    fencing_tokens_increase/1,
    server_dies_mid_operation/1,
    partial_commit_is_no_quorum/1,
    flood_of_unknown_requests/1,
    local_server_killed_under_load/1
]).

all() ->
    [
        api,
        quorum,
        concurrent_lockers_never_both_win,
        no_quorum_possible,
        release_without_quorum,
        one_node_down,
        killed_server_leaves_quorum,
        lease_extend,
        expire_leases,
        extend_propagates,
        add_remove_node,
        replica,
        promote,
        wait_for,
        wait_for_race,
        wait_for_release,
        update,
        master_dirty_read,
        raw_requests_every_tag_shape,
        bad_input_never_stops_server,
        server_restart_keeps_leases,
        fencing_tokens_increase,
        server_dies_mid_operation,
        partial_commit_is_no_quorum,
        flood_of_unknown_requests,
        local_server_killed_under_load
    ].

%%--------------------------------------------------------------------
%% Setup
%%--------------------------------------------------------------------

init_per_suite(Config) ->
    ok = locker_ct:ensure_distributed(),
    Config.

end_per_suite(_Config) ->
    ok.

init_per_testcase(_Case, Config) ->
    Peers = [start_peer(N) || N <- [a, b, c]],
    %% As the original's suite does: drive time by hand.
    [begin
        {ok, _, _, R1, R2, R3} = rpc:call(Node, locker, get_debug_state, []),
        [{ok, cancel} = rpc:call(Node, timer, cancel, [R]) || R <- [R1, R2, R3]]
     end || {_, Node} <- Peers],
    [{peers, Peers} | Config].

end_per_testcase(_Case, Config) ->
    [catch peer:stop(P) || {P, _} <- ?config(peers, Config)],
    ok.

start_peer(Name) ->
    locker_ct:start_peer(
        list_to_atom(atom_to_list(Name) ++ "_" ++ integer_to_list(erlang:unique_integer([positive]))), []
    ).

start_server(Node) ->
    locker_ct:start_server(Node, [2, 1000, 1000, 100]).

nodes_of(Config) ->
    [N || {_, N} <- ?config(peers, Config)].

peer_of(Node, Config) ->
    {P, Node} = lists:keyfind(Node, 2, ?config(peers, Config)),
    P.

state(N) ->
    rpc:call(N, locker, get_debug_state, []).

call(N, F, A) ->
    rpc:call(N, locker, F, A).

%% Pushes the masters' logs and waits until replica R holds Key (a
%% message, not a sleep: wait_for replies when the log arrives).
push_and_await(Masters, R, Key) ->
    rpc:sbcast(Masters, locker, push_trans_log),
    call(R, wait_for, [Key, 5000]).

%% Stops a peer and waits for the nodedown.
stop_node(Node, Config) ->
    erlang:monitor_node(Node, true),
    peer:stop(peer_of(Node, Config)),
    receive
        {nodedown, Node} -> ok
    after 5000 -> ct:fail({still_up, Node})
    end.

%%--------------------------------------------------------------------
%% Cases
%%--------------------------------------------------------------------

api(Config) ->
    [A, B, C] = Cluster = nodes_of(Config),
    ok = call(A, set_nodes, [Cluster, Cluster, []]),
    {Cluster, [], 2} = call(A, get_meta, []),
    ok = call(A, set_w, [[A], 3]),
    {Cluster, [], 3} = call(A, get_meta, []),
    ok = call(A, set_w, [[A], 2]),

    {ok, 2, 3, 3} = call(A, lock, [123, self()]),
    Pid = rpc:call(C, erlang, whereis, [locker]),
    true = rpc:call(C, erlang, exit, [Pid, kill]),
    false = rpc:call(C, erlang, is_process_alive, [Pid]),
    {ok, 2, 2, 2} = call(A, release, [123, self()]),
    {ok, 2, 2, 2} = call(B, lock, [123, self()]),
    {error, no_quorum} = call(A, update, [123, wrong_value, new_value]),
    {error, no_quorum} = call(A, lock, [123, self()]),
    ok = call(B, extend_lease, [123, self(), 2000]),
    {error, no_quorum} = call(B, extend_lease, [123, other_owner, 2000]),
    [{write_locks, 0}, {leases, 1}] = call(A, summary, []),
    {Ms, {ok, 2, 2, 2}} = call(A, lag, []),
    true = is_float(Ms).

quorum(Config) ->
    [A, B, _] = Cluster = nodes_of(Config),
    ok = call(A, set_nodes, [Cluster, Cluster, []]),
    Parent = self(),
    [spawn(fun() -> Parent ! {I, call(N, lock, [123, Parent])} end) || {I, N} <- [{1, A}, {2, B}]],
    Results = [receive {I, R} -> R after 5000 -> ct:fail(timeout) end || I <- [1, 2]],
    Wins = [R || {ok, _, _, _} = R <- Results],
    ?assert(length(Wins) =< 1),
    %% The winner is stored on at least W masters and no master holds
    %% another value (a master that promised the loser in between refuses
    %% the winner's write rather than displace the promise). No promise
    %% is left anywhere.
    Reads = [call(N, dirty_read, [123]) || N <- Cluster],
    [?assert(length([ok || {ok, P} <- Reads, P =:= Parent]) >= 2, Reads) || Wins =/= []],
    ?assertEqual([], [R || {ok, P} = R <- Reads, P =/= Parent]),
    [{ok, [], _, _, _, _} = state(N) || N <- Cluster],
    ok.

%% Many keys, three coordinators each: at most one `ok' per key, and every
%% node agrees on the winner.
concurrent_lockers_never_both_win(Config) ->
    [A, B, C] = Cluster = nodes_of(Config),
    ok = call(A, set_nodes, [Cluster, Cluster, []]),
    Parent = self(),
    Keys = lists:seq(1, 60),
    Coordinators = [{A, a}, {B, b}, {C, c}],
    [
        spawn(fun() -> Parent ! {K, V, call(N, lock, [K, V, 60000])} end)
     || K <- Keys, {N, V} <- Coordinators
    ],
    Results = [receive {K, V, R} -> {K, V, R} after 10000 -> ct:fail(timeout) end || K <- Keys, _ <- Coordinators],
    lists:foreach(
        fun(K) ->
            Winners = [V || {K2, V, {ok, 2, _, _}} <- Results, K2 =:= K],
            ?assert(length(Winners) =< 1, {K, Winners}),
            Reads = [call(N, dirty_read, [K]) || N <- Cluster],
            case Winners of
                [W] ->
                    %% At least W masters store the winner, and no master
                    %% another value (a loser's promise may have kept a
                    %% master from storing the winner: that master then
                    %% refused the winner's write rather than displace it).
                    ?assert(length([ok || {ok, V} <- Reads, V =:= W]) >= 2, {K, Reads}),
                    ?assertEqual([], [R || {ok, V} = R <- Reads, V =/= W], {K, Reads});
                [] ->
                    ok
            end
        end,
        Keys
    ),
    Won = length([ok || {_, _, {ok, _, _, _}} <- Results]),
    ct:log("~b of ~b keys won under contention", [Won, length(Keys)]),
    ?assert(Won > 0).

no_quorum_possible(Config) ->
    [A, B, C] = nodes_of(Config),
    ok = call(A, set_nodes, [[A, B, C], [A, B], []]),
    %% A split: two coordinators each hold one master's promise.
    ok = gen_server:call({locker, A}, {get_write_lock, 123, not_found, tag_x}),
    ok = gen_server:call({locker, B}, {get_write_lock, 123, not_found, tag_y}),
    {error, no_quorum} = call(A, lock, [123, self()]),
    {error, no_quorum} = call(B, lock, [123, self()]),
    {error, not_found} = call(A, dirty_read, [123]),
    {error, not_found} = call(B, dirty_read, [123]),
    ok = gen_server:call({locker, A}, {release_write_lock, tag_x}),
    ok = gen_server:call({locker, B}, {release_write_lock, tag_y}),
    {ok, [], [], _, _, _} = state(A),
    {ok, [], [], _, _, _} = state(B),
    {ok, [], [], _, _, _} = state(C),
    {ok, 2, 2, 2} = call(A, lock, [123, self()]).

release_without_quorum(Config) ->
    [A, B, C] = Cluster = nodes_of(Config),
    ok = call(A, set_nodes, [Cluster, Cluster, []]),
    Value = self(),
    {ok, 2, 3, 3} = call(A, lock, [123, Value]),
    [{ok, Value} = call(N, dirty_read, [123]) || N <- Cluster],
    stop_node(A, Config),
    stop_node(B, Config),
    {error, no_quorum} = call(C, release, [123, Value]),
    {ok, Value} = call(C, dirty_read, [123]).

one_node_down(Config) ->
    [A, B, C] = Cluster = nodes_of(Config),
    ok = call(A, set_nodes, [Cluster, Cluster, []]),
    stop_node(C, Config),
    Pid = self(),
    {ok, 2, 2, 2} = call(A, lock, [123, Pid]),
    {ok, Pid} = call(A, dirty_read, [123]),
    {ok, Pid} = call(B, dirty_read, [123]),
    {ok, [], [{123, Pid, _}], _, _, _} = state(A),
    {ok, [], [{123, Pid, _}], _, _, _} = state(B),
    {ok, 2, 2, 2} = call(B, release, [123, Pid]).

killed_server_leaves_quorum(Config) ->
    [A, B, C] = Cluster = nodes_of(Config),
    ok = call(A, set_nodes, [Cluster, Cluster, []]),
    Pid = rpc:call(B, erlang, whereis, [locker]),
    true = rpc:call(B, erlang, exit, [Pid, kill]),
    {ok, 2, 2, 2} = call(A, lock, [k1, v]),
    {ok, 2, 2, 2} = call(C, update, [k1, v, v2]),
    {ok, v2} = call(C, dirty_read, [k1]),
    %% With a second server gone there is no quorum, and the call returns
    %% as soon as the monitors fire, not at the timeout.
    Pid2 = rpc:call(C, erlang, whereis, [locker]),
    true = rpc:call(C, erlang, exit, [Pid2, kill]),
    {Micros, {error, no_quorum}} = timer:tc(fun() -> call(A, lock, [k2, v, 2000, 60000]) end),
    ?assert(Micros < 30000000).

lease_extend(Config) ->
    [A, B, C] = Cluster = nodes_of(Config),
    ok = call(A, set_nodes, [Cluster, Cluster, []]),
    Pid = self(),
    {ok, _, _, _} = call(A, lock, [123, Pid, 300]),
    [{ok, Pid} = call(N, dirty_read, [123]) || N <- Cluster],
    %% The lease runs out: every node sees it gone with no sweep at all.
    {ok, released} = call(C, wait_for_release, [123, 5000]),
    [{error, not_found} = call(N, dirty_read, [123]) || N <- Cluster],
    {ok, _, _, _} = call(A, lock, [123, Pid, 300]),
    ok = call(B, extend_lease, [123, Pid, 60000]),
    rpc:sbcast(Cluster, locker, expire_leases),
    [{ok, Pid} = call(N, dirty_read, [123]) || N <- Cluster],
    {ok, [], [{123, Pid, ExpA}], _, _, _} = state(A),
    ?assert(ExpA > erlang:system_time(millisecond) + 50000).

expire_leases(Config) ->
    [A, B, C] = Cluster = nodes_of(Config),
    ok = call(A, set_nodes, [Cluster, Cluster, []]),
    Pid = self(),
    {ok, _, _, _} = call(A, lock, [123, Pid, 150]),
    {ok, _, _, _} = call(A, lock, [abc, Pid, 60000]),
    {ok, _, _, _} = call(B, lock, [<<"ms">>, Pid, 1]),
    [{ok, Pid} = call(N, dirty_read, [abc]) || N <- Cluster],
    {ok, released} = call(B, wait_for_release, [123, 5000]),
    rpc:sbcast(Cluster, locker, expire_leases),
    %% A call from this process reaches each server after the sweep it
    %% sent (one sender, one receiver: in order), so the sweep is done.
    [{ok, _, _, _, _, _} = gen_server:call({locker, N}, get_debug_state) || N <- Cluster],
    [{error, not_found} = call(N, dirty_read, [K]) || N <- Cluster, K <- [123, <<"ms">>]],
    [{ok, Pid} = call(N, dirty_read, [abc]) || N <- Cluster],
    {ok, [], [{abc, Pid, _}], _, _, _} = state(C),
    [{write_locks, 0}, {leases, 1}] = call(C, summary, []).

extend_propagates(Config) ->
    [A, B, C] = nodes_of(Config),
    ok = call(A, set_nodes, [[A, B, C], [A, B], []]),
    Pid = self(),
    {ok, 2, 2, 2} = call(A, lock, [123, Pid]),
    {error, not_found} = call(C, dirty_read, [123]),
    %% C joins the masters and learns the key through extend_lease.
    ok = call(A, set_nodes, [[A, B, C], [A, B, C], []]),
    ok = call(A, set_nodes, [[A, B, C], [A, B], [C]]),
    ok = call(A, extend_lease, [123, Pid, 60000]),
    {ok, Pid} = push_and_await([A, B], C, 123),
    {ok, [], [{123, Pid, _}], _, _, _} = state(C).

add_remove_node(Config) ->
    [A, B, _C] = Cluster = nodes_of(Config),
    ok = call(A, set_nodes, [Cluster, Cluster, []]),
    {ok, 2, 3, 3} = call(A, lock, [123, self()]),
    {ok, 2, 3, 3} = call(B, release, [123, self()]),
    ok = call(A, set_nodes, [Cluster, [A, B], []]),
    {[A, B], [], 2} = call(B, get_meta, []),
    {ok, 2, 2, 2} = call(A, lock, [123, self()]).

replica(Config) ->
    [A, B, C] = Cluster = nodes_of(Config),
    ok = call(A, set_nodes, [Cluster, [A, B], [C]]),
    [{[A, B], [C], 2} = call(N, get_meta, []) || N <- Cluster],
    Pid = self(),
    {ok, 2, 2, 2} = call(A, lock, [123, Pid]),
    {ok, Pid} = call(A, dirty_read, [123]),
    {ok, Pid} = call(B, dirty_read, [123]),
    {error, not_found} = call(C, dirty_read, [123]),
    %% One master's push (a second push still in flight could re-write the
    %% key on C after the release below: the protocol's replicas see each
    %% master's log on its own schedule).
    {ok, Pid} = push_and_await([A], C, 123),
    {ok, Pid} = call(C, dirty_read, [123]),
    %% Release reaches the replica directly.
    {ok, 2, 2, 3} = call(A, release, [123, Pid]),
    {error, not_found} = call(C, dirty_read, [123]),
    {ok, 2, 2, 2} = call(A, lock, [456, Pid]),
    stop_node(B, Config),
    {error, no_quorum} = call(A, release, [456, Pid]).

promote(Config) ->
    [A, B, C] = Cluster = nodes_of(Config),
    ok = call(A, set_nodes, [Cluster, [A, B], [C]]),
    Pid = self(),
    {ok, 2, 2, 2} = call(A, lock, [123, Pid]),
    {ok, Pid} = push_and_await([A], C, 123),
    ok = call(A, set_nodes, [Cluster, [A, B, C], []]),
    {ok, 2, 3, 3} = call(A, release, [123, Pid]).

wait_for(Config) ->
    [A, B, C] = Cluster = nodes_of(Config),
    ok = call(A, set_nodes, [Cluster, [A, B], [C]]),
    Pid = self(),
    {ok, 2, 2, 2} = call(A, lock, [123, Pid]),
    {error, not_found} = call(C, dirty_read, [123]),
    {badrpc, {'EXIT', {timeout, _}}} = call(C, wait_for, [123, 100]),
    %% A waiter blocked on C is woken by the replicated write.
    Parent = self(),
    spawn(fun() -> Parent ! {waited, call(C, wait_for, [123, 5000])} end),
    wait_until_waiting(C, 1),
    rpc:sbcast([A, B], locker, push_trans_log),
    receive {waited, R} -> {ok, Pid} = R after 5000 -> ct:fail(no_wakeup) end.

%% The original loses a write that lands between wait_for's dirty read and
%% its call to the server; the server now checks the store on the call.
wait_for_race(Config) ->
    [A, B, C] = Cluster = nodes_of(Config),
    ok = call(A, set_nodes, [Cluster, [A, B], [C]]),
    {ok, 2, 2, 2} = call(A, lock, [race, here]),
    {ok, here} = push_and_await([A, B], C, race),
    %% What a wait_for whose dirty read missed the key sends next:
    {ok, here} = gen_server:call({locker, C}, {wait_for, race, 1000}, 2000),
    %% And wait_for_release on a key released meanwhile answers at once.
    {ok, released} = gen_server:call({locker, C}, {wait_for_release, gone, 1000}, 2000).

wait_for_release(Config) ->
    [A, B, C] = Cluster = nodes_of(Config),
    ok = call(A, set_nodes, [Cluster, [A, B], [C]]),
    Pid = self(),
    {ok, 2, 2, 2} = call(A, lock, [123, Pid, 500, 1000]),
    {error, key_not_locked} = call(C, wait_for_release, [123, 100]),
    {ok, Pid} = push_and_await([A], C, 123),
    %% Woken by expiry (no sweep timer: the server arms one per waiter).
    {ok, released} = call(C, wait_for_release, [123, 5000]),
    {error, not_found} = call(C, dirty_read, [123]),
    %% Woken by an explicit release, on a master and on the replica.
    {ok, 2, 2, 2} = call(A, lock, [456, Pid, 60000]),
    {ok, Pid} = push_and_await([A], C, 456),
    Parent = self(),
    [spawn(fun() -> Parent ! {released, N, call(N, wait_for_release, [456, 5000])} end) || N <- [B, C]],
    wait_until_waiting(B, 1),
    wait_until_waiting(C, 1),
    {ok, 2, 2, 3} = call(A, release, [456, Pid]),
    [receive {released, N, R} -> {ok, released} = R after 5000 -> ct:fail({no_wakeup, N}) end || N <- [B, C]],
    ok.

update(Config) ->
    [A, B, C] = Cluster = nodes_of(Config),
    ok = call(A, set_nodes, [Cluster, [A, B], [C]]),
    {ok, 2, 2, 2} = call(A, lock, [123, 41, 300]),
    {ok, 2, 2, 2} = call(B, update, [123, 41, 42]),
    {ok, 42} = call(B, dirty_read, [123]),
    %% C's waiter wakes on the logged write; the update is in the same batch.
    {ok, V} = push_and_await([A], C, 123),
    true = lists:member(V, [41, 42]),
    {ok, 42} = call(C, dirty_read, [123]),
    {error, no_quorum} = call(A, update, [123, 41, random_value]),
    %% Update keeps the expiry: the lease still runs out (on the replica,
    %% 300 ms after the log arrived).
    {ok, released} = call(A, wait_for_release, [123, 5000]),
    [true = lists:member(call(N, wait_for_release, [123, 5000]), [{ok, released}, {error, key_not_locked}])
     || N <- Cluster],
    {Res, []} = rpc:multicall(Cluster, locker, dirty_read, [123]),
    [{error, not_found}] = lists:usort(Res).

master_dirty_read(Config) ->
    [A, B, C] = Cluster = nodes_of(Config),
    ok = call(A, set_nodes, [Cluster, [A, B], [C]]),
    {ok, 2, 2, 2} = call(A, lock, [mdr, value]),
    %% C has not received the log, but reads from a master.
    {error, not_found} = call(C, dirty_read, [mdr]),
    {ok, value} = call(C, master_dirty_read, [mdr]),
    {ok, value} = call(A, master_dirty_read, [mdr]),
    {error, not_found} = call(C, master_dirty_read, [nope]).

%% Every request of the protocol table, sent as a raw '$gen_call' with
%% each tag shape a caller may use; the reply must come back with the tag.
raw_requests_every_tag_shape(Config) ->
    [A, B, C] = Cluster = nodes_of(Config),
    ok = call(A, set_nodes, [Cluster, [A, B], [C]]),
    Shapes = [
        fun() -> make_ref() end,
        fun() -> {make_ref(), node()} end,
        fun() -> [alias | alias()] end
    ],
    Requests = fun(T) ->
        [
            {{get_write_lock, {raw, T}, not_found, T}, ok},
            {{get_write_lock, {raw, T}, not_found, other}, {error, already_locked}},
            {{release_write_lock, T}, ok},
            {{get_write_lock, {raw, T}, some_value, T}, {error, not_expected_value}},
            {{get_write_lock, {raw, T}, not_found, T}, ok},
            {{write, T, {raw, T}, v, 60000}, ok},
            %% Phase two without a live promise does not displace a value.
            {{update, T, {raw, T}, v2}, {error, no_promise}},
            {{get_write_lock, {raw, T}, v, T}, ok},
            {{update, T, {raw, T}, v2}, ok},
            {{get_write_lock, {raw, T}, v2, T}, ok},
            {{extend_lease, T, {raw, T}, v2, 60000}, ok},
            {{release, {raw, T}, wrong, T}, {error, not_owner}},
            {{release, {raw, T}, v2, T}, ok},
            {{release, {raw, T}, v2, T}, {error, not_found}},
            {{wait_for_release, {raw, T}, 100}, {ok, released}},
            {{set_w, 2}, ok},
            {{set_nodes, [A, B], [C]}, ok}
        ]
    end,
    lists:foreach(
        fun(Shape) ->
            lists:foreach(
                fun({Req, Expected}) ->
                    Tag = Shape(),
                    Reply = raw_call(B, Tag, Req),
                    ?assertEqual(Expected, Reply, {Req, Tag})
                end,
                Requests(erlang:phash2(Shape()))
            ),
            Tag = Shape(),
            {ok, _, _, _, _, _} = raw_call(B, Tag, get_debug_state),
            {ok, 2, 2, 2} = call(A, lock, [{wf, Tag}, v]),
            {ok, v} = raw_call(B, Shape(), {wait_for, {wf, Tag}, 100})
        end,
        Shapes
    ).

raw_call(Node, Tag, Request) ->
    Mref = erlang:monitor(process, {locker, Node}),
    {locker, Node} ! {'$gen_call', {self(), Tag}, Request},
    Reply =
        receive
            {Tag, R} -> R;
            {'DOWN', Mref, _, _, Reason} -> ct:fail({down, Reason})
        after 5000 -> ct:fail({no_reply, Request})
        end,
    erlang:demonitor(Mref, [flush]),
    Reply.

bad_input_never_stops_server(Config) ->
    [A, B, _] = Cluster = nodes_of(Config),
    ok = call(A, set_nodes, [Cluster, Cluster, []]),
    Pid = rpc:call(B, erlang, whereis, [locker]),
    {error, {unknown_request, {no_such, request}}} = gen_server:call({locker, B}, {no_such, request}),
    {error, {unknown_request, 42}} = gen_server:call({locker, B}, 42),
    {error, badarg} = gen_server:call({locker, B}, {write, t, k, v, not_a_number}),
    {error, badarg} = gen_server:call({locker, B}, {extend_lease, t, k, v, <<"x">>}),
    gen_server:cast({locker, B}, {no_such, cast}),
    gen_server:cast({locker, B}, {trans_log, A, not_a_list}),
    gen_server:cast({locker, B}, {trans_log, A, [garbage, {write}, {write, tl, v, 60000}, {release} | improper]}),
    {locker, B} ! {some, random, message},
    {locker, B} ! {timeout, make_ref(), wakeup},
    %% The server is the same process and still serves the protocol.
    {ok, 2, 3, 3} = call(A, lock, [after_garbage, v]),
    Pid = rpc:call(B, erlang, whereis, [locker]),
    {ok, v} = call(B, dirty_read, [after_garbage]).

%% A flood of unknown calls, casts and messages (100k each) is answered
%% or dropped, and leaves the node's memory where it was: nothing is kept
%% per bad request (no atoms, no state), and the leases survive.
flood_of_unknown_requests(Config) ->
    [A, B, _] = Cluster = nodes_of(Config),
    ok = call(A, set_nodes, [Cluster, Cluster, []]),
    {ok, 2, 3, 3} = call(A, lock, [kept, v, 600000]),
    Server = rpc:call(B, erlang, whereis, [locker]),
    Mem = fun() ->
        _ = rpc:call(B, erlang, garbage_collect, [Server]),
        rpc:call(B, erlang, memory, [total])
    end,
    %% Every call is answered {error, {unknown_request, _}}, and the
    %% warnings are written (by the logger's own process). Names in the
    %% requests look like atoms-to-be: none may become one.
    Flood = fun(From, To) ->
        case locker_ct:flood_unknown(B, From, To) of
            ok ->
                ok;
            Missing ->
                Info = [message_queue_len, current_stacktrace, status],
                ct:fail({Missing, rpc:call(B, erlang, process_info, [Server, Info])})
        end,
        ok = rpc:call(B, logger_std_h, filesync, [flood])
    end,
    %% B logs the warnings to a file of its own rather than to this
    %% node's output. (Its server was started from here: with this node's
    %% group leader, logger would forward every event to this node.)
    true = rpc:call(B, erlang, group_leader, [rpc:call(B, erlang, whereis, [user]), Server]),
    ok = rpc:call(B, logger, remove_handler, [default]),
    LogFile = filename:join(?config(priv_dir, Config), "flood.log"),
    ok = rpc:call(B, logger, add_handler, [flood, logger_std_h, #{config => #{file => LogFile}}]),
    %% A first small flood warms up logging.
    Flood(1, 1000),
    Before = Mem(),
    N = 100000,
    Flood(1001, N + 1000),
    {ok, v} = call(B, dirty_read, [kept]),
    ok = call(A, extend_lease, [kept, v, 600000]),
    After = Mem(),
    ct:log("memory of ~p: ~b bytes before, ~b after ~b unknown calls, casts and messages", [B, Before, After, N]),
    %% Each call carried 1 KB: had the node kept them, it would have grown
    %% by 100 MB. Allow 8 MB for the logger's and allocators' slack.
    ?assert(After - Before < 8 * 1024 * 1024),
    {ok, Logged} = file:read_file(LogFile),
    ?assertNotEqual(nomatch, binary:match(Logged, <<"unknown request">>)),
    %% Not one line per bad request: the rest were counted.
    ?assertNotEqual(nomatch, binary:match(Logged, <<"warnings about bad input suppressed">>)),
    %% None of the names sent became an atom.
    [{badrpc, {'EXIT', {badarg, _}}} = rpc:call(B, erlang, list_to_existing_atom, ["no_such_" ++ integer_to_list(I)])
     || I <- lists:seq(1, N + 1000, 997)],
    ok.

%% Leases live in the NIF store: a supervisor restart of the server
%% (after a crash) keeps them, so a restarted master does not forget keys.
server_restart_keeps_leases(Config) ->
    [A, B, C] = Cluster = nodes_of(Config),
    ok = call(A, set_nodes, [Cluster, Cluster, []]),
    {ok, 2, 3, 3} = call(A, lock, [kept, v, 60000]),
    Pid = rpc:call(B, erlang, whereis, [locker]),
    true = rpc:call(B, erlang, exit, [Pid, kill]),
    {ok, _} = start_server(B),
    ok = call(A, set_nodes, [Cluster, Cluster, []]),
    {ok, v} = call(B, dirty_read, [kept]),
    {error, no_quorum} = call(C, lock, [kept, other]),
    {ok, 2, 3, 3} = call(B, release, [kept, v]).

%% Waits (on replies, not sleeps) until Node's server holds N waiters.
wait_until_waiting(Node, N) ->
    case rpc:call(Node, locker_nif, stats, []) of
        #{waiters := W} when W >= N -> ok;
        _ -> erlang:yield(), wait_until_waiting(Node, N)
    end.

%% Every acquisition's fencing token is above the previous holder's, from
%% any coordinator, across releases and expiries, and after a master is
%% replaced by a fresh node (quorum held by the two others); a stale token
%% is refused with the floor, and plain-ref tags (original coordinators)
%% are still served as before.
fencing_tokens_increase(Config) ->
    [A, B, C] = Cluster = nodes_of(Config),
    ok = call(A, set_nodes, [Cluster, Cluster, []]),
    Round = fun(Coordinator, Lease) ->
        {ok, T} = call(Coordinator, lock_with_token, [fenced, Coordinator, Lease, 5000]),
        T
    end,
    T1 = Round(A, 60000),
    {ok, 2, 3, 3} = call(A, release, [fenced, A]),
    T2 = Round(B, 100),
    %% Expiry instead of release.
    {ok, released} = call(C, wait_for_release, [fenced, 5000]),
    T3 = Round(C, 60000),
    {ok, 2, 3, 3} = call(C, release, [fenced, C]),
    ?assert(T1 < T2 andalso T2 < T3, {T1, T2, T3}),
    %% Replace C by a fresh, empty node with the same role.
    stop_node(C, Config),
    {_, C2} = start_peer(c),
    Cluster2 = [A, B, C2],
    ok = call(A, set_nodes, [Cluster2, Cluster2, []]),
    T4 = Round(C2, 60000),
    ?assert(T4 > T3, {T3, T4}),
    {ok, 2, 3, 3} = call(C2, release, [fenced, C2]),
    T5 = Round(A, 60000),
    ?assert(T5 > T4, {T4, T5}),
    {ok, 2, 3, 3} = call(A, release, [fenced, A]),
    %% A stale proposal is refused with the floor.
    {error, {stale_token, Floor}} =
        gen_server:call({locker, B}, {get_write_lock, fenced, not_found, {'$locker_token', make_ref(), 1}}),
    ?assert(Floor >= T5),
    %% Original-style tags carry no token and are served as always.
    ok = gen_server:call({locker, B}, {get_write_lock, fenced, not_found, make_ref()}),
    {ok, 2, 3, 3} = call(B, lock, [plain, v]),
    stop_node_quietly(C2).

stop_node_quietly(Node) ->
    erlang:monitor_node(Node, true),
    rpc:call(Node, init, stop, []),
    receive {nodedown, Node} -> ok after 5000 -> ok end.

%% A master's server that dies while a coordinator waits for its vote is
%% counted as missing at once (the coordinator's node watches the other
%% servers), not when the 60 s timeout runs out.
server_dies_mid_operation(Config) ->
    [A, B, C] = Cluster = nodes_of(Config),
    ok = call(A, set_nodes, [Cluster, Cluster, []]),
    Pid = rpc:call(C, erlang, whereis, [locker]),
    ok = rpc:call(C, sys, suspend, [Pid]),
    Parent = self(),
    spawn(fun() -> Parent ! {locked, call(A, lock, [mid, v, 60000, 60000])} end),
    %% Wait until C holds the request unanswered in its mailbox.
    wait_until(fun() -> element(2, rpc:call(C, erlang, process_info, [Pid, message_queue_len])) > 0 end),
    true = rpc:call(C, erlang, exit, [Pid, kill]),
    receive
        {locked, R} -> {ok, 2, 2, 2} = R
    after 20000 -> ct:fail(waited_for_the_timeout)
    end,
    %% Later operations skip C without waiting, until its server is back.
    {ok, 2, 2, 2} = call(B, release, [mid, v]),
    {ok, _} = start_server(C),
    ok = call(A, set_nodes, [Cluster, Cluster, []]),
    back_to_three_votes(A).

%% C's restarted server is watched again (every 500 ms while down): locks
%% soon get its vote again.
back_to_three_votes(A) ->
    case call(A, lock, [back, v]) of
        {ok, 2, 3, 3} ->
            ok;
        {ok, 2, 2, 2} ->
            {ok, _, _, _} = call(A, release, [back, v]),
            back_to_three_votes(A)
    end.

wait_until(F) ->
    case F() of
        true -> ok;
        false -> erlang:yield(), wait_until(F)
    end.

%% Every master promises the key but only one applies phase two (the
%% others lose the write: a relay registered as `locker' on B and C passes
%% every call to the real server except writes): fewer than W stored it,
%% so it is no success (the original answered {ok, 2, 3, 1}), the promises
%% left on B and C are dropped at once, and the lock can be taken by
%% another value right away.
partial_commit_is_no_quorum(Config) ->
    [A, B, C] = Cluster = nodes_of(Config),
    ok = call(A, set_nodes, [Cluster, Cluster, []]),
    Relays = [lose_writes(N) || N <- [B, C]],
    {error, no_quorum} = call(A, lock, [pk, v1, 60000, 300]),
    {error, no_quorum} = call(A, lock_with_token, [pk2, v1, 60000, 300]),
    [restore_server(R) || R <- Relays],
    %% A alone stored pk for v1 (no quorum holds it) and gave it up at
    %% once; B and C dropped the promises, so v2 takes pk now.
    {error, not_found} = call(A, dirty_read, [pk]),
    {ok, 2, 3, 3} = call(A, lock, [pk, v2, 60000, 2000]),
    %% The same for extend_lease: only A applies it.
    {ok, 2, 3, 3} = call(A, lock, [ek, v, 60000, 2000]),
    Relays2 = [lose_writes(N) || N <- [B, C]],
    {error, no_quorum} = call(A, extend_lease, [ek, v, 120000, 300]),
    [restore_server(R) || R <- Relays2],
    ok = call(A, extend_lease, [ek, v, 120000, 2000]).

%% Registers on Node, as `locker', a process that passes every message to
%% the real server and drops the calls of phase two (write, extend_lease)
%% and the one-round writes (cond_write, cond_extend).
lose_writes(Node) ->
    Server = rpc:call(Node, erlang, whereis, [locker]),
    true = rpc:call(Node, erlang, unregister, [locker]),
    Relay = spawn(Node, fun() -> relay(Server) end),
    true = rpc:call(Node, erlang, register, [locker, Relay]),
    {Node, Server, Relay}.

relay(Server) ->
    receive
        {'$gen_call', _, Req} when
            element(1, Req) =:= write;
            element(1, Req) =:= extend_lease;
            %% The one-round path's writes.
            element(1, Req) =:= cond_write;
            element(1, Req) =:= cond_extend
        ->
            relay(Server);
        stop -> ok;
        Msg -> Server ! Msg, relay(Server)
    end.

restore_server({Node, Server, Relay}) ->
    true = rpc:call(Node, erlang, unregister, [locker]),
    Relay ! stop,
    true = rpc:call(Node, erlang, register, [locker, Server]).

%% Coordinators on A keep locking and releasing while A's own `locker'
%% process is killed and restarted under them (its tables, its watch of
%% the other servers and its promises die with it). Every operation gives
%% its caller a definite answer (no exception: the original raised badarg
%% from the session's cleanup, after the lock was taken), and no promise is
%% left behind on any master once the callers are done (an orphan would
%% block its key for 10 s).
local_server_killed_under_load(Config) ->
    [A, B, C] = Cluster = nodes_of(Config),
    ok = call(A, set_nodes, [Cluster, Cluster, []]),
    Parent = self(),
    Workers = 12,
    Iterations = 60,
    [
        rpc:call(A, erlang, spawn, [fun() -> load_worker(Parent, Id, Iterations) end])
     || Id <- lists:seq(1, Workers)
    ],
    Kills = kill_locker_while_running(A, Cluster, Workers, 0),
    ct:log("killed A's locker ~b times under load", [Kills]),
    ?assert(Kills > 0),
    Results = collect_results([]),
    Exceptions = [R || {_, _, _, {exception, _, _}} = R <- Results],
    ?assertEqual([], Exceptions),
    Locked = length([ok || {lock, _, _, {ok, _, _, _}} <- Results]),
    Failed = length([ok || {lock, _, _, {error, no_quorum}} <- Results]),
    ct:log("~b locks, ~b no_quorum, ~b results", [Locked, Failed, length(Results)]),
    ?assert(Locked > 0),
    %% Every answer is a result or no_quorum, nothing else.
    ?assertEqual([], [R || {_, _, _, X} = R <- Results, not is_definite(X)]),
    %% No orphaned promise: all drop well before the 10 s lifetime.
    Deadline = erlang:monotonic_time(millisecond) + 3000,
    [no_promises_left(N, Deadline) || N <- Cluster],
    %% Keys released by their holder are free at once.
    Released = lists:usort([K || {release, K, _, {ok, _, _, _}} <- Results]),
    Held = lists:usort([K || {lock, K, _, {ok, _, _, _}} <- Results]) -- Released,
    [
        begin
            {ok, 2, _, _} = call(B, lock, [K, fresh, 60000]),
            {ok, 2, _, _} = call(C, release, [K, fresh])
        end
     || K <- Released -- Held
    ],
    ok.

load_worker(Parent, Id, Iterations) ->
    lists:foreach(
        fun(I) ->
            K = {load, Id, I},
            V = {Id, I, make_ref()},
            R = try_op(fun() -> locker:lock(K, V, 60000, 2000) end),
            Parent ! {result, {lock, K, V, R}},
            case R of
                {ok, _, _, _} ->
                    Parent ! {result, {release, K, V, try_op(fun() -> locker:release(K, V, 2000) end)}};
                _ ->
                    ok
            end
        end,
        lists:seq(1, Iterations)
    ),
    Parent ! {worker_done, Id}.

try_op(F) ->
    try
        F()
    catch
        Class:Reason -> {exception, Class, Reason}
    end.

is_definite({ok, _, _, _}) -> true;
is_definite({error, no_quorum}) -> true;
is_definite(_) -> false.

%% Kills A's server whenever a few more results came in, restarts it and
%% gives it the cluster view again, until every worker is done.
kill_locker_while_running(A, Cluster, 0, Kills) ->
    self() ! {workers_done, A, Cluster},
    Kills;
kill_locker_while_running(A, Cluster, Left, Kills) ->
    receive
        {worker_done, _} ->
            kill_locker_while_running(A, Cluster, Left - 1, Kills)
    after 0 ->
        case Kills < 8 andalso results_waiting() >= 40 * (Kills + 1) of
            true ->
                Pid = rpc:call(A, erlang, whereis, [locker]),
                %% exit/2 returns before the process is gone: wait for
                %% its 'DOWN' so that the new server can take the name.
                Mref = erlang:monitor(process, Pid),
                true = rpc:call(A, erlang, exit, [Pid, kill]),
                receive {'DOWN', Mref, process, Pid, _} -> ok end,
                {ok, _} = start_server(A),
                ok = call(A, set_nodes, [Cluster, Cluster, []]),
                kill_locker_while_running(A, Cluster, Left, Kills + 1);
            false ->
                receive
                    {worker_done, _} -> kill_locker_while_running(A, Cluster, Left - 1, Kills)
                after 5 -> kill_locker_while_running(A, Cluster, Left, Kills)
                end
        end
    end.

results_waiting() ->
    {message_queue_len, N} = process_info(self(), message_queue_len),
    N.

collect_results(Acc) ->
    receive
        {result, R} -> collect_results([R | Acc]);
        {workers_done, _, _} -> lists:reverse(Acc)
    end.

no_promises_left(Node, Deadline) ->
    {ok, Promises, _, _, _, _} = state(Node),
    case Promises of
        [] ->
            ok;
        _ ->
            case erlang:monotonic_time(millisecond) > Deadline of
                true -> ct:fail({orphaned_promises, Node, Promises});
                false -> erlang:yield(), no_promises_left(Node, Deadline)
            end
    end.
