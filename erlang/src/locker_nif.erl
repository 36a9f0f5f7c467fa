%% @doc The NIF store of this node (Rust, `native/locker_nif').
%%
%% Only {@link locker_server} changes the store; any process may call
%% {@link dirty_read/1}. Every function raises `badarg' on bad arguments
%% and never crashes the VM. Not a public API: use {@link locker}.
%% @end
-module(locker_nif).

-export([
    dirty_read/1,
    handle/1,
    handle/2,
    handle_batch/2,
    get_write_lock/3,
    release_write_lock/1,
    write/4,
    update/3,
    extend_lease/4,
    release/3,
    wait_for/3,
    wait_for_release/3,
    sweep/1,
    set_intervals/3,
    next_due/0,
    take_due/0,
    pause_timers/2,
    timers/0,
    take_log/1,
    replay/2,
    debug_state/0,
    stats/0,
    lease_count/0,
    memory/0,
    configure/2,
    abstain_after_start/1,
    set_joint/1,
    membership_snapshot/0,
    abstain_left/0,
    raise_token_floor/1,
    reset_volatile/0,
    clear/0
]).

-on_load(load/0).

%% The version of the crate the library must be built from (the workspace
%% version in Cargo.toml; a test checks they agree).
-define(NIF_VERSION, "0.1.0").

-type wake() :: {non_neg_integer(), {ok, term()}}.
-export_type([wake/0]).

-spec load() -> ok | {error, term()}.
load() ->
    Dir =
        case code:priv_dir(locker) of
            {error, _} -> filename:join(filename:dirname(filename:dirname(code:which(?MODULE))), "priv");
            D -> D
        end,
    Path = filename:join(Dir, "liblocker_nif"),
    %% The library refuses to load unless it was built from this version.
    case erlang:load_nif(Path, list_to_binary(?NIF_VERSION)) of
        ok ->
            ok;
        {error, {load, _}} = Error ->
            Built = file:read_file(Path ++ ".so.vsn"),
            logger:error(
                "locker: ~s.so is not the NIF of locker ~s (its version file says ~p): rebuild it "
                "(sh native/build_nif.sh) or install a matching prebuilt one",
                [Path, ?NIF_VERSION, Built]
            ),
            Error;
        Error ->
            Error
    end.

-define(NIF, erlang:nif_error({nif_not_loaded, ?MODULE})).

-spec dirty_read(term()) -> {ok, term()} | {error, not_found}.
dirty_read(_Key) -> ?NIF.

%% Serves a request tuple of the store (`get_write_lock', `release_write_lock',
%% `write', `update', `extend_lease', `release'): the reply the protocol gives
%% it, and the waiters it woke. `unknown_request' for any other term. Raises
%% `badarg' on a bad lease length.
-spec handle(term()) -> {term(), [wake()]} | unknown_request.
handle(_Request) -> ?NIF.

%% {@link handle/1}, waits included: `{pending, []}' registers waiter `Id',
%% answered by a later wake.
-spec handle(term(), non_neg_integer()) -> {term(), [wake()]} | unknown_request.
handle(_Request, _WaiterId) -> ?NIF.

%% Serves the requests of a batch in order, in one call: `{Replies, Wakes}'
%% with the replies in the order of `Requests', or `bad_batch' (nothing
%% applied) if one of them is not a store request answered at once, or the
%% batch is empty or longer than 1024. `Refusals' has, for each request,
%% `none' (apply it) or the reply that refuses it without applying it.
-spec handle_batch([term()], [term()]) -> {[term()], [wake()]} | bad_batch.
handle_batch(_Requests, _Refusals) -> ?NIF.

-spec get_write_lock(term(), term(), term()) ->
    ok | {error, already_locked | not_expected_value | {stale_token, pos_integer()}}.
get_write_lock(_Key, _Expected, _Tag) -> ?NIF.

-spec release_write_lock(term()) -> ok.
release_write_lock(_Tag) -> ?NIF.

%% Phase two refuses with `{error, no_promise}' when the tag holds no live
%% promise on the key and applying it could displace another holder.
-spec write(term(), term(), term(), number()) -> {ok, [wake()]} | {error, no_promise}.
write(_Tag, _Key, _Value, _LeaseMs) -> ?NIF.

-spec update(term(), term(), term()) -> ok | {error, no_promise}.
update(_Tag, _Key, _Value) -> ?NIF.

-spec extend_lease(term(), term(), term(), number()) -> {ok, [wake()]} | {error, no_promise}.
extend_lease(_Tag, _Key, _Value, _LeaseMs) -> ?NIF.

-spec release(term(), term(), term()) -> {ok, [wake()]} | {error, not_owner | not_found | no_promise}.
release(_Key, _Value, _Tag) -> ?NIF.

-spec wait_for(term(), non_neg_integer(), timeout()) -> {ok, term()} | pending.
wait_for(_Key, _Id, _Timeout) -> ?NIF.

-spec wait_for_release(term(), non_neg_integer(), timeout()) -> {ok, released} | pending.
wait_for_release(_Key, _Id, _Timeout) -> ?NIF.

-spec sweep(pos_integer()) ->
    {boolean(), [wake()], [non_neg_integer()], non_neg_integer(), non_neg_integer()}.
sweep(_Budget) -> ?NIF.

%% The server's one timer (see locker_core::Schedule): its periodic tasks
%% restart on these periods (milliseconds).
-spec set_intervals(pos_integer(), pos_integer(), pos_integer()) -> ok.
set_intervals(_LeaseExpireMs, _LockExpireMs, _PushTransMs) -> ?NIF.

%% Milliseconds until the server's timer should fire (a periodic task or a
%% waiter is due), `infinity' when nothing will be.
-spec next_due() -> non_neg_integer() | infinity.
next_due() -> ?NIF.

%% What is due now, `{Sweep, Push}'; the periodic tasks due move on.
-spec take_due() -> {boolean(), boolean()}.
take_due() -> ?NIF.

%% Pauses (`true') or resumes (`false') periodic tasks.
-spec pause_timers([locker_server:timer_task()], boolean()) -> ok.
pause_timers(_Tasks, _Paused) -> ?NIF.

%% Milliseconds until each periodic task (lease sweep, promise sweep, log
%% push) is next due, or `paused'.
-spec timers() -> {non_neg_integer() | paused, non_neg_integer() | paused, non_neg_integer() | paused}.
timers() -> ?NIF.

-spec take_log(pos_integer()) -> [tuple()].
take_log(_Max) -> ?NIF.

-spec replay(list(), pos_integer()) -> {[wake()], list(), non_neg_integer()}.
replay(_Entries, _Max) -> ?NIF.

-spec debug_state() -> {[{term(), term(), integer()}], [{term(), term(), integer()}]}.
debug_state() -> ?NIF.

-spec stats() -> #{atom() => non_neg_integer()}.
stats() -> ?NIF.

-spec memory() -> non_neg_integer().
memory() -> ?NIF.

-spec lease_count() -> non_neg_integer().
lease_count() -> ?NIF.

-spec configure(non_neg_integer(), boolean()) -> ok.
configure(_PromiseTtlMs, _LogEnabled) -> ?NIF.

-spec abstain_after_start(non_neg_integer()) -> ok.
abstain_after_start(_Ms) -> ?NIF.

%% Whether this node's configuration is joint (between two epochs of a
%% change): while it is, an extension never shortens a live lease
%% (locker_core::membership::stored_expiry).
-spec set_joint(boolean()) -> ok.
set_joint(_Joint) -> ?NIF.

%% How long safe mode still refuses unknown keys (ms, 0: it does not).
-spec abstain_left() -> non_neg_integer().
abstain_left() -> ?NIF.

%% `{TokenFloor, HorizonMs}': the token floor raised to every live
%% lease's token, and how long the longest live lease still lasts.
-spec membership_snapshot() -> {non_neg_integer(), non_neg_integer()}.
membership_snapshot() -> ?NIF.

-spec raise_token_floor(non_neg_integer()) -> ok.
raise_token_floor(_Floor) -> ?NIF.

-spec reset_volatile() -> ok.
reset_volatile() -> ?NIF.

-spec clear() -> ok.
clear() -> ?NIF.
