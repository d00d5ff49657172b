//! Pub/sub on a cluster: each name goes to the master of its slot, and
//! follows it there.
//!
//! A [`Cluster`] subscription ([`Cluster::subscribe`], `psubscribe`,
//! `ssubscribe`) is a [`Follow`]: its names are attached, in groups, to
//! the connections of the masters serving their slots (one connection's
//! registry per node, so a name is subscribed once per node however many
//! subscriptions want it). Channels and patterns could go anywhere (the
//! cluster broadcasts `PUBLISH` to every node); sending each to its slot's
//! master spreads them over the nodes. Sharded channels must go there.
//!
//! One task per cluster client, the *mover*, keeps every follow where it
//! belongs. It wakes when the routes change, when a node connection
//! reports a name lost or its socket lost, and on a tick (100 ms while
//! something is unsettled, 1 s otherwise), and for each follow:
//! - a name the server dropped on its own (`SUNSUBSCRIBE` pushed when a
//!   slot moved) or refused when subscribing again after a reconnect
//!   (`MOVED`) is placed again where the routes now say;
//! - a sharded channel whose slot the routes give to another master is
//!   subscribed there first, then unsubscribed from the old node;
//! - channels and patterns on a node that is no longer a master (it
//!   failed over, or left) are moved to their slot's master;
//! - while a node's socket is down it asks for topology refreshes, so a
//!   failover is seen without any command being sent.
//!
//! Each move gives the subscription one [`Gap`] with
//! [`GapCause::Moved`], from when the name was lost (or the move began)
//! to when it was subscribed again. A name the cluster refuses for good
//! (a permission) is reported with [`PubSubEvent::Unsubscribed`](crate::PubSubEvent).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::NodeAddr;
use super::client::{Cluster, must_go_again};
use super::router::{Attempt, Router};
use crate::Error;
use crate::conn::pubsub::{
    Attachment, ChannelKind, Feed, Gap, GapCause, Inbox, Lost, Message, Sink, Subscribe,
    Subscription,
};
use crate::slot::key_slot;

/// The mover's tick while some name is not where it belongs.
const UNSETTLED_TICK: Duration = Duration::from_millis(100);
/// The mover's tick otherwise.
const SETTLED_TICK: Duration = Duration::from_secs(1);

/// Wakes the mover.
#[derive(Default)]
pub(crate) struct Signal {
    raised: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Signal {
    /// Wakes the mover (now or at its next wait).
    pub fn raise(&self) {
        self.raised.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// Waits until raised or `tick` passes.
    async fn wait(&self, tick: Duration) {
        let raised = std::future::poll_fn(|cx| {
            if self.raised.replace(false) {
                return Poll::Ready(());
            }
            *self.waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        });
        futures_lite::future::or(raised, glommio::timer::sleep(tick)).await;
    }
}

/// The follows of one cluster client, and its mover's signal.
#[derive(Default)]
pub(crate) struct Followers {
    list: RefCell<Vec<Weak<Follow>>>,
    pub signal: Rc<Signal>,
    mover: Cell<bool>,
}

/// What a node connection tells one follow's attachment there.
struct Relay {
    sink: Rc<dyn Sink>,
    signal: Rc<Signal>,
    /// Names the server stopped serving, and when, for the mover.
    lost: RefCell<Vec<(Bytes, Lost, Instant)>>,
    /// Since when the node's socket is down (cleared when it is back).
    down_since: Cell<Option<Instant>>,
    closed: Cell<bool>,
}

impl Sink for Relay {
    fn message(&self, message: Message) {
        self.sink.message(message);
    }

    fn gap(&self, gap: Gap) {
        self.down_since.set(None);
        self.sink.gap(gap);
    }

    // Called with the node connection borrowed: only notes it for the
    // mover.
    fn lost(&self, _: ChannelKind, name: &Bytes, why: Lost) {
        self.lost
            .borrow_mut()
            .push((name.clone(), why, Instant::now()));
        self.signal.raise();
    }

    fn closed(&self) {
        self.closed.set(true);
        self.signal.raise();
    }

    fn disconnected(&self, at: Instant) {
        if self.down_since.get().is_none() {
            self.down_since.set(Some(at));
        }
        self.signal.raise();
    }
}

/// Some of a follow's names, attached on one node.
struct Placement {
    addr: NodeAddr,
    attachment: Attachment,
    relay: Rc<Relay>,
}

/// A cluster subscription: its names, where they are attached, and those
/// waiting for a home.
pub(crate) struct Follow {
    kind: ChannelKind,
    sink: Rc<dyn Sink>,
    placed: RefCell<Vec<Placement>>,
    /// Names to place again, with when they stopped being heard.
    homeless: RefCell<Vec<(Bytes, Instant)>>,
    /// The subscription was dropped: a placement under way when it was
    /// is given up as soon as it is made.
    ended: Cell<bool>,
}

/// Keeps a follow alive; dropping it detaches every name.
pub(crate) struct FollowGuard(Rc<Follow>);

impl Feed for FollowGuard {
    fn unsubscribe(
        self: Box<Self>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Error>>>> {
        Box::pin(async move {
            self.0.ended.set(true);
            self.0.homeless.borrow_mut().clear();
            let placed = std::mem::take(&mut *self.0.placed.borrow_mut());
            let done = super::router::join_all(
                placed
                    .into_iter()
                    .map(|p| Box::new(p.attachment).unsubscribe()),
            )
            .await;
            done.into_iter().collect()
        })
    }
}

impl Drop for FollowGuard {
    fn drop(&mut self) {
        self.0.ended.set(true);
        self.0.homeless.borrow_mut().clear();
        // Dropping the attachments unsubscribes on the nodes.
        let placed = std::mem::take(&mut *self.0.placed.borrow_mut());
        drop(placed);
    }
}

/// The master serving `name`'s slot in the current routes.
fn target(router: &Router, name: &[u8]) -> Option<NodeAddr> {
    router.routes().map.master_for_slot(key_slot(name)).cloned()
}

impl Follow {
    /// Attaches `names` on the masters of their slots as the routes
    /// stand, before `deadline`. Returns the names not placed, each with
    /// the error that refuses it for good, if one did.
    async fn place(
        self: &Rc<Self>,
        router: &Router,
        names: Vec<Bytes>,
        deadline: Instant,
    ) -> Vec<(Bytes, Option<Error>)> {
        let mut groups: HashMap<NodeAddr, Vec<Bytes>> = HashMap::new();
        let mut unplaced = Vec::new();
        for name in names {
            let target = target(router, &name);
            // Already attached there (placed while this was decided): once
            // is enough, twice would deliver every message twice.
            let held =
                self.placed.borrow().iter().any(|p| {
                    Some(&p.addr) == target.as_ref() && p.attachment.names().contains(&name)
                });
            if held {
                continue;
            }
            match target {
                Some(addr) => groups.entry(addr).or_default().push(name),
                None => unplaced.push((name, None)),
            }
        }
        if !unplaced.is_empty() {
            router.request_refresh();
        }
        for (addr, group) in groups {
            let relay = Rc::new(Relay {
                sink: self.sink.clone(),
                signal: router.pubsub.signal.clone(),
                lost: RefCell::new(Vec::new()),
                down_since: Cell::new(None),
                closed: Cell::new(false),
            });
            let attached = match router.subscriber_connection(&addr) {
                Ok(conn) => conn.attach(self.kind, group.clone(), relay.clone()).await,
                Err(e) => Err(e),
            };
            match attached {
                // Dropping it unsubscribes again.
                Ok(attachment) if self.ended.get() => drop(attachment),
                Ok(attachment) => self.placed.borrow_mut().push(Placement {
                    addr,
                    attachment,
                    relay,
                }),
                Err(e) => {
                    tracing::debug!(node = %addr, error = %e, "subscribing on a node failed");
                    let node = router.node(&addr);
                    let mut attempt = Attempt::new(deadline, false);
                    let fatal = match router.after_error(&node, e, &mut attempt).await {
                        Ok(()) => None,
                        Err(Error::Server(e)) if !must_go_again(&e) => Some(Error::Server(e)),
                        Err(_) => None,
                    };
                    unplaced.extend(group.into_iter().map(|n| (n, fatal.clone())));
                }
            }
        }
        unplaced
    }

    /// Puts every name where it belongs now (see the module docs);
    /// returns true while some name is not placed or a node is down.
    async fn settle(self: &Rc<Self>, router: &Router) -> bool {
        let now = Instant::now();
        let mut moving: Vec<(Bytes, Instant)> = std::mem::take(&mut *self.homeless.borrow_mut());
        // Shard names subscribed on their new node before they leave the
        // old one: (node, names).
        let mut leaving: Vec<(NodeAddr, Vec<Bytes>)> = Vec::new();
        let mut unsettled = false;
        {
            let masters = router.routes().map.masters().to_vec();
            let mut placed = self.placed.borrow_mut();
            placed.retain_mut(|p| {
                let lost: Vec<(Bytes, Lost, Instant)> =
                    p.relay.lost.borrow_mut().drain(..).collect();
                for (name, why, at) in lost {
                    // Left here already (moved meanwhile): nothing to do.
                    if !p.attachment.names().contains(&name) {
                        continue;
                    }
                    p.attachment.detach_some(std::slice::from_ref(&name));
                    match why {
                        Lost::Refused(e) if !must_go_again(&e) => {
                            self.sink.lost(self.kind, &name, Lost::Refused(e));
                        }
                        _ => moving.push((name, at)),
                    }
                }
                let since = p.relay.down_since.get();
                if p.relay.closed.get()
                    || (self.kind != ChannelKind::Shard && !masters.contains(&p.addr))
                {
                    // Gone with its node: dropping the attachment
                    // unsubscribes there if it is still up.
                    let from = since.unwrap_or(now);
                    moving.extend(p.attachment.names().iter().map(|n| (n.clone(), from)));
                    return false;
                }
                if self.kind == ChannelKind::Shard {
                    let away: Vec<Bytes> = p
                        .attachment
                        .names()
                        .iter()
                        .filter(|n| target(router, n).is_some_and(|t| t != p.addr))
                        .cloned()
                        .collect();
                    if !away.is_empty() {
                        moving.extend(away.iter().map(|n| (n.clone(), since.unwrap_or(now))));
                        leaving.push((p.addr.clone(), away));
                    }
                }
                if since.is_some() {
                    unsettled = true;
                }
                !p.attachment.names().is_empty()
            });
        }
        if unsettled {
            // A node's socket is down: a failover shows up in a refresh.
            router.request_refresh();
        }
        if moving.is_empty() {
            return unsettled;
        }
        // A name may come twice (waiting for a home, and still on a node
        // it is leaving): once, with the earliest time.
        let mut from: HashMap<Bytes, Instant> = HashMap::new();
        for (name, at) in moving {
            let t = from.entry(name).or_insert(at);
            *t = (*t).min(at);
        }
        let first = from.values().copied().min().unwrap_or(now);
        let names: Vec<Bytes> = from.keys().cloned().collect();
        let deadline = Instant::now() + router.config.timeout();
        let unplaced = self.place(router, names, deadline).await;
        let mut homeless = Vec::new();
        for (name, fatal) in unplaced {
            match fatal {
                Some(Error::Server(e)) => self.sink.lost(self.kind, &name, Lost::Refused(e)),
                _ => homeless.push((name.clone(), from.get(&name).copied().unwrap_or(now))),
            }
        }
        // Leave the old nodes only for names now placed elsewhere.
        for (addr, names) in leaving {
            let gone: Vec<Bytes> = names
                .into_iter()
                .filter(|n| !homeless.iter().any(|(h, _)| h == n))
                .collect();
            let mut placed = self.placed.borrow_mut();
            if let Some(p) = placed
                .iter_mut()
                .find(|p| p.addr == addr && p.attachment.names().iter().any(|n| gone.contains(n)))
            {
                p.attachment.detach_some(&gone);
            }
            placed.retain(|p| !p.attachment.names().is_empty());
        }
        let settled_some = homeless.len() < from.len();
        if settled_some {
            self.sink.gap(Gap {
                from: first,
                to: Instant::now(),
                missed: None,
                cause: GapCause::Moved,
            });
        }
        let unsettled = unsettled || !homeless.is_empty();
        if !self.ended.get() {
            self.homeless.borrow_mut().extend(homeless);
        }
        unsettled
    }
}

impl Followers {
    /// The follows still alive.
    fn live(&self) -> Vec<Rc<Follow>> {
        let mut list = self.list.borrow_mut();
        list.retain(|w| w.strong_count() > 0);
        list.iter().filter_map(Weak::upgrade).collect()
    }
}

/// Keeps every follow of `router` where it belongs, until the client is
/// closed or no follow is left.
async fn mover(router: Weak<Router>) {
    loop {
        let Some(r) = router.upgrade() else {
            return;
        };
        let follows = r.pubsub.live();
        if r.closed.get() {
            for f in &follows {
                f.sink.closed();
            }
            r.pubsub.mover.set(false);
            return;
        }
        if follows.is_empty() {
            r.pubsub.mover.set(false);
            return;
        }
        // Side by side: after a failover every follow moves at once.
        let settled = super::router::join_all(follows.iter().map(|f| f.settle(&r))).await;
        let unsettled = settled.into_iter().any(|u| u);
        let signal = r.pubsub.signal.clone();
        drop(r);
        signal
            .wait(if unsettled {
                UNSETTLED_TICK
            } else {
                SETTLED_TICK
            })
            .await;
    }
}

/// Subscribes `sink` to `names` of `kind` on the cluster behind `router`
/// and keeps them placed; within `deadline` for the first placement.
pub(crate) async fn follow(
    router: &Rc<Router>,
    kind: ChannelKind,
    names: Vec<Bytes>,
    sink: Rc<dyn Sink>,
    deadline: Instant,
) -> Result<FollowGuard, Error> {
    let follow = Rc::new(Follow {
        kind,
        sink,
        placed: RefCell::new(Vec::new()),
        homeless: RefCell::new(Vec::new()),
        ended: Cell::new(false),
    });
    let guard = FollowGuard(follow.clone());
    let mut names = names;
    loop {
        let unplaced = follow.place(router, names, deadline).await;
        if unplaced.is_empty() {
            break;
        }
        if let Some((_, Some(e))) = unplaced.iter().find(|(_, e)| e.is_some()) {
            return Err(e.clone());
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                maybe_applied: false,
            });
        }
        // Where the routes had no master: wait for a refresh.
        let _ = router.refresh_until(deadline).await;
        names = unplaced.into_iter().map(|(n, _)| n).collect();
    }
    router.pubsub.list.borrow_mut().push(Rc::downgrade(&follow));
    if !router.pubsub.mover.replace(true) {
        glommio::spawn_local(mover(Rc::downgrade(router))).detach();
    }
    Ok(guard)
}

/// On a cluster: each name is subscribed on the master of its slot
/// (channels and patterns too: the cluster broadcasts `PUBLISH` to every
/// node, and the slot spreads them over the masters), and kept there by
/// the client's mover (see the module docs): a sharded channel follows
/// its slot when it moves (a reshard, a failover), a channel or pattern
/// moves off a node that failed or left, each time with a
/// [`Gap`](crate::pubsub::Gap). Sharded channels in different slots may
/// share one subscription.
impl Subscribe for Cluster {
    async fn subscribe_to(
        &self,
        kind: ChannelKind,
        names: Vec<Bytes>,
    ) -> Result<Subscription, Error> {
        let inbox = Inbox::for_config(&self.router.config.node);
        let guard = self
            .follow(kind, names, inbox.clone(), self.deadline())
            .await?;
        Ok(Subscription::new(inbox, Box::new(guard)))
    }
}

impl Cluster {
    /// Subscribes `sink` to `names` and keeps them placed (for the
    /// per-core runtime, whose sinks fan messages out to cores).
    pub(crate) async fn follow(
        &self,
        kind: ChannelKind,
        names: Vec<Bytes>,
        sink: Rc<dyn Sink>,
        deadline: Instant,
    ) -> Result<FollowGuard, Error> {
        follow(&self.router, kind, names, sink, deadline).await
    }
}
