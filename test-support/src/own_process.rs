//! Running a test in a process of its own, for the few tests that change
//! what a whole process shares (an environment variable, a signal's
//! disposition) or count what it holds (its threads). `cargo test` runs
//! the tests of a binary as threads of one process, where cargo-nextest
//! gives each test a process; with this, such a test is right under both.

use std::process::{Command, Stdio};

use crate::process::spawn_owned_by_process;

/// Set in the child process to the name of the test it runs.
const CHILD_ENV: &str = "REDCORE_TEST_OWN_PROCESS";

/// Whether the caller runs alone in a process of its own.
///
/// Called first in the test harness's process, it runs the test `test`
/// (its full name, as `--exact` takes it: the function's name for a test
/// at the root of a test file) again in a child process of the test binary,
/// with `env` set there, waits for it, prints its output, and panics if
/// the test failed there or did not run; then it returns `false`, and the
/// caller returns. In that child it returns `true`, and the caller goes
/// on with the test. The child is killed if the process that started it
/// dies.
///
/// ```no_run
/// #[test]
/// fn probing_fails_when_told_to() {
///     if !redcore_test_support::in_own_process("probing_fails_when_told_to", &[("SWITCH", "1")]) {
///         return;
///     }
///     // The test, alone in its process, with SWITCH=1 from its start.
/// }
/// ```
pub fn in_own_process(test: &str, env: &[(&str, &str)]) -> bool {
    if std::env::var_os(CHILD_ENV).is_some_and(|running| running == test) {
        return true;
    }
    let binary = std::env::current_exe().expect("the test binary's path");
    let mut command = Command::new(binary);
    command
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, test)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = spawn_owned_by_process(command)
        .and_then(|child| child.wait_with_output())
        .expect("run the test binary again");
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Through the harness's capture: shown when this test fails.
    print!("{stdout}");
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "{test} failed in its own process ({})",
        out.status
    );
    assert!(
        stdout.contains("test result: ok. 1 passed"),
        "the test binary ran no test named {test} in its own process"
    );
    false
}
