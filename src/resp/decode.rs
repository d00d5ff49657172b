//! Incremental RESP2/RESP3 decoder.
//!
//! Decoding is two passes over the buffered bytes:
//!
//! 1. A *scan* checks that one whole frame is buffered and finds where it
//!    ends. The scan is resumable: it remembers how far it got (the offset,
//!    the stack of aggregates still open, the end a pending bulk string
//!    needs) so that a large reply arriving in many reads is looked at once,
//!    not from the start on every read.
//! 2. Once the frame is whole, it is split off the buffer as one [`Bytes`]
//!    and *parsed* into a [`Value`] whose payloads are slices of it.
//!
//! Memory is bounded by what the server has really sent: declared lengths
//! are checked against [`DecoderLimits`] and nothing is allocated from a
//! declared length before the bytes behind it have arrived.

use bytes::{Buf, Bytes, BytesMut};

use super::{ProtocolError, Value};
use crate::error::ServerError;

/// Limits that keep a broken or hostile server from making the decoder
/// allocate without bound or recurse without end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct DecoderLimits {
    /// Longest bulk string, bulk error or verbatim string accepted, in bytes.
    /// Default 512 MiB, the server's own `proto-max-bulk-len` default.
    pub max_bulk_len: usize,
    /// Deepest nesting of aggregates (arrays, maps, sets, pushes,
    /// attributes) accepted. Default 128.
    pub max_depth: usize,
    /// Most elements in one aggregate (a map of n pairs counts n). Default
    /// 2^28.
    pub max_aggregate_len: usize,
    /// Longest header or simple line (`+...`, `-...`, `:...`) accepted
    /// before its CRLF arrives. Default 1 MiB.
    pub max_line_len: usize,
}

impl Default for DecoderLimits {
    fn default() -> Self {
        DecoderLimits {
            max_bulk_len: 512 * 1024 * 1024,
            max_depth: 128,
            max_aggregate_len: 1 << 28,
            max_line_len: 1024 * 1024,
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
}

/// Decodes RESP2 and RESP3 frames from a growing [`BytesMut`].
///
/// Call [`decode`](Decoder::decode) after each read: it returns `Ok(None)`
/// until one whole frame is buffered, then the frame, removed from the
/// front of the buffer. Between calls, only append to the buffer. After an
/// error the byte stream cannot be trusted any more: drop the connection
/// (the decoder resets itself, so it can be reused for a fresh stream).
#[derive(Debug, Default)]
pub struct Decoder {
    limits: DecoderLimits,
    /// Offset of the next element header to scan.
    pos: usize,
    /// Where to resume looking for the CRLF of the line starting at `pos`.
    line_from: usize,
    /// The buffer length the pending element needs before scanning resumes.
    need: usize,
    /// Elements still expected by each open aggregate, innermost last.
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

    /// Forgets any partly scanned frame. Call it when the buffer is replaced.
    pub fn reset(&mut self) {
        self.pos = 0;
        self.line_from = 0;
        self.need = 0;
        self.open.clear();
    }

    /// How many bytes the buffer must hold before the next call can make
    /// progress, when that is known (a large bulk string is pending). A
    /// reader can reserve this much at once.
    pub fn bytes_needed(&self) -> Option<usize> {
        (self.need > 0).then_some(self.need)
    }

    /// Decodes one frame from the front of `buf`, removing its bytes.
    /// `Ok(None)` means more bytes are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Value>, ProtocolError> {
        // Most replies are one whole scalar (`+OK`, `:1`, `$3 abc`): those
        // skip the resumable scan.
        // Only at the first look at a frame: a frame that was not whole
        // then resumes in the scan, which never looks at a byte twice.
        let fresh = self.pos == 0 && self.line_from == 0 && self.need == 0 && self.open.is_empty();
        if fresh {
            if let Some(value) = self.take_whole_scalar(buf) {
                return value.map(Some);
            }
        }
        let end = match self.scan(buf) {
            Ok(Some(end)) => end,
            Ok(None) => return Ok(None),
            Err(e) => {
                self.reset();
                return Err(e);
            }
        };
        self.reset();
        let frame = buf.split_to(end).freeze();
        let mut parser = Parser {
            frame: &frame,
            pos: 0,
        };
        let value = parser.value()?;
        debug_assert_eq!(parser.pos, end);
        Ok(Some(value))
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
    /// and sends it through the general scan, which also reports every
    /// error but a bad integer.
    fn take_whole_scalar(&self, buf: &mut BytesMut) -> Option<Result<Value, ProtocolError>> {
        let (kind, cr) = {
            let b = &buf[..];
            let kind = *b.first()?;
            if !matches!(kind, b'+' | b'-' | b':' | b'$') {
                return None;
            }
            let line = &b[1..b.len().min(self.limits.max_line_len + 1)];
            let cr = 1 + memchr::memchr(b'\r', line)?;
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
                Some(len) if len <= self.limits.max_bulk_len as u64 => {
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

    /// Scans from the saved position; returns the frame's end once whole.
    fn scan(&mut self, b: &[u8]) -> Result<Option<usize>, ProtocolError> {
        loop {
            if b.len() < self.need || self.pos >= b.len() {
                return Ok(None);
            }
            let start = self.pos;
            let Some(cr) = self.find_line_end(b)? else {
                return Ok(None);
            };
            let line = &b[start + 1..cr];
            let next = cr + 2;
            let end = match b[start] {
                b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => next,
                kind @ (b'$' | b'!' | b'=') => match parse_len(line, kind)? {
                    None if kind == b'$' => next,
                    None => return Err(ProtocolError::InvalidLength(kind as char)),
                    Some(len) => {
                        if len > self.limits.max_bulk_len as u64 {
                            return Err(ProtocolError::BulkTooLong {
                                len,
                                limit: self.limits.max_bulk_len,
                            });
                        }
                        let end = next + len as usize + 2;
                        if b.len() < end {
                            self.need = end;
                            return Ok(None);
                        }
                        if &b[end - 2..end] != b"\r\n" {
                            return Err(ProtocolError::MissingCrlf);
                        }
                        end
                    }
                },
                kind @ (b'*' | b'%' | b'~' | b'>' | b'|') => match parse_len(line, kind)? {
                    None if kind == b'*' => next,
                    None => return Err(ProtocolError::InvalidLength(kind as char)),
                    Some(n) => {
                        if n > self.limits.max_aggregate_len as u64 {
                            return Err(ProtocolError::AggregateTooLong {
                                len: n,
                                limit: self.limits.max_aggregate_len,
                            });
                        }
                        let children = match kind {
                            b'%' => 2 * n,
                            // The attribute map, then the value it is attached to.
                            b'|' => 2 * n + 1,
                            _ => n,
                        };
                        if children > 0 {
                            if self.open.len() >= self.limits.max_depth {
                                return Err(ProtocolError::TooDeep {
                                    limit: self.limits.max_depth,
                                });
                            }
                            self.open.push(children);
                            self.advance(next);
                            continue;
                        }
                        next
                    }
                },
                other => return Err(ProtocolError::InvalidType(other)),
            };
            self.advance(end);
            if self.close_element() {
                return Ok(Some(end));
            }
        }
    }

    fn advance(&mut self, to: usize) {
        self.pos = to;
        self.line_from = to;
        self.need = 0;
    }

    /// Counts one finished element against the open aggregates; true when
    /// the outermost frame is finished.
    fn close_element(&mut self) -> bool {
        while let Some(left) = self.open.last_mut() {
            *left -= 1;
            if *left > 0 {
                return false;
            }
            self.open.pop();
        }
        true
    }

    /// Finds the `\r` of the CRLF ending the line at `self.pos`, resuming
    /// the search where the last call stopped.
    fn find_line_end(&mut self, b: &[u8]) -> Result<Option<usize>, ProtocolError> {
        let from = self.line_from.max(self.pos + 1);
        match memchr::memchr(b'\r', &b[from..]) {
            Some(i) => {
                let cr = from + i;
                match b.get(cr + 1) {
                    None => {
                        self.line_from = cr;
                        Ok(None)
                    }
                    Some(b'\n') => {
                        self.check_line_len(cr - self.pos)?;
                        Ok(Some(cr))
                    }
                    Some(_) => Err(ProtocolError::MissingCrlf),
                }
            }
            None => {
                self.line_from = b.len();
                self.check_line_len(b.len() - self.pos)?;
                Ok(None)
            }
        }
    }

    fn check_line_len(&self, len: usize) -> Result<(), ProtocolError> {
        if len > self.limits.max_line_len {
            Err(ProtocolError::LineTooLong {
                limit: self.limits.max_line_len,
            })
        } else {
            Ok(())
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

/// Second pass: builds the value from a frame the scan proved whole.
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
            b'#' => match line {
                b"t" => Value::Boolean(true),
                b"f" => Value::Boolean(false),
                _ => return Err(ProtocolError::InvalidBoolean),
            },
            b'(' => {
                let digits = line.strip_prefix(b"-").or(line.strip_prefix(b"+"));
                let digits = digits.unwrap_or(line);
                if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                    return Err(ProtocolError::InvalidBigNumber);
                }
                Value::BigNumber(self.frame.slice(start..end))
            }
            b'$' | b'!' | b'=' => match parse_len(line, kind)? {
                None => Value::Nil,
                Some(len) => {
                    let body = self.pos..self.pos + len as usize;
                    self.pos = body.end + 2;
                    match kind {
                        b'$' => Value::BulkString(self.frame.slice(body)),
                        b'!' => Value::Error(ServerError::new(self.frame.slice(body))),
                        _ => {
                            let text = &self.frame[body.clone()];
                            if text.len() < 4 || text[3] != b':' {
                                return Err(ProtocolError::InvalidVerbatim);
                            }
                            Value::Verbatim {
                                format: [text[0], text[1], text[2]],
                                text: self.frame.slice(body.start + 4..body.end),
                            }
                        }
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

fn parse_double(line: &[u8]) -> Result<f64, ProtocolError> {
    let text = std::str::from_utf8(line).map_err(|_| ProtocolError::InvalidDouble)?;
    // Rust's float parser accepts `inf`, `-inf` and `nan`, which is what
    // RESP3 sends for the special values.
    text.parse().map_err(|_| ProtocolError::InvalidDouble)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(bytes: &[u8]) -> Value {
        let mut values = Decoder::new().decode_all(bytes).unwrap();
        assert_eq!(values.len(), 1, "{values:?}");
        values.pop().unwrap()
    }

    fn bulk(s: &str) -> Value {
        Value::BulkString(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn simple(s: &str) -> Value {
        Value::SimpleString(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn scalars() {
        assert_eq!(one(b"+OK\r\n"), simple("OK"));
        assert_eq!(one(b"+\r\n"), simple(""));
        assert_eq!(one(b":0\r\n"), Value::Integer(0));
        assert_eq!(one(b":-9223372036854775808\r\n"), Value::Integer(i64::MIN));
        assert_eq!(one(b":9223372036854775807\r\n"), Value::Integer(i64::MAX));
        assert_eq!(one(b"$5\r\nhello\r\n"), bulk("hello"));
        assert_eq!(one(b"$0\r\n\r\n"), bulk(""));
        assert_eq!(one(b"$4\r\na\r\nb\r\n"), bulk("a\r\nb"));
        assert_eq!(one(b"$-1\r\n"), Value::Nil);
        assert_eq!(one(b"*-1\r\n"), Value::Nil);
        assert_eq!(one(b"_\r\n"), Value::Nil);
        assert_eq!(one(b"#t\r\n"), Value::Boolean(true));
        assert_eq!(one(b"#f\r\n"), Value::Boolean(false));
        assert_eq!(one(b",1.5\r\n"), Value::Double(1.5));
        assert_eq!(one(b",-2\r\n"), Value::Double(-2.0));
        assert_eq!(one(b",1e3\r\n"), Value::Double(1000.0));
        assert_eq!(one(b",inf\r\n"), Value::Double(f64::INFINITY));
        assert_eq!(one(b",-inf\r\n"), Value::Double(f64::NEG_INFINITY));
        assert!(matches!(one(b",nan\r\n"), Value::Double(d) if d.is_nan()));
        assert_eq!(
            one(b"(3492890328409238509324850943850943825024385\r\n"),
            Value::BigNumber(Bytes::from_static(
                b"3492890328409238509324850943850943825024385"
            ))
        );
        assert_eq!(
            one(b"=15\r\ntxt:Some string\r\n"),
            Value::Verbatim {
                format: *b"txt",
                text: Bytes::from_static(b"Some string")
            }
        );
    }

    #[test]
    fn errors_are_values() {
        let Value::Error(e) = one(b"-WRONGTYPE Operation against a key\r\n") else {
            panic!()
        };
        assert_eq!(e.kind(), crate::ServerErrorKind::WrongType);
        let Value::Error(e) = one(b"!21\r\nSYNTAX invalid syntax\r\n") else {
            panic!()
        };
        assert_eq!(e.message(), b"SYNTAX invalid syntax");
    }

    #[test]
    fn aggregates() {
        assert_eq!(one(b"*0\r\n"), Value::Array(vec![]));
        assert_eq!(
            one(b"*2\r\n$1\r\na\r\n*1\r\n:1\r\n"),
            Value::Array(vec![bulk("a"), Value::Array(vec![Value::Integer(1)])])
        );
        assert_eq!(
            one(b"%2\r\n+a\r\n:1\r\n+b\r\n_\r\n"),
            Value::Map(vec![
                (simple("a"), Value::Integer(1)),
                (simple("b"), Value::Nil)
            ])
        );
        assert_eq!(
            one(b"~2\r\n:1\r\n:2\r\n"),
            Value::Set(vec![Value::Integer(1), Value::Integer(2)])
        );
        assert_eq!(
            one(b">2\r\n+message\r\n$2\r\nhi\r\n"),
            Value::Push(vec![simple("message"), bulk("hi")])
        );
        assert_eq!(one(b"%0\r\n"), Value::Map(vec![]));
    }

    #[test]
    fn attributes_attach_to_the_next_value() {
        let bytes =
            b"|1\r\n+key-popularity\r\n*2\r\n$1\r\na\r\n,0.1923\r\n*2\r\n:2039\r\n:9543\r\n";
        let values = Decoder::new().decode_all(bytes).unwrap();
        assert_eq!(values.len(), 1);
        let Value::Attributed { attributes, value } = &values[0] else {
            panic!("{values:?}")
        };
        assert_eq!(attributes.len(), 1);
        assert_eq!(
            **value,
            Value::Array(vec![Value::Integer(2039), Value::Integer(9543)])
        );
        // Inside an aggregate, too.
        let nested = one(b"*2\r\n|1\r\n+k\r\n+v\r\n:1\r\n:2\r\n");
        let Value::Array(items) = nested else {
            panic!()
        };
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].clone().without_attributes(), Value::Integer(1));
    }

    #[test]
    fn partial_input_waits() {
        let whole = b"*3\r\n$3\r\nfoo\r\n:12\r\n%1\r\n+a\r\n#t\r\n";
        for cut in 0..whole.len() {
            let mut d = Decoder::new();
            let mut buf = BytesMut::from(&whole[..cut]);
            assert_eq!(d.decode(&mut buf).unwrap(), None, "cut at {cut}");
            buf.extend_from_slice(&whole[cut..]);
            assert!(d.decode(&mut buf).unwrap().is_some(), "cut at {cut}");
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn payloads_share_the_read_buffer() {
        let mut buf = BytesMut::from(&b"$5\r\nhello\r\n"[..]);
        let base = buf.as_ptr() as usize;
        let Some(Value::BulkString(b)) = Decoder::new().decode(&mut buf).unwrap() else {
            panic!()
        };
        assert_eq!(b.as_ptr() as usize, base + 4);
    }

    #[test]
    fn large_bulk_is_not_rescanned() {
        let len = 1 << 20;
        let mut d = Decoder::new();
        let mut buf = BytesMut::new();
        buf.extend_from_slice(format!("${len}\r\n").as_bytes());
        assert_eq!(d.decode(&mut buf).unwrap(), None);
        let header = buf.len();
        assert_eq!(d.bytes_needed(), Some(header + len + 2));
        for _ in 0..len / 4096 {
            buf.extend_from_slice(&[b'x'; 4096]);
            assert_eq!(d.decode(&mut buf).unwrap(), None);
            // The scan did not move: it waits for the length it knows.
            assert_eq!(d.pos, 0);
        }
        buf.extend_from_slice(b"\r\n");
        let Some(Value::BulkString(b)) = d.decode(&mut buf).unwrap() else {
            panic!()
        };
        assert_eq!(b.len(), len);
    }

    #[test]
    fn broken_input_is_a_typed_error() {
        let cases: &[(&[u8], ProtocolError)] = &[
            (b"?x\r\n", ProtocolError::InvalidType(b'?')),
            (b"$x\r\n", ProtocolError::InvalidLength('$')),
            (b"$-2\r\n", ProtocolError::InvalidLength('$')),
            (b"*-5\r\n", ProtocolError::InvalidLength('*')),
            (b"%-1\r\n", ProtocolError::InvalidLength('%')),
            (
                b"$99999999999999999999999\r\n",
                ProtocolError::InvalidLength('$'),
            ),
            (b"$3\r\nabcde\r\n", ProtocolError::MissingCrlf),
            (b"+a\rb\r\n", ProtocolError::MissingCrlf),
            (b":12a\r\n", ProtocolError::InvalidInteger),
            (b":99999999999999999999\r\n", ProtocolError::InvalidInteger),
            (b":\r\n", ProtocolError::InvalidInteger),
            (b",abc\r\n", ProtocolError::InvalidDouble),
            (b"#x\r\n", ProtocolError::InvalidBoolean),
            (b"(12a\r\n", ProtocolError::InvalidBigNumber),
            (b"=2\r\nab\r\n", ProtocolError::InvalidVerbatim),
            (b"_x\r\n", ProtocolError::InvalidNull),
        ];
        for (bytes, expected) in cases {
            let got = Decoder::new().decode(&mut BytesMut::from(*bytes));
            assert_eq!(
                got.as_ref(),
                Err(expected),
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn limits_are_enforced() {
        let limits = DecoderLimits::default()
            .max_bulk_len(10)
            .max_depth(3)
            .max_aggregate_len(5)
            .max_line_len(16);
        let mut d = Decoder::with_limits(limits);
        assert_eq!(
            d.decode(&mut BytesMut::from(&b"$11\r\n"[..])),
            Err(ProtocolError::BulkTooLong { len: 11, limit: 10 })
        );
        assert!(
            d.decode(&mut BytesMut::from(&b"$10\r\n0123456789\r\n"[..]))
                .is_ok()
        );
        assert_eq!(
            d.decode(&mut BytesMut::from(&b"*1\r\n*1\r\n*1\r\n*1\r\n"[..])),
            Err(ProtocolError::TooDeep { limit: 3 })
        );
        assert_eq!(
            d.decode(&mut BytesMut::from(&b"*6\r\n"[..])),
            Err(ProtocolError::AggregateTooLong { len: 6, limit: 5 })
        );
        assert_eq!(
            d.decode(&mut BytesMut::from(&b"+0123456789abcdefg"[..])),
            Err(ProtocolError::LineTooLong { limit: 16 })
        );
        // A huge declared length is refused before anything is allocated.
        let mut d = Decoder::new();
        assert!(matches!(
            d.decode(&mut BytesMut::from(&b"$9223372036854775807\r\n"[..])),
            Err(ProtocolError::BulkTooLong { .. })
        ));
        // A huge declared array with few bytes behind it just waits.
        assert_eq!(
            d.decode(&mut BytesMut::from(&b"*268435456\r\n:1\r\n"[..])),
            Ok(None)
        );
    }

    #[test]
    fn decoder_recovers_after_reset() {
        let mut d = Decoder::new();
        assert!(d.decode(&mut BytesMut::from(&b"?\r\n"[..])).is_err());
        assert_eq!(
            d.decode(&mut BytesMut::from(&b":1\r\n"[..])),
            Ok(Some(Value::Integer(1)))
        );
    }
}
