//! Telling a cluster's refusal of a script or function call apart from an
//! error the script raised itself with the same first word.
//!
//! A refusal (`MOVED`, `ASK`, `TRYAGAIN`, `CLUSTERDOWN`, `LOADING`, ...)
//! proves a command did not run, so the router sends it again. But
//! `redis.error_reply('TRYAGAIN x')` from a script that already wrote
//! comes back with the same first word: taking it for a refusal would run
//! the script again. For `EVAL`, `EVALSHA`, `FCALL` and their read-only
//! variants the router therefore retries only on a refusal in the
//! server's own words ([`refusal_is_genuine`]).

use super::NodeAddr;
use crate::cmd::{Args, Route};
use crate::error::{ServerError, ServerErrorKind};

/// True for `EVAL`, `EVALSHA`, `EVAL_RO`, `EVALSHA_RO`, `FCALL` and
/// `FCALL_RO`: commands that run code which can raise any error text.
pub fn runs_code(args: &impl Args) -> bool {
    args.with_arg(0, |name| {
        [
            &b"EVAL"[..],
            b"EVALSHA",
            b"EVAL_RO",
            b"EVALSHA_RO",
            b"FCALL",
            b"FCALL_RO",
        ]
        .iter()
        .any(|c| name.eq_ignore_ascii_case(c))
    })
    .unwrap_or(false)
}

/// The server's own texts of the refusals a router retries (Redis 6 and
/// 7; the `LOADING` and `BUSY` ones name the server, so only their tails
/// are compared).
const OWN_PREFIXES: &[&[u8]] = &[
    b"TRYAGAIN Multiple keys request during rehashing of slot",
    b"CLUSTERDOWN The cluster is down",
    b"CLUSTERDOWN Hash slot not served",
    b"READONLY You can't write against a read only replica",
    b"MASTERDOWN Link with MASTER is down",
    b"NOAUTH Authentication required",
    b"NOSCRIPT No matching script",
    b"EXECABORT Transaction discarded",
];

/// Tails found inside the server's own `LOADING` and `BUSY` texts.
const OWN_PARTS: &[(&[u8], &[u8])] = &[
    (b"LOADING ", b"is loading the dataset in memory"),
    (b"BUSY ", b"is busy running a script"),
];

/// Whether `err`, the reply of `node` to a script or function call routed
/// by `route`, is a refusal in the server's own words, so that retrying
/// cannot run the code twice. A redirect must name the call's own slot and
/// another node (a real one never points back at its sender); other
/// refusals must match the server's text. Errors that are not refusals
/// are never retried anyway: true.
///
/// Not told apart: a script that raises exactly a server text, or a
/// `MOVED`/`ASK` naming its own slot and another node.
pub fn refusal_is_genuine(err: &ServerError, route: Route, node: &NodeAddr) -> bool {
    if !err.is_safe_to_retry() {
        return true;
    }
    match err.kind() {
        ServerErrorKind::Moved | ServerErrorKind::Ask => err.redirect().is_some_and(|r| {
            route == Route::Slot(r.slot) && NodeAddr::from_redirect(&r, node) != *node
        }),
        _ => {
            let text = err.message();
            OWN_PREFIXES.iter().any(|p| text.starts_with(p))
                || OWN_PARTS.iter().any(|(head, part)| {
                    text.starts_with(head) && text.windows(part.len()).any(|w| w == *part)
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::cmd::cmd;

    fn err(text: &'static str) -> ServerError {
        ServerError::new(Bytes::from_static(text.as_bytes()))
    }

    #[test]
    fn only_the_servers_own_refusals_are_genuine() {
        let node = NodeAddr::new("127.0.0.1", 7000);
        let slot = Route::Slot(100);
        for own in [
            "TRYAGAIN Multiple keys request during rehashing of slot",
            "CLUSTERDOWN The cluster is down",
            "CLUSTERDOWN Hash slot not served",
            "LOADING Redis is loading the dataset in memory",
            "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.",
            "READONLY You can't write against a read only replica.",
            "MOVED 100 127.0.0.1:7001",
            "ASK 100 127.0.0.1:7002",
            "WRONGTYPE Operation against a key holding the wrong kind of value",
            "NOSCRIPT No matching script. Please use EVAL.",
        ] {
            assert!(refusal_is_genuine(&err(own), slot, &node), "{own}");
        }
        for fake in [
            "TRYAGAIN fake",
            "CLUSTERDOWN fake",
            "LOADING fake",
            "BUSY fake",
            "READONLY fake",
            "MASTERDOWN fake",
            "NOSCRIPT fake",
            "EXECABORT fake",
            "MOVED 1 127.0.0.1:7001",
            "MOVED 100 127.0.0.1:7000",
            "ASK 100 127.0.0.1:7000",
        ] {
            assert!(!refusal_is_genuine(&err(fake), slot, &node), "{fake}");
        }
    }

    #[test]
    fn script_and_function_calls_run_code() {
        for name in [
            "EVAL",
            "evalsha",
            "EVAL_RO",
            "EvalSha_Ro",
            "FCALL",
            "fcall_ro",
        ] {
            assert!(runs_code(&cmd(name).arg("x").arg(0)), "{name}");
        }
        for name in ["GET", "SCRIPT", "FUNCTION", "EVALX"] {
            assert!(!runs_code(&cmd(name).arg("x")), "{name}");
        }
    }
}
