//! How a connection talks to its server: the RESP version it asks for
//! ([`Protocol`]) and the system calls that carry its bytes
//! ([`TransportKind`]).

use std::fmt;

/// How a connection moves bytes to and from its socket.
///
/// Both transports encode commands in place into the connection's batch
/// buffer and keep every guarantee of [`Connection`](crate::Connection)
/// (reply order, deadlines, may-have-been-applied errors); they differ in
/// the system calls that carry the bytes. See the
/// [`conn` module docs](crate::Connection#how-bytes-reach-the-socket).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TransportKind {
    /// The default: the `REDCORE_TRANSPORT` environment variable
    /// (`glommio` or `io_uring`) when it is set, otherwise
    /// [`Glommio`](Self::Glommio).
    #[default]
    Auto,
    /// glommio's sockets: one non-blocking `send` per batch and `recv`
    /// calls, with io_uring used for readiness only.
    Glommio,
    /// A ring of redcore's own on each core: batches are sent from
    /// registered buffers (`WRITE_FIXED`), one `io_uring_enter` per core
    /// for every connection with something to send, and replies arrive
    /// through multishot receives into a provided-buffer ring. When the
    /// kernel refuses any piece of it, connections use
    /// [`Glommio`](Self::Glommio) instead and one warning is logged. TLS
    /// connections always use [`Glommio`](Self::Glommio): rustls needs a
    /// byte stream with its own buffering.
    IoUring,
}

impl TransportKind {
    /// The name used in `REDCORE_TRANSPORT` and the `transport` URI option.
    pub fn as_str(self) -> &'static str {
        match self {
            TransportKind::Auto => "auto",
            TransportKind::Glommio => "glommio",
            TransportKind::IoUring => "io_uring",
        }
    }

    /// Parses `auto`, `glommio` or `io_uring` (also `iouring`, `uring`).
    pub fn parse(text: &str) -> Option<TransportKind> {
        match text.trim().to_ascii_lowercase().as_str() {
            "auto" => Some(TransportKind::Auto),
            "glommio" => Some(TransportKind::Glommio),
            "io_uring" | "iouring" | "uring" | "io-uring" => Some(TransportKind::IoUring),
            _ => None,
        }
    }

    /// Resolves [`Auto`](Self::Auto): the `REDCORE_TRANSPORT` environment
    /// variable when set to a known name, otherwise the built-in default
    /// ([`Glommio`](Self::Glommio)). Other kinds resolve to themselves.
    pub fn resolve(self) -> TransportKind {
        if self != TransportKind::Auto {
            return self;
        }
        static FROM_ENV: std::sync::OnceLock<TransportKind> = std::sync::OnceLock::new();
        *FROM_ENV.get_or_init(|| match std::env::var("REDCORE_TRANSPORT") {
            Ok(v) => match TransportKind::parse(&v) {
                Some(TransportKind::Auto) | None => {
                    if TransportKind::parse(&v).is_none() {
                        tracing::warn!(value = %v, "REDCORE_TRANSPORT is not glommio, io_uring or auto; ignored");
                    }
                    DEFAULT_TRANSPORT
                }
                Some(kind) => kind,
            },
            Err(_) => DEFAULT_TRANSPORT,
        })
    }
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What [`TransportKind::Auto`] means when `REDCORE_TRANSPORT` is unset.
const DEFAULT_TRANSPORT: TransportKind = TransportKind::Glommio;

/// Which RESP version the connection asks for in its handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Protocol {
    /// RESP2: the protocol of every Redis version.
    Resp2,
    /// RESP3 (the default): typed replies and out-of-band push frames.
    /// A server that does not know `HELLO` is spoken to in RESP2.
    #[default]
    Resp3,
}
