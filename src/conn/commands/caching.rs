//! [`CacheCommands`]: reads answered from the client-side cache when they
//! can be, on every client that has one ([`Connection`], [`Cluster`],
//! [`CoreClient`], [`RemoteClient`]).
//!
//! [`Connection`]: crate::Connection
//! [`Cluster`]: crate::Cluster
//! [`CoreClient`]: crate::CoreClient
//! [`RemoteClient`]: crate::RemoteClient

use std::future::Future;
use std::time::Duration;

use crate::cmd::Args;
use crate::resp::Arg;
use crate::{CacheStats, Error, FromValue};

/// Cached reads, for clients configured with
/// [`ConnectionConfig::cache`](crate::ConnectionConfig::cache).
///
/// Each read is answered from the cache when a current copy of its reply
/// is there, else sent to the server (together with `CLIENT CACHING YES`
/// and `PTTL key`, one round trip) and its reply cached for at most `ttl`,
/// and never past the key's own expiry. What the cache promises:
///
/// 1. a reply is never served after the client received an invalidation
///    for its key;
/// 2. a reply whose key was invalidated while it was in flight is
///    returned but not cached;
/// 3. after a write made through this client is acknowledged, a cached
///    read of its keys on the same core does not return what it replaced
///    (other cores' caches hear of it from the server, over the mesh);
/// 4. when a tracking socket is lost, every entry it tracked is dropped
///    before another read is served; so are the entries of slots that
///    moved, once the client learns it (`MOVED`, failover, refresh), and
///    every entry when the server flushed (`FLUSHALL`, `FLUSHDB`).
///
/// An entry lives for the `ttl` of the read that stored it (from when
/// that read was sent), never past the key's `PTTL`.
///
/// Concurrent misses of one read on one core share one request. A client
/// without a cache answers with [`Error::Unsupported`]; so does a read
/// that is not a non-blocking, read-only, single-key command.
///
/// ```no_run
/// use std::time::Duration;
/// use redcore::{CacheCommands, CacheOptions, Commands, Connection, ConnectionConfig};
///
/// glommio::LocalExecutorBuilder::default()
///     .spawn(|| async {
///         let mut config = ConnectionConfig::from_uri("redis://127.0.0.1:6379")?;
///         config.cache = Some(CacheOptions::with_max_bytes(64 << 20));
///         let conn = Connection::connect(config).await?;
///         conn.command::<()>(["SET", "greeting", "hello"]).await?;
///         let ttl = Duration::from_secs(30);
///         // A miss: fetched, tracked, cached.
///         let v: Option<String> = conn.cached_get("greeting", ttl).await?;
///         // A hit: no round trip.
///         let again: Option<String> = conn.cached_get("greeting", ttl).await?;
///         assert_eq!(v, again);
///         Ok::<_, redcore::Error>(())
///     })
///     .unwrap()
///     .join()
///     .unwrap()
///     .unwrap();
/// ```
pub trait CacheCommands {
    /// A read of exactly one key whose reply depends only on that key's
    /// value (`GET`, `HGET`, `LRANGE`, `ZSCORE`, `XRANGE`, `GEOPOS`, ...),
    /// through the cache. Two reads are cached apart when any of their
    /// arguments differ. Refused with [`Error::Unsupported`], nothing
    /// sent: writes, reads of several keys, and reads whose reply changes
    /// without a write to the key (`TTL`, `SRANDMEMBER`, `SORT_RO`,
    /// `EVAL_RO`, blocking reads, ...).
    fn cached<T: FromValue>(
        &self,
        read: impl Args,
        ttl: Duration,
    ) -> impl Future<Output = Result<T, Error>>;

    /// `MGET` through the cache: each key is looked up as a `GET` (and
    /// stored as one); the misses are fetched together, one request per
    /// slot on a cluster. A key holding another type than a string is
    /// nil to `MGET`, and so to a later `cached_get` of it while cached
    /// (an uncached `GET` would answer `WRONGTYPE`).
    fn cached_mget<T: FromValue, K: Arg>(
        &self,
        keys: &[K],
        ttl: Duration,
    ) -> impl Future<Output = Result<T, Error>>;

    /// The cache's counters; `None` when the client has no cache.
    fn cache_stats(&self) -> Option<CacheStats>;

    /// `GET key` through the cache.
    fn cached_get<T: FromValue>(
        &self,
        key: impl Arg,
        ttl: Duration,
    ) -> impl Future<Output = Result<T, Error>> {
        self.cached(KeyRead::new("GET", key, ()), ttl)
    }

    /// `HGET key field` through the cache.
    fn cached_hget<T: FromValue>(
        &self,
        key: impl Arg,
        field: impl Arg,
        ttl: Duration,
    ) -> impl Future<Output = Result<T, Error>> {
        self.cached(KeyRead::new("HGET", key, One(field)), ttl)
    }

    /// `HMGET key fields...` through the cache (cached as one read).
    fn cached_hmget<T: FromValue, F: Arg>(
        &self,
        key: impl Arg,
        fields: &[F],
        ttl: Duration,
    ) -> impl Future<Output = Result<T, Error>> {
        self.cached(KeyRead::new("HMGET", key, fields), ttl)
    }

    /// `HGETALL key` through the cache.
    fn cached_hgetall<T: FromValue>(
        &self,
        key: impl Arg,
        ttl: Duration,
    ) -> impl Future<Output = Result<T, Error>> {
        self.cached(KeyRead::new("HGETALL", key, ()), ttl)
    }

    /// `SMEMBERS key` through the cache.
    fn cached_smembers<T: FromValue>(
        &self,
        key: impl Arg,
        ttl: Duration,
    ) -> impl Future<Output = Result<T, Error>> {
        self.cached(KeyRead::new("SMEMBERS", key, ()), ttl)
    }

    /// `EXISTS key` through the cache.
    fn cached_exists(
        &self,
        key: impl Arg,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, Error>> {
        self.cached(KeyRead::new("EXISTS", key, ()), ttl)
    }

    /// `STRLEN key` through the cache.
    fn cached_strlen(
        &self,
        key: impl Arg,
        ttl: Duration,
    ) -> impl Future<Output = Result<u64, Error>> {
        self.cached(KeyRead::new("STRLEN", key, ()), ttl)
    }
}

/// The arguments after a read's key.
trait Fields {
    fn count(&self) -> usize;
    fn with_field<R>(&self, index: usize, f: impl FnOnce(&[u8]) -> R) -> Option<R>;
}

impl Fields for () {
    fn count(&self) -> usize {
        0
    }
    fn with_field<R>(&self, _: usize, _: impl FnOnce(&[u8]) -> R) -> Option<R> {
        None
    }
}

/// One field.
struct One<F>(F);

impl<F: Arg> Fields for One<F> {
    fn count(&self) -> usize {
        1
    }
    fn with_field<R>(&self, index: usize, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        (index == 0).then(|| self.0.with_bytes(f))
    }
}

impl<F: Arg> Fields for &[F] {
    fn count(&self) -> usize {
        self.len()
    }
    fn with_field<R>(&self, index: usize, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        self.get(index).map(|a| a.with_bytes(f))
    }
}

/// A read of one key, built on the stack: the typed helpers' argument
/// list, so that a hit allocates nothing.
struct KeyRead<K, Fs> {
    name: &'static str,
    key: K,
    fields: Fs,
}

impl<K: Arg, Fs: Fields> KeyRead<K, Fs> {
    fn new(name: &'static str, key: K, fields: Fs) -> Self {
        KeyRead { name, key, fields }
    }
}

impl<K: Arg, Fs: Fields> Args for KeyRead<K, Fs> {
    fn arg_count(&self) -> usize {
        2 + self.fields.count()
    }

    fn with_arg<R>(&self, index: usize, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        match index {
            0 => Some(f(self.name.as_bytes())),
            1 => Some(self.key.with_bytes(f)),
            i => self.fields.with_field(i - 2, f),
        }
    }
}
