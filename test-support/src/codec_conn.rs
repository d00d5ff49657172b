//! A blocking connection that speaks through the library's own codec
//! (`redcore::resp::encode_command` and `Decoder`) over a plain `TcpStream`,
//! reading at most `chunk` bytes per `read` so that frames arrive split.
//!
//! Unlike [`Conn`](super::Conn), which is deliberately independent of the
//! library, this is the way to test the codec against what real servers
//! send. Every read is bounded by [`CODEC_IO_TIMEOUT`]: a decoder bug fails
//! a test, it does not hang it.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::BytesMut;
use redcore::Value;
use redcore::resp::{Arg, Decoder, encode_command};

/// Connect, read and write timeout of a [`CodecConn`].
pub const CODEC_IO_TIMEOUT: Duration = Duration::from_secs(10);

/// One blocking connection using the library's encoder and decoder.
pub struct CodecConn {
    addr: SocketAddr,
    stream: TcpStream,
    buf: BytesMut,
    decoder: Decoder,
    chunk: Vec<u8>,
    /// Raw bytes received since the last write, to assert wire shapes.
    wire: Vec<u8>,
    /// Number of `read` calls since the last write.
    reads: usize,
}

impl CodecConn {
    /// Connects, reading at most `chunk` bytes per `read`; panics when the
    /// connect fails.
    pub fn connect(addr: SocketAddr, chunk: usize) -> CodecConn {
        assert!(chunk > 0, "chunk must be at least one byte");
        let stream = TcpStream::connect_timeout(&addr, CODEC_IO_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_read_timeout(Some(CODEC_IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(CODEC_IO_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        CodecConn {
            addr,
            stream,
            buf: BytesMut::new(),
            decoder: Decoder::new(),
            chunk: vec![0; chunk],
            wire: Vec::new(),
            reads: 0,
        }
    }

    /// Connects in 7-byte reads.
    pub fn small(addr: SocketAddr) -> CodecConn {
        CodecConn::connect(addr, 7)
    }

    /// Connects in 7-byte reads and switches to RESP3.
    pub fn resp3(addr: SocketAddr) -> CodecConn {
        let mut c = CodecConn::small(addr);
        c.hello3();
        c
    }

    /// Sends `HELLO 3` and checks that the server answers with a map.
    pub fn hello3(&mut self) {
        let hello = self.call(&["HELLO", "3"]);
        assert!(
            matches!(hello, Value::Map(_)),
            "HELLO 3 on {}: {hello:?}",
            self.addr
        );
    }

    /// The address connected to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Raw bytes received since the last write.
    pub fn wire(&self) -> &[u8] {
        &self.wire
    }

    /// Number of `read` calls since the last write.
    pub fn reads(&self) -> usize {
        self.reads
    }

    /// Bytes read but not decoded yet.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// The decoder, e.g. to ask for `bytes_needed()`.
    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    /// Writes raw bytes; resets [`wire`](Self::wire) and
    /// [`reads`](Self::reads).
    pub fn write_raw(&mut self, bytes: &[u8]) {
        self.wire.clear();
        self.reads = 0;
        self.stream
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("write to {}: {e}", self.addr));
    }

    /// Encodes a command with the library's encoder and writes it.
    pub fn send<A: Arg>(&mut self, args: &[A]) {
        let mut out = BytesMut::new();
        encode_command(&mut out, args);
        self.write_raw(&out);
    }

    /// One `read` of at most `chunk` bytes into the buffer; panics when the
    /// server closes the connection or nothing arrives in time.
    pub fn read_more(&mut self) {
        let n = self.stream.read(&mut self.chunk).unwrap_or_else(|e| {
            panic!(
                "read from {} (timed out waiting for a frame?): {e}; buffered: {:?}",
                self.addr,
                show(&self.buf)
            )
        });
        assert!(
            n > 0,
            "{} closed the connection; buffered: {:?}",
            self.addr,
            show(&self.buf)
        );
        self.buf.extend_from_slice(&self.chunk[..n]);
        self.wire.extend_from_slice(&self.chunk[..n]);
        self.reads += 1;
    }

    /// Decodes one frame from what is buffered, if a whole one is there;
    /// panics on a protocol error.
    pub fn try_decode(&mut self) -> Option<Value> {
        self.decoder
            .decode(&mut self.buf)
            .unwrap_or_else(|e| panic!("protocol error {e:?}; buffered: {:?}", show(&self.buf)))
    }

    /// Reads until one whole frame decodes.
    pub fn read_frame(&mut self) -> Value {
        loop {
            if let Some(v) = self.try_decode() {
                return v;
            }
            self.read_more();
        }
    }

    /// Sends a command and reads its one reply; nothing may follow it.
    pub fn call<A: Arg>(&mut self, args: &[A]) -> Value {
        self.send(args);
        let v = self.read_frame();
        assert!(
            self.buf.is_empty(),
            "bytes after the reply to {}: {:?}",
            args_text(args),
            show(&self.buf)
        );
        v
    }

    /// Sends a command and checks that it answers `+OK`.
    pub fn ok<A: Arg>(&mut self, args: &[A]) {
        let reply = self.call(args);
        assert!(
            matches!(&reply, Value::SimpleString(s) if &s[..] == b"OK"),
            "{}: {reply:?}",
            args_text(args)
        );
    }

    /// Sends a command and returns every frame up to and including the
    /// first one that is not a push.
    pub fn call_collecting_pushes<A: Arg>(&mut self, args: &[A]) -> Vec<Value> {
        self.send(args);
        let mut frames = Vec::new();
        loop {
            let v = self.read_frame();
            let push = v.is_push();
            frames.push(v);
            if !push {
                return frames;
            }
        }
    }

    /// True when nothing is buffered and no byte arrives within `wait`.
    pub fn quiet_for(&mut self, wait: Duration) -> bool {
        self.stream.set_read_timeout(Some(wait)).unwrap();
        let mut one = [0u8; 1];
        let quiet = match self.stream.read(&mut one) {
            Ok(0) => panic!("{} closed the connection", self.addr),
            Ok(_) => {
                self.buf.extend_from_slice(&one);
                false
            }
            Err(e) => {
                assert!(
                    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
                    "{e}"
                );
                true
            }
        };
        self.stream
            .set_read_timeout(Some(CODEC_IO_TIMEOUT))
            .unwrap();
        quiet && self.buf.is_empty()
    }
}

/// Up to 200 bytes, escaped for an assertion message.
pub fn show(bytes: &[u8]) -> String {
    let shown = &bytes[..bytes.len().min(200)];
    String::from_utf8_lossy(shown).escape_debug().to_string()
}

/// A command's arguments joined by spaces, for messages.
pub fn args_text<A: Arg>(args: &[A]) -> String {
    let words: Vec<String> = args
        .iter()
        .map(|a| a.with_bytes(|b| String::from_utf8_lossy(b).into_owned()))
        .collect();
    words.join(" ")
}
