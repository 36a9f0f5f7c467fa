//! The locker's counters ([`LockerMetrics`]: requests by [`Kind`], their
//! latency, the store's sizes) and a `/metrics` endpoint in Prometheus text
//! format, served by a small hand-written HTTP/1.0 responder (one request
//! per connection, headers bounded to 8 KiB).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use locker_core::protocol::Op;
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A kind of request the `locker` process serves, counted separately: a
/// slot of [`LockerMetrics`]' request counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A request of the store ([`Op`]).
    Store(Op),
    /// `{set_nodes, Masters, Replicas}`.
    SetNodes,
    /// `{set_w, W}`.
    SetW,
    /// `get_debug_state`.
    GetDebugState,
    /// `{'$locker_batch', Requests}`: a coordinator's batch (its requests
    /// are counted by [`LockerMetrics::batch`]).
    Batch,
    /// Any other call.
    Unknown,
    /// The `trans_log` cast from a master.
    TransLog,
    /// `rpc:call` of `locker:dirty_read/1` (and of functions not served).
    Rpc,
}

/// The kinds that are not the store's requests, in slot order after them.
const SHELL_KINDS: [Kind; 7] = [
    Kind::SetNodes,
    Kind::SetW,
    Kind::GetDebugState,
    Kind::Batch,
    Kind::Unknown,
    Kind::TransLog,
    Kind::Rpc,
];

impl Kind {
    /// Every kind, in the order of the exposition.
    pub const ALL: [Kind; Op::ALL.len() + SHELL_KINDS.len()] = {
        let mut all = [Kind::Unknown; Op::ALL.len() + SHELL_KINDS.len()];
        let mut i = 0;
        while i < all.len() {
            all[i] = if i < Op::ALL.len() {
                Kind::Store(Op::ALL[i])
            } else {
                SHELL_KINDS[i - Op::ALL.len()]
            };
            i += 1;
        }
        all
    };

    /// The `kind` label.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Store(op) => op.name().as_str(),
            Kind::SetNodes => "set_nodes",
            Kind::SetW => "set_w",
            Kind::GetDebugState => "get_debug_state",
            Kind::Batch => locker_core::protocol::BATCH,
            Kind::Unknown => "unknown",
            Kind::TransLog => "trans_log",
            Kind::Rpc => "rpc",
        }
    }

    /// The kind of a call named `name` (the request's first atom):
    /// [`Kind::Unknown`] for anything but the calls the server answers.
    pub fn of_call(name: &str) -> Kind {
        match name {
            "set_nodes" => Kind::SetNodes,
            "set_w" => Kind::SetW,
            "get_debug_state" => Kind::GetDebugState,
            locker_core::protocol::BATCH => Kind::Batch,
            _ => Op::ALL
                .into_iter()
                .find(|op| op.name().as_str() == name)
                .map_or(Kind::Unknown, Kind::Store),
        }
    }

    /// Its counter's index.
    fn slot(self) -> usize {
        match self {
            Kind::Store(op) => op as usize,
            other => {
                Op::ALL.len()
                    + SHELL_KINDS
                        .iter()
                        .position(|k| *k == other)
                        .expect("every kind is listed")
            }
        }
    }
}

/// Latency bucket bounds in nanoseconds (rendered in seconds).
const BUCKETS_NS: [u64; 10] = [
    5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 5_000_000, 25_000_000,
];

/// The locker's counters: requests by [`Kind`], their latency, and the
/// store's sizes. The node runtime's own counters are
/// [`erl_node::metrics::Metrics`]; [`LockerMetrics::render`] shows both.
#[derive(Default)]
pub struct LockerMetrics {
    requests: [AtomicU64; Kind::ALL.len()],
    buckets: [AtomicU64; BUCKETS_NS.len()],
    latency_count: AtomicU64,
    latency_sum_ns: AtomicU64,
    /// Requests that came in batches (each batch is one request of
    /// [`Kind::Batch`]).
    batched: AtomicU64,
    /// Leases, promises, waiters and log entries of the store (set by the
    /// `locker` process).
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

/// The prefix of every metric name.
const PREFIX: &str = "locker";

impl LockerMetrics {
    /// Counts one request of `kind` that took `ns`.
    pub fn request(&self, kind: Kind, ns: u64) {
        self.requests[kind.slot()].fetch_add(1, Ordering::Relaxed);
        // One bucket per request (the smallest bound that holds it); the
        // exposition adds them up into Prometheus' cumulative buckets.
        if let Some(i) = BUCKETS_NS.iter().position(|b| ns <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Counts the `n` requests of a batch served (the batch itself is
    /// counted by [`LockerMetrics::request`] as [`Kind::Batch`]).
    pub fn batch(&self, n: usize) {
        self.batched.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Requests that came in batches so far.
    pub fn batched(&self) -> u64 {
        self.batched.load(Ordering::Relaxed)
    }

    /// Requests of `kind` so far.
    pub fn requests_of(&self, kind: Kind) -> u64 {
        self.requests[kind.slot()].load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition: the locker's requests, latency and
    /// store sizes, then the node's gauges and counters (`node`, with
    /// `peers` nodes connected).
    pub fn render(&self, node: &erl_node::metrics::Metrics, peers: usize) -> String {
        let mut s = String::new();
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        s.push_str("# HELP locker_requests_total Requests served by the locker process, by kind.\n# TYPE locker_requests_total counter\n");
        for k in Kind::ALL {
            let _ = writeln!(
                s,
                "locker_requests_total{{kind=\"{}\"}} {}",
                k.name(),
                l(&self.requests[k.slot()])
            );
        }
        let _ = writeln!(
            s,
            "# HELP locker_batched_requests_total Requests served in batches.\n# TYPE locker_batched_requests_total counter\nlocker_batched_requests_total {}",
            l(&self.batched)
        );
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
        ] {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        node.render(PREFIX, peers, &mut s);
        s
    }
}

/// Serves `GET /metrics` on `addr` until the process ends, with the text
/// `render` gives at scrape time.
pub async fn serve(
    addr: SocketAddr,
    render: impl Fn() -> String + Send + Sync + 'static,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let render = Arc::new(render);
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            let render = render.clone();
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
                        ("200 OK", render())
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
        let m = LockerMetrics::default();
        m.request(Kind::Store(Op::GetWriteLock), 3_000); // <= 5 us
        m.request(Kind::Store(Op::GetWriteLock), 30_000); // <= 50 us
        m.request(Kind::Store(Op::ReleaseWriteLock), 50_000); // <= 50 us (bound included)
        m.request(Kind::Store(Op::ReleaseWriteLock), 2_000_000_000); // +Inf only
        let text = m.render(&erl_node::metrics::Metrics::default(), 0);
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
        assert_eq!(m.requests_of(Kind::Store(Op::GetWriteLock)), 2);
    }

    #[test]
    fn kinds_have_their_slots() {
        for (i, k) in Kind::ALL.into_iter().enumerate() {
            assert_eq!(k.slot(), i);
        }
        for k in &Kind::ALL[..Kind::Unknown.slot()] {
            assert_eq!(Kind::of_call(k.name()), *k);
        }
        for k in [Kind::Unknown, Kind::TransLog, Kind::Rpc] {
            assert_eq!(Kind::of_call(k.name()), Kind::Unknown);
        }
    }
}
