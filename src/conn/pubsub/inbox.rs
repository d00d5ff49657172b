//! A subscription's bounded queue ([`Inbox`]) and the handle that reads
//! it ([`Subscription`]).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::Bytes;
use futures_lite::Stream;

use super::registry::{Lost, Sink};
use super::{ChannelKind, Gap, GapCause, Message, PubSubEvent};

/// What a subscription whose queue is full does with the next message
/// ([`ConnectionConfig::subscription_capacity`](crate::ConnectionConfig::subscription_capacity)).
/// Either way the subscriber gets a [`Gap`] with the number dropped, in
/// the place of the dropped messages; other commands and other
/// subscriptions never wait for a slow subscriber.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Overflow {
    /// Drop the oldest queued message to make room (the default: a
    /// subscriber that catches up sees the newest messages).
    #[default]
    DropOldest,
    /// Drop the message arriving (the subscriber sees what was queued,
    /// then the gap, then messages that arrive once it has room again).
    DropNewest,
}

/// Bytes counted per queued message beyond its channel, pattern and
/// payload.
const MESSAGE_OVERHEAD: usize = 64;

fn size(m: &Message) -> usize {
    MESSAGE_OVERHEAD + m.channel.len() + m.payload.len() + m.pattern.as_ref().map_or(0, Bytes::len)
}

/// Messages dropped and not yet reported.
#[derive(Clone, Copy)]
struct Dropping {
    from: Instant,
    to: Instant,
    count: u64,
}

impl Dropping {
    fn gap(self) -> Gap {
        Gap {
            from: self.from,
            to: self.to,
            missed: Some(self.count),
            cause: GapCause::Overflow,
        }
    }
}

struct State {
    events: VecDeque<PubSubEvent>,
    /// Messages among `events` (the bound counts these; gaps and notices
    /// are few: gaps in a row join, and a name is unsubscribed once).
    messages: usize,
    bytes: usize,
    capacity: usize,
    max_bytes: usize,
    overflow: Overflow,
    dropping: Option<Dropping>,
    dropped_total: u64,
    waker: Option<Waker>,
    closed: bool,
}

/// A subscription's queue: the connection (or cluster, or core) pushes
/// into it, the [`Subscription`] handle takes from it. Bounded by message
/// count and bytes, with an [`Overflow`] policy.
pub(crate) struct Inbox {
    state: RefCell<State>,
}

impl Inbox {
    /// An empty queue of at most `capacity` messages and `max_bytes`.
    pub fn new(capacity: usize, max_bytes: usize, overflow: Overflow) -> Rc<Inbox> {
        Rc::new(Inbox {
            state: RefCell::new(State {
                events: VecDeque::new(),
                messages: 0,
                bytes: 0,
                capacity: capacity.max(1),
                max_bytes: max_bytes.max(1),
                overflow,
                dropping: None,
                dropped_total: 0,
                waker: None,
                closed: false,
            }),
        })
    }

    /// An empty queue with the bounds and policy of `config`.
    pub fn for_config(config: &crate::ConnectionConfig) -> Rc<Inbox> {
        Inbox::new(
            config.subscription_capacity,
            config.subscription_max_bytes,
            config.subscription_overflow,
        )
    }

    /// Queues an event that is not a message (a gap, a refusal): never
    /// dropped, and a gap right after another gap joins it.
    pub fn notice(&self, event: PubSubEvent) {
        let mut st = self.state.borrow_mut();
        if let (PubSubEvent::Gap(new), Some(PubSubEvent::Gap(last))) =
            (&event, st.events.back_mut())
        {
            last.from = last.from.min(new.from);
            last.to = last.to.max(new.to);
            last.missed = None;
            return;
        }
        st.events.push_back(event);
        wake(&mut st.waker);
    }

    fn pop(st: &mut State) -> Option<PubSubEvent> {
        if st.overflow == Overflow::DropOldest {
            if let Some(d) = st.dropping.take() {
                return Some(PubSubEvent::Gap(d.gap()));
            }
        }
        let event = st.events.pop_front()?;
        if let PubSubEvent::Message(m) = &event {
            st.bytes -= size(m);
            st.messages -= 1;
        }
        Some(event)
    }
}

fn wake(waker: &mut Option<Waker>) {
    if let Some(w) = waker.take() {
        w.wake();
    }
}

impl Sink for Inbox {
    fn message(&self, message: Message) {
        let mut st = self.state.borrow_mut();
        let st = &mut *st;
        let n = size(&message);
        let full = |st: &State| st.messages >= st.capacity || st.bytes + n > st.max_bytes;
        if full(st) {
            let now = Instant::now();
            match st.overflow {
                Overflow::DropNewest => {
                    note_drop(&mut st.dropping, now);
                    st.dropped_total += 1;
                    return;
                }
                Overflow::DropOldest => {
                    while full(st) {
                        // The oldest message, wherever it is: gaps and
                        // notices before it stay (a gap before the
                        // messages it precedes joins the overflow's).
                        let Some(at) = st
                            .events
                            .iter()
                            .position(|e| matches!(e, PubSubEvent::Message(_)))
                        else {
                            break;
                        };
                        if let Some(PubSubEvent::Message(m)) = st.events.remove(at) {
                            st.bytes -= size(&m);
                            st.messages -= 1;
                            note_drop(&mut st.dropping, now);
                            st.dropped_total += 1;
                        }
                    }
                }
            }
        }
        if st.overflow == Overflow::DropNewest {
            if let Some(d) = st.dropping.take() {
                st.events.push_back(PubSubEvent::Gap(d.gap()));
            }
        }
        st.messages += 1;
        st.bytes += n;
        st.events.push_back(PubSubEvent::Message(message));
        wake(&mut st.waker);
    }

    fn gap(&self, gap: Gap) {
        self.notice(PubSubEvent::Gap(gap));
    }

    fn lost(&self, kind: ChannelKind, name: &Bytes, why: Lost) {
        let error = match why {
            Lost::Refused(e) => Some(e),
            Lost::Dropped => None,
        };
        self.notice(PubSubEvent::Unsubscribed {
            kind,
            name: name.clone(),
            error,
        });
    }

    fn closed(&self) {
        let mut st = self.state.borrow_mut();
        st.closed = true;
        wake(&mut st.waker);
    }
}

/// Notes one more message dropped at `now`.
fn note_drop(dropping: &mut Option<Dropping>, now: Instant) {
    let d = dropping.get_or_insert(Dropping {
        from: now,
        to: now,
        count: 0,
    });
    d.to = now;
    d.count += 1;
}

/// What feeds a [`Subscription`], as the layer that made it knows it: a
/// connection's attachment, a cluster follow, a core's attachment.
/// Dropping it detaches in the background.
pub(crate) trait Feed {
    /// Detaches every name, and waits until the server confirmed the
    /// unsubscribes this caused (as far as the layer can tell).
    fn unsubscribe(self: Box<Self>) -> Pin<Box<dyn Future<Output = Result<(), crate::Error>>>>;
}

/// Messages of one or more channels, patterns or sharded channels, in the
/// order the server sent them, with a [`PubSubEvent::Gap`] wherever some
/// may have been missed. A `Stream` of [`PubSubEvent`]s; also
/// [`recv`](Self::recv).
///
/// Dropping it unsubscribes on the server from every name no other
/// subscription wants (in the background);
/// [`unsubscribe`](Self::unsubscribe) does it and waits. It ends (`None`)
/// when the client it came from is closed for good.
pub struct Subscription {
    inbox: Rc<Inbox>,
    /// Detaches from what feeds the inbox when dropped.
    feed: Box<dyn Feed>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("queued", &self.len())
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl Subscription {
    /// A handle on `inbox`, which `feed` fills.
    pub(crate) fn new(inbox: Rc<Inbox>, feed: Box<dyn Feed>) -> Subscription {
        Subscription { inbox, feed }
    }

    /// Unsubscribes on the server from every name of this subscription
    /// that no other subscription wants, and waits for the server's
    /// confirmation: no message of those names is received after it. (On
    /// the per-core runtime it returns once this core stopped taking them;
    /// the home core unsubscribes right after.)
    pub async fn unsubscribe(self) -> Result<(), crate::Error> {
        let Subscription { feed, .. } = self;
        feed.unsubscribe().await
    }

    /// The next event; `None` once the client is closed and everything
    /// queued was taken.
    pub async fn recv(&mut self) -> Option<PubSubEvent> {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    /// The next event if one is queued.
    pub fn try_recv(&mut self) -> Option<PubSubEvent> {
        Inbox::pop(&mut self.inbox.state.borrow_mut())
    }

    /// Events queued and not taken yet (messages, gaps, notices).
    pub fn len(&self) -> usize {
        self.inbox.state.borrow().events.len()
    }

    /// True when no event is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Messages dropped because the queue was full, since the start.
    pub fn dropped(&self) -> u64 {
        self.inbox.state.borrow().dropped_total
    }

    fn poll_event(&self, cx: &mut Context<'_>) -> Poll<Option<PubSubEvent>> {
        let mut st = self.inbox.state.borrow_mut();
        if let Some(e) = Inbox::pop(&mut st) {
            return Poll::Ready(Some(e));
        }
        if st.closed {
            return Poll::Ready(None);
        }
        if !st.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            st.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl Stream for Subscription {
    type Item = PubSubEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<PubSubEvent>> {
        self.poll_event(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(i: u32) -> Message {
        Message {
            kind: ChannelKind::Channel,
            channel: Bytes::from_static(b"c"),
            pattern: None,
            payload: Bytes::from(i.to_string()),
        }
    }

    fn drain(inbox: &Rc<Inbox>) -> Vec<String> {
        let mut st = inbox.state.borrow_mut();
        std::iter::from_fn(|| Inbox::pop(&mut st))
            .map(|e| match e {
                PubSubEvent::Message(m) => String::from_utf8_lossy(&m.payload).into_owned(),
                PubSubEvent::Gap(g) => format!("gap {:?}", g.missed),
                PubSubEvent::Unsubscribed { .. } => "unsubscribed".into(),
            })
            .collect()
    }

    #[test]
    fn drop_oldest_keeps_the_newest_after_a_gap() {
        let inbox = Inbox::new(3, usize::MAX, Overflow::DropOldest);
        for i in 0..5 {
            inbox.message(msg(i));
        }
        assert_eq!(drain(&inbox), ["gap Some(2)", "2", "3", "4"]);
        assert_eq!(inbox.state.borrow().bytes, 0);
    }

    #[test]
    fn drop_newest_keeps_the_oldest_then_a_gap() {
        let inbox = Inbox::new(3, usize::MAX, Overflow::DropNewest);
        for i in 0..5 {
            inbox.message(msg(i));
        }
        assert_eq!(drain(&inbox), ["0", "1", "2"]);
        inbox.message(msg(5));
        assert_eq!(drain(&inbox), ["gap Some(2)", "5"]);
    }

    #[test]
    fn a_notice_at_the_front_does_not_unbound_the_queue() {
        let inbox = Inbox::new(3, usize::MAX, Overflow::DropOldest);
        inbox.lost(ChannelKind::Channel, &Bytes::from("x"), Lost::Dropped);
        for i in 0..1000 {
            inbox.message(msg(i));
        }
        let st = inbox.state.borrow();
        assert_eq!(st.messages, 3);
        assert_eq!(st.events.len(), 4);
        drop(st);
        assert_eq!(
            drain(&inbox),
            ["gap Some(997)", "unsubscribed", "997", "998", "999"]
        );
    }

    #[test]
    fn bytes_bound_the_queue_too() {
        let inbox = Inbox::new(1000, 3 * (MESSAGE_OVERHEAD + 2), Overflow::DropOldest);
        for i in 0..10 {
            inbox.message(msg(i));
        }
        assert!(inbox.state.borrow().events.len() <= 3);
    }
}
