//! The connection table: accepting and making connections, queueing
//! frames while a connection is being made, simultaneous-connect
//! resolution, the peer limit, and closing everything at shutdown.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};

use crate::connection::Host;
use crate::handshake::{self, Accept, ClientOutcome, Identity};
use crate::node::ConnectError;
use crate::term::Atom;
use crate::watermark::Watermark;

/// What the connection table needs of its node, beyond what its
/// connections need.
pub(crate) trait PeerHost: Host {
    /// The table.
    fn peers(&self) -> &Mutex<Peers>;
    /// The node's name.
    fn name(&self) -> &Atom;
    /// Who the node is in handshakes.
    fn ident(&self) -> &Identity;
    /// Whether the node is stopping (no new connections).
    fn is_stopping(&self) -> bool;
    /// Most connected peers.
    fn max_peers(&self) -> usize;
    /// Time allowed for a handshake.
    fn handshake_timeout(&self) -> Duration;
    /// The connection to `peer` is gone, or could not be made.
    fn peer_lost(&self, peer: &Atom);
}

/// Frames queued for a peer being connected, at most.
const MAX_QUEUED: usize = 100_000;

static CONN_IDS: AtomicU64 = AtomicU64::new(1);

pub(crate) enum Slot {
    Up {
        tx: mpsc::UnboundedSender<Vec<u8>>,
        conn_id: u64,
        close: Arc<Notify>,
        outbox: Arc<Watermark>,
    },
    Connecting {
        queue: Vec<Vec<u8>>,
    },
}

/// Peers by node name.
#[derive(Default)]
pub(crate) struct Peers {
    map: HashMap<Atom, Slot, ahash::RandomState>,
    pub writers: Arc<AtomicUsize>,
    pub writers_done: Arc<Notify>,
}

impl Peers {
    pub fn is_up(&self, peer: &Atom) -> bool {
        matches!(self.map.get(peer), Some(Slot::Up { .. }))
    }
    pub fn up_names(&self) -> Vec<Atom> {
        self.map
            .iter()
            .filter(|(_, s)| matches!(s, Slot::Up { .. }))
            .map(|(n, _)| n.clone())
            .collect()
    }
    fn up_count(&self) -> usize {
        self.map
            .values()
            .filter(|s| matches!(s, Slot::Up { .. }))
            .count()
    }
}

/// Sends a frame to `peer`, connecting first when `connect` is set.
pub(crate) fn send_frame<H: PeerHost>(node: &H, peer: &Atom, f: Vec<u8>, connect: bool) {
    let mut peers = node.peers().lock();
    match peers.map.get_mut(peer) {
        Some(Slot::Up { tx, outbox, .. }) => {
            outbox.add(crate::connection::queued_cost(f.capacity()));
            let _ = tx.send(f);
        }
        Some(Slot::Connecting { queue }) => {
            if queue.len() < MAX_QUEUED {
                queue.push(f);
            } else {
                tracing::warn!(%peer, "send queue of a connecting peer full: frame dropped");
            }
        }
        None if connect && !node.is_stopping() && *peer != *node.name() => {
            peers
                .map
                .insert(peer.clone(), Slot::Connecting { queue: vec![f] });
            drop(peers);
            spawn_connect(node.clone(), peer.clone());
        }
        None => {
            tracing::debug!(%peer, "not connected: frame dropped");
        }
    }
}

/// Starts connecting to `peer` unless connected or connecting.
pub(crate) fn ensure_connecting<H: PeerHost>(node: &H, peer: &Atom) {
    if *peer == *node.name() || node.is_stopping() {
        return;
    }
    let mut peers = node.peers().lock();
    if peers.map.contains_key(peer) {
        return;
    }
    peers
        .map
        .insert(peer.clone(), Slot::Connecting { queue: Vec::new() });
    drop(peers);
    spawn_connect(node.clone(), peer.clone());
}

fn spawn_connect<H: PeerHost>(node: H, peer: Atom) {
    tokio::spawn(async move {
        if let Err(e) = connect(&node, &peer).await {
            tracing::info!(%peer, error = %e, "cannot connect");
            forget_attempt(&node, &peer);
        }
    });
}

/// Drops the `Connecting` slot of a failed attempt (its queued frames
/// with it) and tells the node, whose monitors of `peer` then fire.
fn forget_attempt<H: PeerHost>(node: &H, peer: &Atom) {
    let had = {
        let mut peers = node.peers().lock();
        match peers.map.get(peer) {
            Some(Slot::Connecting { .. }) => {
                peers.map.remove(peer);
                true
            }
            _ => false,
        }
    };
    if had {
        node.peer_lost(peer);
    }
}

/// One connection attempt to `peer`, made now and awaited: `Ok` once
/// connected (or already connected). When another attempt is under way
/// (an automatic connect on send), waits for its end, and makes its own
/// if that one failed (so that the error says why). Cancellation-safe:
/// the attempt runs in a task of its own.
pub(crate) async fn connect_now<H: PeerHost>(node: &H, peer: &Atom) -> Result<(), ConnectError> {
    if *peer == *node.name() {
        return Ok(());
    }
    for _ in 0..2 {
        if node.is_stopping() {
            return Err(ConnectError::Stopping);
        }
        let ours = {
            let mut peers = node.peers().lock();
            match peers.map.get(peer) {
                Some(Slot::Up { .. }) => return Ok(()),
                Some(Slot::Connecting { .. }) => false,
                None => {
                    peers
                        .map
                        .insert(peer.clone(), Slot::Connecting { queue: Vec::new() });
                    true
                }
            }
        };
        if ours {
            // A task of its own: the slot is cleaned up even if the
            // caller stops waiting.
            let (n, p) = (node.clone(), peer.clone());
            let attempt = tokio::spawn(async move {
                let r = connect(&n, &p).await;
                if let Err(e) = &r {
                    tracing::debug!(peer = %p, error = %e, "cannot connect");
                    forget_attempt(&n, &p);
                }
                r
            });
            return attempt
                .await
                .unwrap_or_else(|e| Err(ConnectError::Handshake(format!("connect task: {e}"))));
        }
        // Another attempt: wait for its end.
        let deadline = tokio::time::Instant::now() + node.handshake_timeout() * 2;
        loop {
            match node.peers().lock().map.get(peer) {
                Some(Slot::Up { .. }) => return Ok(()),
                Some(Slot::Connecting { .. }) => {}
                None => break,
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ConnectError::Handshake("handshake timed out".into()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Err(ConnectError::Handshake(
        "concurrent connection attempts failed".into(),
    ))
}

async fn connect<H: PeerHost>(node: &H, peer: &Atom) -> Result<(), ConnectError> {
    let (alive, host) = peer
        .as_str()
        .split_once('@')
        .ok_or_else(|| ConnectError::InvalidName(peer.to_string()))?;
    let timeout = node.handshake_timeout();
    for attempt in 0..30 {
        if node.peers().lock().is_up(peer) {
            return Ok(()); // the peer's own connection came in meanwhile
        }
        let port = crate::epmd::port_of(alive, host)
            .await
            .map_err(ConnectError::Epmd)?
            .ok_or_else(|| ConnectError::NotRegistered {
                host: host.to_string(),
            })?;
        match handshake::connect(host, port, node.ident(), timeout).await {
            Ok(ClientOutcome::Up(stream, p)) => {
                if p.name != peer.as_str() {
                    return Err(ConnectError::Handshake(format!(
                        "connected to {} instead of {peer}",
                        p.name
                    )));
                }
                install(node, peer.clone(), stream, p.creation);
                return Ok(());
            }
            Ok(ClientOutcome::Busy) => {
                tracing::debug!(%peer, attempt, "peer busy (simultaneous connect or old connection): retrying");
                tokio::time::sleep(Duration::from_millis(50 + 50 * attempt.min(10))).await;
            }
            Err(e) if e.is_bad_cookie() => return Err(ConnectError::BadCookie),
            Err(e) if e.0.starts_with("peer refused") => return Err(ConnectError::Refused(e.0)),
            Err(e) => return Err(ConnectError::Handshake(e.0)),
        }
    }
    Err(ConnectError::Handshake("peer stayed busy".into()))
}

/// Accepts connections until the node stops.
pub(crate) fn spawn_acceptor<H: PeerHost>(node: H, listener: TcpListener) {
    tokio::spawn(async move {
        loop {
            let (stream, addr) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if node.is_stopping() {
                break;
            }
            let _ = stream.set_nodelay(true);
            let n = node.clone();
            tokio::spawn(async move { incoming(n, stream, addr).await });
        }
    });
}

async fn incoming<H: PeerHost>(node: H, stream: TcpStream, addr: std::net::SocketAddr) {
    let max = node.max_peers();
    if node.peers().lock().up_count() >= max {
        node.metrics().rejected.fetch_add(1, Ordering::Relaxed);
        crate::warn_bad_input!(%addr, max, "peer limit reached: connection refused");
        return;
    }
    let me = node.name().as_str().to_string();
    let n2 = node.clone();
    let decide = move |name: &str, _creation: Option<u32>| {
        let peers = n2.peers().lock();
        if peers.up_count() >= max || name.chars().count() > 255 || !name.contains('@') {
            n2.metrics().rejected.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                peer = name,
                max,
                "connection refused (peer limit or bad name)"
            );
            return Accept::NotAllowed;
        }
        match peers.map.get(&Atom::new(name)) {
            // Our own attempt is under way: OTP's rule, the greater name wins.
            Some(Slot::Connecting { .. }) if me.as_str() > name => Accept::Nok,
            Some(Slot::Connecting { .. }) => Accept::OkSimultaneous,
            // The peer reconnects, so it holds no connection to us: the one
            // we have is stale and is replaced.
            _ => Accept::Ok,
        }
    };
    let timeout = node.handshake_timeout();
    match handshake::accept(stream, node.ident(), timeout, decide).await {
        Ok((stream, peer)) => {
            tracing::info!(peer = %peer.name, %addr, "peer connected (incoming)");
            install(&node, Atom::new(&peer.name), stream, peer.creation);
        }
        Err(e) => {
            node.metrics()
                .handshake_failures
                .fetch_add(1, Ordering::Relaxed);
            crate::warn_bad_input!(%addr, error = %e, "incoming handshake failed");
        }
    }
}

/// Makes `stream` the connection to `peer`, replacing any older one, and
/// flushes the frames queued while connecting.
fn install<H: PeerHost>(node: &H, peer: Atom, stream: TcpStream, creation: u32) {
    let (tx, rx) = mpsc::unbounded_channel();
    let conn_id = CONN_IDS.fetch_add(1, Ordering::Relaxed);
    let close = Arc::new(Notify::new());
    let outbox = crate::connection::new_outbox();
    let (old, writers, done) = {
        let mut peers = node.peers().lock();
        let old = peers.map.insert(
            peer.clone(),
            Slot::Up {
                tx: tx.clone(),
                conn_id,
                close: close.clone(),
                outbox: outbox.clone(),
            },
        );
        (old, peers.writers.clone(), peers.writers_done.clone())
    };
    let mut replaced = false;
    match old {
        Some(Slot::Connecting { queue }) => {
            for f in queue {
                outbox.add(crate::connection::queued_cost(f.capacity()));
                let _ = tx.send(f);
            }
        }
        Some(Slot::Up { close, .. }) => {
            close.notify_one();
            replaced = true;
        }
        None => {}
    }
    if replaced {
        // Whatever the old connection held is gone with it.
        node.peer_lost(&peer);
    }
    tracing::info!(%peer, creation, "connection up");
    crate::connection::spawn(
        node.clone(),
        peer,
        conn_id,
        stream,
        &tx,
        rx,
        close,
        outbox,
        writers,
        done,
    );
}

/// Called by a connection when it ends.
pub(crate) fn connection_ended<H: PeerHost>(node: &H, peer: &Atom, conn_id: u64) {
    let current = {
        let mut peers = node.peers().lock();
        match peers.map.get(peer) {
            Some(Slot::Up { conn_id: c, .. }) if *c == conn_id => {
                peers.map.remove(peer);
                true
            }
            _ => false,
        }
    };
    if current {
        tracing::info!(%peer, "connection down");
        node.peer_lost(peer);
    }
}

/// Closes every connection after its queued frames are written.
pub(crate) async fn close_all<H: PeerHost>(node: &H, grace: Duration) {
    let (writers, done) = {
        let mut peers = node.peers().lock();
        // Dropping the senders ends each writer once its queue is written.
        peers.map.clear();
        (peers.writers.clone(), peers.writers_done.clone())
    };
    let _ = tokio::time::timeout(grace, async {
        while writers.load(Ordering::Acquire) > 0 {
            done.notified().await;
        }
    })
    .await;
}
