//! `sync`: the changes a user may see since a token, oldest first, in pages; tokens of
//! another feed, below the retention floor or above the head are refused
//! (`SyncTokenExpired`).
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns assert by unwrapping too

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chat_domain::{Change, ChatEvent, FeedId, FeedPos, MessageContent, Timestamp, UserId};
use chat_memory::MemoryStore;
use chat_ports::{ChangeFeed, FeedBounds, Purged, ReaderChanges, StoreError};
use chat_service::{ChatService, ServiceError, SyncLimit, SyncPage, SyncToken, SyncedEvent};
use support::{app, ports, uid};

fn limit(n: i64) -> SyncLimit {
    SyncLimit::new(n).unwrap()
}

/// Every event `user` may see after `token`, in pages of `size`; answers the events, the
/// last token and how many calls it took.
async fn drain(
    service: &ChatService,
    user: UserId,
    mut token: SyncToken,
    size: i64,
) -> (Vec<SyncedEvent>, SyncToken, usize) {
    let mut events = Vec::new();
    let mut calls = 0;
    loop {
        let page: SyncPage = service.sync(user, Some(token), limit(size)).await.unwrap();
        calls += 1;
        assert!(page.events.len() <= usize::try_from(size).unwrap());
        assert!(page.next.pos >= token.pos, "the token never moves back");
        events.extend(page.events);
        token = page.next;
        if !page.has_more {
            return (events, token, calls);
        }
        assert!(calls < 1000, "sync must make progress");
    }
}

#[test]
fn sync_limit_is_1_to_500_and_100_by_default() {
    for (input, ok) in [
        (0, false),
        (-1, false),
        (1, true),
        (500, true),
        (501, false),
    ] {
        assert_eq!(SyncLimit::new(input).is_ok(), ok, "{input}");
    }
    assert_eq!(SyncLimit::default().get(), 100);
    assert_eq!(SyncLimit::new(7).unwrap().get(), 7);
    assert_eq!(SyncLimit::new(0).unwrap_err().field(), "limit");
}

#[tokio::test]
async fn without_a_token_sync_answers_no_events_and_the_head() {
    let app = app().await;
    let id = app.group(1, &[2]).await;
    app.send(2, id, "hi").await;
    let head = app.service.feed_head().await.unwrap();
    let page = app
        .service
        .sync(uid(1), None, SyncLimit::default())
        .await
        .unwrap();
    assert_eq!(page.events, vec![]);
    assert_eq!(page.next, head);
    assert!(!page.has_more);
    assert!(head.pos > FeedPos::ZERO);
    // From the head: nothing new, the same token.
    let again = app
        .service
        .sync(uid(1), Some(head), SyncLimit::default())
        .await
        .unwrap();
    assert_eq!(
        (again.events, again.next, again.has_more),
        (vec![], head, false)
    );
}

#[tokio::test]
async fn foreign_future_and_purged_tokens_are_expired() {
    let app = app().await;
    let id = app.group(1, &[2]).await;
    let old = app.service.feed_head().await.unwrap();
    app.send(2, id, "hi").await;
    let head = app.service.feed_head().await.unwrap();
    let expired = |result: Result<SyncPage, ServiceError>| {
        assert_eq!(result.unwrap_err(), ServiceError::SyncTokenExpired);
    };
    let foreign = SyncToken {
        feed_id: FeedId::random(),
        pos: head.pos,
    };
    expired(app.service.sync(uid(1), Some(foreign), limit(10)).await);
    let ahead = SyncToken {
        feed_id: head.feed_id,
        pos: head.pos.next(),
    };
    expired(app.service.sync(uid(1), Some(ahead), limit(10)).await);
    // Still valid before the purge.
    let page = app
        .service
        .sync(uid(1), Some(old), limit(10))
        .await
        .unwrap();
    assert!(!page.events.is_empty());

    let store = app.memory();
    let future = Timestamp::now_utc() + std::time::Duration::from_secs(86_400);
    let purged = store.purge(future, 1).await.unwrap();
    assert_eq!(purged.floor, head.pos, "the floor moves to the head first");
    expired(app.service.sync(uid(1), Some(old), limit(10)).await);
    // At the floor nothing is missing.
    let at_floor = app
        .service
        .sync(uid(1), Some(head), limit(10))
        .await
        .unwrap();
    assert_eq!(at_floor.next, head);
    // And a fresh token works after a purge.
    app.send(1, id, "after").await;
    let fresh = app
        .service
        .sync(uid(2), Some(head), limit(10))
        .await
        .unwrap();
    assert!(fresh.events.iter().any(|e| matches!(
        &e.event,
        ChatEvent::MessageCreated(view) if view.message.content == "after"
    )));
}

#[tokio::test]
async fn pages_of_any_size_give_the_same_events_oldest_first() {
    let app = app().await;
    let start = app.service.feed_head().await.unwrap();
    let id = app.group(1, &[2, 3]).await;
    for i in 0..12 {
        app.send(1 + i % 3, id, &format!("m{i}")).await;
    }
    let (all, last, calls) = drain(&app.service, uid(2), start, 500).await;
    assert_eq!(calls, 1);
    assert_eq!(last, app.service.feed_head().await.unwrap());
    assert!(all.windows(2).all(|w| w[0].pos < w[1].pos));
    for size in [1, 2, 5, 7] {
        let (paged, end, _) = drain(&app.service, uid(2), start, size).await;
        assert_eq!(paged, all, "pages of {size}");
        assert_eq!(end, last);
    }
    let texts: Vec<String> = all
        .iter()
        .filter_map(|e| match &e.event {
            ChatEvent::MessageCreated(view) if !view.message.is_system_message => {
                Some(view.message.content.clone())
            }
            _ => None,
        })
        .collect();
    let expected: Vec<String> = (0..12).map(|i| format!("m{i}")).collect();
    assert_eq!(texts, expected);
}

#[tokio::test]
async fn a_reader_sees_its_membership_window_only_and_never_deleted_content() {
    let app = app().await;
    let id = app.group(1, &[2]).await;
    let other = app.group(2, &[4]).await;
    app.send(1, id, "before user 3 joined").await;
    let start = app.service.feed_head().await.unwrap();
    let gone = app.send(1, id, "deleted later").await.message.id;
    app.service
        .add_participants(uid(1), id, vec![uid(3)])
        .await
        .unwrap();
    app.send(2, id, "while user 3 is in").await;
    app.service
        .edit_message(uid(1), gone, MessageContent::parse("edited").unwrap())
        .await
        .unwrap();
    app.service.delete_message(uid(1), gone).await.unwrap();
    app.send(2, other, "not user 3's business").await;
    app.service
        .remove_participant(uid(1), id, uid(3))
        .await
        .unwrap();
    app.send(2, id, "after user 3 was removed").await;

    let (events, _, _) = drain(&app.service, uid(3), start, 3).await;
    let names: Vec<&str> = events.iter().map(|e| e.event.name()).collect();
    assert_eq!(
        names,
        vec![
            "participant.added",
            "message.created", // the announcement of the join (its author's marker is implied)
            "message.created",
            "message.deleted",
            "participant.removed",
        ]
    );
    assert!(events.iter().all(|e| e.event.conversation_id() == id));
    let ChatEvent::MessageCreated(view) = &events[2].event else {
        panic!("a message");
    };
    assert_eq!(view.message.content, "while user 3 is in");
    assert!(
        !events.iter().any(|e| matches!(&e.event,
            ChatEvent::MessageCreated(v) | ChatEvent::MessageUpdated(v) if v.message.id == gone)),
        "deleted content is never served"
    );
    // User 2 saw the whole time, and the deleted message's creation is still not served.
    let (theirs, _, _) = drain(&app.service, uid(2), start, 4).await;
    assert!(theirs.iter().any(|e| e.event.conversation_id() == other));
    assert!(theirs.iter().any(|e| matches!(&e.event,
        ChatEvent::MessageCreated(v) if v.message.content == "after user 3 was removed")));
}

#[tokio::test]
async fn a_page_full_of_changes_the_reader_may_not_see_still_moves_the_token() {
    let app = app().await;
    let id = app.group(1, &[2, 3]).await;
    app.service
        .remove_participant(uid(1), id, uid(3))
        .await
        .unwrap();
    let start = app.service.feed_head().await.unwrap();
    // User 3 still has a participant row here: the store hands these changes out, and
    // sync filters them all.
    for i in 0..100 {
        app.send(1, id, &format!("hidden {i}")).await;
    }
    let (events, end, calls) = drain(&app.service, uid(3), start, 5).await;
    assert_eq!(events, vec![]);
    assert_eq!(end, app.service.feed_head().await.unwrap());
    assert!(
        calls <= 6,
        "eight rounds of a full page per call: {calls} calls for 200 changes"
    );
    let first = app
        .service
        .sync(uid(3), Some(start), limit(5))
        .await
        .unwrap();
    assert!(first.has_more);
    assert!(
        first.next.pos > start.pos,
        "the token moves past what was filtered"
    );
}

/// The memory store's feed, purging everything just before it reads a reader's page when
/// `purge_first` is set: a purge that races a sync, after its check of the token.
struct RacingPurge {
    store: Arc<MemoryStore>,
    purge_first: AtomicBool,
}

#[async_trait]
impl ChangeFeed for RacingPurge {
    async fn feed_bounds(&self) -> Result<FeedBounds, StoreError> {
        self.store.feed_bounds().await
    }

    async fn changes_after(&self, after: FeedPos, limit: usize) -> Result<Vec<Change>, StoreError> {
        self.store.changes_after(after, limit).await
    }

    async fn reader_changes(
        &self,
        reader: UserId,
        after: FeedPos,
        limit: usize,
    ) -> Result<ReaderChanges, StoreError> {
        if self.purge_first.swap(false, Ordering::SeqCst) {
            let future = Timestamp::now_utc() + Duration::from_secs(86_400);
            self.store.purge(future, 100).await?;
        }
        self.store.reader_changes(reader, after, limit).await
    }

    async fn wait_past(&self, after: FeedPos, timeout: Duration) -> Result<FeedPos, StoreError> {
        self.store.wait_past(after, timeout).await
    }

    async fn purge(&self, older_than: Timestamp, batch: usize) -> Result<Purged, StoreError> {
        self.store.purge(older_than, batch).await
    }
}

#[tokio::test]
async fn a_purge_that_races_a_sync_expires_the_token_rather_than_leaving_a_hole() {
    let app = app().await;
    let id = app.group(1, &[2]).await;
    let old = app.service.feed_head().await.unwrap();
    for i in 0..10 {
        app.send(1, id, &format!("m{i}")).await;
    }
    let feed = Arc::new(RacingPurge {
        store: app.memory(),
        purge_first: AtomicBool::new(false),
    });
    let mut wired = ports(app.memory(), app.events.clone());
    wired.feed = feed.clone();
    let service = ChatService::new(wired);
    // Without the purge, a page of three.
    let page = service.sync(uid(2), Some(old), limit(3)).await.unwrap();
    assert_eq!(page.events.len(), 3);
    // The floor passes the token after it was checked and before the page is read: the
    // answer is not a page with a hole (here: nothing, and the head as the next token),
    // it is "expired".
    feed.purge_first.store(true, Ordering::SeqCst);
    assert_eq!(
        service.sync(uid(2), Some(old), limit(3)).await.unwrap_err(),
        ServiceError::SyncTokenExpired
    );
}
