//! Commands for more than one node: keyless commands whose policy sends
//! them to every master or every node (`DBSIZE`, `FLUSHALL`, `SCRIPT
//! LOAD`, `CONFIG SET`, ...), multi-key commands split per slot (`DEL`,
//! `MGET`, ...), and commands sent where the caller says ([`Target`]).
//!
//! Policies come from the servers' own command tips (`COMMAND INFO`, read
//! once per router after it connects) with the built-in table of
//! [`crate::cmd::policy`] behind them. Each node of a fan-out is asked
//! side by side, under the call's one deadline; a node that answers with
//! a refusal that proves the command was not applied (`LOADING`,
//! `TRYAGAIN`, `BUSY`) is asked again after a backoff; nothing that may
//! have been applied is sent again.

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;

use super::node::Node;
use super::router::{Attempt, Router, Step};
use super::{Cluster, Health, NodeAddr};
use crate::cmd::policy::{PolicyTable, RequestPolicy, ResponsePolicy, aggregate};
use crate::cmd::{Args, Route};
use crate::join::join_until;
use crate::{Commands, Error, FromValue, Value};

/// Where [`ClusterCommands::command_to`] sends a command.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Target {
    /// Every master the slot map routes to.
    AllMasters,
    /// Every master, and every replica the last topology listed that is
    /// not flagged as failed.
    AllNodes,
    /// This node (any address: it need not be known to the client). A
    /// redirect it answers is returned as it is, not followed.
    Node(NodeAddr),
    /// The master serving this slot (0..16384), redirects followed.
    Slot(u16),
    /// One master, chosen at random.
    RandomMaster,
}

/// The reply of each node a command went to, in the order the nodes were
/// asked (the masters in slot-map order, then the replicas).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct NodeReplies {
    /// Each node's address with its reply (a server error reply is
    /// `Err(Error::Server(..))`).
    pub replies: Vec<(NodeAddr, Result<Value, Error>)>,
}

impl NodeReplies {
    /// How many nodes were asked.
    pub fn len(&self) -> usize {
        self.replies.len()
    }

    /// True when no node was asked.
    pub fn is_empty(&self) -> bool {
        self.replies.is_empty()
    }

    /// The reply of `addr`, if it was asked.
    pub fn get(&self, addr: &NodeAddr) -> Option<&Result<Value, Error>> {
        self.replies.iter().find(|(a, _)| a == addr).map(|(_, r)| r)
    }
}

impl IntoIterator for NodeReplies {
    type Item = (NodeAddr, Result<Value, Error>);
    type IntoIter = std::vec::IntoIter<(NodeAddr, Result<Value, Error>)>;

    fn into_iter(self) -> Self::IntoIter {
        self.replies.into_iter()
    }
}

/// A command sent to several nodes failed on some of them
/// ([`Error::Fanout`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FanoutError {
    /// The command's name (and subcommand), as sent.
    pub command: String,
    /// The nodes that answered without an error: the command ran there.
    pub succeeded: Vec<NodeAddr>,
    /// The nodes that failed, each with its error.
    pub failed: Vec<(NodeAddr, Error)>,
    /// Whether a failed node may have applied the command (its error does
    /// not prove otherwise: see [`Error::maybe_applied`]).
    pub maybe_applied: bool,
}

impl std::fmt::Display for FanoutError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} failed on {} of {} nodes",
            self.command,
            self.failed.len(),
            self.failed.len() + self.succeeded.len()
        )?;
        for (addr, e) in &self.failed {
            write!(f, "; {addr}: {e}")?;
        }
        Ok(())
    }
}

/// Commands sent where the caller says, or to every node a command's
/// policy names, with the replies aggregated or one per node.
///
/// `Cluster::command` already routes by policy (`DBSIZE` sums over the
/// masters, `SCRIPT LOAD` reaches every node); these calls choose the
/// nodes instead.
pub trait ClusterCommands {
    /// Sends `args` to `target` and converts the answer. For
    /// [`Target::AllMasters`] and [`Target::AllNodes`] the replies combine
    /// by the command's response policy (a sum for `DBSIZE`, ...); a
    /// command with no policy, or a `special` one (`INFO`), gives a map
    /// from each node's `host:port` to its reply. Unless the policy is
    /// `one_succeeded`, any node failing fails the call with
    /// [`Error::Fanout`], which names the nodes that succeeded.
    fn command_to<T: FromValue>(
        &self,
        target: Target,
        args: impl Args,
    ) -> impl Future<Output = Result<T, Error>>;

    /// Sends `args` to `target` and returns every node's own reply (one
    /// entry for a single-node target); a node's failure is in its entry,
    /// not the call's result.
    fn per_node(
        &self,
        target: Target,
        args: impl Args,
    ) -> impl Future<Output = Result<NodeReplies, Error>>;
}

impl ClusterCommands for Cluster {
    async fn command_to<T: FromValue>(&self, target: Target, args: impl Args) -> Result<T, Error> {
        let value = match target {
            Target::AllMasters | Target::AllNodes => {
                let policy = self.router.policies().policy_of(&args);
                let response = policy.map_or(ResponsePolicy::Special, |p| p.response);
                let all = target == Target::AllNodes;
                let first_ok = response == ResponsePolicy::OneSucceeded;
                let replies = self
                    .fan_out_until(all, &args, self.deadline(), first_ok)
                    .await?;
                combine(&args, response, replies)?
            }
            single => {
                let mut replies = self.per_node(single, args).await?.replies;
                replies.pop().expect("one node").1?
            }
        };
        T::from_value(value)
    }

    async fn per_node(&self, target: Target, args: impl Args) -> Result<NodeReplies, Error> {
        let deadline = self.deadline();
        match target {
            Target::AllMasters => self.fan_out(false, &args, deadline).await,
            Target::AllNodes => self.fan_out(true, &args, deadline).await,
            Target::Node(addr) => {
                let node = self.router.node(&addr);
                let reply = on_node(&self.router, &node, &args, deadline).await;
                Ok(NodeReplies {
                    replies: vec![(addr, reply)],
                })
            }
            Target::Slot(slot) if slot >= crate::slot::SLOT_COUNT => Err(Error::MalformedCommand {
                command: name_of(&args),
                reason: "the target slot is not below 16384",
            }),
            Target::Slot(slot) => self.routed(Route::Slot(slot), &args, deadline).await,
            Target::RandomMaster => self.routed(Route::Keyless, &args, deadline).await,
        }
    }
}

impl Cluster {
    /// The command policies this client routes by: the servers' tips once
    /// read (shortly after connecting), the built-in table until then or
    /// when they could not be read.
    pub fn policies(&self) -> &PolicyTable {
        self.router.policies()
    }

    /// Starts reading the servers' command tips (`COMMAND INFO` on one
    /// master); until they are read the built-in table serves.
    pub(crate) fn read_policies_in_background(&self) {
        glommio::spawn_local(load_policies(self.router.clone())).detach();
    }

    /// `Cluster::command` of a keyless command: `Some` reply when its
    /// policy sends it to every master or node, `None` when it goes to
    /// one master as any keyless command. `PING` stays on one node,
    /// though its tip says every master: a connection check wants one
    /// answer, and redcore's node connections check themselves.
    pub(super) async fn command_by_policy<A: Args>(
        &self,
        args: &A,
    ) -> Result<Option<Value>, Error> {
        if args.with_arg(0, |n| n.eq_ignore_ascii_case(b"PING")) != Some(false) {
            return Ok(None);
        }
        let Some(policy) = self.router.policies().policy_of(args) else {
            return Ok(None);
        };
        let all = match policy.request {
            RequestPolicy::AllShards => false,
            RequestPolicy::AllNodes => true,
            _ => return Ok(None),
        };
        let first_ok = policy.response == ResponsePolicy::OneSucceeded;
        let replies = self
            .fan_out_until(all, args, self.deadline(), first_ok)
            .await?;
        combine(args, policy.response, replies).map(Some)
    }

    /// `Cluster::command` of a command whose keys span slots: the
    /// multi-shard commands whose key layout is known are split per slot
    /// and their replies combined (`DEL`, `UNLINK`, `EXISTS`, `TOUCH`:
    /// the sum; `MGET`: the values in key order; `MSET`: `OK`, each slot
    /// atomic, the whole not); any other command (`MSETNX` among them,
    /// which promises all or nothing) is refused with `cross_slot`, the
    /// [`Error::CrossSlot`] it met, and nothing is sent.
    pub(super) async fn command_across_slots<A: Args>(
        &self,
        args: &A,
        cross_slot: Error,
    ) -> Result<Value, Error> {
        let mut name = [0u8; 6];
        let known = args
            .with_arg(0, |n| {
                let upper = name.get_mut(..n.len())?;
                upper.copy_from_slice(n);
                upper.make_ascii_uppercase();
                Some(n.len())
            })
            .flatten();
        let Some(len) = known else {
            return Err(cross_slot);
        };
        let rest: Vec<Bytes> = (1..args.arg_count())
            .filter_map(|i| args.with_arg(i, Bytes::copy_from_slice))
            .collect();
        let count = |n: u64| Value::Integer(i64::try_from(n).unwrap_or(i64::MAX));
        match &name[..len] {
            b"DEL" | b"UNLINK" | b"EXISTS" | b"TOUCH" => {
                let name = std::str::from_utf8(&name[..len]).expect("ASCII");
                Ok(count(self.count_by_slot(name, &rest).await?))
            }
            b"MGET" => self.mget::<Value, _>(&rest).await,
            b"MSET" if rest.len() % 2 == 0 => {
                let pairs: Vec<(Bytes, Bytes)> = rest
                    .chunks_exact(2)
                    .map(|p| (p[0].clone(), p[1].clone()))
                    .collect();
                self.mset(&pairs).await?;
                Ok(Value::SimpleString(Bytes::from_static(b"OK")))
            }
            _ => Err(cross_slot),
        }
    }

    /// Sends `args` to every master (and with `all_nodes` every healthy
    /// replica too), side by side, until `deadline`.
    async fn fan_out<A: Args>(
        &self,
        all_nodes: bool,
        args: &A,
        deadline: Instant,
    ) -> Result<NodeReplies, Error> {
        self.fan_out_until(all_nodes, args, deadline, false).await
    }

    /// [`fan_out`](Self::fan_out); with `first_ok` (a `one_succeeded`
    /// command: `SCRIPT KILL`, `FUNCTION KILL`) it returns as soon as one
    /// node succeeds, with the replies of the nodes done by then (the
    /// others' calls are dropped: their replies are not waited for).
    async fn fan_out_until<A: Args>(
        &self,
        all_nodes: bool,
        args: &A,
        deadline: Instant,
        first_ok: bool,
    ) -> Result<NodeReplies, Error> {
        let mut nodes = self.targets(all_nodes);
        if nodes.is_empty() {
            // No master known yet: a refresh may find them.
            let _ = self.router.refresh_until(deadline).await;
            nodes = self.targets(all_nodes);
            if nodes.is_empty() {
                return Err(Error::SlotUnserved { slot: 0 });
            }
        }
        let router = &self.router;
        let replies = join_until(
            nodes
                .iter()
                .map(|n| async move { on_node(router, n, args, deadline).await }),
            |done| first_ok && done.iter().any(|r| matches!(r, Some(Ok(_)))),
        )
        .await;
        Ok(NodeReplies {
            replies: nodes
                .iter()
                .zip(replies)
                .filter_map(|(n, r)| Some((n.addr.clone(), r?)))
                .collect(),
        })
    }

    /// The masters routed to now, then (with `all_nodes`) the replicas of
    /// the last topology not flagged as failed.
    fn targets(&self, all_nodes: bool) -> Vec<Rc<Node>> {
        let mut nodes: Vec<Rc<Node>> = self.router.routes().masters.clone();
        if all_nodes {
            let replicas: Vec<NodeAddr> = self
                .router
                .topology
                .borrow()
                .as_ref()
                .map(|t| {
                    t.replicas()
                        .filter(|r| r.health != Health::Failed)
                        .map(|r| r.addr.clone())
                        .collect()
                })
                .unwrap_or_default();
            for addr in replicas {
                if !nodes.iter().any(|n| n.addr == addr) {
                    nodes.push(self.router.node(&addr));
                }
            }
        }
        nodes
    }

    /// Runs `args` on the node serving `route`, with the routing loop's
    /// redirects and retries; the node that answered with its reply.
    async fn routed<A: Args>(
        &self,
        route: Route,
        args: &A,
        deadline: Instant,
    ) -> Result<NodeReplies, Error> {
        let mut attempt = Attempt::new(deadline, false);
        attempt.read_only = crate::cmd::is_read_only(args);
        attempt.runs_code = super::code_refusal::runs_code(args);
        let last: RefCell<Option<NodeAddr>> = RefCell::new(None);
        let reply = self
            .router
            .run(route, &mut attempt, async |node, asking, timeout| {
                *last.borrow_mut() = Some(node.addr.clone());
                node.command(args, asking, timeout).await
            })
            .await;
        match last.into_inner() {
            Some(addr) => Ok(NodeReplies {
                replies: vec![(addr, reply)],
            }),
            // No node was tried: the call failed before reaching one.
            None => Err(reply.expect_err("a reply comes from a node")),
        }
    }
}

/// Runs `args` on `node` until `deadline`: a refusal that proves nothing
/// ran and asks for patience (`LOADING`, `TRYAGAIN`, `BUSY`) is tried
/// again after a backoff; an unreachable node or a cluster-state refusal
/// asks for a topology refresh and is this node's answer; anything else
/// is the answer as it is (never sent twice).
async fn on_node<A: Args>(
    router: &Router,
    node: &Node,
    args: &A,
    deadline: Instant,
) -> Result<Value, Error> {
    let mut attempt = Attempt::new(deadline, false);
    let runs_code = super::code_refusal::runs_code(args);
    loop {
        let left = attempt.left();
        if left.is_zero() {
            return Err(Error::Timeout {
                maybe_applied: false,
            });
        }
        let mut err = match node.command(args, false, Some(left)).await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        // A script's own error may read like a refusal: only the server's
        // own words are one.
        if let Error::Server(e) = err {
            if runs_code && !super::code_refusal::refusal_is_genuine(&e, Route::Keyless, &node.addr)
            {
                return Err(Error::ScriptError(e));
            }
            err = Error::Server(e);
        }
        match Step::of(&err) {
            Step::Backoff => router.backoff(&mut attempt, err).await?,
            Step::Refresh => {
                router.request_refresh();
                return Err(err);
            }
            _ => return Err(err),
        }
    }
}

/// Combines the replies of a fan-out by `policy`: an error naming the
/// failed nodes unless every one succeeded (or, for `one_succeeded`, one
/// did); for `special`, a map from each node's `host:port` to its reply.
/// `RANDOMKEY` is one key whatever its tip says (newer servers tip it
/// `special`): one of the nodes' non-nil replies, picked at random.
fn combine<A: Args>(
    args: &A,
    policy: ResponsePolicy,
    replies: NodeReplies,
) -> Result<Value, Error> {
    let policy = if args.with_arg(0, |n| n.eq_ignore_ascii_case(b"RANDOMKEY")) == Some(true) {
        ResponsePolicy::Default
    } else {
        policy
    };
    if policy == ResponsePolicy::OneSucceeded {
        if let Some(pos) = replies.replies.iter().position(|(_, r)| r.is_ok()) {
            let reply = replies.replies.into_iter().nth(pos).expect("an answer");
            return reply.1;
        }
    }
    let mut succeeded = Vec::new();
    let mut failed = Vec::new();
    let mut values = Vec::new();
    for (addr, reply) in replies {
        match reply {
            Ok(v) => {
                succeeded.push(addr.clone());
                values.push((addr, v));
            }
            Err(e) => failed.push((addr, e)),
        }
    }
    if !failed.is_empty() {
        let maybe_applied = failed.iter().any(|(_, e)| e.maybe_applied());
        return Err(Error::Fanout(Box::new(FanoutError {
            command: name_of(args),
            succeeded,
            failed,
            maybe_applied,
        })));
    }
    if policy == ResponsePolicy::Special {
        return Ok(Value::Map(
            values
                .into_iter()
                .map(|(addr, v)| (Value::BulkString(Bytes::from(addr.to_string())), v))
                .collect(),
        ));
    }
    aggregate(policy, values.into_iter().map(|(_, v)| v).collect())
}

/// The replies of a command split per slot (`MSET`, `DEL`, ... across
/// slots), each group's node (the last one it went to (`None` when it
/// reached none) with its outcome, in group order: every reply when all
/// succeeded; else the first error when none did, or when the command
/// only reads (sending a read again applies nothing twice). A write
/// that succeeded in some slots and failed in others is
/// [`Error::Fanout`] named `command`, listing the nodes that ran it and
/// each failed group's node with its error, so that it never says it is
/// safe to send again: part of it was applied. A failed group that
/// reached no node is listed under the address of an empty host and
/// port 0.
pub(super) fn combine_groups(
    command: &str,
    writes: bool,
    outs: Vec<(Option<NodeAddr>, Result<Value, Error>)>,
) -> Result<Vec<Value>, Error> {
    let some_ok = outs.iter().any(|(_, r)| r.is_ok());
    let some_failed = outs.iter().any(|(_, r)| r.is_err());
    if !(writes && some_ok && some_failed) {
        return outs.into_iter().map(|(_, r)| r).collect();
    }
    let mut succeeded: Vec<NodeAddr> = Vec::new();
    let mut failed = Vec::new();
    for (addr, reply) in outs {
        let addr = addr.unwrap_or_else(|| NodeAddr::new("", 0));
        match reply {
            Ok(_) if succeeded.contains(&addr) => {}
            Ok(_) => succeeded.push(addr),
            Err(e) => failed.push((addr, e)),
        }
    }
    let maybe_applied = failed.iter().any(|(_, e)| e.maybe_applied());
    Err(Error::Fanout(Box::new(FanoutError {
        command: command.to_owned(),
        succeeded,
        failed,
        maybe_applied,
    })))
}

/// The command's name, with its subcommand when it has one that the
/// policy tables know (`SCRIPT LOAD`), for errors.
fn name_of<A: Args>(args: &A) -> String {
    let arg = |i| args.with_arg(i, |a| String::from_utf8_lossy(a).into_owned());
    let name = arg(0).unwrap_or_default();
    match arg(1) {
        Some(sub)
            if crate::cmd::policy::builtin_policy(format!("{name}|{sub}").as_bytes()).is_some() =>
        {
            format!("{name} {sub}")
        }
        _ => name,
    }
}

impl Router {
    /// The command policies: the servers' tips once read, the built-in
    /// table until then (or when they could not be read).
    pub fn policies(&self) -> &PolicyTable {
        static BUILTIN: std::sync::OnceLock<PolicyTable> = std::sync::OnceLock::new();
        self.policies
            .get()
            .unwrap_or_else(|| BUILTIN.get_or_init(PolicyTable::builtin))
    }
}

/// Reads the command tips with `COMMAND INFO` from one master (one of
/// this router's own connections when it has one), once, and
/// keeps them on the router; the built-in table stays when that fails
/// (the error is logged).
async fn load_policies(router: Rc<Router>) {
    // A master this router connects to itself, when it has one: no hop
    // to another core for it.
    let routes = router.routes();
    let own = routes.masters.iter().find(|n| n.via.connection().is_some());
    let Some(node) = own.or_else(|| routes.node(Route::Keyless)).cloned() else {
        return;
    };
    drop(routes);
    let reply = node
        .command(&["COMMAND", "INFO"], false, Some(router.config.timeout()))
        .await;
    let table = reply.and_then(|v| PolicyTable::from_command_info(&v));
    match table {
        Ok(table) => {
            tracing::debug!(
                commands = table.len(),
                "command policies read from the tips"
            );
            let _ = router.policies.set(table);
        }
        Err(e) => {
            tracing::debug!(error = %e, "command tips unreadable: the built-in policies stay")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(port: u16) -> Option<NodeAddr> {
        Some(NodeAddr::new("127.0.0.1", port))
    }

    fn ok() -> Result<Value, Error> {
        Ok(Value::SimpleString(Bytes::from_static(b"OK")))
    }

    fn unserved() -> Result<Value, Error> {
        Err(Error::SlotUnserved { slot: 7 })
    }

    #[test]
    fn a_write_applied_in_some_slots_only_is_a_fanout_error_never_safe_to_retry() {
        let outs = vec![
            (node(7000), ok()),
            (node(7000), ok()),
            (None, unserved()),
            (node(7002), Err(Error::ConnectionLost)),
        ];
        let Err(Error::Fanout(e)) = combine_groups("MSET", true, outs) else {
            panic!("a fan-out error");
        };
        assert_eq!(e.command, "MSET");
        assert_eq!(e.succeeded, [NodeAddr::new("127.0.0.1", 7000)]);
        assert_eq!(e.failed.len(), 2);
        assert_eq!(e.failed[0].0, NodeAddr::new("", 0));
        assert!(matches!(e.failed[0].1, Error::SlotUnserved { slot: 7 }));
        assert_eq!(e.failed[1].0, NodeAddr::new("127.0.0.1", 7002));
        assert!(e.maybe_applied);

        // Only errors that prove nothing ran where they failed: still not
        // safe, the other slots ran.
        let outs = vec![(node(7000), ok()), (None, unserved())];
        let e = combine_groups("DEL", true, outs).unwrap_err();
        assert!(matches!(&e, Error::Fanout(f) if !f.maybe_applied));
        assert!(!e.is_safe_to_retry());
        assert!(e.maybe_applied());
    }

    #[test]
    fn randomkey_is_one_non_nil_key_whatever_its_tip() {
        let key = Value::BulkString(Bytes::from_static(b"k"));
        for policy in [ResponsePolicy::Special, ResponsePolicy::Default] {
            let replies = NodeReplies {
                replies: vec![
                    (NodeAddr::new("127.0.0.1", 7000), Ok(Value::Nil)),
                    (NodeAddr::new("127.0.0.1", 7001), Ok(key.clone())),
                    (NodeAddr::new("127.0.0.1", 7002), Ok(Value::Nil)),
                ],
            };
            assert_eq!(combine(&["randomkey"], policy, replies).unwrap(), key);
        }
        let empty = NodeReplies {
            replies: vec![(NodeAddr::new("127.0.0.1", 7000), Ok(Value::Nil))],
        };
        let reply = combine(&["RANDOMKEY"], ResponsePolicy::Special, empty).unwrap();
        assert_eq!(reply, Value::Nil);
    }

    #[test]
    fn nothing_applied_or_a_read_keeps_the_first_error_and_all_ok_the_replies() {
        let outs = vec![(None, unserved()), (node(7001), Err(Error::ConnectionLost))];
        let e = combine_groups("MSET", true, outs).unwrap_err();
        assert!(matches!(e, Error::SlotUnserved { slot: 7 }), "{e:?}");
        assert!(e.is_safe_to_retry());

        let outs = vec![(node(7000), ok()), (None, unserved())];
        let e = combine_groups("MGET", false, outs).unwrap_err();
        assert!(matches!(e, Error::SlotUnserved { slot: 7 }), "{e:?}");

        let outs = vec![(node(7000), ok()), (node(7001), ok())];
        assert_eq!(combine_groups("MSET", true, outs).unwrap().len(), 2);
    }
}
