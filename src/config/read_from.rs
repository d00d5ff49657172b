//! Where a cluster client sends commands that only read: [`ReadFrom`],
//! and the options the replica strategies use ([`ReplicaOptions`]).

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use super::invalid;
use crate::Error;
use crate::cluster::NodeAddr;

/// Which node serves a command that only reads
/// ([`is_read_only`](crate::cmd::is_read_only)). Writes, and every
/// command not known to only read, always go to the slot's master.
///
/// Replicas copy their master asynchronously: a read served by a replica
/// may miss a write its master acknowledged moments ago (use `WAIT` when a
/// read must see it).
///
/// Parsed from text (`"primary"`, `"replica"` or `"prefer-replica"`,
/// `"round-robin"`, `"az"`, `"latency"`):
///
/// ```
/// use redcore::config::ReadFrom;
///
/// assert_eq!("replica".parse::<ReadFrom>()?, ReadFrom::PreferReplica);
/// assert_eq!(ReadFrom::LowestLatency.to_string(), "latency");
/// # Ok::<(), redcore::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReadFrom {
    /// Every command goes to the slot's master (the default).
    #[default]
    Primary,
    /// A replica of the slot's master chosen at random among those not
    /// recently failed; the master when there is none.
    PreferReplica,
    /// The slot's replicas in turn (one counter per client and core, over
    /// the replicas only, the master never among them); the master when
    /// every replica failed recently or there is none.
    RoundRobin,
    /// A replica in the client's zone
    /// ([`ReplicaOptions::client_zone`]) at random, else another replica
    /// at random, else the master. A configuration with this strategy
    /// needs a client zone; a handle switched to it
    /// ([`with_read_from`](crate::cluster::Cluster::with_read_from)) on a
    /// client without one reads from any replica.
    AzAffinity,
    /// The node with the lowest measured round trip among the slot's
    /// master and its replicas: each core's client sends `PING` to every
    /// node every [`ReplicaOptions::latency_probe_interval`] and keeps a
    /// moving average; nodes within 10% (or 50 µs) of the lowest are tied
    /// and one of them is picked at random. Until a node was measured, reads go to a
    /// random replica as with [`PreferReplica`](Self::PreferReplica).
    LowestLatency,
}

impl ReadFrom {
    /// True for every strategy but [`Primary`](Self::Primary).
    pub fn uses_replicas(self) -> bool {
        self != ReadFrom::Primary
    }
}

impl fmt::Display for ReadFrom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            ReadFrom::Primary => "primary",
            ReadFrom::PreferReplica => "replica",
            ReadFrom::RoundRobin => "round-robin",
            ReadFrom::AzAffinity => "az",
            ReadFrom::LowestLatency => "latency",
        })
    }
}

impl FromStr for ReadFrom {
    type Err = Error;

    /// `primary`, `replica` (or `prefer-replica`), `round-robin`, `az`,
    /// `latency`; any case. Anything else is [`Error::InvalidConfig`].
    fn from_str(s: &str) -> Result<ReadFrom, Error> {
        match s.to_ascii_lowercase().as_str() {
            "primary" | "master" => Ok(ReadFrom::Primary),
            "replica" | "prefer-replica" => Ok(ReadFrom::PreferReplica),
            "round-robin" => Ok(ReadFrom::RoundRobin),
            "az" | "az-affinity" => Ok(ReadFrom::AzAffinity),
            "latency" | "lowest-latency" => Ok(ReadFrom::LowestLatency),
            _ => Err(invalid(
                "read_from",
                format!("unknown strategy {s:?}; use primary, replica, round-robin, az or latency"),
            )),
        }
    }
}

/// A function naming the zone of a node (`None`: unknown).
pub type ZoneFn = Arc<dyn Fn(&NodeAddr) -> Option<String> + Send + Sync>;

/// Where the zone of each node comes from, for [`ReadFrom::AzAffinity`].
#[derive(Clone, Default)]
pub enum NodeZones {
    /// No node's zone is known: every replica counts as in another zone.
    #[default]
    Unknown,
    /// A zone per node address; nodes not listed have none.
    Table(HashMap<NodeAddr, String>),
    /// A function asked for each candidate node on every read it routes
    /// (keep it cheap).
    Function(ZoneFn),
}

impl NodeZones {
    /// The zone of `addr`, if known.
    pub fn zone_of(&self, addr: &NodeAddr) -> Option<String> {
        match self {
            NodeZones::Unknown => None,
            NodeZones::Table(t) => t.get(addr).cloned(),
            NodeZones::Function(f) => f(addr),
        }
    }

    /// True when `addr` is known to be in `zone`.
    pub fn is_in(&self, addr: &NodeAddr, zone: &str) -> bool {
        match self {
            NodeZones::Unknown => false,
            NodeZones::Table(t) => t.get(addr).is_some_and(|z| z == zone),
            NodeZones::Function(f) => f(addr).is_some_and(|z| z == zone),
        }
    }
}

impl fmt::Debug for NodeZones {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeZones::Unknown => f.write_str("Unknown"),
            NodeZones::Table(t) => f.debug_tuple("Table").field(t).finish(),
            NodeZones::Function(_) => f.write_str("Function(<fn>)"),
        }
    }
}

/// What the replica strategies need besides the strategy itself.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ReplicaOptions {
    /// The client's availability zone, for [`ReadFrom::AzAffinity`].
    pub client_zone: Option<String>,
    /// The zone of each node.
    pub node_zones: NodeZones,
    /// How often each core's client measures the round trip to every node
    /// once a read used [`ReadFrom::LowestLatency`] (default 100 ms).
    pub latency_probe_interval: Duration,
}

impl Default for ReplicaOptions {
    fn default() -> Self {
        ReplicaOptions {
            client_zone: None,
            node_zones: NodeZones::Unknown,
            latency_probe_interval: Duration::from_millis(100),
        }
    }
}

impl ReplicaOptions {
    /// Checks the options with the strategy `read_from`.
    pub(crate) fn validate(&self, read_from: ReadFrom) -> Result<(), Error> {
        if read_from == ReadFrom::AzAffinity && self.client_zone.is_none() {
            return Err(invalid(
                "read_from",
                "az affinity needs the client's zone (client_zone)",
            ));
        }
        if self.client_zone.as_deref().is_some_and(str::is_empty) {
            return Err(invalid("client_zone", "is empty"));
        }
        if self.latency_probe_interval < Duration::from_millis(1) {
            return Err(invalid("latency_probe_interval", "must be at least 1 ms"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for r in [
            ReadFrom::Primary,
            ReadFrom::PreferReplica,
            ReadFrom::RoundRobin,
            ReadFrom::AzAffinity,
            ReadFrom::LowestLatency,
        ] {
            assert_eq!(r.to_string().parse::<ReadFrom>().unwrap(), r);
        }
        assert_eq!(
            "Prefer-Replica".parse::<ReadFrom>().unwrap(),
            ReadFrom::PreferReplica
        );
        let e = "nearest".parse::<ReadFrom>().unwrap_err();
        assert!(matches!(
            e,
            Error::InvalidConfig {
                option: "read_from",
                ..
            }
        ));
    }

    #[test]
    fn zones_from_table_and_function() {
        let a = NodeAddr::new("10.0.0.1", 7000);
        let b = NodeAddr::new("10.0.0.2", 7000);
        let table = NodeZones::Table([(a.clone(), "eu-1a".to_owned())].into());
        assert!(table.is_in(&a, "eu-1a"));
        assert!(!table.is_in(&b, "eu-1a"));
        let f = NodeZones::Function(Arc::new(|n: &NodeAddr| {
            n.host.ends_with(".2").then(|| "eu-1b".to_owned())
        }));
        assert_eq!(f.zone_of(&b).as_deref(), Some("eu-1b"));
        assert_eq!(f.zone_of(&a), None);
        assert!(!NodeZones::Unknown.is_in(&a, "eu-1a"));
    }

    #[test]
    fn az_needs_a_zone() {
        let o = ReplicaOptions::default();
        assert!(o.validate(ReadFrom::AzAffinity).is_err());
        assert!(o.validate(ReadFrom::LowestLatency).is_ok());
    }
}
