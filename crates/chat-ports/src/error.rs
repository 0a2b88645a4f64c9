//! The errors ports return. Adapters translate driver errors into these; no SQL text, no
//! driver type crosses a port.

/// A conflict with the stored state that an adapter detects atomically.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreConflict {
    /// The conversation is archived, so it is read-only.
    ConversationArchived,
    /// The change would leave the conversation without an active admin.
    LastAdmin,
    /// A new reaction would break a reaction cap (counted under the message's lock).
    ReactionCap(chat_domain::ReactionCap),
}

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The addressed conversation, message or participant does not exist (or, for a
    /// message, is deleted).
    #[error("not found")]
    NotFound,
    /// The change conflicts with the stored state.
    #[error("conflict: {0:?}")]
    Conflict(StoreConflict),
    /// The store could not be reached or timed out; trying again later may succeed. The
    /// text is for logs only and holds no SQL.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// Why an event could not be published. Publishing is best effort: the change it
/// announces is already stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event not published: {0}")]
pub struct PublishError(pub String);
