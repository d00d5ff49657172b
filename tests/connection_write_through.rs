//! Callers sending their pipelines on the socket themselves: the stream
//! stays in queue order when a send takes only part of the batch and the
//! driver sends the rest, when many callers mix pipelines with single
//! commands (which the driver sends), and across a reconnect.

use std::time::Duration;

use glommio::spawn_local;
use redcore::{Cmd, Commands, Connection, Error, TransportKind, Value, cmd};
use redcore_test_support::RedisServer;
use redcore_test_support::client::{bulk, connect, fast, run, wait_for_pong, within};

const SECOND: Duration = Duration::from_secs(1);

/// Callers send only on glommio's sockets: under `REDCORE_TRANSPORT=io_uring`
/// (`tools/test.sh` runs this file on both) these tests check the order
/// of the stream alone.
fn sends_by_callers(conn: &Connection) -> bool {
    conn.transport() == TransportKind::Glommio
}

/// A value of `len` bytes that says which task and round wrote it.
fn value(task: usize, round: usize, len: usize) -> Vec<u8> {
    let tag = format!("{task}:{round}:");
    tag.bytes().cycle().take(len).collect()
}

#[test]
fn large_and_small_calls_from_many_tasks_stay_paired() {
    let server = RedisServer::start();
    run(move || async move {
        let conn = connect(&server).await;
        let mut tasks = Vec::new();
        // Pipelines far larger than a socket buffer: the caller's send
        // takes part, the driver sends the rest, while others queue.
        for t in 0..4 {
            let c = conn.clone();
            tasks.push(spawn_local(async move {
                for round in 0..4 {
                    let key = format!("big:{t}");
                    let v = value(t, round, (6 << 20) + t * 1000 + round);
                    let replies = c
                        .pipeline([
                            cmd("SET").arg(key.as_str()).arg(v.as_slice()),
                            cmd("GET").arg(key.as_str()),
                        ])
                        .await?;
                    if replies.get(1) != Some(&Value::BulkString(v.into())) {
                        return Ok(Some(format!("big {t} round {round}: wrong value back")));
                    }
                }
                Ok::<_, Error>(None)
            }));
        }
        // Pipelines of a few KiB (sent by their callers at once) and lone
        // commands (batched by the driver) in between.
        for t in 0..8 {
            let c = conn.clone();
            tasks.push(spawn_local(async move {
                for round in 0..50 {
                    let cmds: Vec<Cmd> = (0..64)
                        .map(|i| cmd("ECHO").arg(format!("{t}/{round}/{i}")))
                        .collect();
                    let replies = c.pipeline(&cmds).await?;
                    let expected: Vec<Value> =
                        (0..64).map(|i| bulk(&format!("{t}/{round}/{i}"))).collect();
                    if replies != expected {
                        return Ok(Some(format!("pipeline {t}/{round}: replies out of order")));
                    }
                }
                Ok(None)
            }));
        }
        for t in 0..32 {
            let c = conn.clone();
            tasks.push(spawn_local(async move {
                for i in 0..200 {
                    let text = format!("small {t} {i}");
                    let back: String = c.command(["ECHO", text.as_str()]).await?;
                    if back != text {
                        return Ok(Some(format!("small {t} {i}: got {back:?}")));
                    }
                }
                Ok(None)
            }));
        }
        for task in tasks {
            let mismatch = within("a task", 60 * SECOND, task).await.unwrap();
            assert_eq!(mismatch, None);
        }
        if sends_by_callers(&conn) {
            assert!(
                conn.stats().caller_sends > 0,
                "no pipeline was sent by its caller: {:?}",
                conn.stats()
            );
        }
    });
}

/// Ten pipelines of 64 `INCR key` (about 1.5 KiB each), one at a time;
/// checks every reply.
async fn incr_pipelines(conn: &Connection, key: &str) {
    for p in 0..10i64 {
        let replies = conn.pipeline(vec![["INCR", key]; 64]).await.unwrap();
        let expected: Vec<Value> = (1..=64).map(|i| Value::Integer(p * 64 + i)).collect();
        assert_eq!(replies, expected);
    }
}

#[test]
fn pipelines_sent_by_their_callers_survive_a_reconnect() {
    let mut server = RedisServer::start();
    let config = fast(&server).timeout(2 * SECOND).build().unwrap();
    let (first_half_tx, first_half_rx) = std::sync::mpsc::channel::<()>();
    let (restarted_tx, restarted_rx) = std::sync::mpsc::channel::<()>();
    let client = std::thread::spawn(move || {
        run(move || async move {
            let conn = Connection::connect(config).await.unwrap();
            // One pipeline at a time, each sent by its caller.
            incr_pipelines(&conn, "lone").await;
            if sends_by_callers(&conn) {
                assert!(conn.stats().caller_sends >= 9, "{:?}", conn.stats());
            }
            first_half_tx.send(()).unwrap();
            restarted_rx.recv().unwrap();
            wait_for_pong(&conn, 10 * SECOND).await;
            // The new socket takes the callers' sends.
            incr_pipelines(&conn, "lone:after").await;
        })
    });
    first_half_rx.recv().unwrap();
    server.restart();
    restarted_tx.send(()).unwrap();
    client.join().unwrap();
}

#[test]
fn a_call_dropped_before_it_was_written_stays_unsent_when_a_pipeline_goes_out() {
    let server = RedisServer::start();
    run(move || async move {
        let conn = connect(&server).await;
        // One round trip first, so that the I/O loop runs and lends the
        // socket to callers.
        wait_for_pong(&conn, 5 * SECOND).await;
        let sends = conn.stats().caller_sends;
        // Queued, then dropped before the driver could write it: withdrawn.
        let r = futures_lite::future::or(
            async { Some(conn.command::<i64>(["INCR", "withdrawn"]).await) },
            async { None },
        )
        .await;
        assert!(r.is_none());
        // In the same turn, a pipeline its caller sends at once, from the
        // same batch buffer: the withdrawn INCR must be cut out first.
        incr_pipelines(&conn, "after-withdrawn").await;
        if sends_by_callers(&conn) {
            assert_eq!(conn.stats().caller_sends, sends + 10, "{:?}", conn.stats());
        }
        let v: Option<i64> = conn.command(["GET", "withdrawn"]).await.unwrap();
        assert_eq!(v, None, "a call dropped before being written was sent");
        let n: i64 = conn.command(["INCR", "after-withdrawn"]).await.unwrap();
        assert_eq!(n, 641);
    });
}
