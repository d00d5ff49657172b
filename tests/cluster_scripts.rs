//! [`Script`] and [`ScriptCommands`] on a real 3-master/3-replica cluster:
//! a script with keys in several slots runs on each slot's master; after
//! `SCRIPT FLUSH` on one master, a call with a key of that master loads it
//! again there and only there (`INFO commandstats`, `SCRIPT EXISTS`); a
//! script with keys in two slots is refused before anything is sent;
//! `FCALL`/`FCALL_RO` reach the master of their keys after `FUNCTION LOAD`
//! on each master by hand; a script follows its slot through a migration
//! (`ASK`, then `MOVED`) and a failover, loaded again where missing. The
//! same through the per-core runtime's
//! `CoreClient` and `RemoteClient`. And `SCRIPT LOAD`/`FUNCTION LOAD`
//! through `Cluster::command` reach every master (their policy routes
//! them so). A script raising a refusal's text itself (`TRYAGAIN x`,
//! `MOVED ...`) runs once: the router retries only the server's own.
//!
//! The harness's blocking calls on the nodes (`CONFIG RESETSTAT`, `INFO`)
//! are made while the client is idle.

use std::collections::BTreeSet;

use futures_lite::future::block_on;
use redcore::prelude::*;
use redcore::{Cluster, ClusterConfig, ClusterExecutor, Error, RemoteClient, Script, Value, cmd};
use redcore_test_support::client::{assert_cross_slot, run};
use redcore_test_support::{RedisCluster, RedisServer, key_in_slot};

/// How `node` counted `command`: (calls, calls that ended in an error
/// reply, rejected or failed), from `INFO commandstats`.
fn stats(node: &RedisServer, command: &str) -> (u64, u64) {
    let prefix = format!("cmdstat_{}:", command.to_ascii_lowercase());
    let info = node.cmd(&["INFO", "commandstats"]);
    let Some(line) = info.lines().find_map(|l| l.strip_prefix(prefix.as_str())) else {
        return (0, 0);
    };
    let field = |name: &str| -> u64 {
        line.split(',')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .map_or(0, |(_, v)| v.trim().parse().expect("a count"))
    };
    (
        field("calls") + field("rejected_calls"),
        field("failed_calls") + field("rejected_calls"),
    )
}

fn reset_stats(cluster: &RedisCluster) {
    for i in cluster.master_indices() {
        cluster.node(i).cmd(&["CONFIG", "RESETSTAT"]);
    }
}

/// Whether `node` has the script `sha1` in its cache.
fn has_script(node: &RedisServer, sha1: &str) -> bool {
    node.call(&["SCRIPT", "EXISTS", sha1]).items()[0].integer() == Some(1)
}

/// Slots served by three different masters (the harness gives each master
/// a third of the slots, in order), and a key in each.
const SLOTS: [u16; 3] = [100, 6000, 12000];

fn keys(prefix: &str) -> Vec<String> {
    SLOTS.iter().map(|&s| key_in_slot(s, prefix)).collect()
}

fn owners(cluster: &RedisCluster) -> Vec<usize> {
    let owners: Vec<usize> = SLOTS.iter().map(|&s| cluster.slot_owner_index(s)).collect();
    assert_eq!(
        owners.iter().collect::<BTreeSet<_>>().len(),
        3,
        "the test's slots are on three masters"
    );
    owners
}

const COUNTER: &str = "return redis.call('INCRBY', KEYS[1], ARGV[1])";

const LIBRARY: &str = "#!lua name=redcore_cluster_scripts
redis.register_function('bump', function(keys, args)
  return redis.call('INCRBY', keys[1], args[1])
end)
redis.register_function{
  function_name = 'peek',
  callback = function(keys, args) return redis.call('GET', keys[1]) end,
  flags = { 'no-writes' },
}";

fn config(cluster: &RedisCluster) -> ClusterConfig {
    ClusterConfig::builder()
        .seeds(cluster.seed_addrs())
        .build()
        .unwrap()
}

#[test]
fn cluster_scripts_run_per_slot_reload_on_the_flushed_master_and_refuse_cross_slot() {
    let cluster = RedisCluster::start();
    let config = config(&cluster);
    run(move || async move {
        let client = Cluster::connect(config).await.unwrap();
        let owners = owners(&cluster);
        let keys = keys("script:");
        let script = Script::new(COUNTER);

        // One call per slot: each master loads it with EVAL on its first
        // call and keeps it.
        for k in &keys {
            let n: i64 = script.invoke(&client, &[k], &[1]).await.unwrap();
            assert_eq!(n, 1, "{k}");
        }
        for (&owner, k) in owners.iter().zip(&keys) {
            assert!(has_script(cluster.node(owner), script.sha1()), "{k}");
            let value = cluster.node(owner).cmd(&["GET", k]);
            assert_eq!(value, "1", "{k} was written on its slot's master");
        }

        // SCRIPT FLUSH on one master: the next call there reloads it, on
        // that master only.
        let (flushed, other) = (owners[1], owners[0]);
        cluster.node(flushed).cmd(&["SCRIPT", "FLUSH"]);
        assert!(!has_script(cluster.node(flushed), script.sha1()));
        reset_stats(&cluster);
        let n: i64 = script.invoke(&client, &[&keys[1]], &[10]).await.unwrap();
        assert_eq!(n, 11);
        assert_eq!(stats(cluster.node(flushed), "evalsha"), (1, 1), "NOSCRIPT");
        assert_eq!(stats(cluster.node(flushed), "eval"), (1, 0), "loaded there");
        assert!(has_script(cluster.node(flushed), script.sha1()));
        let n: i64 = script.invoke(&client, &[&keys[0]], &[10]).await.unwrap();
        assert_eq!(n, 11);
        assert_eq!(stats(cluster.node(other), "evalsha"), (1, 0));
        for i in cluster.master_indices() {
            let expected = if i == flushed { 1 } else { 0 };
            assert_eq!(stats(cluster.node(i), "eval").0, expected, "node {i}");
        }

        // Keys in two slots: refused before sending, by either variant.
        reset_stats(&cluster);
        let two = [keys[0].as_str(), keys[1].as_str()];
        assert_cross_slot(
            script.invoke::<i64, _, _>(&client, &two, &[1]).await,
            two[0],
            two[1],
        );
        assert_cross_slot(
            script.invoke_ro::<i64, _, _>(&client, &two, &[1]).await,
            two[0],
            two[1],
        );
        for i in cluster.master_indices() {
            for command in ["evalsha", "eval", "evalsha_ro", "eval_ro"] {
                assert_eq!(stats(cluster.node(i), command), (0, 0), "{command} on {i}");
            }
        }

        // A read-only script per slot, and one without keys.
        let read = Script::new("return redis.call('GET', KEYS[1])");
        for k in &keys {
            let v: i64 = read.invoke_ro(&client, &[k], &[""; 0]).await.unwrap();
            assert!(v == 1 || v == 11, "{k}: {v}");
        }
        let keyless = Script::new("return ARGV[1]");
        let v: String = keyless
            .invoke(&client, &[""; 0], &["anywhere"])
            .await
            .unwrap();
        assert_eq!(v, "anywhere");
    });
}

#[test]
fn cluster_functions_reach_the_master_of_their_keys() {
    let cluster = RedisCluster::start();
    let config = config(&cluster);
    run(move || async move {
        let client = Cluster::connect(config).await.unwrap();
        let owners = owners(&cluster);
        let keys = keys("function:");

        // Loaded on every master by hand, through each master's connection.
        let masters = client.master_connections();
        assert_eq!(masters.len(), 3);
        for (addr, conn) in &masters {
            let name = conn.function_load(LIBRARY, true).await.unwrap();
            assert_eq!(name, "redcore_cluster_scripts", "{addr:?}");
        }

        reset_stats(&cluster);
        for (i, k) in keys.iter().enumerate() {
            let n: i64 = client.fcall("bump", &[k], &[i + 1]).await.unwrap();
            assert_eq!(n as usize, i + 1);
            let v: Option<String> = client.fcall_ro("peek", &[k], &[""; 0]).await.unwrap();
            assert_eq!(v, Some((i + 1).to_string()));
        }
        for (&owner, k) in owners.iter().zip(&keys) {
            let node = cluster.node(owner);
            assert_eq!(stats(node, "fcall"), (1, 0), "{k}: FCALL on its master");
            assert_eq!(
                stats(node, "fcall_ro"),
                (1, 0),
                "{k}: FCALL_RO on its master"
            );
        }

        let two = [keys[0].as_str(), keys[2].as_str()];
        assert_cross_slot(
            client.fcall::<i64, _, _>("bump", &two, &[1]).await,
            two[0],
            two[1],
        );
        let err = client
            .fcall::<i64, _, _>("no_such_function", &[&keys[0]], &[1])
            .await
            .unwrap_err();
        assert!(err.server_error().is_some(), "{err:?}");
        // Nothing more reached a master but the unknown function's call.
        for i in cluster.master_indices() {
            let expected = if i == owners[0] { (2, 1) } else { (1, 0) };
            assert_eq!(stats(cluster.node(i), "fcall"), expected, "node {i}");
        }
    });
}

/// The replica of master `master`.
fn replica_of(cluster: &RedisCluster, master: usize) -> usize {
    let id = cluster.node_id(master);
    cluster
        .replica_indices()
        .into_iter()
        .find(|&r| {
            cluster
                .cluster_nodes(r)
                .iter()
                .any(|n| n.is_myself() && n.master_id.as_deref() == Some(id.as_str()))
        })
        .unwrap_or_else(|| panic!("no replica of node {master}"))
}

/// A script whose slot migrates to a master that never saw it: `ASK`,
/// `NOSCRIPT` on the target, `EVAL` there after `ASK` again; once the slot
/// moved, `MOVED` and `EVALSHA` on the new owner. Then a failover to a
/// replica: the promoted node gets the script by `EVAL` if it lacks it.
/// Every call ran the script exactly once (the counter says so).
#[test]
fn cluster_scripts_follow_a_migrating_slot_and_a_failover() {
    let cluster = RedisCluster::start();
    let config = config(&cluster);
    run(move || async move {
        let client = Cluster::connect(config).await.unwrap();
        let slot = SLOTS[1];
        let key = key_in_slot(slot, "moving:");
        let from = cluster.slot_owner_index(slot);
        let to = *cluster
            .master_indices()
            .iter()
            .find(|&&m| m != from)
            .unwrap();
        let script = Script::new(COUNTER);
        let n: i64 = script.invoke(&client, &[&key], &[1]).await.unwrap();
        assert_eq!(n, 1);
        assert!(!has_script(cluster.node(to), script.sha1()));

        // The key moved to `to`, the slot is still `from`'s: ASK.
        cluster.begin_migration(slot, from, to);
        cluster.migrate_keys(slot, from, to, std::slice::from_ref(&key));
        reset_stats(&cluster);
        let n: i64 = script.invoke(&client, &[&key], &[1]).await.unwrap();
        assert_eq!(n, 2);
        assert_eq!(
            stats(cluster.node(to), "evalsha"),
            (1, 1),
            "NOSCRIPT after ASK"
        );
        assert_eq!(stats(cluster.node(to), "eval"), (1, 0), "EVAL after ASK");
        assert!(has_script(cluster.node(to), script.sha1()));

        // The slot is `to`'s: MOVED, then EVALSHA finds the script there.
        cluster.finish_migration(slot, to);
        reset_stats(&cluster);
        let n: i64 = script.invoke(&client, &[&key], &[1]).await.unwrap();
        assert_eq!(n, 3);
        assert_eq!(stats(cluster.node(to), "evalsha"), (1, 0));
        assert_eq!(stats(cluster.node(to), "eval"), (0, 0));

        // `to`'s replica takes over. Whether it has the script depends on
        // what the server replicates; the call works either way, and loads
        // it there only if it was missing.
        let replica = replica_of(&cluster, to);
        cluster.failover(replica);
        let had = has_script(cluster.node(replica), script.sha1());
        reset_stats(&cluster);
        let n: i64 = script.invoke(&client, &[&key], &[1]).await.unwrap();
        assert_eq!(n, 4, "ran once on the new master");
        let expected = if had { (0, 0) } else { (1, 0) };
        assert_eq!(
            stats(cluster.node(replica), "eval"),
            expected,
            "had it: {had}"
        );
        assert_eq!(cluster.node(replica).cmd(&["GET", &key]), "4");
    });
}

/// Runs a script and a function with keys on the three masters through
/// `client`, with keys under `prefix`; returns nothing, panics on a wrong
/// reply.
async fn script_and_function(client: &impl Commands, prefix: &str) {
    let script = Script::new(COUNTER);
    for k in keys(prefix) {
        let n: i64 = script.invoke(client, &[&k], &[2]).await.unwrap();
        assert_eq!(n, 2, "{k}");
        let n: i64 = client.fcall("bump", &[&k], &[3]).await.unwrap();
        assert_eq!(n, 5, "{k}");
        let v: Option<i64> = client.fcall_ro("peek", &[&k], &[""; 0]).await.unwrap();
        assert_eq!(v, Some(5), "{k}");
    }
    let two = keys(prefix);
    assert!(matches!(
        script.invoke::<i64, _, _>(client, &two[..2], &[1]).await,
        Err(Error::CrossSlot { .. })
    ));
}

/// The per-core runtime: each `CoreClient`, then the `RemoteClient` from
/// a plain thread, also after `SCRIPT FLUSH` on every master.
#[test]
fn cluster_scripts_through_core_and_remote_clients() {
    let cluster = RedisCluster::start();
    for i in cluster.master_indices() {
        cluster.node(i).cmd(&["FUNCTION", "LOAD", LIBRARY]);
    }
    let (cores_done, wait_for_cores) = async_channel::unbounded::<()>();
    let (remote_done, wait_for_remote) = async_channel::bounded::<()>(1);
    let handle = ClusterExecutor::new(config(&cluster))
        .unwrap()
        .cores(2)
        .unwrap()
        .spawn(move |client| {
            let (cores_done, wait_for_remote) = (cores_done.clone(), wait_for_remote.clone());
            async move {
                script_and_function(&client, &format!("core{}:", client.core())).await;
                cores_done.send(()).await.unwrap();
                let _ = wait_for_remote.recv().await;
            }
        })
        .unwrap();
    let remote = handle.remote();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for _ in 0..2 {
            block_on(wait_for_cores.recv()).expect("a core ended early");
        }
        block_on(script_and_function(&remote, "remote:"));

        // Every master forgets the script; the remote client's next call
        // on each slot loads it again on that slot's master.
        for i in cluster.master_indices() {
            cluster.node(i).cmd(&["SCRIPT", "FLUSH"]);
        }
        reset_stats(&cluster);
        let script = Script::new(COUNTER);
        for (k, owner) in keys("remote:").iter().zip(owners(&cluster)) {
            let n: i64 = block_on(script.invoke(&remote, &[k], &[1])).unwrap();
            assert_eq!(n, 6, "{k}");
            assert_eq!(stats(cluster.node(owner), "evalsha"), (1, 1), "{k}");
            assert_eq!(stats(cluster.node(owner), "eval"), (1, 0), "{k}");
        }
    }));
    drop(remote_done);
    for (core, result) in handle.join().into_iter().enumerate() {
        if let Err(e) = result {
            panic!("core {core}: {e}");
        }
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Compile-time: a script's and a function's futures on a concrete
/// `RemoteClient` are `Send`, so they can be awaited on any runtime's
/// worker threads.
#[allow(dead_code)]
fn remote_script_futures_are_send(remote: &RemoteClient, script: &Script) {
    fn send<T: Send>(_: T) {}
    send(script.invoke::<i64, _, _>(remote, &["k"], &[1]));
    send(script.invoke_ro::<Option<String>, _, _>(remote, &["k"], &["a"]));
    send(remote.fcall::<i64, _, _>("bump", &["k"], &[1]));
    send(remote.fcall_ro::<i64, _, _>("peek", &["k"], &[""; 0]));
    send(remote.function_load(LIBRARY, true));
    send(remote.script_load(COUNTER));
}

/// `SCRIPT LOAD` and `FUNCTION LOAD` sent as plain commands through the
/// cluster client reach every master (their policies: `SCRIPT LOAD` every
/// node, `FUNCTION LOAD` every master).
#[test]
fn cluster_script_load_and_function_load_reach_every_master() {
    let cluster = RedisCluster::start();
    let config = config(&cluster);
    run(move || async move {
        let client = Cluster::connect(config).await.unwrap();
        let script = Script::new(COUNTER);
        let sha1: String = client
            .command(["SCRIPT", "LOAD", script.source()])
            .await
            .unwrap();
        assert_eq!(sha1, script.sha1());
        let name: String = client
            .command(["FUNCTION", "LOAD", "REPLACE", LIBRARY])
            .await
            .unwrap();
        assert_eq!(name, "redcore_cluster_scripts");
        for i in cluster.master_indices() {
            let node = cluster.node(i);
            assert!(has_script(node, script.sha1()), "SCRIPT LOAD on node {i}");
            let libraries =
                node.cmd(&["FUNCTION", "LIST", "LIBRARYNAME", "redcore_cluster_scripts"]);
            assert!(
                libraries.contains("redcore_cluster_scripts"),
                "FUNCTION LOAD on node {i}: {libraries}"
            );
        }

        // Loaded everywhere beforehand: no call needs EVAL.
        reset_stats(&cluster);
        for k in keys("preloaded:") {
            let n: i64 = script.invoke(&client, &[&k], &[1]).await.unwrap();
            assert_eq!(n, 1);
            let n: i64 = client.fcall("bump", &[&k], &[1]).await.unwrap();
            assert_eq!(n, 2);
        }
        for i in cluster.master_indices() {
            assert_eq!(stats(cluster.node(i), "eval"), (0, 0), "node {i}");
        }
    });
}

/// A script's own error whose text starts like a cluster refusal
/// (`TRYAGAIN`, `MOVED`, `ASK`, `CLUSTERDOWN`, `NOSCRIPT`, ...) is the
/// script's error, not a refusal: the script ran (its `INCR` shows it) and
/// is not sent again; the error is `Error::ScriptError` with the script's
/// text, which says it may have been applied and is not safe to retry.
#[test]
fn cluster_a_script_raising_a_refusal_text_runs_once() {
    let cluster = RedisCluster::start();
    let config = config(&cluster);
    let owner = cluster.slot_owner(SLOTS[0]);
    run(move || async move {
        let client = Cluster::connect(config)
            .await
            .unwrap()
            .with_timeout(std::time::Duration::from_secs(1));
        let moved_here = format!("MOVED {} {owner}", SLOTS[0]);
        let ask_here = format!("ASK {} {owner}", SLOTS[0]);
        for (i, text) in [
            "NOSCRIPT fake",
            "TRYAGAIN fake",
            "CLUSTERDOWN fake",
            "LOADING fake",
            "BUSY fake",
            "READONLY fake",
            "MASTERDOWN fake",
            "MOVED 1 127.0.0.1:1",
            moved_here.as_str(),
            ask_here.as_str(),
        ]
        .into_iter()
        .enumerate()
        {
            let counter = key_in_slot(SLOTS[0], &format!("raised-{i}:"));
            let script = Script::new(format!(
                "redis.call('INCR', KEYS[1]) return redis.error_reply('{text}')"
            ));
            let outcome = script
                .invoke::<i64, _, _>(&client, &[counter.as_str()], &[""; 0])
                .await;
            let runs: i64 = client.get(counter.as_str()).await.unwrap();
            println!("{text}: {outcome:?}, ran {runs} times");
            assert_eq!(runs, 1, "{text}: the script ran once ({outcome:?})");
            let e = outcome.unwrap_err();
            assert!(matches!(e, Error::ScriptError(_)), "{text}: {e:?}");
            assert!(!e.is_safe_to_retry(), "{text}: {e:?}");
            assert!(e.maybe_applied(), "{text}: {e:?}");
            assert!(!e.is_redirect(), "{text}: {e:?}");
            assert_eq!(
                e.server_error().map(|s| s.message()),
                Some(text.as_bytes()),
                "{text}"
            );
        }
    });
}

/// In a pipeline, a script raising a refusal's text itself (`TRYAGAIN x`)
/// is answered inline with that error and not sent again: its counter is
/// 1, whether the pipeline reaches one master or several.
#[test]
fn cluster_a_pipelined_script_raising_a_refusal_text_runs_once() {
    let cluster = RedisCluster::start();
    let config = config(&cluster);
    run(move || async move {
        let client = Cluster::connect(config)
            .await
            .unwrap()
            .with_timeout(std::time::Duration::from_secs(1));
        let raise = "redis.call('INCR', KEYS[1]); return redis.error_reply('TRYAGAIN x')";
        for (i, other_slot) in [None, Some(SLOTS[1])].into_iter().enumerate() {
            let counter = key_in_slot(SLOTS[0], &format!("piped-raised-{i}:"));
            let mut cmds = vec![cmd("EVAL").arg(raise).arg(1).arg(counter.as_str())];
            if let Some(slot) = other_slot {
                cmds.push(cmd("GET").arg(key_in_slot(slot, "piped-other:")));
            }
            let replies = client.pipeline(cmds).await.unwrap();
            assert!(
                matches!(&replies[0], Value::Error(e) if e.message() == b"TRYAGAIN x"),
                "{:?}",
                replies[0]
            );
            let runs: i64 = client.get(counter.as_str()).await.unwrap();
            assert_eq!(runs, 1, "pipeline {i}: the script ran once");
        }
    });
}
