//! The wire protocol's requests, replies and log entries, typed once for
//! every adapter.
//!
//! An adapter (the NIF over rustler's terms, `lockerd` over its own)
//! implements three small traits: [`WireTerm`] (read a term: atoms of
//! [`Name`], integers, floats, tuples), [`Decode`] (turn a term into the
//! engine's key, value and tag) and [`Encode`] (build a term). Everything
//! else is here, once: which requests exist and their arity, how a lease
//! or timeout length is read ([`millis`]), which tags carry a fencing token
//! ([`tag_token`]), the shape of log entries, and every reply
//! ([`Reply::encode`]). [`crate::Engine::handle`] applies a decoded
//! [`Request`].
//!
//! Adding a request means one [`Op`], one [`Request`] variant, one arm in
//! [`Request::decode`] and one in [`crate::Engine::handle`]; adapters only
//! route it.

use crate::waiters::{WaitOutcome, WaiterId, Wake};
use crate::LogEntry;

/// A lease or timeout "forever", in milliseconds: `infinity`, or an integer
/// too big for `u64` (still far below `u64::MAX` once counted in µs).
pub const FOREVER_MS: u64 = u64::MAX / 2_000;

/// The atoms the protocol reads or writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Name {
    /// `ok`
    Ok,
    /// `error`
    Error,
    /// `not_found`: a reply, and the expected value "absent or this atom".
    NotFound,
    /// `already_locked`
    AlreadyLocked,
    /// `not_expected_value`
    NotExpectedValue,
    /// `not_owner`
    NotOwner,
    /// `no_promise`
    NoPromise,
    /// `stale_token`
    StaleToken,
    /// `released`
    Released,
    /// `pending` (the NIF's answer for a registered waiter)
    Pending,
    /// `infinity`
    Infinity,
    /// `'$locker_token'`, the first element of a token-carrying tag.
    LockerToken,
    /// A request's name.
    Op(Op),
}

impl Name {
    /// The atom's text.
    pub const fn as_str(self) -> &'static str {
        match self {
            Name::Ok => "ok",
            Name::Error => "error",
            Name::NotFound => "not_found",
            Name::AlreadyLocked => "already_locked",
            Name::NotExpectedValue => "not_expected_value",
            Name::NotOwner => "not_owner",
            Name::NoPromise => "no_promise",
            Name::StaleToken => "stale_token",
            Name::Released => "released",
            Name::Pending => "pending",
            Name::Infinity => "infinity",
            Name::LockerToken => "$locker_token",
            Name::Op(op) => op.as_str(),
        }
    }
}

/// An integer term, as far as the protocol cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Integer {
    /// Below zero (and at least `i64::MIN`).
    Negative,
    /// From 0 to `u64::MAX`.
    Unsigned(u64),
    /// Beyond `i64::MIN ..= u64::MAX`, either sign.
    Huge,
}

/// Reading a term of one adapter's term type.
pub trait WireTerm: Sized {
    /// Whether the term is the atom `name`.
    fn is_atom(&self, name: Name) -> bool;
    /// The integer, if the term is one.
    fn integer(&self) -> Option<Integer>;
    /// The float, if the term is one.
    fn float(&self) -> Option<f64>;
    /// `f` applied to the elements, if the term is a tuple.
    fn with_tuple<R>(&self, f: impl FnOnce(&[Self]) -> R) -> Option<R>;
}

/// Turning terms into what the engine stores.
pub trait Decode<W> {
    /// The engine's key.
    type Key;
    /// The engine's value.
    type Value;
    /// The engine's promise tag.
    type Tag;
    /// A key.
    fn key(&self, t: &W) -> Self::Key;
    /// A value.
    fn value(&self, t: &W) -> Self::Value;
    /// A promise tag.
    fn tag(&self, t: &W) -> Self::Tag;
}

/// Building terms of one adapter's term type.
pub trait Encode {
    /// The term type.
    type Term: Clone;
    /// The engine's key.
    type Key;
    /// The engine's value.
    type Value;
    /// The atom `name`.
    fn atom(&self, name: Name) -> Self::Term;
    /// A tuple.
    fn tuple(&self, items: &[Self::Term]) -> Self::Term;
    /// A non-negative integer (a big one above `i64::MAX`).
    fn uint(&self, n: u64) -> Self::Term;
    /// A stored key as a term.
    fn key(&self, k: &Self::Key) -> Self::Term;
    /// A stored value as a term.
    fn value(&self, v: &Self::Value) -> Self::Term;
}

/// A lease or timeout length as every locker store reads it: an integer
/// (negative is 0; one beyond `u64` is "forever"), a float (NaN and
/// negative are 0), or `infinity`; `None` for anything else (`badarg`).
pub fn millis<W: WireTerm>(t: &W) -> Option<u64> {
    if let Some(i) = t.integer() {
        return Some(match i {
            Integer::Negative => 0,
            Integer::Unsigned(u) => u,
            Integer::Huge => FOREVER_MS,
        });
    }
    if let Some(f) = t.float() {
        return Some(if f.is_nan() || f <= 0.0 {
            0
        } else {
            f.min(u64::MAX as f64 / 2.0) as u64
        });
    }
    t.is_atom(Name::Infinity).then_some(FOREVER_MS)
}

/// The fencing token a coordinator's tag carries: `{'$locker_token', Ref,
/// Token}` with a non-negative integer token that fits `u64`; 0 (none) for
/// any other tag (the original's coordinators use plain refs).
pub fn tag_token<W: WireTerm>(tag: &W) -> u64 {
    tag.with_tuple(|items| match items {
        [marker, _, token] if marker.is_atom(Name::LockerToken) => match token.integer() {
            Some(Integer::Unsigned(u)) => u,
            _ => 0,
        },
        _ => 0,
    })
    .unwrap_or(0)
}

/// A request the store answers (the first element of its tuple).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// `{get_write_lock, Key, Expected, Tag}`
    GetWriteLock,
    /// `{release_write_lock, Tag}`
    ReleaseWriteLock,
    /// `{write, Tag, Key, Value, LeaseMs}`
    Write,
    /// `{update, Tag, Key, Value}`
    Update,
    /// `{extend_lease, Tag, Key, Value, LeaseMs}`
    ExtendLease,
    /// `{release, Key, Value, Tag}`
    Release,
    /// `{wait_for, Key, TimeoutMs}`
    WaitFor,
    /// `{wait_for_release, Key, TimeoutMs}`
    WaitForRelease,
    /// `{cond_write, Tag, Key, Value, LeaseMs}` (one-round `lock`)
    CondWrite,
    /// `{cond_update, Tag, Key, Value, NewValue}` (one-round `update`)
    CondUpdate,
    /// `{cond_extend, Tag, Key, Value, LeaseMs}` (one-round `extend_lease`)
    CondExtend,
    /// `{cond_release, Tag, Key, Value}` (one-round `release`)
    CondRelease,
    /// `{undo, Tag, Key}` (undo of a failed one-round attempt)
    Undo,
}

impl Op {
    /// Every request.
    pub const ALL: [Op; 13] = [
        Op::GetWriteLock,
        Op::ReleaseWriteLock,
        Op::Write,
        Op::Update,
        Op::ExtendLease,
        Op::Release,
        Op::WaitFor,
        Op::WaitForRelease,
        Op::CondWrite,
        Op::CondUpdate,
        Op::CondExtend,
        Op::CondRelease,
        Op::Undo,
    ];

    /// The request's atom.
    pub const fn name(self) -> Name {
        Name::Op(self)
    }

    /// The request's atom's text.
    pub const fn as_str(self) -> &'static str {
        match self {
            Op::GetWriteLock => "get_write_lock",
            Op::ReleaseWriteLock => "release_write_lock",
            Op::Write => "write",
            Op::Update => "update",
            Op::ExtendLease => "extend_lease",
            Op::Release => "release",
            Op::WaitFor => "wait_for",
            Op::WaitForRelease => "wait_for_release",
            Op::CondWrite => "cond_write",
            Op::CondUpdate => "cond_update",
            Op::CondExtend => "cond_extend",
            Op::CondRelease => "cond_release",
            Op::Undo => "undo",
        }
    }

    /// How many arguments follow the atom.
    pub const fn arity(self) -> usize {
        match self {
            Op::ReleaseWriteLock => 1,
            Op::WaitFor | Op::WaitForRelease | Op::Undo => 2,
            Op::GetWriteLock | Op::Update | Op::Release | Op::CondRelease => 3,
            Op::Write | Op::ExtendLease | Op::CondWrite | Op::CondUpdate | Op::CondExtend => 4,
        }
    }

    /// Whether the request registers a waiter (the adapter chooses its id).
    pub const fn waits(self) -> bool {
        matches!(self, Op::WaitFor | Op::WaitForRelease)
    }

    /// The request a tuple `{Op, ...}` names, if any.
    pub fn of_tuple<W: WireTerm>(t: &W) -> Option<Op> {
        t.with_tuple(|items| items.first().and_then(Op::of))
            .flatten()
    }

    /// The request named by the atom `t`.
    pub fn of<W: WireTerm>(t: &W) -> Option<Op> {
        Op::ALL.into_iter().find(|op| t.is_atom(op.name()))
    }
}

/// What phase one expects under the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expected<V> {
    /// The key must hold this value.
    Value(V),
    /// The key must hold this value (the atom `not_found`) or be absent.
    ValueOrAbsent(V),
}

/// A decoded request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request<K, V, T> {
    /// Phase one.
    GetWriteLock {
        /// The key.
        key: K,
        /// What the key must hold.
        expected: Expected<V>,
        /// The caller's tag.
        tag: T,
        /// The tag's fencing token (0: none).
        token: u64,
    },
    /// Abort: drop the tag's promise.
    ReleaseWriteLock {
        /// The caller's tag.
        tag: T,
    },
    /// Phase two of `lock`.
    Write {
        /// The caller's tag.
        tag: T,
        /// The key.
        key: K,
        /// The value.
        value: V,
        /// Lease length.
        lease_ms: u64,
        /// The tag's fencing token (0: none).
        token: u64,
    },
    /// Phase two of `update`.
    Update {
        /// The caller's tag.
        tag: T,
        /// The key.
        key: K,
        /// The new value.
        value: V,
    },
    /// Phase two of `extend_lease`.
    ExtendLease {
        /// The caller's tag.
        tag: T,
        /// The key.
        key: K,
        /// The value.
        value: V,
        /// New lease length from now.
        lease_ms: u64,
        /// The tag's fencing token (0: none).
        token: u64,
    },
    /// Phase two of `release`.
    Release {
        /// The key.
        key: K,
        /// The value it must hold.
        value: V,
        /// The caller's tag.
        tag: T,
        /// The tag's fencing token (0: none).
        token: u64,
    },
    /// One-round `lock`: store the lease if the key is free here.
    CondWrite {
        /// The caller's tag.
        tag: T,
        /// The key.
        key: K,
        /// The value.
        value: V,
        /// Lease length.
        lease_ms: u64,
        /// The tag's fencing token (0: none).
        token: u64,
    },
    /// One-round `update`: replace `value` by `new_value` if held here.
    CondUpdate {
        /// The caller's tag.
        tag: T,
        /// The key.
        key: K,
        /// The value the key must hold.
        value: V,
        /// The new value.
        new_value: V,
    },
    /// One-round `extend_lease`: new expiry if the key holds `value` here.
    CondExtend {
        /// The caller's tag.
        tag: T,
        /// The key.
        key: K,
        /// The value the key must hold.
        value: V,
        /// New lease length from now.
        lease_ms: u64,
    },
    /// One-round `release`: delete the key if it holds `value` here.
    CondRelease {
        /// The caller's tag.
        tag: T,
        /// The key.
        key: K,
        /// The value the key must hold.
        value: V,
    },
    /// Put back what the tag's one-round request changed on the key.
    Undo {
        /// The caller's tag.
        tag: T,
        /// The key.
        key: K,
    },
    /// Wait for the key to get a value.
    WaitFor {
        /// The key.
        key: K,
        /// How long at most.
        timeout_ms: u64,
        /// Who waits (chosen by the adapter: [`Request::set_waiter`]).
        waiter: WaiterId,
    },
    /// Wait for the key to be released or to expire.
    WaitForRelease {
        /// The key.
        key: K,
        /// How long at most.
        timeout_ms: u64,
        /// Who waits (chosen by the adapter: [`Request::set_waiter`]).
        waiter: WaiterId,
    },
}

/// Why a request could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Not a request of the protocol (unknown name or arity):
    /// `{error, {unknown_request, Request}}`.
    Unknown,
    /// A known request with a bad argument (a lease length that is not a
    /// number): `badarg`.
    BadArg,
}

impl<K, V, T> Request<K, V, T> {
    /// Decodes request `op` from its arguments (the tuple's elements after
    /// the atom, or a NIF's arguments, which come in the same order).
    pub fn decode<W, D>(op: Op, args: &[W], d: &D) -> Result<Self, DecodeError>
    where
        W: WireTerm,
        D: Decode<W, Key = K, Value = V, Tag = T>,
    {
        if args.len() != op.arity() {
            return Err(DecodeError::Unknown);
        }
        let ms = |t: &W| millis(t).ok_or(DecodeError::BadArg);
        Ok(match (op, args) {
            (Op::GetWriteLock, [k, exp, tag]) => {
                let v = d.value(exp);
                Request::GetWriteLock {
                    expected: if exp.is_atom(Name::NotFound) {
                        Expected::ValueOrAbsent(v)
                    } else {
                        Expected::Value(v)
                    },
                    token: tag_token(tag),
                    key: d.key(k),
                    tag: d.tag(tag),
                }
            }
            (Op::ReleaseWriteLock, [tag]) => Request::ReleaseWriteLock { tag: d.tag(tag) },
            (Op::Write | Op::ExtendLease, [tag, k, v, lease]) => {
                let (lease_ms, token) = (ms(lease)?, tag_token(tag));
                let (tag, key, value) = (d.tag(tag), d.key(k), d.value(v));
                match op {
                    Op::Write => Request::Write {
                        tag,
                        key,
                        value,
                        lease_ms,
                        token,
                    },
                    _ => Request::ExtendLease {
                        tag,
                        key,
                        value,
                        lease_ms,
                        token,
                    },
                }
            }
            (Op::Update, [tag, k, v]) => Request::Update {
                tag: d.tag(tag),
                key: d.key(k),
                value: d.value(v),
            },
            (Op::Release, [k, v, tag]) => Request::Release {
                token: tag_token(tag),
                key: d.key(k),
                value: d.value(v),
                tag: d.tag(tag),
            },
            (Op::CondWrite, [tag, k, v, lease]) => Request::CondWrite {
                lease_ms: ms(lease)?,
                token: tag_token(tag),
                tag: d.tag(tag),
                key: d.key(k),
                value: d.value(v),
            },
            (Op::CondUpdate, [tag, k, v, new]) => Request::CondUpdate {
                tag: d.tag(tag),
                key: d.key(k),
                value: d.value(v),
                new_value: d.value(new),
            },
            (Op::CondExtend, [tag, k, v, lease]) => Request::CondExtend {
                lease_ms: ms(lease)?,
                tag: d.tag(tag),
                key: d.key(k),
                value: d.value(v),
            },
            (Op::CondRelease, [tag, k, v]) => Request::CondRelease {
                tag: d.tag(tag),
                key: d.key(k),
                value: d.value(v),
            },
            (Op::Undo, [tag, k]) => Request::Undo {
                tag: d.tag(tag),
                key: d.key(k),
            },
            (Op::WaitFor, [k, timeout]) => Request::WaitFor {
                timeout_ms: ms(timeout)?,
                key: d.key(k),
                waiter: 0,
            },
            (Op::WaitForRelease, [k, timeout]) => Request::WaitForRelease {
                timeout_ms: ms(timeout)?,
                key: d.key(k),
                waiter: 0,
            },
            _ => return Err(DecodeError::Unknown),
        })
    }

    /// Decodes a request tuple `{Op, Args...}`; `Ok(None)` if its first
    /// element names no request of the store (the adapter may serve it).
    pub fn decode_tuple<W, D>(t: &W, d: &D) -> Result<Option<Self>, DecodeError>
    where
        W: WireTerm,
        D: Decode<W, Key = K, Value = V, Tag = T>,
    {
        t.with_tuple(|items| match items.split_first() {
            Some((op, args)) => match Op::of(op) {
                Some(op) => Request::decode(op, args, d).map(Some),
                None => Ok(None),
            },
            None => Ok(None),
        })
        .unwrap_or(Ok(None))
    }

    /// Sets who waits, for a `wait_for` or `wait_for_release` (other
    /// requests are unchanged).
    pub fn set_waiter(&mut self, id: WaiterId) {
        if let Request::WaitFor { waiter, .. } | Request::WaitForRelease { waiter, .. } = self {
            *waiter = id;
        }
    }
}

/// Why a request changed nothing: the `Reason` of `{error, Reason}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `already_locked`
    AlreadyLocked,
    /// `not_expected_value`
    NotExpectedValue,
    /// `{stale_token, Floor}`
    StaleToken(u64),
    /// `no_promise`
    NoPromise,
    /// `not_owner`
    NotOwner,
    /// `not_found`
    NotFound,
}

/// The answer to a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply<V> {
    /// `ok`
    Ok,
    /// `{ok, Value}`
    Value(V),
    /// `{ok, released}`
    Released,
    /// No answer yet: a waiter was registered (the NIF answers `pending`).
    Pending,
    /// `{error, Reason}`
    Refused(Refusal),
}

impl<V> Reply<V> {
    /// The reply as a term.
    pub fn encode<E: Encode<Value = V>>(&self, e: &E) -> E::Term {
        let refused = |reason: E::Term| e.tuple(&[e.atom(Name::Error), reason]);
        match self {
            Reply::Ok => e.atom(Name::Ok),
            Reply::Value(v) => e.tuple(&[e.atom(Name::Ok), e.value(v)]),
            Reply::Released => e.tuple(&[e.atom(Name::Ok), e.atom(Name::Released)]),
            Reply::Pending => e.atom(Name::Pending),
            Reply::Refused(r) => refused(match r {
                Refusal::AlreadyLocked => e.atom(Name::AlreadyLocked),
                Refusal::NotExpectedValue => e.atom(Name::NotExpectedValue),
                Refusal::NoPromise => e.atom(Name::NoPromise),
                Refusal::NotOwner => e.atom(Name::NotOwner),
                Refusal::NotFound => e.atom(Name::NotFound),
                Refusal::StaleToken(floor) => e.tuple(&[e.atom(Name::StaleToken), e.uint(*floor)]),
            }),
        }
    }
}

impl<V> From<WaitOutcome<V>> for Reply<V> {
    fn from(o: WaitOutcome<V>) -> Self {
        match o {
            WaitOutcome::Value(v) => Reply::Value(v),
            WaitOutcome::Released => Reply::Released,
            WaitOutcome::Pending => Reply::Pending,
        }
    }
}

impl<V> Wake<V> {
    /// The waiter to answer, and its answer.
    pub fn into_reply(self) -> (WaiterId, Reply<V>) {
        match self {
            Wake::Value(id, v) => (id, Reply::Value(v)),
            Wake::Released(id) => (id, Reply::Released),
        }
    }
}

/// What [`crate::Engine::handle`] did: the reply, and the waiters to
/// answer now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handled<V> {
    /// The reply to the request.
    pub reply: Reply<V>,
    /// Waiters woken by it.
    pub wakes: Vec<Wake<V>>,
}

impl<V> Handled<V> {
    pub(crate) fn reply(reply: Reply<V>) -> Self {
        Handled {
            reply,
            wakes: Vec::new(),
        }
    }
}

impl<K, V> LogEntry<K, V> {
    /// Decodes a log entry of a master's `trans_log` cast; `None` for an
    /// unknown shape (skipped and counted by replicas).
    pub fn decode<W, D>(t: &W, d: &D) -> Option<Self>
    where
        W: WireTerm,
        D: Decode<W, Key = K, Value = V>,
    {
        t.with_tuple(|items| {
            let (op, args) = items.split_first()?;
            let op = Op::of(op)?;
            Some(match (op, args) {
                (Op::Write, [k, v, lease]) => LogEntry::Write {
                    lease_ms: millis(lease)?,
                    key: d.key(k),
                    value: d.value(v),
                },
                (Op::ExtendLease, [k, v, lease]) => LogEntry::ExtendLease {
                    lease_ms: millis(lease)?,
                    key: d.key(k),
                    value: d.value(v),
                },
                (Op::Update, [k, v]) => LogEntry::Update {
                    key: d.key(k),
                    value: d.value(v),
                },
                (Op::Release, [k]) => LogEntry::Release { key: d.key(k) },
                _ => return None,
            })
        })
        .flatten()
    }

    /// The entry as a term: `{write, Key, Value, LeaseMs}`,
    /// `{extend_lease, Key, Value, LeaseMs}`, `{update, Key, Value}` or
    /// `{release, Key}`.
    pub fn encode<E: Encode<Key = K, Value = V>>(&self, e: &E) -> E::Term {
        let (op, key, value, lease_ms) = match self {
            LogEntry::Write {
                key,
                value,
                lease_ms,
            } => (Op::Write, key, Some(value), Some(*lease_ms)),
            LogEntry::ExtendLease {
                key,
                value,
                lease_ms,
            } => (Op::ExtendLease, key, Some(value), Some(*lease_ms)),
            LogEntry::Update { key, value } => (Op::Update, key, Some(value), None),
            LogEntry::Release { key } => (Op::Release, key, None, None),
        };
        let (op, key) = (e.atom(op.name()), e.key(key));
        match (value, lease_ms) {
            (Some(v), Some(ms)) => e.tuple(&[op, key, e.value(v), e.uint(ms)]),
            (Some(v), None) => e.tuple(&[op, key, e.value(v)]),
            _ => e.tuple(&[op, key]),
        }
    }
}
