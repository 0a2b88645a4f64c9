//! Opening, locking, migrating and reopening a database file.
#![allow(clippy::unwrap_used)] // Test code: a failed expectation panics.

mod common;

use chat_domain::{ConversationId, DisplayName, UserId};
use chat_ports::{ConversationStore, HistoryQuery, MessageStore, PageLimit, UserDirectory};
use chat_sqlite::{MigrationError, OpenError, SqliteSettings, SqliteStore};
use time::OffsetDateTime;

fn user(id: i64) -> UserId {
    UserId::new(id).unwrap()
}

fn at(seconds: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_800_000_000 + seconds).unwrap()
}

#[tokio::test]
async fn what_is_written_is_read_back_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    // A directory that does not exist yet is created.
    let location = dir
        .path()
        .join("data")
        .join("chat.db")
        .display()
        .to_string();
    let store = SqliteStore::open(&location, SqliteSettings::default())
        .await
        .unwrap()
        .with_cipher(chat_contract::switch::cipher());
    store.migrate().await.unwrap();
    store
        .upsert_user(user(1), Some(DisplayName::parse("Ada").unwrap()))
        .await
        .unwrap();
    store.upsert_user(user(2), None).await.unwrap();
    let direct = store
        .get_or_create_direct(ConversationId::new(), user(1), user(2), at(0))
        .await
        .unwrap();
    let id = direct.details.conversation.id;
    let mut sent = Vec::new();
    for i in 0..5 {
        let appended = store
            .append_message(chat_ports::NewMessage {
                id: chat_domain::MessageId::new(),
                conversation_id: id,
                sender_id: user(1),
                body: common::text(&format!("persisted {i} ✅")),
                reply_to_id: None,
                client_message_id: None,
                created_at: at(i + 1),
            })
            .await
            .unwrap();
        sent.push(appended.view);
    }
    store.close().await;
    assert!(
        store.ping().await.is_err(),
        "a closed store answers nothing"
    );
    drop(store);

    let reopened = SqliteStore::open(&location, SqliteSettings::default())
        .await
        .unwrap()
        .with_cipher(chat_contract::switch::cipher());
    reopened.migrate().await.unwrap();
    let page = reopened
        .history(id, HistoryQuery::Latest(PageLimit::new(10).unwrap()))
        .await
        .unwrap();
    let mut read: Vec<_> = page.items.into_iter().collect();
    read.reverse();
    assert_eq!(
        read, sent,
        "the same messages, as they were returned when sent"
    );
    assert_eq!(
        reopened
            .display_names(&[user(1)])
            .await
            .unwrap()
            .get(&user(1))
            .map(String::as_str),
        Some("Ada")
    );
    let again = reopened
        .get_or_create_direct(ConversationId::new(), user(2), user(1), at(10))
        .await
        .unwrap();
    assert!(!again.created);
    assert_eq!(again.details.conversation.id, id);
    reopened.close().await;
}

#[tokio::test]
async fn a_file_in_use_by_another_store_is_refused_until_it_closes() {
    let db = common::fresh_store().await;
    let second = SqliteStore::open(&db.location(), SqliteSettings::default()).await;
    let error = second.unwrap_err();
    assert!(matches!(error, OpenError::InUse { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains("is in use by another chatd") && message.contains("chat.db"),
        "{message}"
    );
    db.store.close().await;
    let third = SqliteStore::open(&db.location(), SqliteSettings::default())
        .await
        .unwrap();
    third.ping().await.unwrap();
    let stats = third.pool_stats();
    assert_eq!(stats.max, SqliteSettings::DEFAULT_READ_CONNECTIONS + 1);
    assert!(stats.size >= 1 && stats.idle <= stats.size, "{stats:?}");
    third.close().await;
}

#[tokio::test]
async fn a_schema_newer_than_the_binary_stops_migration_with_a_clear_message() {
    let db = common::fresh_store().await;
    let mut raw = common::raw::connect(&db.location()).await;
    // What a newer chatd would have left: a migration this binary does not know.
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (29991231000000, 'from the future', 1, x'00', 0)",
    )
    .execute(&mut raw)
    .await
    .unwrap();
    let error = db.store.migrate().await.unwrap_err();
    match &error {
        MigrationError::NewerSchema { version, known } => {
            assert_eq!(*version, 29_991_231_000_000);
            assert!(*known < *version);
        }
        other => panic!("expected NewerSchema, got {other:?}"),
    }
    assert!(
        error.to_string().contains("newer than this chatd"),
        "{error}"
    );
}

#[tokio::test]
async fn migrating_twice_changes_nothing_and_the_file_is_in_wal_mode() {
    let db = common::fresh_store().await;
    db.store.migrate().await.unwrap();
    let mut raw = common::raw::connect(&db.location()).await;
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut raw)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    let tables = common::raw::scalar(
        &mut raw,
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name IN \
         ('app_users', 'POSTINGS', 'CONVERSATIONS', 'CONVERSATION_PARTICIPANTS', 'MESSAGES', \
          'MESSAGE_REACTIONS', 'MESSAGE_READ_RECEIPTS')",
        None,
    )
    .await;
    assert_eq!(tables, 7);
}

#[tokio::test]
async fn unusable_locations_are_refused_with_their_reason() {
    for location in [":memory:", "sqlite::memory:", "sqlite://", ""] {
        let error = SqliteStore::open(location, SqliteSettings::default())
            .await
            .unwrap_err();
        assert!(
            matches!(error, OpenError::InvalidLocation { .. }),
            "{location}: {error:?}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    // A path below a regular file cannot be created (also for root).
    let blocker = dir.path().join("not-a-directory");
    std::fs::write(&blocker, b"x").unwrap();
    let below = blocker.join("chat.db").display().to_string();
    let error = SqliteStore::open(&below, SqliteSettings::default())
        .await
        .unwrap_err();
    assert!(matches!(error, OpenError::Unwritable { .. }), "{error:?}");
    assert!(error.to_string().contains("cannot be created or written"));

    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![b'x'; 4096]).unwrap();
    let error = SqliteStore::open(
        &format!("sqlite://{}", garbage.display()),
        SqliteSettings::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(error, OpenError::NotADatabase { .. }), "{error:?}");
}

/// The plan of `sql` (binds: a user or conversation, an id, a limit), one line.
async fn plan(raw: &mut sqlx::SqliteConnection, sql: String) -> String {
    let rows: Vec<(i64, i64, i64, String)> = sqlx::query_as(&format!("EXPLAIN QUERY PLAN {sql}"))
        .bind(1_i64)
        .bind("00000000-0000-0000-0000-000000000000")
        .bind(20_i64)
        .fetch_all(raw)
        .await
        .unwrap();
    rows.into_iter()
        .map(|r| r.3)
        .collect::<Vec<_>>()
        .join(" | ")
}

#[tokio::test]
async fn hot_queries_read_their_indexes() {
    let db = common::fresh_store().await;
    let mut raw = common::raw::connect(&db.location()).await;
    let inbox = plan(&mut raw, chat_sqlite::hot_queries::inbox_first_page()).await;
    // The caller's memberships, each joined to its conversation by key, then sorted by the
    // conversations' activity keys (the order lives on the conversation, so that a send
    // writes no membership of others): one small sort of the caller's memberships.
    assert!(inbox.contains("idx_participants_"), "{inbox}");
    assert!(
        inbox.contains("PRIMARY KEY") || inbox.contains("sqlite_autoindex_CONVERSATIONS"),
        "{inbox}"
    );
    let badge = plan(&mut raw, chat_sqlite::hot_queries::unread_summary()).await;
    assert!(
        badge.contains("COVERING INDEX idx_participants_badge"),
        "{badge}"
    );
    assert!(!badge.contains("TEMP B-TREE"), "{badge}");
    let history = plan(&mut raw, chat_sqlite::hot_queries::history_before()).await;
    assert!(
        history.contains("uq_messages_conversation_seq") || history.contains("idx_messages_unread"),
        "{history}"
    );
    assert!(!history.contains("TEMP B-TREE"), "{history}");
}
