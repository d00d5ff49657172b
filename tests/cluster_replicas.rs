//! Reads from replicas ([`ReadFrom`]) against real clusters: which node
//! served each read is read from the nodes' own counters (`INFO
//! commandstats`, reset with `CONFIG RESETSTAT`), never from the client.
//!
//! One 3 masters + 3 replicas cluster runs the checks that leave it whole
//! (primary only, prefer replica after `WAIT`, writes, lowest latency with
//! a replica slowed by `DEBUG SLEEP`), then a killed replica, then a manual
//! failover. Zones and round-robin need two replicas per master: a
//! 3 + 6 cluster. The per-core runtime gets a cluster of its own.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use redcore::cluster::{Cluster, NodeAddr, Role};
use redcore::config::ReadFrom;
use redcore::prelude::*;
use redcore::{ClusterConfig, ClusterExecutor, CoreClient, Value, cmd};
use redcore_test_support::client::{eventually, run, wait_until};
use redcore_test_support::{
    Conn, FakeNode, FakeReply, RedisCluster, RedisServer, Reply as Frame, key_in_slot,
};

const WAIT: Duration = Duration::from_secs(30);

/// How many calls of `command` `node` counted (`INFO commandstats`).
fn calls(node: &RedisServer, command: &str) -> u64 {
    let prefix = format!("cmdstat_{command}:");
    let info = node.cmd(&["INFO", "commandstats"]);
    info.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|line| {
            line.split(',')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == "calls")
                .map(|(_, v)| v.trim().parse().expect("a count"))
        })
        .unwrap_or(0)
}

fn reset_stats(cluster: &RedisCluster, nodes: &[usize]) {
    for &i in nodes {
        cluster.node(i).cmd(&["CONFIG", "RESETSTAT"]);
    }
}

/// `GET` calls counted by each of `nodes`.
fn gets(cluster: &RedisCluster, nodes: &[usize]) -> Vec<u64> {
    nodes
        .iter()
        .map(|&i| calls(cluster.node(i), "get"))
        .collect()
}

/// The node id of node `i`, as it names itself.
fn id_of(cluster: &RedisCluster, i: usize) -> String {
    cluster
        .cluster_nodes(i)
        .into_iter()
        .find(|n| n.is_myself())
        .expect("myself")
        .id
}

/// The replicas of master `m` (node indices).
fn replicas_of(cluster: &RedisCluster, m: usize) -> Vec<usize> {
    let id = id_of(cluster, m);
    cluster
        .replica_indices()
        .into_iter()
        .filter(|&r| {
            cluster
                .cluster_nodes(r)
                .into_iter()
                .any(|n| n.is_myself() && n.master_id.as_deref() == Some(id.as_str()))
        })
        .collect()
}

/// `n` keys served by master `m`.
fn keys_on(cluster: &RedisCluster, m: usize, prefix: &str, n: usize) -> Vec<String> {
    let me = cluster
        .cluster_nodes(m)
        .into_iter()
        .find(|n| n.is_myself())
        .expect("myself");
    let (start, end) = me.slots[0];
    (0..n)
        .map(|i| {
            let slot = start + (i as u16 % (end - start + 1));
            key_in_slot(slot, &format!("{prefix}{i}:"))
        })
        .collect()
}

fn node_addr(a: SocketAddr) -> NodeAddr {
    NodeAddr::new(a.ip().to_string(), a.port())
}

async fn connect(cluster: &RedisCluster) -> Cluster {
    Cluster::connect(cluster.seed_addrs())
        .await
        .expect("connect to the cluster")
}

/// Writes `key = value` and waits until a replica acknowledged it.
async fn set_and_wait(client: &Cluster, key: &str, value: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        // WAIT is keyless: in one pipeline with the SET it goes to the
        // same master, unless the client's map is stale (after a
        // failover): then the SET follows its MOVED alone and the WAIT
        // meets a replica. Both are sent again after a refresh (setting
        // the same value twice changes nothing).
        let replies = client
            .pipeline([cmd("SET").arg(key).arg(value), cmd("WAIT").arg(1).arg(5000)])
            .await
            .expect("SET + WAIT");
        assert_eq!(replies[0], Value::SimpleString("OK".into()), "SET {key}");
        match &replies[1] {
            Value::Integer(n) if *n >= 1 => return,
            Value::Error(e) if e.to_string().contains("replica") && Instant::now() < deadline => {
                client.refresh().await.expect("a refresh");
            }
            other => panic!("WAIT 1 for {key}: {other:?}"),
        }
    }
}

#[test]
fn replica_reads_on_three_masters_and_three_replicas() {
    let mut cluster = RedisCluster::builder().node_timeout_ms(2000).start();
    cluster.warm_up();
    run(move || async move {
        let client = connect(&cluster).await;
        let masters = cluster.master_indices();
        let replicas = cluster.replica_indices();
        let mut keys = Vec::new();
        for &m in &masters {
            keys.extend(keys_on(&cluster, m, "r", 30));
        }
        for k in &keys {
            set_and_wait(&client, k, &format!("v-{k}")).await;
        }

        primary_reads_never_touch_replicas(&cluster, &client, &keys, &masters, &replicas).await;
        prefer_replica_reads_are_served_by_replicas(&cluster, &client, &keys, &masters, &replicas)
            .await;
        writes_with_prefer_replica_go_to_masters(&cluster, &client, &masters, &replicas).await;
        blocking_reads_wait_on_the_master(&cluster, &client, &masters, &replicas).await;
        replica_connections_reconnect_read_only(&cluster, &client, &keys, &masters, &replicas)
            .await;
        lowest_latency_avoids_a_slowed_replica(&cluster, &client, masters[2]).await;
        reads_survive_a_killed_replica(&mut cluster, &client, masters[0]).await;
        reads_and_writes_survive_a_failover(&cluster, &client, masters[1]).await;
    });
}

async fn primary_reads_never_touch_replicas(
    cluster: &RedisCluster,
    client: &Cluster,
    keys: &[String],
    masters: &[usize],
    replicas: &[usize],
) {
    assert_eq!(client.config().read_from, ReadFrom::Primary);
    reset_stats(cluster, masters);
    reset_stats(cluster, replicas);
    for k in keys {
        let v: String = client.get(k).await.expect("GET");
        assert_eq!(v, format!("v-{k}"));
    }
    assert_eq!(gets(cluster, replicas), [0, 0, 0], "GETs on replicas");
    assert_eq!(
        gets(cluster, masters).iter().sum::<u64>(),
        keys.len() as u64,
        "GETs on masters"
    );
    let info = client.info();
    for n in info.nodes.iter().filter(|n| n.role == Role::Replica) {
        assert_eq!(n.commands, 0, "calls the client sent to replica {}", n.addr);
        assert!(
            !n.connected,
            "a client reading from masters only connects to no replica: {}",
            n.addr
        );
    }
}

async fn prefer_replica_reads_are_served_by_replicas(
    cluster: &RedisCluster,
    client: &Cluster,
    keys: &[String],
    masters: &[usize],
    replicas: &[usize],
) {
    let prefer = client.with_read_from(ReadFrom::PreferReplica);
    // Written and acknowledged by a replica (WAIT) just before the read.
    for k in keys {
        set_and_wait(client, k, &format!("w-{k}")).await;
    }
    reset_stats(cluster, masters);
    reset_stats(cluster, replicas);
    for k in keys {
        let v: String = prefer.get(k).await.expect("GET from a replica");
        assert_eq!(v, format!("w-{k}"), "a replica read after WAIT");
    }
    let on_replicas = gets(cluster, replicas);
    assert_eq!(
        on_replicas.iter().sum::<u64>(),
        keys.len() as u64,
        "GETs on replicas: {on_replicas:?}"
    );
    assert!(
        on_replicas.iter().all(|&n| n == 30),
        "each replica served its master's 30 keys: {on_replicas:?}"
    );
    assert_eq!(gets(cluster, masters), [0, 0, 0], "GETs on masters");
    // MGET splits by slot; each part is a read.
    let got: Vec<String> = prefer.mget(&keys[..5]).await.expect("MGET");
    assert_eq!(got.len(), 5);
    assert_eq!(gets(cluster, masters), [0, 0, 0], "MGET parts on masters");
}

async fn writes_with_prefer_replica_go_to_masters(
    cluster: &RedisCluster,
    client: &Cluster,
    masters: &[usize],
    replicas: &[usize],
) {
    let prefer = client.with_read_from(ReadFrom::PreferReplica);
    let sent_to_replicas = |client: &Cluster| -> u64 {
        client
            .info()
            .nodes
            .iter()
            .filter(|n| n.role == Role::Replica)
            .map(|n| n.commands)
            .sum()
    };
    let before = sent_to_replicas(client);
    reset_stats(cluster, masters);
    for i in 1..=30 {
        let n: i64 = prefer
            .command(["INCR", "{writes}.counter"])
            .await
            .expect("INCR");
        assert_eq!(n, i);
    }
    assert_eq!(
        sent_to_replicas(client),
        before,
        "no write was sent to a replica"
    );
    let incrs: u64 = masters
        .iter()
        .map(|&m| calls(cluster.node(m), "incr"))
        .sum();
    assert_eq!(incrs, 30, "INCRs on masters");
    let _ = replicas;
}

/// A blocking read goes to the master whatever the strategy: on a replica
/// it would have half of the call's time, then the master the other half,
/// and a block longer than half the deadline would fail.
async fn blocking_reads_wait_on_the_master(
    cluster: &RedisCluster,
    client: &Cluster,
    masters: &[usize],
    replicas: &[usize],
) {
    let prefer = client
        .with_read_from(ReadFrom::PreferReplica)
        .with_timeout(Duration::from_secs(2));
    let key = &keys_on(cluster, masters[0], "blocked", 1)[0];
    reset_stats(cluster, masters);
    reset_stats(cluster, replicas);
    let got: Value = prefer
        .command(
            cmd("XREAD")
                .arg("BLOCK")
                .arg(1500)
                .arg("STREAMS")
                .arg(key.as_str())
                .arg("$"),
        )
        .await
        .expect("a 1.5 s block within a 2 s deadline");
    assert_eq!(got, Value::Nil, "nothing was added to {key}");
    let on =
        |nodes: &[usize]| -> u64 { nodes.iter().map(|&i| calls(cluster.node(i), "xread")).sum() };
    assert_eq!(on(replicas), 0, "no XREAD BLOCK on a replica");
    assert_eq!(on(masters), 1, "the XREAD BLOCK on its master");
}

async fn replica_connections_reconnect_read_only(
    cluster: &RedisCluster,
    client: &Cluster,
    keys: &[String],
    masters: &[usize],
    replicas: &[usize],
) {
    let prefer = client.with_read_from(ReadFrom::PreferReplica);
    for &r in replicas {
        // Our connections to the replica (the harness's own is skipped).
        cluster.node(r).cmd(&["CLIENT", "KILL", "TYPE", "normal"]);
    }
    // Reads during the reconnect may fall back to the masters; once the
    // new sockets are up (READONLY again in their handshake), every read is
    // a replica's again.
    eventually("every read served by a replica again", WAIT, async || {
        reset_stats(cluster, masters);
        for k in keys {
            let _: String = prefer.get(k).await.expect("a read while reconnecting");
        }
        gets(cluster, masters).iter().sum::<u64>() == 0
    })
    .await;
    for &r in replicas {
        let clients = cluster.node(r).cmd(&["CLIENT", "LIST"]);
        assert!(
            clients.lines().any(|l| l
                .split(' ')
                .any(|f| f.starts_with("flags=") && f.contains('r'))),
            "a READONLY client on replica {r}: {clients}"
        );
    }
}

async fn lowest_latency_avoids_a_slowed_replica(
    cluster: &RedisCluster,
    client: &Cluster,
    master: usize,
) {
    let replica = replicas_of(cluster, master)[0];
    let keys = keys_on(cluster, master, "lat", 10);
    let latency = client.with_read_from(ReadFrom::LowestLatency);
    let master_addr = node_addr(cluster.node(master).addr());
    let replica_addr = node_addr(cluster.node(replica).addr());
    let latency_of = |addr: &NodeAddr| {
        client
            .info()
            .nodes
            .iter()
            .find(|n| n.addr == *addr)
            .and_then(|n| n.latency)
    };
    wait_until("both nodes measured", WAIT, || {
        latency_of(&master_addr).is_some() && latency_of(&replica_addr).is_some()
    })
    .await;
    // The replica is kept busy: DEBUG SLEEP 0.05 back to back.
    let stop = Arc::new(AtomicBool::new(false));
    let slowing = {
        let stop = stop.clone();
        let addr = cluster.node(replica).addr();
        thread::spawn(move || {
            let mut conn = Conn::tcp(addr, Duration::from_secs(5)).expect("a connection");
            while !stop.load(Ordering::Relaxed) {
                conn.call(&["DEBUG", "SLEEP", "0.05"]).expect("DEBUG SLEEP");
            }
        })
    };
    wait_until("the slowed replica measured slower", WAIT, || {
        match (latency_of(&master_addr), latency_of(&replica_addr)) {
            (Some(m), Some(r)) => r > m * 10 && r > Duration::from_millis(5),
            _ => false,
        }
    })
    .await;
    let before_master = calls(cluster.node(master), "get");
    let mut replica_reads = 0;
    for k in keys.iter().cycle().take(100) {
        let started = Instant::now();
        let _: Option<String> = latency.get(k).await.expect("GET");
        if started.elapsed() > Duration::from_millis(5) {
            replica_reads += 1;
        }
    }
    let on_master = calls(cluster.node(master), "get") - before_master;
    stop.store(true, Ordering::Relaxed);
    slowing.join().expect("the slowing thread");
    assert!(
        on_master >= 90,
        "the master served {on_master} of 100 reads ({replica_reads} were slow)"
    );
    println!(
        "LATENCY master {:?} replica {:?}: {on_master}/100 reads on the master",
        latency_of(&master_addr),
        latency_of(&replica_addr)
    );
}

async fn reads_survive_a_killed_replica(
    cluster: &mut RedisCluster,
    client: &Cluster,
    master: usize,
) {
    let replica = replicas_of(cluster, master)[0];
    let keys = keys_on(cluster, master, "kill", 20);
    for k in &keys {
        set_and_wait(client, k, "alive").await;
    }
    cluster.kill_node(replica);
    let timeout = Duration::from_secs(2);
    let prefer = client
        .with_read_from(ReadFrom::PreferReplica)
        .with_timeout(timeout);
    let before = calls(cluster.node(master), "get");
    for k in &keys {
        let started = Instant::now();
        let v: String = prefer.get(k).await.expect("a read with its replica dead");
        assert_eq!(v, "alive");
        assert!(
            started.elapsed() < timeout,
            "a read took {:?}",
            started.elapsed()
        );
    }
    assert_eq!(
        calls(cluster.node(master), "get") - before,
        keys.len() as u64,
        "the master served every read"
    );
}

async fn reads_and_writes_survive_a_failover(
    cluster: &RedisCluster,
    client: &Cluster,
    master: usize,
) {
    let replica = replicas_of(cluster, master)[0];
    let keys = keys_on(cluster, master, "fo", 20);
    let prefer = client.with_read_from(ReadFrom::PreferReplica);
    cluster.node(replica).cmd(&["CLUSTER", "FAILOVER"]);
    wait_until("the replica to be promoted", WAIT, || {
        cluster.master_indices().contains(&replica) && cluster.replica_indices().contains(&master)
    })
    .await;
    // Calls go on throughout: each write and read succeeds within its
    // deadline while the client learns the change.
    for (i, k) in keys.iter().enumerate() {
        let v = format!("after-{i}");
        let _: () = client.set(k, &v).await.expect("a write after the failover");
        set_and_wait(client, k, &v).await;
        let got: String = prefer.get(k).await.expect("a read after the failover");
        assert_eq!(got, v);
    }
    // The nodes agree on the new roles a little later than the two
    // nodes themselves: refresh until the client's topology says so.
    let master_addr = node_addr(cluster.node(master).addr());
    let replica_addr = node_addr(cluster.node(replica).addr());
    eventually("the client sees the new roles", WAIT, async || {
        let _ = client.refresh().await;
        let info = client.info();
        let role = |addr: &NodeAddr| info.nodes.iter().find(|n| n.addr == *addr).map(|n| n.role);
        role(&replica_addr) == Some(Role::Master) && role(&master_addr) == Some(Role::Replica)
    })
    .await;
    // No stale routing: writes on the new master, reads on the new replica.
    reset_stats(cluster, &[master, replica]);
    for k in &keys {
        set_and_wait(client, k, "final").await;
    }
    for k in &keys {
        let got: String = prefer.get(k).await.expect("GET");
        assert_eq!(got, "final");
    }
    assert_eq!(
        calls(cluster.node(replica), "get"),
        0,
        "GETs on the new master"
    );
    assert_eq!(
        calls(cluster.node(master), "get"),
        keys.len() as u64,
        "GETs on the new replica"
    );
    assert!(calls(cluster.node(replica), "set") >= keys.len() as u64);
    // The promoted replica's connection dropped READONLY with its role: a
    // READONLY socket to a node demoted again while the map still named it
    // a master would serve master reads from replica data.
    eventually(
        "no READONLY client on the promoted master",
        WAIT,
        async || {
            let _: String = client.get(&keys[0]).await.expect("GET");
            !cluster
                .node(replica)
                .cmd(&["CLIENT", "LIST"])
                .lines()
                .any(|l| {
                    l.split(' ')
                        .any(|f| f.starts_with("flags=") && f.contains('r'))
                })
        },
    )
    .await;
}

#[test]
fn zones_and_round_robin_with_two_replicas_per_master() {
    let cluster = RedisCluster::builder().replicas_per_master(2).start();
    cluster.warm_up();
    let masters = cluster.master_indices();
    let m = masters[0];
    let pair = replicas_of(&cluster, m);
    assert_eq!(pair.len(), 2);
    // Zone "a" holds the client and the second replica of master m.
    let mut zones: HashMap<NodeAddr, String> = HashMap::new();
    for i in 0..cluster.len() {
        let zone = if i == pair[1] { "a" } else { "b" };
        zones.insert(node_addr(cluster.node(i).addr()), zone.to_owned());
    }
    let config = ClusterConfig::builder()
        .seeds(cluster.seed_addrs())
        .read_from(ReadFrom::AzAffinity)
        .client_zone("a")
        .node_zones(zones)
        .build()
        .expect("a config");
    let no_zone = ClusterConfig::builder()
        .seeds(cluster.seed_addrs())
        .read_from(ReadFrom::AzAffinity)
        .build()
        .unwrap_err();
    assert!(
        matches!(
            no_zone,
            redcore::Error::InvalidConfig {
                option: "read_from",
                ..
            }
        ),
        "AzAffinity without a zone: {no_zone:?}"
    );
    run(move || async move {
        let keys = keys_on(&cluster, m, "az", 20);
        let plain = connect(&cluster).await;
        for k in &keys {
            set_and_wait(&plain, k, "z").await;
        }
        // WAIT 1 may be one replica: wait for both.
        let replies = plain
            .pipeline([
                cmd("SET").arg(&keys[keys.len() - 1]).arg("z"),
                cmd("WAIT").arg(2).arg(5000),
            ])
            .await
            .expect("SET + WAIT 2");
        assert_eq!(replies[1], Value::Integer(2), "both replicas acknowledged");

        let az = Cluster::connect(config).await.expect("connect");
        let nodes = [m, pair[0], pair[1]];
        reset_stats(&cluster, &nodes);
        for k in &keys {
            let v: String = az.get(k).await.expect("GET");
            assert_eq!(v, "z");
        }
        assert_eq!(
            gets(&cluster, &nodes),
            [0, 0, keys.len() as u64],
            "GETs on the master, the other-zone replica, the same-zone replica"
        );

        let rr = plain.with_read_from(ReadFrom::RoundRobin);
        reset_stats(&cluster, &nodes);
        for k in &keys {
            let v: String = rr.get(k).await.expect("GET");
            assert_eq!(v, "z");
        }
        let got = gets(&cluster, &nodes);
        assert_eq!(got[0], 0, "round-robin never reads from the master");
        assert_eq!(got[1] + got[2], keys.len() as u64);
        assert!(
            got[1].abs_diff(got[2]) <= 1,
            "round-robin alternates between the two replicas: {got:?}"
        );
    });
}

#[test]
fn core_and_remote_clients_read_from_replicas_on_two_cores() {
    let cluster = RedisCluster::start();
    cluster.warm_up();
    let masters = cluster.master_indices();
    let replicas = cluster.replica_indices();
    let mut keys = Vec::new();
    for &m in &masters {
        keys.extend(keys_on(&cluster, m, "ex", 10));
    }
    let config = ClusterConfig::builder()
        .seeds(cluster.seed_addrs())
        .build()
        .expect("a config");
    run({
        let seeds = cluster.seed_addrs();
        let keys = keys.clone();
        move || async move {
            let c = Cluster::connect(seeds).await.expect("connect");
            for k in &keys {
                set_and_wait(&c, k, "x").await;
            }
        }
    });
    reset_stats(&cluster, &masters);
    reset_stats(&cluster, &replicas);
    let per_core = keys.clone();
    let remote_done = Arc::new(AtomicBool::new(false));
    let done = remote_done.clone();
    let handle = ClusterExecutor::new(config)
        .expect("a runtime")
        .cores(2)
        .expect("two cores")
        .spawn(move |client: CoreClient| {
            let keys = per_core.clone();
            let done = done.clone();
            async move {
                let prefer = client.with_read_from(ReadFrom::PreferReplica);
                for k in &keys {
                    let v: String = prefer.get(k).await.expect("GET on a core");
                    assert_eq!(v, "x");
                }
                // The cores serve the remote client until it is done.
                wait_until("the remote reads", WAIT, || done.load(Ordering::Relaxed)).await;
            }
        })
        .expect("the runtime starts");
    let remote = handle.remote().with_read_from(ReadFrom::PreferReplica);
    for k in &keys {
        let v: String = futures_lite::future::block_on(remote.get(k)).expect("a remote GET");
        assert_eq!(v, "x");
    }
    remote_done.store(true, Ordering::Relaxed);
    let results = handle.join();
    assert!(results.iter().all(Result::is_ok), "every core finished");
    let on_replicas: u64 = gets(&cluster, &replicas).iter().sum();
    // Two cores and the remote client each read every key once.
    assert_eq!(on_replicas, 3 * keys.len() as u64, "GETs on replicas");
    assert_eq!(gets(&cluster, &masters), [0, 0, 0], "GETs on masters");
}

/// `CLUSTER SLOTS` of a fake two-node cluster: every slot on `master`,
/// `replica` its replica.
fn fake_slots(master: SocketAddr, replica: SocketAddr) -> FakeReply {
    let node = |a: SocketAddr| {
        Frame::Array(vec![
            Frame::Bulk(a.ip().to_string().into_bytes()),
            Frame::Integer(a.port().into()),
            Frame::Bulk(format!("{:040x}", a.port()).into_bytes()),
        ])
    };
    FakeReply::Value(Frame::Array(vec![Frame::Array(vec![
        Frame::Integer(0),
        Frame::Integer(16383),
        node(master),
        node(replica),
    ])]))
}

/// A fake node of that cluster; `get` answers its `GET`s.
fn fake_node(
    addrs: Arc<OnceLock<(SocketAddr, SocketAddr)>>,
    get: impl Fn() -> FakeReply + Send + Sync + 'static,
) -> FakeNode {
    FakeNode::start_with(move |call| {
        if call.is("CLUSTER SHARDS") {
            FakeReply::error("ERR unknown subcommand 'SHARDS'")
        } else if call.is("CLUSTER SLOTS") {
            let (m, r) = *addrs.get().expect("both nodes started");
            fake_slots(m, r)
        } else if call.is("GET") {
            get()
        } else {
            FakeReply::Default
        }
    })
}

/// A replica answering `MOVED` (scripted: a real one only does when its
/// view is stale): the read is served by the master within the same call,
/// the slot map still sends the slot to the master (no connection to the
/// address the replica named), and the next read skips the replica.
#[test]
fn a_replicas_moved_falls_back_and_leaves_the_slot_map_alone() {
    let addrs: Arc<OnceLock<(SocketAddr, SocketAddr)>> = Arc::new(OnceLock::new());
    let elsewhere: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let master = fake_node(addrs.clone(), || FakeReply::bulk("from-master"));
    let replica = fake_node(addrs.clone(), move || FakeReply::moved(1234, elsewhere));
    addrs.set((master.addr(), replica.addr())).unwrap();
    let (master_addr, seed) = (master.addr(), master.addr());
    run(move || async move {
        let config = ClusterConfig::builder()
            .seed(seed)
            .timeout(Duration::from_secs(2))
            .refresh_interval(None)
            .read_from(ReadFrom::PreferReplica)
            .build()
            .expect("config");
        let client = Cluster::connect(config).await.expect("connect");
        let epoch = client.info().epoch;
        let v: String = client.get("k").await.expect("a read");
        assert_eq!(v, "from-master");
        let info = client.info();
        assert!(
            info.nodes.iter().all(|n| n.addr != node_addr(elsewhere)),
            "the replica's MOVED target joined the map: {info:?}"
        );
        let on_master: Vec<_> = info
            .nodes
            .iter()
            .filter(|n| n.addr == node_addr(master_addr))
            .collect();
        assert_eq!(on_master[0].slots, [(0, 16383)], "{info:?}");
        assert!(info.epoch >= epoch);
        // Within a second the replica is skipped.
        let v: String = client.get("k").await.expect("a second read");
        assert_eq!(v, "from-master");
    });
    assert_eq!(replica.count("GET"), 1, "the replica was tried once");
    assert_eq!(master.count("GET"), 2, "the master served both reads");
    assert!(
        replica.count("READONLY") >= 1,
        "the replica connection sent READONLY"
    );
    assert_eq!(master.count("READONLY"), 0, "the master connection did not");
}
