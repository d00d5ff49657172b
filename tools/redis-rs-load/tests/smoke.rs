//! Runs the `redis-rs-load` binary against a real `redis-server` and a
//! real 3+3 cluster (the workspace's harness) and checks its JSON report:
//! redcore-load's field names, the keys it writes, and that a cluster
//! pipeline works with tagged keys and is refused without them.

use std::io::Read;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use redcore_test_support::{RedisCluster, RedisServer};
use serde_json::Value;

/// Runs the binary (killed after a minute); its exit status, stdout and
/// stderr.
fn load(args: &[&str]) -> (Option<i32>, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_redis-rs-load"))
        .args(args)
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
    (
        status.code(),
        out.join().expect("stdout reader"),
        err.join().expect("stderr reader"),
    )
}

/// The JSON report of a run that exited 0.
fn ok(args: &[&str]) -> Value {
    let (code, stdout, stderr) = load(args);
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}"))
}

fn num(v: &Value, path: &str) -> f64 {
    path.split('.')
        .fold(v, |v, k| &v[k])
        .as_f64()
        .unwrap_or_else(|| panic!("no number at {path} in {v:#}"))
}

/// The fields the yardstick reads, as redcore-load names them.
fn assert_complete(report: &Value, commands: f64) {
    assert_eq!(num(report, "total.ops"), commands, "{report:#}");
    assert_eq!(num(report, "total.errors"), 0.0, "{report:#}");
    assert!(num(report, "total.ops_per_sec") > 0.0, "{report:#}");
    assert!(num(report, "total.latency_us.p50") > 0.0, "{report:#}");
    assert!(
        num(report, "total.latency_us.p99") >= num(report, "total.latency_us.p50"),
        "{report:#}"
    );
    let cpu = num(report, "client_cpu_s");
    assert!(cpu > 0.0, "{report:#}");
    let per_cmd = num(report, "client_cpu_us_per_cmd");
    assert!(
        (per_cmd - cpu * 1e6 / commands).abs() < 1e-6 * per_cmd,
        "{report:#}"
    );
    let names: Vec<&str> = report["commands"]
        .as_array()
        .expect("commands")
        .iter()
        .map(|c| c["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["SET", "GET"], "{report:#}");
}

#[test]
fn standalone_one_connection_with_pipelines() {
    let server = RedisServer::start();
    let url = server.url();
    let connections = || -> u64 {
        let n = server.info_field("stats", "total_connections_received");
        n.expect("total_connections_received")
            .parse()
            .expect("a count")
    };
    let before = connections();
    let report = ok(&[
        "--server",
        &url,
        "--tasks",
        "4",
        "--pipeline",
        "16",
        "--requests",
        "3200",
        "--keys",
        "1000",
        "--cpu",
        "0",
        "--json",
    ]);
    assert_complete(&report, 3200.0);
    assert_eq!(report["client"], "redis-rs");
    assert_eq!(report["key_layout"], "plain");
    // One connection for the four tasks (the harness opens one per call,
    // for this one too).
    assert_eq!(connections() - before, 2, "{report:#}");
    // redcore-load's key names and values.
    let key = server.cmd(&["RANDOMKEY"]);
    let n: u64 = key
        .strip_prefix("key:")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a plain key: {key}"));
    assert!(n < 1000);
    assert_eq!(server.cmd(&["STRLEN", &key]), "32");

    // One command at a time, tagged names, the text report.
    let (code, stdout, stderr) = load(&[
        "--server",
        &url,
        "--tasks",
        "1",
        "--requests",
        "200",
        "--ratio",
        "1:0",
        "--key-layout",
        "tagged",
        "--key-prefix",
        "t:",
    ]);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("client CPU (this whole process, user + system, while measuring): "),
        "{stdout}"
    );
    let tagged = server.cmd(&["KEYS", "t:*"]);
    assert!(!tagged.is_empty());
    for key in tagged.lines() {
        let rest = key.strip_prefix("t:{").expect("a tagged key");
        let (tag, n) = rest.split_once("}:").expect("a tagged key");
        let (tag, n): (u64, u64) = (tag.parse().unwrap(), n.parse().unwrap());
        assert_eq!(tag, n / 98, "{key}");
    }
}

#[test]
fn cluster_pipelines_need_one_slot() {
    let cluster = RedisCluster::start();
    let seeds: Vec<String> = cluster
        .seed_addrs()
        .iter()
        .take(2)
        .map(ToString::to_string)
        .collect();
    let seeds = seeds.join(",");
    let report = ok(&[
        "--cluster",
        &seeds,
        "--tasks",
        "4",
        "--pipeline",
        "16",
        "--requests",
        "3200",
        "--key-layout",
        "tagged",
        "--json",
    ]);
    assert_complete(&report, 3200.0);
    assert!(
        report["target"]
            .as_str()
            .is_some_and(|t| t.starts_with("cluster ")),
        "{report:#}"
    );
    for addr in cluster.masters() {
        let node = cluster
            .node(cluster.node_index(addr).expect("a master's index"))
            .cmd(&["DBSIZE"]);
        assert_ne!(node, "0", "master {addr} holds no key");
    }
    // Keys spread over all slots: redis-rs refuses the pipelines.
    let (code, stdout, stderr) = load(&[
        "--cluster",
        &seeds,
        "--tasks",
        "1",
        "--pipeline",
        "16",
        "--requests",
        "160",
        "--json",
    ]);
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    let report: Value = serde_json::from_str(&stdout).expect("a JSON report");
    assert_eq!(num(&report, "total.ops"), 0.0, "{report:#}");
    assert_eq!(num(&report, "total.errors"), 160.0, "{report:#}");
}
