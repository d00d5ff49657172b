//! Cluster SCAN on a real 3-master/3-replica cluster: every key returned
//! (set equality, duplicates counted and printed), MATCH/COUNT/TYPE, and
//! scans that go on while slots migrate and while a master fails over
//! (each page within its deadline); a slot left migrating (a typed error,
//! not an endless scan), a dead master (the others' keys all returned
//! meanwhile), a `SCAN` timing out mid-pass (the pass goes on from its
//! cursor), and RESP2.
//!
//! Harness steps that block (slot moves, kills, failovers) run on
//! glommio's blocking thread between pages, so the client keeps running.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::StreamExt;
use redcore::cluster::{Cluster, ClusterScan, ScanOptions};
use redcore::prelude::*;
use redcore::{ClusterConfig, Error, Protocol};
use redcore_test_support::client::{on_cluster, run, wait_for_pong, within};
use redcore_test_support::{RedisCluster, keys_in_slot};

const SECOND: Duration = Duration::from_secs(1);
const N: usize = 3000;

async fn connect(seeds: Vec<std::net::SocketAddr>) -> Cluster {
    let config = ClusterConfig::builder()
        .seeds(seeds.iter().copied())
        .timeout(3 * SECOND)
        .build()
        .unwrap();
    Cluster::connect(config).await.unwrap()
}

/// Writes `scan:0..N` (strings) and returns their names.
async fn write_keys(client: &Cluster, prefix: &str, n: usize) -> HashSet<String> {
    let keys: Vec<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
    for chunk in keys.chunks(500) {
        let pairs: Vec<(&str, &str)> = chunk.iter().map(|k| (k.as_str(), "v")).collect();
        client.mset(&pairs).await.unwrap();
    }
    keys.into_iter().collect()
}

/// What a scan returned: how many times each key came.
#[derive(Default)]
struct Seen {
    counts: HashMap<Bytes, u32>,
    pages: usize,
    errors: usize,
}

impl Seen {
    fn add(&mut self, keys: Vec<Bytes>) {
        self.pages += 1;
        for k in keys {
            *self.counts.entry(k).or_default() += 1;
        }
    }

    /// Asserts every key of `expected` came, and nothing else; prints the
    /// duplicates.
    fn check(&self, label: &str, expected: &HashSet<String>) {
        let got: HashSet<String> = self
            .counts
            .keys()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect();
        let missing: Vec<&String> = expected.difference(&got).collect();
        // Keys of ours only: the harness's warm-up writes keys of its own.
        let ours = |k: &&String| {
            ["scan:", "hash:", "moving-"]
                .iter()
                .any(|p| k.starts_with(p))
        };
        let extra: Vec<&String> = got.difference(expected).filter(ours).collect();
        let duplicates: u32 = self.counts.values().map(|&c| c - 1).sum();
        println!(
            "SCAN {label}: {} keys expected, {} distinct returned, {} duplicates, {} pages, {} page errors",
            expected.len(),
            got.iter().filter(ours).count(),
            duplicates,
            self.pages,
            self.errors
        );
        assert!(
            missing.is_empty(),
            "{label}: {} keys missing, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        assert!(extra.is_empty(), "{label}: unexpected keys {extra:?}");
    }
}

/// Takes one page; errors are counted and the page asked again, until
/// `deadline`.
async fn page(scan: &mut ClusterScan, seen: &mut Seen, deadline: Instant) -> bool {
    loop {
        match scan.next_page().await {
            Ok(Some(keys)) => {
                seen.add(keys);
                return true;
            }
            Ok(None) => return false,
            Err(e) => {
                println!("page error (scan goes on): {e}");
                seen.errors += 1;
                assert!(Instant::now() < deadline, "scan still failing: {e}");
            }
        }
    }
}

async fn scan_to_end(scan: &mut ClusterScan, seen: &mut Seen, deadline: Instant) {
    while page(scan, seen, deadline).await {}
}

/// [`scan_to_end`], asserting that every call of `next_page`, ok or not,
/// returns within `limit` (the call's deadline and some slack).
async fn scan_to_end_each_within(
    scan: &mut ClusterScan,
    seen: &mut Seen,
    deadline: Instant,
    limit: Duration,
) {
    let mut slowest = Duration::ZERO;
    loop {
        let began = Instant::now();
        let outcome = scan.next_page().await;
        let took = began.elapsed();
        slowest = slowest.max(took);
        assert!(took <= limit, "a page took {took:?}: {outcome:?}");
        match outcome {
            Ok(Some(keys)) => seen.add(keys),
            Ok(None) => break,
            Err(e) => {
                println!("page error after {took:?} (scan goes on): {e}");
                seen.errors += 1;
                assert!(Instant::now() < deadline, "scan still failing: {e}");
            }
        }
    }
    println!("slowest page: {slowest:?} (limit {limit:?})");
}

#[test]
fn every_key_with_match_count_and_type() {
    let cluster = RedisCluster::start();
    let seeds = cluster.seed_addrs();
    run(move || async move {
        let client = connect(seeds).await;
        let strings = write_keys(&client, "scan:", N).await;
        let hashes: HashSet<String> = (0..100).map(|i| format!("hash:{i}")).collect();
        for h in &hashes {
            client
                .command::<()>(["HSET", h.as_str(), "f", "v"])
                .await
                .unwrap();
        }
        let deadline = Instant::now() + 60 * SECOND;

        let mut all = Seen::default();
        let mut scan = client.scan(ScanOptions::new());
        scan_to_end(&mut scan, &mut all, deadline).await;
        assert!(scan.state().unwrap().is_done());
        assert_eq!(
            scan.next_page().await.unwrap(),
            None,
            "a finished scan stays finished"
        );
        all.check("all", &strings.union(&hashes).cloned().collect());
        assert_eq!(all.errors, 0);

        // A scan stopped after a few pages and resumed from its state.
        let mut resumed = Seen::default();
        let mut scan = client.scan(ScanOptions::new().count(100));
        for _ in 0..20 {
            assert!(page(&mut scan, &mut resumed, deadline).await);
        }
        let state = scan.state().unwrap().clone();
        assert!(state.node().is_some() && !state.is_done());
        drop(scan);
        let mut scan = ClusterScan::resume(&client, ScanOptions::new().count(100), state);
        scan_to_end(&mut scan, &mut resumed, deadline).await;
        resumed.check("resumed", &strings.union(&hashes).cloned().collect());

        // The same through the Stream.
        let keys: Vec<Bytes> = client
            .scan(ScanOptions::new().count(200))
            .map(|k| k.unwrap())
            .collect()
            .await;
        let mut streamed = Seen::default();
        streamed.add(keys);
        streamed.check("stream", &strings.union(&hashes).cloned().collect());

        // MATCH.
        let mut matched = Seen::default();
        scan_to_end(
            &mut client.scan(ScanOptions::new().pattern("scan:1*")),
            &mut matched,
            deadline,
        )
        .await;
        let want: HashSet<String> = strings
            .iter()
            .filter(|k| k.starts_with("scan:1"))
            .cloned()
            .collect();
        matched.check("MATCH scan:1*", &want);

        // TYPE.
        let mut typed = Seen::default();
        scan_to_end(
            &mut client.scan(ScanOptions::new().kind("hash")),
            &mut typed,
            deadline,
        )
        .await;
        typed.check("TYPE hash", &hashes);

        // COUNT: more work per SCAN, fewer pages.
        let mut small = Seen::default();
        scan_to_end(
            &mut client.scan(ScanOptions::new().count(10)),
            &mut small,
            deadline,
        )
        .await;
        let mut large = Seen::default();
        scan_to_end(
            &mut client.scan(ScanOptions::new().count(1000)),
            &mut large,
            deadline,
        )
        .await;
        small.check("COUNT 10", &strings.union(&hashes).cloned().collect());
        large.check("COUNT 1000", &strings.union(&hashes).cloned().collect());
        assert!(
            large.pages * 10 < small.pages,
            "COUNT 1000: {} pages, COUNT 10: {}",
            large.pages,
            small.pages
        );

        // A server error that no retry fixes reaches the caller at once.
        let err = client
            .scan(ScanOptions::new().count(0))
            .next_page()
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Server(_)), "{err:?}");
    });
}

/// Slot `a` of the master being scanned moves to another master, and slot
/// `b` of that master moves to the one being scanned, both in the middle
/// of the first pass (keys moved in two `MIGRATE` batches, pages taken in
/// between).
#[test]
fn every_key_while_slots_migrate() {
    let cluster = RedisCluster::start();
    let seeds = cluster.seed_addrs();
    let first = cluster.slot_owner_index(0);
    let other = cluster
        .master_indices()
        .into_iter()
        .find(|&m| m != first)
        .unwrap();
    let a = 100u16;
    assert_eq!(cluster.slot_owner_index(a), first);
    let b = (0..16384u16)
        .find(|&s| cluster.slot_owner_index(s) == other)
        .unwrap();
    let a_keys = keys_in_slot(a, 200, "moving-a:");
    let b_keys = keys_in_slot(b, 200, "moving-b:");
    let cluster = Arc::new(Mutex::new(cluster));
    run(move || async move {
        let client = connect(seeds).await;
        let mut expected = write_keys(&client, "scan:", N).await;
        for k in a_keys.iter().chain(&b_keys) {
            client
                .command::<()>(["SET", k.as_str(), "v"])
                .await
                .unwrap();
            expected.insert(k.clone());
        }
        let deadline = Instant::now() + 90 * SECOND;
        let mut seen = Seen::default();
        let mut scan = client.scan(ScanOptions::new().count(20));
        assert!(page(&mut scan, &mut seen, deadline).await);
        let (ak, bk) = (a_keys.clone(), b_keys.clone());
        on_cluster(&cluster, move |c| {
            c.begin_migration(a, first, other);
            c.begin_migration(b, other, first);
            c.migrate_keys(a, first, other, &ak[..100]);
            c.migrate_keys(b, other, first, &bk[..100]);
        })
        .await;
        for _ in 0..5 {
            assert!(page(&mut scan, &mut seen, deadline).await);
        }
        let (ak, bk) = (a_keys.clone(), b_keys.clone());
        on_cluster(&cluster, move |c| {
            c.migrate_keys(a, first, other, &ak[100..]);
            c.migrate_keys(b, other, first, &bk[100..]);
            c.finish_migration(a, other);
            c.finish_migration(b, first);
        })
        .await;
        within(
            "the scan",
            90 * SECOND,
            scan_to_end(&mut scan, &mut seen, deadline),
        )
        .await;
        seen.check("while slots migrate", &expected);
    });
}

/// A slot left migrating, as when a resharding tool dies halfway
/// (`SETSLOT MIGRATING` on its master, `IMPORTING` on the target, some
/// keys already moved): the scan returns every key of every other slot,
/// then its pages fail with [`Error::SlotMigrating`] naming the slot, each
/// by the call's deadline, instead of scanning the same master forever.
/// Once an operator ends the migration (`SETSLOT NODE` on both), the same
/// scan goes on to its end with the slot's keys.
#[test]
fn a_slot_left_migrating_ends_each_page_with_a_typed_error() {
    let cluster = RedisCluster::start();
    let seeds = cluster.seed_addrs();
    let first = cluster.slot_owner_index(0);
    let other = cluster
        .master_indices()
        .into_iter()
        .find(|&m| m != first)
        .unwrap();
    let stuck = 100u16;
    assert_eq!(cluster.slot_owner_index(stuck), first);
    let stuck_keys = keys_in_slot(stuck, 100, "moving-a:");
    let cluster = Arc::new(Mutex::new(cluster));
    run(move || async move {
        let client = connect(seeds).await;
        let others = write_keys(&client, "scan:", N).await;
        for k in &stuck_keys {
            client
                .command::<()>(["SET", k.as_str(), "v"])
                .await
                .unwrap();
        }
        let ks = stuck_keys.clone();
        on_cluster(&cluster, move |c| {
            c.begin_migration(stuck, first, other);
            c.migrate_keys(stuck, first, other, &ks[..50]);
        })
        .await;
        let timeout = SECOND;
        let short = client.with_timeout(timeout);
        let mut seen = Seen::default();
        let mut scan = short.scan(ScanOptions::new().count(50));
        let err = within("the scan to fail", 60 * SECOND, async {
            loop {
                let began = Instant::now();
                let outcome = scan.next_page().await;
                let took = began.elapsed();
                assert!(
                    took <= timeout + SECOND,
                    "a page took {took:?}: {outcome:?}"
                );
                match outcome {
                    Ok(Some(keys)) => seen.add(keys),
                    Ok(None) => panic!("the scan ended with slot {stuck} unfinished"),
                    Err(e) => return e,
                }
            }
        })
        .await;
        assert!(
            matches!(err, Error::SlotMigrating { slot } if slot == stuck),
            "{err:?}"
        );
        let state = scan.state().unwrap().clone();
        assert_eq!(state.finished_slots(), 16383);
        let got: HashSet<String> = seen
            .counts
            .keys()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect();
        let missing = others.difference(&got).count();
        assert_eq!(missing, 0, "keys of the other slots missing");
        // Again from the same state: the same error, by the deadline.
        let began = Instant::now();
        let again = scan.next_page().await.unwrap_err();
        assert!(matches!(again, Error::SlotMigrating { slot } if slot == stuck));
        assert!(began.elapsed() <= timeout + SECOND);

        // The operator finishes the move; the scan goes on from its state.
        let ks = stuck_keys.clone();
        on_cluster(&cluster, move |c| {
            c.migrate_keys(stuck, first, other, &ks[50..]);
            c.finish_migration(stuck, other);
        })
        .await;
        let deadline = Instant::now() + 60 * SECOND;
        let mut scan = ClusterScan::resume(&client, ScanOptions::new().count(50), state);
        within(
            "the resumed scan",
            60 * SECOND,
            scan_to_end(&mut scan, &mut seen, deadline),
        )
        .await;
        let all: HashSet<String> = others
            .union(&stuck_keys.iter().cloned().collect())
            .cloned()
            .collect();
        seen.check("a slot left migrating, then moved", &all);
    });
}

/// A master killed before the scan, with no replica taking over (a long
/// node timeout): its slots wait while the other masters' keys are all
/// returned, each page ending by the call's deadline; when it comes back,
/// the scan ends with its keys too.
#[test]
fn a_dead_master_does_not_hold_up_the_others() {
    let cluster = RedisCluster::builder()
        .node_timeout_ms(60_000)
        .config("appendonly yes")
        .config("appendfsync always")
        .start();
    let seeds = cluster.seed_addrs();
    // The master of slot 0: the first a scan visits.
    let dead = cluster.slot_owner_index(0);
    let dead_port = cluster.node(dead).port();
    let cluster = Arc::new(Mutex::new(cluster));
    run(move || async move {
        let client = connect(seeds).await;
        let expected = write_keys(&client, "scan:", N).await;
        let on_dead: HashSet<String> = {
            let c = cluster.lock().unwrap();
            expected
                .iter()
                .filter(|k| c.node_for_key(k).port() == dead_port)
                .cloned()
                .collect()
        };
        assert!(!on_dead.is_empty() && on_dead.len() < expected.len());
        on_cluster(&cluster, move |c| c.kill_node(dead)).await;
        let timeout = SECOND;
        let short = client.with_timeout(timeout);
        let mut seen = Seen::default();
        let mut scan = short.scan(ScanOptions::new().count(100));
        let live: HashSet<String> = expected.difference(&on_dead).cloned().collect();
        within("the live masters' keys", 60 * SECOND, async {
            loop {
                let got: HashSet<String> = seen
                    .counts
                    .keys()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .collect();
                if live.is_subset(&got) {
                    break;
                }
                let began = Instant::now();
                let outcome = scan.next_page().await;
                let took = began.elapsed();
                assert!(
                    took <= timeout + SECOND,
                    "a page took {took:?}: {outcome:?}"
                );
                match outcome {
                    Ok(Some(keys)) => seen.add(keys),
                    Ok(None) => panic!("the scan ended with a master dead"),
                    Err(e) => {
                        println!("page error after {took:?}: {e}");
                        seen.errors += 1;
                    }
                }
            }
        })
        .await;
        on_cluster(&cluster, move |c| c.restart_node(dead)).await;
        let (_, conn) = client
            .master_connections()
            .into_iter()
            .find(|(addr, _)| addr.port == dead_port)
            .expect("a connection to the restarted master");
        wait_for_pong(&conn, 30 * SECOND).await;
        let deadline = Instant::now() + 60 * SECOND;
        within(
            "the scan",
            60 * SECOND,
            scan_to_end(&mut scan, &mut seen, deadline),
        )
        .await;
        seen.check("a dead master, back later", &expected);
    });
}

/// A `SCAN` that times out in the middle of a pass (the master frozen for
/// a moment, shorter than the cluster's node timeout) keeps the pass: the
/// next page goes on from its cursor once the node answers, so no key of
/// the pass comes twice (a pass started again from cursor 0 would return
/// each of its keys so far a second time).
#[test]
fn a_scan_timeout_mid_pass_goes_on_from_the_cursor() {
    let cluster = RedisCluster::builder().node_timeout_ms(30_000).start();
    let seeds = cluster.seed_addrs();
    let cluster = Arc::new(Mutex::new(cluster));
    run(move || async move {
        let client = connect(seeds).await;
        let expected = write_keys(&client, "scan:", N).await;
        let deadline = Instant::now() + 60 * SECOND;
        let short = client.with_timeout(Duration::from_millis(500));
        let mut seen = Seen::default();
        let mut scan = short.scan(ScanOptions::new().count(20));
        for _ in 0..10 {
            assert!(page(&mut scan, &mut seen, deadline).await);
        }
        let port = scan.state().unwrap().node().expect("a pass under way").port;
        let index = on_cluster(&cluster, move |c| {
            let i = (0..c.len()).find(|&i| c.node(i).port() == port).unwrap();
            c.node(i).pause(true);
            i
        })
        .await;
        let err = scan.next_page().await.unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
        on_cluster(&cluster, move |c| c.node(index).pause(false)).await;
        within(
            "the scan",
            60 * SECOND,
            scan_to_end(&mut scan, &mut seen, deadline),
        )
        .await;
        seen.check("a SCAN timed out mid-pass", &expected);
        let duplicates: u32 = seen.counts.values().map(|&c| c - 1).sum();
        assert_eq!(duplicates, 0, "the pass went on from its cursor");
    });
}

/// The whole scan over RESP2 connections: `CLUSTER NODES` and `INFO` come
/// as bulk strings rather than verbatim strings.
#[test]
fn every_key_over_resp2() {
    let cluster = RedisCluster::start();
    let seeds = cluster.seed_addrs();
    run(move || async move {
        let config = ClusterConfig::builder()
            .seeds(seeds.iter().copied())
            .timeout(3 * SECOND)
            .connection(|c| c.protocol(Protocol::Resp2))
            .build()
            .unwrap();
        let client = Cluster::connect(config).await.unwrap();
        let expected = write_keys(&client, "scan:", N).await;
        let deadline = Instant::now() + 60 * SECOND;
        let mut seen = Seen::default();
        let mut scan = client.scan(ScanOptions::new().count(100));
        scan_to_end(&mut scan, &mut seen, deadline).await;
        assert!(scan.state().unwrap().is_done());
        assert_eq!(seen.errors, 0);
        seen.check("RESP2", &expected);
    });
}

/// How the master being scanned goes.
#[derive(Clone, Copy, Debug)]
enum Loss {
    /// `SIGKILL`: its connections fail at once.
    Killed,
    /// `SIGSTOP`: its connections stay open and nothing answers.
    Frozen,
    /// `CLUSTER FAILOVER` on its replica: it becomes a replica.
    Demoted,
}

/// The master being scanned goes, as `loss` says, between two pages of
/// its pass.
fn every_key_through_a_failover(loss: Loss) {
    let cluster = RedisCluster::builder().node_timeout_ms(2000).start();
    cluster.warm_up();
    let seeds = cluster.seed_addrs();
    let first = cluster.slot_owner_index(0);
    let replica = {
        let id = cluster
            .cluster_nodes(first)
            .into_iter()
            .find(|n| n.is_myself())
            .unwrap()
            .id;
        cluster
            .replica_indices()
            .into_iter()
            .find(|&r| {
                cluster
                    .cluster_nodes(r)
                    .into_iter()
                    .any(|n| n.is_myself() && n.master_id.as_deref() == Some(id.as_str()))
            })
            .unwrap()
    };
    let cluster = Arc::new(Mutex::new(cluster));
    run(move || async move {
        let client = connect(seeds).await;
        let expected = write_keys(&client, "scan:", N).await;
        // Every write is on a replica before the master goes.
        for (_, conn) in client.master_connections() {
            let acked: i64 = conn.command(["WAIT", "1", "5000"]).await.unwrap();
            assert_eq!(acked, 1);
        }
        let deadline = Instant::now() + 90 * SECOND;
        let mut seen = Seen::default();
        let mut scan = client.scan(ScanOptions::new().count(20));
        for _ in 0..3 {
            assert!(page(&mut scan, &mut seen, deadline).await);
        }
        // Killed or frozen: pages go on at once; they fail, and are asked
        // again, until the replica takes over.
        on_cluster(&cluster, move |c| match loss {
            Loss::Killed => c.kill_node(first),
            Loss::Frozen => c.node(first).pause(true),
            Loss::Demoted => assert_eq!(c.failover(replica), first),
        })
        .await;
        // Each page, failed or not, ends by the call's deadline (3 s).
        within(
            "the scan",
            90 * SECOND,
            scan_to_end_each_within(&mut scan, &mut seen, deadline, 4 * SECOND),
        )
        .await;
        seen.check(&format!("through a {loss:?} master"), &expected);
    });
}

#[test]
fn every_key_when_the_scanned_master_is_killed() {
    every_key_through_a_failover(Loss::Killed);
}

#[test]
fn every_key_when_the_scanned_master_is_frozen() {
    every_key_through_a_failover(Loss::Frozen);
}

#[test]
fn every_key_through_a_manual_failover() {
    every_key_through_a_failover(Loss::Demoted);
}

/// The master being scanned restarts between two pages, too fast for a
/// failover, and loads its keys again from its append-only file: the
/// same node, epoch and slots, but a new dictionary in which the pass's
/// cursor means nothing. The pass must not be confirmed.
#[test]
fn every_key_when_the_scanned_master_restarts() {
    let cluster = RedisCluster::builder()
        .node_timeout_ms(30_000)
        .config("appendonly yes")
        .config("appendfsync always")
        .start();
    let seeds = cluster.seed_addrs();
    let first = cluster.slot_owner_index(0);
    let first_port = cluster.node(first).port();
    let cluster = Arc::new(Mutex::new(cluster));
    run(move || async move {
        let client = connect(seeds).await;
        let expected = write_keys(&client, "scan:", N).await;
        let deadline = Instant::now() + 90 * SECOND;
        let mut seen = Seen::default();
        let mut scan = client.scan(ScanOptions::new().count(20));
        for _ in 0..20 {
            assert!(page(&mut scan, &mut seen, deadline).await);
        }
        on_cluster(&cluster, move |c| c.restart_node(first)).await;
        // The client's connection to it is back before the next page, so
        // that page's SCAN reaches the new process.
        let (_, conn) = client
            .master_connections()
            .into_iter()
            .find(|(addr, _)| addr.port == first_port)
            .expect("a connection to the restarted master");
        wait_for_pong(&conn, 30 * SECOND).await;
        within(
            "the scan",
            90 * SECOND,
            scan_to_end(&mut scan, &mut seen, deadline),
        )
        .await;
        seen.check("through a restarted master", &expected);
    });
}

/// Not a check: the time of a whole scan of 100 000 keys against a
/// hand-written loop of `SCAN` over each master's connection (which
/// survives no topology change). Run with
/// `cargo test --release --test cluster_scan -- --ignored --nocapture`.
#[test]
#[ignore]
fn scan_cost_against_a_loop_over_the_masters() {
    let cluster = RedisCluster::start();
    let seeds = cluster.seed_addrs();
    run(move || async move {
        let client = connect(seeds).await;
        write_keys(&client, "scan:", 100_000).await;
        // Rounds alternate the two; the fastest of each is reported (the
        // machine is shared: the slower rounds measure the neighbours).
        for count in [100u64, 1000] {
            let (mut ours, mut hand) = (Duration::MAX, Duration::MAX);
            for _ in 0..7 {
                let began = Instant::now();
                let mut keys = 0;
                let mut scan = client.scan(ScanOptions::new().count(count));
                while let Some(page) = scan.next_page().await.unwrap() {
                    keys += page.len();
                }
                ours = ours.min(began.elapsed());
                let began = Instant::now();
                let mut by_hand = 0;
                for (_, conn) in client.master_connections() {
                    let mut cursor = 0u64;
                    loop {
                        let (next, page): (String, Vec<Bytes>) = conn
                            .command(["SCAN", &cursor.to_string(), "COUNT", &count.to_string()])
                            .await
                            .unwrap();
                        by_hand += page.len();
                        cursor = next.parse().unwrap();
                        if cursor == 0 {
                            break;
                        }
                    }
                }
                hand = hand.min(began.elapsed());
                assert_eq!((keys, by_hand), (100_000, 100_000));
            }
            println!(
                "COUNT {count}, fastest of 7: ClusterScan {:.1} ms, SCAN loop over the masters {:.1} ms ({:+.1}%)",
                ours.as_secs_f64() * 1e3,
                hand.as_secs_f64() * 1e3,
                (ours.as_secs_f64() / hand.as_secs_f64() - 1.0) * 100.0
            );
        }
    });
}
