//! The change feed of the in-memory store: entries appended under the store's one lock by
//! the same operation as the change they tell of, so positions follow commit order
//! exactly, gaplessly from 1, and a reader never sees a change that is not complete.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use async_trait::async_trait;
use chat_domain::{
    Change, ChangeKind, ConversationId, FeedId, FeedPos, MembershipMove, MembershipWindow,
    Timestamp, UserId, to_stored_precision,
};
use chat_ports::{ChangeFeed, FeedBounds, Purged, ReaderChanges, StoreError};
use tokio::sync::watch;

use crate::MemoryStore;

/// The entries kept, where the feed stands, and the signal that wakes waiting readers.
pub(crate) struct Feed {
    id: FeedId,
    /// Every entry above the floor, oldest first; positions are consecutive.
    entries: VecDeque<Change>,
    floor: FeedPos,
    head: FeedPos,
    /// Every membership move per user, oldest first: a reader's windows without a scan of
    /// the whole feed.
    moves: HashMap<UserId, Vec<(FeedPos, ConversationId, MembershipMove)>>,
    /// The head, for [`ChangeFeed::wait_past`].
    signal: watch::Sender<FeedPos>,
}

impl Default for Feed {
    fn default() -> Self {
        Self {
            id: FeedId::random(),
            entries: VecDeque::new(),
            floor: FeedPos::ZERO,
            head: FeedPos::ZERO,
            moves: HashMap::new(),
            signal: watch::channel(FeedPos::ZERO).0,
        }
    }
}

impl Feed {
    /// Appends one change of `conversation` at the next position. Called under the store's
    /// lock by the operation that makes the change, after every check it could fail.
    pub(crate) fn record(&mut self, conversation: ConversationId, kind: ChangeKind) {
        let pos = self.head.next();
        if let Some((user, step)) = kind.membership_move() {
            self.moves
                .entry(user)
                .or_default()
                .push((pos, conversation, step));
        }
        self.entries.push_back(Change {
            pos,
            conversation_id: conversation,
            at: to_stored_precision(time::OffsetDateTime::now_utc()),
            kind,
        });
        self.head = pos;
        self.signal.send_replace(pos);
    }

    fn bounds(&self) -> FeedBounds {
        FeedBounds {
            feed_id: self.id,
            floor: self.floor,
            head: self.head,
        }
    }

    /// The entries after `after`, oldest first.
    fn after(&self, after: FeedPos) -> impl Iterator<Item = &Change> {
        // Positions are consecutive, so the first entry after `after` is found by index.
        let first = self.entries.front().map_or(0, |c| c.pos.get());
        let skip = after.get().saturating_add(1).saturating_sub(first);
        self.entries
            .iter()
            .skip(usize::try_from(skip).unwrap_or(usize::MAX))
    }

    /// `reader`'s first membership move in `conversation` after `after`.
    fn first_move_after(
        &self,
        reader: UserId,
        conversation: ConversationId,
        after: FeedPos,
    ) -> Option<MembershipMove> {
        let moves = self.moves.get(&reader)?;
        let start = moves.partition_point(|(pos, _, _)| *pos <= after);
        moves[start..]
            .iter()
            .find(|(_, c, _)| *c == conversation)
            .map(|(_, _, step)| *step)
    }

    /// Raises the floor to the newest entry recorded before `older_than`, then deletes at
    /// most `batch` entries at or below it.
    fn purge(&mut self, older_than: Timestamp, batch: usize) -> Purged {
        let old = self
            .entries
            .iter()
            .take_while(|c| c.at < older_than)
            .count();
        let candidate = if old == self.entries.len() {
            // Every entry kept is old (or none is kept): the floor goes to the head.
            self.head
        } else {
            old.checked_sub(1)
                .and_then(|i| self.entries.get(i))
                .map_or(self.floor, |c| c.pos)
        };
        self.floor = self.floor.max(candidate);
        let mut deleted = 0;
        while deleted < batch && self.entries.front().is_some_and(|c| c.pos <= self.floor) {
            self.entries.pop_front();
            deleted += 1;
        }
        for moves in self.moves.values_mut() {
            let gone = moves.partition_point(|(pos, _, _)| *pos <= self.floor);
            moves.drain(..gone);
        }
        self.moves.retain(|_, moves| !moves.is_empty());
        Purged {
            floor: self.floor,
            deleted: deleted as u64,
            more: self.entries.front().is_some_and(|c| c.pos <= self.floor),
        }
    }
}

#[async_trait]
impl ChangeFeed for MemoryStore {
    async fn feed_bounds(&self) -> Result<FeedBounds, StoreError> {
        Ok(self.lock().feed.bounds())
    }

    async fn changes_after(&self, after: FeedPos, limit: usize) -> Result<Vec<Change>, StoreError> {
        Ok(self.lock().feed.after(after).take(limit).cloned().collect())
    }

    async fn reader_changes(
        &self,
        reader: UserId,
        after: FeedPos,
        limit: usize,
    ) -> Result<ReaderChanges, StoreError> {
        let state = self.lock();
        let empty = HashSet::new();
        let theirs = state.memberships.get(&reader).unwrap_or(&empty);
        let changes: Vec<Change> = state
            .feed
            .after(after)
            .filter(|c| theirs.contains(&c.conversation_id))
            .take(limit)
            .cloned()
            .collect();
        let mut windows: Vec<MembershipWindow> = Vec::new();
        for change in &changes {
            let conversation = change.conversation_id;
            if windows.iter().any(|w| w.conversation_id == conversation) {
                continue;
            }
            windows.push(MembershipWindow {
                conversation_id: conversation,
                active_now: state
                    .conversations
                    .get(&conversation)
                    .is_some_and(|c| c.active_participant(reader).is_some()),
                first_move_after: state.feed.first_move_after(reader, conversation, after),
            });
        }
        Ok(ReaderChanges {
            changes,
            windows,
            head: state.feed.head,
        })
    }

    async fn wait_past(&self, after: FeedPos, timeout: Duration) -> Result<FeedPos, StoreError> {
        // Subscribed under the lock, so a change recorded after the check still wakes us.
        let mut head = {
            let state = self.lock();
            if state.feed.head > after {
                return Ok(state.feed.head);
            }
            state.feed.signal.subscribe()
        };
        // A timeout is an answer, not an error: the head as it stands.
        let _ = tokio::time::timeout(timeout, head.wait_for(|pos| *pos > after)).await;
        Ok(self.lock().feed.head)
    }

    async fn purge(&self, older_than: Timestamp, batch: usize) -> Result<Purged, StoreError> {
        Ok(self.lock().feed.purge(older_than, batch))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chat_domain::{
        ConversationId, ConversationType, DisplayName, MessageBody, MessageContent, MessageId,
        MessageType,
    };
    use chat_ports::{MessageStore, NewConversation, NewMessage, UserDirectory};

    use super::*;

    fn user(id: i64) -> UserId {
        UserId::new(id).unwrap()
    }

    fn message(conversation: ConversationId, sender: i64, body: MessageBody) -> NewMessage {
        NewMessage {
            id: MessageId::new(),
            conversation_id: conversation,
            sender_id: user(sender),
            body,
            reply_to_id: None,
            client_message_id: None,
            created_at: time::OffsetDateTime::now_utc(),
        }
    }

    fn text(content: &str) -> MessageBody {
        MessageBody::from_user(
            MessageContent::parse(content).unwrap(),
            MessageType::Text,
            None,
            None,
        )
        .unwrap()
    }

    async fn group(store: &MemoryStore) -> ConversationId {
        for i in 1..=2 {
            let name = DisplayName::parse(&format!("User {i}")).unwrap();
            store.upsert_user(user(i), Some(name)).await.unwrap();
        }
        let id = ConversationId::new();
        let announcement = MessageBody::system(
            MessageContent::parse("created").unwrap(),
            chat_domain::MediaMetadata::parse(r#"{"event":"test"}"#).unwrap(),
        );
        chat_ports::ConversationStore::create_conversation(
            store,
            NewConversation {
                id,
                kind: ConversationType::Group,
                name: None,
                posting_id: None,
                created_by: user(1),
                members: vec![user(2)],
                created_at: time::OffsetDateTime::now_utc(),
            },
            message(id, 1, announcement),
        )
        .await
        .unwrap();
        id
    }

    #[tokio::test]
    async fn positions_are_consecutive_and_purge_moves_the_floor_first() {
        let store = MemoryStore::new();
        let id = group(&store).await;
        // created and the announcement (the creator's marker move is implied by it).
        assert_eq!(store.feed_bounds().await.unwrap().head, FeedPos::new(2));
        store
            .append_message(message(id, 2, text("hi")))
            .await
            .unwrap();
        let all = store.changes_after(FeedPos::ZERO, 100).await.unwrap();
        let positions: Vec<u64> = all.iter().map(|c| c.pos.get()).collect();
        assert_eq!(positions, vec![1, 2, 3]);
        let page = store.changes_after(FeedPos::new(1), 2).await.unwrap();
        assert_eq!(page, all[1..3].to_vec());
        let far = FeedPos::new(u64::MAX);
        assert!(store.changes_after(far, 10).await.unwrap().is_empty());
        let reader = store.reader_changes(user(1), far, 10).await.unwrap();
        assert!(reader.changes.is_empty());
        assert_eq!(reader.head, FeedPos::new(3));

        let future = time::OffsetDateTime::now_utc() + time::Duration::days(1);
        let first = store.purge(future, 2).await.unwrap();
        assert_eq!(first.floor, FeedPos::new(3));
        assert_eq!((first.deleted, first.more), (2, true));
        // The floor moved before the rest was deleted: what is left is above it, or not
        // read at all.
        let left = store.changes_after(FeedPos::new(2), 100).await.unwrap();
        assert_eq!(left.first().map(|c| c.pos), Some(FeedPos::new(3)));
        let second = store.purge(future, 100).await.unwrap();
        assert_eq!((second.deleted, second.more), (1, false));
        assert!(
            store
                .changes_after(FeedPos::ZERO, 100)
                .await
                .unwrap()
                .is_empty()
        );
        store
            .append_message(message(id, 2, text("again")))
            .await
            .unwrap();
        let next = store.changes_after(FeedPos::ZERO, 100).await.unwrap();
        assert_eq!(next.first().map(|c| c.pos), Some(FeedPos::new(4)));
    }

    #[tokio::test]
    async fn wait_past_wakes_on_a_write_and_times_out_otherwise() {
        let store = Arc::new(MemoryStore::new());
        let id = group(&store).await;
        let head = store.feed_bounds().await.unwrap().head;
        let started = std::time::Instant::now();
        assert_eq!(
            store
                .wait_past(head, Duration::from_millis(50))
                .await
                .unwrap(),
            head
        );
        assert!(started.elapsed() >= Duration::from_millis(50));
        let waiter = {
            let store = store.clone();
            tokio::spawn(async move { store.wait_past(head, Duration::from_secs(30)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        store
            .append_message(message(id, 2, text("hi")))
            .await
            .unwrap();
        let woke = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(woke > head);
    }
}
