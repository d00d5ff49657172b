//! The final report, with redcore-load's field names (the subset this
//! tool measures), as JSON or as text.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::load::{OPS, Outcome, Plan, new_histogram};
pub use load_common::latency::Latency;

/// The whole report.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The client library: `redis-rs`.
    pub client: &'static str,
    /// What was loaded.
    pub target: String,
    /// Always `closed-loop`.
    pub mode: &'static str,
    /// Threads running the load: 1 (one current-thread runtime).
    pub cores: usize,
    /// Tasks (on the one runtime).
    pub tasks_per_core: usize,
    /// Commands per pipeline.
    pub pipeline: usize,
    /// Key space.
    pub keys: u64,
    /// Always `uniform`.
    pub key_pattern: &'static str,
    /// `plain` or `tagged`.
    pub key_layout: &'static str,
    /// Tagged layout: keys that share a hash tag.
    pub keys_per_tag: Option<u64>,
    /// Value size, bytes.
    pub data_size: String,
    /// Warm-up, seconds (not counted).
    pub warmup_secs: f64,
    /// Measured time, seconds: from the end of the warm-up to the last
    /// measured reply.
    pub elapsed_secs: f64,
    /// Every command together.
    pub total: OpReport,
    /// Each kind of command.
    pub commands: Vec<OpReport>,
    /// CPU time of the whole process (every thread, user + system, from
    /// `getrusage(RUSAGE_SELF)`) from the first measured command to the
    /// end of the last task. `None` when nothing was measured.
    pub client_cpu_s: Option<f64>,
    /// `client_cpu_s` per measured command that ended (succeeded or
    /// failed), microseconds.
    pub client_cpu_us_per_cmd: Option<f64>,
}

/// The figures of one kind of command.
#[derive(Debug, Serialize)]
pub struct OpReport {
    /// The command (`SET`, `GET`; `all` for the total).
    pub name: String,
    /// Measured commands that succeeded.
    pub ops: u64,
    /// `ops` per measured second.
    pub ops_per_sec: f64,
    /// Measured commands that failed.
    pub errors: u64,
    /// Failures by kind.
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Latency of the successful commands, microseconds.
    pub latency_us: Latency,
}

/// Builds the report of a load.
pub fn build(plan: &Plan, target: String, outcome: &Outcome) -> Report {
    let elapsed = outcome.last_done.map_or(0.0, |d| {
        d.saturating_duration_since(outcome.measure_start)
            .as_secs_f64()
    });
    let op_report = |name: &str, h: &Histogram<u64>, errors: &BTreeMap<String, u64>| OpReport {
        name: name.to_owned(),
        ops: h.len(),
        ops_per_sec: if elapsed > 0.0 {
            h.len() as f64 / elapsed
        } else {
            0.0
        },
        errors: errors.values().sum(),
        errors_by_kind: errors.clone(),
        latency_us: Latency::of(h),
    };
    let weights = [plan.ratio.set, plan.ratio.get];
    let commands: Vec<OpReport> = OPS
        .iter()
        .enumerate()
        .filter(|&(i, _)| weights[i] > 0)
        .map(|(i, name)| op_report(name, &outcome.histograms[i], &outcome.errors[i]))
        .collect();
    let mut all = new_histogram();
    let mut all_errors = BTreeMap::new();
    for (h, e) in outcome.histograms.iter().zip(&outcome.errors) {
        all.add(h).expect("histograms of the same bounds add up");
        for (kind, n) in e {
            *all_errors.entry(kind.clone()).or_default() += n;
        }
    }
    let total = op_report("all", &all, &all_errors);
    let cpu_s = outcome.cpu.map(|c| c.total().as_secs_f64());
    let ended = total.ops + total.errors;
    Report {
        client: "redis-rs",
        target,
        mode: "closed-loop",
        cores: 1,
        tasks_per_core: plan.tasks,
        pipeline: plan.pipeline,
        keys: plan.keys.count(),
        key_pattern: "uniform",
        key_layout: if plan.keys.per_tag().is_some() {
            "tagged"
        } else {
            "plain"
        },
        keys_per_tag: plan.keys.per_tag(),
        data_size: plan.value.len().to_string(),
        warmup_secs: plan.warmup.as_secs_f64(),
        elapsed_secs: elapsed,
        client_cpu_s: cpu_s,
        client_cpu_us_per_cmd: cpu_s.filter(|_| ended > 0).map(|s| s * 1e6 / ended as f64),
        total,
        commands,
    }
}

/// The report as text for a person.
pub fn text(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "redis-rs-load: {} | 1 thread x {} tasks | pipeline {} | closed loop | {} keys uniform{} | {} B values",
        r.target,
        r.tasks_per_core,
        r.pipeline,
        r.keys,
        match r.keys_per_tag {
            Some(n) => format!(", tagged ({n} per tag)"),
            None => String::new(),
        },
        r.data_size
    );
    let _ = writeln!(
        out,
        "measured {:.2} s; latency in microseconds\n",
        r.elapsed_secs
    );
    let _ = writeln!(
        out,
        "{:<10} {:>11} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "command", "ops", "ops/s", "p50", "p90", "p99", "max", "errors"
    );
    for c in r
        .commands
        .iter()
        .chain((r.commands.len() != 1).then_some(&r.total))
    {
        let l = &c.latency_us;
        let _ = writeln!(
            out,
            "{:<10} {:>11} {:>11.0} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9}",
            c.name, c.ops, c.ops_per_sec, l.p50, l.p90, l.p99, l.max, c.errors
        );
    }
    for c in &r.commands {
        if c.errors > 0 {
            let kinds: Vec<String> = c
                .errors_by_kind
                .iter()
                .map(|(k, n)| format!("{n} {k}"))
                .collect();
            let _ = writeln!(out, "errors, {}: {}", c.name, kinds.join(", "));
        }
    }
    if let (Some(cpu), Some(per_cmd)) = (r.client_cpu_s, r.client_cpu_us_per_cmd) {
        let _ = writeln!(
            out,
            "client CPU (this whole process, user + system, while measuring): {cpu:.3} s, \
             {per_cmd:.2} us per command"
        );
    }
    out
}
