//! `CompactBytes`: an immutable byte string in 24 bytes, kept inline up to
//! 22 bytes (a 16-byte binary key encodes in 18) and on the heap beyond.
//! Keys and values of the store are these, so that a lease entry stays
//! small and a lookup of a short key does not chase a pointer.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

const INLINE: usize = 22;
const HEAP: u8 = 0xff;

/// Bytes 0..22: data (inline); byte 23: length, or `HEAP` when bytes 0..8
/// hold a pointer and 8..16 a length of a leaked `Box<[u8]>`.
pub struct CompactBytes([u8; 24]);

// SAFETY: owns its heap bytes exclusively, like Box<[u8]>.
unsafe impl Send for CompactBytes {}
// SAFETY: immutable after construction.
unsafe impl Sync for CompactBytes {}

impl CompactBytes {
    /// Copies `bytes`.
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

    fn heap_parts(&self) -> Option<(*mut u8, usize)> {
        (self.0[23] == HEAP).then(|| {
            let ptr = u64::from_ne_bytes(self.0[0..8].try_into().expect("8 bytes")) as usize;
            let len = u64::from_ne_bytes(self.0[8..16].try_into().expect("8 bytes")) as usize;
            (ptr as *mut u8, len)
        })
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
