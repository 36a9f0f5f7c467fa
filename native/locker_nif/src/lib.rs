//! `locker_nif`: the BEAM node's locker store, a thin adapter over
//! [`locker_core`].
//!
//! One store per VM. The `locker` server process performs every state
//! transition through these functions; any process reads with
//! [`dirty_read`] straight from the shared lease map, without a message.
//! Bad arguments raise `badarg`; no function panics across the boundary
//! (rustler, or [`lean`] for the hot functions, turns a panic into an
//! Erlang error if one ever did).

mod alloc;
mod lean;
mod store;
mod term;
mod term_cache;
mod value;
mod wire;

use locker_core::clock;
use locker_core::protocol::{self, DecodeError, Handled, Op, Reply, Request};
use locker_core::{Intervals, LogEntry, Task, WaiterId, Wake};
use rustler::{Encoder, Env, Error, NifResult, Term};

use crate::store::{leases, with_engine, with_schedule};
use crate::value::{to_term, Value};
use crate::wire::{Nif, Wire};

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;

pub(crate) mod atoms {
    rustler::atoms! {
        ok,
        error,
        not_found,
        already_locked,
        not_expected_value,
        not_owner,
        released,
        pending,
        infinity,
        write,
        update,
        extend_lease,
        release,
        write_locks,
        leases,
        promises,
        waiters,
        log,
        log_dropped,
        expiry_entries,
        locker_corrupt_term,
        stale_token,
        no_promise,
        unknown_request,
        none,
        bad_batch,
        get_write_lock,
        release_write_lock,
        wait_for,
        wait_for_release,
        expire_leases,
        expire_locks,
        push_trans_log,
        paused,
        cond_write,
        cond_update,
        cond_extend,
        cond_release,
        undo,
        // The tag shape of this project's coordinators: {'$locker_token', Ref, Token}.
        locker_token = "$locker_token",
    }
}

/// Builds a tuple without allocating (rustler's `make_tuple` collects
/// into a Vec, which costs a malloc/free pair on the `dirty_read` path).
fn make_tuple<'a>(env: Env<'a>, items: &[Term<'a>]) -> Term<'a> {
    let raw: smallvec::SmallVec<[rustler::sys::ErlNifTerm; 6]> =
        items.iter().map(|t| t.as_c_arg()).collect();
    // SAFETY: every element is a live term of `env`.
    unsafe {
        Term::new(
            env,
            rustler::sys::enif_make_tuple_from_array(
                env.as_c_arg(),
                raw.as_ptr(),
                raw.len() as u32,
            ),
        )
    }
}

/// A lease or timeout length (see [`locker_core::protocol::millis`]).
fn millis(t: Term) -> NifResult<u64> {
    protocol::millis(&Wire(t)).ok_or(Error::BadArg)
}

/// `[{WaiterId, Reply}]`
fn wakes_to_term<'a>(env: Env<'a>, wakes: Vec<Wake<Value>>) -> Term<'a> {
    let items: Vec<Term> = wakes
        .into_iter()
        .map(|w| {
            let (id, reply) = w.into_reply();
            make_tuple(env, &[id.encode(env), reply.encode(&Nif(env))])
        })
        .collect();
    items.encode(env)
}

/// Tells the scheduler how much of its timeslice (about 1 ms) a long call
/// used, so that the calling process yields in time and does not starve
/// the processes queued behind it on the same scheduler.
fn account(env: Env, started: std::time::Instant) {
    let percent = (started.elapsed().as_micros() / 10).clamp(1, 100) as i32;
    rustler::schedule::consume_timeslice(env, percent);
}

/// Decodes request `op` from the NIF's arguments (in the order of the
/// request tuple's elements) and applies it.
fn serve<'a, const N: usize>(
    env: Env<'a>,
    op: Op,
    args: [Term<'a>; N],
    waiter: WaiterId,
) -> NifResult<Handled<Value>> {
    let mut request = Request::decode(op, &args.map(Wire), &Nif(env)).map_err(|_| Error::BadArg)?;
    request.set_waiter(waiter);
    Ok(with_engine(|e| e.handle(request, clock::now())))
}

/// The reply as a term.
fn reply<'a>(env: Env<'a>, h: Handled<Value>) -> Term<'a> {
    h.reply.encode(&Nif(env))
}

/// The reply of a request that wakes waiters: `{ok, Wakes}` (the server
/// answers them), or the refusal.
fn with_wakes<'a>(env: Env<'a>, h: Handled<Value>) -> Term<'a> {
    match h.reply {
        Reply::Ok => make_tuple(
            env,
            &[atoms::ok().to_term(env), wakes_to_term(env, h.wakes)],
        ),
        r => r.encode(&Nif(env)),
    }
}

fn error<'a>(env: Env<'a>, reason: rustler::Atom) -> Term<'a> {
    tuple2(env, atoms::error().to_term(env), reason.to_term(env))
}

/// `{A, B}` from a stack array (no collecting, no copying of a buffer).
#[inline]
fn tuple2<'a>(env: Env<'a>, a: Term<'a>, b: Term<'a>) -> Term<'a> {
    let raw = [a.as_c_arg(), b.as_c_arg()];
    // SAFETY: both elements are live terms of `env`.
    unsafe {
        Term::new(
            env,
            rustler::sys::enif_make_tuple_from_array(env.as_c_arg(), raw.as_ptr(), 2),
        )
    }
}

lean::lean_nif!("dirty_read", 1, dirty_read);

/// `dirty_read(Key) -> {ok, Value} | {error, not_found}`, read in the
/// caller's process. A lease past its expiry is never returned, swept or not.
///
/// The shard's read lock is held only to find the lease and build its
/// value; the clock is read after it is released (the check still happens
/// within this call, after the lease was found), through
/// [`clock::is_before_fast`] (the time stamp counter when it proves the
/// expiry ahead, else CLOCK_MONOTONIC).
fn dirty_read<'a>(env: Env<'a>, [k]: [Term<'a>; 1]) -> Term<'a> {
    let mut kb = term::Buf::new();
    term::encode(env, k, &mut kb);
    let found = leases().read(&kb[..], |lease| {
        (lease.expires_at, to_term(env, &lease.value))
    });
    match found {
        Some((expires_at, v)) if clock::is_before_fast(expires_at) => {
            tuple2(env, atoms::ok().to_term(env), v)
        }
        _ => error(env, atoms::not_found()),
    }
}

lean::lean_nif!("get_write_lock", 3, get_write_lock);

/// `get_write_lock(Key, Expected, Tag) -> ok | {error, already_locked |
/// not_expected_value | {stale_token, Floor}}` (the last only for tags
/// carrying a fencing token).
fn get_write_lock<'a>(env: Env<'a>, args: [Term<'a>; 3]) -> NifResult<Term<'a>> {
    Ok(reply(env, serve(env, Op::GetWriteLock, args, 0)?))
}

lean::lean_nif!("release_write_lock", 1, release_write_lock);

/// `release_write_lock(Tag) -> ok`
fn release_write_lock<'a>(env: Env<'a>, args: [Term<'a>; 1]) -> NifResult<Term<'a>> {
    Ok(reply(env, serve(env, Op::ReleaseWriteLock, args, 0)?))
}

lean::lean_nif!("write", 4, write);

/// `write(Tag, Key, Value, LeaseMs) -> {ok, Wakes} | {error, no_promise}`
fn write<'a>(env: Env<'a>, args: [Term<'a>; 4]) -> NifResult<Term<'a>> {
    Ok(with_wakes(env, serve(env, Op::Write, args, 0)?))
}

lean::lean_nif!("update", 3, update);

/// `update(Tag, Key, Value) -> ok | {error, no_promise}`
fn update<'a>(env: Env<'a>, args: [Term<'a>; 3]) -> NifResult<Term<'a>> {
    Ok(reply(env, serve(env, Op::Update, args, 0)?))
}

lean::lean_nif!("extend_lease", 4, extend_lease);

/// `extend_lease(Tag, Key, Value, LeaseMs) -> {ok, Wakes} | {error, no_promise}`
fn extend_lease<'a>(env: Env<'a>, args: [Term<'a>; 4]) -> NifResult<Term<'a>> {
    Ok(with_wakes(env, serve(env, Op::ExtendLease, args, 0)?))
}

lean::lean_nif!("release", 3, release);

/// `release(Key, Value, Tag) -> {ok, Wakes} | {error, not_owner | not_found | no_promise}`
fn release<'a>(env: Env<'a>, args: [Term<'a>; 3]) -> NifResult<Term<'a>> {
    Ok(with_wakes(env, serve(env, Op::Release, args, 0)?))
}

lean::lean_nif!("handle", 1, handle);

/// `handle(Request) -> {Reply, Wakes} | unknown_request`: serves a request
/// tuple of the store (`get_write_lock`, `release_write_lock`, `write`,
/// `update`, `extend_lease`, `release`) with the reply the protocol gives
/// it; `unknown_request` for any other term (waits need a waiter id:
/// [`handle_waiting`]). A bad lease length raises `badarg`.
fn handle<'a>(env: Env<'a>, [request]: [Term<'a>; 1]) -> NifResult<Term<'a>> {
    serve_tuple(env, request, None)
}

lean::lean_nif!("handle", 2, handle_waiting);

/// `handle(Request, WaiterId) -> {Reply, Wakes} | {pending, []} |
/// unknown_request`: as `handle/1`, waits included (`pending`: the waiter
/// `WaiterId` is answered by a later wake).
fn handle_waiting<'a>(env: Env<'a>, [request, id]: [Term<'a>; 2]) -> NifResult<Term<'a>> {
    serve_tuple(env, request, Some(id.decode()?))
}

fn serve_tuple<'a>(env: Env<'a>, t: Term<'a>, waiter: Option<WaiterId>) -> NifResult<Term<'a>> {
    let unknown = || Ok(atoms::unknown_request().to_term(env));
    let Some(op) = Op::of_tuple(&Wire(t)) else {
        return unknown();
    };
    if op.waits() && waiter.is_none() {
        return unknown();
    }
    let mut request = match Request::decode_tuple(&Wire(t), &Nif(env)) {
        Ok(Some(r)) => r,
        Ok(None) | Err(DecodeError::Unknown) => return unknown(),
        Err(DecodeError::BadArg) => return Err(Error::BadArg),
    };
    request.set_waiter(waiter.unwrap_or(0));
    let h = with_engine(|e| e.handle(request, clock::now()));
    Ok(make_tuple(
        env,
        &[h.reply.encode(&Nif(env)), wakes_to_term(env, h.wakes)],
    ))
}

/// `handle_batch(Requests, Refusals) -> {Replies, Wakes} | bad_batch`:
/// serves the requests of a batch (`{'$locker_batch', Requests}`, a
/// proper list) in order, in one call, with the replies in the same
/// order. Every request is decoded first ([`protocol::decode_batch`]): if
/// one is malformed, nothing is applied and the answer is `bad_batch`.
/// `Refusals` (as long as `Requests`) has `none` for each request to
/// apply, or the reply that refuses it (the server's epoch check), given
/// as is without applying it.
#[rustler::nif]
fn handle_batch<'a>(env: Env<'a>, requests: Term<'a>, refusals: Term<'a>) -> NifResult<Term<'a>> {
    let started = std::time::Instant::now();
    let bad = || Ok(atoms::bad_batch().to_term(env));
    // Proper lists only (rustler's list decoding must not see an
    // improper one).
    if requests.list_length().is_err() || refusals.list_length().is_err() {
        return bad();
    }
    let (Ok(items), Ok(refused)) = (
        requests.decode::<Vec<Term<'a>>>(),
        refusals.decode::<Vec<Term<'a>>>(),
    ) else {
        return bad();
    };
    if items.len() != refused.len() {
        return Err(Error::BadArg);
    }
    let wires: Vec<Wire<'a>> = items.iter().map(|t| Wire(*t)).collect();
    let Ok(decoded) = protocol::decode_batch(&wires, &Nif(env)) else {
        return bad();
    };
    let none = atoms::none();
    let mut replies = Vec::with_capacity(decoded.len());
    let mut wakes = Vec::new();
    with_engine(|e| {
        let now = clock::now();
        for (request, refusal) in decoded.into_iter().zip(&refused) {
            if refusal.decode::<rustler::Atom>().ok() != Some(none) {
                replies.push(Err(*refusal));
                continue;
            }
            let h = e.handle(request, now);
            wakes.extend(h.wakes);
            replies.push(Ok(h.reply));
        }
    });
    let replies: Vec<Term<'a>> = replies
        .into_iter()
        .map(|r| match r {
            Ok(reply) => reply.encode(&Nif(env)),
            Err(refusal) => refusal,
        })
        .collect();
    account(env, started);
    Ok(make_tuple(
        env,
        &[replies.encode(env), wakes_to_term(env, wakes)],
    ))
}

/// `wait_for(Key, WaiterId, TimeoutMs) -> {ok, Value} | pending`
#[rustler::nif]
fn wait_for<'a>(env: Env<'a>, k: Term<'a>, id: u64, timeout: Term<'a>) -> NifResult<Term<'a>> {
    Ok(reply(env, serve(env, Op::WaitFor, [k, timeout], id)?))
}

/// `wait_for_release(Key, WaiterId, TimeoutMs) -> {ok, released} | pending`
#[rustler::nif]
fn wait_for_release<'a>(
    env: Env<'a>,
    k: Term<'a>,
    id: u64,
    timeout: Term<'a>,
) -> NifResult<Term<'a>> {
    Ok(reply(
        env,
        serve(env, Op::WaitForRelease, [k, timeout], id)?,
    ))
}

/// `sweep(Budget) -> {Done, Wakes, TimedOutWaiterIds, LeasesExpired, PromisesExpired}`
#[rustler::nif]
fn sweep(env: Env, budget: usize) -> Term {
    let started = std::time::Instant::now();
    let r = with_engine(|e| e.sweep(clock::now(), budget));
    account(env, started);
    make_tuple(
        env,
        &[
            r.done.encode(env),
            wakes_to_term(env, r.wakes),
            r.timed_out.encode(env),
            r.leases_expired.encode(env),
            r.promises_expired.encode(env),
        ],
    )
}

/// `set_intervals(LeaseExpireMs, LockExpireMs, PushTransMs) -> ok`: the
/// server's periodic tasks start anew on these periods (none paused).
#[rustler::nif]
fn set_intervals<'a>(
    env: Env<'a>,
    leases_ms: Term<'a>,
    locks_ms: Term<'a>,
    push_ms: Term<'a>,
) -> NifResult<Term<'a>> {
    let intervals = Intervals {
        expire_leases: locker_core::ms(millis(leases_ms)?),
        expire_locks: locker_core::ms(millis(locks_ms)?),
        push_trans_log: locker_core::ms(millis(push_ms)?),
    };
    with_schedule(|s| *s = locker_core::Schedule::new(intervals, clock::now()));
    Ok(atoms::ok().to_term(env))
}

/// `next_due() -> Ms | infinity`: milliseconds (rounded up) until the
/// server's one timer should fire: a periodic task or a waiter is due
/// (see [`locker_core::Schedule::next_at`]).
#[rustler::nif]
fn next_due(env: Env) -> Term {
    let wakeup = with_engine(|e| e.next_wakeup());
    match with_schedule(|s| s.next_in(clock::now(), wakeup)) {
        Some(us) => us.div_ceil(1_000).encode(env),
        None => atoms::infinity().to_term(env),
    }
}

/// `take_due() -> {Sweep, Push}`: what is due now (the server's timer
/// fired); the periodic tasks due move on by one period.
#[rustler::nif]
fn take_due(env: Env) -> Term {
    let wakeup = with_engine(|e| e.next_wakeup());
    let due = with_schedule(|s| s.take_due(clock::now(), wakeup));
    make_tuple(env, &[due.sweep.encode(env), due.push.encode(env)])
}

fn task_of(t: Term) -> NifResult<Task> {
    let a: rustler::Atom = t.decode()?;
    if a == atoms::expire_leases() {
        Ok(Task::ExpireLeases)
    } else if a == atoms::expire_locks() {
        Ok(Task::ExpireLocks)
    } else if a == atoms::push_trans_log() {
        Ok(Task::PushTransLog)
    } else {
        Err(Error::BadArg)
    }
}

/// `pause_timers(Tasks, Paused) -> ok`: pauses (or resumes) the periodic
/// tasks named in `Tasks` (`expire_leases`, `expire_locks`,
/// `push_trans_log`); a resumed task is due one period later.
#[rustler::nif]
fn pause_timers<'a>(env: Env<'a>, tasks: Term<'a>, paused: bool) -> NifResult<Term<'a>> {
    // Walked cell by cell: an improper list is refused, never decoded.
    let mut list = Vec::new();
    let mut rest = tasks;
    while let Ok((head, tail)) = rest.list_get_cell() {
        list.push(task_of(head)?);
        rest = tail;
    }
    if !rest.is_empty_list() {
        return Err(Error::BadArg);
    }
    let now = clock::now();
    with_schedule(|s| {
        for t in list {
            if paused {
                s.pause(t);
            } else {
                s.resume(t, now);
            }
        }
    });
    Ok(atoms::ok().to_term(env))
}

/// `timers() -> {Leases, Locks, Push}`: for each periodic task,
/// milliseconds (rounded up) until it is next due, or `paused`.
#[rustler::nif]
fn timers(env: Env) -> Term {
    let now = clock::now();
    let at = with_schedule(|s| Task::ALL.map(|t| s.due_at(t)));
    let slots = at.map(|a| match a {
        Some(at) => at.saturating_sub(now).div_ceil(1_000).encode(env),
        None => atoms::paused().to_term(env),
    });
    make_tuple(env, &slots)
}

/// `take_log(Max) -> [Entry]`, oldest first.
#[rustler::nif]
fn take_log(env: Env, max: usize) -> Term {
    let started = std::time::Instant::now();
    let entries = with_engine(|e| e.take_log(max));
    let terms: Vec<Term> = entries.iter().map(|e| e.encode(&Nif(env))).collect();
    account(env, started);
    terms.encode(env)
}

/// `replay(Entries, Max) -> {Wakes, Rest, Skipped}`: applies up to `Max`
/// entries of a master's log; `Rest` is what is left; entries of an
/// unknown shape are skipped and counted.
#[rustler::nif]
fn replay<'a>(env: Env<'a>, entries: Term<'a>, max: usize) -> NifResult<Term<'a>> {
    if !entries.is_list() {
        return Err(Error::BadArg);
    }
    let started = std::time::Instant::now();
    // Decode first, then apply the whole chunk under the lock at once.
    let mut batch = Vec::new();
    let mut skipped = 0usize;
    let mut rest = entries;
    while batch.len() + skipped < max {
        let Ok((head, tail)) = rest.list_get_cell() else {
            break;
        };
        match LogEntry::decode(&Wire(head), &Nif(env)) {
            Some(e) => batch.push(e),
            None => skipped += 1,
        }
        rest = tail;
    }
    let wakes = with_engine(|e| {
        let now = clock::now();
        let mut wakes = Vec::new();
        for entry in batch {
            wakes.extend(e.replay(entry, now));
        }
        wakes
    });
    account(env, started);
    if !rest.is_list() {
        return Err(Error::BadArg); // an improper list
    }
    Ok(make_tuple(
        env,
        &[wakes_to_term(env, wakes), rest, skipped.encode(env)],
    ))
}

/// `debug_state() -> {Promises, Leases}`: `[{Key, Tag, ExpiresAtMs}]` and
/// `[{Key, Value, ExpiresAtMs}]` (wall-clock milliseconds), live ones only.
#[rustler::nif]
fn debug_state(env: Env) -> Term {
    let now = clock::now();
    let mut raw = Vec::new();
    with_engine(|e| {
        e.for_each_promise(|k, t, d| {
            if d > now {
                raw.push((k.clone(), t.clone(), d));
            }
        })
    });
    let promises: Vec<Term> = raw
        .iter()
        .map(|(k, t, d)| {
            make_tuple(
                env,
                &[
                    value::decode(env, k),
                    value::decode(env, t),
                    clock::to_system_ms(*d).encode(env),
                ],
            )
        })
        .collect();
    let mut rows = Vec::new();
    leases().for_each(|k, l| {
        if l.is_valid_at(now) {
            rows.push(make_tuple(
                env,
                &[
                    value::decode(env, k),
                    to_term(env, &l.value),
                    clock::to_system_ms(l.expires_at).encode(env),
                ],
            ));
        }
    });
    make_tuple(env, &[promises.encode(env), rows.encode(env)])
}

/// `stats() -> #{leases, promises, waiters, log, log_dropped, expiry_entries}`
#[rustler::nif]
fn stats(env: Env) -> NifResult<Term> {
    let s = with_engine(|e| e.summary());
    let pairs = [
        (atoms::leases(), s.leases as u64),
        (atoms::promises(), s.promises as u64),
        (atoms::waiters(), s.waiters as u64),
        (atoms::log(), s.log as u64),
        (atoms::log_dropped(), s.log_dropped),
        (atoms::expiry_entries(), s.expiry_entries as u64),
    ];
    let mut map = rustler::types::map::map_new(env);
    for (k, v) in pairs {
        map = map.map_put(k, v)?;
    }
    Ok(map)
}

/// `memory() -> Bytes`: heap bytes held by the store (and this library).
#[rustler::nif]
fn memory() -> usize {
    alloc::live_bytes()
}

/// `lease_count() -> N`: stored leases (expired ones not yet swept
/// included), read without taking the engine lock.
#[rustler::nif]
fn lease_count() -> usize {
    leases().len()
}

/// `configure(PromiseTtlMs, LogEnabled) -> ok`
#[rustler::nif]
fn configure<'a>(env: Env<'a>, promise_ttl: Term<'a>, log_enabled: bool) -> NifResult<Term<'a>> {
    let ttl = millis(promise_ttl)?;
    store::configure(locker_core::ms(ttl), log_enabled);
    Ok(atoms::ok().to_term(env))
}

/// `abstain_after_start(Ms) -> ok`: safe mode for a master that started
/// empty: no promise on a key it holds no lease for until `Ms` after the
/// store was created.
#[rustler::nif]
fn abstain_after_start<'a>(env: Env<'a>, ms: Term<'a>) -> NifResult<Term<'a>> {
    store::abstain_after_start(millis(ms)?);
    Ok(atoms::ok().to_term(env))
}

/// `set_joint(Joint) -> ok`: whether this node's configuration is joint
/// (between two epochs of a change); while it is, an extension never
/// shortens a live lease (`locker_core::membership::stored_expiry`).
#[rustler::nif]
fn set_joint(env: Env, joint: bool) -> Term {
    with_engine(|e| e.set_joint(joint));
    atoms::ok().to_term(env)
}

/// `abstain_left() -> Ms`: how long safe mode still refuses unknown keys
/// (milliseconds, rounded up; 0 when it does not). While it does, a lease
/// this node forgot may still live: a reconfiguration must count it among
/// this node's old leases.
#[rustler::nif]
fn abstain_left() -> u64 {
    let now = clock::now();
    let until = with_engine(|e| e.abstain_until());
    until.saturating_sub(now).div_ceil(1000)
}

/// `membership_snapshot() -> {TokenFloor, HorizonMs}`: what a
/// reconfiguration needs from a master: its token floor raised to the
/// token of every live lease, and how long its longest live lease still
/// lasts (milliseconds, rounded up; 0 with none). One pass over the
/// leases, on a dirty scheduler; nothing is allocated.
#[rustler::nif(schedule = "DirtyCpu")]
fn membership_snapshot(env: Env) -> Term {
    let now = clock::now();
    let mut floor = with_engine(|e| e.token_floor());
    let mut until = now;
    leases().for_each(|_, l| {
        if l.is_valid_at(now) {
            floor = floor.max(l.token);
            until = until.max(l.expires_at);
        }
    });
    let ms = (until - now).div_ceil(1000);
    make_tuple(env, &[floor.encode(env), ms.encode(env)])
}

/// `raise_token_floor(Floor) -> ok`: the token floor becomes at least
/// `Floor` (a master taking over the floors of a configuration it joins).
#[rustler::nif]
fn raise_token_floor<'a>(env: Env<'a>, floor: Term<'a>) -> NifResult<Term<'a>> {
    let f: u64 = floor.decode()?;
    with_engine(|e| e.set_token_floor(f));
    Ok(atoms::ok().to_term(env))
}

/// `reset_volatile() -> ok`: forget promises and waiters (server restart).
#[rustler::nif]
fn reset_volatile(env: Env) -> Term {
    with_engine(|e| e.reset_volatile());
    atoms::ok().to_term(env)
}

/// `clear() -> ok`: forget everything.
#[rustler::nif]
fn clear(env: Env) -> Term {
    with_engine(|e| e.clear());
    atoms::ok().to_term(env)
}

/// Loads only for the Erlang side of the same version: `locker_nif.erl`
/// passes the version it was written for.
fn load(env: Env, info: Term) -> bool {
    if info.decode::<String>().ok().as_deref() != Some(env!("CARGO_PKG_VERSION")) {
        return false;
    }
    term::init(env);
    store::init();
    clock::fast_init();
    true
}

rustler::init!("locker_nif", load = load);
