//! Client-side caching on the per-core runtime: [`CacheCommands`] for
//! [`CoreClient`] (its core's cluster client and cache) and
//! [`RemoteClient`] (a job on a core), and the relay that carries
//! invalidations between cores.
//!
//! Each core has its own cache; a hit never leaves the core. A read of a
//! node another core owns goes to that core as
//! [`NodeOp::Tracked`](crate::cluster::peers::NodeOp::Tracked): the owner
//! sends it on its connection (so the server tracks the key there) and
//! notes, per node, which cores read through it. When that connection
//! gets an invalidation, the owner applies it to its own cache and pushes
//! it into the outbox of each noted core ([`MeshRelay`]), which sends it
//! with the next batch: one message per core that may hold the key, and
//! batched with whatever else that core is sent in the same turn. A lost
//! socket or a flush voids the node's tracker on those cores the same way.

use std::rc::{Rc, Weak};
use std::time::Duration;

use super::commands::{CoreJob, owned};
use super::core_client::CoreClient;
use super::mesh::CoreMesh;
use super::remote_client::RemoteClient;
use crate::cmd::Args;
use crate::conn::cache::{Cache, Invalidation, Relay};
use crate::conn::commands::CacheCommands;
use crate::conn::to_cmd;
use crate::resp::Arg;
use crate::{CacheStats, Error, FromValue, Value};

/// Forwards a cache's invalidations to other cores over the mesh.
pub(super) struct MeshRelay(pub Weak<CoreMesh>);

impl Relay for MeshRelay {
    fn forward(&self, cores: &[u64], what: Invalidation) {
        let Some(mesh) = self.0.upgrade() else {
            return;
        };
        for (word, bits) in cores.iter().enumerate() {
            let mut left = *bits;
            while left != 0 {
                let peer = word * 64 + left.trailing_zeros() as usize;
                left &= left - 1;
                mesh.push_invalidation(peer, &what);
            }
        }
    }
}

/// Makes `cache` forward through `mesh`.
pub(super) fn relay_through(cache: &Cache, mesh: &Rc<CoreMesh>) {
    cache.set_relay(Rc::new(MeshRelay(Rc::downgrade(mesh))));
}

/// [`Cluster`](crate::Cluster)'s cached reads from this core, with this
/// core's cache.
impl CacheCommands for CoreClient {
    fn cached<T: FromValue>(
        &self,
        read: impl Args,
        ttl: Duration,
    ) -> impl std::future::Future<Output = Result<T, Error>> {
        self.entered(self.cluster.cached(read, ttl))
    }

    fn cached_mget<T: FromValue, K: Arg>(
        &self,
        keys: &[K],
        ttl: Duration,
    ) -> impl std::future::Future<Output = Result<T, Error>> {
        self.entered(self.cluster.cached_mget(keys, ttl))
    }

    fn cache_stats(&self) -> Option<CacheStats> {
        self.cluster.cache_stats()
    }
}

/// Cached reads handed to one of the cores (taking turns, like every
/// call of a [`RemoteClient`]) and answered from that core's cache: a hit
/// still costs the hop to the core and back. Code that runs on the
/// executors should read through its [`CoreClient`].
impl CacheCommands for RemoteClient {
    fn cached<T: FromValue>(
        &self,
        read: impl Args,
        ttl: Duration,
    ) -> impl std::future::Future<Output = Result<T, Error>> {
        let read = to_cmd(&read);
        let job: CoreJob =
            Box::new(move |core| Box::pin(async move { core.cached::<Value>(read, ttl).await }));
        async move { T::from_value(self.on_core(job).await?) }
    }

    fn cached_mget<T: FromValue, K: Arg>(
        &self,
        keys: &[K],
        ttl: Duration,
    ) -> impl std::future::Future<Output = Result<T, Error>> {
        let keys = owned(keys);
        let job: CoreJob = Box::new(move |core| {
            Box::pin(async move { core.cached_mget::<Value, _>(&keys, ttl).await })
        });
        async move { T::from_value(self.on_core(job).await?) }
    }

    /// `None`: each core has its own cache; ask each core's
    /// [`CoreClient::cache_stats`](CacheCommands::cache_stats).
    fn cache_stats(&self) -> Option<CacheStats> {
        None
    }
}
