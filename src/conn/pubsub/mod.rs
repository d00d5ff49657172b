//! Pub/sub on one connection: channels (`SUBSCRIBE`), patterns
//! (`PSUBSCRIBE`) and sharded channels (`SSUBSCRIBE`), delivered to
//! [`Subscription`]s that never go silently deaf.
//!
//! # Where the messages travel
//!
//! On RESP3 a subscription shares the connection's one socket with every
//! other command: messages and subscribe confirmations are push frames,
//! which never take a reply's place (each subscribe call waits for its
//! confirmation pushes, or for the error reply that replaces them). On
//! RESP2 a subscribed socket can do nothing else, so the connection opens
//! a second, dedicated connection for its subscriptions the first time one
//! is asked for, and owns it.
//!
//! A connection subscribes to a name on the server once, however many
//! subscriptions want it; its registry fans each message out to them.
//! Dropping the last subscription that wants a name unsubscribes from it.
//!
//! # Never silently deaf
//!
//! When the socket dies, every subscription notes when. The next socket
//! subscribes to every name again right after its handshake, before any
//! other command is written to it; each subscription then receives one
//! [`PubSubEvent::Gap`] (from the loss to the moment its names were
//! subscribed again) before any message that follows. A subscription
//! whose queue is full loses messages by its [`Overflow`] policy and is
//! told so with a gap too.
//!
//! Names the server drops on its own (a sharded channel whose slot moved
//! sends an unsolicited `SUNSUBSCRIBE`) or refuses when subscribing again
//! (`MOVED`, an ACL change) are reported to whoever attached them: a
//! cluster client moves them to the slot's new owner.

mod client;
mod frame;
mod inbox;
mod registry;
mod restore;

use std::future::Future;
use std::time::Instant;

use bytes::Bytes;

use crate::Error;
use crate::resp::Arg;

pub(crate) use client::Attachment;
use client::names_of;
pub(crate) use frame::{Frame, is_resp2_pubsub};
pub(crate) use inbox::{Feed, Inbox};
pub use inbox::{Overflow, Subscription};
pub(crate) use registry::{Lost, Registry, Sink};
pub(crate) use restore::restore;

/// Subscribing, on every client that can: [`Connection`](crate::Connection),
/// [`Cluster`](crate::Cluster) and [`CoreClient`](crate::CoreClient) (each
/// impl says where its subscriptions go). Code written against
/// `impl Subscribe` runs on any of them; the prelude brings it in.
///
/// ```no_run
/// use redcore::prelude::*;
/// use redcore::{Connection, PubSubEvent};
///
/// async fn first_message(client: &impl Subscribe) -> Result<Option<String>, redcore::Error> {
///     let mut news = client.subscribe(["news"]).await?;
///     while let Some(event) = news.recv().await {
///         match event {
///             PubSubEvent::Message(m) => {
///                 return Ok(Some(String::from_utf8_lossy(&m.payload).into_owned()))
///             }
///             PubSubEvent::Gap(gap) => println!("may have missed messages: {gap:?}"),
///             other => println!("{other:?}"),
///         }
///     }
///     Ok(None)
/// }
///
/// # async fn run() -> Result<(), redcore::Error> {
/// let conn = Connection::connect("redis://127.0.0.1:6379").await?;
/// println!("{:?}", first_message(&conn).await?);
/// # Ok(()) }
/// ```
pub trait Subscribe {
    /// A [`Subscription`] of `kind` to `names` (at least one; duplicates
    /// count once): what [`subscribe`](Self::subscribe),
    /// [`psubscribe`](Self::psubscribe) and [`ssubscribe`](Self::ssubscribe)
    /// call. Returns once every name is subscribed.
    fn subscribe_to(
        &self,
        kind: ChannelKind,
        names: Vec<Bytes>,
    ) -> impl Future<Output = Result<Subscription, Error>>;

    /// `SUBSCRIBE`: a [`Subscription`] to messages published on
    /// `channels`.
    fn subscribe(
        &self,
        channels: impl IntoIterator<Item = impl Arg>,
    ) -> impl Future<Output = Result<Subscription, Error>> {
        let names = names_of(ChannelKind::Channel, channels);
        async move { self.subscribe_to(ChannelKind::Channel, names?).await }
    }

    /// `PSUBSCRIBE`: a [`Subscription`] to messages published on every
    /// channel matching one of `patterns` (keyspace notifications are
    /// patterns too: `__keyspace@0__:*`). Each message says which pattern
    /// matched.
    fn psubscribe(
        &self,
        patterns: impl IntoIterator<Item = impl Arg>,
    ) -> impl Future<Output = Result<Subscription, Error>> {
        let names = names_of(ChannelKind::Pattern, patterns);
        async move { self.subscribe_to(ChannelKind::Pattern, names?).await }
    }

    /// `SSUBSCRIBE` (Redis 7): a [`Subscription`] to sharded channels.
    fn ssubscribe(
        &self,
        channels: impl IntoIterator<Item = impl Arg>,
    ) -> impl Future<Output = Result<Subscription, Error>> {
        let names = names_of(ChannelKind::Shard, channels);
        async move { self.subscribe_to(ChannelKind::Shard, names?).await }
    }
}

/// The three kinds of subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChannelKind {
    /// `SUBSCRIBE`: a channel, by name.
    Channel,
    /// `PSUBSCRIBE`: every channel matching a glob-style pattern.
    Pattern,
    /// `SSUBSCRIBE`: a sharded channel, served by the node owning its
    /// slot in a cluster.
    Shard,
}

impl ChannelKind {
    /// The command subscribing to names of this kind.
    pub(crate) fn subscribe_command(self) -> &'static str {
        match self {
            ChannelKind::Channel => "SUBSCRIBE",
            ChannelKind::Pattern => "PSUBSCRIBE",
            ChannelKind::Shard => "SSUBSCRIBE",
        }
    }

    /// The command unsubscribing from names of this kind.
    pub(crate) fn unsubscribe_command(self) -> &'static str {
        match self {
            ChannelKind::Channel => "UNSUBSCRIBE",
            ChannelKind::Pattern => "PUNSUBSCRIBE",
            ChannelKind::Shard => "SUNSUBSCRIBE",
        }
    }
}

/// Encodes the subscribe (or unsubscribe) of `names` into `out`.
pub(crate) fn encode_command(
    out: &mut bytes::BytesMut,
    kind: ChannelKind,
    unsubscribe: bool,
    names: &[Bytes],
) {
    let command = if unsubscribe {
        kind.unsubscribe_command()
    } else {
        kind.subscribe_command()
    };
    crate::resp::write_array_header(out, 1 + names.len());
    crate::resp::write_arg(out, command);
    for n in names {
        crate::resp::write_arg(out, n);
    }
}

/// One message received on a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// How it was subscribed to.
    pub kind: ChannelKind,
    /// The channel it was published to.
    pub channel: Bytes,
    /// The pattern that matched the channel, for [`ChannelKind::Pattern`].
    pub pattern: Option<Bytes>,
    /// What was published.
    pub payload: Bytes,
}

/// Why messages may have been missed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GapCause {
    /// The socket was lost; the subscription's names were subscribed
    /// again on a new one (or on another node).
    Reconnected,
    /// The subscription's queue was full and messages were dropped (see
    /// [`Overflow`]).
    Overflow,
    /// The server stopped serving a name (a sharded channel's slot moved,
    /// a node failed) and the subscription was moved to another node.
    Moved,
    /// A push frame larger than
    /// [`max_reply_bytes`](crate::resp::DecoderLimits::max_reply_bytes)
    /// was skipped unread: it may have been a message for this
    /// subscription (every subscription of the connection is told).
    Skipped,
}

/// Messages published in `from..to` may have been missed by the
/// subscription that receives this (messages published before or after
/// were delivered, in order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// When the subscription stopped hearing (the socket was found dead,
    /// the first message was dropped).
    pub from: Instant,
    /// When it heard again (the names were subscribed again, the last
    /// message was dropped).
    pub to: Instant,
    /// How many messages were dropped, when known (overflow only: a lost
    /// socket cannot say what it missed).
    pub missed: Option<u64>,
    /// Why.
    pub cause: GapCause,
}

/// What a [`Subscription`] yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PubSubEvent {
    /// A message.
    Message(Message),
    /// Messages may have been missed (see [`Gap`]); it comes before the
    /// first message after the gap.
    Gap(Gap),
    /// The server stopped serving a name of this subscription and no
    /// client above the connection moved it elsewhere: it unsubscribed on
    /// its own (a sharded channel whose slot moved, seen on a plain
    /// connection), or refused it when it was subscribed again after a
    /// reconnect (`error`: a permission taken away, `MOVED`). No more
    /// messages come for that name.
    Unsubscribed {
        /// The kind of the name.
        kind: ChannelKind,
        /// The name.
        name: Bytes,
        /// The server's error, when it refused.
        error: Option<crate::ServerError>,
    },
}
