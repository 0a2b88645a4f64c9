//! Encryption at rest on MySQL (docs/security.md): the columns a message is written with
//! (sealed by the shared [`MessageCipher`]), the re-sealing of a row on edit, and
//! `chatd reencrypt`'s batches. A sealed row keeps its media URL in `media_url_sealed`
//! (a sealed 500-byte URL is 707 characters, too long for `media_url VARCHAR(500)`).

use async_trait::async_trait;
use chat_crypto::{MessageCipher, MessageFields, StoredFields, row_ids};
use chat_domain::{Action, ChangeKind, MessageContent, MessageId, Timestamp, UserId};
use chat_ports::{Edited, NewMessage, ReencryptBatch, ReencryptStore, StoreError};
use sqlx::mysql::MySqlRow;
use sqlx::{MySqlConnection, Row};

use crate::MySqlStore;
use crate::change_log::{self, NewChange};
use crate::error::{Failure, Outcome};
use crate::guard::{MessageChange, lock_message_for};
use crate::rows::{self, db_time, find_view};

/// The text columns of one `MESSAGES` row as written.
#[derive(Debug, Clone)]
pub(crate) struct StoredColumns {
    pub(crate) content: String,
    pub(crate) media_url: Option<String>,
    pub(crate) media_url_sealed: Option<String>,
    pub(crate) media_metadata: Option<String>,
    pub(crate) key_id: Option<String>,
}

impl StoredColumns {
    /// The columns of a new message, sealed with `cipher` (plain for SYSTEM or no ring).
    pub(crate) fn seal(cipher: &MessageCipher, new: &NewMessage) -> Result<Self, sqlx::Error> {
        let body = &new.body;
        let fields = MessageFields {
            content: body.content().as_str().to_owned(),
            media_url: body.media_url().map(|u| u.as_str().to_owned()),
            media_metadata: body.media_metadata().map(|m| m.as_json().to_owned()),
        };
        let sealed = cipher
            .seal(
                row_ids(new.id, new.conversation_id),
                body.is_system(),
                fields,
            )
            .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        Ok(Self::from(sealed))
    }
}

impl From<StoredFields> for StoredColumns {
    fn from(stored: StoredFields) -> Self {
        let fields = stored.fields;
        let (media_url, media_url_sealed) = match stored.key_id {
            Some(_) => (None, fields.media_url),
            None => (fields.media_url, None),
        };
        Self {
            content: fields.content,
            media_url,
            media_url_sealed,
            media_metadata: fields.media_metadata,
            key_id: stored.key_id,
        }
    }
}

/// A message row read under its lock, with its fields as stored.
struct LockedRow {
    id: MessageId,
    conversation_id: chat_domain::ConversationId,
    is_system: bool,
    deleted: bool,
    stored: StoredFields,
}

const LOCKED_COLUMNS: &str = "id, conversation_id, is_system_message, deleted_at, content, \
     media_url, media_url_sealed, CAST(media_metadata AS CHAR) AS media_metadata, \
     encryption_key_id";

fn locked_row(row: &MySqlRow) -> Outcome<LockedRow> {
    let key_id: Option<String> = row.try_get("encryption_key_id")?;
    let media_url: Option<String> = match key_id {
        Some(_) => row
            .try_get::<Option<String>, _>("media_url_sealed")?
            .or(row.try_get("media_url")?),
        None => row.try_get("media_url")?,
    };
    Ok(LockedRow {
        id: rows::message_id(&row.try_get::<String, _>("id")?)?,
        conversation_id: rows::conversation_id(&row.try_get::<String, _>("conversation_id")?)?,
        is_system: row
            .try_get::<Option<bool>, _>("is_system_message")?
            .unwrap_or(false),
        deleted: row
            .try_get::<Option<time::OffsetDateTime>, _>("deleted_at")?
            .is_some(),
        stored: StoredFields {
            fields: MessageFields {
                content: row.try_get("content")?,
                media_url,
                media_metadata: row.try_get("media_metadata")?,
            },
            key_id,
        },
    })
}

/// Writes the text columns of a row (and `edited_at` when given).
async fn write_columns(
    conn: &mut MySqlConnection,
    id: MessageId,
    columns: StoredColumns,
    edited_at: Option<Timestamp>,
) -> Outcome<()> {
    sqlx::query(
        "UPDATE MESSAGES SET content = ?, media_url = ?, media_url_sealed = ?, \
         media_metadata = ?, encryption_key_id = ?, edited_at = COALESCE(?, edited_at) \
         WHERE id = ?",
    )
    .bind(columns.content)
    .bind(columns.media_url)
    .bind(columns.media_url_sealed)
    .bind(columns.media_metadata)
    .bind(columns.key_id)
    .bind(edited_at.map(db_time))
    .bind(id.to_string())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Opens a locked row and seals it again under the active key with the row's ids, with
/// `content` replaced when given.
fn reseal(
    cipher: &MessageCipher,
    row: &LockedRow,
    content: Option<&str>,
) -> Result<Result<StoredColumns, chat_crypto::OpenError>, Failure> {
    let ids = row_ids(row.id, row.conversation_id);
    let mut fields = match cipher.open(ids, row.stored.clone()) {
        Ok(fields) => fields,
        Err(error) => return Ok(Err(error)),
    };
    if let Some(content) = content {
        content.clone_into(&mut fields.content);
    }
    let sealed = cipher
        .seal(ids, row.is_system, fields)
        .map_err(|e| Failure::Store(StoreError::Unavailable(e.to_string())))?;
    Ok(Ok(StoredColumns::from(sealed)))
}

impl MySqlStore {
    /// Edits a live message in a transaction of its own: locks its row (after its
    /// conversation's, deciding whether `actor` may edit it and who must hear of it, see
    /// [`lock_message_for`]), opens it, replaces the text and seals the whole row again
    /// under the active key (one key per row), then reads the message back.
    pub(crate) async fn try_edit(
        &self,
        id: MessageId,
        actor: UserId,
        content: &MessageContent,
        at: Timestamp,
    ) -> Outcome<Edited> {
        let mut tx = self.pool.begin().await?;
        let edit = |sender, is_system| Action::EditMessage { sender, is_system };
        let recipients = lock_message_for(&mut tx, id, actor, edit, MessageChange::Content).await?;
        let sql = format!("SELECT {LOCKED_COLUMNS} FROM MESSAGES WHERE id = ? FOR UPDATE");
        let row = sqlx::query(&sql)
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await?
            .map(|row| locked_row(&row))
            .transpose()?;
        let Some(row) = row.filter(|r| !r.deleted) else {
            return Err(StoreError::NotFound.into());
        };
        let columns = reseal(&self.cipher, &row, Some(content.as_str()))?.map_err(|error| {
            // The media fields of a row whose key is gone cannot be carried over.
            Failure::Store(StoreError::Unavailable(format!(
                "the message cannot be decrypted: {error}"
            )))
        })?;
        write_columns(&mut tx, id, columns, Some(at)).await?;
        let view = find_view(&mut tx, &self.cipher, id)
            .await?
            .ok_or(StoreError::NotFound)?;
        let edited = ChangeKind::MessageUpdated { message_id: id };
        change_log::record(
            &mut tx,
            &[NewChange::new(view.message.conversation_id, edited)],
        )
        .await?;
        tx.commit().await?;
        Ok(Edited { view, recipients })
    }

    async fn try_reencrypt_batch(
        &self,
        after: Option<MessageId>,
        limit: u32,
    ) -> Outcome<ReencryptBatch> {
        let Some(active) = self.cipher.active_key_id() else {
            return Ok(ReencryptBatch::default());
        };
        const DUE: &str = "is_system_message IS NOT TRUE \
             AND (encryption_key_id IS NULL OR encryption_key_id <> ?)";
        let after_text = after.map(|id| id.to_string()).unwrap_or_default();
        let mut tx = self.pool.begin().await?;
        // Locking reads see the newest committed version: an edit committed before is
        // re-sealed as edited; one that comes later waits for this short transaction.
        let sql = format!(
            "SELECT {LOCKED_COLUMNS} FROM MESSAGES WHERE id > ? AND {DUE} \
             ORDER BY id LIMIT ? FOR UPDATE"
        );
        let rows = sqlx::query(&sql)
            .bind(&after_text)
            .bind(active)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?;
        let mut batch = ReencryptBatch::default();
        for row in &rows {
            let row = locked_row(row)?;
            batch.last = Some(row.id);
            match reseal(&self.cipher, &row, None)? {
                Ok(columns) => {
                    write_columns(&mut tx, row.id, columns, None).await?;
                    batch.rewritten += 1;
                }
                Err(error) => {
                    tracing::error!(
                        message_id = %row.id,
                        key_id = row.stored.key_id.as_deref().unwrap_or(""),
                        %error,
                        "a stored message cannot be decrypted; re-encryption leaves it as it is"
                    );
                    batch.undecryptable += 1;
                }
            }
        }
        tx.commit().await?;
        let cursor = batch.last.map(|id| id.to_string()).unwrap_or(after_text);
        let remaining: i64 = sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM MESSAGES WHERE id > ? AND {DUE}"
        ))
        .bind(cursor)
        .bind(active)
        .fetch_one(&self.pool)
        .await?;
        batch.remaining = rows::count(remaining);
        Ok(batch)
    }
}

#[async_trait]
impl ReencryptStore for MySqlStore {
    async fn reencrypt_batch(
        &self,
        after: Option<MessageId>,
        limit: u32,
    ) -> Result<ReencryptBatch, StoreError> {
        crate::retrying!(self.try_reencrypt_batch(after, limit))
    }
}
