//! The pool and the error boundary: settings, stats, and failures that must surface as
//! `StoreError::Unavailable` without SQL.
#![allow(clippy::unwrap_used)] // Test code: a failed expectation panics.

mod common;

use std::time::{Duration, Instant};

use chat_domain::{ConversationId, UserId};
use chat_mysql::{MySqlSettings, MySqlStore};
use chat_ports::{ConversationStore, StoreError, UserDirectory};

#[tokio::test]
async fn an_absent_server_fails_fast() {
    let mut settings = MySqlSettings::new("mysql://root@127.0.0.1:1/none");
    settings.acquire_timeout = Duration::from_millis(500);
    let start = Instant::now();
    let result = MySqlStore::connect(&settings).await;
    assert!(result.is_err());
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(!result.unwrap_err().to_string().contains("SELECT"));
}

#[tokio::test]
async fn pool_stats_and_a_closed_pool_is_unavailable() {
    let Some(db) = common::fresh_store().await else {
        return;
    };
    let store = db.store.clone();
    store.ping().await.unwrap();
    let stats = store.pool_stats();
    assert_eq!(stats.max, 24);
    assert!(stats.size >= 1 && stats.idle <= stats.size);

    // An unknown user is a NotFound, not a leaked constraint message.
    let missing = store
        .get_or_create_direct(
            ConversationId::new(),
            UserId::new(41).unwrap(),
            UserId::new(42).unwrap(),
            time::OffsetDateTime::now_utc(),
        )
        .await;
    assert_eq!(missing.unwrap_err(), StoreError::NotFound);

    store.pool().close().await;
    let error = store
        .missing_users(&[UserId::new(1).unwrap()])
        .await
        .unwrap_err();
    match error {
        StoreError::Unavailable(message) => {
            assert!(
                !message.contains("SELECT") && !message.contains("app_users"),
                "{message}"
            );
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    db.finish().await;
}

#[tokio::test]
async fn upserting_users_keeps_platform_names_that_already_match() {
    let Some(db) = common::fresh_store().await else {
        return;
    };
    let store = db.store.clone();
    sqlx::query("INSERT INTO app_users (id, first_name, last_name) VALUES (7, 'Ada', 'Lovelace')")
        .execute(store.pool())
        .await
        .unwrap();
    let user = UserId::new(7).unwrap();
    let name = |n: &str| Some(chat_domain::DisplayName::parse(n).unwrap());
    store.upsert_user(user, name("Ada Lovelace")).await.unwrap();
    let row: (Option<String>, Option<String>) =
        sqlx::query_as("SELECT first_name, last_name FROM app_users WHERE id = 7")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(row, (Some("Ada".into()), Some("Lovelace".into())));
    store.upsert_user(user, name("ada lovelace")).await.unwrap();
    store.upsert_user(user, None).await.unwrap();
    let names = store.display_names(&[user]).await.unwrap();
    assert_eq!(names.get(&user).map(String::as_str), Some("ada lovelace"));
    db.finish().await;
}
