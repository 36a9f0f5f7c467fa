//! `locker_client`: a Rust client for [locker] clusters, wire-compatible
//! with the Erlang `locker` application.
//!
//! A [`Client`] is a hidden Erlang node of its own (on the `erl_node`
//! runtime): it connects to the masters, runs `locker.erl`'s two-phase
//! coordinator (the same requests and replies, the rules of
//! `locker_core::coordinator::TwoPhase`), and can own names in
//! `Locker.Registry` ([`Client::register_name`]). Keys and values are
//! any [`serde`] types, mapped to Erlang terms as [`to_term`] documents;
//! [`RawTerm`] passes an Erlang term (a pid, say) as it is.
//!
//! ```no_run
//! use std::time::Duration;
//! use locker_client::{Client, Error};
//!
//! #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
//! struct Owner { host: String, worker: u32 }
//!
//! # async fn demo() -> Result<(), Error> {
//! let client = Client::builder("svc@127.0.0.1")
//!     .cookie("secret")
//!     .masters(["a@127.0.0.1", "b@127.0.0.1", "c@127.0.0.1"]) // W = 2
//!     .start()
//!     .await?;
//! let me = Owner { host: "web-1".into(), worker: 3 };
//! let (lease, timeout) = (Duration::from_secs(10), Duration::from_secs(5));
//! match client.lock(&("job", 42), &me, lease, timeout).await {
//!     Ok(q) => println!("locked: {} of {} masters promised", q.votes, client.masters().len()),
//!     Err(Error::NoQuorum) => println!("held by someone else"),
//!     Err(e) => return Err(e),
//! }
//! let owner: Option<Owner> = client.dirty_read(&("job", 42), timeout).await?;
//! assert_eq!(owner, Some(me));
//! # Ok(()) }
//! ```
//!
//! Connections: [`ClientBuilder::start`] fails when no master can be
//! reached within its timeout, with [`Error::BadCookie`] when the cookie
//! was refused. Masters that are down are retried in the background with
//! exponential backoff and jitter (a wrong cookie costs each BEAM node a
//! log line per attempt, so attempts are spaced); requests go only to the
//! masters connected at the time, the others counting as down.
//!
//! [locker]: https://github.com/wooga/locker

#![deny(missing_docs)]

mod builder;
mod client;
mod de;
mod error;
pub mod groups;
mod links;
mod raw;
mod registry;
mod ser;
mod view;

pub use builder::{majority, ClientBuilder};
pub use client::{Client, Quorum};
pub use de::from_term;
pub use error::Error;
pub use groups::Groups;
pub use raw::RawTerm;
pub use registry::{default_margin, Caller, Incoming, RegisteredName};
pub use ser::to_term;

/// The Erlang node runtime the client runs on ([`Client::node`]).
pub use erl_node;
/// The Erlang term and identifier types keys, values and messages are
/// made of (from the `erl_node` runtime).
pub use erl_node::term::{Atom, Pid, Term};

/// The README's examples, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// The project README's Rust example, compiled as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ProjectReadmeDoctests;
