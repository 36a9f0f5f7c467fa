//! Counting votes and timing the phases of the coordinator algorithm:
//! the rules every coordinator (the Erlang one in `locker.erl`, the Rust
//! client in `lockerd`) follows.

/// How long a master keeps an unused write promise, in milliseconds (the
/// protocol's 10 s).
pub const PROMISE_TTL_MS: u64 = 10_000;

/// The longest a coordinator may wait between starting phase one and
/// starting phase two, in milliseconds: the promise lifetime less 10 % for
/// clock-rate differences between coordinator and masters and for the
/// write's delivery. Past it, the coordinator aborts (drops its promises)
/// instead of writing.
pub const PHASE_TWO_BUDGET_MS: u64 = PROMISE_TTL_MS * 9 / 10;

/// Whether phase one's outcome is known with `ok` promises, `pending`
/// masters yet to answer and quorum `w`: either W promised, or W can no
/// longer be reached. The coordinator stops waiting then.
///
/// ```
/// use locker_core::quorum::phase_one_decided;
/// assert!(phase_one_decided(2, 1, 2)); // W promises: go on
/// assert!(phase_one_decided(0, 1, 2)); // at most 1 more: give up
/// assert!(!phase_one_decided(1, 1, 2)); // wait for the last one
/// ```
pub fn phase_one_decided(ok: usize, pending: usize, w: usize) -> bool {
    ok >= w || ok + pending < w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decided_at_w_or_when_w_is_out_of_reach() {
        assert!(phase_one_decided(2, 1, 2));
        assert!(!phase_one_decided(1, 1, 2));
        assert!(phase_one_decided(1, 0, 2));
        assert!(
            phase_one_decided(0, 0, 0),
            "w = 0: decided at once (and never granted)"
        );
        const { assert!(PHASE_TWO_BUDGET_MS < PROMISE_TTL_MS) };
    }
}
