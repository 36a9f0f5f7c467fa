%% @doc Safe mode of a master: after its VM starts with an empty store, it
%% refuses promises on keys it holds nothing for, so that it cannot help
%% grant a key that a lease it has forgotten may still cover.
%%
%% Application environment:
%% <ul>
%% <li>`restart_abstain_ms' (default 0: off): how long the window lasts
%%     after the VM starts. Set it to the longest lease in use plus the
%%     promise lifetime (10 s).</li>
%% <li>`state_dir' (default none): a directory where the master keeps a
%%     record (`locker_master_NODE') that it has served. It is written
%%     before the node grants its first promise on a new key, and outlives
%%     the VM. It lets a master tell the first start of a cluster from a
%%     restart.</li>
%% </ul>
%%
%% Without `state_dir' every start of the VM opens the window: a node cannot
%% tell a first start from a restart. With it:
%% <ul>
%% <li>A record from an earlier VM: this is a restart. The window runs from
%%     the start (`timed').</li>
%% <li>No record: this node never granted anything. It still abstains
%%     (`provisional'), because it may be joining a cluster that holds
%%     leases (replacing a master whose state is gone is a restart for the
%%     cluster). It asks every other master in its view
%%     ({@link status/0} over `rpc', every 500 ms until they all answered).
%%     When all of them answer that they are fresh too (provisional or
%%     ready, holding no lease), it is `ready': the cluster is starting for
%%     the first time. When all of them are ready or serving, it writes its
%%     record and serves at once. The two steps make sure that no master of
%%     a new cluster finds another already serving (and takes the cluster
%%     for an old one). If a master answers anything else (serving before
%%     this node was ready, in its window, safe mode off, no `state_dir',
%%     lockerd, an original node, an older version), the node serves when
%%     the window ends, after writing its record.</li>
%% </ul>
%% A master restarting as part of a whole-cluster restart finds its record
%% and keeps the window, although its peers are restarting too. Holders may
%% still believe that they hold the leases the cluster forgot.
%% @end
-module(locker_safe_mode).

-export([init/0, set_masters/2, timeout/3, answers/3, status/0]).
-export_type([safe_mode/0]).

-include_lib("kernel/include/file.hrl").
-include_lib("kernel/include/logger.hrl").

-define(KEY, {locker, safe_mode}).
%% Pause between two rounds of questions to the other masters.
-define(ROUND_MS, 500).
-define(RPC_TIMEOUT_MS, 2000).
%% Retry pause when the record cannot be written.
-define(RETRY_MS, 1000).
%% "Until told otherwise" for the store (saturates there).
-define(FOREVER_MS, 1 bsl 62).

-record(sm, {
    mode = off :: mode(),
    window = 0 :: non_neg_integer(),
    file :: undefined | file:filename_all(),
    %% The masters in this node's view, and those that answered what the
    %% current step needs (fresh, then ready or serving).
    masters = [] :: [node()],
    confirmed = [] :: [node()],
    %% The round of questions under way, the window's end timer, the
    %% timer of the next round.
    round :: undefined | reference(),
    window_timer :: undefined | reference(),
    round_timer :: undefined | reference(),
    %% A master answered that it is not fresh: the cluster holds state.
    given_up = false :: boolean()
}).

-type mode() :: off | timed | provisional | ready | lifted.
-opaque safe_mode() :: #sm{}.

%% @doc Reads and checks the application environment, sets the store's
%% safe mode, and returns the server's safe-mode state. Fails with a
%% `{bad_app_env, Key, Value, Expected}' reason on a bad value.
-spec init() -> {ok, safe_mode()} | {error, {bad_app_env, atom(), term(), string()}}.
init() ->
    case env() of
        {ok, Window, Dir} -> {ok, start(Window, Dir)};
        Error -> Error
    end.

env() ->
    Window = application:get_env(locker, restart_abstain_ms, 0),
    Dir = application:get_env(locker, state_dir, undefined),
    if
        not (is_integer(Window) andalso Window >= 0) ->
            {error, {bad_app_env, restart_abstain_ms, Window, "a non-negative integer (milliseconds)"}};
        true ->
            case check_dir(Dir) of
                ok -> {ok, Window, Dir};
                {error, Expected} -> {error, {bad_app_env, state_dir, Dir, Expected}}
            end
    end.

check_dir(undefined) ->
    ok;
check_dir(Dir) when is_binary(Dir), Dir =/= <<>>; is_list(Dir), Dir =/= [] ->
    case io_lib:char_list(Dir) orelse is_binary(Dir) of
        false ->
            {error, "a directory name (string or binary)"};
        true ->
            _ = filelib:ensure_dir(filename:join(Dir, "x")),
            case file:read_file_info(Dir) of
                {ok, #file_info{type = directory, access = read_write}} -> ok;
                {ok, _} -> {error, "a directory this node can read and write"};
                {error, Reason} -> {error, "an existing or creatable directory: " ++ file:format_error(Reason)}
            end
    end;
check_dir(_) ->
    {error, "a directory name (string or binary)"}.

start(Window, Dir) ->
    File = record_file(Dir),
    Previous = persistent_term:get(?KEY, undefined),
    Since =
        case Previous of
            #{since := S} -> S;
            undefined -> erlang:monotonic_time(millisecond)
        end,
    SM = #sm{window = Window, file = File},
    case {Previous, Window, File} of
        {#{mode := lifted}, _, _} ->
            %% The server restarted in a VM whose store already serves.
            SM#sm{mode = lifted};
        {_, 0, _} ->
            ok = locker_nif:abstain_after_start(0),
            _ = File =/= undefined andalso write_record(File, off),
            publish(off, Since),
            SM#sm{mode = off};
        {_, _, undefined} ->
            ok = locker_nif:abstain_after_start(Window),
            publish(timed, Since),
            SM#sm{mode = timed};
        {_, _, _} ->
            case read_record(File) of
                present ->
                    ok = locker_nif:abstain_after_start(Window),
                    publish(timed, Since),
                    ?LOG_NOTICE("locker: safe mode: ~ts found, a restart: refusing unknown keys for ~b ms after start",
                                [File, Window]),
                    SM#sm{mode = timed};
                absent ->
                    %% Refuse unknown keys until told otherwise, whatever
                    %% the time: the record must exist before the first
                    %% promise on a new key.
                    ok = locker_nif:abstain_after_start(?FOREVER_MS),
                    publish(provisional, Since),
                    Left = max(0, Since + Window - erlang:monotonic_time(millisecond)),
                    Timer = erlang:start_timer(Left, self(), {locker_safe_mode, window_end}),
                    SM#sm{mode = provisional, window_timer = Timer}
            end
    end.

publish(Mode) ->
    #{since := Since} = persistent_term:get(?KEY),
    publish(Mode, Since).

publish(Mode, Since) ->
    case persistent_term:get(?KEY, undefined) of
        #{mode := Mode, since := Since} -> ok;
        _ -> persistent_term:put(?KEY, #{mode => Mode, since => Since})
    end.

record_file(undefined) -> undefined;
record_file(Dir) -> filename:join(Dir, "locker_master_" ++ atom_to_list(node())).

read_record(File) ->
    case file:consult(File) of
        {ok, [{locker_master_record, _, _} | _]} ->
            present;
        {error, enoent} ->
            absent;
        Other ->
            %% Unreadable or foreign: count it as a restart (the safe side).
            ?LOG_WARNING("locker: safe mode: unreadable record ~ts (~0p), taken as a restart", [File, Other]),
            present
    end.

write_record(File, How) ->
    Record = {locker_master_record, 1, #{node => node(), since_ms => erlang:system_time(millisecond), how => How}},
    Text = io_lib:format(
        "%% This node has served as a locker master: after a restart it refuses\n"
        "%% unknown keys for restart_abstain_ms. Delete only to start a new cluster.\n~tp.~n",
        [Record]
    ),
    Tmp = unicode:characters_to_list([File, ".tmp"]),
    case file:write_file(Tmp, unicode:characters_to_binary(Text), [sync]) of
        ok -> file:rename(Tmp, File);
        Error -> Error
    end.

%% @doc This node's view of the masters changed: asks them (if it is
%% waiting to learn whether the cluster is new).
-spec set_masters([node()], safe_mode()) -> safe_mode().
set_masters(Masters, #sm{mode = Mode} = SM) when Mode =:= provisional; Mode =:= ready ->
    next_round(SM#sm{masters = lists:usort(Masters)});
set_masters(Masters, SM) ->
    SM#sm{masters = lists:usort(Masters)}.

%% @doc A timer of the safe mode fired (`{timeout, Ref, {locker_safe_mode,
%% What}}'); others are ignored.
-spec timeout(reference(), term(), safe_mode()) -> safe_mode().
timeout(Ref, What, #sm{mode = Mode, window_timer = Ref} = SM) when
    (What =:= window_end orelse What =:= retry_lift), (Mode =:= provisional orelse Mode =:= ready)
->
    lift(window_end, SM#sm{window_timer = undefined});
timeout(Ref, next_round, #sm{round_timer = Ref} = SM) ->
    next_round(SM#sm{round_timer = undefined});
timeout(_Ref, _What, SM) ->
    SM.

%% @doc The answers of a round of questions to the other masters
%% (`[{Node, Answer}]'); others are ignored.
-spec answers(reference(), term(), safe_mode()) -> safe_mode().
answers(Ref, Answers, #sm{mode = Mode, round = Ref, confirmed = Confirmed} = SM) when
    (Mode =:= provisional orelse Mode =:= ready), is_list(Answers)
->
    Verdicts = [{N, A, verdict(Mode, A)} || {N, A} <- Answers],
    No = [{N, A} || {N, A, no} <- Verdicts],
    SM1 = SM#sm{round = undefined, confirmed = lists:usort([N || {N, _, yes} <- Verdicts] ++ Confirmed)},
    Left = SM1#sm.masters -- [node() | SM1#sm.confirmed],
    case No of
        [] when Left =:= [] ->
            next_round(SM1);
        [] ->
            %% Some master did not answer, or is a step behind: again soon.
            SM1#sm{round_timer = erlang:start_timer(?ROUND_MS, self(), {locker_safe_mode, next_round})};
        _ ->
            ?LOG_NOTICE("locker: safe mode: not a new cluster (~0p): refusing unknown keys until the window ends",
                        [No]),
            SM1#sm{given_up = true}
    end;
answers(_Ref, _Answers, SM) ->
    SM.

%% What a master's answer means for this node's step: `yes', `later' (ask
%% again), or `no' (not a new cluster).
verdict(provisional, #{fresh := true}) -> yes;
verdict(ready, #{mode := ready}) -> yes;
verdict(ready, #{mode := lifted}) -> yes;
verdict(ready, #{mode := provisional}) -> later;
verdict(_, {badrpc, nodedown}) -> later;
verdict(_, {badrpc, timeout}) -> later;
verdict(_, {badrpc, noconnection}) -> later;
verdict(_, _) -> no.

next_round(#sm{mode = Mode, round = undefined, round_timer = undefined, given_up = false} = SM) when
    Mode =:= provisional; Mode =:= ready
->
    #sm{masters = Masters, confirmed = Confirmed} = SM,
    case {Masters, Masters -- [node() | Confirmed]} of
        {[], _} ->
            %% No view of the cluster yet (set_nodes will come).
            SM;
        {_, []} when Mode =:= provisional ->
            %% Every other master is fresh: now wait until all are ready.
            publish(ready),
            next_round(SM#sm{mode = ready, confirmed = []});
        {_, []} ->
            lift(new_cluster, SM);
        {_, Ask} ->
            Server = self(),
            Ref = make_ref(),
            _ = spawn(fun() -> Server ! {locker_safe_mode_answers, Ref, ask(Ask)} end),
            SM#sm{round = Ref}
    end;
next_round(SM) ->
    SM.

ask(Nodes) ->
    [{N, rpc:call(N, ?MODULE, status, [], ?RPC_TIMEOUT_MS)} || N <- Nodes].

%% Writes the record, then lets the store serve unknown keys.
lift(How, #sm{file = File} = SM) ->
    case write_record(File, How) of
        ok ->
            publish(lifted),
            ok = locker_nif:abstain_after_start(0),
            _ = is_reference(SM#sm.round_timer) andalso erlang:cancel_timer(SM#sm.round_timer),
            _ = is_reference(SM#sm.window_timer) andalso erlang:cancel_timer(SM#sm.window_timer),
            case How of
                new_cluster ->
                    ?LOG_NOTICE("locker: safe mode: every master is new: a first start, serving unknown keys now");
                window_end ->
                    ?LOG_NOTICE("locker: safe mode: window over, serving unknown keys")
            end,
            SM#sm{mode = lifted, round_timer = undefined, window_timer = undefined};
        {error, Reason} ->
            ?LOG_ERROR("locker: safe mode: cannot write ~ts (~0p): still refusing unknown keys", [File, Reason]),
            Timer = erlang:start_timer(?RETRY_MS, self(), {locker_safe_mode, retry_lift}),
            _ = is_reference(SM#sm.window_timer) andalso erlang:cancel_timer(SM#sm.window_timer),
            SM#sm{window_timer = Timer}
    end.

%% @doc This node's safe mode, as the other masters ask it over `rpc':
%% `mode' (`off'; `timed': a window from the start; `provisional': no
%% record, asking whether the cluster is new; `ready': every other master
%% was found fresh; `lifted': serving after that or after the window; or
%% `none': no server has run in this VM), and `fresh': provisional or
%% ready with an empty store (this node has never granted or learnt
%% anything).
-spec status() -> #{mode := mode() | none, fresh := boolean()}.
status() ->
    case persistent_term:get(?KEY, undefined) of
        #{mode := Mode} when Mode =:= provisional; Mode =:= ready ->
            #{mode => Mode, fresh => locker_nif:lease_count() =:= 0};
        #{mode := Mode} ->
            #{mode => Mode, fresh => false};
        undefined ->
            #{mode => none, fresh => false}
    end.
