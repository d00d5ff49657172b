//! Runs `redis-rs-load --pubsub` against a real `redis-server` and a real
//! 3+3 cluster and checks its JSON report: every message published was
//! delivered to every subscriber, none lost, the figures consistent.

use std::io::Read;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use redcore_test_support::{RedisCluster, RedisServer};
use serde_json::Value;

/// Runs the binary (killed after a minute) and returns its JSON report;
/// the run must exit 0.
fn load(args: &[&str]) -> Value {
    let mut child = Command::new(env!("CARGO_BIN_EXE_redis-rs-load"))
        .args(args)
        .arg("--json")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start redis-rs-load");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for redis-rs-load") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("redis-rs-load {args:?} ran for more than a minute");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let (stdout, stderr) = (out.join().expect("stdout"), err.join().expect("stderr"));
    assert!(
        status.success(),
        "redis-rs-load {args:?}: {status}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}"))
}

fn num(v: &Value, path: &str) -> f64 {
    path.split('.')
        .fold(v, |v, k| &v[k])
        .as_f64()
        .unwrap_or_else(|| panic!("no number at {path} in {v:#}"))
}

/// Every message reached every subscriber, once, and the figures agree.
fn assert_all_delivered(r: &Value, published: f64, subscribers: f64) {
    assert_eq!(r["mode"], "pubsub", "{r:#}");
    assert_eq!(r["client"], "redis-rs", "{r:#}");
    assert_eq!(num(r, "published"), published, "{r:#}");
    assert_eq!(num(r, "sent_total"), published, "{r:#}");
    assert_eq!(num(r, "publish_errors"), 0.0, "{r:#}");
    assert_eq!(num(r, "delivered"), published * subscribers, "{r:#}");
    for field in ["lost", "gaps", "foreign"] {
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
    // Two publishers, four channels, three subscribers (aio::PubSub).
    let r = load(&[
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

    // Sharded channels through RESP3 push, 100-byte messages.
    let r = load(&[
        "--server",
        &url,
        "--pubsub",
        "sharded",
        "--subscriber-api",
        "resp3",
        "--channels",
        "2",
        "--subscribers",
        "2",
        "--message-size",
        "100",
        "--requests",
        "1000",
    ]);
    assert_all_delivered(&r, 1000.0, 2.0);
    assert_eq!(r["pubsub"], "sharded");

    // At a fixed rate, for a time: 2000/s for half a second.
    let r = load(&[
        "--server",
        &url,
        "--pubsub",
        "channels",
        "--rate",
        "2k",
        "--duration",
        "0.5",
    ]);
    let published = num(&r, "published");
    assert!((900.0..=1000.0).contains(&published), "{r:#}");
    assert_all_delivered(&r, published, 1.0);
    assert_eq!(num(&r, "rate"), 2000.0);
    assert!(num(&r, "send_lag_us.p50") > 0.0, "{r:#}");
}

#[test]
fn pubsub_on_a_cluster() {
    let cluster = RedisCluster::start();
    let seeds: Vec<String> = cluster
        .seed_addrs()
        .iter()
        .take(2)
        .map(ToString::to_string)
        .collect();
    let seeds = seeds.join(",");
    for kind in ["sharded", "channels"] {
        let r = load(&[
            "--cluster",
            &seeds,
            "--pubsub",
            kind,
            "--channels",
            "6",
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
    }
}
