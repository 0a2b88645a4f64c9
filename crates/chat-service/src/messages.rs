//! Use cases on messages: send (idempotent), read one, history, edit, delete, reactions
//! and receipts.

use chat_domain::{
    Action, ClientMessageId, ConversationId, Emoji, MessageBody, MessageContent, MessageId,
    MessageView, ReactionCap, ReactionSummary, Receipt, UserId, authorize,
};
use chat_ports::{HistoryPage, HistoryQuery, NewMessage};

use crate::{ActionClass, ChatService, ServiceError};

/// A message a user sends.
#[derive(Debug, Clone, PartialEq)]
pub struct SendMessage {
    /// What it says.
    pub body: MessageBody,
    /// The live message of the same conversation it replies to.
    pub reply_to_id: Option<MessageId>,
    /// The sender's idempotency key.
    pub client_message_id: Option<ClientMessageId>,
}

/// The outcome of [`ChatService::send_message`].
#[derive(Debug, Clone, PartialEq)]
pub struct SentMessage {
    /// The stored message (the original one on a repeated `client_message_id`).
    pub view: MessageView,
    /// False when an earlier message with the same `client_message_id` was returned.
    pub created: bool,
}

impl ChatService {
    /// Sends a message: it gets the next `seq` of the conversation, marks the conversation
    /// read for the sender, and reaches every participant. A repeated `client_message_id`
    /// returns the original message (`created: false`) and changes nothing.
    ///
    /// # Errors
    /// `NotFound` for non-participants; `Conflict(conversation_archived)`; `Invalid` for a
    /// SYSTEM body or a `reply_to_id` that is not a live message of this conversation;
    /// `RateLimited`; `Unavailable` when the store fails.
    pub async fn send_message(
        &self,
        actor: UserId,
        conversation: ConversationId,
        request: SendMessage,
    ) -> Result<SentMessage, ServiceError> {
        if request.body.is_system() {
            return Err(ServiceError::invalid(
                "message_type",
                "SYSTEM messages are written by the service only",
            ));
        }
        if let Some(reply_to) = request.reply_to_id {
            // Membership first, so that outsiders learn nothing about the reply target.
            self.member_view(conversation, actor).await?;
            let target = self.ports.messages.find_message(reply_to).await?;
            let valid = target.is_some_and(|t| {
                t.message.conversation_id == conversation && !t.message.is_deleted()
            });
            if !valid {
                return Err(ServiceError::invalid(
                    "reply_to_id",
                    "must be a live message of this conversation",
                ));
            }
        }
        self.check_rate(ActionClass::Send, actor)?;
        // The store checks membership and archiving atomically with the append (and
        // appends the change to the feed, from which the relay publishes it), so the hot
        // path is one store call. No lock is held across it: sends into one conversation
        // reach the store together and share its group commit (one fsync).
        let appended = self
            .ports
            .messages
            .append_message(NewMessage {
                id: MessageId::new(),
                conversation_id: conversation,
                sender_id: actor,
                body: request.body,
                reply_to_id: request.reply_to_id,
                client_message_id: request.client_message_id,
                created_at: self.now(),
            })
            .await?;
        Ok(SentMessage {
            view: appended.view,
            created: appended.created,
        })
    }

    /// One live message of a conversation the caller takes part in.
    ///
    /// # Errors
    /// `NotFound` when it does not exist, is deleted, or the caller is not an active
    /// participant; `Unavailable` when the store fails.
    pub async fn message(&self, actor: UserId, id: MessageId) -> Result<MessageView, ServiceError> {
        let view = self.visible_message(actor, id).await?.0;
        Ok(view)
    }

    /// A page of history, by `seq` keyset.
    ///
    /// # Errors
    /// `NotFound` for non-participants; `Unavailable` when the store fails.
    pub async fn history(
        &self,
        actor: UserId,
        conversation: ConversationId,
        query: HistoryQuery,
    ) -> Result<HistoryPage, ServiceError> {
        self.member_view(conversation, actor).await?;
        Ok(self.ports.messages.history(conversation, query).await?)
    }

    /// Edits a message's content. Only its sender, never a SYSTEM or deleted message,
    /// never in an archived conversation.
    ///
    /// # Errors
    /// `NotFound`; `Forbidden` for anyone but the sender and for SYSTEM messages;
    /// `Conflict(conversation_archived)`; `Unavailable` when the store fails.
    pub async fn edit_message(
        &self,
        actor: UserId,
        id: MessageId,
        content: MessageContent,
    ) -> Result<MessageView, ServiceError> {
        self.check_rate(ActionClass::Edit, actor)?;
        let (view, details) = self.visible_message(actor, id).await?;
        let action = Action::EditMessage {
            sender: view.message.sender_id,
            is_system: view.message.is_system_message,
        };
        let role = details.active_participant(actor).map(|p| p.role);
        authorize(details.conversation.kind, actor, role, action)?;
        if details.conversation.is_archived {
            return Err(ServiceError::archived());
        }
        // The store checks again under its lock.
        let edited = self
            .ports
            .messages
            .edit_message(id, actor, content, self.now())
            .await?;
        Ok(edited.view)
    }

    /// Soft-deletes a message: by its sender, or by an admin of a GROUP or POST_LINKED
    /// conversation. Deleting again is `NotFound`.
    ///
    /// # Errors
    /// `NotFound`; `Forbidden` for anyone else; `Unavailable` when the store fails.
    pub async fn delete_message(&self, actor: UserId, id: MessageId) -> Result<(), ServiceError> {
        self.check_rate(ActionClass::Delete, actor)?;
        let (view, details) = self.visible_message(actor, id).await?;
        let role = details.active_participant(actor).map(|p| p.role);
        let action = Action::DeleteMessage {
            sender: view.message.sender_id,
        };
        authorize(details.conversation.kind, actor, role, action)?;
        self.ports
            .messages
            .delete_message(id, actor, self.now())
            .await?;
        Ok(())
    }

    /// Puts the caller's reaction on a message; idempotent. Returns the message's
    /// reactions afterwards. A message carries at most
    /// [`MAX_DISTINCT_EMOJI_PER_MESSAGE`](chat_domain::MAX_DISTINCT_EMOJI_PER_MESSAGE)
    /// different emoji, and a user puts at most
    /// [`MAX_REACTIONS_PER_USER_PER_MESSAGE`](chat_domain::MAX_REACTIONS_PER_USER_PER_MESSAGE)
    /// on one message.
    ///
    /// # Errors
    /// `NotFound`; `Conflict(conversation_archived)`; `Conflict(too_many_emoji)` and
    /// `Conflict(too_many_reactions)` over the caps; `RateLimited`; `Unavailable` when the
    /// store fails.
    pub async fn add_reaction(
        &self,
        actor: UserId,
        id: MessageId,
        emoji: Emoji,
    ) -> Result<Vec<ReactionSummary>, ServiceError> {
        self.check_rate(ActionClass::React, actor)?;
        let view = self.reactable_message(actor, id).await?;
        // Checked here on what was read, and again by the store under the message's
        // lock, where racing adds cannot both pass.
        if let Some(cap) = ReactionCap::refused_by(&view.reactions, actor, emoji.as_str()) {
            return Err(cap.into());
        }
        let change = self
            .ports
            .messages
            .add_reaction(id, actor, emoji, self.now())
            .await?;
        Ok(change.reactions)
    }

    /// Takes the caller's reaction off a message; idempotent. Returns the message's
    /// reactions afterwards.
    ///
    /// # Errors
    /// `NotFound`; `Conflict(conversation_archived)`; `Unavailable` when the store fails.
    pub async fn remove_reaction(
        &self,
        actor: UserId,
        id: MessageId,
        emoji: Emoji,
    ) -> Result<Vec<ReactionSummary>, ServiceError> {
        self.check_rate(ActionClass::React, actor)?;
        self.reactable_message(actor, id).await?;
        let change = self
            .ports
            .messages
            .remove_reaction(id, actor, emoji)
            .await?;
        Ok(change.reactions)
    }

    /// Who has read a live message, and when.
    ///
    /// # Errors
    /// `NotFound`; `Unavailable` when the store fails.
    pub async fn receipts(
        &self,
        actor: UserId,
        id: MessageId,
    ) -> Result<Vec<Receipt>, ServiceError> {
        self.visible_message(actor, id).await?;
        Ok(self.ports.messages.receipts(id).await?)
    }

    /// A live message the caller may react to, and its conversation: not in an archived
    /// conversation.
    async fn reactable_message(
        &self,
        actor: UserId,
        id: MessageId,
    ) -> Result<MessageView, ServiceError> {
        let (view, details) = self.visible_message(actor, id).await?;
        if details.conversation.is_archived {
            return Err(ServiceError::archived());
        }
        Ok(view)
    }

    /// A live message and its conversation, when the caller is an active participant.
    async fn visible_message(
        &self,
        actor: UserId,
        id: MessageId,
    ) -> Result<(MessageView, chat_domain::ConversationDetails), ServiceError> {
        let view = self
            .ports
            .messages
            .find_message(id)
            .await?
            .filter(|v| !v.message.is_deleted())
            .ok_or(ServiceError::NotFound)?;
        let (details, _) = self
            .member_view(view.message.conversation_id, actor)
            .await?;
        Ok((view, details))
    }
}
