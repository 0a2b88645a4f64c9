//! The change feed's readers cost the store a fixed number of calls per page, whatever the
//! number of messages in it: `sync` and the relay look a page's messages up with one
//! `find_messages` call, never one `find_message` per message. Counted through a wrapper
//! around the in-memory store's message and feed ports (on MySQL each call is a pool
//! acquire and one or two statements). And the relay looks up only what someone connected
//! can hear.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns assert by unwrapping too

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chat_domain::{
    Change, ChatEvent, ConversationId, Delivery, Emoji, FeedPos, MessageContent, MessageId,
    MessageView, Receipt, Timestamp, UserId,
};
use chat_memory::MemoryStore;
use chat_ports::{
    Appended, ChangeFeed, Deleted, Edited, EventPublisher, FeedBounds, HistoryPage, HistoryQuery,
    MessageStore, NewMessage, PublishError, Purged, ReactionChange, ReaderChanges, StoreError,
};
use chat_service::{ChatService, Relay, SyncLimit, SyncToken};
use support::{TestApp, app, ports, uid};

/// How often the readers' store calls were made.
#[derive(Default)]
struct Calls {
    find_message: AtomicUsize,
    find_messages: AtomicUsize,
    /// The ids asked for, over every `find_messages` call.
    ids_asked: AtomicUsize,
    feed_bounds: AtomicUsize,
    reader_changes: AtomicUsize,
    changes_after: AtomicUsize,
}

impl Calls {
    fn take(&self) -> [usize; 6] {
        [
            &self.find_message,
            &self.find_messages,
            &self.ids_asked,
            &self.feed_bounds,
            &self.reader_changes,
            &self.changes_after,
        ]
        .map(|count| count.swap(0, Ordering::SeqCst))
    }
}

/// The in-memory store's message and feed ports, counting the calls the readers make.
struct Counting {
    store: Arc<MemoryStore>,
    calls: Calls,
}

fn count(counter: &AtomicUsize) {
    counter.fetch_add(1, Ordering::SeqCst);
}

#[async_trait]
impl MessageStore for Counting {
    async fn append_message(&self, new: NewMessage) -> Result<Appended, StoreError> {
        self.store.append_message(new).await
    }

    async fn find_message(&self, id: MessageId) -> Result<Option<MessageView>, StoreError> {
        count(&self.calls.find_message);
        self.store.find_message(id).await
    }

    async fn find_messages(&self, ids: &[MessageId]) -> Result<Vec<MessageView>, StoreError> {
        count(&self.calls.find_messages);
        self.calls.ids_asked.fetch_add(ids.len(), Ordering::SeqCst);
        self.store.find_messages(ids).await
    }

    async fn edit_message(
        &self,
        id: MessageId,
        actor: UserId,
        content: MessageContent,
        at: Timestamp,
    ) -> Result<Edited, StoreError> {
        self.store.edit_message(id, actor, content, at).await
    }

    async fn delete_message(
        &self,
        id: MessageId,
        actor: UserId,
        at: Timestamp,
    ) -> Result<Deleted, StoreError> {
        self.store.delete_message(id, actor, at).await
    }

    async fn history(
        &self,
        conversation: ConversationId,
        query: HistoryQuery,
    ) -> Result<HistoryPage, StoreError> {
        self.store.history(conversation, query).await
    }

    async fn add_reaction(
        &self,
        message: MessageId,
        user: UserId,
        emoji: Emoji,
        at: Timestamp,
    ) -> Result<ReactionChange, StoreError> {
        self.store.add_reaction(message, user, emoji, at).await
    }

    async fn remove_reaction(
        &self,
        message: MessageId,
        user: UserId,
        emoji: Emoji,
    ) -> Result<ReactionChange, StoreError> {
        self.store.remove_reaction(message, user, emoji).await
    }

    async fn receipts(&self, message: MessageId) -> Result<Vec<Receipt>, StoreError> {
        self.store.receipts(message).await
    }
}

#[async_trait]
impl ChangeFeed for Counting {
    async fn feed_bounds(&self) -> Result<FeedBounds, StoreError> {
        count(&self.calls.feed_bounds);
        self.store.feed_bounds().await
    }

    async fn changes_after(&self, after: FeedPos, limit: usize) -> Result<Vec<Change>, StoreError> {
        count(&self.calls.changes_after);
        self.store.changes_after(after, limit).await
    }

    async fn reader_changes(
        &self,
        reader: UserId,
        after: FeedPos,
        limit: usize,
    ) -> Result<ReaderChanges, StoreError> {
        count(&self.calls.reader_changes);
        self.store.reader_changes(reader, after, limit).await
    }

    async fn wait_past(&self, after: FeedPos, timeout: Duration) -> Result<FeedPos, StoreError> {
        self.store.wait_past(after, timeout).await
    }

    async fn purge(&self, older_than: Timestamp, batch: usize) -> Result<Purged, StoreError> {
        self.store.purge(older_than, batch).await
    }
}

/// A service over `app`'s store whose message and feed ports are counted.
fn counted(app: &TestApp) -> (Arc<ChatService>, Arc<Counting>) {
    counted_with(app, app.events.clone())
}

/// [`counted`], publishing to `events`.
fn counted_with(
    app: &TestApp,
    events: Arc<dyn EventPublisher>,
) -> (Arc<ChatService>, Arc<Counting>) {
    let counting = Arc::new(Counting {
        store: app.memory(),
        calls: Calls::default(),
    });
    let mut wired = ports(app.memory(), events);
    wired.messages = counting.clone();
    wired.feed = counting.clone();
    (Arc::new(ChatService::new(wired)), counting)
}

/// Runs a relay of `service` from `since` until it has passed the feed's head, then stops
/// it.
async fn relay_to_head(app: &TestApp, service: Arc<ChatService>, since: SyncToken) {
    let relay = Relay::spawn(service, since.pos);
    let head = app.service.feed_head().await.unwrap().pos;
    let deadline = Instant::now() + Duration::from_secs(10);
    while relay.position() < head {
        assert!(Instant::now() < deadline, "the relay did not catch up");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    relay.stop().await;
}

/// `messages` sends spread over `conversations` (users 1 to 5 take turns: a user's send
/// budget), with a reaction and an edit among them; answers the token before them.
async fn traffic(app: &TestApp, conversations: &[ConversationId], messages: usize) -> SyncToken {
    let before = app.service.feed_head().await.unwrap();
    let mut sent = Vec::new();
    for i in 0..messages {
        let conversation = conversations[i % conversations.len()];
        sent.push(
            app.send_id(1 + (i % 5) as i64, conversation, &format!("m{i}"))
                .await,
        );
    }
    let first = sent[0];
    app.service
        .add_reaction(uid(2), first, Emoji::parse("👍🏽").unwrap())
        .await
        .unwrap();
    app.service
        .edit_message(uid(1), first, MessageContent::parse("m0, edited").unwrap())
        .await
        .unwrap();
    before
}

#[tokio::test]
async fn a_sync_page_costs_the_same_store_calls_for_1_10_or_400_messages() {
    for messages in [1, 10, 400] {
        let app = app().await;
        let mut conversations = Vec::new();
        for _ in 0..20 {
            conversations.push(app.group(1, &[2, 3, 4, 5]).await);
        }
        let since = traffic(&app, &conversations, messages).await;
        let (service, counting) = counted(&app);
        let page = service
            .sync(uid(3), Some(since), SyncLimit::MAX)
            .await
            .unwrap();
        // Every send, the reaction and the edit: one page.
        assert_eq!(page.events.len(), messages + 2, "{messages} messages");
        assert!(!page.has_more);
        assert!(matches!(
            page.events.last().unwrap().event,
            ChatEvent::MessageUpdated(_)
        ));
        let [
            find_message,
            find_messages,
            ids_asked,
            feed_bounds,
            reader_changes,
            _,
        ] = counting.calls.take();
        assert_eq!(
            (find_message, find_messages, ids_asked),
            (0, 1, messages),
            "one lookup for the page's messages ({messages}), none one by one"
        );
        assert_eq!(
            (feed_bounds, reader_changes),
            (2, 1),
            "the bounds before and after (the floor check), one page"
        );
    }
}

#[tokio::test]
async fn a_sync_makes_one_lookup_per_page_read() {
    let app = app().await;
    let id = app.group(1, &[2, 3, 4, 5]).await;
    let since = traffic(&app, &[id], 10).await;
    let (service, counting) = counted(&app);
    let limit = SyncLimit::new(4).unwrap();
    let mut token = since;
    let mut pages = 0;
    let mut events = 0;
    loop {
        let page = service.sync(uid(2), Some(token), limit).await.unwrap();
        pages += 1;
        events += page.events.len();
        token = page.next;
        let [
            find_message,
            find_messages,
            _,
            feed_bounds,
            reader_changes,
            _,
        ] = counting.calls.take();
        assert_eq!(find_message, 0);
        if page.events.is_empty() {
            // The last call starts at the head: the bounds alone answer it.
            assert_eq!((find_messages, reader_changes, feed_bounds), (0, 0, 1));
        } else {
            assert_eq!(
                (find_messages, reader_changes, feed_bounds),
                (1, 1, 2),
                "page {pages}"
            );
        }
        if !page.has_more {
            break;
        }
    }
    // Ten sends, a reaction and an edit in pages of four; a full page says "more", so
    // an empty one ends it.
    assert_eq!((pages, events), (4, 12));
}

#[tokio::test]
async fn the_relay_makes_one_lookup_per_batch() {
    let app = app().await;
    let conversations = [
        app.group(1, &[2, 3, 4, 5]).await,
        app.group(2, &[1, 3, 4, 5]).await,
    ];
    // One batch (10 sends, a reaction, an edit), then more than a batch: its last batch
    // looks the edited message up again (a hydrator lives for one batch).
    let more = chat_service::RELAY_BATCH + 100;
    for (messages, batches, ids) in [(10, 1, 10), (more, 2, more + 1)] {
        let since = traffic(&app, &conversations, messages).await;
        let (service, counting) = counted(&app);
        relay_to_head(&app, service, since).await;
        let [find_message, find_messages, ids_asked, ..] = counting.calls.take();
        assert_eq!(
            (find_message, find_messages, ids_asked),
            (0, batches, ids),
            "{messages} messages in {batches} batches"
        );
    }
}

/// A publisher on whose node only `online` have a connection: it records what it is given.
struct Online {
    online: HashSet<UserId>,
    published: Mutex<Vec<Delivery>>,
}

#[async_trait]
impl EventPublisher for Online {
    async fn publish(&self, delivery: Delivery) -> Result<(), PublishError> {
        self.published.lock().unwrap().push(delivery);
        Ok(())
    }

    fn reaches_any(&self, recipients: &[UserId]) -> bool {
        recipients.iter().any(|user| self.online.contains(user))
    }
}

#[tokio::test]
async fn the_relay_looks_up_and_publishes_only_what_a_connected_member_can_hear() {
    let app = app().await;
    // User 9 is online and in `heard` only; nobody of `unheard` is online.
    let heard = app.group(1, &[2, 3, 4, 5, 9]).await;
    let unheard = app.group(2, &[1, 3, 4, 5]).await;
    for (online, expected_ids) in [(vec![9], 5), (vec![], 0)] {
        // Ten sends alternating between the two, a reaction and an edit in `heard`.
        let since = traffic(&app, &[heard, unheard], 10).await;
        let publisher = Arc::new(Online {
            online: online.into_iter().map(uid).collect(),
            published: Mutex::new(Vec::new()),
        });
        let (service, counting) = counted_with(&app, publisher.clone());
        relay_to_head(&app, service, since).await;
        let [find_message, _, ids_asked, ..] = counting.calls.take();
        assert_eq!(
            (find_message, ids_asked),
            (0, expected_ids),
            "only the messages of the conversation someone online is in are looked up"
        );
        let published = publisher.published.lock().unwrap();
        let conversations: HashSet<ConversationId> = published
            .iter()
            .map(|d| d.event.conversation_id())
            .collect();
        if expected_ids == 0 {
            assert!(published.is_empty(), "nobody online, nothing published");
        } else {
            // Five sends, the reaction and the edit, each to every member.
            assert_eq!(published.len(), 7);
            assert_eq!(conversations, HashSet::from([heard]));
            assert!(published.iter().all(|d| d.recipients.contains(&uid(9))));
        }
    }
}
