//! How many GETs each node of a cluster served: `INFO commandstats` on
//! every node the topology lists, read before and after a run.

use std::collections::BTreeMap;

use glommio::{LocalExecutorBuilder, Placement};
use redcore::cluster::{Cluster, Role};
use redcore::{ClusterConfig, Connection};
use serde::Serialize;

/// One node's count.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NodeGets {
    /// `host:port`.
    pub addr: String,
    /// `master` or `replica`, as the topology said when counted.
    pub role: &'static str,
    /// `cmdstat_get` calls.
    pub gets: u64,
}

/// The `calls=` of `cmdstat_get` in an `INFO commandstats` text.
fn get_calls(info: &str) -> u64 {
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_get:"))
        .and_then(|line| {
            line.split(',')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == "calls")
                .and_then(|(_, v)| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Every node's GET count now, asked from a thread of its own.
pub fn count(config: &ClusterConfig) -> Result<Vec<NodeGets>, String> {
    let config = config.clone();
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(64 << 10)
        .spawn(move || async move {
            let cluster = Cluster::connect(config.clone())
                .await
                .map_err(|e| format!("counting GETs per node: {e}"))?;
            let mut out = Vec::new();
            for node in cluster.info().nodes {
                let node_config = config
                    .node
                    .clone()
                    .into_builder()
                    .host(node.addr.host.clone())
                    .port(node.addr.port)
                    .build()
                    .map_err(|e| format!("counting GETs on {}: {e}", node.addr))?;
                let conn = Connection::connect(node_config)
                    .await
                    .map_err(|e| format!("counting GETs on {}: {e}", node.addr))?;
                let info: String = redcore::Commands::command(&conn, ["INFO", "commandstats"])
                    .await
                    .map_err(|e| format!("INFO commandstats on {}: {e}", node.addr))?;
                conn.close();
                out.push(NodeGets {
                    addr: node.addr.to_string(),
                    role: match node.role {
                        Role::Master => "master",
                        _ => "replica",
                    },
                    gets: get_calls(&info),
                });
            }
            cluster.close();
            out.sort_by(|a, b| a.addr.cmp(&b.addr));
            Ok(out)
        })
        .map_err(|e| format!("starting an executor to count GETs: {e}"))?
        .join()
        .map_err(|e| format!("counting GETs per node: {e}"))?
}

/// The GETs each node of `after` served since `before` (roles as in
/// `after`; a node new since `before` counts from zero).
pub fn since(before: &[NodeGets], after: &[NodeGets]) -> Vec<NodeGets> {
    let old: BTreeMap<&str, u64> = before.iter().map(|n| (n.addr.as_str(), n.gets)).collect();
    after
        .iter()
        .map(|n| NodeGets {
            gets: n
                .gets
                .saturating_sub(old.get(n.addr.as_str()).copied().unwrap_or(0)),
            ..n.clone()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_commandstats() {
        let info = "# Commandstats\r\ncmdstat_set:calls=5,usec=1\r\ncmdstat_get:calls=42,usec=9,usec_per_call=0.2\r\n";
        assert_eq!(get_calls(info), 42);
        assert_eq!(get_calls("# Commandstats\r\n"), 0);
        let n = |addr: &str, gets| NodeGets {
            addr: addr.into(),
            role: "replica",
            gets,
        };
        assert_eq!(
            since(&[n("a:1", 10)], &[n("a:1", 25), n("b:2", 3)]),
            [n("a:1", 15), n("b:2", 3)]
        );
    }
}
