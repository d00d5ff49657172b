//! A server that floods: a scripted fake node answers one `GET` with a
//! reply far too large to hold — an endless array of integers at full
//! speed and at 50 MB/s, endless arrays of bulk strings, a whole array of
//! 2^25 integers (134 MB on the wire), endless nested arrays — and the
//! client must stay within its configured reply limit:
//!
//! - the call fails with a clear error (the reply limit, or its deadline)
//!   by its deadline + 100 ms;
//! - the process's peak RSS stays under the reply limit + 64 MiB, also
//!   while the rest of the flood is skipped;
//! - once the node heals (the flood stops; the client reconnects if the
//!   flood was cut mid-frame), the connection answers a normal `GET` and
//!   RSS is back under 32 MiB within a second.
//!
//! Every scenario measures the memory of the whole process
//! (`/proc/self/status`), and `cargo test` runs the tests of one binary
//! in threads of one process: so they all run in the one test of this
//! binary, one after the other, resetting the peak between them
//! (`/proc/self/clear_refs`). Run it on both transports
//! (`REDCORE_TRANSPORT=io_uring`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redcore::Commands;
use redcore::resp::{DecoderLimits, ProtocolError};
use redcore::{Connection, Error, Value};
use redcore_test_support::client::{base, eventually, run, wait_until};
use redcore_test_support::{FakeCall, FakeNode, FakeReply, FakeStream};

/// The reply limit of the test's connections.
const LIMIT: usize = 64 << 20;
/// Peak RSS allowed above it.
const MARGIN: usize = 64 << 20;
/// RSS once the node healed.
const HEALED: usize = 32 << 20;
/// The calls' deadline.
const TIMEOUT: Duration = Duration::from_secs(1);
/// How late the error may come: the target, 100 ms. An unoptimised build
/// decodes some twenty times slower (a slice of the flood between two
/// looks at the clock takes tens of milliseconds), so it is given more.
const SLACK: Duration = if cfg!(debug_assertions) {
    Duration::from_millis(300)
} else {
    Duration::from_millis(100)
};

/// A field of `/proc/self/status`, in bytes.
fn status(field: &str) -> usize {
    let text = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let line = text
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"));
    let kb: usize = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("bad line {line:?}"));
    kb * 1024
}

fn rss() -> usize {
    status("VmRSS:")
}

fn peak() -> usize {
    status("VmHWM:")
}

/// Resets the peak to the current RSS.
fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").expect("write /proc/self/clear_refs");
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// What the flooded call must fail with.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// The reply limit, or its deadline if decoding is slower than the
    /// flood (an unoptimised build decodes the 5.6 MB of integers that
    /// reach the limit in about a second).
    TooLargeOrTimeout,
    /// Its deadline: the reply streams in too slowly to pass the limit
    /// first.
    Timeout,
}

struct Scenario {
    name: &'static str,
    /// Endless unless a count is given; `stop` ends it.
    head: Vec<u8>,
    unit: Vec<u8>,
    count: Option<u64>,
    rate: Option<u64>,
    expect: Expect,
    /// Bytes the node writes after the error before the flood stops, so
    /// that the skipping is measured too.
    more: u64,
}

fn scenarios() -> Vec<Scenario> {
    let endless = b"*4294967295\r\n".to_vec();
    let mut bulk = b"$1000\r\n".to_vec();
    bulk.extend_from_slice(&[b'v'; 1000]);
    bulk.extend_from_slice(b"\r\n");
    vec![
        Scenario {
            name: "endless integers, full speed",
            head: endless.clone(),
            unit: b":1\r\n".to_vec(),
            count: None,
            rate: None,
            expect: Expect::TooLargeOrTimeout,
            more: 48 << 20,
        },
        Scenario {
            name: "endless integers, 50 MB/s",
            head: endless.clone(),
            unit: b":1\r\n".to_vec(),
            count: None,
            rate: Some(50_000_000),
            expect: Expect::TooLargeOrTimeout,
            more: 25_000_000,
        },
        Scenario {
            name: "endless 1 KB bulk strings, full speed",
            head: endless.clone(),
            unit: bulk.clone(),
            count: None,
            rate: None,
            expect: Expect::TooLargeOrTimeout,
            more: 48 << 20,
        },
        Scenario {
            // 64 MiB of payload take 1.3 s at this rate: the deadline
            // comes first, while the reply streams in.
            name: "endless 1 KB bulk strings, 50 MB/s",
            head: endless.clone(),
            unit: bulk,
            count: None,
            rate: Some(50_000_000),
            expect: Expect::Timeout,
            more: 25_000_000,
        },
        Scenario {
            name: "2^25 integers (134 MB), full speed",
            head: format!("*{}\r\n", 1u64 << 25).into_bytes(),
            unit: b":1\r\n".to_vec(),
            count: Some(1 << 25),
            rate: None,
            expect: Expect::TooLargeOrTimeout,
            more: 0,
        },
        Scenario {
            name: "endless nested arrays, full speed",
            head: endless,
            unit: b"*2\r\n*2\r\n:1\r\n:2\r\n*2\r\n:3\r\n:4\r\n".to_vec(),
            count: None,
            rate: None,
            expect: Expect::TooLargeOrTimeout,
            more: 48 << 20,
        },
    ]
}

fn config(port: u16) -> redcore::ConnectionConfig {
    // The connection's own timeout is long, so that its socket is not
    // taken for dead (a reply overdue by a whole timeout) while the flood
    // is skipped; the flooded call has its own, short one.
    base(port)
        .timeout(Duration::from_secs(30))
        .decoder_limits(
            DecoderLimits::default()
                .max_reply_bytes(LIMIT)
                .max_aggregate_len(u32::MAX as usize),
        )
        .backoff_initial(Duration::from_millis(10))
        .backoff_max(Duration::from_millis(50))
        .build()
        .unwrap()
}

/// Runs one scenario; panics with its name on a broken promise.
async fn flood(s: Scenario) {
    let stop = Arc::new(AtomicBool::new(false));
    let mut stream = FakeStream::repeat(&s.head, &s.unit, s.count).until(stop.clone());
    if let Some(rate) = s.rate {
        stream = stream.rate(rate);
    }
    let finite = s.count.is_some();
    if !finite {
        // Cut in the middle of the frame: only a new socket is in step.
        stream = stream.then_close();
    }
    let written = stream.written();
    let node = FakeNode::start_with(move |call: &FakeCall<'_>| {
        if !call.is("GET") {
            FakeReply::Default
        } else if call.arg(1).as_deref() == Some("flood") {
            stream.clone().into()
        } else {
            FakeReply::bulk("ok")
        }
    });
    let name = s.name;
    let conn = Connection::connect(config(node.port())).await.unwrap();
    let transport = conn.transport();
    reset_peak();
    let base = rss();
    let started = Instant::now();
    let e = conn
        .with_timeout(TIMEOUT)
        .command::<Value>(["GET", "flood"])
        .await
        .unwrap_err();
    let took = started.elapsed();
    match s.expect {
        Expect::TooLargeOrTimeout => assert!(
            matches!(
                e,
                Error::Protocol(ProtocolError::ReplyTooLarge { limit: LIMIT })
                    | Error::Timeout {
                        maybe_applied: true
                    }
            ),
            "{name}: {e:?}"
        ),
        Expect::Timeout => assert!(
            matches!(
                e,
                Error::Timeout {
                    maybe_applied: true
                }
            ),
            "{name}: {e:?}"
        ),
    }
    assert!(
        took <= TIMEOUT + SLACK,
        "{name}: the error came after {took:?}"
    );
    // The flood goes on (or the whole reply arrives) and is skipped.
    let at_error = written.load(Ordering::SeqCst);
    let what = format!("{name}: the flood to go on");
    // Skipping 134 MB takes seconds in an unoptimised build.
    wait_until(&what, Duration::from_secs(120), || {
        if finite {
            conn.stats().replies_skipped == 1
        } else {
            written.load(Ordering::SeqCst) >= at_error + s.more || node.connections() > 1
        }
    })
    .await;
    let flooded = written.load(Ordering::SeqCst);
    let high = peak();
    stop.store(true, Ordering::SeqCst);
    // Healed: a normal GET is answered (on a new socket if the flood was
    // cut mid-frame, on the same one if it ended).
    let what = format!("{name}: a normal GET");
    eventually(&what, Duration::from_secs(10), async || {
        matches!(
            conn.command::<String>(["GET", "k"]).await.as_deref(),
            Ok("ok")
        )
    })
    .await;
    if finite {
        assert_eq!(
            conn.stats().reconnects,
            0,
            "{name}: the socket was replaced"
        );
    }
    let healed = Instant::now();
    let what = format!("{name}: RSS under {} MiB", mib(HEALED));
    wait_until(&what, Duration::from_secs(1), || rss() < HEALED).await;
    eprintln!(
        "{name} ({transport:?}): {e} after {took:?}; {:.0} MB written; \
         RSS {:.1} MiB before, peak {:.1} MiB; under {:.0} MiB {:?} after healing",
        flooded as f64 / 1e6,
        mib(base),
        mib(high),
        mib(HEALED),
        healed.elapsed(),
    );
    assert!(
        high <= LIMIT + MARGIN,
        "{name}: peak RSS {:.1} MiB is over {:.0} MiB",
        mib(high),
        mib(LIMIT + MARGIN)
    );
    conn.close();
}

#[test]
fn floods_stay_within_the_reply_limit() {
    run(|| async {
        for s in scenarios() {
            flood(s).await;
        }
    });
}
