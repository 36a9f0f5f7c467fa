//! The store's clock: monotonic microseconds, the same base for every
//! process of the VM.

use locker_core::Micros;

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
