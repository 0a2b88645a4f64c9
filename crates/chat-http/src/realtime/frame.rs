//! Server event frames: every [`ChatEvent`] is encoded once, into the JSON text that each
//! recipient's connections are sent as it is (`{"type":"message.created", …payload}`),
//! carried by the real-time transport (`chat-realtime`) as an opaque [`Frame`].

use bytestring::ByteString;
use chat_domain::{ChatEvent, ConversationDetails, Delivery};
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
    let text = serde_json::to_string(&EventFrame::from(event))?;
    Ok(Frame {
        conversation_id: event.conversation_id(),
        class,
        recipients: delivery.recipients.clone(),
        payload: ByteString::from(text),
    })
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
}
