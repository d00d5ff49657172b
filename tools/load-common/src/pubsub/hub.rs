//! The publishers' shared state on the one thread: the schedule at a
//! fixed rate, the budget of `--requests`, the sequence numbers of each
//! publisher's channels, and the counts the report needs. It does no I/O:
//! each tool's publisher tasks ask it what to send next and tell it how
//! the send went. Shared by redcore-load and redis-rs-load.

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::cpu::CpuTime;
use crate::pubsub::message::{Header, mono_ns, new_histogram};

/// Channels or sharded channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `SUBSCRIBE` / `PUBLISH`.
    Channels,
    /// `SSUBSCRIBE` / `SPUBLISH`.
    Sharded,
}

impl Kind {
    /// The report's name of it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Channels => "channels",
            Kind::Sharded => "sharded",
        }
    }
}

/// What to load.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Channels or sharded channels.
    pub kind: Kind,
    /// The channels' names: `PREFIX0` ...
    pub channel_names: Vec<String>,
    /// The prefix of the names.
    pub prefix: String,
    /// Publishers; each sends to every channel in turn.
    pub publishers: usize,
    /// Subscribers; each subscribes to every channel.
    pub subscribers: usize,
    /// Publishes in flight per publisher at most (tasks per publisher).
    pub in_flight: usize,
    /// Payload size, bytes (at least the header's).
    pub message_size: usize,
    /// Messages per second over all publishers; 0: as fast as the
    /// in-flight bound lets them.
    pub rate: f64,
    /// With a rate: due times are rounded up to a multiple of this from
    /// the start, so that the messages due within one tick leave together
    /// after one timer wake-up (zero: each at its own time).
    pub tick: Duration,
    /// Measured messages to publish in all.
    pub requests: Option<u64>,
    /// Measured time of publishing.
    pub duration: Option<Duration>,
    /// Publishing first without counting.
    pub warmup: Duration,
    /// How long subscribers may wait for missing messages after the last
    /// publish ended.
    pub tail: Duration,
}

impl Plan {
    /// How many channels.
    pub fn channels(&self) -> usize {
        self.channel_names.len()
    }
}

/// A place in a publisher's schedule: when its message is due.
#[derive(Debug, Clone, Copy)]
pub struct Slot {
    /// `mono_ns` when the message is due; `None` without a rate (now).
    pub due_ns: Option<u64>,
    /// `mono_ns` when to send it: the due time rounded up to the tick.
    pub wake_ns: Option<u64>,
}

/// One message to send now.
#[derive(Debug, Clone, Copy)]
pub struct Message {
    /// The channel (index into the plan's names).
    pub channel: usize,
    /// Its header: the send time is now, when the message is handed to
    /// the client.
    pub header: Header,
    /// Sent at or after the measuring start.
    pub measured: bool,
}

/// The publishers' shared state.
#[derive(Debug)]
pub struct Hub {
    /// The load.
    pub plan: Plan,
    /// `mono_ns` when publishing began.
    pub start_ns: u64,
    /// `mono_ns` when measuring begins (after the warm-up).
    pub measure_ns: u64,
    end_ns: Option<u64>,
    /// Measured messages left to send (`--requests`).
    budget: Cell<Option<u64>>,
    /// Per publisher: schedule slots taken so far (with a rate).
    slots: Vec<Cell<u64>>,
    /// Per publisher: messages sent so far, all channels.
    sent: Vec<Cell<u64>>,
    /// Per publisher per channel (`publisher * channels + channel`):
    /// messages sent, which is the next sequence number.
    streams: RefCell<Vec<u32>>,
    /// Messages sent, all of them.
    attempted: Cell<u64>,
    /// Measured messages whose publish succeeded.
    published: Cell<u64>,
    /// Measured messages whose publish failed, by kind.
    errors: RefCell<BTreeMap<String, u64>>,
    /// When the last measured publish ended, `mono_ns`.
    last_publish_ns: Cell<Option<u64>>,
    /// With a rate: how late measured messages were sent after they were
    /// due, nanoseconds.
    send_lag: RefCell<Histogram<u64>>,
    /// Publisher tasks still running.
    running: Cell<usize>,
    /// The process's CPU time when the first measured message was sent.
    pub measure_cpu: OnceCell<CpuTime>,
}

impl Hub {
    /// Publishing starts now.
    pub fn new(plan: Plan) -> Hub {
        let start_ns = mono_ns();
        let measure_ns = start_ns + plan.warmup.as_nanos() as u64;
        let streams = plan.publishers * plan.channels();
        Hub {
            start_ns,
            measure_ns,
            end_ns: plan.duration.map(|d| measure_ns + d.as_nanos() as u64),
            budget: Cell::new(plan.requests),
            slots: (0..plan.publishers).map(|_| Cell::new(0)).collect(),
            sent: (0..plan.publishers).map(|_| Cell::new(0)).collect(),
            streams: RefCell::new(vec![0; streams]),
            attempted: Cell::new(0),
            published: Cell::new(0),
            errors: RefCell::new(BTreeMap::new()),
            last_publish_ns: Cell::new(None),
            send_lag: RefCell::new(new_histogram()),
            running: Cell::new(plan.publishers * plan.in_flight),
            measure_cpu: OnceCell::new(),
            plan,
        }
    }

    /// The next place in `publisher`'s schedule, for one of its tasks to
    /// wait for; `None` when publishing is over.
    pub fn next_slot(&self, publisher: usize) -> Option<Slot> {
        if self.plan.rate <= 0.0 {
            return (!self.over(mono_ns())).then_some(Slot {
                due_ns: None,
                wake_ns: None,
            });
        }
        // Each publisher sends rate / publishers per second, the
        // publishers' schedules staggered evenly.
        let interval = self.plan.publishers as f64 / self.plan.rate * 1e9;
        let k = self.slots[publisher].get();
        self.slots[publisher].set(k + 1);
        let offset = publisher as f64 / self.plan.publishers as f64;
        let due = ((k as f64 + offset) * interval) as u64;
        let tick = self.plan.tick.as_nanos() as u64;
        let wake = if tick > 0 {
            due.div_ceil(tick) * tick
        } else {
            due
        };
        (!self.over(self.start_ns + due)).then_some(Slot {
            due_ns: Some(self.start_ns + due),
            wake_ns: Some(self.start_ns + wake),
        })
    }

    fn over(&self, at_ns: u64) -> bool {
        self.end_ns.is_some_and(|end| at_ns >= end) || self.budget.get() == Some(0)
    }

    /// The message `publisher` sends now for `slot` (its channel and
    /// sequence number taken); `None` when publishing is over.
    pub fn message(&self, publisher: usize, slot: Slot) -> Option<Message> {
        let now = mono_ns();
        let due = slot.due_ns.unwrap_or(now);
        if self.over(due) {
            return None;
        }
        let measured = due >= self.measure_ns;
        if measured {
            self.measure_cpu.get_or_init(CpuTime::now);
            if let Some(left) = self.budget.get() {
                self.budget.set(Some(left - 1));
            }
            if slot.due_ns.is_some() {
                self.send_lag
                    .borrow_mut()
                    .saturating_record(now.saturating_sub(due).max(1));
            }
        }
        let channels = self.plan.channels();
        let n = self.sent[publisher].get();
        self.sent[publisher].set(n + 1);
        let channel = (n % channels as u64) as usize;
        let mut streams = self.streams.borrow_mut();
        let seq = &mut streams[publisher * channels + channel];
        let header = Header {
            publisher: publisher as u32,
            seq: *seq,
            sent_ns: now,
        };
        *seq = seq.wrapping_add(1);
        self.attempted.set(self.attempted.get() + 1);
        Some(Message {
            channel,
            header,
            measured,
        })
    }

    /// Counts how the publish of `message` ended: `Err` carries the
    /// error's kind.
    pub fn published(&self, message: &Message, result: Result<(), String>) {
        if !message.measured {
            return;
        }
        match result {
            Ok(()) => self.published.set(self.published.get() + 1),
            Err(kind) => *self.errors.borrow_mut().entry(kind).or_default() += 1,
        }
        self.last_publish_ns.set(Some(mono_ns()));
    }

    /// A publisher task ended; true when it was the last one.
    pub fn task_ended(&self) -> bool {
        let left = self.running.get() - 1;
        self.running.set(left);
        left == 0
    }

    /// Messages sent in all (warm-up and failed publishes included):
    /// what each subscriber should receive once publishing is over.
    pub fn attempted(&self) -> u64 {
        self.attempted.get()
    }

    /// Per publisher per channel: messages sent.
    pub fn streams(&self) -> Vec<u32> {
        self.streams.borrow().clone()
    }

    /// Measured messages whose publish succeeded.
    pub fn published_count(&self) -> u64 {
        self.published.get()
    }

    /// Measured failed publishes, by kind.
    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.errors.borrow().clone()
    }

    /// When the last measured publish ended.
    pub fn last_publish_ns(&self) -> Option<u64> {
        self.last_publish_ns.get()
    }

    /// With a rate: how late measured messages were sent after they were
    /// due, nanoseconds.
    pub fn send_lag(&self) -> Histogram<u64> {
        self.send_lag.borrow().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(rate: f64, requests: Option<u64>, duration: Option<Duration>) -> Plan {
        Plan {
            kind: Kind::Channels,
            channel_names: vec!["c0".into(), "c1".into(), "c2".into()],
            prefix: "c".into(),
            publishers: 2,
            subscribers: 1,
            in_flight: 1,
            message_size: 32,
            rate,
            tick: Duration::ZERO,
            requests,
            duration,
            warmup: Duration::ZERO,
            tail: Duration::from_secs(2),
        }
    }

    #[test]
    fn budget_channels_and_sequences() {
        let hub = Hub::new(plan(0.0, Some(7), None));
        let mut sent = Vec::new();
        while let Some(slot) = hub.next_slot(0) {
            let Some(m) = hub.message(0, slot) else { break };
            assert!(m.measured);
            hub.published(
                &m,
                if m.header.seq == 1 {
                    Err("x".into())
                } else {
                    Ok(())
                },
            );
            sent.push((m.channel, m.header.seq));
        }
        assert_eq!(
            sent,
            [(0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (2, 1), (0, 2)]
        );
        assert_eq!(hub.attempted(), 7);
        assert_eq!(hub.streams(), [3, 2, 2, 0, 0, 0]);
        assert_eq!(hub.published_count(), 4);
        assert_eq!(hub.errors().get("x"), Some(&3));
        assert!(hub.last_publish_ns().is_some());
    }

    #[test]
    fn schedule_is_staggered_and_ends() {
        // 1000 messages/s over 2 publishers: each every 2 ms, publisher 1
        // 1 ms after publisher 0.
        let hub = Hub::new(plan(1000.0, None, Some(Duration::from_millis(10))));
        let due = |p| {
            hub.next_slot(p)
                .and_then(|s| s.due_ns)
                .map(|d| d - hub.start_ns)
        };
        assert_eq!(due(0), Some(0));
        assert_eq!(due(0), Some(2_000_000));
        assert_eq!(due(1), Some(1_000_000));
        assert_eq!(due(1), Some(3_000_000));
        let mut n = 2;
        while due(0).is_some() {
            n += 1;
        }
        assert_eq!(n, 5, "due at 0, 2, 4, 6 and 8 ms");

        // With a 5 ms tick, sent at 0, 5, 5, 10 ms.
        let mut p = plan(1000.0, None, None);
        p.tick = Duration::from_millis(5);
        let hub = Hub::new(p);
        let wake = |p| {
            hub.next_slot(p)
                .and_then(|s| s.wake_ns)
                .map(|d| d - hub.start_ns)
        };
        assert_eq!(wake(0), Some(0));
        assert_eq!(wake(0), Some(5_000_000));
        assert_eq!(wake(0), Some(5_000_000));
        assert_eq!(wake(1), Some(5_000_000));
        assert_eq!(wake(0), Some(10_000_000));
    }
}
