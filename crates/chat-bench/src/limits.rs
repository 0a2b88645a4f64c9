//! The machine's own limits, measured in the same run: raw single-row INSERTs of the
//! message row shape into MySQL, and into a SQLite file on chatd's durable settings, with
//! the scenario's concurrency (the ceilings for durable sends), and a bare tokio WebSocket broadcast of pre-encoded frames (the ceiling for
//! fan-out).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::future::join_all;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use sqlx::mysql::MySqlPoolOptions;
use tokio::sync::{Mutex, mpsc};
use tokio_tungstenite::tungstenite::Message;

use crate::Plan;
use crate::closed_loop::run_for;
use crate::scenarios::collect_arrivals;
use crate::stats::{Latencies, round};
use crate::ws;

/// Raw autocommit INSERTs of one message-shaped row each, `concurrency` at a time, into a
/// scratch table with the MESSAGES columns and indexes, on the server's durable settings.
pub(crate) async fn raw_insert(server_url: &str, plan: &Plan) -> anyhow::Result<Value> {
    let admin = MySqlPoolOptions::new()
        .max_connections(1)
        .connect(server_url)
        .await?;
    sqlx::query("CREATE DATABASE IF NOT EXISTS chat_bench_raw CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
        .execute(&admin)
        .await?;
    let flush: (i64,) = sqlx::query_as("SELECT CAST(@@innodb_flush_log_at_trx_commit AS SIGNED)")
        .fetch_one(&admin)
        .await?;
    admin.close().await;
    let url = format!("{}/chat_bench_raw", server_url.trim_end_matches('/'));
    let pool = MySqlPoolOptions::new()
        .max_connections(u32::try_from(plan.concurrency).unwrap_or(32))
        .connect(&url)
        .await
        .context("connecting for the raw INSERT ceiling")?;
    sqlx::query("DROP TABLE IF EXISTS raw_messages")
        .execute(&pool)
        .await?;
    sqlx::query(
        "CREATE TABLE raw_messages (
            id CHAR(36) PRIMARY KEY,
            conversation_id CHAR(36) NOT NULL,
            seq BIGINT NOT NULL,
            sender_id BIGINT NOT NULL,
            content TEXT NOT NULL,
            message_type VARCHAR(20) DEFAULT 'TEXT',
            created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
            is_system_message BOOLEAN DEFAULT FALSE,
            UNIQUE KEY (conversation_id, seq),
            INDEX (conversation_id, created_at),
            INDEX (sender_id)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci",
    )
    .execute(&pool)
    .await?;
    let (latencies, errors, elapsed) = insert_for(plan, &pool).await?;
    sqlx::query("DROP TABLE raw_messages")
        .execute(&pool)
        .await?;
    pool.close().await;
    Ok(json!({
        "concurrency": plan.concurrency,
        "innodb_flush_log_at_trx_commit": flush.0,
        "inserts": latencies.count(),
        "errors": errors,
        "throughput_per_s": round(latencies.count() as f64 / elapsed),
        "latency": latencies.summary(),
    }))
}

/// Raw single-row INSERTs of the message row shape into a scratch SQLite file in `dir`, on
/// the settings chat-sqlite uses (WAL, `synchronous=FULL`: each INSERT is its own
/// transaction, fsynced before it returns), `concurrency` callers at a time through the one
/// connection SQLite lets write at a time.
pub(crate) async fn raw_insert_sqlite(dir: &std::path::Path, plan: &Plan) -> anyhow::Result<Value> {
    use sqlx::sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
    };

    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let options = SqliteConnectOptions::new()
        .filename(dir.join("raw.db"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(5));
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(60))
        .connect_with(options)
        .await
        .context("opening the raw SQLite file")?;
    sqlx::query(
        "CREATE TABLE raw_messages (
            id TEXT PRIMARY KEY,
            conversation_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            sender_id INTEGER NOT NULL,
            content TEXT NOT NULL,
            message_type TEXT DEFAULT 'TEXT',
            created_at INTEGER NOT NULL DEFAULT (unixepoch()),
            is_system_message INTEGER DEFAULT 0,
            UNIQUE (conversation_id, seq)
        )",
    )
    .execute(&pool)
    .await?;
    for index in [
        "CREATE INDEX raw_by_time ON raw_messages (conversation_id, created_at)",
        "CREATE INDEX raw_by_sender ON raw_messages (sender_id)",
    ] {
        sqlx::query(index).execute(&pool).await?;
    }
    let (latencies, errors, elapsed) = insert_for(plan, &pool).await?;
    pool.close().await;
    let _ = std::fs::remove_dir_all(dir);
    Ok(json!({
        "concurrency": plan.concurrency,
        "settings": "journal_mode=WAL, synchronous=FULL, autocommit",
        "inserts": latencies.count(),
        "errors": errors,
        "throughput_per_s": round(latencies.count() as f64 / elapsed),
        "latency": latencies.summary(),
    }))
}

/// Runs `plan.concurrency` callers, each inserting one message-shaped row at a time into
/// `raw_messages` through `pool` (autocommit) for `plan.send_seconds`; the latencies, the
/// failed inserts and the seconds it took.
async fn insert_for<DB>(plan: &Plan, pool: &sqlx::Pool<DB>) -> anyhow::Result<(Latencies, u64, f64)>
where
    DB: sqlx::Database,
    for<'q> <DB as sqlx::Database>::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    for<'c> &'c sqlx::Pool<DB>: sqlx::Executor<'c, Database = DB>,
    for<'q> String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    let stop = Arc::new(AtomicBool::new(false));
    let seq = Arc::new(AtomicU64::new(0));
    let conversations: Arc<Vec<String>> = Arc::new(
        (0..plan.send_groups)
            .map(|_| uuid::Uuid::now_v7().to_string())
            .collect(),
    );
    let start = Instant::now();
    let workers = (0..plan.concurrency).map(|_| {
        let pool = pool.clone();
        let stop = stop.clone();
        let seq = seq.clone();
        let conversations = conversations.clone();
        tokio::spawn(async move {
            let mut latencies = Latencies::new();
            let mut errors = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let n = seq.fetch_add(1, Ordering::Relaxed);
                let began = Instant::now();
                let result = sqlx::query(
                    "INSERT INTO raw_messages (id, conversation_id, seq, sender_id, content) VALUES (?, ?, ?, ?, ?)",
                )
                .bind(uuid::Uuid::now_v7().to_string())
                .bind(conversations[n as usize % conversations.len()].clone())
                .bind(n as i64)
                .bind(10_000 + (n % 4) as i64)
                .bind(format!("durable {n}"))
                .execute(&pool)
                .await;
                match result {
                    Ok(_) => latencies.record(began.elapsed()),
                    Err(_) => errors += 1,
                }
            }
            (latencies, errors)
        })
    });
    let results = run_for(workers.collect(), &stop, plan.send_seconds).await?;
    let elapsed = start.elapsed().as_secs_f64();
    let mut latencies = Latencies::new();
    let mut errors = 0;
    for (l, e) in results {
        latencies.merge(&l);
        errors += e;
    }
    Ok((latencies, errors, elapsed))
}

/// A bare broadcast server: accepts `members` sockets and writes each pre-encoded frame
/// to every one of them through a per-connection queue, as a minimal hub would.
pub(crate) async fn bare_broadcast(plan: &Plan, members: usize) -> anyhow::Result<Value> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let queues: Arc<Mutex<Vec<mpsc::UnboundedSender<Message>>>> = Arc::new(Mutex::new(Vec::new()));
    let acceptor = {
        let queues = queues.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let queues = queues.clone();
                tokio::spawn(async move {
                    let Ok(socket) = tokio_tungstenite::accept_async(stream).await else {
                        return;
                    };
                    let (mut sink, mut source) = socket.split();
                    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
                    let _ = sink
                        .send(Message::Text(r#"{"type":"ready"}"#.to_owned()))
                        .await;
                    queues.lock().await.push(tx);
                    tokio::spawn(async move { while source.next().await.is_some() {} });
                    while let Some(frame) = rx.recv().await {
                        if sink.send(frame).await.is_err() {
                            break;
                        }
                    }
                });
            }
        })
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let url = format!("ws://{address}/");
    for chunk in (0..members).collect::<Vec<_>>().chunks(100) {
        let sockets = join_all(
            chunk
                .iter()
                .map(|_| tokio_tungstenite::connect_async(url.clone())),
        )
        .await;
        for socket in sockets {
            let (mut socket, _) = socket?;
            // Skip the ready frame, then watch like a chatd client.
            let _ = socket.next().await;
            ws::watch_chatd(socket, "fanout", tx.clone());
        }
    }
    drop(tx);
    while queues.lock().await.len() < members {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let messages = plan.fanout_messages;
    let sent_at = Arc::new(Mutex::new(vec![None; messages]));
    let collector = tokio::spawn(collect_arrivals(
        rx,
        sent_at.clone(),
        messages,
        members,
        Duration::from_secs(messages as u64 / plan.fanout_rate as u64 + 30),
    ));
    let interval = Duration::from_secs_f64(1.0 / plan.fanout_rate);
    let start = Instant::now();
    for index in 0..messages {
        tokio::time::sleep_until((start + interval.mul_f64(index as f64)).into()).await;
        sent_at.lock().await[index] = Some(Instant::now());
        // Encoded once, the way chatd encodes an event once for all its recipients.
        let frame = json!({ "type": "message.created", "message": { "content": format!("fanout {index}") } }).to_string();
        for queue in queues.lock().await.iter() {
            let _ = queue.send(Message::Text(frame.clone()));
        }
    }
    let (latencies, delivered, missing) = collector.await?;
    acceptor.abort();
    Ok(json!({
        "members": members,
        "messages": messages,
        "last_recipient": latencies.summary(),
        "deliveries": delivered,
        "missing": missing,
    }))
}
