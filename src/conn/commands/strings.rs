//! String values and counters: `GET`, `SET` with its options, `INCR`, ...

use std::future::Future;

use super::Commands;
use crate::cmd::{Cmd, cmd};
use crate::resp::Arg;
use crate::{Error, FromValue};

/// When a key expires, as `SET` and `GETEX` take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// `EX`: in this many seconds.
    Ex(u64),
    /// `PX`: in this many milliseconds.
    Px(u64),
    /// `EXAT`: at this Unix time, in seconds.
    ExAt(u64),
    /// `PXAT`: at this Unix time, in milliseconds.
    PxAt(u64),
}

impl Expiry {
    fn push_to(self, c: &mut Cmd) {
        let (name, n) = match self {
            Expiry::Ex(n) => ("EX", n),
            Expiry::Px(n) => ("PX", n),
            Expiry::ExAt(n) => ("EXAT", n),
            Expiry::PxAt(n) => ("PXAT", n),
        };
        c.push_arg(name).push_arg(n);
    }
}

/// The options of `SET` ([`StringCommands::set_with`]): when it sets
/// (`NX`, `XX`), what expiry the key gets (`EX`, `PX`, `EXAT`, `PXAT`,
/// `KEEPTTL`), and whether it returns the old value (`GET`).
///
/// ```
/// use redcore::commands::{Expiry, SetOptions};
///
/// // SET key value NX EX 60
/// let options = SetOptions::new().nx().expiry(Expiry::Ex(60));
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetOptions {
    condition: Option<&'static str>,
    expiry: Option<Expiry>,
    keep_ttl: bool,
    get: bool,
}

impl SetOptions {
    /// No option: a plain `SET`.
    pub fn new() -> SetOptions {
        SetOptions::default()
    }

    /// `NX`: set only if the key does not exist (replaces `XX`).
    pub fn nx(mut self) -> SetOptions {
        self.condition = Some("NX");
        self
    }

    /// `XX`: set only if the key exists (replaces `NX`).
    pub fn xx(mut self) -> SetOptions {
        self.condition = Some("XX");
        self
    }

    /// The key's expiry (replaces `keep_ttl`). Without one, `SET`
    /// removes any expiry the key had.
    pub fn expiry(mut self, expiry: Expiry) -> SetOptions {
        self.expiry = Some(expiry);
        self.keep_ttl = false;
        self
    }

    /// `KEEPTTL`: keep the key's current expiry (replaces `expiry`).
    pub fn keep_ttl(mut self) -> SetOptions {
        self.keep_ttl = true;
        self.expiry = None;
        self
    }

    /// `GET`: the reply is the old value (nil if there was none) instead
    /// of `OK`.
    pub fn get(mut self) -> SetOptions {
        self.get = true;
        self
    }

    fn push_to(self, c: &mut Cmd) {
        if let Some(condition) = self.condition {
            c.push_arg(condition);
        }
        if self.get {
            c.push_arg("GET");
        }
        if let Some(expiry) = self.expiry {
            expiry.push_to(c);
        }
        if self.keep_ttl {
            c.push_arg("KEEPTTL");
        }
    }
}

/// Commands on string values and counters; every [`Commands`] has them.
pub trait StringCommands: Commands {
    /// `GET`: the value; nil when the key does not exist (ask for
    /// `Option<String>`).
    fn get<T: FromValue>(&self, key: impl Arg) -> impl Future<Output = Result<T, Error>> {
        self.command(cmd("GET").arg(key))
    }

    /// `SET`: sets the value, removing any expiry.
    fn set(&self, key: impl Arg, value: impl Arg) -> impl Future<Output = Result<(), Error>> {
        self.command(cmd("SET").arg(key).arg(value))
    }

    /// `SET` with options. The reply: `OK`, or nil when `NX`/`XX` kept it
    /// from setting (ask for `bool`: whether it set); with `GET`, the old
    /// value (ask for `Option<String>`).
    fn set_with<T: FromValue>(
        &self,
        key: impl Arg,
        value: impl Arg,
        options: SetOptions,
    ) -> impl Future<Output = Result<T, Error>> {
        let mut c = cmd("SET").arg(key).arg(value);
        options.push_to(&mut c);
        self.command(c)
    }

    /// `SET ... NX`: sets the value only if the key does not exist;
    /// whether it did.
    fn set_nx(&self, key: impl Arg, value: impl Arg) -> impl Future<Output = Result<bool, Error>> {
        self.set_with(key, value, SetOptions::new().nx())
    }

    /// `GETDEL`: the value (nil if none), and the key deleted.
    fn getdel<T: FromValue>(&self, key: impl Arg) -> impl Future<Output = Result<T, Error>> {
        self.command(cmd("GETDEL").arg(key))
    }

    /// `GETEX`: the value (nil if none), and the key's expiry set to
    /// `expiry`, or removed (`PERSIST`) when it is `None`.
    fn getex<T: FromValue>(
        &self,
        key: impl Arg,
        expiry: Option<Expiry>,
    ) -> impl Future<Output = Result<T, Error>> {
        let mut c = cmd("GETEX").arg(key);
        match expiry {
            Some(e) => e.push_to(&mut c),
            None => {
                c.push_arg("PERSIST");
            }
        }
        self.command(c)
    }

    /// `APPEND`: the length of the value after appending.
    fn append(&self, key: impl Arg, value: impl Arg) -> impl Future<Output = Result<u64, Error>> {
        self.command(cmd("APPEND").arg(key).arg(value))
    }

    /// `STRLEN`: the length of the value (0 when the key does not exist).
    fn strlen(&self, key: impl Arg) -> impl Future<Output = Result<u64, Error>> {
        self.command(cmd("STRLEN").arg(key))
    }

    /// `INCR`: the value after adding 1 (a missing key counts as 0).
    fn incr(&self, key: impl Arg) -> impl Future<Output = Result<i64, Error>> {
        self.command(cmd("INCR").arg(key))
    }

    /// `INCRBY`: the value after adding `by`.
    fn incrby(&self, key: impl Arg, by: i64) -> impl Future<Output = Result<i64, Error>> {
        self.command(cmd("INCRBY").arg(key).arg(by))
    }

    /// `DECR`: the value after subtracting 1.
    fn decr(&self, key: impl Arg) -> impl Future<Output = Result<i64, Error>> {
        self.command(cmd("DECR").arg(key))
    }

    /// `DECRBY`: the value after subtracting `by`.
    fn decrby(&self, key: impl Arg, by: i64) -> impl Future<Output = Result<i64, Error>> {
        self.command(cmd("DECRBY").arg(key).arg(by))
    }

    /// `INCRBYFLOAT`: the value after adding `by`.
    fn incrbyfloat(&self, key: impl Arg, by: f64) -> impl Future<Output = Result<f64, Error>> {
        self.command(cmd("INCRBYFLOAT").arg(key).arg(by))
    }
}

impl<C: Commands> StringCommands for C {}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(c: &Cmd) -> Vec<String> {
        c.iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect()
    }

    #[test]
    fn set_options_in_the_order_redis_documents() {
        let mut c = cmd("SET").arg("k").arg("v");
        SetOptions::new()
            .get()
            .expiry(Expiry::PxAt(5))
            .xx()
            .push_to(&mut c);
        assert_eq!(args(&c), ["SET", "k", "v", "XX", "GET", "PXAT", "5"]);

        let mut c = cmd("SET");
        SetOptions::new()
            .expiry(Expiry::Ex(1))
            .keep_ttl()
            .nx()
            .push_to(&mut c);
        assert_eq!(
            args(&c),
            ["SET", "NX", "KEEPTTL"],
            "keep_ttl replaces expiry"
        );

        let mut c = cmd("SET");
        SetOptions::new()
            .keep_ttl()
            .expiry(Expiry::ExAt(9))
            .push_to(&mut c);
        assert_eq!(args(&c), ["SET", "EXAT", "9"], "expiry replaces keep_ttl");
    }
}
