//! [`Cluster`]: the slot-routed client of one core.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::node::Node;
use super::peers::NoPeers;
use super::refresh;
use super::router::{Attempt, Router, Step, join_all};
use super::{Health, NodeAddr, Role};
use crate::cmd::{Args, Cmd, Route, cmd};
use crate::commands::WatchFn;
use crate::config::{ClusterConfig, IntoClusterConfig, ReadFrom};
use crate::error::{RedirectKind, RetryAction, ServerError};
use crate::resp::Arg;
use crate::slot::key_slot;
use crate::{Commands, Connection, Error, FromValue, Value, Watch};

/// The node a command was first sent to and the error it met there.
type FirstError = Option<(Rc<Node>, Error)>;

/// Closes the client when the last handle is dropped.
struct CloseGuard(Rc<Router>);

impl Drop for CloseGuard {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// A Redis Cluster client on the current glommio executor: routes each
/// command to the master serving its slot, follows `MOVED` and `ASK`, and
/// keeps its view of the cluster fresh.
///
/// Clone it freely; clones share the node connections, and calls from
/// every task on the core are pipelined together on each node's
/// connection. The handle is `!Send`: each core builds its own (or uses
/// the per-core runtime). Every call has one deadline, end to end
/// ([`ClusterConfig::timeout`]), covering its redirects and retries. A
/// command is sent again only when the cluster proved it was not applied:
/// a `MOVED`/`ASK`/`TRYAGAIN`/`CLUSTERDOWN`/`READONLY`/`MASTERDOWN`/
/// `LOADING`/`BUSY` reply, or a node that could not be reached before the
/// command was written. A command whose connection died after it was
/// written fails with [`Error::ConnectionLost`], as on a lone connection.
///
/// ```no_run
/// use redcore::Commands;
/// use redcore::cluster::Cluster;
///
/// glommio::LocalExecutorBuilder::default()
///     .spawn(|| async {
///         let cluster = Cluster::connect(["127.0.0.1:7000", "127.0.0.1:7001"]).await?;
///         cluster.command::<()>(["SET", "{user:1}.name", "Alice"]).await?;
///         let name: String = cluster.command(["GET", "{user:1}.name"]).await?;
///         assert_eq!(name, "Alice");
///         // Keys in different slots: split per slot, answers in order.
///         let names: Vec<Option<String>> = cluster.mget(&["{user:1}.name", "{user:2}.name"]).await?;
///         assert_eq!(names, [Some("Alice".to_owned()), None]);
///         Ok::<_, redcore::Error>(())
///     })
///     .unwrap()
///     .join()
///     .unwrap()
///     .unwrap();
/// ```
#[derive(Clone)]
pub struct Cluster {
    pub(crate) router: Rc<Router>,
    _close: Rc<CloseGuard>,
    /// Overrides the configured call deadline ([`Cluster::with_timeout`]).
    pub(super) timeout: Option<Duration>,
    /// Overrides the configured read strategy ([`Cluster::with_read_from`]).
    read_from: Option<ReadFrom>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let routes = self.router.routes();
        f.debug_struct("Cluster")
            .field("epoch", &routes.map.epoch())
            .field("masters", &routes.map.masters())
            .finish()
    }
}

/// What [`Cluster::info`] reports.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClusterInfo {
    /// The epoch of the slot map in use; it grows with every change.
    pub epoch: u64,
    /// Slots some master serves (16384 when the cluster is whole).
    pub slots_covered: usize,
    /// Every node the client knows: those the last topology listed, and
    /// those a redirect named since.
    pub nodes: Vec<ClusterNodeInfo>,
    /// Refreshes that changed the slot map (the first discovery aside).
    pub topology_changes: u64,
}

/// One node, as [`ClusterInfo`] reports it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClusterNodeInfo {
    /// Where the client reaches it.
    pub addr: NodeAddr,
    /// Its node id, when a topology listed it.
    pub id: Option<String>,
    /// Master or replica.
    pub role: Role,
    /// Its health as last reported.
    pub health: Health,
    /// The slot ranges the client routes to it (inclusive).
    pub slots: Vec<(u16, u16)>,
    /// True while the client has a live connection to it.
    pub connected: bool,
    /// Calls sent to it (a pipeline counts once).
    pub commands: u64,
    /// MOVED and ASK replies it sent.
    pub redirects: u64,
    /// Times the connection to it was made again.
    pub reconnects: u64,
    /// Times its socket went silent: a reply due for a whole health
    /// interval without a byte arriving (see
    /// [`ConnectionConfig::health_interval`](crate::ConnectionConfig::health_interval)).
    pub stalls: u64,
    /// The moving average of the `PING` round trips this client measured
    /// to it, once [`ReadFrom::LowestLatency`] was used (`None` before).
    pub latency: Option<Duration>,
    /// On the per-core runtime, the core whose connection reaches this
    /// node when it is not this core; `connected`, `commands`,
    /// `reconnects` and `stalls` are then zero here (that core reports
    /// them). `None`
    /// for a node this core connects to itself.
    pub owner_core: Option<usize>,
}

impl Cluster {
    /// Asks the seeds for the topology (unreachable seeds are skipped; if
    /// none answers within the timeout, [`Error::NoTopology`] lists each
    /// one and why), then returns. Connections to the nodes open on first
    /// use. Must be called on a glommio executor.
    ///
    /// `config` is a [`ClusterConfig`], a Redis URI
    /// (`"redis://:secret@10.0.0.1:7000"`), one `"host:port"`, or a list
    /// of them.
    pub async fn connect(config: impl IntoClusterConfig) -> Result<Cluster, Error> {
        let config = config.into_cluster_config()?;
        let router = Rc::new(Router::new(config, Rc::new(NoPeers))?);
        if let Err(e) = router.discover().await {
            router.close();
            return Err(e);
        }
        let cluster = Cluster::started(router);
        cluster.read_policies_in_background();
        Ok(cluster)
    }

    /// The client over `router`, whose first topology is installed; runs
    /// the refresh task when the router leads refreshes.
    pub(crate) fn started(router: Rc<Router>) -> Cluster {
        let covered = router.routes().map.coverage();
        if covered < usize::from(crate::slot::SLOT_COUNT) {
            tracing::warn!(covered, "the cluster does not serve every slot");
        }
        if router.peers.leads_refreshes() {
            glommio::spawn_local(refresh::refresher(router.clone())).detach();
        }
        if router.config.read_from.uses_replicas() {
            router.want_replicas();
        }
        if router.config.read_from == ReadFrom::LowestLatency {
            router.start_latency_probe();
        }
        glommio::spawn_local(super::health::watch_silent_nodes(router.clone())).detach();
        Cluster {
            _close: Rc::new(CloseGuard(router.clone())),
            router,
            timeout: None,
            read_from: None,
        }
    }

    /// The configuration this client was made with.
    pub fn config(&self) -> &ClusterConfig {
        &self.router.config
    }

    /// A handle on the same client whose calls have `timeout` as their
    /// end-to-end deadline instead of the configured one.
    pub fn with_timeout(&self, timeout: Duration) -> Cluster {
        Cluster {
            timeout: Some(timeout),
            ..self.clone()
        }
    }

    /// A handle on the same client whose commands that only read go where
    /// `read_from` says instead of where
    /// [`ClusterConfig::read_from`] says. Pipelines and transactions
    /// always go to masters.
    pub fn with_read_from(&self, read_from: ReadFrom) -> Cluster {
        if read_from.uses_replicas() {
            self.router.want_replicas();
        }
        if read_from == ReadFrom::LowestLatency {
            self.router.start_latency_probe();
        }
        Cluster {
            read_from: Some(read_from),
            ..self.clone()
        }
    }

    /// The read strategy of this handle's calls.
    pub(crate) fn read_from(&self) -> ReadFrom {
        self.read_from.unwrap_or(self.router.config.read_from)
    }

    /// The end-to-end deadline of a call starting now.
    pub(crate) fn deadline(&self) -> Instant {
        Instant::now() + self.call_timeout()
    }

    /// The time a call of this handle may take.
    pub(super) fn call_timeout(&self) -> Duration {
        self.timeout.unwrap_or(self.router.config.timeout())
    }

    pub(super) fn attempt(&self) -> Attempt {
        self.attempt_until(self.deadline())
    }

    /// The state of a call (or of one part of a split call) ending at
    /// `deadline`, one of this handle's deadlines.
    fn attempt_until(&self, deadline: Instant) -> Attempt {
        Attempt::new(deadline, self.timeout.is_none())
    }

    /// The deadline to give a node connection for the first try of a call
    /// ending at `deadline`: `None` when it is the configured timeout,
    /// which the connection applies by itself.
    fn first_try_timeout(&self, deadline: Instant) -> Option<Duration> {
        self.timeout
            .map(|_| deadline.saturating_duration_since(Instant::now()))
    }
}

impl Commands for Cluster {
    /// Sends one command to the master serving its slot (or, for a
    /// command that only reads, where the handle's [`ReadFrom`] says: see
    /// [`with_read_from`](Cluster::with_read_from)) and converts the reply;
    /// a server error is `Err(Error::Server(..))`.
    ///
    /// Keys in different slots: `DEL`, `UNLINK`, `EXISTS`, `TOUCH`, `MGET`
    /// and `MSET` are split per slot, sent side by side and their replies
    /// combined (as [`mget`](Self::mget) and the other split helpers do);
    /// any other command is [`Error::CrossSlot`] and nothing is sent
    /// (`MSETNX` among them: split, it would not be all or nothing).
    ///
    /// A keyless command goes where its policy (the servers' command
    /// tips, or the built-in table: [`crate::cmd::policy`]) says: to every
    /// master (`DBSIZE` summed, `KEYS` concatenated, `FLUSHALL`, `FUNCTION
    /// LOAD`, `SCRIPT EXISTS` ANDed) or every node (`SCRIPT LOAD`, `CONFIG
    /// SET`), side by side, failing with [`Error::Fanout`] when a node
    /// fails; other keyless commands (`PING` too, whatever its tip says)
    /// go to one master chosen at random. `SCAN` reaches one master: see
    /// [`ScanCommands`](super::ScanCommands). To choose the nodes, see
    /// [`ClusterCommands`](super::ClusterCommands).
    ///
    /// Retries: a redirect, a refusal that proves the command was not
    /// applied (`TRYAGAIN`, `CLUSTERDOWN`, ...) or an unreachable node is
    /// retried until the deadline. A connection lost with the command in
    /// flight is [`Error::ConnectionLost`] (it may have been applied),
    /// except for commands that only read
    /// ([`is_read_only`](crate::cmd::is_read_only): `GET`, `HGETALL`,
    /// `XREAD`, ...), which are sent again after a topology refresh.
    async fn command<T: FromValue>(&self, args: impl Args) -> Result<T, Error> {
        let route = match crate::cmd::send_route(&args) {
            Ok(route) => route,
            Err(e @ Error::CrossSlot { .. }) => {
                return T::from_value(self.command_across_slots(&args, e).await?);
            }
            Err(e) => return Err(e),
        };
        if route == Route::Keyless {
            if let Some(value) = self.command_by_policy(&args).await? {
                return T::from_value(value);
            }
        }
        let mut attempt = self.attempt();
        attempt.read_only = crate::cmd::is_read_only(&args);
        attempt.runs_code = super::code_refusal::runs_code(&args);
        attempt.read_from = self.read_from();
        // A blocking read waits on the master: on a replica it would get
        // half of the call's time, then the master the other half.
        if attempt.read_from.uses_replicas() && crate::cmd::is_blocking(&args) {
            attempt.read_from = ReadFrom::Primary;
        }
        let value = self
            .router
            .run(route, &mut attempt, async |node, asking, timeout| {
                node.command(&args, asking, timeout).await
            })
            .await?;
        T::from_value(value)
    }

    /// Sends commands as pipelines and returns one reply per command, in
    /// order; server errors come back inline as [`Value::Error`].
    ///
    /// Commands of one node go out as one pipeline on its connection, and
    /// the nodes' pipelines run side by side. A command answered with a
    /// redirect (or another reply proving it was not applied) is sent
    /// again on its own where the reply says, the others are not. Keyless
    /// commands go with any group. A command whose keys span slots fails
    /// the whole call before anything is sent ([`Error::CrossSlot`]). When
    /// a node's connection dies with the pipeline in flight and every
    /// command sent to that node only reads
    /// ([`is_read_only`](crate::cmd::is_read_only)), those commands are
    /// sent again. Otherwise the call fails as a whole when a command's
    /// fate is unknown (its connection died after writing it, or the
    /// deadline passed); other commands may then have been applied.
    async fn pipeline<A: Args>(
        &self,
        cmds: impl IntoIterator<Item = A>,
    ) -> Result<Vec<Value>, Error> {
        let cmds: Vec<A> = cmds.into_iter().collect();
        if cmds.is_empty() {
            return Ok(Vec::new());
        }
        let routes = cmds
            .iter()
            .map(crate::cmd::send_route)
            .collect::<Result<Vec<Route>, Error>>()?;
        let deadline = self.deadline();
        let table = self.router.routes();
        // Group by master; keyless commands join the first group.
        let mut group_of = vec![usize::MAX; table.masters.len()];
        let mut groups: Vec<(Rc<Node>, Vec<usize>)> = Vec::new();
        let mut keyless = Vec::new();
        let mut unrouted = Vec::new();
        for (i, route) in routes.iter().enumerate() {
            let Route::Slot(slot) = *route else {
                keyless.push(i);
                continue;
            };
            let Some(m) = table.map.master_index(slot) else {
                unrouted.push(i);
                continue;
            };
            if group_of[m] == usize::MAX {
                group_of[m] = groups.len();
                groups.push((table.masters[m].clone(), Vec::with_capacity(cmds.len())));
            }
            groups[group_of[m]].1.push(i);
        }
        if !keyless.is_empty() {
            match (groups.first_mut(), table.node(Route::Keyless)) {
                (Some(first), _) => {
                    first.1.extend(keyless);
                    first.1.sort_unstable();
                }
                (None, Some(node)) => groups.push((node.clone(), keyless)),
                (None, None) => unrouted.extend(keyless),
            }
        }
        drop(table);
        let cmds = &cmds;
        let timeout = self.first_try_timeout(deadline);
        let mut outcomes = join_all(groups.iter().map(|(node, idx)| async move {
            node.pipeline(idx.iter().map(|&i| &cmds[i]), timeout).await
        }))
        .await;
        // Every command went to one node (say, all keys under one hash
        // tag): its replies are the answer, in order, unless one must go
        // again.
        if groups.len() == 1 && groups[0].1.len() == cmds.len() {
            if let Some(Ok(values)) = outcomes.first() {
                let node = &groups[0].0;
                if !values.iter().enumerate().any(|(i, v)| {
                    matches!(v, Value::Error(e) if goes_again(&cmds[i], routes[i], node, e))
                }) {
                    return outcomes.pop().expect("one outcome");
                }
            }
        }
        let mut results: Vec<Option<Value>> = (0..cmds.len()).map(|_| None).collect();
        let mut again: Vec<(usize, FirstError)> = unrouted.into_iter().map(|i| (i, None)).collect();
        for ((node, idx), outcome) in groups.iter().zip(outcomes) {
            match outcome {
                Ok(values) => {
                    for (&i, v) in idx.iter().zip(values) {
                        match v {
                            Value::Error(e) if goes_again(&cmds[i], routes[i], node, &e) => {
                                again.push((i, Some((node.clone(), Error::Server(e)))));
                            }
                            v => results[i] = Some(v),
                        }
                    }
                }
                // Not sent, or lost in flight when every command of the
                // group only reads: each goes again on its own.
                Err(e)
                    if Step::of(&e) == Step::Refresh
                        || (matches!(e, Error::ConnectionLost)
                            && idx.iter().all(|&i| crate::cmd::is_read_only(&cmds[i]))) =>
                {
                    again.extend(idx.iter().map(|&i| (i, Some((node.clone(), e.clone())))));
                }
                Err(e) => return Err(e),
            }
        }
        if !again.is_empty() {
            let outs =
                join_all(again.iter().map(|(i, first)| {
                    self.retry_one(&cmds[*i], routes[*i], deadline, first.clone())
                }))
                .await;
            for ((i, _), out) in again.iter().zip(outs) {
                results[*i] = Some(match out {
                    Ok(v) => v,
                    Err(Error::Server(e) | Error::ScriptError(e)) => Value::Error(e),
                    Err(e) => return Err(e),
                });
            }
        }
        Ok(results
            .into_iter()
            .map(|v| v.expect("every command has a reply"))
            .collect())
    }

    /// Runs commands in `MULTI`/`EXEC` on the master of their slot and
    /// returns their replies. Every keyed command must be in one slot
    /// (use hash tags: `{user:1}.name`), else [`Error::CrossSlot`] before
    /// anything is sent. A `MOVED` or `ASK` refusal means the `EXEC` never
    /// ran: the whole transaction follows it.
    async fn transaction<A: Args>(
        &self,
        cmds: impl IntoIterator<Item = A>,
    ) -> Result<Vec<Value>, Error> {
        let cmds: Vec<A> = cmds.into_iter().collect();
        let route = common_route(cmds.iter().map(Args::route))?;
        let mut attempt = self.attempt();
        let value = self
            .router
            .run(route, &mut attempt, async |node, asking, timeout| {
                node.transaction(&cmds, asking, timeout)
                    .await
                    .map(Value::Array)
            })
            .await?;
        match value {
            Value::Array(items) => Ok(items),
            _ => unreachable!("a transaction yields an array"),
        }
    }

    /// Runs [`Cluster::watch_transaction_with_retries`], which takes any
    /// function.
    async fn watch_transaction_with_retries<K: Arg, F: WatchFn + Send + 'static>(
        &self,
        keys: &[K],
        max_retries: u32,
        f: F,
    ) -> Result<Vec<Value>, Error> {
        Cluster::watch_transaction_with_retries(self, keys, max_retries, f).await
    }

    /// `MGET` across slots: one `MGET` per slot, sent side by side; the
    /// values in the order of `keys`, converted as one array.
    async fn mget<T: FromValue, K: Arg>(&self, keys: &[K]) -> Result<T, Error> {
        let groups = by_slot(keys.iter().map(|k| k.with_bytes(key_slot)));
        let cmds: Vec<Cmd> = groups
            .iter()
            .map(|(_, idx)| cmd("MGET").args(idx.iter().map(|&i| &keys[i])))
            .collect();
        let replies = self.run_groups(&groups, &cmds).await?;
        let mut values: Vec<Option<Value>> = (0..keys.len()).map(|_| None).collect();
        for ((_, idx), reply) in groups.iter().zip(replies) {
            match reply.without_attributes() {
                Value::Array(items) if items.len() == idx.len() => {
                    for (&i, v) in idx.iter().zip(items) {
                        values[i] = Some(v);
                    }
                }
                other => {
                    return Err(Error::Conversion(crate::ConversionError {
                        found: other.type_name(),
                        target: "MGET reply",
                        detail: Some("expected one value per key"),
                    }));
                }
            }
        }
        T::from_value(Value::Array(
            values
                .into_iter()
                .map(|v| v.expect("every key has a value"))
                .collect(),
        ))
    }

    /// `MSET` across slots: one `MSET` per slot, sent side by side. Each
    /// slot's keys are set atomically, the whole is not: when some slots
    /// were set and others failed, the error is [`Error::Fanout`] (as for
    /// `DEL`, `UNLINK` and `TOUCH`), which is never safe to retry.
    async fn mset<K: Arg, V: Arg>(&self, pairs: &[(K, V)]) -> Result<(), Error> {
        let groups = by_slot(pairs.iter().map(|(k, _)| k.with_bytes(key_slot)));
        let cmds: Vec<Cmd> = groups
            .iter()
            .map(|(_, idx)| {
                let mut c = cmd("MSET");
                for &i in idx {
                    c.push_arg(&pairs[i].0).push_arg(&pairs[i].1);
                }
                c
            })
            .collect();
        for reply in self.run_groups(&groups, &cmds).await? {
            <()>::from_value(reply)?;
        }
        Ok(())
    }

    /// `DEL` across slots: the number of keys removed.
    async fn del<K: Arg>(&self, keys: &[K]) -> Result<u64, Error> {
        self.count_by_slot("DEL", keys).await
    }

    /// `UNLINK` across slots: the number of keys removed.
    async fn unlink<K: Arg>(&self, keys: &[K]) -> Result<u64, Error> {
        self.count_by_slot("UNLINK", keys).await
    }

    /// `EXISTS` across slots: how many of the keys exist (a key given
    /// twice counts twice, as in Redis).
    async fn exists<K: Arg>(&self, keys: &[K]) -> Result<u64, Error> {
        self.count_by_slot("EXISTS", keys).await
    }

    /// `TOUCH` across slots: the number of keys touched.
    async fn touch<K: Arg>(&self, keys: &[K]) -> Result<u64, Error> {
        self.count_by_slot("TOUCH", keys).await
    }
}

impl Cluster {
    /// Sends one command of a pipeline again after `first`, the error its
    /// first send met.
    async fn retry_one<A: Args>(
        &self,
        args: &A,
        route: Route,
        deadline: Instant,
        first: FirstError,
    ) -> Result<Value, Error> {
        let mut attempt = self.attempt_until(deadline);
        attempt.read_only = crate::cmd::is_read_only(args);
        attempt.runs_code = super::code_refusal::runs_code(args);
        if let Some((node, err)) = first {
            self.router.after_error(&node, err, &mut attempt).await?;
        }
        self.router
            .run(route, &mut attempt, async |node, asking, timeout| {
                node.command(args, asking, timeout).await
            })
            .await
    }

    /// An optimistic transaction on the master of the watched keys' slot,
    /// with the semantics of [`Connection::watch_transaction`]: `f` reads
    /// through the node's connection and returns the commands to run, or
    /// an abort. The keys, and every keyed command `f` returns, must share
    /// one slot, else [`Error::CrossSlot`] (and nothing of the transaction
    /// runs); so is a read `f` makes in another slot, which its node
    /// redirects. If the slot moves, the whole transaction starts again on
    /// the new master; while it is migrating (`ASK`), it waits and tries
    /// again.
    pub async fn watch_transaction<K: Arg, F: WatchFn>(
        &self,
        keys: &[K],
        f: F,
    ) -> Result<Vec<Value>, Error> {
        self.watch_transaction_with_retries(keys, crate::conn::WATCH_RETRIES, f)
            .await
    }

    /// [`watch_transaction`](Self::watch_transaction) with `max_retries`
    /// tries after the first when a watched key changes.
    pub async fn watch_transaction_with_retries<K: Arg, F: WatchFn>(
        &self,
        keys: &[K],
        max_retries: u32,
        mut f: F,
    ) -> Result<Vec<Value>, Error> {
        let slot = watch_slot(keys)?;
        self.watch_loop(slot, async |node: &Node, left| {
            let Some(conn) = node.via.connection() else {
                return Err(Error::Unsupported {
                    command: "WATCH".into(),
                    reason: "the node's connection is on another core: use CoreClient::watch_transaction",
                });
            };
            let checked = async |c: &Connection| check_watch(slot, f(c).await?);
            conn.with_timeout(left)
                .watch_transaction_with_retries(keys, max_retries, checked)
                .await
        })
        .await
    }

    /// Runs `try_on` (a whole watch transaction on a node's connection,
    /// given the time left) on the master of `slot` until it succeeds or
    /// fails for good: a `MOVED` starts it again on the new master, an
    /// `ASK` waits for the migration to end.
    pub(crate) async fn watch_loop<F>(&self, slot: u16, mut try_on: F) -> Result<Vec<Value>, Error>
    where
        F: AsyncFnMut(&Node, Duration) -> Result<Vec<Value>, Error>,
    {
        let mut attempt = self.attempt();
        loop {
            let node = match self.router.routes().node(Route::Slot(slot)) {
                Some(node) => node.clone(),
                None => {
                    self.router
                        .refresh_until(attempt.deadline)
                        .await
                        .map_err(|_| Error::SlotUnserved { slot })?;
                    continue;
                }
            };
            let err = match try_on(&node, attempt.left()).await {
                Ok(replies) => return Ok(replies),
                Err(e) => e,
            };
            match Step::of(&err) {
                // A redirect for another slot comes from a read `f` made
                // outside the watched slot: retrying cannot help.
                Step::Redirect(r) if r.slot != slot => {
                    return Err(Error::CrossSlot {
                        first: slot,
                        other: r.slot,
                    });
                }
                // WATCH cannot follow an ASK: wait for the migration to end.
                Step::Redirect(r) if r.kind == RedirectKind::Ask => {
                    self.router.backoff(&mut attempt, err).await?
                }
                _ => {
                    self.router.after_error(&node, err, &mut attempt).await?;
                    attempt.ask = None;
                }
            }
        }
    }

    pub(super) async fn count_by_slot<K: Arg>(&self, name: &str, keys: &[K]) -> Result<u64, Error> {
        let groups = by_slot(keys.iter().map(|k| k.with_bytes(key_slot)));
        let cmds: Vec<Cmd> = groups
            .iter()
            .map(|(_, idx)| cmd(name).args(idx.iter().map(|&i| &keys[i])))
            .collect();
        let mut total = 0;
        for reply in self.run_groups(&groups, &cmds).await? {
            total += u64::from_value(reply)?;
        }
        Ok(total)
    }

    /// Runs one command per slot group, side by side, with routing and
    /// retries; the replies in group order. When some groups fail, see
    /// [`super::fanout::combine_groups`]: a write that ran in some slots
    /// and failed in others is [`Error::Fanout`].
    async fn run_groups(
        &self,
        groups: &[(u16, Vec<usize>)],
        cmds: &[Cmd],
    ) -> Result<Vec<Value>, Error> {
        let deadline = self.deadline();
        let outs = join_all(groups.iter().zip(cmds).map(|((slot, _), c)| async move {
            let mut attempt = self.attempt_until(deadline);
            attempt.read_only = crate::cmd::is_read_only(c);
            attempt.read_from = self.read_from();
            let last: RefCell<Option<NodeAddr>> = RefCell::new(None);
            let out = self
                .router
                .run(
                    Route::Slot(*slot),
                    &mut attempt,
                    async |node, asking, timeout| {
                        *last.borrow_mut() = Some(node.addr.clone());
                        node.command(c, asking, timeout).await
                    },
                )
                .await;
            (last.into_inner(), out)
        }))
        .await;
        let writes = cmds.first().is_some_and(|c| !crate::cmd::is_read_only(c));
        let name = cmds
            .first()
            .and_then(|c| c.with_arg(0, |n| String::from_utf8_lossy(n).into_owned()))
            .unwrap_or_default();
        super::fanout::combine_groups(&name, writes, outs)
    }

    /// What the client knows of the cluster now.
    pub fn info(&self) -> ClusterInfo {
        let routes = self.router.routes();
        let mut slots: HashMap<&NodeAddr, Vec<(u16, u16)>> = HashMap::new();
        for (start, end, addr) in routes.map.ranges() {
            slots.entry(addr).or_default().push((start, end));
        }
        let pool: HashMap<NodeAddr, Rc<Node>> = self
            .router
            .nodes()
            .into_iter()
            .map(|n| (n.addr.clone(), n))
            .collect();
        let describe = |addr: &NodeAddr, id: Option<String>, role: Role, health: Health| {
            let node = pool.get(addr);
            let conn = node.and_then(|n| n.via.connection());
            let stats = conn.map(|c| c.stats()).unwrap_or_default();
            ClusterNodeInfo {
                addr: addr.clone(),
                id,
                role,
                health,
                slots: slots.get(addr).cloned().unwrap_or_default(),
                connected: conn.is_some_and(|c| c.is_connected()),
                commands: stats.calls,
                redirects: node.map_or(0, |n| n.redirects.get()),
                reconnects: stats.reconnects,
                stalls: stats.stalls,
                latency: node.and_then(|n| n.latency.get()),
                owner_core: node.and_then(|n| n.via.peer()),
            }
        };
        let mut nodes = Vec::new();
        if let Some(t) = self.router.topology.borrow().as_ref() {
            for shard in &t.shards {
                for n in shard.nodes() {
                    nodes.push(describe(&n.addr, Some(n.id.clone()), n.role, n.health));
                }
            }
        }
        for addr in routes.map.masters() {
            if !nodes.iter().any(|n| n.addr == *addr) {
                nodes.push(describe(addr, None, Role::Master, Health::Unknown));
            }
        }
        ClusterInfo {
            epoch: routes.map.epoch(),
            slots_covered: routes.map.coverage(),
            nodes,
            topology_changes: self.router.refresh.borrow().changes,
        }
    }

    /// Refreshes the topology now (merged with a refresh already asked
    /// for), and waits for it within the refresh timeout.
    pub async fn refresh(&self) -> Result<(), Error> {
        let config = &self.router.config;
        let deadline = Instant::now() + config.refresh_min_interval + config.refresh_timeout;
        self.router.refresh_until(deadline).await
    }

    /// The connection to each master the slot map routes to, for work on
    /// each master's own connection (`command` already sends `FLUSHALL`,
    /// `DBSIZE`, `SCRIPT LOAD`, ... to every master or node).
    /// On the per-core runtime, only the masters whose connection is on
    /// this core.
    pub fn master_connections(&self) -> Vec<(NodeAddr, Connection)> {
        let routes = self.router.routes();
        routes
            .masters
            .iter()
            .filter_map(|n| Some((n.addr.clone(), n.via.connection()?.clone())))
            .collect()
    }

    /// Closes every node connection; later calls fail with
    /// [`Error::Closed`]. Dropping the last handle does the same.
    pub fn close(&self) {
        self.router.close();
    }
}

/// The slot of a watch transaction's keys: one, else
/// [`Error::CrossSlot`].
pub(crate) fn watch_slot<K: Arg>(keys: &[K]) -> Result<u16, Error> {
    let Some(first) = keys.first() else {
        return Err(Error::MalformedCommand {
            command: "WATCH".into(),
            reason: "a watch transaction needs at least one key",
        });
    };
    let slot = first.with_bytes(key_slot);
    for k in keys {
        let other = k.with_bytes(key_slot);
        if other != slot {
            return Err(Error::CrossSlot { first: slot, other });
        }
    }
    Ok(slot)
}

/// What a watch transaction's function returned, refused with
/// [`Error::CrossSlot`] when a command it wants to run is in another slot.
pub(crate) fn check_watch(slot: u16, watch: Watch) -> Result<Watch, Error> {
    if let Watch::Exec(cmds) = &watch {
        for c in cmds {
            if let Route::Slot(other) = c.route()? {
                if other != slot {
                    return Err(Error::CrossSlot { first: slot, other });
                }
            }
        }
    }
    Ok(watch)
}

/// Whether a command refused with `e` is sent again (the reply proves it
/// was not applied: a redirect, `TRYAGAIN`, `CLUSTERDOWN`, ...): a
/// pipelined command, or a subscription placed on another node.
pub(super) fn must_go_again(e: &ServerError) -> bool {
    e.retry_action() != RetryAction::None
}

/// Whether the pipelined command `args`, routed by `route` and answered
/// `e` by `node`, is sent again: its reply proves it was not applied
/// ([`must_go_again`]), and for a script or function call that reply is
/// in the server's own words, not one the code raised after running
/// ([`super::code_refusal::refusal_is_genuine`]).
fn goes_again(args: &impl Args, route: Route, node: &Node, e: &ServerError) -> bool {
    must_go_again(e)
        && (!super::code_refusal::runs_code(args)
            || super::code_refusal::refusal_is_genuine(e, route, &node.addr))
}

/// The one slot of commands that must share one (keyless ones aside).
fn common_route(routes: impl IntoIterator<Item = Result<Route, Error>>) -> Result<Route, Error> {
    let mut common = Route::Keyless;
    for route in routes {
        match (common, route?) {
            (_, Route::Keyless) => {}
            (Route::Keyless, r) => common = r,
            (Route::Slot(first), Route::Slot(other)) if first != other => {
                return Err(Error::CrossSlot { first, other });
            }
            _ => {}
        }
    }
    Ok(common)
}

/// Indices grouped by slot, groups in order of first appearance.
fn by_slot(slots: impl Iterator<Item = u16>) -> Vec<(u16, Vec<usize>)> {
    let mut index: HashMap<u16, usize> = HashMap::new();
    let mut groups: Vec<(u16, Vec<usize>)> = Vec::new();
    for (i, slot) in slots.enumerate() {
        let g = *index.entry(slot).or_insert_with(|| {
            groups.push((slot, Vec::new()));
            groups.len() - 1
        });
        groups[g].1.push(i);
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_slot_or_cross_slot() {
        let slot = |k: &str| key_slot(k.as_bytes());
        let r = common_route([
            Ok(Route::Keyless),
            Ok(Route::Slot(slot("{a}1"))),
            Ok(Route::Slot(slot("{a}2"))),
        ]);
        assert_eq!(r.unwrap(), Route::Slot(slot("a")));
        assert_eq!(common_route([Ok(Route::Keyless)]).unwrap(), Route::Keyless);
        let e = common_route([Ok(Route::Slot(1)), Ok(Route::Slot(2))]).unwrap_err();
        assert!(matches!(e, Error::CrossSlot { first: 1, other: 2 }));
    }

    #[test]
    fn groups_keep_first_appearance_order() {
        let g = by_slot([5u16, 3, 5, 9, 3].into_iter());
        assert_eq!(g, [(5, vec![0, 2]), (3, vec![1, 4]), (9, vec![3])]);
    }
}
