//! The `lockerd` command line: its arguments and their checks, where the
//! cookie comes from, and epmd (started when absent, as `erl` does).

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

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
    /// Long node name, pairs with `erl -name`: `locker1@127.0.0.1` or
    /// `locker1@host.example.com` (a host with a dot); `locker1` alone
    /// takes this machine's fully qualified host name.
    #[arg(long, required_unless_present = "sname", conflicts_with = "sname")]
    pub name: Option<String>,
    /// Short node name, pairs with `erl -sname`: `locker1` (this
    /// machine's host name up to its first dot) or `locker1@host`.
    #[arg(long)]
    pub sname: Option<String>,
    /// Distribution cookie (else `$LOCKER_COOKIE`, else `~/.erlang.cookie`).
    #[arg(long, hide_env_values = true)]
    pub cookie: Option<String>,
    /// Master nodes, comma separated (this node included if it is one).
    #[arg(long, value_delimiter = ',')]
    pub masters: Vec<String>,
    /// Replica nodes, comma separated.
    #[arg(long, value_delimiter = ',')]
    pub replicas: Vec<String>,
    /// Write quorum W (kept for `get_meta`-like views; the coordinator
    /// runs on the calling node): a majority of the masters at least, at
    /// most their number. Default: a majority (N / 2 + 1).
    #[arg(long)]
    pub w: Option<i64>,
    /// Start epmd (`epmd -daemon`) when none answers on
    /// 127.0.0.1:$ERL_EPMD_PORT (4369 by default), as `erl` does.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub start_epmd: bool,
    /// Address to listen on for distribution connections (port 0: any).
    #[arg(long, default_value = "0.0.0.0:0")]
    pub listen: SocketAddr,
    /// Serve Prometheus metrics on this address at `/metrics`.
    #[arg(long)]
    pub metrics: Option<SocketAddr>,
    /// OTP's net_ticktime in seconds: a silent peer is dropped after it;
    /// ticks go out every quarter of it.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub net_ticktime: u64,
    /// Lease sweep interval in milliseconds.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub lease_expire_ms: u64,
    /// Promise sweep interval in milliseconds.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub lock_expire_ms: u64,
    /// Transaction log push interval in milliseconds (masters with replicas).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub push_ms: u64,
    /// How long an unused write promise holds its key, in milliseconds.
    #[arg(long, default_value_t = locker_core::quorum::PROMISE_TTL_MS, value_parser = clap::value_parser!(u64).range(1..))]
    pub promise_ttl_ms: u64,
    /// Safe mode after a restart: for this many milliseconds after start,
    /// refuse promises on keys this node holds no lease for (set it to the
    /// longest lease in use; 0: off), like the BEAM node's
    /// `restart_abstain_ms`.
    #[arg(long, default_value_t = 0)]
    pub restart_abstain_ms: u64,
    /// Most connected nodes; further incoming connections are refused.
    #[arg(long, default_value_t = 256, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_peers: usize,
    /// Largest distribution frame accepted, in bytes; a bigger one closes
    /// the connection.
    #[arg(long, default_value_t = 64 << 20, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1024..))]
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
    #[arg(long, default_value_t = 1, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub threads: usize,
    /// Log filter (tracing's EnvFilter syntax; `$RUST_LOG` wins).
    #[arg(long, default_value = "info")]
    pub log: String,
    /// Print the node's port and creation on stdout once registered
    /// (`lockerd ready <port> <creation>`), for scripts and tests.
    #[arg(long)]
    pub announce: bool,
}

/// What the arguments come to once checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    /// The full node name, `alive@host`.
    pub node_name: String,
    /// The write quorum.
    pub w: i64,
}

/// The characters `erl` accepts in the alive part of a node name.
fn alive_ok(alive: &str) -> bool {
    !alive.is_empty()
        && alive
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Checks a node name given to `flag`: `alive@host`.
fn check_node(flag: &str, n: &str) -> Result<(), String> {
    match n.split_once('@') {
        Some((alive, host))
            if alive_ok(alive) && !host.is_empty() && !host.contains('@') && n.len() <= 255 =>
        {
            Ok(())
        }
        _ => Err(format!(
            "{flag}: expected node names alive@host (alive of letters, digits, _ and -), got {n:?}"
        )),
    }
}

/// This machine's host name (`gethostname`).
pub fn host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer and its length are valid; gethostname writes at
    // most that many bytes.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return None;
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    let h = String::from_utf8_lossy(&buf[..end]).trim().to_string();
    (!h.is_empty()).then_some(h)
}

/// The smallest W that is a majority of `n` masters.
pub fn majority(n: usize) -> i64 {
    (n / 2 + 1) as i64
}

impl Args {
    /// Checks the arguments the way `erl` and the locker protocol need
    /// them: the node name (`--name` a long one, `--sname` a short one),
    /// the masters and replicas (node names, each once, none both), and W
    /// (a majority of the masters, at most their number). The message
    /// names the argument and what was expected.
    pub fn check(&self) -> Result<Checked, String> {
        self.check_with_host(host_name())
    }

    fn check_with_host(&self, host: Option<String>) -> Result<Checked, String> {
        let node_name = match (&self.name, &self.sname) {
            (Some(n), _) => match n.split_once('@') {
                None => {
                    if !alive_ok(n) {
                        return Err(format!("--name: expected alive or alive@host, got {n:?}"));
                    }
                    match host {
                        Some(h) if h.contains('.') => format!("{n}@{h}"),
                        _ => {
                            return Err(format!(
                                "--name {n}: this host's name ({}) is not fully qualified; \
                                 give --name {n}@<host with a dot or IP> or use --sname {n}",
                                host.as_deref().unwrap_or("unknown")
                            ))
                        }
                    }
                }
                Some((_, h)) => {
                    check_node("--name", n)?;
                    if !h.contains('.') && !h.contains(':') {
                        return Err(format!(
                            "--name {n}: a long name needs a host with a dot (or an IP \
                             address), as `erl -name`; use --sname {n} for a short one"
                        ));
                    }
                    n.clone()
                }
            },
            (None, Some(n)) => match n.split_once('@') {
                None => {
                    if !alive_ok(n) {
                        return Err(format!("--sname: expected alive or alive@host, got {n:?}"));
                    }
                    let h = host.ok_or("--sname: this machine's host name is unknown")?;
                    let short = h.split('.').next().unwrap_or(&h);
                    format!("{n}@{short}")
                }
                Some((_, h)) => {
                    check_node("--sname", n)?;
                    if h.contains('.') {
                        return Err(format!(
                            "--sname {n}: a short name's host has no dot, as `erl -sname`; \
                             use --name {n} for a long one"
                        ));
                    }
                    n.clone()
                }
            },
            (None, None) => return Err("--name or --sname is required".into()),
        };
        for (i, m) in self.masters.iter().enumerate() {
            check_node("--masters", m)?;
            if self.masters[..i].contains(m) {
                return Err(format!(
                    "--masters: expected each master once, got {m} twice"
                ));
            }
        }
        for (i, r) in self.replicas.iter().enumerate() {
            check_node("--replicas", r)?;
            if self.replicas[..i].contains(r) || self.masters.contains(r) {
                return Err(format!(
                    "--replicas: expected each replica once and no master, got {r}"
                ));
            }
        }
        let n = self.masters.len();
        let w = match self.w {
            None => majority(n),
            Some(w) if n == 0 => {
                return Err(format!("--w {w}: W counts masters, and --masters is empty"))
            }
            Some(w) if w < majority(n) || w > n as i64 => {
                return Err(format!(
                    "--w {w}: W must be from {} (a majority) to {n}, for N = {n} masters",
                    majority(n)
                ))
            }
            Some(w) => w,
        };
        Ok(Checked { node_name, w })
    }
}

/// Where epmd listens: 127.0.0.1, `$ERL_EPMD_PORT` or 4369.
pub fn epmd_addr() -> SocketAddr {
    let port = std::env::var("ERL_EPMD_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(4369);
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn epmd_answers(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

/// Makes sure epmd answers locally: when it does not and `start` is set,
/// runs `epmd -daemon` (as `erl` does, on `$ERL_EPMD_PORT` if set) and
/// waits for it; otherwise, or if that fails, says how to get one.
pub fn ensure_epmd(start: bool) -> Result<(), String> {
    let addr = epmd_addr();
    if epmd_answers(addr) {
        return Ok(());
    }
    let hint = "start one with `epmd -daemon` (it comes with Erlang/OTP), or set \
                ERL_EPMD_PORT to the port of a running one";
    if !start {
        return Err(format!(
            "no epmd answers on {addr} (--start-epmd false): {hint}"
        ));
    }
    match std::process::Command::new("epmd").arg("-daemon").status() {
        Ok(s) if s.success() => {}
        Ok(s) => {
            return Err(format!(
                "no epmd answers on {addr}, and `epmd -daemon` failed ({s}): {hint}"
            ))
        }
        Err(e) => {
            return Err(format!(
                "no epmd answers on {addr}, and it could not be started (`epmd`: {e}): {hint}"
            ))
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if epmd_answers(addr) {
            tracing::info!(%addr, "started epmd");
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "started `epmd -daemon`, but nothing answers on {addr} after 5 s: {hint}"
    ))
}

/// Reads the cookie like `erl`: the given one, else `$LOCKER_COOKIE`, else
/// `~/.erlang.cookie`.
pub fn find_cookie(given: Option<&str>) -> Result<String, String> {
    let (cookie, from) = if let Some(c) = given {
        (c.to_string(), "--cookie".to_string())
    } else if let Ok(c) = std::env::var("LOCKER_COOKIE") {
        (c, "$LOCKER_COOKIE".to_string())
    } else {
        let home = std::env::var("HOME").map_err(|_| {
            "no cookie: --cookie, $LOCKER_COOKIE or $HOME/.erlang.cookie".to_string()
        })?;
        let path = std::path::Path::new(&home).join(".erlang.cookie");
        let c = std::fs::read_to_string(&path)
            .map(|s| s.trim().to_string())
            .map_err(|e| {
                format!(
                    "no cookie: --cookie, $LOCKER_COOKIE, or {}: {e}",
                    path.display()
                )
            })?;
        (c, path.display().to_string())
    };
    if cookie.is_empty() || cookie.len() > 255 || !cookie.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{from}: expected a cookie of 1 to 255 printable ASCII characters without spaces"
        ));
    }
    Ok(cookie)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("lockerd").chain(a.iter().copied())).unwrap()
    }

    fn check(a: &[&str]) -> Result<Checked, String> {
        args(a).check_with_host(Some("box.example.com".into()))
    }

    #[test]
    fn w_is_a_majority_of_the_masters() {
        let m = ["--name", "a@127.0.0.1", "--masters", "a@h,b@h,c@h"];
        assert_eq!(check(&m).unwrap().w, 2);
        let e = check(&[&m[..], &["--w", "1"]].concat()).unwrap_err();
        assert_eq!(
            e,
            "--w 1: W must be from 2 (a majority) to 3, for N = 3 masters"
        );
        assert!(check(&[&m[..], &["--w", "4"]].concat()).is_err());
        assert_eq!(check(&[&m[..], &["--w", "3"]].concat()).unwrap().w, 3);
        assert!(check(&["--name", "a@127.0.0.1", "--w", "1"]).is_err());
        assert_eq!(check(&["--name", "a@127.0.0.1"]).unwrap().w, 1);
    }

    #[test]
    fn node_lists_are_checked() {
        for bad in ["a@h,a@h", "nohost", "a@", "@h", "a b@h"] {
            let e = check(&["--name", "x@1.2.3.4", "--masters", bad]).unwrap_err();
            assert!(e.starts_with("--masters"), "{e}");
        }
        let e = check(&[
            "--name",
            "x@1.2.3.4",
            "--masters",
            "a@h",
            "--replicas",
            "a@h",
        ])
        .unwrap_err();
        assert!(e.starts_with("--replicas"), "{e}");
    }

    #[test]
    fn numbers_out_of_range_are_refused_naming_the_option() {
        for (opt, v) in [
            ("--net-ticktime", "0"),
            ("--push-ms", "0"),
            ("--lease-expire-ms", "0"),
            ("--lock-expire-ms", "0"),
            ("--promise-ttl-ms", "0"),
            ("--max-peers", "0"),
            ("--max-frame", "100"),
            ("--threads", "0"),
            ("--max-peers", "many"),
        ] {
            let e = Args::try_parse_from(["lockerd", "--name", "a@127.0.0.1", opt, v])
                .expect_err(opt)
                .to_string();
            assert!(e.contains(opt), "{opt} {v}: {e}");
        }
        assert!(
            Args::try_parse_from(["lockerd", "--name", "a@127.0.0.1", "--max-frame", "1024"])
                .is_ok()
        );
    }

    #[test]
    fn cookies_are_checked() {
        assert_eq!(find_cookie(Some("abc")).unwrap(), "abc");
        for bad in ["", "a b", "caf\u{e9}"] {
            let e = find_cookie(Some(bad)).unwrap_err();
            assert!(e.starts_with("--cookie: expected a cookie"), "{e}");
        }
    }

    #[test]
    fn long_and_short_names() {
        assert_eq!(check(&["--sname", "l1"]).unwrap().node_name, "l1@box");
        assert_eq!(
            check(&["--sname", "l1@other"]).unwrap().node_name,
            "l1@other"
        );
        assert!(check(&["--sname", "l1@other.example.com"]).is_err());
        assert_eq!(
            check(&["--name", "l1"]).unwrap().node_name,
            "l1@box.example.com"
        );
        assert_eq!(
            check(&["--name", "l1@10.0.0.1"]).unwrap().node_name,
            "l1@10.0.0.1"
        );
        assert!(check(&["--name", "l1@box"]).is_err());
        assert!(args(&["--name", "l1"])
            .check_with_host(Some("box".into()))
            .is_err());
        assert!(Args::try_parse_from(["lockerd", "--name", "a@1.2.3.4", "--sname", "a"]).is_err());
        assert!(Args::try_parse_from(["lockerd"]).is_err());
    }
}
