//! Cluster mode from the Rust client (`locker_client::Groups`): two quorum
//! groups of one `lockerd` master each (W = 1), one `Client` per group.
//! Keys land on their group's master only (the group `locker_groups.erl`
//! computes: the hash is checked against the shared vectors in
//! `locker_client`'s tests), a held key is refused, fencing tokens
//! increase per key. Needs `epmd` (skipped without it).

mod common;

use std::time::Duration;

use common::{epmd_up, start_lockerd, Daemon};
use locker_client::{Client, Error, Groups};

fn start(name: &str) -> Daemon {
    start_lockerd(&[
        "--name",
        name,
        "--cookie",
        "groups_test",
        "--masters",
        name,
        "--w",
        "1",
        "--announce",
        "--log",
        "warn",
        "--threads",
        "1",
    ])
}

async fn client(name: &str, master: &str) -> Client {
    Client::builder(name)
        .cookie("groups_test")
        .masters([master])
        .w(1)
        .start()
        .await
        .expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_route_to_their_group() {
    if !epmd_up() {
        eprintln!("epmd not available: skipped");
        return;
    }
    let id = std::process::id();
    let names: Vec<String> = (1..=2).map(|i| format!("grp{id}_{i}@127.0.0.1")).collect();
    let _daemons: Vec<Daemon> = names.iter().map(|n| start(n)).collect();
    let c1 = client(&format!("grpc{id}_1@127.0.0.1"), &names[0]).await;
    let c2 = client(&format!("grpc{id}_2@127.0.0.1"), &names[1]).await;
    let groups = Groups::new(vec![(1, c1.clone()), (2, c2.clone())]).expect("groups");
    let (t, lease) = (Duration::from_secs(5), Duration::from_secs(60));
    let mut seen = [0, 0];
    for i in 0..20u32 {
        let key = ("job", i);
        let g = groups.group_of(&key).unwrap();
        let first = groups
            .lock_with_token(&key, "me", lease, t)
            .await
            .expect("lock");
        assert_eq!(
            groups.lock(&key, "other", lease, t).await,
            Err(Error::NoQuorum)
        );
        let (own, other) = if g == 1 { (&c1, &c2) } else { (&c2, &c1) };
        let (own_m, other_m) = if g == 1 {
            (&names[0], &names[1])
        } else {
            (&names[1], &names[0])
        };
        assert_eq!(
            own.dirty_read_from::<String, _>(own_m, &key, t).await,
            Ok(Some("me".to_string()))
        );
        assert_eq!(
            other.dirty_read_from::<String, _>(other_m, &key, t).await,
            Ok(None)
        );
        assert_eq!(
            groups.dirty_read::<String, _>(&key, t).await,
            Ok(Some("me".to_string()))
        );
        groups.release(&key, "me", t).await.expect("release");
        let again = groups
            .lock_with_token(&key, "me", lease, t)
            .await
            .expect("lock again");
        assert!(again > first, "tokens increase per key");
        groups.release(&key, "me", t).await.expect("release");
        seen[(g - 1) as usize] += 1;
    }
    assert!(seen[0] > 0 && seen[1] > 0, "both groups got keys: {seen:?}");
    groups.stop().await;
}
