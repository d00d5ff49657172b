//! The per-core ring: one `io_uring` instance per executor thread, the
//! provided-buffer ring replies arrive in, the table of registered send
//! buffers, the sockets it carries, and the two tasks that run it (the
//! reactor, which drains completions when the eventfd fires, and the
//! submitter, which makes one `io_uring_enter` for everything queued).

use std::alloc::Layout;
use std::cell::{Cell, RefCell};
use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Weak;
use std::sync::atomic::{AtomicU16, Ordering};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use io_uring::types::{BufRingEntry, Fd, SubmitArgs, Timespec};
use io_uring::{IoUring, Probe, cqueue, opcode, squeue};
use slab::Slab;

/// Submission queue entries; the completion queue is larger, as every
/// socket keeps a multishot receive armed.
const SQ_ENTRIES: u32 = 256;
const CQ_ENTRIES: u32 = 4096;
/// Provided receive buffers: this many of this size, shared by the core's
/// sockets. A reply larger than one buffer arrives in several.
const RECV_BUFS: u16 = 128;
const RECV_BUF_SIZE: usize = 16 * 1024;
const RECV_GROUP: u16 = 0;
/// Least room made in a socket's receive buffer when it is full.
const RX_RESERVE: usize = 64 * 1024;
/// Bytes a socket's receive buffer may hold beyond what the decoder waits
/// for before its receive is paused (cancelled), until the connection has
/// decoded half of them.
pub(super) const RX_HIGH: usize = 8 << 20;
/// Slots in the sparse table of registered send buffers.
pub(super) const REG_SLOTS: u32 = 64;
/// Registered send memory a core may pin (it counts against
/// `RLIMIT_MEMLOCK` for users without `CAP_IPC_LOCK`).
pub(super) const REG_BUDGET: usize = 2 << 20;

/// What a completion is for: the low byte of `user_data`; the socket's
/// slab key is above it.
const OP_RECV: u64 = 1;
const OP_SEND: u64 = 2;
const OP_CANCEL: u64 = 3;

/// How batches are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SendOp {
    /// `IORING_OP_WRITE_FIXED`: one completion, the kernel copies from the
    /// pinned pages into the socket buffer.
    WriteFixed,
    /// `IORING_OP_SEND_ZC` with the registered buffer index: a completion
    /// and, later, a notification once the kernel let go of the pages.
    SendZc,
}

/// A batch being sent: the buffer is owned here, not by the connection,
/// until the kernel is done with it (for `SEND_ZC`, until the last
/// notification), so a connection that goes away mid-send cannot free
/// memory the kernel still reads.
pub(super) struct Outgoing {
    pub buf: BytesMut,
    /// Bytes of `buf` the kernel reported sent.
    pub sent: usize,
    /// The registered-buffer index the batch lies in, if any.
    pub index: Option<u16>,
    /// The connection's reg (0 or 1) the batch lies in, for recycling.
    pub reg: Option<usize>,
    /// Send completions still to come (0 or 1).
    pub sending: bool,
    /// `SEND_ZC` notifications still to come.
    pub notifs: u32,
}

/// One socket carried by the ring.
pub(super) struct Sock {
    pub fd: OwnedFd,
    /// Bytes received and not yet taken by the connection.
    pub rx: BytesMut,
    /// How many bytes arrived since the connection last looked (its
    /// health check counts them).
    pub received: usize,
    /// Past this many bytes in `rx`, receiving pauses (the connection sets
    /// it from what its decoder waits for).
    pub rx_high: usize,
    /// Receiving is paused: the receive was cancelled and is not re-armed
    /// until [`CoreRing::resume_recv`].
    pub rx_paused: bool,
    /// The receive side ended: `None` while open, `Some(None)` at end of
    /// stream, `Some(Some(e))` on an error.
    pub rx_end: Option<Option<io::Error>>,
    pub recv_armed: bool,
    /// The batch in flight.
    pub out: Option<Outgoing>,
    /// A batch that finished, handed back for reuse.
    pub done: Option<Outgoing>,
    /// The first send error; the socket is dead from then on.
    pub send_error: Option<io::Error>,
    /// Operations whose last completion has yet to arrive.
    ops: u32,
    pub waker: Option<Waker>,
    /// `SEND_ZC` works on this socket (TCP; not Unix sockets).
    zc_ok: bool,
    /// The connection let go of the socket: it is shut down, and freed
    /// (closed) when its last operation completes.
    orphan: bool,
}

/// Counters kept per core (tests and benches read them).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RingStats {
    /// `io_uring_enter` calls made to submit.
    pub submits: u64,
    /// Batches sent from registered memory.
    pub fixed_sends: u64,
    /// Batches sent from ordinary memory (the batch outgrew or left its
    /// registered buffer, or none was available).
    pub unfixed_sends: u64,
    /// Registered buffers (re)registered.
    pub registrations: u64,
    /// Receive completions with data.
    pub recvs: u64,
    /// Times the provided buffers ran out (the receive is re-armed).
    pub recv_nobufs: u64,
    /// Completion-queue drains (reactor wake-ups).
    pub drains: u64,
    /// Sockets the ring carries now (including ones shut down and waiting
    /// for their last completion).
    pub sockets: u64,
}

/// The ring of one core.
pub(crate) struct CoreRing {
    ring: RefCell<IoUring>,
    pbuf: PbufRing,
    socks: RefCell<Slab<Sock>>,
    /// Entries pushed since the last submit.
    queued: Cell<u32>,
    submit_waker: RefCell<Option<Waker>>,
    pub(super) send_op: SendOp,
    /// SIGPIPE is ignored or handled: a `WRITE_FIXED` (which has `write`'s
    /// semantics, without `MSG_NOSIGNAL`) to a socket the peer closed
    /// cannot kill the process. Rust programs ignore it unless told not to.
    write_fixed_safe: bool,
    zc_supported: bool,
    /// Free registered-buffer slots, and the bytes registered.
    free_slots: RefCell<Vec<u16>>,
    pub(super) registered_bytes: Cell<usize>,
    pub(super) stats: Cell<RingStats>,
    /// Set if the reactor can no longer wait for completions.
    broken: Cell<bool>,
    /// Reused by `drain`: completions taken, connections to wake.
    scratch: RefCell<(Vec<cqueue::Entry>, Vec<Waker>)>,
    /// The eventfd the ring signals completions on; the reactor waits on
    /// it. Owned here, not by the reactor task, so that it is closed with
    /// the ring even when the executor ends without dropping its tasks.
    efd: OwnedFd,
}

/// The provided-buffer ring: a page-aligned ring of buffer descriptors the
/// kernel takes from, and the memory they describe. Both are raw
/// allocations: the kernel writes into the buffers behind Rust's back, so
/// a buffer is only looked at through a slice once its completion handed
/// it to us.
struct PbufRing {
    ring: *mut BufRingEntry,
    ring_layout: Layout,
    mem: *mut u8,
    mem_layout: Layout,
    tail: Cell<u16>,
    /// Operations may still write into `mem`: never free it.
    leak: Cell<bool>,
}

impl PbufRing {
    fn new() -> io::Result<PbufRing> {
        let ring_layout =
            Layout::from_size_align(RECV_BUFS as usize * size_of::<BufRingEntry>(), 4096)
                .map_err(io::Error::other)?;
        let mem_layout = Layout::from_size_align(RECV_BUFS as usize * RECV_BUF_SIZE, 4096)
            .map_err(io::Error::other)?;
        // SAFETY: both layouts have a non-zero size.
        let (ring, mem) = unsafe {
            (
                std::alloc::alloc_zeroed(ring_layout) as *mut BufRingEntry,
                std::alloc::alloc_zeroed(mem_layout),
            )
        };
        if ring.is_null() || mem.is_null() {
            // SAFETY: freeing what was allocated above with its layout.
            unsafe {
                if !ring.is_null() {
                    std::alloc::dealloc(ring as *mut u8, ring_layout);
                }
                if !mem.is_null() {
                    std::alloc::dealloc(mem, mem_layout);
                }
            }
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        }
        let p = PbufRing {
            ring,
            ring_layout,
            mem,
            mem_layout,
            tail: Cell::new(0),
            leak: Cell::new(false),
        };
        for bid in 0..RECV_BUFS {
            p.push(bid);
        }
        p.publish();
        Ok(p)
    }

    /// Puts buffer `bid` back at the tail (published by [`publish`]).
    ///
    /// [`publish`]: PbufRing::publish
    fn push(&self, bid: u16) {
        let tail = self.tail.get();
        let i = (tail & (RECV_BUFS - 1)) as usize;
        // SAFETY: `i` < RECV_BUFS, the ring's length; the kernel reads
        // entries only up to the published tail, which excludes this one.
        let e = unsafe { &mut *self.ring.add(i) };
        // SAFETY: `bid` < RECV_BUFS, so the offset is inside `mem`.
        e.set_addr(unsafe { self.mem.add(bid as usize * RECV_BUF_SIZE) } as u64);
        e.set_len(RECV_BUF_SIZE as u32);
        e.set_bid(bid);
        self.tail.set(tail.wrapping_add(1));
    }

    fn publish(&self) {
        // SAFETY: the tail field lies in the first entry of the ring; the
        // kernel reads it concurrently, hence the atomic release store.
        unsafe {
            let tail = BufRingEntry::tail(self.ring) as *const AtomicU16;
            (*tail).store(self.tail.get(), Ordering::Release);
        }
    }

    /// The first `len` bytes of buffer `bid`, which a completion handed
    /// back (the kernel no longer writes into it until it is pushed back).
    fn buf(&self, bid: u16, len: usize) -> &[u8] {
        assert!(bid < RECV_BUFS);
        // SAFETY: inside `mem`, and the kernel is done with this buffer.
        unsafe {
            std::slice::from_raw_parts(
                self.mem.add(bid as usize * RECV_BUF_SIZE),
                len.min(RECV_BUF_SIZE),
            )
        }
    }
}

impl Drop for PbufRing {
    fn drop(&mut self) {
        // When the kernel may still be receiving (`leak`), both stay: it
        // reads buffer addresses from the descriptor ring and writes into
        // the buffers.
        if self.leak.get() {
            return;
        }
        // SAFETY: allocated in `new` with these layouts, and the kernel is
        // done with both (the ring quiesced, or never armed a receive).
        unsafe {
            std::alloc::dealloc(self.ring as *mut u8, self.ring_layout);
            std::alloc::dealloc(self.mem, self.mem_layout);
        }
    }
}

/// Why the ring could not be set up; the caller logs it once and uses
/// glommio's sockets.
pub(super) fn create(send_op: SendOp, lean: bool) -> Result<CoreRing, String> {
    // Only this thread submits, and it enters the kernel often (glommio's
    // loop), so completions need no interrupt to be run: cooperative task
    // running saves an IPI per completion (Linux 5.19+, 6.0+ for a single
    // issuer). Older kernels refuse the flags; then plain.
    let lean_ring = lean
        .then(|| {
            IoUring::builder()
                .setup_cqsize(CQ_ENTRIES)
                .setup_coop_taskrun()
                .setup_single_issuer()
                .setup_submit_all()
                .build(SQ_ENTRIES)
                .ok()
        })
        .flatten();
    let ring = match lean_ring {
        Some(ring) => ring,
        None => IoUring::builder()
            .setup_cqsize(CQ_ENTRIES)
            .build(SQ_ENTRIES)
            .map_err(|e| format!("io_uring_setup failed: {e}"))?,
    };
    let mut probe = Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| format!("IORING_REGISTER_PROBE failed: {e}"))?;
    for (code, name) in [
        (opcode::WriteFixed::CODE, "WRITE_FIXED"),
        (opcode::Send::CODE, "SEND"),
        (opcode::RecvMulti::CODE, "RECV"),
        (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
    ] {
        if !probe.is_supported(code) {
            return Err(format!("the kernel lacks IORING_OP_{name}"));
        }
    }
    // SEND_ZC (6.0+) is optional: without it, sends that cannot be
    // WRITE_FIXED go out unfixed.
    let zc_supported = probe.is_supported(opcode::SendZc::CODE);
    let send_op = if zc_supported {
        send_op
    } else {
        SendOp::WriteFixed
    };
    ring.submitter()
        .register_buffers_sparse(REG_SLOTS)
        .map_err(|e| format!("registering a sparse buffer table failed: {e}"))?;
    let pbuf = PbufRing::new().map_err(|e| format!("allocating receive buffers failed: {e}"))?;
    // SAFETY: the ring memory lives as long as `CoreRing`, which unregisters
    // nothing but is dropped (closing the ring) before `pbuf` is freed:
    // `ring` is declared before `pbuf`.
    unsafe {
        ring.submitter()
            .register_buf_ring_with_flags(pbuf.ring as u64, RECV_BUFS, RECV_GROUP, 0)
            .map_err(|e| format!("IORING_REGISTER_PBUF_RING failed: {e}"))?;
    }
    // Blocking on purpose: io_uring polls a blocking eventfd for glommio's
    // read, where a non-blocking one would fail the read with EAGAIN.
    // SAFETY: plain system call.
    let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if efd < 0 {
        return Err(format!("eventfd failed: {}", io::Error::last_os_error()));
    }
    // SAFETY: `efd` is a new descriptor nobody else owns.
    let efd = unsafe { OwnedFd::from_raw_fd(efd) };
    ring.submitter()
        .register_eventfd(efd.as_raw_fd())
        .map_err(|e| format!("IORING_REGISTER_EVENTFD failed: {e}"))?;
    Ok(CoreRing {
        ring: RefCell::new(ring),
        pbuf,
        socks: RefCell::new(Slab::new()),
        queued: Cell::new(0),
        submit_waker: RefCell::new(None),
        send_op,
        write_fixed_safe: sigpipe_is_not_default(),
        zc_supported,
        free_slots: RefCell::new((0..REG_SLOTS as u16).rev().collect()),
        registered_bytes: Cell::new(0),
        stats: Cell::new(RingStats::default()),
        broken: Cell::new(false),
        scratch: RefCell::new((Vec::with_capacity(256), Vec::new())),
        efd,
    })
}

impl CoreRing {
    pub(super) fn bump(&self, f: impl FnOnce(&mut RingStats)) {
        let mut s = self.stats.get();
        f(&mut s);
        self.stats.set(s);
    }

    /// The eventfd the ring signals completions on.
    pub(super) fn eventfd(&self) -> RawFd {
        self.efd.as_raw_fd()
    }

    pub(super) fn is_broken(&self) -> bool {
        self.broken.get()
    }

    /// Queues an entry; the submitter task enters the kernel once for all
    /// entries queued before it runs.
    fn push(&self, entry: squeue::Entry) {
        let mut ring = self.ring.borrow_mut();
        // SAFETY: every entry's buffers are owned by `CoreRing` (the
        // socket's `Outgoing`, the provided buffers) until its completion.
        while unsafe { ring.submission().push(&entry) }.is_err() {
            // Full: submit now and try again. A kernel that refuses the
            // submission (it cannot on the kernels glommio runs on: a plain
            // submit asks for no completions, so no EBUSY) would make this
            // loop forever: the ring is given up instead, and its sockets
            // fail (their calls as possibly applied).
            self.bump(|s| s.submits += 1);
            if let Err(e) = ring.submit() {
                if e.raw_os_error() != Some(libc::EINTR) {
                    drop(ring);
                    self.give_up(&e);
                    return;
                }
            }
        }
        drop(ring);
        let queued = self.queued.get();
        self.queued.set(queued + 1);
        if queued == 0 {
            if let Some(w) = self.submit_waker.borrow_mut().take() {
                w.wake();
            }
        }
    }

    /// Marks the ring broken after `e` and wakes every socket's loop, which
    /// then fails; later connections use glommio's sockets.
    fn give_up(&self, e: &std::io::Error) {
        tracing::error!(error = %e, "the io_uring transport failed; its sockets fail");
        self.broken.set(true);
        let wakers: Vec<Waker> = self
            .socks
            .borrow_mut()
            .iter_mut()
            .filter_map(|(_, s)| s.waker.take())
            .collect();
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Enters the kernel for everything queued.
    fn submit(&self) {
        if self.queued.replace(0) == 0 {
            return;
        }
        let ring = self.ring.borrow();
        loop {
            match ring.submit() {
                Ok(_) => break,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    // The completion queue overflowed: the reactor drains it;
                    // try again when it has.
                    self.queued.set(1);
                    break;
                }
                Err(e) => {
                    tracing::error!(error = %e, "io_uring submit failed");
                    break;
                }
            }
        }
        self.bump(|s| s.submits += 1);
    }

    /// Adds a socket; the receive is armed at once.
    pub(super) fn add(&self, fd: OwnedFd, tcp: bool) -> usize {
        let key = self.socks.borrow_mut().insert(Sock {
            fd,
            rx: BytesMut::new(),
            received: 0,
            rx_high: RX_HIGH,
            rx_paused: false,
            rx_end: None,
            recv_armed: false,
            out: None,
            done: None,
            send_error: None,
            ops: 0,
            waker: None,
            zc_ok: tcp,
            orphan: false,
        });
        self.bump(|s| s.sockets += 1);
        self.arm_recv(key);
        key
    }

    pub(super) fn with_sock<T>(&self, key: usize, f: impl FnOnce(&mut Sock) -> T) -> T {
        f(&mut self.socks.borrow_mut()[key])
    }

    fn arm_recv(&self, key: usize) {
        let fd = {
            let mut socks = self.socks.borrow_mut();
            let s = &mut socks[key];
            if s.recv_armed || s.rx_end.is_some() || s.orphan || s.rx_paused {
                return;
            }
            s.recv_armed = true;
            s.ops += 1;
            s.fd.as_raw_fd()
        };
        let e = opcode::RecvMulti::new(Fd(fd), RECV_GROUP)
            .build()
            .user_data(user_data(key, OP_RECV));
        self.push(e);
    }

    /// Receives again on a socket whose receive was paused.
    pub(super) fn resume_recv(&self, key: usize) {
        if std::mem::take(&mut self.socks.borrow_mut()[key].rx_paused) {
            // Still armed while the cancel is on its way: its completion
            // re-arms.
            self.arm_recv(key);
        }
    }

    /// Starts sending `out` on socket `key` (nothing else in flight).
    pub(super) fn send(&self, key: usize, out: Outgoing) {
        let fixed;
        let fd = {
            let mut socks = self.socks.borrow_mut();
            let s = &mut socks[key];
            debug_assert!(s.out.is_none());
            fixed = out.index.is_some() && self.fixed_op(s.zc_ok).is_some();
            s.out = Some(out);
            s.fd.as_raw_fd()
        };
        self.bump(|st| {
            if fixed {
                st.fixed_sends += 1
            } else {
                st.unfixed_sends += 1
            }
        });
        self.push_send(key, fd);
    }

    /// How a batch in registered memory goes out on a socket: SEND_ZC needs
    /// TCP and kernel support; WRITE_FIXED needs SIGPIPE out of the way.
    /// `None`: unfixed `SEND` (with `MSG_NOSIGNAL`).
    fn fixed_op(&self, tcp: bool) -> Option<SendOp> {
        let zc = tcp && self.zc_supported;
        match (self.send_op, zc, self.write_fixed_safe) {
            (SendOp::SendZc, true, _) | (SendOp::WriteFixed, true, false) => Some(SendOp::SendZc),
            (_, _, true) => Some(SendOp::WriteFixed),
            (_, _, false) => None,
        }
    }

    /// Queues the send of what remains of socket `key`'s batch.
    fn push_send(&self, key: usize, fd: RawFd) {
        let entry = {
            let mut socks = self.socks.borrow_mut();
            let s = &mut socks[key];
            let o = s.out.as_mut().expect("a batch to send");
            o.sending = true;
            s.ops += 1;
            let rest = &o.buf[o.sent..];
            let (ptr, len) = (rest.as_ptr(), rest.len() as u32);
            let op = self.fixed_op(s.zc_ok);
            match (
                o.index.filter(|_| op.is_some()),
                op.unwrap_or(SendOp::WriteFixed),
            ) {
                (Some(index), SendOp::WriteFixed) => {
                    opcode::WriteFixed::new(Fd(fd), ptr, len, index).build()
                }
                (Some(index), SendOp::SendZc) => opcode::SendZc::new(Fd(fd), ptr, len)
                    .buf_index(Some(index))
                    .flags(libc::MSG_NOSIGNAL)
                    .build(),
                (None, _) => opcode::Send::new(Fd(fd), ptr, len)
                    .flags(libc::MSG_NOSIGNAL)
                    .build(),
            }
        };
        self.push(entry.user_data(user_data(key, OP_SEND)));
    }

    /// The connection lets go of socket `key`: it is shut down (ending the
    /// receive and any send waiting for room), and closed once the kernel
    /// has finished every operation on it.
    pub(super) fn release(&self, key: usize) {
        let (free, recv_armed) = {
            let mut socks = self.socks.borrow_mut();
            let s = &mut socks[key];
            s.orphan = true;
            s.waker = None;
            // SAFETY: plain system call on a descriptor we own.
            unsafe { libc::shutdown(s.fd.as_raw_fd(), libc::SHUT_RDWR) };
            (s.ops == 0, s.recv_armed)
        };
        if free {
            self.socks.borrow_mut().remove(key);
            self.bump(|s| s.sockets -= 1);
            return;
        }
        if recv_armed {
            // A shut-down socket ends the receive with end of stream, but a
            // Unix socket peer's data may still be queued: cancel too.
            self.socks.borrow_mut()[key].ops += 1;
            self.push(
                opcode::AsyncCancel::new(user_data(key, OP_RECV))
                    .build()
                    .user_data(user_data(key, OP_CANCEL)),
            );
        }
    }

    /// Registers `len` bytes at `base` in a registered-buffer slot, within
    /// the core's budget: in `reuse` (a slot this caller holds, with the
    /// length registered there, replaced in the same system call) or in a
    /// free one. `None` when the budget or the kernel refuses; `reuse` is
    /// then freed.
    pub(super) fn register(
        &self,
        reuse: Option<(u16, usize)>,
        base: *const u8,
        len: usize,
    ) -> Option<u16> {
        let held = reuse.map_or(0, |(_, l)| l);
        let index = if self.registered_bytes.get() - held + len > REG_BUDGET {
            None
        } else {
            reuse
                .map(|(i, _)| i)
                .or_else(|| self.free_slots.borrow_mut().pop())
        };
        let Some(index) = index else {
            if let Some((i, l)) = reuse {
                self.unregister(i, l);
            }
            return None;
        };
        let iov = libc::iovec {
            iov_base: base as *mut _,
            iov_len: len,
        };
        // SAFETY: the caller keeps the memory alive (and at the same
        // pages) until `unregister` or the ring's end.
        match unsafe {
            self.ring
                .borrow()
                .submitter()
                .register_buffers_update(index as u32, &[iov], None)
        } {
            Ok(()) => {
                self.registered_bytes
                    .set(self.registered_bytes.get() - held + len);
                self.bump(|s| s.registrations += 1);
                Some(index)
            }
            Err(e) => {
                tracing::debug!(error = %e, "registering a send buffer failed; sends copy from ordinary memory");
                self.unregister(index, held);
                None
            }
        }
    }

    /// Empties a registered-buffer slot (the kernel unpins the pages once
    /// no operation uses them) and frees it.
    pub(super) fn unregister(&self, index: u16, len: usize) {
        let iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        // SAFETY: an empty entry refers to no memory.
        let _ = unsafe {
            self.ring
                .borrow()
                .submitter()
                .register_buffers_update(index as u32, &[iov], None)
        };
        self.registered_bytes
            .set(self.registered_bytes.get().saturating_sub(len));
        self.free_slots.borrow_mut().push(index);
    }

    /// Handles every completion there is; wakes the connections concerned.
    fn drain(&self) {
        self.bump(|s| s.drains += 1);
        let mut returned = false;
        let mut scratch = self.scratch.borrow_mut();
        let (batch, wake) = &mut *scratch;
        loop {
            {
                let mut ring = self.ring.borrow_mut();
                let mut cq = ring.completion();
                cq.sync();
                batch.extend(cq.by_ref().take(256));
            }
            if batch.is_empty() {
                break;
            }
            for cqe in batch.drain(..) {
                returned |= self.complete(cqe, wake);
            }
        }
        if returned {
            self.pbuf.publish();
        }
        // An overflowed completion queue is flushed into the ring by the
        // next submit; a submit refused while it was full is retried.
        let overflow = self.ring.borrow_mut().submission().cq_overflow();
        if overflow || self.queued.get() > 0 {
            self.queued.set(self.queued.get().max(1));
            if let Some(w) = self.submit_waker.borrow_mut().take() {
                w.wake();
            }
        }
        for w in wake.drain(..) {
            w.wake();
        }
    }

    /// One completion; true if a provided buffer went back to the ring.
    fn complete(&self, cqe: cqueue::Entry, wake: &mut Vec<Waker>) -> bool {
        let (key, op) = ((cqe.user_data() >> 8) as usize, cqe.user_data() & 0xff);
        let (res, flags) = (cqe.result(), cqe.flags());
        let mut returned = false;
        let mut rearm = false;
        let mut resend = None;
        let mut pause = false;
        {
            let mut socks = self.socks.borrow_mut();
            let Some(s) = socks.get_mut(key) else {
                tracing::error!(key, op, "io_uring completion for an unknown socket");
                return false;
            };
            match op {
                OP_RECV => {
                    if let Some(bid) = cqueue::buffer_select(flags) {
                        if res > 0 && !s.orphan {
                            let data = self.pbuf.buf(bid, res as usize);
                            if s.rx.capacity() - s.rx.len() < data.len() {
                                // Room for several chunks at once: decoded
                                // replies hold on to the old allocation.
                                s.rx.reserve(data.len().max(RX_RESERVE));
                            }
                            s.rx.extend_from_slice(data);
                            s.received += data.len();
                            // The connection is not keeping up (a reply
                            // streams in faster than it decodes): stop
                            // receiving until it has caught up.
                            if s.rx.len() >= s.rx_high && !s.rx_paused {
                                s.rx_paused = true;
                                // Still armed: cancel it.
                                pause = cqueue::more(flags);
                                s.ops += u32::from(pause);
                            }
                        }
                        self.pbuf.push(bid);
                        returned = true;
                    }
                    if res > 0 {
                        self.bump(|st| st.recvs += 1);
                    }
                    if !cqueue::more(flags) {
                        s.recv_armed = false;
                        s.ops -= 1;
                        match res {
                            r if r > 0 => rearm = true,
                            0 => s.rx_end = Some(None),
                            r if -r == libc::ENOBUFS => {
                                self.bump(|st| st.recv_nobufs += 1);
                                rearm = true;
                            }
                            // Cancelled by `release`, or to pause; a pause
                            // that ended meanwhile re-arms.
                            r if -r == libc::ECANCELED => rearm = !s.orphan && !s.rx_paused,
                            r => s.rx_end = Some(Some(io::Error::from_raw_os_error(-r))),
                        }
                    }
                }
                OP_SEND => {
                    let o = s.out.as_mut().expect("a send completion has its batch");
                    if cqueue::notif(flags) {
                        o.notifs -= 1;
                    } else {
                        o.sending = false;
                        if cqueue::more(flags) {
                            // SEND_ZC: the pages are the kernel's until the
                            // notification.
                            o.notifs += 1;
                            s.ops += 1;
                        }
                        match res {
                            r if r > 0 => {
                                o.sent += r as usize;
                                if o.sent < o.buf.len() && s.send_error.is_none() && !s.orphan {
                                    resend = Some(s.fd.as_raw_fd());
                                }
                            }
                            0 => {
                                s.send_error.get_or_insert(io::ErrorKind::WriteZero.into());
                            }
                            r => {
                                s.send_error.get_or_insert(io::Error::from_raw_os_error(-r));
                            }
                        }
                    }
                    s.ops -= 1;
                    if !o.sending && o.notifs == 0 && resend.is_none() {
                        s.done = s.out.take();
                    }
                }
                _ => s.ops -= 1,
            }
            if s.orphan {
                if s.ops == 0 && resend.is_none() {
                    socks.remove(key);
                    self.bump(|s| s.sockets -= 1);
                }
                return returned;
            }
            if let Some(w) = s.waker.take() {
                wake.push(w);
            }
        }
        if rearm {
            self.arm_recv(key);
        }
        if pause {
            self.push(
                opcode::AsyncCancel::new(user_data(key, OP_RECV))
                    .build()
                    .user_data(user_data(key, OP_CANCEL)),
            );
            // At once: until the cancel reaches the kernel, every buffer
            // the reactor hands back is filled and copied again.
            self.submit();
        }
        if let Some(fd) = resend {
            self.push_send(key, fd);
        }
        returned
    }

    /// Waits until every operation has completed, at most `limit`; true if
    /// they all did (so every buffer may be freed).
    fn quiesce(&mut self, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        let socks = self.socks.get_mut();
        for (_, s) in socks.iter_mut() {
            // SAFETY: plain system call on a descriptor we own.
            unsafe { libc::shutdown(s.fd.as_raw_fd(), libc::SHUT_RDWR) };
        }
        let ring = self.ring.get_mut();
        let _ = ring.submit();
        loop {
            for cqe in ring.completion() {
                let key = (cqe.user_data() >> 8) as usize;
                let Some(s) = socks.get_mut(key) else {
                    continue;
                };
                let flags = cqe.flags();
                let last = match cqe.user_data() & 0xff {
                    OP_SEND => {
                        if !cqueue::notif(flags) && cqueue::more(flags) {
                            s.ops += 1;
                        }
                        true
                    }
                    OP_RECV => !cqueue::more(flags),
                    _ => true,
                };
                if last {
                    s.ops -= 1;
                }
            }
            socks.retain(|_, s| s.ops > 0);
            if socks.is_empty() {
                return true;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let ts = Timespec::new().nsec(left.as_nanos().min(10_000_000) as u32);
            let args = SubmitArgs::new().timespec(&ts);
            let _ = ring.submitter().submit_with_args(1, &args);
        }
    }
}

impl Drop for CoreRing {
    fn drop(&mut self) {
        // Buffers of operations still in flight must outlive them: wait a
        // little for the kernel to finish, and leak what it has not.
        if !self.quiesce(Duration::from_millis(200)) {
            std::mem::forget(std::mem::take(self.socks.get_mut()));
            self.pbuf.leak.set(true);
        }
        // Wake the reactor, if its executor still runs, so that it finds
        // the ring gone and ends.
        // SAFETY: plain system call on a descriptor we own.
        unsafe { libc::eventfd_write(self.efd.as_raw_fd(), 1) };
    }
}

/// True when SIGPIPE is ignored or has a handler.
fn sigpipe_is_not_default() -> bool {
    // SAFETY: reads the current disposition into a zeroed struct.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGPIPE, std::ptr::null(), &mut old) == 0
            && old.sa_sigaction != libc::SIG_DFL
    }
}

fn user_data(key: usize, op: u64) -> u64 {
    ((key as u64) << 8) | op
}

/// The reactor: drains the completion queue each time the ring's eventfd
/// counts, waiting for it with a read on glommio's own ring (a blocking
/// eventfd, which io_uring polls), so nothing spins. It ends when the ring
/// is gone. It holds the ring weakly, as the submitter does: glommio does
/// not drop the tasks still pending when an executor ends, so a strong
/// reference here would keep the ring (its descriptor, receive buffers and
/// pinned send buffers) alive for the rest of the process.
pub(super) async fn reactor(ring: Weak<CoreRing>, efd: RawFd) {
    // SAFETY: the file only borrows the descriptor (it is never dropped,
    // so it never closes it); the ring owns it and outlives every read
    // made here: each read is made after checking that the ring lives, and
    // one in flight holds the kernel's own reference to the file.
    let file = ManuallyDrop::new(unsafe { glommio::io::BufferedFile::from_raw_fd(efd) });
    loop {
        let Some(live) = ring.upgrade() else { return };
        live.drain();
        drop(live);
        if let Err(e) = file.read_at(0, 8).await {
            if let Some(live) = ring.upgrade() {
                live.give_up(&e.into());
            }
            return;
        }
    }
}

/// The submitter: runs after the tasks woken with it, so every connection
/// that queued a send or receive in this round shares one `io_uring_enter`.
/// It ends when the ring is gone (see [`reactor`]).
pub(super) async fn submitter(ring: Weak<CoreRing>) {
    loop {
        let queued = std::future::poll_fn(|cx| {
            let Some(live) = ring.upgrade() else {
                return Poll::Ready(None);
            };
            if live.queued.get() > 0 {
                return Poll::Ready(Some(live));
            }
            *live.submit_waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
        let Some(live) = queued else { return };
        live.submit();
        let refused = live.queued.get() > 0 && !live.is_broken();
        drop(live);
        if refused {
            // The kernel refused the submission until completions are
            // drained: let the reactor run (a loop here would starve it).
            glommio::timer::sleep(Duration::from_micros(100)).await;
        }
    }
}
