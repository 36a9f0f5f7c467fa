//! The distribution handshake, both ways, through erl_dist over tokio.
//!
//! Workarounds for erl_dist 0.8 against OTP 25 (see `native/erl_node/README.md`):
//! - [`local_flags`] clears erl_dist's `MANDATORY_25_DIGEST` (bit 36, an
//!   internal flag in OTP) and sets OTP's digest flag `0x04000000`.
//! - Client side: erl_dist never sends the `alive` status answer, so on an
//!   `alive` status the attempt is abandoned ([`ClientOutcome::Busy`]) and
//!   retried later, when the peer has dropped its stale connection.
//! - Simultaneous connects are resolved by the caller ([`crate::node`]),
//!   with OTP's rule: the node with the greater name keeps its own attempt.
//!
//! ```no_run
//! use std::time::Duration;
//! use erl_node::handshake::{self, ClientOutcome, Identity};
//!
//! # async fn demo() -> Result<(), String> {
//! let me = Identity {
//!     name: "me@127.0.0.1".parse().map_err(|e| format!("{e}"))?,
//!     creation: 1,
//!     cookie: "secret".into(),
//! };
//! let port = erl_node::epmd::port_of("other", "127.0.0.1").await?.ok_or("not registered")?;
//! match handshake::connect("127.0.0.1", port, &me, Duration::from_secs(5)).await {
//!     Ok(ClientOutcome::Up(_stream, peer)) => println!("connected to {}", peer.name),
//!     Ok(ClientOutcome::Busy) => println!("try again later"),
//!     Err(e) => println!("failed: {e}"),
//! }
//! # Ok(()) }
//! ```

use std::time::Duration;

use erl_dist::handshake::{
    ClientSideHandshake, HandshakeError, HandshakeStatus, ServerSideHandshake,
};
use erl_dist::node::{Creation, LocalNode, NodeName};
use erl_dist::DistributionFlags;
use tokio::net::TcpStream;
use tokio_util::compat::TokioAsyncReadCompatExt;

/// OTP's digest flag (erl_dist's constant of that name is bit 36).
pub const DFLAG_MANDATORY_25_DIGEST: u64 = 0x0400_0000;

/// The capability flags this node implements: OTP 25's mandatory set,
/// process monitors (by pid and by name), `spawn_request`, `UNLINK_ID`
/// links, and the 25 digest. Not `PUBLISHED` (the node runs hidden), not
/// the atom cache, fragments, aliases or exit payloads.
pub fn local_flags() -> DistributionFlags {
    let bits = (DistributionFlags::mandatory().bits()
        & !DistributionFlags::MANDATORY_25_DIGEST.bits())
        | DFLAG_MANDATORY_25_DIGEST
        | DistributionFlags::DIST_MONITOR.bits()
        | DistributionFlags::DIST_MONITOR_NAME.bits()
        | DistributionFlags::SPAWN.bits()
        | DistributionFlags::SMALL_ATOM_TAGS.bits();
    DistributionFlags::from_bits_truncate(bits)
}

/// Who we are in handshakes.
#[derive(Clone, Debug)]
pub struct Identity {
    /// Full node name.
    pub name: NodeName,
    /// Creation from epmd.
    pub creation: u32,
    /// The cookie.
    pub cookie: String,
}

impl Identity {
    fn local(&self) -> LocalNode {
        let mut l = LocalNode::new(self.name.clone(), Creation::new(self.creation));
        l.flags = local_flags();
        l
    }
}

/// What the peer said about itself.
#[derive(Clone, Debug)]
pub struct Peer {
    /// Its full node name.
    pub name: String,
    /// Its creation.
    pub creation: u32,
    /// Its flags.
    pub flags: u64,
}

/// A refused or failed handshake.
#[derive(Debug)]
pub struct Failed(pub String);

/// What a failed handshake says when the peer closed the connection
/// after our challenge reply: OTP does so (logging "Invalid challenge
/// reply") when the cookies differ.
const PEER_CLOSED_ON_REPLY: &str =
    "the peer closed the connection during the handshake (wrong cookie?)";

/// What a failed handshake says when the peer's challenge ack does not
/// match our cookie.
const COOKIE_MISMATCH: &str = "cookie mismatch (wrong cookie)";

impl Failed {
    /// Whether the handshake failed on the cookie: the peer closed the
    /// connection right after our challenge reply (what OTP does when the
    /// cookies differ), or its challenge ack did not match our cookie.
    pub fn is_bad_cookie(&self) -> bool {
        self.0 == PEER_CLOSED_ON_REPLY || self.0 == COOKIE_MISMATCH
    }
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn err(e: HandshakeError) -> Failed {
    Failed(match e {
        HandshakeError::CookieMismatch => COOKIE_MISMATCH.to_string(),
        e => e.to_string(),
    })
}

/// The decision for an incoming peer, given its name and creation.
pub enum Accept {
    /// Go on (`ok`).
    Ok,
    /// Go on and drop our own attempt to it (`ok_simultaneous`).
    OkSimultaneous,
    /// Refuse: we keep our own ongoing attempt (`nok`).
    Nok,
    /// Refuse: over the peer limit or an invalid name (`not_allowed`).
    NotAllowed,
}

/// Accepts a connection: reads the peer's name, asks `decide`, finishes
/// the handshake within `timeout`. Returns the stream ready for frames.
pub async fn accept(
    stream: TcpStream,
    me: &Identity,
    timeout: Duration,
    decide: impl FnOnce(&str, Option<u32>) -> Accept,
) -> Result<(TcpStream, Peer), Failed> {
    let run = async {
        let mut hs = ServerSideHandshake::new(stream.compat(), me.local(), &me.cookie);
        let name = hs.execute_recv_name().await.map_err(err)?;
        let Some(name) = name else {
            return Err(Failed("dynamic node names are not supported".into()));
        };
        let status = match decide(&name.to_string(), None) {
            Accept::Ok => HandshakeStatus::Ok,
            Accept::OkSimultaneous => HandshakeStatus::OkSimultaneous,
            Accept::Nok => HandshakeStatus::Nok,
            Accept::NotAllowed => HandshakeStatus::NotAllowed,
        };
        let (conn, peer) = hs.execute_rest(status).await.map_err(err)?;
        Ok((
            conn.into_inner(),
            Peer {
                name: peer.name.to_string(),
                creation: peer.creation.map_or(0, |c| c.get()),
                flags: peer.flags.bits(),
            },
        ))
    };
    tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| Failed("handshake timed out".into()))?
}

/// How a connect attempt ended.
pub enum ClientOutcome {
    /// Connected.
    Up(TcpStream, Peer),
    /// The peer keeps its own attempt to us, or still has an old
    /// connection (`nok` / `alive`): try again later.
    Busy,
}

/// Connects to `peer` at `host:port` and runs the handshake within `timeout`.
pub async fn connect(
    host: &str,
    port: u16,
    me: &Identity,
    timeout: Duration,
) -> Result<ClientOutcome, Failed> {
    let run = async {
        let s = TcpStream::connect((host, port))
            .await
            .map_err(|e| Failed(format!("connect {host}:{port}: {e}")))?;
        let _ = s.set_nodelay(true);
        let mut hs = ClientSideHandshake::new(s.compat(), me.local(), &me.cookie);
        let status = hs
            .execute_send_name(erl_dist::LOWEST_DISTRIBUTION_PROTOCOL_VERSION)
            .await
            .map_err(err)?;
        match status {
            HandshakeStatus::Ok | HandshakeStatus::OkSimultaneous => {}
            HandshakeStatus::Nok | HandshakeStatus::Alive => return Ok(ClientOutcome::Busy),
            other => return Err(Failed(format!("peer refused: {other:?}"))),
        }
        let (conn, peer) = hs.execute_rest(true).await.map_err(|e| match e {
            // OTP closes the connection on a bad challenge reply.
            HandshakeError::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
                Failed(PEER_CLOSED_ON_REPLY.into())
            }
            e => err(e),
        })?;
        Ok(ClientOutcome::Up(
            conn.into_inner(),
            Peer {
                name: peer.name.to_string(),
                creation: peer.creation.map_or(0, |c| c.get()),
                flags: peer.flags.bits(),
            },
        ))
    };
    tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| Failed("handshake timed out".into()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_the_tested_set() {
        // The set recorded in cnode-notes.md, plus SMALL_ATOM_TAGS.
        assert_eq!(local_flags().bits(), 0x5_0707_0fbc | 0x4000);
        assert_eq!(local_flags().bits() & 1, 0, "hidden: not PUBLISHED");
        assert_eq!(
            local_flags().bits() & DistributionFlags::MANDATORY_25_DIGEST.bits(),
            0
        );
    }
}
