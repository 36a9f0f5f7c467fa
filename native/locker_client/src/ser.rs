//! Rust values to Erlang terms through serde.
//!
//! | Rust (serde data model) | Erlang term |
//! | --- | --- |
//! | `bool` | `true` / `false` |
//! | integers | integers (big integers beyond 64 bits) |
//! | `f32`, `f64` | floats |
//! | `char`, `&str`, `String` | UTF-8 binaries |
//! | bytes (`serde_bytes`) | binaries |
//! | `None` / `Some(x)` | `undefined` / `x` |
//! | `()`, unit struct | `{}` |
//! | unit variant `Enum::A` | atom `'A'` (the variant's serde name) |
//! | newtype struct | its content |
//! | newtype variant `Enum::A(x)` | `{'A', x}` |
//! | sequences (`Vec`, slices, sets) | lists |
//! | tuples, tuple structs | tuples |
//! | tuple variant `Enum::A(x, y)` | `{'A', x, y}` |
//! | maps | maps |
//! | structs | maps with atom keys (field names) |
//! | struct variant `Enum::A { x }` | `{'A', #{x => ...}}` |
//!
//! Atoms are made only from names in the Rust program (variant and field
//! names, `true`/`false`/`undefined`), never from data.

use std::fmt::Display;

use erl_node::term::{BigInt, Float, Term};
use serde::ser::{self, Serialize};

use crate::raw::{RawTerm, RAW_TERM_TOKEN};
use crate::Error;

/// Encodes `value` as an Erlang term (see the table in the crate docs).
///
/// ```
/// use locker_client::{to_term, Term};
/// #[derive(serde::Serialize)]
/// enum Job { Build { id: u32 }, Idle }
/// assert_eq!(to_term(&Job::Idle).unwrap(), Term::atom("Idle"));
/// assert_eq!(to_term(&"job-42").unwrap(), Term::binary(b"job-42"));
/// assert_eq!(
///     to_term(&(1, true)).unwrap(),
///     Term::tuple(vec![Term::Int(1), Term::atom("true")])
/// );
/// ```
pub fn to_term<T: Serialize + ?Sized>(value: &T) -> Result<Term, Error> {
    value.serialize(TermSerializer)
}

impl ser::Error for Error {
    fn custom<T: Display>(msg: T) -> Self {
        Error::Encode(msg.to_string())
    }
}

/// The serializer: stateless, each value becomes one term.
struct TermSerializer;

fn big_from_u128(n: u128, negative: bool) -> Term {
    let b = n.to_le_bytes();
    let used = b.iter().rposition(|x| *x != 0).map_or(0, |i| i + 1);
    Term::Big(Box::new(BigInt {
        negative,
        magnitude: b[..used].into(),
    }))
}

pub(crate) fn u64_term(n: u64) -> Term {
    match i64::try_from(n) {
        Ok(i) => Term::Int(i),
        Err(_) => big_from_u128(n as u128, false),
    }
}

fn i128_term(n: i128) -> Term {
    match i64::try_from(n) {
        Ok(i) => Term::Int(i),
        Err(_) => big_from_u128(n.unsigned_abs(), n < 0),
    }
}

/// A list, tuple or tagged tuple being built.
struct Seq {
    items: Vec<Term>,
    kind: SeqKind,
}

enum SeqKind {
    List,
    Tuple,
}

impl Seq {
    fn end(self) -> Term {
        match self.kind {
            SeqKind::List => Term::List(self.items),
            SeqKind::Tuple => Term::tuple(self.items),
        }
    }
}

/// The four serde sequence traits, one body: each element becomes a term.
macro_rules! seq_impl {
    ($($trait:ident :: $method:ident),+ $(,)?) => {$(
        impl ser::$trait for Seq {
            type Ok = Term;
            type Error = Error;
            fn $method<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
                self.items.push(to_term(v)?);
                Ok(())
            }
            fn end(self) -> Result<Term, Error> {
                Ok(Seq::end(self))
            }
        }
    )+};
}

seq_impl!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field,
);

/// A map, a struct, or a struct variant (`tag`) being built.
struct MapBuilder {
    pairs: Vec<(Term, Term)>,
    next_key: Option<Term>,
    tag: Option<&'static str>,
}

impl MapBuilder {
    fn end(self) -> Term {
        let map = Term::map(self.pairs);
        match self.tag {
            Some(t) => Term::tuple(vec![Term::atom(t), map]),
            None => map,
        }
    }
}

impl ser::SerializeMap for MapBuilder {
    type Ok = Term;
    type Error = Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, k: &T) -> Result<(), Error> {
        self.next_key = Some(to_term(k)?);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
        let k = self
            .next_key
            .take()
            .ok_or_else(|| Error::Encode("a map value without its key".into()))?;
        self.pairs.push((k, to_term(v)?));
        Ok(())
    }
    fn end(self) -> Result<Term, Error> {
        Ok(MapBuilder::end(self))
    }
}

/// The two serde struct traits, one body: each field a pair under its
/// name's atom.
macro_rules! struct_impl {
    ($($trait:ident),+) => {$(
        impl ser::$trait for MapBuilder {
            type Ok = Term;
            type Error = Error;
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                v: &T,
            ) -> Result<(), Error> {
                self.pairs.push((Term::atom(key), to_term(v)?));
                Ok(())
            }
            fn end(self) -> Result<Term, Error> {
                Ok(MapBuilder::end(self))
            }
        }
    )+};
}

struct_impl!(SerializeStruct, SerializeStructVariant);

impl ser::Serializer for TermSerializer {
    type Ok = Term;
    type Error = Error;
    type SerializeSeq = Seq;
    type SerializeTuple = Seq;
    type SerializeTupleStruct = Seq;
    type SerializeTupleVariant = Seq;
    type SerializeMap = MapBuilder;
    type SerializeStruct = MapBuilder;
    type SerializeStructVariant = MapBuilder;

    fn serialize_bool(self, v: bool) -> Result<Term, Error> {
        Ok(Term::atom(if v { "true" } else { "false" }))
    }
    fn serialize_i8(self, v: i8) -> Result<Term, Error> {
        Ok(Term::Int(v.into()))
    }
    fn serialize_i16(self, v: i16) -> Result<Term, Error> {
        Ok(Term::Int(v.into()))
    }
    fn serialize_i32(self, v: i32) -> Result<Term, Error> {
        Ok(Term::Int(v.into()))
    }
    fn serialize_i64(self, v: i64) -> Result<Term, Error> {
        Ok(Term::Int(v))
    }
    fn serialize_i128(self, v: i128) -> Result<Term, Error> {
        Ok(i128_term(v))
    }
    fn serialize_u8(self, v: u8) -> Result<Term, Error> {
        Ok(Term::Int(v.into()))
    }
    fn serialize_u16(self, v: u16) -> Result<Term, Error> {
        Ok(Term::Int(v.into()))
    }
    fn serialize_u32(self, v: u32) -> Result<Term, Error> {
        Ok(Term::Int(v.into()))
    }
    fn serialize_u64(self, v: u64) -> Result<Term, Error> {
        Ok(u64_term(v))
    }
    fn serialize_u128(self, v: u128) -> Result<Term, Error> {
        Ok(match i64::try_from(v) {
            Ok(i) => Term::Int(i),
            Err(_) => big_from_u128(v, false),
        })
    }
    fn serialize_f32(self, v: f32) -> Result<Term, Error> {
        self.serialize_f64(v.into())
    }
    fn serialize_f64(self, v: f64) -> Result<Term, Error> {
        if !v.is_finite() {
            return Err(Error::Encode(format!(
                "{v} has no Erlang term (floats must be finite)"
            )));
        }
        Ok(Term::Float(Float::new(v)))
    }
    fn serialize_char(self, v: char) -> Result<Term, Error> {
        let mut b = [0; 4];
        Ok(Term::binary(v.encode_utf8(&mut b).as_bytes()))
    }
    fn serialize_str(self, v: &str) -> Result<Term, Error> {
        Ok(Term::binary(v.as_bytes()))
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<Term, Error> {
        Ok(Term::binary(v))
    }
    fn serialize_none(self) -> Result<Term, Error> {
        Ok(Term::atom("undefined"))
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<Term, Error> {
        to_term(v)
    }
    fn serialize_unit(self) -> Result<Term, Error> {
        Ok(Term::tuple(Vec::new()))
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<Term, Error> {
        self.serialize_unit()
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<Term, Error> {
        Ok(Term::atom(variant))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        v: &T,
    ) -> Result<Term, Error> {
        if name == RAW_TERM_TOKEN {
            return RawTerm::take_stashed();
        }
        to_term(v)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        v: &T,
    ) -> Result<Term, Error> {
        Ok(Term::tuple(vec![Term::atom(variant), to_term(v)?]))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Seq, Error> {
        Ok(Seq {
            items: Vec::with_capacity(len.unwrap_or(0).min(4096)),
            kind: SeqKind::List,
        })
    }
    fn serialize_tuple(self, len: usize) -> Result<Seq, Error> {
        Ok(Seq {
            items: Vec::with_capacity(len.min(4096)),
            kind: SeqKind::Tuple,
        })
    }
    fn serialize_tuple_struct(self, _name: &'static str, len: usize) -> Result<Seq, Error> {
        self.serialize_tuple(len)
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Seq, Error> {
        let mut items = Vec::with_capacity(len.min(4096) + 1);
        items.push(Term::atom(variant));
        Ok(Seq {
            items,
            kind: SeqKind::Tuple,
        })
    }
    fn serialize_map(self, len: Option<usize>) -> Result<MapBuilder, Error> {
        Ok(MapBuilder {
            pairs: Vec::with_capacity(len.unwrap_or(0).min(4096)),
            next_key: None,
            tag: None,
        })
    }
    fn serialize_struct(self, _name: &'static str, len: usize) -> Result<MapBuilder, Error> {
        self.serialize_map(Some(len))
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<MapBuilder, Error> {
        Ok(MapBuilder {
            pairs: Vec::with_capacity(len.min(4096)),
            next_key: None,
            tag: Some(variant),
        })
    }
}
