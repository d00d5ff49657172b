//! Failure and recovery: servers that start late, die mid-pipeline or kill
//! our client; deadlines of written and unwritten calls; blocking commands;
//! cancellation.

mod common_conn;
mod support;

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common_conn::{base, fast, run, wait_for_pong, wait_until, within};
use futures_lite::future;
use glommio::spawn_local;
use redcore::auth::{CredentialProvider, Credentials, LocalBoxFuture};
use redcore::{Connection, Error, cmd};
use support::RedisServer;

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn sync_connect_false_waits_for_a_server_that_starts_later() {
    let mut server = RedisServer::start();
    let config = fast(&server)
        .sync_connect(false)
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    server.kill();
    run(move || async move {
        let started = Instant::now();
        let conn = Connection::connect(config).await.unwrap();
        assert!(started.elapsed() < SECOND, "connect waited");
        assert!(!conn.is_connected());
        let c = conn.clone();
        let incr = spawn_local(async move { c.command::<i64>(["INCR", "late"]).await });
        wait_until("the INCR to be queued", 5 * SECOND, || {
            conn.stats().calls == 1
        })
        .await;
        assert!(!conn.is_connected());
        server.restart();
        let n = within("the queued INCR", 10 * SECOND, incr).await.unwrap();
        assert_eq!(n, 1);
        assert!(conn.is_connected());
        assert_eq!(server.cmd(&["GET", "late"]), "1");
        assert_eq!(
            conn.stats().reconnects,
            0,
            "the first socket is no reconnect"
        );
    });
}

#[test]
fn killing_the_server_mid_pipeline_answers_or_fails_every_call() {
    let mut server = RedisServer::start();
    let config = fast(&server).timeout(SECOND).build().unwrap();
    run(move || async move {
        let conn = Connection::connect(config).await.unwrap();
        let stop = Rc::new(Cell::new(false));
        let failed_tasks = Rc::new(Cell::new(0usize));
        let mut tasks = Vec::new();
        for t in 0..200 {
            let (c, stop, failed_tasks) = (conn.clone(), stop.clone(), failed_tasks.clone());
            tasks.push(spawn_local(async move {
                let (mut ok, mut errors) = (0u64, 0u64);
                let mut i = 0u64;
                while !stop.get() {
                    let token = format!("{t}:{i}");
                    i += 1;
                    match c.command::<String>(["ECHO", token.as_str()]).await {
                        Ok(v) if v == token => ok += 1,
                        Ok(v) => return Err(format!("task {t} sent {token} and got {v}")),
                        Err(Error::ConnectionLost | Error::Timeout { .. }) => {
                            errors += 1;
                            if errors == 1 {
                                failed_tasks.set(failed_tasks.get() + 1);
                            }
                        }
                        Err(e) => return Err(format!("task {t}: unexpected error {e:?}")),
                    }
                }
                Ok((ok, errors))
            }));
        }
        wait_until("2000 replies before the kill", 10 * SECOND, || {
            conn.stats().replies >= 2000
        })
        .await;
        server.kill();
        wait_until("every task to see its call fail", 10 * SECOND, || {
            failed_tasks.get() == 200
        })
        .await;
        server.restart();
        wait_for_pong(&conn, 10 * SECOND).await;
        stop.set(true);
        let mut total_ok = 0;
        for task in tasks {
            let (ok, errors) = within("a task to finish", 10 * SECOND, task)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(errors >= 1);
            total_ok += ok;
        }
        assert!(total_ok >= 2000);
        assert!(conn.stats().reconnects >= 1, "{:?}", conn.stats());
        conn.command::<()>(["SET", "after", "restart"])
            .await
            .unwrap();
        let v: String = conn.command(["GET", "after"]).await.unwrap();
        assert_eq!(v, "restart");
    });
}

/// Hands out the ACL user's credentials and counts how often it is asked.
struct Counting(Arc<AtomicUsize>);

impl CredentialProvider for Counting {
    fn credentials(&self) -> LocalBoxFuture<'_, redcore::Result<Credentials>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Box::pin(async {
            Ok(Credentials {
                username: Some("app".into()),
                password: "app-pw".into(),
            })
        })
    }
}

#[test]
fn client_kill_reconnects_and_asks_the_credential_provider_again() {
    let server = RedisServer::builder()
        .password("admin-pw")
        .acl_user("app", "app-pw")
        .start();
    let asked = Arc::new(AtomicUsize::new(0));
    let config = fast(&server)
        .credential_provider(Counting(asked.clone()))
        .build()
        .unwrap();
    run(move || async move {
        let conn = Connection::connect(config).await.unwrap();
        assert_eq!(asked.load(Ordering::SeqCst), 1);
        let who: String = conn.command(["ACL", "WHOAMI"]).await.unwrap();
        assert_eq!(who, "app");
        let id: i64 = conn.command(["CLIENT", "ID"]).await.unwrap();
        assert_eq!(server.cmd(&["CLIENT", "KILL", "ID", &id.to_string()]), "1");
        wait_for_pong(&conn, 10 * SECOND).await;
        assert_eq!(asked.load(Ordering::SeqCst), 2);
        assert_eq!(conn.stats().reconnects, 1);
        let new_id: i64 = conn.command(["CLIENT", "ID"]).await.unwrap();
        assert_ne!(new_id, id);
        let who: String = conn.command(["ACL", "WHOAMI"]).await.unwrap();
        assert_eq!(who, "app");
    });
}

#[test]
fn written_call_times_out_and_the_stream_stays_paired() {
    let server = RedisServer::start();
    let uri = common_conn::url(&server);
    run(move || async move {
        let conn = Connection::connect(uri.as_str()).await.unwrap();
        conn.command::<()>(["SET", "own", "own-reply"])
            .await
            .unwrap();
        let calls = conn.stats().calls;
        let slow = conn.with_timeout(Duration::from_millis(100));
        let sleeper = spawn_local(async move {
            let started = Instant::now();
            let r = slow.command::<()>(["DEBUG", "SLEEP", "0.5"]).await;
            (r, started.elapsed())
        });
        wait_until("DEBUG SLEEP to be queued", 5 * SECOND, || {
            conn.stats().calls == calls + 1
        })
        .await;
        let c = conn.clone();
        let getter = spawn_local(async move {
            let started = Instant::now();
            let r = c.command::<String>(["GET", "own"]).await;
            (r, started.elapsed())
        });
        let (slept, took) = sleeper.await;
        assert!(
            matches!(
                slept,
                Err(Error::Timeout {
                    maybe_applied: true
                })
            ),
            "{slept:?}"
        );
        assert!(took >= Duration::from_millis(100), "{took:?}");
        assert!(
            took < Duration::from_millis(400),
            "timed out only after {took:?}"
        );
        let (got, waited) = getter.await;
        assert_eq!(got.unwrap(), "own-reply");
        assert!(
            waited >= Duration::from_millis(250),
            "GET did not wait: {waited:?}"
        );
        // Usable, the same socket, replies still paired.
        for i in 0..20 {
            let token = format!("after-{i}");
            let echoed: String = conn.command(["ECHO", token.as_str()]).await.unwrap();
            assert_eq!(echoed, token);
        }
        let stats = conn.stats();
        assert_eq!(stats.reconnects, 0);
        assert_eq!(stats.timeouts, 1);
        assert!(conn.is_connected());
    });
}

#[test]
fn unwritten_call_times_out_and_is_never_sent() {
    let mut server = RedisServer::start();
    let config = fast(&server).build().unwrap();
    run(move || async move {
        let conn = Connection::connect(config).await.unwrap();
        server.kill();
        wait_until("the connection to notice the kill", 5 * SECOND, || {
            !conn.is_connected()
        })
        .await;
        let r = conn
            .with_timeout(Duration::from_millis(200))
            .command::<i64>(["INCR", "never"])
            .await;
        assert!(
            matches!(
                r,
                Err(Error::Timeout {
                    maybe_applied: false
                })
            ),
            "{r:?}"
        );
        server.restart();
        wait_for_pong(&conn, 10 * SECOND).await;
        let v: Option<String> = conn.command(["GET", "never"]).await.unwrap();
        assert_eq!(v, None, "the timed-out INCR was sent after reconnecting");
    });
}

#[test]
fn cancelled_calls_do_not_desynchronise_the_stream() {
    let server = RedisServer::start();
    let uri = common_conn::url(&server);
    run(move || async move {
        let conn = Connection::connect(uri.as_str()).await.unwrap();
        for i in 0..20 {
            let (k, v) = (format!("k{i}"), format!("v{i}"));
            conn.command::<()>(["SET", k.as_str(), v.as_str()])
                .await
                .unwrap();
        }
        server.pause(true);

        // Dropped before it was written: `or` polls the command first
        // (queueing it), then the ready branch wins and drops it.
        let (calls, writes) = (conn.stats().calls, conn.stats().writes);
        let r = future::or(
            async { Some(conn.command::<i64>(["INCR", "cancelled-unwritten"]).await) },
            async { None },
        )
        .await;
        assert!(r.is_none());
        assert_eq!(conn.stats().calls, calls + 1, "the INCR was never queued");
        assert_eq!(conn.stats().writes, writes);

        // Dropped after it was written: the late reply must be discarded.
        let r = future::or(
            async { Some(conn.command::<String>(["ECHO", "cancelled-written"]).await) },
            wait_written(&conn, writes),
        )
        .await;
        assert!(r.is_none());

        // The same for a pipeline and a transaction.
        let writes = conn.stats().writes;
        let r = future::or(
            async { Some(conn.pipeline([["ECHO", "p1"], ["ECHO", "p2"]]).await) },
            wait_written(&conn, writes),
        )
        .await;
        assert!(r.is_none());
        let writes = conn.stats().writes;
        let r = future::or(
            async { Some(conn.transaction([["ECHO", "t1"]]).await) },
            wait_written(&conn, writes),
        )
        .await;
        assert!(r.is_none());

        // Live calls queued behind the cancelled ones, while paused.
        let writes = conn.stats().writes;
        let mut tasks = Vec::new();
        for i in 0..20 {
            let c = conn.clone();
            tasks.push(spawn_local(async move {
                let k = format!("k{i}");
                c.command::<String>(["GET", k.as_str()]).await
            }));
        }
        wait_written::<()>(&conn, writes).await;
        server.pause(false);
        for (i, task) in tasks.into_iter().enumerate() {
            let got = within("a GET after SIGCONT", 5 * SECOND, task).await;
            assert_eq!(got.unwrap(), format!("v{i}"));
        }
        let r = conn.pipeline([["ECHO", "a"], ["ECHO", "b"]]).await.unwrap();
        assert_eq!(r, vec![common_conn::bulk("a"), common_conn::bulk("b")]);
        let v: Option<String> = conn.command(["GET", "cancelled-unwritten"]).await.unwrap();
        assert_eq!(v, None, "a call dropped before being written was sent");
        assert_eq!(conn.stats().reconnects, 0);
    });
}

/// Resolves (to `None`) once the connection has written since `writes`.
async fn wait_written<T>(conn: &Connection, writes: u64) -> Option<T> {
    wait_until("a write", 5 * SECOND, || conn.stats().writes > writes).await;
    None
}

#[test]
fn many_calls_fail_alike_when_the_server_is_down() {
    // Every call of a connection whose server is gone fails within its own
    // deadline (none hangs), with maybe_applied false: none was written.
    let mut server = RedisServer::start();
    let config = fast(&server)
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    run(move || async move {
        let conn = Connection::connect(config).await.unwrap();
        server.kill();
        wait_until("the connection to notice", 5 * SECOND, || {
            !conn.is_connected()
        })
        .await;
        let mut tasks = Vec::new();
        for i in 0..50 {
            let c = conn.clone();
            tasks.push(spawn_local(async move {
                let k = format!("down-{i}");
                c.command::<()>(cmd("SET").arg(k).arg(i)).await
            }));
        }
        for task in tasks {
            let r = within("a call while the server is down", 3 * SECOND, task).await;
            assert!(
                matches!(
                    r,
                    Err(Error::Timeout {
                        maybe_applied: false
                    })
                ),
                "{r:?}"
            );
        }
    });
}

/// A blocking command with its own, longer deadline outlives the
/// configured timeout; calls queued behind it time out (they were written)
/// without the socket being taken for dead.
#[test]
fn blocking_command_with_a_longer_timeout() {
    let server = RedisServer::start();
    let config = base(server.port())
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    run(move || async move {
        let conn = Connection::connect(config).await.unwrap();
        let calls = conn.stats().calls;
        let c = conn.with_timeout(5 * SECOND);
        let blpop = spawn_local(async move {
            let started = Instant::now();
            let r = c.command::<Option<Vec<String>>>(["BLPOP", "q", "1"]).await;
            (r, started.elapsed())
        });
        wait_until("BLPOP to be queued", 5 * SECOND, || {
            conn.stats().calls > calls
        })
        .await;
        let behind = conn.command::<String>(["PING"]).await;
        assert!(
            matches!(
                behind,
                Err(Error::Timeout {
                    maybe_applied: true
                })
            ),
            "{behind:?}"
        );
        let (r, took) = blpop.await;
        assert_eq!(r.unwrap(), None);
        assert!(took >= Duration::from_millis(900), "{took:?}");
        let pong: String = conn.command(["PING"]).await.unwrap();
        assert_eq!(pong, "PONG");
        assert_eq!(conn.stats().reconnects, 0);
    });
}
