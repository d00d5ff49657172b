//! The client CPU per command in the report: the process's own user +
//! system time over the measured phase (warm-up left out), against a real
//! `redis-server`.

mod support;

use redcore_test_support::RedisServer;
use support::{load, num};

#[test]
fn client_cpu_covers_the_measured_phase_only() {
    let server = RedisServer::start();
    // A second of warm-up keeps the executor busy for about a second of
    // CPU; the measured 2000 commands take a fraction of that.
    let run = load(&[
        "--server",
        &server.url(),
        "--cores",
        "1",
        "--tasks",
        "8",
        "--warmup",
        "1s",
        "--requests",
        "2000",
        "--json",
    ]);
    let report = run.ok();
    let cpu = num(&report, "client_cpu_s");
    let per_cmd = num(&report, "client_cpu_us_per_cmd");
    let ended = num(&report, "total.ops") + num(&report, "total.errors");
    assert_eq!(ended, 2000.0, "{report:#}");
    assert!(cpu > 0.0, "{report:#}");
    assert!(
        (per_cmd - cpu * 1e6 / ended).abs() < 1e-6 * per_cmd.max(1.0),
        "{report:#}"
    );
    // Two threads at most were busy (the core and the main thread, which
    // mostly sleeps) while measuring; the warm-up's second is not in it.
    let elapsed = num(&report, "elapsed_secs");
    assert!(cpu <= 2.0 * elapsed + 0.05, "{report:#}");

    // The text report says it too.
    let run = load(&[
        "--server",
        &server.url(),
        "--cores",
        "1",
        "--requests",
        "500",
    ]);
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("client CPU (this whole process, user + system, while measuring): "),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains(" us per command"), "{}", run.stdout);
}
