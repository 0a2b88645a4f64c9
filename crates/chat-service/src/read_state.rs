//! Use cases on read state: marking read, muting, the unread badge and typing
//! indicators.

use chat_domain::{ChatEvent, ConversationId, MessageId, UserId};
use chat_ports::{InboxItem, ReadState, UnreadSummary};

use crate::{ActionClass, ChatService, ServiceError};

impl ChatService {
    /// Moves the caller's read marker up to a message (default: the newest). The marker
    /// only moves forward; receipts are recorded for the others' messages it passes.
    ///
    /// # Errors
    /// `NotFound` for non-participants; `Invalid` when `up_to` is not a message of this
    /// conversation; `Unavailable` when the store fails.
    pub async fn mark_read(
        &self,
        actor: UserId,
        conversation: ConversationId,
        up_to: Option<MessageId>,
    ) -> Result<ReadState, ServiceError> {
        self.check_rate(ActionClass::Read, actor)?;
        self.member_view(conversation, actor).await?;
        let up_to_seq = match up_to {
            None => None,
            Some(id) => {
                let target = self
                    .ports
                    .messages
                    .find_message(id)
                    .await?
                    .filter(|v| v.message.conversation_id == conversation)
                    .ok_or_else(|| {
                        ServiceError::invalid(
                            "up_to_message_id",
                            "must be a message of this conversation",
                        )
                    })?;
                Some(target.message.seq)
            }
        };
        Ok(self
            .ports
            .read_state
            .mark_read(conversation, actor, up_to_seq, self.now())
            .await?)
    }

    /// Mutes or unmutes a conversation for the caller.
    ///
    /// # Errors
    /// `NotFound` for non-participants; `Unavailable` when the store fails.
    pub async fn set_muted(
        &self,
        actor: UserId,
        conversation: ConversationId,
        muted: bool,
    ) -> Result<InboxItem, ServiceError> {
        self.check_rate(ActionClass::Read, actor)?;
        self.ports
            .read_state
            .set_muted(conversation, actor, muted)
            .await?;
        self.conversation(actor, conversation).await
    }

    /// The caller's unread badge: the total over unmuted conversations, and each
    /// conversation with unread messages.
    ///
    /// # Errors
    /// `Unavailable` when the store fails.
    pub async fn unread(&self, actor: UserId) -> Result<UnreadSummary, ServiceError> {
        Ok(self.ports.read_state.unread_summary(actor).await?)
    }

    /// Tells the other active participants that the caller started or stopped typing.
    /// Nothing is stored; membership comes from a small cache that lives a couple of
    /// seconds, so repeated frames cost no store round trip.
    ///
    /// # Errors
    /// `RateLimited` over the typing budget (checked before anything else); `NotFound`
    /// for non-participants; `Unavailable` when the store fails.
    pub async fn typing(
        &self,
        actor: UserId,
        conversation: ConversationId,
        is_typing: bool,
    ) -> Result<(), ServiceError> {
        // The budget first: over it, nothing at all is read or sent.
        self.check_rate(ActionClass::Typing, actor)?;
        let members = self.active_members(conversation).await?;
        if !members.contains(&actor) {
            return Err(ServiceError::NotFound);
        }
        let others: Vec<UserId> = members.iter().copied().filter(|u| *u != actor).collect();
        self.publish_ephemeral(
            ChatEvent::Typing {
                conversation_id: conversation,
                user_id: actor,
                is_typing,
            },
            others,
        )
        .await;
        Ok(())
    }
}
