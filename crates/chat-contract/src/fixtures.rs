//! Builders the cases share: users, conversations and messages with sensible defaults.

use chat_domain::{
    ClientMessageId, ConversationDetails, ConversationId, ConversationType, DisplayName, GroupName,
    MessageBody, MessageContent, MessageId, MessageType, Timestamp, UserId,
};
use chat_ports::{Appended, NewConversation, NewMessage};
use time::{Duration, OffsetDateTime};

use crate::Ports;

pub(crate) fn user(id: i64) -> UserId {
    UserId::new(id).unwrap()
}

/// A fixed base time plus `seconds`, so orderings are deterministic.
pub(crate) fn at(seconds: i64) -> Timestamp {
    OffsetDateTime::from_unix_timestamp(1_790_000_000).unwrap() + Duration::seconds(seconds)
}

pub(crate) fn text(content: &str) -> MessageBody {
    MessageBody::from_user(
        MessageContent::parse(content).unwrap(),
        MessageType::Text,
        None,
        None,
    )
    .unwrap()
}

pub(crate) fn system(content: &str) -> MessageBody {
    MessageBody::system(
        MessageContent::parse(content).unwrap(),
        chat_domain::MediaMetadata::parse(r#"{"event":"test"}"#).unwrap(),
    )
}

pub(crate) fn new_message(
    conversation: ConversationId,
    sender: UserId,
    body: MessageBody,
    when: Timestamp,
) -> NewMessage {
    NewMessage {
        id: MessageId::new(),
        conversation_id: conversation,
        sender_id: sender,
        body,
        reply_to_id: None,
        client_message_id: None,
        created_at: when,
    }
}

pub(crate) fn with_client_id(mut message: NewMessage, key: &str) -> NewMessage {
    message.client_message_id = Some(ClientMessageId::parse(key).unwrap());
    message
}

impl Ports {
    /// Makes users 1..=n exist, named "User i".
    pub(crate) async fn users_up_to(&self, n: i64) {
        for i in 1..=n {
            let name = DisplayName::parse(&format!("User {i}")).unwrap();
            self.users.upsert_user(user(i), Some(name)).await.unwrap();
        }
    }

    /// A GROUP created by `creator` with `members`, at time `when`.
    pub(crate) async fn group(
        &self,
        creator: i64,
        members: &[i64],
        when: Timestamp,
    ) -> ConversationDetails {
        let id = ConversationId::new();
        self.conversations
            .create_conversation(
                NewConversation {
                    id,
                    kind: ConversationType::Group,
                    name: Some(GroupName::parse("Crew 🚀").unwrap()),
                    posting_id: None,
                    created_by: user(creator),
                    members: members.iter().map(|m| user(*m)).collect(),
                    created_at: when,
                },
                new_message(id, user(creator), system("created"), when),
            )
            .await
            .unwrap()
    }

    /// Appends a text message.
    pub(crate) async fn say(
        &self,
        conversation: ConversationId,
        sender: i64,
        content: &str,
        when: Timestamp,
    ) -> Appended {
        self.messages
            .append_message(new_message(conversation, user(sender), text(content), when))
            .await
            .unwrap()
    }
}

/// A key ring of `ids` (each with a key derived from its id) with `active` active.
pub(crate) fn ring(ids: &[&str], active: &str) -> std::sync::Arc<chat_crypto::KeyRing> {
    let key = |id: &str| {
        let mut bytes = [0x5a_u8; 32];
        for (i, b) in id.bytes().enumerate() {
            bytes[i % 32] ^= b;
        }
        bytes
    };
    let keys = ids
        .iter()
        .map(|id| (chat_crypto::KeyId::parse(id).unwrap(), key(id)));
    let ring =
        chat_crypto::KeyRing::from_keys(keys, chat_crypto::KeyId::parse(active).unwrap()).unwrap();
    std::sync::Arc::new(ring)
}
