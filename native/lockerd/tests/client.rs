//! The client library against a cluster of three `lockerd` masters (real
//! processes on loopback, W = 2): the replies of `locker.erl`'s
//! coordinator, fencing tokens, rpc dirty reads, a registered name answering
//! calls, a master killed mid-run, and a registered name lost while two
//! masters are paused. Needs `epmd` (skipped without it).

mod common;

use std::time::Duration;

use common::{epmd_up, start_lockerd, Daemon};
use erl_node::term::{Atom, Term};
use erl_node::Signal;
use lockerd::client::{Client, ClientConfig, Incoming, LockResult};

fn start(name: &str, masters: &str) -> Daemon {
    start_lockerd(&[
        "--name",
        name,
        "--cookie",
        "client_test",
        "--masters",
        masters,
        "--announce",
        "--log",
        "warn",
        "--threads",
        "1",
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_against_lockerd_masters() {
    if !epmd_up() {
        eprintln!("epmd not available: skipped");
        return;
    }
    let id = std::process::id();
    let names: Vec<String> = (1..=3).map(|i| format!("cl{id}_{i}@127.0.0.1")).collect();
    let masters = names.join(",");
    let mut daemons: Vec<Daemon> = names.iter().map(|n| start(n, &masters)).collect();
    let ms: Vec<&str> = names.iter().map(String::as_str).collect();
    let client = Client::start(ClientConfig::new(
        &format!("clc{id}@127.0.0.1"),
        "client_test",
        &ms,
        &[],
        2,
    ))
    .await
    .expect("client");
    let t = Duration::from_secs(5);
    let me = Term::pid(client.node().spawn(None).unwrap().pid().clone());
    let key = Term::tuple(vec![Term::atom("job"), Term::Int(1)]);
    let ok3 = LockResult::Ok {
        w: 2,
        votes: 3,
        commits: 3,
    };
    assert_eq!(client.lock(&key, &me, 60_000, t).await, ok3);
    assert_eq!(
        client.lock(&key, &Term::atom("other"), 60_000, t).await,
        LockResult::NoQuorum
    );
    let ok_me = Term::tuple(vec![Term::atom("ok"), me.clone()]);
    assert_eq!(client.dirty_read(&key, t).await, ok_me);
    assert_eq!(client.update(&key, &me, &Term::Int(7), t).await, ok3);
    assert_eq!(
        client.update(&key, &me, &Term::Int(8), t).await,
        LockResult::NoQuorum
    );
    assert_eq!(
        client.extend_lease(&key, &Term::Int(7), 60_000, t).await,
        Ok(())
    );
    assert!(client
        .extend_lease(&key, &Term::Int(1), 60_000, t)
        .await
        .is_err());
    assert_eq!(client.release(&key, &Term::Int(7), t).await, ok3);
    let not_found = Term::tuple(vec![Term::atom("error"), Term::atom("not_found")]);
    assert_eq!(client.dirty_read(&key, t).await, not_found);
    // Fencing tokens increase across acquisitions.
    let t1 = client.lock_with_token(&key, &me, 60_000, t).await.unwrap();
    assert_eq!(client.release(&key, &me, t).await, ok3);
    let t2 = client.lock_with_token(&key, &me, 60_000, t).await.unwrap();
    assert!(t2 > t1);
    assert_eq!(client.release(&key, &me, t).await, ok3);

    // A registered name answers a gen_server-style call.
    let mut owned = client
        .register_name(Term::atom("svc"), 1_000, Duration::from_millis(300), t)
        .await
        .unwrap();
    let owner = Term::pid(owned.pid().clone());
    let mut caller = client.node().spawn(None).unwrap();
    let tag = Term::reference(client.node().make_ref());
    let call = Term::tuple(vec![
        Term::atom("$gen_call"),
        Term::tuple(vec![Term::pid(caller.pid().clone()), tag.clone()]),
        Term::atom("ping"),
    ]);
    client.node().send(owned.pid(), call);
    match owned.recv().await {
        Some(Incoming::Call { from, request }) => {
            assert!(request.is_atom("ping"));
            owned.reply(&from, Term::atom("pong"));
        }
        other => panic!("expected a call, got {other:?}"),
    }
    match caller.recv().await {
        Some(Signal::Message { msg, .. }) => {
            assert_eq!(msg, Term::tuple(vec![tag, Term::atom("pong")]))
        }
        other => panic!("expected the reply, got {other:?}"),
    }
    // The keeper extends the 1 s lease.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        client.dirty_read(&Term::atom("svc"), t).await,
        Term::tuple(vec![Term::atom("ok"), owner.clone()])
    );
    assert_eq!(owned.unregister(t).await, ok3);

    // One master killed: still a quorum.
    drop(daemons.pop());
    let k2 = Term::atom("after_kill");
    let r = client.lock(&k2, &me, 60_000, t).await;
    assert_eq!(
        r,
        LockResult::Ok {
            w: 2,
            votes: 2,
            commits: 2
        },
        "{r:?}"
    );
    assert_eq!(
        client.release(&k2, &me, t).await,
        LockResult::Ok {
            w: 2,
            votes: 2,
            commits: 2
        }
    );
    client.node().stop(Duration::from_secs(1)).await;
}

/// A name whose lease cannot be extended (two masters of three paused
/// with SIGSTOP, so every extension hangs until its timeout, far longer
/// than the lease): the owner gets `LeaseLost` while the lease is still
/// held on the master that runs, i.e. before it could have run out
/// anywhere (the paused masters count from later receptions).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_name_lost_before_its_lease_runs_out() {
    if !epmd_up() {
        eprintln!("epmd not available: skipped");
        return;
    }
    let id = std::process::id();
    let names: Vec<String> = (1..=3).map(|i| format!("cp{id}_{i}@127.0.0.1")).collect();
    let masters = names.join(",");
    let daemons: Vec<Daemon> = names.iter().map(|n| start(n, &masters)).collect();
    let ms: Vec<&str> = names.iter().map(String::as_str).collect();
    let client = Client::start(ClientConfig::new(
        &format!("cpc{id}@127.0.0.1"),
        "client_test",
        &ms,
        &[],
        2,
    ))
    .await
    .expect("client");
    // Extensions wait up to 5 s for the paused masters: without its own
    // deadline, the keeper would report the loss long after the lease.
    let t = Duration::from_secs(5);
    let (lease_ms, margin) = (1_000, Duration::from_millis(400));
    let name = Term::atom("paused_masters");
    let mut owned = client
        .register_name_with_margin(
            name.clone(),
            lease_ms,
            Duration::from_millis(200),
            margin,
            t,
        )
        .await
        .unwrap();
    let owner = Term::pid(owned.pid().clone());
    assert!(owned.held_until().is_some());
    // The margin must be valid: below the lease, above the drift allowance.
    assert!(client
        .register_name_with_margin(
            Term::atom("x"),
            1_000,
            Duration::from_millis(100),
            Duration::from_millis(5),
            t
        )
        .await
        .is_err());

    daemons[0].signal("STOP");
    daemons[1].signal("STOP");
    let stopped = tokio::time::Instant::now();
    let lost = tokio::time::timeout(Duration::from_secs(30), owned.recv()).await;
    let lost_after = stopped.elapsed();
    let third = Atom::new(&names[2]);
    let still = client.rpc_dirty_read(&third, &name, t).await;
    daemons[0].signal("CONT");
    daemons[1].signal("CONT");
    assert!(
        matches!(lost, Ok(Some(Incoming::LeaseLost))),
        "expected LeaseLost, got {lost:?}"
    );
    assert!(owned.is_lost() && owned.held_until().is_none());
    println!(
        "LeaseLost {lost_after:?} after two masters of three were paused (lease {lease_ms} ms, margin {margin:?})"
    );
    assert_eq!(
        still,
        Term::tuple(vec![Term::atom("ok"), owner]),
        "the lease ran out on the running master before the owner learned it lost the name"
    );
    client.node().stop(Duration::from_secs(1)).await;
}
