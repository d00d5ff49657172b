//! The cluster client's health check against a real cluster: a `BLPOP`
//! that blocks for 30 s on a node is never taken for a silent node, and
//! topology checks made while it is in flight neither wait behind it nor
//! give its socket up. (A frozen master under load is in
//! `cluster_change.rs`; the per-core runtime's, in `tools/chaos.sh
//! --freeze`.)

use std::time::{Duration, Instant};

use redcore::Commands;
use redcore::cluster::{Cluster, NodeAddr};
use redcore::{ClusterConfig, cmd};
use redcore_test_support::RedisCluster;
use redcore_test_support::client::{run, wait_until};

const H: Duration = Duration::from_millis(200);

#[test]
fn a_blocked_reply_is_not_a_silent_node_and_checks_do_not_wait_for_it() {
    let cluster = RedisCluster::start();
    let seeds = cluster.seed_addrs();
    run(move || async move {
        let config = ClusterConfig::builder()
            .seeds(seeds)
            .connection(|c| c.health_interval(Some(H)))
            .refresh_interval(None)
            .build()
            .unwrap();
        let client = Cluster::connect(config).await.unwrap();
        let key = "{health}:jobs";
        let node: NodeAddr = {
            let slot = redcore::slot::key_slot(key.as_bytes());
            let info = client.info();
            info.nodes
                .iter()
                .find(|n| n.slots.iter().any(|&(a, b)| (a..=b).contains(&slot)))
                .expect("the key's master")
                .addr
                .clone()
        };
        let blpop = glommio::spawn_local({
            let client = client.with_timeout(Duration::from_secs(35));
            async move {
                client
                    .command::<Option<(String, String)>>(cmd("BLPOP").arg(key).arg(30))
                    .await
            }
        });
        let node_info = |client: &Cluster| {
            client
                .info()
                .nodes
                .into_iter()
                .find(|n| n.addr == node)
                .expect("the node")
        };
        wait_until("the BLPOP sent", Duration::from_secs(10), || {
            node_info(&client).commands >= 1
        })
        .await;
        // Topology checks while the node's socket carries the blocked
        // call: each ends quickly (the other nodes answer for all slots).
        for _ in 0..5 {
            let started = Instant::now();
            client.refresh().await.unwrap();
            let took = started.elapsed();
            assert!(took < Duration::from_secs(1), "a refresh took {took:?}");
            glommio::timer::sleep(2 * H).await;
        }
        let other = Cluster::connect(cluster_seeds(&client)).await.unwrap();
        other.command::<i64>(["LPUSH", key, "job-1"]).await.unwrap();
        let popped = blpop.await.unwrap();
        assert_eq!(popped, Some((key.to_owned(), "job-1".to_owned())));
        let n = node_info(&client);
        assert_eq!(
            n.stalls, 0,
            "the blocked reply was taken for silence: {n:?}"
        );
        assert_eq!(n.reconnects, 0, "the node's socket was given up: {n:?}");
        // Still routed there, and answering.
        let len: i64 = client.command(["LLEN", key]).await.unwrap();
        assert_eq!(len, 0);
    });
}

/// A configuration with the same seeds as `client`'s.
fn cluster_seeds(client: &Cluster) -> ClusterConfig {
    ClusterConfig::builder()
        .seeds(client.config().seeds.clone())
        .build()
        .unwrap()
}
