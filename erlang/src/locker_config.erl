%% @doc Checks the `locker' application environment before anything
%% starts: every key of {@link keys/0} that is set must have a value of
%% its type and range, and a node that lists other nodes as masters or
%% replicas must be distributed. Both applications (the Erlang one,
%% {@link locker_app}, and the Elixir one, `Locker') refuse to start with
%% `{bad_config, Messages}', one message per bad key, each also logged.
%%
%% The table of keys is {@link keys/0}: a key is `{Key, Check, Expected}'
%% where `Check' is a predicate or a `fun(Value, Env) -> ok | {error,
%% Text}' for checks that need the rest of the environment. Keys not in
%% the table are not checked (other libraries may keep their own keys in
%% the same environment).
%% @end
-module(locker_config).

-export([keys/0, check/1, check_env/0, messages/1, format/1]).

-type key() :: atom().
-type problem() :: {key(), Value :: term(), Expected :: string()}.
-type check() :: fun((term()) -> boolean()) | {env, fun((term(), map()) -> ok | {error, string()})}.
-export_type([problem/0]).

%% @doc The keys checked, with their check and what they expect.
-spec keys() -> [{key(), check(), string()}].
keys() ->
    Pos = "a positive integer",
    Ms = "a positive integer of milliseconds",
    [
        %% The Erlang application (locker_sup).
        {start_server, fun is_boolean/1, "true or false"},
        {w, fun pos_int/1, Pos ++ " (the write quorum)"},
        {lease_expire_interval, fun pos_int/1, Ms},
        {lock_expire_interval, fun pos_int/1, Ms},
        {push_trans_log_interval, fun pos_int/1, Ms},
        {masters, {env, fun masters/2}, "a list of node names (atoms), or auto"},
        {replicas, {env, fun node_list/2}, "a list of node names (atoms)"},
        {restart_abstain_ms, fun non_neg_int/1, "a non-negative integer of milliseconds"},
        {state_dir, fun is_dir_name/1, "a directory name (a string or a binary)"},
        %% One-round operations between this project's masters (false:
        %% always the two-phase protocol; see locker:one_round_enabled/0).
        {one_round, fun is_boolean/1, "true or false"},
        %% Automatic membership (masters = auto; see locker_auto, which
        %% also checks the keys together).
        {cluster_size, fun pos_int/1, Pos ++ " (the number of nodes the cluster is expected to have)"},
        {leave_grace_ms, fun non_neg_int/1, "a non-negative integer of milliseconds"},
        {tick_ms, fun pos_int/1, Ms},
        %% The Elixir application (Locker.Config).
        {autostart, fun is_boolean/1, "true or false"},
        {registry_autostart, fun is_boolean/1, "true or false"},
        {quorum, fun pos_int/1, Pos ++ " (the write quorum; 0 let every lock succeed and is refused)"},
        {registry_lease, fun pos_int/1, Ms},
        {registry_extend_interval, fun pos_int/1, Ms},
        {registry_margin, fun pos_int/1, Ms},
        {registry_on_lost, fun(V) -> V =:= exit orelse V =:= notify end, "exit or notify (atoms)"}
    ].

%% @doc Checks this node's `locker' application environment.
-spec check_env() -> ok | {error, [problem()]}.
check_env() ->
    check(maps:from_list(application:get_all_env(locker))).

%% @doc Checks `Env' (keys as in the application environment): `ok', or
%% every bad key with its value and what was expected, in the order of
%% {@link keys/0}.
-spec check(map()) -> ok | {error, [problem()]}.
check(Env) when is_map(Env) ->
    Problems = lists:filtermap(
        fun({Key, Check, Expected}) ->
            case maps:find(Key, Env) of
                error -> false;
                {ok, Value} -> problem(Key, Value, run(Check, Value, Env, Expected))
            end
        end,
        keys()
    ),
    case Problems of
        [] -> ok;
        _ -> {error, Problems}
    end.

problem(_Key, _Value, ok) -> false;
problem(Key, Value, {error, Expected}) -> {true, {Key, Value, Expected}}.

run({env, F}, Value, Env, _Expected) ->
    F(Value, Env);
run(F, Value, _Env, Expected) ->
    case F(Value) of
        true -> ok;
        false -> {error, Expected}
    end.

%% @doc One line per problem, naming the key, its value and what was
%% expected.
-spec messages([problem()]) -> [string()].
messages(Problems) ->
    [format(P) || P <- Problems].

%% @doc The message of one problem.
-spec format(problem()) -> string().
format({Key, Value, Expected}) ->
    lists:flatten(
        io_lib:format("locker: bad application environment: ~p = ~0P: expected ~ts", [Key, Value, 10, Expected])
    ).

pos_int(V) -> is_integer(V) andalso V > 0.

non_neg_int(V) -> is_integer(V) andalso V >= 0.

is_dir_name(V) when is_binary(V) -> true;
is_dir_name(V) -> io_lib:char_list(V) andalso V =/= [].

%% `auto' (automatic membership, see locker_auto), or node_list/2.
masters(auto, _Env) -> ok;
masters(Nodes, Env) ->
    case node_list(Nodes, Env) of
        {error, "a list of node names (atoms)"} -> {error, "a list of node names (atoms), or auto"};
        Checked -> Checked
    end.

%% A list of node names; naming any node but this one needs this node to
%% be distributed.
node_list(Nodes, _Env) ->
    case is_atom_list(Nodes) of
        false ->
            {error, "a list of node names (atoms)"};
        true ->
            Others = [N || N <- Nodes, N =/= node()],
            case node() of
                nonode@nohost when Others =/= [] ->
                    {error,
                        "no other node: this node is not distributed (start it with -name or -sname, "
                        "or leave masters and replicas unset)"};
                _ ->
                    ok
            end
    end.

is_atom_list([]) -> true;
is_atom_list([N | T]) when is_atom(N) -> is_atom_list(T);
is_atom_list(_) -> false.
