//! How a cluster client reaches the nodes it does not connect to itself:
//! the [`Peers`] interface, and the work it carries ([`NodeOp`],
//! [`NodeReply`]).
//!
//! A client's router may share the cluster with *peers*: other routers,
//! each connected to some of the nodes, that run work on those nodes for
//! the others. Each node is then reached either through this router's own
//! connection or through the peer that owns it. [`Peers`] is all the
//! router knows of them: who owns a node, how to hand work to that owner
//! and wait for its reply, who leads topology refreshes, and how news
//! every router must hear (a `MOVED`, a new topology) spreads.
//!
//! Two implementations exist. [`NoPeers`] is the single-core
//! [`Cluster`](super::Cluster)'s: it connects to every node itself and
//! leads its own refreshes. The per-core runtime implements [`Peers`]
//! with its channel mesh between cores (`runtime::mesh`), a router per
//! core. Nothing here knows about cores or channels.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use super::{NodeAddr, Topology};
use crate::cmd::Cmd;
use crate::{Connection, Error, Value};

/// Work for a node's connection that is neither a command nor a batch (a
/// watch transaction): a function of the connection, run on the peer that
/// owns the node, whose output travels back.
pub(crate) type NodeJob =
    Box<dyn FnOnce(Connection) -> Pin<Box<dyn Future<Output = Box<dyn Any + Send>>>> + Send>;

/// Work to run on one node's connection.
pub(crate) enum NodeOp {
    /// One command, after `ASKING` when `asking`.
    Command { cmd: Cmd, asking: bool },
    /// A pipeline.
    Pipeline(Vec<Cmd>),
    /// A cached read's miss (`CLIENT CACHING YES`, the read, `PTTL`), as a
    /// pipeline: the owner forwards the node's invalidations to the
    /// sender from then on.
    Tracked(Vec<Cmd>),
    /// `MULTI`/`EXEC`, after `ASKING` when `asking`.
    Transaction { cmds: Vec<Cmd>, asking: bool },
    /// Anything else on the connection.
    Job(NodeJob),
}

/// The answer to a [`NodeOp`] (a server error reply to a command is an
/// `Err`).
pub(crate) enum NodeReply {
    /// To [`NodeOp::Command`].
    Value(Value),
    /// To [`NodeOp::Pipeline`], [`NodeOp::Tracked`] and
    /// [`NodeOp::Transaction`].
    Values(Vec<Value>),
    /// To [`NodeOp::Tracked`] when the owner's connection to the node
    /// does not track (a replica's, while maps disagree): the replies,
    /// not to be cached.
    Untracked(Vec<Value>),
    /// To [`NodeOp::Job`]: its output.
    Output(Box<dyn Any + Send>),
}

impl NodeReply {
    /// The reply to a command.
    pub fn into_value(self) -> Value {
        match self {
            NodeReply::Value(v) => v,
            _ => unreachable!("a command is answered with a value"),
        }
    }

    /// The replies to a pipeline or a transaction.
    pub fn into_values(self) -> Vec<Value> {
        match self {
            NodeReply::Values(v) => v,
            _ => unreachable!("a batch is answered with values"),
        }
    }

    /// The output of a job.
    pub fn into_output(self) -> Box<dyn Any + Send> {
        match self {
            NodeReply::Output(v) => v,
            _ => unreachable!("a job is answered with its output"),
        }
    }
}

/// A refresh by the leader, awaited by a router that does not lead.
pub(crate) type LeaderRefresh<'a> = Pin<Box<dyn Future<Output = Result<(), Error>> + 'a>>;

/// Which call to a peer a reply belongs to. Its meaning is the
/// implementation's (the runtime's: a slot in its table of waiting calls
/// and a sequence number).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ticket {
    /// Where the call waits.
    pub index: u32,
    /// Tells this call from an earlier one that waited at `index`.
    pub seq: u32,
}

/// The other routers a router shares the cluster with. Peers are numbered
/// by the implementation; a number is only ever one that
/// [`owner`](Self::owner) returned.
pub(crate) trait Peers {
    /// The peer whose connection reaches `addr`, when it is not this
    /// router's own, decided from `masters`: the current master list, or
    /// for a replica the current replica list (every router decides the
    /// same from the same list).
    fn owner(&self, addr: &NodeAddr, masters: &[NodeAddr]) -> Option<usize>;

    /// Hands `op` for node `addr` to `peer`, to run on its connection
    /// before `deadline`; the reply comes through
    /// [`poll_reply`](Self::poll_reply). An error when the peer is gone
    /// (nothing was handed over).
    fn send(
        &self,
        peer: usize,
        addr: NodeAddr,
        deadline: Instant,
        op: NodeOp,
    ) -> Result<Ticket, Error>;

    /// The reply to the call `ticket`, once it came; then the ticket is
    /// spent. A peer that stays silent past the deadline (and a short
    /// grace) answers with a timeout.
    fn poll_reply(&self, ticket: Ticket, cx: &mut Context<'_>) -> Poll<Result<NodeReply, Error>>;

    /// The caller stopped waiting for `ticket`: its reply, if one comes,
    /// is dropped.
    fn forget(&self, ticket: Ticket);

    /// Whether this router leads topology refreshes (runs the refresh task
    /// and hands what it finds to the others with
    /// [`publish`](Self::publish)).
    fn leads_refreshes(&self) -> bool;

    /// Asks the leader for a refresh, without waiting; false when this
    /// router leads (it refreshes itself).
    fn ask_leader_to_refresh(&self) -> bool;

    /// Waits, until `deadline`, for a refresh by the leader that starts
    /// after now, which installs its topology here before it answers;
    /// `None` when this router leads.
    fn leader_refresh(&self, deadline: Instant) -> Option<LeaderRefresh<'_>>;

    /// Tells every peer that `slot` moved to `addr` (a `MOVED` seen here).
    fn spread_moved(&self, slot: u16, addr: &NodeAddr);

    /// Gives every peer the topology a refresh this router led found, with
    /// the epoch of the map it installed.
    fn publish(&self, topology: &Topology, epoch: u64);
}

/// A router with no peers (the single-core [`Cluster`](super::Cluster)):
/// it connects to every node and leads its own refreshes.
pub(crate) struct NoPeers;

impl Peers for NoPeers {
    fn owner(&self, _: &NodeAddr, _: &[NodeAddr]) -> Option<usize> {
        None
    }

    fn send(&self, _: usize, _: NodeAddr, _: Instant, _: NodeOp) -> Result<Ticket, Error> {
        Err(Error::Closed(
            "this client has no peers to reach nodes through",
        ))
    }

    fn poll_reply(&self, _: Ticket, _: &mut Context<'_>) -> Poll<Result<NodeReply, Error>> {
        Poll::Ready(Err(Error::Closed(
            "this client has no peers to reach nodes through",
        )))
    }

    fn forget(&self, _: Ticket) {}

    fn leads_refreshes(&self) -> bool {
        true
    }

    fn ask_leader_to_refresh(&self) -> bool {
        false
    }

    fn leader_refresh(&self, _: Instant) -> Option<LeaderRefresh<'_>> {
        None
    }

    fn spread_moved(&self, _: u16, _: &NodeAddr) {}

    fn publish(&self, _: &Topology, _: u64) {}
}

/// Runs `op` for node `addr` on `peer` and waits for the reply.
pub(crate) async fn call_peer(
    peers: &dyn Peers,
    peer: usize,
    addr: NodeAddr,
    deadline: Instant,
    op: NodeOp,
) -> Result<NodeReply, Error> {
    let ticket = peers.send(peer, addr, deadline, op)?;
    PeerCall { peers, ticket }.await
}

/// A call waiting for a peer's reply; forgotten if dropped before it.
struct PeerCall<'a> {
    peers: &'a dyn Peers,
    ticket: Ticket,
}

impl Future for PeerCall<'_> {
    type Output = Result<NodeReply, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.peers.poll_reply(self.ticket, cx)
    }
}

impl Drop for PeerCall<'_> {
    fn drop(&mut self) {
        self.peers.forget(self.ticket);
    }
}
