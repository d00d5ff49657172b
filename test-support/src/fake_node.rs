//! A scripted fake Redis node, for what a real server cannot be made to do
//! on demand: a garbage or truncated reply, a reply that never comes, a
//! socket closed mid-command, a `MOVED` that points somewhere odd.
//!
//! ```no_run
//! use redcore_test_support::{FakeNode, FakeReply};
//!
//! let node = FakeNode::start(|args| match args[0].to_ascii_uppercase().as_slice() {
//!     b"GET" => FakeReply::Raw(b"$3\r\nbar\r\n".to_vec()),
//!     b"SET" => FakeReply::Close,
//!     _ => FakeReply::Default, // HELLO, PING, AUTH, SELECT, CLIENT SETINFO...
//! });
//! // ... point a client at node.addr() ...
//! assert_eq!(node.count("GET"), 1);
//! ```
//!
//! The node listens on `127.0.0.1:0` and serves every connection on its own
//! std thread, reading RESP2 commands (arrays of bulk strings, or inline
//! commands) and answering each, in order, with what the handler returns.
//! Commands pipelined in one write are answered one by one. Dropping the
//! node closes the listener and every connection and joins all threads; a
//! panic in the handler is re-raised then (unless the test already
//! panics). A handler that blocks forever blocks that drop: scripts must
//! return.
//!
//! A [`Stream`] reply writes a generator's chunks, as fast as the client
//! takes them or at a given rate, for floods and replies too large to build
//! in memory first: only one chunk is held at a time.
//!
//! Replies are encoded by the harness, not by the library under test.
//! The crate root re-exports [`FakeNode`], [`Reply`] as `FakeReply`, [`Call`]
//! as `FakeCall` and [`Stream`] as `FakeStream`.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::HOST;
use super::resp::Reply as Frame;

/// Longest bulk argument the node accepts (as Redis' `proto-max-bulk-len`).
const MAX_BULK: usize = 512 << 20;
/// Most arguments in one command.
const MAX_ARGS: usize = 1 << 20;
/// Longest inline command or `*`/`$` header line.
const MAX_LINE: usize = 64 << 10;

/// What the node does with one command.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reply {
    /// Send this value, RESP2-encoded.
    Value(Frame),
    /// Send these bytes verbatim (any RESP2/RESP3 frames, or garbage).
    Raw(Vec<u8>),
    /// Send nothing; keep reading the next commands.
    Silent,
    /// Close the connection without replying (commands pipelined after
    /// this one are never read).
    Close,
    /// Answer after the delay (cut short when the node drops).
    Delayed(Duration, Box<Reply>),
    /// Write a stream of chunks (see [`Stream`]); commands pipelined
    /// after this one are read once it ends.
    Stream(Stream),
    /// Answer as a plain Redis would to a handshake (see
    /// [`default_reply`]).
    Default,
}

impl Reply {
    /// `+OK`.
    pub fn ok() -> Reply {
        Reply::status("OK")
    }

    /// `+<text>`.
    pub fn status(text: &str) -> Reply {
        Reply::Value(Frame::Status(text.to_owned()))
    }

    /// `-<text>`, e.g. `Reply::error("ERR boom")`.
    pub fn error(text: &str) -> Reply {
        Reply::Value(Frame::Error(text.to_owned()))
    }

    /// `$<len>\r\n<bytes>`.
    pub fn bulk(bytes: impl AsRef<[u8]>) -> Reply {
        Reply::Value(Frame::Bulk(bytes.as_ref().to_vec()))
    }

    /// `:<n>`.
    pub fn int(n: i64) -> Reply {
        Reply::Value(Frame::Integer(n))
    }

    /// `$-1`.
    pub fn nil() -> Reply {
        Reply::Value(Frame::Nil)
    }

    /// `-MOVED <slot> <addr>`.
    pub fn moved(slot: u16, addr: SocketAddr) -> Reply {
        Reply::error(&format!("MOVED {slot} {addr}"))
    }

    /// `-ASK <slot> <addr>`.
    pub fn ask(slot: u16, addr: SocketAddr) -> Reply {
        Reply::error(&format!("ASK {slot} {addr}"))
    }

    /// The reply, after `delay`.
    pub fn after(delay: Duration, reply: Reply) -> Reply {
        Reply::Delayed(delay, Box::new(reply))
    }
}

/// Makes the chunk `i` (0, 1, ...) of a stream, or `None` at its end.
type Chunks = dyn Fn(u64) -> Option<Arc<[u8]>> + Send + Sync;

/// A reply written as a stream of chunks: chunk `i` is `next(i)`, until it
/// returns `None` or [`until`](Stream::until)'s flag is set; as fast as the
/// client reads (the default) or at a given rate. It also ends when the
/// client closes the connection or the node stops; afterwards the node
/// goes on with the next command, or closes the connection
/// ([`then_close`](Stream::then_close): for a stream cut in the middle of
/// a frame).
#[derive(Clone)]
pub struct Stream {
    next: Arc<Chunks>,
    rate: Option<u64>,
    close_after: bool,
    stop: Option<Arc<AtomicBool>>,
    written: Arc<AtomicU64>,
}

impl Stream {
    /// A stream of the chunks `next` makes.
    pub fn new(next: impl Fn(u64) -> Option<Arc<[u8]>> + Send + Sync + 'static) -> Stream {
        Stream {
            next: Arc::new(next),
            rate: None,
            close_after: false,
            stop: None,
            written: Arc::new(AtomicU64::new(0)),
        }
    }

    /// `head`, then `unit` `count` times (forever when `None`), in chunks
    /// of about 64 KiB, all made once: `Stream::repeat(b"*3\r\n", b":1\r\n",
    /// Some(3))` is a whole array.
    pub fn repeat(head: &[u8], unit: &[u8], count: Option<u64>) -> Stream {
        assert!(!unit.is_empty());
        let per_chunk = (64 * 1024 / unit.len()).max(1) as u64;
        let full: Arc<[u8]> = unit.repeat(per_chunk as usize).into();
        let head: Arc<[u8]> = head.into();
        let unit: Arc<[u8]> = unit.into();
        Stream::new(move |i| {
            if i == 0 {
                return Some(head.clone());
            }
            let done = (i - 1) * per_chunk;
            match count {
                None => Some(full.clone()),
                Some(n) if done >= n => None,
                Some(n) if n - done >= per_chunk => Some(full.clone()),
                Some(n) => Some(unit.repeat((n - done) as usize).into()),
            }
        })
    }

    /// Writes at about `bytes_per_second`.
    pub fn rate(mut self, bytes_per_second: u64) -> Stream {
        self.rate = Some(bytes_per_second);
        self
    }

    /// Ends the stream when `flag` is set (checked before each chunk).
    pub fn until(mut self, flag: Arc<AtomicBool>) -> Stream {
        self.stop = Some(flag);
        self
    }

    /// Closes the connection after the stream.
    pub fn then_close(mut self) -> Stream {
        self.close_after = true;
        self
    }

    /// A counter of the bytes written so far, shared by the clones of
    /// this stream (a test waits on it).
    pub fn written(&self) -> Arc<AtomicU64> {
        self.written.clone()
    }

    /// Writes the stream; false when the client closed or the node
    /// stopped.
    fn write(&self, writer: &Mutex<TcpStream>, shared: &Shared) -> bool {
        let start = Instant::now();
        let mut sent = 0u64;
        for i in 0.. {
            if shared.stopping() {
                return false;
            }
            if self.stop.as_ref().is_some_and(|f| f.load(Ordering::SeqCst)) {
                return true;
            }
            let Some(chunk) = (self.next)(i) else {
                return true;
            };
            if let Some(rate) = self.rate {
                // The fake's own pacing, not a test's synchronisation.
                let due = start + Duration::from_secs_f64(sent as f64 / rate as f64);
                let wait = due.saturating_duration_since(Instant::now());
                if !wait.is_zero() && shared.stopped_within(wait) {
                    return false;
                }
            }
            if lock(writer).write_all(&chunk).is_err() {
                return false;
            }
            sent += chunk.len() as u64;
            self.written.fetch_add(chunk.len() as u64, Ordering::SeqCst);
        }
        true
    }
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stream")
            .field("rate", &self.rate)
            .field("close_after", &self.close_after)
            .finish_non_exhaustive()
    }
}

impl PartialEq for Stream {
    fn eq(&self, other: &Stream) -> bool {
        Arc::ptr_eq(&self.next, &other.next)
            && self.rate == other.rate
            && self.close_after == other.close_after
    }
}

impl Eq for Stream {}

impl From<Stream> for Reply {
    fn from(stream: Stream) -> Reply {
        Reply::Stream(stream)
    }
}

impl From<Frame> for Reply {
    fn from(frame: Frame) -> Reply {
        Reply::Value(frame)
    }
}

/// What a plain Redis without `HELLO` answers to the commands a client
/// sends while connecting: `HELLO` is an unknown command (so the client
/// falls back to RESP2); `AUTH`, `SELECT`, `CLIENT SETNAME`,
/// `CLIENT SETINFO`, `READONLY`, `READWRITE`, `ASKING` and `QUIT` are
/// `+OK`; `PING` is `+PONG` (or its argument); anything else is
/// `-ERR unknown command`.
pub fn default_reply(args: &[Vec<u8>]) -> Frame {
    let word = |i: usize| args.get(i).map(|a| a.to_ascii_uppercase());
    let ok = Frame::Status("OK".into());
    match word(0).as_deref() {
        Some(b"AUTH" | b"SELECT" | b"READONLY" | b"READWRITE" | b"ASKING" | b"QUIT") => ok,
        Some(b"CLIENT") if matches!(word(1).as_deref(), Some(b"SETNAME" | b"SETINFO")) => ok,
        Some(b"PING") => match args.get(1) {
            Some(msg) => Frame::Bulk(msg.clone()),
            None => Frame::Status("PONG".into()),
        },
        _ => {
            let name = args
                .first()
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .unwrap_or_default();
            let rest: String = args
                .iter()
                .skip(1)
                .map(|a| format!("'{}' ", String::from_utf8_lossy(a)))
                .collect();
            Frame::Error(format!(
                "ERR unknown command '{name}', with args beginning with: {rest}"
            ))
        }
    }
}

/// One command as the handler sees it.
#[derive(Debug)]
pub struct Call<'a> {
    /// The command and its arguments, as sent.
    pub args: &'a [Vec<u8>],
    /// Which connection it came on: 0 for the first one accepted, 1 for
    /// the next, ...
    pub conn: usize,
    /// The fake node's own address (to point `MOVED` at itself, or list
    /// itself in `CLUSTER SLOTS`).
    pub node: SocketAddr,
}

impl Call<'_> {
    /// The command name, upper-cased (`""` for an empty command).
    pub fn name(&self) -> String {
        self.args
            .first()
            .map(|a| String::from_utf8_lossy(a).to_ascii_uppercase())
            .unwrap_or_default()
    }

    /// Whether the command is `name` (case-insensitive; `"CLUSTER SLOTS"`
    /// also checks the subcommand).
    pub fn is(&self, name: &str) -> bool {
        matches_name(self.args, name)
    }

    /// Argument `i` (0 is the command name) as text.
    pub fn arg(&self, i: usize) -> Option<String> {
        self.args
            .get(i)
            .map(|a| String::from_utf8_lossy(a).into_owned())
    }
}

fn matches_name(args: &[Vec<u8>], name: &str) -> bool {
    let mut words = name.split_whitespace();
    let mut i = 0;
    let all = words.by_ref().all(|w| {
        let hit = args
            .get(i)
            .is_some_and(|a| a.eq_ignore_ascii_case(w.as_bytes()));
        i += 1;
        hit
    });
    all && i > 0
}

type Handler = dyn Fn(&Call<'_>) -> Reply + Send + Sync;

/// One accepted connection.
struct Peer {
    /// The write half, shared by the connection thread and [`FakeNode::push`].
    writer: Arc<Mutex<TcpStream>>,
    /// Another handle on the socket, to shut it down without waiting for a
    /// writer blocked on a client that does not read.
    control: TcpStream,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    addr: SocketAddr,
    handler: Box<Handler>,
    stop: AtomicBool,
    /// Set by [`FakeNode::stop_listening`]: accept no new connection.
    deaf: AtomicBool,
    /// Wakes [`Reply::Delayed`] waits when the node stops.
    stop_lock: Mutex<()>,
    stop_cv: Condvar,
    /// Every command received, with its connection number, in order.
    log: Mutex<Vec<(usize, Vec<Vec<u8>>)>>,
    peers: Mutex<Vec<Peer>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking handler must not make the node unusable for the report.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Waits `delay` unless the node stops first; true when it stopped.
    fn stopped_within(&self, delay: Duration) -> bool {
        let deadline = Instant::now() + delay;
        let mut guard = lock(&self.stop_lock);
        loop {
            if self.stopping() {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            guard = self
                .stop_cv
                .wait_timeout(guard, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// A fake Redis node on a loopback port; see the module docs.
pub struct FakeNode {
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl FakeNode {
    /// Starts a node that answers every command with `handler(args)`.
    pub fn start(handler: impl Fn(&[Vec<u8>]) -> Reply + Send + Sync + 'static) -> FakeNode {
        FakeNode::start_with(move |call| handler(call.args))
    }

    /// Starts a node whose handler also learns the connection number and
    /// the node's address (see [`Call`]).
    pub fn start_with(handler: impl Fn(&Call<'_>) -> Reply + Send + Sync + 'static) -> FakeNode {
        let listener = TcpListener::bind((HOST, 0)).expect("fake node: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("fake node: local_addr");
        let shared = Arc::new(Shared {
            addr,
            handler: Box::new(handler),
            stop: AtomicBool::new(false),
            deaf: AtomicBool::new(false),
            stop_lock: Mutex::new(()),
            stop_cv: Condvar::new(),
            log: Mutex::new(Vec::new()),
            peers: Mutex::new(Vec::new()),
        });
        let acceptor = {
            let shared = shared.clone();
            thread::Builder::new()
                .name(format!("fake-node-{}", addr.port()))
                .spawn(move || accept_loop(listener, shared))
                .expect("fake node: spawn the accept thread")
        };
        FakeNode {
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// The node's address, `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// The node's port.
    pub fn port(&self) -> u16 {
        self.shared.addr.port()
    }

    /// How many commands named `name` arrived, on all connections
    /// (case-insensitive; `"CLUSTER SLOTS"` also checks the subcommand).
    pub fn count(&self, name: &str) -> usize {
        lock(&self.shared.log)
            .iter()
            .filter(|(_, args)| matches_name(args, name))
            .count()
    }

    /// Every command received so far, in arrival order, with the number of
    /// the connection it came on.
    pub fn received(&self) -> Vec<(usize, Vec<Vec<u8>>)> {
        lock(&self.shared.log).clone()
    }

    /// The names (upper-cased first words) of every command received so
    /// far, in arrival order.
    pub fn received_names(&self) -> Vec<String> {
        lock(&self.shared.log)
            .iter()
            .map(|(_, args)| {
                args.first()
                    .map(|a| String::from_utf8_lossy(a).to_ascii_uppercase())
                    .unwrap_or_default()
            })
            .collect()
    }

    /// Number of connections accepted so far.
    pub fn connections(&self) -> usize {
        lock(&self.shared.peers).len()
    }

    /// Writes `bytes` unasked to connection `conn` (between replies, never
    /// inside one). Errors when that connection is closed.
    pub fn push(&self, conn: usize, bytes: &[u8]) -> io::Result<()> {
        let writer = lock(&self.shared.peers)
            .get(conn)
            .map(|p| p.writer.clone())
            .ok_or_else(|| io::Error::other(format!("no connection {conn}")))?;
        let mut stream = lock(&writer);
        stream.write_all(bytes)?;
        stream.flush()
    }

    /// Closes the listening socket: new connections are refused, while the
    /// connections already open stay as they are (a host that went away
    /// without a word to its peers, seen from a socket that leads
    /// nowhere now).
    pub fn stop_listening(&mut self) {
        self.shared.deaf.store(true, Ordering::SeqCst);
        // Wake the blocking accept; the acceptor sees the flag and returns,
        // dropping the listener.
        let _ = TcpStream::connect_timeout(&self.shared.addr, Duration::from_secs(5));
        if let Some(acceptor) = self.acceptor.take() {
            if let Err(p) = acceptor.join() {
                panic::resume_unwind(p);
            }
        }
    }

    /// Closes every open connection (as a server restart would); the node
    /// keeps accepting new ones.
    pub fn close_all(&self) {
        for peer in lock(&self.shared.peers).iter() {
            let _ = peer.control.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        {
            let _guard = lock(&self.shared.stop_lock);
            self.shared.stop_cv.notify_all();
        }
        // Wake the blocking accept; the acceptor sees the flag and returns.
        let _ = TcpStream::connect_timeout(&self.shared.addr, Duration::from_secs(5));
        let mut panics = Vec::new();
        if let Some(acceptor) = self.acceptor.take() {
            if let Err(p) = acceptor.join() {
                panics.push(p);
            }
        }
        // No new peers now: close every socket, then join every thread.
        let mut peers = std::mem::take(&mut *lock(&self.shared.peers));
        for peer in &peers {
            let _ = peer.control.shutdown(Shutdown::Both);
        }
        for peer in &mut peers {
            if let Some(Err(p)) = peer.thread.take().map(JoinHandle::join) {
                panics.push(p);
            }
        }
        if let Some(p) = panics.into_iter().next() {
            if !thread::panicking() {
                panic::resume_unwind(p);
            }
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stopping() || shared.deaf.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let _ = stream.set_nodelay(true);
        let (Ok(writer), Ok(control)) = (stream.try_clone(), stream.try_clone()) else {
            continue;
        };
        let (reader, writer) = (stream, Arc::new(Mutex::new(writer)));
        let mut peers = lock(&shared.peers);
        let conn = peers.len();
        let thread = {
            let (shared, writer) = (shared.clone(), writer.clone());
            thread::Builder::new()
                .name(format!("fake-node-{}-conn-{conn}", shared.addr.port()))
                .spawn(move || serve(reader, writer, conn, &shared))
                .expect("fake node: spawn a connection thread")
        };
        peers.push(Peer {
            writer,
            control,
            thread: Some(thread),
        });
    }
}

/// Reads commands from one connection and answers them until the client
/// closes it, the script closes it, or the node stops.
fn serve(mut reader: TcpStream, writer: Arc<Mutex<TcpStream>>, conn: usize, shared: &Shared) {
    let mut parser = RequestParser::default();
    let mut chunk = [0u8; 16 << 10];
    loop {
        loop {
            let args = match parser.next() {
                Ok(Some(args)) => args,
                Ok(None) => break,
                Err(e) => {
                    let _ = send(&writer, &Reply::error(&format!("ERR Protocol error: {e}")));
                    let _ = lock(&writer).shutdown(Shutdown::Both);
                    return;
                }
            };
            if args.is_empty() {
                continue; // an empty inline line
            }
            lock(&shared.log).push((conn, args.clone()));
            let call = Call {
                args: &args,
                conn,
                node: shared.addr,
            };
            let handled = panic::catch_unwind(AssertUnwindSafe(|| (shared.handler)(&call)));
            let mut reply = handled.unwrap_or_else(|p| {
                // The client sees the connection close, not a hang; the
                // panic fails the test when the node drops.
                let _ = reader.shutdown(Shutdown::Both);
                panic::resume_unwind(p)
            });
            if reply == Reply::Default {
                let quit = args[0].eq_ignore_ascii_case(b"QUIT");
                reply = Reply::Value(default_reply(&args));
                if quit {
                    let _ = send(&writer, &reply);
                    reply = Reply::Close;
                }
            }
            while let Reply::Delayed(delay, then) = reply {
                if shared.stopped_within(delay) {
                    return;
                }
                reply = *then;
            }
            match reply {
                Reply::Close => {
                    let _ = lock(&writer).shutdown(Shutdown::Both);
                    return;
                }
                Reply::Stream(stream) => {
                    if !stream.write(&writer, shared) {
                        return;
                    }
                    if stream.close_after {
                        // An orderly close: commands sent meanwhile are read
                        // and dropped, so the client sees the end of the
                        // stream rather than a reset.
                        let _ = lock(&writer).shutdown(Shutdown::Write);
                        let _ = reader.set_read_timeout(Some(Duration::from_secs(1)));
                        while matches!(reader.read(&mut chunk), Ok(n) if n > 0) {}
                        return;
                    }
                }
                reply => {
                    if send(&writer, &reply).is_err() {
                        return;
                    }
                }
            }
        }
        match reader.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => parser.feed(&chunk[..n]),
        }
        if shared.stopping() {
            return;
        }
    }
}

fn send(writer: &Mutex<TcpStream>, reply: &Reply) -> io::Result<()> {
    let mut out = Vec::new();
    match reply {
        Reply::Value(frame) => encode_frame(frame, &mut out),
        Reply::Raw(bytes) => out.extend_from_slice(bytes),
        // `Default` and `Delayed` are resolved before; `Silent` sends nothing.
        _ => return Ok(()),
    }
    let mut stream = lock(writer);
    stream.write_all(&out)?;
    stream.flush()
}

/// Appends the RESP2 encoding of `frame` to `out`.
pub fn encode_frame(frame: &Frame, out: &mut Vec<u8>) {
    match frame {
        Frame::Status(s) => out.extend_from_slice(format!("+{s}\r\n").as_bytes()),
        Frame::Error(e) => out.extend_from_slice(format!("-{e}\r\n").as_bytes()),
        Frame::Integer(i) => out.extend_from_slice(format!(":{i}\r\n").as_bytes()),
        Frame::Bulk(b) => {
            out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
            out.extend_from_slice(b);
            out.extend_from_slice(b"\r\n");
        }
        Frame::Nil => out.extend_from_slice(b"$-1\r\n"),
        Frame::Array(items) => {
            out.extend_from_slice(format!("*{}\r\n", items.len()).as_bytes());
            for item in items {
                encode_frame(item, out);
            }
        }
    }
}

/// Splits the bytes a client sends into commands: RESP arrays of bulk
/// strings, or inline commands (words separated by spaces), as Redis does.
#[derive(Default)]
struct RequestParser {
    buf: VecDeque<u8>,
}

impl RequestParser {
    fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend(bytes);
    }

    /// The next whole command, if one is buffered.
    fn next(&mut self) -> Result<Option<Vec<Vec<u8>>>, String> {
        let bytes = self.buf.make_contiguous();
        let parsed = if bytes.first() == Some(&b'*') {
            parse_multibulk(bytes)?
        } else {
            parse_inline(bytes)?
        };
        Ok(parsed.map(|(args, used)| {
            self.buf.drain(..used);
            args
        }))
    }
}

/// A whole command and the number of bytes it took, `None` while
/// incomplete, or the protocol error.
type Parsed = Result<Option<(Vec<Vec<u8>>, usize)>, String>;

/// The line starting at `at` (without CRLF) and the index after its CRLF.
fn line(bytes: &[u8], at: usize) -> Result<Option<(&[u8], usize)>, String> {
    let rest = &bytes[at..];
    match rest.windows(2).position(|w| w == b"\r\n") {
        Some(end) => Ok(Some((&rest[..end], at + end + 2))),
        None if rest.len() > MAX_LINE => Err("too big header line".into()),
        None => Ok(None),
    }
}

fn number(text: &[u8], what: &str, max: usize) -> Result<usize, String> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.parse::<usize>().ok())
        .filter(|&n| n <= max)
        .ok_or_else(|| format!("invalid {what} {:?}", String::from_utf8_lossy(text)))
}

fn parse_multibulk(bytes: &[u8]) -> Parsed {
    let Some((header, mut at)) = line(bytes, 0)? else {
        return Ok(None);
    };
    let count = number(&header[1..], "multibulk length", MAX_ARGS)?;
    let mut args = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let Some((header, next)) = line(bytes, at)? else {
            return Ok(None);
        };
        if header.first() != Some(&b'$') {
            return Err(format!(
                "expected '$', got {:?}",
                String::from_utf8_lossy(&header[..header.len().min(1)])
            ));
        }
        let len = number(&header[1..], "bulk length", MAX_BULK)?;
        if bytes.len() < next + len + 2 {
            return Ok(None);
        }
        if &bytes[next + len..next + len + 2] != b"\r\n" {
            return Err("bulk argument not terminated by CRLF".into());
        }
        args.push(bytes[next..next + len].to_vec());
        at = next + len + 2;
    }
    Ok(Some((args, at)))
}

fn parse_inline(bytes: &[u8]) -> Parsed {
    let Some(end) = bytes.iter().position(|&b| b == b'\n') else {
        return if bytes.len() > MAX_LINE {
            Err("too big inline request".into())
        } else {
            Ok(None)
        };
    };
    let text = bytes[..end].strip_suffix(b"\r").unwrap_or(&bytes[..end]);
    let args = text
        .split(|&b| b == b' ' || b == b'\t')
        .filter(|w| !w.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    Ok(Some((args, end + 1)))
}
