//! Subscribing through a [`Connection`]: which socket carries the
//! subscriptions, attaching to names and detaching from them.

use std::rc::Rc;

use bytes::{Bytes, BytesMut};

use super::registry::Sink;
use super::restore::command_groups;
use super::{ChannelKind, Feed, Inbox, Subscription};
use crate::Error;
use crate::config::Protocol;
use crate::conn::Connection;
use crate::conn::mux::{Admit, Call, Queue};
use crate::join::join_all;
use crate::resp::{Arg, write_arg, write_array_header};

impl Connection {
    /// `SUBSCRIBE`: a [`Subscription`] to messages published on
    /// `channels`. Returns once the server confirmed every channel.
    ///
    /// On RESP3 the subscription shares this connection's socket with
    /// every other command; on RESP2 it goes on a second connection this
    /// one opens and owns. It lives through reconnects (see
    /// [`pubsub`](crate::pubsub)): after one, it receives a
    /// [`Gap`](crate::pubsub::Gap) before the next message.
    ///
    /// ```no_run
    /// use redcore::prelude::*;
    /// use redcore::{Connection, PubSubEvent};
    ///
    /// # async fn run() -> Result<(), redcore::Error> {
    /// let conn = Connection::connect("redis://127.0.0.1:6379").await?;
    /// let mut news = conn.subscribe(["news"]).await?;
    /// conn.publish("news", "hello").await?;
    /// while let Some(event) = news.recv().await {
    ///     match event {
    ///         PubSubEvent::Message(m) => println!("{:?}", m.payload),
    ///         PubSubEvent::Gap(gap) => println!("may have missed messages: {gap:?}"),
    ///         other => println!("{other:?}"),
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn subscribe(
        &self,
        channels: impl IntoIterator<Item = impl Arg>,
    ) -> Result<Subscription, Error> {
        self.subscription(ChannelKind::Channel, channels).await
    }

    /// `PSUBSCRIBE`: a [`Subscription`] to messages published on every
    /// channel matching one of `patterns` (keyspace notifications are
    /// patterns too: `__keyspace@0__:*`). Each message says which pattern
    /// matched.
    pub async fn psubscribe(
        &self,
        patterns: impl IntoIterator<Item = impl Arg>,
    ) -> Result<Subscription, Error> {
        self.subscription(ChannelKind::Pattern, patterns).await
    }

    /// `SSUBSCRIBE`: a [`Subscription`] to sharded channels (Redis 7).
    /// On a plain connection they must be served by this server; a
    /// cluster client sends each to its slot's owner and follows it when
    /// the slot moves.
    pub async fn ssubscribe(
        &self,
        channels: impl IntoIterator<Item = impl Arg>,
    ) -> Result<Subscription, Error> {
        self.subscription(ChannelKind::Shard, channels).await
    }

    async fn subscription(
        &self,
        kind: ChannelKind,
        names: impl IntoIterator<Item = impl Arg>,
    ) -> Result<Subscription, Error> {
        let names = names_of(kind, names)?;
        let c = &self.shared.config;
        let inbox = Inbox::new(
            c.subscription_capacity,
            c.subscription_max_bytes,
            c.subscription_overflow,
        );
        let attachment = self.attach(kind, names, inbox.clone()).await?;
        Ok(Subscription::new(inbox, Box::new(attachment)))
    }

    /// Attaches `sink` to `names` on the socket carrying this
    /// connection's subscriptions, subscribing on the server to those no
    /// other attachment wants yet. `sink` is called with the connection
    /// borrowed: it must not call into it.
    pub(crate) async fn attach(
        &self,
        kind: ChannelKind,
        names: Vec<Bytes>,
        sink: Rc<dyn Sink>,
    ) -> Result<Attachment, Error> {
        let carrier = self.carrier().await?;
        let id = carrier
            .shared
            .mux
            .borrow_mut()
            .pubsub
            .attach(kind, &names, sink);
        let attachment = Attachment {
            carrier,
            id,
            kind,
            names,
            live: true,
        };
        // Every name is subscribed by this attachment's own calls, even
        // one another attachment wants: that one's subscribe may still be
        // unconfirmed, and then withdrawn or refused (the server takes a
        // name twice as once). Sharded channels go one slot per command.
        let groups = groups_of(kind, &attachment.names);
        let confirmed = join_all(
            groups
                .into_iter()
                .map(|(_, group)| attachment.carrier.confirmed(kind, false, group)),
        )
        .await;
        for result in confirmed {
            match result {
                // Written and lost with the socket: the next socket
                // subscribes again, and the subscription gets its gap.
                Ok(()) | Err(Error::ConnectionLost) => {}
                // Dropping the attachment unsubscribes from what no one
                // else wants (a subscribe that timed out may yet run).
                Err(e) => return Err(e),
            }
        }
        Ok(attachment)
    }

    /// The connection carrying subscriptions: this one on RESP3 (or if
    /// it is itself the dedicated one), else its dedicated RESP2
    /// connection, opened now if need be.
    async fn carrier(&self) -> Result<Connection, Error> {
        let plain = Connection {
            watch: None,
            timeout: None,
            ..self.clone()
        };
        if self.shared.mux.borrow().resp2_pubsub || self.protocol() == Protocol::Resp3 {
            return Ok(plain);
        }
        if let Some(c) = self.shared.pubsub_link.borrow().as_ref() {
            return Ok(c.clone());
        }
        let mut config = self.shared.config.clone();
        config.protocol = Protocol::Resp2;
        let made = Connection::connect(config).await?;
        made.shared.mux.borrow_mut().resp2_pubsub = true;
        // Another task may have made one while this one connected.
        let mut link = self.shared.pubsub_link.borrow_mut();
        if let Some(c) = link.as_ref() {
            made.close();
            return Ok(c.clone());
        }
        *link = Some(made.clone());
        Ok(made)
    }

    /// Sends a subscribe (or unsubscribe) of `names` and waits for every
    /// confirmation, or the error that replaces them.
    async fn confirmed(
        &self,
        kind: ChannelKind,
        unsubscribe: bool,
        names: Vec<Bytes>,
    ) -> Result<(), Error> {
        let call = Call {
            watch: None,
            timeout: self.timeout.unwrap_or(self.shared.config.timeout),
            replies: 1,
            gather: false,
            detached: false,
            blocking: false,
        };
        let reply = self
            .queue_and_wait(
                &call,
                |out| encode(out, kind, unsubscribe, &names),
                |st| st.expect_confirmations(kind, unsubscribe, names.clone()),
            )
            .await?;
        reply.into_result().map(drop)
    }

    /// Unsubscribes from `names` without waiting: queued now when there
    /// is room, else by a task of its own.
    fn unsubscribe_later(&self, kind: ChannelKind, names: Vec<Bytes>) {
        // Sharded channels one slot per command, as when subscribing.
        for (_, group) in groups_of(kind, &names) {
            self.unsubscribe_group_later(kind, group);
        }
    }

    fn unsubscribe_group_later(&self, kind: ChannelKind, names: Vec<Bytes>) {
        let config = &self.shared.config;
        let call = Call {
            watch: None,
            timeout: config.timeout,
            replies: 1,
            gather: false,
            detached: true,
            blocking: false,
        };
        let mut waiter = None;
        let mut st = self.shared.mux.borrow_mut();
        match st.admit(
            config,
            &call,
            &mut |out| encode(out, kind, true, &names),
            &mut waiter,
        ) {
            Ok(Admit::Queued(_)) => st.expect_confirmations(kind, true, names),
            Ok(Admit::Wait) => {
                if let Some(key) = waiter {
                    st.leave(Queue::Calls, key);
                }
                drop(st);
                let conn = self.clone();
                glommio::spawn_local(async move {
                    let _ = conn.confirmed(kind, true, names).await;
                })
                .detach();
            }
            // Closed, or the server unreachable: the next socket will not
            // subscribe to them again either.
            Err(_) => {}
        }
    }
}

/// `names` split into commands: sharded channels one slot per command (a
/// cluster refuses a command whose channels span slots).
fn groups_of(kind: ChannelKind, names: &[Bytes]) -> Vec<(ChannelKind, Vec<Bytes>)> {
    command_groups(names.iter().map(|n| (kind, n.clone())).collect())
}

fn encode(out: &mut BytesMut, kind: ChannelKind, unsubscribe: bool, names: &[Bytes]) {
    let command = if unsubscribe {
        kind.unsubscribe_command()
    } else {
        kind.subscribe_command()
    };
    write_array_header(out, 1 + names.len());
    write_arg(out, command);
    for n in names {
        write_arg(out, n);
    }
}

/// The names of a subscribe call, deduplicated; at least one.
pub(crate) fn names_of(
    kind: ChannelKind,
    names: impl IntoIterator<Item = impl Arg>,
) -> Result<Vec<Bytes>, Error> {
    let mut out: Vec<Bytes> = Vec::new();
    for n in names {
        let b = n.with_bytes(Bytes::copy_from_slice);
        if !out.contains(&b) {
            out.push(b);
        }
    }
    if out.is_empty() {
        return Err(Error::MalformedCommand {
            command: kind.subscribe_command().to_owned(),
            reason: "a subscription needs at least one name",
        });
    }
    Ok(out)
}

/// One attachment of a sink to names on a connection; dropping it
/// detaches, unsubscribing on the server from names no one else wants.
pub(crate) struct Attachment {
    carrier: Connection,
    id: u64,
    kind: ChannelKind,
    names: Vec<Bytes>,
    live: bool,
}

impl Attachment {
    /// The names still attached.
    pub fn names(&self) -> &[Bytes] {
        &self.names
    }

    /// Detaches from some of the names (unsubscribing on the server from
    /// those no one else wants); the others stay attached.
    pub fn detach_some(&mut self, names: &[Bytes]) {
        let (gone_here, kept): (Vec<Bytes>, Vec<Bytes>) =
            self.names.drain(..).partition(|n| names.contains(n));
        self.names = kept;
        if gone_here.is_empty() {
            return;
        }
        let gone = self
            .carrier
            .shared
            .mux
            .borrow_mut()
            .pubsub
            .detach(self.id, self.kind, &gone_here);
        if !gone.is_empty() && !self.carrier.shared.is_closed() {
            self.carrier.unsubscribe_later(self.kind, gone);
        }
    }
}

impl Feed for Attachment {
    fn unsubscribe(
        mut self: Box<Self>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Error>>>> {
        Box::pin(async move {
            if !std::mem::take(&mut self.live) {
                return Ok(());
            }
            let gone =
                self.carrier
                    .shared
                    .mux
                    .borrow_mut()
                    .pubsub
                    .detach(self.id, self.kind, &self.names);
            if gone.is_empty() || self.carrier.shared.is_closed() {
                return Ok(());
            }
            let kind = self.kind;
            let carrier = &self.carrier;
            let done = join_all(
                groups_of(kind, &gone)
                    .into_iter()
                    .map(|(_, group)| carrier.confirmed(kind, true, group)),
            )
            .await;
            for result in done {
                match result {
                    // The socket went with them: nothing is subscribed
                    // again.
                    Ok(()) | Err(Error::ConnectionLost) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        if !std::mem::take(&mut self.live) {
            return;
        }
        let gone =
            self.carrier
                .shared
                .mux
                .borrow_mut()
                .pubsub
                .detach(self.id, self.kind, &self.names);
        if !gone.is_empty() && !self.carrier.shared.is_closed() {
            self.carrier.unsubscribe_later(self.kind, gone);
        }
    }
}
