//! The channel mesh between the cores of the per-core runtime: requests
//! for nodes another core owns, their replies, and the topology news
//! every core must hear.
//!
//! Each core keeps one outbox per peer. Whatever its tasks put there
//! during one turn of the executor (requests, replies, `MOVED`
//! corrections, a new topology) leaves as one message on glommio's shared
//! channel to that peer, sent by the peer's flusher task; so a hop costs
//! one channel message per batch, not per command. One receiver task per
//! peer takes messages in, and never waits on anything but the channel:
//! it installs topology news, completes this core's waiting calls, and
//! starts a task per request, which pushes the reply into the outbox.
//! Handlers never block on sending, so two cores sending to each other
//! cannot deadlock.
//!
//! [`CoreMesh`] is what the cluster layer's [`Peers`] are on this
//! runtime: the router of each core reaches the nodes other cores own, the
//! refresh leader (mesh peer 0), and every other core's router through it.
//! The cluster layer's peer numbers are mesh peer ids; glommio numbers the
//! peers in its own order, and [`CoreNumbers`] turns them into the core
//! numbers users see ([`CoreClient::core`](super::CoreClient::core)).

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use glommio::channels::channel_mesh::Senders;
use glommio::channels::shared_channel::ConnectedReceiver;
use slab::Slab;

use bytes::Bytes;

use super::pubsub::{CorePubSub, Fed, Wanted};
use crate::Error;
use crate::cluster::peers::{LeaderRefresh, NodeOp, NodeReply, Peers, Ticket};
use crate::cluster::router::Router;
use crate::cluster::{NodeAddr, Topology};
use crate::conn::cache::Invalidation;
use crate::conn::pubsub::ChannelKind;

/// What a request asks of another core.
enum Asked {
    /// Work on a node that core owns.
    Node { addr: NodeAddr, op: NodeOp },
    /// A topology refresh (asked of the leader, peer 0).
    Refresh,
    /// The asking core wants messages of `names`, of which this core is
    /// the home (see [`super::pubsub`]).
    Want {
        kind: ChannelKind,
        names: Vec<Bytes>,
    },
    /// ... and no longer wants them (never answered).
    Unwant {
        kind: ChannelKind,
        names: Vec<Bytes>,
    },
}

/// A request being served.
enum Work {
    Node { addr: NodeAddr, op: NodeOp },
    Refresh,
    Follow { kind: ChannelKind, wanted: Wanted },
}

/// The answer to an [`Asked`].
enum Answer {
    Node(NodeReply),
    Refreshed,
    Wanted,
}

/// A request to another core.
struct Request {
    ticket: Ticket,
    deadline: Instant,
    asked: Asked,
}

/// The most cache keys one batch to a peer owes before they become one
/// invalidation of everything (see [`CoreMesh::push_invalidation`]).
const MAX_OWED_KEYS: usize = 65_536;

/// One message between two cores: everything one core had for the other
/// in one turn.
#[derive(Default)]
pub(crate) struct Message {
    requests: Vec<Request>,
    replies: Vec<(Ticket, Result<Answer, Error>)>,
    moved: Vec<(u16, NodeAddr)>,
    topology: Option<(Topology, u64)>,
    refresh: bool,
    /// What homes forward to the cores wanting it (see
    /// [`super::pubsub`]).
    pub(super) pubsub: Vec<(ChannelKind, Bytes, Fed)>,
    /// The bytes of the messages in `pubsub` (see `Fed::size`).
    pub(super) pubsub_bytes: usize,
    /// Invalidations of client-side cache entries this core may hold
    /// (see [`super::caching`]).
    pub(super) invalidations: Vec<Invalidation>,
    /// The keys in `invalidations`.
    invalidated_keys: usize,
}

impl Message {
    fn is_empty(&self) -> bool {
        self.requests.is_empty()
            && self.replies.is_empty()
            && self.moved.is_empty()
            && self.topology.is_none()
            && !self.refresh
            && self.pubsub.is_empty()
            && self.invalidations.is_empty()
    }
}

/// A call waiting for another core's reply.
struct Pending {
    seq: u32,
    peer: usize,
    deadline: Instant,
    result: Option<Result<Answer, Error>>,
    waker: Option<Waker>,
}

/// How long after its deadline a call waits for the owner's own timeout
/// reply before giving up on that core.
pub(super) const GRACE: Duration = Duration::from_millis(100);

/// Cross-core traffic of one core, from
/// [`CoreClient::hop_stats`](super::CoreClient::hop_stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HopStats {
    /// Requests this core sent to the owners of their nodes.
    pub requests_sent: u64,
    /// Requests other cores sent here.
    pub requests_served: u64,
    /// Channel messages sent (each carries a batch).
    pub messages_sent: u64,
    /// Channel messages received.
    pub messages_received: u64,
}

/// The core number (the order of the executor's CPUs) of each mesh peer.
pub(crate) struct CoreNumbers(Vec<AtomicUsize>);

impl CoreNumbers {
    /// Numbers for `count` cores, each peer taken for its core until told.
    pub fn new(count: usize) -> CoreNumbers {
        CoreNumbers((0..count).map(AtomicUsize::new).collect())
    }

    /// Peer `peer` is core `core`.
    pub fn set(&self, peer: usize, core: usize) {
        self.0[peer].store(core, Ordering::Release);
    }

    /// The core of peer `peer`.
    pub fn core(&self, peer: usize) -> usize {
        self.0[peer].load(Ordering::Acquire)
    }
}

/// Counters of cross-core traffic, as [`HopStats`].
#[derive(Default)]
struct Counters {
    sent: Cell<u64>,
    served: Cell<u64>,
    batches_out: Cell<u64>,
    batches_in: Cell<u64>,
}

/// This core's end of the mesh.
pub(crate) struct CoreMesh {
    pub index: usize,
    pub count: usize,
    every_core: bool,
    cores: Arc<CoreNumbers>,
    outboxes: RefCell<Vec<Message>>,
    flushers: RefCell<Vec<Option<Waker>>>,
    senders: RefCell<Option<Rc<Senders<Message>>>>,
    pending: RefCell<Slab<Pending>>,
    seq: Cell<u32>,
    gone: Vec<Cell<bool>>,
    router: RefCell<Weak<Router>>,
    sweeper: RefCell<Option<Waker>>,
    stopped: Cell<bool>,
    /// A shutdown started: this core's users' calls are refused.
    pub closing: Cell<bool>,
    /// Calls of this core's users and requests it serves, not yet done.
    work: Cell<usize>,
    idle_waiters: RefCell<Vec<Waker>>,
    counters: Counters,
    /// This core's subscriptions, and the names it is home to.
    pub(super) pubsub: CorePubSub,
}

impl CoreMesh {
    /// Peer `index` of `count`; `cores` numbers the peers.
    pub fn new(index: usize, count: usize, every_core: bool, cores: Arc<CoreNumbers>) -> CoreMesh {
        CoreMesh {
            index,
            count,
            every_core,
            cores,
            outboxes: RefCell::new((0..count).map(|_| Message::default()).collect()),
            flushers: RefCell::new(vec![None; count]),
            senders: RefCell::new(None),
            pending: RefCell::new(Slab::new()),
            seq: Cell::new(0),
            gone: (0..count).map(|_| Cell::new(false)).collect(),
            router: RefCell::new(Weak::new()),
            sweeper: RefCell::new(None),
            stopped: Cell::new(false),
            closing: Cell::new(false),
            work: Cell::new(0),
            idle_waiters: RefCell::new(Vec::new()),
            counters: Counters::default(),
            pubsub: CorePubSub::default(),
        }
    }

    /// Peer 0 refreshes the topology for every core.
    pub fn is_leader(&self) -> bool {
        self.index == 0
    }

    pub fn set_router(&self, router: &Rc<Router>) {
        *self.router.borrow_mut() = Rc::downgrade(router);
    }

    /// Starts the flusher and receiver tasks of every peer, and the
    /// sweeper.
    pub fn start(
        self: &Rc<Self>,
        senders: Senders<Message>,
        receivers: Vec<(usize, ConnectedReceiver<Message>)>,
    ) {
        let senders = Rc::new(senders);
        *self.senders.borrow_mut() = Some(senders.clone());
        for peer in (0..self.count).filter(|&p| p != self.index) {
            glommio::spawn_local(flusher(self.clone(), senders.clone(), peer)).detach();
        }
        for (peer, rx) in receivers {
            glommio::spawn_local(receiver(self.clone(), peer, rx)).detach();
        }
        glommio::spawn_local(sweeper(self.clone())).detach();
    }

    /// The peer that owns `addr`: the nodes of `masters` (the master
    /// list, or the replica list for a replica), in address order, go
    /// round the cores, so each core owns as many as the others give or
    /// take one; any other node goes by a hash of its address. Every core
    /// computes the same answer from the same list.
    pub fn owner_of(&self, addr: &NodeAddr, masters: &[NodeAddr]) -> usize {
        let mut sorted: Vec<&NodeAddr> = masters.iter().collect();
        sorted.sort_unstable();
        match sorted.iter().position(|m| *m == addr) {
            Some(i) => i % self.count,
            None => {
                let text = addr.to_string();
                usize::from(crc16::State::<crc16::XMODEM>::calculate(text.as_bytes())) % self.count
            }
        }
    }

    /// The peer that owns `addr` when it is not this one (and cores do
    /// not each connect to every node).
    fn remote_owner(&self, addr: &NodeAddr, masters: &[NodeAddr]) -> Option<usize> {
        if self.every_core || self.count == 1 {
            return None;
        }
        let owner = self.owner_of(addr, masters);
        (owner != self.index).then_some(owner)
    }

    /// Owes `peer` an invalidation of its cache, unless it is gone. Past
    /// [`MAX_OWED_KEYS`] keys owed in one batch (a peer not taking its
    /// messages, or a flood of BCAST invalidations), the batch's
    /// invalidations become one that voids its whole cache.
    pub(super) fn push_invalidation(&self, peer: usize, what: &Invalidation) {
        if peer == self.index || peer >= self.count || self.gone[peer].get() {
            return;
        }
        self.push(peer, |m| {
            if matches!(m.invalidations.last(), Some(Invalidation::All)) {
                return;
            }
            m.invalidated_keys += match what {
                Invalidation::Keys(keys) => keys.len(),
                _ => 1,
            };
            if m.invalidated_keys > MAX_OWED_KEYS {
                m.invalidations.clear();
                m.invalidations.push(Invalidation::All);
            } else {
                m.invalidations.push(what.clone());
            }
        });
    }

    /// Puts something into the outbox of `peer` and wakes its flusher.
    pub(super) fn push(&self, peer: usize, f: impl FnOnce(&mut Message)) {
        f(&mut self.outboxes.borrow_mut()[peer]);
        if let Some(w) = self.flushers.borrow_mut()[peer].take() {
            w.wake();
        }
    }

    /// The error for a call to `peer`, which stopped.
    fn stopped(&self, peer: usize, maybe_applied: bool) -> Error {
        Error::CoreStopped {
            core: self.cores.core(peer),
            maybe_applied,
        }
    }

    /// Sends `asked` to `peer`, to be answered by `deadline`; the answer
    /// comes through [`poll_answer`](Self::poll_answer).
    fn send_asked(&self, peer: usize, deadline: Instant, asked: Asked) -> Result<Ticket, Error> {
        self.send_request(peer, deadline, asked, true)
    }

    /// Sends `asked` to `peer`; with `answered`, a pending call waits for
    /// its answer (else none comes: an unwant).
    fn send_request(
        &self,
        peer: usize,
        deadline: Instant,
        asked: Asked,
        answered: bool,
    ) -> Result<Ticket, Error> {
        if !answered {
            if self.gone[peer].get() || self.stopped.get() {
                return Err(self.stopped(peer, false));
            }
            let ticket = Ticket {
                index: u32::MAX,
                seq: 0,
            };
            self.push(peer, |m| {
                m.requests.push(Request {
                    ticket,
                    deadline,
                    asked,
                })
            });
            return Ok(ticket);
        }
        if self.gone[peer].get() || self.stopped.get() {
            return Err(self.stopped(peer, false));
        }
        let seq = self.seq.get().wrapping_add(1);
        self.seq.set(seq);
        let index = self.pending.borrow_mut().insert(Pending {
            seq,
            peer,
            deadline,
            result: None,
            waker: None,
        });
        let ticket = Ticket {
            index: index as u32,
            seq,
        };
        self.push(peer, |m| {
            m.requests.push(Request {
                ticket,
                deadline,
                asked,
            })
        });
        self.counters.sent.set(self.counters.sent.get() + 1);
        if let Some(w) = self.sweeper.borrow_mut().take() {
            w.wake();
        }
        Ok(ticket)
    }

    /// The answer to `ticket`, once it came (then the ticket is spent).
    fn poll_answer(&self, ticket: Ticket, cx: &mut Context<'_>) -> Poll<Result<Answer, Error>> {
        let mut pending = self.pending.borrow_mut();
        let index = ticket.index as usize;
        let Some(p) = pending.get_mut(index).filter(|p| p.seq == ticket.seq) else {
            // Not reached (a ticket is polled until spent, then dropped);
            // the request went out, so it may have been applied.
            debug_assert!(false, "a spent or forgotten ticket was polled");
            return Poll::Ready(Err(Error::Timeout {
                maybe_applied: true,
            }));
        };
        match p.result.take() {
            Some(result) => {
                pending.remove(index);
                Poll::Ready(result)
            }
            None => {
                p.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// Forgets a call that stopped waiting (its caller gave up): a late
    /// reply is then dropped.
    fn forget_call(&self, ticket: Ticket) {
        let mut pending = self.pending.borrow_mut();
        let i = ticket.index as usize;
        if pending.get(i).is_some_and(|p| p.seq == ticket.seq) {
            pending.remove(i);
        }
    }

    /// Completes the call of `ticket`, if it still waits.
    fn complete(&self, ticket: Ticket, result: Result<Answer, Error>) {
        let mut pending = self.pending.borrow_mut();
        if let Some(p) = pending.get_mut(ticket.index as usize) {
            if p.seq == ticket.seq && p.result.is_none() {
                p.result = Some(result);
                if let Some(w) = p.waker.take() {
                    w.wake();
                }
            }
        }
    }

    /// Fails every call waiting on `peer`, which stopped.
    fn peer_gone(&self, peer: usize) {
        self.gone[peer].set(true);
        // Entries read through that core's connections will hear of no
        // more invalidations.
        if let Some(router) = self.router.borrow().upgrade() {
            if let Some(cache) = &router.cache {
                cache.flush();
            }
        }
        for (_, p) in self.pending.borrow_mut().iter_mut() {
            if p.peer == peer && p.result.is_none() {
                p.result = Some(Err(self.stopped(peer, true)));
                if let Some(w) = p.waker.take() {
                    w.wake();
                }
            }
        }
    }

    /// Fails calls whose owner did not answer by their deadline and
    /// grace (a core stuck in user code): the command may have run.
    fn expire(&self, now: Instant) {
        for (_, p) in self.pending.borrow_mut().iter_mut() {
            if p.result.is_none() && p.deadline + GRACE <= now {
                p.result = Some(Err(Error::Timeout {
                    maybe_applied: true,
                }));
                if let Some(w) = p.waker.take() {
                    w.wake();
                }
            }
        }
    }

    /// Takes in one message from `peer`.
    fn handle(self: &Rc<Self>, peer: usize, message: Message) {
        self.counters
            .batches_in
            .set(self.counters.batches_in.get() + 1);
        let router = self.router.borrow().upgrade();
        if let Some(router) = &router {
            // Before the replies: a miss answered in this batch must see
            // the invalidations sent with it.
            if let Some(cache) = &router.cache {
                for what in &message.invalidations {
                    cache.apply(what);
                }
            }
            if let Some((topology, epoch)) = message.topology {
                router.accept_published(topology, epoch);
            }
            for (slot, addr) in message.moved {
                router.apply_moved(slot, addr);
            }
            if message.refresh {
                router.request_refresh();
            }
        }
        for (ticket, result) in message.replies {
            self.complete(ticket, result);
        }
        for (kind, name, fed) in message.pubsub {
            self.take_fed(kind, &name, fed);
        }
        for req in message.requests {
            // Wants and unwants change who gets a name at once, in the
            // order they arrive (see `CoreMesh::want`).
            let asked = match req.asked {
                Asked::Unwant { kind, names } => {
                    self.unwant(peer, kind, &names);
                    continue;
                }
                Asked::Want { kind, names } => {
                    let wanted = self.want(peer, kind, &names);
                    if wanted.is_settled() {
                        self.push(peer, |b| b.replies.push((req.ticket, Ok(Answer::Wanted))));
                        continue;
                    }
                    Work::Follow { kind, wanted }
                }
                Asked::Node { addr, op } => Work::Node { addr, op },
                Asked::Refresh => Work::Refresh,
            };
            self.counters.served.set(self.counters.served.get() + 1);
            let Some(router) = router.clone() else {
                self.push(peer, |b| {
                    b.replies
                        .push((req.ticket, Err(Error::Closed("the core is shutting down"))))
                });
                continue;
            };
            self.begin_work();
            let mesh = self.clone();
            glommio::spawn_local(async move {
                let result = match asked {
                    Work::Node { addr, op } => router
                        .serve(&addr, req.deadline, op, peer)
                        .await
                        .map(Answer::Node),
                    Work::Refresh => router
                        .refresh_until(req.deadline)
                        .await
                        .map(|()| Answer::Refreshed),
                    Work::Follow { kind, wanted } => mesh
                        .settle(kind, wanted, req.deadline)
                        .await
                        .map(|()| Answer::Wanted),
                };
                mesh.push(peer, |b| b.replies.push((req.ticket, result)));
                mesh.end_work();
            })
            .detach();
        }
    }

    /// A call of this core's users, or a request it serves, begins.
    pub fn begin_work(&self) {
        self.work.set(self.work.get() + 1);
    }

    /// ... and ends.
    pub fn end_work(&self) {
        let n = self.work.get() - 1;
        self.work.set(n);
        if n == 0 {
            for w in self.idle_waiters.borrow_mut().drain(..) {
                w.wake();
            }
        }
    }

    /// Waits until no call or served request is under way.
    pub async fn idle(&self) {
        poll_fn(|cx| {
            if self.work.get() == 0 {
                return Poll::Ready(());
            }
            self.idle_waiters.borrow_mut().push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Stops the mesh tasks and closes this core's channels; this core's
    /// subscriptions end.
    pub fn stop(&self) {
        self.stopped.set(true);
        self.close_pubsub();
        for w in self
            .flushers
            .borrow_mut()
            .iter_mut()
            .filter_map(Option::take)
        {
            w.wake();
        }
        if let Some(w) = self.sweeper.borrow_mut().take() {
            w.wake();
        }
        if let Some(senders) = self.senders.borrow_mut().take() {
            senders.close();
        }
    }

    /// This core's router, unless the runtime stopped.
    pub(super) fn router(&self) -> Option<Rc<Router>> {
        self.router.borrow().upgrade()
    }

    /// Asks `home` for the messages of `names` and waits, until
    /// `deadline`, until it subscribed.
    pub(super) async fn ask_want(
        &self,
        home: usize,
        deadline: Instant,
        kind: ChannelKind,
        names: Vec<Bytes>,
    ) -> Result<(), Error> {
        let ticket = self.send_asked(home, deadline, Asked::Want { kind, names })?;
        let _forget = Forget { mesh: self, ticket };
        poll_fn(|cx| self.poll_answer(ticket, cx)).await.map(drop)
    }

    /// Tells `home` this core no longer wants `names`.
    pub(super) fn tell_unwant(&self, home: usize, kind: ChannelKind, names: Vec<Bytes>) {
        let _ = self.send_request(home, Instant::now(), Asked::Unwant { kind, names }, false);
    }

    /// The core number of mesh peer `peer`.
    pub fn core_of(&self, peer: usize) -> usize {
        self.cores.core(peer)
    }

    /// The cross-core traffic so far.
    pub fn stats(&self) -> HopStats {
        HopStats {
            requests_sent: self.counters.sent.get(),
            requests_served: self.counters.served.get(),
            messages_sent: self.counters.batches_out.get(),
            messages_received: self.counters.batches_in.get(),
        }
    }
}

impl Peers for CoreMesh {
    fn owner(&self, addr: &NodeAddr, masters: &[NodeAddr]) -> Option<usize> {
        self.remote_owner(addr, masters)
    }

    fn send(
        &self,
        peer: usize,
        addr: NodeAddr,
        deadline: Instant,
        op: NodeOp,
    ) -> Result<Ticket, Error> {
        self.send_asked(peer, deadline, Asked::Node { addr, op })
    }

    fn poll_reply(&self, ticket: Ticket, cx: &mut Context<'_>) -> Poll<Result<NodeReply, Error>> {
        self.poll_answer(ticket, cx).map(|answer| match answer? {
            Answer::Node(reply) => Ok(reply),
            Answer::Refreshed | Answer::Wanted => {
                unreachable!("work on a node is answered by the node")
            }
        })
    }

    fn forget(&self, ticket: Ticket) {
        self.forget_call(ticket);
    }

    fn leads_refreshes(&self) -> bool {
        self.is_leader()
    }

    fn ask_leader_to_refresh(&self) -> bool {
        if self.is_leader() {
            return false;
        }
        self.push(0, |m| m.refresh = true);
        true
    }

    fn leader_refresh(&self, deadline: Instant) -> Option<LeaderRefresh<'_>> {
        if self.is_leader() {
            return None;
        }
        // The leader sends the new topology before its answer, on the same
        // channel: it is installed here when the answer comes.
        Some(Box::pin(async move {
            let ticket = self.send_asked(0, deadline, Asked::Refresh)?;
            let _forget = Forget { mesh: self, ticket };
            poll_fn(|cx| self.poll_answer(ticket, cx)).await.map(drop)
        }))
    }

    fn spread_moved(&self, slot: u16, addr: &NodeAddr) {
        for peer in (0..self.count).filter(|&p| p != self.index) {
            self.push(peer, |m| m.moved.push((slot, addr.clone())));
        }
    }

    fn publish(&self, topology: &Topology, epoch: u64) {
        for peer in (0..self.count).filter(|&p| p != self.index) {
            self.push(peer, |m| m.topology = Some((topology.clone(), epoch)));
        }
    }
}

/// Forgets a call whose caller stopped waiting.
struct Forget<'a> {
    mesh: &'a CoreMesh,
    ticket: Ticket,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.mesh.forget_call(self.ticket);
    }
}

/// Sends the outbox of `peer` whenever it has something, one message at
/// a time.
async fn flusher(mesh: Rc<CoreMesh>, senders: Rc<Senders<Message>>, peer: usize) {
    loop {
        let message = poll_fn(|cx| {
            if mesh.stopped.get() {
                return Poll::Ready(None);
            }
            let mut outboxes = mesh.outboxes.borrow_mut();
            if outboxes[peer].is_empty() {
                mesh.flushers.borrow_mut()[peer] = Some(cx.waker().clone());
                return Poll::Pending;
            }
            Poll::Ready(Some(std::mem::take(&mut outboxes[peer])))
        })
        .await;
        let Some(message) = message else { break };
        mesh.counters
            .batches_out
            .set(mesh.counters.batches_out.get() + 1);
        if senders.send_to(peer, message).await.is_err() {
            tracing::debug!(peer, "core stopped; failing the calls waiting on it");
            mesh.peer_gone(peer);
            break;
        }
    }
}

/// Takes in the messages of `peer` until it closes its channel.
async fn receiver(mesh: Rc<CoreMesh>, peer: usize, rx: ConnectedReceiver<Message>) {
    while let Some(message) = rx.recv().await {
        mesh.handle(peer, message);
    }
    mesh.peer_gone(peer);
}

/// Expires calls whose owner stays silent past their deadline.
async fn sweeper(mesh: Rc<CoreMesh>) {
    loop {
        poll_fn(|cx| {
            if mesh.stopped.get() || !mesh.pending.borrow().is_empty() {
                return Poll::Ready(());
            }
            *mesh.sweeper.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
        if mesh.stopped.get() {
            break;
        }
        glommio::timer::Timer::new(GRACE).await;
        mesh.expire(Instant::now());
    }
}
