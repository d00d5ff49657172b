//! What tests that drive redcore's clients share: running a glommio
//! executor, waiting on conditions with deadlines (never a bare sleep
//! standing in for an event), configurations pointing at a test server,
//! reading what the server says about our client, and assertions on
//! errors.
//!
//! Its [`wait_until`] yields to the executor between polls; the crate
//! root's [`wait_until`](crate::wait_until) blocks a plain thread.

use std::future::Future;
use std::net::{Ipv4Addr, TcpListener};
use std::time::{Duration, Instant};

use redcore::Commands;
use redcore::config::{ConnectionConfig, ConnectionConfigBuilder};
use redcore::{Connection, Error, Value};

use crate::{RedisServer, key_slot};

/// How often conditions are polled.
const POLL: Duration = Duration::from_millis(3);

/// Runs `f` on a fresh glommio executor and waits for it. The io memory
/// stays small: the memlock limit of the test machines is 8 MiB.
pub fn run<F: Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(64 << 10)
        .spawn(f)
        .expect("spawn the executor")
        .join()
        .expect("the test's executor panicked");
}

/// A builder for a TCP connection to `127.0.0.1:port`.
pub fn base(port: u16) -> ConnectionConfigBuilder {
    ConnectionConfig::builder().host("127.0.0.1").port(port)
}

/// A builder for `server`, reconnecting quickly (tests kill and restart
/// servers and should not wait out the default backoff).
pub fn fast(server: &RedisServer) -> ConnectionConfigBuilder {
    base(server.port())
        .backoff_initial(Duration::from_millis(10))
        .backoff_max(Duration::from_millis(100))
}

/// `redis://127.0.0.1:port`.
pub fn url(server: &RedisServer) -> String {
    format!("redis://127.0.0.1:{}", server.port())
}

/// Connects to `server` with default options.
pub async fn connect(server: &RedisServer) -> Connection {
    Connection::connect(url(server)).await.expect("connect")
}

/// Polls `cond` every few milliseconds (yielding to the executor with a
/// timer in between) until it holds; panics naming `what` at the deadline.
pub async fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        glommio::timer::sleep(POLL).await;
    }
}

/// [`wait_until`] with an asynchronous condition (for example "a command
/// succeeds").
pub async fn eventually(what: &str, timeout: Duration, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        glommio::timer::sleep(POLL).await;
    }
}

/// Awaits `fut`, panicking naming `what` if it takes longer than `timeout`
/// (a hang becomes a failure instead of a stuck test).
pub async fn within<T>(what: &str, timeout: Duration, fut: impl Future<Output = T>) -> T {
    futures_lite::future::or(async { Some(fut.await) }, async {
        glommio::timer::sleep(timeout).await;
        None
    })
    .await
    .unwrap_or_else(|| panic!("{what} did not finish within {timeout:?}"))
}

/// Waits until a `PING` through `conn` answers `PONG` (the connection is
/// back after a disconnection).
pub async fn wait_for_pong(conn: &Connection, timeout: Duration) {
    let quick = conn.with_timeout(Duration::from_millis(500));
    eventually("a PING to succeed", timeout, async || {
        matches!(
            quick.command::<String>(["PING"]).await.as_deref(),
            Ok("PONG")
        )
    })
    .await;
}

/// A loopback port nothing listens on (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// The text of a string-like reply.
pub fn text(v: &Value) -> String {
    let bytes = v
        .as_bytes()
        .unwrap_or_else(|| panic!("expected a string reply, got {v:?}"));
    String::from_utf8_lossy(bytes).into_owned()
}

/// A bulk string value, to compare replies with.
pub fn bulk(s: &str) -> Value {
    Value::BulkString(s.as_bytes().to_vec().into())
}

/// One `field=value` of a `CLIENT INFO` / `CLIENT LIST` line.
pub fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    line.split_ascii_whitespace()
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

/// `CLIENT INFO` of the connection, asked through it.
pub async fn client_info(conn: &Connection) -> String {
    conn.command(["CLIENT", "INFO"]).await.expect("CLIENT INFO")
}

/// How many clients the server lists with this client name.
pub fn clients_named(server: &RedisServer, name: &str) -> usize {
    server
        .cmd(&["CLIENT", "LIST"])
        .lines()
        .filter(|l| field(l, "name") == Some(name))
        .count()
}

/// Asserts that `result` is an [`Error::Closed`].
#[track_caller]
pub fn assert_closed<T: std::fmt::Debug>(result: Result<T, Error>) {
    assert_closed_for("the call", result)
}

/// Asserts that `result` is [`Error::CrossSlot`] for the slots of `a`
/// and `b` (which must differ).
#[track_caller]
pub fn assert_cross_slot<T: std::fmt::Debug>(result: Result<T, Error>, a: &str, b: &str) {
    let (first, other) = (key_slot(a.as_bytes()), key_slot(b.as_bytes()));
    assert_ne!(first, other, "{a} and {b} must be in different slots");
    match result {
        Err(Error::CrossSlot { first: f, other: o }) => {
            assert_eq!((f, o), (first, other), "the slots of {a} and {b}")
        }
        got => panic!("expected CrossSlot ({a}: slot {first}, {b}: slot {other}), got {got:?}"),
    }
}

/// Asserts that `result` is [`Error::Closed`]; `what` names the call.
#[track_caller]
pub fn assert_closed_for<T: std::fmt::Debug>(what: &str, result: Result<T, Error>) {
    match result {
        Err(Error::Closed(_)) => {}
        other => panic!("{what}: expected Error::Closed, got {other:?}"),
    }
}

/// A short name for the kind of an error, for tallies of what a load met
/// while a cluster changed (the server's message is kept in full).
pub fn error_kind(e: &Error) -> String {
    match e {
        Error::ConnectionLost => "ConnectionLost".into(),
        Error::Timeout { maybe_applied } => format!("Timeout(maybe_applied: {maybe_applied})"),
        Error::Connect { .. } => "Connect".into(),
        Error::SlotUnserved { .. } => "SlotUnserved".into(),
        Error::Server(s) => format!("Server({})", s.message_lossy()),
        other => format!("{other:?}"),
    }
}

/// Runs `f` with the cluster on glommio's blocking thread (starting,
/// stopping, freezing or migrating nodes blocks), from a test's executor;
/// a panic in `f` is the test's.
pub async fn on_cluster<R, F>(
    cluster: &std::sync::Arc<std::sync::Mutex<crate::RedisCluster>>,
    f: F,
) -> R
where
    F: FnOnce(&mut crate::RedisCluster) -> R + Send + 'static,
    R: Send + 'static,
{
    use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
    let cluster = cluster.clone();
    let outcome = glommio::executor()
        .spawn_blocking(move || {
            catch_unwind(AssertUnwindSafe(move || {
                let mut c = cluster
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                f(&mut c)
            }))
        })
        .await;
    outcome.unwrap_or_else(|panic| resume_unwind(panic))
}
