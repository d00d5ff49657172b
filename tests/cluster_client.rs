//! `redcore::cluster::Cluster` against real clusters of 3 masters and 3
//! replicas: where commands land (checked on the nodes themselves with the
//! harness's blocking client), cross-slot refusals that send nothing, the
//! helpers that split `MGET`/`MSET`/`DEL`/... across slots, pipelines and
//! transactions, watch transactions, what `info()` reports, connecting
//! (unreachable seeds, a standalone server, bad options, a password) and
//! `close()`.
//!
//! A cluster takes seconds to start, so each `#[test]` starts one and runs
//! a group of checks that do not disturb each other (distinct keys), each
//! check in its own function named after the behaviour it asserts.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use glommio::spawn_local;
use redcore::Commands;
use redcore::cluster::{Cluster, ClusterInfo, NodeAddr, Role};
use redcore::{ClusterConfig, Cmd, Connection, Error, Value, Watch, cmd};
use redcore_test_support::client::{
    assert_closed_for, assert_cross_slot, bulk, clients_named, free_port, run, wait_until, within,
};
use redcore_test_support::{Conn, RedisCluster, RedisServer, Reply, key_in_slot, key_slot};

const SECOND: Duration = Duration::from_secs(1);
const SLOTS: usize = 16384;

fn ok() -> Value {
    Value::SimpleString("OK".into())
}

fn pong() -> Value {
    Value::SimpleString("PONG".into())
}

async fn connect(cluster: &RedisCluster) -> Cluster {
    Cluster::connect(cluster.seed_addrs())
        .await
        .expect("connect to the cluster")
}

/// The harness's view of slot ownership: the node index of each slot's
/// master, from one `CLUSTER NODES`.
struct Owners(Vec<usize>);

impl Owners {
    fn of(cluster: &RedisCluster) -> Owners {
        let mut owners = vec![usize::MAX; SLOTS];
        for n in cluster.cluster_nodes(0).iter().filter(|n| n.is_master()) {
            let i = cluster
                .node_index(n.addr.expect("a master with an address"))
                .expect("a node of ours");
            for &(a, b) in &n.slots {
                for s in a..=b {
                    owners[usize::from(s)] = i;
                }
            }
        }
        assert!(owners.iter().all(|&o| o != usize::MAX), "a slot unserved");
        Owners(owners)
    }

    fn of_key(&self, key: &str) -> usize {
        self.0[usize::from(key_slot(key.as_bytes()))]
    }

    /// A key with `prefix` owned by master `node`.
    fn key_on(&self, node: usize, prefix: &str) -> String {
        let slot = self.0.iter().position(|&o| o == node).expect("a slot") as u16;
        key_in_slot(slot, prefix)
    }

    fn masters(&self) -> BTreeSet<usize> {
        self.0.iter().copied().collect()
    }
}

/// One blocking connection per node, for reading what the nodes hold.
struct Direct(HashMap<usize, Conn>);

impl Direct {
    fn new(cluster: &RedisCluster) -> Direct {
        Direct(
            (0..cluster.len())
                .map(|i| (i, cluster.node(i).admin_conn().expect("direct connection")))
                .collect(),
        )
    }

    fn call(&mut self, node: usize, args: &[&str]) -> Reply {
        self.0
            .get_mut(&node)
            .expect("a node")
            .call(args)
            .unwrap_or_else(|e| panic!("{args:?} on node {node}: {e}"))
    }

    /// `GET key` on `node` itself (a `MOVED` error if it does not own it).
    fn get(&mut self, node: usize, key: &str) -> Reply {
        self.call(node, &["GET", key])
    }

    fn int(&mut self, node: usize, args: &[&str]) -> i64 {
        let reply = self.call(node, args);
        reply
            .integer()
            .unwrap_or_else(|| panic!("{args:?} on node {node}: {reply:?}"))
    }
}

/// How often the masters received `command` (`calls` and `rejected_calls`
/// of `INFO commandstats`, summed): to prove that nothing was sent.
fn server_calls(cluster: &RedisCluster, command: &str) -> u64 {
    let prefix = format!("cmdstat_{}:", command.to_ascii_lowercase());
    cluster
        .master_indices()
        .into_iter()
        .map(|i| {
            let stats = cluster.node(i).cmd(&["INFO", "commandstats"]);
            let Some(line) = stats.lines().find_map(|l| l.strip_prefix(prefix.as_str())) else {
                return 0;
            };
            line.split(',')
                .filter_map(|kv| kv.split_once('='))
                .filter(|(k, _)| *k == "calls" || *k == "rejected_calls")
                .map(|(_, v)| v.trim().parse::<u64>().expect("a count"))
                .sum::<u64>()
        })
        .sum()
}

/// The client's `commands` counter of each node.
fn commands_by_node(info: &ClusterInfo) -> BTreeMap<NodeAddr, u64> {
    info.nodes
        .iter()
        .map(|n| (n.addr.clone(), n.commands))
        .collect()
}

fn addr_of(cluster: &RedisCluster, node: usize) -> NodeAddr {
    NodeAddr::from(cluster.node(node).addr())
}

// ---------------------------------------------------------------------
// Routing and the split helpers.
// ---------------------------------------------------------------------

#[test]
fn cluster_routes_keys_and_splits_multi_key_helpers() {
    let cluster = RedisCluster::start();
    run(move || async move {
        let client = connect(&cluster).await;
        let owners = Owners::of(&cluster);
        let mut direct = Direct::new(&cluster);
        // First, while the cluster holds nothing else.
        sets_land_on_the_owning_master_only(&cluster, &client, &owners, &mut direct).await;
        hash_tagged_keys_share_one_slot_and_node(&client, &owners, &mut direct).await;
        a_command_across_slots_is_refused_unsent(&cluster, &client).await;
        keyless_commands_and_master_connections(&cluster, &client).await;
        mget_keeps_order_missing_keys_and_duplicates(&client, &owners).await;
        mset_then_mget_across_slots(&client, &owners, &mut direct).await;
        counting_helpers_add_up_across_slots(&client, &owners).await;
    });
}

const ROUTED_KEYS: usize = 300;

async fn sets_land_on_the_owning_master_only(
    cluster: &RedisCluster,
    client: &Cluster,
    owners: &Owners,
    direct: &mut Direct,
) {
    let keys: Vec<String> = (0..ROUTED_KEYS).map(|i| format!("route:{i}")).collect();
    for (i, key) in keys.iter().enumerate() {
        client
            .command::<()>(["SET", key.as_str(), &format!("v{i}")])
            .await
            .unwrap_or_else(|e| panic!("SET {key}: {e}"));
    }
    // Every key is on its owner...
    for (i, key) in keys.iter().enumerate() {
        let owner = owners.of_key(key);
        assert_eq!(
            direct.get(owner, key),
            Reply::Bulk(format!("v{i}").into_bytes()),
            "{key} on its owner, node {owner}"
        );
    }
    // ... and nowhere else: the masters hold exactly these keys.
    let mut total = 0;
    for m in owners.masters() {
        let held = direct.int(m, &["DBSIZE"]);
        let expected = keys.iter().filter(|k| owners.of_key(k) == m).count();
        assert_eq!(held as usize, expected, "DBSIZE of master {m}");
        assert!(expected > 0, "the keys should spread over every master");
        total += held as usize;
    }
    assert_eq!(total, ROUTED_KEYS);
    assert_eq!(owners.masters().len(), 3);
    assert_eq!(
        owners
            .masters()
            .into_iter()
            .map(|m| addr_of(cluster, m))
            .collect::<BTreeSet<_>>(),
        cluster
            .masters()
            .into_iter()
            .map(NodeAddr::from)
            .collect::<BTreeSet<_>>()
    );
    // Read back through the client as well.
    for (i, key) in keys.iter().enumerate().step_by(7) {
        let v: String = client.command(["GET", key.as_str()]).await.unwrap();
        assert_eq!(v, format!("v{i}"));
    }
}

async fn hash_tagged_keys_share_one_slot_and_node(
    client: &Cluster,
    owners: &Owners,
    direct: &mut Direct,
) {
    let (a, b) = ("{user:1}.a", "{user:1}.b");
    client.command::<()>(["SET", a, "A"]).await.unwrap();
    client.command::<()>(["SET", b, "B"]).await.unwrap();
    let slot = key_slot(b"user:1");
    assert_eq!(key_slot(a.as_bytes()), slot);
    assert_eq!(key_slot(b.as_bytes()), slot);
    let owner = owners.of_key(a);
    assert_eq!(owners.of_key(b), owner);
    assert_eq!(
        direct.int(owner, &["CLUSTER", "KEYSLOT", a]),
        i64::from(slot),
        "the server hashes the tag the same way"
    );
    assert_eq!(
        direct.int(owner, &["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()]),
        2
    );
    assert_eq!(direct.get(owner, a), Reply::Bulk(b"A".to_vec()));
    assert_eq!(direct.get(owner, b), Reply::Bulk(b"B".to_vec()));
    // Both tagged keys in one command: one slot, so it is allowed.
    let both: Vec<String> = client.command(["MGET", a, b]).await.unwrap();
    assert_eq!(both, ["A", "B"]);
}

async fn a_command_across_slots_is_refused_unsent(cluster: &RedisCluster, client: &Cluster) {
    // MGET, MSET, DEL, ... across slots are split (tests/cluster_fanout.rs);
    // commands that cannot be split are refused before anything is sent.
    let before_client: u64 = client.info().nodes.iter().map(|n| n.commands).sum();
    let before_server = server_calls(cluster, "SINTER") + server_calls(cluster, "MSETNX");
    assert_cross_slot(
        client.command::<Vec<String>>(["SINTER", "a", "b"]).await,
        "a",
        "b",
    );
    assert_cross_slot(
        client
            .command::<i64>(["MSETNX", "xs:a", "1", "xs:b", "2"])
            .await,
        "xs:a",
        "xs:b",
    );
    let after_client: u64 = client.info().nodes.iter().map(|n| n.commands).sum();
    assert_eq!(after_client, before_client, "the client counted a call");
    assert_eq!(
        server_calls(cluster, "SINTER") + server_calls(cluster, "MSETNX"),
        before_server,
        "a master received the cross-slot command"
    );
    let exists: u64 = client.exists(&["xs:a", "xs:b"]).await.unwrap();
    assert_eq!(exists, 0, "the refused MSETNX set something");
}

async fn keyless_commands_and_master_connections(cluster: &RedisCluster, client: &Cluster) {
    let pong: String = client.command(["PING"]).await.unwrap();
    assert_eq!(pong, "PONG");
    let echo: String = client.command(["ECHO", "hello"]).await.unwrap();
    assert_eq!(echo, "hello");

    let conns = client.master_connections();
    assert_eq!(conns.len(), 3, "one connection per master");
    let addrs: BTreeSet<NodeAddr> = conns.iter().map(|(a, _)| a.clone()).collect();
    let masters: BTreeSet<NodeAddr> = cluster.masters().into_iter().map(NodeAddr::from).collect();
    assert_eq!(addrs, masters);
    let mut keys = 0;
    for (addr, conn) in &conns {
        let pong: String = conn.command(["PING"]).await.unwrap();
        assert_eq!(pong, "PONG", "PING on {addr}");
        let role: Vec<Value> = conn.command(["ROLE"]).await.unwrap();
        assert_eq!(role[0], bulk("master"), "ROLE of {addr}");
        // Meant for every node: DBSIZE over all of them counts every key.
        keys += conn.command::<u64>(["DBSIZE"]).await.unwrap();
    }
    // The routed keys and the two hash-tagged ones.
    assert_eq!(keys, ROUTED_KEYS as u64 + 2);
    // DBSIZE through the client goes to every master and sums.
    let total: u64 = client.command(["DBSIZE"]).await.unwrap();
    assert_eq!(total, keys);
}

async fn mget_keeps_order_missing_keys_and_duplicates(client: &Cluster, owners: &Owners) {
    // One key on each master, and one more in yet another slot.
    let mut present: Vec<String> = owners
        .masters()
        .into_iter()
        .map(|m| owners.key_on(m, "mget:"))
        .collect();
    present.push("mget:extra".to_owned());
    for (i, key) in present.iter().enumerate() {
        client
            .command::<()>(["SET", key.as_str(), &format!("m{i}")])
            .await
            .unwrap();
    }
    let missing = "mget:missing";
    let mut keys: Vec<&str> = Vec::new();
    let mut expected: Vec<Option<String>> = Vec::new();
    for (i, key) in present.iter().enumerate().rev() {
        keys.push(key);
        expected.push(Some(format!("m{i}")));
        if i == 1 {
            keys.push(missing);
            expected.push(None);
        }
    }
    // Duplicates: the first key again, and the missing one again.
    keys.push(&present[0]);
    expected.push(Some("m0".into()));
    keys.push(missing);
    expected.push(None);
    // Several keys of one slot (one MGET), with other slots between them.
    let tagged = ["{mget}.1", "{mget}.2", "{mget}.3"];
    client
        .mset(&[(tagged[0], "t1"), (tagged[1], "t2"), (tagged[2], "t3")])
        .await
        .unwrap();
    for (i, (at, key)) in [(1, tagged[2]), (3, tagged[0]), (6, tagged[1])]
        .into_iter()
        .enumerate()
    {
        keys.insert(at + i, key);
        expected.insert(at + i, Some(format!("t{}", &key[7..])));
    }
    let slots: BTreeSet<u16> = keys.iter().map(|k| key_slot(k.as_bytes())).collect();
    assert!(slots.len() >= 4, "the keys span several slots");
    let got: Vec<Option<String>> = client.mget(&keys).await.unwrap();
    assert_eq!(got, expected, "MGET of {keys:?}");
    let none: Vec<Option<String>> = client.mget::<Vec<Option<String>>, &str>(&[]).await.unwrap();
    assert!(none.is_empty());
}

async fn mset_then_mget_across_slots(client: &Cluster, owners: &Owners, direct: &mut Direct) {
    // Plain keys, one slot each, and hash-tagged ones sharing slots.
    let pairs: Vec<(String, String)> = (0..50)
        .map(|i| match i % 3 {
            0 => format!("mset:{i}"),
            1 => format!("{{mset:a}}.{i}"),
            _ => format!("{{mset:b}}.{i}"),
        })
        .map(|k| {
            let v = format!("value-of-{k}");
            (k, v)
        })
        .collect();
    let nodes: BTreeSet<usize> = pairs.iter().map(|(k, _)| owners.of_key(k)).collect();
    assert_eq!(nodes.len(), 3, "the pairs span every master");
    client.mset(&pairs).await.unwrap();
    let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
    let got: Vec<String> = client.mget(&keys).await.unwrap();
    let want: Vec<&str> = pairs.iter().map(|(_, v)| v.as_str()).collect();
    assert_eq!(got, want);
    for (k, v) in &pairs {
        assert_eq!(
            direct.get(owners.of_key(k), k),
            Reply::Bulk(v.clone().into_bytes()),
            "{k} on its owner"
        );
    }
    // Overwrite some with a second MSET; the others keep their values.
    client
        .mset(&[("mset:0", "new0"), ("{mset:a}.1", "new1")])
        .await
        .unwrap();
    let got: Vec<String> = client
        .mget(&["mset:0", "{mset:a}.1", "mset:3", "{mset:a}.4"])
        .await
        .unwrap();
    assert_eq!(
        got,
        ["new0", "new1", "value-of-mset:3", "value-of-{mset:a}.4"]
    );
}

async fn counting_helpers_add_up_across_slots(client: &Cluster, owners: &Owners) {
    let keys: Vec<String> = (0..12).map(|i| format!("count:{i}")).collect();
    let nodes: BTreeSet<usize> = keys.iter().map(|k| owners.of_key(k)).collect();
    assert!(nodes.len() >= 2, "the keys span several masters: {nodes:?}");
    let pairs: Vec<(&str, &str)> = keys.iter().map(|k| (k.as_str(), "x")).collect();
    client.mset(&pairs).await.unwrap();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();

    let mut with_extra = refs.clone();
    with_extra.push("count:missing");
    with_extra.push(refs[0]); // EXISTS counts a key given twice twice.
    assert_eq!(client.exists(&with_extra).await.unwrap(), 13);
    let mut touch_keys = refs.clone();
    touch_keys.push("count:missing");
    assert_eq!(client.touch(&touch_keys).await.unwrap(), 12);
    let (first, rest) = refs.split_at(5);
    let mut del_keys = first.to_vec();
    del_keys.push("count:missing");
    assert_eq!(client.del(&del_keys).await.unwrap(), 5);
    assert_eq!(client.exists(first).await.unwrap(), 0);
    assert_eq!(client.exists(rest).await.unwrap(), 7);
    assert_eq!(client.unlink(rest).await.unwrap(), 7);
    assert_eq!(client.exists(&refs).await.unwrap(), 0);
    assert_eq!(
        client.del(&refs).await.unwrap(),
        0,
        "nothing left to delete"
    );
}

// ---------------------------------------------------------------------
// Pipelines and transactions.
// ---------------------------------------------------------------------

#[test]
fn cluster_pipelines_and_transactions() {
    let cluster = RedisCluster::start();
    run(move || async move {
        let client = connect(&cluster).await;
        let owners = Owners::of(&cluster);
        let mut direct = Direct::new(&cluster);
        pipeline_of_a_thousand_random_keys_keeps_order(&client, &owners, &mut direct).await;
        pipeline_mixes_keyless_and_keyed_commands(&client, &owners).await;
        pipeline_returns_server_errors_inline(&client, &owners, &mut direct).await;
        pipeline_with_a_cross_slot_command_sends_nothing(&cluster, &client, &owners, &mut direct)
            .await;
        transaction_on_one_slot_runs_atomically(&client, &owners, &mut direct).await;
        transaction_across_slots_sends_nothing(&cluster, &client, &owners, &mut direct).await;
        keyless_transaction_runs(&client).await;
        a_read_lost_in_flight_is_sent_again_a_write_is_not(&cluster, &client).await;
    });
}

/// The id of the one client of `node` blocked in `command`, if any.
fn blocked_client(node: &RedisServer, command: &str) -> Option<String> {
    let Reply::Bulk(list) = node.call(&["CLIENT", "LIST"]) else {
        return None;
    };
    let list = String::from_utf8_lossy(&list).into_owned();
    let needle = format!(" cmd={command} ");
    list.lines()
        .find(|l| l.contains(&needle) && l.contains("flags=b"))
        .and_then(|l| l.strip_prefix("id="))
        .and_then(|l| l.split(' ').next())
        .map(str::to_owned)
}

/// Kills the connection of the client blocked in `command` on `node` once
/// it is blocked; returns its id.
async fn kill_blocked(node: &RedisServer, command: &str) -> String {
    let mut id = None;
    wait_until(
        &format!("a client blocked in {command}"),
        10 * SECOND,
        || {
            id = blocked_client(node, command);
            id.is_some()
        },
    )
    .await;
    let id = id.expect("an id");
    assert_eq!(
        node.call(&["CLIENT", "KILL", "ID", &id]),
        Reply::Integer(1),
        "CLIENT KILL ID {id}"
    );
    id
}

/// `XREAD BLOCK` only reads: when its connection dies with it in flight,
/// the client sends it again (on a new connection) and it answers once an
/// entry comes, alone or in a pipeline. `BLPOP` writes (it pops): the same
/// loss fails it with `ConnectionLost`.
async fn a_read_lost_in_flight_is_sent_again_a_write_is_not(
    cluster: &RedisCluster,
    client: &Cluster,
) {
    let client = client.with_timeout(20 * SECOND);
    let stream = "{lost}:stream";
    let node = cluster.node_for_key(stream);
    let xread = vec!["XREAD", "BLOCK", "15000", "STREAMS", stream, "$"];

    for in_pipeline in [false, true] {
        let reader = {
            let (client, xread) = (client.clone(), xread.clone());
            spawn_local(async move {
                if in_pipeline {
                    let get = vec!["GET", "{lost}:other"];
                    client.pipeline([xread, get]).await.map(|mut v| v.remove(0))
                } else {
                    client.command::<Value>(xread).await
                }
            })
        };
        let first = kill_blocked(node, "xread").await;
        // Blocked again, on a new connection.
        let mut again = None;
        wait_until("the XREAD sent again", 10 * SECOND, || {
            again = blocked_client(node, "xread");
            again.as_ref().is_some_and(|id| *id != first)
        })
        .await;
        let id = format!("{}-1", 1 + usize::from(in_pipeline));
        assert_eq!(
            node.call(&["XADD", stream, &id, "f", "v"]),
            Reply::Bulk(id.clone().into_bytes())
        );
        let answer = within("the XREAD", 10 * SECOND, reader)
            .await
            .unwrap_or_else(|e| panic!("XREAD (in a pipeline: {in_pipeline}) failed: {e}"));
        assert!(
            format!("{answer:?}").contains(&id),
            "XREAD answered {answer:?}"
        );
    }

    let list = "{lost}:list";
    let popper = {
        let client = client.clone();
        spawn_local(async move { client.command::<Value>(["BLPOP", list, "15"]).await })
    };
    kill_blocked(node, "blpop").await;
    match within("the BLPOP", 10 * SECOND, popper).await {
        Err(Error::ConnectionLost) => {}
        other => panic!("BLPOP lost in flight: expected ConnectionLost, got {other:?}"),
    }
}

async fn pipeline_of_a_thousand_random_keys_keeps_order(
    client: &Cluster,
    owners: &Owners,
    direct: &mut Direct,
) {
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let keys: Vec<String> = (0..1000)
        .map(|i| format!("pipe:{:016x}:{i}", rng.u64(..)))
        .collect();
    let values: Vec<String> = (0..1000).map(|i| format!("{i}-{}", rng.u32(..))).collect();
    let nodes: BTreeSet<usize> = keys.iter().map(|k| owners.of_key(k)).collect();
    assert_eq!(nodes.len(), 3);

    let sets: Vec<Cmd> = keys
        .iter()
        .zip(&values)
        .map(|(k, v)| cmd("SET").arg(k).arg(v))
        .collect();
    let replies = client.pipeline(sets).await.unwrap();
    assert_eq!(replies.len(), 1000);
    assert!(replies.iter().all(|r| *r == ok()), "{replies:?}");

    let gets: Vec<Cmd> = keys.iter().map(|k| cmd("GET").arg(k)).collect();
    let replies = client.pipeline(gets).await.unwrap();
    let want: Vec<Value> = values.iter().map(|v| bulk(v)).collect();
    assert_eq!(replies, want, "GETs answered in order");

    // Each key is on its owner.
    for (k, v) in keys.iter().zip(&values) {
        assert_eq!(
            direct.get(owners.of_key(k), k),
            Reply::Bulk(v.clone().into_bytes())
        );
    }

    // Two commands per key in one pipeline: each node keeps their order.
    let pairs: Vec<Cmd> = keys
        .iter()
        .flat_map(|k| [cmd("APPEND").arg(k).arg("!"), cmd("GET").arg(k)])
        .collect();
    let replies = client.pipeline(pairs).await.unwrap();
    assert_eq!(replies.len(), 2000);
    for (i, v) in values.iter().enumerate() {
        assert_eq!(
            replies[2 * i],
            Value::Integer(v.len() as i64 + 1),
            "APPEND {i}"
        );
        assert_eq!(replies[2 * i + 1], bulk(&format!("{v}!")), "GET {i}");
    }

    let none = client.pipeline(Vec::<Cmd>::new()).await.unwrap();
    assert!(none.is_empty());
}

async fn pipeline_mixes_keyless_and_keyed_commands(client: &Cluster, owners: &Owners) {
    let masters: Vec<usize> = owners.masters().into_iter().collect();
    let a = owners.key_on(masters[0], "mix:");
    let b = owners.key_on(masters[1], "mix:");
    let c = owners.key_on(masters[2], "mix:");
    let replies = client
        .pipeline([
            cmd("PING"),
            cmd("SET").arg(&a).arg("1"),
            cmd("ECHO").arg("hi"),
            cmd("GET").arg(&a),
            cmd("SET").arg(&b).arg("2"),
            cmd("PING"),
            cmd("GET").arg(&b),
            cmd("GET").arg(&c),
            cmd("ECHO").arg("bye"),
        ])
        .await
        .unwrap();
    assert_eq!(
        replies,
        [
            pong(),
            ok(),
            bulk("hi"),
            bulk("1"),
            ok(),
            pong(),
            bulk("2"),
            Value::Nil,
            bulk("bye"),
        ]
    );
    // Keyless only.
    let replies = client
        .pipeline([vec!["PING"], vec!["ECHO", "x"], vec!["PING"]])
        .await
        .unwrap();
    assert_eq!(replies, [pong(), bulk("x"), pong()]);
}

async fn pipeline_returns_server_errors_inline(
    client: &Cluster,
    owners: &Owners,
    direct: &mut Direct,
) {
    let masters: Vec<usize> = owners.masters().into_iter().collect();
    let text = owners.key_on(masters[0], "inline:text:");
    let num = owners.key_on(masters[1], "inline:num:");
    let after = owners.key_on(masters[0], "inline:after:");
    let replies = client
        .pipeline([
            cmd("SET").arg(&text).arg("not a number"),
            cmd("SET").arg(&num).arg("1"),
            cmd("INCR").arg(&text),
            cmd("INCR").arg(&num),
            cmd("SET").arg(&after).arg("done"),
            cmd("GET").arg(&text),
        ])
        .await
        .expect("a server error fails only its own command");
    assert_eq!(replies.len(), 6);
    assert_eq!(replies[0], ok());
    assert_eq!(replies[1], ok());
    match &replies[2] {
        Value::Error(e) => assert!(
            e.message_lossy().contains("not an integer"),
            "{}",
            e.message_lossy()
        ),
        other => panic!("INCR of a string: expected an inline error, got {other:?}"),
    }
    assert_eq!(replies[3], Value::Integer(2));
    assert_eq!(replies[4], ok());
    assert_eq!(replies[5], bulk("not a number"));
    assert_eq!(
        direct.get(owners.of_key(&after), &after),
        Reply::Bulk(b"done".to_vec()),
        "the command after the error ran"
    );
}

async fn pipeline_with_a_cross_slot_command_sends_nothing(
    cluster: &RedisCluster,
    client: &Cluster,
    owners: &Owners,
    direct: &mut Direct,
) {
    let before = server_calls(cluster, "SET") + server_calls(cluster, "MGET");
    let r = client
        .pipeline([
            cmd("SET").arg("xpipe:first").arg("1"),
            cmd("MGET").arg("a").arg("b"),
            cmd("SET").arg("xpipe:last").arg("1"),
        ])
        .await;
    assert_cross_slot(r, "a", "b");
    assert_eq!(
        server_calls(cluster, "SET") + server_calls(cluster, "MGET"),
        before,
        "a master received part of the refused pipeline"
    );
    for key in ["xpipe:first", "xpipe:last"] {
        assert_eq!(direct.get(owners.of_key(key), key), Reply::Nil, "{key}");
    }
}

async fn transaction_on_one_slot_runs_atomically(
    client: &Cluster,
    owners: &Owners,
    direct: &mut Direct,
) {
    let results = client
        .transaction([
            cmd("SET").arg("{user:1}.name").arg("Alice"),
            cmd("SET").arg("{user:1}.email").arg("alice@example.com"),
            cmd("GET").arg("{user:1}.name"),
            cmd("INCR").arg("{user:1}.visits"),
            cmd("PING"),
        ])
        .await
        .unwrap();
    assert_eq!(
        results,
        [ok(), ok(), bulk("Alice"), Value::Integer(1), pong()]
    );
    let owner = owners.of_key("{user:1}.name");
    assert_eq!(
        direct.get(owner, "{user:1}.email"),
        Reply::Bulk(b"alice@example.com".to_vec())
    );
    assert_eq!(
        direct.get(owner, "{user:1}.visits"),
        Reply::Bulk(b"1".to_vec())
    );

    // A command failing at EXEC fails alone, inline; Redis has no rollback.
    let results = client
        .transaction([
            cmd("SET").arg("{tx}.text").arg("abc"),
            cmd("INCR").arg("{tx}.text"),
            cmd("SET").arg("{tx}.after").arg("yes"),
        ])
        .await
        .unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(results[0], ok());
    assert!(
        matches!(&results[1], Value::Error(e) if e.message_lossy().contains("not an integer")),
        "{:?}",
        results[1]
    );
    assert_eq!(results[2], ok());
    assert_eq!(
        direct.get(owners.of_key("{tx}.after"), "{tx}.after"),
        Reply::Bulk(b"yes".to_vec())
    );
}

async fn transaction_across_slots_sends_nothing(
    cluster: &RedisCluster,
    client: &Cluster,
    owners: &Owners,
    direct: &mut Direct,
) {
    let before = server_calls(cluster, "MULTI") + server_calls(cluster, "SET");
    let r = client
        .transaction([
            cmd("SET").arg("{xa}.k").arg("1"),
            cmd("SET").arg("{xb}.k").arg("2"),
        ])
        .await;
    assert_cross_slot(r, "{xa}.k", "{xb}.k");
    assert_eq!(
        server_calls(cluster, "MULTI") + server_calls(cluster, "SET"),
        before,
        "a master received part of the refused transaction"
    );
    for key in ["{xa}.k", "{xb}.k"] {
        assert_eq!(direct.get(owners.of_key(key), key), Reply::Nil, "{key}");
    }
}

async fn keyless_transaction_runs(client: &Cluster) {
    let results = client
        .transaction([cmd("PING"), cmd("ECHO").arg("inside")])
        .await
        .unwrap();
    assert_eq!(results, [pong(), bulk("inside")]);
}

// ---------------------------------------------------------------------
// Watch transactions.
// ---------------------------------------------------------------------

/// Reads `key` as a number (0 when missing) through `c`.
async fn read_n(c: &Connection, key: &str) -> Result<i64, Error> {
    Ok(c.command::<Option<i64>>(["GET", key]).await?.unwrap_or(0))
}

#[test]
fn cluster_watch_transactions() {
    let cluster = RedisCluster::start();
    run(move || async move {
        let client = connect(&cluster).await;
        let owners = Owners::of(&cluster);
        let mut direct = Direct::new(&cluster);
        watch_transaction_on_one_slot_increments(&client, &owners, &mut direct).await;
        watch_conflict_is_retried(&cluster, &client).await;
        concurrent_watch_transactions_lose_no_update(&client, &owners, &mut direct).await;
        watched_keys_across_slots_are_refused(&client).await;
        commands_in_another_slot_are_refused(&client, &owners, &mut direct).await;
        abort_is_aborted(&client, &owners, &mut direct).await;
    });
}

async fn watch_transaction_on_one_slot_increments(
    client: &Cluster,
    owners: &Owners,
    direct: &mut Direct,
) {
    let (balance, log) = ("{acct:1}.balance", "{acct:1}.log");
    client.command::<()>(["SET", balance, "100"]).await.unwrap();
    let mut calls = 0;
    let results = client
        .watch_transaction(&[balance], async |c: &Connection| {
            calls += 1;
            let n = read_n(c, balance).await?;
            Ok(Watch::Exec(vec![
                cmd("SET").arg(balance).arg(n + 100),
                cmd("RPUSH").arg(log).arg("+100"),
                cmd("GET").arg(balance),
            ]))
        })
        .await
        .unwrap();
    assert_eq!(results, [ok(), Value::Integer(1), bulk("200")]);
    assert_eq!(calls, 1);
    let owner = owners.of_key(balance);
    assert_eq!(direct.get(owner, balance), Reply::Bulk(b"200".to_vec()));
    assert_eq!(direct.int(owner, &["LLEN", log]), 1);
}

async fn watch_conflict_is_retried(cluster: &RedisCluster, client: &Cluster) {
    let key = "{conflict}.n";
    client.command::<()>(["SET", key, "10"]).await.unwrap();
    let owner = cluster.node_for_key(key);
    let mut calls = 0;
    let results = client
        .watch_transaction(&[key], async |c: &Connection| {
            calls += 1;
            let n = read_n(c, key).await?;
            if calls == 1 {
                // Another client changes the watched key under us.
                assert_eq!(owner.cmd(&["INCRBY", key, "1000"]), "1010");
            }
            Ok(Watch::Exec(vec![cmd("SET").arg(key).arg(n + 1)]))
        })
        .await
        .unwrap();
    assert_eq!(results, [ok()]);
    assert_eq!(calls, 2, "the conflict was not retried");
    assert_eq!(
        owner.cmd(&["GET", key]),
        "1011",
        "the retry read a stale value"
    );
}

async fn concurrent_watch_transactions_lose_no_update(
    client: &Cluster,
    owners: &Owners,
    direct: &mut Direct,
) {
    const TASKS: i64 = 20;
    let key = "{counter}.n";
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let c = client.clone();
            spawn_local(async move {
                c.watch_transaction(&[key], async |conn: &Connection| {
                    let n = read_n(conn, key).await?;
                    Ok(Watch::Exec(vec![cmd("SET").arg(key).arg(n + 1)]))
                })
                .await
            })
        })
        .collect();
    for task in tasks {
        let r = within("a watch transaction", 10 * SECOND, task).await;
        assert_eq!(r.unwrap(), [ok()]);
    }
    let n: i64 = client.command(["GET", key]).await.unwrap();
    assert_eq!(n, TASKS, "an update was lost");
    assert_eq!(
        direct.get(owners.of_key(key), key),
        Reply::Bulk(TASKS.to_string().into_bytes())
    );
}

async fn watched_keys_across_slots_are_refused(client: &Cluster) {
    let mut calls = 0;
    let r = client
        .watch_transaction(&["{wa}.k", "{wb}.k"], async |_c: &Connection| {
            calls += 1;
            Ok(Watch::Exec(vec![cmd("SET").arg("{wa}.k").arg("1")]))
        })
        .await;
    assert_cross_slot(r, "{wa}.k", "{wb}.k");
    assert_eq!(calls, 0, "the function ran for cross-slot watched keys");
    let r = client
        .watch_transaction::<&str, _>(&[], async |_c: &Connection| Ok(Watch::Abort("x".into())))
        .await;
    assert!(
        matches!(r, Err(Error::MalformedCommand { .. })),
        "a watch transaction without keys: {r:?}"
    );
}

async fn commands_in_another_slot_are_refused(
    client: &Cluster,
    owners: &Owners,
    direct: &mut Direct,
) {
    let (watched, elsewhere) = ("{wslot}.k", "{wother}.k");
    client.command::<()>(["SET", watched, "7"]).await.unwrap();
    let mut calls = 0;
    let r = client
        .watch_transaction(&[watched], async |c: &Connection| {
            calls += 1;
            let n = read_n(c, watched).await?;
            Ok(Watch::Exec(vec![
                cmd("SET").arg(watched).arg(n + 1),
                cmd("SET").arg(elsewhere).arg("x"),
            ]))
        })
        .await;
    assert_cross_slot(r, watched, elsewhere);
    assert_eq!(calls, 1);
    assert_eq!(
        direct.get(owners.of_key(watched), watched),
        Reply::Bulk(b"7".to_vec()),
        "the watched key changed"
    );
    assert_eq!(direct.get(owners.of_key(elsewhere), elsewhere), Reply::Nil);
    // The node's connection is left clean: the next one on the slot runs.
    let r = client
        .watch_transaction(&[watched], async |c: &Connection| {
            let n = read_n(c, watched).await?;
            Ok(Watch::Exec(vec![cmd("SET").arg(watched).arg(n + 1)]))
        })
        .await
        .unwrap();
    assert_eq!(r, [ok()]);
    assert_eq!(
        direct.get(owners.of_key(watched), watched),
        Reply::Bulk(b"8".to_vec())
    );
}

async fn abort_is_aborted(client: &Cluster, owners: &Owners, direct: &mut Direct) {
    let key = "{abort}.k";
    client.command::<()>(["SET", key, "1"]).await.unwrap();
    let r = client
        .watch_transaction(&[key], async |c: &Connection| {
            let n = read_n(c, key).await?;
            assert_eq!(n, 1);
            Ok(Watch::Abort("not today".into()))
        })
        .await;
    match r {
        Err(Error::Aborted(reason)) => assert_eq!(reason, "not today"),
        other => panic!("expected Error::Aborted, got {other:?}"),
    }
    assert_eq!(
        direct.get(owners.of_key(key), key),
        Reply::Bulk(b"1".to_vec())
    );
    // A later plain transaction on the slot is not disturbed by a WATCH
    // left behind: another client's change must not abort it.
    let owner = owners.of_key(key);
    direct.call(owner, &["SET", key, "2"]);
    let r = client
        .transaction([cmd("SET").arg(key).arg("3")])
        .await
        .unwrap();
    assert_eq!(r, [ok()]);
    assert_eq!(direct.get(owner, key), Reply::Bulk(b"3".to_vec()));
}

/// A function that reads a key of another slot through the watched
/// node's connection gets a MOVED for that slot, which did not move:
/// the call fails at once with `CrossSlot` naming it, instead of running
/// the function again until `max_redirects`.
#[test]
fn cluster_watch_transaction_reading_another_slot_fails_at_once() {
    let cluster = RedisCluster::start();
    run(move || async move {
        let client = connect(&cluster).await;
        let owners = Owners::of(&cluster);
        let (watched, read) = ("{w1}.k", "{w2}.k");
        assert_ne!(
            owners.of_key(watched),
            owners.of_key(read),
            "the read must go to another master"
        );
        let mut calls = 0;
        let r = client
            .watch_transaction(&[watched], async |c: &Connection| {
                calls += 1;
                let v: Option<String> = c.command(["GET", read]).await?;
                Ok(Watch::Exec(vec![
                    cmd("SET").arg(watched).arg(v.unwrap_or_default()),
                ]))
            })
            .await;
        let redirects: u64 = client.info().nodes.iter().map(|n| n.redirects).sum();
        let read_slot = key_slot(read.as_bytes());
        let names_the_mistake = match &r {
            Err(Error::CrossSlot { other, .. }) => *other == read_slot,
            Err(e) => e.redirect().is_some_and(|m| m.slot == read_slot),
            Ok(_) => false,
        };
        assert!(
            names_the_mistake && calls == 1 && redirects == 0,
            "expected a cross-slot error (or the MOVED of {read}) after one call of \
             the function and no redirect followed; got {r:?} after {calls} calls \
             and {redirects} redirects"
        );
    });
}

// ---------------------------------------------------------------------
// info(), refresh(), connecting with an unreachable seed, close().
// ---------------------------------------------------------------------

/// Writes to every shard, then waits until every node reports every
/// replica online: a replica that has replicated nothing yet is `loading`
/// in `CLUSTER SHARDS`, and its turning `online` (on the first write, or
/// on the master's periodic replication ping) is a change of the slot
/// map's read replicas, which a refresh would pick up with a new epoch.
fn settle_replicas(cluster: &RedisCluster) {
    let owners = Owners::of(cluster);
    for m in owners.masters() {
        let key = owners.key_on(m, "warmup:");
        assert_eq!(cluster.node(m).cmd(&["SET", &key, "x"]), "OK");
    }
    redcore_test_support::wait_until(
        "every node to see every replica online",
        30 * SECOND,
        || {
            (0..cluster.len()).all(|i| {
                let shards = cluster.node(i).cmd(&["CLUSTER", "SHARDS"]);
                shards.matches("online").count() == cluster.len()
            })
        },
    );
}

#[test]
fn cluster_info_connect_and_close() {
    let cluster = RedisCluster::start();
    settle_replicas(&cluster);
    run(move || async move {
        info_describes_the_cluster(&cluster).await;
        refresh_keeps_coverage_and_epoch(&cluster).await;
        command_counters_grow_on_the_serving_node(&cluster).await;
        connects_past_an_unreachable_first_seed(&cluster).await;
        connects_through_a_replica_seed(&cluster).await;
        connects_with_a_uri(&cluster).await;
        close_fails_later_calls_and_drops_connections(&cluster).await;
        dropping_the_last_handle_closes(&cluster).await;
    });
}

async fn info_describes_the_cluster(cluster: &RedisCluster) {
    let client = connect(cluster).await;
    let info = client.info();
    assert_eq!(info.slots_covered, SLOTS);
    assert_eq!(info.topology_changes, 0, "the first discovery is no change");
    let masters: Vec<_> = info
        .nodes
        .iter()
        .filter(|n| n.role == Role::Master)
        .collect();
    let replicas: Vec<_> = info
        .nodes
        .iter()
        .filter(|n| n.role == Role::Replica)
        .collect();
    assert_eq!(masters.len(), 3, "{info:#?}");
    assert_eq!(replicas.len(), 3, "{info:#?}");
    let slot_count = |ranges: &[(u16, u16)]| -> usize {
        ranges
            .iter()
            .map(|&(a, b)| usize::from(b) - usize::from(a) + 1)
            .sum()
    };
    assert_eq!(
        masters.iter().map(|m| slot_count(&m.slots)).sum::<usize>(),
        SLOTS
    );
    assert!(replicas.iter().all(|r| r.slots.is_empty()), "{info:#?}");
    // The ids, addresses and slots are the cluster's own.
    let view = cluster.cluster_nodes(0);
    for node in &info.nodes {
        let id = node
            .id
            .as_deref()
            .unwrap_or_else(|| panic!("no id: {node:?}"));
        assert_eq!(id.len(), 40, "{node:?}");
        let line = view
            .iter()
            .find(|l| l.id == id)
            .unwrap_or_else(|| panic!("{id} is not in CLUSTER NODES"));
        assert_eq!(
            NodeAddr::from(line.addr.expect("an address")),
            node.addr,
            "{id}"
        );
        assert_eq!(line.is_master(), node.role == Role::Master, "{id}");
        assert_eq!(node.slots, line.slots, "the slots of {id}");
    }
    let listed: BTreeSet<NodeAddr> = info.nodes.iter().map(|n| n.addr.clone()).collect();
    let all: BTreeSet<NodeAddr> = cluster.nodes().into_iter().map(NodeAddr::from).collect();
    assert_eq!(listed, all);
    assert!(info.epoch > 0, "{info:#?}");
}

async fn refresh_keeps_coverage_and_epoch(cluster: &RedisCluster) {
    let client = connect(cluster).await;
    let before = client.info();
    for _ in 0..3 {
        client.refresh().await.expect("refresh");
    }
    let after = client.info();
    assert_eq!(after.slots_covered, SLOTS);
    assert_eq!(
        after.epoch, before.epoch,
        "the map changed with nothing moved"
    );
    assert_eq!(after.topology_changes, 0);
    assert_eq!(after.nodes.len(), 6);
    let v: Option<String> = client.command(["GET", "after-refresh"]).await.unwrap();
    assert_eq!(v, None);
}

async fn command_counters_grow_on_the_serving_node(cluster: &RedisCluster) {
    // No periodic refresh: nothing but our calls moves the counters.
    let config = ClusterConfig::builder()
        .seeds(cluster.seed_addrs())
        .refresh_interval(None)
        .build()
        .unwrap();
    let client = Cluster::connect(config).await.unwrap();
    let key = "counted";
    let owner = NodeAddr::from(cluster.slot_owner(key_slot(key.as_bytes())));
    let before = commands_by_node(&client.info());
    for _ in 0..5 {
        client
            .command::<Option<String>>(["GET", key])
            .await
            .unwrap();
    }
    let after = commands_by_node(&client.info());
    for (addr, n) in &after {
        let was = before.get(addr).copied().unwrap_or(0);
        if *addr == owner {
            assert_eq!(*n, was + 5, "the owner {addr} served 5 GETs");
        } else {
            assert_eq!(*n, was, "{addr} served none of the GETs");
        }
    }
    // A pipeline counts once on each node it reaches.
    let replies = client
        .pipeline((0..4).map(|i| cmd("GET").arg(format!("{{{key}}}{i}"))))
        .await
        .unwrap();
    assert_eq!(replies, vec![Value::Nil; 4]);
    let last = commands_by_node(&client.info());
    assert_eq!(
        last[&owner],
        after[&owner] + 1,
        "{{counted}} is on the owner"
    );
    let owner_info = client.info();
    let node = owner_info
        .nodes
        .iter()
        .find(|n| n.addr == owner)
        .expect("the owner is listed");
    assert!(node.connected, "{node:?}");
    assert_eq!(node.redirects, 0);
}

async fn connects_past_an_unreachable_first_seed(cluster: &RedisCluster) {
    let dead: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let seeds = vec![dead, cluster.seed_addrs()[0]];
    let client = within("connect", 10 * SECOND, Cluster::connect(seeds))
        .await
        .expect("one reachable seed is enough");
    assert_eq!(client.info().slots_covered, SLOTS);
    client
        .command::<()>(["SET", "via-second-seed", "1"])
        .await
        .unwrap();
    let v: String = client.command(["GET", "via-second-seed"]).await.unwrap();
    assert_eq!(v, "1");
}

async fn connects_through_a_replica_seed(cluster: &RedisCluster) {
    let replica = cluster.replicas()[0];
    let client = Cluster::connect([replica])
        .await
        .expect("a replica knows the topology too");
    let info = client.info();
    assert_eq!(info.slots_covered, SLOTS);
    let masters: BTreeSet<NodeAddr> = info
        .nodes
        .iter()
        .filter(|n| n.role == Role::Master)
        .map(|n| n.addr.clone())
        .collect();
    assert!(!masters.contains(&NodeAddr::from(replica)));
    // Writes go to the masters, not to the replica it was seeded with.
    client
        .command::<()>(["SET", "via-replica-seed", "1"])
        .await
        .unwrap();
    let owner = cluster.node_for_key("via-replica-seed");
    assert_eq!(owner.cmd(&["GET", "via-replica-seed"]), "1");
}

async fn connects_with_a_uri(cluster: &RedisCluster) {
    let uri = format!("redis://127.0.0.1:{}", cluster.node(1).port());
    let client = Cluster::connect(uri.as_str())
        .await
        .expect("connect by URI");
    assert_eq!(client.info().slots_covered, SLOTS);
    let v: Vec<Option<String>> = client.mget(&["via-second-seed", "nope"]).await.unwrap();
    assert_eq!(v, [Some("1".to_owned()), None]);
}

/// A client named `name`, used once on every master.
async fn named_client(cluster: &RedisCluster, name: &str) -> Cluster {
    let config = ClusterConfig::builder()
        .seeds(cluster.seed_addrs())
        .connection(|c| c.client_name(name))
        .build()
        .unwrap();
    let client = Cluster::connect(config).await.unwrap();
    let owners = Owners::of(cluster);
    for m in owners.masters() {
        let key = owners.key_on(m, "named:");
        client
            .command::<()>(["SET", key.as_str(), "1"])
            .await
            .unwrap();
    }
    client
}

fn named_clients_on_masters(cluster: &RedisCluster, name: &str) -> usize {
    cluster
        .master_indices()
        .into_iter()
        .map(|i| clients_named(cluster.node(i), name))
        .sum()
}

fn named_clients_anywhere(cluster: &RedisCluster, name: &str) -> usize {
    (0..cluster.len())
        .map(|i| clients_named(cluster.node(i), name))
        .sum()
}

async fn close_fails_later_calls_and_drops_connections(cluster: &RedisCluster) {
    let name = "cc-closing";
    let client = named_client(cluster, name).await;
    assert_eq!(named_clients_on_masters(cluster, name), 3);
    let other = client.clone();
    let conns = client.master_connections();
    client.close();

    assert_closed_for("command", client.command::<()>(["SET", "k", "v"]).await);
    assert_closed_for("PING", client.command::<String>(["PING"]).await);
    assert_closed_for("a clone's command", other.command::<()>(["GET", "k"]).await);
    assert_closed_for(
        "pipeline",
        client.pipeline([["GET", "k"], ["GET", "j"]]).await,
    );
    assert_closed_for("transaction", client.transaction([["SET", "k", "v"]]).await);
    assert_closed_for(
        "watch_transaction",
        client
            .watch_transaction(&["k"], async |_c: &Connection| Ok(Watch::Exec(vec![])))
            .await,
    );
    assert_closed_for(
        "mget",
        client.mget::<Vec<Option<String>>, _>(&["k", "j"]).await,
    );
    assert_closed_for("del", client.del(&["k"]).await);
    assert_closed_for("refresh", client.refresh().await);
    for (addr, conn) in &conns {
        assert_closed_for(
            &format!("a master connection ({addr})"),
            conn.command::<String>(["PING"]).await,
        );
    }
    wait_until("the closed client's connections to go", 5 * SECOND, || {
        named_clients_anywhere(cluster, name) == 0
    })
    .await;
    // Other clients are not affected.
    let fresh = connect(cluster).await;
    fresh
        .command::<()>(["SET", "after-close", "1"])
        .await
        .unwrap();
}

async fn dropping_the_last_handle_closes(cluster: &RedisCluster) {
    let name = "cc-dropped";
    let client = named_client(cluster, name).await;
    let clone = client.clone();
    drop(client);
    let pong: String = clone.command(["PING"]).await.unwrap();
    assert_eq!(pong, "PONG", "a clone keeps the client open");
    assert_eq!(named_clients_on_masters(cluster, name), 3);
    drop(clone);
    wait_until("the dropped client's connections to go", 5 * SECOND, || {
        named_clients_anywhere(cluster, name) == 0
    })
    .await;
}

// ---------------------------------------------------------------------
// A password-protected cluster.
// ---------------------------------------------------------------------

#[test]
fn cluster_with_a_password() {
    let cluster = RedisCluster::builder().password("pw").start();
    run(move || async move {
        let config = ClusterConfig::builder()
            .seeds(cluster.seed_addrs())
            .password("pw")
            .build()
            .unwrap();
        let client = Cluster::connect(config)
            .await
            .expect("connect with the password");
        client
            .mset(&[("pw:a", "1"), ("pw:b", "2"), ("pw:c", "3")])
            .await
            .unwrap();
        let v: Vec<String> = client.mget(&["pw:a", "pw:b", "pw:c"]).await.unwrap();
        assert_eq!(v, ["1", "2", "3"]);
        assert_eq!(client.info().slots_covered, SLOTS);
        assert_eq!(cluster.node_for_key("pw:b").cmd(&["GET", "pw:b"]), "2");

        let uri = format!("redis://:pw@127.0.0.1:{}", cluster.node(0).port());
        let by_uri = Cluster::connect(uri.as_str())
            .await
            .expect("connect by URI");
        let v: String = by_uri.command(["GET", "pw:a"]).await.unwrap();
        assert_eq!(v, "1");

        // Without the password, and with a wrong one: every seed refuses
        // the handshake, and the error says so for each (at once, not at
        // the end of the timeout).
        let started = Instant::now();
        let err = Cluster::connect(cluster.seed_addrs())
            .await
            .expect_err("connected without the password");
        assert_auth_failure(&cluster, &err, "requires a password", "NOAUTH");
        assert!(
            started.elapsed() < 4 * SECOND,
            "took {:?}",
            started.elapsed()
        );

        let wrong = ClusterConfig::builder()
            .seeds(cluster.seed_addrs())
            .password("wrong")
            .build()
            .unwrap();
        let err = Cluster::connect(wrong)
            .await
            .expect_err("connected with a wrong password");
        assert_auth_failure(&cluster, &err, "authentication failed", "WRONGPASS");
    });
}

/// `err` is a `NoTopology` giving, for every node, the handshake error
/// (`problem`, with the server's `code`).
#[track_caller]
fn assert_auth_failure(cluster: &RedisCluster, err: &Error, problem: &str, code: &str) {
    let Error::NoTopology { tried } = err else {
        panic!("expected NoTopology naming the handshake errors, got {err:?}");
    };
    for addr in cluster.seed_addrs() {
        let part = tried
            .split("; ")
            .find(|p| p.starts_with(&format!("{addr}:")))
            .unwrap_or_else(|| panic!("{addr} is not named in: {tried}"));
        assert!(
            part.contains(problem) && part.contains(code),
            "the error for {addr} does not name the problem ({problem}, {code}): {part}"
        );
    }
}

// ---------------------------------------------------------------------
// Connecting without a cluster.
// ---------------------------------------------------------------------

#[test]
fn cluster_connect_with_no_reachable_seed_names_every_seed() {
    let ports = [free_port(), free_port()];
    run(move || async move {
        let seeds: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let r = within("connect", 10 * SECOND, Cluster::connect(seeds.clone())).await;
        match r {
            Err(Error::NoTopology { tried }) => {
                for seed in &seeds {
                    assert!(tried.contains(seed.as_str()), "{seed} missing in: {tried}");
                }
            }
            other => panic!("expected NoTopology, got {other:?}"),
        }
    });
}

#[test]
fn cluster_connect_to_a_standalone_server_is_refused_clearly() {
    let server = RedisServer::start();
    run(move || async move {
        let r = Cluster::connect([server.addr()]).await;
        match r {
            Err(Error::NoTopology { tried }) => {
                assert!(
                    tried.contains("cluster support disabled"),
                    "the reason is not given: {tried}"
                );
                assert!(tried.contains(&server.port().to_string()), "{tried}");
            }
            other => panic!("expected NoTopology, got {other:?}"),
        }
    });
}

#[test]
fn cluster_connect_with_bad_options_is_invalid_config() {
    run(|| async {
        let cases: Vec<(&str, Result<Cluster, Error>)> = vec![
            ("no seeds", Cluster::connect(Vec::<String>::new()).await),
            (
                "a port that is not a number",
                Cluster::connect("127.0.0.1:port").await,
            ),
            (
                "a port out of range",
                Cluster::connect("127.0.0.1:99999").await,
            ),
            (
                "a database other than 0",
                Cluster::connect("redis://127.0.0.1:7000/3").await,
            ),
            (
                "a builder without seeds",
                match ClusterConfig::builder().build() {
                    Ok(config) => Cluster::connect(config).await,
                    Err(e) => Err(e),
                },
            ),
        ];
        for (what, r) in cases {
            assert!(
                matches!(r, Err(Error::InvalidConfig { .. })),
                "{what}: expected InvalidConfig, got {r:?}"
            );
        }
    });
}
