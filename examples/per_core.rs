//! The thread-per-core runtime: `ClusterExecutor::spawn_per_core` runs one
//! function on every online CPU, each with a `CoreClient` (the cluster API
//! on that core). Each core writes and reads its own keys, sees which core
//! owns them, and sends a pipeline across the cluster; meanwhile the main
//! thread, which is not an executor, uses a `RemoteClient` with
//! `futures_lite::future::block_on`. Then it joins the cores and prints
//! what each one did.
//!
//! `cargo run --example per_core -- 127.0.0.1:7000 127.0.0.1:7001` (seeds
//! as `host:port`, or one `redis://` URI; without arguments, the seeds in
//! `REDCORE_SEEDS`, separated by commas or spaces, else 127.0.0.1:7000 to
//! 127.0.0.1:7002). `tools/cluster-example.sh per_core` starts a throwaway
//! 3+3 cluster and runs this.

use std::sync::mpsc;
use std::time::Duration;

use futures_lite::future::block_on;
use redcore::Commands;
use redcore::runtime::HopStats;
use redcore::{ClusterExecutor, CoreClient, cmd};

/// Keys each core writes.
const KEYS: usize = 8;
/// Counters every core increments in one pipeline.
const COUNTERS: usize = 6;

/// What one core did.
#[derive(Debug)]
struct Report {
    core: usize,
    cpu: usize,
    /// Of this core's keys: how many it serves itself, how many through
    /// another core.
    local_keys: usize,
    remote_keys: usize,
    /// The counters after this core's INCR pipeline.
    counters: Vec<i64>,
    hops: HopStats,
}

fn key(core: usize, i: usize) -> String {
    format!("per_core:{core}:{i}")
}

fn counter(i: usize) -> String {
    format!("per_core:counter:{i}")
}

/// One core's work: SET and GET its keys, then one pipeline of INCRs
/// spread over every master.
async fn work(client: &CoreClient) -> redcore::Result<Report> {
    let core = client.core();
    let (mut local_keys, mut remote_keys) = (0, 0);
    for i in 0..KEYS {
        let key = key(core, i);
        // A key whose master another core owns travels there and back.
        if client.owner_of_key(key.as_str()) == Some(core) {
            local_keys += 1;
        } else {
            remote_keys += 1;
        }
        let value = format!("written by core {core}");
        client.command::<()>(["SET", key.as_str(), &value]).await?;
        let read: String = client.command(["GET", key.as_str()]).await?;
        assert_eq!(read, value);
    }

    // Split by node; each node's share is sent by the core that owns it,
    // and the replies come back in order.
    let replies = client
        .pipeline((0..COUNTERS).map(|i| cmd("INCR").arg(counter(i))))
        .await?;
    let counters = replies
        .into_iter()
        .map(redcore::FromValue::from_value)
        .collect::<redcore::Result<Vec<i64>>>()?;

    Ok(Report {
        core,
        cpu: client.cpu(),
        local_keys,
        remote_keys,
        counters,
        hops: client.hop_stats(),
    })
}

fn seeds() -> Vec<String> {
    let mut seeds: Vec<String> = std::env::args().skip(1).collect();
    if seeds.is_empty() {
        if let Ok(env) = std::env::var("REDCORE_SEEDS") {
            seeds = env
                .split([',', ' '])
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
        }
    }
    if seeds.is_empty() {
        seeds = (7000..7003)
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
    }
    seeds
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    // Each core says when its keys are written, then waits until the main
    // thread is done with them: a core's function returning is its vote
    // to shut the runtime down, and once every core has voted, calls
    // (the main thread's too) fail with `Error::Closed`.
    let (written_tx, written) = mpsc::channel::<usize>();
    let (done, done_rx) = async_channel::bounded::<()>(1);

    let handle = ClusterExecutor::spawn_per_core(seeds(), move |client| {
        let written_tx = written_tx.clone();
        let done_rx = done_rx.clone();
        async move {
            let report = work(&client).await;
            let _ = written_tx.send(client.core());
            // Err once the main thread drops its end: time to finish.
            let _ = done_rx.recv().await;
            report
        }
    })?;
    let cores = handle.cpus().len();
    println!("running on {cores} cores, CPUs {:?}", handle.cpus());

    for _ in 0..cores {
        // A core that fails (or panics) before writing says nothing, hence
        // the timeout.
        if written.recv_timeout(Duration::from_secs(10)).is_err() {
            eprintln!("a core did not finish its writes; joining anyway");
            break;
        }
    }

    // The main thread is no executor: a RemoteClient's calls enter a core
    // through a channel and run there.
    let remote = handle.remote();
    let used = block_on(async {
        for core in 0..cores {
            let value: Option<String> = remote.command(["GET", key(core, 0).as_str()]).await?;
            println!("main thread: GET {} -> {value:?}", key(core, 0));
        }
        let counters = remote
            .pipeline((0..COUNTERS).map(|i| cmd("GET").arg(counter(i))))
            .await?
            .into_iter()
            .map(redcore::FromValue::from_value)
            .collect::<redcore::Result<Vec<Option<i64>>>>()?;
        println!("main thread: counters after every core's INCRs -> {counters:?}");

        // Clean up: one DEL per key, as a pipeline over the cluster.
        let keys = (0..cores)
            .flat_map(|core| (0..KEYS).map(move |i| key(core, i)))
            .chain((0..COUNTERS).map(counter));
        let deleted = remote.pipeline(keys.map(|k| cmd("DEL").arg(k))).await?;
        let deleted: i64 = deleted
            .into_iter()
            .map(|v| redcore::FromValue::from_value(v).unwrap_or(0i64))
            .sum();
        println!("main thread: deleted {deleted} keys");
        Ok::<(), redcore::Error>(())
    });
    // Let the cores finish, whatever happened here.
    drop(done);
    let mut failed = false;
    if let Err(e) = used {
        failed = true;
        eprintln!("main thread: {e}");
    }

    for (core, result) in handle.join().into_iter().enumerate() {
        match result {
            Ok(Ok(r)) => println!(
                "core {} (CPU {}): {} keys set and read back ({} served here, {} through \
                 another core), counters after its pipeline {:?}, cross-core: {} requests \
                 sent, {} served, {} messages sent, {} received",
                r.core,
                r.cpu,
                KEYS,
                r.local_keys,
                r.remote_keys,
                r.counters,
                r.hops.requests_sent,
                r.hops.requests_served,
                r.hops.messages_sent,
                r.hops.messages_received,
            ),
            Ok(Err(e)) => {
                failed = true;
                eprintln!("core {core}: {e}");
            }
            Err(e) => {
                failed = true;
                eprintln!("{e}");
            }
        }
    }
    if failed {
        return Err("some cores failed".into());
    }
    Ok(())
}
