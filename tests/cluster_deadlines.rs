//! `with_timeout` sets the one end-to-end deadline of every call made
//! through the handle, on every client: [`Connection`], [`Cluster`],
//! [`CoreClient`] on each core (for nodes it owns and nodes another core
//! owns) and [`RemoteClient`]. Shorter than the configured 5 s: a command
//! the server holds for a second (`BLPOP key 1` on an empty list, or
//! `DEBUG SLEEP 1`) fails with `Timeout { maybe_applied: true }` at about
//! 200 ms. Longer: `BLPOP key 6` with an 8 s deadline returns nil at 6 s
//! instead of timing out at the default 5 s.
//!
//! Each check prints what it measured (`--nocapture` shows it).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use futures_lite::future::block_on;
use redcore::Commands;
use redcore::cluster::Cluster;
use redcore::{ClusterConfig, ClusterExecutor, CoreClient, Error, Value, cmd};
use redcore_test_support::client::{run, url, wait_until};
use redcore_test_support::{RedisCluster, RedisServer, key_in_slot};

/// The short deadline under test.
const SHORT: Duration = Duration::from_millis(200);
/// The long deadline under test, and the server-side block it must outlast.
const LONG: Duration = Duration::from_secs(8);
const BLOCK_SECS: u64 = 6;
/// How late past its deadline a call may end in these tests. The issue's
/// target is 100 ms, measured in the closing note; tests on a loaded
/// 2-core CI machine get more room.
const LATE: Duration = Duration::from_millis(250);

/// Checks that a call given `SHORT` failed with a may-have-been-applied
/// timeout, neither before its deadline nor long after.
#[track_caller]
fn assert_short_timeout<T: std::fmt::Debug>(what: &str, took: Duration, result: Result<T, Error>) {
    eprintln!("{what}: {result:?} after {took:?}");
    assert!(
        matches!(
            result,
            Err(Error::Timeout {
                maybe_applied: true
            })
        ),
        "{what}: expected a timeout after sending, got {result:?}"
    );
    assert!(
        took >= SHORT,
        "{what}: gave up after {took:?}, before its deadline"
    );
    assert!(
        took < SHORT + LATE,
        "{what}: gave up after {took:?}, past its {SHORT:?} deadline"
    );
}

/// Checks that `BLPOP key 6` under `LONG` returned nil when the server
/// said so, not a timeout at the default 5 s.
#[track_caller]
fn assert_blocked_to_nil(what: &str, took: Duration, result: Result<Option<String>, Error>) {
    eprintln!("{what}: {result:?} after {took:?}");
    assert!(
        matches!(result, Ok(None)),
        "{what}: expected nil from the server, got {result:?}"
    );
    let block = Duration::from_secs(BLOCK_SECS);
    assert!(
        took >= block && took < LONG,
        "{what}: returned after {took:?}"
    );
}

/// Runs `f` and returns how long it took with its result.
async fn timed<T>(f: impl Future<Output = T>) -> (Duration, T) {
    let started = Instant::now();
    let out = f.await;
    (started.elapsed(), out)
}

#[test]
fn connection_with_timeout_is_each_calls_deadline() {
    let server = RedisServer::start();
    let url = url(&server);
    run(move || async move {
        let conn = redcore::Connection::connect(url.as_str()).await.unwrap();
        // The long call first: a call that timed out still holds the
        // socket on the server until the server is done with it.
        let long = conn.with_timeout(LONG);
        let (took, r) = timed(long.command(cmd("BLPOP").arg("conn:long").arg(BLOCK_SECS))).await;
        assert_blocked_to_nil("Connection BLPOP 6", took, r);
        let short = conn.with_timeout(SHORT);
        let (took, r) = timed(short.command::<()>(["BLPOP", "conn:empty", "1"])).await;
        assert_short_timeout("Connection BLPOP 1", took, r);
        let (took, r) = timed(short.pipeline([["BLPOP", "conn:empty", "1"]])).await;
        assert_short_timeout("Connection pipeline [BLPOP 1]", took, r);
        let (took, r) = timed(short.command::<()>(["DEBUG", "SLEEP", "1"])).await;
        assert_short_timeout("Connection DEBUG SLEEP 1", took, r);
        // The connection is in sync afterwards.
        let pong: String = conn.command(["PING"]).await.unwrap();
        assert_eq!(pong, "PONG");
    });
}

/// A key served by each master of `cluster`, wrapped as a hash tag so
/// that keys made by appending to it stay in its slot.
fn key_per_master(cluster: &RedisCluster, prefix: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut seen = Vec::new();
    for slot in (0..16384u16).step_by(97) {
        let owner = cluster.slot_owner_index(slot);
        if !seen.contains(&owner) {
            seen.push(owner);
            let key = key_in_slot(slot, &format!("{prefix}:{owner}:"));
            keys.push(format!("{{{key}}}"));
        }
    }
    assert_eq!(keys.len(), cluster.master_indices().len());
    keys
}

fn cluster_config(cluster: &RedisCluster) -> ClusterConfig {
    ClusterConfig::builder()
        .seeds(cluster.seed_addrs())
        .build()
        .expect("a valid config")
}

/// A runtime of two cores with sharded ownership, so that every core
/// reaches masters it owns and masters another core owns.
struct TwoCores {
    handle: redcore::ExecutorHandle<()>,
    /// Cores whose function is done.
    finished: Arc<AtomicUsize>,
}

impl TwoCores {
    /// Each core runs `f`, then waits for the shutdown, so that the test
    /// thread can use the remote client meanwhile.
    fn start<F, Fut>(config: ClusterConfig, f: F) -> TwoCores
    where
        F: Fn(CoreClient) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let f = Arc::new(f);
        let finished = Arc::new(AtomicUsize::new(0));
        let done = finished.clone();
        let handle = ClusterExecutor::new(config)
            .unwrap()
            .cores(2)
            .unwrap()
            .spawn(move |client: CoreClient| {
                let (f, done) = (f.clone(), done.clone());
                async move {
                    f(client.clone()).await;
                    done.fetch_add(1, Ordering::AcqRel);
                    wait_until("the shutdown", Duration::from_secs(60), || {
                        client.is_shutting_down()
                    })
                    .await;
                }
            })
            .unwrap();
        TwoCores { handle, finished }
    }

    /// Waits for both cores' functions, then shuts the runtime down.
    fn finish(self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.finished.load(Ordering::Acquire) < 2 {
            assert!(Instant::now() < deadline, "the cores' checks did not end");
            thread::sleep(Duration::from_millis(5));
        }
        self.handle.shutdown();
        for (core, r) in self.handle.join().into_iter().enumerate() {
            r.unwrap_or_else(|e| panic!("core {core}: {e}"));
        }
    }
}

#[test]
fn cluster_clients_keep_the_deadline_of_with_timeout() {
    let cluster = RedisCluster::start();
    let config = cluster_config(&cluster);
    let keys = Arc::new(key_per_master(&cluster, "k"));

    // Longer than the default: every client at once, each on keys of
    // its own (nothing else runs on the servers meanwhile).
    let single = {
        let config = config.clone();
        thread::spawn(move || {
            run(move || async move {
                let cluster = Cluster::connect(config).await.unwrap();
                let long = cluster.with_timeout(LONG);
                let (took, r) =
                    timed(long.command(cmd("BLPOP").arg("{long}:single").arg(BLOCK_SECS))).await;
                assert_blocked_to_nil("Cluster BLPOP 6", took, r);
            })
        })
    };
    // The runtime's three master connections are shared by both cores
    // and the remote client, and a connection carries one blocked
    // command at a time: two rounds, each on distinct masters. Round 1:
    // each core on a master it owns; round 2: each on one another core
    // owns. The remote client goes in round 1, on the master left.
    let used = Arc::new([AtomicUsize::new(usize::MAX), AtomicUsize::new(usize::MAX)]);
    let round_one = Arc::new(AtomicUsize::new(0));
    let runtime = {
        let (keys, used, round_one) = (keys.clone(), used.clone(), round_one.clone());
        TwoCores::start(config.clone(), move |client| {
            let (keys, used, round_one) = (keys.clone(), used.clone(), round_one.clone());
            async move {
                let core = client.core();
                let long = client.with_timeout(LONG);
                let owner = |i: usize| client.owner_of_key(keys[i].as_str());
                let blpop = async |i: usize, what: &str| {
                    let key = format!("{}:long:{core}", keys[i]);
                    let what = format!("core {core} BLPOP {key} 6 ({what})");
                    let (took, r) =
                        timed(long.command(cmd("BLPOP").arg(&key).arg(BLOCK_SECS))).await;
                    assert_blocked_to_nil(&what, took, r);
                };
                let own = (0..keys.len()).find(|&i| owner(i) == Some(core)).unwrap();
                used[core].store(own, Ordering::Release);
                blpop(own, "a master this core owns").await;
                round_one.fetch_add(1, Ordering::AcqRel);
                wait_until("round one", Duration::from_secs(30), || {
                    round_one.load(Ordering::Acquire) == 2
                })
                .await;
                // Core 0 takes the master core 1 owns; core 1 one that
                // core 0 owns, other than that one.
                let other = (0..keys.len())
                    .find(|&i| owner(i) != Some(core) && (core == 0 || i != own))
                    .unwrap();
                blpop(other, "a master another core owns").await;
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let taken = loop {
        let taken: Vec<usize> = used.iter().map(|u| u.load(Ordering::Acquire)).collect();
        if taken.iter().all(|&i| i != usize::MAX) {
            break taken;
        }
        assert!(Instant::now() < deadline, "the cores did not start");
        thread::sleep(Duration::from_millis(2));
    };
    let left = (0..keys.len()).find(|i| !taken.contains(i)).unwrap();
    let started = Instant::now();
    let r = block_on(
        runtime.handle.remote().with_timeout(LONG).command(
            cmd("BLPOP")
                .arg(format!("{}:long:remote", keys[left]))
                .arg(BLOCK_SECS),
        ),
    );
    assert_blocked_to_nil("RemoteClient BLPOP 6", started.elapsed(), r);
    runtime.finish();
    single.join().expect("the single-core client's checks");

    // Shorter than the default: one client after the other (`DEBUG
    // SLEEP` holds a whole master).
    {
        let (config, keys) = (config.clone(), keys.clone());
        run(move || async move {
            let cluster = Cluster::connect(config).await.unwrap();
            let short = cluster.with_timeout(SHORT);
            for key in keys.iter() {
                let (took, r) = timed(short.command::<()>(["BLPOP", key.as_str(), "1"])).await;
                assert_short_timeout(&format!("Cluster BLPOP {key} 1"), took, r);
                let (took, r) = timed(short.pipeline([["BLPOP", key.as_str(), "1"]])).await;
                assert_short_timeout(&format!("Cluster pipeline [BLPOP {key} 1]"), took, r);
            }
            let (took, r) = timed(short.command::<()>(["DEBUG", "SLEEP", "1"])).await;
            assert_short_timeout("Cluster DEBUG SLEEP 1", took, r);
            let (took, r) = timed(short.pipeline([["DEBUG", "SLEEP", "1"]])).await;
            assert_short_timeout("Cluster pipeline [DEBUG SLEEP 1]", took, r);
        });
    }
    let turn = Arc::new(AtomicUsize::new(0));
    let runtime = {
        let (keys, turn) = (keys.clone(), turn.clone());
        TwoCores::start(config, move |client| {
            let (keys, turn) = (keys.clone(), turn.clone());
            async move {
                let core = client.core();
                wait_until("this core's turn", Duration::from_secs(60), || {
                    turn.load(Ordering::Acquire) == core
                })
                .await;
                let short = client.with_timeout(SHORT);
                for key in keys.iter() {
                    let what = format!("core {core} BLPOP {key} 1");
                    let (took, r) = timed(short.command::<()>(["BLPOP", key.as_str(), "1"])).await;
                    assert_short_timeout(&what, took, r);
                    let (took, r) = timed(short.pipeline([["BLPOP", key.as_str(), "1"]])).await;
                    assert_short_timeout(&format!("{what} (pipeline)"), took, r);
                }
                let (took, r) = timed(short.command::<()>(["DEBUG", "SLEEP", "1"])).await;
                assert_short_timeout(&format!("core {core} DEBUG SLEEP 1"), took, r);
                let (took, r) = timed(short.pipeline([["DEBUG", "SLEEP", "1"]])).await;
                assert_short_timeout(&format!("core {core} pipeline [DEBUG SLEEP 1]"), took, r);
                turn.fetch_add(1, Ordering::AcqRel);
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while turn.load(Ordering::Acquire) < 2 {
        assert!(Instant::now() < deadline, "the cores' checks did not end");
        thread::sleep(Duration::from_millis(5));
    }
    let short = runtime.handle.remote().with_timeout(SHORT);
    for key in keys.iter() {
        let started = Instant::now();
        let r = block_on(short.command::<Value>(["BLPOP", key.as_str(), "1"]));
        assert_short_timeout(&format!("RemoteClient BLPOP {key} 1"), started.elapsed(), r);
    }
    let started = Instant::now();
    let r = block_on(short.command::<Value>(["DEBUG", "SLEEP", "1"]));
    assert_short_timeout("RemoteClient DEBUG SLEEP 1", started.elapsed(), r);
    let started = Instant::now();
    let r = block_on(short.pipeline([["DEBUG", "SLEEP", "1"]]));
    assert_short_timeout(
        "RemoteClient pipeline [DEBUG SLEEP 1]",
        started.elapsed(),
        r,
    );
    runtime.finish();
}
