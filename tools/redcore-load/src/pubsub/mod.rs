//! The pub/sub load (`--pubsub`) through redcore, on one core: one
//! glommio executor, pinned to the first online CPU.
//!
//! - `--server`: one [`Connection`]. Publishers (`--publishers` ×
//!   `--in-flight` tasks) publish on it, one `PUBLISH` / `SPUBLISH` at a
//!   time each; every subscriber is a [`Subscription`] of the same
//!   connection (on RESP3 its messages share the connection's socket with
//!   the publishes; on RESP2 redcore opens one dedicated connection for
//!   all of them).
//! - `--cluster`: by default (`--cluster-client executor`) a
//!   [`ClusterExecutor`] of one core and its [`CoreClient`](redcore::CoreClient), as the other
//!   loads use; `--cluster-client cluster`: a bare [`Cluster`] client on
//!   one executor. Either way the publishers and subscriptions all share
//!   the one client (each channel subscribed once, on its slot's master;
//!   the client fans messages out to its subscriptions).
//!
//! Every subscription is confirmed before the first publish. After the
//! last publish ends, subscribers get `--tail` to receive what is
//! missing; the run ends as soon as each has every message.
//!
//! `hub.rs`, `message.rs` and `report.rs` are the same files in
//! redis-rs-load (a test there checks), so both tools send the same
//! payloads and count the same way.

pub use load_common::pubsub::{hub, message, report};

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::future;
use glommio::{LocalExecutorBuilder, Placement};
use redcore::commands::PubSubCommands;
use redcore::config::Protocol;
use redcore::pubsub::ChannelKind;
use redcore::{
    Cluster, ClusterExecutor, Commands, Connection, PubSubEvent, Subscribe, Subscription,
};

use crate::Target;
use crate::cpu::CpuTime;
use crate::worker::error_kind;
use hub::{Hub, Kind, Plan};
use message::{Tracker, new_payload};
use report::Outcome;

/// A client that publishes and subscribes: what the load needs of it
/// (`Connection`, `Cluster`, `CoreClient`).
pub trait PubSubClient: Commands + Subscribe + Clone + 'static {}

impl<C: Commands + Subscribe + Clone + 'static> PubSubClient for C {}

/// The channel kind of the load, as redcore names it.
fn channel_kind(kind: Kind) -> ChannelKind {
    match kind {
        Kind::Channels => ChannelKind::Channel,
        Kind::Sharded => ChannelKind::Shard,
    }
}

/// Which redcore client a `--cluster` load uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterClient {
    /// A one-core `ClusterExecutor` and its `CoreClient`.
    Executor,
    /// A bare `Cluster` on one executor.
    Cluster,
}

/// How the run went, sent back from the executor.
pub struct Run {
    /// How the subscribers received.
    pub api: String,
    /// The publishers' counts.
    pub hub: Hub,
    /// The subscribers' counts and the CPU time.
    pub outcome: Outcome,
}

/// Runs the load on one executor pinned to `cpu` (the executor path of
/// `--cluster`: on the first online CPU, where a one-core
/// `ClusterExecutor` pins itself); returns once it is over.
pub fn run(
    target: &Target,
    plan: Plan,
    cpu: usize,
    spin: Option<Duration>,
    cluster_client: ClusterClient,
) -> Result<Run, String> {
    if let (Target::Cluster(config), ClusterClient::Executor) = (target, cluster_client) {
        let api = "redcore CoreClient Subscription (a one-core ClusterExecutor; on the \
                   publishers' client)";
        let mut executor = ClusterExecutor::new(config.clone())
            .and_then(|e| e.cores(1))
            .map_err(|e| format!("cannot start on the cluster: {e}"))?
            .io_memory(64 << 10);
        if let Some(spin) = spin {
            executor = executor.spin_before_park(spin);
        }
        let handle = executor
            .spawn(move |client| load(client, plan.clone(), api))
            .map_err(|e| format!("cannot start on the cluster: {e}"))?;
        return handle
            .join()
            .into_iter()
            .next()
            .ok_or("the executor ran no core")?
            .map_err(|e| format!("the core failed: {e}"))?;
    }
    let mut builder = LocalExecutorBuilder::new(Placement::Fixed(cpu)).io_memory(64 << 10);
    if let Some(spin) = spin.filter(|s| !s.is_zero()) {
        builder = builder.spin_before_park(spin);
    }
    let target = target.clone();
    let handle = builder
        .name("redcore-load-pubsub")
        .spawn(move || async move {
            match target {
                Target::Server(config) => {
                    let api = match config.protocol {
                        Protocol::Resp2 => {
                            "redcore Subscription (RESP2: one dedicated connection for all)"
                        }
                        _ => "redcore Subscription (RESP3: on the publishers' connection)",
                    };
                    let conn = Connection::connect(config)
                        .await
                        .map_err(|e| format!("cannot connect: {e}"))?;
                    let run = load(conn.clone(), plan, api).await;
                    conn.close();
                    run
                }
                Target::Cluster(config) => {
                    let cluster = Cluster::connect(config)
                        .await
                        .map_err(|e| format!("cannot connect to the cluster: {e}"))?;
                    let api = "redcore Cluster Subscription (on the publishers' cluster client)";
                    let run = load(cluster.clone(), plan, api).await;
                    cluster.close();
                    run
                }
            }
        })
        .map_err(|e| format!("starting an executor on CPU {cpu}: {e}"))?;
    handle
        .join()
        .map_err(|e| format!("the executor failed: {e}"))?
}

/// The subscribers' shared view of the end.
struct Ending {
    /// Messages each subscriber must receive; `u64::MAX` while publishing.
    target: Cell<u64>,
    /// Subscribers tell their number here when they have every message.
    done: async_channel::Sender<usize>,
}

/// Subscribes, publishes, and waits for the deliveries.
async fn load<C: PubSubClient>(client: C, plan: Plan, api: &str) -> Result<Run, String> {
    let mut subscriptions = Vec::with_capacity(plan.subscribers);
    for _ in 0..plan.subscribers {
        let sub = client
            .subscribe_to(
                channel_kind(plan.kind),
                plan.channel_names
                    .iter()
                    .map(|n| n.clone().into())
                    .collect(),
            )
            .await
            .map_err(|e| format!("subscribing: {e}"))?;
        subscriptions.push(sub);
    }
    let (done_tx, done_rx) = async_channel::unbounded();
    let ending = Rc::new(Ending {
        target: Cell::new(u64::MAX),
        done: done_tx,
    });
    let hub = Rc::new(Hub::new(plan));
    let plan = &hub.plan;
    let new_tracker = || Tracker::new(&plan.prefix, plan.channels(), plan.publishers);
    let trackers: Vec<Rc<RefCell<Tracker>>> = (0..plan.subscribers)
        .map(|_| Rc::new(RefCell::new(new_tracker())))
        .collect();
    let subscribers: Vec<_> = subscriptions
        .into_iter()
        .enumerate()
        .map(|(i, sub)| {
            let task = subscriber(i, sub, trackers[i].clone(), ending.clone(), hub.measure_ns);
            glommio::spawn_local(task)
        })
        .collect();
    let publishers: Vec<_> = (0..plan.publishers)
        .flat_map(|p| (0..plan.in_flight).map(move |_| p))
        .map(|p| glommio::spawn_local(publish_task(hub.clone(), client.clone(), p)))
        .collect();
    for p in publishers {
        p.await;
    }

    // Publishing is over: wait for every subscriber to have every message,
    // for --tail at most.
    let target_count = hub.attempted();
    ending.target.set(target_count);
    let mut complete: BTreeSet<usize> = trackers
        .iter()
        .enumerate()
        .filter(|(_, t)| t.borrow().received >= target_count)
        .map(|(i, _)| i)
        .collect();
    let deadline = Instant::now() + plan.tail;
    let mut tail_timed_out = false;
    while complete.len() < trackers.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let next = future::or(async { done_rx.recv().await.ok() }, async {
            glommio::timer::sleep(left).await;
            None
        });
        match next.await {
            Some(i) => {
                complete.insert(i);
            }
            None => {
                tail_timed_out = true;
                break;
            }
        }
    }
    let cpu = hub.measure_cpu.get().map(|at| CpuTime::now().since(at));
    for s in subscribers {
        s.cancel().await;
    }
    let trackers = trackers
        .into_iter()
        .map(|t| t.replace(new_tracker()))
        .collect();
    drop(ending);
    let hub = Rc::try_unwrap(hub).expect("every publisher task has ended");
    Ok(Run {
        api: api.to_owned(),
        hub,
        outcome: Outcome {
            trackers,
            cpu,
            tail_timed_out,
        },
    })
}

/// One of a publisher's tasks: sends its messages one at a time, at their
/// due time with a rate.
async fn publish_task<C: PubSubClient>(hub: Rc<Hub>, client: C, publisher: usize) {
    let mut payload = new_payload(hub.plan.message_size);
    while let Some(slot) = hub.next_slot(publisher) {
        if let Some(wake) = slot.wake_ns {
            let now = message::mono_ns();
            if wake > now {
                glommio::timer::sleep(Duration::from_nanos(wake - now)).await;
            }
        }
        let Some(m) = hub.message(publisher, slot) else {
            break;
        };
        m.header.write(&mut payload);
        let channel = hub.plan.channel_names[m.channel].as_str();
        let result = match hub.plan.kind {
            Kind::Channels => client.publish(channel, &payload[..]).await,
            Kind::Sharded => client.spublish(channel, &payload[..]).await,
        };
        hub.published(&m, result.map(drop).map_err(|e| error_kind(&e)));
    }
    hub.task_ended();
}

/// One subscriber: counts its messages until it is stopped; tells
/// `ending` once it has the target's count.
async fn subscriber(
    index: usize,
    mut sub: Subscription,
    tracker: Rc<RefCell<Tracker>>,
    ending: Rc<Ending>,
    measure_ns: u64,
) {
    let mut told = false;
    loop {
        let Some(event) = sub.recv().await else {
            // The client was closed for good.
            tracker.borrow_mut().on_gap(None);
            return;
        };
        let mut t = tracker.borrow_mut();
        match event {
            PubSubEvent::Message(m) => t.on_message(&m.channel, &m.payload, measure_ns),
            PubSubEvent::Gap(g) => t.on_gap(g.missed),
            // A name the server no longer serves: nothing more comes.
            _ => t.on_gap(None),
        }
        if !told && t.received >= ending.target.get() {
            told = true;
            drop(t);
            let _ = ending.done.try_send(index);
        }
    }
}
