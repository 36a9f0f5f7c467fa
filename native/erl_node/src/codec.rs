//! External term format: decoding into canonical [`Term`]s and encoding.
//!
//! Written for untrusted input (eetf's decoder is not: it sizes vectors
//! from counts on the wire, recurses without bound and turns small-integer
//! lists into byte lists): every count is checked against the bytes left
//! before anything is allocated, nesting is bounded by [`MAX_DEPTH`], atom
//! text by the format's 255 characters, and compressed terms and atom
//! cache references (never negotiated) are refused.
//!
//! ```
//! use erl_node::codec::{self, tag, DecodeError};
//! use erl_node::term::Term;
//!
//! let t = Term::tuple(vec![Term::atom("ok"), Term::Int(300), Term::binary(b"v")]);
//! let bytes = codec::to_bytes(&t);
//! assert_eq!(bytes[..3], [tag::VERSION, tag::SMALL_TUPLE_EXT, 3]);
//! assert_eq!(codec::decode(&bytes), Ok(t));
//! // A list that claims four billion elements is refused before any allocation.
//! let lie = [tag::VERSION, tag::LIST_EXT, 255, 255, 255, 255, tag::NIL_EXT];
//! assert_eq!(codec::decode(&lie), Err(DecodeError::Truncated));
//! ```

use std::sync::Arc;

use crate::term::{Atom, BigInt, Float, Fun, Pid, Port, Ref, Term};

use tag::*;

/// Deepest nesting accepted (tuples, lists' elements, maps, funs).
pub const MAX_DEPTH: usize = 128;

/// The longest atom, in characters.
pub const MAX_ATOM_CHARS: usize = 255;

/// Most id words of a reference accepted (OTP makes at most five).
pub const MAX_REF_WORDS: usize = 16;

/// The bytes of a `FLOAT_EXT`'s text (`%.20e`, NUL padded).
const FLOAT_TEXT_LEN: usize = 31;

/// The tags of the external term format, by their names in OTP's
/// `erl_ext_dist` documentation.
pub mod tag {
    /// The version byte that starts every versioned term.
    pub const VERSION: u8 = 131;
    /// A float as 8 big-endian bytes of IEEE 754.
    pub const NEW_FLOAT_EXT: u8 = 70;
    /// A bitstring: length, bits used in the last byte, bytes.
    pub const BIT_BINARY_EXT: u8 = 77;
    /// A pid with a 32-bit creation.
    pub const NEW_PID_EXT: u8 = 88;
    /// A port with a 32-bit id and creation.
    pub const NEW_PORT_EXT: u8 = 89;
    /// A reference with a 32-bit creation.
    pub const NEWER_REFERENCE_EXT: u8 = 90;
    /// An integer 0..=255.
    pub const SMALL_INTEGER_EXT: u8 = 97;
    /// A signed 32-bit integer.
    pub const INTEGER_EXT: u8 = 98;
    /// A float as text (old nodes).
    pub const FLOAT_EXT: u8 = 99;
    /// A Latin-1 atom, 16-bit length.
    pub const ATOM_EXT: u8 = 100;
    /// A one-word reference with an 8-bit creation (old nodes).
    pub const REFERENCE_EXT: u8 = 101;
    /// A port with an 8-bit creation (old nodes).
    pub const PORT_EXT: u8 = 102;
    /// A pid with an 8-bit creation (old nodes).
    pub const PID_EXT: u8 = 103;
    /// A tuple of at most 255 elements.
    pub const SMALL_TUPLE_EXT: u8 = 104;
    /// A tuple, 32-bit arity.
    pub const LARGE_TUPLE_EXT: u8 = 105;
    /// `[]`.
    pub const NIL_EXT: u8 = 106;
    /// A list of bytes, 16-bit length.
    pub const STRING_EXT: u8 = 107;
    /// A list: 32-bit length, elements, tail.
    pub const LIST_EXT: u8 = 108;
    /// A binary.
    pub const BINARY_EXT: u8 = 109;
    /// An integer: 8-bit byte count, sign, little-endian magnitude.
    pub const SMALL_BIG_EXT: u8 = 110;
    /// An integer: 32-bit byte count, sign, little-endian magnitude.
    pub const LARGE_BIG_EXT: u8 = 111;
    /// A local fun.
    pub const NEW_FUN_EXT: u8 = 112;
    /// An external fun `fun M:F/A`.
    pub const EXPORT_EXT: u8 = 113;
    /// A reference with an 8-bit creation.
    pub const NEW_REFERENCE_EXT: u8 = 114;
    /// A Latin-1 atom, 8-bit length.
    pub const SMALL_ATOM_EXT: u8 = 115;
    /// A map.
    pub const MAP_EXT: u8 = 116;
    /// A UTF-8 atom, 16-bit length.
    pub const ATOM_UTF8_EXT: u8 = 118;
    /// A UTF-8 atom, 8-bit length.
    pub const SMALL_ATOM_UTF8_EXT: u8 = 119;
    /// A port with a 64-bit id.
    pub const V4_PORT_EXT: u8 = 120;
}

/// Why bytes are not a term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The input ended inside a term.
    Truncated,
    /// A tag this decoder does not accept (value given).
    BadTag(u8),
    /// The version byte 131 is missing.
    NoVersion,
    /// Nesting deeper than [`MAX_DEPTH`].
    TooDeep,
    /// An atom that is not valid text or longer than 255 characters.
    BadAtom,
    /// A malformed field (bad float text, bits count, duplicate map key...).
    Malformed(&'static str),
    /// Bytes left over after the term.
    Trailing,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}
impl std::error::Error for DecodeError {}

/// Decodes one whole versioned term (`131`, then the term).
pub fn decode(bytes: &[u8]) -> Result<Term, DecodeError> {
    let mut d = Decoder { src: bytes, pos: 0 };
    let t = d.versioned()?;
    if d.pos != bytes.len() {
        return Err(DecodeError::Trailing);
    }
    Ok(t)
}

/// Decodes one whole term without the version byte (what [`encode`]
/// appends).
pub fn decode_bare(bytes: &[u8]) -> Result<Term, DecodeError> {
    let mut d = Decoder { src: bytes, pos: 0 };
    let t = d.term(0)?;
    if d.pos != bytes.len() {
        return Err(DecodeError::Trailing);
    }
    Ok(t)
}

/// Decodes one versioned term at the start of `bytes`; returns it and the
/// number of bytes used.
pub fn decode_prefix(bytes: &[u8]) -> Result<(Term, usize), DecodeError> {
    let mut d = Decoder { src: bytes, pos: 0 };
    let t = d.versioned()?;
    Ok((t, d.pos))
}

/// A typed reader over one encoded term, for callers that know the shape
/// they expect (the control tuples of frequent distribution operations)
/// and want its parts without building the whole [`Term`]. Every method
/// fails on any other shape; the caller then decodes the generic way.
pub(crate) struct Cursor<'a>(Decoder<'a>);

impl<'a> Cursor<'a> {
    /// A cursor at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Cursor(Decoder { src: bytes, pos: 0 })
    }
    /// Bytes consumed so far.
    pub fn pos(&self) -> usize {
        self.0.pos
    }
    /// The version byte `131`.
    pub fn version(&mut self) -> Option<()> {
        (self.0.u8().ok()? == VERSION).then_some(())
    }
    /// A tuple header: its arity.
    pub fn tuple(&mut self) -> Option<usize> {
        match self.0.u8().ok()? {
            SMALL_TUPLE_EXT => Some(self.0.u8().ok()? as usize),
            LARGE_TUPLE_EXT => Some(self.0.u32().ok()? as usize),
            _ => None,
        }
    }
    /// A small integer (`SMALL_INTEGER_EXT` or `INTEGER_EXT`).
    pub fn int(&mut self) -> Option<i64> {
        match self.0.u8().ok()? {
            SMALL_INTEGER_EXT => Some(self.0.u8().ok()? as i64),
            INTEGER_EXT => Some(self.0.u32().ok()? as i32 as i64),
            _ => None,
        }
    }
    /// A pid.
    pub fn pid(&mut self) -> Option<Pid> {
        match self.0.u8().ok()? {
            tag @ (PID_EXT | NEW_PID_EXT) => self.0.pid_body(tag).ok(),
            _ => None,
        }
    }
    /// A reference.
    pub fn reference(&mut self) -> Option<Ref> {
        match self.0.u8().ok()? {
            tag @ (REFERENCE_EXT | NEW_REFERENCE_EXT | NEWER_REFERENCE_EXT) => {
                self.0.ref_body(tag).ok()
            }
            _ => None,
        }
    }
    /// Any term, as an element of the tuple being read.
    pub fn term(&mut self) -> Option<Term> {
        self.0.term(1).ok()
    }
}

struct Decoder<'a> {
    src: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    fn left(&self) -> usize {
        self.src.len() - self.pos
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.left() < n {
            return Err(DecodeError::Truncated);
        }
        let s = &self.src[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<usize, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]) as usize)
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        Ok(u64::from_be_bytes(b.try_into().expect("8 bytes")))
    }
    /// A count of items each taking at least `min` bytes: refused when the
    /// input cannot hold that many (so no huge allocation from a lie).
    fn count(&mut self, n: usize, min: usize) -> Result<usize, DecodeError> {
        if n.saturating_mul(min) > self.left() {
            return Err(DecodeError::Truncated);
        }
        Ok(n)
    }

    fn versioned(&mut self) -> Result<Term, DecodeError> {
        if self.u8()? != VERSION {
            return Err(DecodeError::NoVersion);
        }
        self.term(0)
    }

    fn atom_text(&mut self, tag: u8) -> Result<Atom, DecodeError> {
        let (len, utf8) = match tag {
            ATOM_EXT => (self.u16()?, false),
            SMALL_ATOM_EXT => (self.u8()? as usize, false),
            ATOM_UTF8_EXT => (self.u16()?, true),
            SMALL_ATOM_UTF8_EXT => (self.u8()? as usize, true),
            t => return Err(DecodeError::BadTag(t)),
        };
        let bytes = self.take(len)?;
        if utf8 {
            let s = std::str::from_utf8(bytes).map_err(|_| DecodeError::BadAtom)?;
            if len > MAX_ATOM_CHARS && s.chars().count() > MAX_ATOM_CHARS {
                return Err(DecodeError::BadAtom);
            }
            Ok(Atom::new(s))
        } else {
            if len > MAX_ATOM_CHARS {
                return Err(DecodeError::BadAtom);
            }
            if bytes.is_ascii() {
                // ASCII is valid UTF-8.
                Ok(Atom::new(std::str::from_utf8(bytes).expect("ascii")))
            } else {
                let s: String = bytes.iter().map(|&b| b as char).collect();
                Ok(Atom::new(&s))
            }
        }
    }

    fn atom(&mut self) -> Result<Atom, DecodeError> {
        let tag = self.u8()?;
        self.atom_text(tag)
    }

    fn int_term(&mut self) -> Result<Term, DecodeError> {
        let tag = self.u8()?;
        match tag {
            SMALL_INTEGER_EXT | INTEGER_EXT | SMALL_BIG_EXT | LARGE_BIG_EXT => {
                self.term_tag(tag, MAX_DEPTH - 1)
            }
            t => Err(DecodeError::BadTag(t)),
        }
    }

    fn big(&mut self, n: usize) -> Result<Term, DecodeError> {
        let sign = self.u8()?;
        let mag = self.take(n)?;
        let used = mag.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
        let mag = &mag[..used];
        if used <= 8 {
            let mut buf = [0u8; 8];
            buf[..used].copy_from_slice(mag);
            let m = u64::from_le_bytes(buf);
            if sign == 0 && m <= i64::MAX as u64 {
                return Ok(Term::Int(m as i64));
            }
            if sign != 0 && m <= 1u64 << 63 {
                return Ok(Term::Int((m as i128).wrapping_neg() as i64));
            }
        }
        Ok(Term::Big(Box::new(BigInt {
            negative: sign != 0,
            magnitude: mag.into(),
        })))
    }

    fn term(&mut self, depth: usize) -> Result<Term, DecodeError> {
        let tag = self.u8()?;
        self.term_tag(tag, depth)
    }

    fn term_tag(&mut self, tag: u8, depth: usize) -> Result<Term, DecodeError> {
        if depth >= MAX_DEPTH {
            return Err(DecodeError::TooDeep);
        }
        Ok(match tag {
            SMALL_INTEGER_EXT => Term::Int(self.u8()? as i64),
            INTEGER_EXT => Term::Int(self.u32()? as i32 as i64),
            SMALL_BIG_EXT => {
                let n = self.u8()? as usize;
                self.big(n)?
            }
            LARGE_BIG_EXT => {
                let n = self.u32()? as usize;
                self.big(n)?
            }
            NEW_FLOAT_EXT => Term::Float(Float::new(f64::from_bits(self.u64()?))),
            FLOAT_EXT => {
                let raw = self.take(FLOAT_TEXT_LEN)?;
                let text = std::str::from_utf8(raw)
                    .map_err(|_| DecodeError::Malformed("float text"))?
                    .trim_end_matches('\0');
                let f: f64 = text
                    .trim()
                    .parse()
                    .map_err(|_| DecodeError::Malformed("float text"))?;
                Term::Float(Float::new(f))
            }
            ATOM_EXT | SMALL_ATOM_EXT | ATOM_UTF8_EXT | SMALL_ATOM_UTF8_EXT => {
                Term::Atom(self.atom_text(tag)?)
            }
            NIL_EXT => Term::NIL,
            STRING_EXT => {
                let n = self.u16()?;
                let bytes = self.take(n)?;
                Term::List(bytes.iter().map(|&b| Term::Int(b as i64)).collect())
            }
            LIST_EXT => {
                let n = self.u32()? as usize;
                let n = self.count(n, 1)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.term(depth + 1)?);
                }
                // The tail, one level deeper: a list tail is joined to
                // this list (`list_with_tail`), and a chain of nested
                // one-element LIST_EXTs (which OTP never writes) is bounded
                // by the depth limit like any other nesting.
                let tail = self.term(depth + 1)?;
                Term::list_with_tail(items, tail)
            }
            SMALL_TUPLE_EXT => {
                let n = self.u8()? as usize;
                self.tuple(n, depth)?
            }
            LARGE_TUPLE_EXT => {
                let n = self.u32()? as usize;
                self.tuple(n, depth)?
            }
            MAP_EXT => {
                let n = self.u32()? as usize;
                let n = self.count(n, 2)?;
                let mut pairs = Vec::with_capacity(n);
                for _ in 0..n {
                    let k = self.term(depth + 1)?;
                    let v = self.term(depth + 1)?;
                    pairs.push((k, v));
                }
                pairs.sort_by(|a, b| a.0.cmp(&b.0));
                if pairs.windows(2).any(|w| w[0].0 == w[1].0) {
                    return Err(DecodeError::Malformed("duplicate map key"));
                }
                Term::Map(pairs.into_boxed_slice())
            }
            BINARY_EXT => {
                let n = self.u32()? as usize;
                Term::Binary(Arc::from(self.take(n)?))
            }
            BIT_BINARY_EXT => {
                let n = self.u32()? as usize;
                let bits = self.u8()?;
                let data = self.take(n)?;
                if n == 0 || bits == 0 || bits > 8 {
                    if n == 0 && bits == 0 {
                        return Ok(Term::Binary(Arc::from(&[][..])));
                    }
                    return Err(DecodeError::Malformed("bit binary"));
                }
                if bits == 8 {
                    Term::Binary(Arc::from(data))
                } else {
                    let mut v: Box<[u8]> = data.into();
                    let mask = 0xffu8 << (8 - bits);
                    v[n - 1] &= mask;
                    Term::Bits(Box::new((v, bits)))
                }
            }
            PID_EXT | NEW_PID_EXT => Term::pid(self.pid_body(tag)?),
            PORT_EXT | NEW_PORT_EXT | V4_PORT_EXT => {
                let node = self.atom()?;
                let (id, creation) = match tag {
                    PORT_EXT => (self.u32()? as u64, self.u8()? as u32),
                    NEW_PORT_EXT => (self.u32()? as u64, self.u32()?),
                    _ => (self.u64()?, self.u32()?),
                };
                Term::Port(Box::new(Port { node, id, creation }))
            }
            REFERENCE_EXT | NEW_REFERENCE_EXT | NEWER_REFERENCE_EXT => {
                Term::reference(self.ref_body(tag)?)
            }
            EXPORT_EXT => {
                let m = self.atom()?;
                let f = self.atom()?;
                let a = match self.int_term()? {
                    Term::Int(a) if u8::try_from(a).is_ok() => a as u8,
                    _ => return Err(DecodeError::Malformed("export arity")),
                };
                Term::Export(Box::new((m, f, a)))
            }
            NEW_FUN_EXT => {
                let size = self.u32()? as usize;
                // Where the fun starts: its tag, then the 4-byte size.
                let start = self.pos - 5;
                let arity = self.u8()?;
                let uniq: [u8; 16] = self.take(16)?.try_into().expect("16 bytes");
                let index = self.u32()?;
                let nfree = self.u32()? as usize;
                let module = self.atom()?;
                let old_index = self.int_term()?;
                let old_uniq = self.int_term()?;
                match self.term(depth + 1)? {
                    Term::Pid(_) => {}
                    _ => return Err(DecodeError::Malformed("fun creator")),
                }
                let nfree = self.count(nfree, 1)?;
                let mut free = Vec::with_capacity(nfree);
                for _ in 0..nfree {
                    free.push(self.term(depth + 1)?);
                }
                if self.pos - start != size + 1 {
                    return Err(DecodeError::Malformed("fun size"));
                }
                Term::Fun(Box::new(Fun {
                    arity,
                    uniq,
                    index,
                    module,
                    old_index,
                    old_uniq,
                    free,
                }))
            }
            t => return Err(DecodeError::BadTag(t)),
        })
    }

    /// A pid after its tag ([`PID_EXT`] or [`NEW_PID_EXT`]).
    fn pid_body(&mut self, tag: u8) -> Result<Pid, DecodeError> {
        let node = self.atom()?;
        let id = self.u32()?;
        let serial = self.u32()?;
        let creation = if tag == PID_EXT {
            self.u8()? as u32
        } else {
            self.u32()?
        };
        Ok(Pid {
            node,
            id,
            serial,
            creation,
        })
    }

    /// A reference after its tag ([`REFERENCE_EXT`], [`NEW_REFERENCE_EXT`]
    /// or [`NEWER_REFERENCE_EXT`]).
    fn ref_body(&mut self, tag: u8) -> Result<Ref, DecodeError> {
        if tag == REFERENCE_EXT {
            let node = self.atom()?;
            let id = self.u32()?;
            let creation = self.u8()? as u32;
            return Ok(Ref::new(node, creation, &[id]));
        }
        let n = self.u16()?;
        if n > MAX_REF_WORDS {
            return Err(DecodeError::Malformed("reference length"));
        }
        let node = self.atom()?;
        let creation = if tag == NEW_REFERENCE_EXT {
            self.u8()? as u32
        } else {
            self.u32()?
        };
        let mut ids = [0u32; MAX_REF_WORDS];
        for w in ids.iter_mut().take(n) {
            *w = self.u32()?;
        }
        Ok(Ref::new(node, creation, &ids[..n]))
    }

    fn tuple(&mut self, n: usize, depth: usize) -> Result<Term, DecodeError> {
        let n = self.count(n, 1)?;
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            items.push(self.term(depth + 1)?);
        }
        Ok(Term::tuple(items))
    }
}

/// Appends the encoding of a pid (`NEW_PID_EXT`).
pub fn encode_pid(p: &Pid, out: &mut Vec<u8>) {
    out.push(NEW_PID_EXT);
    encode_atom(&p.node, out);
    out.extend_from_slice(&p.id.to_be_bytes());
    out.extend_from_slice(&p.serial.to_be_bytes());
    out.extend_from_slice(&p.creation.to_be_bytes());
}

/// Appends [`tag::VERSION`] and the encoding of `t`.
pub fn encode_versioned(t: &Term, out: &mut Vec<u8>) {
    out.push(VERSION);
    encode(t, out);
}

/// The versioned encoding of `t` as a new vector.
pub fn to_bytes(t: &Term) -> Vec<u8> {
    let mut v = Vec::with_capacity(64);
    encode_versioned(t, &mut v);
    v
}

fn encode_atom(a: &Atom, out: &mut Vec<u8>) {
    let s = a.as_str().as_bytes();
    if let Ok(len) = u8::try_from(s.len()) {
        out.push(SMALL_ATOM_UTF8_EXT);
        out.push(len);
    } else {
        out.push(ATOM_UTF8_EXT);
        out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    }
    out.extend_from_slice(s);
}

fn encode_int(i: i64, out: &mut Vec<u8>) {
    if let Ok(byte) = u8::try_from(i) {
        out.push(SMALL_INTEGER_EXT);
        out.push(byte);
    } else if let Ok(word) = i32::try_from(i) {
        out.push(INTEGER_EXT);
        out.extend_from_slice(&word.to_be_bytes());
    } else {
        let m = i.unsigned_abs().to_le_bytes();
        let used = m.iter().rposition(|b| *b != 0).map_or(0, |x| x + 1);
        out.push(SMALL_BIG_EXT);
        out.push(used as u8);
        out.push(u8::from(i < 0));
        out.extend_from_slice(&m[..used]);
    }
}

/// Appends the encoding of `t` (no version byte). Recursion is bounded by
/// the depth the term was decoded or built with.
pub fn encode(t: &Term, out: &mut Vec<u8>) {
    match t {
        Term::Int(i) => encode_int(*i, out),
        Term::Big(b) => {
            let n = b.magnitude.len();
            if let Ok(small) = u8::try_from(n) {
                out.push(SMALL_BIG_EXT);
                out.push(small);
            } else {
                out.push(LARGE_BIG_EXT);
                out.extend_from_slice(&(n as u32).to_be_bytes());
            }
            out.push(u8::from(b.negative));
            out.extend_from_slice(&b.magnitude);
        }
        Term::Float(f) => {
            out.push(NEW_FLOAT_EXT);
            out.extend_from_slice(&f.get().to_bits().to_be_bytes());
        }
        Term::Atom(a) => encode_atom(a, out),
        Term::Pid(p) => encode_pid(p, out),
        Term::Port(p) => {
            if let Ok(id) = u32::try_from(p.id) {
                out.push(NEW_PORT_EXT);
                encode_atom(&p.node, out);
                out.extend_from_slice(&id.to_be_bytes());
            } else {
                out.push(V4_PORT_EXT);
                encode_atom(&p.node, out);
                out.extend_from_slice(&p.id.to_be_bytes());
            }
            out.extend_from_slice(&p.creation.to_be_bytes());
        }
        Term::Ref(r) => {
            let n = r.ids.len().max(3);
            out.push(NEWER_REFERENCE_EXT);
            out.extend_from_slice(&(n as u16).to_be_bytes());
            encode_atom(&r.node, out);
            out.extend_from_slice(&r.creation.to_be_bytes());
            for i in 0..n {
                out.extend_from_slice(&r.ids.get(i).copied().unwrap_or(0).to_be_bytes());
            }
        }
        Term::Export(e) => {
            out.push(EXPORT_EXT);
            encode_atom(&e.0, out);
            encode_atom(&e.1, out);
            encode_int(e.2 as i64, out);
        }
        Term::Fun(f) => {
            out.push(NEW_FUN_EXT);
            let at = out.len();
            out.extend_from_slice(&[0; 4]);
            out.push(f.arity);
            out.extend_from_slice(&f.uniq);
            out.extend_from_slice(&f.index.to_be_bytes());
            out.extend_from_slice(&(f.free.len() as u32).to_be_bytes());
            encode_atom(&f.module, out);
            encode(&f.old_index, out);
            encode(&f.old_uniq, out);
            // The creator (ignored by `=:=`): <0.0.0> of nonode@nohost.
            encode(
                &Term::pid(Pid {
                    node: Atom::new("nonode@nohost"),
                    id: 0,
                    serial: 0,
                    creation: 0,
                }),
                out,
            );
            for v in &f.free {
                encode(v, out);
            }
            let size = (out.len() - at) as u32;
            out[at..at + 4].copy_from_slice(&size.to_be_bytes());
        }
        Term::Tuple(items) => {
            if let Ok(small) = u8::try_from(items.len()) {
                out.push(SMALL_TUPLE_EXT);
                out.push(small);
            } else {
                out.push(LARGE_TUPLE_EXT);
                out.extend_from_slice(&(items.len() as u32).to_be_bytes());
            }
            for i in items.iter() {
                encode(i, out);
            }
        }
        Term::List(items) => {
            if items.is_empty() {
                out.push(NIL_EXT);
                return;
            }
            out.push(LIST_EXT);
            out.extend_from_slice(&(items.len() as u32).to_be_bytes());
            for i in items {
                encode(i, out);
            }
            out.push(NIL_EXT);
        }
        Term::Improper(b) => {
            out.push(LIST_EXT);
            out.extend_from_slice(&(b.0.len() as u32).to_be_bytes());
            for i in &b.0 {
                encode(i, out);
            }
            encode(&b.1, out);
        }
        Term::Map(pairs) => {
            out.push(MAP_EXT);
            out.extend_from_slice(&(pairs.len() as u32).to_be_bytes());
            for (k, v) in pairs.iter() {
                encode(k, out);
                encode(v, out);
            }
        }
        Term::Binary(b) => {
            out.push(BINARY_EXT);
            out.extend_from_slice(&(b.len() as u32).to_be_bytes());
            out.extend_from_slice(b);
        }
        Term::Bits(b) => {
            out.push(BIT_BINARY_EXT);
            out.extend_from_slice(&(b.0.len() as u32).to_be_bytes());
            out.push(b.1);
            out.extend_from_slice(&b.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt(t: &Term) -> Term {
        decode(&to_bytes(t)).unwrap()
    }

    #[test]
    fn round_trips() {
        let pid = Term::pid(Pid {
            node: Atom::new("a@b"),
            id: 1,
            serial: 2,
            creation: 3,
        });
        let terms = vec![
            Term::Int(0),
            Term::Int(-1),
            Term::Int(300),
            Term::Int(i64::MAX),
            Term::Int(i64::MIN),
            Term::Float(Float::new(1.5)),
            Term::atom("héllo"),
            pid.clone(),
            Term::reference(Ref::new(Atom::new("a@b"), 3, &[1, 0, 0])),
            Term::tuple(vec![pid.clone(), Term::NIL]),
            Term::List(vec![Term::Int(1), Term::Int(2)]),
            Term::list_with_tail(vec![Term::Int(1)], Term::atom("x")),
            Term::map(vec![(Term::Int(1), Term::atom("a"))]),
            Term::binary(b"abc"),
            Term::Big(Box::new(BigInt {
                negative: true,
                magnitude: vec![1; 20].into(),
            })),
        ];
        for t in &terms {
            assert_eq!(&rt(t), t);
        }
    }

    #[test]
    fn canonical_decoding() {
        // SMALL_BIG 1 == SMALL_INTEGER 1
        assert_eq!(decode(&[131, 110, 1, 0, 1]).unwrap(), Term::Int(1));
        assert_eq!(decode(&[131, 110, 2, 1, 5, 0]).unwrap(), Term::Int(-5));
        // STRING_EXT "ab" == [97, 98]
        assert_eq!(
            decode(&[131, 107, 0, 2, 97, 98]).unwrap(),
            Term::List(vec![Term::Int(97), Term::Int(98)])
        );
        // latin1 atom == utf8 atom
        assert_eq!(
            decode(&[131, 100, 0, 1, 0xe9]).unwrap(),
            decode(&[131, 119, 2, 0xc3, 0xa9]).unwrap()
        );
        // -0.0 == 0.0
        let mut neg = vec![131, 70];
        neg.extend_from_slice(&(-0.0f64).to_bits().to_be_bytes());
        assert_eq!(decode(&neg).unwrap(), Term::Float(Float::new(0.0)));
    }

    #[test]
    fn hostile_input_is_refused_not_fatal() {
        // A list claiming 4 billion elements.
        assert!(decode(&[131, 108, 255, 255, 255, 255, 106]).is_err());
        // A map claiming many pairs.
        assert!(decode(&[131, 116, 255, 255, 255, 255]).is_err());
        // Very deep nesting.
        let mut deep = vec![131];
        for _ in 0..100_000 {
            deep.extend_from_slice(&[104, 1]);
        }
        deep.push(106);
        assert_eq!(decode(&deep), Err(DecodeError::TooDeep));
        // Compressed and atom-cache terms.
        assert!(decode(&[131, 80, 0, 0, 0, 1, 0]).is_err());
        assert!(decode(&[131, 82, 0]).is_err());
        // Truncated everything.
        let full = to_bytes(&Term::tuple(vec![Term::atom("abc"), Term::binary(b"xyz")]));
        for n in 0..full.len() {
            assert!(decode(&full[..n]).is_err());
        }
        // Random bytes never panic.
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for _ in 0..20_000 {
            let len = (x % 40) as usize;
            let mut buf = vec![131u8];
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                buf.push((x % 256) as u8);
            }
            let _ = decode(&buf);
        }
    }
}
