//! The cluster as one node describes it: shards, their slot ranges, their
//! master and replicas, parsed from `CLUSTER SHARDS` (Redis 7+) or from the
//! older `CLUSTER SLOTS`, and checked before anything routes by it.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use crate::error::{ConversionError, Error, Redirect};
use crate::resp::Value;
use crate::slot::SLOT_COUNT;

/// The port a bare host name means.
const DEFAULT_PORT: u16 = 6379;
const SHARDS: &str = "CLUSTER SHARDS reply";
const SLOTS: &str = "CLUSTER SLOTS reply";

/// The address of a cluster node: a host name or IP address and a port.
///
/// Displays as `host:port`, with an IPv6 address in brackets
/// (`[::1]:7000`), and parses from the same forms; a bare host means port
/// 6379.
///
/// ```
/// use redcore::cluster::NodeAddr;
///
/// let addr: NodeAddr = "[::1]:7000".parse()?;
/// assert_eq!((addr.host.as_str(), addr.port), ("::1", 7000));
/// assert_eq!(addr.to_string(), "[::1]:7000");
/// assert_eq!("cache-1".parse::<NodeAddr>()?, NodeAddr::new("cache-1", 6379));
/// # Ok::<(), redcore::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeAddr {
    /// Host name or IP address, without brackets.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl NodeAddr {
    /// An address from its parts.
    pub fn new(host: impl Into<String>, port: u16) -> NodeAddr {
        NodeAddr {
            host: host.into(),
            port,
        }
    }

    /// Where a `MOVED` or `ASK` reply points. An empty host (`MOVED 5
    /// :7002`) means the host of `source`, the node that sent the reply.
    pub fn from_redirect(redirect: &Redirect, source: &NodeAddr) -> NodeAddr {
        NodeAddr::new(host_or_source(&redirect.host, source), redirect.port)
    }
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl From<SocketAddr> for NodeAddr {
    fn from(addr: SocketAddr) -> NodeAddr {
        NodeAddr::new(addr.ip().to_string(), addr.port())
    }
}

impl FromStr for NodeAddr {
    type Err = Error;

    /// `host:port`, `[v6]:port`, a bare host or a bare IPv6 address (port
    /// 6379). An empty host, a port of 0 or past 65535 are errors.
    fn from_str(s: &str) -> Result<NodeAddr, Error> {
        let bad = |reason: &str| Error::InvalidConfig {
            option: "node address",
            reason: format!("{reason} in {s:?}"),
        };
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(|| bad("no `]`"))?;
            let port = (!after.is_empty())
                .then(|| after.strip_prefix(':').ok_or_else(|| bad("text after `]`")))
                .transpose()?;
            (host, port)
        } else {
            match s.split_once(':') {
                // Two colons or more without brackets: a bare IPv6 address.
                Some((host, port)) if !port.contains(':') => (host, Some(port)),
                _ => (s, None),
            }
        };
        if host.is_empty() {
            return Err(bad("empty host"));
        }
        if host.contains(|c: char| c.is_whitespace() || c == '[' || c == ']') {
            return Err(bad("invalid host"));
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) => match p.parse::<u16>() {
                Ok(port) if port != 0 => port,
                _ => return Err(bad("invalid port")),
            },
        };
        Ok(NodeAddr::new(host, port))
    }
}

/// A node's role in its shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Serves the shard's slots, reads and writes.
    Master,
    /// Replicates a master; may serve reads after `READONLY`.
    Replica,
}

/// A node's health as the replying node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Health {
    /// Reachable and serving.
    Online,
    /// Flagged as failed by the cluster (`fail`).
    Failed,
    /// A replica that has not replicated anything yet.
    Loading,
    /// Not reported (`CLUSTER SLOTS` says nothing about health) or a value
    /// this version does not know.
    Unknown,
}

/// One node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// The node id (40 hex digits). `CLUSTER SLOTS` of servers older than
    /// 4.0 sends none: then it is the address, `host:port`.
    pub id: String,
    /// Where clients reach it: its plain TCP port when it has one, else its
    /// TLS port.
    pub addr: NodeAddr,
    /// Master or replica.
    pub role: Role,
    /// Its health.
    pub health: Health,
    /// Its TLS port, when `CLUSTER SHARDS` reports one.
    pub tls_port: Option<u16>,
    /// Its replication offset, when `CLUSTER SHARDS` reports one.
    pub replication_offset: Option<i64>,
}

impl NodeInfo {
    /// The node's TLS address: its host with its TLS port.
    pub fn tls_addr(&self) -> Option<NodeAddr> {
        self.tls_port
            .map(|p| NodeAddr::new(self.addr.host.clone(), p))
    }

    /// Rank for picking a shard's master: health first, then offset.
    fn master_rank(&self) -> (u8, i64) {
        let health = match self.health {
            Health::Online => 3,
            Health::Unknown => 2,
            Health::Loading => 1,
            Health::Failed => 0,
        };
        (health, self.replication_offset.unwrap_or(-1))
    }
}

/// One shard: a set of slot ranges, the master serving them and its
/// replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    /// Inclusive slot ranges, sorted, adjacent ranges merged. Empty for a
    /// master that owns no slot (Redis 7.0 lists a failed old master so).
    pub slots: Vec<(u16, u16)>,
    /// The master: during a failover, of the nodes that call themselves
    /// master, the online one with the highest replication offset; when none
    /// is online, the best of the others (its `health` says so). `None` when
    /// no node of the shard claims to be master.
    pub master: Option<NodeInfo>,
    /// The replicas, in the order the server listed them, whatever their
    /// health.
    pub replicas: Vec<NodeInfo>,
    /// The other nodes that also called themselves master (a failover in
    /// progress). Not routed to; kept so that the node list is whole.
    pub other_masters: Vec<NodeInfo>,
}

impl Shard {
    /// Number of slots the shard serves.
    pub fn slot_count(&self) -> usize {
        self.slots
            .iter()
            .map(|&(start, end)| (usize::from(end) + 1).saturating_sub(usize::from(start)))
            .sum()
    }

    /// True when the shard has a master and it is not known to be unhealthy
    /// (online, or of unknown health as `CLUSTER SLOTS` reports).
    pub fn has_healthy_master(&self) -> bool {
        self.master
            .as_ref()
            .is_some_and(|m| matches!(m.health, Health::Online | Health::Unknown))
    }

    /// Every node of the shard: master, other master claimants, replicas.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeInfo> {
        self.master
            .iter()
            .chain(&self.other_masters)
            .chain(&self.replicas)
    }

    /// Picks the master among the claimants.
    fn elect(&mut self, mut claimants: Vec<NodeInfo>) {
        // Stable: among equals, the first listed wins.
        claimants.sort_by_key(|n| std::cmp::Reverse(n.master_rank()));
        let mut claimants = claimants.into_iter();
        self.master = claimants.next();
        self.other_masters = claimants.collect();
    }
}

/// The cluster's shards, as one node reported them. Parsing checks the
/// reply: slot ranges within 0..16384, no slot in two shards, and the
/// expected shapes, so a broken reply is an [`Error`], never a panic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topology {
    /// The shards, in the order the server listed them.
    pub shards: Vec<Shard>,
}

impl Topology {
    /// Parses a `CLUSTER SHARDS` reply (Redis 7+), RESP2 (flat arrays of
    /// field names and values) or RESP3 (maps). `source` is the node that
    /// sent it: a node whose endpoint is empty (the server's
    /// `unknown-endpoint` setting) is reached at `source.host`; an endpoint
    /// of `?` (a hostname was preferred but the node has none) falls back to
    /// the node's `ip`.
    pub fn from_cluster_shards(reply: Value, source: &NodeAddr) -> Result<Topology, Error> {
        let mut shards = Vec::new();
        for shard in items(reply.into_result()?, SHARDS)? {
            let (mut slots, mut nodes) = (None, None);
            for (key, value) in fields(shard, SHARDS)? {
                match key.as_bytes().map(|k| &k[..]) {
                    Some(b"slots") => slots = Some(shard_slots(value)?),
                    Some(b"nodes") => nodes = Some(items(value, SHARDS)?),
                    Some(_) => {}
                    None => return Err(malformed(SHARDS, &key, "a field name is not a string")),
                }
            }
            let (Some(slots), Some(nodes)) = (slots, nodes) else {
                return Err(missing(SHARDS, "a shard lacks `slots` or `nodes`"));
            };
            let mut shard = Shard {
                slots,
                master: None,
                replicas: Vec::new(),
                other_masters: Vec::new(),
            };
            let mut claimants = Vec::new();
            for node in nodes {
                let node = shard_node(node, source)?;
                match node.role {
                    Role::Master => claimants.push(node),
                    Role::Replica => shard.replicas.push(node),
                }
            }
            shard.elect(claimants);
            shards.push(shard);
        }
        Topology::checked(shards, SHARDS)
    }

    /// Parses a `CLUSTER SLOTS` reply: entries of `[start, end, master,
    /// replica...]`, each node `[host, port, id, metadata]`. A host that is
    /// empty or nil (the `unknown-endpoint` setting) means `source.host`; a
    /// host of `?` means the `ip` of the metadata, or `source.host` without
    /// one. A missing id (servers before 4.0) becomes `host:port`. Ranges
    /// of the same master are gathered into one shard. Health is
    /// [`Health::Unknown`]: this reply does not say.
    pub fn from_cluster_slots(reply: Value, source: &NodeAddr) -> Result<Topology, Error> {
        let mut shards: Vec<Shard> = Vec::new();
        let mut by_master: HashMap<String, usize> = HashMap::new();
        for entry in items(reply.into_result()?, SLOTS)? {
            let found = entry.type_name();
            let mut parts = items(entry, SLOTS)?.into_iter();
            let (Some(start), Some(end), Some(master)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(invalid(SLOTS, found, "an entry lacks its range or master"));
            };
            let range = slot_range(&start, &end, SLOTS)?;
            let master = slots_node(master, Role::Master, source)?;
            let index = *by_master.entry(master.id.clone()).or_insert_with(|| {
                shards.push(Shard {
                    slots: Vec::new(),
                    master: Some(master),
                    replicas: Vec::new(),
                    other_masters: Vec::new(),
                });
                shards.len() - 1
            });
            let shard = &mut shards[index];
            shard.slots.push(range);
            for replica in parts {
                let replica = slots_node(replica, Role::Replica, source)?;
                if !shard.replicas.iter().any(|r| r.id == replica.id) {
                    shard.replicas.push(replica);
                }
            }
        }
        Topology::checked(shards, SLOTS)
    }

    /// Checks that no slot is in two ranges, then sorts and merges each
    /// shard's ranges.
    fn checked(mut shards: Vec<Shard>, target: &'static str) -> Result<Topology, Error> {
        let mut claimed = vec![false; usize::from(SLOT_COUNT)];
        for shard in &mut shards {
            for &(start, end) in &shard.slots {
                for taken in &mut claimed[usize::from(start)..=usize::from(end)] {
                    if std::mem::replace(taken, true) {
                        return Err(missing(target, "a slot is claimed by two ranges"));
                    }
                }
            }
            shard.slots.sort_unstable();
            shard.slots.dedup_by(|next, prev| {
                let adjacent = next.0 == prev.1 + 1;
                if adjacent {
                    prev.1 = next.1;
                }
                adjacent
            });
        }
        Ok(Topology { shards })
    }

    /// Every node: each shard's master, other master claimants and replicas.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeInfo> {
        self.shards.iter().flat_map(Shard::nodes)
    }

    /// The master of each shard (slotless shards included).
    pub fn masters(&self) -> impl Iterator<Item = &NodeInfo> {
        self.shards.iter().filter_map(|s| s.master.as_ref())
    }

    /// Every replica of every shard.
    pub fn replicas(&self) -> impl Iterator<Item = &NodeInfo> {
        self.shards.iter().flat_map(|s| &s.replicas)
    }

    /// The node with this id.
    pub fn node(&self, id: &str) -> Option<&NodeInfo> {
        self.nodes().find(|n| n.id == id)
    }

    /// Number of slots some shard serves.
    pub fn coverage(&self) -> usize {
        self.shards.iter().map(Shard::slot_count).sum()
    }

    /// True when every one of the 16384 slots is served.
    pub fn is_complete(&self) -> bool {
        self.coverage() == usize::from(SLOT_COUNT)
    }
}

fn invalid(target: &'static str, found: &'static str, detail: &'static str) -> Error {
    ConversionError {
        found,
        target,
        detail: Some(detail),
    }
    .into()
}

fn malformed(target: &'static str, found: &Value, detail: &'static str) -> Error {
    invalid(target, found.type_name(), detail)
}

fn missing(target: &'static str, detail: &'static str) -> Error {
    invalid(target, "array", detail)
}

/// The elements of an array (or set).
fn items(value: Value, target: &'static str) -> Result<Vec<Value>, Error> {
    match value.without_attributes() {
        Value::Array(items) | Value::Set(items) => Ok(items),
        other => Err(malformed(target, &other, "expected an array")),
    }
}

/// Field/value pairs of a RESP3 map or of a RESP2 flat array.
fn fields(value: Value, target: &'static str) -> Result<Vec<(Value, Value)>, Error> {
    match value.without_attributes() {
        Value::Map(pairs) => Ok(pairs),
        Value::Array(flat) if flat.len() % 2 == 0 => {
            let mut pairs = Vec::with_capacity(flat.len() / 2);
            let mut flat = flat.into_iter();
            while let (Some(key), Some(value)) = (flat.next(), flat.next()) {
                pairs.push((key, value));
            }
            Ok(pairs)
        }
        other => Err(malformed(target, &other, "expected a map of fields")),
    }
}

fn text<'a>(value: &'a Value, target: &'static str, what: &'static str) -> Result<&'a str, Error> {
    value
        .as_bytes()
        .and_then(|b| std::str::from_utf8(b).ok())
        .ok_or_else(|| malformed(target, value, what))
}

fn integer(value: &Value, target: &'static str, what: &'static str) -> Result<i64, Error> {
    match value {
        Value::Integer(i) => Ok(*i),
        Value::Attributed { value, .. } => integer(value, target, what),
        other => text(other, target, what)?
            .parse()
            .map_err(|_| malformed(target, other, what)),
    }
}

fn port(value: &Value, target: &'static str) -> Result<u16, Error> {
    u16::try_from(integer(value, target, "a port is not an integer")?)
        .map_err(|_| malformed(target, value, "a port is out of range"))
}

fn slot_range(start: &Value, end: &Value, target: &'static str) -> Result<(u16, u16), Error> {
    let slot = |v: &Value| {
        let s = integer(v, target, "a slot is not an integer")?;
        u16::try_from(s)
            .ok()
            .filter(|&s| s < SLOT_COUNT)
            .ok_or_else(|| malformed(target, v, "a slot is outside 0..16384"))
    };
    let (start, end) = (slot(start)?, slot(end)?);
    if start > end {
        return Err(missing(target, "a slot range ends before it starts"));
    }
    Ok((start, end))
}

/// `slots` of a shard: a flat list of start, end, start, end...
fn shard_slots(value: Value) -> Result<Vec<(u16, u16)>, Error> {
    let bounds = items(value, SHARDS)?;
    if bounds.len() % 2 != 0 {
        return Err(missing(SHARDS, "`slots` has an odd number of bounds"));
    }
    bounds
        .chunks_exact(2)
        .map(|pair| slot_range(&pair[0], &pair[1], SHARDS))
        .collect()
}

/// An empty host means the node the reply came from.
fn host_or_source(host: &str, source: &NodeAddr) -> String {
    if host.is_empty() { &source.host } else { host }.to_owned()
}

/// One node of a `CLUSTER SHARDS` shard.
fn shard_node(value: Value, source: &NodeAddr) -> Result<NodeInfo, Error> {
    let found = value.type_name();
    let (mut id, mut tcp_port, mut tls_port, mut ip, mut endpoint) = (None, None, None, None, None);
    let (mut role, mut health, mut offset) = (None, Health::Unknown, None);
    for (key, value) in fields(value, SHARDS)? {
        match key.as_bytes().map(|k| &k[..]) {
            Some(b"id") => id = Some(text(&value, SHARDS, "a node id is not a string")?.to_owned()),
            Some(b"port") => tcp_port = Some(port(&value, SHARDS)?).filter(|&p| p != 0),
            Some(b"tls-port") => tls_port = Some(port(&value, SHARDS)?).filter(|&p| p != 0),
            Some(b"ip") => ip = Some(text(&value, SHARDS, "`ip` is not a string")?.to_owned()),
            Some(b"endpoint") if value.is_nil() => endpoint = Some(String::new()),
            Some(b"endpoint") => {
                endpoint = Some(text(&value, SHARDS, "`endpoint` is not a string")?.to_owned())
            }
            Some(b"role") => {
                role = Some(match text(&value, SHARDS, "`role` is not a string")? {
                    "master" | "primary" => Role::Master,
                    "replica" | "slave" => Role::Replica,
                    _ => return Err(malformed(SHARDS, &value, "unknown `role`")),
                })
            }
            Some(b"health") => {
                health = match text(&value, SHARDS, "`health` is not a string")? {
                    "online" => Health::Online,
                    "fail" | "failed" => Health::Failed,
                    "loading" => Health::Loading,
                    _ => Health::Unknown,
                }
            }
            Some(b"replication-offset") => {
                offset = Some(integer(
                    &value,
                    SHARDS,
                    "`replication-offset` is not an integer",
                )?)
            }
            Some(_) => {}
            None => return Err(malformed(SHARDS, &key, "a field name is not a string")),
        }
    }
    let (Some(id), Some(role)) = (id, role) else {
        return Err(invalid(SHARDS, found, "a node lacks `id` or `role`"));
    };
    let Some(port) = tcp_port.or(tls_port) else {
        return Err(invalid(SHARDS, found, "a node has no port"));
    };
    let ip = ip.unwrap_or_default();
    let host = match endpoint.as_deref() {
        // A hostname was preferred and the node has none: its IP will do.
        None | Some("?") => host_or_source(&ip, source),
        Some(endpoint) => host_or_source(endpoint, source),
    };
    Ok(NodeInfo {
        id,
        addr: NodeAddr::new(host, port),
        role,
        health,
        tls_port,
        replication_offset: offset,
    })
}

/// One node of a `CLUSTER SLOTS` entry: `[host, port, id?, metadata?]`.
fn slots_node(value: Value, role: Role, source: &NodeAddr) -> Result<NodeInfo, Error> {
    let found = value.type_name();
    let mut parts = items(value, SLOTS)?.into_iter();
    let (Some(host), Some(port_value)) = (parts.next(), parts.next()) else {
        return Err(invalid(SLOTS, found, "a node lacks its host or port"));
    };
    let host = match host.without_attributes() {
        Value::Nil => String::new(),
        host => text(&host, SLOTS, "a host is not a string")?.to_owned(),
    };
    let port = port(&port_value, SLOTS)?;
    if port == 0 {
        return Err(malformed(SLOTS, &port_value, "a port is 0"));
    }
    let id = match parts.next().map(Value::without_attributes) {
        None | Some(Value::Nil) => None,
        Some(id) => Some(text(&id, SLOTS, "a node id is not a string")?.to_owned()),
    };
    let mut metadata_ip = None;
    if let Some(metadata) = parts.next() {
        for (key, value) in fields(metadata, SLOTS)? {
            if key.as_bytes().is_some_and(|k| &k[..] == b"ip") {
                metadata_ip = Some(text(&value, SLOTS, "`ip` is not a string")?.to_owned());
            }
        }
    }
    let host = match host.as_str() {
        "?" => host_or_source(metadata_ip.as_deref().unwrap_or_default(), source),
        host => host_or_source(host, source),
    };
    let addr = NodeAddr::new(host, port);
    Ok(NodeInfo {
        id: id
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| addr.to_string()),
        addr,
        role,
        health: Health::Unknown,
        tls_port: None,
        replication_offset: None,
    })
}
