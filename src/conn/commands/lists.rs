//! Lists: `LPUSH`, `RPOP`, `LRANGE`, `BLPOP`, ...

use std::future::Future;
use std::time::Duration;

use super::Commands;
use crate::cmd::cmd;
use crate::resp::Arg;
use crate::{Error, FromValue};

/// Commands on lists; every [`Commands`] has them.
pub trait ListCommands: Commands {
    /// `LPUSH`: inserts the values at the head, one after the other (the
    /// last one ends up first); the list's length after.
    fn lpush<V: Arg>(
        &self,
        key: impl Arg,
        values: &[V],
    ) -> impl Future<Output = Result<u64, Error>> {
        self.command(cmd("LPUSH").arg(key).args(values))
    }

    /// `RPUSH`: appends the values at the tail, in order; the list's
    /// length after.
    fn rpush<V: Arg>(
        &self,
        key: impl Arg,
        values: &[V],
    ) -> impl Future<Output = Result<u64, Error>> {
        self.command(cmd("RPUSH").arg(key).args(values))
    }

    /// `LPOP`: removes and returns the first element; nil when the list is
    /// empty (ask for `Option<String>`).
    fn lpop<T: FromValue>(&self, key: impl Arg) -> impl Future<Output = Result<T, Error>> {
        self.command(cmd("LPOP").arg(key))
    }

    /// `LPOP key count`: removes and returns up to `count` elements from
    /// the head (ask for `Vec<String>`: empty when the list is).
    fn lpop_count<T: FromValue>(
        &self,
        key: impl Arg,
        count: u64,
    ) -> impl Future<Output = Result<T, Error>> {
        self.command(cmd("LPOP").arg(key).arg(count))
    }

    /// `RPOP`: removes and returns the last element; nil when the list is
    /// empty.
    fn rpop<T: FromValue>(&self, key: impl Arg) -> impl Future<Output = Result<T, Error>> {
        self.command(cmd("RPOP").arg(key))
    }

    /// `RPOP key count`: removes and returns up to `count` elements from
    /// the tail, last first.
    fn rpop_count<T: FromValue>(
        &self,
        key: impl Arg,
        count: u64,
    ) -> impl Future<Output = Result<T, Error>> {
        self.command(cmd("RPOP").arg(key).arg(count))
    }

    /// `LRANGE`: the elements from `start` to `stop` (inclusive; from 0,
    /// negative counts from the end: `0, -1` is the whole list).
    fn lrange<T: FromValue>(
        &self,
        key: impl Arg,
        start: i64,
        stop: i64,
    ) -> impl Future<Output = Result<T, Error>> {
        self.command(cmd("LRANGE").arg(key).arg(start).arg(stop))
    }

    /// `LLEN`: the list's length.
    fn llen(&self, key: impl Arg) -> impl Future<Output = Result<u64, Error>> {
        self.command(cmd("LLEN").arg(key))
    }

    /// `LREM`: removes elements equal to `value`: the first `count` from
    /// the head (negative: from the tail; 0: all); how many it removed.
    fn lrem(
        &self,
        key: impl Arg,
        count: i64,
        value: impl Arg,
    ) -> impl Future<Output = Result<u64, Error>> {
        self.command(cmd("LREM").arg(key).arg(count).arg(value))
    }

    /// `LTRIM`: keeps only the elements from `start` to `stop`.
    fn ltrim(
        &self,
        key: impl Arg,
        start: i64,
        stop: i64,
    ) -> impl Future<Output = Result<(), Error>> {
        self.command(cmd("LTRIM").arg(key).arg(start).arg(stop))
    }

    /// `BLPOP`: pops the first element of the first non-empty list of
    /// `keys`, waiting up to `timeout` (zero: for ever) for one; the key
    /// and the element, or nil at the timeout (ask for
    /// `Option<(String, String)>`).
    ///
    /// The call keeps its client's deadline: give a longer one than
    /// `timeout` (`with_timeout` on the client) or the call fails with
    /// [`Error::Timeout`] first.
    fn blpop<T: FromValue, K: Arg>(
        &self,
        keys: &[K],
        timeout: Duration,
    ) -> impl Future<Output = Result<T, Error>> {
        self.command(cmd("BLPOP").args(keys).arg(timeout.as_secs_f64()))
    }

    /// `BRPOP`: as [`blpop`](Self::blpop), popping the last element.
    fn brpop<T: FromValue, K: Arg>(
        &self,
        keys: &[K],
        timeout: Duration,
    ) -> impl Future<Output = Result<T, Error>> {
        self.command(cmd("BRPOP").args(keys).arg(timeout.as_secs_f64()))
    }
}

impl<C: Commands> ListCommands for C {}
