//! Cluster `SCAN`: every key of every master, page by page, through slot
//! migrations and failovers. [`ClusterScan`] says how.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;

use super::NodeAddr;
use super::client::Cluster;
use crate::cmd::{Cmd, cmd};
use crate::error::RetryAction;
use crate::slot::{SLOT_COUNT, key_slot};
use crate::{Error, FromValue, Value};

/// 64-bit words in a set of every slot.
const WORDS: usize = SLOT_COUNT as usize / 64;

/// A set of hash slots, one bit each.
#[derive(Clone, PartialEq, Eq)]
struct SlotSet(Box<[u64; WORDS]>);

impl fmt::Debug for SlotSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SlotSet({} slots)", self.len())
    }
}

impl SlotSet {
    fn new() -> SlotSet {
        SlotSet(Box::new([0; WORDS]))
    }

    fn contains(&self, slot: u16) -> bool {
        let s = usize::from(slot);
        self.0[s / 64] & (1 << (s % 64)) != 0
    }

    fn insert(&mut self, slot: u16) {
        let s = usize::from(slot);
        self.0[s / 64] |= 1 << (s % 64);
    }

    fn remove(&mut self, slot: u16) {
        let s = usize::from(slot);
        self.0[s / 64] &= !(1 << (s % 64));
    }

    fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    fn is_full(&self) -> bool {
        self.0.iter().all(|&w| w == u64::MAX)
    }

    /// Adds every slot of `other`.
    fn add_all(&mut self, other: &SlotSet) {
        for (w, o) in self.0.iter_mut().zip(other.0.iter()) {
            *w |= o;
        }
    }

    /// Keeps only the slots also in `other`.
    fn keep_only(&mut self, other: &SlotSet) {
        for (w, o) in self.0.iter_mut().zip(other.0.iter()) {
            *w &= o;
        }
    }

    /// Removes every slot of `other`.
    fn remove_all(&mut self, other: &SlotSet) {
        for (w, o) in self.0.iter_mut().zip(other.0.iter()) {
            *w &= !o;
        }
    }
}

/// What to scan for: `MATCH`, `COUNT` and `TYPE` of every `SCAN` sent.
///
/// ```
/// use redcore::cluster::ScanOptions;
///
/// let options = ScanOptions::new().pattern("user:*").count(500).kind("hash");
/// assert_eq!(options.count, Some(500));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScanOptions {
    /// `MATCH pattern`: only keys matching this glob (the server filters
    /// after reading, so a page may come back empty).
    pub pattern: Option<Bytes>,
    /// `COUNT n`: how much work each `SCAN` does (a hint to the server).
    pub count: Option<u64>,
    /// `TYPE kind`: only keys of this type (`string`, `hash`, `zset`, ...;
    /// Redis 6 and later).
    pub kind: Option<Bytes>,
}

impl ScanOptions {
    /// Every key, the server's default `COUNT`.
    pub fn new() -> ScanOptions {
        ScanOptions::default()
    }

    /// Sets `MATCH`.
    pub fn pattern(mut self, pattern: impl Into<Bytes>) -> ScanOptions {
        self.pattern = Some(pattern.into());
        self
    }

    /// Sets `COUNT`.
    pub fn count(mut self, count: u64) -> ScanOptions {
        self.count = Some(count);
        self
    }

    /// Sets `TYPE`.
    pub fn kind(mut self, kind: impl Into<Bytes>) -> ScanOptions {
        self.kind = Some(kind.into());
        self
    }

    /// `SCAN cursor` with these options.
    fn command(&self, cursor: u64) -> Cmd {
        let mut c = cmd("SCAN").arg(cursor);
        if let Some(p) = &self.pattern {
            c = c.arg("MATCH").arg(p.as_ref());
        }
        if let Some(n) = self.count {
            c = c.arg("COUNT").arg(n);
        }
        if let Some(k) = &self.kind {
            c = c.arg("TYPE").arg(k.as_ref());
        }
        c
    }
}

/// The pass under way: one master scanned from cursor 0 back to 0.
#[derive(Clone, PartialEq, Eq)]
struct Pass {
    node: NodeAddr,
    cursor: u64,
    /// The last `SCAN` came back with cursor 0: only the end check is left.
    ended: bool,
    /// Failures in a row of this pass (see [`PASS_RETRIES`]).
    failures: u8,
    /// The unfinished slots the node owned, as a master and with no
    /// marker, when the pass began: those it may finish.
    slots: SlotSet,
    /// The node's config epoch when the pass began.
    config_epoch: u64,
    /// The run id of the node's process when the pass began: a cursor
    /// means something only to the process that gave it.
    run_id: Bytes,
    /// `SCAN`s answered so far.
    pages: u32,
}

impl Pass {
    /// True when `me`, the node's view of itself now, still lets this
    /// pass finish slots: a master, same process, same config epoch.
    fn holds(&self, me: &Myself) -> bool {
        me.master && me.config_epoch == self.config_epoch && me.run_id == self.run_id
    }
}

/// Every this many pages of a pass, the node's view of itself goes with
/// the `SCAN`, in the same round trip, so that a pass that can no longer
/// finish anything (the node was demoted, restarted, or took a slot)
/// stops early instead of returning the rest of the node's keys for
/// nothing.
const CHECK_EVERY: u32 = 8;

/// Where a cluster scan is: which slots are finished, and the pass under
/// way. Plain data: `Send`, `Clone`, about 2 KiB (4 KiB during a pass),
/// so it can travel to another thread or core with each page. See
/// [`ClusterScan`] for what it means.
#[derive(Clone, PartialEq, Eq)]
pub struct ScanState {
    finished: SlotSet,
    pass: Option<Pass>,
    /// Where the next pass looks for its first unfinished slot.
    next_slot: u16,
}

impl Default for ScanState {
    fn default() -> ScanState {
        ScanState::new()
    }
}

impl fmt::Debug for ScanState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScanState")
            .field("finished_slots", &self.finished_slots())
            .field("node", &self.pass.as_ref().map(|p| &p.node))
            .field("cursor", &self.pass.as_ref().map(|p| p.cursor))
            .finish()
    }
}

impl ScanState {
    /// A scan that has not begun.
    pub fn new() -> ScanState {
        ScanState {
            finished: SlotSet::new(),
            pass: None,
            next_slot: 0,
        }
    }

    /// True when every slot is finished: the scan has returned every key.
    pub fn is_done(&self) -> bool {
        self.finished.is_full()
    }

    /// How many of the 16384 slots are finished.
    pub fn finished_slots(&self) -> usize {
        self.finished.len()
    }

    /// The node the pass under way scans, if a pass is under way.
    pub fn node(&self) -> Option<&NodeAddr> {
        self.pass.as_ref().map(|p| &p.node)
    }

    /// A state with slots `0..n` finished, for unit tests elsewhere in
    /// the crate.
    #[cfg(test)]
    pub(crate) fn for_tests_with_finished(n: u16) -> ScanState {
        let mut state = ScanState::new();
        for slot in 0..n {
            state.finished.insert(slot);
        }
        state
    }
}

/// What a node said of itself in `CLUSTER NODES`.
#[derive(Debug, PartialEq, Eq)]
struct Myself {
    master: bool,
    config_epoch: u64,
    /// Slots it owns with no migrating or importing marker.
    stable: SlotSet,
    /// Slots it owns, markers or not.
    owned: SlotSet,
    /// The run id of its process (empty until read from `INFO`).
    run_id: Bytes,
}

/// Reads the `myself` line of a `CLUSTER NODES` reply: `id addr flags
/// master ping pong epoch link slot...`, where a slot is `n`, `a-b`,
/// `[n->-id]` (migrating) or `[n-<-id]` (importing).
fn parse_myself(text: &[u8]) -> Option<Myself> {
    let text = std::str::from_utf8(text).ok()?;
    let line = text.lines().find(|line| {
        line.split(' ')
            .nth(2)
            .is_some_and(|flags| flags.split(',').any(|f| f == "myself"))
    })?;
    let mut fields = line.split(' ');
    let flags = fields.nth(2)?;
    let master = flags.split(',').any(|f| f == "master");
    let config_epoch = fields.nth(3)?.parse().ok()?;
    fields.next()?; // link state
    let mut owned = SlotSet::new();
    let mut marked = Vec::new();
    for word in fields.filter(|w| !w.is_empty()) {
        if let Some(marker) = word.strip_prefix('[') {
            let end = marker.find('-')?;
            let slot: u16 = marker[..end].parse().ok()?;
            if slot >= SLOT_COUNT {
                return None;
            }
            marked.push(slot);
            continue;
        }
        let (start, end) = match word.split_once('-') {
            Some((a, b)) => (a.parse::<u16>().ok()?, b.parse::<u16>().ok()?),
            None => {
                let s = word.parse::<u16>().ok()?;
                (s, s)
            }
        };
        if start > end || end >= SLOT_COUNT {
            return None;
        }
        for slot in start..=end {
            owned.insert(slot);
        }
    }
    let mut stable = owned.clone();
    for slot in marked {
        stable.remove(slot);
    }
    Some(Myself {
        master,
        config_epoch,
        stable,
        owned,
        run_id: Bytes::new(),
    })
}

/// Reads a `SCAN` reply: the next cursor and the keys.
fn parse_scan(value: Value) -> Result<(u64, Vec<Bytes>), Error> {
    let bad = |detail| {
        Error::Conversion(crate::ConversionError {
            found: "reply",
            target: "SCAN cursor and keys",
            detail: Some(detail),
        })
    };
    let Value::Array(items) = value else {
        return Err(bad("not an array"));
    };
    let [cursor, keys]: [Value; 2] = items.try_into().map_err(|_| bad("not two items"))?;
    let cursor = Bytes::from_value(cursor)?;
    let cursor = std::str::from_utf8(&cursor)
        .ok()
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| bad("a cursor that is not a number"))?;
    Ok((cursor, Vec::from_value(keys)?))
}

/// True for an error that a new pass after a refresh may get past: the
/// node was lost, slow, or refused for a cluster reason.
fn worth_retrying(err: &Error) -> bool {
    matches!(
        err,
        Error::ConnectionLost
            | Error::Connect { .. }
            | Error::Timeout { .. }
            | Error::Io(_)
            | Error::SlotUnserved { .. }
            | Error::CoreStopped { .. }
    ) || err.retry_action() != RetryAction::None
}

/// What starting a pass came to.
enum Begin {
    Started,
    Done,
    /// The slot picked cannot be scanned now (recorded in [`Blocked`]);
    /// `refresh` when the client's map may be wrong about it.
    Skipped {
        refresh: bool,
    },
    /// Every unfinished slot is blocked for this page.
    Blocked,
}

/// What holds slots up during one page: the page goes on with the others,
/// and waits (refreshing the topology) only when nothing else is left.
#[derive(Default)]
struct Blocked {
    /// Nodes that failed during this page (unreachable, too slow, ...).
    nodes: Vec<NodeAddr>,
    /// Slots no pass can finish now (no master in the map, the map
    /// stale about them, or migrating with nothing else to scan there).
    slots: Option<SlotSet>,
    /// Why the last one was blocked: what the page fails with if nothing
    /// else can progress before its deadline.
    last: Option<Error>,
}

impl Blocked {
    fn node(&mut self, addr: NodeAddr, why: Error) {
        if !self.nodes.contains(&addr) {
            self.nodes.push(addr);
        }
        self.last = Some(why);
    }

    fn slot(&mut self, slot: u16, why: Error) {
        self.slots.get_or_insert_with(SlotSet::new).insert(slot);
        self.last = Some(why);
    }

    /// True when `slot`, served by `master` in the map, waits this page.
    fn holds(&self, slot: u16, master: Option<&NodeAddr>) -> bool {
        self.slots.as_ref().is_some_and(|s| s.contains(slot))
            || master.is_some_and(|m| self.nodes.contains(m))
    }
}

/// How many times in a row a pass may fail (its `SCAN` or its end check)
/// and be tried again from its cursor before it is dropped.
const PASS_RETRIES: u8 = 1;

/// Asks `addr` for its own view of itself (`CLUSTER NODES`, `myself`)
/// and for the run id of its process (`INFO server`), in one round trip.
async fn myself(cluster: &Cluster, addr: &NodeAddr, deadline: Instant) -> Result<Myself, Error> {
    let node = cluster.router.node(addr);
    let left = deadline.saturating_duration_since(Instant::now());
    let replies = node.pipeline(view_commands().iter(), Some(left)).await?;
    let [nodes, info]: [Value; 2] = replies
        .try_into()
        .map_err(|_| unreadable("CLUSTER NODES and INFO"))?;
    read_myself(nodes, info)
}

/// What asks a node for its view of itself: `CLUSTER NODES`, `INFO server`.
fn view_commands() -> [Cmd; 2] {
    [cmd("CLUSTER").arg("NODES"), cmd("INFO").arg("server")]
}

fn unreadable(target: &'static str) -> Error {
    Error::Conversion(crate::ConversionError {
        found: "reply",
        target,
        detail: Some("not the expected shape"),
    })
}

/// Reads the replies to [`view_commands`].
fn read_myself(nodes: Value, info: Value) -> Result<Myself, Error> {
    let nodes = Bytes::from_value(nodes)?;
    let info = Bytes::from_value(info)?;
    let mut me = parse_myself(&nodes).ok_or_else(|| unreadable("CLUSTER NODES"))?;
    me.run_id = parse_run_id(&info).ok_or_else(|| unreadable("INFO server"))?;
    Ok(me)
}

/// The `run_id` of an `INFO server` reply: a new one for every start of
/// the server process.
fn parse_run_id(info: &[u8]) -> Option<Bytes> {
    info.split(|&b| b == b'\n')
        .find_map(|line| line.strip_prefix(b"run_id:"))
        .map(|id| Bytes::copy_from_slice(id.trim_ascii()))
        .filter(|id| !id.is_empty())
}

/// Starts a pass on the master of the next unfinished slot that is not
/// blocked during this page.
async fn begin(
    cluster: &Cluster,
    state: &mut ScanState,
    blocked: &mut Blocked,
    deadline: Instant,
) -> Result<Begin, Error> {
    let routes = cluster.router.routes();
    let from = state.next_slot;
    let pick = (from..SLOT_COUNT).chain(0..from).find(|&slot| {
        !state.finished.contains(slot) && !blocked.holds(slot, routes.map.master_for_slot(slot))
    });
    let Some(slot) = pick else {
        return Ok(if state.is_done() {
            Begin::Done
        } else {
            Begin::Blocked
        });
    };
    let Some(addr) = routes.map.master_for_slot(slot).cloned() else {
        // The next try starts after this slot: the slots that are served
        // go on while this one has no master.
        state.next_slot = (slot + 1) % SLOT_COUNT;
        blocked.slot(slot, Error::SlotUnserved { slot });
        return Ok(Begin::Skipped { refresh: true });
    };
    let me = match myself(cluster, &addr, deadline).await {
        Ok(me) => me,
        Err(e) if worth_retrying(&e) => {
            state.next_slot = slot;
            skip_node(cluster, state, &addr);
            tracing::debug!(node = %addr, error = %e, "scan: node unreachable; its slots wait");
            blocked.node(addr, e);
            return Ok(Begin::Skipped { refresh: true });
        }
        Err(e) => return Err(e),
    };
    if !me.master {
        // The map is stale about the node: a refresh may mend it.
        blocked.node(addr, Error::SlotUnserved { slot });
        return Ok(Begin::Skipped { refresh: true });
    }
    if !me.owned.contains(slot) {
        // The map is stale about this slot, and maybe others it sends
        // here: they wait, a refresh may mend them.
        for s in 0..SLOT_COUNT {
            if !me.owned.contains(s) && routes.map.master_for_slot(s) == Some(&addr) {
                blocked.slot(s, Error::SlotUnserved { slot });
            }
        }
        return Ok(Begin::Skipped { refresh: true });
    }
    let mut slots = me.stable;
    slots.remove_all(&state.finished);
    state.next_slot = (slot + 1) % SLOT_COUNT;
    if slots.len() == 0 {
        // The slot is migrating or importing, and the node has nothing
        // else left to finish: a pass could finish nothing.
        tracing::debug!(node = %addr, slot, "scan: slot migrating; it waits");
        blocked.slot(slot, Error::SlotMigrating { slot });
        return Ok(Begin::Skipped { refresh: false });
    }
    state.pass = Some(Pass {
        node: addr,
        cursor: 0,
        ended: false,
        failures: 0,
        slots,
        config_epoch: me.config_epoch,
        run_id: me.run_id,
        pages: 0,
    });
    Ok(Begin::Started)
}

/// Moves where the next pass looks first past the slots the map gives
/// `addr`: the next page, too, starts with the slots other masters serve.
fn skip_node(cluster: &Cluster, state: &mut ScanState, addr: &NodeAddr) {
    let routes = cluster.router.routes();
    let from = state.next_slot;
    if let Some(after) = (from..SLOT_COUNT)
        .chain(0..from)
        .find(|&s| routes.map.master_for_slot(s) != Some(addr))
    {
        state.next_slot = after;
    }
}

/// Sends the next `SCAN` of the pass under way; after its last one, the
/// end check ([`confirm`]). An error leaves the pass (and its cursor) in
/// the state.
async fn step(
    cluster: &Cluster,
    options: &ScanOptions,
    state: &mut ScanState,
    deadline: Instant,
) -> Result<Vec<Bytes>, Error> {
    let pass = state.pass.as_ref().expect("a pass under way");
    if pass.ended {
        // The last page's end check failed: only it is left.
        return match confirm(cluster, state, deadline).await {
            Ok(()) => Ok(Vec::new()),
            Err(e) if worth_retrying(&e) => Err(e),
            Err(e) => {
                // No retry mends it: the pass finishes nothing.
                tracing::debug!(error = %e, "scan pass not confirmed");
                state.pass = None;
                Ok(Vec::new())
            }
        };
    }
    let node = cluster.router.node(&pass.node);
    let left = deadline.saturating_duration_since(Instant::now());
    let scan = options.command(pass.cursor);
    let (reply, view) = if pass.pages % CHECK_EVERY == CHECK_EVERY - 1 {
        let [nodes, info] = view_commands();
        let replies = node
            .pipeline([scan, nodes, info].iter(), Some(left))
            .await?;
        let [reply, nodes, info]: [Value; 3] = replies
            .try_into()
            .map_err(|_| unreadable("SCAN, CLUSTER NODES and INFO"))?;
        (reply, Some(read_myself(nodes, info)?))
    } else {
        (node.command(&scan, false, Some(left)).await?, None)
    };
    if let Value::Error(e) = reply {
        return Err(Error::Server(e));
    }
    let (cursor, mut keys) = parse_scan(reply)?;
    keys.retain(|k| !state.finished.contains(key_slot(k)));
    let pass = state.pass.as_mut().expect("a pass under way");
    pass.pages += 1;
    pass.failures = 0;
    if let Some(me) = view {
        if !pass.holds(&me) {
            tracing::debug!(node = %pass.node, "scan pass stopped: the node changed");
            state.pass = None;
            return Ok(keys);
        }
        // A slot that started moving cannot be finished by this pass.
        pass.slots.keep_only(&me.stable);
    }
    if cursor != 0 {
        pass.cursor = cursor;
        return Ok(keys);
    }
    pass.ended = true;
    // The keys are returned whatever the check says: a slot it does not
    // confirm is scanned again elsewhere, and a key twice is allowed. A
    // check that fails, or finds the deadline spent, is left to the next
    // page, which gives it its own deadline.
    if Instant::now() >= deadline {
        return Ok(keys);
    }
    match confirm(cluster, state, deadline).await {
        Ok(()) => {}
        Err(e) if worth_retrying(&e) => {
            tracing::debug!(error = %e, "scan pass end check failed; the next page checks again");
            if let Some(pass) = state.pass.as_mut() {
                pass.failures += 1;
            }
        }
        Err(e) => {
            tracing::debug!(error = %e, "scan pass not confirmed");
            state.pass = None;
        }
    }
    Ok(keys)
}

/// The end check of a pass whose `SCAN` came back to cursor 0: marks the
/// slots it finished and ends it. An error leaves the pass as it was.
async fn confirm(cluster: &Cluster, state: &mut ScanState, deadline: Instant) -> Result<(), Error> {
    let addr = state.pass.as_ref().expect("a pass under way").node.clone();
    let me = myself(cluster, &addr, deadline).await?;
    let mut pass = state.pass.take().expect("a pass under way");
    if !pass.holds(&me) {
        tracing::debug!(node = %addr, master = me.master, "scan pass not confirmed: the node changed");
        return Ok(());
    }
    pass.slots.keep_only(&me.stable);
    let routes = cluster.router.routes();
    for slot in 0..SLOT_COUNT {
        if pass.slots.contains(slot) && routes.map.master_for_slot(slot) != Some(&addr) {
            pass.slots.remove(slot);
        }
    }
    state.finished.add_all(&pass.slots);
    Ok(())
}

/// The next page of the scan in `state`: `Ok(None)` once every slot is
/// finished. Slots that cannot be scanned now (their node unreachable,
/// their map stale, migrating) wait while the others are scanned; when
/// nothing else is left, the page refreshes the topology and tries again
/// after a short delay, until the handle's call deadline.
pub(crate) async fn next_page(
    cluster: &Cluster,
    options: &ScanOptions,
    state: &mut ScanState,
) -> Result<Option<Vec<Bytes>>, Error> {
    let deadline = cluster.deadline();
    let router = &cluster.router;
    let backoff = router.config.retry_backoff_initial;
    let mut blocked = Blocked::default();
    // What the last wait was for: the page's error if time runs out.
    let mut waited: Option<Error> = None;
    loop {
        if Instant::now() >= deadline {
            // Nothing more is tried on a spent deadline: a node would be
            // taken for unreachable only for want of time.
            return Err(blocked.last.take().or(waited).unwrap_or(Error::Timeout {
                maybe_applied: false,
            }));
        }
        let err = match state.pass {
            None => match begin(cluster, state, &mut blocked, deadline).await? {
                Begin::Started => continue,
                Begin::Done => return Ok(None),
                Begin::Skipped { refresh } => {
                    if refresh && Instant::now() < deadline {
                        let _ = router.refresh_until(deadline).await;
                    }
                    continue;
                }
                Begin::Blocked => {
                    // Nothing can progress: wait for the cluster to change.
                    let err = blocked.last.take().unwrap_or(Error::SlotUnserved {
                        slot: state.next_slot,
                    });
                    blocked = Blocked::default();
                    err
                }
            },
            Some(_) => match step(cluster, options, state, deadline).await {
                Ok(keys) => return Ok(Some(keys)),
                Err(e) if worth_retrying(&e) => {
                    let pass = state.pass.as_mut().expect("a pass under way");
                    pass.failures += 1;
                    if pass.failures > PASS_RETRIES {
                        // Both commands only read: dropping the pass is
                        // always safe; its slots are scanned again later.
                        tracing::debug!(node = %pass.node, error = %e, "scan pass dropped");
                        let addr = pass.node.clone();
                        state.pass = None;
                        skip_node(cluster, state, &addr);
                        blocked.node(addr, e);
                        continue;
                    }
                    tracing::debug!(error = %e, "scan pass failed; refreshing, then going on from its cursor");
                    e
                }
                Err(e) => return Err(e),
            },
        };
        if deadline.saturating_duration_since(Instant::now()) < backoff {
            return Err(err);
        }
        let _ = router.refresh_until(deadline).await;
        if let Some(pass) = &state.pass {
            // A pass whose node the map no longer sends any of its slots
            // to can finish nothing: drop it now.
            let routes = router.routes();
            if !(0..SLOT_COUNT).any(|s| {
                pass.slots.contains(s) && routes.map.master_for_slot(s) == Some(&pass.node)
            }) {
                state.pass = None;
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left < backoff {
            return Err(err);
        }
        waited = Some(err);
        glommio::timer::sleep(backoff).await;
    }
}

/// A page in flight, owning the state until it is done.
type PageFuture =
    Pin<Box<dyn Future<Output = (Box<ScanState>, Result<Option<Vec<Bytes>>, Error>)>>>;

/// A scan over every key of every master of a [`Cluster`]: pages with
/// [`next_page`](Self::next_page), or keys one by one as a
/// [`Stream`](futures_lite::Stream). Every key that exists for the whole
/// scan is returned at least once, through slot migrations and failovers;
/// keys can come twice, mostly those of nodes whose slots moved during
/// the scan. Each page has the handle's call deadline; a page that fails
/// has returned no keys, leaves a state from which the next call goes on
/// (see [Failures](#failures) for what it kept), and may be asked again.
/// `!Send`, like the [`Cluster`] it runs on.
///
/// ```no_run
/// use futures_lite::StreamExt;
/// use redcore::cluster::{Cluster, ScanOptions};
///
/// glommio::LocalExecutorBuilder::default()
///     .spawn(|| async {
///         let cluster = Cluster::connect("127.0.0.1:7000").await?;
///         // Page by page...
///         let mut scan = cluster.scan(ScanOptions::new().pattern("user:*").count(500));
///         while let Some(keys) = scan.next_page().await? {
///             println!("{} keys", keys.len());
///         }
///         // ...or key by key.
///         let hashes: Vec<_> = cluster
///             .scan(ScanOptions::new().kind("hash"))
///             .try_collect::<_, _, Vec<_>>()
///             .await?;
///         println!("{} hashes", hashes.len());
///         Ok::<_, redcore::Error>(())
///     })
///     .unwrap()
///     .join()
///     .unwrap()
///     .unwrap();
/// ```
///
/// # How every key is found
///
/// A scan keeps a [`ScanState`]: a bitmap of *finished* slots (16384
/// bits) and the *pass* under way, if any: the node it scans, its cursor,
/// the slots it may finish, and the node's config epoch and process run
/// id when it began.
///
/// A pass scans one master with `SCAN cursor [MATCH] [COUNT] [TYPE]` until
/// the cursor comes back 0. Its node is the master (in the client's slot
/// map) of the lowest unfinished slot at or after the slot the previous
/// pass began at, wrapping around, skipping the slots that wait during
/// this page (see [Slots that wait](#slots-that-wait)). A pass is started
/// only when it can finish something: its node owns, with no marker, at
/// least one unfinished slot.
///
/// Before the first `SCAN` of a pass and after its last one, the client
/// asks the node itself for `CLUSTER NODES` and reads its `myself` line
/// (its role, its config epoch, its slots and its `[slot->-id]`
/// (migrating) and `[slot-<-id]` (importing) markers), and for `INFO
/// server` (the `run_id` of its process), in one round trip. A slot is
/// marked finished only when, at both ends of the pass, the node was a
/// master, owned the slot and had no marker on it, and neither its config
/// epoch nor its run id changed; and the client's slot map (refreshed meanwhile, if anything
/// asked) still sends the slot there. Why that is enough for a key `k` of slot `s` that exists for
/// the whole scan:
///
/// - While a node owns `s` with no marker, every key of `s` is on it (a
///   key leaves only by `MIGRATE`, and a resharding migrates a slot's keys
///   only while the slot is marked migrating; see [Limits](#limits) for
///   keys moved by hand).
/// - A key of `s` could leave the node in the middle of the pass only if
///   `s` migrated away; then either the node no longer owns `s` at the end,
///   or `s` came back, which raises the node's config epoch. (A node that
///   takes a slot takes a new epoch unless its own is already the
///   greatest in the cluster; the node that took `s` away then had an
///   epoch at least as great as ours, so ours is the greatest when `s`
///   comes back only if the two are equal: a collision, which lasts until
///   the cluster gives one of them a new epoch, and a window this check
///   does not close.) Either way `s` is not finished by this pass.
/// - A cursor means something only to the process that gave it: a node
///   restarted in the middle of the pass (too fast for a failover, its
///   keys loaded again from disk, the client's connection back between
///   two pages) answers the next `SCAN` from a new table. Its run id
///   changed, so the pass finishes nothing.
/// - Otherwise `k` was on the node from the first `SCAN` to the last, in
///   one process, and `SCAN` returns every key present for a whole
///   iteration, through rehashing. So `k` was returned.
/// - A slot not finished is scanned again by a later pass, on whichever
///   master owns it then, until some pass finishes it; the scan ends when
///   all 16384 are finished.
///
/// # Slots that wait
///
/// A slot that no pass can finish now waits, during the page, while the
/// others are scanned:
///
/// - its master in the client's map cannot be reached (`CLUSTER NODES`
///   fails: connection refused, timeout, ...): every slot the map gives
///   that node waits, the topology is refreshed (as a command would), and
///   the next pass starts on another master; the next page, too, starts
///   past that node's slots, so a dead master is not asked first by every
///   page;
/// - the map is stale (the node is no longer a master, or does not own
///   the slot): the slots the map wrongly gives it wait, and the topology
///   is refreshed;
/// - the slot is marked migrating or importing on its master and that
///   master has no other unfinished slot without a marker (a pass there
///   could finish nothing);
/// - no master serves it in the map.
///
/// When every unfinished slot waits, the page refreshes the topology,
/// sleeps the configured retry backoff and looks again, until the call
/// deadline of the client ([`ClusterConfig::timeout`](crate::ClusterConfig::timeout),
/// or [`Cluster::with_timeout`]); then it fails with what held the last
/// slot up: [`Error::SlotMigrating`] naming a slot that stays migrating (a
/// resharding tool that died leaves one so until an operator runs
/// `CLUSTER SETSLOT <slot> STABLE` or `NODE`), the node's connection
/// error, or [`Error::SlotUnserved`] (no master in the map, or the map's
/// master, after the refreshes, still not a master owning the slot: the
/// nodes disagree about who serves it). So a stuck slot does not make the
/// scan loop forever: every other slot is finished first, then each page
/// fails by its deadline naming the slot, and the scan can go on later
/// from its state (keys of the stuck slot that a pass returned in the
/// meantime stay returned; the slot is finished by a pass once it has
/// settled). A page spends at most its deadline; a frozen master can take
/// the whole deadline of a page (or two, if a pass under way is on it;
/// see below) before its slots wait.
///
/// # Failures
///
/// Both `SCAN` and `CLUSTER NODES` only read, so a failure changed
/// nothing on the server. A page that fails has returned no keys.
///
/// - A `SCAN` of a pass that fails with an error worth a retry
///   (connection lost, timeout, `TRYAGAIN`, `CLUSTERDOWN`, ...) keeps the
///   pass and its cursor: the topology is refreshed and, after the retry
///   backoff, the pass goes on from its cursor (in this page if time
///   remains, else in the next). That is sound because the end check
///   still covers the whole pass: a node that restarted or changed in
///   between fails it. A pass whose node the refreshed map no longer
///   sends any of its slots to is dropped, and so is a pass that fails a
///   second time in a row: its node's slots then wait (above), and are
///   scanned again from cursor 0 by a later pass.
/// - The end check, after the `SCAN` that returned cursor 0, uses what is
///   left of the page's deadline; if that is spent, or the check fails
///   with an error worth a retry, the page still returns its keys and the
///   check is left for the next page, which makes it first, with its own
///   deadline (the pass is not scanned again). A second failure in a row,
///   or an error no retry mends (a reply that cannot be read), drops the
///   pass: it finishes nothing, and its slots are scanned again later.
/// - Any other error (a refused `SCAN` option, an ACL denial, a reply
///   that cannot be read) fails the page at once and leaves the state as
///   it was before the command.
///
/// Duplicates: keys whose slot is already finished are dropped from every
/// page (one CRC16 per key), so a key comes twice only when the slot it
/// was returned in was not finished by that pass: a slot that migrated
/// away during the pass (its keys come again from the new owner), or a
/// pass that confirmed nothing (an error, a failover of the node, its
/// restart, or a slot migrating *into* the node, which raises its config
/// epoch): then every key that pass returned can come twice. To stop such
/// a pass early, every 8th `SCAN` of a pass is sent with `CLUSTER NODES`
/// and `INFO server` in one pipeline (no extra round trip); a pass whose
/// node changed stops there, and slots that started moving are dropped
/// from what it may finish. The tests print the counts
/// (`tests/cluster_scan.rs`).
///
/// Besides `SCAN`, a scan sends `CLUSTER NODES` and `INFO server` to each
/// master it scans: a user restricted by ACLs needs all three.
///
/// # Limits
///
/// Holes in the argument above, where a key present for the whole scan
/// can be missed:
///
/// - A key created, or deleted and written again, during the scan may or
///   may not be returned, as with `SCAN` itself.
/// - An aborted migration: the pass's node is set migrating, some keys
///   are `MIGRATE`d to the target, and the migration is undone (`CLUSTER
///   SETSLOT <slot> STABLE` on both) between two of the pass's checks
///   (every 8th `SCAN` and the end). The node still owns the slot with no
///   marker and its epoch did not change, so the pass is confirmed, and
///   the keys that went to the target (where no routing finds them) are
///   missed.
/// - `CLUSTER SETSLOT <slot> NODE <its own id>` raises the node's config
///   epoch only when the node was importing the slot and its epoch is not
///   already the greatest in the cluster. A slot that leaves the pass's
///   node and comes back to it that way, without a raise, looks unchanged
///   at the end of the pass; keys that left and came back while the
///   cursor was past their place are missed (an epoch collision, above,
///   is one such case).
/// - `MIGRATE` needs no migrating slot: keys moved by hand from a slot
///   that stays stable, during a pass, are not seen to leave.
/// - A master cut off from the cluster that was replaced without knowing
///   it still calls itself master with its slots; if the client's map also
///   still names it, a pass on it is confirmed, and keys written to its
///   replacement in the meantime are missed (the same window in which a
///   write to it would be lost).
/// - A [`ScanState`] does not record the [`ScanOptions`] it was made with:
///   [`ClusterScan::resume`] with other options is allowed, and the slots
///   already finished are not scanned again, so keys of those slots that
///   only the new options match are not returned. Resume with the same
///   options.
pub struct ClusterScan {
    cluster: Cluster,
    options: Rc<ScanOptions>,
    /// `None` while a page is in flight (it holds the state).
    state: Option<Box<ScanState>>,
    in_flight: Option<PageFuture>,
    /// Keys of the last page not yet taken by the stream.
    buffered: VecDeque<Bytes>,
    done: bool,
}

impl fmt::Debug for ClusterScan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterScan")
            .field("options", &self.options)
            .field("state", &self.state)
            .field("done", &self.done)
            .finish()
    }
}

impl ClusterScan {
    /// A scan over `cluster` from `state` (a new one, or one a previous
    /// scan left). Pass the options the state was made with: the state
    /// does not record them, and slots it has finished are not scanned
    /// again under other options.
    pub fn resume(cluster: &Cluster, options: ScanOptions, state: ScanState) -> ClusterScan {
        ClusterScan {
            cluster: cluster.clone(),
            options: Rc::new(options),
            done: state.is_done(),
            state: Some(Box::new(state)),
            in_flight: None,
            buffered: VecDeque::new(),
        }
    }

    /// Where the scan is, to resume it later; `None` while a page is in
    /// flight (a [`next_page`](Self::next_page) future was dropped before
    /// it finished: the next call picks it up).
    pub fn state(&self) -> Option<&ScanState> {
        self.state.as_deref()
    }

    /// The next page of keys: `Ok(None)` when the scan is over. A page may
    /// be empty (a `MATCH` or `TYPE` filter, or only keys of slots already
    /// finished). Dropping the future before it finishes loses nothing:
    /// the next call finishes that page.
    pub async fn next_page(&mut self) -> Result<Option<Vec<Bytes>>, Error> {
        std::future::poll_fn(|cx| self.poll_page(cx)).await
    }

    fn poll_page(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Vec<Bytes>>, Error>> {
        if self.in_flight.is_none() {
            if self.done {
                return Poll::Ready(Ok(None));
            }
            let mut state = self
                .state
                .take()
                .expect("the state, with no page in flight");
            let (cluster, options) = (self.cluster.clone(), self.options.clone());
            self.in_flight = Some(Box::pin(async move {
                let result = next_page(&cluster, &options, &mut state).await;
                (state, result)
            }));
        }
        let page = self.in_flight.as_mut().expect("a page in flight");
        let (state, result) = std::task::ready!(page.as_mut().poll(cx));
        self.in_flight = None;
        self.done = state.is_done() || matches!(result, Ok(None));
        self.state = Some(state);
        Poll::Ready(result)
    }
}

/// A scan that comes in pages: what its [`Stream`](futures_lite::Stream)
/// of keys is made from ([`poll_next_key`]).
pub(crate) trait Pages {
    /// Polls for the next page (`Ok(None)` at the end).
    fn poll_page(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Vec<Bytes>>, Error>>;
    /// Keys of the last page not yet yielded.
    fn buffered(&mut self) -> &mut VecDeque<Bytes>;
}

/// The next key of a paged scan: the buffered ones first, then a new
/// page. An error is yielded once, and polling again goes on with the
/// scan.
pub(crate) fn poll_next_key(
    scan: &mut impl Pages,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Bytes, Error>>> {
    loop {
        if let Some(key) = scan.buffered().pop_front() {
            return Poll::Ready(Some(Ok(key)));
        }
        match std::task::ready!(scan.poll_page(cx)) {
            Ok(Some(keys)) => scan.buffered().extend(keys),
            Ok(None) => return Poll::Ready(None),
            Err(e) => return Poll::Ready(Some(Err(e))),
        }
    }
}

impl Pages for ClusterScan {
    fn poll_page(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Vec<Bytes>>, Error>> {
        ClusterScan::poll_page(self, cx)
    }

    fn buffered(&mut self) -> &mut VecDeque<Bytes> {
        &mut self.buffered
    }
}

/// Keys one by one; an error is yielded once, and polling again goes on
/// with the scan.
impl futures_lite::Stream for ClusterScan {
    type Item = Result<Bytes, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        poll_next_key(&mut *self, cx)
    }
}

impl Cluster {
    /// A scan over every key of every master, with `options`' `MATCH`,
    /// `COUNT` and `TYPE`; see [`ClusterScan`].
    pub fn scan(&self, options: ScanOptions) -> ClusterScan {
        ClusterScan::resume(self, options, ScanState::new())
    }
}

/// The clients that scan a whole cluster: [`Cluster`],
/// [`CoreClient`](crate::CoreClient) and
/// [`RemoteClient`](crate::RemoteClient). Code written against it gets
/// every key of every master as a stream, whichever client runs it.
pub trait ScanCommands {
    /// The scan this client returns: a stream of keys (each client's type
    /// also has `next_page` for whole pages).
    type Scan: futures_lite::Stream<Item = Result<Bytes, Error>> + Unpin;

    /// A scan over every key of every master with `options`' `MATCH`,
    /// `COUNT` and `TYPE`.
    fn scan(&self, options: ScanOptions) -> Self::Scan;
}

impl ScanCommands for Cluster {
    type Scan = ClusterScan;

    fn scan(&self, options: ScanOptions) -> ClusterScan {
        Cluster::scan(self, options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn myself_line_slots_markers_and_epoch() {
        let text = b"a1 10.0.0.2:7001@17001 master - 0 1 2 connected 0-10\n\
            b2 10.0.0.1:7000@17000 myself,master - 0 0 7 connected 100-102 200 [101->-a1] [300-<-a1]\n\
            c3 10.0.0.3:7003@17003 slave b2 0 1 7 connected\n";
        let me = parse_myself(text).unwrap();
        assert!(me.master);
        assert_eq!(me.config_epoch, 7);
        assert_eq!(me.owned.len(), 4);
        assert!(me.stable.contains(100) && me.stable.contains(102) && me.stable.contains(200));
        assert!(me.owned.contains(101) && !me.stable.contains(101));
        assert!(!me.owned.contains(300) && !me.owned.contains(5));
        let replica = b"c3 10.0.0.3:7003@17003 myself,slave b2 0 1 7 connected\n";
        let me = parse_myself(replica).unwrap();
        assert!(!me.master && me.owned.len() == 0);
        for bad in [
            &b"x h:1@2 master - 0 0 1 connected 0-5\n"[..],
            b"x h:1@2 myself,master - 0 0 1 connected 0-16384\n",
            b"x h:1@2 myself,master - 0 0 1 connected 9-5\n",
            b"x h:1@2 myself,master - 0 0 one connected\n",
            b"x h:1@2 myself,master - 0 0 1 connected [x->-y]\n",
        ] {
            assert!(
                parse_myself(bad).is_none(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn run_id_from_info() {
        let info = b"# Server\r\nredis_version:7.0.15\r\nrun_id:4f2a9c\r\ntcp_port:7000\r\n";
        assert_eq!(parse_run_id(info).unwrap(), Bytes::from_static(b"4f2a9c"));
        assert_eq!(parse_run_id(b"# Server\r\nrun_id:\r\n"), None);
        assert_eq!(parse_run_id(b"# Server\r\n"), None);
    }

    #[test]
    fn slot_set_wraps_and_combines() {
        let mut s = SlotSet::new();
        for slot in 0..SLOT_COUNT {
            if slot != 3 && slot != 9000 {
                s.insert(slot);
            }
        }
        assert_eq!(s.len(), usize::from(SLOT_COUNT) - 2);
        assert!(!s.contains(3) && !s.contains(9000) && s.contains(4));
        let mut t = SlotSet::new();
        t.insert(3);
        t.insert(9000);
        let mut u = s.clone();
        u.keep_only(&t);
        assert_eq!(u.len(), 0);
        s.add_all(&t);
        assert!(s.is_full());
    }

    #[test]
    fn scan_command_and_reply() {
        let c = ScanOptions::new()
            .pattern("k*")
            .count(10)
            .kind("hash")
            .command(42);
        let words: Vec<&[u8]> = c.iter().collect();
        assert_eq!(
            words,
            [
                &b"SCAN"[..],
                b"42",
                b"MATCH",
                b"k*",
                b"COUNT",
                b"10",
                b"TYPE",
                b"hash"
            ]
        );
        let bulk = |s: &'static str| Value::BulkString(Bytes::from_static(s.as_bytes()));
        let reply = Value::Array(vec![bulk("17"), Value::Array(vec![bulk("a"), bulk("b")])]);
        assert_eq!(
            parse_scan(reply).unwrap(),
            (17, vec![bulk_bytes("a"), bulk_bytes("b")])
        );
        assert!(parse_scan(Value::Array(vec![bulk("x"), Value::Array(vec![])])).is_err());
        assert!(parse_scan(bulk("0")).is_err());
    }

    fn bulk_bytes(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    #[test]
    fn state_is_send_and_starts_empty() {
        fn send<T: Send + Sync + Clone>() {}
        send::<ScanState>();
        let s = ScanState::new();
        assert!(!s.is_done() && s.finished_slots() == 0 && s.node().is_none());
    }
}
