//! Many callers on one connection: replies reach their own callers;
//! pipelines, transactions and no-reply commands; backpressure; commands the
//! connection refuses.

use std::time::Duration;

use glommio::spawn_local;
use redcore::Commands;
use redcore::{Cmd, Connection, Error, ServerErrorKind, Value, cmd};
use redcore_test_support::RedisServer;
use redcore_test_support::client::{base, bulk, connect, field, run, within};

const SECOND: Duration = Duration::from_secs(1);

fn ok() -> Value {
    Value::SimpleString("OK".into())
}

#[test]
fn ten_thousand_commands_from_a_hundred_tasks() {
    let server = RedisServer::start();
    run(move || async move {
        let conn = connect(&server).await;
        let mut tasks = Vec::new();
        for t in 0..100 {
            let c = conn.clone();
            tasks.push(spawn_local(async move {
                let counter = format!("counter:{t}");
                for i in 1..=100i64 {
                    let n: i64 = c.command(["INCR", counter.as_str()]).await?;
                    if n != i {
                        return Ok(Some(format!("task {t}: INCR {i} gave {n}")));
                    }
                    if i % 10 == 0 {
                        let (k, v) = (format!("val:{t}:{i}"), format!("task {t} wrote {i}"));
                        c.command::<()>(["SET", k.as_str(), v.as_str()]).await?;
                        let back: String = c.command(["GET", k.as_str()]).await?;
                        if back != v {
                            return Ok(Some(format!("task {t}: GET {k} gave {back:?}")));
                        }
                    }
                }
                Ok::<_, Error>(None)
            }));
        }
        for task in tasks {
            let mismatch = within("a task", 20 * SECOND, task).await.unwrap();
            assert_eq!(mismatch, None);
        }
        assert!(conn.stats().replies >= 12_000);
        for t in [0, 57, 99] {
            assert_eq!(server.cmd(&["GET", &format!("counter:{t}")]), "100");
        }
    });
}

#[test]
fn pipeline_replies_come_in_order() {
    let server = RedisServer::start();
    run(move || async move {
        let conn = connect(&server).await;
        let cmds: Vec<Cmd> = (0..500).map(|i| cmd("ECHO").arg(i)).collect();
        let replies = conn.pipeline(&cmds).await.unwrap();
        let expected: Vec<Value> = (0..500).map(|i| bulk(&i.to_string())).collect();
        assert_eq!(replies, expected);

        let replies = conn
            .pipeline([
                cmd("SET").arg("p").arg("1"),
                cmd("INCRBY").arg("p").arg(41),
                cmd("GET").arg("p"),
                cmd("DEL").arg("p"),
                cmd("GET").arg("p"),
            ])
            .await
            .unwrap();
        assert_eq!(
            replies,
            vec![
                ok(),
                Value::Integer(42),
                bulk("42"),
                Value::Integer(1),
                Value::Nil
            ]
        );
    });
}

#[test]
fn pipeline_server_errors_come_back_inline() {
    let server = RedisServer::start();
    run(move || async move {
        let conn = connect(&server).await;
        let replies = conn
            .pipeline([
                cmd("SET").arg("s").arg("not a number"),
                cmd("INCR").arg("s"),
                cmd("GET").arg("s"),
            ])
            .await
            .unwrap();
        assert_eq!(replies.len(), 3);
        assert_eq!(replies[0], ok());
        let e = replies[1].as_error().expect("INCR on a string fails");
        assert_eq!(e.kind(), ServerErrorKind::Other);
        assert!(e.message_lossy().contains("not an integer"), "{e:?}");
        assert_eq!(replies[2], bulk("not a number"));
    });
}

#[test]
fn empty_pipeline_is_an_empty_vec() {
    let server = RedisServer::start();
    run(move || async move {
        let conn = connect(&server).await;
        let calls = conn.stats().calls;
        let replies = conn.pipeline(Vec::<Cmd>::new()).await.unwrap();
        assert!(replies.is_empty());
        assert_eq!(
            conn.stats().calls,
            calls,
            "an empty pipeline sent something"
        );
    });
}

/// A pipeline of one command whose reply is an array is still one reply.
#[test]
fn one_command_pipeline_returning_an_array_is_one_reply() {
    let server = RedisServer::start();
    run(move || async move {
        let conn = connect(&server).await;
        conn.command::<()>(["RPUSH", "list", "a", "b", "c"])
            .await
            .unwrap();
        let replies = conn
            .pipeline([["LRANGE", "list", "0", "-1"]])
            .await
            .unwrap();
        assert_eq!(
            replies,
            vec![Value::Array(vec![bulk("a"), bulk("b"), bulk("c")])]
        );
        let replies = conn
            .pipeline([["LRANGE", "missing", "0", "-1"]])
            .await
            .unwrap();
        assert_eq!(replies, vec![Value::Array(vec![])]);
    });
}

#[test]
fn transaction_returns_exec_results() {
    let server = RedisServer::start();
    run(move || async move {
        let conn = connect(&server).await;
        let results = conn
            .transaction([
                cmd("SET").arg("t").arg(1),
                cmd("INCR").arg("t"),
                cmd("GET").arg("t"),
            ])
            .await
            .unwrap();
        assert_eq!(results, vec![ok(), Value::Integer(2), bulk("2")]);
        let empty = conn.transaction(Vec::<Cmd>::new()).await.unwrap();
        assert!(empty.is_empty());
    });
}

#[test]
fn transaction_with_a_wrong_arity_command_is_execabort() {
    let server = RedisServer::start();
    run(move || async move {
        let conn = connect(&server).await;
        let r = conn
            .transaction([cmd("SET").arg("x").arg("1"), cmd("SET").arg("only-a-key")])
            .await;
        match r {
            Err(Error::Server(e)) => assert_eq!(e.kind(), ServerErrorKind::ExecAbort, "{e:?}"),
            other => panic!("expected an EXECABORT server error, got {other:?}"),
        }
        let x: Option<String> = conn.command(["GET", "x"]).await.unwrap();
        assert_eq!(x, None, "the discarded transaction was applied");
        // Not left inside MULTI.
        let r = conn.transaction([["PING"]]).await.unwrap();
        assert_eq!(r, vec![Value::SimpleString("PONG".into())]);
    });
}

#[test]
fn transaction_runtime_error_comes_back_inline() {
    let server = RedisServer::start();
    run(move || async move {
        let conn = connect(&server).await;
        let results = conn
            .transaction([
                cmd("SET").arg("s").arg("text"),
                cmd("INCR").arg("s"),
                cmd("GET").arg("s"),
            ])
            .await
            .unwrap();
        assert_eq!(results.len(), 3);
        assert_eq!(results[0], ok());
        assert!(results[1].as_error().is_some(), "{:?}", results[1]);
        assert_eq!(results[2], bulk("text"));
    });
}

/// Transactions of concurrent tasks are never interleaved with other
/// commands: each task's GET inside MULTI/EXEC sees its own INCR.
#[test]
fn concurrent_transactions_are_atomic() {
    let server = RedisServer::start();
    run(move || async move {
        let conn = connect(&server).await;
        let mut tasks = Vec::new();
        for t in 0..40 {
            let c = conn.clone();
            tasks.push(spawn_local(async move {
                for _ in 0..20 {
                    if t % 2 == 0 {
                        let r = c
                            .transaction([["INCR", "shared"], ["GET", "shared"]])
                            .await?;
                        let n = match &r[0] {
                            Value::Integer(n) => *n,
                            other => panic!("INCR gave {other:?}"),
                        };
                        if r[1] != bulk(&n.to_string()) {
                            return Ok(Some(format!("INCR gave {n}, GET gave {:?}", r[1])));
                        }
                    } else {
                        c.command::<i64>(["INCR", "shared"]).await?;
                    }
                }
                Ok::<_, Error>(None)
            }));
        }
        for task in tasks {
            assert_eq!(within("a task", 10 * SECOND, task).await.unwrap(), None);
        }
        assert_eq!(server.cmd(&["GET", "shared"]), "800");
    });
}

#[test]
fn noreply_commands_land_and_replies_stay_paired() {
    let server = RedisServer::start();
    run(move || async move {
        let conn = connect(&server).await;
        conn.noreply_command(["SET", "nr", "one"]).await.unwrap();
        let v: String = conn.command(["GET", "nr"]).await.unwrap();
        assert_eq!(v, "one");

        let cmds: Vec<Cmd> = (0..100)
            .map(|i| cmd("SET").arg(format!("nr:{i}")).arg(i * 3))
            .collect();
        conn.noreply_pipeline(&cmds).await.unwrap();
        // Errors of no-reply commands are not reported, and do not shift
        // the replies after them.
        conn.noreply_pipeline([cmd("INCR").arg("nr"), cmd("RPUSH").arg("nr").arg("x")])
            .await
            .unwrap();
        for i in [0, 42, 99] {
            let k = format!("nr:{i}");
            let n: i64 = conn.command(["GET", k.as_str()]).await.unwrap();
            assert_eq!(n, i * 3);
        }
        let r = conn.pipeline([["ECHO", "a"], ["GET", "nr"]]).await.unwrap();
        assert_eq!(r, vec![bulk("a"), bulk("one")]);
    });
}

#[test]
fn noreply_pipeline_alongside_normal_commands() {
    let server = RedisServer::start();
    run(move || async move {
        let conn = connect(&server).await;
        let c = conn.clone();
        let writer = spawn_local(async move {
            for round in 0..10 {
                let cmds: Vec<Cmd> = (0..200)
                    .map(|i| cmd("SET").arg(format!("bulk:{round}:{i}")).arg(i))
                    .collect();
                c.noreply_pipeline(&cmds).await?;
            }
            Ok::<_, Error>(())
        });
        let mut readers = Vec::new();
        for t in 0..10 {
            let c = conn.clone();
            readers.push(spawn_local(async move {
                for i in 0..50 {
                    let token = format!("reader {t} call {i}");
                    let echoed: String = c.command(["ECHO", token.as_str()]).await?;
                    if echoed != token {
                        return Ok(Some(format!("sent {token:?}, got {echoed:?}")));
                    }
                }
                Ok::<_, Error>(None)
            }));
        }
        within("the no-reply writer", 10 * SECOND, writer)
            .await
            .unwrap();
        for r in readers {
            assert_eq!(within("a reader", 10 * SECOND, r).await.unwrap(), None);
        }
        for (round, i) in [(0, 0), (5, 123), (9, 199)] {
            let k = format!("bulk:{round}:{i}");
            let n: i64 = conn.command(["GET", k.as_str()]).await.unwrap();
            assert_eq!(n, i);
        }
    });
}

#[test]
fn backpressure_with_four_in_flight() {
    let server = RedisServer::start();
    let config = base(server.port()).max_in_flight(4).build().unwrap();
    run(move || async move {
        let conn = Connection::connect(config).await.unwrap();
        let mut tasks = Vec::new();
        for t in 0..64 {
            let c = conn.clone();
            tasks.push(spawn_local(async move {
                let k = format!("bp:{t}");
                for i in 1..=50i64 {
                    let n: i64 = c.command(["INCR", k.as_str()]).await?;
                    if n != i {
                        return Ok(Some(format!("task {t}: INCR {i} gave {n}")));
                    }
                }
                Ok::<_, Error>(None)
            }));
        }
        for task in tasks {
            assert_eq!(within("a task", 20 * SECOND, task).await.unwrap(), None);
        }
        assert_eq!(server.cmd(&["GET", "bp:63"]), "50");
    });
}

#[test]
fn backpressure_on_batch_bytes() {
    let server = RedisServer::start();
    let config = base(server.port()).max_batch_bytes(64).build().unwrap();
    run(move || async move {
        let conn = Connection::connect(config).await.unwrap();
        let mut tasks = Vec::new();
        for t in 0..32 {
            let c = conn.clone();
            tasks.push(spawn_local(async move {
                for i in 0..20 {
                    let (k, v) = (format!("bb:{t}:{i}"), format!("{t}-{i}-").repeat(100));
                    c.command::<()>(["SET", k.as_str(), v.as_str()]).await?;
                    let back: String = c.command(["GET", k.as_str()]).await?;
                    if back != v {
                        return Ok(Some(format!("{k} came back different")));
                    }
                }
                Ok::<_, Error>(None)
            }));
        }
        for task in tasks {
            assert_eq!(within("a task", 20 * SECOND, task).await.unwrap(), None);
        }
    });
}

#[test]
fn unsupported_commands_are_refused_and_nothing_is_sent() {
    let server = RedisServer::start();
    run(move || async move {
        let conn = connect(&server).await;
        let before = conn.stats();
        let refused: [&[&str]; 11] = [
            &["SUBSCRIBE", "ch"],
            &["subscribe", "ch"],
            &["PSUBSCRIBE", "p*"],
            &["SSUBSCRIBE", "s"],
            &["UNSUBSCRIBE"],
            &["MONITOR"],
            &["SYNC"],
            &["PSYNC", "?", "-1"],
            &["CLIENT", "REPLY", "OFF"],
            &["client", "reply", "skip"],
            &["CLIENT", "REPLY", "ON"],
        ];
        for args in refused {
            match conn.command::<Value>(args).await {
                Err(Error::Unsupported { command, .. }) => {
                    assert!(command.eq_ignore_ascii_case(args[0]), "{command}")
                }
                other => panic!("{args:?}: expected Unsupported, got {other:?}"),
            }
        }
        // Inside a pipeline, a transaction or a no-reply pipeline, the
        // whole call is refused: the SET before it is not sent either.
        let mixed = [vec!["SET", "sneaky", "1"], vec!["SUBSCRIBE", "ch"]];
        let r = conn.pipeline(&mixed).await;
        assert!(matches!(r, Err(Error::Unsupported { .. })), "{r:?}");
        let r = conn.transaction(&mixed).await;
        assert!(matches!(r, Err(Error::Unsupported { .. })), "{r:?}");
        let r = conn.noreply_pipeline(&mixed).await;
        assert!(matches!(r, Err(Error::Unsupported { .. })), "{r:?}");
        let r = conn.noreply_command(["MONITOR"]).await;
        assert!(matches!(r, Err(Error::Unsupported { .. })), "{r:?}");

        assert_eq!(conn.stats(), before, "something was sent");
        let pong: String = conn.command(["PING"]).await.unwrap();
        assert_eq!(pong, "PONG");
        let sneaky: Option<String> = conn.command(["GET", "sneaky"]).await.unwrap();
        assert_eq!(sneaky, None);
        let info: String = conn.command(["CLIENT", "INFO"]).await.unwrap();
        assert_eq!(field(&info, "sub"), Some("0"), "{info}");
        assert_eq!(field(&info, "psub"), Some("0"), "{info}");
    });
}

/// A command with no arguments at all encodes as `*0`, which Redis skips
/// without replying: it must be refused, not left waiting for a reply that
/// it would take from the next caller.
#[test]
fn empty_command_is_refused_and_keeps_the_pairing() {
    let server = RedisServer::start();
    let config = base(server.port()).timeout(2 * SECOND).build().unwrap();
    run(move || async move {
        let conn = Connection::connect(config).await.unwrap();
        let c = conn.clone();
        let empty = spawn_local(async move { c.command::<Value>(Vec::<&str>::new()).await });
        let c = conn.clone();
        let echo = spawn_local(async move { c.command::<String>(["ECHO", "mine"]).await });
        let empty = within("the empty command", 5 * SECOND, empty).await;
        let echo = within("the ECHO after it", 5 * SECOND, echo).await;
        assert!(
            matches!(echo.as_deref(), Ok("mine")),
            "the empty command desynchronised the connection: it gave {empty:?}, \
             and ECHO mine gave {echo:?}"
        );
        assert!(
            empty.is_err() && !matches!(empty, Err(Error::Timeout { .. })),
            "the empty command gave {empty:?}"
        );
        let after: String = conn.command(["ECHO", "after"]).await.unwrap();
        assert_eq!(after, "after");
    });
}

#[test]
fn large_values_both_ways() {
    let server = RedisServer::start();
    run(move || async move {
        let conn = connect(&server).await;
        // Larger than the 4 MiB read size and the 4 MiB batch limit.
        let big: String = (0..9_000_000u32)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let c = conn.clone();
        let echo = spawn_local(async move {
            let r: String = c.command(["ECHO", "small"]).await?;
            Ok::<_, Error>(r)
        });
        conn.command::<()>(["SET", "big", big.as_str()])
            .await
            .unwrap();
        let back: String = conn.command(["GET", "big"]).await.unwrap();
        assert!(back == big, "the value came back different");
        assert_eq!(echo.await.unwrap(), "small");
        let r = conn
            .pipeline([["GET", "big"], ["STRLEN", "big"]])
            .await
            .unwrap();
        assert_eq!(r[1], Value::Integer(9_000_000));
        assert!(r[0] == bulk(&big));
    });
}
