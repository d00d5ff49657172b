//! Decoding the read buffer and handing replies to the calls waiting for
//! them: the one loop both transports' I/O loops run after each read.
//!
//! It decodes at most a budget of bytes per call, so that a reply
//! streaming in at full speed still lets the woken callers (and glommio's
//! timers) run between turns. While a reply is partly decoded it watches
//! the call that reply belongs to: once nobody waits for it (the caller
//! was dropped or answered) or its deadline passes — the sweeper's timer
//! may be held up while the driver keeps busy — the rest of the reply is
//! skipped instead of decoded. A reply past `max_reply_bytes` fails its
//! call at once and is skipped too; the stream stays in step.

use bytes::BytesMut;

use super::mux::Mux;
use super::pubsub::is_resp2_pubsub;
use crate::Error;
use crate::resp::{Decoder, ProtocolError, Step};

/// Bytes decoded per turn of an I/O loop before it yields.
pub(crate) const DECODE_BUDGET: usize = 4 << 20;

/// Why [`dispatch`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Drained {
    /// Everything buffered is decoded (a partial element may remain):
    /// read more.
    NeedMore,
    /// The budget is spent with bytes left to decode, or a caller was
    /// just given its result while a reply is skipped: yield, and decode
    /// what is left before reading more.
    Budget,
}

/// How many bytes are decoded between two looks at the clock while a
/// reply streams in.
const CHECK_EVERY: usize = 256 << 10;

/// Decodes what `buf` holds, within `budget` bytes, and dispatches every
/// reply and push frame. An error means the socket must go.
pub(crate) fn dispatch(
    st: &mut Mux,
    decoder: &mut Decoder,
    buf: &mut BytesMut,
    push_capacity: usize,
    budget: &mut usize,
) -> Result<Drained, Error> {
    loop {
        let before = buf.len();
        let step = decoder.decode_step(buf, (*budget).min(CHECK_EVERY))?;
        *budget = budget.saturating_sub(before - buf.len());
        match step {
            Step::Frame(v) if v.is_push() => st.on_push(v, push_capacity),
            Step::Frame(v) if st.resp2_pubsub && is_resp2_pubsub(&v) => {
                st.on_push(v, push_capacity)
            }
            Step::Frame(v) => st.on_reply(v)?,
            Step::TooLarge { push } => {
                let limit = decoder.limits().max_reply_bytes;
                // On a RESP2 socket given to subscriptions, only messages
                // are ever large (its replies are confirmations, errors
                // and `pong`s): it is a message, skipped, and no call's.
                let push = push || st.resp2_pubsub;
                if push {
                    tracing::warn!(limit, "a push frame larger than max_reply_bytes is skipped");
                    if !st.pubsub.is_empty() {
                        let now = std::time::Instant::now();
                        st.pubsub.gap_all(crate::pubsub::Gap {
                            from: now,
                            to: now,
                            missed: None,
                            cause: crate::pubsub::GapCause::Skipped,
                        });
                    }
                } else {
                    st.on_reply_too_large(ProtocolError::ReplyTooLarge { limit }.into())?;
                }
                // What was built of it, at least the limit, was dropped.
                released(limit);
                // Let the caller have its error before skipping on.
                return Ok(Drained::Budget);
            }
            Step::Skipped { push } => {
                if !push && !st.resp2_pubsub {
                    st.on_skipped_reply()?;
                }
            }
            Step::NeedMore | Step::Paused => {
                // One look at the clock per read or per slice of a
                // reply, and only while a reply streams in.
                // Never on a RESP2 socket given to subscriptions: what
                // streams in there is a message (an array), not the
                // oldest call's reply.
                if decoder.in_frame()
                    && !decoder.is_skipping()
                    && !st.resp2_pubsub
                    && st.front_reply_unwanted()
                {
                    let held = decoder.frame_bytes();
                    if decoder.skip_frame() {
                        released(held);
                        // A caller may just have been told it timed out:
                        // let it run before skipping on.
                        return Ok(Drained::Budget);
                    }
                }
                if step == Step::NeedMore {
                    return Ok(Drained::NeedMore);
                }
            }
        }
        if *budget == 0 {
            return Ok(Drained::Budget);
        }
    }
}

/// Dropping this much of a reply at once is worth handing the memory back.
const RELEASE_ABOVE: usize = 16 << 20;

/// A partly decoded reply holding `bytes` (counted as against
/// `max_reply_bytes`) was just dropped. A large one was often many small
/// allocations (nested aggregates), which glibc keeps in its arenas rather
/// than returning to the system; `malloc_trim` returns them (it takes a
/// few milliseconds per 64 MiB, and happens only after a reply past the
/// limit or one abandoned while large).
pub(crate) fn released(bytes: usize) {
    if bytes < RELEASE_ABOVE {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only returns free memory to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}
