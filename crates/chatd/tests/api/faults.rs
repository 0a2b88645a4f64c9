//! The HTTP answers under a database outage: a MySQL store reached through a fault proxy
//! that freezes (stops forwarding, as a SIGSTOPped server would) with 50 sends in flight;
//! each is answered `503` by its own deadline (acquire timeout + statement timeout + a
//! little), and a send after the database answers again is stored.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_mysql::{MySqlSettings, MySqlStore};
use chat_test_support::mysql::{database_url_via, server_address};
use chat_test_support::proxy::FaultProxy;
use futures::future::join_all;
use serde_json::json;

use crate::helpers::spawn_on_mysql;

const ACQUIRE: Duration = Duration::from_millis(500);
const STATEMENT: Duration = Duration::from_millis(500);
/// The hand-over grace of the store and slack for a loaded two-core machine.
const SLACK: Duration = Duration::from_millis(1000);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frozen_database_answers_each_of_50_sends_503_by_its_deadline_then_recovers() {
    let Some(db) = chat_test_support::mysql::fresh_database(
        "the frozen-database HTTP test on MySQL is SKIPPED",
        4,
    )
    .await
    else {
        return;
    };
    let proxy = FaultProxy::start(server_address()).await.unwrap();
    let mut settings = MySqlSettings::new(database_url_via(&db.name, proxy.address()));
    settings.max_connections = 8;
    settings.acquire_timeout = ACQUIRE;
    settings.statement_timeout = STATEMENT;
    let store = MySqlStore::connect(&settings).await.unwrap();
    let deadline = store.call_timeout();
    assert_eq!(deadline, ACQUIRE + STATEMENT);
    let app = Arc::new(spawn_on_mysql(store, db).await);
    let alice = app.login(1).await;
    for user in 2..=5 {
        app.login(user).await;
    }
    let group = alice.create_group("frozen", &[2, 3, 4, 5]).await;
    alice.say(&group, "before the freeze").await;

    proxy.freeze();
    let sends = (0..50).map(|i| {
        let app = Arc::clone(&app);
        let group = group.clone();
        tokio::spawn(async move {
            let user = 1 + i % 5;
            let started = Instant::now();
            // Not `login`: its first request would meet the frozen database too.
            let reply = app
                .raw(Some(app.token(user)))
                .post(
                    &format!("/api/v1/conversations/{group}/messages"),
                    json!({"content": format!("frozen {i}"), "client_message_id": format!("f{i}")}),
                )
                .await;
            (i, reply, started.elapsed())
        })
    });
    let answers: Vec<_> = join_all(sends)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let slowest = answers.iter().map(|(_, _, took)| *took).max().unwrap();
    eprintln!("50 sends, database frozen: slowest answered in {slowest:?} (deadline {deadline:?})");
    for (i, reply, took) in &answers {
        reply.assert_problem(503, "unavailable");
        assert!(
            *took < deadline + SLACK,
            "send {i} answered in {took:?}, after its deadline {deadline:?} (+{SLACK:?})"
        );
    }

    proxy.unfreeze();
    let recovered = Instant::now();
    loop {
        let reply = alice
            .post(
                &format!("/api/v1/conversations/{group}/messages"),
                json!({"content": "after the freeze"}),
            )
            .await;
        if reply.status == 201 {
            break;
        }
        assert!(
            recovered.elapsed() < Duration::from_secs(10),
            "the server recovers: {reply:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The 503s were not stored: only the two messages around the freeze (and the
    // creation record) are in the history.
    let history = alice
        .get(&format!("/api/v1/conversations/{group}/messages?limit=100"))
        .await;
    assert_eq!(history.status, 200);
    let contents: Vec<&str> = history.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["content"].as_str())
        .filter(|c| c.contains("freeze") || c.starts_with("frozen"))
        .collect();
    assert_eq!(contents.len(), 2, "{contents:?}");
    drop(alice);
    Arc::into_inner(app).unwrap().finish().await;
}
