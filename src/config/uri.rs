//! Redis URI parsing: [`parse_uri`] and the `FromStr` of
//! [`ConnectionConfig`].

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::str::FromStr;

use super::{
    ConnectionConfig, ConnectionConfigBuilder, Password, Protocol, TlsOptions, TransportKind,
};
use crate::Error;

/// Parses a Redis URI into a configuration checked by
/// [`ConnectionConfig::validate`].
///
/// | Form | Meaning |
/// |---|---|
/// | `redis://[[user]:password@]host[:port][/db][?options]` | TCP |
/// | `rediss://...` | TCP with TLS (system roots) |
/// | `valkey://...`, `valkeys://...` | the same as `redis://`, `rediss://` |
/// | `unix:///path/to.sock[?options]` | Unix socket (also `redis+unix://`, `valkey+unix://`) |
///
/// - The port defaults to 6379; an IPv6 address goes in brackets
///   (`redis://[::1]:6380`) and is stored without them. A zone is written
///   `%25`: `redis://[fe80::1%25eth0]`.
/// - User name, password, host, socket path and query values are
///   percent-decoded (`redis://us%40er:p%3Ass@host`). A `/`, `?`, `#` in a
///   user name or password must be percent-encoded; a raw `@` in the
///   password works (the last `@` before the host ends the user info), but
///   in a query value an `@` must be written `%40`.
/// - `redis://:secret@host` has a password and no user name;
///   `redis://user:@host` has an empty password (for `nopass` ACL users);
///   `redis://user@host` has a user name and no password, which
///   [`ConnectionConfig::validate`] rejects unless a password is added (see
///   [`ConnectionConfigBuilder::from_uri`]).
/// - Query options on TCP URIs: `protocol=resp2|resp3` (or `2|3`),
///   `client_name=` (alias `name=`, the name sent with `CLIENT SETNAME`),
///   `transport=auto|glommio|io_uring` ([`TransportKind`]) and
///   `cache=64MB` (client-side caching of that size:
///   [`ConnectionConfig::cache`]).
///   Unix URIs also take `db=`, `password=` (alias `pass=`) and `username=`
///   (alias `user=`). Unknown options are errors.
///
/// A malformed URI gives [`Error::InvalidUri`], its reason naming the
/// problem; a well-formed one whose options break a rule of
/// [`ConnectionConfig::validate`] (a user name without a password, a client
/// name with a space) gives that [`Error::InvalidConfig`]. No message
/// contains the user info or the password.
///
/// ```
/// use redcore::config::{parse_uri, ServerAddr};
///
/// let config = parse_uri("rediss://app:token@[::1]:6380/3?protocol=resp2")?;
/// assert_eq!(config.addr, ServerAddr::Tcp { host: "::1".into(), port: 6380 });
/// assert!(config.tls.is_some());
///
/// let err = parse_uri("redis://:hunter2@localhost:99999").unwrap_err();
/// assert!(err.to_string().contains("port"));
/// assert!(!err.to_string().contains("hunter2"));
/// # Ok::<(), redcore::Error>(())
/// ```
pub fn parse_uri(uri: &str) -> Result<ConnectionConfig, Error> {
    ConnectionConfigBuilder::from_uri(uri)?.build()
}

impl ConnectionConfig {
    /// Parses a Redis URI; the same as [`parse_uri`].
    pub fn from_uri(uri: &str) -> Result<ConnectionConfig, Error> {
        parse_uri(uri)
    }
}

impl FromStr for ConnectionConfig {
    type Err = Error;

    /// Parses a Redis URI; the same as [`parse_uri`].
    fn from_str(uri: &str) -> Result<Self, Self::Err> {
        parse_uri(uri)
    }
}

impl ConnectionConfigBuilder {
    /// A builder holding what a Redis URI says, for options the URI cannot
    /// carry. Only the URI's syntax is checked here; [`build`] checks the
    /// whole configuration.
    ///
    /// ```
    /// use redcore::config::ConnectionConfigBuilder;
    ///
    /// // The user name from the URI, the password from a secret store.
    /// let config = ConnectionConfigBuilder::from_uri("redis://app@cache.internal/1")?
    ///     .password("from-the-vault")
    ///     .build()?;
    /// assert_eq!(config.username.as_deref(), Some("app"));
    /// # Ok::<(), redcore::Error>(())
    /// ```
    ///
    /// [`build`]: ConnectionConfigBuilder::build
    pub fn from_uri(uri: &str) -> Result<ConnectionConfigBuilder, Error> {
        parse(uri)
    }
}

fn bad(reason: impl Into<String>) -> Error {
    Error::InvalidUri {
        reason: reason.into(),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tcp { tls: bool },
    Unix,
}

const SCHEMES: &str = "redis://, rediss://, valkey://, valkeys:// or unix://";

fn scheme_kind(scheme: &str) -> Result<Kind, Error> {
    let lower = scheme.to_ascii_lowercase();
    match lower.as_str() {
        "redis" | "valkey" => Ok(Kind::Tcp { tls: false }),
        "rediss" | "valkeys" => Ok(Kind::Tcp { tls: true }),
        "unix" | "redis+unix" | "valkey+unix" => Ok(Kind::Unix),
        "rediss+unix" | "valkeys+unix" => Err(bad("TLS over a Unix socket is not supported")),
        // Show the scheme only when it looks like one: text before a
        // `://` that does not could be a password.
        s if s.starts_with(|c: char| c.is_ascii_alphabetic())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')) =>
        {
            Err(bad(format!("unknown scheme `{s}`: expected {SCHEMES}")))
        }
        _ => Err(bad(format!("malformed scheme: expected {SCHEMES}"))),
    }
}

/// Decodes `%XX` escapes. The error says what is wrong, never the text.
fn percent_decode(s: &str) -> Result<Vec<u8>, &'static str> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = |at: usize| bytes.get(at).and_then(|&b| (b as char).to_digit(16));
            let (Some(hi), Some(lo)) = (hex(i + 1), hex(i + 2)) else {
                return Err("a `%` is not followed by two hex digits");
            };
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// Percent-decodes `s` into UTF-8 text; `what` names the part in errors.
fn decode_str(s: &str, what: &str) -> Result<String, Error> {
    percent_decode(s)
        .and_then(|b| String::from_utf8(b).map_err(|_| "the decoded bytes are not UTF-8"))
        .map_err(|why| bad(format!("invalid percent-encoding in the {what}: {why}")))
}

fn parse(uri: &str) -> Result<ConnectionConfigBuilder, Error> {
    if uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad(
            "the URI contains whitespace or control characters (percent-encode them)",
        ));
    }
    let Some((scheme, rest)) = uri.split_once("://") else {
        return Err(bad(format!("missing scheme: expected {SCHEMES}")));
    };
    let kind = scheme_kind(scheme)?;

    // The authority ends at the first `/`, `?` or `#`. A password holding
    // one of those (unencoded) ends it early and leaves its `@` behind:
    // refuse that case before anything of it can be quoted in an error.
    let (authority, tail) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
    if tail.contains('@') && !(kind == Kind::Unix && authority.is_empty()) {
        return Err(bad(
            "`@` after the host: percent-encode `/`, `?`, `#` and `@` in a user name, password or query value",
        ));
    }
    if tail.contains('#') {
        return Err(bad("fragments (`#...`) are not supported"));
    }
    let (path, query) = match tail.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (tail, None),
    };
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((userinfo, hostport)) => (Some(userinfo), hostport),
        None => (None, authority),
    };

    let mut b = ConnectionConfigBuilder::default();
    let mut password = None;
    let mut username = None;
    if let Some(userinfo) = userinfo {
        let (user, pass) = match userinfo.split_once(':') {
            Some((user, pass)) => (user, Some(pass)),
            None => (userinfo, None),
        };
        let user = decode_str(user, "user name")?;
        let pass = pass.map(|p| decode_str(p, "password")).transpose()?;
        // `redis://:@host` says nothing; `redis://user:@host` is an empty
        // password (for ACL users with `nopass`).
        password = pass.filter(|p| !p.is_empty() || !user.is_empty());
        username = Some(user).filter(|u| !u.is_empty());
    }

    match kind {
        Kind::Tcp { tls } => {
            let (host, port) = parse_host_port(hostport)?;
            b.host = host;
            if let Some(port) = port {
                b.port = port;
            }
            let db = path.strip_prefix('/').unwrap_or(path);
            if db.contains('/') {
                return Err(bad(format!(
                    "the path {path:?} has more than one segment: expected /N, the database number"
                )));
            }
            if !db.is_empty() {
                b.config.database = Some(parse_db(db, "path", &format!("{db:?}"))?);
            }
            if tls {
                b.config.tls = Some(TlsOptions::default());
            }
        }
        Kind::Unix => {
            if !hostport.is_empty() {
                return Err(bad(format!(
                    "unexpected host {hostport:?} in a Unix socket URI: write the absolute path after three slashes, as in unix:///path/to.sock"
                )));
            }
            if path.is_empty() || path == "/" {
                return Err(bad("the Unix socket path is empty"));
            }
            if path.ends_with('/') {
                return Err(bad(format!(
                    "the Unix socket path {path:?} names a directory"
                )));
            }
            let bytes = percent_decode(path).map_err(|why| {
                bad(format!(
                    "invalid percent-encoding in the Unix socket path: {why}"
                ))
            })?;
            b.unix_socket = Some(PathBuf::from(OsString::from_vec(bytes)));
        }
    }

    let query = query.unwrap_or("");
    // A password in the query holding a raw `&` spills into the options
    // after it: then no query value is quoted in an error.
    let secret = kind == Kind::Unix && has_password(query);
    for (key, value) in parse_query(query, kind)? {
        let shown = if secret {
            "(not shown, as the query holds a password)".to_owned()
        } else {
            format!("{value:?}")
        };
        match key {
            "protocol" => {
                b.config.protocol = match value.to_ascii_lowercase().as_str() {
                    "resp2" | "2" => Protocol::Resp2,
                    "resp3" | "3" => Protocol::Resp3,
                    _ => {
                        return Err(bad(format!(
                            "invalid protocol {shown}: expected resp2 or resp3"
                        )));
                    }
                }
            }
            "client_name" => b.config.client_name = Some(value),
            "cache" => {
                let max_bytes = super::parse_size(&value).ok_or_else(|| {
                    bad(format!(
                        "invalid cache size {shown}: expected bytes or a size such as 64MB"
                    ))
                })?;
                b.config.cache = Some(super::CacheOptions::with_max_bytes(max_bytes));
            }
            "transport" => {
                b.config.transport = TransportKind::parse(&value).ok_or_else(|| {
                    bad(format!(
                        "invalid transport {shown}: expected auto, glommio or io_uring"
                    ))
                })?
            }
            "db" => b.config.database = Some(parse_db(&value, "query", &shown)?),
            "password" if password.is_some() => {
                return Err(bad("the password is given twice (user info and query)"));
            }
            "password" => password = Some(value),
            "username" if username.is_some() => {
                return Err(bad("the user name is given twice (user info and query)"));
            }
            "username" => username = Some(value),
            _ => unreachable!("parse_query returns known keys only"),
        }
    }
    b.config.password = password.map(Password::Static);
    b.config.username = username;
    Ok(b)
}

/// Splits `host[:port]` or `[ipv6][:port]`; the port is `None` when absent.
fn parse_host_port(s: &str) -> Result<(String, Option<u16>), Error> {
    let (host, port) = if let Some(inner) = s.strip_prefix('[') {
        let Some((host, after)) = inner.split_once(']') else {
            return Err(bad("unclosed `[` in an IPv6 address"));
        };
        let port = match after.strip_prefix(':') {
            Some(port) => Some(port),
            None if after.is_empty() => None,
            None => {
                return Err(bad(format!(
                    "unexpected {after:?} after the IPv6 address: expected `:port`"
                )));
            }
        };
        let host = decode_str(host, "host")?;
        if !host.contains(':') {
            return Err(bad(format!("[{host}] is not an IPv6 address")));
        }
        (host, port)
    } else {
        let (host, port) = match s.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (s, None),
        };
        if port.is_some_and(|p| p.contains(':')) {
            return Err(bad(
                "an IPv6 address must be in brackets, as in redis://[::1]:6379",
            ));
        }
        (decode_str(host, "host")?, port)
    };
    if host.is_empty() {
        return Err(bad("missing host"));
    }
    if let Some(problem) = super::host_problem(&host) {
        return Err(bad(format!("invalid host: {problem}")));
    }
    let port = match port {
        None => None,
        Some("") => return Err(bad("missing port after `:`")),
        Some(p) if !p.bytes().all(|b| b.is_ascii_digit()) => {
            return Err(bad(format!("invalid port {p:?}: not a number")));
        }
        Some(p) => match p.parse::<u64>() {
            Ok(0) => return Err(bad("invalid port 0: must be 1 to 65535")),
            Ok(n) if n <= u64::from(u16::MAX) => Some(n as u16),
            _ => return Err(bad(format!("invalid port {p}: must be 1 to 65535"))),
        },
    };
    Ok((host, port))
}

/// Parses a database number; errors show it as `shown`.
fn parse_db(s: &str, place: &str, shown: &str) -> Result<u32, Error> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(format!(
            "invalid database {shown} in the {place}: expected a non-negative integer"
        )));
    }
    s.parse().map_err(|_| {
        bad(format!(
            "invalid database {shown} in the {place}: too large"
        ))
    })
}

/// The query's options, keys made canonical (aliases resolved), values
/// decoded; unknown, repeated or value-less options are errors. Values are
/// never quoted in errors (one may be a password).
fn parse_query(query: &str, kind: Kind) -> Result<Vec<(&'static str, String)>, Error> {
    let mut options: Vec<(&'static str, String)> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (raw_key, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = decode_str(raw_key, "name of a query option")?;
        let canonical = match key.as_str() {
            "protocol" => "protocol",
            "client_name" | "name" => "client_name",
            "transport" => "transport",
            "cache" => "cache",
            "db" | "password" | "pass" | "username" | "user"
                if matches!(kind, Kind::Tcp { .. }) =>
            {
                return Err(bad(format!(
                    "query option `{key}` is for Unix socket URIs; on TCP write redis://user:password@host:port/db"
                )));
            }
            "db" => "db",
            "password" | "pass" => "password",
            "username" | "user" => "username",
            _ if kind == Kind::Unix && has_password(query) => {
                return Err(bad(
                    "unknown query option (not shown, as the query holds a password: percent-encode `&` in it)",
                ));
            }
            _ => {
                let known = match kind {
                    Kind::Tcp { .. } => "protocol, client_name, name, transport, cache",
                    Kind::Unix => {
                        "db, password, pass, username, user, protocol, client_name, name, transport, cache"
                    }
                };
                return Err(bad(format!(
                    "unknown query option {key:?} (known: {known})"
                )));
            }
        };
        if !pair.contains('=') {
            return Err(bad(format!("query option `{key}` has no value")));
        }
        if options.iter().any(|(k, _)| *k == canonical) {
            return Err(bad(format!("query option `{canonical}` is given twice")));
        }
        let value = decode_str(raw_value, &format!("value of query option `{key}`"))?;
        options.push((canonical, value));
    }
    Ok(options)
}

fn has_password(query: &str) -> bool {
    query
        .split('&')
        .any(|p| p.starts_with("password=") || p.starts_with("pass="))
}

#[cfg(test)]
mod tests {
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;

    use super::*;
    use crate::config::ServerAddr;

    fn ok(uri: &str) -> ConnectionConfig {
        parse_uri(uri).unwrap_or_else(|e| panic!("{uri}: {e}"))
    }

    fn tcp(uri: &str) -> (String, u16) {
        match ok(uri).addr {
            ServerAddr::Tcp { host, port } => (host, port),
            other => panic!("{uri}: {other:?}"),
        }
    }

    fn unix(uri: &str) -> PathBuf {
        match ok(uri).addr {
            ServerAddr::Unix(path) => path,
            other => panic!("{uri}: {other:?}"),
        }
    }

    fn password(c: &ConnectionConfig) -> Option<&str> {
        match &c.password {
            Some(Password::Static(p)) => Some(p),
            Some(Password::Provider(_)) => panic!("provider"),
            None => None,
        }
    }

    /// The reason of the `InvalidUri` error `uri` gives, checked to
    /// contain `needle`.
    #[track_caller]
    fn err(uri: &str, needle: &str) -> String {
        match parse_uri(uri) {
            Err(Error::InvalidUri { reason }) => {
                assert!(
                    reason.contains(needle),
                    "{uri}: {reason:?} lacks {needle:?}"
                );
                reason
            }
            other => panic!("{uri}: expected InvalidUri, got {other:?}"),
        }
    }

    #[test]
    fn plain_host_takes_the_defaults() {
        let c = ok("redis://localhost");
        let d = ConnectionConfig::default();
        assert_eq!(tcp("redis://localhost"), ("localhost".into(), 6379));
        assert!(c.password.is_none() && c.username.is_none() && c.tls.is_none());
        assert_eq!(c.database, None);
        assert_eq!(c.protocol, Protocol::Resp3);
        assert_eq!(
            (c.timeout, c.backoff_initial),
            (d.timeout, d.backoff_initial)
        );
        assert_eq!(tcp("redis://127.0.0.1:7000"), ("127.0.0.1".into(), 7000));
        assert_eq!(tcp("redis://h:1/"), ("h".into(), 1));
        assert_eq!(tcp("redis://h:65535/0?"), ("h".into(), 65535));
    }

    #[test]
    fn the_uri_example_of_the_elixir_redis_connection() {
        let c = ok("redis://:secret@localhost:6380/2");
        assert_eq!(
            tcp("redis://:secret@localhost:6380/2"),
            ("localhost".into(), 6380)
        );
        assert_eq!(password(&c), Some("secret"));
        assert_eq!(c.username, None);
        assert_eq!(c.database, Some(2));
        let parsed: ConnectionConfig = "redis://:secret@localhost:6380/2".parse().unwrap();
        assert_eq!(parsed.database, Some(2));
        let from = ConnectionConfig::from_uri("redis://:secret@localhost:6380/2").unwrap();
        assert_eq!(password(&from), Some("secret"));
    }

    #[test]
    fn schemes() {
        for uri in ["redis://h", "valkey://h", "REDIS://h", "Valkey://h"] {
            assert!(ok(uri).tls.is_none(), "{uri}");
        }
        for uri in ["rediss://h", "valkeys://h", "REDISS://h"] {
            assert_eq!(ok(uri).tls, Some(TlsOptions::default()), "{uri}");
        }
        assert_eq!(tcp("rediss://h"), ("h".into(), 6379));
    }

    #[test]
    fn user_info() {
        let c = ok("redis://app:pw@h");
        assert_eq!(
            (c.username.as_deref(), password(&c)),
            (Some("app"), Some("pw"))
        );
        let c = ok("redis://us%40er:p%3Ass@h");
        assert_eq!(
            (c.username.as_deref(), password(&c)),
            (Some("us@er"), Some("p:ss"))
        );
        // The password may hold `:` and a raw `@`: the last `@` ends it.
        let c = ok("redis://u:a:b@c@h:1/0");
        assert_eq!(password(&c), Some("a:b@c"));
        assert_eq!(tcp("redis://u:a:b@c@h:1/0"), ("h".into(), 1));
        // An empty password for a nopass ACL user; `:@` says nothing.
        assert_eq!(password(&ok("redis://u:@h")), Some(""));
        let c = ok("redis://:@h");
        assert!(c.password.is_none() && c.username.is_none());
        assert!(ok("redis://@h").password.is_none());
        let c = ok("redis://%C3%A9:%E2%9C%93@h");
        assert_eq!(
            (c.username.as_deref(), password(&c)),
            (Some("é"), Some("✓"))
        );
    }

    #[test]
    fn user_without_password() {
        match parse_uri("redis://app@h") {
            Err(Error::InvalidConfig { option, reason }) => {
                assert_eq!(option, "username");
                assert!(reason.contains("password"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        let c = ConnectionConfigBuilder::from_uri("redis://app@h/4")
            .unwrap()
            .password("later")
            .build()
            .unwrap();
        assert_eq!(
            (c.username.as_deref(), password(&c)),
            (Some("app"), Some("later"))
        );
        assert_eq!(c.database, Some(4));
    }

    #[test]
    fn ipv6() {
        assert_eq!(tcp("redis://[::1]:6380/2"), ("::1".into(), 6380));
        assert_eq!(ok("redis://[::1]:6380/2").database, Some(2));
        assert_eq!(tcp("redis://[::1]"), ("::1".into(), 6379));
        assert_eq!(
            tcp("redis://:pw@[2001:db8::7]/1"),
            ("2001:db8::7".into(), 6379)
        );
        assert_eq!(
            tcp("redis://[fe80::1%25eth0]:7"),
            ("fe80::1%eth0".into(), 7)
        );
    }

    #[test]
    fn databases() {
        assert_eq!(ok("redis://h/0").database, Some(0));
        assert_eq!(ok("redis://h/15").database, Some(15));
        assert_eq!(ok("redis://h/4294967295").database, Some(u32::MAX));
        assert_eq!(ok("redis://h/").database, None);
        err("redis://h/x", "invalid database \"x\" in the path");
        err("redis://h/-1", "non-negative integer");
        err("redis://h/+1", "non-negative integer");
        err("redis://h/1/2", "more than one segment");
        err("redis://h/1/", "more than one segment");
        err("redis://h//", "more than one segment");
        err("redis://h/4294967296", "too large");
    }

    #[test]
    fn query_options() {
        assert_eq!(ok("redis://h?protocol=resp2").protocol, Protocol::Resp2);
        assert_eq!(ok("redis://h/1?protocol=RESP3").protocol, Protocol::Resp3);
        assert_eq!(ok("redis://h?protocol=2").protocol, Protocol::Resp2);
        let c = ok("redis://h/3?client_name=api-1&protocol=resp2");
        assert_eq!(c.client_name.as_deref(), Some("api-1"));
        assert_eq!((c.database, c.protocol), (Some(3), Protocol::Resp2));
        assert_eq!(
            ok("redis://h?name=a%40b").client_name.as_deref(),
            Some("a@b")
        );
        assert_eq!(ok("redis://h?&name=x&").client_name.as_deref(), Some("x"));
        err("redis://h?protocol=resp4", "invalid protocol \"resp4\"");
        err("redis://h?protocol", "`protocol` has no value");
        err("redis://h?color=red", "unknown query option \"color\"");
        err(
            "redis://h?name=a&client_name=b",
            "`client_name` is given twice",
        );
        err("redis://h?db=1", "for Unix socket URIs");
        err("redis://h?password=x", "for Unix socket URIs");
        err(
            "redis://h?name=%zz",
            "percent-encoding in the value of query option `name`",
        );
        err("redis://h?n%zz=1", "name of a query option");
        // `client_name` is checked as an option: InvalidConfig.
        assert!(matches!(
            parse_uri("redis://h?name=a%20b"),
            Err(Error::InvalidConfig {
                option: "client_name",
                ..
            })
        ));
    }

    #[test]
    fn unix_sockets() {
        for uri in [
            "unix:///tmp/r.sock",
            "redis+unix:///tmp/r.sock",
            "VALKEY+UNIX:///tmp/r.sock",
        ] {
            assert_eq!(unix(uri), Path::new("/tmp/r.sock"), "{uri}");
            assert!(ok(uri).tls.is_none());
        }
        let c = ok("unix:///run/redis/redis.sock?db=3&password=p%26w&user=app&protocol=resp2");
        assert_eq!(c.database, Some(3));
        assert_eq!(
            (c.username.as_deref(), password(&c)),
            (Some("app"), Some("p&w"))
        );
        assert_eq!(c.protocol, Protocol::Resp2);
        let c = ok("unix://:pw@/tmp/r.sock");
        assert_eq!(password(&c), Some("pw"));
        assert!(c.database.is_none());
        assert_eq!(
            unix("unix:///tmp/my%20dir/r@1.sock"),
            Path::new("/tmp/my dir/r@1.sock")
        );
        assert_eq!(
            unix("unix:///tmp/%FF.sock").as_os_str().as_bytes(),
            b"/tmp/\xff.sock"
        );
        assert_eq!(ok("unix:///s?name=w1").client_name.as_deref(), Some("w1"));
    }

    #[test]
    fn unix_errors() {
        err("unix://", "path is empty");
        err("unix:///", "path is empty");
        err("unix://?db=1", "path is empty");
        err("unix:///tmp/", "names a directory");
        err("unix://tmp/r.sock", "unexpected host \"tmp\"");
        err("unix:///s?db=x", "invalid database \"x\" in the query");
        err("unix:///s?db=1&db=2", "`db` is given twice");
        err("unix:///s?bogus=1", "unknown query option \"bogus\"");
        err("unix://:pw@/s?password=x", "password is given twice");
        err("unix://u:pw@/s?user=x", "user name is given twice");
        err("unix:///s%zz", "percent-encoding in the Unix socket path");
        err(
            "rediss+unix:///s",
            "TLS over a Unix socket is not supported",
        );
    }

    #[test]
    fn scheme_errors() {
        err("http://h", "unknown scheme `http`");
        err("localhost:6379", "missing scheme");
        err("", "missing scheme");
        err("redis:/h", "missing scheme");
        err("redis//h", "missing scheme");
        err("1redis://h", "malformed scheme");
    }

    #[test]
    fn host_and_port_errors() {
        for uri in [
            "redis://",
            "redis://:6379",
            "redis://:pw@",
            "redis://u:pw@/1",
            "redis://?name=x",
        ] {
            err(uri, "missing host");
        }
        err("redis://h:abc", "invalid port \"abc\": not a number");
        err("redis://h:6379abc", "not a number");
        err("redis://h:-1", "not a number");
        err("redis://h:0", "invalid port 0");
        err("redis://h:65536", "invalid port 65536: must be 1 to 65535");
        err("redis://h:99999999999999999999999", "must be 1 to 65535");
        err("redis://h:", "missing port");
        err("redis://[::1", "unclosed `[`");
        err("redis://[::1]x", "unexpected \"x\" after the IPv6 address");
        err("redis://[::1]:", "missing port");
        err("redis://[::g]", "not a valid IPv6 address");
        err("redis://[localhost]", "is not an IPv6 address");
        err("redis://::1", "must be in brackets");
        err("redis://h$t", "contains '$'");
        err("redis://h%2Fx", "contains '/'");
        err("redis://h%zz", "percent-encoding in the host");
        err("redis://a..b", "empty label");
        err("redis://h/0#frag", "fragments");
        err("redis://h /0", "whitespace");
        err("redis://h/0\n", "control characters");
    }

    #[test]
    fn user_info_errors_do_not_show_it() {
        err("redis://u%zz:pw@h", "percent-encoding in the user name");
        let r = err("redis://u:s3cr%zzet@h", "percent-encoding in the password");
        assert!(!r.contains("s3cr"));
        err("redis://u:%FF@h", "not UTF-8");
        // A raw `/`, `?` or `#` in the password leaves its `@` after the
        // host; so does a raw `@` in a query value.
        for uri in [
            "redis://:pa/ss@h",
            "redis://u:pa?ss@h/0",
            "redis://h/0?name=a@b",
        ] {
            err(uri, "percent-encode `/`, `?`, `#` and `@`");
        }
    }

    /// No error quotes the password, wherever it sits and however the URI
    /// is broken around it.
    #[test]
    fn errors_never_contain_the_password() {
        let uris = [
            "redis://:Pa55w0rd@h:abc",
            "redis://:Pa55w0rd@h:0",
            "redis://:Pa55w0rd@/0",
            "redis://:Pa55w0rd@h/x",
            "redis://:Pa55w0rd@h?bad=1",
            "redis://u:Pa55w0rd@[::1",
            "redis://u:Pa55w0rd@h%zz",
            "redis://:Pa55/w0rd@h",
            "redis://:Pa55?w0rd@h",
            "redis://:Pa55#w0rd@h",
            "redis://:Pa55/w0rd@h:abc/x",
            "redis://:Pa55?w0rd=1@h",
            "redis://:Pa55%w0rd@h",
            "Pa55:w0rd://h",
            "u:Pa55w0rd://h",
            "u:Pa55w0rd@h",
            "http://:Pa55w0rd@h",
            "redis://:Pa55w0rd@h /0",
            "unix:///s?password=Pa55&w0rd",
            "unix:///s?password=Pa55w0rd&db=x",
            "unix:///s?password=Pa55&db=w0rd",
            "unix:///s?pass=Pa55&protocol=w0rd",
            "unix://:Pa55/w0rd@/s",
            "unix://:Pa55w0rd@host/s",
            "rediss://:Pa55w0rd@h/1/2",
            "redis://app:Pa55w0rd@h?name=a%20b",
        ];
        for uri in uris {
            let msg = parse_uri(uri).expect_err(uri).to_string();
            for piece in ["Pa55", "w0rd"] {
                assert!(!msg.contains(piece), "{uri}: {msg}");
            }
        }
    }

    #[test]
    fn cache_sizes() {
        let c = parse_uri("redis://localhost?cache=8MB").unwrap();
        assert_eq!(c.cache.map(|c| c.max_bytes), Some(8 << 20));
        assert!(parse_uri("redis://localhost?cache=lots").is_err());
        // Tiny caches and RESP2 with a cache are refused.
        assert!(parse_uri("redis://localhost?cache=10").is_err());
        assert!(parse_uri("redis://localhost?cache=1MB&protocol=2").is_err());
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b%2f%2F%41").unwrap(), b"a b//A");
        assert_eq!(percent_decode("").unwrap(), b"");
        assert_eq!(percent_decode("+%25").unwrap(), b"+%");
        for bad in ["%", "%2", "%g0", "a%0g", "%%"] {
            assert!(percent_decode(bad).is_err(), "{bad}");
        }
    }
}
