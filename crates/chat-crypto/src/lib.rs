//! Encryption at rest for the text of messages: a [`KeyRing`] configured outside the database,
//! and AES-256-GCM sealing of one column value bound to its row and column.
//!
//! A storage adapter seals `content`, `media_url` and `media_metadata` before it writes a
//! message and opens them when it reads one back, with the key the row names in
//! `MESSAGES.encryption_key_id`. The service and the wire never see ciphertext.
//!
//! ```
//! use chat_crypto::{Field, KeyRing, RowIds};
//! use uuid::Uuid;
//!
//! // `CHAT_ENCRYPTION_KEYS` as it would come from the environment (32 bytes, base64).
//! let keys = "2026-11:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".to_owned();
//! let ring = KeyRing::from_env_lookup(|name| match name {
//!     "CHAT_ENCRYPTION_KEYS" => Some(keys.clone()),
//!     _ => None,
//! })?
//! .expect("a key ring is configured");
//!
//! let row = RowIds { message_id: Uuid::now_v7(), conversation_id: Uuid::now_v7() };
//! let sealed = ring.seal(Field::Content, row, "hello")?;
//! assert_eq!(sealed.key_id.as_str(), "2026-11");
//! assert!(sealed.stored.starts_with("v1."));
//! let opened = ring.open(sealed.key_id.as_str(), Field::Content, row, &sealed.stored)?;
//! assert_eq!(opened, "hello");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]

pub mod codec;
pub mod key_id;
pub mod keyring;
pub mod seal;

pub use codec::{MessageCipher, MessageFields, StoredFields, row_ids};
pub use key_id::{KeyId, KeyIdError, MAX_KEY_ID_BYTES};
pub use keyring::{ACTIVE_KEY_VAR, KEY_BYTES, KEYS_FILE_VAR, KEYS_VAR, KeyRing, KeyRingError};
pub use seal::{
    FORMAT_PREFIX, Field, OpenError, RowIds, SealError, Sealed, from_json_string, sealed_len,
    to_json_string,
};
