//! [`Commands`]: what every client does — [`Connection`], [`Cluster`],
//! [`CoreClient`], [`RemoteClient`] — so that code can be written once for
//! all of them; and typed helpers for the commands used most, one trait per
//! kind of value ([`StringCommands`], [`KeyCommands`], [`HashCommands`],
//! [`ListCommands`], [`SetCommands`], [`SortedSetCommands`],
//! [`StreamCommands`], [`PubSubCommands`]), each implemented for every
//! [`Commands`]; and scripts: [`Script`] and [`ScriptCommands`].
//!
//! Bring them into scope with the prelude:
//!
//! ```no_run
//! use redcore::prelude::*;
//! use redcore::Error;
//!
//! /// Counts a visit on any client: a connection, a cluster, a core of
//! /// the per-core runtime, or a remote client.
//! async fn visit(client: &impl Commands, page: &str) -> Result<i64, Error> {
//!     let key = format!("visits:{page}");
//!     let n = client.incr(&key).await?;
//!     client.expire(&key, 3600).await?;
//!     Ok(n)
//! }
//! ```
//!
//! # Replies
//!
//! The type parameter of a helper is the type the whole reply converts
//! into ([`FromValue`]): `Option<String>` for a `GET` that may find
//! nothing, `Vec<String>` for `LRANGE`, `HashMap<String, String>` or
//! `Vec<(String, String)>` for `HGETALL`, `Vec<(String, f64)>` for
//! `ZRANGE ... WITHSCORES`. RESP2 and RESP3 replies convert alike. Counts,
//! lengths, flags and scores have fixed types (`u64`, `i64`, `bool`,
//! `f64`). A server error is `Err(Error::Server(..))`.
//!
//! # Keys in a cluster
//!
//! On a cluster client, a command's keys must share one slot (use hash
//! tags, `{user:1}.name`), else [`Error::CrossSlot`] and nothing is sent,
//! except for [`mget`](Commands::mget), [`mset`](Commands::mset),
//! [`del`](Commands::del), [`unlink`](Commands::unlink),
//! [`exists`](Commands::exists) and [`touch`](Commands::touch), which split
//! their keys by slot there.
//!
//! [`Cluster`]: crate::Cluster
//! [`CoreClient`]: crate::CoreClient
//! [`RemoteClient`]: crate::RemoteClient

mod caching;
mod hashes;
mod keys;
mod lists;
mod pubsub;
mod scripting;
mod sets;
mod sorted_sets;
mod streams;
mod strings;

use std::future::Future;

pub use caching::CacheCommands;
pub use hashes::HashCommands;
pub use keys::{ExpireCondition, KeyCommands};
pub use lists::ListCommands;
pub use pubsub::PubSubCommands;
pub use scripting::{Script, ScriptCommands};
pub use sets::SetCommands;
pub use sorted_sets::SortedSetCommands;
pub use streams::{StreamCommands, StreamRead, StreamTrim};
pub use strings::{Expiry, SetOptions, StringCommands};

use super::{Connection, WATCH_RETRIES, Watch};
use crate::cmd::{Args, cmd};
use crate::resp::Arg;
use crate::{Error, FromValue, Value};

/// The function of a watch transaction: it reads what it needs through
/// the [`Connection`] it is given (the one holding the `WATCH`) and
/// returns the commands to run ([`Watch::Exec`]) or an abort
/// ([`Watch::Abort`]). Any `async` closure `async |c: &Connection| ...`
/// returning `Result<Watch, Error>` is one; it may be called again when a
/// watched key changed.
///
/// [`Commands::watch_transaction`] asks for `WatchFn + Send + 'static`
/// (the per-core clients may run it on another core);
/// [`Connection::watch_transaction`] and
/// [`Cluster::watch_transaction`](crate::Cluster::watch_transaction) run it
/// in place and take any `WatchFn`, one that borrows local state too.
pub trait WatchFn: AsyncFnMut(&Connection) -> Result<Watch, Error> {}

impl<F: AsyncFnMut(&Connection) -> Result<Watch, Error>> WatchFn for F {}

/// Anything that runs Redis commands: [`Connection`],
/// [`Cluster`](crate::Cluster), [`CoreClient`](crate::CoreClient) and
/// [`RemoteClient`](crate::RemoteClient).
///
/// Write a function once for every client by taking `&impl Commands` (the
/// [module documentation](self) has an example). The typed helpers
/// ([`StringCommands::get`], [`HashCommands::hset`], ...) come with it;
/// `use redcore::prelude::*` brings every one into scope.
///
/// The futures are not `Send` in general (the clients of a glommio
/// executor stay on their core); those of a [`RemoteClient`](crate::RemoteClient)
/// are, when its arguments are.
pub trait Commands {
    /// Sends one command and converts its reply. A server error reply is
    /// `Err(Error::Server(..))`.
    ///
    /// `args` is a [`Cmd`](crate::Cmd) or any slice, array or vector of
    /// arguments: `client.command::<Option<String>>(["GET", "k"])`.
    fn command<T: FromValue>(&self, args: impl Args) -> impl Future<Output = Result<T, Error>>;

    /// Sends commands as a pipeline and returns one reply per command, in
    /// order. Server errors come back inline as [`Value::Error`].
    fn pipeline<A: Args>(
        &self,
        cmds: impl IntoIterator<Item = A>,
    ) -> impl Future<Output = Result<Vec<Value>, Error>>;

    /// Runs commands in `MULTI`/`EXEC` and returns their replies. An
    /// `EXEC` that returns nil is [`Error::TransactionAborted`].
    fn transaction<A: Args>(
        &self,
        cmds: impl IntoIterator<Item = A>,
    ) -> impl Future<Output = Result<Vec<Value>, Error>>;

    /// An optimistic transaction: `WATCH keys`, then `f` reads what it
    /// needs through the connection it is given and returns the commands
    /// to run ([`Watch::Exec`]) or an abort; they run in `MULTI`/`EXEC`.
    /// If a watched key changed, everything is tried again, up to
    /// `max_retries` more times, and then fails with
    /// [`Error::WatchConflict`].
    ///
    /// `f` is `Send + 'static` here because the per-core clients may run
    /// it on the core that owns the keys' node (the future it returns
    /// need not be `Send`). [`Connection`] and [`Cluster`](crate::Cluster)
    /// run it in place: their own `watch_transaction` methods, which a
    /// call on those types reaches first, take any function, one that
    /// borrows local state too.
    fn watch_transaction_with_retries<K: Arg, F: WatchFn + Send + 'static>(
        &self,
        keys: &[K],
        max_retries: u32,
        f: F,
    ) -> impl Future<Output = Result<Vec<Value>, Error>>;

    /// [`watch_transaction_with_retries`](Self::watch_transaction_with_retries)
    /// with 3 retries.
    fn watch_transaction<K: Arg, F: WatchFn + Send + 'static>(
        &self,
        keys: &[K],
        f: F,
    ) -> impl Future<Output = Result<Vec<Value>, Error>> {
        self.watch_transaction_with_retries(keys, WATCH_RETRIES, f)
    }

    /// `MGET`: the values of `keys`, in their order (nil for a key that
    /// does not exist: ask for `Vec<Option<String>>`). No keys is an empty
    /// array, and nothing is sent. A cluster client sends one `MGET` per
    /// slot.
    fn mget<T: FromValue, K: Arg>(&self, keys: &[K]) -> impl Future<Output = Result<T, Error>> {
        async move {
            if keys.is_empty() {
                return T::from_value(Value::Array(Vec::new()));
            }
            self.command(cmd("MGET").args(keys)).await
        }
    }

    /// `MSET`: sets every key to its value. A cluster client sends one
    /// `MSET` per slot: each slot's keys are set atomically, the whole is
    /// not. No pairs sends nothing.
    fn mset<K: Arg, V: Arg>(&self, pairs: &[(K, V)]) -> impl Future<Output = Result<(), Error>> {
        async move {
            if pairs.is_empty() {
                return Ok(());
            }
            let mut c = cmd("MSET");
            for (k, v) in pairs {
                c.push_arg(k).push_arg(v);
            }
            self.command(c).await
        }
    }

    /// `DEL`: the number of keys removed.
    fn del<K: Arg>(&self, keys: &[K]) -> impl Future<Output = Result<u64, Error>> {
        count_keys(self, "DEL", keys)
    }

    /// `UNLINK`: the number of keys removed (their memory is freed in the
    /// background).
    fn unlink<K: Arg>(&self, keys: &[K]) -> impl Future<Output = Result<u64, Error>> {
        count_keys(self, "UNLINK", keys)
    }

    /// `EXISTS`: how many of the keys exist (a key given twice counts
    /// twice, as in Redis).
    fn exists<K: Arg>(&self, keys: &[K]) -> impl Future<Output = Result<u64, Error>> {
        count_keys(self, "EXISTS", keys)
    }

    /// `TOUCH`: the number of keys touched (their last access time
    /// updated).
    fn touch<K: Arg>(&self, keys: &[K]) -> impl Future<Output = Result<u64, Error>> {
        count_keys(self, "TOUCH", keys)
    }
}

/// A command counting keys (`DEL`, `EXISTS`, ...) as one command; no keys
/// is 0, and nothing is sent.
async fn count_keys<C: Commands + ?Sized, K: Arg>(
    client: &C,
    name: &str,
    keys: &[K],
) -> Result<u64, Error> {
    if keys.is_empty() {
        return Ok(0);
    }
    client.command(cmd(name).args(keys)).await
}
