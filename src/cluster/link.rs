//! How a core reaches a node: through its own connection, or through the
//! core that owns the node (the per-core runtime).
//!
//! The router works with [`Link`]s only, so its routing and retry logic
//! is the same whether a node's connection lives on this core or on
//! another one.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::NodeAddr;
use crate::cmd::Args;
use crate::runtime::mesh::{CoreMesh, Op};
use crate::{Commands, Connection, Error, Value};

/// The way to one node.
pub(crate) enum Link {
    /// This core holds the connection.
    Local(Connection),
    /// Core `core` holds it: requests travel over the channel mesh.
    Remote {
        core: usize,
        mesh: Rc<CoreMesh>,
        /// The deadline of a first try, as the connection would use.
        timeout: Duration,
    },
}

impl Link {
    /// The connection, when this core holds it.
    pub fn local(&self) -> Option<&Connection> {
        match self {
            Link::Local(c) => Some(c),
            Link::Remote { .. } => None,
        }
    }

    /// The core holding the connection, when it is another one.
    pub fn remote_core(&self) -> Option<usize> {
        match self {
            Link::Local(_) => None,
            Link::Remote { core, .. } => Some(*core),
        }
    }

    /// Sends one command to `addr` (after `ASKING` when `asking`), within
    /// `timeout` or the connection's own.
    pub async fn command<A: Args>(
        &self,
        addr: &NodeAddr,
        args: &A,
        asking: bool,
        timeout: Option<Duration>,
    ) -> Result<Value, Error> {
        match self {
            Link::Local(c) => match timeout {
                None => send_one(c, args, asking).await,
                Some(t) => send_one(&c.with_timeout(t), args, asking).await,
            },
            Link::Remote {
                core,
                mesh,
                timeout: default,
            } => {
                let op = Op::Command {
                    cmd: crate::conn::to_cmd(args),
                    asking,
                };
                let deadline = Instant::now() + timeout.unwrap_or(*default);
                mesh.call(*core, Some(addr.clone()), deadline, op)
                    .await?
                    .into_value()
            }
        }
    }

    /// Sends `cmds` to `addr` as one pipeline; replies in order, server
    /// errors inline.
    pub async fn pipeline<'a, A: Args + 'a>(
        &self,
        addr: &NodeAddr,
        cmds: impl Iterator<Item = &'a A>,
        timeout: Option<Duration>,
    ) -> Result<Vec<Value>, Error> {
        match self {
            Link::Local(c) => match timeout {
                None => c.pipeline(cmds).await,
                Some(t) => c.with_timeout(t).pipeline(cmds).await,
            },
            Link::Remote {
                core,
                mesh,
                timeout: default,
            } => {
                let op = Op::Pipeline(cmds.map(crate::conn::to_cmd).collect());
                let deadline = Instant::now() + timeout.unwrap_or(*default);
                mesh.call(*core, Some(addr.clone()), deadline, op)
                    .await?
                    .into_values()
            }
        }
    }

    /// Runs `cmds` in `MULTI`/`EXEC` on `addr` (after `ASKING` when
    /// `asking`).
    pub async fn transaction<A: Args>(
        &self,
        addr: &NodeAddr,
        cmds: &[A],
        asking: bool,
        timeout: Option<Duration>,
    ) -> Result<Vec<Value>, Error> {
        match self {
            Link::Local(c) => {
                let c = match timeout {
                    None => c.clone(),
                    Some(t) => c.with_timeout(t),
                };
                if asking {
                    c.transaction_asking(cmds).await
                } else {
                    c.transaction(cmds).await
                }
            }
            Link::Remote {
                core,
                mesh,
                timeout: default,
            } => {
                let op = Op::Transaction {
                    cmds: cmds.iter().map(crate::conn::to_cmd).collect(),
                    asking,
                };
                let deadline = Instant::now() + timeout.unwrap_or(*default);
                mesh.call(*core, Some(addr.clone()), deadline, op)
                    .await?
                    .into_values()
            }
        }
    }
}

/// Runs `op` on this core's connection to a node, for a request another
/// core sent.
pub(crate) async fn serve(conn: &Connection, op: Op) -> Result<crate::runtime::mesh::Reply, Error> {
    use crate::runtime::mesh::Reply;
    match op {
        Op::Command { cmd, asking } => send_one(conn, &cmd, asking).await.map(Reply::Value),
        Op::Pipeline(cmds) => conn.pipeline(&cmds).await.map(Reply::Values),
        Op::Transaction { cmds, asking } => {
            let replies = if asking {
                conn.transaction_asking(&cmds).await
            } else {
                conn.transaction(&cmds).await
            };
            replies.map(Reply::Values)
        }
        Op::Job(job) => Ok(Reply::Any(job(conn.clone()).await)),
        Op::Refresh => unreachable!("a refresh is served by the router"),
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
