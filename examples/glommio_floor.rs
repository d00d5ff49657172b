//! The floor under a lone request: one command at a time over a bare
//! glommio `TcpStream`, with none of redcore in the way, to compare
//! redcore's one-task round trip with what the runtime itself costs
//! (`tools/compare.sh --peer redis-rs` runs it beside redcore-load and
//! redis-rs).
//!
//! Each round trip writes one `SET key:N <32 bytes>` or `GET key:N`
//! (alternating, N uniform in 0..100000, as `redcore-load --ratio 1:1`)
//! and reads until the reply is whole. Two modes:
//!
//! - `bare`: nothing else on the executor;
//! - `deadline`: each request also keeps a glommio `Timer` for its
//!   deadline (5 s, never reached), as any client that keeps deadlines
//!   must: glommio then arms and cancels a timeout on its ring around
//!   every sleep.
//!
//! Prints one line: `glommio-floor mode=<m> requests=<n> ops_per_sec=<x>
//! p50_us=<y> cpu_us_per_cmd=<z>`, the CPU being user + system time of
//! the process (getrusage) over the measured requests.
//!
//! ```text
//! cargo run --release --example glommio_floor -- 127.0.0.1:6379 20000 bare [CPU]
//! ```

use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt, future};
use glommio::net::TcpStream;
use glommio::timer::Timer;
use glommio::{LocalExecutorBuilder, Placement};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: glommio_floor HOST:PORT REQUESTS bare|deadline [CPU]";
    let (Some(addr), Some(n), Some(mode)) = (args.first(), args.get(1), args.get(2)) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let addr = addr.clone();
    let n: usize = n.parse().expect(usage);
    let deadline = match mode.as_str() {
        "bare" => false,
        "deadline" => true,
        _ => panic!("{usage}"),
    };
    let placement = match args.get(3) {
        Some(cpu) => Placement::Fixed(cpu.parse().expect(usage)),
        None => Placement::Unbound,
    };
    let mode = mode.clone();
    LocalExecutorBuilder::new(placement)
        .io_memory(64 << 10)
        .spawn(move || async move {
            let mut stream = TcpStream::connect(addr.as_str()).await.expect("connect");
            stream.set_nodelay(true).expect("TCP_NODELAY");
            let mut buf = vec![0u8; 16 << 10];
            let mut req = Vec::with_capacity(128);
            let mut latencies = Vec::with_capacity(n);
            let mut rng = 0x9e37_79b9_7f4a_7c15u64;
            let warmup = n / 10;
            let (mut started, mut cpu_before) = (Instant::now(), cpu_seconds());
            for i in 0..warmup + n {
                if i == warmup {
                    started = Instant::now();
                    cpu_before = cpu_seconds();
                }
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let key = format!("key:{}", rng % 100_000);
                req.clear();
                if i % 2 == 0 {
                    push_command(&mut req, &[b"SET", key.as_bytes(), &[b'v'; 32]]);
                } else {
                    push_command(&mut req, &[b"GET", key.as_bytes()]);
                }
                let sent = Instant::now();
                let round_trip = async {
                    stream.write_all(&req).await.expect("write");
                    let mut got = 0;
                    while !whole_reply(&buf[..got]) {
                        let r = stream.read(&mut buf[got..]).await.expect("read");
                        assert!(r > 0, "the server closed the connection");
                        got += r;
                    }
                };
                if deadline {
                    future::or(round_trip, async {
                        Timer::new(Duration::from_secs(5)).await;
                        panic!("no reply within 5 s");
                    })
                    .await;
                } else {
                    round_trip.await;
                }
                if i >= warmup {
                    latencies.push(sent.elapsed());
                }
            }
            let elapsed = started.elapsed().as_secs_f64();
            let cpu = cpu_seconds() - cpu_before;
            latencies.sort_unstable();
            let p50 = latencies[latencies.len() / 2];
            println!(
                "glommio-floor mode={mode} requests={n} ops_per_sec={:.0} p50_us={:.1} cpu_us_per_cmd={:.2}",
                n as f64 / elapsed,
                p50.as_secs_f64() * 1e6,
                cpu * 1e6 / n as f64
            );
        })
        .expect("start the executor")
        .join()
        .expect("the executor panicked");
}

/// Appends a RESP array of bulk strings.
fn push_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// True when `b` holds one whole reply of the kinds SET and GET give:
/// `+OK`, `$-1`, `$N <N bytes>`, or an error line.
fn whole_reply(b: &[u8]) -> bool {
    let Some(line_end) = b.windows(2).position(|w| w == b"\r\n") else {
        return false;
    };
    if b[0] != b'$' {
        return true;
    }
    let len: i64 = std::str::from_utf8(&b[1..line_end])
        .ok()
        .and_then(|s| s.parse().ok())
        .expect("a bulk length");
    len < 0 || b.len() >= line_end + 2 + len as usize + 2
}

/// User + system CPU time of the whole process, in seconds.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}
