//! Process plumbing for the harness: locating the Redis binaries, spawning
//! servers that die with the test process, picking free ports, polling with
//! deadlines.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{OnceLock, mpsc};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Environment variable that overrides the `redis-server` binary.
pub const REDIS_SERVER_ENV: &str = "REDCORE_REDIS_SERVER";
/// Environment variable that overrides the `redis-cli` binary.
pub const REDIS_CLI_ENV: &str = "REDCORE_REDIS_CLI";

/// The message shown when a Redis binary is missing: names the install command.
pub fn missing_binary_message(binary: &str) -> String {
    format!(
        "`{binary}` was not found on PATH (or where {REDIS_SERVER_ENV} / {REDIS_CLI_ENV} point).\n\
         The integration tests start real Redis servers.\n\
         On Debian/Ubuntu install them with:\n    \
         sudo apt-get install redis-server redis-tools\n\
         (tools/test.sh does this for you). On other systems install Redis >= 7 \
         (redis-server and redis-cli, built with TLS support) and put it on PATH, or point \
         {REDIS_SERVER_ENV} / {REDIS_CLI_ENV} at the binaries."
    )
}

fn find_binary(name: &str, env: &str) -> Option<PathBuf> {
    let name = match std::env::var_os(env) {
        Some(path) if Path::new(&path).components().count() > 1 => {
            let path = PathBuf::from(path);
            return path.is_file().then_some(path);
        }
        Some(other) => PathBuf::from(other),
        None => PathBuf::from(name),
    };
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(&name))
        .find(|candidate| candidate.is_file())
}

/// Path of `redis-server`; panics with install instructions when it is
/// missing or older than Redis 7.
pub fn redis_server_bin() -> &'static Path {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = BIN.get_or_init(|| {
        let path = find_binary("redis-server", REDIS_SERVER_ENV)
            .ok_or_else(|| missing_binary_message("redis-server"))?;
        check_version(&path)?;
        Ok(path)
    });
    match found {
        Ok(path) => path,
        Err(msg) => panic!("{msg}"),
    }
}

/// Path of `redis-cli`; panics with install instructions when it is missing.
pub fn redis_cli_bin() -> &'static Path {
    static BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    match BIN.get_or_init(|| find_binary("redis-cli", REDIS_CLI_ENV)) {
        Some(path) => path,
        None => panic!("{}", missing_binary_message("redis-cli")),
    }
}

fn check_version(path: &Path) -> Result<(), String> {
    let out = Command::new(path)
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "Redis server v=7.0.15 sha=... "
    let major = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix("v="))
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse::<u32>().ok());
    match major {
        Some(m) if m >= 7 => Ok(()),
        Some(_) => Err(format!(
            "{} is too old ({}); the tests need Redis >= 7 (enable-debug-command, ACL, TLS). {}",
            path.display(),
            text.trim(),
            missing_binary_message("redis-server >= 7")
        )),
        None => Err(format!(
            "cannot parse the version of {}: {:?}",
            path.display(),
            text.trim()
        )),
    }
}

struct SpawnRequest {
    command: Command,
    reply: mpsc::Sender<io::Result<Child>>,
}

/// Spawns `command` as a server process that is SIGKILLed when this test
/// process dies.
///
/// Orphan protection uses `PR_SET_PDEATHSIG = SIGKILL`. Caveat: Linux sends the
/// death signal when the *thread* that forked the child exits, not when the
/// process exits. Test threads come and go (libtest runs each test on its own
/// thread; tests may start servers inside glommio executor threads or scoped
/// threads), so a server forked directly by such a thread would be killed as
/// soon as that thread ends, even if the `RedisServer` value was moved
/// elsewhere. To avoid that, every fork happens on one dedicated spawner thread
/// that lives until the process exits: servers are owned by that thread, so
/// they live as long as the test process and die with it (also on SIGKILL, a
/// panic=abort or a nextest timeout).
pub fn spawn_owned_by_process(mut command: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs between fork and exec; it only calls the
    // async-signal-safe prctl/getppid and builds io::Errors without allocating.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        thread::Builder::new()
            .name("redis-spawner".into())
            .spawn(move || {
                for mut req in rx {
                    let _ = req.reply.send(req.command.spawn());
                }
            })
            .expect("cannot start the redis spawner thread");
        tx
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner
        .send(SpawnRequest {
            command,
            reply: reply_tx,
        })
        .expect("redis spawner thread is gone");
    reply_rx.recv().expect("redis spawner thread is gone")
}

/// Whether a process with this pid exists and is not a zombie.
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // Format: "pid (comm) S ..."; comm may contain spaces and parens.
        Ok(stat) => match stat.rfind(')') {
            Some(i) => !matches!(stat[i + 1..].trim_start().chars().next(), Some('Z' | 'X')),
            None => true,
        },
        Err(_) => false,
    }
}

/// Polls `cond` every few milliseconds until it returns true; panics naming
/// `what` when `timeout` passes first.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    h.write_u128(nanos);
    h.finish()
}

/// Lower bound of the kernel's ephemeral port range: ports below it are not
/// handed out to outgoing connections, so a server port there is not stolen
/// by some client socket between the check and the server's bind.
fn ephemeral_floor() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

fn port_is_free(port: u32) -> bool {
    u16::try_from(port).is_ok_and(|p| TcpListener::bind((Ipv4Addr::LOCALHOST, p)).is_ok())
}

/// Offset of the cluster bus port from the client port (Redis default).
pub const CLUSTER_BUS_OFFSET: u16 = 10000;

/// A random port on 127.0.0.1 that can be bound right now. With `cluster_bus`,
/// `port + 10000` (<= 65535) must be free too. Other test processes may take it
/// before the server binds: callers retry with a new port when the server
/// reports "address in use".
pub fn pick_port(cluster_bus: bool) -> u16 {
    const LOW: u32 = 10000;
    let bus = u32::from(CLUSTER_BUS_OFFSET);
    let floor = ephemeral_floor().min(65536);
    let mut high = if cluster_bus {
        floor.saturating_sub(bus)
    } else {
        floor
    };
    if high < LOW + 1000 {
        // Unusual ephemeral range: use everything that fits.
        high = if cluster_bus { 65536 - bus } else { 65536 };
    }
    for _ in 0..1000 {
        let port = LOW + (random_u64() % u64::from(high - LOW)) as u32;
        if port_is_free(port) && (!cluster_bus || port_is_free(port + bus)) {
            return port as u16;
        }
    }
    panic!("no free loopback port found in {LOW}..{high} after 1000 attempts");
}
