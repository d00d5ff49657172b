//! redcore: a Redis and Redis Cluster client runtime for Linux, built on
//! [glommio] (io_uring, thread-per-core).
//!
//! # The pieces
//!
//! - [`resp`]: the RESP2/RESP3 wire format, sans-io. An incremental,
//!   zero-copy decoder with limits against hostile input, and an encoder
//!   that writes commands straight into an output buffer.
//! - [`cmd`](mod@cmd): the [`Cmd`] builder, the [`Args`] trait (slices like
//!   `["SET", "k", "v"]` are commands too), and key extraction for cluster
//!   routing; [`slot`]: hash slots with `{hash tags}`.
//! - [`Error`]: one error type; server errors are classified once
//!   ([`ServerErrorKind`]); every error says whether its command may have
//!   been applied ([`Error::maybe_applied`], [`Error::is_safe_to_retry`])
//!   and carries the retry decision that follows ([`Error::retry_action`]).
//! - [`Connection`]: one socket (TCP, Unix, TLS) on the current glommio
//!   executor, shared by every task on the core and auto-pipelined:
//!   each call encodes its command into the connection's batch buffer, one
//!   task writes the whole batch (an explicit pipeline of 1 KiB or more is
//!   sent by its caller at once) and reads replies back in order. It
//!   handshakes with `HELLO` (falling back to RESP2), reconnects with
//!   backoff, and never resends a command that may have been applied.
//!   [`config::ConnectionConfig`] holds its options; a Redis URI works too.
//!   Bytes reach the socket through glommio's sockets by default (plain
//!   non-blocking `send`/`recv`, io_uring only for readiness, `connect`
//!   and timers), or, with [`TransportKind::IoUring`], through a ring of
//!   redcore's own per core: commands encoded into registered buffers, sent
//!   with fixed-buffer writes, replies received by multishot receives. The
//!   second is opt-in: it did not use less CPU in the benchmarks.
//!
//! - [`Cluster`]: the Redis Cluster client of one core. It routes each
//!   command to the master of its slot over one shared connection per
//!   node, follows `MOVED`/`ASK`, rides out failovers by refreshing its
//!   slot map (merged, rate-limited refreshes; a periodic one too), splits
//!   pipelines and `MGET`/`MSET`/`DEL`-style commands across nodes, and
//!   runs transactions and watch transactions on one slot. Commands that
//!   only read can go to replicas ([`config::ReadFrom`]: prefer replica,
//!   round-robin, same zone first, lowest measured latency), falling back
//!   to the master within the call's deadline. Keyless commands go where
//!   the servers' command tips say (read with `COMMAND INFO` at connect; a
//!   built-in table otherwise): `DBSIZE` is summed over every master,
//!   `KEYS` concatenated, `FLUSHALL`, `SCRIPT LOAD` and `CONFIG SET` reach
//!   every master or node and fail naming the nodes if one fails
//!   ([`Error::Fanout`]); [`cluster::ClusterCommands`] sends a command to
//!   a [`cluster::Target`] of the caller's choice or returns the replies
//!   per node. [`Cluster::scan`] walks every key of every master through
//!   slot migrations and failovers ([`cluster::ClusterScan`]).
//!   [`ClusterConfig`] holds its options; `examples/cluster.rs` with
//!   `tools/cluster-example.sh` runs it against a throwaway cluster.
//!
//! - [`ClusterExecutor`] ([`runtime`]): the thread-per-core runtime. One
//!   glommio executor per CPU, each with a [`CoreClient`] (the `Cluster`
//!   API) and its own share of the node connections: every node is owned
//!   by one core, and requests for nodes other cores own travel to them
//!   over glommio's channel mesh, batched per turn. One core (the mesh's
//!   first peer) refreshes the topology for all; a `MOVED` seen anywhere
//!   corrects every core.
//!   [`RemoteClient`] serves code off the executors.
//!
//! - Client-side caching ([`CacheCommands`], [`CacheOptions`]): reads
//!   answered from a per-client (so per-core) cache kept true by RESP3
//!   `CLIENT TRACKING` invalidations; a hit takes no lock, no round trip,
//!   and for a `GET` no allocation. Bounded in bytes (SIEVE eviction),
//!   one request per concurrent miss, entries dropped when their socket
//!   is lost or their slot moves; on the per-core runtime, invalidations
//!   reach the other cores over the mesh.
//! - [`pubsub`]: channels, patterns and sharded channels on every client
//!   ([`Subscribe`]: `subscribe`, `psubscribe`, `ssubscribe` give a
//!   [`Subscription`], a stream of [`PubSubEvent`]s). On RESP3 subscriptions share the
//!   connection's socket; on RESP2 the connection opens a second one. They
//!   are made again after a reconnect before anything else is sent, follow
//!   sharded channels' slots and failed nodes on a cluster, go once per
//!   process to the server on the per-core runtime, and say where messages
//!   may have been missed with a [`pubsub::Gap`].
//!
//! # One function for every client
//!
//! The four clients implement [`Commands`]: `command`, `pipeline`,
//! `transaction`, `watch_transaction`, and `mget`, `mset`, `del`,
//! `unlink`, `exists`, `touch` (split by slot on the cluster clients).
//! Typed helpers for the usual commands ([`commands`]: strings and
//! counters, keys, hashes, lists, sets, sorted sets, streams, functions)
//! come with every `Commands`; [`prelude`] brings them into scope. A
//! [`Script`] runs a Lua script by its SHA-1 on any of them, loading it
//! again on a node that lost it. Write a function once by taking
//! `&impl Commands`:
//!
//! ```no_run
//! use redcore::prelude::*;
//! use redcore::Error;
//!
//! async fn add_to_cart(client: &impl Commands, cart: &str, item: &str) -> Result<u64, Error> {
//!     client.hincrby(cart, item, 1).await?;
//!     client.expire(cart, 3600).await?;
//!     client.hlen(cart).await
//! }
//!
//! async fn on_every_client(conn: &redcore::Connection, cluster: &redcore::Cluster)
//!     -> Result<(), Error> {
//!     add_to_cart(conn, "cart:1", "apple").await?;
//!     add_to_cart(cluster, "cart:1", "apple").await?;
//!     Ok(())
//! }
//! ```
//!
//! A watch function passed through the trait must be `Send + 'static`
//! (the per-core clients may run it on another core);
//! [`Connection::watch_transaction`] and [`Cluster::watch_transaction`]
//! take any function.
//!
//! # Failure
//!
//! - **One deadline per call.** Every call has one end-to-end deadline:
//!   the configured `timeout` (5 s by default) or that of the handle it is
//!   made through (`with_timeout` on [`Connection`], [`Cluster`],
//!   [`CoreClient`], [`RemoteClient`]; longer for a long `BLPOP`, shorter
//!   for a latency budget), covering admission, redirects, refreshes,
//!   retries and hops between cores. A call never succeeds after it.
//! - **Nothing lost silently, nothing sent twice behind your back.** A
//!   command that may have reached the server before its connection died
//!   or its deadline passed fails saying so ([`Error::ConnectionLost`],
//!   [`Error::Timeout`] with `maybe_applied`; [`Error::maybe_applied`]
//!   answers for any error); only commands proven not applied (a
//!   redirect, a refusal, never written), or reads, go again.
//! - **Silent servers are noticed without waiting for deadlines.** A
//!   socket on which a reply has been due for a whole
//!   [`health_interval`](config::ConnectionConfig::health_interval) (1 s
//!   by default) without a byte arriving is *silent*: nothing more is
//!   written to it, the server is probed with `PING` on a new socket (a
//!   refused probe gives the socket up), and a cluster client checks its
//!   topology with the other nodes and leaves the silent node as soon as
//!   the cluster promotes a replica in its place. Replies held back on
//!   purpose ([`cmd::is_blocking`]: `BLPOP`, `XREAD BLOCK`, `WAIT`, ...)
//!   are never taken for silence. TCP sockets carry keepalive and
//!   `TCP_USER_TIMEOUT`, so a peer that drops every packet fails the
//!   socket in the kernel too.
//! - **Memory is bounded by configuration, not by what a server sends.**
//!   One decoded reply may hold at most
//!   [`max_reply_bytes`](resp::DecoderLimits::max_reply_bytes) (512 MiB by
//!   default, counted as `size_of::<Value>()` per element plus payload
//!   bytes); past it the call fails with
//!   [`ProtocolError::ReplyTooLarge`](resp::ProtocolError::ReplyTooLarge),
//!   the rest of the reply is skipped as it arrives and the connection
//!   carries on. Large replies are decoded a few MiB per turn, so
//!   deadlines fire while one streams in; a reply whose caller gave up is
//!   skipped without building values; read buffers shrink back after a
//!   large reply. Callers beyond `max_in_flight` wait in line, each reply
//!   letting one in, however many they are.
//!
//! # Example
//!
//! A connection runs on a glommio executor:
//!
//! ```no_run
//! use redcore::{cmd, Commands, Connection, Value};
//!
//! glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
//!     // io_uring buffers count against RLIMIT_MEMLOCK: keep this small.
//!     .io_memory(64 << 10)
//!     .spawn(|| async {
//!         let conn = Connection::connect("redis://127.0.0.1:6379").await?;
//!         conn.command::<()>(cmd("SET").arg("counter").arg(41)).await?;
//!         let n: i64 = conn.command(["INCR", "counter"]).await?;
//!         assert_eq!(n, 42);
//!         let replies: Vec<Value> = conn.pipeline([["GET", "counter"], ["DEL", "counter"]]).await?;
//!         assert_eq!(replies[1], Value::Integer(1));
//!         Ok::<_, redcore::Error>(())
//!     })
//!     .expect("executor")
//!     .join()
//!     .expect("join")
//!     .expect("redis");
//! ```
//!
//! `examples/basic.rs` is a complete program; `tools/example.sh` starts a
//! throwaway `redis-server` and runs it. The codec needs no server:
//!
//! ```
//! use bytes::BytesMut;
//! use redcore::{cmd, Args, FromValue, resp::Decoder};
//!
//! let mut wire = BytesMut::new();
//! cmd("GET").arg("user:{42}").encode(&mut wire);
//! assert_eq!(&wire[..], b"*2\r\n$3\r\nGET\r\n$9\r\nuser:{42}\r\n");
//!
//! let mut input = BytesMut::from(&b"$3\r\nAda\r\n"[..]);
//! let reply = Decoder::new().decode(&mut input)?.expect("a whole reply");
//! assert_eq!(String::from_value(reply)?, "Ada");
//! # Ok::<(), redcore::Error>(())
//! ```
#![deny(missing_docs)]

pub mod auth;
pub mod cluster;
pub mod cmd;
pub mod config;
mod conn;
mod error;
pub mod hooks;
mod join;
pub mod prelude;
pub mod resp;
pub mod runtime;
pub mod slot;

pub use cluster::Cluster;
pub use cmd::{Args, Cmd, Route, cmd};
pub use config::{
    CacheOptions, ClusterConfig, ConnectionConfig, Protocol, TrackingMode, TransportKind,
};
pub use conn::cache::CacheStats;
pub use conn::commands;
pub use conn::commands::Script;
pub use conn::commands::{CacheCommands, Commands};
pub use conn::pubsub;
pub use conn::pubsub::{PubSubEvent, Subscribe, Subscription};
pub use conn::{Connection, ConnectionStats, IntoConnectionConfig, PushReceiver, Watch};
#[doc(hidden)]
pub use conn::{RingStats, io_uring_stats};
pub use error::{
    ConversionError, Error, HandshakeError, Redirect, RedirectKind, Result, RetryAction,
    ServerError, ServerErrorKind,
};
pub use resp::{FromValue, Value};
pub use runtime::{ClusterExecutor, CoreClient, ExecutorHandle, RemoteClient};

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
