//! Connecting and the handshake against real servers: URIs and builders,
//! passwords and ACL users, the handshake's failures (wrong or missing
//! password, failed `SELECT`, unreachable or hung server, bad URI), and the
//! RESP2 fallback for servers without `HELLO`.

use std::time::{Duration, Instant};

use redcore::Commands;
use redcore::auth::{CredentialProvider, Credentials, LocalBoxFuture};
use redcore::config::ConnectionConfig;
use redcore::{Connection, Error, HandshakeError, Protocol, ServerErrorKind, Value};
use redcore_test_support::RedisServer;
use redcore_test_support::client::{base, field, free_port, run, url};

const NO_HELLO: &str = "rename-command HELLO \"\"";

#[test]
fn connects_by_uri() {
    let server = RedisServer::start();
    let uri = url(&server);
    run(move || async move {
        let conn = Connection::connect(uri.as_str()).await.unwrap();
        assert!(conn.is_connected());
        conn.command::<()>(["SET", "by-uri", "yes"]).await.unwrap();
        let v: String = conn.command(["GET", "by-uri"]).await.unwrap();
        assert_eq!(v, "yes");
        // A `String` converts as well as a `&str`.
        let again = Connection::connect(uri).await.unwrap();
        let v: String = again.command(["GET", "by-uri"]).await.unwrap();
        assert_eq!(v, "yes");
        assert_eq!(server.cmd(&["GET", "by-uri"]), "yes");
    });
}

#[test]
fn connects_by_builder() {
    let server = RedisServer::start();
    let config = base(server.port())
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    run(move || async move {
        let conn = Connection::connect(config).await.unwrap();
        assert!(conn.is_connected());
        assert_eq!(conn.config().timeout, Duration::from_secs(3));
        let pong: String = conn.command(["PING"]).await.unwrap();
        assert_eq!(pong, "PONG");
        conn.command::<()>(["SET", "by-builder", "1"])
            .await
            .unwrap();
        assert_eq!(server.cmd(&["GET", "by-builder"]), "1");
    });
}

#[test]
fn password_in_uri_authenticates_the_default_user() {
    let server = RedisServer::builder().password("secret").start();
    let uri = format!("redis://:secret@127.0.0.1:{}", server.port());
    run(move || async move {
        let conn = Connection::connect(uri.as_str()).await.unwrap();
        let who: String = conn.command(["ACL", "WHOAMI"]).await.unwrap();
        assert_eq!(who, "default");
        conn.command::<()>(["SET", "k", "v"]).await.unwrap();
        assert_eq!(server.cmd(&["GET", "k"]), "v");
    });
}

#[test]
fn acl_user_by_uri_and_by_builder() {
    let server = RedisServer::builder()
        .password("adminpw")
        .acl_user("alice", "wonderland")
        .start();
    let port = server.port();
    run(move || async move {
        let uri = format!("redis://alice:wonderland@127.0.0.1:{port}");
        let conn = Connection::connect(uri.as_str()).await.unwrap();
        let who: String = conn.command(["ACL", "WHOAMI"]).await.unwrap();
        assert_eq!(who, "alice");

        let config = base(port)
            .username("alice")
            .password("wonderland")
            .build()
            .unwrap();
        let conn = Connection::connect(config).await.unwrap();
        let who: String = conn.command(["ACL", "WHOAMI"]).await.unwrap();
        assert_eq!(who, "alice");
    });
}

#[test]
fn wrong_password_is_wrong_password() {
    let server = RedisServer::builder()
        .password("secret")
        .acl_user("alice", "wonderland")
        .start();
    let port = server.port();
    run(move || async move {
        for uri in [
            format!("redis://:not-the-secret@127.0.0.1:{port}"),
            format!("redis://alice:not-wonderland@127.0.0.1:{port}"),
            format!("redis://nobody:secret@127.0.0.1:{port}"),
        ] {
            match Connection::connect(uri.as_str()).await {
                Err(Error::Handshake(HandshakeError::WrongPassword(e))) => {
                    assert_eq!(e.kind(), ServerErrorKind::WrongPass, "{uri}");
                }
                other => panic!("{uri}: expected WrongPassword, got {other:?}"),
            }
        }
    });
}

#[test]
fn missing_password_is_password_required() {
    let server = RedisServer::builder().password("secret").start();
    let uri = url(&server);
    run(move || async move {
        match Connection::connect(uri.as_str()).await {
            Err(Error::Handshake(HandshakeError::PasswordRequired(e))) => {
                assert_eq!(e.kind(), ServerErrorKind::NoAuth);
            }
            other => panic!("expected PasswordRequired, got {other:?}"),
        }
    });
}

/// The RESP2 handshake (server without `HELLO`) must notice a missing
/// password too, instead of handing out a connection on which every
/// command fails with `NOAUTH`.
#[test]
fn missing_password_is_password_required_without_hello() {
    let server = RedisServer::builder()
        .password("secret")
        .config(NO_HELLO)
        .start();
    let uri = url(&server);
    run(move || async move {
        match Connection::connect(uri.as_str()).await {
            Err(Error::Handshake(HandshakeError::PasswordRequired(_))) => {}
            Ok(conn) => {
                let ping = conn.command::<String>(["PING"]).await;
                panic!(
                    "expected PasswordRequired; connect succeeded and PING gives {ping:?} \
                     (protocol {:?})",
                    conn.protocol()
                );
            }
            Err(other) => panic!("expected PasswordRequired, got {other:?}"),
        }
    });
}

#[test]
fn failed_select_is_select_failed() {
    let server = RedisServer::builder().config("databases 16").start();
    let port = server.port();
    run(move || async move {
        let by_builder = Connection::connect(base(port).database(99).build().unwrap()).await;
        let by_uri = Connection::connect(format!("redis://127.0.0.1:{port}/99")).await;
        for result in [by_builder, by_uri] {
            match result {
                Err(Error::Handshake(HandshakeError::SelectFailed { database, error })) => {
                    assert_eq!(database, 99);
                    assert!(error.message_lossy().contains("out of range"), "{error:?}");
                }
                other => panic!("expected SelectFailed, got {other:?}"),
            }
        }
        // The last database exists.
        let conn = Connection::connect(base(port).database(15).build().unwrap())
            .await
            .unwrap();
        let pong: String = conn.command(["PING"]).await.unwrap();
        assert_eq!(pong, "PONG");
    });
}

#[test]
fn unreachable_port_fails_fast_with_connect_error() {
    let port = free_port();
    run(move || async move {
        let timeout = Duration::from_secs(3);
        let config = base(port).timeout(timeout).build().unwrap();
        let started = Instant::now();
        let result = Connection::connect(config).await;
        let took = started.elapsed();
        match result {
            Err(Error::Connect { addr, .. }) => {
                assert_eq!(addr, format!("127.0.0.1:{port}"));
            }
            other => panic!("expected Error::Connect, got {other:?}"),
        }
        assert!(took < timeout, "refused connect took {took:?}");
    });
}

/// A server that accepts the TCP connection (the kernel does, even for a
/// stopped process) but never answers the handshake: connect fails with
/// `Error::Connect` at the configured timeout, not later.
#[test]
fn hung_server_fails_the_handshake_at_the_timeout() {
    let server = RedisServer::start();
    let port = server.port();
    run(move || async move {
        server.pause(true);
        let timeout = Duration::from_millis(300);
        let config = base(port).timeout(timeout).build().unwrap();
        let started = Instant::now();
        let result = Connection::connect(config).await;
        let took = started.elapsed();
        server.pause(false);
        match result {
            Err(Error::Connect { reason, .. }) => {
                assert!(reason.contains("timed out"), "{reason}");
            }
            other => panic!("expected Error::Connect, got {other:?}"),
        }
        assert!(took >= timeout, "gave up after {took:?}");
        assert!(took < Duration::from_secs(2), "gave up only after {took:?}");
    });
}

#[test]
fn bad_uri_is_invalid_uri_without_the_password() {
    run(|| async {
        for uri in [
            "redis://:hunter2@127.0.0.1:99999",
            "redis://user:hunter2@127.0.0.1:notaport",
            "redis://:hunter2@127.0.0.1:6379/db",
            "redis://:hunter2@127.0.0.1:6379?bogus=1",
            "redis://:hunter2@[::1",
            "http://:hunter2@127.0.0.1:6379",
            "redis://:hun/ter2@127.0.0.1:6379",
        ] {
            match Connection::connect(uri).await {
                Err(e @ Error::InvalidUri { .. }) => {
                    let shown = format!("{e} {e:?}");
                    assert!(!shown.contains("hunter2"), "{uri}: {shown}");
                    assert!(!shown.contains("ter2"), "{uri}: {shown}");
                }
                other => panic!("{uri}: expected InvalidUri, got {other:?}"),
            }
        }
    });
}

#[test]
fn resp2_fallback_when_hello_is_missing() {
    let server = RedisServer::builder().config(NO_HELLO).start();
    let uri = url(&server);
    run(move || async move {
        let conn = Connection::connect(uri.as_str()).await.unwrap();
        assert_eq!(conn.config().protocol, Protocol::Resp3);
        assert_eq!(conn.protocol(), Protocol::Resp2);
        let map: Value = conn.command(["DEBUG", "PROTOCOL", "map"]).await.unwrap();
        assert!(
            matches!(map, Value::Array(ref a) if a.len() == 6),
            "{map:?}"
        );
        conn.command::<()>(["SET", "k", "v"]).await.unwrap();
        let v: String = conn.command(["GET", "k"]).await.unwrap();
        assert_eq!(v, "v");
    });
}

/// Without `HELLO`, authentication and the client name go through `AUTH`
/// and `CLIENT SETNAME`.
#[test]
fn resp2_fallback_with_password_user_and_client_name() {
    let server = RedisServer::builder()
        .password("secret")
        .acl_user("alice", "wonderland")
        .config(NO_HELLO)
        .start();
    let port = server.port();
    run(move || async move {
        let uri = format!("redis://:secret@127.0.0.1:{port}?client_name=fallback-default");
        let conn = Connection::connect(uri.as_str()).await.unwrap();
        assert_eq!(conn.protocol(), Protocol::Resp2);
        let who: String = conn.command(["ACL", "WHOAMI"]).await.unwrap();
        assert_eq!(who, "default");
        let name: String = conn.command(["CLIENT", "GETNAME"]).await.unwrap();
        assert_eq!(name, "fallback-default");

        let config = base(port)
            .username("alice")
            .password("wonderland")
            .client_name("fallback-alice")
            .database(2)
            .build()
            .unwrap();
        let conn = Connection::connect(config).await.unwrap();
        assert_eq!(conn.protocol(), Protocol::Resp2);
        let who: String = conn.command(["ACL", "WHOAMI"]).await.unwrap();
        assert_eq!(who, "alice");
        let name: String = conn.command(["CLIENT", "GETNAME"]).await.unwrap();
        assert_eq!(name, "fallback-alice");
        let info: String = conn.command(["CLIENT", "INFO"]).await.unwrap();
        assert_eq!(field(&info, "db"), Some("2"), "{info}");

        let wrong = format!("redis://:wrong@127.0.0.1:{port}");
        match Connection::connect(wrong.as_str()).await {
            Err(Error::Handshake(HandshakeError::WrongPassword(_))) => {}
            other => panic!("expected WrongPassword, got {other:?}"),
        }
    });
}

struct Failing;

impl CredentialProvider for Failing {
    fn credentials(&self) -> LocalBoxFuture<'_, redcore::Result<Credentials>> {
        Box::pin(async { Err(Error::Aborted("vault unreachable".into())) })
    }
}

#[test]
fn failing_credential_provider_fails_the_connect() {
    let server = RedisServer::builder().password("secret").start();
    let config = base(server.port())
        .credential_provider(Failing)
        .build()
        .unwrap();
    run(move || async move {
        match Connection::connect(config).await {
            Err(Error::Handshake(HandshakeError::Credentials(why))) => {
                assert!(why.contains("vault unreachable"), "{why}");
            }
            other => panic!("expected HandshakeError::Credentials, got {other:?}"),
        }
        drop(server);
    });
}

#[test]
fn password_provider_is_asked_on_connect() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let server = RedisServer::builder().password("rotating").start();
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = asked.clone();
    let config: ConnectionConfig = base(server.port())
        .password_provider(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            "rotating".to_owned()
        })
        .build()
        .unwrap();
    run(move || async move {
        let conn = Connection::connect(config).await.unwrap();
        assert_eq!(asked.load(Ordering::SeqCst), 1);
        let pong: String = conn.command(["PING"]).await.unwrap();
        assert_eq!(pong, "PONG");
        drop(server);
    });
}
