//! `lockerd`: a locker node as a Rust C-node, and a client library for
//! Rust services in a locker cluster.
//!
//! The crate is layered like a small node runtime:
//!
//! | module | concern |
//! | --- | --- |
//! | [`term`], [`codec`] | Erlang terms with `=:=` as equality; external term format |
//! | [`frame`] | distribution frames and control messages |
//! | [`epmd`], [`handshake`] | registering, looking up, and the handshake (erl_dist) |
//! | [`node`], [`peers`], [`connection`], [`process`] | the node: connections, ticks, processes, monitors, links |
//! | [`locker`], [`stored`] | the registered `locker` server; keys and values as stored |
//! | [`rpc`], [`net_kernel`] | `rpc:call` of `locker:dirty_read/1`; `net_adm:ping` |
//! | [`metrics`], [`shutdown`], [`cli`], [`log_limit`] | operations; warnings about bad input bounded |
//! | [`client`] | the Rust client API: coordinator and `Locker.Registry` names |
//!
//! `native/lockerd/README.md` records what erl_dist 0.8 lacks and how each
//! gap is worked around.

#![deny(missing_docs)]

mod budget;
pub mod cli;
pub mod client;
pub mod codec;
pub mod connection;
pub mod epmd;
pub mod frame;
pub mod handshake;
pub mod locker;
pub mod log_limit;
pub mod metrics;
pub mod net_kernel;
pub mod node;
pub mod peers;
pub mod process;
pub mod rpc;
pub mod shutdown;
pub mod stored;
pub mod term;
mod watermark;

pub use node::{Node, NodeConfig};
pub use process::{HeldLimits, Mailbox, Signal};
pub use term::{Atom, Pid, Ref, Term};
