//! The benchmark's hot-conversation shape in-process, to look at the tail of the append
//! path without HTTP: 10 groups of 5, sends paced at a fixed rate (an open loop, latency
//! counted from each send's scheduled time), every member sending in turn. Every send is
//! answered and stored exactly once; the latency percentiles, the appender's batching
//! (transactions, batches, rolled-back batches) and the server's deadlock count over the
//! run are printed for docs/benchmarks.md (run with `--nocapture`; nothing about time is
//! asserted: the machine is shared).
#![allow(clippy::unwrap_used)] // Test code: a failed expectation panics.

mod common;

use common::{system, text};

use std::time::{Duration, Instant};

use chat_domain::{ConversationId, ConversationType, GroupName, MessageId, UserId};
use chat_mysql::MySqlStore;
use chat_ports::{ConversationStore, MessageStore, NewConversation, NewMessage, UserDirectory};
use futures::future::join_all;
use time::OffsetDateTime;

const GROUPS: i64 = 10;
const MEMBERS: i64 = 5;
const RATE_PER_SECOND: u32 = 200;
const SENDS: u32 = 600;

fn user(id: i64) -> UserId {
    UserId::new(id).unwrap()
}

fn at(second: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_800_000_000 + second).unwrap()
}

fn message(conversation: ConversationId, sender: i64) -> NewMessage {
    NewMessage {
        id: MessageId::new(),
        conversation_id: conversation,
        sender_id: user(sender),
        body: text("hot"),
        reply_to_id: None,
        client_message_id: None,
        created_at: at(1),
    }
}

async fn group(store: &MySqlStore, first: i64) -> ConversationId {
    let id = ConversationId::new();
    store
        .create_conversation(
            NewConversation {
                id,
                kind: ConversationType::Group,
                name: Some(GroupName::parse("hot").unwrap()),
                posting_id: None,
                created_by: user(first),
                members: (first + 1..first + MEMBERS).map(user).collect(),
                created_at: at(0),
            },
            NewMessage {
                body: system("created"),
                ..message(id, first)
            },
        )
        .await
        .unwrap();
    id
}

async fn deadlocks(store: &MySqlStore) -> i64 {
    let (_, value): (String, String) = sqlx::query_as("SHOW GLOBAL STATUS LIKE 'Innodb_deadlocks'")
        .fetch_one(store.pool())
        .await
        .unwrap();
    value.parse().unwrap()
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[index]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_conversations_at_a_paced_rate_are_each_stored_once() {
    let Some(db) = common::fresh_store().await else {
        return;
    };
    let store = db.store.clone();
    for id in 1..=GROUPS * MEMBERS {
        store.upsert_user(user(id), None).await.unwrap();
    }
    let mut groups = Vec::new();
    for g in 0..GROUPS {
        let first = 1 + g * MEMBERS;
        groups.push((group(&store, first).await, first));
    }
    let stats_before = store.append_stats();
    let deadlocks_before = deadlocks(&store).await;
    let start = Instant::now() + Duration::from_millis(50);
    let interval = Duration::from_secs(1) / RATE_PER_SECOND;
    let sends = (0..SENDS).map(|n| {
        let store = store.clone();
        let (conversation, first) = groups[n as usize % groups.len()];
        let sender = first + i64::from(n) / GROUPS % MEMBERS;
        let scheduled = start + interval * n;
        tokio::spawn(async move {
            tokio::time::sleep_until(scheduled.into()).await;
            let appended = store
                .append_message(message(conversation, sender))
                .await
                .unwrap();
            assert!(appended.created);
            scheduled.elapsed()
        })
    });
    let mut latencies: Vec<Duration> = join_all(sends)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    latencies.sort();
    let stats = store.append_stats();
    let deadlocks = deadlocks(&store).await - deadlocks_before;
    let stored: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM MESSAGES WHERE is_system_message IS NOT TRUE")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(stored, i64::from(SENDS), "every send stored once");
    let transactions = stats.transactions - stats_before.transactions;
    let batches = stats.batches - stats_before.batches;
    let batched = stats.batched_requests - stats_before.batched_requests;
    println!(
        "{SENDS} sends at {RATE_PER_SECOND}/s into {GROUPS} groups of {MEMBERS}: p50 {:?}, \
         p90 {:?}, p99 {:?}, max {:?}; {transactions} transactions, {batches} batches \
         holding {batched} sends, {} rolled back; {deadlocks} deadlocks on the server \
         (all databases) meanwhile",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.9),
        percentile(&latencies, 0.99),
        latencies.last().unwrap(),
        stats.rolled_back - stats_before.rolled_back,
    );
    db.finish().await;
}
