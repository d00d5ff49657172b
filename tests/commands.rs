//! The [`Commands`] trait and its typed helpers against real servers: one
//! function, [`exercise`], written once for every client, runs every
//! helper group (strings and counters, keys and expiry, hashes, lists,
//! sets, sorted sets, streams, transactions and watch transactions, the
//! split multi-key helpers) and checks the replies and the server's state
//! through the same client. It runs on a [`Connection`] in RESP3 and in
//! RESP2 (the replies' shapes differ, the converted values must not), on
//! a [`Cluster`], on each [`CoreClient`] of a two-core runtime and on its
//! [`RemoteClient`] from a plain thread.
//!
//! A compile-time check asserts that the futures of a concrete
//! `RemoteClient` are `Send` through the trait.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use futures_lite::future::block_on;
use redcore::commands::{ExpireCondition, Expiry, SetOptions, StreamRead, StreamTrim};
use redcore::prelude::*;
use redcore::{
    Cluster, ClusterConfig, ClusterExecutor, Connection, Error, Protocol, RemoteClient, Value,
    Watch, cmd,
};
use redcore_test_support::client::{base, run};
use redcore_test_support::{RedisCluster, RedisServer};

/// Entries of a stream: id, then fields and values.
type Entries = Vec<(String, Vec<(String, String)>)>;

/// Runs every helper group on `c`, with keys under the hash tag `{tag}`
/// (one slot on a cluster) except for the split helpers.
async fn exercise(c: &impl Commands, tag: &str) {
    let key = |name: &str| format!("{{{tag}}}:{name}");
    strings_and_counters(c, &key).await;
    keys_and_expiry(c, &key).await;
    hashes(c, &key).await;
    lists(c, &key).await;
    sets(c, &key).await;
    sorted_sets(c, &key).await;
    streams(c, &key).await;
    transactions(c, &key).await;
    split_helpers(c, tag).await;
}

async fn strings_and_counters(c: &impl Commands, key: &impl Fn(&str) -> String) {
    let (k, other) = (key("s"), key("s2"));
    c.set(&k, "v1").await.unwrap();
    assert_eq!(
        c.get::<Option<String>>(&k).await.unwrap().as_deref(),
        Some("v1")
    );
    assert_eq!(c.get::<Option<String>>(key("missing")).await.unwrap(), None);

    let nx = SetOptions::new().nx();
    assert!(
        !c.set_with::<bool>(&k, "v2", nx).await.unwrap(),
        "NX on an existing key"
    );
    let old: Option<String> = c.set_with(&k, "v2", SetOptions::new().get()).await.unwrap();
    assert_eq!(
        old.as_deref(),
        Some("v1"),
        "SET ... GET returns the old value"
    );
    let xx = SetOptions::new().xx().expiry(Expiry::Ex(100));
    assert!(c.set_with::<bool>(&k, "v3", xx).await.unwrap());
    let ttl = c.ttl(&k).await.unwrap();
    assert!((1..=100).contains(&ttl), "EX 100 gave a TTL of {ttl}");
    let keep = SetOptions::new().keep_ttl();
    assert!(c.set_with::<bool>(&k, "v4", keep).await.unwrap());
    assert!(c.ttl(&k).await.unwrap() > 0, "KEEPTTL kept the expiry");
    c.set(&k, "v5").await.unwrap();
    assert_eq!(
        c.ttl(&k).await.unwrap(),
        -1,
        "a plain SET removes the expiry"
    );
    let at = SetOptions::new().expiry(Expiry::PxAt(4_102_444_800_000));
    assert!(c.set_with::<bool>(&k, "v6", at).await.unwrap());
    assert!(c.pttl(&k).await.unwrap() > 1_000_000, "PXAT in 2100");

    assert!(c.set_nx(&other, "first").await.unwrap());
    assert!(!c.set_nx(&other, "second").await.unwrap());
    let v: String = c.getex(&other, Some(Expiry::Px(50_000))).await.unwrap();
    assert_eq!(v, "first");
    let pttl = c.pttl(&other).await.unwrap();
    assert!((1..=50_000).contains(&pttl), "GETEX PX gave {pttl}");
    let _: String = c.getex(&other, None).await.unwrap();
    assert_eq!(c.ttl(&other).await.unwrap(), -1, "GETEX PERSIST");
    assert_eq!(c.append(&other, "+more").await.unwrap(), 10);
    assert_eq!(c.strlen(&other).await.unwrap(), 10);
    let gone: Option<String> = c.getdel(&other).await.unwrap();
    assert_eq!(gone.as_deref(), Some("first+more"));
    assert_eq!(c.exists(&[&other]).await.unwrap(), 0, "GETDEL deleted it");

    let n = key("n");
    assert_eq!(c.incr(&n).await.unwrap(), 1);
    assert_eq!(c.incrby(&n, 10).await.unwrap(), 11);
    assert_eq!(c.decr(&n).await.unwrap(), 10);
    assert_eq!(c.decrby(&n, 4).await.unwrap(), 6);
    assert_eq!(c.incrbyfloat(&n, 0.5).await.unwrap(), 6.5);
    assert_eq!(c.get::<f64>(&n).await.unwrap(), 6.5);
    let err = c.incr(&k).await.unwrap_err();
    assert!(
        err.server_error().is_some(),
        "INCR on a non-integer: {err:?}"
    );
}

async fn keys_and_expiry(c: &impl Commands, key: &impl Fn(&str) -> String) {
    let (k, renamed) = (key("k"), key("k-renamed"));
    c.set(&k, "x").await.unwrap();
    assert_eq!(c.key_type(&k).await.unwrap(), "string");
    assert_eq!(c.key_type(key("missing")).await.unwrap(), "none");
    assert_eq!(c.ttl(key("missing")).await.unwrap(), -2);
    assert!(!c.expire(key("missing"), 10).await.unwrap());
    assert!(c.expire(&k, 100).await.unwrap());
    let nx = ExpireCondition::Nx;
    assert!(!c.expire_if(&k, 50, nx).await.unwrap(), "NX: it has one");
    assert!(!c.expire_if(&k, 50, ExpireCondition::Gt).await.unwrap());
    assert!(c.expire_if(&k, 500, ExpireCondition::Gt).await.unwrap());
    assert!(c.ttl(&k).await.unwrap() > 100);
    assert!(c.pexpire_if(&k, 20_000, ExpireCondition::Lt).await.unwrap());
    assert!(c.pttl(&k).await.unwrap() <= 20_000);
    assert!(c.persist(&k).await.unwrap());
    assert!(!c.persist(&k).await.unwrap(), "no expiry left to remove");
    assert!(!c.pexpire_if(&k, 1_000, ExpireCondition::Xx).await.unwrap());
    assert!(c.pexpire(&k, 60_000).await.unwrap());
    c.rename(&k, &renamed).await.unwrap();
    assert_eq!(c.exists(&[&k, &renamed]).await.unwrap(), 1);
    assert!(
        c.rename(&k, &renamed).await.is_err(),
        "RENAME of a missing key"
    );
    assert_eq!(c.touch(&[&renamed, &k]).await.unwrap(), 1);
    assert_eq!(c.unlink(&[&renamed]).await.unwrap(), 1);
    assert_eq!(c.del(&[&renamed]).await.unwrap(), 0);
}

async fn hashes(c: &impl Commands, key: &impl Fn(&str) -> String) {
    let h = key("h");
    assert_eq!(
        c.hset(&h, &[("name", "Ada"), ("lang", "en")])
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        c.hset(&h, &[("lang", "fr")]).await.unwrap(),
        0,
        "updated, not added"
    );
    assert_eq!(c.hget::<String>(&h, "lang").await.unwrap(), "fr");
    assert_eq!(c.hget::<Option<String>>(&h, "age").await.unwrap(), None);
    let got: Vec<Option<String>> = c.hmget(&h, &["name", "age"]).await.unwrap();
    assert_eq!(got, [Some("Ada".to_owned()), None]);
    let map: HashMap<String, String> = c.hgetall(&h).await.unwrap();
    assert_eq!(map.len(), 2);
    assert_eq!(map["name"], "Ada");
    let mut pairs: Vec<(String, String)> = c.hgetall(&h).await.unwrap();
    pairs.sort();
    assert_eq!(
        pairs,
        [
            ("lang".to_owned(), "fr".to_owned()),
            ("name".to_owned(), "Ada".to_owned())
        ]
    );
    let tree: BTreeMap<String, String> = c.hgetall(&h).await.unwrap();
    assert_eq!(tree.keys().collect::<Vec<_>>(), ["lang", "name"]);
    let none: HashMap<String, String> = c.hgetall(key("missing")).await.unwrap();
    assert!(none.is_empty());
    assert!(c.hexists(&h, "name").await.unwrap());
    assert!(!c.hexists(&h, "age").await.unwrap());
    assert_eq!(c.hincrby(&h, "visits", 3).await.unwrap(), 3);
    assert_eq!(c.hlen(&h).await.unwrap(), 3);
    let mut fields: Vec<String> = c.hkeys(&h).await.unwrap();
    fields.sort();
    assert_eq!(fields, ["lang", "name", "visits"]);
    let mut values: Vec<String> = c.hvals(&h).await.unwrap();
    values.sort();
    assert_eq!(values, ["3", "Ada", "fr"]);
    assert_eq!(c.hdel(&h, &["visits", "age"]).await.unwrap(), 1);
}

async fn lists(c: &impl Commands, key: &impl Fn(&str) -> String) {
    let l = key("l");
    assert_eq!(c.rpush(&l, &["a", "b", "c", "b"]).await.unwrap(), 4);
    assert_eq!(c.lpush(&l, &["y", "z"]).await.unwrap(), 6);
    let all: Vec<String> = c.lrange(&l, 0, -1).await.unwrap();
    assert_eq!(all, ["z", "y", "a", "b", "c", "b"]);
    assert_eq!(c.llen(&l).await.unwrap(), 6);
    assert_eq!(
        c.lpop::<Option<String>>(&l).await.unwrap().as_deref(),
        Some("z")
    );
    assert_eq!(c.rpop::<String>(&l).await.unwrap(), "b");
    assert_eq!(c.lrem(&l, 0, "b").await.unwrap(), 1);
    let two: Vec<String> = c.lpop_count(&l, 2).await.unwrap();
    assert_eq!(two, ["y", "a"]);
    assert_eq!(c.rpush(&l, &["d", "e", "f"]).await.unwrap(), 4);
    c.ltrim(&l, 1, -1).await.unwrap();
    let last: Vec<String> = c.rpop_count(&l, 2).await.unwrap();
    assert_eq!(last, ["f", "e"]);
    let popped: Option<(String, String)> = c.blpop(&[&l], Duration::from_secs(1)).await.unwrap();
    assert_eq!(popped, Some((l.clone(), "d".to_owned())));
    assert_eq!(c.lpop::<Option<String>>(&l).await.unwrap(), None);
    let none: Vec<String> = c.lpop_count(&l, 2).await.unwrap();
    assert!(
        none.is_empty(),
        "LPOP count of a missing list is nil: empty"
    );
    let timed_out: Option<(String, String)> =
        c.brpop(&[&l], Duration::from_millis(100)).await.unwrap();
    assert_eq!(timed_out, None, "BRPOP timed out on an empty list");
}

async fn sets(c: &impl Commands, key: &impl Fn(&str) -> String) {
    let s = key("set");
    assert_eq!(c.sadd(&s, &["a", "b", "a"]).await.unwrap(), 2);
    assert!(c.sismember(&s, "a").await.unwrap());
    assert!(!c.sismember(&s, "z").await.unwrap());
    let members: HashSet<String> = c.smembers(&s).await.unwrap();
    assert_eq!(members, HashSet::from(["a".to_owned(), "b".to_owned()]));
    let mut listed: Vec<String> = c.smembers(&s).await.unwrap();
    listed.sort();
    assert_eq!(listed, ["a", "b"]);
    assert_eq!(c.scard(&s).await.unwrap(), 2);
    assert_eq!(c.srem(&s, &["a", "z"]).await.unwrap(), 1);
}

async fn sorted_sets(c: &impl Commands, key: &impl Fn(&str) -> String) {
    let z = key("z");
    assert_eq!(c.zadd(&z, &[("a", 1.0), ("b", 2.5)]).await.unwrap(), 2);
    assert_eq!(c.zadd(&z, &[("a", 1.5)]).await.unwrap(), 0, "updated");
    assert_eq!(c.zscore(&z, "b").await.unwrap(), Some(2.5));
    assert_eq!(c.zscore(&z, "nobody").await.unwrap(), None);
    assert_eq!(c.zincrby(&z, 2.0, "a").await.unwrap(), 3.5);
    let ranked: Vec<String> = c.zrange(&z, 0, -1).await.unwrap();
    assert_eq!(ranked, ["b", "a"]);
    let scored: Vec<(String, f64)> = c.zrange_withscores(&z, 0, -1).await.unwrap();
    assert_eq!(scored, [("b".to_owned(), 2.5), ("a".to_owned(), 3.5)]);
    let top: Vec<(String, f64)> = c.zrange_withscores(&z, -1, -1).await.unwrap();
    assert_eq!(top, [("a".to_owned(), 3.5)]);
    assert_eq!(c.zrank(&z, "a").await.unwrap(), Some(1));
    assert_eq!(c.zrank(&z, "nobody").await.unwrap(), None);
    assert_eq!(c.zcard(&z).await.unwrap(), 2);
    assert_eq!(c.zrem(&z, &["b", "nobody"]).await.unwrap(), 1);
}

async fn streams(c: &impl Commands, key: &impl Fn(&str) -> String) {
    let s = key("stream");
    let id: String = c.xadd(&s, "1-0", &[("f", "v"), ("g", "w")]).await.unwrap();
    assert_eq!(id, "1-0");
    let auto: String = c.xadd(&s, "*", &[("f", "later")]).await.unwrap();
    assert!(auto.contains('-'), "a server-made id: {auto}");
    assert_eq!(c.xlen(&s).await.unwrap(), 2);
    let entries: Entries = c.xrange(&s, "-", "+", None).await.unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(
        entries[0],
        (
            "1-0".to_owned(),
            vec![("f".to_owned(), "v".into()), ("g".to_owned(), "w".into())]
        )
    );
    assert_eq!(entries[1].0, auto);
    let first: Vec<(String, HashMap<String, String>)> =
        c.xrange(&s, "-", "+", Some(1)).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].1["g"], "w");

    let read: Vec<(String, Entries)> = c
        .xread(&[(&s, "0")], StreamRead::new().count(1))
        .await
        .unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].0, s);
    assert_eq!(read[0].1.len(), 1, "COUNT 1");
    assert_eq!(read[0].1[0].0, "1-0");
    let by_stream: HashMap<String, Entries> =
        c.xread(&[(&s, "1-0")], StreamRead::new()).await.unwrap();
    assert_eq!(by_stream[&s].len(), 1, "only entries after 1-0");
    let nothing: Option<Vec<(String, Entries)>> = c
        .xread(
            &[(&s, "$")],
            StreamRead::new().block(Duration::from_millis(50)),
        )
        .await
        .unwrap();
    assert_eq!(nothing, None, "BLOCK timed out with nothing new");

    assert_eq!(c.xdel(&s, &["1-0", "9-9"]).await.unwrap(), 1);
    c.xadd::<String, _, _>(&s, "*", &[("f", "x")])
        .await
        .unwrap();
    assert_eq!(c.xtrim(&s, StreamTrim::max_len(1)).await.unwrap(), 1);
    assert_eq!(
        c.xtrim(&s, StreamTrim::min_id("0-1").approximate())
            .await
            .unwrap(),
        0
    );
    assert_eq!(c.xlen(&s).await.unwrap(), 1);
}

async fn transactions(c: &impl Commands, key: &impl Fn(&str) -> String) {
    let (a, b) = (key("ta"), key("tb"));
    let replies = c
        .transaction([
            cmd("SET").arg(&a).arg(1),
            cmd("INCR").arg(&a),
            cmd("GET").arg(&a),
        ])
        .await
        .unwrap();
    assert_eq!(replies[1], Value::Integer(2));
    let replies = c
        .pipeline([cmd("GET").arg(&a), cmd("INCR").arg(&b)])
        .await
        .unwrap();
    assert_eq!(replies.len(), 2);
    assert_eq!(replies[1], Value::Integer(1));
    let inline = c
        .pipeline([cmd("INCR").arg(key("s")), cmd("GET").arg(&a)])
        .await
        .unwrap();
    assert!(
        matches!(inline[0], Value::Error(_)),
        "a pipeline's error replies stay inline: {inline:?}"
    );

    // Through the trait, the watch function is Send + 'static: it owns
    // what it reads.
    let watched = a.clone();
    let replies = c
        .watch_transaction(&[&a], async move |conn: &Connection| {
            let n: i64 = conn.get(&watched).await?;
            Ok(Watch::Exec(vec![cmd("SET").arg(&watched).arg(n * 10)]))
        })
        .await
        .unwrap();
    assert_eq!(replies.len(), 1);
    assert_eq!(c.get::<i64>(&a).await.unwrap(), 20);
    let r = c
        .watch_transaction_with_retries(&[&a], 0, async |_conn: &Connection| {
            Ok(Watch::Abort("not today".into()))
        })
        .await;
    assert!(
        matches!(&r, Err(Error::Aborted(why)) if why == "not today"),
        "{r:?}"
    );
}

/// The multi-key helpers with keys in many slots: a cluster client
/// splits them, a connection sends one command.
async fn split_helpers(c: &impl Commands, tag: &str) {
    let keys: Vec<String> = (0..12).map(|i| format!("{tag}:split:{i}")).collect();
    let pairs: Vec<(String, String)> = keys.iter().map(|k| (k.clone(), format!("v-{k}"))).collect();
    c.mset(&pairs).await.unwrap();
    let mut asked = keys.clone();
    asked.insert(3, format!("{tag}:split:missing"));
    let got: Vec<Option<String>> = c.mget(&asked).await.unwrap();
    assert_eq!(got.len(), 13);
    assert_eq!(got[3], None);
    assert_eq!(got[0].as_deref(), Some(format!("v-{}", keys[0]).as_str()));
    assert_eq!(got[12].as_deref(), Some(format!("v-{}", keys[11]).as_str()));
    let none: Vec<Option<String>> = c.mget::<_, &str>(&[]).await.unwrap();
    assert!(none.is_empty(), "no keys: nothing sent, nothing back");
    assert_eq!(c.exists(&asked).await.unwrap(), 12);
    assert_eq!(c.touch(&keys).await.unwrap(), 12);
    assert_eq!(c.del(&keys[..5]).await.unwrap(), 5);
    assert_eq!(c.unlink(&keys).await.unwrap(), 7);
    assert_eq!(c.exists(&keys).await.unwrap(), 0);
    assert_eq!(c.del::<&str>(&[]).await.unwrap(), 0);
}

/// Runs [`exercise`] on a connection to a fresh server speaking
/// `protocol`.
fn on_a_connection(protocol: Protocol, tag: &'static str) {
    let server = RedisServer::start();
    let config = base(server.port()).protocol(protocol).build().unwrap();
    run(move || async move {
        let conn = Connection::connect(config).await.unwrap();
        assert_eq!(conn.protocol(), protocol);
        exercise(&conn, tag).await;
    });
}

#[test]
fn every_helper_on_a_connection_in_resp3() {
    on_a_connection(Protocol::Resp3, "resp3");
}

#[test]
fn every_helper_on_a_connection_in_resp2() {
    on_a_connection(Protocol::Resp2, "resp2");
}

/// The same function on every cluster client: a `Cluster`, the
/// `CoreClient` of each core of a two-core runtime, and its
/// `RemoteClient` from this thread.
#[test]
fn every_helper_on_every_cluster_client() {
    let cluster = RedisCluster::start();
    let config = ClusterConfig::builder()
        .seeds(cluster.seed_addrs())
        .build()
        .unwrap();
    let on_cluster = config.clone();
    run(move || async move {
        let client = Cluster::connect(on_cluster).await.unwrap();
        exercise(&client, "cluster").await;
    });

    // The cores wait for the remote client to finish: the runtime shuts
    // down once every core's function has returned.
    let (remote_done, wait_for_remote) = async_channel::bounded::<()>(1);
    let handle = ClusterExecutor::new(config)
        .unwrap()
        .cores(2)
        .unwrap()
        .spawn(move |client| {
            let wait_for_remote = wait_for_remote.clone();
            async move {
                exercise(&client, &format!("core{}", client.core())).await;
                let _ = wait_for_remote.recv().await;
            }
        })
        .unwrap();
    let remote = handle.remote();
    let on_thread = std::thread::spawn(move || block_on(exercise(&remote, "remote")));
    let thread_result = on_thread.join();
    drop(remote_done);
    for (core, result) in handle.join().into_iter().enumerate() {
        if let Err(e) = result {
            panic!("core {core}: {e}");
        }
    }
    if let Err(panic) = thread_result {
        std::panic::resume_unwind(panic);
    }
}

/// Compile-time: calls through the trait on a concrete `RemoteClient` give
/// `Send` futures (the helpers' defaults included), so they can be
/// awaited on any runtime's worker threads.
#[allow(dead_code)]
fn remote_futures_are_send(remote: &RemoteClient) {
    fn send<T: Send>(_: T) {}
    send(remote.command::<Value>(["PING"]));
    send(remote.pipeline([["GET", "a"]]));
    send(remote.transaction([["GET", "a"]]));
    send(remote.get::<Option<String>>("k"));
    send(remote.set_with::<bool>("k", "v", SetOptions::new().nx()));
    send(remote.hset("h", &[("f", "v")]));
    send(remote.zrange_withscores::<Vec<(String, f64)>>("z", 0, -1));
    send(remote.xread::<Value, _, _>(&[("s", "0")], StreamRead::new()));
    send(remote.mget::<Vec<Option<String>>, _>(&["a", "b"]));
    send(remote.mset(&[("a", "1")]));
    send(remote.del(&["a"]));
    send(remote.watch_transaction(&["k"], async |_: &Connection| Ok(Watch::Exec(Vec::new()))));
}
