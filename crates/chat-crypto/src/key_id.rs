//! The name of a key in the ring, as stored in `MESSAGES.encryption_key_id VARCHAR(100)`.

use std::borrow::Borrow;
use std::fmt;

/// The longest key id: the width of `MESSAGES.encryption_key_id VARCHAR(100)` (ids are
/// ASCII, so bytes and characters agree).
pub const MAX_KEY_ID_BYTES: usize = 100;

/// The name of a key: 1 to 100 bytes of `A-Z a-z 0-9 . _ -`.
///
/// `:` is excluded because it separates the id from the key in `CHAT_ENCRYPTION_KEYS`, `,`
/// because it separates entries, and `#` because it starts a comment in the keys file. The
/// charset has no `+`, `/` or `=`, so a key pasted where an id belongs is usually refused
/// (and, like every refused id, never echoed in an error).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(String);

/// Why a text is not a [`KeyId`]. Deliberately carries no part of the text: a refused id may
/// be key material typed in the wrong place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyIdError {
    /// The id is empty.
    #[error("the key id is empty")]
    Empty,
    /// The id is longer than [`MAX_KEY_ID_BYTES`].
    #[error("the key id is longer than {MAX_KEY_ID_BYTES} bytes")]
    TooLong,
    /// The id holds a character outside `A-Z a-z 0-9 . _ -`.
    #[error("the key id may only hold A-Z, a-z, 0-9, '.', '_' and '-'")]
    BadCharacter,
}

impl KeyId {
    /// Parses a key id.
    ///
    /// # Errors
    /// A [`KeyIdError`] when the text is empty, longer than 100 bytes, or holds a character
    /// outside `A-Z a-z 0-9 . _ -`.
    pub fn parse(text: &str) -> Result<Self, KeyIdError> {
        if text.is_empty() {
            return Err(KeyIdError::Empty);
        }
        if text.len() > MAX_KEY_ID_BYTES {
            return Err(KeyIdError::TooLong);
        }
        if !text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(KeyIdError::BadCharacter);
        }
        Ok(Self(text.to_owned()))
    }

    /// The id as text, as written to `MESSAGES.encryption_key_id`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Lets a ring look a key up by the text of `encryption_key_id` without allocating; sound
/// because `Eq`, `Ord` and `Hash` are those of the inner `String`.
impl Borrow<str> for KeyId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({:?})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_are_short_and_plain() {
        let longest = "a".repeat(MAX_KEY_ID_BYTES);
        let too_long = "a".repeat(MAX_KEY_ID_BYTES + 1);
        let cases: &[(&str, Result<(), KeyIdError>)] = &[
            ("2026-11", Ok(())),
            ("prod_key.v2", Ok(())),
            (&longest, Ok(())),
            ("", Err(KeyIdError::Empty)),
            (&too_long, Err(KeyIdError::TooLong)),
            ("2026:11", Err(KeyIdError::BadCharacter)),
            ("a,b", Err(KeyIdError::BadCharacter)),
            ("key id", Err(KeyIdError::BadCharacter)),
            ("abc+/=", Err(KeyIdError::BadCharacter)),
            ("clé", Err(KeyIdError::BadCharacter)),
        ];
        for (text, expected) in cases {
            let got = KeyId::parse(text).map(|id| assert_eq!(id.as_str(), *text));
            assert_eq!(&got, expected, "{text:?}");
        }
    }
}
