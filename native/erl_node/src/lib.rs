//! `erl_node`: a distributed Erlang node in Rust (a C-node runtime on
//! tokio). It registers with epmd, runs the handshake both ways, keeps
//! connections with ticks and backpressure, and hosts processes with
//! mailboxes, registered names, monitors and links, speaking the
//! distribution protocol of OTP 25 as a hidden node.
//!
//! It knows nothing of what runs on it: the application starts its
//! processes with [`Node::spawn`] (registered names included), answers
//! `rpc:call` through [`Node::set_rpc_handler`], and shows [`metrics`]
//! where it likes.
//!
//! | module | concern |
//! | --- | --- |
//! | [`term`], [`codec`] | Erlang terms with `=:=` as equality; external term format |
//! | [`frame`] | distribution frames and control messages |
//! | [`epmd`], [`handshake`] | registering, looking up, and the handshake (erl_dist) |
//! | [`node`], [`process`] | the node: processes, monitors, links, dispatch |
//! | `peers`, `connection`, `budget`, `watermark` | connections: queueing, ticks, memory bounds, backpressure |
//! | [`rpc`], [`net_kernel`] | `rpc:call` to the application's handler; `net_adm:ping` |
//! | [`metrics`], [`shutdown`], [`log_limit`] | operations; warnings about bad input bounded |
//!
//! Modules depend on each other in one direction: `node` on the
//! connection table, the connections, the process table and `rpc`, which
//! reach the node through traits it implements.
//!
//! ```no_run
//! use std::sync::Arc;
//! use erl_node::metrics::Metrics;
//! use erl_node::{Node, NodeConfig, Signal, Term};
//!
//! # async fn demo() -> Result<(), String> {
//! let node = Node::start(NodeConfig::new("echo@127.0.0.1", "cookie"), Arc::new(Metrics::default())).await?;
//! erl_node::net_kernel::spawn(&node)?;
//! // `gen_server:call({echo, 'echo@127.0.0.1'}, Msg)` from a BEAM node gets Msg back.
//! let mut mb = node.spawn(Some("echo"))?;
//! while let Some(sig) = mb.recv().await {
//!     if let Signal::Message { msg, .. } = sig {
//!         if let Some((pid, tag, req)) = msg.as_gen_call() {
//!             node.send_reply(pid, tag, req.clone());
//!         }
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! `native/erl_node/README.md` records what erl_dist 0.8 lacks and how
//! each gap is worked around.

#![deny(missing_docs)]

mod budget;
pub mod codec;
mod connection;
pub mod epmd;
pub mod frame;
pub mod handshake;
pub mod log_limit;
pub mod metrics;
pub mod net_kernel;
pub mod node;
mod peers;
pub mod process;
pub mod rpc;
pub mod shutdown;
pub mod term;
mod watermark;

pub use node::{ConnectError, Node, NodeConfig};
pub use process::{HeldLimits, Mailbox, Signal};
pub use rpc::RpcHandler;
pub use term::{Atom, Pid, Ref, Term};

#[doc(hidden)]
pub mod __private {
    pub use tracing;
}
