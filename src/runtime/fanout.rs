//! [`ClusterCommands`] for the per-core runtime's clients.
//!
//! A [`CoreClient`] fans out through its core's [`Cluster`](crate::Cluster):
//! a node another core owns is reached over the mesh, as any command for
//! it is. A [`RemoteClient`] hands the whole call to one core as a job,
//! so it targets and aggregates exactly as a call made on that core.

use std::future::Future;

use super::commands::CoreJob;
use super::core_client::CoreClient;
use super::remote_client::RemoteClient;
use crate::cluster::{ClusterCommands, NodeReplies, Target};
use crate::cmd::Args;
use crate::conn::to_cmd;
use crate::{Error, FromValue, Value};

/// The cluster's [`ClusterCommands`] from this core, counted as work in
/// flight for the drain.
impl ClusterCommands for CoreClient {
    fn command_to<T: FromValue>(
        &self,
        target: Target,
        args: impl Args,
    ) -> impl Future<Output = Result<T, Error>> {
        self.entered(self.cluster.command_to(target, args))
    }

    fn per_node(
        &self,
        target: Target,
        args: impl Args,
    ) -> impl Future<Output = Result<NodeReplies, Error>> {
        self.entered(self.cluster.per_node(target, args))
    }
}

/// Each call runs on one of the cores (taking turns) as that core's call;
/// the arguments are copied first, so the futures are `Send`.
impl ClusterCommands for RemoteClient {
    fn command_to<T: FromValue>(
        &self,
        target: Target,
        args: impl Args,
    ) -> impl Future<Output = Result<T, Error>> {
        let cmd = to_cmd(&args);
        let job: CoreJob = Box::new(move |core| {
            Box::pin(async move { core.command_to::<Value>(target, cmd).await })
        });
        async move { T::from_value(self.on_core(job).await?) }
    }

    fn per_node(
        &self,
        target: Target,
        args: impl Args,
    ) -> impl Future<Output = Result<NodeReplies, Error>> {
        let cmd = to_cmd(&args);
        // The replies travel back beside the job's own answer, which only
        // says whether the call was made.
        let (tx, rx) = async_channel::bounded(1);
        let job: CoreJob = Box::new(move |core| {
            Box::pin(async move {
                let replies = core.per_node(target, cmd).await?;
                let _ = tx.try_send(replies);
                Ok(Value::Nil)
            })
        });
        async move {
            self.on_core(job).await?;
            rx.try_recv()
                .map_err(|_| Error::Closed("the core ran the call but its replies were lost"))
        }
    }
}
