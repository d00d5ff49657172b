//! TLS end to end: `Connection::connect` with TLS options against a real
//! `redis-server` listening only on a TLS port and requiring client
//! certificates.

use std::future::Future;
use std::time::Duration;

use redcore::Commands;
use redcore::config::{ConnectionConfig, ConnectionConfigBuilder};
use redcore::{Connection, Error};
use redcore_test_support::{RedisServer, TlsMaterial};

fn run<F: Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(64 << 10)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap();
}

fn base(port: u16) -> ConnectionConfigBuilder {
    ConnectionConfig::builder()
        .host("127.0.0.1")
        .port(port)
        .timeout(Duration::from_secs(5))
}

fn with_client_cert(
    builder: ConnectionConfigBuilder,
    tls: &TlsMaterial,
) -> ConnectionConfigBuilder {
    builder.tls_client_cert_files(&tls.client_cert.path, &tls.client_key.path)
}

#[test]
fn tls_connection_against_real_server() {
    let server = RedisServer::builder()
        .tls()
        .config("tls-auth-clients yes")
        .start();
    let tls = server.tls().expect("TLS material").clone();
    let port = server.port();
    run(move || async move {
        // The right CA and a client certificate: commands work, including a
        // value much larger than one TLS record (16 KiB) both ways.
        let good = with_client_cert(base(port).tls_ca_file(&tls.ca_cert.path), &tls)
            .build()
            .unwrap();
        let conn = Connection::connect(good).await.unwrap();
        let big = "x".repeat(200_000);
        conn.command::<()>(["SET", "big", big.as_str()])
            .await
            .unwrap();
        let back: String = conn.command(["GET", "big"]).await.unwrap();
        assert_eq!(back, big);
        let n: i64 = conn.command(["STRLEN", "big"]).await.unwrap();
        assert_eq!(n, 200_000);

        // The CA as PEM text works the same.
        let pem = with_client_cert(base(port).tls_ca_pem(tls.ca_cert.pem.clone()), &tls)
            .build()
            .unwrap();
        let conn = Connection::connect(pem).await.unwrap();
        let pong: String = conn.command(["PING"]).await.unwrap();
        assert_eq!(pong, "PONG");

        // An unrelated CA: the server certificate does not verify.
        let wrong_ca = with_client_cert(base(port).tls_ca_file(&tls.other_ca_cert.path), &tls)
            .build()
            .unwrap();
        match Connection::connect(wrong_ca).await {
            Err(Error::Tls(message)) => assert!(message.contains("UnknownIssuer"), "{message}"),
            Err(other) => panic!("expected Error::Tls, got {other:?}"),
            Ok(_) => panic!("connected although the CA is wrong"),
        }

        // The same wrong CA with verification off connects.
        let insecure = with_client_cert(
            base(port)
                .tls_ca_file(&tls.other_ca_cert.path)
                .dangerously_accept_invalid_certs(),
            &tls,
        )
        .build()
        .unwrap();
        let conn = Connection::connect(insecure).await.unwrap();
        let pong: String = conn.command(["PING"]).await.unwrap();
        assert_eq!(pong, "PONG");

        // A server name the certificate does not carry.
        let wrong_name = with_client_cert(
            base(port)
                .tls_ca_file(&tls.ca_cert.path)
                .tls_server_name("redis.example.com"),
            &tls,
        )
        .build()
        .unwrap();
        match Connection::connect(wrong_name).await {
            Err(Error::Tls(message)) => {
                assert!(message.contains("not valid for name"), "{message}")
            }
            Err(other) => panic!("expected Error::Tls, got {other:?}"),
            Ok(_) => panic!("connected although the server name is wrong"),
        }

        // No client certificate: the server refuses it. Under TLS 1.3 that
        // shows on the first read, after the client's side of the
        // handshake; it is still a TLS error.
        let anonymous = base(port).tls_ca_file(&tls.ca_cert.path).build().unwrap();
        match Connection::connect(anonymous).await {
            Err(Error::Tls(message)) => assert!(message.contains("Certificate"), "{message}"),
            other => panic!("expected Error::Tls, got {other:?}"),
        }
    });
}
