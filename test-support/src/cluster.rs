//! A real Redis Cluster: N masters with R replicas each (default 3 + 3),
//! created with `redis-cli --cluster create`. Slot migration and failover
//! helpers are in [`change`]; [`key_in_slot`] finds keys for a slot.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::{RedisServer, RedisServerBuilder, Reply, redis_cli_bin};

mod change;

pub use change::Deadline;

/// Number of hash slots.
pub const SLOTS: u16 = 16384;
/// How long a fresh cluster may take to become healthy.
pub const CLUSTER_TIMEOUT: Duration = Duration::from_secs(30);

/// Hash slot of a key: CRC16/XMODEM of the key (or of its first non-empty
/// `{hash tag}`) mod 16384. The harness's own copy, to cross-check against
/// `CLUSTER KEYSLOT` and the library.
pub fn key_slot(key: &[u8]) -> u16 {
    crc16(0, hash_tag(key).unwrap_or(key)) % SLOTS
}

/// The content of the first `{...}` of `key`, unless it is empty.
fn hash_tag(key: &[u8]) -> Option<&[u8]> {
    let open = key.iter().position(|&b| b == b'{')?;
    let len = key[open + 1..].iter().position(|&b| b == b'}')?;
    (len > 0).then(|| &key[open + 1..open + 1 + len])
}

/// CRC16/XMODEM of `bytes`, continuing from `crc`.
fn crc16(mut crc: u16, bytes: &[u8]) -> u16 {
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// A key whose hash slot is `slot`: `prefix` followed by the first decimal
/// counter that lands there. Panics when `prefix` holds a `{hash tag}` of
/// another slot.
pub fn key_in_slot(slot: u16, prefix: &str) -> String {
    keys_in_slot(slot, 1, prefix).remove(0)
}

/// `n` distinct keys whose hash slot is `slot`, each `prefix` followed by a
/// decimal counter, in increasing counter order (deterministic). With a
/// `{hash tag}` of `slot` in `prefix` they are `prefix0`, `prefix1`, ...
pub fn keys_in_slot(slot: u16, n: usize, prefix: &str) -> Vec<String> {
    assert!(slot < SLOTS, "slot {slot} out of range");
    // Digits never open or close a hash tag: the prefix decides whether
    // there is one.
    if let Some(tag) = hash_tag(prefix.as_bytes()) {
        let tagged = crc16(0, tag) % SLOTS;
        assert!(
            tagged == slot,
            "no key with prefix {prefix:?} is in slot {slot}: its hash tag puts them all in slot {tagged}"
        );
        return (0..n).map(|i| format!("{prefix}{i}")).collect();
    }
    // Hash the prefix once, then only each counter's digits.
    let base = crc16(0, prefix.as_bytes());
    let mut keys = Vec::with_capacity(n);
    let mut digits = Vec::with_capacity(20);
    for i in 0u64.. {
        if keys.len() == n {
            break;
        }
        digits.clear();
        let mut rest = i;
        loop {
            digits.push(b'0' + (rest % 10) as u8);
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        digits.reverse();
        if crc16(base, &digits) % SLOTS == slot {
            keys.push(format!("{prefix}{i}"));
        }
    }
    keys
}

/// One line of `CLUSTER NODES`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterNodeInfo {
    /// Node id (40 hex chars).
    pub id: String,
    /// Client address; `None` for `noaddr` nodes.
    pub addr: Option<SocketAddr>,
    /// Flags: `myself`, `master`, `slave`, `fail?`, `fail`, `handshake`, ...
    pub flags: Vec<String>,
    /// The master's id, for replicas.
    pub master_id: Option<String>,
    /// Whether the cluster bus link is `connected`.
    pub link_connected: bool,
    /// Served slot ranges, inclusive (migration markers are skipped).
    pub slots: Vec<(u16, u16)>,
}

impl ClusterNodeInfo {
    fn has(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    /// Flagged `master`.
    pub fn is_master(&self) -> bool {
        self.has("master")
    }

    /// Flagged `slave`.
    pub fn is_replica(&self) -> bool {
        self.has("slave")
    }

    /// The line describing the node that was asked.
    pub fn is_myself(&self) -> bool {
        self.has("myself")
    }

    /// Flagged `fail`, `fail?`, `handshake` or `noaddr`.
    pub fn is_unhealthy(&self) -> bool {
        ["fail", "fail?", "handshake", "noaddr"]
            .iter()
            .any(|f| self.has(f))
    }

    /// Number of slots served.
    pub fn slot_count(&self) -> u32 {
        self.slots.iter().map(|&(a, b)| u32::from(b - a) + 1).sum()
    }

    /// Whether `slot` is in one of the served ranges.
    pub fn serves(&self, slot: u16) -> bool {
        self.slots.iter().any(|&(a, b)| (a..=b).contains(&slot))
    }

    /// Parses `CLUSTER NODES` output.
    pub fn parse_all(text: &str) -> Vec<ClusterNodeInfo> {
        text.lines().filter_map(ClusterNodeInfo::parse).collect()
    }

    fn parse(line: &str) -> Option<ClusterNodeInfo> {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            return None;
        }
        // "ip:port@cport[,hostname]"
        let addr = f[1].split(['@', ',']).next().and_then(|a| a.parse().ok());
        let slots = f[8..]
            .iter()
            .filter(|s| !s.starts_with('['))
            .filter_map(|s| match s.split_once('-') {
                Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                None => s.parse().ok().map(|a| (a, a)),
            })
            .collect();
        Some(ClusterNodeInfo {
            id: f[0].to_owned(),
            addr,
            flags: f[2].split(',').map(str::to_owned).collect(),
            master_id: (f[3] != "-").then(|| f[3].to_owned()),
            link_connected: f[7] == "connected",
            slots,
        })
    }
}

/// Builder for [`RedisCluster`].
#[derive(Clone, Debug)]
pub struct RedisClusterBuilder {
    masters: usize,
    replicas_per_master: usize,
    node_timeout_ms: u64,
    node: RedisServerBuilder,
}

impl Default for RedisClusterBuilder {
    fn default() -> Self {
        RedisClusterBuilder {
            masters: 3,
            replicas_per_master: 1,
            node_timeout_ms: 3000,
            node: RedisServerBuilder::default(),
        }
    }
}

impl RedisClusterBuilder {
    /// Number of masters (>= 3, as `redis-cli --cluster create` requires).
    pub fn masters(mut self, n: usize) -> Self {
        self.masters = n;
        self
    }

    /// Replicas per master.
    pub fn replicas_per_master(mut self, n: usize) -> Self {
        self.replicas_per_master = n;
        self
    }

    /// `cluster-node-timeout` in ms (default 3000): failure detection time.
    pub fn node_timeout_ms(mut self, ms: u64) -> Self {
        self.node_timeout_ms = ms;
        self
    }

    /// `requirepass` + `masterauth` on every node.
    pub fn password(mut self, password: &str) -> Self {
        self.node = self.node.password(password);
        self
    }

    /// A raw config line for every node.
    pub fn config(mut self, line: &str) -> Self {
        self.node = self.node.config(line);
        self
    }

    /// Starts the nodes, creates the cluster and waits until it is healthy
    /// (see [`RedisCluster::health`]).
    pub fn start(self) -> RedisCluster {
        let total = self.masters * (1 + self.replicas_per_master);
        let mut node = self.node.clone();
        node.cluster_node_timeout_ms = Some(self.node_timeout_ms);
        // Start the nodes in parallel; the spawner thread owns the processes.
        let nodes: Vec<RedisServer> = thread::scope(|s| {
            let handles: Vec<_> = (0..total)
                .map(|_| {
                    let node = node.clone();
                    s.spawn(move || node.start())
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        });
        let cluster = RedisCluster {
            nodes,
            masters: self.masters,
            replicas_per_master: self.replicas_per_master,
        };
        let mut cmd = Command::new(redis_cli_bin());
        cmd.arg("--cluster").arg("create");
        cmd.args(cluster.nodes().iter().map(|a| a.to_string()));
        cmd.args(["--cluster-replicas", &self.replicas_per_master.to_string()]);
        cmd.arg("--cluster-yes");
        if let Some(pass) = cluster.password() {
            cmd.args(["-a", pass, "--no-auth-warning"]);
        }
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        if !out.status.success() {
            panic!(
                "redis-cli --cluster create failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        cluster.wait_healthy();
        cluster
    }
}

/// A running cluster; every node is killed on drop.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    masters: usize,
    replicas_per_master: usize,
}

impl RedisCluster {
    /// 3 masters + 3 replicas, healthy.
    pub fn start() -> RedisCluster {
        RedisCluster::builder().start()
    }

    /// A builder for other shapes, passwords or node timeouts.
    pub fn builder() -> RedisClusterBuilder {
        RedisClusterBuilder::default()
    }

    /// Number of nodes (a cluster always has some: no `is_empty`).
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Node `i` (in creation order; roles may change after failovers).
    pub fn node(&self, i: usize) -> &RedisServer {
        &self.nodes[i]
    }

    /// Node `i`, mutably (kill, restart, pause).
    pub fn node_mut(&mut self, i: usize) -> &mut RedisServer {
        &mut self.nodes[i]
    }

    /// Index of the node listening on `addr`.
    pub fn node_index(&self, addr: SocketAddr) -> Option<usize> {
        self.nodes.iter().position(|n| n.addr() == addr)
    }

    /// The cluster password, if any.
    pub fn password(&self) -> Option<&str> {
        self.nodes[0].password()
    }

    /// Addresses of all nodes.
    pub fn nodes(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(RedisServer::addr).collect()
    }

    /// Seed addresses for a client: all nodes.
    pub fn seed_addrs(&self) -> Vec<SocketAddr> {
        self.nodes()
    }

    /// Indices of running nodes that currently call themselves master.
    pub fn master_indices(&self) -> Vec<usize> {
        self.indices_where(ClusterNodeInfo::is_master)
    }

    /// Indices of running nodes that currently call themselves replica.
    pub fn replica_indices(&self) -> Vec<usize> {
        self.indices_where(ClusterNodeInfo::is_replica)
    }

    /// Addresses of the current masters.
    pub fn masters(&self) -> Vec<SocketAddr> {
        self.master_indices()
            .into_iter()
            .map(|i| self.nodes[i].addr())
            .collect()
    }

    /// Addresses of the current replicas.
    pub fn replicas(&self) -> Vec<SocketAddr> {
        self.replica_indices()
            .into_iter()
            .map(|i| self.nodes[i].addr())
            .collect()
    }

    fn indices_where(&self, pred: fn(&ClusterNodeInfo) -> bool) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| {
                self.try_cluster_nodes(i)
                    .ok()
                    .and_then(|all| all.into_iter().find(ClusterNodeInfo::is_myself))
                    .is_some_and(|me| pred(&me))
            })
            .collect()
    }

    /// Node `i`'s view of the cluster (`CLUSTER NODES`).
    pub fn cluster_nodes(&self, i: usize) -> Vec<ClusterNodeInfo> {
        self.try_cluster_nodes(i).unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_cluster_nodes(&self, i: usize) -> Result<Vec<ClusterNodeInfo>, String> {
        Ok(ClusterNodeInfo::parse_all(
            &self.try_cmd(i, &["CLUSTER", "NODES"])?,
        ))
    }

    fn try_cmd(&self, i: usize, args: &[&str]) -> Result<String, String> {
        let node = &self.nodes[i];
        let reply = node
            .admin_conn()
            .and_then(|mut c| c.call(args))
            .map_err(|e| format!("node {i} ({}) {args:?}: {e}", node.addr()))?;
        match reply {
            Reply::Error(e) => Err(format!("node {i} ({}) {args:?}: {e}", node.addr())),
            r => Ok(r.text()),
        }
    }

    /// Index of the node serving `slot`, as seen by the first node that answers.
    pub fn slot_owner_index(&self, slot: u16) -> usize {
        let view = (0..self.nodes.len())
            .find_map(|i| self.try_cluster_nodes(i).ok())
            .expect("no cluster node answers");
        let owner = view
            .iter()
            .find(|n| n.is_master() && n.serves(slot))
            .unwrap_or_else(|| panic!("slot {slot} has no owner"));
        owner
            .addr
            .and_then(|a| self.node_index(a))
            .unwrap_or_else(|| panic!("owner of slot {slot} is not ours: {owner:?}"))
    }

    /// Address of the node serving `slot`.
    pub fn slot_owner(&self, slot: u16) -> SocketAddr {
        self.nodes[self.slot_owner_index(slot)].addr()
    }

    /// The node serving `key`.
    pub fn node_for_key(&self, key: &str) -> &RedisServer {
        &self.nodes[self.slot_owner_index(key_slot(key.as_bytes()))]
    }

    /// Kills node `i` (SIGKILL); its directory and `nodes.conf` stay.
    pub fn kill_node(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Restarts node `i` on the same port with the same node id.
    pub fn restart_node(&mut self, i: usize) {
        self.nodes[i].restart();
    }

    /// `Ok` when every node runs and agrees the cluster is whole: every node
    /// reports `cluster_state:ok` with all 16384 slots assigned and ok, lists
    /// all nodes in `CLUSTER NODES` with none flagged `fail`/`fail?`/
    /// `handshake`/`noaddr` and every bus link connected, sees the configured
    /// number of masters (serving slots) and replicas, and every replica reports
    /// `master_link_status:up`. Otherwise the first problem found.
    pub fn health(&self) -> Result<(), String> {
        let total = self.nodes.len();
        for i in 0..total {
            let info = self.try_cmd(i, &["CLUSTER", "INFO"])?;
            for want in [
                "cluster_state:ok".to_owned(),
                format!("cluster_slots_assigned:{SLOTS}"),
                format!("cluster_slots_ok:{SLOTS}"),
                format!("cluster_known_nodes:{total}"),
            ] {
                if !info.lines().any(|l| l.trim() == want) {
                    return Err(format!("node {i}: CLUSTER INFO lacks {want}"));
                }
            }
            let view = self.try_cluster_nodes(i)?;
            if view.len() != total {
                return Err(format!("node {i} lists {} nodes, want {total}", view.len()));
            }
            if let Some(bad) = view.iter().find(|n| n.is_unhealthy() || !n.link_connected) {
                return Err(format!("node {i} sees an unhealthy node: {bad:?}"));
            }
            let masters = view
                .iter()
                .filter(|n| n.is_master() && n.slot_count() > 0)
                .count();
            let replicas = view.iter().filter(|n| n.is_replica()).count();
            if masters != self.masters || replicas != self.masters * self.replicas_per_master {
                return Err(format!(
                    "node {i} sees {masters} masters with slots and {replicas} replicas"
                ));
            }
            if view.iter().any(|n| n.is_myself() && n.is_replica()) {
                let repl = self.try_cmd(i, &["INFO", "replication"])?;
                if !repl.lines().any(|l| l.trim() == "master_link_status:up") {
                    return Err(format!("replica node {i}: master link not up"));
                }
            }
        }
        Ok(())
    }

    /// Writes one key (`warmup:<n>`) to every shard, then waits until every
    /// node lists every node `online`, with a replication offset above 0,
    /// in `CLUSTER SHARDS`. Redis 7.0 calls a replica whose replication
    /// offset is still 0 `loading` there and leaves it out of
    /// `CLUSTER SLOTS`, and a node learns the others' offsets by gossip, a
    /// little later than their health; topology tests that expect the
    /// replicas and their offsets call this first.
    pub fn warm_up(&self) {
        for master in self.master_indices() {
            let view = self.cluster_nodes(master);
            let me = view
                .iter()
                .find(|n| n.is_myself())
                .unwrap_or_else(|| panic!("node {master}: no `myself` in {view:?}"));
            let key = key_in_slot(me.slots[0].0, "warmup:");
            let reply = self.nodes[master].call(&["SET", &key, "x"]);
            assert_eq!(
                reply,
                Reply::Status("OK".into()),
                "SET {key} on node {master}"
            );
        }
        let deadline = Instant::now() + CLUSTER_TIMEOUT;
        loop {
            let lagging = (0..self.nodes.len()).find(|&i| {
                self.try_cmd(i, &["CLUSTER", "SHARDS"])
                    .map_or(true, |shards| {
                        shards.matches("online").count() != self.nodes.len()
                            || has_zero_offset(&shards)
                    })
            });
            let Some(i) = lagging else { return };
            if Instant::now() >= deadline {
                panic!(
                    "node {i} does not see every node online after {CLUSTER_TIMEOUT:?}:\n{}\n--- node {i} redis.log (tail) ---\n{}",
                    self.nodes[i].call(&["CLUSTER", "SHARDS"]),
                    self.nodes[i].log_tail(25)
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (up to 30 s) until [`health`](Self::health) is `Ok`; panics with
    /// the last problem otherwise.
    pub fn wait_healthy(&self) {
        let deadline = Instant::now() + CLUSTER_TIMEOUT;
        loop {
            let problem = match self.health() {
                Ok(()) => return,
                Err(problem) => problem,
            };
            if Instant::now() >= deadline {
                panic!("cluster not healthy after {CLUSTER_TIMEOUT:?}: {problem}");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// True when flattened `CLUSTER SHARDS` text reports a replication offset
/// of 0 for some node.
fn has_zero_offset(shards: &str) -> bool {
    let lines: Vec<&str> = shards.lines().collect();
    lines
        .windows(2)
        .any(|w| w[0] == "replication-offset" && w[1] == "0")
}
