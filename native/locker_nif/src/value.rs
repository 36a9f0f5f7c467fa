//! How keys, values and tags sit in the core.

use rustler::{Env, Term};

use smallvec::SmallVec;

use crate::term::{self, Buf};

/// A key or a promise tag: the canonical encoding of the term, kept inline
/// in the table slot when it is short (a 16-byte binary key encodes in 18
/// bytes), so that a lookup does not chase a pointer.
pub type Key = SmallVec<[u8; 24]>;

/// A stored value: the raw word of an immediate (a local pid, an atom, a
/// small integer), rebuilt for free, or the canonical encoding of anything
/// else.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// An immediate term word.
    Imm(u64),
    /// A canonical encoding.
    Enc(Box<[u8]>),
}

/// Encodes a key or tag into a stack buffer (for lookups).
#[inline]
pub fn key_buf(env: Env, t: Term) -> Buf {
    let mut buf = Buf::new();
    term::encode(env, t, &mut buf);
    buf
}

/// Encodes a key or tag for storage.
#[inline]
pub fn key(env: Env, t: Term) -> Key {
    Key::from_slice(&key_buf(env, t))
}

/// Encodes a value for storage.
#[inline]
pub fn value(env: Env, t: Term) -> Value {
    match term::immediate(t) {
        Some(raw) => Value::Imm(raw),
        None => Value::Enc(key_buf(env, t).into_vec().into_boxed_slice()),
    }
}

/// Rebuilds a stored value in `env`.
#[inline]
pub fn to_term<'a>(env: Env<'a>, v: &Value) -> Term<'a> {
    match v {
        Value::Imm(raw) => term::from_immediate(env, *raw),
        Value::Enc(bytes) => decode(env, bytes),
    }
}

/// Rebuilds a stored key or tag in `env`.
pub fn decode<'a>(env: Env<'a>, bytes: &[u8]) -> Term<'a> {
    // Only this crate writes these bytes; a failure would be a bug, and an
    // atom is a safe, visible stand-in rather than a crash of the VM.
    term::decode(env, bytes).unwrap_or_else(|| crate::atoms::locker_corrupt_term().to_term(env))
}
