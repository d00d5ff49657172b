//! The handshake run on every new socket before any caller's command.
//!
//! `HELLO <proto> [AUTH user pass] [SETNAME name]` does protocol choice,
//! authentication and naming in one round trip. A server that does not
//! know `HELLO` (older than 6, or with `HELLO` renamed away) or refuses
//! RESP3 gets the RESP2 path instead: `AUTH`, then `CLIENT SETNAME`. Then
//! `SELECT` (when a database is configured) and `CLIENT SETINFO` for the
//! library name and version (errors ignored: servers before 7.2 lack it)
//! and, for a cluster replica connection, `READONLY` (a refusal is logged)
//! go out as one pipeline.

use bytes::BytesMut;
use futures_lite::{AsyncReadExt, AsyncWriteExt};

use super::transport::Transport;
use crate::Error;
use crate::auth::Credentials;
use crate::cmd::{Args, Cmd, cmd};
use crate::config::{ConnectionConfig, Password, Protocol, TrackingMode};
use crate::error::{HandshakeError, ServerError, ServerErrorKind};
use crate::resp::{Decoder, Value};

/// What the handshake settled.
pub(crate) struct Negotiated {
    pub protocol: Protocol,
    /// Bytes read past the last handshake reply (push frames, in theory).
    pub leftover: BytesMut,
}

/// The credentials to use now: from the provider when there is one, else
/// from the password and user name options.
pub(crate) async fn credentials(config: &ConnectionConfig) -> Result<Option<Credentials>, Error> {
    if let Some(provider) = &config.credential_provider {
        return provider
            .credentials()
            .await
            .map(Some)
            .map_err(|e| HandshakeError::Credentials(e.to_string()).into());
    }
    let password = match &config.password {
        None => return Ok(None),
        Some(Password::Static(p)) => p.clone(),
        Some(Password::Provider(f)) => f(),
    };
    Ok(Some(Credentials {
        username: config.username.clone(),
        password,
    }))
}

/// Runs the handshake on a fresh socket. The caller bounds it with the
/// connection's deadline.
pub(crate) async fn handshake(
    io: &mut Transport,
    config: &ConnectionConfig,
    creds: Option<Credentials>,
) -> Result<Negotiated, Error> {
    let mut wire = Wire::new(config);
    let version = match config.protocol {
        Protocol::Resp2 => "2",
        Protocol::Resp3 => "3",
    };
    let mut hello = cmd("HELLO").arg(version);
    if let Some(c) = &creds {
        let user = c.username.as_deref().unwrap_or("default");
        hello = hello.arg("AUTH").arg(user).arg(c.password.as_str());
    }
    if let Some(name) = &config.client_name {
        hello = hello.arg("SETNAME").arg(name.as_str());
    }
    let mut protocol = config.protocol;
    let mut unauthenticated_fallback = false;
    match wire.call(io, &[hello]).await?.remove(0) {
        Value::Error(e) if hello_unsupported(&e) => {
            unauthenticated_fallback = creds.is_none();
            tracing::debug!(error = %e, "HELLO refused; using the RESP2 handshake");
            protocol = Protocol::Resp2;
            resp2_handshake(io, &mut wire, config, creds.as_ref()).await?;
        }
        Value::Error(e) => return Err(auth_error(e, "HELLO")),
        _ => {}
    }

    let mut setup: Vec<Cmd> = Vec::with_capacity(5);
    if let Some(db) = config.database {
        setup.push(cmd("SELECT").arg(db));
    }
    setup.push(cmd("CLIENT").arg("SETINFO").arg("LIB-NAME").arg("redcore"));
    setup.push(
        cmd("CLIENT")
            .arg("SETINFO")
            .arg("LIB-VER")
            .arg(env!("CARGO_PKG_VERSION")),
    );
    let readonly_at = config.readonly.then(|| {
        setup.push(cmd("READONLY"));
        setup.len() - 1
    });
    let tracking_at = match &config.cache {
        Some(_) if protocol == Protocol::Resp2 => {
            return Err(HandshakeError::Step {
                step: "CLIENT TRACKING",
                error: ServerError::new(bytes::Bytes::from_static(
                    b"ERR client-side caching needs RESP3 and the server refused HELLO 3",
                )),
            }
            .into());
        }
        Some(cache) => {
            setup.push(tracking_command(&cache.mode));
            Some(setup.len() - 1)
        }
        None => None,
    };
    if unauthenticated_fallback {
        // No HELLO and no password: a PING tells whether the server wants
        // one (CLIENT SETINFO may fail for other reasons first).
        setup.push(cmd("PING"));
    }
    let replies = wire.call(io, &setup).await?;
    // Without HELLO, a missing password shows first here.
    if let Some(e) = replies
        .iter()
        .filter_map(Value::as_error)
        .find(|e| e.kind() == ServerErrorKind::NoAuth)
    {
        return Err(HandshakeError::PasswordRequired(e.clone()).into());
    }
    if let (Some(db), Value::Error(e)) = (config.database, &replies[0]) {
        return Err(match e.kind() {
            ServerErrorKind::NoAuth => HandshakeError::PasswordRequired(e.clone()),
            _ => HandshakeError::SelectFailed {
                database: db,
                error: e.clone(),
            },
        }
        .into());
    }
    if let Some(Value::Error(e)) = tracking_at.map(|i| &replies[i]) {
        return Err(HandshakeError::Step {
            step: "CLIENT TRACKING",
            error: e.clone(),
        }
        .into());
    }
    if let Some(Value::Error(e)) = readonly_at.map(|i| &replies[i]) {
        // Not a cluster node: its replica reads are redirected instead.
        tracing::warn!(error = %e, "READONLY refused");
    }
    Ok(Negotiated {
        protocol,
        leftover: wire.rbuf,
    })
}

/// `CLIENT TRACKING ON` in `mode`.
fn tracking_command(mode: &TrackingMode) -> Cmd {
    let on = cmd("CLIENT").arg("TRACKING").arg("ON");
    match mode {
        TrackingMode::OptIn => on.arg("OPTIN"),
        TrackingMode::Broadcast { prefixes } => {
            let mut c = on.arg("BCAST");
            for p in prefixes {
                c = c.arg("PREFIX").arg(p);
            }
            c
        }
    }
}

async fn resp2_handshake(
    io: &mut Transport,
    wire: &mut Wire,
    config: &ConnectionConfig,
    creds: Option<&Credentials>,
) -> Result<(), Error> {
    if let Some(c) = creds {
        let auth = match &c.username {
            Some(user) => cmd("AUTH").arg(user.as_str()).arg(c.password.as_str()),
            None => cmd("AUTH").arg(c.password.as_str()),
        };
        if let Value::Error(e) = wire.call(io, &[auth]).await?.remove(0) {
            return Err(auth_error(e, "AUTH"));
        }
    }
    if let Some(name) = &config.client_name {
        let setname = cmd("CLIENT").arg("SETNAME").arg(name.as_str());
        if let Value::Error(e) = wire.call(io, &[setname]).await?.remove(0) {
            return Err(auth_error(e, "CLIENT SETNAME"));
        }
    }
    Ok(())
}

/// True when `HELLO` failed because the server does not offer it (unknown
/// or renamed command, or no such protocol version), not because of
/// authentication.
fn hello_unsupported(e: &ServerError) -> bool {
    let text = e.message();
    e.code() == b"NOPROTO"
        || text.starts_with(b"ERR unknown command")
        || text.starts_with(b"ERR unknown subcommand")
}

fn auth_error(e: ServerError, step: &'static str) -> Error {
    let text = e.message_lossy().to_ascii_lowercase();
    match e.kind() {
        ServerErrorKind::NoAuth => HandshakeError::PasswordRequired(e),
        ServerErrorKind::WrongPass => HandshakeError::WrongPassword(e),
        // Servers before 6 say "invalid password"; a server with no
        // password at all refuses AUTH with "called without any password".
        _ if text.contains("invalid password") || text.contains("without any password") => {
            HandshakeError::WrongPassword(e)
        }
        _ => HandshakeError::Step { step, error: e },
    }
    .into()
}

/// Sends `PING` on a socket whose handshake is done and waits for its
/// answer (the health check's probe): any reply shows the server alive.
pub(crate) async fn ping(io: &mut Transport, config: &ConnectionConfig) -> Result<(), Error> {
    Wire::new(config).call(io, &[cmd("PING")]).await.map(drop)
}

/// Sends commands and reads their replies, skipping push frames.
struct Wire {
    decoder: Decoder,
    rbuf: BytesMut,
    out: BytesMut,
}

impl Wire {
    fn new(config: &ConnectionConfig) -> Wire {
        Wire {
            decoder: Decoder::with_limits(config.decoder_limits),
            rbuf: BytesMut::with_capacity(4096),
            out: BytesMut::with_capacity(512),
        }
    }

    async fn call(&mut self, io: &mut Transport, cmds: &[Cmd]) -> Result<Vec<Value>, Error> {
        self.out.clear();
        for c in cmds {
            c.encode(&mut self.out);
        }
        io.write_all(&self.out).await?;
        io.flush().await?;
        let mut replies = Vec::with_capacity(cmds.len());
        let mut chunk = [0u8; 4096];
        while replies.len() < cmds.len() {
            match self.decoder.decode(&mut self.rbuf)? {
                Some(v) if v.is_push() => {}
                Some(v) => replies.push(v),
                None => {
                    let n = io.read(&mut chunk).await?;
                    if n == 0 {
                        return Err(Error::from(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "the server closed the connection during the handshake",
                        )));
                    }
                    self.rbuf.extend_from_slice(&chunk[..n]);
                }
            }
        }
        Ok(replies)
    }
}
