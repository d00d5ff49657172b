//! Runs the `redcore-load` binary for the tests: a run with a time
//! limit, its output and exit status, and reading its JSON report.

// Each test file uses its own part of this module.
#![allow(dead_code)]

use std::io::Read;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// What one run of the binary gave.
pub struct Run {
    /// The exit status, unless a signal ended it.
    pub code: Option<i32>,
    /// What it printed on stdout.
    pub stdout: String,
    /// What it printed on stderr.
    pub stderr: String,
    /// How long it ran.
    pub took: Duration,
}

impl Run {
    /// The JSON report on stdout.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "the report is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    /// The JSON report of a run that exited 0.
    pub fn ok(&self) -> Value {
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

/// A run of the binary going on in the background.
pub struct Running {
    /// The process id of the binary.
    pub pid: u32,
    waiter: thread::JoinHandle<Run>,
}

impl Running {
    /// Waits for the run to end.
    pub fn finish(self) -> Run {
        self.waiter.join().expect("the runner")
    }

    /// Sends a signal to the running binary.
    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on the pid of a child this test started and has
        // not reaped (the waiter thread reaps it only once it exits).
        let r = unsafe { libc::kill(self.pid as libc::pid_t, sig) };
        assert_eq!(r, 0, "kill: {}", std::io::Error::last_os_error());
    }
}

/// Starts the binary; the run is killed if it takes more than a minute.
pub fn start(args: &[&str]) -> Running {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_redcore-load"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start redcore-load");
    let pid = child.id();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let waiter = thread::spawn(move || {
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
    });
    Running { pid, waiter }
}

/// Runs the binary to its end.
pub fn load(args: &[&str]) -> Run {
    start(args).finish()
}

/// The number at a dotted path of a JSON value (`total.latency_us.p50`).
pub fn num(v: &Value, path: &str) -> f64 {
    path.split('.')
        .fold(v, |v, k| &v[k])
        .as_f64()
        .unwrap_or_else(|| panic!("no number at {path} in {v:#}"))
}
