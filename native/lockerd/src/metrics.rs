//! Counters and a `/metrics` endpoint in Prometheus text format, served by
//! a small hand-written HTTP/1.0 responder (one request per connection,
//! headers bounded to 8 KiB).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Request kinds counted separately.
pub const KINDS: &[&str] = &[
    "get_write_lock",
    "release_write_lock",
    "write",
    "update",
    "extend_lease",
    "release",
    "wait_for",
    "wait_for_release",
    "set_nodes",
    "set_w",
    "get_debug_state",
    "unknown",
    "trans_log",
    "rpc",
];

/// Latency bucket bounds in nanoseconds (rendered in seconds).
const BUCKETS_NS: [u64; 10] = [
    5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 5_000_000, 25_000_000,
];

/// Every counter of the node.
#[derive(Default)]
pub struct Metrics {
    requests: [AtomicU64; 14],
    buckets: [AtomicU64; 10],
    latency_count: AtomicU64,
    latency_sum_ns: AtomicU64,
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
    /// Leases, promises and waiters of the store, and peers connected
    /// (gauges, set by their owners).
    pub gauges: Mutex<Gauges>,
}

/// Point-in-time sizes.
#[derive(Default, Clone, Copy)]
pub struct Gauges {
    /// Leases stored.
    pub leases: u64,
    /// Write promises.
    pub promises: u64,
    /// Waiters.
    pub waiters: u64,
    /// Transaction log entries not yet pushed.
    pub log: u64,
}

impl Metrics {
    /// Counts one request of `kind` (an entry of [`KINDS`]) that took `ns`.
    pub fn request(&self, kind: usize, ns: u64) {
        self.requests[kind.min(KINDS.len() - 1)].fetch_add(1, Ordering::Relaxed);
        // One bucket per request (the smallest bound that holds it); the
        // exposition adds them up into Prometheus' cumulative buckets.
        if let Some(i) = BUCKETS_NS.iter().position(|b| ns <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Requests of `kind` so far.
    pub fn requests_of(&self, kind: &str) -> u64 {
        KINDS
            .iter()
            .position(|k| *k == kind)
            .map_or(0, |i| self.requests[i].load(Ordering::Relaxed))
    }

    /// The Prometheus text exposition.
    pub fn render(&self, peers: usize) -> String {
        let mut s = String::new();
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        s.push_str("# HELP locker_requests_total Requests served by the locker process, by kind.\n# TYPE locker_requests_total counter\n");
        for (i, k) in KINDS.iter().enumerate() {
            let _ = writeln!(
                s,
                "locker_requests_total{{kind=\"{k}\"}} {}",
                l(&self.requests[i])
            );
        }
        s.push_str("# HELP locker_request_duration_seconds Time to serve a request.\n# TYPE locker_request_duration_seconds histogram\n");
        let mut below = 0;
        for (i, ns) in BUCKETS_NS.iter().enumerate() {
            let b = *ns as f64 / 1e9;
            below += l(&self.buckets[i]);
            let _ = writeln!(
                s,
                "locker_request_duration_seconds_bucket{{le=\"{b}\"}} {below}"
            );
        }
        let count = l(&self.latency_count);
        let _ = writeln!(
            s,
            "locker_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            s,
            "locker_request_duration_seconds_sum {}",
            l(&self.latency_sum_ns) as f64 / 1e9
        );
        let _ = writeln!(s, "locker_request_duration_seconds_count {count}");
        let g = *self.gauges.lock();
        for (name, help, v) in [
            ("locker_leases", "Leases stored.", g.leases),
            ("locker_promises", "Write promises held.", g.promises),
            (
                "locker_waiters",
                "wait_for and wait_for_release waiters.",
                g.waiters,
            ),
            (
                "locker_trans_log_entries",
                "Log entries not yet pushed to replicas.",
                g.log,
            ),
            ("locker_peers", "Connected nodes.", peers as u64),
            (
                "locker_remote_monitors",
                "Monitors remote processes hold on this node's processes.",
                self.remote_monitors.load(Ordering::Relaxed),
            ),
            (
                "locker_remote_links",
                "Links remote processes hold with this node's processes.",
                self.remote_links.load(Ordering::Relaxed),
            ),
            (
                "locker_partial_frame_bytes",
                "Bytes of partial frames held beyond the connections' base buffers.",
                self.partial_frame_bytes.load(Ordering::Relaxed),
            ),
        ] {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        for (name, help, v) in [
            (
                "locker_frames_received_total",
                "Distribution frames received.",
                &self.frames_in,
            ),
            (
                "locker_bad_frames_total",
                "Frames refused: undecodable or oversized.",
                &self.bad_frames,
            ),
            (
                "locker_unknown_name_messages_total",
                "Messages to unregistered names.",
                &self.unknown_name,
            ),
            (
                "locker_backpressure_pauses_total",
                "Times a connection paused reading for a full mailbox or unread replies.",
                &self.backpressure,
            ),
            (
                "locker_handshake_failures_total",
                "Incoming handshakes that failed.",
                &self.handshake_failures,
            ),
            (
                "locker_rejected_connections_total",
                "Connections refused over the peer limit.",
                &self.rejected,
            ),
            (
                "locker_refused_monitors_total",
                "Monitors refused over a cap (answered noproc).",
                &self.refused_monitors,
            ),
            (
                "locker_refused_links_total",
                "Links refused over a cap (answered with an exit signal, noproc).",
                &self.refused_links,
            ),
            (
                "locker_frame_budget_waits_total",
                "Times a connection waited for the partial-frame memory budget.",
                &self.frame_budget_waits,
            ),
            (
                "locker_frame_budget_drops_total",
                "Connections closed after waiting too long for the partial-frame budget.",
                &self.frame_budget_drops,
            ),
        ] {
            let _ = writeln!(
                s,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                l(v)
            );
        }
        s
    }
}

/// Serves `GET /metrics` on `addr` until the process ends. `peers` gives
/// the number of connected nodes at scrape time.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    peers: impl Fn() -> usize + Send + Sync + 'static,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let peers = Arc::new(peers);
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            let (m, p) = (metrics.clone(), peers.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut n = 0;
                let read = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                    while n < buf.len() {
                        match s.read(&mut buf[n..]).await {
                            Ok(0) | Err(_) => break,
                            Ok(k) => n += k,
                        }
                        if buf[..n].windows(4).any(|w| w == b"\r\n\r\n")
                            || buf[..n].windows(2).any(|w| w == b"\n\n")
                        {
                            break;
                        }
                    }
                })
                .await;
                if read.is_err() {
                    return;
                }
                let head = String::from_utf8_lossy(&buf[..n]);
                let mut parts = head.split_whitespace();
                let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                let (status, body) =
                    if method == "GET" && (path == "/metrics" || path.starts_with("/metrics?")) {
                        ("200 OK", m.render(p()))
                    } else {
                        ("404 Not Found", "not found: try GET /metrics\n".to_string())
                    };
                let resp = format!(
                    "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.request(0, 3_000); // <= 5 us
        m.request(0, 30_000); // <= 50 us
        m.request(1, 50_000); // <= 50 us (bound included)
        m.request(1, 2_000_000_000); // +Inf only
        let text = m.render(0);
        let bucket = |le: &str| -> u64 {
            let prefix = format!("locker_request_duration_seconds_bucket{{le=\"{le}\"}} ");
            let line = text.lines().find(|l| l.starts_with(&prefix)).expect(le);
            line[prefix.len()..].parse().expect("count")
        };
        assert_eq!(bucket("0.000005"), 1);
        assert_eq!(bucket("0.00001"), 1);
        assert_eq!(bucket("0.000025"), 1);
        assert_eq!(bucket("0.00005"), 3);
        assert_eq!(bucket("0.025"), 3);
        let labels: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("locker_request_duration_seconds_bucket{le=\""))
            .map(|l| &l[..l.find('"').expect("label end")])
            .collect();
        assert_eq!(
            labels,
            [
                "0.000005", "0.00001", "0.000025", "0.00005", "0.0001", "0.00025", "0.0005",
                "0.001", "0.005", "0.025", "+Inf"
            ]
        );
        assert_eq!(bucket("+Inf"), 4);
        assert!(text.contains("locker_request_duration_seconds_count 4\n"));
        assert_eq!(m.requests_of("get_write_lock"), 2);
    }
}
