//! glommio sockets against the io_uring transport, in one run, on the same
//! servers, on one core: one connection to a standalone `redis-server`, and
//! the six connections of a 3+3 cluster with every-core ownership on a
//! single-core runtime (one connection per node).
//!
//! `cargo bench --bench transport` prints a markdown table: ops/s, p50/p99
//! latency, client CPU per operation (getrusage of the whole process over
//! the measured window, so io_uring worker threads would count too) and
//! commands per write. Loads are SET/GET 1:1 with 32-byte values over
//! 100,000 keys: 1, 64 and 256 tasks sending single commands
//! (auto-pipelined), and 64 tasks sending pipelines of 64. The two
//! transports run each load back to back, alternating which goes first,
//! to share the machine's noise.
//!
//! Environment: `REDCORE_BENCH_OPS` (operations per row, default 200000),
//! `REDCORE_BENCH_ONLY=<transport>:<conn|cluster>:<load>` (run that one row
//! alone, no warm-up beyond a short one: for `perf stat`/`strace -c`, e.g.
//! `io_uring:conn:64`; loads are `1`, `64`, `256` and `p64`). With `--test`
//! it runs a tiny load only, to check that it works.

mod common;

use common::{KEYS, Row, cpu_time, set_or_get, value32};

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use redcore::config::TransportKind;
use redcore::runtime::Ownership;
use redcore::{ClusterConfig, ClusterExecutor, Commands, Connection, cmd};
use redcore_test_support::{RedisCluster, RedisServer};

/// Counts the system calls this thread makes: a `perf_event_open` counter
/// on the `raw_syscalls:sys_enter` tracepoint (needs root or a permissive
/// `kernel.perf_event_paranoid`; `None` otherwise). The executor thread
/// runs every load, so its count over the measured window is the client's.
struct SyscallCounter(std::os::fd::OwnedFd);

impl SyscallCounter {
    fn open() -> Option<SyscallCounter> {
        use std::os::fd::FromRawFd;
        let id: u64 = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
            .iter()
            .find_map(|root| {
                std::fs::read_to_string(format!("{root}/events/raw_syscalls/sys_enter/id")).ok()
            })?
            .trim()
            .parse()
            .ok()?;
        // struct perf_event_attr, first 128 bytes: type, size, config; all
        // flags clear (enabled, counting kernel and user).
        let mut attr = [0u64; 16];
        attr[0] = 2 | (128u64 << 32); // PERF_TYPE_TRACEPOINT, size
        attr[1] = id;
        // SAFETY: the attribute buffer is 128 bytes as its size says; the
        // descriptor returned is ours.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_perf_event_open,
                attr.as_ptr(),
                0,
                -1,
                -1,
                8, // PERF_FLAG_FD_CLOEXEC
            )
        };
        if fd < 0 {
            return None;
        }
        // SAFETY: a new descriptor nobody else owns.
        Some(SyscallCounter(unsafe {
            std::os::fd::OwnedFd::from_raw_fd(fd as i32)
        }))
    }

    fn read(&self) -> u64 {
        use std::os::fd::AsRawFd;
        let mut n = 0u64;
        // SAFETY: reads 8 bytes into `n`.
        unsafe { libc::read(self.0.as_raw_fd(), (&mut n as *mut u64).cast(), 8) };
        n
    }
}

/// A row of this bench's table: the common columns and system calls per
/// 1,000 commands.
struct TRow {
    row: Row,
    syscalls_per_1k: Option<f64>,
}

fn print_rows(rows: &[TRow]) {
    println!(
        "| transport | load | ops/s | p50 µs | p99 µs | client CPU µs/op | syscalls/1k cmds | commands/write |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for TRow {
        row: r,
        syscalls_per_1k,
    } in rows
    {
        let per_write = r
            .cmds_per_write
            .map_or_else(|| "-".to_owned(), |c| format!("{c:.1}"));
        let sys = syscalls_per_1k.map_or_else(|| "-".to_owned(), |c| format!("{c:.0}"));
        println!(
            "| {} | {} | {:.0} | {:.1} | {:.1} | {:.3} | {} | {} |",
            r.client, r.load, r.ops_per_sec, r.p50_us, r.p99_us, r.cpu_us_per_op, sys, per_write
        );
    }
}

/// `tasks` tasks, each sending single commands (SET and GET alternating)
/// or pipelines of `depth` (with one hash tag, so they stay on one node),
/// until `ops` operations are done in all. Every command is timed.
async fn run_load<C: Commands + Clone + 'static>(
    client: &C,
    tasks: usize,
    depth: usize,
    ops: usize,
) -> (Histogram<u64>, Duration) {
    common::run_load(tasks, ops, |t, load| {
        let client = client.clone();
        async move {
            let value = value32();
            let mut n = t;
            let mut cmds = Vec::with_capacity(depth);
            while load.take(depth.max(1)) {
                let sent = Instant::now();
                if depth == 0 {
                    let key = format!("key:{}", fastrand::u32(0..KEYS));
                    set_or_get(&client, &key, &value, n).await;
                    n += 1;
                    load.record(sent.elapsed().as_nanos() as u64, 1);
                } else {
                    cmds.clear();
                    let tag = fastrand::u32(0..KEYS);
                    for i in 0..depth {
                        let key = format!("{{{tag}}}:{}", fastrand::u32(0..KEYS));
                        cmds.push(if i % 2 == 0 {
                            cmd("SET").arg(key).arg(value.as_str())
                        } else {
                            cmd("GET").arg(key)
                        });
                    }
                    let replies = client.pipeline(&cmds).await.expect("pipeline");
                    assert_eq!(replies.len(), depth);
                    load.record(sent.elapsed().as_nanos() as u64, depth as u64);
                }
            }
        }
    })
    .await
}

/// The loads: name, tasks, pipeline depth (0: single commands).
const LOADS: [(&str, usize, usize); 4] =
    [("1", 1, 0), ("64", 64, 0), ("256", 256, 0), ("p64", 64, 64)];

fn load_name(tasks: usize, depth: usize) -> String {
    if depth == 0 {
        format!("{tasks} task{}", if tasks == 1 { "" } else { "s" })
    } else {
        format!("{tasks} tasks x pipelines of {depth}")
    }
}

fn transport_name(t: TransportKind) -> &'static str {
    match t {
        TransportKind::IoUring => "io_uring",
        _ => "glommio",
    }
}

/// Runs `loads` on `client`, each `ops` operations, as rows named after
/// `transport` and `topology`; `writes` counts the client's socket writes
/// when it can.
async fn measure<C: Commands + Clone + 'static>(
    client: &C,
    writes: impl Fn() -> Option<u64>,
    transport: TransportKind,
    topology: &str,
    loads: &[(&str, usize, usize)],
    ops: usize,
) -> Vec<TRow> {
    let mut rows = Vec::new();
    let counter = SyscallCounter::open();
    for &(_, tasks, depth) in loads {
        let w0 = writes();
        let sys0 = counter.as_ref().map(SyscallCounter::read);
        let cpu0 = cpu_time(libc::RUSAGE_SELF);
        let (hist, elapsed) = run_load(client, tasks, depth, ops).await;
        let cpu = cpu_time(libc::RUSAGE_SELF) - cpu0;
        let sys = counter.as_ref().map(SyscallCounter::read);
        let per_write = w0
            .zip(writes())
            .map(|(w0, w1)| ops as f64 / (w1 - w0).max(1) as f64);
        let mut row = Row::measured(
            transport_name(transport),
            format!("{topology}, {}", load_name(tasks, depth)),
            ops as f64,
            elapsed,
            &hist,
            cpu,
            per_write.unwrap_or_default(),
        );
        row.cmds_per_write = per_write;
        rows.push(TRow {
            row,
            syscalls_per_1k: sys0
                .zip(sys)
                .map(|(a, b)| (b - a) as f64 * 1000.0 / ops as f64),
        });
    }
    rows
}

fn conn_rows(
    port: u16,
    transport: TransportKind,
    loads: Vec<(&'static str, usize, usize)>,
    ops: usize,
    warmup: usize,
) -> Vec<TRow> {
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(64 << 10)
        .spawn(move || async move {
            let config = redcore::ConnectionConfig::builder()
                .port(port)
                .transport(transport)
                .build()
                .unwrap();
            let conn = Connection::connect(config).await.expect("connect");
            assert_eq!(conn.transport(), transport, "the transport asked for");
            run_load(&conn, 64, 0, warmup).await;
            let writes = || Some(conn.stats().writes);
            measure(&conn, writes, transport, "1 conn", &loads, ops).await
        })
        .expect("executor")
        .join()
        .expect("join")
}

fn cluster_rows(
    seeds: Vec<std::net::SocketAddr>,
    transport: TransportKind,
    loads: Vec<(&'static str, usize, usize)>,
    ops: usize,
    warmup: usize,
) -> Vec<TRow> {
    let config = ClusterConfig::builder()
        .seeds(seeds)
        .connection(|c| c.transport(transport))
        .build()
        .unwrap();
    let handle = ClusterExecutor::new(config)
        .unwrap()
        .cores(1)
        .unwrap()
        .ownership(Ownership::EveryCore)
        .spawn(move |client| {
            let loads = loads.clone();
            async move {
                run_load(&client, 64, 0, warmup).await;
                let rows =
                    measure(&client, || None, transport, "cluster 6 conns", &loads, ops).await;
                rows.into_iter()
                    .map(
                        |TRow {
                             row: r,
                             syscalls_per_1k,
                         }| {
                            (
                                (r.client, r.load, r.ops_per_sec),
                                (r.p50_us, r.p99_us, r.cpu_us_per_op, syscalls_per_1k),
                            )
                        },
                    )
                    .collect::<Vec<_>>()
            }
        })
        .expect("runtime");
    let mut out = Vec::new();
    for core in handle.join() {
        for ((client, load, ops_per_sec), (p50_us, p99_us, cpu_us_per_op, syscalls_per_1k)) in
            core.expect("core")
        {
            out.push(TRow {
                row: Row {
                    client,
                    load,
                    ops_per_sec,
                    p50_us,
                    p99_us,
                    cpu_us_per_op,
                    cmds_per_write: None,
                },
                syscalls_per_1k,
            });
        }
    }
    out
}

fn main() {
    let quick = std::env::args().any(|a| a == "--test");
    let ops: usize = std::env::var("REDCORE_BENCH_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 2_000 } else { 200_000 });
    let only = std::env::var("REDCORE_BENCH_ONLY").ok();
    let server = RedisServer::start();
    let port = server.port();
    let transports = [TransportKind::Glommio, TransportKind::IoUring];

    if let Some(only) = only {
        // One row alone, for perf stat / strace -c.
        let parts: Vec<&str> = only.split(':').collect();
        let [t, topo, load] = parts[..] else {
            panic!("REDCORE_BENCH_ONLY=<transport>:<conn|cluster>:<load>");
        };
        let transport = TransportKind::parse(t).expect("a transport");
        let load = *LOADS
            .iter()
            .find(|l| l.0 == load)
            .expect("a load: 1, 64, 256 or p64");
        let rows = if topo == "cluster" {
            let cluster = RedisCluster::start();
            cluster_rows(cluster.seed_addrs(), transport, vec![load], ops, 2_000)
        } else {
            conn_rows(port, transport, vec![load], ops, 2_000)
        };
        print_rows(&rows);
        return;
    }

    let mut rows = Vec::new();
    for (i, load) in LOADS.iter().enumerate() {
        let mut order = transports;
        if i % 2 == 1 {
            order.reverse();
        }
        for t in order {
            rows.extend(conn_rows(port, t, vec![*load], ops, ops / 4));
        }
    }
    let cluster = RedisCluster::start();
    for (i, load) in LOADS.iter().enumerate() {
        let mut order = transports;
        if i % 2 == 1 {
            order.reverse();
        }
        for t in order {
            rows.extend(cluster_rows(
                cluster.seed_addrs(),
                t,
                vec![*load],
                ops,
                ops / 4,
            ));
        }
    }
    println!("\nSET/GET 1:1, 32-byte values, 100,000 keys, {ops} operations per row, one core\n");
    print_rows(&rows);
}
