//! `Node::connect_now` tells why it could not connect: a wrong cookie,
//! a node unknown to epmd; and connects otherwise. Needs epmd (skipped
//! without it).

use std::sync::Arc;
use std::time::Duration;

use erl_node::metrics::Metrics;
use erl_node::{Atom, ConnectError, Node, NodeConfig};

fn epmd_up() -> bool {
    let _ = std::process::Command::new("epmd").arg("-daemon").status();
    (0..50).any(|_| {
        let up = std::net::TcpStream::connect("127.0.0.1:4369").is_ok();
        if !up {
            std::thread::sleep(Duration::from_millis(20));
        }
        up
    })
}

async fn node(name: &str, cookie: &str) -> Node {
    let n = Node::start(NodeConfig::new(name, cookie), Arc::new(Metrics::default()))
        .await
        .expect("node");
    erl_node::net_kernel::spawn(&n).expect("net_kernel");
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_now_reports_the_reason() {
    if !epmd_up() {
        eprintln!("epmd not available: skipped");
        return;
    }
    let id = std::process::id();
    let a = node(&format!("cna{id}@127.0.0.1"), "one").await;
    let b = node(&format!("cnb{id}@127.0.0.1"), "one").await;
    let c = node(&format!("cnc{id}@127.0.0.1"), "another").await;

    assert_eq!(a.connect_now(c.name()).await, Err(ConnectError::BadCookie));
    assert!(!a.is_connected(c.name()));
    // Again: a failed attempt leaves nothing behind.
    assert_eq!(a.connect_now(c.name()).await, Err(ConnectError::BadCookie));

    let nobody = Atom::new(&format!("cnx{id}@127.0.0.1"));
    assert!(matches!(
        a.connect_now(&nobody).await,
        Err(ConnectError::NotRegistered { .. })
    ));
    assert!(matches!(
        a.connect_now(&Atom::new("no_at_sign")).await,
        Err(ConnectError::InvalidName(_))
    ));

    // An attempt whose caller stops waiting still ends (in its task).
    let _ = tokio::time::timeout(Duration::from_micros(1), a.connect_now(c.name())).await;
    assert_eq!(a.connect_now(c.name()).await, Err(ConnectError::BadCookie));

    assert_eq!(a.connect_now(b.name()).await, Ok(()));
    assert!(a.is_connected(b.name()));
    assert_eq!(a.connect_now(b.name()).await, Ok(()), "already connected");
    // wait_connected backs off and gives up at its timeout.
    assert!(!a.wait_connected(c.name(), Duration::from_millis(300)).await);
    for n in [a, b, c] {
        n.stop(Duration::from_secs(1)).await;
    }
}
