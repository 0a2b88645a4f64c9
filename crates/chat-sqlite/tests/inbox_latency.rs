//! One user in 1,000 conversations that all have unread messages, built concurrently through
//! the adapter (so the counters and activity times are the ones its batched writes
//! maintain): every counter is exact, the badge and the inbox answer correctly page by page,
//! a sync of 10 new changes (the change feed's `reader_changes`) answers exactly those, and
//! the latencies are printed (run with `--no-capture`; nothing is asserted about time).
#![allow(clippy::unwrap_used)] // Test code: a failed expectation panics.

mod common;

use common::text;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use chat_domain::{
    ConversationId, ConversationType, GroupName, MediaMetadata, MessageBody, MessageContent,
    MessageId, UserId,
};
use chat_ports::{
    ArchivedFilter, ChangeFeed, ConversationStore, InboxQuery, MessageStore, NewConversation,
    NewMessage, PageLimit, ReadStateStore, UserDirectory,
};
use chat_sqlite::SqliteStore;
use futures::{StreamExt, stream};
use time::OffsetDateTime;

const CONVERSATIONS: i64 = 1000;
const UNREAD_EACH: u64 = 2;

fn user(id: i64) -> UserId {
    UserId::new(id).unwrap()
}

fn at(seconds: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_800_000_000 + seconds).unwrap()
}

fn message(conversation: ConversationId, sender: i64, body: MessageBody, when: i64) -> NewMessage {
    NewMessage {
        id: MessageId::new(),
        conversation_id: conversation,
        sender_id: user(sender),
        body,
        reply_to_id: None,
        client_message_id: None,
        created_at: at(when),
    }
}

/// Conversation `i`: created by user `2 + i % 49` with user 1, who then receives two
/// messages; its activity time is second `10 * i + 2`.
async fn build(store: &SqliteStore, i: i64) {
    let id = ConversationId::new();
    let creator = 2 + i % 49;
    store
        .create_conversation(
            NewConversation {
                id,
                kind: ConversationType::Group,
                name: Some(GroupName::parse(&format!("g{i}")).unwrap()),
                posting_id: None,
                created_by: user(creator),
                members: vec![user(1)],
                created_at: at(10 * i),
            },
            message(
                id,
                creator,
                MessageBody::system(
                    MessageContent::parse("created").unwrap(),
                    MediaMetadata::parse(r#"{"event":"created"}"#).unwrap(),
                ),
                10 * i,
            ),
        )
        .await
        .unwrap();
    for n in 1..=2 {
        store
            .append_message(message(id, creator, text(&format!("m{n}")), 10 * i + n))
            .await
            .unwrap();
    }
}

fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let pick = |q: usize| samples[(samples.len() - 1) * q / 100];
    (pick(50), pick(99))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn badge_and_inbox_for_one_user_in_a_thousand_unread_conversations() {
    let db = common::fresh_store().await;
    let store = db.store.clone();
    for id in 1..=50 {
        store.upsert_user(user(id), None).await.unwrap();
    }
    let built = Instant::now();
    stream::iter(0..CONVERSATIONS)
        .for_each_concurrent(16, |i| {
            let store = store.clone();
            async move { build(&store, i).await }
        })
        .await;
    println!(
        "built 1000 conversations (3000 writes) in {:?}: {:?}",
        built.elapsed(),
        store.write_stats()
    );
    let reader = user(1);

    // Correctness: every unread count by difference equals the count.
    let mut raw = common::raw::connect(&db.location()).await;
    let wrong = common::raw::scalar(
        &mut raw,
        "SELECT COUNT(*) FROM CONVERSATION_PARTICIPANTS p \
         JOIN CONVERSATIONS c ON c.id = p.conversation_id \
         WHERE p.left_at IS NULL AND (c.counted_total <> (SELECT COUNT(*) FROM MESSAGES t \
             WHERE t.conversation_id = c.id AND t.deleted_at IS NULL \
               AND t.is_system_message = 0) \
           OR c.counted_total - p.unread_base <> (SELECT COUNT(*) FROM MESSAGES m \
             WHERE m.conversation_id = p.conversation_id AND m.seq > p.last_read_seq \
               AND m.sender_id <> p.user_id AND m.deleted_at IS NULL \
               AND m.is_system_message = 0))",
        None,
    )
    .await;
    assert_eq!(
        wrong, 0,
        "memberships whose unread count by difference, or conversations whose total, is off"
    );
    let badge = store.unread_summary(reader).await.unwrap();
    assert_eq!(badge.conversations.len(), 1000);
    assert_eq!(badge.total, 1000 * UNREAD_EACH);
    assert!(
        badge
            .conversations
            .iter()
            .all(|c| c.unread_count == UNREAD_EACH)
    );

    let first_page = InboxQuery {
        limit: PageLimit::new(20).unwrap(),
        after: None,
        archived: ArchivedFilter::Active,
    };
    // The conversations were built concurrently: the inbox lists them in the order their
    // activity committed (the activity keys), which need not be the order of the given times.
    let by_key: Vec<String> = sqlx::query_scalar(
        "SELECT c.id FROM CONVERSATIONS c JOIN CONVERSATION_PARTICIPANTS p \
         ON p.conversation_id = c.id AND p.user_id = 1 AND p.left_at IS NULL \
         ORDER BY c.activity_key DESC, c.id DESC",
    )
    .fetch_all(&mut raw)
    .await
    .unwrap();
    let page = store.inbox(reader, first_page).await.unwrap();
    assert_eq!(page.items.len(), 20);
    for (rank, item) in page.items.iter().enumerate() {
        assert_eq!(item.details.conversation.id.to_string(), by_key[rank]);
        assert_eq!(item.unread_count, UNREAD_EACH);
        assert_eq!(item.details.participants.len(), 2);
        let last = item.last_message.as_ref().unwrap();
        assert_eq!(
            (last.message.content.as_str(), last.message.seq.get()),
            ("m2", 3)
        );
    }

    // Every page, by cursor: each conversation once, most recent first.
    let mut seen = HashSet::new();
    let mut listed = Vec::new();
    let mut query = InboxQuery {
        limit: PageLimit::new(100).unwrap(),
        ..first_page
    };
    loop {
        let page = store.inbox(reader, query).await.unwrap();
        for item in &page.items {
            listed.push(item.details.conversation.id.to_string());
            assert!(seen.insert(item.details.conversation.id), "listed twice");
        }
        match page.next_cursor {
            Some(cursor) => query.after = Some(cursor),
            None => break,
        }
    }
    assert_eq!(seen.len(), 1000);
    assert_eq!(listed, by_key, "most recent activity first, across pages");

    // Timings, for the record.
    let second_page = InboxQuery {
        after: page.next_cursor,
        ..first_page
    };
    // A sync: 10 new changes (reactions) in 10 of the reader's conversations, after a
    // position taken when the 1000 conversations were built.
    let mark = store.feed_bounds().await.unwrap().head;
    let thumbs = chat_domain::Emoji::parse("👍").unwrap();
    for item in page.items.iter().take(10) {
        let last = item.last_message.as_ref().unwrap();
        store
            .add_reaction(last.message.id, reader, thumbs.clone(), at(99_999))
            .await
            .unwrap();
    }
    let sync = store.reader_changes(reader, mark, 100).await.unwrap();
    assert_eq!(sync.changes.len(), 10);
    assert_eq!(sync.windows.len(), 10);
    assert!(
        sync.windows
            .iter()
            .all(|w| w.active_now && w.first_move_after.is_none())
    );
    assert_eq!(
        chat_domain::visible_changes(reader, sync.changes.clone(), &sync.windows).len(),
        10
    );
    // From the start of the feed: 1000 conversations of 5 entries each, a page of 100.
    let first_sync = store
        .reader_changes(reader, chat_domain::FeedPos::ZERO, 100)
        .await
        .unwrap();
    assert_eq!(first_sync.changes.len(), 100);
    let (mut badge_times, mut inbox_times, mut next_times) = (Vec::new(), Vec::new(), Vec::new());
    let (mut sync_times, mut deep_times) = (Vec::new(), Vec::new());
    for _ in 0..200 {
        let start = Instant::now();
        store.reader_changes(reader, mark, 100).await.unwrap();
        sync_times.push(start.elapsed());
        let start = Instant::now();
        store
            .reader_changes(reader, chat_domain::FeedPos::ZERO, 100)
            .await
            .unwrap();
        deep_times.push(start.elapsed());
        let start = Instant::now();
        store.unread_summary(reader).await.unwrap();
        badge_times.push(start.elapsed());
        let start = Instant::now();
        store.inbox(reader, first_page).await.unwrap();
        inbox_times.push(start.elapsed());
        let start = Instant::now();
        store.inbox(reader, second_page).await.unwrap();
        next_times.push(start.elapsed());
    }
    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    for (name, samples) in [
        ("unread badge", badge_times),
        ("inbox first page of 20", inbox_times),
        ("inbox second page of 20 (cursor)", next_times),
        ("sync of 10 new changes (reader_changes)", sync_times),
        ("sync from the feed's start, page of 100", deep_times),
    ] {
        let (p50, p99) = percentiles(samples);
        println!("timing ({build}) {name}: p50 {p50:?}, p99 {p99:?}");
    }
    db.store.close().await;
}
