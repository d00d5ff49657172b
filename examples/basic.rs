//! A first program: connect, write, read, pipeline, transaction, and many
//! tasks sharing one auto-pipelined connection.
//!
//! `cargo run --example basic -- redis://127.0.0.1:6379` (the URI is
//! optional; `tools/example.sh` starts a throwaway server and runs this).

use std::time::Instant;

use redcore::Commands;
use redcore::{Connection, Value, Watch, cmd};

async fn tour(url: &str) -> redcore::Result<()> {
    let conn = Connection::connect(url).await?;
    println!("connected to {url} speaking {:?}", conn.protocol());

    conn.command::<()>(["SET", "example:greeting", "hello"])
        .await?;
    let greeting: String = conn.command(["GET", "example:greeting"]).await?;
    println!("GET example:greeting -> {greeting}");

    let replies = conn
        .pipeline([
            cmd("INCR").arg("example:counter"),
            cmd("INCRBY").arg("example:counter").arg(10),
            cmd("GET").arg("example:counter"),
        ])
        .await?;
    println!("pipeline -> {replies:?}");

    let results = conn
        .transaction([
            cmd("SET").arg("example:a").arg(1),
            cmd("INCR").arg("example:a"),
        ])
        .await?;
    println!("transaction -> {results:?}");

    let moved = conn
        .watch_transaction(&["example:a"], async |c: &Connection| {
            let a: i64 = c.command(["GET", "example:a"]).await?;
            Ok(Watch::Exec(vec![cmd("SET").arg("example:a").arg(a * 10)]))
        })
        .await?;
    println!("watch transaction -> {moved:?}");

    // 100 tasks share the connection; their commands travel in batches.
    let start = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..100 {
        let conn = conn.clone();
        tasks.push(glommio::spawn_local(async move {
            let key = format!("example:task:{t}");
            for _ in 0..100 {
                conn.command::<i64>(["INCR", key.as_str()]).await?;
            }
            conn.command::<i64>(["DEL", key.as_str()]).await
        }));
    }
    for t in tasks {
        t.await?;
    }
    let stats = conn.stats();
    println!(
        "10,000 INCRs from 100 tasks in {:?}: {} calls went out in {} writes",
        start.elapsed(),
        stats.calls,
        stats.writes
    );
    let _: Value = conn
        .command(["DEL", "example:greeting", "example:counter", "example:a"])
        .await?;
    Ok(())
}

fn main() {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned());
    let result = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        // Keep the registered-buffer arena small: io_uring buffers count
        // against RLIMIT_MEMLOCK.
        .io_memory(64 << 10)
        .spawn(move || async move { tour(&url).await })
        .expect("start a glommio executor")
        .join()
        .expect("the executor thread");
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
