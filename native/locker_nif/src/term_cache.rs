//! Decoded copies of stored values that only external term format can
//! rebuild (a pid of another node is the common one: every
//! `Locker.Registry.whereis_name/1` of a name owned elsewhere reads one).
//! Each is decoded once into a process-independent environment; a read
//! then copies it into the caller's heap (`enif_make_copy`), which costs a
//! fraction of `binary_to_term`.

use std::collections::HashMap;
use std::sync::OnceLock;

use locker_core::CompactBytes;
use parking_lot::RwLock;
use rustler::sys::*;
use rustler::{Env, Term};

use crate::term;

/// Values larger than this are decoded each time (copying them would cost
/// about as much).
const MAX_BYTES: usize = 96;
/// The cache is dropped and restarted past this many values.
const MAX_ENTRIES: usize = 65_536;

struct Decoded {
    env: *mut ErlNifEnv,
    term: ErlNifTerm,
}

// SAFETY: the environment is process-independent and, once the term is
// built, only read (copied from) by any thread; freed once, on drop.
unsafe impl Send for Decoded {}
// SAFETY: as above: shared read-only.
unsafe impl Sync for Decoded {}

impl Drop for Decoded {
    fn drop(&mut self) {
        // SAFETY: allocated by enif_alloc_env in `decode_owned`, freed once.
        unsafe { enif_free_env(self.env) }
    }
}

type Cache = RwLock<HashMap<CompactBytes, Decoded, ahash::RandomState>>;

static CACHE: OnceLock<Cache> = OnceLock::new();

fn cache() -> &'static Cache {
    CACHE.get_or_init(|| RwLock::new(HashMap::default()))
}

fn decode_owned(payload: &[u8]) -> Option<Decoded> {
    // SAFETY: a fresh environment; binary_to_term in safe mode builds the
    // term in it (or fails, and the environment is freed).
    unsafe {
        let env = enif_alloc_env();
        if env.is_null() {
            return None;
        }
        let mut t = ErlNifTerm::default();
        let used = enif_binary_to_term(
            env,
            payload.as_ptr(),
            payload.len(),
            &mut t,
            ERL_NIF_BIN2TERM_SAFE,
        );
        let d = Decoded { env, term: t };
        (used == payload.len()).then_some(d)
    }
}

/// The value stored as `bytes`, rebuilt in `env` from the cache, if it is
/// a small ETF-stored value; `None` for everything else.
pub fn lookup<'a>(env: Env<'a>, bytes: &CompactBytes) -> Option<Term<'a>> {
    let payload = term::etf_payload(bytes)?;
    if bytes.len() > MAX_BYTES {
        return None;
    }
    let copy = |d: &Decoded| {
        // SAFETY: d.term lives in d.env, which outlives this call (the
        // read or write guard is held); the copy is made in `env`.
        unsafe { Term::new(env, enif_make_copy(env.as_c_arg(), d.term)) }
    };
    if let Some(d) = cache().read().get(bytes) {
        return Some(copy(d));
    }
    let d = decode_owned(payload)?;
    let mut w = cache().write();
    if w.len() >= MAX_ENTRIES {
        w.clear();
    }
    let d = w.entry(bytes.clone()).or_insert(d);
    Some(copy(d))
}
