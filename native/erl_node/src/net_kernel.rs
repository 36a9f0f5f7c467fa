//! A registered `net_kernel` that answers `{is_auth, Node}` with `yes`, so
//! that `net_adm:ping/1` gives `pong`. Other calls are logged and answered
//! `{error, {unknown_request, Req}}`.
//!
//! ```no_run
//! # async fn demo(node: erl_node::Node) -> Result<(), String> {
//! erl_node::net_kernel::spawn(&node)?;
//! assert!(node.whereis("net_kernel").is_some());
//! # Ok(()) }
//! ```

use crate::node::Node;
use crate::process::Signal;
use crate::term::Term;

/// Starts the process.
pub fn spawn(node: &Node) -> Result<(), String> {
    let mut mb = node.spawn(Some("net_kernel"))?;
    let node = node.clone();
    tokio::spawn(async move {
        while let Some(sig) = mb.recv().await {
            let Signal::Message { msg, .. } = sig else {
                continue;
            };
            let Some((pid, tag, req)) = msg.as_gen_call() else {
                tracing::debug!(msg = %msg.display(100), "net_kernel: message ignored");
                continue;
            };
            let reply = match req.as_tuple() {
                Some([op, _]) if op.is_atom("is_auth") => Term::static_atom("yes"),
                _ => {
                    crate::warn_bad_input!(request = %req.display(200), "net_kernel: unknown request");
                    Term::tuple(vec![
                        Term::static_atom("error"),
                        Term::tuple(vec![Term::static_atom("unknown_request"), req.clone()]),
                    ])
                }
            };
            node.send_reply(pid, tag, reply);
        }
    });
    Ok(())
}
