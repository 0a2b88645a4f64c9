//! The one codec every storage adapter uses between a message's plain fields and the fields
//! it stores: [`MessageCipher`] seals `content`, `media_url` and `media_metadata` of a user's
//! message under the ring's active key, and opens them with the key the row names. Without a
//! key ring it passes the fields through, and the row's `encryption_key_id` stays `NULL`.
//!
//! SYSTEM messages stay plain: they hold no user text beyond names the service writes, and
//! the previous system reads them. A row that names a key the ring lacks, or fails
//! authentication, opens as an *undecryptable* message (no text, no media) and the failure is
//! logged with the key id, so one bad row never fails a page.

use std::sync::Arc;

use chat_domain::{ConversationId, Message, MessageId};

use crate::keyring::KeyRing;
use crate::seal::{Field, OpenError, RowIds, SealError, from_json_string, to_json_string};

/// The three encrypted fields of a message, either as the service sees them (plain) or as
/// the store keeps them (sealed, see [`StoredFields`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageFields {
    /// `content`.
    pub content: String,
    /// `media_url`.
    pub media_url: Option<String>,
    /// `media_metadata`, as JSON text: an object when plain, a JSON string when sealed.
    pub media_metadata: Option<String>,
}

/// The fields as stored, with the key that sealed them (`None`: plain text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFields {
    /// The column values.
    pub fields: MessageFields,
    /// `encryption_key_id`.
    pub key_id: Option<String>,
}

/// A handle on the key ring, or on none: cheap to clone, shared by an adapter's operations.
#[derive(Debug, Clone, Default)]
pub struct MessageCipher {
    ring: Option<Arc<KeyRing>>,
}

/// The row ids as the associated data binds them.
pub fn row_ids(message: MessageId, conversation: ConversationId) -> RowIds {
    RowIds {
        message_id: message.as_uuid(),
        conversation_id: conversation.as_uuid(),
    }
}

impl MessageCipher {
    /// A codec that stores plain text (no key ring configured).
    pub fn plain() -> Self {
        Self { ring: None }
    }

    /// A codec over `ring`; `None` stores plain text.
    pub fn new(ring: Option<Arc<KeyRing>>) -> Self {
        Self { ring }
    }

    /// The key ring, when one is configured.
    pub fn key_ring(&self) -> Option<&KeyRing> {
        self.ring.as_deref()
    }

    /// The id of the key new rows are sealed with, when a ring is configured.
    pub fn active_key_id(&self) -> Option<&str> {
        self.ring.as_deref().map(|r| r.active_key_id().as_str())
    }

    /// Whether a user's row stored under `key_id` should be rewritten to the active key by
    /// re-encryption: it is plain, or sealed under another key. Always false without a ring.
    pub fn needs_reencrypt(&self, key_id: Option<&str>) -> bool {
        match (self.active_key_id(), key_id) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(active), Some(id)) => active != id,
        }
    }

    /// The fields to store for the message `ids` with plain `fields`: sealed under the
    /// active key for a user's message when a ring is configured, as they are otherwise
    /// (SYSTEM messages, or no ring).
    ///
    /// # Errors
    /// A [`SealError`] when the system random number generator fails.
    pub fn seal(
        &self,
        ids: RowIds,
        system: bool,
        fields: MessageFields,
    ) -> Result<StoredFields, SealError> {
        let Some(ring) = self.ring.as_deref().filter(|_| !system) else {
            return Ok(StoredFields {
                fields,
                key_id: None,
            });
        };
        let content = ring.seal(Field::Content, ids, &fields.content)?;
        let media_url = fields
            .media_url
            .map(|url| ring.seal(Field::MediaUrl, ids, &url).map(|s| s.stored))
            .transpose()?;
        let media_metadata = fields
            .media_metadata
            .map(|json| {
                ring.seal(Field::MediaMetadata, ids, &json)
                    .map(|s| to_json_string(&s.stored))
            })
            .transpose()?;
        Ok(StoredFields {
            fields: MessageFields {
                content: content.stored,
                media_url,
                media_metadata,
            },
            key_id: Some(content.key_id.as_str().to_owned()),
        })
    }

    /// The plain fields of the row `ids` as stored. Rows without a key id are plain.
    ///
    /// # Errors
    /// An [`OpenError`] when the row names a key the ring lacks (or there is no ring), or a
    /// value does not authenticate for this row.
    pub fn open(&self, ids: RowIds, stored: StoredFields) -> Result<MessageFields, OpenError> {
        let Some(key_id) = stored.key_id else {
            return Ok(stored.fields);
        };
        let Some(ring) = self.ring.as_deref() else {
            return Err(OpenError::UnknownKey { key_id });
        };
        let fields = stored.fields;
        let content = ring.open(&key_id, Field::Content, ids, &fields.content)?;
        let media_url = fields
            .media_url
            .map(|url| ring.open(&key_id, Field::MediaUrl, ids, &url))
            .transpose()?;
        let media_metadata = fields
            .media_metadata
            .map(|json| {
                from_json_string(&json)
                    .and_then(|sealed| ring.open(&key_id, Field::MediaMetadata, ids, sealed))
            })
            .transpose()?;
        Ok(MessageFields {
            content,
            media_url,
            media_metadata,
        })
    }

    /// Turns `message`, read with its fields as stored under `key_id`, into the message the
    /// service sees. When it cannot be opened, its text and media are cleared, it is marked
    /// [`Message::undecryptable`], and an error naming the key id (never a key or a text)
    /// is logged.
    pub fn open_message(&self, message: &mut Message, key_id: Option<&str>) {
        let Some(key_id) = key_id else {
            return;
        };
        let stored = StoredFields {
            fields: MessageFields {
                content: std::mem::take(&mut message.content),
                media_url: message.media_url.take(),
                media_metadata: message.media_metadata.take(),
            },
            key_id: Some(key_id.to_owned()),
        };
        match self.open(row_ids(message.id, message.conversation_id), stored) {
            Ok(fields) => {
                message.content = fields.content;
                message.media_url = fields.media_url;
                message.media_metadata = fields.media_metadata;
            }
            Err(error) => {
                tracing::error!(
                    message_id = %message.id,
                    key_id,
                    %error,
                    "a stored message cannot be decrypted; it is served as undecryptable"
                );
                message.undecryptable = true;
            }
        }
    }
}
