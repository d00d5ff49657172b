//! `redcore::ClusterExecutor`, the per-core runtime, against real clusters
//! of 3 masters and 3 replicas: one pinned glommio executor per core, each
//! node owned by one core, calls for nodes another core owns carried to it
//! over the channel mesh.
//!
//! - routing: commands, the split helpers and pipelines from every core
//!   reach keys of every owner core (checked on the nodes themselves with
//!   the harness's blocking client), on 2 cores and on 3 (two of them
//!   sharing a CPU: a 3-peer mesh);
//! - transactions and watch transactions run on the core that owns the
//!   slot's master, and watch transactions from both cores at once lose no
//!   update;
//! - a `MOVED` met on one core corrects the slot map of the other cores;
//! - a manual failover while every core sends load recovers without
//!   `refresh()`;
//! - graceful shutdown with calls in flight, a panicking core,
//!   [`Ownership::EveryCore`], the [`RemoteClient`](redcore::RemoteClient)
//!   from plain threads, and bad input.
//!
//! Each core's function runs on its own executor while the test thread
//! drives the harness (moving a slot, failing over, shutting down). The two
//! sides meet through atomics, each polling with a deadline (a core with a
//! short glommio timer, never blocking its executor). A failed assertion in
//! a core's function panics it; `join` reports that as
//! [`CoreError::Panicked`] and the test fails with its message.
//!
//! A cluster takes seconds to start, so each `#[test]` starts one and runs a
//! group of checks, each in a function named after the behaviour it
//! asserts. The bad-input test counts the runtime threads of its process,
//! so it runs in a process of its own (`in_own_process`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use futures_lite::future::block_on;
use glommio::spawn_local;
use redcore::Commands;
use redcore::cluster::NodeAddr;
use redcore::runtime::{CoreError, HopStats, Ownership};
use redcore::{
    ClusterConfig, ClusterExecutor, Cmd, Connection, CoreClient, Error, ExecutorHandle,
    RemoteClient, Value, Watch, cmd,
};
use redcore_test_support::client::{
    assert_closed_for, assert_cross_slot, bulk, error_kind, free_port, wait_until,
};
use redcore_test_support::{
    RedisCluster, Reply, in_own_process, key_in_slot, key_slot, keys_in_slot,
};

const SECOND: Duration = Duration::from_secs(1);
const SLOTS: usize = 16384;
/// How long a core waits for the other cores or for the test thread, and
/// the test thread for the cores.
const WAIT: Duration = Duration::from_secs(30);

fn ok() -> Value {
    Value::SimpleString("OK".into())
}

fn pong() -> Value {
    Value::SimpleString("PONG".into())
}

/// A configuration for `cluster`, every node a seed.
fn config(cluster: &RedisCluster) -> ClusterConfig {
    ClusterConfig::builder()
        .seeds(cluster.seed_addrs())
        .build()
        .expect("a valid config")
}

/// A runtime on the first `cores` online CPUs (wrapping round).
fn on_cores(config: ClusterConfig, cores: usize) -> ClusterExecutor {
    ClusterExecutor::new(config)
        .expect("a runtime")
        .cores(cores)
        .expect("a core count")
}

/// `handle.join()` on a thread of its own: a runtime that does not end
/// fails the test instead of hanging it.
fn join_within<T: Send + 'static>(
    handle: ExecutorHandle<T>,
    limit: Duration,
) -> Vec<Result<T, CoreError>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(handle.join());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("join() did not return within {limit:?}"))
}

/// Every core's result, or a panic naming the first core without one.
#[track_caller]
fn all_ok<T>(results: Vec<Result<T, CoreError>>) -> Vec<T> {
    results
        .into_iter()
        .enumerate()
        .map(|(core, r)| r.unwrap_or_else(|e| panic!("core {core} has no result: {e}")))
        .collect()
}

/// Polls `cond` from the test thread until it holds or `timeout` passes.
fn settles(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// The CPU the calling thread runs on now.
fn current_cpu() -> usize {
    // SAFETY: sched_getcpu(3) takes nothing and only reads.
    let cpu = unsafe { libc::sched_getcpu() };
    usize::try_from(cpu).expect("sched_getcpu")
}

/// A meeting point of the cores: each arrives, then waits for all.
#[derive(Default)]
struct Meet(AtomicUsize);

impl Meet {
    async fn all(&self, cores: usize, what: &str) {
        self.0.fetch_add(1, Ordering::AcqRel);
        wait_until(what, WAIT, || self.0.load(Ordering::Acquire) >= cores).await;
    }
}

/// The harness's view of the cluster: the node serving each slot, and the
/// masters in address order, the order in which the cores take them.
struct Layout {
    slot_node: Vec<usize>,
    masters: Vec<usize>,
    addrs: Vec<NodeAddr>,
}

impl Layout {
    fn of(cluster: &RedisCluster) -> Layout {
        let addrs: Vec<NodeAddr> = cluster.nodes().into_iter().map(NodeAddr::from).collect();
        let mut slot_node = vec![usize::MAX; SLOTS];
        let mut masters = Vec::new();
        for n in cluster.cluster_nodes(0) {
            if !n.is_master() || n.slots.is_empty() {
                continue;
            }
            let i = cluster
                .node_index(n.addr.expect("a master with an address"))
                .expect("a node of ours");
            masters.push(i);
            for &(a, b) in &n.slots {
                for s in a..=b {
                    slot_node[usize::from(s)] = i;
                }
            }
        }
        assert!(
            slot_node.iter().all(|&n| n != usize::MAX),
            "a slot unserved"
        );
        masters.sort_by(|&a, &b| addrs[a].cmp(&addrs[b]));
        Layout {
            slot_node,
            masters,
            addrs,
        }
    }

    fn node_of_key(&self, key: &str) -> usize {
        self.slot_node[usize::from(key_slot(key.as_bytes()))]
    }

    /// The core owning master `node` on a sharded runtime of `cores`
    /// cores: the masters, in address order, go round the cores.
    fn owner_core(&self, node: usize, cores: usize) -> usize {
        let i = self.masters.iter().position(|&m| m == node);
        i.unwrap_or_else(|| panic!("node {node} is not a master")) % cores
    }

    /// The first slot master `node` serves.
    fn slot_of(&self, node: usize) -> u16 {
        let slot = self.slot_node.iter().position(|&n| n == node);
        slot.unwrap_or_else(|| panic!("node {node} serves no slot")) as u16
    }

    fn node_of_addr(&self, addr: &NodeAddr) -> usize {
        let i = self.addrs.iter().position(|a| a == addr);
        i.unwrap_or_else(|| panic!("{addr} is not a node of ours"))
    }
}

/// `GET key` on node `node` itself, with the harness's blocking client.
fn get_on(cluster: &RedisCluster, node: usize, key: &str) -> Reply {
    cluster.node(node).call(&["GET", key])
}

/// A hash tag `{prefix:core:i}` whose slot another core owns, and that
/// core.
fn tag_owned_elsewhere(client: &CoreClient, prefix: &str) -> (String, usize) {
    let core = client.core();
    (0..)
        .find_map(|i| {
            let tag = format!("{{{prefix}:{core}:{i}}}");
            match client.owner_of_key(tag.as_str()) {
                Some(owner) if owner != core => Some((tag, owner)),
                _ => None,
            }
        })
        .expect("a tag another core owns")
}

/// The name of the thread a watch function ran on names the core of that
/// executor: `redcore-<core>-<n>`.
fn ran_on_core(thread_name: &str, core: usize) -> bool {
    thread_name.starts_with(&format!("redcore-{core}-"))
}

// ---------------------------------------------------------------------
// Routing: commands, split helpers and pipelines from every core.
// ---------------------------------------------------------------------

/// Keys each core writes per master in the routing checks.
const KEYS_PER_MASTER: usize = 4;
/// Tasks per core sending pipelines at once, and pipelines per task.
const PIPE_TASKS: usize = 4;
const PIPE_ROUNDS: i64 = 5;

/// What the routing checks share: the keys of every core (each with its
/// master's node index) and a slot of each master for the pipelines.
struct Routing {
    layout: Layout,
    tag: String,
    keys: Vec<Vec<(String, usize)>>,
    pipe_slots: Vec<u16>,
    written: Meet,
}

impl Routing {
    fn new(cluster: &RedisCluster, tag: &str, cores: usize) -> Routing {
        let layout = Layout::of(cluster);
        let mut keys = Vec::new();
        for writer in 0..cores {
            let mut mine = Vec::new();
            for &m in &layout.masters {
                let mut found = 0;
                for i in 0.. {
                    if found == KEYS_PER_MASTER {
                        break;
                    }
                    let key = format!("route:{tag}:{writer}:{m}:{i}");
                    if layout.node_of_key(&key) == m {
                        mine.push((key, m));
                        found += 1;
                    }
                }
            }
            keys.push(mine);
        }
        let pipe_slots = layout.masters.iter().map(|&m| layout.slot_of(m)).collect();
        Routing {
            layout,
            tag: tag.to_owned(),
            keys,
            pipe_slots,
            written: Meet::default(),
        }
    }
}

fn value_of(key: &str) -> String {
    format!("value of {key}")
}

/// What one core of the routing checks saw.
struct RoutingReport {
    core: usize,
    cores: usize,
    cpu: usize,
    ran_on_cpu: usize,
    /// Each key it wrote, with the core `owner_of_key` named.
    owners: Vec<(String, usize)>,
    /// Calls it made for keys `owner_of_key` said another core owns.
    remote_calls: u64,
    /// `owner_core` of each master in its `info()`.
    info_owners: Vec<(NodeAddr, Option<usize>)>,
    /// `owner_of_key` of a key of each master, in `layout.masters` order.
    master_owners: Vec<usize>,
    hops: HopStats,
}

async fn routing_checks(client: CoreClient, ctx: Arc<Routing>) -> RoutingReport {
    let mut report = RoutingReport {
        core: client.core(),
        cores: client.cores(),
        cpu: client.cpu(),
        ran_on_cpu: current_cpu(),
        owners: Vec::new(),
        remote_calls: 0,
        info_owners: Vec::new(),
        master_owners: Vec::new(),
        hops: HopStats::default(),
    };
    commands_from_every_core_reach_keys_of_every_owner(&client, &ctx, &mut report).await;
    split_helpers_from_every_core_span_every_owner(&client, &ctx).await;
    pipelines_touching_every_master_answer_in_order(&client, &ctx).await;
    report.info_owners = client
        .info()
        .nodes
        .iter()
        .filter(|n| !n.slots.is_empty())
        .map(|n| (n.addr.clone(), n.owner_core))
        .collect();
    report.master_owners = ctx
        .pipe_slots
        .iter()
        .map(|&slot| {
            let key = key_in_slot(slot, "owner:");
            client.owner_of_key(key.as_str()).expect("an owner")
        })
        .collect();
    report.hops = client.hop_stats();
    report
}

async fn commands_from_every_core_reach_keys_of_every_owner(
    client: &CoreClient,
    ctx: &Routing,
    report: &mut RoutingReport,
) {
    let core = client.core();
    let owner_of = |key: &str| {
        client
            .owner_of_key(key)
            .unwrap_or_else(|| panic!("core {core}: no owner for {key}"))
    };
    for (key, _) in &ctx.keys[core] {
        let owner = owner_of(key);
        report.owners.push((key.clone(), owner));
        let value = value_of(key);
        let what = format!("core {core}, key {key} of core {owner}");
        client
            .command::<()>(["SET", key.as_str(), value.as_str()])
            .await
            .unwrap_or_else(|e| panic!("{what}: SET: {e}"));
        let got: Option<String> = client
            .command(["GET", key.as_str()])
            .await
            .unwrap_or_else(|e| panic!("{what}: GET: {e}"));
        assert_eq!(got.as_deref(), Some(value.as_str()), "{what}: GET");
        let len: usize = client
            .command(["STRLEN", key.as_str()])
            .await
            .unwrap_or_else(|e| panic!("{what}: STRLEN: {e}"));
        assert_eq!(len, value.len(), "{what}: STRLEN");
        if owner != core {
            report.remote_calls += 3;
        }
    }
    ctx.written
        .all(client.cores(), "every core to write its keys")
        .await;
    // Every core's keys, written by their own cores, read from this one.
    for (writer, keys) in ctx.keys.iter().enumerate() {
        for (key, _) in keys {
            let owner = owner_of(key);
            let got: Option<String> = client.command(["GET", key.as_str()]).await.unwrap_or_else(
                |e| {
                    panic!(
                        "core {core}: GET {key} (written by core {writer}, owner core {owner}): {e}"
                    )
                },
            );
            assert_eq!(
                got,
                Some(value_of(key)),
                "core {core}: GET {key} written by core {writer} (owner core {owner})"
            );
            if owner != core {
                report.remote_calls += 1;
            }
        }
    }
}

async fn split_helpers_from_every_core_span_every_owner(client: &CoreClient, ctx: &Routing) {
    let core = client.core();
    let all: Vec<&str> = ctx.keys.iter().flatten().map(|(k, _)| k.as_str()).collect();
    let values: Vec<Option<String>> = client
        .mget(&all)
        .await
        .unwrap_or_else(|e| panic!("core {core}: MGET: {e}"));
    let want: Vec<Option<String>> = all.iter().map(|k| Some(value_of(k))).collect();
    assert_eq!(values, want, "core {core}: MGET of every core's keys");
    assert_eq!(client.exists(&all).await.unwrap(), all.len() as u64);
    assert_eq!(client.touch(&all).await.unwrap(), all.len() as u64);
    // Scratch keys in the slots of this core's keys: one per key.
    let pairs: Vec<(String, String)> = ctx.keys[core]
        .iter()
        .map(|(k, _)| (format!("{{{k}}}.scratch"), format!("scratch of {k}")))
        .collect();
    client
        .mset(&pairs)
        .await
        .unwrap_or_else(|e| panic!("core {core}: MSET: {e}"));
    let names: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
    let got: Vec<Option<String>> = client.mget(&names).await.unwrap();
    let want: Vec<Option<String>> = pairs.iter().map(|(_, v)| Some(v.clone())).collect();
    assert_eq!(got, want, "core {core}: MGET after MSET");
    let half = names.len() / 2;
    assert_eq!(client.del(&names[..half]).await.unwrap(), half as u64);
    assert_eq!(
        client.unlink(&names).await.unwrap(),
        (names.len() - half) as u64
    );
    assert_eq!(client.exists(&names).await.unwrap(), 0);
}

async fn pipelines_touching_every_master_answer_in_order(client: &CoreClient, ctx: &Arc<Routing>) {
    let core = client.core();
    // A panic in a spawned task would take the executor down with it: the
    // tasks return their problem and the function asserts.
    let tasks: Vec<_> = (0..PIPE_TASKS)
        .map(|t| {
            let (client, ctx) = (client.clone(), ctx.clone());
            spawn_local(async move { pipelines_of_one_task(&client, &ctx, t).await })
        })
        .collect();
    for (t, task) in tasks.into_iter().enumerate() {
        if let Err(problem) = task.await {
            panic!("core {core} task {t}: {problem}");
        }
    }
}

async fn pipelines_of_one_task(client: &CoreClient, ctx: &Routing, t: usize) -> Result<(), String> {
    let core = client.core();
    // Per master: a string, a counter and a key never written.
    let keys: Vec<Vec<String>> = ctx
        .pipe_slots
        .iter()
        .map(|&slot| keys_in_slot(slot, 3, &format!("pipe:{}:{core}:{t}:", ctx.tag)))
        .collect();
    for round in 1..=PIPE_ROUNDS {
        let text = format!("round {round}");
        let mut cmds: Vec<Cmd> = Vec::new();
        let mut want = Vec::new();
        for k in &keys {
            cmds.push(cmd("SET").arg(&k[0]).arg(&text));
            want.push(ok());
        }
        cmds.push(cmd("PING"));
        want.push(pong());
        for k in &keys {
            cmds.push(cmd("INCR").arg(&k[1]));
            want.push(Value::Integer(round));
        }
        for k in keys.iter().rev() {
            cmds.push(cmd("GET").arg(&k[0]));
            want.push(bulk(&text));
        }
        for k in &keys {
            cmds.push(cmd("GET").arg(&k[2]));
            want.push(Value::Nil);
        }
        let got = client
            .pipeline(&cmds)
            .await
            .map_err(|e| format!("round {round}: {e}"))?;
        if got != want {
            return Err(format!(
                "round {round}: replies {got:?}, want {want:?} in this order"
            ));
        }
    }
    Ok(())
}

/// Runs the routing checks on `executor` and checks on the nodes where the
/// keys went; the reports and the CPUs of the cores.
fn run_routing(
    cluster: &RedisCluster,
    executor: ClusterExecutor,
    tag: &str,
    sharded: bool,
) -> (Vec<RoutingReport>, Vec<usize>) {
    let cores = executor.cpus_in_use().len();
    let ctx = Arc::new(Routing::new(cluster, tag, cores));
    let shared = ctx.clone();
    let handle = executor
        .spawn(move |client| routing_checks(client, shared.clone()))
        .expect("the runtime starts");
    let cpus = handle.cpus().to_vec();
    let reports = all_ok(join_within(handle, WAIT));
    keys_land_on_the_masters_of_their_slots(cluster, &ctx, &reports, sharded);
    (reports, cpus)
}

fn keys_land_on_the_masters_of_their_slots(
    cluster: &RedisCluster,
    ctx: &Routing,
    reports: &[RoutingReport],
    sharded: bool,
) {
    let cores = reports.len();
    for r in reports {
        assert_eq!(r.cores, cores, "cores() on core {}", r.core);
        let want_owner = |node: usize| {
            if sharded {
                ctx.layout.owner_core(node, cores)
            } else {
                r.core
            }
        };
        for (key, seen) in &r.owners {
            let node = ctx.layout.node_of_key(key);
            assert_eq!(
                *seen,
                want_owner(node),
                "core {}: owner_of_key({key}), a key of node {node}",
                r.core
            );
            assert_eq!(
                get_on(cluster, node, key),
                Reply::Bulk(value_of(key).into_bytes()),
                "node {node}, the master of {key}, holds what core {} wrote",
                r.core
            );
        }
        let owners: BTreeSet<usize> = r.owners.iter().map(|&(_, o)| o).collect();
        let want: BTreeSet<usize> = if sharded {
            (0..cores).collect()
        } else {
            [r.core].into()
        };
        assert_eq!(owners, want, "core {}: the owners of its keys", r.core);
        for (i, &m) in ctx.layout.masters.iter().enumerate() {
            assert_eq!(
                r.master_owners[i],
                want_owner(m),
                "core {}: node {m}",
                r.core
            );
        }
        assert_eq!(
            r.info_owners.len(),
            ctx.layout.masters.len(),
            "core {}",
            r.core
        );
        for (addr, owner) in &r.info_owners {
            let node = ctx.layout.node_of_addr(addr);
            let want = Some(want_owner(node)).filter(|&o| o != r.core);
            assert_eq!(
                *owner, want,
                "core {}: info() owner_core of node {node} ({addr})",
                r.core
            );
        }
    }
}

#[test]
fn cluster_executor_routes_calls_of_every_core_to_every_owner() {
    let cluster = RedisCluster::start();
    for cores in [2, 3] {
        let executor = on_cores(config(&cluster), cores);
        let (reports, cpus) = run_routing(&cluster, executor, &format!("{cores}c"), true);
        every_core_runs_pinned_to_its_cpu(&reports, &cpus);
        calls_for_other_cores_hop_to_their_owner(&reports);
    }
}

fn every_core_runs_pinned_to_its_cpu(reports: &[RoutingReport], cpus: &[usize]) {
    assert_eq!(cpus.len(), reports.len(), "one CPU per core: {cpus:?}");
    for r in reports {
        assert_eq!(r.cpu, cpus[r.core], "cpu() of core {}", r.core);
        assert_eq!(r.ran_on_cpu, r.cpu, "core {} ran on another CPU", r.core);
    }
    let online = thread::available_parallelism().map_or(0, |n| n.get());
    if online == 2 && cpus.len() == 3 {
        assert_eq!(cpus[2], cpus[0], "a third core wraps round: {cpus:?}");
    }
}

fn calls_for_other_cores_hop_to_their_owner(reports: &[RoutingReport]) {
    for r in reports {
        println!(
            "{} cores, core {} on CPU {}: {} calls for other cores' keys, {:?}",
            r.cores, r.core, r.cpu, r.remote_calls, r.hops
        );
        assert!(
            r.remote_calls > 0,
            "core {}: no key of another core",
            r.core
        );
        assert!(
            r.hops.requests_sent >= r.remote_calls,
            "core {}: {} calls for other cores' keys, {:?}",
            r.core,
            r.remote_calls,
            r.hops
        );
        assert!(r.hops.requests_served > 0, "core {}: {:?}", r.core, r.hops);
        // A message carries at least one request, reply or piece of
        // topology news (a few of those at most here): never an empty one.
        assert!(
            r.hops.messages_sent > 0
                && r.hops.messages_sent <= r.hops.requests_sent + r.hops.requests_served + 16,
            "core {}: {:?}",
            r.core,
            r.hops
        );
    }
}

// ---------------------------------------------------------------------
// Transactions and watch transactions.
// ---------------------------------------------------------------------

/// Watch transactions each core runs at once on one counter.
const WATCH_TASKS: usize = 25;

struct Txn {
    counter: String,
    started: Meet,
    finished: Meet,
}

/// A command to run on the node serving its key (`args[1]`), and its
/// reply there.
type NodeCheck = (Vec<String>, Reply);

#[test]
fn cluster_executor_runs_transactions_on_the_owner_core() {
    let cluster = RedisCluster::start();
    let ctx = Arc::new(Txn {
        counter: "{watch-counter}.n".into(),
        started: Meet::default(),
        finished: Meet::default(),
    });
    let shared = ctx.clone();
    let handle = on_cores(config(&cluster), 2)
        .spawn(move |client| {
            let ctx = shared.clone();
            async move {
                let mut checks: Vec<NodeCheck> = Vec::new();
                transaction_on_another_cores_key_runs_there(&client, &mut checks).await;
                watch_transaction_on_another_cores_key_runs_there(&client, &mut checks).await;
                watch_transactions_from_every_core_lose_no_update(&client, &ctx).await;
                cross_slot_watch_transactions_are_refused(&client).await;
                checks
            }
        })
        .expect("the runtime starts");
    let checks = all_ok(join_within(handle, WAIT));
    for (core, checks) in checks.iter().enumerate() {
        for (args, want) in checks {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let got = cluster.node_for_key(args[1]).call(&args);
            assert_eq!(&got, want, "{args:?} on the master, after core {core}");
        }
    }
    let total = (2 * WATCH_TASKS).to_string();
    assert_eq!(
        cluster
            .node_for_key(&ctx.counter)
            .call(&["GET", &ctx.counter]),
        Reply::Bulk(total.into_bytes()),
        "the counter on its master"
    );
}

async fn transaction_on_another_cores_key_runs_there(
    client: &CoreClient,
    checks: &mut Vec<NodeCheck>,
) {
    let core = client.core();
    let (tag, owner) = tag_owned_elsewhere(client, "txn");
    let (a, log) = (format!("{tag}.a"), format!("{tag}.log"));
    let before = client.hop_stats();
    let got = client
        .transaction([
            cmd("SET").arg(&a).arg(10),
            cmd("INCRBY").arg(&a).arg(5),
            cmd("GET").arg(&a),
            cmd("RPUSH").arg(&log).arg("x"),
        ])
        .await
        .unwrap_or_else(|e| panic!("core {core}: a transaction on core {owner}'s {a}: {e}"));
    assert_eq!(
        got,
        [ok(), Value::Integer(15), bulk("15"), Value::Integer(1)],
        "core {core}: a transaction on core {owner}'s {a}"
    );
    let after = client.hop_stats();
    assert!(
        after.requests_sent > before.requests_sent,
        "core {core}: the transaction on core {owner}'s key did not travel there: {before:?} then {after:?}"
    );
    checks.push((vec!["GET".into(), a], Reply::Bulk(b"15".to_vec())));
    checks.push((vec!["LLEN".into(), log], Reply::Integer(1)));
}

/// Replaces the integer at `key` with `f` of it in a watch transaction;
/// its result, and the names of the threads the watch function ran on.
async fn watched_update(
    client: &CoreClient,
    key: &str,
    f: fn(i64) -> i64,
) -> (Result<Vec<Value>, Error>, Vec<String>) {
    let threads = Arc::new(Mutex::new(Vec::<String>::new()));
    let (k, seen) = (key.to_owned(), threads.clone());
    let got = client
        .watch_transaction(&[key], async move |c: &Connection| {
            let name = thread::current().name().unwrap_or_default().to_owned();
            seen.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(name);
            let n: i64 = c.command(["GET", k.as_str()]).await?;
            Ok(Watch::Exec(vec![cmd("SET").arg(&k).arg(f(n))]))
        })
        .await;
    let ran = threads
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    (got, ran)
}

async fn watch_transaction_on_another_cores_key_runs_there(
    client: &CoreClient,
    checks: &mut Vec<NodeCheck>,
) {
    let core = client.core();
    let (tag, owner) = tag_owned_elsewhere(client, "watch");
    let key = format!("{tag}.n");
    client
        .command::<()>(["SET", key.as_str(), "100"])
        .await
        .unwrap();
    let before = client.hop_stats();
    let (got, ran) = watched_update(client, &key, |n| n + 1).await;
    let got = got.unwrap_or_else(|e| {
        panic!("core {core}: a watch transaction on core {owner}'s {key}: {e}")
    });
    assert_eq!(got, [ok()], "core {core}: watch transaction on {key}");
    let after = client.hop_stats();
    assert!(
        after.requests_sent > before.requests_sent,
        "core {core}: the watch transaction on core {owner}'s key did not travel there: {before:?} then {after:?}"
    );
    assert_eq!(
        ran.len(),
        1,
        "core {core}: the function ran {} times",
        ran.len()
    );
    assert!(
        ran_on_core(&ran[0], owner),
        "core {core}: the watch function for core {owner}'s key ran on thread {:?}",
        ran[0]
    );
    let n: i64 = client.command(["GET", key.as_str()]).await.unwrap();
    assert_eq!(n, 101, "core {core}: {key} after the watch transaction");
    checks.push((vec!["GET".into(), key], Reply::Bulk(b"101".to_vec())));
}

async fn watch_transactions_from_every_core_lose_no_update(client: &CoreClient, ctx: &Arc<Txn>) {
    let (core, cores) = (client.core(), client.cores());
    let owner = client.owner_of_key(ctx.counter.as_str()).expect("an owner");
    println!(
        "core {core}: watch transactions on {} ({})",
        ctx.counter,
        if owner == core {
            "this core's connection".to_owned()
        } else {
            format!("through core {owner}")
        }
    );
    ctx.started
        .all(cores, "every core to start its watch transactions")
        .await;
    let tasks: Vec<_> = (0..WATCH_TASKS)
        .map(|_| {
            let (client, key) = (client.clone(), ctx.counter.clone());
            spawn_local(async move {
                let k = key.clone();
                client
                    .watch_transaction(&[key.as_str()], async move |c: &Connection| {
                        let n: Option<i64> = c.command(["GET", k.as_str()]).await?;
                        Ok(Watch::Exec(vec![
                            cmd("SET").arg(&k).arg(n.unwrap_or(0) + 1),
                        ]))
                    })
                    .await
            })
        })
        .collect();
    for (t, task) in tasks.into_iter().enumerate() {
        let got = task
            .await
            .unwrap_or_else(|e| panic!("core {core}: watch transaction {t}: {e}"));
        assert_eq!(got, [ok()], "core {core}: watch transaction {t}");
    }
    ctx.finished
        .all(cores, "every core to finish its watch transactions")
        .await;
    let n: i64 = client.command(["GET", ctx.counter.as_str()]).await.unwrap();
    assert_eq!(
        n,
        (WATCH_TASKS * cores) as i64,
        "core {core}: an update of {} was lost",
        ctx.counter
    );
}

async fn cross_slot_watch_transactions_are_refused(client: &CoreClient) {
    let core = client.core();
    let calls = Arc::new(AtomicUsize::new(0));
    // Watched keys in two slots: refused before anything runs.
    let (a, b) = (format!("{{wa:{core}}}.k"), format!("{{wb:{core}}}.k"));
    let counted = calls.clone();
    let r = client
        .watch_transaction(&[a.as_str(), b.as_str()], async move |_c: &Connection| {
            counted.fetch_add(1, Ordering::Relaxed);
            Ok(Watch::Abort("must not run".into()))
        })
        .await;
    assert_cross_slot(r, &a, &b);
    assert_eq!(
        calls.load(Ordering::Relaxed),
        0,
        "core {core}: the function ran"
    );
    // A key another core owns, and a command for another slot: refused
    // there, with nothing run.
    let (tag, owner) = tag_owned_elsewhere(client, "xslot");
    let watched = format!("{tag}.w");
    let other = format!("{{xother:{core}}}.k");
    let (counted, o) = (calls.clone(), other.clone());
    let r = client
        .watch_transaction(&[watched.as_str()], async move |_c: &Connection| {
            counted.fetch_add(1, Ordering::Relaxed);
            Ok(Watch::Exec(vec![cmd("SET").arg(&o).arg("1")]))
        })
        .await;
    assert_cross_slot(r, &watched, &other);
    assert_eq!(
        calls.load(Ordering::Relaxed),
        1,
        "core {core}: the function for core {owner}'s key ran once"
    );
    assert_eq!(
        client.exists(&[other.as_str()]).await.unwrap(),
        0,
        "core {core}: a command of a refused transaction ran"
    );
}

// ---------------------------------------------------------------------
// A MOVED seen on one core.
// ---------------------------------------------------------------------

struct Moved {
    slot: u16,
    key: String,
    old: NodeAddr,
    new: NodeAddr,
    /// Cores that checked their map before the move.
    ready: AtomicUsize,
    /// The test moved the slot.
    moved: AtomicBool,
    /// Core 1 checked that it still routes the slot to the old master.
    stale_checked: AtomicBool,
}

/// The MOVED replies a core's `info()` counts from `addr`.
fn redirects_from(client: &CoreClient, addr: &NodeAddr) -> u64 {
    client
        .info()
        .nodes
        .iter()
        .find(|n| n.addr == *addr)
        .map_or(0, |n| n.redirects)
}

#[test]
fn cluster_executor_moved_on_one_core_corrects_every_core() {
    let cluster = RedisCluster::start();
    let layout = Layout::of(&cluster);
    // A slot of a master core 0 owns, moving to another master.
    let from = *layout
        .masters
        .iter()
        .find(|&&m| layout.owner_core(m, 2) == 0)
        .expect("a master of core 0");
    let to = *layout
        .masters
        .iter()
        .find(|&&m| m != from)
        .expect("another master");
    let slot = layout.slot_of(from);
    let ctx = Arc::new(Moved {
        slot,
        key: key_in_slot(slot, "moved:"),
        old: layout.addrs[from].clone(),
        new: layout.addrs[to].clone(),
        ready: AtomicUsize::new(0),
        moved: AtomicBool::new(false),
        stale_checked: AtomicBool::new(false),
    });
    let config = ClusterConfig::builder()
        .seeds(cluster.seed_addrs())
        .refresh_interval(None)
        .build()
        .expect("a valid config");
    let shared = ctx.clone();
    let handle = on_cores(config, 2)
        .spawn(move |client| {
            let ctx = shared.clone();
            async move {
                let core = client.core();
                assert_eq!(
                    client.master_of_slot(ctx.slot).as_ref(),
                    Some(&ctx.old),
                    "core {core} before the move"
                );
                if core == 0 {
                    client
                        .command::<()>(["SET", ctx.key.as_str(), "moves along"])
                        .await
                        .unwrap();
                }
                ctx.ready.fetch_add(1, Ordering::AcqRel);
                wait_until("the test to move the slot", WAIT, || {
                    ctx.moved.load(Ordering::Acquire)
                })
                .await;
                if core == 0 {
                    a_moved_on_core_0_is_followed_there(&client, &ctx).await;
                    None
                } else {
                    Some(core_1_learns_the_move_without_sending_anything(&client, &ctx).await)
                }
            }
        })
        .expect("the runtime starts");
    assert!(
        settles(WAIT, || ctx.ready.load(Ordering::Acquire) == 2),
        "both cores to check their map"
    );
    cluster.move_slot(slot, from, to);
    ctx.moved.store(true, Ordering::Release);
    let results = all_ok(join_within(handle, WAIT));
    let learned = results[1].expect("core 1's time to learn");
    println!(
        "core 1 routed slot {slot} to {} {:.1} ms after core 0 was allowed to meet the MOVED",
        ctx.new,
        learned.as_secs_f64() * 1e3
    );
    assert_eq!(
        get_on(&cluster, to, &ctx.key),
        Reply::Bulk(b"moves along".to_vec()),
        "the key moved with its slot"
    );
}

async fn a_moved_on_core_0_is_followed_there(client: &CoreClient, ctx: &Moved) {
    wait_until("core 1 to look at its map after the move", WAIT, || {
        ctx.stale_checked.load(Ordering::Acquire)
    })
    .await;
    let got: Option<String> = client
        .command(["GET", ctx.key.as_str()])
        .await
        .expect("GET after the move");
    assert_eq!(
        got.as_deref(),
        Some("moves along"),
        "core 0: GET after the move"
    );
    assert_eq!(
        client.master_of_slot(ctx.slot).as_ref(),
        Some(&ctx.new),
        "core 0 routes the slot where the MOVED said"
    );
    assert_eq!(
        redirects_from(client, &ctx.old),
        1,
        "core 0 met one MOVED from the old master"
    );
}

async fn core_1_learns_the_move_without_sending_anything(
    client: &CoreClient,
    ctx: &Moved,
) -> Duration {
    let sent = client.hop_stats().requests_sent;
    // Nothing met the move yet, and nothing refreshes periodically.
    assert_eq!(
        client.master_of_slot(ctx.slot).as_ref(),
        Some(&ctx.old),
        "core 1 knew of the move before any command met it"
    );
    ctx.stale_checked.store(true, Ordering::Release);
    let asked = Instant::now();
    wait_until(
        "core 1 to route the slot to its new master",
        10 * SECOND,
        || client.master_of_slot(ctx.slot).as_ref() == Some(&ctx.new),
    )
    .await;
    let learned = asked.elapsed();
    assert_eq!(
        client.hop_stats().requests_sent,
        sent,
        "core 1 sent a request meanwhile"
    );
    assert_eq!(
        redirects_from(client, &ctx.old),
        0,
        "core 1 met a MOVED itself"
    );
    learned
}

// ---------------------------------------------------------------------
// A manual failover under load.
// ---------------------------------------------------------------------

const LOAD_TASKS: usize = 3;
const KEYS_PER_TASK: usize = 24;
/// Pause of each load task after each SET + GET (load shaping).
const PACE: Duration = Duration::from_millis(1);
/// From the failover call to the first success on the failed-over shard
/// after which none failed, on every core.
const RECOVERY_BOUND: Duration = Duration::from_secs(10);
/// The errors a command may meet while its shard changes master: lost in
/// flight, timed out, or refused as unserved until the new master is
/// known.
const ALLOWED_ERRORS: [&str; 7] = [
    "ConnectionLost",
    "Timeout",
    "Connect",
    "Server(CLUSTERDOWN",
    "Server(READONLY",
    "Server(MASTERDOWN",
    "SlotUnserved",
];

/// The load of every core: its tasks' keys, the failed-over shard's
/// slots, and the rounds over their keys each task finished with no error.
struct Load {
    /// `keys[core][task]`: keys with their slots.
    keys: Vec<Vec<Vec<(String, u16)>>>,
    shard: Vec<bool>,
    stop: AtomicBool,
    /// `clean[core * LOAD_TASKS + task]`: starts of error-free rounds.
    clean: Mutex<Vec<Vec<Instant>>>,
}

impl Load {
    fn clean_rounds_after(&self, after: Option<Instant>, n: usize) -> bool {
        let clean = self.clean.lock().unwrap_or_else(PoisonError::into_inner);
        clean.iter().all(|starts| {
            starts
                .iter()
                .filter(|&&s| after.is_none_or(|a| s > a))
                .count()
                >= n
        })
    }
}

/// One command of the load.
struct LoadOp {
    in_shard: bool,
    start: Instant,
    end: Instant,
    /// The kind of error ([`error_kind`]), if it failed.
    error: Option<String>,
}

#[derive(Default)]
struct LoadReport {
    ops: Vec<LoadOp>,
    /// GETs that did not answer the value their SET had just written.
    stale: Vec<String>,
    /// The master the core routes the shard's first slot to at the end.
    shard_master: Option<NodeAddr>,
    hops: HopStats,
}

async fn load_task(client: CoreClient, ctx: Arc<Load>, task: usize) -> (Vec<LoadOp>, Vec<String>) {
    let core = client.core();
    let keys = &ctx.keys[core][task];
    let (mut ops, mut stale) = (Vec::new(), Vec::new());
    let mut n = 0u64;
    let stopped = || ctx.stop.load(Ordering::Acquire) || client.is_shutting_down();
    while !stopped() {
        let round = Instant::now();
        let mut clean = true;
        for (key, slot) in keys {
            if stopped() {
                return (ops, stale);
            }
            n += 1;
            let value = format!("{core}:{task}:{n}");
            let in_shard = ctx.shard[usize::from(*slot)];
            let start = Instant::now();
            let set = client
                .command::<()>(["SET", key.as_str(), value.as_str()])
                .await;
            let end = Instant::now();
            ops.push(LoadOp {
                in_shard,
                start,
                end,
                error: set.as_ref().err().map(error_kind),
            });
            let get = client
                .command::<Option<String>>(["GET", key.as_str()])
                .await;
            ops.push(LoadOp {
                in_shard,
                start: end,
                end: Instant::now(),
                error: get.as_ref().err().map(error_kind),
            });
            if let (Ok(()), Ok(got)) = (&set, &get) {
                if got.as_deref() != Some(value.as_str()) {
                    stale.push(format!(
                        "core {core}: GET {key} answered {got:?} after SET {value:?}"
                    ));
                }
            }
            clean &= set.is_ok() && get.is_ok();
            glommio::timer::sleep(PACE).await;
        }
        if clean {
            let mut rounds = ctx.clean.lock().unwrap_or_else(PoisonError::into_inner);
            rounds[core * LOAD_TASKS + task].push(round);
        }
    }
    (ops, stale)
}

async fn load_on_core(client: CoreClient, ctx: Arc<Load>) -> LoadReport {
    let tasks: Vec<_> = (0..LOAD_TASKS)
        .map(|t| spawn_local(load_task(client.clone(), ctx.clone(), t)))
        .collect();
    let mut report = LoadReport::default();
    for task in tasks {
        let (ops, stale) = task.await;
        report.ops.extend(ops);
        report.stale.extend(stale);
    }
    let slot = ctx.shard.iter().position(|&s| s).expect("a slot") as u16;
    report.shard_master = client.master_of_slot(slot);
    report.hops = client.hop_stats();
    report
}

/// The master of `replica`, from its own `CLUSTER NODES`.
fn master_of(cluster: &RedisCluster, replica: usize) -> usize {
    let view = cluster.cluster_nodes(replica);
    let me = view.iter().find(|n| n.is_myself()).expect("`myself`");
    let master_id = me.master_id.as_deref().expect("a replica names its master");
    let master = view.iter().find(|n| n.id == master_id).expect("its master");
    cluster
        .node_index(master.addr.expect("an address"))
        .expect("a node of ours")
}

/// Failed commands by kind, each kind with its count.
fn error_counts<'a>(ops: impl Iterator<Item = &'a LoadOp>) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for e in ops.filter_map(|o| o.error.as_ref()) {
        *out.entry(e.clone()).or_insert(0) += 1;
    }
    out
}

/// The end of the first successful shard command after `from` after which
/// no shard command failed.
fn back_after(ops: &[LoadOp], from: Instant) -> Option<Instant> {
    let shard = || ops.iter().filter(|o| o.in_shard && o.start >= from);
    let last_failure = shard().filter(|o| o.error.is_some()).map(|o| o.start).max();
    shard()
        .filter(|o| o.error.is_none() && last_failure.is_none_or(|f| o.start > f))
        .map(|o| o.end)
        .min()
}

#[test]
fn cluster_executor_recovers_from_a_failover_under_load_without_refresh() {
    let cluster = RedisCluster::start();
    cluster.warm_up();
    let layout = Layout::of(&cluster);
    let replica = cluster.replica_indices()[0];
    let master = master_of(&cluster, replica);
    let shard: Vec<bool> = layout.slot_node.iter().map(|&n| n == master).collect();
    let cores = 2;
    // Every task's keys spread over every slot, some in the shard.
    let keys = (0..cores)
        .map(|core| {
            (0..LOAD_TASKS)
                .map(|t| {
                    let keys: Vec<(String, u16)> = (0..KEYS_PER_TASK)
                        .map(|i| {
                            let offset = t * 131 + core * 517 + 7;
                            let slot = ((i * SLOTS / KEYS_PER_TASK + offset) % SLOTS) as u16;
                            (key_in_slot(slot, &format!("load:{core}:{t}:{i}:")), slot)
                        })
                        .collect();
                    assert!(
                        keys.iter().any(|(_, s)| shard[usize::from(*s)]),
                        "core {core} task {t} has a key in the shard"
                    );
                    keys
                })
                .collect()
        })
        .collect();
    let ctx = Arc::new(Load {
        keys,
        shard,
        stop: AtomicBool::new(false),
        clean: Mutex::new(vec![Vec::new(); cores * LOAD_TASKS]),
    });
    // No periodic refresh: what the cores learn, they learn from replies.
    let config = ClusterConfig::builder()
        .seeds(cluster.seed_addrs())
        .refresh_interval(None)
        .build()
        .expect("a valid config");
    let shared = ctx.clone();
    let handle = on_cores(config, cores)
        .spawn(move |client| load_on_core(client, shared.clone()))
        .expect("the runtime starts");
    // On a failed wait, stop the load first: the report says why.
    let stop_and_report = |handle: ExecutorHandle<LoadReport>, what: &str| -> ! {
        ctx.stop.store(true, Ordering::Release);
        let reports = join_within(handle, WAIT);
        let errors: Vec<_> = reports
            .iter()
            .map(|r| r.as_ref().map(|r| error_counts(r.ops.iter())))
            .collect();
        panic!("timed out waiting for {what}; errors per core: {errors:?}")
    };
    if !settles(WAIT, || ctx.clean_rounds_after(None, 1)) {
        stop_and_report(handle, "a clean round of every task before the failover");
    }
    let called = Instant::now();
    let old = cluster.failover(replica);
    let returned = Instant::now();
    assert_eq!(old, master, "node {replica} replicated node {master}");
    if !settles(RECOVERY_BOUND, || ctx.clean_rounds_after(Some(returned), 2)) {
        stop_and_report(handle, "two clean rounds of every task after the failover");
    }
    ctx.stop.store(true, Ordering::Release);
    let reports = all_ok(join_within(handle, WAIT));
    for (core, r) in reports.iter().enumerate() {
        let on = error_counts(r.ops.iter().filter(|o| o.in_shard));
        let off = error_counts(r.ops.iter().filter(|o| !o.in_shard));
        let back = back_after(&r.ops, called);
        println!(
            "RECOVERY executor-failover core {core}: {} s to the first success on the shard after which none failed \
             (the failover call took {:.3} s); {} commands; errors on the shard {on:?}, elsewhere {off:?}; {:?}",
            back.map_or("(never)".to_owned(), |b| format!(
                "{:.3}",
                (b - called).as_secs_f64()
            )),
            (returned - called).as_secs_f64(),
            r.ops.len(),
            r.hops,
        );
        let unexpected: Vec<&String> = on
            .keys()
            .chain(off.keys())
            .filter(|kind| !ALLOWED_ERRORS.iter().any(|ok| kind.starts_with(ok)))
            .collect();
        assert!(
            unexpected.is_empty(),
            "core {core}: errors of kinds a failover does not explain: {unexpected:?}"
        );
        assert!(
            off.is_empty(),
            "core {core}: the other shards saw errors: {off:?}"
        );
        let back = back
            .unwrap_or_else(|| panic!("core {core}: no success on the shard after the failover"));
        assert!(
            back - called < RECOVERY_BOUND,
            "core {core}: the shard recovered {:.3} s after the failover call",
            (back - called).as_secs_f64()
        );
        let failed_later: Vec<&String> = r
            .ops
            .iter()
            .filter(|o| o.start > returned)
            .filter_map(|o| o.error.as_ref())
            .collect();
        assert!(
            failed_later.is_empty(),
            "core {core}: commands started after the failover returned failed: {failed_later:?}"
        );
        assert!(r.stale.is_empty(), "core {core}: {:?}", r.stale);
        assert_eq!(
            r.shard_master.as_ref(),
            Some(&layout.addrs[replica]),
            "core {core} routes the shard to the promoted replica"
        );
    }
}

// ---------------------------------------------------------------------
// Graceful shutdown with calls in flight.
// ---------------------------------------------------------------------

const DRAIN_TASKS: usize = 16;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Calls each core answers before the test shuts the runtime down.
const CALLS_BEFORE_SHUTDOWN: u64 = 300;

struct Drain {
    /// Successful calls per core.
    answered: Vec<AtomicU64>,
}

/// One looping task of the shutdown test.
struct DrainTask {
    core: usize,
    key: String,
    owner: usize,
    calls: u64,
    returned: u64,
    ok: u64,
    /// Calls answered once this core was shutting down.
    ok_while_closing: u64,
    end: Option<Error>,
    /// A reply that made no sense.
    bad: Option<String>,
}

/// `INCR key` as a command, a pipeline or a transaction, by turns: `Ok`
/// when the increment was applied; a reply that makes no sense is the
/// outer error (a panic in a spawned task would take the executor down).
async fn increment(client: &CoreClient, key: &str, turn: u64) -> Result<Result<(), Error>, String> {
    let replies = match turn % 3 {
        0 => return Ok(client.command::<i64>(["INCR", key]).await.map(drop)),
        1 => {
            client
                .pipeline([cmd("INCR").arg(key), cmd("GET").arg(key)])
                .await
        }
        _ => client.transaction([cmd("INCR").arg(key)]).await,
    };
    match replies.as_deref() {
        Err(_) => Ok(replies.map(drop)),
        Ok([Value::Integer(n), v]) if *v == bulk(&n.to_string()) => Ok(Ok(())),
        Ok([Value::Integer(_)]) => Ok(Ok(())),
        Ok(other) => Err(format!("INCR {key} (turn {turn}) answered {other:?}")),
    }
}

async fn increment_until_refused(client: CoreClient, ctx: Arc<Drain>, task: usize) -> DrainTask {
    let core = client.core();
    let owner = task % client.cores();
    let key = (0..)
        .map(|i| format!("drain:{core}:{task}:{i}"))
        .find(|k| client.owner_of_key(k.as_str()) == Some(owner))
        .expect("a key of the owner");
    let mut t = DrainTask {
        core,
        key,
        owner,
        calls: 0,
        returned: 0,
        ok: 0,
        ok_while_closing: 0,
        end: None,
        bad: None,
    };
    loop {
        t.calls += 1;
        let result = increment(&client, &t.key, t.calls).await;
        t.returned += 1;
        match result {
            Ok(Ok(())) => {
                t.ok += 1;
                if client.is_shutting_down() {
                    t.ok_while_closing += 1;
                }
                ctx.answered[core].fetch_add(1, Ordering::Relaxed);
            }
            Ok(Err(e)) => {
                t.end = Some(e);
                return t;
            }
            Err(bad) => {
                t.bad = Some(bad);
                return t;
            }
        }
    }
}

#[test]
fn cluster_executor_shutdown_drains_calls_in_flight() {
    let cluster = RedisCluster::start();
    let cores = 2;
    let ctx = Arc::new(Drain {
        answered: (0..cores).map(|_| AtomicU64::new(0)).collect(),
    });
    let shared = ctx.clone();
    let handle = on_cores(config(&cluster), cores)
        .drain_timeout(DRAIN_TIMEOUT)
        .spawn(move |client| {
            let ctx = shared.clone();
            async move {
                let tasks: Vec<_> = (0..DRAIN_TASKS)
                    .map(|t| spawn_local(increment_until_refused(client.clone(), ctx.clone(), t)))
                    .collect();
                let mut ends = Vec::new();
                for task in tasks {
                    ends.push(task.await);
                }
                ends
            }
        })
        .expect("the runtime starts");
    let remote = handle.remote();
    assert!(
        settles(WAIT, || ctx
            .answered
            .iter()
            .all(|n| n.load(Ordering::Relaxed) >= CALLS_BEFORE_SHUTDOWN)),
        "every core to answer {CALLS_BEFORE_SHUTDOWN} calls: {:?}",
        ctx.answered
    );
    let asked = Instant::now();
    handle.shutdown();
    assert_closed_for(
        "a remote call after shutdown()",
        block_on(remote.command::<String>(["PING"])),
    );
    let results = join_within(handle, DRAIN_TIMEOUT + 10 * SECOND);
    let took = asked.elapsed();
    println!(
        "join() returned {:.3} s after shutdown()",
        took.as_secs_f64()
    );
    assert!(
        took < DRAIN_TIMEOUT,
        "join() took {took:?}, more than the drain timeout"
    );
    let ends = all_ok(results);
    every_call_in_flight_gets_its_reply_then_calls_are_closed(&cluster, &ends);
}

fn every_call_in_flight_gets_its_reply_then_calls_are_closed(
    cluster: &RedisCluster,
    ends: &[Vec<DrainTask>],
) {
    for (core, tasks) in ends.iter().enumerate() {
        assert_eq!(tasks.len(), DRAIN_TASKS, "core {core}: a task was lost");
        let mut while_closing = 0;
        for t in tasks {
            let what = format!("core {} task on {} (owner core {})", t.core, t.key, t.owner);
            assert_eq!(t.calls, t.returned, "{what}: a call never returned");
            assert_eq!(t.bad, None, "{what}");
            match &t.end {
                Some(Error::Closed(_)) => {}
                other => panic!(
                    "{what}: ended with {other:?} after {} calls, not Error::Closed",
                    t.ok
                ),
            }
            // Every increment answered Ok was applied, and no other.
            assert_eq!(
                cluster.node_for_key(&t.key).call(&["GET", &t.key]),
                Reply::Bulk(t.ok.to_string().into_bytes()),
                "{what}: the counter against the calls answered Ok"
            );
            while_closing += t.ok_while_closing;
        }
        let calls: u64 = tasks.iter().map(|t| t.ok).sum();
        println!(
            "core {core}: {calls} calls answered, {while_closing} of them while shutting down"
        );
        assert!(
            while_closing > 0,
            "core {core}: no call in flight at the shutdown got its reply"
        );
    }
}

// ---------------------------------------------------------------------
// A panicking core.
// ---------------------------------------------------------------------

#[test]
fn cluster_executor_reports_a_panic_on_its_core_only() {
    let cluster = RedisCluster::start();
    for panicking in [1, 0] {
        let panicked = Arc::new(AtomicBool::new(false));
        let shared = panicked.clone();
        let handle = on_cores(config(&cluster), 2)
            .spawn(move |client| {
                let panicked = shared.clone();
                async move { the_other_core_works_on(client, panicked, panicking).await }
            })
            .expect("the runtime starts");
        let mut results = join_within(handle, WAIT).into_iter();
        let (first, second) = (
            results.next().expect("core 0"),
            results.next().expect("core 1"),
        );
        let (bad, good) = if panicking == 1 {
            (second, first)
        } else {
            (first, second)
        };
        let calls = good.unwrap_or_else(|e| panic!("the core that did not panic: {e}"));
        assert!(calls > 0);
        match bad {
            Err(CoreError::Panicked { core, message }) => {
                assert_eq!(core, panicking);
                assert!(
                    message.contains("gives up on purpose"),
                    "core {core}'s panic message: {message:?}"
                );
            }
            other => panic!("core {panicking}: expected CoreError::Panicked, got {other:?}"),
        }
    }
    a_panic_in_a_spawned_task_ends_its_core_and_join_still_returns(&cluster);
}

/// A panic in a detached task the function spawned kills that core's
/// thread (glommio does not catch it): join reports that core as failed and
/// the other core's result, instead of waiting for the dead core's shutdown.
fn a_panic_in_a_spawned_task_ends_its_core_and_join_still_returns(cluster: &RedisCluster) {
    let handle = on_cores(config(cluster), 2)
        .spawn(|client| async move {
            if client.core() == 1 {
                // Polled by the executor itself, not inside the function.
                spawn_local(async {
                    glommio::timer::sleep(Duration::from_millis(20)).await;
                    panic!("a detached task gives up on purpose")
                })
                .detach();
                let until = Instant::now() + WAIT;
                while Instant::now() < until {
                    client.command::<()>(["SET", "spawned-panic", "1"]).await?;
                }
            }
            // Core 0 writes a key it owns: a key core 1 owns would wait
            // on the dead core (its call handed over just before the
            // panic) and end in a timeout, when the machine is slow
            // enough for core 1 to die first.
            let own = (0..)
                .map(|i| format!("spawned-panic:{i}"))
                .find(|k| client.owner_of_key(k.as_str()) == Some(client.core()))
                .expect("a key this core owns");
            client.command::<()>(["SET", own.as_str(), "1"]).await
        })
        .expect("the runtime starts");
    let results = join_within(handle, WAIT);
    assert!(matches!(results[0], Ok(Ok(()))), "core 0: {:?}", results[0]);
    assert!(
        matches!(results[1], Err(CoreError::Executor { core: 1, .. })),
        "core 1: {:?}",
        results[1]
    );
}

/// Core `panicking` panics (with a formatted message on core 1, a literal
/// one on core 0); the other then calls keys of the panicked core, which
/// still serves them; its number of calls.
async fn the_other_core_works_on(
    client: CoreClient,
    panicked: Arc<AtomicBool>,
    panicking: usize,
) -> usize {
    let core = client.core();
    let (tag, owner) = tag_owned_elsewhere(&client, "panic");
    let key = format!("{tag}.k");
    client
        .command::<()>(["SET", key.as_str(), "before"])
        .await
        .unwrap();
    if core == panicking {
        panicked.store(true, Ordering::Release);
        if core == 0 {
            panic!("core zero gives up on purpose");
        }
        panic!("core {core} gives up on purpose");
    }
    wait_until("the other core to panic", WAIT, || {
        panicked.load(Ordering::Acquire)
    })
    .await;
    assert_eq!(owner, panicking, "the other core owns {key}");
    const CALLS: usize = 20;
    for i in 0..CALLS {
        let value = format!("after {i}");
        client
            .command::<()>(["SET", key.as_str(), value.as_str()])
            .await
            .unwrap_or_else(|e| {
                panic!("core {core}: SET {key} through core {owner} after its panic: {e}")
            });
        let got: String = client.command(["GET", key.as_str()]).await.unwrap();
        assert_eq!(got, value);
    }
    CALLS
}

// ---------------------------------------------------------------------
// Every core connecting to every node.
// ---------------------------------------------------------------------

#[test]
fn cluster_executor_with_every_core_ownership_never_hops() {
    let cluster = RedisCluster::start();
    let executor = on_cores(config(&cluster), 2).ownership(Ownership::EveryCore);
    let (reports, cpus) = run_routing(&cluster, executor, "every", false);
    every_core_runs_pinned_to_its_cpu(&reports, &cpus);
    // Transactions too run on the calling core's own connections (here on
    // executors that spin before they park: the same behaviour).
    let layout = Arc::new(Layout::of(&cluster));
    let shared = layout.clone();
    let handle = on_cores(config(&cluster), 2)
        .ownership(Ownership::EveryCore)
        .spin_before_park(Duration::from_micros(50))
        .spawn(move |client| {
            let layout = shared.clone();
            async move {
                transactions_run_on_the_calling_core(&client, &layout).await;
                client.hop_stats()
            }
        })
        .expect("the runtime starts");
    let hops = all_ok(join_within(handle, WAIT));
    let routing_hops = reports.iter().map(|r| r.hops);
    for (core, h) in routing_hops.chain(hops).enumerate() {
        println!("every-core ownership, core {}: {h:?}", core % 2);
        assert_eq!(
            (h.requests_sent, h.requests_served),
            (0, 0),
            "core {}: a call hopped to another core: {h:?}",
            core % 2
        );
        // What crosses is core 0's topology news, nothing the other way.
        let quiet = if core % 2 == 0 {
            h.messages_received
        } else {
            h.messages_sent
        };
        assert_eq!(quiet, 0, "core {}: {h:?}", core % 2);
    }
}

async fn transactions_run_on_the_calling_core(client: &CoreClient, layout: &Layout) {
    let core = client.core();
    for &m in &layout.masters {
        let tag = (0..)
            .map(|i| format!("{{every:{core}:{m}:{i}}}"))
            .find(|t| layout.node_of_key(t) == m)
            .expect("a tag of the master");
        assert_eq!(client.owner_of_key(tag.as_str()), Some(core));
        let key = format!("{tag}.n");
        let got = client
            .transaction([cmd("SET").arg(&key).arg(1), cmd("INCR").arg(&key)])
            .await
            .unwrap_or_else(|e| panic!("core {core}: a transaction on node {m}: {e}"));
        assert_eq!(got, [ok(), Value::Integer(2)]);
        let (got, ran) = watched_update(client, &key, |n| n * 10).await;
        let got =
            got.unwrap_or_else(|e| panic!("core {core}: a watch transaction on node {m}: {e}"));
        assert_eq!(got, [ok()]);
        assert!(
            ran.len() == 1 && ran_on_core(&ran[0], core),
            "core {core}: the watch function ran on {ran:?}"
        );
        let n: i64 = client.command(["GET", key.as_str()]).await.unwrap();
        assert_eq!(n, 20, "core {core}: {key}");
    }
}

// ---------------------------------------------------------------------
// The RemoteClient, from plain threads.
// ---------------------------------------------------------------------

const REMOTE_THREADS: usize = 4;
const REMOTE_ROUNDS: usize = 50;

#[test]
fn cluster_executor_remote_client_serves_plain_threads() {
    let cluster = RedisCluster::start();
    let layout = Layout::of(&cluster);
    let handle = on_cores(config(&cluster), 2)
        .spawn(|client: CoreClient| async move {
            // Run until the test shuts the runtime down.
            wait_until("the shutdown", 4 * WAIT, || client.is_shutting_down()).await;
            client.core()
        })
        .expect("the runtime starts");
    let remote = handle.remote();
    let threads = runtime_threads();
    assert!(threads.len() >= 2, "the runtime's threads: {threads:?}");
    remote_calls_from_a_plain_thread_are_answered(&cluster, &layout, &remote);
    remote_calls_from_several_threads_at_once_are_answered(&cluster, &remote);
    handle.shutdown();
    assert_closed_for(
        "a remote command after shutdown()",
        block_on(remote.command::<String>(["PING"])),
    );
    assert_eq!(all_ok(join_within(handle, WAIT)), [0, 1]);
    remote_calls_after_the_end_are_closed(&remote);
    assert!(
        settles(5 * SECOND, || runtime_threads().is_empty()),
        "threads of the runtime live on after join(): {:?}",
        runtime_threads()
    );
    // A runtime whose functions all returned has shut itself down.
    let handle = on_cores(config(&cluster), 2)
        .spawn(|client: CoreClient| async move { client.core() })
        .expect("the runtime starts");
    let remote = handle.remote();
    assert_eq!(all_ok(join_within(handle, WAIT)), [0, 1]);
    remote_calls_after_the_end_are_closed(&remote);
}

/// A core whose thread is held by user code cannot answer the calls that
/// enter it from outside: they still end by their deadline (plus the
/// runtime's 100 ms grace), as `Timeout` that may have been applied (the
/// call was handed to the core), and the core serves calls again once it
/// runs.
#[test]
fn remote_calls_keep_their_deadline_while_their_core_is_blocked() {
    let cluster = RedisCluster::start();
    let release = Arc::new(AtomicBool::new(false));
    let blocked = Arc::new(AtomicBool::new(false));
    let handle = on_cores(config(&cluster), 1)
        .spawn({
            let (release, blocked) = (release.clone(), blocked.clone());
            move |client: CoreClient| {
                let (release, blocked) = (release.clone(), blocked.clone());
                async move {
                    // User code that blocks its core's thread (bounded, so
                    // a failing test still ends).
                    blocked.store(true, Ordering::Release);
                    let until = Instant::now() + WAIT;
                    while !release.load(Ordering::Acquire) && Instant::now() < until {
                        thread::sleep(Duration::from_millis(1));
                    }
                    wait_until("the shutdown", WAIT, || client.is_shutting_down()).await;
                }
            }
        })
        .expect("the runtime starts");
    assert!(
        settles(WAIT, || blocked.load(Ordering::Acquire)),
        "the core never ran its function"
    );
    let remote = handle.remote();
    let timeout = Duration::from_millis(300);
    let start = Instant::now();
    let result = block_on(remote.with_timeout(timeout).command::<String>(["PING"]));
    let took = start.elapsed();
    assert!(
        matches!(
            result,
            Err(Error::Timeout {
                maybe_applied: true
            })
        ),
        "a call into a blocked core: {result:?}"
    );
    assert!(
        took >= timeout && took <= timeout + Duration::from_millis(100 + 200),
        "a call with a 300 ms deadline into a blocked core ended after {took:?}"
    );
    release.store(true, Ordering::Release);
    let pong = block_on(remote.command::<String>(["PING"]));
    assert_eq!(pong.ok().as_deref(), Some("PONG"), "the core serves again");
    handle.shutdown();
    all_ok(join_within(handle, WAIT));
}

fn remote_calls_from_a_plain_thread_are_answered(
    cluster: &RedisCluster,
    layout: &Layout,
    remote: &RemoteClient,
) {
    // A command to every master, checked there.
    for &m in &layout.masters {
        let key = key_in_slot(layout.slot_of(m), &format!("remote:{m}:"));
        block_on(remote.command::<()>(["SET", key.as_str(), "from a thread"]))
            .unwrap_or_else(|e| panic!("SET {key} on node {m}: {e}"));
        let got: Option<String> = block_on(remote.command(["GET", key.as_str()])).unwrap();
        assert_eq!(got.as_deref(), Some("from a thread"), "GET {key}");
        assert_eq!(
            get_on(cluster, m, &key),
            Reply::Bulk(b"from a thread".to_vec()),
            "node {m} holds {key}"
        );
    }
    // A pipeline touching every master, in order.
    let keys: Vec<Vec<String>> = layout
        .masters
        .iter()
        .map(|&m| keys_in_slot(layout.slot_of(m), 2, &format!("remote-pipe:{m}:")))
        .collect();
    let mut cmds = Vec::new();
    let mut want = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        cmds.push(cmd("SET").arg(&k[0]).arg(i));
        want.push(ok());
    }
    for (i, k) in keys.iter().enumerate().rev() {
        cmds.push(cmd("GET").arg(&k[0]));
        want.push(bulk(&i.to_string()));
        cmds.push(cmd("GET").arg(&k[1]));
        want.push(Value::Nil);
    }
    cmds.push(cmd("PING"));
    want.push(pong());
    let got = block_on(remote.pipeline(&cmds)).expect("a remote pipeline");
    assert_eq!(got, want, "a remote pipeline's replies, in order");
    // A transaction, and one across slots.
    let got = block_on(remote.transaction([
        cmd("SET").arg("{remote-tx}.a").arg(1),
        cmd("INCR").arg("{remote-tx}.a"),
        cmd("GET").arg("{remote-tx}.a"),
    ]))
    .expect("a remote transaction");
    assert_eq!(got, [ok(), Value::Integer(2), bulk("2")]);
    let r = block_on(remote.transaction([
        cmd("SET").arg("{remote-a}.k").arg(1),
        cmd("SET").arg("{remote-b}.k").arg(1),
    ]));
    assert_cross_slot(r, "{remote-a}.k", "{remote-b}.k");
    let pong: String = block_on(remote.with_timeout(2 * SECOND).command(["PING"])).unwrap();
    assert_eq!(pong, "PONG");
}

fn remote_calls_from_several_threads_at_once_are_answered(
    cluster: &RedisCluster,
    remote: &RemoteClient,
) {
    let counter = "remote:counter";
    let increments: Vec<Vec<i64>> = thread::scope(|s| {
        let threads: Vec<_> = (0..REMOTE_THREADS)
            .map(|t| {
                let remote = remote.clone();
                s.spawn(move || {
                    let mut seen = Vec::new();
                    for i in 0..REMOTE_ROUNDS {
                        let n: i64 = block_on(remote.command(["INCR", counter]))
                            .unwrap_or_else(|e| panic!("thread {t}: INCR: {e}"));
                        seen.push(n);
                        let key = format!("remote:{t}:{i}");
                        let value = format!("{t}/{i}");
                        let got =
                            block_on(remote.pipeline([
                                cmd("SET").arg(&key).arg(&value),
                                cmd("GET").arg(&key),
                            ]))
                            .unwrap_or_else(|e| panic!("thread {t}: pipeline: {e}"));
                        assert_eq!(got, [ok(), bulk(&value)], "thread {t}: {key}");
                    }
                    seen
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let mut all: Vec<i64> = increments.into_iter().flatten().collect();
    all.sort_unstable();
    let total = (REMOTE_THREADS * REMOTE_ROUNDS) as i64;
    assert_eq!(
        all,
        (1..=total).collect::<Vec<_>>(),
        "each INCR got its own reply"
    );
    assert_eq!(
        cluster.node_for_key(counter).call(&["GET", counter]),
        Reply::Bulk(total.to_string().into_bytes())
    );
    for t in 0..REMOTE_THREADS {
        let key = format!("remote:{t}:{}", REMOTE_ROUNDS - 1);
        assert_eq!(
            cluster.node_for_key(&key).call(&["GET", &key]),
            Reply::Bulk(format!("{t}/{}", REMOTE_ROUNDS - 1).into_bytes())
        );
    }
}

fn remote_calls_after_the_end_are_closed(remote: &RemoteClient) {
    assert_closed_for(
        "a remote command after the end",
        block_on(remote.command::<String>(["PING"])),
    );
    assert_closed_for(
        "a remote pipeline after the end",
        block_on(remote.pipeline([cmd("PING")])),
    );
    let other = remote.clone();
    let r = thread::spawn(move || block_on(other.transaction([cmd("INCR").arg("remote:late")])))
        .join()
        .expect("a thread");
    assert_closed_for("a remote transaction from another thread after the end", r);
}

// ---------------------------------------------------------------------
// Bad input.
// ---------------------------------------------------------------------

/// The threads of this process whose name says they belong to a runtime
/// (the executors, and the blocking threads they start, which inherit
/// their name).
fn runtime_threads() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    dir.filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| name.starts_with("redcore-"))
        .collect()
}

#[track_caller]
fn assert_invalid(result: Result<ClusterExecutor, Error>, option: &str) {
    match result {
        Err(Error::InvalidConfig { option: o, .. }) => assert_eq!(o, option),
        other => panic!("expected InvalidConfig for {option}, got {other:?}"),
    }
}

#[test]
fn executor_refuses_bad_cores_and_unreachable_seeds() {
    if !in_own_process("executor_refuses_bad_cores_and_unreachable_seeds", &[]) {
        return;
    }
    let executor = || ClusterExecutor::new("127.0.0.1:7000").expect("a runtime");
    assert_invalid(executor().cpus(Vec::<usize>::new()), "cpus");
    assert_invalid(executor().cpus([1 << 20]), "cpus");
    assert_invalid(executor().cores(0), "cores");
    assert_eq!(runtime_threads(), Vec::<String>::new(), "threads before");
    // Seeds that refuse connections, and one that accepts and never
    // answers: spawn() gives up within the timeout either way.
    let refusing = [free_port(), free_port()];
    spawn_fails_promptly_with_no_topology(&refusing);
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("a listener");
    let port = silent.local_addr().expect("its address").port();
    spawn_fails_promptly_with_no_topology(&[port]);
}

fn spawn_fails_promptly_with_no_topology(ports: &[u16]) {
    let timeout = SECOND;
    let margin = 3 * SECOND;
    let config = ClusterConfig::builder()
        .seeds(ports.iter().map(|p| format!("127.0.0.1:{p}")))
        .timeout(timeout)
        .build()
        .expect("a valid config");
    let ran = Arc::new(AtomicUsize::new(0));
    let counted = ran.clone();
    let (tx, rx) = mpsc::channel();
    let started = Instant::now();
    thread::spawn(move || {
        let spawned = on_cores(config, 2).spawn(move |client| {
            counted.fetch_add(1, Ordering::Relaxed);
            async move { client.core() }
        });
        let _ = tx.send(spawned.map(ExecutorHandle::shutdown_and_join));
    });
    let spawned = rx
        .recv_timeout(timeout + 10 * margin)
        .expect("spawn() returned");
    let took = started.elapsed();
    match spawned {
        Err(Error::NoTopology { tried }) => {
            for p in ports {
                assert!(tried.contains(&p.to_string()), "seed {p} in {tried:?}");
            }
        }
        other => panic!("seeds {ports:?}: expected NoTopology, got {other:?}"),
    }
    println!(
        "seeds {ports:?}: spawn() failed after {:.3} s",
        took.as_secs_f64()
    );
    assert!(
        took < timeout + margin,
        "seeds {ports:?}: spawn() took {took:?} with a timeout of {timeout:?}"
    );
    assert_eq!(ran.load(Ordering::Relaxed), 0, "the function ran");
    assert!(
        settles(5 * SECOND, || runtime_threads().is_empty()),
        "threads of the failed runtime live on: {:?}",
        runtime_threads()
    );
}
