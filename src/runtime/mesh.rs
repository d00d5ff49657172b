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

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use glommio::channels::channel_mesh::Senders;
use glommio::channels::shared_channel::ConnectedReceiver;
use slab::Slab;

use crate::cluster::router::Router;
use crate::cluster::{NodeAddr, Topology};
use crate::cmd::Cmd;
use crate::{Connection, Error, Value};

/// A piece of work to run on the owner core's connection.
pub(crate) type Job =
    Box<dyn FnOnce(Connection) -> Pin<Box<dyn Future<Output = Box<dyn Any + Send>>>> + Send>;

/// What a request asks of the core that owns its node.
pub(crate) enum Op {
    /// One command, after `ASKING` when `asking`.
    Command { cmd: Cmd, asking: bool },
    /// A pipeline.
    Pipeline(Vec<Cmd>),
    /// `MULTI`/`EXEC`, after `ASKING` when `asking`.
    Transaction { cmds: Vec<Cmd>, asking: bool },
    /// A topology refresh (asked of core 0).
    Refresh,
    /// Anything else on the node's connection (watch transactions).
    Job(Job),
}

/// The answer to an [`Op`].
pub(crate) enum Reply {
    Value(Value),
    Values(Vec<Value>),
    Done,
    Any(Box<dyn Any + Send>),
}

impl Reply {
    pub fn into_value(self) -> Result<Value, Error> {
        match self {
            Reply::Value(v) => Ok(v),
            _ => unreachable!("a command is answered with a value"),
        }
    }

    pub fn into_values(self) -> Result<Vec<Value>, Error> {
        match self {
            Reply::Values(v) => Ok(v),
            _ => unreachable!("a batch is answered with values"),
        }
    }

    pub fn into_any(self) -> Box<dyn Any + Send> {
        match self {
            Reply::Any(v) => v,
            _ => unreachable!("a job is answered with its output"),
        }
    }
}

/// Which waiting call a reply belongs to: a slab index, and a sequence
/// number so that a late reply never completes a newer call in a reused
/// entry.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ticket {
    index: u32,
    seq: u32,
}

/// A request for a node another core owns.
pub(crate) struct Request {
    ticket: Ticket,
    node: Option<NodeAddr>,
    deadline: Instant,
    op: Op,
}

/// One message between two cores: everything one core had for the other
/// in one turn.
#[derive(Default)]
pub(crate) struct Batch {
    requests: Vec<Request>,
    replies: Vec<(Ticket, Result<Reply, Error>)>,
    moved: Vec<(u16, NodeAddr)>,
    topology: Option<(Topology, u64)>,
    refresh: bool,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.requests.is_empty()
            && self.replies.is_empty()
            && self.moved.is_empty()
            && self.topology.is_none()
            && !self.refresh
    }
}

/// A call waiting for another core's reply.
struct Pending {
    seq: u32,
    core: usize,
    deadline: Instant,
    result: Option<Result<Reply, Error>>,
    waker: Option<Waker>,
}

/// How long after its deadline a call waits for the owner's own timeout
/// reply before giving up on that core.
const GRACE: Duration = Duration::from_millis(100);

/// Counters of cross-core traffic, as [`HopStats`](super::HopStats).
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
    outboxes: RefCell<Vec<Batch>>,
    flushers: RefCell<Vec<Option<Waker>>>,
    senders: RefCell<Option<Rc<Senders<Batch>>>>,
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
}

impl CoreMesh {
    pub fn new(index: usize, count: usize, every_core: bool) -> CoreMesh {
        CoreMesh {
            index,
            count,
            every_core,
            outboxes: RefCell::new((0..count).map(|_| Batch::default()).collect()),
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
        }
    }

    /// Core 0 refreshes the topology for every core.
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
        senders: Senders<Batch>,
        receivers: Vec<(usize, ConnectedReceiver<Batch>)>,
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

    /// The core that owns `addr`: masters (in address order) go round
    /// the cores, so each core owns as many as the others give or take
    /// one; any other node goes by a hash of its address. Every core
    /// computes the same answer from the same master list.
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

    /// The core that owns `addr` when it is not this one (and cores do not
    /// each connect to every node).
    pub fn remote_owner(&self, addr: &NodeAddr, masters: &[NodeAddr]) -> Option<usize> {
        if self.every_core || self.count == 1 {
            return None;
        }
        let owner = self.owner_of(addr, masters);
        (owner != self.index).then_some(owner)
    }

    /// Puts something into the outbox of `peer` and wakes its flusher.
    fn push(&self, peer: usize, f: impl FnOnce(&mut Batch)) {
        f(&mut self.outboxes.borrow_mut()[peer]);
        if let Some(w) = self.flushers.borrow_mut()[peer].take() {
            w.wake();
        }
    }

    /// Sends `op` for `node` to core `core` and waits for its reply, at
    /// most until `deadline` and a short grace for the owner's own
    /// timeout reply.
    pub async fn call(
        self: &Rc<Self>,
        core: usize,
        node: Option<NodeAddr>,
        deadline: Instant,
        op: Op,
    ) -> Result<Reply, Error> {
        if self.gone[core].get() || self.stopped.get() {
            return Err(Error::CoreStopped {
                core,
                maybe_applied: false,
            });
        }
        let seq = self.seq.get().wrapping_add(1);
        self.seq.set(seq);
        let index = self.pending.borrow_mut().insert(Pending {
            seq,
            core,
            deadline,
            result: None,
            waker: None,
        });
        let ticket = Ticket {
            index: index as u32,
            seq,
        };
        self.push(core, |b| {
            b.requests.push(Request {
                ticket,
                node,
                deadline,
                op,
            })
        });
        self.counters.sent.set(self.counters.sent.get() + 1);
        if let Some(w) = self.sweeper.borrow_mut().take() {
            w.wake();
        }
        let _forget = Forget { mesh: self, ticket };
        poll_fn(|cx| {
            let mut pending = self.pending.borrow_mut();
            let p = &mut pending[index];
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
        })
        .await
    }

    /// Completes the call of `ticket`, if it still waits.
    fn complete(&self, ticket: Ticket, result: Result<Reply, Error>) {
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

    /// Fails every call waiting on `core`, which stopped.
    fn peer_gone(&self, core: usize) {
        self.gone[core].set(true);
        for (_, p) in self.pending.borrow_mut().iter_mut() {
            if p.core == core && p.result.is_none() {
                p.result = Some(Err(Error::CoreStopped {
                    core,
                    maybe_applied: true,
                }));
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
    fn handle(self: &Rc<Self>, peer: usize, batch: Batch) {
        self.counters
            .batches_in
            .set(self.counters.batches_in.get() + 1);
        let router = self.router.borrow().upgrade();
        if let Some(router) = &router {
            if let Some((topology, epoch)) = batch.topology {
                router.accept_published(topology, epoch);
            }
            for (slot, addr) in batch.moved {
                router.apply_moved(slot, addr);
            }
            if batch.refresh {
                router.request_refresh();
            }
        }
        for (ticket, result) in batch.replies {
            self.complete(ticket, result);
        }
        for req in batch.requests {
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
                let result = router.serve(req.node, req.deadline, req.op).await;
                mesh.push(peer, |b| b.replies.push((req.ticket, result)));
                mesh.end_work();
            })
            .detach();
        }
    }

    /// Tells every other core that `slot` moved to `addr`.
    pub fn broadcast_moved(&self, slot: u16, addr: &NodeAddr) {
        for peer in (0..self.count).filter(|&p| p != self.index) {
            self.push(peer, |b| b.moved.push((slot, addr.clone())));
        }
    }

    /// Gives every other core the topology core 0 just installed.
    pub fn publish(&self, topology: &Topology, epoch: u64) {
        for peer in (0..self.count).filter(|&p| p != self.index) {
            self.push(peer, |b| b.topology = Some((topology.clone(), epoch)));
        }
    }

    /// Asks core 0 for a refresh, without waiting.
    pub fn ask_leader_to_refresh(&self) {
        self.push(0, |b| b.refresh = true);
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

    /// Stops the mesh tasks and closes this core's channels.
    pub fn stop(&self) {
        self.stopped.set(true);
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

    /// The cross-core traffic so far.
    pub fn stats(&self) -> super::HopStats {
        super::HopStats {
            requests_sent: self.counters.sent.get(),
            requests_served: self.counters.served.get(),
            messages_sent: self.counters.batches_out.get(),
            messages_received: self.counters.batches_in.get(),
        }
    }
}

/// Forgets a call that stopped waiting (its caller gave up): a late
/// reply is then dropped.
struct Forget<'a> {
    mesh: &'a CoreMesh,
    ticket: Ticket,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        let mut pending = self.mesh.pending.borrow_mut();
        let i = self.ticket.index as usize;
        if pending.get(i).is_some_and(|p| p.seq == self.ticket.seq) {
            pending.remove(i);
        }
    }
}

/// Sends the outbox of `peer` whenever it has something, one message at
/// a time.
async fn flusher(mesh: Rc<CoreMesh>, senders: Rc<Senders<Batch>>, peer: usize) {
    loop {
        let batch = poll_fn(|cx| {
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
        let Some(batch) = batch else { break };
        mesh.counters
            .batches_out
            .set(mesh.counters.batches_out.get() + 1);
        if senders.send_to(peer, batch).await.is_err() {
            tracing::debug!(peer, "core stopped; failing the calls waiting on it");
            mesh.peer_gone(peer);
            break;
        }
    }
}

/// Takes in the messages of `peer` until it closes its channel.
async fn receiver(mesh: Rc<CoreMesh>, peer: usize, rx: ConnectedReceiver<Batch>) {
    while let Some(batch) = rx.recv().await {
        mesh.handle(peer, batch);
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
