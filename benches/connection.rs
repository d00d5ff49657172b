//! One core, one connection: redcore, two bare glommio loops (the floor of
//! any client on glommio sockets, with prepared batches and with one task
//! per command) and `redis-benchmark`, in the same run, on the same freshly
//! started `redis-server`.
//!
//! `cargo bench --bench connection` prints a table: ops/s, p50/p99 latency,
//! client CPU per operation (getrusage: this process for redcore, the
//! finished child for redis-benchmark) and, for redcore, commands per
//! write to the socket. Loads are SET/GET 1:1 with 32-byte
//! values over 100,000 random keys. redcore runs N tasks each sending
//! single commands (auto-pipelined), and one task sending explicit
//! pipelines of 64; redis-benchmark runs `-c 1 -P N`, whose pipeline depth
//! is the same number of requests outstanding. Tasks time one command in 8
//! (one SET/GET pair in every 8 pairs), so that the benchmark's own clock reads do not
//! weigh on every command's CPU; redis-benchmark reads the clock once per
//! pipeline.
//!
//! Environment: `REDCORE_BENCH_OPS` (operations per row, default 400000),
//! `REDCORE_BENCH_TASKS` (run that one redcore load alone, for profiling:
//! a number of tasks, `0` for the pipelines, `floor` for the floor rows),
//! `REDCORE_BENCH_SPIN_US` (executor spins that long before parking).
//! With `--test` (as `cargo bench -- --test` passes), it runs a tiny load
//! only, to check that it works.

mod common;

use common::{
    KEYS, Row, bare_stream, cpu_time, prepared_batch, prepared_rounds, print_table,
    redcore_executor, run_pipelines, run_redis_benchmark, run_tasks, task_floor,
};

use std::time::Instant;

use hdrhistogram::Histogram;
use redcore::Connection;
use redcore_test_support::RedisServer;

/// The floor of any client on glommio's sockets: one task writes a
/// prepared batch of `depth` SET/GET commands over a bare glommio
/// `TcpStream`, reads until the `depth` replies are in (counting them with
/// redcore's decoder), and starts again, as `redis-benchmark -P depth` does.
/// No auto-pipelining, no reply slots, no command building.
fn glommio_floor_rows(port: u16, ops: usize) -> Vec<Row> {
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(64 << 10)
        .spawn(move || async move {
            let mut stream = bare_stream("127.0.0.1", port).await;
            let mut rows = Vec::new();
            for depth in [1usize, 16, 64, 256] {
                let batch = prepared_batch(depth, || format!("key:{}", fastrand::u32(0..KEYS)));
                let mut hist = Histogram::<u64>::new(3).unwrap();
                let rounds = ops / depth;
                let cpu0 = cpu_time(libc::RUSAGE_SELF);
                let start = Instant::now();
                prepared_rounds(&mut stream, &batch, depth, rounds, &mut hist).await;
                let elapsed = start.elapsed();
                let cpu = cpu_time(libc::RUSAGE_SELF) - cpu0;
                let done = (rounds * depth) as f64;
                rows.push(Row::measured(
                    "glommio floor",
                    format!("1 task, bare TcpStream, prepared batches of {depth}"),
                    done,
                    elapsed,
                    &hist,
                    cpu,
                    depth as f64,
                ));
            }
            rows
        })
        .expect("executor")
        .join()
        .expect("join")
}

/// The glommio task floor ([`task_floor`]) on one connection, for 16, 64
/// and 256 tasks.
fn task_floor_rows(port: u16, ops: usize) -> Vec<Row> {
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(64 << 10)
        .spawn(move || async move {
            let mut rows = Vec::new();
            for tasks in [16usize, 64, 256] {
                let stream = bare_stream("127.0.0.1", port).await;
                let cpu0 = cpu_time(libc::RUSAGE_SELF);
                let floor = task_floor(vec![(stream, "key:".to_owned())], tasks, ops).await;
                let cpu = cpu_time(libc::RUSAGE_SELF) - cpu0;
                rows.push(Row::measured(
                    "glommio task floor",
                    format!("{tasks} tasks, prepared single commands"),
                    floor.done as f64,
                    floor.elapsed,
                    &floor.hist,
                    cpu,
                    floor.done as f64 / floor.writes.max(1) as f64,
                ));
            }
            rows
        })
        .expect("executor")
        .join()
        .expect("join")
}

/// The redcore rows; `only` runs one load alone: that many tasks, or `0`
/// for the pipelines.
fn redcore_rows(url: String, ops: usize, only: Option<usize>) -> Vec<Row> {
    redcore_executor()
        .spawn(move || async move {
            let conn = Connection::connect(url.as_str()).await.expect("connect");
            let mut rows = Vec::new();
            // Warm up the server, the connection and the allocator.
            run_tasks(&conn, 64, ops / 4).await;
            let loads: Vec<(String, usize)> = [1, 16, 64, 256]
                .into_iter()
                .filter(|t| only.is_none_or(|o| o == *t))
                .map(|t| {
                    (
                        format!("{t} task{}, single commands", if t == 1 { "" } else { "s" }),
                        t,
                    )
                })
                .chain(
                    only.is_none_or(|o| o == 0)
                        .then(|| ("1 task, pipelines of 64".to_owned(), 0)),
                )
                .collect();
            for (name, tasks) in loads {
                let cpu0 = cpu_time(libc::RUSAGE_SELF);
                let stats0 = conn.stats();
                let (hist, elapsed) = if tasks > 0 {
                    run_tasks(&conn, tasks, ops).await
                } else {
                    run_pipelines(&conn, 1, 64, ops, &[]).await
                };
                let cpu = cpu_time(libc::RUSAGE_SELF) - cpu0;
                let stats = conn.stats();
                let writes = (stats.writes - stats0.writes).max(1) as f64;
                rows.push(Row::measured(
                    "redcore",
                    name,
                    ops as f64,
                    elapsed,
                    &hist,
                    cpu,
                    ops as f64 / writes,
                ));
            }
            rows
        })
        .expect("executor")
        .join()
        .expect("join")
}

/// Runs `redis-benchmark -c 1 -P depth` for SET and GET; the row averages
/// the two tests (each runs `ops / 2` requests).
fn redis_benchmark_row(port: u16, depth: usize, ops: usize) -> Row {
    let (lines, cpu) = run_redis_benchmark(port, false, 1, depth, ops / 2);
    Row::redis_benchmark(format!("-c 1 -P {depth}"), &lines, ops / 2, cpu)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--test");
    let ops: usize = std::env::var("REDCORE_BENCH_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 2_000 } else { 400_000 });
    let server = RedisServer::start();
    let url = format!("redis://127.0.0.1:{}", server.port());
    // REDCORE_BENCH_TASKS=64 runs that redcore load alone (for profiling),
    // 0 the pipelines of 64, and floor the two floors.
    let only = std::env::var("REDCORE_BENCH_TASKS").ok();
    let only_floor = only.as_deref() == Some("floor");
    let only_redcore = only.is_some() && !only_floor;
    let mut rows = if only_floor {
        Vec::new()
    } else {
        redcore_rows(url, ops, only.as_deref().and_then(|v| v.parse().ok()))
    };
    if !only_redcore {
        rows.extend(glommio_floor_rows(server.port(), ops));
        rows.extend(task_floor_rows(server.port(), ops));
    }
    let depths = if only.is_some() {
        vec![]
    } else {
        vec![1, 16, 64, 256]
    };
    for depth in depths {
        rows.push(redis_benchmark_row(server.port(), depth, ops));
    }
    println!(
        "\nSET/GET 1:1, 32-byte values, 100,000 keys, {ops} operations per row, one connection\n"
    );
    print_table(&rows);
}
