//! Quick end-to-end check of the connection (superseded by the connection_* tests).
mod support;

use std::time::Duration;

use redcore::{Connection, Value};
use support::RedisServer;

fn run<F: std::future::Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(64 << 10)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn smoke() {
    let server = RedisServer::start();
    let url = format!("redis://127.0.0.1:{}", server.port());
    run(move || async move {
        let conn = Connection::connect(url.as_str()).await.unwrap();
        conn.command::<()>(["SET", "k", "v"]).await.unwrap();
        let v: String = conn.command(["GET", "k"]).await.unwrap();
        assert_eq!(v, "v");
        let r = conn
            .pipeline([["INCR", "n"], ["INCR", "n"], ["GET", "n"]])
            .await
            .unwrap();
        assert_eq!(r[2], Value::BulkString("2".into()));
        let mut tasks = Vec::new();
        for t in 0..100 {
            let c = conn.clone();
            tasks.push(glommio::spawn_local(async move {
                for i in 0..100 {
                    let key = format!("t{t}");
                    let n: i64 = c.command(["INCR", key.as_str()]).await.unwrap();
                    assert_eq!(n, i + 1);
                }
            }));
        }
        for t in tasks {
            t.await;
        }
        println!("{:?}", conn.stats());
        let e = conn
            .with_timeout(Duration::from_millis(100))
            .command::<()>(["DEBUG", "SLEEP", "0.3"])
            .await
            .unwrap_err();
        println!("{e}");
        let v: String = conn.command(["GET", "k"]).await.unwrap();
        assert_eq!(v, "v");
    });
}
