//! Changing a running cluster for real: slot migration (`CLUSTER SETSLOT`
//! and `MIGRATE`) and manual failover, in the order the Redis cluster
//! specification gives, each blocking until every node agrees.

use std::thread;
use std::time::{Duration, Instant};

use super::{CLUSTER_TIMEOUT, RedisCluster, key_slot};
use crate::{HOST, Reply};

/// When a wait gives up: an [`Instant`], or a [`Duration`] from now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadline(pub Instant);

impl From<Instant> for Deadline {
    fn from(at: Instant) -> Self {
        Deadline(at)
    }
}

impl From<Duration> for Deadline {
    fn from(timeout: Duration) -> Self {
        Deadline(Instant::now() + timeout)
    }
}

/// How often the slot migration and failover helpers poll the nodes.
const POLL: Duration = Duration::from_millis(20);
/// Batch size of `CLUSTER GETKEYSINSLOT` in [`RedisCluster::move_slot`].
const MIGRATE_BATCH: usize = 100;
/// Lines of each node's log shown when a helper fails.
const LOG_LINES: usize = 25;

/// Slot migration and failover, done for real on the nodes, in the order
/// the Redis cluster specification gives. Every helper blocks until the
/// change is visible everywhere it says, and panics (with the logs of the
/// nodes involved) when it is not within [`CLUSTER_TIMEOUT`].
impl RedisCluster {
    /// Whether node `i`'s process runs (it was not killed, or was restarted).
    fn is_up(&self, i: usize) -> bool {
        self.nodes[i].child.is_some()
    }

    /// Indices of the nodes whose process runs.
    fn running(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|&i| self.is_up(i)).collect()
    }

    /// Panics with `msg` followed by the log tails of `nodes`.
    fn fail(&self, nodes: &[usize], msg: &str) -> ! {
        let mut text = msg.to_owned();
        for &i in nodes {
            text.push_str(&format!(
                "\n--- node {i} ({}) redis.log (tail) ---\n{}",
                self.nodes[i].addr(),
                self.nodes[i].log_tail(LOG_LINES)
            ));
        }
        panic!("{text}")
    }

    /// One command on node `i` as the admin user; error replies are `Err`.
    fn try_call<A: AsRef<[u8]>>(&self, i: usize, args: &[A]) -> Result<Reply, String> {
        let node = &self.nodes[i];
        let shown = || {
            args.iter()
                .map(|a| String::from_utf8_lossy(a.as_ref()).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        };
        match node.admin_conn().and_then(|mut c| c.call(args)) {
            Ok(Reply::Error(e)) => Err(format!("node {i} ({}) `{}`: {e}", node.addr(), shown())),
            Ok(reply) => Ok(reply),
            Err(e) => Err(format!("node {i} ({}) `{}`: {e}", node.addr(), shown())),
        }
    }

    /// Runs a command on node `i` that must answer `+OK`.
    fn expect_ok(&self, i: usize, args: &[&str]) {
        match self.try_call(i, args) {
            Ok(Reply::Status(s)) if s == "OK" => {}
            Ok(other) => self.fail(&[i], &format!("node {i} {args:?}: {other:?}, want OK")),
            Err(e) => self.fail(&[i], &e),
        }
    }

    /// Polls `check` every few milliseconds until it gives `Ok`; at the
    /// deadline panics with its last problem and the logs of `nodes`.
    fn poll<T>(
        &self,
        what: &str,
        deadline: Deadline,
        nodes: &[usize],
        mut check: impl FnMut() -> Result<T, String>,
    ) -> T {
        let started = Instant::now();
        loop {
            let problem = match check() {
                Ok(done) => return done,
                Err(problem) => problem,
            };
            if Instant::now() >= deadline.0 {
                self.fail(
                    nodes,
                    &format!(
                        "timed out after {:?} waiting for {what}; last problem: {problem}",
                        started.elapsed()
                    ),
                );
            }
            thread::sleep(POLL);
        }
    }

    /// Index of the master serving `slot` in node `viewer`'s `CLUSTER NODES`.
    fn owner_in_view(&self, viewer: usize, slot: u16) -> Result<usize, String> {
        let view = self.try_cluster_nodes(viewer)?;
        let owner = view
            .iter()
            .find(|n| n.is_master() && n.serves(slot))
            .ok_or_else(|| format!("node {viewer} sees no owner of slot {slot}"))?;
        owner
            .addr
            .and_then(|a| self.node_index(a))
            .ok_or_else(|| format!("node {viewer}: owner of slot {slot} is not ours: {owner:?}"))
    }

    /// Node `i`'s cluster node id (`CLUSTER MYID`, 40 hex characters).
    pub fn node_id(&self, i: usize) -> String {
        match self.try_call(i, &["CLUSTER", "MYID"]) {
            Ok(Reply::Bulk(id)) => String::from_utf8_lossy(&id).into_owned(),
            Ok(other) => self.fail(&[i], &format!("node {i} CLUSTER MYID: {other:?}")),
            Err(e) => self.fail(&[i], &e),
        }
    }

    /// Starts moving `slot` from master `from` to master `to`:
    /// `CLUSTER SETSLOT slot IMPORTING <from-id>` on `to`, then
    /// `CLUSTER SETSLOT slot MIGRATING <to-id>` on `from`. From now on
    /// `from` answers `-ASK` for keys of the slot it no longer has and `to`
    /// serves them after `ASKING`.
    pub fn begin_migration(&self, slot: u16, from: usize, to: usize) {
        assert_ne!(
            from, to,
            "begin_migration: source and target are both node {from}"
        );
        let (from_id, to_id) = (self.node_id(from), self.node_id(to));
        let s = slot.to_string();
        self.expect_ok(to, &["CLUSTER", "SETSLOT", &s, "IMPORTING", &from_id]);
        self.expect_ok(from, &["CLUSTER", "SETSLOT", &s, "MIGRATING", &to_id]);
    }

    /// Moves `keys` (all of `slot`) from node `from` to node `to` with one
    /// `MIGRATE 127.0.0.1 <port> "" 0 5000 [AUTH <password>] KEYS ...`.
    /// Keys that do not exist on `from` are skipped (by Redis).
    pub fn migrate_keys(&self, slot: u16, from: usize, to: usize, keys: &[String]) {
        for key in keys {
            let actual = key_slot(key.as_bytes());
            assert_eq!(
                actual, slot,
                "migrate_keys: {key:?} is in slot {actual}, not {slot}"
            );
        }
        let keys: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
        self.migrate_raw(from, to, &keys);
    }

    fn migrate_raw(&self, from: usize, to: usize, keys: &[&[u8]]) {
        if keys.is_empty() {
            return;
        }
        let port = self.nodes[to].port().to_string();
        let mut args: Vec<&[u8]> = vec![
            b"MIGRATE",
            HOST.as_bytes(),
            port.as_bytes(),
            b"",
            b"0",
            b"5000",
        ];
        if let Some(password) = self.password() {
            args.extend([b"AUTH".as_slice(), password.as_bytes()]);
        }
        args.push(b"KEYS");
        args.extend_from_slice(keys);
        match self.try_call(from, &args) {
            Ok(Reply::Status(s)) if s == "OK" || s == "NOKEY" => {}
            Ok(other) => self.fail(
                &[from, to],
                &format!(
                    "MIGRATE of {} keys from node {from} to node {to}: {other:?}",
                    keys.len()
                ),
            ),
            Err(e) => self.fail(&[from, to], &format!("MIGRATE: {e}")),
        }
    }

    /// Ends a migration: `CLUSTER SETSLOT slot NODE <to-id>` on `to`, on
    /// the source (the owner of the slot in `to`'s view), then on every
    /// other running master; then waits until every running node's
    /// `CLUSTER NODES` names `to` as the only owner of `slot`. The source
    /// must hold no keys of the slot any more (Redis refuses otherwise).
    pub fn finish_migration(&self, slot: u16, to: usize) {
        let to_id = self.node_id(to);
        let from = self
            .owner_in_view(to, slot)
            .unwrap_or_else(|e| self.fail(&[to], &e));
        let s = slot.to_string();
        let setslot = ["CLUSTER", "SETSLOT", &s, "NODE", &to_id];
        self.expect_ok(to, &setslot);
        if from != to {
            self.expect_ok(from, &setslot);
        }
        for master in self.master_indices() {
            if master != to && master != from {
                self.expect_ok(master, &setslot);
            }
        }
        self.wait_slot_owner(slot, to, &[from, to], CLUSTER_TIMEOUT.into());
    }

    /// Waits until every running node sees master `owner` serving `slot`.
    fn wait_slot_owner(&self, slot: u16, owner: usize, logs: &[usize], deadline: Deadline) {
        let what = format!("every node to agree that node {owner} owns slot {slot}");
        self.poll(&what, deadline, logs, || {
            for i in self.running() {
                let seen = self.owner_in_view(i, slot)?;
                if seen != owner {
                    return Err(format!("node {i} sees node {seen} as the owner"));
                }
            }
            Ok(())
        });
    }

    /// Moves `slot` with all its keys from master `from` to master `to`:
    /// [`begin_migration`](Self::begin_migration), `CLUSTER GETKEYSINSLOT`
    /// and `MIGRATE` in batches until the slot is empty on `from`, then
    /// [`finish_migration`](Self::finish_migration).
    pub fn move_slot(&self, slot: u16, from: usize, to: usize) {
        let owner = self
            .owner_in_view(from, slot)
            .unwrap_or_else(|e| self.fail(&[from], &e));
        if owner != from {
            self.fail(
                &[from],
                &format!("move_slot: node {owner} owns slot {slot}, not node {from}"),
            );
        }
        self.begin_migration(slot, from, to);
        let (s, batch) = (slot.to_string(), MIGRATE_BATCH.to_string());
        loop {
            let keys = match self.try_call(from, &["CLUSTER", "GETKEYSINSLOT", &s, &batch]) {
                Ok(Reply::Array(keys)) => keys,
                Ok(other) => self.fail(&[from], &format!("CLUSTER GETKEYSINSLOT: {other:?}")),
                Err(e) => self.fail(&[from], &e),
            };
            if keys.is_empty() {
                break;
            }
            let keys: Vec<&[u8]> = keys
                .iter()
                .map(|k| match k {
                    Reply::Bulk(k) => k.as_slice(),
                    other => self.fail(&[from], &format!("CLUSTER GETKEYSINSLOT item {other:?}")),
                })
                .collect();
            self.migrate_raw(from, to, &keys);
        }
        self.finish_migration(slot, to);
    }

    /// Manual failover: `CLUSTER FAILOVER` on `replica`, then waits until
    /// it reports itself master (`ROLE`) and every running node sees it as
    /// the master of its old master's slots, with the old master (when
    /// running) as its replica. Returns the old master's index.
    pub fn failover(&self, replica: usize) -> usize {
        let view = self
            .try_cluster_nodes(replica)
            .unwrap_or_else(|e| self.fail(&[replica], &e));
        let me = view
            .iter()
            .find(|n| n.is_myself())
            .unwrap_or_else(|| self.fail(&[replica], "CLUSTER NODES lacks `myself`"));
        let Some(master_id) = me.master_id.clone().filter(|_| me.is_replica()) else {
            self.fail(
                &[replica],
                &format!("failover: node {replica} is not a replica: {me:?}"),
            )
        };
        let master = view
            .iter()
            .find(|n| n.id == master_id)
            .unwrap_or_else(|| self.fail(&[replica], &format!("master {master_id} not listed")));
        let old = master
            .addr
            .and_then(|a| self.node_index(a))
            .unwrap_or_else(|| self.fail(&[replica], &format!("master not ours: {master:?}")));
        let (new_id, slots) = (me.id.clone(), master.slots.clone());
        self.expect_ok(replica, &["CLUSTER", "FAILOVER"]);
        let what = format!("node {replica} to take over from node {old} ({slots:?})");
        self.poll(&what, CLUSTER_TIMEOUT.into(), &[replica, old], || {
            let role = self.try_call(replica, &["ROLE"])?;
            if role.items().first() != Some(&Reply::Bulk(b"master".to_vec())) {
                return Err(format!("node {replica} ROLE: {role:?}"));
            }
            for i in self.running() {
                let view = self.try_cluster_nodes(i)?;
                let new = view.iter().find(|n| n.id == new_id);
                if !new.is_some_and(|n| n.is_master() && n.slots == slots) {
                    return Err(format!("node {i} sees the new master as {new:?}"));
                }
                if self.is_up(old) {
                    let was = view.iter().find(|n| n.id == master_id);
                    if !was.is_some_and(|n| {
                        n.is_replica() && n.master_id.as_deref() == Some(new_id.as_str())
                    }) {
                        return Err(format!("node {i} sees the old master as {was:?}"));
                    }
                }
            }
            Ok(())
        });
        old
    }

    /// After `old_master` was killed (or paused): polls the running nodes
    /// other than `old_master` until they all name one and the same other
    /// node as the master serving `slot`; returns its index. Panics at the
    /// deadline (an [`Instant`] or a [`Duration`] from now).
    pub fn wait_for_new_master_of(
        &self,
        slot: u16,
        old_master: usize,
        deadline: impl Into<Deadline>,
    ) -> usize {
        let old_addr = self.nodes[old_master].addr();
        let what = format!("a new master of slot {slot} in place of node {old_master}");
        let survivors: Vec<usize> = self
            .running()
            .into_iter()
            .filter(|&i| i != old_master)
            .collect();
        self.poll(&what, deadline.into(), &survivors, || {
            let mut agreed = None;
            for &i in &survivors {
                let owner = self.owner_in_view(i, slot)?;
                if self.nodes[owner].addr() == old_addr {
                    return Err(format!(
                        "node {i} still sees node {old_master} as the owner"
                    ));
                }
                match agreed {
                    Some(o) if o != owner => {
                        return Err(format!("nodes disagree: node {o} and node {owner}"));
                    }
                    _ => agreed = Some(owner),
                }
            }
            agreed.ok_or_else(|| "no running node to ask".to_owned())
        })
    }
}
