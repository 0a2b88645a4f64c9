//! [`ReadStateStore`] on MySQL: forward-only read markers under the participant's row lock,
//! and the inbox and unread badge, which read each unread count as the difference of the
//! conversation's `counted_total` and the membership's `unread_base` and order the inbox by
//! the conversations' `activity_key`, both read from the narrow `CONVERSATION_COUNTERS`
//! (see docs/schema.md).

use async_trait::async_trait;
use chat_crypto::MessageCipher;
use chat_domain::{ChangeKind, ConversationId, MessageId, Participant, Seq, Timestamp, UserId};
use chat_ports::{
    ArchivedFilter, InboxCursor, InboxItem, InboxPage, InboxQuery, ReadState, ReadStateStore,
    StoreError, UnreadConversation, UnreadSummary,
};
use sqlx::{MySqlConnection, Row};

use crate::MySqlStore;
use crate::change_log::{self, NewChange};
use crate::error::{Failure, Outcome};
use crate::rows::{
    self, CONVERSATION_COLUMNS, PARTICIPANT_COLUMNS, UNREAD_COUNT_SQL, count, db_time,
    participants_of,
};
use crate::writes::{ReceiptRange, record_moves};

/// Which rows of the caller's memberships the inbox query returns.
enum InboxScope {
    /// A page.
    Page(InboxQuery),
    /// One conversation.
    One(ConversationId),
}

/// The inbox items of a scope, before the page's cursor is known.
struct InboxRows {
    /// The items, most recent activity first.
    items: Vec<InboxItem>,
    /// Whether more items lie beyond the page.
    has_more: bool,
    /// The activity key of the page's last item.
    last_key: Option<i64>,
}

/// The key of `CONVERSATION_COUNTERS` for a membership's `conversation_id`: the same text in
/// `ascii_bin`, so that the probe compares bytes (see docs/schema.md, "The conversation
/// counters").
const COUNTERS_KEY: &str =
    "CAST(p.conversation_id AS CHAR(36) CHARACTER SET ascii) COLLATE ascii_bin";

/// The inbox query: first the page's conversations alone (a derived table: the caller's
/// active memberships, a range of their index, each joined by key to its row of the narrow
/// `CONVERSATION_COUNTERS`, sorted by `activity_key` — exact commit order, see
/// docs/schema.md — and cut at the page size), then, for those rows only, the conversation
/// and membership columns, the unread count (`counted_total - unread_base`) and the newest
/// live message (a subquery per page row). Sorting only narrow rows keeps the per-row
/// subquery off the caller's other memberships. `filter` narrows the memberships (aliases
/// `p` and `k`). Binds: user, the filter's, limit, user.
pub(crate) fn inbox_sql(filter: &str) -> String {
    format!(
        "SELECT {CONVERSATION_COLUMNS}, {PARTICIPANT_COLUMNS}, \
           page.page_total - p.unread_base AS unread_count, page.page_key AS activity_key, \
           (SELECT m.id FROM MESSAGES m WHERE m.conversation_id = p.conversation_id \
              AND m.seq IS NOT NULL AND m.deleted_at IS NULL \
              ORDER BY m.seq DESC LIMIT 1) AS last_message_id \
         FROM (SELECT k.conversation_id AS page_id, k.activity_key AS page_key, \
                 k.counted_total AS page_total \
               FROM CONVERSATION_PARTICIPANTS p \
               JOIN CONVERSATION_COUNTERS k ON k.conversation_id = {COUNTERS_KEY} \
               WHERE p.user_id = ? AND p.left_at IS NULL {filter} \
               ORDER BY k.activity_key DESC, k.conversation_id DESC LIMIT ?) page \
         JOIN CONVERSATIONS c ON c.id = page.page_id \
         JOIN CONVERSATION_PARTICIPANTS p ON p.conversation_id = page.page_id AND p.user_id = ? \
         ORDER BY page.page_key DESC, page.page_id DESC"
    )
}

/// The unread badge query: the caller's active memberships with unread messages, each a
/// row of `idx_participants_badge` joined by key to its conversation's row of the narrow
/// `CONVERSATION_COUNTERS` (no message is counted, no `CONVERSATIONS` row is read).
pub(crate) fn unread_summary_sql() -> String {
    format!(
        "SELECT p.conversation_id, p.is_muted, k.counted_total - p.unread_base AS unread_count \
         FROM CONVERSATION_PARTICIPANTS p \
         JOIN CONVERSATION_COUNTERS k ON k.conversation_id = {COUNTERS_KEY} \
         WHERE p.user_id = ? AND p.left_at IS NULL AND k.counted_total > p.unread_base"
    )
}

/// An activity key (microseconds) as the cursor's instant.
fn key_instant(key: i64) -> Timestamp {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(key) * 1_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// A cursor's instant as an activity key (microseconds).
fn instant_key(at: Timestamp) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX)
}

impl MySqlStore {
    async fn try_mark_read(
        &self,
        conversation: ConversationId,
        user: UserId,
        up_to: Option<Seq>,
        at: Timestamp,
    ) -> Outcome<ReadState> {
        let at = db_time(at);
        let mut tx = self.pool.begin().await?;
        // Locks the participant row only; the conversation's last_seq is a plain read so
        // that marking read never waits for a send.
        let row = sqlx::query(
            "SELECT p.last_read_seq, p.last_read_at, p.unread_base, \
               (SELECT c.last_seq FROM CONVERSATIONS c WHERE c.id = p.conversation_id) AS last_seq \
             FROM CONVERSATION_PARTICIPANTS p \
             WHERE p.conversation_id = ? AND p.user_id = ? AND p.left_at IS NULL FOR UPDATE",
        )
        .bind(conversation.to_string())
        .bind(user.get())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let current: i64 = row.try_get("last_read_seq")?;
        let stored_base: i64 = row.try_get("unread_base")?;
        let mut last_read_at: Option<time::OffsetDateTime> = row.try_get("last_read_at")?;
        let newest: i64 = row.try_get::<Option<i64>, _>("last_seq")?.unwrap_or(0);
        let target = up_to.map_or(newest, |s| s.get().min(newest));
        let moved = target > current;
        if moved {
            let range = ReceiptRange {
                conversation,
                reader: user.get(),
                after: current,
                up_to: target,
                at,
            };
            record_moves(&mut tx, &[range]).await?;
        }
        let marker = target.max(current);
        // The exact count above the marker (a range of idx_messages_unread; both bounds are
        // constants) and the conversation's countable total, in one statement: one READ
        // COMMITTED snapshot, so the base is consistent whatever commits meanwhile. It runs
        // while we hold the row lock: a writer that must change this base (our own send, a
        // delete at or below the marker) waits for us and applies its change on top; a send
        // of others or a delete above the marker changes total and count alike.
        let counts = sqlx::query(&format!(
            "SELECT (SELECT c.counted_total FROM CONVERSATIONS c WHERE c.id = ?) AS total, \
               ({UNREAD_COUNT_SQL}) AS unread"
        ))
        .bind(conversation.to_string())
        .bind(conversation.to_string())
        .bind(marker)
        .bind(user.get())
        .fetch_one(&mut *tx)
        .await?;
        let total: i64 = counts.try_get::<Option<i64>, _>("total")?.unwrap_or(0);
        let unread: i64 = counts.try_get("unread")?;
        let base = total - unread;
        if moved {
            sqlx::query(
                "UPDATE CONVERSATION_PARTICIPANTS \
                 SET last_read_seq = ?, last_read_at = ?, unread_count = ?, unread_base = ? \
                 WHERE conversation_id = ? AND user_id = ?",
            )
            .bind(target)
            .bind(at)
            .bind(unread)
            .bind(base)
            .bind(conversation.to_string())
            .bind(user.get())
            .execute(&mut *tx)
            .await?;
            let read = ChangeKind::ConversationRead {
                user_id: user,
                last_read_seq: Seq::new(target).map_err(|_| Failure::corrupt("seq"))?,
                last_read_at: at,
            };
            change_log::record(&mut tx, &[NewChange::new(conversation, read)]).await?;
            last_read_at = Some(at);
        } else if base != stored_base {
            // Not expected: every writer keeps the base exact. Repaired here, logged so
            // that a writer that does not is noticed.
            tracing::warn!(
                stored_base,
                base,
                "unread base differed from the count; repaired"
            );
            sqlx::query(
                "UPDATE CONVERSATION_PARTICIPANTS SET unread_count = ?, unread_base = ? \
                 WHERE conversation_id = ? AND user_id = ?",
            )
            .bind(unread)
            .bind(base)
            .bind(conversation.to_string())
            .bind(user.get())
            .execute(&mut *tx)
            .await?;
        }
        // Who hears of the move: the active participants as this transaction last sees
        // them. The conversation row is not locked, so that marking read never waits for
        // a send; a read event carries no content.
        let recipients = crate::guard::active_user_ids(&mut tx, conversation).await?;
        tx.commit().await?;
        Ok(ReadState {
            last_read_seq: Seq::new(marker).map_err(|_| Failure::corrupt("seq"))?,
            last_read_at,
            unread_count: count(unread),
            moved,
            recipients,
        })
    }

    async fn try_set_muted(
        &self,
        conversation: ConversationId,
        user: UserId,
        muted: bool,
    ) -> Outcome<Participant> {
        let mut tx = self.pool.begin().await?;
        let matched = sqlx::query(
            "UPDATE CONVERSATION_PARTICIPANTS SET is_muted = ? \
             WHERE conversation_id = ? AND user_id = ? AND left_at IS NULL",
        )
        .bind(muted)
        .bind(conversation.to_string())
        .bind(user.get())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if matched == 0 {
            return Err(StoreError::NotFound.into());
        }
        let sql = format!(
            "SELECT {PARTICIPANT_COLUMNS} FROM CONVERSATION_PARTICIPANTS p \
             WHERE p.conversation_id = ? AND p.user_id = ?"
        );
        let row = sqlx::query(&sql)
            .bind(conversation.to_string())
            .bind(user.get())
            .fetch_one(&mut *tx)
            .await?;
        let participant = rows::participant(&row)?;
        tx.commit().await?;
        Ok(participant)
    }

    /// The caller's memberships in scope, with unread counts and newest live message, then
    /// their participants and last messages in one query each.
    async fn inbox_items(
        conn: &mut MySqlConnection,
        cipher: &MessageCipher,
        user: UserId,
        scope: &InboxScope,
    ) -> Outcome<InboxRows> {
        let (filter, limit) = match scope {
            InboxScope::One(_) => ("AND p.conversation_id = ?".to_owned(), 1),
            InboxScope::Page(query) => {
                let archived = match query.archived {
                    ArchivedFilter::Active => "AND NOT k.is_archived",
                    ArchivedFilter::Archived => "AND k.is_archived",
                    ArchivedFilter::Any => "",
                };
                let cursor = if query.after.is_some() {
                    " AND (k.activity_key < ? \
                       OR (k.activity_key = ? AND k.conversation_id < ?))"
                } else {
                    ""
                };
                (format!("{archived}{cursor}"), query.limit.get() + 1)
            }
        };
        let sql = inbox_sql(&filter);
        let mut query = sqlx::query(&sql).bind(user.get());
        match scope {
            InboxScope::One(id) => query = query.bind(id.to_string()),
            InboxScope::Page(q) => {
                if let Some(after) = q.after {
                    let activity = instant_key(after.activity_at);
                    query = query
                        .bind(activity)
                        .bind(activity)
                        .bind(after.conversation_id.to_string());
                }
            }
        }
        let wanted = match scope {
            InboxScope::One(_) => 1,
            InboxScope::Page(q) => q.limit.get(),
        };
        let rows = query
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .bind(user.get())
            .fetch_all(&mut *conn)
            .await?;
        let has_more = rows.len() > wanted;
        let mut heads = Vec::with_capacity(wanted);
        let mut last_key = None;
        for row in rows.iter().take(wanted) {
            last_key = Some(row.try_get::<i64, _>("activity_key")?);
            let last: Option<String> = row.try_get("last_message_id")?;
            heads.push((
                rows::conversation(row)?,
                rows::participant(row)?,
                count(row.try_get("unread_count")?),
                last.as_deref().map(rows::message_id).transpose()?,
            ));
        }
        let ids: Vec<ConversationId> = heads.iter().map(|h| h.0.id).collect();
        let mut participants = participants_of(conn, &ids).await?;
        let last_ids: Vec<MessageId> = heads.iter().filter_map(|h| h.3).collect();
        let mut last_messages = rows::views_by_id(conn, cipher, &last_ids).await?;
        let items = heads
            .into_iter()
            .map(|(conversation, membership, unread_count, last)| InboxItem {
                details: chat_domain::ConversationDetails {
                    participants: participants.remove(&conversation.id).unwrap_or_default(),
                    conversation,
                },
                membership,
                unread_count,
                last_message: last.and_then(|id| last_messages.remove(&id)),
            })
            .collect();
        Ok(InboxRows {
            items,
            has_more,
            last_key,
        })
    }

    /// Runs `inbox_items` in a read-only REPEATABLE READ snapshot, so that its few queries
    /// see one state.
    async fn snapshot_inbox(&self, user: UserId, scope: InboxScope) -> Outcome<InboxRows> {
        let mut tx = self
            .pool
            .begin_with(
                "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ; \
                 START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY",
            )
            .await?;
        let rows = Self::inbox_items(&mut tx, &self.cipher, user, &scope).await?;
        tx.commit().await?;
        Ok(rows)
    }

    async fn try_unread_summary(&self, user: UserId) -> Outcome<UnreadSummary> {
        let sql = unread_summary_sql();
        let rows = sqlx::query(&sql)
            .bind(user.get())
            .fetch_all(&self.pool)
            .await?;
        let mut summary = UnreadSummary {
            total: 0,
            conversations: Vec::new(),
        };
        for row in &rows {
            let unread = count(row.try_get("unread_count")?);
            if unread == 0 {
                continue;
            }
            let is_muted = row.try_get::<Option<bool>, _>("is_muted")?.unwrap_or(false);
            if !is_muted {
                summary.total = summary.total.saturating_add(unread);
            }
            summary.conversations.push(UnreadConversation {
                conversation_id: rows::conversation_id(
                    &row.try_get::<String, _>("conversation_id")?,
                )?,
                unread_count: unread,
                is_muted,
            });
        }
        // In conversation order (sorted here rather than by the server: the index serves
        // the inbox's order).
        summary.conversations.sort_by_key(|c| c.conversation_id);
        Ok(summary)
    }
}

#[async_trait]
impl ReadStateStore for MySqlStore {
    async fn mark_read(
        &self,
        conversation: ConversationId,
        user: UserId,
        up_to: Option<Seq>,
        at: Timestamp,
    ) -> Result<ReadState, StoreError> {
        self.written(crate::retrying!(
            self,
            self.try_mark_read(conversation, user, up_to, at)
        ))
    }

    async fn set_muted(
        &self,
        conversation: ConversationId,
        user: UserId,
        muted: bool,
    ) -> Result<Participant, StoreError> {
        crate::retrying!(self, self.try_set_muted(conversation, user, muted))
    }

    async fn inbox_item(
        &self,
        conversation: ConversationId,
        user: UserId,
    ) -> Result<Option<InboxItem>, StoreError> {
        self.bounded(self.snapshot_inbox(user, InboxScope::One(conversation)))
            .await
            .map(|mut rows| rows.items.pop())
    }

    async fn inbox(&self, user: UserId, query: InboxQuery) -> Result<InboxPage, StoreError> {
        let InboxRows {
            items,
            has_more,
            last_key,
        } = self
            .bounded(self.snapshot_inbox(user, InboxScope::Page(query)))
            .await?;
        let next_cursor = if has_more {
            items.last().zip(last_key).map(|(item, key)| InboxCursor {
                activity_at: key_instant(key),
                conversation_id: item.details.conversation.id,
            })
        } else {
            None
        };
        Ok(InboxPage { items, next_cursor })
    }

    async fn unread_summary(&self, user: UserId) -> Result<UnreadSummary, StoreError> {
        self.bounded(self.try_unread_summary(user)).await
    }
}
