//! The schema's floor for a send on MySQL, measured beside the raw INSERT ceiling: how
//! many messages a second the database stores when each is written the cheapest way the
//! live schema allows, through its own triggers and with nothing of the service around
//! it.
//!
//! Each message is one `INSERT INTO MESSAGES` without a `seq`, the previous system's
//! write: the schema's triggers then give it its `seq` under the conversation's row lock,
//! move the conversation (`last_seq`, `counted_total`, `activity_key`, and its copy in
//! `CONVERSATION_COUNTERS`), raise the sender's `unread_base`, and append its
//! `CHANGE_LOG` entry; the row goes into every index of `MESSAGES`. That is a subset of
//! what a send of the service writes (it also moves the sender's read marker and records
//! the move, the receipts follow from it, and the log entry is numbered), without HTTP,
//! JSON, tokens or the appender. So no send through `chatd` can store more messages a
//! second than this figure (the best of the variants): it bounds what the durable-send
//! target can ask for on this machine and this schema. Measured with 1, 4, 8, 16 and 32
//! rows per statement (the appender's batches are multi-row statements too),
//! `concurrency` messages in flight in all of them; each statement in flight writes to
//! conversations no other one touches, as the appender's shards do. A write that fails
//! fails the measurement: a floor lowered by errors would bound nothing.
//!
//! A trigger works row by row, which set-based statements need not, so the floor is also
//! measured the service's way (`set_based`): per transaction of 8 or 16 messages, the
//! conversations locked, the messages inserted with their `seq`, one `UPDATE` of the
//! conversations, one of the senders' memberships (marker and base) and the log entries,
//! on sessions marked as the service's (the triggers then log nothing themselves); and
//! once more without the log entries, for what the change feed's row costs. That is
//! the appender's write set without its reads of the memberships and the idempotency
//! keys, the marker move's record, the receipts, the numbering, and HTTP.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use sqlx::mysql::{MySqlPool, MySqlPoolOptions};
use sqlx::{MySql, QueryBuilder};

use crate::Plan;
use crate::closed_loop::run_for;
use crate::stats::round;

/// Members of each conversation.
const MEMBERS: i64 = 4;

/// Rows per statement of each variant.
const ROWS_PER_STATEMENT: [usize; 5] = [1, 4, 8, 16, 32];

/// Messages per transaction of each set-based variant.
const SET_BASED_ROWS: [usize; 2] = [8, 16];

/// Measures the floor on a fresh database `chat_bench_floor` of `server_url`, migrated by
/// `chatd migrate`.
pub(crate) async fn send_floor(
    server_url: &str,
    chatd: &Path,
    plan: &Plan,
) -> anyhow::Result<Value> {
    let url = crate::fresh_database(server_url, "chat_bench_floor").await?;
    let status = tokio::process::Command::new(chatd)
        .arg("migrate")
        .env("DATABASE_URL", &url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .context("running chatd migrate for the schema floor")?;
    if !status.success() {
        bail!("chatd migrate failed for the schema floor: {status}");
    }
    let pool = MySqlPoolOptions::new()
        .max_connections(u32::try_from(plan.concurrency).unwrap_or(32))
        .connect(&url)
        .await
        .context("connecting for the schema floor")?;
    let conversations = fixtures(&pool, plan.send_groups).await?;
    // Each shape: (set-based, rows per statement or transaction, with the log entry). The
    // last leaves the log entry out: what the change feed's row costs on the floor (not a
    // send of today's schema, so not a candidate for the floor).
    let shapes = ROWS_PER_STATEMENT
        .iter()
        .map(|rows| (false, *rows, true))
        .chain(SET_BASED_ROWS.iter().map(|rows| (true, *rows, true)))
        .chain(std::iter::once((
            true,
            SET_BASED_ROWS[SET_BASED_ROWS.len() - 1],
            false,
        )));
    let mut variants = Vec::new();
    let mut without_log = Value::Null;
    let mut best = 0.0_f64;
    for (set_based, rows, log) in shapes {
        let in_flight = (plan.concurrency / rows).max(1);
        let seconds = plan.send_seconds;
        let (messages, errors, elapsed) = if set_based {
            batch_for(&url, &conversations, rows, in_flight, seconds, log).await?
        } else {
            insert_for(&pool, &conversations, rows, in_flight, seconds).await?
        };
        if errors > 0 {
            bail!(
                "the schema floor's writes failed {errors} times (set-based: {set_based}, \
                 {rows} per statement, with the log entry: {log})"
            );
        }
        let per_second = messages as f64 / elapsed;
        let variant = json!({
            "set_based": set_based,
            "rows_per_statement": rows,
            "statements_in_flight": in_flight,
            "messages": messages,
            "errors": errors,
            "throughput_per_s": round(per_second),
        });
        if log {
            best = best.max(per_second);
            variants.push(variant);
        } else {
            without_log = variant;
        }
    }
    pool.close().await;
    Ok(json!({
        "concurrency": plan.concurrency,
        "conversations": conversations.len(),
        "members": MEMBERS,
        "variants": variants,
        "set_based_without_log": without_log,
        "throughput_per_s": round(best),
    }))
}

/// `groups` conversations of [`MEMBERS`] users each, as the previous system would write
/// them (the schema's triggers fill in the service's columns); their ids.
async fn fixtures(pool: &MySqlPool, groups: i64) -> anyhow::Result<Vec<String>> {
    let users = groups * MEMBERS;
    let mut insert = QueryBuilder::<MySql>::new("INSERT INTO app_users (id, first_name) ");
    insert.push_values(1..=users, |mut row, id| {
        row.push_bind(id).push_bind(format!("User {id}"));
    });
    insert.build().execute(pool).await?;
    let mut ids = Vec::new();
    for group in 0..groups {
        let id = uuid::Uuid::now_v7().to_string();
        let first = group * MEMBERS + 1;
        sqlx::query(
            "INSERT INTO CONVERSATIONS (id, type, name, created_by) VALUES (?, 'GROUP', ?, ?)",
        )
        .bind(&id)
        .bind(format!("floor {group}"))
        .bind(first)
        .execute(pool)
        .await?;
        let mut members = QueryBuilder::<MySql>::new(
            "INSERT INTO CONVERSATION_PARTICIPANTS (id, conversation_id, user_id, role) ",
        );
        members.push_values(first..first + MEMBERS, |mut row, user| {
            row.push_bind(uuid::Uuid::now_v7().to_string())
                .push_bind(&id)
                .push_bind(user)
                .push_bind(if user == first { "ADMIN" } else { "MEMBER" });
        });
        members.build().execute(pool).await?;
        ids.push(id);
    }
    Ok(ids)
}

/// The messages of one write, one per conversation: (conversation index, conversation
/// id, sender).
type Picks = Vec<(usize, String, i64)>;

/// Runs `in_flight` workers for `seconds`: each takes `rows` of its own conversations in
/// turn (conversation `c` belongs to worker `c % in_flight`), a message into each from one
/// of their members in turn, and hands them to `write`, which answers how many it stored.
/// Messages stored, failed writes, seconds.
async fn drive<W, Fut>(
    conversations: &[String],
    rows: usize,
    in_flight: usize,
    seconds: u64,
    write: W,
) -> anyhow::Result<(u64, u64, f64)>
where
    W: Fn(Picks) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<u64>> + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let workers = (0..in_flight)
        .map(|worker| {
            let own = owned_by(conversations, in_flight, worker);
            let stop = stop.clone();
            let write = write.clone();
            tokio::spawn(async move {
                let (mut stored, mut errors, mut turn) = (0_u64, 0_u64, 0_usize);
                let per_write = rows.min(own.len()).max(1);
                while !stop.load(Ordering::Relaxed) {
                    let member = (turn / own.len()) as i64 % MEMBERS;
                    let picks: Picks = (0..per_write)
                        .map(|k| {
                            let (c, id) = &own[(turn + k) % own.len()];
                            (*c, id.clone(), *c as i64 * MEMBERS + 1 + member)
                        })
                        .collect();
                    turn += per_write;
                    match write(picks).await {
                        Ok(done) => stored += done,
                        Err(_) => errors += 1,
                    }
                }
                (stored, errors)
            })
        })
        .collect();
    let results = run_for(workers, &stop, seconds).await?;
    let elapsed = start.elapsed().as_secs_f64();
    let stored = results.iter().map(|(s, _)| s).sum();
    let errors = results.iter().map(|(_, e)| e).sum();
    Ok((stored, errors, elapsed))
}

/// The triggers' variant: `rows` messages per `INSERT` without a `seq`.
async fn insert_for(
    pool: &MySqlPool,
    conversations: &[String],
    rows: usize,
    in_flight: usize,
    seconds: u64,
) -> anyhow::Result<(u64, u64, f64)> {
    let pool = pool.clone();
    drive(conversations, rows, in_flight, seconds, move |picks| {
        let pool = pool.clone();
        async move {
            let mut insert = QueryBuilder::<MySql>::new(
                "INSERT INTO MESSAGES (conversation_id, sender_id, content, message_type) ",
            );
            insert.push_values(&picks, |mut row, (c, id, sender)| {
                row.push_bind(id.clone())
                    .push_bind(*sender)
                    .push_bind(format!("floor {c} {sender}"))
                    .push_bind("TEXT");
            });
            Ok(insert.build().execute(&pool).await?.rows_affected())
        }
    })
    .await
}

/// The set-based variant: `rows` messages per transaction with the statements of a send
/// batch (and the log entries when `log`), on sessions marked as the service's.
async fn batch_for(
    url: &str,
    conversations: &[String],
    rows: usize,
    in_flight: usize,
    seconds: u64,
    log: bool,
) -> anyhow::Result<(u64, u64, f64)> {
    let pool = MySqlPoolOptions::new()
        .max_connections(u32::try_from(in_flight).unwrap_or(32))
        .after_connect(|conn, _| {
            Box::pin(async move {
                sqlx::Executor::execute(
                    &mut *conn,
                    "SET time_zone = '+00:00', @chat_service_session = 1",
                )
                .await?;
                sqlx::Executor::execute(
                    &mut *conn,
                    "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
                )
                .await?;
                Ok(())
            })
        })
        .connect(url)
        .await?;
    let writer = pool.clone();
    let outcome = drive(conversations, rows, in_flight, seconds, move |mut picks| {
        let pool = writer.clone();
        async move {
            // Locked in id order, as the appender does.
            picks.sort_by(|a, b| a.1.cmp(&b.1));
            store_batch(&pool, &picks, log).await?;
            Ok(picks.len() as u64)
        }
    })
    .await;
    pool.close().await;
    outcome
}

/// One transaction of a send batch: a message into each conversation of `batch` (in id
/// order) from its sender, with their log entries when `log`.
async fn store_batch(
    pool: &MySqlPool,
    batch: &[(usize, String, i64)],
    log: bool,
) -> anyhow::Result<()> {
    use sqlx::Row;
    let mut tx = pool.begin().await?;
    let mut lock =
        QueryBuilder::<MySql>::new("SELECT id, last_seq FROM CONVERSATIONS WHERE id IN (");
    let mut list = lock.separated(", ");
    for (_, id, _) in batch {
        list.push_bind(id.as_str());
    }
    lock.push(") ORDER BY id FOR UPDATE");
    let mut last = std::collections::HashMap::new();
    for row in lock.build().fetch_all(&mut *tx).await? {
        last.insert(
            row.try_get::<String, _>("id")?,
            row.try_get::<i64, _>("last_seq")?,
        );
    }
    // (conversation, message id, seq, sender)
    let sends: Vec<(&str, String, i64, i64)> = batch
        .iter()
        .map(|(_, id, sender)| {
            let seq = last.get(id).copied().unwrap_or(0) + 1;
            (id.as_str(), uuid::Uuid::now_v7().to_string(), seq, *sender)
        })
        .collect();
    let mut insert = QueryBuilder::<MySql>::new(
        "INSERT INTO MESSAGES (id, conversation_id, seq, sender_id, content, message_type, \
         created_at, is_system_message) ",
    );
    insert.push_values(&sends, |mut row, (conversation, id, seq, sender)| {
        row.push_bind(id.clone())
            .push_bind(*conversation)
            .push_bind(*seq)
            .push_bind(*sender)
            .push_bind(format!("floor {seq}"))
            .push_bind("TEXT")
            .push("NOW(6)")
            .push_bind(false);
    });
    insert.build().execute(&mut *tx).await?;
    let mut advance = QueryBuilder::<MySql>::new("UPDATE CONVERSATIONS SET last_seq = CASE id");
    for (conversation, _, seq, _) in &sends {
        advance
            .push(" WHEN ")
            .push_bind(*conversation)
            .push(" THEN ")
            .push_bind(*seq);
    }
    advance.push(
        " END, last_message_at = NOW(), counted_total = counted_total + 1, activity_key = \
         GREATEST(activity_key + 1, CAST(UNIX_TIMESTAMP(NOW(6)) * 1000000 AS SIGNED)) \
         WHERE id IN (",
    );
    let mut list = advance.separated(", ");
    for (conversation, ..) in &sends {
        list.push_bind(*conversation);
    }
    advance.push(")");
    advance.build().execute(&mut *tx).await?;
    let mut members = QueryBuilder::<MySql>::new(
        "UPDATE CONVERSATION_PARTICIPANTS SET last_read_at = NOW(), last_read_seq = CASE",
    );
    for (conversation, _, seq, sender) in &sends {
        members
            .push(" WHEN conversation_id = ")
            .push_bind(*conversation)
            .push(" AND user_id = ")
            .push_bind(*sender)
            .push(" THEN ")
            .push_bind(*seq);
    }
    members.push(
        " ELSE last_read_seq END, unread_count = 0, unread_base = (SELECT c.counted_total \
         FROM CONVERSATIONS c WHERE c.id = CONVERSATION_PARTICIPANTS.conversation_id) WHERE ",
    );
    let mut rows = members.separated(" OR ");
    for (conversation, _, _, sender) in &sends {
        rows.push("(conversation_id = ")
            .push_bind_unseparated(*conversation)
            .push_unseparated(" AND user_id = ")
            .push_bind_unseparated(*sender)
            .push_unseparated(")");
    }
    members.build().execute(&mut *tx).await?;
    if log {
        let mut entries = QueryBuilder::<MySql>::new(
            "INSERT INTO CHANGE_LOG (conversation_id, kind, message_id) ",
        );
        entries.push_values(&sends, |mut row, (conversation, id, _, _)| {
            row.push_bind(*conversation)
                .push_bind(1_i64)
                .push_bind(id.clone());
        });
        entries.build().execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The conversations of `worker` among `in_flight` (index and id): conversation `c` is
/// worker `c % in_flight`'s, so no two statements in flight touch the same one.
fn owned_by(conversations: &[String], in_flight: usize, worker: usize) -> Vec<(usize, String)> {
    conversations
        .iter()
        .enumerate()
        .filter(|(c, _)| c % in_flight == worker)
        .map(|(c, id)| (c, id.clone()))
        .collect()
}
