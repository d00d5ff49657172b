//! `redis-rs-load`: the redis-rs side of redcore's yardstick
//! (`tools/compare.sh --peer redis-rs`). It sends the same SET/GET load as
//! `redcore-load --cores 1`, with the same flags and key names, through
//! redis-rs as a tokio user would, and prints a report with
//! redcore-load's field names, so that one driver reads both.
//!
//! How it uses redis-rs:
//! - one tokio **current-thread** runtime: one thread runs everything
//!   (the load's tasks and redis-rs's connection driver);
//! - `--server`: **one** `MultiplexedConnection`, cloned into every task
//!   (all tasks share its socket; redis-rs pipelines their commands);
//! - `--cluster`: **one** async cluster client connection
//!   (`cluster_async::ClusterConnection`), cloned into every task;
//! - `--pipeline N > 1`: `redis::pipe()` (not atomic), queried on the
//!   shared connection; redis-rs's cluster client sends a pipeline to the
//!   node of its slot and refuses one that spans slots, so cluster runs
//!   with pipelines need `--key-layout tagged` (every key of a pipeline
//!   shares one hash tag, as in redcore-load);
//! - replies are read as `redis::Value`; response and connection timeout
//!   `--timeout` (5 s, as redcore-load's default).
//!
//! What it measures, as redcore-load does: each command's latency from
//! just before its call to the reply (a pipeline's commands each count the
//! pipeline's), ops/s over the measured time (end of the warm-up to the
//! last reply), errors by kind, and the client CPU per command: user +
//! system time of the whole process (`getrusage(RUSAGE_SELF)`) from the
//! first measured command to the end of the last task, over the measured
//! commands that ended. `--cpu N` pins the process to CPU `N`.
//!
//! Keys `0..--keys` are drawn uniformly at random (a tagged pipeline's
//! later keys from its first key's run), named as redcore-load names them
//! (`key:N`, or `key:{T}:N`); values are redcore-load's bytes. The flags
//! are redcore-load's, for the subset needed (no `--cores`, `--rate`,
//! `--key-pattern`, `--command`, `--verify`); durations are seconds.
//!
//! `--pubsub channels|sharded`: a pub/sub load instead (publishers and
//! subscribers on the same runtime, redis-rs's subscriber APIs), reported
//! with redcore-load's pub/sub fields: messages published and delivered
//! per second, publish→receive latency, lost messages, client CPU per
//! delivered message. The `pubsub` module says how.
//!
//! Exit status: 0 when the run completed, 1 when the target could not be
//! reached or no command succeeded (no message was delivered), 2 for bad
//! arguments.

mod args;
mod keys;
mod load;
mod pin;
mod pubsub;
mod report;

use load_common::cpu;

use std::io::Write as _;
use std::process::ExitCode;
use std::rc::Rc;

use clap::Parser;
use redis::AsyncConnectionConfig;
use redis::cluster::ClusterClientBuilder;

use crate::args::{Cli, KeyLayoutArg, PubSubArg, SubscriberApiArg};
use crate::keys::{KeySpace, filler};
use crate::load::{Outcome, Plan};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("redis-rs-load: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: &Cli) -> Result<ExitCode, String> {
    if let Some(cpu) = cli.cpu {
        pin::pin_to_cpu(cpu)?;
    }
    if let Some(kind) = cli.pubsub {
        return run_pubsub(cli, kind);
    }
    let keys = match cli.key_layout {
        KeyLayoutArg::Plain => KeySpace::plain(&cli.key_prefix, cli.keys),
        KeyLayoutArg::Tagged => KeySpace::tagged(&cli.key_prefix, cli.keys, cli.key_tags),
    };
    let plan = Rc::new(Plan {
        tasks: cli.tasks as usize,
        pipeline: cli.pipeline as usize,
        ratio: cli.ratio,
        keys,
        value: filler(cli.data_size as usize),
        requests: cli.requests,
        duration: cli.measure_duration(),
        warmup: cli.warmup,
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the tokio runtime: {e}"))?;
    let local = tokio::task::LocalSet::new();
    let (target, outcome) = local.block_on(&runtime, connect_and_load(cli, plan.clone()))?;

    let report = report::build(&plan, target, &outcome);
    let out = if cli.json {
        let mut json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        json.push('\n');
        json
    } else {
        report::text(&report)
    };
    // A closed pipe (`| head`) is not worth a panic.
    let _ = std::io::stdout().lock().write_all(out.as_bytes());
    if report.total.ops == 0 {
        eprintln!("redis-rs-load: no command succeeded");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// The pub/sub load (`--pubsub`): runs it and prints its report.
fn run_pubsub(cli: &Cli, kind: PubSubArg) -> Result<ExitCode, String> {
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
        rate: cli.rate,
        tick: cli.tick,
        requests: cli.requests,
        duration: cli.measure_duration(),
        warmup: cli.warmup,
        tail: cli.tail,
    };
    let connect = pubsub::Connect {
        server: cli.server.clone(),
        seeds: if cli.server.is_some() {
            Vec::new()
        } else {
            seeds(cli)?
        },
        api: match cli.subscriber_api {
            SubscriberApiArg::Pubsub => pubsub::SubscriberApi::PubSub,
            SubscriberApiArg::Resp3 => pubsub::SubscriberApi::Resp3,
        },
        timeout: cli.timeout,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the tokio runtime: {e}"))?;
    let local = tokio::task::LocalSet::new();
    let run = local.block_on(&runtime, pubsub::run(&connect, plan))?;
    let report = pubsub::report::build("redis-rs", run.target, run.api, &run.hub, &run.outcome);
    let out = if cli.json {
        let mut json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        json.push('\n');
        json
    } else {
        pubsub::report::text(&report)
    };
    let _ = std::io::stdout().lock().write_all(out.as_bytes());
    if report.delivered == 0 {
        eprintln!("redis-rs-load: no message was delivered");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// `--cluster`'s seeds as `redis://` URIs.
fn seeds(cli: &Cli) -> Result<Vec<String>, String> {
    let seeds: Vec<String> = cli
        .cluster
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            if s.contains("://") {
                s.to_owned()
            } else {
                format!("redis://{s}")
            }
        })
        .collect();
    if seeds.is_empty() {
        return Err("--cluster: no seed given; expected host:port[,host:port...]".into());
    }
    Ok(seeds)
}

/// Connects (one multiplexed connection, or one cluster client) and runs
/// the load on it; returns the target's description and the outcome.
async fn connect_and_load(cli: &Cli, plan: Rc<Plan>) -> Result<(String, Outcome), String> {
    if let Some(uri) = &cli.server {
        let client = redis::Client::open(uri.as_str()).map_err(|e| format!("--server: {e}"))?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(cli.timeout))
            .set_response_timeout(Some(cli.timeout));
        let conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| format!("cannot connect to {uri}: {e}"))?;
        let outcome = load::run(plan, conn).await;
        let addr = client.get_connection_info().addr();
        return Ok((format!("server {addr}"), outcome));
    }
    let seeds = seeds(cli)?;
    let client = ClusterClientBuilder::new(seeds.clone())
        .connection_timeout(cli.timeout)
        .response_timeout(cli.timeout)
        .build()
        .map_err(|e| format!("--cluster: {e}"))?;
    let conn = client
        .get_async_connection()
        .await
        .map_err(|e| format!("cannot connect to the cluster at {}: {e}", seeds.join(",")))?;
    let outcome = load::run(plan, conn).await;
    Ok((format!("cluster {}", seeds.join(",")), outcome))
}
