//! `redcore-load --pubsub` against a real `redis-server` and a real 3+3
//! cluster: every message published reaches every subscriber, none is
//! lost, the report's figures agree; and its usage errors.

mod support;

use redcore_test_support::{RedisCluster, RedisServer};
use serde_json::Value;
use support::{load, num};

/// The JSON report of a run that exited 0.
fn report(args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    load(&all).ok()
}

/// Every message reached every subscriber, once, and the figures agree.
fn assert_all_delivered(r: &Value, published: f64, subscribers: f64) {
    assert_eq!(r["mode"], "pubsub", "{r:#}");
    assert_eq!(r["client"], "redcore", "{r:#}");
    assert_eq!(num(r, "published"), published, "{r:#}");
    assert_eq!(num(r, "sent_total"), published, "{r:#}");
    assert_eq!(num(r, "publish_errors"), 0.0, "{r:#}");
    assert_eq!(num(r, "delivered"), published * subscribers, "{r:#}");
    for field in ["lost", "out_of_order", "gaps", "foreign"] {
        assert_eq!(num(r, field), 0.0, "{field}: {r:#}");
    }
    assert_eq!(r["tail_timed_out"], false, "{r:#}");
    assert!(num(r, "delivered_per_sec") > 0.0, "{r:#}");
    assert!(num(r, "published_per_sec") > 0.0, "{r:#}");
    let p50 = num(r, "latency_us.p50");
    assert!(p50 > 0.0 && num(r, "latency_us.p99") >= p50, "{r:#}");
    let cpu = num(r, "client_cpu_s");
    let per_msg = num(r, "client_cpu_us_per_msg");
    assert!(cpu > 0.0, "{r:#}");
    let delivered = num(r, "delivered");
    assert!(
        (per_msg - cpu * 1e6 / delivered).abs() < 1e-6 * per_msg,
        "{r:#}"
    );
}

#[test]
fn pubsub_on_a_server() {
    let server = RedisServer::start();
    let url = server.url();
    // Two publishers, four channels, three subscriptions sharing the
    // publishers' RESP3 connection.
    let r = report(&[
        "--server",
        &url,
        "--pubsub",
        "channels",
        "--channels",
        "4",
        "--publishers",
        "2",
        "--subscribers",
        "3",
        "--in-flight",
        "8",
        "--requests",
        "3000",
    ]);
    assert_all_delivered(&r, 3000.0, 3.0);
    assert_eq!(r["pubsub"], "channels");
    assert_eq!(num(&r, "message_size"), 32.0);
    assert!(r["rate"].is_null() && r["send_lag_us"].is_null(), "{r:#}");
    assert!(
        r["subscriber_api"]
            .as_str()
            .is_some_and(|a| a.contains("RESP3")),
        "{r:#}"
    );

    // Sharded channels on RESP2 (a dedicated subscriber connection),
    // 100-byte messages, after a warm-up that is checked but not counted.
    let resp2 = format!("{url}?protocol=resp2");
    let r = report(&[
        "--server",
        &resp2,
        "--pubsub",
        "sharded",
        "--channels",
        "2",
        "--subscribers",
        "2",
        "--message-size",
        "100",
        "--warmup",
        "200ms",
        "--requests",
        "1000",
    ]);
    assert_eq!(num(&r, "published"), 1000.0, "{r:#}");
    assert_eq!(num(&r, "delivered"), 2000.0, "{r:#}");
    assert!(num(&r, "sent_total") > 1000.0, "{r:#}");
    assert_eq!(num(&r, "lost"), 0.0, "{r:#}");
    assert_eq!(num(&r, "gaps"), 0.0, "{r:#}");
    assert_eq!(r["pubsub"], "sharded");
    assert!(
        r["subscriber_api"]
            .as_str()
            .is_some_and(|a| a.contains("RESP2")),
        "{r:#}"
    );

    // At a fixed rate, for a time: 2000/s for half a second.
    let r = report(&[
        "--server",
        &url,
        "--pubsub",
        "channels",
        "--rate",
        "2k",
        "--duration",
        "500ms",
    ]);
    let published = num(&r, "published");
    assert!((900.0..=1000.0).contains(&published), "{r:#}");
    assert_all_delivered(&r, published, 1.0);
    assert_eq!(num(&r, "rate"), 2000.0);
    assert!(num(&r, "send_lag_us.p50") > 0.0, "{r:#}");

    // The text report.
    let run = load(&[
        "--server",
        &url,
        "--pubsub",
        "channels",
        "--requests",
        "100",
    ]);
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("per delivered message"),
        "{}",
        run.stdout
    );
}

/// Two seeds of a cluster, as `--cluster` takes them.
fn seeds(cluster: &RedisCluster) -> String {
    let seeds: Vec<String> = cluster
        .seed_addrs()
        .iter()
        .take(2)
        .map(ToString::to_string)
        .collect();
    seeds.join(",")
}

#[test]
fn pubsub_on_a_cluster() {
    let cluster = RedisCluster::start();
    let seeds = seeds(&cluster);
    // Channels spread over the masters; one sharded channel (see
    // sharded_channels_across_slots_on_a_cluster); both clients.
    for client in ["executor", "cluster"] {
        for (kind, channels) in [("channels", "6"), ("sharded", "1")] {
            let r = report(&[
                "--cluster",
                &seeds,
                "--cluster-client",
                client,
                "--pubsub",
                kind,
                "--channels",
                channels,
                "--publishers",
                "2",
                "--subscribers",
                "2",
                "--requests",
                "1200",
            ]);
            assert_all_delivered(&r, 1200.0, 2.0);
            assert!(
                r["target"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("cluster ")),
                "{r:#}"
            );
            let api = if client == "executor" {
                "CoreClient"
            } else {
                "Cluster"
            };
            assert!(
                r["subscriber_api"]
                    .as_str()
                    .is_some_and(|a| a.contains(api)),
                "{r:#}"
            );
        }
    }
}

/// Sharded channels of many slots, several on one master: the library
/// subscribes one slot per `SSUBSCRIBE` (a cluster refuses more).
#[test]
fn sharded_channels_across_slots_on_a_cluster() {
    let cluster = RedisCluster::start();
    let seeds = seeds(&cluster);
    for client in ["executor", "cluster"] {
        let r = report(&[
            "--cluster",
            &seeds,
            "--cluster-client",
            client,
            "--pubsub",
            "sharded",
            "--channels",
            "6",
            "--requests",
            "1200",
        ]);
        assert_all_delivered(&r, 1200.0, 1.0);
    }
}

#[test]
fn pubsub_usage_errors() {
    // No server is reached: each fails on its arguments, with status 2.
    let usage = |args: &[&str]| {
        let run = load(args);
        assert_eq!(
            run.code,
            Some(2),
            "{args:?}: {}\n{}",
            run.stdout,
            run.stderr
        );
    };
    let server = ["--server", "redis://127.0.0.1:1"];
    let with = |more: &[&'static str]| [&server[..], more].concat();
    usage(&with(&["--pubsub", "channels", "--cores", "2"]));
    usage(&with(&["--pubsub", "channels", "--tasks", "2"]));
    usage(&with(&["--pubsub", "channels", "--message-size", "15"]));
    usage(&with(&["--channels", "2"]));
    usage(&with(&["--rate", "0"]));
}
