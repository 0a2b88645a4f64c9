//! [`ChangeFeed`] on MySQL (docs/schema.md, "The change feed"): the read side of
//! `CHANGE_LOG`, its retention, and the stamper that numbers committed entries.
//!
//! Writes append entries unstamped (`pos` NULL, `crate::change_log`): `AUTO_INCREMENT` ids
//! are handed out at insert, not at commit, so they cannot be the order a reader follows.
//! One stamper per deployment (the node whose dedicated connection holds
//! `GET_LOCK('<db>.chat_feed_stamper')`) repeatedly reads the ids of the committed
//! unstamped entries (a plain READ COMMITTED read sees committed rows only) and numbers
//! them `head + 1, …` in id order, in one short transaction; stamp transactions never run
//! side by side, so positions are gapless, and a reader, which reads stamped entries only
//! (`pos <= head`), never skips one that commits later: it will be numbered above the head.
//! Other nodes' stampers retry the lock every second; a stamper whose connection dies
//! releases it with the connection. This node's writes wake the stamper at once; other
//! nodes' entries are found by polling every [`POLL`].

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chat_domain::{
    Change, ChangeKind, ConversationId, FeedId, FeedPos, MembershipWindow, Role, Seq, Timestamp,
    UserId, to_stored_precision,
};
use chat_ports::{ChangeFeed, FeedBounds, Purged, ReaderChanges, StoreError};
use sqlx::mysql::MySqlRow;
use sqlx::{
    ConnectOptions, Connection, Executor, MySql, MySqlConnection, MySqlPool, QueryBuilder, Row,
};
use tokio::sync::{Notify, watch};

use crate::MySqlStore;
use crate::change_log::move_of;
use crate::error::{Failure, Outcome};
use crate::rows;

/// How often the stamper looks for entries when nothing woke it (other nodes' writes).
const POLL: Duration = Duration::from_millis(10);

/// How often a stamper that does not hold the lock tries again.
const LEAD_RETRY: Duration = Duration::from_secs(1);

/// How often `wait_past` reads the head when this node does not stamp.
const WAIT_POLL: Duration = Duration::from_millis(20);

/// How long a read waits at most for the entries committed before it to be numbered
/// (see [`MySqlStore::caught_up`]; and never more than half the call deadline); after
/// that it answers with what is numbered.
const CATCH_UP: Duration = Duration::from_secs(2);

/// How often a read that waits for the stamper looks again.
const CATCH_UP_POLL: Duration = Duration::from_millis(2);

/// Positions a purge looks through for the first entry to keep, at most, per call (the
/// created_at of each is read from its row): a purge's work is bounded even when a long
/// stretch of the log has expired; it says `more` and the next call goes on.
const PURGE_WINDOW: i64 = 10_000;

/// Entries numbered per stamp transaction.
const STAMP_BATCH: i64 = 1000;

/// Below this many positions between a reader's position and the head, a reader's page is
/// read along the positions (each entry checked against the reader's memberships);
/// above, along the reader's conversations (see [`MySqlStore::try_reader_changes`]).
const SCAN_BY_POS: u64 = 4096;

/// The server drops a stamper connection idle this long (seconds), releasing the lock of
/// a node that froze or lost the network; a live stamper is never idle for more than
/// [`LEAD_RETRY`].
const STAMPER_IDLE_TIMEOUT_S: u32 = 10;

/// This store's side of the feed: the stamper's wake-up, and the head it last stamped.
#[derive(Debug)]
pub(crate) struct Feed {
    /// Woken after this node's writes commit.
    wake: Notify,
    /// The head after this node's stamper's last stamp (0 before).
    stamped: watch::Sender<u64>,
    /// Whether this node's stamper holds the lock.
    leading: AtomicBool,
}

impl Feed {
    fn new() -> Self {
        Self {
            wake: Notify::new(),
            stamped: watch::Sender::new(0),
            leading: AtomicBool::new(false),
        }
    }

    /// Whether this store's stamper holds the lock.
    pub(crate) fn is_leading(&self) -> bool {
        self.leading.load(Ordering::Relaxed)
    }

    /// Tells the stamper that entries were committed.
    pub(crate) fn written(&self) {
        self.wake.notify_one();
    }
}

/// The columns of an entry, as [`change`] reads them.
const ENTRY_COLUMNS: &str = "l.pos, l.conversation_id, l.kind, l.message_id, l.user_id, l.seq, \
     l.role, l.emoji, l.read_at, l.created_at";

/// The head: the newest stamped position, or the floor when everything was purged.
/// With it, the newest unstamped entry committed (`pending`, NULL when none).
const HEAD_SQL: &str = "SELECT f.feed_id, f.floor, \
     GREATEST(f.floor, COALESCE((SELECT MAX(pos) FROM CHANGE_LOG), 0)) AS head, \
     (SELECT MAX(id) FROM CHANGE_LOG WHERE pos IS NULL) AS pending FROM CHANGE_FEED f";

/// The reader's first membership move in the entry's conversation after a position
/// (`idx_change_log_user`): the stamped one with the smallest position, else (a move
/// committed but not numbered yet, which will be numbered above every stamped entry) the
/// unstamped one with the smallest id (one conversation's moves commit one after the
/// other under its row lock, so their ids are in commit order). Binds: reader, position.
const FIRST_MOVE_SQL: &str = "(SELECT mv.kind FROM CHANGE_LOG mv FORCE INDEX (idx_change_log_user) \
     WHERE mv.user_id = ? AND mv.conversation_id = l.conversation_id AND mv.kind IN (9, 10) \
       AND (mv.pos > ? OR mv.pos IS NULL) \
     ORDER BY mv.pos IS NULL, mv.pos, mv.id LIMIT 1)";

fn position(value: i64) -> Outcome<FeedPos> {
    FeedPos::from_i64(value).map_err(|_| Failure::corrupt("feed position"))
}

/// An entry read with [`ENTRY_COLUMNS`].
fn change(row: &MySqlRow) -> Outcome<Change> {
    let code: u8 = row.try_get("kind")?;
    let message = || -> Outcome<chat_domain::MessageId> {
        let id: Option<String> = row.try_get("message_id")?;
        rows::message_id(&id.ok_or_else(|| Failure::corrupt("change message"))?)
    };
    let user = || -> Outcome<UserId> {
        let id: Option<i64> = row.try_get("user_id")?;
        rows::user_id(id.ok_or_else(|| Failure::corrupt("change user"))?)
    };
    let seq = || -> Outcome<Seq> {
        let seq: Option<i64> = row.try_get("seq")?;
        Seq::new(seq.ok_or_else(|| Failure::corrupt("change seq"))?)
            .map_err(|_| Failure::corrupt("change seq"))
    };
    let role = || -> Outcome<Role> {
        let role: Option<String> = row.try_get("role")?;
        Role::parse(&role.ok_or_else(|| Failure::corrupt("change role"))?)
            .map_err(|_| Failure::corrupt("change role"))
    };
    let emoji = || -> Outcome<String> {
        let bytes: Option<Vec<u8>> = row.try_get("emoji")?;
        String::from_utf8(bytes.ok_or_else(|| Failure::corrupt("change emoji"))?)
            .map_err(|_| Failure::corrupt("change emoji"))
    };
    let kind = match code {
        1 => ChangeKind::MessageCreated {
            message_id: message()?,
        },
        2 => ChangeKind::MessageUpdated {
            message_id: message()?,
        },
        3 => ChangeKind::MessageDeleted {
            message_id: message()?,
            seq: seq()?,
        },
        4 => ChangeKind::ReactionAdded {
            message_id: message()?,
            user_id: user()?,
            emoji: emoji()?,
        },
        5 => ChangeKind::ReactionRemoved {
            message_id: message()?,
            user_id: user()?,
            emoji: emoji()?,
        },
        6 => {
            let at: Option<time::OffsetDateTime> = row.try_get("read_at")?;
            ChangeKind::ConversationRead {
                user_id: user()?,
                last_read_seq: seq()?,
                last_read_at: to_stored_precision(
                    at.ok_or_else(|| Failure::corrupt("change read_at"))?,
                ),
            }
        }
        7 => ChangeKind::ConversationCreated,
        8 => ChangeKind::ConversationUpdated,
        9 => ChangeKind::ParticipantAdded {
            user_id: user()?,
            role: role()?,
        },
        10 => ChangeKind::ParticipantRemoved { user_id: user()? },
        11 => ChangeKind::ParticipantUpdated {
            user_id: user()?,
            role: role()?,
        },
        _ => return Err(Failure::corrupt("change kind")),
    };
    Ok(Change {
        pos: position(row.try_get("pos")?)?,
        conversation_id: rows::conversation_id(&row.try_get::<String, _>("conversation_id")?)?,
        at: to_stored_precision(row.try_get::<time::OffsetDateTime, _>("created_at")?),
        kind,
    })
}

/// The feed's identity, floor and head, as one statement sees them.
async fn bounds(conn: &mut MySqlConnection) -> Outcome<FeedBounds> {
    Ok(bounds_and_pending(conn).await?.0)
}

/// [`bounds`], and the newest committed entry not numbered yet.
async fn bounds_and_pending(conn: &mut MySqlConnection) -> Outcome<(FeedBounds, Option<u64>)> {
    let row = sqlx::query(HEAD_SQL)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| Failure::corrupt("CHANGE_FEED has no row"))?;
    let id: Vec<u8> = row.try_get("feed_id")?;
    let id: [u8; 16] = id.try_into().map_err(|_| Failure::corrupt("feed id"))?;
    let bounds = FeedBounds {
        feed_id: FeedId::from_bytes(id),
        floor: position(row.try_get("floor")?)?,
        head: position(row.try_get("head")?)?,
    };
    Ok((bounds, row.try_get("pending")?))
}

/// A reader's page: along the positions (`by_position`; binds: reader, after, reader,
/// after, head, limit) or along the reader's conversations (binds: reader, after, after,
/// head, reader, limit). See [`MySqlStore::try_reader_changes`].
pub(crate) fn reader_page_sql(by_position: bool) -> String {
    if by_position {
        format!(
            "SELECT STRAIGHT_JOIN {ENTRY_COLUMNS}, p.left_at IS NULL AS active, \
               {FIRST_MOVE_SQL} AS first_move \
             FROM CHANGE_LOG l FORCE INDEX (uq_change_log_pos) \
             JOIN CONVERSATION_PARTICIPANTS p \
               ON p.conversation_id = l.conversation_id AND p.user_id = ? \
             WHERE l.pos > ? AND l.pos <= ? ORDER BY l.pos LIMIT ?"
        )
    } else {
        format!(
            "SELECT {ENTRY_COLUMNS}, page.active, {FIRST_MOVE_SQL} AS first_move FROM ( \
               SELECT l2.pos, p.left_at IS NULL AS active \
               FROM CONVERSATION_PARTICIPANTS p \
               JOIN CHANGE_LOG l2 FORCE INDEX (idx_change_log_conversation) \
                 ON l2.conversation_id = p.conversation_id AND l2.pos > ? AND l2.pos <= ? \
               WHERE p.user_id = ? ORDER BY l2.pos LIMIT ?) page \
             JOIN CHANGE_LOG l ON l.pos = page.pos ORDER BY l.pos"
        )
    }
}

fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

impl MySqlStore {
    /// The bounds once every entry committed before the call is numbered (waiting at most
    /// [`CATCH_UP`], waking this node's stamper, when some are not): a reader then sees
    /// every change that committed before it asked, its own writes included. Nothing
    /// pending, the usual case, costs nothing more than reading the bounds.
    async fn caught_up(&self, conn: &mut MySqlConnection) -> Outcome<FeedBounds> {
        let (bounds, pending) = bounds_and_pending(conn).await?;
        let Some(newest) = pending else {
            return Ok(bounds);
        };
        self.feed.written();
        let deadline = tokio::time::Instant::now() + CATCH_UP.min(self.call_timeout / 2);
        loop {
            tokio::time::sleep(CATCH_UP_POLL).await;
            let left: Option<u64> = sqlx::query_scalar(
                "SELECT id FROM CHANGE_LOG WHERE pos IS NULL AND id <= ? LIMIT 1",
            )
            .bind(newest)
            .fetch_optional(&mut *conn)
            .await?;
            if left.is_none() {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::debug!("change feed entries not numbered yet; answering without them");
                break;
            }
        }
        bounds_and_pending(conn).await.map(|(bounds, _)| bounds)
    }

    async fn try_changes_after(&self, after: FeedPos, limit: usize) -> Outcome<Vec<Change>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.pool.acquire().await?;
        let head = self.caught_up(&mut conn).await?.head;
        let sql = format!(
            "SELECT {ENTRY_COLUMNS} FROM CHANGE_LOG l WHERE l.pos > ? AND l.pos <= ? \
             ORDER BY l.pos LIMIT ?"
        );
        let rows = sqlx::query(&sql)
            .bind(after.as_i64())
            .bind(head.as_i64())
            .bind(sql_limit(limit))
            .fetch_all(&mut *conn)
            .await?;
        rows.iter().map(change).collect()
    }

    /// A reader's page in one statement (the entries, the reader's memberships and
    /// membership moves of one snapshot), after the bounds.
    ///
    /// The entries are read along the positions (`uq_change_log_pos`, each entry joined to
    /// the reader's membership by the unique key) when few positions lie between `after`
    /// and the head, which is the case of a client that keeps up: the work is that of the
    /// positions, not of the reader's conversations. Otherwise along the reader's
    /// conversations (`idx_participants_badge`, then `idx_change_log_conversation` from
    /// `after`, index only), the page's positions first and their rows then: the work is
    /// that of the reader's own entries. Each row carries the reader's first membership
    /// move in its conversation after `after` ([`FIRST_MOVE_SQL`]).
    async fn try_reader_changes(
        &self,
        reader: UserId,
        after: FeedPos,
        limit: usize,
    ) -> Outcome<ReaderChanges> {
        let mut conn = self.pool.acquire().await?;
        let head = self.caught_up(&mut conn).await?.head;
        if head <= after || limit == 0 {
            return Ok(ReaderChanges {
                changes: Vec::new(),
                windows: Vec::new(),
                head,
            });
        }
        let by_position = head.get() - after.get() <= SCAN_BY_POS;
        let sql = reader_page_sql(by_position);
        let query = sqlx::query(&sql).bind(reader.get()).bind(after.as_i64());
        let query = if by_position {
            query
                .bind(reader.get())
                .bind(after.as_i64())
                .bind(head.as_i64())
        } else {
            query
                .bind(after.as_i64())
                .bind(head.as_i64())
                .bind(reader.get())
        };
        let rows = query.bind(sql_limit(limit)).fetch_all(&mut *conn).await?;
        let mut changes = Vec::with_capacity(rows.len());
        let mut windows: Vec<MembershipWindow> = Vec::new();
        let mut seen: HashSet<ConversationId> = HashSet::new();
        for row in &rows {
            let entry = change(row)?;
            if seen.insert(entry.conversation_id) {
                windows.push(MembershipWindow {
                    conversation_id: entry.conversation_id,
                    active_now: row.try_get::<Option<i64>, _>("active")?.unwrap_or(0) == 1,
                    first_move_after: row
                        .try_get::<Option<u8>, _>("first_move")?
                        .and_then(move_of),
                });
            }
            changes.push(entry);
        }
        Ok(ReaderChanges {
            changes,
            windows,
            head,
        })
    }

    async fn try_feed_bounds(&self) -> Outcome<FeedBounds> {
        let mut conn = self.pool.acquire().await?;
        self.caught_up(&mut conn).await
    }

    async fn try_head(&self) -> Outcome<FeedPos> {
        let mut conn = self.pool.acquire().await?;
        Ok(bounds(&mut conn).await?.head)
    }

    /// Moves the floor (never down) to just below the oldest entry written at or after
    /// `older_than` (to the head when there is none; looking through at most
    /// [`PURGE_WINDOW`] positions per call, `more` when it stopped there), then deletes
    /// at most `batch` entries at or below it, oldest first: a range of
    /// `uq_change_log_pos`, rows no writer touches (writers insert unstamped rows; the
    /// stamper numbers them above the head).
    async fn try_purge(&self, older_than: Timestamp, batch: usize) -> Outcome<Purged> {
        let mut conn = self.pool.acquire().await?;
        let current = bounds(&mut conn).await?;
        let window_end = current
            .head
            .as_i64()
            .min(current.floor.as_i64().saturating_add(PURGE_WINDOW));
        let kept: Option<i64> = sqlx::query_scalar(
            "SELECT pos FROM CHANGE_LOG FORCE INDEX (uq_change_log_pos) \
             WHERE pos > ? AND pos <= ? AND created_at >= ? ORDER BY pos LIMIT 1",
        )
        .bind(current.floor.as_i64())
        .bind(window_end)
        .bind(older_than)
        .fetch_optional(&mut *conn)
        .await?;
        // Everything in the window is older: the floor moves to its end, and the next
        // call looks further.
        let target = kept.map_or(window_end, |pos| pos - 1);
        let window_exhausted = kept.is_none() && window_end < current.head.as_i64();
        sqlx::query("UPDATE CHANGE_FEED SET floor = GREATEST(floor, ?)")
            .bind(target)
            .execute(&mut *conn)
            .await?;
        let floor = bounds(&mut conn).await?.floor;
        let deleted = if batch == 0 {
            0
        } else {
            sqlx::query("DELETE FROM CHANGE_LOG WHERE pos <= ? ORDER BY pos LIMIT ?")
                .bind(floor.as_i64())
                .bind(sql_limit(batch))
                .execute(&mut *conn)
                .await?
                .rows_affected()
        };
        let more: Option<i64> =
            sqlx::query_scalar("SELECT pos FROM CHANGE_LOG WHERE pos <= ? ORDER BY pos LIMIT 1")
                .bind(floor.as_i64())
                .fetch_optional(&mut *conn)
                .await?;
        Ok(Purged {
            floor,
            deleted,
            more: more.is_some() || window_exhausted,
        })
    }
}

#[async_trait]
impl ChangeFeed for MySqlStore {
    async fn feed_bounds(&self) -> Result<FeedBounds, StoreError> {
        self.bounded(self.try_feed_bounds()).await
    }

    async fn changes_after(&self, after: FeedPos, limit: usize) -> Result<Vec<Change>, StoreError> {
        self.bounded(self.try_changes_after(after, limit)).await
    }

    async fn reader_changes(
        &self,
        reader: UserId,
        after: FeedPos,
        limit: usize,
    ) -> Result<ReaderChanges, StoreError> {
        self.bounded(self.try_reader_changes(reader, after, limit))
            .await
    }

    async fn wait_past(&self, after: FeedPos, timeout: Duration) -> Result<FeedPos, StoreError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut stamped = self.feed.stamped.subscribe();
        loop {
            let local = *stamped.borrow_and_update();
            if local > after.get() {
                return Ok(FeedPos::new(local));
            }
            let head = self.bounded(self.try_head()).await?;
            if head > after || tokio::time::Instant::now() >= deadline {
                return Ok(head);
            }
            // This node's stamper announces every stamp; otherwise the head is polled.
            let poll = if self.feed.leading.load(Ordering::Relaxed) {
                WAIT_POLL * 10
            } else {
                WAIT_POLL
            };
            let until = deadline.min(tokio::time::Instant::now() + poll);
            tokio::select! {
                _ = stamped.changed() => {}
                () = tokio::time::sleep_until(until) => {}
            }
        }
    }

    async fn purge(&self, older_than: Timestamp, batch: usize) -> Result<Purged, StoreError> {
        crate::retrying!(self, self.try_purge(older_than, batch))
    }
}

/// Starts this store's stamper on the current tokio runtime (none outside one: entries
/// then wait for a stamper of another store on the database). It works on a connection
/// of its own (the pool's settings, outside the pool), ends when the pool is closed, and
/// bounds every call by `call_timeout` (a connection that does not answer is dropped,
/// which releases the lock).
pub(crate) fn spawn_stamper(pool: &MySqlPool, call_timeout: Duration) -> Arc<Feed> {
    let feed = Arc::new(Feed::new());
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return feed;
    };
    let pool = pool.clone();
    let shared = Arc::clone(&feed);
    runtime.spawn(async move { run_stamper(pool, shared, call_timeout).await });
    feed
}

async fn run_stamper(pool: MySqlPool, feed: Arc<Feed>, call_timeout: Duration) {
    let mut own: Option<MySqlConnection> = None;
    while !pool.is_closed() {
        let Some(conn) = own.as_mut() else {
            match tokio::time::timeout(call_timeout, connect(&pool)).await {
                Ok(Ok(conn)) => own = Some(conn),
                Ok(Err(failure)) => {
                    tracing::debug!(error = ?failure, "feed stamper cannot connect yet");
                    tokio::time::sleep(LEAD_RETRY).await;
                }
                Err(_) => tokio::time::sleep(LEAD_RETRY).await,
            }
            continue;
        };
        if !feed.leading.load(Ordering::Relaxed) {
            match tokio::time::timeout(call_timeout, take_lock(conn)).await {
                Ok(Ok(true)) => {
                    tracing::info!("this node stamps the change feed");
                    feed.leading.store(true, Ordering::Relaxed);
                    continue;
                }
                Ok(Ok(false)) => {}
                Ok(Err(_)) | Err(_) => own = None,
            }
            tokio::time::sleep(LEAD_RETRY).await;
            continue;
        }
        match tokio::time::timeout(call_timeout, stamp(conn)).await {
            Ok(Ok(Some((count, head)))) => {
                feed.stamped.send_replace(head);
                if count >= STAMP_BATCH {
                    continue;
                }
            }
            Ok(Ok(None)) => {}
            Ok(Err(failure)) => {
                // Before the migrations ran (no table yet) the connection is fine: keep it
                // and the lock. A connection that fails is dropped with the lock.
                let alive = matches!(
                    tokio::time::timeout(call_timeout, conn.ping()).await,
                    Ok(Ok(()))
                );
                tracing::debug!(error = ?failure, alive, "feed stamp failed");
                if !alive {
                    own = None;
                    feed.leading.store(false, Ordering::Relaxed);
                }
            }
            Err(_) => {
                own = None;
                feed.leading.store(false, Ordering::Relaxed);
            }
        }
        tokio::select! {
            () = feed.wake.notified() => {}
            () = tokio::time::sleep(POLL) => {}
        }
    }
    if let Some(mut conn) = own {
        if feed.leading.load(Ordering::Relaxed) {
            // What committed before the store closed is numbered now rather than at the
            // next start.
            while let Ok(Ok(Some((count, head)))) =
                tokio::time::timeout(call_timeout, stamp(&mut conn)).await
            {
                feed.stamped.send_replace(head);
                if count < STAMP_BATCH {
                    break;
                }
            }
        }
        feed.leading.store(false, Ordering::Relaxed);
        let _ = conn.close().await;
    }
}

/// A connection with the pool's options and the adapter's session settings (UTC, READ
/// COMMITTED), outside the pool, dropped by the server after [`STAMPER_IDLE_TIMEOUT_S`]
/// idle.
async fn connect(pool: &MySqlPool) -> Outcome<MySqlConnection> {
    let mut conn = pool.connect_options().connect().await?;
    conn.execute("SET time_zone = '+00:00'").await?;
    conn.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        .await?;
    conn.execute(format!("SET SESSION wait_timeout = {STAMPER_IDLE_TIMEOUT_S}").as_str())
        .await?;
    Ok(conn)
}

/// Tries to take the deployment's stamper lock (named after the database, hashed when
/// the name is long: lock names have at most 64 characters) without waiting.
async fn take_lock(conn: &mut MySqlConnection) -> Outcome<bool> {
    let got: Option<i64> = sqlx::query_scalar(
        "SELECT GET_LOCK(IF(CHAR_LENGTH(DATABASE()) <= 46, \
           CONCAT(DATABASE(), '.chat_feed_stamper'), \
           CONCAT(SHA1(DATABASE()), '.chat_feed_stamper')), 0)",
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(got == Some(1))
}

/// Numbers up to [`STAMP_BATCH`] committed unstamped entries, in id order, from the head
/// on, in one transaction. How many, and the head after; `None` when there were none.
async fn stamp(conn: &mut MySqlConnection) -> Outcome<Option<(i64, u64)>> {
    // A plain READ COMMITTED read: committed rows only (an entry whose transaction is
    // still open is numbered by a later pass, above whatever this one numbers). The
    // UPDATE below goes by primary key, so that it locks exactly these rows and never
    // waits for a writer's uncommitted entry (the range `pos IS NULL` holds those too).
    let ids: Vec<u64> = sqlx::query_scalar(
        "SELECT id FROM CHANGE_LOG FORCE INDEX (uq_change_log_pos) \
         WHERE pos IS NULL ORDER BY id LIMIT ?",
    )
    .bind(STAMP_BATCH)
    .fetch_all(&mut *conn)
    .await?;
    if ids.is_empty() {
        return Ok(None);
    }
    let mut tx = conn.begin().await?;
    let head: i64 = sqlx::query_scalar(
        "SELECT GREATEST(f.floor, COALESCE((SELECT MAX(pos) FROM CHANGE_LOG), 0)) \
         FROM CHANGE_FEED f",
    )
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query("SET @chat_feed_pos = ?")
        .bind(head)
        .execute(&mut *tx)
        .await?;
    let mut update = QueryBuilder::<MySql>::new(
        "UPDATE CHANGE_LOG FORCE INDEX (PRIMARY) \
         SET pos = (@chat_feed_pos := @chat_feed_pos + 1) WHERE id IN (",
    );
    let mut list = update.separated(", ");
    for id in &ids {
        list.push_bind(*id);
    }
    update.push(") AND pos IS NULL ORDER BY id");
    let numbered = update.build().execute(&mut *tx).await?.rows_affected();
    let count = i64::try_from(ids.len()).unwrap_or(i64::MAX);
    if numbered != ids.len() as u64 {
        // Only one stamper runs at a time: not expected. Nothing is numbered.
        tx.rollback().await?;
        return Err(Failure::corrupt("unstamped entries changed while numbered"));
    }
    tx.commit().await?;
    Ok(Some((count, u64::try_from(head + count).unwrap_or(0))))
}
