//! Keys whatever their value: expiry, type, renaming. `DEL`, `UNLINK`,
//! `EXISTS` and `TOUCH` are [`Commands`] methods (a cluster client splits
//! them by slot).

use std::future::Future;

use super::Commands;
use crate::Error;
use crate::cmd::cmd;
use crate::resp::Arg;

/// When `EXPIRE`/`PEXPIRE` set the expiry ([`KeyCommands::expire_if`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpireCondition {
    /// `NX`: only if the key has no expiry.
    Nx,
    /// `XX`: only if the key has an expiry.
    Xx,
    /// `GT`: only if the new expiry is later than the current one (a key
    /// without expiry counts as expiring never).
    Gt,
    /// `LT`: only if the new expiry is sooner than the current one.
    Lt,
}

impl ExpireCondition {
    fn name(self) -> &'static str {
        match self {
            ExpireCondition::Nx => "NX",
            ExpireCondition::Xx => "XX",
            ExpireCondition::Gt => "GT",
            ExpireCondition::Lt => "LT",
        }
    }
}

/// Commands on keys of any type; every [`Commands`] has them.
pub trait KeyCommands: Commands {
    /// `EXPIRE`: the key expires in `seconds`; false if it does not exist.
    fn expire(&self, key: impl Arg, seconds: u64) -> impl Future<Output = Result<bool, Error>> {
        self.command(cmd("EXPIRE").arg(key).arg(seconds))
    }

    /// `EXPIRE ... NX|XX|GT|LT`: as [`expire`](Self::expire), only when
    /// `condition` holds; whether the expiry was set.
    fn expire_if(
        &self,
        key: impl Arg,
        seconds: u64,
        condition: ExpireCondition,
    ) -> impl Future<Output = Result<bool, Error>> {
        self.command(cmd("EXPIRE").arg(key).arg(seconds).arg(condition.name()))
    }

    /// `PEXPIRE`: the key expires in `millis` milliseconds; false if it
    /// does not exist.
    fn pexpire(&self, key: impl Arg, millis: u64) -> impl Future<Output = Result<bool, Error>> {
        self.command(cmd("PEXPIRE").arg(key).arg(millis))
    }

    /// `PEXPIRE ... NX|XX|GT|LT`: as [`pexpire`](Self::pexpire), only when
    /// `condition` holds; whether the expiry was set.
    fn pexpire_if(
        &self,
        key: impl Arg,
        millis: u64,
        condition: ExpireCondition,
    ) -> impl Future<Output = Result<bool, Error>> {
        self.command(cmd("PEXPIRE").arg(key).arg(millis).arg(condition.name()))
    }

    /// `TTL`: seconds until the key expires; -1 if it has no expiry, -2 if
    /// it does not exist.
    fn ttl(&self, key: impl Arg) -> impl Future<Output = Result<i64, Error>> {
        self.command(cmd("TTL").arg(key))
    }

    /// `PTTL`: milliseconds until the key expires; -1 if it has no
    /// expiry, -2 if it does not exist.
    fn pttl(&self, key: impl Arg) -> impl Future<Output = Result<i64, Error>> {
        self.command(cmd("PTTL").arg(key))
    }

    /// `PERSIST`: removes the key's expiry; whether it had one.
    fn persist(&self, key: impl Arg) -> impl Future<Output = Result<bool, Error>> {
        self.command(cmd("PERSIST").arg(key))
    }

    /// `TYPE`: the type of the key's value (`"string"`, `"list"`,
    /// `"hash"`, `"set"`, `"zset"`, `"stream"`), `"none"` when it does not
    /// exist.
    fn key_type(&self, key: impl Arg) -> impl Future<Output = Result<String, Error>> {
        self.command(cmd("TYPE").arg(key))
    }

    /// `RENAME`: renames the key, replacing `new_key` if it exists; an
    /// error if `key` does not exist. On a cluster both keys must share a
    /// slot.
    fn rename(&self, key: impl Arg, new_key: impl Arg) -> impl Future<Output = Result<(), Error>> {
        self.command(cmd("RENAME").arg(key).arg(new_key))
    }
}

impl<C: Commands> KeyCommands for C {}
