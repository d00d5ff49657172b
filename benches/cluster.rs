//! One core, one `Cluster` client: redcore against
//! `redis-benchmark --cluster`, in the same run, on the same freshly started
//! cluster (3 masters + 3 replicas on loopback, from the test harness).
//!
//! `cargo bench --bench cluster` prints a table: ops/s, p50/p99 latency,
//! client CPU per operation (getrusage: this process for redcore, the
//! finished child for redis-benchmark) and, for redcore, commands per
//! write to a socket, summed over the master connections. Loads are SET/GET
//! 1:1 with 32-byte values over 100,000 random keys `key:{n}` (spread over
//! all slots, hence over the three masters):
//!
//! - redcore, 64 tasks each sending single commands (auto-pipelined per
//!   node; one command in 8 is timed, as in the connection bench),
//!   against `redis-benchmark --cluster -c 64 -P 1`;
//! - redcore, 4 tasks each sending explicit pipelines of 64, against
//!   `redis-benchmark --cluster -c 4 -P 64`: once with random keys (each
//!   pipeline is split over the three masters, and returns when the
//!   slowest has answered), and once with each task's keys in one master's
//!   slot (a hash tag per task), as redis-benchmark's clients do;
//! - the glommio task floor: 64 tasks, one per command as in the 64-task
//!   load, each appending a prepared SET or GET for a master chosen at
//!   random to that master's bare glommio `TcpStream`, one driver task per
//!   connection writing, reading and waking the tasks (`task_floor` in
//!   `benches/common`): what giving each command a glommio task costs,
//!   without redcore;
//! - the glommio floor: 64 requests outstanding from a client that costs
//!   only its socket calls — one bare glommio `TcpStream` per master, each
//!   writing a prepared batch of its share (22+21+21) of SET/GET on its own
//!   master's keys and reading the replies, in a loop. It shows what these
//!   servers, on this machine, give 64 outstanding requests at best
//!   (lockstep batches are the cheapest shape for a server: one read and
//!   one write per 21 commands).
//!
//! The last lines check the targets: 64 tasks reach at least 4x the ops/s
//! of `-c 64 -P 1` (and say how far the floors get); pipelines of 64 reach
//! at least 0.9x the ops/s of `-c 4 -P 64` with no more client CPU per
//! operation.
//!
//! redis-benchmark (7.0.15) in cluster mode differs from the redcore loads
//! in ways worth knowing when reading the table:
//!
//! - it runs one thread per master (3) unless `--threads` says otherwise,
//!   so it is not confined to one core as the redcore executor is; its CPU
//!   per operation counts all its threads;
//! - a threaded run stops only on its 250 ms throughput timer, so each
//!   test's time is rounded up to whole 250 ms ticks and its rps is low by
//!   up to one tick. Each redis-benchmark test therefore runs `ops / 2`
//!   requests or, if that lasts fewer than 20 ticks, as many as make it
//!   last 20 (error <= 5%; the runs before serve as warm-up), and the
//!   output says how many ticks each test lasted;
//! - each of its clients is bound to one master and puts that master's
//!   hash tag into every key (`key:{06S}:000000012345`), so `-r 100000`
//!   gives 100,000 keys per master; `-c 4` spreads 4 connections over 3
//!   masters (2-1-1);
//! - its latency for a pipelined request counts from the write of the
//!   whole pipeline, as the redcore pipeline rows do.
//!
//! Environment: `REDCORE_BENCH_OPS` (operations per row, default 400000),
//! `REDCORE_BENCH_LOAD=tasks|pipelines|per-master|task-floor|floor` (run that one
//! load alone, without redis-benchmark, for profiling), `REDCORE_BENCH_SPIN_US` (the
//! executor spins that long before parking). With `--test` (as
//! `cargo bench -- --test` passes), or when run without `--bench` (as
//! `cargo test --benches` runs it), it runs a tiny load only, to check that
//! it works.

mod common;

use common::{
    KEYS, Row, bare_stream, cpu_time, prepared_batch, prepared_rounds, print_table,
    redcore_executor, run_pipelines, run_redis_benchmark, run_tasks, task_floor,
};

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use redcore::cluster::{Cluster, NodeAddr};
use redcore_test_support::RedisCluster;

/// Tasks sending single commands.
const TASKS: usize = 64;
/// Tasks sending explicit pipelines, and their depth.
const PIPELINE_TASKS: usize = 4;
const DEPTH: usize = 64;

/// A hash tag for each master, in the order of `master_connections`.
fn tag_per_master(cluster: &Cluster) -> Vec<String> {
    let info = cluster.info();
    cluster
        .master_connections()
        .iter()
        .map(|(addr, _)| {
            let node = info
                .nodes
                .iter()
                .find(|n| n.addr == *addr)
                .expect("master in info");
            (0..)
                .map(|i| format!("m{i}"))
                .find(|tag| {
                    let slot = redcore::slot::key_slot(tag.as_bytes());
                    node.slots.iter().any(|&(a, b)| (a..=b).contains(&slot))
                })
                .expect("a tag")
        })
        .collect()
}

fn new_hist() -> Histogram<u64> {
    Histogram::<u64>::new(3).expect("histogram")
}

/// Socket writes so far, summed over the connections to the masters.
fn master_writes(cluster: &Cluster) -> u64 {
    cluster
        .master_connections()
        .iter()
        .map(|(_, conn)| conn.stats().writes)
        .sum()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Load {
    Tasks,
    Pipelines,
    PipelinesPerMaster,
    Floor,
    TaskFloor,
}

/// What a client that costs nothing but its socket calls gets from these
/// servers with [`TASKS`] requests outstanding: one bare glommio
/// `TcpStream` per master, each writing a prepared batch of its share of
/// the requests (SET/GET on keys in that master's slots, as
/// `key:{tag}:n`) and reading the replies, in a loop, the masters side by
/// side. No routing, no task per command, no reply values: the bound the
/// 64-task load is compared with.
async fn run_floor(masters: &[(NodeAddr, String)], ops: usize) -> (Histogram<u64>, Duration) {
    let rounds = ops / TASKS;
    let start = Instant::now();
    let mut handles = Vec::new();
    for (m, (addr, tag)) in masters.iter().enumerate() {
        let depth = share(m, masters.len());
        let (addr, tag) = (addr.clone(), tag.clone());
        handles.push(glommio::spawn_local(async move {
            let mut stream = bare_stream(&addr.host, addr.port).await;
            let batch = prepared_batch(depth, || {
                format!("key:{{{tag}}}:{}", fastrand::u32(0..KEYS))
            });
            let mut hist = new_hist();
            prepared_rounds(&mut stream, &batch, depth, rounds, &mut hist).await;
            hist
        }));
    }
    let mut hist = new_hist();
    for h in handles {
        hist.add(h.await).expect("merge");
    }
    (hist, start.elapsed())
}

/// The glommio task floor ([`task_floor`]) over a bare connection per
/// master: [`TASKS`] tasks, one per command, each command on a key of a
/// master chosen at random (the shape of the 64-task load, without
/// redcore). Returns the floor and its commands per write.
async fn run_task_floor(
    masters: &[(NodeAddr, String)],
    ops: usize,
) -> (Histogram<u64>, Duration, f64) {
    let mut conns = Vec::new();
    for (addr, tag) in masters {
        let stream = bare_stream(&addr.host, addr.port).await;
        conns.push((stream, format!("key:{{{tag}}}:")));
    }
    let floor = task_floor(conns, TASKS, ops).await;
    let per_write = floor.done as f64 / floor.writes.max(1) as f64;
    (floor.hist, floor.elapsed, per_write)
}

fn redcore_rows(seeds: Vec<SocketAddr>, ops: usize, only: Option<Load>) -> Vec<Row> {
    redcore_executor()
        .spawn(move || async move {
            let cluster = Cluster::connect(seeds).await.expect("connect");
            // Warm up the servers, every master connection and the allocator,
            // with both shapes of load.
            run_tasks(&cluster, TASKS, ops / 4).await;
            run_pipelines(&cluster, PIPELINE_TASKS, DEPTH, ops / 4, &[]).await;
            let tags = tag_per_master(&cluster);
            let info = cluster.info();
            assert_eq!(info.slots_covered, 16384, "cluster not whole: {info:?}");
            let floor_masters: Vec<(NodeAddr, String)> = cluster
                .master_connections()
                .into_iter()
                .map(|(addr, _)| addr)
                .zip(tags.iter().cloned())
                .collect();
            let masters = floor_masters.len();
            assert_eq!(masters, 3, "master connections");
            let loads = [
                (Load::Tasks, format!("{TASKS} tasks, single commands")),
                (
                    Load::Pipelines,
                    format!("{PIPELINE_TASKS} tasks, pipelines of {DEPTH}, random keys"),
                ),
                (
                    Load::PipelinesPerMaster,
                    format!(
                        "{PIPELINE_TASKS} tasks, pipelines of {DEPTH}, one master's keys per task"
                    ),
                ),
                (
                    Load::TaskFloor,
                    format!(
                        "{TASKS} tasks, prepared single commands, a bare connection per master"
                    ),
                ),
                (
                    Load::Floor,
                    format!(
                        "{TASKS} outstanding: a bare connection per master, \
                         prepared batches of {}",
                        shares(masters)
                    ),
                ),
            ];
            let mut rows = Vec::new();
            for (load, name) in loads {
                if only.is_some_and(|o| o != load) {
                    continue;
                }
                let cpu0 = cpu_time(libc::RUSAGE_SELF);
                let writes0 = master_writes(&cluster);
                // The floors write on their own sockets, so they say how
                // many commands went per write.
                let ((hist, elapsed), floor_per_write) = match load {
                    Load::Tasks => (run_tasks(&cluster, TASKS, ops).await, None),
                    Load::Pipelines => (
                        run_pipelines(&cluster, PIPELINE_TASKS, DEPTH, ops, &[]).await,
                        None,
                    ),
                    Load::PipelinesPerMaster => (
                        run_pipelines(&cluster, PIPELINE_TASKS, DEPTH, ops, &tags).await,
                        None,
                    ),
                    Load::Floor => (
                        run_floor(&floor_masters, ops).await,
                        Some(TASKS as f64 / masters as f64),
                    ),
                    Load::TaskFloor => {
                        let (hist, elapsed, per_write) = run_task_floor(&floor_masters, ops).await;
                        ((hist, elapsed), Some(per_write))
                    }
                };
                let cpu = cpu_time(libc::RUSAGE_SELF) - cpu0;
                let writes = (master_writes(&cluster) - writes0).max(1) as f64;
                // Single-command tasks (redcore's and the task floor's)
                // time one command in 8; pipelines and the floor record
                // every command.
                let done = match load {
                    Load::Tasks | Load::TaskFloor => ops,
                    _ => hist.len() as usize,
                } as f64;
                let client = match load {
                    Load::Floor => "glommio floor",
                    Load::TaskFloor => "glommio task floor",
                    _ => "redcore",
                };
                let per_write = floor_per_write.unwrap_or(done / writes);
                rows.push(Row::measured(
                    client, name, done, elapsed, &hist, cpu, per_write,
                ));
            }
            rows
        })
        .expect("executor")
        .join()
        .expect("join")
}

/// How many of the [`TASKS`] requests [`run_floor`] gives master `m` of
/// `masters`: 22, 21, 21 for three.
fn share(m: usize, masters: usize) -> usize {
    TASKS / masters + usize::from(m < TASKS % masters)
}

/// The shares of all masters: "22+21+21".
fn shares(masters: usize) -> String {
    (0..masters)
        .map(|m| share(m, masters).to_string())
        .collect::<Vec<_>>()
        .join("+")
}

/// redis-benchmark's clock: in `--cluster` mode it runs one thread per
/// master, and a threaded run notices that it is done only on its 250 ms
/// throughput timer (`showThroughput`), so each test's elapsed time is
/// rounded up to a whole number of these ticks and its rps is low by up to
/// one tick.
const RB_TICK_SECS: f64 = 0.25;
/// Ticks each redis-benchmark test must last (error <= 1/20 = 5%).
const RB_MIN_TICKS: f64 = 20.0;

/// Runs `redis-benchmark --cluster -c clients -P depth` for SET and GET; the
/// row averages the two tests. Each test runs `ops / 2` requests or, when
/// that takes fewer than [`RB_MIN_TICKS`] ticks of its 250 ms clock, as many
/// more as make it last that long (the shorter runs before are its
/// warm-up). Returns the row, the requests per test and the ticks the
/// shorter test lasted.
fn redis_benchmark_row(
    port: u16,
    clients: usize,
    depth: usize,
    ops: usize,
    quick: bool,
) -> (Row, usize, f64) {
    let mut requests = ops / 2;
    let (lines, cpu, ticks) = loop {
        let (lines, cpu) = run_redis_benchmark(port, true, clients, depth, requests);
        let ticks = lines
            .iter()
            .map(|l| (requests as f64 / l.rps / RB_TICK_SECS).round())
            .fold(f64::INFINITY, f64::min);
        if quick || ticks >= RB_MIN_TICKS {
            break (lines, cpu, ticks);
        }
        // The rps measured is a lower bound, so ask for 50% more than it says.
        let scale = (RB_MIN_TICKS / ticks.max(1.0) * 1.5).max(2.0);
        requests = (requests as f64 * scale) as usize;
    };
    let row = Row::redis_benchmark(
        format!("--cluster -c {clients} -P {depth}"),
        &lines,
        requests,
        cpu,
    );
    (row, requests, ticks)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--test") || !args.iter().any(|a| a == "--bench");
    let ops: usize = std::env::var("REDCORE_BENCH_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 2_048 } else { 400_000 });
    let only = match std::env::var("REDCORE_BENCH_LOAD").ok().as_deref() {
        None | Some("") => None,
        Some("tasks") => Some(Load::Tasks),
        Some("pipelines") => Some(Load::Pipelines),
        Some("per-master") => Some(Load::PipelinesPerMaster),
        Some("floor") => Some(Load::Floor),
        Some("task-floor") => Some(Load::TaskFloor),
        Some(other) => panic!(
            "REDCORE_BENCH_LOAD={other}: want tasks, pipelines, per-master, task-floor or floor"
        ),
    };
    let cluster = RedisCluster::start();
    let port = cluster.masters()[0].port();
    let mut rows = redcore_rows(cluster.seed_addrs(), ops, only);
    let mut rb_requests = Vec::new();
    if only.is_none() {
        // Warm up the servers for redis-benchmark's keys (not measured).
        run_redis_benchmark(port, true, TASKS, 1, ops / 8);
        for (clients, depth) in [(TASKS, 1), (PIPELINE_TASKS, DEPTH)] {
            let (row, requests, ticks) = redis_benchmark_row(port, clients, depth, ops, quick);
            let bound = if ticks > 1.0 {
                format!("true rps at most {:.2}x that shown", ticks / (ticks - 1.0))
            } else {
                "true rps unbounded".to_owned()
            };
            rb_requests.push(format!(
                "`-c {clients} -P {depth}` {requests} requests per test, \
                 {ticks:.0} ticks, {bound}"
            ));
            rows.push(row);
        }
    }
    println!(
        "\nSET/GET 1:1, 32-byte values, 100,000 keys, {ops} operations per row, \
         one core, cluster of 3 masters + 3 replicas\n"
    );
    print_table(&rows);
    if !rb_requests.is_empty() {
        println!(
            "\nredis-benchmark --cluster times each test in 250 ms ticks: {}.",
            rb_requests.join("; "),
        );
    }
    if quick {
        println!("Quick mode: loads too small for the targets to mean anything.");
    } else if let [
        tasks,
        pipelines,
        per_master,
        task_floor,
        floor,
        rb_single,
        rb_pipelined,
    ] = &rows[..]
    {
        let single = tasks.ops_per_sec / rb_single.ops_per_sec;
        let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
        println!(
            "\nTargets: {TASKS} tasks = {single:.2}x `-c {TASKS} -P 1` ops/s (want >= 4x: {}); \
             the glommio task floor reaches {:.2}x, the glommio floor {:.2}x",
            verdict(single >= 4.0),
            task_floor.ops_per_sec / rb_single.ops_per_sec,
            floor.ops_per_sec / rb_single.ops_per_sec,
        );
        for row in [pipelines, per_master] {
            let piped = row.ops_per_sec / rb_pipelined.ops_per_sec;
            let cpu = row.cpu_us_per_op / rb_pipelined.cpu_us_per_op;
            println!(
                "{}: {piped:.2}x `-c {PIPELINE_TASKS} -P {DEPTH}` ops/s (want >= 0.9x: {}) \
                 at {cpu:.2}x its CPU/op (want <= 1x: {})",
                row.load,
                verdict(piped >= 0.9),
                verdict(cpu <= 1.0),
            );
        }
    }
}
