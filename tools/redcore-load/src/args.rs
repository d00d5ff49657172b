//! Command-line options and the parsers of their values.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Parser, ValueEnum};
use redcore::config::ReadFrom;

/// Load generator for Redis and Redis Cluster on redcore's per-core runtime.
///
/// Runs one glommio executor per core, each with `--tasks` tasks sending
/// commands (closed loop), or sending them on a fixed schedule (`--rate`,
/// open loop, latency counted from the intended send time), and reports
/// throughput, HDR latency percentiles and errors per command.
#[derive(Parser, Debug, Clone)]
#[command(name = "redcore-load", version, about, long_about = None, after_help = CLIENT_CPU_HELP)]
#[command(group(ArgGroup::new("target").required(true).args(["cluster", "server"])))]
pub struct Cli {
    /// A Redis Cluster: seeds as `host:port[,host:port...]`. The first may
    /// be a URI (`redis://:password@host:port`, `rediss://...` for TLS).
    #[arg(long, value_name = "SEEDS")]
    pub cluster: Option<String>,

    /// One server: any URI redcore accepts (`redis://`, `rediss://`,
    /// `unix:///path`), with user, password, database.
    #[arg(long, value_name = "URI")]
    pub server: Option<String>,

    /// With `--cluster`: `sharded` (each node's connection lives on one
    /// core; other cores hand their commands for it across) or
    /// `every-core` (every core connects to every node; no hand-over,
    /// cores × nodes connections) [default: sharded].
    #[arg(long, value_name = "MODE")]
    pub ownership: Option<OwnershipArg>,

    /// With `--cluster`: where GETs (and other commands that only read)
    /// go: `primary` (the default), `replica` (a random replica of the
    /// slot's master), `round-robin` (its replicas in turn), `az:<zone>`
    /// (replicas in `<zone>` first, zones of nodes from `--node-zone`;
    /// a node without one counts as in another zone) or `latency` (the
    /// lowest measured round trip). Not with `--verify` (replicas lag
    /// their master).
    #[arg(long, value_name = "STRATEGY", value_parser = parse_read_from, conflicts_with = "verify")]
    pub read_from: Option<ReadFromArg>,

    /// With `--read-from az:<zone>`: the zone of one node, as
    /// `HOST:PORT=ZONE` (repeat the flag for each node).
    #[arg(long, value_name = "HOST:PORT=ZONE", value_parser = parse_node_zone, requires = "read_from")]
    pub node_zone: Vec<(String, String)>,

    /// Let each executor spin this long for new work before sleeping in
    /// the kernel (`50us`): lower latency for lone requests, CPU burnt
    /// while idle [default: no spinning].
    #[arg(long, value_name = "TIME", value_parser = parse_duration)]
    pub spin: Option<Duration>,

    /// Executors, one per core, pinned [default: every online CPU].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub cores: Option<u32>,

    /// Concurrent tasks per core.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub tasks: u32,

    /// Commands per explicit pipeline, per task.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub pipeline: u32,

    /// SET:GET mix, as weights [default: 1:1].
    #[arg(long, value_name = "SET:GET", value_parser = parse_ratio, conflicts_with = "commands")]
    pub ratio: Option<Ratio>,

    /// Value size in bytes, or a range `N-M` (uniformly random per write).
    #[arg(long, value_name = "N|N-M", default_value = "32", value_parser = parse_data_size)]
    pub data_size: DataSize,

    /// Size of the key space: keys `PREFIX0` .. `PREFIX(N-1)`.
    #[arg(long, value_name = "N", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=1u64 << 40))]
    pub keys: u64,

    /// How keys are picked: uniform, sequential, zipf or zipf:EXPONENT
    /// (default exponent 0.99; key 0 is the hottest).
    #[arg(long, value_name = "PATTERN", default_value = "uniform", value_parser = parse_key_pattern)]
    pub key_pattern: KeyPattern,

    /// Prefix of every key.
    #[arg(long, value_name = "TEXT", default_value = "key:")]
    pub key_prefix: String,

    /// How key numbers become names: `plain` (`PREFIXn`) or `tagged`
    /// (`PREFIX{t}:n`: the key space cut into `--key-tags` runs of
    /// consecutive numbers, run `t` with its own hash tag). With `tagged`,
    /// a pipeline's first key is drawn by `--key-pattern` and the others
    /// share its tag (uniform among its run; `sequential`: the keys after
    /// it, which may cross into the next run), so that on a cluster a
    /// pipeline touches one slot.
    #[arg(long, value_name = "LAYOUT", value_enum, default_value_t = KeyLayoutArg::Plain)]
    pub key_layout: KeyLayoutArg,

    /// With `--key-layout tagged`: how many hash tags the key space is cut
    /// into (runs of ceil(keys / N) keys; fewer tags when that leaves
    /// the last runs empty).
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub key_tags: u64,

    /// Stop after this many measured commands in all (split over cores).
    #[arg(long, value_name = "N", conflicts_with = "duration", value_parser = clap::value_parser!(u64).range(1..))]
    pub requests: Option<u64>,

    /// Measure for this long (`30s`, `1m30s`, `500ms`; a bare number is
    /// seconds) [default: 10s, unless --requests is given].
    #[arg(long, value_name = "TIME", value_parser = parse_duration_nonzero)]
    pub duration: Option<Duration>,

    /// Run this long first without counting anything.
    #[arg(long, value_name = "TIME", default_value = "0s", value_parser = parse_duration)]
    pub warmup: Duration,

    /// Open loop: send at this fixed total rate, commands per second over
    /// all cores (`50000`, `50k`, `1.5M`); latency counts from the intended
    /// send time, so a stall is not hidden (no coordinated omission).
    /// Without it, the load is closed-loop: each task sends as soon as its
    /// last reply came. With `--pubsub`: messages per second over all
    /// publishers, each publisher on its own schedule (the report gives
    /// how late sends were: send_lag_us; latency counts from the send);
    /// `0` or none: as fast as `--in-flight` lets them.
    #[arg(long, value_name = "PER_SEC", value_parser = parse_rate_or_zero)]
    pub rate: Option<f64>,

    /// A command to send instead of the SET/GET mix, arguments separated
    /// by spaces, quoted as in a shell when they hold spaces (`'a b'`,
    /// `"a b"`, `a\ b`); `__key__` and `__data__` are replaced per request
    /// (also inside an argument). Repeat to mix several commands, equally.
    #[arg(long = "command", value_name = "CMD", value_parser = parse_command)]
    pub commands: Vec<CommandTemplate>,

    /// Remember every acknowledged SET and read every key back at the end
    /// with a fresh connection; exit 1 if an acknowledged write was lost.
    #[arg(long, conflicts_with = "commands")]
    pub verify: bool,

    /// Client-side caching: each core's client keeps a cache of at most
    /// SIZE (`64MB`, `512KiB`, `1g`, or bytes; at least 4 KiB) and the
    /// GETs of the SET/GET mix become cached reads (`cached_get`); SETs
    /// are sent as before (and drop the key from the writing core's
    /// cache). The report adds `hit_ratio` (from the caches' counters)
    /// and the latency of hits and misses apart; with `--verify`, every
    /// GET is also checked against the writes acknowledged before it was
    /// sent (`stale_reads`). One command per call (no `--pipeline`).
    #[arg(long, value_name = "SIZE", value_parser = parse_cache_size,
          conflicts_with_all = ["commands", "pubsub"])]
    pub cache: Option<usize>,

    /// With `--cache`: the client-side time to live of a cached GET (the
    /// key's own expiry caps it) [default: 60s].
    #[arg(long, value_name = "TIME", value_parser = parse_duration_nonzero, requires = "cache")]
    pub cache_ttl: Option<Duration>,

    /// Print the final report as JSON on stdout.
    #[arg(long)]
    pub json: bool,

    /// Write the latency histograms (nanoseconds) to FILE as an
    /// HdrHistogram interval log: one untagged histogram for all commands,
    /// one tagged with each command's name.
    #[arg(long, value_name = "FILE")]
    pub hdr_out: Option<PathBuf>,

    /// While measuring, append one JSON object per second to FILE (JSON
    /// lines, flushed as they come): `unix_ms` (wall clock at the end of
    /// the second), `t` (seconds since measuring began), `ops` and
    /// `errors` (completed and failed in that second), `ops_per_sec`,
    /// `errors_by_kind`, `slowest_us` (the slowest successful command in
    /// that second), `slowest_call_us` (the slowest call that ended in
    /// that second, whatever its outcome, from its send to its end) and
    /// `late_calls` (calls that ended in that second past their deadline
    /// by more than 100 ms). For watching a run through failures.
    #[arg(long, value_name = "FILE")]
    pub timeline: Option<PathBuf>,

    /// Deadline of each call, connecting included. The report counts the
    /// calls that ended later than this plus 100 ms (`late_calls`).
    #[arg(long, value_name = "TIME", default_value = "5s", value_parser = parse_duration_nonzero)]
    pub timeout: Duration,

    /// Stop the run (exit status 1) when commands have failed without a
    /// reply and none has succeeded for this long: the target seems down.
    /// Checked once a second, so at least `1s`; `0` never stops (a server
    /// paused for a while, a failover that takes its time)
    /// [default: twice --timeout, at least 2s].
    #[arg(long, value_name = "TIME", value_parser = parse_stall_limit)]
    pub stall_limit: Option<Duration>,

    /// Use TLS, trusting this CA certificate (PEM file) instead of the
    /// system roots (for `rediss://` targets with a private CA).
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,

    /// Pub/sub load instead of commands, on one core: `channels`
    /// (SUBSCRIBE / PUBLISH) or `sharded` (SSUBSCRIBE / SPUBLISH).
    /// Publishers and subscribers share one connection (`--server`) or one
    /// cluster client (`--cluster`). `--requests` counts published
    /// messages, `--duration` the time of publishing; `--rate` is
    /// messages per second. The report: messages published and delivered
    /// per second, publish→receive latency, lost messages and gaps, client
    /// CPU per delivered message.
    #[arg(long, value_name = "KIND", value_enum, help_heading = "Pub/sub",
          conflicts_with_all = ["tasks", "pipeline", "ratio", "data_size", "keys", "key_pattern",
                                "key_prefix", "key_layout", "key_tags", "commands", "verify",
                                "hdr_out", "timeline", "stall_limit", "ownership"])]
    pub pubsub: Option<PubSubArg>,

    /// Pub/sub: channels, named `PREFIX0`..; each publisher sends to them
    /// in turn.
    #[arg(long, value_name = "N", default_value_t = 1, requires = "pubsub", help_heading = "Pub/sub",
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub channels: u32,

    /// Pub/sub: the channels' name prefix.
    #[arg(
        long,
        value_name = "TEXT",
        default_value = "channel:",
        requires = "pubsub",
        help_heading = "Pub/sub"
    )]
    pub channel_prefix: String,

    /// Pub/sub: publishers (all on the one client).
    #[arg(long, value_name = "N", default_value_t = 1, requires = "pubsub", help_heading = "Pub/sub",
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub publishers: u32,

    /// Pub/sub: subscribers, each a subscription to every channel on the
    /// one client.
    #[arg(long, value_name = "N", default_value_t = 1, requires = "pubsub", help_heading = "Pub/sub",
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub subscribers: u32,

    /// Pub/sub: publishes in flight per publisher at most (its tasks).
    #[arg(long, value_name = "N", default_value_t = 64, requires = "pubsub", help_heading = "Pub/sub",
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub in_flight: u32,

    /// Pub/sub: payload size in bytes (at least 16: publisher, sequence
    /// number, send time).
    #[arg(long, value_name = "N", default_value_t = 32, requires = "pubsub", help_heading = "Pub/sub",
          value_parser = clap::value_parser!(u32).range(16..=(512 << 20)))]
    pub message_size: u32,

    /// Pub/sub with a rate: due times are rounded up to a multiple of this
    /// (`100us`; a bare number is seconds), so that the messages due
    /// within one tick leave together after one timer wake-up; 0: each at
    /// its own time. The default is redis-rs-load's, the resolution of
    /// tokio's timers, so that both tools pace their publishers alike
    /// (at 100k/s a wake-up per message costs redcore-load some 3 µs of
    /// CPU per message more than one per millisecond).
    #[arg(long, value_name = "TIME", default_value = "1ms", requires = "pubsub", help_heading = "Pub/sub",
          value_parser = parse_duration)]
    pub tick: Duration,

    /// Pub/sub: after the last publish, how long subscribers may wait for
    /// missing messages (the run ends as soon as all came).
    #[arg(long, value_name = "TIME", default_value = "2s", requires = "pubsub", help_heading = "Pub/sub",
          value_parser = parse_duration)]
    pub tail: Duration,

    /// Pub/sub on a --cluster: which redcore client: `executor` (a
    /// one-core ClusterExecutor's CoreClient, as the other loads use) or
    /// `cluster` (a bare Cluster client on one executor).
    #[arg(long, value_name = "CLIENT", value_enum, default_value_t = ClusterClientArg::Executor,
          requires = "pubsub", help_heading = "Pub/sub")]
    pub cluster_client: ClusterClientArg,
}

/// `--read-from`: a replica read strategy, with the client's zone for
/// `az:<zone>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadFromArg {
    /// The strategy.
    pub strategy: ReadFrom,
    /// The client's zone (`az:<zone>`).
    pub zone: Option<String>,
}

/// Parses `--read-from`: `primary`, `replica`, `round-robin`,
/// `--node-zone HOST:PORT=ZONE`: a node's address and its zone.
pub fn parse_node_zone(s: &str) -> Result<(String, String), String> {
    match s.rsplit_once('=') {
        Some((addr, zone)) if !addr.is_empty() && !zone.is_empty() => {
            Ok((addr.to_owned(), zone.to_owned()))
        }
        _ => Err(format!("{s:?} is not HOST:PORT=ZONE")),
    }
}

/// `az:<zone>`, `latency`.
pub fn parse_read_from(s: &str) -> Result<ReadFromArg, String> {
    if let Some(zone) = s.strip_prefix("az:") {
        if zone.is_empty() {
            return Err("az:<zone> needs a zone name".into());
        }
        return Ok(ReadFromArg {
            strategy: ReadFrom::AzAffinity,
            zone: Some(zone.to_owned()),
        });
    }
    if s == "az" {
        return Err("az needs the client's zone: az:<zone>".into());
    }
    let strategy = s.parse::<ReadFrom>().map_err(|_| {
        format!("{s:?} is not a strategy; use primary, replica, round-robin, az:<zone> or latency")
    })?;
    Ok(ReadFromArg {
        strategy,
        zone: None,
    })
}

/// `--cluster-client`: which redcore client a pub/sub cluster load uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ClusterClientArg {
    /// A one-core ClusterExecutor and its CoreClient.
    Executor,
    /// A bare Cluster client.
    Cluster,
}

/// `--pubsub`: plain or sharded channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PubSubArg {
    /// SUBSCRIBE / PUBLISH.
    Channels,
    /// SSUBSCRIBE / SPUBLISH.
    Sharded,
}

impl Cli {
    /// The SET:GET ratio in force.
    pub fn ratio(&self) -> Ratio {
        self.ratio.unwrap_or(Ratio { set: 1, get: 1 })
    }

    /// How long commands may fail with none succeeding before the run
    /// stops; `None` when it never stops for that.
    pub fn stall_limit(&self) -> Option<Duration> {
        match self.stall_limit {
            Some(d) if d.is_zero() => None,
            Some(d) => Some(d),
            None => Some(default_stall_limit(self.timeout)),
        }
    }

    /// The measured duration, when the run is bounded by time.
    pub fn measure_duration(&self) -> Option<Duration> {
        match (self.requests, self.duration) {
            (Some(_), _) => None,
            (None, Some(d)) => Some(d),
            (None, None) => Some(Duration::from_secs(10)),
        }
    }
}

/// What `--help` says about the client CPU in the report.
const CLIENT_CPU_HELP: &str = "Client CPU: the report (text and --json: client_cpu_s, \
client_cpu_us_per_cmd) gives the user + system CPU time of this whole process, every thread \
(getrusage RUSAGE_SELF), from the first measured command to the end of the last core's load, \
and that per measured command that ended (succeeded or failed). Left out: start-up, the \
warm-up, connecting to a --server, shutting down, the --verify read-back. In: the once-a-second \
progress line and timeline, and on a --cluster the connections to the nodes, which open \
with the first commands. With --pubsub: client_cpu_s, client_cpu_us_per_msg, from the first \
measured publish until every subscriber had every message (or --tail ran out), per measured \
message delivered; connecting and subscribing are left out.";

/// Weights of SET and GET.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ratio {
    /// Weight of SET.
    pub set: u32,
    /// Weight of GET.
    pub get: u32,
}

/// Parses `SET:GET`, two non-negative integers, not both zero.
pub fn parse_ratio(s: &str) -> Result<Ratio, String> {
    let (a, b) = s
        .split_once(':')
        .ok_or_else(|| format!("expected SET:GET such as 1:10, got {s:?}"))?;
    let num = |x: &str| {
        x.trim()
            .parse::<u32>()
            .map_err(|_| format!("{x:?} is not a non-negative integer (in ratio {s:?})"))
    };
    let ratio = Ratio {
        set: num(a)?,
        get: num(b)?,
    };
    if ratio.set == 0 && ratio.get == 0 {
        return Err("the ratio 0:0 sends nothing".into());
    }
    if u64::from(ratio.set) + u64::from(ratio.get) > u64::from(u32::MAX) {
        return Err("the ratio's weights are too large".into());
    }
    Ok(ratio)
}

/// The size of written values: fixed, or a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataSize {
    /// Smallest size, bytes.
    pub min: usize,
    /// Largest size, bytes (equal to `min` for a fixed size).
    pub max: usize,
}

/// The largest value size accepted (Redis' default `proto-max-bulk-len`).
pub const MAX_DATA_SIZE: usize = 512 << 20;

/// Parses `N` or `N-M` (bytes, `N <= M`).
pub fn parse_data_size(s: &str) -> Result<DataSize, String> {
    let num = |x: &str| {
        let n = x
            .trim()
            .parse::<usize>()
            .map_err(|_| format!("{x:?} is not a size in bytes"))?;
        if n > MAX_DATA_SIZE {
            return Err(format!(
                "{n} bytes is more than the {MAX_DATA_SIZE} Redis accepts"
            ));
        }
        Ok(n)
    };
    let size = match s.split_once('-') {
        Some((a, b)) => DataSize {
            min: num(a)?,
            max: num(b)?,
        },
        None => {
            let n = num(s)?;
            DataSize { min: n, max: n }
        }
    };
    if size.min > size.max {
        return Err(format!(
            "the range {s:?} is empty: its start is above its end"
        ));
    }
    Ok(size)
}

/// How keys are drawn from the key space.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KeyPattern {
    /// Every key equally likely.
    Uniform,
    /// Each core walks the key space in order from its own starting point.
    Sequential,
    /// Zipf's law with this exponent: key 0 is the hottest.
    Zipf(f64),
}

/// The Zipf exponent used by a bare `zipf`.
pub const DEFAULT_ZIPF_EXPONENT: f64 = 0.99;

/// Parses `uniform`, `sequential`, `zipf` or `zipf:EXPONENT`.
pub fn parse_key_pattern(s: &str) -> Result<KeyPattern, String> {
    let lower = s.trim().to_ascii_lowercase();
    match lower.as_str() {
        "uniform" | "random" => return Ok(KeyPattern::Uniform),
        "sequential" | "seq" => return Ok(KeyPattern::Sequential),
        "zipf" => return Ok(KeyPattern::Zipf(DEFAULT_ZIPF_EXPONENT)),
        _ => {}
    }
    if let Some(exp) = lower.strip_prefix("zipf:") {
        let e: f64 = exp
            .parse()
            .map_err(|_| format!("{exp:?} is not a number (the Zipf exponent)"))?;
        if !(e.is_finite() && e > 0.0 && e <= 100.0) {
            return Err(format!(
                "the Zipf exponent must be above 0 and at most 100, got {e}"
            ));
        }
        return Ok(KeyPattern::Zipf(e));
    }
    Err(format!(
        "unknown key pattern {s:?}: expected uniform, sequential, zipf or zipf:EXPONENT"
    ))
}

/// Parses a duration: `30s`, `1m30s`, `250ms` (humantime), or a bare
/// number of seconds (`2`, `0.5`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if let Ok(secs) = t.parse::<f64>() {
        return Duration::try_from_secs_f64(secs)
            .map_err(|_| format!("{s:?} is not a duration (negative or too large)"));
    }
    humantime::parse_duration(t)
        .map_err(|e| format!("{s:?} is not a duration ({e}); try 30s, 500ms or 1m"))
}

/// [`parse_duration`], refusing zero.
pub fn parse_duration_nonzero(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err("must be longer than zero".into());
    }
    Ok(d)
}

/// The stall limit when `--stall-limit` is not given: two call deadlines,
/// at least 2 s.
pub fn default_stall_limit(timeout: Duration) -> Duration {
    (timeout * 2).max(Duration::from_secs(2))
}

/// Parses `--stall-limit`: `0` (off) or a duration of at least a second
/// (the check runs once a second).
pub fn parse_stall_limit(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if !d.is_zero() && d < Duration::from_secs(1) {
        return Err(format!(
            "{s:?} is shorter than the once-a-second check: give at least 1s, or 0 to never stop"
        ));
    }
    Ok(d)
}

/// Parses `--cache`: a size such as `64MB` (powers of 1024), at least
/// 4 KiB (a smaller cache holds nothing useful).
pub fn parse_cache_size(s: &str) -> Result<usize, String> {
    let n = redcore::config::parse_size(s)
        .ok_or_else(|| format!("{s:?} is not a size; try 64MB, 512KiB or a number of bytes"))?;
    redcore::CacheOptions::with_max_bytes(n)
        .validate()
        .map_err(|e| e.to_string())?;
    Ok(n)
}

/// Parses a positive rate: `50000`, `50k`, `1.5M`.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let (digits, scale) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1e3),
        Some((i, 'm' | 'M')) => (&t[..i], 1e6),
        _ => (t, 1.0),
    };
    let r: f64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a rate (commands per second, such as 50000 or 50k)"))?;
    let r = r * scale;
    if !(r.is_finite() && r > 0.0) {
        return Err(format!("the rate must be above zero, got {s:?}"));
    }
    Ok(r)
}

/// [`parse_rate`], also taking `0` (as fast as possible: `--pubsub`
/// only).
pub fn parse_rate_or_zero(s: &str) -> Result<f64, String> {
    if s.trim().parse::<f64>() == Ok(0.0) {
        return Ok(0.0);
    }
    parse_rate(s)
}

/// One piece of a command argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Bytes sent as they are.
    Lit(Vec<u8>),
    /// The request's key (`__key__`).
    Key,
    /// The request's value (`__data__`).
    Data,
}

/// A command with placeholders: each argument is a list of pieces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandTemplate {
    /// The command as given.
    pub text: String,
    /// Its arguments, name first.
    pub args: Vec<Vec<Piece>>,
}

impl CommandTemplate {
    /// The command name, upper case.
    pub fn name(&self) -> String {
        self.text
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase()
    }
}

/// Parses `HSET h __key__ f __data__`: arguments separated by whitespace,
/// `__key__` and `__data__` replaced per request, also inside arguments.
pub fn parse_command(s: &str) -> Result<CommandTemplate, String> {
    // Shell-like words: quotes keep spaces inside an argument.
    let words = shlex::split(s).ok_or("unbalanced quotes or a trailing backslash")?;
    let args: Vec<Vec<Piece>> = words.iter().map(|w| split_placeholders(w)).collect();
    match args.first().map(Vec::as_slice) {
        None => return Err("the command is empty".into()),
        Some([Piece::Lit(_)]) => {}
        Some(_) => return Err("the command name cannot be a placeholder".into()),
    }
    Ok(CommandTemplate {
        text: shlex::try_join(words.iter().map(String::as_str)).unwrap_or_else(|_| words.join(" ")),
        args,
    })
}

fn split_placeholders(arg: &str) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut rest = arg;
    loop {
        let key = rest.find("__key__").map(|i| (i, Piece::Key, 7));
        let data = rest.find("__data__").map(|i| (i, Piece::Data, 8));
        let next = match (key, data) {
            (Some(k), Some(d)) => Some(if k.0 < d.0 { k } else { d }),
            (k, d) => k.or(d),
        };
        match next {
            Some((i, piece, len)) => {
                if i > 0 {
                    pieces.push(Piece::Lit(rest.as_bytes()[..i].to_vec()));
                }
                pieces.push(piece);
                rest = &rest[i + len..];
            }
            None => {
                if !rest.is_empty() || pieces.is_empty() {
                    pieces.push(Piece::Lit(rest.as_bytes().to_vec()));
                }
                return pieces;
            }
        }
    }
}

/// `--key-layout`: how key numbers become key names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KeyLayoutArg {
    /// `PREFIXn`.
    Plain,
    /// `PREFIX{t}:n`, a hash tag per run of consecutive numbers.
    Tagged,
}

/// `--ownership`: which cores connect to which cluster nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OwnershipArg {
    /// One owner core per node.
    Sharded,
    /// Every core connects to every node.
    EveryCore,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn ratio() {
        assert_eq!(parse_ratio("1:1"), Ok(Ratio { set: 1, get: 1 }));
        assert_eq!(parse_ratio("1:10"), Ok(Ratio { set: 1, get: 10 }));
        assert_eq!(parse_ratio("0:1"), Ok(Ratio { set: 0, get: 1 }));
        assert_eq!(parse_ratio(" 3 : 0 "), Ok(Ratio { set: 3, get: 0 }));
        assert!(parse_ratio("0:0").is_err());
        assert!(parse_ratio("1").is_err());
        assert!(parse_ratio("1:x").is_err());
        assert!(parse_ratio("-1:2").is_err());
        assert!(parse_ratio("1:2:3").is_err());
        assert!(parse_ratio("4294967295:1").is_err());
    }

    #[test]
    fn data_size() {
        assert_eq!(parse_data_size("32"), Ok(DataSize { min: 32, max: 32 }));
        assert_eq!(parse_data_size("0"), Ok(DataSize { min: 0, max: 0 }));
        assert_eq!(
            parse_data_size("16-1024"),
            Ok(DataSize { min: 16, max: 1024 })
        );
        assert_eq!(parse_data_size("8-8"), Ok(DataSize { min: 8, max: 8 }));
        assert!(parse_data_size("1024-16").is_err());
        assert!(parse_data_size("-5").is_err());
        assert!(parse_data_size("1-").is_err());
        assert!(parse_data_size("abc").is_err());
        assert!(parse_data_size("1kb").is_err());
        assert!(parse_data_size(&(MAX_DATA_SIZE + 1).to_string()).is_err());
    }

    #[test]
    fn key_patterns() {
        assert_eq!(parse_key_pattern("uniform"), Ok(KeyPattern::Uniform));
        assert_eq!(parse_key_pattern("Sequential"), Ok(KeyPattern::Sequential));
        assert_eq!(
            parse_key_pattern("zipf"),
            Ok(KeyPattern::Zipf(DEFAULT_ZIPF_EXPONENT))
        );
        assert_eq!(parse_key_pattern("zipf:1.2"), Ok(KeyPattern::Zipf(1.2)));
        assert!(parse_key_pattern("zipf:0").is_err());
        assert!(parse_key_pattern("zipf:-1").is_err());
        assert!(parse_key_pattern("zipf:nan").is_err());
        assert!(parse_key_pattern("zipf:").is_err());
        assert!(parse_key_pattern("gauss").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration_nonzero("0s").is_err());
        assert!(parse_duration_nonzero("1ms").is_ok());
    }

    #[test]
    fn stall_limits() {
        assert_eq!(parse_stall_limit("0"), Ok(Duration::ZERO));
        assert_eq!(parse_stall_limit("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_stall_limit("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_stall_limit("1m"), Ok(Duration::from_secs(60)));
        assert!(
            parse_stall_limit("500ms")
                .unwrap_err()
                .contains("at least 1s")
        );
        assert!(parse_stall_limit("-1s").is_err());
        assert!(parse_stall_limit("soon").is_err());
        let limit = |args: &[&str]| parse(args).unwrap().stall_limit();
        assert_eq!(
            limit(&["--server", "redis://a"]),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            limit(&["--server", "redis://a", "--timeout", "500ms"]),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            limit(&["--server", "redis://a", "--stall-limit", "30s"]),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            limit(&["--server", "redis://a", "--stall-limit", "0"]),
            None
        );
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("50000"), Ok(50000.0));
        assert_eq!(parse_rate("50k"), Ok(50000.0));
        assert_eq!(parse_rate("1.5M"), Ok(1_500_000.0));
        assert_eq!(parse_rate("0.5"), Ok(0.5));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("-3").is_err());
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("k").is_err());
    }

    #[test]
    fn commands() {
        let c = parse_command("HSET h __key__ f __data__").unwrap();
        assert_eq!(c.name(), "HSET");
        assert_eq!(
            c.args,
            vec![
                vec![Piece::Lit(b"HSET".to_vec())],
                vec![Piece::Lit(b"h".to_vec())],
                vec![Piece::Key],
                vec![Piece::Lit(b"f".to_vec())],
                vec![Piece::Data],
            ]
        );
        let c = parse_command("  set  user:__key__:x  __data____key__ ").unwrap();
        assert_eq!(c.text, "set user:__key__:x __data____key__");
        assert_eq!(
            c.args[1],
            vec![
                Piece::Lit(b"user:".to_vec()),
                Piece::Key,
                Piece::Lit(b":x".to_vec())
            ]
        );
        assert_eq!(c.args[2], vec![Piece::Data, Piece::Key]);
        let c = parse_command(r#"SET __key__ "a b" 'c "d"' e\ f"#).unwrap();
        assert_eq!(c.args[2], vec![Piece::Lit(b"a b".to_vec())]);
        assert_eq!(c.args[3], vec![Piece::Lit(b"c \"d\"".to_vec())]);
        assert_eq!(c.args[4], vec![Piece::Lit(b"e f".to_vec())]);
        assert!(parse_command("SET 'k").is_err());
        assert!(parse_command("   ").is_err());
        assert!(parse_command("__key__ a").is_err());
    }

    #[test]
    fn pubsub_command_line() {
        let cli = parse(&["--server", "redis://a", "--pubsub", "channels"]).unwrap();
        assert_eq!(cli.pubsub, Some(PubSubArg::Channels));
        assert_eq!(
            (cli.channels, cli.publishers, cli.subscribers, cli.in_flight),
            (1, 1, 1, 64)
        );
        assert_eq!((cli.message_size, cli.rate), (32, None));
        assert_eq!(cli.channel_prefix, "channel:");
        assert_eq!(cli.tail, Duration::from_secs(2));
        assert_eq!(cli.tick, Duration::from_millis(1));
        assert_eq!(cli.cluster_client, ClusterClientArg::Executor);
        let cli = parse(&[
            "--cluster",
            "h:1",
            "--pubsub",
            "sharded",
            "--channels",
            "8",
            "--publishers",
            "2",
            "--subscribers",
            "3",
            "--message-size",
            "16",
            "--rate",
            "0",
            "--cluster-client",
            "cluster",
        ])
        .unwrap();
        assert_eq!(cli.pubsub, Some(PubSubArg::Sharded));
        assert_eq!((cli.channels, cli.publishers, cli.subscribers), (8, 2, 3));
        assert_eq!((cli.message_size, cli.rate), (16, Some(0.0)));
        assert_eq!(cli.cluster_client, ClusterClientArg::Cluster);
        assert_eq!(parse_rate_or_zero("0"), Ok(0.0));
        assert_eq!(parse_rate_or_zero("1.5k"), Ok(1500.0));
        assert!(parse_rate_or_zero("-1").is_err());
        let usage = |args: &[&str]| parse(args).unwrap_err().exit_code();
        let pubsub = ["--server", "redis://a", "--pubsub", "channels"];
        let with = |more: &[&'static str]| [&pubsub[..], more].concat();
        assert_eq!(usage(&["--server", "redis://a", "--channels", "2"]), 2);
        assert_eq!(usage(&with(&["--tasks", "2"])), 2);
        assert_eq!(usage(&with(&["--verify"])), 2);
        assert_eq!(usage(&with(&["--message-size", "15"])), 2);
        assert_eq!(usage(&with(&["--publishers", "0"])), 2);
    }

    #[test]
    fn node_zone() {
        assert_eq!(
            parse_node_zone("127.0.0.1:7000=eu-1a"),
            Ok(("127.0.0.1:7000".into(), "eu-1a".into()))
        );
        assert!(parse_node_zone("127.0.0.1:7000").is_err());
        assert!(parse_node_zone("=eu-1a").is_err());
        assert!(parse_node_zone("127.0.0.1:7000=").is_err());
    }

    #[test]
    fn read_from() {
        let of = |s: &str| parse_read_from(s).map(|r| (r.strategy, r.zone));
        assert_eq!(of("primary"), Ok((ReadFrom::Primary, None)));
        assert_eq!(of("replica"), Ok((ReadFrom::PreferReplica, None)));
        assert_eq!(of("round-robin"), Ok((ReadFrom::RoundRobin, None)));
        assert_eq!(of("latency"), Ok((ReadFrom::LowestLatency, None)));
        assert_eq!(
            of("az:eu-west-1a"),
            Ok((ReadFrom::AzAffinity, Some("eu-west-1a".to_owned())))
        );
        assert!(of("az").is_err());
        assert!(of("az:").is_err());
        assert!(of("nearest").is_err());
        let cli = parse(&["--cluster", "h:1", "--read-from", "replica"]).unwrap();
        assert_eq!(
            cli.read_from.map(|r| r.strategy),
            Some(ReadFrom::PreferReplica)
        );
        assert_eq!(parse(&["--cluster", "h:1"]).unwrap().read_from, None);
        let usage = |args: &[&str]| parse(args).unwrap_err().exit_code();
        assert_eq!(usage(&["--cluster", "h:1", "--read-from", "fastest"]), 2);
        assert_eq!(
            usage(&["--cluster", "h:1", "--read-from", "replica", "--verify"]),
            2
        );
    }

    #[test]
    fn cache_options() {
        assert_eq!(parse_cache_size("64MB"), Ok(64 << 20));
        assert_eq!(parse_cache_size("4096"), Ok(4096));
        assert!(parse_cache_size("100").is_err());
        assert!(parse_cache_size("lots").is_err());
        let cli = parse(&["--server", "redis://a", "--cache", "1m"]).unwrap();
        assert_eq!((cli.cache, cli.cache_ttl), (Some(1 << 20), None));
        let cli = parse(&[
            "--server",
            "redis://a",
            "--cache",
            "1m",
            "--cache-ttl",
            "5s",
        ])
        .unwrap();
        assert_eq!(cli.cache_ttl, Some(Duration::from_secs(5)));
        let usage = |args: &[&str]| parse(args).unwrap_err().exit_code();
        assert_eq!(usage(&["--server", "redis://a", "--cache-ttl", "5s"]), 2);
        assert_eq!(usage(&["--server", "redis://a", "--cache", "1k"]), 2);
        assert_eq!(
            usage(&[
                "--server",
                "redis://a",
                "--cache",
                "1m",
                "--command",
                "PING"
            ]),
            2
        );
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("redcore-load").chain(args.iter().copied()))
    }

    #[test]
    fn command_line() {
        Cli::command().debug_assert();
        let cli = parse(&["--server", "redis://127.0.0.1:6379"]).unwrap();
        assert_eq!(cli.tasks, 64);
        assert_eq!(cli.pipeline, 1);
        assert_eq!(cli.ratio(), Ratio { set: 1, get: 1 });
        assert_eq!(cli.keys, 100_000);
        assert_eq!(cli.key_prefix, "key:");
        assert_eq!(cli.key_layout, KeyLayoutArg::Plain);
        assert_eq!(cli.key_tags, 1024);
        let cli = parse(&[
            "--server",
            "redis://h",
            "--key-layout",
            "tagged",
            "--key-tags",
            "7",
        ])
        .unwrap();
        assert_eq!((cli.key_layout, cli.key_tags), (KeyLayoutArg::Tagged, 7));
        assert_eq!(cli.measure_duration(), Some(Duration::from_secs(10)));
        assert_eq!(cli.warmup, Duration::ZERO);
        assert_eq!(cli.ownership, None);
        assert_eq!(cli.spin, None);
        let cli = parse(&["--server", "redis://h", "--spin", "50us"]).unwrap();
        assert_eq!(cli.spin, Some(Duration::from_micros(50)));
        let cli = parse(&["--cluster", "h:1", "--ownership", "every-core"]).unwrap();
        assert_eq!(cli.ownership, Some(OwnershipArg::EveryCore));

        let cli = parse(&[
            "--cluster",
            "127.0.0.1:7000,127.0.0.1:7001",
            "--requests",
            "1000",
            "--warmup",
            "2s",
            "--key-pattern",
            "zipf:1.1",
            "--data-size",
            "10-100",
            "--rate",
            "20k",
        ])
        .unwrap();
        assert_eq!(cli.measure_duration(), None);
        assert_eq!(cli.key_pattern, KeyPattern::Zipf(1.1));
        assert_eq!(cli.data_size, DataSize { min: 10, max: 100 });
        assert_eq!(cli.rate, Some(20_000.0));

        let usage = |args: &[&str]| parse(args).unwrap_err().exit_code();
        // No target, two targets, conflicting options, bad values: exit 2.
        assert_eq!(usage(&[]), 2);
        assert_eq!(usage(&["--server", "redis://a", "--cluster", "a:1"]), 2);
        assert_eq!(
            usage(&[
                "--server",
                "redis://a",
                "--requests",
                "5",
                "--duration",
                "1s"
            ]),
            2
        );
        assert_eq!(
            usage(&["--server", "redis://a", "--verify", "--command", "PING"]),
            2
        );
        assert_eq!(
            usage(&[
                "--server",
                "redis://a",
                "--ratio",
                "1:1",
                "--command",
                "PING"
            ]),
            2
        );
        assert_eq!(usage(&["--server", "redis://a", "--tasks", "0"]), 2);
        assert_eq!(
            usage(&["--server", "redis://a", "--key-layout", "hashed"]),
            2
        );
        assert_eq!(usage(&["--server", "redis://a", "--key-tags", "0"]), 2);
        assert_eq!(usage(&["--server", "redis://a", "--ratio", "x"]), 2);
        assert_eq!(usage(&["--server", "redis://a", "--duration", "0s"]), 2);
    }
}
