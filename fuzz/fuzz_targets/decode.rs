//! Arbitrary bytes into the RESP decoder.
//!
//! Checks, for every input:
//! - the decoder never panics, whatever the bytes;
//! - feeding the bytes whole, split in two, in small chunks, or one byte at a
//!   time gives the same frames, the same leftover, and an error in one
//!   feeding exactly when there is one in the others;
//! - after an error the decoder is usable again on a fresh stream;
//! - every decoded frame re-encodes (`encode_value`) to bytes that decode to
//!   one frame which re-encodes to the same bytes;
//! - error replies can be classified and their redirects parsed.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use redcore::resp::{Decoder, DecoderLimits, ProtocolError, Value, encode_value};

/// Small limits, so the fuzzer reaches every limit check with short inputs.
fn limits() -> DecoderLimits {
    DecoderLimits::default()
        .max_bulk_len(1 << 20)
        .max_depth(32)
        .max_aggregate_len(1 << 16)
        .max_line_len(4096)
}

/// What decoding a byte stream fed in some chunking produced.
#[derive(Debug)]
struct Outcome {
    frames: Vec<Value>,
    /// The error that stopped decoding, if any.
    error: Option<ProtocolError>,
    /// Bytes left in the buffer at the end (a partial frame), when no error.
    leftover: usize,
}

/// Feeds `data` to one decoder in the chunks `chunks` yields (lengths),
/// decoding every whole frame after each chunk, until the first error.
fn feed(data: &[u8], chunks: impl IntoIterator<Item = usize>) -> Outcome {
    let mut decoder = Decoder::with_limits(limits());
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut rest = data;
    let mut chunks = chunks.into_iter();
    loop {
        let n = chunks.next().unwrap_or(rest.len()).min(rest.len());
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        buf.extend_from_slice(chunk);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(v)) => frames.push(v),
                Ok(None) => break,
                Err(e) => {
                    // The decoder resets itself after an error: it must
                    // work on a fresh stream.
                    let mut fresh = BytesMut::from(&b"+OK\r\n"[..]);
                    let ok = decoder.decode(&mut fresh);
                    assert!(
                        matches!(&ok, Ok(Some(Value::SimpleString(s))) if &s[..] == b"OK")
                            && fresh.is_empty(),
                        "decoder unusable after {e:?}: {ok:?}"
                    );
                    return Outcome {
                        frames,
                        error: Some(e),
                        leftover: 0,
                    };
                }
            }
        }
        if rest.is_empty() {
            return Outcome {
                frames,
                error: None,
                leftover: buf.len(),
            };
        }
    }
}

fn encoded(v: &Value) -> BytesMut {
    let mut out = BytesMut::new();
    encode_value(&mut out, v);
    out
}

/// `Value` equality, except that a NaN double equals a NaN double.
fn same_value(a: &Value, b: &Value) -> bool {
    a == b || (format!("{a:?}") == format!("{b:?}") && encoded(a) == encoded(b))
}

/// Whether two errors for the same bytes fed differently agree. A line that
/// is too long is caught as soon as enough of it has arrived, which may be
/// before the bytes that make another error arrive (a CR not followed by
/// LF, say), so `LineTooLong` may stand in for that other error.
fn same_error(a: &ProtocolError, b: &ProtocolError) -> bool {
    a == b
        || matches!(a, ProtocolError::LineTooLong { .. })
        || matches!(b, ProtocolError::LineTooLong { .. })
}

fn check_same(data: &[u8], how: &str, whole: &Outcome, other: &Outcome) {
    let agree = whole.frames.len() == other.frames.len()
        && whole
            .frames
            .iter()
            .zip(&other.frames)
            .all(|(a, b)| same_value(a, b))
        && match (&whole.error, &other.error) {
            (None, None) => whole.leftover == other.leftover,
            (Some(a), Some(b)) => same_error(a, b),
            _ => false,
        };
    assert!(
        agree,
        "whole and {how} decoding disagree on {data:?}\nwhole: {whole:?}\n{how}: {other:?}"
    );
}

/// A decoded frame re-encodes to bytes that decode to one frame, which
/// re-encodes to the same bytes (the first encoding may normalise: a simple
/// string holding LF becomes a bulk string).
fn check_round_trip(v: &Value) {
    let first = encoded(v);
    let mut buf = first.clone();
    let again = Decoder::new().decode(&mut buf);
    let Ok(Some(again)) = again else {
        panic!("re-encoded {v:?} as {first:?}, which decodes to {again:?}");
    };
    assert!(
        buf.is_empty(),
        "re-encoded {v:?} as {first:?}: bytes left over"
    );
    assert_eq!(encoded(&again), first, "{v:?} -> {again:?}");
}

/// Exercises error classification and redirect parsing.
fn visit(v: &Value) {
    match v {
        Value::Error(e) => {
            let _ = (e.kind(), e.code(), e.redirect(), e.retry_action());
        }
        Value::Array(items) | Value::Set(items) | Value::Push(items) => {
            items.iter().for_each(visit)
        }
        Value::Map(pairs) => pairs.iter().for_each(|(k, v)| {
            visit(k);
            visit(v);
        }),
        Value::Attributed { attributes, value } => {
            attributes.iter().for_each(|(k, v)| {
                visit(k);
                visit(v);
            });
            visit(value);
        }
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let whole = feed(data, []);
    for v in &whole.frames {
        check_round_trip(v);
        visit(v);
    }

    if let Some(&first) = data.first() {
        // Split in two at a point the first byte picks.
        let cut = first as usize * (data.len() + 1) / 256;
        check_same(data, "split", &whole, &feed(data, [cut]));
    }
    if let Some(&second) = data.get(1) {
        // Chunks of 1 to 16 bytes, the size picked by the second byte.
        let size = usize::from(second % 16) + 1;
        let chunked = feed(data, std::iter::repeat(size));
        check_same(data, "chunked", &whole, &chunked);
    }
    if data.len() <= 4096 {
        check_same(
            data,
            "byte by byte",
            &whole,
            &feed(data, std::iter::repeat(1)),
        );
    }
});
