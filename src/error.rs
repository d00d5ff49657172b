//! Errors: one [`Error`] type for the whole crate, and server error replies
//! classified once, when they are decoded, into a [`ServerErrorKind`].
//!
//! Routing code reads the retry decision from the error instead of matching
//! strings: [`Error::retry_action`] and [`ServerError::retry_action`] say
//! whether a command may be sent again, and where.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use crate::resp::ProtocolError;

/// The result type used throughout redcore.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in redcore.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server answered with an error reply (`-ERR ...`, `!...`).
    #[error(transparent)]
    Server(#[from] ServerError),
    /// A script or function call (`EVAL`, `EVALSHA`, `FCALL` and their
    /// read-only variants) routed by a cluster client answered with an
    /// error that reads like a cluster refusal (`TRYAGAIN`, `MOVED`,
    /// `CLUSTERDOWN`, `BUSY`, ...) but is not in the server's own words:
    /// the code ran and raised it (`redis.error_reply('TRYAGAIN x')`), so
    /// it may have written. Never retried, never safe to retry; the text
    /// is the server's reply as it came ([`Error::server_error`] returns
    /// it, but it is not followed as a redirect).
    #[error("raised by the script or function: {0}")]
    ScriptError(ServerError),
    /// The server sent bytes that are not valid RESP, or that break a limit.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// A reply could not be converted into the Rust type asked for.
    #[error(transparent)]
    Conversion(#[from] ConversionError),
    /// The keys of one command (or one transaction) hash to different slots.
    #[error("keys hash to different slots ({first} and {other}) in a command that needs one slot")]
    CrossSlot {
        /// The slot of the first key.
        first: u16,
        /// The slot of a later key that differs from `first`.
        other: u16,
    },
    /// A command has too few arguments for its key layout (for example
    /// `EVAL` whose `numkeys` points past the end).
    #[error("malformed command {command}: {reason}")]
    MalformedCommand {
        /// The command name as given.
        command: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An I/O error from the socket or the file system.
    #[error("I/O error: {0}")]
    Io(Arc<std::io::Error>),
    /// A configuration option has a value it cannot have.
    #[error("invalid option {option}: {reason}")]
    InvalidConfig {
        /// The option's name.
        option: &'static str,
        /// What is wrong with its value.
        reason: String,
    },
    /// A Redis URI could not be parsed. The message never contains the
    /// password.
    #[error("invalid Redis URI: {reason}")]
    InvalidUri {
        /// What is wrong with it.
        reason: String,
    },
    /// TLS could not be set up, or the TLS handshake failed (for example a
    /// certificate that does not verify).
    #[error("TLS error: {0}")]
    Tls(String),
    /// The connection could not be made to any address the host resolved
    /// to, within the deadline. Nothing was sent: a call that fails with
    /// this error never reached the server.
    #[error("cannot connect to {addr}: {reason}{}", if *unsent_command { "; the command was not sent" } else { "" })]
    Connect {
        /// The address tried.
        addr: String,
        /// Why it failed.
        reason: String,
        /// True when a call failed with this error (its command was not
        /// sent, because the connection was down); false when opening the
        /// connection itself failed and no command was involved.
        unsent_command: bool,
    },
    /// The handshake (`HELLO`, `AUTH`, `SELECT`) failed.
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// The call's deadline passed. `maybe_applied` says whether the
    /// command had been written to the socket, so that the server may have
    /// run it.
    #[error("timed out{}", if *maybe_applied { " (the command was sent and may have been applied)" } else { " before the command was sent" })]
    Timeout {
        /// True when the command reached the socket before the deadline.
        maybe_applied: bool,
    },
    /// The socket died after the command was written and before its reply
    /// came: the server may have applied it. It is not sent again.
    #[error("connection lost after the command was sent; it may have been applied")]
    ConnectionLost,
    /// The connection is closed for good (closed by the user, or dropped
    /// with `exit_on_disconnection`); the command was not sent.
    #[error("connection closed: {0}")]
    Closed(&'static str),
    /// `EXEC` returned nil: a watched key changed, nothing was applied.
    #[error("transaction aborted: a watched key changed")]
    TransactionAborted,
    /// A watch transaction met a conflict on every one of its tries.
    #[error("watch conflict: a watched key changed on each of {tries} tries")]
    WatchConflict {
        /// How many times the transaction was tried.
        tries: u32,
    },
    /// The socket a watch session's `WATCH` ran on died before the
    /// transaction was sent; nothing of it was sent on the new socket.
    /// `watch_transaction` retries on this.
    #[error("the connection dropped during a watch transaction; the transaction was not sent")]
    WatchLost,
    /// The watch transaction's function chose to abort.
    #[error("transaction aborted by the caller: {0}")]
    Aborted(String),
    /// No cluster node answered a topology query (`CLUSTER SHARDS` or
    /// `CLUSTER SLOTS`) within the deadline: each node tried, and why.
    #[error("no cluster node gave its topology: {tried}")]
    NoTopology {
        /// `host:port: reason` for every node tried, separated by `; `.
        tried: String,
    },
    /// A call met more MOVED/ASK redirects than `max_redirects`.
    #[error("gave up after {redirects} redirects; the last: {last}")]
    TooManyRedirects {
        /// Redirects followed.
        redirects: u32,
        /// The last redirect reply.
        last: ServerError,
    },
    /// On the per-core runtime, the core that owns the command's node
    /// stopped (its thread ended) before it replied.
    #[error("core {core} of the runtime, which owns the node, stopped{}", if *maybe_applied { " after the command was handed to it; it may have been applied" } else { "; the command was not sent" })]
    CoreStopped {
        /// The core that stopped, numbered as
        /// [`CoreClient::core`](crate::CoreClient::core) numbers cores (in
        /// the order of the executor's CPUs).
        core: usize,
        /// Whether the command had been handed over.
        maybe_applied: bool,
    },
    /// No master serves the slot, even after topology refreshes until the
    /// deadline (slot 0 for a keyless command when no master is known).
    #[error("no cluster node serves slot {slot}")]
    SlotUnserved {
        /// The slot.
        slot: u16,
    },
    /// A cluster scan could not finish a slot: until the page's deadline
    /// the slot stayed marked migrating (or importing) on its master, and
    /// no other unfinished slot could be scanned meanwhile. A resharding
    /// under way ends this; one whose tool died leaves the slot so until an
    /// operator runs `CLUSTER SETSLOT <slot> STABLE` (or `NODE`). Every
    /// key returned so far stays returned: the scan's state is intact, and
    /// its next page tries again. See
    /// [`ClusterScan`](crate::cluster::ClusterScan).
    #[error("cluster scan: slot {slot} stays migrating; no pass can finish it")]
    SlotMigrating {
        /// The slot.
        slot: u16,
    },
    /// A command sent to several cluster nodes (`FLUSHALL`, `SCRIPT LOAD`,
    /// `DBSIZE`, ...) failed on some of them: which nodes ran it, which
    /// failed and why.
    #[error("{0}")]
    Fanout(Box<crate::cluster::FanoutError>),
    /// A command the connection cannot carry (it would break the pairing
    /// of requests and replies), such as `SUBSCRIBE` or `CLIENT REPLY`.
    #[error("{command} is not supported here: {reason}")]
    Unsupported {
        /// The command.
        command: String,
        /// Why, and what to use instead.
        reason: &'static str,
    },
}

/// Why a handshake failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The server rejected the user name or password (`WRONGPASS`, or an
    /// `ERR invalid password` from old servers).
    #[error("authentication failed: {0}")]
    WrongPassword(ServerError),
    /// The server requires a password and none was configured (`NOAUTH`).
    #[error("the server requires a password and none is configured: {0}")]
    PasswordRequired(ServerError),
    /// `SELECT` of the configured database failed.
    #[error("SELECT {database} failed: {error}")]
    SelectFailed {
        /// The database asked for.
        database: u32,
        /// The server's answer.
        error: ServerError,
    },
    /// Another handshake step failed (`HELLO` with an unexpected error,
    /// `CLIENT SETNAME`).
    #[error("{step} failed: {error}")]
    Step {
        /// The command that failed.
        step: &'static str,
        /// The server's answer.
        error: ServerError,
    },
    /// The credential provider failed.
    #[error("the credential provider failed: {0}")]
    Credentials(String),
}

impl From<std::io::Error> for Error {
    /// An I/O error that carries a TLS failure (for example a client
    /// certificate the server refused, reported on the first read under
    /// TLS 1.3) becomes [`Error::Tls`].
    fn from(err: std::io::Error) -> Self {
        if let Some(tls) = err
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Error::Tls(tls.to_string());
        }
        Error::Io(Arc::new(err))
    }
}

impl Error {
    /// The server error inside, if this is one: an [`Error::Server`], or
    /// the text a script raised ([`Error::ScriptError`]).
    pub fn server_error(&self) -> Option<&ServerError> {
        match self {
            Error::Server(e) | Error::ScriptError(e) => Some(e),
            _ => None,
        }
    }

    /// True for MOVED and ASK replies (not for such a text a script
    /// raised: [`Error::ScriptError`]).
    pub fn is_redirect(&self) -> bool {
        matches!(self, Error::Server(e) if e.is_redirect())
    }

    /// The redirect carried by a MOVED or ASK reply (`None` for such a
    /// text a script raised: [`Error::ScriptError`]).
    pub fn redirect(&self) -> Option<Redirect> {
        match self {
            Error::Server(e) => e.redirect(),
            _ => None,
        }
    }

    /// Whether the failed command may have taken effect on the server: it
    /// was written and its outcome is unknown ([`Error::ConnectionLost`],
    /// [`Error::Timeout`] or [`Error::CoreStopped`] with `maybe_applied`,
    /// an I/O or protocol error), or the server ran it ([`Error::Conversion`]:
    /// the reply came but did not fit), or it answered with an error that
    /// does not prove the command did nothing (a script may have written
    /// before it failed).
    ///
    /// Always the opposite of [`is_safe_to_retry`](Self::is_safe_to_retry).
    pub fn maybe_applied(&self) -> bool {
        !self.is_safe_to_retry()
    }

    /// Whether the error proves the command had no effect, so that sending
    /// it again cannot apply it twice: it was never sent (the connection
    /// was down or closed, the deadline passed first, the command was
    /// refused before sending), or the server refused it without running
    /// it (a redirect, `TRYAGAIN`, `CLUSTERDOWN`, ...: see
    /// [`ServerError::is_safe_to_retry`]), or a transaction was not applied
    /// (for a watch transaction: its `MULTI`/`EXEC` part; commands the
    /// watch function sent itself are not covered).
    ///
    /// Safe is not the same as useful: [`retry_action`](Self::retry_action)
    /// says whether trying again can succeed.
    pub fn is_safe_to_retry(&self) -> bool {
        match self {
            Error::Server(e) => e.is_safe_to_retry(),
            Error::Timeout { maybe_applied } | Error::CoreStopped { maybe_applied, .. } => {
                !maybe_applied
            }
            Error::ConnectionLost
            | Error::Io(_)
            | Error::Protocol(_)
            | Error::Conversion(_)
            | Error::ScriptError(_) => false,
            // Safe only when no node ran it and none may have: otherwise
            // sending it again would run it twice there.
            Error::Fanout(e) => e.succeeded.is_empty() && !e.maybe_applied,
            // Never sent: refused before sending, or no connection to send on.
            Error::CrossSlot { .. }
            | Error::MalformedCommand { .. }
            | Error::Unsupported { .. }
            | Error::InvalidConfig { .. }
            | Error::InvalidUri { .. }
            | Error::Tls(_)
            | Error::Connect { .. }
            | Error::Handshake(_)
            | Error::Closed(_)
            | Error::NoTopology { .. }
            | Error::SlotUnserved { .. }
            | Error::SlotMigrating { .. } => true,
            // A transaction that was not sent, or that `EXEC` did not apply
            // (what a watch function ran itself, outside `MULTI`, is its
            // own: it should only read).
            Error::WatchLost
            | Error::Aborted(_)
            | Error::TransactionAborted
            | Error::WatchConflict { .. } => true,
            // Every reply was a redirect, which proves nothing was applied.
            Error::TooManyRedirects { .. } => true,
        }
    }

    /// What a router may do about this error: nothing when the command may
    /// have been applied ([`maybe_applied`](Self::maybe_applied)); else
    /// what the server's reply asks for ([`ServerError::retry_action`]), or
    /// a topology refresh and a new try when the node could not be reached
    /// ([`Error::Connect`]). A read lost in flight is the router's own
    /// decision: only it knows the command only reads.
    pub fn retry_action(&self) -> RetryAction {
        if self.maybe_applied() {
            return RetryAction::None;
        }
        match self {
            Error::Server(e) => e.retry_action(),
            Error::Connect { .. } => RetryAction::RefreshThenRetry,
            _ => RetryAction::None,
        }
    }
}

/// The class of a server error reply, found from its first word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ServerErrorKind {
    /// `MOVED slot host:port`: the slot lives on another node for good.
    Moved,
    /// `ASK slot host:port`: the slot is migrating; ask the other node once.
    Ask,
    /// `TRYAGAIN`: a multi-key command during resharding; retry later.
    TryAgain,
    /// `CLUSTERDOWN`: the cluster cannot serve this slot right now.
    ClusterDown,
    /// `LOADING`: the server is loading its dataset.
    Loading,
    /// `READONLY`: a write reached a replica.
    ReadOnly,
    /// `MASTERDOWN`: a replica lost its master and serves no stale data.
    MasterDown,
    /// `NOAUTH`: authentication is required.
    NoAuth,
    /// `WRONGPASS`: wrong user name or password.
    WrongPass,
    /// `NOPERM`: the ACL user may not run this command or touch this key.
    NoPerm,
    /// `EXECABORT`: a transaction was discarded because of earlier errors.
    ExecAbort,
    /// `BUSY`: a script or function is running too long.
    Busy,
    /// `NOSCRIPT`: `EVALSHA` for a script the server does not have.
    NoScript,
    /// `WRONGTYPE`: the key holds another type of value.
    WrongType,
    /// Anything else (`ERR ...` and unknown codes).
    Other,
}

impl ServerErrorKind {
    /// Classifies an error message by its first word.
    pub fn classify(message: &[u8]) -> ServerErrorKind {
        let code = message.split(|&b| b == b' ').next().unwrap_or_default();
        match code {
            b"MOVED" => ServerErrorKind::Moved,
            b"ASK" => ServerErrorKind::Ask,
            b"TRYAGAIN" => ServerErrorKind::TryAgain,
            b"CLUSTERDOWN" => ServerErrorKind::ClusterDown,
            b"LOADING" => ServerErrorKind::Loading,
            b"READONLY" => ServerErrorKind::ReadOnly,
            b"MASTERDOWN" => ServerErrorKind::MasterDown,
            b"NOAUTH" => ServerErrorKind::NoAuth,
            b"WRONGPASS" => ServerErrorKind::WrongPass,
            b"NOPERM" => ServerErrorKind::NoPerm,
            b"EXECABORT" => ServerErrorKind::ExecAbort,
            b"BUSY" => ServerErrorKind::Busy,
            b"NOSCRIPT" => ServerErrorKind::NoScript,
            b"WRONGTYPE" => ServerErrorKind::WrongType,
            _ => ServerErrorKind::Other,
        }
    }
}

/// Where a MOVED or ASK reply sends a command.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Redirect {
    /// MOVED or ASK.
    pub kind: RedirectKind,
    /// The hash slot the reply is about.
    pub slot: u16,
    /// The host to go to. Empty when the server sent `:port`, which means
    /// "the host you reached me on".
    pub host: String,
    /// The port to go to.
    pub port: u16,
}

/// The two kinds of cluster redirect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RedirectKind {
    /// The slot has moved: update the slot map and retry there.
    Moved,
    /// The slot is migrating: send `ASKING` and the command to the target,
    /// once, without touching the slot map.
    Ask,
}

/// What routing code may do after an error. Only an error that proves the
/// command had no effect gets anything but `None` (a redirect, a retryable
/// cluster state, a node that could not be reached), so following one of
/// these never repeats a write.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RetryAction {
    /// Do not retry: hand the error to the caller.
    None,
    /// Follow the redirect (MOVED: also update the slot; ASK: send `ASKING` first).
    Redirect(Redirect),
    /// Retry the same node after a short backoff (TRYAGAIN, LOADING, BUSY).
    RetryAfterBackoff,
    /// Refresh the cluster topology, then retry (CLUSTERDOWN, READONLY,
    /// MASTERDOWN: the node's role or the slot's owner changed; or the node
    /// could not be reached, so the command was not sent).
    RefreshThenRetry,
}

/// An error reply from the server, classified once when decoded.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerError {
    kind: ServerErrorKind,
    message: Bytes,
}

impl ServerError {
    /// Builds a server error from the text of the reply (without the leading
    /// `-` or the bulk error header).
    pub fn new(message: Bytes) -> ServerError {
        ServerError {
            kind: ServerErrorKind::classify(&message),
            message,
        }
    }

    /// The class of the error.
    pub fn kind(&self) -> ServerErrorKind {
        self.kind
    }

    /// The whole error text as the server sent it, code included.
    pub fn message(&self) -> &[u8] {
        &self.message
    }

    /// The error text as a string, invalid UTF-8 replaced.
    pub fn message_lossy(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.message)
    }

    /// The first word of the message (`ERR`, `WRONGTYPE`, `MOVED`, ...).
    pub fn code(&self) -> &[u8] {
        self.message
            .split(|&b| b == b' ')
            .next()
            .unwrap_or_default()
    }

    /// True for MOVED and ASK.
    pub fn is_redirect(&self) -> bool {
        matches!(self.kind, ServerErrorKind::Moved | ServerErrorKind::Ask)
    }

    /// The redirect of a MOVED or ASK reply; `None` for other errors and for
    /// a redirect whose slot or address cannot be parsed.
    pub fn redirect(&self) -> Option<Redirect> {
        let kind = match self.kind {
            ServerErrorKind::Moved => RedirectKind::Moved,
            ServerErrorKind::Ask => RedirectKind::Ask,
            _ => return None,
        };
        let text = std::str::from_utf8(&self.message).ok()?;
        let mut words = text.split_ascii_whitespace();
        words.next()?;
        let slot: u16 = words.next()?.parse().ok()?;
        if slot >= crate::slot::SLOT_COUNT {
            return None;
        }
        let addr = words.next()?;
        // IPv6 hosts contain colons: the port follows the last one.
        let (host, port) = addr.rsplit_once(':')?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        Some(Redirect {
            kind,
            slot,
            host: host.to_owned(),
            port: port.parse().ok()?,
        })
    }

    /// Whether the reply proves the server did not run the command: it
    /// refused it before running it (a redirect, `TRYAGAIN`, `LOADING`,
    /// `BUSY`, `CLUSTERDOWN`, `READONLY`, `MASTERDOWN`, `NOAUTH`,
    /// `NOSCRIPT`, `EXECABORT`). Other errors may come from a script or
    /// function that wrote before it failed, so they prove nothing.
    pub fn is_safe_to_retry(&self) -> bool {
        matches!(
            self.kind,
            ServerErrorKind::Moved
                | ServerErrorKind::Ask
                | ServerErrorKind::TryAgain
                | ServerErrorKind::Loading
                | ServerErrorKind::Busy
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::ReadOnly
                | ServerErrorKind::MasterDown
                | ServerErrorKind::NoAuth
                | ServerErrorKind::NoScript
                | ServerErrorKind::ExecAbort
        )
    }

    /// What routing code may do about this error; [`RetryAction::None`]
    /// unless it [is safe to retry](Self::is_safe_to_retry).
    pub fn retry_action(&self) -> RetryAction {
        if !self.is_safe_to_retry() {
            return RetryAction::None;
        }
        match self.kind {
            ServerErrorKind::Moved | ServerErrorKind::Ask => match self.redirect() {
                Some(r) => RetryAction::Redirect(r),
                None => RetryAction::None,
            },
            ServerErrorKind::TryAgain | ServerErrorKind::Loading | ServerErrorKind::Busy => {
                RetryAction::RetryAfterBackoff
            }
            ServerErrorKind::ClusterDown
            | ServerErrorKind::ReadOnly
            | ServerErrorKind::MasterDown => RetryAction::RefreshThenRetry,
            _ => RetryAction::None,
        }
    }
}

impl fmt::Debug for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerError")
            .field("kind", &self.kind)
            .field("message", &self.message_lossy())
            .finish()
    }
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "server error: {}", self.message_lossy())
    }
}

impl std::error::Error for ServerError {}

/// A reply that does not fit the Rust type it was asked to become.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot convert {found} reply into {target}{}", detail.map(|d| format!(": {d}")).unwrap_or_default())]
pub struct ConversionError {
    /// The RESP type of the reply (`"bulk string"`, `"array"`, ...).
    pub found: &'static str,
    /// The Rust type asked for.
    pub target: &'static str,
    /// More detail, when there is some (`"not valid UTF-8"`, ...).
    pub detail: Option<&'static str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(s: &str) -> ServerError {
        ServerError::new(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn classifies_by_first_word() {
        let cases = [
            ("MOVED 3999 127.0.0.1:6381", ServerErrorKind::Moved),
            ("ASK 3999 127.0.0.1:6381", ServerErrorKind::Ask),
            (
                "TRYAGAIN Multiple keys request during rehashing of slot",
                ServerErrorKind::TryAgain,
            ),
            (
                "CLUSTERDOWN The cluster is down",
                ServerErrorKind::ClusterDown,
            ),
            (
                "LOADING Redis is loading the dataset in memory",
                ServerErrorKind::Loading,
            ),
            (
                "READONLY You can't write against a read only replica.",
                ServerErrorKind::ReadOnly,
            ),
            (
                "MASTERDOWN Link with MASTER is down",
                ServerErrorKind::MasterDown,
            ),
            ("NOAUTH Authentication required.", ServerErrorKind::NoAuth),
            (
                "WRONGPASS invalid username-password pair",
                ServerErrorKind::WrongPass,
            ),
            (
                "NOPERM this user has no permissions",
                ServerErrorKind::NoPerm,
            ),
            (
                "EXECABORT Transaction discarded because of previous errors.",
                ServerErrorKind::ExecAbort,
            ),
            (
                "BUSY Redis is busy running a script.",
                ServerErrorKind::Busy,
            ),
            ("NOSCRIPT No matching script.", ServerErrorKind::NoScript),
            (
                "WRONGTYPE Operation against a key",
                ServerErrorKind::WrongType,
            ),
            ("ERR unknown command", ServerErrorKind::Other),
            ("MOVEDX 1 a:1", ServerErrorKind::Other),
            ("", ServerErrorKind::Other),
        ];
        for (text, kind) in cases {
            assert_eq!(err(text).kind(), kind, "{text}");
        }
    }

    #[test]
    fn parses_redirects() {
        let moved = err("MOVED 3999 127.0.0.1:6381").redirect().unwrap();
        assert_eq!(
            moved,
            Redirect {
                kind: RedirectKind::Moved,
                slot: 3999,
                host: "127.0.0.1".into(),
                port: 6381
            }
        );
        let ask = err("ASK 1 ::1:7000").redirect().unwrap();
        assert_eq!(
            (ask.kind, ask.host.as_str(), ask.port),
            (RedirectKind::Ask, "::1", 7000)
        );
        let bracketed = err("MOVED 2 [fe80::1]:7001").redirect().unwrap();
        assert_eq!(bracketed.host, "fe80::1");
        let empty_host = err("MOVED 5 :7002").redirect().unwrap();
        assert_eq!((empty_host.host.as_str(), empty_host.port), ("", 7002));
        for bad in [
            "MOVED",
            "MOVED x 1.2.3.4:1",
            "MOVED 16384 a:1",
            "ASK 1 nohost",
            "MOVED 1 a:port",
        ] {
            assert_eq!(err(bad).redirect(), None, "{bad}");
            assert_eq!(err(bad).retry_action(), RetryAction::None, "{bad}");
        }
    }

    #[test]
    fn retry_table() {
        assert!(matches!(
            err("MOVED 1 a:1").retry_action(),
            RetryAction::Redirect(_)
        ));
        assert_eq!(
            err("TRYAGAIN x").retry_action(),
            RetryAction::RetryAfterBackoff
        );
        assert_eq!(
            err("LOADING x").retry_action(),
            RetryAction::RetryAfterBackoff
        );
        assert_eq!(
            err("CLUSTERDOWN x").retry_action(),
            RetryAction::RefreshThenRetry
        );
        assert_eq!(
            err("READONLY x").retry_action(),
            RetryAction::RefreshThenRetry
        );
        assert_eq!(
            err("MASTERDOWN x").retry_action(),
            RetryAction::RefreshThenRetry
        );
        assert_eq!(err("ERR x").retry_action(), RetryAction::None);
        assert_eq!(err("WRONGPASS x").retry_action(), RetryAction::None);
        let e = Error::from(err("ASK 7 h:1"));
        assert!(e.is_redirect());
        assert_eq!(e.redirect().unwrap().kind, RedirectKind::Ask);
        let raised = Error::ScriptError(err("ASK 7 h:1"));
        assert!(!raised.is_redirect());
        assert_eq!(raised.redirect(), None);
        assert_eq!(raised.server_error().unwrap().message(), b"ASK 7 h:1");
    }

    fn unreachable(unsent_command: bool) -> Error {
        Error::Connect {
            addr: "h:1".into(),
            reason: "connection refused".into(),
            unsent_command,
        }
    }

    #[test]
    fn send_state_predicates() {
        // May have been applied: never safe to send again.
        let maybe = [
            Error::ConnectionLost,
            Error::Timeout {
                maybe_applied: true,
            },
            Error::CoreStopped {
                core: 1,
                maybe_applied: true,
            },
            Error::Io(Arc::new(std::io::Error::other("reset"))),
            Error::Protocol(ProtocolError::UnexpectedReply),
            Error::Conversion(ConversionError {
                found: "array",
                target: "i64",
                detail: None,
            }),
            Error::from(err("ERR wrong number of arguments")),
            Error::from(err("WRONGTYPE Operation against a key")),
            Error::from(err("NOPERM this user has no permissions")),
            Error::ScriptError(err("TRYAGAIN x")),
            Error::ScriptError(err("MOVED 1 a:1")),
        ];
        for e in &maybe {
            assert!(e.maybe_applied(), "{e:?}");
            assert!(!e.is_safe_to_retry(), "{e:?}");
            assert_eq!(e.retry_action(), RetryAction::None, "{e:?}");
        }
        // Proven not applied: not sent, or refused by the server.
        let safe = [
            unreachable(true),
            unreachable(false),
            Error::Timeout {
                maybe_applied: false,
            },
            Error::CoreStopped {
                core: 1,
                maybe_applied: false,
            },
            Error::Closed("closed by the user"),
            Error::WatchLost,
            Error::TransactionAborted,
            Error::CrossSlot { first: 1, other: 2 },
            Error::SlotUnserved { slot: 7 },
            Error::SlotMigrating { slot: 7 },
            Error::TooManyRedirects {
                redirects: 5,
                last: err("MOVED 1 a:1"),
            },
            Error::from(err("MOVED 1 a:1")),
            Error::from(err("ASK 1 a:1")),
            Error::from(err("TRYAGAIN x")),
            Error::from(err("CLUSTERDOWN x")),
            Error::from(err("NOAUTH Authentication required.")),
            Error::from(err("EXECABORT Transaction discarded")),
        ];
        for e in &safe {
            assert!(e.is_safe_to_retry(), "{e:?}");
            assert!(!e.maybe_applied(), "{e:?}");
        }
    }

    #[test]
    fn retry_table_of_errors_that_are_not_replies() {
        // An unreachable node: the command was not sent, the slot may have
        // moved.
        assert_eq!(
            unreachable(true).retry_action(),
            RetryAction::RefreshThenRetry
        );
        assert_eq!(
            unreachable(false).retry_action(),
            RetryAction::RefreshThenRetry
        );
        // Not sent, but trying again cannot help.
        for e in [
            Error::Timeout {
                maybe_applied: false,
            },
            Error::Closed("closed by the user"),
            Error::CrossSlot { first: 1, other: 2 },
        ] {
            assert_eq!(e.retry_action(), RetryAction::None, "{e:?}");
        }
        // Safe, yet not in the table: the same error would come back.
        assert_eq!(err("NOAUTH x").retry_action(), RetryAction::None);
    }

    #[test]
    fn display_says_whether_the_command_was_sent() {
        assert_eq!(
            unreachable(true).to_string(),
            "cannot connect to h:1: connection refused; the command was not sent"
        );
        assert_eq!(
            unreachable(false).to_string(),
            "cannot connect to h:1: connection refused"
        );
        assert!(
            Error::ConnectionLost
                .to_string()
                .contains("may have been applied")
        );
        let timeouts =
            [false, true].map(|maybe_applied| Error::Timeout { maybe_applied }.to_string());
        assert!(
            timeouts[0].contains("before the command was sent"),
            "{}",
            timeouts[0]
        );
        assert!(
            timeouts[1].contains("may have been applied"),
            "{}",
            timeouts[1]
        );
    }
}
