//! The one store of this VM.

use std::sync::{Arc, OnceLock};

use locker_core::{Config, Engine, LeaseMap};
use parking_lot::{Mutex, MutexGuard};

use crate::value::{Key, Value};

type Eng = Engine<Key, Value, Key>;

struct Store {
    engine: Mutex<Eng>,
    leases: Arc<LeaseMap<Key, Value>>,
}

static STORE: OnceLock<Store> = OnceLock::new();

fn store() -> &'static Store {
    STORE.get_or_init(|| {
        let engine = Engine::new(Config::default());
        let leases = Arc::clone(engine.leases());
        Store {
            engine: Mutex::new(engine),
            leases,
        }
    })
}

/// Creates the store (idempotent).
pub fn init() {
    store();
}

/// The engine, locked for one state transition.
pub fn engine() -> MutexGuard<'static, Eng> {
    store().engine.lock()
}

/// The lease map, for dirty reads without the engine lock.
#[inline]
pub fn leases() -> &'static LeaseMap<Key, Value> {
    &store().leases
}

/// Changes the promise TTL and whether changes are logged for replicas.
pub fn configure(promise_ttl: locker_core::Micros, log_enabled: bool) {
    let mut e = engine();
    e.set_log_enabled(log_enabled);
    e.set_promise_ttl(promise_ttl);
}
