//! The one store of this VM.

use std::sync::{Arc, OnceLock};

use locker_core::{Config, Engine, Intervals, LeaseMap, Schedule};
use parking_lot::{Mutex, MutexGuard};

use crate::value::{Key, Value};

type Eng = Engine<Key, Value, Key>;

struct Store {
    /// When this VM's store was created (monotonic µs).
    created_at: locker_core::Micros,
    engine: Mutex<Eng>,
    leases: Arc<LeaseMap<Key, Value>>,
    /// The server's timer schedule (only the server process uses it).
    schedule: Mutex<Schedule>,
}

static STORE: OnceLock<Store> = OnceLock::new();

fn store() -> &'static Store {
    STORE.get_or_init(|| {
        let mut engine = Engine::new(Config::default());
        // Fencing tokens follow the wall clock in microseconds: a store that
        // starts empty refuses tokens issued before it started.
        let wall_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        engine.set_token_floor(wall_us);
        let leases = Arc::clone(engine.leases());
        Store {
            created_at: locker_core::clock::now(),
            engine: Mutex::new(engine),
            leases,
            schedule: Mutex::new(Schedule::new(
                Intervals::default(),
                locker_core::clock::now(),
            )),
        }
    })
}

/// Creates the store (idempotent).
pub fn init() {
    store();
}

/// Runs one state transition with the engine locked. The lock is handed
/// over fairly: a process waiting for it (a coordinator voting locally)
/// gets it before the server's next sweep chunk, so no scheduler starves.
/// Callers encode their arguments before, so the lock is held briefly.
pub fn with_engine<R>(f: impl FnOnce(&mut Eng) -> R) -> R {
    let mut guard = store().engine.lock();
    let r = f(&mut guard);
    MutexGuard::unlock_fair(guard);
    r
}

/// The lease map, for dirty reads without the engine lock.
#[inline]
pub fn leases() -> &'static LeaseMap<Key, Value> {
    &store().leases
}

/// Safe mode: refuse promises on unknown keys until `ms` after this
/// store was created (i.e. after the VM started).
pub fn abstain_after_start(ms: u64) {
    let until = store().created_at.saturating_add(locker_core::ms(ms));
    with_engine(|e| e.set_abstain_until(until));
}

/// Changes the promise TTL and whether changes are logged for replicas.
pub fn configure(promise_ttl: locker_core::Micros, log_enabled: bool) {
    with_engine(|e| {
        e.set_log_enabled(log_enabled);
        e.set_promise_ttl(promise_ttl);
    });
}

/// Runs `f` on the server's timer schedule.
pub fn with_schedule<R>(f: impl FnOnce(&mut Schedule) -> R) -> R {
    f(&mut store().schedule.lock())
}
