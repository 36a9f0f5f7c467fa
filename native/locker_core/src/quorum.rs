//! Counting votes for the coordinator algorithm.

/// The tally of one phase of a two-phase write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Nodes that answered `ok`.
    pub ok: usize,
    /// Nodes that answered anything else.
    pub refused: usize,
    /// Nodes that did not answer (down, no `locker` process, timeout).
    pub missing: usize,
}

impl Tally {
    /// Whether `ok` votes reach the write quorum `w`.
    pub fn has_quorum(&self, w: usize) -> bool {
        w > 0 && self.ok >= w
    }

    /// Whether the quorum can no longer be reached with `pending` answers
    /// still outstanding.
    pub fn quorum_impossible(&self, w: usize, pending: usize) -> bool {
        self.ok + pending < w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_needs_w_oks() {
        let t = Tally {
            ok: 2,
            refused: 1,
            missing: 0,
        };
        assert!(t.has_quorum(2));
        assert!(!t.has_quorum(3));
        assert!(!Tally::default().has_quorum(0), "w = 0 never grants");
        assert!(t.quorum_impossible(3, 0));
        assert!(!t.quorum_impossible(3, 1));
    }
}
