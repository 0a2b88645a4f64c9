//! The chat service's use cases. [`ChatService`] has one method per use case; each takes
//! the acting user, enforces every business rule, changes the store through the ports in
//! one atomic step, and publishes an event for every change.
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
mod ordering;
mod rate;
mod read_state;
mod service;
mod sync;

pub use active_members::{ACTIVE_MEMBERS_CAPACITY, ACTIVE_MEMBERS_TTL};
pub use conversations::{ConversationUpdate, CreateConversation, OpenedDirect};
pub use error::{ConflictCode, ServiceError};
pub use messages::{SendMessage, SentMessage};
pub use rate::{ActionClass, ActionRates, MAX_TRACKED_USERS, Rate};
pub use service::{ChatService, Limits, Ports};
pub use sync::{SyncLimit, SyncPage, SyncToken, SyncedEvent};

/// Re-exported so embedders need only this crate and `chat-domain` to call the service.
pub use chat_ports::{
    ArchivedFilter, HistoryPage, HistoryQuery, InboxCursor, InboxItem, InboxPage, InboxQuery,
    PageLimit, ReadState, UnreadConversation, UnreadSummary,
};
