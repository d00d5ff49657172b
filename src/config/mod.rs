//! Connection configuration: [`ConnectionConfig`], built with
//! [`ConnectionConfig::builder`] or parsed from a Redis URI
//! ([`parse_uri`], [`ConnectionConfig::from_uri`], or `str::parse`).
//!
//! The options and their defaults are those of the seeds'
//! `Redis.Connection`: host `127.0.0.1`, port 6379, RESP3, a 5 s call
//! timeout, reconnection backoff from 500 ms up to 30 s, connecting before
//! returning, reconnecting rather than exiting on disconnection. The seeds'
//! `name` option (process registration) has no meaning in Rust: the
//! connection handle is the name. (A URI's `?name=` query option is the
//! client name sent with `CLIENT SETNAME`, as in other clients.)
//!
//! [`ConnectionConfigBuilder::build`] checks the options together and
//! names the option at fault in [`Error::InvalidConfig`]. The fields of
//! [`ConnectionConfig`] are public, so a configuration changed by hand is
//! checked again by [`ConnectionConfig::validate`] when a connection is
//! opened.
//!
//! ```
//! use std::time::Duration;
//! use redcore::config::{ConnectionConfig, Protocol, ServerAddr};
//!
//! let config = ConnectionConfig::builder()
//!     .host("cache.internal")
//!     .port(6380)
//!     .username("app")
//!     .password("secret")
//!     .database(2)
//!     .protocol(Protocol::Resp2)
//!     .timeout(Duration::from_secs(2))
//!     .build()?;
//! assert_eq!(config.database, Some(2));
//!
//! let from_uri = "redis://:secret@localhost:6380/2".parse::<ConnectionConfig>()?;
//! assert_eq!(
//!     from_uri.addr,
//!     ServerAddr::Tcp { host: "localhost".into(), port: 6380 }
//! );
//! assert_eq!(from_uri.username, None);
//! assert_eq!(from_uri.database, Some(2));
//!
//! // A URI, then options a URI cannot carry.
//! let tuned = ConnectionConfig::from_uri("rediss://cache.internal")?
//!     .into_builder()
//!     .max_in_flight(1024)
//!     .build()?;
//! assert!(tuned.tls.is_some());
//!
//! // Errors name the option and never show the password.
//! let err = ConnectionConfig::builder().port(0).build().unwrap_err();
//! assert_eq!(err.to_string(), "invalid option port: must not be 0");
//! # Ok::<(), redcore::Error>(())
//! ```

mod cluster;
mod uri;

use std::fmt;
use std::net::Ipv6Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::Error;
use crate::auth::CredentialProvider;
use crate::hooks::Hook;
use crate::resp::DecoderLimits;

pub use cluster::{ClusterConfig, ClusterConfigBuilder, IntoClusterConfig, IntoNodeAddr};
pub use uri::parse_uri;

/// How a connection moves bytes to and from its socket.
///
/// Both transports encode commands in place into the connection's batch
/// buffer and keep every guarantee of [`Connection`](crate::Connection)
/// (reply order, deadlines, may-have-been-applied errors); they differ in
/// the system calls that carry the bytes. See the
/// [`conn` module docs](crate::Connection#how-bytes-reach-the-socket).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TransportKind {
    /// The default: the `REDCORE_TRANSPORT` environment variable
    /// (`glommio` or `io_uring`) when it is set, otherwise
    /// [`Glommio`](Self::Glommio).
    #[default]
    Auto,
    /// glommio's sockets: one non-blocking `send` per batch and `recv`
    /// calls, with io_uring used for readiness only.
    Glommio,
    /// A ring of redcore's own on each core: batches are sent from
    /// registered buffers (`WRITE_FIXED`), one `io_uring_enter` per core
    /// for every connection with something to send, and replies arrive
    /// through multishot receives into a provided-buffer ring. When the
    /// kernel refuses any piece of it, connections use
    /// [`Glommio`](Self::Glommio) instead and one warning is logged. TLS
    /// connections always use [`Glommio`](Self::Glommio): rustls needs a
    /// byte stream with its own buffering.
    IoUring,
}

impl TransportKind {
    /// The name used in `REDCORE_TRANSPORT` and the `transport` URI option.
    pub fn as_str(self) -> &'static str {
        match self {
            TransportKind::Auto => "auto",
            TransportKind::Glommio => "glommio",
            TransportKind::IoUring => "io_uring",
        }
    }

    /// Parses `auto`, `glommio` or `io_uring` (also `iouring`, `uring`).
    pub fn parse(text: &str) -> Option<TransportKind> {
        match text.trim().to_ascii_lowercase().as_str() {
            "auto" => Some(TransportKind::Auto),
            "glommio" => Some(TransportKind::Glommio),
            "io_uring" | "iouring" | "uring" | "io-uring" => Some(TransportKind::IoUring),
            _ => None,
        }
    }

    /// Resolves [`Auto`](Self::Auto): the `REDCORE_TRANSPORT` environment
    /// variable when set to a known name, otherwise the built-in default
    /// ([`Glommio`](Self::Glommio)). Other kinds resolve to themselves.
    pub fn resolve(self) -> TransportKind {
        if self != TransportKind::Auto {
            return self;
        }
        static FROM_ENV: std::sync::OnceLock<TransportKind> = std::sync::OnceLock::new();
        *FROM_ENV.get_or_init(|| match std::env::var("REDCORE_TRANSPORT") {
            Ok(v) => match TransportKind::parse(&v) {
                Some(TransportKind::Auto) | None => {
                    if TransportKind::parse(&v).is_none() {
                        tracing::warn!(value = %v, "REDCORE_TRANSPORT is not glommio, io_uring or auto; ignored");
                    }
                    DEFAULT_TRANSPORT
                }
                Some(kind) => kind,
            },
            Err(_) => DEFAULT_TRANSPORT,
        })
    }
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What [`TransportKind::Auto`] means when `REDCORE_TRANSPORT` is unset.
const DEFAULT_TRANSPORT: TransportKind = TransportKind::Glommio;

/// Which RESP version the connection asks for in its handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Protocol {
    /// RESP2: the protocol of every Redis version.
    Resp2,
    /// RESP3 (the default): typed replies and out-of-band push frames.
    /// A server that does not know `HELLO` is spoken to in RESP2.
    #[default]
    Resp3,
}

/// Where the server is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerAddr {
    /// A TCP address: a host name or IP literal, and a port.
    Tcp {
        /// Host name or IP address (IPv6 without brackets).
        host: String,
        /// TCP port.
        port: u16,
    },
    /// A Unix domain socket path.
    Unix(PathBuf),
}

impl fmt::Display for ServerAddr {
    /// `host:port`, `[v6]:port`, or the socket path.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerAddr::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            ServerAddr::Tcp { host, port } => write!(f, "{host}:{port}"),
            ServerAddr::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

/// A password: fixed, or asked for on every connect.
#[derive(Clone)]
pub enum Password {
    /// A fixed password.
    Static(String),
    /// A function asked for the password on every connect and reconnect.
    Provider(Arc<dyn Fn() -> String + Send + Sync>),
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Password::Static(_) => f.write_str("Password::Static(<redacted>)"),
            Password::Provider(_) => f.write_str("Password::Provider(<fn>)"),
        }
    }
}

/// Where trusted root certificates come from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TlsRoots {
    /// The operating system's trust store (the default).
    #[default]
    System,
    /// A PEM file of CA certificates.
    CaFile(PathBuf),
    /// PEM text of CA certificates.
    CaPem(Vec<u8>),
}

/// A client certificate and its private key, for servers that check them.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientCert {
    /// PEM files: the certificate chain and the private key.
    Files {
        /// PEM file with the certificate chain, leaf first.
        cert: PathBuf,
        /// PEM file with the private key.
        key: PathBuf,
    },
    /// PEM text: the certificate chain and the private key.
    Pem {
        /// PEM certificate chain, leaf first.
        cert: Vec<u8>,
        /// PEM private key.
        key: Vec<u8>,
    },
}

impl fmt::Debug for ClientCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientCert::Files { cert, key } => f
                .debug_struct("ClientCert::Files")
                .field("cert", cert)
                .field("key", key)
                .finish(),
            ClientCert::Pem { .. } => f.write_str("ClientCert::Pem(<redacted>)"),
        }
    }
}

/// TLS settings (rustls).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct TlsOptions {
    /// Trusted roots.
    pub roots: TlsRoots,
    /// A client certificate, when the server asks for one.
    pub client_cert: Option<ClientCert>,
    /// The name to send in SNI and to verify the certificate against;
    /// defaults to the host.
    pub server_name: Option<String>,
    /// Accept any server certificate. This turns off the protection TLS
    /// gives against a man in the middle: only for tests and debugging.
    pub dangerously_accept_invalid_certs: bool,
}

/// Everything a [`Connection`](crate::Connection) needs to know. Defaults
/// are those of the seeds' `Redis.Connection`.
#[derive(Clone)]
#[non_exhaustive]
pub struct ConnectionConfig {
    /// Where the server is (default `127.0.0.1:6379`). A Unix socket path
    /// overrides host and port.
    pub addr: ServerAddr,
    /// Password for `AUTH` (ignored when a credential provider is set).
    pub password: Option<Password>,
    /// ACL user name (ignored when a credential provider is set).
    pub username: Option<String>,
    /// Database to `SELECT` after the handshake; `None` sends no `SELECT`.
    pub database: Option<u32>,
    /// TLS settings; `None` for plain TCP.
    pub tls: Option<TlsOptions>,
    /// Connect before returning (default true); false returns at once and
    /// connects in the background while calls wait within their deadline.
    pub sync_connect: bool,
    /// First reconnection delay (default 500 ms).
    pub backoff_initial: Duration,
    /// Largest reconnection delay (default 30 s).
    pub backoff_max: Duration,
    /// RESP version (default RESP3).
    pub protocol: Protocol,
    /// Name given with `HELLO ... SETNAME` / `CLIENT SETNAME`.
    pub client_name: Option<String>,
    /// Deadline of a call, from its start to its reply (default 5 s).
    pub timeout: Duration,
    /// Asked for credentials on every connect and reconnect; when set,
    /// `password` and `username` are ignored.
    pub credential_provider: Option<Arc<dyn CredentialProvider>>,
    /// Close the handle for good when the socket dies, instead of
    /// reconnecting (default false).
    pub exit_on_disconnection: bool,
    /// Release idle buffers after the connection has been idle this long
    /// (default: never).
    pub hibernate_after: Option<Duration>,
    /// The health check's interval (default 1 s; `None` turns it off): a
    /// socket on which a reply has been due this long without a byte
    /// arriving is *silent*. Nothing more is written to it (a cluster node
    /// connection fails new calls as not sent, so the cluster client goes
    /// where its topology now says), and the server is probed once per
    /// interval with a `PING` on a new socket; a refused probe gives the
    /// socket up. Replies that commands such as `BLPOP` or `XREAD BLOCK`
    /// hold back on purpose are never taken for silence. Independent of
    /// the call deadline; see the
    /// [crate docs](crate#failure).
    pub health_interval: Option<Duration>,
    /// Middleware run around every command and pipeline, in order.
    pub hooks: Vec<Arc<dyn Hook>>,
    /// Most calls queued or awaiting replies at once (a pipeline counts
    /// once); callers beyond wait in line, first come first served, within
    /// their deadline (default 16384).
    pub max_in_flight: usize,
    /// Most bytes of encoded, unwritten commands buffered; callers beyond
    /// wait in line, as for `max_in_flight` (default 4 MiB).
    pub max_batch_bytes: usize,
    /// Limits on replies (default: [`DecoderLimits::default`]), among them
    /// [`max_reply_bytes`](DecoderLimits::max_reply_bytes), the memory one
    /// decoded reply may hold (512 MiB): a reply past it fails its call
    /// with [`ProtocolError::ReplyTooLarge`](crate::resp::ProtocolError::ReplyTooLarge)
    /// and is skipped, and the connection goes on.
    pub decoder_limits: DecoderLimits,
    /// Push frames (RESP3 `>`) kept for the push receiver before the
    /// newest are dropped (default 1024).
    pub push_capacity: usize,
    /// How bytes move to and from the socket (default
    /// [`TransportKind::Auto`]).
    pub transport: TransportKind,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            addr: ServerAddr::Tcp {
                host: "127.0.0.1".to_owned(),
                port: 6379,
            },
            password: None,
            username: None,
            database: None,
            tls: None,
            sync_connect: true,
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            protocol: Protocol::Resp3,
            client_name: None,
            timeout: Duration::from_secs(5),
            credential_provider: None,
            exit_on_disconnection: false,
            hibernate_after: None,
            health_interval: Some(Duration::from_secs(1)),
            hooks: Vec::new(),
            max_in_flight: 16384,
            max_batch_bytes: 4 * 1024 * 1024,
            decoder_limits: DecoderLimits::default(),
            push_capacity: 1024,
            transport: TransportKind::Auto,
        }
    }
}

impl fmt::Debug for ConnectionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionConfig")
            .field("addr", &self.addr)
            .field("password", &self.password)
            .field("username", &self.username)
            .field("database", &self.database)
            .field("tls", &self.tls)
            .field("sync_connect", &self.sync_connect)
            .field("backoff_initial", &self.backoff_initial)
            .field("backoff_max", &self.backoff_max)
            .field("protocol", &self.protocol)
            .field("client_name", &self.client_name)
            .field("timeout", &self.timeout)
            .field(
                "credential_provider",
                &self.credential_provider.as_ref().map(|_| "<provider>"),
            )
            .field("exit_on_disconnection", &self.exit_on_disconnection)
            .field("hibernate_after", &self.hibernate_after)
            .field("health_interval", &self.health_interval)
            .field("hooks", &self.hooks.len())
            .field("max_in_flight", &self.max_in_flight)
            .field("max_batch_bytes", &self.max_batch_bytes)
            .field("decoder_limits", &self.decoder_limits)
            .field("push_capacity", &self.push_capacity)
            .field("transport", &self.transport)
            .finish()
    }
}

fn invalid(option: &'static str, reason: impl Into<String>) -> Error {
    Error::InvalidConfig {
        option,
        reason: reason.into(),
    }
}

/// What is wrong with `host` as a host name or IP literal, if anything.
/// IPv6 literals come without brackets and may carry a `%zone`.
pub(crate) fn host_problem(host: &str) -> Option<String> {
    if host.is_empty() {
        return Some("is empty".into());
    }
    if host.starts_with('[') || host.ends_with(']') {
        return Some("write an IPv6 address without brackets".into());
    }
    if host.contains(':') {
        let (addr, zone) = match host.split_once('%') {
            Some((addr, zone)) => (addr, Some(zone)),
            None => (host, None),
        };
        let zone_ok = zone.is_none_or(|z| {
            !z.is_empty()
                && z.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        });
        if addr.parse::<Ipv6Addr>().is_err() || !zone_ok {
            return Some(format!("{host:?} is not a valid IPv6 address"));
        }
        return None;
    }
    if let Some(c) = host
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')))
    {
        return Some(format!(
            "{host:?} contains {c:?}, which cannot be part of a host name"
        ));
    }
    if host.starts_with('.') || host.contains("..") {
        return Some(format!("{host:?} has an empty label"));
    }
    if host.len() > 253 {
        return Some("is longer than 253 characters".into());
    }
    None
}

/// What Redis would reject in a client name, if anything: it accepts
/// printable ASCII from `!` to `~` (no spaces, no newlines).
fn client_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("is empty (leave it unset for no name)".into());
    }
    name.chars().find(|c| !('!'..='~').contains(c)).map(|c| {
        format!(
            "contains {c:?}; Redis accepts only printable ASCII without spaces or newlines (`!` to `~`)"
        )
    })
}

impl ConnectionConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> ConnectionConfigBuilder {
        ConnectionConfigBuilder::default()
    }

    /// A builder starting from this configuration, to change some options
    /// (for example those a URI cannot carry).
    pub fn into_builder(self) -> ConnectionConfigBuilder {
        ConnectionConfigBuilder::from(self)
    }

    /// Checks the options, alone and together. The error is an
    /// [`Error::InvalidConfig`] naming the option at fault; it never shows
    /// a password.
    pub fn validate(&self) -> Result<(), Error> {
        match &self.addr {
            ServerAddr::Tcp { host, port } => {
                if let Some(problem) = host_problem(host) {
                    return Err(invalid("host", problem));
                }
                if *port == 0 {
                    return Err(invalid("port", "must not be 0"));
                }
            }
            ServerAddr::Unix(path) => {
                if path.as_os_str().is_empty() {
                    return Err(invalid("unix_socket", "the path is empty"));
                }
                if self.tls.is_some() {
                    return Err(invalid(
                        "tls",
                        "TLS over a Unix socket is not supported; use TCP for TLS, or no TLS with the socket",
                    ));
                }
            }
        }
        if let Some(tls) = &self.tls {
            validate_tls(tls)?;
        }
        if self.username.is_some() && self.password.is_none() && self.credential_provider.is_none()
        {
            return Err(invalid(
                "username",
                "a user name needs a password: set a password, a password provider or a credential provider",
            ));
        }
        if let Some(problem) = self.client_name.as_deref().and_then(client_name_problem) {
            return Err(invalid("client_name", problem));
        }
        if self.timeout.is_zero() {
            return Err(invalid("timeout", "must be greater than zero"));
        }
        if self.health_interval.is_some_and(|h| h.is_zero()) {
            return Err(invalid(
                "health_interval",
                "must be greater than zero (None turns the health check off)",
            ));
        }
        if self.backoff_initial.is_zero() {
            return Err(invalid("backoff_initial", "must be greater than zero"));
        }
        if self.backoff_max.is_zero() {
            return Err(invalid("backoff_max", "must be greater than zero"));
        }
        if self.backoff_initial > self.backoff_max {
            return Err(invalid(
                "backoff_initial",
                format!(
                    "{:?} is greater than backoff_max ({:?})",
                    self.backoff_initial, self.backoff_max
                ),
            ));
        }
        for (option, value) in [
            ("max_in_flight", self.max_in_flight),
            ("max_batch_bytes", self.max_batch_bytes),
            ("push_capacity", self.push_capacity),
        ] {
            if value == 0 {
                return Err(invalid(option, "must be greater than zero"));
            }
        }
        let l = &self.decoder_limits;
        for (name, value) in [
            ("max_bulk_len", l.max_bulk_len),
            ("max_depth", l.max_depth),
            ("max_aggregate_len", l.max_aggregate_len),
            ("max_line_len", l.max_line_len),
            ("max_reply_bytes", l.max_reply_bytes),
        ] {
            if value == 0 {
                return Err(invalid(
                    "decoder_limits",
                    format!("{name} must be greater than zero"),
                ));
            }
        }
        Ok(())
    }
}

fn validate_tls(tls: &TlsOptions) -> Result<(), Error> {
    let empty = |p: &PathBuf| p.as_os_str().is_empty();
    match &tls.roots {
        TlsRoots::CaFile(path) if empty(path) => {
            return Err(invalid("tls_ca_file", "the path is empty"));
        }
        TlsRoots::CaPem(pem) if pem.is_empty() => {
            return Err(invalid("tls_ca_pem", "the PEM text is empty"));
        }
        _ => {}
    }
    match &tls.client_cert {
        Some(ClientCert::Files { cert, key }) if empty(cert) || empty(key) => {
            return Err(invalid("tls_client_cert", "a path is empty"));
        }
        Some(ClientCert::Pem { cert, key }) if cert.is_empty() || key.is_empty() => {
            return Err(invalid("tls_client_cert", "a PEM text is empty"));
        }
        _ => {}
    }
    if let Some(name) = &tls.server_name {
        if rustls::pki_types::ServerName::try_from(name.as_str()).is_err() {
            return Err(invalid(
                "tls_server_name",
                format!("{name:?} is neither a DNS name nor an IP address"),
            ));
        }
    }
    Ok(())
}

/// Builds a [`ConnectionConfig`] one option at a time; [`build`] checks
/// the result. Options not set keep the defaults of
/// [`ConnectionConfig::default`].
///
/// [`build`]: ConnectionConfigBuilder::build
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct ConnectionConfigBuilder {
    /// Everything but the address, which is put together in `build`.
    config: ConnectionConfig,
    host: String,
    port: u16,
    /// Overrides `host` and `port` when set, whatever the order of calls.
    unix_socket: Option<PathBuf>,
}

impl Default for ConnectionConfigBuilder {
    fn default() -> Self {
        ConnectionConfig::default().into()
    }
}

impl From<ConnectionConfig> for ConnectionConfigBuilder {
    fn from(config: ConnectionConfig) -> Self {
        let (host, port, unix_socket) = match &config.addr {
            ServerAddr::Tcp { host, port } => (host.clone(), *port, None),
            ServerAddr::Unix(path) => ("127.0.0.1".to_owned(), 6379, Some(path.clone())),
        };
        ConnectionConfigBuilder {
            config,
            host,
            port,
            unix_socket,
        }
    }
}

impl ConnectionConfigBuilder {
    /// Server host name or IP address (default `127.0.0.1`); IPv6 without
    /// brackets.
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = host.into();
        self
    }

    /// Server TCP port (default 6379).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Connect to this Unix domain socket; it overrides host and port,
    /// whichever order they are set in.
    pub fn unix_socket(mut self, path: impl Into<PathBuf>) -> Self {
        self.unix_socket = Some(path.into());
        self
    }

    /// A fixed password for `AUTH`.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.config.password = Some(Password::Static(password.into()));
        self
    }

    /// A function asked for the password on every connect and reconnect.
    pub fn password_provider(
        mut self,
        provider: impl Fn() -> String + Send + Sync + 'static,
    ) -> Self {
        self.config.password = Some(Password::Provider(Arc::new(provider)));
        self
    }

    /// ACL user name (Redis 6+); it needs a password or a provider.
    pub fn username(mut self, username: impl Into<String>) -> Self {
        self.config.username = Some(username.into());
        self
    }

    /// Database to `SELECT` after the handshake.
    pub fn database(mut self, database: u32) -> Self {
        self.config.database = Some(database);
        self
    }

    /// Use TLS with these settings.
    pub fn tls(mut self, tls: TlsOptions) -> Self {
        self.config.tls = Some(tls);
        self
    }

    fn tls_mut(&mut self) -> &mut TlsOptions {
        self.config.tls.get_or_insert_with(TlsOptions::default)
    }

    /// Use TLS, trusting the CA certificates of this PEM file instead of
    /// the system's.
    pub fn tls_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls_mut().roots = TlsRoots::CaFile(path.into());
        self
    }

    /// Use TLS, trusting the CA certificates of this PEM text instead of
    /// the system's.
    pub fn tls_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_mut().roots = TlsRoots::CaPem(pem.into());
        self
    }

    /// Use TLS, and show the server this client certificate (PEM files:
    /// the chain, leaf first, and the private key).
    pub fn tls_client_cert_files(
        mut self,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> Self {
        self.tls_mut().client_cert = Some(ClientCert::Files {
            cert: cert.into(),
            key: key.into(),
        });
        self
    }

    /// Use TLS, and show the server this client certificate (PEM text).
    pub fn tls_client_cert_pem(
        mut self,
        cert: impl Into<Vec<u8>>,
        key: impl Into<Vec<u8>>,
    ) -> Self {
        self.tls_mut().client_cert = Some(ClientCert::Pem {
            cert: cert.into(),
            key: key.into(),
        });
        self
    }

    /// Use TLS, sending this name in SNI and verifying the certificate
    /// against it instead of the host.
    pub fn tls_server_name(mut self, name: impl Into<String>) -> Self {
        self.tls_mut().server_name = Some(name.into());
        self
    }

    /// Use TLS, accepting any server certificate. This gives up the
    /// protection TLS gives against a man in the middle: only for tests
    /// and debugging.
    pub fn dangerously_accept_invalid_certs(mut self) -> Self {
        self.tls_mut().dangerously_accept_invalid_certs = true;
        self
    }

    /// Connect before returning (default true), or return at once and
    /// connect in the background.
    pub fn sync_connect(mut self, sync_connect: bool) -> Self {
        self.config.sync_connect = sync_connect;
        self
    }

    /// First reconnection delay (default 500 ms).
    pub fn backoff_initial(mut self, delay: Duration) -> Self {
        self.config.backoff_initial = delay;
        self
    }

    /// Largest reconnection delay (default 30 s).
    pub fn backoff_max(mut self, delay: Duration) -> Self {
        self.config.backoff_max = delay;
        self
    }

    /// RESP version to ask for (default RESP3).
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.config.protocol = protocol;
        self
    }

    /// Name given to the connection with `CLIENT SETNAME`: printable ASCII
    /// without spaces.
    pub fn client_name(mut self, name: impl Into<String>) -> Self {
        self.config.client_name = Some(name.into());
        self
    }

    /// Deadline of a call (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.config.timeout = timeout;
        self
    }

    /// Ask this provider for credentials on every connect; the password
    /// and user name options are then ignored.
    pub fn credential_provider(self, provider: impl CredentialProvider) -> Self {
        self.shared_credential_provider(Arc::new(provider))
    }

    /// Like [`credential_provider`](Self::credential_provider), with a
    /// provider already shared.
    pub fn shared_credential_provider(mut self, provider: Arc<dyn CredentialProvider>) -> Self {
        self.config.credential_provider = Some(provider);
        self
    }

    /// Close the handle for good when the socket dies instead of
    /// reconnecting (default false).
    pub fn exit_on_disconnection(mut self, exit: bool) -> Self {
        self.config.exit_on_disconnection = exit;
        self
    }

    /// Release idle buffers after the connection has been idle this long.
    pub fn hibernate_after(mut self, idle: Duration) -> Self {
        self.config.hibernate_after = Some(idle);
        self
    }

    /// The health check's interval (default 1 s); `None` turns the check
    /// off. See [`ConnectionConfig::health_interval`].
    pub fn health_interval(mut self, interval: Option<Duration>) -> Self {
        self.config.health_interval = interval;
        self
    }

    /// Append a hook; hooks run in the order they are added.
    pub fn hook(self, hook: impl Hook) -> Self {
        self.shared_hook(Arc::new(hook))
    }

    /// Like [`hook`](Self::hook), with a hook already shared.
    pub fn shared_hook(mut self, hook: Arc<dyn Hook>) -> Self {
        self.config.hooks.push(hook);
        self
    }

    /// Most calls queued or awaiting replies at once; callers beyond wait
    /// in line (default 16384).
    pub fn max_in_flight(mut self, max: usize) -> Self {
        self.config.max_in_flight = max;
        self
    }

    /// Most bytes of encoded, unwritten commands buffered (default 4 MiB).
    pub fn max_batch_bytes(mut self, max: usize) -> Self {
        self.config.max_batch_bytes = max;
        self
    }

    /// Limits on replies, such as the memory one decoded reply may hold:
    /// `.decoder_limits(DecoderLimits::default().max_reply_bytes(64 << 20))`.
    pub fn decoder_limits(mut self, limits: DecoderLimits) -> Self {
        self.config.decoder_limits = limits;
        self
    }

    /// Push frames kept for the push receiver (default 1024).
    pub fn push_capacity(mut self, capacity: usize) -> Self {
        self.config.push_capacity = capacity;
        self
    }

    /// How bytes move to and from the socket (default
    /// [`TransportKind::Auto`]: `REDCORE_TRANSPORT`, else glommio).
    pub fn transport(mut self, transport: TransportKind) -> Self {
        self.config.transport = transport;
        self
    }

    /// The configuration, checked by [`ConnectionConfig::validate`].
    pub fn build(self) -> Result<ConnectionConfig, Error> {
        let mut config = self.config;
        config.addr = match self.unix_socket {
            Some(path) => ServerAddr::Unix(path),
            None => ServerAddr::Tcp {
                host: self.host,
                port: self.port,
            },
        };
        config.validate()?;
        Ok(config)
    }
}
