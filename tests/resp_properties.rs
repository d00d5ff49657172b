//! Property tests of the RESP codec: encode → decode round trips; any
//! split of a valid byte stream, stepped with any byte budget, decodes to
//! the same frames as the whole (whole frames take the scan-then-parse
//! path, split ones the incremental builder); the reply limit holds exactly
//! at the documented count; skipping a frame consumes exactly that frame.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use redcore::resp::{
    Decoder, DecoderLimits, ProtocolError, Step, Value, encode_command, encode_value,
};
use redcore::{ServerError, cmd::Args};

fn bytes_strategy(max: usize) -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

/// Text without CR or LF, as simple strings and simple errors carry.
fn line_strategy() -> impl Strategy<Value = Bytes> {
    "[ -~]{0,24}".prop_map(Bytes::from)
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        line_strategy().prop_map(Value::SimpleString),
        bytes_strategy(64).prop_map(Value::BulkString),
        any::<i64>().prop_map(Value::Integer),
        Just(Value::Nil),
        // NaN is left out only because NaN != NaN; it has a unit test.
        any::<f64>()
            .prop_filter("not NaN", |d| !d.is_nan())
            .prop_map(Value::Double),
        any::<bool>().prop_map(Value::Boolean),
        "-?[1-9][0-9]{0,40}".prop_map(|s| Value::BigNumber(Bytes::from(s))),
        ("[a-z]{3}", bytes_strategy(32)).prop_map(|(f, text)| Value::Verbatim {
            format: f.as_bytes().try_into().unwrap(),
            text
        }),
        line_strategy().prop_map(|m| Value::Error(ServerError::new(m))),
        bytes_strategy(32).prop_map(|m| Value::Error(ServerError::new(m))),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 64, 6, |inner| {
        let pairs = prop::collection::vec((inner.clone(), inner.clone()), 0..4);
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Set),
            prop::collection::vec(inner.clone(), 1..6).prop_map(Value::Push),
            pairs.clone().prop_map(Value::Map),
            (pairs, inner).prop_map(|(attributes, v)| Value::Attributed {
                attributes,
                value: Box::new(v)
            }),
        ]
    })
}

fn encode_all(values: &[Value]) -> BytesMut {
    let mut out = BytesMut::new();
    for v in values {
        encode_value(&mut out, v);
    }
    out
}

/// Feeds `bytes` in chunks ending at `cuts` and collects every frame.
fn decode_in_chunks(bytes: &[u8], cuts: &[usize]) -> Vec<Value> {
    let mut decoder = Decoder::new();
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut start = 0;
    for &end in cuts.iter().chain(std::iter::once(&bytes.len())) {
        let end = end.clamp(start, bytes.len());
        buf.extend_from_slice(&bytes[start..end]);
        start = end;
        while let Some(v) = decoder.decode(&mut buf).expect("valid input") {
            frames.push(v);
        }
    }
    assert!(buf.is_empty(), "bytes left over");
    frames
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn values_round_trip(values in prop::collection::vec(value(), 1..8)) {
        let bytes = encode_all(&values);
        let decoded = Decoder::new().decode_all(&bytes).unwrap();
        prop_assert_eq!(decoded, values);
    }

    #[test]
    fn commands_round_trip(args in prop::collection::vec(bytes_strategy(48), 1..10)) {
        let mut out = BytesMut::new();
        encode_command(&mut out, &args);
        args.encode(&mut out);
        let decoded = Decoder::new().decode_all(&out).unwrap();
        let expected = Value::Array(args.iter().cloned().map(Value::BulkString).collect());
        prop_assert_eq!(decoded, vec![expected.clone(), expected]);
    }

    #[test]
    fn any_split_decodes_alike(
        values in prop::collection::vec(value(), 1..6),
        mut cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let bytes = encode_all(&values);
        let mut cuts: Vec<usize> = cuts.drain(..).map(|i| i.index(bytes.len() + 1)).collect();
        cuts.sort_unstable();
        prop_assert_eq!(decode_in_chunks(&bytes, &cuts), values);
    }

    #[test]
    fn byte_by_byte_decodes_alike(values in prop::collection::vec(value(), 1..4)) {
        let bytes = encode_all(&values);
        let cuts: Vec<usize> = (1..bytes.len()).collect();
        prop_assert_eq!(decode_in_chunks(&bytes, &cuts), values);
    }

        #[test]
    fn any_split_and_budget_step_alike(
        values in prop::collection::vec(value(), 1..6),
        mut cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
        budget in 1usize..64,
    ) {
        let bytes = encode_all(&values);
        let mut cuts: Vec<usize> = cuts.drain(..).map(|i| i.index(bytes.len() + 1)).collect();
        cuts.sort_unstable();
        prop_assert_eq!(step_in_chunks(&bytes, &cuts, budget), values);
    }

    /// A reply decodes at a limit of exactly its documented cost, and
    /// fails alone one byte under it, however it is split.
    #[test]
    fn the_reply_limit_is_the_documented_count(
        v in value(),
        cut in any::<prop::sample::Index>(),
    ) {
        let cost = reply_cost(&v, true);
        let mut bytes = encode_all(std::slice::from_ref(&v)).to_vec();
        // The next frame costs nothing, whatever the limit.
        bytes.extend_from_slice(b":7\r\n");
        let cut = cut.index(bytes.len() + 1);
        let next = Value::Integer(7);
        let at = DecoderLimits::default().max_reply_bytes(cost.max(1));
        prop_assert_eq!(limited(&bytes, cut, at), vec![Ok(v.clone()), Ok(next.clone())]);
        if cost > 0 {
            let under = DecoderLimits::default().max_reply_bytes(cost - 1);
            let too_large = ProtocolError::ReplyTooLarge { limit: cost - 1 };
            prop_assert_eq!(limited(&bytes, cut, under), vec![Err(too_large), Ok(next)]);
        }
    }

    /// Asking to skip a frame in progress consumes exactly that frame
    /// (pushes are never skipped), and the next one decodes.
    #[test]
    fn skipping_consumes_one_frame(v in value(), cut in any::<prop::sample::Index>()) {
        let frame = encode_all(std::slice::from_ref(&v));
        let mut bytes = frame.to_vec();
        bytes.extend_from_slice(b"+NEXT\r\n");
        let cut = 1 + cut.index(frame.len() - 1);
        let mut d = Decoder::new();
        let mut buf = BytesMut::from(&bytes[..cut]);
        let mut seen = Vec::new();
        let mut skipping = false;
        for rest in [&bytes[cut..], &[][..]] {
            loop {
                match d.decode_step(&mut buf, usize::MAX).unwrap() {
                    Step::Frame(f) => seen.push(Some(f)),
                    Step::Skipped { push } => {
                        prop_assert!(!push);
                        seen.push(None);
                    }
                    Step::NeedMore => break,
                    other => panic!("unexpected {other:?}"),
                }
            }
            if seen.is_empty() && d.in_frame() {
                skipping = d.skip_frame();
                prop_assert!(!(skipping && v.is_push()));
            }
            buf.extend_from_slice(rest);
        }
        prop_assert!(buf.is_empty());
        let next = Value::SimpleString(Bytes::from_static(b"NEXT"));
        let first = if skipping { None } else { Some(v) };
        prop_assert_eq!(seen, vec![first, Some(next)]);
    }

    /// Arbitrary and mutated input never panics; it decodes, waits, or fails
    /// with a typed error, and a split never changes which.
    #[test]
    fn garbage_never_panics(
        values in prop::collection::vec(value(), 1..4),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        noise in prop::collection::vec(any::<u8>(), 0..64),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = encode_all(&values).to_vec();
        for (at, byte) in flips {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        bytes.extend_from_slice(&noise);
        let limits = DecoderLimits::default().max_bulk_len(1 << 16).max_depth(8);
        let whole = decode_outcome(&bytes, bytes.len(), limits);
        let split = decode_outcome(&bytes, cut.index(bytes.len() + 1), limits);
        prop_assert_eq!(whole, split);
    }
}

/// Like [`decode_in_chunks`], stepping with a byte budget.
fn step_in_chunks(bytes: &[u8], cuts: &[usize], budget: usize) -> Vec<Value> {
    let mut decoder = Decoder::new();
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut start = 0;
    for &end in cuts.iter().chain(std::iter::once(&bytes.len())) {
        let end = end.clamp(start, bytes.len());
        buf.extend_from_slice(&bytes[start..end]);
        start = end;
        loop {
            match decoder.decode_step(&mut buf, budget).expect("valid input") {
                Step::Frame(v) => frames.push(v),
                Step::Paused => {}
                Step::NeedMore => break,
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert!(buf.is_empty(), "bytes left over");
    frames
}

/// Frames and limit errors from `bytes` cut in two at `cut`.
fn limited(bytes: &[u8], cut: usize, limits: DecoderLimits) -> Vec<Result<Value, ProtocolError>> {
    let mut decoder = Decoder::with_limits(limits);
    let mut buf = BytesMut::from(&bytes[..cut]);
    let mut out = Vec::new();
    for rest in [&bytes[cut..], &[][..]] {
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(v)) => out.push(Ok(v)),
                Ok(None) => break,
                Err(e) => out.push(Err(e)),
            }
        }
        buf.extend_from_slice(rest);
    }
    out
}

/// What `DecoderLimits::max_reply_bytes` documents a reply costs:
/// `size_of::<Value>()` per element below the top level, plus the text of
/// string-like values and doubles as encoded.
fn reply_cost(v: &Value, top: bool) -> usize {
    let slot = if top { 0 } else { size_of::<Value>() };
    let pairs = |pairs: &[(Value, Value)]| -> usize {
        pairs
            .iter()
            .map(|(k, v)| reply_cost(k, false) + reply_cost(v, false))
            .sum()
    };
    slot + match v {
        Value::SimpleString(s) | Value::BulkString(s) | Value::BigNumber(s) => s.len(),
        Value::Error(e) => e.message().len(),
        Value::Verbatim { text, .. } => 4 + text.len(),
        Value::Double(_) => encode_all(std::slice::from_ref(v)).len() - 3,
        Value::Array(items) | Value::Set(items) | Value::Push(items) => {
            items.iter().map(|i| reply_cost(i, false)).sum()
        }
        Value::Map(p) => pairs(p),
        Value::Attributed { attributes, value } => pairs(attributes) + reply_cost(value, false),
        _ => 0,
    }
}

/// Frames decoded before the first error (or before running out), and
/// whether an error ended it.
/// Frames are compared by their debug text, since NaN never equals itself.
fn decode_outcome(bytes: &[u8], cut: usize, limits: DecoderLimits) -> (Vec<String>, bool) {
    let mut decoder = Decoder::with_limits(limits);
    let mut buf = BytesMut::from(&bytes[..cut]);
    let mut frames = Vec::new();
    for rest in [&bytes[cut..], &[][..]] {
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(v)) => frames.push(format!("{v:?}")),
                Ok(None) => break,
                Err(_) => return (frames, true),
            }
        }
        buf.extend_from_slice(rest);
    }
    (frames, false)
}

#[test]
fn nan_round_trips_as_nan() {
    let mut out = BytesMut::new();
    encode_value(&mut out, &Value::Double(f64::NAN));
    assert_eq!(&out[..], b",nan\r\n");
    let decoded = Decoder::new().decode_all(&out).unwrap();
    assert!(matches!(decoded[..], [Value::Double(d)] if d.is_nan()));
}
