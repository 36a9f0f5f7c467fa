//! The system clock for adapters: monotonic microseconds (one base for
//! every thread of the process).
//!
//! Every validity check reads the precise clock (CLOCK_MONOTONIC, through
//! the vDSO: about 19 ns here). The coarse clock would be four times
//! cheaper, but it stalls while the CPU that advances it is descheduled
//! (as a virtual CPU can be for tens of milliseconds), and a lease must
//! never be reported valid after its expiry.
//!
//! [`is_before_fast`] (for `dirty_read`) answers from the CPU's time stamp
//! counter alone when that proves the instant is still ahead, which
//! costs about half of `clock_gettime`; see [`fast`].

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

/// Whether monotonic instant `at` is still in the future: the same
/// answer as [`is_before`], from the time stamp counter when it proves
/// `at` is ahead (see [`fast`]), else from CLOCK_MONOTONIC.
#[inline]
pub fn is_before_fast(at: Micros) -> bool {
    fast::ahead(at) || is_before(at)
}

/// Enables [`is_before_fast`]'s shortcut when this machine allows it (see
/// [`fast`]); idempotent, cheap after the first call.
pub fn fast_init() {
    fast::init();
}

/// The time stamp counter shortcut of [`is_before_fast`].
///
/// Used only where the kernel itself derives CLOCK_MONOTONIC from the
/// TSC (current clocksource `tsc`, which it picks only for a TSC that is
/// invariant and synchronized across CPUs) and the CPU says `constant_tsc`
/// and `nonstop_tsc`; x86-64 only. At [`fast_init`] it records a pair
/// (CLOCK_MONOTONIC, TSC) read back to back; at least 200 ms later the
/// first slow check measures the TSC's rate against CLOCK_MONOTONIC and
/// lowers it by 0.2 % (NTP slews CLOCK_MONOTONIC by at most 0.05 %).
/// Then `at` is ahead when fewer TSC cycles have passed since the pair
/// than `at - 50 µs` is from it at the lowered rate, i.e. when even the
/// fastest CLOCK_MONOTONIC consistent with the measured rate has not
/// reached `at`. Anything else (a TSC below the recorded one, an instant
/// before it, no calibration yet) falls back to CLOCK_MONOTONIC, so an
/// instant reached is never reported ahead.
pub mod fast {
    use super::Micros;

    #[cfg(target_arch = "x86_64")]
    mod imp {
        use super::Micros;
        use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

        const OFF: u8 = 0;
        const CALIBRATING: u8 = 1;
        const PUBLISHING: u8 = 2;
        const READY: u8 = 3;
        const DISABLED: u8 = 4;
        /// Calibration needs at least this much CLOCK_MONOTONIC time.
        const WINDOW_US: u64 = 200_000;
        /// Slack for the pair not being read at one instant.
        const SLACK_US: u64 = 50;

        static STATE: AtomicU8 = AtomicU8::new(OFF);
        static MONO0: AtomicU64 = AtomicU64::new(0);
        static TSC0: AtomicU64 = AtomicU64::new(0);
        /// TSC cycles per µs, lowered, as a 32.32 fixed point number.
        static RATE: AtomicU64 = AtomicU64::new(0);

        #[inline]
        fn rdtsc() -> u64 {
            // SAFETY: RDTSC exists on every x86-64 CPU.
            unsafe { core::arch::x86_64::_rdtsc() }
        }

        /// CLOCK_MONOTONIC and a TSC read no earlier than it, no more than
        /// 10,000 cycles apart (retried if the thread was interrupted).
        fn pair() -> Option<(Micros, u64)> {
            for _ in 0..100 {
                let a = rdtsc();
                let m = super::super::now();
                let b = rdtsc();
                if b >= a && b - a < 10_000 {
                    return Some((m, b));
                }
            }
            None
        }

        fn eligible() -> bool {
            let source = std::fs::read_to_string(
                "/sys/devices/system/clocksource/clocksource0/current_clocksource",
            )
            .unwrap_or_default();
            let flags = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
            let has = |f: &str| flags.split_whitespace().any(|w| w == f);
            source.trim() == "tsc" && has("constant_tsc") && has("nonstop_tsc")
        }

        pub fn init() {
            if STATE
                .compare_exchange(OFF, PUBLISHING, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                return;
            }
            match eligible().then(pair).flatten() {
                Some((m, t)) => {
                    MONO0.store(m, Ordering::Relaxed);
                    TSC0.store(t, Ordering::Relaxed);
                    STATE.store(CALIBRATING, Ordering::Release);
                }
                None => STATE.store(DISABLED, Ordering::Release),
            }
        }

        #[inline]
        pub fn ahead(at: Micros) -> bool {
            if STATE.load(Ordering::Acquire) != READY {
                calibrate();
                return false;
            }
            let mono0 = MONO0.load(Ordering::Relaxed);
            let tsc0 = TSC0.load(Ordering::Relaxed);
            let Some(span) = at.checked_sub(mono0 + SLACK_US) else {
                return false;
            };
            let cycles = ((u128::from(span) * u128::from(RATE.load(Ordering::Relaxed))) >> 32)
                .min(u128::from(u64::MAX)) as u64;
            let now = rdtsc();
            now >= tsc0 && now - tsc0 < cycles
        }

        /// Measures the rate once the window has passed (on a slow check).
        #[cold]
        fn calibrate() {
            if STATE.load(Ordering::Acquire) != CALIBRATING {
                return;
            }
            let mono0 = MONO0.load(Ordering::Relaxed);
            if super::super::now() < mono0 + WINDOW_US {
                return;
            }
            if STATE
                .compare_exchange(CALIBRATING, PUBLISHING, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                return;
            }
            let tsc0 = TSC0.load(Ordering::Relaxed);
            let rate = pair().and_then(|(m, t)| {
                // Cycles counted low (the TSC of the second pair is read
                // after its clock, so `t - tsc0` may only be short by the
                // pair's spread), microseconds counted high.
                let cycles = t.checked_sub(tsc0)?.checked_sub(10_000)?;
                let us = m.checked_sub(mono0)? + 2;
                let per_us = (u128::from(cycles) << 32) / u128::from(us);
                // Lowered by 0.2 %.
                let lowered = per_us - per_us / 500;
                u64::try_from(lowered).ok().filter(|&r| r > 0)
            });
            match rate {
                Some(r) => {
                    RATE.store(r, Ordering::Relaxed);
                    STATE.store(READY, Ordering::Release);
                }
                None => STATE.store(DISABLED, Ordering::Release),
            }
        }

        pub fn active() -> bool {
            STATE.load(Ordering::Acquire) == READY
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    mod imp {
        use super::Micros;
        pub fn init() {}
        #[inline]
        pub fn ahead(_at: Micros) -> bool {
            false
        }
        pub fn active() -> bool {
            false
        }
    }

    /// Records the first (CLOCK_MONOTONIC, TSC) pair if this machine is
    /// eligible.
    pub fn init() {
        imp::init()
    }

    /// Whether the TSC alone proves that `at` is still ahead; `false`
    /// means "unknown" (ask CLOCK_MONOTONIC).
    #[inline]
    pub fn ahead(at: Micros) -> bool {
        imp::ahead(at)
    }

    /// Whether the shortcut is calibrated and in use.
    pub fn active() -> bool {
        imp::active()
    }
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

    #[test]
    fn is_before_fast_never_reports_a_reached_instant_ahead() {
        fast_init();
        let start = now();
        // Before calibration and after it (the window is 200 ms).
        while now() < start + 600_000 {
            for _ in 0..10_000 {
                let t = now();
                assert!(!is_before_fast(t), "an instant already reached");
                assert!(!is_before_fast(t.saturating_sub(1)));
                assert!(!is_before_fast(t.saturating_sub(10_000)));
                assert!(!is_before_fast(t.saturating_sub(100_000)));
                assert!(is_before_fast(t + 10_000_000));
            }
        }
        // Far instants are answered by the shortcut where it is enabled;
        // on a machine without it, by CLOCK_MONOTONIC (same answers).
        let eligible = fast::active();
        eprintln!("time stamp counter shortcut active: {eligible}");
        assert_eq!(fast::ahead(now() + 10_000_000), eligible);
        assert!(!fast::ahead(now()));
    }
}
