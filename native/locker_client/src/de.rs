//! Erlang terms to Rust values through serde: the inverse of
//! [`crate::to_term`], and lenient where Erlang code is (an atom or a
//! binary for a string or an enum variant, `nil` for `None`).
//!
//! No atom is ever made here: atoms that come in are already atoms on the
//! wire, and are read as strings (enum variants, field names, `String`).

use std::fmt::Display;

use erl_node::term::Term;
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, EnumAccess, IntoDeserializer, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};

use crate::raw::{RawTerm, RAW_TERM_TOKEN};
use crate::Error;

/// Decodes an Erlang term into a Rust value (see [`crate::to_term`] for
/// the mapping).
///
/// ```
/// use locker_client::{from_term, Term};
/// #[derive(serde::Deserialize, Debug, PartialEq)]
/// struct Owner { host: String, pid: u32 }
/// let t = Term::map(vec![
///     (Term::atom("host"), Term::binary(b"web-1")),
///     (Term::atom("pid"), Term::Int(4242)),
/// ]);
/// assert_eq!(from_term::<Owner>(&t).unwrap(), Owner { host: "web-1".into(), pid: 4242 });
/// assert!(from_term::<u8>(&Term::Int(300)).is_err());
/// ```
pub fn from_term<T: DeserializeOwned>(term: &Term) -> Result<T, Error> {
    T::deserialize(TermDe(term))
}

impl de::Error for Error {
    fn custom<T: Display>(msg: T) -> Self {
        Error::Decode(msg.to_string())
    }
}

/// A term being read.
#[derive(Clone, Copy)]
struct TermDe<'a>(&'a Term);

fn unexpected(t: &Term) -> de::Unexpected<'_> {
    match t {
        Term::Int(i) => de::Unexpected::Signed(*i),
        Term::Float(f) => de::Unexpected::Float(f.get()),
        Term::Atom(a) => de::Unexpected::Str(a.as_str()),
        Term::Binary(b) => de::Unexpected::Bytes(b),
        Term::List(_) => de::Unexpected::Seq,
        Term::Tuple(_) => de::Unexpected::Other("a tuple"),
        Term::Map(_) => de::Unexpected::Map,
        Term::Pid(_) => de::Unexpected::Other("a pid"),
        Term::Ref(_) => de::Unexpected::Other("a reference"),
        _ => de::Unexpected::Other("an Erlang term with no serde mapping"),
    }
}

fn big_to_i128(negative: bool, magnitude: &[u8]) -> Option<i128> {
    if magnitude.len() > 16 {
        return None;
    }
    let mut b = [0u8; 16];
    b[..magnitude.len()].copy_from_slice(magnitude);
    let m = u128::from_le_bytes(b);
    if negative {
        0i128.checked_sub_unsigned(m)
    } else {
        i128::try_from(m).ok()
    }
}

fn is_nil_atom(t: &Term) -> bool {
    t.is_atom("undefined") || t.is_atom("nil")
}

impl<'de> de::Deserializer<'de> for TermDe<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        match self.0 {
            Term::Int(i) => v.visit_i64(*i),
            Term::Big(b) => {
                if !b.negative && b.magnitude.len() <= 8 {
                    let mut x = [0u8; 8];
                    x[..b.magnitude.len()].copy_from_slice(&b.magnitude);
                    return v.visit_u64(u64::from_le_bytes(x));
                }
                match big_to_i128(b.negative, &b.magnitude) {
                    Some(i) => v.visit_i128(i),
                    None if !b.negative && b.magnitude.len() <= 16 => {
                        let mut x = [0u8; 16];
                        x[..b.magnitude.len()].copy_from_slice(&b.magnitude);
                        v.visit_u128(u128::from_le_bytes(x))
                    }
                    None => Err(Error::Decode("an integer beyond 128 bits".into())),
                }
            }
            Term::Float(f) => v.visit_f64(f.get()),
            Term::Atom(a) => match a.as_str() {
                "true" => v.visit_bool(true),
                "false" => v.visit_bool(false),
                s => v.visit_str(s),
            },
            Term::Binary(b) => match std::str::from_utf8(b) {
                Ok(s) => v.visit_borrowed_str(s),
                Err(_) => v.visit_borrowed_bytes(b),
            },
            Term::List(items) => v.visit_seq(Items(items.iter())),
            Term::Tuple(items) => v.visit_seq(Items(items.iter())),
            Term::Map(pairs) => v.visit_map(Pairs {
                it: pairs.iter(),
                value: None,
            }),
            other => Err(de::Error::invalid_type(unexpected(other), &v)),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        match self.0 {
            t if t.is_atom("true") => v.visit_bool(true),
            t if t.is_atom("false") => v.visit_bool(false),
            other => Err(de::Error::invalid_type(unexpected(other), &v)),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        match self.0 {
            Term::Binary(b) => match std::str::from_utf8(b) {
                Ok(s) => v.visit_borrowed_str(s),
                Err(_) => Err(Error::Decode("a binary that is not UTF-8".into())),
            },
            Term::Atom(a) => v.visit_str(a.as_str()),
            other => Err(de::Error::invalid_type(unexpected(other), &v)),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        self.deserialize_str(v)
    }

    fn deserialize_char<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        self.deserialize_str(v)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        self.deserialize_str(v)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        match self.0 {
            Term::Binary(b) => v.visit_borrowed_bytes(b),
            _ => self.deserialize_any(v),
        }
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        self.deserialize_bytes(v)
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        if is_nil_atom(self.0) {
            v.visit_none()
        } else {
            v.visit_some(self)
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        match self.0 {
            Term::Tuple(t) if t.is_empty() => v.visit_unit(),
            Term::List(l) if l.is_empty() => v.visit_unit(),
            t if is_nil_atom(t) || t.is_atom("ok") => v.visit_unit(),
            other => Err(de::Error::invalid_type(unexpected(other), &v)),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_unit(v)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        v: V,
    ) -> Result<V::Value, Error> {
        if name == RAW_TERM_TOKEN {
            RawTerm::stash(self.0.clone());
            return v.visit_newtype_struct(().into_deserializer());
        }
        v.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        match self.0 {
            Term::Binary(b) => v.visit_seq(de::value::SeqDeserializer::<_, Error>::new(
                b.iter().copied(),
            )),
            Term::List(items) => v.visit_seq(Items(items.iter())),
            Term::Tuple(items) => v.visit_seq(Items(items.iter())),
            other => Err(de::Error::invalid_type(unexpected(other), &v)),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, v: V) -> Result<V::Value, Error> {
        self.deserialize_seq(v)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        v: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(v)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Error> {
        match self.0 {
            Term::Atom(_) | Term::Binary(_) => v.visit_enum(Variant {
                tag: self.0,
                rest: &[],
            }),
            Term::Tuple(items) if !items.is_empty() => v.visit_enum(Variant {
                tag: &items[0],
                rest: &items[1..],
            }),
            other => Err(de::Error::invalid_type(unexpected(other), &v)),
        }
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 map struct ignored_any
    }
}

/// The elements of a list or tuple.
struct Items<'a>(std::slice::Iter<'a, Term>);

impl<'de> SeqAccess<'de> for Items<'de> {
    type Error = Error;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        self.0
            .next()
            .map(|t| seed.deserialize(TermDe(t)))
            .transpose()
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

/// The pairs of a map.
struct Pairs<'a> {
    it: std::slice::Iter<'a, (Term, Term)>,
    value: Option<&'a Term>,
}

impl<'de> MapAccess<'de> for Pairs<'de> {
    type Error = Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        match self.it.next() {
            Some((k, val)) => {
                self.value = Some(val);
                seed.deserialize(TermDe(k)).map(Some)
            }
            None => Ok(None),
        }
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let val = self
            .value
            .take()
            .ok_or_else(|| Error::Decode("a map value without its key".into()))?;
        seed.deserialize(TermDe(val))
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.it.len())
    }
}

/// An enum variant: its tag (an atom or a binary) and what follows it in
/// a tagged tuple.
struct Variant<'a> {
    tag: &'a Term,
    rest: &'a [Term],
}

impl<'de> EnumAccess<'de> for Variant<'de> {
    type Error = Error;
    type Variant = Self;
    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, Self), Error> {
        let v = seed.deserialize(TermDe(self.tag))?;
        Ok((v, self))
    }
}

impl<'de> VariantAccess<'de> for Variant<'de> {
    type Error = Error;
    fn unit_variant(self) -> Result<(), Error> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(Error::Decode(
                "a unit variant must be a bare atom, got a tagged tuple".into(),
            ))
        }
    }
    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, Error> {
        match self.rest {
            [one] => seed.deserialize(TermDe(one)),
            _ => Err(Error::Decode(format!(
                "a newtype variant must be a 2-tuple {{Tag, Value}}, got {} elements",
                self.rest.len() + 1
            ))),
        }
    }
    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, v: V) -> Result<V::Value, Error> {
        v.visit_seq(Items(self.rest.iter()))
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Error> {
        match self.rest {
            [m @ Term::Map(_)] => de::Deserializer::deserialize_any(TermDe(m), v),
            _ => Err(Error::Decode(
                "a struct variant must be {Tag, #{field => value}}".into(),
            )),
        }
    }
}
