//! [`CoreClient`]: the [`Cluster`] API on one core of the runtime.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use super::executor::Hub;
use super::mesh::{CoreMesh, HopStats};
use crate::cluster::{ClusterInfo, NodeAddr};
use crate::cmd::Route;
use crate::resp::Arg;
use crate::{Cluster, Connection, Error};

/// The client of one core: the [`Cluster`] API, routed to this core's
/// connections or, for nodes other cores own, through them. Clone it
/// freely on its core; it is `!Send`.
#[derive(Clone)]
pub struct CoreClient {
    /// The cluster client of this core, whose router reaches the nodes
    /// other cores own through the mesh.
    pub(super) cluster: Cluster,
    pub(super) mesh: Rc<CoreMesh>,
    pub(super) hub: Arc<Hub>,
    pub(super) core: usize,
    pub(super) cpu: usize,
}

impl std::fmt::Debug for CoreClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreClient")
            .field("core", &self.core)
            .field("cpu", &self.cpu)
            .finish()
    }
}

/// Counts a call as work in flight, for the drain.
pub(super) struct Work<'a>(&'a CoreMesh);

impl Drop for Work<'_> {
    fn drop(&mut self) {
        self.0.end_work();
    }
}

impl CoreClient {
    pub(super) fn enter(&self) -> Result<Work<'_>, Error> {
        if self.mesh.closing.get() {
            return Err(Error::Closed("the executor is shutting down"));
        }
        self.mesh.begin_work();
        Ok(Work(&self.mesh))
    }

    /// This core's number, from 0, in the order of the CPUs.
    pub fn core(&self) -> usize {
        self.core
    }

    /// How many cores the runtime has.
    pub fn cores(&self) -> usize {
        self.hub.cores()
    }

    /// The CPU this core's executor is pinned to.
    pub fn cpu(&self) -> usize {
        self.cpu
    }

    /// True once a shutdown started: calls now fail with
    /// [`Error::Closed`].
    pub fn is_shutting_down(&self) -> bool {
        self.mesh.closing.get()
    }

    /// The core whose connection serves `key` now (this one, or the one
    /// its calls travel to).
    pub fn owner_of_key(&self, key: impl Arg) -> Option<usize> {
        let slot = key.with_bytes(crate::slot::key_slot);
        let routes = self.cluster.router.routes();
        let node = routes.node(Route::Slot(slot))?;
        Some(match node.via.peer() {
            Some(peer) => self.mesh.core_of(peer),
            None => self.core,
        })
    }

    /// The master this core routes `slot` to now.
    pub fn master_of_slot(&self, slot: u16) -> Option<NodeAddr> {
        let routes = self.cluster.router.routes();
        routes.map.master_for_slot(slot).cloned()
    }

    /// This core's cross-core traffic so far.
    pub fn hop_stats(&self) -> HopStats {
        self.mesh.stats()
    }

    /// A handle whose calls have `timeout` as their deadline.
    pub fn with_timeout(&self, timeout: Duration) -> CoreClient {
        CoreClient {
            cluster: self.cluster.with_timeout(timeout),
            ..self.clone()
        }
    }

    /// A handle whose commands that only read go where `read_from` says
    /// ([`Cluster::with_read_from`](crate::Cluster::with_read_from)); a
    /// replica another core owns is reached through that core, like a
    /// master.
    pub fn with_read_from(&self, read_from: crate::config::ReadFrom) -> CoreClient {
        CoreClient {
            cluster: self.cluster.with_read_from(read_from),
            ..self.clone()
        }
    }

    /// [`Cluster::info`] as this core sees the cluster. Nodes another core
    /// owns have `owner_core` set (a core number, as [`core`](Self::core))
    /// and report their connection counters there.
    pub fn info(&self) -> ClusterInfo {
        let mut info = self.cluster.info();
        for n in &mut info.nodes {
            n.owner_core = n.owner_core.map(|p| self.mesh.core_of(p));
        }
        info
    }

    /// [`Cluster::refresh`]: one core (the first peer of the mesh)
    /// refreshes, and every core gets the result.
    pub async fn refresh(&self) -> Result<(), Error> {
        let _work = self.enter()?;
        self.cluster.refresh().await
    }

    /// The connections this core holds to masters.
    pub fn master_connections(&self) -> Vec<(NodeAddr, Connection)> {
        self.cluster.master_connections()
    }
}
