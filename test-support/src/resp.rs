//! A tiny blocking RESP2 client of the harness's own, over TCP, Unix sockets
//! or TLS (rustls). Deliberately independent of the library's codec.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;

/// A decoded RESP2 reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`
    Status(String),
    /// `-ERR ...` (text without the leading `-`)
    Error(String),
    /// `:42`
    Integer(i64),
    /// `$3\r\nfoo`
    Bulk(Vec<u8>),
    /// `$-1` or `*-1`
    Nil,
    /// `*2\r\n...`
    Array(Vec<Reply>),
}

impl Reply {
    /// Whether this is an error reply.
    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }

    /// The error text when this is an error reply.
    pub fn error(&self) -> Option<&str> {
        match self {
            Reply::Error(e) => Some(e),
            _ => None,
        }
    }

    /// Flattens the reply to text the way `redis-cli --raw` would: statuses,
    /// errors and bulks as text, integers as decimal, nil as "", arrays as
    /// their elements joined by newlines.
    pub fn text(&self) -> String {
        match self {
            Reply::Status(s) | Reply::Error(s) => s.clone(),
            Reply::Integer(i) => i.to_string(),
            Reply::Bulk(b) => String::from_utf8_lossy(b).into_owned(),
            Reply::Nil => String::new(),
            Reply::Array(items) => items.iter().map(Reply::text).collect::<Vec<_>>().join("\n"),
        }
    }

    /// Elements of an array reply (empty for anything else).
    pub fn items(&self) -> &[Reply] {
        match self {
            Reply::Array(items) => items,
            _ => &[],
        }
    }

    /// The integer of an integer reply.
    pub fn integer(&self) -> Option<i64> {
        match self {
            Reply::Integer(i) => Some(*i),
            _ => None,
        }
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// One blocking connection speaking RESP2.
pub struct Conn {
    io: BufReader<Stream>,
}

fn tcp(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let sock = TcpStream::connect_timeout(&addr, timeout)?;
    sock.set_read_timeout(Some(timeout))?;
    sock.set_write_timeout(Some(timeout))?;
    sock.set_nodelay(true)?;
    Ok(sock)
}

impl Conn {
    /// Plain TCP connection; `timeout` bounds the connect and every read/write.
    pub fn tcp(addr: SocketAddr, timeout: Duration) -> io::Result<Conn> {
        Ok(Conn::new(Stream::Tcp(tcp(addr, timeout)?)))
    }

    /// Unix socket connection.
    pub fn unix(path: &Path, timeout: Duration) -> io::Result<Conn> {
        let sock = UnixStream::connect(path)?;
        sock.set_read_timeout(Some(timeout))?;
        sock.set_write_timeout(Some(timeout))?;
        Ok(Conn::new(Stream::Unix(sock)))
    }

    /// TLS connection verified against the IP address of `addr`; the
    /// handshake completes (or fails) before this returns.
    pub fn tls(
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
        timeout: Duration,
    ) -> io::Result<Conn> {
        let mut sock = tcp(addr, timeout)?;
        let name = ServerName::IpAddress(addr.ip().into());
        let mut tls = rustls::ClientConnection::new(config, name).map_err(io::Error::other)?;
        while tls.is_handshaking() {
            tls.complete_io(&mut sock)?;
        }
        Ok(Conn::new(Stream::Tls(Box::new(rustls::StreamOwned::new(
            tls, sock,
        )))))
    }

    fn new(stream: Stream) -> Conn {
        Conn {
            io: BufReader::new(stream),
        }
    }

    /// Sends one command and reads its reply (error replies are `Ok`).
    pub fn call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> io::Result<Reply> {
        self.send(args)?;
        self.read_reply()
    }

    /// Sends one command without waiting for the reply (for pipelining).
    pub fn send<A: AsRef<[u8]>>(&mut self, args: &[A]) -> io::Result<()> {
        self.send_raw(&encode(args))
    }

    /// Writes raw bytes and flushes.
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        let stream = self.io.get_mut();
        stream.write_all(bytes)?;
        stream.flush()
    }

    /// Reads one reply.
    pub fn read_reply(&mut self) -> io::Result<Reply> {
        read_reply(&mut self.io, 0)
    }
}

/// Encodes a command as a RESP2 array of bulk strings.
pub fn encode<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        let arg = arg.as_ref();
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn read_line(r: &mut impl BufRead) -> io::Result<String> {
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line)?;
    if line.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed by server",
        ));
    }
    if !line.ends_with(b"\r\n") {
        return Err(bad(format!("unterminated line {line:?}")));
    }
    line.truncate(line.len() - 2);
    String::from_utf8(line).map_err(|e| bad(e.to_string()))
}

fn read_reply(r: &mut impl BufRead, depth: usize) -> io::Result<Reply> {
    if depth > 64 {
        return Err(bad("reply nested too deep".into()));
    }
    let line = read_line(r)?;
    let (kind, rest) = line
        .split_at_checked(1)
        .ok_or_else(|| bad("empty line".into()))?;
    let int = |s: &str| s.parse::<i64>().map_err(|e| bad(format!("{s:?}: {e}")));
    Ok(match kind {
        "+" => Reply::Status(rest.to_owned()),
        "-" => Reply::Error(rest.to_owned()),
        ":" => Reply::Integer(int(rest)?),
        "$" => {
            let len = int(rest)?;
            if len < 0 {
                return Ok(Reply::Nil);
            }
            let mut buf = vec![0; len as usize + 2];
            r.read_exact(&mut buf)?;
            if !buf.ends_with(b"\r\n") {
                return Err(bad("bulk string not terminated by CRLF".into()));
            }
            buf.truncate(len as usize);
            Reply::Bulk(buf)
        }
        "*" => {
            let len = int(rest)?;
            if len < 0 {
                return Ok(Reply::Nil);
            }
            let mut items = Vec::with_capacity(len.min(1024) as usize);
            for _ in 0..len {
                items.push(read_reply(r, depth + 1)?);
            }
            Reply::Array(items)
        }
        _ => return Err(bad(format!("unexpected reply line {line:?}"))),
    })
}
