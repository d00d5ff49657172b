//! Runs the `redcore-load` binary against real `redis-server` processes
//! (the repository's harness: free loopback ports, temporary directories,
//! killed on drop) for about a second each, and checks its JSON report
//! and exit status.

mod support;

use std::thread;
use std::time::{Duration, Instant};

use redcore_test_support::{RedisCluster, RedisServer, Reply, wait_until};
use serde_json::Value;
use support::{Running, load, num, start};

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
fn cluster_reads_from_replicas_and_reports_gets_per_node() {
    let cluster = RedisCluster::start();
    cluster.warm_up();
    let seeds = cluster.seed_addrs()[0].to_string();
    let run = |read_from: &str| {
        load(&[
            "--cluster",
            &seeds,
            "--read-from",
            read_from,
            "--ratio",
            "1:9",
            "--tasks",
            "8",
            "--duration",
            "1s",
            "--cores",
            "2",
            "--json",
        ])
        .ok()
    };
    let gets = |report: &Value, role: &str| -> u64 {
        report["gets_by_node"]
            .as_array()
            .unwrap_or_else(|| panic!("gets_by_node in {report:#}"))
            .iter()
            .filter(|n| n["role"] == role)
            .map(|n| n["gets"].as_u64().expect("a count"))
            .sum()
    };
    let replica = run("replica");
    assert_eq!(replica["read_from"], "replica", "{replica:#}");
    let (on_masters, on_replicas) = (gets(&replica, "master"), gets(&replica, "replica"));
    assert!(
        on_replicas > 0 && on_masters * 20 < on_replicas,
        "replica reads: {on_masters} GETs on masters, {on_replicas} on replicas"
    );
    let primary = run("primary");
    assert_eq!(gets(&primary, "replica"), 0, "{primary:#}");
    assert!(gets(&primary, "master") > 0, "{primary:#}");
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
/// line is written (the load is running): the run, the timeline's path,
/// and the directory holding it.
fn running_with_timeline(args: &[&str]) -> (Running, std::path::PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("timeline.jsonl");
    let mut args = args.to_vec();
    args.extend(["--timeline", path.to_str().expect("utf-8 path")]);
    let running = start(&args);
    let deadline = Instant::now() + Duration::from_secs(20);
    while timeline(&path).is_empty() {
        assert!(Instant::now() < deadline, "no timeline line in 20 s");
        thread::sleep(Duration::from_millis(20));
    }
    (running, path, dir)
}

/// The timeline's lines so far (a line being written is left out).
fn timeline(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map_while(|l| serde_json::from_str(l).ok())
        .collect()
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
    let report = runner.finish().json();
    assert!(matches!(killed, Reply::Integer(n) if n >= 1), "{killed:?}");
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
    let run = runner.finish();
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

/// Keeps a server stopped (`SIGSTOP`) until dropped (`SIGCONT`), so that a
/// failing check never leaves it stopped for the rest of the test.
struct Paused<'a>(&'a RedisServer);

impl<'a> Paused<'a> {
    fn new(server: &'a RedisServer) -> Paused<'a> {
        server.pause(true);
        Paused(server)
    }
}

impl Drop for Paused<'_> {
    fn drop(&mut self) {
        self.0.pause(false);
    }
}

/// The number of timeline lines at the end that saw no success, and the
/// failures in them.
fn trailing_stall(lines: &[Value]) -> (usize, f64) {
    let stalled: Vec<&Value> = lines
        .iter()
        .rev()
        .take_while(|l| num(l, "ops") == 0.0)
        .collect();
    (
        stalled.len(),
        stalled.iter().map(|l| num(l, "errors")).sum(),
    )
}

/// `--stall-limit 0`: a server that stops answering for longer than the
/// default limit (2 s with a 1 s deadline) does not end the run; once it
/// answers again the load carries on to its end.
#[test]
fn stall_limit_0_rides_through_a_paused_server() {
    let server = RedisServer::start();
    let url = server.url();
    let (runner, path, _dir) = running_with_timeline(&[
        "--server",
        &url,
        "--cores",
        "1",
        "--tasks",
        "4",
        "--duration",
        "9s",
        "--timeout",
        "1s",
        "--stall-limit",
        "0",
        "--json",
    ]);
    let paused = Paused::new(&server);
    // Three whole seconds with failures and no success: by then the
    // default limit would have stopped the run.
    wait_until("three seconds of failures", Duration::from_secs(20), || {
        let (seconds, errors) = trailing_stall(&timeline(&path));
        seconds >= 3 && errors > 0.0
    });
    let stalled_lines = timeline(&path).len();
    drop(paused);
    let run = runner.finish();
    let report = run.ok();
    assert!(report["stopped_early"].is_null(), "{report:#}");
    assert!(!run.stderr.contains("stopped early"), "{}", run.stderr);
    assert!(num(&report, "total.errors") > 0.0, "{report:#}");
    assert!(num(&report, "elapsed_secs") >= 8.5, "{report:#}");
    let lines = timeline(&path);
    assert!(
        lines[stalled_lines..].iter().any(|l| num(l, "ops") > 0.0),
        "no success after the server came back: {lines:#?}"
    );
}

/// `--stall-limit 1s` with a 3 s deadline: once the paused server's calls
/// have failed, the run stops at the next check, instead of after the
/// default 6 s without a success, and says why.
#[test]
fn a_short_stall_limit_stops_the_run() {
    let server = RedisServer::start();
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
        "3s",
        "--stall-limit",
        "1s",
        "--json",
    ]);
    let paused = Paused::new(&server);
    let run = runner.finish();
    drop(paused);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.stderr.contains("stopped early"), "{}", run.stderr);
    let report = run.json();
    let why = report["stopped_early"].as_str().unwrap_or_default();
    assert!(why.contains("--stall-limit 1s"), "{report:#}");
    // "no command succeeded for 3s while ...", counted from the last check
    // that saw a success (up to a second after the pause): the first
    // failures come at the 3 s deadline, and the run stops at the check
    // after them, well before the default limit (6 s).
    let stalled: u64 = why
        .strip_prefix("no command succeeded for ")
        .and_then(|rest| rest.split_once("s "))
        .and_then(|(secs, _)| secs.parse().ok())
        .unwrap_or_else(|| panic!("no stall time in {why:?}"));
    assert!((2..6).contains(&stalled), "{why}");
}

/// A call that times out is in `slowest_call_us` (whatever its outcome,
/// unlike the latency of successful commands), not in `late_calls` unless
/// it ended more than 100 ms past its deadline; the timeline's seconds
/// add up to the report.
#[test]
fn slowest_call_counts_calls_that_time_out() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let tline = dir.path().join("timeline.jsonl");
    let run = load(&[
        "--server",
        &server.url(),
        "--cores",
        "1",
        "--tasks",
        "2",
        "--duration",
        "2500ms",
        "--timeout",
        "1s",
        // The server holds BLPOP's reply for 2 s, past the 1 s deadline:
        // every call times out, and nothing succeeds.
        "--command",
        "BLPOP list:__key__ 2",
        "--stall-limit",
        "0",
        "--json",
        "--timeline",
        tline.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stderr.contains("no command succeeded"),
        "{}",
        run.stderr
    );
    let report = run.json();
    assert!(
        num(&report, "total.errors_by_kind.timeout after sending") > 0.0,
        "{report:#}"
    );
    // Successful commands only: the timed-out calls are not in it.
    assert_eq!(num(&report, "total.latency_us.max"), 0.0, "{report:#}");
    let slowest = num(&report, "slowest_call_us");
    let threshold = num(&report, "late_call_threshold_us");
    assert_eq!(threshold, 1_100_000.0, "{report:#}");
    assert!(slowest >= 1_000_000.0, "{report:#}");
    let late = num(&report, "late_calls");
    assert_eq!(late > 0.0, slowest > threshold, "{report:#}");
    eprintln!("slowest call {slowest} us, {late} late");
    let lines = timeline(&tline);
    let by_second = lines
        .iter()
        .map(|l| num(l, "slowest_call_us"))
        .fold(0.0, f64::max);
    assert_eq!(by_second, slowest, "{lines:#?}");
    let late_by_second: f64 = lines.iter().map(|l| num(l, "late_calls")).sum();
    assert_eq!(late_by_second, late, "{lines:#?}");
}

/// Calls that end more than 100 ms past their deadline are counted: the
/// load generator itself stopped for a second (`SIGSTOP`) with calls in
/// flight under a 200 ms deadline ends them late.
#[test]
fn late_calls_are_counted() {
    let server = RedisServer::start();
    let url = server.url();
    let (runner, path, _dir) = running_with_timeline(&[
        "--server",
        &url,
        "--cores",
        "1",
        "--tasks",
        "4",
        "--duration",
        "3s",
        "--timeout",
        "200ms",
        "--json",
    ]);
    runner.signal(libc::SIGSTOP);
    let stopped = Instant::now();
    // The stop itself is what is measured: a second without the generator.
    thread::sleep(Duration::from_secs(1));
    runner.signal(libc::SIGCONT);
    let stop = stopped.elapsed();
    let report = runner.finish().ok();
    let late = num(&report, "late_calls");
    assert!(late >= 1.0, "{report:#}");
    assert_eq!(num(&report, "late_call_threshold_us"), 300_000.0);
    assert!(
        num(&report, "slowest_call_us") >= stop.as_secs_f64() * 1e6 * 0.9,
        "stopped {stop:?}: {report:#}"
    );
    let lines = timeline(&path);
    let late_by_second: f64 = lines.iter().map(|l| num(l, "late_calls")).sum();
    assert_eq!(late_by_second, late, "{lines:#?}");
}

#[test]
fn bad_stall_limits_are_refused() {
    for (value, says) in [
        ("soon", "not a duration"),
        ("-1s", "not a duration"),
        ("500ms", "at least 1s, or 0 to never stop"),
    ] {
        let arg = format!("--stall-limit={value}");
        let run = load(&["--server", "redis://127.0.0.1:1", &arg]);
        assert_eq!(run.code, Some(2), "{value}: {}", run.stderr);
        assert!(
            run.stderr.contains("--stall-limit") && run.stderr.contains(says),
            "{value}: {}",
            run.stderr
        );
    }
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
        &["--cluster", "127.0.0.1:1", "--read-from", "fastest"],
        &["--cluster", "127.0.0.1:1", "--read-from", "az"],
        &["--server", "redis://127.0.0.1:1", "--read-from", "replica"],
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
