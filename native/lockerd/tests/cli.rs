//! The `lockerd` command line, run as a process: W and the masters
//! checked (the message names W and N), `--name` / `--sname`, and epmd
//! started when absent (or a hint when it cannot be).

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::epmd_up;

const BIN: &str = env!("CARGO_BIN_EXE_lockerd");

/// Runs lockerd to its end (it must refuse to start): status and stderr.
fn refused(args: &[&str]) -> (i32, String) {
    refused_with(args, &[])
}

/// [`refused`] with the environment variables `env` added.
fn refused_with(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run lockerd");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn w_below_a_majority_is_refused_naming_w_and_n() {
    let (code, err) = refused(&[
        "--name",
        "cliw@127.0.0.1",
        "--cookie",
        "c",
        "--masters",
        "a@127.0.0.1,b@127.0.0.1,c@127.0.0.1",
        "--w",
        "1",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--w 1: W must be from 2 (a majority) to 3, for N = 3 masters"),
        "{err}"
    );
    let (code, err) = refused(&[
        "--name",
        "cliw@127.0.0.1",
        "--masters",
        "a@127.0.0.1,b@127.0.0.1",
        "--w",
        "3",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("N = 2"), "{err}");
    let (code, err) = refused(&["--name", "cliw@127.0.0.1", "--masters", "a@127.0.0.1,a"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--masters: expected node names alive@host"),
        "{err}"
    );
    let (code, err) = refused(&[
        "--name",
        "cliw@127.0.0.1",
        "--masters",
        "a@127.0.0.1,a@127.0.0.1",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("each master once"), "{err}");
}

#[test]
fn name_and_sname_are_checked() {
    let (code, err) = refused(&["--name", "a@127.0.0.1", "--sname", "a"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot be used with"), "{err}");
    let (code, err) = refused(&["--cookie", "c"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--name"), "{err}");
    let (code, err) = refused(&["--sname", "a@host.example.com"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("a short name's host has no dot"), "{err}");
    let (code, err) = refused(&["--name", "a@localhost"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("a long name needs a host with a dot"), "{err}");
}

/// Starts lockerd with `args` and `env`; its "lockerd ready" line, and the
/// process (its standard error piped, for [`stop`]).
fn run_until_ready(args: &[&str], env: &[(&str, &str)]) -> (std::process::Child, String) {
    common::spawn_first_line(BIN, args, env, Stdio::piped())
}

fn stop(mut child: std::process::Child) -> String {
    let _ = child.kill();
    let _ = child.wait();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    err
}

#[test]
fn sname_takes_this_hosts_short_name() {
    if !epmd_up() {
        eprintln!("epmd not available: skipped");
        return;
    }
    let Some(host) = lockerd::cli::host_name() else {
        eprintln!("no host name: skipped");
        return;
    };
    let short = host.split('.').next().unwrap().to_string();
    let alive = format!("clis{}", std::process::id());
    let (child, line) = run_until_ready(
        &[
            "--sname",
            &alive,
            "--cookie",
            "c",
            "--announce",
            "--log",
            "info",
        ],
        &[],
    );
    let err = stop(child);
    assert!(line.starts_with("lockerd ready"), "{line:?}\n{err}");
    assert!(
        err.contains(&format!("{alive}@{short}")),
        "expected the node {alive}@{short} in:\n{err}"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn epmd_is_started_when_absent_or_a_hint_given() {
    // An epmd of our own on a free port: none runs there.
    let port = free_port().to_string();
    let alive = format!("clie{}", std::process::id());
    let name = format!("{alive}@127.0.0.1");
    let args = ["--name", name.as_str(), "--cookie", "c", "--announce"];

    // Not allowed to start it: the hint.
    let (code, err) = refused_with(
        &[&args[..], &["--start-epmd", "false"]].concat(),
        &[("ERL_EPMD_PORT", &port)],
    );
    assert_ne!(code, 0);
    assert!(err.contains("no epmd answers on 127.0.0.1:"), "{err}");
    assert!(err.contains("epmd -daemon"), "{err}");

    // No epmd to be found: the hint.
    let empty = std::env::temp_dir().join(format!("clie_empty_{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let (code, err) = refused_with(
        &args,
        &[("ERL_EPMD_PORT", &port), ("PATH", empty.to_str().unwrap())],
    );
    assert_ne!(code, 0);
    assert!(err.contains("could not be started"), "{err}");
    assert!(err.contains("epmd -daemon"), "{err}");

    // epmd on the PATH: lockerd starts it, as erl does.
    if Command::new("epmd").arg("-help").output().is_err() {
        eprintln!("no epmd on the PATH: the start is not tested");
        return;
    }
    let (child, line) = run_until_ready(&args, &[("ERL_EPMD_PORT", &port)]);
    let err = stop(child);
    let started = std::net::TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).is_ok();
    // Stop the epmd we started (no node is registered any more).
    let _ = Command::new("epmd")
        .arg("-kill")
        .env("ERL_EPMD_PORT", &port)
        .output();
    std::thread::sleep(Duration::from_millis(100));
    assert!(line.starts_with("lockerd ready"), "{line:?}\n{err}");
    assert!(started, "no epmd on port {port}");
}

#[test]
fn peers_it_cannot_reach_are_named_with_the_reason() {
    if !epmd_up() {
        eprintln!("epmd not available: skipped");
        return;
    }
    let id = std::process::id();
    let right = format!("clip{id}_r@127.0.0.1");
    let me = format!("clip{id}_w@127.0.0.1");
    let unknown = format!("clip{id}_none@127.0.0.1");
    let (other, line) =
        run_until_ready(&["--name", &right, "--cookie", "right", "--announce"], &[]);
    assert!(line.starts_with("lockerd ready"), "{line:?}");
    let masters = format!("{right},{me},{unknown}");
    let mut child = Command::new(BIN)
        .args([
            "--name",
            &me,
            "--cookie",
            "wrong",
            "--announce",
            "--log",
            "warn",
        ])
        .args(["--masters", &masters])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn lockerd");
    let (tx, rx) = std::sync::mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let (mut cookie, mut unknown_seen) = (false, false);
    let mut seen = Vec::new();
    while !(cookie && unknown_seen) {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(l) => {
                cookie |= l.contains(&right) && l.contains("refused our cookie");
                unknown_seen |= l.contains(&unknown) && l.contains("unknown node");
                seen.push(l);
            }
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    stop(other);
    assert!(
        cookie && unknown_seen,
        "lockerd's log:\n{}",
        seen.join("\n")
    );
}
