//! [`MessageStore`] on MySQL: appending with gap-free `seq` under the conversation's row
//! lock, idempotent sends by unique key, keyset history, and reactions compared by their
//! bytes.

use async_trait::async_trait;
use chat_domain::{
    Action, ChangeKind, ConversationId, Emoji, MessageContent, MessageId, MessageView, ReactionCap,
    Receipt, Timestamp, UserId,
};
use chat_ports::{
    Appended, Deleted, Edited, FIND_MESSAGES_MAX, HistoryPage, HistoryQuery, MessageStore,
    NewMessage, ReactionChange, StoreConflict, StoreError,
};
use sqlx::MySqlConnection;

use crate::MySqlStore;
use crate::change_log::{self, NewChange};
use crate::error::{Failure, Outcome, is_duplicate_of};
use crate::guard::{MessageChange, lock_message_for};
use crate::rows::{
    self, db_time, find_view, message_columns, reactions_of, views_by_id, with_reactions,
};
use crate::send::{Reply, append_alone, original};

/// Counts the message's reactions (under the message's exclusive lock): `false` when the
/// user already has this reaction (nothing to add), a conflict when adding it would break
/// a cap, else `true`.
async fn within_reaction_caps(
    conn: &mut MySqlConnection,
    message: MessageId,
    user: UserId,
    emoji: &Emoji,
) -> Outcome<bool> {
    let (distinct, users, emoji_present, already): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT COUNT(DISTINCT emoji_bin), \
                CAST(COALESCE(SUM(user_id = ?), 0) AS SIGNED), \
                CAST(COALESCE(SUM(emoji_bin = ?), 0) AS SIGNED), \
                CAST(COALESCE(SUM(user_id = ? AND emoji_bin = ?), 0) AS SIGNED) \
         FROM MESSAGE_REACTIONS WHERE message_id = ? LOCK IN SHARE MODE",
    )
    .bind(user.get())
    .bind(emoji.as_str().as_bytes())
    .bind(user.get())
    .bind(emoji.as_str().as_bytes())
    .bind(message.to_string())
    .fetch_one(&mut *conn)
    .await?;
    if already > 0 {
        return Ok(false);
    }
    match ReactionCap::refused(
        usize::try_from(distinct).unwrap_or(usize::MAX),
        emoji_present > 0,
        usize::try_from(users).unwrap_or(usize::MAX),
    ) {
        Some(cap) => Err(StoreError::Conflict(StoreConflict::ReactionCap(cap)).into()),
        None => Ok(true),
    }
}

/// The message's reactions after a change, then commits.
async fn reactions_after(
    mut tx: sqlx::Transaction<'static, sqlx::MySql>,
    message: MessageId,
    changed: bool,
    recipients: Vec<UserId>,
) -> Outcome<ReactionChange> {
    let reactions = reactions_of(&mut tx, &[message])
        .await?
        .remove(&message)
        .unwrap_or_default();
    tx.commit().await?;
    Ok(ReactionChange {
        changed,
        reactions,
        recipients,
    })
}

/// Locks a live message for `user`'s reaction (see [`lock_message_for`]): its row is
/// taken `FOR UPDATE`, so one user's racing toggles of a reaction run one after the other
/// instead of deadlocking on the reaction's unique key.
async fn lock_for_reaction(
    conn: &mut MySqlConnection,
    message: MessageId,
    user: UserId,
) -> Outcome<Vec<UserId>> {
    lock_message_for(
        conn,
        message,
        user,
        |_, _| Action::React,
        MessageChange::Content,
    )
    .await
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
    async fn try_delete(&self, id: MessageId, actor: UserId, at: Timestamp) -> Outcome<Deleted> {
        let mut tx = self.pool.begin().await?;
        let delete = |sender, _| Action::DeleteMessage { sender };
        let recipients =
            lock_message_for(&mut tx, id, actor, delete, MessageChange::Delete).await?;
        // The conversation's `counted_total` and the `unread_base` of the members whose
        // marker had passed it are corrected in this same statement, by trigger
        // `trg_messages_unread_on_delete`: both this service and the previous system
        // soft-delete with this bare UPDATE, and the trigger is the one place that sees
        // either (docs/schema.md). The conversation's row is already ours (`Delete` above).
        sqlx::query("UPDATE MESSAGES SET deleted_at = ? WHERE id = ?")
            .bind(db_time(at))
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        let view = find_view(&mut tx, &self.cipher, id)
            .await?
            .ok_or(StoreError::NotFound)?;
        let deleted = ChangeKind::MessageDeleted {
            message_id: id,
            seq: view.message.seq,
        };
        change_log::record(
            &mut tx,
            &[NewChange::new(view.message.conversation_id, deleted)],
        )
        .await?;
        tx.commit().await?;
        Ok(Deleted {
            message: view.message,
            recipients,
        })
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
            .map(|row| rows::message_view(row, &self.cipher))
            .collect::<Outcome<Vec<_>>>()?;
        let items = with_reactions(&mut conn, views).await?;
        Ok(HistoryPage { items, has_more })
    }

    async fn try_add_reaction(
        &self,
        message: MessageId,
        user: UserId,
        emoji: &Emoji,
        at: Timestamp,
    ) -> Outcome<ReactionChange> {
        let mut tx = self.pool.begin().await?;
        // Exclusively (see `lock_for_reaction`): adds to one message take turns, so the
        // caps counted below hold.
        let recipients = lock_for_reaction(&mut tx, message, user).await?;
        if !within_reaction_caps(&mut tx, message, user, emoji).await? {
            return reactions_after(tx, message, false, recipients).await;
        }
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
        if changed {
            let added = ChangeKind::ReactionAdded {
                message_id: message,
                user_id: user,
                emoji: emoji.as_str().to_owned(),
            };
            change_log::record_message(&mut tx, message, &added).await?;
        }
        reactions_after(tx, message, changed, recipients).await
    }

    async fn try_remove_reaction(
        &self,
        message: MessageId,
        user: UserId,
        emoji: &Emoji,
    ) -> Outcome<ReactionChange> {
        let mut tx = self.pool.begin().await?;
        let recipients = lock_for_reaction(&mut tx, message, user).await?;
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
        if changed {
            let removed = ChangeKind::ReactionRemoved {
                message_id: message,
                user_id: user,
                emoji: emoji.as_str().to_owned(),
            };
            change_log::record_message(&mut tx, message, &removed).await?;
        }
        reactions_after(tx, message, changed, recipients).await
    }

    async fn try_receipts(&self, message: MessageId) -> Outcome<Vec<Receipt>> {
        crate::receipts::receipts_of(&self.pool, message).await
    }
}

#[async_trait]
impl MessageStore for MySqlStore {
    async fn append_message(&self, new: NewMessage) -> Result<Appended, StoreError> {
        // The send's deadline: the queue, the batch and any run alone all end by it.
        let deadline = tokio::time::Instant::now() + self.call_timeout;
        let reply = match &self.appender {
            Some(appender) => appender.submit(new.clone(), deadline).await?,
            None => Reply::RunAlone,
        };
        let rest = async {
            match reply {
                Reply::Done(answer) => *answer,
                Reply::Original { id, recipients } => {
                    original(&self.pool, &self.cipher, id, recipients)
                        .await
                        .map_err(Failure::into_store)
                }
                // Not queued, or its batch was rolled back: nothing of it is stored.
                Reply::RunAlone => append_alone(&self.pool, &self.cipher, &new).await,
            }
        };
        let outcome = tokio::time::timeout_at(deadline, rest)
            .await
            .unwrap_or_else(|_| Err(crate::error::timed_out()));
        self.written(outcome)
    }

    async fn find_message(&self, id: MessageId) -> Result<Option<MessageView>, StoreError> {
        let find = async {
            let mut conn = self.pool.acquire().await?;
            find_view(&mut conn, &self.cipher, id).await
        };
        self.bounded(find).await
    }

    async fn find_messages(&self, ids: &[MessageId]) -> Result<Vec<MessageView>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let find = async {
            let mut conn = self.pool.acquire().await?;
            let mut views = Vec::with_capacity(ids.len());
            for chunk in ids.chunks(FIND_MESSAGES_MAX) {
                views.extend(
                    views_by_id(&mut conn, &self.cipher, chunk)
                        .await?
                        .into_values(),
                );
            }
            Ok::<_, Failure>(views)
        };
        self.bounded(find).await
    }

    async fn edit_message(
        &self,
        id: MessageId,
        actor: UserId,
        content: MessageContent,
        at: Timestamp,
    ) -> Result<Edited, StoreError> {
        self.written(crate::retrying!(
            self,
            self.try_edit(id, actor, &content, at)
        ))
    }

    async fn delete_message(
        &self,
        id: MessageId,
        actor: UserId,
        at: Timestamp,
    ) -> Result<Deleted, StoreError> {
        self.written(crate::retrying!(self, self.try_delete(id, actor, at)))
    }

    async fn history(
        &self,
        conversation: ConversationId,
        query: HistoryQuery,
    ) -> Result<HistoryPage, StoreError> {
        self.bounded(self.try_history(conversation, query)).await
    }

    async fn add_reaction(
        &self,
        message: MessageId,
        user: UserId,
        emoji: Emoji,
        at: Timestamp,
    ) -> Result<ReactionChange, StoreError> {
        self.written(crate::retrying!(
            self,
            self.try_add_reaction(message, user, &emoji, at)
        ))
    }

    async fn remove_reaction(
        &self,
        message: MessageId,
        user: UserId,
        emoji: Emoji,
    ) -> Result<ReactionChange, StoreError> {
        self.written(crate::retrying!(
            self,
            self.try_remove_reaction(message, user, &emoji)
        ))
    }

    async fn receipts(&self, message: MessageId) -> Result<Vec<Receipt>, StoreError> {
        self.bounded(self.try_receipts(message)).await
    }
}
