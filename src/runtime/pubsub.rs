//! Pub/sub on the per-core runtime: one server-side subscription per name
//! per process, whichever cores subscribe, and each message carried to
//! every subscribing core once.
//!
//! Every name has a *home* core (its slot, modulo the number of cores).
//! The home subscribes to it on the cluster through its own router (a
//! [`Follow`](crate::cluster::pubsub), which keeps it on the right node
//! through migrations and failovers) and forwards what it hears — each
//! message, gap and refusal — once to every core that wants the name,
//! in the batch the mesh already sends each turn. A core fans what
//! arrives out to its own subscriptions through a
//! [`Registry`](crate::conn::pubsub::Registry), the same a connection
//! uses. Each subscription asks the homes of all its names (a request
//! for a name already served is answered once it is placed); a core
//! tells a home when its last subscription to a name is dropped, and the
//! home unsubscribes when no core wants the name any more.
//!
//! What a home has queued for one peer core is bounded
//! ([`FED_MAX_EVENTS`], [`FED_MAX_BYTES`]): past that, messages for that
//! core are dropped and the core's subscriptions get a gap with the
//! number dropped before the next message, as a full subscription queue
//! does.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap};
use std::rc::{Rc, Weak};
use std::time::Instant;

use bytes::Bytes;

use super::CoreClient;
use super::mesh::CoreMesh;
use crate::Error;
use crate::cluster::pubsub::{FollowGuard, follow};
use crate::conn::pubsub::{
    ChannelKind, Feed, Gap, GapCause, Inbox, Lost, Message, Registry, Sink, Subscribe, Subscription,
};
use crate::join::join_all;

/// Events a home queues for one peer core in one turn, at most.
pub(super) const FED_MAX_EVENTS: usize = 65_536;
/// Bytes of messages (channel, pattern, payload) a home queues for one
/// peer core in one turn, at most.
pub(super) const FED_MAX_BYTES: usize = 64 << 20;

/// What a home core forwards for one name.
#[derive(Clone)]
pub(crate) enum Fed {
    Message(Message),
    Gap(Gap),
    /// The cluster refused the name for good.
    Lost(Lost),
}

impl Fed {
    /// The bytes it holds, as counted against [`FED_MAX_BYTES`].
    pub(super) fn size(&self) -> usize {
        match self {
            Fed::Message(m) => {
                m.channel.len() + m.payload.len() + m.pattern.as_ref().map_or(0, Bytes::len)
            }
            _ => 0,
        }
    }
}

/// A name as the home serves it: its follow on the cluster (once placed)
/// and the cores that want it.
struct Homed {
    follow: Option<FollowGuard>,
    cores: BTreeSet<usize>,
    /// Tells this entry from a later one for the same name.
    generation: u64,
    /// Whether the name is subscribed on the cluster yet, for the cores
    /// that want it meanwhile.
    placed: Rc<Placed>,
}

/// The outcome of a name's subscription on the cluster, awaited by every
/// core that asks for the name.
#[derive(Default)]
pub(super) struct Placed {
    outcome: RefCell<Option<Result<(), Error>>>,
    wakers: RefCell<Vec<std::task::Waker>>,
}

impl Placed {
    fn set(&self, outcome: Result<(), Error>) {
        *self.outcome.borrow_mut() = Some(outcome);
        for w in self.wakers.borrow_mut().drain(..) {
            w.wake();
        }
    }

    /// True once placed (or failed).
    pub fn is_known(&self) -> bool {
        self.outcome.borrow().is_some()
    }

    /// Waits for the outcome.
    pub async fn wait(&self) -> Result<(), Error> {
        std::future::poll_fn(|cx| match &*self.outcome.borrow() {
            Some(r) => std::task::Poll::Ready(r.clone()),
            None => {
                self.wakers.borrow_mut().push(cx.waker().clone());
                std::task::Poll::Pending
            }
        })
        .await
    }
}

/// What a core's request for some names needs: the names to subscribe
/// to on the cluster now, and the outcomes to wait for (every name of the
/// request, placed by this request or an earlier one).
pub(super) struct Wanted {
    pub new: Vec<(Bytes, u64)>,
    pub waits: Vec<Rc<Placed>>,
}

impl Wanted {
    /// True when every name is subscribed already.
    pub fn is_settled(&self) -> bool {
        self.new.is_empty() && self.waits.iter().all(|p| p.is_known())
    }
}

/// Messages a home dropped for one peer core and one name, not yet told.
#[derive(Clone, Copy)]
struct Dropped {
    from: Instant,
    to: Instant,
    count: u64,
}

/// This core's pub/sub state.
#[derive(Default)]
pub(crate) struct CorePubSub {
    /// This core's subscriptions, by name.
    pub local: RefCell<Registry>,
    /// The names this core is home to.
    homed: RefCell<HashMap<(ChannelKind, Bytes), Homed>>,
    generation: Cell<u64>,
    /// Messages dropped for a peer core whose outbox was full: (peer,
    /// kind, name).
    dropped: RefCell<HashMap<(usize, ChannelKind, Bytes), Dropped>>,
}

/// The home's sink for one name: forwards to every core that wants it.
struct Fanout {
    mesh: Weak<CoreMesh>,
    kind: ChannelKind,
    name: Bytes,
    /// The entry it serves (a later entry for the same name has its own).
    generation: u64,
}

impl Fanout {
    fn forward(&self, fed: Fed) {
        if let Some(mesh) = self.mesh.upgrade() {
            mesh.fan_out(self.kind, &self.name, self.generation, fed);
        }
    }
}

impl Sink for Fanout {
    fn message(&self, message: Message) {
        self.forward(Fed::Message(message));
    }

    fn gap(&self, gap: Gap) {
        self.forward(Fed::Gap(gap));
    }

    // A refusal for good (the cluster layer moves everything else): every
    // core is told, and the entry goes once this call is over (the follow
    // calling this is borrowed).
    fn lost(&self, _: ChannelKind, _: &Bytes, why: Lost) {
        self.forward(Fed::Lost(why));
        let (mesh, kind, name, generation) = (
            self.mesh.clone(),
            self.kind,
            self.name.clone(),
            self.generation,
        );
        glommio::spawn_local(async move {
            if let Some(mesh) = mesh.upgrade() {
                mesh.forget_homed(kind, &name, generation);
            }
        })
        .detach();
    }

    // The cluster client closes only when the runtime stops, which ends
    // every core's subscriptions itself.
    fn closed(&self) {}
}

impl CoreMesh {
    /// The core that is home to `name`.
    pub(super) fn home_of(&self, name: &[u8]) -> usize {
        usize::from(crate::slot::key_slot(name)) % self.count
    }

    /// Hands `fed` for `name` to every core that wants it (this one
    /// directly, the others through their outboxes), if `generation` is
    /// the entry's.
    fn fan_out(&self, kind: ChannelKind, name: &Bytes, generation: u64, fed: Fed) {
        let homed = self.pubsub.homed.borrow();
        let Some(h) = homed
            .get(&(kind, name.clone()))
            .filter(|h| h.generation == generation)
        else {
            return;
        };
        for &core in &h.cores {
            if core == self.index {
                self.take_fed(kind, name, fed.clone());
            } else {
                self.push_fed(core, kind, name, fed.clone());
            }
        }
    }

    /// Queues `fed` for peer `core`, within the outbox's bounds: a message
    /// past them is dropped, and a gap saying how many goes before the
    /// next one that fits.
    fn push_fed(&self, core: usize, kind: ChannelKind, name: &Bytes, fed: Fed) {
        let size = fed.size();
        let key = (core, kind, name.clone());
        self.push(core, |m| {
            let full = m.pubsub.len() >= FED_MAX_EVENTS || m.pubsub_bytes + size > FED_MAX_BYTES;
            let mut dropped = self.pubsub.dropped.borrow_mut();
            if full && matches!(fed, Fed::Message(_)) {
                let now = Instant::now();
                let d = dropped.entry(key).or_insert(Dropped {
                    from: now,
                    to: now,
                    count: 0,
                });
                d.to = now;
                d.count += 1;
                return;
            }
            if let Some(d) = dropped.remove(&key) {
                let gap = Gap {
                    from: d.from,
                    to: d.to,
                    missed: Some(d.count),
                    cause: GapCause::Overflow,
                };
                m.pubsub.push((kind, name.clone(), Fed::Gap(gap)));
            }
            m.pubsub_bytes += size;
            m.pubsub.push((kind, name.clone(), fed));
        });
    }

    /// What a home forwarded for `name`: to this core's subscriptions.
    pub(super) fn take_fed(&self, kind: ChannelKind, name: &Bytes, fed: Fed) {
        let mut local = self.pubsub.local.borrow_mut();
        match fed {
            Fed::Message(m) => local.deliver(m),
            Fed::Gap(g) => local.gap_for(kind, name, g),
            Fed::Lost(why) => local.lose(kind, name, why),
        }
    }

    /// Core `core` wants `names` (as their home). Done at once, in the
    /// order requests arrive, so that a later [`unwant`](Self::unwant) is
    /// never overtaken; then [`settle`](Self::settle) finishes it.
    pub(super) fn want(&self, core: usize, kind: ChannelKind, names: &[Bytes]) -> Wanted {
        let mut homed = self.pubsub.homed.borrow_mut();
        let mut wanted = Wanted {
            new: Vec::new(),
            waits: Vec::new(),
        };
        for name in names {
            let h = homed.entry((kind, name.clone())).or_insert_with(|| {
                let generation = self.pubsub.generation.get() + 1;
                self.pubsub.generation.set(generation);
                wanted.new.push((name.clone(), generation));
                Homed {
                    follow: None,
                    cores: BTreeSet::new(),
                    generation,
                    placed: Rc::default(),
                }
            });
            h.cores.insert(core);
            wanted.waits.push(h.placed.clone());
        }
        wanted
    }

    /// Subscribes to the new names of `wanted` on the cluster, in a task
    /// of its own (nobody's dropped future cancels a placement others
    /// may wait for), and waits until every name of it is placed, before
    /// `deadline`.
    pub(super) async fn settle(
        self: &Rc<Self>,
        kind: ChannelKind,
        wanted: Wanted,
        deadline: Instant,
    ) -> Result<(), Error> {
        if !wanted.new.is_empty() {
            let mesh = self.clone();
            let new = wanted.new;
            glommio::spawn_local(async move { mesh.follow_names(kind, new, deadline).await })
                .detach();
        }
        let waits = join_all(wanted.waits.iter().map(|placed| async move {
            let left = deadline.saturating_duration_since(Instant::now());
            futures_lite::future::or(placed.wait(), async {
                glommio::timer::sleep(left).await;
                Err(Error::Timeout {
                    maybe_applied: false,
                })
            })
            .await
        }))
        .await;
        waits.into_iter().collect()
    }

    /// Subscribes to `names` on the cluster (their entries made by
    /// [`want`](Self::want)), each followed on its own, before
    /// `deadline`; each entry's outcome is set. A failure takes the
    /// name's entry away.
    async fn follow_names(
        self: &Rc<Self>,
        kind: ChannelKind,
        names: Vec<(Bytes, u64)>,
        deadline: Instant,
    ) {
        let Some(router) = self.router() else {
            let homed = self.pubsub.homed.borrow();
            for (name, _) in &names {
                if let Some(h) = homed.get(&(kind, name.clone())) {
                    h.placed
                        .set(Err(Error::Closed("the core is shutting down")));
                }
            }
            return;
        };
        let results = join_all(names.into_iter().map(|(name, generation)| {
            let router = router.clone();
            let sink = Rc::new(Fanout {
                mesh: Rc::downgrade(self),
                kind,
                name: name.clone(),
                generation,
            });
            async move {
                let r = follow(&router, kind, vec![name.clone()], sink, deadline).await;
                (name, generation, r)
            }
        }))
        .await;
        let mut homed = self.pubsub.homed.borrow_mut();
        for (name, generation, r) in results {
            let key = (kind, name);
            let Some(h) = homed.get_mut(&key).filter(|h| h.generation == generation) else {
                // Every core gave it up meanwhile: dropped at once.
                continue;
            };
            match r {
                Ok(guard) => {
                    h.follow = Some(guard);
                    h.placed.set(Ok(()));
                }
                Err(e) => {
                    h.placed.set(Err(e));
                    homed.remove(&key);
                }
            }
        }
    }

    /// Core `core` no longer wants `names`: a name no core wants is
    /// unsubscribed.
    pub(super) fn unwant(&self, core: usize, kind: ChannelKind, names: &[Bytes]) {
        let mut homed = self.pubsub.homed.borrow_mut();
        let mut gone = Vec::new();
        for name in names {
            let key = (kind, name.clone());
            if let Some(h) = homed.get_mut(&key) {
                h.cores.remove(&core);
                if h.cores.is_empty() {
                    gone.push(homed.remove(&key));
                }
            }
        }
        drop(homed);
        // Dropping the follows unsubscribes, with nothing borrowed.
        drop(gone);
    }

    /// The cluster refused `name` for good: its entry goes (the cores
    /// were told, and forgot it).
    fn forget_homed(&self, kind: ChannelKind, name: &Bytes, generation: u64) {
        let key = (kind, name.clone());
        let gone = {
            let mut homed = self.pubsub.homed.borrow_mut();
            match homed.get(&key) {
                Some(h) if h.generation == generation => homed.remove(&key),
                _ => None,
            }
        };
        drop(gone);
    }

    /// The runtime stops: every subscription of this core ends, and the
    /// names it is home to are given up.
    pub(super) fn close_pubsub(&self) {
        self.pubsub.local.borrow_mut().close();
        let homed = std::mem::take(&mut *self.pubsub.homed.borrow_mut());
        drop(homed);
    }
}

/// One subscription's names on this core: dropping it detaches them, and
/// tells the homes of the names no subscription here wants any more.
struct CoreAttachment {
    mesh: Rc<CoreMesh>,
    id: u64,
    kind: ChannelKind,
    names: Vec<Bytes>,
}

impl Feed for CoreAttachment {
    fn unsubscribe(
        self: Box<Self>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Error>>>> {
        drop(self);
        Box::pin(std::future::ready(Ok(())))
    }
}

impl Drop for CoreAttachment {
    fn drop(&mut self) {
        let gone = self
            .mesh
            .pubsub
            .local
            .borrow_mut()
            .detach(self.id, self.kind, &self.names);
        for (home, names) in by_home(&self.mesh, gone) {
            if home == self.mesh.index {
                self.mesh.unwant(home, self.kind, &names);
            } else {
                self.mesh.tell_unwant(home, self.kind, names);
            }
        }
    }
}

/// `names` grouped by their home core.
fn by_home(mesh: &CoreMesh, names: Vec<Bytes>) -> HashMap<usize, Vec<Bytes>> {
    let mut groups: HashMap<usize, Vec<Bytes>> = HashMap::new();
    for n in names {
        groups.entry(mesh.home_of(&n)).or_default().push(n);
    }
    groups
}

/// On the runtime: however many cores subscribe to a name, the process
/// subscribes to it once on the cluster (on the name's home core, which
/// forwards each message once to every core that wants it), with
/// everything a [`Cluster`](crate::Cluster) subscription does: the name
/// follows its node through migrations and failovers, with gaps.
impl Subscribe for CoreClient {
    async fn subscribe_to(
        &self,
        kind: ChannelKind,
        names: Vec<Bytes>,
    ) -> Result<Subscription, Error> {
        let _work = self.enter()?;
        let inbox = Inbox::for_config(&self.cluster.config().node);
        let mesh = self.mesh.clone();
        let id = mesh
            .pubsub
            .local
            .borrow_mut()
            .attach(kind, &names, inbox.clone());
        let attachment = CoreAttachment {
            mesh: mesh.clone(),
            id,
            kind,
            names: names.clone(),
        };
        let deadline = self.cluster.deadline();
        // Every name is asked of its home, even one another subscription
        // here wants: its placement may be under way, and may fail.
        let asked = by_home(&mesh, names).into_iter().map(|(home, names)| {
            let mesh = mesh.clone();
            async move {
                if home == mesh.index {
                    let wanted = mesh.want(home, kind, &names);
                    mesh.settle(kind, wanted, deadline).await
                } else {
                    mesh.ask_want(home, deadline, kind, names).await
                }
            }
        });
        for result in join_all(asked).await {
            // Dropping the attachment gives the names back.
            result?;
        }
        Ok(Subscription::new(inbox, Box::new(attachment)))
    }
}
