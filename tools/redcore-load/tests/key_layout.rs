//! `--key-layout`: the names of the keys, and that with `tagged` every
//! command of a pipeline shares its first key's hash tag, as a real
//! `redis-server` sees them (MONITOR, one task, so pipelines arrive whole
//! and in order).

mod support;

use std::time::Duration;

use redcore_test_support::{Conn, RedisServer, Reply};
use support::load;

/// The commands MONITOR shows, name and key, up to `n` SET/GET lines.
fn monitored(monitor: &mut Conn, n: usize) -> Vec<(String, String)> {
    let mut seen = Vec::new();
    while seen.len() < n {
        let line = match monitor.read_reply().expect("a MONITOR line") {
            Reply::Status(s) => s,
            other => panic!("unexpected MONITOR reply {other:?}"),
        };
        // `1700000000.123456 [0 127.0.0.1:5555] "SET" "key" "value"`
        let words: Vec<&str> = line.split('"').skip(1).step_by(2).collect();
        if let [cmd @ ("SET" | "GET"), key, ..] = words.as_slice() {
            seen.push(((*cmd).to_owned(), (*key).to_owned()));
        }
    }
    seen
}

/// Splits a tagged key `PREFIX{t}:n` into `(t, n)`.
fn tag_and_number(key: &str) -> (u64, u64) {
    let (_, rest) = key
        .split_once('{')
        .unwrap_or_else(|| panic!("no tag in {key}"));
    let (tag, n) = rest
        .split_once("}:")
        .unwrap_or_else(|| panic!("no tag in {key}"));
    (
        tag.parse().expect("a numeric tag"),
        n.parse().expect("a key number"),
    )
}

fn monitor(server: &RedisServer) -> Conn {
    let mut conn = Conn::tcp(server.addr(), Duration::from_secs(20)).expect("connect");
    assert_eq!(conn.call(&["MONITOR"]).expect("MONITOR").text(), "OK");
    conn
}

#[test]
fn tagged_pipelines_share_one_hash_tag() {
    let server = RedisServer::start();
    let mut mon = monitor(&server);
    let run = load(&[
        "--server",
        &server.url(),
        "--cores",
        "1",
        "--tasks",
        "1",
        "--pipeline",
        "8",
        "--requests",
        "400",
        "--keys",
        "10000",
        "--key-tags",
        "100",
        "--key-layout",
        "tagged",
        "--key-prefix",
        "t:",
        "--json",
    ]);
    let report = run.ok();
    assert_eq!(report["key_layout"], "tagged", "{report:#}");
    assert_eq!(report["keys_per_tag"], 100, "{report:#}");
    let seen = monitored(&mut mon, 400);
    let mut tags = std::collections::BTreeSet::new();
    for pipeline in seen.chunks(8) {
        let keys: Vec<(u64, u64)> = pipeline.iter().map(|(_, k)| tag_and_number(k)).collect();
        for (tag, n) in &keys {
            assert!(pipeline.iter().all(|(_, k)| k.starts_with("t:{")));
            assert_eq!(*tag, n / 100, "{pipeline:?}");
            assert_eq!(*tag, keys[0].0, "a pipeline with two tags: {pipeline:?}");
            assert!(*n < 10_000, "{pipeline:?}");
        }
        tags.insert(keys[0].0);
    }
    // 50 pipelines over 100 tags, drawn at random: many tags.
    assert!(tags.len() >= 20, "{tags:?}");
    assert!(seen.iter().any(|(c, _)| c == "SET") && seen.iter().any(|(c, _)| c == "GET"));
}

#[test]
fn plain_keys_stay_the_default() {
    let server = RedisServer::start();
    let mut mon = monitor(&server);
    let run = load(&[
        "--server",
        &server.url(),
        "--cores",
        "1",
        "--tasks",
        "1",
        "--pipeline",
        "8",
        "--requests",
        "80",
        "--keys",
        "10000",
        "--json",
    ]);
    let report = run.ok();
    assert_eq!(report["key_layout"], "plain", "{report:#}");
    assert!(report["keys_per_tag"].is_null(), "{report:#}");
    let seen = monitored(&mut mon, 80);
    for (_, key) in &seen {
        let n: u64 = key
            .strip_prefix("key:")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("not a plain key: {key}"));
        assert!(n < 10_000);
    }
    // Uniform over the whole key space: a pipeline's keys are not one run.
    let spread = seen
        .chunks(8)
        .filter(|p| {
            let runs: std::collections::BTreeSet<u64> = p
                .iter()
                .map(|(_, k)| k[4..].parse::<u64>().unwrap() / 100)
                .collect();
            runs.len() > 1
        })
        .count();
    assert!(spread >= 9, "{seen:?}");
}

#[test]
fn sequential_tagged_keys_write_every_key() {
    let server = RedisServer::start();
    let run = load(&[
        "--server",
        &server.url(),
        "--cores",
        "1",
        "--tasks",
        "4",
        "--pipeline",
        "16",
        "--requests",
        "1000",
        "--keys",
        "1000",
        "--key-tags",
        "7",
        "--key-layout",
        "tagged",
        "--key-pattern",
        "sequential",
        "--ratio",
        "1:0",
        "--json",
    ]);
    run.ok();
    assert_eq!(server.cmd(&["DBSIZE"]), "1000");
    // 1000 keys in 7 runs of 143: key 999 is in run 6.
    assert_eq!(
        server.cmd(&["EXISTS", "key:{6}:999", "key:{0}:0", "key:{1}:143"]),
        "3"
    );
}
