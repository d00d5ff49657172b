//! The options of one connection: [`ConnectionConfig`], its builder
//! [`ConnectionConfigBuilder`], and the checks that tie options together.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::tls::validate_tls;
use super::{
    ClientCert, Protocol, ServerAddr, TlsOptions, TlsRoots, TransportKind, host_problem, invalid,
};
use crate::Error;
use crate::auth::CredentialProvider;
use crate::hooks::Hook;
use crate::resp::DecoderLimits;

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

/// Everything a [`Connection`](crate::Connection) needs to know. Defaults
/// are those of the Elixir `Redis.Connection`.
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
    /// Messages a [`Subscription`](crate::Subscription) queues for its
    /// reader before its [`Overflow`](crate::pubsub::Overflow) policy
    /// drops some (default 16 384).
    pub subscription_capacity: usize,
    /// Bytes of messages (channel, pattern and payload, plus 64 per
    /// message) a subscription queues, at most (default 64 MiB).
    pub subscription_max_bytes: usize,
    /// What a subscription whose queue is full drops (default: the
    /// oldest message); the reader is told with a gap either way.
    pub subscription_overflow: crate::pubsub::Overflow,
    /// How bytes move to and from the socket (default
    /// [`TransportKind::Auto`]).
    pub transport: TransportKind,
    /// Send `READONLY` in the handshake of every socket (default false),
    /// so a cluster replica serves reads of its master's slots, again
    /// after each reconnect. The cluster client sets it on its replica
    /// connections. A server that refuses it (not in cluster mode) is
    /// logged and the connection goes on: its replica reads are then
    /// redirected.
    pub readonly: bool,
    /// Client-side caching for the reads of
    /// [`CacheCommands`](crate::CacheCommands) (default off). With it, each
    /// socket's handshake turns `CLIENT TRACKING` on, in the mode the
    /// options say. Needs RESP3: with [`Protocol::Resp2`] the options are
    /// refused, and a server that refuses `HELLO 3` fails the handshake
    /// (invalidations on a separate `REDIRECT` connection could overtake
    /// or trail the replies they concern, and every server with tracking
    /// speaks RESP3).
    pub cache: Option<super::CacheOptions>,
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
            subscription_capacity: 16384,
            subscription_max_bytes: 64 << 20,
            subscription_overflow: crate::pubsub::Overflow::DropOldest,
            transport: TransportKind::Auto,
            readonly: false,
            cache: None,
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
            .field("subscription_capacity", &self.subscription_capacity)
            .field("subscription_max_bytes", &self.subscription_max_bytes)
            .field("subscription_overflow", &self.subscription_overflow)
            .field("transport", &self.transport)
            .field("readonly", &self.readonly)
            .field("cache", &self.cache)
            .finish()
    }
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
        if let Some(cache) = &self.cache {
            cache.validate()?;
            if self.protocol == Protocol::Resp2 {
                return Err(invalid(
                    "cache",
                    "client-side caching needs RESP3 (invalidations arrive as push frames in order with the replies); use protocol 3",
                ));
            }
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
            ("subscription_capacity", self.subscription_capacity),
            ("subscription_max_bytes", self.subscription_max_bytes),
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

/// Builds a [`ConnectionConfig`] one option at a time; [`build`] checks
/// the result. Options not set keep the defaults of
/// [`ConnectionConfig::default`].
///
/// [`build`]: ConnectionConfigBuilder::build
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct ConnectionConfigBuilder {
    // The fields are open to the rest of `config`: URI parsing fills them.
    /// Everything but the address, which is put together in `build`.
    pub(super) config: ConnectionConfig,
    pub(super) host: String,
    pub(super) port: u16,
    /// Overrides `host` and `port` when set, whatever the order of calls.
    pub(super) unix_socket: Option<PathBuf>,
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

    /// Client-side caching with `options` (see
    /// [`ConnectionConfig::cache`]).
    pub fn cache(mut self, options: super::CacheOptions) -> Self {
        self.config.cache = Some(options);
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

    /// Messages a subscription queues for its reader, at most (default
    /// 16 384), and bytes (default 64 MiB).
    pub fn subscription_capacity(mut self, messages: usize, bytes: usize) -> Self {
        self.config.subscription_capacity = messages;
        self.config.subscription_max_bytes = bytes;
        self
    }

    /// What a subscription whose queue is full drops (default
    /// [`Overflow::DropOldest`](crate::pubsub::Overflow::DropOldest)).
    pub fn subscription_overflow(mut self, overflow: crate::pubsub::Overflow) -> Self {
        self.config.subscription_overflow = overflow;
        self
    }

    /// Send `READONLY` in the handshake of every socket (default false):
    /// for reads from a cluster replica.
    pub fn readonly(mut self, readonly: bool) -> Self {
        self.config.readonly = readonly;
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
