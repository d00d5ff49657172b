//! Client-side caching: the per-client (so, on the per-core runtime,
//! per-core) cache of replies to reads, kept true by the server's
//! `CLIENT TRACKING` invalidations.
//!
//! - `store.rs`: the entries (hash map + slab), SIEVE eviction under a
//!   byte bound, and the generations that drop a tracker's, a slot's or
//!   every entry at once;
//! - `flight.rs`: misses in flight: the one request concurrent misses of
//!   a read share, and the invalidations that arrive while it is out;
//! - `read.rs`: the read-through path every client runs (lookup, lead or
//!   join a miss, store what may be stored);
//! - `connection.rs`: `CacheCommands` for `Connection`.
//!
//! The cache lives on one core and is reached through `Rc`: a hit borrows
//! a `RefCell` (a flag, no atomic), hashes the key, compares the read's
//! arguments in place and clones the value (see [`read_through`]).

mod connection;
mod flight;
mod read;
mod store;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use bytes::Bytes;

pub(crate) use flight::Fetched;
pub(crate) use read::{
    cacheable, caching_off, fetched, fetched_mget, mget_through, read_through, tracked_mget,
    tracked_read,
};
pub(crate) use store::TrackerId;
use store::{Lookup, Store, Tracker};

use crate::Value;
use crate::cmd::Args;
use crate::config::{CacheOptions, TrackingMode};

/// The counters of one cache (one per connection or cluster client; on
/// the per-core runtime, one per core).
///
/// Eviction is SIEVE (Zhang et al., NSDI 2024): keys sit in a queue in
/// insertion order; a hit only sets the key's *visited* bit (no list
/// relinking, unlike LRU, so a hit writes one byte); to make room, a hand
/// walks from the oldest key toward the newest, clearing visited bits and
/// evicting the first key not read since the hand last passed it. Hot keys
/// are read between two passes and stay; keys read once leave first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Reads answered from the cache.
    pub hits: u64,
    /// Reads that went to the server (including those that joined another
    /// caller's request for the same read).
    pub misses: u64,
    /// Keys evicted to stay within `max_bytes`, plus replies of a key
    /// dropped to keep its reads (in several forms, such as `HGET` of
    /// many fields) within an eighth of it.
    pub evictions: u64,
    /// Keys dropped by invalidations (the server's, and this client's own
    /// writes), plus one per whole-tracker or whole-cache drop.
    pub invalidations: u64,
    /// Bytes charged to the entries held (keys, values, bookkeeping).
    pub bytes: u64,
    /// Keys held.
    pub keys: u64,
    /// The bound on `bytes`.
    pub max_bytes: u64,
}

/// What one core tells another about entries it may hold (the per-core
/// runtime forwards these over its mesh).
#[derive(Debug, Clone)]
pub(crate) enum Invalidation {
    /// These keys changed.
    Keys(Vec<Bytes>),
    /// Every entry tracked on the node with this address is void (its
    /// socket was lost, or the server flushed).
    Tracker(String),
    /// Every entry is void (what a core was owed grew past its bound, or
    /// a core stopped).
    All,
}

/// Forwards invalidations to other cores: set by the per-core runtime.
pub(crate) trait Relay {
    /// Sends `what` to every core whose bit is set in `cores`.
    fn forward(&self, cores: &[u64], what: Invalidation);
}

/// One client's cache.
pub(crate) struct Cache {
    store: RefCell<Store>,
    /// Tracker ids by label (the node's address).
    labels: RefCell<HashMap<Rc<str>, TrackerId>>,
    pending: RefCell<HashMap<Bytes, flight::Pending, foldhash::fast::RandomState>>,
    options: CacheOptions,
    relay: RefCell<Option<Rc<dyn Relay>>>,
    /// The coarse clock's resolution in ms: entries expire this early.
    slack_ms: u64,
}

impl Cache {
    /// An empty cache with `options`.
    pub fn new(options: CacheOptions) -> Rc<Cache> {
        Rc::new(Cache {
            store: RefCell::new(Store::new(options.max_bytes)),
            labels: RefCell::new(HashMap::default()),
            pending: RefCell::new(HashMap::default()),
            slack_ms: read::clock_resolution_ms(),
            options,
            relay: RefCell::new(None),
        })
    }

    /// The options it was made with.
    pub fn options(&self) -> &CacheOptions {
        &self.options
    }

    /// Sets who forwards invalidations to other cores.
    pub fn set_relay(&self, relay: Rc<dyn Relay>) {
        *self.relay.borrow_mut() = Some(relay);
    }

    /// The counters.
    pub fn stats(&self) -> CacheStats {
        let s = self.store.borrow();
        CacheStats {
            hits: s.counters.hits,
            misses: s.counters.misses,
            evictions: s.counters.evictions,
            invalidations: s.counters.invalidations,
            bytes: s.bytes() as u64,
            keys: s.keys() as u64,
            max_bytes: self.options.max_bytes as u64,
        }
    }

    /// The tracker for the node `label` (its address), registered on first
    /// use; the same label gives the same tracker.
    pub fn tracker(&self, label: &str) -> TrackerId {
        if let Some(&id) = self.labels.borrow().get(label) {
            return id;
        }
        let mut s = self.store.borrow_mut();
        let trackers = &mut s.gens.trackers;
        let id = TrackerId::try_from(trackers.len()).expect("fewer than 2^32 node addresses");
        let label: Rc<str> = label.into();
        trackers.push(Tracker {
            label: label.clone(),
            generation: 0,
            interest: Vec::new(),
        });
        self.labels.borrow_mut().insert(label, id);
        id
    }

    /// The generation of `tracker` now: a read sent on it from now on may
    /// be stored under it.
    pub fn tracker_generation(&self, tracker: TrackerId) -> u32 {
        self.store.borrow().gens.trackers[tracker as usize].generation
    }

    /// Core `core` reads through `tracker` from another core: forward it
    /// the tracker's invalidations.
    pub fn note_interest(&self, tracker: TrackerId, core: usize) {
        let mut s = self.store.borrow_mut();
        let interest = &mut s.gens.trackers[tracker as usize].interest;
        if interest.len() <= core / 64 {
            interest.resize(core / 64 + 1, 0);
        }
        interest[core / 64] |= 1 << (core % 64);
    }

    /// The cached reply to `read` (its key at `key_index`), if any.
    #[inline]
    pub fn lookup(&self, read: &impl Args, key_index: usize) -> Option<Value> {
        let mut s = self.store.borrow_mut();
        read.with_arg(key_index, |key| {
            match s.lookup(key, read, key_index, read::now_ms) {
                Lookup::Hit(v) => Some(v),
                Lookup::Miss => None,
            }
        })
        .flatten()
    }

    /// `key` changed: drop its entries, and make any miss in flight for it
    /// uncacheable.
    pub fn invalidate_key(&self, key: &[u8]) {
        self.store.borrow_mut().invalidate(key);
        if let Some(p) = self.pending.borrow_mut().get_mut(key) {
            p.invalidations = p.invalidations.wrapping_add(1);
            // Its reply may predate the write: a read begun from now on
            // sends its own request.
            p.close_flights();
        }
    }

    /// Drops every entry and makes every miss in flight uncacheable (and
    /// closed to reads begun from now on).
    pub fn flush(&self) {
        self.store.borrow_mut().flush();
        self.close_all_flights();
    }

    /// Drops the entries of `slots` (they moved) and makes misses of them
    /// in flight uncacheable (and closed to reads begun from now on).
    pub fn drop_slots(&self, slots: impl IntoIterator<Item = u16>) {
        let mut store = self.store.borrow_mut();
        let mut any = false;
        for slot in slots {
            store.drop_slot(slot);
            any = true;
        }
        drop(store);
        if any {
            self.close_all_flights();
        }
    }

    /// A push frame arrived on a socket tracked as `tracker`: true when it
    /// was an invalidation, which is applied here (and forwarded to the
    /// cores reading through this tracker).
    pub fn on_push(&self, tracker: TrackerId, items: &[Value]) -> bool {
        let [Value::BulkString(kind) | Value::SimpleString(kind), what] = items else {
            return false;
        };
        if !kind.eq_ignore_ascii_case(b"invalidate") {
            return false;
        }
        match what {
            Value::Array(keys) | Value::Set(keys) => {
                let keys: Vec<Bytes> = keys
                    .iter()
                    .filter_map(|k| match k {
                        Value::BulkString(b) | Value::SimpleString(b) => Some(b.clone()),
                        _ => None,
                    })
                    .collect();
                for k in &keys {
                    self.invalidate_key(k);
                }
                let interest = self.interest(tracker);
                if interest.iter().any(|w| *w != 0) {
                    self.forward(&interest, Invalidation::Keys(keys));
                }
            }
            // FLUSHALL/FLUSHDB (or the server's table overflowing): every
            // key this socket tracked.
            _ => self.tracker_void(tracker),
        }
        true
    }

    /// Every entry tracked on `tracker` is void: its socket was lost or the
    /// server flushed. Forwarded to the cores reading through it, whose
    /// interest is then cleared (they re-register with their next read).
    pub fn tracker_void(&self, tracker: TrackerId) {
        self.close_all_flights();
        let (interest, label) = {
            let mut s = self.store.borrow_mut();
            s.drop_tracker(tracker);
            let t = &mut s.gens.trackers[tracker as usize];
            (std::mem::take(&mut t.interest), t.label.to_string())
        };
        if interest.iter().any(|w| *w != 0) {
            self.forward(&interest, Invalidation::Tracker(label));
        }
    }

    /// Applies what another core forwarded.
    pub fn apply(&self, what: &Invalidation) {
        match what {
            Invalidation::Keys(keys) => {
                for k in keys {
                    self.invalidate_key(k);
                }
            }
            Invalidation::Tracker(label) => {
                // A core that never read through that node has no tracker
                // for it, and nothing to drop.
                let known = self.labels.borrow().get(label.as_str()).copied();
                if let Some(t) = known {
                    self.store.borrow_mut().drop_tracker(t);
                    self.close_all_flights();
                }
            }
            Invalidation::All => self.flush(),
        }
    }

    /// This client sends `cmd`: if it writes, drop its keys' entries (and
    /// mark misses of them in flight uncacheable). Called before sending
    /// and again once it is answered, so that the caller's next cached
    /// read cannot return what the write replaced. `FLUSHALL`/`FLUSHDB`
    /// drop everything.
    pub fn note_write(&self, cmd: &impl Args) {
        if crate::cmd::is_read_only(cmd) {
            return;
        }
        let flushes = cmd
            .with_arg(0, |n| {
                n.eq_ignore_ascii_case(b"FLUSHALL") || n.eq_ignore_ascii_case(b"FLUSHDB")
            })
            .unwrap_or(false);
        if flushes {
            self.flush();
            return;
        }
        if let Ok(positions) = crate::cmd::key_positions(cmd) {
            for i in positions.iter() {
                cmd.with_arg(i, |k| self.invalidate_key(k));
            }
        }
    }

    /// True when a key may be stored under the tracking mode (BCAST only
    /// tells about keys with one of its prefixes).
    fn tracked_key(&self, key: &[u8]) -> bool {
        match &self.options.mode {
            TrackingMode::OptIn => true,
            TrackingMode::Broadcast { prefixes } => {
                prefixes.is_empty() || prefixes.iter().any(|p| key.starts_with(p))
            }
        }
    }

    fn interest(&self, tracker: TrackerId) -> Vec<u64> {
        self.store.borrow().gens.trackers[tracker as usize]
            .interest
            .clone()
    }

    fn forward(&self, cores: &[u64], what: Invalidation) {
        let relay = self.relay.borrow().clone();
        if let Some(relay) = relay {
            relay.forward(cores, what);
        }
    }
}
