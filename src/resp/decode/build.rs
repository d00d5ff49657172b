//! The incremental builder: decodes a frame that was not whole at its
//! first look element by element as its bytes arrive, consuming each
//! element's bytes once it is parsed, so no byte is looked at twice and the
//! buffer holds only the element in progress (a bulk string waited for
//! whole, with its header, or a line without its CRLF yet).
//!
//! The open aggregates are an explicit stack; each holds the elements
//! built so far. In skip mode (the reply passed `max_reply_bytes`, or its
//! caller gave up) the stack only counts: the elements are still parsed
//! and checked, so that an error is reported where it would be without
//! skipping, but nothing is built, and bulk payloads are dropped as they
//! arrive.

use bytes::{Buf, BytesMut};

use super::{
    DecoderLimits, Step, VALUE_SIZE, check_big_number, looked, parse_boolean, parse_double,
    parse_i64, parse_len, verbatim,
};
use crate::error::ServerError;
use crate::resp::{ProtocolError, Value};

/// Most elements reserved for an aggregate before they arrive, whatever
/// its header declares.
const RESERVE_CAP: usize = 1024;

/// The state of one frame being built; inactive between frames.
#[derive(Debug, Default)]
pub(super) struct Builder {
    active: bool,
    /// Open aggregates, outermost first.
    stack: Vec<Open>,
    /// A bulk payload whose header was read.
    bulk: Option<PendingBulk>,
    /// Where to resume looking for the CR of the line at the front.
    line_from: usize,
    /// The frame's cost so far against `max_reply_bytes`.
    cost: usize,
    /// Whether the frame is a push; `None` until known (a frame that
    /// starts with attributes is known at the value they are attached to).
    push: Option<bool>,
    skipping: bool,
    /// `TooLarge` is to be reported as soon as `push` is known.
    too_large: bool,
    /// A skipped frame was consumed to its end; `Skipped` is to be
    /// reported.
    ended: bool,
}

/// An open aggregate.
#[derive(Debug)]
struct Open {
    kind: u8,
    /// Elements still to come (a map pair is two; an attribute map of n
    /// pairs is followed by the value it is attached to: 2n + 1).
    left: u64,
    items: Items,
}

#[derive(Debug)]
enum Items {
    /// Skip mode: nothing is kept.
    Skipped,
    /// Arrays, sets and pushes.
    List(Vec<Value>),
    /// Maps and attributes: the pairs so far, and a key waiting for its
    /// value (for an attribute, then the value it is attached to).
    Pairs(Vec<(Value, Value)>, Option<Value>),
}

/// A bulk string, blob error or verbatim string whose header was read.
#[derive(Debug)]
struct PendingBulk {
    kind: u8,
    /// Bytes of the header still at the front of the buffer: it stays
    /// there while the payload is waited for whole (so that the buffer
    /// length the decoder needs is the same as a frame's whole length for
    /// a top-level bulk string), and goes once skipping starts.
    header: usize,
    len: usize,
    /// Payload bytes not yet consumed (in skip mode they are consumed as
    /// they arrive; when building, all at once).
    left: usize,
    /// Skip mode, verbatim strings: the byte at offset 3 was `:` (or has
    /// not arrived yet).
    format_ok: bool,
}

impl Builder {
    pub fn active(&self) -> bool {
        self.active
    }

    pub fn skipping(&self) -> bool {
        self.active && self.skipping
    }

    /// What the frame holds now: its cost, or nothing once skipped.
    pub fn held(&self) -> usize {
        if self.skipping { 0 } else { self.cost }
    }

    /// A frame not whole at its first look starts here, with its type
    /// byte `kind`.
    pub fn start(&mut self, kind: u8) {
        debug_assert!(!self.active);
        self.active = true;
        if kind != b'|' {
            self.push = Some(kind == b'>');
        }
    }

    /// Drops the frame in progress, if any.
    pub fn reset(&mut self) {
        self.stack.clear();
        self.bulk = None;
        self.line_from = 0;
        self.cost = 0;
        self.push = None;
        self.skipping = false;
        self.too_large = false;
        self.ended = false;
        self.active = false;
    }

    pub fn bytes_needed(&self) -> Option<usize> {
        match &self.bulk {
            Some(b) if self.active && !self.skipping => Some(b.header + b.len + 2),
            _ => None,
        }
    }

    /// Skips the rest of the frame in progress unless it is, or may be, a
    /// push; true when it is being skipped.
    pub fn skip(&mut self) -> bool {
        if !self.active {
            return false;
        }
        if !self.skipping && self.push == Some(false) {
            self.start_skipping();
        }
        self.skipping
    }

    /// Drops what was built: from now on the frame is only counted.
    fn start_skipping(&mut self) {
        self.skipping = true;
        for open in &mut self.stack {
            open.items = Items::Skipped;
        }
    }

    /// Adds `bytes` to the frame's cost; past the limit, the frame is
    /// skipped from here on.
    fn charge(&mut self, bytes: usize, limits: &DecoderLimits) {
        if self.skipping {
            return;
        }
        self.cost = self.cost.saturating_add(bytes);
        if self.cost > limits.max_reply_bytes {
            self.too_large = true;
            self.start_skipping();
        }
    }

    /// Decodes what `buf` holds of the frame, consuming about `budget`
    /// bytes at most before pausing.
    pub fn run(
        &mut self,
        buf: &mut BytesMut,
        budget: usize,
        limits: &DecoderLimits,
    ) -> Result<Step, ProtocolError> {
        let mut used = 0usize;
        loop {
            if self.too_large {
                if let Some(push) = self.push {
                    self.too_large = false;
                    return Ok(Step::TooLarge { push });
                }
            }
            if self.ended {
                let push = self.push.unwrap_or(false);
                self.reset();
                return Ok(Step::Skipped { push });
            }
            if self.bulk.is_some() {
                match self.take_payload(buf, &mut used)? {
                    Some(v) => match self.complete(v, limits) {
                        Some(frame) => return Ok(self.finish(frame)),
                        None => continue,
                    },
                    None => return Ok(Step::NeedMore),
                }
            }
            if buf.is_empty() {
                return Ok(Step::NeedMore);
            }
            if used >= budget {
                return Ok(Step::Paused);
            }
            let Some(cr) = self.find_line_end(buf, limits)? else {
                return Ok(Step::NeedMore);
            };
            self.line_from = 0;
            let next = cr + 2;
            let kind = buf[0];
            if self.push.is_none()
                && kind != b'|'
                && self
                    .stack
                    .iter()
                    .all(|open| open.kind == b'|' && open.left == 1)
            {
                // The frame's own value (past any attributes).
                self.push = Some(kind == b'>');
            }
            // The top-level value is returned, not held in a `Vec`.
            let slot = if self.stack.is_empty() { 0 } else { VALUE_SIZE };
            let line = &buf[1..cr];
            let value = match kind {
                b'+' | b'-' | b',' | b'(' | b':' | b'_' | b'#' => {
                    let value = match kind {
                        b':' => {
                            Value::Integer(parse_i64(line).ok_or(ProtocolError::InvalidInteger)?)
                        }
                        b'_' if line.is_empty() => Value::Nil,
                        b'_' => return Err(ProtocolError::InvalidNull),
                        b',' => Value::Double(parse_double(line)?),
                        b'#' => Value::Boolean(parse_boolean(line)?),
                        b'(' => {
                            check_big_number(line)?;
                            Value::Nil
                        }
                        _ => Value::Nil,
                    };
                    let text = if matches!(kind, b'+' | b'-' | b',' | b'(') {
                        line.len()
                    } else {
                        0
                    };
                    self.charge(slot + text, limits);
                    used += next;
                    if self.skipping || !matches!(kind, b'+' | b'-' | b'(') {
                        buf.advance(next);
                        value
                    } else {
                        let mut text = buf.split_to(next);
                        text.truncate(cr);
                        text.advance(1);
                        let text = text.freeze();
                        match kind {
                            b'+' => Value::SimpleString(text),
                            b'-' => Value::Error(ServerError::new(text)),
                            _ => Value::BigNumber(text),
                        }
                    }
                }
                b'$' | b'!' | b'=' => match parse_len(line, kind)? {
                    None if kind == b'$' => {
                        self.charge(slot, limits);
                        used += next;
                        buf.advance(next);
                        Value::Nil
                    }
                    None => return Err(ProtocolError::InvalidLength(kind as char)),
                    Some(len) => {
                        if len > limits.max_bulk_len as u64 {
                            return Err(ProtocolError::BulkTooLong {
                                len,
                                limit: limits.max_bulk_len,
                            });
                        }
                        let len = len as usize;
                        self.charge(slot + len, limits);
                        let end = next + len;
                        if !self.skipping && kind == b'$' && buf.len() >= end + 2 {
                            // The payload is here already (the common case
                            // while catching up on buffered bytes).
                            if &buf[end..end + 2] != b"\r\n" {
                                return Err(ProtocolError::MissingCrlf);
                            }
                            let mut body = buf.split_to(end + 2);
                            body.truncate(end);
                            body.advance(next);
                            used += end + 2;
                            Value::BulkString(body.freeze())
                        } else {
                            self.bulk = Some(PendingBulk {
                                kind,
                                header: next,
                                len,
                                left: len,
                                format_ok: true,
                            });
                            continue;
                        }
                    }
                },
                b'*' | b'%' | b'~' | b'>' | b'|' => match parse_len(line, kind)? {
                    None if kind == b'*' => {
                        self.charge(slot, limits);
                        used += next;
                        buf.advance(next);
                        Value::Nil
                    }
                    None => return Err(ProtocolError::InvalidLength(kind as char)),
                    Some(n) => {
                        if n > limits.max_aggregate_len as u64 {
                            return Err(ProtocolError::AggregateTooLong {
                                len: n,
                                limit: limits.max_aggregate_len,
                            });
                        }
                        let left = match kind {
                            b'%' => 2 * n,
                            b'|' => 2 * n + 1,
                            _ => n,
                        };
                        self.charge(slot, limits);
                        used += next;
                        buf.advance(next);
                        if left == 0 {
                            empty(kind)
                        } else {
                            if self.stack.len() >= limits.max_depth {
                                return Err(ProtocolError::TooDeep {
                                    limit: limits.max_depth,
                                });
                            }
                            let reserve = (n as usize).min(RESERVE_CAP);
                            let items = match kind {
                                _ if self.skipping => Items::Skipped,
                                b'%' | b'|' => Items::Pairs(Vec::with_capacity(reserve), None),
                                _ => Items::List(Vec::with_capacity(reserve)),
                            };
                            self.stack.push(Open { kind, left, items });
                            continue;
                        }
                    }
                },
                other => return Err(ProtocolError::InvalidType(other)),
            };
            // Most elements land in an array with room that they do not
            // finish.
            if let Some(Open {
                left,
                items: Items::List(items),
                ..
            }) = self.stack.last_mut()
            {
                if *left > 1 && items.len() < items.capacity() {
                    *left -= 1;
                    items.push(value);
                    continue;
                }
            }
            if let Some(frame) = self.complete(value, limits) {
                return Ok(self.finish(frame));
            }
        }
    }

    /// The frame's value is whole: the builder goes idle.
    fn finish(&mut self, frame: Value) -> Step {
        self.reset();
        Step::Frame(frame)
    }

    /// Takes the pending bulk payload once it is whole (when building), or
    /// drops what arrived of it (when skipping); `Some` once it is done.
    fn take_payload(
        &mut self,
        buf: &mut BytesMut,
        used: &mut usize,
    ) -> Result<Option<Value>, ProtocolError> {
        let bulk = self.bulk.as_mut().expect("a pending bulk");
        if self.skipping {
            if bulk.header > 0 {
                buf.advance(bulk.header);
                *used += bulk.header;
                bulk.header = 0;
            }
            if bulk.left > 0 {
                let n = bulk.left.min(buf.len());
                let done = bulk.len - bulk.left;
                if bulk.kind == b'=' && done <= 3 && 3 < done + n {
                    bulk.format_ok = buf[3 - done] == b':';
                }
                buf.advance(n);
                *used += n;
                bulk.left -= n;
                if bulk.left > 0 {
                    return Ok(None);
                }
            }
            if buf.len() < 2 {
                return Ok(None);
            }
            if &buf[..2] != b"\r\n" {
                return Err(ProtocolError::MissingCrlf);
            }
            buf.advance(2);
            *used += 2;
            if bulk.kind == b'=' && (bulk.len < 4 || !bulk.format_ok) {
                return Err(ProtocolError::InvalidVerbatim);
            }
            self.bulk = None;
            return Ok(Some(Value::Nil));
        }
        let (kind, header, len) = (bulk.kind, bulk.header, bulk.len);
        let end = header + len;
        if buf.len() < end + 2 {
            return Ok(None);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err(ProtocolError::MissingCrlf);
        }
        buf.advance(header);
        let body = buf.split_to(len).freeze();
        buf.advance(2);
        *used += end + 2;
        self.bulk = None;
        Ok(Some(match kind {
            b'$' => Value::BulkString(body),
            b'!' => Value::Error(ServerError::new(body)),
            _ => verbatim(body)?,
        }))
    }

    /// Adds a finished element to the innermost open aggregate, closing
    /// every aggregate it completes. `Some` with the frame's value when it
    /// is whole; when skipping, the end is noted instead.
    fn complete(&mut self, mut value: Value, limits: &DecoderLimits) -> Option<Value> {
        loop {
            let Some(open) = self.stack.last_mut() else {
                if self.skipping {
                    self.ended = true;
                    return None;
                }
                return Some(value);
            };
            open.left -= 1;
            let left = open.left;
            // Room for more elements within the limit, so that a `Vec`
            // never grows far past what the reply may hold.
            let room = || limits.max_reply_bytes.saturating_sub(self.cost) / VALUE_SIZE;
            match &mut open.items {
                Items::Skipped => {}
                Items::List(items) => {
                    if items.len() == items.capacity() {
                        grow(items, left, room());
                    }
                    items.push(value);
                }
                Items::Pairs(_, key) if open.kind == b'|' && left == 0 => *key = Some(value),
                Items::Pairs(pairs, key) => match key.take() {
                    None => *key = Some(value),
                    Some(k) => {
                        if pairs.len() == pairs.capacity() {
                            grow(pairs, left / 2, room() / 2);
                        }
                        pairs.push((k, value));
                    }
                },
            }
            if left > 0 {
                return None;
            }
            let open = self.stack.pop().expect("an open aggregate");
            value = match open.items {
                Items::Skipped => Value::Nil,
                Items::List(items) => match open.kind {
                    b'*' => Value::Array(items),
                    b'~' => Value::Set(items),
                    _ => Value::Push(items),
                },
                Items::Pairs(pairs, value) => match (open.kind, value) {
                    (b'|', Some(value)) => Value::Attributed {
                        attributes: pairs,
                        value: Box::new(value),
                    },
                    _ => Value::Map(pairs),
                },
            };
        }
    }

    /// Finds the `\r` of the CRLF ending the line at the front of `buf`,
    /// resuming the search where the last call stopped.
    fn find_line_end(
        &mut self,
        buf: &[u8],
        limits: &DecoderLimits,
    ) -> Result<Option<usize>, ProtocolError> {
        let from = self.line_from.max(1);
        let too_long = |len: usize| {
            if len > limits.max_line_len {
                Err(ProtocolError::LineTooLong {
                    limit: limits.max_line_len,
                })
            } else {
                Ok(())
            }
        };
        match memchr::memchr(b'\r', &buf[from..]) {
            Some(i) => {
                looked(i + 1);
                let cr = from + i;
                match buf.get(cr + 1) {
                    None => {
                        self.line_from = cr;
                        Ok(None)
                    }
                    Some(b'\n') => {
                        too_long(cr)?;
                        Ok(Some(cr))
                    }
                    Some(_) => Err(ProtocolError::MissingCrlf),
                }
            }
            None => {
                looked(buf.len() - from);
                self.line_from = buf.len();
                too_long(buf.len())?;
                Ok(None)
            }
        }
    }
}

/// An aggregate declared with no elements.
fn empty(kind: u8) -> Value {
    match kind {
        b'*' => Value::Array(Vec::new()),
        b'~' => Value::Set(Vec::new()),
        b'>' => Value::Push(Vec::new()),
        _ => Value::Map(Vec::new()),
    }
}

/// A `Vec` holding this many bytes of elements grows in one step to
/// [`BIG_VEC`] bytes.
const JUMP_FROM: usize = 1 << 20;
/// glibc serves an allocation this large (twice its largest mmap
/// threshold, which rises up to 32 MiB as large blocks are freed) with a
/// mapping of its own: it grows in place (`mremap`), its pages become
/// resident only as they fill, and it goes back to the system when freed.
/// Smaller ones may come from an arena, where each doubling copies the
/// elements and the freed old block stays resident, adding up to about the
/// final size again.
const BIG_VEC: usize = 64 << 20;

/// Makes room for one more element in a full `Vec`: doubling (past
/// [`JUMP_FROM`], straight to [`BIG_VEC`]), but never past the elements
/// still declared nor past the room left within the limit, so capacity
/// stays within a small factor of what arrived.
#[cold]
fn grow<T>(items: &mut Vec<T>, declared_left: u64, room: usize) {
    let len = items.len();
    let size = size_of::<T>();
    let mut want = len.max(16);
    if len * size >= JUMP_FROM {
        want = want.max((BIG_VEC / size).saturating_sub(len));
    }
    let declared = usize::try_from(declared_left).unwrap_or(usize::MAX);
    let extra = want
        .min(declared.saturating_add(1))
        .min(room.saturating_add(1));
    items.reserve_exact(extra);
}
