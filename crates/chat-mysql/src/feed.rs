//! SKELETON-STUB: the change feed of this store. Replaced by the real implementation
//! before this branch merges; nothing with this marker may land on main.

use std::time::Duration;

use async_trait::async_trait;
use chat_domain::{Change, FeedPos, Timestamp, UserId};
use chat_ports::{ChangeFeed, FeedBounds, Purged, ReaderChanges, StoreError};

use crate::MySqlStore;

fn missing() -> StoreError {
    StoreError::Unavailable("SKELETON-STUB: change feed not implemented".into())
}

#[async_trait]
impl ChangeFeed for MySqlStore {
    async fn feed_bounds(&self) -> Result<FeedBounds, StoreError> {
        Err(missing())
    }

    async fn changes_after(
        &self,
        _after: FeedPos,
        _limit: usize,
    ) -> Result<Vec<Change>, StoreError> {
        Err(missing())
    }

    async fn reader_changes(
        &self,
        _reader: UserId,
        _after: FeedPos,
        _limit: usize,
    ) -> Result<ReaderChanges, StoreError> {
        Err(missing())
    }

    async fn wait_past(&self, _after: FeedPos, _timeout: Duration) -> Result<FeedPos, StoreError> {
        Err(missing())
    }

    async fn purge(&self, _older_than: Timestamp, _batch: usize) -> Result<Purged, StoreError> {
        Err(missing())
    }
}
