//! Cluster SCAN through the per-core runtime on a real 3+3 cluster: each
//! of 2 cores scans with its `CoreClient` (the masters other cores own are
//! reached over the mesh), and a `RemoteClient` scans from a plain thread
//! (each page a job on a core, the state travelling with it). Every key
//! must come back; duplicates are printed. Pages whose wait expires lose
//! no key.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use futures_lite::StreamExt;
use futures_lite::future::block_on;
use redcore::cluster::{ScanCommands, ScanOptions};
use redcore::prelude::*;
use redcore::{Cluster, ClusterConfig, ClusterExecutor};
use redcore_test_support::RedisCluster;
use redcore_test_support::client::run;

const N: usize = 3000;

/// Every key `client` scans, with repeats, through the shared trait.
async fn all_keys<C: ScanCommands>(client: &C, options: ScanOptions) -> Vec<Bytes> {
    client
        .scan(options)
        .map(|k| k.expect("a key"))
        .collect()
        .await
}

/// Asserts `got` holds every key of `expected`, and only keys of ours;
/// prints the duplicates.
fn check(label: &str, got: &[Bytes], expected: &HashSet<String>) {
    let mut counts: HashMap<String, u32> = HashMap::new();
    for k in got {
        *counts
            .entry(String::from_utf8_lossy(k).into_owned())
            .or_default() += 1;
    }
    let distinct: HashSet<String> = counts
        .keys()
        .filter(|k| k.starts_with("scan:"))
        .cloned()
        .collect();
    let duplicates: u32 = counts.values().map(|&c| c - 1).sum();
    println!(
        "SCAN {label}: {} keys expected, {} distinct returned, {duplicates} duplicates",
        expected.len(),
        distinct.len()
    );
    assert_eq!(&distinct, expected, "{label}");
}

#[test]
fn core_clients_and_a_remote_client_scan_every_key() {
    let cluster = RedisCluster::start();
    let seeds = cluster.seed_addrs();
    let expected: HashSet<String> = (0..N).map(|i| format!("scan:{i}")).collect();
    let keys: Vec<String> = expected.iter().cloned().collect();
    let s = seeds.clone();
    run(move || async move {
        let client = Cluster::connect(s).await.unwrap();
        for chunk in keys.chunks(500) {
            let pairs: Vec<(&str, &str)> = chunk.iter().map(|k| (k.as_str(), "v")).collect();
            client.mset(&pairs).await.unwrap();
        }
    });

    let config = ClusterConfig::builder().seeds(seeds).build().unwrap();
    // The cores stay up until the remote scan is done.
    let (stop, stopped) = async_channel::bounded::<()>(1);
    let handle = ClusterExecutor::new(config)
        .unwrap()
        .cores(2)
        .unwrap()
        .spawn(move |client| {
            let stopped = stopped.clone();
            async move {
                let keys = all_keys(&client, ScanOptions::new().count(50)).await;
                let _ = stopped.recv().await;
                (client.core(), keys)
            }
        })
        .unwrap();

    let remote = handle.remote();
    let mut scan = remote.scan(ScanOptions::new().count(50));
    fn is_send<T: Send>(_: &T) {}
    is_send(&scan);
    let mut got = Vec::new();
    loop {
        let page = scan.next_page();
        is_send(&page);
        match block_on(page).expect("a page") {
            Some(keys) => got.extend(keys),
            None => break,
        }
    }
    assert!(scan.state().is_done());
    check("remote client, pages", &got, &expected);
    let streamed = block_on(all_keys(&remote, ScanOptions::new().pattern("scan:*")));
    check("remote client, stream", &streamed, &expected);
    drop(stop);

    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(handle.join());
    });
    let results = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the runtime ends");
    assert_eq!(results.len(), 2);
    for result in results {
        let (core, keys) = result.expect("a core's scan");
        check(&format!("core client {core}"), &keys, &expected);
    }
}

/// A `RemoteClient` scan while a slot with keys moves from the master
/// being scanned to another, between pages (the harness runs on the test
/// thread; the cores run on their own).
#[test]
fn a_remote_scan_while_a_slot_migrates() {
    let cluster = RedisCluster::start();
    let first = cluster.slot_owner_index(0);
    let other = cluster
        .master_indices()
        .into_iter()
        .find(|&m| m != first)
        .unwrap();
    let slot = 100u16;
    assert_eq!(cluster.slot_owner_index(slot), first);
    let moving = redcore_test_support::keys_in_slot(slot, 200, "scan:moving:");
    let config = ClusterConfig::builder()
        .seeds(cluster.seed_addrs())
        .build()
        .unwrap();
    let (stop, stopped) = async_channel::bounded::<()>(1);
    let handle = ClusterExecutor::new(config)
        .unwrap()
        .cores(2)
        .unwrap()
        .spawn(move |_client| {
            let stopped = stopped.clone();
            async move {
                let _ = stopped.recv().await;
            }
        })
        .unwrap();
    let remote = handle.remote();
    let mut expected: HashSet<String> = (0..N).map(|i| format!("scan:{i}")).collect();
    expected.extend(moving.iter().cloned());
    let keys: Vec<&String> = expected.iter().collect();
    for chunk in keys.chunks(500) {
        let pairs: Vec<(&str, &str)> = chunk.iter().map(|k| (k.as_str(), "v")).collect();
        block_on(remote.mset(&pairs)).unwrap();
    }

    let mut scan = remote.scan(ScanOptions::new().count(20));
    let mut got = Vec::new();
    let mut next = |got: &mut Vec<Bytes>| match block_on(scan.next_page()) {
        Ok(Some(keys)) => {
            got.extend(keys);
            true
        }
        Ok(None) => false,
        Err(e) => panic!("a page failed: {e}"),
    };
    assert!(next(&mut got));
    cluster.begin_migration(slot, first, other);
    cluster.migrate_keys(slot, first, other, &moving[..100]);
    for _ in 0..5 {
        assert!(next(&mut got));
    }
    cluster.migrate_keys(slot, first, other, &moving[100..]);
    cluster.finish_migration(slot, other);
    while next(&mut got) {}
    check("remote client, slot migrating", &got, &expected);
    drop(stop);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(handle.join());
    });
    rx.recv_timeout(Duration::from_secs(120))
        .expect("the runtime ends");
}

/// Pages of a `RemoteClient` scan whose wait expires (a deadline so short
/// that the caller's wait, or the job's own, runs out) lose no key: the
/// scan takes a job's state only with the page that reached the caller,
/// so the keys of a page that failed come again later. Pages alternate
/// between such a client and one with the default deadline, on one
/// state.
#[test]
fn a_remote_scan_with_pages_timing_out_loses_no_key() {
    let cluster = RedisCluster::start();
    let config = ClusterConfig::builder()
        .seeds(cluster.seed_addrs())
        .build()
        .unwrap();
    let (stop, stopped) = async_channel::bounded::<()>(1);
    let handle = ClusterExecutor::new(config)
        .unwrap()
        .cores(2)
        .unwrap()
        .spawn(move |_client| {
            let stopped = stopped.clone();
            async move {
                let _ = stopped.recv().await;
            }
        })
        .unwrap();
    let remote = handle.remote();
    let expected: HashSet<String> = (0..N).map(|i| format!("scan:{i}")).collect();
    let keys: Vec<&String> = expected.iter().collect();
    for chunk in keys.chunks(500) {
        let pairs: Vec<(&str, &str)> = chunk.iter().map(|k| (k.as_str(), "v")).collect();
        block_on(remote.mset(&pairs)).unwrap();
    }
    let options = ScanOptions::new().count(20);
    let hasty = remote.with_timeout(Duration::from_micros(300));
    let mut state = redcore::cluster::ScanState::new();
    let (mut got, mut failed) = (Vec::new(), 0);
    for round in 0.. {
        assert!(round < 10_000, "the scan does not end");
        let client = if round % 2 == 0 { &hasty } else { &remote };
        let mut scan = redcore::runtime::RemoteScan::resume(client, options.clone(), state.clone());
        match block_on(scan.next_page()) {
            Ok(Some(keys)) => got.extend(keys),
            Ok(None) => break,
            Err(e) => {
                assert!(matches!(e, redcore::Error::Timeout { .. }), "{e:?}");
                failed += 1;
            }
        }
        state = scan.state().clone();
    }
    println!("{failed} pages timed out");
    assert!(failed > 0, "some pages timed out");
    check("remote client, pages timing out", &got, &expected);
    drop(stop);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(handle.join());
    });
    rx.recv_timeout(Duration::from_secs(120))
        .expect("the runtime ends");
}
