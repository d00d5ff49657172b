//! `redcore::cluster::Cluster` while a real cluster changes under it:
//!
//! - a slot migrating (`CLUSTER SETSLOT .. IMPORTING/MIGRATING` and
//!   `MIGRATE`): the source answers `ASK` for the keys it no longer has,
//!   and the client follows with `ASKING` without touching its slot map;
//! - the migration finishing (`SETSLOT .. NODE`): the old owner answers
//!   `MOVED`, and one such reply teaches the client the new owner;
//! - pipelines over many slots, the moving one among them, before, while
//!   and right after its keys move;
//! - a manual failover (`CLUSTER FAILOVER`), a killed master and a frozen
//!   one (`SIGSTOP`: its sockets stay open and nothing answers), each
//!   under load, with the recovery time measured and printed as a
//!   `RECOVERY <case>: ..` line (see them with `--no-capture`).
//!
//! The harness's helpers block (sockets, polling with sleeps) while the
//! client needs its executor to make progress, so every harness step runs
//! on glommio's blocking thread ([`Harness::run`], through
//! `spawn_blocking`), never on the executor thread.
//!
//! The clients have no periodic refresh: whatever they learn of a change
//! they learn from the replies and errors their own commands meet. No test
//! calls `refresh()`.
//!
//! A cluster takes seconds to start: one `#[test]` runs the migration and
//! manual failover checks in order on one cluster, the killed and the
//! frozen master each get a fresh one.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::rc::Rc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use glommio::{Task, spawn_local};
use redcore::Commands;
use redcore::cluster::{Cluster, ClusterInfo, NodeAddr};
use redcore::{ClusterConfig, Cmd, Error, Value, cmd};
use redcore_test_support::client::{bulk, error_kind, run, wait_until};
use redcore_test_support::{RedisCluster, Reply, key_in_slot, key_slot, keys_in_slot};

const SECOND: Duration = Duration::from_secs(1);
const SLOTS: usize = 16384;
/// How long a load may take to reach a condition (clean rounds).
const LOAD_WAIT: Duration = Duration::from_secs(30);

fn ok() -> Value {
    Value::SimpleString("OK".into())
}

// ---------------------------------------------------------------------
// The harness, driven from glommio's blocking thread.
// ---------------------------------------------------------------------

/// The cluster, shared with glommio's blocking thread, where every harness
/// step runs; and the address of each node, for reading `info()`.
#[derive(Clone)]
struct Harness {
    cluster: Arc<Mutex<RedisCluster>>,
    addrs: Rc<Vec<NodeAddr>>,
}

impl Harness {
    fn new(cluster: RedisCluster) -> Harness {
        let addrs = cluster.nodes().into_iter().map(NodeAddr::from).collect();
        Harness {
            cluster: Arc::new(Mutex::new(cluster)),
            addrs: Rc::new(addrs),
        }
    }

    /// Runs `f` on the cluster on glommio's blocking thread; the executor
    /// keeps running the client meanwhile. A panic in `f` (a harness
    /// helper that timed out) is raised again here.
    async fn run<R, F>(&self, f: F) -> R
    where
        F: FnOnce(&mut RedisCluster) -> R + Send + 'static,
        R: Send + 'static,
    {
        let cluster = self.cluster.clone();
        // A panic on the blocking thread would leave the executor waiting
        // forever: catch it there and raise it here.
        let outcome = glommio::executor()
            .spawn_blocking(move || {
                catch_unwind(AssertUnwindSafe(move || {
                    let mut cluster = cluster.lock().unwrap_or_else(PoisonError::into_inner);
                    f(&mut cluster)
                }))
            })
            .await;
        outcome.unwrap_or_else(|panic| resume_unwind(panic))
    }

    fn addr(&self, node: usize) -> NodeAddr {
        self.addrs[node].clone()
    }
}

/// The index of the master serving each slot, in the view of the first
/// running master.
fn slot_owners(c: &RedisCluster) -> Vec<usize> {
    let viewer = c.master_indices()[0];
    let mut owners = vec![usize::MAX; SLOTS];
    for n in c.cluster_nodes(viewer).iter().filter(|n| n.is_master()) {
        let Some(i) = n.addr.and_then(|a| c.node_index(a)) else {
            continue;
        };
        for &(a, b) in &n.slots {
            for s in a..=b {
                owners[usize::from(s)] = i;
            }
        }
    }
    assert!(owners.iter().all(|&o| o != usize::MAX), "a slot unserved");
    owners
}

/// The master of `replica`, from its own `CLUSTER NODES`.
fn master_of(c: &RedisCluster, replica: usize) -> usize {
    let view = c.cluster_nodes(replica);
    let me = view
        .iter()
        .find(|n| n.is_myself())
        .expect("`myself` in CLUSTER NODES");
    let master_id = me.master_id.as_deref().expect("a replica names its master");
    let master = view
        .iter()
        .find(|n| n.id == master_id)
        .expect("the master is listed");
    c.node_index(master.addr.expect("an address"))
        .expect("a node of ours")
}

/// `CLUSTER COUNTKEYSINSLOT slot` on `node` itself.
fn keys_on(c: &RedisCluster, node: usize, slot: u16) -> i64 {
    let reply = c
        .node(node)
        .call(&["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()]);
    reply
        .integer()
        .unwrap_or_else(|| panic!("COUNTKEYSINSLOT {slot} on node {node}: {reply:?}"))
}

/// A master other than `node`.
fn other_master(c: &RedisCluster, node: usize) -> usize {
    c.master_indices()
        .into_iter()
        .find(|&m| m != node)
        .expect("another master")
}

// ---------------------------------------------------------------------
// Reading `info()`.
// ---------------------------------------------------------------------

async fn connect(h: &Harness) -> Cluster {
    let config = ClusterConfig::builder()
        .seeds(h.addrs.iter())
        .refresh_interval(None)
        .build()
        .expect("a valid config");
    Cluster::connect(config)
        .await
        .expect("connect to the cluster")
}

/// MOVED and ASK replies the client met from `addr`.
fn redirects(info: &ClusterInfo, addr: &NodeAddr) -> u64 {
    info.nodes
        .iter()
        .find(|n| n.addr == *addr)
        .map_or(0, |n| n.redirects)
}

/// The nodes `info()` routes `slot` to (one, when the map is sane).
fn routed_to(info: &ClusterInfo, slot: u16) -> Vec<&NodeAddr> {
    info.nodes
        .iter()
        .filter(|n| n.slots.iter().any(|&(a, b)| (a..=b).contains(&slot)))
        .map(|n| &n.addr)
        .collect()
}

// ---------------------------------------------------------------------
// Pipelines with their expected replies.
// ---------------------------------------------------------------------

/// Commands and the reply each must get.
#[derive(Default)]
struct Batch {
    cmds: Vec<Cmd>,
    want: Vec<Value>,
}

impl Batch {
    fn push(&mut self, c: Cmd, want: Value) {
        self.cmds.push(c);
        self.want.push(want);
    }

    /// The same commands in a random (seeded) order, so that the slots
    /// and nodes interleave.
    fn shuffled(self, seed: u64) -> Batch {
        let mut order: Vec<usize> = (0..self.cmds.len()).collect();
        fastrand::Rng::with_seed(seed).shuffle(&mut order);
        Batch {
            cmds: order.iter().map(|&i| self.cmds[i].clone()).collect(),
            want: order.iter().map(|&i| self.want[i].clone()).collect(),
        }
    }

    /// Sends the batch as one pipeline; every reply must be the expected
    /// one, in its place.
    async fn check(&self, client: &Cluster, what: &str) {
        let got = client
            .pipeline(&self.cmds)
            .await
            .unwrap_or_else(|e| panic!("{what}: the pipeline failed: {e}"));
        assert_eq!(got.len(), self.want.len(), "{what}: one reply per command");
        let wrong: Vec<String> = (0..got.len())
            .filter(|&i| got[i] != self.want[i])
            .map(|i| {
                format!(
                    "  #{i} {:?}: got {:?}, want {:?}",
                    self.cmds[i], got[i], self.want[i]
                )
            })
            .collect();
        assert!(
            wrong.is_empty(),
            "{what}: {} of {} replies wrong or out of place:\n{}",
            wrong.len(),
            got.len(),
            wrong[..wrong.len().min(20)].join("\n")
        );
    }
}

fn get(key: &str) -> Cmd {
    cmd("GET").arg(key)
}

fn set(key: &str, value: &str) -> Cmd {
    cmd("SET").arg(key).arg(value)
}

// ---------------------------------------------------------------------
// Migration and manual failover, on one cluster.
// ---------------------------------------------------------------------

#[test]
fn cluster_follows_migration_and_failover() {
    let cluster = RedisCluster::start();
    // Replicas listed online: a refresh then sees what discovery saw.
    cluster.warm_up();
    run(move || async move {
        let h = Harness::new(cluster);
        let client = connect(&h).await;
        let m = ask_serves_a_migrating_slot_without_changing_the_map(&h, &client).await;
        moved_teaches_the_new_owner_when_the_migration_ends(&h, &client, &m).await;
        pipelines_across_a_moving_slot_answer_in_order(&h, &client).await;
        manual_failover_under_load_recovers_without_a_refresh(&h, &client).await;
    });
}

/// A slot being moved, its keys and their values.
struct Migration {
    slot: u16,
    from: usize,
    to: usize,
    /// Written before the migration began; the first half moved first.
    old_keys: Vec<String>,
    /// Written through the client during the migration.
    new_keys: Vec<String>,
    values: HashMap<String, String>,
}

const ASK_SLOT: u16 = 1000;
const ASK_OLD: usize = 20;
const ASK_NEW: usize = 10;

async fn ask_serves_a_migrating_slot_without_changing_the_map(
    h: &Harness,
    client: &Cluster,
) -> Migration {
    let slot = ASK_SLOT;
    let (from, to) = h
        .run(move |c| {
            let from = c.slot_owner_index(slot);
            (from, other_master(c, from))
        })
        .await;
    let (src, dst) = (h.addr(from), h.addr(to));
    let mut keys = keys_in_slot(slot, ASK_OLD + ASK_NEW, "ask:");
    let new_keys = keys.split_off(ASK_OLD);
    let old_keys = keys;
    let mut values = HashMap::new();
    for k in &old_keys {
        let v = format!("old-{k}");
        client
            .command::<()>(["SET", k, &v])
            .await
            .unwrap_or_else(|e| panic!("SET {k}: {e}"));
        values.insert(k.clone(), v);
    }

    let moved = old_keys[..ASK_OLD / 2].to_vec();
    let counts = h
        .run(move |c| {
            c.begin_migration(slot, from, to);
            c.migrate_keys(slot, from, to, &moved);
            (keys_on(c, from, slot), keys_on(c, to, slot))
        })
        .await;
    assert_eq!(counts, (10, 10), "half the keys moved (source, target)");

    let before = client.info();
    assert_eq!(routed_to(&before, slot), [&src], "{before:#?}");
    // The source answers the keys it still has, and ASK for the others.
    for k in &old_keys {
        let got: Option<String> = client
            .command(["GET", k.as_str()])
            .await
            .unwrap_or_else(|e| panic!("GET {k} while slot {slot} migrates: {e}"));
        assert_eq!(got.as_ref(), Some(&values[k]), "GET {k}");
    }
    // A key the source does not have is written on the importing target:
    // the source answers ASK to the write too.
    for k in &new_keys {
        let v = format!("new-{k}");
        client
            .command::<()>(["SET", k, &v])
            .await
            .unwrap_or_else(|e| panic!("SET {k} while slot {slot} migrates: {e}"));
        values.insert(k.clone(), v);
    }
    for k in &new_keys {
        let got: Option<String> = client
            .command(["GET", k.as_str()])
            .await
            .unwrap_or_else(|e| panic!("GET {k} while slot {slot} migrates: {e}"));
        assert_eq!(got.as_ref(), Some(&values[k]), "GET {k}");
    }

    let after = client.info();
    let asks = (ASK_OLD / 2 + 2 * ASK_NEW) as u64;
    assert_eq!(
        redirects(&after, &src) - redirects(&before, &src),
        asks,
        "each GET of a moved key and each SET and GET of a new key met one ASK at the source {src}: {after:#?}"
    );
    assert_eq!(
        redirects(&after, &dst),
        redirects(&before, &dst),
        "the target {dst} served every command sent with ASKING"
    );
    assert_eq!(after.epoch, before.epoch, "an ASK changes no route");
    assert_eq!(after.topology_changes, before.topology_changes);
    assert_eq!(
        routed_to(&after, slot),
        [&src],
        "the slot stays with its source while it migrates"
    );
    let counts = h
        .run(move |c| (keys_on(c, from, slot), keys_on(c, to, slot)))
        .await;
    assert_eq!(
        counts,
        (10, (10 + ASK_NEW) as i64),
        "the new keys were written on the target (source, target)"
    );
    Migration {
        slot,
        from,
        to,
        old_keys,
        new_keys,
        values,
    }
}

async fn moved_teaches_the_new_owner_when_the_migration_ends(
    h: &Harness,
    client: &Cluster,
    m: &Migration,
) {
    let (slot, from, to) = (m.slot, m.from, m.to);
    let (src, dst) = (h.addr(from), h.addr(to));
    let rest = m.old_keys[ASK_OLD / 2..].to_vec();
    let counts = h
        .run(move |c| {
            c.migrate_keys(slot, from, to, &rest);
            c.finish_migration(slot, to);
            (keys_on(c, from, slot), keys_on(c, to, slot))
        })
        .await;
    assert_eq!(counts, (0, (ASK_OLD + ASK_NEW) as i64), "(source, target)");

    let before = client.info();
    assert_eq!(
        routed_to(&before, slot),
        [&src],
        "the client has not heard of the move yet"
    );
    for k in m.old_keys.iter().chain(&m.new_keys) {
        let got: Option<String> = client
            .command(["GET", k.as_str()])
            .await
            .unwrap_or_else(|e| panic!("GET {k} after slot {slot} moved: {e}"));
        assert_eq!(got.as_ref(), Some(&m.values[k]), "GET {k}");
    }
    let after = client.info();
    assert_eq!(
        routed_to(&after, slot),
        [&dst],
        "the slot is routed to its new owner: {after:#?}"
    );
    assert!(
        after.epoch > before.epoch,
        "the slot map changed: epoch {} -> {}",
        before.epoch,
        after.epoch
    );
    assert_eq!(
        redirects(&after, &src) - redirects(&before, &src),
        1,
        "one MOVED from the old owner {src} corrected the map; the later commands went straight to {dst}"
    );

    // A write now lands on the new owner itself.
    let key = key_in_slot(slot, "after-move:");
    client
        .command::<()>(["SET", key.as_str(), "moved"])
        .await
        .expect("SET after the move");
    let direct = h.run(move |c| c.node(to).call(&["GET", &key])).await;
    assert_eq!(direct, Reply::Bulk(b"moved".to_vec()), "GET on node {to}");
}

const PIPE_SLOT: u16 = 9000;

async fn pipelines_across_a_moving_slot_answer_in_order(h: &Harness, client: &Cluster) {
    let slot = PIPE_SLOT;
    // A second client that hears of nothing until its pipeline meets the
    // finished move.
    let late = connect(h).await;
    // And one whose pipeline holds only commands of the moving slot.
    let late_one_slot = connect(h).await;
    let (from, to) = h
        .run(move |c| {
            let from = c.slot_owner_index(slot);
            (from, other_master(c, from))
        })
        .await;
    let (src, dst) = (h.addr(from), h.addr(to));
    let not_in_slot = |k: &String| key_slot(k.as_bytes()) != slot;
    let others: Vec<String> = (0..200)
        .map(|i| format!("pipe:o:{i}"))
        .filter(not_in_slot)
        .collect();
    let fresh_others: Vec<String> = (0..100)
        .map(|i| format!("pipe:p:{i}"))
        .filter(not_in_slot)
        .collect();
    let strings = keys_in_slot(slot, 40, "pipe:s:");
    let counters = keys_in_slot(slot, 20, "pipe:c:");
    let news = keys_in_slot(slot, 100, "pipe:n:");
    let news2 = keys_in_slot(slot, 100, "pipe:m:");
    let value = |k: &str| format!("v-{k}");

    let mut setup = Batch::default();
    for k in others.iter().chain(&strings) {
        setup.push(set(k, &value(k)), ok());
    }
    for k in &counters {
        setup.push(set(k, "0"), ok());
    }
    setup.check(client, "writing the keys").await;

    let moved: Vec<String> = strings[..20]
        .iter()
        .chain(&counters[..10])
        .cloned()
        .collect();
    h.run(move |c| {
        c.begin_migration(slot, from, to);
        c.migrate_keys(slot, from, to, &moved);
    })
    .await;

    // While MIGRATING: GETs and INCRs of keys on either side, SETs of new
    // keys of the slot (ASK to the target), other slots, keyless commands.
    let mut p1 = Batch::default();
    for k in others.iter().chain(&strings) {
        p1.push(get(k), bulk(&value(k)));
    }
    for k in &counters {
        p1.push(cmd("INCR").arg(k), Value::Integer(1));
    }
    for k in news.iter().chain(&fresh_others) {
        p1.push(set(k, &value(k)), ok());
    }
    for i in 0..40 {
        let e = format!("echo-{i}");
        p1.push(cmd("ECHO").arg(&e), bulk(&e));
    }
    let p1 = p1.shuffled(1);
    assert!(p1.cmds.len() >= 480, "{} commands", p1.cmds.len());
    let before = client.info();
    p1.check(client, "a pipeline while the slot is MIGRATING")
        .await;
    let after = client.info();
    assert_eq!(
        redirects(&after, &src) - redirects(&before, &src),
        (20 + 10 + news.len()) as u64,
        "each moved key and each new key of the slot met one ASK"
    );
    assert_eq!(after.epoch, before.epoch, "an ASK changes no route");
    let mut readback = Batch::default();
    for k in news.iter().chain(&fresh_others) {
        readback.push(get(k), bulk(&value(k)));
    }
    readback
        .shuffled(2)
        .check(client, "reading back what the pipeline wrote")
        .await;
    // A pipeline of the migrating slot alone (one node, some answers by
    // ASK) is in order too.
    let mut one_slot = Batch::default();
    for k in strings.iter().chain(&news) {
        one_slot.push(get(k), bulk(&value(k)));
    }
    let before = client.info();
    one_slot
        .shuffled(4)
        .check(client, "a pipeline of the MIGRATING slot alone")
        .await;
    assert_eq!(
        redirects(&client.info(), &src) - redirects(&before, &src),
        (20 + news.len()) as u64,
        "the moved keys and the new keys met one ASK each"
    );

    // The other keys move one MIGRATE at a time and the migration ends,
    // while pipelines keep running.
    let rest: Vec<String> = strings[20..]
        .iter()
        .chain(&counters[10..])
        .cloned()
        .collect();
    let done = Rc::new(Cell::new(false));
    let mover = spawn_local({
        let (h, done) = (h.clone(), done.clone());
        async move {
            h.run(move |c| {
                for k in rest {
                    c.migrate_keys(slot, from, to, &[k]);
                }
                c.finish_migration(slot, to);
            })
            .await;
            done.set(true);
        }
    });
    // The counters hold `round` before each pipeline.
    let mut round = 1;
    let mut during = 0;
    loop {
        let finished = done.get();
        let mut b = Batch::default();
        for k in &counters {
            b.push(cmd("INCR").arg(k), Value::Integer(round + 1));
        }
        for k in strings.iter().chain(&others[..60]) {
            b.push(get(k), bulk(&value(k)));
        }
        b.shuffled(10 + round as u64)
            .check(client, &format!("pipeline {round} while the keys move"))
            .await;
        round += 1;
        if finished {
            break;
        }
        during += 1;
    }
    mover.await;
    assert!(during >= 1, "no pipeline ran while the keys moved");

    // Right after the migration ended, from a client that still routes the
    // slot to its old owner: every command of the slot meets MOVED.
    let before = late.info();
    assert_eq!(routed_to(&before, slot), [&src]);
    let mut p2 = Batch::default();
    for k in others.iter().chain(&strings) {
        p2.push(get(k), bulk(&value(k)));
    }
    for k in &counters {
        p2.push(cmd("INCR").arg(k), Value::Integer(round + 1));
    }
    for k in &news {
        p2.push(get(k), bulk(&value(k)));
    }
    for k in &news2 {
        p2.push(set(k, &value(k)), ok());
    }
    let p2 = p2.shuffled(3);
    // All of a pipeline in the moved slot: every command meets MOVED, and
    // the replies still come back in order.
    let mut moved_slot = Batch::default();
    for k in strings.iter().chain(&news) {
        moved_slot.push(get(k), bulk(&value(k)));
    }
    moved_slot
        .shuffled(5)
        .check(&late_one_slot, "a pipeline of the moved slot alone")
        .await;
    assert_eq!(routed_to(&late_one_slot.info(), slot), [&dst]);
    let in_slot = p2
        .cmds
        .iter()
        .filter(|c| c.get(1).is_some_and(|k| key_slot(k) == slot))
        .count();
    p2.check(&late, "a pipeline right after the migration ended")
        .await;
    let after = late.info();
    assert_eq!(routed_to(&after, slot), [&dst], "{after:#?}");
    assert!(after.epoch > before.epoch, "the slot map changed");
    assert_eq!(
        redirects(&after, &src) - redirects(&before, &src),
        in_slot as u64,
        "each command of the slot met one MOVED at the old owner"
    );
    let expected = (strings.len() + counters.len() + news.len() + news2.len()) as i64;
    let counts = h
        .run(move |c| (keys_on(c, from, slot), keys_on(c, to, slot)))
        .await;
    assert_eq!(counts, (0, expected), "(old owner, new owner)");
}

async fn manual_failover_under_load_recovers_without_a_refresh(h: &Harness, client: &Cluster) {
    let (replica, master, owners) = h
        .run(|c| {
            let replica = c.replica_indices()[0];
            (replica, master_of(c, replica), slot_owners(c))
        })
        .await;
    let shard: Vec<bool> = owners.iter().map(|&o| o == master).collect();
    let load = Load::start(client, "failover", shard.clone());
    load.wait_clean_rounds(Instant::now(), 1, "before the failover")
        .await;

    let called = Instant::now();
    let old = h.run(move |c| c.failover(replica)).await;
    let returned = Instant::now();
    assert_eq!(old, master, "node {replica} replicated node {master}");
    load.wait_clean_rounds(returned, 2, "after the failover")
        .await;
    let report = load.stop().await;

    report.assert_consistent(|_, _| true);
    let on = report.shard(true);
    let off = report.shard(false);
    let back = on
        .back_after(called)
        .expect("a success on the shard after the failover");
    println!(
        "RECOVERY cluster-failover: {:.3} s from the failover call to the first success on the shard after which none failed \
         (the call took {:.3} s; shard errors: {:?}; longest time without a success on the shard: {:.3} s; \
         slowest shard command: {:.3} s; {} shard commands, {} others)",
        secs(back - called),
        secs(returned - called),
        on.errors,
        secs(on.longest_stall_after(called)),
        secs(on.slowest),
        on.ops,
        off.ops,
    );
    assert!(
        back - called < 10 * SECOND,
        "the failed-over shard recovered {:.3} s after the failover call",
        secs(back - called)
    );
    assert_eq!(
        on.failed_after(returned),
        0,
        "commands to the shard failed after the failover returned: {:?}",
        on.errors
    );
    assert!(
        off.errors.is_empty(),
        "the other shards saw errors during a manual failover: {:?}",
        off.errors
    );
    let slot = shard.iter().position(|&s| s).expect("a slot") as u16;
    let info = client.info();
    assert_eq!(
        routed_to(&info, slot),
        [&h.addr(replica)],
        "the promoted replica serves the shard: {info:#?}"
    );
}

// ---------------------------------------------------------------------
// A killed master, on a cluster of its own.
// ---------------------------------------------------------------------

/// How far back an acknowledged write may be lost when a master dies
/// (replication is asynchronous; on loopback it lags far less).
const REPLICATION_LAG: Duration = Duration::from_secs(1);

#[test]
fn cluster_recovers_from_a_killed_master() {
    let cluster = RedisCluster::start();
    cluster.warm_up();
    run(move || async move {
        let h = Harness::new(cluster);
        let client = connect(&h).await;
        killed_master_fails_its_shard_until_a_replica_takes_over(&h, &client).await;
    });
}

/// The first master, a load on every shard that has run one clean round,
/// which slots are that master's, and one of them.
async fn load_with_a_master_under_test(
    h: &Harness,
    client: &Cluster,
    name: &str,
) -> (usize, Vec<bool>, u16, Load) {
    let (master, owners) = h
        .run(|c| {
            let master = c.master_indices()[0];
            (master, slot_owners(c))
        })
        .await;
    let shard: Vec<bool> = owners.iter().map(|&o| o == master).collect();
    let slot = shard.iter().position(|&s| s).expect("a slot") as u16;
    let load = Load::start(client, name, shard.clone());
    load.wait_clean_rounds(Instant::now(), 1, &format!("before the {name}"))
        .await;
    (master, shard, slot, load)
}

async fn killed_master_fails_its_shard_until_a_replica_takes_over(h: &Harness, client: &Cluster) {
    let (master, shard, slot, load) = load_with_a_master_under_test(h, client, "kill").await;

    let (killed, dead) = h
        .run(move |c| {
            let killed = Instant::now();
            c.kill_node(master);
            (killed, Instant::now())
        })
        .await;
    let promoted = h
        .run(move |c| c.wait_for_new_master_of(slot, master, 30 * SECOND))
        .await;
    let agreed = Instant::now();
    load.wait_clean_rounds(agreed, 2, "after the promotion")
        .await;
    let report = load.stop().await;

    // Acknowledged writes to the dead master in the last moments before it
    // died may not have reached its replica: those may read as an older
    // value afterwards. Nothing else may.
    let lossy_from = killed.checked_sub(REPLICATION_LAG).unwrap_or(killed);
    report.assert_consistent(|slot, at| {
        !(shard[usize::from(slot)] && lossy_from <= at && at <= dead)
    });
    let on = report.shard(true);
    let off = report.shard(false);
    let back = on
        .back_after(killed)
        .expect("a success on the shard after the kill");
    let last_error = on
        .last_error()
        .map(|t| secs(t.saturating_duration_since(killed)));
    println!(
        "RECOVERY kill-master: {:.3} s to the first success on the shard after which none failed; \
         last error {} s after the kill; the cluster agreed on node {promoted} as master {:.3} s after the kill; \
         shard errors: {:?}; longest time without a success on the shard: {:.3} s; \
         slowest shard command: {:.3} s; {} shard commands, {} others",
        secs(back - killed),
        last_error.map_or("(none)".to_owned(), |s| format!("{s:.3}")),
        secs(agreed - killed),
        on.errors,
        secs(on.longest_stall_after(killed)),
        secs(on.slowest),
        on.ops,
        off.ops,
    );
    assert!(
        back - killed < 15 * SECOND,
        "the shard of the killed master recovered {:.3} s after the kill",
        secs(back - killed)
    );
    let unexpected: Vec<&String> = on
        .errors
        .keys()
        .filter(|kind| !SHARD_DOWN_ERRORS.iter().any(|ok| kind.starts_with(ok)))
        .collect();
    assert!(
        unexpected.is_empty(),
        "errors other than a lost connection, a timeout, an unreachable node or a down cluster: {:?}",
        on.errors
    );
    assert!(
        off.errors.is_empty(),
        "the other shards saw errors while one master died: {:?}",
        off.errors
    );
    let info = client.info();
    assert_eq!(
        routed_to(&info, slot),
        [&h.addr(promoted)],
        "the promoted replica serves the shard: {info:#?}"
    );
}

// ---------------------------------------------------------------------
// A frozen master (SIGSTOP), on a cluster of its own.
// ---------------------------------------------------------------------

/// The call deadline of the frozen-master test: the default.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How late past its deadline a call may end in that test (the target is
/// 100 ms; a loaded 2-core CI machine gets more room).
const LATE: Duration = Duration::from_millis(250);

#[test]
fn cluster_routes_around_a_frozen_master_once_its_replica_is_promoted() {
    // The setting: cluster-node-timeout 2 s.
    let cluster = RedisCluster::builder().node_timeout_ms(2000).start();
    cluster.warm_up();
    run(move || async move {
        let h = Harness::new(cluster);
        let client = connect(&h).await;
        frozen_master_is_left_when_the_cluster_promotes_its_replica(&h, &client).await;
    });
}

async fn frozen_master_is_left_when_the_cluster_promotes_its_replica(
    h: &Harness,
    client: &Cluster,
) {
    let (master, shard, slot, load) = load_with_a_master_under_test(h, client, "freeze").await;

    let frozen = h
        .run(move |c| {
            c.node(master).pause(true);
            Instant::now()
        })
        .await;
    // Thawed whatever happens below: a stopped process outlives a panic.
    let thaw = Thaw(h.clone(), master);
    let promoted = h
        .run(move |c| c.wait_for_new_master_of(slot, master, 30 * SECOND))
        .await;
    let agreed = Instant::now();
    load.wait_clean_rounds(agreed, 2, "after the promotion")
        .await;
    let report = load.stop().await;
    drop(thaw);

    // A stopped master writes nothing more; what it acknowledged before
    // may not all have reached its replica (asynchronous replication).
    let lossy_from = frozen.checked_sub(REPLICATION_LAG).unwrap_or(frozen);
    report.assert_consistent(|slot, at| {
        !(shard[usize::from(slot)] && lossy_from <= at && at <= frozen)
    });
    let on = report.shard(true);
    let off = report.shard(false);
    let back = on
        .back_after(agreed)
        .expect("a success on the shard after the promotion");
    let first = on
        .successes
        .iter()
        .copied()
        .find(|&s| s > agreed)
        .expect("a success after the promotion");
    println!(
        "RECOVERY freeze-master: the cluster agreed on node {promoted} as master {:.3} s after the \
         freeze; first success on the shard {:.3} s after that, none failed after {:.3} s; \
         shard errors: {:?}; slowest shard command: {:.3} s; {} shard commands, {} others",
        secs(agreed - frozen),
        secs(first.saturating_duration_since(agreed)),
        secs(back.saturating_duration_since(agreed)),
        on.errors,
        secs(on.slowest),
        on.ops,
        off.ops,
    );
    // Paced by the promotion, not by the call deadline: calls written to
    // the frozen master fail once the new master is known, calls made
    // since went nowhere near it.
    assert!(
        back.saturating_duration_since(agreed) < 4 * SECOND,
        "the shard of the frozen master was back {:.3} s after the promotion",
        secs(back.saturating_duration_since(agreed))
    );
    let slowest = on.slowest.max(off.slowest);
    assert!(
        slowest < CALL_TIMEOUT + LATE,
        "a call took {:.3} s, past its deadline",
        secs(slowest)
    );
    let unexpected: Vec<&String> = on
        .errors
        .keys()
        .filter(|kind| !SHARD_DOWN_ERRORS.iter().any(|ok| kind.starts_with(ok)))
        .collect();
    assert!(unexpected.is_empty(), "unexpected errors: {:?}", on.errors);
    assert!(
        off.errors.is_empty(),
        "the other shards saw errors while one master was frozen: {:?}",
        off.errors
    );
    let info = client.info();
    assert_eq!(
        routed_to(&info, slot),
        [&h.addr(promoted)],
        "the promoted replica serves the shard: {info:#?}"
    );
}

/// Sends `SIGCONT` to a node when dropped.
struct Thaw(Harness, usize);

impl Drop for Thaw {
    fn drop(&mut self) {
        let node = self.1;
        // SIGCONT from this thread: the harness lock may be poisoned or
        // held by a step that panicked.
        if let Ok(c) = self.0.cluster.try_lock() {
            c.node(node).pause(false);
        }
    }
}

/// The errors a command may meet while its shard has no master: lost in
/// flight (`ConnectionLost`, a timeout after sending), or never sent (the
/// node unreachable, the cluster down or the slot unserved until the
/// deadline).
const SHARD_DOWN_ERRORS: [&str; 5] = [
    "ConnectionLost",
    "Timeout",
    "Connect",
    "Server(CLUSTERDOWN",
    "SlotUnserved",
];

// ---------------------------------------------------------------------
// Load: tasks writing and reading back their own keys.
// ---------------------------------------------------------------------

const LOAD_TASKS: usize = 4;
const KEYS_PER_TASK: usize = 48;
/// Pause of each load task after each SET + GET (load shaping).
const PACE: Duration = Duration::from_millis(1);

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// One command of the load.
struct Op {
    /// The key is in the shard under change.
    in_shard: bool,
    start: Instant,
    end: Instant,
    /// The kind of error ([`error_kind`]), if it failed.
    error: Option<String>,
}

/// What a failed SET may have done.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fate {
    Acked,
    MaybeApplied,
    NotSent,
}

fn fate(e: &Error) -> Fate {
    match e {
        Error::Timeout { maybe_applied } if !maybe_applied => Fate::NotSent,
        Error::Connect { .. }
        | Error::SlotUnserved { .. }
        | Error::NoTopology { .. }
        | Error::TooManyRedirects { .. }
        | Error::Server(_) => Fate::NotSent,
        _ => Fate::MaybeApplied,
    }
}

/// One step in the life of a key, as its task saw it.
enum Event {
    /// `SET` of the key's `index`th value.
    Write {
        index: usize,
        fate: Fate,
        end: Instant,
    },
    /// A `GET` that answered.
    Read { value: Option<String>, end: Instant },
}

/// One key of a load task: the values written to it (unique), in order,
/// and what happened to it.
struct KeyLog {
    key: String,
    slot: u16,
    values: Vec<String>,
    fates: Vec<Fate>,
    events: Vec<Event>,
}

impl KeyLog {
    /// 0 for nil (never written), `i` for the `i`th value written.
    fn index_of(&self, value: &Option<String>) -> Option<usize> {
        match value {
            None => Some(0),
            Some(v) => self.values.iter().position(|w| w == v).map(|p| p + 1),
        }
    }

    /// Read-your-writes: each `GET` answers a value written to this key,
    /// not one whose `SET` failed before it was sent, and nothing older
    /// than the last acknowledged write or the last value read, counting
    /// only what happened at a `durable` time.
    fn problems(&self, durable: impl Fn(u16, Instant) -> bool) -> Vec<String> {
        let mut floor = 0;
        let mut out = Vec::new();
        for e in &self.events {
            match e {
                Event::Write {
                    index,
                    fate: Fate::Acked,
                    end,
                } => {
                    if durable(self.slot, *end) {
                        floor = floor.max(*index);
                    }
                }
                Event::Write { .. } => {}
                Event::Read { value, end } => match self.index_of(value) {
                    None => out.push(format!(
                        "{}: GET answered {value:?}, never written to this key",
                        self.key
                    )),
                    Some(j) => {
                        if j > 0 && self.fates[j - 1] == Fate::NotSent {
                            out.push(format!(
                                "{}: GET answered {value:?}, whose SET failed as never sent",
                                self.key
                            ));
                        }
                        if j < floor {
                            out.push(format!(
                                "{}: GET answered value #{j} {value:?}, older than value #{floor} ({:?})",
                                self.key,
                                self.values[floor - 1]
                            ));
                        } else if durable(self.slot, *end) {
                            floor = j;
                        }
                    }
                },
            }
        }
        out
    }
}

#[derive(Default)]
struct LoadShared {
    stop: Cell<bool>,
    ops: RefCell<Vec<Op>>,
    /// Per task: the start of each round over its keys in which every
    /// command succeeded.
    clean_rounds: RefCell<Vec<Vec<Instant>>>,
}

/// Tasks writing and reading their own keys, spread over every slot,
/// until stopped.
struct Load {
    shared: Rc<LoadShared>,
    tasks: Vec<Task<Vec<KeyLog>>>,
}

impl Load {
    /// `shard[slot]`: the slot is in the shard under change.
    fn start(client: &Cluster, name: &str, shard: Vec<bool>) -> Load {
        // All keys first: finding them is CPU work that would hold the
        // executor while the first tasks' commands wait for it.
        let keys: Vec<Vec<KeyLog>> = (0..LOAD_TASKS)
            .map(|t| {
                let keys: Vec<KeyLog> = (0..KEYS_PER_TASK)
                    .map(|i| {
                        let slot = ((i * SLOTS / KEYS_PER_TASK + t * 131 + 7) % SLOTS) as u16;
                        KeyLog {
                            key: key_in_slot(slot, &format!("{name}:{t}:{i}:")),
                            slot,
                            values: Vec::new(),
                            fates: Vec::new(),
                            events: Vec::new(),
                        }
                    })
                    .collect();
                assert!(
                    keys.iter().any(|k| shard[usize::from(k.slot)]),
                    "task {t} has a key in the shard"
                );
                keys
            })
            .collect();
        let shared = Rc::new(LoadShared {
            clean_rounds: RefCell::new(vec![Vec::new(); LOAD_TASKS]),
            ..LoadShared::default()
        });
        let shard = Rc::new(shard);
        let tasks = keys
            .into_iter()
            .enumerate()
            .map(|(t, keys)| {
                spawn_local(load_task(
                    client.clone(),
                    t,
                    keys,
                    shared.clone(),
                    shard.clone(),
                ))
            })
            .collect();
        Load { shared, tasks }
    }

    /// Waits until every task completed `n` rounds without an error,
    /// started after `after`.
    async fn wait_clean_rounds(&self, after: Instant, n: usize, when: &str) {
        let what = format!("every load task to run {n} clean round(s) {when}");
        wait_until(&what, LOAD_WAIT, || {
            self.shared
                .clean_rounds
                .borrow()
                .iter()
                .all(|starts| starts.iter().filter(|&&s| s > after).count() >= n)
        })
        .await;
    }

    async fn stop(self) -> LoadReport {
        self.shared.stop.set(true);
        let mut keys = Vec::new();
        for task in self.tasks {
            keys.extend(task.await);
        }
        LoadReport {
            ops: self.shared.ops.take(),
            keys,
        }
    }
}

async fn load_task(
    client: Cluster,
    t: usize,
    mut keys: Vec<KeyLog>,
    shared: Rc<LoadShared>,
    shard: Rc<Vec<bool>>,
) -> Vec<KeyLog> {
    let mut seq = 0u64;
    let record = |in_shard: bool, start: Instant, error: Option<&Error>| {
        let end = Instant::now();
        shared.ops.borrow_mut().push(Op {
            in_shard,
            start,
            end,
            error: error.map(error_kind),
        });
        end
    };
    'run: loop {
        let round = Instant::now();
        let mut clean = true;
        for k in keys.iter_mut() {
            if shared.stop.get() {
                break 'run;
            }
            let in_shard = shard[usize::from(k.slot)];
            seq += 1;
            let value = format!("{t}:{seq}");
            let start = Instant::now();
            let r = client
                .command::<()>(["SET", k.key.as_str(), value.as_str()])
                .await;
            let end = record(in_shard, start, r.as_ref().err());
            let fate = r.as_ref().map_or_else(fate, |_| Fate::Acked);
            k.values.push(value);
            k.fates.push(fate);
            k.events.push(Event::Write {
                index: k.values.len(),
                fate,
                end,
            });
            let start = Instant::now();
            let r = client
                .command::<Option<String>>(["GET", k.key.as_str()])
                .await;
            let end = record(in_shard, start, r.as_ref().err());
            clean &= fate == Fate::Acked && r.is_ok();
            if let Ok(value) = r {
                k.events.push(Event::Read { value, end });
            }
            glommio::timer::sleep(PACE).await;
        }
        if clean {
            shared.clean_rounds.borrow_mut()[t].push(round);
        }
    }
    keys
}

struct LoadReport {
    ops: Vec<Op>,
    keys: Vec<KeyLog>,
}

/// The commands of one side (the shard under change, or the others).
struct ShardOps {
    ops: usize,
    /// Errors by kind.
    errors: BTreeMap<String, usize>,
    /// Start and end of each failed command.
    failed: Vec<(Instant, Instant)>,
    /// Ends of the successful commands, in order.
    successes: Vec<Instant>,
    slowest: Duration,
}

impl ShardOps {
    /// When the last failing command ended.
    fn last_error(&self) -> Option<Instant> {
        self.failed.iter().map(|&(_, end)| end).max()
    }

    /// The end of the first success after `from` after which no command
    /// failed.
    fn back_after(&self, from: Instant) -> Option<Instant> {
        let since = self.last_error().map_or(from, |e| e.max(from));
        self.successes.iter().copied().find(|&s| s > since)
    }

    /// The longest time between two successes (or from `from` to the
    /// first success after it).
    fn longest_stall_after(&self, from: Instant) -> Duration {
        let mut prev = from;
        let mut longest = Duration::ZERO;
        for &s in self.successes.iter().filter(|&&s| s > from) {
            longest = longest.max(s - prev);
            prev = s;
        }
        longest
    }

    /// Commands started after `at` that failed.
    fn failed_after(&self, at: Instant) -> usize {
        self.failed.iter().filter(|&&(start, _)| start > at).count()
    }
}

impl LoadReport {
    /// Panics listing every read that broke read-your-writes (see
    /// [`KeyLog::problems`]).
    fn assert_consistent(&self, durable: impl Fn(u16, Instant) -> bool) {
        let problems: Vec<String> = self
            .keys
            .iter()
            .flat_map(|k| k.problems(&durable))
            .collect();
        let reads: usize = self
            .keys
            .iter()
            .map(|k| {
                k.events
                    .iter()
                    .filter(|e| matches!(e, Event::Read { .. }))
                    .count()
            })
            .sum();
        assert!(reads > 0, "the load read nothing");
        assert!(
            problems.is_empty(),
            "{} of {reads} reads returned a wrong value:\n{}",
            problems.len(),
            problems[..problems.len().min(20)].join("\n")
        );
    }

    fn shard(&self, in_shard: bool) -> ShardOps {
        let mut out = ShardOps {
            ops: 0,
            errors: BTreeMap::new(),
            failed: Vec::new(),
            successes: Vec::new(),
            slowest: Duration::ZERO,
        };
        for op in self.ops.iter().filter(|op| op.in_shard == in_shard) {
            out.ops += 1;
            out.slowest = out.slowest.max(op.end - op.start);
            match &op.error {
                Some(kind) => {
                    *out.errors.entry(kind.clone()).or_default() += 1;
                    out.failed.push((op.start, op.end));
                }
                None => out.successes.push(op.end),
            }
        }
        out.successes.sort_unstable();
        out
    }
}

/// The load's read-your-writes check itself: it accepts what a correct
/// client may answer and flags what it may not.
#[test]
fn read_your_writes_check_flags_stale_foreign_and_unsent_values() {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let log = |fates: &[Fate], reads: &[(Option<&str>, u64)]| {
        let mut k = KeyLog {
            key: "k".into(),
            slot: 7,
            values: Vec::new(),
            fates: Vec::new(),
            events: Vec::new(),
        };
        for (i, &fate) in fates.iter().enumerate() {
            k.values.push(format!("v{}", i + 1));
            k.fates.push(fate);
            k.events.push(Event::Write {
                index: i + 1,
                fate,
                end: at(10 * i as u64),
            });
        }
        for &(value, ms) in reads {
            k.events.push(Event::Read {
                value: value.map(str::to_owned),
                end: at(ms),
            });
        }
        k
    };
    let strict = |_: u16, _: Instant| true;
    use Fate::{Acked, MaybeApplied, NotSent};
    // The last acknowledged value, or a later one that may have been applied.
    assert!(
        log(&[Acked, Acked], &[(Some("v2"), 100)])
            .problems(strict)
            .is_empty()
    );
    assert!(
        log(&[Acked, MaybeApplied], &[(Some("v1"), 100)])
            .problems(strict)
            .is_empty()
    );
    assert!(
        log(&[Acked, MaybeApplied], &[(Some("v2"), 100)])
            .problems(strict)
            .is_empty()
    );
    // Older than acknowledged, never written, or written by a SET that
    // failed unsent.
    assert_eq!(
        log(&[Acked, Acked], &[(Some("v1"), 100)])
            .problems(strict)
            .len(),
        1
    );
    assert_eq!(log(&[Acked], &[(None, 100)]).problems(strict).len(), 1);
    assert_eq!(
        log(&[Acked], &[(Some("OK"), 100)]).problems(strict).len(),
        1
    );
    assert_eq!(
        log(&[Acked, NotSent], &[(Some("v2"), 100)])
            .problems(strict)
            .len(),
        1
    );
    // Once read, a value may not go back...
    let k = log(
        &[Acked, MaybeApplied],
        &[(Some("v2"), 100), (Some("v1"), 110)],
    );
    assert_eq!(k.problems(strict).len(), 1);
    // ...unless what happened in a lossy window (a master dying) is not
    // durable.
    let lossy = |_: u16, t: Instant| t < at(5);
    assert!(
        log(&[Acked, Acked], &[(Some("v1"), 100)])
            .problems(lossy)
            .is_empty()
    );
    assert_eq!(
        log(&[Acked, Acked], &[(None, 100)]).problems(lossy).len(),
        1
    );
}
