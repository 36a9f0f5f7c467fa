//! `lockerd`: a locker node as a Rust C-node, on the [`erl_node`]
//! runtime. The Rust client library is the `locker_client` crate.
//!
//! | module | concern |
//! | --- | --- |
//! | [`locker`], [`stored`] | the registered `locker` server; keys and values as stored |
//! | [`metrics`] | the locker's request counters and the `/metrics` endpoint |
//! | [`cli`] | the `lockerd` command line and the cookie lookup |
//!
//! The node itself (epmd, handshake, connections, processes, terms) is
//! [`erl_node`], re-exported here with its most used types.

#![deny(missing_docs)]

pub mod cli;
pub mod locker;
pub mod membership;
pub mod metrics;
pub mod stored;
pub mod wire;

pub use erl_node;
pub use erl_node::{Atom, HeldLimits, Mailbox, Node, NodeConfig, Pid, Ref, Signal, Term};
