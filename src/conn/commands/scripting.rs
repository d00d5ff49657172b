//! Lua scripts and functions: the [`Script`] type (`EVALSHA`, loaded again
//! transparently after `NOSCRIPT`) and [`ScriptCommands`] (`FCALL`,
//! `FCALL_RO`, `SCRIPT LOAD`, `FUNCTION LOAD`).

use std::future::Future;

use bytes::Bytes;

use super::Commands;
use crate::cmd::{Cmd, cmd};
use crate::error::{ServerError, ServerErrorKind};
use crate::resp::Arg;
use crate::{Error, FromValue, Value};

/// A Lua script: its source, and the SHA-1 of the source, computed once
/// when the `Script` is made.
///
/// [`invoke`](Self::invoke) runs it on any [`Commands`] client with
/// `EVALSHA`, so that only the 40-character digest travels on each call.
/// When the server answers `NOSCRIPT` (it does not have the script, for
/// instance after a restart, a failover to a replica that never saw it,
/// or `SCRIPT FLUSH`), nothing ran, so the call is sent once more as
/// `EVAL` with the whole source: that runs the script and leaves it in the
/// server's cache, and later calls are `EVALSHA` again.
///
/// Why `EVAL` rather than `SCRIPT LOAD` and a second `EVALSHA`: `EVAL`
/// carries the same keys as the `EVALSHA` it replaces, so a cluster client
/// routes it to the very node that said `NOSCRIPT` (the master of the
/// keys' slot, following `MOVED`/`ASK` as for any keyed command), where a
/// keyless `SCRIPT LOAD` would be routed elsewhere or to every master; it
/// is one round trip instead of two; and it cannot meet `NOSCRIPT` again,
/// so no `SCRIPT FLUSH` between a load and a retry can make the call fail.
/// The cost: the whole source travels each time a node turns out not to
/// have the script. (Recent servers may evict scripts cached by `EVAL`
/// once there are hundreds of them, where `SCRIPT LOAD`ed ones stay; an
/// evicted script costs one more `NOSCRIPT` and `EVAL`, nothing else.)
///
/// On a cluster client the keys must share one slot (use hash tags), as
/// for any command: keys in several slots are [`Error::CrossSlot`] before
/// anything is sent. A script without keys goes where the client sends a
/// keyless command: on a [`Cluster`](crate::Cluster), a master chosen at
/// random for each command, so the `EVAL` that follows a `NOSCRIPT` may go
/// to another master than the one that said `NOSCRIPT`. That is harmless
/// (`NOSCRIPT` proved nothing ran; the script runs once, where the `EVAL`
/// lands, and is cached there), but the node that lacked the script still
/// lacks it, and a later call that lands there pays one more `NOSCRIPT`
/// and `EVAL`. To have a keyless script on every master, `SCRIPT LOAD` it
/// first through `Cluster::command`, whose policy sends `SCRIPT LOAD` to
/// every node (see [`Cluster`](crate::Cluster)).
///
/// ```no_run
/// use std::sync::LazyLock;
///
/// use redcore::prelude::*;
/// use redcore::{Error, Script};
///
/// // Hashed once per process.
/// static ADD_CAPPED: LazyLock<Script> = LazyLock::new(|| {
///     Script::new(
///         "local v = redis.call('INCRBY', KEYS[1], ARGV[1]) \
///          local cap = tonumber(ARGV[2]) \
///          if v > cap then redis.call('SET', KEYS[1], cap) return cap end \
///          return v",
///     )
/// });
///
/// /// Adds `n` to a counter, up to `cap`, on any client.
/// async fn add_capped(client: &impl Commands, key: &str, n: i64, cap: i64) -> Result<i64, Error> {
///     ADD_CAPPED.invoke(client, &[key], &[n, cap]).await
/// }
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Script {
    source: Bytes,
    sha1: String,
}

impl Script {
    /// A script with this Lua source; computes its SHA-1 (the name the
    /// server knows it by) now, once.
    pub fn new(source: impl Into<String>) -> Script {
        let source: String = source.into();
        let sha1 = sha1_smol::Sha1::from(source.as_bytes())
            .digest()
            .to_string();
        Script {
            source: Bytes::from(source),
            sha1,
        }
    }

    /// The source, as given to [`new`](Self::new).
    pub fn source(&self) -> &str {
        // Built from a String and never changed.
        std::str::from_utf8(&self.source).unwrap_or_default()
    }

    /// The SHA-1 of the source in lower-case hex, as `SCRIPT LOAD` returns
    /// it and `EVALSHA` takes it.
    pub fn sha1(&self) -> &str {
        &self.sha1
    }

    /// Runs the script with `EVALSHA sha1 numkeys keys... args...` on
    /// `client` and converts its reply. On `NOSCRIPT` (the server does not
    /// have the script, so nothing ran) it is sent once more as `EVAL`
    /// with the source and the same keys, which routes it the same way
    /// (on a cluster, to the keys' master: the node that said `NOSCRIPT`
    /// unless the slot moved in between) and loads and runs it in one
    /// round trip (see the [type's documentation](Script)).
    ///
    /// An error raised by the script, or by a command it calls, is
    /// `Err(Error::Server(..))`, as is any other error reply; none of
    /// those is retried. Only the server's own refusal, whose text starts
    /// with `NOSCRIPT No matching script`, is taken for `NOSCRIPT`: a
    /// script's own error whose text starts with `NOSCRIPT` comes back as
    /// it is. (A script that raises exactly that text is taken at its
    /// word and run a second time, as `EVAL`: nothing on the wire tells
    /// the two apart.) On a [`Cluster`](crate::Cluster), likewise, a
    /// refusal the router would follow or retry (`MOVED`, `ASK`,
    /// `TRYAGAIN`, `CLUSTERDOWN`, `LOADING`, `BUSY`, ...) is taken as one
    /// only in the server's own words, so a script's own error with such a
    /// first word (or `NOSCRIPT`) is returned, not run again, as
    /// [`Error::ScriptError`], which says it may have been applied. On a
    /// cluster client, keys in several slots are [`Error::CrossSlot`] and
    /// nothing is sent.
    ///
    /// With a [`RemoteClient`](crate::RemoteClient), the future is `Send`
    /// when the keys and arguments are `Sync`.
    pub async fn invoke<T: FromValue, K: Arg, A: Arg>(
        &self,
        client: &(impl Commands + ?Sized),
        keys: &[K],
        args: &[A],
    ) -> Result<T, Error> {
        self.run(client, Flavour::ReadWrite, keys, args).await
    }

    /// [`invoke`](Self::invoke) with `EVALSHA_RO` (and `EVAL_RO` after
    /// `NOSCRIPT`): the server refuses to run a write command from the
    /// script, and the call counts as a read
    /// ([`is_read_only`](crate::cmd::is_read_only)), which a client may
    /// send again after losing the connection with it in flight. Needs
    /// Redis 7.
    pub async fn invoke_ro<T: FromValue, K: Arg, A: Arg>(
        &self,
        client: &(impl Commands + ?Sized),
        keys: &[K],
        args: &[A],
    ) -> Result<T, Error> {
        self.run(client, Flavour::ReadOnly, keys, args).await
    }

    /// The `EVALSHA` command [`invoke`](Self::invoke) sends, for a
    /// pipeline or a transaction. There, a `NOSCRIPT` reply comes back as
    /// it is (as a [`Value::Error`] in a pipeline's replies): nothing
    /// loads the script again. Invoke the script once on the node, or
    /// `SCRIPT LOAD` it there, before.
    pub fn evalsha_cmd<K: Arg, A: Arg>(&self, keys: &[K], args: &[A]) -> Cmd {
        call("EVALSHA", &self.sha1, keys, args)
    }

    async fn run<T: FromValue, K: Arg, A: Arg>(
        &self,
        client: &(impl Commands + ?Sized),
        flavour: Flavour,
        keys: &[K],
        args: &[A],
    ) -> Result<T, Error> {
        let (by_sha, by_source) = match flavour {
            Flavour::ReadWrite => ("EVALSHA", "EVAL"),
            Flavour::ReadOnly => ("EVALSHA_RO", "EVAL_RO"),
        };
        let reply = client
            .command::<Value>(call(by_sha, &self.sha1, keys, args))
            .await;
        match reply {
            Err(Error::Server(e)) if is_missing_script(&e) => {
                client
                    .command(call(by_source, &self.source, keys, args))
                    .await
            }
            reply => T::from_value(reply?),
        }
    }
}

impl std::fmt::Debug for Script {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Script")
            .field("sha1", &self.sha1)
            .field("source_len", &self.source.len())
            .finish()
    }
}

/// The start of the server's own reply to an `EVALSHA` of a script it does
/// not have (`NOSCRIPT No matching script. Please use EVAL.` on Redis 6
/// and 7).
const MISSING_SCRIPT: &[u8] = b"NOSCRIPT No matching script";

/// True only for the server's own `NOSCRIPT` refusal, which proves the
/// script did not run: not for an error the script raised itself whose
/// text merely starts with `NOSCRIPT` (`redis.error_reply('NOSCRIPT x')`).
fn is_missing_script(e: &ServerError) -> bool {
    e.kind() == ServerErrorKind::NoScript && e.message().starts_with(MISSING_SCRIPT)
}

/// Which pair of commands runs a script.
#[derive(Clone, Copy)]
enum Flavour {
    /// `EVALSHA`, then `EVAL`.
    ReadWrite,
    /// `EVALSHA_RO`, then `EVAL_RO`.
    ReadOnly,
}

/// `name script numkeys keys... args...`: the shape of `EVAL`, `EVALSHA`,
/// `FCALL` and their read-only variants.
fn call<K: Arg, A: Arg>(name: &str, script: impl Arg, keys: &[K], args: &[A]) -> Cmd {
    cmd(name).arg(script).arg(keys.len()).args(keys).args(args)
}

/// Functions (`FCALL`, `FCALL_RO`, `FUNCTION LOAD`) and loading scripts
/// by hand (`SCRIPT LOAD`); every [`Commands`] has them. To run a Lua
/// script, [`Script::invoke`] is usually what you want.
///
/// On a cluster client, `FCALL` and `FCALL_RO` are routed by their keys,
/// which must share one slot ([`Error::CrossSlot`] otherwise, nothing
/// sent); the function's library must have been loaded on that slot's
/// master. Through `Cluster::command`, `SCRIPT LOAD` reaches every node
/// and `FUNCTION LOAD` every master, as their policies say (see `command`
/// on [`Cluster`](crate::Cluster)); a node that fails makes the call
/// [`Error::Fanout`](crate::Error::Fanout), naming the nodes that loaded
/// it.
pub trait ScriptCommands: Commands {
    /// `FCALL function numkeys keys... args...`: calls a function of a
    /// loaded library and converts its reply. An error raised by the
    /// function is `Err(Error::Server(..))`; on a cluster client, one
    /// whose first word reads like a cluster refusal (`TRYAGAIN`,
    /// `MOVED`, ...) is `Err(Error::ScriptError(..))` and is not retried.
    fn fcall<T: FromValue, K: Arg, A: Arg>(
        &self,
        function: impl Arg,
        keys: &[K],
        args: &[A],
    ) -> impl Future<Output = Result<T, Error>> {
        self.command(call("FCALL", function, keys, args))
    }

    /// `FCALL_RO`: [`fcall`](Self::fcall) for a function declared with the
    /// `no-writes` flag; the call counts as a read
    /// ([`is_read_only`](crate::cmd::is_read_only)).
    fn fcall_ro<T: FromValue, K: Arg, A: Arg>(
        &self,
        function: impl Arg,
        keys: &[K],
        args: &[A],
    ) -> impl Future<Output = Result<T, Error>> {
        self.command(call("FCALL_RO", function, keys, args))
    }

    /// `FUNCTION LOAD [REPLACE] code`: loads a library of functions and
    /// returns its name. Without `replace`, loading a library whose name
    /// is already loaded is a server error.
    fn function_load(
        &self,
        code: impl Arg,
        replace: bool,
    ) -> impl Future<Output = Result<String, Error>> {
        let mut c = cmd("FUNCTION").arg("LOAD");
        if replace {
            c.push_arg("REPLACE");
        }
        self.command(c.arg(code))
    }

    /// `SCRIPT LOAD source`: puts a script in the server's cache without
    /// running it and returns its SHA-1 (the same as [`Script::sha1`]).
    fn script_load(&self, source: impl Arg) -> impl Future<Output = Result<String, Error>> {
        self.command(cmd("SCRIPT").arg("LOAD").arg(source))
    }
}

impl<C: Commands> ScriptCommands for C {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::{Args, Route};
    use crate::slot::key_slot;

    #[test]
    fn sha1_is_the_one_redis_computes() {
        // `redis-cli SCRIPT LOAD "return 1"`.
        let s = Script::new("return 1");
        assert_eq!(s.sha1(), "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
        assert_eq!(s.source(), "return 1");
        assert_eq!(Script::new(String::from("return 1")), s);
    }

    #[test]
    fn evalsha_carries_numkeys_keys_and_args() {
        let s = Script::new("return 1");
        let c = s.evalsha_cmd(&["{a}1", "{a}2"], &[7, 8]);
        let args: Vec<&[u8]> = c.iter().collect();
        assert_eq!(
            args,
            [
                &b"EVALSHA"[..],
                s.sha1().as_bytes(),
                b"2",
                b"{a}1",
                b"{a}2",
                b"7",
                b"8"
            ]
        );
        assert_eq!(c.route().unwrap(), Route::Slot(key_slot(b"a")));
    }

    #[test]
    fn keys_in_two_slots_are_cross_slot_before_sending() {
        let s = Script::new("return 1");
        let err = s.evalsha_cmd(&["a", "b"], &[0u8; 0]).route().unwrap_err();
        assert!(matches!(err, Error::CrossSlot { .. }), "{err:?}");
        // The arguments are not keys.
        let c = call("FCALL_RO", "f", &["{x}1"], &["a", "b"]);
        assert_eq!(c.route().unwrap(), Route::Slot(key_slot(b"x")));
        assert!(crate::cmd::is_read_only(&c));
    }
}
