//! What a pub/sub load message carries and how a subscriber checks what
//! it received. redcore-load and redis-rs-load both use it (the same
//! bytes on the wire), so that both tools measure the same thing.
//!
//! A message's payload: bytes 0..4 the publisher's number, 4..8 its
//! sequence number on that channel (both `u32`, little-endian), 8..16 the
//! send time (`u64` nanoseconds of `CLOCK_MONOTONIC`, little-endian; one
//! process publishes and receives, so the clock is shared), then padding
//! up to the message size.

use hdrhistogram::Histogram;

/// The header's size: the smallest message.
pub const HEADER_LEN: usize = 16;

/// Nanoseconds of `CLOCK_MONOTONIC` (the clock `Instant` reads on Linux).
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a pointer to a live, writable timespec.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    // clock_gettime fails only on a bad clock id or pointer.
    assert_eq!(r, 0, "clock_gettime: {}", std::io::Error::last_os_error());
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A message's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The publisher's number.
    pub publisher: u32,
    /// Its sequence number on the message's channel, from 0.
    pub seq: u32,
    /// When it was handed to the client to publish, `mono_ns`.
    pub sent_ns: u64,
}

impl Header {
    /// Writes the header into the first [`HEADER_LEN`] bytes of `payload`.
    pub fn write(&self, payload: &mut [u8]) {
        payload[0..4].copy_from_slice(&self.publisher.to_le_bytes());
        payload[4..8].copy_from_slice(&self.seq.to_le_bytes());
        payload[8..16].copy_from_slice(&self.sent_ns.to_le_bytes());
    }

    /// Reads a header; `None` when the payload is too short to hold one.
    pub fn read(payload: &[u8]) -> Option<Header> {
        let head = payload.get(..HEADER_LEN)?;
        let u32_at = |i: usize| u32::from_le_bytes(head[i..i + 4].try_into().expect("4 bytes"));
        Some(Header {
            publisher: u32_at(0),
            seq: u32_at(4),
            sent_ns: u64::from_le_bytes(head[8..16].try_into().expect("8 bytes")),
        })
    }
}

/// A payload of `size` bytes (at least [`HEADER_LEN`]): room for the
/// header, then printable padding.
pub fn new_payload(size: usize) -> Vec<u8> {
    let size = size.max(HEADER_LEN);
    (0..size)
        .map(|i| {
            if i < HEADER_LEN {
                0
            } else {
                b'a' + (i % 26) as u8
            }
        })
        .collect()
}

/// The name of channel `i`: `PREFIXi`.
pub fn channel_name(prefix: &str, i: usize) -> String {
    format!("{prefix}{i}")
}

/// Channel `i` of `PREFIXi`; `None` for another name.
pub fn channel_index(prefix: &[u8], name: &[u8]) -> Option<usize> {
    let digits = name.strip_prefix(prefix)?;
    if digits.is_empty() || digits.len() > 9 {
        return None;
    }
    let mut n = 0usize;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n * 10 + usize::from(d - b'0');
    }
    Some(n)
}

/// Latencies are recorded in nanoseconds, from 1 ns to an hour, with
/// three significant digits, as the tools' other histograms.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600 * 1_000_000_000, 3).expect("valid histogram bounds")
}

/// What one subscriber received, checked against the sequence numbers:
/// per publisher per channel, each message's number must be one more than
/// the last one's.
#[derive(Debug)]
pub struct Tracker {
    /// The channels' name prefix.
    prefix: Vec<u8>,
    channels: usize,
    publishers: usize,
    /// Per publisher per channel (`publisher * channels + channel`): the
    /// sequence number expected next.
    next: Vec<u32>,
    /// Messages with a load header on a load channel, warm-up included.
    pub received: u64,
    /// Of those, measured ones (sent at or after the measuring start).
    pub delivered: u64,
    /// Sequence numbers skipped so far (a later one came first), less
    /// those that came late.
    pub skipped: u64,
    /// Messages that came after a later one of their stream.
    pub out_of_order: u64,
    /// Messages that were not the load's (another channel, a short
    /// payload, an unknown publisher).
    pub foreign: u64,
    /// Gaps the client reported (redcore: `Gap` events; redis-rs:
    /// disconnections).
    pub gaps: u64,
    /// Messages the gaps said were missed, when they said.
    pub gap_missed: u64,
    /// Publish-to-receive latency of the measured messages, nanoseconds.
    pub latency: Histogram<u64>,
    /// When the last measured message came, `mono_ns`.
    pub last_delivery_ns: Option<u64>,
}

impl Tracker {
    /// A tracker for `publishers` publishers on channels
    /// `PREFIX0..PREFIX(channels-1)`.
    pub fn new(prefix: &str, channels: usize, publishers: usize) -> Tracker {
        Tracker {
            prefix: prefix.as_bytes().to_vec(),
            channels,
            publishers,
            next: vec![0; channels * publishers],
            received: 0,
            delivered: 0,
            skipped: 0,
            out_of_order: 0,
            foreign: 0,
            gaps: 0,
            gap_missed: 0,
            latency: new_histogram(),
            last_delivery_ns: None,
        }
    }

    /// Counts one message received on `channel`; messages sent before
    /// `measure_from_ns` are checked but not measured.
    pub fn on_message(&mut self, channel: &[u8], payload: &[u8], measure_from_ns: u64) {
        let now = mono_ns();
        let (Some(c), Some(h)) = (channel_index(&self.prefix, channel), Header::read(payload))
        else {
            self.foreign += 1;
            return;
        };
        let p = h.publisher as usize;
        if c >= self.channels || p >= self.publishers {
            self.foreign += 1;
            return;
        }
        self.received += 1;
        let next = &mut self.next[p * self.channels + c];
        if h.seq >= *next {
            self.skipped += u64::from(h.seq - *next);
            *next = h.seq.wrapping_add(1);
        } else {
            // It was counted as skipped when a later one came.
            self.out_of_order += 1;
            self.skipped = self.skipped.saturating_sub(1);
        }
        if h.sent_ns >= measure_from_ns {
            self.delivered += 1;
            self.latency
                .saturating_record(now.saturating_sub(h.sent_ns).max(1));
            self.last_delivery_ns = Some(now);
        }
    }

    /// Counts a gap the client reported, with the messages it says were
    /// missed if it knows.
    pub fn on_gap(&mut self, missed: Option<u64>) {
        self.gaps += 1;
        self.gap_missed += missed.unwrap_or(0);
    }

    /// Messages lost, given how many each stream published
    /// (`published[publisher * channels + channel]`, every attempt,
    /// warm-up included): the skipped ones, and the ones after the last
    /// one received.
    pub fn lost(&self, published: &[u32]) -> u64 {
        let tail: u64 = self
            .next
            .iter()
            .zip(published)
            .map(|(&next, &sent)| u64::from(sent.saturating_sub(next)))
            .sum();
        self.skipped + tail
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let mut p = new_payload(32);
        assert_eq!(p.len(), 32);
        assert!(p[HEADER_LEN..].iter().all(u8::is_ascii_lowercase));
        let h = Header {
            publisher: 7,
            seq: 0xdead_beef,
            sent_ns: 1 << 50,
        };
        h.write(&mut p);
        assert_eq!(Header::read(&p), Some(h));
        assert_eq!(Header::read(&p[..15]), None);
        assert_eq!(new_payload(3).len(), HEADER_LEN);
    }

    #[test]
    fn channel_names() {
        assert_eq!(channel_name("ch:", 12), "ch:12");
        assert_eq!(channel_index(b"ch:", b"ch:12"), Some(12));
        assert_eq!(channel_index(b"ch:", b"ch:"), None);
        assert_eq!(channel_index(b"ch:", b"ch:1x"), None);
        assert_eq!(channel_index(b"ch:", b"other:1"), None);
    }

    fn message(publisher: u32, seq: u32, sent_ns: u64) -> Vec<u8> {
        let mut p = new_payload(16);
        Header {
            publisher,
            seq,
            sent_ns,
        }
        .write(&mut p);
        p
    }

    #[test]
    fn tracker_counts_lost_and_late() {
        let mut t = Tracker::new("c", 2, 2);
        let now = mono_ns();
        // Publisher 0 on c0: 0, 1, 3, 2 (2 late), 5 (4 skipped).
        for seq in [0, 1, 3, 2, 5] {
            t.on_message(b"c0", &message(0, seq, now), 0);
        }
        // Publisher 1 on c1: 0 only; warm-up (not measured).
        t.on_message(b"c1", &message(1, 0, 1), 2);
        t.on_message(b"c9", &message(1, 0, now), 0);
        t.on_message(b"c1", &message(5, 0, now), 0);
        t.on_message(b"c1", b"short", 0);
        assert_eq!(t.received, 6);
        assert_eq!(t.delivered, 5);
        assert_eq!(t.latency.len(), 5);
        assert_eq!((t.skipped, t.out_of_order, t.foreign), (1, 1, 3));
        // Published: p0/c0 7 (4 skipped, 6 never came), p0/c1 1 (never
        // came), p1/c0 0, p1/c1 1.
        assert_eq!(t.lost(&[7, 1, 0, 1]), 1 + 1 + 1);
        assert!(t.last_delivery_ns.is_some());
        t.on_gap(Some(3));
        t.on_gap(None);
        assert_eq!((t.gaps, t.gap_missed), (2, 3));
    }
}
