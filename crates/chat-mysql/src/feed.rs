//! [`ChangeFeed`] on MySQL (docs/schema.md, "The change feed"): the read side of
//! `CHANGE_LOG`, its retention, and the stamper that numbers committed entries.
//!
//! Writes append entries unstamped (`pos` NULL, `crate::change_log`): `AUTO_INCREMENT` ids
//! are handed out at insert, not at commit, so they cannot be the order a reader follows.
//! One stamper per deployment (the node whose dedicated connection holds
//! `GET_LOCK('<db>.chat_feed_stamper')`) repeatedly reads the ids of the committed
//! unstamped entries (a plain READ COMMITTED read sees committed rows only) and numbers
//! them `head + 1, …` in id order, with one autocommit statement (the head kept in memory
//! while it holds the lock); stamps never run side by side, so positions are gapless, and
//! a reader, which reads stamped entries only (`pos <= head`), never skips one that
//! commits later: it will be numbered above the head. Other nodes' stampers retry the
//! lock every second; a stamper whose connection dies releases it with the connection.
//! This node's writes wake the stamper (which then lets commits gather for [`GATHER`]);
//! other nodes' entries are found by polling, every [`POLL`] while entries come, backing
//! off to [`POLL_IDLE`].

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chat_domain::{
    Change, ChangeKind, ConversationId, FeedId, FeedPos, MembershipWindow, Role, Seq, Timestamp,
    UserId, to_stored_precision,
};
use chat_ports::{ChangeFeed, FeedBounds, Purged, ReaderChanges, StoreError};
use sqlx::mysql::MySqlRow;
use sqlx::{ConnectOptions, Connection, Executor, MySqlConnection, MySqlPool, Row};
use tokio::sync::{Notify, watch};

use crate::MySqlStore;
use crate::change_log::move_of;
use crate::error::{Failure, Outcome};
use crate::rows;

/// How often the stamper looks for entries when nothing woke it (other nodes' writes)
/// while it finds some; each look that finds none doubles the pause, up to [`POLL_IDLE`].
const POLL: Duration = Duration::from_millis(10);

/// The longest pause between two looks of an idle stamper: how long, at most, another
/// node's first entry after a quiet spell waits to be found.
const POLL_IDLE: Duration = Duration::from_millis(50);

/// How long the stamper lets commits gather after a pass that numbered entries, before it
/// looks again: under load one statement then numbers many commits instead of one
/// statement (and one fsync) per commit; an entry waits at most this much longer.
const GATHER: Duration = Duration::from_millis(2);

/// How often a stamper that does not hold the lock tries again.
const LEAD_RETRY: Duration = Duration::from_secs(1);

/// How often `wait_past` first reads the head when this node does not stamp; each read
/// that finds it unchanged doubles the pause, up to [`WAIT_POLL_IDLE`].
const WAIT_POLL: Duration = Duration::from_millis(20);

/// The longest pause of `wait_past` between two reads of the head on a node that does
/// not stamp.
const WAIT_POLL_IDLE: Duration = Duration::from_millis(80);

/// How long a read waits at most for the entries committed before it to be numbered
/// (see [`MySqlStore::caught_up`]; and never more than half the call deadline); after
/// that it answers with what is numbered.
const CATCH_UP: Duration = Duration::from_secs(2);

/// How often a read that waits for another node's stamper looks again.
const CATCH_UP_POLL: Duration = Duration::from_millis(2);

/// How often a read that waits for this node's stamper checks that it still stamps.
const CATCH_UP_LEADING_CHECK: Duration = Duration::from_millis(20);

/// Positions a purge looks through for the first entry to keep, at most, per call (the
/// created_at of each is read from its row): a purge's work is bounded even when a long
/// stretch of the log has expired; it says `more` and the next call goes on.
const PURGE_WINDOW: i64 = 10_000;

/// Entries numbered per stamp, at most.
const STAMP_BATCH: usize = 1000;

/// Below this many positions between a reader's position and the head, a reader's page is
/// read along the positions (each entry checked against the reader's memberships);
/// above, along the reader's conversations (see [`MySqlStore::try_reader_changes`]).
const SCAN_BY_POS: u64 = 4096;

/// The server drops a stamper connection idle this long (seconds), releasing the lock of
/// a node that froze or lost the network; a live stamper is never idle for more than
/// [`LEAD_RETRY`].
const STAMPER_IDLE_TIMEOUT_S: u32 = 10;

/// What this store's stamper has numbered since the store started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StampStats {
    /// Stamps that numbered entries (one statement each).
    pub stamps: u64,
    /// Entries numbered.
    pub entries: u64,
}

/// This store's side of the feed: the stamper's wake-up, and what it last stamped.
#[derive(Debug)]
pub(crate) struct Feed {
    /// Woken after this node's writes commit.
    wake: Notify,
    /// The head after this node's stamper's last stamp (0 before).
    stamped: watch::Sender<u64>,
    /// Whether this node's stamper holds the lock.
    leading: AtomicBool,
    /// How many passes (a look for unstamped entries, and their numbering) have begun.
    begun: AtomicU64,
    /// The number of the last pass that numbered every entry it found (fewer than
    /// [`STAMP_BATCH`]): every entry committed before it began is numbered.
    drained: watch::Sender<u64>,
    /// [`StampStats::stamps`].
    stamps: AtomicU64,
    /// [`StampStats::entries`].
    numbered: AtomicU64,
}

impl Feed {
    fn new() -> Self {
        Self {
            wake: Notify::new(),
            stamped: watch::Sender::new(0),
            leading: AtomicBool::new(false),
            begun: AtomicU64::new(0),
            drained: watch::Sender::new(0),
            stamps: AtomicU64::new(0),
            numbered: AtomicU64::new(0),
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

/// The head alone: the newest stamped position, or the floor when everything was purged
/// (the purge moves the floor up to the head at most, so the stamper's head stays right).
const HEAD_ONLY_SQL: &str = "SELECT GREATEST(f.floor, COALESCE((SELECT MAX(pos) FROM CHANGE_LOG), 0)) \
     FROM CHANGE_FEED f";

/// The head (as [`HEAD_ONLY_SQL`]), with the feed's identity and floor and the newest
/// unstamped entry committed (`pending`, NULL when none).
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
    /// pending, the usual case, costs nothing more than reading the bounds. When this
    /// node stamps, the wait asks the stamper, not the database: a pass that began after
    /// the bounds were read and numbered everything it found has numbered them.
    async fn caught_up(&self, conn: &mut MySqlConnection) -> Outcome<FeedBounds> {
        let (bounds, pending) = bounds_and_pending(conn).await?;
        let Some(newest) = pending else {
            return Ok(bounds);
        };
        let mut drained = self.feed.drained.subscribe();
        let covering = self.feed.begun.load(Ordering::SeqCst) + 1;
        self.feed.written();
        let deadline = tokio::time::Instant::now() + CATCH_UP.min(self.call_timeout / 2);
        loop {
            if self.feed.is_leading() {
                if *drained.borrow_and_update() >= covering {
                    break;
                }
                // Looks again whether this node still stamps, now and then.
                let check = deadline.min(tokio::time::Instant::now() + CATCH_UP_LEADING_CHECK);
                tokio::select! {
                    _ = drained.changed() => {}
                    () = tokio::time::sleep_until(check) => {}
                }
            } else {
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

    /// The entries numbered so far after `after`: one statement, without the bounds and
    /// the catch-up of [`MySqlStore::try_changes_after`]. The stamper numbers each pass in
    /// one transaction, above every position before it, so one snapshot holds a gapless
    /// prefix of the positions.
    async fn try_numbered_after(&self, after: FeedPos, limit: usize) -> Outcome<Vec<Change>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.pool.acquire().await?;
        let sql = format!(
            "SELECT {ENTRY_COLUMNS} FROM CHANGE_LOG l WHERE l.pos > ? ORDER BY l.pos LIMIT ?"
        );
        let rows = sqlx::query(&sql)
            .bind(after.as_i64())
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
        Ok(FeedPos::new(read_head(&mut conn).await?))
    }

    /// What this store's stamper has numbered since the store started (zero on a store
    /// whose stamper never held the lock). For metrics and tests.
    pub fn stamp_stats(&self) -> StampStats {
        StampStats {
            stamps: self.feed.stamps.load(Ordering::Relaxed),
            entries: self.feed.numbered.load(Ordering::Relaxed),
        }
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

    async fn numbered_after(
        &self,
        after: FeedPos,
        limit: usize,
    ) -> Result<Vec<Change>, StoreError> {
        self.bounded(self.try_numbered_after(after, limit)).await
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
        let mut idle_poll = WAIT_POLL;
        loop {
            let local = *stamped.borrow_and_update();
            if local > after.get() {
                return Ok(FeedPos::new(local));
            }
            let head = self.bounded(self.try_head()).await?;
            if head > after || tokio::time::Instant::now() >= deadline {
                return Ok(head);
            }
            // This node's stamper announces every stamp; otherwise the head is polled, less
            // often the longer it stands still (a caller that got news calls again and
            // starts over at `WAIT_POLL`).
            let poll = if self.feed.leading.load(Ordering::Relaxed) {
                WAIT_POLL * 10
            } else {
                let poll = idle_poll;
                idle_poll = (idle_poll * 2).min(WAIT_POLL_IDLE);
                poll
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
    // The head as this stamper left it. Nobody else numbers while it holds the lock, so
    // it reads the head from the table only after taking the lock and after a pass whose
    // outcome it does not know (`None` then).
    let mut head: Option<u64> = None;
    let mut poll = POLL;
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
                    head = None;
                    feed.leading.store(true, Ordering::Relaxed);
                    continue;
                }
                Ok(Ok(false)) => {}
                Ok(Err(_)) | Err(_) => own = None,
            }
            tokio::time::sleep(LEAD_RETRY).await;
            continue;
        }
        match tokio::time::timeout(call_timeout, stamp(conn, &feed, &mut head)).await {
            Ok(Ok(0)) => poll = (poll * 2).min(POLL_IDLE),
            Ok(Ok(count)) => {
                poll = POLL;
                if count >= STAMP_BATCH {
                    continue;
                }
                // Commits arriving meanwhile are numbered together by the next pass (their
                // wake-ups wait as one permit of `wake`).
                tokio::time::sleep(GATHER).await;
            }
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
            () = tokio::time::sleep(poll) => {}
        }
    }
    if let Some(mut conn) = own {
        if feed.leading.load(Ordering::Relaxed) {
            // What committed before the store closed is numbered now rather than at the
            // next start.
            while let Ok(Ok(count)) =
                tokio::time::timeout(call_timeout, stamp(&mut conn, &feed, &mut head)).await
            {
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

/// The head as the table says: [`HEAD_ONLY_SQL`].
async fn read_head(conn: &mut MySqlConnection) -> Outcome<u64> {
    let head: i64 = sqlx::query_scalar(HEAD_ONLY_SQL)
        .fetch_one(&mut *conn)
        .await?;
    Ok(position(head)?.get())
}

/// One pass of the stamper: numbers up to [`STAMP_BATCH`] committed unstamped entries, in
/// id order, `head + 1, …`, with one autocommit statement ([`numbering_sql`]); `head` is
/// the stamper's (read from the table when unknown, unknown while the statement is out).
/// How many it numbered (0 when none were waiting).
async fn stamp(conn: &mut MySqlConnection, feed: &Feed, head: &mut Option<u64>) -> Outcome<usize> {
    let pass = feed.begun.fetch_add(1, Ordering::SeqCst) + 1;
    // A plain READ COMMITTED read: committed rows only (an entry whose transaction is
    // still open is numbered by a later pass, above whatever this one numbers). The
    // UPDATE goes by primary key, so that it locks exactly these rows and never waits for
    // a writer's uncommitted entry (the range `pos IS NULL` holds those too).
    let ids: Vec<u64> = sqlx::query_scalar(
        "SELECT id FROM CHANGE_LOG FORCE INDEX (uq_change_log_pos) \
         WHERE pos IS NULL ORDER BY id LIMIT ?",
    )
    .bind(i64::try_from(STAMP_BATCH).unwrap_or(i64::MAX))
    .fetch_all(&mut *conn)
    .await?;
    if ids.is_empty() {
        feed.drained.send_replace(pass);
        return Ok(0);
    }
    let from = match *head {
        Some(known) => known,
        None => read_head(conn).await?,
    };
    // Until the statement answers, whether it committed is unknown (a connection lost
    // meanwhile): the table says, next time.
    *head = None;
    let numbered = conn
        .execute(numbering_sql(&ids, from).as_str())
        .await?
        .rows_affected();
    let count = ids.len();
    if numbered != count as u64 {
        // The guard makes the statement number all of them or none: none, so the head
        // moved behind this stamper's back (only one stamper runs at a time: not
        // expected). The next pass reads the head again.
        tracing::warn!(
            numbered,
            count,
            "change feed: the head moved under the stamper; reading it again"
        );
        return Err(Failure::Store(StoreError::Unavailable(
            "the change feed's head moved under its stamper".into(),
        )));
    }
    let to = from + count as u64;
    *head = Some(to);
    feed.stamps.fetch_add(1, Ordering::Relaxed);
    feed.numbered.fetch_add(count as u64, Ordering::Relaxed);
    feed.stamped.send_replace(to);
    if count < STAMP_BATCH {
        feed.drained.send_replace(pass);
    }
    Ok(count)
}

/// The autocommit statement that numbers `ids` (ascending, unstamped when read)
/// `head + 1, …` in their order: all of them, or none when an entry was numbered above
/// `head` meanwhile (the guard on `MAX(pos)`, read at the end of `uq_change_log_pos`) or
/// one of them is no longer unstamped. Each run of consecutive ids is one `CASE` branch
/// (ids are mostly consecutive: one or a few branches). The numbers are inlined, so the
/// text protocol sends it in one round trip (bound, each batch size would be a statement
/// of its own to prepare); they are integers this module computed.
fn numbering_sql(ids: &[u64], head: u64) -> String {
    use std::fmt::Write as _;
    let mut sql = String::with_capacity(128 + ids.len() * 8);
    sql.push_str("UPDATE CHANGE_LOG FORCE INDEX (PRIMARY) SET pos = CASE");
    let mut next = head + 1;
    let mut start = 0;
    while start < ids.len() {
        let mut end = start;
        while end + 1 < ids.len() && ids[end + 1] == ids[end] + 1 {
            end += 1;
        }
        // `id` is unsigned: the offset may be negative.
        let offset = i128::from(next) - i128::from(ids[start]);
        let _ = write!(
            sql,
            " WHEN id <= {} THEN CAST(id AS SIGNED) + {offset}",
            ids[end]
        );
        next += (end - start + 1) as u64;
        start = end + 1;
    }
    sql.push_str(" END WHERE id IN (");
    for (index, id) in ids.iter().enumerate() {
        if index > 0 {
            sql.push(',');
        }
        let _ = write!(sql, "{id}");
    }
    let _ = write!(
        sql,
        ") AND pos IS NULL AND (SELECT COALESCE(MAX(pos), 0) FROM CHANGE_LOG) <= {head}"
    );
    sql
}

#[cfg(test)]
mod tests {
    use super::numbering_sql;

    #[test]
    fn runs_of_consecutive_ids_are_one_branch_each() {
        assert_eq!(
            numbering_sql(&[3, 4, 5, 9, 11, 12], 10),
            "UPDATE CHANGE_LOG FORCE INDEX (PRIMARY) SET pos = CASE \
             WHEN id <= 5 THEN CAST(id AS SIGNED) + 8 \
             WHEN id <= 9 THEN CAST(id AS SIGNED) + 5 \
             WHEN id <= 12 THEN CAST(id AS SIGNED) + 4 \
             END WHERE id IN (3,4,5,9,11,12) AND pos IS NULL \
             AND (SELECT COALESCE(MAX(pos), 0) FROM CHANGE_LOG) <= 10"
        );
        assert_eq!(
            numbering_sql(&[100], 0),
            "UPDATE CHANGE_LOG FORCE INDEX (PRIMARY) SET pos = CASE \
             WHEN id <= 100 THEN CAST(id AS SIGNED) + -99 \
             END WHERE id IN (100) AND pos IS NULL \
             AND (SELECT COALESCE(MAX(pos), 0) FROM CHANGE_LOG) <= 0"
        );
    }
}
