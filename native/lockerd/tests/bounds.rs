//! What a connected peer (one holding the cookie) can make a real
//! `lockerd` process hold: links (capped, a set: repeated `LINK`s add
//! nothing, `UNLINK` is one lookup), monitors (capped, compact), both
//! released when the peer disconnects, and partial frames (one memory
//! budget across connections). Each test drives a lockerd process with a
//! raw distribution peer (this test's handshake, then hand-built frames),
//! measures its VmRSS, reads its `/metrics`, and checks with a lock from a
//! client node that it still serves. Needs `epmd` (skipped without it).
//!
//! CI sizes take seconds. The reviewer's sizes (10M `LINK`s, 1M links and
//! 3,000 unlinks, monitors to the cap, 8 peers with 64 MiB partial frames):
//!
//! ```sh
//! LOCKERD_BOUNDS_BIG=1 cargo test --release -p lockerd --test bounds -- --nocapture --test-threads 1
//! ```
//!
//! `LOCKERD_BIN=path/to/lockerd` runs another build (say, one before these
//! bounds) and only reports its figures: the checks that need this
//! build's options and metrics are skipped. Sizes can also be set one by
//! one (`LOCKERD_BOUNDS_LINK_FLOOD`, `_LINKS`, `_UNLINKS`, `_MONITORS`,
//! `_MONITOR_PEERS`, `_PARTIAL_PEERS`, `_PARTIAL_FRAME_MB`), and
//! `LOCKERD_BOUNDS_ARGS` adds options to lockerd's command line (the
//! checks assume the default caps).

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{epmd_up, start_lockerd_bin, Daemon};
use erl_node::frame::{self, Control};
use erl_node::handshake::{self, ClientOutcome, Identity};
use erl_node::term::{Atom, Pid, Ref, Term};
use locker_client::{Client, RawTerm};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;

const COOKIE: &str = "bounds_test";
/// lockerd's default caps (`--max-peer-links`, `--max-peer-monitors`).
const PEER_CAP: u64 = erl_node::process::PEER_HELD_DEFAULT as u64;
/// A connection's read buffer in lockerd (no budget needed below it).
const READ_BUF: usize = 64 * 1024;

fn big() -> bool {
    std::env::var_os("LOCKERD_BOUNDS_BIG").is_some()
}

/// A size: `LOCKERD_BOUNDS_<NAME>`, else the reviewer's size with
/// `LOCKERD_BOUNDS_BIG`, else the CI size.
fn size(name: &str, ci: usize, big_size: usize) -> usize {
    std::env::var(format!("LOCKERD_BOUNDS_{name}"))
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if big() { big_size } else { ci })
}

fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// What refusals may leave in lockerd's RSS, in KiB: each refused
/// `LINK` or `MONITOR_P` is answered with a frame of about 100 bytes,
/// queued for the peer until written. lockerd stops reading a peer with
/// 8 MiB queued (allocations counted), and the heap keeps what they took.
fn refusals_kb(refused: u64) -> u64 {
    (refused / 4).min(12 << 10)
}

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// A lockerd process (this build's, or `$LOCKERD_BIN`), a client node that
/// locks through it, and its metrics.
struct Lockerd {
    daemon: Daemon,
    name: String,
    metrics_port: u16,
    /// This build: its options and metrics exist.
    this_build: bool,
    /// This build with its default caps: the checks hold.
    checks: bool,
    client: Client,
    tag: String,
}

impl Lockerd {
    /// Starts one; `args` work with any build, `new_args` only with this one.
    async fn start(tag: &str, args: &[&str], new_args: &[&str]) -> Option<Lockerd> {
        if !epmd_up() {
            eprintln!("epmd not available: skipped");
            return None;
        }
        let id = std::process::id();
        let name = format!("bnd{tag}{id}@127.0.0.1");
        let metrics_port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let metrics = format!("127.0.0.1:{metrics_port}");
        let bin = std::env::var("LOCKERD_BIN").ok();
        let this_build = bin.is_none();
        let mut all = vec![
            "--name",
            &name,
            "--cookie",
            COOKIE,
            "--masters",
            &name,
            "--announce",
            "--log",
            "error",
            "--threads",
            "1",
            "--metrics",
            &metrics,
        ];
        all.extend_from_slice(args);
        if this_build {
            all.extend_from_slice(new_args);
        }
        let more = std::env::var("LOCKERD_BOUNDS_ARGS").unwrap_or_default();
        all.extend(more.split_whitespace());
        let checks = this_build && more.trim().is_empty();
        let daemon = start_lockerd_bin(
            bin.as_deref().unwrap_or(env!("CARGO_BIN_EXE_lockerd")),
            &all,
        );
        let mut builder = Client::builder(&format!("bndc{tag}{id}@127.0.0.1"))
            .cookie(COOKIE)
            .masters([&name]);
        // The client node ticks as often as lockerd expects.
        if let Some(t) = all
            .iter()
            .position(|a| *a == "--net-ticktime")
            .and_then(|i| all.get(i + 1))
            .and_then(|t| t.parse().ok())
        {
            builder = builder.net_ticktime(Duration::from_secs(t));
        }
        let client = builder.start().await.expect("client node");
        let l = Lockerd {
            daemon,
            name,
            metrics_port,
            this_build,
            checks,
            client,
            tag: tag.to_string(),
        };
        // Connected, and serving.
        l.probe("start").await;
        Some(l)
    }

    fn rss(&self) -> u64 {
        rss_kb(self.daemon.os_pid())
    }

    /// Locks and releases a key through the client node; panics unless
    /// lockerd grants it within 10 s (another build: reports it). Returns
    /// how long the lock took.
    async fn probe(&self, what: &str) -> Duration {
        let key = RawTerm(Term::atom(&format!("probe_{}_{what}", self.tag)));
        let v = RawTerm(Term::atom("probe"));
        let t = Duration::from_secs(10);
        let started = Instant::now();
        let r = self.client.lock(&key, &v, Duration::from_secs(60), t).await;
        let took = started.elapsed();
        if r.is_err() && !self.checks {
            println!("{what}: lock through lockerd: {r:?} after {took:.2?}");
            return took;
        }
        assert!(r.is_ok(), "{what}: lock through lockerd: {r:?}");
        let r = self.client.release(&key, &v, t).await;
        assert!(r.is_ok(), "{what}: release: {r:?}");
        took
    }

    /// The metrics, by name (labels kept in the name).
    async fn metrics(&self) -> HashMap<String, u64> {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.metrics_port))
            .await
            .expect("metrics endpoint");
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await.unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).await.unwrap();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                Some((k.to_string(), v.parse::<f64>().ok()? as u64))
            })
            .collect()
    }

    /// A metric of this build (`None` with `$LOCKERD_BIN` or
    /// `$LOCKERD_BOUNDS_ARGS`: the figures are only reported).
    async fn metric(&self, name: &str) -> Option<u64> {
        if !self.checks {
            return None;
        }
        Some(
            *self
                .metrics()
                .await
                .get(name)
                .unwrap_or_else(|| panic!("no metric {name}")),
        )
    }

    /// Waits until `metric` is `want` (it follows a disconnection, which
    /// lockerd handles on its own time); panics after 60 s.
    async fn await_metric(&self, name: &str, want: u64) {
        if !self.this_build {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let v = *self.metrics().await.get(name).expect(name);
            if v == want {
                return;
            }
            assert!(Instant::now() < deadline, "{name} stayed {v}, not {want}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(self) {
        self.client.stop().await;
    }
}

/// What a raw peer received from lockerd.
#[derive(Default)]
struct Seen {
    /// `EXIT` signals (links refused or broken).
    exits: AtomicU64,
    /// `MONITOR_P_EXIT`s other than the barrier's (monitors refused).
    monitor_exits: AtomicU64,
    /// `UNLINK_ID_ACK`s.
    unlink_acks: AtomicU64,
}

/// A peer's identity, and the frames it sends.
#[derive(Clone)]
struct PeerIds {
    name: Atom,
    creation: u32,
    /// lockerd's `locker` process.
    locker: Pid,
}

/// A distribution peer made of this test's handshake and hand-built
/// frames: it can send anything a connected node can.
struct RawPeer {
    ids: PeerIds,
    w: OwnedWriteHalf,
    seen: Arc<Seen>,
    barriers: mpsc::UnboundedReceiver<Ref>,
    /// Ends (with the reader) when lockerd closes the connection.
    closed: tokio::sync::oneshot::Receiver<()>,
    reader: tokio::task::JoinHandle<()>,
    next_barrier: u32,
}

/// The registered name whose monitor is the barrier: lockerd answers a
/// monitor of a name nobody has at once, after every earlier frame.
const BARRIER: &str = "bounds_barrier";

impl RawPeer {
    async fn connect(l: &Lockerd, n: usize) -> RawPeer {
        let name = format!("bndp{}{}_{n}@127.0.0.1", l.tag, std::process::id());
        let creation = 0x5eed_0000 + n as u32;
        let me = Identity {
            name: name.parse().expect("node name"),
            creation,
            cookie: COOKIE.to_string(),
        };
        let port = l.daemon.port();
        let (stream, them) =
            match handshake::connect("127.0.0.1", port, &me, Duration::from_secs(30)).await {
                Ok(ClientOutcome::Up(s, p)) => (s, p),
                Ok(ClientOutcome::Busy) => panic!("lockerd busy"),
                Err(e) => panic!("handshake: {e}"),
            };
        // lockerd starts net_kernel, then locker: its second pid.
        let locker = Pid {
            node: Atom::new(&l.name),
            id: 2,
            serial: 0,
            creation: them.creation,
        };
        let (mut r, w) = stream.into_split();
        let seen = Arc::new(Seen::default());
        let (btx, barriers) = mpsc::unbounded_channel();
        let (ctx, closed) = tokio::sync::oneshot::channel();
        let s2 = seen.clone();
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 1 << 20];
            let (mut have, mut start) = (0, 0);
            loop {
                let mut need = 0;
                while have - start >= 4 {
                    let head = &buf[start..start + 4];
                    let len = u32::from_be_bytes(head.try_into().unwrap()) as usize;
                    if have - start < 4 + len {
                        need = 4 + len;
                        break;
                    }
                    let body = &buf[start + 4..start + 4 + len];
                    start += 4 + len;
                    if len == 0 {
                        continue;
                    }
                    match frame::parse(body) {
                        Ok(Control::Exit { .. }) => {
                            s2.exits.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Control::MonitorExit {
                            from, reference, ..
                        }) => {
                            if from.is_atom(BARRIER) {
                                let _ = btx.send(reference);
                            } else {
                                s2.monitor_exits.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Ok(Control::UnlinkIdAck { .. }) => {
                            s2.unlink_acks.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {}
                    }
                }
                buf.copy_within(start..have, 0);
                have -= start;
                start = 0;
                if need > buf.len() {
                    buf.resize(need, 0);
                }
                match r.read(&mut buf[have..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(k) => have += k,
                }
            }
            let _ = ctx.send(());
        });
        RawPeer {
            ids: PeerIds {
                name: Atom::new(&name),
                creation,
                locker,
            },
            w,
            seen,
            barriers,
            closed,
            reader,
            next_barrier: 0,
        }
    }

    /// Writes the frames, in batches.
    async fn send(&mut self, frames: impl Iterator<Item = Vec<u8>>) {
        let mut batch = Vec::with_capacity(1 << 20);
        for f in frames {
            batch.extend_from_slice(&f);
            if batch.len() >= 1 << 20 {
                self.w.write_all(&batch).await.expect("write");
                batch.clear();
            }
        }
        self.w.write_all(&batch).await.expect("write");
    }

    /// Returns once lockerd has handled every frame sent before.
    async fn sync(&mut self) {
        self.next_barrier += 1;
        let r = self.ids.reference(self.next_barrier, 99);
        let ctrl = Term::tuple(vec![
            Term::Int(19),
            Term::pid(self.ids.pid(0)),
            Term::atom(BARRIER),
            Term::reference(r.clone()),
        ]);
        self.w
            .write_all(&frame::build(&ctrl, None))
            .await
            .expect("write");
        let wait = Duration::from_secs(if big() { 1800 } else { 120 });
        loop {
            let got = tokio::time::timeout(wait, self.barriers.recv())
                .await
                .expect("lockerd did not get through the frames")
                .expect("connection closed");
            if got == r {
                return;
            }
        }
    }

    /// Closes the connection.
    async fn disconnect(mut self) {
        let _ = self.w.shutdown().await;
        drop(self.w);
        let _ = self.reader.await;
    }
}

impl PeerIds {
    /// A process of this peer (`n` < 2^28).
    fn pid(&self, n: u32) -> Pid {
        Pid {
            node: self.name.clone(),
            id: n & 0x7fff,
            serial: n >> 15,
            creation: self.creation,
        }
    }

    /// A reference of this peer (`salt` keeps kinds apart).
    fn reference(&self, n: u32, salt: u32) -> Ref {
        Ref::new(
            self.name.clone(),
            self.creation,
            &[n & 0x3ffff, n >> 18, salt],
        )
    }

    fn link(&self, n: u32) -> Vec<u8> {
        let ctrl = Term::tuple(vec![
            Term::Int(1),
            Term::pid(self.pid(n)),
            Term::pid(self.locker.clone()),
        ]);
        frame::build(&ctrl, None)
    }

    fn unlink_id(&self, n: u32) -> Vec<u8> {
        let ctrl = Term::tuple(vec![
            Term::Int(35),
            Term::Int(n as i64 + 1),
            Term::pid(self.pid(n)),
            Term::pid(self.locker.clone()),
        ]);
        frame::build(&ctrl, None)
    }

    /// `MONITOR_P` (19) or `DEMONITOR_P` (20) of `locker` by name.
    fn monitor(&self, op: i64, n: u32) -> Vec<u8> {
        let ctrl = Term::tuple(vec![
            Term::Int(op),
            Term::pid(self.pid(n)),
            Term::atom("locker"),
            Term::reference(self.reference(n, 7)),
        ]);
        frame::build(&ctrl, None)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_are_capped_deduplicated_and_released() {
    let flood = size("LINK_FLOOD", 100_000, 10_000_000);
    let links = size("LINKS", 70_000, 1_000_000) as u32;
    let unlinks = size("UNLINKS", 3_000, 3_000) as u32;
    let Some(l) = Lockerd::start("l", &[], &[]).await else {
        return;
    };
    let mut p = RawPeer::connect(&l, 1).await;
    let ids = p.ids.clone();
    p.send(std::iter::once(ids.link(1))).await;
    p.sync().await;
    assert_eq!(
        p.seen.exits.load(Ordering::Relaxed),
        0,
        "lockerd's locker is not {:?}",
        ids.locker
    );
    let rss0 = l.rss();

    // The same LINK, over and over: one link.
    let started = Instant::now();
    let one = ids.link(1);
    p.send((0..flood).map(|_| one.clone())).await;
    p.sync().await;
    let flood_took = started.elapsed();
    let rss_flood = l.rss();
    if let Some(n) = l.metric("locker_remote_links").await {
        assert_eq!(n, 1, "a repeated LINK is one link");
        assert_eq!(p.seen.exits.load(Ordering::Relaxed), 0);
    }
    println!(
        "links: {flood} LINK frames of one pid: RSS {:.1} -> {:.1} MiB (+{:.1}), {flood_took:.2?}",
        mib(rss0),
        mib(rss_flood),
        mib(rss_flood.saturating_sub(rss0))
    );

    // Distinct pids, beyond the cap: refused with an EXIT (noproc).
    let started = Instant::now();
    p.send((2..=links).map(|n| ids.link(n))).await;
    p.sync().await;
    let links_took = started.elapsed();
    let rss_links = l.rss();
    let held = l.metric("locker_remote_links").await;
    let stored = if l.checks {
        (links as u64).min(PEER_CAP)
    } else {
        links as u64
    };
    if let Some(n) = held {
        assert_eq!(n, stored);
        let refused = links as u64 - stored;
        assert_eq!(p.seen.exits.load(Ordering::Relaxed), refused);
        assert_eq!(l.metric("locker_refused_links_total").await, Some(refused));
        // 12 bytes a link in a hash set (13 with its control byte, at
        // most 8/7 of that in room at the cap), and what the refusals
        // passed through; a list took 40 bytes a link, repeated or not.
        assert!(
            rss_links.saturating_sub(rss0) < stored * 16 / 1024 + (2 << 10) + refusals_kb(refused),
            "links grew RSS by {:.1} MiB",
            mib(rss_links - rss0)
        );
    }
    println!(
        "links: {links} distinct LINKs ({stored} kept): RSS {:.1} MiB (+{:.1} since the start), {links_took:.2?}",
        mib(rss_links),
        mib(rss_links.saturating_sub(rss0))
    );

    // Unlinks (each one lookup) while a client locks through lockerd.
    let started = Instant::now();
    p.send((1..=unlinks).map(|n| ids.unlink_id(n))).await;
    let probe = l.probe("during_unlinks").await;
    p.sync().await;
    let unlinks_took = started.elapsed();
    assert_eq!(p.seen.unlink_acks.load(Ordering::Relaxed), unlinks as u64);
    if let Some(n) = l.metric("locker_remote_links").await {
        assert_eq!(n, stored - unlinks as u64);
    }
    println!(
        "links: {unlinks} UNLINK_IDs handled in {unlinks_took:.2?}; a lock sent after them took {probe:.2?}"
    );

    // The peer goes: its links go (and fire on lockerd's side, queued as
    // their pids).
    p.disconnect().await;
    l.await_metric("locker_remote_links", 0).await;
    let probe = l.probe("after_disconnect").await;
    let rss_after = l.rss();
    println!(
        "links: after the peer left: RSS {:.1} MiB (+{:.1} since the start); a lock took {probe:.2?}",
        mib(rss_after),
        mib(rss_after.saturating_sub(rss0))
    );
    if l.checks {
        let refused = links as u64 - stored;
        assert!(
            rss_after.saturating_sub(rss0) < (2 << 10) + refusals_kb(refused),
            "RSS +{:.1} MiB after the links were released",
            mib(rss_after.saturating_sub(rss0))
        );
    }
    l.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitors_are_capped_compact_and_released() {
    let monitors = size("MONITORS", 70_000, 1_100_000) as u32;
    let peers = size("MONITOR_PEERS", 1, 1);
    let Some(l) = Lockerd::start("m", &[], &[]).await else {
        return;
    };
    let rss0 = l.rss();
    let mut ps = Vec::new();
    let started = Instant::now();
    for i in 0..peers {
        let mut p = RawPeer::connect(&l, i).await;
        let ids = p.ids.clone();
        p.send((1..=monitors).map(|n| ids.monitor(19, n))).await;
        p.sync().await;
        ps.push(p);
    }
    let took = started.elapsed();
    let rss_full = l.rss();
    let grown = rss_full.saturating_sub(rss0);
    let held = l.metric("locker_remote_monitors").await;
    let stored = held.unwrap_or(monitors as u64 * peers as u64);
    println!(
        "monitors: {peers} peer(s) x {monitors} MONITOR_Ps ({stored} kept): RSS {:.1} -> {:.1} MiB (+{:.1}, {} B a monitor), {took:.2?}",
        mib(rss0),
        mib(rss_full),
        mib(grown),
        grown * 1024 / stored.max(1)
    );
    let refused = monitors as u64 * peers as u64 - stored;
    if held.is_some() {
        let per_peer = (monitors as u64).min(PEER_CAP);
        assert_eq!(stored, (per_peer * peers as u64).min(1 << 20));
        let noproc: u64 = ps
            .iter()
            .map(|p| p.seen.monitor_exits.load(Ordering::Relaxed))
            .sum();
        assert_eq!(noproc, refused, "refused monitors are answered noproc");
        // 44 bytes a monitor in a hash table (45 with its control byte,
        // at most 8/7 of that in room at the cap), and what the refusals
        // passed through (a monitor took about 400 bytes before).
        assert!(
            grown < stored * 64 / 1024 + (2 << 10) + refusals_kb(refused),
            "monitors grew RSS by {:.1} MiB",
            mib(grown)
        );
    }

    // Half of the first peer's are dropped (one lookup each), and
    // lockerd still serves.
    let p = &mut ps[0];
    let ids = p.ids.clone();
    let half = if l.checks {
        (monitors as u64).min(PEER_CAP) as u32 / 2
    } else {
        monitors / 2
    };
    p.send((1..=half).map(|n| ids.monitor(20, n))).await;
    p.sync().await;
    if let Some(n) = l.metric("locker_remote_monitors").await {
        assert_eq!(n, stored - half as u64);
    }
    let probe = l.probe("monitors").await;

    // The peers go: so do their monitors, and the memory they took.
    for p in ps {
        p.disconnect().await;
    }
    l.await_metric("locker_remote_monitors", 0).await;
    let probe2 = l.probe("monitors_gone").await;
    let rss_after = l.rss();
    println!(
        "monitors: after the peers left: RSS {:.1} MiB (+{:.1} since the start); locks took {probe:.2?} and {probe2:.2?}",
        mib(rss_after),
        mib(rss_after.saturating_sub(rss0))
    );
    if l.checks {
        // The tables are freed; what the refusals took may stay in the
        // heap.
        assert!(
            rss_after.saturating_sub(rss0) < (2 << 10) + refusals_kb(refused),
            "RSS +{:.1} MiB after the monitors were released (+{:.1} MiB when held)",
            mib(rss_after.saturating_sub(rss0)),
            mib(grown)
        );
    }
    l.stop().await;
}

/// A `REG_SEND` to a name nobody has, with a binary making the frame
/// `len` bytes long (length included).
fn big_frame(from: &Pid, len: usize) -> Vec<u8> {
    let ctrl = Term::tuple(vec![
        Term::Int(6),
        Term::pid(from.clone()),
        Term::atom(""),
        Term::atom("bounds_sink"),
    ]);
    let head = frame::build(&ctrl, Some(&Term::binary(&[]))).len();
    let f = frame::build(&ctrl, Some(&Term::binary(&vec![7u8; len - head])));
    assert_eq!(f.len(), len);
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_frames_share_one_budget() {
    let peers = size("PARTIAL_PEERS", 4, 8);
    let frame_mb = size("PARTIAL_FRAME_MB", 8, 64);
    let max_frame = frame_mb << 20;
    // Two of the largest frames at a time (lockerd's default is 128 MiB
    // for 64 MiB frames).
    let budget = 2 * max_frame;
    let (mf, b) = (max_frame.to_string(), budget.to_string());
    // A long net_ticktime: the peers that wait for the budget send no
    // ticks meanwhile.
    let Some(l) = Lockerd::start(
        "p",
        &["--max-frame", &mf, "--net-ticktime", "240"],
        &["--frame-budget", &b],
    )
    .await
    else {
        return;
    };
    let rss0 = l.rss();
    let unknown0 = l
        .metric("locker_unknown_name_messages_total")
        .await
        .unwrap_or(0);
    // Each peer sends all of one big frame but its last byte, then (once
    // told) the last byte and a barrier.
    let (go_tx, go_rx) = tokio::sync::watch::channel(false);
    let (sent_tx, mut sent_rx) = mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for i in 0..peers {
        let mut p = RawPeer::connect(&l, i).await;
        let f = big_frame(&p.ids.pid(1), max_frame);
        let (mut go, sent) = (go_rx.clone(), sent_tx.clone());
        tasks.push(tokio::spawn(async move {
            p.w.write_all(&f[..f.len() - 1]).await.expect("write");
            let _ = sent.send(i);
            let _ = go.wait_for(|g| *g).await;
            p.w.write_all(&f[f.len() - 1..]).await.expect("write");
            p.sync().await;
            p.disconnect().await;
        }));
    }
    drop(sent_tx);
    // The peers lockerd reads from (all of them without a budget; as
    // many as the budget holds with one) have sent their frame.
    let fit = if l.this_build {
        (budget / (max_frame - READ_BUF)).min(peers)
    } else {
        peers
    };
    let mut peak = l.rss();
    let deadline = Instant::now() + Duration::from_secs(if big() { 300 } else { 60 });
    let mut sent = 0;
    while sent < fit && Instant::now() < deadline {
        if let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(100), sent_rx.recv()).await
        {
            sent += 1;
        }
        peak = peak.max(l.rss());
    }
    assert_eq!(sent, fit, "peers whose frames lockerd read");
    // What is left in the sockets' buffers is read meanwhile.
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak = peak.max(l.rss());
    }
    let held = l.metric("locker_partial_frame_bytes").await;
    let probe = l.probe("partial_frames").await;
    println!(
        "partial frames: {peers} peers x {frame_mb} MiB frames (all but the last byte): RSS {:.1} -> {:.1} MiB at most (+{:.1}); budget held {held:?} B; a lock took {probe:.2?}",
        mib(rss0),
        mib(peak),
        mib(peak.saturating_sub(rss0))
    );
    if let Some(held) = held {
        assert_eq!(held as usize, fit * (max_frame - READ_BUF));
        assert!(
            peak.saturating_sub(rss0) < ((budget + (12 << 20)) >> 10) as u64,
            "partial frames grew RSS by {:.1} MiB (budget {} MiB)",
            mib(peak - rss0),
            budget >> 20
        );
    }
    // The frames complete: those waiting get the budget in turn, and
    // lockerd handles every frame.
    go_tx.send(true).unwrap();
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(if big() { 600 } else { 120 }), t)
            .await
            .expect("a big frame was not handled")
            .unwrap();
    }
    if let Some(n) = l.metric("locker_unknown_name_messages_total").await {
        assert_eq!(n - unknown0, peers as u64, "big frames handled");
    }
    l.await_metric("locker_partial_frame_bytes", 0).await;
    let rss_after = l.rss();
    println!(
        "partial frames: after they completed: RSS {:.1} MiB",
        mib(rss_after)
    );
    l.stop().await;
}

/// A connection that cannot get the budget for its frame while another
/// holds it is closed after half of `net_ticktime`, and the holder's frame
/// still goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_beyond_the_budget_waits_then_is_dropped() {
    if std::env::var_os("LOCKERD_BIN").is_some()
        || std::env::var_os("LOCKERD_BOUNDS_ARGS").is_some()
    {
        return; // this build's options, as they are here
    }
    let max_frame = 1 << 20;
    let mf = max_frame.to_string();
    let Some(l) = Lockerd::start(
        "d",
        &[
            "--max-frame",
            &mf,
            "--frame-budget",
            &mf,
            "--net-ticktime",
            "2",
        ],
        &[],
    )
    .await
    else {
        return;
    };
    let mut holder = RawPeer::connect(&l, 1).await;
    let mut waiter = RawPeer::connect(&l, 2).await;
    let f = big_frame(&holder.ids.pid(1), max_frame);
    // The holder sends all but 1000 bytes, then trickles (staying alive)
    // until told to finish.
    let cut = f.len() - 1000;
    holder.w.write_all(&f[..cut]).await.unwrap();
    l.await_metric("locker_partial_frame_bytes", (max_frame - READ_BUF) as u64)
        .await;
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel::<()>();
    let trickle = tokio::spawn(async move {
        let mut at = cut;
        while at < f.len() - 1 && done_rx.try_recv().is_err() {
            holder.w.write_all(&f[at..at + 1]).await.unwrap();
            at += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        holder.w.write_all(&f[at..]).await.unwrap();
        holder.sync().await;
        holder.disconnect().await;
    });
    // The waiter's frame does not fit: lockerd closes its connection.
    let g = big_frame(&waiter.ids.pid(1), max_frame);
    let _ = tokio::time::timeout(Duration::from_secs(5), waiter.w.write_all(&g)).await;
    tokio::time::timeout(Duration::from_secs(60), &mut waiter.closed)
        .await
        .expect("the waiting connection was not closed")
        .ok();
    assert!(l.metric("locker_frame_budget_drops_total").await >= Some(1));
    done_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(60), trickle)
        .await
        .expect("the holder's frame was not handled")
        .unwrap();
    l.probe("after_drop").await;
    l.stop().await;
}
