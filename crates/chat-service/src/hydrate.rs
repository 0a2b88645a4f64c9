//! Hydration: turning a change of the feed (references and small facts) into the
//! [`ChatEvent`] of the same name, as the WebSocket frame shows it, from the current rows.
//! Shared by `sync` (a page for one reader) and the relay (live publishing). A message
//! that is gone or deleted is never served: its `message.created` / `message.updated`
//! are skipped (its `message.deleted` still goes out).

use std::collections::HashMap;

use chat_domain::{
    Change, ChangeKind, ChatEvent, ConversationDetails, ConversationId, MessageId, MessageView,
};
use chat_ports::{ConversationStore, MessageStore, StoreError};

/// Hydrates the changes of one page (or one batch), looking each message and each
/// conversation up at most once.
pub(crate) struct Hydrator<'a> {
    messages: &'a dyn MessageStore,
    conversations: &'a dyn ConversationStore,
    message_cache: HashMap<MessageId, Option<MessageView>>,
    conversation_cache: HashMap<ConversationId, Option<ConversationDetails>>,
}

impl<'a> Hydrator<'a> {
    pub(crate) fn new(
        messages: &'a dyn MessageStore,
        conversations: &'a dyn ConversationStore,
    ) -> Self {
        Self {
            messages,
            conversations,
            message_cache: HashMap::new(),
            conversation_cache: HashMap::new(),
        }
    }

    /// The event `change` is announced as, or `None` when there is nothing to serve (the
    /// message is gone or deleted, the conversation is gone).
    ///
    /// # Errors
    /// The store's error when a lookup fails; nothing is cached for it.
    pub(crate) async fn hydrate(
        &mut self,
        change: &Change,
    ) -> Result<Option<ChatEvent>, StoreError> {
        let conversation_id = change.conversation_id;
        Ok(match &change.kind {
            ChangeKind::MessageCreated { message_id } => self
                .live_message(*message_id)
                .await?
                .map(ChatEvent::MessageCreated),
            ChangeKind::MessageUpdated { message_id } => self
                .live_message(*message_id)
                .await?
                .map(ChatEvent::MessageUpdated),
            ChangeKind::MessageDeleted { message_id, seq } => Some(ChatEvent::MessageDeleted {
                conversation_id,
                message_id: *message_id,
                seq: *seq,
            }),
            ChangeKind::ReactionAdded {
                message_id,
                user_id,
                emoji,
            } => Some(ChatEvent::ReactionAdded {
                conversation_id,
                message_id: *message_id,
                emoji: emoji.clone(),
                user_id: *user_id,
            }),
            ChangeKind::ReactionRemoved {
                message_id,
                user_id,
                emoji,
            } => Some(ChatEvent::ReactionRemoved {
                conversation_id,
                message_id: *message_id,
                emoji: emoji.clone(),
                user_id: *user_id,
            }),
            ChangeKind::ConversationRead {
                user_id,
                last_read_seq,
                last_read_at,
            } => Some(ChatEvent::ConversationRead {
                conversation_id,
                user_id: *user_id,
                last_read_seq: *last_read_seq,
                last_read_at: *last_read_at,
            }),
            ChangeKind::ConversationCreated => self
                .conversation(conversation_id)
                .await?
                .map(ChatEvent::ConversationCreated),
            ChangeKind::ConversationUpdated => self
                .conversation(conversation_id)
                .await?
                .map(ChatEvent::ConversationUpdated),
            ChangeKind::ParticipantAdded { user_id, role } => Some(ChatEvent::ParticipantAdded {
                conversation_id,
                user_id: *user_id,
                role: *role,
            }),
            ChangeKind::ParticipantRemoved { user_id } => Some(ChatEvent::ParticipantRemoved {
                conversation_id,
                user_id: *user_id,
            }),
            ChangeKind::ParticipantUpdated { user_id, role } => {
                Some(ChatEvent::ParticipantUpdated {
                    conversation_id,
                    user_id: *user_id,
                    role: Some(*role),
                })
            }
        })
    }

    /// The message as it is now, when it exists and is not deleted.
    async fn live_message(&mut self, id: MessageId) -> Result<Option<MessageView>, StoreError> {
        if let Some(cached) = self.message_cache.get(&id) {
            return Ok(cached.clone());
        }
        let found = self
            .messages
            .find_message(id)
            .await?
            .filter(|view| !view.message.is_deleted());
        self.message_cache.insert(id, found.clone());
        Ok(found)
    }

    /// The conversation with its participants as it is now.
    pub(crate) async fn conversation(
        &mut self,
        id: ConversationId,
    ) -> Result<Option<ConversationDetails>, StoreError> {
        if let Some(cached) = self.conversation_cache.get(&id) {
            return Ok(cached.clone());
        }
        let found = self.conversations.conversation_details(id).await?;
        self.conversation_cache.insert(id, found.clone());
        Ok(found)
    }
}
