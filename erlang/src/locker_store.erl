%% @doc The effect of a protocol request on this node's store, with the
%% reply the server gives: used by the `locker' server for requests that
%% come as messages, and by the coordinator ({@link locker_call}) for this
%% node's own vote and phase two, without a message.
%% @end
-module(locker_store).

-export([apply/1, apply_here/1, tag_epoch/1, epoch_refusal/1]).

%% @doc `{Reply, Wakes}': the reply to `Request' and the waiters it woke
%% (for the server to answer). Raises `badarg' on bad arguments in a known
%% request.
%%
%% The configuration epoch comes first: a vote or a phase two made under
%% an epoch other than this node's (the epoch travels in the tag, see
%% {@link tag_epoch/1}) changes nothing and is answered
%% `{error, {config_epoch, OurEpoch}}' while this node's configuration was
%% set through epochs. Requests without an epoch (original coordinators)
%% and `release' (which only gives back what its caller holds) are not
%% checked.
-spec apply(term()) -> {term(), [locker_nif:wake()]}.
apply(Request) ->
    case epoch_refusal(Request) of
        none -> handle(Request);
        Refusal -> {Refusal, []}
    end.

%% @doc `none', or the reply refusing `Request' because it was made under
%% another configuration epoch than this node's.
%% In cluster mode a vote or phase two on a key of another group than
%% this node's is refused first (`{error, {wrong_group, OwnGroup}}', or
%% during a table change `{error, {table_epoch, TE}}'): a coordinator with
%% another group table than this master's cannot lock here a key this
%% master's table puts elsewhere (see locker_groups:refusal/1).
-spec epoch_refusal(term()) ->
    none
    | {error, {config_epoch, locker_meta:epoch()}}
    | {error, {wrong_group, non_neg_integer() | none}}
    | {error, {table_epoch, locker_groups:table_epoch()}}.
epoch_refusal(Request) ->
    case locker_groups:refusal(Request) of
        none -> epoch_refusal_(Request);
        Refusal -> Refusal
    end.

epoch_refusal_(Request) ->
    case checked_tag(Request) of
        none ->
            none;
        Tag ->
            case tag_epoch(Tag) of
                none ->
                    untagged_refusal(Request, Tag);
                Epoch ->
                    case locker_meta:config() of
                        #{mode := epoch, epoch := Epoch} -> none;
                        #{mode := epoch, epoch := Own} -> {error, {config_epoch, Own}};
                        _ -> none
                    end
            end
    end.

%% A vote or phase two from a coordinator whose tags carry no epoch (an
%% original coordinator, with a static view), as
%% locker_core::membership::refuses_untagged: refused by a node configured
%% through epochs while its configuration is joint (phase one and phase
%% two: a lease stored on an old master after it took the joint epoch
%% would be outside the horizon it noted), and phase one by such a node
%% that is not a voter of its configuration (a master the cluster
%% removed). Tags of cluster mode's coordinators (`{'$locker_epoch',
%% {'$locker_table', _}, _}', see locker_groups) are theirs to check.
untagged_refusal(Request, Tag) ->
    case locker_meta:config() of
        #{mode := epoch, epoch := Own, joint := Joint} when Joint =/= none ->
            case marked(Tag) of
                true -> none;
                false -> {error, {config_epoch, Own}}
            end;
        #{mode := epoch, epoch := Own} = Config when element(1, Request) =:= get_write_lock ->
            case lists:member(node(), locker_meta:voters(Config)) of
                true -> none;
                false -> {error, {config_epoch, Own}}
            end;
        _ ->
            none
    end.

marked({'$locker_token', Inner, _}) -> marked(Inner);
marked({'$locker_epoch', _, _}) -> true;
marked(_) -> false.

checked_tag({get_write_lock, _, _, Tag}) -> Tag;
checked_tag({write, Tag, _, _, _}) -> Tag;
checked_tag({update, Tag, _, _}) -> Tag;
checked_tag({extend_lease, Tag, _, _, _}) -> Tag;
%% One-round requests (their `undo' gives back, like `release').
checked_tag({cond_write, Tag, _, _, _}) -> Tag;
checked_tag({cond_update, Tag, _, _, _}) -> Tag;
checked_tag({cond_extend, Tag, _, _, _}) -> Tag;
checked_tag({cond_release, Tag, _, _}) -> Tag;
checked_tag(_) -> none.

%% @doc The configuration epoch a tag of this project's coordinators
%% carries: `{'$locker_epoch', Epoch, Ref}', or as the middle element of a
%% token tag `{'$locker_token', {'$locker_epoch', Epoch, Ref}, Token}'
%% (both are opaque tags to original nodes and to lockerd); `none' for any
%% other tag.
-spec tag_epoch(term()) -> locker_meta:epoch() | none.
tag_epoch({'$locker_token', Inner, _}) -> tag_epoch(Inner);
tag_epoch({'$locker_epoch', {C, P} = Epoch, _}) when is_integer(C), C >= 0, is_atom(P) -> Epoch;
tag_epoch(_) -> none.

%% Decoded, applied and answered once for every adapter, in the Rust core
%% (locker_core::protocol); a phase two that the store refused is answered
%% `{error, no_promise}', which coordinators count as no commit.
handle(Request) ->
    case locker_nif:handle(Request) of
        unknown_request -> {{error, {unknown_request, Request}}, []};
        Handled -> Handled
    end.

%% @doc {@link apply/1} from a coordinator's own process: the reply, with
%% the woken waiters handed to the server (if it is running: its waiters
%% go with it when it stops).
%%
%% The epoch check and the store's change are two steps here (the server
%% does both between two of its messages): a lease stored under an epoch
%% this node left in between is reported to the server, which counts it
%% among the leases of the previous configuration (see
%% {@link locker_membership}).
-spec apply_here(term()) -> term().
apply_here(Request) ->
    TableEpoch = locker_groups:table_epoch(),
    try apply(Request) of
        {Reply, Wakes} ->
            _ = Wakes =:= [] orelse tell_server({locker_wakes, Wakes}),
            _ = Reply =:= ok andalso late_lease(Request),
            %% A group table change taken between the check and the write
            %% (cluster mode): the lease counts among the old ones.
            _ = Reply =:= ok andalso TableEpoch =/= locker_groups:table_epoch() andalso
                late_table_lease(Request),
            Reply
    catch
        error:badarg -> {error, badarg}
    end.

late_lease({Op, Tag, _Key, _Value, LeaseMs}) when
    Op =:= write; Op =:= extend_lease; Op =:= cond_write; Op =:= cond_extend
->
    case tag_epoch(Tag) of
        none ->
            ok;
        Epoch ->
            case locker_meta:epoch() of
                Epoch -> ok;
                _ -> tell_server({locker_late_lease, erlang:monotonic_time(millisecond) + LeaseMs})
            end
    end;
late_lease(_) ->
    ok.

late_table_lease({Op, _Tag, _Key, _Value, LeaseMs}) when Op =:= write; Op =:= extend_lease ->
    tell_server({locker_late_lease, erlang:monotonic_time(millisecond) + LeaseMs});
late_table_lease(_) ->
    ok.

tell_server(Msg) ->
    case whereis(locker) of
        undefined -> ok;
        Server -> Server ! Msg
    end.
