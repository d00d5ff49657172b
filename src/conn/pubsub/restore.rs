//! Subscribing again on a new socket, right after its handshake and
//! before anything else is written to it.

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::timer::Timer;

use super::frame::{Frame, is_resp2_pubsub};
use super::{ChannelKind, Lost, encode_command};
use crate::Error;
use crate::conn::mux::Shared;
use crate::conn::transport::Transport;
use crate::resp::{Decoder, ProtocolError, Value};

/// Names per subscribe command when subscribing again.
const NAMES_PER_COMMAND: usize = 256;

/// Splits names into subscribe commands: sharded channels one slot per
/// command (a cluster refuses a command whose channels span slots), at
/// most [`NAMES_PER_COMMAND`] names each.
pub(crate) fn command_groups(wanted: Vec<(ChannelKind, Bytes)>) -> Vec<(ChannelKind, Vec<Bytes>)> {
    let mut groups: BTreeMap<(u8, u16), Vec<Bytes>> = BTreeMap::new();
    for (kind, name) in wanted {
        let key = match kind {
            ChannelKind::Channel => (0, 0),
            ChannelKind::Pattern => (1, 0),
            ChannelKind::Shard => (2, crate::slot::key_slot(&name)),
        };
        groups.entry(key).or_default().push(name);
    }
    let mut out = Vec::new();
    for ((kind, _), names) in groups {
        let kind = [
            ChannelKind::Channel,
            ChannelKind::Pattern,
            ChannelKind::Shard,
        ][kind as usize];
        for chunk in names.chunks(NAMES_PER_COMMAND) {
            out.push((kind, chunk.to_vec()));
        }
    }
    out
}

/// Subscribes the new socket `io` to every name the connection's
/// subscriptions want, within the connection's timeout. Messages that
/// arrive meanwhile are delivered (after the gap each subscription is
/// owed); names the server refuses are reported to their subscriptions
/// and forgotten. An error means the socket must go.
pub(crate) async fn restore(
    io: &mut Transport,
    shared: &Shared,
    decoder: &mut Decoder,
    rbuf: &mut BytesMut,
) -> Result<(), Error> {
    let wanted = shared.mux.borrow().pubsub.wanted();
    if wanted.is_empty() {
        return Ok(());
    }
    let snapshot = wanted.clone();
    let groups = command_groups(wanted);
    let deadline = Timer::new(shared.config.timeout);
    let work = async {
        let mut out = BytesMut::new();
        for (kind, names) in &groups {
            encode_command(&mut out, *kind, false, names);
        }
        io.write_all(&out).await?;
        io.flush().await?;
        read_confirmations(io, shared, decoder, rbuf, groups).await
    };
    futures_lite::future::or(work, async {
        deadline.await;
        Err(Error::Connect {
            addr: shared.addr_text(),
            reason: "subscribing again after a reconnect timed out".into(),
            unsent_command: false,
        })
    })
    .await?;
    let mut st = shared.mux.borrow_mut();
    st.pubsub.on_restored(Instant::now());
    // Names given up while this ran (a node connection may not queue
    // their unsubscribe while down) were subscribed all the same: they
    // are unsubscribed once the socket serves calls.
    let still: std::collections::HashSet<(ChannelKind, Bytes)> =
        st.pubsub.wanted().into_iter().collect();
    let stale: Vec<(ChannelKind, Bytes)> = snapshot
        .into_iter()
        .filter(|w| !still.contains(w))
        .collect();
    st.pubsub_stale = command_groups(stale);
    tracing::info!(addr = %shared.addr_text(), "subscriptions restored");
    Ok(())
}

async fn read_confirmations(
    io: &mut Transport,
    shared: &Shared,
    decoder: &mut Decoder,
    rbuf: &mut BytesMut,
    groups: Vec<(ChannelKind, Vec<Bytes>)>,
) -> Result<(), Error> {
    let resp2 = shared.mux.borrow().resp2_pubsub;
    let mut groups: std::collections::VecDeque<_> = groups.into();
    let mut current = groups.pop_front();
    let mut chunk = vec![0u8; 16 * 1024];
    while let Some((kind, left)) = &mut current {
        let Some(v) = decoder.decode(rbuf)? else {
            let n = io.read(&mut chunk).await?;
            if n == 0 {
                return Err(Error::ConnectionLost);
            }
            rbuf.extend_from_slice(&chunk[..n]);
            continue;
        };
        let mut st = shared.mux.borrow_mut();
        let items = match &v {
            Value::Push(items) => Some(items),
            Value::Array(items) if resp2 && is_resp2_pubsub(&v) => Some(items),
            _ => None,
        };
        let Some(items) = items else {
            // A reply instead of confirmations: the server refused this
            // command's names.
            let Value::Error(e) = v else {
                return Err(ProtocolError::UnexpectedReply.into());
            };
            drop(st);
            let kind = *kind;
            if left.len() > 1 {
                // One name may have spoilt the command for all (an ACL
                // that forbids one channel): each goes again on its own.
                let mut out = BytesMut::new();
                for name in left.drain(..) {
                    encode_command(&mut out, kind, false, std::slice::from_ref(&name));
                    groups.push_back((kind, vec![name]));
                }
                io.write_all(&out).await?;
                io.flush().await?;
            } else {
                tracing::warn!(?kind, error = %e, "subscribing again was refused");
                let mut st = shared.mux.borrow_mut();
                for name in left.drain(..) {
                    st.pubsub.lose(kind, &name, Lost::Refused(e.clone()));
                }
            }
            current = groups.pop_front();
            continue;
        };
        match Frame::of(items) {
            Frame::Confirm {
                kind: k,
                unsubscribe: false,
                name: Some(name),
            } if k == *kind => {
                if let Some(at) = left.iter().position(|l| *l == name) {
                    left.swap_remove(at);
                }
                if left.is_empty() {
                    drop(st);
                    current = groups.pop_front();
                }
            }
            Frame::Message(m) => st.on_message(m),
            _ => st.on_push(v, shared.config.push_capacity),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sharded_channels_go_one_slot_per_command() {
        let wanted = vec![
            (ChannelKind::Shard, Bytes::from("{a}1")),
            (ChannelKind::Channel, Bytes::from("c")),
            (ChannelKind::Shard, Bytes::from("{b}1")),
            (ChannelKind::Shard, Bytes::from("{a}2")),
        ];
        let cmds = command_groups(wanted);
        assert_eq!(cmds.len(), 3);
        assert_eq!(cmds[0], (ChannelKind::Channel, vec![Bytes::from("c")]));
        let shards: Vec<_> = cmds[1..].iter().map(|(_, n)| n.len()).collect();
        assert!(shards.contains(&2) && shards.contains(&1));
    }
}
