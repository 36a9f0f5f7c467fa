//! epmd: registering this node and looking up the port of others, through
//! erl_dist's client over a tokio stream.
//!
//! Every query opens its own TCP connection (erl_dist's `EpmdClient`
//! consumes itself per call). The registration connection must stay open
//! for as long as the node is registered: [`Registration`] holds it, and
//! dropping it unregisters the node.
//!
//! ```no_run
//! # async fn demo() -> Result<(), String> {
//! let registration = erl_node::epmd::register("me", 4370).await?;
//! println!("creation {}", registration.creation);
//! let port = erl_node::epmd::port_of("other", "127.0.0.1").await?;
//! println!("other@127.0.0.1 listens on {port:?}");
//! drop(registration); // unregisters
//! # Ok(()) }
//! ```

use erl_dist::epmd::{EpmdClient, NodeEntry, DEFAULT_EPMD_PORT};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

/// A live epmd registration: keep it to stay registered.
#[derive(Debug)]
pub struct Registration {
    _conn: Compat<TcpStream>,
    /// The creation epmd assigned: used in the handshake and in every pid,
    /// port and reference this node makes.
    pub creation: u32,
}

/// How long one epmd exchange (connect, request, answer) may take: an
/// epmd host that accepts and never answers, or drops packets, must not
/// stall the reconnect loop.
const EPMD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

async fn within<T>(
    what: &str,
    f: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    tokio::time::timeout(EPMD_TIMEOUT, f)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "{what}: epmd did not answer within {EPMD_TIMEOUT:?}"
            ))
        })
}

fn epmd_port() -> u16 {
    std::env::var("ERL_EPMD_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(DEFAULT_EPMD_PORT)
}

async fn client(host: &str) -> std::io::Result<EpmdClient<Compat<TcpStream>>> {
    let s = TcpStream::connect((host, epmd_port())).await?;
    s.set_nodelay(true)?;
    Ok(EpmdClient::new(s.compat()))
}

/// Registers `alive` (the part of the node name before `@`) as a hidden
/// node listening on `port`, with the local epmd.
pub async fn register(alive: &str, port: u16) -> Result<Registration, String> {
    within(&format!("registering {alive:?}"), async {
        let c = client("127.0.0.1")
            .await
            .map_err(|e| format!("cannot reach epmd on 127.0.0.1:{}: {e}", epmd_port()))?;
        let (conn, creation) = c
            .register(NodeEntry::new_hidden(alive, port))
            .await
            .map_err(|e| format!("epmd refused to register {alive:?}: {e} (name in use?)"))?;
        Ok(Registration {
            _conn: conn,
            creation: creation.get(),
        })
    })
    .await
}

/// The distribution port of `alive` on `host`, if registered there.
pub async fn port_of(alive: &str, host: &str) -> Result<Option<u16>, String> {
    within(&format!("looking up {alive}@{host}"), async {
        let c = client(host)
            .await
            .map_err(|e| format!("cannot reach epmd on {host}: {e}"))?;
        match c.get_node(alive).await {
            Ok(Some(entry)) => Ok(Some(entry.port)),
            Ok(None) => Ok(None),
            Err(e) => Err(format!("epmd lookup of {alive}@{host}: {e}")),
        }
    })
    .await
}
