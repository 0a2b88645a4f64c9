//! [`MessageStore`] on MySQL: appending with gap-free `seq` under the conversation's row
//! lock, idempotent sends by unique key, keyset history, and reactions compared by their
//! bytes.

use async_trait::async_trait;
use chat_domain::{
    ConversationId, Emoji, Message, MessageContent, MessageId, MessageView, Receipt, Seq,
    Timestamp, UserId,
};
use chat_ports::{
    Appended, HistoryPage, HistoryQuery, MessageStore, NewMessage, ReactionChange, StoreConflict,
    StoreError,
};
use sqlx::{MySqlConnection, Row};

use crate::MySqlStore;
use crate::appender::{Appender, Reply};
use crate::error::{Failure, Outcome, is_duplicate_of};
use crate::rows::{
    self, NAME_EXPR, db_time, find_view, message_columns, reactions_of, record_receipts,
    uuid_order, with_reactions,
};

/// The unique key of the idempotency key.
const CLIENT_ID_KEY: &str = "uq_messages_client_message_id";

/// The state of a conversation read under its row lock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LockedConversation {
    /// The newest seq handed out.
    pub(crate) last_seq: i64,
    /// Whether it is archived.
    pub(crate) is_archived: bool,
    /// Its activity time (`last_message_at`, else `created_at`), which every active
    /// membership carries as `activity_at`.
    pub(crate) activity_at: Option<time::OffsetDateTime>,
}

/// Locks the conversation row (`FOR UPDATE`): every writer of `seq` and of the membership
/// takes this lock first, so they run one after the other per conversation.
pub(crate) async fn lock_conversation(
    conn: &mut MySqlConnection,
    id: ConversationId,
) -> Outcome<Option<LockedConversation>> {
    let row = sqlx::query(
        "SELECT c.last_seq, c.is_archived, COALESCE(c.last_message_at, c.created_at) AS activity_at \
         FROM CONVERSATIONS c WHERE c.id = ? FOR UPDATE",
    )
    .bind(id.to_string())
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|row| {
        Ok(LockedConversation {
            last_seq: row.try_get("last_seq")?,
            is_archived: row
                .try_get::<Option<bool>, _>("is_archived")?
                .unwrap_or(false),
            activity_at: row.try_get("activity_at")?,
        })
    })
    .transpose()
}

/// Takes a shared lock on a live message: reactions may race each other, but not a
/// delete. `NotFound` when it does not exist or is deleted.
async fn lock_live_message(conn: &mut MySqlConnection, message: MessageId) -> Outcome<()> {
    let deleted: Option<Option<time::OffsetDateTime>> =
        sqlx::query_scalar("SELECT deleted_at FROM MESSAGES WHERE id = ? LOCK IN SHARE MODE")
            .bind(message.to_string())
            .fetch_optional(&mut *conn)
            .await?;
    if matches!(deleted, Some(None)) {
        Ok(())
    } else {
        Err(StoreError::NotFound.into())
    }
}

/// The message's reactions after a change, then commits.
async fn reactions_after(
    mut tx: sqlx::Transaction<'static, sqlx::MySql>,
    message: MessageId,
    changed: bool,
) -> Outcome<ReactionChange> {
    let reactions = reactions_of(&mut tx, &[message])
        .await?
        .remove(&message)
        .unwrap_or_default();
    tx.commit().await?;
    Ok(ReactionChange { changed, reactions })
}

/// Stores `new` as message `seq` of a conversation whose row the caller holds locked with
/// `last_seq = seq - 1`: inserts it, advances the conversation, records the receipts the
/// sender passes (from `sender_marker`, their marker when they have a membership) and
/// updates the memberships (see [`update_memberships`]).
pub(crate) async fn insert_locked(
    conn: &mut MySqlConnection,
    new: &NewMessage,
    seq: i64,
    sender_marker: Option<i64>,
) -> Result<(), sqlx::Error> {
    let body = &new.body;
    let created_at = db_time(new.created_at);
    sqlx::query(
        "INSERT INTO MESSAGES (id, conversation_id, seq, sender_id, content, message_type, \
         media_url, media_metadata, reply_to_id, client_message_id, created_at, \
         is_system_message) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(new.id.to_string())
    .bind(new.conversation_id.to_string())
    .bind(seq)
    .bind(new.sender_id.get())
    .bind(body.content().as_str())
    .bind(body.message_type().as_str())
    .bind(body.media_url().map(|u| u.as_str()))
    .bind(body.media_metadata().map(|m| m.as_json()))
    .bind(new.reply_to_id.map(|r| r.to_string()))
    .bind(
        new.client_message_id
            .as_ref()
            .map(|c| c.as_str().as_bytes()),
    )
    .bind(created_at)
    .bind(body.is_system())
    .execute(&mut *conn)
    .await?;
    sqlx::query("UPDATE CONVERSATIONS SET last_seq = ?, last_message_at = ? WHERE id = ?")
        .bind(seq)
        .bind(created_at)
        .bind(new.conversation_id.to_string())
        .execute(&mut *conn)
        .await?;
    if let Some(marker) = sender_marker {
        // Receipts for what the sender passes by answering: the others' messages between
        // their marker and this one.
        record_receipts(
            conn,
            new.conversation_id,
            new.sender_id,
            marker,
            seq - 1,
            created_at,
        )
        .await?;
    }
    update_memberships(conn, new, seq, created_at).await
}

/// The membership side of a send, in one `UPDATE` (one pass over the conversation's
/// participant rows in index order, so concurrent writers lock them in the same order):
/// - every active membership's `activity_at` becomes the message's time (the conversation's
///   new `last_message_at`);
/// - every other active participant's `unread_count` + 1, unless the message is SYSTEM;
/// - the sender's marker moves to `seq` and their count becomes 0: under the conversation's
///   lock `seq` is the newest message, so nothing above the marker remains. (A sender with
///   no membership has no row; a sender who left has theirs updated, harmlessly.)
async fn update_memberships(
    conn: &mut MySqlConnection,
    new: &NewMessage,
    seq: i64,
    at: time::OffsetDateTime,
) -> Result<(), sqlx::Error> {
    let sender = new.sender_id.get();
    sqlx::query(
        "UPDATE CONVERSATION_PARTICIPANTS SET \
           unread_count = IF(user_id = ?, 0, unread_count + ?), \
           last_read_seq = IF(user_id = ?, GREATEST(last_read_seq, ?), last_read_seq), \
           last_read_at = IF(user_id = ?, ?, last_read_at), \
           activity_at = ? \
         WHERE conversation_id = ? AND (left_at IS NULL OR user_id = ?)",
    )
    .bind(sender)
    .bind(i32::from(!new.body.is_system()))
    .bind(sender)
    .bind(seq)
    .bind(sender)
    .bind(at)
    .bind(at)
    .bind(new.conversation_id.to_string())
    .bind(sender)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The view of a message just stored by [`insert_locked`], built without reading it back.
pub(crate) fn stored_view(new: &NewMessage, seq: i64, sender_name: Option<String>) -> MessageView {
    let body = &new.body;
    MessageView {
        message: Message {
            id: new.id,
            conversation_id: new.conversation_id,
            seq: Seq::new(seq).unwrap_or(Seq::ZERO),
            sender_id: new.sender_id,
            content: body.content().as_str().to_owned(),
            message_type: body.message_type(),
            media_url: body.media_url().map(|u| u.as_str().to_owned()),
            media_metadata: body.media_metadata().map(|m| m.as_json().to_owned()),
            reply_to_id: new.reply_to_id,
            client_message_id: new
                .client_message_id
                .as_ref()
                .map(|c| c.as_str().to_owned()),
            created_at: db_time(new.created_at),
            edited_at: None,
            deleted_at: None,
            is_system_message: body.is_system(),
        },
        sender_name,
        reactions: Vec::new(),
    }
}

/// A history page: live messages by `seq` keyset (`condition` bounds the seq), served by
/// `uq_messages_conversation_seq` at any depth.
pub(crate) fn history_sql(condition: &str, order: &str) -> String {
    format!(
        "SELECT {} FROM MESSAGES m LEFT JOIN app_users u ON u.id = m.sender_id \
         WHERE m.conversation_id = ? AND m.seq IS NOT NULL {condition} \
           AND m.deleted_at IS NULL \
         ORDER BY m.seq {order} LIMIT ?",
        message_columns()
    )
}

impl MySqlStore {
    /// Appends one message in a transaction of its own (the path of a send that arrives
    /// alone, and of a batch's requests when the batch was rolled back), re-run after a
    /// deadlock or lock wait timeout.
    pub(crate) async fn append_alone(&self, new: &NewMessage) -> Result<Appended, StoreError> {
        crate::retrying!(self.try_append(new))
    }

    async fn try_append(&self, new: &NewMessage) -> Outcome<Appended> {
        let mut tx = self.pool.begin().await?;
        // One round trip: the lock, the idempotency probe, the sender's marker and name. The
        // subqueries are plain reads (they take no locks).
        let sql = format!(
            "SELECT c.last_seq, c.is_archived, \
               (SELECT m.id FROM MESSAGES m WHERE m.conversation_id = c.id \
                  AND m.sender_id = ? AND m.client_message_id = ?) AS existing_id, \
               (SELECT p.last_read_seq FROM CONVERSATION_PARTICIPANTS p \
                  WHERE p.conversation_id = c.id AND p.user_id = ? AND p.left_at IS NULL) \
                  AS sender_marker, \
               (SELECT CAST(GROUP_CONCAT(p.user_id) AS CHAR) FROM CONVERSATION_PARTICIPANTS p \
                  WHERE p.conversation_id = c.id AND p.left_at IS NULL) AS recipients, \
               (SELECT {NAME_EXPR} FROM app_users u WHERE u.id = ?) AS sender_name \
             FROM CONVERSATIONS c WHERE c.id = ? FOR UPDATE"
        );
        let row = sqlx::query(&sql)
            .bind(new.sender_id.get())
            .bind(
                new.client_message_id
                    .as_ref()
                    .map(|c| c.as_str().as_bytes()),
            )
            .bind(new.sender_id.get())
            .bind(new.sender_id.get())
            .bind(new.conversation_id.to_string())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        let marker: Option<i64> = row.try_get("sender_marker")?;
        if marker.is_none() {
            // Not an active participant: for them the conversation does not exist.
            return Err(StoreError::NotFound.into());
        }
        let recipients = rows::user_ids_csv(row.try_get("recipients")?)?;
        let existing: Option<String> = row.try_get("existing_id")?;
        if let Some(existing) = existing {
            tx.rollback().await?;
            return self
                .original(rows::message_id(&existing)?, recipients)
                .await;
        }
        if row
            .try_get::<Option<bool>, _>("is_archived")?
            .unwrap_or(false)
        {
            return Err(StoreConflict::ConversationArchived.into());
        }
        let seq = row.try_get::<i64, _>("last_seq")? + 1;
        let sender_name: Option<String> = row.try_get("sender_name")?;
        match insert_locked(&mut tx, new, seq, marker).await {
            Ok(()) => {}
            Err(e) if is_duplicate_of(&e, CLIENT_ID_KEY) => {
                // A racing send with the same key committed after our probe.
                tx.rollback().await?;
                let original = self.original_by_client_id(new).await?;
                return self.original(original, recipients).await;
            }
            Err(e) => return Err(e.into()),
        }
        tx.commit().await?;
        Ok(Appended {
            view: stored_view(new, seq, sender_name),
            created: true,
            recipients,
        })
    }

    async fn original(&self, id: MessageId, recipients: Vec<UserId>) -> Outcome<Appended> {
        let mut conn = self.pool.acquire().await?;
        let view = find_view(&mut conn, id)
            .await?
            .ok_or(StoreError::Unavailable(
                "idempotent original vanished".into(),
            ))?;
        Ok(Appended {
            view,
            created: false,
            recipients,
        })
    }

    async fn original_by_client_id(&self, new: &NewMessage) -> Outcome<MessageId> {
        let id: String = sqlx::query_scalar(
            "SELECT m.id FROM MESSAGES m WHERE m.conversation_id = ? AND m.sender_id = ? \
             AND m.client_message_id = ?",
        )
        .bind(new.conversation_id.to_string())
        .bind(new.sender_id.get())
        .bind(
            new.client_message_id
                .as_ref()
                .map(|c| c.as_str().as_bytes()),
        )
        .fetch_one(&self.pool)
        .await?;
        rows::message_id(&id)
    }

    /// Locks a message row; `NotFound` when it does not exist or is deleted.
    async fn lock_live_message(conn: &mut MySqlConnection, id: MessageId) -> Outcome<()> {
        let deleted: Option<Option<time::OffsetDateTime>> =
            sqlx::query_scalar("SELECT deleted_at FROM MESSAGES WHERE id = ? FOR UPDATE")
                .bind(id.to_string())
                .fetch_optional(&mut *conn)
                .await?;
        match deleted {
            Some(None) => Ok(()),
            _ => Err(StoreError::NotFound.into()),
        }
    }

    async fn try_edit(
        &self,
        id: MessageId,
        content: &MessageContent,
        at: Timestamp,
    ) -> Outcome<MessageView> {
        let mut tx = self.pool.begin().await?;
        Self::lock_live_message(&mut tx, id).await?;
        sqlx::query("UPDATE MESSAGES SET content = ?, edited_at = ? WHERE id = ?")
            .bind(content.as_str())
            .bind(db_time(at))
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        let view = find_view(&mut tx, id).await?.ok_or(StoreError::NotFound)?;
        tx.commit().await?;
        Ok(view)
    }

    async fn try_delete(&self, id: MessageId, at: Timestamp) -> Outcome<Message> {
        let mut tx = self.pool.begin().await?;
        Self::lock_live_message(&mut tx, id).await?;
        // The unread counters of the others who had not read it drop by one in this same
        // statement, by trigger `trg_messages_unread_on_delete`: both this service and the
        // previous system soft-delete with this bare UPDATE, and the trigger is the one place
        // that sees either (docs/schema.md, "Unread counters and inbox order").
        sqlx::query("UPDATE MESSAGES SET deleted_at = ? WHERE id = ?")
            .bind(db_time(at))
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        let view = find_view(&mut tx, id).await?.ok_or(StoreError::NotFound)?;
        tx.commit().await?;
        Ok(view.message)
    }

    async fn try_history(
        &self,
        conversation: ConversationId,
        query: HistoryQuery,
    ) -> Outcome<HistoryPage> {
        let (condition, order, bound, limit) = match query {
            HistoryQuery::Latest(limit) => ("", "DESC", None, limit),
            HistoryQuery::Before(seq, limit) => ("AND m.seq < ?", "DESC", Some(seq), limit),
            HistoryQuery::After(seq, limit) => ("AND m.seq > ?", "ASC", Some(seq), limit),
        };
        let sql = history_sql(condition, order);
        let mut q = sqlx::query(&sql).bind(conversation.to_string());
        if let Some(seq) = bound {
            q = q.bind(seq.get());
        }
        let page = limit.get();
        let fetch = i64::try_from(page + 1).unwrap_or(i64::MAX);
        let mut conn = self.pool.acquire().await?;
        let rows = q.bind(fetch).fetch_all(&mut *conn).await?;
        let has_more = rows.len() > page;
        let views = rows
            .iter()
            .take(page)
            .map(rows::message_view)
            .collect::<Outcome<Vec<_>>>()?;
        let items = with_reactions(&mut conn, views).await?;
        Ok(HistoryPage { items, has_more })
    }

    async fn try_add_reaction(
        &self,
        message: MessageId,
        user: chat_domain::UserId,
        emoji: &Emoji,
        at: Timestamp,
    ) -> Outcome<ReactionChange> {
        let mut tx = self.pool.begin().await?;
        lock_live_message(&mut tx, message).await?;
        let inserted = sqlx::query(
            "INSERT INTO MESSAGE_REACTIONS (id, message_id, user_id, emoji, created_at) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(rows::new_row_id())
        .bind(message.to_string())
        .bind(user.get())
        .bind(emoji.as_str())
        .bind(db_time(at))
        .execute(&mut *tx)
        .await;
        let changed = match inserted {
            Ok(_) => true,
            // Already there: the unique key compares the emoji's bytes.
            Err(e) if is_duplicate_of(&e, "uq_reactions_message_user_emoji_bin") => false,
            Err(e) => return Err(e.into()),
        };
        reactions_after(tx, message, changed).await
    }

    async fn try_remove_reaction(
        &self,
        message: MessageId,
        user: chat_domain::UserId,
        emoji: &Emoji,
    ) -> Outcome<ReactionChange> {
        let mut tx = self.pool.begin().await?;
        lock_live_message(&mut tx, message).await?;
        let changed = sqlx::query(
            "DELETE FROM MESSAGE_REACTIONS \
             WHERE message_id = ? AND user_id = ? AND emoji_bin = ?",
        )
        .bind(message.to_string())
        .bind(user.get())
        .bind(emoji.as_str().as_bytes())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        reactions_after(tx, message, changed).await
    }

    async fn try_receipts(&self, message: MessageId) -> Outcome<Vec<Receipt>> {
        let sql = format!(
            "SELECT r.user_id, r.read_at FROM MESSAGE_READ_RECEIPTS r WHERE r.message_id = ? \
             ORDER BY r.read_at, {}",
            uuid_order("r.id")
        );
        let rows = sqlx::query(&sql)
            .bind(message.to_string())
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(Receipt {
                    user_id: rows::user_id(row.try_get("user_id")?)?,
                    read_at: row
                        .try_get::<Option<time::OffsetDateTime>, _>("read_at")?
                        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
                })
            })
            .collect()
    }
}

#[async_trait]
impl MessageStore for MySqlStore {
    async fn append_message(&self, new: NewMessage) -> Result<Appended, StoreError> {
        let appender = self
            .appender
            .get_or_init(|| Appender::start(self.pool.clone()));
        match appender.submit(new.clone()).await {
            Some(Reply::Done(answer)) => *answer,
            Some(Reply::Original { id, recipients }) => self
                .original(id, recipients)
                .await
                .map_err(Failure::into_store),
            // Not queued, or its batch was rolled back: nothing of it is stored.
            Some(Reply::RunAlone) | None => self.append_alone(&new).await,
        }
    }

    async fn find_message(&self, id: MessageId) -> Result<Option<MessageView>, StoreError> {
        let find = async {
            let mut conn = self.pool.acquire().await?;
            find_view(&mut conn, id).await
        };
        find.await.map_err(Failure::into_store)
    }

    async fn edit_message(
        &self,
        id: MessageId,
        content: MessageContent,
        at: Timestamp,
    ) -> Result<MessageView, StoreError> {
        crate::retrying!(self.try_edit(id, &content, at))
    }

    async fn delete_message(&self, id: MessageId, at: Timestamp) -> Result<Message, StoreError> {
        crate::retrying!(self.try_delete(id, at))
    }

    async fn history(
        &self,
        conversation: ConversationId,
        query: HistoryQuery,
    ) -> Result<HistoryPage, StoreError> {
        self.try_history(conversation, query)
            .await
            .map_err(Failure::into_store)
    }

    async fn add_reaction(
        &self,
        message: MessageId,
        user: chat_domain::UserId,
        emoji: Emoji,
        at: Timestamp,
    ) -> Result<ReactionChange, StoreError> {
        crate::retrying!(self.try_add_reaction(message, user, &emoji, at))
    }

    async fn remove_reaction(
        &self,
        message: MessageId,
        user: chat_domain::UserId,
        emoji: Emoji,
    ) -> Result<ReactionChange, StoreError> {
        crate::retrying!(self.try_remove_reaction(message, user, &emoji))
    }

    async fn receipts(&self, message: MessageId) -> Result<Vec<Receipt>, StoreError> {
        self.try_receipts(message)
            .await
            .map_err(Failure::into_store)
    }
}
