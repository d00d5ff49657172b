//! `redcore::cluster::Cluster` against scripted fake nodes: the cases a
//! real cluster cannot produce on demand. Each fake node answers
//! `CLUSTER SLOTS` with a RESP2 reply built here (and `CLUSTER SHARDS`
//! with an unknown-subcommand error, to force the `SLOTS` path, unless a
//! test says otherwise), and scripts the rest: redirect loops, `ASK`,
//! `TRYAGAIN`, `CLUSTERDOWN`, garbage topologies, seeds that never answer
//! or hang up, `MOVED` to an empty host, plain errors, and a connection
//! that dies after a write.
//!
//! Timeouts are short (1.5 s per call), so a hang fails fast; every
//! expected failure is also timed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use redcore::Commands;
use redcore::cluster::{Cluster, NodeAddr};
use redcore::config::ClusterConfigBuilder;
use redcore::{ClusterConfig, Error, ServerErrorKind, Value};
use redcore_test_support::client::{run, within};
use redcore_test_support::{FakeCall, FakeNode, FakeReply, Reply as Frame, key_slot};

/// The deadline of every call (and of discovery).
const TIMEOUT: Duration = Duration::from_millis(1500);
/// Slack for timing assertions: scheduling, connects, handshakes (the
/// test machines are small and busy).
const SLACK: Duration = Duration::from_millis(500);
/// Past this, an awaited call is a hang and fails the test.
const HANG: Duration = Duration::from_millis(4500);
/// What Redis before 7.0 answers to `CLUSTER SHARDS`.
const UNKNOWN_SHARDS: &str = "ERR unknown subcommand 'SHARDS'. Try CLUSTER HELP.";
const KEY: &str = "k";
const TRYAGAIN: &str = "TRYAGAIN Multiple keys request during rehashing of slot";
const CLUSTERDOWN: &str = "CLUSTERDOWN The cluster is down";
const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";

fn key_slot_of(key: &str) -> u16 {
    key_slot(key.as_bytes())
}

/// A cluster config for `seeds` with short timeouts and no periodic
/// refresh (so the topology queries the nodes count are the test's).
fn config(seeds: &[SocketAddr]) -> ClusterConfigBuilder {
    ClusterConfig::builder()
        .seeds(seeds.iter().copied())
        .timeout(TIMEOUT)
        .refresh_min_interval(Duration::from_millis(10))
        .refresh_timeout(Duration::from_secs(1))
        .refresh_interval(None)
}

async fn connect(seeds: &[SocketAddr]) -> Cluster {
    Cluster::connect(config(seeds).build().expect("config"))
        .await
        .expect("connect to the fake cluster")
}

/// A node id of 40 hex digits, distinct per port.
fn node_id(addr: SocketAddr) -> String {
    format!("{:040x}", addr.port())
}

/// `[ip, port, id]`, a `CLUSTER SLOTS` node.
fn slots_node(addr: SocketAddr) -> Frame {
    Frame::Array(vec![
        Frame::Bulk(addr.ip().to_string().into_bytes()),
        Frame::Integer(addr.port().into()),
        Frame::Bulk(node_id(addr).into_bytes()),
    ])
}

/// A `CLUSTER SLOTS` reply: one `[start, end, master]` entry per range.
fn slots(ranges: &[(u16, u16, SocketAddr)]) -> FakeReply {
    FakeReply::Value(Frame::Array(
        ranges
            .iter()
            .map(|&(start, end, addr)| {
                Frame::Array(vec![
                    Frame::Integer(start.into()),
                    Frame::Integer(end.into()),
                    slots_node(addr),
                ])
            })
            .collect(),
    ))
}

/// Every slot served by `addr`.
fn whole(addr: SocketAddr) -> FakeReply {
    slots(&[(0, 16383, addr)])
}

/// A RESP2 `CLUSTER SHARDS` reply: one shard over every slot, `addr` its
/// only node, a healthy master.
fn shards_whole(addr: SocketAddr) -> FakeReply {
    let s = |t: &str| Frame::Bulk(t.as_bytes().to_vec());
    let node = Frame::Array(vec![
        s("id"),
        s(&node_id(addr)),
        s("port"),
        Frame::Integer(addr.port().into()),
        s("ip"),
        s(&addr.ip().to_string()),
        s("endpoint"),
        s(&addr.ip().to_string()),
        s("role"),
        s("master"),
        s("replication-offset"),
        Frame::Integer(100),
        s("health"),
        s("online"),
    ]);
    FakeReply::Value(Frame::Array(vec![Frame::Array(vec![
        s("slots"),
        Frame::Array(vec![Frame::Integer(0), Frame::Integer(16383)]),
        s("nodes"),
        Frame::Array(vec![node]),
    ])]))
}

/// The topology queries of a server without `CLUSTER SHARDS`: that is an
/// unknown subcommand, `CLUSTER SLOTS` answers `slots()`. `None` for any
/// other command.
fn slots_only(call: &FakeCall<'_>, slots: impl FnOnce() -> FakeReply) -> Option<FakeReply> {
    if call.is("CLUSTER SHARDS") {
        Some(FakeReply::error(UNKNOWN_SHARDS))
    } else if call.is("CLUSTER SLOTS") {
        Some(slots())
    } else {
        None
    }
}

/// A node that serves every slot itself and answers `GET` with `value`.
fn lone_node(value: &'static str) -> FakeNode {
    FakeNode::start_with(move |call| {
        if let Some(r) = slots_only(call, || whole(call.node)) {
            r
        } else if call.is("GET") {
            FakeReply::bulk(value)
        } else {
            FakeReply::Default
        }
    })
}

/// The `tried` text of an [`Error::NoTopology`].
#[track_caller]
fn no_topology<T: std::fmt::Debug>(result: Result<T, Error>) -> String {
    match result {
        Err(Error::NoTopology { tried }) => tried,
        other => panic!("expected Error::NoTopology, got {other:?}"),
    }
}

/// The number of topology queries a node received.
fn topology_queries(node: &FakeNode) -> usize {
    node.count("CLUSTER SLOTS") + node.count("CLUSTER SHARDS")
}

// 1. SLOTS fallback.

#[test]
fn shards_unknown_falls_back_to_slots_and_never_asks_shards_again() {
    run(|| async {
        let node = lone_node("v1");
        let cluster = connect(&[node.addr()]).await;
        assert_eq!(
            node.count("CLUSTER SHARDS"),
            1,
            "{:?}",
            node.received_names()
        );
        assert_eq!(
            node.count("CLUSTER SLOTS"),
            1,
            "{:?}",
            node.received_names()
        );
        let info = cluster.info();
        assert_eq!(info.slots_covered, 16384);
        assert_eq!(info.nodes[0].addr, NodeAddr::from(node.addr()), "{info:?}");

        let v: String = cluster.command(["GET", KEY]).await.expect("GET");
        assert_eq!(v, "v1");
        assert_eq!(node.count("GET"), 1);

        for _ in 0..3 {
            cluster.refresh().await.expect("refresh");
        }
        assert_eq!(
            node.count("CLUSTER SHARDS"),
            1,
            "SHARDS asked again after it was unknown: {:?}",
            node.received_names()
        );
        assert_eq!(
            node.count("CLUSTER SLOTS"),
            4,
            "{:?}",
            node.received_names()
        );
        let v: String = cluster.command(["GET", KEY]).await.expect("GET");
        assert_eq!(v, "v1");
    });
}

/// The contrast: a server with `CLUSTER SHARDS` is never asked `SLOTS`.
#[test]
fn shards_reply_is_used_when_the_server_has_it() {
    run(|| async {
        let node = FakeNode::start_with(|call| {
            if call.is("CLUSTER SHARDS") {
                shards_whole(call.node)
            } else if call.is("CLUSTER SLOTS") {
                FakeReply::error("ERR not expected here")
            } else if call.is("GET") {
                FakeReply::bulk("from-shards")
            } else {
                FakeReply::Default
            }
        });
        let cluster = connect(&[node.addr()]).await;
        let v: String = cluster.command(["GET", KEY]).await.expect("GET");
        assert_eq!(v, "from-shards");
        cluster.refresh().await.expect("refresh");
        assert_eq!(node.count("CLUSTER SHARDS"), 2);
        assert_eq!(node.count("CLUSTER SLOTS"), 0);
        let info = cluster.info();
        assert_eq!(info.nodes[0].id.as_deref(), Some(&*node_id(node.addr())));
    });
}

// 2. MOVED loop.

/// Node A: serves the whole slot range in its topology, and answers every
/// `GET` with `redirect(slot of KEY, B)`, B being the address set in the
/// returned cell once B is up.
fn sending_gets_away(
    redirect: fn(u16, SocketAddr) -> FakeReply,
) -> (FakeNode, Arc<OnceLock<SocketAddr>>) {
    let slot = key_slot_of(KEY);
    let b_addr: Arc<OnceLock<SocketAddr>> = Arc::default();
    let b = b_addr.clone();
    let a = FakeNode::start_with(move |call| {
        if let Some(r) = slots_only(call, || whole(call.node)) {
            r
        } else if call.is("GET") {
            redirect(slot, *b.get().expect("B is up"))
        } else {
            FakeReply::Default
        }
    });
    (a, b_addr)
}

/// Two nodes bouncing `GET k` to each other with `MOVED`, forever; the
/// call with `max_redirects` (`None`: the default, 5).
async fn moved_loop(max_redirects: Option<u32>) {
    let slot = key_slot_of(KEY);
    let (a, b_addr) = sending_gets_away(FakeReply::moved);
    let a_addr = a.addr();
    let b = FakeNode::start_with(move |call| {
        if let Some(r) = slots_only(call, || whole(a_addr)) {
            r
        } else if call.is("GET") {
            FakeReply::moved(slot, a_addr)
        } else {
            FakeReply::Default
        }
    });
    b_addr.set(b.addr()).expect("set once");

    let mut builder = config(&[a.addr()]);
    if let Some(max) = max_redirects {
        builder = builder.max_redirects(max);
    }
    let cluster = Cluster::connect(builder.build().expect("config"))
        .await
        .expect("connect");
    let max = max_redirects.unwrap_or(5);
    assert_eq!(cluster.config().max_redirects, max);

    let started = Instant::now();
    let result = within("a GET bounced forever", HANG, async {
        cluster.command::<Value>(["GET", KEY]).await
    })
    .await;
    let took = started.elapsed();
    match result {
        Err(Error::TooManyRedirects { redirects, last }) => {
            assert_eq!(redirects, max, "redirects followed");
            assert_eq!(last.kind(), ServerErrorKind::Moved, "{last:?}");
            assert!(last.message_lossy().starts_with(&format!("MOVED {slot} ")));
        }
        other => panic!("max_redirects {max}: expected TooManyRedirects, got {other:?}"),
    }
    assert!(
        took < TIMEOUT / 2,
        "max_redirects {max}: gave up after {took:?}, not quickly"
    );
    let (on_a, on_b) = (a.count("GET"), b.count("GET"));
    assert_eq!(
        on_a + on_b,
        max as usize + 1,
        "max_redirects {max}: GETs sent (A {on_a}, B {on_b})"
    );
    // A, B, A, B, ...
    assert_eq!(on_a, (max as usize + 2) / 2, "GETs on A");
    drop(cluster);
}

#[test]
fn moved_loop_stops_after_default_max_redirects() {
    run(|| moved_loop(None));
}

#[test]
fn moved_loop_stops_after_two_redirects() {
    run(|| moved_loop(Some(2)));
}

#[test]
fn moved_loop_with_zero_redirects_sends_once() {
    run(|| moved_loop(Some(0)));
}

// 3. ASK.

#[test]
fn ask_sends_asking_then_the_command_to_the_target_and_keeps_the_map() {
    run(|| async {
        let slot = key_slot_of(KEY);
        let (a, b_addr) = sending_gets_away(FakeReply::ask);
        let a_addr = a.addr();
        // Per connection: did the previous command say ASKING?
        let asking: Mutex<HashMap<usize, bool>> = Mutex::default();
        let b = FakeNode::start_with(move |call| {
            let mut asking = asking.lock().unwrap();
            let asked = asking.insert(call.conn, call.is("ASKING")) == Some(true);
            if let Some(r) = slots_only(call, || whole(a_addr)) {
                r
            } else if call.is("ASKING") {
                FakeReply::ok()
            } else if call.is("GET") && asked {
                FakeReply::bulk("from-b")
            } else if call.is("GET") {
                // As Redis does for an importing slot without ASKING.
                FakeReply::moved(slot, a_addr)
            } else {
                FakeReply::Default
            }
        });
        b_addr.set(b.addr()).expect("set once");

        let cluster = connect(&[a.addr()]).await;
        let before = cluster.info();
        let v: String = cluster.command(["GET", KEY]).await.expect("GET via ASK");
        assert_eq!(v, "from-b");
        assert_eq!(a.count("GET"), 1);
        assert_eq!(b.count("GET"), 1);
        assert_eq!(b.count("ASKING"), 1);
        // On B's log, ASKING comes right before the GET, on one connection.
        let log = b.received();
        let get = log
            .iter()
            .position(|(_, args)| args[0].eq_ignore_ascii_case(b"GET"))
            .expect("a GET on B");
        assert!(get > 0, "{:?}", b.received_names());
        assert!(log[get - 1].1[0].eq_ignore_ascii_case(b"ASKING"));
        assert_eq!(log[get - 1].0, log[get].0, "same connection");

        // The map is untouched: same epoch, A still owns the slot.
        let after = cluster.info();
        assert_eq!(after.epoch, before.epoch);
        assert_eq!(after.topology_changes, 0);
        let owner = after
            .nodes
            .iter()
            .find(|n| n.addr == NodeAddr::from(a_addr))
            .expect("A listed");
        assert_eq!(owner.slots, [(0, 16383)]);
        assert_eq!(owner.redirects, 1, "A sent one ASK");
        assert!(
            after
                .nodes
                .iter()
                .all(|n| n.addr == owner.addr || n.slots.is_empty()),
            "{after:?}"
        );
        // A second GET goes to A again (and is ASKed again).
        let v: String = cluster.command(["GET", KEY]).await.expect("GET");
        assert_eq!(v, "from-b");
        assert_eq!(a.count("GET"), 2);
        assert_eq!(b.count("ASKING"), 2);
    });
}

/// A node serving every slot that refuses the first `refusals` GETs with
/// `error` (`usize::MAX`: every GET), then answers `value`.
fn refusing_node(error: &'static str, refusals: usize, value: &'static str) -> FakeNode {
    let tries = AtomicUsize::new(0);
    FakeNode::start_with(move |call| {
        if let Some(r) = slots_only(call, || whole(call.node)) {
            r
        } else if call.is("GET") {
            if tries.fetch_add(1, Ordering::SeqCst) < refusals {
                FakeReply::error(error)
            } else {
                FakeReply::bulk(value)
            }
        } else {
            FakeReply::Default
        }
    })
}

/// GET through a client of `node`, which refuses it forever: the result
/// and how long the call took (failing the test if it hangs).
async fn get_refused_forever(node: &FakeNode, what: &str) -> (Result<Value, Error>, Duration) {
    let cluster = connect(&[node.addr()]).await;
    let started = Instant::now();
    let result = within(what, HANG, async {
        cluster.command::<Value>(["GET", KEY]).await
    })
    .await;
    (result, started.elapsed())
}

// 4. TRYAGAIN.

#[test]
fn tryagain_twice_then_the_value() {
    run(|| async {
        let node = refusing_node(TRYAGAIN, 2, "finally");
        let cluster = connect(&[node.addr()]).await;
        let started = Instant::now();
        let v: String = cluster.command(["GET", KEY]).await.expect("GET");
        assert_eq!(v, "finally");
        assert_eq!(node.count("GET"), 3);
        // Two backoffs of 20 and 40 ms.
        assert!(started.elapsed() < TIMEOUT / 2, "{:?}", started.elapsed());
    });
}

#[test]
fn tryagain_forever_returns_the_tryagain_error_by_the_deadline() {
    run(|| async {
        let node = refusing_node(TRYAGAIN, usize::MAX, "never");
        let (result, took) = get_refused_forever(&node, "GET under TRYAGAIN forever").await;
        match result {
            Err(Error::Server(e)) => {
                assert_eq!(e.kind(), ServerErrorKind::TryAgain, "{e:?}");
                assert_eq!(e.message_lossy(), TRYAGAIN);
            }
            other => panic!("expected the TRYAGAIN error, got {other:?}"),
        }
        assert!(took <= TIMEOUT + SLACK, "returned after {took:?}");
        assert!(node.count("GET") > 3, "retried: {}", node.count("GET"));
    });
}

// 5. CLUSTERDOWN.

#[test]
fn clusterdown_refreshes_then_succeeds() {
    run(|| async {
        let node = refusing_node(CLUSTERDOWN, 3, "up again");
        let cluster = connect(&[node.addr()]).await;
        let queries = topology_queries(&node);
        let v: String = cluster.command(["GET", KEY]).await.expect("GET");
        assert_eq!(v, "up again");
        assert_eq!(node.count("GET"), 4);
        assert!(
            topology_queries(&node) >= queries + 3,
            "{:?}",
            node.received_names()
        );
        // A refresh between every two GETs.
        let names = node.received_names();
        let gets: Vec<usize> = (0..names.len()).filter(|&i| names[i] == "GET").collect();
        for pair in gets.windows(2) {
            assert!(
                names[pair[0]..pair[1]].iter().any(|n| n == "CLUSTER"),
                "no refresh between two GETs: {names:?}"
            );
        }
    });
}

#[test]
fn clusterdown_forever_gives_up_at_the_deadline() {
    run(|| async {
        let node = refusing_node(CLUSTERDOWN, usize::MAX, "never");
        let (result, took) = get_refused_forever(&node, "GET under CLUSTERDOWN forever").await;
        // The refusal itself, not a timeout: a try is not started with
        // too little time left for it to mean anything.
        match &result {
            Err(Error::Server(e)) => assert_eq!(e.kind(), ServerErrorKind::ClusterDown),
            other => panic!("expected the CLUSTERDOWN error, got {other:?}"),
        }
        eprintln!("CLUSTERDOWN forever: {result:?} after {took:?}");
        assert!(took <= TIMEOUT + SLACK, "{took:?}");
        assert!(node.count("GET") > 2, "retried: {}", node.count("GET"));
    });
}

// 6. Garbage topology.

/// A seed whose topology reply is `garbage` (and whose `CLUSTER SHARDS`
/// is unknown unless `in_shards`).
fn garbage_seed(garbage: FakeReply, in_shards: bool) -> FakeNode {
    FakeNode::start_with(move |call| {
        if call.is("CLUSTER SHARDS") {
            if in_shards {
                garbage.clone()
            } else {
                FakeReply::error(UNKNOWN_SHARDS)
            }
        } else if call.is("CLUSTER SLOTS") {
            garbage.clone()
        } else {
            FakeReply::Default
        }
    })
}

/// Garbage topology replies: what, the reply, whether `CLUSTER SHARDS`
/// sends it, and a word the reason must contain.
fn garbage_cases() -> Vec<(&'static str, FakeReply, bool, &'static str)> {
    let node = Frame::Array(vec![
        Frame::Bulk(b"127.0.0.1".to_vec()),
        Frame::Integer(1),
        Frame::Bulk(b"id".to_vec()),
    ]);
    let entry = |start: Frame, end: Frame| {
        FakeReply::Value(Frame::Array(vec![Frame::Array(vec![
            start,
            end,
            node.clone(),
        ])]))
    };
    vec![
        (
            "slot bounds that are words",
            entry(Frame::Bulk(b"zero".to_vec()), Frame::Bulk(b"all".to_vec())),
            false,
            "a slot is not an integer",
        ),
        (
            "a slot range 0..20000",
            entry(Frame::Integer(0), Frame::Integer(20000)),
            false,
            "a slot is outside 0..16384",
        ),
        (
            "an integer instead of an array",
            FakeReply::int(42),
            false,
            "expected an array",
        ),
        (
            "a master that is a string",
            FakeReply::Value(Frame::Array(vec![Frame::Array(vec![
                Frame::Integer(0),
                Frame::Integer(16383),
                Frame::Bulk(b"127.0.0.1:1".to_vec()),
            ])])),
            false,
            "CLUSTER SLOTS reply",
        ),
        (
            "bytes that are not RESP",
            FakeReply::Raw(b"hello, not RESP\r\n".to_vec()),
            false,
            // A reply that breaks the stream fails its call as a lost
            // connection (as on a lone connection), not as a parse error.
            "connection lost",
        ),
        (
            "a CLUSTER SHARDS reply of integers",
            FakeReply::Value(Frame::Array(vec![Frame::Integer(1), Frame::Integer(2)])),
            true,
            "CLUSTER SHARDS reply",
        ),
    ]
}

#[test]
fn garbage_topology_fails_connect_naming_the_seed_and_why() {
    run(|| async {
        for (what, garbage, in_shards, why) in garbage_cases() {
            let seed = garbage_seed(garbage, in_shards);
            let started = Instant::now();
            let result = within(what, HANG, async {
                Cluster::connect(config(&[seed.addr()]).build().expect("config")).await
            })
            .await;
            let tried = no_topology(result);
            eprintln!("{what}: {tried}");
            assert!(
                tried.contains(&seed.addr().to_string()),
                "{what}: the seed is not named: {tried}"
            );
            assert!(tried.contains(why), "{what}: no {why:?} in: {tried}");
            assert!(
                started.elapsed() < TIMEOUT,
                "{what}: took {:?}",
                started.elapsed()
            );
            if in_shards {
                assert_eq!(seed.count("CLUSTER SLOTS"), 0, "{what}: no SLOTS fallback");
            }
        }
    });
}

#[test]
fn garbage_seed_then_a_valid_seed_connects() {
    run(|| async {
        for (what, garbage, in_shards, _) in garbage_cases() {
            let bad = garbage_seed(garbage, in_shards);
            let good = lone_node("good");
            let cluster = within(what, HANG, async {
                Cluster::connect(config(&[bad.addr(), good.addr()]).build().expect("config")).await
            })
            .await
            .unwrap_or_else(|e| panic!("{what}: connect failed: {e}"));
            // The seeds are asked together, and the good seed's whole answer
            // is taken without waiting for the bad one's, which may not even
            // have been sent yet: connecting is what is checked here.
            let info = cluster.info();
            assert_eq!(info.slots_covered, 16384, "{what}");
            let v: String = cluster
                .command(["GET", KEY])
                .await
                .unwrap_or_else(|e| panic!("{what}: GET failed: {e}"));
            assert_eq!(v, "good", "{what}");
            assert_eq!(bad.count("GET"), 0, "{what}");
        }
    });
}

// 7. Seeds that say nothing, or hang up.

/// A seed whose script is `reply` for every command (`all`) or only for
/// the topology queries.
fn mute_seed(reply: FakeReply, all: bool) -> FakeNode {
    FakeNode::start_with(move |call| {
        if all || call.is("CLUSTER") {
            reply.clone()
        } else {
            FakeReply::Default
        }
    })
}

/// `Cluster::connect` to `seed` alone fails, within the timeout, with
/// `NoTopology` naming it; the reason.
async fn connect_fails_in_time(what: &str, seed: &FakeNode) -> String {
    let started = Instant::now();
    let result = within(what, HANG, async {
        Cluster::connect(config(&[seed.addr()]).build().expect("config")).await
    })
    .await;
    let took = started.elapsed();
    let tried = no_topology(result);
    eprintln!("{what}: {tried} (after {took:?})");
    assert!(
        tried.contains(&seed.addr().to_string()),
        "{what}: the seed is not named: {tried}"
    );
    assert!(took <= TIMEOUT + SLACK, "{what}: failed after {took:?}");
    tried
}

#[test]
fn a_silent_seed_fails_connect_within_the_timeout() {
    run(|| async {
        let seed = mute_seed(FakeReply::Silent, true);
        let tried = connect_fails_in_time("silent from the handshake on", &seed).await;
        assert!(tried.contains("timed out"), "{tried}");
        let seed = mute_seed(FakeReply::Silent, false);
        let tried = connect_fails_in_time("silent to CLUSTER SHARDS", &seed).await;
        assert!(tried.contains("timed out"), "{tried}");
        assert_eq!(seed.count("CLUSTER SHARDS"), 1);
    });
}

#[test]
fn a_seed_that_hangs_up_fails_connect_within_the_timeout() {
    run(|| async {
        let seed = mute_seed(FakeReply::Close, true);
        let tried = connect_fails_in_time("closes at the handshake", &seed).await;
        assert!(tried.contains("closed the connection"), "{tried}");
        assert!(seed.connections() >= 1, "{tried}");
        let seed = mute_seed(FakeReply::Close, false);
        let tried = connect_fails_in_time("closes on CLUSTER SHARDS", &seed).await;
        assert!(tried.contains("connection lost"), "{tried}");
        assert_eq!(seed.count("CLUSTER SHARDS"), 1, "never sent again");
    });
}

/// A silent seed listed before a valid one neither stops the client from
/// connecting nor holds it up: an answer covering every slot is taken
/// without waiting for the rest of its group.
#[test]
fn a_silent_seed_then_a_valid_seed_connects() {
    run(|| async {
        let silent = mute_seed(FakeReply::Silent, false);
        let good = lone_node("good");
        let started = Instant::now();
        let cluster = within("connect", HANG, async {
            Cluster::connect(
                config(&[silent.addr(), good.addr()])
                    .build()
                    .expect("config"),
            )
            .await
        })
        .await
        .expect("connect past a silent seed");
        let took = started.elapsed();
        assert!(
            took < TIMEOUT / 2,
            "connect waited for the silent seed: {took:?}"
        );
        let v: String = cluster.command(["GET", KEY]).await.expect("GET");
        assert_eq!(v, "good");
    });
}

// 8. MOVED to an empty host.

#[test]
fn moved_to_an_empty_host_goes_to_the_replying_host() {
    run(|| async {
        let slot = key_slot_of(KEY);
        let b_addr: Arc<OnceLock<SocketAddr>> = Arc::default();
        let moved = Arc::new(AtomicUsize::new(0));
        // After the MOVED, both report the slot on B.
        let after = move |a: SocketAddr, b: SocketAddr| {
            let mut ranges = vec![(slot, slot, b)];
            if slot > 0 {
                ranges.push((0, slot - 1, a));
            }
            if slot < 16383 {
                ranges.push((slot + 1, 16383, a));
            }
            slots(&ranges)
        };
        let a = {
            let (b_addr, moved) = (b_addr.clone(), moved.clone());
            FakeNode::start_with(move |call| {
                let b = *b_addr.get().expect("B is up");
                let was_moved = moved.load(Ordering::SeqCst) > 0;
                if let Some(r) = slots_only(call, || {
                    if was_moved {
                        after(call.node, b)
                    } else {
                        whole(call.node)
                    }
                }) {
                    r
                } else if call.is("GET") {
                    moved.fetch_add(1, Ordering::SeqCst);
                    FakeReply::error(&format!("MOVED {slot} :{}", b.port()))
                } else {
                    FakeReply::Default
                }
            })
        };
        let a_addr = a.addr();
        let b = FakeNode::start_with(move |call| {
            if let Some(r) = slots_only(call, || after(a_addr, call.node)) {
                r
            } else if call.is("GET") {
                FakeReply::bulk("from-b")
            } else {
                FakeReply::Default
            }
        });
        b_addr.set(b.addr()).expect("set once");

        let cluster = connect(&[a_addr]).await;
        let v: String = cluster.command(["GET", KEY]).await.expect("GET");
        assert_eq!(v, "from-b");
        assert_eq!(a.count("GET"), 1);
        assert_eq!(b.count("GET"), 1);
        let info = cluster.info();
        let b_node = NodeAddr::new("127.0.0.1", b.port());
        let owner = info
            .nodes
            .iter()
            .find(|n| n.slots.iter().any(|&(s, e)| s <= slot && slot <= e))
            .expect("the slot is served");
        assert_eq!(owner.addr, b_node, "{info:?}");
        assert!(
            info.nodes.iter().all(|n| !n.addr.host.is_empty()),
            "{info:?}"
        );
        // The next GET goes straight to B.
        let v: String = cluster.command(["GET", KEY]).await.expect("GET");
        assert_eq!(v, "from-b");
        assert_eq!((a.count("GET"), b.count("GET")), (1, 2));
    });
}

// 9. A plain server error.

#[test]
fn a_server_error_that_is_not_a_redirect_is_returned_as_is_once() {
    run(|| async {
        let node = FakeNode::start_with(|call| {
            if let Some(r) = slots_only(call, || whole(call.node)) {
                r
            } else if call.is("GET") {
                FakeReply::error(WRONGTYPE)
            } else {
                FakeReply::Default
            }
        });
        let cluster = connect(&[node.addr()]).await;
        let queries = topology_queries(&node);
        match cluster.command::<Value>(["GET", KEY]).await {
            Err(Error::Server(e)) => {
                assert_eq!(e.kind(), ServerErrorKind::WrongType);
                assert_eq!(e.message_lossy(), WRONGTYPE);
            }
            other => panic!("expected WRONGTYPE, got {other:?}"),
        }
        assert_eq!(node.count("GET"), 1);
        assert_eq!(topology_queries(&node), queries, "no refresh for it");
    });
}

// 10. A connection that dies after the write.

#[test]
fn a_write_whose_connection_dies_is_connection_lost_and_never_resent() {
    run(|| async {
        let node = FakeNode::start_with(|call| {
            if let Some(r) = slots_only(call, || whole(call.node)) {
                r
            } else if call.is("SET") {
                FakeReply::Close
            } else if call.is("GET") {
                FakeReply::bulk("still here")
            } else {
                FakeReply::Default
            }
        });
        let cluster = connect(&[node.addr()]).await;
        let result = within("SET on a dying connection", HANG, async {
            cluster.command::<Value>(["SET", KEY, "v"]).await
        })
        .await;
        assert!(
            matches!(result, Err(Error::ConnectionLost)),
            "expected ConnectionLost, got {result:?}"
        );
        // Nothing sends it again later either.
        glommio::timer::sleep(Duration::from_millis(300)).await;
        assert_eq!(node.count("SET"), 1, "{:?}", node.received_names());
        // The node is reachable again for the next call.
        let v: String = cluster.command(["GET", KEY]).await.expect("GET");
        assert_eq!(v, "still here");
        assert_eq!(node.count("SET"), 1);
    });
}
