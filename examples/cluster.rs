//! The cluster client: slot routing, hash tags, split helpers, a pipeline
//! across nodes, a transaction and a watch transaction, and what the
//! client knows of the cluster.
//!
//! `cargo run --example cluster -- 127.0.0.1:7000 127.0.0.1:7001` (seeds as
//! `host:port`, or one `redis://` URI; `tools/cluster-example.sh` starts a
//! throwaway 3+3 cluster and runs this).

use redcore::Commands;
use redcore::cluster::Cluster;
use redcore::{Connection, Watch, cmd};

async fn tour(seeds: Vec<String>) -> redcore::Result<()> {
    let cluster = Cluster::connect(seeds).await?;
    let info = cluster.info();
    println!(
        "connected: {} nodes, {} slots covered, slot map epoch {}",
        info.nodes.len(),
        info.slots_covered,
        info.epoch
    );

    // Each command goes to the master of its key's slot.
    cluster.command::<()>(["SET", "example:a", "1"]).await?;
    let a: String = cluster.command(["GET", "example:a"]).await?;
    println!("GET example:a -> {a}");

    // Keys in different slots: split per slot, answers in the keys' order.
    cluster
        .mset(&[("example:b", "2"), ("example:c", "3")])
        .await?;
    let values: Vec<Option<String>> = cluster
        .mget(&["example:a", "example:b", "example:missing", "example:c"])
        .await?;
    println!("MGET across slots -> {values:?}");

    // A pipeline across nodes: one pipeline per node, side by side.
    let replies = cluster
        .pipeline((0..10).map(|i| cmd("INCR").arg(format!("example:counter:{i}"))))
        .await?;
    println!("pipeline of 10 INCRs over several nodes -> {replies:?}");

    // Hash tags put related keys in one slot: transactions need that.
    let results = cluster
        .transaction([
            cmd("SET").arg("{user:1}.name").arg("Ada"),
            cmd("SET").arg("{user:1}.visits").arg(0),
            cmd("INCR").arg("{user:1}.visits"),
        ])
        .await?;
    println!("transaction on {{user:1}} -> {results:?}");

    let done = cluster
        .watch_transaction(&["{user:1}.visits"], async |c: &Connection| {
            let visits: i64 = c.command(["GET", "{user:1}.visits"]).await?;
            Ok(Watch::Exec(vec![
                cmd("SET").arg("{user:1}.visits").arg(visits + 10),
            ]))
        })
        .await?;
    println!("watch transaction -> {done:?}");

    let crossed = cluster
        .transaction([["SET", "example:a", "x"], ["SET", "example:b", "y"]])
        .await;
    println!(
        "a transaction across slots is refused: {}",
        crossed.unwrap_err()
    );

    let removed = cluster
        .del(&[
            "example:a",
            "example:b",
            "example:c",
            "{user:1}.name",
            "{user:1}.visits",
        ])
        .await?;
    let counters: Vec<String> = (0..10).map(|i| format!("example:counter:{i}")).collect();
    let removed = removed + cluster.del(&counters).await?;
    println!("DEL across slots removed {removed} keys");

    for node in cluster.info().nodes {
        println!(
            "  {} {:?} {:?} slots {:?}: {} calls",
            node.addr, node.role, node.health, node.slots, node.commands
        );
    }
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
