//! The system clock for adapters: monotonic microseconds (one base for
//! every thread of the process).
//!
//! Reads only need to know whether a lease is still valid. Far from the
//! expiry instant the coarse clock (a few ns, tick granularity) answers;
//! near it the precise clock does. The coarse clock runs at most one tick
//! behind the precise one, so with a margin of two ticks the answer is
//! exact: a lease is never reported valid at or after its expiry.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::Micros;

/// How far from an expiry the coarse clock is trusted (set at load).
static COARSE_MARGIN: AtomicU64 = AtomicU64::new(u64::MAX / 4);

fn read(clock: libc::clockid_t) -> Micros {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer; both clocks exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1_000
}

/// Reads the coarse clock's resolution and sets the margin (two ticks
/// plus a millisecond). Without a usable coarse clock the margin stays
/// huge and every read uses the precise clock.
pub fn init() {
    let mut res = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer.
    if unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut res) } == 0 {
        let tick = (res.tv_sec as u64) * 1_000_000 + (res.tv_nsec as u64) / 1_000;
        if tick > 0 && tick <= 100_000 {
            COARSE_MARGIN.store(2 * tick + 1_000, Ordering::Relaxed);
        }
    }
}

/// Monotonic time in microseconds (CLOCK_MONOTONIC).
#[inline]
pub fn now() -> Micros {
    read(libc::CLOCK_MONOTONIC)
}

/// Whether monotonic instant `at` is still in the future.
#[inline]
pub fn is_before(at: Micros) -> bool {
    let coarse = read(libc::CLOCK_MONOTONIC_COARSE);
    if coarse.saturating_add(COARSE_MARGIN.load(Ordering::Relaxed)) < at {
        return true;
    }
    now() < at
}

/// Wall-clock milliseconds since the Unix epoch at which monotonic instant
/// `at` falls (for human-facing debug output only).
pub fn to_system_ms(at: Micros) -> i64 {
    let now_mono = now() as i64;
    let now_sys = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0);
    (now_sys + (at as i64 - now_mono)) / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coarse_check_agrees_with_precise_clock() {
        init();
        let margin = COARSE_MARGIN.load(Ordering::Relaxed);
        assert!(margin < 1_000_000, "coarse clock available on Linux");
        for _ in 0..100_000 {
            let before = now();
            assert!(
                !is_before(before),
                "an instant already passed is never in the future"
            );
            assert!(is_before(now() + 2 * margin));
        }
    }
}
