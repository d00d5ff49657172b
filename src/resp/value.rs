//! The decoded form of a RESP2 or RESP3 reply.

use bytes::Bytes;

use crate::error::ServerError;

/// One reply, RESP2 or RESP3. String payloads are [`Bytes`] slices of the
/// buffer the reply was read into: decoding copies no payload bytes.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Value {
    /// `+OK`: a simple string.
    SimpleString(Bytes),
    /// `$5 hello`: a bulk string.
    BulkString(Bytes),
    /// `:42`: a signed 64-bit integer.
    Integer(i64),
    /// A null: RESP2 `$-1` and `*-1`, RESP3 `_`.
    Nil,
    /// `*n`: an array.
    Array(Vec<Value>),
    /// `%n`: a map, as key/value pairs in the order the server sent them.
    Map(Vec<(Value, Value)>),
    /// `~n`: a set, in the order the server sent it.
    Set(Vec<Value>),
    /// `,3.14`: a double, including `inf`, `-inf` and `nan`.
    Double(f64),
    /// `#t` / `#f`: a boolean.
    Boolean(bool),
    /// `(123...`: a big number, kept as its decimal digits (with sign).
    BigNumber(Bytes),
    /// `=15 txt:...`: a verbatim string with its three-letter format.
    Verbatim {
        /// The format, such as `txt` or `mkd`.
        format: [u8; 3],
        /// The text after the `xxx:` prefix.
        text: Bytes,
    },
    /// `>n`: an out-of-band push (pub/sub message, client tracking
    /// invalidation). The connection routes these away from replies.
    Push(Vec<Value>),
    /// `-ERR ...` or `!n ...`: an error reply, classified.
    Error(ServerError),
    /// `|n`: attributes, attached to the value that follows them. Never a
    /// reply of its own: the decoder always returns the two together.
    Attributed {
        /// The attribute map, as key/value pairs.
        attributes: Vec<(Value, Value)>,
        /// The value the attributes describe.
        value: Box<Value>,
    },
}

impl Value {
    /// The RESP type name, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::SimpleString(_) => "simple string",
            Value::BulkString(_) => "bulk string",
            Value::Integer(_) => "integer",
            Value::Nil => "nil",
            Value::Array(_) => "array",
            Value::Map(_) => "map",
            Value::Set(_) => "set",
            Value::Double(_) => "double",
            Value::Boolean(_) => "boolean",
            Value::BigNumber(_) => "big number",
            Value::Verbatim { .. } => "verbatim string",
            Value::Push(_) => "push",
            Value::Error(_) => "error",
            Value::Attributed { value, .. } => value.type_name(),
        }
    }

    /// The value without attributes attached to it.
    #[inline]
    pub fn without_attributes(mut self) -> Value {
        while let Value::Attributed { value, .. } = self {
            self = *value;
        }
        self
    }

    /// True for a push frame (attributes looked through).
    pub fn is_push(&self) -> bool {
        match self {
            Value::Push(_) => true,
            Value::Attributed { value, .. } => value.is_push(),
            _ => false,
        }
    }

    /// True for `Nil`.
    pub fn is_nil(&self) -> bool {
        matches!(self, Value::Nil)
    }

    /// The server error, if this reply is one.
    pub fn as_error(&self) -> Option<&ServerError> {
        match self {
            Value::Error(e) => Some(e),
            Value::Attributed { value, .. } => value.as_error(),
            _ => None,
        }
    }

    /// Turns an error reply into `Err`, and anything else into `Ok(self)`.
    #[inline]
    pub fn into_result(self) -> crate::Result<Value> {
        match self.without_attributes() {
            Value::Error(e) => Err(e.into()),
            v => Ok(v),
        }
    }

    /// The payload of a string-like reply (simple, bulk, verbatim, big number).
    pub fn as_bytes(&self) -> Option<&Bytes> {
        match self {
            Value::SimpleString(b) | Value::BulkString(b) | Value::BigNumber(b) => Some(b),
            Value::Verbatim { text, .. } => Some(text),
            Value::Attributed { value, .. } => value.as_bytes(),
            _ => None,
        }
    }
}
