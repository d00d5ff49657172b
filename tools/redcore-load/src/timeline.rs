//! `--timeline`: one JSON line per second of the measured run, so that a
//! run through failures (a failover, a resharding) shows when throughput
//! dropped, which errors came, and when it recovered.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::worker::Shared;

/// One second of the run.
#[derive(Debug, Serialize)]
pub struct Line {
    /// Wall clock at the end of the interval, milliseconds since the Unix
    /// epoch (to line the run up with outside events).
    pub unix_ms: u64,
    /// Seconds since measuring began, at the end of the interval.
    pub t: f64,
    /// Commands that succeeded in the interval.
    pub ops: u64,
    /// Commands that failed in the interval.
    pub errors: u64,
    /// `ops` per second of the interval.
    pub ops_per_sec: f64,
    /// Failures in the interval by kind.
    pub errors_by_kind: BTreeMap<String, u64>,
    /// The slowest successful command that completed in the interval, in
    /// microseconds (0 when none did).
    pub slowest_us: f64,
    /// The slowest call of any outcome that ended in the interval,
    /// microseconds from its send to its end (0 when none ended).
    pub slowest_call_us: f64,
    /// Calls that ended in the interval more than the deadline + 100 ms
    /// after they were sent.
    pub late_calls: u64,
}

/// Totals at the end of the previous interval.
#[derive(Default)]
struct Seen {
    at: Option<Instant>,
    ops: u64,
    late: u64,
    kinds: BTreeMap<String, u64>,
}

/// Writes the timeline file.
pub struct Timeline {
    out: BufWriter<File>,
    seen: Seen,
}

impl Timeline {
    /// Creates (truncates) the file.
    pub fn create(path: &Path) -> Result<Timeline, String> {
        let file = File::create(path)
            .map_err(|e| format!("--timeline: cannot create {}: {e}", path.display()))?;
        Ok(Timeline {
            out: BufWriter::new(file),
            seen: Seen::default(),
        })
    }

    /// Writes the line for the interval that ends now, if measuring has
    /// begun; write errors are reported once, on stderr, and end the
    /// timeline (the load goes on).
    pub fn tick(&mut self, shared: &Shared) -> Result<(), String> {
        let Some(start) = shared.measure_start() else {
            return Ok(());
        };
        let now = Instant::now();
        if now < start {
            return Ok(());
        }
        let line = self.sample(shared, start, now);
        let mut text = serde_json::to_string(&line).map_err(|e| e.to_string())?;
        text.push('\n');
        self.out
            .write_all(text.as_bytes())
            .and_then(|()| self.out.flush())
            .map_err(|e| format!("--timeline: cannot write: {e}"))
    }

    fn sample(&mut self, shared: &Shared, start: Instant, now: Instant) -> Line {
        let mut ops = 0;
        let mut late = 0;
        let mut slowest = 0;
        let mut slowest_call = 0;
        let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
        for live in &shared.live {
            ops += live.ops.load(Ordering::Relaxed);
            late += live.late_calls.load(Ordering::Relaxed);
            slowest = slowest.max(live.slowest_ns.swap(0, Ordering::Relaxed));
            slowest_call = slowest_call.max(live.slowest_call_ns.swap(0, Ordering::Relaxed));
            let core = live.error_kinds.lock().unwrap_or_else(|e| e.into_inner());
            for (kind, n) in core.iter() {
                *kinds.entry(kind.clone()).or_default() += n;
            }
        }
        let from = self.seen.at.unwrap_or(start);
        let secs = now.saturating_duration_since(from).as_secs_f64();
        let new_ops = ops.saturating_sub(self.seen.ops);
        let new_late = late.saturating_sub(self.seen.late);
        let mut by_kind = BTreeMap::new();
        for (kind, n) in &kinds {
            let before = self.seen.kinds.get(kind).copied().unwrap_or(0);
            if *n > before {
                by_kind.insert(kind.clone(), n - before);
            }
        }
        self.seen = Seen {
            at: Some(now),
            ops,
            late,
            kinds,
        };
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_millis();
        Line {
            unix_ms: u64::try_from(unix_ms).unwrap_or(u64::MAX),
            t: now.saturating_duration_since(start).as_secs_f64(),
            ops: new_ops,
            errors: by_kind.values().sum(),
            ops_per_sec: if secs > 0.0 {
                new_ops as f64 / secs
            } else {
                0.0
            },
            errors_by_kind: by_kind,
            slowest_us: slowest as f64 / 1000.0,
            slowest_call_us: slowest_call as f64 / 1000.0,
            late_calls: new_late,
        }
    }
}
