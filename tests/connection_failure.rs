//! Failure and recovery: servers that start late, die mid-pipeline or kill
//! our client; deadlines of written and unwritten calls; blocking commands;
//! cancellation.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_lite::future;
use glommio::spawn_local;
use redcore::Commands;
use redcore::auth::{CredentialProvider, Credentials, LocalBoxFuture};
use redcore::{Connection, Error, cmd};
use redcore_test_support::RedisServer;
use redcore_test_support::client::{base, bulk, fast, run, url, wait_for_pong, wait_until, within};

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
    let uri = url(&server);
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
    let uri = url(&server);
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
        assert_eq!(r, vec![bulk("a"), bulk("b")]);
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

/// A server that stops reading (SIGSTOP) with a 48 MiB batch on its way,
/// then dies: the calls whose bytes the kernel took may have been applied
/// and fail with `ConnectionLost`; the calls whose bytes never left the
/// client go out on the next socket and succeed, exactly once. On the
/// io_uring transport the whole batch is handed to the ring at once, so
/// this checks that its unsent tail is taken back, not failed with it.
#[test]
fn bytes_never_sent_go_out_on_the_next_socket() {
    const CALLS: usize = 48;
    let mut server = RedisServer::start();
    let config = fast(&server)
        .timeout(30 * SECOND)
        // One batch for all 48 calls: far more than the socket buffers
        // take while the server does not read.
        .max_batch_bytes(64 << 20)
        .build()
        .unwrap();
    let value = |i: usize| vec![b'a' + (i % 26) as u8; 1 << 20];
    run(move || async move {
        let conn = Connection::connect(config).await.unwrap();
        server.pause(true);
        let before = conn.stats();
        let mut tasks = Vec::new();
        for i in 0..CALLS {
            let c = conn.clone();
            tasks.push(spawn_local(async move {
                let key = format!("big:{i}");
                c.command::<()>(["SET".as_bytes(), key.as_bytes(), &value(i)])
                    .await
            }));
        }
        wait_until("every call queued and a write made", 10 * SECOND, || {
            let now = conn.stats();
            now.calls - before.calls == CALLS as u64 && now.writes > before.writes
        })
        .await;
        server.restart();
        // The server died with what it had received.
        let (carried, _) = carried_over("a SET", tasks).await;
        let carried: Vec<usize> = carried.into_iter().map(|(i, ())| i).collect();
        let check = Connection::connect(fast(&server).build().unwrap())
            .await
            .unwrap();
        for i in 0..CALLS {
            let key = format!("big:{i}");
            let got: Option<Vec<u8>> = check.command(["GET", key.as_str()]).await.unwrap();
            if carried.contains(&i) {
                assert!(got == Some(value(i)), "big:{i} is missing or wrong");
            } else {
                assert!(got.is_none(), "big:{i} failed but was applied");
            }
        }
    });
}

/// A server that stops answering (SIGSTOP) while a 48 MiB batch waits for
/// room in the socket: the socket is taken for dead once the oldest reply
/// is overdue by a whole timeout, and the calls whose bytes never left the
/// client go out on the next socket once the server is back. `APPEND`
/// shows each carried call applied exactly once; the calls that fail as
/// possibly applied are applied at most once (the old socket's bytes still
/// reach the server when it resumes).
#[test]
fn a_stalled_socket_gives_its_unsent_bytes_to_the_next() {
    const CALLS: usize = 48;
    const MIB: usize = 1 << 20;
    let server = RedisServer::start();
    let config = fast(&server)
        .timeout(Duration::from_millis(300))
        .max_batch_bytes(64 << 20)
        .build()
        .unwrap();
    run(move || async move {
        let conn = Connection::connect(config).await.unwrap();
        server.pause(true);
        // The oldest call, with the short timeout: its reply overdue by
        // another 300 ms marks the socket dead.
        let c = conn.clone();
        let ping = spawn_local(async move { c.command::<String>(["PING"]).await });
        let patient = conn.with_timeout(30 * SECOND);
        let mut tasks = Vec::new();
        for i in 0..CALLS {
            let c = patient.clone();
            tasks.push(spawn_local(async move {
                let key = format!("log:{i}");
                c.command::<i64>(["APPEND".as_bytes(), key.as_bytes(), &vec![b'x'; MIB]])
                    .await
            }));
        }
        assert!(matches!(
            ping.await,
            Err(Error::Timeout {
                maybe_applied: true
            })
        ));
        wait_until("the stalled socket to be dropped", 10 * SECOND, || {
            !conn.is_connected()
        })
        .await;
        server.pause(false);
        let (carried, lost) = carried_over("an APPEND", tasks).await;
        for (i, len) in carried {
            assert_eq!(len, MIB as i64, "log:{i} was applied more than once");
        }
        let check = Connection::connect(fast(&server).build().unwrap())
            .await
            .unwrap();
        for i in lost {
            let len: i64 = check
                .command(["STRLEN", format!("log:{i}").as_str()])
                .await
                .unwrap();
            assert!(len == 0 || len == MIB as i64, "log:{i} has {len} bytes");
        }
    });
}

/// Waits for the calls of a carry-over test, in stream order: returns the
/// results of those that succeeded (with their index) and the indexes of
/// those that failed as possibly applied. Checks that the failed ones are
/// a prefix of the stream (the bytes the old socket took), that there are
/// some, and that at least half of the calls were carried over.
async fn carried_over<T>(
    what: &str,
    tasks: Vec<glommio::Task<Result<T, Error>>>,
) -> (Vec<(usize, T)>, Vec<usize>) {
    let calls = tasks.len();
    let mut carried = Vec::new();
    let mut lost = Vec::new();
    for (i, task) in tasks.into_iter().enumerate() {
        match within(&format!("{what} to finish"), 30 * SECOND, task).await {
            Ok(v) => carried.push((i, v)),
            Err(Error::ConnectionLost) => lost.push(i),
            Err(e) => panic!("{what} ({i}): unexpected error {e:?}"),
        }
    }
    eprintln!(
        "{} calls failed as possibly applied, {} carried over",
        lost.len(),
        carried.len()
    );
    assert!(
        !lost.is_empty(),
        "no call was in flight when the socket died"
    );
    assert_eq!(lost, (0..lost.len()).collect::<Vec<_>>());
    assert!(
        carried.len() >= calls / 2,
        "only {} of {calls} calls were carried over",
        carried.len()
    );
    (carried, lost)
}
