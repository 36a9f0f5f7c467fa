//! Graceful shutdown on SIGTERM or SIGINT.
//!
//! ```no_run
//! # async fn demo(node: erl_node::Node) {
//! let mut stop = erl_node::shutdown::on_signal();
//! // ... serve until a signal comes ...
//! let _ = stop.changed().await;
//! node.stop(std::time::Duration::from_secs(2)).await;
//! # }
//! ```

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// A watch that turns `true` at the first SIGTERM or SIGINT.
pub fn on_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        let which = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = which, "shutting down");
        let _ = tx.send(true);
    });
    rx
}
