//! `redcore::cluster` against a real cluster of 3 masters and 3 replicas:
//! `CLUSTER SHARDS` and `CLUSTER SLOTS` from every node, in RESP2 and RESP3,
//! read with the library's codec over a blocking socket, parsed into a
//! `Topology` and a `SlotMap`, and checked against `CLUSTER NODES` and the
//! harness's own view of slot ownership. Then the endpoint settings a server
//! can have (`unknown-endpoint`, `hostname` with and without a hostname),
//! really set on a node; last, a real failover (the master of slot 0 is
//! killed) followed through `CLUSTER SHARDS` until the replica takes over.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use redcore::cluster::{Health, NodeAddr, Role, SlotMap, Topology};
use redcore::slot::key_slot;
use redcore_test_support::{ClusterNodeInfo, CodecConn, RedisCluster, wait_until};

/// A connection reading in 4 KiB chunks, in RESP3 when asked.
fn connect(addr: SocketAddr, resp3: bool) -> CodecConn {
    let mut conn = CodecConn::connect(addr, 4096);
    if resp3 {
        conn.hello3();
    }
    conn
}

fn read_shards(conn: &mut CodecConn, source: &NodeAddr) -> Topology {
    let reply = conn.call(&["CLUSTER", "SHARDS"]);
    Topology::from_cluster_shards(reply.clone(), source)
        .unwrap_or_else(|e| panic!("CLUSTER SHARDS: {e}\n{reply:?}"))
}

fn read_slots(conn: &mut CodecConn, source: &NodeAddr) -> Topology {
    let reply = conn.call(&["CLUSTER", "SLOTS"]);
    Topology::from_cluster_slots(reply.clone(), source)
        .unwrap_or_else(|e| panic!("CLUSTER SLOTS: {e}\n{reply:?}"))
}

/// (id, address, role) of every node, as `CLUSTER NODES` lists them.
fn nodes_of_view(view: &[ClusterNodeInfo]) -> BTreeSet<(String, String, bool)> {
    view.iter()
        .map(|n| {
            let addr = NodeAddr::from(n.addr.expect("every node has an address"));
            (n.id.clone(), addr.to_string(), n.is_master())
        })
        .collect()
}

fn nodes_of_topology(topology: &Topology) -> BTreeSet<(String, String, bool)> {
    topology
        .nodes()
        .map(|n| (n.id.clone(), n.addr.to_string(), n.role == Role::Master))
        .collect()
}

/// The topology says what `CLUSTER NODES` says: 3 shards of one master and
/// one replica, the same ids, addresses, roles, masters and slots.
fn check_topology(topology: &Topology, view: &[ClusterNodeInfo], what: &str) {
    assert_eq!(topology.shards.len(), 3, "{what}: {topology:#?}");
    assert_eq!(topology.masters().count(), 3, "{what}");
    assert_eq!(topology.replicas().count(), 3, "{what}");
    assert_eq!(nodes_of_topology(topology), nodes_of_view(view), "{what}");
    assert!(topology.is_complete(), "{what}");
    let from_shards = what.contains("SHARDS");
    for shard in &topology.shards {
        let master = shard.master.as_ref().expect("a master");
        assert!(shard.other_masters.is_empty(), "{what}: {shard:?}");
        assert!(shard.has_healthy_master(), "{what}: {shard:?}");
        let line = view.iter().find(|n| n.id == master.id).expect("listed");
        assert_eq!(shard.slots, line.slots, "{what}: slots of {}", master.id);
        assert_eq!(shard.replicas.len(), 1, "{what}: {shard:?}");
        let replica = &shard.replicas[0];
        let replica_line = view.iter().find(|n| n.id == replica.id).expect("listed");
        assert_eq!(replica_line.master_id.as_deref(), Some(master.id.as_str()));
        for node in shard.nodes() {
            assert_eq!(node.id.len(), 40, "{what}: {node:?}");
            assert_eq!(node.tls_port, None, "{what}: {node:?}");
            if from_shards {
                assert_eq!(node.health, Health::Online, "{what}: {node:?}");
                assert!(node.replication_offset.unwrap() > 0, "{what}: {node:?}");
            } else {
                assert_eq!(node.health, Health::Unknown, "{what}: {node:?}");
            }
        }
    }
}

/// Every node's topology replies, both commands, both protocols, give one
/// and the same slot map, and it routes as the cluster does.
fn check_replies_from_every_node(cluster: &RedisCluster) -> SlotMap {
    let view = cluster.cluster_nodes(0);
    assert_eq!(view.len(), 6);
    let mut reference: Option<SlotMap> = None;
    for i in 0..cluster.len() {
        let addr = cluster.node(i).addr();
        let source = NodeAddr::from(addr);
        for resp3 in [false, true] {
            let mut client = connect(addr, resp3);
            let proto = if resp3 { "RESP3" } else { "RESP2" };
            let shards = read_shards(&mut client, &source);
            let slots = read_slots(&mut client, &source);
            check_topology(&shards, &view, &format!("node {i} CLUSTER SHARDS {proto}"));
            check_topology(&slots, &view, &format!("node {i} CLUSTER SLOTS {proto}"));
            let map = SlotMap::from_topology(&shards, 1);
            assert_eq!(map, SlotMap::from_topology(&slots, 1), "node {i} {proto}");
            match &reference {
                Some(first) => assert_eq!(&map, first, "node {i} {proto}"),
                None => reference = Some(map),
            }
        }
    }
    let map = reference.expect("six nodes");
    assert!(map.is_complete());
    assert_eq!(map.masters().len(), 3);
    assert_eq!(map.nodes().count(), 6);
    // Every slot, against CLUSTER NODES.
    for slot in 0..16384 {
        let owner = view
            .iter()
            .find(|n| n.is_master() && n.serves(slot))
            .expect("an owner");
        let owner_addr = NodeAddr::from(owner.addr.unwrap());
        assert_eq!(map.master_for_slot(slot), Some(&owner_addr), "slot {slot}");
        let replicas: Vec<NodeAddr> = view
            .iter()
            .filter(|n| n.master_id.as_deref() == Some(owner.id.as_str()))
            .map(|n| NodeAddr::from(n.addr.unwrap()))
            .collect();
        assert_eq!(map.replicas_for_slot(slot), replicas, "slot {slot}");
    }
    // Random keys, against the harness's slot owner.
    let mut rng = fastrand::Rng::with_seed(0x5107);
    for _ in 0..200 {
        let len = rng.usize(1..24);
        let key: String = (0..len).map(|_| rng.alphanumeric()).collect();
        let slot = key_slot(key.as_bytes());
        let owner = NodeAddr::from(cluster.slot_owner(slot));
        assert_eq!(
            map.master_for_slot(slot),
            Some(&owner),
            "{key} (slot {slot})"
        );
    }
    map
}

/// The three `cluster-preferred-endpoint-type` settings, set on node 0.
fn check_endpoint_settings(cluster: &RedisCluster, reference: &SlotMap) {
    let addr = cluster.node(0).addr();
    let mut admin = connect(addr, false);
    // Only the port of the node asked comes from the socket; the host is
    // whatever the client used to reach it.
    let alias = NodeAddr::new("localhost", addr.port());
    let as_alias = |a: &NodeAddr| NodeAddr::new("localhost", a.port);

    // unknown-endpoint: SHARDS sends "" endpoints, SLOTS nil hosts. Every
    // node is reached at the host the reply came from.
    admin.ok(&[
        "CONFIG",
        "SET",
        "cluster-preferred-endpoint-type",
        "unknown-endpoint",
    ]);
    for resp3 in [false, true] {
        let mut client = connect(addr, resp3);
        for topology in [
            read_shards(&mut client, &alias),
            read_slots(&mut client, &alias),
        ] {
            assert!(
                topology.nodes().all(|n| n.addr.host == "localhost"),
                "{topology:#?}"
            );
            let map = SlotMap::from_topology(&topology, 1);
            for slot in (0..16384).step_by(97) {
                let want = reference.master_for_slot(slot).map(as_alias);
                assert_eq!(map.master_for_slot(slot), want.as_ref(), "slot {slot}");
            }
        }
    }

    // hostname, with no hostname announced: "?" endpoints, and the ip is
    // used (SHARDS: the node's ip field; SLOTS: the ip of the metadata).
    admin.ok(&[
        "CONFIG",
        "SET",
        "cluster-preferred-endpoint-type",
        "hostname",
    ]);
    for resp3 in [false, true] {
        let mut client = connect(addr, resp3);
        let raw = client.call(&["CLUSTER", "SLOTS"]);
        assert!(format!("{raw:?}").contains("\"?\""), "{raw:?}");
        for topology in [
            read_shards(&mut client, &alias),
            read_slots(&mut client, &alias),
        ] {
            assert_eq!(&SlotMap::from_topology(&topology, 1), reference);
        }
    }

    // hostname, announced by node 0: node 0's own entry carries it.
    admin.ok(&[
        "CONFIG",
        "SET",
        "cluster-announce-hostname",
        "node0.invalid",
    ]);
    let my_id = cluster.node_id(0);
    for resp3 in [false, true] {
        let mut client = connect(addr, resp3);
        for topology in [
            read_shards(&mut client, &alias),
            read_slots(&mut client, &alias),
        ] {
            let me = topology.node(&my_id).expect("node 0 listed");
            assert_eq!(me.addr, NodeAddr::new("node0.invalid", addr.port()));
            assert_eq!(
                topology
                    .nodes()
                    .filter(|n| n.addr.host == "127.0.0.1")
                    .count(),
                5
            );
        }
    }

    admin.ok(&["CONFIG", "SET", "cluster-announce-hostname", ""]);
    admin.ok(&["CONFIG", "SET", "cluster-preferred-endpoint-type", "ip"]);
    let mut client = connect(addr, true);
    assert_eq!(
        &SlotMap::from_topology(&read_shards(&mut client, &NodeAddr::from(addr)), 1),
        reference
    );
}

/// Kills the master of slot 0 and follows the failover: the replica takes
/// the slots, the dead master stays in the node list, flagged failed.
fn check_failover(cluster: &mut RedisCluster, before: &SlotMap) {
    let old = cluster.slot_owner_index(0);
    let old_addr = NodeAddr::from(cluster.node(old).addr());
    let old_id = cluster.node_id(old);
    let heir_addr = before.replicas_for_slot(0)[0].clone();
    let witness = (0..cluster.len())
        .find(|&i| i != old && NodeAddr::from(cluster.node(i).addr()) != heir_addr)
        .expect("a third node");
    let addr = cluster.node(witness).addr();
    let source = NodeAddr::from(addr);
    cluster.kill_node(old);
    let mut client = connect(addr, true);
    let mut last = None;
    wait_until(
        "the replica to take over slot 0",
        Duration::from_secs(30),
        || {
            let topology = read_shards(&mut client, &source);
            let done = topology
                .node(&old_id)
                .is_some_and(|n| n.health == Health::Failed)
                && SlotMap::from_topology(&topology, 2).master_for_slot(0) == Some(&heir_addr);
            last = Some(topology);
            done
        },
    );
    let topology = last.expect("polled");
    assert_eq!(
        topology.nodes().count(),
        6,
        "the dead master is kept: {topology:#?}"
    );
    let dead = topology.node(&old_id).expect("listed");
    assert_eq!(
        (dead.addr.clone(), dead.role),
        (old_addr.clone(), Role::Master)
    );
    assert!(topology.is_complete());
    let heir_shard = topology
        .shards
        .iter()
        .find(|s| s.slots.contains(&(0, 5460)))
        .expect("slot 0");
    assert!(heir_shard.has_healthy_master(), "{heir_shard:?}");
    let map = SlotMap::from_topology(&topology, 2);
    assert!(map.is_complete());
    assert!(!map.masters().contains(&old_addr));
    assert!(map.replicas_for_slot(0).is_empty());
    for slot in 0..16384 {
        if before.master_for_slot(slot) != Some(&old_addr) {
            assert_eq!(map.master_for_slot(slot), before.master_for_slot(slot));
        }
    }
    // CLUSTER SLOTS leaves the dead node out but routes the same.
    assert_eq!(
        SlotMap::from_topology(&read_slots(&mut client, &source), 2),
        map
    );
}

#[test]
fn topology_and_slot_map_match_a_real_cluster() {
    let mut cluster = RedisCluster::start();
    cluster.warm_up();
    let map = check_replies_from_every_node(&cluster);
    check_endpoint_settings(&cluster, &map);
    check_failover(&mut cluster, &map);
}
