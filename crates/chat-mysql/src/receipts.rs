//! Receipts from recorded marker moves (docs/schema.md, "Receipts from marker moves"): a
//! send or `mark_read` records one `READ_MARKER_MOVES` row per marker move in its own
//! transaction (`writes::record_moves`); a background task ([`spawn_materializer`]) turns them
//! into `MESSAGE_READ_RECEIPTS` rows after the commit, in batches and idempotently, and
//! deletes them; "seen by" ([`receipts_of`]) reads the receipts and the moves still
//! pending together, so its answers do not depend on the lag.

use std::collections::HashMap;
use std::time::Duration;

use chat_domain::{MessageId, Receipt};
use sqlx::{
    ConnectOptions, Connection, Executor, MySql, MySqlConnection, MySqlPool, QueryBuilder, Row,
};

use crate::error::Outcome;
use crate::rows::{self, uuid_order};
use crate::writes::{ReceiptRange, record_receipts};

/// How often the task looks for moves when it found none.
const POLL: Duration = Duration::from_millis(100);

/// The moves turned into receipts per transaction.
const BATCH: i64 = 256;

/// Turns up to [`BATCH`] pending moves (oldest first) into receipts and deletes them, in
/// one transaction; the moves another instance is working on are skipped. How many moves
/// were done.
///
/// # Errors
/// When the database fails; the moves stay for the next run.
pub(crate) async fn materialize_batch(conn: &mut MySqlConnection) -> Outcome<usize> {
    let mut tx = conn.begin().await?;
    let rows = sqlx::query(
        "SELECT id, conversation_id, user_id, after_seq, up_to_seq, moved_at \
         FROM READ_MARKER_MOVES ORDER BY id LIMIT ? FOR UPDATE SKIP LOCKED",
    )
    .bind(BATCH)
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        // Nothing was written: no COMMIT (an idle task would otherwise send one every poll,
        // which the fault tests' proxy, cutting "the next COMMIT", could take for a send's).
        tx.rollback().await?;
        return Ok(0);
    }
    let mut ids = Vec::with_capacity(rows.len());
    let mut ranges = Vec::with_capacity(rows.len());
    for row in &rows {
        ids.push(row.try_get::<i64, _>("id")?);
        ranges.push(ReceiptRange {
            conversation: rows::conversation_id(&row.try_get::<String, _>("conversation_id")?)?,
            reader: row.try_get("user_id")?,
            after: row.try_get("after_seq")?,
            up_to: row.try_get("up_to_seq")?,
            at: row.try_get("moved_at")?,
        });
    }
    // In move order: one reader's moves never overlap (markers only move forward), and a
    // receipt already there (an earlier run, the previous system) is kept as it is.
    record_receipts(&mut tx, &ranges).await?;
    let mut delete = QueryBuilder::<MySql>::new("DELETE FROM READ_MARKER_MOVES WHERE id IN (");
    let mut list = delete.separated(", ");
    for id in &ids {
        list.push_bind(*id);
    }
    delete.push(")");
    delete.build().execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(ids.len())
}

/// Turns every pending move into receipts now (for shutdown and tests). How many.
///
/// # Errors
/// When the database fails.
pub(crate) async fn materialize_all(pool: &MySqlPool) -> Outcome<usize> {
    let mut conn = pool.acquire().await?;
    let mut total = 0;
    loop {
        let done = materialize_batch(&mut conn).await?;
        total += done;
        if done == 0 {
            return Ok(total);
        }
    }
}

/// Starts the task that turns moves into receipts on the current tokio runtime (none
/// outside one): it drains what is pending, then looks again every [`POLL`], so the lag
/// is about that plus a batch's transaction. It repairs a crash by itself: moves stay
/// until their receipts are committed. It works on a connection of its own (the pool's
/// settings, outside the pool: it never takes a connection from a request), opened again
/// after a failure, and ends when the pool is closed.
pub(crate) fn spawn_materializer(pool: &MySqlPool) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let pool = pool.clone();
    runtime.spawn(async move {
        let mut own: Option<MySqlConnection> = None;
        while !pool.is_closed() {
            let outcome = match own.as_mut() {
                Some(conn) => materialize_batch(conn).await,
                None => match connect(&pool).await {
                    Ok(conn) => {
                        own = Some(conn);
                        continue;
                    }
                    Err(failure) => Err(failure),
                },
            };
            match outcome {
                Ok(done) if done > 0 => continue,
                Ok(_) => {}
                // Started with the store, before chatd runs the migrations: the table
                // comes soon, and the connection is fine.
                Err(failure) if failure.is_missing_table() => {
                    tracing::debug!("read receipts wait for the migrations");
                }
                Err(failure) => {
                    own = None;
                    if !pool.is_closed() {
                        tracing::warn!(error = ?failure, "read receipts not materialized yet");
                    }
                }
            }
            tokio::time::sleep(POLL).await;
        }
        if let Some(conn) = own {
            let _ = conn.close().await;
        }
    });
}

/// A connection with the pool's options and the adapter's session settings (UTC, READ
/// COMMITTED), outside the pool.
async fn connect(pool: &MySqlPool) -> Outcome<MySqlConnection> {
    let mut conn = pool.connect_options().connect().await?;
    conn.execute("SET time_zone = '+00:00'").await?;
    conn.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        .await?;
    Ok(conn)
}

/// "Seen by" of a message: its receipts, and the readers whose pending moves pass it (the
/// message live and not their own, as a receipt would be recorded), each reader once with
/// the earliest time; ordered as the receipts are (by time, then in the order they were
/// written: stored receipts by their id's time, pending moves after them, in move order).
///
/// # Errors
/// When the database fails.
pub(crate) async fn receipts_of(pool: &MySqlPool, message: MessageId) -> Outcome<Vec<Receipt>> {
    let sql = format!(
        "SELECT r.user_id, r.read_at, 0 AS pending, {} AS written \
         FROM MESSAGE_READ_RECEIPTS r WHERE r.message_id = ? \
         UNION ALL \
         SELECT mv.user_id, mv.moved_at, 1, LPAD(mv.id, 20, '0') \
         FROM MESSAGES m JOIN READ_MARKER_MOVES mv ON mv.conversation_id = m.conversation_id \
           AND mv.up_to_seq >= m.seq AND mv.after_seq < m.seq \
         WHERE m.id = ? AND mv.user_id <> m.sender_id AND m.deleted_at IS NULL",
        uuid_order("r.id")
    );
    let rows = sqlx::query(&sql)
        .bind(message.to_string())
        .bind(message.to_string())
        .fetch_all(pool)
        .await?;
    let mut first: HashMap<i64, (time::OffsetDateTime, i64, String)> = HashMap::new();
    for row in &rows {
        let user: i64 = row.try_get("user_id")?;
        let at = row
            .try_get::<Option<time::OffsetDateTime>, _>("read_at")?
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let key = (
            at,
            row.try_get::<i64, _>("pending")?,
            row.try_get("written")?,
        );
        match first.get(&user) {
            Some(kept) if *kept <= key => {}
            _ => {
                first.insert(user, key);
            }
        }
    }
    let mut ordered: Vec<(i64, (time::OffsetDateTime, i64, String))> = first.into_iter().collect();
    ordered.sort_by(|a, b| a.1.cmp(&b.1));
    ordered
        .into_iter()
        .map(|(user, (read_at, _, _))| {
            Ok(Receipt {
                user_id: rows::user_id(user)?,
                read_at,
            })
        })
        .collect()
}
