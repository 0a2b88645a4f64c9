//! The step from a message to store to the message stored, written once and used by every
//! adapter, so that what a client gets back does not depend on which store keeps it.

use chat_domain::{Message, MessageView, Seq, to_stored_precision};

use crate::store::NewMessage;

impl NewMessage {
    /// The message as a store keeps it once it holds `seq`: the body's parts as text,
    /// neither edited nor deleted, and `created_at` at the stored precision (UTC, whole
    /// seconds; see [`to_stored_precision`]).
    pub fn to_stored(&self, seq: Seq) -> Message {
        let body = &self.body;
        Message {
            id: self.id,
            conversation_id: self.conversation_id,
            seq,
            sender_id: self.sender_id,
            content: body.content().as_str().to_owned(),
            message_type: body.message_type(),
            media_url: body.media_url().map(|u| u.as_str().to_owned()),
            media_metadata: body.media_metadata().map(|m| m.as_json().to_owned()),
            reply_to_id: self.reply_to_id,
            client_message_id: self
                .client_message_id
                .as_ref()
                .map(|c| c.as_str().to_owned()),
            created_at: to_stored_precision(self.created_at),
            edited_at: None,
            deleted_at: None,
            is_system_message: body.is_system(),
            undecryptable: false,
        }
    }

    /// The view of the message just stored as `seq` (see [`NewMessage::to_stored`]): no
    /// reactions yet, and the sender's display name as the store knows it.
    pub fn to_stored_view(&self, seq: Seq, sender_name: Option<String>) -> MessageView {
        MessageView {
            message: self.to_stored(seq),
            sender_name,
            reactions: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use chat_domain::{
        ClientMessageId, ConversationId, MessageBody, MessageContent, MessageId, MessageType, Seq,
        UserId,
    };
    use time::macros::datetime;

    use crate::NewMessage;

    #[test]
    fn a_stored_message_keeps_whole_seconds_and_every_part_of_the_body() {
        let new = NewMessage {
            id: MessageId::new(),
            conversation_id: ConversationId::new(),
            sender_id: UserId::new(7).unwrap(),
            body: MessageBody::from_user(
                MessageContent::parse("hello").unwrap(),
                MessageType::Text,
                None,
                None,
            )
            .unwrap(),
            reply_to_id: Some(MessageId::new()),
            client_message_id: Some(ClientMessageId::parse("key-1").unwrap()),
            created_at: datetime!(2026-03-01 08:20:30.456 UTC),
        };
        let view = new.to_stored_view(Seq::new(3).unwrap(), Some("Ann".into()));
        let message = &view.message;
        assert_eq!(message.id, new.id);
        assert_eq!(message.conversation_id, new.conversation_id);
        assert_eq!(message.seq, Seq::new(3).unwrap());
        assert_eq!(message.sender_id, new.sender_id);
        assert_eq!(message.content, "hello");
        assert_eq!(message.message_type, MessageType::Text);
        assert_eq!(message.reply_to_id, new.reply_to_id);
        assert_eq!(message.client_message_id.as_deref(), Some("key-1"));
        assert_eq!(message.created_at, datetime!(2026-03-01 08:20:30 UTC));
        assert_eq!((message.edited_at, message.deleted_at), (None, None));
        assert!(!message.is_system_message);
        assert_eq!(view.sender_name.as_deref(), Some("Ann"));
        assert!(view.reactions.is_empty());
    }
}
