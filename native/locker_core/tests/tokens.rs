//! Fencing tokens: the per-node rule (a token-carrying promise on an absent
//! key needs a token above the node's floor) and the cluster property it
//! buys with quorum intersection (every successful acquisition of a key
//! carries a token above all earlier ones).

use locker_core::{ms, CommitError, Config, Engine, Expect, LockError};
use proptest::prelude::*;

type E = Engine<u8, u8, u32>;

fn engine() -> E {
    Engine::new(Config::default())
}

#[test]
fn absent_key_needs_token_above_floor() {
    let mut e = engine();
    e.set_token_floor(100);
    assert_eq!(
        e.get_write_lock_with_token(1, Expect::Absent, 1, 100, 0),
        Err(LockError::StaleToken(100))
    );
    assert_eq!(
        e.get_write_lock_with_token(1, Expect::Absent, 1, 101, 0),
        Ok(())
    );
    e.write_with_token(&1, 1, 7, 1000, 0, 0).unwrap();
    assert_eq!(
        e.leases().read(&1, |l| l.token),
        Some(101),
        "token taken from the promise"
    );
    // Releasing raises the floor to the lease's token.
    e.release(&1, &7, &2, 1).unwrap();
    assert_eq!(e.token_floor(), 101);
    assert_eq!(
        e.get_write_lock_with_token(1, Expect::Absent, 3, 101, 2),
        Err(LockError::StaleToken(101))
    );
}

#[test]
fn floor_rises_when_promises_and_leases_go() {
    let mut e = engine();
    // Aborted promise.
    e.get_write_lock_with_token(1, Expect::Absent, 1, 10, 0)
        .unwrap();
    e.release_write_lock(&1);
    assert_eq!(e.token_floor(), 10);
    // Expired promise (lazily, at the next phase one).
    e.get_write_lock_with_token(1, Expect::Absent, 2, 20, 0)
        .unwrap();
    let later = ms(10_001);
    assert_eq!(
        e.get_write_lock_with_token(1, Expect::Absent, 3, 15, later),
        Err(LockError::StaleToken(20))
    );
    // Expired lease, before and after the sweep.
    e.get_write_lock_with_token(2, Expect::Absent, 4, 30, later)
        .unwrap();
    e.write(&4, 2, 9, 1, later).unwrap();
    let after = later + ms(2);
    assert_eq!(
        e.get_write_lock_with_token(2, Expect::Absent, 5, 30, after),
        Err(LockError::StaleToken(30))
    );
    e.sweep(after, 100);
    assert_eq!(e.token_floor(), 30);
    // An extension keeps the token; an overwrite raises the floor.
    e.get_write_lock_with_token(3, Expect::Absent, 6, 40, after)
        .unwrap();
    e.write(&6, 3, 1, 1000, after).unwrap();
    e.extend_lease(&7, 3, 1, 5000, 0, after).unwrap();
    assert_eq!(e.leases().read(&3, |l| l.token), Some(40));
    e.get_write_lock(3, Expect::Value(&1), 8, after).unwrap();
    e.write(&8, 3, 2, 1000, after).unwrap();
    assert_eq!(e.token_floor(), 40);
}

#[test]
fn tokenless_requests_behave_as_the_original() {
    let mut e = engine();
    e.set_token_floor(u64::MAX - 1);
    assert_eq!(e.get_write_lock(1, Expect::Absent, 1, 0), Ok(()));
    e.write(&1, 1, 1, 1000, 0).unwrap();
    assert_eq!(e.leases().read(&1, |l| l.token), Some(0));
}

#[test]
fn restarted_master_abstains_on_unknown_keys() {
    let mut e = engine();
    e.set_abstain_until(ms(5_000));
    assert_eq!(
        e.get_write_lock(1, Expect::Absent, 1, ms(100)),
        Err(LockError::AlreadyLocked)
    );
    // Nor does it store an unknown key through a phase-two request that
    // holds no promise here (a stale write or a catch-up): either could
    // complete a quorum with a lease this node lost.
    assert_eq!(
        e.write(&2, 1, 7, 10_000, ms(200)),
        Err(CommitError::NoPromise)
    );
    assert_eq!(
        e.extend_lease(&2, 1, 7, 10_000, 0, ms(200)),
        Err(CommitError::NoPromise)
    );
    assert_eq!(
        e.get_write_lock(2, Expect::Absent, 4, ms(5_000)),
        Ok(()),
        "abstention ends"
    );
    // After the window a lagging key is learned through extend_lease and
    // voted on normally.
    e.extend_lease(&5, 1, 7, 10_000, 0, ms(5_000)).unwrap();
    assert_eq!(e.get_write_lock(1, Expect::Value(&7), 3, ms(5_100)), Ok(()));
}

#[derive(Debug, Clone)]
enum Step {
    /// Acquire key 0 on a random subset of masters with a token proposal.
    Acquire { reach: [bool; 3], proposal: u64 },
    /// The holder releases on a random subset.
    Release { reach: [bool; 3] },
    /// Time passes (leases may expire).
    Advance(u64),
    /// A master restarts empty, with its floor at the "wall clock".
    Restart(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (any::<[bool; 3]>(), 0u64..50)
            .prop_map(|(reach, proposal)| Step::Acquire { reach, proposal }),
        any::<[bool; 3]>().prop_map(|reach| Step::Release { reach }),
        (0u64..3000).prop_map(Step::Advance),
        (0usize..3).prop_map(Step::Restart),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Three masters, W = 2, one key; a coordinator proposes
    /// max(its clock, learned floor + 1) and retries once on a stale reply,
    /// as locker.erl does. Every acquisition that reaches a quorum gets a
    /// token above every earlier successful one, whatever the partitions,
    /// expiries and restarts (a restart sets the floor to the wall clock,
    /// which is above every token issued so far).
    #[test]
    fn tokens_strictly_increase(steps in proptest::collection::vec(step(), 1..60)) {
        let mut nodes: Vec<E> = (0..3).map(|_| engine()).collect();
        let mut now = 0u64;
        let mut wall = 1_000u64; // tokens follow this clock
        let mut tag = 0u32;
        let mut issued: Vec<u64> = Vec::new();
        let mut holder: Option<u8> = None;
        let mut next_value = 1u8;
        for s in steps {
            match s {
                Step::Acquire { reach, proposal } => {
                    let mut token = wall + proposal;
                    for _attempt in 0..2 {
                        tag += 1;
                        let mut oks = Vec::new();
                        let mut floor = 0;
                        for (i, n) in nodes.iter_mut().enumerate() {
                            if !reach[i] { continue; }
                            match n.get_write_lock_with_token(0, Expect::Absent, tag, token, now) {
                                Ok(()) => oks.push(i),
                                Err(LockError::StaleToken(f)) => floor = floor.max(f),
                                Err(_) => {}
                            }
                        }
                        if oks.len() >= 2 {
                            let v = next_value;
                            next_value = next_value.wrapping_add(1);
                            let mut commits = 0;
                            for (i, n) in nodes.iter_mut().enumerate() {
                                if reach[i] && n.write(&tag, 0, v, 1_000, now).is_ok() {
                                    commits += 1;
                                }
                            }
                            // Success needs W commits (locker.erl's rule).
                            prop_assert!(commits >= 2, "promised on {:?}, committed on {}", oks, commits);
                            if let Some(last) = issued.last() {
                                prop_assert!(token > *last, "token {} after {}", token, last);
                            }
                            issued.push(token);
                            holder = Some(v);
                            wall = wall.max(token);
                            break;
                        }
                        for (i, n) in nodes.iter_mut().enumerate() {
                            if reach[i] { n.release_write_lock(&tag); }
                        }
                        if floor == 0 { break; }
                        token = floor + 1;
                    }
                }
                Step::Release { reach } => {
                    if let Some(v) = holder.take() {
                        tag += 1;
                        for (i, n) in nodes.iter_mut().enumerate() {
                            if reach[i] { let _ = n.release(&0, &v, &tag, now); }
                        }
                    }
                }
                Step::Advance(d) => {
                    now += ms(d);
                    wall += d;
                    for n in nodes.iter_mut() { n.sweep(now, 1000); }
                }
                Step::Restart(i) => {
                    wall += 1;
                    nodes[i] = engine();
                    nodes[i].set_token_floor(wall);
                }
            }
        }
    }
}
