//! Where a cluster sends a command that is not routed by one slot, and
//! how the replies of several nodes become one: the request and response
//! policies of Redis 7 command tips.
//!
//! Redis 7 servers describe these in the tips of `COMMAND INFO`
//! (`request_policy:all_shards`, `response_policy:agg_sum`, ...).
//! [`PolicyTable::from_command_info`] reads them from a server;
//! [`builtin_policy`] is the same table compiled in, for servers without
//! tips (Redis 6) and for commands a server lists without them (module
//! commands among others). A test checks the built-in table against the
//! tips of the Redis server the tests run.
//!
//! This module only names and combines: it sends nothing. The cluster
//! client decides what to do with a policy (see `Cluster::command`).

use std::collections::HashMap;

use super::Args;
use crate::error::{ConversionError, Error};
use crate::resp::Value;

/// Which nodes a command goes to (the `request_policy` tip).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestPolicy {
    /// Every node, masters and replicas (`all_nodes`: `SCRIPT LOAD`,
    /// `CONFIG SET`).
    AllNodes,
    /// Every master (`all_shards`: `DBSIZE`, `KEYS`, `FLUSHALL`).
    AllShards,
    /// Split by the slot of each key, one command per slot (`multi_shard`:
    /// `DEL`, `MGET`, `MSET`).
    MultiShard,
    /// The client must know the command (`special`: `SCAN`).
    Special,
    /// No tip: by its keys, or any one node when keyless.
    Default,
}

/// How the replies of several nodes become one (the `response_policy`
/// tip).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResponsePolicy {
    /// The first success is the answer; fail only if every node failed.
    OneSucceeded,
    /// Every node must succeed; the answer is the first reply.
    AllSucceeded,
    /// Logical AND of integer replies (or of arrays of them, element by
    /// element, as `SCRIPT EXISTS` returns).
    AggLogicalAnd,
    /// Logical OR, as [`AggLogicalAnd`](Self::AggLogicalAnd).
    AggLogicalOr,
    /// The smallest integer reply.
    AggMin,
    /// The largest integer reply.
    AggMax,
    /// The sum of the integer replies.
    AggSum,
    /// The client must know the command (`INFO`, `MEMORY STATS`).
    Special,
    /// No tip: for keyless commands the arrays concatenated (`KEYS`).
    Default,
}

/// The two policies of one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CommandPolicy {
    /// Which nodes it goes to.
    pub request: RequestPolicy,
    /// How their replies combine.
    pub response: ResponsePolicy,
}

impl CommandPolicy {
    /// A policy from its two parts.
    pub const fn new(request: RequestPolicy, response: ResponsePolicy) -> CommandPolicy {
        CommandPolicy { request, response }
    }
}

use RequestPolicy as Req;
use ResponsePolicy as Resp;

/// The built-in table: the tips of Redis 7.0 (`COMMAND INFO`), names in
/// lower case, subcommands as `container|sub`; plus `config|resetstat`,
/// which reaches every node as `CONFIG SET` does though 7.0 gives it no
/// tip, and `waitaof` (Redis 7.2).
const BUILTIN: &[(&str, Req, Resp)] = &[
    ("config|resetstat", Req::AllNodes, Resp::AllSucceeded),
    ("config|set", Req::AllNodes, Resp::AllSucceeded),
    ("dbsize", Req::AllShards, Resp::AggSum),
    ("del", Req::MultiShard, Resp::AggSum),
    ("exists", Req::MultiShard, Resp::AggSum),
    ("flushall", Req::AllShards, Resp::AllSucceeded),
    ("flushdb", Req::AllShards, Resp::AllSucceeded),
    ("function|delete", Req::AllShards, Resp::AllSucceeded),
    ("function|flush", Req::AllShards, Resp::AllSucceeded),
    ("function|kill", Req::AllShards, Resp::OneSucceeded),
    ("function|load", Req::AllShards, Resp::AllSucceeded),
    ("function|restore", Req::AllShards, Resp::AllSucceeded),
    ("function|stats", Req::AllShards, Resp::Special),
    ("info", Req::AllShards, Resp::Special),
    ("keys", Req::AllShards, Resp::Default),
    ("latency|doctor", Req::AllNodes, Resp::Special),
    ("latency|graph", Req::AllNodes, Resp::Special),
    ("latency|histogram", Req::AllNodes, Resp::Special),
    ("latency|history", Req::AllNodes, Resp::Special),
    ("latency|latest", Req::AllNodes, Resp::Special),
    ("latency|reset", Req::AllNodes, Resp::AllSucceeded),
    ("memory|doctor", Req::AllShards, Resp::Special),
    ("memory|malloc-stats", Req::AllShards, Resp::Special),
    ("memory|purge", Req::AllShards, Resp::AllSucceeded),
    ("memory|stats", Req::AllShards, Resp::Special),
    ("mget", Req::MultiShard, Resp::Default),
    ("mset", Req::MultiShard, Resp::AllSucceeded),
    ("msetnx", Req::MultiShard, Resp::AggMin),
    ("ping", Req::AllShards, Resp::AllSucceeded),
    ("randomkey", Req::AllShards, Resp::Default),
    ("scan", Req::Special, Resp::Default),
    ("script|exists", Req::AllShards, Resp::AggLogicalAnd),
    ("script|flush", Req::AllNodes, Resp::AllSucceeded),
    ("script|kill", Req::AllShards, Resp::OneSucceeded),
    ("script|load", Req::AllNodes, Resp::AllSucceeded),
    ("slowlog|get", Req::AllNodes, Resp::Default),
    ("slowlog|len", Req::AllNodes, Resp::AggSum),
    ("slowlog|reset", Req::AllNodes, Resp::AllSucceeded),
    ("touch", Req::MultiShard, Resp::AggSum),
    ("unlink", Req::MultiShard, Resp::AggSum),
    ("wait", Req::AllShards, Resp::AggMin),
    ("waitaof", Req::AllShards, Resp::AggMin),
];

/// The longest name [`builtin_policy`] compares (`latency|histogram`
/// and the like fit).
const MAX_NAME: usize = 32;

/// The built-in policy of a command, by name: `"DBSIZE"`, and for a
/// subcommand `"SCRIPT LOAD"` or `"script|load"`; any case. `None` for a
/// command without policies (it is routed by its keys, or to one node).
pub fn builtin_policy(name: &[u8]) -> Option<CommandPolicy> {
    let mut buf = [0u8; MAX_NAME];
    let lower = buf.get_mut(..name.len())?;
    for (out, &b) in lower.iter_mut().zip(name) {
        *out = if b == b' ' {
            b'|'
        } else {
            b.to_ascii_lowercase()
        };
    }
    BUILTIN
        .iter()
        .find(|(n, _, _)| n.as_bytes() == &*lower)
        .map(|&(_, req, resp)| CommandPolicy::new(req, resp))
}

/// Every command of the built-in table with its policy, names as
/// `container|sub` in lower case.
pub fn builtin_policies() -> impl Iterator<Item = (&'static str, CommandPolicy)> {
    BUILTIN
        .iter()
        .map(|&(n, req, resp)| (n, CommandPolicy::new(req, resp)))
}

/// The policies a server's tips give, with the built-in table behind them
/// for the commands the server gives none.
#[derive(Debug, Clone, Default)]
pub struct PolicyTable {
    /// From the tips, keyed by lower-case name (`script|load`).
    tips: HashMap<String, CommandPolicy>,
}

impl PolicyTable {
    /// A table with no tips: every lookup is [`builtin_policy`]'s.
    pub fn builtin() -> PolicyTable {
        PolicyTable::default()
    }

    /// Reads the tips of a `COMMAND INFO` reply (RESP2 or RESP3): for each
    /// command, its name (element 1), its tips (element 8) and its
    /// subcommands (element 10, entries of the same shape). Entries with
    /// fewer elements (Redis 6 has no tips) and nil entries are skipped;
    /// a reply that is not an array is a [`Error::Conversion`].
    pub fn from_command_info(reply: &Value) -> Result<PolicyTable, Error> {
        let Some(entries) = items(reply) else {
            return Err(Error::Conversion(ConversionError {
                found: reply.type_name(),
                target: "COMMAND INFO reply",
                detail: Some("expected an array of commands"),
            }));
        };
        let mut table = PolicyTable::default();
        for entry in entries {
            table.read_entry(entry);
        }
        Ok(table)
    }

    fn read_entry(&mut self, entry: &Value) {
        let Some(fields) = items(entry) else {
            return;
        };
        let Some(name) = fields.first().and_then(text) else {
            return;
        };
        if let Some(tips) = fields.get(7).and_then(items) {
            let mut request = None;
            let mut response = None;
            for tip in tips.iter().filter_map(text) {
                if let Some(p) = tip.strip_prefix("request_policy:") {
                    request = Some(parse_request(p));
                } else if let Some(p) = tip.strip_prefix("response_policy:") {
                    response = Some(parse_response(p));
                }
            }
            if request.is_some() || response.is_some() {
                self.tips.insert(
                    name.to_ascii_lowercase(),
                    CommandPolicy::new(
                        request.unwrap_or(Req::Default),
                        response.unwrap_or(Resp::Default),
                    ),
                );
            }
        }
        if let Some(subs) = fields.get(9).and_then(items) {
            for sub in subs {
                self.read_entry(sub);
            }
        }
    }

    /// The commands the tips gave a policy, names as `container|sub` in
    /// lower case.
    pub fn tips(&self) -> impl Iterator<Item = (&str, CommandPolicy)> {
        self.tips.iter().map(|(n, p)| (n.as_str(), *p))
    }

    /// How many commands the tips gave a policy (0: every lookup is the
    /// built-in table's).
    pub fn len(&self) -> usize {
        self.tips.len()
    }

    /// True when the tips gave no policy.
    pub fn is_empty(&self) -> bool {
        self.tips.is_empty()
    }

    /// The policy of a command by name (`"SCRIPT LOAD"`, `"script|load"`,
    /// `"DBSIZE"`): from the tips, else [`builtin_policy`].
    ///
    /// Names up to 32 bytes are lowered on the stack: a lookup allocates
    /// nothing.
    pub fn get(&self, name: &[u8]) -> Option<CommandPolicy> {
        let lower = |b: u8| {
            if b == b' ' {
                b'|'
            } else {
                b.to_ascii_lowercase()
            }
        };
        let mut buf = [0u8; MAX_NAME];
        let from_tips = match buf.get_mut(..name.len()) {
            Some(key) => {
                for (out, &b) in key.iter_mut().zip(name) {
                    *out = lower(b);
                }
                std::str::from_utf8(key).ok().and_then(|k| self.tips.get(k))
            }
            None => {
                let key: Vec<u8> = name.iter().map(|&b| lower(b)).collect();
                String::from_utf8(key).ok().and_then(|k| self.tips.get(&k))
            }
        };
        from_tips.copied().or_else(|| builtin_policy(name))
    }

    /// The policy of a command: that of its subcommand (`SCRIPT LOAD`)
    /// when the table has one, else that of its name.
    ///
    /// The name and subcommand are joined on the stack (a pair longer
    /// than 32 bytes is looked up by its name alone): nothing allocates.
    pub fn policy_of(&self, args: &impl Args) -> Option<CommandPolicy> {
        let mut buf = [0u8; MAX_NAME];
        let name_len = args.with_arg(0, |n| {
            if let Some(dst) = buf.get_mut(..n.len()) {
                dst.copy_from_slice(n);
            }
            n.len()
        })?;
        if name_len > MAX_NAME {
            return args.with_arg(0, |n| self.get(n)).flatten();
        }
        let both_len = args
            .with_arg(1, |sub| {
                if sub.contains(&b'|') {
                    return None;
                }
                let end = name_len + 1 + sub.len();
                let dst = buf.get_mut(name_len..end)?;
                dst[0] = b'|';
                dst[1..].copy_from_slice(sub);
                Some(end)
            })
            .flatten();
        if let Some(p) = both_len.and_then(|end| self.get(&buf[..end])) {
            return Some(p);
        }
        self.get(&buf[..name_len])
    }
}

fn parse_request(p: &str) -> RequestPolicy {
    match p {
        "all_nodes" => Req::AllNodes,
        "all_shards" => Req::AllShards,
        "multi_shard" => Req::MultiShard,
        "special" => Req::Special,
        _ => Req::Default,
    }
}

fn parse_response(p: &str) -> ResponsePolicy {
    match p {
        "one_succeeded" => Resp::OneSucceeded,
        "all_succeeded" => Resp::AllSucceeded,
        "agg_logical_and" => Resp::AggLogicalAnd,
        "agg_logical_or" => Resp::AggLogicalOr,
        "agg_min" => Resp::AggMin,
        "agg_max" => Resp::AggMax,
        "agg_sum" => Resp::AggSum,
        "special" => Resp::Special,
        _ => Resp::Default,
    }
}

/// The items of an array or set reply.
fn items(v: &Value) -> Option<&[Value]> {
    match v {
        Value::Array(items) | Value::Set(items) => Some(items),
        Value::Attributed { value, .. } => items(value),
        _ => None,
    }
}

/// A string reply as text.
fn text(v: &Value) -> Option<&str> {
    match v {
        Value::BulkString(b) | Value::SimpleString(b) => std::str::from_utf8(b).ok(),
        Value::Verbatim { text, .. } => std::str::from_utf8(text).ok(),
        _ => None,
    }
}

/// Combines the successful replies of several nodes (in node order) by
/// `policy`:
///
/// - `AggSum`, `AggMin`, `AggMax`: over integer replies, or over arrays
///   of them element by element (`WAITAOF`); a sum that overflows is an
///   error;
/// - `AggLogicalAnd`, `AggLogicalOr`: over integer (or boolean) replies,
///   1 or 0, or over arrays of them element by element (`SCRIPT EXISTS`);
/// - `AllSucceeded`, `OneSucceeded`: the first reply;
/// - `Default`: when every reply is an array (or set), the items
///   concatenated (`KEYS`); otherwise one non-nil reply picked at random,
///   nil when all are (`RANDOMKEY`: a random key of a random master that
///   has keys);
/// - `Special`: the replies as an array, in order (the cluster client
///   pairs them with their nodes instead).
///
/// No replies at all is nil. A reply of the wrong type is a
/// [`Error::Conversion`].
pub fn aggregate(policy: ResponsePolicy, replies: Vec<Value>) -> Result<Value, Error> {
    let replies: Vec<Value> = replies.into_iter().map(Value::without_attributes).collect();
    if replies.is_empty() {
        return Ok(Value::Nil);
    }
    match policy {
        Resp::AllSucceeded | Resp::OneSucceeded => {
            Ok(replies.into_iter().next().expect("one reply"))
        }
        Resp::AggSum | Resp::AggMin | Resp::AggMax => numeric(policy, &replies),
        Resp::AggLogicalAnd | Resp::AggLogicalOr => {
            logical(policy == Resp::AggLogicalAnd, &replies)
        }
        Resp::Default => {
            if replies
                .iter()
                .all(|v| matches!(v, Value::Array(_) | Value::Set(_)))
            {
                let mut all = Vec::new();
                for v in replies {
                    if let Value::Array(items) | Value::Set(items) = v {
                        all.extend(items);
                    }
                }
                return Ok(Value::Array(all));
            }
            let mut some: Vec<Value> = replies
                .into_iter()
                .filter(|v| !matches!(v, Value::Nil))
                .collect();
            if some.is_empty() {
                return Ok(Value::Nil);
            }
            let pick = fastrand::usize(..some.len());
            Ok(some.swap_remove(pick))
        }
        Resp::Special => Ok(Value::Array(replies)),
    }
}

/// The sum, smallest or largest (by `policy`) of integer replies, or of
/// arrays of them element by element (`WAITAOF`'s two counts).
fn numeric(policy: ResponsePolicy, replies: &[Value]) -> Result<Value, Error> {
    let combine = |a: i64, b: i64, v: &Value| match policy {
        Resp::AggSum => a
            .checked_add(b)
            .ok_or_else(|| conversion(v, "a sum of node replies", "the sum overflows i64")),
        Resp::AggMin => Ok(a.min(b)),
        _ => Ok(a.max(b)),
    };
    if let Value::Array(first) = &replies[0] {
        let mut acc: Vec<i64> = first.iter().map(integer).collect::<Result<_, _>>()?;
        for v in &replies[1..] {
            let Value::Array(items) = v else {
                return Err(conversion(
                    v,
                    "aggregate of node replies",
                    "expected an array",
                ));
            };
            if items.len() != acc.len() {
                return Err(conversion(
                    v,
                    "aggregate of node replies",
                    "the nodes' arrays differ in length",
                ));
            }
            for (a, item) in acc.iter_mut().zip(items) {
                *a = combine(*a, integer(item)?, v)?;
            }
        }
        return Ok(Value::Array(acc.into_iter().map(Value::Integer).collect()));
    }
    let mut acc = integer(&replies[0])?;
    for v in &replies[1..] {
        acc = combine(acc, integer(v)?, v)?;
    }
    Ok(Value::Integer(acc))
}

/// Logical AND (`and`) or OR of integer replies, or of arrays of them
/// element by element.
fn logical(and: bool, replies: &[Value]) -> Result<Value, Error> {
    let combine = |a: bool, b: bool| if and { a && b } else { a || b };
    if let Value::Array(first) = &replies[0] {
        let mut acc: Vec<bool> = first.iter().map(truth).collect::<Result<_, _>>()?;
        for v in &replies[1..] {
            let Value::Array(items) = v else {
                return Err(conversion(v, "logical aggregate", "expected an array"));
            };
            if items.len() != acc.len() {
                return Err(conversion(
                    v,
                    "logical aggregate",
                    "the nodes' arrays differ in length",
                ));
            }
            for (a, item) in acc.iter_mut().zip(items) {
                *a = combine(*a, truth(item)?);
            }
        }
        return Ok(Value::Array(
            acc.into_iter().map(|b| Value::Integer(b.into())).collect(),
        ));
    }
    let mut acc = truth(&replies[0])?;
    for v in &replies[1..] {
        acc = combine(acc, truth(v)?);
    }
    Ok(Value::Integer(acc.into()))
}

fn truth(v: &Value) -> Result<bool, Error> {
    match v {
        Value::Boolean(b) => Ok(*b),
        Value::Integer(n) => Ok(*n != 0),
        other => Err(conversion(
            other,
            "logical aggregate",
            "expected an integer",
        )),
    }
}

fn integer(v: &Value) -> Result<i64, Error> {
    match v {
        Value::Integer(n) => Ok(*n),
        other => Err(conversion(
            other,
            "aggregate of node replies",
            "expected an integer",
        )),
    }
}

fn conversion(v: &Value, target: &'static str, detail: &'static str) -> Error {
    Error::Conversion(ConversionError {
        found: v.type_name(),
        target,
        detail: Some(detail),
    })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn builtin_names_ignore_case_and_take_either_separator() {
        let p = CommandPolicy::new(Req::AllNodes, Resp::AllSucceeded);
        assert_eq!(builtin_policy(b"SCRIPT LOAD"), Some(p));
        assert_eq!(builtin_policy(b"script|load"), Some(p));
        assert_eq!(builtin_policy(b"Config Set"), Some(p));
        assert_eq!(
            builtin_policy(b"DBSIZE"),
            Some(CommandPolicy::new(Req::AllShards, Resp::AggSum))
        );
        assert_eq!(builtin_policy(b"GET"), None);
        assert_eq!(builtin_policy(&[b'x'; 100]), None);
    }

    #[test]
    fn tips_are_read_from_command_info_and_the_builtin_table_fills_in() {
        let entry = |name: &str, tips: &[&str], subs: Vec<Value>| {
            let mut fields = vec![bulk(name), Value::Integer(-1)];
            fields.extend((2..7).map(|_| Value::Array(vec![])));
            fields.push(Value::Set(tips.iter().map(|t| bulk(t)).collect()));
            fields.push(Value::Array(vec![]));
            fields.push(Value::Array(subs));
            Value::Array(fields)
        };
        let reply = Value::Array(vec![
            entry(
                "dbsize",
                &["request_policy:all_shards", "response_policy:agg_max"],
                vec![],
            ),
            entry(
                "script",
                &[],
                vec![entry(
                    "script|exists",
                    &[
                        "request_policy:all_shards",
                        "response_policy:agg_logical_or",
                    ],
                    vec![],
                )],
            ),
            Value::Nil,
        ]);
        let table = PolicyTable::from_command_info(&reply).unwrap();
        assert_eq!(table.len(), 2);
        assert_eq!(
            table.get(b"DBSIZE"),
            Some(CommandPolicy::new(Req::AllShards, Resp::AggMax))
        );
        assert_eq!(
            table.policy_of(&["script", "exists", "abc"]),
            Some(CommandPolicy::new(Req::AllShards, Resp::AggLogicalOr))
        );
        // Not in the tips: the built-in table's.
        assert_eq!(
            table.policy_of(&["SCRIPT", "LOAD", "return 1"]),
            builtin_policy(b"script|load")
        );
        assert_eq!(table.policy_of(&["GET", "k"]), None);
        assert_eq!(table.get(b"Script Exists"), table.get(b"script|exists"));
        assert_eq!(table.get(&[b'x'; 100]), None);
        assert!(PolicyTable::from_command_info(&Value::Integer(1)).is_err());
    }

    #[test]
    fn replies_aggregate_by_policy() {
        let ints = |v: &[i64]| v.iter().map(|&n| Value::Integer(n)).collect::<Vec<_>>();
        assert_eq!(
            aggregate(Resp::AggSum, ints(&[1, 2, 3])).unwrap(),
            Value::Integer(6)
        );
        assert_eq!(
            aggregate(Resp::AggMin, ints(&[4, 2, 3])).unwrap(),
            Value::Integer(2)
        );
        assert_eq!(
            aggregate(Resp::AggMax, ints(&[4, 2, 5])).unwrap(),
            Value::Integer(5)
        );
        assert_eq!(
            aggregate(Resp::AggLogicalAnd, ints(&[1, 0, 1])).unwrap(),
            Value::Integer(0)
        );
        assert_eq!(
            aggregate(Resp::AggLogicalOr, ints(&[0, 0, 1])).unwrap(),
            Value::Integer(1)
        );
        let arrays = vec![
            Value::Array(ints(&[1, 1, 0])),
            Value::Array(ints(&[1, 0, 0])),
        ];
        assert_eq!(
            aggregate(Resp::AggLogicalAnd, arrays).unwrap(),
            Value::Array(ints(&[1, 0, 0]))
        );
        assert_eq!(
            aggregate(
                Resp::Default,
                vec![Value::Array(vec![bulk("a")]), Value::Array(vec![bulk("b")])]
            )
            .unwrap(),
            Value::Array(vec![bulk("a"), bulk("b")])
        );
        assert_eq!(
            aggregate(Resp::Default, vec![Value::Nil, bulk("k"), Value::Nil]).unwrap(),
            bulk("k")
        );
        assert_eq!(
            aggregate(Resp::AllSucceeded, vec![bulk("x"), bulk("y")]).unwrap(),
            bulk("x")
        );
        // WAITAOF: two counts per master, each the smallest.
        let waitaof = vec![
            Value::Array(ints(&[1, 2])),
            Value::Array(ints(&[1, 0])),
            Value::Array(ints(&[0, 1])),
        ];
        assert_eq!(
            aggregate(Resp::AggMin, waitaof.clone()).unwrap(),
            Value::Array(ints(&[0, 0]))
        );
        assert_eq!(
            aggregate(Resp::AggMax, waitaof.clone()).unwrap(),
            Value::Array(ints(&[1, 2]))
        );
        assert_eq!(
            aggregate(Resp::AggSum, waitaof).unwrap(),
            Value::Array(ints(&[2, 3]))
        );
        assert_eq!(
            builtin_policy(b"WAITAOF"),
            Some(CommandPolicy::new(Req::AllShards, Resp::AggMin))
        );
        assert!(
            aggregate(
                Resp::AggMin,
                vec![Value::Array(ints(&[1, 1])), Value::Array(ints(&[1]))]
            )
            .is_err()
        );
        assert!(
            aggregate(
                Resp::AggMin,
                vec![Value::Array(ints(&[1])), Value::Integer(1)]
            )
            .is_err()
        );
        assert!(
            aggregate(
                Resp::AggSum,
                vec![Value::Array(ints(&[i64::MAX])), Value::Array(ints(&[1]))]
            )
            .is_err()
        );
        assert!(aggregate(Resp::AggSum, vec![bulk("x")]).is_err());
        assert!(aggregate(Resp::AggSum, ints(&[i64::MAX, 1])).is_err());
        assert!(
            aggregate(
                Resp::AggLogicalAnd,
                vec![Value::Array(ints(&[1])), Value::Array(ints(&[1, 1]))]
            )
            .is_err()
        );
        assert_eq!(aggregate(Resp::AggSum, vec![]).unwrap(), Value::Nil);
    }
}
