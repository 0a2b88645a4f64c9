//! The change feed port: the durable log of every change, read by position.
//!
//! Every write port method that changes durable state (see [`ChangeKind`] for the list)
//! MUST append its changes to the feed in the same atomic unit of work as the change
//! itself (one transaction on a database, under the lock in memory), a fixed number of
//! entries per change whatever the group size: `append_message` exactly one
//! `message.created` (for announcements too, whoever their sender): the move of the
//! sender's marker it implies is NOT logged, as a `message.created` from X at seq N means
//! X's marker is at least N (readers apply that rule; one row and one live frame per send);
//! `edit_message` one `message.updated`; `delete_message` one `message.deleted`;
//! `add_reaction` / `remove_reaction` one `reaction.added` / `reaction.removed` when the
//! reaction set changed (nothing for a repeat); `mark_read` one `conversation.read` when
//! the marker moved; `create_conversation`
//! and a `get_or_create_direct` that created one `conversation.created`;
//! `rename_conversation`, `archive_conversation`, `unarchive_conversation` one
//! `conversation.updated` when something changed; `add_participants` one
//! `participant.added` per user who joined; `remove_participant` one
//! `participant.removed` (and one `participant.updated` for an admin it promoted);
//! `set_role` one `participant.updated` when the role changed. Typing and muting are
//! not changes of the feed. A write that fails appends nothing.
//!
//! Every read (`feed_bounds`, `changes_after`, `reader_changes`) MUST see every change
//! committed before it was called (a caller reads its own writes), even where positions
//! are assigned after the commit (MySQL's stamper: the read waits for it, boundedly).

use std::time::Duration;

use async_trait::async_trait;
use chat_domain::{Change, FeedId, FeedPos, MembershipWindow, Timestamp, UserId};

use crate::StoreError;

/// Where a feed stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedBounds {
    /// The feed's identity: positions of another feed mean nothing here.
    pub feed_id: FeedId,
    /// Every committed change above this position is still kept (retention purges at or
    /// below it); a reader at a position below the floor may have missed changes.
    pub floor: FeedPos,
    /// The newest position a reader can see: every change at or below it has committed
    /// and is readable, and no change will ever be numbered at or below it again.
    pub head: FeedPos,
}

/// A page of one reader's changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaderChanges {
    /// Changes after the asked position, oldest first, at most the asked limit: those of
    /// every conversation in which the reader has (or had) a participant row, a superset
    /// of what the reader may see ([`chat_domain::visible_changes`] decides).
    pub changes: Vec<Change>,
    /// One window for every conversation of `changes`.
    pub windows: Vec<MembershipWindow>,
    /// The head when the page was read; `changes` stop at or below it.
    pub head: FeedPos,
}

/// What a purge did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Purged {
    /// The floor after the purge.
    pub floor: FeedPos,
    /// Entries deleted by this call.
    pub deleted: u64,
    /// True when entries at or below the floor remain (call again).
    pub more: bool,
}

/// The change feed of a store.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait ChangeFeed: Send + Sync {
    /// The feed's identity, floor and head.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the store cannot be reached.
    async fn feed_bounds(&self) -> Result<FeedBounds, StoreError>;

    /// The committed changes after `after`, oldest first, at most `limit`, numbered
    /// without gaps: a reader that asks again from the last position it got MUST never
    /// miss a change that commits later (positions are assigned in commit order, not at
    /// insert), and MUST never see a change twice.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the store cannot be reached.
    async fn changes_after(&self, after: FeedPos, limit: usize) -> Result<Vec<Change>, StoreError>;

    /// [`ChangeFeed::changes_after`] for a reader that waits with
    /// [`ChangeFeed::wait_past`] between reads (the relay): the same gap-free order, but
    /// only the changes numbered so far. A store that numbers changes after their commit
    /// does not wait here for those committed and not numbered yet, which
    /// `changes_after` does so that a reader sees its own writes: the next `wait_past`
    /// announces them. The default is `changes_after`.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the store cannot be reached.
    async fn numbered_after(
        &self,
        after: FeedPos,
        limit: usize,
    ) -> Result<Vec<Change>, StoreError> {
        self.changes_after(after, limit).await
    }

    /// The changes after `after` of every conversation `reader` has (or had) a
    /// participant row in, oldest first, at most `limit`, with the reader's membership
    /// windows for them; the same gap-free order as [`ChangeFeed::changes_after`].
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the store cannot be reached.
    async fn reader_changes(
        &self,
        reader: UserId,
        after: FeedPos,
        limit: usize,
    ) -> Result<ReaderChanges, StoreError>;

    /// Waits until the head passes `after` or `timeout` has passed, whichever is first,
    /// and answers the head. A store may wake early; callers read and wait again.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the store cannot be reached.
    async fn wait_past(&self, after: FeedPos, timeout: Duration) -> Result<FeedPos, StoreError>;

    /// Raises the floor to the newest change committed before `older_than` and deletes at
    /// most `batch` entries at or below the floor, without blocking writers for longer
    /// than one small batch. The floor moves before anything is deleted, so a reader
    /// never gets a page with a hole in it.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the store cannot be reached.
    async fn purge(&self, older_than: Timestamp, batch: usize) -> Result<Purged, StoreError>;
}
