//! Misses in flight. The first caller to miss a read *leads*: it sends
//! the request and stores the reply; callers missing the same read on the
//! same core meanwhile *join* its flight and get a clone of its outcome.
//! Every key with a miss in flight counts the invalidations that reach it
//! while the request is out: a reply that saw one is returned, not stored,
//! and the flight is closed to callers that miss after the invalidation
//! (its reply may be older than the write; they send their own request).

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use smallvec::SmallVec;

use super::store::{Stamp, TrackerId};
use super::{Cache, read};
use crate::{Error, Value};

/// A read form and the flight fetching it.
type FormFlight = (Box<[u8]>, Rc<Flight>);

/// The misses in flight for one key.
pub(crate) struct Pending {
    /// Bumped by each invalidation of the key.
    pub invalidations: u32,
    /// Leads of this key not finished yet.
    leads: u32,
    /// One flight per read form.
    flights: SmallVec<[FormFlight; 1]>,
}

impl Pending {
    /// Reads begun from now on do not join the flights out now (an
    /// invalidation arrived: their replies may be older than the write).
    /// The flights still finish for the callers that joined before.
    pub fn close_flights(&mut self) {
        self.flights.clear();
    }
}

/// One request that callers share.
#[derive(Default)]
pub(crate) struct Flight {
    outcome: RefCell<Option<Result<Value, Error>>>,
    abandoned: Cell<bool>,
    waiters: RefCell<Vec<Waker>>,
}

impl Flight {
    fn settle(&self) {
        for w in self.waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }

    /// Waits for the leader's outcome until `deadline`: `None` when the
    /// leader gave up (dropped) before it had one.
    pub async fn wait(&self, deadline: Instant) -> Option<Result<Value, Error>> {
        let outcome = poll_fn(|cx| {
            if let Some(r) = &*self.outcome.borrow() {
                return Poll::Ready(Some(r.clone()));
            }
            if self.abandoned.get() {
                return Poll::Ready(None);
            }
            let mut w = self.waiters.borrow_mut();
            if !w.iter().any(|x| x.will_wake(cx.waker())) {
                w.push(cx.waker().clone());
            }
            Poll::Pending
        });
        let left = deadline.saturating_duration_since(Instant::now());
        futures_lite::future::or(outcome, async move {
            glommio::timer::Timer::new(left.max(Duration::from_micros(1))).await;
            Some(Err(Error::Timeout {
                maybe_applied: false,
            }))
        })
        .await
    }
}

/// What a caller that missed does next.
pub(crate) enum Begin {
    /// Send the request and finish the lead with its outcome.
    Lead(Lead),
    /// Another caller is fetching the same read: wait for its outcome.
    Join(Rc<Flight>),
}

/// The right and duty to fetch a read and store its reply. Dropped
/// unfinished (its caller cancelled), it lets the callers that joined try
/// again.
pub(crate) struct Lead {
    cache: Rc<Cache>,
    key: Bytes,
    form: Option<Box<[u8]>>,
    slot: u16,
    stamp: Stamp,
    invalidations: u32,
    flight: Rc<Flight>,
    released: bool,
    /// When the lead began (coarse ms): the entry's lifetime counts from
    /// before the request was sent.
    started_ms: u64,
}

/// A reply fetched for a lead.
pub(crate) struct Fetched {
    /// The read's reply.
    pub value: Value,
    /// The key's `PTTL` read in the same round trip (`-1`: no expiry,
    /// `-2`: no key); `None` when it failed (then nothing is stored: the
    /// key's expiry is unknown).
    pub pttl: Option<i64>,
    /// The tracking socket that carried the read and its generation when
    /// the read was sent; `None` when it was not tracked (never stored).
    pub tracked: Option<(TrackerId, u32)>,
}

impl Cache {
    /// [`Pending::close_flights`] for every key (a flush, a lost tracker,
    /// a moved slot: any key may be concerned).
    pub(super) fn close_all_flights(&self) {
        for p in self.pending.borrow_mut().values_mut() {
            p.close_flights();
        }
    }

    /// Leads a miss of the read `form` of `key` (in `slot`), or joins the
    /// one in flight.
    pub fn begin(self: &Rc<Self>, key: &[u8], form: &[u8], slot: u16) -> Begin {
        let mut pending = self.pending.borrow_mut();
        if let Some(p) = pending.get_mut(key) {
            if let Some((_, f)) = p.flights.iter().find(|(f, _)| &**f == form) {
                return Begin::Join(f.clone());
            }
        }
        let key = Bytes::copy_from_slice(key);
        let p = pending.entry(key.clone()).or_insert_with(|| Pending {
            invalidations: 0,
            leads: 0,
            flights: SmallVec::new(),
        });
        p.leads += 1;
        let flight = Rc::new(Flight::default());
        p.flights.push((form.into(), flight.clone()));
        let invalidations = p.invalidations;
        drop(pending);
        // The tracker is not known yet: its generation comes with the
        // reply (`Fetched::tracked`), taken when the read was sent.
        let stamp = self.store.borrow().base_stamp(slot);
        Begin::Lead(Lead {
            cache: self.clone(),
            key,
            form: Some(form.into()),
            slot,
            stamp,
            invalidations,
            flight,
            released: false,
            started_ms: read::now_ms(),
        })
    }
}

impl Lead {
    /// Stores the fetched reply if nothing voided it while it was out, and
    /// hands the outcome to the callers that joined. `ttl` is the
    /// client-side time to live, capped by the key's `PTTL`, both counted
    /// from when the lead began.
    pub fn finish(
        mut self,
        outcome: Result<Fetched, Error>,
        ttl: Duration,
    ) -> Result<Value, Error> {
        let result = match outcome {
            Ok(f) => {
                self.store(&f, ttl);
                Ok(f.value)
            }
            Err(e) => Err(e),
        };
        *self.flight.outcome.borrow_mut() = Some(result.clone());
        self.release();
        self.flight.settle();
        result
    }

    fn store(&mut self, f: &Fetched, ttl: Duration) {
        let Some((tracker, tracker_generation)) = f.tracked else {
            return;
        };
        let cache = &self.cache;
        let invalidated = cache
            .pending
            .borrow()
            .get(&self.key)
            .is_some_and(|p| p.invalidations != self.invalidations);
        if invalidated || matches!(f.value, Value::Error(_)) || !cache.tracked_key(&self.key) {
            return;
        }
        let Some(pttl) = f.pttl else {
            return;
        };
        let mut ttl_ms = ttl.as_millis().min(u64::MAX as u128) as u64;
        if pttl >= 0 {
            ttl_ms = ttl_ms.min(pttl as u64);
        }
        let expires_ms = self
            .started_ms
            .saturating_add(ttl_ms)
            .saturating_sub(cache.slack_ms);
        if expires_ms <= read::now_ms() {
            return;
        }
        let stamp = Stamp {
            tracker: tracker_generation,
            ..self.stamp
        };
        let form = self.form.take().expect("stored once");
        cache.store.borrow_mut().insert(
            &self.key,
            self.slot,
            tracker,
            stamp,
            form,
            f.value.clone(),
            expires_ms,
        );
    }

    /// Removes this lead's flight from the key's pending record.
    fn release(&mut self) {
        self.released = true;
        let mut pending = self.cache.pending.borrow_mut();
        if let Some(p) = pending.get_mut(&self.key) {
            p.flights.retain(|(_, f)| !Rc::ptr_eq(f, &self.flight));
            p.leads -= 1;
            if p.leads == 0 {
                pending.remove(&self.key);
            }
        }
    }
}

impl Drop for Lead {
    fn drop(&mut self) {
        if !self.released {
            self.release();
            self.flight.abandoned.set(true);
            self.flight.settle();
        }
    }
}
