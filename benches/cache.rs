//! Client-side caching, one core, one task: a cached `GET` that hits
//! (answered from the client's cache, no round trip) against the plain
//! `GET` round trip on the same freshly started `redis-server`.
//!
//! - `hit/connection`: `conn.cached_get::<Bytes>(KEY, ttl)` on a
//!   [`Connection`] whose cache holds `KEY`;
//! - `hit/cluster`: the same on a [`Cluster`] client of a 3+3 cluster
//!   (the test harness's), its cache holding `KEY`;
//! - `round trip/connection`: `conn.command::<Bytes>(["GET", KEY])` on a
//!   connection without a cache, to the same server.
//!
//! Criterion measures each (elements: one `GET`). The last lines print
//! a run of their own, the loads taking turns over 5 rounds (the machine
//! is shared, so each figure is the fastest round): ns per hit, hits per
//! second, the client CPU per hit (`getrusage`), and the round trip over
//! the hit. Values are 32 bytes.
//!
//! `cargo bench --bench cache`; with `--test` (or under
//! `cargo test --benches`) each runs once, no summary.
//! `REDCORE_BENCH_HITS=N` runs only the hit loop on a connection, N hits
//! (for a profiler: `valgrind --tool=callgrind`).

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput};
use glommio::{LocalExecutor, LocalExecutorBuilder, Placement};
use redcore::cluster::Cluster;
use redcore::{CacheCommands, CacheOptions, ClusterConfig, Commands, Connection, ConnectionConfig};
use redcore_test_support::{RedisCluster, RedisServer};

const KEY: &str = "cache:bench";
const TTL: Duration = Duration::from_secs(3600);

struct Setup {
    cached: Connection,
    plain: Connection,
    cluster: Option<Cluster>,
}

async fn hit_connection(s: &Setup) -> usize {
    let v: Bytes = s.cached.cached_get(KEY, TTL).await.unwrap();
    v.len()
}

async fn hit_cluster(s: &Setup) -> usize {
    let c = s.cluster.as_ref().expect("a cluster");
    let v: Bytes = c.cached_get(KEY, TTL).await.unwrap();
    v.len()
}

async fn round_trip(s: &Setup) -> usize {
    let v: Bytes = s.plain.command(["GET", KEY]).await.unwrap();
    v.len()
}

/// The loads; no boxed future per call (an allocation would weigh on a
/// hit).
#[derive(Clone, Copy)]
enum Load {
    HitConnection,
    HitCluster,
    RoundTrip,
}

async fn call(s: &Setup, load: Load) -> usize {
    match load {
        Load::HitConnection => hit_connection(s).await,
        Load::HitCluster => hit_cluster(s).await,
        Load::RoundTrip => round_trip(s).await,
    }
}

const LOADS: [(&str, &str, Load); 3] = [
    ("hit", "connection", Load::HitConnection),
    ("hit", "cluster", Load::HitCluster),
    ("round trip", "connection", Load::RoundTrip),
];

/// User + system CPU time of this process.
fn cpu_time() -> Duration {
    // SAFETY: `usage` is a valid rusage to write into.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// `n` calls of `load`: wall time and CPU time per call.
fn time(ex: &LocalExecutor, s: &Setup, load: Load, n: u32) -> (Duration, Duration) {
    ex.run(async {
        let cpu = cpu_time();
        let start = Instant::now();
        for _ in 0..n {
            std::hint::black_box(call(s, load).await);
        }
        (start.elapsed() / n, (cpu_time() - cpu) / n)
    })
}

fn connect(ex: &LocalExecutor, server: &RedisServer, cluster: Option<&RedisCluster>) -> Setup {
    let url = format!("redis://127.0.0.1:{}", server.port());
    let seeds = cluster.map(|c| c.seed_addrs());
    ex.run(async move {
        let mut config = ConnectionConfig::from_uri(&url).expect("a URI");
        config.cache = Some(CacheOptions::with_max_bytes(64 << 20));
        let cached = Connection::connect(config).await.expect("connect");
        let plain = Connection::connect(url.as_str()).await.expect("connect");
        plain
            .command::<()>(["SET", KEY, &"v".repeat(32)])
            .await
            .expect("SET");
        // The miss that fills the cache.
        let v: Bytes = cached.cached_get(KEY, TTL).await.expect("cached GET");
        assert_eq!(v.len(), 32);
        let cluster = match seeds {
            Some(seeds) => {
                let mut config = ClusterConfig::builder()
                    .seeds(seeds)
                    .build()
                    .expect("a cluster config");
                config.node.cache = Some(CacheOptions::with_max_bytes(64 << 20));
                let c = Cluster::connect(config).await.expect("connect the cluster");
                c.command::<()>(["SET", KEY, &"v".repeat(32)])
                    .await
                    .expect("SET");
                let v: Bytes = c.cached_get(KEY, TTL).await.expect("cached GET");
                assert_eq!(v.len(), 32);
                Some(c)
            }
            None => None,
        };
        Setup {
            cached,
            plain,
            cluster,
        }
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--test") || !args.iter().any(|a| a == "--bench");
    let ex = LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(64 << 10)
        .make()
        .expect("an executor");
    let server = RedisServer::start();

    if let Some(n) = std::env::var("REDCORE_BENCH_HITS")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
    {
        let setup = connect(&ex, &server, None);
        let (wall, cpu) = time(&ex, &setup, LOADS[0].2, n);
        println!(
            "{n} hits on a connection: {:.1} ns per hit, {:.1} ns CPU",
            wall.as_secs_f64() * 1e9,
            cpu.as_secs_f64() * 1e9
        );
        return;
    }

    let cluster = RedisCluster::start();
    let setup = connect(&ex, &server, Some(&cluster));
    let before = setup.cached.cache_stats().expect("a cache").hits;
    time(&ex, &setup, LOADS[0].2, 10);
    let after = setup.cached.cache_stats().expect("a cache").hits;
    assert_eq!(after - before, 10, "the connection's cached GETs hit");
    let before = setup.cluster.as_ref().unwrap().cache_stats().unwrap().hits;
    time(&ex, &setup, LOADS[1].2, 10);
    let after = setup.cluster.as_ref().unwrap().cache_stats().unwrap().hits;
    assert_eq!(after - before, 10, "the cluster's cached GETs hit");

    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for group in ["hit", "round trip"] {
        let mut g = c.benchmark_group(format!("cached GET {group}"));
        g.throughput(Throughput::Elements(1));
        for (_, name, load) in LOADS.iter().filter(|(g, _, _)| *g == group) {
            g.bench_function(*name, |b| {
                b.iter_custom(|iters| {
                    ex.run(async {
                        let start = Instant::now();
                        for _ in 0..iters {
                            std::hint::black_box(call(&setup, *load).await);
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

    // Each load's fastest of 5 rounds, the loads taking turns.
    let calls = [1_000_000u32, 1_000_000, 20_000];
    let mut best = [(Duration::MAX, Duration::MAX); LOADS.len()];
    for _ in 0..5 {
        for (i, (_, _, load)) in LOADS.iter().enumerate() {
            let (wall, cpu) = time(&ex, &setup, *load, calls[i]);
            best[i].0 = best[i].0.min(wall);
            best[i].1 = best[i].1.min(cpu);
        }
    }
    println!("\ncached GET, one core, one task (fastest of 5 rounds, the loads taking turns):");
    for (i, (group, name, _)) in LOADS.iter().enumerate() {
        let ns = best[i].0.as_secs_f64() * 1e9;
        println!(
            "  {group:10} {name:10} {:>10.1} ns per GET {:>12.0} GETs/s {:>10.1} ns CPU per GET ({} calls a round)",
            ns,
            1e9 / ns,
            best[i].1.as_secs_f64() * 1e9,
            calls[i]
        );
    }
    let ratio = |a: usize, b: usize| best[a].0.as_secs_f64() / best[b].0.as_secs_f64();
    println!(
        "  round trip / hit: {:.0}x (connection), {:.0}x (cluster hit)",
        ratio(2, 0),
        ratio(2, 1)
    );
    drop(setup);
    drop(cluster);
}
