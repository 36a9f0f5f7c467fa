//! [`CompactBytes`]: an immutable byte string in 24 bytes, kept inline up
//! to [`CompactBytes::INLINE`] (22) bytes and on the heap beyond.
//!
//! Both stores keep their keys and values as these, holding a canonical
//! encoding of the Erlang term whose byte equality is `=:=`: the NIF's own
//! encoding (a 16-byte binary key takes 18 bytes), lockerd's external
//! format with a short form for pids (a 16-byte binary takes 21 bytes, a
//! pid 17). A short key or value then costs no allocation, so a lease
//! entry stays small, and a lookup of a short key does not chase a pointer.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

const INLINE: usize = 22;
const HEAP: u8 = 0xff;

/// An immutable byte string in 24 bytes: inline up to
/// [`CompactBytes::INLINE`] bytes, one exact-size heap allocation beyond.
///
/// Equality, hashing and [`Borrow<[u8]>`](Borrow) are those of the byte
/// slice, so a map keyed by `CompactBytes` can be searched with a `&[u8]`.
///
/// ```
/// use locker_core::CompactBytes;
/// let short = CompactBytes::new(b"key");
/// assert!(short.is_inline());
/// assert_eq!(&*short, b"key");
/// let long = CompactBytes::new(&[7; 40]);
/// assert!(!long.is_inline());
/// assert_eq!(long.len(), 40);
/// ```
// Layout: bytes 0..22 hold the data (inline) and byte 23 its length, or
// byte 23 is `HEAP` and bytes 0..8 hold the pointer, 8..16 the length of a
// leaked `Box<[u8]>`.
pub struct CompactBytes([u8; 24]);

// SAFETY: owns its heap bytes exclusively, like Box<[u8]>.
unsafe impl Send for CompactBytes {}
// SAFETY: immutable after construction.
unsafe impl Sync for CompactBytes {}

impl CompactBytes {
    /// The longest byte string kept inline (without an allocation).
    pub const INLINE: usize = INLINE;

    /// Copies `bytes` (inline when at most [`Self::INLINE`] long).
    pub fn new(bytes: &[u8]) -> Self {
        let mut raw = [0u8; 24];
        if bytes.len() <= INLINE {
            raw[..bytes.len()].copy_from_slice(bytes);
            raw[23] = bytes.len() as u8;
        } else {
            let boxed: Box<[u8]> = bytes.into();
            let len = boxed.len();
            let ptr = Box::into_raw(boxed) as *mut u8 as usize;
            raw[0..8].copy_from_slice(&(ptr as u64).to_ne_bytes());
            raw[8..16].copy_from_slice(&(len as u64).to_ne_bytes());
            raw[23] = HEAP;
        }
        Self(raw)
    }

    #[inline]
    fn heap_parts(&self) -> Option<(*mut u8, usize)> {
        (self.0[23] == HEAP).then(|| {
            let ptr = u64::from_ne_bytes(self.0[0..8].try_into().expect("8 bytes")) as usize;
            let len = u64::from_ne_bytes(self.0[8..16].try_into().expect("8 bytes")) as usize;
            (ptr as *mut u8, len)
        })
    }

    /// Whether the bytes are kept inline (no heap allocation).
    #[inline]
    pub fn is_inline(&self) -> bool {
        self.0[23] != HEAP
    }

    /// The bytes.
    #[inline]
    pub fn as_slice(&self) -> &[u8] {
        match self.heap_parts() {
            // SAFETY: pointer and length of a live Box<[u8]> owned by self.
            Some((ptr, len)) => unsafe { std::slice::from_raw_parts(ptr, len) },
            None => &self.0[..self.0[23] as usize],
        }
    }
}

impl Drop for CompactBytes {
    fn drop(&mut self) {
        if let Some((ptr, len)) = self.heap_parts() {
            // SAFETY: rebuilds the Box leaked in `new`, exactly once.
            drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr, len)) });
        }
    }
}

impl Clone for CompactBytes {
    fn clone(&self) -> Self {
        Self::new(self.as_slice())
    }
}

impl Deref for CompactBytes {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl Borrow<[u8]> for CompactBytes {
    #[inline]
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

impl PartialEq for CompactBytes {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for CompactBytes {}

impl Hash for CompactBytes {
    /// Hashes as the byte slice does (the `Borrow<[u8]>` contract).
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state);
    }
}

impl std::fmt::Debug for CompactBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("CompactBytes")
            .field(&self.as_slice())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn inline_up_to_the_limit_heap_beyond() {
        for len in 0..=64usize {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + len) as u8).collect();
            let c = CompactBytes::new(&bytes);
            assert_eq!(c.as_slice(), &bytes[..], "len {len}");
            assert_eq!(c.len(), len);
            assert_eq!(c.is_inline(), len <= CompactBytes::INLINE, "len {len}");
            let d = c.clone();
            assert_eq!(d, c);
            assert_eq!(d.as_slice(), &bytes[..]);
            assert_eq!(d.is_inline(), c.is_inline());
        }
    }

    #[test]
    fn a_length_byte_of_0xff_in_the_data_is_still_inline() {
        // Inline data never reaches byte 23: only the marker does.
        let c = CompactBytes::new(&[0xff; CompactBytes::INLINE]);
        assert!(c.is_inline());
        assert_eq!(c.as_slice(), &[0xff; CompactBytes::INLINE][..]);
    }

    #[test]
    fn equality_and_hash_are_the_bytes() {
        let s = ahash::RandomState::new();
        for bytes in [&b""[..], b"a", &[1; 22], &[1; 23], &[2; 100]] {
            let c = CompactBytes::new(bytes);
            assert_eq!(s.hash_one(&c), s.hash_one(bytes));
            assert_eq!(c, CompactBytes::new(bytes));
        }
        assert_ne!(CompactBytes::new(&[1; 22]), CompactBytes::new(&[1; 23]));
        assert_ne!(CompactBytes::new(b"ab"), CompactBytes::new(b"ab\0"));
        let mut m: HashMap<CompactBytes, u32, ahash::RandomState> = HashMap::default();
        m.insert(CompactBytes::new(b"short"), 1);
        m.insert(CompactBytes::new(&[9; 30]), 2);
        assert_eq!(m.get(&b"short"[..]), Some(&1));
        assert_eq!(m.get(&[9u8; 30][..]), Some(&2));
        assert_eq!(m.get(&[9u8; 29][..]), None);
    }

    #[test]
    fn size_and_threads() {
        assert_eq!(std::mem::size_of::<CompactBytes>(), 24);
        let c = CompactBytes::new(&[5; 50]);
        let d = std::thread::spawn(move || c).join().unwrap();
        assert_eq!(d.as_slice(), &[5; 50][..]);
        assert_eq!(
            format!("{:?}", CompactBytes::new(b"\x01")),
            "CompactBytes([1])"
        );
    }
}
