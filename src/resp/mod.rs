//! RESP2/RESP3 wire format, sans-io: bytes in, values out, and commands
//! encoded straight into a caller's buffer. Nothing here touches a socket or
//! an executor, so all of it is tested and fuzzed on byte slices.
//!
//! ```
//! use bytes::BytesMut;
//! use redcore::resp::{encode_command, Decoder, Value};
//!
//! let mut out = BytesMut::new();
//! encode_command(&mut out, &["SET", "greeting", "hello"]);
//! assert_eq!(&out[..], b"*3\r\n$3\r\nSET\r\n$8\r\ngreeting\r\n$5\r\nhello\r\n");
//!
//! let mut input = BytesMut::from(&b"+OK\r\n$5\r\nhel"[..]);
//! let mut decoder = Decoder::new();
//! assert_eq!(decoder.decode(&mut input)?, Some(Value::SimpleString("OK".into())));
//! assert_eq!(decoder.decode(&mut input)?, None); // the bulk string is not whole yet
//! input.extend_from_slice(b"lo\r\n");
//! assert_eq!(decoder.decode(&mut input)?, Some(Value::BulkString("hello".into())));
//! # Ok::<(), redcore::resp::ProtocolError>(())
//! ```

mod convert;
mod decode;
mod encode;
mod value;

pub use convert::{FromValue, FromValueElement};
pub use decode::{Decoder, DecoderLimits, Step};
pub(crate) use encode::write_bulk;
pub use encode::{Arg, encode_command, encode_value, write_arg, write_array_header};
pub use value::Value;

/// Bytes from the server that are not valid RESP, or that break a
/// [`DecoderLimits`] limit. The stream cannot be trusted after one of
/// these, except [`ReplyTooLarge`](ProtocolError::ReplyTooLarge).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The first byte of a frame is not a RESP type.
    #[error("invalid RESP type byte 0x{0:02x}")]
    InvalidType(u8),
    /// A length header is not a valid length for its type.
    #[error("invalid length in a '{0}' header")]
    InvalidLength(char),
    /// A line or a bulk payload is not followed by CRLF.
    #[error("expected CRLF")]
    MissingCrlf,
    /// An integer reply is not a valid signed 64-bit decimal.
    #[error("invalid integer")]
    InvalidInteger,
    /// A double reply is not a valid floating point number.
    #[error("invalid double")]
    InvalidDouble,
    /// A boolean reply is neither `t` nor `f`.
    #[error("invalid boolean")]
    InvalidBoolean,
    /// A big number reply is not a decimal number.
    #[error("invalid big number")]
    InvalidBigNumber,
    /// A verbatim string has no `xxx:` format prefix.
    #[error("invalid verbatim string")]
    InvalidVerbatim,
    /// A RESP3 null has bytes after the `_`.
    #[error("invalid null")]
    InvalidNull,
    /// A bulk string is longer than `max_bulk_len`.
    #[error("bulk length {len} exceeds the limit of {limit} bytes")]
    BulkTooLong {
        /// The declared length.
        len: u64,
        /// The limit in force.
        limit: usize,
    },
    /// An aggregate has more elements than `max_aggregate_len`.
    #[error("aggregate of {len} elements exceeds the limit of {limit}")]
    AggregateTooLong {
        /// The declared number of elements.
        len: u64,
        /// The limit in force.
        limit: usize,
    },
    /// Aggregates are nested deeper than `max_depth`.
    #[error("aggregates nested deeper than the limit of {limit}")]
    TooDeep {
        /// The limit in force.
        limit: usize,
    },
    /// A line grew past `max_line_len` without its CRLF.
    #[error("line longer than the limit of {limit} bytes")]
    LineTooLong {
        /// The limit in force.
        limit: usize,
    },
    /// A reply would hold more memory than `max_reply_bytes` once decoded.
    /// The one protocol error that leaves the stream usable: what was
    /// decoded of the reply is dropped, the rest of it is skipped as it
    /// arrives, and the next reply decodes normally (a connection stays
    /// up; only this call fails).
    #[error(
        "reply larger than the limit of {limit} bytes once decoded (max_reply_bytes); it was skipped"
    )]
    ReplyTooLarge {
        /// The limit in force.
        limit: usize,
    },
    /// The server sent a reply when no request was waiting for one.
    #[error("reply received with no request waiting for it")]
    UnexpectedReply,
    /// Input ended in the middle of a frame where a whole one was expected.
    #[error("input ends in the middle of a frame")]
    Incomplete,
}
