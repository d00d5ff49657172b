//! Hooks around commands and pipelines, RESP3 push frames (client-side
//! caching invalidations), and hibernation of idle connections.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use glommio::spawn_local;
use redcore::Commands;
use redcore::hooks::{Before, Hook, HookContext};
use redcore::{Cmd, Connection, Error, Value, cmd};
use redcore_test_support::RedisServer;
use redcore_test_support::client::{base, bulk, connect, run, text, within};

const SECOND: Duration = Duration::from_secs(1);

fn name_is(c: &Cmd, name: &str) -> bool {
    c.get(0)
        .is_some_and(|n| n.eq_ignore_ascii_case(name.as_bytes()))
}

/// Refuses `SET` (and pipelines holding one) without sending anything.
struct DenySet;

impl Hook for DenySet {
    fn before_command(&self, _: &HookContext<'_>, c: &mut Cmd) -> Before<Value> {
        if name_is(c, "SET") {
            return Before::Reply(Err(Error::Aborted("SET is denied".into())));
        }
        Before::Continue
    }

    fn before_pipeline(&self, _: &HookContext<'_>, cmds: &mut Vec<Cmd>) -> Before<Vec<Value>> {
        if cmds.iter().any(|c| name_is(c, "SET")) {
            return Before::Reply(Err(Error::Aborted("SET is denied".into())));
        }
        Before::Continue
    }
}

#[test]
fn rejecting_hook_sends_nothing() {
    let server = RedisServer::start();
    let config = base(server.port()).hook(DenySet).build().unwrap();
    run(move || async move {
        let conn = Connection::connect(config).await.unwrap();
        let before = conn.stats();
        let r = conn.command::<()>(["SET", "guarded", "x"]).await;
        assert!(
            matches!(&r, Err(Error::Aborted(why)) if why == "SET is denied"),
            "{r:?}"
        );
        let r = conn
            .pipeline([&["GET", "a"][..], &["SET", "guarded", "y"]])
            .await;
        assert!(matches!(r, Err(Error::Aborted(_))), "{r:?}");
        let r = conn.transaction([["SET", "guarded", "z"]]).await;
        assert!(matches!(r, Err(Error::Aborted(_))), "{r:?}");
        assert_eq!(conn.stats(), before, "a rejected command was sent");
        assert_eq!(server.cmd(&["EXISTS", "guarded"]), "0");
        // Other commands pass.
        let pong: String = conn.command(["PING"]).await.unwrap();
        assert_eq!(pong, "PONG");
    });
}

/// The hooks are documented to run around every command: a command sent
/// with `noreply_command` is a command too.
#[test]
fn rejecting_hook_also_guards_noreply_commands() {
    let server = RedisServer::start();
    let config = base(server.port()).hook(DenySet).build().unwrap();
    run(move || async move {
        let conn = Connection::connect(config).await.unwrap();
        let r = conn.noreply_command(["SET", "guarded", "x"]).await;
        let r2 = conn
            .noreply_pipeline([&["SET", "guarded2", "y"][..], &["GET", "guarded2"]])
            .await;
        let landed = server.cmd(&["EXISTS", "guarded", "guarded2"]);
        assert_eq!(
            landed, "0",
            "a SET the hook denies was sent through noreply_command ({r:?}) / \
             noreply_pipeline ({r2:?})"
        );
        assert!(matches!(r, Err(Error::Aborted(_))), "{r:?}");
    });
}

/// Puts every key of `SET`/`GET`/`DEL` under `ns:`.
struct Namespace;

fn prefixed(c: &Cmd) -> Cmd {
    if !["SET", "GET", "DEL"].iter().any(|n| name_is(c, n)) {
        return c.clone();
    }
    let mut out = Cmd::new();
    for (i, a) in c.iter().enumerate() {
        if i == 1 {
            out.push_arg([b"ns:".as_slice(), a].concat());
        } else {
            out.push_arg(a);
        }
    }
    out
}

impl Hook for Namespace {
    fn before_command(&self, _: &HookContext<'_>, c: &mut Cmd) -> Before<Value> {
        *c = prefixed(c);
        Before::Continue
    }

    fn before_pipeline(&self, _: &HookContext<'_>, cmds: &mut Vec<Cmd>) -> Before<Vec<Value>> {
        for c in cmds.iter_mut() {
            *c = prefixed(c);
        }
        Before::Continue
    }
}

#[test]
fn rewriting_hook_changes_what_is_sent() {
    let server = RedisServer::start();
    let config = base(server.port()).hook(Namespace).build().unwrap();
    run(move || async move {
        let conn = Connection::connect(config).await.unwrap();
        conn.command::<()>(["SET", "k", "v"]).await.unwrap();
        assert_eq!(server.cmd(&["GET", "ns:k"]), "v");
        assert_eq!(server.cmd(&["EXISTS", "k"]), "0");
        let v: String = conn.command(["GET", "k"]).await.unwrap();
        assert_eq!(v, "v");

        let r = conn
            .pipeline([&["SET", "p", "1"][..], &["GET", "p"]])
            .await
            .unwrap();
        assert_eq!(r[1], bulk("1"));
        conn.transaction([["SET", "t", "2"]]).await.unwrap();
        assert_eq!(server.cmd(&["MGET", "ns:p", "ns:t", "p", "t"]), "1\n2\n\n");
    });
}

/// Answers `GET cached` itself.
struct Cache;

impl Hook for Cache {
    fn before_command(&self, _: &HookContext<'_>, c: &mut Cmd) -> Before<Value> {
        if name_is(c, "GET") && c.get(1) == Some(b"cached".as_slice()) {
            return Before::Reply(Ok(bulk("from the hook")));
        }
        Before::Continue
    }
}

#[test]
fn short_circuit_hook_answers_without_sending() {
    let server = RedisServer::start();
    let config = base(server.port()).hook(Cache).build().unwrap();
    run(move || async move {
        let conn = Connection::connect(config).await.unwrap();
        server.cmd(&["SET", "cached", "from the server"]);
        let before = conn.stats();
        let v: String = conn.command(["GET", "cached"]).await.unwrap();
        assert_eq!(v, "from the hook");
        assert_eq!(conn.stats(), before);
        server.cmd(&["SET", "other", "from the server"]);
        let v: String = conn.command(["GET", "other"]).await.unwrap();
        assert_eq!(v, "from the server");
    });
}

type Log = Arc<Mutex<Vec<String>>>;

/// Records every call, optionally answers `ECHO stop-at-<name>` itself,
/// and appends `+<name>` to string results on the way back.
struct Recorder {
    name: &'static str,
    log: Log,
}

impl Recorder {
    fn note(&self, what: String) {
        self.log.lock().unwrap().push(what);
    }
}

impl Hook for Recorder {
    fn before_command(&self, ctx: &HookContext<'_>, c: &mut Cmd) -> Before<Value> {
        self.note(format!(
            "before {} db{} :{}",
            self.name, ctx.database, ctx.port
        ));
        if c.get(1) == Some(format!("stop-at-{}", self.name).as_bytes()) {
            return Before::Reply(Ok(bulk(self.name)));
        }
        Before::Continue
    }

    fn after_command(
        &self,
        _: &HookContext<'_>,
        _: &Cmd,
        result: Result<Value, Error>,
    ) -> Result<Value, Error> {
        self.note(format!("after {}", self.name));
        result.map(|v| bulk(&format!("{}+{}", text(&v), self.name)))
    }

    fn before_pipeline(&self, _: &HookContext<'_>, cmds: &mut Vec<Cmd>) -> Before<Vec<Value>> {
        let shown: Vec<String> = cmds.iter().map(|c| format!("{c:?}")).collect();
        self.note(format!("pipeline {} {}", self.name, shown.join(" ")));
        Before::Continue
    }

    fn after_pipeline(
        &self,
        _: &HookContext<'_>,
        _: &[Cmd],
        result: Result<Vec<Value>, Error>,
    ) -> Result<Vec<Value>, Error> {
        let n = result.as_ref().map_or(0, Vec::len);
        self.note(format!("after pipeline {} {n}", self.name));
        result
    }
}

#[test]
fn before_hooks_run_in_order_and_after_hooks_in_reverse() {
    let server = RedisServer::start();
    let port = server.port();
    let log: Log = Arc::default();
    let mut builder = base(port).database(2);
    for name in ["A", "B", "C"] {
        builder = builder.hook(Recorder {
            name,
            log: log.clone(),
        });
    }
    let config = builder.build().unwrap();
    let take = move || std::mem::take(&mut *log.lock().unwrap());
    run(move || async move {
        let conn = Connection::connect(config).await.unwrap();
        let v: String = conn.command(["ECHO", "x"]).await.unwrap();
        assert_eq!(v, "x+C+B+A");
        let ctx = format!("db2 :{port}");
        assert_eq!(
            take(),
            vec![
                format!("before A {ctx}"),
                format!("before B {ctx}"),
                format!("before C {ctx}"),
                "after C".to_owned(),
                "after B".to_owned(),
                "after A".to_owned(),
            ]
        );
        // B answers: C never runs, and only B and A see the result.
        let v: String = conn.command(["ECHO", "stop-at-B"]).await.unwrap();
        assert_eq!(v, "B+B+A");
        assert_eq!(
            take(),
            vec![
                format!("before A {ctx}"),
                format!("before B {ctx}"),
                "after B".to_owned(),
                "after A".to_owned(),
            ]
        );
        drop(server);
    });
}

#[test]
fn pipeline_hooks_see_pipelines_and_transactions() {
    let server = RedisServer::start();
    let log: Log = Arc::default();
    let config = base(server.port())
        .hook(Recorder {
            name: "P",
            log: log.clone(),
        })
        .build()
        .unwrap();
    let take = move || std::mem::take(&mut *log.lock().unwrap());
    run(move || async move {
        let conn = Connection::connect(config).await.unwrap();
        conn.pipeline([cmd("SET").arg("a").arg(1), cmd("GET").arg("a")])
            .await
            .unwrap();
        assert_eq!(
            take(),
            vec![
                r#"pipeline P ["SET", "a", "1"] ["GET", "a"]"#.to_owned(),
                "after pipeline P 2".to_owned(),
            ]
        );
        conn.transaction([["INCR", "x"]]).await.unwrap();
        assert_eq!(
            take(),
            vec![
                r#"pipeline P ["INCR", "x"]"#.to_owned(),
                "after pipeline P 1".to_owned(),
            ]
        );
        drop(server);
    });
}

#[test]
fn push_receiver_is_taken_once() {
    let server = RedisServer::start();
    run(move || async move {
        let conn = connect(&server).await;
        let first = conn.take_push_receiver();
        assert!(first.is_some());
        assert!(conn.take_push_receiver().is_none());
        assert!(conn.clone().take_push_receiver().is_none());
    });
}

#[test]
fn tracking_invalidations_arrive_as_pushes_between_replies() {
    let server = RedisServer::start();
    run(move || async move {
        let conn = connect(&server).await;
        let mut pushes = conn.take_push_receiver().unwrap();
        conn.command::<()>(["CLIENT", "TRACKING", "ON"])
            .await
            .unwrap();
        conn.command::<()>(["SET", "tracked", "start"])
            .await
            .unwrap();
        for round in 0..10 {
            // Reading the key (re)registers it for invalidation.
            let _: String = conn.command(["GET", "tracked"]).await.unwrap();
            let value = format!("round {round}");
            server.cmd(&["SET", "tracked", &value]);
            // Replies keep their pairing while the push is on its way.
            let mut tasks = Vec::new();
            for i in 0..10 {
                let c = conn.clone();
                tasks.push(spawn_local(async move {
                    let token = format!("{round}/{i}");
                    let echoed: String = c.command(["ECHO", token.as_str()]).await.unwrap();
                    echoed == token
                }));
            }
            for task in tasks {
                assert!(task.await, "a reply was paired with the wrong call");
            }
            let push = within("the invalidation push", 5 * SECOND, pushes.recv()).await;
            let expected = Value::Push(vec![
                bulk("invalidate"),
                Value::Array(vec![bulk("tracked")]),
            ]);
            assert_eq!(push, Some(expected), "round {round}");
            let now: String = conn.command(["GET", "tracked"]).await.unwrap();
            assert_eq!(now, value);
        }
        assert_eq!(pushes.dropped(), 0);
        assert!(
            pushes.try_recv().is_none(),
            "more pushes than invalidations"
        );
    });
}

#[test]
fn hibernated_connection_still_works() {
    let server = RedisServer::start();
    let config = base(server.port())
        .hibernate_after(Duration::from_millis(50))
        .build()
        .unwrap();
    run(move || async move {
        let conn = Connection::connect(config).await.unwrap();
        let big = "h".repeat(300_000);
        for round in 0..3 {
            // Being idle is what this test is about: the idle period is the
            // input, not a stand-in for an event.
            glommio::timer::sleep(Duration::from_millis(150)).await;
            let key = format!("big{round}");
            conn.command::<()>(["SET", key.as_str(), big.as_str()])
                .await
                .unwrap();
            glommio::timer::sleep(Duration::from_millis(150)).await;
            let back: String = conn.command(["GET", key.as_str()]).await.unwrap();
            assert_eq!(back.len(), big.len());
            assert!(back == big);
            glommio::timer::sleep(Duration::from_millis(150)).await;
            let mut tasks = Vec::new();
            for t in 0..20 {
                let c = conn.clone();
                tasks.push(spawn_local(async move {
                    let token = format!("{round}:{t}");
                    c.command::<String>(["ECHO", token.as_str()]).await.unwrap() == token
                }));
            }
            for task in tasks {
                assert!(task.await);
            }
        }
        assert!(conn.is_connected());
        assert_eq!(conn.stats().reconnects, 0);
    });
}
