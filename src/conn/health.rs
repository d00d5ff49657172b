//! The health check of a connection: noticing a server that has gone
//! silent without waiting for call deadlines.
//!
//! A socket is *silent* when the oldest call awaiting a reply was wholly
//! written, is not a command that holds its reply back on purpose (`BLPOP`,
//! `XREAD ... BLOCK`, `WAIT`, ...: [`is_blocking`](crate::cmd::is_blocking)),
//! and no byte has arrived for a whole health interval
//! ([`ConnectionConfig::health_interval`], 1 s by default, independent of
//! the call deadline). Calls queued behind a blocking call are not judged
//! either: the server answers them only after it. The connection's sweeper
//! looks every quarter interval while calls are queued, so a silence is
//! noticed between one and one and a quarter intervals after it began;
//! nothing is read from the clock on the path of a call.
//!
//! While the socket is silent:
//! - nothing more is written to it: a plain connection holds new calls
//!   back (the server would answer them only after the silent reply
//!   anyway), and a cluster node connection fails them at once as not
//!   sent, so the cluster client can refresh its topology and go where
//!   the cluster now routes them;
//! - the connection *probes* the server once per interval: a new socket,
//!   the handshake and a `PING`, all within one interval (never queued
//!   behind the silent socket's calls, blocking or not). A probe the
//!   server refuses (nothing listens there any more) gives the silent
//!   socket up; an unanswered probe is counted
//!   ([`ConnectionStats::probes_unanswered`](super::ConnectionStats::probes_unanswered)) and
//!   the socket is kept: the calls already written may still be answered
//!   (a server paused for a few seconds), and they fail at their own
//!   deadlines otherwise;
//! - the owner hears of it (a cluster client checks the topology with the
//!   other nodes, and gives the socket up once the cluster says another
//!   node serves the silent node's slots).
//!
//! Any byte from the socket ends the silence. TCP sockets also get
//! keepalive and `TCP_USER_TIMEOUT` (see
//! [`transport`](super::transport)), so a peer that drops every packet is
//! noticed by the kernel too.

use std::time::{Duration, Instant};

use futures_lite::AsyncWriteExt;
use glommio::timer::Timer;

use super::driver::connect_until;
use super::mux::Shared;
use crate::Error;

/// What a look at the socket found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Finding {
    /// Nothing to do.
    Fine,
    /// The socket just turned silent: tell the owner, and probe.
    Silent,
    /// Still silent: probe again.
    Probe,
}

/// The health check's state for the current socket.
#[derive(Debug)]
pub(crate) struct Health {
    interval: Option<Duration>,
    /// Bytes received on this connection so far.
    bytes_in: u64,
    /// The progress mark seen while a reply was due: bytes received and
    /// the sequence number of the oldest call, and when it was first seen.
    mark: Option<(u64, u64, Instant)>,
    /// When the socket was found silent; `None` while it is not.
    silent_since: Option<Instant>,
    /// When to probe next while silent.
    probe_at: Option<Instant>,
}

impl Health {
    pub fn new(interval: Option<Duration>) -> Health {
        Health {
            interval,
            bytes_in: 0,
            mark: None,
            silent_since: None,
            probe_at: None,
        }
    }

    /// True while the socket is silent.
    #[inline]
    pub fn is_silent(&self) -> bool {
        self.silent_since.is_some()
    }

    /// `n` bytes arrived. True when that ended a silence.
    #[inline]
    pub fn on_bytes(&mut self, n: usize) -> bool {
        if n == 0 {
            return false;
        }
        self.bytes_in += n as u64;
        if self.silent_since.is_some() {
            self.clear();
            return true;
        }
        false
    }

    /// When the sweeper must look at a call queued at `now`, at the
    /// latest, for the check to watch it (`None` when the check is off).
    #[inline]
    pub fn look_by(&self, now: Instant) -> Option<Instant> {
        self.interval.map(|i| now + i / 4)
    }

    /// Forgets the current socket (it died, or a new one is up).
    pub fn clear(&mut self) {
        self.mark = None;
        self.silent_since = None;
        self.probe_at = None;
    }

    /// Looks at the socket at `now`. `due` is the sequence number of the
    /// oldest call awaiting a reply when it was written and does not block
    /// on purpose; `busy` says whether any call is queued at all. Returns
    /// what was found and when to look next (`None`: when woken).
    pub fn look(
        &mut self,
        now: Instant,
        due: Option<u64>,
        busy: bool,
    ) -> (Finding, Option<Instant>) {
        let Some(interval) = self.interval else {
            return (Finding::Fine, None);
        };
        if self.silent_since.is_some() {
            let at = self.probe_at.unwrap_or(now);
            if now >= at {
                self.probe_at = Some(now + interval);
                return (Finding::Probe, self.probe_at);
            }
            return (Finding::Fine, Some(at));
        }
        let quarter = now + interval / 4;
        let Some(seq) = due else {
            self.mark = None;
            return (Finding::Fine, busy.then_some(quarter));
        };
        match self.mark {
            Some((bytes, s, since)) if bytes == self.bytes_in && s == seq => {
                if now >= since + interval {
                    self.silent_since = Some(now);
                    self.probe_at = Some(now + interval);
                    (Finding::Silent, self.probe_at)
                } else {
                    (Finding::Fine, Some(quarter.min(since + interval)))
                }
            }
            _ => {
                self.mark = Some((self.bytes_in, seq, now));
                (Finding::Fine, Some(quarter.min(now + interval)))
            }
        }
    }
}

/// How a probe went.
#[derive(Debug)]
pub(crate) enum ProbeOutcome {
    /// The server answered a `PING` on a new socket.
    Answered,
    /// Nothing answered within the interval.
    Unanswered,
    /// The server refused the connection: nothing listens there now.
    Refused(Error),
}

/// Probes the server of `shared`: a new socket, the handshake and a
/// `PING`, all within `within`.
pub(crate) async fn probe(shared: &Shared, within: Duration) -> ProbeOutcome {
    let deadline = Instant::now() + within;
    let attempt = async {
        let (mut io, _) = connect_until(shared, deadline).await?;
        let ping = super::handshake::ping(&mut io, &shared.config).await;
        let _ = io.close().await;
        ping
    };
    let timed = futures_lite::future::or(async { Some(attempt.await) }, async {
        Timer::new(within).await;
        None
    });
    match timed.await {
        None => ProbeOutcome::Unanswered,
        Some(Ok(())) => ProbeOutcome::Answered,
        Some(Err(e)) if is_refused(&e) => ProbeOutcome::Refused(e),
        // A handshake error, a timeout inside the connect: the server did
        // not show it is alive.
        Some(Err(_)) => ProbeOutcome::Unanswered,
    }
}

/// Whether `e` says that nothing listens at the server's address.
fn is_refused(e: &Error) -> bool {
    match e {
        Error::Connect { reason, .. } => {
            let r = reason.to_ascii_lowercase();
            r.contains("refused") || r.contains("no such file")
        }
        Error::Io(io) => matches!(
            io.kind(),
            std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
        ),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: Duration = Duration::from_millis(1000);

    #[test]
    fn a_due_reply_without_bytes_for_an_interval_is_silence() {
        let t0 = Instant::now();
        let mut h = Health::new(Some(H));
        // Nothing queued: nothing to watch.
        assert_eq!(h.look(t0, None, false), (Finding::Fine, None));
        // Call 7 is due: marked, looked at again within a quarter.
        let (f, next) = h.look(t0, Some(7), true);
        assert_eq!((f, next), (Finding::Fine, Some(t0 + H / 4)));
        // Bytes came (a large reply streaming in): the mark moves.
        h.on_bytes(10);
        let t1 = t0 + H * 3 / 4;
        assert_eq!(h.look(t1, Some(7), true).0, Finding::Fine);
        assert!(!h.is_silent());
        // No byte for a whole interval since the new mark: silent.
        let (f, probe_at) = h.look(t1 + H, Some(7), true);
        assert_eq!(f, Finding::Silent);
        assert!(h.is_silent());
        assert_eq!(probe_at, Some(t1 + 2 * H));
        // Probes come once per interval while the silence lasts.
        assert_eq!(h.look(t1 + H + H / 2, Some(7), true).0, Finding::Fine);
        assert_eq!(h.look(t1 + 2 * H, Some(7), true).0, Finding::Probe);
        // Nothing is not a byte; a byte ends it.
        assert!(!h.on_bytes(0));
        assert!(h.is_silent());
        assert!(h.on_bytes(1));
        assert!(!h.is_silent());
        assert!(!h.on_bytes(1));
    }

    #[test]
    fn replies_moving_on_or_nothing_due_is_not_silence() {
        let t0 = Instant::now();
        let mut h = Health::new(Some(H));
        h.look(t0, Some(1), true);
        // Another call is now the oldest (replies came): a new mark.
        assert_eq!(h.look(t0 + H, Some(2), true).0, Finding::Fine);
        // A blocking call at the front (nothing due): no mark.
        assert_eq!(
            h.look(t0 + 2 * H, None, true),
            (Finding::Fine, Some(t0 + 2 * H + H / 4))
        );
        assert_eq!(h.look(t0 + 3 * H, Some(2), true).0, Finding::Fine);
        assert!(!h.is_silent());
        // Switched off: never silent.
        let mut off = Health::new(None);
        off.look(t0, Some(1), true);
        assert_eq!(off.look(t0 + 100 * H, Some(1), true), (Finding::Fine, None));
    }
}
