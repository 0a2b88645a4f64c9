//! The change feed on SQLite ([`ChangeFeed`]): the `CHANGE_LOG` table
//! (`migrations/20260101000011_change_log.sql`), one row per change, inserted by each write
//! use case with [`record`] in its own write request, so in the same transaction as the
//! change.
//!
//! Positions are the table's `INTEGER PRIMARY KEY AUTOINCREMENT` rowid. That is enough here,
//! without the stamper the MySQL adapter needs: every write goes through the one writer
//! ([`crate::writer`]), which runs one transaction at a time on the only write connection,
//! so rows are numbered in commit order. A batch's rows become visible at its `COMMIT`, all
//! together and after every earlier batch's; a request rolled back to its savepoint (or a
//! batch rolled back) takes its numbers back with it (`sqlite_sequence` is a table of the
//! same transaction). A reader's snapshot therefore holds every position up to the head it
//! sees, and no later commit can be numbered at or below it.
//!
//! The head is `sqlite_sequence`'s value for `CHANGE_LOG` (the newest number ever handed
//! out, kept by `AUTOINCREMENT` also when a purge deletes every row). After each commit the
//! writer publishes the head it committed on a `watch` channel, which [`ChangeFeed::wait_past`]
//! waits on.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use chat_domain::{
    Change, ChangeKind, ConversationId, FeedId, FeedPos, MembershipMove, MembershipWindow, Role,
    Timestamp, UserId,
};
use chat_ports::{ChangeFeed, FeedBounds, Purged, ReaderChanges, StoreError};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};

use crate::SqliteStore;
use crate::error::{Failure, Outcome};
use crate::rows::{self, db_time, from_db_time, placeholders};

/// The head: the newest position handed out (0 before the first change). Binds nothing.
pub(crate) const HEAD_SQL: &str =
    "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'CHANGE_LOG'), 0)";

/// The stored code of each kind (see the migration's table of codes).
mod code {
    pub(super) const MESSAGE_CREATED: i64 = 1;
    pub(super) const MESSAGE_UPDATED: i64 = 2;
    pub(super) const MESSAGE_DELETED: i64 = 3;
    pub(super) const REACTION_ADDED: i64 = 4;
    pub(super) const REACTION_REMOVED: i64 = 5;
    pub(super) const CONVERSATION_READ: i64 = 6;
    pub(super) const CONVERSATION_CREATED: i64 = 7;
    pub(super) const CONVERSATION_UPDATED: i64 = 8;
    pub(super) const PARTICIPANT_ADDED: i64 = 9;
    pub(super) const PARTICIPANT_REMOVED: i64 = 10;
    pub(super) const PARTICIPANT_UPDATED: i64 = 11;
}

/// The columns of one entry, apart from its position and time.
#[derive(Default)]
struct Columns<'a> {
    kind: i64,
    message_id: Option<String>,
    user_id: Option<i64>,
    seq: Option<i64>,
    role: Option<&'static str>,
    emoji: Option<&'a str>,
    read_at: Option<i64>,
}

fn columns(kind: &ChangeKind) -> Columns<'_> {
    let message = |kind, id: &chat_domain::MessageId| Columns {
        kind,
        message_id: Some(id.to_string()),
        ..Columns::default()
    };
    match kind {
        ChangeKind::MessageCreated { message_id } => message(code::MESSAGE_CREATED, message_id),
        ChangeKind::MessageUpdated { message_id } => message(code::MESSAGE_UPDATED, message_id),
        ChangeKind::MessageDeleted { message_id, seq } => Columns {
            seq: Some(seq.get()),
            ..message(code::MESSAGE_DELETED, message_id)
        },
        ChangeKind::ReactionAdded {
            message_id,
            user_id,
            emoji,
        } => Columns {
            user_id: Some(user_id.get()),
            emoji: Some(emoji),
            ..message(code::REACTION_ADDED, message_id)
        },
        ChangeKind::ReactionRemoved {
            message_id,
            user_id,
            emoji,
        } => Columns {
            user_id: Some(user_id.get()),
            emoji: Some(emoji),
            ..message(code::REACTION_REMOVED, message_id)
        },
        ChangeKind::ConversationRead {
            user_id,
            last_read_seq,
            last_read_at,
        } => Columns {
            kind: code::CONVERSATION_READ,
            user_id: Some(user_id.get()),
            seq: Some(last_read_seq.get()),
            read_at: Some(db_time(*last_read_at)),
            ..Columns::default()
        },
        ChangeKind::ConversationCreated => Columns {
            kind: code::CONVERSATION_CREATED,
            ..Columns::default()
        },
        ChangeKind::ConversationUpdated => Columns {
            kind: code::CONVERSATION_UPDATED,
            ..Columns::default()
        },
        ChangeKind::ParticipantAdded { user_id, role } => Columns {
            kind: code::PARTICIPANT_ADDED,
            user_id: Some(user_id.get()),
            role: Some(role.as_str()),
            ..Columns::default()
        },
        ChangeKind::ParticipantRemoved { user_id } => Columns {
            kind: code::PARTICIPANT_REMOVED,
            user_id: Some(user_id.get()),
            ..Columns::default()
        },
        ChangeKind::ParticipantUpdated { user_id, role } => Columns {
            kind: code::PARTICIPANT_UPDATED,
            user_id: Some(user_id.get()),
            role: Some(role.as_str()),
            ..Columns::default()
        },
    }
}

/// Appends one change of `conversation` to the feed, on the writer's connection (inside
/// the use case's request, so it commits or rolls back with the change).
pub(crate) async fn record(
    conn: &mut SqliteConnection,
    conversation: ConversationId,
    kind: &ChangeKind,
) -> Result<(), sqlx::Error> {
    let c = columns(kind);
    sqlx::query(
        "INSERT INTO CHANGE_LOG (conversation_id, kind, message_id, user_id, seq, role, emoji, \
         read_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(conversation.to_string())
    .bind(c.kind)
    .bind(c.message_id)
    .bind(c.user_id)
    .bind(c.seq)
    .bind(c.role)
    .bind(c.emoji)
    .bind(c.read_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The columns [`change`] reads, from alias `l`.
const ENTRY_COLUMNS: &str = "l.pos, l.conversation_id, l.kind, l.message_id, l.user_id, l.seq, \
     l.role, l.emoji, l.read_at, l.created_at";

/// Decodes [`ENTRY_COLUMNS`].
fn change(row: &SqliteRow) -> Outcome<Change> {
    let corrupt = || Failure::corrupt("change log entry");
    let message_id = || -> Outcome<chat_domain::MessageId> {
        let id: Option<String> = row.try_get("message_id")?;
        rows::message_id(&id.ok_or_else(corrupt)?)
    };
    let user_id = || -> Outcome<UserId> {
        let id: Option<i64> = row.try_get("user_id")?;
        rows::user_id(id.ok_or_else(corrupt)?)
    };
    let seq = || -> Outcome<chat_domain::Seq> {
        let seq: Option<i64> = row.try_get("seq")?;
        rows::seq(seq.ok_or_else(corrupt)?)
    };
    let role = || -> Outcome<Role> {
        let role: Option<String> = row.try_get("role")?;
        Role::parse(&role.ok_or_else(corrupt)?).map_err(|_| corrupt())
    };
    let emoji = || -> Outcome<String> {
        let emoji: Option<String> = row.try_get("emoji")?;
        emoji.ok_or_else(corrupt)
    };
    let kind = match row.try_get::<i64, _>("kind")? {
        code::MESSAGE_CREATED => ChangeKind::MessageCreated {
            message_id: message_id()?,
        },
        code::MESSAGE_UPDATED => ChangeKind::MessageUpdated {
            message_id: message_id()?,
        },
        code::MESSAGE_DELETED => ChangeKind::MessageDeleted {
            message_id: message_id()?,
            seq: seq()?,
        },
        code::REACTION_ADDED => ChangeKind::ReactionAdded {
            message_id: message_id()?,
            user_id: user_id()?,
            emoji: emoji()?,
        },
        code::REACTION_REMOVED => ChangeKind::ReactionRemoved {
            message_id: message_id()?,
            user_id: user_id()?,
            emoji: emoji()?,
        },
        code::CONVERSATION_READ => {
            let read_at: Option<i64> = row.try_get("read_at")?;
            ChangeKind::ConversationRead {
                user_id: user_id()?,
                last_read_seq: seq()?,
                last_read_at: from_db_time(read_at.ok_or_else(corrupt)?)?,
            }
        }
        code::CONVERSATION_CREATED => ChangeKind::ConversationCreated,
        code::CONVERSATION_UPDATED => ChangeKind::ConversationUpdated,
        code::PARTICIPANT_ADDED => ChangeKind::ParticipantAdded {
            user_id: user_id()?,
            role: role()?,
        },
        code::PARTICIPANT_REMOVED => ChangeKind::ParticipantRemoved {
            user_id: user_id()?,
        },
        code::PARTICIPANT_UPDATED => ChangeKind::ParticipantUpdated {
            user_id: user_id()?,
            role: role()?,
        },
        _ => return Err(corrupt()),
    };
    Ok(Change {
        pos: position(row.try_get("pos")?)?,
        conversation_id: rows::conversation_id(&row.try_get::<String, _>("conversation_id")?)?,
        at: from_db_time(row.try_get("created_at")?)?,
        kind,
    })
}

fn position(value: i64) -> Outcome<FeedPos> {
    FeedPos::from_i64(value).map_err(|_| Failure::corrupt("feed position"))
}

/// A page size as an SQL `LIMIT`.
fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// The head, on any connection.
async fn head(conn: &mut SqliteConnection) -> Outcome<FeedPos> {
    position(sqlx::query_scalar(HEAD_SQL).fetch_one(&mut *conn).await?)
}

/// A reader's changes in a span of positions: the entries of every conversation the reader
/// has a participant row in (left or not), oldest first. The reader's memberships (a range
/// of `idx_participants_badge`) drive the loop, each joined to its conversation's entries in
/// the span (a range of `idx_change_log_conversation`); the rows found are then sorted by
/// position. `CROSS JOIN` keeps that order of the loops: the other order scans every
/// conversation's entries in the span. Binds: reader, after (excluded), up to (included),
/// limit.
pub(crate) fn reader_changes_sql() -> String {
    format!(
        "SELECT {ENTRY_COLUMNS} FROM CONVERSATION_PARTICIPANTS p CROSS JOIN CHANGE_LOG l \
         WHERE p.user_id = ? AND l.conversation_id = p.conversation_id \
           AND l.pos > ? AND l.pos <= ? \
         ORDER BY l.pos LIMIT ?"
    )
}

/// The first span of positions [`reader_changes_sql`] reads after a reader's position; each
/// further one is twice as wide. A reader close to the head (the usual sync) is answered
/// in one query; one far behind reads and sorts about a page's worth of rows per span
/// instead of everything it has missed, for every page.
const FIRST_SPAN: i64 = 4096;

/// The reader's windows over `n` conversations: whether their row is active, and their first
/// `participant.added` / `participant.removed` after the position (a range of the partial
/// index `idx_change_log_membership`). Binds: after, reader, the `n` conversations.
pub(crate) fn windows_sql(n: usize) -> String {
    format!(
        "SELECT p.conversation_id, p.left_at IS NULL AS active_now, \
           (SELECT l.kind FROM CHANGE_LOG l WHERE l.user_id = p.user_id \
              AND l.conversation_id = p.conversation_id AND l.pos > ? AND l.kind IN (9, 10) \
              ORDER BY l.pos LIMIT 1) AS first_move \
         FROM CONVERSATION_PARTICIPANTS p WHERE p.user_id = ? AND p.conversation_id IN ({})",
        placeholders(n)
    )
}

/// The reader's windows for `conversations` (each of which they have a row in), on the
/// read transaction of the page.
async fn windows(
    conn: &mut SqliteConnection,
    reader: UserId,
    after: FeedPos,
    conversations: &[ConversationId],
) -> Outcome<Vec<MembershipWindow>> {
    if conversations.is_empty() {
        return Ok(Vec::new());
    }
    let sql = windows_sql(conversations.len());
    let mut query = sqlx::query(&sql).bind(after.as_i64()).bind(reader.get());
    for id in conversations {
        query = query.bind(id.to_string());
    }
    let found = query.fetch_all(&mut *conn).await?;
    let mut by_id = HashMap::with_capacity(found.len());
    for row in &found {
        let id = rows::conversation_id(&row.try_get::<String, _>("conversation_id")?)?;
        let first_move = match row.try_get::<Option<i64>, _>("first_move")? {
            None => None,
            Some(code::PARTICIPANT_ADDED) => Some(MembershipMove::Joined),
            Some(code::PARTICIPANT_REMOVED) => Some(MembershipMove::Left),
            Some(_) => return Err(Failure::corrupt("membership move")),
        };
        by_id.insert(
            id,
            MembershipWindow {
                conversation_id: id,
                active_now: row.try_get("active_now")?,
                first_move_after: first_move,
            },
        );
    }
    // In the page's order of first appearance; every conversation of the page has a row.
    conversations
        .iter()
        .map(|id| {
            by_id
                .remove(id)
                .ok_or_else(|| Failure::corrupt("membership of a change"))
        })
        .collect()
}

/// One purge step, on the writer's connection: raises the floor to the newest entry
/// committed before `cutoff`, then deletes at most `batch` entries at or below the floor,
/// oldest first.
///
/// The floor is found by bisection over the positions above it, a few rowid lookups
/// whatever the size of the log: above the floor nothing is ever deleted, so every position
/// up to the head is there, and entries are numbered in commit order, so their times only
/// grow (to the second; a wall clock stepped back makes the boundary approximate, never the
/// floor lower).
async fn purge_step(conn: &mut SqliteConnection, cutoff: i64, batch: usize) -> Outcome<Purged> {
    let row = sqlx::query(&format!(
        "SELECT floor, ({HEAD_SQL}) AS head FROM CHANGE_FEED WHERE id = 1"
    ))
    .fetch_one(&mut *conn)
    .await?;
    let floor: i64 = row.try_get("floor")?;
    let head: i64 = row.try_get("head")?;
    // `old` is at or below the boundary, `young` above it.
    let (mut old, mut young) = (floor, head + 1);
    while young - old > 1 {
        let mid = old + (young - old) / 2;
        let at: Option<i64> = sqlx::query_scalar("SELECT created_at FROM CHANGE_LOG WHERE pos = ?")
            .bind(mid)
            .fetch_optional(&mut *conn)
            .await?;
        if at.is_none_or(|at| at < cutoff) {
            old = mid;
        } else {
            young = mid;
        }
    }
    if old > floor {
        sqlx::query("UPDATE CHANGE_FEED SET floor = MAX(floor, ?) WHERE id = 1")
            .bind(old)
            .execute(&mut *conn)
            .await?;
    }
    let floor = old.max(floor);
    let deleted = sqlx::query(
        "DELETE FROM CHANGE_LOG WHERE pos IN \
           (SELECT pos FROM CHANGE_LOG WHERE pos <= ? ORDER BY pos LIMIT ?)",
    )
    .bind(floor)
    .bind(sql_limit(batch))
    .execute(&mut *conn)
    .await?
    .rows_affected();
    let left_below: Option<i64> =
        sqlx::query_scalar("SELECT pos FROM CHANGE_LOG WHERE pos <= ? LIMIT 1")
            .bind(floor)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(Purged {
        floor: position(floor)?,
        deleted,
        more: left_below.is_some(),
    })
}

impl SqliteStore {
    async fn try_bounds(&self) -> Outcome<FeedBounds> {
        let row = sqlx::query(&format!(
            "SELECT feed_id, floor, ({HEAD_SQL}) AS head FROM CHANGE_FEED WHERE id = 1"
        ))
        .fetch_one(self.read_pool())
        .await?;
        let id: Vec<u8> = row.try_get("feed_id")?;
        let id: [u8; 16] = id
            .try_into()
            .map_err(|_| Failure::corrupt("feed identity"))?;
        Ok(FeedBounds {
            feed_id: FeedId::from_bytes(id),
            floor: position(row.try_get("floor")?)?,
            head: position(row.try_get("head")?)?,
        })
    }

    async fn try_changes_after(&self, after: FeedPos, limit: usize) -> Outcome<Vec<Change>> {
        let rows = sqlx::query(&format!(
            "SELECT {ENTRY_COLUMNS} FROM CHANGE_LOG l WHERE l.pos > ? ORDER BY l.pos LIMIT ?"
        ))
        .bind(after.as_i64())
        .bind(sql_limit(limit))
        .fetch_all(self.read_pool())
        .await?;
        rows.iter().map(change).collect()
    }

    async fn try_reader_changes(
        &self,
        reader: UserId,
        after: FeedPos,
        limit: usize,
    ) -> Outcome<ReaderChanges> {
        // One read transaction: the head, the page and the windows from one snapshot.
        let mut tx = self.read_pool().begin().await?;
        let head = head(&mut tx).await?;
        let sql = reader_changes_sql();
        let (from, top) = (after.as_i64(), head.as_i64());
        let mut span = FIRST_SPAN.max(sql_limit(limit).saturating_mul(4));
        let found = loop {
            let up_to = from.saturating_add(span).min(top);
            let found = sqlx::query(&sql)
                .bind(reader.get())
                .bind(from)
                .bind(up_to)
                .bind(sql_limit(limit))
                .fetch_all(&mut *tx)
                .await?;
            // A full page, or the head reached: the page is the first `limit` after `after`.
            if found.len() >= limit || up_to >= top {
                break found;
            }
            span = span.saturating_mul(2);
        };
        let changes = found.iter().map(change).collect::<Outcome<Vec<_>>>()?;
        let mut conversations: Vec<ConversationId> = Vec::new();
        for c in &changes {
            if !conversations.contains(&c.conversation_id) {
                conversations.push(c.conversation_id);
            }
        }
        let windows = windows(&mut tx, reader, after, &conversations).await?;
        tx.commit().await?;
        Ok(ReaderChanges {
            changes,
            windows,
            head,
        })
    }

    async fn try_head(&self) -> Outcome<FeedPos> {
        let mut conn = self.read_pool().acquire().await?;
        head(&mut conn).await
    }
}

#[async_trait]
impl ChangeFeed for SqliteStore {
    async fn feed_bounds(&self) -> Result<FeedBounds, StoreError> {
        self.try_bounds().await.map_err(Failure::into_store)
    }

    async fn changes_after(&self, after: FeedPos, limit: usize) -> Result<Vec<Change>, StoreError> {
        self.try_changes_after(after, limit)
            .await
            .map_err(Failure::into_store)
    }

    async fn reader_changes(
        &self,
        reader: UserId,
        after: FeedPos,
        limit: usize,
    ) -> Result<ReaderChanges, StoreError> {
        self.try_reader_changes(reader, after, limit)
            .await
            .map_err(Failure::into_store)
    }

    async fn wait_past(&self, after: FeedPos, timeout: Duration) -> Result<FeedPos, StoreError> {
        let deadline = tokio::time::Instant::now() + timeout;
        // Subscribed before the head is read: a commit in between still wakes us.
        let mut committed = self.committed_heads();
        let mut head = self.try_head().await.map_err(Failure::into_store)?;
        loop {
            head = head.max(*committed.borrow_and_update());
            if head > after {
                return Ok(head);
            }
            match tokio::time::timeout_at(deadline, committed.changed()).await {
                Ok(Ok(())) => {}
                // The deadline, or the writer is gone (the store closed).
                Ok(Err(_)) | Err(_) => return Ok(head),
            }
        }
    }

    async fn purge(&self, older_than: Timestamp, batch: usize) -> Result<Purged, StoreError> {
        let cutoff = db_time(older_than);
        self.write(move |conn| Box::pin(async move { purge_step(conn, cutoff, batch).await }))
            .await
    }
}
