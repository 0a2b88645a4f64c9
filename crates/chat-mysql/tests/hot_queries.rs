//! The hot read paths on a user with 1000 conversations: each is served by an index (checked
//! with `EXPLAIN` on the adapter's own SQL) and answers correctly; timings are printed for
//! `docs/schema.md` (run with `--nocapture`).
#![allow(clippy::unwrap_used)] // Test code: a failed expectation panics.

mod common;

use std::time::{Duration, Instant};

use chat_domain::{ConversationId, Seq, UserId};
use chat_mysql::{MySqlStore, hot_queries};
use chat_ports::{
    ArchivedFilter, HistoryQuery, InboxQuery, MessageStore, PageLimit, ReadStateStore,
};
use sqlx::{Column, Row};

const CONVERSATIONS: i64 = 1000;
const MESSAGES_EACH: i64 = 30;
const READ_UP_TO: i64 = 25;

/// User 1 in 1000 of 10 000 GROUP conversations with 30 messages each (alternating with one other
/// member), having read 25 of them: 1000 × 5 / 2 = 2500 unread.
const SEED: &[&str] = &[
    "SET time_zone = '+00:00'",
    "INSERT INTO app_users (id, first_name) \
     WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50) \
     SELECT i, CONCAT('User ', i) FROM n",
    "INSERT INTO CONVERSATIONS (id, type, name, created_by, created_at, last_message_at, last_seq) \
     WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000) \
     SELECT UUID(), 'GROUP', CONCAT('g', i), 1, '2025-01-01 00:00:00', \
            TIMESTAMPADD(SECOND, i, '2025-01-01 00:00:00'), 30 FROM n",
    "INSERT INTO CONVERSATION_PARTICIPANTS (id, conversation_id, user_id, role, last_read_seq) \
     SELECT UUID(), c.id, 1, 'ADMIN', 25 FROM CONVERSATIONS c",
    "INSERT INTO CONVERSATION_PARTICIPANTS (id, conversation_id, user_id, role) \
     SELECT UUID(), c.id, 2 + CRC32(c.id) % 49, 'MEMBER' FROM CONVERSATIONS c",
    "INSERT INTO MESSAGES (id, conversation_id, seq, sender_id, content, created_at) \
     WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 30) \
     SELECT UUID(), c.id, n.i, IF(n.i % 2 = 0, 1, 2 + CRC32(c.id) % 49), CONCAT('m', n.i), \
            c.last_message_at \
     FROM CONVERSATIONS c CROSS JOIN n",
    // 9000 conversations of other users, so user 1 holds a realistic share of the table.
    "INSERT INTO CONVERSATIONS (id, type, name, created_by, created_at, last_message_at, last_seq) \
     WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 99) \
     SELECT UUID(), 'GROUP', CONCAT('other', a.i * 100 + b.i), 2 + b.i % 49, \
            '2025-01-01 00:00:00', TIMESTAMPADD(SECOND, a.i * 100 + b.i, '2025-01-01 00:00:00'), 0 \
     FROM n a CROSS JOIN n b WHERE a.i < 90",
    "INSERT INTO CONVERSATION_PARTICIPANTS (id, conversation_id, user_id, role) \
     SELECT UUID(), c.id, c.created_by, 'ADMIN' FROM CONVERSATIONS c WHERE c.name LIKE 'other%'",
    "INSERT INTO MESSAGE_REACTIONS (id, message_id, user_id, emoji) \
     SELECT UUID(), m.id, 1, '👍' FROM MESSAGES m WHERE m.seq % 3 = 0",
    // Rows inserted behind the adapter's back (messages with their seq, so the triggers leave
    // them alone): their counters, bases and activity keys are set the way the backfill of
    // 20251201000010 sets them.
    "UPDATE CONVERSATIONS c SET c.counted_total = (SELECT COUNT(*) FROM MESSAGES m \
       WHERE m.conversation_id = c.id AND m.deleted_at IS NULL \
         AND m.is_system_message IS NOT TRUE), \
     c.activity_key = CAST(UNIX_TIMESTAMP(COALESCE(c.last_message_at, c.created_at)) * 1000000 AS SIGNED)",
    "UPDATE CONVERSATION_PARTICIPANTS p JOIN CONVERSATIONS c ON c.id = p.conversation_id \
     SET p.unread_base = c.counted_total - (SELECT COUNT(*) FROM MESSAGES m \
     WHERE m.conversation_id = p.conversation_id AND m.seq > p.last_read_seq \
       AND m.sender_id <> p.user_id AND m.deleted_at IS NULL AND m.is_system_message IS NOT TRUE) \
     WHERE p.left_at IS NULL",
    "ANALYZE TABLE CONVERSATIONS, CONVERSATION_PARTICIPANTS, MESSAGES, MESSAGE_REACTIONS",
];

async fn explain(store: &MySqlStore, sql: &str, binds: &[String]) -> Vec<Vec<String>> {
    let text = format!("EXPLAIN {sql}");
    let mut query = sqlx::query(&text);
    for bind in binds {
        query = query.bind(bind);
    }
    let rows = query.fetch_all(store.pool()).await.unwrap();
    let mut table = Vec::new();
    if let Some(first) = rows.first() {
        table.push(
            first
                .columns()
                .iter()
                .map(|c| c.name().to_owned())
                .collect(),
        );
    }
    for row in &rows {
        table.push(
            (0..row.len())
                .map(|i| {
                    row.try_get::<Option<String>, _>(i)
                        .ok()
                        .flatten()
                        .or_else(|| {
                            row.try_get::<Option<i64>, _>(i)
                                .ok()
                                .flatten()
                                .map(|n| n.to_string())
                        })
                        .or_else(|| {
                            row.try_get::<Option<u64>, _>(i)
                                .ok()
                                .flatten()
                                .map(|n| n.to_string())
                        })
                        .unwrap_or_else(|| "NULL".to_owned())
                })
                .collect(),
        );
    }
    table
}

fn print_table(title: &str, table: &[Vec<String>]) {
    println!("\n### {title}\n");
    for (i, row) in table.iter().enumerate() {
        println!("| {} |", row.join(" | "));
        if i == 0 {
            println!("|{}", "---|".repeat(row.len()));
        }
    }
}

/// The `key` of the row for `table` (alias) in an EXPLAIN.
fn key_of<'t>(table: &'t [Vec<String>], alias: &str) -> Vec<&'t str> {
    let header = &table[0];
    let t = header.iter().position(|c| c == "table").unwrap();
    let k = header.iter().position(|c| c == "key").unwrap();
    table[1..]
        .iter()
        .filter(|row| row[t] == alias)
        .map(|row| row[k].as_str())
        .collect()
}

fn extra_of<'t>(table: &'t [Vec<String>], alias: &str) -> Vec<&'t str> {
    let header = &table[0];
    let t = header.iter().position(|c| c == "table").unwrap();
    let e = header.iter().position(|c| c == "Extra").unwrap();
    table[1..]
        .iter()
        .filter(|row| row[t] == alias)
        .map(|row| row[e].as_str())
        .collect()
}

fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let p = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize];
    (p(0.5), p(0.99))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_queries_are_served_by_indexes() {
    let Some(db) = common::fresh_store().await else {
        return;
    };
    let store = db.store.clone();
    for statement in SEED {
        sqlx::raw_sql(statement)
            .execute(store.pool())
            .await
            .unwrap();
    }
    let user = UserId::new(1).unwrap();
    let newest: String = sqlx::query_scalar(
        "SELECT id FROM CONVERSATIONS WHERE name LIKE 'g%' ORDER BY last_message_at DESC LIMIT 1",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    let conversation = ConversationId::parse(&newest).unwrap();

    // Behaviour first.
    let badge = store.unread_summary(user).await.unwrap();
    let unread_each = u64::try_from((MESSAGES_EACH - READ_UP_TO) / 2).unwrap();
    assert_eq!(
        badge.conversations.len(),
        usize::try_from(CONVERSATIONS).unwrap()
    );
    assert_eq!(
        badge.total,
        unread_each * u64::try_from(CONVERSATIONS).unwrap()
    );
    let inbox_query = InboxQuery {
        limit: PageLimit::new(20).unwrap(),
        after: None,
        archived: ArchivedFilter::Active,
    };
    let page = store.inbox(user, inbox_query).await.unwrap();
    assert_eq!(page.items.len(), 20);
    assert_eq!(page.items[0].details.conversation.id, conversation);
    assert!(page.items.iter().all(|i| i.unread_count == unread_each));
    assert_eq!(
        page.items[0]
            .last_message
            .as_ref()
            .unwrap()
            .message
            .seq
            .get(),
        30
    );
    let deep = store
        .history(
            conversation,
            HistoryQuery::Before(Seq::new(4).unwrap(), PageLimit::new(20).unwrap()),
        )
        .await
        .unwrap();
    let seqs: Vec<i64> = deep.items.iter().map(|v| v.message.seq.get()).collect();
    assert_eq!(seqs, vec![3, 2, 1]);
    assert_eq!(deep.items[0].reactions[0].emoji, "👍");

    // Plans: every hot path on an index, no full scans of MESSAGES.
    let inbox = explain(
        &store,
        &hot_queries::inbox_first_page(),
        &["1".into(), "21".into(), "1".into()],
    )
    .await;
    print_table(
        "Inbox page (user in 1000 conversations, page of 20)",
        &inbox,
    );
    // The caller's memberships are a range of their index, each joined to its conversation
    // by key, then sorted by the conversations' activity keys and cut at the page size (the
    // order lives on the conversation, so that a send writes no membership of others).
    // The narrow page query (a derived table) does that; the wide columns and the newest
    // message are read for the page's rows only.
    assert!(
        key_of(&inbox, "p")
            .iter()
            .any(|k| k.starts_with("idx_participants_")),
        "{:?}",
        key_of(&inbox, "p")
    );
    // The page's conversations are probed in the narrow counters (a binary key), the wide
    // rows only for the page.
    assert_eq!(key_of(&inbox, "k"), vec!["PRIMARY"]);
    assert!(key_of(&inbox, "c").iter().all(|k| *k == "PRIMARY"));
    let m_keys = key_of(&inbox, "m");
    assert_eq!(
        m_keys.len(),
        1,
        "only the newest live message is a subquery"
    );
    assert!(
        m_keys.iter().all(|k| k.starts_with("idx_messages_unread")
            || k.starts_with("uq_messages_conversation_seq")),
        "{m_keys:?}"
    );

    let summary = explain(&store, &hot_queries::unread_summary(), &["1".into()]).await;
    print_table("Unread badge (user in 1000 conversations)", &summary);
    assert_eq!(key_of(&summary, "p"), vec!["idx_participants_badge"]);
    assert_eq!(key_of(&summary, "k"), vec!["PRIMARY"]);
    assert!(
        key_of(&summary, "c").is_empty(),
        "no CONVERSATIONS row is read"
    );
    assert!(key_of(&summary, "m").is_empty(), "no message is counted");
    let badge_extra = extra_of(&summary, "p")[0];
    assert!(badge_extra.contains("Using index"), "{badge_extra}");
    assert!(!badge_extra.contains("filesort"), "{badge_extra}");

    let history = explain(
        &store,
        &hot_queries::history_before(),
        &[newest.clone(), "4".into(), "21".into()],
    )
    .await;
    print_table("History page before a seq (keyset)", &history);
    assert_eq!(key_of(&history, "m"), vec!["uq_messages_conversation_seq"]);
    assert!(!extra_of(&history, "m")[0].contains("filesort"));

    let ids: Vec<String> = deep
        .items
        .iter()
        .take(2)
        .map(|v| v.message.id.to_string())
        .collect();
    let reactions = explain(&store, &hot_queries::reactions_of_two(), &ids).await;
    print_table("Reactions of a page", &reactions);
    assert!(
        key_of(&reactions, "r")[0].starts_with("idx_reactions_message")
            || key_of(&reactions, "r")[0].starts_with("uq_reactions")
    );

    // Timings, for the record.
    let mut inbox_times = Vec::new();
    let mut badge_times = Vec::new();
    let mut history_times = Vec::new();
    for _ in 0..200 {
        let start = Instant::now();
        store.inbox(user, inbox_query).await.unwrap();
        inbox_times.push(start.elapsed());
        let start = Instant::now();
        store.unread_summary(user).await.unwrap();
        badge_times.push(start.elapsed());
        let start = Instant::now();
        store
            .history(
                conversation,
                HistoryQuery::Latest(PageLimit::new(50).unwrap()),
            )
            .await
            .unwrap();
        history_times.push(start.elapsed());
    }
    for (name, samples) in [
        ("inbox page of 20", inbox_times),
        ("unread badge", badge_times),
        ("history page of 50", history_times),
    ] {
        let (p50, p99) = percentiles(samples);
        println!("timing {name}: p50 {p50:?}, p99 {p99:?}");
    }
    db.finish().await;
}
