//! How keys, values and tags sit in the core: the canonical encoding of
//! the term (byte equality is `=:=`), in 24 bytes when short.

use locker_core::CompactBytes;
use rustler::{Env, Term};

use crate::term::{self, Buf};

/// A key, value or promise tag: the canonical encoding of the term.
pub type Key = CompactBytes;

/// Values are stored like keys; an immediate (a local pid, an atom, a
/// small integer) is its 9-byte encoding, rebuilt without decoding.
pub type Value = CompactBytes;

/// Encodes a key or tag into a stack buffer (for lookups).
#[inline]
pub(crate) fn key_buf(env: Env, t: Term) -> Buf {
    let mut buf = Buf::new();
    term::encode(env, t, &mut buf);
    buf
}

/// Encodes a key, tag or value for storage.
#[inline]
pub fn key(env: Env, t: Term) -> Key {
    CompactBytes::new(&key_buf(env, t))
}

/// Encodes a value for storage.
#[inline]
pub fn value(env: Env, t: Term) -> Value {
    key(env, t)
}

/// Rebuilds a stored value in `env`.
#[inline]
pub fn to_term<'a>(env: Env<'a>, v: &Value) -> Term<'a> {
    match term::immediate_of(v) {
        Some(raw) => term::from_immediate(env, raw),
        None => crate::term_cache::lookup(env, v).unwrap_or_else(|| decode(env, v)),
    }
}

/// Rebuilds a stored key or tag in `env`.
pub fn decode<'a>(env: Env<'a>, bytes: &[u8]) -> Term<'a> {
    // Only this crate writes these bytes; a failure would be a bug, and an
    // atom is a safe, visible stand-in rather than a crash of the VM.
    term::decode(env, bytes).unwrap_or_else(|| crate::atoms::locker_corrupt_term().to_term(env))
}
