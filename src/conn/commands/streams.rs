//! Streams, the basics: `XADD`, `XRANGE`, `XREAD`, `XTRIM`, ...

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;

use super::Commands;
use crate::cmd::{Cmd, cmd};
use crate::resp::Arg;
use crate::{Error, FromValue};

/// The options of `XREAD` ([`StreamCommands::xread`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamRead {
    count: Option<u64>,
    block: Option<Duration>,
}

impl StreamRead {
    /// No option: up to every entry after the given ids, at once.
    pub fn new() -> StreamRead {
        StreamRead::default()
    }

    /// `COUNT`: at most `count` entries per stream.
    pub fn count(mut self, count: u64) -> StreamRead {
        self.count = Some(count);
        self
    }

    /// `BLOCK`: when no stream has an entry after its id, wait up to
    /// `timeout` (whole milliseconds; zero: for ever) for one. The call
    /// keeps its client's deadline: give a longer one (`with_timeout` on
    /// the client).
    pub fn block(mut self, timeout: Duration) -> StreamRead {
        self.block = Some(timeout);
        self
    }
}

/// How `XTRIM` trims a stream ([`StreamCommands::xtrim`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamTrim {
    strategy: &'static str,
    threshold: Bytes,
    approximate: bool,
}

impl StreamTrim {
    /// `MAXLEN`: keep the latest `len` entries.
    pub fn max_len(len: u64) -> StreamTrim {
        StreamTrim {
            strategy: "MAXLEN",
            threshold: len.with_bytes(Bytes::copy_from_slice),
            approximate: false,
        }
    }

    /// `MINID`: drop the entries whose id is lower than `id`.
    pub fn min_id(id: impl Arg) -> StreamTrim {
        StreamTrim {
            strategy: "MINID",
            threshold: id.with_bytes(Bytes::copy_from_slice),
            approximate: false,
        }
    }

    /// `~`: trim only whole nodes of the stream, which is cheaper and may
    /// leave a few more entries than asked.
    pub fn approximate(mut self) -> StreamTrim {
        self.approximate = true;
        self
    }

    fn push_to(&self, c: &mut Cmd) {
        c.push_arg(self.strategy);
        if self.approximate {
            c.push_arg("~");
        }
        c.push_arg(&self.threshold);
    }
}

/// The basic commands on streams; every [`Commands`] has them.
///
/// Entries convert into `Vec<(String, Vec<(String, String)>)>` (id, then
/// fields and values), or with a `HashMap` of fields.
pub trait StreamCommands: Commands {
    /// `XADD`: appends an entry with `fields`; `id` is `"*"` for one the
    /// server makes up. The entry's id (ask for `String`).
    fn xadd<T: FromValue, F: Arg, V: Arg>(
        &self,
        key: impl Arg,
        id: impl Arg,
        fields: &[(F, V)],
    ) -> impl Future<Output = Result<T, Error>> {
        let mut c = cmd("XADD").arg(key).arg(id);
        for (f, v) in fields {
            c.push_arg(f).push_arg(v);
        }
        self.command(c)
    }

    /// `XLEN`: the number of entries.
    fn xlen(&self, key: impl Arg) -> impl Future<Output = Result<u64, Error>> {
        self.command(cmd("XLEN").arg(key))
    }

    /// `XRANGE`: the entries with ids from `start` to `end` (inclusive;
    /// `"-"` and `"+"` are the ends), at most `count` of them when given.
    fn xrange<T: FromValue>(
        &self,
        key: impl Arg,
        start: impl Arg,
        end: impl Arg,
        count: Option<u64>,
    ) -> impl Future<Output = Result<T, Error>> {
        let mut c = cmd("XRANGE").arg(key).arg(start).arg(end);
        if let Some(n) = count {
            c.push_arg("COUNT").push_arg(n);
        }
        self.command(c)
    }

    /// `XREAD`: the entries after the given id of each stream (`"$"`:
    /// only entries added from now on, with `BLOCK`). The reply lists
    /// each stream with entries, with them (ask for
    /// `Vec<(String, Vec<(String, Vec<(String, String)>)>)>`); nil when
    /// none has any (a `BLOCK` that timed out): ask for an `Option` or a
    /// `Vec`, which is then empty.
    fn xread<T: FromValue, K: Arg, I: Arg>(
        &self,
        streams: &[(K, I)],
        options: StreamRead,
    ) -> impl Future<Output = Result<T, Error>> {
        let mut c = cmd("XREAD");
        if let Some(n) = options.count {
            c.push_arg("COUNT").push_arg(n);
        }
        if let Some(block) = options.block {
            let ms = u64::try_from(block.as_millis()).unwrap_or(u64::MAX);
            c.push_arg("BLOCK").push_arg(ms);
        }
        c.push_arg("STREAMS");
        for (key, _) in streams {
            c.push_arg(key);
        }
        for (_, id) in streams {
            c.push_arg(id);
        }
        self.command(c)
    }

    /// `XDEL`: the number of entries deleted.
    fn xdel<I: Arg>(&self, key: impl Arg, ids: &[I]) -> impl Future<Output = Result<u64, Error>> {
        self.command(cmd("XDEL").arg(key).args(ids))
    }

    /// `XTRIM`: the number of entries removed.
    fn xtrim(&self, key: impl Arg, trim: StreamTrim) -> impl Future<Output = Result<u64, Error>> {
        let mut c = cmd("XTRIM").arg(key);
        trim.push_to(&mut c);
        self.command(c)
    }
}

impl<C: Commands> StreamCommands for C {}
