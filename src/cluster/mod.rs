//! The cluster client of one core, [`Cluster`], and its sans-io core:
//! what the cluster looks like ([`Topology`]) and where each slot goes
//! ([`SlotMap`]).
//!
//! # The client
//!
//! [`Cluster::connect`] asks the seeds for the topology and returns; each
//! node's [`Connection`](crate::Connection) opens on first use and is
//! shared, auto-pipelined, by every task on the core. A command goes to the
//! master of its slot; `MOVED` corrects that slot at once and asks for a
//! refresh, `ASK` sends `ASKING` and the command to the target, and
//! `TRYAGAIN`, `LOADING`, `BUSY` (backoff), `CLUSTERDOWN`, `READONLY`,
//! `MASTERDOWN` and an unreachable node (refresh first) are retried — all
//! within one deadline per call and `max_redirects`. Only replies that
//! prove the command was not applied, or a node that could not be reached
//! before the command was written, lead to a retry: a command whose
//! connection died after writing it fails with
//! [`Error::ConnectionLost`](crate::Error::ConnectionLost).
//!
//! Pipelines are split by node and sent side by side, and only the
//! commands that were redirected are sent again; transactions and watch
//! transactions need one slot. [`mget`](crate::Commands::mget),
//! [`mset`](crate::Commands::mset), [`del`](crate::Commands::del),
//! [`exists`](crate::Commands::exists),
//! [`unlink`](crate::Commands::unlink) and
//! [`touch`](crate::Commands::touch) split across slots. [`Cluster::info`] reports the
//! nodes, slot coverage, the map's epoch and per-node counters.
//!
//! # Nodes and peers
//!
//! The routing state of a client (its router) decides slot → node,
//! follows redirects and asks for refreshes; how a node is reached is the
//! business of the node itself: through the router's own connection, or
//! through a *peer* (another router sharing the cluster) that owns the
//! node. The router knows its peers only through a narrow interface this
//! layer defines (`peers::Peers`: who owns a node, hand work to the owner
//! and wait for its reply, who leads refreshes, spread a `MOVED` and a new
//! topology). The single-core [`Cluster`] has no peers: it connects to
//! every node and refreshes for itself. The per-core runtime
//! ([`ClusterExecutor`](crate::ClusterExecutor)) gives each core a router
//! whose peers are the other cores, reached over its channel mesh; the choice between a connection
//! and a peer is made once per node, so a command for a node the router
//! connects to goes straight to its connection.
//!
//! # Topology
//!
//! [`Topology::from_cluster_shards`] parses `CLUSTER SHARDS` (Redis 7+),
//! [`Topology::from_cluster_slots`] the older `CLUSTER SLOTS`, each in its
//! RESP2 and RESP3 shapes. Both keep every node, masters and replicas with
//! their ids, not only the nodes the client was seeded with. Both take the
//! address the reply came from: a node listed with an empty host (a server
//! set to `cluster-preferred-endpoint-type unknown-endpoint`) is reached at
//! that host. During a failover two nodes of a shard may call themselves
//! master; the online one with the highest replication offset is the
//! shard's master. A reply that does not hold together (a slot outside
//! 0..16384, a slot in two shards, a wrong type anywhere) is an
//! [`Error`](crate::Error), never a panic.
//!
//! # Slot map
//!
//! A [`SlotMap`] is an immutable snapshot of the 16384 slots, each pointing
//! into a table of masters with their replicas, stamped with an epoch.
//!
//! # How the client uses them
//!
//! - Discovery asks known nodes for `CLUSTER SHARDS` (and for
//!   `CLUSTER SLOTS` when the server does not know that command), parses the
//!   reply into a [`Topology`] and builds a [`SlotMap`] from it with the
//!   next epoch. The topology's whole node list becomes the list of nodes
//!   to ask next time, so the client heals when its seeds are gone.
//! - The current snapshot sits behind an `Rc` (per core) or `Arc` and is
//!   replaced whole: a lookup sees the old map or the new one, never a mix.
//!   The epoch tells a caller whether the map it routed by is still the
//!   current one.
//! - A `MOVED` reply makes a corrected copy with [`SlotMap::with_moved`]
//!   (the address read with [`NodeAddr::from_redirect`]): one slot
//!   changes, a new epoch, no round trip. It also asks for a
//!   refresh, since a moved slot often means more moved.
//! - Refreshes are merged: one in flight, rate-limited, under a deadline.
//!   A refresh that finds the same routes ([`SlotMap::same_routes`]) keeps
//!   the current snapshot.
//!
//! # Example
//!
//! ```
//! use bytes::BytesMut;
//! use redcore::cluster::{NodeAddr, SlotMap, Topology};
//! use redcore::resp::Decoder;
//! use redcore::slot::key_slot;
//!
//! // CLUSTER SLOTS from 10.0.0.1:7000: two ranges; the replica of the
//! // first is listed with an empty host, which means 10.0.0.1.
//! let mut wire = BytesMut::from(
//!     &b"*2\r\n\
//!        *4\r\n:0\r\n:8191\r\n\
//!          *3\r\n$8\r\n10.0.0.1\r\n:7000\r\n$2\r\nm1\r\n\
//!          *3\r\n$0\r\n\r\n:7003\r\n$2\r\nr1\r\n\
//!        *3\r\n:8192\r\n:16383\r\n\
//!          *3\r\n$8\r\n10.0.0.2\r\n:7001\r\n$2\r\nm2\r\n"[..],
//! );
//! let reply = Decoder::new().decode(&mut wire)?.expect("a whole reply");
//! let source: NodeAddr = "10.0.0.1:7000".parse()?;
//! let topology = Topology::from_cluster_slots(reply, &source)?;
//! assert_eq!(topology.nodes().count(), 3);
//! assert!(topology.is_complete());
//!
//! let map = SlotMap::from_topology(&topology, 1);
//! let slot = key_slot(b"foo"); // 12182
//! assert_eq!(map.master_for_slot(slot), Some(&NodeAddr::new("10.0.0.2", 7001)));
//! assert_eq!(map.replicas_for_slot(0), &[NodeAddr::new("10.0.0.1", 7003)]);
//!
//! // MOVED 12182 10.0.0.1:7000: a corrected snapshot, one epoch later.
//! let moved = map.with_moved(slot, source.clone(), 2);
//! assert_eq!(moved.master_for_slot(slot), Some(&source));
//! assert_eq!((moved.epoch(), map.epoch()), (2, 1));
//! # Ok::<(), redcore::Error>(())
//! ```

pub(crate) mod caching;
pub(crate) mod client;
mod code_refusal;
mod fanout;
mod health;
pub(crate) mod node;
pub(crate) mod peers;
pub(crate) mod pubsub;
mod refresh;
mod replicas;
pub(crate) mod router;
#[cfg(test)]
mod router_tests;
pub(crate) mod scan;
mod slot_map;
mod topology;

pub use client::{Cluster, ClusterInfo, ClusterNodeInfo};
pub use fanout::{ClusterCommands, FanoutError, NodeReplies, Target};
pub use scan::{ClusterScan, ScanCommands, ScanOptions, ScanState};
pub use slot_map::SlotMap;
pub use topology::{Health, NodeAddr, NodeInfo, Role, Shard, Topology};

#[cfg(test)]
mod tests {
    //! A compact notation for replies, shared by the parser tests; hostile
    //! and random replies: an error or a consistent topology, never a panic.

    use bytes::Bytes;
    use proptest::prelude::*;

    use super::*;
    use crate::resp::Value;

    fn bulk(s: &str) -> Value {
        Value::BulkString(Bytes::copy_from_slice(s.as_bytes()))
    }

    /// A reply written compactly: `[..]` an array, `{..}` a map (keys and
    /// values alternate), `:7` an integer, `_` nil, `''` an empty string,
    /// any other word a bulk string.
    pub(super) fn v(notation: &str) -> Value {
        let spaced: String = notation
            .chars()
            .flat_map(|c| match c {
                '[' | ']' | '{' | '}' => vec![' ', c, ' '],
                c => vec![c],
            })
            .collect();
        let mut words = spaced.split_whitespace();
        let value = one(words.next().expect("a value"), &mut words);
        assert_eq!(words.next(), None, "one value in {notation:?}");
        value
    }

    fn one<'a>(word: &str, words: &mut impl Iterator<Item = &'a str>) -> Value {
        let mut until = |close: &str| -> Vec<Value> {
            let mut items = Vec::new();
            loop {
                match words.next().expect("a closing bracket") {
                    w if w == close => return items,
                    w => items.push(one(w, words)),
                }
            }
        };
        match word {
            "[" => Value::Array(until("]")),
            "{" => {
                let mut flat = until("}").into_iter();
                Value::Map(std::iter::from_fn(|| Some((flat.next()?, flat.next()?))).collect())
            }
            "_" => Value::Nil,
            "''" => bulk(""),
            w if w.starts_with(':') => Value::Integer(w[1..].parse().expect("an integer")),
            w => bulk(w),
        }
    }

    /// The RESP2 shape of a reply: maps become flat arrays.
    pub(super) fn resp2(value: Value) -> Value {
        match value {
            Value::Map(pairs) => Value::Array(
                pairs
                    .into_iter()
                    .flat_map(|(k, v)| [resp2(k), resp2(v)])
                    .collect(),
            ),
            Value::Array(items) => Value::Array(items.into_iter().map(resp2).collect()),
            other => other,
        }
    }

    /// `CLUSTER SHARDS` of three shards, RESP3 shape.
    pub(super) fn three_shards() -> Value {
        let node = |id: &str, port: u16, role: &str| {
            format!(
                "{{id {id} port :{port} ip 10.0.0.1 endpoint 10.0.0.1 role {role} \
                 replication-offset :9 health online}}"
            )
        };
        let shard = |i: u16, slots: &str| {
            let (m, r) = (
                node(&format!("m{i}"), 7000 + i, "master"),
                node(&format!("r{i}"), 7003 + i, "replica"),
            );
            format!("{{slots [{slots}] nodes [{m} {r}]}}")
        };
        v(&format!(
            "[{} {} {}]",
            shard(0, ":0 :5460"),
            shard(1, ":5461 :10922"),
            shard(2, ":10923 :16000 :16001 :16383")
        ))
    }

    fn slots_reply() -> Value {
        v(
            "[[:0 :5460 [127.0.0.1 :7000 n0 []] [127.0.0.1 :7003 n3 []]] \
            [:5461 :10922 [127.0.0.1 :7001 n1 []] [127.0.0.1 :7004 n4 []]] \
            [:10923 :16383 [127.0.0.1 :7002 n2 []] [127.0.0.1 :7005 n5 []]]]",
        )
    }

    /// Parses with both parsers; whatever parses must hold together.
    /// Returns how many of the two parsed.
    fn check(reply: Value) -> usize {
        let mut parsed_ok = 0;
        let source = NodeAddr::new("10.0.0.9", 7000);
        for parsed in [
            Topology::from_cluster_shards(reply.clone(), &source),
            Topology::from_cluster_slots(reply, &source),
        ] {
            let Ok(topology) = parsed else { continue };
            parsed_ok += 1;
            let mut seen = vec![false; 16384];
            for shard in &topology.shards {
                for &(start, end) in &shard.slots {
                    assert!(start <= end && end < 16384, "{topology:?}");
                    for slot in start..=end {
                        assert!(!seen[usize::from(slot)], "slot {slot} twice");
                        seen[usize::from(slot)] = true;
                    }
                }
            }
            let map = SlotMap::from_topology(&topology, 1);
            assert!(map.coverage() <= topology.coverage());
            let moved = map.with_moved(0, NodeAddr::new("h", 1), 2);
            assert_eq!(moved.master_for_slot(0), Some(&NodeAddr::new("h", 1)));
        }
        parsed_ok
    }

    fn garbage() -> impl Strategy<Value = Value> {
        let words = "slots nodes id port tls-port ip endpoint hostname role master replica \
                     health online fail loading replication-offset ? 127.0.0.1 7000 -1";
        let word = prop::sample::select(words.split_whitespace().chain([""]).collect::<Vec<_>>());
        let int = prop::sample::select(vec![-1i64, 0, 1, 2, 7000, 16383, 16384, 65535, 65536]);
        let leaf = prop_oneof![
            word.prop_map(bulk),
            int.prop_map(Value::Integer),
            any::<i64>().prop_map(Value::Integer),
            Just(Value::Nil),
            any::<f64>().prop_map(Value::Double),
            any::<bool>().prop_map(Value::Boolean),
            Just(Value::Error(crate::ServerError::new(Bytes::from_static(
                b"ERR x"
            )))),
        ];
        leaf.prop_recursive(5, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Set),
                prop::collection::vec((inner.clone(), inner), 0..5).prop_map(Value::Map),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn random_trees_never_panic(reply in garbage()) {
            let _ = check(reply);
        }
    }

    /// Calls `f` on the `n`th value of the tree in preorder.
    fn with_nth(value: &mut Value, n: &mut usize, f: &mut dyn FnMut(&mut Value)) -> bool {
        if *n == 0 {
            f(value);
            return true;
        }
        *n -= 1;
        match value {
            Value::Array(items) | Value::Set(items) => {
                items.iter_mut().any(|child| with_nth(child, n, f))
            }
            Value::Map(pairs) => pairs
                .iter_mut()
                .any(|(k, v)| with_nth(k, n, f) || with_nth(v, n, f)),
            _ => false,
        }
    }

    fn size(value: &Value) -> usize {
        1 + match value {
            Value::Array(items) | Value::Set(items) => items.iter().map(size).sum(),
            Value::Map(pairs) => pairs.iter().map(|(k, v)| size(k) + size(v)).sum(),
            _ => 0,
        }
    }

    /// Valid replies with a few values replaced, arrays truncated or
    /// elements swapped: deep paths the random trees rarely reach.
    #[test]
    fn mutated_replies_never_panic() {
        let mut rng = fastrand::Rng::with_seed(7);
        let originals = [resp2(three_shards()), three_shards(), slots_reply()];
        let mut replacements = ["_", ":-1", ":16384", ":0", "''", "?", "x", "[]", "{}"]
            .map(v)
            .to_vec();
        replacements.push(Value::Double(1.5));
        const ROUNDS: usize = 6000;
        let mut parsed = 0;
        for round in 0..ROUNDS {
            let mut reply = originals[round % originals.len()].clone();
            for _ in 0..rng.usize(1..4) {
                let mut n = rng.usize(0..size(&reply));
                let (op, pick) = (rng.u8(0..3), rng.usize(..));
                with_nth(&mut reply, &mut n, &mut |target| match (op, &mut *target) {
                    (0, Value::Array(items)) if !items.is_empty() => {
                        items.truncate(pick % items.len());
                    }
                    (1, Value::Array(items)) if items.len() > 1 => {
                        let len = items.len();
                        items.swap(pick % len, (pick / len) % len);
                    }
                    _ => *target = replacements[pick % replacements.len()].clone(),
                });
            }
            parsed += check(reply);
        }
        // Both outcomes are exercised: some mutants still parse.
        assert!(
            parsed > ROUNDS / 20 && parsed < ROUNDS,
            "{parsed} of {ROUNDS}"
        );
        for reply in originals {
            assert_eq!(check(reply), 1);
        }
    }
}

#[cfg(test)]
mod topology_tests {
    //! Both replies, both protocols, every kind of host, failovers,
    //! validation.

    use std::net::SocketAddr;
    use std::str::FromStr;

    use bytes::{Bytes, BytesMut};

    use super::tests::{resp2, three_shards, v};
    use crate::cluster::{Health, NodeAddr, Role, Shard, Topology};
    use crate::resp::{Decoder, Value};
    use crate::{ConversionError, Error};

    fn source() -> NodeAddr {
        NodeAddr::new("seed.example", 7000)
    }

    fn shards(reply: Value) -> Result<Topology, Error> {
        Topology::from_cluster_shards(reply, &source())
    }

    fn slots(reply: Value) -> Result<Topology, Error> {
        Topology::from_cluster_slots(reply, &source())
    }

    /// A `CLUSTER SHARDS` node in the notation of [`v`].
    fn node(id: &str, ip: &str, endpoint: &str, role: &str, offset: i64, health: &str) -> String {
        format!(
            "{{id {id} port :7000 ip {ip} endpoint {endpoint} role {role} \
             replication-offset :{offset} health {health}}}"
        )
    }

    /// One shard over every slot with these nodes.
    fn one_shard(nodes: &[String]) -> Topology {
        let reply = v(&format!(
            "[{{slots [:0 :16383] nodes [{}]}}]",
            nodes.join(" ")
        ));
        let resp3 = shards(reply.clone()).unwrap();
        assert_eq!(shards(resp2(reply)).unwrap(), resp3);
        resp3
    }

    fn detail(err: Error) -> &'static str {
        match err {
            Error::Conversion(ConversionError {
                detail: Some(d), ..
            }) => d,
            other => panic!("not a conversion error: {other:?}"),
        }
    }

    #[test]
    fn cluster_shards_resp2_and_resp3_parse_alike() {
        let t3 = shards(three_shards()).unwrap();
        assert_eq!(shards(resp2(three_shards())).unwrap(), t3);
        assert_eq!(t3.shards.len(), 3);
        assert_eq!((t3.masters().count(), t3.replicas().count()), (3, 3));
        assert_eq!(t3.nodes().count(), 6);
        assert!(t3.is_complete());
        assert_eq!(
            t3.shards[2].slots,
            [(10923, 16383)],
            "adjacent ranges merge"
        );
        let m1 = t3.node("m1").unwrap();
        assert_eq!(m1.addr, NodeAddr::new("10.0.0.1", 7001));
        assert_eq!((m1.role, m1.health), (Role::Master, Health::Online));
        assert_eq!((m1.replication_offset, m1.tls_port), (Some(9), None));
        assert_eq!(t3.node("r2").unwrap().role, Role::Replica);
        assert!(t3.shards.iter().all(Shard::has_healthy_master));
    }

    #[test]
    fn cluster_shards_from_resp3_bytes() {
        let mut wire = BytesMut::from(
            &b"*1\r\n%2\r\n$5\r\nslots\r\n*2\r\n:0\r\n:16383\r\n$5\r\nnodes\r\n*1\r\n\
               %8\r\n$2\r\nid\r\n$2\r\nm0\r\n$4\r\nport\r\n:7000\r\n$8\r\ntls-port\r\n:8000\r\n\
               $2\r\nip\r\n$3\r\n::1\r\n$8\r\nendpoint\r\n$3\r\n::1\r\n$4\r\nrole\r\n$6\r\nmaster\r\n\
               $18\r\nreplication-offset\r\n:77\r\n$6\r\nhealth\r\n$6\r\nonline\r\n"[..],
        );
        let reply = Decoder::new().decode(&mut wire).unwrap().unwrap();
        assert!(wire.is_empty());
        let t = shards(reply).unwrap();
        let m = t.node("m0").unwrap();
        assert_eq!(m.addr.to_string(), "[::1]:7000");
        assert_eq!(m.tls_addr(), Some(NodeAddr::new("::1", 8000)));
        assert_eq!(m.replication_offset, Some(77));
    }

    #[test]
    fn endpoints_empty_unknown_or_hostname() {
        let t = one_shard(&[
            node("a", "10.0.0.1", "''", "master", 1, "online"),
            node("b", "10.0.0.2", "?", "replica", 1, "online"),
            node("c", "''", "?", "replica", 1, "online"),
            node("d", "10.0.0.4", "db-4.example", "replica", 1, "online"),
            node("e", "''", "''", "replica", 1, "online"),
            node("f", "10.0.0.6", "_", "replica", 1, "online"),
        ]);
        let host = |id| t.node(id).unwrap().addr.host.clone();
        assert_eq!(host("a"), "seed.example", "empty endpoint: the source");
        assert_eq!(host("b"), "10.0.0.2", "`?`: the ip");
        assert_eq!(host("c"), "seed.example", "`?` and no ip: the source");
        assert_eq!(host("d"), "db-4.example");
        assert_eq!(host("e"), "seed.example");
        assert_eq!(host("f"), "seed.example", "nil endpoint: the source");
    }

    #[test]
    fn failover_prefers_the_online_master_with_the_highest_offset() {
        let m = |id, offset, health| node(id, "h", "h", "master", offset, health);
        let r = node("r", "h", "h", "replica", 0, "loading");
        let first = |t: Topology| t.shards.into_iter().next().unwrap();
        let s = first(one_shard(&[
            m("old", 100, "fail"),
            m("new", 50, "online"),
            r.clone(),
        ]));
        assert_eq!(s.master.as_ref().unwrap().id, "new");
        assert_eq!(s.other_masters[0].id, "old");
        assert_eq!(s.replicas[0].health, Health::Loading);
        assert_eq!(s.nodes().count(), 3);
        assert!(s.has_healthy_master());
        let s = first(one_shard(&[m("low", 5, "online"), m("high", 6, "online")]));
        assert_eq!(s.master.unwrap().id, "high");
        // No online master: the best candidate stays, flagged by its health.
        let s = first(one_shard(&[m("dead", 9, "failed"), m("odd", 1, "zombie")]));
        assert_eq!(s.master.as_ref().unwrap().id, "odd");
        assert_eq!(s.master.as_ref().unwrap().health, Health::Unknown);
        let s = first(one_shard(&[m("dead", 9, "fail"), r]));
        assert!(!s.has_healthy_master());
        assert_eq!(s.master.as_ref().unwrap().health, Health::Failed);
        // Only replicas: no master.
        let s = first(one_shard(&[node("x", "h", "h", "replica", 1, "online")]));
        assert!(s.master.is_none() && !s.has_healthy_master());
    }

    #[test]
    fn tls_only_node_unknown_fields_and_slotless_shard() {
        let reply =
            v("[{slots [] shard-id x nodes [{id t tls-port :8000 ip h endpoint h role master}]}]");
        let t = shards(reply).unwrap();
        let n = t.node("t").unwrap();
        assert_eq!((n.addr.port, n.tls_port), (8000, Some(8000)));
        assert_eq!((n.health, n.replication_offset), (Health::Unknown, None));
        assert_eq!(t.coverage(), 0);
    }

    #[test]
    fn cluster_slots_hosts_ids_and_grouping() {
        let reply = v("[[:0 :99 [10.0.0.1 :7000 m1 []] ['' :7003]] \
                        [:200 :16383 [_ :7001 m2]] \
                        [:100 :199 [10.0.0.1 :7000 m1 {}] ['' :7003]]]");
        let t = slots(reply).unwrap();
        assert_eq!(t.shards.len(), 2);
        assert_eq!(t.shards[0].slots, [(0, 199)], "one master, one shard");
        assert_eq!(t.shards[0].replicas.len(), 1);
        let r = &t.shards[0].replicas[0];
        assert_eq!(r.id, "seed.example:7003", "no id: host:port");
        assert_eq!(r.addr, NodeAddr::new("seed.example", 7003));
        assert_eq!((r.role, r.health), (Role::Replica, Health::Unknown));
        assert_eq!(t.node("m2").unwrap().addr.host, "seed.example", "nil host");
        assert!(t.is_complete());
        // `?`: the ip of the metadata (RESP2 array or RESP3 map), else the source.
        let q = |meta: &str| {
            let t = slots(v(&format!("[[:0 :1 [? :7000 q {meta}]]]"))).unwrap();
            t.node("q").unwrap().addr.host.clone()
        };
        assert_eq!(q("[ip 10.1.1.1]"), "10.1.1.1");
        assert_eq!(q("{hostname x ip 10.2.2.2}"), "10.2.2.2");
        assert_eq!(q("{hostname x}"), "seed.example");
    }

    #[test]
    fn overlapping_and_out_of_range_slots_are_errors() {
        let two = |a: &str, b: &str| {
            let m = |id| node(id, "h", "h", "master", 0, "online");
            v(&format!(
                "[{{slots [{a}] nodes [{}]}} {{slots [{b}] nodes [{}]}}]",
                m("a"),
                m("b")
            ))
        };
        let overlap = "a slot is claimed by two ranges";
        assert_eq!(
            detail(shards(two(":0 :100", ":100 :200")).unwrap_err()),
            overlap
        );
        assert_eq!(
            detail(shards(two(":0 :100 :50 :60", "")).unwrap_err()),
            overlap
        );
        assert!(shards(two(":0 :100", ":101 :16383")).unwrap().is_complete());
        for bad in [
            ":0 :16384",
            ":-1 :5",
            ":5 :4",
            ":0 :1 :2",
            ":70000 :70001",
            "0-5",
        ] {
            assert!(shards(two(bad, "")).is_err(), "{bad}");
        }
        for bad in [
            "[[:0 :10 [h :1 a]] [:10 :20 [h :1 b]]]",
            "[[:0 :10 [h :1 a]] [:5 :6 [h :1 a]]]",
            "[[:0 :16384 [h :1 a]]]",
            "[[:9 :8 [h :1 a]]]",
        ] {
            assert!(slots(v(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn wrong_shapes_are_errors() {
        let err = Value::Error(crate::ServerError::new(Bytes::from_static(b"ERR unknown")));
        assert!(matches!(shards(err.clone()), Err(Error::Server(_))));
        assert!(matches!(slots(err), Err(Error::Server(_))));
        let good = node("a", "h", "h", "master", 0, "online");
        let bad_shards = [
            "nope".to_owned(),
            "[:1]".to_owned(),
            "[[slots]]".to_owned(),
            "[{slots []}]".to_owned(),
            "[{slots [:0 :1] nodes [:3]}]".to_owned(),
            "[{slots [:0 :1] nodes [{id a}]}]".to_owned(),
            "[{slots [:0 :1] nodes [{id :1 role master port :1}]}]".to_owned(),
            "[{slots [:0 :1] nodes [{id a role boss port :1}]}]".to_owned(),
            "[{slots [:0 :1] nodes [{id a role master port :70000}]}]".to_owned(),
            "[{slots [:0 :1] nodes [{id a role master port :1 health :1}]}]".to_owned(),
            "[{:1 :2}]".to_owned(),
            format!("[{{slots 0-5 nodes [{good}]}}]"),
            format!("[{{slots [:0 :1] nodes {good}}}]"),
        ];
        for reply in bad_shards {
            assert!(shards(v(&reply)).is_err(), "{reply}");
            assert!(shards(resp2(v(&reply))).is_err(), "{reply}");
        }
        let bad_slots = [
            "_",
            "[[:0 :1]]",
            "[[:0 :1 h]]",
            "[[:0 :1 [h]]]",
            "[[:0 :1 [:5 :1]]]",
            "[[:0 :1 [h :0]]]",
            "[[:0 :1 [h :1 []]]]",
            "[[:0 :1 [h :1 id meta]]]",
            "[[:0 :1 [h :1 id [ip]]]]",
            "[[a :1 [h :1]]]",
        ];
        for reply in bad_slots {
            assert!(slots(v(reply)).is_err(), "{reply}");
        }
        assert_eq!(slots(v("[]")).unwrap().coverage(), 0);
    }

    #[test]
    fn node_addr_parse_and_display() {
        let ok = |s: &str| s.parse::<NodeAddr>().unwrap();
        assert_eq!(ok("127.0.0.1:7000"), NodeAddr::new("127.0.0.1", 7000));
        assert_eq!(ok("redis"), NodeAddr::new("redis", 6379));
        assert_eq!(ok("[::1]:7000"), NodeAddr::new("::1", 7000));
        assert_eq!(ok("[::1]"), NodeAddr::new("::1", 6379));
        assert_eq!(ok("fe80::1"), NodeAddr::new("fe80::1", 6379));
        for s in ["127.0.0.1:7000", "[::1]:7000", "redis:6379"] {
            assert_eq!(ok(s).to_string(), s);
        }
        for bad in [
            "", ":7000", "h:", "h:0", "h:65536", "h:x", "[::1", "[::1]x", "[]:1", "a b:1",
        ] {
            let err = bad.parse::<NodeAddr>().unwrap_err();
            assert!(matches!(err, Error::InvalidConfig { .. }), "{bad}: {err:?}");
        }
        let source = NodeAddr::new("10.0.0.1", 7000);
        for (text, want) in [
            ("MOVED 5 :7002", "10.0.0.1:7002"),
            ("ASK 5 h:7003", "h:7003"),
        ] {
            let err = crate::ServerError::new(Bytes::from_static(text.as_bytes()));
            let addr = NodeAddr::from_redirect(&err.redirect().unwrap(), &source);
            assert_eq!(addr.to_string(), want);
        }
        let v6: SocketAddr = "[::1]:7000".parse().unwrap();
        assert_eq!(
            NodeAddr::from(v6),
            NodeAddr::from_str("[::1]:7000").unwrap()
        );
    }
}
