//! Publishing: `PUBLISH` and `SPUBLISH`. Subscribing is not a command
//! (it returns a [`Subscription`](crate::Subscription)): see
//! [`Connection::subscribe`](crate::Connection::subscribe) and the
//! [`pubsub`](crate::pubsub) module.

use std::future::Future;

use super::Commands;
use crate::Error;
use crate::cmd::cmd;
use crate::resp::Arg;

/// Publishing to channels and sharded channels; every [`Commands`] has
/// it.
pub trait PubSubCommands: Commands {
    /// `PUBLISH`: sends `message` to the subscribers of `channel`; how
    /// many received it (in a cluster: on the node that took it).
    fn publish(
        &self,
        channel: impl Arg,
        message: impl Arg,
    ) -> impl Future<Output = Result<u64, Error>> {
        self.command(cmd("PUBLISH").arg(channel).arg(message))
    }

    /// `SPUBLISH` (Redis 7): sends `message` to the subscribers of the
    /// sharded channel `channel` (in a cluster, on the node owning its
    /// slot); how many received it.
    fn spublish(
        &self,
        channel: impl Arg,
        message: impl Arg,
    ) -> impl Future<Output = Result<u64, Error>> {
        self.command(cmd("SPUBLISH").arg(channel).arg(message))
    }
}

impl<C: Commands> PubSubCommands for C {}
