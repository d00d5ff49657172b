//! The socket under a connection: TCP, Unix, or TLS over TCP.
//!
//! Bytes move through glommio's `TcpStream` / `UnixStream`, which send and
//! receive with plain `send`/`recv` system calls (`MSG_DONTWAIT`) and use
//! io_uring for readiness polls, `connect` and timers. TLS is rustls in
//! user space over the same TCP stream.
//!
//! TCP sockets get `TCP_NODELAY`, keepalive and `TCP_USER_TIMEOUT` (see
//! [`keep_watch`]), so that the kernel notices a peer that drops every
//! packet, idle or not.

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::{TcpStream, UnixStream};

use super::tls;
use crate::Error;
use crate::config::{ConnectionConfig, ServerAddr, TransportKind};

/// One connected socket.
pub(crate) enum Transport {
    Tcp(TcpStream),
    /// A Unix socket, and its descriptor when redcore connected it itself
    /// (glommio's `UnixStream` does not expose it; the io_uring transport
    /// needs it).
    Unix(UnixStream, Option<RawFd>),
    Tls(Box<futures_rustls::client::TlsStream<TcpStream>>),
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Transport::Tcp($s) => {
                let $s = Pin::new($s);
                $e
            }
            Transport::Unix($s, _) => {
                let $s = Pin::new($s);
                $e
            }
            Transport::Tls($s) => {
                let $s = Pin::new(&mut **$s);
                $e
            }
        }
    };
}

impl Transport {
    /// The descriptor of a plain (not TLS) socket whose descriptor is
    /// known, for callers that send on it directly.
    pub fn plain_fd(&self) -> Option<RawFd> {
        match self {
            Transport::Tcp(s) => Some(s.as_raw_fd()),
            Transport::Unix(_, fd) => *fd,
            Transport::Tls(_) => None,
        }
    }
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        dispatch!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        dispatch!(self, s => s.poll_write(cx, buf))
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        dispatch!(self, s => s.poll_flush(cx))
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        dispatch!(self, s => s.poll_close(cx))
    }
}

/// Connects to the configured server before `deadline`: resolves the host
/// (off the executor, as name resolution blocks), tries each address in
/// turn, and runs the TLS handshake when TLS is on.
pub(crate) async fn connect(
    config: &ConnectionConfig,
    tls_config: Option<&Arc<rustls::ClientConfig>>,
    deadline: Instant,
) -> Result<Transport, Error> {
    match &config.addr {
        ServerAddr::Unix(path) => {
            let what = path.display().to_string();
            if config.transport.resolve() == TransportKind::IoUring {
                if let Some((stream, fd)) = connect_unix_now(path) {
                    return Ok(Transport::Unix(stream, Some(fd)));
                }
            }
            let stream = within(deadline, &what, UnixStream::connect(path)).await?;
            Ok(Transport::Unix(stream, None))
        }
        ServerAddr::Tcp { host, port } => {
            let addrs = resolve(host, *port, deadline).await?;
            let mut last = None;
            for addr in addrs {
                let left = remaining(deadline, &addr.to_string())?;
                match TcpStream::connect_timeout(addr, left).await {
                    Ok(stream) => {
                        stream
                            .set_nodelay(true)
                            .map_err(|e| Error::from(io::Error::from(e)))?;
                        keep_watch(stream.as_raw_fd(), config)?;
                        let Some(tls_config) = tls_config else {
                            return Ok(Transport::Tcp(stream));
                        };
                        let opts = config.tls.as_ref().expect("TLS config implies TLS options");
                        let name = tls::server_name(opts, host)?;
                        let handshake = tls::handshake(stream, tls_config.clone(), name);
                        let stream = within(deadline, &addr.to_string(), handshake).await?;
                        return Ok(Transport::Tls(Box::new(stream)));
                    }
                    Err(e) => last = Some((addr, e)),
                }
            }
            let (addr, e) = last.expect("resolve returns at least one address");
            Err(Error::Connect {
                addr: addr.to_string(),
                reason: io::Error::from(e).to_string(),
                unsent_command: false,
            })
        }
    }
}

/// Lets the kernel watch a TCP socket: keepalive probes after one health
/// interval of quiet (at least 1 s; every such interval, three of them),
/// and `TCP_USER_TIMEOUT` of one call timeout, so that a socket whose
/// sent bytes (or keepalive probes) go unacknowledged that long fails
/// with `ETIMEDOUT` instead of retransmitting for many minutes. A peer
/// that is alive but silent (a stopped process) still acknowledges; the
/// health check catches that one.
fn keep_watch(fd: RawFd, config: &ConnectionConfig) -> Result<(), Error> {
    let every = config
        .health_interval
        .unwrap_or(config.timeout)
        .as_secs()
        .clamp(1, 3600) as libc::c_int;
    let user_timeout = config.timeout.as_millis().clamp(1000, u32::MAX as u128) as libc::c_uint;
    let set = |level, name, value: libc::c_int| {
        // SAFETY: a plain setsockopt on a socket this function's caller
        // owns, with a pointer to a live c_int and its size.
        let r = unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                &value as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(Error::from(io::Error::last_os_error()))
        }
    };
    set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1)?;
    set(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, every)?;
    set(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, every)?;
    set(libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 3)?;
    set(
        libc::IPPROTO_TCP,
        libc::TCP_USER_TIMEOUT,
        user_timeout as libc::c_int,
    )
}

/// Connects a Unix socket without waiting, keeping its descriptor; `None`
/// when that is not possible at once (then glommio connects, and the
/// connection uses glommio's socket).
fn connect_unix_now(path: &std::path::Path) -> Option<(UnixStream, RawFd)> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: a zeroed sockaddr_un is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() {
        return None;
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: plain system calls; the descriptor is closed on failure and
    // otherwise owned by the returned stream.
    unsafe {
        let fd = libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        );
        if fd < 0 {
            return None;
        }
        let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
        if libc::connect(fd, &addr as *const _ as *const libc::sockaddr, len) != 0 {
            libc::close(fd);
            return None;
        }
        Some((UnixStream::from_raw_fd(fd), fd))
    }
}

fn remaining(deadline: Instant, what: &str) -> Result<Duration, Error> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(Error::Connect {
            addr: what.to_owned(),
            reason: "timed out".into(),
            unsent_command: false,
        });
    }
    Ok(left)
}

/// Runs `fut` until `deadline`; a timeout is a connect error naming `what`.
async fn within<T, E: Into<Error>>(
    deadline: Instant,
    what: &str,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, Error> {
    let left = remaining(deadline, what)?;
    let timer = async {
        glommio::timer::Timer::new(left).await;
        Err(Error::Connect {
            addr: what.to_owned(),
            reason: "timed out".into(),
            unsent_command: false,
        })
    };
    futures_lite::future::or(async { fut.await.map_err(Into::into) }, timer).await
}

impl From<glommio::GlommioError<()>> for Error {
    fn from(e: glommio::GlommioError<()>) -> Self {
        Error::from(io::Error::from(e))
    }
}

/// Resolves a host name to socket addresses. IP literals need no lookup;
/// names are resolved on glommio's blocking thread pool.
async fn resolve(host: &str, port: u16, deadline: Instant) -> Result<Vec<SocketAddr>, Error> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let name = host.to_owned();
    let lookup = glommio::executor().spawn_blocking(move || {
        (name.as_str(), port)
            .to_socket_addrs()
            .map(|a| a.collect::<Vec<_>>())
    });
    let what = format!("{host}:{port}");
    let addrs = within(deadline, &what, async { lookup.await.map_err(Error::from) }).await?;
    if addrs.is_empty() {
        return Err(Error::Connect {
            addr: what,
            reason: "the name resolved to no address".into(),
            unsent_command: false,
        });
    }
    Ok(addrs)
}
