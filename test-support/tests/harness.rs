//! Smoke tests of the test harness itself: every server kind really starts,
//! answers, and really stops.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use redcore::Commands;
use redcore::{Connection, Protocol};
use redcore_test_support::client::run;
use redcore_test_support::{
    Conn, FakeNode, FakeReply, RedisCluster, RedisServer, Reply, SLOTS, encode, key_in_slot,
    key_slot, keys_in_slot, missing_binary_message, process_alive, redis_cli_bin,
    rustls_client_config, wait_until,
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
    let out = Command::new(redis_cli_bin())
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

    let out = Command::new(redis_cli_bin())
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
    let heir = replica_of(&cluster, victim);
    // A slot move without a password (the other cluster test has one):
    // slot 0's master takes the last slot, with its key.
    let last = SLOTS - 1;
    let from = cluster.slot_owner_index(last);
    assert_ne!(from, victim);
    let key = key_in_slot(last, "last:");
    assert_eq!(cluster.node(from).cmd(&["SET", &key, "v"]), "OK");
    cluster.move_slot(last, from, victim);
    assert_eq!(cluster.node(victim).cmd(&["GET", &key]), "v");
    // Replication is asynchronous: the heir must hold the moved key before
    // its master dies, or it rightly takes over without it.
    let mut on_heir = cluster
        .node(heir)
        .connect()
        .expect("connect to the replica");
    assert_eq!(on_heir.call(&["READONLY"]).unwrap(), status("OK"));
    wait_until(
        "the replica to hold the moved key",
        Duration::from_secs(10),
        || on_heir.call(&["GET", &key]).unwrap().text() == "v",
    );
    drop(on_heir);

    let pid = cluster.node(victim).pid();
    cluster.kill_node(victim);
    wait_gone(pid);
    // The replica takes over slot 0, and the moved slot with it.
    let new_master = cluster.wait_for_new_master_of(0, victim, Duration::from_secs(30));
    assert_eq!(new_master, heir);
    assert_eq!(
        cluster.wait_for_new_master_of(last, victim, Instant::now()),
        heir,
        "an expired deadline still gets one look"
    );
    assert_eq!(cluster.node(heir).cmd(&["GET", &key]), "v");
    cluster.restart_node(victim);
    cluster.wait_healthy();
    // The old master came back as a replica.
    assert!(cluster.replica_indices().contains(&victim));
}

/// The replica of `master` (the clusters here have one per master).
fn replica_of(cluster: &RedisCluster, master: usize) -> usize {
    let id = cluster.node_id(master);
    let replica = cluster
        .cluster_nodes(master)
        .into_iter()
        .find(|n| n.master_id.as_deref() == Some(id.as_str()))
        .unwrap_or_else(|| panic!("node {master} has no replica"));
    cluster
        .node_index(replica.addr.expect("replica address"))
        .expect("replica is ours")
}

/// `(slot, address)` of a `-MOVED` or `-ASK` reply of the given kind.
fn redirect(reply: &Reply, kind: &str) -> Option<(u16, SocketAddr)> {
    let mut words = reply.error()?.split(' ');
    if words.next()? != kind {
        return None;
    }
    Some((words.next()?.parse().ok()?, words.next()?.parse().ok()?))
}

/// Every node agrees that `owner` serves `slot`; `owner` has every key
/// (value `v-<key>`) and `old` redirects them there.
fn check_owned(cluster: &RedisCluster, slot: u16, owner: usize, old: usize, keys: &[String]) {
    let owner_addr = cluster.node(owner).addr();
    for i in 0..cluster.len() {
        let view = cluster.cluster_nodes(i);
        let serving: Vec<_> = view.iter().filter(|n| n.serves(slot)).collect();
        assert_eq!(serving.len(), 1, "node {i}: {serving:?}");
        assert_eq!(serving[0].addr, Some(owner_addr), "node {i}");
    }
    for key in keys {
        assert_eq!(cluster.node(owner).cmd(&["GET", key]), format!("v-{key}"));
        let reply = cluster.node(old).call(&["GET", key]);
        assert_eq!(redirect(&reply, "MOVED"), Some((slot, owner_addr)), "{key}");
    }
}

#[test]
fn cluster_slot_migration_and_manual_failover() {
    // A password: MIGRATE must carry it to the target.
    let cluster = RedisCluster::builder().password("mig pw").start();
    for i in 0..cluster.len() {
        let id = cluster.node_id(i);
        assert!(
            id.len() == 40 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "{id}"
        );
        let me = cluster.cluster_nodes(i).into_iter().find(|n| n.is_myself());
        assert_eq!(me.map(|n| n.id), Some(id));
    }

    // Step by step: half the keys moved, then the rest, then the slot.
    let slot = key_slot(b"step");
    let from = cluster.slot_owner_index(slot);
    let to = *cluster
        .master_indices()
        .iter()
        .find(|&&m| m != from)
        .expect("another master");
    let (from_addr, to_addr) = (cluster.node(from).addr(), cluster.node(to).addr());
    let keys = keys_in_slot(slot, 4, "step:");
    for key in &keys {
        assert_eq!(
            cluster.node(from).cmd(&["SET", key, &format!("v-{key}")]),
            "OK"
        );
    }
    cluster.begin_migration(slot, from, to);
    cluster.migrate_keys(slot, from, to, &keys[..2]);
    // The source sends moved keys on with ASK and still serves the others.
    let ask = cluster.node(from).call(&["GET", &keys[0]]);
    assert_eq!(redirect(&ask, "ASK"), Some((slot, to_addr)), "{ask:?}");
    assert_eq!(
        cluster.node(from).cmd(&["GET", &keys[2]]),
        format!("v-{}", keys[2])
    );
    // The target serves them only after ASKING.
    let mut conn = cluster.node(to).admin_conn().unwrap();
    let moved = conn.call(&["GET", &keys[0]]).unwrap();
    assert_eq!(
        redirect(&moved, "MOVED"),
        Some((slot, from_addr)),
        "{moved:?}"
    );
    assert_eq!(conn.call(&["ASKING"]).unwrap(), status("OK"));
    assert_eq!(
        conn.call(&["GET", &keys[0]]).unwrap(),
        Reply::Bulk(format!("v-{}", keys[0]).into_bytes())
    );
    cluster.migrate_keys(slot, from, to, &keys[2..]);
    cluster.finish_migration(slot, to);
    check_owned(&cluster, slot, to, from, &keys);

    // In one call, a slot with more keys than one GETKEYSINSLOT batch.
    // From the third master to the first source.
    let (a, b) = (
        *cluster
            .master_indices()
            .iter()
            .find(|&&m| m != from && m != to)
            .expect("a third master"),
        from,
    );
    let big = cluster
        .cluster_nodes(a)
        .into_iter()
        .find(|n| n.is_myself())
        .expect("myself")
        .slots[0]
        .1;
    let big_keys = keys_in_slot(big, 250, "big:");
    let mut mset = vec!["MSET".to_owned()];
    for key in &big_keys {
        mset.extend([key.clone(), format!("v-{key}")]);
    }
    let mset: Vec<&str> = mset.iter().map(String::as_str).collect();
    assert_eq!(cluster.node(a).cmd(&mset), "OK");
    cluster.move_slot(big, a, b);
    check_owned(&cluster, big, b, a, &big_keys);
    let count = |i: usize| {
        cluster
            .node(i)
            .cmd(&["CLUSTER", "COUNTKEYSINSLOT", &big.to_string()])
    };
    assert_eq!((count(a), count(b)), ("0".to_owned(), "250".to_owned()));

    // Manual failover of the master that got `slot`.
    let replica = replica_of(&cluster, to);
    assert_eq!(cluster.failover(replica), to);
    let role = |i: usize| cluster.node(i).call(&["ROLE"]).items()[0].text();
    assert_eq!(
        (role(replica), role(to)),
        ("master".to_owned(), "slave".to_owned())
    );
    assert!(cluster.master_indices().contains(&replica));
    assert!(cluster.replica_indices().contains(&to));
    check_owned(&cluster, slot, replica, to, &keys);
    // The old master follows the new one: the cluster is whole again.
    cluster.wait_healthy();
}

#[test]
fn keys_in_slot_land_in_their_slot() {
    for slot in [0, 1, 5460, 8000, 16383] {
        let keys = keys_in_slot(slot, 5, "k:");
        assert_eq!(keys.len(), 5);
        assert_eq!(keys[0], key_in_slot(slot, "k:"));
        let unique: std::collections::BTreeSet<_> = keys.iter().collect();
        assert_eq!(unique.len(), keys.len(), "{keys:?}");
        for key in &keys {
            assert!(key.starts_with("k:"), "{key}");
            assert_eq!(key_slot(key.as_bytes()), slot, "{key}");
        }
    }
    // A hash tag of the slot makes every candidate fit.
    let tag = key_in_slot(42, "");
    assert_eq!(
        key_in_slot(42, &format!("{{{tag}}}:")),
        format!("{{{tag}}}:0")
    );
    // A hash tag of another slot never fits.
    assert_ne!(key_slot(b"zzz"), 42);
    let err = std::panic::catch_unwind(|| key_in_slot(42, "{zzz}")).unwrap_err();
    let msg = err.downcast_ref::<String>().expect("a message");
    assert!(msg.contains("slot 42"), "{msg}");
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
    let msg = missing_binary_message("redis-server");
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

fn bulk(b: &str) -> Reply {
    Reply::Bulk(b.as_bytes().to_vec())
}

fn unknown_command(reply: &Reply, name: &str) -> bool {
    reply
        .error()
        .is_some_and(|e| e.starts_with(&format!("ERR unknown command '{name}'")))
}

#[test]
fn fake_node_answers_scripts_and_defaults() {
    let node = FakeNode::start_with(|call| {
        if call.is("GET") {
            FakeReply::Raw(b"$3\r\nbar\r\n".to_vec())
        } else if call.is("CLUSTER SLOTS") {
            let port = i64::from(call.node.port());
            FakeReply::Value(Reply::Array(vec![Reply::Array(vec![
                Reply::Integer(0),
                Reply::Integer(16383),
                Reply::Array(vec![bulk("127.0.0.1"), Reply::Integer(port)]),
            ])]))
        } else if call.is("WHO") {
            FakeReply::int(call.conn as i64)
        } else if call.is("MOVEME") {
            FakeReply::moved(7, call.node)
        } else if call.is("SLOW") {
            FakeReply::after(Duration::from_millis(30), FakeReply::bulk("late"))
        } else if call.is("NOTHING") {
            FakeReply::Silent
        } else if call.is("BYE") {
            FakeReply::Close
        } else {
            FakeReply::Default
        }
    });
    assert_eq!(node.addr().port(), node.port());
    assert_eq!(node.addr().ip().to_string(), "127.0.0.1");
    let mut conn = Conn::tcp(node.addr(), Duration::from_secs(10)).unwrap();

    // The defaults a client's handshake meets.
    let hello = conn.call(&["HELLO", "3"]).unwrap();
    assert!(unknown_command(&hello, "HELLO"), "{hello:?}");
    for ok in [
        &["AUTH", "pw"][..],
        &["AUTH", "user", "pw"],
        &["SELECT", "1"],
        &["CLIENT", "SETNAME", "me"],
        &["client", "setinfo", "LIB-NAME", "redcore"],
        &["READONLY"],
        &["ASKING"],
    ] {
        assert_eq!(conn.call(ok).unwrap(), status("OK"), "{ok:?}");
    }
    assert_eq!(conn.call(&["PING"]).unwrap(), status("PONG"));
    assert_eq!(conn.call(&["PING", "hi"]).unwrap(), bulk("hi"));
    let other = conn.call(&["FLUSHALL"]).unwrap();
    assert!(unknown_command(&other, "FLUSHALL"), "{other:?}");
    let other = conn.call(&["CLIENT", "ID"]).unwrap();
    assert!(unknown_command(&other, "CLIENT"), "{other:?}");

    // Scripted replies.
    assert_eq!(conn.call(&["get", "k"]).unwrap(), bulk("bar"));
    let slots = conn.call(&["CLUSTER", "SLOTS"]).unwrap();
    let port = i64::from(node.port());
    assert_eq!(slots.items()[0].items()[2].items()[1], Reply::Integer(port));
    assert_eq!(
        conn.call(&["MOVEME"]).unwrap(),
        Reply::Error(format!("MOVED 7 {}", node.addr()))
    );
    let started = Instant::now();
    assert_eq!(conn.call(&["SLOW"]).unwrap(), bulk("late"));
    assert!(started.elapsed() >= Duration::from_millis(30));
    // Silent: no reply, the next command answers next.
    conn.send(&["NOTHING"]).unwrap();
    assert_eq!(conn.call(&["WHO"]).unwrap(), Reply::Integer(0));
    // Pipelined and inline commands, answered in order.
    let mut batch = encode(&["GET", "a"]);
    batch.extend(encode(&["PING", "x"]));
    batch.extend(b"PING\r\n");
    batch.extend(encode(&["WHO"]));
    conn.send_raw(&batch).unwrap();
    for want in [bulk("bar"), bulk("x"), status("PONG"), Reply::Integer(0)] {
        assert_eq!(conn.read_reply().unwrap(), want);
    }
    // Unasked bytes.
    node.push(0, b"+pushed\r\n").unwrap();
    assert_eq!(conn.read_reply().unwrap(), status("pushed"));

    // Counts and the log, across connections.
    let mut second = Conn::tcp(node.addr(), Duration::from_secs(10)).unwrap();
    assert_eq!(second.call(&["WHO"]).unwrap(), Reply::Integer(1));
    assert_eq!(node.connections(), 2);
    assert_eq!(node.count("GET"), 2);
    assert_eq!(node.count("get"), 2);
    assert_eq!(node.count("WHO"), 3);
    assert_eq!(node.count("PING"), 4);
    assert_eq!(node.count("CLIENT"), 3);
    assert_eq!(node.count("CLIENT SETINFO"), 1);
    assert_eq!(node.count("CLUSTER SLOTS"), 1);
    assert_eq!(node.count("CLUSTER NODES"), 0);
    let received = node.received();
    assert_eq!(received[0], (0, vec![b"HELLO".to_vec(), b"3".to_vec()]));
    assert_eq!(received.last().unwrap(), &(1, vec![b"WHO".to_vec()]));
    assert_eq!(node.received_names().len(), received.len());

    // Close: the client sees the end of the stream.
    assert!(conn.call(&["BYE"]).is_err());
    assert_eq!(second.call(&["PING"]).unwrap(), status("PONG"));
    node.close_all();
    assert!(second.call(&["PING"]).is_err());
    // A protocol error is answered, then the connection is closed.
    let mut third = Conn::tcp(node.addr(), Duration::from_secs(10)).unwrap();
    third.send_raw(b"*1\r\n:5\r\n").unwrap();
    let reply = third.read_reply().unwrap();
    assert!(
        reply
            .error()
            .is_some_and(|e| e.starts_with("ERR Protocol error")),
        "{reply:?}"
    );
    assert!(third.read_reply().is_err());
    // QUIT: +OK, then closed.
    let mut fourth = Conn::tcp(node.addr(), Duration::from_secs(10)).unwrap();
    assert_eq!(fourth.call(&["QUIT"]).unwrap(), status("OK"));
    assert!(fourth.read_reply().is_err());
    assert_eq!(node.connections(), 4);
}

/// Names of this process's threads that belong to the fake node on `port`
/// (thread names are cut to 15 bytes: `fake-node-<port>`).
fn fake_node_threads(port: u16) -> usize {
    let prefix = format!("fake-node-{port}");
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim_end().starts_with(&prefix))
        .count()
}

#[test]
fn fake_node_drop_stops_every_thread() {
    let node = FakeNode::start(|args| match args[0].as_slice() {
        b"HANG" => FakeReply::Silent,
        b"LATER" => FakeReply::after(Duration::from_secs(600), FakeReply::ok()),
        _ => FakeReply::Default,
    });
    let (addr, port) = (node.addr(), node.port());
    let mut idle = Conn::tcp(addr, Duration::from_secs(10)).unwrap();
    assert_eq!(idle.call(&["PING"]).unwrap(), status("PONG"));
    let mut hung = Conn::tcp(addr, Duration::from_secs(10)).unwrap();
    hung.send(&["HANG"]).unwrap();
    let mut waiting = Conn::tcp(addr, Duration::from_secs(10)).unwrap();
    waiting.send(&["LATER"]).unwrap();
    wait_until("three connections", Duration::from_secs(10), || {
        node.count("LATER") == 1 && node.count("HANG") == 1
    });
    // The acceptor and one thread per connection.
    assert_eq!(fake_node_threads(port), 4);
    let started = Instant::now();
    drop(node);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(fake_node_threads(port), 0);
    for conn in [&mut idle, &mut hung, &mut waiting] {
        assert!(conn.read_reply().is_err(), "the socket is closed");
    }
    assert!(
        Conn::tcp(addr, Duration::from_secs(1)).is_err(),
        "nothing listens"
    );
}

#[test]
fn fake_node_handler_panics_close_the_socket_and_fail_the_drop() {
    let node = FakeNode::start(|args| match args[0].as_slice() {
        b"BOOM" => panic!("scripted panic"),
        _ => FakeReply::Default,
    });
    let mut conn = Conn::tcp(node.addr(), Duration::from_secs(10)).unwrap();
    assert!(conn.call(&["BOOM"]).is_err(), "closed, not hung");
    let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(node))).unwrap_err();
    assert_eq!(err.downcast_ref::<&str>(), Some(&"scripted panic"));
}

#[test]
fn fake_node_defaults_carry_a_real_client_through_its_handshake() {
    let node = FakeNode::start(|args| {
        if args[0].eq_ignore_ascii_case(b"GET") {
            FakeReply::bulk("from-fake")
        } else {
            FakeReply::Default
        }
    });
    let url = format!("redis://{}", node.addr());
    run(move || async move {
        let conn = Connection::connect(url)
            .await
            .expect("handshake with defaults");
        assert_eq!(conn.protocol(), Protocol::Resp2);
        let value: String = conn.command(["GET", "k"]).await.unwrap();
        assert_eq!(value, "from-fake");
    });
    assert_eq!(node.count("HELLO"), 1);
    assert_eq!(node.count("GET"), 1);
}
