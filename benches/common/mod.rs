//! What the benches share: a table row and how to print the table,
//! process CPU time, the SET/GET loads every client runs (written once over
//! [`Commands`], so each client runs the same loop), the bare glommio
//! floors, and running `redis-benchmark` and reading its CSV output.
#![allow(dead_code)]

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::process::Command;
use std::rc::Rc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use redcore::{Cmd, Commands, Value};

/// The executor the redcore loads run on: unbound, with 64 KiB of io_uring
/// buffer memory; with `REDCORE_BENCH_SPIN_US=N` it spins N µs before
/// parking (trading CPU for latency at low load).
pub fn redcore_executor() -> glommio::LocalExecutorBuilder {
    let builder =
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound).io_memory(64 << 10);
    match std::env::var("REDCORE_BENCH_SPIN_US")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        Some(us) => builder.spin_before_park(Duration::from_micros(us)),
        None => builder,
    }
}

/// Distinct keys every load spreads over (`-r` of redis-benchmark).
pub const KEYS: u32 = 100_000;

/// One line of a bench's table.
pub struct Row {
    pub client: String,
    pub load: String,
    pub ops_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub cpu_us_per_op: f64,
    /// Commands per write to a socket (redcore and the bare loop only).
    pub cmds_per_write: Option<f64>,
}

impl Row {
    /// A row for `ops` operations done in `elapsed` with `cpu` of client
    /// CPU, their latencies in `hist` (nanoseconds).
    pub fn measured(
        client: &str,
        load: String,
        ops: f64,
        elapsed: Duration,
        hist: &Histogram<u64>,
        cpu: Duration,
        cmds_per_write: f64,
    ) -> Row {
        Row {
            client: client.into(),
            load,
            ops_per_sec: ops / elapsed.as_secs_f64(),
            p50_us: hist.value_at_quantile(0.5) as f64 / 1000.0,
            p99_us: hist.value_at_quantile(0.99) as f64 / 1000.0,
            cpu_us_per_op: cpu.as_secs_f64() * 1e6 / ops,
            cmds_per_write: Some(cmds_per_write),
        }
    }

    /// The row of a redis-benchmark run whose SET and GET tests each ran
    /// `requests` requests: the time-weighted rate of both (all requests
    /// over the time both tests took) and their mean latencies.
    pub fn redis_benchmark(
        load: String,
        [set, get]: &[CsvLine; 2],
        requests: usize,
        cpu: Duration,
    ) -> Row {
        let n = requests as f64;
        Row {
            client: "redis-benchmark".into(),
            load,
            ops_per_sec: 2.0 * n / (n / set.rps + n / get.rps),
            p50_us: (set.p50_ms + get.p50_ms) / 2.0 * 1000.0,
            p99_us: (set.p99_ms + get.p99_ms) / 2.0 * 1000.0,
            cpu_us_per_op: cpu.as_secs_f64() * 1e6 / (2.0 * n),
            cmds_per_write: None,
        }
    }
}

/// Prints the rows as a markdown table.
pub fn print_table(rows: &[Row]) {
    println!("| client | load | ops/s | p50 µs | p99 µs | client CPU µs/op | commands/write |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for r in rows {
        let per_write = r
            .cmds_per_write
            .map_or_else(|| "-".to_owned(), |c| format!("{c:.1}"));
        println!(
            "| {} | {} | {:.0} | {:.1} | {:.1} | {:.3} | {} |",
            r.client, r.load, r.ops_per_sec, r.p50_us, r.p99_us, r.cpu_us_per_op, per_write
        );
    }
}

/// User plus system CPU time of `who` (`RUSAGE_SELF`, `RUSAGE_CHILDREN`).
pub fn cpu_time(who: i32) -> Duration {
    // SAFETY: getrusage writes into the struct we pass and reads nothing else.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut u);
        u
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// The 32-byte value every load writes.
pub fn value32() -> String {
    "v".repeat(32)
}

/// Writes `key:{n}` for a random `n` below [`KEYS`] into `key`, reusing
/// its buffer.
pub fn random_key(key: &mut String) {
    key.clear();
    key.push_str("key:");
    key.push_str(itoa::Buffer::new().format(fastrand::u32(0..KEYS)));
}

/// Sends the `n`th command of a SET/GET load on `key`: SET with `value`
/// when `n` is even, else GET. The reply is dropped.
pub async fn set_or_get(client: &impl Commands, key: &str, value: &str, n: usize) {
    let reply: Value = if n % 2 == 0 {
        client.command(["SET", key, value]).await
    } else {
        client.command(["GET", key]).await
    }
    .expect("command");
    drop(reply);
}

/// What the tasks of one load share: the operations not yet started and
/// the latency histogram (nanoseconds).
pub struct Load {
    left: Cell<usize>,
    hist: RefCell<Histogram<u64>>,
}

impl Load {
    /// Takes up to `n` operations (fewer when fewer are left) to start:
    /// false once none are left.
    pub fn take(&self, n: usize) -> bool {
        let left = self.left.get();
        self.left.set(left - left.min(n));
        left > 0
    }

    /// Records `count` operations that took `nanos` each.
    pub fn record(&self, nanos: u64, count: u64) {
        self.hist
            .borrow_mut()
            .record_n(nanos, count)
            .expect("record");
    }
}

/// Runs `tasks` tasks, `task(t, load)` for `t` in `0..tasks`, sharing a
/// [`Load`] of `ops` operations, until they all return: the latencies they
/// recorded and the time they took.
pub async fn run_load<F, Fut>(tasks: usize, ops: usize, task: F) -> (Histogram<u64>, Duration)
where
    F: Fn(usize, Rc<Load>) -> Fut,
    Fut: Future<Output = ()> + 'static,
{
    let load = Rc::new(Load {
        left: Cell::new(ops),
        hist: RefCell::new(Histogram::new(3).expect("histogram")),
    });
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| glommio::spawn_local(task(t, load.clone())))
        .collect();
    for h in handles {
        h.await;
    }
    let elapsed = start.elapsed();
    let hist = load.hist.borrow().clone();
    (hist, elapsed)
}

/// `tasks` tasks each send single commands, SET and GET alternating, on
/// random keys ([`random_key`]) until `ops` operations are done in all;
/// one command in 8 is timed ([`timed`]).
pub async fn run_tasks<C: Commands + Clone + 'static>(
    client: &C,
    tasks: usize,
    ops: usize,
) -> (Histogram<u64>, Duration) {
    run_load(tasks, ops, |t, load| {
        let client = client.clone();
        async move {
            let value = value32();
            let mut n = t;
            let mut key = String::with_capacity(16);
            while load.take(1) {
                random_key(&mut key);
                let sent = timed(n).then(Instant::now);
                set_or_get(&client, &key, &value, n).await;
                if let Some(sent) = sent {
                    load.record(sent.elapsed().as_nanos() as u64, 1);
                }
                n += 1;
            }
        }
    })
    .await
}

/// `tasks` tasks each send explicit pipelines of `depth` commands (SET and
/// GET alternating, [`set_get_batch`]) until `ops` operations are done in
/// all; each command is recorded with its pipeline's time. A server error
/// in a reply fails the bench.
///
/// Keys are `key:n` for a random `n` below [`KEYS`] or, with `tags`, task
/// `t` uses keys `key:{tags[t % len]}:n`, all in the slot of that tag: one
/// cluster master per task, the way `redis-benchmark --cluster` gives each
/// client the keys of its own master.
pub async fn run_pipelines<C: Commands + Clone + 'static>(
    client: &C,
    tasks: usize,
    depth: usize,
    ops: usize,
    tags: &[String],
) -> (Histogram<u64>, Duration) {
    run_load(tasks, ops, |t, load| {
        let client = client.clone();
        let prefix = match tags {
            [] => "key:".to_owned(),
            tags => format!("key:{{{}}}:", tags[t % tags.len()]),
        };
        async move {
            let value = value32();
            let mut key = String::with_capacity(32);
            let mut batch = Vec::with_capacity(depth);
            while load.take(depth) {
                set_get_batch(&mut batch, depth, &value, &mut key, |key| {
                    key.clear();
                    key.push_str(&prefix);
                    key.push_str(itoa::Buffer::new().format(fastrand::u32(0..KEYS)));
                });
                let sent = Instant::now();
                let replies = client.pipeline(batch.iter()).await.expect("pipeline");
                assert_eq!(replies.len(), depth);
                if let Some(Value::Error(e)) = replies.iter().find(|v| matches!(v, Value::Error(_)))
                {
                    panic!("pipeline reply: {e:?}");
                }
                load.record(sent.elapsed().as_nanos() as u64, depth as u64);
            }
        }
    })
    .await
}

/// Rebuilds `batch` as `depth` commands, SET and GET alternating (SET
/// first, with `value`), each on the key `next_key` writes into `key`. The
/// `Cmd`s are built again in their own memory ([`Cmd::clear`]), so after
/// the first pipeline a command costs no allocation, as in a client that
/// keeps its commands.
pub fn set_get_batch(
    batch: &mut Vec<Cmd>,
    depth: usize,
    value: &str,
    key: &mut String,
    mut next_key: impl FnMut(&mut String),
) {
    batch.resize_with(depth, Cmd::new);
    for (i, c) in batch.iter_mut().enumerate() {
        next_key(key);
        c.clear();
        if i % 2 == 0 {
            c.push_arg("SET").push_arg(key.as_str()).push_arg(value);
        } else {
            c.push_arg("GET").push_arg(key.as_str());
        }
    }
}

/// Appends the `i`th command of a SET/GET load on `key` to `out`, encoded:
/// SET with `value` when `i` is even, else GET.
fn encode_set_get(out: &mut bytes::BytesMut, i: usize, key: &str, value: &str) {
    if i % 2 == 0 {
        redcore::Args::encode(&["SET", key, value], out);
    } else {
        redcore::Args::encode(&["GET", key], out);
    }
}

/// `depth` SET/GET commands (SET first, 32-byte values) on the keys
/// `next_key` gives, encoded back to back, ready to be written as they
/// are.
pub fn prepared_batch(depth: usize, mut next_key: impl FnMut() -> String) -> bytes::BytesMut {
    let value = value32();
    let mut batch = bytes::BytesMut::new();
    for i in 0..depth {
        encode_set_get(&mut batch, i, &next_key(), &value);
    }
    batch
}

/// A bare glommio `TcpStream` to `host:port` with `TCP_NODELAY`, for the
/// floor loops.
pub async fn bare_stream(host: &str, port: u16) -> glommio::net::TcpStream {
    let stream = glommio::net::TcpStream::connect((host, port))
        .await
        .expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    stream
}

/// The loop of a client that costs nothing but its socket calls: `rounds`
/// times, writes `batch` (`depth` prepared commands) to `stream` and reads
/// until their `depth` replies are in (counted with redcore's decoder),
/// recording each round's time once per command in `hist`.
pub async fn prepared_rounds(
    stream: &mut glommio::net::TcpStream,
    batch: &[u8],
    depth: usize,
    rounds: usize,
    hist: &mut Histogram<u64>,
) {
    use futures_lite::{AsyncReadExt, AsyncWriteExt};
    let mut decoder = redcore::resp::Decoder::new();
    let mut input = bytes::BytesMut::with_capacity(64 << 10);
    let mut chunk = vec![0u8; 64 << 10];
    for _ in 0..rounds {
        let sent = std::time::Instant::now();
        stream.write_all(batch).await.expect("write");
        let mut got = 0;
        while got < depth {
            while let Some(v) = decoder.decode(&mut input).expect("decode") {
                drop(v);
                got += 1;
            }
            if got < depth {
                let n = stream.read(&mut chunk).await.expect("read");
                assert!(n > 0, "server closed");
                input.extend_from_slice(&chunk[..n]);
            }
        }
        hist.record_n(sent.elapsed().as_nanos() as u64, depth as u64)
            .expect("record");
    }
}

/// Whether a task times its `n`th command: one SET/GET pair in every 8
/// pairs (one command in 8), so the latency histogram samples both
/// commands while the benchmark's own clock reads (two per timed command,
/// some 25 ns each on this VM) stay out of most commands' CPU, as
/// `redis-benchmark` reads the clock per pipeline, not per command.
pub fn timed(n: usize) -> bool {
    (n / 2) % 8 == 0
}

/// One test's line of `redis-benchmark --csv`.
pub struct CsvLine {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Parses the `SET` and `GET` lines of `redis-benchmark --csv` output.
///
/// redis-benchmark 7.0.15 honours `--csv` with `--cluster`, but prints a
/// preamble on stdout first (`Cluster has 3 master nodes:`, a blank line,
/// one `Master N: <id> <addr>` line per master, a blank line) and may warn
/// on stderr (`WARNING: Master node ... has no slots, skipping...` while a
/// replica is still being attached). So the columns are found by name in
/// the header line (`"test","rps",...,"p50_latency_ms",...,"p99_latency_ms",...`)
/// and every other line that is not a `"SET"`/`"GET"` row is ignored.
pub fn parse_csv(text: &str) -> Result<[CsvLine; 2], String> {
    let fields = |line: &str| -> Vec<String> {
        line.split(',')
            .map(|f| f.trim().trim_matches('"').to_owned())
            .collect()
    };
    let header = text
        .lines()
        .map(fields)
        .find(|f| f.first().is_some_and(|t| t == "test"))
        .ok_or("no CSV header line")?;
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .ok_or(format!("no {name} column"))
    };
    let (rps, p50, p99) = (col("rps")?, col("p50_latency_ms")?, col("p99_latency_ms")?);
    let line = |test: &str| -> Result<CsvLine, String> {
        let f = text
            .lines()
            .map(fields)
            .find(|f| f.first().is_some_and(|t| t == test))
            .ok_or(format!("no {test} line"))?;
        let num = |i: usize| -> Result<f64, String> {
            f.get(i)
                .and_then(|v| v.parse().ok())
                .ok_or(format!("{test}: bad column {}", header[i]))
        };
        Ok(CsvLine {
            rps: num(rps)?,
            p50_ms: num(p50)?,
            p99_ms: num(p99)?,
        })
    };
    Ok([line("SET")?, line("GET")?])
}

/// Runs `redis-benchmark [--cluster] -c clients -P depth` for SET and GET
/// (32-byte values, 100,000 random keys, `requests` requests per test)
/// against the node at `port`: its SET and GET lines and the CPU time it
/// used.
pub fn run_redis_benchmark(
    port: u16,
    cluster: bool,
    clients: usize,
    depth: usize,
    requests: usize,
) -> ([CsvLine; 2], Duration) {
    let cpu0 = cpu_time(libc::RUSAGE_CHILDREN);
    let mut command = Command::new("redis-benchmark");
    if cluster {
        command.arg("--cluster");
    }
    let out = command
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-c", &clients.to_string(), "-P", &depth.to_string()])
        .args(["-d", "32", "-r", &KEYS.to_string()])
        .args(["-t", "set,get", "-n", &requests.to_string(), "--csv"])
        .output()
        .expect("redis-benchmark runs (apt-get install redis-tools)");
    let cpu = cpu_time(libc::RUSAGE_CHILDREN) - cpu0;
    let stdout = String::from_utf8_lossy(&out.stdout);
    match parse_csv(&stdout) {
        Ok(lines) if out.status.success() => (lines, cpu),
        result => panic!(
            "redis-benchmark ({}): {:?}\n--- stdout ---\n{stdout}\n--- stderr ---\n{}",
            out.status,
            result.err(),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// What the tasks of [`task_floor`] and the driver of one connection
/// share.
struct Hub {
    /// Commands not yet written, back to back, and how many.
    out: Vec<u8>,
    queued: usize,
    /// The task waiting for each command written or queued, in order.
    fifo: std::collections::VecDeque<usize>,
    /// Per task: its reply is in.
    done: Vec<bool>,
    wakers: Vec<Option<std::task::Waker>>,
    driver: Option<std::task::Waker>,
}

impl Hub {
    fn wake_driver(&mut self) {
        if let Some(w) = self.driver.take() {
            w.wake();
        }
    }
}

/// What [`task_floor`] measured.
pub struct TaskFloor {
    pub hist: Histogram<u64>,
    pub elapsed: Duration,
    /// Commands answered, and writes to the sockets.
    pub done: usize,
    pub writes: usize,
}

/// The floor of any auto-pipelining client on glommio that gives each
/// command its own task, as redcore's single-command loads do: `tasks`
/// tasks each append a prepared SET or GET (alternating; one key per task
/// and connection, `prefix` and a random number) to the buffer of one of
/// `conns` (chosen at random for each command) and wait for their reply;
/// one driver task per connection writes whatever is queued with one
/// `write`, reads and counts the replies with redcore's decoder and wakes
/// the tasks in order, and writes again once all it wrote is answered (as
/// redcore's batches of one round are). `ops` commands in all; one in 8 is
/// timed, as in the redcore loads ([`timed`]). No command building, no
/// routing, no reply values handed over, no deadlines.
pub async fn task_floor(
    conns: Vec<(glommio::net::TcpStream, String)>,
    tasks: usize,
    ops: usize,
) -> TaskFloor {
    use futures_lite::{AsyncReadExt, AsyncWriteExt};
    use std::cell::{Cell, RefCell};
    use std::rc::Rc;
    use std::task::Poll;
    let left = Rc::new(Cell::new(ops));
    let hubs: Vec<Rc<RefCell<Hub>>> = conns
        .iter()
        .map(|_| {
            Rc::new(RefCell::new(Hub {
                out: Vec::new(),
                queued: 0,
                fifo: Default::default(),
                done: vec![false; tasks],
                wakers: vec![None; tasks],
                driver: None,
            }))
        })
        .collect();
    let hist = Rc::new(RefCell::new(Histogram::<u64>::new(3).expect("histogram")));
    let start = std::time::Instant::now();
    let mut handles = Vec::new();
    for id in 0..tasks {
        let (hubs, hist, left) = (hubs.clone(), hist.clone(), left.clone());
        let commands: Vec<[bytes::BytesMut; 2]> = conns
            .iter()
            .map(|(_, prefix)| {
                let key = format!("{prefix}{}", fastrand::u32(0..KEYS));
                [0, 1].map(|i| {
                    let mut command = bytes::BytesMut::new();
                    encode_set_get(&mut command, i, &key, &value32());
                    command
                })
            })
            .collect();
        handles.push(glommio::spawn_local(async move {
            let mut n = id;
            while left.get() > 0 {
                left.set(left.get() - 1);
                let c = fastrand::usize(..hubs.len());
                {
                    let mut h = hubs[c].borrow_mut();
                    if h.out.is_empty() {
                        h.wake_driver();
                    }
                    h.out.extend_from_slice(&commands[c][n % 2]);
                    h.queued += 1;
                    h.fifo.push_back(id);
                    h.done[id] = false;
                }
                if left.get() == 0 {
                    // The last command: drivers with nothing to do may stop.
                    for h in &hubs {
                        h.borrow_mut().wake_driver();
                    }
                }
                let sent = timed(n).then(std::time::Instant::now);
                futures_lite::future::poll_fn(|cx| {
                    let mut h = hubs[c].borrow_mut();
                    if h.done[id] {
                        return Poll::Ready(());
                    }
                    let w = &mut h.wakers[id];
                    if !w.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                        *w = Some(cx.waker().clone());
                    }
                    Poll::Pending
                })
                .await;
                if let Some(sent) = sent {
                    hist.borrow_mut()
                        .record(sent.elapsed().as_nanos() as u64)
                        .expect("record");
                }
                n += 1;
            }
        }));
    }
    let mut drivers = Vec::new();
    for ((mut stream, _), hub) in conns.into_iter().zip(&hubs) {
        let (hub, left) = (hub.clone(), left.clone());
        drivers.push(glommio::spawn_local(async move {
            let mut decoder = redcore::resp::Decoder::new();
            let mut input = bytes::BytesMut::with_capacity(64 << 10);
            let mut chunk = vec![0u8; 64 << 10];
            let (mut writes, mut written, mut done) = (0usize, 0usize, 0usize);
            let mut batch = Vec::new();
            loop {
                let more = futures_lite::future::poll_fn(|cx| {
                    let mut h = hub.borrow_mut();
                    if !h.out.is_empty() {
                        std::mem::swap(&mut h.out, &mut batch);
                        written += std::mem::take(&mut h.queued);
                        return Poll::Ready(true);
                    }
                    if left.get() == 0 {
                        return Poll::Ready(false);
                    }
                    h.driver = Some(cx.waker().clone());
                    Poll::Pending
                })
                .await;
                if !more {
                    break (done, writes);
                }
                stream.write_all(&batch).await.expect("write");
                batch.clear();
                writes += 1;
                while done < written {
                    let n = stream.read(&mut chunk).await.expect("read");
                    assert!(n > 0, "server closed");
                    input.extend_from_slice(&chunk[..n]);
                    while let Some(v) = decoder.decode(&mut input).expect("decode") {
                        drop(v);
                        done += 1;
                        let mut h = hub.borrow_mut();
                        let id = h.fifo.pop_front().expect("a waiting task");
                        h.done[id] = true;
                        if let Some(w) = h.wakers[id].take() {
                            w.wake();
                        }
                    }
                }
            }
        }));
    }
    for h in handles {
        h.await;
    }
    let (mut done, mut writes) = (0, 0);
    for d in drivers {
        let (d, w) = d.await;
        done += d;
        writes += w;
    }
    let elapsed = start.elapsed();
    let hist = hist.borrow().clone();
    TaskFloor {
        hist,
        elapsed,
        done,
        writes,
    }
}
