//! `ConnectionConfig`: defaults, the builder, validation and URIs, through
//! the public API only.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use redcore::auth::{CredentialProvider, Credentials, LocalBoxFuture};
use redcore::config::{
    ClientCert, ConnectionConfig, ConnectionConfigBuilder, Password, Protocol, ServerAddr,
    TlsOptions, TlsRoots, parse_uri,
};
use redcore::hooks::Hook;
use redcore::resp::DecoderLimits;
use redcore::{Error, Result};

struct Noop;
impl Hook for Noop {}

struct Fixed;
impl CredentialProvider for Fixed {
    fn credentials(&self) -> LocalBoxFuture<'_, Result<Credentials>> {
        Box::pin(async {
            Ok(Credentials {
                username: Some("iam".into()),
                password: "token".into(),
            })
        })
    }
}

/// Asserts that `builder` is refused for `option`, with a reason holding
/// `needle`, and returns the whole message.
#[track_caller]
fn rejects(builder: ConnectionConfigBuilder, option: &str, needle: &str) -> String {
    match builder.build() {
        Err(e @ Error::InvalidConfig { .. }) => {
            let Error::InvalidConfig {
                option: got,
                reason,
            } = &e
            else {
                unreachable!()
            };
            assert_eq!(*got, option, "{e}");
            assert!(reason.contains(needle), "{reason:?} lacks {needle:?}");
            e.to_string()
        }
        Err(e) => panic!("expected InvalidConfig for {option}, got {e}"),
        Ok(_) => panic!("expected InvalidConfig for {option}, got a config"),
    }
}

fn b() -> ConnectionConfigBuilder {
    ConnectionConfig::builder()
}

#[test]
fn defaults_match_the_elixir_redis_connection() {
    for c in [ConnectionConfig::default(), b().build().unwrap()] {
        assert_eq!(
            c.addr,
            ServerAddr::Tcp {
                host: "127.0.0.1".into(),
                port: 6379
            }
        );
        assert!(c.password.is_none() && c.username.is_none() && c.database.is_none());
        assert!(c.tls.is_none());
        assert!(c.sync_connect);
        assert_eq!(c.backoff_initial, Duration::from_millis(500));
        assert_eq!(c.backoff_max, Duration::from_secs(30));
        assert_eq!(c.protocol, Protocol::Resp3);
        assert!(c.client_name.is_none());
        assert_eq!(c.timeout, Duration::from_secs(5));
        assert!(c.credential_provider.is_none());
        assert!(!c.exit_on_disconnection);
        assert!(c.hibernate_after.is_none());
        assert!(c.hooks.is_empty());
        assert_eq!(c.max_in_flight, 16384);
        assert_eq!(c.max_batch_bytes, 4 * 1024 * 1024);
        assert_eq!(c.decoder_limits, DecoderLimits::default());
        assert_eq!(c.push_capacity, 1024);
        c.validate().unwrap();
    }
}

#[test]
fn every_setter_lands_in_its_field() {
    let c = b()
        .host("cache.internal")
        .port(6380)
        .username("app")
        .password("pw")
        .database(7)
        .sync_connect(false)
        .backoff_initial(Duration::from_millis(10))
        .backoff_max(Duration::from_secs(2))
        .protocol(Protocol::Resp2)
        .client_name("worker-1")
        .timeout(Duration::from_millis(250))
        .credential_provider(Fixed)
        .exit_on_disconnection(true)
        .hibernate_after(Duration::from_secs(60))
        .hook(Noop)
        .shared_hook(Arc::new(Noop))
        .max_in_flight(8)
        .max_batch_bytes(4096)
        .decoder_limits(DecoderLimits::default())
        .push_capacity(3)
        .build()
        .unwrap();
    assert_eq!(
        c.addr,
        ServerAddr::Tcp {
            host: "cache.internal".into(),
            port: 6380
        }
    );
    assert_eq!(c.username.as_deref(), Some("app"));
    assert!(matches!(&c.password, Some(Password::Static(p)) if p == "pw"));
    assert_eq!(c.database, Some(7));
    assert!(!c.sync_connect);
    assert_eq!(c.backoff_initial, Duration::from_millis(10));
    assert_eq!(c.backoff_max, Duration::from_secs(2));
    assert_eq!(c.protocol, Protocol::Resp2);
    assert_eq!(c.client_name.as_deref(), Some("worker-1"));
    assert_eq!(c.timeout, Duration::from_millis(250));
    assert!(c.credential_provider.is_some());
    assert!(c.exit_on_disconnection);
    assert_eq!(c.hibernate_after, Some(Duration::from_secs(60)));
    assert_eq!(c.hooks.len(), 2);
    assert_eq!(
        (c.max_in_flight, c.max_batch_bytes, c.push_capacity),
        (8, 4096, 3)
    );
}

#[test]
fn password_provider_is_called() {
    let c = b()
        .password_provider(|| "rotated".to_owned())
        .build()
        .unwrap();
    match c.password {
        Some(Password::Provider(f)) => assert_eq!(f(), "rotated"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn unix_socket_overrides_host_and_port_in_any_order() {
    for c in [
        b().unix_socket("/tmp/r.sock").host("h").port(1),
        b().host("h").port(1).unix_socket("/tmp/r.sock"),
    ] {
        let c = c.build().unwrap();
        assert_eq!(c.addr, ServerAddr::Unix(PathBuf::from("/tmp/r.sock")));
    }
}

#[test]
fn tls_conveniences_turn_tls_on() {
    let c = b().tls_ca_file("/etc/ca.pem").build().unwrap();
    let tls = c.tls.unwrap();
    assert_eq!(tls.roots, TlsRoots::CaFile("/etc/ca.pem".into()));
    assert!(!tls.dangerously_accept_invalid_certs);

    let c = b()
        .tls_client_cert_files("c.pem", "k.pem")
        .tls_server_name("redis.example.com")
        .dangerously_accept_invalid_certs()
        .build()
        .unwrap();
    let tls = c.tls.unwrap();
    assert_eq!(tls.roots, TlsRoots::System);
    assert_eq!(
        tls.client_cert,
        Some(ClientCert::Files {
            cert: "c.pem".into(),
            key: "k.pem".into()
        })
    );
    assert_eq!(tls.server_name.as_deref(), Some("redis.example.com"));
    assert!(tls.dangerously_accept_invalid_certs);

    let c = b().tls(TlsOptions::default()).tls_ca_pem(b"PEM".to_vec());
    let c = c
        .tls_client_cert_pem(b"C".to_vec(), b"K".to_vec())
        .build()
        .unwrap();
    assert_eq!(c.tls.unwrap().roots, TlsRoots::CaPem(b"PEM".to_vec()));
    assert_eq!(
        b().tls(TlsOptions::default()).build().unwrap().tls,
        Some(TlsOptions::default())
    );
}

#[test]
fn host_rules() {
    rejects(b().host(""), "host", "empty");
    rejects(b().host("bad host"), "host", "' '");
    rejects(b().host("a/b"), "host", "'/'");
    rejects(b().host("user@h"), "host", "'@'");
    rejects(b().host("h:6379"), "host", "IPv6");
    rejects(b().host("[::1]"), "host", "without brackets");
    rejects(b().host(".h"), "host", "empty label");
    rejects(b().host("x".repeat(254)), "host", "253");
    for ok in [
        "localhost",
        "10.0.0.1",
        "::1",
        "fe80::1%eth0",
        "my_host.example.com.",
    ] {
        b().host(ok).build().unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
}

#[test]
fn address_rules() {
    let msg = rejects(b().port(0), "port", "0");
    assert_eq!(msg, "invalid option port: must not be 0");
    rejects(b().unix_socket(""), "unix_socket", "empty");
    rejects(
        b().unix_socket("/s").tls(TlsOptions::default()),
        "tls",
        "not supported",
    );
    rejects(
        b().unix_socket("/s").tls_ca_file("/ca"),
        "tls",
        "Unix socket",
    );
    // Port 0 does not matter for a Unix socket.
    b().port(0).unix_socket("/s").build().unwrap();
}

#[test]
fn timing_and_capacity_rules() {
    rejects(b().timeout(Duration::ZERO), "timeout", "greater than zero");
    rejects(
        b().backoff_initial(Duration::ZERO),
        "backoff_initial",
        "zero",
    );
    rejects(
        b().backoff_initial(Duration::from_secs(31)),
        "backoff_initial",
        "greater than backoff_max",
    );
    rejects(b().backoff_max(Duration::ZERO), "backoff_max", "zero");
    rejects(
        b().backoff_max(Duration::from_millis(100)),
        "backoff_initial",
        "500ms is greater than backoff_max (100ms)",
    );
    b().backoff_initial(Duration::from_secs(1))
        .backoff_max(Duration::from_secs(1))
        .build()
        .unwrap();
    rejects(b().max_in_flight(0), "max_in_flight", "zero");
    rejects(b().max_batch_bytes(0), "max_batch_bytes", "zero");
    rejects(b().push_capacity(0), "push_capacity", "zero");
    let mut limits = DecoderLimits::default();
    limits.max_depth = 0;
    rejects(b().decoder_limits(limits), "decoder_limits", "max_depth");
    b().hibernate_after(Duration::ZERO).build().unwrap();
}

#[test]
fn client_name_rules() {
    rejects(b().client_name("my app"), "client_name", "' '");
    rejects(b().client_name("a\nb"), "client_name", "'\\n'");
    rejects(b().client_name("é"), "client_name", "printable ASCII");
    rejects(b().client_name(""), "client_name", "empty");
    b().client_name("app:worker-1/[x]").build().unwrap();
}

#[test]
fn credential_rules() {
    rejects(b().username("app"), "username", "needs a password");
    b().username("app").password("").build().unwrap();
    b().username("app")
        .password_provider(String::new)
        .build()
        .unwrap();
    b().username("app")
        .credential_provider(Fixed)
        .build()
        .unwrap();
    let shared: Arc<dyn CredentialProvider> = Arc::new(Fixed);
    b().shared_credential_provider(shared).build().unwrap();
}

#[test]
fn tls_rules() {
    rejects(b().tls_ca_file(""), "tls_ca_file", "empty");
    rejects(b().tls_ca_pem(Vec::new()), "tls_ca_pem", "empty");
    rejects(
        b().tls_client_cert_files("", "k"),
        "tls_client_cert",
        "empty",
    );
    rejects(
        b().tls_client_cert_pem(b"c".to_vec(), Vec::new()),
        "tls_client_cert",
        "empty",
    );
    rejects(b().tls_server_name(""), "tls_server_name", "DNS name");
    rejects(b().tls_server_name("a b"), "tls_server_name", "DNS name");
    b().tls_server_name("10.1.2.3").build().unwrap();
}

#[test]
fn hand_built_configs_are_checked() {
    let mut c = ConnectionConfig::default();
    c.timeout = Duration::ZERO;
    assert!(matches!(
        c.validate(),
        Err(Error::InvalidConfig {
            option: "timeout",
            ..
        })
    ));
    c.timeout = Duration::from_secs(1);
    c.addr = ServerAddr::Unix(PathBuf::new());
    assert!(matches!(
        c.validate(),
        Err(Error::InvalidConfig {
            option: "unix_socket",
            ..
        })
    ));
    c.addr = ServerAddr::Unix("/s".into());
    c.validate().unwrap();
}

#[test]
fn into_builder_keeps_everything() {
    let c = b()
        .unix_socket("/tmp/r.sock")
        .password("pw")
        .hook(Noop)
        .build()
        .unwrap();
    let again = c.into_builder().database(2).build().unwrap();
    assert_eq!(again.addr, ServerAddr::Unix("/tmp/r.sock".into()));
    assert_eq!(again.database, Some(2));
    assert_eq!(again.hooks.len(), 1);
    assert!(matches!(again.password, Some(Password::Static(ref p)) if p == "pw"));

    let c = ConnectionConfig::from_uri("rediss://[::1]:7000/1")
        .unwrap()
        .into_builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    assert_eq!(
        c.addr,
        ServerAddr::Tcp {
            host: "::1".into(),
            port: 7000
        }
    );
    assert!(c.tls.is_some());
    assert_eq!(
        ConnectionConfigBuilder::default().build().unwrap().addr,
        ConnectionConfig::default().addr
    );
}

#[test]
fn debug_hides_secrets() {
    let c = b()
        .username("app")
        .password("Pa55w0rd")
        .tls_client_cert_pem(b"CERT".to_vec(), b"KEY-Pa55w0rd".to_vec())
        .build()
        .unwrap();
    let shown = format!("{c:?} {:?}", c.clone().into_builder());
    assert!(
        shown.contains("app") && shown.contains("redacted"),
        "{shown}"
    );
    assert!(!shown.contains("Pa55w0rd"), "{shown}");
}

#[test]
fn uris_through_the_public_api() {
    let c: ConnectionConfig = "redis://:secret@localhost:6380/2".parse().unwrap();
    assert_eq!(
        c.addr,
        ServerAddr::Tcp {
            host: "localhost".into(),
            port: 6380
        }
    );
    assert_eq!(c.database, Some(2));
    let c = parse_uri("unix:///var/run/redis.sock?db=1").unwrap();
    assert_eq!(
        c.addr,
        ServerAddr::Unix(Path::new("/var/run/redis.sock").into())
    );
    let e = parse_uri("redis://:Pa55w0rd@localhost:70000").unwrap_err();
    assert!(matches!(e, Error::InvalidUri { .. }));
    assert!(!e.to_string().contains("Pa55w0rd"));
    assert!(
        e.to_string()
            .starts_with("invalid Redis URI: invalid port 70000")
    );
}
