//! What every core sends: the commands and their weights, keys, values,
//! and the table of acknowledged writes for `--verify`.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::args::{Cli, CommandTemplate, DataSize, KeyLayoutArg, KeyPattern, Piece};

/// One kind of command in the mix.
#[derive(Debug, Clone)]
pub struct OpSpec {
    /// The name in the report (`SET`, `GET`, `HSET`, `HSET #2`, ...).
    pub label: String,
    /// Its arguments with placeholders.
    pub args: Vec<Vec<Piece>>,
    /// Relative weight in the mix (0: used only as a fallback).
    pub weight: u32,
    /// A SET whose writes `--verify` tracks.
    pub verified_set: bool,
}

/// Everything the cores share about the load.
#[derive(Debug)]
pub struct Plan {
    /// The commands.
    pub ops: Vec<OpSpec>,
    /// Cumulative weights, for picking an op.
    pub cumulative: Vec<u32>,
    /// The index of GET in `ops` (the fallback of a verified SET whose
    /// keys are all being written).
    pub get_op: Option<usize>,
    /// Cores.
    pub cores: usize,
    /// Tasks per core.
    pub tasks: usize,
    /// Commands per pipeline.
    pub pipeline: usize,
    /// Key space size.
    pub keys: u64,
    /// Key pattern.
    pub pattern: KeyPattern,
    /// Key prefix.
    pub prefix: Vec<u8>,
    /// How key numbers become names.
    pub layout: KeyLayout,
    /// Value sizes.
    pub data: DataSize,
    /// Value bytes: `data.max` printable bytes, the same on every run.
    pub filler: Vec<u8>,
    /// Measured commands in all (`--requests`).
    pub requests: Option<u64>,
    /// Measured time (`--duration`).
    pub duration: Option<Duration>,
    /// Warm-up time.
    pub warmup: Duration,
    /// Open-loop rate, commands per second over all cores.
    pub rate: Option<f64>,
    /// The acknowledged writes, with `--verify`.
    pub verify: Option<WriteTable>,
    /// With `--cache`: GETs are cached reads with this client-side time
    /// to live.
    pub cache_ttl: Option<Duration>,
    /// Whether cores send histogram snapshots for the progress line.
    pub progress: bool,
    /// A call that took longer than this, from its send to its end, is
    /// late: the deadline (`--timeout`) plus [`LATE_MARGIN`].
    pub late_after: Duration,
}

/// How far past its deadline a call may end before it counts as late.
pub const LATE_MARGIN: Duration = Duration::from_millis(100);

impl Plan {
    /// The plan of a command line, for `cores` cores.
    pub fn new(cli: &Cli, cores: usize, progress: bool) -> Plan {
        let mut ops = Vec::new();
        let mut get_op = None;
        if cli.commands.is_empty() {
            let ratio = cli.ratio();
            let set = |s: &str| vec![Piece::Lit(s.as_bytes().to_vec())];
            ops.push(OpSpec {
                label: "SET".into(),
                args: vec![set("SET"), vec![Piece::Key], vec![Piece::Data]],
                weight: ratio.set,
                verified_set: cli.verify,
            });
            ops.push(OpSpec {
                label: "GET".into(),
                args: vec![set("GET"), vec![Piece::Key]],
                weight: ratio.get,
                verified_set: false,
            });
            get_op = Some(1);
        } else {
            ops.extend(custom_ops(&cli.commands));
        }
        let mut total = 0u32;
        let cumulative = ops
            .iter()
            .map(|o| {
                total += o.weight;
                total
            })
            .collect();
        let filler = (0..cli.data_size.max)
            .map(|i| b'a' + (splitmix64(i as u64) % 26) as u8)
            .collect();
        Plan {
            ops,
            cumulative,
            get_op,
            cores,
            tasks: cli.tasks as usize,
            pipeline: cli.pipeline as usize,
            keys: cli.keys,
            pattern: cli.key_pattern,
            prefix: cli.key_prefix.as_bytes().to_vec(),
            layout: match cli.key_layout {
                KeyLayoutArg::Plain => KeyLayout::Plain,
                KeyLayoutArg::Tagged => KeyLayout::tagged(cli.keys, cli.key_tags),
            },
            data: cli.data_size,
            filler,
            requests: cli.requests,
            duration: cli.measure_duration(),
            warmup: cli.warmup,
            rate: cli.rate,
            verify: cli.verify.then(|| {
                let table = WriteTable::new(cli.keys, run_nonce());
                // Cached reads are checked against when writes were
                // acknowledged too.
                if cli.cache.is_some() {
                    table.with_ack_times()
                } else {
                    table
                }
            }),
            cache_ttl: cli
                .cache
                .map(|_| cli.cache_ttl.unwrap_or(redcore::config::DEFAULT_CACHE_TTL)),
            progress,
            late_after: cli.timeout + LATE_MARGIN,
        }
    }

    /// The op a uniform draw in `0..total_weight` picks.
    pub fn pick_op(&self, draw: u32) -> usize {
        self.cumulative.partition_point(|&c| c <= draw)
    }

    /// The sum of the weights.
    pub fn total_weight(&self) -> u32 {
        self.cumulative.last().copied().unwrap_or(0)
    }

    /// Writes the key of index `i` into `out`.
    pub fn key(&self, i: u64, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&self.prefix);
        let mut digits = itoa::Buffer::new();
        if let KeyLayout::Tagged { per_tag } = self.layout {
            out.push(b'{');
            out.extend_from_slice(digits.format(i / per_tag).as_bytes());
            out.extend_from_slice(b"}:");
        }
        out.extend_from_slice(digits.format(i).as_bytes());
    }

    /// The key indices that share key `i`'s hash tag; `None` in the plain
    /// layout.
    pub fn tag_run(&self, i: u64) -> Option<Range<u64>> {
        match self.layout {
            KeyLayout::Plain => None,
            KeyLayout::Tagged { per_tag } => {
                let start = i / per_tag * per_tag;
                Some(start..(start + per_tag).min(self.keys))
            }
        }
    }

    /// The value a verified write `id` carries: its id in hex (14
    /// digits), `:`, then filler, `size_of(id)` bytes in all. The same
    /// bytes every time, so the check at the end can rebuild it, and a
    /// read can tell which write it returned ([`id_of_value`]).
    pub fn verified_value(&self, id: u64, out: &mut Vec<u8>) {
        let size = self.verified_size(id);
        out.clear();
        out.extend_from_slice(format!("{id:014x}:").as_bytes());
        let rest = size - out.len();
        out.extend(self.filler.iter().cycle().take(rest));
    }

    fn verified_size(&self, id: u64) -> usize {
        let span = (self.data.max - self.data.min) as u64 + 1;
        let size = self.data.min + (splitmix64(id) % span) as usize;
        size.max(VERIFIED_MIN_SIZE)
    }
}

/// How key numbers become key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyLayout {
    /// `PREFIXn`.
    Plain,
    /// `PREFIX{t}:n` with `t = n / per_tag`: runs of `per_tag`
    /// consecutive numbers share a hash tag, so a cluster keeps each run
    /// in one slot.
    Tagged {
        /// Keys per tag (at least 1).
        per_tag: u64,
    },
}

impl KeyLayout {
    /// The tagged layout of `keys` keys cut into at most `tags` runs of
    /// equal length (the last may be shorter).
    pub fn tagged(keys: u64, tags: u64) -> KeyLayout {
        KeyLayout::Tagged {
            per_tag: keys.div_ceil(tags.clamp(1, keys.max(1))).max(1),
        }
    }
}

/// The smallest value a verified write carries (its id needs 15 bytes).
pub const VERIFIED_MIN_SIZE: usize = 15;

fn custom_ops(commands: &[CommandTemplate]) -> Vec<OpSpec> {
    let mut ops: Vec<OpSpec> = Vec::new();
    for c in commands {
        let name = c.name();
        let same = ops
            .iter()
            .filter(|o| o.label.split(" #").next() == Some(name.as_str()))
            .count();
        let label = if same == 0 {
            name
        } else {
            format!("{name} #{}", same + 1)
        };
        ops.push(OpSpec {
            label,
            args: c.args.clone(),
            weight: 1,
            verified_set: false,
        });
    }
    ops
}

/// A fast, well-mixed hash of a 64-bit number (splitmix64's finaliser).
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The write id carried by a verified value (see
/// [`Plan::verified_value`]), if it is one.
pub fn id_of_value(value: &[u8]) -> Option<u64> {
    let hex = value.get(..14)?;
    if value.get(14) != Some(&b':') {
        return None;
    }
    let hex = std::str::from_utf8(hex).ok()?;
    u64::from_str_radix(hex, 16).ok()
}

/// A 16-bit number that tells this run's writes from earlier runs' (the
/// key space may hold values an earlier run wrote).
fn run_nonce() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    (splitmix64(nanos ^ u64::from(std::process::id())) >> 48) as u16
}

/// The last acknowledged write of every key, shared by the cores.
///
/// One word per key: the id of the last acknowledged write (0: none yet),
/// a lock bit held while a write to the key is in flight (so that writes
/// to one key never overlap and "last acknowledged" is well defined), and
/// an "unknown" bit set when a write's outcome is unknown (it timed out
/// after being sent, or its connection died), cleared by the next
/// acknowledged write.
///
/// A write id is the run's nonce (16 bits) above the key's version (40
/// bits): the key's writes are numbered 1, 2, 3, ... in the order they
/// were sent (they never overlap), so the version in a value read back
/// tells how old it is. A write whose outcome is unknown keeps its number
/// (the word holds its id with the unknown bit), so numbers never repeat.
#[derive(Debug)]
pub struct WriteTable {
    words: Vec<AtomicU64>,
    nonce: u64,
    /// Optionally, when each key's last acknowledged write was
    /// acknowledged, ns since `base`.
    ack_times: Option<(std::time::Instant, Vec<AtomicU64>)>,
}

const LOCK: u64 = 1 << 63;
const UNKNOWN: u64 = 1 << 62;
const ID_MASK: u64 = (1 << 56) - 1;
const VERSION_BITS: u32 = 40;
const VERSION_MASK: u64 = (1 << VERSION_BITS) - 1;

/// What the table knows about one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// No write was acknowledged, and none has an unknown outcome.
    Unwritten,
    /// The last acknowledged write, and nothing after it in doubt.
    Written(u64),
    /// A write's outcome is unknown (or still in flight): either value may
    /// be there.
    Unknown,
}

impl WriteTable {
    /// A table for `keys` keys, for the run `nonce`.
    pub fn new(keys: u64, nonce: u16) -> WriteTable {
        WriteTable {
            words: (0..keys).map(|_| AtomicU64::new(0)).collect(),
            nonce: u64::from(nonce),
            ack_times: None,
        }
    }

    /// The table, also keeping when each key's last write was
    /// acknowledged ([`WriteTable::acknowledged_at`]).
    pub fn with_ack_times(mut self) -> WriteTable {
        let times = self.words.iter().map(|_| AtomicU64::new(0)).collect();
        self.ack_times = Some((std::time::Instant::now(), times));
        self
    }

    /// When the last acknowledged write of `key` was acknowledged (as far
    /// as the table keeps it; read after [`WriteTable::acknowledged_version`],
    /// it is that write's time or a later one's).
    pub fn acknowledged_at(&self, key: u64) -> Option<std::time::Instant> {
        let (base, times) = self.ack_times.as_ref()?;
        let ns = times[key as usize].load(Ordering::Acquire);
        Some(*base + std::time::Duration::from_nanos(ns))
    }

    /// Takes the key for a write: the id of the write (the key's next
    /// version); `None` when another write to it is in flight.
    pub fn try_lock(&self, key: u64) -> Option<u64> {
        let w = &self.words[key as usize];
        let cur = w.load(Ordering::Relaxed);
        if cur & LOCK != 0 {
            return None;
        }
        w.compare_exchange(cur, cur | LOCK, Ordering::Acquire, Ordering::Relaxed)
            .ok()?;
        let version = (cur & VERSION_MASK) + 1;
        Some(self.nonce << VERSION_BITS | (version & VERSION_MASK))
    }

    /// The write `id` to `key` was acknowledged; releases the key.
    pub fn acknowledged(&self, key: u64, id: u64) {
        if let Some((base, times)) = &self.ack_times {
            let ns = u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX);
            times[key as usize].store(ns, Ordering::Release);
        }
        self.words[key as usize].store(id, Ordering::Release);
    }

    /// The write `id` to `key` failed: `maybe_applied` when it may have
    /// reached the server. Releases the key.
    pub fn failed(&self, key: u64, id: u64, maybe_applied: bool) {
        let w = &self.words[key as usize];
        let cur = w.load(Ordering::Relaxed);
        let next = if maybe_applied {
            id | UNKNOWN
        } else {
            cur & !LOCK
        };
        w.store(next, Ordering::Release);
    }

    /// The number of keys.
    pub fn len(&self) -> u64 {
        self.words.len() as u64
    }

    /// What is known about `key`.
    pub fn state(&self, key: u64) -> KeyState {
        let w = self.words[key as usize].load(Ordering::Acquire);
        if w & (LOCK | UNKNOWN) != 0 {
            KeyState::Unknown
        } else if w & ID_MASK == 0 {
            KeyState::Unwritten
        } else {
            KeyState::Written(w & ID_MASK)
        }
    }

    /// The version of the last acknowledged write of `key` (0: none), even
    /// while another write to it is in flight; `None` when a write's
    /// outcome is unknown.
    pub fn acknowledged_version(&self, key: u64) -> Option<u64> {
        let w = self.words[key as usize].load(Ordering::Acquire);
        (w & UNKNOWN == 0).then_some(w & VERSION_MASK)
    }

    /// The version of the write `id`: 0 when it is not one of this run's
    /// (an earlier run wrote it: older than any write of this one).
    pub fn version_of(&self, id: u64) -> u64 {
        if id >> VERSION_BITS == self.nonce {
            id & VERSION_MASK
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn plan(args: &[&str]) -> Plan {
        let cli = Cli::try_parse_from(
            ["redcore-load", "--server", "redis://x"]
                .into_iter()
                .chain(args.iter().copied()),
        )
        .unwrap();
        Plan::new(&cli, 2, false)
    }

    const ID1: u64 = 7 << VERSION_BITS | 1;

    #[test]
    fn ops_by_weight() {
        let p = plan(&["--ratio", "1:3"]);
        assert_eq!(p.total_weight(), 4);
        let picks: Vec<usize> = (0..4).map(|d| p.pick_op(d)).collect();
        assert_eq!(picks, [0, 1, 1, 1]);
        let p = plan(&["--ratio", "0:1"]);
        assert_eq!(p.total_weight(), 1);
        assert_eq!(p.pick_op(0), 1);
        let p = plan(&[
            "--command",
            "HSET h __key__ f __data__",
            "--command",
            "hset x __key__ y 1",
            "--command",
            "PING",
        ]);
        let labels: Vec<&str> = p.ops.iter().map(|o| o.label.as_str()).collect();
        assert_eq!(labels, ["HSET", "HSET #2", "PING"]);
        assert_eq!((0..3).map(|d| p.pick_op(d)).collect::<Vec<_>>(), [0, 1, 2]);
    }

    #[test]
    fn keys_and_values() {
        let p = plan(&["--key-prefix", "k/", "--data-size", "20-40", "--verify"]);
        let mut out = Vec::new();
        p.key(1234, &mut out);
        assert_eq!(out, b"k/1234");
        let mut a = Vec::new();
        let mut b = Vec::new();
        p.verified_value(ID1, &mut a);
        p.verified_value(ID1, &mut b);
        assert_eq!(a, b);
        assert!((20..=40).contains(&a.len()));
        assert_eq!(id_of_value(&a), Some(ID1));
        p.verified_value(ID1 + 1, &mut b);
        assert_ne!(a, b);
        let small = plan(&["--data-size", "3", "--verify"]);
        small.verified_value(ID1, &mut a);
        assert_eq!(a.len(), VERIFIED_MIN_SIZE);
        assert_eq!(id_of_value(&a), Some(ID1));
        assert_eq!(id_of_value(b"0000000000000g:x"), None);
        assert_eq!(id_of_value(b"00000000000001x"), None);
        assert_eq!(id_of_value(b"short"), None);
    }

    #[test]
    fn tagged_keys() {
        let p = plan(&["--keys", "100000", "--key-layout", "tagged"]);
        assert_eq!(p.layout, KeyLayout::Tagged { per_tag: 98 });
        let mut out = Vec::new();
        p.key(0, &mut out);
        assert_eq!(out, b"key:{0}:0");
        p.key(12345, &mut out);
        assert_eq!(out, b"key:{125}:12345");
        assert_eq!(p.tag_run(12345), Some(12250..12348));
        // The last run is shorter: 100000 = 1020 * 98 + 40.
        assert_eq!(p.tag_run(99_999), Some(99_960..100_000));
        let p = plan(&["--keys", "10", "--key-layout", "tagged", "--key-tags", "3"]);
        assert_eq!(p.layout, KeyLayout::Tagged { per_tag: 4 });
        assert_eq!(p.tag_run(9), Some(8..10));
        // More tags than keys: a tag per key.
        let p = plan(&["--keys", "5", "--key-layout", "tagged", "--key-tags", "100"]);
        assert_eq!(p.tag_run(3), Some(3..4));
        let p = plan(&["--keys", "5"]);
        assert_eq!(p.tag_run(3), None);
        p.key(3, &mut out);
        assert_eq!(out, b"key:3");
    }

    #[test]
    fn write_table() {
        let t = WriteTable::new(4, 7);
        assert_eq!(t.state(0), KeyState::Unwritten);
        assert_eq!(t.acknowledged_version(0), Some(0));
        let first = t.try_lock(0).unwrap();
        assert_eq!(first, ID1);
        assert_eq!(t.try_lock(0), None);
        assert_eq!(t.state(0), KeyState::Unknown);
        // In flight: the last acknowledged version is still known.
        assert_eq!(t.acknowledged_version(0), Some(0));
        t.acknowledged(0, first);
        assert_eq!(t.state(0), KeyState::Written(ID1));
        assert_eq!(t.acknowledged_version(0), Some(1));
        let second = t.try_lock(0).unwrap();
        assert_eq!(t.version_of(second), 2);
        t.failed(0, second, false);
        assert_eq!(t.state(0), KeyState::Written(ID1));
        // Not applied: the number is used again.
        let again = t.try_lock(0).unwrap();
        assert_eq!(again, second);
        t.failed(0, again, true);
        assert_eq!(t.state(0), KeyState::Unknown);
        assert_eq!(t.acknowledged_version(0), None);
        // Maybe applied: the number is not used again.
        let third = t.try_lock(0).unwrap();
        assert_eq!(t.version_of(third), 3);
        t.acknowledged(0, third);
        assert_eq!(t.state(0), KeyState::Written(third));
        assert_eq!(t.acknowledged_version(0), Some(3));
        // Another run's write is older than any of this run's.
        assert_eq!(t.version_of(8 << VERSION_BITS | 9), 0);
    }
}
