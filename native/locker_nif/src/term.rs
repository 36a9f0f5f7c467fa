//! A canonical byte encoding of Erlang terms: two terms are `=:=` exactly
//! when their encodings are equal bytes.
//!
//! - Immediates (atoms, small integers, local pids and ports, `[]`) are
//!   stored as their raw term word: for immediates, `=:=` is word equality,
//!   and the word stays valid in every environment of this VM (atoms are
//!   never collected; pids and ports are plain numbers).
//! - Binaries, floats, tuples, lists and maps are walked; map pairs are
//!   sorted by the encoding of their key, so equal maps encode alike
//!   whatever their internal order. `-0.0` is folded into `0.0` when this
//!   VM considers them `=:=` (OTP < 27).
//! - Everything else (big integers, remote pids and ports, references,
//!   funs, bitstrings) and anything nested deeper than [`MAX_DEPTH`] is
//!   kept as the VM's own external term format, made canonical by
//!   [`canonical_etf`] (`term_to_binary` keeps `-0.0`, a fun's creator
//!   pid and a reference's trailing zero words, which `=:=` ignores).
//!
//! The store never creates an atom: decoding only rebuilds terms this VM
//! already made, and `binary_to_term` runs in safe mode.

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, Ordering};

use rustler::sys::*;
use rustler::{Env, Term};
use smallvec::SmallVec;

/// Encoded terms up to this size are built on the stack.
pub type Buf = SmallVec<[u8; 64]>;

const IMM: u8 = 1;
const BIN: u8 = 2;
const FLOAT: u8 = 3;
const TUPLE: u8 = 4;
const CONS: u8 = 5;
const MAP: u8 = 6;
const ETF: u8 = 7;

/// Nesting deeper than this is stored as external term format, so that
/// neither encoding nor decoding can exhaust the scheduler's stack.
pub const MAX_DEPTH: u32 = 64;

static FOLD_NEG_ZERO: AtomicBool = AtomicBool::new(true);

/// Call once at load: whether `0.0 =:= -0.0` on this VM.
pub fn init(env: Env) {
    unsafe {
        let a = enif_make_double(env.as_c_arg(), 0.0);
        let b = enif_make_double(env.as_c_arg(), -0.0);
        let same = Term::new(env, a) == Term::new(env, b);
        FOLD_NEG_ZERO.store(same, Ordering::Relaxed);
    }
}

/// The machine word of a term.
#[inline]
fn word(t: ErlNifTerm) -> u64 {
    // SAFETY: ErlNifTerm is a repr(transparent) wrapper of a usize.
    unsafe { std::mem::transmute::<ErlNifTerm, usize>(t) as u64 }
}

/// The term of a machine word (only for words taken from live terms).
#[inline]
fn from_word(w: u64) -> ErlNifTerm {
    // SAFETY: as in `word`; callers only pass words of immediates.
    unsafe { std::mem::transmute::<usize, ErlNifTerm>(w as usize) }
}

#[inline]
fn is_immediate(raw: ErlNifTerm) -> bool {
    // BEAM tag bits: 0b11 is an immediate (atom, small int, local pid or
    // port, nil); 0b01 a list cell; 0b10 a boxed term.
    word(raw) & 3 == 3
}

#[inline]
fn put_len(out: &mut Buf, n: usize) {
    if n < 0x80 {
        out.push(n as u8);
        return;
    }
    let mut n = n as u64;
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn get_len(input: &[u8], pos: &mut usize) -> Option<usize> {
    let mut n: u64 = 0;
    let mut shift = 0;
    loop {
        let byte = *input.get(*pos)?;
        *pos += 1;
        n |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return usize::try_from(n).ok();
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
}

/// Appends the canonical encoding of `term` to `out`.
#[inline]
pub fn encode(env: Env, term: Term, out: &mut Buf) {
    let raw = term.as_c_arg();
    // The common key, a binary, without asking the term's type first
    // (`enif_inspect_binary` refuses anything else, and bitstrings that
    // are not whole bytes, which `encode_at` then stores as ETF).
    if !is_immediate(raw) {
        let mut bin = MaybeUninit::<ErlNifBinary>::uninit();
        // SAFETY: `raw` is a live term of `env`; `bin` is only read when
        // the call succeeded and filled it.
        unsafe {
            if enif_inspect_binary(env.as_c_arg(), raw, bin.as_mut_ptr()) != 0 {
                let bin = bin.assume_init();
                out.push(BIN);
                put_len(out, bin.size);
                out.extend_from_slice(std::slice::from_raw_parts(bin.data, bin.size));
                return;
            }
        }
    }
    encode_at(env, raw, out, 0);
}

fn encode_etf(env: Env, raw: ErlNifTerm, out: &mut Buf) {
    unsafe {
        let mut bin = MaybeUninit::<ErlNifBinary>::uninit();
        if enif_term_to_binary(env.as_c_arg(), raw, bin.as_mut_ptr()) == 0 {
            // Only fails on allocation failure; store an encoding that can
            // never equal a real term rather than panic in the VM.
            out.push(0);
            return;
        }
        let mut bin = bin.assume_init();
        let data = std::slice::from_raw_parts(bin.data, bin.size);
        let canonical = canonical_etf(data);
        let data = canonical.as_deref().unwrap_or(data);
        out.push(ETF);
        put_len(out, data.len());
        out.extend_from_slice(data);
        enif_release_binary(&mut bin);
    }
}

/// A reader over external term format bytes.
struct Etf<'a> {
    src: &'a [u8],
    pos: usize,
}

impl<'a> Etf<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let bytes = self.src.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(bytes)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<usize> {
        Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?) as usize)
    }
    fn u32(&mut self) -> Option<usize> {
        usize::try_from(u32::from_be_bytes(self.take(4)?.try_into().ok()?)).ok()
    }
    /// Copies `n` bytes to `out`.
    fn copy(&mut self, n: usize, out: &mut Vec<u8>) -> Option<()> {
        out.extend_from_slice(self.take(n)?);
        Some(())
    }
    /// Copies a length field of `width` bytes and that many more bytes.
    fn copy_counted(&mut self, width: usize, out: &mut Vec<u8>) -> Option<usize> {
        let n = if width == 1 {
            self.u8()? as usize
        } else if width == 2 {
            self.u16()?
        } else {
            self.u32()?
        };
        out.extend_from_slice(&self.src[self.pos - width..self.pos]);
        self.copy(n, out)?;
        Some(n)
    }
    /// Copies one atom (tag included).
    fn copy_atom(&mut self, out: &mut Vec<u8>) -> Option<()> {
        let tag = self.u8()?;
        out.push(tag);
        match tag {
            100 | 118 => self.copy_counted(2, out).map(drop), // ATOM_EXT, ATOM_UTF8_EXT
            115 | 119 => self.copy_counted(1, out).map(drop), // SMALL_ATOM(_UTF8)_EXT
            _ => None,
        }
    }
    /// Copies one term that contains no other term but an atom (its tag
    /// already copied), canonically.
    fn copy_leaf(&mut self, tag: u8, out: &mut Vec<u8>) -> Option<()> {
        match tag {
            97 => self.copy(1, out),                          // SMALL_INTEGER_EXT
            98 => self.copy(4, out),                          // INTEGER_EXT
            99 => self.copy(31, out),                         // FLOAT_EXT
            106 => Some(()),                                  // NIL_EXT
            100 | 118 => self.copy_counted(2, out).map(drop), // ATOM(_UTF8)_EXT
            115 | 119 => self.copy_counted(1, out).map(drop), // SMALL_ATOM(_UTF8)_EXT
            107 => self.copy_counted(2, out).map(drop),       // STRING_EXT
            109 => self.copy_counted(4, out).map(drop),       // BINARY_EXT
            77 => {
                // BIT_BINARY_EXT: Len, Bits, Data
                let n = self.u32()?;
                out.extend_from_slice(&(n as u32).to_be_bytes());
                self.copy(1 + n, out)
            }
            110 => {
                // SMALL_BIG_EXT: n, Sign, digits
                let n = self.u8()? as usize;
                out.push(n as u8);
                self.copy(1 + n, out)
            }
            111 => {
                // LARGE_BIG_EXT
                let n = self.u32()?;
                out.extend_from_slice(&(n as u32).to_be_bytes());
                self.copy(1 + n, out)
            }
            70 => {
                // NEW_FLOAT_EXT: `-0.0` becomes `0.0` where they are `=:=`.
                let mut bits = u64::from_be_bytes(self.take(8)?.try_into().ok()?);
                if bits == (-0.0f64).to_bits() && FOLD_NEG_ZERO.load(Ordering::Relaxed) {
                    bits = 0;
                }
                out.extend_from_slice(&bits.to_be_bytes());
                Some(())
            }
            88 => self.copy_atom(out).and_then(|_| self.copy(12, out)), // NEW_PID_EXT
            103 => self.copy_atom(out).and_then(|_| self.copy(9, out)), // PID_EXT
            89 => self.copy_atom(out).and_then(|_| self.copy(8, out)),  // NEW_PORT_EXT
            120 => self.copy_atom(out).and_then(|_| self.copy(12, out)), // V4_PORT_EXT
            102 => self.copy_atom(out).and_then(|_| self.copy(5, out)), // PORT_EXT
            101 => self.copy_atom(out).and_then(|_| self.copy(5, out)), // REFERENCE_EXT
            90 | 114 => {
                // NEWER_REFERENCE_EXT / NEW_REFERENCE_EXT: Len, Node,
                // Creation, ID words. `=:=` ignores trailing zero ID words:
                // keep max(3, up to the last non-zero word), zero-padded.
                let n = self.u16()?;
                let mut node = Vec::new();
                self.copy_atom(&mut node)?;
                let creation = self.take(if tag == 90 { 4 } else { 1 })?;
                let ids = self.take(n.checked_mul(4)?)?;
                let used = ids
                    .chunks(4)
                    .rposition(|w| w != [0; 4])
                    .map_or(0, |i| i + 1);
                let len = used.max(3);
                out.extend_from_slice(&(len as u16).to_be_bytes());
                out.extend_from_slice(&node);
                out.extend_from_slice(creation);
                out.extend_from_slice(&ids[..used * 4]);
                out.resize(out.len() + (len - used) * 4, 0);
                Some(())
            }
            _ => None,
        }
    }
}

/// The creator pid written into every fun: `=:=` ignores a fun's creator,
/// so equal funs made by different processes must encode alike.
/// (`<0.0.0>` of `nonode@nohost`, an atom every VM has.)
const FUN_CREATOR: &[u8] = &[
    88, 119, 13, b'n', b'o', b'n', b'o', b'd', b'e', b'@', b'n', b'o', b'h', b'o', b's', b't', 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

/// Rewrites `term_to_binary` output so that `=:=` terms give equal bytes,
/// which the VM's encoding alone does not guarantee: `-0.0` is folded into
/// `0.0` (OTP < 27), a fun's creator pid is replaced by a fixed one, and a
/// reference's trailing zero ID words are normalised. The result decodes
/// to a term `=:=` to the original. Iterative (no recursion on nesting).
/// `None` for a tag not handled here: the caller keeps the VM's bytes.
fn canonical_etf(src: &[u8]) -> Option<Vec<u8>> {
    let mut r = Etf { src, pos: 0 };
    let mut out = Vec::with_capacity(src.len() + 16);
    if r.u8()? != 131 {
        return None;
    }
    out.push(131);
    // Terms still to copy per open container; for a fun's environment, the
    // offset of its Size field in `out`, patched once the fun is complete.
    let mut stack: Vec<(usize, Option<usize>)> = vec![(1, None)];
    while let Some(top) = stack.last_mut() {
        if top.0 == 0 {
            if let Some(at) = top.1 {
                let size = u32::try_from(out.len() - at).ok()?;
                out[at..at + 4].copy_from_slice(&size.to_be_bytes());
            }
            stack.pop();
            continue;
        }
        top.0 -= 1;
        let tag = r.u8()?;
        out.push(tag);
        let nested = match tag {
            104 => {
                // SMALL_TUPLE_EXT
                let n = r.u8()?;
                out.push(n);
                n as usize
            }
            105 | 108 | 116 => {
                // LARGE_TUPLE_EXT, LIST_EXT (elements, tail), MAP_EXT (pairs)
                let n = r.u32()?;
                out.extend_from_slice(&(n as u32).to_be_bytes());
                match tag {
                    108 => n.checked_add(1)?,
                    116 => n.checked_mul(2)?,
                    _ => n,
                }
            }
            113 => 3, // EXPORT_EXT: Module, Function, Arity
            112 => {
                // NEW_FUN_EXT: Size, Arity, Uniq, Index, NumFree, Module,
                // OldIndex, OldUniq, Pid, free variables.
                r.u32()?;
                let at = out.len();
                out.extend_from_slice(&[0; 4]);
                r.copy(1 + 16 + 4, &mut out)?;
                let free = r.u32()?;
                out.extend_from_slice(&(free as u32).to_be_bytes());
                r.copy_atom(&mut out)?;
                for _ in 0..2 {
                    let t = r.u8()?;
                    if !matches!(t, 97 | 98 | 110 | 111) {
                        return None;
                    }
                    out.push(t);
                    r.copy_leaf(t, &mut out)?;
                }
                let t = r.u8()?;
                if !matches!(t, 88 | 103) {
                    return None;
                }
                r.copy_leaf(t, &mut Vec::new())?; // the creator: dropped
                out.extend_from_slice(FUN_CREATOR);
                stack.push((free, Some(at)));
                continue;
            }
            _ => {
                r.copy_leaf(tag, &mut out)?;
                0
            }
        };
        top.0 = top.0.checked_add(nested)?;
    }
    (r.pos == src.len()).then_some(out)
}

fn encode_at(env: Env, mut raw: ErlNifTerm, out: &mut Buf, depth: u32) {
    let e = env.as_c_arg();
    loop {
        if is_immediate(raw) {
            out.push(IMM);
            out.extend_from_slice(&word(raw).to_le_bytes());
            return;
        }
        if depth >= MAX_DEPTH {
            return encode_etf(env, raw, out);
        }
        unsafe {
            match enif_term_type(e, raw) {
                ErlNifTermType::ERL_NIF_TERM_TYPE_BITSTRING => {
                    let mut bin = MaybeUninit::<ErlNifBinary>::uninit();
                    if enif_inspect_binary(e, raw, bin.as_mut_ptr()) == 0 {
                        return encode_etf(env, raw, out); // not byte-aligned
                    }
                    let bin = bin.assume_init();
                    out.push(BIN);
                    put_len(out, bin.size);
                    out.extend_from_slice(std::slice::from_raw_parts(bin.data, bin.size));
                    return;
                }
                ErlNifTermType::ERL_NIF_TERM_TYPE_FLOAT => {
                    let mut d = 0.0f64;
                    enif_get_double(e, raw, &mut d);
                    if d == 0.0 && FOLD_NEG_ZERO.load(Ordering::Relaxed) {
                        d = 0.0;
                    }
                    out.push(FLOAT);
                    out.extend_from_slice(&d.to_bits().to_le_bytes());
                    return;
                }
                ErlNifTermType::ERL_NIF_TERM_TYPE_TUPLE => {
                    let mut arity = 0;
                    let mut elems: *const ErlNifTerm = std::ptr::null();
                    enif_get_tuple(e, raw, &mut arity, &mut elems);
                    out.push(TUPLE);
                    put_len(out, arity as usize);
                    for i in 0..arity as usize {
                        encode_at(env, *elems.add(i), out, depth + 1);
                    }
                    return;
                }
                ErlNifTermType::ERL_NIF_TERM_TYPE_LIST => {
                    let mut head = ErlNifTerm::default();
                    let mut tail = ErlNifTerm::default();
                    enif_get_list_cell(e, raw, &mut head, &mut tail);
                    out.push(CONS);
                    encode_at(env, head, out, depth + 1);
                    raw = tail; // iterate over the spine: no recursion
                    continue;
                }
                ErlNifTermType::ERL_NIF_TERM_TYPE_MAP => return encode_map(env, raw, out, depth),
                _ => return encode_etf(env, raw, out),
            }
        }
    }
}

fn encode_map(env: Env, raw: ErlNifTerm, out: &mut Buf, depth: u32) {
    let e = env.as_c_arg();
    let mut pairs: Vec<(Buf, Buf)> = Vec::new();
    unsafe {
        let mut size: size_t = 0;
        enif_get_map_size(e, raw, &mut size);
        pairs.reserve(size);
        let mut iter = MaybeUninit::<ErlNifMapIterator>::uninit();
        if enif_map_iterator_create(
            e,
            raw,
            iter.as_mut_ptr(),
            ErlNifMapIteratorEntry::ERL_NIF_MAP_ITERATOR_HEAD,
        ) == 0
        {
            return encode_etf(env, raw, out);
        }
        let mut iter = iter.assume_init();
        let (mut k, mut v) = (ErlNifTerm::default(), ErlNifTerm::default());
        while enif_map_iterator_get_pair(e, &mut iter, &mut k, &mut v) != 0 {
            let mut kb = Buf::new();
            let mut vb = Buf::new();
            encode_at(env, k, &mut kb, depth + 1);
            encode_at(env, v, &mut vb, depth + 1);
            pairs.push((kb, vb));
            enif_map_iterator_next(e, &mut iter);
        }
        enif_map_iterator_destroy(e, &mut iter);
    }
    pairs.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    out.push(MAP);
    put_len(out, pairs.len());
    for (k, v) in pairs {
        out.extend_from_slice(&k);
        out.extend_from_slice(&v);
    }
}

/// Rebuilds the term encoded at the start of `input`. Returns `None` only
/// for bytes this module did not produce.
pub fn decode<'a>(env: Env<'a>, input: &[u8]) -> Option<Term<'a>> {
    let mut pos = 0;
    let raw = decode_at(env, input, &mut pos, 0)?;
    (pos == input.len()).then(|| unsafe { Term::new(env, raw) })
}

/// The raw word of an encoded immediate (`IMM` + 8 bytes), if that is
/// what `bytes` is.
#[inline]
pub fn immediate_of(bytes: &[u8]) -> Option<u64> {
    match bytes {
        [IMM, word @ ..] if word.len() == 8 => Some(u64::from_le_bytes(word.try_into().ok()?)),
        _ => None,
    }
}

/// The external-format payload of a value stored whole as ETF (remote
/// pids and ports, references, big integers, funs), if that is what
/// `bytes` is.
pub fn etf_payload(bytes: &[u8]) -> Option<&[u8]> {
    if bytes.first() != Some(&ETF) {
        return None;
    }
    let mut pos = 1;
    let len = get_len(bytes, &mut pos)?;
    (bytes.len() == pos.checked_add(len)?).then(|| &bytes[pos..])
}

/// Rebuilds a value stored as a raw immediate word.
#[inline]
pub fn from_immediate(env: Env, raw: u64) -> Term {
    unsafe { Term::new(env, from_word(raw)) }
}

fn decode_at(env: Env, input: &[u8], pos: &mut usize, depth: u32) -> Option<ErlNifTerm> {
    let e = env.as_c_arg();
    if depth > MAX_DEPTH + 1 {
        return None;
    }
    let tag = *input.get(*pos)?;
    *pos += 1;
    unsafe {
        match tag {
            IMM => {
                let bytes: [u8; 8] = input.get(*pos..*pos + 8)?.try_into().ok()?;
                *pos += 8;
                Some(from_word(u64::from_le_bytes(bytes)))
            }
            BIN => {
                let len = get_len(input, pos)?;
                let data = input.get(*pos..pos.checked_add(len)?)?;
                *pos += len;
                let mut term = ErlNifTerm::default();
                let dst = enif_make_new_binary(e, len, &mut term);
                if len > 0 {
                    if dst.is_null() {
                        return None;
                    }
                    std::ptr::copy_nonoverlapping(data.as_ptr(), dst, len);
                }
                Some(term)
            }
            FLOAT => {
                let bytes: [u8; 8] = input.get(*pos..*pos + 8)?.try_into().ok()?;
                *pos += 8;
                Some(enif_make_double(
                    e,
                    f64::from_bits(u64::from_le_bytes(bytes)),
                ))
            }
            TUPLE => {
                let arity = get_len(input, pos)?;
                if arity > input.len() {
                    return None;
                }
                let mut elems: SmallVec<[ErlNifTerm; 8]> = SmallVec::with_capacity(arity);
                for _ in 0..arity {
                    elems.push(decode_at(env, input, pos, depth + 1)?);
                }
                Some(enif_make_tuple_from_array(
                    e,
                    elems.as_ptr(),
                    arity as c_uint,
                ))
            }
            CONS => {
                // Collect the spine, then build the list from its end.
                let mut heads: SmallVec<[ErlNifTerm; 16]> = SmallVec::new();
                heads.push(decode_at(env, input, pos, depth + 1)?);
                while input.get(*pos) == Some(&CONS) {
                    *pos += 1;
                    heads.push(decode_at(env, input, pos, depth + 1)?);
                }
                let mut list = decode_at(env, input, pos, depth)?;
                for &h in heads.iter().rev() {
                    list = enif_make_list_cell(e, h, list);
                }
                Some(list)
            }
            MAP => {
                let n = get_len(input, pos)?;
                if n > input.len() {
                    return None;
                }
                let mut keys = Vec::with_capacity(n);
                let mut vals = Vec::with_capacity(n);
                for _ in 0..n {
                    keys.push(decode_at(env, input, pos, depth + 1)?);
                    vals.push(decode_at(env, input, pos, depth + 1)?);
                }
                let mut map = ErlNifTerm::default();
                (enif_make_map_from_arrays(e, keys.as_ptr(), vals.as_ptr(), n, &mut map) != 0)
                    .then_some(map)
            }
            ETF => {
                let len = get_len(input, pos)?;
                let data = input.get(*pos..pos.checked_add(len)?)?;
                *pos += len;
                let mut term = ErlNifTerm::default();
                let used =
                    enif_binary_to_term(e, data.as_ptr(), len, &mut term, ERL_NIF_BIN2TERM_SAFE);
                (used == len).then_some(term)
            }
            _ => None,
        }
    }
}
