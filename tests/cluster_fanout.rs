//! Cluster-wide commands on a real 3+3 cluster: keyless commands routed
//! by their policy (`DBSIZE` summed over the masters, `KEYS` concatenated,
//! `FLUSHALL` on every master, `SCRIPT LOAD` and `CONFIG SET` on every
//! node, `SCRIPT EXISTS` ANDed, `PING` on one node), multi-key commands
//! split per slot through `command`, `command_to` and `per_node` with each
//! kind of target, and a dead master failing a fan-out with
//! `Error::Fanout` naming it (a split `MSET` too); `INFO` (a `special`
//! reply) as a map from each master to its reply; `SCRIPT KILL`
//! (`one_succeeded`) answering at the first master that kills a script
//! while another master hangs. And, on a standalone server in RESP2 and
//! RESP3, the built-in policy table checked against the server's tips.
//!
//! Every node is checked with the harness's own blocking connection,
//! while the client is idle.

use std::collections::BTreeSet;
use std::time::Duration;

use redcore::cluster::{ClusterCommands, NodeAddr, Target};
use redcore::cmd::policy::{PolicyTable, builtin_policy};
use redcore::prelude::*;
use redcore::{Cluster, ClusterConfig, Connection, ConnectionConfig, Error, Protocol, Value};
use redcore_test_support::client::{eventually, run, wait_until};
use redcore_test_support::{RedisCluster, RedisServer};

const N: usize = 300;

fn addr_of(node: &RedisServer) -> NodeAddr {
    NodeAddr::new("127.0.0.1", node.port())
}

fn dbsize(node: &RedisServer) -> i64 {
    node.call(&["DBSIZE"]).integer().expect("DBSIZE")
}

fn has_script(node: &RedisServer, sha1: &str) -> bool {
    node.call(&["SCRIPT", "EXISTS", sha1]).items()[0].integer() == Some(1)
}

/// How many `PING`s the masters counted since the last reset.
fn ping_calls(cluster: &RedisCluster) -> u64 {
    cluster
        .master_indices()
        .into_iter()
        .map(|i| {
            let info = cluster.node(i).cmd(&["INFO", "commandstats"]);
            info.lines()
                .find_map(|l| l.strip_prefix("cmdstat_ping:calls="))
                .and_then(|rest| rest.split(',').next())
                .map_or(0, |n| n.parse().expect("a count"))
        })
        .sum()
}

fn keys() -> Vec<String> {
    (0..N).map(|i| format!("fan:{i}")).collect()
}

async fn write_keys(client: &Cluster) {
    let keys = keys();
    let pairs: Vec<(&str, &str)> = keys.iter().map(|k| (k.as_str(), "v")).collect();
    client.mset(&pairs).await.unwrap();
}

#[test]
fn keyless_commands_follow_their_policies() {
    let cluster = RedisCluster::start();
    run(move || async move {
        let cluster = &cluster;
        let client = Cluster::connect(cluster.seed_addrs()).await.unwrap();
        wait_until("the tips to be read", Duration::from_secs(5), || {
            client.policies().len() >= 30
        })
        .await;
        write_keys(&client).await;
        dbsize_sums_the_keys_of_every_master(cluster, &client).await;
        keys_star_returns_every_key(&client).await;
        per_node_gives_each_master_its_own_reply(cluster, &client).await;
        command_to_a_node_a_slot_and_all_nodes(cluster, &client).await;
        del_and_mget_across_slots_through_command(&client).await;
        flushall_empties_every_master(cluster, &client).await;
        script_load_reaches_every_node(cluster, &client).await;
        script_exists_is_false_when_one_master_lacks_the_script(cluster, &client).await;
        config_set_reaches_every_node(cluster, &client).await;
        ping_answers_from_one_node(cluster, &client).await;
        info_is_a_map_of_each_masters_reply(cluster, &client).await;
    });
}

async fn dbsize_sums_the_keys_of_every_master(cluster: &RedisCluster, client: &Cluster) {
    for i in cluster.master_indices() {
        assert!(dbsize(cluster.node(i)) > 0, "master {i} holds some keys");
    }
    let total: i64 = client.command(["DBSIZE"]).await.unwrap();
    assert_eq!(total, N as i64);
    let lower: i64 = client.command(["dbsize"]).await.unwrap();
    assert_eq!(lower, N as i64, "names in any case");
}

async fn keys_star_returns_every_key(client: &Cluster) {
    let got: BTreeSet<String> = client
        .command::<Vec<String>>(["KEYS", "fan:*"])
        .await
        .unwrap()
        .into_iter()
        .collect();
    let expected: BTreeSet<String> = keys().into_iter().collect();
    assert_eq!(got, expected);
}

async fn per_node_gives_each_master_its_own_reply(cluster: &RedisCluster, client: &Cluster) {
    let replies = client
        .per_node(Target::AllMasters, ["DBSIZE"])
        .await
        .unwrap();
    assert_eq!(replies.len(), 3);
    let masters: BTreeSet<NodeAddr> = cluster
        .master_indices()
        .into_iter()
        .map(|i| addr_of(cluster.node(i)))
        .collect();
    let asked: BTreeSet<NodeAddr> = replies.replies.iter().map(|(a, _)| a.clone()).collect();
    assert_eq!(asked, masters);
    for i in cluster.master_indices() {
        let node = cluster.node(i);
        let reply = replies.get(&addr_of(node)).expect("asked").clone();
        assert_eq!(reply.unwrap(), Value::Integer(dbsize(node)), "master {i}");
    }
}

async fn command_to_a_node_a_slot_and_all_nodes(cluster: &RedisCluster, client: &Cluster) {
    let first = cluster.master_indices()[0];
    let node = cluster.node(first);
    let one: i64 = client
        .command_to(Target::Node(addr_of(node)), ["DBSIZE"])
        .await
        .unwrap();
    assert_eq!(one, dbsize(node));

    let slot = 12000;
    let owner = cluster.node(cluster.slot_owner_index(slot));
    let by_slot = client
        .per_node(Target::Slot(slot), ["DBSIZE"])
        .await
        .unwrap();
    assert_eq!(by_slot.len(), 1);
    assert_eq!(by_slot.replies[0].0, addr_of(owner));
    let n: i64 = client
        .command_to(Target::Slot(slot), ["DBSIZE"])
        .await
        .unwrap();
    assert_eq!(n, dbsize(owner));
    assert!(matches!(
        client
            .command_to::<i64>(Target::Slot(16384), ["DBSIZE"])
            .await,
        Err(Error::MalformedCommand { .. })
    ));

    let random: String = client
        .command_to(Target::RandomMaster, ["ROLE"])
        .await
        .map(|v: Vec<Value>| match &v[0] {
            Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            other => panic!("ROLE: {other:?}"),
        })
        .unwrap();
    assert_eq!(random, "master");

    // Every node, replicas included: once replication caught up, each key
    // is counted on its master and on its replica.
    eventually(
        "the replicas to hold every key",
        Duration::from_secs(10),
        async || {
            client
                .command_to::<i64>(Target::AllNodes, ["DBSIZE"])
                .await
                .unwrap()
                == 2 * N as i64
        },
    )
    .await;
    let all = client.per_node(Target::AllNodes, ["ROLE"]).await.unwrap();
    assert_eq!(all.len(), 6, "3 masters and 3 replicas");
}

async fn del_and_mget_across_slots_through_command(client: &Cluster) {
    let got: Vec<Option<String>> = client
        .command(["MGET", "fan:1", "fan:missing", "fan:2", "fan:3"])
        .await
        .unwrap();
    assert_eq!(
        got,
        [Some("v".into()), None, Some("v".into()), Some("v".into())]
    );
    let set: String = client
        .command(["MSET", "fanx:a", "1", "fanx:b", "2", "fanx:c", "3"])
        .await
        .unwrap();
    assert_eq!(set, "OK");
    let n: i64 = client
        .command(["EXISTS", "fanx:a", "fanx:b", "fanx:c", "fanx:none"])
        .await
        .unwrap();
    assert_eq!(n, 3);
    let removed: i64 = client
        .command(["DEL", "fanx:a", "fanx:b", "fanx:c", "fanx:none"])
        .await
        .unwrap();
    assert_eq!(removed, 3);
    // MSETNX promises all or nothing: never split.
    assert!(matches!(
        client
            .command::<i64>(["MSETNX", "fanx:a", "1", "fanx:b", "2"])
            .await,
        Err(Error::CrossSlot { .. })
    ));
}

async fn flushall_empties_every_master(cluster: &RedisCluster, client: &Cluster) {
    let ok: String = client.command(["FLUSHALL"]).await.unwrap();
    assert_eq!(ok, "OK");
    for i in cluster.master_indices() {
        assert_eq!(dbsize(cluster.node(i)), 0, "master {i} after FLUSHALL");
    }
    let total: i64 = client.command(["DBSIZE"]).await.unwrap();
    assert_eq!(total, 0);
}

const SCRIPT: &str = "return 'fan-out'";

async fn script_load_reaches_every_node(cluster: &RedisCluster, client: &Cluster) {
    let sha1: String = client.command(["SCRIPT", "LOAD", SCRIPT]).await.unwrap();
    for i in 0..cluster.len() {
        assert!(
            has_script(cluster.node(i), &sha1),
            "SCRIPT LOAD on node {i}"
        );
    }
}

async fn script_exists_is_false_when_one_master_lacks_the_script(
    cluster: &RedisCluster,
    client: &Cluster,
) {
    let sha1: String = client.command(["SCRIPT", "LOAD", SCRIPT]).await.unwrap();
    let everywhere: Vec<i64> = client
        .command([
            "SCRIPT",
            "EXISTS",
            &sha1,
            "0000000000000000000000000000000000000000",
        ])
        .await
        .unwrap();
    assert_eq!(everywhere, [1, 0]);
    let flushed = cluster.master_indices()[1];
    cluster.node(flushed).cmd(&["SCRIPT", "FLUSH"]);
    let anded: Vec<i64> = client.command(["SCRIPT", "EXISTS", &sha1]).await.unwrap();
    assert_eq!(anded, [0], "one master lacks it");
}

async fn config_set_reaches_every_node(cluster: &RedisCluster, client: &Cluster) {
    let ok: String = client
        .command(["CONFIG", "SET", "slowlog-max-len", "77"])
        .await
        .unwrap();
    assert_eq!(ok, "OK");
    for i in 0..cluster.len() {
        let got = cluster.node(i).call(&["CONFIG", "GET", "slowlog-max-len"]);
        assert_eq!(got.items()[1].text(), "77", "node {i}");
    }
}

async fn ping_answers_from_one_node(cluster: &RedisCluster, client: &Cluster) {
    for i in cluster.master_indices() {
        cluster.node(i).cmd(&["CONFIG", "RESETSTAT"]);
    }
    for _ in 0..20 {
        let pong: String = client.command(["PING"]).await.unwrap();
        assert_eq!(pong, "PONG");
    }
    // 20 answered by one node each (60 if sent to every master); the
    // connections' own health checks may add a few.
    let calls = ping_calls(cluster);
    assert!((20..40).contains(&calls), "{calls} PINGs counted");
}

async fn info_is_a_map_of_each_masters_reply(cluster: &RedisCluster, client: &Cluster) {
    // INFO's response policy is `special`: one entry per master.
    let info: Value = client.command(["INFO", "server"]).await.unwrap();
    let Value::Map(entries) = info else {
        panic!("INFO: {info:?}");
    };
    let named: BTreeSet<String> = entries
        .iter()
        .map(|(k, v)| {
            let (Value::BulkString(text) | Value::Verbatim { text, .. }) = v else {
                panic!("INFO of {k:?}: {v:?}");
            };
            assert!(String::from_utf8_lossy(text).contains("redis_version"));
            match k {
                Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                other => panic!("key {other:?}"),
            }
        })
        .collect();
    let masters: BTreeSet<String> = cluster
        .master_indices()
        .into_iter()
        .map(|i| addr_of(cluster.node(i)).to_string())
        .collect();
    assert_eq!(named, masters);
}

/// A master killed: a fan-out fails with `Error::Fanout` naming it as
/// failed and the other masters as having run the command; so does an
/// `MSET` split per slot that ran on the other masters, and it is not
/// safe to retry.
#[test]
fn a_dead_master_fails_a_fan_out_naming_the_nodes() {
    let mut cluster = RedisCluster::start();
    let dead = cluster.master_indices()[0];
    let dead_addr = addr_of(cluster.node(dead));
    // A key on each master: the harness gives each a third of the slots.
    let split_keys: Vec<String> = [100u16, 6000, 12000]
        .iter()
        .map(|&slot| redcore_test_support::key_in_slot(slot, "split:"))
        .collect();
    let owners: BTreeSet<usize> = [100u16, 6000, 12000]
        .iter()
        .map(|&slot| cluster.slot_owner_index(slot))
        .collect();
    assert_eq!(owners.len(), 3, "one key on each master");
    let alive: BTreeSet<NodeAddr> = cluster.master_indices()[1..]
        .iter()
        .map(|&i| addr_of(cluster.node(i)))
        .collect();
    let config = ClusterConfig::builder()
        .seeds(cluster.seed_addrs())
        .build()
        .unwrap();
    let (ready, connected) = std::sync::mpsc::channel();
    let (go, killed) = async_channel::bounded::<()>(1);
    let client_thread = std::thread::spawn(move || {
        run(move || async move {
            let client = Cluster::connect(config).await.unwrap();
            let n: i64 = client.command(["DBSIZE"]).await.unwrap();
            assert_eq!(n, 0);
            ready.send(()).unwrap();
            killed.recv().await.unwrap();
            let client = client.with_timeout(Duration::from_secs(2));
            match client.command::<i64>(["DBSIZE"]).await {
                Err(Error::Fanout(e)) => {
                    assert_eq!(e.command, "DBSIZE");
                    assert_eq!(e.failed.len(), 1, "{e}");
                    assert_eq!(e.failed[0].0, dead_addr, "{e}");
                    let ran: BTreeSet<NodeAddr> = e.succeeded.iter().cloned().collect();
                    assert_eq!(ran, alive, "{e}");
                    println!("the error: {e}");
                }
                other => panic!("expected Error::Fanout, got {other:?}"),
            }
            let per_node = client
                .per_node(Target::AllMasters, ["DBSIZE"])
                .await
                .unwrap();
            let failed: Vec<&NodeAddr> = per_node
                .replies
                .iter()
                .filter(|(_, r)| r.is_err())
                .map(|(a, _)| a)
                .collect();
            assert_eq!(failed, [&dead_addr]);

            // A write split per slot that ran on the live masters and failed
            // on the dead one: a fan-out error, never safe to send again.
            let mut mset = vec!["MSET".to_owned()];
            for k in &split_keys {
                mset.extend([k.clone(), "v".to_owned()]);
            }
            let e = client.command::<()>(mset).await.unwrap_err();
            assert!(!e.is_safe_to_retry(), "{e:?}");
            match &e {
                Error::Fanout(f) => {
                    assert_eq!(f.command, "MSET");
                    let ran: BTreeSet<NodeAddr> = f.succeeded.iter().cloned().collect();
                    assert_eq!(ran, alive, "{f}");
                    assert_eq!(f.failed.len(), 1, "{f}");
                }
                other => panic!("expected Error::Fanout, got {other:?}"),
            }
        });
    });
    connected.recv().unwrap();
    cluster.kill_node(dead);
    go.send_blocking(()).unwrap();
    client_thread.join().expect("the client's checks");
}

/// The built-in table agrees with the tips of every command the server
/// lists (RESP2 and RESP3 replies): any difference is printed and fails.
#[test]
fn the_builtin_policies_agree_with_the_server_tips() {
    let server = RedisServer::start();
    let port = server.port();
    run(move || async move {
        for protocol in [Protocol::Resp2, Protocol::Resp3] {
            let config = ConnectionConfig::builder()
                .host("127.0.0.1")
                .port(port)
                .protocol(protocol)
                .build()
                .unwrap();
            let conn = Connection::connect(config).await.unwrap();
            let info: Value = conn.command(["COMMAND", "INFO"]).await.unwrap();
            let table = PolicyTable::from_command_info(&info).unwrap();
            assert!(table.len() >= 30, "{protocol:?}: {} tips", table.len());
            let mut diffs = Vec::new();
            for (name, tips) in table.tips() {
                let builtin = builtin_policy(name.as_bytes());
                if builtin != Some(tips) {
                    diffs.push(format!("{name}: tips {tips:?}, built-in {builtin:?}"));
                }
            }
            diffs.sort();
            for d in &diffs {
                println!("{protocol:?} {d}");
            }
            assert!(
                diffs.is_empty(),
                "{protocol:?}: {} differences",
                diffs.len()
            );
            println!("{protocol:?}: {} commands with tips agree", table.len());
        }
    });
    drop(server);
}

/// `SCRIPT KILL` (`one_succeeded`) answers as soon as one master kills a
/// script: with a busy script on one master and another master hung
/// (`SIGSTOP`), the call returns `OK` long before its deadline, without
/// waiting for the hung one.
#[test]
fn a_one_succeeded_fan_out_returns_at_the_first_success() {
    let cluster = RedisCluster::start();
    let masters = cluster.master_indices();
    let (busy, hung) = (masters[0], masters[1]);
    let busy_port = cluster.node(busy).port();
    cluster
        .node(busy)
        .cmd(&["CONFIG", "SET", "busy-reply-threshold", "50"]);
    let config = ClusterConfig::builder()
        .seeds(cluster.seed_addrs())
        .build()
        .unwrap();
    let (ready, connected) = std::sync::mpsc::channel();
    let (go, paused) = async_channel::bounded::<()>(1);
    let (done, finished) = std::sync::mpsc::channel();
    let client_thread = std::thread::spawn(move || {
        run(move || async move {
            let client = Cluster::connect(config).await.unwrap();
            // Every master's connection open before one hangs.
            let _: i64 = client.command(["DBSIZE"]).await.unwrap();
            let node_config = |timeout| {
                ConnectionConfig::builder()
                    .host("127.0.0.1")
                    .port(busy_port)
                    .timeout(timeout)
                    .build()
                    .unwrap()
            };
            let spinner = Connection::connect(node_config(Duration::from_secs(30)))
                .await
                .unwrap();
            let script = glommio::spawn_local(async move {
                spinner
                    .command::<Value>(["EVAL", "while true do end", "0"])
                    .await
            });
            let probe = Connection::connect(node_config(Duration::from_secs(5)))
                .await
                .unwrap();
            eventually("the script runs", Duration::from_secs(10), async || {
                matches!(probe.command::<String>(["PING"]).await, Err(e)
                    if e.server_error().is_some_and(|s| s.code() == b"BUSY"))
            })
            .await;
            ready.send(()).unwrap();
            paused.recv().await.unwrap();
            let client = client.with_timeout(Duration::from_secs(4));
            let started = std::time::Instant::now();
            let reply: String = client.command(["SCRIPT", "KILL"]).await.unwrap();
            let took = started.elapsed();
            done.send(()).unwrap();
            assert_eq!(reply, "OK");
            assert!(took < Duration::from_secs(2), "took {took:?}");
            println!("SCRIPT KILL answered in {took:?} with a master hung");
            assert!(script.await.is_err(), "the script was killed");
        });
    });
    connected.recv().unwrap();
    cluster.node(hung).pause(true);
    go.send_blocking(()).unwrap();
    let _ = finished.recv();
    cluster.node(hung).pause(false);
    client_thread.join().expect("the client's checks");
}
