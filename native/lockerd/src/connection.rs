//! One connection after the handshake: a reader that parses frames and
//! dispatches them, and a writer that batches queued frames into few
//! writes and sends ticks.
//!
//! erl_dist sends no ticks; here a tick goes out whenever nothing was
//! written for a quarter of `net_ticktime`, and a peer silent for a whole
//! `net_ticktime` is dropped. A tick received while nothing was written
//! since the last timer tick is answered with a tick, so a peer with a
//! shorter `net_ticktime` than ours keeps an idle link up too. Frames over `max_frame` close the
//! connection (the rest of the stream cannot be trusted); frames that do
//! not parse are logged and skipped.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};

use crate::node::Node;
use crate::term::Atom;

/// Starts the reader and writer of a connection.
#[allow(clippy::too_many_arguments)]
pub(crate) fn spawn(
    node: Node,
    peer: Atom,
    conn_id: u64,
    stream: TcpStream,
    tx: &mpsc::UnboundedSender<Vec<u8>>,
    rx: mpsc::UnboundedReceiver<Vec<u8>>,
    close: Arc<Notify>,
    writers: Arc<AtomicUsize>,
    writers_done: Arc<Notify>,
) {
    let (r, w) = stream.into_split();
    let tick = node.config().net_ticktime;
    let echo = tx.downgrade();
    writers.fetch_add(1, Ordering::AcqRel);
    let close_r = close.clone();
    let (n2, p2) = (node.clone(), peer.clone());
    tokio::spawn(async move {
        writer(w, rx, tick / 4, close).await;
        writers.fetch_sub(1, Ordering::AcqRel);
        writers_done.notify_one();
        // A writer that stops (socket error, replaced) ends the connection.
        crate::peers::connection_ended(&n2, &p2, conn_id);
    });
    tokio::spawn(async move {
        let why = reader(&node, &peer, r, tick, close_r.clone(), echo).await;
        tracing::info!(%peer, reason = %why, "connection closed");
        close_r.notify_one();
        crate::peers::connection_ended(&node, &peer, conn_id);
    });
}

async fn writer(
    mut w: OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    tick_every: Duration,
    close: Arc<Notify>,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut ticker = tokio::time::interval(tick_every.max(Duration::from_millis(50)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut wrote = false;
    let mut wrote_since_echo = false;
    let closed = close.notified();
    tokio::pin!(closed);
    loop {
        tokio::select! {
            f = rx.recv() => {
                let Some(f) = f else { break };
                if f.is_empty() {
                    // The peer ticked: answer unless data went out since
                    // its previous tick.
                    if !wrote_since_echo && w.write_all(&[0, 0, 0, 0]).await.is_err() {
                        return;
                    }
                    wrote_since_echo = false;
                    continue;
                }
                buf.extend_from_slice(&f);
                while buf.len() < 256 * 1024 {
                    match rx.try_recv() {
                        Ok(f) if f.is_empty() => {}
                        Ok(f) => buf.extend_from_slice(&f),
                        Err(_) => break,
                    }
                }
                if w.write_all(&buf).await.is_err() {
                    return;
                }
                buf.clear();
                wrote = true;
                wrote_since_echo = true;
            }
            _ = ticker.tick() => {
                if !wrote && w.write_all(&[0, 0, 0, 0]).await.is_err() {
                    return;
                }
                wrote = false;
            }
            _ = &mut closed => {
                let _ = w.shutdown().await;
                return;
            }
        }
    }
    // Senders dropped (shutdown): everything queued is written; close.
    let _ = w.flush().await;
    let _ = w.shutdown().await;
}

async fn reader(
    node: &Node,
    peer: &Atom,
    r: OwnedReadHalf,
    ticktime: Duration,
    close: Arc<Notify>,
    echo: mpsc::WeakUnboundedSender<Vec<u8>>,
) -> String {
    let mut r = BufReader::with_capacity(64 * 1024, r);
    let max = node.config().max_frame;
    let metrics = node.metrics().clone();
    let mut body = Vec::new();
    let closed = close.notified();
    tokio::pin!(closed);
    loop {
        let len = tokio::select! {
            x = tokio::time::timeout(ticktime, r.read_u32()) => match x {
                Err(_) => return format!("no data or tick for {ticktime:?} (net_ticktime)"),
                Ok(Err(e)) => return format!("read: {e}"),
                Ok(Ok(n)) => n as usize,
            },
            _ = &mut closed => return "closed".into(),
        };
        if len == 0 {
            if let Some(tx) = echo.upgrade() {
                let _ = tx.send(Vec::new());
            }
            continue;
        }
        if len > max {
            metrics.bad_frames.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%peer, len, max, "oversized frame: closing the connection");
            return "oversized frame".into();
        }
        body.resize(len, 0);
        match tokio::time::timeout(ticktime, r.read_exact(&mut body)).await {
            Err(_) => return "frame body timed out".into(),
            Ok(Err(e)) => return format!("read: {e}"),
            Ok(Ok(_)) => {}
        }
        metrics.frames_in.fetch_add(1, Ordering::Relaxed);
        match crate::frame::parse(&body) {
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
                tracing::warn!(%peer, error = %e, len, "undecodable frame skipped");
            }
        }
        if body.capacity() > 1 << 20 {
            body = Vec::new();
        }
    }
}
