//! `core_requests`: arbitrary sequences of `locker_core::Engine` requests
//! over small key, value and tag domains, with time steps, checked against
//! a plain model of the rules after every step.
//!
//! Invariants (see fuzz/README.md):
//! - at most one live promise per key: the engine's live promises are
//!   exactly the model's, and phase one answers `AlreadyLocked` exactly
//!   when a live promise (or safe mode on an absent key) says so;
//! - `get_valid` never returns an expired lease, and returns exactly the
//!   model's valid value for every key;
//! - `sweep` never panics, reports `done` within a bounded number of
//!   calls, and then nothing due by `now` is left (leases past their
//!   millisecond, promises past their deadline, waiters past their
//!   timeout);
//! - `take_log` gives the logged changes oldest first, as the model logged
//!   them (with the configured limit dropping the oldest);
//! - the token floor never decreases, and a token above every token seen
//!   is never refused as stale;
//! - waiters are woken once, with the right key, kind and value;
//! - in replica mode, replaying the master's log on a second engine at the
//!   same instants gives the same valid lease table.

#![no_main]

use std::collections::{HashMap, VecDeque};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use locker_core::{
    ms, Config, Engine, Expect, LockError, LogEntry, Micros, ReleaseError, WaitKind, WaitOutcome,
    WaiterId, Wake,
};

const KEYS: u8 = 24;
const VALUES: u8 = 4;
const TAGS: u8 = 6;
const T0: Micros = 1_000_000_777;

type E = Engine<u8, u8, u8>;

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Exp {
    Absent,
    Value(u8),
    ValueOrAbsent(u8),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Entry {
    Write { key: u8, value: u8, lease_ms: u8 },
    Extend { key: u8, value: u8, lease_ms: u8 },
    Release { key: u8 },
    Update { key: u8, value: u8 },
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Op {
    /// Microseconds.
    Advance(u16),
    /// Whole milliseconds.
    AdvanceMs(u8),
    Lock {
        key: u8,
        exp: Exp,
        tag: u8,
        token: u8,
    },
    Abort {
        tag: u8,
    },
    Write {
        tag: u8,
        key: u8,
        value: u8,
        lease_ms: u8,
        token: u8,
    },
    Update {
        tag: u8,
        key: u8,
        value: u8,
    },
    Extend {
        tag: u8,
        key: u8,
        value: u8,
        lease_ms: u8,
    },
    Release {
        key: u8,
        value: u8,
        tag: u8,
    },
    Replay(Entry),
    WaitFor {
        key: u8,
        timeout_ms: u8,
    },
    WaitForRelease {
        key: u8,
        timeout_ms: u8,
    },
    Sweep {
        budget: u8,
    },
    TakeLog {
        max: u8,
    },
    SetPromiseTtl(u8),
    SetTokenFloor(u8),
    SetAbstain(u8),
    SetLog(bool),
    ResetVolatile,
    Clear,
    NextWakeup,
}

#[derive(Arbitrary, Debug)]
struct Input {
    replica: bool,
    log_enabled: bool,
    log_limit: u8,
    promise_ttl_ms: u8,
    ops: Vec<Op>,
}

fn k(x: u8) -> u8 {
    x % KEYS
}
fn v(x: u8) -> u8 {
    x % VALUES
}
fn t(x: u8) -> u8 {
    x % TAGS
}

/// The first instant the sweep acts on a lease expiring at `at` (the end
/// of its millisecond).
fn due_at(at: Micros) -> Micros {
    (at / 1_000 + 1) * 1_000 - 1
}

struct Model {
    now: Micros,
    /// key -> (value, expires_at); expired ones stay until replaced.
    leases: HashMap<u8, (u8, Micros)>,
    /// key -> (tag, deadline).
    promises: HashMap<u8, (u8, Micros)>,
    waiters: HashMap<WaiterId, (u8, WaitKind, Micros)>,
    next_waiter: WaiterId,
    log: VecDeque<LogEntry<u8, u8>>,
    log_enabled: bool,
    log_limit: usize,
    ttl: Micros,
    abstain_until: Micros,
    /// Highest token ever proposed or set as a floor.
    max_token: u64,
    floor: u64,
}

impl Model {
    fn valid(&self, key: u8) -> Option<u8> {
        self.leases
            .get(&key)
            .filter(|&&(_, exp)| self.now < exp)
            .map(|&(v, _)| v)
    }
    fn live_promise(&self, key: u8) -> bool {
        matches!(self.promises.get(&key), Some(&(_, d)) if d > self.now)
    }
    fn drop_tag(&mut self, tag: u8) {
        self.promises.retain(|_, &mut (t, _)| t != tag);
    }
    /// Some(true): `tag` holds a live promise on `key`; Some(false):
    /// another tag does; None: no live promise does.
    fn standing(&self, key: u8, tag: u8) -> Option<bool> {
        match self.promises.get(&key) {
            Some(&(t, d)) if d > self.now => Some(t == tag),
            _ => None,
        }
    }
    /// Checks a write's or an extension's answer against the rule "without
    /// a live promise, apply only where nothing conflicts"; true if it
    /// applied. The token floor is not modelled exactly: a refusal on an
    /// absent key for a token-carrying request only has to be plausible.
    #[allow(clippy::too_many_arguments)]
    fn check_commit(
        &self,
        op: &Op,
        key: u8,
        tag: u8,
        value: u8,
        token: u64,
        floor_before: u64,
        ok: bool,
    ) {
        let valid = self.valid(key);
        match self.standing(key, tag) {
            Some(true) => assert!(ok, "{op:?}: refused under a live promise"),
            Some(false) => assert!(!ok, "{op:?}: applied over another live promise"),
            None => match valid {
                Some(c) => assert_eq!(ok, c == value, "{op:?}: held by {c}"),
                None if self.now < self.abstain_until => {
                    assert!(!ok, "{op:?}: applied on an absent key while abstaining")
                }
                None if token == 0 => assert!(ok, "{op:?}: tokenless refused on a free key"),
                None if ok => assert!(
                    token > floor_before,
                    "{op:?}: applied at or below the floor {floor_before}"
                ),
                None => assert!(token <= self.max_token, "{op:?}: refused above every token"),
            },
        }
    }
    fn log(&mut self, e: LogEntry<u8, u8>) {
        if !self.log_enabled {
            return;
        }
        if self.log.len() >= self.log_limit && self.log.pop_front().is_none() {
            return; // limit 0: keep nothing
        }
        self.log.push_back(e);
    }
    fn store(&mut self, key: u8, value: u8, lease_ms: u8) {
        self.leases
            .insert(key, (value, self.now.saturating_add(ms(lease_ms as u64))));
    }
    /// Checks wakes against the registered waiters and forgets them.
    fn wakes(&mut self, wakes: &[Wake<u8>], key: Option<u8>, value: Option<u8>) {
        for w in wakes {
            let (id, kind) = match w {
                Wake::Value(id, got) => {
                    if let Some(v) = value {
                        assert_eq!(*got, v, "wait_for woken with another value");
                    }
                    (*id, WaitKind::Value)
                }
                Wake::Released(id) => (*id, WaitKind::Release),
            };
            let (wk, wkind, _) = self
                .waiters
                .remove(&id)
                .unwrap_or_else(|| panic!("waiter {id} woken twice or never registered"));
            assert_eq!(wkind, kind, "waiter {id} woken for the wrong kind");
            if let Some(key) = key {
                assert_eq!(wk, key, "waiter {id} woken for another key");
            }
        }
    }
    /// After a write or release on `key`, no waiter of `kind` is left there.
    fn none_left(&self, key: u8, kind: WaitKind) {
        assert!(
            !self
                .waiters
                .values()
                .any(|&(k2, kind2, _)| k2 == key && kind2 == kind),
            "a {kind:?} waiter on {key} was not woken"
        );
    }
}

fn replay_entry(e: Entry) -> LogEntry<u8, u8> {
    match e {
        Entry::Write {
            key,
            value,
            lease_ms,
        } => LogEntry::Write {
            key: k(key),
            value: v(value),
            lease_ms: lease_ms as u64,
        },
        Entry::Extend {
            key,
            value,
            lease_ms,
        } => LogEntry::ExtendLease {
            key: k(key),
            value: v(value),
            lease_ms: lease_ms as u64,
        },
        Entry::Release { key } => LogEntry::Release { key: k(key) },
        Entry::Update { key, value } => LogEntry::Update {
            key: k(key),
            value: v(value),
        },
    }
}

fn check_tables(e: &E, m: &Model) {
    let now = m.now;
    for key in 0..KEYS {
        let got = e.leases().get_valid(&key, now);
        assert_eq!(got, m.valid(key), "get_valid({key}) at {now}");
        if let Some(got) = got {
            let exp = e.leases().read(&key, |l| l.expires_at).unwrap();
            assert!(now < exp, "get_valid returned an expired lease");
            assert_eq!(Some(exp), m.leases.get(&key).map(|l| l.1));
            assert_eq!(Some(got), m.leases.get(&key).map(|l| l.0));
        }
    }
    let mut stored = 0;
    e.leases().for_each(|key, lease| {
        stored += 1;
        let (mv, mexp) = m.leases.get(key).expect("a lease the model never stored");
        assert_eq!(lease.expires_at, *mexp, "lease {key}: expiry");
        if lease.is_valid_at(now) {
            assert_eq!(lease.value, *mv, "lease {key}: value");
        }
    });
    assert_eq!(stored, e.leases().len());
    // At most one live promise per key, and exactly the model's ones.
    let mut live: Vec<(u8, u8)> = Vec::new();
    let mut all = 0;
    e.for_each_promise(|&key, &tag, deadline| {
        all += 1;
        if deadline > now {
            live.push((key, tag));
        }
    });
    live.sort_unstable();
    assert!(
        live.windows(2).all(|w| w[0].0 != w[1].0),
        "two live promises on one key"
    );
    let mut want: Vec<(u8, u8)> = m
        .promises
        .iter()
        .filter(|(_, &(_, d))| d > now)
        .map(|(&key, &(tag, _))| (key, tag))
        .collect();
    want.sort_unstable();
    assert_eq!(live, want, "live promises");
    let s = e.summary();
    assert_eq!(s.promises, all);
    assert_eq!(s.waiters, m.waiters.len(), "registered waiters");
    assert_eq!(s.log, m.log.len(), "log length");
    // A release waiter's key still has its lease (else it was woken).
    for (id, &(key, kind, _)) in &m.waiters {
        if kind == WaitKind::Release {
            assert!(
                e.leases().read(&key, |_| ()).is_some(),
                "release waiter {id} on {key}: the lease is gone but it was not woken"
            );
        }
    }
}

fn run(input: Input) {
    let log_limit = (input.log_limit % 8) as usize;
    let (log_enabled, log_limit) = if input.replica {
        (true, 1_000_000)
    } else {
        (input.log_enabled, log_limit)
    };
    let ttl = ms(input.promise_ttl_ms as u64);
    let config = Config {
        promise_ttl: ttl,
        log_enabled,
        log_limit,
    };
    let mut e: E = Engine::new(config.clone());
    let mut replica: E = Engine::new(Config {
        log_enabled: false,
        ..config
    });
    let mut m = Model {
        now: T0,
        leases: HashMap::new(),
        promises: HashMap::new(),
        waiters: HashMap::new(),
        next_waiter: 1,
        log: VecDeque::new(),
        log_enabled,
        log_limit,
        ttl,
        abstain_until: 0,
        max_token: 0,
        floor: 0,
    };
    let sweep_cap = input.ops.len() * 4 + 64;

    for op in input.ops.iter().copied() {
        let floor_before = e.token_floor();
        let now = m.now;
        match op {
            Op::Advance(d) => m.now += d as u64,
            Op::AdvanceMs(d) => m.now += ms(d as u64),
            Op::Lock {
                key,
                exp,
                tag,
                token,
            } => {
                let (key, tag, token) = (k(key), t(tag), token as u64);
                m.max_token = m.max_token.max(token);
                let valid = m.valid(key);
                let (ev, res) = match exp {
                    Exp::Absent => (
                        valid.is_none(),
                        e.get_write_lock_with_token(key, Expect::Absent, tag, token, now),
                    ),
                    Exp::Value(x) => {
                        let x = v(x);
                        (
                            valid == Some(x),
                            e.get_write_lock_with_token(key, Expect::Value(&x), tag, token, now),
                        )
                    }
                    Exp::ValueOrAbsent(x) => {
                        let x = v(x);
                        (
                            valid.is_none() || valid == Some(x),
                            e.get_write_lock_with_token(
                                key,
                                Expect::ValueOrAbsent(&x),
                                tag,
                                token,
                                now,
                            ),
                        )
                    }
                };
                if m.live_promise(key) || (valid.is_none() && now < m.abstain_until) {
                    assert_eq!(res, Err(LockError::AlreadyLocked), "{op:?}");
                } else if !ev {
                    assert_eq!(res, Err(LockError::NotExpectedValue), "{op:?}");
                } else {
                    match res {
                        Ok(()) => {
                            assert!(
                                token == 0 || valid.is_some() || token > floor_before,
                                "token {token} granted at or below the floor {floor_before}"
                            );
                            m.promises.insert(key, (tag, now.saturating_add(m.ttl)));
                        }
                        Err(LockError::StaleToken(f)) => {
                            assert!(token > 0 && valid.is_none(), "{op:?}: stale token");
                            assert!(token <= f && f >= floor_before, "{op:?}: floor {f}");
                            assert!(f <= m.max_token, "floor {f} above every token seen");
                            assert!(token <= m.max_token);
                        }
                        Err(other) => panic!("{op:?}: unexpected {other:?}"),
                    }
                }
            }
            Op::Abort { tag } => {
                let tag = t(tag);
                e.release_write_lock(&tag);
                m.drop_tag(tag);
            }
            Op::Write {
                tag,
                key,
                value,
                lease_ms,
                token,
            } => {
                let (tag, key, value, token) = (t(tag), k(key), v(value), token as u64);
                m.max_token = m.max_token.max(token);
                let r = e.write_with_token(&tag, key, value, lease_ms as u64, token, now);
                m.check_commit(&op, key, tag, value, token, floor_before, r.is_ok());
                m.drop_tag(tag);
                if let Ok(w) = r {
                    m.wakes(&w, Some(key), Some(value));
                    m.none_left(key, WaitKind::Value);
                    m.log(LogEntry::Write {
                        key,
                        value,
                        lease_ms: lease_ms as u64,
                    });
                    m.store(key, value, lease_ms);
                }
            }
            Op::Update { tag, key, value } => {
                let (tag, key, value) = (t(tag), k(key), v(value));
                let r = e.update(&tag, key, value, now);
                let standing = m.standing(key, tag);
                m.drop_tag(tag);
                let want = match standing {
                    Some(true) => true,
                    Some(false) => false,
                    None => m.valid(key) == Some(value),
                };
                assert_eq!(r.is_ok(), want, "{op:?}");
                if want {
                    if m.valid(key).is_some() {
                        m.leases.get_mut(&key).unwrap().0 = value;
                    }
                    m.log(LogEntry::Update { key, value });
                }
            }
            Op::Extend {
                tag,
                key,
                value,
                lease_ms,
            } => {
                let (tag, key, value) = (t(tag), k(key), v(value));
                let r = e.extend_lease(&tag, key, value, lease_ms as u64, 0, now);
                m.check_commit(&op, key, tag, value, 0, floor_before, r.is_ok());
                m.drop_tag(tag);
                if let Ok(w) = r {
                    m.wakes(&w, Some(key), Some(value));
                    m.none_left(key, WaitKind::Value);
                    m.log(LogEntry::ExtendLease {
                        key,
                        value,
                        lease_ms: lease_ms as u64,
                    });
                    m.store(key, value, lease_ms);
                }
            }
            Op::Release { key, value, tag } => {
                let (key, value, tag) = (k(key), v(value), t(tag));
                let r = e.release(&key, &value, &tag, now);
                let blocked = m.standing(key, tag) == Some(false);
                m.drop_tag(tag);
                match (m.valid(key), r) {
                    (_, Err(ReleaseError::NoPromise)) if blocked => {}
                    (None, Err(ReleaseError::NotFound)) if !blocked => {}
                    (Some(c), Err(ReleaseError::NotOwner)) if c != value && !blocked => {}
                    (Some(c), Ok(w)) if c == value && !blocked => {
                        m.wakes(&w, Some(key), None);
                        m.none_left(key, WaitKind::Release);
                        m.leases.remove(&key);
                        m.log(LogEntry::Release { key });
                    }
                    (model, r) => panic!("{op:?}: model {model:?}, engine {r:?}"),
                }
            }
            Op::Replay(entry) => {
                let entry = replay_entry(entry);
                let w = e.replay(entry.clone(), now);
                replica.replay(entry.clone(), now);
                match entry {
                    LogEntry::Write {
                        key,
                        value,
                        lease_ms,
                    }
                    | LogEntry::ExtendLease {
                        key,
                        value,
                        lease_ms,
                    } => {
                        m.wakes(&w, Some(key), Some(value));
                        m.none_left(key, WaitKind::Value);
                        m.store(key, value, lease_ms as u8);
                    }
                    LogEntry::Update { key, value } => {
                        assert!(w.is_empty());
                        if m.valid(key).is_some() {
                            m.leases.get_mut(&key).unwrap().0 = value;
                        }
                    }
                    LogEntry::Release { key } => {
                        m.wakes(&w, Some(key), None);
                        if m.leases.remove(&key).is_some() {
                            m.none_left(key, WaitKind::Release);
                        }
                    }
                }
            }
            Op::WaitFor { key, timeout_ms } => {
                let key = k(key);
                let id = m.next_waiter;
                m.next_waiter += 1;
                match (e.wait_for(key, id, timeout_ms as u64, now), m.valid(key)) {
                    (WaitOutcome::Value(got), Some(want)) => assert_eq!(got, want),
                    (WaitOutcome::Pending, None) => {
                        m.waiters
                            .insert(id, (key, WaitKind::Value, now + ms(timeout_ms as u64)));
                    }
                    (o, model) => panic!("{op:?}: engine {o:?}, model {model:?}"),
                }
            }
            Op::WaitForRelease { key, timeout_ms } => {
                let key = k(key);
                let id = m.next_waiter;
                m.next_waiter += 1;
                match (
                    e.wait_for_release(key, id, timeout_ms as u64, now),
                    m.valid(key),
                ) {
                    (WaitOutcome::Released, None) => {}
                    (WaitOutcome::Pending, Some(_)) => {
                        m.waiters
                            .insert(id, (key, WaitKind::Release, now + ms(timeout_ms as u64)));
                    }
                    (o, model) => panic!("{op:?}: engine {o:?}, model {model:?}"),
                }
            }
            Op::Sweep { budget } => {
                let budget = budget as usize % 9;
                let mut calls = 0;
                loop {
                    calls += 1;
                    assert!(calls <= sweep_cap, "sweep never reports done");
                    let r = e.sweep(now, budget);
                    m.wakes(&r.wakes, None, None);
                    for id in &r.timed_out {
                        let (_, _, deadline) = m
                            .waiters
                            .remove(id)
                            .unwrap_or_else(|| panic!("timed out waiter {id} unknown"));
                        assert!(deadline <= now, "waiter {id} timed out early");
                    }
                    if r.done {
                        break;
                    }
                }
                // Nothing due by now is left.
                e.leases().for_each(|key, lease| {
                    assert!(
                        due_at(lease.expires_at) > now,
                        "lease {key} due at {} left after a done sweep at {now}",
                        due_at(lease.expires_at)
                    );
                });
                e.for_each_promise(|key, tag, deadline| {
                    assert!(
                        deadline > now,
                        "promise {key}/{tag} due at {deadline} left after a done sweep at {now}"
                    );
                });
                assert!(
                    m.waiters.values().all(|&(_, _, d)| d > now),
                    "timed-out waiter left after a done sweep"
                );
                // Swept leases and promises leave the model too.
                m.leases.retain(|_, &mut (_, exp)| due_at(exp) > now);
                m.promises.retain(|_, &mut (_, d)| d > now);
            }
            Op::TakeLog { max } => {
                let got = e.take_log(max as usize);
                let n = (max as usize).min(m.log.len());
                let want: Vec<_> = m.log.drain(..n).collect();
                assert_eq!(got, want, "take_log({max})");
            }
            Op::SetPromiseTtl(x) => {
                m.ttl = ms(x as u64);
                e.set_promise_ttl(m.ttl);
            }
            Op::SetTokenFloor(f) => {
                m.max_token = m.max_token.max(f as u64);
                e.set_token_floor(f as u64);
                assert!(e.token_floor() >= f as u64);
            }
            Op::SetAbstain(x) => {
                m.abstain_until = now + ms(x as u64);
                e.set_abstain_until(m.abstain_until);
            }
            Op::SetLog(on) => {
                if !input.replica {
                    e.set_log_enabled(on);
                    m.log_enabled = on;
                    if !on {
                        m.log.clear();
                    }
                }
            }
            Op::ResetVolatile => {
                e.reset_volatile();
                m.promises.clear();
                m.waiters.clear();
            }
            Op::Clear => {
                e.clear();
                replica.clear();
                m.promises.clear();
                m.waiters.clear();
                m.leases.clear();
                m.log.clear();
            }
            Op::NextWakeup => {
                if let Some(at) = e.next_wakeup() {
                    // Either a waiter's deadline or a watched lease's due instant.
                    let ok = m.waiters.values().any(|&(key, kind, d)| {
                        d == at
                            || (kind == WaitKind::Release
                                && e.leases().read(&key, |l| due_at(l.expires_at)) == Some(at))
                    });
                    assert!(ok, "next_wakeup {at} matches nothing");
                } else {
                    assert!(m.waiters.is_empty(), "waiters but no next_wakeup");
                }
            }
        }
        // The token floor never goes down.
        let floor = e.token_floor();
        assert!(floor >= floor_before, "token floor went down");
        assert!(floor >= m.floor);
        m.floor = floor;
        if input.replica {
            let got = e.take_log(usize::MAX);
            let want: Vec<_> = m.log.drain(..).collect();
            assert_eq!(got, want, "log of {op:?}");
            for entry in got {
                replica.replay(entry, m.now);
            }
            for key in 0..KEYS {
                assert_eq!(
                    replica.leases().get_valid(&key, m.now),
                    e.leases().get_valid(&key, m.now),
                    "replica differs on {key} after {op:?}"
                );
            }
        }
        check_tables(&e, &m);
    }
}

fuzz_target!(|input: Input| run(input));
