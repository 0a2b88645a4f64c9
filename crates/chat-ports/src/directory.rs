//! Ports to what the chat service does not own: the platform's users and postings, and
//! the clock.

use std::collections::HashMap;

use async_trait::async_trait;
use chat_domain::{DisplayName, PostingId, Timestamp, UserId};

use crate::StoreError;

/// The platform's users (`app_users`).
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait UserDirectory: Send + Sync {
    /// Of `users`, those that do not exist. Order follows the input; duplicates collapse.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the directory cannot be reached.
    async fn missing_users(&self, users: &[UserId]) -> Result<Vec<UserId>, StoreError>;

    /// The display names of those of `users` that exist and have one.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the directory cannot be reached.
    async fn display_names(&self, users: &[UserId]) -> Result<HashMap<UserId, String>, StoreError>;

    /// Makes sure `user` exists, with `name` as display name when one is given (a verified
    /// token's `name` claim, just in time). It MUST be idempotent and safe under
    /// concurrent calls for the same user.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the directory cannot be reached.
    async fn upsert_user(&self, user: UserId, name: Option<DisplayName>) -> Result<(), StoreError>;
}

/// The platform's postings (`POSTINGS`).
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait PostingDirectory: Send + Sync {
    /// Whether the posting exists.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the directory cannot be reached.
    async fn posting_exists(&self, posting: PostingId) -> Result<bool, StoreError>;
}

/// The time, as the service sees it (replaceable in tests).
#[cfg_attr(feature = "mock", mockall::automock)]
pub trait Clock: Send + Sync {
    /// Now, in UTC, truncated to milliseconds.
    fn now(&self) -> Timestamp;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let now = time::OffsetDateTime::now_utc();
        let millis = now.millisecond();
        now.replace_millisecond(millis).unwrap_or(now)
    }
}
