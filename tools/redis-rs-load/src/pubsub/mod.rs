//! The pub/sub load (`--pubsub`) through redis-rs, on the one
//! current-thread runtime.
//!
//! - Publishers: `--publishers` × `--in-flight` tasks sharing one
//!   `MultiplexedConnection` (`--server`) or one async cluster connection
//!   (`--cluster`), each sending one `PUBLISH` / `SPUBLISH` at a time.
//! - Subscribers, each on every channel, each its own connection:
//!   `--server` with `--subscriber-api pubsub` (the default): redis-rs's
//!   dedicated pub/sub connection (`Client::get_async_pubsub`, RESP2);
//!   `--subscriber-api resp3`: a RESP3 `MultiplexedConnection` whose push
//!   messages go to a channel (`AsyncConnectionConfig::set_push_sender`);
//!   `--cluster`: an async cluster client with RESP3 and a push sender
//!   (the only way redis-rs's cluster client subscribes). Sharded
//!   channels need the push API (redis-rs's pub/sub connection has no
//!   `SSUBSCRIBE`).
//!
//! Every subscription is confirmed before the first publish. After the
//! last publish ends, subscribers get `--tail` to receive what is
//! missing; the run ends as soon as each has every message.
//!
//! `hub.rs`, `message.rs` and `report.rs` are the same files in
//! redcore-load (a test checks).

pub use load_common::pubsub::{hub, message, report};

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use redis::aio::ConnectionLike;
use redis::cluster::ClusterClientBuilder;
use redis::{AsyncConnectionConfig, ProtocolVersion, PushInfo, PushKind, RedisError, Value};
use tokio::sync::mpsc;

use crate::cpu::CpuTime;
use hub::{Hub, Kind, Plan};
use message::{Tracker, new_payload};
use report::Outcome;

/// How subscribers receive, on a single server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriberApi {
    /// redis-rs's dedicated pub/sub connection (`aio::PubSub`).
    PubSub,
    /// RESP3 push messages of a multiplexed connection.
    Resp3,
}

/// What the run needs to know besides the plan.
#[derive(Debug, Clone)]
pub struct Connect {
    /// A `redis://` URI, or cluster seeds as URIs.
    pub server: Option<String>,
    /// Cluster seeds, as `redis://` URIs.
    pub seeds: Vec<String>,
    /// How subscribers receive on a single server.
    pub api: SubscriberApi,
    /// Response and connection timeout.
    pub timeout: Duration,
}

/// The result of a run: the target's description, the subscribers' API,
/// the hub and what the subscribers saw.
pub struct Run {
    /// What was loaded.
    pub target: String,
    /// How the subscribers received.
    pub api: String,
    /// The publishers' counts.
    pub hub: Rc<Hub>,
    /// The subscribers' counts and the CPU time.
    pub outcome: Outcome,
}

/// Where one subscriber's messages come from.
enum Source {
    /// A dedicated pub/sub connection's messages.
    PubSub(redis::aio::PubSubStream),
    /// Push messages of a connection (kept open here).
    Push {
        rx: mpsc::UnboundedReceiver<PushInfo>,
        _conn: Box<dyn std::any::Any>,
    },
}

/// Connects, subscribes, runs the load and waits for the deliveries; must
/// run inside a tokio `LocalSet`.
pub async fn run(connect: &Connect, plan: Plan) -> Result<Run, String> {
    if let Some(uri) = &connect.server {
        let client = redis::Client::open(uri.as_str()).map_err(|e| format!("--server: {e}"))?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect.timeout))
            .set_response_timeout(Some(connect.timeout));
        let publisher = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| format!("cannot connect to {uri}: {e}"))?;
        if plan.kind == Kind::Sharded && connect.api == SubscriberApi::PubSub {
            return Err(
                "--pubsub sharded on a --server needs --subscriber-api resp3: redis-rs's \
                 pub/sub connection has no SSUBSCRIBE"
                    .into(),
            );
        }
        let mut sources = Vec::with_capacity(plan.subscribers);
        for _ in 0..plan.subscribers {
            sources.push(match connect.api {
                SubscriberApi::PubSub => subscribe_pubsub(&client, &plan).await?,
                SubscriberApi::Resp3 => subscribe_resp3(&client, &config, &plan).await?,
            });
        }
        let api = match connect.api {
            SubscriberApi::PubSub => "redis-rs aio::PubSub (a RESP2 connection each)",
            SubscriberApi::Resp3 => "redis-rs RESP3 push (a multiplexed connection each)",
        };
        let target = format!("server {}", client.get_connection_info().addr());
        return Ok(load(plan, publisher, sources, target, api.into()).await);
    }
    let seeds = &connect.seeds;
    let cluster_err =
        |e: RedisError| format!("cannot connect to the cluster at {}: {e}", seeds.join(","));
    let publisher = ClusterClientBuilder::new(seeds.clone())
        .connection_timeout(connect.timeout)
        .response_timeout(connect.timeout)
        .build()
        .map_err(|e| format!("--cluster: {e}"))?
        .get_async_connection()
        .await
        .map_err(cluster_err)?;
    let mut sources = Vec::with_capacity(plan.subscribers);
    for _ in 0..plan.subscribers {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut conn = ClusterClientBuilder::new(seeds.clone())
            .connection_timeout(connect.timeout)
            .response_timeout(connect.timeout)
            .use_protocol(ProtocolVersion::RESP3)
            .push_sender(tx)
            .build()
            .map_err(|e| format!("--cluster: {e}"))?
            .get_async_connection()
            .await
            .map_err(cluster_err)?;
        // One channel per call: sharded channels of different slots
        // cannot share a command.
        for name in &plan.channel_names {
            let r = match plan.kind {
                Kind::Channels => conn.subscribe(name).await,
                Kind::Sharded => conn.ssubscribe(name).await,
            };
            r.map_err(|e| format!("subscribing to {name}: {e}"))?;
        }
        sources.push(Source::Push {
            rx,
            _conn: Box::new(conn),
        });
    }
    let target = format!("cluster {}", seeds.join(","));
    let api = "redis-rs cluster RESP3 push (a cluster client each)";
    Ok(load(plan, publisher, sources, target, api.into()).await)
}

async fn subscribe_pubsub(client: &redis::Client, plan: &Plan) -> Result<Source, String> {
    let mut pubsub = client
        .get_async_pubsub()
        .await
        .map_err(|e| format!("cannot open a pub/sub connection: {e}"))?;
    pubsub
        .subscribe(&plan.channel_names)
        .await
        .map_err(|e| format!("SUBSCRIBE: {e}"))?;
    Ok(Source::PubSub(pubsub.into_on_message()))
}

async fn subscribe_resp3(
    client: &redis::Client,
    config: &AsyncConnectionConfig,
    plan: &Plan,
) -> Result<Source, String> {
    let info = client.get_connection_info().clone();
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    let client = redis::Client::open(info.set_redis_settings(settings))
        .map_err(|e| format!("--server: {e}"))?;
    let (tx, rx) = mpsc::unbounded_channel();
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config.clone().set_push_sender(tx))
        .await
        .map_err(|e| format!("cannot open a RESP3 connection: {e}"))?;
    match plan.kind {
        Kind::Channels => conn.subscribe(&plan.channel_names).await,
        Kind::Sharded => {
            // No ssubscribe() on a multiplexed connection: the command,
            // one per channel, confirmed by its reply.
            let mut r = Ok(());
            for name in &plan.channel_names {
                r = redis::cmd("SSUBSCRIBE")
                    .arg(name)
                    .query_async::<Value>(&mut conn)
                    .await
                    .map(drop);
                if r.is_err() {
                    break;
                }
            }
            r
        }
    }
    .map_err(|e| format!("subscribing: {e}"))?;
    Ok(Source::Push {
        rx,
        _conn: Box::new(conn),
    })
}

/// The subscribers' shared view of the end.
struct Ending {
    /// Messages each subscriber must receive; `u64::MAX` while publishing.
    target: Cell<u64>,
    /// Subscribers tell their number here when they have every message.
    done: mpsc::UnboundedSender<usize>,
}

async fn load<C: ConnectionLike + Clone + 'static>(
    plan: Plan,
    publisher: C,
    sources: Vec<Source>,
    target: String,
    api: String,
) -> Run {
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let ending = Rc::new(Ending {
        target: Cell::new(u64::MAX),
        done: done_tx,
    });
    let hub = Rc::new(Hub::new(plan));
    let plan = &hub.plan;
    let trackers: Vec<Rc<RefCell<Tracker>>> = (0..plan.subscribers)
        .map(|_| {
            Rc::new(RefCell::new(Tracker::new(
                &plan.prefix,
                plan.channels(),
                plan.publishers,
            )))
        })
        .collect();
    let subscribers: Vec<_> = sources
        .into_iter()
        .enumerate()
        .map(|(i, source)| {
            let task = subscriber(
                i,
                source,
                trackers[i].clone(),
                ending.clone(),
                hub.measure_ns,
            );
            tokio::task::spawn_local(task)
        })
        .collect();
    let publishers: Vec<_> = (0..plan.publishers)
        .flat_map(|p| (0..plan.in_flight).map(move |_| p))
        .map(|p| tokio::task::spawn_local(publish_task(hub.clone(), publisher.clone(), p)))
        .collect();
    for p in publishers {
        p.await.expect("a publisher task panicked");
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
    let deadline = tokio::time::Instant::now() + plan.tail;
    let mut tail_timed_out = false;
    while complete.len() < trackers.len() {
        match tokio::time::timeout_at(deadline, done_rx.recv()).await {
            Ok(Some(i)) => {
                complete.insert(i);
            }
            Ok(None) => unreachable!("`ending` holds a sender"),
            Err(_) => {
                tail_timed_out = true;
                break;
            }
        }
    }
    let cpu = hub.measure_cpu.get().map(|at| CpuTime::now().since(at));
    for s in subscribers {
        s.abort();
        let _ = s.await;
    }
    let trackers = trackers
        .into_iter()
        .map(|t| {
            let plan = &hub.plan;
            t.replace(Tracker::new(&plan.prefix, plan.channels(), plan.publishers))
        })
        .collect();
    Run {
        target,
        api,
        hub,
        outcome: Outcome {
            trackers,
            cpu,
            tail_timed_out,
        },
    }
}

/// One of a publisher's tasks: sends its messages one at a time, at their
/// due time with a rate.
async fn publish_task<C: ConnectionLike>(hub: Rc<Hub>, mut conn: C, publisher: usize) {
    let mut payload = new_payload(hub.plan.message_size);
    let command = match hub.plan.kind {
        Kind::Channels => "PUBLISH",
        Kind::Sharded => "SPUBLISH",
    };
    let start = (Instant::now(), message::mono_ns());
    while let Some(slot) = hub.next_slot(publisher) {
        if let Some(wake) = slot.wake_ns {
            let now = message::mono_ns();
            if wake > now {
                let at = start.0 + Duration::from_nanos(wake - start.1);
                tokio::time::sleep_until(at.into()).await;
            }
        }
        let Some(m) = hub.message(publisher, slot) else {
            break;
        };
        m.header.write(&mut payload);
        let result = redis::cmd(command)
            .arg(&hub.plan.channel_names[m.channel])
            .arg(&payload[..])
            .query_async::<i64>(&mut conn)
            .await;
        hub.published(&m, result.map(drop).map_err(|e| error_kind(&e)));
    }
    hub.task_ended();
}

/// One subscriber: counts its messages until it is stopped; tells
/// `ending` once it has the target's count.
async fn subscriber(
    index: usize,
    mut source: Source,
    tracker: Rc<RefCell<Tracker>>,
    ending: Rc<Ending>,
    measure_ns: u64,
) {
    let mut told = false;
    loop {
        let t = match &mut source {
            Source::PubSub(stream) => {
                let Some(msg) = stream.next().await else {
                    tracker.borrow_mut().on_gap(None);
                    return;
                };
                let mut t = tracker.borrow_mut();
                t.on_message(
                    msg.get_channel_name().as_bytes(),
                    msg.get_payload_bytes(),
                    measure_ns,
                );
                t
            }
            Source::Push { rx, .. } => {
                let Some(push) = rx.recv().await else {
                    tracker.borrow_mut().on_gap(None);
                    return;
                };
                let mut t = tracker.borrow_mut();
                match (push.kind, push.data.as_slice()) {
                    (
                        PushKind::Message | PushKind::SMessage,
                        [Value::BulkString(channel), Value::BulkString(payload), ..],
                    ) => t.on_message(channel, payload, measure_ns),
                    (PushKind::Disconnection, _) => t.on_gap(None),
                    _ => {}
                }
                t
            }
        };
        if !told && t.received >= ending.target.get() {
            told = true;
            drop(t);
            let _ = ending.done.send(index);
        }
    }
}

/// A short name for the kind of an error, for the report.
fn error_kind(e: &RedisError) -> String {
    if e.is_timeout() {
        return "timeout".into();
    }
    match e.code() {
        Some(code) => format!("server {code}"),
        None => format!("{:?}", e.kind()),
    }
}
