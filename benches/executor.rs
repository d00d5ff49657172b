//! The per-core runtime ([`ClusterExecutor`]): what a second core buys,
//! what sharded ownership costs against every core connecting to every
//! node, and what one cross-core hop adds to a command's latency. All on
//! one freshly started cluster (3 masters + 3 replicas on loopback, from
//! the test harness).
//!
//! `cargo bench --bench executor` prints two markdown tables.
//!
//! The first: SET/GET 1:1 with 32-byte values over 100,000 random keys
//! `key:n`, 64 tasks per core each sending single commands in a loop, for
//! 1 core sharded, 2 cores sharded and 2 cores every-core. Each row runs
//! a warm-up, then measures a fixed window that every core shares: ops/s,
//! p50/p99 latency, client CPU per operation (getrusage of this process
//! over the window: every core, and the main thread, which sleeps), and
//! the cross-core traffic of [`CoreClient::hop_stats`], summed over the
//! cores: commands that crossed cores per operation, and channel messages
//! per crossed command (requests and replies; 2 would mean no batching at
//! all). It also gives commands per socket write, summed over each core's
//! own master connections.
//!
//! With 3 masters and 2 sharded cores, core 0 owns two masters and core 1
//! one, so a random key is remote for 1/3 of core 0's commands and 2/3 of
//! core 1's: about 0.5 crossings per operation.
//!
//! The second: the price of a hop alone. 2 cores sharded, one task on
//! core 0 (core 1 only serves), GETs alternating between keys core 0 owns
//! and keys core 1 owns ([`CoreClient::owner_of_key`]), one at a time:
//! p50/p99 of each and the difference.
//!
//! The machine matters: on one with few CPUs, the client's cores and the
//! six redis-servers share them, so a second client core takes CPU from
//! the servers rather than adding its own, and ops/s says little about
//! scaling. CPU per operation and the crossings still hold.
//!
//! Environment: `REDCORE_BENCH_SECS` (the measured window of each run,
//! default 3; the warm-up before it is 1 s),
//! `REDCORE_BENCH_LOAD=1-sharded|2-sharded|2-every-core|hop` (run that one
//! alone, for profiling). With `--test` (as `cargo bench -- --test`
//! passes), or when run without `--bench` (as `cargo test --benches` runs
//! it), it runs tiny windows only, to check that it works.

mod common;

use common::{KEYS, cpu_time, random_key, set_or_get, value32};

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use redcore::Commands;
use redcore::runtime::Ownership;
use redcore::{ClusterExecutor, CoreClient, cmd};
use redcore_test_support::RedisCluster;

/// Tasks per core sending single commands.
const TASKS: usize = 64;
/// Keys of each kind (local, remote) the hop measurement reads.
const HOP_KEYS: usize = 1_000;

/// The warm-up and the measured window every core of one run shares.
#[derive(Clone, Copy)]
struct Window {
    warm_up: Duration,
    measure: Duration,
}

/// When the measured window of a run starts: set by the first core whose
/// function runs (its start plus the warm-up), read by the others and by
/// the main thread, which samples the process's CPU time at both ends.
type Start = Arc<OnceLock<Instant>>;

impl Window {
    /// The window's start and end, fixing them if this is the first core.
    fn fix(&self, start: &Start) -> (Instant, Instant) {
        let start = *start.get_or_init(|| Instant::now() + self.warm_up);
        (start, start + self.measure)
    }
}

fn new_hist() -> Histogram<u64> {
    Histogram::<u64>::new(3).expect("histogram")
}

/// Socket writes so far on this core's own master connections.
fn master_writes(client: &CoreClient) -> u64 {
    client
        .master_connections()
        .iter()
        .map(|(_, conn)| conn.stats().writes)
        .sum()
}

/// What one core did inside the measured window.
struct CoreLoad {
    hist: Histogram<u64>,
    requests_sent: u64,
    messages_sent: u64,
    writes: u64,
}

/// One core's share of a throughput row: [`TASKS`] tasks sending SET and
/// GET alternately until the window ends; only commands sent and answered
/// inside the window are counted.
async fn core_load(client: CoreClient, window: Window, start: Start) -> CoreLoad {
    let (start, end) = window.fix(&start);
    let hist = Rc::new(RefCell::new(new_hist()));
    let mut tasks = Vec::with_capacity(TASKS);
    for t in 0..TASKS {
        let client = client.clone();
        let hist = hist.clone();
        tasks.push(glommio::spawn_local(async move {
            let value = value32();
            let mut key = String::with_capacity(16);
            let mut n = t;
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                random_key(&mut key);
                set_or_get(&client, &key, &value, n).await;
                let done = Instant::now();
                if sent >= start && done <= end {
                    hist.borrow_mut()
                        .record((done - sent).as_nanos() as u64)
                        .expect("record");
                }
                n += 1;
            }
        }));
    }
    // Counters at both ends of the window.
    glommio::timer::sleep(start.saturating_duration_since(Instant::now())).await;
    let (hops0, writes0) = (client.hop_stats(), master_writes(&client));
    glommio::timer::sleep(end.saturating_duration_since(Instant::now())).await;
    let (hops1, writes1) = (client.hop_stats(), master_writes(&client));
    for t in tasks {
        t.await;
    }
    let hist = hist.borrow().clone();
    CoreLoad {
        hist,
        requests_sent: hops1.requests_sent - hops0.requests_sent,
        messages_sent: hops1.messages_sent - hops0.messages_sent,
        writes: writes1 - writes0,
    }
}

/// Waits for the first core to fix the window, then samples this
/// process's CPU time at its start and end.
fn cpu_over_window(start: &Start, window: Window) -> Duration {
    let start = loop {
        if let Some(s) = start.get() {
            break *s;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    std::thread::sleep(start.saturating_duration_since(Instant::now()));
    let cpu0 = cpu_time(libc::RUSAGE_SELF);
    std::thread::sleep((start + window.measure).saturating_duration_since(Instant::now()));
    cpu_time(libc::RUSAGE_SELF) - cpu0
}

/// One line of the throughput table.
struct Row {
    load: String,
    ops_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    cpu_us_per_op: f64,
    crossed_per_op: f64,
    messages_per_crossed: Option<f64>,
    cmds_per_write: f64,
}

fn throughput_row(seeds: &[SocketAddr], cores: usize, ownership: Ownership, window: Window) -> Row {
    let start: Start = Arc::default();
    let handle = {
        let start = start.clone();
        ClusterExecutor::new(seeds.to_vec())
            .expect("config")
            .cores(cores)
            .expect("cores")
            .ownership(ownership)
            .spawn(move |client| core_load(client, window, start.clone()))
            .expect("spawn the executor")
    };
    let cpus = handle.cpus().to_vec();
    let cpu = cpu_over_window(&start, window);
    let mut hist = new_hist();
    let (mut crossed, mut messages, mut writes) = (0, 0, 0);
    for (core, result) in handle.join().into_iter().enumerate() {
        let load = result.unwrap_or_else(|e| panic!("core {core}: {e}"));
        hist.add(&load.hist).expect("merge histograms");
        crossed += load.requests_sent;
        messages += load.messages_sent;
        writes += load.writes;
    }
    let ops = hist.len() as f64;
    let ownership = match ownership {
        Ownership::Sharded => "sharded",
        Ownership::EveryCore => "every core",
    };
    let plural = if cores == 1 { "" } else { "s" };
    Row {
        load: format!(
            "{cores} core{plural} (CPU {cpus:?}), {ownership}, {} tasks",
            TASKS * cores
        ),
        ops_per_sec: ops / window.measure.as_secs_f64(),
        p50_us: hist.value_at_quantile(0.5) as f64 / 1000.0,
        p99_us: hist.value_at_quantile(0.99) as f64 / 1000.0,
        cpu_us_per_op: cpu.as_secs_f64() * 1e6 / ops,
        crossed_per_op: crossed as f64 / ops,
        messages_per_crossed: (crossed > 0).then(|| messages as f64 / crossed as f64),
        cmds_per_write: ops / writes.max(1) as f64,
    }
}

fn print_rows(rows: &[Row]) {
    println!(
        "| runtime | ops/s | p50 µs | p99 µs | client CPU µs/op | crossed cores/op \
         | channel messages/crossed command | commands/write |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let messages = r
            .messages_per_crossed
            .map_or_else(|| "-".to_owned(), |m| format!("{m:.3}"));
        println!(
            "| {} | {:.0} | {:.1} | {:.1} | {:.3} | {:.3} | {} | {:.1} |",
            r.load,
            r.ops_per_sec,
            r.p50_us,
            r.p99_us,
            r.cpu_us_per_op,
            r.crossed_per_op,
            messages,
            r.cmds_per_write
        );
    }
}

/// What the hop measurement found on core 0.
struct HopLoad {
    local: Histogram<u64>,
    remote: Histogram<u64>,
    requests_sent: u64,
    messages_sent: u64,
}

/// Core 0's single task: GETs alternating between a key it owns and a
/// key core 1 owns, one at a time, until the window ends. The other core
/// returns at once and goes on serving core 0's requests.
async fn hop_load(client: CoreClient, window: Window, start: Start) -> Option<HopLoad> {
    if client.core() != 0 {
        return None;
    }
    let (mut local, mut remote) = (Vec::new(), Vec::new());
    for n in 0..KEYS {
        let key = format!("key:{n}");
        match client.owner_of_key(key.as_str()) {
            Some(0) if local.len() < HOP_KEYS => local.push(key),
            Some(1) if remote.len() < HOP_KEYS => remote.push(key),
            _ => {}
        }
        if local.len() == HOP_KEYS && remote.len() == HOP_KEYS {
            break;
        }
    }
    assert_eq!(
        (local.len(), remote.len()),
        (HOP_KEYS, HOP_KEYS),
        "keys owned by core 0 and core 1"
    );
    let value = value32();
    let sets = local
        .iter()
        .chain(&remote)
        .map(|k| cmd("SET").arg(k.as_str()).arg(value.as_str()));
    client.pipeline(sets).await.expect("SET the keys");
    let (start, end) = window.fix(&start);
    let (mut local_hist, mut remote_hist) = (new_hist(), new_hist());
    let mut hops0 = None;
    let mut i = 0;
    loop {
        let sent = Instant::now();
        if sent >= end {
            break;
        }
        if sent >= start && hops0.is_none() {
            hops0 = Some(client.hop_stats());
        }
        let (key, hist) = if i % 2 == 0 {
            (&local[i / 2 % HOP_KEYS], &mut local_hist)
        } else {
            (&remote[i / 2 % HOP_KEYS], &mut remote_hist)
        };
        let reply: Option<Vec<u8>> = client.command(["GET", key.as_str()]).await.expect("GET");
        assert_eq!(reply.map(|v| v.len()), Some(32), "GET {key}");
        let done = Instant::now();
        if sent >= start && done <= end {
            hist.record((done - sent).as_nanos() as u64)
                .expect("record");
        }
        i += 1;
    }
    let hops0 = hops0.unwrap_or_else(|| client.hop_stats());
    let hops1 = client.hop_stats();
    Some(HopLoad {
        local: local_hist,
        remote: remote_hist,
        requests_sent: hops1.requests_sent - hops0.requests_sent,
        messages_sent: hops1.messages_sent - hops0.messages_sent,
    })
}

fn hop_cost(seeds: &[SocketAddr], window: Window) -> HopLoad {
    let start: Start = Arc::default();
    let handle = ClusterExecutor::new(seeds.to_vec())
        .expect("config")
        .cores(2)
        .expect("cores")
        .ownership(Ownership::Sharded)
        .spawn(move |client| hop_load(client, window, start.clone()))
        .expect("spawn the executor");
    let mut results = handle.join().into_iter();
    let core0 = results.next().expect("core 0");
    for (core, other) in results.enumerate() {
        other.unwrap_or_else(|e| panic!("core {}: {e}", core + 1));
    }
    core0
        .unwrap_or_else(|e| panic!("core 0: {e}"))
        .expect("core 0 measures")
}

/// A throughput row's runtime: cores and ownership.
const RUNTIMES: [(usize, Ownership, &str); 3] = [
    (1, Ownership::Sharded, "1-sharded"),
    (2, Ownership::Sharded, "2-sharded"),
    (2, Ownership::EveryCore, "2-every-core"),
];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--test") || !args.iter().any(|a| a == "--bench");
    let secs: f64 = std::env::var("REDCORE_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 0.2 } else { 3.0 });
    let only = std::env::var("REDCORE_BENCH_LOAD")
        .ok()
        .filter(|v| !v.is_empty());
    if let Some(only) = &only {
        assert!(
            only == "hop" || RUNTIMES.iter().any(|r| r.2 == only),
            "REDCORE_BENCH_LOAD={only}: want 1-sharded, 2-sharded, 2-every-core or hop"
        );
    }
    let runs = |name: &str| only.as_deref().is_none_or(|o| o == name);
    let window = Window {
        warm_up: Duration::from_millis(if quick { 100 } else { 1_000 }),
        measure: Duration::from_secs_f64(secs),
    };
    let cluster = RedisCluster::start();
    let seeds = cluster.seed_addrs();
    let online = std::thread::available_parallelism().map_or(0, |n| n.get());

    let rows: Vec<Row> = RUNTIMES
        .iter()
        .filter(|r| runs(r.2))
        .map(|&(cores, ownership, _)| throughput_row(&seeds, cores, ownership, window))
        .collect();
    if !rows.is_empty() {
        println!(
            "\nSET/GET 1:1, 32-byte values, 100,000 keys, {TASKS} tasks per core sending \
             single commands, {secs} s measured after a {:?} warm-up, cluster of 3 masters + \
             3 replicas, {online} CPUs online (shared with the 6 redis-servers)\n",
            window.warm_up
        );
        print_rows(&rows);
    }
    if let [one, sharded, every] = &rows[..] {
        println!(
            "\n2 cores sharded = {:.2}x the ops/s of 1 core at {:.2}x its CPU/op; \
             every-core = {:.2}x sharded at {:.2}x its CPU/op. Sharded, {:.2} commands per \
             operation crossed cores (0.5 expected with 3 masters on 2 cores), {} channel \
             messages per crossed command (requests and replies: 2 would be no batching).",
            sharded.ops_per_sec / one.ops_per_sec,
            sharded.cpu_us_per_op / one.cpu_us_per_op,
            every.ops_per_sec / sharded.ops_per_sec,
            every.cpu_us_per_op / sharded.cpu_us_per_op,
            sharded.crossed_per_op,
            sharded
                .messages_per_crossed
                .map_or_else(|| "no".to_owned(), |m| format!("{m:.3}")),
        );
        if online < 8 {
            println!(
                "With {online} CPUs for the client's cores and the 6 redis-servers together, \
                 ops/s shows how they share the machine, not how the runtime scales: read \
                 CPU/op and the crossings."
            );
        }
    }
    if !runs("hop") {
        return;
    }

    let hop = hop_cost(&seeds, window);
    let us = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "\nOne task on core 0 of 2 sharded cores, GETs alternating between keys core 0 owns \
         and keys core 1 owns, one at a time, {secs} s\n"
    );
    println!("| GET | count | p50 µs | p99 µs |");
    println!("|---|---:|---:|---:|");
    for (name, h) in [
        ("local (core 0's connection)", &hop.local),
        ("remote (through core 1)", &hop.remote),
    ] {
        println!(
            "| {name} | {} | {:.1} | {:.1} |",
            h.len(),
            us(h, 0.5),
            us(h, 0.99)
        );
    }
    println!(
        "| difference (the hop) | | {:+.1} | {:+.1} |",
        us(&hop.remote, 0.5) - us(&hop.local, 0.5),
        us(&hop.remote, 0.99) - us(&hop.local, 0.99),
    );
    println!(
        "\nA cross-core hop adds {:.1} µs at p50 and {:.1} µs at p99 to a GET; core 0 sent {} \
         requests in {} channel messages (one at a time: nothing to batch).",
        us(&hop.remote, 0.5) - us(&hop.local, 0.5),
        us(&hop.remote, 0.99) - us(&hop.local, 0.99),
        hop.requests_sent,
        hop.messages_sent,
    );
    if quick {
        println!("Quick mode: windows too short for the numbers to mean anything.");
    }
}
