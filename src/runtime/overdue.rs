//! Deadlines of calls from outside the executors.
//!
//! A [`RemoteClient`](super::RemoteClient) call is timed by the core it
//! enters, like any call there. That core may not run for a while: its
//! thread held by user code that blocks, or its entry channel full. The
//! caller's thread is not a glommio executor, so it has no timer of its
//! own; this watch is one: a thread per runtime, started with its first
//! outside call, that answers every call still unanswered at its deadline
//! plus a grace with `Timeout`. A call answered in time takes its entry
//! out, so the watch holds only calls in flight.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use super::mesh::GRACE;
use crate::{Error, Value};

type Answer = async_channel::Sender<Result<Value, Error>>;

/// The calls in flight from outside the executors, by deadline.
#[derive(Default)]
pub(super) struct OverdueWatch {
    state: Mutex<Watched>,
    changed: Condvar,
}

#[derive(Default)]
struct Watched {
    calls: BTreeMap<(Instant, u64), Answer>,
    next_id: u64,
    thread_started: bool,
    closed: bool,
}

/// A watched call; dropping it takes the call out of the watch.
pub(super) struct Watching<'a> {
    watch: &'a OverdueWatch,
    key: (Instant, u64),
}

impl Drop for Watching<'_> {
    fn drop(&mut self) {
        self.watch.lock().calls.remove(&self.key);
    }
}

impl OverdueWatch {
    fn lock(&self) -> std::sync::MutexGuard<'_, Watched> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Answers `answer` with `Timeout { maybe_applied: true }` at
    /// `deadline` plus [`GRACE`] unless the returned guard is dropped
    /// first.
    pub fn watch(self: &Arc<Self>, deadline: Instant, answer: Answer) -> Watching<'_> {
        let mut w = self.lock();
        let key = (deadline + GRACE, w.next_id);
        w.next_id += 1;
        let first = w.calls.first_key_value().is_none_or(|(k, _)| key < *k);
        w.calls.insert(key, answer);
        if !w.thread_started {
            w.thread_started = true;
            let watch = Arc::clone(self);
            let started = std::thread::Builder::new()
                .name("redcore-overdue".into())
                .spawn(move || watch.run());
            if started.is_err() {
                // Without the thread the cores' own timers still apply.
                w.thread_started = false;
                tracing::warn!("could not start the thread that times outside calls");
            }
        } else if first {
            self.changed.notify_one();
        }
        Watching { watch: self, key }
    }

    /// Ends the watch thread (every core has ended, or the runtime is
    /// gone).
    pub fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_one();
    }

    fn run(&self) {
        let mut w = self.lock();
        while !w.closed {
            let now = Instant::now();
            match w.calls.first_key_value().map(|(k, _)| k.0) {
                Some(due) if due <= now => {
                    if let Some((_, answer)) = w.calls.pop_first() {
                        let _ = answer.try_send(Err(Error::Timeout {
                            maybe_applied: true,
                        }));
                    }
                }
                Some(due) => {
                    w = self
                        .changed
                        .wait_timeout(w, due - now)
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .0;
                }
                None => {
                    w = self
                        .changed
                        .wait(w)
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                }
            }
        }
    }
}
