//! Client-side caching on a real standalone server (RESP3 tracking).

use std::time::{Duration, Instant};

use redcore::prelude::*;
use redcore::{CacheCommands, CacheOptions, Connection, Error, Protocol};
use redcore_test_support::RedisServer;
use redcore_test_support::client::{base, connect, run};

const TTL: Duration = Duration::from_secs(60);

async fn cached(server: &RedisServer) -> Connection {
    let config = base(server.port())
        .cache(CacheOptions::with_max_bytes(1 << 20))
        .build()
        .unwrap();
    Connection::connect(config).await.unwrap()
}

#[test]
fn a_second_read_is_a_hit_and_another_clients_write_invalidates_it() {
    let server = RedisServer::start();
    run(move || async move {
        let conn = cached(&server).await;
        let other = connect(&server).await;
        other.command::<()>(["SET", "k", "v1"]).await.unwrap();
        let v: Option<String> = conn.cached_get("k", TTL).await.unwrap();
        assert_eq!(v.as_deref(), Some("v1"));
        let v: Option<String> = conn.cached_get("k", TTL).await.unwrap();
        assert_eq!(v.as_deref(), Some("v1"));
        let s = conn.cache_stats().unwrap();
        assert_eq!((s.hits, s.misses), (1, 1));
        other.command::<()>(["SET", "k", "v2"]).await.unwrap();
        let written = Instant::now();
        let seen = loop {
            let v: Option<String> = conn.cached_get("k", TTL).await.unwrap();
            if v.as_deref() == Some("v2") {
                break written.elapsed();
            }
            assert!(written.elapsed() < Duration::from_secs(2), "still stale");
            glommio::timer::Timer::new(Duration::from_micros(100)).await;
        };
        println!("invalidation seen after {seen:?}");
    });
}

#[test]
fn own_write_then_read_returns_the_new_value() {
    let server = RedisServer::start();
    run(move || async move {
        let conn = cached(&server).await;
        for i in 0..200 {
            conn.command::<()>(["SET", "own", &i.to_string()])
                .await
                .unwrap();
            let v: String = conn.cached_get("own", TTL).await.unwrap();
            assert_eq!(v, i.to_string());
            let v: String = conn.cached_get("own", TTL).await.unwrap();
            assert_eq!(v, i.to_string());
        }
    });
}

#[test]
fn resp2_with_a_cache_is_refused() {
    let err = base(6379)
        .protocol(Protocol::Resp2)
        .cache(CacheOptions::default())
        .build()
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidConfig {
                option: "cache",
                ..
            }
        ),
        "{err}"
    );
}
