//! Sorted sets: `ZADD`, `ZRANGE`, `ZSCORE`, ...

use std::future::Future;

use super::Commands;
use crate::cmd::cmd;
use crate::resp::Arg;
use crate::{Error, FromValue};

/// Commands on sorted sets; every [`Commands`] has them.
pub trait SortedSetCommands: Commands {
    /// `ZADD`: adds each member with its score, or updates its score;
    /// the number of members added. Pairs are `(member, score)`, the order
    /// [`zrange_withscores`](Self::zrange_withscores) gives them back in.
    fn zadd<M: Arg>(
        &self,
        key: impl Arg,
        members: &[(M, f64)],
    ) -> impl Future<Output = Result<u64, Error>> {
        let mut c = cmd("ZADD").arg(key);
        for (member, score) in members {
            c.push_arg(score).push_arg(member);
        }
        self.command(c)
    }

    /// `ZREM`: the number of members removed.
    fn zrem<M: Arg>(
        &self,
        key: impl Arg,
        members: &[M],
    ) -> impl Future<Output = Result<u64, Error>> {
        self.command(cmd("ZREM").arg(key).args(members))
    }

    /// `ZSCORE`: the member's score, `None` if it is not in the set.
    fn zscore(
        &self,
        key: impl Arg,
        member: impl Arg,
    ) -> impl Future<Output = Result<Option<f64>, Error>> {
        self.command(cmd("ZSCORE").arg(key).arg(member))
    }

    /// `ZINCRBY`: the member's score after adding `by` (a new member
    /// starts at 0).
    fn zincrby(
        &self,
        key: impl Arg,
        by: f64,
        member: impl Arg,
    ) -> impl Future<Output = Result<f64, Error>> {
        self.command(cmd("ZINCRBY").arg(key).arg(by).arg(member))
    }

    /// `ZRANGE key start stop`: the members ranked `start` to `stop`
    /// (inclusive; from 0, negative counts from the end), lowest score
    /// first (ask for `Vec<String>`).
    fn zrange<T: FromValue>(
        &self,
        key: impl Arg,
        start: i64,
        stop: i64,
    ) -> impl Future<Output = Result<T, Error>> {
        self.command(cmd("ZRANGE").arg(key).arg(start).arg(stop))
    }

    /// `ZRANGE key start stop WITHSCORES`: as [`zrange`](Self::zrange),
    /// each member with its score (ask for `Vec<(String, f64)>`; RESP2
    /// and RESP3 replies convert alike).
    fn zrange_withscores<T: FromValue>(
        &self,
        key: impl Arg,
        start: i64,
        stop: i64,
    ) -> impl Future<Output = Result<T, Error>> {
        self.command(
            cmd("ZRANGE")
                .arg(key)
                .arg(start)
                .arg(stop)
                .arg("WITHSCORES"),
        )
    }

    /// `ZRANK`: the member's rank, lowest score first, from 0; `None` if
    /// it is not in the set.
    fn zrank(
        &self,
        key: impl Arg,
        member: impl Arg,
    ) -> impl Future<Output = Result<Option<u64>, Error>> {
        self.command(cmd("ZRANK").arg(key).arg(member))
    }

    /// `ZCARD`: the number of members.
    fn zcard(&self, key: impl Arg) -> impl Future<Output = Result<u64, Error>> {
        self.command(cmd("ZCARD").arg(key))
    }
}

impl<C: Commands> SortedSetCommands for C {}
