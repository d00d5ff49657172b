//! The slot map: which master serves each of the 16384 slots, as one
//! immutable snapshot stamped with an epoch.

use std::collections::HashMap;
use std::fmt;

use super::topology::{Health, NodeAddr, Topology};
use crate::slot::SLOT_COUNT;

/// The table entry of a slot no master serves.
const NO_NODE: u16 = u16::MAX;
const SLOTS: usize = SLOT_COUNT as usize;

/// An immutable snapshot of slot ownership: 16384 entries, each the index
/// of a master in a node table, plus each master's replicas for replica
/// reads.
///
/// A snapshot is never changed in place. A refresh builds a new one with
/// [`from_topology`](Self::from_topology); a MOVED reply makes a corrected
/// copy with [`with_moved`](Self::with_moved). Callers share the current
/// snapshot behind an `Rc` or `Arc` and swap it whole, so a lookup never
/// sees half an update. The table is 32 KiB: copying it on a MOVED is
/// cheap next to the round trip that taught it.
///
/// Every master in the node table serves at least one slot. Two maps are
/// equal when they route every slot to the same master and replicas and
/// carry the same epoch, whatever the order of their node tables.
#[derive(Clone)]
pub struct SlotMap {
    table: Box<[u16]>,
    masters: Vec<NodeAddr>,
    /// `replicas[i]` are the replicas of `masters[i]`, sorted.
    replicas: Vec<Vec<NodeAddr>>,
    epoch: u64,
    covered: usize,
}

impl SlotMap {
    /// A map that serves no slot.
    pub fn empty(epoch: u64) -> SlotMap {
        SlotMap {
            table: vec![NO_NODE; SLOTS].into_boxed_slice(),
            masters: Vec::new(),
            replicas: Vec::new(),
            epoch,
            covered: 0,
        }
    }

    /// The map a topology describes. Each shard with a master and slots
    /// routes its slots to its master (even one that is not online: the
    /// cluster still gives it those slots); its replicas that are online or
    /// of unknown health serve reads. Masters are numbered in slot order, so
    /// the same topology always gives the same table. Should two shards
    /// claim a slot (a parsed [`Topology`] never does), the later wins.
    pub fn from_topology(topology: &Topology, epoch: u64) -> SlotMap {
        // First pass: slot -> shard index (u32: a topology may list more
        // shards than fit in the table's u16 entries).
        let mut by_shard = vec![u32::MAX; SLOTS];
        for (i, shard) in topology.shards.iter().enumerate() {
            if shard.master.is_none() {
                continue;
            }
            for &(start, end) in &shard.slots {
                let (start, end) = (usize::from(start), usize::from(end).min(SLOTS - 1));
                if start <= end {
                    by_shard[start..=end].fill(i as u32);
                }
            }
        }
        // Second pass: number the masters in the order of their first slot.
        let mut map = SlotMap::empty(epoch);
        let mut index_of: HashMap<u32, u16> = HashMap::new();
        let mut by_addr: HashMap<NodeAddr, u16> = HashMap::new();
        for (entry, &shard_index) in map.table.iter_mut().zip(&by_shard) {
            if shard_index == u32::MAX {
                continue;
            }
            let index = match index_of.get(&shard_index) {
                Some(&index) => index,
                None => {
                    let shard = &topology.shards[shard_index as usize];
                    let Some(master) = &shard.master else {
                        continue;
                    };
                    // Two shards naming the same master address share an entry.
                    let index = match by_addr.get(&master.addr) {
                        Some(&index) => index,
                        None => {
                            let mut replicas: Vec<NodeAddr> = shard
                                .replicas
                                .iter()
                                .filter(|r| matches!(r.health, Health::Online | Health::Unknown))
                                .map(|r| r.addr.clone())
                                .collect();
                            replicas.sort_unstable();
                            replicas.dedup();
                            map.masters.push(master.addr.clone());
                            map.replicas.push(replicas);
                            let index = (map.masters.len() - 1) as u16;
                            by_addr.insert(master.addr.clone(), index);
                            index
                        }
                    };
                    index_of.insert(shard_index, index);
                    index
                }
            };
            *entry = index;
            map.covered += 1;
        }
        map
    }

    /// A copy of this map with `slot` served by `addr`, stamped `epoch`: the
    /// correction a `MOVED` reply teaches. An unknown `addr` joins the node
    /// table without replicas (the next refresh finds them); a master left
    /// without slots leaves it. A slot outside 0..16384 changes nothing but
    /// the epoch.
    pub fn with_moved(&self, slot: u16, addr: NodeAddr, epoch: u64) -> SlotMap {
        let mut next = self.clone();
        next.epoch = epoch;
        let Some(&old) = self.table.get(usize::from(slot)) else {
            return next;
        };
        let index = match next.masters.iter().position(|m| *m == addr) {
            Some(i) => i as u16,
            None => {
                next.masters.push(addr);
                next.replicas.push(Vec::new());
                (next.masters.len() - 1) as u16
            }
        };
        if index == old {
            return next;
        }
        next.table[usize::from(slot)] = index;
        if old == NO_NODE {
            next.covered += 1;
        } else if !next.table.contains(&old) {
            next.remove_master(old);
        }
        next
    }

    /// Drops master `index`, which serves no slot, moving the last master
    /// into its place.
    fn remove_master(&mut self, index: u16) {
        let last = (self.masters.len() - 1) as u16;
        self.masters.swap_remove(usize::from(index));
        self.replicas.swap_remove(usize::from(index));
        if index != last {
            for entry in self.table.iter_mut().filter(|e| **e == last) {
                *entry = index;
            }
        }
    }

    /// The master serving `slot`; `None` when no master does (or the slot
    /// is not below 16384).
    #[inline]
    pub fn master_for_slot(&self, slot: u16) -> Option<&NodeAddr> {
        let index = *self.table.get(usize::from(slot))?;
        self.masters.get(usize::from(index))
    }

    /// The index in [`masters`](Self::masters) of the master serving
    /// `slot`.
    #[inline]
    pub(crate) fn master_index(&self, slot: u16) -> Option<usize> {
        let index = *self.table.get(usize::from(slot))?;
        (index != NO_NODE).then_some(usize::from(index))
    }

    /// The replicas of the master serving `slot`, for reads; empty when the
    /// slot has no master or its master has no healthy replica known.
    pub fn replicas_for_slot(&self, slot: u16) -> &[NodeAddr] {
        self.table
            .get(usize::from(slot))
            .and_then(|&i| self.replicas.get(usize::from(i)))
            .map_or(&[], Vec::as_slice)
    }

    /// The replicas of master `index` (of [`masters`](Self::masters)).
    pub(crate) fn replicas_of(&self, index: usize) -> &[NodeAddr] {
        self.replicas.get(index).map_or(&[], Vec::as_slice)
    }

    /// Every replica of every master.
    pub(crate) fn replicas(&self) -> impl Iterator<Item = &NodeAddr> {
        self.replicas.iter().flatten()
    }

    /// True when `addr` is listed as a replica and not as a master.
    pub(crate) fn is_replica(&self, addr: &NodeAddr) -> bool {
        !self.masters.contains(addr) && self.replicas.iter().flatten().any(|r| r == addr)
    }

    /// Restamps the snapshot (before anyone sees it).
    pub(crate) fn set_epoch(&mut self, epoch: u64) {
        self.epoch = epoch;
    }

    /// The epoch this snapshot was stamped with.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Number of slots some master serves.
    pub fn coverage(&self) -> usize {
        self.covered
    }

    /// True when all 16384 slots are served.
    pub fn is_complete(&self) -> bool {
        self.covered == SLOTS
    }

    /// The node table: every master that serves a slot.
    pub fn masters(&self) -> &[NodeAddr] {
        &self.masters
    }

    /// Every node the map knows: each master, then the replicas of each.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeAddr> {
        self.masters.iter().chain(self.replicas.iter().flatten())
    }

    /// The served slots as inclusive ranges with their master, in slot
    /// order.
    pub fn ranges(&self) -> Vec<(u16, u16, &NodeAddr)> {
        let mut ranges: Vec<(u16, u16, u16)> = Vec::new();
        for (slot, &index) in self.table.iter().enumerate() {
            let slot = slot as u16;
            match ranges.last_mut() {
                Some(last) if last.2 == index && last.1 + 1 == slot => last.1 = slot,
                _ => ranges.push((slot, slot, index)),
            }
        }
        ranges
            .into_iter()
            .filter(|r| r.2 != NO_NODE)
            .map(|(start, end, i)| (start, end, &self.masters[usize::from(i)]))
            .collect()
    }

    /// True when both maps route every slot to the same master with the
    /// same replicas; the epochs are not compared. A refresh that changes
    /// nothing can keep the current snapshot.
    pub fn same_routes(&self, other: &SlotMap) -> bool {
        if self.covered != other.covered || self.masters.len() != other.masters.len() {
            return false;
        }
        let theirs: HashMap<&NodeAddr, u16> = other
            .masters
            .iter()
            .enumerate()
            .map(|(i, m)| (m, i as u16))
            .collect();
        let mut to_theirs = Vec::with_capacity(self.masters.len());
        for (master, replicas) in self.masters.iter().zip(&self.replicas) {
            match theirs.get(master) {
                Some(&j) if other.replicas[usize::from(j)] == *replicas => to_theirs.push(j),
                _ => return false,
            }
        }
        self.table.iter().zip(other.table.iter()).all(|(&a, &b)| {
            if a == NO_NODE {
                b == NO_NODE
            } else {
                to_theirs[usize::from(a)] == b
            }
        })
    }
}

impl PartialEq for SlotMap {
    fn eq(&self, other: &SlotMap) -> bool {
        self.epoch == other.epoch && self.same_routes(other)
    }
}

impl Eq for SlotMap {}

impl fmt::Debug for SlotMap {
    /// The epoch, the coverage and the ranges, not 16384 entries.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Ranges<'a>(&'a SlotMap);
        impl fmt::Debug for Ranges<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_list()
                    .entries(self.0.ranges().into_iter().map(|(start, end, addr)| {
                        format!("{start}-{end} {addr} {:?}", self.0.replicas_for_slot(start))
                    }))
                    .finish()
            }
        }
        f.debug_struct("SlotMap")
            .field("epoch", &self.epoch)
            .field("coverage", &self.covered)
            .field("ranges", &Ranges(self))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{NodeInfo, Role, Shard};

    fn addr(port: u16) -> NodeAddr {
        NodeAddr::new("10.0.0.1", port)
    }

    fn info(port: u16, role: Role, health: Health) -> NodeInfo {
        NodeInfo {
            id: format!("n{port}"),
            addr: addr(port),
            role,
            health,
            tls_port: None,
            replication_offset: None,
        }
    }

    fn shard(slots: &[(u16, u16)], master: u16, replicas: &[(u16, Health)]) -> Shard {
        Shard {
            slots: slots.to_vec(),
            master: Some(info(master, Role::Master, Health::Online)),
            replicas: replicas
                .iter()
                .map(|&(p, h)| info(p, Role::Replica, h))
                .collect(),
            other_masters: Vec::new(),
        }
    }

    fn three() -> Topology {
        Topology {
            shards: vec![
                shard(&[(10923, 16383)], 7002, &[(7005, Health::Online)]),
                shard(
                    &[(0, 5460)],
                    7000,
                    &[(7006, Health::Unknown), (7003, Health::Online)],
                ),
                shard(
                    &[(5461, 10922)],
                    7001,
                    &[(7004, Health::Loading), (7007, Health::Failed)],
                ),
            ],
        }
    }

    #[test]
    fn routes_every_slot_of_a_topology() {
        let map = SlotMap::from_topology(&three(), 7);
        assert_eq!(map.epoch(), 7);
        assert!(map.is_complete());
        assert_eq!(map.coverage(), 16384);
        // Numbered in slot order, whatever the order of the shards.
        assert_eq!(map.masters(), [addr(7000), addr(7001), addr(7002)]);
        assert_eq!(map.master_for_slot(0), Some(&addr(7000)));
        assert_eq!(map.master_for_slot(5461), Some(&addr(7001)));
        assert_eq!(map.master_for_slot(16383), Some(&addr(7002)));
        assert_eq!(map.master_for_slot(16384), None);
        assert_eq!(map.master_for_slot(u16::MAX), None);
        // Healthy (or unknown) replicas only, sorted.
        assert_eq!(map.replicas_for_slot(100), [addr(7003), addr(7006)]);
        assert!(map.replicas_for_slot(6000).is_empty());
        assert!(map.replicas_for_slot(16384).is_empty());
        assert_eq!(map.nodes().count(), 6);
        assert_eq!(
            map.ranges(),
            [
                (0, 5460, &addr(7000)),
                (5461, 10922, &addr(7001)),
                (10923, 16383, &addr(7002))
            ]
        );
        let shown = format!("{map:?}");
        assert!(shown.len() < 400 && shown.contains("5461-10922"), "{shown}");
    }

    #[test]
    fn gaps_and_masterless_shards_are_uncovered() {
        let mut topology = three();
        topology.shards[0].master = None;
        topology.shards[1].slots = vec![(0, 99), (200, 5460)];
        let map = SlotMap::from_topology(&topology, 1);
        assert_eq!(map.coverage(), 16384 - 5461 - 100);
        assert!(!map.is_complete());
        assert_eq!(map.master_for_slot(150), None);
        assert_eq!(map.master_for_slot(16000), None);
        assert_eq!(map.masters().len(), 2);
        assert_eq!(SlotMap::empty(0).coverage(), 0);
        assert_eq!(SlotMap::empty(0).master_for_slot(0), None);
    }

    #[test]
    fn moved_makes_a_corrected_copy() {
        let map = SlotMap::from_topology(&three(), 1);
        // To a known master.
        let moved = map.with_moved(0, addr(7001), 2);
        assert_eq!(moved.master_for_slot(0), Some(&addr(7001)));
        assert_eq!(moved.replicas_for_slot(0), map.replicas_for_slot(6000));
        assert_eq!((moved.epoch(), moved.coverage()), (2, 16384));
        assert_eq!(
            map.master_for_slot(0),
            Some(&addr(7000)),
            "the original stays"
        );
        assert!(!moved.same_routes(&map));
        // To an unknown node: it joins without replicas.
        let new = NodeAddr::new("10.9.9.9", 7100);
        let moved = moved.with_moved(1, new.clone(), 3);
        assert_eq!(moved.master_for_slot(1), Some(&new));
        assert!(moved.replicas_for_slot(1).is_empty());
        assert_eq!(moved.masters().len(), 4);
        // Once to the same owner: only the epoch changes.
        let again = moved.with_moved(1, new.clone(), 4);
        assert!(again.same_routes(&moved) && again != moved);
        // A slot out of range changes nothing but the epoch.
        assert!(moved.with_moved(16384, addr(1), 5).same_routes(&moved));
    }

    #[test]
    fn a_master_without_slots_leaves_the_table() {
        let topology = Topology {
            shards: vec![
                shard(&[(0, 0)], 7000, &[(7003, Health::Online)]),
                shard(&[(1, 16383)], 7001, &[(7004, Health::Online)]),
            ],
        };
        let map = SlotMap::from_topology(&topology, 1);
        // 7000 loses its only slot to a newcomer: the newcomer takes its place.
        let moved = map.with_moved(0, addr(7100), 2);
        assert_eq!(moved.masters(), [addr(7100), addr(7001)]);
        assert_eq!(moved.master_for_slot(0), Some(&addr(7100)));
        assert!(moved.replicas_for_slot(0).is_empty());
        assert_eq!(moved.master_for_slot(9), Some(&addr(7001)));
        assert_eq!(moved.replicas_for_slot(9), [addr(7004)]);
        // 7000 loses its only slot to 7001: the table shrinks.
        let moved = map.with_moved(0, addr(7001), 2);
        assert_eq!(moved.masters(), [addr(7001)]);
        assert_eq!(moved.master_for_slot(0), Some(&addr(7001)));
        assert_eq!(moved.replicas_for_slot(0), [addr(7004)]);
        // And the master in the middle of the table.
        let topology = Topology {
            shards: vec![
                shard(&[(0, 99)], 7000, &[]),
                shard(&[(100, 100)], 7001, &[]),
                shard(&[(101, 16383)], 7002, &[(7005, Health::Online)]),
            ],
        };
        let moved = SlotMap::from_topology(&topology, 1).with_moved(100, addr(7000), 2);
        assert_eq!(moved.masters(), [addr(7000), addr(7002)]);
        assert_eq!(moved.master_for_slot(100), Some(&addr(7000)));
        assert_eq!(moved.master_for_slot(101), Some(&addr(7002)));
        assert_eq!(moved.replicas_for_slot(16383), [addr(7005)]);
        assert!(moved.is_complete());
    }

    #[test]
    fn moved_fills_an_uncovered_slot() {
        let map = SlotMap::empty(0).with_moved(42, addr(7000), 1);
        assert_eq!(map.coverage(), 1);
        assert_eq!(map.master_for_slot(42), Some(&addr(7000)));
        assert_eq!(map.ranges(), [(42, 42, &addr(7000))]);
    }

    #[test]
    fn equality_ignores_the_order_of_the_node_table() {
        let a = SlotMap::from_topology(&three(), 1);
        let mut reversed = three();
        reversed.shards.reverse();
        for s in &mut reversed.shards {
            s.replicas.reverse();
        }
        assert_eq!(a, SlotMap::from_topology(&reversed, 1));
        assert_ne!(a, SlotMap::from_topology(&reversed, 2));
        // The same routes reached by different paths compare equal.
        let via_moves = a.with_moved(0, addr(7001), 2).with_moved(0, addr(7000), 3);
        assert!(via_moves.same_routes(&a));
        let mut other = three();
        other.shards[0].replicas.clear();
        assert!(!SlotMap::from_topology(&other, 1).same_routes(&a));
    }
}
