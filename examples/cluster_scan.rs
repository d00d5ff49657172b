//! Cluster SCAN: every key of every master, page by page or as a stream,
//! with MATCH, COUNT and TYPE; and where a scan is (its state), to stop
//! and resume it.
//!
//! `cargo run --example cluster_scan -- 127.0.0.1:7000 127.0.0.1:7001`
//! (seeds as `host:port`; `tools/cluster-example.sh cluster_scan` starts a
//! throwaway 3+3 cluster and runs this).

use futures_lite::StreamExt;
use redcore::Commands;
use redcore::cluster::{Cluster, ClusterScan, ScanOptions};

async fn tour(seeds: Vec<String>) -> redcore::Result<()> {
    let cluster = Cluster::connect(seeds).await?;

    // 1000 strings and 50 hashes, spread over every master.
    let names: Vec<String> = (0..1000).map(|i| format!("example:scan:{i}")).collect();
    let pairs: Vec<(&str, &str)> = names.iter().map(|k| (k.as_str(), "v")).collect();
    cluster.mset(&pairs).await?;
    for i in 0..50 {
        let key = format!("example:scan:hash:{i}");
        cluster
            .command::<()>(["HSET", key.as_str(), "field", "value"])
            .await?;
    }

    // Page by page: each page is one SCAN on one master.
    let mut scan = cluster.scan(ScanOptions::new().pattern("example:scan:*").count(200));
    let (mut pages, mut keys) = (0, 0);
    while let Some(page) = scan.next_page().await? {
        pages += 1;
        keys += page.len();
    }
    println!("MATCH example:scan:* COUNT 200 -> {keys} keys in {pages} pages");

    // As a stream of keys, only hashes.
    let hashes: Vec<_> = cluster
        .scan(ScanOptions::new().pattern("example:scan:*").kind("hash"))
        .try_collect::<_, _, Vec<_>>()
        .await?;
    println!("TYPE hash -> {} keys", hashes.len());

    // Stop after a few pages, keep the state (plain data, Send), resume.
    let options = ScanOptions::new().pattern("example:scan:*").count(100);
    let mut scan = cluster.scan(options.clone());
    let mut before = 0;
    for _ in 0..3 {
        before += scan.next_page().await?.map_or(0, |page| page.len());
    }
    let state = scan.state().expect("no page in flight").clone();
    println!("stopped after 3 pages ({before} keys): {state:?}");
    let after: Vec<_> = ClusterScan::resume(&cluster, options, state)
        .try_collect::<_, _, Vec<_>>()
        .await?;
    println!("resumed: {} more keys", after.len());

    let mut everything = names;
    everything.extend((0..50).map(|i| format!("example:scan:hash:{i}")));
    let removed = cluster.del(&everything).await?;
    println!("DEL removed {removed} keys");
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
