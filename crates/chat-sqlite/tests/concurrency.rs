//! Races through the one writer: DIRECT get-or-create, idempotent sends, `seq` order, and
//! the group commit of concurrent writes (a refused request does not fail its batch).
#![allow(clippy::unwrap_used)] // Test code: a failed expectation panics.

mod common;

use std::collections::HashSet;

use chat_domain::{
    ClientMessageId, ConversationId, MessageBody, MessageContent, MessageId, MessageType, Seq,
    UserId,
};
use chat_ports::{
    ConversationStore, HistoryQuery, MessageStore, NewMessage, PageLimit, ReadStateStore,
    StoreError, UserDirectory,
};
use chat_sqlite::SqliteStore;
use futures::future::join_all;
use time::OffsetDateTime;

fn user(id: i64) -> UserId {
    UserId::new(id).unwrap()
}

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
}

fn text_message(conversation: ConversationId, sender: i64, content: &str) -> NewMessage {
    NewMessage {
        id: MessageId::new(),
        conversation_id: conversation,
        sender_id: user(sender),
        body: MessageBody::from_user(
            MessageContent::parse(content).unwrap(),
            MessageType::Text,
            None,
            None,
        )
        .unwrap(),
        reply_to_id: None,
        client_message_id: None,
        created_at: now(),
    }
}

async fn direct_between_1_and_2(store: &SqliteStore) -> ConversationId {
    for id in 1..=2 {
        store.upsert_user(user(id), None).await.unwrap();
    }
    store
        .get_or_create_direct(ConversationId::new(), user(1), user(2), now())
        .await
        .unwrap()
        .details
        .conversation
        .id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_racing_direct_get_or_create_calls_make_one_row() {
    let db = common::fresh_store().await;
    let store = db.store.clone();
    for id in 1..=2 {
        store.upsert_user(user(id), None).await.unwrap();
    }
    let calls = (0..20).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            let (a, b) = if i % 2 == 0 { (1, 2) } else { (2, 1) };
            store
                .get_or_create_direct(ConversationId::new(), user(a), user(b), now())
                .await
                .unwrap()
        })
    });
    let results: Vec<_> = join_all(calls)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let ids: HashSet<ConversationId> = results.iter().map(|d| d.details.conversation.id).collect();
    assert_eq!(ids.len(), 1);
    assert_eq!(results.iter().filter(|d| d.created).count(), 1);
    let mut raw = common::raw::connect(&db.location()).await;
    let rows = common::raw::scalar(
        &mut raw,
        "SELECT COUNT(*) FROM CONVERSATIONS WHERE type = 'DIRECT'",
        None,
    )
    .await;
    assert_eq!(rows, 1, "one DIRECT row for the pair");
    let members = common::raw::scalar(
        &mut raw,
        "SELECT COUNT(*) FROM CONVERSATION_PARTICIPANTS",
        None,
    )
    .await;
    assert_eq!(members, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_racing_sends_with_one_client_message_id_store_one_row() {
    let db = common::fresh_store().await;
    let store = db.store.clone();
    let conversation = direct_between_1_and_2(&store).await;
    let calls = (0..20).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            let mut message = text_message(conversation, 1, &format!("attempt {i}"));
            message.client_message_id = Some(ClientMessageId::parse("retry-me").unwrap());
            store.append_message(message).await.unwrap()
        })
    });
    let results: Vec<_> = join_all(calls)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let ids: HashSet<MessageId> = results.iter().map(|a| a.view.message.id).collect();
    assert_eq!(ids.len(), 1, "every caller sees the same message");
    assert_eq!(results.iter().filter(|a| a.created).count(), 1);
    let mut raw = common::raw::connect(&db.location()).await;
    let rows = common::raw::scalar(
        &mut raw,
        "SELECT COUNT(*) FROM MESSAGES WHERE client_message_id = 'retry-me'",
        None,
    )
    .await;
    assert_eq!(rows, 1);
    let last_seq = common::raw::scalar(
        &mut raw,
        "SELECT last_seq FROM CONVERSATIONS WHERE id = ?",
        Some(conversation.to_string()),
    )
    .await;
    assert_eq!(last_seq, 1, "repeats take no seq");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_sends_get_seq_1_to_200_in_group_commits() {
    let db = common::fresh_store().await;
    let store = db.store.clone();
    let conversation = direct_between_1_and_2(&store).await;
    let before = store.write_stats();
    let calls = (0..200).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            let sender = 1 + i % 2;
            store
                .append_message(text_message(conversation, sender, &format!("m{i}")))
                .await
                .unwrap()
                .view
                .message
                .seq
                .get()
        })
    });
    let mut seqs: Vec<i64> = join_all(calls)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=200).collect::<Vec<i64>>(), "gap-free, unique");
    let stats = store.write_stats();
    assert_eq!(stats.requests - before.requests, 200);
    assert!(
        stats.transactions - before.transactions < 200,
        "concurrent sends share transactions: {stats:?}"
    );
    assert!(stats.largest_batch > 1, "{stats:?}");
    // History order is seq order, and every message is there once.
    let mut seen = Vec::new();
    let mut after = Seq::ZERO;
    loop {
        let page = store
            .history(
                conversation,
                HistoryQuery::After(after, PageLimit::new(100).unwrap()),
            )
            .await
            .unwrap();
        seen.extend(page.items.iter().map(|v| v.message.seq.get()));
        after = page.items.last().unwrap().message.seq;
        if !page.has_more {
            break;
        }
    }
    assert_eq!(seen, (1..=200).collect::<Vec<i64>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_request_in_a_batch_does_not_fail_the_others() {
    let db = common::fresh_store().await;
    let store = db.store.clone();
    let conversation = direct_between_1_and_2(&store).await;
    // Every fourth send replies to a message that does not exist: its INSERT fails on the
    // foreign key after the batch has started, and is rolled back to its savepoint alone.
    let calls = (0..80).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            let mut message = text_message(conversation, 1, &format!("m{i}"));
            if i % 4 == 0 {
                message.reply_to_id = Some(MessageId::new());
            }
            (i, store.append_message(message).await)
        })
    });
    let results: Vec<_> = join_all(calls)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    for (i, result) in &results {
        if i % 4 == 0 {
            assert_eq!(result.as_ref().unwrap_err(), &StoreError::NotFound);
        } else {
            assert!(result.as_ref().unwrap().created);
        }
    }
    let mut seqs: Vec<i64> = results
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .map(|a| a.view.message.seq.get())
        .collect();
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (1..=60).collect::<Vec<i64>>(),
        "refused sends took no seq"
    );
    assert!(store.write_stats().largest_batch > 1);
    // The counters stayed exact: user 2 has the 60 stored messages unread.
    let item = store
        .inbox_item(conversation, user(2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(item.unread_count, 60);
    let badge = store.unread_summary(user(2)).await.unwrap();
    assert_eq!(badge.total, 60);
}
