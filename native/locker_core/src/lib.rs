//! The locker store, free of any BEAM type.
//!
//! `locker_core` holds the state of one locker node: leases (key → value
//! with a millisecond-precision expiry), write promises (phase one of the
//! two-phase write), the expiry index, the transaction log that masters
//! push to replicas, and the bookkeeping of processes waiting for a key to
//! appear or to be released. The same core backs the Rustler NIF (the BEAM
//! node's store) and `lockerd` (the Rust C-node).
//! Both decode the wire protocol's requests and log entries, and build its
//! replies, through [`protocol`] (once, over a small trait per term type),
//! and serve requests with [`Engine::handle`].
//!
//! Keys, values and promise tags are generic: both the NIF and lockerd
//! store keys and values as [`CompactBytes`] holding a canonical encoding
//! of the Erlang term, whose byte equality is Erlang's `=:=` (each store
//! has its own encoding); lockerd keeps promise tags as decoded terms. Time is injected as monotonic
//! microseconds ([`Micros`]) so every rule is testable without a clock.
//!
//! ```
//! use locker_core::{Engine, Expect};
//! let mut e: Engine<&str, u32, u64> = Engine::new(Default::default());
//! let now = 1_000_000;
//! e.get_write_lock("k", Expect::Absent, 7, now).unwrap();
//! e.write(&7, "k", 42, 2_000, now).unwrap();
//! assert_eq!(e.leases().get_valid("k", now + 1_999_999), Some(42));
//! assert_eq!(e.leases().get_valid("k", now + 2_000_000), None);
//! ```

#![deny(missing_docs)]

pub mod clock;
mod compact;
pub mod coordinator;
mod engine;
mod expiry;
mod lease_map;
pub mod membership;
mod promises;
pub mod protocol;
pub mod quorum;
mod translog;
mod waiters;

pub use compact::CompactBytes;
pub use engine::{
    CommitError, Config, Engine, Expect, LockError, ReleaseError, Summary, SweepReport,
    WAKEUP_MARGIN,
};
pub use lease_map::{Lease, LeaseMap};
pub use translog::LogEntry;
pub use waiters::{WaitKind, WaitOutcome, WaiterId, Wake};

/// Monotonic time in microseconds. Only differences matter.
pub type Micros = u64;

/// Converts a lease length in milliseconds to [`Micros`], saturating.
pub fn ms(ms: u64) -> Micros {
    ms.saturating_mul(1_000)
}
