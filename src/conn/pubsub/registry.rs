//! Who wants which name: the subscriptions attached to one connection,
//! by kind and name, and the gaps they are owed.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;

use super::{ChannelKind, Gap, GapCause, Message};
use crate::ServerError;

/// Why a name stopped being served.
#[derive(Debug, Clone)]
pub(crate) enum Lost {
    /// The server unsubscribed it on its own (`SUNSUBSCRIBE` pushed when a
    /// sharded channel's slot moved away).
    Dropped,
    /// Subscribing again (after a reconnect) was refused.
    Refused(ServerError),
}

/// Where a connection hands what it hears for one attachment.
pub(crate) trait Sink {
    /// A message for a name the attachment wants.
    fn message(&self, message: Message);
    /// Messages may have been missed.
    fn gap(&self, gap: Gap);
    /// The server stopped serving `name`; the attachment no longer holds
    /// it.
    fn lost(&self, kind: ChannelKind, name: &Bytes, why: Lost);
    /// The connection closed for good: nothing more comes.
    fn closed(&self);
    /// The socket was lost at `at`; the names will be subscribed again on
    /// the next one, and a [`gap`](Self::gap) follows then.
    fn disconnected(&self, _at: Instant) {}
}

struct Attached {
    id: u64,
    sink: Rc<dyn Sink>,
}

/// The attachments of one connection (see the module docs of
/// [`super`]). A name is subscribed on the server while at least one
/// attachment wants it.
#[derive(Default)]
pub(crate) struct Registry {
    /// Per kind (channels, patterns, sharded channels), the attachments
    /// wanting each name: looked up by the bytes of a message's channel
    /// or pattern, with no copy.
    names: [HashMap<Bytes, Vec<Attached>>; 3],
    next_id: u64,
    /// Attachments owed a gap: since when they may have missed messages.
    /// Filled when the socket is lost, emptied when the names are
    /// subscribed again (or before an attachment's next message).
    owed: HashMap<u64, (Rc<dyn Sink>, Instant)>,
}

impl Registry {
    /// True when no name is wanted.
    pub fn is_empty(&self) -> bool {
        self.names.iter().all(HashMap::is_empty)
    }

    /// Attaches `sink` to `names`; returns the attachment's id.
    pub fn attach(&mut self, kind: ChannelKind, names: &[Bytes], sink: Rc<dyn Sink>) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        for name in names {
            let list = self.names[kind as usize].entry(name.clone()).or_default();
            if list.iter().any(|a| a.id == id) {
                continue; // a name given twice
            }
            list.push(Attached {
                id,
                sink: sink.clone(),
            });
        }
        id
    }

    /// Detaches attachment `id` from `names`; returns the names nobody
    /// wants any more (to unsubscribe from on the server).
    pub fn detach(&mut self, id: u64, kind: ChannelKind, names: &[Bytes]) -> Vec<Bytes> {
        let mut gone = Vec::new();
        let map = &mut self.names[kind as usize];
        for name in names {
            let Some(list) = map.get_mut(&name[..]) else {
                continue;
            };
            list.retain(|a| a.id != id);
            if list.is_empty() {
                map.remove(&name[..]);
                gone.push(name.clone());
            }
        }
        self.owed.remove(&id);
        gone
    }

    /// Hands a message to every attachment wanting its channel (or, for
    /// a pattern, its pattern), after the gap it is owed, if any.
    pub fn deliver(&mut self, message: Message) {
        let name = match &message.pattern {
            Some(p) => p,
            None => &message.channel,
        };
        let Some(list) = self.names[message.kind as usize].get(&name[..]) else {
            return; // unsubscribed meanwhile
        };
        if !self.owed.is_empty() {
            let now = Instant::now();
            for a in list {
                if let Some((sink, from)) = self.owed.remove(&a.id) {
                    sink.gap(reconnected(from, now));
                }
            }
        }
        match list.as_slice() {
            [one] => one.sink.message(message),
            many => {
                for a in many {
                    a.sink.message(message.clone());
                }
            }
        }
    }

    /// A gap for every attachment wanting `name` (told by whoever serves
    /// the name for this registry: the per-core runtime's home core).
    pub fn gap_for(&mut self, kind: ChannelKind, name: &Bytes, gap: Gap) {
        if let Some(list) = self.names[kind as usize].get(&name[..]) {
            for a in list {
                a.sink.gap(gap);
            }
        }
    }

    /// A gap for every attachment (once each): something that may have
    /// been a message for any of them was lost.
    pub fn gap_all(&mut self, gap: Gap) {
        let mut told = std::collections::HashSet::new();
        for list in self.names.iter().flat_map(HashMap::values) {
            for a in list {
                if told.insert(a.id) {
                    a.sink.gap(gap);
                }
            }
        }
    }

    /// The server stopped serving `name` (or refused it): every
    /// attachment wanting it is told and no longer holds it.
    pub fn lose(&mut self, kind: ChannelKind, name: &Bytes, why: Lost) {
        let Some(list) = self.names[kind as usize].remove(&name[..]) else {
            return;
        };
        for a in list {
            a.sink.lost(kind, name, why.clone());
        }
    }

    /// The socket was lost at `at`: every attachment is owed a gap from
    /// then (an earlier loss not yet made good keeps its time).
    pub fn on_socket_lost(&mut self, at: Instant) {
        for list in self.names.iter().flat_map(HashMap::values) {
            for a in list {
                self.owed.entry(a.id).or_insert_with(|| {
                    a.sink.disconnected(at);
                    (a.sink.clone(), at)
                });
            }
        }
    }

    /// Every name was subscribed again: the gaps still owed are paid.
    pub fn on_restored(&mut self, now: Instant) {
        for (_, (sink, from)) in self.owed.drain() {
            sink.gap(reconnected(from, now));
        }
    }

    /// The names wanted, by kind (for subscribing again).
    pub fn wanted(&self) -> Vec<(ChannelKind, Bytes)> {
        KINDS
            .iter()
            .flat_map(|&k| self.names[k as usize].keys().map(move |n| (k, n.clone())))
            .collect()
    }

    /// The connection closed for good: every attachment is told, once.
    pub fn close(&mut self) {
        let mut told = std::collections::HashSet::new();
        for (_, list) in self.names.iter_mut().flat_map(HashMap::drain) {
            for a in list {
                if told.insert(a.id) {
                    a.sink.closed();
                }
            }
        }
        self.owed.clear();
    }
}

/// The kinds, in the order of `ChannelKind`'s discriminants.
const KINDS: [ChannelKind; 3] = [
    ChannelKind::Channel,
    ChannelKind::Pattern,
    ChannelKind::Shard,
];

fn reconnected(from: Instant, to: Instant) -> Gap {
    Gap {
        from,
        to,
        missed: None,
        cause: GapCause::Reconnected,
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    #[derive(Default)]
    struct Log(RefCell<Vec<String>>);

    impl Sink for Log {
        fn message(&self, m: Message) {
            self.0
                .borrow_mut()
                .push(format!("msg {}", String::from_utf8_lossy(&m.payload)));
        }
        fn gap(&self, _: Gap) {
            self.0.borrow_mut().push("gap".into());
        }
        fn lost(&self, _: ChannelKind, name: &Bytes, _: Lost) {
            self.0
                .borrow_mut()
                .push(format!("lost {}", String::from_utf8_lossy(name)));
        }
        fn closed(&self) {
            self.0.borrow_mut().push("closed".into());
        }
    }

    fn msg(ch: &'static str, p: &'static str) -> Message {
        Message {
            kind: ChannelKind::Channel,
            channel: Bytes::from_static(ch.as_bytes()),
            pattern: None,
            payload: Bytes::from_static(p.as_bytes()),
        }
    }

    #[test]
    fn a_name_is_subscribed_once_and_unsubscribed_with_its_last_attachment() {
        let mut r = Registry::default();
        let (a, _) = (Rc::new(Log::default()), ());
        let b = Rc::new(Log::default());
        let names = [Bytes::from("x"), Bytes::from("y")];
        let ia = r.attach(ChannelKind::Channel, &names, a.clone());
        let ib = r.attach(ChannelKind::Channel, &names[..1], b.clone());
        r.deliver(msg("x", "1"));
        assert_eq!(*a.0.borrow(), ["msg 1"]);
        assert_eq!(*b.0.borrow(), ["msg 1"]);
        assert_eq!(
            r.detach(ia, ChannelKind::Channel, &names),
            [Bytes::from("y")]
        );
        assert_eq!(
            r.detach(ib, ChannelKind::Channel, &names[..1]),
            [Bytes::from("x")]
        );
        assert!(r.is_empty());
    }

    #[test]
    fn a_lost_socket_owes_one_gap_before_the_next_message() {
        let mut r = Registry::default();
        let a = Rc::new(Log::default());
        r.attach(ChannelKind::Channel, &["x".into(), "y".into()], a.clone());
        r.on_socket_lost(Instant::now());
        r.deliver(msg("x", "1"));
        r.deliver(msg("y", "2"));
        r.on_restored(Instant::now());
        assert_eq!(*a.0.borrow(), ["gap", "msg 1", "msg 2"]);
    }

    #[test]
    fn a_dropped_name_is_reported_and_forgotten() {
        let mut r = Registry::default();
        let a = Rc::new(Log::default());
        r.attach(ChannelKind::Shard, &["s".into()], a.clone());
        r.lose(ChannelKind::Shard, &"s".into(), Lost::Dropped);
        assert!(r.is_empty());
        r.close();
        assert_eq!(*a.0.borrow(), ["lost s"]);
    }
}
