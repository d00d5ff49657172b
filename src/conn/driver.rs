//! The tasks behind a connection: the driver, which owns the socket
//! (connect, handshake, write batches, read and dispatch replies,
//! reconnect), and the sweeper, which expires calls past their deadline.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt};
use glommio::timer::Timer;

use super::dispatch::{self, DECODE_BUDGET, Drained, dispatch};
use super::handshake::{self, Negotiated};
use super::health::{self, Finding, ProbeOutcome};
use super::mux::{Link, Mux, Shared};
use super::pubsub;
use super::read_buf::ReadBuf;
use super::transport::{self, Transport};
use super::uring;
use crate::Error;
use crate::cmd::Args;
use crate::config::{ConnectionConfig, TransportKind};
use crate::resp::Decoder;

/// Reads per wake-up before the driver yields, so callers woken by the
/// replies get to run and fill the next batch.
const READS_PER_POLL: usize = 16;

/// Connects and runs the handshake, all within the call timeout.
pub(crate) async fn connect_once(shared: &Shared) -> Result<(Transport, Negotiated), Error> {
    connect_until(shared, Instant::now() + shared.config.timeout).await
}

/// Connects and runs the handshake, all before `deadline`.
pub(crate) async fn connect_until(
    shared: &Shared,
    deadline: Instant,
) -> Result<(Transport, Negotiated), Error> {
    let config = &shared.config;
    let span = tracing::debug_span!("connect", addr = %shared.addr_text());
    let _enter = span.enter();
    let mut io = transport::connect(config, shared.tls.as_ref(), deadline).await?;
    let setup = async {
        let creds = handshake::credentials(config).await?;
        handshake::handshake(&mut io, config, creds).await
    };
    let left = deadline.saturating_duration_since(Instant::now());
    let negotiated = futures_lite::future::or(setup, async {
        Timer::new(left).await;
        Err(Error::Connect {
            addr: shared.addr_text(),
            reason: "the handshake timed out".into(),
            unsent_command: false,
        })
    })
    .await?;
    tracing::debug!(protocol = ?negotiated.protocol, "handshake done");
    Ok((io, negotiated))
}

/// The driver: keeps a socket up and moves bytes until the connection is
/// closed for good.
pub(crate) async fn run(shared: Rc<Shared>, mut ready: Option<(Transport, Negotiated)>) {
    let config = &shared.config;
    let mut backoff = Backoff::new(config.backoff_initial, config.backoff_max);
    let mut decoder = Decoder::with_limits(config.decoder_limits);
    let mut rbuf = ReadBuf::new();
    let mut ring_state = uring::Uring::new();
    loop {
        if shared.is_closed() {
            break;
        }
        let attempt = match ready.take() {
            Some(up) => Ok(up),
            None => connect_once(&shared).await,
        };
        let attempt = match attempt {
            Ok((mut io, negotiated)) => {
                let held = decoder.frame_bytes();
                decoder.reset();
                dispatch::released(held);
                rbuf.reset();
                rbuf.buf.extend_from_slice(&negotiated.leftover);
                // Bytes that came after the handshake's last reply can only
                // be pushes: a reply nobody asked for would be paired with
                // the next caller's command, so such a socket is dropped.
                // Subscriptions are made again before anything else is
                // written to the new socket.
                let early = match take_early_frames(&shared, &mut decoder, &mut rbuf) {
                    Ok(()) => pubsub::restore(&mut io, &shared, &mut decoder, &mut rbuf.buf).await,
                    Err(e) => Err(e),
                };
                match early {
                    Ok(()) => Ok((io, negotiated)),
                    Err(e) => {
                        let _ = io.close().await;
                        Err(e)
                    }
                }
            }
            Err(e) => Err(e),
        };
        let (mut io, negotiated) = match attempt {
            Ok(up) => up,
            Err(e) => {
                // The not-sent error names the address itself.
                let reason = match &e {
                    Error::Connect { reason, .. } => reason.clone(),
                    other => other.to_string(),
                };
                shared.mux.borrow_mut().on_connect_failed(config, reason);
                let delay = backoff.next_delay();
                tracing::warn!(addr = %shared.addr_text(), error = %e, ?delay, "connect failed; will retry");
                if sleep_unless_closed(&shared, delay).await {
                    break;
                }
                continue;
            }
        };
        if shared.mux.borrow().generation > 0 {
            tracing::info!(addr = %shared.addr_text(), "reconnected");
        }
        backoff.reset();
        if !shared.mux.borrow_mut().on_up(negotiated.protocol) {
            // Closed while the handshake ran: drop the socket.
            let _ = io.close().await;
            break;
        }
        shared.mux.borrow_mut().unsubscribe_stale(config);
        // The transport is chosen per socket: a ring that stopped working
        // sends the next socket to glommio.
        let mut io = match uring::choose(config) {
            TransportKind::IoUring => match uring::Socket::adopt(io, &mut rbuf.buf) {
                Ok(sock) => Active::Uring(sock),
                Err((io, e)) => {
                    tracing::debug!(error = %e, "the io_uring transport cannot take this socket");
                    Active::Glommio(io)
                }
            },
            _ => Active::Glommio(io),
        };
        shared.transport.set(match io {
            Active::Uring(_) => TransportKind::IoUring,
            Active::Glommio(_) => TransportKind::Glommio,
        });
        let err = match &mut io {
            Active::Glommio(io) => {
                let _callers_send = io.plain_fd().map(|fd| WriteThroughOn::new(&shared, fd));
                io_loop(&shared, io, &mut decoder, &mut rbuf).await
            }
            Active::Uring(sock) => {
                uring::io_loop(&shared, sock, &mut ring_state, &mut decoder).await
            }
        };
        if shared.is_closed() {
            io.close().await;
            break;
        }
        let exit = config.exit_on_disconnection;
        tracing::warn!(addr = %shared.addr_text(), error = %err, exit, "connection lost");
        shared.mux.borrow_mut().on_disconnect(config, exit);
        if exit {
            break;
        }
    }
    tracing::debug!(addr = %shared.addr_text(), "connection task ends");
}

/// Lets callers send on the I/O loop's socket themselves (see
/// [`super::write_through`]) until dropped: when the loop ends, or its
/// future is dropped, before the socket can close.
struct WriteThroughOn<'a>(&'a Shared);

impl<'a> WriteThroughOn<'a> {
    fn new(shared: &'a Shared, fd: std::os::fd::RawFd) -> Self {
        shared.mux.borrow_mut().write_through.start(fd);
        WriteThroughOn(shared)
    }
}

impl Drop for WriteThroughOn<'_> {
    fn drop(&mut self) {
        self.0.mux.borrow_mut().write_through.stop();
    }
}

/// The socket of the I/O loop, on either transport.
enum Active {
    Glommio(Transport),
    Uring(uring::Socket),
}

impl Active {
    async fn close(self) {
        match self {
            Active::Glommio(mut io) => {
                let _ = io.close().await;
            }
            // Dropping it shuts the socket down; the ring closes it once
            // the kernel is done with it.
            Active::Uring(sock) => drop(sock),
        }
    }
}

/// Delivers push frames read along with the handshake; any other frame is
/// a reply nobody asked for.
fn take_early_frames(
    shared: &Shared,
    decoder: &mut Decoder,
    rbuf: &mut ReadBuf,
) -> Result<(), Error> {
    while let Some(v) = decoder.decode(&mut rbuf.buf)? {
        let pubsub = shared.mux.borrow().resp2_pubsub && pubsub::is_resp2_pubsub(&v);
        if !v.is_push() && !pubsub {
            return Err(Error::Protocol(crate::resp::ProtocolError::UnexpectedReply));
        }
        shared
            .mux
            .borrow_mut()
            .on_push(v, shared.config.push_capacity);
    }
    Ok(())
}

/// Sleeps for `delay`; returns true early if the connection is closed.
async fn sleep_unless_closed(shared: &Shared, delay: Duration) -> bool {
    let closed = poll_fn(|cx| {
        let mut st = shared.mux.borrow_mut();
        if matches!(st.link, Link::Closed(_)) {
            return Poll::Ready(true);
        }
        st.io_waker = Some(cx.waker().clone());
        Poll::Pending
    });
    futures_lite::future::or(closed, async {
        Timer::new(delay).await;
        false
    })
    .await
}

/// Moves bytes until the socket fails or the connection is closed:
/// writes the whole batch buffer whenever it has bytes, reads whenever the
/// socket has bytes, and hands each decoded reply to the oldest call.
async fn io_loop(
    shared: &Shared,
    io: &mut Transport,
    decoder: &mut Decoder,
    rbuf: &mut ReadBuf,
) -> Error {
    let push_capacity = shared.config.push_capacity;
    // The last turn spent its decoding budget with bytes left.
    let mut backlog = false;
    poll_fn(|cx| {
        let mut st = shared.mux.borrow_mut();
        if let Some(e) = st.io_loop_turn() {
            return Poll::Ready(e);
        }
        // Write: the whole batch, in as few writes as the socket takes.
        if st.needs_compaction() {
            st.compact();
        }
        let mut wrote = false;
        while !st.out.is_empty() && !st.holds_writes() {
            match Pin::new(&mut *io).poll_write(cx, &st.out) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(io::Error::from(io::ErrorKind::WriteZero).into());
                }
                Poll::Ready(Ok(n)) => {
                    st.wrote(n);
                    st.write_through.room_again();
                    wrote = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(e.into()),
                Poll::Pending => break,
            }
        }
        if wrote {
            // TLS buffers inside rustls until flushed; plain sockets flush
            // at once.
            if let Poll::Ready(Err(e)) = Pin::new(&mut *io).poll_flush(cx) {
                return Poll::Ready(e.into());
            }
        }
        // Read and dispatch, within a budget of decoded bytes: what is
        // left over is decoded first on the next turn.
        let mut budget = DECODE_BUDGET;
        if backlog {
            match dispatch(&mut st, decoder, &mut rbuf.buf, push_capacity, &mut budget) {
                Ok(Drained::NeedMore) => backlog = false,
                Ok(Drained::Budget) => {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Err(e) => return Poll::Ready(e),
            }
        }
        for _ in 0..READS_PER_POLL {
            let spare = rbuf.spare(decoder.bytes_needed());
            let offered = spare.len();
            match Pin::new(&mut *io).poll_read(cx, spare) {
                Poll::Ready(Ok(0)) => {
                    rbuf.filled(offered, 0);
                    return Poll::Ready(Error::from(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed the connection",
                    )));
                }
                Poll::Ready(Ok(n)) => {
                    rbuf.filled(offered, n);
                    if st.note_bytes_in(n) && !st.out.is_empty() {
                        // A silence ended: what was held back goes out.
                        cx.waker().wake_by_ref();
                    }
                    st.read_batch();
                    match dispatch(&mut st, decoder, &mut rbuf.buf, push_capacity, &mut budget) {
                        Ok(Drained::NeedMore) => {}
                        Ok(Drained::Budget) => {
                            backlog = true;
                            cx.waker().wake_by_ref();
                            return Poll::Pending;
                        }
                        Err(e) => return Poll::Ready(e),
                    }
                }
                Poll::Ready(Err(e)) => {
                    rbuf.filled(offered, 0);
                    return Poll::Ready(e.into());
                }
                Poll::Pending => {
                    rbuf.filled(offered, 0);
                    if st.hibernating {
                        rbuf.release_if_empty();
                    }
                    if !st
                        .io_waker
                        .as_ref()
                        .is_some_and(|w| w.will_wake(cx.waker()))
                    {
                        st.io_waker = Some(cx.waker().clone());
                    }
                    return Poll::Pending;
                }
            }
        }
        // Read budget spent: yield so the woken callers run, then go on.
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}

/// The sweeper: expires calls at their deadline, runs the health check
/// (see [`super::health`]), takes a socket whose oldest reply is long
/// overdue for dead, and lets idle buffers go.
pub(crate) async fn sweeper(shared: Rc<Shared>) {
    let config = &shared.config;
    loop {
        let (wake_at, finding) = {
            let mut st = shared.mux.borrow_mut();
            if matches!(st.link, Link::Closed(_)) {
                return;
            }
            let now = Instant::now();
            st.batch_clock = None;
            // Never sleep longer than one timeout: a call queued meanwhile
            // with the default timeout expires no earlier than that.
            let mut at = now + config.timeout;
            if let Some(next) = st.expire(now, config.timeout) {
                at = at.min(next);
            }
            let (finding, next) = st.check_health(config, now);
            if let Some(next) = next {
                at = at.min(next);
            }
            if let Some(next) = ping_subscribed(&mut st, config, now) {
                at = at.min(next);
            }
            if let Some(idle) = config.hibernate_after {
                if st.is_idle() && !st.hibernating {
                    let when = st.last_activity + idle;
                    if now >= when {
                        st.hibernate();
                    } else {
                        at = at.min(when);
                    }
                }
            }
            st.sweep_at = Some(at);
            (at, finding)
        };
        if finding == Finding::Silent {
            if let Some(tell) = &shared.on_silent {
                tell();
            }
        }
        if finding != Finding::Fine {
            let interval = config.health_interval.unwrap_or(config.timeout);
            glommio::spawn_local(probe_and_act(shared.clone(), interval)).detach();
        }
        let mut timer = Timer::new(wake_at.saturating_duration_since(Instant::now()));
        poll_fn(|cx| {
            if Pin::new(&mut timer).poll(cx).is_ready() {
                return Poll::Ready(());
            }
            let mut st = shared.mux.borrow_mut();
            // A caller with an earlier deadline cleared `sweep_at`.
            if st.sweep_at.is_none() || matches!(st.link, Link::Closed(_)) {
                return Poll::Ready(());
            }
            st.sweeper_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
    }
}

/// A connection carrying subscriptions and nothing else would never
/// notice a silent server (the health check watches replies due): it
/// sends a `PING` once per health interval while idle. Returns when to
/// look again.
fn ping_subscribed(st: &mut Mux, config: &ConnectionConfig, now: Instant) -> Option<Instant> {
    let interval = config.health_interval?;
    if st.pubsub.is_empty() || st.link != Link::Up {
        st.pubsub_ping_at = None;
        return None;
    }
    let at = *st.pubsub_ping_at.get_or_insert(now + interval);
    if now < at {
        return Some(at);
    }
    if st.is_idle() {
        // No room or no socket: the health check has calls to watch.
        let _ = st.queue_detached(config, &mut |out| ["PING"].encode(out));
    }
    st.pubsub_ping_at = Some(now + interval);
    Some(now + interval)
}

/// Probes a silent socket's server (see [`health::probe`]) and acts on
/// the outcome: a refused probe gives the socket up.
async fn probe_and_act(shared: Rc<Shared>, interval: Duration) {
    let outcome = health::probe(&shared, interval).await;
    let mut st = shared.mux.borrow_mut();
    match outcome {
        ProbeOutcome::Answered => {
            tracing::info!(addr = %shared.addr_text(), "the server answers a probe; its reply on this socket is still due");
        }
        ProbeOutcome::Unanswered => {
            st.stats.probes_unanswered += 1;
            tracing::warn!(addr = %shared.addr_text(), "the server does not answer a probe either");
        }
        ProbeOutcome::Refused(e) => {
            tracing::warn!(addr = %shared.addr_text(), error = %e, "the server refuses new connections; giving the silent socket up");
            st.give_up_socket("the socket is silent and the server refuses new connections");
        }
    }
}

/// Exponential backoff with jitter: each delay is drawn from the upper
/// half of the current step, and steps double up to the maximum.
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    step: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            step: initial,
        }
    }

    pub fn next_delay(&mut self) -> Duration {
        let step = self.step.min(self.max);
        self.step = (step * 2).min(self.max);
        let half = step / 2;
        half + half.mul_f64(fastrand::f64())
    }

    pub fn reset(&mut self) {
        self.step = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Commands;

    #[test]
    fn backoff_doubles_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(700));
        let bounds = [100, 200, 400, 700, 700];
        for max in bounds {
            let d = b.next_delay();
            assert!(d >= Duration::from_millis(max / 2), "{d:?} < half of {max}");
            assert!(d <= Duration::from_millis(max), "{d:?} > {max}");
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    /// A cluster node connection fails calls at once, as not sent, while
    /// its node is unreachable: the first call after the first failed
    /// attempt, and every call after.
    #[test]
    fn node_connections_fail_fast_while_the_node_is_down() {
        // A port nobody listens on: bind, note it, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(64 << 10)
            .spawn(move || async move {
                let config = crate::ConnectionConfig::builder()
                    .port(port)
                    .timeout(Duration::from_secs(30))
                    .build()
                    .unwrap();
                let conn = crate::Connection::open_node(config, None, Box::new(|| {}), None);
                let started = Instant::now();
                // Waits for the first attempt, which is refused.
                let first = conn.command::<()>(["PING"]).await.unwrap_err();
                // Fails at once from then on.
                let second = conn.command::<()>(["PING"]).await.unwrap_err();
                assert!(started.elapsed() < Duration::from_secs(5));
                for e in [first, second] {
                    assert!(
                        matches!(
                            e,
                            Error::Connect {
                                unsent_command: true,
                                ..
                            }
                        ),
                        "expected a not-sent connect error, got {e:?}"
                    );
                    assert!(e.is_safe_to_retry(), "{e:?}");
                    assert!(e.to_string().contains("the command was not sent"), "{e}");
                }
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
