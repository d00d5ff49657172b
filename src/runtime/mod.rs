//! The thread-per-core runtime: [`ClusterExecutor::spawn_per_core`].
//!
//! It starts one glommio executor per chosen CPU, pinned there, and runs
//! your async function on each with a [`CoreClient`]: the
//! [`Cluster`](crate::Cluster) API on that core. Every node is *owned* by
//! one core, and only the owner holds connections to it: masters, sorted by
//! address, go round the cores, other nodes go by a hash of their address.
//! A command whose node this core owns runs on this core's connection; any
//! other travels to the owner over glommio's shared channels and its reply
//! comes back the same way. What one core has for another during one turn
//! of its executor (requests, replies, topology news) leaves as one channel
//! message, so a hop is paid per batch, not per command.
//! [`Ownership::EveryCore`] lets every core connect to every node instead
//! (no hops; cores × nodes connections).
//!
//! One core, the first peer of the mesh, refreshes the topology for all
//! (other cores ask it to, and wait for its answer when they must); each
//! refresh that changes the map reaches every core with its epoch. A
//! `MOVED` seen on any core corrects that slot on every core at once. When
//! the master list changes, ownership follows: a core links to a node's new
//! owner, and calls in flight on the old connection finish there.
//!
//! Each core's [`CoreClient`] is a [`Cluster`](crate::Cluster) whose router
//! reaches the nodes other cores own through this core's end of the channel
//! mesh: the mesh implements the cluster layer's interface to a router's
//! peers (ownership, calls to a node owned elsewhere, the refresh leader,
//! spreading `MOVED` corrections and new topologies), and serves the calls
//! other cores send here on this core's router. The cluster layer knows
//! nodes and peers, never cores.
//!
//! Code that is not on these executors (a plain thread, a tokio runtime)
//! uses a [`RemoteClient`] ([`ExecutorHandle::remote`]): its calls enter a
//! core through a channel of their own and run there like that core's
//! calls, with the same deadlines.
//!
//! [`ExecutorHandle::join`] waits for every core's function and returns
//! each result, or a [`CoreError`] (a panic in one core's function is
//! reported there; the other cores go on). When every function has
//! returned, or on [`ExecutorHandle::shutdown`], the runtime shuts down
//! gracefully: new calls fail with [`Error::Closed`](crate::Error::Closed),
//! calls in flight get their reply or error within the drain timeout, then
//! connections close and the executors end.
//!
//! ```no_run
//! use redcore::Commands;
//! use redcore::runtime::ClusterExecutor;
//!
//! let handle = ClusterExecutor::spawn_per_core("127.0.0.1:7000", |client| async move {
//!     let key = format!("counter:{}", client.core());
//!     client.command::<()>(["SET", key.as_str(), "0"]).await?;
//!     client.command::<i64>(["INCR", key.as_str()]).await
//! })?;
//! for (core, result) in handle.join().into_iter().enumerate() {
//!     println!("core {core}: {:?}", result?);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

// The per-core client; the executor that starts the cores and runs each
// one's life; the channel mesh between cores; the client for code off the
// executors.
mod caching;
mod commands;
mod core_client;
mod executor;
mod fanout;
pub(crate) mod mesh;
mod overdue;
mod pubsub;
mod remote_client;
mod scan;

pub use core_client::CoreClient;
pub use executor::{ClusterExecutor, CoreError, ExecutorHandle, Ownership};
pub use mesh::HopStats;
pub use remote_client::RemoteClient;
pub use scan::RemoteScan;
