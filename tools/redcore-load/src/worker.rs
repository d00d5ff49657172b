//! The load of one core: `--tasks` tasks sending commands on the core's
//! client, recording latencies into the core's histograms.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::pin::pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use futures_lite::future;
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use redcore::{CacheCommands, CacheStats, Commands, Error, Value};

use crate::args::{KeyPattern, Piece};
use crate::cpu::CpuTime;
use crate::plan::{Plan, id_of_value, splitmix64};

/// Latencies are recorded in nanoseconds, from 1 ns to this, with three
/// significant digits; longer ones count as this.
pub const MAX_LATENCY_NS: u64 = 3_600 * 1_000_000_000;

/// A latency histogram as every core records it.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("valid histogram bounds")
}

/// Counters of one core that the progress line and the timeline read
/// while it runs.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct LiveCounters {
    /// Measured commands that succeeded.
    pub ops: AtomicU64,
    /// Measured commands that failed.
    pub errors: AtomicU64,
    /// The slowest successful measured command since the timeline last
    /// took it (nanoseconds); the timeline swaps it to 0.
    pub slowest_ns: AtomicU64,
    /// The slowest measured call of any outcome since the timeline last
    /// took it, from its send to its end (nanoseconds); the timeline
    /// swaps it to 0.
    pub slowest_call_ns: AtomicU64,
    /// Measured calls that ended later than the deadline allows
    /// ([`Plan::late_after`]).
    pub late_calls: AtomicU64,
    /// Measured failures by kind, so far (locked only when a command
    /// fails).
    pub error_kinds: Mutex<BTreeMap<String, u64>>,
}

/// What cores tell the main thread while they run.
#[derive(Debug)]
pub enum Event {
    /// The latencies of a core so far (all commands), for the progress line.
    Snapshot {
        /// The core.
        core: usize,
        /// Its measured latencies so far.
        histogram: Box<Histogram<u64>>,
    },
    /// A core finished its load.
    Done,
}

/// State the cores and the main thread share.
#[derive(Debug)]
pub struct Shared {
    /// The load.
    pub plan: Plan,
    /// When the run started (the first core to start sets it).
    pub start: OnceLock<Instant>,
    /// Live counters, one per core.
    pub live: Vec<LiveCounters>,
    /// Set by the main thread to end the run early (the target stopped
    /// answering); tasks send nothing more.
    pub abort: AtomicBool,
    /// The process's CPU time when the first measured batch of any core
    /// was about to be built: the start of the client CPU in the report.
    pub measure_start_cpu: OnceLock<CpuTime>,
}

impl Shared {
    /// Shared state for `plan`.
    pub fn new(plan: Plan) -> Shared {
        Shared {
            live: (0..plan.cores).map(|_| LiveCounters::default()).collect(),
            plan,
            start: OnceLock::new(),
            abort: AtomicBool::new(false),
            measure_start_cpu: OnceLock::new(),
        }
    }

    /// When measuring starts (after the warm-up).
    pub fn measure_start(&self) -> Option<Instant> {
        self.start.get().map(|s| *s + self.plan.warmup)
    }
}

/// What one core measured.
#[derive(Debug)]
pub struct CoreResult {
    /// Latencies of successful commands, one histogram per op.
    pub histograms: Vec<Histogram<u64>>,
    /// Failed commands per op, by kind.
    pub errors: Vec<BTreeMap<String, u64>>,
    /// When the last measured command completed.
    pub last_done: Option<Instant>,
    /// Open loop: how late measured batches were sent after their
    /// intended time (the generator's own lag: timers, busy tasks).
    pub send_lag: Histogram<u64>,
    /// Open loop: commands due before the end that were never sent
    /// (the schedule fell behind by more than the tasks could absorb).
    pub unsent: u64,
    /// Writes that `--verify` tracked.
    pub tracked_writes: u64,
    /// Verified SETs that fell back to GET because every key drawn was
    /// being written.
    pub set_fallbacks: u64,
    /// The slowest measured call of any outcome, from its send to its end
    /// (nanoseconds; a pipeline is one call).
    pub slowest_call_ns: u64,
    /// Measured calls that took longer than [`Plan::late_after`].
    pub late_calls: u64,
    /// With `--cache`: what the core's cache did.
    pub cache: Option<CoreCache>,
}

/// What one core's cache did while measuring (`--cache`).
#[derive(Debug)]
pub struct CoreCache {
    /// The cache's counters: hits, misses, evictions and invalidations
    /// are their change over the measured phase; bytes, keys and the
    /// bound are at its end.
    pub counters: CacheCounters,
    /// Latencies of the measured GETs that were hits, nanoseconds.
    pub hits: Histogram<u64>,
    /// Latencies of the measured GETs that were misses, nanoseconds.
    pub misses: Histogram<u64>,
    /// With `--verify`: the check of every cached GET.
    pub reads: ReadCheck,
}

/// A cache's counters, as [`CacheStats`] has them.
#[derive(Debug, Default, Clone, Copy)]
pub struct CacheCounters {
    /// Reads answered from the cache.
    pub hits: u64,
    /// Reads sent to the server (joined ones included).
    pub misses: u64,
    /// Keys evicted for room.
    pub evictions: u64,
    /// Keys dropped by invalidations.
    pub invalidations: u64,
    /// Bytes held.
    pub bytes: u64,
    /// Keys held.
    pub keys: u64,
    /// The bound on bytes.
    pub max_bytes: u64,
}

impl CacheCounters {
    /// The counters from `start` to `end`.
    fn between(start: &CacheStats, end: &CacheStats) -> CacheCounters {
        CacheCounters {
            hits: end.hits.saturating_sub(start.hits),
            misses: end.misses.saturating_sub(start.misses),
            evictions: end.evictions.saturating_sub(start.evictions),
            invalidations: end.invalidations.saturating_sub(start.invalidations),
            bytes: end.bytes,
            keys: end.keys,
            max_bytes: end.max_bytes,
        }
    }
}

/// `--cache --verify`: every cached GET that succeeded, checked against
/// the writes acknowledged before it was sent (warm-up included).
///
/// When a GET is sent, the write table gives the version of its key's
/// last acknowledged write (on any core), and the core's own record the
/// version of the last one acknowledged on this core (through this
/// core's client and cache); the value read carries the version of the
/// write that stored it (an earlier run's value, or none, counts as 0).
/// A write in flight when the GET is sent may or may not be seen: only
/// versions acknowledged before the send count.
#[derive(Debug, Default, Clone)]
pub struct ReadCheck {
    /// GETs checked.
    pub checked: u64,
    /// GETs that returned a value older than a write acknowledged before
    /// they were sent.
    pub stale: u64,
    /// Of those, the GETs whose newer write had been acknowledged on the
    /// same core: what the cache promises never to do (its own writes).
    /// The others read through another core's client, whose write reaches
    /// this core's cache as the server's invalidation, which may still
    /// be on its way.
    pub stale_own_core: u64,
    /// Of the stale reads, those that were misses (a miss sent after the
    /// newer write would have found it: these joined a request another
    /// task had sent before it).
    pub stale_misses: u64,
    /// GETs not checked: a write of their key had an unknown outcome.
    pub unchecked: u64,
    /// The stale hits of another core's write: how long after that
    /// write was acknowledged they returned, nanoseconds (at least: the
    /// time of the last acknowledged write when the GET was sent, or of a
    /// later one).
    pub stale_other_core_after: Option<Histogram<u64>>,
    /// The first few stale reads, for the reader.
    pub examples: Vec<String>,
}

/// A short name for the kind of an error, for the report.
pub fn error_kind(e: &Error) -> String {
    let kind = match e {
        Error::Server(s) => return format!("server {}", String::from_utf8_lossy(s.code())),
        Error::Timeout {
            maybe_applied: true,
        } => "timeout after sending",
        Error::Timeout {
            maybe_applied: false,
        } => "timeout before sending",
        Error::ConnectionLost => "connection lost",
        Error::Closed(_) => "closed",
        Error::Connect { .. } => "cannot connect",
        Error::Io(_) => "i/o",
        Error::Protocol(_) => "protocol",
        Error::Conversion(_) => "conversion",
        Error::CrossSlot { .. } => "cross-slot",
        Error::MalformedCommand { .. } => "malformed command",
        Error::Tls(_) => "tls",
        Error::Handshake(_) => "handshake",
        Error::NoTopology { .. } => "no topology",
        Error::TooManyRedirects { .. } => "too many redirects",
        Error::CoreStopped { .. } => "core stopped",
        Error::SlotUnserved { .. } => "slot unserved",
        Error::Unsupported { .. } => "unsupported command",
        _ => "other",
    };
    kind.to_owned()
}

/// Whether a command that failed with `e` may have been applied.
pub fn maybe_applied(e: &Error) -> bool {
    !matches!(
        e,
        Error::Server(_)
            | Error::Timeout {
                maybe_applied: false,
            }
            | Error::Closed(_)
            | Error::Connect { .. }
            | Error::CrossSlot { .. }
            | Error::MalformedCommand { .. }
            | Error::Unsupported { .. }
            | Error::NoTopology { .. }
            | Error::SlotUnserved { .. }
            | Error::TooManyRedirects { .. }
            | Error::CoreStopped {
                maybe_applied: false,
                ..
            }
    )
}

/// The open-loop schedule of one core: batch `k` is due at
/// `start + (k + phase) * interval`.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    start: Instant,
    interval: f64,
    phase: f64,
}

impl Schedule {
    fn at(&self, k: u64) -> Instant {
        self.start + Duration::from_secs_f64((k as f64 + self.phase) * self.interval)
    }

    /// How many batches are due strictly before `end`.
    fn due_before(&self, end: Instant) -> u64 {
        let t = end.saturating_duration_since(self.start).as_secs_f64() / self.interval;
        (t - self.phase).ceil().max(0.0) as u64
    }
}

/// One argument of an op, ready to fill.
#[derive(Debug)]
enum ArgKind {
    Lit(Vec<u8>),
    Key,
    Data,
    /// Pieces assembled per request into a buffer of the slot.
    Mixed(Vec<Piece>),
}

/// One command being sent by a task.
#[derive(Debug, Default)]
struct Slot {
    op: usize,
    key_index: u64,
    key: Vec<u8>,
    /// The value of a verified write.
    value: Vec<u8>,
    /// The filler length of an unverified value.
    size: usize,
    /// The id of a verified write.
    write: Option<u64>,
    /// Arguments assembled from several pieces.
    mixed: Vec<Vec<u8>>,
}

struct Stats {
    histograms: Vec<Histogram<u64>>,
    errors: Vec<BTreeMap<String, u64>>,
    last_done: Option<Instant>,
    send_lag: Histogram<u64>,
    slowest_call_ns: u64,
    late_calls: u64,
    hits: Histogram<u64>,
    misses: Histogram<u64>,
    reads: ReadCheck,
}

impl Stats {
    fn new(ops: usize) -> Stats {
        Stats {
            histograms: (0..ops).map(|_| new_histogram()).collect(),
            errors: (0..ops).map(|_| BTreeMap::new()).collect(),
            last_done: None,
            send_lag: new_histogram(),
            slowest_call_ns: 0,
            late_calls: 0,
            hits: new_histogram(),
            misses: new_histogram(),
            reads: ReadCheck::default(),
        }
    }
}

/// What a cached GET sent now must not return anything older than.
#[derive(Debug, Clone, Copy)]
struct ReadFloor {
    /// The version of the key's last write acknowledged on any core.
    acked: u64,
    /// When that write was acknowledged (or a later one).
    acked_at: Option<Instant>,
    /// The version of the key's last write acknowledged on this core.
    own: u64,
}

/// Stale reads listed per core.
const STALE_EXAMPLES: usize = 5;

/// The state of one core, shared by its tasks; `C` is the client it sends
/// on (a connection to one server, or a core of the per-core runtime).
struct Core<C> {
    index: usize,
    shared: Arc<Shared>,
    client: C,
    ops: Vec<Vec<ArgKind>>,
    measure_start: Instant,
    end: Option<Instant>,
    /// Measured commands left to send (`--requests`).
    budget: Cell<Option<u64>>,
    schedule: Option<Schedule>,
    next_batch: Cell<u64>,
    seq: Cell<u64>,
    writes: Cell<u64>,
    fallbacks: Cell<u64>,
    /// Whether this core has seen a measured batch (and so made sure
    /// [`Shared::measure_start_cpu`] is taken).
    measuring: Cell<bool>,
    zipf: Option<Zipf<f64>>,
    stats: RefCell<Stats>,
    /// `--cache`: the cache's counters when measuring began.
    cache_start: RefCell<Option<CacheStats>>,
    /// `--cache --verify`: the version of each key's last write
    /// acknowledged on this core.
    own_acked: RefCell<HashMap<u64, u64>>,
}

/// Runs the load of core `index` on `client` and returns what it measured.
pub async fn run_core<C: Commands + CacheCommands + 'static>(
    index: usize,
    client: C,
    shared: Arc<Shared>,
    events: mpsc::Sender<Event>,
) -> CoreResult {
    let plan = &shared.plan;
    let start = *shared.start.get_or_init(Instant::now);
    let measure_start = start + plan.warmup;
    let end = plan.duration.map(|d| measure_start + d);
    let schedule = plan.rate.map(|rate| {
        let per_core = rate / plan.cores as f64;
        Schedule {
            start,
            interval: plan.pipeline as f64 / per_core,
            phase: index as f64 / plan.cores as f64,
        }
    });
    let budget = plan.requests.map(|n| {
        let cores = plan.cores as u64;
        n / cores + u64::from((index as u64) < n % cores)
    });
    let ops = plan
        .ops
        .iter()
        .map(|o| {
            o.args
                .iter()
                .map(|pieces| match pieces.as_slice() {
                    [Piece::Lit(b)] => ArgKind::Lit(b.clone()),
                    [Piece::Key] => ArgKind::Key,
                    [Piece::Data] => ArgKind::Data,
                    _ => ArgKind::Mixed(pieces.clone()),
                })
                .collect()
        })
        .collect();
    let core = Rc::new(Core {
        index,
        client,
        ops,
        measure_start,
        end,
        budget: Cell::new(budget),
        schedule,
        next_batch: Cell::new(0),
        seq: Cell::new(index as u64 * plan.keys / plan.cores as u64),
        writes: Cell::new(0),
        fallbacks: Cell::new(0),
        measuring: Cell::new(false),
        zipf: match plan.pattern {
            KeyPattern::Zipf(s) => Some(Zipf::new(plan.keys as f64, s).expect("a valid Zipf law")),
            _ => None,
        },
        stats: RefCell::new(Stats::new(plan.ops.len())),
        cache_start: RefCell::new(None),
        own_acked: RefCell::new(HashMap::new()),
        shared: shared.clone(),
    });

    let tasks: Vec<_> = (0..plan.tasks)
        .map(|t| glommio::spawn_local(task_loop(core.clone(), t)))
        .collect();
    let all_done = async {
        for t in tasks {
            t.await;
        }
    };
    if plan.progress {
        let snapshots = async {
            loop {
                glommio::timer::sleep(Duration::from_secs(1)).await;
                let _ = events.send(Event::Snapshot {
                    core: index,
                    histogram: Box::new(core.combined()),
                });
            }
        };
        future::or(all_done, snapshots).await;
    } else {
        all_done.await;
    }
    let _ = events.send(Event::Done);

    let unsent = match (core.schedule, core.end) {
        (Some(s), Some(end)) => {
            s.due_before(end)
                .saturating_sub(core.next_batch.get().min(s.due_before(end)))
                * plan.pipeline as u64
        }
        _ => 0,
    };
    let stats = core.stats.replace(Stats::new(0));
    let cache = plan.cache_ttl.map(|_| {
        let end = core.client.cache_stats().unwrap_or_default();
        let start = core.cache_start.borrow().unwrap_or(end);
        CoreCache {
            counters: CacheCounters::between(&start, &end),
            hits: stats.hits,
            misses: stats.misses,
            reads: stats.reads,
        }
    });
    CoreResult {
        histograms: stats.histograms,
        errors: stats.errors,
        last_done: stats.last_done,
        send_lag: stats.send_lag,
        unsent,
        tracked_writes: core.writes.get(),
        set_fallbacks: core.fallbacks.get(),
        slowest_call_ns: stats.slowest_call_ns,
        late_calls: stats.late_calls,
        cache,
    }
}

impl<C> Core<C> {
    fn plan(&self) -> &Plan {
        &self.shared.plan
    }

    /// The latencies of every op so far, in one histogram.
    fn combined(&self) -> Histogram<u64> {
        let stats = self.stats.borrow();
        let mut all = new_histogram();
        for h in &stats.histograms {
            let _ = all.add(h);
        }
        all
    }

    /// Waits for the next batch's turn: its intended send time (open
    /// loop), whether it is measured, and how many commands it has.
    /// `None` when the load is over.
    async fn next_batch(&self) -> Option<(Option<Instant>, bool, usize)> {
        let now = Instant::now();
        if self.end.is_some_and(|e| now >= e) || self.shared.abort.load(Ordering::Relaxed) {
            return None;
        }
        let intended = match &self.schedule {
            Some(s) => {
                let k = self.next_batch.get();
                let at = s.at(k);
                if self.end.is_some_and(|e| at >= e) {
                    return None;
                }
                self.next_batch.set(k + 1);
                Some(at)
            }
            None => None,
        };
        let counted = intended.unwrap_or(now) >= self.measure_start;
        if counted && !self.measuring.get() {
            self.measuring.set(true);
            self.shared.measure_start_cpu.get_or_init(CpuTime::now);
        }
        let mut n = self.plan().pipeline;
        if let (true, Some(left)) = (counted, self.budget.get()) {
            n = n.min(usize::try_from(left).unwrap_or(usize::MAX));
            if n == 0 {
                return None;
            }
            self.budget.set(Some(left - n as u64));
        }
        if let Some(at) = intended {
            let now = Instant::now();
            // Timers cost more than a few microseconds of earliness.
            if at > now + Duration::from_micros(20) {
                glommio::timer::sleep(at - now).await;
            }
        }
        Some((intended, counted, n))
    }

    /// The next key index; `first` is the index of the first key of the
    /// pipeline being built, if this is not its first key.
    fn next_key(&self, rng: &mut SmallRng, first: Option<u64>) -> u64 {
        let plan = self.plan();
        let keys = plan.keys;
        // Tagged layout: a pipeline keeps its first key's tag.
        if let (Some(run), false) = (
            first.and_then(|f| plan.tag_run(f)),
            matches!(plan.pattern, KeyPattern::Sequential),
        ) {
            return rng.random_range(run);
        }
        match plan.pattern {
            KeyPattern::Uniform => rng.random_range(0..keys),
            KeyPattern::Sequential => {
                let k = self.seq.get();
                self.seq.set(if k + 1 >= keys { 0 } else { k + 1 });
                k
            }
            KeyPattern::Zipf(_) => {
                let z = self.zipf.as_ref().expect("a Zipf law for zipf keys");
                (z.sample(rng) as u64).clamp(1, keys) - 1
            }
        }
    }

    /// `--cache --verify`: what a GET of `key` sent now must not return
    /// anything older than: the version of the key's last write
    /// acknowledged anywhere, and on this core; `None` when a write's
    /// outcome is unknown (or without `--verify`).
    fn read_floor(&self, key: u64) -> Option<ReadFloor> {
        let table = self.plan().verify.as_ref()?;
        let acked = table.acknowledged_version(key)?;
        Some(ReadFloor {
            acked,
            acked_at: table.acknowledged_at(key),
            own: self.own_acked.borrow().get(&key).copied().unwrap_or(0),
        })
    }

    /// Checks what a cached GET of `key` returned against `floor`, taken
    /// when it was sent ([`Core::read_floor`]).
    fn check_read(
        &self,
        key: &[u8],
        floor: Option<ReadFloor>,
        value: &Value,
        hit: bool,
        done: Instant,
    ) {
        let Some(table) = self.plan().verify.as_ref() else {
            return;
        };
        let mut stats = self.stats.borrow_mut();
        let reads = &mut stats.reads;
        let Some(ReadFloor {
            acked,
            acked_at,
            own,
        }) = floor
        else {
            reads.unchecked += 1;
            return;
        };
        reads.checked += 1;
        let version = match value {
            Value::BulkString(b) => id_of_value(b).map_or(0, |id| table.version_of(id)),
            _ => 0,
        };
        if version < acked {
            reads.stale += 1;
            if !hit {
                reads.stale_misses += 1;
            }
            let own_core = version < own;
            if own_core {
                reads.stale_own_core += 1;
            } else if let (true, Some(at)) = (hit, acked_at) {
                let ns = done.saturating_duration_since(at).as_nanos();
                reads
                    .stale_other_core_after
                    .get_or_insert_with(new_histogram)
                    .saturating_record(u64::try_from(ns).unwrap_or(u64::MAX).max(1));
            }
            if reads.examples.len() < STALE_EXAMPLES {
                reads.examples.push(format!(
                    "core {}: {} {} version {version} after version {acked} was acknowledged \
                     ({})",
                    self.index,
                    String::from_utf8_lossy(key),
                    if hit { "hit" } else { "missed, read" },
                    if own_core {
                        format!("version {own} on this core")
                    } else {
                        "on another core".to_owned()
                    }
                ));
            }
        }
    }

    /// Chooses the op, key and value of a command; `first` is the key
    /// index of the pipeline's first command, unless this is it.
    fn prepare(&self, slot: &mut Slot, rng: &mut SmallRng, first: Option<u64>) {
        let plan = self.plan();
        let mut op = plan.pick_op(rng.random_range(0..plan.total_weight()));
        let mut key = self.next_key(rng, first);
        slot.write = None;
        if plan.ops[op].verified_set {
            let table = plan.verify.as_ref().expect("a write table with --verify");
            let mut locked = table.try_lock(key);
            // Writes to one key must not overlap: draw another key while
            // this one is being written.
            for _ in 0..8 {
                if locked.is_some() {
                    break;
                }
                key = self.next_key(rng, first);
                locked = table.try_lock(key);
            }
            if let Some(id) = locked {
                self.writes.set(self.writes.get() + 1);
                plan.verified_value(id, &mut slot.value);
                slot.write = Some(id);
            } else {
                self.fallbacks.set(self.fallbacks.get() + 1);
                op = plan.get_op.expect("GET is in the SET/GET mix");
            }
        }
        if slot.write.is_none() && plan.data.max > plan.data.min {
            slot.size = rng.random_range(plan.data.min..=plan.data.max);
        } else {
            slot.size = plan.data.min;
        }
        slot.op = op;
        slot.key_index = key;
        plan.key(key, &mut slot.key);
        let mut m = 0;
        for arg in &self.ops[op] {
            if let ArgKind::Mixed(pieces) = arg {
                if slot.mixed.len() <= m {
                    slot.mixed.push(Vec::new());
                }
                let buf = &mut slot.mixed[m];
                buf.clear();
                for p in pieces {
                    match p {
                        Piece::Lit(b) => buf.extend_from_slice(b),
                        Piece::Key => buf.extend_from_slice(&slot.key),
                        Piece::Data => {
                            buf.extend_from_slice(data_of(plan, slot.write, &slot.value, slot.size))
                        }
                    }
                }
                m += 1;
            }
        }
    }

    /// Records the outcome of a batch: `latency` is what the histograms
    /// count (from the intended send time in an open loop), `call` the
    /// call itself, from its send to its end.
    fn finish(
        &self,
        slots: &[Slot],
        result: &Result<Vec<Value>, Error>,
        latency: Duration,
        call: Duration,
        counted: bool,
        done: Instant,
    ) {
        let plan = self.plan();
        let mut stats = self.stats.borrow_mut();
        let (mut ok, mut failed) = (0u64, 0u64);
        let mut kinds: Vec<String> = Vec::new();
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX).max(1);
        for (i, slot) in slots.iter().enumerate() {
            let outcome: Result<(), (String, bool)> = match result {
                Ok(values) => match values.get(i) {
                    Some(Value::Error(e)) => Err((
                        format!("server {}", String::from_utf8_lossy(e.code())),
                        false,
                    )),
                    Some(_) => Ok(()),
                    None => Err(("missing reply".into(), true)),
                },
                Err(e) => Err((error_kind(e), maybe_applied(e))),
            };
            if let (Some(id), Some(table)) = (slot.write, plan.verify.as_ref()) {
                match &outcome {
                    Ok(()) => {
                        table.acknowledged(slot.key_index, id);
                        if plan.cache_ttl.is_some() {
                            self.own_acked
                                .borrow_mut()
                                .insert(slot.key_index, table.version_of(id));
                        }
                    }
                    Err((_, maybe)) => table.failed(slot.key_index, id, *maybe),
                }
            }
            if !counted {
                continue;
            }
            match outcome {
                Ok(()) => {
                    stats.histograms[slot.op].saturating_record(nanos);
                    ok += 1;
                }
                Err((kind, _)) => {
                    *stats.errors[slot.op].entry(kind.clone()).or_default() += 1;
                    kinds.push(kind);
                    failed += 1;
                }
            }
        }
        if counted {
            stats.last_done = Some(stats.last_done.map_or(done, |d| d.max(done)));
            let live = &self.shared.live[self.index];
            let call_ns = u64::try_from(call.as_nanos()).unwrap_or(u64::MAX);
            stats.slowest_call_ns = stats.slowest_call_ns.max(call_ns);
            live.slowest_call_ns.fetch_max(call_ns, Ordering::Relaxed);
            if call > plan.late_after {
                stats.late_calls += 1;
                live.late_calls.fetch_add(1, Ordering::Relaxed);
            }
            live.ops.fetch_add(ok, Ordering::Relaxed);
            if ok > 0 {
                live.slowest_ns.fetch_max(nanos, Ordering::Relaxed);
            }
            if failed > 0 {
                let mut all = live.error_kinds.lock().unwrap_or_else(|e| e.into_inner());
                for kind in kinds {
                    *all.entry(kind).or_default() += 1;
                }
                live.errors.fetch_add(failed, Ordering::Relaxed);
            }
        }
    }
}

fn data_of<'a>(plan: &'a Plan, write: Option<u64>, value: &'a [u8], size: usize) -> &'a [u8] {
    match write {
        Some(_) => value,
        None => &plan.filler[..size],
    }
}

async fn task_loop<C: Commands + CacheCommands>(core: Rc<Core<C>>, task: usize) {
    let plan = core.plan();
    let seed = splitmix64(((core.index as u64) << 32) | task as u64) ^ 0x5eed_10ad;
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut slots: Vec<Slot> = (0..plan.pipeline).map(|_| Slot::default()).collect();
    let mut bounds: Vec<Range<usize>> = Vec::with_capacity(plan.pipeline);
    while let Some((intended, counted, n)) = core.next_batch().await {
        let mut first = None;
        for slot in &mut slots[..n] {
            core.prepare(slot, &mut rng, first);
            first.get_or_insert(slot.key_index);
        }
        if let Some(ttl) = plan.cache_ttl {
            if counted && core.cache_start.borrow().is_none() {
                *core.cache_start.borrow_mut() = core.client.cache_stats();
            }
            if n == 1 && Some(slots[0].op) == plan.get_op {
                let hit = cached_get(&core, &slots[0], ttl, intended, counted).await;
                if hit {
                    // A hit does not wait: let the other tasks run.
                    glommio::yield_if_needed().await;
                }
                continue;
            }
        }
        let mut flat: Vec<&[u8]> = Vec::with_capacity(n * 4);
        bounds.clear();
        for slot in &slots[..n] {
            let from = flat.len();
            let mut m = 0;
            for arg in &core.ops[slot.op] {
                flat.push(match arg {
                    ArgKind::Lit(b) => b,
                    ArgKind::Key => &slot.key,
                    ArgKind::Data => data_of(plan, slot.write, &slot.value, slot.size),
                    ArgKind::Mixed(_) => {
                        m += 1;
                        &slot.mixed[m - 1]
                    }
                });
            }
            bounds.push(from..flat.len());
        }
        let sent = Instant::now();
        let result = if n == 1 {
            core.client.command::<Value>(&flat).await.map(|v| vec![v])
        } else {
            let cmds: Vec<&[&[u8]]> = bounds.iter().map(|r| &flat[r.clone()]).collect();
            core.client.pipeline(&cmds).await
        };
        let done = Instant::now();
        // Open loop: from the intended time, so that waiting for a free
        // task or a slow server counts (no coordinated omission).
        let from = intended.map_or(sent, |at| at.min(sent));
        if let (true, Some(at)) = (counted, intended) {
            let lag = sent.saturating_duration_since(at).as_nanos();
            let mut stats = core.stats.borrow_mut();
            stats
                .send_lag
                .saturating_record(u64::try_from(lag).unwrap_or(u64::MAX).max(1));
        }
        core.finish(
            &slots[..n],
            &result,
            done - from,
            done - sent,
            counted,
            done,
        );
    }
}

/// Sends the GET of `slot` as a cached read and records it; true when it
/// was a hit.
///
/// A hit is a call that ended at its first poll: a hit answers from the
/// core's cache without waiting, and a miss always waits for the server
/// (its own request, or another task's it joined). Exact per call, with
/// no read of the cache's counters (which other tasks move while a miss
/// waits).
async fn cached_get<C: Commands + CacheCommands>(
    core: &Core<C>,
    slot: &Slot,
    ttl: Duration,
    intended: Option<Instant>,
    counted: bool,
) -> bool {
    let floor = core.read_floor(slot.key_index);
    let sent = Instant::now();
    let (result, hit) = {
        let mut call = pin!(core.client.cached_get::<Value>(&slot.key[..], ttl));
        match future::poll_once(call.as_mut()).await {
            Some(r) => {
                let hit = r.is_ok();
                (r, hit)
            }
            None => (call.await, false),
        }
    };
    let done = Instant::now();
    let from = intended.map_or(sent, |at| at.min(sent));
    if let Ok(value) = &result {
        core.check_read(&slot.key, floor, value, hit, done);
    }
    if counted {
        let nanos = u64::try_from((done - from).as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut stats = core.stats.borrow_mut();
        if let Some(at) = intended {
            let lag = sent.saturating_duration_since(at).as_nanos();
            stats
                .send_lag
                .saturating_record(u64::try_from(lag).unwrap_or(u64::MAX).max(1));
        }
        if result.is_ok() {
            if hit {
                stats.hits.saturating_record(nanos);
            } else {
                stats.misses.saturating_record(nanos);
            }
        }
    }
    let result = result.map(|v| vec![v]);
    core.finish(
        std::slice::from_ref(slot),
        &result,
        done - from,
        done - sent,
        counted,
        done,
    );
    hit
}
