//! Broken and hostile server bytes, from a scripted fake node (a real server
//! never sends these): every call gets an error, nothing hangs or panics,
//! nothing allocates what the bytes merely claim, and the connection
//! recovers on a new socket.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use bytes::BytesMut;
use redcore::Commands;
use redcore::resp::Decoder;
use redcore::{Connection, ConnectionConfig, Error, Value};
use redcore_test_support::client::{run, wait_until};

/// What the fake node sends back for the first command after the
/// handshake on its first socket. Later sockets answer every command with
/// `$2 ok`.
#[derive(Clone, Copy)]
enum Script {
    /// Send these bytes as the reply.
    Reply(&'static [u8]),
    /// Send these bytes, then close the socket.
    ReplyThenClose(&'static [u8]),
    /// Right after the handshake, send these bytes unasked.
    Unsolicited(&'static [u8]),
    /// A moment after the handshake, while the client is idle, send these
    /// bytes unasked.
    UnsolicitedWhenIdle(&'static [u8]),
}

/// A fake Redis node on a loopback port. It answers the handshake (HELLO
/// with a small map, then `+OK` to everything else) and then follows the
/// script. Returns its port and a counter of accepted sockets.
fn fake_node(script: Script) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    thread::spawn(move || {
        for stream in listener.incoming().take(4) {
            let Ok(stream) = stream else { return };
            let n = count.fetch_add(1, Ordering::SeqCst);
            thread::spawn(move || serve(stream, if n == 0 { Some(script) } else { None }));
        }
    });
    (port, accepted)
}

fn serve(mut stream: TcpStream, script: Option<Script>) {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut decoder = Decoder::new();
    let mut buf = BytesMut::new();
    let mut chunk = [0u8; 4096];
    let mut handshake_done = false;
    loop {
        let Some(Value::Array(args)) = (loop {
            match decoder.decode(&mut buf) {
                Ok(Some(v)) => break Some(v),
                Ok(None) => {}
                Err(_) => return,
            }
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }) else {
            return;
        };
        let name = match &args[0] {
            Value::BulkString(b) => String::from_utf8_lossy(b).to_ascii_uppercase(),
            _ => return,
        };
        let reply: &[u8] = match name.as_str() {
            "HELLO" => b"%1\r\n+server\r\n+fake\r\n",
            "CLIENT" => {
                if !handshake_done {
                    handshake_done = true;
                    // The second CLIENT SETINFO ends the handshake.
                } else if let Some(Script::Unsolicited(bytes)) = script {
                    let _ = stream.write_all(b"+OK\r\n");
                    let _ = stream.write_all(bytes);
                    continue;
                } else if let Some(Script::UnsolicitedWhenIdle(bytes)) = script {
                    let _ = stream.write_all(b"+OK\r\n");
                    // The fake's own pacing, not a test's synchronisation:
                    // the client is idle by then.
                    thread::sleep(Duration::from_millis(50));
                    let _ = stream.write_all(bytes);
                    continue;
                }
                b"+OK\r\n"
            }
            _ => match script {
                Some(Script::Reply(bytes)) => bytes,
                Some(Script::ReplyThenClose(bytes)) => {
                    let _ = stream.write_all(bytes);
                    return;
                }
                _ => b"$2\r\nok\r\n",
            },
        };
        if stream.write_all(reply).is_err() {
            return;
        }
    }
}

fn config(port: u16) -> ConnectionConfig {
    ConnectionConfig::builder()
        .port(port)
        .timeout(Duration::from_secs(3))
        .backoff_initial(Duration::from_millis(20))
        .backoff_max(Duration::from_millis(100))
        .build()
        .unwrap()
}

/// Runs one command against a fake node that breaks the stream, checks the
/// call fails, then checks the connection heals on a new socket.
fn broken_reply_fails_the_call_and_the_connection_heals(script: Script) {
    let (port, accepted) = fake_node(script);
    run(move || async move {
        let conn = Connection::connect(config(port)).await.unwrap();
        let first = conn.command::<Value>(["GET", "k"]).await;
        assert!(
            matches!(first, Err(Error::ConnectionLost)),
            "a broken reply must fail the call as possibly applied: {first:?}"
        );
        // The next call waits for the new socket and gets its own reply.
        let second: String = conn.command(["GET", "k"]).await.unwrap();
        assert_eq!(second, "ok");
        assert!(accepted.load(Ordering::SeqCst) >= 2);
    });
}

#[test]
fn garbage_type_byte() {
    broken_reply_fails_the_call_and_the_connection_heals(Script::Reply(b"?garbage\r\n"));
}

#[test]
fn huge_declared_bulk_is_refused_without_allocating() {
    // 9 TB claimed, nothing behind it: the limit refuses it at once.
    broken_reply_fails_the_call_and_the_connection_heals(Script::Reply(b"$9999999999999\r\n"));
}

#[test]
fn huge_declared_array_waits_for_bytes_and_dies_with_the_socket() {
    // 268 million elements claimed, two sent, then the socket closes: no
    // allocation happens from the claim, and the call fails.
    broken_reply_fails_the_call_and_the_connection_heals(Script::ReplyThenClose(
        b"*268435455\r\n:1\r\n:2\r\n",
    ));
}

#[test]
fn nesting_deeper_than_the_limit() {
    const DEEP: &[u8] = &{
        let mut bytes = [0u8; 4 * 200];
        let mut i = 0;
        while i < 200 {
            bytes[4 * i] = b'*';
            bytes[4 * i + 1] = b'1';
            bytes[4 * i + 2] = b'\r';
            bytes[4 * i + 3] = b'\n';
            i += 1;
        }
        bytes
    };
    broken_reply_fails_the_call_and_the_connection_heals(Script::Reply(DEEP));
}

#[test]
fn bad_integer() {
    broken_reply_fails_the_call_and_the_connection_heals(Script::Reply(b":12x\r\n"));
}

#[test]
fn socket_closed_in_the_middle_of_a_reply() {
    broken_reply_fails_the_call_and_the_connection_heals(Script::ReplyThenClose(b"$10\r\nabc"));
}

#[test]
fn reply_nobody_asked_for_drops_the_socket() {
    let (port, accepted) = fake_node(Script::Unsolicited(b"+SURPRISE\r\n"));
    run(move || async move {
        let conn = Connection::connect(config(port)).await.unwrap();
        // The unasked reply arrives right after the handshake: the
        // connection must not hand it to the next caller.
        let reply: String = conn
            .command(["GET", "k"])
            .await
            .unwrap_or_else(|e| panic!("the call must get a reply from a healed socket, got {e}"));
        assert_eq!(reply, "ok");
        assert!(
            accepted.load(Ordering::SeqCst) >= 2,
            "the socket was not replaced"
        );
    });
}

#[test]
fn reply_nobody_asked_for_while_idle_drops_the_socket() {
    let (port, accepted) = fake_node(Script::UnsolicitedWhenIdle(b":7\r\n"));
    run(move || async move {
        let conn = Connection::connect(config(port)).await.unwrap();
        wait_until("the socket to be replaced", Duration::from_secs(3), || {
            accepted.load(Ordering::SeqCst) >= 2
        })
        .await;
        let reply: String = conn.command(["GET", "k"]).await.unwrap();
        assert_eq!(reply, "ok");
    });
}
