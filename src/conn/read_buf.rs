//! The read buffer: replies are read into a `BytesMut` and decoded in
//! place, so reply payloads are slices of it.
//!
//! A socket read needs a `&mut [u8]`, which must be initialized memory.
//! Zeroing the whole free space before every read would cost a memset per
//! read, so this remembers how much of the space past the data is already
//! initialized (by earlier zeroing or earlier reads) and zeroes only what
//! is new.
//!
//! A large reply (a big bulk string waited for whole) grows the buffer;
//! once it is consumed, the buffer goes back to a small allocation, so one
//! large reply does not pin its size for the life of the connection. A new
//! socket starts with a new buffer too.

use bytes::BytesMut;

/// Smallest amount of free space offered to a read.
const MIN_READ: usize = 64 * 1024;
/// Largest amount offered to one read (a huge bulk string arrives in
/// several reads of this size).
const MAX_READ: usize = 4 * 1024 * 1024;
/// A buffer holding more room than this is given a small allocation
/// again once (nearly) empty.
const SHRINK_ABOVE: usize = 1024 * 1024;
/// A buffer with at most this many bytes counts as nearly empty.
const NEARLY_EMPTY: usize = MIN_READ;

/// Replaces `buf` by a small copy of itself when it holds few bytes in a
/// large allocation and `need` (the buffer length the decoder waits for)
/// does not ask for the room. True when it did.
pub(crate) fn shrink_if_idle(buf: &mut BytesMut, need: Option<usize>) -> bool {
    if buf.len() > NEARLY_EMPTY
        || buf.capacity() <= SHRINK_ABOVE
        || need.is_some_and(|n| n > NEARLY_EMPTY)
    {
        return false;
    }
    *buf = BytesMut::from(&buf[..]);
    true
}

pub(crate) struct ReadBuf {
    pub buf: BytesMut,
    /// Initialized bytes just past `buf.len()`.
    init: usize,
}

impl ReadBuf {
    pub fn new() -> ReadBuf {
        ReadBuf {
            buf: BytesMut::new(),
            init: 0,
        }
    }

    /// Free, initialized space to read into; `need` is the buffer length
    /// the decoder is waiting for, when it knows. Call [`filled`] after.
    ///
    /// [`filled`]: ReadBuf::filled
    pub fn spare(&mut self, need: Option<usize>) -> &mut [u8] {
        if shrink_if_idle(&mut self.buf, need) {
            self.init = 0;
        }
        let len = self.buf.len();
        let want = need
            .map_or(0, |n| n.saturating_sub(len))
            .clamp(MIN_READ, MAX_READ);
        // Offers may shrink to a quarter of MIN_READ before the buffer is
        // grown or reclaimed, and then it gets room for several reads: a
        // reclaim (and the zeroing after it) happens once per several
        // reads, not after every read.
        if self.buf.capacity() - len < want.min(MIN_READ / 4).max(want.saturating_sub(MIN_READ)) {
            let before = self.buf.as_ptr();
            self.buf.reserve(want + 3 * MIN_READ);
            if self.buf.as_ptr() != before {
                // Moved or reallocated: what lies past the data is unknown.
                self.init = 0;
            }
        }
        let offer = (self.buf.capacity() - len).min(MAX_READ);
        if self.init >= offer {
            // SAFETY: the `offer` bytes past `len` are within capacity and
            // were initialized by an earlier `resize` or read (tracked in
            // `init`), so exposing them as `u8` is sound.
            unsafe { self.buf.set_len(len + offer) };
        } else {
            self.buf.resize(len + offer, 0);
            self.init = offer;
        }
        &mut self.buf[len..]
    }

    /// Keeps the `n` bytes a read put at the start of the last [`spare`]
    /// slice of `offered` bytes.
    ///
    /// [`spare`]: ReadBuf::spare
    pub fn filled(&mut self, offered: usize, n: usize) {
        let len = self.buf.len() - offered + n;
        self.buf.truncate(len);
        self.init = self.init.max(offered) - n;
    }

    /// Drops the memory of an empty buffer (idle connections hibernate).
    pub fn release_if_empty(&mut self) {
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
            self.init = 0;
        }
    }

    /// Forgets everything and lets the memory go (the socket is gone).
    pub fn reset(&mut self) {
        self.buf = BytesMut::new();
        self.init = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Buf;

    #[test]
    fn reuses_initialized_space() {
        let mut rb = ReadBuf::new();
        let spare = rb.spare(None);
        let offered = spare.len();
        assert!(offered >= MIN_READ);
        spare[..3].copy_from_slice(b"abc");
        rb.filled(offered, 3);
        assert_eq!(&rb.buf[..], b"abc");
        assert_eq!(rb.init, offered - 3);
        // Consuming from the front keeps the space past the data initialized.
        rb.buf.advance(2);
        let spare = rb.spare(None);
        let offered = spare.len();
        spare[0] = b'd';
        rb.filled(offered, 1);
        assert_eq!(&rb.buf[..], b"cd");
    }

    #[test]
    fn a_large_buffer_goes_back_to_a_small_one_once_consumed() {
        let mut rb = ReadBuf::new();
        let offered = rb.spare(Some(8 * MAX_READ)).len();
        rb.filled(offered, offered);
        let offered = rb.spare(Some(8 * MAX_READ)).len();
        rb.filled(offered, offered);
        assert!(rb.buf.capacity() > SHRINK_ABOVE);
        // Still waited for: kept.
        rb.buf.advance(rb.buf.len() - 10);
        let offered = rb.spare(Some(8 * MAX_READ)).len();
        rb.filled(offered, 0);
        assert!(rb.buf.capacity() > SHRINK_ABOVE);
        // Consumed: a small buffer, with the bytes left.
        let left = rb.buf.to_vec();
        let offered = rb.spare(None).len();
        rb.filled(offered, 0);
        assert!(rb.buf.capacity() <= SHRINK_ABOVE, "{}", rb.buf.capacity());
        assert_eq!(&rb.buf[..], &left[..]);
        rb.reset();
        assert_eq!(rb.buf.capacity(), 0);
    }

    #[test]
    fn offers_what_a_large_reply_needs() {
        let mut rb = ReadBuf::new();
        let offered = rb.spare(Some(3 * MIN_READ)).len();
        assert!(offered >= 3 * MIN_READ);
        rb.filled(offered, 0);
        assert!(rb.buf.is_empty());
        let offered = rb.spare(Some(100 * 1024 * 1024)).len();
        assert!(offered <= MAX_READ);
    }
}
