//! How callers wait: the multiplexer's side of the admission queue (room in the
//! pipeline, grants, the waiters' deadlines) and of the queue of watch
//! sessions. The queues themselves are
//! [`WaitQueue`](crate::conn::admission::WaitQueue)s.

use std::task::{Poll, Waker};
use std::time::Duration;

use super::{Link, Mux, Queue};
use crate::Error;
use crate::conn::admission::Woken;

impl Mux {
    /// Calls that hold a place in the pipeline: queued and not withdrawn.
    pub(super) fn in_flight(&self) -> usize {
        self.entries.len() - self.withdrawn
    }

    /// Room for one more call (`max_in_flight`, `max_batch_bytes`).
    pub(super) fn has_room(&self) -> bool {
        self.in_flight() < self.max_in_flight && self.out.len() < self.max_batch_bytes
    }

    /// Room may have appeared (a call left the pipeline, bytes were
    /// written, a watch session ended, a waiter gave up a grant): grants
    /// it to the oldest waiters, one per free place, and wakes only them.
    /// Waiters that hold grants they could not use go first, one at a
    /// time, oldest first; no new grant is given meanwhile.
    pub(super) fn on_room(&mut self) {
        if matches!(self.link, Link::Closed(_)) {
            return;
        }
        if self.admission.held() > 0 {
            if let Some(head) = self.admission.head() {
                if self.has_room() && (self.exclusive.is_none() || self.admission.is_first(head)) {
                    self.admission.wake_head();
                }
            }
            return;
        }
        while self.admission.has_ungranted()
            && self.exclusive.is_none()
            && self.out.len() < self.max_batch_bytes
            && self.in_flight() + self.admission.granted() < self.max_in_flight
        {
            self.admission.grant_next();
        }
    }

    /// Polls a caller's place in `queue`: `Ok` when woken (try again),
    /// `Timeout` when its deadline passed (then it has left the queue and
    /// `waiter` is cleared).
    pub fn poll_waiter(
        &mut self,
        queue: Queue,
        waiter: &mut Option<usize>,
        waker: &Waker,
    ) -> Poll<Result<(), Error>> {
        let Some(key) = *waiter else {
            return Poll::Ready(Ok(()));
        };
        let q = match queue {
            Queue::Calls => &mut self.admission,
            Queue::Sessions => &mut self.sessions,
        };
        match q.poll(key, waker) {
            Poll::Ready(Woken::Retry) => Poll::Ready(Ok(())),
            Poll::Ready(Woken::Expired) => {
                *waiter = None;
                self.stats.timeouts += 1;
                Poll::Ready(Err(Error::Timeout {
                    maybe_applied: false,
                }))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// A caller leaves `queue` without being admitted (an error, a
    /// dropped future); a grant it held goes to the next waiter.
    pub fn leave(&mut self, queue: Queue, key: usize) {
        match queue {
            Queue::Calls => {
                let held = self.admission.held() > 0;
                if self.admission.remove(key) || held {
                    self.on_room();
                }
            }
            Queue::Sessions => {
                if self.sessions.remove(key) {
                    self.grant_session();
                }
            }
        }
    }

    /// Takes the connection for a watch session: its token, or `None` when
    /// the caller must wait (in the sessions queue, like [`admit`](Self::admit)).
    pub fn begin_exclusive(
        &mut self,
        timeout: Duration,
        waiter: &mut Option<usize>,
    ) -> Result<Option<u64>, Error> {
        if let Link::Closed(why) = self.link {
            return Err(Error::Closed(why));
        }
        let go = self.exclusive.is_none()
            && match *waiter {
                None => self.sessions.is_empty(),
                Some(key) => self.sessions.is_granted(key),
            };
        if !go {
            if waiter.is_none() {
                let deadline = self.clock() + timeout;
                *waiter = Some(self.sessions.push(deadline, false));
                self.sweep_by(deadline);
                self.grant_session();
            }
            return Ok(None);
        }
        if let Some(key) = waiter.take() {
            self.sessions.remove(key);
        }
        let token = self.next_token;
        self.next_token += 1;
        self.exclusive = Some(token);
        Ok(Some(token))
    }

    /// Wakes the next session waiting for the connection, if it is free.
    pub(super) fn grant_session(&mut self) {
        if self.exclusive.is_none() && self.sessions.granted() == 0 {
            self.sessions.grant_next();
        }
    }

    /// Registers a watch session waiting for a socket to be up.
    pub fn wait_link(&mut self, waker: &Waker) {
        if !self.link_waiters.iter().any(|w| w.will_wake(waker)) {
            self.link_waiters.push(waker.clone());
        }
    }

    pub(super) fn wake_link_waiters(&mut self) {
        for w in self.link_waiters.drain(..) {
            w.wake();
        }
    }

    /// Ends a watch session: the next session, or the calls that waited
    /// for this one, go on.
    pub fn release_exclusive(&mut self, token: u64) {
        if self.exclusive == Some(token) {
            self.exclusive = None;
            self.grant_session();
            self.on_room();
        }
    }
}
