//! The client's error type.

use std::fmt;

/// Everything a [`crate::Client`] call can fail with.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// An argument is out of range or malformed; nothing was sent.
    InvalidArgument {
        /// The argument (`"w"`, `"masters"`, `"lease"`...).
        arg: &'static str,
        /// What was expected, and what was given.
        expected: String,
    },
    /// A master (or replica) refused the handshake on the cookie: this
    /// client's cookie is not the cluster's.
    BadCookie {
        /// The node that refused it.
        node: String,
    },
    /// No master could be reached: unknown (not registered with epmd on
    /// its host), epmd unreachable, or connection refused.
    Unreachable {
        /// Each master tried, with why it could not be reached.
        nodes: Vec<(String, String)>,
    },
    /// The client's own node name is already registered with the local
    /// epmd.
    NodeNameTaken {
        /// The name.
        name: String,
    },
    /// The client's node could not start (listening, epmd).
    NodeStart(String),
    /// A registry name is held by another owner.
    NameTaken {
        /// The name, as an Erlang term.
        name: String,
    },
    /// Fewer than W masters agreed (`{error, no_quorum}`): the key is
    /// held by another value, or masters did not answer in time.
    NoQuorum,
    /// No answer within the timeout (dirty reads).
    Timeout,
    /// A remote call failed (`{badrpc, Reason}` of a dirty read).
    Rpc(String),
    /// A key or value has no Erlang term (serde).
    Encode(String),
    /// A stored value does not decode to the requested type (serde).
    Decode(String),
}

impl Error {
    pub(crate) fn invalid(arg: &'static str, expected: impl Into<String>) -> Error {
        Error::InvalidArgument {
            arg,
            expected: expected.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidArgument { arg, expected } => {
                write!(f, "invalid argument {arg}: expected {expected}")
            }
            Error::BadCookie { node } => write!(
                f,
                "{node} refused our cookie (wrong cookie for this cluster)"
            ),
            Error::Unreachable { nodes } => {
                f.write_str("no master reachable:")?;
                for (n, why) in nodes {
                    write!(f, " {n} ({why});")?;
                }
                Ok(())
            }
            Error::NodeNameTaken { name } => write!(
                f,
                "node name {name} is already registered with epmd (another node runs under it)"
            ),
            Error::NodeStart(e) => write!(f, "cannot start the client's node: {e}"),
            Error::NameTaken { name } => write!(f, "name {name} is held by another owner"),
            Error::NoQuorum => f.write_str("no quorum"),
            Error::Timeout => f.write_str("timed out"),
            Error::Rpc(e) => write!(f, "remote call failed: {e}"),
            Error::Encode(e) => write!(f, "cannot encode as an Erlang term: {e}"),
            Error::Decode(e) => write!(f, "cannot decode the Erlang term: {e}"),
        }
    }
}

impl std::error::Error for Error {}
