//! The Rust client (`locker_client`) driven line by line from stdin: what
//! the Common Test suites use to run it against real nodes.
//!
//! ```sh
//! cargo run -p lockerd --example client_cli -- \
//!   --name cli@127.0.0.1 --cookie secret --masters a@127.0.0.1,b@127.0.0.1,c@127.0.0.1
//! ```
//!
//! Each request is one line; keys and values are strings (binaries in
//! Erlang), lease lengths milliseconds. Each answer is one line on
//! stdout, starting with `reply`:
//!
//! | request                   | answer                                       |
//! |---------------------------|----------------------------------------------|
//! | `lock KEY VALUE MS`       | `reply ok W VOTES COMMITS` or `reply error ERROR` |
//! | `token KEY VALUE MS`      | `reply ok TOKEN` or `reply error ERROR`       |
//! | `extend KEY VALUE MS`     | as `lock`                                    |
//! | `release KEY VALUE`       | as `lock`                                    |
//! | `view`                    | `reply view COUNTER PROPOSER W JOINT MASTERS` (`JOINT`: `joint` or `single`, `MASTERS` comma separated) |
//!
//! Once started it prints `client ready`; it exits when stdin closes.

use std::time::Duration;

use clap::Parser;
use locker_client::{Client, Error, Quorum};

#[derive(Parser, Debug)]
struct Args {
    /// This client's node name.
    #[arg(long)]
    name: String,
    /// Cookie (else `$LOCKER_COOKIE`, else `~/.erlang.cookie`).
    #[arg(long)]
    cookie: Option<String>,
    /// Masters, comma separated.
    #[arg(long, value_delimiter = ',')]
    masters: Vec<String>,
    /// Write quorum (default: a majority of the masters).
    #[arg(long)]
    w: Option<usize>,
}

fn quorum(r: Result<Quorum, Error>) -> String {
    match r {
        Ok(q) => format!("reply ok {} {} {}", q.w, q.votes, q.commits),
        Err(e) => format!("reply error {}", one_word(&e)),
    }
}

fn one_word(e: &Error) -> String {
    match e {
        Error::NoQuorum => "no_quorum".to_string(),
        other => other.to_string().replace(' ', "_"),
    }
}

fn ms(s: Option<&str>) -> Duration {
    Duration::from_millis(s.and_then(|s| s.parse().ok()).unwrap_or(1000))
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
    let mut builder = Client::builder(&args.name).masters(&args.masters);
    builder = match args.cookie {
        Some(c) => builder.cookie(c),
        None => builder.cookie_from_env(),
    };
    if let Some(w) = args.w {
        builder = builder.w(w);
    }
    let client = builder.start().await.unwrap_or_else(|e| {
        eprintln!("cannot start: {e}");
        std::process::exit(1)
    });
    // Lines from stdin, read on a thread of their own.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            match line {
                Ok(l) => {
                    if tx.send(l).is_err() {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
    });
    println!("client ready");
    let t = Duration::from_secs(5);
    while let Some(line) = rx.recv().await {
        let words: Vec<&str> = line.split_whitespace().collect();
        let answer = match words.as_slice() {
            ["lock", k, v, lease] => quorum(client.lock(*k, *v, ms(Some(lease)), t).await),
            ["token", k, v, lease] => {
                match client.lock_with_token(*k, *v, ms(Some(lease)), t).await {
                    Ok(token) => format!("reply ok {token}"),
                    Err(e) => format!("reply error {}", one_word(&e)),
                }
            }
            ["extend", k, v, lease] => {
                quorum(client.extend_lease(*k, *v, ms(Some(lease)), t).await)
            }
            ["release", k, v] => quorum(client.release(*k, *v, t).await),
            ["view"] => {
                let (counter, proposer) = client.epoch();
                let masters: Vec<String> = client.masters().iter().map(|m| m.to_string()).collect();
                format!(
                    "reply view {counter} {proposer} {} {} {}",
                    client.w(),
                    if client.is_joint() { "joint" } else { "single" },
                    masters.join(",")
                )
            }
            _ => format!("reply error unknown_request_{}", line.replace(' ', "_")),
        };
        println!("{answer}");
    }
    client.stop().await;
}
