//! The queues callers wait in before their call is taken: for room in the
//! pipeline (`max_in_flight`, `max_batch_bytes`), or for the connection's
//! watch session to end.
//!
//! A [`WaitQueue`] is first come, first served, and every operation on it
//! is O(1) except [`WaitQueue::wake_all`] (closing, losing the server) and
//! the O(log n) bookkeeping of waiters whose deadlines are out of arrival
//! order. Room is handed out as *grants*: the multiplexer gives the oldest
//! waiter without one a grant for each place that frees, and wakes only
//! that waiter. Waiters holding grants are always the front of the queue
//! (a prefix), so a grant never lets a waiter overtake an older one, and a
//! fresh caller does not pass anyone still in the queue. A waiter that
//! gives up with a grant (its deadline passed, its future was dropped)
//! says so when it leaves, and the multiplexer passes the grant on.
//!
//! Deadlines are kept here for the connection's sweeper, which takes out
//! waiters whose deadline passed: no timer per waiter. Waiters whose
//! deadlines come in arrival order (calls with the configured timeout) sit
//! in a second list in that order, so the sweeper looks at its head only;
//! the others are kept sorted by deadline.

use std::collections::BTreeSet;
use std::task::{Poll, Waker};
use std::time::Instant;

use slab::Slab;

/// Why a waiter's poll ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Woken {
    /// It was woken: look at the connection again (it may hold a grant).
    Retry,
    /// Its deadline passed; it has left the queue.
    Expired,
}

/// Links of one intrusive list.
#[derive(Debug, Default, Clone, Copy)]
struct Links {
    prev: Option<usize>,
    next: Option<usize>,
}

/// Ends of one intrusive list.
#[derive(Debug, Default, Clone, Copy)]
struct Ends {
    head: Option<usize>,
    tail: Option<usize>,
}

struct Node {
    deadline: Instant,
    waker: Option<Waker>,
    /// Woken since last polled: the next poll is `Retry`.
    ready: bool,
    granted: bool,
    /// Holds a grant it could not use yet (no room after all, or a watch
    /// session began); it keeps its grant and its place.
    held: bool,
    /// Went in front of everyone (a watch session's call).
    first: bool,
    /// Still queued: false once taken out by its deadline.
    queued: bool,
    /// Listed in `by_deadline` (else in `odd`).
    in_order: bool,
    order: Links,
    by_deadline: Links,
}

/// A first-come, first-served queue of waiters with grants and deadlines.
pub(crate) struct WaitQueue {
    nodes: Slab<Node>,
    /// Every queued waiter, oldest first.
    order: Ends,
    /// The oldest waiter without a grant: every waiter before it has one.
    cursor: Option<usize>,
    granted: usize,
    held: usize,
    /// Queued waiters whose deadlines come in the order they queued.
    by_deadline: Ends,
    /// The other queued waiters, by deadline.
    odd: BTreeSet<(Instant, usize)>,
}

fn links(n: &mut Node, deadline_list: bool) -> &mut Links {
    if deadline_list {
        &mut n.by_deadline
    } else {
        &mut n.order
    }
}

fn push_back(nodes: &mut Slab<Node>, ends: &mut Ends, key: usize, deadline_list: bool) {
    *links(&mut nodes[key], deadline_list) = Links {
        prev: ends.tail,
        next: None,
    };
    match ends.tail {
        Some(t) => links(&mut nodes[t], deadline_list).next = Some(key),
        None => ends.head = Some(key),
    }
    ends.tail = Some(key);
}

fn push_front(nodes: &mut Slab<Node>, ends: &mut Ends, key: usize) {
    nodes[key].order = Links {
        prev: None,
        next: ends.head,
    };
    match ends.head {
        Some(h) => nodes[h].order.prev = Some(key),
        None => ends.tail = Some(key),
    }
    ends.head = Some(key);
}

fn unlink(nodes: &mut Slab<Node>, ends: &mut Ends, key: usize, deadline_list: bool) {
    let Links { prev, next } = std::mem::take(links(&mut nodes[key], deadline_list));
    match prev {
        Some(p) => links(&mut nodes[p], deadline_list).next = next,
        None => ends.head = next,
    }
    match next {
        Some(n) => links(&mut nodes[n], deadline_list).prev = prev,
        None => ends.tail = prev,
    }
}

impl WaitQueue {
    pub fn new() -> WaitQueue {
        WaitQueue {
            nodes: Slab::new(),
            order: Ends::default(),
            cursor: None,
            granted: 0,
            held: 0,
            by_deadline: Ends::default(),
            odd: BTreeSet::new(),
        }
    }

    /// True when nobody waits (with a grant or without).
    pub fn is_empty(&self) -> bool {
        self.order.head.is_none()
    }

    /// Waiters holding a grant.
    pub fn granted(&self) -> usize {
        self.granted
    }

    /// Waiters holding a grant they could not use yet.
    pub fn held(&self) -> usize {
        self.held
    }

    /// True when some waiter has no grant.
    pub fn has_ungranted(&self) -> bool {
        self.cursor.is_some()
    }

    /// The oldest waiter.
    pub fn head(&self) -> Option<usize> {
        self.order.head
    }

    /// True when `key` went in front of everyone (a watch session's call).
    pub fn is_first(&self, key: usize) -> bool {
        self.nodes[key].first
    }

    /// True when `key` holds a grant.
    pub fn is_granted(&self, key: usize) -> bool {
        self.nodes[key].granted
    }

    /// The deadline `key` queued with.
    pub fn deadline(&self, key: usize) -> Instant {
        self.nodes[key].deadline
    }

    fn insert(&mut self, deadline: Instant, in_order: bool, first: bool) -> usize {
        // A waiter goes in the arrival-order deadline list only if that
        // keeps the list sorted; the sweeper then looks at its head only.
        let in_order = in_order
            && self
                .by_deadline
                .tail
                .is_none_or(|t| self.nodes[t].deadline <= deadline);
        let key = self.nodes.insert(Node {
            deadline,
            waker: None,
            ready: false,
            granted: first,
            held: first,
            first,
            queued: true,
            in_order,
            order: Links::default(),
            by_deadline: Links::default(),
        });
        if in_order {
            push_back(&mut self.nodes, &mut self.by_deadline, key, true);
        } else {
            self.odd.insert((deadline, key));
        }
        key
    }

    /// Queues a waiter behind every other. `in_order` says its deadline
    /// normally comes no earlier than those queued before it (the caller
    /// uses the configured timeout); it is checked.
    pub fn push(&mut self, deadline: Instant, in_order: bool) -> usize {
        let key = self.insert(deadline, in_order, false);
        push_back(&mut self.nodes, &mut self.order, key, false);
        if self.cursor.is_none() {
            self.cursor = Some(key);
        }
        key
    }

    /// Queues a waiter in front of every other, with a grant it holds
    /// until woken by [`wake_head`](Self::wake_head): a call of the watch
    /// session, which others wait for and so must never wait behind.
    pub fn push_first(&mut self, deadline: Instant, in_order: bool) -> usize {
        let key = self.insert(deadline, in_order, true);
        push_front(&mut self.nodes, &mut self.order, key);
        self.granted += 1;
        self.held += 1;
        key
    }

    fn wake(&mut self, key: usize) {
        let n = &mut self.nodes[key];
        n.ready = true;
        if let Some(w) = n.waker.take() {
            w.wake();
        }
    }

    /// Gives the oldest waiter without a grant one, and wakes it. False
    /// when every waiter has one.
    pub fn grant_next(&mut self) -> bool {
        let Some(key) = self.cursor else {
            return false;
        };
        let n = &mut self.nodes[key];
        n.granted = true;
        self.cursor = n.order.next;
        self.granted += 1;
        self.wake(key);
        true
    }

    /// A waiter with a grant could not use it yet: it keeps the grant and
    /// its place until [`wake_head`](Self::wake_head) reaches it.
    pub fn hold(&mut self, key: usize) {
        let n = &mut self.nodes[key];
        debug_assert!(n.granted && n.queued);
        if !n.held {
            n.held = true;
            self.held += 1;
        }
    }

    /// Wakes the oldest waiter (which holds a grant when any waiter is
    /// held: grants are a prefix of the queue).
    pub fn wake_head(&mut self) {
        if let Some(key) = self.order.head {
            self.wake(key);
        }
    }

    /// Wakes every waiter to look at the connection again (it was closed,
    /// or the server is unreachable): O(n), for rare events only.
    pub fn wake_all(&mut self) {
        let mut at = self.order.head;
        while let Some(key) = at {
            at = self.nodes[key].order.next;
            self.wake(key);
        }
    }

    /// Polls a waiter. After `Expired` its key is no longer valid.
    pub fn poll(&mut self, key: usize, waker: &Waker) -> Poll<Woken> {
        let n = &mut self.nodes[key];
        if !n.queued {
            self.nodes.remove(key);
            return Poll::Ready(Woken::Expired);
        }
        if n.ready {
            n.ready = false;
            return Poll::Ready(Woken::Retry);
        }
        if !n.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            n.waker = Some(waker.clone());
        }
        Poll::Pending
    }

    /// Takes a waiter out of the lists; true if it held a grant.
    fn dequeue(&mut self, key: usize) -> bool {
        let n = &self.nodes[key];
        if !n.queued {
            return false;
        }
        let (granted, held, in_order, deadline) = (n.granted, n.held, n.in_order, n.deadline);
        if self.cursor == Some(key) {
            self.cursor = n.order.next;
        }
        unlink(&mut self.nodes, &mut self.order, key, false);
        if in_order {
            unlink(&mut self.nodes, &mut self.by_deadline, key, true);
        } else {
            self.odd.remove(&(deadline, key));
        }
        self.granted -= usize::from(granted);
        self.held -= usize::from(held);
        self.nodes[key].queued = false;
        granted
    }

    /// Removes a waiter for good: it was admitted, or gave up. True if it
    /// held a grant, which the caller must pass on.
    pub fn remove(&mut self, key: usize) -> bool {
        let granted = self.dequeue(key);
        self.nodes.remove(key);
        granted
    }

    /// Takes out the waiters whose deadline is `now` or earlier and wakes
    /// them (their poll says `Expired`). Returns how many grants they held
    /// (to be passed on) and the next deadline.
    pub fn expire(&mut self, now: Instant) -> (usize, Option<Instant>) {
        let mut lost = 0;
        let mut next_in_order = None;
        while let Some(key) = self.by_deadline.head {
            let deadline = self.nodes[key].deadline;
            if deadline > now {
                next_in_order = Some(deadline);
                break;
            }
            lost += usize::from(self.dequeue(key));
            self.wake(key);
        }
        let mut next_odd = None;
        while let Some(&(deadline, key)) = self.odd.first() {
            if deadline > now {
                next_odd = Some(deadline);
                break;
            }
            lost += usize::from(self.dequeue(key));
            self.wake(key);
        }
        let next = match (next_in_order, next_odd) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        (lost, next)
    }
}

/// A waker that counts its wakes, for tests.
#[cfg(test)]
pub(crate) struct Counter(pub std::sync::atomic::AtomicUsize);

#[cfg(test)]
impl std::task::Wake for Counter {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A counting waker and its counter, for tests.
#[cfg(test)]
pub(crate) fn counter() -> (std::sync::Arc<Counter>, Waker) {
    let c = std::sync::Arc::new(Counter(std::sync::atomic::AtomicUsize::new(0)));
    (c.clone(), Waker::from(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    fn wakes(c: &Counter) -> usize {
        c.0.load(Ordering::Relaxed)
    }

    /// Queues `n` waiters with the same timeout, polled once (so they
    /// registered their wakers).
    fn queue(q: &mut WaitQueue, n: usize, t0: Instant) -> Vec<(usize, Arc<Counter>, Waker)> {
        (0..n)
            .map(|i| {
                let key = q.push(t0 + Duration::from_millis(i as u64), true);
                let (c, w) = counter();
                assert_eq!(q.poll(key, &w), Poll::Pending);
                (key, c, w)
            })
            .collect()
    }

    #[test]
    fn grants_go_oldest_first_one_wake_each() {
        let mut q = WaitQueue::new();
        let t0 = Instant::now();
        let ws = queue(&mut q, 5, t0);
        assert!(q.grant_next());
        assert!(q.grant_next());
        let woken: Vec<usize> = ws.iter().map(|(_, c, _)| wakes(c)).collect();
        assert_eq!(woken, [1, 1, 0, 0, 0]);
        assert_eq!(q.granted(), 2);
        assert_eq!(q.poll(ws[0].0, &ws[0].2), Poll::Ready(Woken::Retry));
        // A second poll without a new wake waits again.
        assert_eq!(q.poll(ws[0].0, &ws[0].2), Poll::Pending);
        assert!(q.remove(ws[0].0));
        assert_eq!(q.granted(), 1);
        assert_eq!(q.head(), Some(ws[1].0));
    }

    #[test]
    fn a_waiter_leaving_with_a_grant_says_so_and_the_next_gets_one() {
        let mut q = WaitQueue::new();
        let ws = queue(&mut q, 3, Instant::now());
        q.grant_next();
        assert!(q.remove(ws[0].0), "it held a grant");
        assert_eq!(q.granted(), 0);
        // The multiplexer passes it on: the next in line, not the last.
        q.grant_next();
        assert_eq!(wakes(&ws[1].1), 1);
        assert_eq!(wakes(&ws[2].1), 0);
        // Leaving without a grant passes nothing.
        assert!(!q.remove(ws[2].0));
    }

    #[test]
    fn removing_the_first_ungranted_waiter_moves_the_cursor() {
        let mut q = WaitQueue::new();
        let ws = queue(&mut q, 3, Instant::now());
        q.grant_next();
        assert!(!q.remove(ws[1].0));
        q.grant_next();
        assert_eq!(wakes(&ws[2].1), 1);
        assert!(!q.has_ungranted());
        assert!(!q.grant_next());
    }

    #[test]
    fn deadlines_expire_in_order_and_hand_back_grants() {
        let mut q = WaitQueue::new();
        let t0 = Instant::now();
        let ws = queue(&mut q, 4, t0);
        // One with a shorter timeout, queued last but due first.
        let odd = q.push(t0, false);
        q.grant_next();
        let (lost, next) = q.expire(t0 + Duration::from_millis(1));
        // ws[0] (granted), ws[1] and the odd one are due.
        assert_eq!(lost, 1);
        assert_eq!(next, Some(t0 + Duration::from_millis(2)));
        assert_eq!(q.poll(ws[0].0, &ws[0].2), Poll::Ready(Woken::Expired));
        assert_eq!(q.poll(ws[1].0, &ws[1].2), Poll::Ready(Woken::Expired));
        assert_eq!(q.poll(odd, &ws[1].2), Poll::Ready(Woken::Expired));
        assert_eq!(q.head(), Some(ws[2].0));
        assert_eq!(q.granted(), 0);
        // The cursor moved past the expired waiters.
        q.grant_next();
        assert_eq!(wakes(&ws[2].1), 1);
    }

    #[test]
    fn an_out_of_order_deadline_is_kept_apart() {
        let mut q = WaitQueue::new();
        let t0 = Instant::now();
        let late = q.push(t0 + Duration::from_secs(9), true);
        // Claims arrival order but comes earlier: goes to the odd set, so
        // the in-order list stays sorted.
        let early = q.push(t0 + Duration::from_secs(1), true);
        let (lost, next) = q.expire(t0 + Duration::from_secs(2));
        assert_eq!((lost, next), (0, Some(t0 + Duration::from_secs(9))));
        let (_, w) = counter();
        assert_eq!(q.poll(early, &w), Poll::Ready(Woken::Expired));
        assert_eq!(q.poll(late, &w), Poll::Pending);
    }

    #[test]
    fn a_first_waiter_goes_in_front_with_a_held_grant() {
        let mut q = WaitQueue::new();
        let t0 = Instant::now();
        let ws = queue(&mut q, 2, t0);
        let first = q.push_first(t0 + Duration::from_secs(1), true);
        assert_eq!(q.head(), Some(first));
        assert!(q.is_first(first) && q.is_granted(first));
        assert_eq!((q.granted(), q.held()), (1, 1));
        // Regular grants still go to the oldest regular waiter.
        q.grant_next();
        assert_eq!(wakes(&ws[0].1), 1);
        q.wake_head();
        let (_, w) = counter();
        assert_eq!(q.poll(first, &w), Poll::Ready(Woken::Retry));
        assert!(q.remove(first));
        assert_eq!((q.granted(), q.held()), (1, 0));
    }

    #[test]
    fn wake_all_wakes_each_once() {
        let mut q = WaitQueue::new();
        let ws = queue(&mut q, 4, Instant::now());
        q.wake_all();
        for (key, c, w) in &ws {
            assert_eq!(wakes(c), 1);
            assert_eq!(q.poll(*key, w), Poll::Ready(Woken::Retry));
        }
        // Still queued, in order, none granted.
        assert_eq!(q.head(), Some(ws[0].0));
        assert_eq!(q.granted(), 0);
    }
}
