//! The entries of one cache: a hash map from key to a node in a slab, the
//! SIEVE queue over the nodes, byte accounting, and the generations that
//! drop every entry of a tracker, a slot or the whole cache in O(1).
//!
//! An entry is valid while the generations it was stamped with are
//! current: a tracker (one tracking socket) that is lost or flushed, a
//! slot that moved, or a flush of everything bumps its generation, and
//! every entry stamped before becomes a miss, then is freed when a lookup
//! finds it or eviction reaches it.

use std::collections::HashMap;

use bytes::Bytes;
use slab::Slab;
use smallvec::SmallVec;

use crate::Value;
use crate::cmd::Args;

type Hasher = foldhash::fast::RandomState;

/// Which tracking socket a read was tracked on, as an index into the
/// cache's tracker table.
pub(crate) type TrackerId = u32;

/// Bytes charged for a node beyond its key (map slot, slab slot, links).
const NODE_OVERHEAD: usize = 96;
/// Bytes charged for an entry beyond its form and value.
const ENTRY_OVERHEAD: usize = 64;
/// The most reads of one key kept (say, `HGET` of that many fields): past
/// it the oldest goes, so a hit scans a short list.
const MAX_FORMS: usize = 16;

/// The generations an entry was stored under.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Stamp {
    pub flush: u32,
    pub slot: u32,
    pub tracker: u32,
}

/// A tracking socket the cache has entries from.
pub(crate) struct Tracker {
    /// The node's address, the same on every core.
    pub label: std::rc::Rc<str>,
    /// Bumped when the socket is lost or the server flushed.
    pub generation: u32,
    /// Cores (bit per core, any number of cores) that read through this
    /// tracker from another core: its invalidations are forwarded to them.
    pub interest: Vec<u64>,
}

/// The generation counters.
pub(crate) struct Generations {
    pub flush: u32,
    pub slots: Box<[u32]>,
    pub trackers: Vec<Tracker>,
}

impl Generations {
    fn current(&self, slot: u16, tracker: TrackerId) -> Stamp {
        Stamp {
            flush: self.flush,
            slot: self.slots[slot as usize],
            tracker: self.trackers[tracker as usize].generation,
        }
    }
}

/// One cached reply: the read's form (its arguments other than the key)
/// and the value.
struct Entry {
    form: Box<[u8]>,
    value: Value,
    expires_ms: u64,
    bytes: usize,
}

/// Every cached reply of one key.
struct KeyNode {
    key: Bytes,
    slot: u16,
    tracker: TrackerId,
    stamp: Stamp,
    visited: bool,
    /// Toward the head (newer) and the tail (older) of the SIEVE queue.
    newer: Option<usize>,
    older: Option<usize>,
    bytes: usize,
    entries: SmallVec<[Entry; 1]>,
}

/// Counters kept by the store.
#[derive(Default, Clone, Copy)]
pub(crate) struct Counters {
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub invalidations: u64,
}

/// What a lookup found.
pub(crate) enum Lookup {
    Hit(Value),
    Miss,
}

/// The entries.
pub(crate) struct Store {
    map: HashMap<Bytes, usize, Hasher>,
    nodes: Slab<KeyNode>,
    head: Option<usize>,
    tail: Option<usize>,
    hand: Option<usize>,
    bytes: usize,
    max_bytes: usize,
    pub gens: Generations,
    pub counters: Counters,
}

impl Store {
    pub fn new(max_bytes: usize) -> Store {
        Store {
            map: HashMap::with_hasher(Hasher::default()),
            nodes: Slab::new(),
            head: None,
            tail: None,
            hand: None,
            bytes: 0,
            max_bytes,
            gens: Generations {
                flush: 0,
                slots: vec![0; crate::slot::SLOT_COUNT as usize].into_boxed_slice(),
                trackers: Vec::new(),
            },
            counters: Counters::default(),
        }
    }

    /// The bytes charged to the entries held (stale ones included until
    /// they are freed).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The number of keys held.
    pub fn keys(&self) -> usize {
        self.map.len()
    }

    /// The generations a read of `slot` starts under, its tracker's to be
    /// filled in when it is sent.
    pub fn base_stamp(&self, slot: u16) -> Stamp {
        Stamp {
            flush: self.gens.flush,
            slot: self.gens.slots[slot as usize],
            tracker: 0,
        }
    }

    /// The generations a read of `slot` through `tracker` starts under.
    #[cfg(test)]
    pub fn stamp(&self, slot: u16, tracker: TrackerId) -> Stamp {
        self.gens.current(slot, tracker)
    }

    /// The reply to `read` (whose key, at `key_index`, is `key`) if one is
    /// cached, current and not expired at `now_ms()` (asked only when an
    /// entry is found). A stale node is freed.
    #[inline]
    pub fn lookup(
        &mut self,
        key: &[u8],
        read: &impl Args,
        key_index: usize,
        now_ms: impl FnOnce() -> u64,
    ) -> Lookup {
        let Some(&idx) = self.map.get(key) else {
            self.counters.misses += 1;
            return Lookup::Miss;
        };
        let node = &mut self.nodes[idx];
        if node.stamp != self.gens.current(node.slot, node.tracker) {
            self.remove(idx);
            self.counters.misses += 1;
            return Lookup::Miss;
        }
        let Some(at) = node
            .entries
            .iter()
            .position(|e| form_matches(&e.form, read, key_index))
        else {
            self.counters.misses += 1;
            return Lookup::Miss;
        };
        if node.entries[at].expires_ms <= now_ms() {
            let e = node.entries.remove(at);
            node.bytes -= e.bytes;
            self.bytes -= e.bytes;
            if node.entries.is_empty() {
                self.remove(idx);
            }
            self.counters.misses += 1;
            return Lookup::Miss;
        }
        node.visited = true;
        self.counters.hits += 1;
        Lookup::Hit(node.entries[at].value.clone())
    }

    /// Stores `value` as the reply to `read` of `key` (`form` is
    /// [`form_of`] the read), stamped `stamp`, unless that stamp is no
    /// longer current or the entry alone would not fit. Evicts until the
    /// store is within its bound.
    #[allow(clippy::too_many_arguments)]
    pub fn insert(
        &mut self,
        key: &Bytes,
        slot: u16,
        tracker: TrackerId,
        stamp: Stamp,
        form: Box<[u8]>,
        value: Value,
        expires_ms: u64,
    ) -> bool {
        if stamp != self.gens.current(slot, tracker) {
            return false;
        }
        let entry_bytes = ENTRY_OVERHEAD + form.len() + value_bytes(&value);
        if NODE_OVERHEAD + key.len() + entry_bytes > self.max_bytes / 8 {
            // One key may not take more than an eighth of the cache.
            return false;
        }
        let entry = Entry {
            form,
            value: compact(value),
            expires_ms,
            bytes: entry_bytes,
        };
        let idx = match self.map.get(key.as_ref()).copied() {
            Some(idx)
                if self.nodes[idx].stamp == stamp
                    && self.nodes[idx].slot == slot
                    && self.nodes[idx].tracker == tracker =>
            {
                let node = &mut self.nodes[idx];
                let replaced = node.entries.iter().position(|e| e.form == entry.form);
                let drop_at = replaced.or((node.entries.len() >= MAX_FORMS).then_some(0));
                if let Some(at) = drop_at {
                    let old = node.entries.remove(at);
                    node.bytes -= old.bytes;
                    self.bytes -= old.bytes;
                }
                // A key's reads together keep to a key's share too: its
                // oldest forms make room (eviction never takes the node
                // being filled, so nothing else would bound it).
                while node.bytes + entry.bytes > self.max_bytes / 8 && !node.entries.is_empty() {
                    let old = node.entries.remove(0);
                    node.bytes -= old.bytes;
                    self.bytes -= old.bytes;
                    self.counters.evictions += 1;
                }
                idx
            }
            found => {
                if let Some(idx) = found {
                    self.remove(idx);
                }
                let idx = self.nodes.insert(KeyNode {
                    key: key.clone(),
                    slot,
                    tracker,
                    stamp,
                    visited: false,
                    newer: None,
                    older: self.head,
                    bytes: NODE_OVERHEAD + key.len(),
                    entries: SmallVec::new(),
                });
                if let Some(h) = self.head {
                    self.nodes[h].newer = Some(idx);
                }
                self.head = Some(idx);
                if self.tail.is_none() {
                    self.tail = Some(idx);
                }
                self.bytes += NODE_OVERHEAD + key.len();
                self.map.insert(key.clone(), idx);
                idx
            }
        };
        let node = &mut self.nodes[idx];
        node.bytes += entry.bytes;
        self.bytes += entry.bytes;
        node.entries.push(entry);
        while self.bytes > self.max_bytes {
            if !self.evict_one(idx) {
                break;
            }
        }
        true
    }

    /// Drops every reply cached for `key`. True when there was one.
    pub fn invalidate(&mut self, key: &[u8]) -> bool {
        match self.map.get(key).copied() {
            Some(idx) => {
                self.remove(idx);
                self.counters.invalidations += 1;
                true
            }
            None => false,
        }
    }

    /// Drops everything (lazily: by generation).
    pub fn flush(&mut self) {
        self.gens.flush = self.gens.flush.wrapping_add(1);
        self.counters.invalidations += 1;
    }

    /// Drops every entry of `slot` (lazily).
    pub fn drop_slot(&mut self, slot: u16) {
        let g = &mut self.gens.slots[slot as usize];
        *g = g.wrapping_add(1);
    }

    /// Drops every entry tracked on `tracker` (lazily).
    pub fn drop_tracker(&mut self, tracker: TrackerId) {
        let t = &mut self.gens.trackers[tracker as usize];
        t.generation = t.generation.wrapping_add(1);
        self.counters.invalidations += 1;
    }

    /// Evicts one node by SIEVE, never `keep`: the hand walks from the
    /// oldest node toward the newest, clearing visited marks, and evicts
    /// the first node not visited since the hand last passed it. False
    /// when nothing but `keep` is left.
    fn evict_one(&mut self, keep: usize) -> bool {
        if self.nodes.len() <= 1 {
            return false;
        }
        let mut hand = self.hand.or(self.tail);
        // Two full turns at most: the first clears every mark.
        for _ in 0..2 * self.nodes.len() + 1 {
            let Some(idx) = hand else {
                hand = self.tail;
                continue;
            };
            let node = &mut self.nodes[idx];
            if idx == keep || node.visited {
                node.visited = false;
                hand = node.newer;
                continue;
            }
            self.hand = node.newer;
            self.remove(idx);
            self.counters.evictions += 1;
            return true;
        }
        false
    }

    /// Unlinks and frees node `idx`.
    fn remove(&mut self, idx: usize) {
        let node = self.nodes.remove(idx);
        match node.newer {
            Some(n) => self.nodes[n].older = node.older,
            None => self.head = node.older,
        }
        match node.older {
            Some(o) => self.nodes[o].newer = node.newer,
            None => self.tail = node.newer,
        }
        if self.hand == Some(idx) {
            self.hand = node.newer;
        }
        self.bytes -= node.bytes;
        self.map.remove(&node.key);
    }
}

/// The arguments of `read` other than its key (at `key_index`), each
/// length-prefixed, the command name upper-cased: what tells two reads
/// of one key apart.
pub(crate) fn form_of(read: &impl Args, key_index: usize) -> Box<[u8]> {
    let mut out = Vec::new();
    for i in 0..read.arg_count() {
        if i == key_index {
            continue;
        }
        read.with_arg(i, |a| {
            out.extend_from_slice(&(a.len() as u32).to_le_bytes());
            if i == 0 {
                out.extend(a.iter().map(u8::to_ascii_uppercase));
            } else {
                out.extend_from_slice(a);
            }
        });
    }
    out.into_boxed_slice()
}

/// True when `form` is [`form_of`] `read`, compared without allocating.
#[inline]
fn form_matches(form: &[u8], read: &impl Args, key_index: usize) -> bool {
    let mut rest = form;
    for i in 0..read.arg_count() {
        if i == key_index {
            continue;
        }
        let ok = read.with_arg(i, |a| {
            let Some((len, tail)) = rest.split_first_chunk::<4>() else {
                return false;
            };
            let len = u32::from_le_bytes(*len) as usize;
            if len != a.len() || tail.len() < len {
                return false;
            }
            // Names are stored upper case, as the typed helpers send them.
            let same = if i == 0 {
                &tail[..len] == a || tail[..len].eq_ignore_ascii_case(a)
            } else {
                &tail[..len] == a
            };
            rest = &tail[len..];
            same
        });
        if ok != Some(true) {
            return false;
        }
    }
    rest.is_empty()
}

/// The bytes charged for a value.
pub(crate) fn value_bytes(v: &Value) -> usize {
    const SLOT: usize = std::mem::size_of::<Value>();
    SLOT + match v {
        Value::SimpleString(b) | Value::BulkString(b) | Value::BigNumber(b) => b.len() + 32,
        Value::Verbatim { text, .. } => text.len() + 32,
        Value::Array(items) | Value::Set(items) | Value::Push(items) => {
            items.iter().map(value_bytes).sum()
        }
        Value::Map(pairs) => pairs
            .iter()
            .map(|(k, v)| value_bytes(k) + value_bytes(v))
            .sum(),
        Value::Attributed { attributes, value } => {
            value_bytes(value)
                + attributes
                    .iter()
                    .map(|(k, v)| value_bytes(k) + value_bytes(v))
                    .sum::<usize>()
        }
        _ => 0,
    }
}

/// `v` with its strings copied out of the read buffer they were cut from
/// (a cached slice would keep that whole buffer alive) into their own
/// shared allocations, so a hit is a reference count increment.
fn compact(v: Value) -> Value {
    let own = |b: Bytes| {
        let owned = Bytes::copy_from_slice(&b);
        // The first clone of a `Bytes` made from a `Vec` allocates its
        // shared header: pay it now, not on the first hit.
        drop(owned.clone());
        owned
    };
    match v {
        Value::SimpleString(b) => Value::SimpleString(own(b)),
        Value::BulkString(b) => Value::BulkString(own(b)),
        Value::BigNumber(b) => Value::BigNumber(own(b)),
        Value::Verbatim { format, text } => Value::Verbatim {
            format,
            text: own(text),
        },
        Value::Array(items) => Value::Array(items.into_iter().map(compact).collect()),
        Value::Set(items) => Value::Set(items.into_iter().map(compact).collect()),
        Value::Map(pairs) => Value::Map(
            pairs
                .into_iter()
                .map(|(k, v)| (compact(k), compact(v)))
                .collect(),
        ),
        Value::Attributed { value, .. } => compact(*value),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(max: usize) -> Store {
        let mut s = Store::new(max);
        s.gens.trackers.push(Tracker {
            label: "n".into(),
            generation: 0,
            interest: Vec::new(),
        });
        s
    }

    fn put(s: &mut Store, key: &str, value: &str) -> bool {
        let stamp = s.stamp(0, 0);
        s.insert(
            &Bytes::copy_from_slice(key.as_bytes()),
            0,
            0,
            stamp,
            form_of(&["GET", key], 1),
            Value::BulkString(Bytes::copy_from_slice(value.as_bytes())),
            u64::MAX,
        )
    }

    fn get(s: &mut Store, key: &str) -> Option<Value> {
        match s.lookup(key.as_bytes(), &["GET", key], 1, || 0) {
            Lookup::Hit(v) => Some(v),
            Lookup::Miss => None,
        }
    }

    #[test]
    fn forms_tell_reads_apart() {
        let f = form_of(&["HGET", "k", "a"], 1);
        assert!(form_matches(&f, &["hget", "other", "a"], 1));
        assert!(!form_matches(&f, &["HGET", "k", "b"], 1));
        assert!(!form_matches(&f, &["HGET", "k", "a", "x"], 1));
        assert!(!form_matches(&f, &["HGET", "k"], 1));
        assert!(!form_matches(
            &form_of(&["GET", "k"], 1),
            &["STRLEN", "k"],
            1
        ));
    }

    #[test]
    fn stored_values_hit_until_invalidated() {
        let mut s = store(1 << 20);
        assert!(put(&mut s, "a", "1"));
        assert_eq!(get(&mut s, "a"), Some(Value::BulkString("1".into())));
        assert!(s.invalidate(b"a"));
        assert_eq!(get(&mut s, "a"), None);
        assert_eq!(s.bytes(), 0);
    }

    #[test]
    fn generations_drop_entries() {
        let mut s = store(1 << 20);
        put(&mut s, "a", "1");
        s.drop_tracker(0);
        assert_eq!(get(&mut s, "a"), None);
        put(&mut s, "a", "1");
        s.drop_slot(0);
        assert_eq!(get(&mut s, "a"), None);
        put(&mut s, "a", "1");
        s.flush();
        assert_eq!(get(&mut s, "a"), None);
        // A read that started before a flush is not stored.
        let before = s.stamp(0, 0);
        s.flush();
        assert!(!s.insert(
            &Bytes::from_static(b"a"),
            0,
            0,
            before,
            form_of(&["GET", "a"], 1),
            Value::Nil,
            u64::MAX
        ));
    }

    #[test]
    fn the_bound_holds_and_visited_keys_survive() {
        let mut s = store(64 << 10);
        put(&mut s, "hot", "v");
        for i in 0..10_000 {
            put(&mut s, &format!("cold{i}"), "xxxxxxxxxxxxxxxx");
            assert!(s.bytes() <= 64 << 10);
            // The hot key is read between inserts, as a hot key is.
            if i % 50 == 0 {
                assert!(get(&mut s, "hot").is_some(), "hot key evicted at {i}");
            }
        }
        assert!(s.counters.evictions > 9_000);
    }

    #[test]
    fn one_keys_many_forms_keep_to_a_keys_share() {
        let max = 64 << 10;
        let mut s = store(max);
        for i in 0..5_000 {
            let field = format!("f{i}");
            let stamp = s.stamp(0, 0);
            assert!(s.insert(
                &Bytes::from_static(b"h"),
                0,
                0,
                stamp,
                form_of(&["HGET", "h", &field], 1),
                Value::Nil,
                u64::MAX,
            ));
            assert!(s.bytes() <= max / 8, "after {i} forms: {}", s.bytes());
        }
        // The newest form stays; the oldest went.
        assert!(matches!(
            s.lookup(b"h", &["HGET", "h", "f4999"], 1, || 0),
            Lookup::Hit(_)
        ));
        assert!(matches!(
            s.lookup(b"h", &["HGET", "h", "f0"], 1, || 0),
            Lookup::Miss
        ));
    }

    #[test]
    fn expired_entries_miss() {
        let mut s = store(1 << 20);
        let stamp = s.stamp(0, 0);
        s.insert(
            &Bytes::from_static(b"a"),
            0,
            0,
            stamp,
            form_of(&["GET", "a"], 1),
            Value::Nil,
            10,
        );
        assert!(matches!(
            s.lookup(b"a", &["GET", "a"], 1, || 9),
            Lookup::Hit(_)
        ));
        assert!(matches!(
            s.lookup(b"a", &["GET", "a"], 1, || 10),
            Lookup::Miss
        ));
        assert_eq!(s.bytes(), 0);
    }
}
