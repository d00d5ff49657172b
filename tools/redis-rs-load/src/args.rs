//! Command-line options: the subset of `redcore-load`'s that the
//! yardstick needs, with the same names and meanings.

use std::time::Duration;

use clap::{ArgGroup, Parser, ValueEnum};

/// SET/GET load on redis-rs, for comparison with redcore-load.
///
/// One tokio current-thread runtime; `--tasks` tasks share one
/// multiplexed connection (`--server`) or one async cluster client
/// (`--cluster`), each sending one command or one pipeline at a time
/// (closed loop). The report has redcore-load's field names.
#[derive(Parser, Debug, Clone)]
#[command(name = "redis-rs-load", version, about, long_about = None, after_help = CLIENT_CPU_HELP)]
#[command(group(ArgGroup::new("target").required(true).args(["cluster", "server"])))]
pub struct Cli {
    /// A Redis Cluster: seeds as `host:port[,host:port...]` (or
    /// `redis://` URIs).
    #[arg(long, value_name = "SEEDS")]
    pub cluster: Option<String>,

    /// One server: a `redis://` URI.
    #[arg(long, value_name = "URI")]
    pub server: Option<String>,

    /// Concurrent tasks, all on the one runtime and connection.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub tasks: u32,

    /// Commands per pipeline (`redis::pipe()`, not atomic), per task.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub pipeline: u32,

    /// SET:GET mix, as weights.
    #[arg(long, value_name = "SET:GET", default_value = "1:1", value_parser = parse_ratio)]
    pub ratio: Ratio,

    /// Value size in bytes.
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = clap::value_parser!(u32).range(0..=(512 << 20)))]
    pub data_size: u32,

    /// Size of the key space; keys are drawn uniformly at random.
    #[arg(long, value_name = "N", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=1u64 << 40))]
    pub keys: u64,

    /// Prefix of every key.
    #[arg(long, value_name = "TEXT", default_value = "key:")]
    pub key_prefix: String,

    /// How key numbers become names, as in redcore-load: `plain`
    /// (`PREFIXn`) or `tagged` (`PREFIX{t}:n`, runs of consecutive numbers
    /// sharing a hash tag; a pipeline's keys share its first key's tag, so
    /// on a cluster it is one slot, which redis-rs's cluster client needs).
    #[arg(long, value_name = "LAYOUT", value_enum, default_value_t = KeyLayoutArg::Plain)]
    pub key_layout: KeyLayoutArg,

    /// With `--key-layout tagged`: how many hash tags the key space is
    /// cut into.
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub key_tags: u64,

    /// Stop after this many measured commands.
    #[arg(long, value_name = "N", conflicts_with = "duration", value_parser = clap::value_parser!(u64).range(1..))]
    pub requests: Option<u64>,

    /// Measure for this long, seconds [default: 10, unless --requests is
    /// given].
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub duration: Option<Duration>,

    /// Run this long first without counting anything, seconds.
    #[arg(long, value_name = "SECONDS", default_value = "0", value_parser = parse_seconds)]
    pub warmup: Duration,

    /// Response and connection timeout of redis-rs, seconds (its own
    /// default response timeout is 500 ms; 5 s as redcore-load's).
    #[arg(long, value_name = "SECONDS", default_value = "5", value_parser = parse_seconds)]
    pub timeout: Duration,

    /// Pin the process (the runtime's thread and any thread it starts)
    /// to this CPU.
    #[arg(long, value_name = "N")]
    pub cpu: Option<usize>,

    /// Print the final report as JSON on stdout.
    #[arg(long)]
    pub json: bool,

    /// Pub/sub load instead of SET/GET: `channels` (SUBSCRIBE / PUBLISH)
    /// or `sharded` (SSUBSCRIBE / SPUBLISH). `--requests` then counts
    /// published messages, `--duration` the time of publishing.
    #[arg(long, value_name = "KIND", value_enum, help_heading = "Pub/sub",
          conflicts_with_all = ["tasks", "pipeline", "ratio", "data_size", "keys", "key_prefix", "key_layout", "key_tags"])]
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

    /// Pub/sub: publishers (all on one connection or cluster client).
    #[arg(long, value_name = "N", default_value_t = 1, requires = "pubsub", help_heading = "Pub/sub",
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub publishers: u32,

    /// Pub/sub: subscribers, each subscribed to every channel, each on its
    /// own connection (or cluster client).
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

    /// Pub/sub: messages per second over all publishers (`50000`, `50k`,
    /// `1.5M`), each publisher on its own schedule (the report gives how
    /// late sends were: send_lag_us); 0: as fast as `--in-flight` lets
    /// them.
    #[arg(long, value_name = "PER_SEC", default_value = "0", requires = "pubsub", help_heading = "Pub/sub",
          value_parser = parse_rate)]
    pub rate: f64,

    /// Pub/sub with a rate: due times are rounded up to a multiple of this
    /// (seconds), so that the messages due within one tick leave together
    /// after one timer wake-up; 0: each at its own time. The default is
    /// the resolution of tokio's timers, which round up to the millisecond
    /// anyway; redcore-load's default is the same, so that both pace alike.
    #[arg(long, value_name = "SECONDS", default_value = "0.001", requires = "pubsub", help_heading = "Pub/sub",
          value_parser = parse_seconds)]
    pub tick: Duration,

    /// Pub/sub: after the last publish, how long subscribers may wait for
    /// missing messages, seconds (the run ends as soon as all came).
    #[arg(long, value_name = "SECONDS", default_value = "2", requires = "pubsub", help_heading = "Pub/sub",
          value_parser = parse_seconds)]
    pub tail: Duration,

    /// Pub/sub on a --server: how subscribers receive: `pubsub`
    /// (`Client::get_async_pubsub`, a RESP2 connection each) or `resp3`
    /// (a RESP3 multiplexed connection each, with a push sender; needed
    /// for `--pubsub sharded`). On a --cluster: always RESP3 push.
    #[arg(long, value_name = "API", value_enum, default_value_t = SubscriberApiArg::Pubsub,
          requires = "pubsub", help_heading = "Pub/sub")]
    pub subscriber_api: SubscriberApiArg,
}

/// `--pubsub`: plain or sharded channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PubSubArg {
    /// SUBSCRIBE / PUBLISH.
    Channels,
    /// SSUBSCRIBE / SPUBLISH.
    Sharded,
}

/// `--subscriber-api`: how redis-rs subscribers receive on a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SubscriberApiArg {
    /// `aio::PubSub`.
    Pubsub,
    /// RESP3 push messages.
    Resp3,
}

/// Parses a rate: `0`, `50000`, `50k`, `1.5M`.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let (digits, scale) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1e3),
        Some((i, 'm' | 'M')) => (&t[..i], 1e6),
        _ => (t, 1.0),
    };
    let r: f64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a rate (messages per second, such as 50000 or 50k)"))?;
    let r = r * scale;
    if !(r.is_finite() && r >= 0.0) {
        return Err(format!("the rate must be 0 or more, got {s:?}"));
    }
    Ok(r)
}

/// What `--help` says about the client CPU in the report.
const CLIENT_CPU_HELP: &str = "Client CPU: the report (text and --json: client_cpu_s, \
client_cpu_us_per_cmd) gives the user + system CPU time of this whole process, every thread \
(getrusage RUSAGE_SELF), from the first measured command to the end of the last task, and \
that per measured command that ended (succeeded or failed), as redcore-load does. Left out: \
start-up, connecting (the cluster client connects to every node before the load), the \
warm-up, shutting down. With --pubsub: client_cpu_s, client_cpu_us_per_msg, from the first \
measured publish until every subscriber had every message (or --tail ran out), per measured \
message delivered; subscribing is left out.";

impl Cli {
    /// The measured duration, when the run is bounded by time.
    pub fn measure_duration(&self) -> Option<Duration> {
        match (self.requests, self.duration) {
            (Some(_), _) => None,
            (None, Some(d)) => Some(d),
            (None, None) => Some(Duration::from_secs(10)),
        }
    }
}

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
        .ok_or_else(|| format!("expected SET:GET such as 1:1, got {s:?}"))?;
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

/// Parses a number of seconds (`2`, `0.5`).
pub fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs)
        .map_err(|_| format!("{s:?} is not a duration (negative or too large)"))
}

/// `--key-layout`: how key numbers become key names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KeyLayoutArg {
    /// `PREFIXn`.
    Plain,
    /// `PREFIX{t}:n`, a hash tag per run of consecutive numbers.
    Tagged,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("redis-rs-load").chain(args.iter().copied()))
    }

    #[test]
    fn command_line() {
        Cli::command().debug_assert();
        let cli = parse(&["--server", "redis://127.0.0.1:6379"]).unwrap();
        assert_eq!((cli.tasks, cli.pipeline, cli.data_size), (64, 1, 32));
        assert_eq!(cli.ratio, Ratio { set: 1, get: 1 });
        assert_eq!((cli.keys, cli.key_prefix.as_str()), (100_000, "key:"));
        assert_eq!((cli.key_layout, cli.key_tags), (KeyLayoutArg::Plain, 1024));
        assert_eq!(cli.measure_duration(), Some(Duration::from_secs(10)));
        assert_eq!(cli.timeout, Duration::from_secs(5));
        let cli = parse(&[
            "--cluster",
            "127.0.0.1:7000",
            "--requests",
            "600000",
            "--ratio",
            "0:1",
            "--key-layout",
            "tagged",
            "--warmup",
            "0.5",
            "--cpu",
            "0",
        ])
        .unwrap();
        assert_eq!(cli.measure_duration(), None);
        assert_eq!(cli.ratio, Ratio { set: 0, get: 1 });
        assert_eq!(cli.key_layout, KeyLayoutArg::Tagged);
        assert_eq!(cli.warmup, Duration::from_millis(500));
        assert_eq!(cli.cpu, Some(0));
        let usage = |args: &[&str]| parse(args).unwrap_err().exit_code();
        assert_eq!(usage(&[]), 2);
        assert_eq!(usage(&["--server", "redis://a", "--cluster", "a:1"]), 2);
        assert_eq!(usage(&["--server", "redis://a", "--ratio", "0:0"]), 2);
        assert_eq!(usage(&["--server", "redis://a", "--tasks", "0"]), 2);
        assert_eq!(
            usage(&[
                "--server",
                "redis://a",
                "--requests",
                "5",
                "--duration",
                "1"
            ]),
            2
        );
        assert_eq!(usage(&["--server", "redis://a", "--warmup", "-1"]), 2);
    }

    #[test]
    fn pubsub_command_line() {
        let cli = parse(&["--server", "redis://a", "--pubsub", "channels"]).unwrap();
        assert_eq!(cli.pubsub, Some(PubSubArg::Channels));
        assert_eq!(
            (cli.channels, cli.publishers, cli.subscribers, cli.in_flight),
            (1, 1, 1, 64)
        );
        assert_eq!((cli.message_size, cli.rate), (32, 0.0));
        assert_eq!(cli.channel_prefix, "channel:");
        assert_eq!(cli.tail, Duration::from_secs(2));
        assert_eq!(cli.tick, Duration::from_millis(1));
        assert_eq!(cli.subscriber_api, SubscriberApiArg::Pubsub);
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
            "1.5k",
            "--requests",
            "100",
        ])
        .unwrap();
        assert_eq!(cli.pubsub, Some(PubSubArg::Sharded));
        assert_eq!((cli.channels, cli.publishers, cli.subscribers), (8, 2, 3));
        assert_eq!((cli.message_size, cli.rate), (16, 1500.0));
        assert_eq!(parse_rate("0"), Ok(0.0));
        assert_eq!(parse_rate("2M"), Ok(2e6));
        assert!(parse_rate("-1").is_err());
        let usage = |args: &[&str]| parse(args).unwrap_err().exit_code();
        let pubsub = ["--server", "redis://a", "--pubsub", "channels"];
        let with = |more: &[&'static str]| [&pubsub[..], more].concat();
        // Pub/sub flags need --pubsub; SET/GET flags do not go with it.
        assert_eq!(usage(&["--server", "redis://a", "--channels", "2"]), 2);
        assert_eq!(usage(&["--server", "redis://a", "--rate", "5"]), 2);
        assert_eq!(usage(&with(&["--tasks", "2"])), 2);
        assert_eq!(usage(&with(&["--data-size", "2"])), 2);
        assert_eq!(usage(&with(&["--message-size", "15"])), 2);
        assert_eq!(usage(&with(&["--subscribers", "0"])), 2);
        assert_eq!(usage(&with(&["--pubsub", "patterns"])), 2);
    }
}
