//! Topology refreshes: asking nodes for `CLUSTER SHARDS` (or `CLUSTER
//! SLOTS`), choosing the best answer, and installing it as the new slot
//! map.
//!
//! One task per client runs the refreshes, so at most one is in flight.
//! Callers only ask for one ([`Router::request_refresh`]) or wait for one
//! that starts after they asked ([`Router::refresh_until`]): requests that
//! arrive together are served by one refresh, and refreshes start at least
//! `refresh_min_interval` apart. Each has its own deadline
//! (`refresh_timeout`) and asks `refresh_fanout` nodes at a time. Commands
//! to shards whose routes did not change never wait for a refresh.

use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use glommio::timer::Timer;

use super::router::{Router, join_until};
use super::{Health, NodeAddr, SlotMap, Topology};
use crate::Error;
use crate::slot::SLOT_COUNT;

/// Where the refresh task is, and who waits for it.
#[derive(Default)]
pub(crate) struct RefreshState {
    /// A refresh was asked for since the last one started.
    requested: bool,
    started: u64,
    completed: u64,
    last_start: Option<Instant>,
    last_outcome: Option<Result<(), Error>>,
    task: Option<Waker>,
    waiters: Vec<Waker>,
    /// Refreshes that installed a changed slot map.
    pub changes: u64,
}

/// Wakes the refresh task and every waiter (the client is closing).
pub(crate) fn wake_all(router: &Router) {
    let mut st = router.refresh.borrow_mut();
    if let Some(w) = st.task.take() {
        w.wake();
    }
    for w in st.waiters.drain(..) {
        w.wake();
    }
}

impl Router {
    /// Asks for a refresh soon, without waiting for it. With peers, the
    /// one that leads refreshes runs it for all.
    pub fn request_refresh(&self) {
        if self.peers.ask_leader_to_refresh() {
            return;
        }
        let mut st = self.refresh.borrow_mut();
        st.requested = true;
        if let Some(w) = st.task.take() {
            w.wake();
        }
    }

    /// Asks for a refresh and waits, until `deadline`, for one that starts
    /// after now; its error if it failed.
    pub async fn refresh_until(&self, deadline: Instant) -> Result<(), Error> {
        if let Some(led) = self.peers.leader_refresh(deadline) {
            return led.await;
        }
        let ticket = {
            let st = self.refresh.borrow();
            st.started + 1
        };
        self.request_refresh();
        let done = poll_fn(|cx| {
            if self.closed.get() {
                return Poll::Ready(Err(Error::Closed("the cluster client was closed")));
            }
            let mut st = self.refresh.borrow_mut();
            if st.completed >= ticket {
                return Poll::Ready(st.last_outcome.clone().unwrap_or(Ok(())));
            }
            if !st.waiters.iter().any(|w| w.will_wake(cx.waker())) {
                st.waiters.push(cx.waker().clone());
            }
            Poll::Pending
        });
        let left = deadline.saturating_duration_since(Instant::now());
        futures_lite::future::or(done, async {
            Timer::new(left).await;
            Err(Error::Timeout {
                maybe_applied: false,
            })
        })
        .await
    }

    /// Asks the seeds for the topology, within the call timeout, and
    /// installs it.
    pub async fn discover(&self) -> Result<(), Error> {
        let deadline = Instant::now() + self.config.timeout();
        self.refresh.borrow_mut().last_start = Some(Instant::now());
        let seeds = self.config.seeds.clone();
        let topology = self.query(&seeds, deadline).await?;
        self.accept(topology);
        self.publish();
        // The first map is not a change.
        self.refresh.borrow_mut().changes = 0;
        Ok(())
    }

    /// One refresh: asks known nodes, masters first, and installs the best
    /// answer.
    async fn refresh_once(&self) -> Result<(), Error> {
        let deadline = Instant::now() + self.config.refresh_timeout;
        let candidates = self.refresh_candidates();
        let topology = self.query(&candidates, deadline).await?;
        self.accept(topology);
        self.publish();
        Ok(())
    }

    /// Gives the peers the topology this router's refresh just accepted.
    fn publish(&self) {
        if let Some(t) = self.topology.borrow().as_ref() {
            self.peers.publish(t, self.routes().map.epoch());
        }
    }

    /// The nodes a refresh asks, in order: the masters routed to now,
    /// then every other healthy node the last topology listed, then the
    /// seeds; each group shuffled so that load spreads; nodes whose
    /// connection on this core is silent go last.
    fn refresh_candidates(&self) -> Vec<NodeAddr> {
        let mut out: Vec<NodeAddr> = Vec::new();
        let push_group = |mut group: Vec<NodeAddr>, out: &mut Vec<NodeAddr>| {
            fastrand::shuffle(&mut group);
            for a in group {
                if !out.contains(&a) {
                    out.push(a);
                }
            }
        };
        push_group(self.routes().map.masters().to_vec(), &mut out);
        if let Some(t) = self.topology.borrow().as_ref() {
            let others = t
                .nodes()
                .filter(|n| n.health != Health::Failed)
                .map(|n| n.addr.clone())
                .collect();
            push_group(others, &mut out);
        }
        push_group(self.config.seeds.clone(), &mut out);
        // Silent nodes last: their connections refuse the query at once,
        // but a group waits for all its answers.
        let silent = self.silent_nodes();
        out.sort_by_key(|a| silent.contains(a));
        out
    }

    /// Asks `candidates`, `refresh_fanout` at a time, until one group
    /// gives an answer or the deadline passes; of a group's answers, the
    /// one whose healthy masters cover the most slots wins.
    async fn query(&self, candidates: &[NodeAddr], deadline: Instant) -> Result<Topology, Error> {
        let mut tried = Vec::new();
        for group in candidates.chunks(self.config.refresh_fanout) {
            if Instant::now() >= deadline {
                break;
            }
            // A silent node must not hold up an answer with a healthy
            // master for every slot: that one is taken at once.
            let answers = join_until(group.iter().map(|a| self.fetch(a, deadline)), |answers| {
                answers
                    .iter()
                    .any(|a| matches!(a, Some(Ok(t)) if score(t).0 == usize::from(SLOT_COUNT)))
            })
            .await;
            let mut best: Option<Topology> = None;
            for (addr, answer) in group.iter().zip(answers) {
                let Some(answer) = answer else {
                    continue;
                };
                match answer {
                    Ok(t) if best.as_ref().is_none_or(|b| score(&t) > score(b)) => best = Some(t),
                    Ok(_) => {}
                    // Why the node could not be reached; that the query
                    // was not sent goes without saying.
                    Err(Error::Connect { reason, .. }) => tried.push(format!("{addr}: {reason}")),
                    Err(e) => tried.push(format!("{addr}: {e}")),
                }
            }
            if let Some(t) = best {
                return Ok(t);
            }
        }
        if tried.len() < candidates.len() {
            tried.push(format!(
                "the deadline passed before {} more node(s) were asked",
                candidates.len() - tried.len()
            ));
        }
        Err(Error::NoTopology {
            tried: tried.join("; "),
        })
    }

    /// Asks one node for the topology.
    async fn fetch(&self, addr: &NodeAddr, deadline: Instant) -> Result<Topology, Error> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::Timeout {
                maybe_applied: false,
            });
        }
        let node = self.node(addr);
        if !self.shards_unsupported.get() {
            match node
                .command(&["CLUSTER", "SHARDS"], false, Some(left))
                .await
            {
                Ok(v) => return Topology::from_cluster_shards(v, addr),
                Err(Error::Server(e)) if is_unknown_command(&e.message_lossy()) => {
                    tracing::debug!(node = %addr, "CLUSTER SHARDS unknown; using CLUSTER SLOTS");
                    self.shards_unsupported.set(true);
                }
                Err(e) => return Err(e),
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let v = node
            .command(&["CLUSTER", "SLOTS"], false, Some(left))
            .await?;
        Topology::from_cluster_slots(v, addr)
    }

    /// Installs a topology the peer that leads refreshes found, with its
    /// epoch when that is ahead of this router's (MOVED corrections made
    /// here count too).
    pub fn accept_published(&self, topology: Topology, epoch: u64) {
        if self.epoch.get() < epoch {
            self.epoch.set(epoch - 1);
        }
        self.accept(topology);
        wake_all(self);
    }

    /// Waits until a first topology is installed.
    pub async fn first_topology(&self) {
        poll_fn(|cx| {
            if self.topology.borrow().is_some() || self.closed.get() {
                return Poll::Ready(());
            }
            let mut st = self.refresh.borrow_mut();
            if !st.waiters.iter().any(|w| w.will_wake(cx.waker())) {
                st.waiters.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }

    /// Installs `topology` unless it routes every slot as now.
    fn accept(&self, mut topology: Topology) {
        if self.config.node.tls.is_some() {
            // Reach nodes on their TLS port when they report one.
            for shard in &mut topology.shards {
                let nodes = shard
                    .master
                    .iter_mut()
                    .chain(&mut shard.other_masters)
                    .chain(&mut shard.replicas);
                for n in nodes {
                    if let Some(a) = n.tls_addr() {
                        n.addr = a;
                    }
                }
            }
        }
        let current = self.routes();
        let mut map = SlotMap::from_topology(&topology, current.map.epoch());
        if !map.same_routes(&current.map) {
            map.set_epoch(self.next_epoch());
            tracing::info!(
                epoch = map.epoch(),
                masters = map.masters().len(),
                covered = map.coverage(),
                "cluster topology changed"
            );
            self.install(map);
            self.refresh.borrow_mut().changes += 1;
        }
        // Seeds stay candidates for refreshes, but a seed the topology
        // does not list keeps no connection retrying in the background.
        let keep: Vec<NodeAddr> = topology
            .nodes()
            .filter(|n| n.health != Health::Failed)
            .map(|n| n.addr.clone())
            .collect();
        self.prune(&keep);
        *self.topology.borrow_mut() = Some(Rc::new(topology));
    }
}

/// How good an answer is: slots whose master is healthy, then slots
/// covered at all.
fn score(t: &Topology) -> (usize, usize) {
    let healthy = t
        .shards
        .iter()
        .filter(|s| s.has_healthy_master())
        .map(|s| s.slot_count())
        .sum();
    (healthy, t.coverage())
}

fn is_unknown_command(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("unknown subcommand") || m.contains("unknown command")
}

/// `interval` ± 10%.
fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(0.9 + 0.2 * fastrand::f64())
}

/// The refresh task of one client: runs requested and periodic refreshes
/// one at a time, rate-limited, until the client closes.
pub(crate) async fn refresher(router: Rc<Router>) {
    let interval = router.config.refresh_interval;
    let min_gap = router.config.refresh_min_interval;
    let mut periodic_at = interval.map(|i| Instant::now() + jittered(i));
    loop {
        let requested = poll_fn(|cx| {
            if router.closed.get() {
                return Poll::Ready(());
            }
            let mut st = router.refresh.borrow_mut();
            if st.requested {
                return Poll::Ready(());
            }
            st.task = Some(cx.waker().clone());
            Poll::Pending
        });
        match periodic_at {
            Some(at) => {
                let left = at.saturating_duration_since(Instant::now());
                futures_lite::future::or(requested, async {
                    Timer::new(left).await;
                })
                .await;
            }
            None => requested.await,
        }
        if router.closed.get() {
            break;
        }
        let earliest = router.refresh.borrow().last_start.map(|t| t + min_gap);
        if let Some(earliest) = earliest {
            let wait = earliest.saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                Timer::new(wait).await;
                if router.closed.get() {
                    break;
                }
            }
        }
        {
            let mut st = router.refresh.borrow_mut();
            st.requested = false;
            st.started += 1;
            st.last_start = Some(Instant::now());
        }
        let outcome = router.refresh_once().await;
        if let Err(e) = &outcome {
            tracing::warn!(error = %e, "cluster topology refresh failed");
        }
        {
            let mut st = router.refresh.borrow_mut();
            st.completed += 1;
            st.last_outcome = Some(outcome);
            for w in st.waiters.drain(..) {
                w.wake();
            }
        }
        periodic_at = interval.map(|i| Instant::now() + jittered(i));
    }
    wake_all(&router);
    tracing::debug!("cluster refresh task ends");
}
