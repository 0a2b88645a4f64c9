//! The change feed's contract cases must be able to fail: run against feeds with the
//! classic mistakes (the AUTO_INCREMENT trap, membership windows that forget the moves),
//! the cases that guard against them fail, and on the real feed they pass.
#![allow(clippy::unwrap_used)] // Test code: a failed expectation panics.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chat_contract::{Fixtures, Ports};
use chat_domain::{Change, FeedPos, PostingId, Timestamp, UserId};
use chat_memory::MemoryStore;
use chat_ports::{ChangeFeed, FeedBounds, Purged, ReaderChanges, StoreError};

struct MemoryFixtures(Arc<MemoryStore>);

#[async_trait]
impl Fixtures for MemoryFixtures {
    async fn add_posting(&self, id: PostingId) {
        self.0.add_posting(id).await;
    }
}

/// What a broken feed gets wrong.
#[derive(Clone, Copy)]
enum Mistake {
    /// Every fourth entry is readable only a moment after the ones numbered after it, as
    /// with positions taken from AUTO_INCREMENT at insert rather than at commit.
    NumberedAtInsert,
    /// The reader's windows say nothing of their membership moves.
    NoMoves,
}

struct BrokenFeed {
    store: Arc<MemoryStore>,
    mistake: Mistake,
    first_seen: Mutex<HashMap<FeedPos, Instant>>,
}

#[async_trait]
impl ChangeFeed for BrokenFeed {
    async fn feed_bounds(&self) -> Result<FeedBounds, StoreError> {
        self.store.feed_bounds().await
    }

    async fn changes_after(&self, after: FeedPos, limit: usize) -> Result<Vec<Change>, StoreError> {
        let changes = self.store.changes_after(after, limit).await?;
        let Mistake::NumberedAtInsert = self.mistake else {
            return Ok(changes);
        };
        let mut first_seen = self.first_seen.lock().unwrap();
        Ok(changes
            .into_iter()
            .filter(|c| {
                let seen = *first_seen.entry(c.pos).or_insert_with(Instant::now);
                c.pos.get() % 4 != 0 || seen.elapsed() > Duration::from_millis(20)
            })
            .collect())
    }

    async fn reader_changes(
        &self,
        reader: UserId,
        after: FeedPos,
        limit: usize,
    ) -> Result<ReaderChanges, StoreError> {
        let mut page = self.store.reader_changes(reader, after, limit).await?;
        if let Mistake::NoMoves = self.mistake {
            for window in &mut page.windows {
                window.first_move_after = None;
            }
        }
        Ok(page)
    }

    async fn wait_past(&self, after: FeedPos, timeout: Duration) -> Result<FeedPos, StoreError> {
        self.store.wait_past(after, timeout).await
    }

    async fn purge(&self, older_than: Timestamp, batch: usize) -> Result<Purged, StoreError> {
        self.store.purge(older_than, batch).await
    }
}

fn ports(mistake: Option<Mistake>) -> Ports {
    let store = Arc::new(MemoryStore::new());
    let mut ports = Ports::from_store(store.clone(), Arc::new(MemoryFixtures(store.clone())));
    if let Some(mistake) = mistake {
        ports.feed = Arc::new(BrokenFeed {
            store,
            mistake,
            first_seen: Mutex::default(),
        });
    }
    ports
}

/// Whether `case` fails (panics) on `ports`.
async fn fails<F>(case: fn(Ports) -> F, ports: Ports) -> bool
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    tokio::spawn(case(ports)).await.is_err_and(|e| e.is_panic())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_polling_case_catches_positions_numbered_at_insert() {
    let case = chat_contract::feed_cases::polling_reader_never_misses_a_committed_change;
    assert!(fails(case, ports(Some(Mistake::NumberedAtInsert))).await);
    assert!(!fails(case, ports(None)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_model_case_catches_windows_without_moves() {
    let case = chat_contract::feed_cases::reader_sees_exactly_its_membership_windows;
    assert!(fails(case, ports(Some(Mistake::NoMoves))).await);
    assert!(!fails(case, ports(None)).await);
}
