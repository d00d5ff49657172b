//! The load: `--tasks` tasks on the one current-thread runtime, each
//! sending one command or one pipeline at a time on its clone of the
//! shared connection (closed loop), recording each command's latency.

use std::cell::{Cell, OnceCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use redis::aio::ConnectionLike;
use redis::{RedisError, Value};

use crate::args::Ratio;
use crate::cpu::CpuTime;
use crate::keys::{KeySpace, splitmix64};

/// The commands, in report order.
pub const OPS: [&str; 2] = ["SET", "GET"];
const SET: usize = 0;
const GET: usize = 1;

/// Latencies are recorded in nanoseconds, from 1 ns to an hour, with
/// three significant digits, as redcore-load records them.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600 * 1_000_000_000, 3).expect("valid histogram bounds")
}

/// What to send.
#[derive(Debug)]
pub struct Plan {
    /// Concurrent tasks.
    pub tasks: usize,
    /// Commands per pipeline.
    pub pipeline: usize,
    /// SET:GET weights.
    pub ratio: Ratio,
    /// Key names and how they are drawn.
    pub keys: KeySpace,
    /// The value every SET writes.
    pub value: Vec<u8>,
    /// Measured commands in all.
    pub requests: Option<u64>,
    /// Measured time.
    pub duration: Option<Duration>,
    /// Time run first without counting.
    pub warmup: Duration,
}

/// What the load measured.
#[derive(Debug)]
pub struct Outcome {
    /// Latencies of the successful measured commands, per op ([`OPS`]).
    pub histograms: Vec<Histogram<u64>>,
    /// Failed measured commands per op, by kind.
    pub errors: Vec<BTreeMap<String, u64>>,
    /// When measuring started (after the warm-up).
    pub measure_start: Instant,
    /// When the last measured command ended.
    pub last_done: Option<Instant>,
    /// The process's CPU time from the first measured command to the end
    /// of the last task; `None` when nothing was measured.
    pub cpu: Option<CpuTime>,
}

/// State the tasks share (all on one thread).
struct Shared {
    plan: Rc<Plan>,
    measure_start: Instant,
    end: Option<Instant>,
    /// Measured commands left to send (`--requests`).
    budget: Cell<Option<u64>>,
    /// The process's CPU time when the first measured batch was built.
    measure_start_cpu: OnceCell<CpuTime>,
}

/// What one task measured.
struct TaskStats {
    histograms: Vec<Histogram<u64>>,
    errors: Vec<BTreeMap<String, u64>>,
    last_done: Option<Instant>,
}

/// Runs the load on `conn` (cloned for every task); must run inside a
/// tokio `LocalSet`.
pub async fn run<C: ConnectionLike + Clone + 'static>(plan: Rc<Plan>, conn: C) -> Outcome {
    let start = Instant::now();
    let measure_start = start + plan.warmup;
    let shared = Rc::new(Shared {
        end: plan.duration.map(|d| measure_start + d),
        budget: Cell::new(plan.requests),
        measure_start,
        measure_start_cpu: OnceCell::new(),
        plan,
    });
    let tasks: Vec<_> = (0..shared.plan.tasks)
        .map(|t| tokio::task::spawn_local(task_loop(shared.clone(), conn.clone(), t)))
        .collect();
    let mut outcome = Outcome {
        histograms: OPS.iter().map(|_| new_histogram()).collect(),
        errors: OPS.iter().map(|_| BTreeMap::new()).collect(),
        measure_start,
        last_done: None,
        cpu: None,
    };
    for t in tasks {
        let stats = t.await.expect("a load task panicked");
        for (all, h) in outcome.histograms.iter_mut().zip(&stats.histograms) {
            all.add(h).expect("histograms of the same bounds add up");
        }
        for (all, e) in outcome.errors.iter_mut().zip(stats.errors) {
            for (kind, n) in e {
                *all.entry(kind).or_default() += n;
            }
        }
        outcome.last_done = outcome.last_done.max(stats.last_done);
    }
    outcome.cpu = shared
        .measure_start_cpu
        .get()
        .map(|at| CpuTime::now().since(at));
    outcome
}

impl Shared {
    /// The size of the next batch and whether it is measured; `None` when
    /// the load is over.
    fn next_batch(&self) -> Option<(usize, bool)> {
        let now = Instant::now();
        if self.end.is_some_and(|e| now >= e) {
            return None;
        }
        let counted = now >= self.measure_start;
        let mut n = self.plan.pipeline;
        if counted {
            self.measure_start_cpu.get_or_init(CpuTime::now);
            if let Some(left) = self.budget.get() {
                n = n.min(usize::try_from(left).unwrap_or(usize::MAX));
                if n == 0 {
                    return None;
                }
                self.budget.set(Some(left - n as u64));
            }
        }
        Some((n, counted))
    }
}

async fn task_loop<C: ConnectionLike>(shared: Rc<Shared>, mut conn: C, task: usize) -> TaskStats {
    let plan = &shared.plan;
    let mut rng = SmallRng::seed_from_u64(splitmix64(task as u64) ^ 0x5eed_10ad);
    let mut stats = TaskStats {
        histograms: OPS.iter().map(|_| new_histogram()).collect(),
        errors: OPS.iter().map(|_| BTreeMap::new()).collect(),
        last_done: None,
    };
    let weights = plan.ratio.set + plan.ratio.get;
    let mut numbers = Vec::with_capacity(plan.pipeline);
    let mut ops = Vec::with_capacity(plan.pipeline);
    let mut key = Vec::new();
    while let Some((n, counted)) = shared.next_batch() {
        plan.keys.draw(&mut rng, n, &mut numbers);
        ops.clear();
        ops.extend((0..n).map(|_| {
            if rng.random_range(0..weights) < plan.ratio.set {
                SET
            } else {
                GET
            }
        }));
        let sent;
        let result: Result<(), RedisError> = if n == 1 {
            plan.keys.name(numbers[0], &mut key);
            let mut cmd = redis::cmd(OPS[ops[0]]);
            cmd.arg(&key);
            if ops[0] == SET {
                cmd.arg(&plan.value);
            }
            sent = Instant::now();
            cmd.query_async::<Value>(&mut conn).await.map(drop)
        } else {
            let mut pipe = redis::pipe();
            for (&op, &number) in ops.iter().zip(&numbers) {
                plan.keys.name(number, &mut key);
                pipe.cmd(OPS[op]).arg(&key);
                if op == SET {
                    pipe.arg(&plan.value);
                }
            }
            sent = Instant::now();
            pipe.query_async::<Vec<Value>>(&mut conn).await.map(drop)
        };
        let done = Instant::now();
        if !counted {
            continue;
        }
        stats.last_done = Some(done);
        match result {
            // A pipeline's commands each count its latency, as in
            // redcore-load.
            Ok(()) => {
                let nanos = u64::try_from((done - sent).as_nanos())
                    .unwrap_or(u64::MAX)
                    .max(1);
                for &op in &ops {
                    stats.histograms[op].saturating_record(nanos);
                }
            }
            // redis-rs fails a whole pipeline on any error in it.
            Err(e) => {
                let kind = error_kind(&e);
                for &op in &ops {
                    *stats.errors[op].entry(kind.clone()).or_default() += 1;
                }
            }
        }
    }
    stats
}

/// A short name for the kind of an error, for the report.
fn error_kind(e: &RedisError) -> String {
    if e.is_timeout() {
        return "timeout".into();
    }
    match e.code() {
        Some(code) => format!("server {code}"),
        None => format!("{:?}", e.kind()),
    }
}
