//! Connection configuration: [`ConnectionConfig`], built with
//! [`ConnectionConfig::builder`] or parsed from a Redis URI
//! ([`parse_uri`], [`ConnectionConfig::from_uri`], or `str::parse`).
//!
//! The options and their defaults are those of the Elixir
//! `Redis.Connection`: host `127.0.0.1`, port 6379, RESP3, a 5 s call
//! timeout, reconnection backoff from 500 ms up to 30 s, connecting before
//! returning, reconnecting rather than exiting on disconnection. Its
//! `name` option (process registration) has no meaning in Rust: the
//! connection handle is the name. (A URI's `?name=` query option is the
//! client name sent with `CLIENT SETNAME`, as in other clients.)
//!
//! [`ConnectionConfigBuilder::build`] checks the options together and
//! names the option at fault in [`Error::InvalidConfig`]. The fields of
//! [`ConnectionConfig`] are public, so a configuration changed by hand is
//! checked again by [`ConnectionConfig::validate`] when a connection is
//! opened.
//!
//! ```
//! use std::time::Duration;
//! use redcore::config::{ConnectionConfig, Protocol, ServerAddr};
//!
//! let config = ConnectionConfig::builder()
//!     .host("cache.internal")
//!     .port(6380)
//!     .username("app")
//!     .password("secret")
//!     .database(2)
//!     .protocol(Protocol::Resp2)
//!     .timeout(Duration::from_secs(2))
//!     .build()?;
//! assert_eq!(config.database, Some(2));
//!
//! let from_uri = "redis://:secret@localhost:6380/2".parse::<ConnectionConfig>()?;
//! assert_eq!(
//!     from_uri.addr,
//!     ServerAddr::Tcp { host: "localhost".into(), port: 6380 }
//! );
//! assert_eq!(from_uri.username, None);
//! assert_eq!(from_uri.database, Some(2));
//!
//! // A URI, then options a URI cannot carry.
//! let tuned = ConnectionConfig::from_uri("rediss://cache.internal")?
//!     .into_builder()
//!     .max_in_flight(1024)
//!     .build()?;
//! assert!(tuned.tls.is_some());
//!
//! // Errors name the option and never show the password.
//! let err = ConnectionConfig::builder().port(0).build().unwrap_err();
//! assert_eq!(err.to_string(), "invalid option port: must not be 0");
//! # Ok::<(), redcore::Error>(())
//! ```

mod addr;
mod cache;
mod cluster;
mod connection;
mod read_from;
mod tls;
mod uri;
mod wire;

use crate::Error;

pub use addr::ServerAddr;
pub use cache::{CacheOptions, DEFAULT_CACHE_TTL, TrackingMode, parse_size};
pub use cluster::{ClusterConfig, ClusterConfigBuilder, IntoClusterConfig, IntoNodeAddr};
pub use connection::{ConnectionConfig, ConnectionConfigBuilder, Password};
pub use read_from::{NodeZones, ReadFrom, ReplicaOptions, ZoneFn};
pub use tls::{ClientCert, TlsOptions, TlsRoots};
pub use uri::parse_uri;
pub use wire::{Protocol, TransportKind};

use addr::host_problem;

/// The error of an option with a value it cannot have.
fn invalid(option: &'static str, reason: impl Into<String>) -> Error {
    Error::InvalidConfig {
        option,
        reason: reason.into(),
    }
}
