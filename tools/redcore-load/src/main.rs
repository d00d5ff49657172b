//! `redcore-load`: a load generator for Redis and Redis Cluster on
//! redcore's per-core runtime. `redcore-load --help` lists the options.
//!
//! `--pubsub channels|sharded` runs a pub/sub load on one core instead
//! (the `pubsub` module says how).
//!
//! Exit status: 0 when the run completed, 1 when the target could not be
//! reached, no command succeeded (with `--pubsub`: no message delivered), the run stopped early (commands failed
//! and none succeeded for `--stall-limit`), or `--verify` found a lost or
//! wrong write, 2 for bad arguments.

mod args;
mod plan;
mod pubsub;
mod report;
mod served;
mod timeline;
mod verify;
mod worker;

use load_common::cpu;

use std::io::{IsTerminal, Write as _};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant, SystemTime};

use clap::{CommandFactory, Parser};
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;
use redcore::cluster::NodeAddr;
use redcore::config::IntoNodeAddr as _;
use redcore::config::{ConnectionConfigBuilder, ServerAddr};
use redcore::runtime::Ownership;
use redcore::{CacheOptions, ClusterConfig, ClusterExecutor, Connection, ConnectionConfig};

use crate::args::{Cli, ClusterClientArg, OwnershipArg, PubSubArg};
use crate::cpu::CpuTime;
use crate::plan::Plan;
use crate::report::Merged;
use crate::timeline::Timeline;
use crate::worker::{CoreResult, Event, Shared, new_histogram, run_core};

/// What the load goes to.
#[derive(Clone, Debug)]
pub enum Target {
    /// One server.
    Server(ConnectionConfig),
    /// A cluster.
    Cluster(ClusterConfig),
}

impl Target {
    /// The target from the command line; `Err` is a usage error.
    fn from_cli(cli: &Cli) -> Result<Target, String> {
        if let Some(uri) = &cli.server {
            let mut builder = ConnectionConfigBuilder::from_uri(uri)
                .map_err(|e| format!("--server: {e}"))?
                .timeout(cli.timeout);
            if let Some(ca) = &cli.tls_ca {
                builder = builder.tls_ca_file(ca);
            }
            if let Some(size) = cli.cache {
                builder = builder.cache(CacheOptions::with_max_bytes(size));
            }
            let config = builder.build().map_err(|e| format!("--server: {e}"))?;
            return Ok(Target::Server(config));
        }
        let seeds = cli.cluster.as_deref().unwrap_or_default();
        let mut parts = seeds.split(',').map(str::trim).filter(|s| !s.is_empty());
        let first = parts
            .next()
            .ok_or("--cluster: no seed given; expected host:port[,host:port...]")?;
        let mut config = if first.contains("://") {
            ClusterConfig::from_uri(first)
        } else {
            ClusterConfig::builder().seed(first).build()
        }
        .map_err(|e| format!("--cluster: {e}"))?;
        for seed in parts {
            let addr: NodeAddr = seed
                .parse()
                .map_err(|e| format!("--cluster: seed {seed:?}: {e}"))?;
            config.seeds.push(addr);
        }
        let mut node = config.node.clone().into_builder().timeout(cli.timeout);
        if let Some(ca) = &cli.tls_ca {
            node = node.tls_ca_file(ca);
        }
        if let Some(size) = cli.cache {
            node = node.cache(CacheOptions::with_max_bytes(size));
        }
        config.node = node.build().map_err(|e| format!("--cluster: {e}"))?;
        if let Some(r) = &cli.read_from {
            config.read_from = r.strategy;
            config.replicas.client_zone = r.zone.clone();
        }
        if !cli.node_zone.is_empty() {
            let mut zones = std::collections::HashMap::new();
            for (addr, zone) in &cli.node_zone {
                let addr = addr
                    .as_str()
                    .into_node_addr()
                    .map_err(|e| format!("--node-zone {addr:?}: {e}"))?;
                zones.insert(addr, zone.clone());
            }
            config.replicas.node_zones = redcore::config::NodeZones::Table(zones);
        }
        config.validate().map_err(|e| format!("--cluster: {e}"))?;
        Ok(Target::Cluster(config))
    }

    /// A description without secrets.
    fn describe(&self) -> String {
        let node = |c: &ConnectionConfig| match &c.addr {
            ServerAddr::Tcp { host, port } => {
                let scheme = if c.tls.is_some() { "rediss" } else { "redis" };
                let host = if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host.clone()
                };
                let db = c.database.map(|d| format!("/{d}")).unwrap_or_default();
                format!("{scheme}://{host}:{port}{db}")
            }
            ServerAddr::Unix(path) => format!("unix://{}", path.display()),
            other => format!("{other:?}"),
        };
        match self {
            Target::Server(c) => format!("server {}", node(c)),
            Target::Cluster(c) => {
                let seeds: Vec<String> = c.seeds.iter().map(ToString::to_string).collect();
                let tls = if c.node.tls.is_some() { " (TLS)" } else { "" };
                format!("cluster {}{tls}", seeds.join(","))
            }
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.verify && cli.keys > MAX_VERIFIED_KEYS {
        usage_error(&format!(
            "--verify keeps 8 bytes per key: at most {MAX_VERIFIED_KEYS} keys (--keys)"
        ));
    }
    if cli.ownership.is_some() && cli.server.is_some() {
        usage_error("--ownership is for --cluster: a --server core has its own connection");
    }
    if cli.cache.is_some() && cli.pipeline > 1 {
        usage_error("--cache sends each GET as a cached read of its own: leave --pipeline out");
    }
    if cli.read_from.is_some() && cli.server.is_some() {
        usage_error("--read-from is for --cluster: a --server has no replicas to read from");
    }
    // Find out now, not after the run, that the log cannot be written.
    if let Some(path) = &cli.hdr_out {
        if let Err(e) = std::fs::File::create(path) {
            usage_error(&format!("--hdr-out {}: {e}", path.display()));
        }
    }
    let timeline = match cli.timeline.as_deref().map(Timeline::create).transpose() {
        Ok(t) => t,
        Err(msg) => usage_error(&msg),
    };
    let target = match Target::from_cli(&cli) {
        Ok(t) => t,
        Err(msg) => usage_error(&msg),
    };
    if let Some(kind) = cli.pubsub {
        if cli.cores.is_some_and(|n| n != 1) {
            usage_error("--pubsub runs on one core: leave --cores out or give 1");
        }
        return match run_pubsub(&cli, &target, kind) {
            Ok(code) => code,
            Err(msg) => {
                eprintln!("redcore-load: {msg}");
                ExitCode::from(1)
            }
        };
    }
    if cli.rate == Some(0.0) {
        usage_error(
            "--rate 0 (as fast as possible) is for --pubsub; leave --rate out for a closed loop",
        );
    }
    match run(&cli, &target, timeline) {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("redcore-load: {msg}");
            ExitCode::from(1)
        }
    }
}

/// The pub/sub load (`--pubsub`) on the first online CPU: runs it and
/// prints its report.
fn run_pubsub(cli: &Cli, target: &Target, kind: PubSubArg) -> Result<ExitCode, String> {
    let plan = pubsub::hub::Plan {
        kind: match kind {
            PubSubArg::Channels => pubsub::hub::Kind::Channels,
            PubSubArg::Sharded => pubsub::hub::Kind::Sharded,
        },
        channel_names: (0..cli.channels as usize)
            .map(|i| pubsub::message::channel_name(&cli.channel_prefix, i))
            .collect(),
        prefix: cli.channel_prefix.clone(),
        publishers: cli.publishers as usize,
        subscribers: cli.subscribers as usize,
        in_flight: cli.in_flight as usize,
        message_size: cli.message_size as usize,
        rate: cli.rate.unwrap_or(0.0),
        tick: cli.tick,
        requests: cli.requests,
        duration: cli.measure_duration(),
        warmup: cli.warmup,
        tail: cli.tail,
    };
    let cpu = online_cpus()?[0];
    let cluster_client = match cli.cluster_client {
        ClusterClientArg::Executor => pubsub::ClusterClient::Executor,
        ClusterClientArg::Cluster => pubsub::ClusterClient::Cluster,
    };
    let run = pubsub::run(target, plan, cpu, cli.spin, cluster_client)?;
    let report = pubsub::report::build(
        "redcore",
        target.describe(),
        run.api,
        &run.hub,
        &run.outcome,
    );
    let out = if cli.json {
        let mut json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        json.push('\n');
        json
    } else {
        pubsub::report::text(&report)
    };
    // A closed pipe (`| head`) is not worth a panic.
    let _ = std::io::stdout().lock().write_all(out.as_bytes());
    if report.delivered == 0 {
        eprintln!("redcore-load: no message was delivered");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// The largest key space `--verify` tracks (800 MB of table).
const MAX_VERIFIED_KEYS: u64 = 100_000_000;

fn usage_error(msg: &str) -> ! {
    Cli::command()
        .error(clap::error::ErrorKind::ValueValidation, msg)
        .exit()
}

/// The online CPUs, sorted.
fn online_cpus() -> Result<Vec<usize>, String> {
    let set = glommio::CpuSet::online().map_err(|e| format!("reading the online CPUs: {e}"))?;
    let mut cpus: Vec<usize> = set.into_iter().map(|l| l.cpu).collect();
    cpus.sort_unstable();
    cpus.dedup();
    if cpus.is_empty() {
        return Err("no online CPU found".into());
    }
    Ok(cpus)
}

fn run(cli: &Cli, target: &Target, mut timeline: Option<Timeline>) -> Result<ExitCode, String> {
    let cpus = online_cpus()?;
    let cores = cli.cores.map_or(cpus.len(), |n| n as usize);
    let progress = std::io::stderr().is_terminal();
    let shared = Arc::new(Shared::new(Plan::new(cli, cores, progress)));
    let (events_tx, events) = mpsc::channel();

    // GETs counted by every node before the run (INFO commandstats).
    let served_before = match target {
        Target::Cluster(config) => Some(served::count(config)?),
        Target::Server(_) => None,
    };
    let joiner: Box<dyn FnOnce() -> Vec<Result<CoreResult, String>>> = match target {
        Target::Server(config) => {
            let handles = start_servers(config, &cpus, &shared, events_tx, cli)?;
            Box::new(move || {
                handles
                    .into_iter()
                    .enumerate()
                    .map(|(core, h)| match h.join() {
                        Ok(Some(r)) => Ok(r),
                        Ok(None) => Err(format!("core {core} did not run")),
                        Err(e) => Err(format!("core {core}: {e}")),
                    })
                    .collect()
            })
        }
        Target::Cluster(config) => {
            let for_cores = shared.clone();
            let handle = ClusterExecutor::new(config.clone())
                .and_then(|e| e.cores(cores))
                .map(|e| {
                    let e = match cli.spin {
                        Some(spin) => e.spin_before_park(spin),
                        None => e,
                    };
                    e.io_memory(64 << 10).ownership(match cli.ownership {
                        None | Some(OwnershipArg::Sharded) => Ownership::Sharded,
                        Some(OwnershipArg::EveryCore) => Ownership::EveryCore,
                    })
                })
                .and_then(|e| {
                    e.spawn(move |client| {
                        let shared = for_cores.clone();
                        let events = events_tx.clone();
                        async move {
                            let core = client.core();
                            run_core(core, client, shared, events).await
                        }
                    })
                })
                .map_err(|e| format!("cannot start on {}: {e}", target.describe()))?;
            Box::new(move || {
                handle
                    .join()
                    .into_iter()
                    .map(|r| r.map_err(|e| e.to_string()))
                    .collect()
            })
        }
    };

    let stall_limit = cli.stall_limit();
    let stopped_early = wait_with_progress(&shared, &events, progress, &mut timeline, stall_limit);
    // Every core has ended its load: the end of the measured CPU time
    // (shutting the cores down is left out).
    let cpu = shared
        .measure_start_cpu
        .get()
        .map(|start| CpuTime::now().since(start));
    let mut results = Vec::new();
    for r in joiner() {
        results.push(r.map_err(|e| format!("a core failed: {e}"))?);
    }

    let plan = &shared.plan;
    let merged = Merged::of(plan, results);
    let measure_start = shared
        .measure_start()
        .expect("the start is set once the cores ran");
    let elapsed = merged.last_done.map_or(Duration::ZERO, |d| {
        d.saturating_duration_since(measure_start)
    });

    let verify = if plan.verify.is_some() {
        let mut v = verify::verify(target, &shared)?;
        v.tracked_writes = merged.tracked_writes;
        v.set_fallbacks = merged.set_fallbacks;
        Some(v)
    } else {
        None
    };
    let verify_failed = verify.as_ref().is_some_and(|v| !v.passed());
    let mut name = target.describe();
    if cli.ownership == Some(OwnershipArg::EveryCore) {
        name.push_str(", every-core ownership");
    }
    let mut report = report::build(plan, name, &merged, elapsed, cpu, verify);
    report.stopped_early = stopped_early.clone();
    if let (Target::Cluster(config), Some(before)) = (target, served_before) {
        report.read_from = Some(config.read_from.to_string());
        report.gets_by_node =
            Some(served::count(config).map(|after| served::since(&before, &after))?);
    }

    let out = if cli.json {
        let mut json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        json.push('\n');
        json
    } else {
        report::text(&report)
    };
    // A closed pipe (`| head`) is not worth a panic.
    let _ = std::io::stdout().lock().write_all(out.as_bytes());
    if let Some(path) = &cli.hdr_out {
        let started = SystemTime::now() - measure_start.elapsed();
        report::write_hdr_log(path, plan, &merged, started, elapsed)?;
    }
    if report.total.ops == 0 {
        let why = report
            .total
            .errors_by_kind
            .iter()
            .max_by_key(|(_, n)| **n)
            .map(|(k, n)| format!(" ({n} failed with {k})"))
            .unwrap_or_default();
        eprintln!("redcore-load: no command succeeded{why}");
        return Ok(ExitCode::from(1));
    }
    if let Some(why) = stopped_early {
        eprintln!("redcore-load: stopped early: {why}");
        return Ok(ExitCode::from(1));
    }
    let broken_promise = report
        .cache
        .as_ref()
        .and_then(|c| c.reads.as_ref())
        .is_some_and(|r| r.stale_own_core > 0);
    if broken_promise {
        eprintln!(
            "redcore-load: verification failed: a cached GET returned a value older than a write \
             acknowledged on its own core"
        );
        return Ok(ExitCode::from(1));
    }
    if verify_failed {
        let why = match report.verify.as_ref().and_then(|v| v.error.as_deref()) {
            Some(e) => e.to_owned(),
            None => "acknowledged writes were lost or wrong".to_owned(),
        };
        eprintln!("redcore-load: verification failed: {why}");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

type CoreHandle = glommio::ExecutorJoinHandle<Option<CoreResult>>;

/// Starts one executor per core, each with its own connection; returns
/// once every core is connected, or the first connection error.
fn start_servers(
    config: &ConnectionConfig,
    cpus: &[usize],
    shared: &Arc<Shared>,
    events: mpsc::Sender<Event>,
    cli: &Cli,
) -> Result<Vec<CoreHandle>, String> {
    let (timeout, spin) = (cli.timeout, cli.spin);
    let cores = shared.plan.cores;
    let (ready_tx, ready_rx) = mpsc::channel();
    let (go_tx, go_rx) = async_channel::bounded::<bool>(cores);
    let mut handles = Vec::with_capacity(cores);
    let mut failed = None;
    for core in 0..cores {
        let cpu = cpus[core % cpus.len()];
        let (config, shared, events, ready, go) = (
            config.clone(),
            shared.clone(),
            events.clone(),
            ready_tx.clone(),
            go_rx.clone(),
        );
        let mut builder = LocalExecutorBuilder::new(Placement::Fixed(cpu)).io_memory(64 << 10);
        if let Some(spin) = spin.filter(|s| !s.is_zero()) {
            builder = builder.spin_before_park(spin);
        }
        let spawned = builder
            .name(&format!("redcore-load-{core}"))
            .spawn(move || async move {
                let conn = match Connection::connect(config).await {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return None;
                    }
                };
                let _ = ready.send(Ok(()));
                if !matches!(go.recv().await, Ok(true)) {
                    conn.close();
                    return None;
                }
                let result = run_core(core, conn.clone(), shared, events).await;
                conn.close();
                Some(result)
            });
        match spawned {
            Ok(h) => handles.push(h),
            Err(e) => {
                failed = Some(format!("starting an executor on CPU {cpu}: {e}"));
                break;
            }
        }
    }
    drop(ready_tx);
    if failed.is_none() {
        // Connecting is bounded by the call timeout; the margin covers
        // starting the threads.
        let until = Instant::now() + timeout + Duration::from_secs(5);
        for _ in 0..handles.len() {
            let left = until.saturating_duration_since(Instant::now());
            match ready_rx.recv_timeout(left) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    failed = Some(format!("cannot connect to {}: {e}", describe(config)));
                    break;
                }
                Err(_) => {
                    failed = Some(format!(
                        "cannot connect to {}: no answer within {}",
                        describe(config),
                        humantime::format_duration(timeout)
                    ));
                    break;
                }
            }
        }
    }
    let go = failed.is_none();
    if go {
        let _ = shared.start.set(Instant::now());
    }
    for _ in 0..cores {
        let _ = go_tx.try_send(go);
    }
    match failed {
        None => Ok(handles),
        Some(msg) => {
            for h in handles {
                let _ = h.join();
            }
            Err(msg)
        }
    }
}

fn describe(config: &ConnectionConfig) -> String {
    Target::Server(config.clone())
        .describe()
        .trim_start_matches("server ")
        .to_owned()
}

/// Waits for every core to finish; on a terminal, shows a progress line
/// once per second; with `--timeline`, writes a line per second. When
/// commands keep failing and none has succeeded for `stall_limit` (if
/// any), tells the cores to stop and returns why.
fn wait_with_progress(
    shared: &Shared,
    events: &mpsc::Receiver<Event>,
    progress: bool,
    timeline: &mut Option<Timeline>,
    stall_limit: Option<Duration>,
) -> Option<String> {
    let mut stall = Stall::new();
    let mut stopped = None;
    let cores = shared.plan.cores;
    let mut done = 0;
    let mut snapshots: Vec<Option<Histogram<u64>>> = vec![None; cores];
    let mut next_line = Instant::now() + Duration::from_secs(1);
    let mut last = (Instant::now(), 0u64);
    while done < cores {
        let left = next_line.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(Event::Done) => done += 1,
            Ok(Event::Snapshot { core, histogram }) => snapshots[core] = Some(*histogram),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                next_line += Duration::from_secs(1);
                tick(shared, timeline);
                if let (None, Some(limit)) = (&stopped, stall_limit) {
                    stopped = stall.check(shared, limit);
                    if stopped.is_some() {
                        shared.abort.store(true, Ordering::Relaxed);
                    }
                }
                if progress {
                    let line = progress_line(shared, &snapshots, &mut last);
                    eprint!("\r\x1b[2K{line}");
                    let _ = std::io::stderr().flush();
                }
            }
            // Every core's sender is gone: a core ended without saying.
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    // The last, partial second.
    tick(shared, timeline);
    if progress {
        eprint!("\r\x1b[2K");
        let _ = std::io::stderr().flush();
    }
    stopped
}

/// Watches for a target that stopped answering: commands fail and none
/// succeeds.
struct Stall {
    ops: u64,
    errors: u64,
    since: Instant,
}

impl Stall {
    fn new() -> Stall {
        Stall {
            ops: 0,
            errors: 0,
            since: Instant::now(),
        }
    }

    /// Why to stop, when no command succeeded for `limit` and some failed
    /// meanwhile without a reply (a server's error reply shows it is up:
    /// that is the command's problem, not a dead target).
    fn check(&mut self, shared: &Shared, limit: Duration) -> Option<String> {
        let ops: u64 = shared
            .live
            .iter()
            .map(|l| l.ops.load(Ordering::Relaxed))
            .sum();
        let errors: u64 = shared
            .live
            .iter()
            .map(|l| {
                let kinds = l.error_kinds.lock().unwrap_or_else(|e| e.into_inner());
                kinds
                    .iter()
                    .filter(|(kind, _)| !kind.starts_with("server "))
                    .map(|(_, n)| n)
                    .sum::<u64>()
            })
            .sum();
        let now = Instant::now();
        if ops > self.ops || shared.start.get().is_none() {
            *self = Stall {
                ops,
                errors,
                since: now,
            };
            return None;
        }
        let stalled = now.saturating_duration_since(self.since);
        (errors > self.errors && stalled >= limit).then(|| {
            format!(
                "no command succeeded for {} while {} failed; the target seems down \
                 (--stall-limit {}; 0 never stops)",
                humantime::format_duration(Duration::from_secs(stalled.as_secs())),
                errors - self.errors,
                humantime::format_duration(limit)
            )
        })
    }
}

/// Writes a timeline line; a failed write ends the timeline, not the run.
fn tick(shared: &Shared, timeline: &mut Option<Timeline>) {
    if let Some(t) = timeline {
        if let Err(e) = t.tick(shared) {
            eprintln!("redcore-load: {e}; no more timeline lines");
            *timeline = None;
        }
    }
}

fn progress_line(
    shared: &Shared,
    snapshots: &[Option<Histogram<u64>>],
    last: &mut (Instant, u64),
) -> String {
    let now = Instant::now();
    let Some(start) = shared.start.get() else {
        return "starting...".into();
    };
    let warmup = shared.plan.warmup;
    let since = now.saturating_duration_since(*start);
    // Right at the end of the warm-up there is nothing to show yet.
    if since < warmup + Duration::from_millis(100) && !warmup.is_zero() {
        return format!(
            "warm-up {:.0}/{:.0} s",
            since.as_secs_f64().min(warmup.as_secs_f64()),
            warmup.as_secs_f64()
        );
    }
    let ops: u64 = shared
        .live
        .iter()
        .map(|l| l.ops.load(std::sync::atomic::Ordering::Relaxed))
        .sum();
    let errors: u64 = shared
        .live
        .iter()
        .map(|l| l.errors.load(std::sync::atomic::Ordering::Relaxed))
        .sum();
    // Count the rate from the end of the warm-up at the earliest.
    last.0 = last.0.max(*start + warmup);
    let dt = now.saturating_duration_since(last.0).as_secs_f64();
    let rate = if dt > 0.0 {
        (ops - last.1.min(ops)) as f64 / dt
    } else {
        0.0
    };
    *last = (now, ops);
    let mut all = new_histogram();
    for h in snapshots.iter().flatten() {
        let _ = all.add(h);
    }
    let us = |q: f64| all.value_at_quantile(q) as f64 / 1000.0;
    format!(
        "{:>6.1} s  {:>10.0} ops/s  {} ops  p50 {:.1} us  p99 {:.1} us  {} errors",
        (since - warmup).as_secs_f64(),
        rate,
        ops,
        us(0.5),
        us(0.99),
        errors
    )
}
