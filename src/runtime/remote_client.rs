//! [`RemoteClient`]: calls from outside the executors, entering a core
//! through a channel of their own.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::commands::CoreJob;
use super::core_client::CoreClient;
use super::executor::Hub;
use crate::cmd::Cmd;
use crate::config::ReadFrom;
use crate::{Commands, Error, Value};

/// A client for code outside the executors: a plain thread
/// (`futures_lite::future::block_on(remote.command(..))`), a tokio task,
/// anything that can await. `Send`, `Sync` and cheap to clone. Each call
/// enters one core (taking turns) through a bounded channel and runs
/// there as that core's call, with routing, redirects and the same
/// end-to-end deadline (the call timeout, counted from the submission).
/// Its [`Commands`] are those of a [`CoreClient`], split helpers and watch
/// transactions included; their futures are `Send`.
#[derive(Clone)]
pub struct RemoteClient {
    hub: Arc<Hub>,
    timeout: Option<Duration>,
    read_from: Option<ReadFrom>,
}

impl std::fmt::Debug for RemoteClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteClient")
            .field("cores", &self.hub.calls.len())
            .finish()
    }
}

impl RemoteClient {
    /// A client of the runtime `hub` belongs to.
    pub(super) fn new(hub: Arc<Hub>) -> RemoteClient {
        RemoteClient {
            hub,
            timeout: None,
            read_from: None,
        }
    }

    /// A handle whose calls have `timeout` as their deadline.
    pub fn with_timeout(&self, timeout: Duration) -> RemoteClient {
        RemoteClient {
            timeout: Some(timeout),
            ..self.clone()
        }
    }

    /// A handle whose commands that only read go where `read_from` says
    /// ([`Cluster::with_read_from`](crate::Cluster::with_read_from)) on
    /// the core that runs them.
    pub fn with_read_from(&self, read_from: ReadFrom) -> RemoteClient {
        RemoteClient {
            read_from: Some(read_from),
            ..self.clone()
        }
    }

    pub(super) async fn submit(&self, kind: ExtKind) -> Result<Value, Error> {
        let deadline = Instant::now() + self.timeout.unwrap_or(self.hub.timeout);
        if self.hub.shutdown_started.load(Ordering::Acquire) {
            return Err(Error::Closed("the executor is shutting down"));
        }
        let core = self.hub.next.fetch_add(1, Ordering::Relaxed) % self.hub.calls.len();
        let (reply, answer) = async_channel::bounded(1);
        // The core times the call; the watch answers it if that core does
        // not run by the deadline (plus a grace).
        let _watching = self.hub.overdue.watch(deadline, reply.clone());
        let call = ExtCall {
            kind,
            deadline,
            read_from: self.read_from,
            reply,
        };
        // Until the call is handed over, only the watch can answer: then
        // the call was never sent.
        let handed = futures_lite::future::or(
            async { Some(self.hub.calls[core].send(call).await.is_ok()) },
            async {
                let _ = answer.recv().await;
                None
            },
        )
        .await;
        match handed {
            Some(true) => {}
            Some(false) => return Err(Error::Closed("the executor has stopped")),
            None => {
                return Err(Error::Timeout {
                    maybe_applied: false,
                });
            }
        }
        answer.recv().await.unwrap_or(Err(Error::CoreStopped {
            core,
            maybe_applied: true,
        }))
    }
}

/// A call from outside the executors.
pub(super) struct ExtCall {
    kind: ExtKind,
    deadline: Instant,
    /// The handle's read strategy, when it overrides the configured one.
    read_from: Option<ReadFrom>,
    reply: async_channel::Sender<Result<Value, Error>>,
}

/// What a call from outside the executors asks a core to do.
pub(super) enum ExtKind {
    Command(Cmd),
    Pipeline(Vec<Cmd>),
    Transaction(Vec<Cmd>),
    /// Anything else, run with the core's client (`commands.rs`).
    Job(CoreJob),
}

/// Runs the calls that enter this core from outside the executors.
pub(super) async fn intake(client: CoreClient, calls: async_channel::Receiver<ExtCall>) {
    while let Ok(call) = calls.recv().await {
        let client = client.clone();
        glommio::spawn_local(async move {
            let left = call.deadline.saturating_duration_since(Instant::now());
            let c = match call.read_from {
                Some(r) => client.with_timeout(left).with_read_from(r),
                None => client.with_timeout(left),
            };
            let result = match call.kind {
                ExtKind::Command(cmd) => c.command::<Value>(cmd).await,
                ExtKind::Pipeline(cmds) => c.pipeline(cmds).await.map(Value::Array),
                ExtKind::Transaction(cmds) => c.transaction(cmds).await.map(Value::Array),
                ExtKind::Job(job) => job(c).await,
            };
            let _ = call.reply.try_send(result);
        })
        .detach();
    }
}
