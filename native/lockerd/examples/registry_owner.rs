//! A Rust service that owns a name in `Locker.Registry` and answers the
//! calls BEAM code makes with `GenServer.call({:via, Locker.Registry, name}, msg)`.
//!
//! ```sh
//! cargo run -p lockerd --example registry_owner -- \
//!   --name svc@127.0.0.1 --cookie secret \
//!   --masters a@127.0.0.1,b@127.0.0.1,c@127.0.0.1 --w 2 --register worker1
//! ```
//!
//! It answers `ping` with `pong`, `{echo, X}` with `{echo, X, ThisNode}`,
//! `stop` with `ok` (then releases the name and exits), anything else with
//! `{error, {unknown_request, Req}}`; casts and plain messages are logged.
//! Once the name is held it prints `registered NAME PID` on stdout. When
//! the name is lost (its lease could not be extended in time, see
//! `RegisteredName`), it prints `lost NAME` before the lease could run
//! out on the masters, then exits with status 3.

use std::time::Duration;

use clap::Parser;
use locker_client::{Client, Incoming, RawTerm, Term};

#[derive(Parser, Debug)]
struct Args {
    /// This service's node name.
    #[arg(long)]
    name: String,
    /// Cookie (else `$LOCKER_COOKIE`, else `~/.erlang.cookie`).
    #[arg(long)]
    cookie: Option<String>,
    /// Masters, comma separated.
    #[arg(long, value_delimiter = ',')]
    masters: Vec<String>,
    /// Replicas, comma separated.
    #[arg(long, value_delimiter = ',')]
    replicas: Vec<String>,
    /// Write quorum (default: a majority of the masters).
    #[arg(long)]
    w: Option<usize>,
    /// The name to own (an atom).
    #[arg(long)]
    register: String,
    /// Lease length in milliseconds (extended every third of it, as
    /// `Locker.Registry` does).
    #[arg(long, default_value_t = 5000)]
    lease_ms: u64,
    /// How long before its lease could run out a name that could not be
    /// extended is given up, in milliseconds (default: a fifth of the
    /// lease, at least 100 ms, at most half of it).
    #[arg(long)]
    margin_ms: Option<u64>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let args = Args::parse();
    let mut builder = Client::builder(&args.name)
        .masters(&args.masters)
        .replicas(&args.replicas);
    builder = match args.cookie {
        Some(c) => builder.cookie(c),
        None => builder.cookie_from_env(),
    };
    if let Some(w) = args.w {
        builder = builder.w(w);
    }
    let client = builder.start().await.unwrap_or_else(|e| {
        eprintln!("cannot start: {e}");
        std::process::exit(match e {
            locker_client::Error::InvalidArgument { .. } => 2,
            _ => 1,
        })
    });
    // The name is an atom: made from this program's own argument.
    let name = RawTerm(Term::atom(&args.register));
    let timeout = Duration::from_secs(5);
    let lease = Duration::from_millis(args.lease_ms);
    let margin = args.margin_ms.map_or_else(
        || locker_client::default_margin(lease),
        Duration::from_millis,
    );
    let mut owned = loop {
        match client
            .register_name_with_margin(
                &name,
                lease,
                (lease / 3).max(Duration::from_millis(1)),
                margin,
                timeout,
            )
            .await
        {
            Ok(o) => break o,
            Err(e @ locker_client::Error::InvalidArgument { .. }) => {
                eprintln!("{e}");
                std::process::exit(2)
            }
            Err(e) => {
                tracing::warn!("{e}; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    println!("registered {} {:?}", args.register, owned.pid());
    let me = Term::Atom(client.node().name().clone());
    while let Some(msg) = owned.recv().await {
        match msg {
            Incoming::Call { from, request } => {
                if request.is_atom("stop") {
                    owned.reply(&from, Term::static_atom("ok"));
                    break;
                }
                let reply = match request.as_tuple() {
                    _ if request.is_atom("ping") => Term::atom("pong"),
                    Some([e, x]) if e.is_atom("echo") => {
                        Term::tuple(vec![e.clone(), x.clone(), me.clone()])
                    }
                    _ => Term::tuple(vec![
                        Term::atom("error"),
                        Term::tuple(vec![Term::atom("unknown_request"), request.clone()]),
                    ]),
                };
                owned.reply(&from, reply);
            }
            Incoming::Cast(m) => tracing::info!(msg = %m, "cast"),
            Incoming::Info(m) => tracing::info!(msg = %m, "message"),
            Incoming::LeaseLost => {
                println!("lost {}", args.register);
                tracing::error!("name lost: exiting");
                // Lets the keeper finish its last requests (no promise
                // left on the masters this node still reaches).
                let _ = owned.unregister(timeout).await;
                client.stop().await;
                std::process::exit(3);
            }
        }
    }
    let r = owned.unregister(timeout).await;
    match r {
        Ok(q) => println!(
            "released {} {{ok,{},{},{}}}",
            args.register, q.w, q.votes, q.commits
        ),
        Err(e) => println!("released {} {{error,{e}}}", args.register),
    }
    client.stop().await;
}
