//! RESP2/RESP3 decoder, bounded in work per call and in memory per reply.
//!
//! # How a frame is decoded
//!
//! Each frame gets one *first look* when its first bytes are at the front
//! of the buffer:
//!
//! - A whole scalar (`+OK`, `:1`, `$3 abc`, ...) is taken off the buffer in
//!   one pass, its payload split straight off it.
//! - Otherwise a *scan* of at most `FIRST_LOOK` (64 KiB) bytes checks whether the
//!   whole frame is buffered. If it is (and within the limits), it is split
//!   off the buffer as one [`Bytes`] and *parsed* into a [`Value`] whose
//!   payloads are slices of it. Most replies take one of these two paths.
//! - A frame that is not whole at its first look (a large reply, or one
//!   cut by a read) goes to an incremental *builder* instead, which parses
//!   it element by element as bytes arrive and consumes the bytes it has
//!   parsed: an explicit stack of the open aggregates holds their partly
//!   filled `Vec`s (never reserving more than 1024 elements ahead of what
//!   arrived, whatever the header declares), and bulk payloads are split
//!   off the buffer as they complete, so they stay slices of the read
//!   buffer. Nothing is looked at twice past the first look, so the work of
//!   one call is proportional to the bytes buffered since the last call,
//!   plus the first look's bounded scan. [`Decoder::decode_step`] also
//!   stops after a byte budget.
//!
//! # The reply limit and how it counts
//!
//! [`DecoderLimits::max_reply_bytes`] bounds the memory one decoded reply
//! holds. The count is the same on every path (the scan computes it before
//! parsing, the builder as it goes):
//!
//! - `size_of::<Value>()` (48 bytes on x86-64) for every element of
//!   every aggregate — the slots of the `Vec`s the reply is made of; a map
//!   pair counts two, and the value an attribute map is attached to counts
//!   one (its `Box`). The reply's own top-level value is not counted: it is
//!   returned by value, not held on the heap.
//! - the text bytes of every string-like element and of doubles: the
//!   payload of bulk strings, blob errors and verbatim strings (their
//!   declared length), the line of simple strings, simple errors, big
//!   numbers and doubles. Integers, booleans and nulls have no text.
//!
//! Payloads are not copied: they share the read buffer the reply arrived
//! in. With this count every element is charged at least its wire bytes,
//! so the read buffer a reply keeps alive is also bounded by the count
//! (plus the unused end of a read buffer or two). Memory held for one
//! reply stays within a small factor of the limit whatever its shape.
//!
//! # Skipping
//!
//! A reply that passes the limit is not an error of the stream: its values
//! are dropped at once, [`Step::TooLarge`] (from [`Decoder::decode`]:
//! [`ProtocolError::ReplyTooLarge`]) reports it, and the rest of the frame
//! is *skipped* as it arrives: its bytes are consumed and checked, only its
//! structure is tracked, and no value is built. [`Step::Skipped`] marks the
//! end of a skipped frame, after which the next frame decodes normally. A
//! caller that no longer wants the frame in progress (its request timed
//! out) can ask for the same with [`Decoder::skip_frame`]; push frames are
//! never skipped that way.
//!
//! Every other [`ProtocolError`] leaves the stream unusable: nothing is
//! allocated from a declared length before the bytes behind it arrive,
//! and the decoder resets itself.

mod build;
#[cfg(test)]
mod tests;

use bytes::{Buf, Bytes, BytesMut};

use super::{ProtocolError, Value};
use crate::error::ServerError;
use build::Builder;

/// How many bytes the first look at a frame scans for its end. A frame not
/// whole within them goes to the incremental builder.
const FIRST_LOOK: usize = 64 * 1024;

/// What one value costs against [`DecoderLimits::max_reply_bytes`].
const VALUE_SIZE: usize = size_of::<Value>();

#[cfg(test)]
thread_local! {
    /// Bytes searched for a line end or a frame end, for the tests that
    /// check no byte is looked at twice.
    static LOOKED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Notes `n` bytes searched (tests only).
#[inline(always)]
fn looked(n: usize) {
    #[cfg(test)]
    LOOKED.with(|c| c.set(c.get() + n));
    let _ = n;
}

/// Limits that keep a broken or hostile server from making the decoder
/// allocate without bound or recurse without end.
///
/// The first four are checked against each header as it arrives; breaking
/// one is a [`ProtocolError`] after which the stream cannot be trusted.
/// [`max_reply_bytes`](Self::max_reply_bytes) bounds what one reply holds
/// once decoded; breaking it fails that reply only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct DecoderLimits {
    /// Longest bulk string, bulk error or verbatim string accepted, in bytes.
    /// Default 512 MiB, the server's own `proto-max-bulk-len` default.
    pub max_bulk_len: usize,
    /// Deepest nesting of aggregates (arrays, maps, sets, pushes,
    /// attributes) accepted. Default 128.
    pub max_depth: usize,
    /// Most elements one aggregate may declare (a map of n pairs counts n).
    /// Default 2^24 (16 Mi).
    ///
    /// Nothing is allocated from a declared length (at most 1024 elements
    /// are reserved ahead of what arrived), so this only refuses claims no
    /// reply within the other limits can honour: every element costs at
    /// least `size_of::<Value>()` (48 bytes on x86-64) against
    /// [`max_reply_bytes`](Self::max_reply_bytes), so with its default of
    /// 512 MiB no aggregate past about 11 Mi elements could decode anyway.
    /// Raise both together.
    pub max_aggregate_len: usize,
    /// Longest header or simple line (`+...`, `-...`, `:...`) accepted
    /// before its CRLF arrives. Default 1 MiB.
    pub max_line_len: usize,
    /// Most memory one decoded reply may hold, in bytes. Default 512 MiB.
    ///
    /// The count, the same whichever way the reply arrived:
    ///
    /// - `size_of::<Value>()` (48 bytes on x86-64) for every element of
    ///   every aggregate: a map pair counts two, and the value an
    ///   attribute map is attached to counts one. The top-level value
    ///   itself is not counted (it is returned, not held in a `Vec`);
    /// - plus the text bytes of every string-like element and of doubles:
    ///   the declared length of bulk strings, blob errors and verbatim
    ///   strings, the line of simple strings, simple errors, big numbers
    ///   and doubles. Integers, booleans and nulls have none.
    ///
    /// Payloads are not copied: they share the read buffer the reply
    /// arrived in. Every element is charged at least its own wire bytes,
    /// so the buffers a reply keeps alive are bounded by the count too, and
    /// what one reply holds stays within a small factor of the limit
    /// whatever its shape. A reply that passes the limit fails alone
    /// ([`ProtocolError::ReplyTooLarge`]): its values are dropped at once
    /// and the rest of it is skipped as it arrives, so the stream stays in
    /// step and the next reply decodes normally.
    pub max_reply_bytes: usize,
}

impl Default for DecoderLimits {
    fn default() -> Self {
        DecoderLimits {
            max_bulk_len: 512 * 1024 * 1024,
            max_depth: 128,
            max_aggregate_len: 1 << 24,
            max_line_len: 1024 * 1024,
            max_reply_bytes: 512 * 1024 * 1024,
        }
    }
}

impl DecoderLimits {
    /// Sets [`max_bulk_len`](Self::max_bulk_len).
    pub fn max_bulk_len(mut self, n: usize) -> Self {
        self.max_bulk_len = n;
        self
    }
    /// Sets [`max_depth`](Self::max_depth).
    pub fn max_depth(mut self, n: usize) -> Self {
        self.max_depth = n;
        self
    }
    /// Sets [`max_aggregate_len`](Self::max_aggregate_len).
    pub fn max_aggregate_len(mut self, n: usize) -> Self {
        self.max_aggregate_len = n;
        self
    }
    /// Sets [`max_line_len`](Self::max_line_len).
    pub fn max_line_len(mut self, n: usize) -> Self {
        self.max_line_len = n;
        self
    }
    /// Sets [`max_reply_bytes`](Self::max_reply_bytes).
    pub fn max_reply_bytes(mut self, n: usize) -> Self {
        self.max_reply_bytes = n;
        self
    }
}

/// What one call of [`Decoder::decode_step`] produced.
#[derive(Debug, PartialEq)]
#[non_exhaustive]
pub enum Step {
    /// A whole frame, removed from the front of the buffer.
    Frame(Value),
    /// The frame in progress passed
    /// [`max_reply_bytes`](DecoderLimits::max_reply_bytes): what was built
    /// of it is dropped, and the rest of it will be skipped (consumed
    /// without building values). `push` says whether it is a push frame.
    /// [`Skipped`](Step::Skipped) follows once its last byte is consumed.
    TooLarge {
        /// The frame is a RESP3 push (`>`), not a reply.
        push: bool,
    },
    /// A skipped frame ended: its last byte was consumed.
    Skipped {
        /// The frame was a RESP3 push (`>`), not a reply.
        push: bool,
    },
    /// Every whole element in the buffer is decoded; more bytes are needed.
    NeedMore,
    /// The byte budget is spent and bytes are still buffered: call again.
    Paused,
}

/// Decodes RESP2 and RESP3 frames from a growing [`BytesMut`].
///
/// Call [`decode`](Decoder::decode) after each read: it returns `Ok(None)`
/// until one whole frame is buffered, then the frame, removed from the
/// front of the buffer. Between calls, only append to the buffer. After an
/// error other than [`ProtocolError::ReplyTooLarge`] the byte stream
/// cannot be trusted any more: drop the connection (the decoder resets
/// itself, so it can be reused for a fresh stream). After
/// `ReplyTooLarge`, go on calling: the rest of that frame is skipped.
///
/// A frame that is whole when first looked at (most replies) is checked,
/// then parsed in one go. A frame that is not (a large reply, or one cut
/// by a read) is decoded element by element as its bytes arrive, and the
/// bytes of each element are consumed once it is built (bulk payloads
/// stay slices of the buffer): each call only looks at the bytes that
/// arrived since the last, and never reserves room for more than 1024
/// elements ahead of what arrived, whatever a header declares.
/// [`decode_step`](Decoder::decode_step) also stops after a byte budget,
/// and can skip the rest of a frame nobody wants
/// ([`skip_frame`](Decoder::skip_frame)).
///
/// ```
/// use bytes::BytesMut;
/// use redcore::resp::{Decoder, DecoderLimits, ProtocolError, Value};
///
/// let limits = DecoderLimits::default().max_reply_bytes(100);
/// let mut decoder = Decoder::with_limits(limits);
/// // Three elements of `size_of::<Value>()` bytes each are more than 100.
/// let mut buf = BytesMut::from(&b"*3\r\n:1\r\n:2\r\n"[..]);
/// assert_eq!(decoder.decode(&mut buf), Ok(None));
/// buf.extend_from_slice(b":3\r\n+OK\r\n");
/// assert_eq!(decoder.decode(&mut buf), Err(ProtocolError::ReplyTooLarge { limit: 100 }));
/// // The stream is still in step: the next frame decodes.
/// assert_eq!(decoder.decode(&mut buf), Ok(Some(Value::SimpleString("OK".into()))));
/// ```
#[derive(Debug, Default)]
pub struct Decoder {
    limits: DecoderLimits,
    /// The frame being built incrementally, if its first look found it
    /// not whole.
    build: Builder,
    /// The first-look scan's stack of open aggregates (elements still
    /// expected, innermost last), kept to reuse its allocation.
    open: Vec<u64>,
}

impl Decoder {
    /// A decoder with the default limits.
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// A decoder with the given limits.
    pub fn with_limits(limits: DecoderLimits) -> Decoder {
        Decoder {
            limits,
            ..Decoder::default()
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &DecoderLimits {
        &self.limits
    }

    /// Forgets any partly decoded frame and drops what was built of it.
    /// Call it when the buffer is replaced.
    pub fn reset(&mut self) {
        self.build.reset();
    }

    /// How many bytes the buffer must hold before the next call can make
    /// progress, when that is known (a large bulk string is pending). A
    /// reader can reserve this much at once.
    pub fn bytes_needed(&self) -> Option<usize> {
        self.build.bytes_needed()
    }

    /// True while a frame is partly decoded: its first bytes were consumed
    /// (or looked at) and more are awaited.
    pub fn in_frame(&self) -> bool {
        self.build.active()
    }

    /// What the frame in progress holds so far, counted as against
    /// [`max_reply_bytes`](DecoderLimits::max_reply_bytes): 0 between
    /// frames, for a frame not yet started, and while skipping.
    pub fn frame_bytes(&self) -> usize {
        self.build.held()
    }

    /// True while the rest of the frame in progress is being skipped.
    pub fn is_skipping(&self) -> bool {
        self.build.skipping()
    }

    /// Skips the rest of the frame in progress: what was built of it is
    /// dropped now, the bytes still to come are consumed and checked but
    /// build nothing, and [`Step::Skipped`] marks its end. For a caller
    /// that no longer wants the reply being received.
    ///
    /// A push frame (`>`) is never skipped, nor a frame that starts with
    /// attributes before it is known whether a push follows them. Returns
    /// whether the frame in progress is now being skipped (false when no
    /// frame is in progress).
    pub fn skip_frame(&mut self) -> bool {
        self.build.skip()
    }

    /// Decodes one frame from the front of `buf`, removing its bytes.
    /// `Ok(None)` means more bytes are needed. The end of a skipped frame
    /// is passed over silently.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Value>, ProtocolError> {
        loop {
            match self.decode_step(buf, usize::MAX)? {
                Step::Frame(v) => return Ok(Some(v)),
                Step::TooLarge { .. } => {
                    return Err(ProtocolError::ReplyTooLarge {
                        limit: self.limits.max_reply_bytes,
                    });
                }
                Step::NeedMore => return Ok(None),
                Step::Skipped { .. } | Step::Paused => {}
            }
        }
    }

    /// One step of decoding, with the events [`decode`](Self::decode)
    /// hides: the start and the end of a skipped frame, and a `budget` of
    /// bytes the builder consumes before it pauses (a frame decoded whole
    /// at its first look is never cut, so a call may consume more).
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use redcore::resp::{Decoder, Step, Value};
    ///
    /// let mut decoder = Decoder::new();
    /// let mut buf = BytesMut::from(&b"*3\r\n:1\r\n"[..]);
    /// assert_eq!(decoder.decode_step(&mut buf, 1 << 20)?, Step::NeedMore);
    /// assert!(decoder.in_frame());
    /// // Nobody wants this reply any more: skip the rest of it.
    /// assert!(decoder.skip_frame());
    /// buf.extend_from_slice(b":2\r\n:3\r\n:4\r\n");
    /// assert_eq!(decoder.decode_step(&mut buf, 1 << 20)?, Step::Skipped { push: false });
    /// assert_eq!(decoder.decode_step(&mut buf, 1 << 20)?, Step::Frame(Value::Integer(4)));
    /// # Ok::<(), redcore::resp::ProtocolError>(())
    /// ```
    #[inline]
    pub fn decode_step(
        &mut self,
        buf: &mut BytesMut,
        budget: usize,
    ) -> Result<Step, ProtocolError> {
        if !self.build.active() {
            if buf.is_empty() {
                return Ok(Step::NeedMore);
            }
            // Most replies are one whole scalar (`+OK`, `:1`, `$3 abc`):
            // those skip the scan.
            if let Some(value) = self.take_whole_scalar(buf) {
                return value.map(Step::Frame);
            }
            if let Some(end) = self.scan(buf) {
                let frame = buf.split_to(end).freeze();
                let mut parser = Parser {
                    frame: &frame,
                    pos: 0,
                };
                let value = parser.value()?;
                debug_assert_eq!(parser.pos, end);
                return Ok(Step::Frame(value));
            }
            self.build.start(buf[0]);
        }
        let step = self.build.run(buf, budget, &self.limits);
        if step.is_err() {
            self.build.reset();
        }
        step
    }

    /// Decodes every whole frame in `bytes`, for tests and tools. Fails if
    /// bytes are left over that do not make a whole frame.
    pub fn decode_all(&mut self, bytes: &[u8]) -> Result<Vec<Value>, ProtocolError> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(v) = self.decode(&mut buf)? {
            out.push(v);
        }
        if buf.is_empty() {
            Ok(out)
        } else {
            self.reset();
            Err(ProtocolError::Incomplete)
        }
    }

    /// Takes a whole simple string, error, integer or bulk string from the
    /// front of `buf` in one pass, with the payload split straight off the
    /// buffer (integers need no `Bytes` at all). `None` leaves `buf` alone
    /// and sends it through the scan, or the builder, which also report
    /// every error but a bad integer.
    #[inline]
    fn take_whole_scalar(&self, buf: &mut BytesMut) -> Option<Result<Value, ProtocolError>> {
        let (kind, cr) = {
            let b = &buf[..];
            let kind = *b.first()?;
            if !matches!(kind, b'+' | b'-' | b':' | b'$') {
                return None;
            }
            let line = &b[1..b.len().min(self.limits.max_line_len + 1)];
            let Some(cr) = memchr::memchr(b'\r', line) else {
                looked(line.len());
                return None;
            };
            looked(cr + 1);
            let cr = 1 + cr;
            if b.get(cr + 1) != Some(&b'\n') {
                return None;
            }
            (kind, cr)
        };
        let header = cr + 2;
        let value = match kind {
            b':' => {
                let n = parse_i64(&buf[1..cr]).ok_or(ProtocolError::InvalidInteger);
                buf.advance(header);
                return Some(n.map(Value::Integer));
            }
            // The reply of SET and most writes: no share of the buffer.
            b'+' if &buf[1..cr] == b"OK" => {
                buf.advance(header);
                Value::SimpleString(Bytes::from_static(b"OK"))
            }
            b'+' | b'-' if cr - 1 > self.limits.max_reply_bytes => return None,
            b'+' | b'-' => {
                let mut line = buf.split_to(header);
                line.truncate(cr);
                line.advance(1);
                let text = line.freeze();
                if kind == b'+' {
                    Value::SimpleString(text)
                } else {
                    Value::Error(ServerError::new(text))
                }
            }
            _ => match parse_len(&buf[1..cr], kind).ok()? {
                None => {
                    buf.advance(header);
                    Value::Nil
                }
                Some(len)
                    if len <= self.limits.max_bulk_len as u64
                        && len <= self.limits.max_reply_bytes as u64 =>
                {
                    let end = header + len as usize + 2;
                    if buf.len() < end || &buf[end - 2..end] != b"\r\n" {
                        return None;
                    }
                    let mut body = buf.split_to(end);
                    body.truncate(end - 2);
                    body.advance(header);
                    Value::BulkString(body.freeze())
                }
                Some(_) => return None,
            },
        };
        Some(Ok(value))
    }

    /// The first look: the end of the frame at the front of `b` if it is
    /// whole within `FIRST_LOOK` bytes, breaks no limit and has no error
    /// in its structure. `None` sends the frame to the builder, which
    /// reports every error in stream order.
    fn scan(&mut self, b: &[u8]) -> Option<usize> {
        let b = &b[..b.len().min(FIRST_LOOK)];
        let limits = &self.limits;
        self.open.clear();
        let mut pos = 0;
        // What the frame costs against `max_reply_bytes`: its elements
        // past the top-level one, and its text bytes.
        let mut elements = 0usize;
        let mut text = 0usize;
        loop {
            let start = pos;
            let from = start + 1;
            let rest = b.get(from..)?;
            let Some(i) = memchr::memchr(b'\r', rest) else {
                looked(rest.len());
                return None;
            };
            looked(i + 1);
            let cr = from + i;
            if cr - start > limits.max_line_len || b.get(cr + 1) != Some(&b'\n') {
                return None;
            }
            let line = &b[from..cr];
            let next = cr + 2;
            elements += 1;
            let end = match b[start] {
                b':' | b'_' | b'#' => next,
                b'+' | b'-' | b',' | b'(' => {
                    text += line.len();
                    next
                }
                kind @ (b'$' | b'!' | b'=') => match parse_len(line, kind).ok()? {
                    None if kind == b'$' => next,
                    None => return None,
                    Some(len) => {
                        if len > limits.max_bulk_len as u64 {
                            return None;
                        }
                        let end = next + len as usize + 2;
                        if b.len() < end || &b[end - 2..end] != b"\r\n" {
                            return None;
                        }
                        text += len as usize;
                        end
                    }
                },
                kind @ (b'*' | b'%' | b'~' | b'>' | b'|') => match parse_len(line, kind).ok()? {
                    None if kind == b'*' => next,
                    None => return None,
                    Some(n) => {
                        if n > limits.max_aggregate_len as u64 {
                            return None;
                        }
                        let children = match kind {
                            b'%' => 2 * n,
                            // The attribute map, then the value it is attached to.
                            b'|' => 2 * n + 1,
                            _ => n,
                        };
                        if children > 0 {
                            // Every element takes 3 bytes at least: an
                            // aggregate that cannot be whole goes to the
                            // builder without being scanned first.
                            if self.open.len() >= limits.max_depth
                                || (next as u64).saturating_add(children.saturating_mul(3))
                                    > b.len() as u64
                            {
                                return None;
                            }
                            self.open.push(children);
                            pos = next;
                            continue;
                        }
                        next
                    }
                },
                _ => return None,
            };
            pos = end;
            // Counts one finished element against the open aggregates.
            loop {
                let Some(left) = self.open.last_mut() else {
                    let cost = (elements - 1)
                        .saturating_mul(VALUE_SIZE)
                        .saturating_add(text);
                    return (cost <= limits.max_reply_bytes).then_some(end);
                };
                *left -= 1;
                if *left > 0 {
                    break;
                }
                self.open.pop();
            }
        }
    }
}

/// Parses a length header: `None` for `-1`, an error for anything else
/// that is not a non-negative decimal.
fn parse_len(line: &[u8], kind: u8) -> Result<Option<u64>, ProtocolError> {
    if line == b"-1" {
        return Ok(None);
    }
    parse_u64(line)
        .map(Some)
        .ok_or(ProtocolError::InvalidLength(kind as char))
}

fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &d| {
        if d.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        } else {
            None
        }
    })
}

fn parse_i64(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text.first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let magnitude = parse_u64(digits)?;
    if negative {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    }
}

fn parse_double(line: &[u8]) -> Result<f64, ProtocolError> {
    let text = std::str::from_utf8(line).map_err(|_| ProtocolError::InvalidDouble)?;
    // Rust's float parser accepts `inf`, `-inf` and `nan`, which is what
    // RESP3 sends for the special values.
    text.parse().map_err(|_| ProtocolError::InvalidDouble)
}

fn parse_boolean(line: &[u8]) -> Result<bool, ProtocolError> {
    match line {
        b"t" => Ok(true),
        b"f" => Ok(false),
        _ => Err(ProtocolError::InvalidBoolean),
    }
}

fn check_big_number(line: &[u8]) -> Result<(), ProtocolError> {
    let digits = line.strip_prefix(b"-").or(line.strip_prefix(b"+"));
    let digits = digits.unwrap_or(line);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(ProtocolError::InvalidBigNumber);
    }
    Ok(())
}

/// A verbatim string from its payload (`xxx:text`).
fn verbatim(body: Bytes) -> Result<Value, ProtocolError> {
    if body.len() < 4 || body[3] != b':' {
        return Err(ProtocolError::InvalidVerbatim);
    }
    Ok(Value::Verbatim {
        format: [body[0], body[1], body[2]],
        text: body.slice(4..),
    })
}

/// Second pass of a frame whole at its first look: builds the value from
/// a frame the scan proved whole.
struct Parser<'a> {
    frame: &'a Bytes,
    pos: usize,
}

impl Parser<'_> {
    /// The line after the type byte at `self.pos`; moves past its CRLF.
    fn line(&mut self) -> (usize, usize) {
        let start = self.pos + 1;
        let cr = start
            + memchr::memchr(b'\r', &self.frame[start..]).expect("scan proved the line whole");
        self.pos = cr + 2;
        (start, cr)
    }

    fn value(&mut self) -> Result<Value, ProtocolError> {
        let kind = self.frame[self.pos];
        let (start, end) = self.line();
        let line = &self.frame[start..end];
        Ok(match kind {
            b'+' => Value::SimpleString(self.frame.slice(start..end)),
            b'-' => Value::Error(ServerError::new(self.frame.slice(start..end))),
            b':' => Value::Integer(parse_i64(line).ok_or(ProtocolError::InvalidInteger)?),
            b'_' if line.is_empty() => Value::Nil,
            b'_' => return Err(ProtocolError::InvalidNull),
            b',' => Value::Double(parse_double(line)?),
            b'#' => Value::Boolean(parse_boolean(line)?),
            b'(' => {
                check_big_number(line)?;
                Value::BigNumber(self.frame.slice(start..end))
            }
            b'$' | b'!' | b'=' => match parse_len(line, kind)? {
                None => Value::Nil,
                Some(len) => {
                    let body = self.frame.slice(self.pos..self.pos + len as usize);
                    self.pos += len as usize + 2;
                    match kind {
                        b'$' => Value::BulkString(body),
                        b'!' => Value::Error(ServerError::new(body)),
                        _ => verbatim(body)?,
                    }
                }
            },
            b'*' | b'~' | b'>' => match parse_len(line, kind)? {
                None => Value::Nil,
                Some(n) => {
                    let items = self.values(n as usize)?;
                    match kind {
                        b'*' => Value::Array(items),
                        b'~' => Value::Set(items),
                        _ => Value::Push(items),
                    }
                }
            },
            b'%' | b'|' => {
                let n = parse_len(line, kind)?.ok_or(ProtocolError::InvalidLength('%'))?;
                let pairs = self.pairs(n as usize)?;
                if kind == b'%' {
                    Value::Map(pairs)
                } else {
                    Value::Attributed {
                        attributes: pairs,
                        value: Box::new(self.value()?),
                    }
                }
            }
            other => return Err(ProtocolError::InvalidType(other)),
        })
    }

    fn values(&mut self, n: usize) -> Result<Vec<Value>, ProtocolError> {
        // The scan proved n elements are buffered, so n is bounded by the
        // frame's size and this reservation by what the server really sent.
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            items.push(self.value()?);
        }
        Ok(items)
    }

    fn pairs(&mut self, n: usize) -> Result<Vec<(Value, Value)>, ProtocolError> {
        let mut pairs = Vec::with_capacity(n);
        for _ in 0..n {
            let k = self.value()?;
            pairs.push((k, self.value()?));
        }
        Ok(pairs)
    }
}
