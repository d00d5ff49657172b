//! The sans-io codec (`redcore::resp`, `redcore::cmd`, `redcore::slot`)
//! against what real `redis-server` 7 processes send, read through the
//! harness's blocking [`CodecConn`] in small chunks so that every frame
//! arrives split.
//!
//! Wire shapes a 7.0 server sends for `DEBUG PROTOCOL attrib` / `push`, as
//! asserted below:
//!
//! ```text
//! RESP3 attrib: |1 $14 key-popularity *2 $7 key:123 :90
//!               $39 Some real reply following the attribute
//! RESP3 push:   >2 $16 server-cpu-usage :42          (an out-of-band push)
//!               $40 Some real reply following the push reply   (the reply)
//! RESP2 attrib: $39 Some real reply following the attribute
//! RESP2 push:   -ERR RESP2 is not supported by this command
//! ```

use std::collections::HashMap;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use redcore::cmd::key_positions;
use redcore::resp::encode_command;
use redcore::slot::key_slot;
use redcore::{FromValue, RedirectKind, ServerError, ServerErrorKind, Value};
use redcore_test_support::{CodecConn, RedisCluster, RedisServer, show};

/// What `DEBUG PROTOCOL double` sends: the literal 3.141, not pi.
#[allow(clippy::approx_constant)]
const DEBUG_DOUBLE: f64 = 3.141;

fn bulk(s: &str) -> Value {
    Value::BulkString(Bytes::copy_from_slice(s.as_bytes()))
}

fn simple(s: &str) -> Value {
    Value::SimpleString(Bytes::copy_from_slice(s.as_bytes()))
}

fn ok() -> Value {
    simple("OK")
}

fn ints(xs: &[i64]) -> Vec<Value> {
    xs.iter().map(|&i| Value::Integer(i)).collect()
}

/// The error inside a reply; panics on anything else.
fn server_error(v: &Value) -> ServerError {
    match v {
        Value::Error(e) => e.clone(),
        other => panic!("expected an error reply, got {other:?}"),
    }
}

fn text(v: &Value) -> String {
    String::from_value(v.clone()).unwrap_or_else(|e| panic!("{v:?} as String: {e}"))
}

fn int(v: &Value) -> i64 {
    match v {
        Value::Integer(i) => *i,
        other => panic!("expected an integer, got {other:?}"),
    }
}

fn items(v: &Value) -> &[Value] {
    match v {
        Value::Array(items) => items,
        other => panic!("expected an array, got {other:?}"),
    }
}

fn field_map(v: &Value) -> HashMap<String, Value> {
    HashMap::<String, Value>::from_value(v.clone())
        .unwrap_or_else(|e| panic!("{v:?} as a map: {e}"))
}

/// The types `DEBUG HELP` lists for `DEBUG PROTOCOL <type>`.
fn debug_protocol_types(help: &Value) -> Vec<String> {
    let lines: Vec<String> = items(help).iter().map(text).collect();
    let joined = lines.join(" ");
    let start = joined
        .find("PROTOCOL <type>")
        .expect("DEBUG HELP lists PROTOCOL");
    let after = &joined[start..];
    let list = &after[after.find("can be:").expect("type list") + "can be:".len()..];
    let list = &list[..list.find('.').expect("end of the type list")];
    list.split(',').map(|t| t.trim().to_owned()).collect()
}

#[test]
fn resp3_hello_and_every_debug_protocol_type() {
    let server = RedisServer::start();
    let mut c = CodecConn::small(server.addr());

    let hello = c.call(&["HELLO", "3"]);
    assert!(matches!(hello, Value::Map(_)), "{hello:?}");
    let fields = field_map(&hello);
    assert_eq!(fields["server"], bulk("redis"));
    assert_eq!(fields["proto"], Value::Integer(3));
    assert!(text(&fields["version"]).starts_with('7'), "{fields:?}");
    assert_eq!(fields["role"], bulk("master"));
    assert_eq!(fields["mode"], bulk("standalone"));
    assert!(matches!(fields["id"], Value::Integer(_)), "{fields:?}");
    assert_eq!(fields["modules"], Value::Array(vec![]));

    let help = c.call(&["DEBUG", "HELP"]);
    let types = debug_protocol_types(&help);
    let expected_types = [
        "string", "integer", "double", "bignum", "null", "array", "set", "map", "attrib", "push",
        "verbatim", "true", "false",
    ];
    assert_eq!(types, expected_types, "the types this server supports");

    let cases: Vec<(&str, Vec<Value>, &[u8])> = vec![
        (
            "string",
            vec![bulk("Hello World")],
            b"$11\r\nHello World\r\n",
        ),
        ("integer", vec![Value::Integer(12345)], b":12345\r\n"),
        ("double", vec![Value::Double(DEBUG_DOUBLE)], b",3.141\r\n"),
        (
            "bignum",
            vec![Value::BigNumber(Bytes::from_static(
                b"1234567999999999999999999999999999999",
            ))],
            b"(1234567999999999999999999999999999999\r\n",
        ),
        ("null", vec![Value::Nil], b"_\r\n"),
        (
            "array",
            vec![Value::Array(ints(&[0, 1, 2]))],
            b"*3\r\n:0\r\n:1\r\n:2\r\n",
        ),
        (
            "set",
            vec![Value::Set(ints(&[0, 1, 2]))],
            b"~3\r\n:0\r\n:1\r\n:2\r\n",
        ),
        (
            "map",
            vec![Value::Map(vec![
                (Value::Integer(0), Value::Boolean(false)),
                (Value::Integer(1), Value::Boolean(true)),
                (Value::Integer(2), Value::Boolean(false)),
            ])],
            b"%3\r\n:0\r\n#f\r\n:1\r\n#t\r\n:2\r\n#f\r\n",
        ),
        (
            "attrib",
            vec![Value::Attributed {
                attributes: vec![(
                    bulk("key-popularity"),
                    Value::Array(vec![bulk("key:123"), Value::Integer(90)]),
                )],
                value: Box::new(bulk("Some real reply following the attribute")),
            }],
            b"|1\r\n$14\r\nkey-popularity\r\n*2\r\n$7\r\nkey:123\r\n:90\r\n\
              $39\r\nSome real reply following the attribute\r\n",
        ),
        (
            "push",
            vec![
                Value::Push(vec![bulk("server-cpu-usage"), Value::Integer(42)]),
                bulk("Some real reply following the push reply"),
            ],
            b">2\r\n$16\r\nserver-cpu-usage\r\n:42\r\n\
              $40\r\nSome real reply following the push reply\r\n",
        ),
        (
            "verbatim",
            vec![Value::Verbatim {
                format: *b"txt",
                text: Bytes::from_static(b"This is a verbatim\nstring"),
            }],
            b"=29\r\ntxt:This is a verbatim\nstring\r\n",
        ),
        ("true", vec![Value::Boolean(true)], b"#t\r\n"),
        ("false", vec![Value::Boolean(false)], b"#f\r\n"),
    ];
    let covered: Vec<&str> = cases.iter().map(|(t, ..)| *t).collect();
    assert_eq!(covered, types, "every supported type is checked");
    for (ty, expected, wire) in cases {
        let frames = c.call_collecting_pushes(&["DEBUG", "PROTOCOL", ty]);
        assert_eq!(frames, expected, "DEBUG PROTOCOL {ty}");
        assert_eq!(
            show(c.wire()),
            show(wire),
            "DEBUG PROTOCOL {ty} on the wire"
        );
        assert!(
            c.buffered().is_empty(),
            "{ty}: leftover {:?}",
            show(c.buffered())
        );
    }
    // The attribute is looked through by the helpers.
    let attrib = c.call(&["DEBUG", "PROTOCOL", "attrib"]);
    assert_eq!(
        attrib.as_bytes().map(|b| b.as_ref()),
        Some(&b"Some real reply following the attribute"[..])
    );
    assert_eq!(
        String::from_value(attrib.clone()).unwrap(),
        "Some real reply following the attribute"
    );
    assert_eq!(
        attrib.without_attributes(),
        bulk("Some real reply following the attribute")
    );
    // Still in step afterwards.
    assert_eq!(c.call(&["PING"]), simple("PONG"));
    assert!(c.quiet_for(Duration::from_millis(50)));
}

#[test]
fn resp3_client_tracking_pushes_invalidations() {
    let server = RedisServer::start();
    let mut tracked = CodecConn::resp3(server.addr());
    let mut writer = CodecConn::small(server.addr());

    assert_eq!(tracked.call(&["CLIENT", "TRACKING", "ON"]), ok());
    assert_eq!(tracked.call(&["GET", "trk:a"]), Value::Nil);
    assert_eq!(writer.call(&["SET", "trk:a", "v1"]), ok());
    let push = tracked.read_frame();
    assert_eq!(
        push,
        Value::Push(vec![bulk("invalidate"), Value::Array(vec![bulk("trk:a")])])
    );
    assert!(tracked.buffered().is_empty());

    // The key is tracked again once read again; a second write invalidates again.
    assert_eq!(tracked.call(&["GET", "trk:a"]), bulk("v1"));
    assert_eq!(writer.call(&["DEL", "trk:a"]), Value::Integer(1));
    assert_eq!(
        tracked.read_frame(),
        Value::Push(vec![bulk("invalidate"), Value::Array(vec![bulk("trk:a")])])
    );

    // The same connection writes a key it tracks: 7.0 sends the reply
    // first, then the invalidation push.
    assert_eq!(tracked.call(&["GET", "trk:b"]), Value::Nil);
    tracked.send(&["SET", "trk:b", "v"]);
    let first = tracked.read_frame();
    let second = tracked.read_frame();
    assert_eq!(first, ok(), "the reply comes first");
    assert_eq!(
        second,
        Value::Push(vec![bulk("invalidate"), Value::Array(vec![bulk("trk:b")])])
    );
    assert_eq!(
        show(tracked.wire()),
        show(b"+OK\r\n>2\r\n$10\r\ninvalidate\r\n*1\r\n$5\r\ntrk:b\r\n")
    );

    // FLUSHDB invalidates everything: the key list is a null.
    assert_eq!(tracked.call(&["GET", "trk:b"]), bulk("v"));
    assert_eq!(writer.call(&["FLUSHDB"]), ok());
    assert_eq!(
        tracked.read_frame(),
        Value::Push(vec![bulk("invalidate"), Value::Nil])
    );
    assert_eq!(tracked.call(&["PING"]), simple("PONG"));
    assert!(tracked.quiet_for(Duration::from_millis(50)));
}

#[test]
fn resp3_pubsub_push_shapes() {
    let server = RedisServer::start();
    let mut sub = CodecConn::resp3(server.addr());
    let mut publisher = CodecConn::small(server.addr());

    sub.send(&["SUBSCRIBE", "chan:1"]);
    assert_eq!(
        sub.read_frame(),
        Value::Push(vec![bulk("subscribe"), bulk("chan:1"), Value::Integer(1)])
    );
    assert_eq!(
        publisher.call(&["PUBLISH", "chan:1", "hi\r\nthere"]),
        Value::Integer(1)
    );
    assert_eq!(
        sub.read_frame(),
        Value::Push(vec![bulk("message"), bulk("chan:1"), bulk("hi\r\nthere")])
    );
    // A RESP3 subscriber may run ordinary commands; their replies are not pushes.
    assert_eq!(sub.call(&["PING"]), simple("PONG"));
    sub.send(&["UNSUBSCRIBE", "chan:1"]);
    assert_eq!(
        sub.read_frame(),
        Value::Push(vec![bulk("unsubscribe"), bulk("chan:1"), Value::Integer(0)])
    );
    assert!(sub.quiet_for(Duration::from_millis(50)));
}

#[test]
fn resp2_shapes_and_error_kinds() {
    let server = RedisServer::start();
    let mut c = CodecConn::small(server.addr());

    let cases: Vec<(&str, Value, &[u8])> = vec![
        ("string", bulk("Hello World"), b"$11\r\nHello World\r\n"),
        ("integer", Value::Integer(12345), b":12345\r\n"),
        ("double", bulk("3.141"), b"$5\r\n3.141\r\n"),
        (
            "bignum",
            bulk("1234567999999999999999999999999999999"),
            b"$37\r\n1234567999999999999999999999999999999\r\n",
        ),
        ("null", Value::Nil, b"$-1\r\n"),
        (
            "array",
            Value::Array(ints(&[0, 1, 2])),
            b"*3\r\n:0\r\n:1\r\n:2\r\n",
        ),
        (
            "set",
            Value::Array(ints(&[0, 1, 2])),
            b"*3\r\n:0\r\n:1\r\n:2\r\n",
        ),
        // The map flattens to key, value, ...; its booleans become 0/1.
        (
            "map",
            Value::Array(ints(&[0, 0, 1, 1, 2, 0])),
            b"*6\r\n:0\r\n:0\r\n:1\r\n:1\r\n:2\r\n:0\r\n",
        ),
        // The attribute is dropped in RESP2.
        (
            "attrib",
            bulk("Some real reply following the attribute"),
            b"$39\r\nSome real reply following the attribute\r\n",
        ),
        (
            "verbatim",
            bulk("This is a verbatim\nstring"),
            b"$25\r\nThis is a verbatim\nstring\r\n",
        ),
        ("true", Value::Integer(1), b":1\r\n"),
        ("false", Value::Integer(0), b":0\r\n"),
    ];
    for (ty, expected, wire) in cases {
        assert_eq!(
            c.call(&["DEBUG", "PROTOCOL", ty]),
            expected,
            "DEBUG PROTOCOL {ty}"
        );
        assert_eq!(
            show(c.wire()),
            show(wire),
            "DEBUG PROTOCOL {ty} on the wire"
        );
    }
    // Push cannot be expressed in RESP2: the server answers with an error.
    let push = server_error(&c.call(&["DEBUG", "PROTOCOL", "push"]));
    assert_eq!(push.kind(), ServerErrorKind::Other);
    assert_eq!(
        push.message(),
        b"ERR RESP2 is not supported by this command"
    );

    // The RESP2 map converts like a RESP3 one.
    let map = c.call(&["DEBUG", "PROTOCOL", "map"]);
    let map = HashMap::<i64, bool>::from_value(map).unwrap();
    assert_eq!(map, HashMap::from([(0, false), (1, true), (2, false)]));
    assert!(bool::from_value(c.call(&["DEBUG", "PROTOCOL", "true"])).unwrap());
    assert_eq!(
        f64::from_value(c.call(&["DEBUG", "PROTOCOL", "double"])).unwrap(),
        DEBUG_DOUBLE
    );

    // A timed-out blocking pop is the RESP2 null array.
    assert_eq!(c.call(&["BLPOP", "r2:missing", "0.01"]), Value::Nil);
    assert_eq!(show(c.wire()), show(b"*-1\r\n"));

    let unknown = server_error(&c.call(&["NOSUCHCOMMAND", "x"]));
    assert_eq!(unknown.kind(), ServerErrorKind::Other);
    assert_eq!(unknown.code(), b"ERR");
    assert!(
        unknown
            .message_lossy()
            .starts_with("ERR unknown command 'NOSUCHCOMMAND'")
    );

    assert_eq!(c.call(&["SET", "r2:s", "x"]), ok());
    let wrongtype = server_error(&c.call(&["LPUSH", "r2:s", "y"]));
    assert_eq!(wrongtype.kind(), ServerErrorKind::WrongType);
    assert_eq!(
        wrongtype.message(),
        b"WRONGTYPE Operation against a key holding the wrong kind of value"
    );

    let exec = server_error(&c.call(&["EXEC"]));
    assert_eq!(exec.kind(), ServerErrorKind::Other);
    assert_eq!(exec.message(), b"ERR EXEC without MULTI");

    // A command error inside MULTI aborts the transaction.
    assert_eq!(c.call(&["MULTI"]), ok());
    let arity = server_error(&c.call(&["GET"]));
    assert_eq!(arity.kind(), ServerErrorKind::Other);
    assert_eq!(
        arity.message(),
        b"ERR wrong number of arguments for 'get' command"
    );
    assert_eq!(c.call(&["SET", "r2:t", "1"]), simple("QUEUED"));
    let abort = server_error(&c.call(&["EXEC"]));
    assert_eq!(abort.kind(), ServerErrorKind::ExecAbort);
    assert_eq!(
        abort.message(),
        b"EXECABORT Transaction discarded because of previous errors."
    );
    assert_eq!(c.call(&["EXISTS", "r2:t"]), Value::Integer(0));

    // A runtime error inside EXEC is an element of the EXEC array.
    assert_eq!(c.call(&["MULTI"]), ok());
    assert_eq!(c.call(&["SET", "r2:t", "1"]), simple("QUEUED"));
    assert_eq!(c.call(&["LPUSH", "r2:s", "y"]), simple("QUEUED"));
    assert_eq!(c.call(&["INCR", "r2:t"]), simple("QUEUED"));
    let results = c.call(&["EXEC"]);
    let results = items(&results);
    assert_eq!(results.len(), 3, "{results:?}");
    assert_eq!(results[0], ok());
    assert_eq!(server_error(&results[1]).kind(), ServerErrorKind::WrongType);
    assert_eq!(results[2], Value::Integer(2));

    // NOSCRIPT classifies too.
    let noscript =
        server_error(&c.call(&["EVALSHA", "0123456789012345678901234567890123456789", "0"]));
    assert_eq!(noscript.kind(), ServerErrorKind::NoScript);
    assert_eq!(c.call(&["PING"]), simple("PONG"));
    assert!(c.quiet_for(Duration::from_millis(50)));
}

#[test]
fn auth_errors_are_classified() {
    let server = RedisServer::builder()
        .password("secret")
        .acl_user_rules("ro", "on >pw ~cache:* +get")
        .start();

    let mut c = CodecConn::small(server.addr());
    let noauth = server_error(&c.call(&["GET", "x"]));
    assert_eq!(noauth.kind(), ServerErrorKind::NoAuth, "{noauth:?}");
    assert_eq!(noauth.message(), b"NOAUTH Authentication required.");
    // HELLO without credentials on a password server is NOAUTH too.
    let hello = server_error(&c.call(&["HELLO", "3"]));
    assert_eq!(hello.kind(), ServerErrorKind::NoAuth, "{hello:?}");
    let wrong = server_error(&c.call(&["AUTH", "wrong"]));
    assert_eq!(wrong.kind(), ServerErrorKind::WrongPass, "{wrong:?}");
    assert_eq!(
        wrong.message(),
        b"WRONGPASS invalid username-password pair or user is disabled."
    );
    let hello_wrong = server_error(&c.call(&["HELLO", "3", "AUTH", "default", "nope"]));
    assert_eq!(
        hello_wrong.kind(),
        ServerErrorKind::WrongPass,
        "{hello_wrong:?}"
    );
    assert_eq!(c.call(&["AUTH", "secret"]), ok());
    assert_eq!(c.call(&["GET", "x"]), Value::Nil);

    let mut ro = CodecConn::small(server.addr());
    assert_eq!(ro.call(&["AUTH", "ro", "pw"]), ok());
    assert_eq!(ro.call(&["GET", "cache:1"]), Value::Nil);
    let set = server_error(&ro.call(&["SET", "cache:1", "x"]));
    assert_eq!(set.kind(), ServerErrorKind::NoPerm, "{set:?}");
    assert_eq!(
        set.message(),
        b"NOPERM this user has no permissions to run the 'set' command"
    );
    let key = server_error(&ro.call(&["GET", "other:1"]));
    assert_eq!(key.kind(), ServerErrorKind::NoPerm, "{key:?}");
    assert_eq!(
        key.message(),
        b"NOPERM this user has no permissions to access one of the keys used as arguments"
    );

    // RESP3 after authenticating in HELLO: the same errors, same kinds.
    let mut ro3 = CodecConn::small(server.addr());
    let hello = ro3.call(&["HELLO", "3", "AUTH", "ro", "pw"]);
    assert_eq!(field_map(&hello)["proto"], Value::Integer(3));
    let set = server_error(&ro3.call(&["SET", "cache:1", "x"]));
    assert_eq!(set.kind(), ServerErrorKind::NoPerm, "{set:?}");
}

/// 4 MiB of random bytes with CRLFs and RESP-looking text inside.
fn large_value(len: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(0x5eed_1a29e);
    let mut value = vec![0u8; len];
    rng.fill(&mut value);
    let traps: [&[u8]; 5] = [b"\r\n", b"$-1\r\n", b"*3\r\n:1\r\n", b"\r", b"\n"];
    for i in 0..2000 {
        let trap = traps[i % traps.len()];
        let at = rng.usize(..len - trap.len());
        value[at..at + trap.len()].copy_from_slice(trap);
    }
    value[..2].copy_from_slice(b"\r\n");
    value[len - 2..].copy_from_slice(b"\r\n");
    value
}

#[test]
fn large_bulk_in_64k_reads() {
    let server = RedisServer::start();
    let len = 4 * 1024 * 1024;
    let value = large_value(len);
    let key = b"large:blob".as_slice();

    let mut c = CodecConn::connect(server.addr(), 64 * 1024);
    assert_eq!(c.call(&[b"SET".as_slice(), key, &value]), ok());
    assert_eq!(
        c.call(&[b"STRLEN".as_slice(), key]),
        Value::Integer(len as i64)
    );

    c.send(&[b"GET".as_slice(), key]);
    let header = format!("${len}\r\n");
    let total = header.len() + len + 2;
    let mut needed = Vec::new();
    let reply = loop {
        if let Some(v) = c.try_decode() {
            break v;
        }
        if let Some(n) = c.decoder().bytes_needed() {
            needed.push(n);
        }
        c.read_more();
    };
    assert!(c.buffered().is_empty());
    assert!(c.reads() >= len / (64 * 1024), "{} reads", c.reads());
    // Known from the first read that holds the header on, and unchanged.
    assert!(!needed.is_empty(), "bytes_needed never reported");
    assert!(
        needed.iter().all(|&n| n == total),
        "bytes_needed {needed:?}, want {total}"
    );
    assert!(
        needed.len() >= c.reads() - 2,
        "{} of {} reads",
        needed.len(),
        c.reads()
    );
    match reply {
        Value::BulkString(b) => {
            assert_eq!(b.len(), len);
            assert!(b[..] == value[..], "the 4 MiB value differs");
        }
        other => panic!("GET: {:?}", other.type_name()),
    }

    // The same value twice inside a RESP3 array, around a null.
    assert!(matches!(c.call(&["HELLO", "3"]), Value::Map(_)));
    let mget = c.call(&[b"MGET".as_slice(), key, b"large:missing", key]);
    let items = items(&mget);
    assert_eq!(items.len(), 3);
    assert!(items[0].as_bytes().is_some_and(|b| b[..] == value[..]));
    assert_eq!(items[1], Value::Nil);
    assert!(items[2].as_bytes().is_some_and(|b| b[..] == value[..]));
}

#[test]
fn ten_thousand_pipelined_replies_in_7_byte_reads() {
    let server = RedisServer::start();
    let mut c = CodecConn::small(server.addr());

    let n = 5000;
    let mut out = BytesMut::new();
    for _ in 0..n {
        encode_command(&mut out, &["INCR", "pipe:counter"]);
        encode_command(&mut out, &["GET", "pipe:counter"]);
    }
    c.write_raw(&out);
    for i in 1..=n {
        assert_eq!(c.read_frame(), Value::Integer(i), "INCR #{i}");
        assert_eq!(c.read_frame(), bulk(&i.to_string()), "GET #{i}");
    }
    assert!(c.buffered().is_empty());
    assert!(
        c.reads() > c.wire().len() / 7,
        "{} reads of {} bytes",
        c.reads(),
        c.wire().len()
    );
    assert!(c.quiet_for(Duration::from_millis(50)));

    // One large nested reply, also in 7-byte reads: 10,000 list elements,
    // then the same through RESP3 as ZRANGE WITHSCORES pairs of doubles.
    let elements: Vec<String> = (0..10_000).map(|i| format!("e{i}\r\n{i}")).collect();
    let mut rpush = vec!["RPUSH".to_owned(), "pipe:list".to_owned()];
    rpush.extend(elements.iter().cloned());
    assert_eq!(c.call(&rpush), Value::Integer(10_000));
    let range = c.call(&["LRANGE", "pipe:list", "0", "-1"]);
    let got = Vec::<String>::from_value(range).unwrap();
    assert_eq!(got, elements);

    let mut zadd = vec!["ZADD".to_owned(), "pipe:z".to_owned()];
    for i in 0..2000 {
        zadd.push(format!("{}.5", i));
        zadd.push(format!("m{i}"));
    }
    assert_eq!(c.call(&zadd), Value::Integer(2000));
    assert!(matches!(c.call(&["HELLO", "3"]), Value::Map(_)));
    let z = c.call(&["ZRANGE", "pipe:z", "0", "-1", "WITHSCORES"]);
    let pairs = items(&z);
    assert_eq!(pairs.len(), 2000);
    for (i, pair) in pairs.iter().enumerate() {
        assert_eq!(
            *pair,
            Value::Array(vec![bulk(&format!("m{i}")), Value::Double(i as f64 + 0.5)])
        );
    }
}

/// `CLUSTER SHARDS`: 3 shards, each a master and a replica, covering every
/// slot; maps in RESP3, flat arrays in RESP2.
fn check_shards(reply: &Value, resp3: bool, cluster: &RedisCluster) {
    let ports: Vec<i64> = cluster
        .nodes()
        .iter()
        .map(|a| i64::from(a.port()))
        .collect();
    let shards = items(reply);
    assert_eq!(shards.len(), 3, "{reply:?}");
    let mut ranges = Vec::new();
    for shard in shards {
        assert_eq!(
            matches!(shard, Value::Map(_)),
            resp3,
            "shard shape: {shard:?}"
        );
        assert_eq!(
            matches!(shard, Value::Array(_)),
            !resp3,
            "shard shape: {shard:?}"
        );
        let shard = field_map(shard);
        let mut keys: Vec<&str> = shard.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["nodes", "slots"]);
        let bounds: Vec<i64> = items(&shard["slots"]).iter().map(int).collect();
        assert!(!bounds.is_empty() && bounds.len() % 2 == 0, "{bounds:?}");
        let mut shard_ranges: Vec<(i64, i64)> = bounds.chunks(2).map(|p| (p[0], p[1])).collect();
        let mut roles = Vec::new();
        for node in items(&shard["nodes"]) {
            assert_eq!(matches!(node, Value::Map(_)), resp3, "node shape: {node:?}");
            let node = field_map(node);
            let id = text(&node["id"]);
            assert_eq!(id.len(), 40, "{node:?}");
            assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{node:?}");
            let port = int(&node["port"]);
            assert!(ports.contains(&port), "{node:?}");
            assert_eq!(node["ip"], bulk("127.0.0.1"));
            assert_eq!(node["endpoint"], bulk("127.0.0.1"));
            assert!(
                matches!(node["replication-offset"], Value::Integer(_)),
                "{node:?}"
            );
            let role = text(&node["role"]);
            let health = text(&node["health"]);
            assert_eq!(health, "online", "{role}: {node:?}");
            if role == "master" {
                let (start, _) = shard_ranges[0];
                let owner = cluster.slot_owner(start as u16);
                assert_eq!(i64::from(owner.port()), port, "master of slot {start}");
            }
            roles.push(role);
        }
        roles.sort();
        assert_eq!(roles, ["master", "replica"]);
        ranges.append(&mut shard_ranges);
    }
    check_coverage(ranges);
}

/// Ranges cover 0..=16383 exactly once.
fn check_coverage(mut ranges: Vec<(i64, i64)>) {
    ranges.sort_unstable();
    let mut next = 0;
    for &(start, end) in &ranges {
        assert_eq!(start, next, "gap or overlap in {ranges:?}");
        assert!(end >= start, "{ranges:?}");
        next = end + 1;
    }
    assert_eq!(next, 16384, "{ranges:?}");
}

/// `CLUSTER SLOTS`: ranges of `[start, end, master, replica]`, each node
/// `[ip, port, id, metadata]` with an empty metadata map (an empty array in
/// RESP2).
fn check_slots(reply: &Value, resp3: bool, cluster: &RedisCluster) {
    let ports: Vec<i64> = cluster
        .nodes()
        .iter()
        .map(|a| i64::from(a.port()))
        .collect();
    let mut ranges = Vec::new();
    for range in items(reply) {
        let range = items(range);
        assert_eq!(range.len(), 4, "master + one replica: {range:?}");
        let (start, end) = (int(&range[0]), int(&range[1]));
        ranges.push((start, end));
        for (i, node) in range[2..].iter().enumerate() {
            let node = items(node);
            assert_eq!(node.len(), 4, "{node:?}");
            assert_eq!(node[0], bulk("127.0.0.1"));
            let port = int(&node[1]);
            assert!(ports.contains(&port), "{node:?}");
            assert_eq!(text(&node[2]).len(), 40, "{node:?}");
            let empty_meta = if resp3 {
                Value::Map(vec![])
            } else {
                Value::Array(vec![])
            };
            assert_eq!(node[3], empty_meta, "networking metadata");
            if i == 0 {
                let owner = cluster.slot_owner(start as u16);
                assert_eq!(i64::from(owner.port()), port, "master of {start}-{end}");
            }
        }
    }
    assert_eq!(ranges.len(), 3, "{ranges:?}");
    check_coverage(ranges);
}

/// Keys of every kind for `CLUSTER KEYSLOT`: random text, hash tags,
/// braces in odd places, empty tags, binary, long.
fn keyslot_keys() -> Vec<Vec<u8>> {
    let mut rng = fastrand::Rng::with_seed(16384);
    let mut keys: Vec<Vec<u8>> = [
        "",
        "{}",
        "{",
        "}",
        "{}{a}",
        "a{}b",
        "{{a}}",
        "{a}{b}",
        "}{a}",
        "a{b",
        "{}}",
        "{{}}",
        "foo{}{bar}",
        "foo{{bar}}zap",
        "foo{bar}{zap}",
        "{user1000}.following",
        "{user1000}.followers",
        "foo",
        "bar",
        "123456789",
        "{a",
        "a}",
        "}{",
        "{}{}",
        "{{",
        "}}",
        "{ }",
        "{\r\n}",
    ]
    .iter()
    .map(|k| k.as_bytes().to_vec())
    .collect();
    let alnum = |rng: &mut fastrand::Rng, n: usize| -> Vec<u8> {
        (0..n).map(|_| rng.alphanumeric() as u8).collect()
    };
    for _ in 0..500 {
        let n = rng.usize(0..30);
        keys.push(alnum(&mut rng, n));
    }
    for _ in 0..500 {
        let (a, b, c) = (rng.usize(0..8), rng.usize(0..10), rng.usize(0..8));
        let mut key = alnum(&mut rng, a);
        key.push(b'{');
        key.extend(alnum(&mut rng, b));
        key.push(b'}');
        key.extend(alnum(&mut rng, c));
        keys.push(key);
    }
    for _ in 0..450 {
        let n = rng.usize(1..14);
        keys.push((0..n).map(|_| b"{}ab"[rng.usize(0..4)]).collect());
    }
    for _ in 0..450 {
        let n = rng.usize(0..40);
        keys.push((0..n).map(|_| rng.u8(..)).collect());
    }
    for _ in 0..50 {
        let n = rng.usize(500..5000);
        let mut key: Vec<u8> = (0..n).map(|_| rng.u8(..)).collect();
        if rng.bool() {
            let at = rng.usize(0..n);
            key[at] = b'{';
        }
        keys.push(key);
    }
    keys
}

#[test]
fn cluster_topology_keyslots_and_redirects() {
    let cluster = RedisCluster::start();
    assert_eq!(cluster.len(), 6);
    // Replicas that replicated nothing yet are missing from the replies.
    cluster.warm_up();

    // Topology replies, RESP2 and RESP3.
    let mut c2 = CodecConn::small(cluster.node(0).addr());
    let mut c3 = CodecConn::resp3(cluster.node(1).addr());
    check_shards(&c2.call(&["CLUSTER", "SHARDS"]), false, &cluster);
    check_shards(&c3.call(&["CLUSTER", "SHARDS"]), true, &cluster);
    check_slots(&c2.call(&["CLUSTER", "SLOTS"]), false, &cluster);
    check_slots(&c3.call(&["CLUSTER", "SLOTS"]), true, &cluster);

    // CLUSTER KEYSLOT for ~2,000 keys, pipelined in one write.
    let keys = keyslot_keys();
    assert!(keys.len() >= 1900, "{}", keys.len());
    let mut out = BytesMut::new();
    for key in &keys {
        encode_command(&mut out, &[b"CLUSTER".as_slice(), b"KEYSLOT", key]);
    }
    c2.write_raw(&out);
    let mut wrong = Vec::new();
    for key in &keys {
        let server = int(&c2.read_frame());
        let ours = key_slot(key);
        if i64::from(ours) != server || redcore_test_support::key_slot(key) != ours {
            wrong.push(format!(
                "{:?}: server {server}, redcore {ours}, harness {}",
                show(key),
                redcore_test_support::key_slot(key)
            ));
        }
    }
    assert!(c2.buffered().is_empty());
    assert!(
        wrong.is_empty(),
        "{} slot mismatches:\n{}",
        wrong.len(),
        wrong.join("\n")
    );

    // MOVED from every node that does not own the slot (replicas of the
    // owner included), in both protocols.
    let mut conns: Vec<CodecConn> = (0..cluster.len())
        .map(|i| {
            if i % 2 == 0 {
                CodecConn::small(cluster.node(i).addr())
            } else {
                CodecConn::resp3(cluster.node(i).addr())
            }
        })
        .collect();
    for i in 0..20 {
        let key = format!("moved:{i}");
        let slot = key_slot(key.as_bytes());
        let owner = cluster.slot_owner_index(slot);
        for (n, conn) in conns.iter_mut().enumerate() {
            let reply = conn.call(&["GET", key.as_str()]);
            if n == owner {
                assert_eq!(reply, Value::Nil, "{key} on its owner");
                continue;
            }
            let err = server_error(&reply);
            assert_eq!(
                err.kind(),
                ServerErrorKind::Moved,
                "{key} on node {n}: {err:?}"
            );
            let redirect = err.redirect().expect("MOVED parses");
            assert_eq!(redirect.kind, RedirectKind::Moved);
            assert_eq!(redirect.slot, slot, "{err:?}");
            assert_eq!(redirect.host, "127.0.0.1", "{err:?}");
            assert_eq!(redirect.port, cluster.slot_owner(slot).port(), "{err:?}");
            assert_eq!(
                err.message_lossy(),
                format!("MOVED {slot} 127.0.0.1:{}", redirect.port)
            );
        }
    }

    // CROSSSLOT has no kind of its own.
    let owner = cluster.slot_owner_index(key_slot(b"a"));
    let cross = server_error(&conns[owner].call(&["MGET", "a", "b"]));
    assert_eq!(cross.kind(), ServerErrorKind::Other, "{cross:?}");
    assert_eq!(cross.code(), b"CROSSSLOT");

    // ASK: migrate one slot from its owner to another master.
    let present = "{askme}present";
    let absent = "{askme}absent";
    let slot = key_slot(b"askme");
    let src = cluster.slot_owner_index(slot);
    let dst = *cluster
        .master_indices()
        .iter()
        .find(|&&m| m != src)
        .expect("another master");
    let (src_id, dst_id) = (cluster.node_id(src), cluster.node_id(dst));
    let slot_arg = slot.to_string();
    assert_eq!(conns[src].call(&["SET", present, "here"]), ok());
    assert_eq!(
        conns[dst].call(&["CLUSTER", "SETSLOT", &slot_arg, "IMPORTING", &src_id]),
        ok()
    );
    assert_eq!(
        conns[src].call(&["CLUSTER", "SETSLOT", &slot_arg, "MIGRATING", &dst_id]),
        ok()
    );
    let dst_port = cluster.node(dst).port();
    let src_port = cluster.node(src).port();
    // A key still on the source is served there.
    assert_eq!(conns[src].call(&["GET", present]), bulk("here"));
    // A key not on the source: ASK to the target.
    let ask = server_error(&conns[src].call(&["GET", absent]));
    assert_eq!(ask.kind(), ServerErrorKind::Ask, "{ask:?}");
    let redirect = ask.redirect().expect("ASK parses");
    assert_eq!(redirect.kind, RedirectKind::Ask);
    assert_eq!((redirect.slot, redirect.port), (slot, dst_port), "{ask:?}");
    assert_eq!(redirect.host, "127.0.0.1");
    assert_eq!(
        ask.message_lossy(),
        format!("ASK {slot} 127.0.0.1:{dst_port}")
    );
    // Some keys there, some not: TRYAGAIN.
    let tryagain = server_error(&conns[src].call(&["MGET", present, absent]));
    assert_eq!(tryagain.kind(), ServerErrorKind::TryAgain, "{tryagain:?}");
    // The target answers MOVED (back to the source) without ASKING...
    let moved = server_error(&conns[dst].call(&["GET", absent]));
    assert_eq!(moved.kind(), ServerErrorKind::Moved, "{moved:?}");
    assert_eq!(
        moved.redirect().map(|r| (r.slot, r.port)),
        Some((slot, src_port))
    );
    // ...and serves the key after ASKING.
    assert_eq!(conns[dst].call(&["ASKING"]), ok());
    assert_eq!(conns[dst].call(&["GET", absent]), Value::Nil);
    for i in [src, dst] {
        assert_eq!(
            conns[i].call(&["CLUSTER", "SETSLOT", &slot_arg, "STABLE"]),
            ok()
        );
    }
    assert_eq!(conns[src].call(&["GET", present]), bulk("here"));
    assert_eq!(conns[src].call(&["GET", absent]), Value::Nil);
}

/// The keys `COMMAND GETKEYS` finds, by name; "no key arguments" is none.
fn server_keys(c: &mut CodecConn, args: &[&str]) -> Result<Vec<String>, String> {
    let mut getkeys = vec!["COMMAND", "GETKEYS"];
    getkeys.extend_from_slice(args);
    match c.call(&getkeys) {
        Value::Array(keys) => Ok(keys.iter().map(text).collect()),
        Value::Error(e) if e.message() == b"ERR The command has no key arguments" => Ok(vec![]),
        other => Err(format!("server: {other:?}")),
    }
}

/// Our key positions, as the argument strings at those positions.
fn our_keys(args: &[&str]) -> Result<(Vec<usize>, Vec<String>), String> {
    let positions = key_positions(&args).map_err(|e| format!("redcore: {e}"))?;
    let indices: Vec<usize> = positions.iter().collect();
    let names = indices
        .iter()
        .map(|&i| {
            args.get(i)
                .map(|a| a.to_string())
                .ok_or(format!("index {i} out of range"))
        })
        .collect::<Result<_, _>>()?;
    Ok((indices, names))
}

#[test]
fn key_positions_match_command_getkeys() {
    let server = RedisServer::start();
    let mut c = CodecConn::small(server.addr());
    let sha = "e0e1f9fabfc9d4800c877a703b823ac0578ff8db";
    // Every argument that is a key has a name no other argument has, so
    // names map back to positions unambiguously.
    let commands: &[&[&str]] = &[
        &["GET", "k1"],
        &["SET", "k1", "v", "EX", "10", "NX"],
        &["SET", "k1", "v", "GET"],
        &["GETEX", "k1", "PERSIST"],
        &["GETDEL", "k1"],
        &["MGET", "k1", "k2", "k3"],
        &["MSET", "k1", "v1", "k2", "v2", "k3", "v3"],
        &["MSETNX", "k1", "v1", "k2", "v2"],
        &["DEL", "k1", "k2", "k3"],
        &["UNLINK", "k1", "k2"],
        &["EXISTS", "k1", "k2"],
        &["TOUCH", "k1", "k2"],
        &["WATCH", "k1", "k2"],
        &["EXPIRE", "k1", "10"],
        &["HSET", "k1", "f", "v"],
        &["BLPOP", "k1", "k2", "0"],
        &["BRPOP", "k1", "1.5"],
        &["BZPOPMIN", "k1", "k2", "0"],
        &["EVAL", "return 1", "2", "k1", "k2", "a1"],
        &["EVALSHA", sha, "1", "k1", "a1"],
        &["EVAL_RO", "return 1", "1", "k1"],
        &["EVALSHA", sha, "0", "a1"],
        &["FCALL", "f", "2", "k1", "k2", "a1"],
        &["FCALL_RO", "f", "1", "k1"],
        &["ZUNIONSTORE", "d1", "2", "k1", "k2", "WEIGHTS", "1", "2"],
        &["ZINTERSTORE", "d1", "2", "k1", "k2"],
        &["ZDIFFSTORE", "d1", "2", "k1", "k2"],
        &["ZINTER", "2", "k1", "k2", "WITHSCORES"],
        &["ZUNION", "2", "k1", "k2"],
        &["ZINTERCARD", "2", "k1", "k2", "LIMIT", "1"],
        &["ZMPOP", "1", "k1", "MAX"],
        &["BZMPOP", "0", "2", "k1", "k2", "MIN"],
        &["LMPOP", "2", "k1", "k2", "LEFT", "COUNT", "2"],
        &["BLMPOP", "0", "2", "k1", "k2", "RIGHT"],
        &["SINTERCARD", "2", "k1", "k2", "LIMIT", "5"],
        &["XREAD", "COUNT", "2", "STREAMS", "k1", "k2", "0", "0"],
        &["XREAD", "COUNT", "2", "BLOCK", "10", "STREAMS", "k1", "$"],
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "c",
            "COUNT",
            "1",
            "STREAMS",
            "k1",
            "k2",
            ">",
            ">",
        ],
        &["XADD", "k1", "*", "f", "v"],
        &["XGROUP", "CREATE", "k1", "g", "$", "MKSTREAM"],
        &["XINFO", "STREAM", "k1", "FULL"],
        &["SORT", "k1", "LIMIT", "0", "10", "ALPHA"],
        &["SORT", "k1", "BY", "w_*", "GET", "o_*", "STORE", "d1"],
        &["SORT_RO", "k1"],
        &["OBJECT", "ENCODING", "k1"],
        &["OBJECT", "FREQ", "k1"],
        &["MEMORY", "USAGE", "k1", "SAMPLES", "5"],
        &["LMOVE", "k1", "k2", "LEFT", "RIGHT"],
        &["BLMOVE", "k1", "k2", "LEFT", "RIGHT", "0"],
        &["RPOPLPUSH", "k1", "k2"],
        &["COPY", "k1", "k2", "DB", "0", "REPLACE"],
        &["SMOVE", "k1", "k2", "m"],
        &["RENAME", "k1", "k2"],
        &["RENAMENX", "k1", "k2"],
        &["LCS", "k1", "k2", "LEN"],
        &[
            "GEOSEARCHSTORE",
            "d1",
            "k1",
            "FROMLONLAT",
            "0",
            "0",
            "BYRADIUS",
            "10",
            "km",
        ],
        &["GEORADIUS", "k1", "0", "0", "10", "km", "STORE", "d1"],
        &["ZRANGESTORE", "d1", "k1", "0", "-1"],
        &["SINTER", "k1", "k2"],
        &["SUNIONSTORE", "d1", "k1", "k2"],
        &["PFCOUNT", "k1", "k2"],
        &["PFMERGE", "d1", "k1", "k2"],
        &[
            "MIGRATE", "h", "1", "", "0", "5000", "COPY", "REPLACE", "KEYS", "k1", "k2",
        ],
        &[
            "MIGRATE", "h", "1", "", "0", "5000", "AUTH2", "u", "p", "KEYS", "k1",
        ],
        &["MIGRATE", "h", "1", "k1", "0", "5000"],
        &["BITOP", "AND", "d1", "k1", "k2"],
        &["BITOP", "NOT", "d1", "k1"],
        &["BITFIELD_RO", "k1", "GET", "u8", "0"],
        &[
            "GEORADIUSBYMEMBER",
            "k1",
            "m",
            "10",
            "km",
            "STOREDIST",
            "d1",
        ],
        &["GEORADIUS_RO", "k1", "0", "0", "10", "km"],
        &["sort", "k1", "store", "d1"],
        &["XAUTOCLAIM", "k1", "g", "c", "0", "0"],
        &["XCLAIM", "k1", "g", "c", "0", "0-1"],
        &["XINFO", "CONSUMERS", "k1", "g"],
        &["XGROUP", "SETID", "k1", "g", "$"],
        &["RESTORE", "k1", "0", "payload"],
        &["LPOS", "k1", "e"],
        // Names that collide with keywords of the layout.
        &["XREADGROUP", "GROUP", "streams", "c", "STREAMS", "k1", ">"],
        &["XREADGROUP", "GROUP", "g", "STREAMS", "STREAMS", "k1", ">"],
        &["XREAD", "STREAMS", "streams", "0"],
        &[
            "MIGRATE", "h", "1", "", "0", "5000", "AUTH", "KEYS", "KEYS", "k1",
        ],
        &["PUBLISH", "ch", "msg"],
        &["PING", "hello"],
        &["SCRIPT", "LOAD", "return 1"],
        &["CLUSTER", "KEYSLOT", "k1"],
        &["OBJECT", "HELP", "x"],
        &["MEMORY", "STATS", "x"],
    ];
    assert!(commands.len() >= 40);
    let mut disagreements = Vec::new();
    for args in commands {
        let server = match server_keys(&mut c, args) {
            Ok(keys) => keys,
            Err(e) => {
                disagreements.push(format!("{args:?}: cannot ask the server: {e}"));
                continue;
            }
        };
        match our_keys(args) {
            Ok((_, ours)) if ours == server => {}
            Ok((indices, ours)) => disagreements.push(format!(
                "{args:?}: redcore {ours:?} (indices {indices:?}), server {server:?}"
            )),
            Err(e) => disagreements.push(format!("{args:?}: {e}, server {server:?}")),
        }
    }

    // Shard channels are not keys to the server (GETKEYS finds none), but
    // a cluster routes them by slot: redcore treats them as keys on purpose.
    for (args, channels) in [
        (&["SPUBLISH", "ch1", "msg"][..], &[1][..]),
        (&["SSUBSCRIBE", "ch1", "ch2"], &[1, 2]),
        (&["SUNSUBSCRIBE", "ch1", "ch2"], &[1, 2]),
    ] {
        assert_eq!(server_keys(&mut c, args), Ok(vec![]), "{args:?}");
        match our_keys(args) {
            Ok((indices, _)) if indices == channels => {}
            other => disagreements.push(format!("{args:?}: redcore {other:?}, want {channels:?}")),
        }
    }
    assert!(
        disagreements.is_empty(),
        "{} of {} commands disagree with COMMAND GETKEYS:\n{}",
        disagreements.len(),
        commands.len() + 3,
        disagreements.join("\n")
    );
}
