//! Which arguments of a command are keys, and so which slot it belongs to.
//!
//! The table covers the commands of Redis 7 whose key layout is not simply
//! "the first argument": multi-key commands, `numkeys` commands, `STREAMS`,
//! trailing timeouts, subcommands with a key, and the keyless commands.
//! A command it does not know is taken to have its key first, when it has
//! arguments at all, which is the layout of most commands (module commands
//! included); send such a command to an explicit node if that is wrong.

use super::Args;
use crate::error::Error;
use crate::slot::key_slot;

/// Where a command must go in a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// The command touches no key. A cluster client sends it to one
    /// master, or to every master or node when its policy says so
    /// ([`policy`](super::policy): `DBSIZE`, `SCRIPT LOAD`, ...).
    Keyless,
    /// Every key of the command is in this slot.
    Slot(u16),
}

/// The positions of a command's keys: up to two runs of `start..end` taken
/// every `step` arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyPositions {
    runs: [(usize, usize, usize); 2],
}

impl KeyPositions {
    const NONE: KeyPositions = KeyPositions {
        runs: [(0, 0, 1); 2],
    };

    fn range(start: usize, end: usize, step: usize) -> KeyPositions {
        KeyPositions {
            runs: [(start, end.max(start), step), (0, 0, 1)],
        }
    }

    fn single(index: usize) -> KeyPositions {
        KeyPositions::range(index, index + 1, 1)
    }

    /// The argument indices that are keys, in order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        // Not `step_by`: it divides to know its length, which costs more
        // than routing the usual one-key command does otherwise.
        self.runs.iter().flat_map(|&(start, end, step)| {
            let mut next = start;
            std::iter::from_fn(move || {
                let index = next;
                next += step;
                (index < end).then_some(index)
            })
        })
    }

    /// True when the command has no key.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }
}

/// The longest command name the table knows (`GEORADIUSBYMEMBER_RO`).
const MAX_NAME: usize = 24;

/// Calls `f` with argument `index` in upper case: the argument itself when
/// it has no lower-case letter (the usual spelling, and no copy), else an
/// upper-cased copy on the stack. An argument longer than any name the
/// tables know is given as it is, and so matches none. `None` when the
/// argument is missing.
fn with_name<R>(args: &impl Args, index: usize, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
    args.with_arg(index, |arg| {
        let mut upper = [0u8; MAX_NAME];
        match upper.get_mut(..arg.len()) {
            Some(upper) if arg.iter().any(u8::is_ascii_lowercase) => {
                upper.copy_from_slice(arg);
                upper.make_ascii_uppercase();
                f(upper)
            }
            _ => f(arg),
        }
    })
}

/// Whether argument `index` is `word` (upper case), in any case.
fn arg_is(args: &impl Args, index: usize, word: &[u8]) -> bool {
    args.with_arg(index, |a| a.eq_ignore_ascii_case(word)) == Some(true)
}

fn malformed(args: &impl Args, reason: &'static str) -> Error {
    Error::MalformedCommand {
        command: args
            .with_arg(0, |a| String::from_utf8_lossy(a).into_owned())
            .unwrap_or_default(),
        reason,
    }
}

/// Reads a `numkeys` argument and checks that that many keys follow it.
fn numkeys(args: &impl Args, index: usize) -> Result<usize, Error> {
    let n = args
        .with_arg(index, |a| {
            std::str::from_utf8(a).ok()?.parse::<usize>().ok()
        })
        .flatten()
        .ok_or_else(|| malformed(args, "numkeys is missing or not a number"))?;
    if index + 1 + n > args.arg_count() {
        return Err(malformed(
            args,
            "numkeys is larger than the number of keys given",
        ));
    }
    Ok(n)
}

/// The positions of the keys of a command.
pub fn key_positions(args: &impl Args) -> Result<KeyPositions, Error> {
    let argc = args.arg_count();
    if argc == 0 {
        return Ok(KeyPositions::NONE);
    }
    with_name(args, 0, |name| positions_of(name, args, argc)).unwrap_or(Ok(KeyPositions::NONE))
}

/// [`key_positions`] of a command named `name` (upper case).
fn positions_of(name: &[u8], args: &impl Args, argc: usize) -> Result<KeyPositions, Error> {
    let positions = match name {
        // Keyless: server, connection, cluster, scripting admin, pub/sub.
        b"PING" | b"ECHO" | b"INFO" | b"AUTH" | b"HELLO" | b"SELECT" | b"QUIT" | b"RESET"
        | b"CLIENT" | b"CLUSTER" | b"CONFIG" | b"COMMAND" | b"DBSIZE" | b"FLUSHALL"
        | b"FLUSHDB" | b"SCAN" | b"KEYS" | b"RANDOMKEY" | b"TIME" | b"LASTSAVE" | b"SAVE"
        | b"BGSAVE" | b"BGREWRITEAOF" | b"SHUTDOWN" | b"DEBUG" | b"SLOWLOG" | b"LATENCY"
        | b"MULTI" | b"EXEC" | b"DISCARD" | b"UNWATCH" | b"SCRIPT" | b"FUNCTION" | b"PUBLISH"
        | b"SUBSCRIBE" | b"UNSUBSCRIBE" | b"PSUBSCRIBE" | b"PUNSUBSCRIBE" | b"PUBSUB" | b"WAIT"
        | b"WAITAOF" | b"READONLY" | b"READWRITE" | b"ASKING" | b"ROLE" | b"LOLWUT" | b"ACL"
        | b"MODULE" | b"MONITOR" | b"SWAPDB" | b"FAILOVER" | b"REPLICAOF" | b"SLAVEOF"
        | b"SYNC" | b"PSYNC" | b"REPLCONF" => KeyPositions::NONE,
        // Every argument is a key.
        b"DEL" | b"UNLINK" | b"EXISTS" | b"TOUCH" | b"WATCH" | b"MGET" | b"SUNION" | b"SINTER"
        | b"SDIFF" | b"SUNIONSTORE" | b"SINTERSTORE" | b"SDIFFSTORE" | b"PFCOUNT" | b"PFMERGE"
        | b"SSUBSCRIBE" | b"SUNSUBSCRIBE" => KeyPositions::range(1, argc, 1),
        // Two keys, then other arguments.
        b"SMOVE" | b"LMOVE" | b"BLMOVE" | b"RENAME" | b"RENAMENX" | b"RPOPLPUSH"
        | b"BRPOPLPUSH" | b"COPY" | b"LCS" | b"GEOSEARCHSTORE" | b"ZRANGESTORE" => {
            KeyPositions::range(1, argc.min(3), 1)
        }
        b"SPUBLISH" => KeyPositions::single(1),
        // Key, value, key, value...
        b"MSET" | b"MSETNX" => KeyPositions::range(1, argc, 2),
        // Keys, then a timeout.
        b"BLPOP" | b"BRPOP" | b"BZPOPMIN" | b"BZPOPMAX" => {
            KeyPositions::range(1, argc.saturating_sub(1), 1)
        }
        // numkeys first.
        b"ZUNION" | b"ZINTER" | b"ZDIFF" | b"ZINTERCARD" | b"SINTERCARD" | b"LMPOP" | b"ZMPOP" => {
            let n = numkeys(args, 1)?;
            KeyPositions::range(2, 2 + n, 1)
        }
        // Something, then numkeys: scripts and functions, blocking pops.
        b"EVAL" | b"EVALSHA" | b"EVAL_RO" | b"EVALSHA_RO" | b"FCALL" | b"FCALL_RO" | b"BLMPOP"
        | b"BZMPOP" => {
            let n = numkeys(args, 2)?;
            KeyPositions::range(3, 3 + n, 1)
        }
        // A destination key, then numkeys source keys.
        b"ZUNIONSTORE" | b"ZINTERSTORE" | b"ZDIFFSTORE" => {
            let n = numkeys(args, 2)?;
            KeyPositions {
                runs: [(1, 2, 1), (3, 3 + n, 1)],
            }
        }
        b"XREAD" | b"XREADGROUP" => streams_keys(args)?,
        // Subcommands with a key as their second argument.
        b"OBJECT" | b"XINFO" | b"XGROUP" => {
            if argc > 2 && !arg_is(args, 1, b"HELP") {
                KeyPositions::single(2)
            } else {
                KeyPositions::NONE
            }
        }
        b"MEMORY" => {
            if argc > 2 && arg_is(args, 1, b"USAGE") {
                KeyPositions::single(2)
            } else {
                KeyPositions::NONE
            }
        }
        b"MIGRATE" => migrate_keys(args)?,
        // An operation, a destination, then source keys.
        b"BITOP" => KeyPositions::range(2, argc, 1),
        // A key, and a destination after STORE.
        b"SORT" | b"SORT_RO" => with_store(
            args,
            2,
            &[(b"BY", 1), (b"GET", 1), (b"LIMIT", 2)],
            &[b"STORE"],
        ),
        b"GEORADIUS" | b"GEORADIUS_RO" => {
            with_store(args, 6, &[(b"COUNT", 1)], &[b"STORE", b"STOREDIST"])
        }
        b"GEORADIUSBYMEMBER" | b"GEORADIUSBYMEMBER_RO" => {
            with_store(args, 5, &[(b"COUNT", 1)], &[b"STORE", b"STOREDIST"])
        }
        // Most commands: the key comes first.
        _ if argc > 1 => KeyPositions::single(1),
        _ => KeyPositions::NONE,
    };
    Ok(positions)
}

/// Whether the command only reads (Redis marks it `readonly`, or it is a
/// keyless query such as `PING`): sending it twice cannot change anything,
/// so a cluster client may send it again after its connection was lost in
/// flight. Unknown commands (module commands included) are taken to write.
pub fn is_read_only(args: &impl Args) -> bool {
    with_name(args, 0, read_only_name).unwrap_or(false)
}

/// Whether the server holds the command's reply back on purpose until
/// something happens or a timeout of the command's own passes: `BLPOP`,
/// `BRPOP`, `BLMOVE`, `BLMPOP`, `BRPOPLPUSH`, `BZPOPMIN`, `BZPOPMAX`,
/// `BZMPOP`, `WAIT`, `WAITAOF`, and `XREAD`/`XREADGROUP` with `BLOCK`. A
/// connection's health check never takes the wait for such a reply (nor
/// for the replies queued behind it) for a silent server. Cheap for other
/// commands: most are told apart by their first letter.
pub fn is_blocking(args: &impl Args) -> bool {
    let maybe = args.with_arg(0, |a| {
        matches!(a.first(), Some(b'B' | b'b' | b'W' | b'w' | b'X' | b'x'))
    });
    if maybe != Some(true) {
        return false;
    }
    with_name(args, 0, |name| match name {
        b"BLPOP" | b"BRPOP" | b"BRPOPLPUSH" | b"BLMOVE" | b"BLMPOP" | b"BZPOPMIN" | b"BZPOPMAX"
        | b"BZMPOP" | b"WAIT" | b"WAITAOF" => true,
        b"XREAD" | b"XREADGROUP" => (1..args.arg_count())
            .take_while(|&i| !arg_is(args, i, b"STREAMS"))
            .any(|i| arg_is(args, i, b"BLOCK")),
        _ => false,
    })
    .unwrap_or(false)
}

/// [`is_read_only`] of a command named `name` (upper case).
fn read_only_name(name: &[u8]) -> bool {
    match name {
        // Strings and bits.
        b"GET" | b"MGET" | b"GETRANGE" | b"SUBSTR" | b"STRLEN" | b"GETBIT" | b"BITCOUNT"
        | b"BITPOS" | b"BITFIELD_RO" | b"LCS"
        // Keys.
        | b"EXISTS" | b"TYPE" | b"TTL" | b"PTTL" | b"EXPIRETIME" | b"PEXPIRETIME" | b"DUMP"
        | b"TOUCH" | b"SORT_RO"
        // Hashes.
        | b"HGET" | b"HMGET" | b"HGETALL" | b"HKEYS" | b"HVALS" | b"HLEN" | b"HEXISTS"
        | b"HSTRLEN" | b"HRANDFIELD" | b"HSCAN"
        // Lists.
        | b"LRANGE" | b"LINDEX" | b"LLEN" | b"LPOS"
        // Sets.
        | b"SMEMBERS" | b"SISMEMBER" | b"SMISMEMBER" | b"SCARD" | b"SRANDMEMBER" | b"SSCAN"
        | b"SINTER" | b"SUNION" | b"SDIFF" | b"SINTERCARD"
        // Sorted sets.
        | b"ZRANGE" | b"ZRANGEBYSCORE" | b"ZREVRANGEBYSCORE" | b"ZRANGEBYLEX"
        | b"ZREVRANGEBYLEX" | b"ZREVRANGE" | b"ZSCORE" | b"ZMSCORE" | b"ZCARD" | b"ZCOUNT"
        | b"ZLEXCOUNT" | b"ZRANK" | b"ZREVRANK" | b"ZSCAN" | b"ZRANDMEMBER" | b"ZUNION"
        | b"ZINTER" | b"ZDIFF" | b"ZINTERCARD"
        // HyperLogLog, geo, streams.
        | b"PFCOUNT" | b"GEOPOS" | b"GEODIST" | b"GEOHASH" | b"GEOSEARCH" | b"GEORADIUS_RO"
        | b"GEORADIUSBYMEMBER_RO" | b"XRANGE" | b"XREVRANGE" | b"XLEN" | b"XREAD" | b"XPENDING"
        // Read-only scripts and functions.
        | b"EVAL_RO" | b"EVALSHA_RO" | b"FCALL_RO"
        // Keyless queries.
        | b"PING" | b"ECHO" | b"TIME" | b"DBSIZE" | b"RANDOMKEY" | b"KEYS" | b"SCAN"
        | b"INFO" | b"LASTSAVE" | b"ROLE" => true,
        _ => false,
    }
}

/// The index of the first argument from `from` on that equals `word`,
/// skipping the values of the options in `skip` (option, number of values).
fn find_token(
    args: &impl Args,
    from: usize,
    skip: &[(&[u8], usize)],
    words: &[&[u8]],
) -> Option<usize> {
    let mut i = from;
    while i < args.arg_count() {
        let (is_word, values) = args.with_arg(i, |a| {
            let is_word = words.iter().any(|w| a.eq_ignore_ascii_case(w));
            let values = skip
                .iter()
                .find(|(opt, _)| a.eq_ignore_ascii_case(opt))
                .map_or(0, |&(_, n)| n);
            (is_word, values)
        })?;
        if is_word {
            return Some(i);
        }
        i += 1 + values;
    }
    None
}

/// A key at 1, plus the destination key after `STORE`-like options.
fn with_store(
    args: &impl Args,
    from: usize,
    skip: &[(&[u8], usize)],
    store: &[&[u8]],
) -> KeyPositions {
    match find_token(args, from, skip, store) {
        Some(i) if i + 1 < args.arg_count() => KeyPositions {
            runs: [(1, 2, 1), (i + 1, i + 2, 1)],
        },
        _ => KeyPositions::single(1),
    }
}

/// `XREAD [COUNT n] [BLOCK ms] STREAMS k1 k2 id1 id2` and
/// `XREADGROUP GROUP g c ... STREAMS ...`: the first half after `STREAMS`.
fn streams_keys(args: &impl Args) -> Result<KeyPositions, Error> {
    let argc = args.arg_count();
    let skip: &[(&[u8], usize)] = &[(b"COUNT", 1), (b"BLOCK", 1), (b"GROUP", 2)];
    let streams = find_token(args, 1, skip, &[b"STREAMS"])
        .ok_or_else(|| malformed(args, "STREAMS is missing"))?;
    let rest = argc - streams - 1;
    if rest == 0 || rest % 2 != 0 {
        return Err(malformed(args, "STREAMS needs as many ids as keys"));
    }
    Ok(KeyPositions::range(streams + 1, streams + 1 + rest / 2, 1))
}

/// `MIGRATE host port key|"" db timeout [COPY] [REPLACE] [AUTH pw |
/// AUTH2 user pw] [KEYS k1 k2 ...]`.
fn migrate_keys(args: &impl Args) -> Result<KeyPositions, Error> {
    let argc = args.arg_count();
    if args.with_arg(3, <[u8]>::is_empty) == Some(false) {
        return Ok(KeyPositions::single(3));
    }
    match find_token(args, 6, &[(b"AUTH", 1), (b"AUTH2", 2)], &[b"KEYS"]) {
        Some(keys) => Ok(KeyPositions::range(keys + 1, argc, 1)),
        None => Err(malformed(args, "no key and no KEYS")),
    }
}

/// Computes the route of a command: the slot all of its keys share.
pub(super) fn route(args: &impl Args) -> Result<Route, Error> {
    route_of(args, key_positions(args)?)
}

/// Where a cluster client sends a command on its own (or in a
/// pipeline): its [`route`], except that `PUBLISH`, which has no key,
/// goes to its channel's slot. A cluster delivers a message published on
/// one node to subscribers on the others over its bus, so publishes sent
/// to different nodes can reach a subscriber out of order; sent to one
/// node per channel (the one a redcore cluster subscription to the
/// channel also uses) they keep their order, and reach such a subscriber
/// without the bus hop. In a transaction `PUBLISH` stays keyless.
pub(crate) fn send_route(args: &impl Args) -> Result<Route, Error> {
    let positions = key_positions(args)?;
    if positions.is_empty()
        && args.arg_count() >= 2
        && args.with_arg(0, |n| n.eq_ignore_ascii_case(b"PUBLISH")) == Some(true)
    {
        return Ok(args
            .with_arg(1, key_slot)
            .map_or(Route::Keyless, Route::Slot));
    }
    route_of(args, positions)
}

fn route_of(args: &impl Args, positions: KeyPositions) -> Result<Route, Error> {
    let mut route = Route::Keyless;
    for index in positions.iter() {
        let Some(slot) = args.with_arg(index, key_slot) else {
            break;
        };
        match route {
            Route::Keyless => route = Route::Slot(slot),
            Route::Slot(first) if first != slot => {
                return Err(Error::CrossSlot { first, other: slot });
            }
            Route::Slot(_) => {}
        }
    }
    Ok(route)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::cmd;

    #[test]
    fn read_only_commands() {
        for c in [
            &["get", "k"][..],
            &["MGET", "a", "b"],
            &["XREAD", "BLOCK", "0", "STREAMS", "s", "$"],
            &["ping"],
            &["ZRANGE", "z", "0", "-1"],
        ] {
            assert!(is_read_only(&c), "{c:?}");
        }
        for c in [
            &["SET", "k", "v"][..],
            &["INCR", "k"],
            &["XREADGROUP", "GROUP", "g", "c", "STREAMS", "s", ">"],
            &["EVAL", "return 1", "0"],
            &["MODULE.CMD", "k"],
            &["GETDEL", "k"],
            &[],
        ] {
            assert!(!is_read_only(&c), "{c:?}");
        }
    }

    fn keys(args: &[&str]) -> Vec<usize> {
        key_positions(&args).unwrap().iter().collect()
    }

    #[test]
    fn key_layouts() {
        let cases: &[(&[&str], &[usize])] = &[
            (&["GET", "k"], &[1]),
            (&["get", "k"], &[1]),
            (&["SET", "k", "v", "EX", "1"], &[1]),
            (&["PING"], &[]),
            (&["ping", "hello"], &[]),
            (&["INFO", "server"], &[]),
            (&["CLUSTER", "SHARDS"], &[]),
            (&["MGET", "a", "b", "c"], &[1, 2, 3]),
            (&["DEL", "a"], &[1]),
            (&["MSET", "a", "1", "b", "2"], &[1, 3]),
            (&["MSETNX", "a", "1"], &[1]),
            (&["BLPOP", "a", "b", "0"], &[1, 2]),
            (&["BZPOPMIN", "a", "1.5"], &[1]),
            (&["EVAL", "return 1", "2", "a", "b", "arg"], &[3, 4]),
            (&["EVALSHA", "abc", "0", "arg"], &[]),
            (&["FCALL_RO", "f", "1", "a"], &[3]),
            (
                &["ZUNIONSTORE", "d", "2", "a", "b", "WEIGHTS", "1", "2"],
                &[1, 3, 4],
            ),
            (&["ZINTER", "2", "a", "b"], &[2, 3]),
            (&["LMPOP", "2", "a", "b", "LEFT"], &[2, 3]),
            (&["BLMPOP", "0", "1", "a", "LEFT"], &[3]),
            (
                &["XREAD", "COUNT", "2", "STREAMS", "a", "b", "0", "0"],
                &[4, 5],
            ),
            (
                &["XREADGROUP", "GROUP", "g", "c", "streams", "a", ">"],
                &[5],
            ),
            (&["XINFO", "STREAM", "s"], &[2]),
            (&["XINFO", "HELP"], &[]),
            (&["OBJECT", "ENCODING", "k"], &[2]),
            (&["MEMORY", "USAGE", "k"], &[2]),
            (&["MEMORY", "STATS"], &[]),
            // Names and subcommands in any case; a name longer than any
            // known one is an unknown command (key first).
            (&["mGet", "a", "b"], &[1, 2]),
            (&["memory", "usage", "k"], &[2]),
            (&["xinfo", "help", "x"], &[]),
            (&["GEORADIUSBYMEMBER_RO_AND_MORE", "k"], &[1]),
            (&["georadiusbymember_ro_and_more", "k"], &[1]),
            (&["LMOVE", "a", "b", "LEFT", "RIGHT"], &[1, 2]),
            (&["COPY", "a", "b", "REPLACE"], &[1, 2]),
            (&["MIGRATE", "h", "1", "k", "0", "5"], &[3]),
            (
                &["MIGRATE", "h", "1", "", "0", "5", "COPY", "KEYS", "a", "b"],
                &[8, 9],
            ),
            (&["SPUBLISH", "ch", "msg"], &[1]),
            (&["SSUBSCRIBE", "a", "b"], &[1, 2]),
            (&["PUBLISH", "ch", "msg"], &[]),
            (&["MODULE_CMD", "k", "x"], &[1]),
            (&["BITOP", "AND", "d", "a", "b"], &[2, 3, 4]),
            (
                &["SORT", "k", "BY", "w_*", "GET", "o_*", "STORE", "d"],
                &[1, 7],
            ),
            (&["SORT", "k", "GET", "store", "LIMIT", "0", "1"], &[1]),
            (
                &[
                    "GEORADIUS",
                    "k",
                    "0",
                    "0",
                    "10",
                    "km",
                    "COUNT",
                    "3",
                    "STORE",
                    "d",
                ],
                &[1, 9],
            ),
            (
                &["GEORADIUSBYMEMBER", "k", "m", "10", "km", "STOREDIST", "d"],
                &[1, 6],
            ),
            (
                &["XREADGROUP", "GROUP", "streams", "c", "STREAMS", "a", ">"],
                &[5],
            ),
            (
                &["XREADGROUP", "GROUP", "g", "STREAMS", "STREAMS", "a", ">"],
                &[5],
            ),
            (
                &["XREAD", "BLOCK", "0", "COUNT", "5", "STREAMS", "a", "$"],
                &[6],
            ),
            (
                &[
                    "MIGRATE", "h", "1", "", "0", "5", "AUTH", "KEYS", "KEYS", "a",
                ],
                &[9],
            ),
            (
                &[
                    "MIGRATE", "h", "1", "", "0", "5", "AUTH2", "u", "KEYS", "KEYS", "a",
                ],
                &[10],
            ),
            (&["WHATEVER"], &[]),
        ];
        for (args, expected) in cases {
            assert_eq!(keys(args), *expected, "{args:?}");
        }
    }

    #[test]
    fn malformed_layouts() {
        for args in [
            &["EVAL", "s", "3", "a"][..],
            &["EVAL", "s"],
            &["EVAL", "s", "x"],
            &["ZUNION", "-1", "a"],
            &["XREAD", "COUNT", "1"],
            &["XREAD", "STREAMS", "a", "b", "0"],
            &["XREAD", "STREAMS"],
            &["MIGRATE", "h", "1", "", "0", "5"],
        ] {
            let err = key_positions(&args).unwrap_err();
            assert!(
                matches!(err, Error::MalformedCommand { .. }),
                "{args:?}: {err}"
            );
        }
    }

    #[test]
    fn routes() {
        assert_eq!(["GET", "foo"].route().unwrap(), Route::Slot(12182));
        assert_eq!(["PING"].route().unwrap(), Route::Keyless);
        assert_eq!(["EVAL", "s", "0"].route().unwrap(), Route::Keyless);
        // Sent alone, PUBLISH goes to its channel's slot; in a
        // transaction it has no key.
        assert_eq!(
            send_route(&["publish", "foo", "m"]).unwrap(),
            Route::Slot(12182)
        );
        assert_eq!(["PUBLISH", "foo", "m"].route().unwrap(), Route::Keyless);
        assert_eq!(send_route(&["PUBLISH"]).unwrap(), Route::Keyless);
        assert_eq!(send_route(&["GET", "foo"]).unwrap(), Route::Slot(12182));
        assert_eq!(
            ["MGET", "{user1000}.following", "{user1000}.followers"]
                .route()
                .unwrap(),
            Route::Slot(key_slot(b"user1000"))
        );
        let err = ["MSET", "foo", "1", "bar", "2"].route().unwrap_err();
        assert!(
            matches!(
                err,
                Error::CrossSlot {
                    first: 12182,
                    other: 5061
                }
            ),
            "{err}"
        );
        // Values of MSET are not keys, so they do not make it cross-slot.
        assert_eq!(
            ["MSET", "{a}x", "foo", "{a}y", "bar"].route().unwrap(),
            Route::Slot(key_slot(b"a"))
        );
        assert_eq!(
            cmd("set").arg("foo").arg(1).route().unwrap(),
            Route::Slot(12182)
        );
        let empty: [&str; 0] = [];
        assert_eq!(empty.route().unwrap(), Route::Keyless);
    }
}
