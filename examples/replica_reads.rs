//! Reads from replicas: the same keys read with each `ReadFrom` strategy,
//! and where the reads went, from the client's own counters.
//!
//! `cargo run --example replica_reads -- 127.0.0.1:7000 127.0.0.1:7001`
//! (seeds as `host:port`; `tools/cluster-example.sh replica_reads` starts
//! a throwaway 3+3 cluster and runs this).

use redcore::cluster::{Cluster, ClusterInfo, Role};
use redcore::config::ReadFrom;
use redcore::prelude::*;
use redcore::{ClusterConfig, Value, cmd};

/// Calls the client sent to masters and to replicas so far.
fn sent(info: &ClusterInfo) -> (u64, u64) {
    let mut by_role = (0, 0);
    for n in &info.nodes {
        match n.role {
            Role::Master => by_role.0 += n.commands,
            _ => by_role.1 += n.commands,
        }
    }
    by_role
}

async fn tour(seeds: Vec<String>) -> redcore::Result<()> {
    let config = ClusterConfig::builder().seeds(seeds).build()?;
    let cluster = Cluster::connect(config).await?;
    let keys: Vec<String> = (0..30).map(|i| format!("replica-example:{i}")).collect();
    for k in &keys {
        // WAIT 1 in the same pipeline (it goes with the SET, to the key's
        // master): a replica has the write before anyone reads it. A
        // cluster just made has replicas still syncing: ask again.
        for _ in 0..30 {
            let replies = cluster
                .pipeline([cmd("SET").arg(k).arg("v"), cmd("WAIT").arg(1).arg(1000)])
                .await?;
            if matches!(replies[1], Value::Integer(n) if n >= 1) {
                break;
            }
        }
    }
    // A replica still syncing is left out of the routes (it would answer
    // LOADING) until a refresh finds it online; refresh until every read
    // with PreferReplica reaches a replica (at most 10 s).
    let probe = cluster.with_read_from(ReadFrom::PreferReplica);
    for _ in 0..100 {
        cluster.refresh().await?;
        let before = sent(&cluster.info());
        for k in &keys {
            let _: Option<String> = probe.get(k).await?;
        }
        if sent(&cluster.info()).0 == before.0 {
            break;
        }
        glommio::timer::sleep(std::time::Duration::from_millis(100)).await;
    }
    for strategy in [
        ReadFrom::Primary,
        ReadFrom::PreferReplica,
        ReadFrom::RoundRobin,
        ReadFrom::LowestLatency,
    ] {
        let reader = cluster.with_read_from(strategy);
        let before = sent(&cluster.info());
        for k in &keys {
            let _: Option<String> = reader.get(k).await?;
        }
        let after = sent(&cluster.info());
        println!(
            "{strategy:>12}: {} reads on masters, {} on replicas",
            after.0 - before.0,
            after.1 - before.1
        );
    }
    for n in cluster.info().nodes {
        println!(
            "  {} {:?}: measured round trip {:?}",
            n.addr, n.role, n.latency
        );
    }
    let removed = cluster.del(&keys).await?;
    println!("removed {removed} keys (writes always go to masters)");
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
