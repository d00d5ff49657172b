//! The test harness of the redcore workspace: real `redis-server`
//! processes on free loopback ports in temporary directories, stopped
//! (SIGKILL + wait) on drop; clusters of them; a scripted fake node for
//! what a real server cannot be made to do; a blocking RESP client of its
//! own; TLS material made at test time; and, in [`client`], what tests that
//! drive redcore's clients share (running an executor, waiting on a
//! condition with a deadline, reading what the server says about a client).
//!
//! redcore's integration tests and benches and `redcore-load`'s tests use
//! it as a dev-dependency (`redcore-test-support = { path = ... }`); it is
//! not published.
//!
//! ```no_run
//! use redcore_test_support::{RedisCluster, RedisServer};
//!
//! let plain = RedisServer::start();
//! let secure = RedisServer::builder().password("p").acl_user("u", "pw").unix_socket().tls().start();
//! assert_eq!(plain.cmd(&["PING"]), "PONG");
//! let cluster = RedisCluster::start();
//! ```
//!
//! Every server runs with `save ""`, `appendonly no`, `enable-debug-command yes`
//! and `bind 127.0.0.1`; its directory, config (`redis.conf`), log (`redis.log`)
//! and stdout/stderr (`stdio.log`) live in a `TempDir`. Set
//! `REDCORE_KEEP_TEST_DIRS=1` to keep the directories for inspection.

pub mod client;
mod cluster;
mod codec_conn;
pub mod fake_node;
mod own_process;
mod process;
mod resp;
mod tls;

use std::io::{Read, Seek, SeekFrom};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

pub use cluster::{
    CLUSTER_TIMEOUT, ClusterNodeInfo, Deadline, RedisCluster, RedisClusterBuilder, SLOTS,
    key_in_slot, key_slot, keys_in_slot,
};
pub use codec_conn::{CODEC_IO_TIMEOUT, CodecConn, args_text, show};
pub use fake_node::{Call as FakeCall, FakeNode, Reply as FakeReply, Stream as FakeStream};
pub use own_process::in_own_process;
pub use process::{
    missing_binary_message, process_alive, redis_cli_bin, redis_server_bin, wait_until,
};
pub use resp::{Conn, Reply, encode};
pub use tls::{PemFile, TlsMaterial, rustls_client_config};

/// Loopback host every server binds to.
pub const HOST: &str = "127.0.0.1";
/// How long a server may take to start listening.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Connect/read/write timeout of the harness's own connections (long enough
/// for `DEBUG SLEEP` in setup code).
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);
const PORT_ATTEMPTS: usize = 20;

/// Which listeners carry TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TlsMode {
    /// `port 0` + `tls-port`: the only TCP listener is TLS.
    Only,
    /// A plain `port` and a `tls-port`.
    AndPlain,
}

/// Builder for [`RedisServer`]; every option adds lines to `redis.conf`.
#[derive(Clone, Debug, Default)]
pub struct RedisServerBuilder {
    password: Option<String>,
    acl_users: Vec<(String, String)>,
    admin: Option<(String, String)>,
    unix_socket: bool,
    tls: Option<TlsMode>,
    pub(crate) cluster_node_timeout_ms: Option<u64>,
    extra: Vec<String>,
}

impl RedisServerBuilder {
    /// `requirepass` (password of the `default` user; also used by the
    /// harness's own connections).
    pub fn password(mut self, password: &str) -> Self {
        self.password = Some(password.to_owned());
        self
    }

    /// An ACL user with full access: `user NAME on >PASS ~* &* +@all`.
    pub fn acl_user(self, name: &str, password: &str) -> Self {
        let rules = format!("on {} ~* &* +@all", quote(&format!(">{password}")));
        self.acl_user_rules(name, &rules)
    }

    /// An ACL user with the given rules, verbatim, e.g.
    /// `acl_user_rules("reader", "on >pw ~cache:* +get")` for a restricted user.
    pub fn acl_user_rules(mut self, name: &str, rules: &str) -> Self {
        self.acl_users.push((name.to_owned(), rules.to_owned()));
        self
    }

    /// Credentials the harness itself uses (readiness, [`RedisServer::cmd`])
    /// when the `default` user cannot be used, e.g. with
    /// `config("user default off")`. Defaults to the `default` user with
    /// [`password`](Self::password).
    pub fn admin_user(mut self, name: &str, password: &str) -> Self {
        self.admin = Some((name.to_owned(), password.to_owned()));
        self
    }

    /// Also listen on a Unix socket `redis.sock` in the temp dir (`unixsocketperm 700`).
    pub fn unix_socket(mut self) -> Self {
        self.unix_socket = true;
        self
    }

    /// TLS only: `port 0`, `tls-port` = [`RedisServer::port`], fresh
    /// certificates, `tls-auth-clients optional`.
    pub fn tls(mut self) -> Self {
        self.tls = Some(TlsMode::Only);
        self
    }

    /// TLS on [`RedisServer::tls_port`] plus plain TCP on [`RedisServer::port`].
    pub fn tls_and_plain(mut self) -> Self {
        self.tls = Some(TlsMode::AndPlain);
        self
    }

    /// A raw `redis.conf` line, appended after the harness's own lines (so it
    /// overrides them), e.g. `config("rename-command HELLO \"\"")` or
    /// `config("tls-auth-clients yes")`.
    pub fn config(mut self, line: &str) -> Self {
        self.extra.push(line.to_owned());
        self
    }

    /// Starts the server; panics (with the log tail) when it cannot.
    pub fn start(self) -> RedisServer {
        self.try_start().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts the server, retrying on other ports when the chosen one turns
    /// out to be taken.
    pub fn try_start(self) -> Result<RedisServer, String> {
        let bin = redis_server_bin();
        let mut dir = tempfile::Builder::new()
            .prefix("redcore-redis-")
            .tempdir()
            .map_err(|e| format!("cannot create temp dir: {e}"))?;
        if std::env::var_os("REDCORE_KEEP_TEST_DIRS").is_some() {
            dir.disable_cleanup(true);
        }
        let path = dir.path().to_owned();
        let tls = self.tls.map(|_| TlsMaterial::generate(&path));
        let mut server = RedisServer {
            bin: bin.to_owned(),
            conf_path: path.join("redis.conf"),
            unix_path: self.unix_socket.then(|| path.join("redis.sock")),
            port: 0,
            tls_port: None,
            child: None,
            pid: 0,
            tls,
            spec: self,
            dir: Some(dir),
        };
        let mut last = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let cluster = server.spec.cluster_node_timeout_ms.is_some();
            let port = process::pick_port(cluster);
            server.port = port;
            server.tls_port = match server.spec.tls {
                None => None,
                Some(TlsMode::Only) => Some(port),
                Some(TlsMode::AndPlain) => Some(loop {
                    let p = process::pick_port(false);
                    if p != port {
                        break p;
                    }
                }),
            };
            std::fs::write(&server.conf_path, server.render_conf())
                .map_err(|e| format!("write {}: {e}", server.conf_path.display()))?;
            match server.launch() {
                Ok(()) => return Ok(server),
                Err(StartError::PortTaken(msg)) => last = msg,
                Err(StartError::Fatal(msg)) => return Err(msg),
            }
        }
        Err(format!(
            "redis-server could not get a free port in {PORT_ATTEMPTS} attempts; last: {last}"
        ))
    }
}

enum StartError {
    /// Another process holds a port: retry with a new one.
    PortTaken(String),
    Fatal(String),
}

/// A running `redis-server`, killed (SIGKILL + wait) on drop.
#[derive(Debug)]
pub struct RedisServer {
    bin: PathBuf,
    conf_path: PathBuf,
    unix_path: Option<PathBuf>,
    port: u16,
    tls_port: Option<u16>,
    child: Option<Child>,
    pid: u32,
    tls: Option<TlsMaterial>,
    spec: RedisServerBuilder,
    dir: Option<tempfile::TempDir>,
}

/// Quotes a config argument for redis.conf (sdssplitargs syntax).
fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            _ => out.push(c),
        }
    }
    out.push('"');
    out
}

fn tail(path: &Path, from: u64, lines: usize) -> String {
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.seek(SeekFrom::Start(from));
        let _ = f.read_to_string(&mut text);
    }
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

impl RedisServer {
    /// A default standalone server.
    pub fn start() -> RedisServer {
        RedisServer::builder().start()
    }

    /// A builder for servers with passwords, ACL users, Unix sockets, TLS or
    /// extra config lines.
    pub fn builder() -> RedisServerBuilder {
        RedisServerBuilder::default()
    }

    /// "127.0.0.1".
    pub fn host(&self) -> &'static str {
        HOST
    }

    /// The client port: plain TCP, or the TLS port for a TLS-only server.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The TLS port, when TLS is on (equal to `port()` for TLS-only servers).
    pub fn tls_port(&self) -> Option<u16> {
        self.tls_port
    }

    /// Whether `port()` speaks plain (non-TLS) RESP.
    pub fn has_plain_port(&self) -> bool {
        self.spec.tls != Some(TlsMode::Only)
    }

    /// `127.0.0.1:port()`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), self.port)
    }

    /// `127.0.0.1:tls_port()`.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_port
            .map(|p| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p))
    }

    /// `redis://127.0.0.1:port` or `rediss://127.0.0.1:port` (no credentials).
    pub fn url(&self) -> String {
        let scheme = if self.has_plain_port() {
            "redis"
        } else {
            "rediss"
        };
        format!("{scheme}://{HOST}:{}", self.port)
    }

    /// The Unix socket path, when enabled.
    pub fn unix_path(&self) -> Option<&Path> {
        self.unix_path.as_deref()
    }

    /// Certificates and keys, when TLS is on.
    pub fn tls(&self) -> Option<&TlsMaterial> {
        self.tls.as_ref()
    }

    /// The `requirepass` password, if any.
    pub fn password(&self) -> Option<&str> {
        self.spec.password.as_deref()
    }

    /// Pid of the current server process (of the last start, once stopped).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The server's temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("temp dir").path()
    }

    /// Path of the server log.
    pub fn log_path(&self) -> PathBuf {
        self.dir().join("redis.log")
    }

    /// The last `lines` lines of the server log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log_path(), 0, lines)
    }

    /// Whether the server process is running.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills the server (SIGKILL) and reaps it; the directory, ports and
    /// config stay, so [`restart`](Self::restart) brings it back (a cluster
    /// node keeps its identity through `nodes.conf`). No-op when stopped.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server if running and starts it again on the same ports.
    pub fn restart(&mut self) {
        self.kill();
        match self.launch() {
            Ok(()) => {}
            Err(StartError::PortTaken(msg) | StartError::Fatal(msg)) => {
                panic!("restart failed: {msg}")
            }
        }
    }

    /// Sends `SIGSTOP` (the server hangs: connections stay open, nothing
    /// answers) or, with `false`, `SIGCONT`.
    pub fn pause(&self, stop: bool) {
        let sig = if stop { libc::SIGSTOP } else { libc::SIGCONT };
        // SAFETY: plain kill(2) on a pid we spawned and have not reaped.
        if self.child.is_some() && unsafe { libc::kill(self.pid as libc::pid_t, sig) } != 0 {
            panic!(
                "kill({}, {sig}): {}",
                self.pid,
                std::io::Error::last_os_error()
            );
        }
    }

    /// An unauthenticated connection to `port()` (TLS, trusting the test CA
    /// and presenting the client certificate, when the server is TLS-only).
    pub fn connect(&self) -> std::io::Result<Conn> {
        match (&self.tls, self.has_plain_port()) {
            (Some(tls), false) => Conn::tls(self.addr(), tls.client_config(), IO_TIMEOUT),
            _ => Conn::tcp(self.addr(), IO_TIMEOUT),
        }
    }

    /// An unauthenticated TLS connection with the given client config.
    pub fn connect_tls(&self, config: Arc<rustls::ClientConfig>) -> std::io::Result<Conn> {
        let addr = self.tls_addr().expect("server has no TLS port");
        Conn::tls(addr, config, IO_TIMEOUT)
    }

    /// An unauthenticated connection over the Unix socket.
    pub fn connect_unix(&self) -> std::io::Result<Conn> {
        let path = self.unix_path().expect("server has no unix socket");
        Conn::unix(path, IO_TIMEOUT)
    }

    fn admin_auth(&self) -> Option<Vec<&str>> {
        match (&self.spec.admin, &self.spec.password) {
            (Some((user, pass)), _) => Some(vec!["AUTH", user, pass]),
            (None, Some(pass)) => Some(vec!["AUTH", pass]),
            (None, None) => None,
        }
    }

    /// A connection authenticated as the harness's admin user.
    pub fn admin_conn(&self) -> std::io::Result<Conn> {
        let mut conn = self.connect()?;
        if let Some(auth) = self.admin_auth() {
            let reply = conn.call(&auth)?;
            if reply.is_error() {
                return Err(std::io::Error::other(format!("AUTH failed: {reply}")));
            }
        }
        Ok(conn)
    }

    /// Runs one command as the admin user on a fresh connection and returns
    /// the reply (error replies included). Panics on I/O errors.
    pub fn call(&self, args: &[&str]) -> Reply {
        self.admin_conn()
            .and_then(|mut c| c.call(args))
            .unwrap_or_else(|e| panic!("{args:?} on {}: {e}", self.addr()))
    }

    /// Runs one command as the admin user and returns the reply as text
    /// (see [`Reply::text`]). Panics on error replies; use [`call`](Self::call)
    /// to inspect errors.
    pub fn cmd(&self, args: &[&str]) -> String {
        match self.call(args) {
            Reply::Error(e) => panic!("{args:?} on {} failed: {e}", self.addr()),
            reply => reply.text(),
        }
    }

    /// One field of `INFO <section>`, e.g. `info_field("replication", "role")`.
    pub fn info_field(&self, section: &str, field: &str) -> Option<String> {
        let info = self.cmd(&["INFO", section]);
        info.lines().find_map(|line| {
            let (k, v) = line.split_once(':')?;
            (k == field).then(|| v.trim().to_owned())
        })
    }

    /// Arguments that point `redis-cli` at this server (host, port, auth, TLS).
    pub fn redis_cli_args(&self) -> Vec<String> {
        let mut args = vec!["-h".into(), HOST.into(), "-p".into(), self.port.to_string()];
        match (&self.spec.admin, &self.spec.password) {
            (Some((user, pass)), _) => {
                args.extend(["--user".into(), user.clone(), "--pass".into(), pass.clone()])
            }
            (None, Some(pass)) => args.extend(["-a".into(), pass.clone()]),
            (None, None) => {}
        }
        args.push("--no-auth-warning".into());
        if let (Some(tls), false) = (&self.tls, self.has_plain_port()) {
            args.push("--tls".into());
            for (flag, file) in [
                ("--cacert", &tls.ca_cert),
                ("--cert", &tls.client_cert),
                ("--key", &tls.client_key),
            ] {
                args.push(flag.into());
                args.push(file.path.display().to_string());
            }
        }
        args
    }

    /// Runs `redis-cli <connection args> <args>` and returns its stdout;
    /// panics when it exits non-zero.
    pub fn redis_cli(&self, args: &[&str]) -> String {
        let out = Command::new(redis_cli_bin())
            .args(self.redis_cli_args())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli");
        if !out.status.success() {
            panic!(
                "redis-cli {args:?} on {} failed ({}): {}{}",
                self.addr(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn render_conf(&self) -> String {
        let dir = self.dir().display().to_string();
        let mut c = vec![
            format!("bind {HOST}"),
            "daemonize no".into(),
            format!("dir {}", quote(&dir)),
            format!("logfile {}", quote(&format!("{dir}/redis.log"))),
            "loglevel notice".into(),
            "save \"\"".into(),
            "appendonly no".into(),
            "enable-debug-command yes".into(),
            "repl-diskless-sync-delay 0".into(),
        ];
        match self.spec.tls {
            Some(TlsMode::Only) => c.push("port 0".into()),
            _ => c.push(format!("port {}", self.port)),
        }
        if let (Some(tls), Some(tls_port)) = (&self.tls, self.tls_port) {
            c.push(format!("tls-port {tls_port}"));
            c.push(format!(
                "tls-cert-file {}",
                quote(&tls.server_cert.path.display().to_string())
            ));
            c.push(format!(
                "tls-key-file {}",
                quote(&tls.server_key.path.display().to_string())
            ));
            c.push(format!(
                "tls-ca-cert-file {}",
                quote(&tls.ca_cert.path.display().to_string())
            ));
            c.push("tls-auth-clients optional".into());
        }
        if let Some(pass) = &self.spec.password {
            c.push(format!("requirepass {}", quote(pass)));
            c.push(format!("masterauth {}", quote(pass)));
        }
        for (name, rules) in &self.spec.acl_users {
            c.push(format!("user {name} {rules}"));
        }
        if let Some(path) = &self.unix_path {
            c.push(format!("unixsocket {}", quote(&path.display().to_string())));
            c.push("unixsocketperm 700".into());
        }
        if let Some(timeout) = self.spec.cluster_node_timeout_ms {
            c.push("cluster-enabled yes".into());
            c.push("cluster-config-file nodes.conf".into());
            c.push(format!("cluster-node-timeout {timeout}"));
        }
        c.extend(self.spec.extra.iter().cloned());
        c.push(String::new());
        c.join("\n")
    }

    /// Spawns the process with the current config and waits until it serves.
    fn launch(&mut self) -> Result<(), StartError> {
        let dir = self.dir().to_owned();
        let log = dir.join("redis.log");
        let stdio = dir.join("stdio.log");
        let (log_from, stdio_from) = (file_len(&log), file_len(&stdio));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&stdio)
            .map_err(|e| StartError::Fatal(format!("open {}: {e}", stdio.display())))?;
        let err = out
            .try_clone()
            .map_err(|e| StartError::Fatal(e.to_string()))?;
        let mut command = Command::new(&self.bin);
        command
            .arg(&self.conf_path)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = process::spawn_owned_by_process(command)
            .map_err(|e| StartError::Fatal(format!("spawn {}: {e}", self.bin.display())))?;
        self.pid = child.id();
        self.child = Some(child);
        let failure = |server: &RedisServer, what: String| {
            format!(
                "redis-server (pid {}, port {}) {what}\n--- {} ---\n{}\n--- redis.log (tail) ---\n{}\n--- stdio (tail) ---\n{}",
                server.pid,
                server.port,
                server.conf_path.display(),
                std::fs::read_to_string(&server.conf_path).unwrap_or_default(),
                tail(&log, log_from, 30),
                tail(&stdio, stdio_from, 30),
            )
        };
        let deadline = Instant::now() + START_TIMEOUT;
        let mut last = String::from("no connection yet");
        loop {
            let exited = match self.child.as_mut().map(|c| c.try_wait()) {
                Some(Ok(Some(status))) => Some(status.to_string()),
                Some(Ok(None)) => None,
                Some(Err(e)) => Some(e.to_string()),
                None => Some("not running".into()),
            };
            if let Some(status) = exited {
                self.child = None;
                let msg = failure(self, format!("exited during startup ({status})"));
                let logs = format!(
                    "{}{}",
                    tail(&log, log_from, 200),
                    tail(&stdio, stdio_from, 200)
                );
                return Err(if logs.contains("Address already in use") {
                    StartError::PortTaken(msg)
                } else {
                    StartError::Fatal(msg)
                });
            }
            match self.probe() {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => last = e,
            }
            if Instant::now() >= deadline {
                let msg = failure(
                    self,
                    format!("not ready after {START_TIMEOUT:?}; last probe: {last}"),
                );
                self.kill();
                return Err(StartError::Fatal(msg));
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// One readiness probe: `Ok(true)` once the listener answers and
    /// `INFO server` names our pid (so a server of another test that holds the
    /// port is never mistaken for ours).
    fn probe(&self) -> Result<bool, String> {
        let mut conn = self.connect().map_err(|e| format!("connect: {e}"))?;
        if let Some(auth) = self.admin_auth() {
            let reply = conn.call(&auth).map_err(|e| format!("AUTH: {e}"))?;
            if reply.is_error() {
                return Err(format!("AUTH: {reply}"));
            }
        }
        match conn
            .call(&["INFO", "server"])
            .map_err(|e| format!("INFO: {e}"))?
        {
            Reply::Bulk(info) => {
                let info = String::from_utf8_lossy(&info);
                let pid = info
                    .lines()
                    .find_map(|l| l.strip_prefix("process_id:"))
                    .map(str::trim);
                if pid == Some(self.pid.to_string().as_str()) {
                    Ok(true)
                } else {
                    Err(format!(
                        "port answered by another server (process_id {pid:?})"
                    ))
                }
            }
            Reply::Error(e) if e.starts_with("LOADING") => Ok(false),
            // INFO renamed away: a PONG from a live child of ours must do.
            Reply::Error(e) if e.contains("unknown command") => {
                let pong = conn.call(&["PING"]).map_err(|e| format!("PING: {e}"))?;
                Ok(pong == Reply::Status("PONG".into()))
            }
            other => Err(format!("INFO server: {other:?}")),
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        // The TempDir field drops after this, once the process is gone.
    }
}
