//! The chat service's use cases. [`ChatService`] has one method per use case; each takes
//! the acting user, enforces every business rule, and changes the store through the ports
//! in one atomic step, which appends the change to the change feed. Events are published
//! from the feed by the [`Relay`], and read back from it by [`ChatService::sync`].
//!
//! Visibility rule: for anyone who is not an active participant, a conversation and
//! everything in it does not exist ([`ServiceError::NotFound`], never `Forbidden`).

#![forbid(unsafe_code)]

mod active_members;
mod announcements;
mod conversations;
mod error;
mod hydrate;
mod messages;
mod rate;
mod read_state;
mod relay;
mod service;
mod sync;

pub use active_members::{ACTIVE_MEMBERS_CAPACITY, ACTIVE_MEMBERS_TTL};
pub use conversations::{ConversationUpdate, CreateConversation, OpenedDirect};
pub use error::{ConflictCode, ServiceError};
pub use messages::{SendMessage, SentMessage};
pub use rate::{ActionClass, ActionRates, MAX_TRACKED_USERS, Rate};
pub use relay::{RELAY_BATCH, RELAY_MEMBERS_CAPACITY, Relay, RelayHandle};
pub use service::{ChatService, Limits, Ports};
pub use sync::{SyncLimit, SyncPage, SyncToken, SyncedEvent};

/// Re-exported so embedders need only this crate and `chat-domain` to call the service.
pub use chat_ports::{
    ArchivedFilter, HistoryPage, HistoryQuery, InboxCursor, InboxItem, InboxPage, InboxQuery,
    PageLimit, ReadState, UnreadConversation, UnreadSummary,
};
