//! [`ReadStateStore`] on SQLite: forward-only read markers (on the writer), and the inbox and
//! unread badge (on the readers), which read each unread count as the conversation's
//! `counted_total` minus the membership's `unread_base` and order by `activity_key`.

use async_trait::async_trait;
use chat_crypto::MessageCipher;
use chat_domain::{
    ChangeKind, ConversationDetails, ConversationId, Participant, Seq, Timestamp, UserId,
};
use chat_ports::{
    ArchivedFilter, InboxCursor, InboxItem, InboxPage, InboxQuery, ReadState, ReadStateStore,
    StoreError, UnreadConversation, UnreadSummary,
};
use sqlx::{Row, SqliteConnection};

use crate::SqliteStore;
use crate::error::{Failure, Outcome};
use crate::rows::{
    self, CONVERSATION_COLUMNS, PARTICIPANT_COLUMNS, UNREAD_COUNT_SQL, count, db_time,
    participants_of, record_receipts, views_by_id,
};

/// Which rows of the caller's memberships the inbox query returns.
enum InboxScope {
    /// A page.
    Page(InboxQuery),
    /// One conversation.
    One(ConversationId),
}

/// The inbox query: first the page's conversations alone (a subquery: the caller's active
/// memberships, a range of `idx_participants_badge`, each joined to its conversation by
/// key, sorted by `activity_key` — exact commit order — and cut at the page size), then,
/// for those rows only, the conversation and membership columns, the unread count
/// (`counted_total - unread_base`) and the newest live message (a subquery per page row).
/// `filter` narrows the memberships (aliases `p` and `c`). Binds: user, the filter's,
/// limit, user.
pub(crate) fn inbox_sql(filter: &str) -> String {
    format!(
        "SELECT {CONVERSATION_COLUMNS}, {PARTICIPANT_COLUMNS}, \
           c.counted_total - p.unread_base AS unread_count, c.activity_key, \
           (SELECT m.id FROM MESSAGES m WHERE m.conversation_id = p.conversation_id \
              AND m.deleted_at IS NULL ORDER BY m.seq DESC LIMIT 1) AS last_message_id \
         FROM (SELECT p.conversation_id AS page_id, c.activity_key AS page_key \
               FROM CONVERSATION_PARTICIPANTS p \
               JOIN CONVERSATIONS c ON c.id = p.conversation_id \
               WHERE p.user_id = ? AND p.left_at IS NULL {filter} \
               ORDER BY c.activity_key DESC, c.id DESC LIMIT ?) page \
         JOIN CONVERSATIONS c ON c.id = page.page_id \
         JOIN CONVERSATION_PARTICIPANTS p ON p.conversation_id = page.page_id AND p.user_id = ? \
         ORDER BY page.page_key DESC, page.page_id DESC"
    )
}

/// The unread badge query: the caller's active memberships with unread messages (a range of
/// `idx_participants_badge`, each joined to its conversation's counter by key), folded into
/// one row (`id,count,muted;…`): a thousand conversations cost one row to transfer instead
/// of a thousand. Binds: user.
pub(crate) const UNREAD_SUMMARY_SQL: &str = "SELECT group_concat(\
       p.conversation_id || ',' || (c.counted_total - p.unread_base) || ',' || p.is_muted, ';') \
     FROM CONVERSATION_PARTICIPANTS p JOIN CONVERSATIONS c ON c.id = p.conversation_id \
     WHERE p.user_id = ? AND p.left_at IS NULL AND c.counted_total > p.unread_base";

/// An activity key (microseconds) as the inbox cursor's instant.
fn key_instant(key: i64) -> Timestamp {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(key) * 1_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// An inbox cursor's instant as an activity key (microseconds).
fn instant_key(at: Timestamp) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX)
}

/// One entry of the folded badge row: `conversation_id,unread_count,is_muted`.
fn badge_entry(entry: &str) -> Outcome<UnreadConversation> {
    let corrupt = || Failure::corrupt("unread summary");
    let mut parts = entry.split(',');
    let (Some(id), Some(unread), Some(muted), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(corrupt());
    };
    Ok(UnreadConversation {
        conversation_id: rows::conversation_id(id)?,
        unread_count: count(unread.parse().map_err(|_| corrupt())?),
        is_muted: muted != "0",
    })
}

/// The mark-read use case, on the writer's connection.
pub(crate) async fn mark_read(
    conn: &mut SqliteConnection,
    conversation: ConversationId,
    user: UserId,
    up_to: Option<Seq>,
    at: Timestamp,
) -> Outcome<ReadState> {
    let at_db = db_time(at);
    let row = sqlx::query(
        "SELECT p.last_read_seq, p.last_read_at, p.unread_base, c.last_seq, c.counted_total \
         FROM CONVERSATION_PARTICIPANTS p JOIN CONVERSATIONS c ON c.id = p.conversation_id \
         WHERE p.conversation_id = ? AND p.user_id = ? AND p.left_at IS NULL",
    )
    .bind(conversation.to_string())
    .bind(user.get())
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(StoreError::NotFound)?;
    let current: i64 = row.try_get("last_read_seq")?;
    let stored_base: i64 = row.try_get("unread_base")?;
    // One writer: nothing changes the total while this runs.
    let total: i64 = row.try_get("counted_total")?;
    let mut last_read_at = rows::time_opt(&row, "last_read_at")?;
    let newest: i64 = row.try_get("last_seq")?;
    let target = up_to.map_or(newest, |s| s.get().min(newest));
    let moved = target > current;
    if moved {
        record_receipts(conn, conversation, user, current, target, at_db).await?;
    }
    let marker = target.max(current);
    let unread: i64 = sqlx::query_scalar(UNREAD_COUNT_SQL)
        .bind(conversation.to_string())
        .bind(marker)
        .bind(user.get())
        .fetch_one(&mut *conn)
        .await?;
    let base = total - unread;
    if moved {
        sqlx::query(
            "UPDATE CONVERSATION_PARTICIPANTS \
             SET last_read_seq = ?, last_read_at = ?, unread_count = ?, unread_base = ? \
             WHERE conversation_id = ? AND user_id = ?",
        )
        .bind(target)
        .bind(at_db)
        .bind(unread)
        .bind(base)
        .bind(conversation.to_string())
        .bind(user.get())
        .execute(&mut *conn)
        .await?;
        let read_at = rows::from_db_time(at_db)?;
        let moved = ChangeKind::ConversationRead {
            user_id: user,
            last_read_seq: rows::seq(target)?,
            last_read_at: read_at,
        };
        crate::feed::record(conn, conversation, &moved).await?;
        last_read_at = Some(read_at);
    } else if base != stored_base {
        // Not expected: every writer keeps the base exact. Repaired here, logged so that a
        // writer that does not is noticed.
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
        .execute(&mut *conn)
        .await?;
    }
    Ok(ReadState {
        last_read_seq: rows::seq(marker)?,
        last_read_at,
        unread_count: count(unread),
        moved,
        recipients: crate::messages::active_user_ids(conn, conversation).await?,
    })
}

/// The mute use case, on the writer's connection.
pub(crate) async fn set_muted(
    conn: &mut SqliteConnection,
    conversation: ConversationId,
    user: UserId,
    muted: bool,
) -> Outcome<Participant> {
    let matched = sqlx::query(
        "UPDATE CONVERSATION_PARTICIPANTS SET is_muted = ? \
         WHERE conversation_id = ? AND user_id = ? AND left_at IS NULL",
    )
    .bind(muted)
    .bind(conversation.to_string())
    .bind(user.get())
    .execute(&mut *conn)
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
        .fetch_one(&mut *conn)
        .await?;
    rows::participant(&row)
}

/// The caller's memberships in scope, with unread counts and newest live message, then
/// their participants and last messages in one query each. Whether more follow.
async fn inbox_items(
    conn: &mut SqliteConnection,
    cipher: &MessageCipher,
    user: UserId,
    scope: &InboxScope,
) -> Outcome<InboxRows> {
    let (filter, wanted) = match scope {
        InboxScope::One(_) => ("AND p.conversation_id = ?".to_owned(), 1),
        InboxScope::Page(query) => {
            let archived = match query.archived {
                ArchivedFilter::Active => "AND c.is_archived = 0",
                ArchivedFilter::Archived => "AND c.is_archived = 1",
                ArchivedFilter::Any => "",
            };
            // A row value: a range of the index, not a filter.
            let cursor = if query.after.is_some() {
                " AND (c.activity_key, c.id) < (?, ?)"
            } else {
                ""
            };
            (format!("{archived}{cursor}"), query.limit.get())
        }
    };
    let sql = inbox_sql(&filter);
    let mut query = sqlx::query(&sql).bind(user.get());
    match scope {
        InboxScope::One(id) => query = query.bind(id.to_string()),
        InboxScope::Page(q) => {
            if let Some(after) = q.after {
                query = query
                    .bind(instant_key(after.activity_at))
                    .bind(after.conversation_id.to_string());
            }
        }
    }
    let rows = query
        .bind(i64::try_from(wanted + 1).unwrap_or(i64::MAX))
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
    let last_ids: Vec<chat_domain::MessageId> = heads.iter().filter_map(|h| h.3).collect();
    let mut last_messages = views_by_id(conn, cipher, &last_ids).await?;
    let items = heads
        .into_iter()
        .map(|(conversation, membership, unread_count, last)| InboxItem {
            details: ConversationDetails {
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

/// The inbox items of a scope, whether more follow, and the last item's activity key.
struct InboxRows {
    items: Vec<InboxItem>,
    has_more: bool,
    last_key: Option<i64>,
}

impl SqliteStore {
    /// Runs `inbox_items` in one read transaction, so that its few queries see one state.
    async fn snapshot_inbox(&self, user: UserId, scope: InboxScope) -> Outcome<InboxRows> {
        let mut tx = self.read_pool().begin().await?;
        let items = inbox_items(&mut tx, &self.cipher, user, &scope).await?;
        tx.commit().await?;
        Ok(items)
    }

    async fn try_unread_summary(&self, user: UserId) -> Outcome<UnreadSummary> {
        let folded: Option<String> = sqlx::query_scalar(UNREAD_SUMMARY_SQL)
            .bind(user.get())
            .fetch_one(self.read_pool())
            .await?;
        let mut conversations = folded
            .as_deref()
            .unwrap_or_default()
            .split(';')
            .filter(|entry| !entry.is_empty())
            .map(badge_entry)
            .collect::<Outcome<Vec<_>>>()?;
        conversations.retain(|c| c.unread_count > 0);
        // In conversation order (sorted here: the index serves the inbox's order).
        conversations.sort_by_key(|c| c.conversation_id);
        let total = conversations
            .iter()
            .filter(|c| !c.is_muted)
            .fold(0_u64, |total, c| total.saturating_add(c.unread_count));
        Ok(UnreadSummary {
            total,
            conversations,
        })
    }
}

#[async_trait]
impl ReadStateStore for SqliteStore {
    async fn mark_read(
        &self,
        conversation: ConversationId,
        user: UserId,
        up_to: Option<Seq>,
        at: Timestamp,
    ) -> Result<ReadState, StoreError> {
        self.write(move |conn| {
            Box::pin(async move { mark_read(conn, conversation, user, up_to, at).await })
        })
        .await
    }

    async fn set_muted(
        &self,
        conversation: ConversationId,
        user: UserId,
        muted: bool,
    ) -> Result<Participant, StoreError> {
        self.write(move |conn| {
            Box::pin(async move { set_muted(conn, conversation, user, muted).await })
        })
        .await
    }

    async fn inbox_item(
        &self,
        conversation: ConversationId,
        user: UserId,
    ) -> Result<Option<InboxItem>, StoreError> {
        self.snapshot_inbox(user, InboxScope::One(conversation))
            .await
            .map(|mut rows| rows.items.pop())
            .map_err(Failure::into_store)
    }

    async fn inbox(&self, user: UserId, query: InboxQuery) -> Result<InboxPage, StoreError> {
        let InboxRows {
            items,
            has_more,
            last_key,
        } = self
            .snapshot_inbox(user, InboxScope::Page(query))
            .await
            .map_err(Failure::into_store)?;
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
        self.try_unread_summary(user)
            .await
            .map_err(Failure::into_store)
    }
}
