//! `redcore-load --cache` against a real `redis-server`: the report's
//! cache figures, the check of cached reads with `--verify`, and the
//! options it refuses.

mod support;

use redcore_test_support::{RedisCluster, RedisServer};
use support::{load, num};

#[test]
fn cached_gets_report_hits_misses_and_no_stale_read_on_one_core() {
    let server = RedisServer::start();
    let report = load(&[
        "--server",
        &server.url(),
        "--cores",
        "1",
        "--tasks",
        "16",
        "--ratio",
        "1:9",
        "--key-pattern",
        "zipf",
        "--keys",
        "2000",
        "--duration",
        "1s",
        "--cache",
        "1MB",
        "--cache-ttl",
        "30s",
        "--verify",
        "--json",
    ])
    .ok();
    let ratio = num(&report, "hit_ratio");
    assert!(ratio > 0.0 && ratio < 1.0, "{report:#}");
    let (hits, misses) = (num(&report, "cache.hits"), num(&report, "cache.misses"));
    assert_eq!(ratio, hits / (hits + misses), "{report:#}");
    // Every call is measured (no warm-up): the calls classified as hits
    // (ended at their first poll) are exactly the hits the cache counted.
    assert_eq!(num(&report, "cache.hits_timed"), hits, "{report:#}");
    assert_eq!(num(&report, "cache.misses_timed"), misses, "{report:#}");
    let get = report["commands"]
        .as_array()
        .expect("commands")
        .iter()
        .find(|c| c["name"] == "GET")
        .expect("a GET row");
    assert_eq!(num(get, "ops"), hits + misses, "{report:#}");
    assert!(
        num(&report, "cache.hit_latency_us.p50") < num(&report, "cache.miss_latency_us.p50"),
        "{report:#}"
    );
    assert_eq!(num(&report, "cache.max_bytes_per_core"), (1 << 20) as f64);
    assert_eq!(num(&report, "cache.ttl_secs"), 30.0);
    assert!(
        num(&report, "cache.bytes") <= (1 << 20) as f64,
        "{report:#}"
    );
    // One core: its own writes invalidate its cache, so no read is stale.
    assert!(num(&report, "cache.reads.checked") > 0.0, "{report:#}");
    assert_eq!(num(&report, "stale_reads"), 0.0, "{report:#}");
    assert_eq!(
        num(&report, "cache.reads.stale_own_core"),
        0.0,
        "{report:#}"
    );
    assert_eq!(num(&report, "verify.lost"), 0.0, "{report:#}");
    assert_eq!(num(&report, "verify.wrong"), 0.0, "{report:#}");
}

#[test]
fn cached_gets_on_two_cores_of_a_cluster() {
    let cluster = RedisCluster::start();
    let seeds: Vec<String> = cluster
        .seed_addrs()
        .iter()
        .take(2)
        .map(ToString::to_string)
        .collect();
    let report = load(&[
        "--cluster",
        &seeds.join(","),
        "--cores",
        "2",
        "--tasks",
        "16",
        "--ratio",
        "1:9",
        "--key-pattern",
        "zipf",
        "--keys",
        "2000",
        "--duration",
        "1s",
        "--cache",
        "1MB",
        "--verify",
        "--json",
    ])
    .ok();
    let ratio = num(&report, "hit_ratio");
    assert!(ratio > 0.0 && ratio < 1.0, "{report:#}");
    assert_eq!(
        num(&report, "cache.hits_timed"),
        num(&report, "cache.hits"),
        "{report:#}"
    );
    // Each core's own writes drop its entries; the other core's reach it
    // as invalidations, which may still be on their way (not asserted).
    assert!(num(&report, "cache.reads.checked") > 0.0, "{report:#}");
    assert_eq!(
        num(&report, "cache.reads.stale_own_core"),
        0.0,
        "{report:#}"
    );
    assert_eq!(num(&report, "verify.lost"), 0.0, "{report:#}");
    assert_eq!(num(&report, "verify.wrong"), 0.0, "{report:#}");
}

#[test]
fn cache_options_that_do_not_fit_exit_2() {
    for args in [
        &[
            "--server",
            "redis://127.0.0.1:1",
            "--cache",
            "64MB",
            "--pipeline",
            "2",
        ][..],
        &[
            "--server",
            "redis://127.0.0.1:1",
            "--cache",
            "64MB",
            "--command",
            "PING",
        ],
        &["--server", "redis://127.0.0.1:1", "--cache", "100"],
        &["--server", "redis://127.0.0.1:1", "--cache", "lots"],
        &["--server", "redis://127.0.0.1:1", "--cache-ttl", "5s"],
    ] {
        let run = load(args);
        assert_eq!(run.code, Some(2), "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains("error"), "{args:?}: {}", run.stderr);
    }
}
