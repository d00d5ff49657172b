//! Hashes: `HGET`, `HSET`, `HGETALL`, ...

use std::future::Future;

use super::Commands;
use crate::cmd::cmd;
use crate::resp::Arg;
use crate::{Error, FromValue};

/// Commands on hashes; every [`Commands`] has them.
pub trait HashCommands: Commands {
    /// `HGET`: the value of `field`; nil when the field or the key does
    /// not exist (ask for `Option<String>`).
    fn hget<T: FromValue>(
        &self,
        key: impl Arg,
        field: impl Arg,
    ) -> impl Future<Output = Result<T, Error>> {
        self.command(cmd("HGET").arg(key).arg(field))
    }

    /// `HSET`: sets each field to its value; the number of fields added
    /// (fields that existed are updated, not counted).
    fn hset<F: Arg, V: Arg>(
        &self,
        key: impl Arg,
        fields: &[(F, V)],
    ) -> impl Future<Output = Result<u64, Error>> {
        let mut c = cmd("HSET").arg(key);
        for (f, v) in fields {
            c.push_arg(f).push_arg(v);
        }
        self.command(c)
    }

    /// `HMGET`: the values of `fields`, in their order, nil for a missing
    /// one (ask for `Vec<Option<String>>`).
    fn hmget<T: FromValue, F: Arg>(
        &self,
        key: impl Arg,
        fields: &[F],
    ) -> impl Future<Output = Result<T, Error>> {
        self.command(cmd("HMGET").arg(key).args(fields))
    }

    /// `HGETALL`: every field and value (ask for `HashMap<String,
    /// String>` or `Vec<(String, String)>`); empty when the key does not
    /// exist.
    fn hgetall<T: FromValue>(&self, key: impl Arg) -> impl Future<Output = Result<T, Error>> {
        self.command(cmd("HGETALL").arg(key))
    }

    /// `HDEL`: the number of fields removed.
    fn hdel<F: Arg>(
        &self,
        key: impl Arg,
        fields: &[F],
    ) -> impl Future<Output = Result<u64, Error>> {
        self.command(cmd("HDEL").arg(key).args(fields))
    }

    /// `HEXISTS`: whether the field exists.
    fn hexists(&self, key: impl Arg, field: impl Arg) -> impl Future<Output = Result<bool, Error>> {
        self.command(cmd("HEXISTS").arg(key).arg(field))
    }

    /// `HINCRBY`: the field's value after adding `by` (a missing field
    /// counts as 0).
    fn hincrby(
        &self,
        key: impl Arg,
        field: impl Arg,
        by: i64,
    ) -> impl Future<Output = Result<i64, Error>> {
        self.command(cmd("HINCRBY").arg(key).arg(field).arg(by))
    }

    /// `HLEN`: the number of fields.
    fn hlen(&self, key: impl Arg) -> impl Future<Output = Result<u64, Error>> {
        self.command(cmd("HLEN").arg(key))
    }

    /// `HKEYS`: the field names (ask for `Vec<String>`).
    fn hkeys<T: FromValue>(&self, key: impl Arg) -> impl Future<Output = Result<T, Error>> {
        self.command(cmd("HKEYS").arg(key))
    }

    /// `HVALS`: the values (ask for `Vec<String>`).
    fn hvals<T: FromValue>(&self, key: impl Arg) -> impl Future<Output = Result<T, Error>> {
        self.command(cmd("HVALS").arg(key))
    }
}

impl<C: Commands> HashCommands for C {}
