//! Client-side caching on real clusters of 3 masters and 3 replicas
//! ([`CacheCommands`] for [`Cluster`] and [`CoreClient`]).
//!
//! - cached reads: a miss then a hit; another client's write seen within
//!   a bound (the delays measured and printed); the client's own writes
//!   (`SET`, `MSET`) read back at once; `cached_mget` across slots sending
//!   one `MGET` per slot (counted by the masters, `INFO commandstats`);
//!   misses of a handle preferring replicas still go to the masters; the
//!   read forms of hashes, sets and strings are cached apart and one
//!   write of a key voids all its forms; no entry outlives its key's
//!   expiry (`PTTL`, fetched with the miss); a small cache stays under
//!   its byte bound with 20,000 keys and keeps a hot key;
//! - a slot migrated away (`SETSLOT MIGRATING/IMPORTING`, `MIGRATE`,
//!   `SETSLOT NODE`): a read under `ASK` is answered but not cached; a key
//!   cached as absent is then written on the new owner, which no
//!   invalidation reports to this client: once the client learns the move
//!   from a `MOVED`, the slot's entries miss (the new value is read) while
//!   other slots' entries still hit, and later writes on the new owner are
//!   seen. Before the client learns the move, the old entry may still be
//!   served (the test prints what it read); a client that only hits its
//!   cache learns it from its periodic refresh (`refresh_interval`), which
//!   bounds how long;
//! - a manual failover: a write on the new master before the client
//!   learns of it is seen (the demoted master invalidates); the old
//!   master's slots' entries miss once the client learns it (from a
//!   `MOVED`, then a refresh), other masters' still hit, writes after it
//!   are seen;
//! - a master killed while a task reads one of its keys: its entries are
//!   dropped as its socket goes, and no read issued after a write
//!   acknowledged by the new master returns the old value;
//! - `FLUSHALL` on one master from another client: its keys miss, the
//!   other masters' keys still hit;
//! - the per-core runtime on 2 cores with sharded ownership: keys cached
//!   on both cores (each core reaching one of them through the other),
//!   then written from outside: both cores read the new values within a
//!   bound; then the master of one of them flushed from outside: both
//!   cores read it as gone within the bound, the other key still hits;
//!   own writes of every kind to the other core's key read back at once,
//!   and a cached `MGET` spans both owners; a master killed (no failover
//!   in sight) stops both cores serving its key within a bound (core 1
//!   hears of the lost socket from core 0 over the mesh);
//! - a seeded random walk of cached reads, other clients' writes (some
//!   side by side with a read), own writes and syncs, every read checked
//!   against the history of versions;
//! - a cache over RESP2 refused for a cluster.
//!
//! Stale entries are dropped lazily (by generation), so the tests watch
//! the `invalidations` counter rather than `keys` for a whole-node drop.
//! The harness's blocking steps (migrations, failovers, kills) run on
//! glommio's blocking thread so the client keeps running meanwhile. Run
//! with `cargo nextest run -p redcore --test cluster_cache --no-capture`
//! to see the measured delays.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use redcore::cluster::Cluster;
use redcore::config::ReadFrom;
use redcore::prelude::*;
use redcore::{CacheOptions, CacheStats, ClusterConfig, ClusterExecutor, CoreClient, cmd};
use redcore_test_support::client::{eventually, on_cluster, run, wait_until};
use redcore_test_support::{RedisCluster, RedisServer, Reply, key_in_slot, keys_in_slot};

const SECOND: Duration = Duration::from_secs(1);
/// The client-side TTL of every cached read: long enough that no entry
/// expires during a test (an expiry would look like an invalidation).
const TTL: Duration = Duration::from_secs(600);
/// How long another client's write may take to reach a cached reader.
const BOUND: Duration = Duration::from_secs(2);
/// How long the cluster may take to recover from a kill or failover.
const RECOVERY: Duration = Duration::from_secs(30);
/// Between two polls of a cached read waiting for a new value (a hit
/// never yields to the executor, so the poll must, for the push to land).
const POLL: Duration = Duration::from_micros(200);

/// A cluster client with a 4 MiB cache.
async fn cached_client(seeds: &[std::net::SocketAddr]) -> Cluster {
    let config = ClusterConfig::builder()
        .seeds(seeds.iter().copied())
        .timeout(3 * SECOND)
        .cache(CacheOptions::with_max_bytes(4 << 20))
        .build()
        .expect("a config");
    Cluster::connect(config).await.expect("connect")
}

/// A cluster client without a cache: "another client".
async fn plain_client(seeds: &[std::net::SocketAddr]) -> Cluster {
    let config = ClusterConfig::builder()
        .seeds(seeds.iter().copied())
        .timeout(3 * SECOND)
        .build()
        .expect("a config");
    Cluster::connect(config).await.expect("connect")
}

fn stats(client: &impl CacheCommands) -> CacheStats {
    client.cache_stats().expect("a cache")
}

/// The slot ranges master `m` serves, in its own view.
fn slots_of(cluster: &RedisCluster, m: usize) -> Vec<(u16, u16)> {
    cluster
        .cluster_nodes(m)
        .into_iter()
        .find(|n| n.is_myself())
        .expect("myself")
        .slots
}

/// The `k`-th slot of master `m` (counting from its first range's start).
fn slot_of(cluster: &RedisCluster, m: usize, k: u16) -> u16 {
    let (start, end) = slots_of(cluster, m)[0];
    assert!(start + k <= end, "master {m} has fewer than {k} slots");
    start + k
}

/// The replica of master `m` (node index).
fn replica_of(cluster: &RedisCluster, m: usize) -> usize {
    let id = cluster.node_id(m);
    cluster
        .replica_indices()
        .into_iter()
        .find(|&r| {
            cluster
                .cluster_nodes(r)
                .into_iter()
                .any(|n| n.is_myself() && n.master_id.as_deref() == Some(id.as_str()))
        })
        .expect("a replica")
}

/// How many calls of `command` `node` counted (`INFO commandstats`).
fn calls(node: &RedisServer, command: &str) -> u64 {
    let prefix = format!("cmdstat_{command}:");
    node.cmd(&["INFO", "commandstats"])
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|line| {
            line.split(',')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == "calls")
                .map(|(_, v)| v.trim().parse().expect("a count"))
        })
        .unwrap_or(0)
}

/// Polls `client`'s cached `GET key` until it returns `want`; the time
/// that took. Panics (naming `what`) past [`BOUND`].
async fn seen_within(client: &impl CacheCommands, key: &str, want: &str, what: &str) -> Duration {
    let since = Instant::now();
    loop {
        let got: Option<String> = client.cached_get(key, TTL).await.expect("a cached GET");
        if got.as_deref() == Some(want) {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < BOUND,
            "{what}: {key} still reads {got:?} (want {want:?}) after {BOUND:?}"
        );
        glommio::timer::sleep(POLL).await;
    }
}

/// Min, median and max of `delays`, for the report.
fn summary(delays: &mut [Duration]) -> String {
    delays.sort();
    format!(
        "n={} min={:?} median={:?} max={:?}",
        delays.len(),
        delays[0],
        delays[delays.len() / 2],
        delays[delays.len() - 1]
    )
}

/// Cached reads on a whole cluster: the checks that leave it as it is.
#[test]
fn cached_reads_on_a_cluster() {
    let cluster = RedisCluster::start();
    let seeds = cluster.seed_addrs();
    run(move || async move {
        let client = cached_client(&seeds).await;
        let other = plain_client(&seeds).await;
        let masters = cluster.master_indices();
        // One key per master.
        let keys: Vec<String> = masters
            .iter()
            .map(|&m| key_in_slot(slot_of(&cluster, m, 7), "read:"))
            .collect();
        a_second_read_is_a_hit(&client, &other, &keys).await;
        another_clients_write_is_seen_within_a_bound(&client, &other, &keys).await;
        own_writes_are_read_back(&client).await;
        cached_mget_sends_one_mget_per_slot(&client, &other, &cluster, &masters).await;
        cached_reads_never_go_to_replicas(&client, &other, &cluster, &masters).await;
        every_read_form_is_invalidated_by_a_write_of_its_key(&client, &other, &cluster, &masters)
            .await;
        no_entry_outlives_its_keys_expiry(&client, &other, &cluster, &masters).await;
        the_byte_bound_holds_and_a_hot_key_stays(&seeds, &other).await;
    });
}

/// 20,000 distinct keys across the masters through a 256 KiB cache: the
/// bytes held never pass the bound, keys are evicted, every value read is
/// right, and a key read between every batch is still a hit at the end.
async fn the_byte_bound_holds_and_a_hot_key_stays(seeds: &[std::net::SocketAddr], other: &Cluster) {
    const MAX: usize = 256 << 10;
    let config = ClusterConfig::builder()
        .seeds(seeds.iter().copied())
        .timeout(3 * SECOND)
        .cache(CacheOptions::with_max_bytes(MAX))
        .build()
        .expect("a config");
    let small = Cluster::connect(config).await.expect("connect");
    let keys: Vec<String> = (0..20_000).map(|i| format!("bound:{i}")).collect();
    for chunk in keys.chunks(1000) {
        let pairs: Vec<(&str, &str)> = chunk.iter().map(|k| (k.as_str(), k.as_str())).collect();
        other.mset(&pairs).await.unwrap();
    }
    let hot = "bound:hot";
    other.set(hot, "hot").await.unwrap();
    let mut peak = 0;
    for chunk in keys.chunks(500) {
        let got: Vec<String> = small.cached_mget(chunk, TTL).await.unwrap();
        assert_eq!(got, chunk, "values read through a full cache");
        let hot_value: String = small.cached_get(hot, TTL).await.unwrap();
        assert_eq!(hot_value, "hot");
        let s = stats(&small);
        assert!(s.bytes <= MAX as u64, "{} bytes held, bound {MAX}", s.bytes);
        peak = peak.max(s.bytes);
    }
    let s = stats(&small);
    assert!(s.evictions > 0, "{s:?}");
    let hits = s.hits;
    let _: String = small.cached_get(hot, TTL).await.unwrap();
    assert_eq!(stats(&small).hits, hits + 1, "the hot key survived");
    println!(
        "bound: 20000 keys through {MAX} bytes: peak {peak} bytes, {} keys held, {} evictions",
        s.keys, s.evictions
    );
}

/// Keys that expire in 300 ms, read through the cache with a 600 s TTL:
/// hits until then, and no read begun after the expiry (counted from
/// when the write was acknowledged, so after the server's) returns the
/// value.
async fn no_entry_outlives_its_keys_expiry(
    client: &Cluster,
    other: &Cluster,
    cluster: &RedisCluster,
    masters: &[usize],
) {
    const LIFE: Duration = Duration::from_millis(300);
    for &m in masters {
        let key = key_in_slot(slot_of(cluster, m, 41), "expiring:");
        other
            .command::<()>(["SET", key.as_str(), "v", "PX", "300"])
            .await
            .unwrap();
        let acked = Instant::now();
        let hits = stats(client).hits;
        let mut served = 0;
        loop {
            let began = Instant::now();
            let got: Option<String> = client.cached_get(&key, TTL).await.unwrap();
            if began >= acked + LIFE {
                assert_eq!(got, None, "{key} read {:?} after it was set", began - acked);
                break;
            }
            if got.is_some() {
                served += 1;
            }
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
        assert!(served > 1, "{key} was read while it lived");
        assert!(stats(client).hits > hits, "{key} was served from the cache");
    }
}

/// Hashes and sets on every master, read in several forms (`HGET` of two
/// fields, `HMGET`, `HGETALL`, `EXISTS`, `SMEMBERS`, `STRLEN`): each form
/// is cached apart, and one write of a key voids all its forms.
async fn every_read_form_is_invalidated_by_a_write_of_its_key(
    client: &Cluster,
    other: &Cluster,
    cluster: &RedisCluster,
    masters: &[usize],
) {
    let mut delays = Vec::new();
    for &m in masters {
        let hash = key_in_slot(slot_of(cluster, m, 31), "form:h:");
        let set = key_in_slot(slot_of(cluster, m, 32), "form:s:");
        let text = key_in_slot(slot_of(cluster, m, 33), "form:t:");
        other.hset(&hash, &[("a", "1"), ("b", "2")]).await.unwrap();
        other.sadd(&set, &["x"]).await.unwrap();
        other.set(&text, "abc").await.unwrap();
        for round in 0..2 {
            let misses = stats(client).misses;
            let a: Option<String> = client.cached_hget(&hash, "a", TTL).await.unwrap();
            let b: Option<String> = client.cached_hget(&hash, "b", TTL).await.unwrap();
            let both: Vec<Option<String>> =
                client.cached_hmget(&hash, &["a", "b"], TTL).await.unwrap();
            let all: std::collections::HashMap<String, String> =
                client.cached_hgetall(&hash, TTL).await.unwrap();
            let exists = client.cached_exists(&hash, TTL).await.unwrap();
            let members: Vec<String> = client.cached_smembers(&set, TTL).await.unwrap();
            let len = client.cached_strlen(&text, TTL).await.unwrap();
            assert_eq!((a.as_deref(), b.as_deref()), (Some("1"), Some("2")));
            assert_eq!(both, [Some("1".into()), Some("2".into())]);
            assert_eq!(all.len(), 2);
            assert!(exists);
            assert_eq!(members, ["x"]);
            assert_eq!(len, 3);
            let missed = stats(client).misses - misses;
            assert_eq!(missed, if round == 0 { 7 } else { 0 }, "round {round}");
        }
        // One write of the hash voids its five forms; the other keys' stay.
        other.hset(&hash, &[("a", "9")]).await.unwrap();
        delays.push(seen_hget(client, &hash, "a", "9").await);
        let misses = stats(client).misses;
        let b: Option<String> = client.cached_hget(&hash, "b", TTL).await.unwrap();
        let all: std::collections::HashMap<String, String> =
            client.cached_hgetall(&hash, TTL).await.unwrap();
        let both: Vec<Option<String>> = client.cached_hmget(&hash, &["a", "b"], TTL).await.unwrap();
        let exists = client.cached_exists(&hash, TTL).await.unwrap();
        assert_eq!(b.as_deref(), Some("2"));
        assert_eq!(all.get("a").map(String::as_str), Some("9"));
        assert_eq!(both, [Some("9".into()), Some("2".into())]);
        assert!(exists);
        assert_eq!(
            stats(client).misses - misses,
            4,
            "the hash's other forms missed"
        );
        let hits = stats(client).hits;
        let _: Vec<String> = client.cached_smembers(&set, TTL).await.unwrap();
        let _ = client.cached_strlen(&text, TTL).await.unwrap();
        assert_eq!(stats(client).hits, hits + 2, "the other keys' forms hit");
    }
    println!(
        "cluster: an HSET seen by a cached HGET after {}",
        summary(&mut delays)
    );
}

/// Polls a cached `HGET key field` until it returns `want`; the time
/// that took (panics past [`BOUND`]).
async fn seen_hget(client: &Cluster, key: &str, field: &str, want: &str) -> Duration {
    let since = Instant::now();
    loop {
        let got: Option<String> = client.cached_hget(key, field, TTL).await.unwrap();
        if got.as_deref() == Some(want) {
            return since.elapsed();
        }
        assert!(since.elapsed() < BOUND, "{key} {field} still reads {got:?}");
        glommio::timer::sleep(POLL).await;
    }
}

async fn cached_reads_never_go_to_replicas(
    client: &Cluster,
    other: &Cluster,
    cluster: &RedisCluster,
    masters: &[usize],
) {
    let replicas = cluster.replica_indices();
    let keys: Vec<String> = masters
        .iter()
        .map(|&m| key_in_slot(slot_of(cluster, m, 21), "replica:"))
        .collect();
    for k in &keys {
        other.set(k, "r").await.unwrap();
    }
    for &i in masters.iter().chain(&replicas) {
        cluster.node(i).cmd(&["CONFIG", "RESETSTAT"]);
    }
    let prefer = client.with_read_from(ReadFrom::PreferReplica);
    for k in &keys {
        for _ in 0..2 {
            let v: Option<String> = prefer.cached_get(k, TTL).await.unwrap();
            assert_eq!(v.as_deref(), Some("r"));
        }
    }
    let on_replicas: u64 = replicas
        .iter()
        .map(|&r| calls(cluster.node(r), "get"))
        .sum();
    let on_masters: u64 = masters.iter().map(|&m| calls(cluster.node(m), "get")).sum();
    assert_eq!(on_replicas, 0, "cached reads on replicas");
    assert_eq!(
        on_masters,
        keys.len() as u64,
        "one miss per key, on masters"
    );
}

async fn a_second_read_is_a_hit(client: &Cluster, other: &Cluster, keys: &[String]) {
    let before = stats(client);
    for k in keys {
        other.set(k, "v0").await.unwrap();
        let v: Option<String> = client.cached_get(k, TTL).await.unwrap();
        assert_eq!(v.as_deref(), Some("v0"));
        let v: Option<String> = client.cached_get(k, TTL).await.unwrap();
        assert_eq!(v.as_deref(), Some("v0"));
    }
    let after = stats(client);
    let n = keys.len() as u64;
    assert_eq!(after.misses - before.misses, n, "one miss per key");
    assert_eq!(after.hits - before.hits, n, "one hit per key");
    assert_eq!(after.keys, n, "one entry per key");
}

async fn another_clients_write_is_seen_within_a_bound(
    client: &Cluster,
    other: &Cluster,
    keys: &[String],
) {
    let mut delays = Vec::new();
    for round in 1..=20 {
        for k in keys {
            // The entry is there: this read is a hit.
            let hits = stats(client).hits;
            let _: Option<String> = client.cached_get(k, TTL).await.unwrap();
            assert_eq!(stats(client).hits, hits + 1, "{k} was cached");
            let value = format!("v{round}");
            other.set(k, &value).await.unwrap();
            delays.push(seen_within(client, k, &value, "another client's write").await);
        }
    }
    println!(
        "cluster: another client's SET seen by a cached GET after {}",
        summary(&mut delays)
    );
}

async fn own_writes_are_read_back(client: &Cluster) {
    let keys: Vec<String> = (0..6).map(|i| format!("own:{i}")).collect();
    for i in 0..50 {
        let value = i.to_string();
        for k in &keys {
            client.set(k, &value).await.unwrap();
            let v: String = client.cached_get(k, TTL).await.unwrap();
            assert_eq!(v, value, "SET {k} then a cached GET");
        }
        // Across slots: MSET then cached MGET.
        let value = format!("m{i}");
        let pairs: Vec<(&str, &str)> = keys.iter().map(|k| (k.as_str(), value.as_str())).collect();
        client.mset(&pairs).await.unwrap();
        let got: Vec<String> = client.cached_mget(&keys, TTL).await.unwrap();
        assert!(got.iter().all(|v| *v == value), "MSET then MGET: {got:?}");
    }
}

async fn cached_mget_sends_one_mget_per_slot(
    client: &Cluster,
    other: &Cluster,
    cluster: &RedisCluster,
    masters: &[usize],
) {
    // Two slots per master, three keys in each.
    let mut keys = Vec::new();
    for &m in masters {
        for k in [11, 12] {
            keys.extend(keys_in_slot(slot_of(cluster, m, k), 3, "mget:"));
        }
    }
    let pairs: Vec<(String, String)> = keys.iter().map(|k| (k.clone(), format!("{k}="))).collect();
    other.mset(&pairs).await.unwrap();
    for &m in masters {
        cluster.node(m).cmd(&["CONFIG", "RESETSTAT"]);
    }
    let want: Vec<String> = pairs.iter().map(|(_, v)| v.clone()).collect();
    let before = stats(client);
    let got: Vec<String> = client.cached_mget(&keys, TTL).await.unwrap();
    assert_eq!(got, want, "the first cached MGET");
    for &m in masters {
        assert_eq!(calls(cluster.node(m), "mget"), 2, "MGETs on master {m}");
        assert_eq!(calls(cluster.node(m), "get"), 0, "GETs on master {m}");
    }
    let mid = stats(client);
    assert_eq!(mid.misses - before.misses, keys.len() as u64);
    let got: Vec<String> = client.cached_mget(&keys, TTL).await.unwrap();
    assert_eq!(got, want, "the second cached MGET");
    let after = stats(client);
    assert_eq!(after.hits - mid.hits, keys.len() as u64, "all hits");
    assert_eq!(after.misses, mid.misses, "no miss");
    for &m in masters {
        assert_eq!(calls(cluster.node(m), "mget"), 2, "no new MGET on {m}");
    }
}

/// A slot with cached keys migrates to another master.
#[test]
fn slot_migration_drops_the_moved_slots_entries() {
    let cluster = RedisCluster::start();
    let seeds = cluster.seed_addrs();
    let masters = cluster.master_indices();
    let (from, to) = (masters[0], masters[1]);
    let moved = slot_of(&cluster, from, 3);
    let stays = slot_of(&cluster, from, 4);
    let cluster = Arc::new(Mutex::new(cluster));
    run(move || async move {
        let client = cached_client(&seeds).await;
        let other = plain_client(&seeds).await;
        let present = key_in_slot(moved, "mig:present:");
        let asked = key_in_slot(moved, "mig:asked:");
        let absent = key_in_slot(moved, "mig:absent:");
        let kept = key_in_slot(stays, "mig:kept:");
        for k in [&present, &asked, &kept] {
            other.set(k, "1").await.unwrap();
        }
        for k in [&present, &absent, &kept] {
            let _: Option<String> = client.cached_get(k, TTL).await.unwrap();
        }
        let cached = stats(&client);
        assert_eq!(cached.keys, 3);

        // Under way: one key already on the target; the source answers
        // ASK for it, and that read is answered but not cached.
        let a = asked.clone();
        on_cluster(&cluster, move |c| {
            c.begin_migration(moved, from, to);
            c.migrate_keys(moved, from, to, &[a]);
        })
        .await;
        for _ in 0..2 {
            let before = stats(&client);
            let v: Option<String> = client.cached_get(&asked, TTL).await.unwrap();
            assert_eq!(v.as_deref(), Some("1"), "a read under ASK");
            let after = stats(&client);
            assert_eq!(after.misses, before.misses + 1, "a read under ASK misses");
            assert_eq!(after.keys, before.keys, "a read under ASK is not cached");
        }

        let p = present.clone();
        on_cluster(&cluster, move |c| {
            c.migrate_keys(moved, from, to, &[p]);
            c.finish_migration(moved, to);
        })
        .await;
        // Another client writes the absent key on the new owner. The
        // client's entry for it (nil) is tracked on the old owner, which
        // never hears of the write: until the client learns the move, it
        // may still answer nil (bounded by the periodic refresh and the
        // read's TTL).
        other.set(&absent, "late").await.unwrap();
        let before_learning: Option<String> = client.cached_get(&absent, TTL).await.unwrap();
        println!(
            "migration: before the client learns the move, the absent key reads {before_learning:?}"
        );

        // The client learns the move from a MOVED (an uncached read).
        let v: Option<String> = client.get(&asked).await.unwrap();
        assert_eq!(v.as_deref(), Some("1"));

        // The moved slot's entries are not served any more; the other
        // slot's still are.
        let before = stats(&client);
        let v: Option<String> = client.cached_get(&absent, TTL).await.unwrap();
        assert_eq!(v.as_deref(), Some("late"), "the new owner's value");
        let v: Option<String> = client.cached_get(&kept, TTL).await.unwrap();
        assert_eq!(v.as_deref(), Some("1"));
        let after = stats(&client);
        assert_eq!(
            after.misses,
            before.misses + 1,
            "the moved slot's entry missed"
        );
        assert_eq!(after.hits, before.hits + 1, "the other slot's entry hit");

        // The moved slot's keys are tracked on the new owner now.
        let v: Option<String> = client.cached_get(&present, TTL).await.unwrap();
        assert_eq!(v.as_deref(), Some("1"));
        let mut delays = Vec::new();
        for (k, value) in [(&absent, "2"), (&present, "2"), (&absent, "3")] {
            let _: Option<String> = client.cached_get(k, TTL).await.unwrap();
            other.set(k, value).await.unwrap();
            delays.push(seen_within(&client, k, value, "a write on the new owner").await);
        }
        println!(
            "migration: writes on the new owner seen after {}",
            summary(&mut delays)
        );
    });
}

/// A manual failover of a master whose keys are cached.
#[test]
fn failover_drops_the_old_masters_slots_entries() {
    let cluster = RedisCluster::builder().node_timeout_ms(2000).start();
    cluster.warm_up();
    let seeds = cluster.seed_addrs();
    let masters = cluster.master_indices();
    let (failed, other_master) = (masters[0], masters[1]);
    let replica = replica_of(&cluster, failed);
    let slot = slot_of(&cluster, failed, 5);
    let second_slot = slot_of(&cluster, failed, 6);
    let third_slot = slot_of(&cluster, failed, 8);
    let elsewhere = slot_of(&cluster, other_master, 5);
    let cluster = Arc::new(Mutex::new(cluster));
    run(move || async move {
        let client = cached_client(&seeds).await;
        let other = plain_client(&seeds).await;
        let written = key_in_slot(slot, "fo:written:");
        let absent = key_in_slot(slot, "fo:absent:");
        let second = key_in_slot(second_slot, "fo:second:");
        let far = key_in_slot(elsewhere, "fo:far:");
        let early = key_in_slot(third_slot, "fo:early:");
        for k in [&written, &second, &far] {
            other.set(k, "1").await.unwrap();
        }
        // On the replicas before the failover.
        for (_, conn) in other.master_connections() {
            let acked: i64 = conn.command(["WAIT", "1", "5000"]).await.unwrap();
            assert_eq!(acked, 1);
        }
        for k in [&written, &absent, &second, &far, &early] {
            let _: Option<String> = client.cached_get(k, TTL).await.unwrap();
        }
        assert_eq!(stats(&client).keys, 5);

        let old = on_cluster(&cluster, move |c| c.failover(replica)).await;
        assert_eq!(old, failed);

        // Reads go on, whatever the client knows yet.
        let v: Option<String> = client.cached_get(&far, TTL).await.unwrap();
        assert_eq!(v.as_deref(), Some("1"));

        // Before the client learns the failover, another client writes a
        // key it cached as absent on the new master: the demoted master
        // replicates the write and invalidates it (or its socket is lost,
        // which voids it); either way the client sees the write.
        other.set(&early, "e").await.unwrap();
        let d = seen_within(&client, &early, "e", "a write before the client learns").await;
        println!("failover: a write before the client learned the failover seen after {d:?}");

        // An own write (its MOVED, or the refresh the last read's MOVED
        // asked for, tells the client): the slot's entries go.
        client.set(&written, "2").await.unwrap();
        let v: Option<String> = client.cached_get(&written, TTL).await.unwrap();
        assert_eq!(v.as_deref(), Some("2"), "own write after the failover");
        let before = stats(&client);
        let v: Option<String> = client.cached_get(&absent, TTL).await.unwrap();
        assert_eq!(v, None);
        assert_eq!(
            stats(&client).misses,
            before.misses + 1,
            "the failed-over slot's entry missed"
        );

        // A refresh teaches the rest of the old master's slots.
        client.refresh().await.unwrap();
        let before = stats(&client);
        let v: Option<String> = client.cached_get(&second, TTL).await.unwrap();
        assert_eq!(v.as_deref(), Some("1"));
        let v: Option<String> = client.cached_get(&far, TTL).await.unwrap();
        assert_eq!(v.as_deref(), Some("1"));
        let after = stats(&client);
        assert_eq!(
            after.misses,
            before.misses + 1,
            "another slot of the old master missed"
        );
        assert_eq!(after.hits, before.hits + 1, "another master's entry hit");

        // Writes by another client on the new master are seen.
        let mut delays = Vec::new();
        for (k, value) in [(&absent, "2"), (&second, "2"), (&written, "3")] {
            let _: Option<String> = client.cached_get(k, TTL).await.unwrap();
            other.set(k, value).await.unwrap();
            delays.push(seen_within(&client, k, value, "a write on the new master").await);
        }
        println!(
            "failover: writes on the new master seen after {}",
            summary(&mut delays)
        );
    });
}

/// One cached read of the reader task: when it was issued, and what it
/// returned (`None` for an error).
type Read = (Instant, Option<String>);

/// A master killed while a task reads one of its keys through the cache.
#[test]
fn a_killed_master_leaves_no_stale_read() {
    let cluster = RedisCluster::builder().node_timeout_ms(2000).start();
    cluster.warm_up();
    let seeds = cluster.seed_addrs();
    let masters = cluster.master_indices();
    let (killed, alive) = (masters[0], masters[1]);
    let slot = slot_of(&cluster, killed, 9);
    let far_slot = slot_of(&cluster, alive, 9);
    let cluster = Arc::new(Mutex::new(cluster));
    run(move || async move {
        let client = cached_client(&seeds).await;
        let other = plain_client(&seeds).await;
        let key = key_in_slot(slot, "kill:");
        let far = key_in_slot(far_slot, "kill:far:");
        for k in [&key, &far] {
            other.set(k, "old").await.unwrap();
        }
        for (_, conn) in other.master_connections() {
            let acked: i64 = conn.command(["WAIT", "1", "5000"]).await.unwrap();
            assert_eq!(acked, 1);
        }
        for k in [&key, &far, &key, &far] {
            let v: Option<String> = client.cached_get(k, TTL).await.unwrap();
            assert_eq!(v.as_deref(), Some("old"));
        }
        assert_eq!(stats(&client).keys, 2);

        // A task reads the key through the cache all along.
        let stop = Rc::new(std::cell::Cell::new(false));
        let reads: Rc<RefCell<Vec<Read>>> = Rc::default();
        let reader = glommio::spawn_local({
            let (client, key) = (client.with_timeout(SECOND), key.clone());
            let (stop, reads) = (stop.clone(), reads.clone());
            async move {
                while !stop.get() {
                    let issued = Instant::now();
                    let got: Result<Option<String>, _> = client.cached_get(&key, TTL).await;
                    reads.borrow_mut().push((issued, got.ok().flatten()));
                    glommio::timer::sleep(POLL).await;
                }
            }
        });

        let killed_at = Instant::now();
        let voids = stats(&client).invalidations;
        on_cluster(&cluster, move |c| c.kill_node(killed)).await;
        // The lost socket drops what it tracked (at once, by generation:
        // one invalidation counted); the other master's entry stays.
        wait_until("the killed master's entries to go", BOUND, || {
            stats(&client).invalidations > voids
        })
        .await;
        println!(
            "kill: the dead master's entries dropped {:?} after the kill began",
            killed_at.elapsed()
        );
        let hits = stats(&client).hits;
        let v: Option<String> = client.cached_get(&far, TTL).await.unwrap();
        assert_eq!(v.as_deref(), Some("old"));
        assert_eq!(stats(&client).hits, hits + 1, "the live master's entry hit");

        on_cluster(&cluster, move |c| {
            c.wait_for_new_master_of(slot, killed, RECOVERY);
        })
        .await;
        // Another client writes on the new master.
        eventually("a write on the new master", RECOVERY, async || {
            other.set(&key, "new").await.is_ok()
        })
        .await;
        let acked = Instant::now();
        let seen = within_recovery(&client, &key).await;
        println!("kill: the new value read {seen:?} after the write was acknowledged");
        // The reader goes on a while after the write.
        wait_until("the reader to read after the write", RECOVERY, || {
            reads
                .borrow()
                .iter()
                .filter(|(issued, v)| *issued >= acked && v.is_some())
                .count()
                >= 50
        })
        .await;
        stop.set(true);
        reader.await;

        let reads = reads.borrow();
        let stale: Vec<&Read> = reads
            .iter()
            .filter(|(issued, v)| *issued >= acked && v.as_deref() != Some("new"))
            .filter(|(_, v)| v.is_some())
            .collect();
        assert!(
            stale.is_empty(),
            "{} reads issued after the write returned something else: {:?}",
            stale.len(),
            stale.first()
        );
        let after: Vec<&Read> = reads.iter().filter(|(i, _)| *i >= acked).collect();
        let answered = after.iter().filter(|(_, v)| v.is_some()).count();
        println!(
            "kill: the reader issued {} reads ({} after the write, {answered} of them answered)",
            reads.len(),
            after.len()
        );
        assert!(answered > 0, "the reader read after the write");
    });
}

/// Polls cached reads of `key` (errors allowed while the cluster
/// recovers) until one answers; that answer must be the new value.
async fn within_recovery(client: &Cluster, key: &str) -> Duration {
    let since = Instant::now();
    loop {
        match client.cached_get::<Option<String>>(key, TTL).await {
            Ok(v) => {
                assert_eq!(v.as_deref(), Some("new"), "the first read after the write");
                return since.elapsed();
            }
            Err(e) => assert!(
                since.elapsed() < RECOVERY,
                "no read answered within {RECOVERY:?}: {e}"
            ),
        }
        glommio::timer::sleep(POLL).await;
    }
}

/// `FLUSHALL` on one master, sent by another client.
#[test]
fn flushall_on_one_master_drops_its_keys() {
    let cluster = RedisCluster::start();
    let seeds = cluster.seed_addrs();
    run(move || async move {
        let client = cached_client(&seeds).await;
        let other = plain_client(&seeds).await;
        let masters = cluster.master_indices();
        let flushed = masters[0];
        let mut on_flushed = Vec::new();
        let mut elsewhere = Vec::new();
        for &m in &masters {
            for k in 0..5 {
                let key = key_in_slot(slot_of(&cluster, m, k), "flush:");
                other.set(&key, "1").await.unwrap();
                let _: Option<String> = client.cached_get(&key, TTL).await.unwrap();
                if m == flushed {
                    on_flushed.push(key);
                } else {
                    elsewhere.push(key);
                }
            }
        }
        assert_eq!(stats(&client).keys, 15);
        let voids = stats(&client).invalidations;
        let sent = Instant::now();
        assert_eq!(cluster.node(flushed).cmd(&["FLUSHALL"]), "OK");
        // The server's invalidation with no key drops every entry its
        // socket tracked at once (by generation: one invalidation).
        wait_until("the flushed master's entries to go", BOUND, || {
            stats(&client).invalidations > voids
        })
        .await;
        println!(
            "flushall: the master's entries dropped {:?} after FLUSHALL was sent",
            sent.elapsed()
        );
        let before = stats(&client);
        for k in &on_flushed {
            let v: Option<String> = client.cached_get(k, TTL).await.unwrap();
            assert_eq!(v, None, "{k} was flushed");
        }
        for k in &elsewhere {
            let v: Option<String> = client.cached_get(k, TTL).await.unwrap();
            assert_eq!(v.as_deref(), Some("1"), "{k} was not flushed");
        }
        let after = stats(&client);
        assert_eq!(after.misses - before.misses, on_flushed.len() as u64);
        assert_eq!(after.hits - before.hits, elsewhere.len() as u64);
        assert_eq!(after.invalidations, voids + 1, "one drop, nothing else");
    });
}

/// What the test thread and the cores of the runtime test share.
struct Shared {
    /// One key owned by each core, chosen by core 0.
    keys: Mutex<Vec<String>>,
    /// The step the test thread reached: 1 when its writes are
    /// acknowledged, 2 when its `FLUSHALL` is.
    step: AtomicUsize,
    /// When the test thread's last step was acknowledged.
    step_at: Mutex<Option<Instant>>,
    /// How many cores finished their part of the current step.
    ready: AtomicUsize,
}

impl Shared {
    /// Waits (on a core) until the test thread reached `step`; when its
    /// last command was acknowledged.
    async fn reached(&self, step: usize) -> Instant {
        wait_until(&format!("step {step}"), 30 * SECOND, || {
            self.step.load(Ordering::SeqCst) >= step
        })
        .await;
        self.step_at.lock().unwrap().expect("the time of the step")
    }

    /// Waits (on the test thread) until `cores` cores are ready, then
    /// runs `f` and starts step `step`.
    fn next_step(&self, step: usize, cores: usize, f: impl FnOnce()) {
        let deadline = Instant::now() + 30 * SECOND;
        while self.ready.load(Ordering::SeqCst) < cores {
            assert!(Instant::now() < deadline, "the cores before step {step}");
            thread::sleep(Duration::from_millis(2));
        }
        self.ready.store(0, Ordering::SeqCst);
        f();
        *self.step_at.lock().unwrap() = Some(Instant::now());
        self.step.store(step, Ordering::SeqCst);
    }
}

/// The first `pc:N` key each core owns, in core order.
fn key_per_core(client: &CoreClient) -> Vec<String> {
    (0..client.cores())
        .map(|core| {
            (0..10_000)
                .map(|i| format!("pc:{i}"))
                .find(|k| client.owner_of_key(k) == Some(core))
                .unwrap_or_else(|| panic!("no key owned by core {core}"))
        })
        .collect()
}

/// Reads every key of `keys` through the cache until a read is a hit
/// (at most a few rounds: a whole-node drop, such as the close of a
/// connection a core opened before it knew the owners, may void the
/// first fill); every read answers `want`.
async fn cache_all(client: &CoreClient, keys: &[String], want: &str) {
    let core = client.core();
    for k in keys {
        let mut tries = Vec::new();
        loop {
            let hits = stats(client).hits;
            let v: Option<String> = client.cached_get(k, TTL).await.unwrap();
            assert_eq!(v.as_deref(), Some(want), "core {core}: {k}");
            if stats(client).hits == hits + 1 {
                break;
            }
            tries.push(stats(client));
            assert!(
                tries.len() < 5,
                "core {core}: {k} is never cached: {tries:?}"
            );
        }
        if tries.len() > 1 {
            println!(
                "core {core}: {k} cached after {} misses: {tries:?}",
                tries.len()
            );
        }
    }
}

/// Polls a core's cached `GET key` until it answers nil; the time since
/// `since`. Panics past [`BOUND`].
async fn nil_within(client: &CoreClient, key: &str, since: Instant) -> Duration {
    loop {
        let got: Option<String> = client.cached_get(key, TTL).await.unwrap();
        if got.is_none() {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < BOUND,
            "core {}: {key} still reads {got:?} after {BOUND:?}",
            client.core()
        );
        glommio::timer::sleep(POLL).await;
    }
}

/// One core's side: cache every key (one of them reached through the
/// other core); after the outside writes, the new values within the
/// bound; after the `FLUSHALL` of core 0's master, its key gone within
/// the bound while the other key still hits. The delays measured.
async fn on_core(client: CoreClient, shared: Arc<Shared>) -> Vec<String> {
    let core = client.core();
    let mut report = Vec::new();
    wait_until("the keys", 30 * SECOND, || {
        !shared.keys.lock().unwrap().is_empty()
    })
    .await;
    let keys = shared.keys.lock().unwrap().clone();
    for (owner, k) in keys.iter().enumerate() {
        let owner_now = client.owner_of_key(k);
        assert_eq!(owner_now, Some(owner), "core {core}: owner of {k}");
    }
    cache_all(&client, &keys, "old").await;
    shared.ready.fetch_add(1, Ordering::SeqCst);

    let written = shared.reached(1).await;
    for k in &keys {
        seen_within(&client, k, "new", &format!("core {core}")).await;
        report.push(format!(
            "core {core} read the new {k} {:?} after the outside SET",
            written.elapsed()
        ));
    }
    cache_all(&client, &keys, "new").await;
    shared.ready.fetch_add(1, Ordering::SeqCst);

    let flushed = shared.reached(2).await;
    let d = nil_within(&client, &keys[0], flushed).await;
    report.push(format!(
        "core {core} read {} as flushed {d:?} after the outside FLUSHALL",
        keys[0]
    ));
    let hits = stats(&client).hits;
    let v: Option<String> = client.cached_get(&keys[1], TTL).await.unwrap();
    assert_eq!(v.as_deref(), Some("new"), "core {core}: {} kept", keys[1]);
    assert_eq!(
        stats(&client).hits,
        hits + 1,
        "core {core}: {} hit",
        keys[1]
    );
    shared.ready.fetch_add(1, Ordering::SeqCst);

    shared.reached(3).await;
    own_writes_through_the_other_core(&client, &keys[1 - core]).await;
    shared.ready.fetch_add(1, Ordering::SeqCst);

    shared.reached(4).await;
    let hits = stats(&client).hits;
    let got: Vec<String> = client.cached_mget(&keys, TTL).await.unwrap();
    assert_eq!(got, ["final", "final"], "core {core}: cached MGET");
    let got: Vec<String> = client.cached_mget(&keys, TTL).await.unwrap();
    assert_eq!(got, ["final", "final"], "core {core}: cached MGET again");
    assert!(
        stats(&client).hits >= hits + 2,
        "core {core}: the second cached MGET hit"
    );
    report
}

/// Writes `key` (owned by the other core) in every way a client can,
/// each time with the key cached just before; the next cached read
/// returns what was written. Ends with `key` = `final`.
async fn own_writes_through_the_other_core(client: &CoreClient, key: &str) {
    let core = client.core();
    for i in 0..40 {
        for _ in 0..2 {
            let _: Option<String> = client.cached_get(key, TTL).await.unwrap();
        }
        let value = format!("own{core}-{i}");
        let (how, want) = match i % 5 {
            0 => (client.set(key, &value).await.map(|_| ()), Some(value)),
            1 => (client.mset(&[(key, &value)]).await, Some(value)),
            2 => (client.del(&[key]).await.map(|_| ()), None),
            3 => (
                client
                    .pipeline([cmd("SET").arg(key).arg(&value)])
                    .await
                    .map(|_| ()),
                Some(value),
            ),
            _ => (
                client.command::<()>(["SET", key, value.as_str()]).await,
                Some(value),
            ),
        };
        how.unwrap_or_else(|e| panic!("core {core}: write {i}: {e}"));
        let got: Option<String> = client.cached_get(key, TTL).await.unwrap();
        assert_eq!(
            got,
            want,
            "core {core}: own write {i} (kind {}) of {key}",
            i % 5
        );
    }
    client.set(key, "final").await.unwrap();
}

/// The per-core runtime on 2 cores, sharded: keys cached on both cores
/// (each core reaching one of them through the other core's connection)
/// are invalidated on both by a write from outside, and dropped on both
/// by a `FLUSHALL` of their master from outside.
#[test]
fn outside_writes_and_flushes_reach_both_cores() {
    let cluster = RedisCluster::start();
    let config = ClusterConfig::builder()
        .seeds(cluster.seed_addrs())
        .cache(CacheOptions::with_max_bytes(4 << 20))
        .build()
        .expect("a config");
    let shared = Arc::new(Shared {
        keys: Mutex::new(Vec::new()),
        step: AtomicUsize::new(0),
        step_at: Mutex::new(None),
        ready: AtomicUsize::new(0),
    });
    let handle = ClusterExecutor::new(config)
        .expect("a runtime")
        .cores(2)
        .expect("two cores")
        .spawn({
            let shared = shared.clone();
            move |client: CoreClient| {
                let shared = shared.clone();
                async move {
                    if client.core() == 0 {
                        let keys = key_per_core(&client);
                        for k in &keys {
                            client.set(k, "old").await.unwrap();
                        }
                        *shared.keys.lock().unwrap() = keys;
                    }
                    on_core(client, shared).await
                }
            }
        })
        .expect("the runtime starts");
    // From outside the runtime: the harness's own connections.
    shared.next_step(1, 2, || {
        for k in shared.keys.lock().unwrap().iter() {
            let reply = cluster.node_for_key(k).call(&["SET", k, "new"]);
            assert_eq!(reply, Reply::Status("OK".into()));
        }
    });
    shared.next_step(2, 2, || {
        let k = shared.keys.lock().unwrap()[0].clone();
        assert_eq!(cluster.node_for_key(&k).cmd(&["FLUSHALL"]), "OK");
    });
    shared.next_step(3, 2, || {});
    shared.next_step(4, 2, || {});
    for (core, r) in handle.join().into_iter().enumerate() {
        for line in r.unwrap_or_else(|e| panic!("core {core}: {e}")) {
            println!("runtime: {line}");
        }
    }
}

/// A client that only hits its cache learns a slot move from its
/// periodic refresh alone: a key it cached as absent, then written on the
/// slot's new owner (which never tracked it for this client), reads the
/// new value within a few refresh intervals, with no request of its own
/// that could meet a `MOVED`.
#[test]
fn a_moved_slot_is_learnt_by_the_periodic_refresh() {
    const INTERVAL: Duration = Duration::from_secs(1);
    let cluster = RedisCluster::start();
    let seeds = cluster.seed_addrs();
    let masters = cluster.master_indices();
    let (from, to) = (masters[0], masters[1]);
    let moved = slot_of(&cluster, from, 3);
    let cluster = Arc::new(Mutex::new(cluster));
    run(move || async move {
        let config = ClusterConfig::builder()
            .seeds(seeds.iter().copied())
            .timeout(3 * SECOND)
            .refresh_interval(Some(INTERVAL))
            .cache(CacheOptions::with_max_bytes(4 << 20))
            .build()
            .expect("a config");
        let client = Cluster::connect(config).await.expect("connect");
        let other = plain_client(&seeds).await;
        let absent = key_in_slot(moved, "refresh:absent:");
        let v: Option<String> = client.cached_get(&absent, TTL).await.unwrap();
        assert_eq!(v, None);
        on_cluster(&cluster, move |c| c.move_slot(moved, from, to)).await;
        other.set(&absent, "late").await.unwrap();
        let written = Instant::now();
        let misses = stats(&client).misses;
        loop {
            let v: Option<String> = client.cached_get(&absent, TTL).await.unwrap();
            if v.as_deref() == Some("late") {
                break;
            }
            assert!(
                written.elapsed() < 5 * INTERVAL,
                "{absent} still reads {v:?} {:?} after the write",
                written.elapsed()
            );
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(
            stats(&client).misses,
            misses + 1,
            "one miss, after the refresh"
        );
        println!(
            "refresh: the moved slot's entry was served until the periodic refresh ({INTERVAL:?}); the new value read {:?} after the write",
            written.elapsed()
        );
    });
}

/// A cluster cache needs RESP3 on the node connections: asked with RESP2
/// it is refused when the configuration is built, in either order.
#[test]
fn a_cache_over_resp2_is_refused_for_a_cluster() {
    let resp2 = |c: redcore::config::ConnectionConfigBuilder| c.protocol(redcore::Protocol::Resp2);
    let orders = [
        ClusterConfig::builder()
            .seed("127.0.0.1:7000")
            .cache(CacheOptions::default())
            .connection(resp2)
            .build(),
        ClusterConfig::builder()
            .seed("127.0.0.1:7000")
            .connection(resp2)
            .cache(CacheOptions::default())
            .build(),
    ];
    for built in orders {
        match built {
            Err(redcore::Error::InvalidConfig {
                option: "cache", ..
            }) => {}
            other => panic!("expected InvalidConfig(cache), got {other:?}"),
        }
    }
}

/// A seeded random walk over keys on every master, checking each cached
/// read against the history of writes: another client's writes (alone,
/// or side by side with a cached read of the same key), the client's own
/// writes, and syncs (an uncached `GET` on the client's own connection to
/// the key's master, whose reply comes after any invalidation the server
/// sent before it). A cached read never goes back to an older version
/// than one already read, never returns a version not yet written, and
/// after a sync or an own write returns the latest; reads that were
/// older than the latest without breaking these rules are counted.
#[test]
fn random_reads_and_writes_agree_with_the_history() {
    const KEYS: usize = 12;
    const STEPS: usize = 4000;
    let cluster = RedisCluster::start();
    let seeds = cluster.seed_addrs();
    run(move || async move {
        let client = cached_client(&seeds).await;
        let other = plain_client(&seeds).await;
        let keys: Vec<String> = (0..KEYS).map(|i| format!("walk:{i}")).collect();
        // Latest version written and acknowledged, and last version read.
        let mut latest = vec![0u64; KEYS];
        let mut read = vec![0u64; KEYS];
        for k in &keys {
            other.set(k, 0).await.unwrap();
        }
        let version =
            |v: Option<String>| -> u64 { v.expect("every key exists").parse().expect("a version") };
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let (mut older, mut reads) = (0u64, 0u64);
        for step in 0..STEPS {
            let r = next();
            let i = (r >> 8) as usize % KEYS;
            let k = &keys[i];
            let check = |got: u64, read: &mut Vec<u64>, latest: &[u64], what: &str| {
                assert!(
                    got >= read[i] && got <= latest[i],
                    "step {step}, {what} of {k}: version {got}, already read {}, latest {}",
                    read[i],
                    latest[i]
                );
                read[i] = got;
            };
            match r % 10 {
                // Another client writes.
                0..=2 => {
                    latest[i] += 1;
                    other.set(k, latest[i]).await.unwrap();
                }
                // Another client writes while this one reads.
                3 => {
                    let was = latest[i];
                    latest[i] += 1;
                    let (w, got) = futures_lite::future::zip(
                        other.set(k, latest[i]),
                        client.cached_get::<Option<String>>(k, TTL),
                    )
                    .await;
                    w.unwrap();
                    let got = version(got.unwrap());
                    assert!(got == was || got == latest[i], "step {step}: {got}");
                    check(got, &mut read, &latest, "a read beside a write");
                }
                // Sync, then the cache must have heard of every write.
                4 => {
                    let _: Option<String> = client.get(k).await.unwrap();
                    let got = version(client.cached_get(k, TTL).await.unwrap());
                    assert_eq!(got, latest[i], "step {step}: a read after a sync of {k}");
                    check(got, &mut read, &latest, "a read after a sync");
                }
                // An own write, then a read.
                5 => {
                    latest[i] += 1;
                    client.set(k, latest[i]).await.unwrap();
                    let got = version(client.cached_get(k, TTL).await.unwrap());
                    assert_eq!(
                        got, latest[i],
                        "step {step}: a read after an own write of {k}"
                    );
                    check(got, &mut read, &latest, "a read after an own write");
                }
                // A plain cached read.
                _ => {
                    let got = version(client.cached_get(k, TTL).await.unwrap());
                    check(got, &mut read, &latest, "a read");
                    reads += 1;
                    if got < latest[i] {
                        older += 1;
                    }
                }
            }
        }
        let s = stats(&client);
        println!(
            "random walk: {STEPS} steps, {reads} plain reads ({older} older than the latest write, none older than a read), hits {} misses {} invalidations {}",
            s.hits, s.misses, s.invalidations
        );
        assert!(s.hits > 0 && s.misses > 0);
    });
}

/// The per-core runtime on 2 cores, sharded: a master whose key both
/// cores cached (core 1 through core 0's connection) is killed, with no
/// failover in sight (a long node timeout). Core 0 loses the socket;
/// both cores stop serving the key within a bound (core 1 hears of it
/// over the mesh), long before any topology change could drop it.
#[test]
fn a_lost_socket_empties_both_cores() {
    let mut cluster = RedisCluster::builder().node_timeout_ms(30_000).start();
    let config = ClusterConfig::builder()
        .seeds(cluster.seed_addrs())
        .cache(CacheOptions::with_max_bytes(4 << 20))
        .build()
        .expect("a config");
    let shared = Arc::new(Shared {
        keys: Mutex::new(Vec::new()),
        step: AtomicUsize::new(0),
        step_at: Mutex::new(None),
        ready: AtomicUsize::new(0),
    });
    let handle = ClusterExecutor::new(config)
        .expect("a runtime")
        .cores(2)
        .expect("two cores")
        .spawn({
            let shared = shared.clone();
            move |client: CoreClient| {
                let shared = shared.clone();
                async move {
                    let core = client.core();
                    if core == 0 {
                        let key = key_per_core(&client).remove(0);
                        client.set(&key, "old").await.unwrap();
                        *shared.keys.lock().unwrap() = vec![key];
                    }
                    wait_until("the key", 30 * SECOND, || {
                        !shared.keys.lock().unwrap().is_empty()
                    })
                    .await;
                    let keys = shared.keys.lock().unwrap().clone();
                    assert_eq!(client.owner_of_key(&keys[0]), Some(0));
                    cache_all(&client, &keys, "old").await;
                    shared.ready.fetch_add(1, Ordering::SeqCst);
                    let killed = shared.reached(1).await;
                    let quick = client.with_timeout(Duration::from_millis(100));
                    loop {
                        let hits = stats(&client).hits;
                        let began = killed.elapsed();
                        let got = quick.cached_get::<Option<String>>(&keys[0], TTL).await;
                        if stats(&client).hits == hits {
                            // Not a hit: the entry was gone when this read
                            // began.
                            assert!(got.is_err(), "core {core}: the dead node answered {got:?}");
                            return format!(
                                "core {core}: {} no longer served by a read begun {began:?} after the kill",
                                keys[0],
                            );
                        }
                        assert!(
                            killed.elapsed() < BOUND,
                            "core {core}: {} still served from the cache {BOUND:?} after the kill",
                            keys[0]
                        );
                        glommio::timer::sleep(POLL).await;
                    }
                }
            }
        })
        .expect("the runtime starts");
    let node = {
        let deadline = Instant::now() + 30 * SECOND;
        while shared.ready.load(Ordering::SeqCst) < 2 {
            assert!(Instant::now() < deadline, "the cores did not cache the key");
            thread::sleep(Duration::from_millis(2));
        }
        let key = shared.keys.lock().unwrap()[0].clone();
        cluster.slot_owner_index(redcore_test_support::key_slot(key.as_bytes()))
    };
    shared.next_step(1, 2, || cluster.kill_node(node));
    for (core, r) in handle.join().into_iter().enumerate() {
        println!(
            "runtime: {}",
            r.unwrap_or_else(|e| panic!("core {core}: {e}"))
        );
    }
}
