//! Where a server is ([`ServerAddr`]), and what makes a host name valid.

use std::fmt;
use std::net::Ipv6Addr;
use std::path::PathBuf;

/// Where the server is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerAddr {
    /// A TCP address: a host name or IP literal, and a port.
    Tcp {
        /// Host name or IP address (IPv6 without brackets).
        host: String,
        /// TCP port.
        port: u16,
    },
    /// A Unix domain socket path.
    Unix(PathBuf),
}

impl fmt::Display for ServerAddr {
    /// `host:port`, `[v6]:port`, or the socket path.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerAddr::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            ServerAddr::Tcp { host, port } => write!(f, "{host}:{port}"),
            ServerAddr::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

/// What is wrong with `host` as a host name or IP literal, if anything.
/// IPv6 literals come without brackets and may carry a `%zone`.
pub(crate) fn host_problem(host: &str) -> Option<String> {
    if host.is_empty() {
        return Some("is empty".into());
    }
    if host.starts_with('[') || host.ends_with(']') {
        return Some("write an IPv6 address without brackets".into());
    }
    if host.contains(':') {
        let (addr, zone) = match host.split_once('%') {
            Some((addr, zone)) => (addr, Some(zone)),
            None => (host, None),
        };
        let zone_ok = zone.is_none_or(|z| {
            !z.is_empty()
                && z.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        });
        if addr.parse::<Ipv6Addr>().is_err() || !zone_ok {
            return Some(format!("{host:?} is not a valid IPv6 address"));
        }
        return None;
    }
    if let Some(c) = host
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')))
    {
        return Some(format!(
            "{host:?} contains {c:?}, which cannot be part of a host name"
        ));
    }
    if host.starts_with('.') || host.contains("..") {
        return Some(format!("{host:?} has an empty label"));
    }
    if host.len() > 253 {
        return Some("is longer than 253 characters".into());
    }
    None
}
