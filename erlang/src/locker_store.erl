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
apply(Request) ->
    %% Decoded, applied and answered once for every adapter, in the Rust
    %% core (locker_core::protocol); a phase two that the store refused is
    %% answered `{error, no_promise}', which coordinators count as no commit.
    case locker_nif:handle(Request) of
        unknown_request -> {{error, {unknown_request, Request}}, []};
        Handled -> Handled
    end.

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
