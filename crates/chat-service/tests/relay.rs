//! The relay: every committed change is published once, in position order, to the
//! recipients today's rules name (the members just after it, and the removed user for
//! `participant.removed`); a store error delays it and never skips it; `stop` ends it.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns assert by unwrapping too

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chat_domain::{
    Change, ChatEvent, Delivery, Emoji, FeedPos, GroupName, MessageContent, MessageId, Role,
    Timestamp, UserId,
};
use chat_memory::MemoryStore;
use chat_ports::{
    ChangeFeed, EventPublisher, FeedBounds, MessageStore, MockMessageStore, PublishError, Purged,
    ReaderChanges, StoreError,
};
use chat_service::{ChatService, ConversationUpdate, Relay, RelayHandle};
use support::{app, ports, uid};

/// Records every delivery.
#[derive(Default)]
struct Published(Mutex<Vec<Delivery>>);

impl Published {
    fn all(&self) -> Vec<Delivery> {
        self.0.lock().unwrap().clone()
    }
}

#[async_trait]
impl EventPublisher for Published {
    async fn publish(&self, delivery: Delivery) -> Result<(), PublishError> {
        self.0.lock().unwrap().push(delivery);
        Ok(())
    }
}

/// The memory store's feed, failing the next `failures` calls of `changes_after`.
struct FlakyFeed {
    store: Arc<MemoryStore>,
    failures: AtomicUsize,
    calls: AtomicUsize,
}

#[async_trait]
impl ChangeFeed for FlakyFeed {
    async fn feed_bounds(&self) -> Result<FeedBounds, StoreError> {
        self.store.feed_bounds().await
    }

    async fn changes_after(&self, after: FeedPos, limit: usize) -> Result<Vec<Change>, StoreError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let failed = self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failed {
            return Err(StoreError::Unavailable("feed down".to_owned()));
        }
        self.store.changes_after(after, limit).await
    }

    async fn reader_changes(
        &self,
        reader: UserId,
        after: FeedPos,
        limit: usize,
    ) -> Result<ReaderChanges, StoreError> {
        self.store.reader_changes(reader, after, limit).await
    }

    async fn wait_past(&self, after: FeedPos, timeout: Duration) -> Result<FeedPos, StoreError> {
        self.store.wait_past(after, timeout).await
    }

    async fn purge(&self, older_than: Timestamp, batch: usize) -> Result<Purged, StoreError> {
        self.store.purge(older_than, batch).await
    }
}

/// Waits until `relay` has relayed `head`.
async fn caught_up(relay: &RelayHandle, head: FeedPos) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while relay.position() < head {
        assert!(Instant::now() < deadline, "the relay did not catch up");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn set(users: &[i64]) -> HashSet<i64> {
    users.iter().copied().collect()
}

fn recipients(delivery: &Delivery) -> HashSet<i64> {
    delivery.recipients.iter().map(|u| u.get()).collect()
}

/// The announcements (SYSTEM `message.created`) are told apart by their text.
fn label(delivery: &Delivery) -> String {
    match &delivery.event {
        ChatEvent::MessageCreated(view) if view.message.is_system_message => {
            format!("announcement: {}", view.message.content)
        }
        event => event.name().to_owned(),
    }
}

#[tokio::test]
async fn every_change_is_published_once_in_feed_order_to_todays_recipients() {
    let app = app().await;
    let store = app.memory();
    let published = Arc::new(Published::default());
    let service = Arc::new(ChatService::new(ports(store.clone(), published.clone())));
    let start = service.feed_head().await.unwrap().pos;
    let relay = Relay::spawn(service.clone(), start);

    let id = app.group(1, &[2, 3]).await;
    let hello = app.send(2, id, "hello").await.message.id;
    let smile = Emoji::parse("🙂").unwrap();
    app.service
        .add_reaction(uid(3), hello, smile)
        .await
        .unwrap();
    app.service
        .edit_message(uid(2), hello, MessageContent::parse("hello!").unwrap())
        .await
        .unwrap();
    // User 1 leaves: user 2 (the earliest member) is promoted.
    app.service
        .remove_participant(uid(1), id, uid(1))
        .await
        .unwrap();
    app.service
        .remove_participant(uid(2), id, uid(3))
        .await
        .unwrap();
    app.service
        .add_participants(uid(2), id, vec![uid(4)])
        .await
        .unwrap();
    app.service
        .change_role(uid(2), id, uid(4), Role::Admin)
        .await
        .unwrap();
    app.service.mark_read(uid(4), id, None).await.unwrap();
    app.service.delete_message(uid(2), hello).await.unwrap();
    app.service
        .update_conversation(
            uid(2),
            id,
            ConversationUpdate {
                name: Some(GroupName::parse("Renamed").unwrap()),
                is_archived: Some(true),
            },
        )
        .await
        .unwrap();
    let head = service.feed_head().await.unwrap().pos;
    caught_up(&relay, head).await;
    relay.stop().await;

    let feed = store.changes_after(start, 1000).await.unwrap();
    let deliveries = published.all();
    // Every change is published once, in position order; only the edited-then-deleted
    // message's `message.updated` is left out (deleted content is never served).
    let positions: Vec<FeedPos> = deliveries.iter().map(|d| d.pos.unwrap()).collect();
    let skipped: Vec<&Change> = feed
        .iter()
        .filter(|c| !positions.contains(&c.pos))
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    assert_eq!(
        skipped.iter().map(|c| c.kind.name()).collect::<Vec<_>>(),
        vec!["message.updated"],
    );
    let by_pos: HashMap<FeedPos, &Change> = feed.iter().map(|c| (c.pos, c)).collect();
    for delivery in &deliveries {
        let change = by_pos[&delivery.pos.unwrap()].kind.name();
        // A deleted message's `message.created` goes out as its sender's marker move.
        let deleted_send =
            (change, delivery.event.name()) == ("message.created", "conversation.read");
        assert!(
            delivery.event.name() == change || deleted_send,
            "{change} published as {}",
            delivery.event.name()
        );
    }

    let seen: Vec<(String, HashSet<i64>)> = deliveries
        .iter()
        .map(|d| (label(d), recipients(d)))
        .collect();
    // An append (an announcement too) publishes its `message.created` only: the move of
    // its author's marker is implied by it and not in the feed. The one
    // `conversation.read` are the deleted "hello" (below) and user 4's `mark_read`.
    let expected: Vec<(&str, HashSet<i64>)> = vec![
        ("conversation.created", set(&[1, 2, 3])),
        (
            "announcement: User 1 created the group “Team”",
            set(&[1, 2, 3]),
        ),
        // "hello" is deleted by the end: its message.created is served as what it still
        // tells, its sender's marker move.
        ("conversation.read", set(&[1, 2, 3])),
        ("reaction.added", set(&[1, 2, 3])),
        // The edit is not served either. The leaver hears of their own removal, not of
        // what follows it.
        ("participant.removed", set(&[1, 2, 3])),
        ("participant.updated", set(&[2, 3])),
        ("announcement: User 1 left", set(&[2, 3])),
        ("participant.removed", set(&[2, 3])),
        ("announcement: User 2 removed user 3", set(&[2])),
        // The joiner hears of their own joining and of its announcement.
        ("participant.added", set(&[2, 4])),
        ("announcement: User 2 added user 4", set(&[2, 4])),
        ("participant.updated", set(&[2, 4])),
        ("announcement: User 2 made user 4 ADMIN", set(&[2, 4])),
        ("conversation.read", set(&[2, 4])),
        ("message.deleted", set(&[2, 4])),
        ("conversation.updated", set(&[2, 4])),
        (
            "announcement: User 2 renamed the group to “Renamed”",
            set(&[2, 4]),
        ),
        ("conversation.updated", set(&[2, 4])),
        (
            "announcement: User 2 archived the conversation",
            set(&[2, 4]),
        ),
    ];
    let expected: Vec<(String, HashSet<i64>)> = expected
        .into_iter()
        .map(|(name, users)| (name.to_owned(), users))
        .collect();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn a_relay_started_behind_a_join_does_not_tell_the_joiner_what_came_before() {
    let app = app().await;
    let id = app.group(1, &[2]).await;
    let store = app.memory();
    let before = app.service.feed_head().await.unwrap().pos;
    app.send(2, id, "before the join").await;
    app.service
        .add_participants(uid(1), id, vec![uid(3)])
        .await
        .unwrap();
    app.send(2, id, "after the join").await;
    // The relay meets this conversation for the first time after the join committed:
    // the members it loads are rewound to the start of its batch.
    let published = Arc::new(Published::default());
    let service = Arc::new(ChatService::new(ports(store, published.clone())));
    let relay = Relay::spawn(service.clone(), before);
    caught_up(&relay, service.feed_head().await.unwrap().pos).await;
    relay.stop().await;
    let texts: Vec<(String, HashSet<i64>)> = published
        .all()
        .iter()
        .filter_map(|d| match &d.event {
            ChatEvent::MessageCreated(view) if !view.message.is_system_message => {
                Some((view.message.content.clone(), recipients(d)))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        texts,
        vec![
            ("before the join".to_owned(), set(&[1, 2])),
            ("after the join".to_owned(), set(&[1, 2, 3])),
        ]
    );
}

#[tokio::test]
async fn a_join_pages_after_the_batch_is_undone_too() {
    let app = app().await;
    let id = app.group(1, &[2]).await;
    let busy = app.group(1, &[2, 4, 5, 6]).await;
    let store = app.memory();
    let before = app.service.feed_head().await.unwrap().pos;
    app.send(2, id, "before the join").await;
    // More than a batch (each send is one change) before the join, from five senders (a
    // sender's rate limit).
    for i in 0..600 {
        app.send([1, 2, 4, 5, 6][i % 5], busy, "filler").await;
    }
    app.service
        .add_participants(uid(1), id, vec![uid(3)])
        .await
        .unwrap();
    app.send(2, id, "after the join").await;
    let head = app.service.feed_head().await.unwrap().pos;
    assert!(head.get() - before.get() > chat_service::RELAY_BATCH as u64);
    let published = Arc::new(Published::default());
    let service = Arc::new(ChatService::new(ports(store, published.clone())));
    let relay = Relay::spawn(service.clone(), before);
    caught_up(&relay, head).await;
    relay.stop().await;
    let texts: Vec<(String, HashSet<i64>)> = published
        .all()
        .iter()
        .filter_map(|d| match &d.event {
            ChatEvent::MessageCreated(view)
                if !view.message.is_system_message && view.message.conversation_id == id =>
            {
                Some((view.message.content.clone(), recipients(d)))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        texts,
        vec![
            ("before the join".to_owned(), set(&[1, 2])),
            ("after the join".to_owned(), set(&[1, 2, 3])),
        ]
    );
}

#[tokio::test]
async fn a_store_error_delays_a_change_and_never_skips_it() {
    let app = app().await;
    let store = app.memory();
    let id = app.group(1, &[2]).await;
    let start = app.service.feed_head().await.unwrap().pos;
    let first = app.send(1, id, "one").await.message.id;
    let second = app.send(2, id, "two").await.message.id;
    let third = app.send(1, id, "three").await.message.id;

    // The feed fails twice, then looking up the batch's messages (the second's among
    // them) fails once, after the batch was read.
    let feed = Arc::new(FlakyFeed {
        store: store.clone(),
        failures: AtomicUsize::new(2),
        calls: AtomicUsize::new(0),
    });
    let mut messages = MockMessageStore::new();
    let lookups = Arc::new(AtomicUsize::new(0));
    let finder = store.clone();
    let counter = lookups.clone();
    messages
        .expect_find_messages()
        .returning(move |ids: &[MessageId]| {
            if ids.contains(&second) && counter.fetch_add(1, Ordering::SeqCst) == 0 {
                return Err(StoreError::Unavailable("lookup failed".to_owned()));
            }
            let (store, ids) = (finder.clone(), ids.to_vec());
            futures::executor::block_on(async move { store.find_messages(&ids).await })
        });
    // The relay looks a batch's messages up together, never one by one.
    messages.expect_find_message().never();
    let published = Arc::new(Published::default());
    let mut wired = ports(store.clone(), published.clone());
    wired.feed = feed.clone();
    wired.messages = Arc::new(messages);
    let service = Arc::new(ChatService::new(wired));
    let relay = Relay::spawn(service.clone(), start);
    caught_up(&relay, store.feed_bounds().await.unwrap().head).await;
    relay.stop().await;

    assert!(
        feed.calls.load(Ordering::SeqCst) >= 4,
        "two failures, then reads"
    );
    assert!(
        lookups.load(Ordering::SeqCst) >= 2,
        "the failed lookup was retried"
    );
    let deliveries = published.all();
    let created: Vec<MessageId> = deliveries
        .iter()
        .filter_map(|d| match &d.event {
            ChatEvent::MessageCreated(view) => Some(view.message.id),
            _ => None,
        })
        .collect();
    assert_eq!(
        created,
        vec![first, second, third],
        "none skipped, none twice"
    );
    let positions: Vec<u64> = deliveries.iter().map(|d| d.pos.unwrap().get()).collect();
    let expected: Vec<u64> = (start.get() + 1..=start.get() + 3).collect();
    assert_eq!(positions, expected, "each send: its message, one change");
}

#[tokio::test]
async fn stop_ends_a_waiting_relay_at_once_and_nothing_is_published_after() {
    let app = app().await;
    let id = app.group(1, &[2]).await;
    let published = Arc::new(Published::default());
    let service = Arc::new(ChatService::new(ports(app.memory(), published.clone())));
    let head = service.feed_head().await.unwrap().pos;
    let relay = Relay::spawn(service.clone(), head);
    app.send(1, id, "seen").await;
    caught_up(&relay, service.feed_head().await.unwrap().pos).await;
    // Waiting for the next change (up to a second per wait): stop does not wait for it.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let started = Instant::now();
    relay.stop().await;
    assert!(started.elapsed() < Duration::from_millis(500));
    app.send(1, id, "unseen").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let texts: Vec<String> = published
        .all()
        .iter()
        .filter_map(|d| match &d.event {
            ChatEvent::MessageCreated(view) => Some(view.message.content.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(texts, vec!["seen".to_owned()]);
}

#[tokio::test(flavor = "current_thread")]
async fn a_relay_behind_the_floor_moves_up_to_it_and_goes_on_relaying() {
    // On a single-threaded runtime a relay that spins (head past it, nothing readable)
    // would starve this test: it must move up to the floor and wait like any relay.
    let app = app().await;
    let store = app.memory();
    let id = app.group(1, &[2]).await;
    app.send(1, id, "purged before it was relayed").await;
    let far_future = Timestamp::now_utc() + Duration::from_secs(86_400);
    while store.purge(far_future, 1000).await.unwrap().more {}
    let bounds = store.feed_bounds().await.unwrap();
    assert!(bounds.floor > FeedPos::ZERO);
    assert_eq!(bounds.floor, bounds.head);

    let published = Arc::new(Published::default());
    let service = Arc::new(ChatService::new(ports(store.clone(), published.clone())));
    let relay = Relay::spawn(service.clone(), FeedPos::ZERO);
    caught_up(&relay, bounds.floor).await;
    app.send(2, id, "after the purge").await;
    caught_up(&relay, service.feed_head().await.unwrap().pos).await;
    let texts: Vec<String> = published
        .all()
        .iter()
        .filter_map(|d| match &d.event {
            ChatEvent::MessageCreated(view) => Some(view.message.content.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(texts, vec!["after the purge".to_owned()]);
    relay.stop().await;
}
