//! Sends under database faults, injected by a proxy between the store and the shared server
//! (the server itself is never stopped: other tests use it): a frozen database answers every
//! queued send `Unavailable` by its deadline, a full queue answers at once, the store
//! recovers once the database answers again, and a batch whose `COMMIT` outcome is unknown
//! answers the truth.
#![allow(clippy::unwrap_used)] // Test code: a failed expectation panics.

mod common;

use common::{system, text};

use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_domain::{ConversationId, ConversationType, GroupName, MessageBody, MessageId, UserId};
use chat_mysql::{MySqlSettings, MySqlStore};
use chat_ports::{
    Appended, ConversationStore, MessageStore, NewConversation, NewMessage, ReadStateStore,
    StoreError, UserDirectory,
};
use chat_test_support::mysql::{database_url_via, server_address};
use chat_test_support::proxy::{Cut, FaultProxy, MYSQL_COMMIT};
use futures::future::join_all;
use time::OffsetDateTime;

fn user(id: i64) -> UserId {
    UserId::new(id).unwrap()
}

fn message(conversation: ConversationId, sender: i64, body: &str) -> NewMessage {
    with_body(conversation, sender, text(body))
}

fn with_body(conversation: ConversationId, sender: i64, body: MessageBody) -> NewMessage {
    NewMessage {
        id: MessageId::new(),
        conversation_id: conversation,
        sender_id: user(sender),
        body,
        reply_to_id: None,
        client_message_id: None,
        created_at: OffsetDateTime::now_utc(),
    }
}

/// A group of users 1..=5 created by user 1.
async fn group(store: &MySqlStore) -> ConversationId {
    for id in 1..=5 {
        store.upsert_user(user(id), None).await.unwrap();
    }
    let id = ConversationId::new();
    store
        .create_conversation(
            NewConversation {
                id,
                kind: ConversationType::Group,
                name: Some(GroupName::parse("faults").unwrap()),
                posting_id: None,
                created_by: user(1),
                members: (2..=5).map(user).collect(),
                created_at: OffsetDateTime::now_utc(),
            },
            with_body(id, 1, system("created")),
        )
        .await
        .unwrap();
    id
}

/// A store on database `name` reached through `proxy`.
async fn through(
    proxy: &FaultProxy,
    name: &str,
    acquire: Duration,
    statement: Duration,
    queue: usize,
) -> MySqlStore {
    let mut settings = MySqlSettings::new(database_url_via(name, proxy.address()));
    settings.max_connections = 8;
    settings.acquire_timeout = acquire;
    settings.statement_timeout = statement;
    settings.append_queue = queue;
    MySqlStore::connect(&settings)
        .await
        .unwrap()
        .with_cipher(chat_test_support::key_ring::cipher())
}

/// Whether message `id` is stored.
async fn is_stored(store: &MySqlStore, id: MessageId) -> bool {
    sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM MESSAGES WHERE id = ?")
        .bind(id.to_string())
        .fetch_one(store.pool())
        .await
        .unwrap()
        == 1
}

/// Sends `news` at once; each answer with the time it took.
async fn send_all(
    store: &Arc<MySqlStore>,
    news: &[NewMessage],
) -> Vec<(Result<Appended, StoreError>, Duration)> {
    join_all(news.iter().cloned().map(|new| {
        let store = Arc::clone(store);
        tokio::spawn(async move {
            let started = Instant::now();
            let answer = store.append_message(new).await;
            (answer, started.elapsed())
        })
    }))
    .await
    .into_iter()
    .map(Result::unwrap)
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frozen_database_answers_every_queued_send_unavailable_by_its_deadline() {
    let Some(db) = common::fresh_store().await else {
        return;
    };
    let conversation = group(&db.store).await;
    let proxy = FaultProxy::start(server_address()).await.unwrap();
    let (acquire, statement) = (Duration::from_millis(500), Duration::from_millis(500));
    let store = Arc::new(through(&proxy, &db.name, acquire, statement, 1024).await);
    let deadline = store.call_timeout();
    assert_eq!(deadline, acquire + statement);
    store
        .append_message(message(conversation, 1, "before"))
        .await
        .unwrap();

    proxy.freeze();
    let news: Vec<NewMessage> = (0..50)
        .map(|i| message(conversation, 1 + i % 5, &format!("frozen {i}")))
        .collect();
    let started = Instant::now();
    let answers = send_all(&store, &news).await;
    let all_answered = started.elapsed();
    let slowest = answers.iter().map(|(_, took)| *took).max().unwrap();
    eprintln!(
        "50 sends with the database frozen: all answered in {all_answered:?} (slowest {slowest:?}, \
         deadline {deadline:?})"
    );
    for (answer, took) in &answers {
        assert!(
            matches!(answer, Err(StoreError::Unavailable(_))),
            "answered Unavailable: {answer:?}"
        );
        // The deadline, the hand-over grace, and slack for a loaded machine.
        assert!(
            *took < deadline + Duration::from_millis(750),
            "answered by the deadline: {took:?}"
        );
    }
    // Every other use case has a deadline too.
    let started = Instant::now();
    let inbox = store.unread_summary(user(1)).await;
    assert!(
        matches!(inbox, Err(StoreError::Unavailable(_))),
        "{inbox:?}"
    );
    assert!(started.elapsed() < deadline + Duration::from_millis(750));

    proxy.unfreeze();
    let recovered = Instant::now();
    let after = loop {
        match store
            .append_message(message(conversation, 2, "after"))
            .await
        {
            Ok(appended) => break appended,
            Err(error) => {
                assert!(
                    recovered.elapsed() < Duration::from_secs(10),
                    "the store recovers: {error:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    eprintln!("recovered after {:?}", recovered.elapsed());
    assert!(after.created);
    // The sends answered Unavailable were not stored (none reached COMMIT).
    tokio::time::sleep(Duration::from_millis(300)).await;
    for new in &news {
        assert!(!is_stored(&db.store, new.id).await, "a 503 was not stored");
    }
    assert!(store.shut_down(Duration::from_secs(5)).await);
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_append_queue_answers_unavailable_at_once() {
    let Some(db) = common::fresh_store().await else {
        return;
    };
    let conversation = group(&db.store).await;
    let proxy = FaultProxy::start(server_address()).await.unwrap();
    let store = Arc::new(
        through(
            &proxy,
            &db.name,
            Duration::from_millis(500),
            Duration::from_millis(500),
            4,
        )
        .await,
    );
    store
        .append_message(message(conversation, 1, "before"))
        .await
        .unwrap();
    proxy.freeze();
    let news: Vec<NewMessage> = (0..40)
        .map(|i| message(conversation, 1 + i % 5, &format!("queued {i}")))
        .collect();
    let answers = send_all(&store, &news).await;
    let full: Vec<_> = answers
        .iter()
        .filter(|(answer, _)| {
            matches!(answer, Err(StoreError::Unavailable(why)) if why.contains("queue is full"))
        })
        .collect();
    assert!(!full.is_empty(), "{answers:?}");
    for (_, took) in &full {
        assert!(*took < Duration::from_millis(300), "at once: {took:?}");
    }
    for (answer, _) in &answers {
        assert!(
            matches!(answer, Err(StoreError::Unavailable(_))),
            "{answer:?}"
        );
    }
    proxy.unfreeze();
    db.finish().await;
}

/// Sends 8 messages at once while the proxy cuts the connection of the first `COMMIT`
/// (as `when` says), and checks each answer is the truth: created iff stored. `None`
/// without a server.
async fn commit_cut(when: Cut) -> Option<Vec<Result<Appended, StoreError>>> {
    let db = common::fresh_store().await?;
    let conversation = group(&db.store).await;
    let proxy = FaultProxy::start(server_address()).await.unwrap();
    let store = Arc::new(
        through(
            &proxy,
            &db.name,
            Duration::from_secs(2),
            Duration::from_secs(2),
            1024,
        )
        .await,
    );
    store
        .append_message(message(conversation, 1, "before"))
        .await
        .unwrap();
    // The change feed's stamper commits too: the direct store's (first on the database)
    // numbers the entries, so that the first COMMIT through the proxy is a send's.
    let start = std::time::Instant::now();
    while !db.store.stamps_feed() {
        assert!(start.elapsed() < Duration::from_secs(5), "no stamper");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!store.stamps_feed());
    // The receipts task commits the move of that send on a connection of its own through
    // the proxy: wait until it has, so that the next COMMIT is the batch's.
    let drained = Instant::now();
    loop {
        let pending: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM READ_MARKER_MOVES")
            .fetch_one(db.store.pool())
            .await
            .unwrap();
        if pending == 0 {
            break;
        }
        assert!(
            drained.elapsed() < Duration::from_secs(10),
            "moves not drained"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    proxy.cut_on(MYSQL_COMMIT, when);
    let news: Vec<NewMessage> = (0..8)
        .map(|i| message(conversation, 1 + i % 5, &format!("cut {i}")))
        .collect();
    let answers = send_all(&store, &news).await;
    assert_eq!(proxy.cuts(), 1, "one COMMIT was cut");
    let mut out = Vec::new();
    for (new, (answer, took)) in news.iter().zip(answers) {
        let stored = is_stored(&db.store, new.id).await;
        match &answer {
            Ok(appended) => {
                assert!(appended.created);
                assert_eq!(appended.view.message.id, new.id);
                assert!(stored, "answered created, so stored");
            }
            Err(StoreError::Unavailable(_)) => assert!(!stored, "answered 503, so not stored"),
            Err(other) => panic!("unexpected {other:?}"),
        }
        assert!(took < Duration::from_secs(4), "{took:?}");
        out.push(answer);
    }
    // Gap-free seqs: whatever was stored was stored once.
    let seqs: Vec<i64> =
        sqlx::query_scalar("SELECT seq FROM MESSAGES WHERE conversation_id = ? ORDER BY seq")
            .bind(conversation.to_string())
            .fetch_all(db.store.pool())
            .await
            .unwrap();
    assert_eq!(
        seqs,
        (1..=i64::try_from(seqs.len()).unwrap()).collect::<Vec<_>>()
    );
    db.finish().await;
    Some(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_commit_that_reached_the_server_before_the_connection_died_is_answered_created() {
    let Some(answers) = commit_cut(Cut::AfterForwarding).await else {
        return;
    };
    for answer in &answers {
        assert!(answer.is_ok(), "every send was committed: {answer:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_commit_that_never_reached_the_server_is_answered_unavailable() {
    let Some(answers) = commit_cut(Cut::BeforeForwarding).await else {
        return;
    };
    let refused = answers.iter().filter(|a| a.is_err()).count();
    assert!(refused >= 1, "the cut batch was not stored: {answers:?}");
}
