//! Codec benchmarks: reply decoding, command encoding, hash slots.
//!
//! Where `redis-protocol` (a sans-io RESP crate with zero-copy `Bytes`
//! frames) has the same operation, it is measured in the same group on the
//! same bytes, so the ratio is in the report:
//!
//! ```text
//! cargo bench --bench codec            # the whole run, about 3 minutes
//! cargo bench --bench codec -- decode  # only the groups matching "decode"
//! cargo bench --bench codec -- --test  # run each benchmark once (CI)
//! ```
//!
//! Both decoders are driven the same way: a `BytesMut` holding the input,
//! one frame split off the front per call until it is empty, each frame
//! dropped inside the timed part (dropping is part of a reply's cost).

#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use redcore::cmd::{Args, Route, cmd};
use redcore::resp::{Decoder, encode_command};
use redcore::slot::key_slot;
use redis_protocol::resp2::types::{BorrowedFrame as Resp2Borrowed, BytesFrame as Resp2Frame};
use redis_protocol::resp2::{decode as rp_resp2, encode as rp_resp2_encode};
use redis_protocol::resp3::decode::complete as rp_resp3;

// ---------------------------------------------------------------- inputs --

/// `HELLO 3`: a map of seven fields.
const HELLO_RESP3: &[u8] = b"%7\r\n\
    $6\r\nserver\r\n$5\r\nredis\r\n\
    $7\r\nversion\r\n$5\r\n7.2.4\r\n\
    $5\r\nproto\r\n:3\r\n\
    $2\r\nid\r\n:5\r\n\
    $4\r\nmode\r\n$10\r\nstandalone\r\n\
    $4\r\nrole\r\n$6\r\nmaster\r\n\
    $7\r\nmodules\r\n*0\r\n";

/// `HELLO 2`: the same fields as a flat array.
const HELLO_RESP2: &[u8] = b"*14\r\n\
    $6\r\nserver\r\n$5\r\nredis\r\n\
    $7\r\nversion\r\n$5\r\n7.2.4\r\n\
    $5\r\nproto\r\n:2\r\n\
    $2\r\nid\r\n:5\r\n\
    $4\r\nmode\r\n$10\r\nstandalone\r\n\
    $4\r\nrole\r\n$6\r\nmaster\r\n\
    $7\r\nmodules\r\n*0\r\n";

fn bulk(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(format!("${}\r\n", payload.len()).as_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

/// An `MGET` of ten 16-byte values.
fn mget_reply(out: &mut Vec<u8>) {
    out.extend_from_slice(b"*10\r\n");
    for i in 0..10 {
        bulk(out, format!("value-{i:010}").as_bytes());
    }
}

/// A mix of typical replies in one buffer, and how many replies it holds.
/// `resp3`: the `HELLO` reply is a map and `ZSCORE` answers a double; else
/// the RESP2 forms of the same replies.
fn reply_mix(resp3: bool) -> (Vec<u8>, u64) {
    let mut out = Vec::new();
    out.extend_from_slice(b"+OK\r\n"); // SET
    out.extend_from_slice(b":12345\r\n"); // INCR
    bulk(&mut out, &[b'x'; 32]); // GET
    // GET of a missing key. A RESP3 server sends `_`; redis-protocol's RESP3
    // decoder reads `$-1` as the start of a streamed string, not a null.
    out.extend_from_slice(if resp3 { b"_\r\n" } else { b"$-1\r\n" });
    out.extend_from_slice(if resp3 { HELLO_RESP3 } else { HELLO_RESP2 });
    mget_reply(&mut out);
    if resp3 {
        out.extend_from_slice(b",3.14159265358979\r\n"); // ZSCORE
    } else {
        bulk(&mut out, b"3.14159265358979");
    }
    out.extend_from_slice(b"-ERR unknown command 'FOO', with args beginning with: \r\n");
    (out, 8)
}

/// One 1 MiB bulk string.
fn big_bulk() -> Vec<u8> {
    let payload: Vec<u8> = (0..1 << 20).map(|i| b'a' + (i % 26) as u8).collect();
    let mut out = Vec::new();
    bulk(&mut out, &payload);
    out
}

/// An array of 10 000 bulk strings of 16 bytes (an `LRANGE`), about 250 KB.
fn big_array() -> Vec<u8> {
    let mut out = b"*10000\r\n".to_vec();
    for i in 0..10_000 {
        bulk(&mut out, format!("element-{i:08}").as_bytes());
    }
    out
}

// -------------------------------------------------------------- decoders --

/// The decoders compared. Each takes every frame off the front of `buf`
/// until it is empty or holds only a partial frame, and returns how many it
/// decoded. The frames are dropped as they come.
#[derive(Clone, Copy)]
enum Impl {
    Redcore,
    RpResp2,
    RpResp3,
}

impl Impl {
    fn name(self) -> &'static str {
        match self {
            Impl::Redcore => "redcore",
            Impl::RpResp2 => "redis-protocol_resp2",
            Impl::RpResp3 => "redis-protocol_resp3",
        }
    }

    fn drain(self, decoder: &mut Decoder, buf: &mut BytesMut) -> usize {
        let mut n = 0;
        match self {
            Impl::Redcore => {
                while let Some(v) = decoder.decode(buf).expect("valid input") {
                    black_box(v);
                    n += 1;
                }
            }
            Impl::RpResp2 => {
                while let Some(f) = rp_resp2::decode_bytes_mut(buf).expect("valid input") {
                    black_box(f);
                    n += 1;
                }
            }
            Impl::RpResp3 => {
                while let Some(f) = rp_resp3::decode_bytes_mut(buf).expect("valid input") {
                    black_box(f);
                    n += 1;
                }
            }
        }
        n
    }
}

/// Decodes `input` whole, frame by frame, with each implementation; the
/// input is copied into a fresh `BytesMut` outside the timed part.
fn bench_decode_whole(
    c: &mut Criterion,
    group: &str,
    input: &[u8],
    throughput: Throughput,
    impls: &[Impl],
    replies: usize,
) {
    let input = BytesMut::from(input);
    let mut g = c.benchmark_group(group);
    g.throughput(throughput);
    for &imp in impls {
        // Outside the timing: every decoder must read every reply.
        let mut decoder = Decoder::new();
        assert_eq!(
            imp.drain(&mut decoder, &mut input.clone()),
            replies,
            "{}",
            imp.name()
        );
        g.bench_function(imp.name(), |b| {
            b.iter_batched(
                || input.clone(),
                |mut buf| imp.drain(&mut decoder, &mut buf),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn decode(c: &mut Criterion) {
    let resp3 = [Impl::Redcore, Impl::RpResp3];
    let resp2 = [Impl::Redcore, Impl::RpResp2];
    for (name, is_resp3, impls) in [("resp3", true, &resp3[..]), ("resp2", false, &resp2[..])] {
        let (input, replies) = reply_mix(is_resp3);
        let bytes = Throughput::Bytes(input.len() as u64);
        let elements = Throughput::Elements(replies);
        let n = replies as usize;
        bench_decode_whole(c, &format!("decode_mix_{name}"), &input, bytes, impls, n);
        bench_decode_whole(
            c,
            &format!("decode_mix_{name}_per_reply"),
            &input,
            elements,
            impls,
            n,
        );
    }

    // A 1 MiB bulk string. Copying 1 MiB into a fresh buffer for every
    // iteration would cost far more than decoding it (both decoders are
    // zero-copy and only look at the header and the final CRLF), so here
    // the timed part is what a connection does: the reply arrives (a copy
    // into the reused read buffer) and is decoded. `copy_only` is the
    // arrival alone; the difference is the decoding.
    let input = big_bulk();
    let mut g = c.benchmark_group("decode_bulk_1MiB");
    g.throughput(Throughput::Bytes(input.len() as u64));
    let mut buf = BytesMut::with_capacity(input.len());
    g.bench_function("copy_only", |b| {
        b.iter(|| {
            buf.extend_from_slice(&input);
            black_box(&buf);
            buf.clear();
        })
    });
    for imp in [Impl::Redcore, Impl::RpResp2, Impl::RpResp3] {
        let mut decoder = Decoder::new();
        g.bench_function(imp.name(), |b| {
            b.iter(|| {
                // The previous frame is dropped, so this reuses the buffer.
                buf.extend_from_slice(&input);
                assert_eq!(imp.drain(&mut decoder, &mut buf), 1);
            })
        });
    }
    g.finish();

    // A large array arriving in 16 KiB reads, decoding attempted after
    // each read (as a connection does). The input is cloned outside the
    // timed part; the reads are copies into the decoder's buffer.
    let input = big_array();
    let mut g = c.benchmark_group("decode_array_10k_in_16KiB_reads");
    g.throughput(Throughput::Bytes(input.len() as u64));
    for imp in [Impl::Redcore, Impl::RpResp2, Impl::RpResp3] {
        let mut decoder = Decoder::new();
        g.bench_function(imp.name(), |b| {
            b.iter_batched(
                || BytesMut::with_capacity(input.len()),
                |mut buf| {
                    let mut n = 0;
                    for chunk in input.chunks(16 * 1024) {
                        buf.extend_from_slice(chunk);
                        n += imp.drain(&mut decoder, &mut buf);
                    }
                    assert_eq!(n, 1);
                    buf
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

// -------------------------------------------------------------- encoding --

/// Checks what an encoding bench left in `out`, then empties it: the
/// expected bytes, or nothing when a name filter (`cargo bench --bench codec
/// -- slot`) skipped that bench.
fn written_or_skipped(out: &mut BytesMut, expected: &[u8]) {
    assert!(
        out.is_empty() || &out[..] == expected,
        "wrong encoding: {out:?}"
    );
    out.clear();
}

fn encode(c: &mut Criterion) {
    let key: &[u8] = b"user:1000:profile";
    let small = [b'v'; 32];
    let large = vec![b'v'; 4096];
    let cases: [(&str, &[&[u8]]); 3] = [
        ("SET_32B", &[b"SET", key, &small]),
        ("SET_4KiB", &[b"SET", key, &large]),
        ("GET", &[b"GET", key]),
    ];
    let mut out = BytesMut::with_capacity(8192);
    for (name, args) in cases {
        let mut g = c.benchmark_group(format!("encode_{name}"));
        g.throughput(Throughput::Elements(1));
        g.measurement_time(Duration::from_secs(2));

        // What each variant writes must be the same bytes.
        let mut expected = BytesMut::new();
        encode_command(&mut expected, args);

        g.bench_function("redcore_encode_command", |b| {
            b.iter(|| {
                out.clear();
                encode_command(&mut out, black_box(args));
            })
        });
        written_or_skipped(&mut out, &expected);

        // Building the command (one copy of the arguments) is part of it.
        g.bench_function("redcore_cmd_build_and_encode", |b| {
            b.iter(|| {
                out.clear();
                let args = black_box(args);
                let mut c = cmd(args[0]);
                for a in &args[1..] {
                    c.push_arg(a);
                }
                c.encode(&mut out);
            })
        });
        written_or_skipped(&mut out, &expected);

        let built = cmd(args[0]).args(&args[1..]);
        g.bench_function("redcore_cmd_encode_prebuilt", |b| {
            b.iter(|| {
                out.clear();
                black_box(&built).encode(&mut out);
            })
        });
        written_or_skipped(&mut out, &expected);

        // redis-protocol, the frame borrowing the arguments (on the stack).
        g.bench_function("redis-protocol_borrowed_frame", |b| {
            b.iter(|| {
                out.clear();
                let args = black_box(args);
                let mut frames = [
                    Resp2Borrowed::Null,
                    Resp2Borrowed::Null,
                    Resp2Borrowed::Null,
                ];
                for (f, a) in frames.iter_mut().zip(args) {
                    *f = Resp2Borrowed::BulkString(a);
                }
                let frame = Resp2Borrowed::Array(&frames[..args.len()]);
                rp_resp2_encode::extend_encode_borrowed(&mut out, &frame, false).unwrap();
            })
        });
        written_or_skipped(&mut out, &expected);

        // redis-protocol, an owned frame built like a client builds one:
        // a `Vec` of frames, each argument copied into a `Bytes`.
        g.bench_function("redis-protocol_bytes_frame_build_and_encode", |b| {
            b.iter(|| {
                out.clear();
                let args = black_box(args);
                let frame = Resp2Frame::Array(
                    args.iter()
                        .map(|a| Resp2Frame::BulkString(Bytes::copy_from_slice(a)))
                        .collect(),
                );
                rp_resp2_encode::extend_encode(&mut out, &frame, false).unwrap();
            })
        });
        written_or_skipped(&mut out, &expected);
        g.finish();
    }
}

// ----------------------------------------------------------------- slots --

fn slot(c: &mut Criterion) {
    let keys: [(&str, &[u8]); 3] = [
        ("short", b"user:1000"),
        ("hash_tag", b"{user:1000}:followers"),
        (
            "64B",
            b"session:0123456789abcdef0123456789abcdef0123456789abcdef01234567",
        ),
    ];
    let mut g = c.benchmark_group("slot");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(2));
    for (name, key) in keys {
        assert_eq!(key_slot(key), redis_protocol::redis_keyslot(key), "{name}");
        g.bench_function(format!("key_slot_{name}"), |b| {
            b.iter(|| key_slot(black_box(key)))
        });
        g.bench_function(format!("redis-protocol_redis_keyslot_{name}"), |b| {
            b.iter(|| redis_protocol::redis_keyslot(black_box(key)))
        });
    }
    let mget = ["MGET", "{user:1000}:a", "{user:1000}:b", "{user:1000}:c"];
    assert_eq!(mget.route().unwrap(), Route::Slot(key_slot(b"user:1000")));
    g.bench_function("route_MGET_3_same_tag", |b| {
        b.iter(|| black_box(&mget).route().unwrap())
    });
    // A pipeline's typical command: name, one short key, a value.
    let set = cmd("SET").arg("key:12345").arg([b'x'; 32].as_slice());
    assert_eq!(set.route().unwrap(), Route::Slot(key_slot(b"key:12345")));
    g.bench_function("route_SET_cmd", |b| {
        b.iter(|| black_box(&set).route().unwrap())
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    targets = decode, encode, slot
}
criterion_main!(benches);
