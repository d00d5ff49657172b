//! The multiplexer of one connection ([`Mux`]): what its callers and its
//! tasks share on one core to put many callers' commands into one stream
//! and hand the replies back to them in order. It holds the batch buffer
//! commands are encoded into, the FIFO of calls awaiting replies, the reply
//! slots callers wait on, and the state of the link to the server;
//! [`Shared`] adds the connection's configuration around it.
//!
//! Every command occupies a byte range of the stream written to the
//! socket. `written` is the stream offset of the first byte of `out` that
//! has not reached the socket, so a call whose range starts before it may
//! have been applied, and a call whose range starts at or after it can
//! still be withdrawn (on timeout, on cancellation) or carried over to the
//! next connection after a reconnect.
//!
//! Callers that find no room (or another task's watch session) wait in a
//! [`WaitQueue`]: each place that frees wakes one waiter, oldest first (see
//! `admission`). Deadlines of queued calls and of waiters are kept here for
//! the sweeper; a reply read after its call's deadline is reported as a
//! timeout, never as a success.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use slab::Slab;

use super::admission::WaitQueue;
use super::cache::{Cache, TrackerId};
use super::health::{Finding, Health};
use super::pubsub::{ChannelKind, Frame, Lost, Message, Registry, encode_command};
use super::write_through::{PIPELINE_SEND_NOW_BYTES, WriteThrough};
use crate::Error;
use crate::config::{ConnectionConfig, Protocol};
use crate::resp::Value;

/// What a call expects back.
pub(crate) enum Expect {
    /// One reply.
    One,
    /// `n` replies, gathered into one array (pipelines, transactions).
    Many { left: usize, got: Vec<Value> },
    /// A subscribe or unsubscribe: one confirmation push per name in
    /// `left`, or one reply (an error) instead of them all.
    Confirm {
        kind: ChannelKind,
        unsubscribe: bool,
        left: Vec<Bytes>,
    },
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
    /// Expires through `odd_deadlines`: its deadline may come before
    /// those of calls queued earlier, so the FIFO sweep skips it.
    odd: bool,
    /// Calls of a watch session must run on the socket the `WATCH` ran on.
    bound_generation: Option<u64>,
    /// Withdrawn before being written; cut out by `compact`.
    withdrawn: bool,
    /// The server holds the reply back on purpose (`BLPOP`, ...): the
    /// health check does not take its wait for silence.
    blocking: bool,
}

/// Where a caller's reply lands.
struct Slot {
    seq: u64,
    result: Option<Result<Value, Error>>,
    waker: Option<Waker>,
    caller_gone: bool,
    entry_live: bool,
    /// A success read after the first eighth of the call's time: the
    /// deadline it is checked against once more when handed to the caller.
    due: Option<Instant>,
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
    /// Time until the call's deadline, from its first try (a call that
    /// waits for room keeps its first deadline).
    pub timeout: Duration,
    /// How many replies the encoded commands produce (at least 1).
    pub replies: usize,
    /// Gather the replies into an array even when there is only one
    /// (pipelines, transactions).
    pub gather: bool,
    /// Nobody waits for the reply (a best-effort `UNWATCH`).
    pub detached: bool,
    /// A command the server answers only when something happens or a
    /// timeout of its own passes ([`is_blocking`](crate::cmd::is_blocking)).
    pub blocking: bool,
}

/// Why a call cannot be queued right now.
pub(crate) enum Admit {
    /// Queued; wait on this slot.
    Queued(usize),
    /// Wait for room (backpressure) or for a watch session to end: the
    /// caller is in the admission queue and polls it with
    /// [`Mux::poll_waiter`].
    Wait,
}

/// The wait queues of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Queue {
    /// Calls waiting for room or for another task's watch session to end.
    Calls,
    /// Watch sessions waiting for the one that holds the connection.
    Sessions,
}

/// How many calls one read of the clock stamps, at most.
const CLOCK_REUSE: u32 = 256;

/// A result handed to its caller less than this before the call's
/// deadline is reported as a timeout: the caller looks at the clock after
/// it gets the result, and must never see a success past its deadline.
const HANDOVER_MARGIN: Duration = Duration::from_millis(1);

/// The multiplexer of one connection: its callers' calls in, one stream
/// of commands out; replies in, each to its caller (see the module docs).
pub(crate) struct Mux {
    pub out: BytesMut,
    written: u64,
    entries: VecDeque<Entry>,
    slots: Slab<Slot>,
    next_seq: u64,
    /// Calls whose deadlines are out of FIFO order (a timeout other than
    /// the configured one, a watch session's call that went before
    /// waiting callers). Stale entries are dropped as they come up, and all
    /// at once when they outnumber the queued calls.
    odd_deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
    /// The deadline of the last call the FIFO sweep expires.
    last_in_order: Option<Instant>,
    /// Withdrawn calls still in the FIFO, waiting for `compact`.
    withdrawn: usize,
    /// Stream offset up to which the FIFO sweep is done: every call
    /// before it was expired, or expires otherwise (withdrawn, odd).
    swept: u64,
    pub link: Link,
    /// Counts sockets: bumped when a handshake finishes.
    pub generation: u64,
    pub protocol: Protocol,
    pub io_waker: Option<Waker>,
    pub sweeper_waker: Option<Waker>,
    /// When the sweeper wakes next; `None` asks it to look at once.
    pub sweep_at: Option<Instant>,
    /// Calls waiting to be queued.
    admission: WaitQueue,
    /// Watch sessions waiting for the connection.
    sessions: WaitQueue,
    /// Watch sessions waiting for a socket to be up (few: one session
    /// holds the connection at a time).
    link_waiters: Vec<Waker>,
    max_in_flight: usize,
    max_batch_bytes: usize,
    /// When the replies being dispatched were read, read lazily once per
    /// read (the I/O loops clear it): replies after their call's deadline
    /// are timeouts.
    reply_clock: Option<Instant>,
    /// The token of the watch session that owns the connection.
    pub exclusive: Option<u64>,
    pub next_token: u64,
    pub pushes: VecDeque<Value>,
    pub push_waker: Option<Waker>,
    pub pushes_dropped: u64,
    pub push_taken: bool,
    /// The subscriptions this connection carries.
    pub pubsub: Registry,
    /// A RESP2 socket given to subscriptions: its pub/sub arrays are read
    /// as pushes.
    pub resp2_pubsub: bool,
    /// When the sweeper next sends a `PING` on a connection carrying
    /// subscriptions and nothing else, so that a silent server is noticed
    /// (see `health`).
    pub pubsub_ping_at: Option<Instant>,
    /// Names subscribed again on a new socket that nobody wants any more:
    /// unsubscribed once the socket is up.
    pub pubsub_stale: Vec<(ChannelKind, Vec<Bytes>)>,
    /// Why the socket must be given up now (the oldest reply is overdue
    /// by far, a probe was refused, or the owner asked), for the I/O loop.
    pub give_up: Option<&'static str>,
    /// The health check of the current socket.
    pub health: Health,
    pub last_activity: Instant,
    /// The time calls queued since the driver last ran are stamped with;
    /// cleared by every driver and sweeper wake-up, so it is never older
    /// than the batch being built.
    pub batch_clock: Option<Instant>,
    batch_clock_uses: u32,
    pub hibernating: bool,
    pub stats: ConnectionStats,
    /// Fail calls at once, instead of queueing them, while the server is
    /// unreachable (cluster node connections: the router would rather
    /// refresh and go elsewhere).
    pub fail_fast: bool,
    /// Why the last connect attempt failed or the socket died, while no
    /// socket is up; `None` before the first attempt and while up.
    down: Option<String>,
    /// The socket callers may send to themselves (see
    /// [`super::write_through`]).
    pub write_through: WriteThrough,
    /// The client-side cache this socket tracks reads for, and its
    /// tracker there: invalidation pushes go to it, and a lost socket
    /// voids what it tracked.
    pub tracking: Option<(Rc<Cache>, TrackerId)>,
}

/// Counters kept per connection ([`Connection::stats`](crate::Connection::stats)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionStats {
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
    /// Times the socket went silent: a reply due for a whole health
    /// interval without a byte arriving (see
    /// [`ConnectionConfig::health_interval`]).
    pub stalls: u64,
    /// Health-check probes (a new socket and a `PING`) that got no answer
    /// within the health interval.
    pub probes_unanswered: u64,
    /// Replies skipped as they arrived, without building their values:
    /// past `max_reply_bytes`, or their caller gave up while they streamed
    /// in (each also counts in `replies`).
    pub replies_skipped: u64,
    /// Pipelines and transactions of 1 KiB or more sent by their caller
    /// at once, with whatever was queued before them, instead of by the
    /// connection task (each also counts in `writes`; see
    /// [`Connection`](crate::Connection)).
    pub caller_sends: u64,
    /// Pub/sub messages received (each once, however many subscriptions
    /// it went to).
    pub messages: u64,
}

/// What a connection's handles and tasks share (behind an `Rc`): its
/// configuration and its multiplexer.
pub(crate) struct Shared {
    pub config: ConnectionConfig,
    /// Told when the socket goes silent (a cluster client checks its
    /// topology then).
    pub on_silent: Option<Box<dyn Fn()>>,
    /// The transport of the current socket (or of the next one).
    pub transport: std::cell::Cell<crate::config::TransportKind>,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub mux: RefCell<Mux>,
    /// On RESP2, the dedicated connection carrying this connection's
    /// subscriptions, once one was asked for (see [`super::pubsub`]).
    pub pubsub_link: RefCell<Option<super::Connection>>,
    /// The client-side cache this connection's cached reads use (its own,
    /// or its cluster client's), and its tracker there.
    pub cache: Option<(Rc<Cache>, TrackerId)>,
}

impl Shared {
    pub fn new(config: ConnectionConfig, tls: Option<Arc<rustls::ClientConfig>>) -> Shared {
        Shared {
            on_silent: None,
            transport: std::cell::Cell::new(crate::config::TransportKind::Glommio),
            tls,
            mux: RefCell::new(Mux {
                out: BytesMut::with_capacity(16 * 1024),
                written: 0,
                entries: VecDeque::new(),
                slots: Slab::new(),
                next_seq: 0,
                odd_deadlines: BinaryHeap::new(),
                last_in_order: None,
                withdrawn: 0,
                swept: 0,
                link: Link::Connecting,
                generation: 0,
                protocol: config.protocol,
                io_waker: None,
                sweeper_waker: None,
                sweep_at: None,
                admission: WaitQueue::new(),
                sessions: WaitQueue::new(),
                link_waiters: Vec::new(),
                max_in_flight: config.max_in_flight,
                max_batch_bytes: config.max_batch_bytes,
                reply_clock: None,
                exclusive: None,
                next_token: 1,
                pushes: VecDeque::new(),
                push_waker: None,
                pushes_dropped: 0,
                push_taken: false,
                pubsub: Registry::default(),
                resp2_pubsub: false,
                pubsub_ping_at: None,
                pubsub_stale: Vec::new(),
                give_up: None,
                health: Health::new(config.health_interval),
                last_activity: Instant::now(),
                batch_clock: None,
                batch_clock_uses: 0,
                hibernating: false,
                stats: ConnectionStats::default(),
                fail_fast: false,
                down: None,
                write_through: WriteThrough::default(),
                tracking: None,
            }),
            pubsub_link: RefCell::new(None),
            cache: None,
            config,
        }
    }
}

impl Shared {
    /// Makes this connection track reads for `cache`.
    pub fn track_for(&mut self, cache: Rc<Cache>) {
        let tracker = cache.tracker(&self.addr_text());
        self.mux.get_mut().tracking = Some((cache.clone(), tracker));
        self.cache = Some((cache, tracker));
    }

    /// The server's address, for logs and errors.
    pub fn addr_text(&self) -> String {
        self.config.addr.to_string()
    }

    /// True once the connection is closed for good.
    pub fn is_closed(&self) -> bool {
        matches!(self.mux.borrow().link, Link::Closed(_))
    }
}

/// The error of a call that was not sent because the server is
/// unreachable: safe to send elsewhere or again.
fn not_sent(config: &ConnectionConfig, reason: &str) -> Error {
    Error::Connect {
        addr: config.addr.to_string(),
        reason: reason.to_owned(),
        unsent_command: true,
    }
}

/// Why a fail-fast connection's calls are not sent after its socket died.
const LOST: &str = "the connection was lost";

/// Why a connection with `exit_on_disconnection` is closed.
const EXITED: &str = "the connection dropped and exit_on_disconnection is set";

/// Why a node connection's calls are not sent while its socket is silent.
const SILENT: &str = "the node has not answered for a whole health interval";

/// Why a socket whose oldest reply is overdue by far is given up.
const OVERDUE: &str =
    "the oldest reply is overdue by a whole timeout; the socket is taken for dead";

fn wake(waker: &mut Option<Waker>) {
    if let Some(w) = waker.take() {
        w.wake();
    }
}

impl Mux {
    /// Encodes a call into the batch buffer and queues its reply slot, or
    /// says why it must wait.
    ///
    /// `waiter` is the caller's place in the admission queue: `None` on the
    /// first try (set when the call must wait), then kept across tries and
    /// taken back when the call is queued. The caller leaves the queue with
    /// [`leave`](Self::leave) if it stops trying (an error, a dropped
    /// future). A fresh call goes at once only when nobody waits; a waiter
    /// goes when it holds a grant; a call of the watch session that holds
    /// the connection goes before everyone, as soon as there is room.
    pub fn admit(
        &mut self,
        config: &ConnectionConfig,
        call: &Call,
        encode: &mut impl FnMut(&mut BytesMut),
        waiter: &mut Option<usize>,
    ) -> Result<Admit, Error> {
        let Call {
            watch,
            timeout,
            replies,
            gather,
            detached,
            blocking,
        } = *call;
        if let Link::Closed(why) = self.link {
            return Err(Error::Closed(why));
        }
        if let Some(e) = self.down_error(config) {
            return Err(e);
        }
        let in_session = watch.is_some_and(|(token, _)| self.exclusive == Some(token));
        let go = if in_session {
            self.has_room()
        } else if self.exclusive.is_some() {
            false
        } else {
            match *waiter {
                None => self.admission.is_empty() && self.has_room(),
                Some(key) => {
                    self.admission.is_granted(key)
                        && (self.admission.held() == 0 || self.admission.head() == Some(key))
                        && self.has_room()
                }
            }
        };
        if !go {
            self.wait_in_line(config, timeout, in_session, waiter);
            return Ok(Admit::Wait);
        }
        let bound_generation = match watch {
            Some((_, g)) if self.link != Link::Up || self.generation != g => {
                return Err(Error::WatchLost);
            }
            Some((_, g)) => Some(g),
            None => None,
        };
        // One clock read per batch: calls queued into a batch the driver
        // has yet to write share the first call's time. A call that waited
        // keeps the deadline of its first try.
        let now = self.clock();
        let deadline = match waiter.take() {
            Some(key) => self.leave_line(key),
            None => now + timeout,
        };
        if deadline <= now {
            // Waited past its deadline and was not swept yet: never sent.
            self.stats.timeouts += 1;
            self.on_room();
            return Err(Error::Timeout {
                maybe_applied: false,
            });
        }
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
            due: None,
        });
        let expect = match replies {
            1 if !gather => Expect::One,
            n => Expect::Many {
                left: n,
                got: Vec::with_capacity(n),
            },
        };
        // The FIFO sweep needs its calls' deadlines in FIFO order; a call
        // that would break it expires through the heap.
        let odd = timeout != config.timeout
            || in_session
            || self.last_in_order.is_some_and(|last| deadline < last);
        if odd {
            self.push_odd(deadline, seq);
        } else {
            self.last_in_order = Some(deadline);
        }
        self.entries.push_back(Entry {
            slot,
            seq,
            expect,
            start,
            end,
            deadline,
            timeout,
            odd,
            bound_generation,
            withdrawn: false,
            blocking,
        });
        self.stats.calls += 1;
        self.last_activity = now;
        self.hibernating = false;
        if replies > 1
            && (end - start) as usize >= PIPELINE_SEND_NOW_BYTES
            && self.write_through.may_send()
            && !self.holds_writes()
            && self.give_up.is_none()
        {
            // A pipeline: sent now, with what is queued before it (see
            // `write_through`); what the socket does not take is the
            // driver's. As before any write, withdrawn calls are cut out
            // first: they must never reach the server.
            if self.needs_compaction() {
                self.compact();
            }
            let n = self.write_through.send(&self.out);
            if n > 0 {
                self.wrote(n);
                self.stats.caller_sends += 1;
            }
            if !self.out.is_empty() {
                wake(&mut self.io_waker);
            }
        } else if was_empty {
            wake(&mut self.io_waker);
        }
        // The sweeper must look before this deadline, and soon enough for
        // the health check to watch the call (it sleeps long while idle).
        let look_by = self
            .health
            .look_by(now)
            .map_or(deadline, |t| t.min(deadline));
        self.sweep_by(look_by);
        Ok(Admit::Queued(slot))
    }

    /// Queues a command nobody waits for, if there is room now:
    /// `Ok(true)` when it was, `Ok(false)` when there was no room
    /// (nothing is queued), the error when the connection takes no calls
    /// (closed, or a node connection whose server is unreachable).
    pub fn queue_detached(
        &mut self,
        config: &ConnectionConfig,
        encode: &mut impl FnMut(&mut BytesMut),
    ) -> Result<bool, Error> {
        let call = Call {
            watch: None,
            timeout: config.timeout,
            replies: 1,
            gather: false,
            detached: true,
            blocking: false,
        };
        let mut waiter = None;
        match self.admit(config, &call, encode, &mut waiter)? {
            Admit::Queued(_) => Ok(true),
            Admit::Wait => {
                if let Some(key) = waiter {
                    self.leave(Queue::Calls, key);
                }
                Ok(false)
            }
        }
    }

    /// Unsubscribes, without waiting, from the names `restore` found
    /// stale.
    pub fn unsubscribe_stale(&mut self, config: &ConnectionConfig) {
        for (kind, names) in std::mem::take(&mut self.pubsub_stale) {
            let mut encode = |out: &mut BytesMut| encode_command(out, kind, true, &names);
            if let Ok(true) = self.queue_detached(config, &mut encode) {
                self.expect_confirmations(kind, true, names);
            }
        }
    }

    /// A call that cannot go now waits in line (or keeps its place, holding
    /// its grant). Out of [`admit`](Self::admit)'s hot path, so that the
    /// common case stays small enough to inline the command's encoding.
    #[cold]
    #[inline(never)]
    fn wait_in_line(
        &mut self,
        config: &ConnectionConfig,
        timeout: Duration,
        in_session: bool,
        waiter: &mut Option<usize>,
    ) {
        match *waiter {
            Some(key) => {
                if self.admission.is_granted(key) {
                    self.admission.hold(key);
                }
            }
            None => {
                let deadline = self.clock() + timeout;
                let in_order = timeout == config.timeout;
                *waiter = Some(if in_session {
                    self.admission.push_first(deadline, in_order)
                } else {
                    self.admission.push(deadline, in_order)
                });
                self.sweep_by(deadline);
                self.on_room();
            }
        }
    }

    /// A waiter admitted now leaves the line; the deadline of its first
    /// try.
    #[cold]
    #[inline(never)]
    fn leave_line(&mut self, key: usize) -> Instant {
        let deadline = self.admission.deadline(key);
        let held = self.admission.held() > 0;
        self.admission.remove(key);
        if held {
            // Held grants wait for the head to go: wake the next.
            self.on_room();
        }
        deadline
    }

    /// The time calls queued now are stamped with: the batch's, while a
    /// batch is being built on a live socket, else read now. A batch's
    /// time serves [`CLOCK_REUSE`] calls at most: in one round of a busy
    /// executor, tens of thousands of callers may queue or wait before the
    /// driver runs, and the last must not get a deadline much earlier
    /// than their own.
    fn clock(&mut self) -> Instant {
        match self.batch_clock {
            Some(t)
                if !self.out.is_empty()
                    && self.link == Link::Up
                    && self.batch_clock_uses < CLOCK_REUSE =>
            {
                self.batch_clock_uses += 1;
                t
            }
            _ => {
                let t = Instant::now();
                self.batch_clock = Some(t);
                self.batch_clock_uses = 0;
                t
            }
        }
    }

    /// Makes sure the sweeper looks again no later than `deadline`.
    fn sweep_by(&mut self, deadline: Instant) {
        if self.sweep_at.is_some_and(|at| deadline < at) {
            self.sweep_at = None;
            wake(&mut self.sweeper_waker);
        }
    }

    fn push_odd(&mut self, deadline: Instant, seq: u64) {
        // Entries of calls that finished early stay until their deadline
        // comes up; drop them all once they outnumber the queued calls,
        // so the heap stays as large as the FIFO (amortised O(log n)).
        if self.odd_deadlines.len() >= 2 * self.entries.len() + 64 {
            let entries = &self.entries;
            self.odd_deadlines
                .retain(|Reverse((_, seq))| entries.binary_search_by_key(seq, |e| e.seq).is_ok());
        }
        self.odd_deadlines.push(Reverse((deadline, seq)));
    }

    /// Polls a caller's slot: the result once it is there.
    pub fn poll_slot(&mut self, slot: usize, waker: &Waker) -> Option<Result<Value, Error>> {
        let s = &mut self.slots[slot];
        match s.result.take() {
            Some(mut result) => {
                s.caller_gone = true;
                let due = s.due;
                if !s.entry_live {
                    self.slots.remove(slot);
                }
                // A success that came late in the call's time is checked
                // once more now that its caller runs: the caller may have
                // waited long to be scheduled.
                if let (Some(due), Ok(_)) = (due, &result) {
                    if Instant::now() + HANDOVER_MARGIN >= due {
                        self.stats.timeouts += 1;
                        result = Err(Error::Timeout {
                            maybe_applied: true,
                        });
                    }
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
        self.on_room();
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
        self.on_room();
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
        if !self.admission.is_empty() {
            self.on_room();
        }
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
        if !self.admission.is_empty() {
            self.on_room();
        }
    }

    /// Replies from a new read follow: the next reply reads the clock
    /// again (once for the whole read). Called by an I/O loop after each
    /// read; [`io_loop_turn`](Self::io_loop_turn) does it too.
    pub fn read_batch(&mut self) {
        self.reply_clock = None;
    }

    /// A reply (not a push) arrived: hand it to the oldest call. A reply
    /// nobody asked for is a protocol violation. A reply that came after
    /// its call's deadline (the sweeper had not got to it yet) is a
    /// timeout, `maybe_applied`; the clock is read once per read, not per
    /// reply.
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
            // A reply instead of confirmations: the server refused.
            Expect::Confirm { .. } => Ok(value),
        };
        self.finish_front(result);
        Ok(())
    }

    /// The oldest call is answered with `result`: it leaves the FIFO and
    /// its caller gets the result (a timeout when it came past the
    /// deadline).
    fn finish_front(&mut self, result: Result<Value, Error>) {
        let entry = self.entries.pop_front().expect("front exists");
        let now = *self.reply_clock.get_or_insert_with(Instant::now);
        let result = if entry.deadline <= now {
            let s = &self.slots[entry.slot];
            if s.result.is_none() && !s.caller_gone {
                self.stats.timeouts += 1;
            }
            Err(Error::Timeout {
                maybe_applied: true,
            })
        } else {
            // Slower than an eighth of its time (rare while all is well):
            // checked again when handed over, since its caller may be slow
            // to run when the executor is this busy.
            if entry.deadline - now <= entry.timeout - entry.timeout / 8 {
                self.slots[entry.slot].due = Some(entry.deadline);
            }
            result
        };
        self.entry_done(entry.slot, Some(result));
        if !self.admission.is_empty() {
            self.on_room();
        }
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

    /// A push frame arrived (or, on a RESP2 socket given to
    /// subscriptions, a pub/sub array): a message goes to the
    /// subscriptions wanting it, a confirmation to the subscribe call
    /// awaiting it, anything else to the push receiver.
    pub fn on_push(&mut self, value: Value, capacity: usize) {
        if let (Value::Push(items), Some((cache, tracker))) = (&value, &self.tracking) {
            if cache.on_push(*tracker, items) {
                return;
            }
        }
        if let Value::Push(items) | Value::Array(items) = &value {
            match Frame::of(items) {
                Frame::Message(m) => {
                    self.on_message(m);
                    return;
                }
                Frame::Confirm {
                    kind,
                    unsubscribe,
                    name,
                } => {
                    self.on_confirm(kind, unsubscribe, name);
                    return;
                }
                Frame::Other => {}
            }
        }
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

    /// A pub/sub message arrived: to the subscriptions wanting it.
    pub fn on_message(&mut self, message: Message) {
        self.stats.messages += 1;
        self.pubsub.deliver(message);
    }

    /// A subscribe or unsubscribe confirmation: it counts for the oldest
    /// call if that call awaits it (confirmations come in command order,
    /// after the replies of the calls before); otherwise the server sent
    /// it on its own, and an unsubscribe means it no longer serves the
    /// name.
    fn on_confirm(&mut self, kind: ChannelKind, unsubscribe: bool, name: Option<Bytes>) {
        if let Some(e) = self.entries.front_mut() {
            if let Expect::Confirm {
                kind: k,
                unsubscribe: u,
                left,
            } = &mut e.expect
            {
                let at = name.as_ref().and_then(|n| left.iter().position(|l| l == n));
                if let (true, true, Some(at)) =
                    (e.start < self.written, *k == kind && *u == unsubscribe, at)
                {
                    left.swap_remove(at);
                    if left.is_empty() {
                        self.finish_front(Ok(Value::Nil));
                    }
                    return;
                }
            }
        }
        if let (true, Some(name)) = (unsubscribe, name) {
            tracing::info!(?kind, name = %String::from_utf8_lossy(&name), "the server unsubscribed on its own");
            self.pubsub.lose(kind, &name, Lost::Dropped);
        }
    }

    /// The call just queued ([`admit`](Self::admit) returned its slot) is
    /// a subscribe or unsubscribe of `names`: it is answered by their
    /// confirmations.
    pub fn expect_confirmations(
        &mut self,
        kind: ChannelKind,
        unsubscribe: bool,
        names: Vec<Bytes>,
    ) {
        let e = self.entries.back_mut().expect("a call was just queued");
        e.expect = Expect::Confirm {
            kind,
            unsubscribe,
            left: names,
        };
    }

    /// Expires calls and waiters whose deadline passed; returns when to
    /// look again. Each call is looked at once by the FIFO sweep (or
    /// popped once from the heap), each waiter once: the work is
    /// proportional to what expires, not to what is queued.
    pub fn expire(&mut self, now: Instant, default_timeout: Duration) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let soonest = |t: Instant, next: &mut Option<Instant>| {
            *next = Some(next.map_or(t, |n| n.min(t)));
        };
        let (lost, next_waiter) = self.admission.expire(now);
        if let Some(t) = next_waiter {
            soonest(t, &mut next);
        }
        if lost > 0 || self.admission.held() > 0 {
            self.on_room();
        }
        let (lost, next_session) = self.sessions.expire(now);
        if let Some(t) = next_session {
            soonest(t, &mut next);
        }
        if lost > 0 {
            self.grant_session();
        }
        // Calls in FIFO order of deadline expire in FIFO order; the sweep
        // moves past the others for good (the heap has them, or they are
        // withdrawn), so it never walks them twice.
        let mut expired = Vec::new();
        let from = self.entries.partition_point(|e| e.start < self.swept);
        for e in self.entries.range(from..) {
            if e.odd || e.withdrawn {
                self.swept = e.end;
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
                    self.give_up = Some(OVERDUE);
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
        // Invalidations for what this socket tracked can no longer come.
        if let Some((cache, tracker)) = &self.tracking {
            cache.tracker_void(*tracker);
        }
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
        if !self.pubsub.is_empty() {
            self.pubsub.on_socket_lost(Instant::now());
        }
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
            self.pubsub.close();
            Link::Closed(EXITED)
        } else {
            Link::Connecting
        };
        self.give_up = None;
        self.health.clear();
        if exit {
            wake(&mut self.push_waker);
            wake(&mut self.sweeper_waker);
        }
        // Waiting callers learn of a closed or unreachable connection at
        // once (O(n), once); otherwise they wait on, and the places the
        // failed calls freed go to the oldest.
        if exit || fail_fast {
            self.admission.wake_all();
            self.sessions.wake_all();
        }
        self.on_room();
        self.wake_link_waiters();
    }

    /// Closes for good: every queued call fails with `Closed` (written
    /// ones with `ConnectionLost`).
    pub fn close(&mut self, why: &'static str) {
        if matches!(self.link, Link::Closed(_)) {
            return;
        }
        if let Some((cache, tracker)) = &self.tracking {
            cache.tracker_void(*tracker);
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
        self.pubsub.close();
        wake(&mut self.io_waker);
        wake(&mut self.sweeper_waker);
        wake(&mut self.push_waker);
        self.admission.wake_all();
        self.sessions.wake_all();
        self.wake_link_waiters();
    }

    /// A handshake finished on a new socket. False when the connection
    /// was closed meanwhile: the socket must be dropped.
    pub fn on_up(&mut self, protocol: Protocol) -> bool {
        if matches!(self.link, Link::Closed(_)) {
            return false;
        }
        self.health.clear();
        if self.generation > 0 {
            self.stats.reconnects += 1;
        }
        self.generation += 1;
        self.protocol = protocol;
        self.link = Link::Up;
        self.down = None;
        self.wake_link_waiters();
        self.on_room();
        true
    }

    /// Fails each queued call not yet written for which `error` gives an
    /// error: the caller gets it and the call is withdrawn, so it is never
    /// sent.
    fn fail_unwritten(&mut self, mut error: impl FnMut(&Entry) -> Option<Error>) {
        let first = self.entries.partition_point(|e| e.start < self.written);
        for i in first..self.entries.len() {
            let e = &self.entries[i];
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
        self.admission.wake_all();
        self.wake_link_waiters();
    }

    /// In fail-fast mode, while the server is unreachable: the error a
    /// call gets instead of waiting.
    pub fn down_error(&self, config: &ConnectionConfig) -> Option<Error> {
        if !self.fail_fast {
            return None;
        }
        match &self.down {
            Some(reason) if self.link == Link::Connecting => Some(not_sent(config, reason)),
            _ if self.health.is_silent() => Some(not_sent(config, SILENT)),
            _ => None,
        }
    }

    /// Why the I/O loop must give up its socket now, on either transport:
    /// the connection was closed, or the socket was taken for dead.
    /// Also starts a new batch clock and a new reply clock (every driver
    /// wake-up does).
    pub fn io_loop_turn(&mut self) -> Option<Error> {
        self.batch_clock = None;
        self.reply_clock = None;
        if let Link::Closed(why) = self.link {
            return Some(Error::Closed(why));
        }
        self.give_up
            .map(|why| Error::from(std::io::Error::new(std::io::ErrorKind::TimedOut, why)))
    }

    /// Takes the socket for dead: the I/O loop gives it up at its next
    /// turn (calls written on it fail as possibly applied, the others wait
    /// for the next socket or, on a node connection, fail as not sent).
    pub fn give_up_socket(&mut self, why: &'static str) {
        if self.link == Link::Up && self.give_up.is_none() {
            self.give_up = Some(why);
            wake(&mut self.io_waker);
        }
    }

    /// `n` bytes arrived from the socket. True when they ended a silence:
    /// calls held back may be written now.
    #[inline]
    pub fn note_bytes_in(&mut self, n: usize) -> bool {
        self.health.on_bytes(n)
    }

    /// True while nothing is to be written: the socket is silent.
    #[inline]
    pub fn holds_writes(&self) -> bool {
        self.health.is_silent()
    }

    /// The health check's look at the socket (see [`super::health`]);
    /// returns what it found and when to look again. A node connection
    /// whose socket just went silent fails its unwritten calls as not
    /// sent.
    pub fn check_health(
        &mut self,
        config: &ConnectionConfig,
        now: Instant,
    ) -> (Finding, Option<Instant>) {
        if self.link != Link::Up {
            return (Finding::Fine, None);
        }
        // Only a call wholly written is due: the reply to a large command
        // still going out cannot come before its last byte.
        let due = self
            .entries
            .front()
            .filter(|e| e.end <= self.written && !e.blocking)
            .map(|e| e.seq);
        let (finding, next) = self.health.look(now, due, !self.entries.is_empty());
        if finding == Finding::Silent {
            self.stats.stalls += 1;
            tracing::warn!(
                addr = %config.addr,
                interval = ?config.health_interval,
                "no reply for a whole health interval; probing the server"
            );
            if self.fail_fast {
                self.fail_unwritten(|_| Some(not_sent(config, SILENT)));
            }
        }
        (finding, next)
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

mod waiting;

#[cfg(test)]
mod tests;
