//! What a pub/sub frame says: a message, or the confirmation of a
//! subscribe or unsubscribe (solicited or not).

use bytes::Bytes;

use super::{ChannelKind, Message};
use crate::resp::Value;

/// A push frame (RESP3), or an array on a RESP2 subscribed socket, read
/// as pub/sub.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame {
    /// `message`, `pmessage` or `smessage`.
    Message(Message),
    /// `subscribe`, `unsubscribe` and the pattern and sharded forms: the
    /// server's word that it now does (or no longer does) serve `name`.
    /// `name` is `None` for an unsubscribe from nothing.
    Confirm {
        kind: ChannelKind,
        unsubscribe: bool,
        name: Option<Bytes>,
    },
    /// Anything else (an invalidation of client-side caching, ...).
    Other,
}

fn bytes(v: &Value) -> Option<&Bytes> {
    match v {
        Value::BulkString(b) | Value::SimpleString(b) => Some(b),
        _ => None,
    }
}

impl Frame {
    /// Reads the items of a push frame.
    pub fn of(items: &[Value]) -> Frame {
        let Some(head) = items.first().and_then(bytes) else {
            return Frame::Other;
        };
        let message = |kind, at: usize| match (items.get(at).and_then(bytes), items.get(at + 1)) {
            (Some(channel), Some(Value::BulkString(payload))) if items.len() == at + 2 => {
                Frame::Message(Message {
                    kind,
                    channel: channel.clone(),
                    pattern: None,
                    payload: payload.clone(),
                })
            }
            _ => Frame::Other,
        };
        let confirm = |kind, unsubscribe| match items.get(1) {
            Some(Value::Nil) if unsubscribe => Frame::Confirm {
                kind,
                unsubscribe,
                name: None,
            },
            Some(v) => match bytes(v) {
                Some(name) => Frame::Confirm {
                    kind,
                    unsubscribe,
                    name: Some(name.clone()),
                },
                None => Frame::Other,
            },
            None => Frame::Other,
        };
        match head.as_ref() {
            b"message" => message(ChannelKind::Channel, 1),
            b"smessage" => message(ChannelKind::Shard, 1),
            b"pmessage" => match (
                items.get(1).and_then(bytes),
                message(ChannelKind::Pattern, 2),
            ) {
                (Some(pattern), Frame::Message(mut m)) => {
                    m.pattern = Some(pattern.clone());
                    Frame::Message(m)
                }
                _ => Frame::Other,
            },
            b"subscribe" => confirm(ChannelKind::Channel, false),
            b"psubscribe" => confirm(ChannelKind::Pattern, false),
            b"ssubscribe" => confirm(ChannelKind::Shard, false),
            b"unsubscribe" => confirm(ChannelKind::Channel, true),
            b"punsubscribe" => confirm(ChannelKind::Pattern, true),
            b"sunsubscribe" => confirm(ChannelKind::Shard, true),
            _ => Frame::Other,
        }
    }
}

/// On a RESP2 socket given to subscriptions: whether a frame is pub/sub
/// (and so goes where pushes go), not a reply. Such a socket only ever
/// carries subscribe and unsubscribe commands, whose answers are all
/// arrays headed by one of these names (errors and `PING`'s `pong` are
/// replies).
pub(crate) fn is_resp2_pubsub(v: &Value) -> bool {
    match v {
        Value::Array(items) => !matches!(Frame::of(items), Frame::Other),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Value {
        Value::BulkString(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn reads_messages_and_confirmations() {
        assert_eq!(
            Frame::of(&[b("message"), b("ch"), b("hi")]),
            Frame::Message(Message {
                kind: ChannelKind::Channel,
                channel: "ch".into(),
                pattern: None,
                payload: "hi".into()
            })
        );
        assert_eq!(
            Frame::of(&[b("pmessage"), b("c*"), b("ch"), b("hi")]),
            Frame::Message(Message {
                kind: ChannelKind::Pattern,
                channel: "ch".into(),
                pattern: Some("c*".into()),
                payload: "hi".into()
            })
        );
        assert_eq!(
            Frame::of(&[b("sunsubscribe"), b("s"), Value::Integer(0)]),
            Frame::Confirm {
                kind: ChannelKind::Shard,
                unsubscribe: true,
                name: Some("s".into())
            }
        );
        assert_eq!(
            Frame::of(&[b("unsubscribe"), Value::Nil, Value::Integer(0)]),
            Frame::Confirm {
                kind: ChannelKind::Channel,
                unsubscribe: true,
                name: None
            }
        );
    }

    #[test]
    fn anything_else_is_other() {
        assert_eq!(Frame::of(&[b("invalidate"), Value::Nil]), Frame::Other);
        assert_eq!(Frame::of(&[b("message"), b("ch")]), Frame::Other);
        assert_eq!(Frame::of(&[Value::Integer(1)]), Frame::Other);
        assert_eq!(Frame::of(&[]), Frame::Other);
        assert!(!is_resp2_pubsub(&Value::Array(vec![b("pong"), b("")])));
        assert!(is_resp2_pubsub(&Value::Array(vec![
            b("subscribe"),
            b("ch"),
            Value::Integer(1)
        ])));
    }
}
