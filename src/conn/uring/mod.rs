//! The io_uring transport: socket traffic through a ring of redcore's own
//! on each core, beside glommio's.
//!
//! # What it does
//!
//! - **One ring per core**, created on first use on the executor thread
//!   (thread-local, tied to the executor that created it), with a
//!   provided-buffer ring for receives and a sparse table of registered
//!   buffers for sends.
//! - **Sends from registered memory, encoded in place.** Each connection
//!   owns two registered buffers (64 KiB to start, grown up to 256 KiB to
//!   fit the batches it sees, within a per-core budget of 2 MiB of pinned
//!   memory; past the budget, sends come from ordinary memory). Callers encode commands into the connection's batch buffer,
//!   which *is* a view of one of them; to send, the driver swaps in the
//!   other one and submits `IORING_OP_WRITE_FIXED` with the buffer's index:
//!   one submission per batch per connection. A batch that outgrew or left
//!   its registered buffer (a multi-MiB value, a compaction after a
//!   cancelled call, a hibernation) goes out with plain `IORING_OP_SEND`
//!   from its own memory and is counted; the connection registers a larger
//!   buffer afterwards if the budget allows.
//! - **One `io_uring_enter` per core per round.** Sends and receive
//!   re-arms are only queued; a submitter task, woken by the first entry,
//!   runs after the tasks woken in the same round and submits them all.
//! - **Multishot receives into provided buffers.** Each socket keeps one
//!   `IORING_OP_RECV` (multishot, buffer select) armed; the kernel picks a
//!   16 KiB buffer from the core's provided-buffer ring for each chunk. The
//!   reactor **copies** each chunk into the connection's receive buffer and
//!   gives the provided buffer straight back, so a slow connection cannot
//!   starve the others of buffers; replies are then decoded in place from
//!   that receive buffer, exactly as with glommio's sockets. (So there is
//!   one copy on the way in that the glommio transport, which `recv`s
//!   straight into the read buffer, does not make.)
//! - **No busy-waiting.** The ring signals an eventfd on every completion;
//!   one reactor task per core waits for it with a read on glommio's own
//!   ring (`BufferedFile::read_at` on a blocking eventfd, which io_uring
//!   polls), then drains the whole completion queue and wakes the
//!   connections concerned. A lone request costs one extra task wake-up
//!   (the submitter) on the way out and the eventfd hop on the way in.
//!
//! # Buffer safety
//!
//! The kernel reads a send buffer until the send completes (for
//! `SEND_ZC`, until its notification). The batch in flight is therefore
//! owned by the ring's socket record, not by the connection: a connection
//! that closes or drops mid-send leaves it there until the last completion,
//! and the socket's descriptor is closed then too. Registered memory is a
//! `BytesMut` allocation kept alive by an anchor (a zero-length view split
//! off its end) for as long as it is registered, so its pages cannot be
//! freed or reused while the kernel holds them pinned; a batch is sent as
//! fixed only if it lies inside the registered range of a live allocation,
//! which (allocations being disjoint) proves it is that allocation. The
//! batch buffer that callers encode into is never the one in flight: they
//! swap at each send. The ring is dropped when its executor's thread ends
//! (or another executor on that thread sets up its own) and its last
//! connection is gone: its reactor and submitter tasks hold it weakly, as
//! glommio does not drop the tasks of an executor that ended. Then it
//! shuts the sockets down and waits for the kernel to finish; what does
//! not finish within 200 ms is leaked rather than freed.
//!
//! # Choosing and falling back
//!
//! [`TransportKind`] on the connection's configuration (or
//! `REDCORE_TRANSPORT` for [`TransportKind::Auto`]) chooses. When the ring
//! cannot be set up — `io_uring_setup` refused (seccomp, containers,
//! `kernel.io_uring_disabled`), an opcode missing from the probe, the
//! sparse buffer table, the provided-buffer ring or the eventfd refused —
//! connections use glommio's sockets and one warning says why, once per
//! process. TLS connections always use glommio's sockets: rustls needs a
//! byte stream with its own buffering, and the record layer would copy
//! anyway. Unix sockets use the ring like TCP: `send`/`recv` on a
//! stream socket are the same operations.
//!
//! The handshake runs on glommio's socket; the ring takes over a
//! duplicate of its descriptor (made blocking: the ring's operations wait
//! for readiness themselves) for the I/O loop. A Unix socket is connected
//! by redcore itself, without waiting, so that its descriptor is known
//! (glommio's `UnixStream` does not expose it); if that would wait, glommio
//! connects it and it stays on glommio's socket.
//!
//! # SIGPIPE
//!
//! `WRITE_FIXED` has `write()`'s semantics: no `MSG_NOSIGNAL`, so a write
//! to a socket the peer closed raises SIGPIPE. Rust programs ignore it by
//! default; when the ring is set up with SIGPIPE at its default
//! disposition, batches in registered memory go out with `SEND_ZC` (TCP,
//! `MSG_NOSIGNAL`) or unfixed `SEND` (Unix sockets) instead.
//!
//! # Limits
//!
//! - Registered memory stays registered while its connection lives, also
//!   while it hibernates (two buffers of 64–256 KiB per connection, at
//!   most 2 MiB per core; connections past the budget send from ordinary
//!   memory).
//! - Received bytes are copied into the connection's receive buffer as
//!   they arrive; the buffer holds what arrives between two runs of the
//!   connection's task, plus what the decoder needs for one frame. When it
//!   holds 8 MiB more than that (a reply streams in faster than the
//!   connection decodes it), the socket's receive is cancelled, and armed
//!   again once the connection has decoded half of it: glommio's path gets
//!   the same from reading only when the task runs.
//! - A batch counts as written once it is handed to the ring, before the
//!   kernel has sent it. When the socket dies, the connection waits for
//!   the batch in flight to come back (a send still waiting for room is
//!   ended by shutting the socket down; at most one second) and takes the
//!   part the kernel never took back into its batch buffer: the calls
//!   wholly in it go out on the next socket, as glommio's path does with
//!   bytes it never wrote, and only the calls whose bytes reached the
//!   socket fail as possibly applied (`ConnectionLost`). A call that
//!   times out while its batch is with the ring (even before the
//!   submitter has passed it to the kernel) reports `maybe_applied`; if
//!   the socket then dies with that call unsent, it is withdrawn, never
//!   sent late.
//! - Hidden switches, for tests and benches: `REDCORE_IO_URING_UNAVAILABLE`
//!   (probing fails), `REDCORE_IO_URING_SEND=send_zc` (send with
//!   `SEND_ZC`), `REDCORE_IO_URING_SETUP=plain` (no cooperative task
//!   running). `redcore::io_uring_stats()` (hidden) reads the core's
//!   counters.

mod ring;

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::Duration;

use bytes::BytesMut;

pub use ring::RingStats;
use ring::{CoreRing, Outgoing, RX_HIGH, SendOp};

use super::dispatch::{DECODE_BUDGET, Drained, dispatch};
use super::mux::{Mux, Shared};
use super::read_buf::shrink_if_idle;
use super::transport::Transport;
use crate::Error;
use crate::config::{ConnectionConfig, TransportKind};
use crate::resp::Decoder;

/// The first size of a connection's registered send buffers, and the
/// largest they grow to.
const REG_INITIAL: usize = 64 * 1024;
const REG_MAX: usize = 256 * 1024;

/// Hidden switch for tests: make probing fail as if the kernel refused.
const FORCE_UNAVAILABLE_ENV: &str = "REDCORE_IO_URING_UNAVAILABLE";
/// Hidden switch for benches: `send_zc` sends with `IORING_OP_SEND_ZC`.
const SEND_OP_ENV: &str = "REDCORE_IO_URING_SEND";

thread_local! {
    /// This thread's ring and the executor it belongs to; `None` inside
    /// when setting it up failed.
    static CORE: RefCell<Option<(usize, Option<Rc<CoreRing>>)>> = const { RefCell::new(None) };
}

static WARNED: AtomicBool = AtomicBool::new(false);

/// This core's ring, set up on first use; `None` when io_uring is not
/// available (logged once).
fn core_ring() -> Option<Rc<CoreRing>> {
    let executor = glommio::executor().id();
    CORE.with(|core| {
        if let Some((id, ring)) = &*core.borrow() {
            if *id == executor {
                return ring.clone().filter(|r| !r.is_broken());
            }
        }
        let ring = match setup() {
            Ok(ring) => {
                let ring = Rc::new(ring);
                let efd = ring.eventfd();
                glommio::spawn_local(ring::reactor(Rc::downgrade(&ring), efd)).detach();
                glommio::spawn_local(ring::submitter(Rc::downgrade(&ring))).detach();
                Some(ring)
            }
            Err(why) => {
                if !WARNED.swap(true, Ordering::Relaxed) {
                    tracing::warn!(reason = %why, "the io_uring transport is not available; connections use glommio's sockets");
                }
                None
            }
        };
        *core.borrow_mut() = Some((executor, ring.clone()));
        ring
    })
}

fn setup() -> Result<CoreRing, String> {
    if std::env::var_os(FORCE_UNAVAILABLE_ENV).is_some() {
        return Err(format!("{FORCE_UNAVAILABLE_ENV} is set"));
    }
    let send_op = match std::env::var(SEND_OP_ENV).as_deref() {
        Ok("send_zc") => SendOp::SendZc,
        _ => SendOp::WriteFixed,
    };
    // REDCORE_IO_URING_SETUP=plain: no cooperative task running (benches).
    let lean = std::env::var("REDCORE_IO_URING_SETUP").as_deref() != Ok("plain");
    ring::create(send_op, lean)
}

/// The transport a connection with `config` uses on this core (probing
/// io_uring the first time).
pub(crate) fn choose(config: &ConnectionConfig) -> TransportKind {
    match config.transport.resolve() {
        TransportKind::IoUring if config.tls.is_none() && core_ring().is_some() => {
            TransportKind::IoUring
        }
        _ => TransportKind::Glommio,
    }
}

/// This core's ring counters, if it has a ring.
pub fn stats() -> Option<RingStats> {
    CORE.with(|core| {
        core.borrow()
            .as_ref()
            .and_then(|(_, r)| r.as_ref().map(|r| r.stats.get()))
    })
}

/// A socket the ring carries, for one connection's I/O loop.
pub(crate) struct Socket {
    ring: Rc<CoreRing>,
    key: usize,
}

impl Socket {
    /// Takes over a connected plain socket (its handshake done):
    /// `leftover` are bytes read past the handshake, to be decoded first.
    /// Gives the transport back when it is TLS or the ring is unavailable.
    // Called once per socket; boxing the transport would buy nothing.
    #[allow(clippy::result_large_err)]
    pub fn adopt(io: Transport, leftover: &mut BytesMut) -> Result<Socket, (Transport, String)> {
        let Some(ring) = core_ring() else {
            return Err((io, "io_uring is not available".into()));
        };
        let tcp = matches!(io, Transport::Tcp(_));
        let fd = match &io {
            Transport::Tcp(s) => s.as_raw_fd(),
            Transport::Unix(_, Some(fd)) => *fd,
            Transport::Unix(_, None) => {
                return Err((io, "glommio connected this Unix socket".into()));
            }
            Transport::Tls(_) => {
                return Err((io, "TLS stays on glommio".into()));
            }
        };
        // SAFETY: plain system calls on a descriptor the transport owns.
        let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            return Err((io, format!("dup failed: {}", io::Error::last_os_error())));
        }
        // SAFETY: `dup` is a new descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(dup) };
        // The ring's operations wait for readiness themselves; on a
        // non-blocking file a fixed write would fail with EAGAIN instead.
        // SAFETY: plain system calls on a descriptor we own.
        unsafe {
            let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
            if flags >= 0 {
                libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK);
            }
        }
        // Dropping glommio's stream closes its descriptor, not the socket.
        drop(io);
        let key = ring.add(fd, tcp);
        ring.with_sock(key, |s| s.rx = leftover.split());
        Ok(Socket { ring, key })
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.ring.release(self.key);
    }
}

/// A connection's registered send buffers: they outlive its sockets.
pub(crate) struct SendBufs {
    ring: Rc<CoreRing>,
    regs: [Option<Reg>; 2],
    /// The reg whose view the batch buffer (`Mux::out`) was given.
    out_reg: Option<usize>,
    /// A buffer ready to become the batch buffer, and its reg.
    spare: Option<(BytesMut, Option<usize>)>,
    /// Size to register next; grows with the batches seen.
    want: usize,
    /// Registration failed (budget or memlock): stop trying.
    gave_up: bool,
}

/// One registered allocation.
struct Reg {
    index: u16,
    base: usize,
    len: usize,
    /// Keeps the allocation alive while it is registered.
    _anchor: BytesMut,
    /// A view starting at `base` is held (batch buffer, spare or in
    /// flight); false once it was dropped.
    live: bool,
}

impl Reg {
    fn contains(&self, buf: &BytesMut) -> bool {
        let p = buf.as_ptr() as usize;
        p >= self.base && p + buf.len() <= self.base + self.len
    }
}

impl SendBufs {
    fn new(ring: Rc<CoreRing>) -> SendBufs {
        SendBufs {
            ring,
            regs: [None, None],
            out_reg: None,
            spare: None,
            want: REG_INITIAL,
            gave_up: false,
        }
    }

    /// A fresh registered view for reg `i`, replacing what it had.
    fn regenerate(&mut self, i: usize) -> Option<BytesMut> {
        if self.gave_up {
            return None;
        }
        let old = self.regs[i].take().map(|r| (r.index, r.len));
        let len = self.want;
        let mut view = BytesMut::zeroed(len);
        let anchor = view.split_off(len);
        view.clear();
        // The old allocation may be freed once replaced: the kernel keeps
        // its pages for any operation still using them.
        match self.ring.register(old, view.as_ptr(), len) {
            Some(index) => {
                self.regs[i] = Some(Reg {
                    index,
                    base: view.as_ptr() as usize,
                    len,
                    _anchor: anchor,
                    live: true,
                });
                Some(view)
            }
            None => {
                self.gave_up = true;
                None
            }
        }
    }

    /// A new socket: a batch still in flight on the old one never comes
    /// back here (the old socket's record keeps it until the kernel is
    /// done), so its registered buffer is free to be replaced.
    fn new_socket(&mut self) {
        let spare = self.spare.as_ref().and_then(|(_, reg)| *reg);
        for i in 0..2 {
            if Some(i) != self.out_reg && Some(i) != spare {
                if let Some(r) = self.regs[i].as_mut() {
                    r.live = false;
                }
            }
        }
    }

    /// The next batch buffer.
    fn next_out(&mut self) -> (BytesMut, Option<usize>) {
        if let Some(spare) = self.spare.take() {
            return spare;
        }
        for i in 0..2 {
            if self.out_reg != Some(i) && !self.regs[i].as_ref().is_some_and(|r| r.live) {
                if let Some(view) = self.regenerate(i) {
                    return (view, Some(i));
                }
            }
        }
        (BytesMut::with_capacity(REG_INITIAL), None)
    }

    /// Swaps the batch buffer for a fresh one and makes the old one a
    /// batch to send; its calls count as written from now on.
    fn take(&mut self, st: &mut Mux) -> Outgoing {
        let (fresh, fresh_reg) = self.next_out();
        let batch = st.take_out(fresh);
        let reg = self
            .out_reg
            .filter(|&i| self.regs[i].as_ref().is_some_and(|r| r.contains(&batch)));
        if let (Some(i), None) = (self.out_reg, reg) {
            // The batch buffer left its registered memory (grown,
            // compacted, hibernated): that view is gone.
            if let Some(r) = self.regs[i].as_mut() {
                r.live = false;
            }
        }
        if reg.is_none() && batch.len() > self.want {
            self.want = batch.len().next_power_of_two().min(REG_MAX);
        }
        self.out_reg = fresh_reg;
        Outgoing {
            index: reg.and_then(|i| self.regs[i].as_ref().map(|r| r.index)),
            reg,
            buf: batch,
            sent: 0,
            sending: false,
            notifs: 0,
        }
    }

    /// A sent batch came back: keep its buffer as the spare when it is a
    /// whole registered view, or when no registered one can replace it.
    fn recycle(&mut self, done: Outgoing) {
        let Outgoing { mut buf, reg, .. } = done;
        buf.clear();
        match reg {
            Some(i) => {
                let r = self.regs[i].as_mut().expect("a batch's reg is kept");
                if buf.as_ptr() as usize == r.base {
                    self.spare = Some((buf, Some(i)));
                } else {
                    r.live = false;
                }
            }
            None => {
                let lost = (0..2).any(|i| {
                    self.out_reg != Some(i) && !self.regs[i].as_ref().is_some_and(|r| r.live)
                });
                if !lost || self.gave_up {
                    self.spare = Some((buf, None));
                }
            }
        }
    }
}

impl Drop for SendBufs {
    fn drop(&mut self) {
        for r in self.regs.iter_mut().filter_map(Option::take) {
            self.ring.unregister(r.index, r.len);
        }
    }
}

/// The per-connection state the I/O loop keeps across sockets.
pub(crate) struct Uring {
    bufs: Option<SendBufs>,
}

impl Uring {
    pub fn new() -> Uring {
        Uring { bufs: None }
    }
}

/// Moves bytes through the ring until the socket fails or the connection
/// is closed: the same contract as the glommio loop.
pub(crate) async fn io_loop(
    shared: &Shared,
    sock: &Socket,
    uring: &mut Uring,
    decoder: &mut Decoder,
) -> Error {
    let ring = &sock.ring;
    let key = sock.key;
    let bufs = uring
        .bufs
        .get_or_insert_with(|| SendBufs::new(ring.clone()));
    bufs.new_socket();
    let push_capacity = shared.config.push_capacity;
    // The unsent end of a batch whose send failed, taken before its buffer
    // is recycled.
    let mut unsent: Option<BytesMut> = None;
    let err = poll_fn(|cx| {
        let mut st = shared.mux.borrow_mut();
        if let Some(e) = st.io_loop_turn() {
            return Poll::Ready(e);
        }
        if ring.is_broken() {
            return Poll::Ready(io::Error::other("the io_uring transport stopped").into());
        }
        // Replies first: they free callers and room. Within a budget: the
        // rest waits for the next turn, and receiving pauses while the
        // buffer is full.
        let (mut busy, mut resume) = (false, false);
        let (done, in_flight, end) = ring.with_sock(key, |s| {
            let done = s.done.take();
            // A silence ending lets held calls go out below.
            st.note_bytes_in(std::mem::take(&mut s.received));
            let mut budget = DECODE_BUDGET;
            match dispatch(&mut st, decoder, &mut s.rx, push_capacity, &mut budget) {
                Ok(drained) => busy = drained == Drained::Budget,
                Err(e) => return (done, true, Some(e)),
            }
            let need = decoder.bytes_needed();
            if st.hibernating && s.rx.is_empty() {
                s.rx = BytesMut::new();
            } else {
                shrink_if_idle(&mut s.rx, need);
            }
            s.rx_high = need.unwrap_or(0).saturating_add(RX_HIGH);
            resume = s.rx_paused && s.rx.len() + RX_HIGH / 2 <= s.rx_high;
            // Replies still buffered are delivered before the socket's
            // end is.
            let end = if busy {
                None
            } else if let Some(e) = s.send_error.take() {
                Some(e.into())
            } else {
                match &mut s.rx_end {
                    Some(None) => Some(Error::from(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed the connection",
                    ))),
                    Some(Some(e)) => Some(io::Error::new(e.kind(), e.to_string()).into()),
                    None => None,
                }
            };
            if end.is_none() {
                s.waker = Some(cx.waker().clone());
            }
            (done, s.out.is_some(), end)
        });
        if let Some(done) = done {
            if let Some(tail) = unsent_part(&done) {
                unsent = Some(tail);
            }
            bufs.recycle(done);
        }
        if let Some(e) = end {
            return Poll::Ready(e);
        }
        if resume {
            ring.resume_recv(key);
        }
        // Write: the whole batch, as one submission.
        if st.needs_compaction() {
            st.compact();
        }
        if !in_flight && !st.out.is_empty() && !st.holds_writes() {
            let out = bufs.take(&mut st);
            ring.send(key, out);
        }
        if !st
            .io_waker
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            st.io_waker = Some(cx.waker().clone());
        }
        if busy {
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    })
    .await;
    // The socket is done for. Bytes of the last batch that never reached
    // it go back to the connection, to be sent on the next socket.
    if !matches!(err, Error::Closed(_)) && !ring.is_broken() {
        if unsent.is_none() {
            unsent = take_unsent(sock, bufs).await;
        }
        if let Some(tail) = unsent {
            tracing::debug!(
                bytes = tail.len(),
                "bytes of the last batch never reached the socket; they go out on the next one"
            );
            shared.mux.borrow_mut().unwrite(&tail);
        }
    }
    err
}

/// How long a dead socket's batch may take to come back from the kernel
/// once the socket is shut down (it comes back at once; the bound is for
/// a kernel that does not).
const UNSENT_WAIT: Duration = Duration::from_secs(1);

/// The unsent end of a finished send, copied.
fn unsent_part(out: &Outgoing) -> Option<BytesMut> {
    (out.sent < out.buf.len()).then(|| BytesMut::from(&out.buf[out.sent..]))
}

/// Waits for the dead socket's batch in flight, if any, to come back and
/// returns its unsent end. A send still waiting for room in the socket is
/// ended by shutting the socket down; its completion then says how much
/// the kernel took. `None` (nothing unsent, or no answer within
/// [`UNSENT_WAIT`]) leaves the batch counted as written: its calls fail as
/// possibly applied.
async fn take_unsent(sock: &Socket, bufs: &mut SendBufs) -> Option<BytesMut> {
    let (ring, key) = (&sock.ring, sock.key);
    let mut shut = false;
    let back = poll_fn(|cx| {
        let (done, pending) = ring.with_sock(key, |s| {
            let done = s.done.take();
            let pending = match &s.out {
                Some(o) if o.sending => {
                    s.waker = Some(cx.waker().clone());
                    None
                }
                // Sent; only SEND_ZC notifications are still to come.
                Some(o) => Some(unsent_part(o)),
                None => Some(None),
            };
            (done, pending)
        });
        let from_done = done.as_ref().and_then(unsent_part);
        if let Some(done) = done {
            bufs.recycle(done);
        }
        if from_done.is_some() {
            return Poll::Ready(from_done);
        }
        match pending {
            Some(tail) => Poll::Ready(tail),
            None => {
                if !std::mem::replace(&mut shut, true) {
                    ring.with_sock(key, |s| {
                        // SAFETY: plain system call on a descriptor the
                        // ring owns and keeps open.
                        unsafe { libc::shutdown(s.fd.as_raw_fd(), libc::SHUT_RDWR) };
                    });
                }
                Poll::Pending
            }
        }
    });
    futures_lite::future::or(back, async {
        glommio::timer::Timer::new(UNSENT_WAIT).await;
        None
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch from registered memory sent to a socket whose peer is gone,
    /// with SIGPIPE at its default disposition: the send fails with EPIPE
    /// and the process lives (no `WRITE_FIXED`, which would raise SIGPIPE,
    /// is used then).
    #[test]
    fn a_send_to_a_closed_peer_fails_without_sigpipe() {
        // SAFETY: the ring below reads the disposition when it is set up;
        // this test binary ignores SIGPIPE otherwise, and no other test
        // depends on it.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(64 << 10)
            .spawn(|| async {
                let Some(ring) = core_ring() else {
                    eprintln!("io_uring is not available here; nothing to check");
                    return;
                };
                let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
                drop(b);
                let key = ring.add(OwnedFd::from(a), false);
                let mut bufs = SendBufs::new(ring.clone());
                let mut view = bufs.regenerate(0).expect("a registered buffer");
                view.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
                let out = Outgoing {
                    index: bufs.regs[0].as_ref().map(|r| r.index),
                    reg: Some(0),
                    buf: view,
                    sent: 0,
                    sending: false,
                    notifs: 0,
                };
                ring.send(key, out);
                let error = poll_fn(|cx| {
                    ring.with_sock(key, |s| match s.send_error.take() {
                        Some(e) => Poll::Ready(e),
                        None => {
                            s.waker = Some(cx.waker().clone());
                            Poll::Pending
                        }
                    })
                })
                .await;
                assert_eq!(error.raw_os_error(), Some(libc::EPIPE), "{error}");
                ring.release(key);
            })
            .unwrap()
            .join()
            .unwrap();
    }

    /// A ring is freed once its executor is done with it: its reactor and
    /// submitter tasks, which glommio never drops when an executor ends,
    /// hold it weakly. Here a second executor on the same thread sets up
    /// its own ring, which lets go of the first one's: it must be gone (with
    /// its descriptor, receive buffers and pinned send buffers) rather than
    /// kept alive for the rest of the process by the first executor's
    /// tasks.
    #[test]
    fn a_ring_is_freed_when_its_executor_is_done() {
        let first = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(64 << 10)
            .make()
            .expect("an executor");
        let Some(ring) = first.run(async {
            let ring = core_ring()?;
            // Carry a socket for a while, so that both tasks run.
            let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
            let key = ring.add(OwnedFd::from(a), false);
            glommio::yield_if_needed().await;
            ring.release(key);
            Some(Rc::downgrade(&ring))
        }) else {
            eprintln!("io_uring is not available here; nothing to check");
            return;
        };
        drop(first);
        let second = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(64 << 10)
            .make()
            .expect("a second executor");
        second.run(async {
            core_ring().expect("a ring for the second executor");
        });
        assert!(
            ring.upgrade().is_none(),
            "the first executor's ring outlives it"
        );
    }
}
