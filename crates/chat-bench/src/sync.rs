//! Scenario 7, the change feed (issue 15): the latency of `GET /api/v1/sync?since=TOKEN` for
//! a user in many conversations who missed a few changes, and how many bytes the change log
//! grows by per message sent.
//!
//! The endpoint answers `{events, next, has_more}`; without `since` it returns the current
//! token (`next`) and no events. On MySQL a change becomes readable once the feed's stamper
//! has numbered it after the commit, so the scenario waits until the changes it made are
//! listed before it measures.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::future::join_all;
use serde_json::{Value, json};
use sqlx::Row;

use crate::Plan;
use crate::api::Api;
use crate::scenarios::provision;
use crate::server::{Server, Store};
use crate::stats::{Latencies, round};

/// The reader and the writer of the scenario (their own user numbers).
const READER: i64 = 800_001;
const WRITER: i64 = 800_002;

/// How many changes the reader missed before each measured sync.
pub(crate) const MISSED_MESSAGES: usize = 10;

/// The `message.created` events of a sync page.
fn created_in(page: &Value) -> usize {
    page["events"].as_array().map_or(0, |events| {
        events
            .iter()
            .filter(|e| e["type"] == "message.created")
            .count()
    })
}

/// `GET /sync` from `since` (none: the current token), with a page size.
async fn sync(api: &Api, since: Option<&str>, limit: usize) -> anyhow::Result<Value> {
    let path = match since {
        Some(token) => format!("/sync?since={token}&limit={limit}"),
        None => format!("/sync?limit={limit}"),
    };
    api.get(READER, &path).await
}

/// The current token of the reader's feed.
async fn current_token(api: &Api) -> anyhow::Result<String> {
    let page = sync(api, None, 1).await?;
    anyhow::ensure!(
        page["events"].as_array().is_some_and(Vec::is_empty),
        "a sync without since listed events: {page}"
    );
    page["next"]
        .as_str()
        .map(str::to_owned)
        .context("sync without next")
}

/// Reads the feed from `since` page by page until `wanted` `message.created` events were
/// listed (the stamper may lag the commits), or fails after 60 s. Returns the token after
/// them.
async fn drain(api: &Api, since: String, wanted: usize) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut token, mut seen) = (since, 0);
    while seen < wanted {
        let page = sync(api, Some(&token), 500).await?;
        seen += created_in(&page);
        token = page["next"]
            .as_str()
            .map(str::to_owned)
            .context("sync without next")?;
        if seen < wanted && !page["has_more"].as_bool().unwrap_or(false) {
            if Instant::now() > deadline {
                bail!("only {seen} of {wanted} messages reached the feed in 60 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(token)
}

/// The change log's size in bytes as the store reports it and its row count, or `None` for
/// the in-memory store (or when the store cannot say; the reason is logged).
async fn log_bytes(store: &Store) -> anyhow::Result<Option<(f64, i64)>> {
    match store {
        Store::MySql { url } | Store::MySqlEncrypted { url } => {
            let pool = sqlx::mysql::MySqlPoolOptions::new()
                .max_connections(1)
                .connect(url)
                .await?;
            // Fresh statistics first: information_schema reports what the last ANALYZE saw.
            sqlx::query("ANALYZE TABLE CHANGE_LOG")
                .execute(&pool)
                .await?;
            let row = sqlx::query(
                "SELECT CAST(DATA_LENGTH + INDEX_LENGTH AS DOUBLE) AS bytes, \
                   (SELECT COUNT(*) FROM CHANGE_LOG) AS row_count \
                 FROM information_schema.TABLES \
                 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'CHANGE_LOG'",
            )
            .fetch_one(&pool)
            .await?;
            pool.close().await;
            Ok(Some((row.try_get("bytes")?, row.try_get("row_count")?)))
        }
        Store::Sqlite { dir } => {
            let url = format!("sqlite://{}?mode=ro", dir.join("chat.db").display());
            let pool = sqlx::sqlite::SqlitePoolOptions::new()
                .max_connections(1)
                .connect(&url)
                .await?;
            let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM CHANGE_LOG")
                .fetch_one(&pool)
                .await?;
            // dbstat needs SQLITE_ENABLE_DBSTAT_VTAB; without it, the log's pages cannot be
            // told from the other tables'.
            let pages = sqlx::query_scalar::<_, f64>(
                "SELECT CAST(SUM(pgsize) AS REAL) FROM dbstat \
                 WHERE name = 'CHANGE_LOG' OR name LIKE 'idx_change_log%'",
            )
            .fetch_one(&pool)
            .await;
            pool.close().await;
            match pages {
                Ok(bytes) => Ok(Some((bytes, rows))),
                Err(err) => {
                    eprintln!("    sqlite: no dbstat ({err}); log size not measured");
                    Ok(None)
                }
            }
        }
        Store::Memory => Ok(None),
    }
}

/// The scenario: the reader in `plan.inbox_conversations` groups with the writer; the
/// writer sends one message into each of `MISSED_MESSAGES` of them; then `plan.samples`
/// syncs from the token before those sends. Then `plan.sync_log_messages` more sends, and
/// the log's growth per message.
pub(crate) async fn sync_and_log_growth(server: &Server, plan: &Plan) -> anyhow::Result<Value> {
    let api = Api::new(&server.base)?;
    provision(&api, [READER, WRITER].into_iter()).await?;
    let created = Arc::new(AtomicU64::new(0));
    let target = plan.inbox_conversations as u64;
    let makers = (0..16).map(|_| {
        let api = api.clone();
        let created = created.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            loop {
                let n = created.fetch_add(1, Ordering::Relaxed);
                if n >= target {
                    return Ok::<Vec<String>, anyhow::Error>(ids);
                }
                ids.push(
                    api.create_group(WRITER, &[READER], &format!("sync {n}"))
                        .await?,
                );
            }
        })
    });
    let mut conversations = Vec::new();
    for result in join_all(makers).await {
        conversations.extend(result??);
    }
    anyhow::ensure!(
        conversations.len() >= MISSED_MESSAGES,
        "fewer conversations than missed messages"
    );

    // The token before the missed changes, once the creations themselves are in the feed.
    let before = current_token(&api).await?;
    for conversation in conversations.iter().take(MISSED_MESSAGES) {
        let (status, _) = api.send(WRITER, conversation, "missed").await?;
        anyhow::ensure!(status == 201, "send answered {status}");
    }
    drain(&api, before.clone(), MISSED_MESSAGES).await?;

    let mut latencies = Latencies::new();
    let mut events = 0;
    for _ in 0..plan.samples {
        let began = Instant::now();
        let page = sync(&api, Some(&before), 100).await?;
        latencies.record(began.elapsed());
        anyhow::ensure!(
            created_in(&page) == MISSED_MESSAGES,
            "sync listed {} messages, not {MISSED_MESSAGES}",
            created_in(&page)
        );
        anyhow::ensure!(
            page["has_more"] == false,
            "a page of 100 did not hold the missed changes"
        );
        events = page["events"].as_array().map_or(0, Vec::len);
    }

    // Growth of the log per message sent, from the store's own figures.
    let log_messages = plan.sync_log_messages;
    let size_before = log_bytes(&server.store).await?;
    let start = current_token(&api).await?;
    let sent = Arc::new(AtomicU64::new(0));
    let conversations = Arc::new(conversations);
    let senders = (0..plan.concurrency).map(|_| {
        let api = api.clone();
        let sent = sent.clone();
        let conversations = conversations.clone();
        tokio::spawn(async move {
            loop {
                let n = sent.fetch_add(1, Ordering::Relaxed);
                if n >= log_messages as u64 {
                    return Ok::<(), anyhow::Error>(());
                }
                let conversation = &conversations[n as usize % conversations.len()];
                let (status, _) = api.send(WRITER, conversation, "growth").await?;
                if status != 201 {
                    bail!("send answered {status}");
                }
            }
        })
    });
    for result in join_all(senders).await {
        result??;
    }
    drain(&api, start, log_messages).await?;
    let size_after = log_bytes(&server.store).await?;
    let growth = match (size_before, size_after) {
        // Rows are counted on every store; bytes only where the store reports them.
        (Some((bytes_before, rows_before)), Some((bytes_after, rows_after))) => json!({
            "messages": log_messages,
            "bytes_before": bytes_before,
            "bytes_after": bytes_after,
            "bytes_per_message": round((bytes_after - bytes_before) / log_messages as f64),
            "rows_per_message": round((rows_after - rows_before) as f64 / log_messages as f64),
        }),
        _ => Value::Null,
    };
    Ok(json!({
        "conversations": target,
        "missed_messages": MISSED_MESSAGES,
        "events_listed": events,
        "sync": latencies.summary(),
        "log_growth": growth,
    }))
}
