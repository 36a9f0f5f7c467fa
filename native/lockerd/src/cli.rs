//! The `lockerd` command line, and where the cookie comes from.

use std::net::SocketAddr;

use clap::Parser;

/// A locker master or replica as a Rust C-node: joins an Erlang cluster
/// (hidden), registers `locker` and serves the locker wire protocol to
/// BEAM nodes, which reach it with `gen_server:multi_call(Nodes, locker, ...)`
/// like any locker node.
///
/// Example: lockerd --name locker1@127.0.0.1 --cookie secret
///   --masters a@127.0.0.1,b@127.0.0.1,locker1@127.0.0.1 --w 2
#[derive(Parser, Debug, Clone)]
#[command(name = "lockerd", version, about, long_about)]
pub struct Args {
    /// Node name: `locker1@127.0.0.1` (long names, pairs with `erl -name`)
    /// or `locker1@host` (short names, pairs with `erl -sname`).
    #[arg(long)]
    pub name: String,
    /// Distribution cookie (else `$LOCKER_COOKIE`, else `~/.erlang.cookie`).
    #[arg(long, hide_env_values = true)]
    pub cookie: Option<String>,
    /// Master nodes, comma separated (this node included if it is one).
    #[arg(long, value_delimiter = ',')]
    pub masters: Vec<String>,
    /// Replica nodes, comma separated.
    #[arg(long, value_delimiter = ',')]
    pub replicas: Vec<String>,
    /// Write quorum (kept for `get_meta`-like views; the coordinator runs
    /// on the calling node).
    #[arg(long, default_value_t = 2)]
    pub w: i64,
    /// Address to listen on for distribution connections (port 0: any).
    #[arg(long, default_value = "0.0.0.0:0")]
    pub listen: SocketAddr,
    /// Serve Prometheus metrics on this address at `/metrics`.
    #[arg(long)]
    pub metrics: Option<SocketAddr>,
    /// OTP's net_ticktime in seconds: a silent peer is dropped after it;
    /// ticks go out every quarter of it.
    #[arg(long, default_value_t = 60)]
    pub net_ticktime: u64,
    /// Lease sweep interval in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub lease_expire_ms: u64,
    /// Promise sweep interval in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub lock_expire_ms: u64,
    /// Transaction log push interval in milliseconds (masters with replicas).
    #[arg(long, default_value_t = 100)]
    pub push_ms: u64,
    /// How long an unused write promise holds its key, in milliseconds.
    #[arg(long, default_value_t = locker_core::quorum::PROMISE_TTL_MS)]
    pub promise_ttl_ms: u64,
    /// Safe mode after a restart: for this many milliseconds after start,
    /// refuse promises on keys this node holds no lease for (set it to the
    /// longest lease in use; 0: off), like the BEAM node's
    /// `restart_abstain_ms`.
    #[arg(long, default_value_t = 0)]
    pub restart_abstain_ms: u64,
    /// Most connected nodes; further incoming connections are refused.
    #[arg(long, default_value_t = 256)]
    pub max_peers: usize,
    /// Largest distribution frame accepted, in bytes; a bigger one closes
    /// the connection.
    #[arg(long, default_value_t = 64 << 20)]
    pub max_frame: usize,
    /// Bytes that frames longer than a connection's 64 KiB read buffer
    /// may hold while they arrive, over all connections (at least
    /// --max-frame). A connection whose frame does not fit stops reading
    /// until others complete theirs, for half of --net-ticktime at most,
    /// then is closed.
    #[arg(long, default_value_t = 128 << 20)]
    pub frame_budget: usize,
    /// Most monitors the processes of one connected node may hold on one
    /// process of this node; more are answered `noproc`.
    #[arg(long, default_value_t = erl_node::process::PEER_HELD_DEFAULT)]
    pub max_peer_monitors: usize,
    /// Most monitors remote processes may hold on this node in all.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_monitors: usize,
    /// Most links the processes of one connected node may hold with one
    /// process of this node; more are refused with an exit signal
    /// (`noproc`), as for a process that is gone.
    #[arg(long, default_value_t = erl_node::process::PEER_HELD_DEFAULT)]
    pub max_peer_links: usize,
    /// Most links remote processes may hold with this node in all.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_links: usize,
    /// Worker threads of the runtime (1: a single-threaded runtime).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Log filter (tracing's EnvFilter syntax; `$RUST_LOG` wins).
    #[arg(long, default_value = "info")]
    pub log: String,
    /// Print the node's port and creation on stdout once registered
    /// (`lockerd ready <port> <creation>`), for scripts and tests.
    #[arg(long)]
    pub announce: bool,
}

/// Reads the cookie like `erl`: the given one, else `$LOCKER_COOKIE`, else
/// `~/.erlang.cookie`.
pub fn find_cookie(given: Option<&str>) -> Result<String, String> {
    if let Some(c) = given {
        return Ok(c.to_string());
    }
    if let Ok(c) = std::env::var("LOCKER_COOKIE") {
        return Ok(c);
    }
    let home = std::env::var("HOME")
        .map_err(|_| "no cookie: --cookie, $LOCKER_COOKIE or $HOME/.erlang.cookie".to_string())?;
    let path = std::path::Path::new(&home).join(".erlang.cookie");
    std::fs::read_to_string(&path)
        .map(|s| s.trim().to_string())
        .map_err(|e| {
            format!(
                "no cookie: --cookie, $LOCKER_COOKIE, or {}: {e}",
                path.display()
            )
        })
}
