//! Ending a connection: `close()`, dropping every handle (also while the
//! background connect is in its handshake), and `exit_on_disconnection`.

use std::time::{Duration, Instant};

use futures_lite::future;
use glommio::spawn_local;
use redcore::Commands;
use redcore::{Cmd, Connection, Error, Watch};
use redcore_test_support::RedisServer;
use redcore_test_support::client::{
    assert_closed, base, clients_named, eventually, fast, run, wait_until, within,
};

const SECOND: Duration = Duration::from_secs(1);

/// Kills our client from the server side and waits until a call through
/// `conn` fails with `Closed` (calls before may fail with `ConnectionLost`;
/// none may succeed).
async fn kill_and_wait_closed(server: &RedisServer, conn: &Connection) {
    let id: i64 = conn.command(["CLIENT", "ID"]).await.unwrap();
    assert_eq!(server.cmd(&["CLIENT", "KILL", "ID", &id.to_string()]), "1");
    eventually(
        "a call to fail with Closed",
        5 * SECOND,
        async || match conn.command::<String>(["PING"]).await {
            Err(Error::Closed(_)) => true,
            Err(Error::ConnectionLost) => false,
            other => panic!("PING after CLIENT KILL gave {other:?}"),
        },
    )
    .await;
}

#[test]
fn exit_on_disconnection_closes_for_good() {
    let server = RedisServer::start();
    let config = fast(&server)
        .exit_on_disconnection(true)
        .client_name("exit-test")
        .build()
        .unwrap();
    run(move || async move {
        let conn = Connection::connect(config).await.unwrap();
        kill_and_wait_closed(&server, &conn).await;
        assert!(!conn.is_connected());
        // Calls keep failing, whatever their kind, for as long as we look
        // (long enough for several reconnection attempts at this backoff).
        let until = Instant::now() + Duration::from_millis(300);
        while Instant::now() < until {
            assert_closed(conn.command::<String>(["PING"]).await);
            assert_closed(conn.pipeline([["PING"], ["PING"]]).await);
            assert_closed(conn.transaction([["PING"]]).await);
            assert_closed(conn.noreply_command(["PING"]).await);
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(conn.stats().reconnects, 0);
        assert_eq!(clients_named(&server, "exit-test"), 0);
    });
}

/// `PushReceiver::recv` is documented to return `None` once the connection
/// is closed; a connection closed by `exit_on_disconnection` is closed too.
#[test]
fn exit_on_disconnection_ends_the_push_receiver() {
    let server = RedisServer::start();
    let config = fast(&server).exit_on_disconnection(true).build().unwrap();
    run(move || async move {
        let conn = Connection::connect(config).await.unwrap();
        let mut pushes = conn.take_push_receiver().unwrap();
        let recv = spawn_local(async move { pushes.recv().await });
        kill_and_wait_closed(&server, &conn).await;
        let got = within(
            "PushReceiver::recv after the connection closed",
            3 * SECOND,
            recv,
        )
        .await;
        assert_eq!(got, None);
    });
}

#[test]
fn close_fails_every_later_call_with_closed() {
    let server = RedisServer::start();
    let config = base(server.port()).client_name("close-me").build().unwrap();
    run(move || async move {
        let conn = Connection::connect(config).await.unwrap();
        let clone = conn.clone();
        let mut pushes = conn.take_push_receiver().unwrap();
        let recv = spawn_local(async move { pushes.recv().await });

        // A call written before close: it may have run, ConnectionLost.
        let writes = conn.stats().writes;
        let c = conn.clone();
        let written = spawn_local(async move { c.command::<()>(["DEBUG", "SLEEP", "0.2"]).await });
        wait_until("DEBUG SLEEP to be written", 5 * SECOND, || {
            conn.stats().writes > writes
        })
        .await;
        // A call queued but not written yet: Closed.
        let mut queued = Box::pin(conn.command::<String>(["PING"]));
        assert!(future::poll_once(&mut queued).await.is_none());

        conn.close();
        assert_closed(queued.await);
        let r = written.await;
        assert!(matches!(r, Err(Error::ConnectionLost)), "{r:?}");
        assert!(!conn.is_connected());
        assert_closed(conn.command::<String>(["PING"]).await);
        assert_closed(clone.command::<String>(["PING"]).await);
        assert_closed(conn.pipeline([["PING"]]).await);
        assert_closed(conn.transaction([["PING"]]).await);
        assert_closed(conn.noreply_command(["PING"]).await);
        let watched = conn
            .watch_transaction(&["k"], async |_c: &Connection| {
                Ok(Watch::Exec(Vec::<Cmd>::new()))
            })
            .await;
        assert_closed(watched);
        assert_eq!(
            within("PushReceiver::recv after close", SECOND, recv).await,
            None
        );
        wait_until("the server to drop the client", 5 * SECOND, || {
            clients_named(&server, "close-me") == 0
        })
        .await;
    });
}

#[test]
fn dropping_every_handle_closes_the_connection() {
    let server = RedisServer::start();
    let config = base(server.port()).client_name("drop-me").build().unwrap();
    run(move || async move {
        let conn = Connection::connect(config).await.unwrap();
        let clone = conn.clone();
        let timed = conn.with_timeout(SECOND);
        let _: String = timed.command(["PING"]).await.unwrap();
        assert_eq!(clients_named(&server, "drop-me"), 1);
        drop(conn);
        drop(clone);
        // One handle left: still open.
        let _: String = timed.command(["PING"]).await.unwrap();
        assert_eq!(clients_named(&server, "drop-me"), 1);
        drop(timed);
        wait_until("the server to see the socket closed", 5 * SECOND, || {
            clients_named(&server, "drop-me") == 0
        })
        .await;
    });
}

/// Established TCP connections to `port` on loopback, seen from the
/// connecting side (from /proc/net/tcp).
fn established_to(port: u16) -> usize {
    let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let remote = format!(":{port:04X}");
    tcp.lines()
        .skip(1)
        .filter(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            cols.len() > 3 && cols[2].ends_with(&remote) && cols[3] == "01"
        })
        .count()
}

/// `close()` while the background connect is in its handshake (the server
/// accepted the TCP connection but is stopped): once the server answers,
/// the connection must stay closed.
#[test]
fn close_during_the_handshake_stays_closed() {
    let server = RedisServer::start();
    let port = server.port();
    let config = base(port)
        .sync_connect(false)
        .client_name("zombie")
        .timeout(5 * SECOND)
        .build()
        .unwrap();
    run(move || async move {
        let baseline = established_to(port);
        server.pause(true);
        let conn = Connection::connect(config).await.unwrap();
        wait_until(
            "our socket to be accepted by the kernel",
            5 * SECOND,
            || established_to(port) > baseline,
        )
        .await;
        conn.close();
        assert_closed(conn.command::<String>(["PING"]).await);
        server.pause(false);
        // The server now reads the HELLO waiting in the socket, answers it,
        // and must then see the client go away.
        let deadline = Instant::now() + 3 * SECOND;
        while clients_named(&server, "zombie") > 0 || established_to(port) > baseline {
            if Instant::now() >= deadline {
                let ping = conn.command::<String>(["PING"]).await;
                panic!(
                    "closed before the handshake ended, the connection came back: \
                     is_connected() = {}, PING after close() = {ping:?}, \
                     clients named zombie = {}",
                    conn.is_connected(),
                    clients_named(&server, "zombie")
                );
            }
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
        assert!(!conn.is_connected());
        assert_closed(conn.command::<String>(["PING"]).await);
    });
}

/// Dropping every handle while the background connect is in its handshake:
/// once the server answers, the socket must be closed, not kept by a
/// connection nobody can reach any more.
#[test]
fn dropping_every_handle_during_the_handshake_closes_the_socket() {
    let server = RedisServer::start();
    let port = server.port();
    let config = base(port)
        .sync_connect(false)
        .client_name("orphan")
        .timeout(5 * SECOND)
        .build()
        .unwrap();
    run(move || async move {
        let baseline = established_to(port);
        server.pause(true);
        let conn = Connection::connect(config).await.unwrap();
        wait_until(
            "our socket to be accepted by the kernel",
            5 * SECOND,
            || established_to(port) > baseline,
        )
        .await;
        drop(conn);
        server.pause(false);
        wait_until(
            "the server to see the socket of the dropped connection closed",
            3 * SECOND,
            || clients_named(&server, "orphan") == 0 && established_to(port) == baseline,
        )
        .await;
    });
}
