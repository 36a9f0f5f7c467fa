//! rustler's terms in the typed protocol layer
//! ([`locker_core::protocol`]): reading them ([`Wire`]), and this VM's
//! store encoding as the protocol's [`Decode`] and [`Encode`]
//! ([`Nif`]). Nothing here allocates for a term of up to 8 elements.

use std::mem::MaybeUninit;

use locker_core::protocol::{Decode, Encode, Integer, Name, Op, WireTerm};
use rustler::{Encoder, Env, Term};
use smallvec::SmallVec;

use crate::atoms;
use crate::value::{self, Key, Value};

/// A term as the protocol reads it.
#[derive(Clone, Copy)]
pub struct Wire<'a>(pub Term<'a>);

/// The atom of `name` (made at load time: a lookup, no allocation).
fn atom(name: Name) -> rustler::Atom {
    match name {
        Name::Ok => atoms::ok(),
        Name::Error => atoms::error(),
        Name::NotFound => atoms::not_found(),
        Name::AlreadyLocked => atoms::already_locked(),
        Name::NotExpectedValue => atoms::not_expected_value(),
        Name::NotOwner => atoms::not_owner(),
        Name::NoPromise => atoms::no_promise(),
        Name::StaleToken => atoms::stale_token(),
        Name::Released => atoms::released(),
        Name::Pending => atoms::pending(),
        Name::Infinity => atoms::infinity(),
        Name::LockerToken => atoms::locker_token(),
        Name::Op(op) => match op {
            Op::GetWriteLock => atoms::get_write_lock(),
            Op::ReleaseWriteLock => atoms::release_write_lock(),
            Op::Write => atoms::write(),
            Op::Update => atoms::update(),
            Op::ExtendLease => atoms::extend_lease(),
            Op::Release => atoms::release(),
            Op::WaitFor => atoms::wait_for(),
            Op::WaitForRelease => atoms::wait_for_release(),
            Op::CondWrite => atoms::cond_write(),
            Op::CondUpdate => atoms::cond_update(),
            Op::CondExtend => atoms::cond_extend(),
            Op::CondRelease => atoms::cond_release(),
            Op::Undo => atoms::undo(),
        },
    }
}

impl WireTerm for Wire<'_> {
    /// An atom is an immediate: it is `=:=` only to its own term word, so
    /// comparing words is exact (and spares a call into the VM).
    #[inline]
    fn is_atom(&self, name: Name) -> bool {
        self.0.as_c_arg() == atom(name).as_c_arg()
    }

    fn integer(&self) -> Option<Integer> {
        if let Ok(i) = self.0.decode::<i64>() {
            return Some(if i < 0 {
                Integer::Negative
            } else {
                Integer::Unsigned(i as u64)
            });
        }
        if let Ok(u) = self.0.decode::<u64>() {
            return Some(Integer::Unsigned(u));
        }
        self.0.is_integer().then_some(Integer::Huge)
    }

    fn float(&self) -> Option<f64> {
        self.0.decode::<f64>().ok()
    }

    fn with_tuple<R>(&self, f: impl FnOnce(&[Self]) -> R) -> Option<R> {
        let env = self.0.get_env();
        let mut arity = 0;
        let mut array = MaybeUninit::uninit();
        // SAFETY: the term and env are live; on success the VM fills in
        // `arity` elements at `array`, valid as long as the term.
        let items: SmallVec<[Wire; 8]> = unsafe {
            if rustler::sys::enif_get_tuple(
                env.as_c_arg(),
                self.0.as_c_arg(),
                &mut arity,
                array.as_mut_ptr(),
            ) == 0
            {
                return None;
            }
            let array = array.assume_init();
            (0..arity as usize)
                .map(|i| Wire(Term::new(env, *array.add(i))))
                .collect()
        };
        Some(f(&items))
    }
}

/// This VM's store encoding, in `env`.
#[derive(Clone, Copy)]
pub struct Nif<'a>(pub Env<'a>);

impl<'a> Decode<Wire<'a>> for Nif<'a> {
    type Key = Key;
    type Value = Value;
    type Tag = Key;

    #[inline]
    fn key(&self, t: &Wire<'a>) -> Key {
        value::key(self.0, t.0)
    }

    #[inline]
    fn value(&self, t: &Wire<'a>) -> Value {
        value::value(self.0, t.0)
    }

    #[inline]
    fn tag(&self, t: &Wire<'a>) -> Key {
        value::key(self.0, t.0)
    }
}

impl<'a> Encode for Nif<'a> {
    type Term = Term<'a>;
    type Key = Key;
    type Value = Value;

    #[inline]
    fn atom(&self, name: Name) -> Term<'a> {
        atom(name).to_term(self.0)
    }

    #[inline]
    fn tuple(&self, items: &[Term<'a>]) -> Term<'a> {
        crate::make_tuple(self.0, items)
    }

    #[inline]
    fn uint(&self, n: u64) -> Term<'a> {
        n.encode(self.0)
    }

    fn key(&self, k: &Key) -> Term<'a> {
        value::decode(self.0, k)
    }

    #[inline]
    fn value(&self, v: &Value) -> Term<'a> {
        value::to_term(self.0, v)
    }
}
