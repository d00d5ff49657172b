//! Subscribing through a [`Connection`]: which socket carries the
//! subscriptions, attaching to names and detaching from them.

use std::rc::Rc;

use bytes::Bytes;

use super::registry::Sink;
use super::restore::command_groups;
use super::{ChannelKind, Feed, Inbox, Subscribe, Subscription, encode_command};
use crate::Error;
use crate::config::Protocol;
use crate::conn::Connection;
use crate::conn::mux::Call;
use crate::join::join_all;
use crate::resp::Arg;

/// On a connection: on RESP3 the subscription shares this connection's
/// socket with every other command; on RESP2 it goes on a second
/// connection this one opens and owns. Returns once the server confirmed
/// every name. It lives through reconnects (see [`pubsub`](crate::pubsub)):
/// after one, it receives a [`Gap`](crate::pubsub::Gap) before the next
/// message. Sharded channels must be served by this server.
impl Subscribe for Connection {
    async fn subscribe_to(
        &self,
        kind: ChannelKind,
        names: Vec<Bytes>,
    ) -> Result<Subscription, Error> {
        let inbox = Inbox::for_config(&self.shared.config);
        let attachment = self.attach(kind, names, inbox.clone()).await?;
        Ok(Subscription::new(inbox, Box::new(attachment)))
    }
}

impl Connection {
    /// Attaches `sink` to `names` on the socket carrying this
    /// connection's subscriptions and subscribes to every one of them on
    /// the server. `sink` is called with the connection borrowed: it must
    /// not call into it.
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
                |out| encode_command(out, kind, unsubscribe, &names),
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
        let mut st = self.shared.mux.borrow_mut();
        let queued = st.queue_detached(&self.shared.config, &mut |out| {
            encode_command(out, kind, true, &names)
        });
        match queued {
            Ok(true) => st.expect_confirmations(kind, true, names),
            Ok(false) => {
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
        let gone = self.detach(&gone_here);
        if !gone.is_empty() {
            self.carrier.unsubscribe_later(self.kind, gone);
        }
    }

    /// Detaches every name (once): the names no one else wants, to
    /// unsubscribe from.
    fn release(&mut self) -> Vec<Bytes> {
        if !std::mem::take(&mut self.live) {
            return Vec::new();
        }
        let names = std::mem::take(&mut self.names);
        self.detach(&names)
    }

    /// Detaches `names` from the registry: those no one else wants, to
    /// unsubscribe from (none once the connection is closed).
    fn detach(&self, names: &[Bytes]) -> Vec<Bytes> {
        let gone = self
            .carrier
            .shared
            .mux
            .borrow_mut()
            .pubsub
            .detach(self.id, self.kind, names);
        if self.carrier.shared.is_closed() {
            return Vec::new();
        }
        gone
    }
}

impl Feed for Attachment {
    fn unsubscribe(
        mut self: Box<Self>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Error>>>> {
        Box::pin(async move {
            let gone = self.release();
            if gone.is_empty() {
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
        let gone = self.release();
        if !gone.is_empty() {
            self.carrier.unsubscribe_later(self.kind, gone);
        }
    }
}
