//! Arbitrary bytes into the RESP decoder.
//!
//! Checks, for every input:
//! - the decoder never panics, whatever the bytes;
//! - feeding the bytes whole, split in two, in small chunks, or one byte at a
//!   time gives the same frames, the same replies past the reply limit, the
//!   same leftover, and an error in one feeding exactly when there is one in
//!   the others. Fed whole, most frames take the scan-then-parse path; fed
//!   in pieces, the incremental builder: the two must agree;
//! - stepping with a small byte budget (`decode_step`) gives the same again;
//! - skipping every frame in progress (`skip_frame`) consumes exactly one
//!   frame per frame, never skips a push, and reports the same errors;
//! - after an error the decoder is usable again on a fresh stream;
//! - every decoded frame re-encodes (`encode_value`) to bytes that decode to
//!   one frame which re-encodes to the same bytes;
//! - error replies can be classified and their redirects parsed.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use redcore::resp::{Decoder, DecoderLimits, ProtocolError, Step, Value, encode_value};

/// Small limits, so the fuzzer reaches every limit check with short inputs
/// (a reply of some 80 elements, or 4 KiB of text, passes the reply limit).
fn limits() -> DecoderLimits {
    DecoderLimits::default()
        .max_bulk_len(1 << 20)
        .max_depth(32)
        .max_aggregate_len(1 << 16)
        .max_line_len(4096)
        .max_reply_bytes(4096)
}

/// What happened to one frame.
#[derive(Debug)]
enum Frame {
    /// Decoded.
    Value(Value),
    /// Skipped to its end: past the reply limit (`too_large`), or on request.
    Skipped { push: bool, too_large: bool },
}

/// What decoding a byte stream fed in some chunking produced.
#[derive(Debug)]
struct Outcome {
    frames: Vec<Frame>,
    /// The error that stopped decoding, if any.
    error: Option<ProtocolError>,
    /// Bytes left in the buffer at the end (a partial frame), when no error.
    leftover: usize,
}

/// How to feed.
#[derive(Clone, Copy)]
struct Feeding {
    /// Bytes the builder may consume per step.
    budget: usize,
    /// Ask to skip every frame in progress after each chunk.
    skip: bool,
}

const PLAIN: Feeding = Feeding {
    budget: usize::MAX,
    skip: false,
};

/// Feeds `data` to one decoder in the chunks `chunks` yields (lengths),
/// stepping through every whole frame after each chunk, until the first
/// error.
fn feed(data: &[u8], chunks: impl IntoIterator<Item = usize>, how: Feeding) -> Outcome {
    let mut decoder = Decoder::with_limits(limits());
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut too_large = None;
    let mut rest = data;
    let mut chunks = chunks.into_iter();
    loop {
        let n = chunks.next().unwrap_or(rest.len()).min(rest.len());
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        buf.extend_from_slice(chunk);
        loop {
            let before = buf.len();
            let step = decoder.decode_step(&mut buf, how.budget);
            if let Ok(Step::Paused) = step {
                // A budget of n bytes is about n bytes: never a whole
                // element past it.
                assert!(before - buf.len() <= how.budget + 4096 + 64);
            }
            match step {
                Ok(Step::Frame(v)) => {
                    assert!(too_large.is_none(), "a frame between TooLarge and Skipped");
                    frames.push(Frame::Value(v));
                }
                Ok(Step::TooLarge { push }) => {
                    assert!(too_large.replace(push).is_none(), "TooLarge twice");
                    assert!(decoder.is_skipping());
                }
                Ok(Step::Skipped { push }) => {
                    let was = too_large.take();
                    assert!(
                        was.is_none_or(|p| p == push),
                        "TooLarge and Skipped disagree"
                    );
                    frames.push(Frame::Skipped {
                        push,
                        too_large: was.is_some(),
                    });
                }
                Ok(Step::Paused) => {}
                Ok(Step::NeedMore) => {
                    if how.skip && decoder.in_frame() {
                        decoder.skip_frame();
                    }
                    break;
                }
                Ok(other) => panic!("unknown step {other:?}"),
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

fn same_frame(a: &Frame, b: &Frame) -> bool {
    match (a, b) {
        (Frame::Value(a), Frame::Value(b)) => same_value(a, b),
        (
            Frame::Skipped {
                push: p,
                too_large: t,
            },
            Frame::Skipped {
                push: q,
                too_large: u,
            },
        ) => p == q && t == u,
        _ => false,
    }
}

fn same_end(whole: &Outcome, other: &Outcome) -> bool {
    match (&whole.error, &other.error) {
        (None, None) => whole.leftover == other.leftover,
        (Some(a), Some(b)) => same_error(a, b),
        _ => false,
    }
}

fn check_same(data: &[u8], how: &str, whole: &Outcome, other: &Outcome) {
    let agree = whole.frames.len() == other.frames.len()
        && whole
            .frames
            .iter()
            .zip(&other.frames)
            .all(|(a, b)| same_frame(a, b))
        && same_end(whole, other);
    assert!(
        agree,
        "whole and {how} decoding disagree on {data:?}\nwhole: {whole:?}\n{how}: {other:?}"
    );
}

/// Skipping every frame in progress: one outcome per frame, pushes kept
/// whole, and the same end.
fn check_skipped(data: &[u8], whole: &Outcome, skipped: &Outcome) {
    let agree = whole.frames.len() == skipped.frames.len()
        && whole
            .frames
            .iter()
            .zip(&skipped.frames)
            .all(|(a, b)| match (a, b) {
                (Frame::Value(v), Frame::Value(w)) => same_value(v, w),
                (Frame::Value(v), Frame::Skipped { push, .. }) => !v.is_push() && !push,
                (Frame::Skipped { push: p, .. }, Frame::Skipped { push: q, .. }) => p == q,
                // Past the limit fed whole, past it fed in pieces too.
                (Frame::Skipped { .. }, Frame::Value(_)) => false,
            })
        // Skipping consumes a partial frame's bytes as they arrive: only
        // the errors must agree.
        && match (&whole.error, &skipped.error) {
            (None, None) => true,
            (Some(a), Some(b)) => same_error(a, b),
            _ => false,
        };
    assert!(
        agree,
        "whole and skipping decoding disagree on {data:?}\nwhole: {whole:?}\nskipping: {skipped:?}"
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
    let whole = feed(data, [], PLAIN);
    for frame in &whole.frames {
        if let Frame::Value(v) = frame {
            check_round_trip(v);
            visit(v);
        }
    }

    if let Some(&first) = data.first() {
        // Split in two at a point the first byte picks.
        let cut = first as usize * (data.len() + 1) / 256;
        check_same(data, "split", &whole, &feed(data, [cut], PLAIN));
    }
    if let Some(&second) = data.get(1) {
        // Chunks of 1 to 16 bytes, the size picked by the second byte.
        let size = usize::from(second % 16) + 1;
        let chunked = feed(data, std::iter::repeat(size), PLAIN);
        check_same(data, "chunked", &whole, &chunked);
    }
    if let Some(&third) = data.get(2) {
        // Whole, then in chunks of 64, stepping with a budget of 1 to 64
        // bytes picked by the third byte.
        let how = Feeding {
            budget: usize::from(third % 64) + 1,
            skip: false,
        };
        check_same(data, "budgeted", &whole, &feed(data, [], how));
        let stepped = feed(data, std::iter::repeat(64), how);
        check_same(data, "budgeted chunks", &whole, &stepped);
    }
    if data.len() <= 4096 {
        let one = std::iter::repeat(1);
        check_same(
            data,
            "byte by byte",
            &whole,
            &feed(data, one.clone(), PLAIN),
        );
        let skipping = Feeding {
            budget: usize::MAX,
            skip: true,
        };
        check_skipped(data, &whole, &feed(data, one, skipping));
    }
});
