//! Pub/sub on one connection, against a real server: channels, patterns
//! and sharded channels on RESP3 (sharing the socket) and RESP2 (a
//! dedicated socket); reconnects with gaps; slow subscribers; refusals.

use std::time::Duration;

use bytes::Bytes;
use futures_lite::StreamExt;
use redcore::config::ConnectionConfigBuilder;
use redcore::prelude::*;
use redcore::pubsub::{ChannelKind, GapCause, Overflow};
use redcore::{Connection, Error, Protocol, PubSubEvent, Subscription};
use redcore_test_support::RedisServer;
use redcore_test_support::client::{fast, run, wait_until, within};

const SECOND: Duration = Duration::from_secs(1);

fn config(server: &RedisServer, protocol: Protocol) -> ConnectionConfigBuilder {
    fast(server).protocol(protocol).timeout(5 * SECOND)
}

/// The next event, within a few seconds.
async fn next(sub: &mut Subscription) -> PubSubEvent {
    within("a pub/sub event", 10 * SECOND, sub.recv())
        .await
        .expect("the subscription ended")
}

/// The next event, which must be a message: its payload.
async fn payload(sub: &mut Subscription) -> Bytes {
    match next(sub).await {
        PubSubEvent::Message(m) => m.payload,
        other => panic!("expected a message, got {other:?}"),
    }
}

/// Subscribers of `channel` the server counts.
fn numsub(server: &RedisServer, channel: &str) -> String {
    let out = server.cmd(&["PUBSUB", "NUMSUB", channel]);
    out.lines().last().unwrap_or_default().to_owned()
}

fn both(test: impl Fn(Protocol) + Copy) {
    test(Protocol::Resp3);
    test(Protocol::Resp2);
}

#[test]
fn a_hundred_thousand_messages_arrive_in_order_none_lost() {
    both(|protocol| {
        let server = RedisServer::start();
        let config = config(&server, protocol).build().unwrap();
        run(move || async move {
            let conn = Connection::connect(config).await.unwrap();
            let mut sub = conn.subscribe(["numbers"]).await.unwrap();
            let publisher = conn.clone();
            const N: usize = 100_000;
            let publish = glommio::spawn_local(async move {
                for chunk in (0..N).collect::<Vec<_>>().chunks(1000) {
                    let cmds: Vec<_> = chunk
                        .iter()
                        .map(|i| redcore::cmd("PUBLISH").arg("numbers").arg(*i))
                        .collect();
                    let n = publisher.pipeline(cmds).await.unwrap();
                    assert!(n.iter().all(|n| *n == redcore::Value::Integer(1)));
                }
            });
            for i in 0..N {
                let p = payload(&mut sub).await;
                assert_eq!(p, i.to_string().as_bytes(), "message {i} ({protocol:?})");
            }
            publish.await;
            assert!(sub.try_recv().is_none());
            assert_eq!(sub.dropped(), 0);
            // The socket still serves commands.
            conn.set("after", "yes").await.unwrap();
            let v: String = conn.get("after").await.unwrap();
            assert_eq!(v, "yes");
        });
    });
}

#[test]
fn resp3_shares_the_socket_and_resp2_opens_a_second_one() {
    both(|protocol| {
        let server = RedisServer::start();
        let config = config(&server, protocol)
            .client_name("pubsubtest")
            .build()
            .unwrap();
        let srv = server.addr();
        run(move || async move {
            let conn = Connection::connect(config).await.unwrap();
            let mut sub = conn.subscribe(["a", "b"]).await.unwrap();
            let clients: String = conn.command(["CLIENT", "LIST"]).await.unwrap();
            let ours = clients
                .lines()
                .filter(|l| l.contains("name=pubsubtest"))
                .count();
            let expected = if protocol == Protocol::Resp3 { 1 } else { 2 };
            assert_eq!(ours, expected, "{protocol:?} sockets: {clients}");
            // Commands go on while subscribed, on RESP3 on the same socket.
            for i in 0..100 {
                conn.set("k", i).await.unwrap();
                assert_eq!(conn.publish("b", i).await.unwrap(), 1);
            }
            for i in 0..100 {
                let m = match next(&mut sub).await {
                    PubSubEvent::Message(m) => m,
                    other => panic!("{other:?}"),
                };
                assert_eq!(m.channel, "b");
                assert_eq!(m.kind, ChannelKind::Channel);
                assert_eq!(m.payload, i.to_string().as_bytes());
            }
            let _ = srv;
        });
    });
}

#[test]
fn patterns_and_keyspace_notifications() {
    both(|protocol| {
        let server = RedisServer::start();
        server.cmd(&["CONFIG", "SET", "notify-keyspace-events", "KEA"]);
        let config = config(&server, protocol).build().unwrap();
        run(move || async move {
            let conn = Connection::connect(config).await.unwrap();
            let mut keys = conn.psubscribe(["__keyspace@0__:user:*"]).await.unwrap();
            let mut news = conn.psubscribe(["news.*"]).await.unwrap();
            conn.set("user:1", "x").await.unwrap();
            conn.publish("news.sport", "goal").await.unwrap();
            conn.publish("weather", "rain").await.unwrap();
            match next(&mut keys).await {
                PubSubEvent::Message(m) => {
                    assert_eq!(m.kind, ChannelKind::Pattern);
                    assert_eq!(m.pattern.as_deref(), Some(&b"__keyspace@0__:user:*"[..]));
                    assert_eq!(m.channel, "__keyspace@0__:user:1");
                    assert_eq!(m.payload, "set");
                }
                other => panic!("{other:?}"),
            }
            match next(&mut news).await {
                PubSubEvent::Message(m) => {
                    assert_eq!(m.pattern.as_deref(), Some(&b"news.*"[..]));
                    assert_eq!(m.channel, "news.sport");
                    assert_eq!(m.payload, "goal");
                }
                other => panic!("{other:?}"),
            }
            assert!(news.try_recv().is_none(), "weather matched no pattern");
        });
    });
}

#[test]
fn sharded_channels_on_one_server() {
    let server = RedisServer::start();
    let config = config(&server, Protocol::Resp3).build().unwrap();
    run(move || async move {
        let conn = Connection::connect(config).await.unwrap();
        let mut sub = conn.ssubscribe(["orders"]).await.unwrap();
        assert_eq!(conn.spublish("orders", "o1").await.unwrap(), 1);
        match next(&mut sub).await {
            PubSubEvent::Message(m) => {
                assert_eq!(m.kind, ChannelKind::Shard);
                assert_eq!(m.payload, "o1");
            }
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn dropping_the_last_subscription_unsubscribes_on_the_server() {
    both(|protocol| {
        let server = RedisServer::start();
        let config = config(&server, protocol).build().unwrap();
        let port = server.port();
        let server = std::sync::Arc::new(server);
        let srv = server.clone();
        run(move || async move {
            let conn = Connection::connect(config).await.unwrap();
            let first = conn.subscribe(["shared"]).await.unwrap();
            let mut second = conn.subscribe(["shared", "other"]).await.unwrap();
            assert_eq!(
                numsub(&srv, "shared"),
                "1",
                "one server subscription per name"
            );
            drop(first);
            conn.publish("shared", "still").await.unwrap();
            assert_eq!(payload(&mut second).await, "still");
            drop(second);
            wait_until("the server to drop the subscriptions", 5 * SECOND, || {
                numsub(&srv, "shared") == "0" && numsub(&srv, "other") == "0"
            })
            .await;
            assert_eq!(conn.publish("shared", "nobody").await.unwrap(), 0);
            // The connection goes on.
            conn.set("k", "v").await.unwrap();
            let _ = port;
        });
    });
}

#[test]
fn a_restarted_server_resubscribes_with_one_gap_before_the_next_message() {
    both(|protocol| {
        let mut server = RedisServer::start();
        let config = config(&server, protocol).build().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let handle = std::thread::spawn(move || {
            run(move || async move {
                let conn = Connection::connect(config).await.unwrap();
                let mut sub = conn.subscribe(["alerts"]).await.unwrap();
                let mut pat = conn.psubscribe(["al*"]).await.unwrap();
                conn.publish("alerts", "before").await.unwrap();
                assert_eq!(payload(&mut sub).await, "before");
                assert_eq!(payload(&mut pat).await, "before");
                tx.send(()).unwrap();
                // The server is killed and restarted meanwhile.
                let gap = match next(&mut sub).await {
                    PubSubEvent::Gap(g) => g,
                    other => panic!("expected a gap first, got {other:?}"),
                };
                assert_eq!(gap.cause, GapCause::Reconnected);
                assert!(gap.from <= gap.to);
                match next(&mut pat).await {
                    PubSubEvent::Gap(_) => {}
                    other => panic!("expected a gap on the pattern too, got {other:?}"),
                }
                // Published by this client once the server is back.
                let publisher = conn.clone();
                loop {
                    match publisher.publish("alerts", "after").await {
                        Ok(2) => break,
                        Ok(_) | Err(_) => {
                            glommio::timer::sleep(Duration::from_millis(5)).await;
                        }
                    }
                }
                assert_eq!(payload(&mut sub).await, "after");
                assert_eq!(payload(&mut pat).await, "after");
                assert!(sub.try_recv().is_none(), "one gap only");
                assert!(conn.stats().reconnects >= 1);
                done_tx.send(()).unwrap();
            });
        });
        rx.recv_timeout(10 * SECOND).unwrap();
        server.kill();
        server.restart();
        done_rx.recv_timeout(20 * SECOND).unwrap();
        handle.join().unwrap();
    });
}

#[test]
fn a_stalled_subscriber_stays_bounded_and_does_not_slow_commands() {
    both(|protocol| {
        let server = RedisServer::start();
        let config = config(&server, protocol)
            .subscription_capacity(100, 1 << 20)
            .subscription_overflow(Overflow::DropOldest)
            .build()
            .unwrap();
        run(move || async move {
            let conn = Connection::connect(config).await.unwrap();
            let mut stalled = conn.subscribe(["flood"]).await.unwrap();
            const N: u64 = 20_000;
            let cmds: Vec<_> = (0..N)
                .map(|i| redcore::cmd("PUBLISH").arg("flood").arg(i))
                .collect();
            let publisher = conn.clone();
            let flood = glommio::spawn_local(async move {
                for chunk in cmds.chunks(500) {
                    publisher.pipeline(chunk.to_vec()).await.unwrap();
                }
            });
            // A GET loop on the same connection meanwhile, each call well
            // within its deadline.
            for i in 0..2000 {
                let started = std::time::Instant::now();
                conn.set("k", i).await.unwrap();
                assert!(
                    started.elapsed() < SECOND,
                    "a SET took {:?}",
                    started.elapsed()
                );
                assert!(stalled.len() <= 101, "queue grew to {}", stalled.len());
            }
            flood.await;
            wait_until("every message to arrive or be dropped", 10 * SECOND, || {
                stalled.dropped() + stalled.len() as u64 == N
            })
            .await;
            assert!(stalled.len() <= 101, "queue grew to {}", stalled.len());
            assert_eq!(stalled.dropped(), N - 100);
            // The reader learns how many it missed, then gets the newest.
            match next(&mut stalled).await {
                PubSubEvent::Gap(g) => {
                    assert_eq!(g.cause, GapCause::Overflow);
                    assert_eq!(g.missed, Some(N - 100));
                }
                other => panic!("expected the overflow gap, got {other:?}"),
            }
            assert_eq!(
                payload(&mut stalled).await,
                (N - 100).to_string().as_bytes()
            );
        });
    });
}

#[test]
fn refused_subscriptions_are_errors_and_the_stream_stays_in_step() {
    let server = RedisServer::builder()
        .acl_user_rules("limited", "on >pw ~* +@all resetchannels &allowed")
        .start();
    let config = fast(&server)
        .username("limited")
        .password("pw")
        .build()
        .unwrap();
    run(move || async move {
        let conn = Connection::connect(config).await.unwrap();
        let mut ok = conn.subscribe(["allowed"]).await.unwrap();
        let err = conn.subscribe(["forbidden"]).await.unwrap_err();
        assert!(
            matches!(&err, Error::Server(e) if e.code() == b"NOPERM"),
            "{err:?}"
        );
        // Replies still go to the right callers.
        conn.set("k", "v").await.unwrap();
        let v: String = conn.get("k").await.unwrap();
        assert_eq!(v, "v");
        conn.publish("allowed", "yes").await.unwrap();
        assert_eq!(payload(&mut ok).await, "yes");
    });
}

#[test]
fn bad_subscribe_calls_are_typed_errors() {
    let server = RedisServer::start();
    let config = fast(&server).build().unwrap();
    run(move || async move {
        let conn = Connection::connect(config).await.unwrap();
        let none: [&str; 0] = [];
        assert!(matches!(
            conn.subscribe(none).await,
            Err(Error::MalformedCommand { .. })
        ));
        // Raw subscribe commands would break the reply order: refused.
        assert!(matches!(
            conn.command::<()>(["SUBSCRIBE", "x"]).await,
            Err(Error::Unsupported { .. })
        ));
        conn.set("k", "v").await.unwrap();
    });
}

#[test]
fn closing_the_connection_ends_its_subscriptions() {
    both(|protocol| {
        let server = RedisServer::start();
        let config = config(&server, protocol).build().unwrap();
        run(move || async move {
            let conn = Connection::connect(config).await.unwrap();
            let mut sub = conn.subscribe(["x"]).await.unwrap();
            conn.close();
            assert!(
                within("the stream to end", 5 * SECOND, sub.next())
                    .await
                    .is_none()
            );
        });
    });
}

#[test]
fn unsubscribe_waits_for_the_server() {
    both(|protocol| {
        let server = std::sync::Arc::new(RedisServer::start());
        let config = config(&server, protocol).build().unwrap();
        let srv = server.clone();
        run(move || async move {
            let conn = Connection::connect(config).await.unwrap();
            let sub = conn.subscribe(["x", "y"]).await.unwrap();
            let keep = conn.subscribe(["y"]).await.unwrap();
            sub.unsubscribe().await.unwrap();
            // Confirmed: the server no longer has "x"; "y" stays for `keep`.
            let numsub = |c: &str| {
                let out = srv.cmd(&["PUBSUB", "NUMSUB", c]);
                out.lines().last().unwrap_or_default().to_owned()
            };
            assert_eq!(numsub("x"), "0");
            assert_eq!(numsub("y"), "1");
            keep.unsubscribe().await.unwrap();
            assert_eq!(numsub("y"), "0");
        });
    });
}

/// Subscribes, unsubscribes and messages interleaved with ordinary
/// commands from many tasks on one RESP3 socket: every reply still goes
/// to its own caller.
#[test]
fn subscriptions_churning_never_shift_replies() {
    let server = RedisServer::start();
    let config = config(&server, Protocol::Resp3).build().unwrap();
    run(move || async move {
        let conn = Connection::connect(config).await.unwrap();
        let mut tasks = Vec::new();
        for t in 0..20 {
            let c = conn.clone();
            tasks.push(glommio::spawn_local(async move {
                let key = format!("counter:{t}");
                for i in 1..=300i64 {
                    let n: i64 = c.incr(&key).await.unwrap();
                    assert_eq!(n, i, "task {t} got another caller's reply");
                }
            }));
        }
        for t in 0..5 {
            let c = conn.clone();
            tasks.push(glommio::spawn_local(async move {
                for i in 0..60 {
                    let names = [format!("churn:{}", (t + i) % 7), format!("churn:{}", i % 3)];
                    let sub = if i % 2 == 0 {
                        c.subscribe(&names).await.unwrap()
                    } else {
                        c.psubscribe(["churn:*"]).await.unwrap()
                    };
                    if i % 3 == 0 {
                        sub.unsubscribe().await.unwrap();
                    } else {
                        drop(sub);
                    }
                }
            }));
        }
        let c = conn.clone();
        tasks.push(glommio::spawn_local(async move {
            for i in 0..2000 {
                c.publish(format!("churn:{}", i % 7), i).await.unwrap();
            }
        }));
        for t in tasks {
            within("the tasks", 60 * SECOND, t).await;
        }
        let v: Option<String> = conn.get("counter:0").await.unwrap();
        assert_eq!(v.as_deref(), Some("300"));
    });
}

/// A message past `max_reply_bytes` is skipped, never built; its
/// subscriptions are told with a gap and later messages still arrive.
#[test]
fn a_message_past_the_reply_limit_is_a_gap() {
    both(|protocol| {
        let server = RedisServer::start();
        let mut limits = redcore::resp::DecoderLimits::default();
        limits.max_reply_bytes = 16 * 1024;
        let config = config(&server, protocol)
            .decoder_limits(limits)
            .build()
            .unwrap();
        run(move || async move {
            let conn = Connection::connect(config).await.unwrap();
            let mut sub = conn.subscribe(["big"]).await.unwrap();
            conn.publish("big", vec![b'x'; 256 * 1024]).await.unwrap();
            conn.publish("big", "small").await.unwrap();
            match next(&mut sub).await {
                PubSubEvent::Gap(g) => {
                    if protocol == Protocol::Resp3 {
                        assert_eq!(g.cause, GapCause::Skipped);
                    }
                }
                other => panic!("expected a gap, got {other:?}"),
            }
            if protocol == Protocol::Resp3 {
                // The same socket goes on.
                assert_eq!(payload(&mut sub).await, "small");
            } else {
                // The dedicated socket was dropped (the oversized array was
                // a reply to nobody) and made again: publish until it is
                // back.
                let deadline = std::time::Instant::now() + 10 * SECOND;
                loop {
                    assert!(std::time::Instant::now() < deadline, "never resubscribed");
                    conn.publish("big", "again").await.unwrap();
                    let got = futures_lite::future::or(async { sub.recv().await }, async {
                        glommio::timer::sleep(Duration::from_millis(50)).await;
                        None
                    })
                    .await;
                    match got {
                        Some(PubSubEvent::Message(m)) if m.payload == "again" => break,
                        Some(PubSubEvent::Message(m)) if m.payload == "small" => {}
                        Some(PubSubEvent::Gap(_)) | None => {}
                        other => panic!("{other:?}"),
                    }
                }
            }
            conn.set("k", "v").await.unwrap();
        });
    });
}

/// Every event that comes within `quiet` of the previous one.
async fn events_until_quiet(sub: &mut Subscription, quiet: Duration) -> Vec<PubSubEvent> {
    let mut out = Vec::new();
    loop {
        let e = futures_lite::future::or(async { sub.recv().await }, async {
            glommio::timer::sleep(quiet).await;
            None
        })
        .await;
        match e {
            Some(e) => out.push(e),
            None => return out,
        }
    }
}

fn count_messages(events: &[PubSubEvent]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, PubSubEvent::Message(_)))
        .count()
}

/// On RESP2's dedicated socket, a large message streaming in while a call
/// nobody waits for is in flight (a dropped subscription's unsubscribe,
/// the keepalive `PING`) is a message, never that call's reply.
#[test]
fn resp2_large_messages_are_never_taken_for_replies() {
    let server = RedisServer::start();
    let config = config(&server, Protocol::Resp2)
        .health_interval(Some(Duration::from_millis(50)))
        .build()
        .unwrap();
    let publisher = fast(&server).build().unwrap();
    run(move || async move {
        let conn = Connection::connect(config).await.unwrap();
        let publisher = Connection::connect(publisher).await.unwrap();
        let mut a = conn.subscribe(["a"]).await.unwrap();
        let big = vec![b'x'; 200 << 10];
        let mut delivered = 0;
        for round in 0..20 {
            let other = conn.subscribe(["b"]).await.unwrap();
            let cmds: Vec<_> = (0..10)
                .map(|_| redcore::cmd("PUBLISH").arg("a").arg(&big[..]))
                .collect();
            publisher.pipeline(cmds).await.unwrap();
            // Its unsubscribe goes out while the messages stream in.
            drop(other);
            let got = events_until_quiet(&mut a, Duration::from_millis(100)).await;
            assert!(
                got.iter().all(|e| matches!(e, PubSubEvent::Message(_))),
                "round {round}: {got:?}"
            );
            delivered += count_messages(&got);
        }
        // No gap either: the socket was never dropped and made again.
        assert_eq!(delivered, 200, "messages lost");
    });
}

/// A second subscription to a name whose first subscribe is not sent yet
/// does not count on it: the first may be withdrawn.
#[test]
fn a_second_subscriber_does_not_depend_on_the_first() {
    let server = RedisServer::start();
    let config = config(&server, Protocol::Resp3).build().unwrap();
    run(move || async move {
        let conn = Connection::connect(config).await.unwrap();
        let mut first = Box::pin(conn.subscribe(["x"]));
        // Queued, not written yet; then withdrawn.
        assert!(futures_lite::future::poll_once(&mut first).await.is_none());
        let mut second = conn.subscribe(["x"]).await.unwrap();
        drop(first);
        assert_eq!(conn.publish("x", "hello").await.unwrap(), 1);
        assert_eq!(payload(&mut second).await, "hello");
    });
}
