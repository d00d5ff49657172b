//! One Redis connection on a glommio executor, shared by every task on
//! that core and auto-pipelined.
//!
//! # How bytes reach the socket
//!
//! Each call encodes its command in place into the connection's batch
//! buffer (one `BytesMut`, reused) and waits on its reply slot. One
//! connection task owns the socket: when the buffer has bytes it writes the
//! whole buffer — every command queued since the last write — with as few
//! `send` calls as the socket accepts, then reads whatever replies have
//! arrived into one large buffer, decodes them in place and completes the
//! waiting calls in FIFO order. Replies are matched to requests by order
//! only, so RESP3 push frames never shift that order: pub/sub messages go
//! to subscriptions, subscribe confirmations answer the subscribe call
//! waiting for them (see [`pubsub`]), and other pushes go to a separate
//! receiver.
//!
//! One exception to "the connection task writes": an explicit pipeline or
//! transaction of 1 KiB or more is sent by its caller at once, with what is
//! queued before it, in one non-blocking `send` on glommio's plain TCP
//! socket (not TLS, not the io_uring transport). Otherwise a few tasks sending
//! pipelines make client and server take turns: every pipeline of a round
//! would reach the server only after the last one was prepared. Bytes
//! leave from the front of the same buffer whoever sends, so the order on
//! the wire is the queue order; what the socket does not take is left to
//! the connection task. Such a pipeline is written as soon as it is
//! queued, so dropping its future no longer withdraws it (a call dropped
//! before anything wrote it is still never sent);
//! [`ConnectionStats::caller_sends`] counts these sends.
//!
//! Two transports carry the bytes, chosen by
//! [`ConnectionConfig::transport`] (or `REDCORE_TRANSPORT`); both keep every
//! guarantee below.
//!
//! - **glommio's sockets** (the default): glommio 0.9 sockets move bytes
//!   with plain `send`/`recv` (non-blocking) and use io_uring for
//!   readiness, `connect` and timers; its registered buffers serve files
//!   only. So there is one copy into the batch buffer on the way out, none
//!   on the way in beyond the kernel's, and one system call per batch in
//!   each direction when the socket is ready.
//! - **redcore's own ring** ([`TransportKind::IoUring`], opt-in): the
//!   batch buffer is a registered buffer, sent with `IORING_OP_WRITE_FIXED`
//!   (no system call of its own: one `io_uring_enter` per core submits the
//!   sends of every connection); replies arrive through a multishot
//!   receive into a per-core provided-buffer ring and are copied into the
//!   connection's receive buffer before being decoded in place. TLS stays
//!   on glommio's sockets; when io_uring is unavailable, connections fall
//!   back to them with one warning. It is opt-in because it did not beat
//!   glommio's sockets on client CPU per command in `benches/transport.rs`
//!   (see the README). [`Connection::transport`] says which one a
//!   connection uses.
//!
//! # Failure
//!
//! Every call has one deadline ([`ConnectionConfig::timeout`], or
//! [`Connection::with_timeout`]), counted from its first try, waiting for
//! room included. A call that times out before its bytes were written is
//! withdrawn and never sent; one that was written reports
//! `Error::Timeout { maybe_applied: true }`, and its late reply is read and
//! dropped without desynchronising the stream. No call reports success
//! after its deadline: a reply read after it (before the sweeper got to the
//! call) is that timeout too, and a reply read after the first eighth of
//! the call's time is checked against the clock again when its caller runs,
//! and is that timeout if less than 1 ms is left. When the socket dies, calls
//! already written fail with [`Error::ConnectionLost`] (they may have been
//! applied and are never resent), calls not yet written wait for the next
//! socket within their deadline, and the connection task reconnects with
//! exponential backoff and jitter.
//!
//! A server that stops answering without closing anything (a stopped
//! process, a host gone, packets dropped) is noticed by the health check
//! within one [`health_interval`](ConnectionConfig::health_interval)
//! (1 s by default), independently of call deadlines: nothing more is
//! written to the silent socket, the server is probed with `PING` on a new
//! socket, and replies that commands such as `BLPOP` hold back on purpose
//! are never taken for silence. TCP sockets also carry keepalive and
//! `TCP_USER_TIMEOUT`. The details are in [`health`]'s documentation
//! (`src/conn/health.rs`).
//!
//! Replies are bounded in memory and in the time they take:
//!
//! - **The reply limit.** A reply that would hold more than
//!   [`DecoderLimits::max_reply_bytes`](crate::resp::DecoderLimits::max_reply_bytes)
//!   once decoded (512 MiB by default; `size_of::<Value>()` per element
//!   plus payload bytes) fails its call with
//!   [`ProtocolError::ReplyTooLarge`](crate::resp::ProtocolError::ReplyTooLarge)
//!   as soon as it passes the limit. What was decoded of it is dropped at
//!   once, the rest is skipped as it arrives, and the socket stays: the
//!   next reply goes to the next call. Every other protocol error drops the
//!   socket. A pipeline with such a reply fails as a whole.
//! - **Skipping.** A large reply is decoded element by element as it
//!   arrives. Once nobody waits for it — its call timed out or its future
//!   was dropped (for a pipeline, for each of its replies) — the rest of it
//!   is skipped without building values. Push frames are never skipped.
//! - **Deadlines while a reply streams in.** The connection task decodes a
//!   few MiB per turn and then yields, and while a reply is partly
//!   decoded it checks that reply's deadline itself (glommio runs the
//!   timers of the sweeper only when its queue empties, or every 100 ms):
//!   a call whose reply streams in endlessly fails with `Timeout` by its
//!   deadline, and the rest of the reply is skipped.
//! - **Buffers.** The read buffer goes back to a small allocation after a
//!   large reply and on every new socket. With the io_uring transport,
//!   receiving pauses while the receive buffer holds more than 8 MiB beyond
//!   what the reply in progress needs.
//!
//! # Backpressure
//!
//! At most [`ConnectionConfig::max_in_flight`] calls are queued or awaiting
//! replies at once, and no call is added while
//! [`ConnectionConfig::max_batch_bytes`] of encoded commands wait to be
//! written. Callers beyond wait in line, first come first served: each call
//! that leaves the pipeline (its reply came, or it was withdrawn) lets in
//! one waiter, the oldest, and wakes no other, so the work per reply does
//! not grow with the number of waiters; a new call never passes one that
//! waits, and a waiter that gives up (deadline, dropped future) hands its
//! turn to the next. The calls of a watch session go before everyone (the
//! others wait for the session to end anyway). Waiting calls keep their
//! deadline without a timer each: the connection's sweeper times them out,
//! along with the calls in flight.

mod admission;
pub(crate) mod cache;
pub mod commands;
mod dispatch;
mod driver;
mod handshake;
mod health;
mod mux;
pub mod pubsub;
mod read_buf;
pub(crate) mod tls;
mod transport;
mod uring;
mod write_through;

use std::future::poll_fn;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::cmd::{Args, Cmd, cmd, is_blocking};
use crate::config::{ConnectionConfig, Protocol, ServerAddr, TransportKind};
use crate::hooks::{Before, Hook, HookContext};
use crate::resp::Arg;
use crate::{Error, FromValue, Value};
use commands::{Commands, WatchFn};

pub use mux::ConnectionStats;
use mux::{Admit, Call, Link, Queue, Shared};
#[doc(hidden)]
pub use uring::{RingStats, stats as io_uring_stats};

/// What the function of [`Connection::watch_transaction`] decides.
#[derive(Debug)]
pub enum Watch {
    /// Run these commands in `MULTI`/`EXEC`.
    Exec(Vec<Cmd>),
    /// Run nothing: `UNWATCH`, and fail with [`Error::Aborted`].
    Abort(String),
}

/// Anything that can become a [`ConnectionConfig`]: a config, or a Redis
/// URI (`"redis://:secret@localhost:6380/2"`).
pub trait IntoConnectionConfig {
    /// Converts and validates.
    fn into_config(self) -> Result<ConnectionConfig, Error>;
}

impl IntoConnectionConfig for ConnectionConfig {
    fn into_config(self) -> Result<ConnectionConfig, Error> {
        self.validate()?;
        Ok(self)
    }
}

impl IntoConnectionConfig for &str {
    fn into_config(self) -> Result<ConnectionConfig, Error> {
        crate::config::parse_uri(self)?.into_config()
    }
}

impl IntoConnectionConfig for String {
    fn into_config(self) -> Result<ConnectionConfig, Error> {
        self.as_str().into_config()
    }
}

/// Tries after the first that `watch_transaction` makes when a watched key
/// changed (the `max_retries` default of the Elixir `Redis.Connection`).
pub(crate) const WATCH_RETRIES: u32 = 3;

/// Closes the connection when the last handle is dropped.
struct CloseOnDrop(Rc<Shared>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.mux.borrow_mut().close("every handle was dropped");
        if let Some(link) = self.0.pubsub_link.borrow_mut().take() {
            link.close();
        }
    }
}

/// A handle to one Redis connection on the current glommio executor.
///
/// Clone it freely: clones share the socket, and calls from every task on
/// the core are pipelined together. The handle is `!Send`; on other cores,
/// open other connections (or use the per-core runtime). The `name`
/// option of the Elixir `Redis.Connection` has no counterpart: the handle
/// is the name.
///
/// ```no_run
/// use redcore::{Commands, Connection, Value};
///
/// glommio::LocalExecutorBuilder::default()
///     .spawn(|| async {
///         let conn = Connection::connect("redis://127.0.0.1:6379").await?;
///         conn.command::<()>(["SET", "greeting", "hello"]).await?;
///         let v: String = conn.command(["GET", "greeting"]).await?;
///         assert_eq!(v, "hello");
///         Ok::<_, redcore::Error>(())
///     })
///     .unwrap()
///     .join()
///     .unwrap()
///     .unwrap();
/// ```
#[derive(Clone)]
pub struct Connection {
    shared: Rc<Shared>,
    _close: Rc<CloseOnDrop>,
    /// The watch session this handle belongs to: its token and the
    /// generation of the socket its `WATCH` ran on.
    watch: Option<(u64, u64)>,
    /// A per-handle timeout overriding the configured one.
    timeout: Option<Duration>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("addr", &self.shared.addr_text())
            .field("link", &self.shared.mux.borrow().link)
            .finish()
    }
}

impl Connection {
    /// Connects. With `sync_connect` (the default) this returns once the
    /// socket is up and the handshake is done, or with the error that
    /// stopped it; otherwise it returns at once and connects in the
    /// background while calls wait within their deadline.
    ///
    /// Must be called on a glommio executor.
    pub async fn connect(config: impl IntoConnectionConfig) -> Result<Connection, Error> {
        let config = config.into_config()?;
        let tls = config.tls.as_ref().map(tls::client_config).transpose()?;
        let mut shared = Shared::new(config, tls);
        if let Some(options) = shared.config.cache.clone() {
            shared.track_for(cache::Cache::new(options));
        }
        let shared = Rc::new(shared);
        shared.transport.set(uring::choose(&shared.config));
        let ready = if shared.config.sync_connect {
            match driver::connect_once(&shared).await {
                Ok(up) => Some(up),
                Err(e) => {
                    tracing::warn!(addr = %shared.addr_text(), error = %e, "connect failed");
                    return Err(e);
                }
            }
        } else {
            None
        };
        glommio::spawn_local(driver::run(shared.clone(), ready)).detach();
        glommio::spawn_local(driver::sweeper(shared.clone())).detach();
        Ok(Connection {
            _close: Rc::new(CloseOnDrop(shared.clone())),
            shared,
            watch: None,
            timeout: None,
        })
    }

    /// Opens a connection to one cluster node, connecting in the
    /// background. Calls wait for the first connect attempt; while the node
    /// is unreachable after that, or while its socket is silent (see the
    /// health check), they fail at once with [`Error::Connect`] (not
    /// sent), so the router can refresh and go elsewhere rather than wait
    /// out its deadline. `on_silent` is called each time the socket goes
    /// silent.
    pub(crate) fn open_node(
        config: ConnectionConfig,
        tls: Option<std::sync::Arc<rustls::ClientConfig>>,
        on_silent: Box<dyn Fn()>,
        cache: Option<Rc<cache::Cache>>,
    ) -> Connection {
        let mut shared = Shared::new(config, tls);
        shared.on_silent = Some(on_silent);
        if let Some(cache) = cache {
            shared.track_for(cache);
        }
        let shared = Rc::new(shared);
        shared.transport.set(uring::choose(&shared.config));
        shared.mux.borrow_mut().fail_fast = true;
        glommio::spawn_local(driver::run(shared.clone(), None)).detach();
        glommio::spawn_local(driver::sweeper(shared.clone())).detach();
        Connection {
            _close: Rc::new(CloseOnDrop(shared.clone())),
            shared,
            watch: None,
            timeout: None,
        }
    }

    /// The time a call of this handle may take.
    fn call_timeout(&self) -> Duration {
        self.timeout.unwrap_or(self.shared.config.timeout)
    }

    /// The tracker this connection's socket is in its cache, if it tracks.
    pub(crate) fn tracker(&self) -> Option<cache::TrackerId> {
        self.shared.cache.as_ref().map(|(_, t)| *t)
    }

    /// With a cache: `cmd` is being sent, or was answered; if it writes,
    /// its keys' cached entries are dropped (see [`cache::Cache::note_write`]).
    #[inline]
    fn note_write(&self, cmd: &impl Args) {
        if let Some((cache, _)) = &self.shared.cache {
            cache.note_write(cmd);
        }
    }

    /// A handle to the same connection whose calls use `timeout` as their
    /// deadline instead of the configured one (for blocking commands such
    /// as `BLPOP`, or tighter deadlines).
    pub fn with_timeout(&self, timeout: Duration) -> Connection {
        Connection {
            timeout: Some(timeout),
            ..self.clone()
        }
    }

    /// True while the socket is silent: a reply has been due for a whole
    /// health interval and no byte arrived.
    pub(crate) fn is_silent(&self) -> bool {
        self.shared.mux.borrow().holds_writes()
    }

    /// Gives the current socket up (its node no longer serves what it was
    /// asked): calls written on it fail with [`Error::ConnectionLost`],
    /// the others wait for the next socket or fail as not sent.
    pub(crate) fn give_up_socket(&self, why: &'static str) {
        self.shared.mux.borrow_mut().give_up_socket(why);
    }

    /// The configuration this connection was made with.
    pub fn config(&self) -> &ConnectionConfig {
        &self.shared.config
    }

    /// True while a socket is up with its handshake done.
    pub fn is_connected(&self) -> bool {
        self.shared.mux.borrow().link == Link::Up
    }

    /// The protocol the current (or last) socket speaks: RESP3 unless
    /// RESP2 was asked for or the server does not offer RESP3.
    pub fn protocol(&self) -> Protocol {
        self.shared.mux.borrow().protocol
    }

    /// The transport carrying this connection's bytes:
    /// [`TransportKind::IoUring`] or [`TransportKind::Glommio`] (never
    /// `Auto`). It is the one chosen by the configuration unless io_uring
    /// is unavailable on this machine or the connection uses TLS, in which
    /// case it is glommio (see
    /// [`ConnectionConfig::transport`](crate::ConnectionConfig::transport)).
    pub fn transport(&self) -> TransportKind {
        self.shared.transport.get()
    }

    /// Counters of this connection.
    pub fn stats(&self) -> ConnectionStats {
        self.shared.mux.borrow().stats
    }

    /// Closes the connection for good: queued calls fail with
    /// [`Error::Closed`], calls already written with
    /// [`Error::ConnectionLost`], and later calls with `Closed`.
    pub fn close(&self) {
        self.shared.mux.borrow_mut().close("closed by the user");
        if let Some(link) = self.shared.pubsub_link.borrow().as_ref() {
            link.close();
        }
    }

    /// Takes the receiver of RESP3 push frames (client-side caching
    /// invalidations and other out-of-band messages). Only the first call
    /// gets it; pushes that arrive while nobody has taken it are dropped.
    pub fn take_push_receiver(&self) -> Option<PushReceiver> {
        let mut st = self.shared.mux.borrow_mut();
        if st.push_taken {
            return None;
        }
        st.push_taken = true;
        Some(PushReceiver {
            shared: self.shared.clone(),
        })
    }

    fn hook_context(&self) -> (String, u16, u32) {
        let (host, port) = match &self.shared.config.addr {
            ServerAddr::Tcp { host, port } => (host.clone(), *port),
            ServerAddr::Unix(path) => (path.display().to_string(), 0),
        };
        (host, port, self.shared.config.database.unwrap_or(0))
    }

    /// Queues encoded commands producing `replies` replies and waits for
    /// them: one value, or (with `gather`) an array of `replies` values.
    async fn call(
        &self,
        replies: usize,
        gather: bool,
        blocking: bool,
        encode: impl FnMut(&mut BytesMut),
    ) -> Result<Value, Error> {
        let call = Call {
            watch: self.watch,
            timeout: self.call_timeout(),
            replies,
            gather,
            detached: false,
            blocking,
        };
        self.queue_and_wait(&call, encode, |_| {}).await
    }

    /// Queues `call`, waiting for room if need be, and then for its
    /// reply; `queued` runs on the multiplexer right after the call is
    /// queued, in the same borrow.
    async fn queue_and_wait(
        &self,
        call: &Call,
        mut encode: impl FnMut(&mut BytesMut),
        mut queued: impl FnMut(&mut mux::Mux),
    ) -> Result<Value, Error> {
        // Without room, the call waits in the admission queue: woken once
        // a place is granted to it (oldest first), or by the sweeper at
        // its deadline. One deadline for the whole call, waiting included.
        let mut waiter = Waiter::new(&self.shared, Queue::Calls);
        loop {
            let admitted = {
                let mut st = self.shared.mux.borrow_mut();
                let admitted = st.admit(&self.shared.config, call, &mut encode, &mut waiter.key);
                if let Ok(Admit::Queued(_)) = admitted {
                    queued(&mut st);
                }
                admitted
            };
            match admitted? {
                Admit::Queued(slot) => {
                    return Reply {
                        shared: &self.shared,
                        slot,
                        done: false,
                    }
                    .await;
                }
                Admit::Wait => waiter.woken().await?,
            }
        }
    }

    /// Waits until a socket is up or the connection changed (closed, the
    /// server unreachable), within `deadline`: a watch session's wait to
    /// bind, the only caller.
    async fn wait_link(&self, deadline: Instant) -> Result<(), Error> {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut registered = false;
        let woken = poll_fn(|cx| {
            if registered {
                return Poll::Ready(Ok(()));
            }
            registered = true;
            self.shared.mux.borrow_mut().wait_link(cx.waker());
            Poll::Pending
        });
        futures_lite::future::or(woken, async {
            glommio::timer::Timer::new(left).await;
            Err(Error::Timeout {
                maybe_applied: false,
            })
        })
        .await
    }

    async fn command_with_hooks(&self, c: Cmd) -> Result<Value, Error> {
        self.hooked(
            c,
            |h, ctx, c| h.before_command(ctx, c),
            |h, ctx, c, r| h.after_command(ctx, c, r),
            |c| async move {
                check_supported(&c)?;
                self.call(1, false, is_blocking(&c), |out| c.encode(out))
                    .await
            },
        )
        .await
    }

    /// Runs the before hooks in order until one answers, sends `subject`
    /// unless one did, then runs the after hooks of those that ran, in
    /// reverse order.
    async fn hooked<S: Clone, T, Fut>(
        &self,
        mut subject: S,
        before: impl Fn(&dyn Hook, &HookContext<'_>, &mut S) -> Before<T>,
        after: impl Fn(&dyn Hook, &HookContext<'_>, &S, Result<T, Error>) -> Result<T, Error>,
        send: impl FnOnce(S) -> Fut,
    ) -> Result<T, Error>
    where
        Fut: Future<Output = Result<T, Error>>,
    {
        let (host, port, database) = self.hook_context();
        let ctx = HookContext {
            host: &host,
            port,
            database,
        };
        let hooks = &self.shared.config.hooks;
        let mut ran = 0;
        let mut answer = None;
        for hook in hooks {
            ran += 1;
            if let Before::Reply(r) = before(hook.as_ref(), &ctx, &mut subject) {
                answer = Some(r);
                break;
            }
        }
        let mut result = match answer {
            Some(r) => r,
            None => send(subject.clone()).await,
        };
        for hook in hooks[..ran].iter().rev() {
            result = after(hook.as_ref(), &ctx, &subject, result);
        }
        result
    }

    /// Checks the commands, then sends them as `kind`, through the
    /// pipeline hooks when there are hooks.
    async fn batch<A: Args>(
        &self,
        kind: Batch,
        cmds: impl IntoIterator<Item = A>,
    ) -> Result<Vec<Value>, Error> {
        let cmds: Vec<A> = cmds.into_iter().collect();
        for c in &cmds {
            check_supported(c)?;
        }
        let noted = self.shared.cache.is_some();
        if noted {
            cmds.iter().for_each(|c| self.note_write(c));
        }
        let result = self.batch_checked(kind, &cmds).await;
        if noted {
            cmds.iter().for_each(|c| self.note_write(c));
        }
        result
    }

    /// [`batch`](Self::batch) once the commands are checked.
    async fn batch_checked<A: Args>(&self, kind: Batch, cmds: &[A]) -> Result<Vec<Value>, Error> {
        if self.shared.config.hooks.is_empty() {
            return self.raw_batch(kind, cmds).await;
        }
        let cmds: Vec<Cmd> = cmds.iter().map(to_cmd).collect();
        self.hooked(
            cmds,
            |h, ctx, c| h.before_pipeline(ctx, c),
            |h, ctx, c, r| h.after_pipeline(ctx, c, r),
            |cmds| async move {
                for c in &cmds {
                    check_supported(c)?;
                }
                self.raw_batch(kind, &cmds).await
            },
        )
        .await
    }

    async fn raw_batch<A: Args>(&self, kind: Batch, cmds: &[A]) -> Result<Vec<Value>, Error> {
        match kind {
            Batch::Pipeline => self.raw_pipeline(cmds).await,
            Batch::Transaction { asking } => self.raw_transaction(cmds, asking).await,
            Batch::NoReply => self.raw_noreply(cmds).await.map(|()| Vec::new()),
        }
    }

    async fn raw_pipeline<A: Args>(&self, cmds: &[A]) -> Result<Vec<Value>, Error> {
        if cmds.is_empty() {
            return Ok(Vec::new());
        }
        let value = self
            .call(cmds.len(), true, cmds.iter().any(is_blocking), |out| {
                for c in cmds {
                    c.encode(out);
                }
            })
            .await?;
        let Value::Array(items) = value else {
            unreachable!("a gathered call yields an array")
        };
        Ok(items)
    }

    /// [`transaction`](Commands::transaction) preceded by `ASKING`, for a
    /// slot that is being imported by this node: the flag lasts until
    /// `EXEC`, so every queued command is accepted.
    pub(crate) async fn transaction_asking<A: Args>(
        &self,
        cmds: impl IntoIterator<Item = A>,
    ) -> Result<Vec<Value>, Error> {
        self.batch(Batch::Transaction { asking: true }, cmds).await
    }

    async fn raw_transaction<A: Args>(
        &self,
        cmds: &[A],
        asking: bool,
    ) -> Result<Vec<Value>, Error> {
        let extra = usize::from(asking);
        let value = self
            // Inside MULTI/EXEC nothing blocks.
            .call(cmds.len() + 2 + extra, true, false, |out| {
                if asking {
                    ["ASKING"].encode(out);
                }
                ["MULTI"].encode(out);
                for c in cmds {
                    c.encode(out);
                }
                ["EXEC"].encode(out);
            })
            .await?;
        let Value::Array(mut replies) = value else {
            unreachable!("a gathered call yields an array")
        };
        if let Some(Value::Error(e)) = replies
            .get(..=extra)
            .and_then(|r| r.iter().find(|v| matches!(v, Value::Error(_))))
        {
            return Err(e.clone().into());
        }
        match replies.pop().map(Value::without_attributes) {
            Some(Value::Array(results)) => Ok(results),
            Some(Value::Nil) => Err(Error::TransactionAborted),
            Some(Value::Error(e)) => {
                // A cluster node refuses commands of a slot it does not
                // serve while queueing them, then aborts the EXEC: the
                // refusal (MOVED, ASK, TRYAGAIN, CLUSTERDOWN) says what to
                // do next, the EXECABORT does not.
                let refusal = replies[1 + extra..].iter().find_map(|v| match v {
                    Value::Error(q) if q.retry_action() != crate::error::RetryAction::None => {
                        Some(q.clone())
                    }
                    _ => None,
                });
                Err(refusal.unwrap_or(e).into())
            }
            Some(other) => Err(Error::Conversion(crate::ConversionError {
                found: other.type_name(),
                target: "EXEC reply",
                detail: Some("expected an array or nil"),
            })),
            None => unreachable!("a transaction has at least two replies"),
        }
    }

    /// Runs an optimistic transaction: `WATCH keys`, then `f` reads what
    /// it needs through the connection it is given and returns the
    /// commands to run (or an abort); they run in `MULTI`/`EXEC`. If a
    /// watched key changed, everything is tried again, up to 3 more times,
    /// and then fails with [`Error::WatchConflict`].
    ///
    /// While it runs, the connection carries only this transaction's
    /// commands: other tasks' calls wait, since `WATCH` belongs to the
    /// socket and another caller's `EXEC` or write would disturb it.
    pub async fn watch_transaction<K: Arg, F: WatchFn>(
        &self,
        keys: &[K],
        f: F,
    ) -> Result<Vec<Value>, Error> {
        self.watch_transaction_with_retries(keys, WATCH_RETRIES, f)
            .await
    }

    /// [`watch_transaction`](Self::watch_transaction) with `max_retries`
    /// tries after the first.
    pub async fn watch_transaction_with_retries<K: Arg, F: WatchFn>(
        &self,
        keys: &[K],
        max_retries: u32,
        mut f: F,
    ) -> Result<Vec<Value>, Error> {
        let session = self.begin_exclusive().await?;
        let watch = cmd("WATCH").args(keys);
        let tries = max_retries.saturating_add(1);
        for _ in 0..tries {
            // Every try runs on one socket; if it dies, the try fails with
            // `WatchLost` and the next waits for the new socket.
            let conn = session.bind().await?;
            match conn.command::<()>(&watch).await {
                Ok(()) => {}
                Err(Error::WatchLost) => continue,
                Err(e) => return Err(e),
            }
            let outcome = match f(&conn).await {
                Ok(Watch::Exec(cmds)) => conn.transaction(cmds).await,
                Ok(Watch::Abort(reason)) => {
                    conn.unwatch();
                    return Err(Error::Aborted(reason));
                }
                Err(e) => {
                    conn.unwatch();
                    return Err(e);
                }
            };
            match outcome {
                Err(Error::TransactionAborted | Error::WatchLost) => continue,
                other => return other,
            }
        }
        Err(Error::WatchConflict { tries })
    }

    /// Takes the connection for one watch session, waiting for any other.
    /// Sessions take the connection in the order they asked for it.
    async fn begin_exclusive(&self) -> Result<WatchSession, Error> {
        let timeout = self.timeout.unwrap_or(self.shared.config.timeout);
        let mut waiter = Waiter::new(&self.shared, Queue::Sessions);
        loop {
            let began = self
                .shared
                .mux
                .borrow_mut()
                .begin_exclusive(timeout, &mut waiter.key);
            if let Some(token) = began? {
                return Ok(WatchSession {
                    conn: self.clone(),
                    token,
                });
            }
            waiter.woken().await?;
        }
    }

    /// Sends `UNWATCH` without waiting for it (a watch session's cleanup).
    fn unwatch(&self) {
        let call = Call {
            watch: self.watch,
            timeout: self.shared.config.timeout,
            replies: 1,
            gather: false,
            detached: true,
            blocking: false,
        };
        let mut st = self.shared.mux.borrow_mut();
        // A dead socket took its WATCH with it: nothing to undo then. It
        // is not worth waiting for room either: nobody would wait.
        let mut waiter = None;
        let _ = st.admit(
            &self.shared.config,
            &call,
            &mut |out| ["UNWATCH"].encode(out),
            &mut waiter,
        );
        if let Some(key) = waiter {
            st.leave(Queue::Calls, key);
        }
    }

    /// Sends a command without waiting for its reply, through
    /// `CLIENT REPLY OFF` ... `CLIENT REPLY ON`; waits only for the final
    /// acknowledgement.
    pub async fn noreply_command(&self, args: impl Args) -> Result<(), Error> {
        self.noreply_pipeline([args]).await
    }

    /// Sends commands without waiting for their replies (see
    /// [`noreply_command`](Self::noreply_command)). Their errors are not
    /// reported.
    pub async fn noreply_pipeline<A: Args>(
        &self,
        cmds: impl IntoIterator<Item = A>,
    ) -> Result<(), Error> {
        self.batch(Batch::NoReply, cmds).await.map(drop)
    }

    async fn raw_noreply<A: Args>(&self, cmds: &[A]) -> Result<(), Error> {
        let ack = self
            .call(1, false, false, |out| {
                ["CLIENT", "REPLY", "OFF"].encode(out);
                for c in cmds {
                    c.encode(out);
                }
                ["CLIENT", "REPLY", "ON"].encode(out);
            })
            .await?;
        ack.into_result().map(drop)
    }
}

impl Commands for Connection {
    /// Sends one command and converts its reply. A server error reply is
    /// `Err(Error::Server(..))`.
    ///
    /// `args` is a [`Cmd`] or any slice, array or vector of arguments:
    /// `conn.command::<Option<String>>(["GET", "k"])`.
    async fn command<T: FromValue>(&self, args: impl Args) -> Result<T, Error> {
        check_supported(&args)?;
        self.note_write(&args);
        let value = if self.shared.config.hooks.is_empty() {
            self.call(1, false, is_blocking(&args), |out| args.encode(out))
                .await
        } else {
            self.command_with_hooks(to_cmd(&args)).await
        };
        self.note_write(&args);
        T::from_value(value?)
    }

    /// Sends commands as one pipeline and returns one reply per command, in
    /// order. Server errors come back inline as [`Value::Error`]; the
    /// call fails as a whole only when the connection does.
    async fn pipeline<A: Args>(
        &self,
        cmds: impl IntoIterator<Item = A>,
    ) -> Result<Vec<Value>, Error> {
        self.batch(Batch::Pipeline, cmds).await
    }

    /// Runs commands in `MULTI`/`EXEC` and returns their replies. An
    /// `EXEC` that returns nil (a watched key changed) is
    /// [`Error::TransactionAborted`]; a transaction the server discarded
    /// (`EXECABORT`, for example a command with the wrong number of
    /// arguments) is that server error, except that a cluster node's
    /// refusal of a queued command (`MOVED`, `ASK`, `TRYAGAIN`,
    /// `CLUSTERDOWN`) is reported instead of the `EXECABORT` it caused.
    /// Uses the pipeline hooks.
    async fn transaction<A: Args>(
        &self,
        cmds: impl IntoIterator<Item = A>,
    ) -> Result<Vec<Value>, Error> {
        self.batch(Batch::Transaction { asking: false }, cmds).await
    }

    /// Runs [`Connection::watch_transaction_with_retries`], which takes
    /// any function.
    async fn watch_transaction_with_retries<K: Arg, F: WatchFn + Send + 'static>(
        &self,
        keys: &[K],
        max_retries: u32,
        f: F,
    ) -> Result<Vec<Value>, Error> {
        Connection::watch_transaction_with_retries(self, keys, max_retries, f).await
    }
}

/// The ways a batch of commands can be sent.
#[derive(Debug, Clone, Copy)]
enum Batch {
    Pipeline,
    /// `MULTI`/`EXEC`, after `ASKING` when `asking`.
    Transaction {
        asking: bool,
    },
    NoReply,
}

/// A watch session: the connection is exclusive until it is dropped.
struct WatchSession {
    conn: Connection,
    token: u64,
}

impl WatchSession {
    /// A handle bound to the current socket, waiting (within the
    /// deadline) for one to be up.
    async fn bind(&self) -> Result<Connection, Error> {
        let timeout = self.conn.timeout.unwrap_or(self.conn.shared.config.timeout);
        let deadline = Instant::now() + timeout;
        loop {
            {
                let st = self.conn.shared.mux.borrow();
                match st.link {
                    Link::Up => {
                        return Ok(Connection {
                            watch: Some((self.token, st.generation)),
                            ..self.conn.clone()
                        });
                    }
                    Link::Closed(why) => return Err(Error::Closed(why)),
                    Link::Connecting => {
                        if let Some(e) = st.down_error(&self.conn.shared.config) {
                            return Err(e);
                        }
                    }
                }
            }
            self.conn.wait_link(deadline).await?;
        }
    }
}

impl Drop for WatchSession {
    fn drop(&mut self) {
        self.conn
            .shared
            .mux
            .borrow_mut()
            .release_exclusive(self.token);
    }
}

/// A caller's place in one of the connection's wait queues. Dropping it
/// leaves the queue; a grant it held goes to the next waiter.
struct Waiter<'a> {
    shared: &'a Shared,
    queue: Queue,
    key: Option<usize>,
}

impl<'a> Waiter<'a> {
    fn new(shared: &'a Shared, queue: Queue) -> Waiter<'a> {
        Waiter {
            shared,
            queue,
            key: None,
        }
    }

    /// Waits to be woken (to try again), or fails at the deadline.
    async fn woken(&mut self) -> Result<(), Error> {
        poll_fn(|cx| {
            self.shared
                .mux
                .borrow_mut()
                .poll_waiter(self.queue, &mut self.key, cx.waker())
        })
        .await
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.shared.mux.borrow_mut().leave(self.queue, key);
        }
    }
}

/// Waits for a call's reply slot; dropping it withdraws the call if it has
/// not been written yet.
struct Reply<'a> {
    shared: &'a Shared,
    slot: usize,
    done: bool,
}

impl Future for Reply<'_> {
    type Output = Result<Value, Error>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Self::Output> {
        let result = self
            .shared
            .mux
            .borrow_mut()
            .poll_slot(self.slot, cx.waker());
        match result {
            Some(r) => {
                self.done = true;
                Poll::Ready(r)
            }
            None => Poll::Pending,
        }
    }
}

impl Drop for Reply<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.shared.mux.borrow_mut().abandon(self.slot);
        }
    }
}

/// Receives RESP3 push frames of one connection, in arrival order.
pub struct PushReceiver {
    shared: Rc<Shared>,
}

impl PushReceiver {
    /// The next push frame; `None` once the connection is closed and
    /// every frame received has been taken.
    pub async fn recv(&mut self) -> Option<Value> {
        poll_fn(|cx| {
            let mut st = self.shared.mux.borrow_mut();
            if let Some(v) = st.pushes.pop_front() {
                return Poll::Ready(Some(v));
            }
            if matches!(st.link, Link::Closed(_)) {
                return Poll::Ready(None);
            }
            st.push_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// The next push frame if one is waiting.
    pub fn try_recv(&mut self) -> Option<Value> {
        self.shared.mux.borrow_mut().pushes.pop_front()
    }

    /// Push frames dropped because the receiver was full.
    pub fn dropped(&self) -> u64 {
        self.shared.mux.borrow().pushes_dropped
    }
}

/// Copies any command into an owned [`Cmd`], for hooks.
pub(crate) fn to_cmd(args: &impl Args) -> Cmd {
    let mut c = Cmd::new();
    for i in 0..args.arg_count() {
        args.with_arg(i, |a| {
            c.push_arg(a);
        });
    }
    c
}

/// Refuses commands that would break the pairing of requests and replies
/// on a shared connection. Cheap for everything else: most names are
/// rejected by their length alone, and nothing is allocated.
fn check_supported(args: &impl Args) -> Result<(), Error> {
    if args.arg_count() == 0 {
        // The server skips an empty array without a reply, which would
        // shift every later reply onto the wrong caller.
        return Err(Error::MalformedCommand {
            command: String::new(),
            reason: "a command needs at least its name",
        });
    }
    let reason = args
        .with_arg(0, |name| {
            let is = |s: &str| name.eq_ignore_ascii_case(s.as_bytes());
            match name.len() {
                9..=12
                    if is("SUBSCRIBE")
                        || is("PSUBSCRIBE")
                        || is("SSUBSCRIBE")
                        || is("UNSUBSCRIBE")
                        || is("PUNSUBSCRIBE")
                        || is("SUNSUBSCRIBE") =>
                {
                    Some(
                        "subscriptions are made with subscribe, psubscribe and ssubscribe \
                         (and ended by dropping them)",
                    )
                }
                4 | 5 | 7 if is("SYNC") || is("PSYNC") || is("MONITOR") => {
                    Some("it turns the socket into a stream of its own")
                }
                6 if is("CLIENT")
                    && args.with_arg(1, |a| a.eq_ignore_ascii_case(b"REPLY")) == Some(true) =>
                {
                    Some(
                        "it changes which commands get replies; use noreply_command \
                         or noreply_pipeline",
                    )
                }
                _ => None,
            }
        })
        .flatten();
    match reason {
        None => Ok(()),
        Some(reason) => Err(Error::Unsupported {
            command: args
                .with_arg(0, |a| String::from_utf8_lossy(a).into_owned())
                .unwrap_or_default(),
            reason,
        }),
    }
}
