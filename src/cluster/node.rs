//! One node of the cluster and the way a router reaches it: its own
//! connection, or the peer that owns the node (see [`Peers`]).
//!
//! The router and the client work with [`Node`]s only, so their routing
//! and retry logic is the same wherever a node's connection lives. The
//! choice is made once, when the node joins the router's pool: a command
//! for a node this router connects to goes straight to its
//! [`Connection`].

use std::cell::Cell;
use std::future::Future;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::NodeAddr;
use super::peers::{NodeJob, NodeOp, NodeReply, Peers, call_peer};
use crate::cmd::{Args, Cmd};
use crate::{Commands, Connection, Error, Value};

/// One node and the way to it.
pub(crate) struct Node {
    pub addr: NodeAddr,
    pub via: Via,
    /// MOVED and ASK replies this node sent.
    pub redirects: Cell<u64>,
    /// Set when a read sent here as a replica failed: replica reads skip
    /// the node until then (see [`super::replicas`]).
    pub skip_until: Cell<Option<Instant>>,
    /// The moving average of the `PING` round trips this client measured
    /// (for [`ReadFrom::LowestLatency`](crate::config::ReadFrom::LowestLatency)).
    pub latency: Cell<Option<Duration>>,
}

/// How a router reaches a node.
pub(crate) enum Via {
    /// Through its own connection.
    Connection(Connection),
    /// Through the peer that owns the node.
    Peer(PeerLink),
}

/// The way to a node through the peer that owns it.
pub(crate) struct PeerLink {
    /// The peer, as [`Peers::owner`] named it.
    pub peer: usize,
    pub peers: Rc<dyn Peers>,
    /// The deadline of a first try, as a connection would use.
    pub timeout: Duration,
    /// This router's client-side cache: writes sent through the peer drop
    /// their keys here too (the peer's connection drops them in its own).
    pub cache: Option<Rc<crate::conn::cache::Cache>>,
}

impl PeerLink {
    /// Runs `op` on `addr` through the peer, within `timeout` or the
    /// configured one.
    async fn call(
        &self,
        addr: &NodeAddr,
        timeout: Option<Duration>,
        op: NodeOp,
    ) -> Result<NodeReply, Error> {
        let deadline = Instant::now() + timeout.unwrap_or(self.timeout);
        let Some(cache) = &self.cache else {
            return call_peer(&*self.peers, self.peer, addr.clone(), deadline, op).await;
        };
        let written: Vec<Cmd> = match &op {
            NodeOp::Command { cmd, .. } => vec![cmd.clone()],
            NodeOp::Pipeline(cmds) | NodeOp::Transaction { cmds, .. } => cmds.clone(),
            NodeOp::Tracked(_) | NodeOp::Job(_) => Vec::new(),
        };
        written.iter().for_each(|c| cache.note_write(c));
        let result = call_peer(&*self.peers, self.peer, addr.clone(), deadline, op).await;
        written.iter().for_each(|c| cache.note_write(c));
        result
    }
}

impl Via {
    /// The router's own connection, when it has one.
    pub fn connection(&self) -> Option<&Connection> {
        match self {
            Via::Connection(c) => Some(c),
            Via::Peer(_) => None,
        }
    }

    /// The peer that owns the node, when another router does.
    pub fn peer(&self) -> Option<usize> {
        match self {
            Via::Connection(_) => None,
            Via::Peer(p) => Some(p.peer),
        }
    }
}

impl Node {
    /// Sends one command (after `ASKING` when `asking`), within `timeout`
    /// or the connection's own.
    pub async fn command<A: Args>(
        &self,
        args: &A,
        asking: bool,
        timeout: Option<Duration>,
    ) -> Result<Value, Error> {
        match &self.via {
            Via::Connection(c) => match timeout {
                None => send_one(c, args, asking).await,
                Some(t) => send_one(&c.with_timeout(t), args, asking).await,
            },
            Via::Peer(p) => {
                let cmd = crate::conn::to_cmd(args);
                let op = NodeOp::Command { cmd, asking };
                p.call(&self.addr, timeout, op)
                    .await
                    .map(NodeReply::into_value)
            }
        }
    }

    /// Sends commands as one pipeline; replies in order, server errors
    /// inline.
    pub async fn pipeline<'a, A: Args + 'a>(
        &self,
        cmds: impl Iterator<Item = &'a A>,
        timeout: Option<Duration>,
    ) -> Result<Vec<Value>, Error> {
        match &self.via {
            Via::Connection(c) => match timeout {
                None => c.pipeline(cmds).await,
                Some(t) => c.with_timeout(t).pipeline(cmds).await,
            },
            Via::Peer(p) => {
                let op = NodeOp::Pipeline(cmds.map(crate::conn::to_cmd).collect());
                p.call(&self.addr, timeout, op)
                    .await
                    .map(NodeReply::into_values)
            }
        }
    }

    /// Sends a cached read's miss as one pipeline: on a peer's node, as
    /// [`NodeOp::Tracked`] so the peer forwards the node's invalidations.
    /// Also says whether the socket that carried it tracks reads.
    pub async fn tracked_pipeline(
        &self,
        cmds: &[crate::cmd::Cmd],
        timeout: Option<Duration>,
    ) -> Result<(Vec<Value>, bool), Error> {
        match &self.via {
            Via::Connection(c) => {
                let values = match timeout {
                    None => c.pipeline(cmds).await?,
                    Some(t) => c.with_timeout(t).pipeline(cmds).await?,
                };
                Ok((values, c.tracker().is_some()))
            }
            Via::Peer(p) => {
                match p
                    .call(&self.addr, timeout, NodeOp::Tracked(cmds.to_vec()))
                    .await?
                {
                    NodeReply::Untracked(values) => Ok((values, false)),
                    reply => Ok((reply.into_values(), true)),
                }
            }
        }
    }

    /// Runs `cmds` in `MULTI`/`EXEC` (after `ASKING` when `asking`).
    pub async fn transaction<A: Args>(
        &self,
        cmds: &[A],
        asking: bool,
        timeout: Option<Duration>,
    ) -> Result<Vec<Value>, Error> {
        match &self.via {
            Via::Connection(c) => {
                let c = match timeout {
                    None => c.clone(),
                    Some(t) => c.with_timeout(t),
                };
                send_transaction(&c, cmds, asking).await
            }
            Via::Peer(p) => {
                let cmds = cmds.iter().map(crate::conn::to_cmd).collect();
                let op = NodeOp::Transaction { cmds, asking };
                p.call(&self.addr, timeout, op)
                    .await
                    .map(NodeReply::into_values)
            }
        }
    }

    /// Runs `job` with the node's connection, given `left` as its
    /// timeout: here, or on the peer that owns the node (which is why
    /// `job` must be `Send`; the future it returns need not be).
    pub async fn with_connection<T, J, Fut>(&self, left: Duration, job: J) -> Result<T, Error>
    where
        T: Send + 'static,
        J: FnOnce(Connection) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        match &self.via {
            Via::Connection(c) => Ok(job(c.with_timeout(left)).await),
            Via::Peer(p) => {
                let job: NodeJob = Box::new(move |conn| {
                    Box::pin(
                        async move { Box::new(job(conn).await) as Box<dyn std::any::Any + Send> },
                    )
                });
                let output = p
                    .call(&self.addr, Some(left), NodeOp::Job(job))
                    .await?
                    .into_output();
                Ok(*output
                    .downcast::<T>()
                    .expect("a job answers with its output"))
            }
        }
    }
}

/// Runs `op` on `conn`, for a peer that handed it over.
pub(crate) async fn run_op(conn: &Connection, op: NodeOp) -> Result<NodeReply, Error> {
    match op {
        NodeOp::Command { cmd, asking } => send_one(conn, &cmd, asking).await.map(NodeReply::Value),
        NodeOp::Pipeline(cmds) => conn.pipeline(&cmds).await.map(NodeReply::Values),
        NodeOp::Tracked(cmds) => {
            let values = conn.pipeline(&cmds).await?;
            Ok(match conn.tracker() {
                Some(_) => NodeReply::Values(values),
                None => NodeReply::Untracked(values),
            })
        }
        NodeOp::Transaction { cmds, asking } => send_transaction(conn, &cmds, asking)
            .await
            .map(NodeReply::Values),
        NodeOp::Job(job) => Ok(NodeReply::Output(job(conn.clone()).await)),
    }
}

/// Runs `cmds` in `MULTI`/`EXEC`, after `ASKING` when `asking`.
async fn send_transaction<A: Args>(
    conn: &Connection,
    cmds: &[A],
    asking: bool,
) -> Result<Vec<Value>, Error> {
    if asking {
        conn.transaction_asking(cmds).await
    } else {
        conn.transaction(cmds).await
    }
}

/// A command, or the `ASKING` before it.
enum Asked<'a, A> {
    Asking,
    Cmd(&'a A),
}

impl<A: Args> Args for Asked<'_, A> {
    fn arg_count(&self) -> usize {
        match self {
            Asked::Asking => 1,
            Asked::Cmd(c) => c.arg_count(),
        }
    }

    fn with_arg<R>(&self, index: usize, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        match self {
            Asked::Asking => (index == 0).then(|| f(b"ASKING")),
            Asked::Cmd(c) => c.with_arg(index, f),
        }
    }

    fn encode(&self, out: &mut BytesMut) {
        match self {
            Asked::Asking => ["ASKING"].encode(out),
            Asked::Cmd(c) => c.encode(out),
        }
    }
}

/// Sends one command, after `ASKING` when `asking`.
pub(crate) async fn send_one<A: Args>(
    conn: &Connection,
    args: &A,
    asking: bool,
) -> Result<Value, Error> {
    if !asking {
        return conn.command::<Value>(args).await;
    }
    let mut replies = conn.pipeline([Asked::Asking, Asked::Cmd(args)]).await?;
    let reply = replies.pop().expect("two replies");
    replies.pop().expect("two replies").into_result()?;
    reply.into_result()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asking_pairs_encode_as_two_commands() {
        let get = ["GET", "k"];
        let mut out = BytesMut::new();
        Asked::<[&str; 2]>::Asking.encode(&mut out);
        Asked::Cmd(&get).encode(&mut out);
        assert_eq!(
            &out[..],
            b"*1\r\n$6\r\nASKING\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
        );
        assert_eq!(
            Asked::<[&str; 2]>::Asking.with_arg(0, |a| a.to_vec()),
            Some(b"ASKING".to_vec())
        );
    }
}
