//! `lockerd`: a locker master or replica as a Rust C-node.
//!
//! This is the command-line surface; joining the distribution (epmd,
//! handshake, the `locker` process) is the subject of its own issue and is
//! not implemented yet: the program says so and exits with status 2.

use clap::Parser;

/// A locker node in Rust: joins an Erlang cluster as a master or replica.
#[derive(Parser, Debug)]
#[command(name = "lockerd", version, about, long_about = None)]
struct Args {
    /// Node name, e.g. `locker1@127.0.0.1` (long) or `locker1@host` (short).
    #[arg(long)]
    name: String,
    /// Distribution cookie (else `$LOCKER_COOKIE`, else `~/.erlang.cookie`).
    #[arg(long, env = "LOCKER_COOKIE", hide_env_values = true)]
    cookie: Option<String>,
    /// Master nodes, comma separated.
    #[arg(long, value_delimiter = ',')]
    masters: Vec<String>,
    /// Replica nodes, comma separated.
    #[arg(long, value_delimiter = ',')]
    replicas: Vec<String>,
    /// Write quorum.
    #[arg(long, default_value_t = 2)]
    w: usize,
}

fn main() {
    let args = Args::parse();
    eprintln!(
        "lockerd: joining the distribution as {} is not implemented yet (masters {:?}, replicas {:?}, w {})",
        args.name, args.masters, args.replicas, args.w
    );
    std::process::exit(2);
}
