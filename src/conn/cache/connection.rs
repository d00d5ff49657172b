//! [`CacheCommands`] for [`Connection`]: the connection's own socket
//! tracks its cached reads.

use std::time::Duration;

use super::{cacheable, caching_off, fetched, fetched_mget, mget_through, read_through};
use super::{tracked_mget, tracked_read};
use crate::cmd::Args;
use crate::conn::Connection;
use crate::conn::commands::{CacheCommands, Commands};
use crate::resp::Arg;
use crate::{CacheStats, Error, FromValue, Value};

impl CacheCommands for Connection {
    async fn cached<T: FromValue>(&self, read: impl Args, ttl: Duration) -> Result<T, Error> {
        let Some((cache, tracker)) = &self.shared.cache else {
            return Err(caching_off(&read));
        };
        let key_index = cacheable(&read)?;
        if let Some(v) = cache.lookup(&read, key_index) {
            return T::from_value(v);
        }
        let value = read_through(
            cache,
            &read,
            key_index,
            || 0,
            ttl,
            self.call_timeout(),
            async || {
                let generation = cache.tracker_generation(*tracker);
                let replies = self.pipeline(tracked_read(cache, &read, key_index)).await?;
                fetched(cache, replies, Some((*tracker, generation)))
            },
        )
        .await?;
        T::from_value(value)
    }

    async fn cached_mget<T: FromValue, K: Arg>(
        &self,
        keys: &[K],
        ttl: Duration,
    ) -> Result<T, Error> {
        let Some((cache, tracker)) = &self.shared.cache else {
            return Err(caching_off(&["MGET"]));
        };
        let values = mget_through(
            cache,
            keys,
            ttl,
            self.call_timeout(),
            |_| 0,
            async |_, keys| {
                let generation = cache.tracker_generation(*tracker);
                let replies = self.pipeline(tracked_mget(cache, &keys)).await?;
                fetched_mget(cache, replies, keys.len(), Some((*tracker, generation)))
            },
        )
        .await?;
        T::from_value(Value::Array(values))
    }

    fn cache_stats(&self) -> Option<CacheStats> {
        self.shared.cache.as_ref().map(|(c, _)| c.stats())
    }
}
