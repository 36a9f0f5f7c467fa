//! Property test: random operation sequences applied to the `Engine` and
//! to a naive model of the protocol's rules must give the same answers,
//! the same stored values, promises and log, and a replica replaying the
//! log must read the same values as the master.

use std::collections::HashMap;

use locker_core::{
    ms, CommitError, Config, Engine, Expect, LockError, LogEntry, Micros, ReleaseError,
};
use proptest::prelude::*;

const KEYS: u8 = 4;
const TTL_MS: u64 = 2_000;
const T0: Micros = 1_000_000_777;

#[derive(Clone, Copy, Debug)]
enum Exp {
    Absent,
    Value(u8),
    ValueOrAbsent(u8),
}

#[derive(Clone, Debug)]
enum Op {
    Lock {
        key: u8,
        exp: Exp,
        tag: u8,
    },
    Abort {
        tag: u8,
    },
    Write {
        tag: u8,
        key: u8,
        value: u8,
        lease_ms: u64,
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
        lease_ms: u64,
    },
    Release {
        key: u8,
        value: u8,
        tag: u8,
    },
    Sweep,
    Advance(Micros),
}

/// What an operation answered, comparable between engine and model.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Unit,
    Lock(Result<(), LockError>),
    Commit(Result<(), CommitError>),
    Release(Result<(), ReleaseError>),
    Sweep { leases: usize, promises: usize },
}

/// The rules, written as plainly as possible.
#[derive(Default)]
struct Model {
    now: Micros,
    /// Stored leases, expired-but-unswept ones included: key -> (value, expires_at).
    leases: HashMap<u8, (u8, Micros)>,
    /// Every expiry ever scheduled and not yet swept (stale ones included).
    index: Vec<(Micros, u8)>,
    /// key -> (tag, deadline).
    promises: HashMap<u8, (u8, Micros)>,
    /// Entries logged by the current operation.
    log: Vec<LogEntry<u8, u8>>,
}

impl Model {
    fn valid(&self, key: u8) -> Option<u8> {
        self.leases
            .get(&key)
            .filter(|&&(_, exp)| self.now < exp)
            .map(|&(v, _)| v)
    }

    /// Some(true): `tag` holds a live promise on `key`; Some(false):
    /// another tag does; None: no live promise does.
    fn standing(&self, key: u8, tag: u8) -> Option<bool> {
        self.promises
            .get(&key)
            .filter(|&&(_, d)| d > self.now)
            .map(|&(t, _)| t == tag)
    }

    /// Phase two without its promise applies only where nothing conflicts.
    fn may_store(&self, key: u8, tag: u8, value: u8) -> bool {
        match self.standing(key, tag) {
            Some(mine) => mine,
            None => self.valid(key).is_none_or(|v| v == value),
        }
    }

    fn drop_tag(&mut self, tag: u8) {
        self.promises.retain(|_, &mut (t, _)| t != tag);
    }

    fn store(&mut self, key: u8, value: u8, lease_ms: u64) {
        let exp = self.now + ms(lease_ms);
        self.leases.insert(key, (value, exp));
        self.index.push((exp, key));
    }

    fn apply(&mut self, op: &Op) -> Answer {
        match *op {
            Op::Lock { key, exp, tag } => {
                if let Some(&(_, deadline)) = self.promises.get(&key) {
                    if deadline > self.now {
                        return Answer::Lock(Err(LockError::AlreadyLocked));
                    }
                    self.promises.remove(&key);
                }
                let ok = match (exp, self.valid(key)) {
                    (Exp::Absent | Exp::ValueOrAbsent(_), None) => true,
                    (Exp::Value(v) | Exp::ValueOrAbsent(v), Some(c)) => v == c,
                    (Exp::Absent, Some(_)) | (Exp::Value(_), None) => false,
                };
                if !ok {
                    return Answer::Lock(Err(LockError::NotExpectedValue));
                }
                self.promises.insert(key, (tag, self.now + ms(TTL_MS)));
                Answer::Lock(Ok(()))
            }
            Op::Abort { tag } => {
                self.drop_tag(tag);
                Answer::Unit
            }
            Op::Write {
                tag,
                key,
                value,
                lease_ms,
            } => {
                let ok = self.may_store(key, tag, value);
                self.drop_tag(tag);
                if !ok {
                    return Answer::Commit(Err(CommitError::NoPromise));
                }
                self.store(key, value, lease_ms);
                self.log.push(LogEntry::Write {
                    key,
                    value,
                    lease_ms,
                });
                Answer::Commit(Ok(()))
            }
            Op::Update { tag, key, value } => {
                let standing = self.standing(key, tag);
                self.drop_tag(tag);
                match standing {
                    Some(true) => {
                        if self.valid(key).is_some() {
                            self.leases.get_mut(&key).unwrap().0 = value;
                        }
                    }
                    None if self.valid(key) == Some(value) => {}
                    _ => return Answer::Commit(Err(CommitError::NoPromise)),
                }
                self.log.push(LogEntry::Update { key, value });
                Answer::Commit(Ok(()))
            }
            Op::Extend {
                tag,
                key,
                value,
                lease_ms,
            } => {
                let ok = self.may_store(key, tag, value);
                self.drop_tag(tag);
                if !ok {
                    return Answer::Commit(Err(CommitError::NoPromise));
                }
                self.store(key, value, lease_ms);
                self.log.push(LogEntry::ExtendLease {
                    key,
                    value,
                    lease_ms,
                });
                Answer::Commit(Ok(()))
            }
            Op::Release { key, value, tag } => {
                let blocked = self.standing(key, tag) == Some(false);
                self.drop_tag(tag);
                if blocked {
                    return Answer::Release(Err(ReleaseError::NoPromise));
                }
                Answer::Release(match self.valid(key) {
                    None => Err(ReleaseError::NotFound),
                    Some(v) if v != value => Err(ReleaseError::NotOwner),
                    Some(_) => {
                        self.leases.remove(&key);
                        self.log.push(LogEntry::Release { key });
                        Ok(())
                    }
                })
            }
            Op::Sweep => {
                let now = self.now;
                // The index works in whole milliseconds: an entry is handed
                // out once the last microsecond of its millisecond passed.
                let due = |at: Micros| (at / 1_000 + 1) * 1_000 - 1 <= now;
                let (popped, kept) = self.index.iter().partition(|&&(at, _)| due(at));
                self.index = kept;
                let mut leases = 0;
                for (_, key) in popped {
                    if matches!(self.leases.get(&key), Some(&(_, exp)) if exp <= now) {
                        self.leases.remove(&key);
                        leases += 1;
                    }
                }
                let before = self.promises.len();
                self.promises.retain(|_, &mut (_, d)| d > now);
                let promises = before - self.promises.len();
                Answer::Sweep { leases, promises }
            }
            Op::Advance(d) => {
                self.now += d;
                Answer::Unit
            }
        }
    }
}

type E = Engine<u8, u8, u8>;

fn apply(e: &mut E, now: &mut Micros, op: &Op) -> Answer {
    let t = *now;
    match *op {
        Op::Lock { key, exp, tag } => {
            let (a, b);
            let exp = match exp {
                Exp::Absent => Expect::Absent,
                Exp::Value(v) => {
                    a = v;
                    Expect::Value(&a)
                }
                Exp::ValueOrAbsent(v) => {
                    b = v;
                    Expect::ValueOrAbsent(&b)
                }
            };
            Answer::Lock(e.get_write_lock(key, exp, tag, t))
        }
        Op::Abort { tag } => {
            e.release_write_lock(&tag);
            Answer::Unit
        }
        Op::Write {
            tag,
            key,
            value,
            lease_ms,
        } => Answer::Commit(
            e.write(&tag, key, value, lease_ms, t)
                .map(|w| assert!(w.is_empty())),
        ),
        Op::Update { tag, key, value } => Answer::Commit(e.update(&tag, key, value, t)),
        Op::Extend {
            tag,
            key,
            value,
            lease_ms,
        } => Answer::Commit(
            e.extend_lease(&tag, key, value, lease_ms, 0, t)
                .map(|w| assert!(w.is_empty())),
        ),
        Op::Release { key, value, tag } => Answer::Release(
            e.release(&key, &value, &tag, t)
                .map(|w| assert!(w.is_empty())),
        ),
        Op::Sweep => {
            let r = e.sweep(t, 1_000);
            assert!(r.done && r.wakes.is_empty() && r.timed_out.is_empty());
            Answer::Sweep {
                leases: r.leases_expired,
                promises: r.promises_expired,
            }
        }
        Op::Advance(d) => {
            *now += d;
            Answer::Unit
        }
    }
}

fn exp() -> impl Strategy<Value = Exp> {
    prop_oneof![
        Just(Exp::Absent),
        (0..3u8).prop_map(Exp::Value),
        (0..3u8).prop_map(Exp::ValueOrAbsent),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let key = || 0..KEYS;
    let value = || 0..3u8;
    let tag = || 0..6u8;
    // Round lengths make expiries coincide with promise deadlines and steps.
    let lease = || prop_oneof![Just(0u64), Just(1), Just(500), Just(TTL_MS), 0..3_000u64];
    prop_oneof![
        4 => (key(), exp(), tag()).prop_map(|(key, exp, tag)| Op::Lock { key, exp, tag }),
        1 => tag().prop_map(|tag| Op::Abort { tag }),
        3 => (tag(), key(), value(), lease())
            .prop_map(|(tag, key, value, lease_ms)| Op::Write { tag, key, value, lease_ms }),
        2 => (tag(), key(), value()).prop_map(|(tag, key, value)| Op::Update { tag, key, value }),
        2 => (tag(), key(), value(), lease())
            .prop_map(|(tag, key, value, lease_ms)| Op::Extend { tag, key, value, lease_ms }),
        3 => (key(), value(), tag()).prop_map(|(key, value, tag)| Op::Release { key, value, tag }),
        2 => Just(Op::Sweep),
        3 => prop_oneof![
            Just(1u64),
            Just(ms(1)),
            Just(ms(500)),
            Just(ms(TTL_MS)),
            (0..3_000u64).prop_map(ms),
            0..3_000_000u64,
            0..2_000u64,
        ]
        .prop_map(Op::Advance),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn engine_matches_model(ops in prop::collection::vec(op(), 1..80)) {
        let config = Config {
            promise_ttl: ms(TTL_MS),
            log_enabled: true,
            ..Config::default()
        };
        let mut engine: E = Engine::new(config);
        let mut replica: E = Engine::new(Config::default());
        let mut model = Model { now: T0, ..Model::default() };
        let mut now = T0;

        for (i, op) in ops.iter().enumerate() {
            let got = apply(&mut engine, &mut now, op);
            let want = model.apply(op);
            prop_assert_eq!(&got, &want, "step {}: {:?}", i, op);
            let log = engine.take_log(usize::MAX);
            prop_assert_eq!(&log, &std::mem::take(&mut model.log), "step {}", i);
            for entry in log {
                replica.replay(entry, now);
            }
            for key in 0..KEYS {
                let value = engine.leases().get_valid(&key, now);
                prop_assert_eq!(value, model.valid(key), "step {} key {}", i, key);
                prop_assert_eq!(replica.leases().get_valid(&key, now), value, "replica, step {} key {}", i, key);
            }

            let mut promises = Vec::new();
            engine.for_each_promise(|k, t, d| promises.push((*k, *t, d)));
            promises.sort_unstable();
            let mut expected: Vec<_> = model.promises.iter().map(|(&k, &(t, d))| (k, t, d)).collect();
            expected.sort_unstable();
            prop_assert_eq!(promises, expected, "step {}", i);

            // The raw table, expired-but-unswept leases included.
            let mut table = HashMap::new();
            engine.leases().for_each(|&k, l| {
                table.insert(k, (l.value, l.expires_at));
            });
            prop_assert_eq!(&table, &model.leases, "step {}", i);
            prop_assert_eq!(engine.summary().expiry_entries, model.index.len(), "step {}", i);
        }

    }
}
