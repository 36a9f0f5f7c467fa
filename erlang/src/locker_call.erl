%% @doc `gen_server:multi_call/4' to the `locker' servers of a set of
%% nodes, without the middleman process OTP spawns per call.
%%
%% The wire messages are those of `gen_server:call/3' in OTP 25: a monitor
%% with an alias, then `{'$gen_call', {self(), [alias | Mref]}, Request}';
%% any locker node (the original, ours, lockerd) answers them. Late replies
%% go to a deactivated alias and are dropped by the runtime, so the
%% caller's mailbox stays clean.
%% @end
-module(locker_call).

-export([multi_call/3]).

%% `[alias | Mref]' is the improper list OTP's own gen:call sends.
-dialyzer({no_improper_lists, multi_call/3}).

-spec multi_call([node()], term(), timeout()) -> {[{node(), term()}], [node()]}.
multi_call(Nodes, Request, Timeout) ->
    Pending = lists:foldl(
        fun(Node, Acc) ->
            Dest = {locker, Node},
            Mref = erlang:monitor(process, Dest, [{alias, demonitor}]),
            _ = erlang:send(Dest, {'$gen_call', {self(), [alias | Mref]}, Request}, [noconnect]),
            Acc#{Mref => Node}
        end,
        #{},
        Nodes
    ),
    collect(Pending, deadline(Timeout), [], []).

deadline(infinity) -> infinity;
deadline(T) when is_integer(T), T >= 0 -> erlang:monotonic_time(millisecond) + T.

remaining(infinity) -> infinity;
remaining(Deadline) -> max(0, Deadline - erlang:monotonic_time(millisecond)).

collect(Pending, _Deadline, Replies, Bad) when map_size(Pending) =:= 0 ->
    {lists:reverse(Replies), lists:reverse(Bad)};
collect(Pending, Deadline, Replies, Bad) ->
    receive
        {[alias | Mref], Reply} when is_map_key(Mref, Pending) ->
            erlang:demonitor(Mref, [flush]),
            {Node, Rest} = maps:take(Mref, Pending),
            collect(Rest, Deadline, [{Node, Reply} | Replies], Bad);
        {'DOWN', Mref, _, _, _} when is_map_key(Mref, Pending) ->
            {Node, Rest} = maps:take(Mref, Pending),
            collect(Rest, Deadline, Replies, [Node | Bad])
    after remaining(Deadline) ->
        Late = maps:fold(
            fun(Mref, Node, Acc) ->
                erlang:demonitor(Mref, [flush]),
                [Node | Acc]
            end,
            [],
            Pending
        ),
        {lists:reverse(Replies), lists:reverse(Bad, lists:sort(Late))}
    end.
