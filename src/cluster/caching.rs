//! Cached reads on a cluster ([`CacheCommands`] for [`Cluster`]): a
//! router's one cache, tracked by its master connections. A miss goes to
//! the master of the key's slot as `CLIENT CACHING YES`, the read and
//! `PTTL` in one pipeline, following redirects like any read; under an
//! `ASK` (the slot is migrating) the read goes alone and is not cached.
//! A node another core owns is asked through that core
//! ([`NodeOp::Tracked`](super::peers::NodeOp::Tracked)), whose cache
//! then forwards the node's invalidations here. A slot whose master
//! changes in the map drops its entries ([`drop_moved_slots`]).
//!
//! What this cannot see: a slot that moved before this client learns it.
//! The old master tracked the slot's keys; the new one never heard of
//! them. `MIGRATE` deletes each key it moves on the source, which
//! invalidates it, but a key cached as absent (nil) is not moved, and a
//! write to it on the new master reaches no socket of this client. Until
//! the client learns the move (a `MOVED` met by any call, or a topology
//! refresh, periodic every
//! [`refresh_interval`](crate::ClusterConfig::refresh_interval)), such an
//! entry may still be served. A failover loses nothing this way: the
//! demoted master applies the new master's writes and invalidates what
//! it tracked, until its socket is relinked or lost (which voids it).

use std::cell::RefCell;
use std::time::Duration;

use super::node::{Node, Via};
use super::{Cluster, SlotMap};
use crate::cmd::{Args, Cmd, Route, cmd};
use crate::conn::cache::{
    Cache, Fetched, TrackerId, cacheable, caching_off, fetched, fetched_mget, mget_through,
    read_through, tracked_mget, tracked_read,
};
use crate::conn::commands::CacheCommands;
use crate::resp::Arg;
use crate::slot::{SLOT_COUNT, key_slot};
use crate::{CacheStats, Error, FromValue, Value};

/// Drops the cached entries of every slot whose master differs between
/// `old` and `new`: the new master never told this client about writes it
/// takes.
pub(crate) fn drop_moved_slots(cache: &Cache, old: &SlotMap, new: &SlotMap) {
    // Masters compared once by address, then slots by index.
    let same: Vec<Option<usize>> = old
        .masters()
        .iter()
        .map(|a| new.masters().iter().position(|b| b == a))
        .collect();
    cache.drop_slots((0..SLOT_COUNT).filter(|&slot| {
        let before = old.master_index(slot).and_then(|i| same[i]);
        before.is_none() || before != new.master_index(slot)
    }));
}

/// The tracker a read sent to `node` is tracked on, and its generation
/// now; `None` when this router's connection to it does not track (a
/// replica's).
fn tracker_of(cache: &Cache, node: &Node) -> Option<(TrackerId, u32)> {
    let tracker = match &node.via {
        Via::Connection(c) => c.tracker()?,
        Via::Peer(_) => cache.tracker(&node.addr.to_string()),
    };
    Some((tracker, cache.tracker_generation(tracker)))
}

impl Cluster {
    /// Runs a tracked miss (`cmds`) on the master of `slot`, following
    /// redirects within one deadline; under an `ASK`, `ask` runs instead
    /// (untracked).
    async fn fetch_tracked<T>(
        &self,
        cache: &Cache,
        slot: u16,
        cmds: &[Cmd],
        ask: impl AsyncFn(&Node, Option<Duration>) -> Result<T, Error>,
        parse: impl Fn(Vec<Value>, Option<(TrackerId, u32)>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let out = RefCell::new(None);
        let mut attempt = self.attempt();
        attempt.read_only = true;
        self.router
            .run(
                Route::Slot(slot),
                &mut attempt,
                async |node, asking, timeout| {
                    let got = if asking {
                        ask(node, timeout).await?
                    } else {
                        let tracked = tracker_of(cache, node);
                        let (replies, tracks) = node.tracked_pipeline(cmds, timeout).await?;
                        parse(replies, tracked.filter(|_| tracks))?
                    };
                    *out.borrow_mut() = Some(got);
                    Ok(Value::Nil)
                },
            )
            .await?;
        Ok(out.into_inner().expect("set when the run succeeds"))
    }
}

impl CacheCommands for Cluster {
    /// Answers from this client's cache, or asks the master of the key's
    /// slot (see [`CacheCommands`]). Replicas are never asked, whatever
    /// the handle's [`ReadFrom`](crate::config::ReadFrom).
    async fn cached<T: FromValue>(&self, read: impl Args, ttl: Duration) -> Result<T, Error> {
        let Some(cache) = &self.router.cache else {
            return Err(caching_off(&read));
        };
        let key_index = cacheable(&read)?;
        if let Some(v) = cache.lookup(&read, key_index) {
            return T::from_value(v);
        }
        // Hashed on a miss only.
        let slot = || {
            read.with_arg(key_index, key_slot)
                .expect("the key is there")
        };
        let value = read_through(
            cache,
            &read,
            key_index,
            slot,
            ttl,
            self.call_timeout(),
            async || {
                let slot = slot();
                let cmds = tracked_read(cache, &read, key_index);
                self.fetch_tracked(
                    cache,
                    slot,
                    &cmds,
                    async |node, timeout| {
                        Ok(Fetched {
                            value: node.command(&read, true, timeout).await?,
                            pttl: Some(-1),
                            tracked: None,
                        })
                    },
                    |replies, tracked| fetched(cache, replies, tracked),
                )
                .await
            },
        )
        .await?;
        T::from_value(value)
    }

    /// Each key looked up as a `GET`; the misses fetched one request per
    /// slot, the slots side by side.
    async fn cached_mget<T: FromValue, K: Arg>(
        &self,
        keys: &[K],
        ttl: Duration,
    ) -> Result<T, Error> {
        let Some(cache) = &self.router.cache else {
            return Err(caching_off(&["MGET"]));
        };
        let values = mget_through(
            cache,
            keys,
            ttl,
            self.call_timeout(),
            key_slot,
            async |slot, keys| {
                let cmds = tracked_mget(cache, &keys);
                let n = keys.len();
                self.fetch_tracked(
                    cache,
                    slot,
                    &cmds,
                    async |node, timeout| {
                        let mut mget = cmd("MGET");
                        for k in &keys {
                            mget.push_arg(k);
                        }
                        match node.command(&mget, true, timeout).await? {
                            Value::Array(values) if values.len() == n => Ok(values
                                .into_iter()
                                .map(|value| Fetched {
                                    value,
                                    pttl: Some(-1),
                                    tracked: None,
                                })
                                .collect()),
                            other => Err(crate::error::ConversionError {
                                found: other.type_name(),
                                target: "one value per key",
                                detail: Some("MGET"),
                            }
                            .into()),
                        }
                    },
                    |replies, tracked| fetched_mget(cache, replies, n, tracked),
                )
                .await
            },
        )
        .await?;
        T::from_value(Value::Array(values))
    }

    fn cache_stats(&self) -> Option<CacheStats> {
        self.router.cache.as_ref().map(|c| c.stats())
    }
}
