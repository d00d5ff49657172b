//! The options of client-side caching: [`CacheOptions`] and
//! [`TrackingMode`].

use std::time::Duration;

use bytes::Bytes;

use crate::Error;

/// How the server tells this client which cached keys changed
/// (`CLIENT TRACKING`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TrackingMode {
    /// `CLIENT TRACKING ON OPTIN` (the default): the server remembers only
    /// the keys of reads sent right after `CLIENT CACHING YES`, which the
    /// client sends with each cached read's miss. Other reads cost the
    /// server nothing.
    #[default]
    OptIn,
    /// `CLIENT TRACKING ON BCAST PREFIX ...`: the server sends an
    /// invalidation for every written key starting with one of
    /// `prefixes` (every key when empty), whoever read it. The server keeps
    /// no per-key table, but every matching write costs a message to every
    /// client; only keys with one of the prefixes are cached.
    Broadcast {
        /// Key prefixes to be told about (empty: all keys).
        prefixes: Vec<Bytes>,
    },
}

/// Client-side caching for the cached reads of
/// [`CacheCommands`](crate::CacheCommands): set on
/// [`ConnectionConfig::cache`](crate::ConnectionConfig::cache) (on a
/// cluster, on its node template).
///
/// Caching needs RESP3 (the default protocol): invalidations arrive as push
/// frames on the socket that carried the read, in order with its replies.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheOptions {
    /// The most bytes of keys, values and bookkeeping each cache holds
    /// (one per connection or cluster client, so one per core on the
    /// per-core runtime); default 64 MiB. Past it, entries are evicted
    /// (SIEVE: see [`CacheStats`](crate::CacheStats)).
    pub max_bytes: usize,
    /// How invalidations are asked for (default [`TrackingMode::OptIn`]).
    pub mode: TrackingMode,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions {
            max_bytes: 64 << 20,
            mode: TrackingMode::OptIn,
        }
    }
}

impl CacheOptions {
    /// A cache of at most `max_bytes`, tracking in OPTIN mode.
    pub fn with_max_bytes(max_bytes: usize) -> CacheOptions {
        CacheOptions {
            max_bytes,
            ..CacheOptions::default()
        }
    }

    /// The same options in BCAST mode with `prefixes`.
    pub fn broadcast<P: Into<Bytes>>(mut self, prefixes: impl IntoIterator<Item = P>) -> Self {
        self.mode = TrackingMode::Broadcast {
            prefixes: prefixes.into_iter().map(Into::into).collect(),
        };
        self
    }

    /// Checks the options: a cache smaller than 4 KiB holds nothing
    /// useful, and the server refuses BCAST prefixes of which one starts
    /// another (or repeats it), which would otherwise fail every
    /// connection's handshake.
    pub fn validate(&self) -> Result<(), Error> {
        if self.max_bytes < 4096 {
            return Err(Error::InvalidConfig {
                option: "cache",
                reason: format!("max_bytes {} is below 4096", self.max_bytes),
            });
        }
        if let TrackingMode::Broadcast { prefixes } = &self.mode {
            for (i, a) in prefixes.iter().enumerate() {
                if let Some(b) = prefixes[i + 1..]
                    .iter()
                    .find(|b| a.starts_with(b) || b.starts_with(a))
                {
                    return Err(Error::InvalidConfig {
                        option: "cache",
                        reason: format!(
                            "the BCAST prefixes '{}' and '{}' overlap (the server refuses that)",
                            String::from_utf8_lossy(a),
                            String::from_utf8_lossy(b)
                        ),
                    });
                }
            }
        }
        Ok(())
    }
}

/// Parses a size such as `64MB`, `512KiB`, `1g` or `4096` (bytes); `k`,
/// `m`, `g` with or without `B`/`iB` mean powers of 1024.
pub fn parse_size(text: &str) -> Option<usize> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let n: usize = t[..digits].parse().ok()?;
    let unit = t[digits..].trim().to_ascii_lowercase();
    let shift = match unit.as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return None,
    };
    n.checked_mul(1usize << shift)
}

/// A cached read's client-side time to live when none is given: 60 s
/// (the server's `PTTL` caps it in any case).
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("64MB"), Some(64 << 20));
        assert_eq!(parse_size("512kib"), Some(512 << 10));
        assert_eq!(parse_size("1g"), Some(1 << 30));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("12 MB"), Some(12 << 20));
        assert_eq!(parse_size("MB"), None);
        assert_eq!(parse_size("3TB"), None);
    }

    #[test]
    fn tiny_caches_are_refused() {
        assert!(CacheOptions::with_max_bytes(100).validate().is_err());
        assert!(CacheOptions::default().validate().is_ok());
    }

    #[test]
    fn overlapping_prefixes_are_refused() {
        let with = |p: &[&'static str]| CacheOptions::default().broadcast(p.iter().copied());
        assert!(with(&[]).validate().is_ok());
        assert!(with(&["user:", "item:", "u"]).validate().is_err());
        assert!(with(&["user:1", "user:"]).validate().is_err());
        assert!(with(&["a", "a"]).validate().is_err());
        assert!(with(&["", "a"]).validate().is_err());
        assert!(with(&["user:", "item:", "us"]).validate().is_err());
        assert!(with(&["user:", "item:", "cart:"]).validate().is_ok());
        let Err(Error::InvalidConfig { reason, .. }) = with(&["ab", "abc"]).validate() else {
            panic!("accepted");
        };
        assert!(reason.contains("'ab' and 'abc' overlap"), "{reason}");
    }
}
