//! The client library's two-phase rule: a success needs W masters to
//! apply phase two, not just to promise. Three masters (W = 2): one real
//! `lockerd` and two nodes of this test (hidden C-nodes on loopback) whose
//! `locker` promises every key and loses every write, as masters cut off
//! between the phases would. Needs `epmd` (skipped without it).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{epmd_up, start_lockerd};
use erl_node::metrics::Metrics;
use erl_node::term::Term;
use erl_node::{Node, NodeConfig, Signal};
use locker_client::{Client, Error};
use tokio::sync::mpsc;

/// A node whose `locker` answers `ok` to every `get_write_lock` and
/// `release_write_lock`, never answers `write` or `extend_lease`, and
/// reports each request it gets.
async fn forgetful_master(name: &str, cookie: &str) -> (Node, mpsc::UnboundedReceiver<Term>) {
    let node = Node::start(NodeConfig::new(name, cookie), Arc::new(Metrics::default()))
        .await
        .expect("node");
    let mut mb = node.spawn(Some("locker")).expect("register locker");
    let (tx, rx) = mpsc::unbounded_channel();
    let n = node.clone();
    tokio::spawn(async move {
        while let Some(sig) = mb.recv().await {
            let Signal::Message { msg, .. } = sig else {
                continue;
            };
            let Some((pid, tag, req)) = msg.as_gen_call() else {
                continue;
            };
            let op = req
                .as_tuple()
                .and_then(|r| r.first())
                .and_then(Term::as_atom);
            let _ = tx.send(req.clone());
            match op.map(|a| a.as_str()) {
                Some("get_write_lock") | Some("release_write_lock") => {
                    n.send_reply(pid, tag, Term::atom("ok"));
                }
                _ => {} // lost
            }
        }
    });
    (node, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promised_but_not_applied_is_no_quorum() {
    if !epmd_up() {
        eprintln!("epmd not available: skipped");
        return;
    }
    let id = std::process::id();
    let cookie = "partial_test";
    let real = format!("pcl{id}_1@127.0.0.1");
    let fakes = [
        format!("pcl{id}_2@127.0.0.1"),
        format!("pcl{id}_3@127.0.0.1"),
    ];
    let masters = [real.as_str(), fakes[0].as_str(), fakes[1].as_str()];
    let (_n2, mut seen2) = forgetful_master(&fakes[0], cookie).await;
    let (_n3, mut seen3) = forgetful_master(&fakes[1], cookie).await;
    let all = masters.join(",");
    let _daemon = start_lockerd(&[
        "--name",
        &real,
        "--cookie",
        cookie,
        "--announce",
        "--log",
        "warn",
        "--masters",
        &all,
    ]);

    let client = Client::builder(&format!("pclc{id}@127.0.0.1"))
        .cookie(cookie)
        .masters(masters)
        .w(2)
        .start()
        .await
        .expect("client");
    let t = Duration::from_millis(500);
    let key = "partial";
    let lease = Duration::from_secs(60);
    // All three promise; only the real master stores it.
    assert_eq!(client.lock(key, "v", lease, t).await, Err(Error::NoQuorum));
    assert_eq!(
        client.lock_with_token(key, "v2", lease, t).await,
        Err(Error::NoQuorum)
    );
    // Each forgetful master saw: promise, write (lost), release of the
    // promise, for both attempts.
    for seen in [&mut seen2, &mut seen3] {
        let mut ops = Vec::new();
        while ops.len() < 6 {
            let req = tokio::time::timeout(Duration::from_secs(5), seen.recv())
                .await
                .expect("requests")
                .expect("open");
            let items = req.as_tuple().expect("tuple").to_vec();
            ops.push(items[0].as_atom().expect("op").as_str().to_string());
        }
        assert_eq!(
            ops,
            ["get_write_lock", "write", "release_write_lock"].repeat(2),
            "requests seen"
        );
    }
    drop(client);
}
