//! One user in 1,000 conversations that all have unread messages, built through the adapter
//! (so the counters and activity times are the ones its writes maintain): the badge and the
//! inbox answer correctly, the inbox costs the same few statements whatever the page size,
//! and their latencies are printed (run with `--nocapture`; nothing is asserted about time).
#![allow(clippy::unwrap_used)] // Test code: a failed expectation panics.

mod common;

use common::text;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use chat_domain::{
    ConversationId, ConversationType, GroupName, MediaMetadata, MessageBody, MessageContent,
    MessageId, UserId,
};
use chat_mysql::{MySqlSettings, MySqlStore};
use chat_ports::{
    ArchivedFilter, ConversationStore, InboxQuery, MessageStore, NewConversation, NewMessage,
    PageLimit, ReadStateStore, UserDirectory,
};
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
async fn build(store: &MySqlStore, i: i64) {
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

/// Statements the server has run on this connection so far.
async fn statements(store: &MySqlStore) -> i64 {
    let (_, value): (String, String) = sqlx::query_as("SHOW SESSION STATUS LIKE 'Questions'")
        .fetch_one(store.pool())
        .await
        .unwrap();
    value.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn badge_and_inbox_for_one_user_in_a_thousand_unread_conversations() {
    let Some(db) = common::fresh_store().await else {
        return;
    };
    let store = db.store.clone();
    for id in 1..=50 {
        store.upsert_user(user(id), None).await.unwrap();
    }
    let built = Instant::now();
    stream::iter(0..CONVERSATIONS)
        .for_each_concurrent(8, |i| {
            let store = store.clone();
            async move { build(&store, i).await }
        })
        .await;
    println!(
        "built 1000 conversations (3000 transactions) in {:?}",
        built.elapsed()
    );
    sqlx::query("ANALYZE TABLE CONVERSATIONS, CONVERSATION_PARTICIPANTS, MESSAGES")
        .execute(store.pool())
        .await
        .unwrap();
    let reader = user(1);

    // Correctness: every counter equals the count, and the ports report them.
    let wrong: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM CONVERSATION_PARTICIPANTS p \
         JOIN CONVERSATIONS c ON c.id = p.conversation_id \
         WHERE p.left_at IS NULL AND (c.counted_total <> (SELECT COUNT(*) FROM MESSAGES t \
             WHERE t.conversation_id = c.id AND t.deleted_at IS NULL \
               AND t.is_system_message IS NOT TRUE) \
           OR c.counted_total - p.unread_base <> (SELECT COUNT(*) FROM MESSAGES m \
             WHERE m.conversation_id = p.conversation_id AND m.seq > p.last_read_seq \
               AND m.sender_id <> p.user_id AND m.deleted_at IS NULL \
               AND m.is_system_message IS NOT TRUE))",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
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
    .fetch_all(store.pool())
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

    // Bounded statements: a page of 20 costs what a page of 2 costs (no query per item).
    let single = {
        let mut settings = MySqlSettings::new(common::database_url(&db.name));
        settings.max_connections = 1;
        MySqlStore::connect(&settings)
            .await
            .unwrap()
            .with_cipher(chat_test_support::key_ring::cipher())
    };
    let mut per_page = Vec::new();
    for size in [2, 20] {
        let query = InboxQuery {
            limit: PageLimit::new(size).unwrap(),
            ..first_page
        };
        single.inbox(reader, query).await.unwrap(); // prepares the statements
        let before = statements(&single).await;
        single.inbox(reader, query).await.unwrap();
        per_page.push(statements(&single).await - before - 1);
    }
    println!("statements per inbox page of 2 / 20: {per_page:?}");
    assert_eq!(per_page[0], per_page[1], "statements grow with the page");
    assert!(per_page[1] <= 8, "{per_page:?}");
    single.pool().close().await;

    // Timings, for the record.
    let second_page = InboxQuery {
        after: page.next_cursor,
        ..first_page
    };
    let (mut badge_times, mut inbox_times, mut next_times) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..300 {
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
    ] {
        let (p50, p99) = percentiles(samples);
        println!("timing ({build}) {name}: p50 {p50:?}, p99 {p99:?}");
    }
    db.finish().await;
}
