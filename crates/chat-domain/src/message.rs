//! Messages: the validated body a sender submits, the stored record, and the view with
//! its sender's name and aggregated reactions.

use crate::{
    ConversationId, MediaMetadata, MediaUrl, MessageContent, MessageId, MessageType, Seq,
    Timestamp, UserId, ValidationError,
};

/// What a message says, validated as a whole: IMAGE and FILE carry a `media_url`, and only
/// the service itself writes SYSTEM messages.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageBody {
    content: MessageContent,
    message_type: MessageType,
    media_url: Option<MediaUrl>,
    media_metadata: Option<MediaMetadata>,
}

impl MessageBody {
    /// A body a user sends.
    ///
    /// # Errors
    /// A [`ValidationError`] on `message_type` for SYSTEM, or on `media_url` when an IMAGE
    /// or FILE has none.
    pub fn from_user(
        content: MessageContent,
        message_type: MessageType,
        media_url: Option<MediaUrl>,
        media_metadata: Option<MediaMetadata>,
    ) -> Result<Self, ValidationError> {
        if message_type == MessageType::System {
            return Err(ValidationError::new(
                "message_type",
                "SYSTEM messages are written by the service only",
            ));
        }
        if matches!(message_type, MessageType::Image | MessageType::File) && media_url.is_none() {
            return Err(ValidationError::new(
                "media_url",
                "is required for IMAGE and FILE messages",
            ));
        }
        Ok(Self {
            content,
            message_type,
            media_url,
            media_metadata,
        })
    }

    /// A SYSTEM message body: a human-readable line and its structured details.
    pub fn system(content: MessageContent, details: MediaMetadata) -> Self {
        Self {
            content,
            message_type: MessageType::System,
            media_url: None,
            media_metadata: Some(details),
        }
    }

    /// The text.
    pub fn content(&self) -> &MessageContent {
        &self.content
    }

    /// The type.
    pub fn message_type(&self) -> MessageType {
        self.message_type
    }

    /// The media link, if any.
    pub fn media_url(&self) -> Option<&MediaUrl> {
        self.media_url.as_ref()
    }

    /// The media or system details, if any.
    pub fn media_metadata(&self) -> Option<&MediaMetadata> {
        self.media_metadata.as_ref()
    }

    /// Whether this is a SYSTEM message.
    pub fn is_system(&self) -> bool {
        self.message_type == MessageType::System
    }
}

/// A stored message, as the store holds it.
///
/// Text fields are carried as stored: everything this service writes passed
/// [`MessageBody`], but rows written by the system this service replaces predate those
/// rules and must still be served.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Its id.
    pub id: MessageId,
    /// The conversation it belongs to.
    pub conversation_id: ConversationId,
    /// Its position in the conversation (commit order).
    pub seq: Seq,
    /// Who sent it (for SYSTEM messages: the user whose action it records).
    pub sender_id: UserId,
    /// The text.
    pub content: String,
    /// The type.
    pub message_type: MessageType,
    /// The media link, if any.
    pub media_url: Option<String>,
    /// The media or system details as JSON object text, if any.
    pub media_metadata: Option<String>,
    /// The message this one replies to.
    pub reply_to_id: Option<MessageId>,
    /// The sender's idempotency key, if one was given.
    pub client_message_id: Option<String>,
    /// When it was stored.
    pub created_at: Timestamp,
    /// When it was last edited.
    pub edited_at: Option<Timestamp>,
    /// When it was deleted (soft delete).
    pub deleted_at: Option<Timestamp>,
    /// Whether the service wrote it.
    pub is_system_message: bool,
    /// Whether its stored text could not be decrypted (its key is missing from the key
    /// ring, or it failed authentication): `content` is then empty and the media fields
    /// `None`, and clients are told so rather than shown an empty text.
    pub undecryptable: bool,
}

impl Message {
    /// Whether it was soft-deleted.
    pub fn is_deleted(&self) -> bool {
        self.deleted_at.is_some()
    }
}

/// The reactions of one emoji on one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReactionSummary {
    /// The emoji, as stored.
    pub emoji: String,
    /// How many users put it.
    pub count: u32,
    /// Who put it, in order of reaction.
    pub user_ids: Vec<UserId>,
}

/// The most distinct emoji one message may carry, so that a history page stays small.
pub const MAX_DISTINCT_EMOJI_PER_MESSAGE: usize = 50;

/// The most reactions (different emoji) one user may put on one message.
pub const MAX_REACTIONS_PER_USER_PER_MESSAGE: usize = 20;

/// A cap a new reaction would break.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReactionCap {
    /// The message already carries [`MAX_DISTINCT_EMOJI_PER_MESSAGE`] other emoji.
    DistinctEmoji,
    /// The user already put [`MAX_REACTIONS_PER_USER_PER_MESSAGE`] reactions on it.
    PerUser,
}

impl ReactionCap {
    /// Whether a user may add a reaction they do not have yet: `distinct_emoji` is how
    /// many different emoji the message carries, `emoji_present` whether the new one is
    /// among them (by anyone), `users_reactions` how many the user has on it. The one
    /// rule the service checks early and every store re-checks under its lock.
    pub fn refused(
        distinct_emoji: usize,
        emoji_present: bool,
        users_reactions: usize,
    ) -> Option<ReactionCap> {
        if !emoji_present && distinct_emoji >= MAX_DISTINCT_EMOJI_PER_MESSAGE {
            Some(ReactionCap::DistinctEmoji)
        } else if users_reactions >= MAX_REACTIONS_PER_USER_PER_MESSAGE {
            Some(ReactionCap::PerUser)
        } else {
            None
        }
    }

    /// Applies [`ReactionCap::refused`] to a message's aggregated reactions, for `user`
    /// adding `emoji` (`None` also when the user already has that reaction: re-adding is
    /// a no-op, never refused).
    pub fn refused_by(
        reactions: &[ReactionSummary],
        user: UserId,
        emoji: &str,
    ) -> Option<ReactionCap> {
        let same = reactions.iter().find(|r| r.emoji == emoji);
        if same.is_some_and(|r| r.user_ids.contains(&user)) {
            return None;
        }
        let users_reactions = reactions
            .iter()
            .filter(|r| r.user_ids.contains(&user))
            .count();
        ReactionCap::refused(reactions.len(), same.is_some(), users_reactions)
    }
}

/// A message as clients see it: with its sender's name and its reactions, aggregated per
/// emoji in order of first use.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageView {
    /// The message.
    pub message: Message,
    /// The sender's display name, when the directory knows one.
    pub sender_name: Option<String>,
    /// Reactions per emoji, in order of first use.
    pub reactions: Vec<ReactionSummary>,
}

/// That a user has read a message, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The reader.
    pub user_id: UserId,
    /// When it was read.
    pub read_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content() -> MessageContent {
        MessageContent::parse("look").expect("valid")
    }

    #[test]
    fn image_and_file_need_a_media_url() {
        for kind in [MessageType::Image, MessageType::File] {
            let err = MessageBody::from_user(content(), kind, None, None).map_err(|e| e.field());
            assert_eq!(err, Err("media_url"));
            let url = MediaUrl::parse("https://cdn.example.com/x").ok();
            assert!(MessageBody::from_user(content(), kind, url, None).is_ok());
        }
        assert!(MessageBody::from_user(content(), MessageType::Link, None, None).is_ok());
    }

    #[test]
    fn users_cannot_send_system_messages() {
        let err = MessageBody::from_user(content(), MessageType::System, None, None)
            .map_err(|e| e.field());
        assert_eq!(err, Err("message_type"));
    }
}
