%% Helpers shared by the Common Test suites: a distributed test node and
%% `locker' peers on loopback.
-module(locker_ct).

-export([ensure_distributed/0, start_peer/2, start_server/2, os_pid/1, code_paths/0, flood_unknown/3]).

%% Makes the test node distributed (longnames on 127.0.0.1), starting
%% epmd if needed.
-spec ensure_distributed() -> ok.
ensure_distributed() ->
    case node() of
        nonode@nohost ->
            _ = os:cmd("epmd -daemon"),
            %% Fault tests cut single connections on purpose; OTP 25's
            %% global would turn each into a wider partition.
            application:set_env(kernel, prevent_overlapping_partitions, false),
            Name = list_to_atom("locker_ct_" ++ os:getpid() ++ "@127.0.0.1"),
            {ok, _} = net_kernel:start([Name, longnames]),
            erlang:set_cookie(node(), locker_test),
            ok;
        _ ->
            ok
    end.

%% The code paths a peer needs: the locker application and the suites.
-spec code_paths() -> [string()].
code_paths() ->
    lists:usort([filename:dirname(code:which(locker)), filename:dirname(code:which(?MODULE))]).

%% Starts an unlinked peer named `Name'@127.0.0.1 with the locker code, an
%% optional list of `{Key, Value}' locker application env entries, and its
%% `locker' server (W = 2, default intervals).
-spec start_peer(atom(), [{atom(), term()}]) -> {pid(), node()}.
start_peer(Name, Env) ->
    Args = ["-setcookie", atom_to_list(erlang:get_cookie()),
            "-kernel", "prevent_overlapping_partitions", "false"] ++
        lists:append([["-pa", P] || P <- code_paths()]),
    {ok, Peer, Node} = peer:start(#{name => Name, host => "127.0.0.1", longnames => true, args => Args}),
    ok = rpc:call(Node, application, load, [locker]),
    [ok = rpc:call(Node, application, set_env, [locker, K, V]) || {K, V} <- Env],
    {ok, _} = start_server(Node, [2, 1000, 1000, 100]),
    {Peer, Node}.

%% locker:start_link/1 through rpc would link the server to the
%% short-lived rpc process (which exits with the call's result in OTP 25);
%% start it unlinked, as a supervisor would own it.
-spec start_server(node(), [pos_integer()]) -> {ok, pid()} | {error, term()}.
start_server(Node, Args) ->
    rpc:call(Node, gen_server, start, [{local, locker}, locker_server, Args, []]).

%% The OS process id of a node.
-spec os_pid(node()) -> string().
os_pid(Node) ->
    rpc:call(Node, os, getpid, []).

%% Sends `{locker, Node}' (a BEAM node or lockerd) the unknown calls
%% (1 KB each), casts and plain messages numbered From..To, with names in
%% them that look like atoms-to-be ("no_such_I", as strings and binaries),
%% and waits up to 60 s until every call is answered
%% `{error, {unknown_request, _}}'. Returns ok, or how many replies are
%% missing.
-spec flood_unknown(node(), pos_integer(), pos_integer()) -> ok | {replies_missing, pos_integer()}.
flood_unknown(Node, From, To) ->
    Self = self(),
    Sink = spawn_link(fun() -> count_replies(Self, To - From + 1) end),
    lists:foreach(
        fun(I) ->
            Name = "no_such_" ++ integer_to_list(I),
            Req = {no_such_request, list_to_binary(Name), <<I:64, 0:8000>>},
            {locker, Node} ! {'$gen_call', {Sink, make_ref()}, Req},
            gen_server:cast({locker, Node}, {no_such_cast, Name}),
            {locker, Node} ! {no_such_message, Name}
        end,
        lists:seq(From, To)
    ),
    receive
        {Sink, done} -> ok
    after 60000 ->
        Sink ! {left, self()},
        receive {Sink, left, Left} -> {replies_missing, Left} end
    end.

%% Counts the unknown_request replies down; tells Parent when all came.
count_replies(Parent, 0) ->
    Parent ! {self(), done};
count_replies(Parent, N) ->
    receive
        {_Ref, {error, {unknown_request, {no_such_request, _, _}}}} -> count_replies(Parent, N - 1);
        {left, From} -> From ! {self(), left, N}
    end.
