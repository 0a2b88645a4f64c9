//! Sealing one column value of one message row with AES-256-GCM, and opening it again.
//!
//! Stored format (version 1): `v1.` followed by base64url without padding of
//! `nonce (12 bytes) ‖ ciphertext ‖ tag (16 bytes)`. It is ASCII (`A-Z a-z 0-9 - _ .`), so it
//! fits `TEXT` and `VARCHAR` byte for byte and needs no escaping inside a JSON string. Its
//! length is exactly [`sealed_len`] of the plaintext's UTF-8 length. For the JSON column
//! (`media_metadata`) the sealed text is stored as a JSON *string* value
//! ([`to_json_string`]); plain metadata is always a JSON object, so the two cannot be confused.
//!
//! Associated data binds a value to its place:
//! `"chat-crypto/v1" ‖ 0x00 ‖ column name ‖ 0x00 ‖ message id (16 bytes) ‖ conversation id (16 bytes)`.
//! A value copied to another row, another conversation, or another column of the same row
//! (`content` into `media_url`) fails authentication. The key id is not in the associated
//! data: naming another key fails authentication anyway.

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, Generate, Nonce, Payload};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use uuid::Uuid;

use crate::key_id::KeyId;
use crate::keyring::KeyRing;

/// The prefix of every sealed value in format version 1.
pub const FORMAT_PREFIX: &str = "v1.";
const NONCE_BYTES: usize = 12;
const TAG_BYTES: usize = 16;
const AAD_DOMAIN: &[u8] = b"chat-crypto/v1";

/// The column a value is sealed for; part of the associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    /// `MESSAGES.content` (`TEXT`).
    Content,
    /// `MESSAGES.media_url` (`VARCHAR(500)`).
    MediaUrl,
    /// `MESSAGES.media_metadata` (`JSON`): store [`to_json_string`] of the sealed text.
    MediaMetadata,
}

impl Field {
    /// The column's name, as bound into the associated data.
    pub fn column(self) -> &'static str {
        match self {
            Self::Content => "content",
            Self::MediaUrl => "media_url",
            Self::MediaMetadata => "media_metadata",
        }
    }
}

/// The row a value belongs to; part of the associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RowIds {
    /// `MESSAGES.id`.
    pub message_id: Uuid,
    /// `MESSAGES.conversation_id`.
    pub conversation_id: Uuid,
}

/// A sealed value: the key id for `encryption_key_id` and the text for the column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The key that sealed it (the ring's active key at the time).
    pub key_id: KeyId,
    /// The column text: `v1.` + base64url (no padding) of nonce ‖ ciphertext ‖ tag.
    pub stored: String,
}

/// Why a value could not be sealed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The operating system's random number generator failed to give a nonce.
    #[error("the system random number generator failed: {0}")]
    Random(String),
    /// AES-GCM refused the plaintext (longer than 64 GiB; unreachable for a message).
    #[error("encryption failed")]
    Encrypt,
}

/// Why a stored value could not be opened. None of the messages holds key material or
/// plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The row names a key the ring does not hold (removed too early, or a ring from
    /// another deployment).
    #[error("no key {key_id:?} in the key ring")]
    UnknownKey {
        /// The id as read from `encryption_key_id`.
        key_id: String,
    },
    /// The value does not authenticate under the named key with this row's associated data:
    /// it was altered, moved from another row or column, or the key with that id changed.
    #[error("the value sealed under key {key_id} failed authentication")]
    Authentication {
        /// The key tried.
        key_id: KeyId,
    },
    /// The text is not a sealed value of a known format version.
    #[error("the stored value is not a sealed value: {reason}")]
    Malformed {
        /// What is wrong, in a few words.
        reason: &'static str,
    },
}

/// The exact length in bytes (= characters, it is ASCII) of the stored text for a plaintext
/// of `plaintext_bytes` UTF-8 bytes: `3 + ceil(4 × (plaintext_bytes + 28) / 3)`.
pub const fn sealed_len(plaintext_bytes: usize) -> usize {
    let raw = NONCE_BYTES + plaintext_bytes + TAG_BYTES;
    FORMAT_PREFIX.len() + (raw * 4).div_ceil(3)
}

/// The text to write to a JSON column for a sealed value: a JSON string (`"v1.…"`). The
/// sealed alphabet needs no escaping.
pub fn to_json_string(stored: &str) -> String {
    format!("\"{stored}\"")
}

/// The sealed text inside JSON read back from a JSON column (surrounding white space
/// allowed).
///
/// # Errors
/// [`OpenError::Malformed`] when the JSON is not a plain string (for instance an object: the
/// metadata of a row written in plain text, whose key id would be `NULL`).
pub fn from_json_string(json_text: &str) -> Result<&str, OpenError> {
    json_text
        .trim()
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
        .filter(|inner| !inner.contains(['"', '\\']))
        .ok_or(OpenError::Malformed {
            reason: "the JSON value is not a sealed string",
        })
}

impl KeyRing {
    /// Seals `plaintext` for `field` of the row `ids` under the active key, with a fresh
    /// random nonce.
    ///
    /// # Errors
    /// [`SealError::Random`] when the system random number generator fails;
    /// [`SealError::Encrypt`] is unreachable for texts shorter than 64 GiB.
    pub fn seal(&self, field: Field, ids: RowIds, plaintext: &str) -> Result<Sealed, SealError> {
        // Unreachable error: every constructor checks that the active key is in the ring.
        let (key_id, cipher) = self.active_cipher().ok_or(SealError::Encrypt)?;
        let nonce =
            Nonce::<Aes256Gcm>::try_generate().map_err(|e| SealError::Random(e.to_string()))?;
        let aad = associated_data(field, ids);
        let sealed = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| SealError::Encrypt)?;
        let mut raw = Vec::with_capacity(NONCE_BYTES + sealed.len());
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(&sealed);
        let mut stored = String::with_capacity(sealed_len(plaintext.len()));
        stored.push_str(FORMAT_PREFIX);
        URL_SAFE_NO_PAD.encode_string(&raw, &mut stored);
        Ok(Sealed {
            key_id: key_id.clone(),
            stored,
        })
    }

    /// Opens a value sealed for `field` of the row `ids` under the key `key_id` (as read
    /// from `encryption_key_id`). The key is looked up first, so a row naming a missing key
    /// reports [`OpenError::UnknownKey`] whatever its text.
    ///
    /// # Errors
    /// [`OpenError::UnknownKey`] when the ring has no such key, [`OpenError::Malformed`] when
    /// the text is not `v1.` + base64url of at least 28 bytes, [`OpenError::Authentication`]
    /// when it does not authenticate for this row, column and key.
    pub fn open(
        &self,
        key_id: &str,
        field: Field,
        ids: RowIds,
        stored: &str,
    ) -> Result<String, OpenError> {
        let Some((known_id, cipher)) = self.cipher(key_id) else {
            return Err(OpenError::UnknownKey {
                key_id: key_id.to_owned(),
            });
        };
        let encoded = stored
            .strip_prefix(FORMAT_PREFIX)
            .ok_or(OpenError::Malformed {
                reason: "no v1. prefix",
            })?;
        let raw = URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|_| OpenError::Malformed {
                reason: "not base64url",
            })?;
        if raw.len() < NONCE_BYTES + TAG_BYTES {
            return Err(OpenError::Malformed {
                reason: "shorter than a nonce and a tag",
            });
        }
        let (nonce, sealed) = raw.split_at(NONCE_BYTES);
        let nonce = Nonce::<Aes256Gcm>::try_from(nonce).map_err(|_| OpenError::Malformed {
            reason: "shorter than a nonce and a tag",
        })?;
        let aad = associated_data(field, ids);
        let plaintext = cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: sealed,
                    aad: &aad,
                },
            )
            .map_err(|_| OpenError::Authentication {
                key_id: known_id.clone(),
            })?;
        String::from_utf8(plaintext).map_err(|_| OpenError::Malformed {
            reason: "the plaintext is not UTF-8",
        })
    }
}

fn associated_data(field: Field, ids: RowIds) -> Vec<u8> {
    let column = field.column().as_bytes();
    let mut aad = Vec::with_capacity(AAD_DOMAIN.len() + column.len() + 2 + 32);
    aad.extend_from_slice(AAD_DOMAIN);
    aad.push(0);
    aad.extend_from_slice(column);
    aad.push(0);
    aad.extend_from_slice(ids.message_id.as_bytes());
    aad.extend_from_slice(ids.conversation_id.as_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyring::KEY_BYTES;

    /// `MESSAGES.content TEXT`: 65,535 bytes.
    const TEXT_COLUMN_BYTES: usize = 65_535;
    /// `MESSAGES.media_url VARCHAR(500)`: 500 characters (ASCII here, so bytes).
    const MEDIA_URL_COLUMN_CHARS: usize = 500;

    fn id(text: &str) -> KeyId {
        KeyId::parse(text).unwrap()
    }

    fn ring(keys: &[(&str, u8)], active: &str) -> KeyRing {
        KeyRing::from_keys(
            keys.iter()
                .map(|(name, byte)| (id(name), [*byte; KEY_BYTES])),
            id(active),
        )
        .unwrap()
    }

    fn row() -> RowIds {
        RowIds {
            message_id: Uuid::now_v7(),
            conversation_id: Uuid::now_v7(),
        }
    }

    #[test]
    fn round_trip_in_every_field() {
        let ring = ring(&[("k1", 1)], "k1");
        let ids = row();
        for (field, text) in [
            (Field::Content, "héllo 😀"),
            (Field::Content, ""),
            (Field::MediaUrl, "https://cdn.example.com/a.png"),
            (Field::MediaMetadata, r#"{"width":640}"#),
        ] {
            let sealed = ring.seal(field, ids, text).unwrap();
            assert_eq!(sealed.key_id.as_str(), "k1");
            assert!(sealed.stored.starts_with(FORMAT_PREFIX));
            assert!(!sealed.stored.contains(text) || text.is_empty());
            assert_eq!(sealed.stored.len(), sealed_len(text.len()));
            assert_eq!(ring.open("k1", field, ids, &sealed.stored).unwrap(), text);
        }
    }

    #[test]
    fn associated_data_binds_the_value_to_its_row_and_column() {
        let ring = ring(&[("k1", 1)], "k1");
        let ids = row();
        let sealed = ring.seal(Field::Content, ids, "secret").unwrap();
        let elsewhere = [
            (
                Field::Content,
                RowIds {
                    message_id: Uuid::now_v7(),
                    ..ids
                },
            ),
            (
                Field::Content,
                RowIds {
                    conversation_id: Uuid::now_v7(),
                    ..ids
                },
            ),
            (
                Field::Content,
                RowIds {
                    message_id: ids.conversation_id,
                    conversation_id: ids.message_id,
                },
            ),
            (Field::MediaUrl, ids),
            (Field::MediaMetadata, ids),
        ];
        for (field, other) in elsewhere {
            assert_eq!(
                ring.open("k1", field, other, &sealed.stored),
                Err(OpenError::Authentication { key_id: id("k1") }),
                "{field:?} {other:?}"
            );
        }
    }

    #[test]
    fn unknown_key_is_reported_as_such() {
        let ring = ring(&[("k1", 1)], "k1");
        let ids = row();
        let sealed = ring.seal(Field::Content, ids, "secret").unwrap();
        for key_id in ["k0", "", "not a valid id"] {
            let err = ring
                .open(key_id, Field::Content, ids, &sealed.stored)
                .unwrap_err();
            assert_eq!(
                err,
                OpenError::UnknownKey {
                    key_id: key_id.to_owned()
                }
            );
        }
        assert!(
            ring.open("k0", Field::Content, ids, "garbage")
                .unwrap_err()
                .to_string()
                .contains("k0")
        );
    }

    #[test]
    fn a_key_with_the_same_id_but_other_bytes_fails_authentication() {
        let ids = row();
        let sealed = ring(&[("k1", 1)], "k1")
            .seal(Field::Content, ids, "secret")
            .unwrap();
        let impostor = ring(&[("k1", 2)], "k1");
        assert_eq!(
            impostor.open("k1", Field::Content, ids, &sealed.stored),
            Err(OpenError::Authentication { key_id: id("k1") })
        );
    }

    #[test]
    fn tampered_values_fail_authentication() {
        let ring = ring(&[("k1", 1)], "k1");
        let ids = row();
        let sealed = ring.seal(Field::Content, ids, "pay alice 10").unwrap();
        let raw = URL_SAFE_NO_PAD
            .decode(&sealed.stored[FORMAT_PREFIX.len()..])
            .unwrap();
        // Flip one bit in the nonce, the ciphertext and the tag in turn.
        for index in [0, NONCE_BYTES + 1, raw.len() - 1] {
            let mut altered = raw.clone();
            altered[index] ^= 0x01;
            let stored = format!("{FORMAT_PREFIX}{}", URL_SAFE_NO_PAD.encode(&altered));
            assert_eq!(
                ring.open("k1", Field::Content, ids, &stored),
                Err(OpenError::Authentication { key_id: id("k1") }),
                "byte {index}"
            );
        }
    }

    #[test]
    fn malformed_values_are_told_apart_from_forgeries() {
        let ring = ring(&[("k1", 1)], "k1");
        let ids = row();
        let sealed = ring.seal(Field::Content, ids, "hi").unwrap();
        let short = format!("{FORMAT_PREFIX}{}", URL_SAFE_NO_PAD.encode([0u8; 27]));
        for stored in [
            "hi",                                  // plain text under a key id
            &sealed.stored[FORMAT_PREFIX.len()..], // prefix lost
            &format!("v2.{}", &sealed.stored[3..]),
            &format!("{}=", sealed.stored), // padding is not part of the format
            &format!("{}+", sealed.stored), // standard alphabet is not either
            &short,
        ] {
            assert!(
                matches!(
                    ring.open("k1", Field::Content, ids, stored),
                    Err(OpenError::Malformed { .. })
                ),
                "{stored:?}"
            );
        }
    }

    #[test]
    fn every_seal_uses_a_fresh_nonce() {
        let ring = ring(&[("k1", 1)], "k1");
        let ids = row();
        let first = ring.seal(Field::Content, ids, "same text").unwrap();
        let second = ring.seal(Field::Content, ids, "same text").unwrap();
        assert_ne!(first.stored, second.stored);
        assert_ne!(
            first.stored[..3 + 16],
            second.stored[..3 + 16],
            "the nonces differ"
        );
        for sealed in [first, second] {
            assert_eq!(
                ring.open("k1", Field::Content, ids, &sealed.stored)
                    .unwrap(),
                "same text"
            );
        }
    }

    #[test]
    fn rotation_keeps_values_sealed_under_the_old_key_readable() {
        let ids = row();
        let before = ring(&[("2026-05", 5)], "2026-05");
        let old = before.seal(Field::Content, ids, "written in May").unwrap();

        let after = ring(&[("2026-05", 5), ("2026-11", 11)], "2026-11");
        let new = after
            .seal(Field::Content, ids, "written in November")
            .unwrap();
        assert_eq!(new.key_id.as_str(), "2026-11");
        assert_eq!(
            after
                .open("2026-05", Field::Content, ids, &old.stored)
                .unwrap(),
            "written in May"
        );
        assert_eq!(
            after
                .open("2026-11", Field::Content, ids, &new.stored)
                .unwrap(),
            "written in November"
        );

        // Re-encrypting moves the row to the active key; then the old key can go.
        let moved = after
            .seal(
                Field::Content,
                ids,
                &after
                    .open("2026-05", Field::Content, ids, &old.stored)
                    .unwrap(),
            )
            .unwrap();
        let pruned = ring(&[("2026-11", 11)], "2026-11");
        assert_eq!(
            pruned
                .open(moved.key_id.as_str(), Field::Content, ids, &moved.stored)
                .unwrap(),
            "written in May"
        );
        assert_eq!(
            pruned.open("2026-05", Field::Content, ids, &old.stored),
            Err(OpenError::UnknownKey {
                key_id: "2026-05".to_owned()
            })
        );
    }

    #[test]
    fn the_longest_message_fits_the_content_column_after_sealing() {
        // MessageContent allows 4000 characters; four-byte ones are the worst case.
        let longest = "😀".repeat(4000);
        assert_eq!(longest.len(), 16_000);
        let ring = ring(&[("k1", 1)], "k1");
        let ids = row();
        let sealed = ring.seal(Field::Content, ids, &longest).unwrap();
        // 3 + ceil(4 × (16,000 + 28) / 3) = 3 + 21,371.
        assert_eq!(sealed.stored.len(), 21_374);
        assert_eq!(sealed_len(longest.len()), 21_374);
        assert!(sealed.stored.is_ascii());
        assert!(sealed.stored.len() <= TEXT_COLUMN_BYTES);
        assert_eq!(
            ring.open("k1", Field::Content, ids, &sealed.stored)
                .unwrap(),
            longest
        );
    }

    #[test]
    fn the_longest_media_url_does_not_fit_varchar_500_after_sealing() {
        // MediaUrl allows 500 bytes; sealed, that is 707 characters. A sealed URL fits the
        // seed's VARCHAR(500) only up to 344 bytes, so media_url needs a wider home.
        let longest = format!("https://cdn.example.com/{}", "a".repeat(500 - 24));
        assert_eq!(longest.len(), 500);
        let sealed = ring(&[("k1", 1)], "k1")
            .seal(Field::MediaUrl, row(), &longest)
            .unwrap();
        assert_eq!(sealed.stored.len(), 707);
        assert!(sealed_len(344) <= MEDIA_URL_COLUMN_CHARS);
        assert!(sealed_len(345) > MEDIA_URL_COLUMN_CHARS);
    }

    #[test]
    fn the_largest_metadata_is_stored_as_a_json_string() {
        // MediaMetadata allows 4096 bytes of compact JSON; the JSON column holds up to 4 GiB.
        let metadata = format!(r#"{{"name":"{}"}}"#, "x".repeat(4096 - 11));
        assert_eq!(metadata.len(), 4096);
        let ring = ring(&[("k1", 1)], "k1");
        let ids = row();
        let sealed = ring.seal(Field::MediaMetadata, ids, &metadata).unwrap();
        let json = to_json_string(&sealed.stored);
        assert_eq!(json.len(), 2 + 5_502);
        let read_back = format!(" {json}\n");
        let stored = from_json_string(&read_back).unwrap();
        assert_eq!(
            ring.open("k1", Field::MediaMetadata, ids, stored).unwrap(),
            metadata
        );
        for not_sealed in [r#"{"width":640}"#, r#""a\"b""#, "\"unterminated", "42"] {
            assert!(
                matches!(
                    from_json_string(not_sealed),
                    Err(OpenError::Malformed { .. })
                ),
                "{not_sealed}"
            );
        }
    }

    #[test]
    fn errors_hold_no_plaintext_and_sealed_debug_holds_no_key() {
        let ring = ring(&[("k1", 0xA1)], "k1");
        let ids = row();
        let sealed = ring.seal(Field::Content, ids, "top secret").unwrap();
        let err = ring
            .open("k1", Field::MediaUrl, ids, &sealed.stored)
            .unwrap_err();
        assert!(!format!("{err} {err:?}").contains("top secret"));
        assert!(!format!("{sealed:?}").contains("161, 161"));
    }
}
