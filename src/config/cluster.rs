//! The options of a cluster client: its seed nodes, the connection options
//! applied to every node, and how it follows redirects and refreshes its
//! view of the cluster.

use std::net::SocketAddr;
use std::time::Duration;

use super::read_from::{NodeZones, ReadFrom, ReplicaOptions};
use super::{ConnectionConfig, ConnectionConfigBuilder, ServerAddr, TlsOptions, invalid};
use crate::Error;
use crate::cluster::NodeAddr;

/// Options of a [`Cluster`](crate::cluster::Cluster).
///
/// Build one with [`ClusterConfig::builder`], or pass seeds or a Redis URI
/// straight to [`Cluster::connect`](crate::cluster::Cluster::connect):
///
/// ```
/// use std::time::Duration;
/// use redcore::ClusterConfig;
///
/// let config = ClusterConfig::builder()
///     .seed("127.0.0.1:7000")
///     .seed(("127.0.0.1", 7001))
///     .password("secret")
///     .timeout(Duration::from_secs(2))
///     .max_redirects(8)
///     .build()?;
/// assert_eq!(config.seeds.len(), 2);
/// assert_eq!(config.node.timeout, Duration::from_secs(2));
/// # Ok::<(), redcore::Error>(())
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClusterConfig {
    /// Nodes asked for the topology at start (a bare host means port 6379).
    /// Later refreshes ask every node the cluster reported, so the client
    /// heals when its seeds are gone.
    pub seeds: Vec<NodeAddr>,
    /// Connection options applied to every node: password, user name,
    /// TLS, protocol, client name, hooks, ... Its address is replaced by
    /// each node's. Its `timeout` (default 5 s) is the deadline of every
    /// cluster call, end to end, redirects and retries included. Its
    /// reconnection backoff defaults to 100 ms .. 2 s here, shorter than a
    /// lone connection's, so a restarted node is found again quickly.
    pub node: ConnectionConfig,
    /// Most MOVED/ASK redirects one call follows (default 5).
    pub max_redirects: u32,
    /// A topology refresh at this interval, with ±10% jitter, besides the
    /// refreshes errors trigger (default 30 s; `None` for none).
    pub refresh_interval: Option<Duration>,
    /// Least time between the starts of two refreshes (default 100 ms):
    /// requests arriving sooner are merged into the next one.
    pub refresh_min_interval: Duration,
    /// Deadline of one refresh, all nodes asked included (default 2 s).
    pub refresh_timeout: Duration,
    /// How many nodes a refresh asks at once (default 3).
    pub refresh_fanout: usize,
    /// First delay before retrying after `TRYAGAIN`, `LOADING` or `BUSY`
    /// (default 20 ms); it doubles on each retry up to
    /// [`retry_backoff_max`](Self::retry_backoff_max).
    pub retry_backoff_initial: Duration,
    /// Largest retry delay (default 500 ms).
    pub retry_backoff_max: Duration,
    /// Where commands that only read go (default: the master). A handle
    /// can override it per call with
    /// [`Cluster::with_read_from`](crate::cluster::Cluster::with_read_from).
    pub read_from: ReadFrom,
    /// Zones and latency probing for the replica strategies (boxed: most
    /// clients never read from replicas).
    pub replicas: Box<ReplicaOptions>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            seeds: Vec::new(),
            node: ConnectionConfig {
                backoff_initial: Duration::from_millis(100),
                backoff_max: Duration::from_secs(2),
                ..ConnectionConfig::default()
            },
            max_redirects: 5,
            refresh_interval: Some(Duration::from_secs(30)),
            refresh_min_interval: Duration::from_millis(100),
            refresh_timeout: Duration::from_secs(2),
            refresh_fanout: 3,
            retry_backoff_initial: Duration::from_millis(20),
            retry_backoff_max: Duration::from_millis(500),
            read_from: ReadFrom::Primary,
            replicas: Box::default(),
        }
    }
}

impl ClusterConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> ClusterConfigBuilder {
        ClusterConfigBuilder::default()
    }

    /// The configuration a Redis URI describes, its host and port as the
    /// one seed: `redis://:secret@10.0.0.1:7000` or `rediss://...` for TLS.
    /// A database other than 0 is an error: a cluster has only database 0.
    /// Besides the connection's query options, `read_from=` takes a
    /// [`ReadFrom`] (`redis://10.0.0.1:7000?read_from=replica`).
    pub fn from_uri(uri: &str) -> Result<ClusterConfig, Error> {
        let (uri, read_from) = take_read_from(uri)?;
        let mut node = super::parse_uri(&uri)?;
        // A URI carries no backoff: keep the cluster's shorter defaults.
        let defaults = ClusterConfig::default().node;
        node.backoff_initial = defaults.backoff_initial;
        node.backoff_max = defaults.backoff_max;
        let ServerAddr::Tcp { host, port } = &node.addr else {
            return Err(invalid(
                "seeds",
                "a cluster is reached over TCP, not a Unix socket",
            ));
        };
        let seed = NodeAddr::new(host.clone(), *port);
        let mut builder = ClusterConfig::builder().seed(seed);
        if let Some(r) = read_from {
            builder = builder.read_from(r);
        }
        builder.node = node.into_builder();
        builder.build()
    }

    /// The deadline of every call, end to end (`node.timeout`).
    pub fn timeout(&self) -> Duration {
        self.node.timeout
    }

    /// The connection options of one node.
    pub(crate) fn node_config(&self, addr: &NodeAddr) -> ConnectionConfig {
        ConnectionConfig {
            addr: ServerAddr::Tcp {
                host: addr.host.clone(),
                port: addr.port,
            },
            sync_connect: false,
            ..self.node.clone()
        }
    }

    /// Checks the options. The error is an
    /// [`Error::InvalidConfig`] naming the option.
    pub fn validate(&self) -> Result<(), Error> {
        if self.seeds.is_empty() {
            return Err(invalid("seeds", "give at least one seed node"));
        }
        if matches!(self.node.addr, ServerAddr::Unix(_)) {
            return Err(invalid(
                "unix_socket",
                "a cluster is reached over TCP, not a Unix socket",
            ));
        }
        if self.node.database.is_some_and(|db| db != 0) {
            return Err(invalid("database", "a cluster has only database 0"));
        }
        if self.node.exit_on_disconnection {
            return Err(invalid(
                "exit_on_disconnection",
                "cluster node connections must reconnect",
            ));
        }
        if self.refresh_interval.is_some_and(|d| d.is_zero()) {
            return Err(invalid(
                "refresh_interval",
                "must be more than zero (None turns periodic refreshes off)",
            ));
        }
        if self.refresh_timeout.is_zero() {
            return Err(invalid("refresh_timeout", "must be more than zero"));
        }
        if self.refresh_fanout == 0 {
            return Err(invalid("refresh_fanout", "must be at least 1"));
        }
        if self.retry_backoff_initial.is_zero() {
            return Err(invalid("retry_backoff_initial", "must be more than zero"));
        }
        if self.retry_backoff_max < self.retry_backoff_initial {
            return Err(invalid(
                "retry_backoff_max",
                "must not be less than retry_backoff_initial",
            ));
        }
        self.replicas.validate(self.read_from)?;
        self.node.validate()
    }
}

/// `uri` without its `read_from=` query option, and that option's value.
fn take_read_from(uri: &str) -> Result<(String, Option<ReadFrom>), Error> {
    let Some((base, query)) = uri.split_once('?') else {
        return Ok((uri.to_owned(), None));
    };
    let mut read_from = None;
    let mut rest = Vec::new();
    for pair in query.split('&') {
        match pair.strip_prefix("read_from=") {
            Some(_) if read_from.is_some() => {
                return Err(invalid("read_from", "given twice in the URI"));
            }
            Some(value) => read_from = Some(value.parse::<ReadFrom>()?),
            None => rest.push(pair),
        }
    }
    let uri = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    Ok((uri, read_from))
}

/// Anything that names one node: `"host:port"`, `"host"` (port 6379),
/// `("host", port)`, a [`NodeAddr`] or a [`SocketAddr`].
pub trait IntoNodeAddr {
    /// Converts, checking the text.
    fn into_node_addr(self) -> Result<NodeAddr, Error>;
}

impl IntoNodeAddr for NodeAddr {
    fn into_node_addr(self) -> Result<NodeAddr, Error> {
        Ok(self)
    }
}

impl IntoNodeAddr for &NodeAddr {
    fn into_node_addr(self) -> Result<NodeAddr, Error> {
        Ok(self.clone())
    }
}

impl IntoNodeAddr for &str {
    fn into_node_addr(self) -> Result<NodeAddr, Error> {
        self.parse()
    }
}

impl IntoNodeAddr for String {
    fn into_node_addr(self) -> Result<NodeAddr, Error> {
        self.parse()
    }
}

impl IntoNodeAddr for &String {
    fn into_node_addr(self) -> Result<NodeAddr, Error> {
        self.parse()
    }
}

impl IntoNodeAddr for SocketAddr {
    fn into_node_addr(self) -> Result<NodeAddr, Error> {
        Ok(self.into())
    }
}

impl<H: Into<String>> IntoNodeAddr for (H, u16) {
    fn into_node_addr(self) -> Result<NodeAddr, Error> {
        let host = self.0.into();
        if let Some(problem) = super::host_problem(&host) {
            return Err(invalid("seeds", format!("host {problem}")));
        }
        if self.1 == 0 {
            return Err(invalid("seeds", "port 0"));
        }
        Ok(NodeAddr::new(host, self.1))
    }
}

/// Builds a [`ClusterConfig`]; errors in any option are reported by
/// [`build`](Self::build).
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct ClusterConfigBuilder {
    config: ClusterConfig,
    node: ConnectionConfigBuilder,
    error: Option<Error>,
}

impl Default for ClusterConfigBuilder {
    fn default() -> Self {
        let config = ClusterConfig::default();
        ClusterConfigBuilder {
            node: config.node.clone().into_builder(),
            config,
            error: None,
        }
    }
}

impl ClusterConfigBuilder {
    /// Adds a seed node.
    pub fn seed(mut self, node: impl IntoNodeAddr) -> Self {
        match node.into_node_addr() {
            Ok(addr) => self.config.seeds.push(addr),
            Err(e) => {
                self.error.get_or_insert(e);
            }
        }
        self
    }

    /// Adds seed nodes.
    pub fn seeds<N: IntoNodeAddr>(mut self, nodes: impl IntoIterator<Item = N>) -> Self {
        for n in nodes {
            self = self.seed(n);
        }
        self
    }

    /// Password for every node.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.node = self.node.password(password);
        self
    }

    /// ACL user name for every node.
    pub fn username(mut self, username: impl Into<String>) -> Self {
        self.node = self.node.username(username);
        self
    }

    /// TLS for every node. The server name checked is each node's host
    /// unless the options name one.
    pub fn tls(mut self, tls: TlsOptions) -> Self {
        self.node = self.node.tls(tls);
        self
    }

    /// Deadline of every call, end to end (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.node = self.node.timeout(timeout);
        self
    }

    /// Any other connection option, applied to every node:
    /// `.connection(|c| c.client_name("api").protocol(Protocol::Resp2))`.
    pub fn connection(
        mut self,
        f: impl FnOnce(ConnectionConfigBuilder) -> ConnectionConfigBuilder,
    ) -> Self {
        self.node = f(self.node);
        self
    }

    /// Most redirects one call follows (default 5).
    pub fn max_redirects(mut self, max: u32) -> Self {
        self.config.max_redirects = max;
        self
    }

    /// Periodic refresh interval (default 30 s); `None` turns it off.
    pub fn refresh_interval(mut self, interval: Option<Duration>) -> Self {
        self.config.refresh_interval = interval;
        self
    }

    /// Least time between two refreshes (default 100 ms).
    pub fn refresh_min_interval(mut self, interval: Duration) -> Self {
        self.config.refresh_min_interval = interval;
        self
    }

    /// Deadline of one refresh (default 2 s).
    pub fn refresh_timeout(mut self, timeout: Duration) -> Self {
        self.config.refresh_timeout = timeout;
        self
    }

    /// Nodes a refresh asks at once (default 3).
    pub fn refresh_fanout(mut self, nodes: usize) -> Self {
        self.config.refresh_fanout = nodes;
        self
    }

    /// Retry delays after `TRYAGAIN`, `LOADING` or `BUSY` (default 20 ms
    /// doubling up to 500 ms).
    pub fn retry_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.config.retry_backoff_initial = initial;
        self.config.retry_backoff_max = max;
        self
    }

    /// Client-side caching with `options`: one cache per cluster client
    /// (per core on the runtime), tracked by the master connections (sets
    /// the node template's [`ConnectionConfig::cache`]).
    pub fn cache(mut self, options: super::CacheOptions) -> Self {
        self.node = self.node.cache(options);
        self
    }

    /// Where commands that only read go (default [`ReadFrom::Primary`]).
    pub fn read_from(mut self, read_from: ReadFrom) -> Self {
        self.config.read_from = read_from;
        self
    }

    /// The client's availability zone, for [`ReadFrom::AzAffinity`].
    pub fn client_zone(mut self, zone: impl Into<String>) -> Self {
        self.config.replicas.client_zone = Some(zone.into());
        self
    }

    /// The zone of each node, by address, for [`ReadFrom::AzAffinity`].
    pub fn node_zones(
        mut self,
        zones: impl IntoIterator<Item = (impl IntoNodeAddr, impl Into<String>)>,
    ) -> Self {
        let mut table = std::collections::HashMap::new();
        for (addr, zone) in zones {
            match addr.into_node_addr() {
                Ok(addr) => {
                    table.insert(addr, zone.into());
                }
                Err(e) => {
                    self.error.get_or_insert(e);
                }
            }
        }
        self.config.replicas.node_zones = NodeZones::Table(table);
        self
    }

    /// A function naming the zone of a node, for
    /// [`ReadFrom::AzAffinity`]; asked on every read routed by zone.
    pub fn node_zone_fn(
        mut self,
        f: impl Fn(&NodeAddr) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.config.replicas.node_zones = NodeZones::Function(std::sync::Arc::new(f));
        self
    }

    /// How often the round trip to each node is measured for
    /// [`ReadFrom::LowestLatency`] (default 100 ms).
    pub fn latency_probe_interval(mut self, interval: Duration) -> Self {
        self.config.replicas.latency_probe_interval = interval;
        self
    }

    /// The configuration, checked by [`ClusterConfig::validate`].
    pub fn build(self) -> Result<ClusterConfig, Error> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let mut config = self.config;
        config.node = self.node.build()?;
        config.validate()?;
        Ok(config)
    }
}

/// Anything [`Cluster::connect`](crate::cluster::Cluster::connect) takes:
/// a [`ClusterConfig`], a Redis URI (`"redis://:pw@10.0.0.1:7000"`), one
/// `"host:port"`, or a list of them as seeds.
pub trait IntoClusterConfig {
    /// Converts and validates.
    fn into_cluster_config(self) -> Result<ClusterConfig, Error>;
}

impl IntoClusterConfig for ClusterConfig {
    fn into_cluster_config(self) -> Result<ClusterConfig, Error> {
        self.validate()?;
        Ok(self)
    }
}

impl IntoClusterConfig for &str {
    fn into_cluster_config(self) -> Result<ClusterConfig, Error> {
        if self.contains("://") {
            ClusterConfig::from_uri(self)
        } else {
            ClusterConfig::builder().seed(self).build()
        }
    }
}

impl IntoClusterConfig for String {
    fn into_cluster_config(self) -> Result<ClusterConfig, Error> {
        self.as_str().into_cluster_config()
    }
}

impl<N: IntoNodeAddr + Clone> IntoClusterConfig for &[N] {
    fn into_cluster_config(self) -> Result<ClusterConfig, Error> {
        ClusterConfig::builder().seeds(self.iter().cloned()).build()
    }
}

impl<N: IntoNodeAddr, const K: usize> IntoClusterConfig for [N; K] {
    fn into_cluster_config(self) -> Result<ClusterConfig, Error> {
        ClusterConfig::builder().seeds(self).build()
    }
}

impl<N: IntoNodeAddr> IntoClusterConfig for Vec<N> {
    fn into_cluster_config(self) -> Result<ClusterConfig, Error> {
        ClusterConfig::builder().seeds(self).build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn option_of(e: Error) -> &'static str {
        match e {
            Error::InvalidConfig { option, .. } => option,
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn seeds_in_every_shape() {
        let sock: SocketAddr = "10.0.0.3:7002".parse().unwrap();
        let c = ClusterConfig::builder()
            .seed("10.0.0.1:7000")
            .seed(("10.0.0.2", 7001))
            .seed(sock)
            .seed("cache")
            .seed("[::1]:7005")
            .build()
            .unwrap();
        let seeds: Vec<String> = c.seeds.iter().map(ToString::to_string).collect();
        assert_eq!(
            seeds,
            [
                "10.0.0.1:7000",
                "10.0.0.2:7001",
                "10.0.0.3:7002",
                "cache:6379",
                "[::1]:7005"
            ]
        );
        assert_eq!(c.max_redirects, 5);
        assert_eq!(c.timeout(), Duration::from_secs(5));
        assert_eq!(c.node.backoff_max, Duration::from_secs(2));
    }

    #[test]
    fn the_cache_option_reaches_the_node_template() {
        let c = ClusterConfig::builder()
            .seed("10.0.0.1:7000")
            .cache(crate::CacheOptions::with_max_bytes(1 << 20))
            .build()
            .unwrap();
        assert_eq!(c.node.cache.map(|o| o.max_bytes), Some(1 << 20));
    }

    #[test]
    fn bad_options_name_themselves() {
        let no_seed = ClusterConfig::builder().build().unwrap_err();
        assert_eq!(option_of(no_seed), "seeds");
        let bad_port = ClusterConfig::builder()
            .seed("h:99999")
            .build()
            .unwrap_err();
        assert_eq!(option_of(bad_port), "node address");
        let bad_host = ClusterConfig::builder()
            .seed(("bad host", 1))
            .build()
            .unwrap_err();
        assert_eq!(option_of(bad_host), "seeds");
        let db = ClusterConfig::builder()
            .seed("h:1")
            .connection(|c| c.database(2))
            .build()
            .unwrap_err();
        assert_eq!(option_of(db), "database");
        let fanout = ClusterConfig::builder()
            .seed("h:1")
            .refresh_fanout(0)
            .build()
            .unwrap_err();
        assert_eq!(option_of(fanout), "refresh_fanout");
        let backoff = ClusterConfig::builder()
            .seed("h:1")
            .retry_backoff(Duration::from_secs(1), Duration::from_millis(1))
            .build()
            .unwrap_err();
        assert_eq!(option_of(backoff), "retry_backoff_max");
        let periodic = ClusterConfig::builder()
            .seed("h:1")
            .refresh_interval(Some(Duration::ZERO))
            .build()
            .unwrap_err();
        assert_eq!(option_of(periodic), "refresh_interval");
    }

    #[test]
    fn uris_and_lists() {
        let c = "redis://u:p%40ss@10.0.0.1:7000"
            .into_cluster_config()
            .unwrap();
        assert_eq!(c.seeds, [NodeAddr::new("10.0.0.1", 7000)]);
        assert_eq!(c.node.username.as_deref(), Some("u"));
        assert!(c.node.password.is_some());
        let tls = "rediss://10.0.0.1:7000".into_cluster_config().unwrap();
        assert!(tls.node.tls.is_some());
        let db = "redis://10.0.0.1:7000/3".into_cluster_config().unwrap_err();
        assert_eq!(option_of(db), "database");
        let unix = "unix:///tmp/r.sock".into_cluster_config().unwrap_err();
        assert_eq!(option_of(unix), "seeds");
        let list = ["10.0.0.1:7000", "10.0.0.2:7001"]
            .into_cluster_config()
            .unwrap();
        assert_eq!(list.seeds.len(), 2);
        let replicas = "redis://10.0.0.1:7000?protocol=resp2&read_from=replica"
            .into_cluster_config()
            .unwrap();
        assert_eq!(replicas.read_from, ReadFrom::PreferReplica);
        assert_eq!(replicas.node.protocol, crate::Protocol::Resp2);
        let bad = "redis://10.0.0.1:7000?read_from=nearest"
            .into_cluster_config()
            .unwrap_err();
        assert_eq!(option_of(bad), "read_from");
        let az = "redis://10.0.0.1:7000?read_from=az"
            .into_cluster_config()
            .unwrap_err();
        assert_eq!(option_of(az), "read_from");
        let one = "10.0.0.1:7000".into_cluster_config().unwrap();
        assert_eq!(one.seeds, [NodeAddr::new("10.0.0.1", 7000)]);
    }
}
