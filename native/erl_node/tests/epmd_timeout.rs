//! An epmd that accepts and never answers must not hang the node: lookups
//! and registration give up with a clear error. (Its own test binary: it
//! sets `ERL_EPMD_PORT` for the whole process.)

use std::time::Duration;

#[tokio::test]
async fn silent_epmd_times_out() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accept connections and hold them open without a word.
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            conns.push(s);
        }
    });
    std::env::set_var("ERL_EPMD_PORT", port.to_string());

    // Without erl_node's own timeout this would wait forever: fail instead.
    let deadline = Duration::from_secs(60);
    let err = tokio::time::timeout(deadline, erl_node::epmd::port_of("someone", "127.0.0.1"))
        .await
        .expect("port_of gave up by itself")
        .expect_err("a silent epmd gives no port");
    assert!(err.contains("did not answer"), "{err}");
    let err = tokio::time::timeout(deadline, erl_node::epmd::register("me", 4000))
        .await
        .expect("register gave up by itself")
        .expect_err("a silent epmd registers nobody");
    assert!(err.contains("did not answer"), "{err}");
    held.abort();
}
