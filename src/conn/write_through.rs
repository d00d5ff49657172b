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
//! served while the next is prepared. (Measured with `redcore-load
//! --tasks 4 --pipeline 64` against one server: about 1.4x the commands
//! per second; see the README's speed section.) A pipeline is already a
//! batch, so its own system call costs little per command; single
//! commands, however large, are left to the driver, so that many tasks
//! sending large values still share one write per round.
//!
//! Only for sockets the glommio I/O loop runs in plain TCP or Unix mode:
//! TLS needs rustls's framing, and the io_uring transport sends from its
//! own registered buffers. The bytes leave from the front of the batch
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
}

impl WriteThrough {
    /// Callers may send on `fd` until [`stop`](Self::stop).
    pub fn start(&mut self, fd: RawFd) {
        self.fd = Some(fd);
    }

    /// The I/O loop is done with the socket: callers leave it alone.
    pub fn stop(&mut self) {
        self.fd = None;
    }

    /// True while a caller may send.
    pub fn is_on(&self) -> bool {
        self.fd.is_some()
    }

    /// Sends what the socket takes of `bytes` now, without waiting: the
    /// number of bytes sent (0 when it would block, or on any error,
    /// which the driver will meet itself).
    pub fn send(&self, bytes: &[u8]) -> usize {
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
        usize::try_from(n).unwrap_or(0)
    }
}
