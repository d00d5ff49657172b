//! `watch_transaction`: optimistic transactions with `WATCH`, their
//! retries on conflict, aborts, exclusivity, and their behaviour when the
//! socket is not (or no longer) up.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use glommio::spawn_local;
use redcore::Commands;
use redcore::{Connection, Error, Value, Watch, cmd};
use redcore_test_support::RedisServer;
use redcore_test_support::client::{bulk, connect, fast, run, wait_until, within};

const SECOND: Duration = Duration::from_secs(1);

fn ok() -> Value {
    Value::SimpleString("OK".into())
}

/// Reads `key` as a number (0 when missing) through `c`.
async fn read_n(c: &Connection, key: &str) -> Result<i64, Error> {
    Ok(c.command::<Option<i64>>(["GET", key]).await?.unwrap_or(0))
}

/// `SET key n+1` in MULTI/EXEC.
fn increment(key: &str, n: i64) -> Watch {
    Watch::Exec(vec![cmd("SET").arg(key).arg(n + 1)])
}

#[test]
fn watch_transaction_succeeds() {
    let server = RedisServer::start();
    run(move || async move {
        let conn = connect(&server).await;
        conn.command::<()>(["SET", "wk", "41"]).await.unwrap();
        let mut calls = 0;
        let r = conn
            .watch_transaction(&["wk"], async |c: &Connection| {
                calls += 1;
                let n = read_n(c, "wk").await?;
                Ok(Watch::Exec(vec![
                    cmd("SET").arg("wk").arg(n + 1),
                    cmd("GET").arg("wk"),
                ]))
            })
            .await
            .unwrap();
        assert_eq!(r, vec![ok(), bulk("42")]);
        assert_eq!(calls, 1);
        assert_eq!(server.cmd(&["GET", "wk"]), "42");
    });
}

#[test]
fn watch_conflict_is_retried() {
    let server = RedisServer::start();
    run(move || async move {
        let conn = connect(&server).await;
        let other = connect(&server).await;
        conn.command::<()>(["SET", "wk", "10"]).await.unwrap();
        let mut calls = 0;
        let r = conn
            .watch_transaction(&["wk"], async |c: &Connection| {
                calls += 1;
                let n = read_n(c, "wk").await?;
                if calls == 1 {
                    other.command::<()>(["SET", "wk", "100"]).await?;
                }
                Ok(increment("wk", n))
            })
            .await
            .unwrap();
        assert_eq!(r, vec![ok()]);
        assert_eq!(calls, 2);
        // The second try read the other client's value.
        assert_eq!(server.cmd(&["GET", "wk"]), "101");
    });
}

#[test]
fn watch_conflict_on_every_try_is_watch_conflict() {
    let server = RedisServer::start();
    run(move || async move {
        let conn = connect(&server).await;
        let other = connect(&server).await;
        let mut calls = 0;
        let r = conn
            .watch_transaction(&["wk"], async |c: &Connection| {
                calls += 1;
                let n = read_n(c, "wk").await?;
                other.command::<i64>(["INCRBY", "wk", "1000"]).await?;
                Ok(increment("wk", n))
            })
            .await;
        assert!(matches!(r, Err(Error::WatchConflict { tries: 4 })), "{r:?}");
        assert_eq!(calls, 4, "default: one try and 3 retries");
        assert_eq!(server.cmd(&["GET", "wk"]), "4000", "a conflicting EXEC ran");

        let mut calls = 0;
        let r = conn
            .watch_transaction_with_retries(&["wk"], 0, async |c: &Connection| {
                calls += 1;
                let n = read_n(c, "wk").await?;
                other.command::<i64>(["INCRBY", "wk", "1000"]).await?;
                Ok(increment("wk", n))
            })
            .await;
        assert!(matches!(r, Err(Error::WatchConflict { tries: 1 })), "{r:?}");
        assert_eq!(calls, 1);
    });
}

#[test]
fn abort_unwatches() {
    let server = RedisServer::start();
    run(move || async move {
        let conn = connect(&server).await;
        let other = connect(&server).await;
        conn.command::<()>(["SET", "wk", "1"]).await.unwrap();
        let r = conn
            .watch_transaction(&["wk"], async |_c: &Connection| {
                Ok(Watch::Abort("not today".into()))
            })
            .await;
        match r {
            Err(Error::Aborted(reason)) => assert_eq!(reason, "not today"),
            other => panic!("expected Aborted, got {other:?}"),
        }
        // If the WATCH were still on the socket, this change would make
        // the next EXEC return nil.
        other.command::<()>(["SET", "wk", "2"]).await.unwrap();
        let r = conn.transaction([["SET", "wk", "3"]]).await.unwrap();
        assert_eq!(r, vec![ok()]);
        assert_eq!(server.cmd(&["GET", "wk"]), "3");
    });
}

#[test]
fn error_in_the_function_is_returned_and_unwatches() {
    let server = RedisServer::start();
    run(move || async move {
        let conn = connect(&server).await;
        let other = connect(&server).await;
        conn.command::<()>(["SET", "wk", "text"]).await.unwrap();
        let mut calls = 0;
        let r = conn
            .watch_transaction(&["wk"], async |c: &Connection| {
                calls += 1;
                // INCR of a string: the server error ends the transaction.
                let n: i64 = c.command(["INCR", "wk"]).await?;
                Ok(increment("wk", n))
            })
            .await;
        assert!(matches!(r, Err(Error::Server(_))), "{r:?}");
        assert_eq!(calls, 1);
        other.command::<()>(["SET", "wk", "changed"]).await.unwrap();
        let r = conn.transaction([["SET", "wk", "mine"]]).await.unwrap();
        assert_eq!(r, vec![ok()]);
        assert_eq!(server.cmd(&["GET", "wk"]), "mine");
    });
}

/// While a watch session runs, other tasks' calls on the same connection
/// wait (they would disturb the WATCH), then run.
#[test]
fn other_tasks_wait_for_the_watch_session() {
    let server = RedisServer::start();
    run(move || async move {
        let conn = connect(&server).await;
        conn.command::<()>(["SET", "wk", "5"]).await.unwrap();
        let mut calls = 0;
        let mut writer = None;
        let r = conn
            .watch_transaction(&["wk"], async |c: &Connection| {
                calls += 1;
                let n = read_n(c, "wk").await?;
                if calls == 1 {
                    let (outer, tried) = (conn.clone(), Rc::new(Cell::new(false)));
                    let flag = tried.clone();
                    writer = Some(spawn_local(async move {
                        flag.set(true);
                        outer.command::<()>(["SET", "wk", "outer"]).await
                    }));
                    wait_until("the other task to try its SET", 5 * SECOND, || tried.get()).await;
                    let v: String = c.command(["GET", "wk"]).await?;
                    assert_eq!(v, "5", "the other task's SET ran inside the session");
                }
                Ok(increment("wk", n))
            })
            .await
            .unwrap();
        assert_eq!(r, vec![ok()]);
        assert_eq!(calls, 1, "the other task's SET caused a conflict");
        within("the waiting SET", 5 * SECOND, writer.unwrap())
            .await
            .unwrap();
        assert_eq!(server.cmd(&["GET", "wk"]), "outer");
    });
}

#[test]
fn fifty_concurrent_watch_transactions_lose_no_update() {
    let server = RedisServer::start();
    run(move || async move {
        let conn = connect(&server).await;
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let c = conn.clone();
            tasks.push(spawn_local(async move {
                c.watch_transaction(&["counter"], async |c: &Connection| {
                    let n = read_n(c, "counter").await?;
                    Ok(increment("counter", n))
                })
                .await
            }));
        }
        for task in tasks {
            let r = within("a watch transaction", 10 * SECOND, task).await;
            assert_eq!(r.unwrap(), vec![ok()]);
        }
        assert_eq!(server.cmd(&["GET", "counter"]), "50");
    });
}

/// A watch transaction started while the connection is still connecting
/// (`sync_connect(false)`) waits for the socket like any other call, within
/// its deadline; it is not a conflict: no watched key changed.
#[test]
fn watch_transaction_waits_for_the_first_socket() {
    let server = RedisServer::start();
    let config = fast(&server).sync_connect(false).build().unwrap();
    run(move || async move {
        let conn = Connection::connect(config).await.unwrap();
        let mut calls = 0;
        let r = conn
            .watch_transaction(&["wk"], async |c: &Connection| {
                calls += 1;
                let n = read_n(c, "wk").await?;
                Ok(increment("wk", n))
            })
            .await;
        assert_eq!(
            r.as_ref().ok(),
            Some(&vec![ok()]),
            "got {r:?} after {calls} calls of the function"
        );
        assert_eq!(server.cmd(&["GET", "wk"]), "1");
    });
}

/// The socket dies and comes back while the function runs, and another
/// client changes the watched key meanwhile. The `WATCH` died with the old
/// socket, so the transaction must not run unwatched on the new one (that
/// would commit a value computed from a stale read): it is tried again.
#[test]
fn watch_transaction_never_commits_a_stale_read_across_a_reconnect() {
    let server = RedisServer::start();
    let config = fast(&server).build().unwrap();
    run(move || async move {
        let conn = Connection::connect(config).await.unwrap();
        let other = connect(&server).await;
        let mut calls = 0;
        let r = conn
            .watch_transaction(&["wk"], async |c: &Connection| {
                calls += 1;
                let n = read_n(c, "wk").await?;
                if calls == 1 {
                    let id: i64 = c.command(["CLIENT", "ID"]).await?;
                    server.cmd(&["CLIENT", "KILL", "ID", &id.to_string()]);
                    wait_until("the connection to reconnect", 5 * SECOND, || {
                        c.stats().reconnects == 1 && c.is_connected()
                    })
                    .await;
                    other.command::<()>(["SET", "wk", "100"]).await?;
                }
                Ok(increment("wk", n))
            })
            .await;
        let value = server.cmd(&["GET", "wk"]);
        assert_eq!(
            value, "101",
            "the other client's write was lost: the transaction ran on the new \
             socket without WATCH (result {r:?}, {calls} calls of the function)"
        );
        assert_eq!(r.unwrap(), vec![ok()]);
        assert_eq!(calls, 2);
    });
}
