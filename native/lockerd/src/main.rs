//! `lockerd`: a locker master or replica as a Rust C-node. See `--help`.

use std::sync::Arc;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use erl_node::metrics::Metrics;
use erl_node::{Atom, HeldLimits, Node, NodeConfig};
use lockerd::cli::{ensure_epmd, find_cookie, Args, Checked};
use lockerd::locker::{Locker, LockerConfig};
use lockerd::metrics::LockerMetrics;

/// The store's large blocks (each shard's entry vector and index, grown
/// step by step as leases arrive) are mapped rather than carved from the
/// heap: grown in place with `mremap` and unmapped when replaced, instead
/// of leaving the replaced blocks as holes in the heap. With glibc's
/// default (128 KiB, raised as large blocks are freed) such holes made
/// about 35 of the 119 bytes of RSS per lease at 200k leases.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_malloc() {
    /// Allocations from this size on get a mapping of their own.
    const MMAP_THRESHOLD: libc::c_int = 32 * 1024;
    // SAFETY: mallopt only sets an allocator parameter; no thread runs yet.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_malloc() {}

fn main() {
    tune_malloc();
    let args = Args::parse();
    let checked = args.check().unwrap_or_else(|e| {
        Args::command()
            .error(clap::error::ErrorKind::ValueValidation, e)
            .exit()
    });
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&args.log));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // One thread: no cross-thread wakeups between a connection's reader,
    // the locker task and the writers (the BEAM nodes it serves usually
    // share the machine's cores).
    let rt = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    }
    .expect("tokio runtime");
    let code = rt.block_on(run(args, checked));
    rt.shutdown_timeout(Duration::from_secs(1));
    std::process::exit(code);
}

async fn run(args: Args, checked: Checked) -> i32 {
    let cookie = match find_cookie(args.cookie.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}");
            return 2;
        }
    };
    let start_epmd = args.start_epmd;
    match tokio::task::spawn_blocking(move || ensure_epmd(start_epmd)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            eprintln!("lockerd: {e}");
            return 1;
        }
        Err(e) => {
            tracing::error!("epmd check: {e}");
            return 1;
        }
    }
    let mut cfg = NodeConfig::new(&checked.node_name, &cookie);
    cfg.listen = args.listen;
    cfg.net_ticktime = Duration::from_secs(args.net_ticktime.max(1));
    cfg.max_peers = args.max_peers;
    cfg.max_frame = args.max_frame;
    cfg.frame_budget = args.frame_budget;
    cfg.held_limits = HeldLimits {
        peer_monitors: args.max_peer_monitors,
        monitors: args.max_monitors,
        peer_links: args.max_peer_links,
        links: args.max_links,
    };
    let metrics = Arc::new(Metrics::default());
    let node = match Node::start(cfg, metrics.clone()).await {
        Ok(n) => n,
        Err(e) => {
            tracing::error!("{e}");
            return 1;
        }
    };
    if let Err(e) = erl_node::net_kernel::spawn(&node) {
        tracing::error!("{e}");
        return 1;
    }
    let lcfg = LockerConfig {
        w: checked.w,
        masters: args.masters.iter().map(|s| Atom::new(s)).collect(),
        replicas: args.replicas.iter().map(|s| Atom::new(s)).collect(),
        lease_expire: Duration::from_millis(args.lease_expire_ms.max(1)),
        lock_expire: Duration::from_millis(args.lock_expire_ms.max(1)),
        push: Duration::from_millis(args.push_ms.max(1)),
        promise_ttl: Duration::from_millis(args.promise_ttl_ms),
        restart_abstain: Duration::from_millis(args.restart_abstain_ms),
    };
    let locker_metrics = Arc::new(LockerMetrics::default());
    let locker = match Locker::new(&node, lcfg, locker_metrics.clone()) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("{e}");
            return 1;
        }
    };
    if let Some(addr) = args.metrics {
        let n = node.clone();
        let render = move || locker_metrics.render(&metrics, n.connected().len());
        match lockerd::metrics::serve(addr, render).await {
            Ok(a) => tracing::info!(addr = %a, "metrics at /metrics"),
            Err(e) => {
                tracing::error!(%addr, "metrics endpoint: {e}");
                return 1;
            }
        }
    }
    if args.announce {
        println!("lockerd ready {} {}", node.port(), node.creation());
    }
    tracing::info!(node = %node.name(), masters = ?args.masters, replicas = ?args.replicas, "locker serving");
    check_peers(&node, args.masters.iter().chain(args.replicas.iter()));
    let stop = erl_node::shutdown::on_signal();
    locker.run(stop).await;
    node.stop(Duration::from_secs(2)).await;
    tracing::info!("bye");
    0
}

/// Tries each other master and replica once, in the background, and says
/// plainly what is wrong with those it cannot reach: a cookie refused,
/// a node unknown to epmd on its host, a host unreachable. (The locker
/// keeps reconnecting every second whatever this finds.)
fn check_peers<'a>(node: &Node, peers: impl Iterator<Item = &'a String>) {
    let peers: Vec<Atom> = peers
        .map(|p| Atom::new(p))
        .filter(|p| p != node.name())
        .collect();
    let node = node.clone();
    tokio::spawn(async move {
        for p in peers {
            match node.connect_now(&p).await {
                Ok(()) => tracing::info!(peer = %p, "connected"),
                Err(e @ erl_node::ConnectError::BadCookie) => {
                    tracing::error!(peer = %p, "{e}: check --cookie against the cluster's")
                }
                Err(e @ erl_node::ConnectError::NotRegistered { .. }) => {
                    tracing::warn!(peer = %p, "unknown node: {e} (not started yet, or a typo in --masters/--replicas?)")
                }
                Err(e) => tracing::warn!(peer = %p, "unreachable: {e}"),
            }
        }
    });
}
