//! [`Commands`] for the per-core runtime's clients.
//!
//! A [`CoreClient`] runs each call through its core's [`Cluster`](crate::Cluster),
//! counted as work in flight for the drain; the split helpers (`mget`,
//! `del`, ...) are the cluster's. A [`RemoteClient`] hands each call to
//! one core: commands, pipelines and transactions travel as they are,
//! everything else (the split helpers, watch transactions) as a job the
//! core runs with its [`CoreClient`], so a remote call splits and routes
//! exactly as a call made on that core.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;

use super::core_client::CoreClient;
use super::remote_client::{ExtKind, RemoteClient};
use crate::cluster::client::{check_watch, watch_slot};
use crate::cmd::Args;
use crate::commands::WatchFn;
use crate::conn::to_cmd;
use crate::resp::Arg;
use crate::{Commands, Connection, Error, FromValue, Value};

/// A call a [`RemoteClient`] hands to a core, run there with the core's
/// client (deadline applied).
pub(super) type CoreJob =
    Box<dyn FnOnce(CoreClient) -> Pin<Box<dyn Future<Output = Result<Value, Error>>>> + Send>;

impl CoreClient {
    /// Runs `call` as work in flight on this core (the drain waits for
    /// it), or fails with [`Error::Closed`] once a shutdown started.
    pub(super) async fn entered<T>(
        &self,
        call: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        let _work = self.enter()?;
        call.await
    }
}

/// [`Cluster`](crate::Cluster)'s commands from this core: routed to this core's
/// connections, or for nodes other cores own, through them.
impl Commands for CoreClient {
    fn command<T: FromValue>(&self, args: impl Args) -> impl Future<Output = Result<T, Error>> {
        self.entered(self.cluster.command(args))
    }

    /// [`Cluster`](crate::Cluster)'s pipeline: commands split by node, each node's share
    /// sent by its owner core, replies in order.
    fn pipeline<A: Args>(
        &self,
        cmds: impl IntoIterator<Item = A>,
    ) -> impl Future<Output = Result<Vec<Value>, Error>> {
        self.entered(self.cluster.pipeline(cmds))
    }

    /// [`Cluster`](crate::Cluster)'s transaction, run by the core that owns the slot's
    /// master.
    fn transaction<A: Args>(
        &self,
        cmds: impl IntoIterator<Item = A>,
    ) -> impl Future<Output = Result<Vec<Value>, Error>> {
        self.entered(self.cluster.transaction(cmds))
    }

    /// [`Cluster::watch_transaction`](crate::Cluster::watch_transaction)
    /// from this core. When another core owns the slot's master, `f`
    /// travels there and runs on that core's connection (so it must be
    /// `Send`; the future it returns need not be).
    async fn watch_transaction_with_retries<K: Arg, F: WatchFn + Send + 'static>(
        &self,
        keys: &[K],
        max_retries: u32,
        f: F,
    ) -> Result<Vec<Value>, Error> {
        let _work = self.enter()?;
        let slot = watch_slot(keys)?;
        let keys = owned(keys);
        let mut f = Some(f);
        self.cluster
            .watch_loop(slot, async |node, left| {
                let Some(mut g) = f.take() else {
                    return Err(Error::Closed("the watch function was lost with its core"));
                };
                let keys = keys.clone();
                let (result, g) = node
                    .with_connection(left, move |conn| async move {
                        let result = {
                            let checked = async |c: &Connection| check_watch(slot, g(c).await?);
                            conn.watch_transaction_with_retries(&keys, max_retries, checked)
                                .await
                        };
                        (result, g)
                    })
                    .await?;
                f = Some(g);
                result
            })
            .await
    }

    fn mget<T: FromValue, K: Arg>(&self, keys: &[K]) -> impl Future<Output = Result<T, Error>> {
        self.entered(self.cluster.mget(keys))
    }

    fn mset<K: Arg, V: Arg>(&self, pairs: &[(K, V)]) -> impl Future<Output = Result<(), Error>> {
        self.entered(self.cluster.mset(pairs))
    }

    fn del<K: Arg>(&self, keys: &[K]) -> impl Future<Output = Result<u64, Error>> {
        self.entered(self.cluster.del(keys))
    }

    fn unlink<K: Arg>(&self, keys: &[K]) -> impl Future<Output = Result<u64, Error>> {
        self.entered(self.cluster.unlink(keys))
    }

    fn exists<K: Arg>(&self, keys: &[K]) -> impl Future<Output = Result<u64, Error>> {
        self.entered(self.cluster.exists(keys))
    }

    fn touch<K: Arg>(&self, keys: &[K]) -> impl Future<Output = Result<u64, Error>> {
        self.entered(self.cluster.touch(keys))
    }
}

/// A command counting keys, as a core's client runs it (`del`, ...).
type CountOnCore = for<'a> fn(
    &'a CoreClient,
    &'a [Bytes],
) -> Pin<Box<dyn Future<Output = Result<u64, Error>> + 'a>>;

impl RemoteClient {
    /// Runs `job` on one of the cores with its client.
    pub(super) async fn on_core(&self, job: CoreJob) -> Result<Value, Error> {
        self.submit(ExtKind::Job(job)).await
    }

    /// Runs `count` with `keys` on one of the cores.
    fn count_on_core<K: Arg>(
        &self,
        keys: &[K],
        count: CountOnCore,
    ) -> impl Future<Output = Result<u64, Error>> + Send {
        let keys = owned(keys);
        let job: CoreJob = Box::new(move |core| {
            Box::pin(async move {
                let n = count(&core, &keys).await?;
                Ok(Value::Integer(i64::try_from(n).unwrap_or(i64::MAX)))
            })
        });
        async move { u64::from_value(self.on_core(job).await?) }
    }
}

/// The calls of a [`Cluster`](crate::Cluster), each run on one of the cores (taking
/// turns) as that core's call. Arguments are copied before the call is
/// handed over, so its future is `Send` whatever they are.
impl Commands for RemoteClient {
    fn command<T: FromValue>(&self, args: impl Args) -> impl Future<Output = Result<T, Error>> {
        let kind = ExtKind::Command(to_cmd(&args));
        async move { T::from_value(self.submit(kind).await?) }
    }

    fn pipeline<A: Args>(
        &self,
        cmds: impl IntoIterator<Item = A>,
    ) -> impl Future<Output = Result<Vec<Value>, Error>> {
        let kind = ExtKind::Pipeline(cmds.into_iter().map(|c| to_cmd(&c)).collect());
        async move { replies(self.submit(kind).await?) }
    }

    fn transaction<A: Args>(
        &self,
        cmds: impl IntoIterator<Item = A>,
    ) -> impl Future<Output = Result<Vec<Value>, Error>> {
        let kind = ExtKind::Transaction(cmds.into_iter().map(|c| to_cmd(&c)).collect());
        async move { replies(self.submit(kind).await?) }
    }

    /// `f` travels to a core, and from there (when another core owns the
    /// slot's master) to the owner, and runs on its connection.
    fn watch_transaction_with_retries<K: Arg, F: WatchFn + Send + 'static>(
        &self,
        keys: &[K],
        max_retries: u32,
        f: F,
    ) -> impl Future<Output = Result<Vec<Value>, Error>> {
        let keys = owned(keys);
        let job: CoreJob = Box::new(move |core| {
            Box::pin(async move {
                core.watch_transaction_with_retries(&keys, max_retries, f)
                    .await
                    .map(Value::Array)
            })
        });
        async move { replies(self.on_core(job).await?) }
    }

    fn mget<T: FromValue, K: Arg>(&self, keys: &[K]) -> impl Future<Output = Result<T, Error>> {
        let keys = owned(keys);
        let job: CoreJob =
            Box::new(move |core| Box::pin(async move { core.mget::<Value, _>(&keys).await }));
        async move { T::from_value(self.on_core(job).await?) }
    }

    fn mset<K: Arg, V: Arg>(&self, pairs: &[(K, V)]) -> impl Future<Output = Result<(), Error>> {
        let pairs: Vec<(Bytes, Bytes)> = pairs.iter().map(|(k, v)| (bytes(k), bytes(v))).collect();
        let job: CoreJob = Box::new(move |core| {
            Box::pin(async move { core.mset(&pairs).await.map(|()| Value::Nil) })
        });
        async move { self.on_core(job).await.map(drop) }
    }

    fn del<K: Arg>(&self, keys: &[K]) -> impl Future<Output = Result<u64, Error>> {
        self.count_on_core(keys, |core, keys| Box::pin(core.del(keys)))
    }

    fn unlink<K: Arg>(&self, keys: &[K]) -> impl Future<Output = Result<u64, Error>> {
        self.count_on_core(keys, |core, keys| Box::pin(core.unlink(keys)))
    }

    fn exists<K: Arg>(&self, keys: &[K]) -> impl Future<Output = Result<u64, Error>> {
        self.count_on_core(keys, |core, keys| Box::pin(core.exists(keys)))
    }

    fn touch<K: Arg>(&self, keys: &[K]) -> impl Future<Output = Result<u64, Error>> {
        self.count_on_core(keys, |core, keys| Box::pin(core.touch(keys)))
    }
}

/// The replies of a pipeline or transaction a core sent back as one array;
/// error replies stay inline.
fn replies(value: Value) -> Result<Vec<Value>, Error> {
    match value {
        Value::Array(items) => Ok(items),
        other => Vec::from_value(other),
    }
}

fn bytes(arg: &impl Arg) -> Bytes {
    arg.with_bytes(Bytes::copy_from_slice)
}

pub(super) fn owned<K: Arg>(keys: &[K]) -> Vec<Bytes> {
    keys.iter().map(bytes).collect()
}
