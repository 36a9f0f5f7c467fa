//! Adversarial schedules against the phase-two rule of docs/protocol.md,
//! played on three real engines (W = 2) with explicit time. Each test is a
//! concrete interleaving the coordinators in `locker.erl` and lockerd's
//! client can produce (a coordinator paused right after its budget check,
//! lost messages on a partition, a rival's promise in phase one), and
//! asserts the outcome the protocol claims.
//!
//! Each attack broke mutual exclusion or fencing-token order on the engine
//! as of commit d903db8 (the `same_value` and `undo` cases), or is one the
//! rule stops from the start; every test asserts that it now holds. Two
//! more attacks of the same review are stopped above the engine and are
//! tested across real nodes in `tests/locker_adv_SUITE.erl`: a value that
//! is the atom `not_found` (the API refuses it) and a master replaying
//! another master's transaction log (masters drop logs).

use locker_core::{ms, Config, Engine, Expect, Micros};

type E = Engine<u8, u32, u32>;

const K: u8 = 0;
const W: usize = 2;
const SEC: Micros = 1_000_000;
const T0: Micros = 1_000 * SEC;
/// The value of the atom `not_found` (the wire's "absent" marker).
const NOT_FOUND: u32 = 0;

fn cluster() -> Vec<E> {
    (0..3).map(|_| E::new(Config::default())).collect()
}

fn sweep(ms_: &mut [E], now: Micros) {
    for e in ms_.iter_mut() {
        e.sweep(now, usize::MAX);
    }
}

/// Phase one of an acquisition (`lock`: expected `not_found`) on `on`.
fn vote(ms_: &mut [E], on: &[usize], tag: u32, token: u64, now: Micros) -> usize {
    on.iter()
        .filter(|&&m| {
            ms_[m]
                .get_write_lock_with_token(K, Expect::ValueOrAbsent(&NOT_FOUND), tag, token, now)
                .is_ok()
        })
        .count()
}

/// Phase two of `lock` on `on`: the masters that answered `ok`.
#[allow(clippy::too_many_arguments)]
fn write(
    ms_: &mut [E],
    on: &[usize],
    tag: u32,
    value: u32,
    lease_ms: u64,
    token: u64,
    now: Micros,
) -> Vec<usize> {
    on.iter()
        .copied()
        .filter(|&m| {
            ms_[m]
                .write_with_token(&tag, K, value, lease_ms, token, now)
                .is_ok()
        })
        .collect()
}

/// A whole `lock` by a coordinator that is not disturbed: phase one on
/// every master, phase two if W promised. `Some(commits)` on success.
fn lock(
    ms_: &mut [E],
    tag: u32,
    value: u32,
    lease_ms: u64,
    token: u64,
    now: Micros,
) -> Option<usize> {
    if vote(ms_, &[0, 1, 2], tag, token, now) < W {
        for e in ms_.iter_mut() {
            e.release_write_lock(&tag);
        }
        return None;
    }
    let c = write(ms_, &[0, 1, 2], tag, value, lease_ms, token, now).len();
    (c >= W).then_some(c)
}

fn holders(ms_: &[E], now: Micros) -> Vec<Option<u32>> {
    ms_.iter().map(|e| e.leases().get_valid(&K, now)).collect()
}

/// Two coordinators lock K with the same value V (a value such as
/// `node()`, a service name, or `Locker.acquire(key, value: ...)` shared
/// by two callers). B obtains W promises, is paused right after its
/// budget check (or its write is delayed) past the promise lifetime; A
/// then locks K with V. B's late write finds "the caller's value already"
/// on every master and is applied: both succeed, and B, which succeeded
/// second, reports the lower fencing token (B's lock_with_token returns
/// tB < tA while A still holds tA). docs/protocol.md's "on every master
/// in A's commit set, A's lease was stored at a moment when the key held
/// nothing live there" does not hold for that path.
#[test]
fn holds_same_value_late_write_does_not_succeed_second_with_a_lower_token() {
    let mut m = cluster();
    let (tag_b, tag_a, v) = (1, 2, 42);
    let t_b = T0;
    assert_eq!(vote(&mut m, &[0, 1, 2], tag_b, t_b, T0), 3);
    // B paused right after its budget check: its promises expire.
    let now = T0 + 11 * SEC;
    sweep(&mut m, now);
    let t_a = now;
    assert_eq!(lock(&mut m, tag_a, v, 60_000, t_a, now), Some(3));
    // B resumes and sends its write.
    let now = now + SEC;
    let b = write(&mut m, &[0, 1, 2], tag_b, v, 60_000, t_b, now);
    assert!(
        b.len() < W,
        "B's stale write committed on {b:?}: B succeeds after A with token {t_b} < {t_a}, \
         while A's lease is valid"
    );
}

/// The undo of a failed `lock` (release of the value on the masters that
/// stored it, with a fresh tag) deletes the lease of a legitimate holder
/// that has the same value, and a third acquisition with another value
/// then succeeds while that holder's lease is valid: a double grant
/// between two different values, caused by the undo (the original had
/// no undo).
///
/// 1. B (value V) gets promises on m0, m1, then is paused after its
///    budget check past the promise lifetime.
/// 2. X, a rival still in its phase one, holds a promise on m2.
/// 3. A (value V) locks: m0, m1 promise, m2 is already_locked; A's write
///    commits on m0, m1: A holds K (W = 2) for 60 s.
/// 4. B resumes; its write reaches only m0 (B is cut off from m1, m2):
///    m0 holds "the caller's value" and answers ok. One commit: B fails,
///    and undoes on m0 with `{release, K, V, NewRef}`: A's lease is gone
///    from m0.
/// 5. X gives up (release_write_lock on m2).
/// 6. C (value VC) locks: m0 and m2 are free: C succeeds while A's lease
///    runs for 58 more seconds.
#[test]
fn holds_undo_of_a_failed_same_value_lock_keeps_the_holder() {
    let mut m = cluster();
    let (tag_b, tag_x, tag_a, tag_c) = (1, 2, 3, 4);
    let (v, vc) = (42, 7);
    assert_eq!(vote(&mut m, &[0, 1], tag_b, T0, T0), 2);
    let now = T0 + 11 * SEC;
    sweep(&mut m, now);
    assert_eq!(vote(&mut m, &[2], tag_x, now, now), 1);
    let a_start = now + 1;
    assert_eq!(lock(&mut m, tag_a, v, 60_000, a_start, a_start), Some(2));
    let a_until = a_start + ms(60_000);
    // B resumes.
    let now = a_start + SEC;
    // m0 holds "the caller's value" and (as of d903db8) answers ok.
    let stored = write(&mut m, &[0], tag_b, v, 60_000, T0, now);
    for e in m.iter_mut() {
        e.release_write_lock(&tag_b);
    }
    for &s in &stored {
        // locker.erl's Undo: {release, Key, Value, make_ref()}.
        let _ = m[s].release(&K, &v, &99, now);
    }
    m[2].release_write_lock(&tag_x);
    let now = now + SEC;
    let c = lock(&mut m, tag_c, vc, 2_000, now, now);
    assert!(now < a_until);
    assert_eq!(
        c,
        None,
        "C took K at {now} while A holds it until {a_until}; masters: {:?}",
        holders(&m, now)
    );
}

/// The attack the rule does stop: a coordinator paused after its budget
/// check while a rival with another value acquires and releases the key
/// cannot write late (the rival's token raised the floor), and one that
/// finds the rival's lease cannot overwrite it.
#[test]
fn holds_late_write_after_a_rival_came_and_went() {
    let mut m = cluster();
    assert_eq!(vote(&mut m, &[0, 1], 1, T0, T0), 2);
    let now = T0 + 11 * SEC;
    sweep(&mut m, now);
    assert!(lock(&mut m, 2, 20, 1_000, now, now).is_some());
    for e in m.iter_mut() {
        e.get_write_lock(K, Expect::Value(&20), 3, now).unwrap();
        e.release(&K, &20, &3, now).unwrap();
    }
    let late = write(&mut m, &[0, 1, 2], 1, 10, 60_000, T0, now + SEC);
    assert!(late.is_empty(), "{late:?}");
    // And while the rival holds it.
    let mut m = cluster();
    assert_eq!(vote(&mut m, &[0, 1], 1, T0, T0), 2);
    let now = T0 + 11 * SEC;
    sweep(&mut m, now);
    assert!(lock(&mut m, 2, 20, 60_000, now, now).is_some());
    let late = write(&mut m, &[0, 1, 2], 1, 10, 60_000, T0, now + SEC);
    assert!(late.is_empty(), "{late:?}");
}
