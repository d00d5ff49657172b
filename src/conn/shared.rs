//! The state callers and the connection task share on one core: the batch
//! buffer commands are encoded into, the FIFO of calls awaiting replies, and
//! the reply slots callers wait on.
//!
//! Every command occupies a byte range of the stream written to the
//! socket. `written` is the stream offset of the first byte of `out` that
//! has not reached the socket, so a call whose range starts before it may
//! have been applied, and a call whose range starts at or after it can
//! still be withdrawn (on timeout, on cancellation) or carried over to the
//! next connection after a reconnect.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use slab::Slab;

use crate::Error;
use crate::config::{ConnectionConfig, Protocol};
use crate::resp::Value;

/// What a call expects back.
pub(crate) enum Expect {
    /// One reply.
    One,
    /// `n` replies, gathered into one array (pipelines, transactions).
    Many { left: usize, got: Vec<Value> },
}

/// A call in the FIFO: its reply slot and its bytes in the stream.
pub(crate) struct Entry {
    slot: usize,
    seq: u64,
    expect: Expect,
    start: u64,
    end: u64,
    deadline: Instant,
    timeout: Duration,
    /// Calls of a watch session must run on the socket the `WATCH` ran on.
    bound_generation: Option<u64>,
    /// Withdrawn before being written; cut out by `compact`.
    withdrawn: bool,
}

/// Where a caller's reply lands.
struct Slot {
    seq: u64,
    result: Option<Result<Value, Error>>,
    waker: Option<Waker>,
    caller_gone: bool,
    entry_live: bool,
}

/// The state of the link to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Link {
    /// No socket yet or any more; calls queue for the next one.
    Connecting,
    /// A socket with a finished handshake.
    Up,
    /// Closed for good.
    Closed(&'static str),
}

/// How a call is to be queued.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Call {
    /// The watch session the call belongs to, if any: its token, and the
    /// generation of the socket its `WATCH` runs on. The call fails with
    /// `WatchLost` rather than go out on another socket.
    pub watch: Option<(u64, u64)>,
    /// Time until the call's deadline.
    pub timeout: Duration,
    /// How many replies the encoded commands produce (at least 1).
    pub replies: usize,
    /// Gather the replies into an array even when there is only one
    /// (pipelines, transactions).
    pub gather: bool,
    /// Nobody waits for the reply (a best-effort `UNWATCH`).
    pub detached: bool,
}

/// Why a call cannot be queued right now.
pub(crate) enum Admit {
    /// Queued; wait on this slot.
    Queued(usize),
    /// Wait for room (backpressure) or for a watch session to end.
    Wait,
}

pub(crate) struct State {
    pub out: BytesMut,
    written: u64,
    entries: VecDeque<Entry>,
    slots: Slab<Slot>,
    next_seq: u64,
    /// Calls with a timeout other than the configured one.
    odd_deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
    /// Withdrawn calls still in the FIFO, waiting for `compact`.
    withdrawn: usize,
    /// Stream offset of the first default-timeout call not yet expired.
    swept: u64,
    pub link: Link,
    /// Counts sockets: bumped when a handshake finishes.
    pub generation: u64,
    pub protocol: Protocol,
    pub io_waker: Option<Waker>,
    pub sweeper_waker: Option<Waker>,
    /// When the sweeper wakes next; `None` asks it to look at once.
    pub sweep_at: Option<Instant>,
    admit_waiters: Vec<Waker>,
    /// The token of the watch session that owns the connection.
    pub exclusive: Option<u64>,
    pub next_token: u64,
    pub pushes: VecDeque<Value>,
    pub push_waker: Option<Waker>,
    pub pushes_dropped: u64,
    pub push_taken: bool,
    /// Set by the sweeper when the oldest reply is overdue by far.
    pub stalled: bool,
    pub last_activity: Instant,
    /// The time calls queued since the driver last ran are stamped with;
    /// cleared by every driver and sweeper wake-up, so it is never older
    /// than the batch being built.
    pub batch_clock: Option<Instant>,
    pub hibernating: bool,
    pub stats: Stats,
    /// Fail calls at once, instead of queueing them, while the server is
    /// unreachable (cluster node connections: the router would rather
    /// refresh and go elsewhere).
    pub fail_fast: bool,
    /// Why the last connect attempt failed or the socket died, while no
    /// socket is up; `None` before the first attempt and while up.
    down: Option<String>,
}

/// Counters kept per connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Calls queued (a pipeline counts once).
    pub calls: u64,
    /// Replies received (each reply of a pipeline counts).
    pub replies: u64,
    /// Writes to the socket.
    pub writes: u64,
    /// Sockets opened after the first.
    pub reconnects: u64,
    /// Calls that timed out.
    pub timeouts: u64,
    /// Replies skipped as they arrived, without building their values:
    /// past `max_reply_bytes`, or their caller gave up while they streamed
    /// in (each also counts in `replies`).
    pub replies_skipped: u64,
}

pub(crate) struct Shared {
    pub config: ConnectionConfig,
    /// The transport of the current socket (or of the next one).
    pub transport: std::cell::Cell<crate::config::TransportKind>,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub state: RefCell<State>,
}

impl Shared {
    pub fn new(config: ConnectionConfig, tls: Option<Arc<rustls::ClientConfig>>) -> Shared {
        Shared {
            transport: std::cell::Cell::new(crate::config::TransportKind::Glommio),
            tls,
            state: RefCell::new(State {
                out: BytesMut::with_capacity(16 * 1024),
                written: 0,
                entries: VecDeque::new(),
                slots: Slab::new(),
                next_seq: 0,
                odd_deadlines: BinaryHeap::new(),
                withdrawn: 0,
                swept: 0,
                link: Link::Connecting,
                generation: 0,
                protocol: config.protocol,
                io_waker: None,
                sweeper_waker: None,
                sweep_at: None,
                admit_waiters: Vec::new(),
                exclusive: None,
                next_token: 1,
                pushes: VecDeque::new(),
                push_waker: None,
                pushes_dropped: 0,
                push_taken: false,
                stalled: false,
                last_activity: Instant::now(),
                batch_clock: None,
                hibernating: false,
                stats: Stats::default(),
                fail_fast: false,
                down: None,
            }),
            config,
        }
    }
}

impl Shared {
    /// The server's address, for logs and errors.
    pub fn addr_text(&self) -> String {
        self.config.addr.to_string()
    }

    /// True once the connection is closed for good.
    pub fn is_closed(&self) -> bool {
        matches!(self.state.borrow().link, Link::Closed(_))
    }
}

/// The error of a call that was not sent because the server is
/// unreachable: safe to send elsewhere or again.
fn not_sent(config: &ConnectionConfig, reason: &str) -> Error {
    Error::Connect {
        addr: config.addr.to_string(),
        reason: format!("{reason}{NOT_SENT}"),
    }
}

/// Why a fail-fast connection's calls are not sent after its socket died.
const LOST: &str = "the connection was lost";

/// Why a connection with `exit_on_disconnection` is closed.
const EXITED: &str = "the connection dropped and exit_on_disconnection is set";

/// How the reason of a not-sent error ends.
pub(crate) const NOT_SENT: &str = "; the command was not sent";

fn wake(waker: &mut Option<Waker>) {
    if let Some(w) = waker.take() {
        w.wake();
    }
}

impl State {
    /// Encodes a call into the batch buffer and queues its reply slot, or
    /// says why it must wait.
    pub fn admit(
        &mut self,
        config: &ConnectionConfig,
        call: &Call,
        encode: &mut impl FnMut(&mut BytesMut),
    ) -> Result<Admit, Error> {
        let Call {
            watch,
            timeout,
            replies,
            gather,
            detached,
        } = *call;
        if let Link::Closed(why) = self.link {
            return Err(Error::Closed(why));
        }
        if let Some(e) = self.down_error(config) {
            return Err(e);
        }
        if self.exclusive.is_some() && self.exclusive != watch.map(|(token, _)| token) {
            return Ok(Admit::Wait);
        }
        if self.entries.len() >= config.max_in_flight || self.out.len() >= config.max_batch_bytes {
            return Ok(Admit::Wait);
        }
        let bound_generation = match watch {
            Some((_, g)) if self.link != Link::Up || self.generation != g => {
                return Err(Error::WatchLost);
            }
            Some((_, g)) => Some(g),
            None => None,
        };
        let was_empty = self.out.is_empty();
        let start = self.written + self.out.len() as u64;
        encode(&mut self.out);
        let end = self.written + self.out.len() as u64;
        let seq = self.next_seq;
        self.next_seq += 1;
        let slot = self.slots.insert(Slot {
            seq,
            result: None,
            waker: None,
            caller_gone: detached,
            entry_live: true,
        });
        let expect = match replies {
            1 if !gather => Expect::One,
            n => Expect::Many {
                left: n,
                got: Vec::with_capacity(n),
            },
        };
        // One clock read per batch: calls queued into a batch the driver
        // has yet to write share the first call's time.
        let now = match self.batch_clock {
            Some(t) if !was_empty && self.link == Link::Up => t,
            _ => {
                let t = Instant::now();
                self.batch_clock = Some(t);
                t
            }
        };
        let deadline = now + timeout;
        if timeout != config.timeout {
            self.odd_deadlines.push(Reverse((deadline, seq)));
        }
        self.entries.push_back(Entry {
            slot,
            seq,
            expect,
            start,
            end,
            deadline,
            timeout,
            bound_generation,
            withdrawn: false,
        });
        self.stats.calls += 1;
        self.last_activity = now;
        self.hibernating = false;
        if was_empty {
            wake(&mut self.io_waker);
        }
        if self.sweep_at.is_some_and(|at| deadline < at) {
            self.sweep_at = None;
            wake(&mut self.sweeper_waker);
        }
        Ok(Admit::Queued(slot))
    }

    /// Registers a caller waiting for room or for a watch session to end.
    pub fn wait_admission(&mut self, waker: &Waker) {
        if !self.admit_waiters.iter().any(|w| w.will_wake(waker)) {
            self.admit_waiters.push(waker.clone());
        }
    }

    fn wake_admission(&mut self) {
        for w in self.admit_waiters.drain(..) {
            w.wake();
        }
    }

    /// Ends a watch session.
    pub fn release_exclusive(&mut self, token: u64) {
        if self.exclusive == Some(token) {
            self.exclusive = None;
            self.wake_admission();
        }
    }

    /// Polls a caller's slot: the result once it is there.
    pub fn poll_slot(&mut self, slot: usize, waker: &Waker) -> Option<Result<Value, Error>> {
        let s = &mut self.slots[slot];
        match s.result.take() {
            Some(result) => {
                s.caller_gone = true;
                if !s.entry_live {
                    self.slots.remove(slot);
                }
                Some(result)
            }
            None => {
                if !s.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
                    s.waker = Some(waker.clone());
                }
                None
            }
        }
    }

    /// The caller stopped waiting before its result came (its future was
    /// dropped). A call not yet written is withdrawn, so it never runs.
    pub fn abandon(&mut self, slot: usize) {
        let s = &mut self.slots[slot];
        s.caller_gone = true;
        s.waker = None;
        if !s.entry_live {
            self.slots.remove(slot);
            return;
        }
        let seq = s.seq;
        if let Some(i) = self.unwritten_index(seq) {
            self.withdraw(i);
        }
    }

    /// The FIFO index of a live call that is still wholly unwritten.
    /// Calls enter the FIFO in `seq` order, so this is a binary search.
    fn unwritten_index(&self, seq: u64) -> Option<usize> {
        let i = self.entries.binary_search_by_key(&seq, |e| e.seq).ok()?;
        let e = &self.entries[i];
        (e.start >= self.written && !e.withdrawn).then_some(i)
    }

    /// Marks an unwritten call withdrawn: its bytes are cut out of the
    /// batch buffer by [`compact`](Self::compact) before anything more is
    /// written, and its slot is released now.
    fn withdraw(&mut self, index: usize) {
        let e = &mut self.entries[index];
        debug_assert!(e.start >= self.written && !e.withdrawn);
        e.withdrawn = true;
        let slot = e.slot;
        self.withdrawn += 1;
        self.entry_done(slot, None);
        self.wake_admission();
    }

    /// True when withdrawn calls must be cut out before the next write.
    pub fn needs_compaction(&self) -> bool {
        self.withdrawn > 0
    }

    /// Cuts withdrawn calls out of the FIFO and their bytes out of the
    /// batch buffer, in one pass.
    pub fn compact(&mut self) {
        if self.withdrawn == 0 {
            return;
        }
        self.withdrawn = 0;
        let Some(first) = self.entries.iter().position(|e| e.withdrawn) else {
            return;
        };
        let base = self.written;
        let old = std::mem::take(&mut self.out);
        let keep = (self.entries[first].start - base) as usize;
        let mut out = BytesMut::with_capacity(old.len().max(16 * 1024));
        out.extend_from_slice(&old[..keep]);
        let mut shift = 0;
        let tail: Vec<Entry> = self.entries.drain(first..).collect();
        for mut e in tail {
            if e.withdrawn {
                shift += e.end - e.start;
                continue;
            }
            out.extend_from_slice(&old[(e.start - base) as usize..(e.end - base) as usize]);
            e.start -= shift;
            e.end -= shift;
            self.entries.push_back(e);
        }
        self.out = out;
        // Looking again at a few expired calls is harmless; missing one is not.
        self.swept = self.swept.min(base + keep as u64);
    }

    /// Marks a slot's FIFO entry finished, delivering `result` when the
    /// caller has none yet.
    fn entry_done(&mut self, slot: usize, result: Option<Result<Value, Error>>) {
        let s = &mut self.slots[slot];
        s.entry_live = false;
        if s.caller_gone {
            self.slots.remove(slot);
            return;
        }
        if s.result.is_none() {
            if let Some(r) = result {
                s.result = Some(r);
                wake(&mut s.waker);
            }
        }
    }

    fn deliver(&mut self, slot: usize, result: Result<Value, Error>) {
        let s = &mut self.slots[slot];
        if s.result.is_none() && !s.caller_gone {
            s.result = Some(result);
            wake(&mut s.waker);
        }
    }

    /// Hands the whole batch buffer to a transport that sends it
    /// asynchronously, putting `fresh` (empty) in its place. Its calls
    /// count as written from now on: if the socket dies before the send
    /// completes, they may have been applied.
    pub fn take_out(&mut self, fresh: BytesMut) -> BytesMut {
        debug_assert!(fresh.is_empty());
        let batch = std::mem::replace(&mut self.out, fresh);
        self.written += batch.len() as u64;
        self.stats.writes += 1;
        batch
    }

    /// A transport that took a batch with [`take_out`](Self::take_out)
    /// gives back its last `tail.len()` bytes, which never reached the
    /// socket (it died first). They go back in front of the batch buffer,
    /// so the calls wholly inside them count as unwritten again: on the
    /// next socket they are sent, unless their callers already stopped
    /// waiting (a timeout said "may have been applied", or the future was
    /// dropped), in which case they are withdrawn, never to be sent. A
    /// call cut by the boundary stays written and fails as possibly
    /// applied.
    pub fn unwrite(&mut self, tail: &[u8]) {
        if tail.is_empty() || matches!(self.link, Link::Closed(_)) {
            return;
        }
        debug_assert!(tail.len() as u64 <= self.written);
        let mut out = BytesMut::with_capacity(tail.len() + self.out.len());
        out.extend_from_slice(tail);
        out.extend_from_slice(&self.out);
        self.out = out;
        let taken_until = self.written;
        self.written -= tail.len() as u64;
        let from = self.entries.partition_point(|e| e.start < self.written);
        for i in from..self.entries.len() {
            let e = &self.entries[i];
            if e.start >= taken_until {
                break;
            }
            let s = &self.slots[e.slot];
            if !e.withdrawn && (s.caller_gone || s.result.is_some()) {
                self.withdraw(i);
            }
        }
    }

    /// Notes that the first `n` bytes of the batch buffer were written.
    pub fn wrote(&mut self, n: usize) {
        self.out.advance(n);
        self.written += n as u64;
        self.stats.writes += 1;
    }

    /// A reply (not a push) arrived: hand it to the oldest call. A reply
    /// nobody asked for is a protocol violation.
    pub fn on_reply(&mut self, value: Value) -> Result<(), Error> {
        self.stats.replies += 1;
        let unexpected = || Error::Protocol(crate::resp::ProtocolError::UnexpectedReply);
        let Some(entry) = self.entries.front_mut() else {
            return Err(unexpected());
        };
        if entry.start >= self.written {
            return Err(unexpected());
        }
        let result = match &mut entry.expect {
            Expect::One => Ok(value),
            Expect::Many { left, got } => {
                // A caller that gave up keeps nothing of its replies.
                let s = &self.slots[entry.slot];
                if s.caller_gone || s.result.is_some() {
                    *got = Vec::new();
                } else {
                    got.push(value);
                }
                *left -= 1;
                if *left > 0 {
                    return Ok(());
                }
                Ok(Value::Array(std::mem::take(got)))
            }
        };
        let entry = self.entries.pop_front().expect("front exists");
        self.entry_done(entry.slot, Some(result));
        if !self.admit_waiters.is_empty() {
            self.wake_admission();
        }
        Ok(())
    }

    /// The reply being received passed `max_reply_bytes`: the call fails
    /// with `error` now; the rest of the reply is skipped, and its end
    /// ([`on_skipped_reply`](Self::on_skipped_reply)) finishes the call.
    pub fn on_reply_too_large(&mut self, error: Error) -> Result<(), Error> {
        match self.entries.front() {
            Some(e) if e.start < self.written => {
                let slot = e.slot;
                self.deliver(slot, Err(error));
                Ok(())
            }
            _ => Err(Error::Protocol(crate::resp::ProtocolError::UnexpectedReply)),
        }
    }

    /// A reply was skipped to its end: it counts as the oldest call's
    /// reply, whose caller is gone or already has its result.
    pub fn on_skipped_reply(&mut self) -> Result<(), Error> {
        debug_assert!(self.entries.front().is_none_or(|e| {
            let s = &self.slots[e.slot];
            s.caller_gone || s.result.is_some()
        }));
        self.stats.replies_skipped += 1;
        self.on_reply(Value::Nil)
    }

    /// While a reply streams in: whether nobody waits for it any more,
    /// because its caller is gone or was answered, or because its
    /// deadline has passed — then the caller gets `Timeout { maybe_applied:
    /// true }` here and now, as the sweeper would (whose timer can be held
    /// up while the driver keeps busy).
    pub fn front_reply_unwanted(&mut self) -> bool {
        let Some(e) = self.entries.front() else {
            return false;
        };
        if e.start >= self.written {
            return false;
        }
        let (slot, deadline) = (e.slot, e.deadline);
        let s = &self.slots[slot];
        if s.caller_gone || s.result.is_some() {
            return true;
        }
        if Instant::now() < deadline {
            return false;
        }
        self.time_out(slot, true);
        true
    }

    /// A push frame arrived.
    pub fn on_push(&mut self, value: Value, capacity: usize) {
        if !self.push_taken {
            return;
        }
        if self.pushes.len() >= capacity {
            self.pushes_dropped += 1;
            if self.pushes_dropped.is_power_of_two() {
                tracing::warn!(
                    dropped = self.pushes_dropped,
                    "push frames dropped: the push receiver is not keeping up"
                );
            }
            return;
        }
        self.pushes.push_back(value);
        wake(&mut self.push_waker);
    }

    /// Expires calls whose deadline passed; returns when to look again.
    pub fn expire(&mut self, now: Instant, default_timeout: Duration) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let soonest = |t: Instant, next: &mut Option<Instant>| {
            *next = Some(next.map_or(t, |n| n.min(t)));
        };
        // Calls with the default timeout expire in FIFO order.
        let mut expired = Vec::new();
        let from = self.entries.partition_point(|e| e.start < self.swept);
        for e in self.entries.iter().skip(from) {
            if e.timeout != default_timeout || e.withdrawn {
                continue;
            }
            if e.deadline > now {
                soonest(e.deadline, &mut next);
                break;
            }
            expired.push(e.seq);
            self.swept = e.end;
        }
        while let Some(Reverse((deadline, seq))) = self.odd_deadlines.peek().copied() {
            if deadline > now {
                soonest(deadline, &mut next);
                break;
            }
            self.odd_deadlines.pop();
            expired.push(seq);
        }
        for seq in expired {
            let Ok(i) = self.entries.binary_search_by_key(&seq, |e| e.seq) else {
                continue;
            };
            let e = &self.entries[i];
            if e.withdrawn {
                continue;
            }
            let (slot, unwritten) = (e.slot, e.start >= self.written);
            // The server never runs a command whose caller gave up before
            // it was written: it is withdrawn.
            self.time_out(slot, !unwritten);
            if unwritten {
                self.withdraw(i);
            }
        }
        // A socket whose oldest reply is overdue by a whole timeout (the
        // call's or the configured one, whichever is longer) is taken for
        // dead: a half-open socket would otherwise hold calls forever.
        if let Some(front) = self.entries.front() {
            if front.start < self.written {
                let dead_at = front.deadline + front.timeout.max(default_timeout);
                if now >= dead_at {
                    self.stalled = true;
                    wake(&mut self.io_waker);
                } else {
                    soonest(dead_at, &mut next);
                }
            }
        }
        next
    }

    fn time_out(&mut self, slot: usize, maybe_applied: bool) {
        let s = &self.slots[slot];
        if s.result.is_none() && !s.caller_gone {
            self.stats.timeouts += 1;
            tracing::debug!(maybe_applied, "call timed out");
        }
        self.deliver(slot, Err(Error::Timeout { maybe_applied }));
    }

    /// The socket died. Calls already written fail (they may have been
    /// applied); the rest wait for the next socket, except calls of a
    /// watch session, whose `WATCH` died with the socket.
    pub fn on_disconnect(&mut self, config: &ConnectionConfig, exit: bool) {
        while let Some(e) = self.entries.front() {
            if e.start >= self.written {
                break;
            }
            let e = self.entries.pop_front().expect("front exists");
            self.entry_done(e.slot, Some(Err(Error::ConnectionLost)));
        }
        match self.entries.front() {
            Some(front) => {
                let partial = (front.start - self.written) as usize;
                self.out.advance(partial);
                self.written = front.start;
            }
            None => {
                self.written += self.out.len() as u64;
                self.out.clear();
            }
        }
        self.swept = self.swept.max(self.written);
        let old_generation = self.generation;
        let fail_fast = self.fail_fast;
        if fail_fast {
            self.down = Some(LOST.into());
        }
        self.fail_unwritten(|e| {
            if exit {
                Some(Error::Closed(EXITED))
            } else if e.bound_generation == Some(old_generation) {
                Some(Error::WatchLost)
            } else if fail_fast {
                Some(not_sent(config, LOST))
            } else {
                None
            }
        });
        self.link = if exit {
            Link::Closed(EXITED)
        } else {
            Link::Connecting
        };
        self.stalled = false;
        if exit {
            wake(&mut self.push_waker);
            wake(&mut self.sweeper_waker);
        }
        self.wake_admission();
    }

    /// Closes for good: every queued call fails with `Closed` (written
    /// ones with `ConnectionLost`).
    pub fn close(&mut self, why: &'static str) {
        if matches!(self.link, Link::Closed(_)) {
            return;
        }
        while let Some(e) = self.entries.pop_back() {
            if e.withdrawn {
                continue;
            }
            let err = if e.start < self.written {
                Error::ConnectionLost
            } else {
                Error::Closed(why)
            };
            self.entry_done(e.slot, Some(Err(err)));
        }
        self.written += self.out.len() as u64;
        self.out.clear();
        self.withdrawn = 0;
        self.link = Link::Closed(why);
        wake(&mut self.io_waker);
        wake(&mut self.sweeper_waker);
        wake(&mut self.push_waker);
        self.wake_admission();
    }

    /// A handshake finished on a new socket. False when the connection
    /// was closed meanwhile: the socket must be dropped.
    pub fn on_up(&mut self, protocol: Protocol) -> bool {
        if matches!(self.link, Link::Closed(_)) {
            return false;
        }
        if self.generation > 0 {
            self.stats.reconnects += 1;
        }
        self.generation += 1;
        self.protocol = protocol;
        self.link = Link::Up;
        self.down = None;
        self.wake_admission();
        true
    }

    /// Fails each queued call, none of which is written, for which
    /// `error` gives an error: the caller gets it and the call is
    /// withdrawn, so it is never sent.
    fn fail_unwritten(&mut self, mut error: impl FnMut(&Entry) -> Option<Error>) {
        for i in 0..self.entries.len() {
            let e = &self.entries[i];
            debug_assert!(e.start >= self.written, "a written call is not withdrawn");
            if e.withdrawn {
                continue;
            }
            if let Some(err) = error(e) {
                let slot = e.slot;
                self.deliver(slot, Err(err));
                self.withdraw(i);
            }
        }
        self.compact();
    }

    /// A connect attempt failed. In fail-fast mode the calls waiting for a
    /// socket fail now (none was sent), and later calls fail at once until
    /// a socket is up again.
    pub fn on_connect_failed(&mut self, config: &ConnectionConfig, reason: String) {
        if !self.fail_fast || matches!(self.link, Link::Closed(_)) {
            return;
        }
        self.fail_unwritten(|_| Some(not_sent(config, &reason)));
        self.down = Some(reason);
    }

    /// In fail-fast mode, while the server is unreachable: the error a
    /// call gets instead of waiting.
    pub fn down_error(&self, config: &ConnectionConfig) -> Option<Error> {
        match &self.down {
            Some(reason) if self.fail_fast && self.link == Link::Connecting => {
                Some(not_sent(config, reason))
            }
            _ => None,
        }
    }

    /// Why the I/O loop must give up its socket now, on either transport:
    /// the connection was closed, or the sweeper took the socket for dead.
    /// Also starts a new batch clock (every driver wake-up does).
    pub fn io_loop_turn(&mut self) -> Option<Error> {
        self.batch_clock = None;
        if let Link::Closed(why) = self.link {
            return Some(Error::Closed(why));
        }
        self.stalled.then(|| {
            Error::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the oldest reply is overdue by a whole timeout; the socket is taken for dead",
            ))
        })
    }

    /// Lets go of the batch buffer's memory while idle; the driver drops
    /// its read buffer when it sees `hibernating`.
    pub fn hibernate(&mut self) {
        self.hibernating = true;
        self.out = BytesMut::new();
        wake(&mut self.io_waker);
    }

    /// True when nothing is queued or in flight.
    pub fn is_idle(&self) -> bool {
        self.entries.is_empty() && self.out.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(timeout: Duration) -> Call {
        Call {
            watch: None,
            timeout,
            replies: 1,
            gather: false,
            detached: false,
        }
    }

    fn queue(st: &mut State, config: &ConnectionConfig, timeout: Duration, bytes: &[u8]) -> usize {
        match st.admit(config, &call(timeout), &mut |out| {
            out.extend_from_slice(bytes)
        }) {
            Ok(Admit::Queued(slot)) => slot,
            _ => panic!("not queued"),
        }
    }

    /// Bytes a transport gives back go in front of the batch buffer; a
    /// call cut by the boundary stays written, a call wholly in them whose
    /// caller was told "timed out, may have been applied" is withdrawn,
    /// and the others are sent on the next socket.
    #[test]
    fn unwritten_bytes_come_back_in_front() {
        let config = ConnectionConfig::default();
        let shared = Shared::new(config.clone(), None);
        let mut st = shared.state.borrow_mut();
        st.link = Link::Up;
        let long = Duration::from_secs(60);
        let a = queue(&mut st, &config, long, b"AAAA");
        let b = queue(&mut st, &config, long, b"BBBB");
        let c = queue(&mut st, &config, Duration::from_millis(1), b"CCCC");
        let d = queue(&mut st, &config, long, b"DDDD");
        let batch = st.take_out(BytesMut::new());
        assert_eq!(&batch[..], b"AAAABBBBCCCCDDDD");
        let e = queue(&mut st, &config, long, b"EEEE");
        // C times out while its batch is with the transport.
        st.expire(Instant::now() + Duration::from_millis(5), config.timeout);
        let waker = futures_lite::future::block_on(std::future::poll_fn(|cx| {
            std::task::Poll::Ready(cx.waker().clone())
        }));
        assert!(matches!(
            st.poll_slot(c, &waker),
            Some(Err(Error::Timeout {
                maybe_applied: true
            }))
        ));
        // The socket took "AAAAB" only.
        st.unwrite(&batch[5..]);
        assert_eq!(&st.out[..], b"BBBCCCCDDDDEEEE");
        st.on_disconnect(&config, false);
        assert!(matches!(
            st.poll_slot(a, &waker),
            Some(Err(Error::ConnectionLost))
        ));
        assert!(matches!(
            st.poll_slot(b, &waker),
            Some(Err(Error::ConnectionLost))
        ));
        // C is gone from the stream; D and E wait for the next socket.
        assert_eq!(&st.out[..], b"DDDDEEEE");
        assert!(st.poll_slot(d, &waker).is_none());
        assert!(st.poll_slot(e, &waker).is_none());
    }
}
