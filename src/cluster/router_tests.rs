//! The router's redirect, retry and refresh decisions, driven through the
//! [`Peers`] interface: a scripted peer owns every node, answers each call
//! from a script and records what the router asked of it. No sockets, no
//! servers; the commands go through [`Cluster::command`] as a user's would.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::peers::{LeaderRefresh, NodeOp, NodeReply, Peers, Ticket};
use super::router::Router;
use super::{Cluster, NodeAddr, Topology};
use crate::cmd::Args;
use crate::config::IntoClusterConfig;
use crate::error::ServerError;
use crate::slot::key_slot;
use crate::{Commands, Error, Value};

/// One command the router handed to the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sent {
    node: NodeAddr,
    command: String,
    asking: bool,
}

/// A peer that owns every node and does not lead refreshes (a core other
/// than the leader, on the per-core runtime).
#[derive(Default)]
struct ScriptedPeer {
    /// The answers, in order, each with the node expected to give it.
    script: RefCell<VecDeque<(NodeAddr, Result<Value, Error>)>>,
    sent: RefCell<Vec<Sent>>,
    replies: RefCell<HashMap<u32, Result<NodeReply, Error>>>,
    tickets: Cell<u32>,
    moved: RefCell<Vec<(u16, NodeAddr)>>,
    refresh_asks: Cell<u32>,
    leader_refreshes: Cell<u32>,
}

impl ScriptedPeer {
    fn answer(&self, node: &NodeAddr, answer: Result<Value, Error>) {
        self.script.borrow_mut().push_back((node.clone(), answer));
    }

    fn sent(&self) -> Vec<Sent> {
        self.sent.borrow().clone()
    }
}

impl Peers for ScriptedPeer {
    fn owner(&self, _: &NodeAddr, _: &[NodeAddr]) -> Option<usize> {
        Some(1)
    }

    fn send(&self, peer: usize, addr: NodeAddr, _: Instant, op: NodeOp) -> Result<Ticket, Error> {
        assert_eq!(peer, 1, "work goes to the peer that owns the node");
        let NodeOp::Command { cmd, asking } = op else {
            panic!("only commands are scripted");
        };
        let command = cmd
            .with_arg(0, |a| String::from_utf8_lossy(a).into_owned())
            .expect("a command name");
        self.sent.borrow_mut().push(Sent {
            node: addr.clone(),
            command,
            asking,
        });
        let (expected, answer) = self
            .script
            .borrow_mut()
            .pop_front()
            .unwrap_or_else(|| panic!("no answer scripted for a call to {addr}"));
        assert_eq!(addr, expected, "the call went to the scripted node");
        let index = self.tickets.get();
        self.tickets.set(index + 1);
        self.replies
            .borrow_mut()
            .insert(index, answer.map(NodeReply::Value));
        Ok(Ticket { index, seq: 0 })
    }

    fn poll_reply(&self, ticket: Ticket, _: &mut Context<'_>) -> Poll<Result<NodeReply, Error>> {
        Poll::Ready(
            self.replies
                .borrow_mut()
                .remove(&ticket.index)
                .expect("one reply per ticket"),
        )
    }

    fn forget(&self, ticket: Ticket) {
        self.replies.borrow_mut().remove(&ticket.index);
    }

    fn leads_refreshes(&self) -> bool {
        false
    }

    fn ask_leader_to_refresh(&self) -> bool {
        self.refresh_asks.set(self.refresh_asks.get() + 1);
        true
    }

    fn leader_refresh(&self, _: Instant) -> Option<LeaderRefresh<'_>> {
        self.leader_refreshes.set(self.leader_refreshes.get() + 1);
        Some(Box::pin(std::future::ready(Ok(()))))
    }

    fn spread_moved(&self, slot: u16, addr: &NodeAddr) {
        self.moved.borrow_mut().push((slot, addr.clone()));
    }

    fn publish(&self, _: &Topology, _: u64) {
        panic!("a router that does not lead refreshes never publishes");
    }
}

fn server(text: String) -> Error {
    Error::Server(ServerError::new(Bytes::from(text)))
}

fn bulk(s: &str) -> Value {
    Value::BulkString(Bytes::copy_from_slice(s.as_bytes()))
}

const KEY: &str = "user:1";

/// Runs `test` on a glommio executor with a cluster client over a scripted
/// peer that has installed the three-shard topology (masters at
/// 10.0.0.1:7000..7002), given the master of [`KEY`]'s slot and another.
fn with_cluster<F>(test: F)
where
    F: AsyncFnOnce(Cluster, Rc<ScriptedPeer>, NodeAddr, NodeAddr) + Send + 'static,
{
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(64 << 10)
        .spawn(move || async move {
            let peer = Rc::new(ScriptedPeer::default());
            let config = "10.0.0.1:7000".into_cluster_config().unwrap();
            let router = Rc::new(Router::new(config, peer.clone()).unwrap());
            let source: NodeAddr = "10.0.0.1:7000".parse().unwrap();
            let topology =
                Topology::from_cluster_shards(super::tests::three_shards(), &source).unwrap();
            router.accept_published(topology, 1);
            let master = router
                .routes()
                .map
                .master_for_slot(key_slot(KEY.as_bytes()))
                .cloned()
                .unwrap();
            let other = router
                .routes()
                .map
                .masters()
                .iter()
                .find(|m| **m != master)
                .cloned()
                .unwrap();
            test(Cluster::started(router), peer, master, other).await;
        })
        .unwrap()
        .join()
        .unwrap();
}

fn sent(node: &NodeAddr, command: &str, asking: bool) -> Sent {
    Sent {
        node: node.clone(),
        command: command.into(),
        asking,
    }
}

#[test]
fn moved_corrects_the_slot_tells_the_peers_and_asks_the_leader_for_a_refresh() {
    with_cluster(async |cluster, peer, master, other| {
        let slot = key_slot(KEY.as_bytes());
        peer.answer(&master, Err(server(format!("MOVED {slot} {other}"))));
        peer.answer(&other, Ok(bulk("v")));
        let v: String = cluster.command(["GET", KEY]).await.unwrap();
        assert_eq!(v, "v");
        assert_eq!(
            peer.sent(),
            [sent(&master, "GET", false), sent(&other, "GET", false)]
        );
        assert_eq!(*peer.moved.borrow(), [(slot, other.clone())]);
        assert_eq!(peer.refresh_asks.get(), 1);
        assert_eq!(peer.leader_refreshes.get(), 0);
        // The next command goes straight to the new master.
        peer.answer(&other, Ok(bulk("w")));
        let w: String = cluster.command(["GET", KEY]).await.unwrap();
        assert_eq!(w, "w");
        assert_eq!(peer.sent().last(), Some(&sent(&other, "GET", false)));
    });
}

#[test]
fn ask_sends_asking_to_the_target_once_and_keeps_the_map() {
    with_cluster(async |cluster, peer, master, other| {
        let slot = key_slot(KEY.as_bytes());
        peer.answer(&master, Err(server(format!("ASK {slot} {other}"))));
        peer.answer(&other, Ok(bulk("v")));
        peer.answer(&master, Ok(bulk("w")));
        let v: String = cluster.command(["GET", KEY]).await.unwrap();
        let w: String = cluster.command(["GET", KEY]).await.unwrap();
        assert_eq!((v.as_str(), w.as_str()), ("v", "w"));
        assert_eq!(
            peer.sent(),
            [
                sent(&master, "GET", false),
                sent(&other, "GET", true),
                sent(&master, "GET", false)
            ]
        );
        assert!(peer.moved.borrow().is_empty());
        assert_eq!(peer.refresh_asks.get(), 0);
    });
}

#[test]
fn a_cluster_refusal_waits_for_the_leaders_refresh_then_retries() {
    with_cluster(async |cluster, peer, master, _| {
        peer.answer(
            &master,
            Err(server("CLUSTERDOWN The cluster is down".into())),
        );
        peer.answer(&master, Ok(bulk("v")));
        let v: String = cluster.command(["GET", KEY]).await.unwrap();
        assert_eq!(v, "v");
        assert_eq!(peer.leader_refreshes.get(), 1);
        assert_eq!(
            peer.sent(),
            [sent(&master, "GET", false), sent(&master, "GET", false)]
        );
    });
}

#[test]
fn tryagain_backs_off_then_retries_the_same_node_without_a_refresh() {
    with_cluster(async |cluster, peer, master, _| {
        let backoff = cluster.config().retry_backoff_initial;
        peer.answer(&master, Err(server("TRYAGAIN rehashing".into())));
        peer.answer(&master, Ok(bulk("v")));
        let started = Instant::now();
        let v: String = cluster.command(["GET", KEY]).await.unwrap();
        assert_eq!(v, "v");
        assert!(started.elapsed() >= backoff, "the retry waited the backoff");
        assert_eq!(peer.sent().len(), 2);
        assert_eq!(peer.refresh_asks.get(), 0);
        assert_eq!(peer.leader_refreshes.get(), 0);
    });
}

#[test]
fn a_write_lost_in_flight_is_not_sent_again_but_a_read_is() {
    with_cluster(async |cluster, peer, master, _| {
        peer.answer(&master, Err(Error::ConnectionLost));
        let e = cluster.command::<()>(["SET", KEY, "x"]).await.unwrap_err();
        assert!(matches!(e, Error::ConnectionLost), "{e:?}");
        assert_eq!(peer.sent(), [sent(&master, "SET", false)]);
        assert_eq!(peer.leader_refreshes.get(), 0);

        peer.answer(&master, Err(Error::ConnectionLost));
        peer.answer(&master, Ok(bulk("v")));
        let v: String = cluster.command(["GET", KEY]).await.unwrap();
        assert_eq!(v, "v");
        assert_eq!(peer.sent().len(), 3);
        assert_eq!(peer.leader_refreshes.get(), 1);
    });
}

#[test]
fn redirects_stop_at_max_redirects() {
    with_cluster(async |cluster, peer, master, other| {
        let slot = key_slot(KEY.as_bytes());
        let max = cluster.config().max_redirects;
        let cluster = cluster.with_timeout(Duration::from_secs(5));
        for i in 0..=max {
            let (from, to) = if i % 2 == 0 {
                (&master, &other)
            } else {
                (&other, &master)
            };
            peer.answer(from, Err(server(format!("MOVED {slot} {to}"))));
        }
        let e = cluster.command::<()>(["GET", KEY]).await.unwrap_err();
        assert!(
            matches!(e, Error::TooManyRedirects { redirects, .. } if redirects == max),
            "{e:?}"
        );
        assert_eq!(peer.sent().len() as u32, max + 1);
        assert!(peer.script.borrow().is_empty());
    });
}

/// The replica of `master` in the three-shard topology.
fn replica_of(cluster: &Cluster, master: &NodeAddr) -> NodeAddr {
    let routes = cluster.router.routes();
    let i = routes
        .map
        .masters()
        .iter()
        .position(|m| m == master)
        .unwrap();
    routes.map.replicas_of(i)[0].clone()
}

#[test]
fn a_loading_replica_falls_back_to_the_master_and_is_skipped() {
    with_cluster(async |cluster, peer, master, _| {
        let replica = replica_of(&cluster, &master);
        let reads = cluster.with_read_from(crate::config::ReadFrom::PreferReplica);
        peer.answer(&replica, Err(server("LOADING loading".into())));
        peer.answer(&master, Ok(bulk("v")));
        let v: String = reads.command(["GET", KEY]).await.unwrap();
        assert_eq!(v, "v");
        assert_eq!(
            peer.sent(),
            [sent(&replica, "GET", false), sent(&master, "GET", false)]
        );
        // Skipped for a while: the next read goes to the master at once.
        peer.answer(&master, Ok(bulk("w")));
        let w: String = reads.command(["GET", KEY]).await.unwrap();
        assert_eq!(w, "w");
        assert_eq!(peer.sent().last(), Some(&sent(&master, "GET", false)));
        // A write never goes to a replica.
        peer.answer(&master, Ok(Value::SimpleString("OK".into())));
        let () = reads.command(["SET", KEY, "x"]).await.unwrap();
        assert_eq!(peer.sent().last(), Some(&sent(&master, "SET", false)));
    });
}

#[test]
fn a_replicas_moved_is_not_applied_to_the_slot_map() {
    with_cluster(async |cluster, peer, master, other| {
        let replica = replica_of(&cluster, &master);
        let slot = key_slot(KEY.as_bytes());
        let epoch = cluster.router.routes().map.epoch();
        let reads = cluster.with_read_from(crate::config::ReadFrom::PreferReplica);
        peer.answer(&replica, Err(server(format!("MOVED {slot} {other}"))));
        peer.answer(&master, Ok(bulk("v")));
        let v: String = reads.command(["GET", KEY]).await.unwrap();
        assert_eq!(v, "v");
        let routes = cluster.router.routes();
        assert_eq!(routes.map.master_for_slot(slot), Some(&master));
        assert_eq!(routes.map.epoch(), epoch, "the map was not replaced");
        assert!(peer.moved.borrow().is_empty(), "nothing spread to peers");
        assert_eq!(peer.refresh_asks.get(), 1, "a refresh was asked for");
    });
}

#[test]
fn lowest_latency_picks_the_fastest_of_master_and_replica() {
    use crate::config::ReadFrom;
    with_cluster(async |cluster, _, master, _| {
        let replica = replica_of(&cluster, &master);
        let router = cluster.router.clone();
        router.want_replicas();
        let routes = router.routes();
        let slot = key_slot(KEY.as_bytes());
        let i = routes.map.master_index(slot).unwrap();
        let (m, r) = (&routes.masters[i], &routes.replicas[i][0]);
        assert_eq!(r.addr, replica);
        // Nothing measured yet: a replica.
        let pick = routes.read_node(slot, ReadFrom::LowestLatency, &router);
        assert_eq!(pick.map(|n| n.addr.clone()), Some(replica.clone()));
        m.latency.set(Some(Duration::from_micros(200)));
        r.latency.set(Some(Duration::from_millis(20)));
        for _ in 0..20 {
            // The master is fastest: no replica to try.
            assert!(
                routes
                    .read_node(slot, ReadFrom::LowestLatency, &router)
                    .is_none()
            );
        }
        r.latency.set(Some(Duration::from_micros(100)));
        m.latency.set(Some(Duration::from_millis(5)));
        for _ in 0..20 {
            let pick = routes.read_node(slot, ReadFrom::LowestLatency, &router);
            assert_eq!(pick.map(|n| n.addr.clone()), Some(replica.clone()));
        }
        // A skipped replica is no candidate.
        r.skip_until
            .set(Some(Instant::now() + Duration::from_secs(60)));
        assert!(
            routes
                .read_node(slot, ReadFrom::LowestLatency, &router)
                .is_none()
        );
        assert!(
            routes
                .read_node(slot, ReadFrom::PreferReplica, &router)
                .is_none()
        );
    });
}
