//! Pub/sub on the per-core runtime against a real 3+3 cluster: one
//! server-side subscription per name per process whichever cores
//! subscribe, every message delivered once to every subscribing core,
//! publishing from any core, and subscriptions ending with the runtime.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::Duration;

use redcore::prelude::*;
use redcore::runtime::Ownership;
use redcore::{ClusterConfig, ClusterExecutor, PubSubEvent};
use redcore_test_support::client::{wait_until, within};
use redcore_test_support::{RedisCluster, key_in_slot};

const SECOND: Duration = Duration::from_secs(1);
/// Messages published on each name.
const N: usize = 300;

struct Plan {
    cores: usize,
    channels: Vec<String>,
    shards: Vec<String>,
    subscribed: AtomicUsize,
    checked: AtomicBool,
}

/// Subscribes on every core, publishes from cores 0 (channels) and 1
/// (sharded channels), and checks each core received each message once,
/// in order per name. Returns the core's count of messages.
async fn core_run(client: redcore::CoreClient, plan: Arc<Plan>) -> usize {
    let mut chans = client.subscribe(&plan.channels).await.unwrap();
    let mut shards = client.ssubscribe(&plan.shards).await.unwrap();
    // A second subscription to one name on the same core: still one
    // server-side subscription.
    let mut again = client.subscribe([&plan.channels[0]]).await.unwrap();
    plan.subscribed.fetch_add(1, Ordering::SeqCst);
    let p = plan.clone();
    wait_until("every core to subscribe", 20 * SECOND, || {
        p.subscribed.load(Ordering::SeqCst) == p.cores
    })
    .await;
    if client.core() == 0 {
        for i in 0..N {
            for c in &plan.channels {
                client.publish(c, i).await.unwrap();
            }
        }
    }
    if client.core() == 1 % plan.cores {
        for i in 0..N {
            for s in &plan.shards {
                assert_eq!(
                    client.spublish(s, i).await.unwrap(),
                    1,
                    "one subscriber per process"
                );
            }
        }
    }
    let mut received = 0;
    for (sub, names) in [(&mut chans, &plan.channels), (&mut shards, &plan.shards)] {
        let mut next: HashMap<Vec<u8>, usize> =
            names.iter().map(|n| (n.as_bytes().to_vec(), 0)).collect();
        for _ in 0..N * names.len() {
            let m = match within("a message", 20 * SECOND, sub.recv()).await {
                Some(PubSubEvent::Message(m)) => m,
                other => panic!("core {}: {other:?}", client.core()),
            };
            let want = next.get_mut(&m.channel[..]).expect("a name of ours");
            assert_eq!(
                m.payload,
                want.to_string().as_bytes(),
                "core {}",
                client.core()
            );
            *want += 1;
            received += 1;
        }
        assert!(
            sub.try_recv().is_none(),
            "core {}: a message twice",
            client.core()
        );
    }
    for i in 0..N {
        match within("a message", 20 * SECOND, again.recv()).await {
            Some(PubSubEvent::Message(m)) => assert_eq!(m.payload, i.to_string().as_bytes()),
            other => panic!("{other:?}"),
        }
    }
    let p = plan.clone();
    wait_until("the server-side check", 30 * SECOND, || {
        p.checked.load(Ordering::SeqCst)
    })
    .await;
    received
}

/// Subscribers of `name` summed over every node (`PUBSUB NUMSUB` or
/// `SHARDNUMSUB`).
fn subscribers(cluster: &RedisCluster, numsub: &str, name: &str) -> usize {
    (0..cluster.len())
        .map(|i| {
            let out = cluster.node(i).cmd(&["PUBSUB", numsub, name]);
            out.lines()
                .last()
                .and_then(|l| l.trim().parse::<usize>().ok())
                .unwrap_or(0)
        })
        .sum()
}

#[test]
fn every_core_gets_each_message_once_over_one_server_subscription() {
    let cluster = RedisCluster::start();
    for (cores, ownership) in [(2, Ownership::Sharded), (3, Ownership::EveryCore)] {
        let plan = Arc::new(Plan {
            cores,
            channels: (0..6).map(|i| format!("chan-{cores}-{i}")).collect(),
            shards: [0u16, 6000, 12000]
                .iter()
                .map(|&s| key_in_slot(s, &format!("shard{cores}")))
                .collect(),
            subscribed: AtomicUsize::new(0),
            checked: AtomicBool::new(false),
        });
        let config = ClusterConfig::builder()
            .seeds(cluster.seed_addrs())
            .build()
            .unwrap();
        let executor = ClusterExecutor::new(config)
            .unwrap()
            .cores(cores)
            .unwrap()
            .ownership(ownership);
        let p = plan.clone();
        let handle = executor
            .spawn(move |client| core_run(client, p.clone()))
            .unwrap();
        let deadline = std::time::Instant::now() + 30 * SECOND;
        while plan.subscribed.load(Ordering::SeqCst) < cores {
            assert!(
                std::time::Instant::now() < deadline,
                "the cores did not subscribe"
            );
            thread::sleep(Duration::from_millis(5));
        }
        for c in &plan.channels {
            assert_eq!(
                subscribers(&cluster, "NUMSUB", c),
                1,
                "{c} on {cores} cores"
            );
        }
        for s in &plan.shards {
            assert_eq!(
                subscribers(&cluster, "SHARDNUMSUB", s),
                1,
                "{s} on {cores} cores"
            );
        }
        plan.checked.store(true, Ordering::SeqCst);
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let _ = tx.send(handle.join());
        });
        let results = rx.recv_timeout(60 * SECOND).expect("the runtime ends");
        for r in results {
            assert_eq!(r.expect("a core's result"), N * 9);
        }
        // The runtime ended: nobody is subscribed any more.
        let p = plan.clone();
        let c = &cluster;
        let gone = (0..300).any(|_| {
            let all_gone = p.channels.iter().all(|n| subscribers(c, "NUMSUB", n) == 0);
            if !all_gone {
                thread::sleep(Duration::from_millis(10));
            }
            all_gone
        });
        assert!(gone, "subscriptions outlived the runtime");
    }
}
