//! Regression guard for the hot paths, in allocations rather than time (a
//! count cannot flake): in steady state a full lock cycle (promise, write,
//! read, extend, update, release) and a read make no allocation of their
//! own in the core, and sweeping expired leases allocates only for what it
//! returns. Counted per thread, so other tests running meanwhile do not
//! disturb it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use locker_core::{ms, Config, Engine, Expect, Micros};

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        System.realloc(p, l, n)
    }
}

#[global_allocator]
static A: Counting = Counting;

fn allocs() -> u64 {
    ALLOCS.with(|c| c.get())
}

const T0: Micros = 7_000_000_000;
const KEYS: u64 = 10_000;

/// One lock cycle on `key`, as the server runs it: phase one and write,
/// a dirty read, then extend, update and release, each after its own
/// phase one on the value.
fn cycle(e: &mut Engine<u64, u64, u64>, key: u64, tag: u64, now: Micros) {
    e.get_write_lock(key, Expect::Absent, tag, now).unwrap();
    assert!(e.write(&tag, key, 1, 60_000, now).unwrap().is_empty());
    assert_eq!(e.leases().get_valid(&key, now), Some(1));
    e.get_write_lock(key, Expect::Value(&1), tag, now).unwrap();
    assert!(e
        .extend_lease(&tag, key, 1, 60_000, 0, now)
        .unwrap()
        .is_empty());
    e.get_write_lock(key, Expect::Value(&1), tag, now).unwrap();
    e.update(&tag, key, 2, now).unwrap();
    e.get_write_lock(key, Expect::Value(&2), tag, now).unwrap();
    assert!(e.release(&key, &2, &tag, now).unwrap().is_empty());
}

#[test]
fn steady_state_lock_cycles_and_reads_do_not_allocate_per_call() {
    let mut e: Engine<u64, u64, u64> = Engine::new(Config::default());
    // Warm up: 10k leases held, every key cycled once, time advancing
    // through the same milliseconds the measured run uses.
    for k in 0..KEYS {
        e.get_write_lock(k, Expect::Absent, k, T0).unwrap();
        e.write(&k, k, 0, 3_600_000, T0).unwrap();
    }
    let cycled = |k: u64| KEYS + k % 100;
    for i in 0..10_000u64 {
        cycle(&mut e, cycled(i), i, T0 + i);
    }
    let before = allocs();
    for i in 0..10_000u64 {
        cycle(&mut e, cycled(i), i, T0 + i);
        assert_eq!(e.leases().get_valid(&(i % KEYS), T0 + i), Some(0));
    }
    let n = allocs() - before;
    // Amortized growth of the expiry buckets may allocate now and then
    // (11 times here); one allocation per cycle would be 10,000.
    assert!(
        n < 100,
        "{n} allocations in 10,000 steady-state lock cycles and reads"
    );
}

#[test]
fn sweeping_allocates_only_for_its_report() {
    let mut e: Engine<u64, u64, u64> = Engine::new(Config::default());
    for k in 0..KEYS {
        e.get_write_lock(k, Expect::Absent, k, T0).unwrap();
        e.write(&k, k, 0, 1 + k % 1000, T0).unwrap();
    }
    let before = allocs();
    let mut now = T0;
    let mut swept = 0;
    while e.summary().leases > 0 {
        now += ms(1);
        let r = e.sweep(now, 1000);
        swept += r.leases_expired;
    }
    let n = allocs() - before;
    assert_eq!(swept, KEYS as usize);
    // Each sweep call may build its (empty) report vectors; expiring a
    // lease must not cost an allocation of its own.
    assert!(
        n <= 3 * 1001,
        "{n} allocations to sweep {KEYS} leases over 1000 sweeps"
    );
}
