%% @doc The effect of a protocol request on this node's store, with the
%% reply the server gives: used by the `locker' server for requests that
%% come as messages, and by the coordinator ({@link locker_call}) for this
%% node's own vote and phase two, without a message.
%% @end
-module(locker_store).

-export([apply/1, apply_here/1]).

%% @doc `{Reply, Wakes}': the reply to `Request' and the waiters it woke
%% (for the server to answer). Raises `badarg' on bad arguments in a known
%% request.
-spec apply(term()) -> {term(), [locker_nif:wake()]}.
apply({get_write_lock, Key, Expected, Tag}) ->
    {locker_nif:get_write_lock(Key, Expected, Tag), []};
apply({release_write_lock, Tag}) ->
    {locker_nif:release_write_lock(Tag), []};
apply({write, Tag, Key, Value, LeaseLength}) ->
    committed(locker_nif:write(Tag, Key, Value, LeaseLength));
apply({update, Tag, Key, Value}) ->
    {locker_nif:update(Tag, Key, Value), []};
apply({extend_lease, Tag, Key, Value, LeaseLength}) ->
    committed(locker_nif:extend_lease(Tag, Key, Value, LeaseLength));
apply({release, Key, Value, Tag}) ->
    case locker_nif:release(Key, Value, Tag) of
        {ok, Wakes} -> {ok, Wakes};
        Error -> {Error, []}
    end;
apply(Request) ->
    {{error, {unknown_request, Request}}, []}.

%% A phase two that the store refused (its promise is gone and applying
%% it could displace another holder) is answered `{error, no_promise}',
%% which coordinators count as no commit.
committed({ok, Wakes}) -> {ok, Wakes};
committed({error, no_promise} = Error) -> {Error, []}.

%% @doc {@link apply/1} from a coordinator's own process: the reply, with
%% the woken waiters handed to the server (if it is running: its waiters
%% go with it when it stops).
-spec apply_here(term()) -> term().
apply_here(Request) ->
    try apply(Request) of
        {Reply, []} ->
            Reply;
        {Reply, Wakes} ->
            _ =
                case whereis(locker) of
                    undefined -> ok;
                    Server -> Server ! {locker_wakes, Wakes}
                end,
            Reply
    catch
        error:badarg -> {error, badarg}
    end.
