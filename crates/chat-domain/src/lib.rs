//! The chat service's domain model: identifiers, value objects, entities and events.
//!
//! Every value object here is *parsed*, not validated after the fact: its fields are
//! private, its constructor is fallible, and once you hold one it is valid. This crate does
//! no I/O and knows nothing of HTTP, JSON wire formats or SQL.

#![forbid(unsafe_code)]

pub mod authority;
pub mod change;
pub mod conversation;
pub mod error;
pub mod event;
pub mod ids;
pub mod instant;
pub mod kinds;
pub mod message;
pub mod values;

pub use authority::{Action, Refusal, authorize, check_participant_limit};
pub use change::{
    Change, ChangeKind, FeedId, FeedPos, MembershipMove, MembershipWindow, visible_changes,
};
pub use conversation::{Conversation, ConversationDetails, Participant, ParticipantView};
pub use error::ValidationError;
pub use event::{ChatEvent, Delivery};
pub use ids::{ConversationId, MessageId, PostingId, Seq, UserId};
pub use instant::to_stored_precision;
pub use kinds::{ConversationType, MessageType, Role};
pub use message::{
    MAX_DISTINCT_EMOJI_PER_MESSAGE, MAX_REACTIONS_PER_USER_PER_MESSAGE, Message, MessageBody,
    MessageView, ReactionCap, ReactionSummary, Receipt,
};
pub use values::{
    ClientMessageId, DisplayName, Emoji, GroupName, MediaMetadata, MediaUrl, MessageContent,
};

/// The instant type used throughout the domain (always UTC).
pub type Timestamp = time::OffsetDateTime;
