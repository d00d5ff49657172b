//! Fan-out `DBSIZE` on a freshly started 3+3 cluster (loopback, from the
//! test harness), one core, one `Cluster` client:
//!
//! - `command`: `cluster.command(["DBSIZE"])`, which its policy
//!   (`all_shards`, `agg_sum`) sends to every master side by side and sums;
//! - `sequential loop`: the hand-written loop over `master_connections()`,
//!   one master after the other;
//! - `joined loop`: the same loop with the three calls polled together.
//!
//! And the single-key path, which the fan-out must not slow: `GET` of one
//! key through `cluster.command` against the same `GET` on the key's
//! master connection directly.
//!
//! Criterion measures each; the last lines print the ratios from a run of
//! their own (the fastest of 5 rounds of 2000 calls each, the loads
//! taking turns: the machine is shared). `cargo bench --bench fanout`; with
//! `--test` (or under `cargo test --benches`) each runs once, no ratios.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use criterion::Criterion;
use glommio::{LocalExecutor, LocalExecutorBuilder, Placement};
use redcore::cluster::Cluster;
use redcore::{Commands, Connection};
use redcore_test_support::RedisCluster;

/// Polls every future until all are done; results in order.
async fn join_all<F: Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut futs: Vec<Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut outs: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, out) in futs.iter_mut().zip(outs.iter_mut()) {
            if out.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *out = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outs.into_iter().map(|o| o.expect("done")).collect()
}

struct Setup {
    client: Cluster,
    masters: Vec<Connection>,
    /// The master connection of [`KEY`].
    key_master: Connection,
    keys: i64,
}

const KEY: &str = "fanout:key";

async fn dbsize_command(s: &Setup) -> i64 {
    s.client.command(["DBSIZE"]).await.unwrap()
}

async fn dbsize_sequential(s: &Setup) -> i64 {
    let mut total = 0;
    for conn in &s.masters {
        total += conn.command::<i64>(["DBSIZE"]).await.unwrap();
    }
    total
}

async fn dbsize_joined(s: &Setup) -> i64 {
    join_all(
        s.masters
            .iter()
            .map(|c| c.command::<i64>(["DBSIZE"]))
            .collect(),
    )
    .await
    .into_iter()
    .map(|r| r.unwrap())
    .sum()
}

async fn get_through_cluster(s: &Setup) -> i64 {
    let v: Option<String> = s.client.command(["GET", KEY]).await.unwrap();
    v.map_or(0, |v| v.len() as i64)
}

async fn get_on_master(s: &Setup) -> i64 {
    let v: Option<String> = s.key_master.command(["GET", KEY]).await.unwrap();
    v.map_or(0, |v| v.len() as i64)
}

type Load = for<'a> fn(&'a Setup) -> Pin<Box<dyn Future<Output = i64> + 'a>>;

const LOADS: [(&str, &str, Load); 5] = [
    ("dbsize", "command", |s| Box::pin(dbsize_command(s))),
    ("dbsize", "sequential loop", |s| {
        Box::pin(dbsize_sequential(s))
    }),
    ("dbsize", "joined loop", |s| Box::pin(dbsize_joined(s))),
    ("get one key", "cluster command", |s| {
        Box::pin(get_through_cluster(s))
    }),
    ("get one key", "master connection", |s| {
        Box::pin(get_on_master(s))
    }),
];

/// Mean time per call of `n` calls of `load`.
fn time(ex: &LocalExecutor, s: &Setup, load: Load, n: u32) -> Duration {
    ex.run(async {
        let start = Instant::now();
        for _ in 0..n {
            std::hint::black_box(load(s).await);
        }
        start.elapsed() / n
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--test") || !args.iter().any(|a| a == "--bench");
    let cluster = RedisCluster::start();
    let ex = LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(64 << 10)
        .make()
        .expect("an executor");
    let seeds = cluster.seed_addrs();
    let setup = ex.run(async {
        let client = Cluster::connect(seeds).await.expect("connect");
        let pairs: Vec<(String, String)> = (0..1000)
            .map(|i| (format!("fanout:{i}"), "v".to_owned()))
            .collect();
        client.mset(&pairs).await.expect("MSET");
        client
            .command::<()>(["SET", KEY, "value"])
            .await
            .expect("SET");
        let masters: Vec<Connection> = client
            .master_connections()
            .into_iter()
            .map(|(_, c)| c)
            .collect();
        let mut key_master = None;
        for c in &masters {
            // The master that has the key answers it; the others redirect.
            if c.command::<Option<String>>(["GET", KEY]).await.is_ok() {
                key_master = Some(c.clone());
            }
        }
        let keys: i64 = client.command(["DBSIZE"]).await.expect("DBSIZE");
        Setup {
            client,
            masters,
            key_master: key_master.expect("the key's master"),
            keys,
        }
    });
    for (group, name, load) in LOADS {
        if group == "dbsize" {
            assert_eq!(time_value(&ex, &setup, load), setup.keys, "{name}");
        }
    }

    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for group in ["dbsize", "get one key"] {
        let mut g = c.benchmark_group(group);
        for (_, name, load) in LOADS.iter().filter(|(g, _, _)| *g == group) {
            g.bench_function(*name, |b| {
                b.iter_custom(|iters| {
                    ex.run(async {
                        let start = Instant::now();
                        for _ in 0..iters {
                            std::hint::black_box(load(&setup).await);
                        }
                        start.elapsed()
                    })
                })
            });
        }
        g.finish();
    }
    c.final_summary();
    if quick {
        return;
    }

    // Ratios from a run of their own: the fastest of 5 rounds each, the
    // loads taking turns within each round.
    let mut best = [Duration::MAX; LOADS.len()];
    for _ in 0..5 {
        for (i, (_, _, load)) in LOADS.iter().enumerate() {
            best[i] = best[i].min(time(&ex, &setup, *load, 2000));
        }
    }
    println!("\nfan-out DBSIZE over 3 masters, one core (fastest of 5 rounds of 2000 calls):");
    for (i, (group, name, _)) in LOADS.iter().enumerate() {
        println!(
            "  {group:12} {name:18} {:8.1} us",
            best[i].as_secs_f64() * 1e6
        );
    }
    let ratio = |a: usize, b: usize| best[a].as_secs_f64() / best[b].as_secs_f64();
    println!(
        "  command / sequential loop: {:.2}; command / joined loop: {:.2}",
        ratio(0, 1),
        ratio(0, 2)
    );
    println!(
        "  GET through cluster.command / GET on the master connection: {:.2}",
        ratio(3, 4)
    );
    drop(setup);
    drop(cluster);
}

/// One call of `load`, its value.
fn time_value(ex: &LocalExecutor, s: &Setup, load: Load) -> i64 {
    ex.run(load(s))
}
