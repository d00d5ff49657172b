//! Smoke tests of the test harness itself: every server kind really starts,
//! answers, and really stops.

mod support;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use support::{
    Conn, RedisCluster, RedisServer, Reply, key_slot, process_alive, rustls_client_config,
    wait_until,
};

fn status(s: &str) -> Reply {
    Reply::Status(s.to_owned())
}

fn wait_gone(pid: u32) {
    wait_until(
        &format!("process {pid} to exit"),
        Duration::from_secs(10),
        || !process_alive(pid),
    );
}

#[test]
fn standalone_answers_ping() {
    let server = RedisServer::start();
    assert_eq!(server.host(), "127.0.0.1");
    assert_eq!(server.addr().port(), server.port());
    let mut conn = server.connect().unwrap();
    assert_eq!(conn.call(&["PING"]).unwrap(), status("PONG"));
    assert_eq!(server.cmd(&["SET", "k", "v"]), "OK");
    assert_eq!(server.cmd(&["GET", "k"]), "v");
    // The harness's fixed settings are in effect.
    assert_eq!(server.cmd(&["CONFIG", "GET", "save"]), "save\n");
    assert_eq!(
        server.cmd(&["CONFIG", "GET", "appendonly"]),
        "appendonly\nno"
    );
    assert_eq!(server.cmd(&["DEBUG", "SLEEP", "0"]), "OK");
    assert!(process_alive(server.pid()));
}

#[test]
fn password_server_requires_auth() {
    let server = RedisServer::builder().password("s3cret pass").start();
    let mut conn = server.connect().unwrap();
    let reply = conn.call(&["PING"]).unwrap();
    assert!(
        reply.error().is_some_and(|e| e.starts_with("NOAUTH")),
        "{reply:?}"
    );
    let reply = conn.call(&["AUTH", "wrong"]).unwrap();
    assert!(
        reply.error().is_some_and(|e| e.starts_with("WRONGPASS")),
        "{reply:?}"
    );
    assert_eq!(conn.call(&["AUTH", "s3cret pass"]).unwrap(), status("OK"));
    assert_eq!(conn.call(&["PING"]).unwrap(), status("PONG"));
    // The harness's own helper authenticates by itself.
    assert_eq!(server.cmd(&["PING"]), "PONG");
}

#[test]
fn acl_users_authenticate_and_are_restricted() {
    let server = RedisServer::builder()
        .acl_user("alice", "alice-pw")
        .acl_user_rules("reader", "on >reader-pw ~public:* +get +ping")
        .start();
    let mut conn = server.connect().unwrap();
    let reply = conn.call(&["AUTH", "alice", "nope"]).unwrap();
    assert!(
        reply.error().is_some_and(|e| e.starts_with("WRONGPASS")),
        "{reply:?}"
    );
    assert_eq!(
        conn.call(&["AUTH", "alice", "alice-pw"]).unwrap(),
        status("OK")
    );
    assert_eq!(
        conn.call(&["ACL", "WHOAMI"]).unwrap(),
        Reply::Bulk(b"alice".to_vec())
    );
    assert_eq!(conn.call(&["SET", "public:x", "1"]).unwrap(), status("OK"));

    let mut reader = server.connect().unwrap();
    assert_eq!(
        reader.call(&["AUTH", "reader", "reader-pw"]).unwrap(),
        status("OK")
    );
    assert_eq!(
        reader.call(&["GET", "public:x"]).unwrap(),
        Reply::Bulk(b"1".to_vec())
    );
    let reply = reader.call(&["SET", "public:x", "2"]).unwrap();
    assert!(
        reply.error().is_some_and(|e| e.starts_with("NOPERM")),
        "{reply:?}"
    );
    let reply = reader.call(&["GET", "secret"]).unwrap();
    assert!(
        reply.error().is_some_and(|e| e.starts_with("NOPERM")),
        "{reply:?}"
    );
}

#[test]
fn default_user_can_be_disabled_with_an_admin_user() {
    let server = RedisServer::builder()
        .acl_user("admin", "admin-pw")
        .admin_user("admin", "admin-pw")
        .config("user default off")
        .start();
    let reply = server.connect().unwrap().call(&["PING"]).unwrap();
    assert!(reply.is_error(), "{reply:?}");
    assert_eq!(server.cmd(&["ACL", "WHOAMI"]), "admin");
}

#[test]
fn unix_socket_answers_ping() {
    let server = RedisServer::builder().unix_socket().start();
    let path = server.unix_path().expect("unix path");
    assert!(path.starts_with(server.dir()));
    let mode = std::fs::metadata(path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "socket mode {mode:o}");
    let mut conn = server.connect_unix().unwrap();
    assert_eq!(conn.call(&["PING"]).unwrap(), status("PONG"));
    // TCP still works alongside.
    assert_eq!(server.cmd(&["PING"]), "PONG");
}

#[test]
fn tls_server_answers_ping() {
    let server = RedisServer::builder().tls().start();
    let tls = server.tls().expect("tls material");
    assert!(!server.has_plain_port());
    assert_eq!(server.tls_port(), Some(server.port()));
    assert!(server.url().starts_with("rediss://"));
    for file in [
        &tls.ca_cert,
        &tls.server_cert,
        &tls.client_cert,
        &tls.other_ca_cert,
    ] {
        assert_eq!(std::fs::read_to_string(&file.path).unwrap(), file.pem);
        assert!(file.pem.starts_with("-----BEGIN CERTIFICATE-----"));
    }
    assert!(tls.client_key.pem.contains("PRIVATE KEY"));

    // redis-cli with only the CA (tls-auth-clients optional).
    let out = Command::new(support::redis_cli_bin())
        .args(["--tls", "--cacert"])
        .arg(&tls.ca_cert.path)
        .args(["-h", "127.0.0.1", "-p", &server.port().to_string(), "PING"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "PONG",
        "{out:?}"
    );
    // redis-cli with a client certificate, via the harness's argument helper.
    assert_eq!(server.redis_cli(&["PING"]).trim(), "PONG");
    // rustls, with and without client certificate.
    assert_eq!(server.cmd(&["PING"]), "PONG");
    let mut conn = server
        .connect_tls(rustls_client_config(&tls.ca_cert, None))
        .unwrap();
    assert_eq!(conn.call(&["PING"]).unwrap(), status("PONG"));
}

#[test]
fn tls_fails_with_wrong_ca_or_plaintext() {
    let server = RedisServer::builder().tls().start();
    let tls = server.tls().unwrap();
    let err = server
        .connect_tls(rustls_client_config(&tls.other_ca_cert, None))
        .err()
        .expect("handshake must fail with an unrelated CA");
    assert!(err.to_string().contains("certificate"), "{err}");

    let out = Command::new(support::redis_cli_bin())
        .args(["--tls", "--cacert"])
        .arg(&tls.other_ca_cert.path)
        .args(["-h", "127.0.0.1", "-p", &server.port().to_string(), "PING"])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("PONG"), "{text}");

    // Plain RESP to the TLS port gets no reply.
    let mut plain = Conn::tcp(server.addr(), Duration::from_secs(2)).unwrap();
    assert!(plain.call(&["PING"]).is_err());
}

#[test]
fn tls_server_can_require_client_certificates() {
    let server = RedisServer::builder()
        .tls_and_plain()
        .config("tls-auth-clients yes")
        .start();
    let tls = server.tls().unwrap();
    assert!(server.has_plain_port());
    assert_ne!(server.tls_port(), Some(server.port()));
    assert_eq!(server.cmd(&["PING"]), "PONG");

    let mut good = server.connect_tls(tls.client_config()).unwrap();
    assert_eq!(good.call(&["PING"]).unwrap(), status("PONG"));
    let untrusted = rustls_client_config(
        &tls.ca_cert,
        Some((&tls.untrusted_client_cert, &tls.untrusted_client_key)),
    );
    // With TLS 1.3 the server's rejection of the client certificate arrives
    // after the client finished its handshake: the first exchange fails.
    let rejected = server
        .connect_tls(untrusted)
        .and_then(|mut c| c.call(&["PING"]));
    assert!(rejected.is_err(), "{rejected:?}");
    let anonymous = server
        .connect_tls(rustls_client_config(&tls.ca_cert, None))
        .and_then(|mut c| c.call(&["PING"]));
    assert!(anonymous.is_err(), "{anonymous:?}");
}

#[test]
fn extra_config_lines_apply() {
    let server = RedisServer::builder()
        .config("rename-command HELLO \"\"")
        .start();
    let reply = server.call(&["HELLO", "3"]);
    assert!(
        reply.error().is_some_and(|e| e.contains("unknown command")),
        "{reply:?}"
    );
    assert_eq!(server.cmd(&["PING"]), "PONG");
}

#[test]
fn cluster_reaches_ok_with_three_masters_and_three_replicas() {
    let cluster = RedisCluster::start();
    assert_eq!(cluster.len(), 6);
    assert_eq!(cluster.masters().len(), 3);
    assert_eq!(cluster.replicas().len(), 3);
    assert_eq!(cluster.seed_addrs().len(), 6);
    cluster.health().unwrap();
    for i in 0..cluster.len() {
        let info = cluster.node(i).cmd(&["CLUSTER", "INFO"]);
        assert!(info.contains("cluster_state:ok"), "{info}");
        assert!(info.contains("cluster_slots_ok:16384"), "{info}");
    }
    let view = cluster.cluster_nodes(0);
    let covered: u32 = view
        .iter()
        .filter(|n| n.is_master())
        .map(|n| n.slot_count())
        .sum();
    assert_eq!(covered, 16384);
    for replica in cluster.replica_indices() {
        let node = cluster.node(replica);
        assert_eq!(
            node.info_field("replication", "role").as_deref(),
            Some("slave")
        );
        assert_eq!(
            node.info_field("replication", "master_link_status")
                .as_deref(),
            Some("up")
        );
    }
    // Slot helpers agree with the server.
    for key in ["foo", "{user1000}.following", "a{}b", "{}{x}", "key:{tag}"] {
        let slot = cluster.node(0).cmd(&["CLUSTER", "KEYSLOT", key]);
        assert_eq!(slot, key_slot(key.as_bytes()).to_string(), "{key}");
    }
    let owner = cluster.node_for_key("foo");
    assert_eq!(owner.cmd(&["SET", "foo", "bar"]), "OK");
    let slot = key_slot(b"foo").to_string();
    assert_eq!(owner.cmd(&["CLUSTER", "COUNTKEYSINSLOT", &slot]), "1");
    assert!(
        cluster
            .masters()
            .contains(&cluster.slot_owner(key_slot(b"foo")))
    );
}

#[test]
fn cluster_node_kill_failover_and_restart() {
    let mut cluster = RedisCluster::builder().node_timeout_ms(1000).start();
    let victim = cluster.slot_owner_index(0);
    let victim_addr = cluster.node(victim).addr();
    let pid = cluster.node(victim).pid();
    cluster.kill_node(victim);
    wait_gone(pid);
    // A replica takes over slot 0.
    wait_until("failover of slot 0", Duration::from_secs(30), || {
        (0..cluster.len()).filter(|&i| i != victim).all(|i| {
            let view = cluster.node(i).call(&["CLUSTER", "NODES"]).text();
            support::ClusterNodeInfo::parse_all(&view)
                .iter()
                .any(|n| n.is_master() && n.serves(0) && n.addr != Some(victim_addr))
        })
    });
    cluster.restart_node(victim);
    cluster.wait_healthy();
    // The old master came back as a replica.
    assert!(cluster.replica_indices().contains(&victim));
}

#[test]
fn dropping_a_server_stops_the_process() {
    let server = RedisServer::start();
    let pid = server.pid();
    assert!(process_alive(pid));
    let dir = server.dir().to_owned();
    drop(server);
    wait_gone(pid);
    assert!(!dir.exists(), "temp dir {dir:?} left behind");
}

#[test]
fn kill_and_restart_a_server() {
    let mut server = RedisServer::builder().password("p").start();
    let (port, pid) = (server.port(), server.pid());
    server.kill();
    wait_gone(pid);
    assert!(!server.is_running());
    server.restart();
    assert!(server.is_running());
    assert_eq!(server.port(), port);
    assert_ne!(server.pid(), pid);
    assert_eq!(server.cmd(&["PING"]), "PONG");
}

#[test]
fn concurrent_servers_get_different_ports() {
    let barrier = Arc::new(Barrier::new(4));
    let servers: Vec<RedisServer> = (0..4)
        .map(|_| {
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                RedisServer::start()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    let mut ports: Vec<u16> = servers.iter().map(RedisServer::port).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 4, "{ports:?}");
    // The spawning threads have exited; the servers must still be alive
    // (PDEATHSIG is tied to the harness's spawner thread, not to them).
    for server in &servers {
        assert_eq!(server.cmd(&["PING"]), "PONG");
    }
}

const ORPHAN_ENV: &str = "REDCORE_HARNESS_ORPHAN_CHILD";

/// Helper run as a child process by `killed_test_process_takes_its_servers_along`.
#[test]
#[ignore = "helper process of killed_test_process_takes_its_servers_along"]
fn orphan_child() {
    if std::env::var_os(ORPHAN_ENV).is_none() {
        return;
    }
    let server = RedisServer::start();
    println!("SERVER_DIR={}", server.dir().display());
    println!("SERVER_PID={}", server.pid());
    // Wait to be SIGKILLed by the parent test (bounded, in case it is not).
    thread::sleep(Duration::from_secs(60));
}

#[test]
fn killed_test_process_takes_its_servers_along() {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "orphan_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ORPHAN_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // libtest prints "test orphan_child ... " before the test's own output.
    let mut dir = None;
    let mut pid = None;
    for line in BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
    {
        if let Some((_, d)) = line.split_once("SERVER_DIR=") {
            dir = Some(std::path::PathBuf::from(d.trim()));
        }
        if let Some((_, p)) = line.split_once("SERVER_PID=") {
            pid = p.trim().parse::<u32>().ok();
            break;
        }
    }
    let (Some(dir), Some(pid)) = (dir, pid) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("child printed no SERVER_DIR/SERVER_PID");
    };
    assert!(process_alive(pid));
    child.kill().unwrap();
    child.wait().unwrap();
    wait_gone(pid);
    // The killed child could not clean up its temp dir.
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn missing_binary_message_names_the_install_command() {
    let msg = support::missing_binary_message("redis-server");
    assert!(
        msg.contains("apt-get install redis-server redis-tools"),
        "{msg}"
    );
    assert!(msg.contains("Redis >= 7"), "{msg}");
}

#[test]
fn a_taken_port_is_reported_not_mistaken_for_ours() {
    let first = RedisServer::start();
    // Force every attempt onto the taken port: the second server must fail
    // to bind, and the first server answering there must not count as ready.
    let err = RedisServer::builder()
        .config(&format!("port {}", first.port()))
        .try_start()
        .expect_err("second server must not start on a taken port");
    assert!(err.contains("Address already in use"), "{err}");
    assert_eq!(first.cmd(&["PING"]), "PONG");
}

#[test]
fn a_bad_config_fails_fast_with_the_server_output() {
    let err = RedisServer::builder()
        .config("no-such-directive yes")
        .try_start()
        .expect_err("bad config must not start");
    assert!(err.contains("no-such-directive"), "{err}");
    assert!(err.contains("FATAL CONFIG FILE ERROR"), "{err}");
}
