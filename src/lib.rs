//! redcore: a Redis and Redis Cluster client runtime for Linux on glommio.
#![deny(missing_docs)]

pub mod auth;
pub mod cmd;
pub mod config;
mod conn;
mod error;
pub mod hooks;
pub mod resp;
pub mod slot;

pub use cmd::{Args, Cmd, Route, cmd};
pub use config::{ConnectionConfig, Protocol};
pub use conn::{Connection, IntoConnectionConfig, PushReceiver, Stats, Watch};
pub use error::{
    ConversionError, Error, HandshakeError, Redirect, RedirectKind, Result, RetryAction,
    ServerError, ServerErrorKind,
};
pub use resp::{FromValue, Value};

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
