//! The node's counters and gauges: what the runtime itself counts
//! (frames, refused input, backpressure, monitors and links held), in
//! Prometheus text format for the application's `/metrics` endpoint.
//!
//! ```
//! use std::sync::atomic::Ordering;
//! use erl_node::metrics::Metrics;
//!
//! let m = Metrics::default();
//! m.frames_in.fetch_add(3, Ordering::Relaxed);
//! let mut text = String::new();
//! m.render("app", 2, &mut text);
//! assert!(text.contains("app_peers 2\n"));
//! assert!(text.contains("app_frames_received_total 3\n"));
//! ```

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Every counter of the node runtime.
#[derive(Default)]
pub struct Metrics {
    /// Frames received.
    pub frames_in: AtomicU64,
    /// Frames that did not parse, or were too big.
    pub bad_frames: AtomicU64,
    /// Messages to names nobody registered.
    pub unknown_name: AtomicU64,
    /// Times a connection stopped reading because the mailbox it feeds
    /// was full, or its peer left more than 8 MiB unread (backpressure on
    /// the sender).
    pub backpressure: AtomicU64,
    /// Failed incoming handshakes (wrong cookie, garbage, timeouts).
    pub handshake_failures: AtomicU64,
    /// Connections refused over the peer limit.
    pub rejected: AtomicU64,
    /// Monitors remote processes hold on this node's processes (gauge).
    pub remote_monitors: AtomicU64,
    /// Links remote processes hold with this node's processes (gauge).
    pub remote_links: AtomicU64,
    /// Monitors refused over a cap (answered `noproc`).
    pub refused_monitors: AtomicU64,
    /// Links refused over a cap (answered with an `EXIT` `noproc`).
    pub refused_links: AtomicU64,
    /// Bytes of partial frames claimed from the node's budget (gauge).
    pub partial_frame_bytes: AtomicU64,
    /// Times a connection waited for the partial-frame budget.
    pub frame_budget_waits: AtomicU64,
    /// Connections closed after waiting too long for that budget.
    pub frame_budget_drops: AtomicU64,
}

impl Metrics {
    /// Appends the Prometheus text exposition of the node's gauges (with
    /// `peers`, the nodes connected at scrape time) then of its counters,
    /// every name starting with `prefix` and `_`.
    pub fn render(&self, prefix: &str, peers: usize, out: &mut String) {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        for (name, help, v) in [
            ("peers", "Connected nodes.", peers as u64),
            (
                "remote_monitors",
                "Monitors remote processes hold on this node's processes.",
                l(&self.remote_monitors),
            ),
            (
                "remote_links",
                "Links remote processes hold with this node's processes.",
                l(&self.remote_links),
            ),
            (
                "partial_frame_bytes",
                "Bytes of partial frames held beyond the connections' base buffers.",
                l(&self.partial_frame_bytes),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {prefix}_{name} {help}\n# TYPE {prefix}_{name} gauge\n{prefix}_{name} {v}"
            );
        }
        for (name, help, v) in [
            (
                "frames_received_total",
                "Distribution frames received.",
                &self.frames_in,
            ),
            (
                "bad_frames_total",
                "Frames refused: undecodable or oversized.",
                &self.bad_frames,
            ),
            (
                "unknown_name_messages_total",
                "Messages to unregistered names.",
                &self.unknown_name,
            ),
            (
                "backpressure_pauses_total",
                "Times a connection paused reading for a full mailbox or unread replies.",
                &self.backpressure,
            ),
            (
                "handshake_failures_total",
                "Incoming handshakes that failed.",
                &self.handshake_failures,
            ),
            (
                "rejected_connections_total",
                "Connections refused over the peer limit.",
                &self.rejected,
            ),
            (
                "refused_monitors_total",
                "Monitors refused over a cap (answered noproc).",
                &self.refused_monitors,
            ),
            (
                "refused_links_total",
                "Links refused over a cap (answered with an exit signal, noproc).",
                &self.refused_links,
            ),
            (
                "frame_budget_waits_total",
                "Times a connection waited for the partial-frame memory budget.",
                &self.frame_budget_waits,
            ),
            (
                "frame_budget_drops_total",
                "Connections closed after waiting too long for the partial-frame budget.",
                &self.frame_budget_drops,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {prefix}_{name} {help}\n# TYPE {prefix}_{name} counter\n{prefix}_{name} {}",
                l(v)
            );
        }
    }
}
