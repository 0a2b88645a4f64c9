//! Domain events: what changed, published after every change so that connected clients
//! learn of it at once. Encoding them for the wire is an adapter's business.

use crate::{
    ConversationDetails, ConversationId, MessageId, MessageView, Role, Seq, Timestamp, UserId,
};

/// Something that happened in a conversation.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatEvent {
    /// A message was sent (`message.created`).
    MessageCreated(MessageView),
    /// A message was edited (`message.updated`).
    MessageUpdated(MessageView),
    /// A message was deleted (`message.deleted`).
    MessageDeleted {
        /// The conversation.
        conversation_id: ConversationId,
        /// The deleted message.
        message_id: MessageId,
        /// Its position.
        seq: Seq,
    },
    /// A reaction was put on a message (`reaction.added`).
    ReactionAdded {
        /// The conversation.
        conversation_id: ConversationId,
        /// The message.
        message_id: MessageId,
        /// The emoji.
        emoji: String,
        /// Who reacted.
        user_id: UserId,
    },
    /// A reaction was taken off a message (`reaction.removed`).
    ReactionRemoved {
        /// The conversation.
        conversation_id: ConversationId,
        /// The message.
        message_id: MessageId,
        /// The emoji.
        emoji: String,
        /// Who had reacted.
        user_id: UserId,
    },
    /// A read marker moved (`conversation.read`).
    ConversationRead {
        /// The conversation.
        conversation_id: ConversationId,
        /// The reader.
        user_id: UserId,
        /// The newest `seq` read.
        last_read_seq: Seq,
        /// When.
        last_read_at: Timestamp,
    },
    /// Someone started or stopped typing (`typing`); never stored.
    Typing {
        /// The conversation.
        conversation_id: ConversationId,
        /// Who types.
        user_id: UserId,
        /// Started (true) or stopped (false).
        is_typing: bool,
    },
    /// A conversation was created (`conversation.created`).
    ConversationCreated(ConversationDetails),
    /// A conversation was renamed, archived or unarchived (`conversation.updated`).
    ConversationUpdated(ConversationDetails),
    /// A user was added or re-added (`participant.added`).
    ParticipantAdded {
        /// The conversation.
        conversation_id: ConversationId,
        /// The added user.
        user_id: UserId,
        /// Their role.
        role: Role,
    },
    /// A user left or was removed (`participant.removed`).
    ParticipantRemoved {
        /// The conversation.
        conversation_id: ConversationId,
        /// The user who is gone.
        user_id: UserId,
    },
    /// A participant's role changed (`participant.updated`).
    ParticipantUpdated {
        /// The conversation.
        conversation_id: ConversationId,
        /// The participant.
        user_id: UserId,
        /// The new role, when it changed.
        role: Option<Role>,
    },
}

impl ChatEvent {
    /// The conversation the event belongs to.
    pub fn conversation_id(&self) -> ConversationId {
        match self {
            ChatEvent::MessageCreated(view) | ChatEvent::MessageUpdated(view) => {
                view.message.conversation_id
            }
            ChatEvent::ConversationCreated(details) | ChatEvent::ConversationUpdated(details) => {
                details.conversation.id
            }
            ChatEvent::MessageDeleted {
                conversation_id, ..
            }
            | ChatEvent::ReactionAdded {
                conversation_id, ..
            }
            | ChatEvent::ReactionRemoved {
                conversation_id, ..
            }
            | ChatEvent::ConversationRead {
                conversation_id, ..
            }
            | ChatEvent::Typing {
                conversation_id, ..
            }
            | ChatEvent::ParticipantAdded {
                conversation_id, ..
            }
            | ChatEvent::ParticipantRemoved {
                conversation_id, ..
            }
            | ChatEvent::ParticipantUpdated {
                conversation_id, ..
            } => *conversation_id,
        }
    }

    /// The wire name of the event (`message.created`, …), shared by every transport.
    pub fn name(&self) -> &'static str {
        match self {
            ChatEvent::MessageCreated(_) => "message.created",
            ChatEvent::MessageUpdated(_) => "message.updated",
            ChatEvent::MessageDeleted { .. } => "message.deleted",
            ChatEvent::ReactionAdded { .. } => "reaction.added",
            ChatEvent::ReactionRemoved { .. } => "reaction.removed",
            ChatEvent::ConversationRead { .. } => "conversation.read",
            ChatEvent::Typing { .. } => "typing",
            ChatEvent::ConversationCreated(_) => "conversation.created",
            ChatEvent::ConversationUpdated(_) => "conversation.updated",
            ChatEvent::ParticipantAdded { .. } => "participant.added",
            ChatEvent::ParticipantRemoved { .. } => "participant.removed",
            ChatEvent::ParticipantUpdated { .. } => "participant.updated",
        }
    }
}

/// An event and the users it must reach (every connection of each).
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// What happened.
    pub event: ChatEvent,
    /// Who must hear of it.
    pub recipients: Vec<UserId>,
    /// Its position in the change feed; `None` for what is never stored (typing).
    pub pos: Option<crate::FeedPos>,
}
