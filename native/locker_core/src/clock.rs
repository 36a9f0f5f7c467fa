//! The system clock for adapters: monotonic microseconds (one base for
//! every thread of the process).
//!
//! Every validity check reads the precise clock (CLOCK_MONOTONIC, through
//! the vDSO: about 19 ns here). The coarse clock would be four times
//! cheaper, but it stalls while the CPU that advances it is descheduled
//! (as a virtual CPU can be for tens of milliseconds), and a lease must
//! never be reported valid after its expiry.

use crate::Micros;

/// Monotonic time in microseconds (CLOCK_MONOTONIC).
#[inline]
pub fn now() -> Micros {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1_000
}

/// Whether monotonic instant `at` is still in the future.
#[inline]
pub fn is_before(at: Micros) -> bool {
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
    fn clock_is_monotonic_and_is_before_is_exact() {
        let mut last = now();
        for _ in 0..100_000 {
            let t = now();
            assert!(t >= last);
            assert!(
                !is_before(t),
                "an instant already reached is not in the future"
            );
            assert!(is_before(t + 1_000_000));
            last = t;
        }
    }
}
