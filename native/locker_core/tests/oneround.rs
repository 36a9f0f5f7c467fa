//! One-round requests (`cond_write`, `cond_update`, `cond_extend`,
//! `cond_release`, `undo`) on one engine: when each applies, what it
//! logs, how it interleaves with two-phase requests on the same key, and
//! what an undo puts back (docs/protocol.md, "One-round operations").

use locker_core::{ms, Config, Engine, Expect, LockError, LogEntry, Micros, ReleaseError};

type E = Engine<u8, u32, u32>;

const K: u8 = 7;
const T0: Micros = 1_000_000_000;

fn engine() -> E {
    let mut e = E::new(Config {
        log_enabled: true,
        ..Config::default()
    });
    e.set_token_floor(10);
    e
}

fn lease_of(e: &E, now: Micros) -> Option<(u32, Micros, u64)> {
    e.leases()
        .read(&K, |l| (l.value, l.expires_at, l.token))
        .filter(|_| e.leases().get_valid(&K, now).is_some())
}

#[test]
fn cond_write_applies_only_where_phase_one_and_two_would() {
    let mut e = engine();
    // Free: stored with the tag's token, logged as a write.
    assert!(e.cond_write(&1, K, 100, 1000, 50, T0).is_ok());
    assert_eq!(lease_of(&e, T0), Some((100, T0 + ms(1000), 50)));
    assert_eq!(
        e.take_log(10),
        vec![LogEntry::Write {
            key: K,
            value: 100,
            lease_ms: 1000
        }]
    );
    // A live lease: refused whatever the value (same value, other token
    // included), nothing logged.
    assert_eq!(
        e.cond_write(&2, K, 100, 1000, 60, T0 + 1),
        Err(LockError::NotExpectedValue)
    );
    assert_eq!(
        e.cond_write(&2, K, 200, 1000, 60, T0 + 1),
        Err(LockError::NotExpectedValue)
    );
    assert!(e.take_log(10).is_empty());
    // Once it expired: a token above the expired lease's is needed.
    let later = T0 + ms(1001);
    assert_eq!(
        e.cond_write(&3, K, 300, 1000, 40, later),
        Err(LockError::StaleToken(50))
    );
    assert!(e.cond_write(&3, K, 300, 1000, 70, later).is_ok());
    // Below the floor.
    let mut f = engine();
    assert_eq!(
        f.cond_write(&1, K, 1, 10, 5, T0),
        Err(LockError::StaleToken(10))
    );
    // Untagged (token 0): no floor check, as an unpromised phase two.
    assert!(f.cond_write(&1, K, 1, 10, 0, T0).is_ok());
}

#[test]
fn cond_write_and_two_phase_exclude_each_other() {
    let mut e = engine();
    // A two-phase acquisition holds a promise: a one-round write is
    // refused until the promise is used, dropped or expired.
    e.get_write_lock_with_token(K, Expect::Absent, 1, 20, T0)
        .unwrap();
    assert_eq!(
        e.cond_write(&2, K, 200, 1000, 30, T0),
        Err(LockError::AlreadyLocked)
    );
    assert!(e.write_with_token(&1, K, 100, 1000, 20, T0).is_ok());
    assert_eq!(
        e.cond_write(&2, K, 200, 1000, 30, T0),
        Err(LockError::NotExpectedValue)
    );
    // A one-round lease: phase one refuses it, a phase two without a
    // promise cannot overwrite it (another token), even with its value.
    let mut e = engine();
    e.cond_write(&1, K, 100, 1000, 20, T0).unwrap();
    assert_eq!(
        e.get_write_lock_with_token(K, Expect::Absent, 2, 30, T0),
        Err(LockError::NotExpectedValue)
    );
    assert!(e.write_with_token(&2, K, 100, 1000, 30, T0).is_err());
    assert!(e.extend_lease(&2, K, 100, 5000, 30, T0).is_err());
    assert_eq!(lease_of(&e, T0), Some((100, T0 + ms(1000), 20)));
    // An expired promise does not block (and raises the floor).
    let mut e = engine();
    e.get_write_lock_with_token(K, Expect::Absent, 1, 20, T0)
        .unwrap();
    let late = T0 + e.config().promise_ttl;
    assert_eq!(
        e.cond_write(&2, K, 200, 1000, 15, late),
        Err(LockError::StaleToken(20))
    );
    assert!(e.cond_write(&2, K, 200, 1000, 25, late).is_ok());
    // Safe mode refuses unknown keys.
    let mut e = engine();
    e.set_abstain_until(T0 + 5);
    assert_eq!(
        e.cond_write(&1, K, 1, 10, 20, T0),
        Err(LockError::AlreadyLocked)
    );
    assert!(e.cond_write(&1, K, 1, 10, 20, T0 + 5).is_ok());
}

#[test]
fn undo_of_a_write_is_a_token_release() {
    let mut e = engine();
    e.cond_write(&1, K, 100, 1000, 20, T0).unwrap();
    // Another attempt's undo (same value, its own token) leaves it.
    assert_eq!(
        e.release_with_token(&K, &100, &2, 30, T0),
        Err(ReleaseError::NotOwner)
    );
    assert!(e.release_with_token(&K, &100, &1, 20, T0).is_ok());
    assert_eq!(lease_of(&e, T0), None);
    assert!(e.token_floor() >= 20);
}

#[test]
fn update_extend_release_need_the_value_and_no_other_promise() {
    let mut e = engine();
    e.cond_write(&1, K, 100, 1000, 20, T0).unwrap();
    e.take_log(10);
    assert_eq!(
        e.cond_update(&2, K, &999, 5, T0),
        Err(LockError::NotExpectedValue)
    );
    assert_eq!(
        e.cond_extend(&2, K, 999, 5, T0),
        Err(LockError::NotExpectedValue)
    );
    assert_eq!(
        e.cond_release(&2, K, &999, T0),
        Err(LockError::NotExpectedValue)
    );
    // The holder's own two-phase request holds a promise: refused.
    e.get_write_lock(K, Expect::Value(&100), 9, T0).unwrap();
    assert_eq!(
        e.cond_update(&2, K, &100, 5, T0),
        Err(LockError::AlreadyLocked)
    );
    assert_eq!(
        e.cond_extend(&2, K, 100, 5, T0),
        Err(LockError::AlreadyLocked)
    );
    assert_eq!(
        e.cond_release(&2, K, &100, T0),
        Err(LockError::AlreadyLocked)
    );
    assert!(e.take_log(10).is_empty());
    e.release_write_lock(&9);
    // Applied: logged as the two-phase requests log.
    assert!(e.cond_update(&2, K, &100, 101, T0).is_ok());
    assert_eq!(lease_of(&e, T0), Some((101, T0 + ms(1000), 20)));
    assert!(e.cond_extend(&3, K, 101, 5000, T0 + 10).is_ok());
    assert_eq!(lease_of(&e, T0), Some((101, T0 + 10 + ms(5000), 20)));
    assert!(e.cond_release(&4, K, &101, T0 + 20).is_ok());
    assert_eq!(lease_of(&e, T0 + 20), None);
    assert_eq!(
        e.take_log(10),
        vec![
            LogEntry::Update { key: K, value: 101 },
            LogEntry::ExtendLease {
                key: K,
                value: 101,
                lease_ms: 5000
            },
            LogEntry::Release { key: K },
        ]
    );
    // An extension never stores a lease again where it is gone.
    assert_eq!(
        e.cond_extend(&5, K, 101, 5000, T0 + 30),
        Err(LockError::NotExpectedValue)
    );
    assert_eq!(lease_of(&e, T0 + 30), None);
}

#[test]
fn undo_puts_back_what_its_tag_changed() {
    let mut e = engine();
    e.cond_write(&1, K, 100, 1000, 20, T0).unwrap();
    let held = lease_of(&e, T0);
    e.take_log(10);
    // update, undone.
    e.cond_update(&2, K, &100, 101, T0).unwrap();
    e.undo(&2, &K, T0 + 1);
    assert_eq!(lease_of(&e, T0 + 1), held);
    // extend, undone: the old expiry.
    e.cond_extend(&3, K, 100, 60_000, T0 + 2).unwrap();
    e.undo(&3, &K, T0 + 3);
    assert_eq!(lease_of(&e, T0 + 3), held);
    // release, undone: the same lease (value, expiry, token).
    e.cond_release(&4, K, &100, T0 + 4).unwrap();
    e.undo(&4, &K, T0 + 5);
    assert_eq!(lease_of(&e, T0 + 5), held);
    let log = e.take_log(10);
    assert_eq!(log.len(), 6, "{log:?}");
    assert_eq!(
        log[5],
        LogEntry::Write {
            key: K,
            value: 100,
            lease_ms: 1000
        }
    );
    // A second undo, or another tag's, does nothing.
    e.cond_update(&6, K, &100, 101, T0 + 6).unwrap();
    e.undo(&5, &K, T0 + 7);
    assert_eq!(lease_of(&e, T0 + 7).map(|l| l.0), Some(101));
    e.undo(&6, &K, T0 + 7);
    e.undo(&6, &K, T0 + 7);
    assert_eq!(lease_of(&e, T0 + 7), held);
    assert_eq!(e.summary().undo_records, 0);
}

#[test]
fn undo_never_displaces_a_later_change() {
    // After a release, a rival stores its lease: the undo does nothing.
    let mut e = engine();
    e.cond_write(&1, K, 100, 1000, 20, T0).unwrap();
    e.cond_release(&2, K, &100, T0).unwrap();
    e.cond_write(&3, K, 100, 1000, 30, T0 + 1).unwrap();
    e.undo(&2, &K, T0 + 2);
    assert_eq!(lease_of(&e, T0 + 2), Some((100, T0 + 1 + ms(1000), 30)));
    // A rival's live promise blocks it; once the promise is dropped
    // unused, the lease comes back (the rival stored nothing here).
    let mut e = engine();
    e.cond_write(&1, K, 100, 1000, 20, T0).unwrap();
    e.cond_release(&2, K, &100, T0).unwrap();
    e.get_write_lock_with_token(K, Expect::Absent, 3, 30, T0 + 1)
        .unwrap();
    e.undo(&2, &K, T0 + 2);
    assert_eq!(lease_of(&e, T0 + 2), None);
    e.release_write_lock(&3);
    e.undo(&2, &K, T0 + 3);
    assert_eq!(lease_of(&e, T0 + 3), Some((100, T0 + ms(1000), 20)));
    // ... and the rival's phase two without its promise is refused there.
    assert!(e.write_with_token(&3, K, 300, 1000, 30, T0 + 4).is_err());
    // A two-phase update in between drops the record.
    let mut e = engine();
    e.cond_write(&1, K, 100, 1000, 20, T0).unwrap();
    e.cond_update(&2, K, &100, 101, T0).unwrap();
    e.get_write_lock(K, Expect::Value(&101), 9, T0).unwrap();
    e.update(&9, K, 102, T0).unwrap();
    e.undo(&2, &K, T0 + 1);
    assert_eq!(lease_of(&e, T0 + 1).map(|l| l.0), Some(102));
    // Past the promise lifetime (or swept), nothing.
    let mut e = engine();
    e.cond_write(&1, K, 100, 60_000, 20, T0).unwrap();
    e.cond_update(&2, K, &100, 101, T0).unwrap();
    let ttl = e.config().promise_ttl;
    e.undo(&2, &K, T0 + ttl);
    assert_eq!(lease_of(&e, T0 + ttl).map(|l| l.0), Some(101));
    e.cond_update(&3, K, &101, 102, T0 + ttl).unwrap();
    assert_eq!(e.summary().undo_records, 1);
    e.sweep(T0 + 2 * ttl, usize::MAX);
    assert_eq!(e.summary().undo_records, 0);
    e.undo(&3, &K, T0 + 2 * ttl - 1);
    assert_eq!(lease_of(&e, T0 + 2 * ttl).map(|l| l.0), Some(102));
    // A restarted server forgets its records.
    e.cond_update(&4, K, &102, 103, T0 + 2 * ttl).unwrap();
    e.reset_volatile();
    e.undo(&4, &K, T0 + 2 * ttl);
    assert_eq!(lease_of(&e, T0 + 2 * ttl).map(|l| l.0), Some(103));
}

#[test]
fn undo_of_a_release_whose_lease_expired_meanwhile_stores_nothing() {
    let mut e = engine();
    e.cond_write(&1, K, 100, 10, 20, T0).unwrap();
    e.cond_release(&2, K, &100, T0).unwrap();
    e.take_log(10);
    e.undo(&2, &K, T0 + ms(10));
    assert_eq!(lease_of(&e, T0 + ms(10)), None);
    assert!(e.take_log(10).is_empty());
}

mod property {
    //! Random interleavings of one-round and two-phase requests on one
    //! key of one engine: every one-round request that applies found the
    //! key as its rule says, and an undo changes the key only right after
    //! its own tag's request, putting back what that request found.

    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        CondWrite(u32, u32, u64, u64),
        CondUpdate(u32, u32, u32),
        CondExtend(u32, u32, u64),
        CondRelease(u32, u32),
        Undo(u32),
        Vote(u32, Option<u32>, u64),
        Write(u32, u32, u64, u64),
        Abort(u32),
        TokenRelease(u32, u32, u64),
        Advance(u64),
        Sweep,
        Restart,
    }

    fn op() -> impl Strategy<Value = Op> {
        let tag = 0..4u32;
        let value = 0..3u32;
        let token = 0..40u64;
        prop_oneof![
            (tag.clone(), value.clone(), 1..50u64, token.clone())
                .prop_map(|(t, v, l, k)| Op::CondWrite(t, v, l, k)),
            (tag.clone(), value.clone(), value.clone())
                .prop_map(|(t, v, n)| Op::CondUpdate(t, v, n)),
            (tag.clone(), value.clone(), 1..50u64).prop_map(|(t, v, l)| Op::CondExtend(t, v, l)),
            (tag.clone(), value.clone()).prop_map(|(t, v)| Op::CondRelease(t, v)),
            tag.clone().prop_map(Op::Undo),
            (
                tag.clone(),
                proptest::option::of(value.clone()),
                token.clone()
            )
                .prop_map(|(t, v, k)| Op::Vote(t, v, k)),
            (tag.clone(), value.clone(), 1..50u64, token.clone())
                .prop_map(|(t, v, l, k)| Op::Write(t, v, l, k)),
            tag.clone().prop_map(Op::Abort),
            (tag, value, token).prop_map(|(t, v, k)| Op::TokenRelease(t, v, k)),
            (0..30u64).prop_map(Op::Advance),
            Just(Op::Sweep),
            Just(Op::Restart),
        ]
    }

    type Snapshot = Option<(u32, Micros, u64)>;

    fn other_live_promise(e: &E, tag: u32, now: Micros) -> bool {
        let mut found = false;
        e.for_each_promise(|k, t, d| found |= *k == K && *t != tag && d > now);
        found
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]
        #[test]
        fn one_round_rules_hold_among_two_phase_requests(ops in prop::collection::vec(op(), 1..60)) {
            let mut e = E::new(Config { promise_ttl: ms(20), log_enabled: true, ..Config::default() });
            let mut now = T0;
            // The last request that changed the key: (tag, what it found)
            // for the one-round requests that leave an undo record.
            let mut last: Option<(u32, Snapshot)> = None;
            for op in ops {
                let before: Snapshot = lease_of(&e, now);
                let raw = e.leases().read(&K, |l| (l.value, l.expires_at, l.token));
                match op {
                    Op::CondWrite(t, v, l, k) => {
                        let blocked = other_live_promise(&e, t, now);
                        if e.cond_write(&t, K, v, l, k, now).is_ok() {
                            prop_assert!(before.is_none() && !blocked, "{before:?} {blocked}");
                            last = None;
                        }
                    }
                    Op::CondUpdate(t, v, n) => {
                        let blocked = other_live_promise(&e, t, now);
                        if e.cond_update(&t, K, &v, n, now).is_ok() {
                            prop_assert!(before.map(|b| b.0) == Some(v) && !blocked);
                            last = Some((t, before));
                        }
                    }
                    Op::CondExtend(t, v, l) => {
                        let blocked = other_live_promise(&e, t, now);
                        if e.cond_extend(&t, K, v, l, now).is_ok() {
                            prop_assert!(before.map(|b| b.0) == Some(v) && !blocked);
                            last = Some((t, before));
                        }
                    }
                    Op::CondRelease(t, v) => {
                        let blocked = other_live_promise(&e, t, now);
                        if e.cond_release(&t, K, &v, now).is_ok() {
                            prop_assert!(before.map(|b| b.0) == Some(v) && !blocked);
                            last = Some((t, before));
                        }
                    }
                    Op::Undo(t) => {
                        e.undo(&t, &K, now);
                        let after = e.leases().read(&K, |l| (l.value, l.expires_at, l.token));
                        if after != raw {
                            // Only right after its own request, back to
                            // what that request found (or nothing, if
                            // that has expired).
                            match last {
                                Some((lt, found)) if lt == t => {
                                    let want = found.filter(|f| f.1 > now);
                                    prop_assert_eq!(lease_of(&e, now), want);
                                }
                                _ => prop_assert!(false, "undo by {t} changed {raw:?} to {after:?} (last {last:?})"),
                            }
                            last = None;
                        }
                    }
                    Op::Vote(t, v, k) => {
                        let exp = match &v { Some(v) => Expect::Value(v), None => Expect::Absent };
                        let _ = e.get_write_lock_with_token(K, exp, t, k, now);
                    }
                    Op::Write(t, v, l, k) => {
                        if e.write_with_token(&t, K, v, l, k, now).is_ok() {
                            last = None;
                        }
                    }
                    Op::Abort(t) => e.release_write_lock(&t),
                    Op::TokenRelease(t, v, k) => {
                        if e.release_with_token(&K, &v, &t, k, now).is_ok() {
                            last = None;
                        }
                    }
                    Op::Advance(d) => now += ms(d),
                    Op::Sweep => {
                        e.sweep(now, usize::MAX);
                    }
                    Op::Restart => {
                        e.reset_volatile();
                        last = None;
                    }
                }
            }
        }
    }
}
