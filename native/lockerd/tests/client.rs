//! The client library (`locker_client`) against a cluster of three
//! `lockerd` masters (real processes on loopback, W = 2): the replies of
//! `locker.erl`'s coordinator, typed keys and values, fencing tokens, rpc
//! dirty reads, a registered name answering calls, a master killed
//! mid-run, a registered name lost while two masters are paused; and
//! `start`'s errors: a wrong cookie (against a BEAM node, whose log must
//! not fill with rejected handshakes), unknown masters, a node name in
//! use, invalid arguments. Needs `epmd` (skipped without it).

mod common;

use std::time::Duration;

use common::{epmd_up, start_lockerd, Daemon};
use erl_node::term::Term;
use erl_node::Signal;
use locker_client::{Client, Error, Incoming, Quorum, RawTerm};

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

async fn client(name: &str, masters: &[String]) -> Client {
    Client::builder(name)
        .cookie("client_test")
        .masters(masters)
        .start()
        .await
        .expect("client")
}

#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq, Clone)]
struct Owner {
    host: String,
    worker: u32,
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
    let client = client(&format!("clc{id}@127.0.0.1"), &names).await;
    assert_eq!(client.w(), 2, "W defaults to a majority");
    let t = Duration::from_secs(5);
    let lease = Duration::from_secs(60);
    let me = RawTerm(Term::pid(client.node().spawn(None).unwrap().pid().clone()));
    let key = ("job", 1);
    let ok3 = Quorum {
        w: 2,
        votes: 3,
        commits: 3,
    };
    assert_eq!(client.lock(&key, &me, lease, t).await, Ok(ok3));
    assert_eq!(
        client.lock(&key, "other", lease, t).await,
        Err(Error::NoQuorum)
    );
    assert_eq!(
        client.dirty_read::<RawTerm, _>(&key, t).await,
        Ok(Some(me.clone()))
    );
    assert_eq!(client.update(&key, &me, &7, t).await, Ok(ok3));
    assert_eq!(client.update(&key, &me, &8, t).await, Err(Error::NoQuorum));
    assert_eq!(client.extend_lease(&key, &7, lease, t).await, Ok(ok3));
    assert_eq!(
        client.extend_lease(&key, &1, lease, t).await,
        Err(Error::NoQuorum)
    );
    assert_eq!(client.release(&key, &7, t).await, Ok(ok3));
    assert_eq!(client.dirty_read::<i64, _>(&key, t).await, Ok(None));

    // Typed values: a struct stored by Rust comes back as the struct, from
    // each master; it is an Erlang map with atom keys there.
    let owner = Owner {
        host: "web-1".into(),
        worker: 3,
    };
    assert_eq!(client.lock("typed", &owner, lease, t).await, Ok(ok3));
    for m in &names {
        assert_eq!(
            client.dirty_read_from::<Owner, _>(m, "typed", t).await,
            Ok(Some(owner.clone()))
        );
    }
    let raw: Option<RawTerm> = client.dirty_read("typed", t).await.unwrap();
    assert_eq!(
        raw.map(|r| r.0),
        Some(Term::map(vec![
            (Term::atom("host"), Term::binary(b"web-1")),
            (Term::atom("worker"), Term::Int(3)),
        ]))
    );
    // A value of another shape is a decode error, not a panic.
    assert!(matches!(
        client.dirty_read::<u32, _>("typed", t).await,
        Err(Error::Decode(_))
    ));
    assert_eq!(client.release("typed", &owner, t).await, Ok(ok3));

    // Arguments are checked before anything is sent.
    for (r, arg) in [
        (client.lock("k", "v", Duration::ZERO, t).await, "lease"),
        (
            client.lock("k", "v", Duration::from_micros(999), t).await,
            "lease",
        ),
        (
            client.lock("k", "v", lease, Duration::ZERO).await,
            "timeout",
        ),
        (
            client
                .extend_lease("k", "v", Duration::from_secs(400 * 86_400), t)
                .await,
            "lease",
        ),
    ] {
        match r {
            Err(Error::InvalidArgument { arg: a, .. }) => assert_eq!(a, arg),
            other => panic!("expected an invalid {arg}, got {other:?}"),
        }
    }
    assert!(matches!(
        client.lock("k", &f64::NAN, lease, t).await,
        Err(Error::Encode(_))
    ));
    assert!(matches!(
        client
            .dirty_read_from::<u32, _>("nobody@127.0.0.1", "k", t)
            .await,
        Err(Error::InvalidArgument { arg: "master", .. })
    ));

    // Fencing tokens increase across acquisitions.
    let t1 = client.lock_with_token(&key, &me, lease, t).await.unwrap();
    assert_eq!(client.release(&key, &me, t).await, Ok(ok3));
    let t2 = client.lock_with_token(&key, &me, lease, t).await.unwrap();
    assert!(t2 > t1);
    assert_eq!(client.release(&key, &me, t).await, Ok(ok3));

    // A registered name answers a gen_server-style call.
    let svc = RawTerm(Term::atom("svc"));
    let mut owned = client
        .register_name(&svc, Duration::from_secs(1), Duration::from_millis(300), t)
        .await
        .unwrap();
    let owner_pid = RawTerm(Term::pid(owned.pid().clone()));
    // Taken: a second owner is told so.
    assert!(matches!(
        client
            .register_name(&svc, Duration::from_secs(1), Duration::from_millis(300), t)
            .await,
        Err(Error::NameTaken { .. })
    ));
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
        client.dirty_read::<RawTerm, _>(&svc, t).await,
        Ok(Some(owner_pid.clone()))
    );
    assert_eq!(owned.unregister(t).await, Ok(ok3));

    // One master killed: still a quorum.
    drop(daemons.pop());
    let k2 = "after_kill";
    let ok2 = Quorum {
        w: 2,
        votes: 2,
        commits: 2,
    };
    let r = client.lock(k2, &me, lease, t).await;
    assert_eq!(r, Ok(ok2), "{r:?}");
    assert_eq!(client.release(k2, &me, t).await, Ok(ok2));
    let attempts = client.connection_attempts();

    // Restarted, it is connected again by its keeper (with backoff), and
    // votes again.
    daemons.push(start(&names[2], &masters));
    let waited = tokio::time::Instant::now();
    while client.connected_masters().len() < 3 {
        assert!(
            waited.elapsed() < Duration::from_secs(60),
            "the restarted master was not reconnected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "restarted master reconnected after {:?}, {} connection attempts meanwhile",
        waited.elapsed(),
        client.connection_attempts() - attempts
    );
    assert_eq!(client.lock(k2, &me, lease, t).await, Ok(ok3));
    assert_eq!(client.release(k2, &me, t).await, Ok(ok3));
    client.stop().await;
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
    let client = client(&format!("cpc{id}@127.0.0.1"), &names).await;
    // Extensions wait up to 5 s for the paused masters: without its own
    // deadline, the keeper would report the loss long after the lease.
    let t = Duration::from_secs(5);
    let (lease, margin) = (Duration::from_secs(1), Duration::from_millis(400));
    let name = "paused_masters";
    let mut owned = client
        .register_name_with_margin(name, lease, Duration::from_millis(200), margin, t)
        .await
        .unwrap();
    let owner = RawTerm(Term::pid(owned.pid().clone()));
    assert!(owned.held_until().is_some());
    // The margin must be valid: below the lease, above the drift allowance.
    assert!(matches!(
        client
            .register_name_with_margin(
                "x",
                Duration::from_secs(1),
                Duration::from_millis(100),
                Duration::from_millis(5),
                t
            )
            .await,
        Err(Error::InvalidArgument { arg: "margin", .. })
    ));

    daemons[0].signal("STOP");
    daemons[1].signal("STOP");
    let stopped = tokio::time::Instant::now();
    let lost = tokio::time::timeout(Duration::from_secs(30), owned.recv()).await;
    let lost_after = stopped.elapsed();
    let still = client
        .dirty_read_from::<RawTerm, _>(&names[2], name, t)
        .await;
    daemons[0].signal("CONT");
    daemons[1].signal("CONT");
    assert!(
        matches!(lost, Ok(Some(Incoming::LeaseLost))),
        "expected LeaseLost, got {lost:?}"
    );
    assert!(owned.is_lost() && owned.held_until().is_none());
    println!(
        "LeaseLost {lost_after:?} after two masters of three were paused (lease {lease:?}, margin {margin:?})"
    );
    assert_eq!(
        still,
        Ok(Some(owner)),
        "the lease ran out on the running master before the owner learned it lost the name"
    );
    client.stop().await;
}
