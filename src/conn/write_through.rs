//! Writing from the caller's task: an explicit pipeline (or transaction)
//! of at least [`PIPELINE_SEND_NOW_BYTES`] is sent by its caller at once,
//! with one non-blocking `send`, instead of waiting for the driver's next
//! write.
//!
//! Why: the driver writes once per executor round, after every caller
//! woken in that round has queued its command. For many small calls that
//! is the cheapest way (one system call for all of them), and they still
//! go that way. For a few tasks sending pipelines it makes the server
//! wait: the replies to every pipeline of a round arrive in one read,
//! every task prepares its next pipeline, and only then does the server
//! get them all, while the client waits for the server to work through
//! them all. Client and server take turns instead of working side by
//! side. Sent as soon as it is encoded, the first pipeline is being
//! served while the next is prepared (see "Against redis-rs" in the
//! README's speed section for what it measured). A pipeline is already a
//! batch, so its own system call costs little per command; single
//! commands, however large, are left to the driver, so that many tasks
//! sending large values still share one write per round.
//!
//! Only for plain TCP sockets on glommio's transport (and Unix sockets
//! redcore connected itself, which happens only when the io_uring
//! transport was asked for and could not take the socket): TLS needs
//! rustls's framing, glommio's `UnixStream` does not give its descriptor
//! out, and the io_uring transport sends from its own registered buffers.
//! A send that finds the socket full stops callers from trying again
//! until the driver has written.
//!
//! One consequence: a pipeline sent this way is on the wire as soon as it
//! is queued, so dropping its future can no longer withdraw it (a smaller
//! call dropped before the driver wrote it is still never sent). Its
//! error says so as for any written call: `maybe_applied`. The bytes leave from the front of the batch
//! buffer, exactly as the driver would send them, so the stream order is
//! the queue order whoever sends. A send that would block, or fails,
//! leaves the bytes where they are and the driver is woken: it waits for
//! room, or meets the error on its own write or read.

use std::os::fd::RawFd;

/// Pipelines whose encoding reaches this many bytes are sent by their
/// caller at once (a pipeline of 64 small `SET`/`GET`s is about 3 KiB).
pub(crate) const PIPELINE_SEND_NOW_BYTES: usize = 1024;

/// The socket a caller may send on directly, while the glommio I/O loop
/// runs it.
#[derive(Debug, Default)]
pub(crate) struct WriteThrough {
    fd: Option<RawFd>,
    /// The last send did not take everything: the socket is full until
    /// the driver writes again, and callers do not try in between.
    full: bool,
}

impl WriteThrough {
    /// Callers may send on `fd` until [`stop`](Self::stop).
    pub fn start(&mut self, fd: RawFd) {
        self.fd = Some(fd);
        self.full = false;
    }

    /// The I/O loop is done with the socket: callers leave it alone.
    pub fn stop(&mut self) {
        self.fd = None;
    }

    /// True while a caller may send: the I/O loop lends the socket, and
    /// the last send did not find it full.
    pub fn may_send(&self) -> bool {
        self.fd.is_some() && !self.full
    }

    /// The driver wrote: the socket took bytes again.
    pub fn room_again(&mut self) {
        self.full = false;
    }

    /// Sends what the socket takes of `bytes` now, without waiting: the
    /// number of bytes sent (0 when it would block, or on any error,
    /// which the driver will meet itself).
    pub fn send(&mut self, bytes: &[u8]) -> usize {
        let Some(fd) = self.fd else { return 0 };
        if bytes.is_empty() {
            return 0;
        }
        // SAFETY: `fd` is the I/O loop's open socket (it calls `stop`
        // before the socket can close), and `bytes` is valid for reads of
        // its length. MSG_NOSIGNAL: a closed peer is an error, not SIGPIPE.
        let n = unsafe {
            libc::send(
                fd,
                bytes.as_ptr().cast(),
                bytes.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        let sent = usize::try_from(n).unwrap_or(0);
        self.full = sent < bytes.len();
        sent
    }
}
