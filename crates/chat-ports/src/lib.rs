//! The ports of the chat service: what the use cases need done by the outside world.
//!
//! Each method is shaped after a use case, coarse enough that an adapter can make it
//! atomic (one transaction on MySQL, one lock on the in-memory store). Adapters implement
//! these traits; `chat-service` calls them through `Arc<dyn …>`. The contract of each
//! method is written on it with MUST wording, and `chat-contract` checks every adapter
//! against it.

#![forbid(unsafe_code)]

pub mod at_rest;
pub mod directory;
pub mod error;
pub mod events;
pub mod feed;
pub mod store;
pub mod stored;

pub use at_rest::{ReencryptBatch, ReencryptStore};
pub use directory::{Clock, PostingDirectory, SystemClock, UserDirectory};
pub use error::{PublishError, StoreConflict, StoreError};
pub use events::{DiscardingPublisher, EventPublisher};
pub use feed::{ChangeFeed, FeedBounds, Purged, ReaderChanges};
pub use store::{
    Appended, ArchivedFilter, ConversationChanged, ConversationStore, Deleted, DirectConversation,
    Edited, FIND_MESSAGES_MAX, HistoryPage, HistoryQuery, InboxCursor, InboxItem, InboxPage,
    InboxQuery, MessageStore, NewConversation, NewMessage, PageLimit, ParticipantRemoved,
    ParticipantsAdded, ReactionChange, ReadState, ReadStateStore, UnreadConversation,
    UnreadSummary,
};

#[cfg(feature = "mock")]
pub use directory::{MockClock, MockPostingDirectory, MockUserDirectory};
#[cfg(feature = "mock")]
pub use events::MockEventPublisher;
#[cfg(feature = "mock")]
pub use feed::MockChangeFeed;
#[cfg(feature = "mock")]
pub use store::{MockConversationStore, MockMessageStore, MockReadStateStore};
