//! Unit tests of the decoder: values, errors and limits; every frame fed
//! whole, in every split and byte by byte (the whole-frame and the
//! incremental paths agree); the reply limit for every shape; skipping;
//! and the work done per call.

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
    let bytes = b"|1\r\n+key-popularity\r\n*2\r\n$1\r\na\r\n,0.1923\r\n*2\r\n:2039\r\n:9543\r\n";
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
    let before = looked_so_far();
    for _ in 0..len / 4096 {
        buf.extend_from_slice(&[b'x'; 4096]);
        assert_eq!(d.decode(&mut buf).unwrap(), None);
    }
    // The payload is waited for by length, never searched.
    assert_eq!(looked_so_far(), before);
    buf.extend_from_slice(b"\r\n");
    let Some(Value::BulkString(b)) = d.decode(&mut buf).unwrap() else {
        panic!()
    };
    assert_eq!(b.len(), len);
    assert_eq!(d.bytes_needed(), None);
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
    // A huge declared array with few bytes behind it just waits: nothing
    // is reserved from the declared length.
    assert_eq!(
        d.decode(&mut BytesMut::from(&b"*16777216\r\n:1\r\n"[..])),
        Ok(None)
    );
    assert_eq!(
        Decoder::new().decode(&mut BytesMut::from(&b"*16777217\r\n"[..])),
        Err(ProtocolError::AggregateTooLong {
            len: 16777217,
            limit: 1 << 24
        })
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

// ------------------------------------------------ the incremental path --

fn looked_so_far() -> usize {
    super::LOOKED.with(|c| c.get())
}

/// Frames of every type and shape, each one whole frame.
const CORPUS: &[&[u8]] = &[
    b"+OK\r\n",
    b"+\r\n",
    b"-ERR boom\r\n",
    b":0\r\n",
    b":-9223372036854775808\r\n",
    b"$5\r\nhello\r\n",
    b"$0\r\n\r\n",
    b"$4\r\na\r\nb\r\n",
    b"$-1\r\n",
    b"*-1\r\n",
    b"_\r\n",
    b"#t\r\n",
    b",1.5\r\n",
    b",-inf\r\n",
    b"(3492890328409238509324850943850943825024385\r\n",
    b"=15\r\ntxt:Some string\r\n",
    b"!21\r\nSYNTAX invalid syntax\r\n",
    b"*0\r\n",
    b"%0\r\n",
    b"*2\r\n$1\r\na\r\n*1\r\n:1\r\n",
    b"%2\r\n+a\r\n:1\r\n+b\r\n_\r\n",
    b"~2\r\n:1\r\n:2\r\n",
    b">2\r\n+message\r\n$2\r\nhi\r\n",
    b"|1\r\n+key-popularity\r\n*2\r\n$1\r\na\r\n,0.1923\r\n*2\r\n:2039\r\n:9543\r\n",
    b"*2\r\n|1\r\n+k\r\n+v\r\n:1\r\n:2\r\n",
    b"|1\r\n+k\r\n+v\r\n>1\r\n+invalidate\r\n",
    b"*3\r\n$3\r\nfoo\r\n:12\r\n%1\r\n+a\r\n#t\r\n",
    b"*1\r\n*1\r\n*1\r\n*0\r\n",
    b"%1\r\n*2\r\n:1\r\n:2\r\n~1\r\n=7\r\nmkd:abc\r\n",
];

/// What a decoder produced, in order.
#[derive(Debug, PartialEq)]
enum Event {
    Frame(Value),
    TooLarge { push: bool },
    Skipped { push: bool },
    Error(ProtocolError),
}

/// Feeds `bytes` in chunks of `chunk` bytes, stepping with `budget` after
/// each; when `skip` is set, asks to skip every frame in progress.
fn feed(
    limits: DecoderLimits,
    bytes: &[u8],
    chunk: usize,
    budget: usize,
    skip: bool,
) -> (Vec<Event>, usize) {
    let mut d = Decoder::with_limits(limits);
    let mut buf = BytesMut::new();
    let mut events = Vec::new();
    for piece in bytes.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match d.decode_step(&mut buf, budget) {
                Ok(Step::Frame(v)) => events.push(Event::Frame(v)),
                Ok(Step::TooLarge { push }) => events.push(Event::TooLarge { push }),
                Ok(Step::Skipped { push }) => events.push(Event::Skipped { push }),
                Ok(Step::Paused) => {}
                Ok(Step::NeedMore) => {
                    if skip && d.in_frame() {
                        d.skip_frame();
                    }
                    break;
                }
                Err(e) => {
                    events.push(Event::Error(e));
                    return (events, 0);
                }
            }
        }
    }
    (events, buf.len())
}

fn frames(values: Vec<Value>) -> Vec<Event> {
    values.into_iter().map(Event::Frame).collect()
}

#[test]
fn every_split_gives_the_whole_value() {
    for frame in CORPUS {
        let mut stream = frame.to_vec();
        stream.extend_from_slice(b"+NEXT\r\n");
        let whole = Decoder::new().decode_all(&stream).unwrap();
        assert_eq!(whole.len(), 2, "{:?}", String::from_utf8_lossy(frame));
        for cut in 1..stream.len() {
            let mut d = Decoder::new();
            let mut buf = BytesMut::from(&stream[..cut]);
            let mut got = Vec::new();
            while let Some(v) = d.decode(&mut buf).unwrap() {
                got.push(v);
            }
            buf.extend_from_slice(&stream[cut..]);
            while let Some(v) = d.decode(&mut buf).unwrap() {
                got.push(v);
            }
            assert_eq!(
                got,
                whole,
                "cut at {cut} of {:?}",
                String::from_utf8_lossy(frame)
            );
            assert!(buf.is_empty());
        }
        for (chunk, budget) in [(1, usize::MAX), (1, 1), (3, 1), (7, 5), (64, 1)] {
            let (events, left) = feed(DecoderLimits::default(), &stream, chunk, budget, false);
            assert_eq!(
                events,
                frames(whole.clone()),
                "chunks of {chunk}, budget {budget}: {:?}",
                String::from_utf8_lossy(frame)
            );
            assert_eq!(left, 0);
        }
    }
}

/// An `LRANGE`-like array of `n` bulk strings, and its value.
fn bulk_array(n: usize) -> (Vec<u8>, Value) {
    let mut wire = format!("*{n}\r\n").into_bytes();
    let mut items = Vec::new();
    for i in 0..n {
        let s = format!("element-{i:08}");
        wire.extend_from_slice(format!("${}\r\n{s}\r\n", s.len()).as_bytes());
        items.push(bulk(&s));
    }
    (wire, Value::Array(items))
}

#[test]
fn a_frame_larger_than_the_first_look_is_built_and_shares_the_buffer() {
    let (wire, value) = bulk_array(20_000);
    assert!(wire.len() > super::FIRST_LOOK);
    let mut buf = BytesMut::from(&wire[..]);
    let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
    let got = Decoder::new().decode(&mut buf).unwrap().unwrap();
    assert_eq!(got, value);
    let Value::Array(items) = got else { panic!() };
    for item in &items {
        let p = item.as_bytes().unwrap().as_ptr() as usize;
        assert!(range.contains(&p), "a payload was copied");
    }
    for chunk in [4096, 65536, 1 << 20] {
        let (events, left) = feed(DecoderLimits::default(), &wire, chunk, 1 << 16, false);
        assert_eq!(
            events,
            vec![Event::Frame(value.clone())],
            "chunks of {chunk}"
        );
        assert_eq!(left, 0);
    }
}

/// The documented count: 40 bytes per element below the top level, plus
/// text bytes.
const V: usize = size_of::<Value>();

fn shapes() -> Vec<(&'static str, Vec<u8>, usize)> {
    let mut out = Vec::new();
    let mut ints = b"*1000\r\n".to_vec();
    for i in 0..1000 {
        ints.extend_from_slice(format!(":{i}\r\n").as_bytes());
    }
    out.push(("flat integers", ints, 1000 * V));
    let mut nested = b"*10\r\n".to_vec();
    for _ in 0..10 {
        nested.extend_from_slice(b"*10\r\n");
        for _ in 0..10 {
            nested.extend_from_slice(b"*1\r\n:7\r\n");
        }
    }
    out.push(("nested arrays", nested, (10 + 100 + 100) * V));
    let mut map = b"%100\r\n".to_vec();
    for i in 0..100 {
        map.extend_from_slice(format!("+k{i:03}\r\n,{i}.5\r\n").as_bytes());
    }
    let text: usize = (0..100).map(|i| 4 + format!("{i}.5").len()).sum();
    out.push(("map", map, 200 * V + text));
    let mut bulks = b"*4\r\n".to_vec();
    for _ in 0..4 {
        bulks.extend_from_slice(b"$1000\r\n");
        bulks.extend_from_slice(&[b'x'; 1000]);
        bulks.extend_from_slice(b"\r\n");
    }
    out.push(("bulk strings", bulks, 4 * V + 4000));
    let mut one = b"$5000\r\n".to_vec();
    one.extend_from_slice(&[b'y'; 5000]);
    one.extend_from_slice(b"\r\n");
    out.push(("one bulk string", one, 5000));
    out.push((
        "attributes and verbatim",
        b"|1\r\n+ttl\r\n:3\r\n*2\r\n=7\r\ntxt:abc\r\n!3\r\nERR\r\n".to_vec(),
        // +ttl, :3, the array (the attributed value), its two elements.
        5 * V + 3 + 7 + 3,
    ));
    out.push((
        "push",
        b">3\r\n+message\r\n+ch\r\n$2\r\nhi\r\n".to_vec(),
        3 * V + 7 + 2 + 2,
    ));
    out
}

#[test]
fn the_reply_limit_holds_for_every_shape() {
    for (name, wire, cost) in shapes() {
        let push = wire[0] == b'>';
        let mut stream = wire.clone();
        stream.extend_from_slice(b"+NEXT\r\n");
        let next = Event::Frame(simple("NEXT"));
        let value = Decoder::new().decode_all(&wire).unwrap().remove(0);
        for chunk in [1, 7, 4096, stream.len()] {
            let at = DecoderLimits::default().max_reply_bytes(cost);
            let (events, _) = feed(at, &stream, chunk, usize::MAX, false);
            assert_eq!(
                events,
                vec![Event::Frame(value.clone()), Event::Frame(simple("NEXT"))],
                "{name} at its cost ({cost}), chunks of {chunk}"
            );
            let under = DecoderLimits::default().max_reply_bytes(cost - 1);
            let (events, left) = feed(under, &stream, chunk, usize::MAX, false);
            assert_eq!(
                events,
                vec![
                    Event::TooLarge { push },
                    Event::Skipped { push },
                    next.clone_frame()
                ],
                "{name} one byte over the limit, chunks of {chunk}"
            );
            assert_eq!(left, 0);
        }
        // The public API: the error, then the next frame.
        let mut d = Decoder::with_limits(DecoderLimits::default().max_reply_bytes(cost - 1));
        let mut buf = BytesMut::from(&stream[..]);
        assert_eq!(
            d.decode(&mut buf),
            Err(ProtocolError::ReplyTooLarge { limit: cost - 1 })
        );
        assert_eq!(d.decode(&mut buf), Ok(Some(simple("NEXT"))));
    }
}

impl Event {
    fn clone_frame(&self) -> Event {
        match self {
            Event::Frame(v) => Event::Frame(v.clone()),
            _ => unreachable!(),
        }
    }
}

#[test]
fn an_endless_reply_past_the_limit_is_skipped_as_it_arrives() {
    let limit = 64 * 1024;
    let mut d = Decoder::with_limits(DecoderLimits::default().max_reply_bytes(limit));
    let mut buf = BytesMut::from(&b"*16777216\r\n"[..]);
    let mut too_large = 0;
    let chunk: Vec<u8> = b":12345\r\n".repeat(512);
    let mut fed = 0;
    while fed < 8 << 20 {
        buf.extend_from_slice(&chunk);
        fed += chunk.len();
        loop {
            match d.decode_step(&mut buf, 1 << 20).unwrap() {
                Step::TooLarge { push: false } => too_large += 1,
                Step::NeedMore => break,
                Step::Paused => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        // Everything that arrived was consumed.
        assert!(buf.is_empty());
    }
    assert_eq!(too_large, 1);
    assert!(d.is_skipping());
}

#[test]
fn skipping_consumes_exactly_one_frame() {
    for frame in CORPUS {
        let mut stream = frame.to_vec();
        stream.extend_from_slice(b"+NEXT\r\n");
        let whole = Decoder::new().decode_all(&stream).unwrap();
        let push = whole[0].is_push();
        for cut in 1..frame.len() {
            let mut d = Decoder::new();
            let mut buf = BytesMut::from(&stream[..cut]);
            let mut events = Vec::new();
            loop {
                match d.decode_step(&mut buf, usize::MAX).unwrap() {
                    Step::NeedMore => break,
                    Step::Frame(v) => events.push(Event::Frame(v)),
                    other => panic!("unexpected {other:?}"),
                }
            }
            assert!(events.is_empty() && d.in_frame());
            let skipping = d.skip_frame();
            // Pushes are never skipped; nor frames that start with
            // attributes before their value says whether they are a push.
            if push {
                assert!(!skipping, "{cut}: {frame:?}");
            } else if frame[0] != b'|' {
                assert!(skipping, "{cut}: {frame:?}");
            }
            buf.extend_from_slice(&stream[cut..]);
            loop {
                match d.decode_step(&mut buf, usize::MAX).unwrap() {
                    Step::NeedMore => break,
                    Step::Frame(v) => events.push(Event::Frame(v)),
                    Step::Skipped { push } => events.push(Event::Skipped { push }),
                    other => panic!("unexpected {other:?}"),
                }
            }
            let first = if skipping {
                Event::Skipped { push: false }
            } else {
                Event::Frame(whole[0].clone())
            };
            assert_eq!(events, vec![first, Event::Frame(simple("NEXT"))], "{cut}");
            assert!(buf.is_empty());
        }
        // Asking on every byte, from the first: every frame is skipped
        // but pushes (an attributed reply once its value starts).
        let (events, left) = feed(DecoderLimits::default(), &stream, 1, usize::MAX, true);
        let first = if push {
            Event::Frame(whole[0].clone())
        } else {
            Event::Skipped { push: false }
        };
        assert_eq!(events, vec![first, Event::Skipped { push: false }]);
        assert_eq!(left, 0);
    }
}

#[test]
fn an_attributed_reply_is_skipped_once_its_value_starts() {
    let mut d = Decoder::new();
    let mut buf = BytesMut::from(&b"|1\r\n+k\r\n+v\r\n"[..]);
    assert_eq!(d.decode_step(&mut buf, usize::MAX), Ok(Step::NeedMore));
    assert!(!d.skip_frame());
    buf.extend_from_slice(b"*3\r\n:1\r\n");
    assert_eq!(d.decode_step(&mut buf, usize::MAX), Ok(Step::NeedMore));
    assert!(d.skip_frame());
    buf.extend_from_slice(b":2\r\n:3\r\n");
    assert_eq!(
        d.decode_step(&mut buf, usize::MAX),
        Ok(Step::Skipped { push: false })
    );
}

#[test]
fn errors_inside_a_skipped_frame_are_still_reported() {
    for (bytes, error) in [
        (&b"*3\r\n:1\r\n:x\r\n"[..], ProtocolError::InvalidInteger),
        (b"*3\r\n:1\r\n$3\r\nabcd\r\n", ProtocolError::MissingCrlf),
        (
            b"*3\r\n:1\r\n=5\r\nabcde\r\n",
            ProtocolError::InvalidVerbatim,
        ),
        (b"*3\r\n:1\r\n?\r\n", ProtocolError::InvalidType(b'?')),
    ] {
        for chunk in [1, 3, bytes.len()] {
            let mut d = Decoder::new();
            let mut buf = BytesMut::new();
            let mut got = None;
            for piece in bytes.chunks(chunk) {
                buf.extend_from_slice(piece);
                match d.decode_step(&mut buf, usize::MAX) {
                    Ok(Step::NeedMore) => {
                        d.skip_frame();
                    }
                    Ok(other) => panic!("unexpected {other:?}"),
                    Err(e) => {
                        got = Some(e);
                        break;
                    }
                }
            }
            assert_eq!(got.as_ref(), Some(&error), "{bytes:?} in chunks of {chunk}");
        }
    }
}

#[test]
fn work_per_call_is_bounded_by_the_new_bytes() {
    // An array of a million integers fed 4 KiB at a time: each call
    // searches only bytes that arrived since the last one, and the buffer
    // keeps at most one unfinished element.
    let n = 1 << 20;
    let mut wire = format!("*{n}\r\n").into_bytes();
    for i in 0..n {
        wire.extend_from_slice(format!(":{}\r\n", i % 1000).as_bytes());
    }
    let mut d = Decoder::new();
    let mut buf = BytesMut::new();
    let before = looked_so_far();
    let mut got = None;
    for piece in wire.chunks(4096) {
        buf.extend_from_slice(piece);
        if let Some(v) = d.decode(&mut buf).unwrap() {
            got = Some(v);
        }
        assert!(buf.len() < 8, "{} bytes left in the buffer", buf.len());
    }
    let searched = looked_so_far() - before;
    assert!(
        searched <= wire.len() + 4096,
        "searched {searched} bytes for {} on the wire",
        wire.len()
    );
    let Some(Value::Array(items)) = got else {
        panic!()
    };
    assert_eq!(items.len(), n);

    // A long line waiting for its CRLF is searched from where the last
    // call stopped.
    let limits = DecoderLimits::default().max_line_len(8 << 20);
    let mut d = Decoder::with_limits(limits);
    let mut buf = BytesMut::new();
    let before = looked_so_far();
    let len = 4 << 20;
    for _ in 0..len / 4096 {
        buf.extend_from_slice(&[b'a'; 4096]);
        buf[0] = b'+';
        assert_eq!(d.decode(&mut buf).unwrap(), None);
    }
    let searched = looked_so_far() - before;
    assert!(searched <= len + 3 * 4096, "searched {searched} of {len}");
    buf.extend_from_slice(b"\r\n");
    assert!(d.decode(&mut buf).unwrap().is_some());

    // With a budget, a step consumes about that much.
    let mut d = Decoder::new();
    let mut buf = BytesMut::from(&wire[..]);
    let mut steps = 0;
    loop {
        let before = buf.len();
        let step = d.decode_step(&mut buf, 64 * 1024).unwrap();
        assert!(before - buf.len() <= 64 * 1024 + 16);
        steps += 1;
        if matches!(step, Step::Frame(_)) {
            break;
        }
        assert_eq!(step, Step::Paused);
    }
    assert!(steps >= wire.len() / (64 * 1024));
}
