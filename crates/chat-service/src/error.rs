//! The one error type of the use cases; `chat-http` maps each variant to a status and a
//! problem code in one place.

use std::time::Duration;

use chat_domain::{ReactionCap, Refusal, ValidationError};
use chat_ports::{StoreConflict, StoreError};

/// Which conflict with the stored state refused a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictCode {
    /// The conversation is archived and so read-only.
    ConversationArchived,
    /// The change would leave the conversation without an admin.
    LastAdmin,
    /// The message already carries the most distinct emoji it may.
    TooManyEmoji,
    /// The user already put the most reactions they may on the message.
    TooManyReactions,
}

impl ConflictCode {
    /// The stable code clients see (`conversation_archived`, `last_admin`,
    /// `too_many_emoji`, `too_many_reactions`).
    pub fn as_str(self) -> &'static str {
        match self {
            ConflictCode::ConversationArchived => "conversation_archived",
            ConflictCode::LastAdmin => "last_admin",
            ConflictCode::TooManyEmoji => "too_many_emoji",
            ConflictCode::TooManyReactions => "too_many_reactions",
        }
    }
}

/// Why a use case refused or failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// The thing does not exist, or the caller may not know that it does.
    #[error("not found")]
    NotFound,
    /// The caller sees the thing but may not do this to it.
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// The input breaks a rule.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The offending field, as clients spell it.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The change conflicts with the stored state.
    #[error("conflict: {}", code.as_str())]
    Conflict {
        /// Which conflict.
        code: ConflictCode,
    },
    /// The caller sends too fast; try again after the given time.
    #[error("rate limited")]
    RateLimited {
        /// When to try again.
        retry_after: Duration,
    },
    /// The store is unavailable; retrying later may succeed. Nothing was half-written.
    #[error("unavailable")]
    Unavailable,
    /// The sync token is of another feed (database), older than the retention, or
    /// ahead of the feed: the client reloads and starts again from a fresh token.
    #[error("sync token expired")]
    SyncTokenExpired,
}

impl ServiceError {
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        ServiceError::Invalid {
            field,
            reason: reason.into(),
        }
    }

    pub(crate) fn archived() -> Self {
        ServiceError::Conflict {
            code: ConflictCode::ConversationArchived,
        }
    }
}

impl From<ValidationError> for ServiceError {
    fn from(err: ValidationError) -> Self {
        ServiceError::Invalid {
            field: err.field(),
            reason: err.reason().to_owned(),
        }
    }
}

impl From<ReactionCap> for ServiceError {
    fn from(cap: ReactionCap) -> Self {
        ServiceError::Conflict {
            code: match cap {
                ReactionCap::DistinctEmoji => ConflictCode::TooManyEmoji,
                ReactionCap::PerUser => ConflictCode::TooManyReactions,
            },
        }
    }
}

impl From<StoreError> for ServiceError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound => ServiceError::NotFound,
            StoreError::Conflict(StoreConflict::ConversationArchived) => ServiceError::archived(),
            StoreError::Conflict(StoreConflict::LastAdmin) => ServiceError::Conflict {
                code: ConflictCode::LastAdmin,
            },
            StoreError::Conflict(StoreConflict::ReactionCap(cap)) => ServiceError::from(cap),
            StoreError::Forbidden(reason) => ServiceError::Forbidden(reason),
            // Only adding participants grows a conversation after its creation.
            StoreError::TooManyParticipants { max } => too_many_participants("user_ids", max),
            StoreError::Unavailable(reason) => {
                tracing::warn!(%reason, "store unavailable");
                ServiceError::Unavailable
            }
        }
    }
}

impl From<Refusal> for ServiceError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::NotParticipant => ServiceError::NotFound,
            Refusal::Forbidden(reason) => ServiceError::Forbidden(reason),
            Refusal::TooManyParticipants { max } => too_many_participants("user_ids", max),
        }
    }
}

/// The answer to a change past the participant limit: the listed users are too many.
pub(crate) fn too_many_participants(field: &'static str, max: usize) -> ServiceError {
    ServiceError::invalid(
        field,
        format!("a conversation has at most {max} participants"),
    )
}
