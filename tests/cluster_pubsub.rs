//! Pub/sub on a real 3-master/3-replica cluster through
//! `redcore::cluster::Cluster`: channels, patterns and sharded channels;
//! a sharded channel whose slot is migrated (`CLUSTER SETSLOT`); a killed
//! master whose subscriptions move to the promoted replica without any
//! refresh asked by the test.
//!
//! Harness steps that block (slot moves, kills, waits on the nodes) run
//! on glommio's blocking thread, so that the client keeps running.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redcore::cluster::Cluster;
use redcore::prelude::*;
use redcore::pubsub::{ChannelKind, GapCause};
use redcore::{ClusterConfig, PubSubEvent, Subscription};
use redcore_test_support::client::{on_cluster, run, within};
use redcore_test_support::{RedisCluster, key_in_slot, key_slot};

const SECOND: Duration = Duration::from_secs(1);

async fn connect(seeds: Vec<std::net::SocketAddr>) -> Cluster {
    let config = ClusterConfig::builder()
        .seeds(seeds.iter().copied())
        .refresh_interval(None)
        .build()
        .unwrap();
    Cluster::connect(config).await.unwrap()
}

async fn next(sub: &mut Subscription) -> PubSubEvent {
    within("a pub/sub event", 20 * SECOND, sub.recv())
        .await
        .expect("the subscription ended")
}

fn message(e: PubSubEvent) -> redcore::pubsub::Message {
    match e {
        PubSubEvent::Message(m) => m,
        other => panic!("expected a message, got {other:?}"),
    }
}

/// Index of the node serving `slot` and of another master.
fn owner_and_other(c: &RedisCluster, slot: u16) -> (usize, usize) {
    let owner = c.slot_owner_index(slot);
    let other = c
        .master_indices()
        .into_iter()
        .find(|&m| m != owner)
        .unwrap();
    (owner, other)
}

#[test]
fn channels_patterns_and_sharded_channels_on_a_cluster() {
    let cluster = RedisCluster::start();
    let seeds = cluster.seed_addrs();
    // Slots 0 and 1 share a master: one subscribe per slot there.
    let owners: Vec<u16> = vec![0, 1, 6000, 12000];
    let shard_names: Vec<String> = owners.iter().map(|&s| key_in_slot(s, "orders")).collect();
    let counts_on_owner: Vec<(std::net::SocketAddr, String)> = shard_names
        .iter()
        .map(|n| (cluster.slot_owner(key_slot(n.as_bytes())), n.clone()))
        .collect();
    let cluster = Arc::new(Mutex::new(cluster));
    run(move || async move {
        let client = connect(seeds).await;
        // Sharded channels of four slots (three masters), one handle.
        let mut shards = client.ssubscribe(&shard_names).await.unwrap();
        let mut chan = client.subscribe(["news"]).await.unwrap();
        let mut pat = client.psubscribe(["news.*"]).await.unwrap();
        const N: usize = 4000;
        for i in 0..N {
            let name = &shard_names[i % 4];
            assert_eq!(client.spublish(name, i).await.unwrap(), 1);
        }
        let mut last = [None::<usize>; 4];
        for _ in 0..N {
            let m = message(next(&mut shards).await);
            assert_eq!(m.kind, ChannelKind::Shard);
            let which = shard_names
                .iter()
                .position(|n| m.channel == n.as_bytes())
                .unwrap();
            let i: usize = std::str::from_utf8(&m.payload).unwrap().parse().unwrap();
            assert_eq!(i % 4, which);
            assert!(last[which].is_none_or(|l| l + 4 == i), "order on {which}");
            last[which] = Some(i);
        }
        // PUBLISH reaches a subscriber on another node (broadcast).
        client.publish("news", "a").await.unwrap();
        client.publish("news.sport", "b").await.unwrap();
        assert_eq!(message(next(&mut chan).await).payload, "a");
        let m = message(next(&mut pat).await);
        assert_eq!(
            (m.pattern.as_deref(), &m.payload[..]),
            (Some(&b"news.*"[..]), &b"b"[..])
        );
        // Dropping unsubscribes on the owners.
        drop(shards);
        let c = cluster.clone();
        let probe = counts_on_owner.clone();
        on_cluster(&c, move |c| {
            for (addr, name) in &probe {
                let i = c.node_index(*addr).unwrap();
                redcore_test_support::wait_until(
                    "the owner to drop the sharded subscription",
                    5 * SECOND,
                    || {
                        c.node(i)
                            .cmd(&["PUBSUB", "SHARDNUMSUB", name])
                            .lines()
                            .last()
                            .map(str::to_owned)
                            == Some("0".into())
                    },
                );
            }
        })
        .await;
        client.set("still", "works").await.unwrap();
    });
}

#[test]
fn a_sharded_channel_follows_its_slot_when_it_is_migrated() {
    let cluster = RedisCluster::start();
    let seeds = cluster.seed_addrs();
    let slot = 777;
    let name = key_in_slot(slot, "moving");
    let (from, to) = owner_and_other(&cluster, slot);
    let cluster = Arc::new(Mutex::new(cluster));
    run(move || async move {
        let client = connect(seeds).await;
        let mut sub = client.ssubscribe([&name]).await.unwrap();
        let mut stay = client
            .ssubscribe([key_in_slot(9000, "staying")])
            .await
            .unwrap();
        client.spublish(&name, "before").await.unwrap();
        assert_eq!(message(next(&mut sub).await).payload, "before");
        let moved_at = Instant::now();
        on_cluster(&cluster, move |c| c.move_slot(slot, from, to)).await;
        // The server unsubscribes on its own; the client follows.
        let gap = match next(&mut sub).await {
            PubSubEvent::Gap(g) => g,
            other => panic!("expected the gap of the move, got {other:?}"),
        };
        assert_eq!(gap.cause, GapCause::Moved);
        assert!(gap.to >= moved_at);
        // SPUBLISH goes to the new owner (the client learns by MOVED).
        let mut delivered = 0;
        let deadline = Instant::now() + 10 * SECOND;
        while delivered == 0 {
            assert!(Instant::now() < deadline, "no subscriber on the new owner");
            delivered = client.spublish(&name, "after").await.unwrap_or(0);
        }
        assert_eq!(message(next(&mut sub).await).payload, "after");
        assert!(stay.try_recv().is_none(), "the other slot saw nothing");
        let on_new = on_cluster(&cluster, {
            let name = name.clone();
            move |c| c.node(to).cmd(&["PUBSUB", "SHARDNUMSUB", &name])
        })
        .await;
        assert!(on_new.ends_with('1'), "{on_new}");
    });
}

#[test]
fn subscriptions_move_to_the_promoted_replica_when_a_master_is_killed() {
    master_lost(false);
}

#[test]
fn subscriptions_move_to_the_promoted_replica_when_a_master_is_frozen() {
    master_lost(true);
}

/// Kills (or freezes with `SIGSTOP`) the master of a sharded channel's
/// and a channel's slot; both subscriptions must move to the promoted
/// replica by themselves.
fn master_lost(freeze: bool) {
    const NODE_TIMEOUT: Duration = Duration::from_millis(2000);
    let cluster = RedisCluster::builder()
        .node_timeout_ms(NODE_TIMEOUT.as_millis() as u64)
        .start();
    cluster.warm_up();
    let seeds = cluster.seed_addrs();
    let master = cluster.master_indices()[0];
    let slot = {
        let view = cluster.cluster_nodes(master);
        let me = view.iter().find(|n| n.is_myself()).unwrap();
        me.slots[0].0
    };
    let shard_name = key_in_slot(slot, "failover");
    let chan_name = key_in_slot(slot, "broadcast");
    let cluster = Arc::new(Mutex::new(cluster));
    run(move || async move {
        let client = connect(seeds).await;
        let mut shard = client.ssubscribe([&shard_name]).await.unwrap();
        let mut chan = client.subscribe([&chan_name]).await.unwrap();
        client.spublish(&shard_name, "before").await.unwrap();
        assert_eq!(message(next(&mut shard).await).payload, "before");
        let killed = on_cluster(&cluster, move |c| {
            let at = Instant::now();
            if freeze {
                c.node(master).pause(true);
            } else {
                c.kill_node(master);
            }
            at
        })
        .await;
        // When the nodes agree on the new master, seen from the harness
        // while the client runs.
        let c = cluster.clone();
        let promoted = glommio::spawn_local(async move {
            on_cluster(&c, move |c| {
                c.wait_for_new_master_of(slot, master, 30 * SECOND);
                Instant::now()
            })
            .await
        });
        // No refresh asked: the client sees the node go and the cluster
        // promote its replica by itself.
        let mut resubscribed = Vec::new();
        for sub in [&mut shard, &mut chan] {
            let gap = match next(sub).await {
                PubSubEvent::Gap(g) => g,
                other => panic!("expected a gap, got {other:?}"),
            };
            assert_eq!(gap.cause, GapCause::Moved);
            assert!(gap.from >= killed);
            resubscribed.push(gap.to);
        }
        let promoted = promoted.await;
        for at in resubscribed {
            let after_kill = at.duration_since(killed);
            let after_promotion = at.saturating_duration_since(promoted);
            println!(
                "RESUBSCRIBED ({}) {:.2} s after the kill, {:.2} s after the nodes agreed on the new master \
                 (they agreed {:.2} s after the kill; node-timeout {:.1} s)",
                if freeze { "frozen" } else { "killed" },
                after_kill.as_secs_f64(),
                after_promotion.as_secs_f64(),
                promoted.duration_since(killed).as_secs_f64(),
                NODE_TIMEOUT.as_secs_f64()
            );
            // The cluster's own failover takes node-timeout and an
            // election; the client's part must fit in the 2 s beyond.
            assert!(
                after_promotion <= 2 * SECOND,
                "resubscribed {after_promotion:?} after the promotion"
            );
        }
        let deadline = Instant::now() + 10 * SECOND;
        loop {
            assert!(
                Instant::now() < deadline,
                "nothing delivered after the failover"
            );
            let s = client.spublish(&shard_name, "after").await.unwrap_or(0);
            let c = client.publish(&chan_name, "after").await.unwrap_or(0);
            if s > 0 && c > 0 {
                break;
            }
            glommio::timer::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(message(next(&mut shard).await).payload, "after");
        // PUBLISH may have reached the subscriber before a try that
        // counted it; every delivery says "after".
        assert_eq!(message(next(&mut chan).await).payload, "after");
        if freeze {
            on_cluster(&cluster, move |c| c.node(master).pause(false)).await;
        }
    });
}
