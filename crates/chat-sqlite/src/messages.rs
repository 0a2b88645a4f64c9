//! [`MessageStore`] on SQLite: appends with gap-free `seq` (the single writer runs them one
//! after the other), idempotent sends, keyset history, and reactions compared by their bytes.

use async_trait::async_trait;
use chat_crypto::MessageCipher;
use chat_domain::{
    Action, ChangeKind, ConversationId, Emoji, MessageContent, MessageId, MessageView, ReactionCap,
    Receipt, Timestamp, UserId,
};
use chat_ports::{
    Appended, Deleted, Edited, FIND_MESSAGES_MAX, HistoryPage, HistoryQuery, MessageStore,
    NewMessage, ReactionChange, StoreConflict, StoreError,
};
use sqlx::{Row, SqliteConnection};

use crate::SqliteStore;
use crate::error::{Failure, Outcome};
use crate::feed::record;
use crate::guard::authorize_on_message;
use crate::rows::{
    self, NAME_EXPR, db_time, find_view, message_columns, reactions_of, record_receipts,
    views_by_id, with_reactions,
};

/// The state of a conversation a write reads before changing it. (The single writer makes
/// the read and the write one atomic step.)
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConversationState {
    /// The newest seq handed out.
    pub(crate) last_seq: i64,
    /// Whether it is archived.
    pub(crate) is_archived: bool,
    /// Its activity time (`last_message_at`, else `created_at`), which every active
    /// membership carries as `activity_at`.
    pub(crate) activity_at: i64,
}

/// The conversation's state, or `None` when it does not exist.
pub(crate) async fn conversation_state(
    conn: &mut SqliteConnection,
    id: ConversationId,
) -> Outcome<Option<ConversationState>> {
    let row = sqlx::query(
        "SELECT c.last_seq, c.is_archived, COALESCE(c.last_message_at, c.created_at) AS activity_at \
         FROM CONVERSATIONS c WHERE c.id = ?",
    )
    .bind(id.to_string())
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|row| {
        Ok(ConversationState {
            last_seq: row.try_get("last_seq")?,
            is_archived: row.try_get("is_archived")?,
            activity_at: row.try_get("activity_at")?,
        })
    })
    .transpose()
}

/// Stores `new` as message `seq` of a conversation whose `last_seq` is `seq - 1`: inserts it,
/// advances the conversation, records the receipts the sender passes (from `sender_marker`,
/// their marker when they have a membership) and updates the memberships (see
/// [`update_memberships`]). Its change goes in the feed: one `message.created` (the
/// sender's marker move it implies is not logged).
pub(crate) async fn insert_message(
    conn: &mut SqliteConnection,
    cipher: &MessageCipher,
    new: &NewMessage,
    seq: i64,
    sender_marker: Option<i64>,
) -> Outcome<()> {
    let body = &new.body;
    let created_at = db_time(new.created_at);
    let stored = crate::at_rest::seal_new(cipher, new)?;
    sqlx::query(
        "INSERT INTO MESSAGES (id, conversation_id, seq, sender_id, content, message_type, \
         media_url, media_metadata, reply_to_id, client_message_id, created_at, \
         is_system_message, encryption_key_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(new.id.to_string())
    .bind(new.conversation_id.to_string())
    .bind(seq)
    .bind(new.sender_id.get())
    .bind(stored.fields.content)
    .bind(body.message_type().as_str())
    .bind(stored.fields.media_url)
    .bind(stored.fields.media_metadata)
    .bind(new.reply_to_id.map(|r| r.to_string()))
    .bind(new.client_message_id.as_ref().map(|c| c.as_str()))
    .bind(created_at)
    .bind(body.is_system())
    .bind(stored.key_id)
    .execute(&mut *conn)
    .await?;
    record(
        conn,
        new.conversation_id,
        &ChangeKind::MessageCreated { message_id: new.id },
    )
    .await?;
    sqlx::query(&format!(
        "UPDATE CONVERSATIONS SET last_seq = ?, last_message_at = ?, \
           counted_total = counted_total + ?, activity_key = {ACTIVITY_KEY_NEXT} WHERE id = ?"
    ))
    .bind(seq)
    .bind(created_at)
    .bind(i64::from(!body.is_system()))
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

/// The next `CONVERSATIONS.activity_key`: the current microsecond (SQLite's clock has
/// milliseconds), and past every key handed out before (`idx_conversations_activity`
/// answers the `MAX`). One writer runs every write, so the keys follow the commits exactly.
pub(crate) const ACTIVITY_KEY_NEXT: &str = "MAX(\
    CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER), \
    COALESCE((SELECT MAX(k.activity_key) FROM CONVERSATIONS k), 0) + 1)";

/// The membership side of a send, in one `UPDATE` of the **sender's** row only (the
/// others' unread counts grow through the conversation's `counted_total`): their marker
/// moves to `seq`, their count becomes 0 (`seq` is the newest message, so nothing above the
/// marker remains) and their base the conversation's new `counted_total`. (A sender with no
/// membership has no row; a sender who left has theirs updated, harmlessly, as on MySQL.)
/// The sender's marker move is not a change of the feed: the send's `message.created`
/// implies it (its sender has read up to it), so a send logs one entry (`ChangeFeed` doc).
async fn update_memberships(
    conn: &mut SqliteConnection,
    new: &NewMessage,
    seq: i64,
    at: i64,
) -> Outcome<()> {
    let sender = new.sender_id.get();
    sqlx::query(
        "UPDATE CONVERSATION_PARTICIPANTS SET \
           unread_count = 0, \
           unread_base = (SELECT c.counted_total FROM CONVERSATIONS c WHERE c.id = ?5), \
           last_read_seq = MAX(last_read_seq, ?3), \
           last_read_at = ?4 \
         WHERE conversation_id = ?5 AND user_id = ?1",
    )
    .bind(sender)
    .bind(0_i64)
    .bind(seq)
    .bind(at)
    .bind(new.conversation_id.to_string())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The active participants of a conversation, earliest joined first.
pub(crate) async fn active_user_ids(
    conn: &mut SqliteConnection,
    conversation: ConversationId,
) -> Outcome<Vec<UserId>> {
    let ids: Vec<i64> = sqlx::query_scalar(
        "SELECT p.user_id FROM CONVERSATION_PARTICIPANTS p \
         WHERE p.conversation_id = ? AND p.left_at IS NULL ORDER BY p.joined_at, p.id",
    )
    .bind(conversation.to_string())
    .fetch_all(&mut *conn)
    .await?;
    ids.into_iter().map(rows::user_id).collect()
}

/// The append use case, on the writer's connection.
pub(crate) async fn append(
    conn: &mut SqliteConnection,
    cipher: &MessageCipher,
    new: &NewMessage,
) -> Outcome<Appended> {
    let sql = format!(
        "SELECT c.last_seq, c.is_archived, \
           (SELECT m.id FROM MESSAGES m WHERE m.conversation_id = c.id \
              AND m.sender_id = ?1 AND m.client_message_id = ?2) AS existing_id, \
           (SELECT p.last_read_seq FROM CONVERSATION_PARTICIPANTS p \
              WHERE p.conversation_id = c.id AND p.user_id = ?1 AND p.left_at IS NULL) \
              AS sender_marker, \
           (SELECT {NAME_EXPR} FROM app_users u WHERE u.id = ?1) AS sender_name \
         FROM CONVERSATIONS c WHERE c.id = ?3"
    );
    let row = sqlx::query(&sql)
        .bind(new.sender_id.get())
        .bind(new.client_message_id.as_ref().map(|c| c.as_str()))
        .bind(new.conversation_id.to_string())
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(StoreError::NotFound)?;
    let Some(marker) = row.try_get::<Option<i64>, _>("sender_marker")? else {
        // Not an active participant: for them the conversation does not exist.
        return Err(StoreError::NotFound.into());
    };
    let recipients = active_user_ids(conn, new.conversation_id).await?;
    if let Some(existing) = row.try_get::<Option<String>, _>("existing_id")? {
        let view = find_view(conn, cipher, rows::message_id(&existing)?)
            .await?
            .ok_or(StoreError::Unavailable(
                "idempotent original vanished".into(),
            ))?;
        return Ok(Appended {
            view,
            created: false,
            recipients,
        });
    }
    if row.try_get::<bool, _>("is_archived")? {
        return Err(StoreConflict::ConversationArchived.into());
    }
    let seq = row.try_get::<i64, _>("last_seq")? + 1;
    let sender_name: Option<String> = row.try_get("sender_name")?;
    insert_message(conn, cipher, new, seq, Some(marker)).await?;
    Ok(Appended {
        view: new.to_stored_view(rows::seq(seq)?, sender_name),
        created: true,
        recipients,
    })
}

/// `NotFound` unless the message exists and is live.
async fn require_live(conn: &mut SqliteConnection, id: MessageId) -> Outcome<()> {
    let deleted: Option<Option<i64>> =
        sqlx::query_scalar("SELECT deleted_at FROM MESSAGES WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&mut *conn)
            .await?;
    match deleted {
        Some(None) => Ok(()),
        _ => Err(StoreError::NotFound.into()),
    }
}

/// The edit use case, on the writer's connection: the row is opened, its text replaced
/// and the whole row sealed again under the active key (one key per row).
pub(crate) async fn edit(
    conn: &mut SqliteConnection,
    cipher: &MessageCipher,
    id: MessageId,
    actor: UserId,
    content: &MessageContent,
    at: Timestamp,
) -> Outcome<Edited> {
    let edit = |sender, is_system| Action::EditMessage { sender, is_system };
    let (conversation, recipients) = authorize_on_message(conn, id, actor, edit, true).await?;
    crate::at_rest::reseal_row(conn, cipher, id, Some(content.as_str()))
        .await?
        .map_err(|error| {
            // The media fields of a row whose key is gone cannot be carried over.
            Failure::Store(StoreError::Unavailable(format!(
                "the message cannot be decrypted: {error}"
            )))
        })?;
    sqlx::query("UPDATE MESSAGES SET edited_at = ? WHERE id = ?")
        .bind(db_time(at))
        .bind(id.to_string())
        .execute(&mut *conn)
        .await?;
    record(
        conn,
        conversation,
        &ChangeKind::MessageUpdated { message_id: id },
    )
    .await?;
    let view = find_view(conn, cipher, id)
        .await?
        .ok_or(StoreError::NotFound)?;
    Ok(Edited { view, recipients })
}

/// The delete use case, on the writer's connection.
pub(crate) async fn delete(
    conn: &mut SqliteConnection,
    cipher: &MessageCipher,
    id: MessageId,
    actor: UserId,
    at: Timestamp,
) -> Outcome<Deleted> {
    let delete = |sender, _| Action::DeleteMessage { sender };
    let (conversation, recipients) = authorize_on_message(conn, id, actor, delete, false).await?;
    // The unread counters of the others who had not read it drop by one in this same
    // statement, by trigger `trg_messages_unread_on_delete`.
    sqlx::query("UPDATE MESSAGES SET deleted_at = ? WHERE id = ?")
        .bind(db_time(at))
        .bind(id.to_string())
        .execute(&mut *conn)
        .await?;
    let view = find_view(conn, cipher, id)
        .await?
        .ok_or(StoreError::NotFound)?;
    let deleted = ChangeKind::MessageDeleted {
        message_id: id,
        seq: view.message.seq,
    };
    record(conn, conversation, &deleted).await?;
    Ok(Deleted {
        message: view.message,
        recipients,
    })
}

/// Puts a user's reaction on a live message; whether it was not there yet.
pub(crate) async fn add_reaction(
    conn: &mut SqliteConnection,
    message: MessageId,
    user: UserId,
    emoji: &Emoji,
    at: Timestamp,
) -> Outcome<bool> {
    require_live(conn, message).await?;
    // The write connection is the only writer: counting here cannot race another add.
    let (distinct, users, emoji_present, already): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT COUNT(DISTINCT emoji), COALESCE(SUM(user_id = ?), 0), \
                COALESCE(SUM(emoji = ?), 0), COALESCE(SUM(user_id = ? AND emoji = ?), 0) \
         FROM MESSAGE_REACTIONS WHERE message_id = ?",
    )
    .bind(user.get())
    .bind(emoji.as_str())
    .bind(user.get())
    .bind(emoji.as_str())
    .bind(message.to_string())
    .fetch_one(&mut *conn)
    .await?;
    if already > 0 {
        return Ok(false);
    }
    if let Some(cap) = ReactionCap::refused(
        usize::try_from(distinct).unwrap_or(usize::MAX),
        emoji_present > 0,
        usize::try_from(users).unwrap_or(usize::MAX),
    ) {
        return Err(StoreError::Conflict(StoreConflict::ReactionCap(cap)).into());
    }
    let inserted = sqlx::query(
        "INSERT INTO MESSAGE_REACTIONS (message_id, user_id, emoji, created_at) \
         VALUES (?, ?, ?, ?) ON CONFLICT (message_id, user_id, emoji) DO NOTHING",
    )
    .bind(message.to_string())
    .bind(user.get())
    .bind(emoji.as_str())
    .bind(db_time(at))
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(inserted > 0)
}

/// Takes a user's reaction off a live message; whether it was there.
pub(crate) async fn remove_reaction(
    conn: &mut SqliteConnection,
    message: MessageId,
    user: UserId,
    emoji: &Emoji,
) -> Outcome<bool> {
    require_live(conn, message).await?;
    let removed = sqlx::query(
        "DELETE FROM MESSAGE_REACTIONS WHERE message_id = ? AND user_id = ? AND emoji = ?",
    )
    .bind(message.to_string())
    .bind(user.get())
    .bind(emoji.as_str())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(removed > 0)
}

/// The message's reactions.
pub(crate) async fn reactions(
    conn: &mut SqliteConnection,
    message: MessageId,
) -> Outcome<Vec<chat_domain::ReactionSummary>> {
    Ok(reactions_of(conn, &[message])
        .await?
        .remove(&message)
        .unwrap_or_default())
}

/// A history page: live messages by `seq` keyset (`condition` bounds the seq), served by
/// `uq_messages_conversation_seq` at any depth.
pub(crate) fn history_sql(condition: &str, order: &str) -> String {
    format!(
        "SELECT {} FROM MESSAGES m LEFT JOIN app_users u ON u.id = m.sender_id \
         WHERE m.conversation_id = ? {condition} AND m.deleted_at IS NULL \
         ORDER BY m.seq {order} LIMIT ?",
        message_columns()
    )
}

impl SqliteStore {
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
        // One read transaction: the page and its reactions from one snapshot.
        let mut tx = self.read_pool().begin().await?;
        let rows = q.bind(fetch).fetch_all(&mut *tx).await?;
        let has_more = rows.len() > page;
        let views = rows
            .iter()
            .take(page)
            .map(|row| rows::message_view(row, &self.cipher))
            .collect::<Outcome<Vec<_>>>()?;
        let items = with_reactions(&mut tx, views).await?;
        tx.commit().await?;
        Ok(HistoryPage { items, has_more })
    }

    async fn try_receipts(&self, message: MessageId) -> Outcome<Vec<Receipt>> {
        let rows = sqlx::query(
            "SELECT r.user_id, r.read_at FROM MESSAGE_READ_RECEIPTS r WHERE r.message_id = ? \
             ORDER BY r.read_at, r.id",
        )
        .bind(message.to_string())
        .fetch_all(self.read_pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Receipt {
                    user_id: rows::user_id(row.try_get("user_id")?)?,
                    read_at: rows::from_db_time(row.try_get("read_at")?)?,
                })
            })
            .collect()
    }

    async fn try_find(&self, id: MessageId) -> Outcome<Option<MessageView>> {
        let mut tx = self.read_pool().begin().await?;
        let view = find_view(&mut tx, &self.cipher, id).await?;
        tx.commit().await?;
        Ok(view)
    }

    /// [`views_by_id`] in chunks of [`FIND_MESSAGES_MAX`], in one read transaction (one
    /// snapshot for the rows and their reactions).
    async fn try_find_many(&self, ids: &[MessageId]) -> Outcome<Vec<MessageView>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.read_pool().begin().await?;
        let mut views = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(FIND_MESSAGES_MAX) {
            views.extend(
                views_by_id(&mut tx, &self.cipher, chunk)
                    .await?
                    .into_values(),
            );
        }
        tx.commit().await?;
        Ok(views)
    }
}

#[async_trait]
impl MessageStore for SqliteStore {
    async fn append_message(&self, new: NewMessage) -> Result<Appended, StoreError> {
        let cipher = self.cipher.clone();
        self.write(move |conn| Box::pin(async move { append(conn, &cipher, &new).await }))
            .await
    }

    async fn find_message(&self, id: MessageId) -> Result<Option<MessageView>, StoreError> {
        self.try_find(id).await.map_err(Failure::into_store)
    }

    async fn find_messages(&self, ids: &[MessageId]) -> Result<Vec<MessageView>, StoreError> {
        self.try_find_many(ids).await.map_err(Failure::into_store)
    }

    async fn edit_message(
        &self,
        id: MessageId,
        actor: UserId,
        content: MessageContent,
        at: Timestamp,
    ) -> Result<Edited, StoreError> {
        let cipher = self.cipher.clone();
        self.write(move |conn| {
            Box::pin(async move { edit(conn, &cipher, id, actor, &content, at).await })
        })
        .await
    }

    async fn delete_message(
        &self,
        id: MessageId,
        actor: UserId,
        at: Timestamp,
    ) -> Result<Deleted, StoreError> {
        let cipher = self.cipher.clone();
        self.write(move |conn| Box::pin(async move { delete(conn, &cipher, id, actor, at).await }))
            .await
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
        user: UserId,
        emoji: Emoji,
        at: Timestamp,
    ) -> Result<ReactionChange, StoreError> {
        self.write(move |conn| {
            Box::pin(async move {
                let react = |_, _| Action::React;
                let (conversation, recipients) =
                    authorize_on_message(conn, message, user, react, true).await?;
                let changed = add_reaction(conn, message, user, &emoji, at).await?;
                if changed {
                    let added = ChangeKind::ReactionAdded {
                        message_id: message,
                        user_id: user,
                        emoji: emoji.as_str().to_owned(),
                    };
                    record(conn, conversation, &added).await?;
                }
                let reactions = reactions(conn, message).await?;
                Ok(ReactionChange {
                    changed,
                    reactions,
                    recipients,
                })
            })
        })
        .await
    }

    async fn remove_reaction(
        &self,
        message: MessageId,
        user: UserId,
        emoji: Emoji,
    ) -> Result<ReactionChange, StoreError> {
        self.write(move |conn| {
            Box::pin(async move {
                let react = |_, _| Action::React;
                let (conversation, recipients) =
                    authorize_on_message(conn, message, user, react, true).await?;
                let changed = remove_reaction(conn, message, user, &emoji).await?;
                if changed {
                    let removed = ChangeKind::ReactionRemoved {
                        message_id: message,
                        user_id: user,
                        emoji: emoji.as_str().to_owned(),
                    };
                    record(conn, conversation, &removed).await?;
                }
                let reactions = reactions(conn, message).await?;
                Ok(ReactionChange {
                    changed,
                    reactions,
                    recipients,
                })
            })
        })
        .await
    }

    async fn receipts(&self, message: MessageId) -> Result<Vec<Receipt>, StoreError> {
        self.try_receipts(message)
            .await
            .map_err(Failure::into_store)
    }
}
