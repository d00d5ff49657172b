//! The health check of a connection against a real server: a server that
//! stops answering (`SIGSTOP`) is found silent within a health interval,
//! nothing more is written to it while it is silent, it is probed on a new
//! socket, and when it answers again the same socket carries on, every
//! call answered. Replies held back on purpose (`BLPOP`, `XREAD BLOCK`)
//! are never taken for silence. A silent socket whose server refuses new
//! connections (a scripted node that stopped listening) is given up.
//! TCP sockets carry keepalive and `TCP_USER_TIMEOUT`.

use std::time::{Duration, Instant};

use redcore::Commands;
use redcore::{Connection, Error, cmd};
use redcore_test_support::client::{base, run, wait_until};
use redcore_test_support::{FakeNode, FakeReply, RedisServer};

/// The health interval of these tests.
const H: Duration = Duration::from_millis(200);
const WAIT: Duration = Duration::from_secs(10);

/// Stops a server process (`SIGSTOP`) until dropped (`SIGCONT`), so that
/// a failing test never leaves it stopped.
struct Frozen(u32);

impl Frozen {
    fn new(pid: u32) -> Frozen {
        signal(pid, libc::SIGSTOP);
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        signal(self.0, libc::SIGCONT);
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on the pid of a server this test started.
    let r = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(
        r,
        0,
        "kill({pid}, {sig}): {}",
        std::io::Error::last_os_error()
    );
}

async fn connect(port: u16) -> Connection {
    let config = base(port)
        .health_interval(Some(H))
        .timeout(WAIT)
        .build()
        .unwrap();
    Connection::connect(config).await.unwrap()
}

#[test]
fn a_stopped_server_is_found_silent_probed_and_waited_for() {
    let server = RedisServer::start();
    let (port, pid) = (server.port(), server.pid());
    run(move || async move {
        let conn = connect(port).await;
        conn.command::<()>(["SET", "k", "v"]).await.unwrap();
        let frozen = Frozen::new(pid);
        let stopped = Instant::now();
        let first = glommio::spawn_local({
            let conn = conn.clone();
            async move { conn.command::<Option<String>>(["GET", "k"]).await }
        });
        wait_until("the socket found silent", WAIT, || conn.stats().stalls == 1).await;
        let noticed = stopped.elapsed();
        eprintln!("silent after {noticed:?} (health interval {H:?})");
        assert!(noticed >= H, "found silent after {noticed:?}, before {H:?}");
        // Nothing more is written while the socket is silent.
        let writes = conn.stats().writes;
        let second = glommio::spawn_local({
            let conn = conn.clone();
            async move { conn.command::<Option<String>>(["GET", "k"]).await }
        });
        // The probe (a new socket, the handshake, PING) gets no answer
        // from a stopped server either.
        wait_until("an unanswered probe", WAIT, || {
            conn.stats().probes_unanswered >= 1
        })
        .await;
        assert_eq!(
            conn.stats().writes,
            writes,
            "a call was written to a silent socket"
        );
        drop(frozen);
        // The server answers again: the same socket carries on.
        assert_eq!(first.await.unwrap().as_deref(), Some("v"));
        assert_eq!(second.await.unwrap().as_deref(), Some("v"));
        let stats = conn.stats();
        assert_eq!(stats.reconnects, 0, "{stats:?}");
        assert_eq!(stats.stalls, 1, "{stats:?}");
        let pong: String = conn.command(["PING"]).await.unwrap();
        assert_eq!(pong, "PONG");
    });
}

#[test]
fn replies_held_back_on_purpose_are_not_silence() {
    let server = RedisServer::start();
    let port = server.port();
    run(move || async move {
        let conn = connect(port).await;
        let other = connect(port).await;
        // BLPOP for 30 s, XREAD BLOCK behind it: for many health
        // intervals nothing arrives, on purpose.
        let started = Instant::now();
        let blpop = glommio::spawn_local({
            let conn = conn.with_timeout(Duration::from_secs(35));
            async move {
                conn.command::<Option<(String, String)>>(["BLPOP", "jobs", "30"])
                    .await
            }
        });
        let xread = glommio::spawn_local({
            let conn = conn.with_timeout(Duration::from_secs(35));
            async move {
                conn.command::<redcore::Value>(
                    cmd("XREAD")
                        .arg("BLOCK")
                        .arg(500)
                        .arg("STREAMS")
                        .arg("events")
                        .arg("$"),
                )
                .await
            }
        });
        wait_until("both calls written", WAIT, || conn.stats().writes >= 1).await;
        glommio::timer::sleep(6 * H).await;
        other
            .command::<i64>(["LPUSH", "jobs", "one"])
            .await
            .unwrap();
        let popped = blpop.await.unwrap();
        assert_eq!(popped, Some(("jobs".to_owned(), "one".to_owned())));
        // XREAD then blocks its own 500 ms and answers nil.
        assert_eq!(xread.await.unwrap(), redcore::Value::Nil);
        eprintln!("blocked calls answered after {:?}", started.elapsed());
        let stats = conn.stats();
        assert_eq!(
            stats.stalls, 0,
            "a blocked reply was taken for silence: {stats:?}"
        );
        assert_eq!(stats.probes_unanswered, 0, "{stats:?}");
        assert_eq!(stats.reconnects, 0, "{stats:?}");
    });
}

#[test]
fn a_silent_socket_whose_server_refuses_new_connections_is_given_up() {
    // The node answers the handshake and PING, and keeps GETs unanswered.
    let mut node = FakeNode::start(|args| {
        if args[0].eq_ignore_ascii_case(b"GET") {
            FakeReply::Silent
        } else {
            FakeReply::Default
        }
    });
    let port = node.port();
    // It stops listening once the GET arrived: its host is gone, say, and
    // the socket we hold leads nowhere.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let client = std::thread::spawn(move || {
        run(move || async move {
            let config = base(port)
                .health_interval(Some(H))
                .timeout(WAIT)
                .backoff_initial(Duration::from_millis(50))
                .backoff_max(Duration::from_millis(200))
                .build()
                .unwrap();
            let conn = Connection::connect(config).await.unwrap();
            let get = glommio::spawn_local({
                let conn = conn.clone();
                async move { conn.command::<Option<String>>(["GET", "k"]).await }
            });
            wait_until("the GET written", WAIT, || conn.stats().writes >= 1).await;
            tx.send(()).unwrap();
            let started = Instant::now();
            let r = get.await;
            let took = started.elapsed();
            eprintln!("the GET ended after {took:?}: {r:?}");
            assert!(matches!(r, Err(Error::ConnectionLost)), "{r:?}");
            assert!(took < WAIT / 2, "given up after {took:?}");
            assert_eq!(conn.stats().stalls, 1);
        })
    });
    rx.recv_timeout(WAIT).expect("the client wrote its GET");
    node.stop_listening();
    client.join().expect("the client's checks");
}
