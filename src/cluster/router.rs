//! The routing state of one cluster client on one core: the node
//! connections, the current slot map with a connection per master, and the
//! retry loop that follows MOVED/ASK and waits out failovers.
//!
//! Nothing here knows how many cores there are. A router reaches each node
//! through its own connection or through the peer that owns the node
//! ([`Peers`]); the per-core runtime gives each core a router whose peers
//! are the other cores.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::health::SilenceSignal;
use super::node::{Node, PeerLink, Via};
use super::peers::{NodeOp, NodeReply, Peers};
use super::refresh::RefreshState;
use super::{NodeAddr, SlotMap, Topology};
use crate::cmd::Route;
use crate::config::{ClusterConfig, ReadFrom};
use crate::conn::cache::Cache;
use crate::error::{Redirect, RedirectKind, RetryAction};
use crate::{Connection, Error, Value};

/// A slot map with the node of each of its masters, replaced whole.
pub(crate) struct Routes {
    pub map: SlotMap,
    /// `masters[i]` serves the slots `map` gives master `i`.
    pub masters: Vec<Rc<Node>>,
    /// `replicas[i]` are the replicas of `masters[i]`, for reads (see
    /// [`super::replicas`]).
    pub replicas: Vec<Vec<Rc<Node>>>,
}

impl Routes {
    /// The node serving `route`: the slot's master, or for a keyless
    /// command any master.
    pub fn node(&self, route: Route) -> Option<&Rc<Node>> {
        match route {
            Route::Slot(slot) => self.masters.get(self.map.master_index(slot)?),
            Route::Keyless => {
                if self.masters.is_empty() {
                    None
                } else {
                    self.masters.get(fastrand::usize(..self.masters.len()))
                }
            }
        }
    }
}

/// What to do after an error, read from the error alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// MOVED (the slot moved for good: correct the map and go there) or
    /// ASK (the slot is migrating: ask the target once, with `ASKING`).
    Redirect(Redirect),
    /// Retry the same route after a delay (`TRYAGAIN`, `LOADING`, `BUSY`).
    Backoff,
    /// Refresh the topology, then retry: the node is unreachable (the
    /// command was not sent), or the cluster changed (`CLUSTERDOWN`,
    /// `READONLY`, `MASTERDOWN`).
    Refresh,
    /// Hand the error to the caller.
    Fail,
}

impl Step {
    /// The step for `err`, from its retry action: every retrying step is
    /// taken only when the error proves the command was not applied (a
    /// redirect or refusal reply, or a call that never reached the node).
    pub fn of(err: &Error) -> Step {
        match err.retry_action() {
            RetryAction::Redirect(r) => Step::Redirect(r),
            RetryAction::RetryAfterBackoff => Step::Backoff,
            RetryAction::RefreshThenRetry => Step::Refresh,
            _ => Step::Fail,
        }
    }
}

/// The state of one call across its tries.
pub(crate) struct Attempt {
    pub deadline: Instant,
    pub redirects: u32,
    backoffs: u32,
    /// Set after an ASK: the node to ask, with `ASKING`, on the next try.
    pub ask: Option<Rc<Node>>,
    /// The node connection's own timeout is this call's deadline: the
    /// call has the configured timeout and no try has failed yet, so the
    /// first try needs no deadline of its own (the hot path).
    own_timeout: bool,
    /// The command only reads ([`is_read_only`](crate::cmd::is_read_only)):
    /// it is sent again after a connection lost in flight, which could not
    /// have applied anything.
    pub read_only: bool,
    /// The command runs a script or function: a refusal is retried only
    /// in the server's own words ([`super::code_refusal`]).
    pub runs_code: bool,
    /// Where the call goes when it only reads.
    pub read_from: ReadFrom,
    /// A replica was tried (or none was to be): the rest goes to masters.
    pub replica_done: bool,
}

impl Attempt {
    /// A call ending at `deadline`; `own_timeout` when that is the
    /// configured timeout from now, which the node connections apply by
    /// themselves.
    pub fn new(deadline: Instant, own_timeout: bool) -> Attempt {
        Attempt {
            deadline,
            redirects: 0,
            backoffs: 0,
            ask: None,
            own_timeout,
            read_only: false,
            runs_code: false,
            read_from: ReadFrom::Primary,
            replica_done: false,
        }
    }

    /// From now on every try gets the time left as its own deadline.
    pub fn own_timeout_off(&mut self) {
        self.own_timeout = false;
    }

    /// Time left before the deadline.
    pub fn left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
}

/// The state one cluster client keeps on one core.
pub(crate) struct Router {
    pub config: ClusterConfig,
    tls: Option<Arc<rustls::ClientConfig>>,
    routes: RefCell<Rc<Routes>>,
    nodes: RefCell<HashMap<NodeAddr, Rc<Node>>>,
    /// The last topology a refresh accepted (for `info`).
    pub topology: RefCell<Option<Rc<Topology>>>,
    pub epoch: Cell<u64>,
    pub refresh: RefCell<RefreshState>,
    /// Set when the servers answered `CLUSTER SHARDS` with an unknown
    /// command error: ask `CLUSTER SLOTS` from then on.
    pub shards_unsupported: Cell<bool>,
    pub closed: Cell<bool>,
    /// Raised by a node connection of this core whose socket went silent.
    pub silence: Rc<SilenceSignal>,
    /// The routers this one shares the cluster with: nodes they own are
    /// reached through them; the one that leads refreshes runs them, and
    /// their results, like `MOVED` corrections, reach every router.
    pub peers: Rc<dyn Peers>,
    /// The cluster subscriptions of this client (see [`super::pubsub`]).
    pub pubsub: super::pubsub::Followers,
    /// Connections opened for subscriptions only, to nodes a peer owns.
    pubsub_links: RefCell<HashMap<NodeAddr, Connection>>,
    /// What the replica strategies keep between calls.
    pub replica_state: super::replicas::ReplicaState,
    /// The command policies read from the servers' tips (see
    /// [`super::fanout`]); unset until read.
    pub policies: std::cell::OnceCell<crate::cmd::policy::PolicyTable>,
    /// The client-side cache of this router's cached reads, when the node
    /// template asks for one: its master connections track for it (see
    /// [`super::caching`]).
    pub cache: Option<Rc<Cache>>,
}

impl Router {
    pub fn new(config: ClusterConfig, peers: Rc<dyn Peers>) -> Result<Router, Error> {
        let tls = config
            .node
            .tls
            .as_ref()
            .map(crate::conn::tls::client_config)
            .transpose()?;
        Ok(Router {
            cache: config.node.cache.clone().map(Cache::new),
            config,
            tls,
            routes: RefCell::new(Rc::new(Routes {
                map: SlotMap::empty(0),
                masters: Vec::new(),
                replicas: Vec::new(),
            })),
            nodes: RefCell::new(HashMap::new()),
            topology: RefCell::new(None),
            epoch: Cell::new(0),
            refresh: RefCell::new(RefreshState::default()),
            shards_unsupported: Cell::new(false),
            closed: Cell::new(false),
            silence: Rc::default(),
            peers,
            pubsub: Default::default(),
            pubsub_links: RefCell::new(HashMap::new()),
            replica_state: Default::default(),
            policies: std::cell::OnceCell::new(),
        })
    }

    /// The current routes.
    #[inline]
    pub fn routes(&self) -> Rc<Routes> {
        self.routes.borrow().clone()
    }

    /// The node at `addr`, opening a connection to it on first use (or
    /// linking it to the peer that owns it).
    pub fn node(&self, addr: &NodeAddr) -> Rc<Node> {
        let routes = self.routes();
        self.node_among(addr, &routes.map)
    }

    /// [`node`](Self::node), with ownership (and whether the connection
    /// is a replica's, sending `READONLY`) decided by `map`.
    fn node_among(&self, addr: &NodeAddr, map: &SlotMap) -> Rc<Node> {
        if let Some(n) = self.nodes.borrow().get(addr) {
            return n.clone();
        }
        let owner = self.owner_in(addr, map);
        self.add_node(addr, owner, map.is_replica(addr))
    }

    /// The peer owning `addr` under `map`: a master by its place among the
    /// masters, a replica by its place among the replicas (so the peers
    /// share both evenly), anything else as the peers decide.
    fn owner_in(&self, addr: &NodeAddr, map: &SlotMap) -> Option<usize> {
        if map.is_replica(addr) {
            let replicas: Vec<NodeAddr> = map.replicas().cloned().collect();
            self.peers.owner(addr, &replicas)
        } else {
            self.peers.owner(addr, map.masters())
        }
    }

    /// Adds `addr` to the pool, reached through peer `owner`, or through a
    /// connection of this router's own (sending `READONLY` when
    /// `readonly`: a replica's).
    fn add_node(&self, addr: &NodeAddr, owner: Option<usize>, readonly: bool) -> Rc<Node> {
        let via = match owner {
            Some(peer) => Via::Peer(PeerLink {
                peer,
                peers: self.peers.clone(),
                timeout: self.config.node.timeout,
                cache: self.cache.clone(),
            }),
            None => {
                let silence = self.silence.clone();
                let mut config = self.config.node_config(addr);
                config.readonly = readonly;
                // Cached reads go to masters only: a replica's socket
                // tracks nothing.
                let cache = if readonly {
                    config.cache = None;
                    None
                } else {
                    self.cache.clone()
                };
                Via::Connection(Connection::open_node(
                    config,
                    self.tls.clone(),
                    Box::new(move || silence.raise()),
                    cache,
                ))
            }
        };
        let node = Rc::new(Node {
            addr: addr.clone(),
            via,
            redirects: Cell::new(0),
            skip_until: Cell::new(None),
            latency: Cell::new(None),
        });
        self.nodes.borrow_mut().insert(addr.clone(), node.clone());
        node
    }

    /// This router's own connection to `addr`, for work a peer handed
    /// over: a router serves what it is asked even while its view of who
    /// owns what differs from the sender's.
    fn own_connection(&self, addr: &NodeAddr) -> Result<Connection, Error> {
        if self.closed.get() {
            return Err(Error::Closed("the cluster client was closed"));
        }
        let known = self.nodes.borrow().get(addr).cloned();
        let node = match known {
            Some(n) if n.via.connection().is_some() => n,
            _ => self.add_node(addr, None, self.routes().map.is_replica(addr)),
        };
        Ok(node.via.connection().expect("an own connection").clone())
    }

    /// A connection of this router's own to `addr` for subscriptions: the
    /// node's connection when this router has one, else one opened for
    /// subscriptions alone (a peer owns the node).
    pub fn subscriber_connection(&self, addr: &NodeAddr) -> Result<Connection, Error> {
        if self.closed.get() {
            return Err(Error::Closed("the cluster client was closed"));
        }
        if let Some(c) = self.node(addr).via.connection() {
            return Ok(c.clone());
        }
        let mut links = self.pubsub_links.borrow_mut();
        let link = links.entry(addr.clone()).or_insert_with(|| {
            let silence = self.silence.clone();
            let mut config = self.config.node_config(addr);
            config.cache = None;
            Connection::open_node(
                config,
                self.tls.clone(),
                Box::new(move || silence.raise()),
                None,
            )
        });
        Ok(link.clone())
    }

    /// Runs `op` on this router's own connection to `addr` before
    /// `deadline`, for a peer that handed it over.
    pub async fn serve(
        &self,
        addr: &NodeAddr,
        deadline: Instant,
        op: NodeOp,
        from: usize,
    ) -> Result<NodeReply, Error> {
        if let (NodeOp::Tracked(_), Some(cache)) = (&op, &self.cache) {
            cache.note_interest(cache.tracker(&addr.to_string()), from);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::Timeout {
                maybe_applied: false,
            });
        }
        let conn = self.own_connection(addr)?.with_timeout(left);
        super::node::run_op(&conn, op).await
    }

    /// Every node with a connection.
    pub fn nodes(&self) -> Vec<Rc<Node>> {
        self.nodes.borrow().values().cloned().collect()
    }

    /// The next epoch.
    pub fn next_epoch(&self) -> u64 {
        let e = self.epoch.get() + 1;
        self.epoch.set(e);
        e
    }

    /// Makes `map` the current routes. A node whose owner changed with
    /// the new master or replica list (only ever with peers), or a demoted
    /// master whose connection lacks `READONLY`, is linked anew; calls in
    /// flight on the old link finish there.
    pub fn install(&self, map: SlotMap) {
        if let Some(cache) = &self.cache {
            super::caching::drop_moved_slots(cache, &self.routes().map, &map);
        }
        self.give_up_demoted(map.masters());
        let relink: Vec<(NodeAddr, Option<usize>, bool)> = self
            .nodes
            .borrow()
            .values()
            .filter_map(|n| {
                let owner = self.owner_in(&n.addr, &map);
                let replica = map.is_replica(&n.addr);
                // A connection's READONLY must follow its node's role: a
                // demoted master's must send it to serve replica reads,
                // and a promoted replica's must drop it, or, demoted again
                // while the map still names it a master, it would answer
                // reads meant for a master from its replica data instead
                // of redirecting them.
                let wrong_mode = n
                    .via
                    .connection()
                    .is_some_and(|c| c.config().readonly != replica);
                (n.via.peer() != owner || wrong_mode).then(|| (n.addr.clone(), owner, replica))
            })
            .collect();
        for (addr, owner, replica) in relink {
            self.add_node(&addr, owner, replica);
        }
        let masters = map
            .masters()
            .iter()
            .map(|a| self.node_among(a, &map))
            .collect();
        let replicas = self.replica_nodes(&map);
        *self.routes.borrow_mut() = Rc::new(Routes {
            map,
            masters,
            replicas,
        });
        self.pubsub.signal.raise();
    }

    /// The nodes of each master's replicas in `map`, once some call wanted
    /// replica reads (until then, none: no connection to a replica opens).
    pub(super) fn replica_nodes(&self, map: &SlotMap) -> Vec<Vec<Rc<Node>>> {
        if !self.replica_state.wanted() {
            return Vec::new();
        }
        (0..map.masters().len())
            .map(|i| {
                map.replicas_of(i)
                    .iter()
                    .map(|a| self.node_among(a, map))
                    .collect()
            })
            .collect()
    }

    /// Replaces the current routes with the same map and masters and the
    /// replica lists `replicas`.
    pub(super) fn set_replicas(&self, replicas: Vec<Vec<Rc<Node>>>) {
        let current = self.routes();
        *self.routes.borrow_mut() = Rc::new(Routes {
            map: current.map.clone(),
            masters: current.masters.clone(),
            replicas,
        });
    }

    /// Applies a MOVED: `slot` is served by `addr` from now on.
    pub fn apply_moved(&self, slot: u16, addr: NodeAddr) {
        let current = self.routes();
        if current.map.master_for_slot(slot) == Some(&addr) {
            // Another call taught the same already.
            return;
        }
        let map = current.map.with_moved(slot, addr, self.next_epoch());
        self.install(map);
    }

    /// Drops the connections of nodes that are neither routed to nor
    /// listed as healthy (calls in flight keep theirs until they finish).
    pub fn prune(&self, keep: &[NodeAddr]) {
        let routes = self.routes();
        self.nodes
            .borrow_mut()
            .retain(|addr, _| keep.contains(addr) || routes.map.masters().contains(addr));
    }

    /// Closes every node connection.
    pub fn close(&self) {
        self.closed.set(true);
        for node in self.nodes.borrow_mut().drain() {
            if let Some(c) = node.1.via.connection() {
                c.close();
            }
        }
        for (_, link) in self.pubsub_links.borrow_mut().drain() {
            link.close();
        }
        self.pubsub.signal.raise();
        super::refresh::wake_all(self);
        self.silence.raise();
    }

    /// Runs `op` on the node serving `route`, following redirects and
    /// retrying what is safe to retry, all before `attempt.deadline`.
    /// `op` gets the node, whether to send `ASKING` first, and the time
    /// left (`None` when the connection's own timeout is the call's
    /// deadline: a first try with the configured timeout).
    pub async fn run<F>(&self, route: Route, attempt: &mut Attempt, op: F) -> Result<Value, Error>
    where
        F: AsyncFn(&Node, bool, Option<Duration>) -> Result<Value, Error>,
    {
        loop {
            if let Some(value) = self.read_from_replica(route, attempt, &op).await? {
                return Ok(value);
            }
            let (node, asking) = match attempt.ask.take() {
                Some(node) => (node, true),
                None => match self.routes().node(route) {
                    Some(node) => (node.clone(), false),
                    None => {
                        // A hole in the map: a failover or a reshard may be
                        // filling it; ask again until the deadline.
                        let unserved = Error::SlotUnserved {
                            slot: match route {
                                Route::Slot(slot) => slot,
                                Route::Keyless => 0,
                            },
                        };
                        if attempt.left().is_zero() {
                            return Err(unserved);
                        }
                        self.refresh_until(attempt.deadline)
                            .await
                            .map_err(|_| unserved)?;
                        continue;
                    }
                },
            };
            let result = if attempt.own_timeout && !asking {
                // The connection's own timeout is the call's deadline.
                op(&node, false, None).await
            } else {
                let left = attempt.left();
                if left.is_zero() {
                    return Err(Error::Timeout {
                        maybe_applied: false,
                    });
                }
                op(&node, asking, Some(left)).await
            };
            match result {
                Ok(v) => return Ok(v),
                Err(Error::Server(e))
                    if attempt.runs_code
                        && !super::code_refusal::refusal_is_genuine(&e, route, &node.addr) =>
                {
                    return Err(Error::ScriptError(e));
                }
                Err(e) => self.after_error(&node, e, attempt).await?,
            }
        }
    }

    /// Decides what to do about `err`, which `node` returned: returns
    /// `Ok` to try again (with the map corrected or `attempt.ask` set), or
    /// the error to hand to the caller.
    pub async fn after_error(
        &self,
        node: &Node,
        err: Error,
        attempt: &mut Attempt,
    ) -> Result<(), Error> {
        attempt.own_timeout = false;
        let step = match Step::of(&err) {
            // A read lost in flight changed nothing: the node may be gone
            // (a failover), so it goes again after a refresh.
            Step::Fail if attempt.read_only && matches!(err, Error::ConnectionLost) => {
                Step::Refresh
            }
            // Written, then no reply in time: the node may have gone
            // silent. The caller gets the timeout; the topology is checked.
            step @ Step::Fail
                if matches!(
                    err,
                    Error::Timeout {
                        maybe_applied: true
                    }
                ) =>
            {
                self.request_refresh();
                step
            }
            step => step,
        };
        match step {
            Step::Redirect(r) => {
                node.redirects.set(node.redirects.get() + 1);
                attempt.redirects += 1;
                if attempt.redirects > self.config.max_redirects {
                    let Error::Server(last) = err else {
                        unreachable!("only a server reply redirects")
                    };
                    return Err(Error::TooManyRedirects {
                        redirects: attempt.redirects - 1,
                        last,
                    });
                }
                let target = NodeAddr::from_redirect(&r, &node.addr);
                if r.kind == RedirectKind::Moved {
                    tracing::debug!(slot = r.slot, to = %target, "MOVED");
                    self.apply_moved(r.slot, target.clone());
                    self.peers.spread_moved(r.slot, &target);
                    self.request_refresh();
                } else {
                    tracing::trace!(slot = r.slot, to = %target, "ASK");
                    attempt.ask = Some(self.node(&target));
                }
                Ok(())
            }
            Step::Backoff => self.backoff(attempt, err).await,
            Step::Refresh => {
                tracing::debug!(node = %node.addr, error = %err, "refreshing the topology before retrying");
                if self.refresh_until(attempt.deadline).await.is_err() {
                    return Err(err);
                }
                // Too little time left for another try to mean anything:
                // the refusal says more than a timeout would.
                if attempt.left() < self.config.retry_backoff_initial {
                    return Err(err);
                }
                Ok(())
            }
            Step::Fail => Err(err),
        }
    }
}

impl Router {
    /// Waits before trying again after `err`: the retry delay, doubling
    /// with each retry of the call. `err` when the deadline would pass
    /// first.
    pub async fn backoff(&self, attempt: &mut Attempt, err: Error) -> Result<(), Error> {
        attempt.own_timeout = false;
        let delay = self
            .config
            .retry_backoff_initial
            .saturating_mul(1 << attempt.backoffs.min(16))
            .min(self.config.retry_backoff_max);
        attempt.backoffs += 1;
        if delay >= attempt.left() {
            return Err(err);
        }
        glommio::timer::sleep(delay).await;
        Ok(())
    }
}

pub(crate) use crate::join::{join_all, join_until};

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::error::ServerError;

    fn server(text: &'static str) -> Error {
        Error::Server(ServerError::new(Bytes::from_static(text.as_bytes())))
    }

    #[test]
    fn steps_follow_the_error() {
        assert!(matches!(
            Step::of(&server("MOVED 3999 127.0.0.1:7001")),
            Step::Redirect(r)
                if r.kind == RedirectKind::Moved && r.slot == 3999 && r.port == 7001
        ));
        assert!(matches!(
            Step::of(&server("ASK 3999 :7002")),
            Step::Redirect(r) if r.kind == RedirectKind::Ask && r.host.is_empty() && r.port == 7002
        ));
        assert_eq!(
            Step::of(&server(
                "TRYAGAIN Multiple keys request during rehashing of slot"
            )),
            Step::Backoff
        );
        assert_eq!(
            Step::of(&server("LOADING Redis is loading the dataset in memory")),
            Step::Backoff
        );
        assert_eq!(
            Step::of(&server("CLUSTERDOWN The cluster is down")),
            Step::Refresh
        );
        assert_eq!(
            Step::of(&server(
                "READONLY You can't write against a read only replica."
            )),
            Step::Refresh
        );
        assert_eq!(
            Step::of(&Error::Connect {
                addr: "h:1".into(),
                reason: "refused".into(),
                unsent_command: true,
            }),
            Step::Refresh
        );
        // Nothing that may have been applied is ever retried.
        assert_eq!(Step::of(&Error::ConnectionLost), Step::Fail);
        assert_eq!(
            Step::of(&Error::Timeout {
                maybe_applied: true
            }),
            Step::Fail
        );
        assert_eq!(
            Step::of(&server("ERR wrong number of arguments")),
            Step::Fail
        );
        assert_eq!(Step::of(&server("MOVED garbage")), Step::Fail);
    }
}
