//! Reads from replicas: which node serves a command that only reads, per
//! [`ReadFrom`] strategy, the fall back to the master when a replica
//! fails, and the latency probe behind [`ReadFrom::LowestLatency`].
//!
//! [`Routes`] holds each master's replicas (from the topology a refresh
//! parsed); a replica's connection sends `READONLY` in its handshake, so
//! it serves reads again after each reconnect. Only a call the client
//! marked read-only ([`crate::cmd::is_read_only`]) with a strategy other
//! than [`ReadFrom::Primary`] comes here, once per call: the replica gets
//! at most half of the time left, and when it fails (unreachable, timed
//! out, lost, `LOADING`, `MOVED`, any refusal proving nothing ran) the
//! call goes on to the master within the same deadline, and the replica
//! is skipped by reads for [`SKIP_FOR`]. A redirect from a replica never
//! changes the slot map (it only asks for a refresh). A promoted replica
//! is a master in the next map, so it is never routed to as a replica
//! after the refresh that saw the failover.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::node::Node;
use super::router::{Attempt, Router, Routes, Step, join_all};
use crate::cmd::Route;
use crate::config::ReadFrom;
use crate::{Commands, Error, Value};

/// How long reads skip a replica that failed one.
pub(crate) const SKIP_FOR: Duration = Duration::from_secs(1);

/// Weight of a new round trip in a node's latency average.
const EWMA_WEIGHT: f64 = 0.5;

/// The longest a latency probe waits for one `PING`.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// What the replica strategies keep between calls, per router.
#[derive(Default)]
pub(crate) struct ReplicaState {
    /// The round-robin counter.
    next: Cell<usize>,
    /// Set once the latency probe task runs.
    probing: Cell<bool>,
    /// Set once a call wanted replica reads: from then on the routes list
    /// each master's replicas (and their connections open).
    wanted: Cell<bool>,
}

impl ReplicaState {
    /// Whether replica reads were wanted yet.
    pub fn wanted(&self) -> bool {
        self.wanted.get()
    }
}

/// True when the node may serve reads now.
fn usable(node: &Node, now: &mut Option<Instant>) -> bool {
    match node.skip_until.get() {
        None => true,
        Some(until) => *now.get_or_insert_with(Instant::now) >= until,
    }
}

impl Routes {
    /// The replica to try first for a read of `slot` by `read_from`, or
    /// `None` when the master serves it (no usable replica, or the master
    /// measured fastest).
    pub fn read_node(&self, slot: u16, read_from: ReadFrom, router: &Router) -> Option<Rc<Node>> {
        let index = self.map.master_index(slot)?;
        let replicas = self.replicas.get(index)?;
        if replicas.is_empty() {
            return None;
        }
        let mut now = None;
        let pick_random = |nodes: &mut dyn Iterator<Item = &Rc<Node>>| -> Option<Rc<Node>> {
            let candidates: Vec<&Rc<Node>> = nodes.collect();
            (!candidates.is_empty())
                .then(|| candidates[fastrand::usize(..candidates.len())].clone())
        };
        match read_from {
            ReadFrom::Primary => None,
            ReadFrom::PreferReplica => {
                // The common case (every replica usable) without a vector.
                let i = fastrand::usize(..replicas.len());
                if usable(&replicas[i], &mut now) {
                    return Some(replicas[i].clone());
                }
                pick_random(&mut replicas.iter().filter(|r| usable(r, &mut now)))
            }
            ReadFrom::RoundRobin => {
                let state = &router.replica_state;
                for _ in 0..replicas.len() {
                    let i = state.next.get();
                    state.next.set(i.wrapping_add(1));
                    let node = &replicas[i % replicas.len()];
                    if usable(node, &mut now) {
                        return Some(node.clone());
                    }
                }
                None
            }
            ReadFrom::AzAffinity => {
                let options = &router.config.replicas;
                if let Some(zone) = options.client_zone.as_deref() {
                    let local = pick_random(&mut replicas.iter().filter(|r| {
                        usable(r, &mut None) && options.node_zones.is_in(&r.addr, zone)
                    }));
                    if local.is_some() {
                        return local;
                    }
                }
                pick_random(&mut replicas.iter().filter(|r| usable(r, &mut now)))
            }
            ReadFrom::LowestLatency => {
                let master = &self.masters[index];
                let measured: Vec<(&Rc<Node>, Duration)> = std::iter::once(master)
                    .chain(replicas.iter().filter(|r| usable(r, &mut now)))
                    .filter_map(|n| Some((n, n.latency.get()?)))
                    .collect();
                let Some(best) = measured.iter().map(|m| m.1).min() else {
                    return pick_random(&mut replicas.iter().filter(|r| usable(r, &mut None)));
                };
                let tied_below = best.mul_f64(1.1).max(best + Duration::from_micros(50));
                let tied: Vec<&Rc<Node>> = measured
                    .iter()
                    .filter(|m| m.1 <= tied_below)
                    .map(|m| m.0)
                    .collect();
                let chosen = tied[fastrand::usize(..tied.len())];
                (!Rc::ptr_eq(chosen, master)).then(|| chosen.clone())
            }
        }
    }
}

/// True when a read that failed on a replica with `err` goes on to the
/// master: anything but a server reply that is the command's real answer
/// (say, `WRONGTYPE`).
fn falls_back(err: &Error) -> bool {
    match err {
        Error::Server(_) => Step::of(err) != Step::Fail,
        _ => true,
    }
}

impl Router {
    /// The first step of a read routed to replicas: runs `op` on the
    /// replica the strategy picks, with half of the time left. `Some` with
    /// the reply when the replica answered, `None` when the call goes on
    /// to the master (no replica picked, or it failed), an error when it
    /// is the command's answer.
    pub(crate) async fn read_from_replica<F>(
        &self,
        route: Route,
        attempt: &mut Attempt,
        op: &F,
    ) -> Result<Option<Value>, Error>
    where
        F: AsyncFn(&Node, bool, Option<Duration>) -> Result<Value, Error>,
    {
        if attempt.replica_done || !attempt.read_only || attempt.ask.is_some() {
            return Ok(None);
        }
        attempt.replica_done = true;
        let (Route::Slot(slot), true) = (route, attempt.read_from.uses_replicas()) else {
            return Ok(None);
        };
        let Some(replica) = self.routes().read_node(slot, attempt.read_from, self) else {
            return Ok(None);
        };
        // The master's try, if one follows, has a deadline of its own.
        attempt.own_timeout_off();
        let half = attempt.left() / 2;
        if half.is_zero() {
            return Ok(None);
        }
        match op(&replica, false, Some(half)).await {
            Ok(value) => Ok(Some(value)),
            Err(e) if falls_back(&e) => {
                tracing::debug!(replica = %replica.addr, error = %e, "replica read failed; reading from the master");
                replica.skip_until.set(Some(Instant::now() + SKIP_FOR));
                if matches!(Step::of(&e), Step::Redirect(_) | Step::Refresh) {
                    // The replica serves other slots now, or is gone: the
                    // map may be out of date. It is not corrected from a
                    // replica's word.
                    self.request_refresh();
                }
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Makes the routes list each master's replicas from now on (the first
    /// time a handle reads from replicas): a client that reads only from
    /// masters never connects to a replica.
    pub(crate) fn want_replicas(&self) {
        if self.replica_state.wanted.replace(true) {
            return;
        }
        let map = self.routes().map.clone();
        let replicas = self.replica_nodes(&map);
        self.set_replicas(replicas);
    }

    /// Starts this router's latency probe, once: every
    /// `latency_probe_interval` it measures a `PING` round trip to every
    /// master and replica of the current routes (on the core that owns the
    /// node's connection) and folds it into the node's average. A probe
    /// that fails counts as [`PROBE_TIMEOUT`]. Ends when the client closes.
    pub(crate) fn start_latency_probe(self: &Rc<Self>) {
        if self.replica_state.probing.replace(true) {
            return;
        }
        let router = self.clone();
        glommio::spawn_local(async move {
            let interval = router.config.replicas.latency_probe_interval;
            while !router.closed.get() {
                let routes = router.routes();
                let nodes: Vec<&Rc<Node>> = routes
                    .masters
                    .iter()
                    .chain(routes.replicas.iter().flatten())
                    .collect();
                let wait = PROBE_TIMEOUT.min(router.config.timeout());
                let samples = join_all(nodes.iter().map(|n| measure(n, wait))).await;
                for (node, sample) in nodes.iter().zip(samples) {
                    let next = match node.latency.get() {
                        None => sample,
                        Some(old) => old.mul_f64(1.0 - EWMA_WEIGHT) + sample.mul_f64(EWMA_WEIGHT),
                    };
                    node.latency.set(Some(next));
                }
                drop(routes);
                glommio::timer::sleep(interval).await;
            }
        })
        .detach();
    }
}

/// One `PING` round trip to `node`, timed where its connection lives;
/// `wait` when it fails or takes longer.
async fn measure(node: &Node, wait: Duration) -> Duration {
    let timed = node
        .with_connection(wait, |conn| async move {
            let start = Instant::now();
            conn.command::<Value>(["PING"])
                .await
                .map(|_| start.elapsed())
        })
        .await;
    match timed {
        Ok(Ok(rtt)) => rtt.min(wait),
        _ => wait,
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::error::ServerError;

    fn server(text: &'static str) -> Error {
        Error::Server(ServerError::new(Bytes::from_static(text.as_bytes())))
    }

    #[test]
    fn a_replica_failure_falls_back_unless_it_is_the_answer() {
        for err in [
            server("MOVED 3999 127.0.0.1:7001"),
            server("LOADING Redis is loading the dataset in memory"),
            server("CLUSTERDOWN The cluster is down"),
            Error::ConnectionLost,
            Error::Timeout {
                maybe_applied: true,
            },
            Error::Connect {
                addr: "h:1".into(),
                reason: "refused".into(),
                unsent_command: true,
            },
        ] {
            assert!(falls_back(&err), "{err:?}");
        }
        assert!(!falls_back(&server(
            "WRONGTYPE Operation against a key holding the wrong kind of value"
        )));
    }
}
