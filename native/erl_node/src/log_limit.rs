//! A bound on warnings about bad input: at most [`PER_SECOND`] a second
//! are logged, the rest are counted and reported in one line when the
//! next second starts. A flood of bad requests then costs the node a
//! counter increment each, not a formatted log event each (the BEAM
//! server does the same).
//!
//! ```
//! # let peer = "x@h";
//! // Logged (a tracing warning) unless 20 went out this second already.
//! erl_node::warn_bad_input!(%peer, "undecodable request dropped");
//! ```

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

/// Warnings about bad input logged per second, at most.
pub const PER_SECOND: u32 = 20;

/// One bound, shared by everything that warns about bad input.
pub struct LogLimit {
    start: OnceLock<Instant>,
    second: AtomicU64,
    logged: AtomicU32,
    suppressed: AtomicU64,
}

/// The bound for warnings about bad input from peers.
pub static BAD_INPUT: LogLimit = LogLimit::new();

impl LogLimit {
    /// A fresh bound.
    pub const fn new() -> Self {
        LogLimit {
            start: OnceLock::new(),
            second: AtomicU64::new(0),
            logged: AtomicU32::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Whether a warning may be logged now; counts it as suppressed if
    /// not. The first call of a new second logs how many were suppressed
    /// in the previous ones.
    pub fn allow(&self) -> bool {
        self.roll();
        if self.logged.fetch_add(1, Ordering::Relaxed) < PER_SECOND {
            true
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    /// Reports the warnings suppressed in earlier seconds, if any, even
    /// when no new warning comes to trigger it. Servers call it from a
    /// periodic timer so that the count of a flood's last second is not
    /// held back until the next bad request.
    pub fn flush(&self) {
        self.roll();
    }

    /// Starts a new second if the clock moved on, logging what the
    /// previous seconds suppressed.
    fn roll(&self) {
        let now = self.start.get_or_init(Instant::now).elapsed().as_secs() + 1;
        let second = self.second.load(Ordering::Relaxed);
        if now != second
            && self
                .second
                .compare_exchange(second, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.logged.store(0, Ordering::Relaxed);
            let n = self.suppressed.swap(0, Ordering::Relaxed);
            if n > 0 {
                tracing::warn!(
                    suppressed = n,
                    "{n} more warnings about bad input suppressed"
                );
            }
        }
    }

    /// Warnings counted and not yet reported.
    pub fn suppressed(&self) -> u64 {
        self.suppressed.load(Ordering::Relaxed)
    }
}

impl Default for LogLimit {
    fn default() -> Self {
        Self::new()
    }
}

/// `tracing::warn!` about bad input, within [`BAD_INPUT`]'s bound.
#[macro_export]
macro_rules! warn_bad_input {
    ($($arg:tt)*) => {
        if $crate::log_limit::BAD_INPUT.allow() {
            $crate::__private::tracing::warn!($($arg)*);
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_per_second_then_counted() {
        let l = LogLimit::new();
        let allowed = (0..1000).filter(|_| l.allow()).count();
        // Within one second (or two if the test straddles a boundary).
        assert!(allowed >= PER_SECOND as usize && allowed <= 2 * PER_SECOND as usize);
        assert!(l.suppressed() >= 1000 - 2 * PER_SECOND as u64);
    }
}
