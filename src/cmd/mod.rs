//! Commands: the [`Cmd`] builder, the [`Args`] trait that lets slices such
//! as `["SET", "k", "v"]` stand for a command too, and key extraction for
//! cluster routing.
//!
//! ```
//! use redcore::cmd::{cmd, Args, Route};
//!
//! let set = cmd("SET").arg("user:{42}:name").arg("Ada").arg("EX").arg(60);
//! assert_eq!(set.arg_count(), 5);
//! assert_eq!(set.route()?, Route::Slot(redcore::slot::key_slot(b"42")));
//!
//! // A slice of arguments is a command as well.
//! assert_eq!(["MGET", "{a}1", "{a}2"].route()?, Route::Slot(redcore::slot::key_slot(b"a")));
//! assert!(["MGET", "a", "b"].route().is_err()); // cross-slot
//! assert_eq!(["PING"].route()?, Route::Keyless);
//! # Ok::<(), redcore::Error>(())
//! ```

mod keys;
pub mod policy;

use bytes::BytesMut;
use smallvec::SmallVec;

use crate::resp::{Arg, write_array_header, write_bulk};

pub(crate) use keys::send_route;
pub use keys::{KeyPositions, Route, is_blocking, is_read_only, key_positions};

/// A command's arguments, name first. Implemented by [`Cmd`] and by slices,
/// arrays and vectors of anything that is an [`Arg`].
pub trait Args {
    /// The number of arguments, the command name included.
    fn arg_count(&self) -> usize;

    /// Calls `f` with argument `index`; `None` when there is no such argument.
    fn with_arg<R>(&self, index: usize, f: impl FnOnce(&[u8]) -> R) -> Option<R>;

    /// Writes the command as a RESP array of bulk strings into `out`.
    fn encode(&self, out: &mut BytesMut) {
        let n = self.arg_count();
        write_array_header(out, n);
        for i in 0..n {
            self.with_arg(i, |a| write_bulk(out, a));
        }
    }

    /// Where a cluster client must send this command: keyless, or the one
    /// slot of all its keys. Keys in different slots are
    /// [`Error::CrossSlot`](crate::Error::CrossSlot).
    fn route(&self) -> crate::Result<Route>
    where
        Self: Sized,
    {
        keys::route(self)
    }
}

impl<T: Args + ?Sized> Args for &T {
    fn arg_count(&self) -> usize {
        (**self).arg_count()
    }
    fn with_arg<R>(&self, index: usize, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        (**self).with_arg(index, f)
    }
    fn encode(&self, out: &mut BytesMut) {
        (**self).encode(out)
    }
}

impl<A: Arg> Args for [A] {
    fn arg_count(&self) -> usize {
        self.len()
    }
    fn with_arg<R>(&self, index: usize, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        self.get(index).map(|a| a.with_bytes(f))
    }
    fn encode(&self, out: &mut BytesMut) {
        crate::resp::encode_command(out, self)
    }
}

impl<A: Arg, const N: usize> Args for [A; N] {
    fn arg_count(&self) -> usize {
        N
    }
    fn with_arg<R>(&self, index: usize, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        self.as_slice().with_arg(index, f)
    }
    fn encode(&self, out: &mut BytesMut) {
        self.as_slice().encode(out)
    }
}

impl<A: Arg> Args for Vec<A> {
    fn arg_count(&self) -> usize {
        self.len()
    }
    fn with_arg<R>(&self, index: usize, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        self.as_slice().with_arg(index, f)
    }
    fn encode(&self, out: &mut BytesMut) {
        self.as_slice().encode(out)
    }
}

/// A command under construction: `cmd("SET").arg(key).arg(value)`.
///
/// Arguments are stored back to back in one byte vector with their end
/// offsets beside it (inline for up to eight arguments). The byte vector
/// starts with room for 64 bytes, so a typical command costs one
/// allocation, and encoding it is one header and one copy per argument
/// into the connection's buffer.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Cmd {
    data: Vec<u8>,
    ends: SmallVec<[usize; 8]>,
}

/// Starts a command with its name: `cmd("GET").arg("key")`.
pub fn cmd(name: impl Arg) -> Cmd {
    Cmd::new().arg(name)
}

impl Cmd {
    /// An empty command; the first argument pushed is its name.
    pub fn new() -> Cmd {
        Cmd {
            data: Vec::with_capacity(64),
            ends: SmallVec::new(),
        }
    }

    /// Appends an argument.
    pub fn arg(mut self, arg: impl Arg) -> Cmd {
        self.push_arg(arg);
        self
    }

    /// Appends an argument in place.
    pub fn push_arg(&mut self, arg: impl Arg) -> &mut Cmd {
        arg.with_bytes(|b| self.data.extend_from_slice(b));
        self.ends.push(self.data.len());
        self
    }

    /// Removes every argument and keeps the memory, so one `Cmd` can be
    /// built again and again without allocating:
    /// `c.clear(); c.push_arg("GET").push_arg(key);`.
    pub fn clear(&mut self) {
        self.data.clear();
        self.ends.clear();
    }

    /// Appends every item as an argument.
    pub fn args<A: Arg>(mut self, args: impl IntoIterator<Item = A>) -> Cmd {
        for a in args {
            self.push_arg(a);
        }
        self
    }

    /// Argument `index` (0 is the name).
    pub fn get(&self, index: usize) -> Option<&[u8]> {
        let end = *self.ends.get(index)?;
        let start = if index == 0 { 0 } else { self.ends[index - 1] };
        Some(&self.data[start..end])
    }

    /// The arguments in order, the name first.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.ends.len()).filter_map(|i| self.get(i))
    }

    /// The number of bytes [`Args::encode`] writes for this command.
    pub fn encoded_len(&self) -> usize {
        let digits = |n: usize| itoa::Buffer::new().format(n).len();
        let header = 3 + digits(self.ends.len());
        self.iter()
            .fold(header, |acc, a| acc + 5 + digits(a.len()) + a.len())
    }
}

impl Args for Cmd {
    fn arg_count(&self) -> usize {
        self.ends.len()
    }
    fn with_arg<R>(&self, index: usize, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        self.get(index).map(f)
    }
}

impl<A: Arg> FromIterator<A> for Cmd {
    fn from_iter<I: IntoIterator<Item = A>>(iter: I) -> Cmd {
        Cmd::new().args(iter)
    }
}

impl<A: Arg> From<&[A]> for Cmd {
    fn from(args: &[A]) -> Cmd {
        args.iter().collect()
    }
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.iter().map(String::from_utf8_lossy))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(args: &impl Args) -> Vec<u8> {
        let mut out = BytesMut::new();
        args.encode(&mut out);
        out.to_vec()
    }

    #[test]
    fn builder_and_slices_encode_alike() {
        let built = cmd("SET").arg("k").arg(b"v".as_slice()).arg(10u32);
        let expected = b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n$2\r\n10\r\n".to_vec();
        assert_eq!(encoded(&built), expected);
        assert_eq!(encoded(&["SET", "k", "v", "10"]), expected);
        assert_eq!(encoded(&vec!["SET", "k", "v", "10"]), expected);
        assert_eq!(encoded(&Cmd::from(&["SET", "k", "v", "10"][..])), expected);
        assert_eq!(built.encoded_len(), expected.len());
        assert_eq!(format!("{built:?}"), r#"["SET", "k", "v", "10"]"#);
    }

    #[test]
    fn arguments_are_addressable() {
        let c = cmd("MSET").args(["a", "1", "b", "2"]);
        assert_eq!(c.arg_count(), 5);
        assert_eq!(c.get(0), Some(&b"MSET"[..]));
        assert_eq!(c.get(4), Some(&b"2"[..]));
        assert_eq!(c.get(5), None);
        assert_eq!(c.with_arg(3, |a| a.to_vec()), Some(b"b".to_vec()));
        assert_eq!(cmd("").arg("").get(1), Some(&b""[..]));
        assert_eq!(Cmd::new().encoded_len(), 4);
    }

    #[test]
    fn a_cleared_command_is_built_again_in_its_memory() {
        let mut c = cmd("SET").arg("key").arg("value");
        let capacity = c.data.capacity();
        c.clear();
        assert_eq!(c.arg_count(), 0);
        assert_eq!(c, Cmd::new());
        c.push_arg("GET").push_arg("k");
        assert_eq!(encoded(&c), b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
        assert_eq!(c.data.capacity(), capacity);
    }
}
