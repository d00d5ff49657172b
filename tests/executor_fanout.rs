//! Cluster-wide commands through the per-core runtime on a real 3+3
//! cluster: each of 2 cores fans out with its `CoreClient` (the masters
//! the other core owns are reached over the mesh), and a `RemoteClient`
//! does the same from a plain thread, its futures `Send`.

use std::collections::BTreeSet;
use std::time::Duration;

use futures_lite::future::block_on;
use redcore::cluster::{ClusterCommands, NodeAddr, Target};
use redcore::prelude::*;
use redcore::{Cluster, ClusterConfig, ClusterExecutor, CoreClient, Error};
use redcore_test_support::RedisCluster;
use redcore_test_support::client::run;

const N: usize = 200;

fn is_send<T: Send>(_: &T) {}

/// What a core's client sees: DBSIZE summed, KEYS concatenated, one
/// reply per master, `command_to` a node the other core owns.
async fn check_core(client: &CoreClient, masters: &BTreeSet<NodeAddr>) -> Result<usize, Error> {
    let total: i64 = client.command(["DBSIZE"]).await?;
    assert_eq!(total, N as i64, "core {}", client.core());
    let keys: Vec<String> = client.command(["KEYS", "xfan:*"]).await?;
    assert_eq!(keys.len(), N, "core {}", client.core());

    let replies = client.per_node(Target::AllMasters, ["DBSIZE"]).await?;
    let asked: BTreeSet<NodeAddr> = replies.replies.iter().map(|(a, _)| a.clone()).collect();
    assert_eq!(&asked, masters, "core {}", client.core());
    let mut sum = 0;
    for (addr, reply) in replies {
        match reply? {
            redcore::Value::Integer(n) => sum += n,
            other => panic!("{addr}: {other:?}"),
        }
    }
    assert_eq!(sum, N as i64);

    // The masters another core owns, each asked directly.
    let info = client.info();
    let remote: Vec<NodeAddr> = info
        .nodes
        .iter()
        .filter(|n| masters.contains(&n.addr) && n.owner_core.is_some())
        .map(|n| n.addr.clone())
        .collect();
    for addr in &remote {
        let n: i64 = client
            .command_to(Target::Node(addr.clone()), ["DBSIZE"])
            .await?;
        assert!(n > 0, "{addr} holds keys");
    }
    let all: i64 = client.command_to(Target::AllMasters, ["DBSIZE"]).await?;
    assert_eq!(all, N as i64);
    Ok(remote.len())
}

#[test]
fn core_clients_and_a_remote_client_fan_out() {
    let cluster = RedisCluster::start();
    let seeds = cluster.seed_addrs();
    let masters: BTreeSet<NodeAddr> = cluster.masters().into_iter().map(NodeAddr::from).collect();
    let s = seeds.clone();
    run(move || async move {
        let client = Cluster::connect(s).await.unwrap();
        let keys: Vec<String> = (0..N).map(|i| format!("xfan:{i}")).collect();
        let pairs: Vec<(&str, &str)> = keys.iter().map(|k| (k.as_str(), "v")).collect();
        client.mset(&pairs).await.unwrap();
    });

    let config = ClusterConfig::builder().seeds(seeds).build().unwrap();
    let (stop, stopped) = async_channel::bounded::<()>(1);
    let m = masters.clone();
    let handle = ClusterExecutor::new(config)
        .unwrap()
        .cores(2)
        .unwrap()
        .spawn(move |client| {
            let stopped = stopped.clone();
            let masters = m.clone();
            async move {
                let remote_masters = check_core(&client, &masters).await;
                let _ = stopped.recv().await;
                remote_masters
            }
        })
        .unwrap();

    let remote = handle.remote();
    let dbsize = remote.command::<i64>(["DBSIZE"]);
    is_send(&dbsize);
    assert_eq!(block_on(dbsize).unwrap(), N as i64);
    let per_node = remote.per_node(Target::AllMasters, ["DBSIZE"]);
    is_send(&per_node);
    let replies = block_on(per_node).unwrap();
    let asked: BTreeSet<NodeAddr> = replies.replies.iter().map(|(a, _)| a.clone()).collect();
    assert_eq!(asked, masters);
    let first = masters.iter().next().unwrap().clone();
    let to_node = remote.command_to::<i64>(Target::Node(first.clone()), ["DBSIZE"]);
    is_send(&to_node);
    let n = block_on(to_node).unwrap();
    assert_eq!(
        replies.get(&first).unwrap().clone().unwrap(),
        redcore::Value::Integer(n)
    );
    let keys: Vec<String> = block_on(remote.command(["KEYS", "xfan:*"])).unwrap();
    assert_eq!(keys.len(), N);
    drop(stop);

    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(handle.join());
    });
    let results = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the runtime ends");
    assert_eq!(results.len(), 2);
    let mut owned_elsewhere = 0;
    for result in results {
        owned_elsewhere += result.expect("a core's checks").expect("no error");
    }
    // 3 masters over 2 cores: each core reaches at least one through the
    // other.
    assert!(
        owned_elsewhere >= 2,
        "{owned_elsewhere} masters over the mesh"
    );
}
