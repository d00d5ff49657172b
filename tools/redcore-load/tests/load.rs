//! Runs the `redcore-load` binary against real `redis-server` processes
//! (the repository's harness: free loopback ports, temporary directories,
//! killed on drop) for about a second each, and checks its JSON report
//! and exit status.

#[path = "../../../tests/support/mod.rs"]
mod support;

use std::io::Read;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{RedisCluster, RedisServer};

/// What one run of the binary gave.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "the report is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    fn ok(&self) -> Value {
        assert_eq!(
            self.code,
            Some(0),
            "redcore-load failed:\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self.json()
    }
}

/// Runs the binary; kills it if it takes more than a minute.
fn load(args: &[&str]) -> Run {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_redcore-load"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start redcore-load");
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
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for redcore-load") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("redcore-load {args:?} ran for more than a minute");
        }
        thread::sleep(Duration::from_millis(20));
    };
    Run {
        code: status.code(),
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
        took: started.elapsed(),
    }
}

fn num(v: &Value, path: &str) -> f64 {
    path.split('.')
        .fold(v, |v, k| &v[k])
        .as_f64()
        .unwrap_or_else(|| panic!("no number at {path} in {v:#}"))
}

/// The checks every verified run must pass.
fn assert_verified(report: &Value) {
    assert!(num(report, "total.ops") > 0.0, "{report:#}");
    assert_eq!(num(report, "total.errors"), 0.0, "{report:#}");
    assert!(num(report, "total.ops_per_sec") > 0.0, "{report:#}");
    assert!(num(report, "total.latency_us.p50") > 0.0, "{report:#}");
    assert!(
        num(report, "total.latency_us.p99_99") <= num(report, "total.latency_us.max"),
        "{report:#}"
    );
    assert!(num(report, "verify.checked") > 0.0, "{report:#}");
    assert_eq!(num(report, "verify.lost"), 0.0, "{report:#}");
    assert_eq!(num(report, "verify.wrong"), 0.0, "{report:#}");
    assert_eq!(num(report, "verify.read_errors"), 0.0, "{report:#}");
    assert_eq!(
        num(report, "verify.ok"),
        num(report, "verify.checked"),
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
fn standalone_with_verify_json_and_hdr_log() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let hlog = dir.path().join("latency.hlog");
    let tline = dir.path().join("timeline.jsonl");
    let run = load(&[
        "--server",
        &server.url(),
        "--cores",
        "2",
        "--tasks",
        "16",
        "--duration",
        "1s",
        "--warmup",
        "200ms",
        "--keys",
        "5000",
        "--verify",
        "--json",
        "--spin",
        "50us",
        "--hdr-out",
        hlog.to_str().expect("utf-8 path"),
        "--timeline",
        tline.to_str().expect("utf-8 path"),
    ]);
    let report = run.ok();
    assert_verified(&report);
    assert_eq!(report["mode"], "closed-loop");
    assert_eq!(report["cores"], 2);
    // One timeline line per second of measuring, and a last partial one,
    // adding up to the report's totals.
    let timeline = std::fs::read_to_string(&tline).expect("the timeline");
    let lines: Vec<Value> = timeline
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert!((1..=4).contains(&lines.len()), "{timeline}");
    let ops: f64 = lines.iter().map(|l| num(l, "ops")).sum();
    assert_eq!(ops, num(&report, "total.ops"), "{timeline}");
    for pair in lines.windows(2) {
        assert!(num(&pair[0], "t") < num(&pair[1], "t"), "{timeline}");
        assert!(
            num(&pair[0], "unix_ms") <= num(&pair[1], "unix_ms"),
            "{timeline}"
        );
    }
    assert!(lines.iter().all(|l| num(l, "errors") == 0.0), "{timeline}");
    assert!(num(&lines[0], "slowest_us") > 0.0, "{timeline}");
    let elapsed = num(&report, "elapsed_secs");
    assert!((0.9..3.0).contains(&elapsed), "{report:#}");
    let log = std::fs::read_to_string(&hlog).expect("the histogram log");
    assert!(log.contains("#[StartTime:"), "{log}");
    let tags: Vec<&str> = log
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('"'))
        .map(|l| l.split(',').next().unwrap_or_default())
        .collect();
    assert_eq!(tags.len(), 3, "{log}");
    assert!(
        log.contains("Tag=SET,") && log.contains("Tag=GET,"),
        "{log}"
    );
}

#[test]
fn cluster_with_verify_json() {
    let cluster = RedisCluster::start();
    let seeds: Vec<String> = cluster
        .seed_addrs()
        .iter()
        .take(2)
        .map(ToString::to_string)
        .collect();
    let seeds = seeds.join(",");
    let mut args = vec![
        "--cluster",
        &seeds,
        "--tasks",
        "16",
        "--duration",
        "1s",
        "--keys",
        "5000",
        "--key-pattern",
        "zipf",
        "--verify",
        "--json",
    ];
    // Every core connected to every node: the same result.
    let mut every = args.clone();
    every.extend(["--ownership", "every-core", "--cores", "2"]);
    let report = load(&every).ok();
    assert_verified(&report);
    assert!(
        report["target"]
            .as_str()
            .is_some_and(|t| t.ends_with(", every-core ownership")),
        "{report:#}"
    );
    args.extend(["--cores", "2"]);
    let run = load(&args);
    let report = run.ok();
    assert_verified(&report);
    assert!(
        report["target"]
            .as_str()
            .is_some_and(|t| t.starts_with("cluster ") && !t.contains("every-core")),
        "{report:#}"
    );
    // The keys really are spread over the masters.
    for addr in cluster.masters() {
        let node = cluster
            .node(cluster.node_index(addr).expect("a master's index"))
            .cmd(&["DBSIZE"]);
        assert_ne!(node, "0", "master {addr} holds no key");
    }
}

#[test]
fn requests_pipeline_and_custom_commands_over_a_unix_socket() {
    let server = RedisServer::builder().unix_socket().start();
    let path = server
        .unix_path()
        .expect("a socket path")
        .display()
        .to_string();
    let run = load(&[
        "--server",
        &format!("unix://{path}"),
        "--cores",
        "1",
        "--tasks",
        "4",
        "--pipeline",
        "10",
        "--requests",
        "3000",
        "--key-pattern",
        "sequential",
        "--keys",
        "100",
        "--key-prefix",
        "h:",
        "--data-size",
        "5-50",
        "--command",
        "HSET __key__ f __data__",
        "--command",
        "HGET __key__ f",
        "--command",
        "SET plain:__key__ v-__key__",
        "--json",
    ]);
    let report = run.ok();
    assert_eq!(num(&report, "total.ops"), 3000.0, "{report:#}");
    let names: Vec<&str> = report["commands"]
        .as_array()
        .expect("commands")
        .iter()
        .map(|c| c["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["HSET", "HGET", "SET"]);
    assert_eq!(server.cmd(&["HEXISTS", "h:42", "f"]), "1");
    assert_eq!(server.cmd(&["GET", "plain:h:42"]), "v-h:42");
    let len: usize = server
        .cmd(&["HSTRLEN", "h:42", "f"])
        .parse()
        .expect("a length");
    assert!((5..=50).contains(&len), "{len}");
}

#[test]
fn tls_server() {
    let server = RedisServer::builder().tls().start();
    let ca = &server.tls().expect("TLS material").ca_cert.path;
    let run = load(&[
        "--server",
        &server.url(),
        "--tls-ca",
        ca.to_str().expect("utf-8 path"),
        "--cores",
        "1",
        "--tasks",
        "8",
        "--duration",
        "500ms",
        "--verify",
        "--json",
    ]);
    let report = run.ok();
    assert_verified(&report);
    assert!(
        report["target"]
            .as_str()
            .is_some_and(|t| t.starts_with("server rediss://")),
        "{report:#}"
    );
}

#[test]
fn open_loop_keeps_its_rate() {
    let server = RedisServer::start();
    let run = load(&[
        "--server",
        &server.url(),
        "--rate",
        "2000",
        "--duration",
        "1s",
        "--tasks",
        "8",
        "--json",
    ]);
    let report = run.ok();
    assert_eq!(report["mode"], "open-loop");
    let ops = num(&report, "total.ops") + num(&report, "unsent");
    // 2000 commands are due in one second; allow for a loaded machine.
    assert!((1500.0..=2100.0).contains(&ops), "{report:#}");
}

#[test]
fn lost_writes_are_detected() {
    let server = RedisServer::start();
    let url = server.url();
    let mut conn = server.connect().expect("connect");
    let flusher = thread::spawn(move || {
        thread::sleep(Duration::from_millis(600));
        conn.call(&["FLUSHALL"]).expect("FLUSHALL")
    });
    let run = load(&[
        "--server",
        &url,
        "--tasks",
        "8",
        "--duration",
        "1200ms",
        "--keys",
        "100000",
        "--ratio",
        "1:0",
        "--verify",
        "--json",
    ]);
    flusher.join().expect("the flusher");
    assert_eq!(
        run.code,
        Some(1),
        "stdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    let report = run.json();
    assert!(num(&report, "verify.lost") > 0.0, "{report:#}");
    assert!(run.stderr.contains("verification failed"), "{}", run.stderr);
}

/// A run in the background with `--timeline`, once its first timeline
/// line is written (the load is running): the run's thread, the
/// timeline's path, and the directory holding it.
fn running_with_timeline(
    args: &[&str],
) -> (
    thread::JoinHandle<Run>,
    std::path::PathBuf,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("timeline.jsonl");
    let mut args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    args.extend([
        "--timeline".to_owned(),
        path.to_str().expect("utf-8 path").to_owned(),
    ]);
    let runner = thread::spawn(move || load(&args.iter().map(String::as_str).collect::<Vec<_>>()));
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_to_string(&path).map_or(true, |t| t.lines().count() == 0) {
        assert!(Instant::now() < deadline, "no timeline line in 20 s");
        thread::sleep(Duration::from_millis(20));
    }
    (runner, path, dir)
}

/// A connection killed mid-run: the timeline shows the failures of that
/// second by kind, and throughput after it.
#[test]
fn timeline_shows_errors_by_kind_and_the_recovery() {
    let server = RedisServer::start();
    let url = server.url();
    let (runner, path, _dir) = running_with_timeline(&[
        "--server",
        &url,
        "--cores",
        "1",
        "--tasks",
        "16",
        "--duration",
        "3s",
        "--json",
    ]);
    let mut conn = server.connect().expect("connect");
    let killed = conn
        .call(&["CLIENT", "KILL", "TYPE", "normal"])
        .expect("CLIENT KILL");
    let report = runner.join().expect("the runner").json();
    assert!(
        matches!(killed, support::Reply::Integer(n) if n >= 1),
        "{killed:?}"
    );
    let text = std::fs::read_to_string(&path).expect("the timeline");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let hit = lines
        .iter()
        .position(|l| num(l, "errors") > 0.0)
        .unwrap_or_else(|| panic!("no errors in the timeline:\n{text}"));
    let kinds = &lines[hit]["errors_by_kind"];
    assert!(num(kinds, "connection lost") > 0.0, "{text}");
    let errors: f64 = lines.iter().map(|l| num(l, "errors")).sum();
    assert_eq!(errors, num(&report, "total.errors"), "{text}");
    assert!(
        lines[hit + 1..].iter().any(|l| num(l, "ops") > 0.0),
        "no throughput after the kill:\n{text}"
    );
}

/// A server that dies mid-run: the run stops once nothing has succeeded
/// for two call timeouts, says why, and exits 1, instead of spending its
/// requests on a dead target.
#[test]
fn a_target_that_dies_stops_the_run() {
    let mut server = RedisServer::start();
    let url = server.url();
    let (runner, _path, _dir) = running_with_timeline(&[
        "--server",
        &url,
        "--cores",
        "1",
        "--tasks",
        "4",
        "--requests",
        "1000000000",
        "--timeout",
        "1s",
        "--json",
    ]);
    server.kill();
    let killed = Instant::now();
    let run = runner.join().expect("the runner");
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.stderr.contains("stopped early"), "{}", run.stderr);
    let report = run.json();
    assert!(
        report["stopped_early"]
            .as_str()
            .is_some_and(|s| s.contains("no command succeeded")),
        "{report:#}"
    );
    assert!(num(&report, "total.errors") > 0.0, "{report:#}");
    assert!(
        killed.elapsed() < Duration::from_secs(15),
        "{:?}",
        killed.elapsed()
    );
}

/// A command every reply refuses is the command's problem: the run goes
/// to its end (the server answers), and exits 1 as nothing succeeded.
#[test]
fn refused_commands_do_not_stop_the_run_early() {
    let server = RedisServer::start();
    let run = load(&[
        "--server",
        &server.url(),
        "--cores",
        "1",
        "--tasks",
        "2",
        "--duration",
        "3s",
        "--timeout",
        "1s",
        "--command",
        "NOSUCHCOMMAND __key__",
        "--json",
    ]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(!run.stderr.contains("stopped early"), "{}", run.stderr);
    assert!(
        run.stderr.contains("no command succeeded"),
        "{}",
        run.stderr
    );
    let report = run.json();
    assert!(report["stopped_early"].is_null(), "{report:#}");
    assert!(
        num(&report, "total.errors_by_kind.server ERR") > 0.0,
        "{report:#}"
    );
    assert!(num(&report, "elapsed_secs") >= 2.9, "{report:#}");
}

#[test]
fn unreachable_target_fails_fast_with_exit_1() {
    // A port nobody listens on: bind one, then close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    for target in [
        vec!["--server".to_owned(), format!("redis://127.0.0.1:{port}")],
        vec!["--cluster".to_owned(), format!("127.0.0.1:{port}")],
    ] {
        let mut args: Vec<&str> = target.iter().map(String::as_str).collect();
        args.extend(["--duration", "1s", "--timeout", "1s"]);
        let run = load(&args);
        assert_eq!(run.code, Some(1), "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(&port.to_string()), "{}", run.stderr);
        assert!(run.took < Duration::from_secs(10), "{:?}", run.took);
        assert!(run.stdout.is_empty(), "{}", run.stdout);
    }
}

#[test]
fn bad_arguments_exit_2() {
    for args in [
        &["--duration", "1s"][..],
        &["--server", "redis://127.0.0.1:1", "--ratio", "1-2"],
        &["--server", "redis://127.0.0.1:1", "--data-size", "9-3"],
        &["--server", "redis://127.0.0.1:1", "--key-pattern", "zipf:x"],
        &["--server", "redis://127.0.0.1:1", "--duration", "soon"],
        &["--server", "nonsense://x"],
        &["--cluster", ""],
        &[
            "--server",
            "redis://127.0.0.1:1",
            "--hdr-out",
            "/nonexistent-dir/latency.hlog",
        ],
        &[
            "--server",
            "redis://127.0.0.1:1",
            "--ownership",
            "every-core",
        ],
        &[
            "--server",
            "redis://127.0.0.1:1",
            "--timeline",
            "/nonexistent-dir/timeline.jsonl",
        ],
        &[
            "--server",
            "redis://127.0.0.1:1",
            "--verify",
            "--keys",
            "1000000000",
        ],
    ] {
        let run = load(args);
        assert_eq!(run.code, Some(2), "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains("error"), "{args:?}: {}", run.stderr);
    }
}
