//! The final report: per-core results merged, printed as text or JSON,
//! and the histograms written as an HdrHistogram interval log.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use hdrhistogram::Histogram;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use serde::Serialize;

use crate::args::KeyPattern;
use crate::cpu::CpuTime;
use crate::plan::{KeyLayout, Plan};
use crate::worker::{CacheCounters, CoreResult, ReadCheck, new_histogram};
pub use load_common::latency::Latency;

/// The whole report.
#[derive(Debug, Serialize)]
pub struct Report {
    /// What was loaded (no password).
    pub target: String,
    /// `closed-loop` or `open-loop`.
    pub mode: &'static str,
    /// Cores (executors).
    pub cores: usize,
    /// Tasks per core.
    pub tasks_per_core: usize,
    /// Commands per pipeline.
    pub pipeline: usize,
    /// Open-loop rate, commands per second over all cores.
    pub rate: Option<f64>,
    /// Key space.
    pub keys: u64,
    /// Key pattern.
    pub key_pattern: String,
    /// Key layout: `plain` or `tagged`.
    pub key_layout: &'static str,
    /// Tagged layout: keys that share a hash tag.
    pub keys_per_tag: Option<u64>,
    /// Value sizes, bytes (`N` or `N-M`).
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
    /// Open loop: commands due before the end that were never sent
    /// because every task was still waiting for replies.
    pub unsent: u64,
    /// Open loop: how late batches left after their intended send time,
    /// microseconds (part of the latency above: timer wake-ups, all tasks
    /// busy). `None` in a closed loop.
    pub send_lag_us: Option<Latency>,
    /// The slowest measured call whatever its outcome (succeeded, failed,
    /// timed out), microseconds from its send to its end: unlike
    /// `latency_us`, which counts successful commands only (and, in an
    /// open loop, from their intended send time). A pipeline is one call.
    pub slowest_call_us: f64,
    /// Measured calls that ended later than `late_call_threshold_us`
    /// after they were sent: past their deadline by more than 100 ms.
    pub late_calls: u64,
    /// The call deadline (`--timeout`) plus 100 ms, microseconds.
    pub late_call_threshold_us: f64,
    /// CPU time of the whole client process (every thread, user +
    /// system, from `getrusage(RUSAGE_SELF)`) over the measured phase:
    /// from the first measured batch to the end of the last core's load.
    /// `None` when nothing was measured.
    pub client_cpu_s: Option<f64>,
    /// `client_cpu_s` per measured command that ended (succeeded or
    /// failed), microseconds.
    pub client_cpu_us_per_cmd: Option<f64>,
    /// The check of acknowledged writes, with `--verify`.
    pub verify: Option<VerifyReport>,
    /// Why the run ended before its end, if it did.
    pub stopped_early: Option<String>,
    /// With `--cache`: hits / (hits + misses) over the measured phase,
    /// from the change of every core's cache counters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hit_ratio: Option<f64>,
    /// With `--cache --verify`: cached GETs that returned a value older
    /// than a write acknowledged before they were sent (`cache.reads`
    /// says how many of them broke the cache's promise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stale_reads: Option<u64>,
    /// With `--cache`: the caches' figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheReport>,
    /// On a cluster: where reads went (`--read-from`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_from: Option<String>,
    /// On a cluster: the GETs each node served over the whole run, warm-up
    /// included (`INFO commandstats` before and after; other clients'
    /// GETs count too).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gets_by_node: Option<Vec<crate::served::NodeGets>>,
}

/// What the caches did (`--cache`), summed over cores.
#[derive(Debug, Serialize)]
pub struct CacheReport {
    /// Each core's bound, bytes.
    pub max_bytes_per_core: u64,
    /// The client-side time to live of a cached GET, seconds.
    pub ttl_secs: f64,
    /// Hits over the measured phase (the caches' counters).
    pub hits: u64,
    /// Misses over the measured phase (the caches' counters; a miss that
    /// joined another task's request counts too).
    pub misses: u64,
    /// Keys evicted for room over the measured phase.
    pub evictions: u64,
    /// Keys dropped by invalidations over the measured phase (the
    /// server's, and the cores' own writes).
    pub invalidations: u64,
    /// Bytes held at the end, all cores.
    pub bytes: u64,
    /// Keys held at the end, all cores.
    pub keys: u64,
    /// Measured GETs that succeeded as hits (ended at their first poll),
    /// and their latency, microseconds.
    pub hit_latency_us: Latency,
    /// Measured hits timed.
    pub hits_timed: u64,
    /// Measured GETs that succeeded as misses (waited for the server),
    /// and their latency, microseconds.
    pub miss_latency_us: Latency,
    /// Measured misses timed.
    pub misses_timed: u64,
    /// With `--verify`: the check of every cached GET.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reads: Option<ReadReport>,
}

/// `--cache --verify`: every successful cached GET (warm-up included)
/// checked against the versions of its key's writes acknowledged before
/// it was sent (see `ReadCheck` in worker.rs).
#[derive(Debug, Serialize)]
pub struct ReadReport {
    /// GETs checked.
    pub checked: u64,
    /// GETs that returned a value older than a write acknowledged (on any
    /// core) before they were sent.
    pub stale: u64,
    /// Of those, the GETs whose newer write had been acknowledged on
    /// their own core: the cache's promise broken (must be 0).
    pub stale_own_core: u64,
    /// The others: the newer write was acknowledged on another core (its
    /// own client and cache), whose invalidation can still be on its way
    /// to this core when the read is served.
    pub stale_other_core: u64,
    /// Of the stale GETs, the misses: they joined a request another task
    /// had sent before the newer write (a request sent after it would
    /// have found it).
    pub stale_misses: u64,
    /// For the stale hits of `stale_other_core`: how long after the newer
    /// write was acknowledged the stale value was served from the cache,
    /// microseconds (a lower bound for each: the newest acknowledgement
    /// known when the GET was sent).
    pub stale_other_core_after_us: Option<Latency>,
    /// GETs not checked: a write of their key had an unknown outcome.
    pub unchecked: u64,
    /// The first few stale reads.
    pub examples: Vec<String>,
}

/// The figures of one kind of command.
#[derive(Debug, Serialize)]
pub struct OpReport {
    /// The command (`SET`, `GET`, ...; `all` for the total).
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

/// What `--verify` found.
#[derive(Debug, Default, Serialize)]
pub struct VerifyReport {
    /// Writes tracked (acknowledged or not).
    pub tracked_writes: u64,
    /// Keys whose last write was acknowledged: the keys checked.
    pub checked: u64,
    /// Keys holding the last acknowledged value.
    pub ok: u64,
    /// Keys that were missing: an acknowledged write was lost.
    pub lost: u64,
    /// Keys holding another value than the last acknowledged one.
    pub wrong: u64,
    /// Keys not checked because a later write's outcome is unknown (it
    /// timed out after being sent, or its connection died).
    pub unknown: u64,
    /// Keys whose read-back failed.
    pub read_errors: u64,
    /// SETs sent as GETs because every key drawn was being written.
    pub set_fallbacks: u64,
    /// Why the check could not run, if it could not.
    pub error: Option<String>,
    /// The first few problems, for the reader.
    pub examples: Vec<String>,
}

impl VerifyReport {
    /// True when every acknowledged write was found.
    pub fn passed(&self) -> bool {
        self.error.is_none() && self.lost == 0 && self.wrong == 0 && self.read_errors == 0
    }
}

/// Merged results of every core.
pub struct Merged {
    /// Per op: latencies.
    pub histograms: Vec<Histogram<u64>>,
    /// Per op: errors by kind.
    pub errors: Vec<BTreeMap<String, u64>>,
    /// The last measured reply on any core.
    pub last_done: Option<Instant>,
    /// Unsent commands (open loop).
    pub unsent: u64,
    /// Send lag (open loop).
    pub send_lag: Histogram<u64>,
    /// Tracked writes.
    pub tracked_writes: u64,
    /// SETs that fell back to GET.
    pub set_fallbacks: u64,
    /// The slowest call of any outcome, nanoseconds.
    pub slowest_call_ns: u64,
    /// Late calls.
    pub late_calls: u64,
    /// With `--cache`: counters, hit and miss latencies, read checks.
    pub cache: Option<MergedCache>,
}

/// The cores' caches together.
pub struct MergedCache {
    /// Counters, summed.
    pub counters: CacheCounters,
    /// Hit latencies.
    pub hits: Histogram<u64>,
    /// Miss latencies.
    pub misses: Histogram<u64>,
    /// Read checks, summed.
    pub reads: ReadCheck,
}

impl Merged {
    /// Adds up the cores' results.
    pub fn of(plan: &Plan, results: Vec<CoreResult>) -> Merged {
        let mut m = Merged {
            histograms: plan.ops.iter().map(|_| new_histogram()).collect(),
            errors: plan.ops.iter().map(|_| BTreeMap::new()).collect(),
            last_done: None,
            unsent: 0,
            send_lag: new_histogram(),
            tracked_writes: 0,
            set_fallbacks: 0,
            slowest_call_ns: 0,
            late_calls: 0,
            cache: None,
        };
        for r in results {
            if let Some(c) = r.cache {
                let m = m.cache.get_or_insert_with(|| MergedCache {
                    counters: CacheCounters::default(),
                    hits: new_histogram(),
                    misses: new_histogram(),
                    reads: ReadCheck::default(),
                });
                let (a, b) = (&mut m.counters, &c.counters);
                a.hits += b.hits;
                a.misses += b.misses;
                a.evictions += b.evictions;
                a.invalidations += b.invalidations;
                a.bytes += b.bytes;
                a.keys += b.keys;
                a.max_bytes = b.max_bytes;
                m.hits.add(&c.hits).expect("same bounds");
                m.misses.add(&c.misses).expect("same bounds");
                let (a, b) = (&mut m.reads, c.reads);
                a.checked += b.checked;
                a.stale += b.stale;
                a.stale_own_core += b.stale_own_core;
                a.unchecked += b.unchecked;
                a.stale_misses += b.stale_misses;
                a.examples.extend(b.examples);
                if let Some(h) = b.stale_other_core_after {
                    a.stale_other_core_after
                        .get_or_insert_with(new_histogram)
                        .add(&h)
                        .expect("same bounds");
                }
            }
            m.send_lag
                .add(&r.send_lag)
                .expect("histograms of the same bounds add up");
            for (all, h) in m.histograms.iter_mut().zip(&r.histograms) {
                all.add(h).expect("histograms of the same bounds add up");
            }
            for (all, e) in m.errors.iter_mut().zip(r.errors) {
                for (kind, n) in e {
                    *all.entry(kind).or_default() += n;
                }
            }
            m.last_done = match (m.last_done, r.last_done) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            m.unsent += r.unsent;
            m.tracked_writes += r.tracked_writes;
            m.set_fallbacks += r.set_fallbacks;
            m.slowest_call_ns = m.slowest_call_ns.max(r.slowest_call_ns);
            m.late_calls += r.late_calls;
        }
        m
    }

    /// Every op's latencies together.
    pub fn total(&self) -> Histogram<u64> {
        let mut all = new_histogram();
        for h in &self.histograms {
            all.add(h).expect("histograms of the same bounds add up");
        }
        all
    }
}

/// Builds the report.
pub fn build(
    plan: &Plan,
    target: String,
    merged: &Merged,
    elapsed: Duration,
    cpu: Option<CpuTime>,
    verify: Option<VerifyReport>,
) -> Report {
    let secs = elapsed.as_secs_f64();
    let op_report = |name: &str, h: &Histogram<u64>, errors: &BTreeMap<String, u64>| OpReport {
        name: name.to_owned(),
        ops: h.len(),
        ops_per_sec: if secs > 0.0 {
            h.len() as f64 / secs
        } else {
            0.0
        },
        errors: errors.values().sum(),
        errors_by_kind: errors.clone(),
        latency_us: Latency::of(h),
    };
    let commands: Vec<OpReport> = plan
        .ops
        .iter()
        .enumerate()
        .filter(|(i, o)| {
            o.weight > 0 || !merged.histograms[*i].is_empty() || !merged.errors[*i].is_empty()
        })
        .map(|(i, o)| op_report(&o.label, &merged.histograms[i], &merged.errors[i]))
        .collect();
    let mut all_errors = BTreeMap::new();
    for e in &merged.errors {
        for (kind, n) in e {
            *all_errors.entry(kind.clone()).or_default() += n;
        }
    }
    let total = op_report("all", &merged.total(), &all_errors);
    let cpu_s = cpu.map(|c| c.total().as_secs_f64());
    let ended = total.ops + total.errors;
    let cache = merged.cache.as_ref().map(|c| CacheReport {
        max_bytes_per_core: c.counters.max_bytes,
        ttl_secs: plan.cache_ttl.unwrap_or_default().as_secs_f64(),
        hits: c.counters.hits,
        misses: c.counters.misses,
        evictions: c.counters.evictions,
        invalidations: c.counters.invalidations,
        bytes: c.counters.bytes,
        keys: c.counters.keys,
        hit_latency_us: Latency::of(&c.hits),
        hits_timed: c.hits.len(),
        miss_latency_us: Latency::of(&c.misses),
        misses_timed: c.misses.len(),
        reads: plan.verify.as_ref().map(|_| ReadReport {
            checked: c.reads.checked,
            stale: c.reads.stale,
            stale_own_core: c.reads.stale_own_core,
            stale_other_core: c.reads.stale - c.reads.stale_own_core,
            stale_misses: c.reads.stale_misses,
            stale_other_core_after_us: c.reads.stale_other_core_after.as_ref().map(Latency::of),
            unchecked: c.reads.unchecked,
            examples: c.reads.examples.iter().take(10).cloned().collect(),
        }),
    });
    let hit_ratio = cache.as_ref().and_then(|c| {
        let all = c.hits + c.misses;
        (all > 0).then(|| c.hits as f64 / all as f64)
    });
    let stale_reads = cache
        .as_ref()
        .and_then(|c| c.reads.as_ref())
        .map(|r| r.stale);
    Report {
        target,
        mode: if plan.rate.is_some() {
            "open-loop"
        } else {
            "closed-loop"
        },
        cores: plan.cores,
        tasks_per_core: plan.tasks,
        pipeline: plan.pipeline,
        rate: plan.rate,
        keys: plan.keys,
        key_pattern: match plan.pattern {
            KeyPattern::Uniform => "uniform".into(),
            KeyPattern::Sequential => "sequential".into(),
            KeyPattern::Zipf(s) => format!("zipf:{s}"),
        },
        key_layout: match plan.layout {
            KeyLayout::Plain => "plain",
            KeyLayout::Tagged { .. } => "tagged",
        },
        keys_per_tag: match plan.layout {
            KeyLayout::Plain => None,
            KeyLayout::Tagged { per_tag } => Some(per_tag),
        },
        data_size: if plan.data.min == plan.data.max {
            plan.data.min.to_string()
        } else {
            format!("{}-{}", plan.data.min, plan.data.max)
        },
        warmup_secs: plan.warmup.as_secs_f64(),
        elapsed_secs: secs,
        client_cpu_s: cpu_s,
        client_cpu_us_per_cmd: cpu_s.filter(|_| ended > 0).map(|s| s * 1e6 / ended as f64),
        total,
        commands,
        unsent: merged.unsent,
        send_lag_us: plan.rate.map(|_| Latency::of(&merged.send_lag)),
        slowest_call_us: merged.slowest_call_ns as f64 / 1000.0,
        late_calls: merged.late_calls,
        late_call_threshold_us: plan.late_after.as_secs_f64() * 1e6,
        verify,
        stopped_early: None,
        hit_ratio,
        stale_reads,
        cache,
        read_from: None,
        gets_by_node: None,
    }
}

/// The report as text for a person.
pub fn text(r: &Report) -> String {
    let mut out = String::new();
    let mode = match r.rate {
        Some(rate) => format!("open loop at {} commands/s", fmt_num(rate)),
        None => "closed loop".into(),
    };
    let _ = writeln!(
        out,
        "redcore-load: {} | {} cores x {} tasks | pipeline {} | {} | {} keys {}{} | {} B values",
        r.target,
        r.cores,
        r.tasks_per_core,
        r.pipeline,
        mode,
        r.keys,
        r.key_pattern,
        match r.keys_per_tag {
            Some(n) => format!(", tagged ({n} per tag)"),
            None => String::new(),
        },
        r.data_size
    );
    let _ = write!(out, "measured {:.2} s", r.elapsed_secs);
    if r.warmup_secs > 0.0 {
        let _ = write!(out, " after {:.2} s of warm-up", r.warmup_secs);
    }
    out.push_str("; latency in microseconds\n\n");
    let _ = writeln!(
        out,
        "{:<10} {:>11} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "command", "ops", "ops/s", "p50", "p90", "p99", "p99.9", "p99.99", "max", "errors"
    );
    let rows = r.commands.iter().chain(
        // The total repeats a lone command: leave it out then.
        (r.commands.len() != 1).then_some(&r.total),
    );
    for c in rows {
        let l = &c.latency_us;
        let _ = writeln!(
            out,
            "{:<10} {:>11} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            c.name,
            c.ops,
            fmt_num(c.ops_per_sec),
            fmt_us(l.p50),
            fmt_us(l.p90),
            fmt_us(l.p99),
            fmt_us(l.p99_9),
            fmt_us(l.p99_99),
            fmt_us(l.max),
            c.errors
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
    let _ = writeln!(
        out,
        "slowest call, any outcome, send to end: {} ms; calls that ended more than {} ms \
         after they were sent (deadline + 100 ms): {}",
        fmt_us(r.slowest_call_us / 1000.0),
        fmt_us(r.late_call_threshold_us / 1000.0),
        r.late_calls
    );
    if let (Some(cpu), Some(per_cmd)) = (r.client_cpu_s, r.client_cpu_us_per_cmd) {
        let _ = writeln!(
            out,
            "client CPU (this whole process, user + system, while measuring): {cpu:.3} s, \
             {per_cmd:.2} us per command"
        );
    }
    if let Some(why) = &r.stopped_early {
        let _ = writeln!(out, "stopped early: {why}");
    }
    if let Some(c) = &r.cache {
        let _ = writeln!(
            out,
            "\ncache ({} per core, ttl {} s): hit ratio {:.4} ({} hits, {} misses); {} evictions, \
             {} invalidations; {} keys, {} bytes held at the end",
            c.max_bytes_per_core,
            c.ttl_secs,
            r.hit_ratio.unwrap_or(0.0),
            c.hits,
            c.misses,
            c.evictions,
            c.invalidations,
            c.keys,
            c.bytes
        );
        let (h, m) = (&c.hit_latency_us, &c.miss_latency_us);
        let _ = writeln!(
            out,
            "  GET hits:   p50 {} p99 {} max {} us ({} timed)\n  GET misses: p50 {} p99 {} max {} us ({} timed)",
            fmt_us(h.p50),
            fmt_us(h.p99),
            fmt_us(h.max),
            c.hits_timed,
            fmt_us(m.p50),
            fmt_us(m.p99),
            fmt_us(m.max),
            c.misses_timed
        );
        if let Some(reads) = &c.reads {
            let _ = writeln!(
                out,
                "  cached GETs checked: {}; stale: {} ({} of them misses; {} after a write \
                 acknowledged on their own core, {} after one on another core); {} not checked \
                 (a write of unknown outcome)",
                reads.checked,
                reads.stale,
                reads.stale_misses,
                reads.stale_own_core,
                reads.stale_other_core,
                reads.unchecked
            );
            if let Some(l) = &reads.stale_other_core_after_us {
                let _ = writeln!(
                    out,
                    "  stale hits after another core's write, served this long after its \
                     acknowledgement: p50 {} p99 {} max {} us",
                    fmt_us(l.p50),
                    fmt_us(l.p99),
                    fmt_us(l.max)
                );
            }
            for e in &reads.examples {
                let _ = writeln!(out, "  {e}");
            }
        }
    }
    if let Some(lag) = &r.send_lag_us {
        let _ = writeln!(
            out,
            "send lag behind the schedule (included above): p50 {} p99 {} max {} us",
            fmt_us(lag.p50),
            fmt_us(lag.p99),
            fmt_us(lag.max)
        );
    }
    if r.unsent > 0 {
        let _ = writeln!(
            out,
            "warning: {} commands due before the end were never sent: every task was waiting for \
             replies (raise --tasks, or lower --rate); their latency is not in the figures",
            r.unsent
        );
    }
    if let Some(nodes) = &r.gets_by_node {
        let _ = writeln!(
            out,
            "\nGETs served per node (read from {}, INFO commandstats, warm-up included):",
            r.read_from.as_deref().unwrap_or("primary")
        );
        for n in nodes {
            let _ = writeln!(out, "  {:<22} {:<8} {:>12}", n.addr, n.role, n.gets);
        }
    }
    if let Some(v) = &r.verify {
        let _ = writeln!(
            out,
            "\nverify: {} writes tracked; {} keys checked: {} ok, {} lost, {} wrong, {} read errors; \
             {} keys with a write of unknown outcome not checked{}",
            v.tracked_writes,
            v.checked,
            v.ok,
            v.lost,
            v.wrong,
            v.read_errors,
            v.unknown,
            if v.passed() { " -> PASS" } else { " -> FAIL" }
        );
        if v.set_fallbacks > 0 {
            let _ = writeln!(
                out,
                "  {} SETs went out as GETs: every key drawn for them was being written",
                v.set_fallbacks
            );
        }
        if let Some(e) = &v.error {
            let _ = writeln!(out, "  {e}");
        }
        for e in &v.examples {
            let _ = writeln!(out, "  {e}");
        }
    }
    out
}

fn fmt_num(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

fn fmt_us(x: f64) -> String {
    if x >= 1000.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

/// Writes the histograms as an HdrHistogram interval log: one untagged
/// interval with every command, then one tagged with each command's name
/// (spaces and commas become `_`). Values are nanoseconds; the log's max
/// column is in milliseconds (divisor 10^6, as the Java tools expect).
pub fn write_hdr_log(
    path: &Path,
    plan: &Plan,
    merged: &Merged,
    started: SystemTime,
    elapsed: Duration,
) -> Result<(), String> {
    let mut buf = Vec::new();
    let mut serializer = V2DeflateSerializer::new();
    let mut builder = IntervalLogWriterBuilder::new();
    builder
        .add_comment("redcore-load latency histograms, values in nanoseconds")
        .with_start_time(started)
        .with_base_time(started)
        .with_max_value_divisor(1_000_000.0);
    let mut writer = builder
        .begin_log_with(&mut buf, &mut serializer)
        .map_err(|e| e.to_string())?;
    writer
        .write_histogram(&merged.total(), Duration::ZERO, elapsed, None)
        .map_err(|e| e.to_string())?;
    for (op, h) in plan.ops.iter().zip(&merged.histograms) {
        if h.is_empty() {
            continue;
        }
        let name: String = op
            .label
            .chars()
            .map(|c| {
                if matches!(c, ' ' | ',' | '\r' | '\n') {
                    '_'
                } else {
                    c
                }
            })
            .collect();
        writer
            .write_histogram(h, Duration::ZERO, elapsed, Tag::new(&name))
            .map_err(|e| e.to_string())?;
    }
    drop(writer);
    std::fs::write(path, buf).map_err(|e| format!("writing {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use hdrhistogram::serialization::Deserializer;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};

    #[test]
    fn latency_in_microseconds() {
        let mut h = new_histogram();
        for ns in [1_000, 2_000, 3_000, 1_000_000] {
            h.record(ns).unwrap();
        }
        let l = Latency::of(&h);
        assert!((l.p50 - 2.0).abs() < 0.01, "{l:?}");
        assert!((l.max - 1000.0).abs() < 1.0, "{l:?}");
        assert_eq!(Latency::of(&new_histogram()).max, 0.0);
    }

    #[test]
    fn slowest_and_late_calls_in_the_report() {
        use clap::Parser;
        let cli =
            crate::args::Cli::try_parse_from(["x", "--server", "redis://a", "--timeout", "2s"])
                .unwrap();
        let plan = Plan::new(&cli, 1, false);
        let mut merged = Merged::of(&plan, Vec::new());
        merged.histograms[0].record(5_000).unwrap();
        merged.slowest_call_ns = 2_250_000_000;
        merged.late_calls = 3;
        let r = build(
            &plan,
            "t".into(),
            &merged,
            Duration::from_secs(1),
            None,
            None,
        );
        assert_eq!(r.slowest_call_us, 2_250_000.0);
        assert_eq!(r.late_calls, 3);
        assert_eq!(r.late_call_threshold_us, 2_100_000.0);
        let text = text(&r);
        assert!(
            text.contains(
                "slowest call, any outcome, send to end: 2250 ms; calls that ended more than \
                 2100 ms after they were sent (deadline + 100 ms): 3"
            ),
            "{text}"
        );
    }

    #[test]
    fn client_cpu_per_command() {
        use clap::Parser;
        let cli = crate::args::Cli::try_parse_from(["x", "--server", "redis://a"]).unwrap();
        let plan = Plan::new(&cli, 1, false);
        let mut merged = Merged::of(&plan, Vec::new());
        merged.histograms[0].record(5_000).unwrap();
        merged.histograms[1].record(5_000).unwrap();
        merged.errors[1].insert("timeout after sending".into(), 2);
        let cpu = CpuTime {
            user: Duration::from_micros(3_000),
            system: Duration::from_micros(1_000),
        };
        let r = build(
            &plan,
            "t".into(),
            &merged,
            Duration::from_secs(1),
            Some(cpu),
            None,
        );
        // 4 ms over 2 successes and 2 failures.
        assert_eq!(r.client_cpu_s, Some(0.004));
        assert_eq!(r.client_cpu_us_per_cmd, Some(1000.0));
        let shown = text(&r);
        assert!(
            shown.contains(
                "client CPU (this whole process, user + system, while measuring): 0.004 s, \
                 1000.00 us per command"
            ),
            "{shown}"
        );
        let r = build(
            &plan,
            "t".into(),
            &merged,
            Duration::from_secs(1),
            None,
            None,
        );
        assert_eq!((r.client_cpu_s, r.client_cpu_us_per_cmd), (None, None));
        assert!(!text(&r).contains("client CPU"));
    }

    #[test]
    fn hdr_log_round_trip() {
        use clap::Parser;
        let cli = crate::args::Cli::try_parse_from(["x", "--server", "redis://a"]).unwrap();
        let plan = Plan::new(&cli, 1, false);
        let mut merged = Merged::of(&plan, Vec::new());
        merged.histograms[0].record(5_000).unwrap();
        merged.histograms[1].record(7_000).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.hlog");
        write_hdr_log(
            &path,
            &plan,
            &merged,
            SystemTime::now(),
            Duration::from_secs(1),
        )
        .unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let mut tags = Vec::new();
        let mut total = 0;
        for entry in IntervalLogIterator::new(&bytes) {
            if let LogEntry::Interval(h) = entry.unwrap() {
                tags.push(h.tag().map(|t| t.as_str().to_owned()));
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(h.encoded_histogram())
                    .unwrap();
                let hist: Histogram<u64> = Deserializer::new()
                    .deserialize(&mut raw.as_slice())
                    .unwrap();
                total += hist.len();
            }
        }
        assert_eq!(tags, [None, Some("SET".into()), Some("GET".into())]);
        assert_eq!(total, 4);
    }
}
