//! Pub/sub on one connection: a channel, a pattern over keyspace
//! notifications, a sharded channel, a slow subscriber that loses messages
//! and is told so, and an unsubscribe confirmed by the server.
//!
//! `cargo run --example pubsub -- redis://127.0.0.1:6379` (the URI is
//! optional; `tools/example.sh pubsub` starts a throwaway server and runs
//! this).

use redcore::config::ConnectionConfigBuilder;
use redcore::prelude::*;
use redcore::pubsub::Overflow;
use redcore::{Connection, PubSubEvent, Subscription};

/// Prints what a subscription holds now.
fn drain(name: &str, sub: &mut Subscription) {
    while let Some(event) = sub.try_recv() {
        match event {
            PubSubEvent::Message(m) => println!(
                "{name}: {} on {}{}",
                String::from_utf8_lossy(&m.payload),
                String::from_utf8_lossy(&m.channel),
                m.pattern
                    .map(|p| format!(" (pattern {})", String::from_utf8_lossy(&p)))
                    .unwrap_or_default()
            ),
            PubSubEvent::Gap(gap) => println!(
                "{name}: gap of {:?} ({:?} messages missed, {:?})",
                gap.to - gap.from,
                gap.missed,
                gap.cause
            ),
            PubSubEvent::Unsubscribed { name: n, error, .. } => {
                println!(
                    "{name}: {} unsubscribed ({error:?})",
                    String::from_utf8_lossy(&n)
                )
            }
        }
    }
}

async fn tour(url: &str) -> redcore::Result<()> {
    let config = ConnectionConfigBuilder::from_uri(url)?
        // A small queue, to show what a slow subscriber sees.
        .subscription_capacity(3, 1 << 20)
        .subscription_overflow(Overflow::DropOldest)
        .build()?;
    let conn = Connection::connect(config).await?;
    println!("connected speaking {:?}", conn.protocol());

    let mut news = conn.subscribe(["example:news"]).await?;
    let _: () = conn
        .command(["CONFIG", "SET", "notify-keyspace-events", "K$"])
        .await?;
    let mut keys = conn.psubscribe(["__keyspace@0__:example:*"]).await?;
    let mut shard = conn.ssubscribe(["example:{orders}"]).await?;

    let n = conn.publish("example:news", "hello").await?;
    println!("PUBLISH reached {n} subscriber(s)");
    conn.set("example:key", "v").await?;
    conn.spublish("example:{orders}", "order 1").await?;

    // On RESP3 the messages came on the socket these commands used: one
    // more round trip and they are all here.
    let _: String = conn.command(["PING"]).await?;
    drain("news", &mut news);
    drain("keys", &mut keys);
    drain("shard", &mut shard);

    // Five messages into a queue of three: the two oldest are dropped and
    // the reader is told how many.
    for i in 0..5 {
        conn.publish("example:news", format!("flood {i}")).await?;
    }
    let _: String = conn.command(["PING"]).await?;
    drain("news", &mut news);

    // Confirmed by the server: nothing of example:news arrives after it.
    news.unsubscribe().await?;
    let n = conn.publish("example:news", "nobody").await?;
    println!("after unsubscribing, PUBLISH reached {n} subscriber(s)");
    conn.del(&["example:key"]).await?;
    Ok(())
}

fn main() {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned());
    let result = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
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
