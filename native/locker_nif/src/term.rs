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
//!   kept as the VM's own external term format, which is deterministic for
//!   those types.
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

/// The raw word of `term` if it is an immediate.
#[inline]
pub fn immediate(term: Term) -> Option<u64> {
    let raw = term.as_c_arg();
    is_immediate(raw).then(|| word(raw))
}

fn put_len(out: &mut Buf, n: usize) {
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
pub fn encode(env: Env, term: Term, out: &mut Buf) {
    encode_at(env, term.as_c_arg(), out, 0);
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
        out.push(ETF);
        put_len(out, data.len());
        out.extend_from_slice(data);
        enif_release_binary(&mut bin);
    }
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
