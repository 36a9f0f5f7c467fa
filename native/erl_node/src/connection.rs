//! One connection after the handshake: a reader that parses frames and
//! dispatches them, and a writer that batches queued frames into few
//! writes and sends ticks.
//!
//! erl_dist sends no ticks; here a tick goes out whenever nothing was
//! written for a quarter of `net_ticktime`, and a peer silent for a whole
//! `net_ticktime` is dropped. A tick received while nothing was written
//! since the last timer tick is answered with a tick, so a peer with a
//! shorter `net_ticktime` than ours keeps an idle link up too. Frames over
//! `max_frame` close the connection (the rest of the stream cannot be
//! trusted); frames that do not parse are logged and skipped.
//!
//! The reader parses every whole frame in its buffer in place before it
//! reads again, and arms no timer per read: the writer's ticker, which
//! runs anyway, checks that the reader saw bytes within `net_ticktime`.
//!
//! The read buffer is 64 KiB. A frame longer than that is read into a
//! buffer of exactly its size, whose bytes beyond 64 KiB are claimed
//! first from the node's partial-frame budget (`budget`,
//! [`crate::node::NodeConfig::frame_budget`]): N peers that each start a
//! 64 MiB frame hold the budget between them, not N times 64 MiB. A
//! connection that cannot get its share stops reading (TCP pushes back on
//! its peer) until other frames complete, for half of `net_ticktime` at
//! most, then is closed. The buffer goes back to 64 KiB once the frame is
//! handled.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};

use crate::budget::{ByteBudget, Claim};
use crate::frame::Control;
use crate::metrics::Metrics;
use crate::term::Atom;
use crate::watermark::Watermark;

/// What a connection needs of the node it belongs to.
pub(crate) trait Host: Clone + Send + Sync + 'static {
    /// OTP's `net_ticktime`.
    fn net_ticktime(&self) -> Duration;
    /// The largest frame accepted.
    fn max_frame(&self) -> usize;
    /// The node's counters.
    fn metrics(&self) -> &Arc<Metrics>;
    /// The partial-frame budget all connections share.
    fn frame_budget(&self) -> &Arc<ByteBudget>;
    /// Handles one incoming operation from `peer`; the backlog of the
    /// mailbox a message went to when it is over its high-water mark.
    fn dispatch(&self, peer: &Atom, ctrl: Control) -> Option<Arc<Watermark>>;
    /// The connection `conn_id` to `peer` ended.
    fn connection_ended(&self, peer: &Atom, conn_id: u64);
}

/// A connection's read buffer, for every frame that fits; longer frames
/// claim the rest from the node's partial-frame budget.
pub(crate) const READ_BUF: usize = 64 * 1024;

/// Bytes queued for a connection's writer, counted in a [`Watermark`]. A
/// peer that sends requests faster than it reads the replies would
/// otherwise grow this node's memory without bound: while more than
/// [`OUTBOX_HIGH`] bytes wait, the connection's reader stops reading until
/// the queue is down to [`OUTBOX_LOW`], or for [`OUTBOX_MOST_PAUSE`] at
/// most (so that two nodes that both queue a lot for each other still
/// make progress).
pub(crate) const OUTBOX_HIGH: usize = 8 << 20;
/// See [`OUTBOX_HIGH`].
pub(crate) const OUTBOX_LOW: usize = 2 << 20;
/// See [`OUTBOX_HIGH`].
const OUTBOX_MOST_PAUSE: Duration = Duration::from_secs(1);

/// What a frame queued for a writer costs in the outbox's count: its
/// allocation and its place in the queue, not only its bytes, so that a
/// flood of small replies (each a ~100-byte frame of 128 bytes of
/// capacity) holds about [`OUTBOX_HIGH`] of memory at the mark, not twice
/// that.
pub(crate) fn queued_cost(capacity: usize) -> usize {
    capacity + QUEUED_OVERHEAD
}

/// A queued frame's `Vec` in its queue slot, and the allocator's header.
const QUEUED_OVERHEAD: usize = 48;

/// A connection's outbox: an empty [`Watermark`] with the marks above.
pub(crate) fn new_outbox() -> Arc<Watermark> {
    Arc::new(Watermark::new(OUTBOX_HIGH, OUTBOX_LOW))
}

/// How the reader and the writer of one connection see each other.
struct Link {
    /// Asks both halves to stop.
    close: Arc<Notify>,
    /// Reads that returned bytes; the writer's ticker watches it.
    reads: AtomicU64,
    /// What waits to be written.
    outbox: Arc<Watermark>,
}

/// Starts the reader and writer of a connection.
#[allow(clippy::too_many_arguments)]
pub(crate) fn spawn<H: Host>(
    node: H,
    peer: Atom,
    conn_id: u64,
    stream: TcpStream,
    tx: &mpsc::UnboundedSender<Vec<u8>>,
    rx: mpsc::UnboundedReceiver<Vec<u8>>,
    close: Arc<Notify>,
    outbox: Arc<Watermark>,
    writers: Arc<AtomicUsize>,
    writers_done: Arc<Notify>,
) {
    let (r, w) = stream.into_split();
    let tick = node.net_ticktime();
    let echo = tx.downgrade();
    writers.fetch_add(1, Ordering::AcqRel);
    let link = Arc::new(Link {
        close,
        reads: AtomicU64::new(0),
        outbox,
    });
    let link_r = link.clone();
    let (n2, p2) = (node.clone(), peer.clone());
    tokio::spawn(async move {
        if let Some(why) = writer(w, rx, tick, &link).await {
            tracing::info!(peer = %p2, reason = %why, "connection closed");
        }
        writers.fetch_sub(1, Ordering::AcqRel);
        writers_done.notify_one();
        // A writer that stops (socket error, replaced, silent peer) ends
        // the connection, and its reader.
        link.close.notify_one();
        n2.connection_ended(&p2, conn_id);
    });
    tokio::spawn(async move {
        let why = reader(&node, &peer, r, &link_r, echo).await;
        tracing::info!(%peer, reason = %why, "connection closed");
        link_r.close.notify_one();
        node.connection_ended(&peer, conn_id);
    });
}

/// Writes queued frames in batches and ticks; returns why it stopped when
/// the peer fell silent.
async fn writer(
    mut w: OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    ticktime: Duration,
    link: &Link,
) -> Option<String> {
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    // What the frames in `buf` counted in the outbox.
    let mut cost = 0;
    let mut ticker = tokio::time::interval((ticktime / 4).max(Duration::from_millis(50)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut live = Liveness::new(ticktime);
    let mut wrote = false;
    let mut wrote_since_echo = false;
    let closed = link.close.notified();
    tokio::pin!(closed);
    loop {
        let out: &[u8] = tokio::select! {
            f = rx.recv() => {
                let Some(f) = f else { break };
                if f.is_empty() {
                    // The peer ticked: answer unless data went out since
                    // its previous tick.
                    if wrote_since_echo {
                        wrote_since_echo = false;
                        continue;
                    }
                    &[0, 0, 0, 0]
                } else {
                    buf.extend_from_slice(&f);
                    cost += queued_cost(f.capacity());
                    while buf.len() < 256 * 1024 {
                        match rx.try_recv() {
                            Ok(f) if f.is_empty() => {}
                            Ok(f) => {
                                buf.extend_from_slice(&f);
                                cost += queued_cost(f.capacity());
                            }
                            Err(_) => break,
                        }
                    }
                    wrote = true;
                    wrote_since_echo = true;
                    &buf
                }
            }
            now = ticker.tick() => {
                if live.silent(now, link) {
                    let _ = w.shutdown().await;
                    return Some(live.reason());
                }
                if wrote {
                    wrote = false;
                    continue;
                }
                &[0, 0, 0, 0]
            }
            _ = &mut closed => {
                let _ = w.shutdown().await;
                return None;
            }
        };
        // The write may block while the peer reads nothing (paused, or
        // flooding us without reading): keep watching it meanwhile.
        let write = w.write_all(out);
        tokio::pin!(write);
        loop {
            tokio::select! {
                r = &mut write => {
                    if r.is_err() {
                        return None;
                    }
                    break;
                }
                now = ticker.tick() => {
                    if live.silent(now, link) {
                        return Some(live.reason());
                    }
                }
                _ = &mut closed => return None,
            }
        }
        if !buf.is_empty() {
            link.outbox.sub(cost);
            cost = 0;
            buf.clear();
        }
    }
    // Senders dropped (shutdown): everything queued is written; close.
    let _ = w.flush().await;
    let _ = w.shutdown().await;
    None
}

/// Whether the peer still sends: it must send something (data or a tick)
/// at least once per `net_ticktime`, as OTP's `net_kernel` requires.
struct Liveness {
    ticktime: Duration,
    silent_after: Duration,
    last_reads: u64,
    heard_at: tokio::time::Instant,
}

impl Liveness {
    fn new(ticktime: Duration) -> Self {
        Liveness {
            ticktime,
            silent_after: ticktime.max(Duration::from_millis(200)),
            last_reads: 0,
            heard_at: tokio::time::Instant::now(),
        }
    }

    /// Called on each tick of the writer's ticker.
    fn silent(&mut self, now: tokio::time::Instant, link: &Link) -> bool {
        let reads = link.reads.load(Ordering::Relaxed);
        if reads != self.last_reads {
            self.last_reads = reads;
            self.heard_at = now;
            false
        } else {
            now.duration_since(self.heard_at) >= self.silent_after
        }
    }

    fn reason(&self) -> String {
        format!("no data or tick for {:?} (net_ticktime)", self.ticktime)
    }
}

/// Reads into one buffer and handles every whole frame in it before the
/// next read; returns why the connection ended.
async fn reader<H: Host>(
    node: &H,
    peer: &Atom,
    mut r: OwnedReadHalf,
    link: &Link,
    echo: mpsc::WeakUnboundedSender<Vec<u8>>,
) -> String {
    let max = node.max_frame();
    let metrics = node.metrics().clone();
    let budget = node.frame_budget().clone();
    let budget_wait = (node.net_ticktime() / 2).max(Duration::from_millis(100));
    let mut claim = Claim::new(budget.clone());
    let mut buf: Vec<u8> = Vec::with_capacity(READ_BUF);
    let mut start = 0;
    let closed = link.close.notified();
    tokio::pin!(closed);
    loop {
        // The size of the partial frame at the end of the buffer, once its
        // length is known.
        let mut partial = 0;
        // Every whole frame in the buffer.
        loop {
            let avail = &buf[start..];
            let Some(head) = avail.get(..4) else { break };
            let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
            if len > max {
                metrics.bad_frames.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%peer, len, max, "oversized frame: closing the connection");
                return "oversized frame".into();
            }
            let Some(body) = avail.get(4..4 + len) else {
                partial = 4 + len;
                break;
            };
            start += 4 + len;
            if len == 0 {
                if let Some(tx) = echo.upgrade() {
                    let _ = tx.send(Vec::new());
                }
                continue;
            }
            metrics.frames_in.fetch_add(1, Ordering::Relaxed);
            match crate::frame::parse(body) {
                Ok(ctrl) => {
                    if let Some(backlog) = node.dispatch(peer, ctrl) {
                        // The receiving mailbox is full: stop reading (TCP
                        // pushes back on the sender) until it drains.
                        metrics.backpressure.fetch_add(1, Ordering::Relaxed);
                        tokio::select! {
                            _ = backlog.drained() => {}
                            _ = &mut closed => return "closed".into(),
                        }
                    }
                }
                Err(e) => {
                    metrics.bad_frames.fetch_add(1, Ordering::Relaxed);
                    crate::warn_bad_input!(%peer, error = %e, len, "undecodable frame skipped");
                }
            }
        }
        // Keep the partial frame at the front.
        if start == buf.len() {
            buf.clear();
        } else if start > 0 {
            buf.drain(..start);
        }
        start = 0;
        // Room for the next read: the read buffer, or the whole partial
        // frame if longer (the excess claimed from the budget first).
        let size = partial.max(READ_BUF);
        let extra = size - READ_BUF;
        if !claim.try_grow_to(extra) {
            // Wait holding nothing: two connections that each hold part
            // of what they need cannot then wait for each other.
            if buf.capacity() > READ_BUF && buf.len() <= READ_BUF {
                buf.shrink_to(READ_BUF);
                claim.shrink_to(0);
            }
            metrics.frame_budget_waits.fetch_add(1, Ordering::Relaxed);
            tokio::select! {
                got = tokio::time::timeout(budget_wait, claim.grow_to(extra)) => if got.is_err() {
                    metrics.frame_budget_drops.fetch_add(1, Ordering::Relaxed);
                    crate::warn_bad_input!(%peer, frame = partial, budget = budget.total(), held = budget.held(), "partial frames of all connections over the memory budget: closing the connection");
                    return "partial-frame memory budget exhausted".into();
                },
                _ = &mut closed => return "closed".into(),
            }
        }
        if buf.capacity() < size {
            buf.reserve_exact(size - buf.len());
        } else if buf.capacity() > size {
            buf.shrink_to(size);
        }
        claim.shrink_to(extra);
        if link.outbox.is_high() {
            // The peer does not read what we queue for it: read no more
            // of its requests for now.
            metrics.backpressure.fetch_add(1, Ordering::Relaxed);
            tokio::select! {
                _ = tokio::time::timeout(OUTBOX_MOST_PAUSE, link.outbox.drained()) => {}
                _ = &mut closed => return "closed".into(),
            }
        }
        tokio::select! {
            biased;
            n = r.read_buf(&mut buf) => match n {
                Ok(0) => return "read: end of stream".into(),
                Ok(_) => {
                    link.reads.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => return format!("read: {e}"),
            },
            _ = &mut closed => return "closed".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer that neither reads nor sends (a paused node) is dropped
    /// after `net_ticktime` even while a write to it is blocked on a full
    /// socket buffer.
    #[tokio::test]
    async fn silent_peer_dropped_while_a_write_blocks() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let ours = TcpStream::connect(addr).await.unwrap();
        let (_paused_peer, _) = listener.accept().await.unwrap();
        let (_r, w) = ours.into_split();
        let (tx, rx) = mpsc::unbounded_channel();
        let link = Link {
            close: Arc::new(Notify::new()),
            reads: AtomicU64::new(0),
            outbox: new_outbox(),
        };
        // Far more than the socket buffers on both sides hold.
        tx.send(vec![1u8; 64 << 20]).unwrap();
        let ticktime = Duration::from_millis(400);
        let started = std::time::Instant::now();
        let why = tokio::time::timeout(Duration::from_secs(10), writer(w, rx, ticktime, &link))
            .await
            .expect("the writer gave up on the silent peer");
        assert!(why.expect("a reason").contains("no data or tick"));
        assert!(started.elapsed() >= ticktime);
        drop(tx);
    }
}
