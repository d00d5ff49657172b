//! What a connection is set up with: Unix sockets, TLS (right CA, wrong
//! CA, client certificates), the protocol (RESP3 by default, RESP2 when
//! asked), the database and the client name.

use std::time::Duration;

use redcore::Commands;
use redcore::config::{TlsOptions, TlsRoots};
use redcore::{Connection, Error, Protocol, Value};
use redcore_test_support::RedisServer;
use redcore_test_support::client::{base, client_info, clients_named, field, run, url};

#[test]
fn unix_socket_by_uri_with_database() {
    let server = RedisServer::builder().unix_socket().start();
    let path = server.unix_path().unwrap().to_owned();
    run(move || async move {
        let uri = format!("unix://{}?db=2", path.display());
        let conn = Connection::connect(uri.as_str()).await.unwrap();
        let info = client_info(&conn).await;
        assert!(field(&info, "flags").unwrap().contains('U'), "{info}");
        assert_eq!(field(&info, "db"), Some("2"), "{info}");
        conn.command::<()>(["SET", "over-unix", "yes"])
            .await
            .unwrap();

        let mut check = server.admin_conn().unwrap();
        assert_eq!(check.call(&["GET", "over-unix"]).unwrap().text(), "");
        check.call(&["SELECT", "2"]).unwrap();
        assert_eq!(check.call(&["GET", "over-unix"]).unwrap().text(), "yes");
    });
}

#[test]
fn unix_socket_by_builder() {
    let server = RedisServer::builder()
        .unix_socket()
        .password("secret")
        .start();
    let path = server.unix_path().unwrap().to_owned();
    run(move || async move {
        let config = redcore::ConnectionConfig::builder()
            .unix_socket(&path)
            .password("secret")
            .database(1)
            .client_name("unix-builder")
            .build()
            .unwrap();
        let conn = Connection::connect(config).await.unwrap();
        let info = client_info(&conn).await;
        assert!(field(&info, "flags").unwrap().contains('U'), "{info}");
        assert_eq!(field(&info, "db"), Some("1"), "{info}");
        assert_eq!(field(&info, "name"), Some("unix-builder"), "{info}");
        let n: i64 = conn.command(["INCR", "n"]).await.unwrap();
        assert_eq!(n, 1);
    });
}

#[test]
fn tls_with_the_right_ca_works() {
    let server = RedisServer::builder().tls().start();
    let tls = server.tls().unwrap().clone();
    let port = server.port();
    run(move || async move {
        let by_file = base(port).tls_ca_file(&tls.ca_cert.path).build().unwrap();
        let conn = Connection::connect(by_file).await.unwrap();
        conn.command::<()>(["SET", "secure", "yes"]).await.unwrap();
        let v: String = conn.command(["GET", "secure"]).await.unwrap();
        assert_eq!(v, "yes");
        // A value larger than one TLS record, both ways.
        let big = "x".repeat(100_000);
        conn.command::<()>(["SET", "big", big.as_str()])
            .await
            .unwrap();
        let back: String = conn.command(["GET", "big"]).await.unwrap();
        assert_eq!(back, big);

        let mut opts = TlsOptions::default();
        opts.roots = TlsRoots::CaPem(tls.ca_cert.pem.clone().into_bytes());
        let by_options = base(port).tls(opts).build().unwrap();
        let conn = Connection::connect(by_options).await.unwrap();
        let v: String = conn.command(["GET", "secure"]).await.unwrap();
        assert_eq!(v, "yes");
    });
}

#[test]
fn tls_with_the_wrong_ca_is_a_tls_error() {
    let server = RedisServer::builder().tls().start();
    let tls = server.tls().unwrap().clone();
    let port = server.port();
    run(move || async move {
        let config = base(port)
            .tls_ca_file(&tls.other_ca_cert.path)
            .build()
            .unwrap();
        match Connection::connect(config).await {
            Err(Error::Tls(why)) => assert!(why.contains("certificate"), "{why}"),
            other => panic!("expected Error::Tls, got {other:?}"),
        }
        drop(server);
    });
}

#[test]
fn tls_client_certificate_when_the_server_requires_one() {
    let server = RedisServer::builder()
        .tls()
        .config("tls-auth-clients yes")
        .start();
    let tls = server.tls().unwrap().clone();
    let port = server.port();
    run(move || async move {
        let with_cert = base(port)
            .tls_ca_file(&tls.ca_cert.path)
            .tls_client_cert_files(&tls.client_cert.path, &tls.client_key.path)
            .build()
            .unwrap();
        let conn = Connection::connect(with_cert).await.unwrap();
        let pong: String = conn.command(["PING"]).await.unwrap();
        assert_eq!(pong, "PONG");

        // Without a certificate (or with one the server's CA did not
        // sign) the server refuses the connection.
        let without = base(port)
            .tls_ca_file(&tls.ca_cert.path)
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let untrusted = base(port)
            .tls_ca_file(&tls.ca_cert.path)
            .tls_client_cert_files(
                &tls.untrusted_client_cert.path,
                &tls.untrusted_client_key.path,
            )
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        for config in [without, untrusted] {
            let result = Connection::connect(config).await;
            assert!(
                matches!(result, Err(Error::Tls(_))),
                "expected Error::Tls: {result:?}"
            );
        }
    });
}

#[test]
fn resp3_by_default() {
    let server = RedisServer::start();
    let uri = url(&server);
    run(move || async move {
        let conn = Connection::connect(uri.as_str()).await.unwrap();
        assert_eq!(conn.protocol(), Protocol::Resp3);
        let map: Value = conn.command(["DEBUG", "PROTOCOL", "map"]).await.unwrap();
        assert!(matches!(map, Value::Map(ref m) if m.len() == 3), "{map:?}");
        let info = client_info(&conn).await;
        assert_eq!(field(&info, "resp"), Some("3"), "{info}");
    });
}

#[test]
fn resp2_when_asked() {
    let server = RedisServer::start();
    let port = server.port();
    run(move || async move {
        let config = base(port).protocol(Protocol::Resp2).build().unwrap();
        let conn = Connection::connect(config).await.unwrap();
        assert_eq!(conn.protocol(), Protocol::Resp2);
        let map: Value = conn.command(["DEBUG", "PROTOCOL", "map"]).await.unwrap();
        assert!(
            matches!(map, Value::Array(ref a) if a.len() == 6),
            "{map:?}"
        );
        let info = client_info(&conn).await;
        assert_eq!(field(&info, "resp"), Some("2"), "{info}");

        let by_uri = format!("redis://127.0.0.1:{port}?protocol=resp2");
        let conn = Connection::connect(by_uri.as_str()).await.unwrap();
        assert_eq!(conn.protocol(), Protocol::Resp2);
        drop(server);
    });
}

#[test]
fn database_selection() {
    let server = RedisServer::start();
    let port = server.port();
    run(move || async move {
        let conn = Connection::connect(base(port).database(3).build().unwrap())
            .await
            .unwrap();
        conn.command::<()>(["SET", "in-three", "3"]).await.unwrap();
        let info = client_info(&conn).await;
        assert_eq!(field(&info, "db"), Some("3"), "{info}");

        // Another connection on database 0 does not see the key ...
        let zero = Connection::connect(format!("redis://127.0.0.1:{port}"))
            .await
            .unwrap();
        let v: Option<String> = zero.command(["GET", "in-three"]).await.unwrap();
        assert_eq!(v, None);
        // ... one on database 3 (by URI path) does.
        let three = Connection::connect(format!("redis://127.0.0.1:{port}/3"))
            .await
            .unwrap();
        let v: Option<String> = three.command(["GET", "in-three"]).await.unwrap();
        assert_eq!(v.as_deref(), Some("3"));
        // And so does the server.
        let mut check = server.admin_conn().unwrap();
        check.call(&["SELECT", "3"]).unwrap();
        assert_eq!(check.call(&["GET", "in-three"]).unwrap().text(), "3");
    });
}

#[test]
fn client_name_is_visible() {
    let server = RedisServer::start();
    let port = server.port();
    run(move || async move {
        let config = base(port).client_name("redcore-test").build().unwrap();
        let conn = Connection::connect(config).await.unwrap();
        let name: String = conn.command(["CLIENT", "GETNAME"]).await.unwrap();
        assert_eq!(name, "redcore-test");
        assert_eq!(clients_named(&server, "redcore-test"), 1);

        let uri = format!("redis://127.0.0.1:{port}?name=by-uri");
        let conn = Connection::connect(uri.as_str()).await.unwrap();
        let name: String = conn.command(["CLIENT", "GETNAME"]).await.unwrap();
        assert_eq!(name, "by-uri");

        // No name configured: none is set.
        let conn = Connection::connect(format!("redis://127.0.0.1:{port}"))
            .await
            .unwrap();
        let name: Option<String> = conn.command(["CLIENT", "GETNAME"]).await.unwrap();
        assert_eq!(name, None);
    });
}
