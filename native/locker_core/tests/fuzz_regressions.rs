//! Regression tests for what the `core_requests` fuzz target (fuzz/) found,
//! one test per input kept under `fuzz/regressions/core_requests/`, written
//! out as the operation sequence the input decodes to.

use locker_core::{ms, Config, Engine, Expect, Micros};

const T0: Micros = 1_000_000_777;

/// `fuzz/regressions/core_requests/promise-ttl-lowered-sweep`:
/// `Lock{key 1, Absent, tag 1}` with a 100 ms promise TTL,
/// `SetPromiseTtl(10)`, `Lock{key 2, Absent, tag 2}`, `AdvanceMs(20)`,
/// `Sweep{budget 5}`. The sweep reported done but left the second promise,
/// 10 ms past its deadline: the expiry queue assumed deadlines arrive in
/// order (constant TTL) and stopped at the older promise's later deadline.
#[test]
fn sweep_expires_a_promise_granted_after_the_ttl_was_lowered() {
    let mut e: Engine<u8, u8, u8> = Engine::new(Config {
        promise_ttl: ms(100),
        ..Config::default()
    });
    e.get_write_lock(1, Expect::Absent, 1, T0).unwrap();
    e.set_promise_ttl(ms(10));
    e.get_write_lock(2, Expect::Absent, 2, T0).unwrap();
    let now = T0 + ms(20);
    let r = e.sweep(now, 5);
    assert!(r.done);
    assert_eq!(r.promises_expired, 1);
    let mut left = Vec::new();
    e.for_each_promise(|&k, &t, d| left.push((k, t, d)));
    assert_eq!(left, vec![(1, 1, T0 + ms(100))]);
    // The first one still expires on time afterwards.
    let r = e.sweep(T0 + ms(100), 5);
    assert_eq!(r.promises_expired, 1);
    assert_eq!(e.summary().promises, 0);
}

/// The same with the TTL raised again in between, several promises per
/// deadline, and sweeps with a budget of one: every promise goes exactly
/// when its own deadline passes.
#[test]
fn promises_expire_in_deadline_order_whatever_the_ttl_changes() {
    let mut e: Engine<u8, u8, u8> = Engine::new(Config::default());
    let ttls = [50u64, 5, 30, 5, 80, 1];
    for (i, ttl) in ttls.iter().enumerate() {
        e.set_promise_ttl(ms(*ttl));
        let i = i as u8;
        e.get_write_lock(i, Expect::Absent, i, T0).unwrap();
        e.get_write_lock(i + 100, Expect::Absent, i + 100, T0)
            .unwrap();
    }
    for step in 0..=80u64 {
        let now = T0 + ms(step);
        loop {
            if e.sweep(now, 1).done {
                break;
            }
        }
        let mut left = 0;
        e.for_each_promise(|_, _, d| {
            assert!(d > now, "promise due at {d} left at {now}");
            left += 1;
        });
        let want = ttls.iter().filter(|&&t| ms(t) > ms(step)).count() * 2;
        assert_eq!(left, want, "at +{step} ms");
    }
}

/// `fuzz/regressions/core_requests/tokenless-write-after-own-promise-expired`:
/// a tag promised with a token, let its promise expire, and then wrote
/// without a token on a key holding the same value. Without a live
/// promise only the token a request carries counts: the tokenless write
/// applies (as the original's would) instead of borrowing the expired
/// promise's token and being refused as another acquisition's.
#[test]
fn tokenless_write_does_not_borrow_an_expired_promises_token() {
    let mut e: Engine<u8, u8, u8> = Engine::new(Config {
        promise_ttl: ms(10),
        ..Config::default()
    });
    e.get_write_lock(1, Expect::Absent, 1, T0).unwrap();
    e.write(&1, 1, 7, 1_000, T0).unwrap();
    e.get_write_lock_with_token(1, Expect::Value(&7), 2, 99, T0)
        .unwrap();
    let later = T0 + ms(20);
    assert!(e.write_with_token(&2, 1, 7, 1_000, 0, later).is_ok());
}
