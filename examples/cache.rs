//! Client-side caching: cached reads answered from this core's memory,
//! kept true by the server's invalidations.
//!
//! `cargo run --example cache -- redis://127.0.0.1:6379` (the URI is
//! optional; `tools/example.sh cache` starts a throwaway server and runs
//! this).

use std::time::{Duration, Instant};

use redcore::{CacheCommands, CacheOptions, Commands, Connection};

async fn tour(url: &str) -> redcore::Result<()> {
    let mut config = redcore::config::parse_uri(url)?;
    config.cache = Some(CacheOptions::with_max_bytes(16 << 20));
    let conn = Connection::connect(config).await?;
    // Another client, without a cache, writes behind our back.
    let other = Connection::connect(url).await?;
    let ttl = Duration::from_secs(60);

    conn.command::<()>(["SET", "example:cached", "first"])
        .await?;
    let v: Option<String> = conn.cached_get("example:cached", ttl).await?;
    println!("miss: {v:?} (fetched with CLIENT CACHING YES + GET + PTTL)");

    let start = Instant::now();
    let mut last = None;
    for _ in 0..100_000 {
        last = conn
            .cached_get::<Option<String>>("example:cached", ttl)
            .await?;
    }
    println!(
        "100,000 hits in {:?}: {last:?}, no round trip",
        start.elapsed()
    );

    other
        .command::<()>(["SET", "example:cached", "second"])
        .await?;
    let written = Instant::now();
    let seen = loop {
        let v: Option<String> = conn.cached_get("example:cached", ttl).await?;
        if v.as_deref() == Some("second") {
            break written.elapsed();
        }
        glommio::timer::Timer::new(Duration::from_micros(50)).await;
    };
    println!("another client's write reached the cache after {seen:?}");

    conn.command::<()>(["SET", "example:cached", "third"])
        .await?;
    let v: Option<String> = conn.cached_get("example:cached", ttl).await?;
    println!("own write, then read: {v:?}");

    let stats = conn.cache_stats().expect("the connection has a cache");
    println!(
        "hits {} misses {} invalidations {} bytes {} of {}",
        stats.hits, stats.misses, stats.invalidations, stats.bytes, stats.max_bytes
    );
    conn.command::<()>(["DEL", "example:cached"]).await?;
    Ok(())
}

fn main() {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned());
    let result = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        // io_uring buffers count against RLIMIT_MEMLOCK: keep this small.
        .io_memory(64 << 10)
        .spawn(move || async move { tour(&url).await })
        .expect("start the executor")
        .join()
        .expect("the executor");
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
