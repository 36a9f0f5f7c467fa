%% Natural batching (locker_batch) across real nodes: concurrent clients
%% on one node send fewer messages than requests, a lone client's request
%% leaves at once, a master going down with a batch in flight and requests
%% queued behind it leaves no caller waiting, lockerd serves batches as a
%% master, an original-style cluster (configured without epochs) never
%% sees a batch, and malformed batches are rejected whole with a bounded
%% log line, nothing applied, by the BEAM server and by lockerd.
%%
%% Counting is done without timing: a master's server is held (suspended,
%% or lockerd stopped with SIGSTOP) while the clients start, until the
%% coordinator's sender reports one batch in flight to it and the other
%% requests queued behind it. Peers are named `bt_*'.
-module(locker_batch_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, suite/0, init_per_suite/1, end_per_suite/1, init_per_testcase/2, end_per_testcase/2]).
-export([
    concurrent_clients_batch/1,
    lone_client_sent_at_once/1,
    master_down_mid_batch/1,
    local_server_dies_mid_batch/1,
    lockerd_master/1,
    original_cluster_gets_no_batch/1,
    older_master_gets_plain_requests/1,
    malformed_batches_rejected_whole/1,
    switch_is_checked/1,
    mutual_exclusion_under_faults/1,
    mutual_exclusion_mixed/1
]).
-export([client/4, hold/1, log/2, older/1, older_loop/1, contender/3]).

-define(CLIENTS, 16).
%% The contention case: keys, lease and timeout (ms).
-define(KEYS, [k1, k2, k3]).
-define(LEASE, 2000).
-define(TIMEOUT, 1000).

all() ->
    [concurrent_clients_batch, lone_client_sent_at_once, master_down_mid_batch, local_server_dies_mid_batch,
     lockerd_master,
     original_cluster_gets_no_batch, older_master_gets_plain_requests, malformed_batches_rejected_whole,
     switch_is_checked, mutual_exclusion_under_faults, mutual_exclusion_mixed].

suite() ->
    [{timetrap, {minutes, 5}}].

init_per_suite(Config) ->
    ok = locker_ct:ensure_distributed(),
    Config.

end_per_suite(_Config) ->
    ok.

init_per_testcase(_Case, Config) ->
    [{cleanup, ets:new(bt_cleanup, [public, bag])} | Config].

end_per_testcase(_Case, Config) ->
    T = ?config(cleanup, Config),
    [os:cmd("kill -CONT " ++ P ++ "; kill -9 " ++ P) || {os_pid, P} <- ets:lookup(T, os_pid)],
    [catch peer:stop(P) || {peer, P} <- ets:lookup(T, peer)],
    ets:delete(T),
    ok.

%%--------------------------------------------------------------------
%% Cases
%%--------------------------------------------------------------------

%% 16 clients on A lock and release a key each; B and C are held until
%% A's sender has one batch in flight to each and 15 requests queued:
%% phase one reaches each of them in two messages, and no round needs
%% more messages than requests.
concurrent_clients_batch(Config) ->
    [A, B, C] = Nodes = start_peers([a, b, c], Config),
    ok = rpc:call(A, locker, set_nodes, [Nodes, Nodes, []]),
    {ok, 2, 3, 3} = rpc:call(A, locker, lock, [warm, v, 1000]),
    reset_stats(Nodes),
    Holds = [hold_server(N) || N <- [B, C]],
    Clients = start_clients(A, ?CLIENTS, lock_release),
    [await_held(A, N, ?CLIENTS) || N <- [B, C]],
    [release_hold(H) || H <- Holds],
    Results = await_clients(Clients),
    [{ok, 2, 3, 3} = R || R <- Results],
    SA = stats(A),
    ct:log("A: ~p~nB: ~p~nC: ~p", [SA, stats(B), stats(C)]),
    %% Four rounds (lock: phase one, write; release: phase one, release)
    %% to two remote masters.
    Requests = 4 * 2 * ?CLIENTS,
    #{sent_requests := Sent, sent_batches := Batches, direct_requests := Direct, plain_requests := 0} = SA,
    ?assertEqual(Requests, Sent + Direct),
    %% Phase one reached each master in a few messages (the requests
    %% queued while it was held: one batch, or two if the wait for the
    %% gate ran out meanwhile), not 16.
    ?assert(Batches + Direct =< Requests - 2 * (?CLIENTS - 4), {Batches, Direct, Requests}),
    [begin
         #{received_requests := Received, received_batches := RB, rejected_batches := 0} = stats(N),
         ?assert(RB < Received, {N, RB, Received})
     end || N <- [B, C]],
    %% The leases were written and released everywhere.
    [{error, not_found} = rpc:call(N, locker, dirty_read, [{key, I}]) || N <- Nodes, I <- lists:seq(1, ?CLIENTS)].

%% A lone client's request is sent at once (it is in the held master's
%% mailbox, nothing queued behind it), and one client alone sends one
%% request per batch.
lone_client_sent_at_once(Config) ->
    [A, B, C] = Nodes = start_peers([a, b, c], Config),
    ok = rpc:call(A, locker, set_nodes, [Nodes, Nodes, []]),
    reset_stats(Nodes),
    Holds = [hold_server(N) || N <- [B, C]],
    [Client] = start_clients(A, 1, lock_release),
    %% In the held masters' mailboxes, nothing queued.
    [await_held(A, N, 1) || N <- [B, C]],
    [#{queued := 0} = rpc:call(A, locker_batch, pending, [N]) || N <- [B, C]],
    [release_hold(H) || H <- Holds],
    [{ok, 2, 3, 3}] = await_clients([Client]),
    reset_stats(Nodes),
    [{ok, 2, 3, 3} = rpc:call(A, locker, lock, [{lone, I}, v, 1000]) || I <- lists:seq(1, 10)],
    %% Each request alone: sent by the client itself (nothing in flight),
    %% or in a batch of its own.
    #{sent_requests := Sent, sent_batches := Sent, direct_requests := Direct} = stats(A),
    ?assertEqual(40, Sent + Direct).

%% B is held with a batch in flight and 15 requests queued behind it, then
%% stopped: every caller is answered (A and C make the quorum), and the
%% sender forgets B's batch and queue.
master_down_mid_batch(Config) ->
    [A, B, C] = Nodes = start_peers([a, b, c], Config),
    ok = rpc:call(A, locker, set_nodes, [Nodes, Nodes, []]),
    _ = hold_server(B),
    Clients = start_clients(A, ?CLIENTS, lock),
    %% A and C vote and store: every phase one and every write for B
    %% waits (the writes until B answers or is found down).
    await_held(A, B, 2 * ?CLIENTS),
    [{peer_of, B, PeerB}] = ets:match_object(?config(cleanup, Config), {peer_of, B, '_'}),
    ok = peer:stop(PeerB),
    Results = await_clients(Clients),
    [{ok, 2, 2, 2} = R || R <- Results],
    await_pending(A, B, #{in_flight => false, sent => 0, queued => 0}),
    %% Later operations do not wait for B.
    {ok, 2, 2, 2} = rpc:call(A, locker, lock, [after_down, v, 1000]),
    [{ok, v} = rpc:call(N, locker, dirty_read, [after_down]) || N <- [A, C]].

%% A's own server dies while its sender holds a batch in flight to B and
%% C and requests queued behind them: the sender still sends them and
%% hands the replies on, so that every caller gets its answer.
local_server_dies_mid_batch(Config) ->
    [A, B, C] = Nodes = start_peers([a, b, c], Config),
    ok = rpc:call(A, locker, set_nodes, [Nodes, Nodes, []]),
    Holds = [hold_server(N) || N <- [B, C]],
    Clients = start_clients(A, ?CLIENTS, lock),
    [await_held(A, N, ?CLIENTS) || N <- [B, C]],
    Server = rpc:call(A, erlang, whereis, [locker]),
    true = rpc:call(A, erlang, exit, [Server, kill]),
    [release_hold(H) || H <- Holds],
    Results = await_clients(Clients),
    [{ok, 2, 3, 3} = R || R <- Results],
    [{ok, {value, 1}} = rpc:call(N, locker, dirty_read, [{key, 1}]) || N <- [B, C]].

%% Masters B (BEAM) and L (lockerd), W = 2, configured through epochs;
%% A coordinates. Both are held (L with SIGSTOP) until A's sender has
%% queued behind a batch to each: L serves the batches (it holds every
%% lease), and rejects a malformed one whole.
lockerd_master(Config) ->
    [A, B] = start_peers([a, b], Config),
    ok = rpc:call(A, locker, set_nodes, [[A, B], [A, B], []]),
    Bin = locker_fault_SUITE:lockerd_binary(),
    {{lockerd, _}, L, OsPid} = locker_fault_SUITE:start_lockerd(
        unique(l), Bin, ?config(priv_dir, Config), lists:sort([A, B]), 0, ?config(cleanup, Config)
    ),
    ok = rpc:call(A, locker_membership, change, [[B, L], [], 2]),
    {ok, #{mode := epoch, masters := Ms}} = gen_server:call({locker, L}, {'$locker_config', get}),
    ?assertEqual(lists:sort([B, L]), Ms),
    {ok, 2, 2, 2} = rpc:call(A, locker, lock, [warm, v, 1000]),
    reset_stats([A, B]),
    H = hold_server(B),
    "" = os:cmd("kill -STOP " ++ OsPid),
    Clients = start_clients(A, ?CLIENTS, lock),
    %% Phase one needs both: one client at most sends its own request to
    %% each (the gate), the others' wait in A's sender or were sent in
    %% batches.
    await_held(A, B, ?CLIENTS),
    await_pending(A, L, fun(#{sent := S, queued := Q}) -> S + Q >= ?CLIENTS - 1 end),
    "" = os:cmd("kill -CONT " ++ OsPid),
    release_hold(H),
    Results = await_clients(Clients),
    [{ok, 2, 2, 2} = R || R <- Results],
    #{sent_requests := Sent, sent_batches := Batches, direct_requests := Direct, plain_requests := 0} = stats(A),
    Requests = Sent + Direct,
    ?assertEqual(2 * 2 * ?CLIENTS, Requests),
    ?assert(Batches + Direct =< Requests - 2 * (?CLIENTS - 4), {Batches, Direct, Requests}),
    {ok, _, Leases, _, _, _} = gen_server:call({locker, L}, get_debug_state),
    [true = lists:keymember({key, I}, 1, Leases) || I <- lists:seq(1, ?CLIENTS)],
    rejects_malformed(L),
    %% lockerd counts the batches it served.
    {ok, 2, 2, 2} = rpc:call(A, locker, release, [{key, 1}, {value, 1}]).

%% A cluster whose configuration was not set through epochs (one of its
%% masters, O, plays an original node: it has no locker_membership): its
%% coordinators send plain requests only.
original_cluster_gets_no_batch(Config) ->
    [A, B, O] = Nodes = start_peers([a, b, o], Config),
    {ok, locker_membership, Bin} = compile:forms(
        [{attribute, 1, module, locker_membership}, {attribute, 1, export, []}], [binary]
    ),
    {module, locker_membership} = rpc:call(O, code, load_binary, [locker_membership, "none", Bin]),
    ok = rpc:call(A, locker, set_nodes, [Nodes, Nodes, []]),
    [#{mode := legacy}] = lists:usort([rpc:call(N, locker_meta, config, []) || N <- [A, B]]),
    reset_stats(Nodes),
    true = rpc:call(A, locker_batch, enabled, []),
    Clients = start_clients(A, ?CLIENTS, lock_release),
    [{ok, 2, 3, 3} = R || R <- await_clients(Clients)],
    [#{sent_batches := 0, received_batches := 0} = stats(N) || N <- Nodes].

%% B plays a master of an older version of this project, configured
%% through epochs but not knowing batches: it answers a batch
%% `{error, {unknown_request, _}}', as this project's servers answer any
%% unknown call. A's sender sends that batch's requests again plainly,
%% and only plain requests to B from then on; the operations succeed.
older_master_gets_plain_requests(Config) ->
    [A, B, C] = Nodes = start_peers([a, b, c], Config),
    ok = rpc:call(A, locker, set_nodes, [Nodes, Nodes, []]),
    ok = rpc:call(B, ?MODULE, older, [self()]),
    reset_stats(Nodes),
    %% Held, so that the first batch to B carries several requests.
    Holds = [hold_server(N) || N <- [B, C]],
    Clients = start_clients(A, ?CLIENTS, lock_release),
    [await_held(A, N, ?CLIENTS) || N <- [B, C]],
    [release_hold(H) || H <- Holds],
    [{ok, 2, 3, 3} = R || R <- await_clients(Clients)],
    SA = stats(A),
    ct:log("A: ~p~nB: ~p~nC: ~p", [SA, stats(B), stats(C)]),
    %% B refused its first batch, whose requests it got again plainly, as
    %% every request through the sender after it; C got batches.
    #{plain_requests := Plain} = SA,
    ?assert(Plain > 0),
    #{received_batches := 0} = stats(B),
    #{received_batches := CB} = stats(C),
    ?assert(CB > 0),
    {ok, 2, 3, 3} = rpc:call(A, locker, lock, [later, v, 1000]),
    #{received_batches := 0} = stats(B).

%% @private On B: the real server keeps running unregistered; `locker' is
%% now a process that answers batches as an unknown request and passes
%% every other message to the server (which answers the caller).
older(Parent) ->
    Server = whereis(locker),
    true = unregister(locker),
    Pid = spawn(?MODULE, older_loop, [Server]),
    true = register(locker, Pid),
    Parent ! {older, Pid},
    ok.

%% @private
older_loop(Server) ->
    receive
        {'$gen_call', From, {'$locker_batch', _} = Req} ->
            gen_server:reply(From, {error, {unknown_request, Req}});
        Msg ->
            Server ! Msg
    end,
    older_loop(Server).

%% Malformed batches get `{error, bad_batch}', nothing applied, with a
%% bounded log line; a valid one is answered in order, each request as
%% if sent alone (an epoch refusal included).
malformed_batches_rejected_whole(Config) ->
    [A, B] = Nodes = start_peers([a, b], Config),
    ok = rpc:call(A, locker, set_nodes, [Nodes, Nodes, []]),
    capture_logs([B]),
    rejects_malformed(B),
    await_log(B, "malformed batch"),
    %% A flood: every one answered, few lines logged, the server alive.
    Bad = {'$locker_batch', [{get_write_lock, flood, not_found, tag}, {write, tag, flood, v, soon}]},
    [{error, bad_batch} = gen_server:call({locker, B}, Bad) || _ <- lists:seq(1, 500)],
    #{rejected_batches := Rejected} = stats(B),
    ?assert(Rejected >= 500),
    Lines = count_logs(B, 0),
    ct:log("~b log lines for ~b rejected batches", [Lines, Rejected]),
    ?assert(Lines < 250, Lines),
    {ok, 2, 2, 2} = rpc:call(A, locker, lock, [after_flood, v, 1000]).

%% The `batching' key is checked, and the switch turns batching off and
%% on at run time.
switch_is_checked(Config) ->
    ok = locker_config:check(#{batching => true}),
    ok = locker_config:check(#{batching => false}),
    {error, [{batching, yes, _}]} = locker_config:check(#{batching => yes}),
    [A, B] = Nodes = start_peers([a, b], Config),
    ok = rpc:call(A, locker, set_nodes, [Nodes, Nodes, []]),
    ok = rpc:call(A, locker_batch, enable, [false]),
    false = rpc:call(A, locker_batch, enabled, []),
    reset_stats(Nodes),
    {ok, 2, 2, 2} = rpc:call(A, locker, lock, [off, v, 1000]),
    #{sent_batches := 0} = stats(A),
    #{received_batches := 0} = stats(B),
    ok = rpc:call(A, locker_batch, enable, [true]),
    {ok, 2, 2, 2} = rpc:call(A, locker, lock, [on, v, 1000]),
    %% Two rounds (phase one, write), one request each.
    #{sent_batches := 2} = stats(A),
    #{received_batches := 2} = stats(B).

%% Four contending clients on each of three masters (batching on, so
%% concurrent requests travel in batches) on three keys, while a master's
%% server is killed and restarted and another is paused: the fault
%% suite's checker finds no two holders of a key at once, tokens that
%% increase, and a quorum behind every success.
mutual_exclusion_under_faults(Config) ->
    [A, B, C] = Nodes = start_peers([a, b, c], Config),
    ok = rpc:call(A, locker, set_nodes, [Nodes, Nodes, []]),
    reset_stats(Nodes),
    Clients = [begin
                   Pid = spawn(N, ?MODULE, contender, [self(), {N, I}, 0]),
                   _ = erlang:monitor(process, Pid),
                   Pid
               end || N <- Nodes, I <- [1, 2, 3, 4]],
    H0 = locker_ct:collect_acquisitions([], 0, 40),
    %% B's server killed and started again (its leases stay, its promises
    %% go), then C's paused for a while.
    true = rpc:call(B, erlang, exit, [rpc:call(B, erlang, whereis, [locker]), kill]),
    {ok, _} = locker_ct:start_server(B, [2, 1000, 1000, 100]),
    H1 = locker_ct:collect_acquisitions(H0, locker_ct:count_acquisitions(H0), 40),
    Hold = hold_server(C),
    H2 = locker_ct:collect_acquisitions(H1, locker_ct:count_acquisitions(H1), 20),
    release_hold(Hold),
    H3 = locker_ct:collect_acquisitions(H2, locker_ct:count_acquisitions(H2), 40),
    {Events, Counted} = locker_ct:stop_clients(Clients, H3),
    Sent = lists:sum([maps:get(sent_batches, stats(N)) || N <- Nodes]),
    ct:log("batches sent: ~b; stats: ~p", [Sent, [stats(N) || N <- Nodes]]),
    ?assert(Sent > 0),
    Stats = locker_fault_SUITE:check(Events, Counted, Counted, 2),
    ct:log("~b acquisitions; checker: ~p", [Counted, Stats]),
    #{violations := [], intervals := Counted} = Stats,
    {comment, lists:flatten(io_lib:format("~b acquisitions, ~b batches, 0 violations", [Counted, Sent]))}.

%% The same with lockerd as the third master (configured through epochs,
%% so it gets batches): B's server killed and restarted, lockerd stopped
%% (SIGSTOP) for a while; clients on A and B.
mutual_exclusion_mixed(Config) ->
    [A, B] = Beams = start_peers([a, b], Config),
    ok = rpc:call(A, locker, set_nodes, [Beams, Beams, []]),
    Bin = locker_fault_SUITE:lockerd_binary(),
    {{lockerd, _}, L, OsPid} = locker_fault_SUITE:start_lockerd(
        unique(l), Bin, ?config(priv_dir, Config), lists:sort(Beams), 0, ?config(cleanup, Config)
    ),
    ok = rpc:call(A, locker_membership, change, [[A, B, L], [], 2]),
    reset_stats(Beams),
    Clients = [begin
                   Pid = spawn(N, ?MODULE, contender, [self(), {N, I}, 0]),
                   _ = erlang:monitor(process, Pid),
                   Pid
               end || N <- Beams, I <- [1, 2, 3, 4, 5, 6]],
    H0 = locker_ct:collect_acquisitions([], 0, 40),
    true = rpc:call(B, erlang, exit, [rpc:call(B, erlang, whereis, [locker]), kill]),
    {ok, _} = locker_ct:start_server(B, [2, 1000, 1000, 100]),
    H1 = locker_ct:collect_acquisitions(H0, locker_ct:count_acquisitions(H0), 40),
    "" = os:cmd("kill -STOP " ++ OsPid),
    H2 = locker_ct:collect_acquisitions(H1, locker_ct:count_acquisitions(H1), 20),
    "" = os:cmd("kill -CONT " ++ OsPid),
    H3 = locker_ct:collect_acquisitions(H2, locker_ct:count_acquisitions(H2), 40),
    {Events, Counted} = locker_ct:stop_clients(Clients, H3),
    Sent = lists:sum([maps:get(sent_batches, stats(N)) || N <- Beams]),
    ct:log("batches sent: ~b; stats: ~p", [Sent, [stats(N) || N <- Beams]]),
    ?assert(Sent > 0),
    Stats = locker_fault_SUITE:check(Events, Counted, Counted, 2),
    ct:log("~b acquisitions; checker: ~p", [Counted, Stats]),
    #{violations := [], intervals := Counted} = Stats,
    {comment, lists:flatten(io_lib:format("~b acquisitions, ~b batches, 0 violations", [Counted, Sent]))}.

%% @private A contending client: lock a random key with a token, hold it a
%% little, release; report to Collector (host clock, microseconds); at
%% `stop' it reports how many acquisitions it made.
contender(Collector, Id, N) ->
    receive
        {stop, Collector} -> Collector ! {counted, self(), N}
    after 0 ->
        Key = lists:nth(rand:uniform(length(?KEYS)), ?KEYS),
        Value = {Id, erlang:unique_integer()},
        T1 = os:system_time(microsecond),
        case catch locker:lock_with_token(Key, Value, ?LEASE, ?TIMEOUT) of
            {ok, Token} ->
                T2 = os:system_time(microsecond),
                Collector ! {acquired, Value, Key, {token, Token}, ?LEASE, ?TIMEOUT, T1, T2},
                receive after rand:uniform(20) -> ok end,
                Collector ! {releasing, Value, os:system_time(microsecond)},
                _ = (catch locker:release(Key, Value, ?TIMEOUT)),
                contender(Collector, Id, N + 1);
            _ ->
                receive after rand:uniform(10) -> ok end,
                contender(Collector, Id, N)
        end
    end.

%%--------------------------------------------------------------------
%% Helpers
%%--------------------------------------------------------------------

rejects_malformed(Node) ->
    Tag = {'$locker_epoch', current_epoch(Node), make_ref()},
    Good = {get_write_lock, bt_key, not_found, Tag},
    Batches = [
        not_a_list,
        [],
        [Good | improper],
        [Good, {write, Tag, bt_key, v, soon}],
        [Good, {wait_for_release, bt_key, 1000}],
        [Good, {no_such_request, bt_key}],
        [Good, {'$locker_batch', [Good]}],
        [Good, {set_w, 1}],
        lists:duplicate(1025, {release_write_lock, Tag})
    ],
    [{error, bad_batch} = gen_server:call({locker, Node}, {'$locker_batch', Batch}) || Batch <- Batches],
    %% Nothing applied: the first request of each would have taken a
    %% promise on bt_key, which would refuse this one.
    Fresh = {'$locker_epoch', current_epoch(Node), make_ref()},
    {ok, [ok, ok]} = gen_server:call(
        {locker, Node}, {'$locker_batch', [{get_write_lock, bt_key, not_found, Fresh}, {release_write_lock, Fresh}]}
    ),
    %% In order, each as if alone: a vote under another epoch is refused.
    Stale = {'$locker_epoch', {0, none}, make_ref()},
    {ok, [ok, {error, already_locked}, {error, {config_epoch, _}}, ok]} = gen_server:call(
        {locker, Node},
        {'$locker_batch', [
            {get_write_lock, bt_key2, not_found, Fresh},
            {get_write_lock, bt_key2, not_found, {'$locker_epoch', current_epoch(Node), make_ref()}},
            {get_write_lock, bt_key3, not_found, Stale},
            {release_write_lock, Fresh}
        ]}
    ),
    ok.

current_epoch(Node) ->
    {ok, #{epoch := E}} = gen_server:call({locker, Node}, {'$locker_config', get}),
    E.

start_peers(Names, Config) ->
    [begin
        %% The cases count the requests of the two-phase path (two rounds
        %% per operation); one-round requests travel in batches the same
        %% way (the fault suite runs both together, its default).
        {Peer, Node} = locker_ct:start_peer(unique(Name), [{one_round, false}]),
        ets:insert(?config(cleanup, Config), [{peer, Peer}, {peer_of, Node, Peer}]),
        Node
     end || Name <- Names].

unique(Name) ->
    list_to_atom(lists:concat(["bt_", Name, "_", os:getpid(), "_", erlang:unique_integer([positive])])).

reset_stats(Nodes) ->
    [ok = rpc:call(N, locker_batch, reset_stats, []) || N <- Nodes],
    ok.

stats(Node) ->
    rpc:call(Node, locker_batch, stats, []).

%% Suspends Node's locker server until release_hold/1 (or the holder's
%% end: a suspension ends with the process that made it).
hold_server(Node) ->
    Holder = spawn(Node, ?MODULE, hold, [self()]),
    receive {Holder, held} -> Holder after 10000 -> ct:fail({cannot_hold, Node}) end.

%% @private
hold(Parent) ->
    true = erlang:suspend_process(whereis(locker)),
    Parent ! {self(), held},
    receive release -> Parent ! {self(), released} end.

release_hold(Holder) ->
    Holder ! release,
    receive {Holder, released} -> ok after 10000 -> ct:fail(cannot_release) end.

%% Clients on Node, each on its own key: {Pid, Ref} to await.
start_clients(Node, N, What) ->
    Self = self(),
    [begin
        Pid = spawn(Node, ?MODULE, client, [Self, I, What, make_ref()]),
        {Pid, erlang:monitor(process, Pid)}
     end || I <- lists:seq(1, N)].

%% @private
client(Parent, I, What, _) ->
    Key = {key, I},
    Value = {value, I},
    Result =
        case What of
            lock ->
                locker:lock(Key, Value, 60000, 30000);
            lock_release ->
                case locker:lock(Key, Value, 60000, 30000) of
                    {ok, _, _, _} -> locker:release(Key, Value, 30000);
                    Error -> Error
                end
        end,
    Parent ! {self(), result, Result}.

await_clients(Clients) ->
    [receive
        {Pid, result, R} -> erlang:demonitor(Mref, [flush]), R;
        {'DOWN', Mref, process, Pid, Reason} -> ct:fail({client_died, Reason})
     after 60000 -> ct:fail(client_not_answered)
     end || {Pid, Mref} <- Clients].

%% Waits until Node's sender reports for Master what Want is, or what
%% the predicate Want accepts (polled).
await_pending(Node, Master, Want) ->
    await_pending(Node, Master, Want, 500).

await_pending(Node, Master, Want, 0) ->
    ct:fail({pending, Node, Master, rpc:call(Node, locker_batch, pending, [Master]), Want});
await_pending(Node, Master, Want, Tries) ->
    Pending = rpc:call(Node, locker_batch, pending, [Master]),
    case is_function(Want) andalso Want(Pending) orelse Pending =:= Want of
        true ->
            ok;
        false ->
            timer:sleep(20),
            await_pending(Node, Master, Want, Tries - 1)
    end.

%% Waits until N requests from Node are held on their way to Master
%% (whose server is suspended): in its mailbox (alone or in batches), or
%% queued in Node's sender.
await_held(Node, Master, N) ->
    await_held(Node, Master, N, 500).

await_held(Node, Master, N, 0) ->
    ct:fail({held, Node, Master, N, held(Node, Master)});
await_held(Node, Master, N, Tries) ->
    case held(Node, Master) of
        N -> ok;
        _ -> timer:sleep(20), await_held(Node, Master, N, Tries - 1)
    end.

held(Node, Master) ->
    {messages, Msgs} = rpc:call(Master, erlang, process_info, [rpc:call(Master, erlang, whereis, [locker]), messages]),
    InMailbox = lists:sum([
        case Req of
            {'$locker_batch', L} -> length(L);
            _ -> 1
        end
     || {'$gen_call', _, Req} <- Msgs
    ]),
    #{queued := Queued} = rpc:call(Node, locker_batch, pending, [Master]),
    InMailbox + Queued.

capture_logs(Nodes) ->
    [ok = rpc:call(N, logger, add_handler, [bt_capture, ?MODULE, #{config => #{pid => self()}}]) || N <- Nodes],
    ok.

%% @private Logger handler on the peers.
log(#{msg := Msg}, #{config := #{pid := Pid}}) ->
    Text =
        case Msg of
            {string, S} -> S;
            {report, R} -> io_lib:format("~0p", [R]);
            {F, A} -> io_lib:format(F, A)
        end,
    Pid ! {bt_log, node(), unicode:characters_to_list(Text)},
    ok.

await_log(Node, Part) ->
    receive
        {bt_log, Node, Text} ->
            case string:find(Text, Part) =/= nomatch of
                true ->
                    ?assert(length(Text) < 4000, length(Text)),
                    ct:log("~p logged: ~s", [Node, Text]);
                false ->
                    await_log(Node, Part)
            end
    after 10000 ->
        ct:fail({no_log_line, Node, Part})
    end.

%% The log lines received so far from Node (the server answered every
%% call first, so its lines were sent before).
count_logs(Node, N) ->
    receive
        {bt_log, Node, _} -> count_logs(Node, N + 1)
    after 500 -> N
    end.
