//! Encryption at rest on SQLite (docs/security.md): the sealed columns of a new message (by
//! the shared [`MessageCipher`]), the re-sealing of a row on edit, and `chatd reencrypt`'s
//! batches. The columns are `TEXT`, so a sealed media URL stays in `media_url`.

use async_trait::async_trait;
use chat_crypto::{MessageCipher, MessageFields, OpenError, StoredFields, row_ids};
use chat_domain::MessageId;
use chat_ports::{NewMessage, ReencryptBatch, ReencryptStore, StoreError};
use sqlx::{Row, SqliteConnection};

use crate::SqliteStore;
use crate::error::{Failure, Outcome};
use crate::rows;

/// The stored fields of a new message, sealed with `cipher` (plain for SYSTEM or no ring).
pub(crate) fn seal_new(
    cipher: &MessageCipher,
    new: &NewMessage,
) -> Result<StoredFields, sqlx::Error> {
    let body = &new.body;
    let fields = MessageFields {
        content: body.content().as_str().to_owned(),
        media_url: body.media_url().map(|u| u.as_str().to_owned()),
        media_metadata: body.media_metadata().map(|m| m.as_json().to_owned()),
    };
    cipher
        .seal(
            row_ids(new.id, new.conversation_id),
            body.is_system(),
            fields,
        )
        .map_err(|e| sqlx::Error::Encode(Box::new(e)))
}

/// Opens the row `id`, replaces its text when `content` is given, seals it again under the
/// active key with the row's ids and writes it back. The inner error when it cannot be
/// opened (the row is left as it is). Runs on the writer, so nothing changes the row
/// in between.
pub(crate) async fn reseal_row(
    conn: &mut SqliteConnection,
    cipher: &MessageCipher,
    id: MessageId,
    content: Option<&str>,
) -> Outcome<Result<(), OpenError>> {
    let row = sqlx::query(
        "SELECT conversation_id, is_system_message, content, media_url, media_metadata, \
         encryption_key_id FROM MESSAGES WHERE id = ?",
    )
    .bind(id.to_string())
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(StoreError::NotFound)?;
    let conversation = rows::conversation_id(&row.try_get::<String, _>("conversation_id")?)?;
    let is_system: bool = row.try_get("is_system_message")?;
    let stored = StoredFields {
        fields: MessageFields {
            content: row.try_get("content")?,
            media_url: row.try_get("media_url")?,
            media_metadata: row.try_get("media_metadata")?,
        },
        key_id: row.try_get("encryption_key_id")?,
    };
    let ids = row_ids(id, conversation);
    let mut fields = match cipher.open(ids, stored) {
        Ok(fields) => fields,
        Err(error) => return Ok(Err(error)),
    };
    if let Some(content) = content {
        content.clone_into(&mut fields.content);
    }
    let sealed = cipher
        .seal(ids, is_system, fields)
        .map_err(|e| Failure::Store(StoreError::Unavailable(e.to_string())))?;
    sqlx::query(
        "UPDATE MESSAGES SET content = ?, media_url = ?, media_metadata = ?, \
         encryption_key_id = ? WHERE id = ?",
    )
    .bind(sealed.fields.content)
    .bind(sealed.fields.media_url)
    .bind(sealed.fields.media_metadata)
    .bind(sealed.key_id)
    .bind(id.to_string())
    .execute(&mut *conn)
    .await?;
    Ok(Ok(()))
}

const DUE: &str = "is_system_message = 0 \
     AND (encryption_key_id IS NULL OR encryption_key_id <> ?)";

/// One batch on the writer's connection (one write request: nothing else writes meanwhile,
/// so an edit lands wholly before or wholly after it).
async fn batch(
    conn: &mut SqliteConnection,
    cipher: &MessageCipher,
    active: &str,
    after: Option<MessageId>,
    limit: u32,
) -> Outcome<ReencryptBatch> {
    let after_text = after.map(|id| id.to_string()).unwrap_or_default();
    let ids: Vec<String> = sqlx::query_scalar(&format!(
        "SELECT id FROM MESSAGES WHERE id > ? AND {DUE} ORDER BY id LIMIT ?"
    ))
    .bind(&after_text)
    .bind(active)
    .bind(i64::from(limit))
    .fetch_all(&mut *conn)
    .await?;
    let mut result = ReencryptBatch::default();
    for id in &ids {
        let id = rows::message_id(id)?;
        result.last = Some(id);
        match reseal_row(conn, cipher, id, None).await? {
            Ok(()) => result.rewritten += 1,
            Err(error) => {
                tracing::error!(
                    message_id = %id,
                    %error,
                    "a stored message cannot be decrypted; re-encryption leaves it as it is"
                );
                result.undecryptable += 1;
            }
        }
    }
    let cursor = result.last.map(|id| id.to_string()).unwrap_or(after_text);
    let remaining: i64 = sqlx::query_scalar(&format!(
        "SELECT COUNT(*) FROM MESSAGES WHERE id > ? AND {DUE}"
    ))
    .bind(cursor)
    .bind(active)
    .fetch_one(&mut *conn)
    .await?;
    result.remaining = rows::count(remaining);
    Ok(result)
}

#[async_trait]
impl ReencryptStore for SqliteStore {
    async fn reencrypt_batch(
        &self,
        after: Option<MessageId>,
        limit: u32,
    ) -> Result<ReencryptBatch, StoreError> {
        let cipher = self.cipher.clone();
        let Some(active) = cipher.active_key_id().map(str::to_owned) else {
            return Ok(ReencryptBatch::default());
        };
        self.write(move |conn| {
            Box::pin(async move { batch(conn, &cipher, &active, after, limit).await })
        })
        .await
    }
}
