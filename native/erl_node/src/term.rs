//! Erlang terms in a canonical form whose equality is Erlang's `=:=`.
//!
//! [`Term`] is what every distribution message decodes into; its encoding
//! ([`crate::codec::encode`]) is a canonical byte form, so an application
//! may store terms as bytes and compare the bytes. Decoding (see
//! [`crate::codec`]) normalises every encoding choice that `=:=` ignores,
//! so the derived `Eq` and `Hash` are exactly `=:=`:
//!
//! - integers: one variant for everything that fits `i64`, whatever the
//!   wire tag (`SMALL_INTEGER`, `INTEGER`, a small `SMALL_BIG`); bigger
//!   ones keep sign and magnitude without leading zero bytes;
//! - floats are kept as bits with `-0.0` folded into `0.0` (OTP 25 says
//!   `0.0 =:= -0.0`); `1` and `1.0` are different variants;
//! - atoms compare by text, whatever their wire encoding (Latin-1 or UTF-8);
//! - lists: `STRING_EXT` and `LIST_EXT` of the same integers are the same
//!   list; nested list tails are flattened;
//! - maps keep their pairs sorted by key, so insertion order never matters;
//! - pids, ports and references keep node, creation and numbers (old and
//!   new wire shapes decode alike); a reference's trailing zero id words
//!   are dropped (`=:=` ignores them);
//! - a fun's creator pid is dropped (`=:=` ignores it);
//! - a bitstring whose last byte is whole is a binary.
//!
//! No atom table exists: atom text lives in the term, bounded by the
//! format's 255 characters, so input can never grow a global table.
//!
//! ```
//! use erl_node::codec;
//! use erl_node::term::{Atom, Term};
//!
//! // `STRING_EXT` "ab" and the list [97, 98] are one term.
//! let s = codec::decode(&[131, 107, 0, 2, b'a', b'b']).unwrap();
//! assert_eq!(s, Term::List(vec![Term::Int(97), Term::Int(98)]));
//! let call = erl_node::tuple![Term::atom("$gen_call"), Term::NIL, Atom::new("ping")];
//! assert_eq!(call.display(100), "{'$gen_call',[],ping}");
//! ```

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// An atom: its text. Common protocol atoms are static (no allocation).
#[derive(Clone)]
pub struct Atom(AtomRepr);

#[derive(Clone)]
enum AtomRepr {
    Static(&'static str),
    Heap(Arc<str>),
}

/// Atoms of the distribution protocol and of the OTP services a node
/// answers (`gen_server` calls, `net_kernel`, `erpc`): decoding them
/// allocates nothing, and a `match` finds them faster than hashing the
/// text. An application's own atoms go through the per-thread cache of
/// [`Atom::new`] (no allocation either once seen).
macro_rules! known_atoms {
    ($($text:literal,)*) => {
        fn known(text: &str) -> Option<&'static str> {
            match text {
                $($text => Some($text),)*
                _ => None,
            }
        }
    };
}

known_atoms! {
    "ok",
    "error",
    "true",
    "false",
    "undefined",
    "$gen_call",
    "$gen_cast",
    "alias",
    "net_kernel",
    "is_auth",
    "yes",
    "erpc",
    "execute_call",
    "return",
    "monitor",
    "link",
    "noproc",
    "noconnection",
    "normal",
    "infinity",
    "unknown_request",
    "badarg",
    "",
}

/// Heap atoms kept per thread, at most: the cache never grows past this
/// whatever the input (further atoms are allocated each time).
const ATOM_CACHE_MAX: usize = 4096;

/// The longest atom the cache keeps, in bytes (node names fit).
const ATOM_CACHE_LONGEST: usize = 64;

thread_local! {
    static HEAP_ATOMS: std::cell::RefCell<std::collections::HashSet<Arc<str>, ahash::RandomState>> =
        std::cell::RefCell::new(std::collections::HashSet::default());
}

impl Atom {
    /// The atom with this text (at most 255 characters, unchecked here).
    /// Protocol atoms are static; other atoms seen recently (node names)
    /// share one allocation through a bounded per-thread cache.
    pub fn new(text: &str) -> Self {
        if let Some(k) = known(text) {
            return Atom(AtomRepr::Static(k));
        }
        HEAP_ATOMS.with(|cache| {
            let mut cache = cache.borrow_mut();
            if let Some(a) = cache.get(text) {
                return Atom(AtomRepr::Heap(a.clone()));
            }
            let a: Arc<str> = Arc::from(text);
            if cache.len() < ATOM_CACHE_MAX && text.len() <= ATOM_CACHE_LONGEST {
                cache.insert(a.clone());
            }
            Atom(AtomRepr::Heap(a))
        })
    }

    /// A static atom (no allocation).
    pub const fn from_static(text: &'static str) -> Self {
        Atom(AtomRepr::Static(text))
    }

    /// The atom's text.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            AtomRepr::Static(s) => s,
            AtomRepr::Heap(s) => s,
        }
    }
}

impl PartialEq for Atom {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}
impl Eq for Atom {}
impl Hash for Atom {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}
impl PartialOrd for Atom {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Atom {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}
impl fmt::Debug for Atom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_atom(f, self.as_str())
    }
}
impl fmt::Display for Atom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
impl From<&str> for Atom {
    fn from(s: &str) -> Self {
        Atom::new(s)
    }
}

/// A process identifier (local or remote).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pid {
    /// The node that made it.
    pub node: Atom,
    /// Process number.
    pub id: u32,
    /// Serial (wraps of `id`).
    pub serial: u32,
    /// The node's incarnation.
    pub creation: u32,
}

/// A port identifier.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Port {
    /// The node that made it.
    pub node: Atom,
    /// Port number.
    pub id: u64,
    /// The node's incarnation.
    pub creation: u32,
}

/// A reference. `ids` never ends with a zero word (they are insignificant).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ref {
    /// The node that made it.
    pub node: Atom,
    /// The node's incarnation.
    pub creation: u32,
    /// Id words without trailing zero words.
    pub ids: RefIds,
}

impl Ref {
    /// A reference with its id words normalised.
    pub fn new(node: Atom, creation: u32, ids: &[u32]) -> Self {
        let used = ids.iter().rposition(|w| *w != 0).map_or(0, |i| i + 1);
        Ref {
            node,
            creation,
            ids: RefIds::new(&ids[..used]),
        }
    }
}

/// A reference's id words, compared and hashed as the slice they hold:
/// inline up to five (every reference OTP 25 makes), on the heap beyond,
/// so that decoding or cloning a reference allocates nothing of its own.
#[derive(Clone)]
pub struct RefIds(RefIdsRepr);

/// Id words kept inline: every reference OTP 25 makes fits.
const INLINE_REF_WORDS: usize = 5;

#[derive(Clone)]
enum RefIdsRepr {
    Inline(u8, [u32; INLINE_REF_WORDS]),
    Heap(Box<[u32]>),
}

impl RefIds {
    /// These words.
    pub fn new(words: &[u32]) -> Self {
        if words.len() <= INLINE_REF_WORDS {
            let mut w = [0; INLINE_REF_WORDS];
            w[..words.len()].copy_from_slice(words);
            RefIds(RefIdsRepr::Inline(words.len() as u8, w))
        } else {
            RefIds(RefIdsRepr::Heap(words.into()))
        }
    }

    /// The words.
    pub fn as_slice(&self) -> &[u32] {
        match &self.0 {
            RefIdsRepr::Inline(n, w) => &w[..*n as usize],
            RefIdsRepr::Heap(w) => w,
        }
    }
}

impl std::ops::Deref for RefIds {
    type Target = [u32];
    fn deref(&self) -> &[u32] {
        self.as_slice()
    }
}
impl PartialEq for RefIds {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}
impl Eq for RefIds {}
impl Hash for RefIds {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state)
    }
}
impl PartialOrd for RefIds {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for RefIds {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_slice().cmp(other.as_slice())
    }
}
impl fmt::Debug for RefIds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.as_slice().fmt(f)
    }
}

/// An integer beyond `i64`: sign and little-endian magnitude without
/// trailing zero bytes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BigInt {
    /// Whether the number is negative.
    pub negative: bool,
    /// Magnitude, least significant byte first.
    pub magnitude: Box<[u8]>,
}

/// A local fun (`NEW_FUN_EXT`), without its creator pid.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fun {
    /// Arity.
    pub arity: u8,
    /// MD5 of the module's code.
    pub uniq: [u8; 16],
    /// Index in the module's fun table.
    pub index: u32,
    /// Module.
    pub module: Atom,
    /// Old index (an integer).
    pub old_index: Term,
    /// Old uniq (an integer).
    pub old_uniq: Term,
    /// Free variables.
    pub free: Vec<Term>,
}

/// A float kept as bits, with `-0.0` folded into `0.0`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Float(u64);

impl Float {
    /// The canonical float of `f`.
    pub fn new(f: f64) -> Self {
        if f == 0.0 {
            Float(0)
        } else {
            Float(f.to_bits())
        }
    }
    /// Its value.
    pub fn get(self) -> f64 {
        f64::from_bits(self.0)
    }
}

impl fmt::Debug for Float {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.get())
    }
}

/// An Erlang term; `==` and `Hash` are `=:=` (see the module docs). The
/// derived order is total but is not Erlang's term order.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Term {
    /// An integer that fits `i64`.
    Int(i64),
    /// A bigger integer.
    Big(Box<BigInt>),
    /// A float.
    Float(Float),
    /// An atom.
    Atom(Atom),
    /// A reference.
    Ref(Box<Ref>),
    /// A local fun.
    Fun(Box<Fun>),
    /// An external fun `fun M:F/A`.
    Export(Box<(Atom, Atom, u8)>),
    /// A port.
    Port(Box<Port>),
    /// A pid.
    Pid(Box<Pid>),
    /// A tuple.
    Tuple(Box<[Term]>),
    /// A proper list (empty: `[]`).
    List(Vec<Term>),
    /// An improper list: elements (at least one) and a tail that is not a list.
    Improper(Box<(Vec<Term>, Term)>),
    /// A map, pairs sorted by key.
    Map(Box<[(Term, Term)]>),
    /// A binary.
    Binary(Arc<[u8]>),
    /// A bitstring that is not a binary: bytes and the number of bits used
    /// in the last byte (1..=7), unused bits zero.
    Bits(Box<(Box<[u8]>, u8)>),
}

impl Term {
    /// `[]`.
    pub const NIL: Term = Term::List(Vec::new());

    /// An atom term.
    pub fn atom(text: &str) -> Term {
        Term::Atom(Atom::new(text))
    }

    /// A static atom term (no allocation).
    pub const fn static_atom(text: &'static str) -> Term {
        Term::Atom(Atom::from_static(text))
    }

    /// A tuple term.
    pub fn tuple(items: Vec<Term>) -> Term {
        Term::Tuple(items.into_boxed_slice())
    }

    /// A binary term.
    pub fn binary(bytes: &[u8]) -> Term {
        Term::Binary(Arc::from(bytes))
    }

    /// A pid term.
    pub fn pid(p: Pid) -> Term {
        Term::Pid(Box::new(p))
    }

    /// A reference term.
    pub fn reference(r: Ref) -> Term {
        Term::Ref(Box::new(r))
    }

    /// A map term from pairs in any order (the last of duplicate keys wins).
    pub fn map(mut pairs: Vec<(Term, Term)>) -> Term {
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<(Term, Term)> = Vec::with_capacity(pairs.len());
        for p in pairs {
            match out.last_mut() {
                Some(last) if last.0 == p.0 => *last = p,
                _ => out.push(p),
            }
        }
        Term::Map(out.into_boxed_slice())
    }

    /// Builds a list from elements and a tail, flattening list tails.
    pub fn list_with_tail(mut items: Vec<Term>, tail: Term) -> Term {
        match tail {
            Term::List(rest) => {
                items.extend(rest);
                Term::List(items)
            }
            Term::Improper(b) => {
                let (rest, t) = *b;
                items.extend(rest);
                Term::Improper(Box::new((items, t)))
            }
            t if items.is_empty() => t,
            t => Term::Improper(Box::new((items, t))),
        }
    }

    /// The atom's text, if this is an atom.
    pub fn as_atom(&self) -> Option<&Atom> {
        match self {
            Term::Atom(a) => Some(a),
            _ => None,
        }
    }

    /// Whether this is the atom `text`.
    pub fn is_atom(&self, text: &str) -> bool {
        matches!(self, Term::Atom(a) if a.as_str() == text)
    }

    /// The elements, if this is a tuple.
    pub fn as_tuple(&self) -> Option<&[Term]> {
        match self {
            Term::Tuple(t) => Some(t),
            _ => None,
        }
    }

    /// The caller's pid, the reply tag and the request, if this is a
    /// `gen_server` call `{'$gen_call', {Pid, Tag}, Request}`.
    pub fn as_gen_call(&self) -> Option<(&Pid, &Term, &Term)> {
        match self.as_tuple()? {
            [call, from, req] if call.is_atom("$gen_call") => match from.as_tuple()? {
                [Term::Pid(pid), tag] => Some((pid, tag, req)),
                _ => None,
            },
            _ => None,
        }
    }

    /// [`Term::as_gen_call`] taking the parts out (no copy); the term
    /// back if it is not a call.
    pub fn into_gen_call(self) -> Result<(Pid, Term, Term), Term> {
        if self.as_gen_call().is_none() {
            return Err(self);
        }
        let Term::Tuple(t) = self else {
            unreachable!("as_gen_call saw a tuple")
        };
        match <[Term; 3]>::try_from(Vec::from(t)) {
            Ok([_, Term::Tuple(from), req]) => match <[Term; 2]>::try_from(Vec::from(from)) {
                Ok([Term::Pid(pid), tag]) => Ok((*pid, tag, req)),
                _ => unreachable!("as_gen_call saw {{Pid, Tag}}"),
            },
            _ => unreachable!("as_gen_call saw a 3-tuple"),
        }
    }

    /// The pid, if this is a pid.
    pub fn as_pid(&self) -> Option<&Pid> {
        match self {
            Term::Pid(p) => Some(p),
            _ => None,
        }
    }

    /// The reference, if this is one.
    pub fn as_ref_term(&self) -> Option<&Ref> {
        match self {
            Term::Ref(r) => Some(r),
            _ => None,
        }
    }

    /// The integer, if this is one that fits `i64`.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Term::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The elements, if this is a proper list.
    pub fn as_list(&self) -> Option<&[Term]> {
        match self {
            Term::List(l) => Some(l),
            _ => None,
        }
    }

    /// A short Erlang-like rendering for logs, at most about `max` bytes.
    pub fn display(&self, max: usize) -> String {
        let mut s = String::new();
        let mut budget = max;
        render(self, &mut s, &mut budget);
        if budget == 0 {
            s.push_str("...");
        }
        s
    }
}

impl From<Atom> for Term {
    fn from(a: Atom) -> Self {
        Term::Atom(a)
    }
}
impl From<i64> for Term {
    fn from(i: i64) -> Self {
        Term::Int(i)
    }
}
impl From<Pid> for Term {
    fn from(p: Pid) -> Self {
        Term::pid(p)
    }
}
impl From<Ref> for Term {
    fn from(r: Ref) -> Self {
        Term::reference(r)
    }
}
impl From<&str> for Term {
    /// A binary with the string's bytes (Elixir strings).
    fn from(s: &str) -> Self {
        Term::binary(s.as_bytes())
    }
}

/// Builds a tuple term: `tuple![a, b, c]`.
#[macro_export]
macro_rules! tuple {
    ($($e:expr),* $(,)?) => { $crate::term::Term::tuple(vec![$($e.into()),*]) };
}

fn write_atom(f: &mut impl fmt::Write, s: &str) -> fmt::Result {
    let plain = s.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '@');
    if plain {
        f.write_str(s)
    } else {
        f.write_char('\'')?;
        for c in s.chars() {
            if c == '\'' || c == '\\' {
                f.write_char('\\')?;
            }
            f.write_char(c)?;
        }
        f.write_char('\'')
    }
}

fn render(t: &Term, out: &mut String, budget: &mut usize) {
    use std::fmt::Write;
    if *budget == 0 {
        return;
    }
    let start = out.len();
    match t {
        Term::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Term::Big(b) => {
            let _ = write!(
                out,
                "{}<bigint {} bytes>",
                if b.negative { "-" } else { "" },
                b.magnitude.len()
            );
        }
        Term::Float(f) => {
            let _ = write!(out, "{:?}", f.get());
        }
        Term::Atom(a) => {
            let _ = write_atom(out, a.as_str());
        }
        Term::Pid(p) => {
            let _ = write!(out, "<{}.{}.{}>", p.node, p.id, p.serial);
        }
        Term::Port(p) => {
            let _ = write!(out, "#Port<{}.{}>", p.node, p.id);
        }
        Term::Ref(r) => {
            let _ = write!(out, "#Ref<{}", r.node);
            for w in r.ids.iter() {
                let _ = write!(out, ".{w}");
            }
            out.push('>');
        }
        Term::Fun(f) => {
            let _ = write!(out, "#Fun<{}.{}>", f.module, f.index);
        }
        Term::Export(e) => {
            let _ = write!(out, "fun {}:{}/{}", e.0, e.1, e.2);
        }
        Term::Binary(b) => {
            out.push_str("<<");
            if let Ok(s) = std::str::from_utf8(b) {
                if s.chars().all(|c| !c.is_control()) {
                    let _ = write!(out, "{s:?}");
                    out.push_str(">>");
                    *budget = budget.saturating_sub(out.len() - start);
                    return;
                }
            }
            for (i, byte) in b.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{byte}");
                if out.len() - start > *budget {
                    break;
                }
            }
            out.push_str(">>");
        }
        Term::Bits(b) => {
            let _ = write!(out, "<<{} bytes:{} bits>>", b.0.len(), b.1);
        }
        Term::Tuple(items) => {
            out.push('{');
            render_seq(items, out, budget, start);
            out.push('}');
        }
        Term::List(items) => {
            out.push('[');
            render_seq(items, out, budget, start);
            out.push(']');
        }
        Term::Improper(b) => {
            out.push('[');
            render_seq(&b.0, out, budget, start);
            out.push('|');
            render(&b.1, out, budget);
            out.push(']');
        }
        Term::Map(pairs) => {
            out.push_str("#{");
            for (i, (k, v)) in pairs.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                render(k, out, budget);
                out.push_str(" => ");
                render(v, out, budget);
                if *budget == 0 {
                    break;
                }
            }
            out.push('}');
        }
    }
    *budget = budget.saturating_sub(out.len() - start);
}

fn render_seq(items: &[Term], out: &mut String, budget: &mut usize, start: usize) {
    let total = *budget;
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let mut b = total.saturating_sub(out.len() - start);
        render(item, out, &mut b);
        if b == 0 {
            *budget = 0;
            return;
        }
    }
}

/// What `{:?}` and `{}` of a [`Term`] show, at most, in bytes (about).
const FORMAT_MAX: usize = 4096;

impl fmt::Debug for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display(FORMAT_MAX))
    }
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display(FORMAT_MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gen_call_parts() {
        let pid = Pid {
            node: Atom::new("n@h"),
            id: 1,
            serial: 0,
            creation: 1,
        };
        let call = |from: Term| Term::tuple(vec![Term::atom("$gen_call"), from, Term::atom("req")]);
        let good = call(Term::tuple(vec![Term::pid(pid.clone()), Term::Int(7)]));
        assert_eq!(
            good.as_gen_call(),
            Some((&pid, &Term::Int(7), &Term::atom("req")))
        );
        assert_eq!(
            good.into_gen_call(),
            Ok((pid.clone(), Term::Int(7), Term::atom("req")))
        );
        for other in [
            call(Term::tuple(vec![Term::Int(1), Term::Int(7)])),
            call(Term::pid(pid.clone())),
            Term::tuple(vec![Term::atom("$gen_cast"), Term::Int(1), Term::Int(2)]),
            Term::atom("$gen_call"),
        ] {
            assert_eq!(other.as_gen_call(), None);
            assert_eq!(other.clone().into_gen_call(), Err(other));
        }
    }

    /// Inline and heap id words behave as the slices they hold.
    #[test]
    fn ref_ids_are_their_slice() {
        use std::collections::hash_map::DefaultHasher;
        let h = |x: &dyn Fn(&mut DefaultHasher)| {
            let mut s = DefaultHasher::new();
            x(&mut s);
            s.finish()
        };
        let cases: Vec<Vec<u32>> = vec![
            vec![],
            vec![1],
            vec![1, 2, 3],
            vec![1, 2, 3, 4, 5],
            (1..=16).collect(),
            vec![9; 6],
        ];
        for a in &cases {
            let ia = RefIds::new(a);
            assert_eq!(&*ia, &a[..]);
            assert_eq!(h(&|s| ia.hash(s)), h(&|s| a[..].hash(s)));
            for b in &cases {
                let ib = RefIds::new(b);
                assert_eq!(ia == ib, a == b);
                assert_eq!(ia.cmp(&ib), a[..].cmp(&b[..]));
            }
        }
        let r = Ref::new(Atom::new("n@h"), 1, &[7, 8, 0, 0]);
        assert_eq!(&*r.ids, &[7, 8]);
    }

    #[test]
    fn canonical_constructors() {
        assert_eq!(Term::Float(Float::new(-0.0)), Term::Float(Float::new(0.0)));
        assert_ne!(Term::Int(1), Term::Float(Float::new(1.0)));
        let a = Term::map(vec![(Term::Int(2), Term::NIL), (Term::Int(1), Term::NIL)]);
        let b = Term::map(vec![(Term::Int(1), Term::NIL), (Term::Int(2), Term::NIL)]);
        assert_eq!(a, b);
        let l = Term::list_with_tail(vec![Term::Int(1)], Term::List(vec![Term::Int(2)]));
        assert_eq!(l, Term::List(vec![Term::Int(1), Term::Int(2)]));
        let r1 = Ref::new(Atom::new("n@h"), 1, &[1, 2, 3, 0, 0]);
        let r2 = Ref::new(Atom::new("n@h"), 1, &[1, 2, 3]);
        assert_eq!(r1, r2);
        assert_eq!(Atom::new("ok").as_str(), "ok");
        assert_eq!(Atom::new("ok"), Atom::new(&String::from("ok")));
    }

    #[test]
    fn display_is_bounded() {
        let t = Term::List((0..10_000).map(Term::Int).collect());
        assert!(t.display(100).len() < 200);
        assert_eq!(tuple![Term::atom("ok"), 1i64].display(100), "{ok,1}");
    }
}
