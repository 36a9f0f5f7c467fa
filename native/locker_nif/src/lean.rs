//! NIF entry points without rustler's per-call argument vector.
//!
//! `#[rustler::nif]` collects the arguments into a `Vec` on every call: a
//! malloc/free pair that costs about a tenth of a `dirty_read` and makes
//! concurrent readers contend on the allocator. [`lean_nif!`] registers a
//! function taking its arguments as a fixed-size array instead, with the
//! same guarantees: a wrong arity raises `badarg`, and a panic (a bug)
//! raises `badarg` instead of unwinding into the VM.

use std::panic::{catch_unwind, AssertUnwindSafe};

use rustler::codegen_runtime::c_int;
use rustler::sys::{enif_make_badarg, ErlNifEnv, ErlNifTerm};
use rustler::{Env, NifResult, Term};

/// What a lean NIF returns: a term, or a term or an error (raised as
/// `badarg`, the only error these functions give).
pub trait Reply {
    /// The raw term to return to the VM.
    fn raw(self, env: Env) -> ErlNifTerm;
}

impl Reply for Term<'_> {
    fn raw(self, _env: Env) -> ErlNifTerm {
        self.as_c_arg()
    }
}

impl Reply for NifResult<Term<'_>> {
    fn raw(self, env: Env) -> ErlNifTerm {
        match self {
            Ok(t) => t.as_c_arg(),
            // SAFETY: `env` is the calling process's environment.
            Err(_) => unsafe { enif_make_badarg(env.as_c_arg()) },
        }
    }
}

/// Calls `f` with the `N` arguments of a NIF call.
///
/// # Safety
/// `env`, `argc` and `argv` must be those the VM passed to the NIF.
pub unsafe fn call<const N: usize>(
    env: *mut ErlNifEnv,
    argc: c_int,
    argv: *const ErlNifTerm,
    f: impl for<'a> FnOnce(Env<'a>, [Term<'a>; N]) -> ErlNifTerm,
) -> ErlNifTerm {
    if argc < 0 || argc as usize != N || (N > 0 && argv.is_null()) {
        return enif_make_badarg(env);
    }
    let lifetime = ();
    let e = Env::new(&lifetime, env);
    let args: [Term; N] = std::array::from_fn(|i| Term::new(e, *argv.add(i)));
    match catch_unwind(AssertUnwindSafe(|| f(e, args))) {
        Ok(t) => t,
        Err(_) => enif_make_badarg(env),
    }
}

/// Registers `fun` as the NIF `name/arity` of this library.
macro_rules! lean_nif {
    ($name:literal, $arity:literal, $fun:path) => {
        rustler::codegen_runtime::inventory::submit!(rustler::Nif {
            name: concat!($name, "\0").as_ptr() as *const rustler::codegen_runtime::c_char,
            arity: $arity,
            flags: 0,
            raw_func: {
                unsafe extern "C" fn raw(
                    env: *mut rustler::sys::ErlNifEnv,
                    argc: rustler::codegen_runtime::c_int,
                    argv: *const rustler::sys::ErlNifTerm,
                ) -> rustler::sys::ErlNifTerm {
                    $crate::lean::call::<$arity>(env, argc, argv, |e, args| {
                        $crate::lean::Reply::raw($fun(e, args), e)
                    })
                }
                raw
            },
        });
    };
}
pub(crate) use lean_nif;
