//! Server event frames: every [`ChatEvent`] is encoded once, into the JSON text that each
//! recipient's connections are sent as it is (`{"type":"message.created", …payload,
//! "pos":42}`), carried by the real-time transport (`chat-realtime`) as an opaque
//! [`Frame`]. A stored change carries its position in the change feed as `pos`, written
//! last so that a connection can read it back cheaply ([`pos_of`]) to de-duplicate;
//! `typing` has none. `GET /api/v1/sync` serves the very same objects ([`event_value`]).

use bytestring::ByteString;
use chat_domain::{ChatEvent, ConversationDetails, Delivery, FeedPos};
use chat_realtime::{EventClass, Frame};
use serde::Serialize;

use crate::wire::{MessageOut, ParticipantOut, format_time};

/// Encodes `delivery` once, into the frame every recipient's connections are sent.
///
/// # Errors
/// A `serde_json` error if the event cannot be serialised (it always can: every field
/// is a string, a number or a JSON value).
pub fn encode(delivery: &Delivery) -> Result<Frame, serde_json::Error> {
    let event = &delivery.event;
    let class = match event {
        ChatEvent::MessageCreated(view) => EventClass::MessageCreated(view.message.seq.get()),
        ChatEvent::Typing { .. } => EventClass::Typing,
        _ => EventClass::Ordered,
    };
    Ok(Frame {
        conversation_id: event.conversation_id(),
        class,
        recipients: delivery.recipients.clone(),
        payload: ByteString::from(event_text(event, delivery.pos)?),
    })
}

/// The frame text of `event`, with `pos` as its last field when the event is a stored
/// change.
///
/// # Errors
/// A `serde_json` error if the event cannot be serialised (it always can).
pub fn event_text(event: &ChatEvent, pos: Option<FeedPos>) -> Result<String, serde_json::Error> {
    let mut text = serde_json::to_string(&EventFrame::from(event))?;
    if let Some(pos) = pos {
        // The frame is a JSON object: its text ends with the `}` that closes it.
        text.pop();
        text.push_str(&format!(",\"pos\":{pos}}}"));
    }
    Ok(text)
}

/// The frame of `event` at `pos` as a JSON value: what `GET /api/v1/sync` lists.
///
/// # Errors
/// A `serde_json` error if the event cannot be serialised (it always can).
pub fn event_value(
    event: &ChatEvent,
    pos: FeedPos,
) -> Result<serde_json::Value, serde_json::Error> {
    let mut value = serde_json::to_value(EventFrame::from(event))?;
    if let Some(object) = value.as_object_mut() {
        object.insert("pos".to_owned(), serde_json::Value::from(pos.get()));
    }
    Ok(value)
}

/// The `pos` of a frame [`event_text`] wrote, read from its end without parsing the
/// JSON; `None` for a frame without one (`typing`, the server's replies). Only the
/// top-level field can match: a nested object would end in `}}`, and a string ends in
/// `"`.
pub fn pos_of(text: &str) -> Option<FeedPos> {
    let body = text.strip_suffix('}')?;
    let digits_from = body
        .bytes()
        .rposition(|b| !b.is_ascii_digit())
        .map_or(0, |at| at + 1);
    let (head, digits) = body.split_at(digits_from);
    if digits.is_empty() || !head.ends_with(",\"pos\":") {
        return None;
    }
    digits.parse().ok().map(FeedPos::new)
}

/// A conversation in an event: the conversation as `GET /conversations/{id}` shows it,
/// less the fields that differ per user (`membership`, `last_message`).
#[derive(Debug, Serialize)]
struct ConversationEventOut {
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    name: Option<String>,
    posting_id: Option<String>,
    created_by: i64,
    created_at: String,
    last_message_at: Option<String>,
    is_archived: bool,
    archived_at: Option<String>,
    participants: Vec<ParticipantOut>,
}

impl From<&ConversationDetails> for ConversationEventOut {
    fn from(details: &ConversationDetails) -> Self {
        let conversation = &details.conversation;
        Self {
            id: conversation.id.to_string(),
            kind: conversation.kind.as_str(),
            name: conversation.name.clone(),
            posting_id: conversation.posting_id.map(|p| p.to_string()),
            created_by: conversation.created_by.get(),
            created_at: format_time(conversation.created_at),
            last_message_at: conversation.last_message_at.map(format_time),
            is_archived: conversation.is_archived,
            archived_at: conversation.archived_at.map(format_time),
            participants: details
                .active_participants()
                .map(|view| ParticipantOut {
                    user_id: view.participant.user_id.get(),
                    display_name: view.display_name.clone(),
                    role: view.participant.role.as_str().to_owned(),
                    joined_at: format_time(view.participant.joined_at),
                    last_read_at: view.participant.last_read_at.map(format_time),
                    is_muted: view.participant.is_muted,
                })
                .collect(),
        }
    }
}

/// The wire form of every server event; `type` is [`ChatEvent::name`].
#[derive(Debug, Serialize)]
#[serde(tag = "type")]
enum EventFrame {
    #[serde(rename = "message.created")]
    MessageCreated { message: MessageOut },
    #[serde(rename = "message.updated")]
    MessageUpdated { message: MessageOut },
    #[serde(rename = "message.deleted")]
    MessageDeleted {
        conversation_id: String,
        message_id: String,
        seq: i64,
    },
    #[serde(rename = "reaction.added")]
    ReactionAdded {
        conversation_id: String,
        message_id: String,
        emoji: String,
        user_id: i64,
    },
    #[serde(rename = "reaction.removed")]
    ReactionRemoved {
        conversation_id: String,
        message_id: String,
        emoji: String,
        user_id: i64,
    },
    #[serde(rename = "conversation.read")]
    ConversationRead {
        conversation_id: String,
        user_id: i64,
        last_read_seq: i64,
        last_read_at: String,
    },
    #[serde(rename = "typing")]
    Typing {
        conversation_id: String,
        user_id: i64,
        is_typing: bool,
    },
    #[serde(rename = "conversation.created")]
    ConversationCreated { conversation: ConversationEventOut },
    #[serde(rename = "conversation.updated")]
    ConversationUpdated { conversation: ConversationEventOut },
    #[serde(rename = "participant.added")]
    ParticipantAdded {
        conversation_id: String,
        user_id: i64,
        role: &'static str,
    },
    #[serde(rename = "participant.removed")]
    ParticipantRemoved {
        conversation_id: String,
        user_id: i64,
    },
    #[serde(rename = "participant.updated")]
    ParticipantUpdated {
        conversation_id: String,
        user_id: i64,
        #[serde(skip_serializing_if = "Option::is_none")]
        role: Option<&'static str>,
    },
}

impl From<&ChatEvent> for EventFrame {
    fn from(event: &ChatEvent) -> Self {
        match event {
            ChatEvent::MessageCreated(view) => EventFrame::MessageCreated {
                message: MessageOut::from(view),
            },
            ChatEvent::MessageUpdated(view) => EventFrame::MessageUpdated {
                message: MessageOut::from(view),
            },
            ChatEvent::MessageDeleted {
                conversation_id,
                message_id,
                seq,
            } => EventFrame::MessageDeleted {
                conversation_id: conversation_id.to_string(),
                message_id: message_id.to_string(),
                seq: seq.get(),
            },
            ChatEvent::ReactionAdded {
                conversation_id,
                message_id,
                emoji,
                user_id,
            } => EventFrame::ReactionAdded {
                conversation_id: conversation_id.to_string(),
                message_id: message_id.to_string(),
                emoji: emoji.clone(),
                user_id: user_id.get(),
            },
            ChatEvent::ReactionRemoved {
                conversation_id,
                message_id,
                emoji,
                user_id,
            } => EventFrame::ReactionRemoved {
                conversation_id: conversation_id.to_string(),
                message_id: message_id.to_string(),
                emoji: emoji.clone(),
                user_id: user_id.get(),
            },
            ChatEvent::ConversationRead {
                conversation_id,
                user_id,
                last_read_seq,
                last_read_at,
            } => EventFrame::ConversationRead {
                conversation_id: conversation_id.to_string(),
                user_id: user_id.get(),
                last_read_seq: last_read_seq.get(),
                last_read_at: format_time(*last_read_at),
            },
            ChatEvent::Typing {
                conversation_id,
                user_id,
                is_typing,
            } => EventFrame::Typing {
                conversation_id: conversation_id.to_string(),
                user_id: user_id.get(),
                is_typing: *is_typing,
            },
            ChatEvent::ConversationCreated(details) => EventFrame::ConversationCreated {
                conversation: ConversationEventOut::from(details),
            },
            ChatEvent::ConversationUpdated(details) => EventFrame::ConversationUpdated {
                conversation: ConversationEventOut::from(details),
            },
            ChatEvent::ParticipantAdded {
                conversation_id,
                user_id,
                role,
            } => EventFrame::ParticipantAdded {
                conversation_id: conversation_id.to_string(),
                user_id: user_id.get(),
                role: role.as_str(),
            },
            ChatEvent::ParticipantRemoved {
                conversation_id,
                user_id,
            } => EventFrame::ParticipantRemoved {
                conversation_id: conversation_id.to_string(),
                user_id: user_id.get(),
            },
            ChatEvent::ParticipantUpdated {
                conversation_id,
                user_id,
                role,
            } => EventFrame::ParticipantUpdated {
                conversation_id: conversation_id.to_string(),
                user_id: user_id.get(),
                role: role.map(|r| r.as_str()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use chat_domain::{ConversationId, MessageId, Role, Seq, UserId};
    use serde_json::{Value, json};

    use super::*;

    fn user(id: i64) -> UserId {
        UserId::new(id).unwrap()
    }

    fn encoded(event: ChatEvent) -> (EventClass, Value) {
        let out = encode(&Delivery {
            event,
            recipients: vec![user(1), user(2)],
            pos: None,
        })
        .unwrap();
        assert_eq!(out.recipients, vec![user(1), user(2)]);
        (out.class, serde_json::from_str(&out.payload).unwrap())
    }

    #[test]
    fn flat_events_put_their_fields_beside_the_type() {
        let conversation = ConversationId::new();
        let message = MessageId::new();
        let at = time::macros::datetime!(2026-11-24 10:00:00.5 UTC);
        let c = conversation.to_string();
        let m = message.to_string();
        let cases = [
            (
                ChatEvent::MessageDeleted {
                    conversation_id: conversation,
                    message_id: message,
                    seq: Seq::new(7).unwrap(),
                },
                EventClass::Ordered,
                json!({"type": "message.deleted", "conversation_id": c, "message_id": m, "seq": 7}),
            ),
            (
                ChatEvent::ReactionAdded {
                    conversation_id: conversation,
                    message_id: message,
                    emoji: "👍".to_owned(),
                    user_id: user(3),
                },
                EventClass::Ordered,
                json!({"type": "reaction.added", "conversation_id": c, "message_id": m, "emoji": "👍", "user_id": 3}),
            ),
            (
                ChatEvent::ReactionRemoved {
                    conversation_id: conversation,
                    message_id: message,
                    emoji: "👍".to_owned(),
                    user_id: user(3),
                },
                EventClass::Ordered,
                json!({"type": "reaction.removed", "conversation_id": c, "message_id": m, "emoji": "👍", "user_id": 3}),
            ),
            (
                ChatEvent::ConversationRead {
                    conversation_id: conversation,
                    user_id: user(2),
                    last_read_seq: Seq::new(9).unwrap(),
                    last_read_at: at,
                },
                EventClass::Ordered,
                json!({"type": "conversation.read", "conversation_id": c, "user_id": 2, "last_read_seq": 9, "last_read_at": "2026-11-24T10:00:00.500Z"}),
            ),
            (
                ChatEvent::Typing {
                    conversation_id: conversation,
                    user_id: user(2),
                    is_typing: true,
                },
                EventClass::Typing,
                json!({"type": "typing", "conversation_id": c, "user_id": 2, "is_typing": true}),
            ),
            (
                ChatEvent::ParticipantAdded {
                    conversation_id: conversation,
                    user_id: user(4),
                    role: Role::Member,
                },
                EventClass::Ordered,
                json!({"type": "participant.added", "conversation_id": c, "user_id": 4, "role": "MEMBER"}),
            ),
            (
                ChatEvent::ParticipantRemoved {
                    conversation_id: conversation,
                    user_id: user(4),
                },
                EventClass::Ordered,
                json!({"type": "participant.removed", "conversation_id": c, "user_id": 4}),
            ),
            (
                ChatEvent::ParticipantUpdated {
                    conversation_id: conversation,
                    user_id: user(4),
                    role: Some(Role::Admin),
                },
                EventClass::Ordered,
                json!({"type": "participant.updated", "conversation_id": c, "user_id": 4, "role": "ADMIN"}),
            ),
            (
                ChatEvent::ParticipantUpdated {
                    conversation_id: conversation,
                    user_id: user(4),
                    role: None,
                },
                EventClass::Ordered,
                json!({"type": "participant.updated", "conversation_id": c, "user_id": 4}),
            ),
        ];
        for (event, class, expected) in cases {
            let name = event.name();
            let (got_class, got) = encoded(event);
            assert_eq!(got_class, class, "{name}");
            assert_eq!(got, expected, "{name}");
        }
    }

    #[test]
    fn a_stored_change_carries_its_pos_last_and_sync_serves_the_same_object() {
        let event = ChatEvent::ReactionAdded {
            conversation_id: ConversationId::new(),
            message_id: MessageId::new(),
            emoji: "👍🏽".to_owned(),
            user_id: user(3),
        };
        let frame = encode(&Delivery {
            event: event.clone(),
            recipients: vec![user(1)],
            pos: Some(FeedPos::new(42)),
        })
        .unwrap();
        assert!(
            frame.payload.ends_with(r#","pos":42}"#),
            "{}",
            &*frame.payload
        );
        assert_eq!(pos_of(&frame.payload), Some(FeedPos::new(42)));
        let parsed: Value = serde_json::from_str(&frame.payload).unwrap();
        assert_eq!(parsed["pos"], 42);
        assert_eq!(parsed["emoji"], "👍🏽");
        assert_eq!(event_value(&event, FeedPos::new(42)).unwrap(), parsed);
    }

    #[test]
    fn only_a_top_level_pos_is_read_back() {
        let cases = [
            (r#"{"type":"x","pos":7}"#, Some(7)),
            (
                r#"{"type":"x","a":{"b":1},"pos":18446744073709551615}"#,
                Some(u64::MAX),
            ),
            (
                r#"{"type":"typing","conversation_id":"c","user_id":2,"is_typing":true}"#,
                None,
            ),
            (r#"{"type":"pong","request_id":5}"#, None),
            (r#"{"type":"x","a":{"pos":7}}"#, None),
            (r#"{"type":"x","content":",\"pos\":7"}"#, None),
            (r#"{"type":"x","pos":}"#, None),
            (r#"{"type":"x","pos":99999999999999999999}"#, None),
            (r#"{"type":"x","opos":7}"#, None),
            ("", None),
            ("}", None),
        ];
        for (text, expected) in cases {
            assert_eq!(pos_of(text), expected.map(FeedPos::new), "{text}");
        }
    }

    #[test]
    fn typing_never_carries_a_pos() {
        let text = event_text(
            &ChatEvent::Typing {
                conversation_id: ConversationId::new(),
                user_id: user(2),
                is_typing: true,
            },
            None,
        )
        .unwrap();
        assert_eq!(pos_of(&text), None);
    }
}
