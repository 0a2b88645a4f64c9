//! Races on the real database: DIRECT get-or-create, idempotent sends, and `seq` order.
#![allow(clippy::unwrap_used)] // Test code: a failed expectation panics.

mod common;

use std::collections::HashSet;

use chat_domain::{
    ClientMessageId, ConversationId, MessageBody, MessageContent, MessageId, MessageType, Seq,
    UserId,
};
use chat_mysql::MySqlStore;
use chat_ports::{
    ConversationStore, HistoryQuery, MessageStore, NewMessage, PageLimit, UserDirectory,
};
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

async fn direct_between_1_and_2(store: &MySqlStore) -> ConversationId {
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

async fn count(store: &MySqlStore, sql: &str, bind: Option<String>) -> i64 {
    let mut query = sqlx::query_scalar::<_, i64>(sql);
    if let Some(value) = bind {
        query = query.bind(value);
    }
    query.fetch_one(store.pool()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_racing_direct_get_or_create_calls_make_one_row() {
    let Some(db) = common::fresh_store().await else {
        return;
    };
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
    let ids: HashSet<_> = results.iter().map(|d| d.details.conversation.id).collect();
    assert_eq!(ids.len(), 1);
    assert_eq!(results.iter().filter(|d| d.created).count(), 1);
    let rows = count(
        &store,
        "SELECT COUNT(*) FROM CONVERSATIONS WHERE type = 'DIRECT'",
        None,
    )
    .await;
    assert_eq!(rows, 1);
    let participants = count(
        &store,
        "SELECT COUNT(*) FROM CONVERSATION_PARTICIPANTS",
        None,
    )
    .await;
    assert_eq!(participants, 2);
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_racing_sends_with_one_client_message_id_store_one_row() {
    let Some(db) = common::fresh_store().await else {
        return;
    };
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
    let ids: HashSet<_> = results.iter().map(|a| a.view.message.id).collect();
    assert_eq!(ids.len(), 1);
    assert_eq!(results.iter().filter(|a| a.created).count(), 1);
    assert!(results.iter().all(|a| a.view.message.seq.get() == 1));
    let rows = count(
        &store,
        "SELECT COUNT(*) FROM MESSAGES WHERE conversation_id = ?",
        Some(conversation.to_string()),
    )
    .await;
    assert_eq!(rows, 1);
    // Keys compare byte for byte: case and trailing spaces make different keys.
    for key in ["RETRY-ME", "retry-me "] {
        let mut message = text_message(conversation, 1, key);
        message.client_message_id = Some(ClientMessageId::parse(key).unwrap());
        assert!(
            store.append_message(message).await.unwrap().created,
            "{key:?}"
        );
    }
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_sends_come_back_in_exact_order() {
    let Some(db) = common::fresh_store().await else {
        return;
    };
    let store = db.store.clone();
    let conversation = direct_between_1_and_2(&store).await;
    for i in 1..=200_i64 {
        let sender = 1 + i % 2;
        let appended = store
            .append_message(text_message(conversation, sender, &format!("n{i}")))
            .await
            .unwrap();
        assert_eq!(appended.view.message.seq.get(), i);
    }
    let mut contents = Vec::new();
    let mut seqs = Vec::new();
    let mut after = Seq::ZERO;
    loop {
        let page = store
            .history(
                conversation,
                HistoryQuery::After(after, PageLimit::new(64).unwrap()),
            )
            .await
            .unwrap();
        contents.extend(page.items.iter().map(|v| v.message.content.clone()));
        seqs.extend(page.items.iter().map(|v| v.message.seq.get()));
        after = page.items.last().unwrap().message.seq;
        if !page.has_more {
            break;
        }
    }
    assert_eq!(seqs, (1..=200).collect::<Vec<_>>());
    assert_eq!(
        contents,
        (1..=200).map(|i| format!("n{i}")).collect::<Vec<_>>()
    );
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_senders_get_gap_free_unique_seqs() {
    let Some(db) = common::fresh_store().await else {
        return;
    };
    let store = db.store.clone();
    let conversation = direct_between_1_and_2(&store).await;
    let tasks = (0..8).map(|task| {
        let store = store.clone();
        tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..25 {
                let sender = 1 + task % 2;
                let appended = store
                    .append_message(text_message(conversation, sender, &format!("{task}/{i}")))
                    .await
                    .unwrap();
                seqs.push(appended.view.message.seq.get());
            }
            seqs
        })
    });
    let per_task: Vec<Vec<i64>> = join_all(tasks)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    for seqs in &per_task {
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "each task's own order"
        );
    }
    let mut all: Vec<i64> = per_task.into_iter().flatten().collect();
    all.sort_unstable();
    assert_eq!(all, (1..=200).collect::<Vec<_>>());
    let last_seq = count(
        &store,
        "SELECT last_seq FROM CONVERSATIONS WHERE id = ?",
        Some(conversation.to_string()),
    )
    .await;
    assert_eq!(last_seq, 200);
    db.finish().await;
}
