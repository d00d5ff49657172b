//! Replies past `max_reply_bytes` and replies nobody waits for any more,
//! from a scripted fake node: the call fails with a clear error, the rest
//! of the reply is skipped as it arrives, and the same socket goes on
//! answering (the stream stays in step; no reconnect). Push frames are
//! never skipped. Run on both transports (`REDCORE_TRANSPORT=io_uring`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use redcore::Commands;
use redcore::resp::{DecoderLimits, ProtocolError};
use redcore::{Connection, Error, Value, cmd};
use redcore_test_support::client::{base, run, within};
use redcore_test_support::{FakeCall, FakeNode, FakeReply, FakeStream};

const LIMIT: usize = 1 << 20;

/// A node that answers `GET big` with `big`, `GET small` with an array
/// of 1000 integers, any other `GET` with `$2 ok`, and the handshake as a
/// plain Redis would.
fn node(big: impl Fn() -> FakeReply + Send + Sync + 'static) -> FakeNode {
    FakeNode::start_with(move |call: &FakeCall<'_>| {
        if !call.is("GET") {
            return FakeReply::Default;
        }
        match call.arg(1).as_deref() {
            Some("big") => big(),
            Some("small") => ints(1000).into(),
            _ => FakeReply::bulk("ok"),
        }
    })
}

async fn connect(node: &FakeNode, timeout: Duration) -> Connection {
    let config = base(node.port())
        .timeout(timeout)
        .decoder_limits(DecoderLimits::default().max_reply_bytes(LIMIT))
        .backoff_initial(Duration::from_millis(10))
        .backoff_max(Duration::from_millis(50))
        .build()
        .unwrap();
    Connection::connect(config).await.unwrap()
}

fn too_large(e: &Error) -> bool {
    matches!(
        e,
        Error::Protocol(ProtocolError::ReplyTooLarge { limit: LIMIT })
    )
}

async fn answers_on_the_same_socket(conn: &Connection) {
    let ok: String = conn.command(["GET", "k"]).await.unwrap();
    assert_eq!(ok, "ok");
    assert_eq!(conn.stats().reconnects, 0, "the socket was replaced");
}

/// `*n` integers, whole.
fn ints(n: u64) -> FakeStream {
    FakeStream::repeat(format!("*{n}\r\n").as_bytes(), b":12345\r\n", Some(n))
}

#[test]
fn a_reply_past_the_limit_fails_alone_and_the_socket_stays() {
    // 100k integers: 4.8 MB of values from 0.8 MB on the wire.
    let node = node(|| ints(100_000).into());
    run(move || async move {
        let conn = connect(&node, Duration::from_secs(5)).await;
        let e = conn.command::<Value>(["GET", "big"]).await.unwrap_err();
        assert!(too_large(&e), "{e:?}");
        assert!(e.to_string().contains("max_reply_bytes"), "{e}");
        answers_on_the_same_socket(&conn).await;
        assert_eq!(conn.stats().replies_skipped, 1);
        // The same shape within the limit decodes.
        let small: Vec<i64> = conn.command(["GET", "small"]).await.unwrap();
        assert_eq!(small.len(), 1000);
        let _ = node;
    });
}

#[test]
fn a_bulk_string_past_the_limit_is_skipped_as_it_arrives() {
    // 8 MiB of payload for a 1 MiB limit: refused at its header, dropped
    // as it arrives, never buffered whole.
    const LEN: usize = 8 * LIMIT;
    let head: Arc<[u8]> = format!("${LEN}\r\n").into_bytes().into();
    let body: Arc<[u8]> = vec![b'x'; 64 * 1024].into();
    let node = node(move || {
        let (head, body) = (head.clone(), body.clone());
        let chunks = (LEN / body.len()) as u64;
        FakeStream::new(move |i| match i {
            0 => Some(head.clone()),
            i if i <= chunks => Some(body.clone()),
            i if i == chunks + 1 => Some(b"\r\n".to_vec().into()),
            _ => None,
        })
        .into()
    });
    run(move || async move {
        let conn = connect(&node, Duration::from_secs(5)).await;
        let e = conn.command::<Value>(["GET", "big"]).await.unwrap_err();
        assert!(too_large(&e), "{e:?}");
        answers_on_the_same_socket(&conn).await;
        let _ = node;
    });
}

#[test]
fn a_pipeline_with_a_reply_past_the_limit_fails_and_the_socket_stays() {
    let node = node(|| ints(100_000).into());
    run(move || async move {
        let conn = connect(&node, Duration::from_secs(5)).await;
        let e = conn
            .pipeline(&[
                cmd("GET").arg("k"),
                cmd("GET").arg("big"),
                cmd("GET").arg("k"),
            ])
            .await
            .unwrap_err();
        assert!(too_large(&e), "{e:?}");
        answers_on_the_same_socket(&conn).await;
        let _ = node;
    });
}

/// A reply within the limit that streams in slowly: 20k integers (960 KB
/// of values) at 200 KB/s (0.8 s), well past the caller's deadline.
fn slow_ints() -> FakeReply {
    ints(20_000).rate(200_000).into()
}

#[test]
fn a_reply_whose_call_timed_out_is_skipped() {
    let node = node(slow_ints);
    run(move || async move {
        let conn = connect(&node, Duration::from_secs(5)).await;
        let quick = conn.with_timeout(Duration::from_millis(200));
        let started = Instant::now();
        let e = quick.command::<Value>(["GET", "big"]).await.unwrap_err();
        assert!(
            matches!(
                e,
                Error::Timeout {
                    maybe_applied: true
                }
            ),
            "{e:?}"
        );
        // The reply trickles in, so the sweeper is on time; a loaded
        // machine may still be late by some hundreds of milliseconds.
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        // The next call waits for the rest of the big reply, skipped.
        answers_on_the_same_socket(&conn).await;
        assert_eq!(conn.stats().replies_skipped, 1);
        let _ = node;
    });
}

#[test]
fn a_reply_whose_caller_is_gone_is_skipped() {
    let node = node(slow_ints);
    run(move || async move {
        let conn = connect(&node, Duration::from_secs(5)).await;
        // The caller stops waiting (its future is dropped) mid-reply.
        let gone = futures_lite::future::or(
            async { Some(conn.command::<Value>(["GET", "big"]).await) },
            async {
                glommio::timer::sleep(Duration::from_millis(150)).await;
                None
            },
        )
        .await;
        assert!(gone.is_none());
        answers_on_the_same_socket(&conn).await;
        assert_eq!(conn.stats().replies_skipped, 1);
        let _ = node;
    });
}

#[test]
fn a_pipeline_whose_caller_gave_up_skips_its_replies() {
    let node = node(slow_ints);
    run(move || async move {
        let conn = connect(&node, Duration::from_secs(5)).await;
        let quick = conn.with_timeout(Duration::from_millis(200));
        let e = quick
            .pipeline(&[
                cmd("GET").arg("big"),
                cmd("GET").arg("big"),
                cmd("GET").arg("k"),
            ])
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::Timeout {
                    maybe_applied: true
                }
            ),
            "{e:?}"
        );
        answers_on_the_same_socket(&conn).await;
        assert_eq!(conn.stats().replies_skipped, 2);
        let _ = node;
    });
}

#[test]
fn a_push_arriving_past_a_deadline_is_not_skipped() {
    // The push's payload streams in for about half a second; the call's
    // deadline passes meanwhile; its reply comes after the push.
    const PAYLOAD: usize = 100_000;
    let head: Arc<[u8]> = format!(">3\r\n+custom\r\n+ch\r\n${PAYLOAD}\r\n")
        .into_bytes()
        .into();
    let body: Arc<[u8]> = vec![b'p'; 10_000].into();
    let tail: Arc<[u8]> = b"\r\n$2\r\nok\r\n".to_vec().into();
    let node = node(move || {
        let (head, body, tail) = (head.clone(), body.clone(), tail.clone());
        FakeStream::new(move |i| match i {
            0 => Some(head.clone()),
            i if i <= (PAYLOAD / 10_000) as u64 => Some(body.clone()),
            i if i == (PAYLOAD / 10_000) as u64 + 1 => Some(tail.clone()),
            _ => None,
        })
        .rate(200_000)
        .into()
    });
    run(move || async move {
        let conn = connect(&node, Duration::from_secs(5)).await;
        let mut pushes = conn.take_push_receiver().unwrap();
        let quick = conn.with_timeout(Duration::from_millis(150));
        let e = quick.command::<Value>(["GET", "big"]).await.unwrap_err();
        assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
        let push = within("the push", Duration::from_secs(5), pushes.recv())
            .await
            .unwrap();
        let Value::Push(items) = push else {
            panic!("{push:?}")
        };
        assert_eq!(items.len(), 3);
        assert_eq!(items[2].as_bytes().unwrap().len(), PAYLOAD);
        answers_on_the_same_socket(&conn).await;
        assert_eq!(conn.stats().replies_skipped, 0);
        let _ = node;
    });
}
