//! Sets: `SADD`, `SMEMBERS`, ...

use std::future::Future;

use super::Commands;
use crate::cmd::cmd;
use crate::resp::Arg;
use crate::{Error, FromValue};

/// Commands on sets; every [`Commands`] has them.
pub trait SetCommands: Commands {
    /// `SADD`: the number of members added (those already there are not
    /// counted).
    fn sadd<M: Arg>(
        &self,
        key: impl Arg,
        members: &[M],
    ) -> impl Future<Output = Result<u64, Error>> {
        self.command(cmd("SADD").arg(key).args(members))
    }

    /// `SREM`: the number of members removed.
    fn srem<M: Arg>(
        &self,
        key: impl Arg,
        members: &[M],
    ) -> impl Future<Output = Result<u64, Error>> {
        self.command(cmd("SREM").arg(key).args(members))
    }

    /// `SMEMBERS`: every member (ask for `HashSet<String>` or
    /// `Vec<String>`).
    fn smembers<T: FromValue>(&self, key: impl Arg) -> impl Future<Output = Result<T, Error>> {
        self.command(cmd("SMEMBERS").arg(key))
    }

    /// `SISMEMBER`: whether `member` is in the set.
    fn sismember(
        &self,
        key: impl Arg,
        member: impl Arg,
    ) -> impl Future<Output = Result<bool, Error>> {
        self.command(cmd("SISMEMBER").arg(key).arg(member))
    }

    /// `SCARD`: the number of members.
    fn scard(&self, key: impl Arg) -> impl Future<Output = Result<u64, Error>> {
        self.command(cmd("SCARD").arg(key))
    }
}

impl<C: Commands> SetCommands for C {}
