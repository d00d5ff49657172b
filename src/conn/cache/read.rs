//! The read-through path every client runs: look the read up; on a miss,
//! lead a request (or join the one in flight) that sends `CLIENT CACHING
//! YES`, the read and `PTTL key` in one round trip, and store the reply
//! unless something voided it meanwhile.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::Cache;
use super::flight::{Begin, Fetched, Lead};
use super::store::{TrackerId, form_of};
use crate::cmd::{Args, Cmd, cmd};
use crate::config::TrackingMode;
use crate::resp::Arg;
use crate::{Error, Value};

/// Milliseconds of `CLOCK_MONOTONIC_COARSE`: a read of the kernel's
/// last tick, no system call and no counter read (a few ns).
#[inline]
pub(crate) fn now_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// The coarse clock's resolution, rounded up to whole ms, plus one.
pub(crate) fn clock_resolution_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write into.
    unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    (ts.tv_sec as u64 * 1000 + (ts.tv_nsec as u64).div_ceil(1_000_000)) + 1
}

/// The index of `read`'s key when it can be cached: a command that only
/// reads, does not block, and has exactly one key.
#[inline]
pub(crate) fn cacheable(read: &impl Args) -> Result<usize, Error> {
    // The typed helpers' reads, told apart by length first: key at 1.
    let argc = read.arg_count();
    let known = read.with_arg(0, |n| match n.len() {
        3 => argc == 2 && n.eq_ignore_ascii_case(b"GET"),
        4 => argc == 3 && n.eq_ignore_ascii_case(b"HGET"),
        5 => argc >= 3 && n.eq_ignore_ascii_case(b"HMGET"),
        6 => argc == 2 && (n.eq_ignore_ascii_case(b"STRLEN") || n.eq_ignore_ascii_case(b"EXISTS")),
        7 => argc == 2 && n.eq_ignore_ascii_case(b"HGETALL"),
        8 => argc == 2 && n.eq_ignore_ascii_case(b"SMEMBERS"),
        _ => false,
    });
    if known == Some(true) {
        return Ok(1);
    }
    cacheable_slow(read)
}

/// [`cacheable`] for any other command.
#[cold]
fn cacheable_slow(read: &impl Args) -> Result<usize, Error> {
    let refuse = |reason| Error::Unsupported {
        command: read
            .with_arg(0, |a| String::from_utf8_lossy(a).into_owned())
            .unwrap_or_default(),
        reason,
    };
    let allowed = read
        .with_arg(0, |n| {
            let mut upper = [0u8; 24];
            let name = upper.get_mut(..n.len()).map(|u| {
                u.copy_from_slice(n);
                u.make_ascii_uppercase();
                &*u
            });
            name.is_some_and(cacheable_name)
        })
        .unwrap_or(false);
    if !allowed {
        return Err(refuse(
            "not a cacheable read: a read whose reply depends only on its key's value (see CacheCommands::cached)",
        ));
    }
    let positions = crate::cmd::key_positions(read)?;
    let mut keys = positions.iter();
    match (keys.next(), keys.next()) {
        (Some(at), None) => Ok(at),
        _ => Err(refuse(
            "only single-key reads can be cached (cached_mget for several keys)",
        )),
    }
}

/// Reads whose reply depends only on the value of their one key, so that
/// an invalidation of the key is all that can change it. Not: `TTL`/`PTTL`
/// (change with time), `SRANDMEMBER`/`HRANDFIELD`/`ZRANDMEMBER` (random),
/// `SORT_RO` (may read other keys), `EVAL_RO`/`FCALL_RO` (may read
/// anything), `TOUCH` (its effect is the point), blocking reads.
fn cacheable_name(name: &[u8]) -> bool {
    matches!(
        name,
        b"GET"
            | b"GETRANGE"
            | b"SUBSTR"
            | b"STRLEN"
            | b"GETBIT"
            | b"BITCOUNT"
            | b"BITPOS"
            | b"BITFIELD_RO"
            | b"EXISTS"
            | b"TYPE"
            | b"HGET"
            | b"HMGET"
            | b"HGETALL"
            | b"HKEYS"
            | b"HVALS"
            | b"HLEN"
            | b"HEXISTS"
            | b"HSTRLEN"
            | b"LRANGE"
            | b"LLEN"
            | b"LINDEX"
            | b"LPOS"
            | b"SMEMBERS"
            | b"SISMEMBER"
            | b"SMISMEMBER"
            | b"SCARD"
            | b"ZRANGE"
            | b"ZRANGEBYSCORE"
            | b"ZRANGEBYLEX"
            | b"ZREVRANGE"
            | b"ZREVRANGEBYSCORE"
            | b"ZREVRANGEBYLEX"
            | b"ZSCORE"
            | b"ZMSCORE"
            | b"ZCARD"
            | b"ZCOUNT"
            | b"ZLEXCOUNT"
            | b"ZRANK"
            | b"ZREVRANK"
            | b"XRANGE"
            | b"XREVRANGE"
            | b"XLEN"
            | b"GEOPOS"
            | b"GEODIST"
            | b"GEOHASH"
    )
}

/// The error a client without a cache answers cached reads with.
pub(crate) fn caching_off(read: &impl Args) -> Error {
    Error::Unsupported {
        command: read
            .with_arg(0, |a| String::from_utf8_lossy(a).into_owned())
            .unwrap_or_default(),
        reason: "client-side caching is off: set ConnectionConfig::cache (a cluster's node template)",
    }
}

fn opt_in(cache: &Cache) -> bool {
    matches!(cache.options().mode, TrackingMode::OptIn)
}

fn shape_error(detail: &'static str) -> Error {
    crate::error::ConversionError {
        found: "pipeline replies",
        target: "a cached read",
        detail: Some(detail),
    }
    .into()
}

/// The commands of a tracked miss of `read` (key at `key_index`):
/// `CLIENT CACHING YES` in OPTIN mode, the read, `PTTL key`.
pub(crate) fn tracked_read(cache: &Cache, read: &impl Args, key_index: usize) -> Vec<Cmd> {
    let mut cmds = Vec::with_capacity(3);
    if opt_in(cache) {
        cmds.push(cmd("CLIENT").arg("CACHING").arg("YES"));
    }
    cmds.push(crate::conn::to_cmd(read));
    let key = read
        .with_arg(key_index, Bytes::copy_from_slice)
        .unwrap_or_default();
    cmds.push(cmd("PTTL").arg(key));
    cmds
}

/// Reads the replies of [`tracked_read`]'s pipeline; a server error
/// answering the read is `Err(Error::Server)` (a cluster follows it).
pub(crate) fn fetched(
    cache: &Cache,
    mut replies: Vec<Value>,
    tracked: Option<(TrackerId, u32)>,
) -> Result<Fetched, Error> {
    let first = usize::from(opt_in(cache));
    if replies.len() != first + 2 {
        return Err(shape_error(
            "a tracked read's pipeline got the wrong number of replies",
        ));
    }
    let pttl = match replies.pop() {
        Some(Value::Integer(n)) => Some(n),
        _ => None,
    };
    let value = replies.pop().expect("checked length");
    if let Value::Error(e) = value {
        return Err(Error::Server(e));
    }
    // A refused `CLIENT CACHING YES` means the read was not tracked.
    let tracked = match replies.first() {
        Some(Value::Error(_)) => None,
        _ => tracked,
    };
    Ok(Fetched {
        value,
        pttl,
        tracked,
    })
}

/// The commands of a tracked miss of several string keys: `CLIENT CACHING
/// YES` in OPTIN mode, `MGET keys...`, `PTTL key` for each.
pub(crate) fn tracked_mget(cache: &Cache, keys: &[Bytes]) -> Vec<Cmd> {
    let mut cmds = Vec::with_capacity(keys.len() + 2);
    if opt_in(cache) {
        cmds.push(cmd("CLIENT").arg("CACHING").arg("YES"));
    }
    let mut mget = cmd("MGET");
    for k in keys {
        mget.push_arg(k);
    }
    cmds.push(mget);
    cmds.extend(keys.iter().map(|k| cmd("PTTL").arg(k)));
    cmds
}

/// Reads the replies of [`tracked_mget`]'s pipeline, one per key.
pub(crate) fn fetched_mget(
    cache: &Cache,
    replies: Vec<Value>,
    keys: usize,
    tracked: Option<(TrackerId, u32)>,
) -> Result<Vec<Fetched>, Error> {
    let first = usize::from(opt_in(cache));
    if replies.len() != first + 1 + keys {
        return Err(shape_error(
            "a tracked MGET's pipeline got the wrong number of replies",
        ));
    }
    let tracked = match replies.first() {
        Some(Value::Error(_)) if first == 1 => None,
        _ => tracked,
    };
    let mut it = replies.into_iter().skip(first);
    let values = match it.next() {
        Some(Value::Error(e)) => return Err(Error::Server(e)),
        Some(Value::Array(values)) if values.len() == keys => values,
        _ => {
            return Err(shape_error(
                "MGET answered with something else than one value per key",
            ));
        }
    };
    Ok(values
        .into_iter()
        .zip(it)
        .map(|(value, pttl)| Fetched {
            pttl: match pttl {
                Value::Integer(n) => Some(n),
                _ => None,
            },
            // Stored as the key's `GET` (a nil too: `MGET` also answers
            // nil for a key of another type, where `GET` would answer
            // WRONGTYPE; documented on `cached_mget`).
            tracked,
            value,
        })
        .collect())
}

/// After `read` (key at `key_index`, in `slot()`, hashed here) missed in
/// `cache` ([`Cache::lookup`], which callers ask first, outside this
/// future): fetches it with `fetch`, once per core however many callers
/// miss it together, and stores the reply for at most `ttl`. Callers that
/// join another's request give up after `timeout`.
pub(crate) async fn read_through<A: Args>(
    cache: &Rc<Cache>,
    read: &A,
    key_index: usize,
    slot: impl Fn() -> u16,
    ttl: Duration,
    timeout: Duration,
    fetch: impl AsyncFn() -> Result<Fetched, Error>,
) -> Result<Value, Error> {
    let form = form_of(read, key_index);
    let slot = slot();
    let deadline = Instant::now() + timeout;
    loop {
        let begin = read
            .with_arg(key_index, |key| cache.begin(key, &form, slot))
            .expect("the key is there");
        match begin {
            Begin::Lead(lead) => return lead.finish(fetch().await, ttl),
            Begin::Join(flight) => {
                if let Some(outcome) = flight.wait(deadline).await {
                    return outcome;
                }
                // The leader was cancelled: look again, maybe lead.
                if let Some(v) = cache.lookup(read, key_index) {
                    return Ok(v);
                }
            }
        }
    }
}

/// `MGET` through the cache: each key looked up as a `GET`; the misses
/// fetched together, one request per group (`group_of` a key: its slot on
/// a cluster, 0 on a connection), the groups side by side; each reply
/// stored as its key's `GET`.
pub(crate) async fn mget_through<K: Arg>(
    cache: &Rc<Cache>,
    keys: &[K],
    ttl: Duration,
    timeout: Duration,
    group_of: impl Fn(&[u8]) -> u16,
    fetch: impl AsyncFn(u16, Vec<Bytes>) -> Result<Vec<Fetched>, Error>,
) -> Result<Vec<Value>, Error> {
    let deadline = Instant::now() + timeout;
    let mut out: Vec<Option<Value>> = Vec::with_capacity(keys.len());
    // Per group: the keys this call leads (place in the reply, key, lead).
    type Group = (u16, Vec<(usize, Bytes, Lead)>);
    let mut leads: Vec<Group> = Vec::new();
    let mut joins = Vec::new();
    let mut get_form: Option<Box<[u8]>> = None;
    for (i, key) in keys.iter().enumerate() {
        if let Some(v) = key.with_bytes(|k| cache.lookup(&[&b"GET"[..], k], 1)) {
            out.push(Some(v));
            continue;
        }
        out.push(None);
        let key = key.with_bytes(Bytes::copy_from_slice);
        let form = get_form.get_or_insert_with(|| form_of(&["GET", ""], 1));
        let group = group_of(&key);
        match cache.begin(&key, form, group) {
            Begin::Lead(lead) => match leads.iter_mut().find(|(g, _)| *g == group) {
                Some((_, l)) => l.push((i, key, lead)),
                None => leads.push((group, vec![(i, key, lead)])),
            },
            Begin::Join(flight) => joins.push((i, key, flight)),
        }
    }
    let outcomes = crate::join::join_all(leads.iter().map(|(group, l)| {
        let keys: Vec<Bytes> = l.iter().map(|(_, k, _)| k.clone()).collect();
        fetch(*group, keys)
    }))
    .await;
    let mut failed = None;
    for ((_, l), outcome) in leads.into_iter().zip(outcomes) {
        match outcome {
            Ok(fetched) => {
                for ((i, _, lead), f) in l.into_iter().zip(fetched) {
                    out[i] = Some(lead.finish(Ok(f), ttl)?);
                }
            }
            Err(e) => {
                for (_, _, lead) in l {
                    let _ = lead.finish(Err(e.clone()), ttl);
                }
                failed = Some(e);
            }
        }
    }
    if let Some(e) = failed {
        return Err(e);
    }
    for (i, key, flight) in joins {
        out[i] = Some(match flight.wait(deadline).await {
            Some(r) => r?,
            None => {
                // Its leader was cancelled: fetch this key on its own.
                let read = [&b"GET"[..], &key[..]];
                if let Some(v) = cache.lookup(&read, 1) {
                    out[i] = Some(v);
                    continue;
                }
                let group = group_of(&key);
                let left = deadline.saturating_duration_since(Instant::now());
                read_through(
                    cache,
                    &read,
                    1,
                    || group,
                    ttl,
                    left,
                    async || {
                        fetch(group, vec![key.clone()])
                            .await?
                            .pop()
                            .ok_or(Error::ConnectionLost)
                    },
                )
                .await?
            }
        });
    }
    Ok(out
        .into_iter()
        .map(|v| v.expect("every key answered"))
        .collect())
}
