//! Cluster-wide commands: `DBSIZE` summed over the masters, `KEYS`
//! concatenated, `SCRIPT LOAD` on every node, one reply per node with
//! `per_node`, and a command sent where the caller says with `command_to`.
//!
//! `cargo run --example cluster_wide -- 127.0.0.1:7000 127.0.0.1:7001`
//! (seeds as `host:port`, or one `redis://` URI;
//! `tools/cluster-example.sh cluster_wide` starts a throwaway 3+3 cluster
//! and runs this).

use redcore::cluster::{Cluster, ClusterCommands, Target};
use redcore::prelude::*;

async fn tour(seeds: Vec<String>) -> redcore::Result<()> {
    let cluster = Cluster::connect(seeds).await?;
    let pairs: Vec<(String, String)> = (0..100)
        .map(|i| (format!("wide:{i}"), i.to_string()))
        .collect();
    cluster.mset(&pairs).await?;

    // Keyless commands go where their policy says: DBSIZE to every master,
    // the counts summed; KEYS to every master, the keys concatenated.
    let total: i64 = cluster.command(["DBSIZE"]).await?;
    println!("DBSIZE over every master -> {total}");
    let keys: Vec<String> = cluster.command(["KEYS", "wide:*"]).await?;
    println!("KEYS wide:* -> {} keys", keys.len());

    // SCRIPT LOAD reaches every node (masters and replicas).
    let sha1: String = cluster.command(["SCRIPT", "LOAD", "return 1"]).await?;
    let exists: Vec<i64> = cluster.command(["SCRIPT", "EXISTS", &sha1]).await?;
    println!(
        "SCRIPT LOAD -> {sha1}; loaded on every master: {}",
        exists[0] == 1
    );

    // WAIT goes to every master and answers the smallest count of
    // replicas that acknowledged: the replicas now hold the keys.
    let acked: i64 = cluster.command(["WAIT", "1", "2000"]).await?;
    println!("WAIT 1 2000 -> every master has {acked} replica(s) caught up");

    // One reply per node instead of the aggregate.
    for (addr, reply) in cluster.per_node(Target::AllNodes, ["DBSIZE"]).await? {
        println!("  {addr}: DBSIZE {:?}", reply?);
    }

    // A command where the caller says: one node, the master of a slot.
    let first = cluster.info().nodes[0].addr.clone();
    let role: Vec<redcore::Value> = cluster
        .command_to(Target::Node(first.clone()), ["ROLE"])
        .await?;
    println!("ROLE of {first} -> {:?}", role.first());
    let slot = redcore::slot::key_slot(b"wide:1");
    let n: i64 = cluster.command_to(Target::Slot(slot), ["DBSIZE"]).await?;
    println!("DBSIZE of the master of slot {slot} -> {n}");

    let removed: i64 = cluster
        .command(["DEL", "wide:0", "wide:1", "wide:2"])
        .await?;
    println!("DEL across slots through command -> {removed}");
    let _: String = cluster.command(["FLUSHALL"]).await?;
    println!(
        "FLUSHALL on every master; DBSIZE -> {}",
        cluster.command::<i64>(["DBSIZE"]).await?
    );
    Ok(())
}

fn main() {
    let mut seeds: Vec<String> = std::env::args().skip(1).collect();
    if seeds.is_empty() {
        seeds.push("127.0.0.1:7000".to_owned());
    }
    let result = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        // io_uring buffers count against RLIMIT_MEMLOCK: keep this small.
        .io_memory(64 << 10)
        .spawn(move || async move { tour(seeds).await })
        .expect("start a glommio executor")
        .join()
        .expect("the executor thread");
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
