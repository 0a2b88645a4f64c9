//! Identifiers: UUID newtypes for conversations, messages and postings, the numeric user
//! id, and `Seq`, a message's position within its conversation.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

use crate::ValidationError;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh, time-ordered identifier (UUIDv7).
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// Wraps an existing UUID (any version: rows written by the database's `UUID()`
            /// are version 1).
            pub fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// Parses the hyphenated or simple textual form.
            ///
            /// # Errors
            /// A [`ValidationError`] when the text is not a UUID.
            pub fn parse(text: &str) -> Result<Self, ValidationError> {
                Uuid::parse_str(text.trim())
                    .map(Self)
                    .map_err(|_| ValidationError::new($field, "must be a UUID"))
            }

            /// The underlying UUID.
            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = ValidationError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }
    };
}

uuid_id!(
    /// Identifies a conversation.
    ConversationId,
    "conversation_id"
);
uuid_id!(
    /// Identifies a message.
    MessageId,
    "message_id"
);
uuid_id!(
    /// Identifies a posting of the surrounding platform (for POST_LINKED conversations).
    PostingId,
    "posting_id"
);

/// Identifies a user of the platform: a positive 64-bit integer (`app_users.id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(i64);

impl UserId {
    /// Parses a user id from its integer value.
    ///
    /// # Errors
    /// A [`ValidationError`] when the value is zero or negative.
    pub fn new(value: i64) -> Result<Self, ValidationError> {
        if value > 0 {
            Ok(Self(value))
        } else {
            Err(ValidationError::new(
                "user_id",
                "must be a positive integer",
            ))
        }
    }

    /// Parses a user id from its decimal text (as carried in a token's `sub`).
    ///
    /// # Errors
    /// A [`ValidationError`] when the text is not a positive decimal integer.
    pub fn parse(text: &str) -> Result<Self, ValidationError> {
        let bad = || ValidationError::new("user_id", "must be a positive decimal integer");
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        text.parse::<i64>().map_err(|_| bad()).and_then(Self::new)
    }

    /// The integer value.
    pub fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A message's position in its conversation: 1 for the first message, then consecutive.
/// `Seq::ZERO` stands for "before the first message" (for example a read marker that has
/// read nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Seq(i64);

impl Seq {
    /// Before the first message.
    pub const ZERO: Seq = Seq(0);

    /// Parses a sequence number.
    ///
    /// # Errors
    /// A [`ValidationError`] when the value is negative.
    pub fn new(value: i64) -> Result<Self, ValidationError> {
        if value >= 0 {
            Ok(Self(value))
        } else {
            Err(ValidationError::new("seq", "must not be negative"))
        }
    }

    /// The integer value.
    pub fn get(self) -> i64 {
        self.0
    }

    /// The position after this one.
    #[must_use]
    pub fn next(self) -> Seq {
        Seq(self.0.saturating_add(1))
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_id_accepts_only_positive_decimal() {
        for (text, ok) in [
            ("1", true),
            ("9223372036854775807", true),
            ("0", false),
            ("-3", false),
            ("+3", false),
            ("", false),
            ("12a", false),
            ("9223372036854775808", false),
            (" 7", false),
        ] {
            assert_eq!(UserId::parse(text).is_ok(), ok, "{text:?}");
        }
    }

    #[test]
    fn new_ids_are_version_7_and_ordered() {
        let a = MessageId::new();
        let b = MessageId::new();
        assert_eq!(a.as_uuid().get_version_num(), 7);
        assert!(a <= b);
        assert_eq!(MessageId::parse(&a.to_string()), Ok(a));
    }

    #[test]
    fn database_made_uuids_are_accepted() {
        let legacy = "6ccd780c-baba-1026-9564-5b8c656024db";
        assert_eq!(
            ConversationId::parse(legacy).map(|c| c.to_string()),
            Ok(legacy.to_owned())
        );
        assert!(ConversationId::parse("not-a-uuid").is_err());
    }

    #[test]
    fn seq_is_never_negative() {
        assert!(Seq::new(-1).is_err());
        assert_eq!(Seq::ZERO.next().get(), 1);
    }
}
