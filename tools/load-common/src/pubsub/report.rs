//! The pub/sub report, as JSON or as text: the same fields from
//! redcore-load and redis-rs-load.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::cpu::CpuTime;
use crate::latency::Latency;
use crate::pubsub::hub::Hub;
use crate::pubsub::message::{Tracker, new_histogram};

/// The whole report of a pub/sub load.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The client library: `redcore` or `redis-rs`.
    pub client: &'static str,
    /// What was loaded.
    pub target: String,
    /// Always `pubsub`.
    pub mode: &'static str,
    /// `channels` or `sharded`.
    pub pubsub: &'static str,
    /// How the subscribers receive (the client's API).
    pub subscriber_api: String,
    /// Channels.
    pub channels: usize,
    /// Publishers.
    pub publishers: usize,
    /// Subscribers, each on every channel.
    pub subscribers: usize,
    /// Publishes in flight per publisher at most.
    pub in_flight: usize,
    /// Payload size, bytes.
    pub message_size: usize,
    /// Messages per second over all publishers; `None`: as fast as
    /// possible.
    pub rate: Option<f64>,
    /// With a rate: the tick due times were rounded up to, microseconds.
    pub tick_us: Option<f64>,
    /// Warm-up, seconds (not counted).
    pub warmup_secs: f64,
    /// Measured messages whose publish succeeded.
    pub published: u64,
    /// `published` per second, from the measuring start to the end of
    /// the last measured publish.
    pub published_per_sec: f64,
    /// Measured publishes that failed.
    pub publish_errors: u64,
    /// Failed publishes by kind.
    pub publish_errors_by_kind: BTreeMap<String, u64>,
    /// Measured messages received, over all subscribers.
    pub delivered: u64,
    /// `delivered` per second over `elapsed_secs`.
    pub delivered_per_sec: f64,
    /// Measured time, seconds: from the measuring start to the last
    /// measured message received.
    pub elapsed_secs: f64,
    /// Messages sent but never received, over all subscribers (each
    /// subscriber should receive every message; warm-up included; a
    /// failed publish that never reached the server counts here too).
    pub lost: u64,
    /// Messages that came after a later one of the same publisher and
    /// channel.
    pub out_of_order: u64,
    /// Gaps the client reported (redcore: `Gap` events; redis-rs:
    /// disconnections of a subscriber).
    pub gaps: u64,
    /// Messages the gaps said were missed, where they said.
    pub gap_missed: u64,
    /// Messages received that were not the load's.
    pub foreign: u64,
    /// Every message sent (warm-up and failed publishes included): what
    /// each subscriber should have received.
    pub sent_total: u64,
    /// True when subscribers stopped waiting for missing messages
    /// (`--tail` after the last publish) before they all came.
    pub tail_timed_out: bool,
    /// Publish-to-receive latency of the measured messages received,
    /// microseconds: from the send time the message carries (just before
    /// the publish call) to its arrival in the subscriber's code.
    pub latency_us: Latency,
    /// With a rate: how late messages were handed to the client after
    /// they were due, microseconds (the rounding to the tick, the timers'
    /// resolution, publishers busy); not part of `latency_us`. `None`
    /// without a rate.
    pub send_lag_us: Option<Latency>,
    /// CPU time of the whole process (every thread, user + system,
    /// `getrusage(RUSAGE_SELF)`) from the first measured publish until
    /// every subscriber had its messages (or the tail ran out).
    pub client_cpu_s: Option<f64>,
    /// `client_cpu_s` per measured message delivered, microseconds.
    pub client_cpu_us_per_msg: Option<f64>,
}

/// What the run gave besides the hub's counts.
#[derive(Debug)]
pub struct Outcome {
    /// Each subscriber's tracker.
    pub trackers: Vec<Tracker>,
    /// CPU time over the measured phase; `None` when nothing was
    /// measured.
    pub cpu: Option<CpuTime>,
    /// Whether the tail ran out before every message came.
    pub tail_timed_out: bool,
}

/// Builds the report.
pub fn build(
    client: &'static str,
    target: String,
    subscriber_api: String,
    hub: &Hub,
    outcome: &Outcome,
) -> Report {
    let plan = &hub.plan;
    let secs_to =
        |at: Option<u64>| at.map_or(0.0, |t| t.saturating_sub(hub.measure_ns) as f64 / 1e9);
    let per_sec = |n: u64, secs: f64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
    let mut latency = new_histogram();
    let streams = hub.streams();
    let (mut delivered, mut lost, mut out_of_order, mut gaps, mut gap_missed, mut foreign) =
        (0, 0, 0, 0, 0, 0);
    let mut last_delivery = None;
    for t in &outcome.trackers {
        latency
            .add(&t.latency)
            .expect("histograms of the same bounds add up");
        delivered += t.delivered;
        lost += t.lost(&streams);
        out_of_order += t.out_of_order;
        gaps += t.gaps;
        gap_missed += t.gap_missed;
        foreign += t.foreign;
        last_delivery = last_delivery.max(t.last_delivery_ns);
    }
    let elapsed = secs_to(last_delivery);
    let errors = hub.errors();
    let cpu_s = outcome.cpu.map(|c| c.total().as_secs_f64());
    Report {
        client,
        target,
        mode: "pubsub",
        pubsub: plan.kind.name(),
        subscriber_api,
        channels: plan.channels(),
        publishers: plan.publishers,
        subscribers: plan.subscribers,
        in_flight: plan.in_flight,
        message_size: plan.message_size,
        rate: (plan.rate > 0.0).then_some(plan.rate),
        tick_us: (plan.rate > 0.0).then_some(plan.tick.as_secs_f64() * 1e6),
        warmup_secs: plan.warmup.as_secs_f64(),
        published: hub.published_count(),
        published_per_sec: per_sec(hub.published_count(), secs_to(hub.last_publish_ns())),
        publish_errors: errors.values().sum(),
        publish_errors_by_kind: errors,
        delivered,
        delivered_per_sec: per_sec(delivered, elapsed),
        elapsed_secs: elapsed,
        lost,
        out_of_order,
        gaps,
        gap_missed,
        foreign,
        sent_total: hub.attempted(),
        tail_timed_out: outcome.tail_timed_out,
        latency_us: Latency::of(&latency),
        send_lag_us: (plan.rate > 0.0).then(|| Latency::of(&hub.send_lag())),
        client_cpu_s: cpu_s,
        client_cpu_us_per_msg: cpu_s
            .filter(|_| delivered > 0)
            .map(|s| s * 1e6 / delivered as f64),
    }
}

/// The report as text for a person.
pub fn text(r: &Report) -> String {
    let mut out = String::new();
    let rate = match r.rate {
        Some(rate) => format!("{rate:.0} msg/s"),
        None => "as fast as possible".to_owned(),
    };
    let _ = writeln!(
        out,
        "{}-load pub/sub: {} | {} {} | {} publisher(s) x {} in flight, {} subscriber(s) ({}) | \
         {} B messages | {}",
        r.client,
        r.target,
        r.channels,
        r.pubsub,
        r.publishers,
        r.in_flight,
        r.subscribers,
        r.subscriber_api,
        r.message_size,
        rate
    );
    let _ = writeln!(
        out,
        "published {} ({:.0}/s, {} failed); delivered {} ({:.0}/s over {:.2} s)",
        r.published,
        r.published_per_sec,
        r.publish_errors,
        r.delivered,
        r.delivered_per_sec,
        r.elapsed_secs
    );
    let _ = writeln!(
        out,
        "lost {}, out of order {}, gaps {} ({} missed), foreign {}{}",
        r.lost,
        r.out_of_order,
        r.gaps,
        r.gap_missed,
        r.foreign,
        if r.tail_timed_out {
            "; the tail ran out"
        } else {
            ""
        }
    );
    let l = &r.latency_us;
    let _ = writeln!(
        out,
        "publish->receive latency, us: p50 {:.1}, p90 {:.1}, p99 {:.1}, p99.9 {:.1}, max {:.1}",
        l.p50, l.p90, l.p99, l.p99_9, l.max
    );
    if let Some(lag) = &r.send_lag_us {
        let _ = writeln!(
            out,
            "send lag after the due time, us: p50 {:.1}, p99 {:.1}, max {:.1}",
            lag.p50, lag.p99, lag.max
        );
    }
    for (kind, n) in &r.publish_errors_by_kind {
        let _ = writeln!(out, "publish errors: {n} {kind}");
    }
    if let (Some(cpu), Some(per_msg)) = (r.client_cpu_s, r.client_cpu_us_per_msg) {
        let _ = writeln!(
            out,
            "client CPU (this whole process, user + system, while measuring): {cpu:.3} s, \
             {per_msg:.2} us per delivered message"
        );
    }
    out
}
