//! Command encoding: a command is a RESP array of bulk strings, written
//! straight into the caller's output buffer. Numbers are formatted on the
//! stack (`itoa`, `ryu`); no argument is allocated on the way.

use bytes::{BufMut, Bytes, BytesMut};

use super::Value;

/// Something that can be one argument of a command.
///
/// Strings and byte slices are sent as they are; integers and floats are
/// sent as their decimal text, formatted on the stack.
pub trait Arg {
    /// Calls `f` with the argument's bytes.
    fn with_bytes<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R;
}

impl<T: Arg + ?Sized> Arg for &T {
    fn with_bytes<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        (**self).with_bytes(f)
    }
}

macro_rules! bytes_arg {
    ($($t:ty),*) => {$(
        impl Arg for $t {
            #[inline]
            fn with_bytes<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
                f(self.as_ref())
            }
        }
    )*};
}
bytes_arg!(str, String, [u8], Vec<u8>, Bytes, BytesMut);

impl<const N: usize> Arg for [u8; N] {
    fn with_bytes<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        f(self)
    }
}

macro_rules! int_arg {
    ($($t:ty),*) => {$(
        impl Arg for $t {
            #[inline]
            fn with_bytes<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
                f(itoa::Buffer::new().format(*self).as_bytes())
            }
        }
    )*};
}
int_arg!(
    i8, i16, i32, i64, i128, isize, u8, u16, u32, u64, u128, usize
);

macro_rules! float_arg {
    ($($t:ty),*) => {$(
        /// Finite values are sent in their shortest round-trip form;
        /// infinities as `inf` / `-inf`, which Redis accepts (for example
        /// in `ZADD` and `ZRANGEBYSCORE`). NaN is sent as `nan`, which Redis
        /// rejects with an error.
        impl Arg for $t {
            fn with_bytes<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
                if self.is_finite() {
                    f(ryu::Buffer::new().format_finite(*self).as_bytes())
                } else if self.is_nan() {
                    f(b"nan")
                } else if self.is_sign_positive() {
                    f(b"inf")
                } else {
                    f(b"-inf")
                }
            }
        }
    )*};
}
float_arg!(f32, f64);

/// The most bytes a `<kind><len>\r\n` header takes: a kind byte, 20
/// digits (`u64::MAX`) and CRLF.
const HEADER_MAX: usize = 23;
const _: () = assert!(usize::BITS <= 64, "HEADER_MAX holds 20 digits at most");

/// Writes `<kind><n>\r\n` at `dst` and returns how many bytes it wrote
/// (at most [`HEADER_MAX`]). Counts under 100 (most argument lengths, and
/// every argument count in practice) are written digit by digit, without
/// a call to `memcpy`.
///
/// # Safety
/// `dst` must be valid for [`HEADER_MAX`] bytes of writes.
#[inline(always)]
unsafe fn put_header(dst: *mut u8, kind: u8, n: usize) -> usize {
    // SAFETY: every write below lands in the first HEADER_MAX bytes.
    unsafe {
        *dst = kind;
        let digits = if n < 10 {
            *dst.add(1) = b'0' + n as u8;
            1
        } else if n < 100 {
            *dst.add(1) = b'0' + (n / 10) as u8;
            *dst.add(2) = b'0' + (n % 10) as u8;
            2
        } else {
            let mut text = itoa::Buffer::new();
            let text = text.format(n).as_bytes();
            std::ptr::copy_nonoverlapping(text.as_ptr(), dst.add(1), text.len());
            text.len()
        };
        *dst.add(1 + digits) = b'\r';
        *dst.add(2 + digits) = b'\n';
        3 + digits
    }
}

/// The start of `out`'s spare capacity (from its end), with the right to
/// write all of it.
#[inline(always)]
fn spare_ptr(out: &mut BytesMut) -> *mut u8 {
    out.spare_capacity_mut().as_mut_ptr().cast()
}

/// Writes the `*n\r\n` header of a command of `n` arguments.
#[inline]
pub fn write_array_header(out: &mut BytesMut, n: usize) {
    out.reserve(HEADER_MAX);
    let len = out.len();
    // SAFETY: `reserve` made room for HEADER_MAX bytes past `len`, which
    // `put_header` writes at most, and they are written before `set_len`
    // counts them.
    unsafe {
        let wrote = put_header(spare_ptr(out), b'*', n);
        out.set_len(len + wrote);
    }
}

/// Writes one argument as a bulk string: `$len\r\n<bytes>\r\n`.
#[inline]
pub fn write_arg(out: &mut BytesMut, arg: &(impl Arg + ?Sized)) {
    arg.with_bytes(|bytes| write_bulk(out, bytes));
}

/// Writes `$len\r\n<bytes>\r\n` in one pass over the buffer's spare
/// room: one capacity check and one copy of `bytes`, where writing it
/// piece by piece through `BufMut` costs a check and a call per piece.
#[inline]
pub(crate) fn write_bulk(out: &mut BytesMut, bytes: &[u8]) {
    out.reserve(bytes.len() + HEADER_MAX + 2);
    let len = out.len();
    // SAFETY: `reserve` made room for the header (at most HEADER_MAX
    // bytes), the argument and its CRLF past `len`; every byte up to the
    // new length is written before `set_len` counts it.
    unsafe {
        let dst = spare_ptr(out);
        let mut at = put_header(dst, b'$', bytes.len());
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst.add(at), bytes.len());
        at += bytes.len();
        *dst.add(at) = b'\r';
        *dst.add(at + 1) = b'\n';
        out.set_len(len + at + 2);
    }
}

/// Writes a whole command given as a slice of arguments, such as
/// `["SET", "key", "value"]`.
pub fn encode_command<A: Arg>(out: &mut BytesMut, args: &[A]) {
    write_array_header(out, args.len());
    for arg in args {
        write_arg(out, arg);
    }
}

/// Writes a reply value in RESP3 (the server side of the protocol), for
/// scripted test servers and tools. Attributes are written before their
/// value. A simple string or simple error containing CR or LF cannot be
/// written as one, so it is written as a bulk string or bulk error instead.
pub fn encode_value(out: &mut BytesMut, value: &Value) {
    match value {
        Value::SimpleString(s) if !has_crlf(s) => simple_line(out, b'+', s),
        Value::SimpleString(s) | Value::BulkString(s) => write_bulk(out, s),
        Value::Error(e) if !has_crlf(e.message()) => simple_line(out, b'-', e.message()),
        Value::Error(e) => sized(out, b'!', &[e.message()]),
        Value::Integer(i) => simple_line(out, b':', itoa::Buffer::new().format(*i).as_bytes()),
        Value::Nil => out.extend_from_slice(b"_\r\n"),
        Value::Double(d) => d.with_bytes(|b| simple_line(out, b',', b)),
        Value::Boolean(b) => out.extend_from_slice(if *b { b"#t\r\n" } else { b"#f\r\n" }),
        Value::BigNumber(n) => simple_line(out, b'(', n),
        Value::Verbatim { format, text } => sized(out, b'=', &[format, b":", text]),
        Value::Array(items) | Value::Set(items) | Value::Push(items) => {
            let kind = match value {
                Value::Array(_) => b'*',
                Value::Set(_) => b'~',
                _ => b'>',
            };
            header(out, kind, items.len());
            for item in items {
                encode_value(out, item);
            }
        }
        Value::Map(pairs) => encode_pairs(out, b'%', pairs),
        Value::Attributed { attributes, value } => {
            encode_pairs(out, b'|', attributes);
            encode_value(out, value);
        }
    }
}

fn encode_pairs(out: &mut BytesMut, kind: u8, pairs: &[(Value, Value)]) {
    header(out, kind, pairs.len());
    for (k, v) in pairs {
        encode_value(out, k);
        encode_value(out, v);
    }
}

fn has_crlf(s: &[u8]) -> bool {
    memchr::memchr2(b'\r', b'\n', s).is_some()
}

fn simple_line(out: &mut BytesMut, kind: u8, line: &[u8]) {
    out.reserve(line.len() + 3);
    out.put_u8(kind);
    out.put_slice(line);
    out.put_slice(b"\r\n");
}

fn header(out: &mut BytesMut, kind: u8, n: usize) {
    simple_line(out, kind, itoa::Buffer::new().format(n).as_bytes());
}

/// `<kind><len>\r\n<parts...>\r\n`.
fn sized(out: &mut BytesMut, kind: u8, parts: &[&[u8]]) {
    let len = parts.iter().map(|p| p.len()).sum();
    header(out, kind, len);
    out.reserve(len + 2);
    for part in parts {
        out.put_slice(part);
    }
    out.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(f: impl FnOnce(&mut BytesMut)) -> Vec<u8> {
        let mut out = BytesMut::new();
        f(&mut out);
        out.to_vec()
    }

    #[test]
    fn encodes_commands() {
        assert_eq!(
            encoded(|o| encode_command(o, &["GET", "k"])),
            b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
        );
        assert_eq!(encoded(|o| encode_command::<&str>(o, &[])), b"*0\r\n");
        assert_eq!(
            encoded(|o| encode_command(o, &[b"a\r\n".as_slice(), b""])),
            b"*2\r\n$3\r\na\r\n\r\n$0\r\n\r\n"
        );
    }

    #[test]
    fn lengths_and_counts_around_each_digit_boundary() {
        for n in [0usize, 1, 9, 10, 11, 99, 100, 101, 999, 1000, 65_536] {
            let arg = vec![b'x'; n];
            let args = vec![arg.as_slice(); n.min(150)];
            let mut expected = format!("*{}\r\n", args.len()).into_bytes();
            for a in &args {
                expected.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
                expected.extend_from_slice(a);
                expected.extend_from_slice(b"\r\n");
            }
            assert_eq!(encoded(|o| encode_command(o, &args)), expected, "n = {n}");
        }
    }

    #[test]
    fn formats_numbers() {
        let text = |a: &dyn Fn(&mut BytesMut)| encoded(|o| a(o));
        assert_eq!(text(&|o| write_arg(o, &-42i64)), b"$3\r\n-42\r\n");
        assert_eq!(
            text(&|o| write_arg(o, &u64::MAX)),
            b"$20\r\n18446744073709551615\r\n"
        );
        assert_eq!(text(&|o| write_arg(o, &1.5f64)), b"$3\r\n1.5\r\n");
        assert_eq!(text(&|o| write_arg(o, &f64::INFINITY)), b"$3\r\ninf\r\n");
        assert_eq!(
            text(&|o| write_arg(o, &f64::NEG_INFINITY)),
            b"$4\r\n-inf\r\n"
        );
        assert_eq!(text(&|o| write_arg(o, &0.1f32)), b"$3\r\n0.1\r\n");
        assert_eq!(text(&|o| write_arg(o, &String::from("s"))), b"$1\r\ns\r\n");
        assert_eq!(
            text(&|o| write_arg(o, &Bytes::from_static(b"xy"))),
            b"$2\r\nxy\r\n"
        );
    }
}
