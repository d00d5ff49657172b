//! [`Script`] and [`ScriptCommands`] on a real standalone server: a script
//! runs with `EVALSHA` and is loaded with `EVAL` the first time and after
//! `SCRIPT FLUSH`, which the server's own counters (`INFO commandstats`)
//! show; the read-only variant; errors raised by a script come back as
//! server errors and are not sent again, even when their text starts
//! like a refusal (`NOSCRIPT fake`, `TRYAGAIN fake`, ...); functions (`FUNCTION LOAD`,
//! `FCALL`, `FCALL_RO`) and `SCRIPT LOAD`.
//!
//! The cluster's side is tests/cluster_scripts.rs.

use redcore::prelude::*;
use redcore::{Connection, Error, Protocol, Script, ServerErrorKind};
use redcore_test_support::RedisServer;
use redcore_test_support::client::{base, run};

/// How the server counted `command`: (calls, calls that ended in an error
/// reply, rejected or failed), from `INFO commandstats`; zeros when it
/// never saw it.
fn stats(server: &RedisServer, command: &str) -> (u64, u64) {
    let prefix = format!("cmdstat_{}:", command.to_ascii_lowercase());
    let info = server.cmd(&["INFO", "commandstats"]);
    let Some(line) = info.lines().find_map(|l| l.strip_prefix(prefix.as_str())) else {
        return (0, 0);
    };
    let field = |name: &str| -> u64 {
        line.split(',')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .map_or(0, |(_, v)| v.trim().parse().expect("a count"))
    };
    (
        field("calls") + field("rejected_calls"),
        field("failed_calls") + field("rejected_calls"),
    )
}

async fn connect(server: &RedisServer, protocol: Protocol) -> Connection {
    let config = base(server.port()).protocol(protocol).build().unwrap();
    Connection::connect(config).await.unwrap()
}

const COUNTER: &str = "return redis.call('INCRBY', KEYS[1], ARGV[1])";

#[test]
fn a_script_is_loaded_by_eval_once_then_run_by_sha_and_reloaded_after_flush() {
    let server = RedisServer::start();
    run(move || async move {
        let conn = connect(&server, Protocol::Resp3).await;
        let script = Script::new(COUNTER);
        server.cmd(&["CONFIG", "RESETSTAT"]);

        // First call: the server does not have it.
        let n: i64 = script.invoke(&conn, &["counter"], &[5]).await.unwrap();
        assert_eq!(n, 5);
        assert_eq!(stats(&server, "evalsha"), (1, 1), "EVALSHA failed once");
        assert_eq!(stats(&server, "eval"), (1, 0), "then EVAL loaded it");

        // Now it is cached: EVALSHA alone.
        let n: i64 = script.invoke(&conn, &["counter"], &[2]).await.unwrap();
        assert_eq!(n, 7);
        assert_eq!(stats(&server, "evalsha"), (2, 1));
        assert_eq!(stats(&server, "eval"), (1, 0), "no second EVAL");

        // The server forgets it: reloaded transparently, once.
        server.cmd(&["SCRIPT", "FLUSH"]);
        let n: i64 = script.invoke(&conn, &["counter"], &[1]).await.unwrap();
        assert_eq!(n, 8);
        assert_eq!(stats(&server, "evalsha"), (3, 2));
        assert_eq!(stats(&server, "eval"), (2, 0));
        let exists = server.call(&["SCRIPT", "EXISTS", script.sha1()]);
        assert_eq!(exists.items()[0].integer(), Some(1), "cached again");

        // The counter moved by exactly what was asked: nothing ran twice.
        assert_eq!(conn.get::<i64>("counter").await.unwrap(), 8);
    });
}

#[test]
fn the_read_only_variant_uses_evalsha_ro_and_refuses_writes() {
    let server = RedisServer::start();
    run(move || async move {
        let conn = connect(&server, Protocol::Resp2).await;
        conn.set("ro:k", "hello").await.unwrap();
        server.cmd(&["CONFIG", "RESETSTAT"]);

        let read = Script::new("return redis.call('GET', KEYS[1])");
        let v: Option<String> = read.invoke_ro(&conn, &["ro:k"], &[""; 0]).await.unwrap();
        assert_eq!(v.as_deref(), Some("hello"));
        let v: Option<String> = read.invoke_ro(&conn, &["ro:k"], &[""; 0]).await.unwrap();
        assert_eq!(v.as_deref(), Some("hello"));
        assert_eq!(stats(&server, "evalsha_ro"), (2, 1));
        assert_eq!(stats(&server, "eval_ro"), (1, 0));
        assert_eq!(stats(&server, "evalsha"), (0, 0));

        // A write from a read-only script is the server's error.
        let write = Script::new("return redis.call('SET', KEYS[1], 'changed')");
        let err = write
            .invoke_ro::<(), _, _>(&conn, &["ro:k"], &[""; 0])
            .await
            .unwrap_err();
        assert!(err.server_error().is_some(), "{err:?}");
        assert_eq!(
            conn.get::<String>("ro:k").await.unwrap(),
            "hello",
            "not written"
        );
    });
}

#[test]
fn errors_raised_by_a_script_are_server_errors_and_not_sent_again() {
    let server = RedisServer::start();
    run(move || async move {
        let conn = connect(&server, Protocol::Resp3).await;
        // Loaded first, so that the counts below are the failing calls only.
        let raises =
            Script::new("redis.call('INCR', KEYS[1]) return redis.error_reply('MYERR went wrong')");
        conn.script_load(raises.source()).await.unwrap();
        server.cmd(&["CONFIG", "RESETSTAT"]);

        let err = raises
            .invoke::<i64, _, _>(&conn, &["raised"], &[""; 0])
            .await
            .unwrap_err();
        let Error::Server(e) = &err else {
            panic!("expected a server error, got {err:?}");
        };
        assert_eq!(e.code(), b"MYERR");
        assert_eq!(e.kind(), ServerErrorKind::Other);
        assert_eq!(stats(&server, "evalsha").0, 1, "sent once");
        assert_eq!(stats(&server, "eval"), (0, 0), "and not as EVAL");
        assert_eq!(
            conn.get::<i64>("raised").await.unwrap(),
            1,
            "the write before the error ran once"
        );

        // An error of a command the script calls: WRONGTYPE here.
        conn.lpush("a-list", &["x"]).await.unwrap();
        let calls = Script::new("return redis.call('INCR', KEYS[1])");
        let err = calls
            .invoke::<i64, _, _>(&conn, &["a-list"], &[""; 0])
            .await
            .unwrap_err();
        assert!(
            err.server_error()
                .is_some_and(|e| e.message_lossy().contains("WRONGTYPE")),
            "{err:?}"
        );

        // A script that does not compile: the EVAL after NOSCRIPT fails.
        let broken = Script::new("return (");
        let err = broken
            .invoke::<i64, _, _>(&conn, &["k"], &[""; 0])
            .await
            .unwrap_err();
        assert!(err.server_error().is_some(), "{err:?}");
    });
}

/// A script's own error whose text starts like a refusal that proves a
/// command did not run (`NOSCRIPT`, `MOVED`, `ASK`, `TRYAGAIN`, ...) is
/// still the script's error: the script ran (its `INCR` shows it) and is
/// not run again, neither as `EVAL` nor as a second `EVALSHA`.
#[test]
fn a_script_raising_a_refusal_text_runs_once() {
    let server = RedisServer::start();
    run(move || async move {
        let conn = connect(&server, Protocol::Resp3).await;
        for (i, text) in [
            "NOSCRIPT fake",
            "NOSCRIPT No matching",
            "MOVED 1 127.0.0.1:1",
            "ASK 1 127.0.0.1:1",
            "TRYAGAIN fake",
            "CLUSTERDOWN fake",
            "LOADING fake",
            "BUSY fake",
        ]
        .into_iter()
        .enumerate()
        {
            let counter = format!("raised-{i}");
            let script = Script::new(format!(
                "redis.call('INCR', KEYS[1]) return redis.error_reply('{text}')"
            ));
            // Loaded first: the call below is one EVALSHA that runs it.
            conn.script_load(script.source()).await.unwrap();
            let err = script
                .invoke::<i64, _, _>(&conn, &[counter.as_str()], &[""; 0])
                .await
                .unwrap_err();
            let Error::Server(e) = &err else {
                panic!("{text}: expected a server error, got {err:?}");
            };
            assert_eq!(e.message_lossy(), text, "the script's own error");
            assert_eq!(
                conn.get::<i64>(counter.as_str()).await.unwrap(),
                1,
                "{text}: the script ran once"
            );
        }
    });
}

const LIBRARY: &str = "#!lua name=redcore_scripts_test
redis.register_function('bump', function(keys, args)
  return redis.call('INCRBY', keys[1], args[1])
end)
redis.register_function{
  function_name = 'peek',
  callback = function(keys, args) return redis.call('GET', keys[1]) end,
  flags = { 'no-writes' },
}";

#[test]
fn functions_and_script_load_on_a_connection() {
    let server = RedisServer::start();
    run(move || async move {
        let conn = connect(&server, Protocol::Resp3).await;
        assert_eq!(
            conn.function_load(LIBRARY, false).await.unwrap(),
            "redcore_scripts_test"
        );
        let again = conn.function_load(LIBRARY, false).await.unwrap_err();
        assert!(again.server_error().is_some(), "already loaded: {again:?}");
        assert_eq!(
            conn.function_load(LIBRARY, true).await.unwrap(),
            "redcore_scripts_test",
            "REPLACE"
        );

        assert_eq!(
            conn.fcall::<i64, _, _>("bump", &["f:n"], &[3])
                .await
                .unwrap(),
            3
        );
        assert_eq!(
            conn.fcall::<i64, _, _>("bump", &["f:n"], &[4])
                .await
                .unwrap(),
            7
        );
        let v: Option<i64> = conn.fcall_ro("peek", &["f:n"], &[""; 0]).await.unwrap();
        assert_eq!(v, Some(7));
        let err = conn
            .fcall_ro::<i64, _, _>("bump", &["f:n"], &[1])
            .await
            .unwrap_err();
        assert!(err.server_error().is_some(), "a writing function: {err:?}");

        let script = Script::new(COUNTER);
        assert_eq!(conn.script_load(COUNTER).await.unwrap(), script.sha1());
        server.cmd(&["CONFIG", "RESETSTAT"]);
        let n: i64 = script.invoke(&conn, &["s:n"], &[2]).await.unwrap();
        assert_eq!(n, 2);
        assert_eq!(stats(&server, "evalsha"), (1, 0), "loaded beforehand");
        assert_eq!(stats(&server, "eval"), (0, 0));

        // The EVALSHA command for a pipeline: no reload there.
        server.cmd(&["SCRIPT", "FLUSH"]);
        let replies = conn
            .pipeline([script.evalsha_cmd(&["s:n"], &[1])])
            .await
            .unwrap();
        let e = replies[0].clone().into_result().unwrap_err();
        assert_eq!(
            e.server_error().map(|e| e.kind()),
            Some(ServerErrorKind::NoScript)
        );
    });
}
