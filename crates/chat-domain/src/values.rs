//! Value objects parsed from untrusted input: message content, group names, media URLs and
//! metadata, emoji, client message ids and display names.
//!
//! Lengths are counted in Unicode scalar values ("characters"), which is how MySQL counts
//! `VARCHAR(n)` in `utf8mb4`, so a value accepted here always fits its column.

use std::fmt;

use unicode_segmentation::UnicodeSegmentation;

use crate::ValidationError;

/// The most characters a message may hold.
pub const MAX_CONTENT_CHARS: usize = 4000;
/// The most characters a group name may hold (the `name` column is `VARCHAR(200)`).
pub const MAX_GROUP_NAME_CHARS: usize = 200;
/// The most bytes a media URL may hold (the `media_url` column is `VARCHAR(500)`).
pub const MAX_MEDIA_URL_BYTES: usize = 500;
/// The most bytes of media metadata, as compact JSON.
pub const MAX_MEDIA_METADATA_BYTES: usize = 4096;
/// The most code points of one emoji (the `emoji` column is `VARCHAR(10)`).
pub const MAX_EMOJI_CODE_POINTS: usize = 10;
/// The most bytes of one emoji.
pub const MAX_EMOJI_BYTES: usize = 40;
/// The most characters of a client message id.
pub const MAX_CLIENT_MESSAGE_ID_CHARS: usize = 64;
/// The most characters of a display name.
pub const MAX_DISPLAY_NAME_CHARS: usize = 100;

/// The text of a message: 1 to 4000 characters, not only white space. Stored as given
/// (leading and trailing white space is the author's).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MessageContent(String);

impl MessageContent {
    /// Parses message text.
    ///
    /// # Errors
    /// A [`ValidationError`] on `content` when the text is blank, longer than 4000
    /// characters, or holds a NUL character.
    pub fn parse(text: impl Into<String>) -> Result<Self, ValidationError> {
        let text = text.into();
        if text.trim().is_empty() {
            return Err(ValidationError::new("content", "must not be blank"));
        }
        if text.chars().count() > MAX_CONTENT_CHARS {
            return Err(ValidationError::new(
                "content",
                format!("must be at most {MAX_CONTENT_CHARS} characters"),
            ));
        }
        if text.contains('\0') {
            return Err(ValidationError::new("content", "must not contain NUL"));
        }
        Ok(Self(text))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The text, owned.
    pub fn into_inner(self) -> String {
        self.0
    }
}

/// The name of a group: 1 to 200 characters after trimming; stored trimmed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupName(String);

impl GroupName {
    /// Parses a group name, trimming surrounding white space.
    ///
    /// # Errors
    /// A [`ValidationError`] on `name` when nothing is left after trimming, or more than
    /// 200 characters are.
    pub fn parse(text: &str) -> Result<Self, ValidationError> {
        trimmed_name(text, MAX_GROUP_NAME_CHARS).map(Self)
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A link to media: an absolute `http` or `https` URL with a host, at most 500 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MediaUrl(String);

impl MediaUrl {
    /// Parses a media URL. The text is kept as given (not re-serialised), so what the
    /// client sent is what it reads back.
    ///
    /// # Errors
    /// A [`ValidationError`] on `media_url` for another scheme, a relative URL, a missing
    /// host, or more than 500 bytes.
    pub fn parse(text: &str) -> Result<Self, ValidationError> {
        if text.len() > MAX_MEDIA_URL_BYTES {
            return Err(ValidationError::new(
                "media_url",
                format!("must be at most {MAX_MEDIA_URL_BYTES} bytes"),
            ));
        }
        let parsed = url::Url::parse(text)
            .map_err(|_| ValidationError::new("media_url", "must be an absolute URL"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ValidationError::new("media_url", "must use http or https"));
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(ValidationError::new("media_url", "must have a host"));
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ValidationError::new(
                "media_url",
                "must not contain white space",
            ));
        }
        Ok(Self(text.to_owned()))
    }

    /// The URL as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Structured details about media (dimensions, file name, …) or a system message: a JSON
/// object of at most 4 KiB, kept as compact JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaMetadata(String);

impl MediaMetadata {
    /// Parses JSON text that must hold one object.
    ///
    /// # Errors
    /// A [`ValidationError`] on `media_metadata` when the text is not JSON, not an object,
    /// or larger than 4 KiB once compacted.
    pub fn parse(json_text: &str) -> Result<Self, ValidationError> {
        let value: tinyjson::JsonValue = json_text
            .parse()
            .map_err(|_| ValidationError::new("media_metadata", "must be valid JSON"))?;
        if !value.is_object() {
            return Err(ValidationError::new(
                "media_metadata",
                "must be a JSON object",
            ));
        }
        let compact = value
            .stringify()
            .map_err(|_| ValidationError::new("media_metadata", "must be valid JSON"))?;
        if compact.len() > MAX_MEDIA_METADATA_BYTES {
            return Err(ValidationError::new(
                "media_metadata",
                format!("must be at most {MAX_MEDIA_METADATA_BYTES} bytes"),
            ));
        }
        Ok(Self(compact))
    }

    /// Builds metadata from string pairs (for system messages).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, MetadataValue)>) -> Self {
        let mut object = std::collections::HashMap::new();
        for (key, value) in pairs {
            let json = match value {
                MetadataValue::Text(text) => tinyjson::JsonValue::String(text),
                MetadataValue::Integer(n) => tinyjson::JsonValue::Number(n as f64),
                MetadataValue::Integers(list) => tinyjson::JsonValue::Array(
                    list.into_iter()
                        .map(|n| tinyjson::JsonValue::Number(n as f64))
                        .collect(),
                ),
            };
            object.insert(key.to_owned(), json);
        }
        let text = tinyjson::JsonValue::Object(object)
            .stringify()
            .unwrap_or_else(|_| "{}".to_owned());
        Self(text)
    }

    /// The compact JSON text of the object.
    pub fn as_json(&self) -> &str {
        &self.0
    }
}

/// A value inside metadata built by [`MediaMetadata::from_pairs`].
#[derive(Debug, Clone, PartialEq)]
pub enum MetadataValue {
    /// A string.
    Text(String),
    /// A whole number (user ids fit exactly in an `f64` up to 2^53).
    Integer(i64),
    /// A list of whole numbers.
    Integers(Vec<i64>),
}

/// One emoji: exactly one grapheme cluster that Unicode lists as an emoji (skin tones,
/// ZWJ sequences, flags and keycaps included), at most 10 code points and 40 bytes.
/// Different emoji are always different values, compared code point by code point.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Emoji(String);

impl Emoji {
    /// Parses an emoji.
    ///
    /// # Errors
    /// A [`ValidationError`] on `emoji` for text that is not exactly one emoji.
    pub fn parse(text: &str) -> Result<Self, ValidationError> {
        let bad = |reason: &str| ValidationError::new("emoji", reason.to_owned());
        if text.is_empty() {
            return Err(bad("must not be empty"));
        }
        if text.len() > MAX_EMOJI_BYTES || text.chars().count() > MAX_EMOJI_CODE_POINTS {
            return Err(bad("must be a single emoji of at most 10 code points"));
        }
        if text.graphemes(true).count() != 1 {
            return Err(bad("must be exactly one emoji"));
        }
        if emojis::get(text).is_none() {
            return Err(bad("must be an emoji"));
        }
        Ok(Self(text.to_owned()))
    }

    /// The emoji.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Every emoji [`Emoji::parse`] accepts in its fully qualified spelling, skin tones
    /// included (for the API's description; minimally qualified spellings are accepted
    /// too).
    pub fn all() -> impl Iterator<Item = Emoji> {
        emojis::iter()
            .flat_map(|emoji| {
                let tones: Vec<&'static emojis::Emoji> = match emoji.skin_tones() {
                    Some(tones) => tones.collect(),
                    None => vec![emoji],
                };
                tones
            })
            .filter_map(|emoji| Emoji::parse(emoji.as_str()).ok())
    }
}

impl fmt::Display for Emoji {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A sender-chosen key that makes sending idempotent: 1 to 64 printable ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientMessageId(String);

impl ClientMessageId {
    /// Parses a client message id.
    ///
    /// # Errors
    /// A [`ValidationError`] on `client_message_id` when empty, longer than 64, or holding
    /// anything but printable ASCII.
    pub fn parse(text: &str) -> Result<Self, ValidationError> {
        if text.is_empty() || text.len() > MAX_CLIENT_MESSAGE_ID_CHARS {
            return Err(ValidationError::new(
                "client_message_id",
                "must be 1 to 64 characters",
            ));
        }
        if !text.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
            return Err(ValidationError::new(
                "client_message_id",
                "must be printable ASCII",
            ));
        }
        Ok(Self(text.to_owned()))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How a user is shown to others: 1 to 100 characters after trimming, no control
/// characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DisplayName(String);

impl DisplayName {
    /// Parses a display name, trimming surrounding white space.
    ///
    /// # Errors
    /// A [`ValidationError`] on `name` when blank, too long or holding control characters.
    pub fn parse(text: &str) -> Result<Self, ValidationError> {
        trimmed_name(text, MAX_DISPLAY_NAME_CHARS).map(Self)
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A name as people type it: trimmed, 1 to `max` characters, no control characters.
fn trimmed_name(text: &str, max: usize) -> Result<String, ValidationError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(ValidationError::new("name", "must not be blank"));
    }
    if trimmed.chars().count() > max {
        return Err(ValidationError::new(
            "name",
            format!("must be at most {max} characters"),
        ));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(ValidationError::new(
            "name",
            "must not contain control characters",
        ));
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn check<T>(parse: impl Fn(&str) -> Result<T, ValidationError>, cases: &[(&str, bool)]) {
        for (text, ok) in cases {
            assert_eq!(parse(text).is_ok(), *ok, "{text:?}");
        }
    }

    #[test]
    fn content_table() {
        let long_ok = "é".repeat(4000);
        let too_long = "a".repeat(4001);
        check(
            |t| MessageContent::parse(t),
            &[
                ("hi", true),
                ("  padded  ", true),
                ("🎉🎉", true),
                (&long_ok, true),
                (&too_long, false),
                ("", false),
                ("   \n\t ", false),
                ("nul\0byte", false),
            ],
        );
    }

    #[test]
    fn group_name_is_trimmed_and_bounded() {
        assert_eq!(
            GroupName::parse("  Team 🚀 ").map(|n| n.0),
            Ok("Team 🚀".into())
        );
        let max = "ß".repeat(200);
        check(
            GroupName::parse,
            &[(&max, true), (&"x".repeat(201), false), ("   ", false)],
        );
    }

    #[test]
    fn media_url_table() {
        let long = format!("https://example.com/{}", "a".repeat(481));
        check(
            MediaUrl::parse,
            &[
                ("https://cdn.example.com/a.png", true),
                ("http://example.com", true),
                ("ftp://example.com/a", false),
                ("javascript:alert(1)", false),
                ("/relative/path.png", false),
                ("https://", false),
                (&long, false),
            ],
        );
    }

    #[test]
    fn media_metadata_must_be_a_small_object() {
        check(
            MediaMetadata::parse,
            &[
                (r#"{"w":10,"h":20}"#, true),
                ("{}", true),
                ("[1,2]", false),
                ("\"text\"", false),
                ("{oops", false),
            ],
        );
        let big = format!(r#"{{"k":"{}"}}"#, "x".repeat(4100));
        assert!(MediaMetadata::parse(&big).is_err());
    }

    #[test]
    fn emoji_table() {
        check(
            Emoji::parse,
            &[
                ("👍", true),
                ("👍🏽", true),
                ("❤️", true),
                ("🇫🇷", true),
                ("👨‍👩‍👧‍👦", true),
                ("1️⃣", true),
                ("🏳️‍🌈", true),
                ("", false),
                ("a", false),
                ("👍👍", false),
                (":+1:", false),
                ("👍 ", false),
                ("x\u{301}", false),
            ],
        );
    }

    #[test]
    fn distinct_emoji_stay_distinct() {
        let sushi = Emoji::parse("🍣").map(|e| e.0);
        let beer = Emoji::parse("🍺").map(|e| e.0);
        assert_ne!(sushi, beer);
        assert_ne!(Emoji::parse("👍").ok(), Emoji::parse("👍🏿").ok());
        let all: Vec<Emoji> = Emoji::all().collect();
        assert!(all.len() > 3000, "{}", all.len());
        assert!(all.iter().any(|e| e.as_str() == "👍🏿"));
    }

    #[test]
    fn client_message_id_table() {
        check(
            ClientMessageId::parse,
            &[
                ("abc-123", true),
                (&"k".repeat(64), true),
                (&"k".repeat(65), false),
                ("", false),
                ("tab\there", false),
                ("é", false),
            ],
        );
    }

    proptest! {
        #[test]
        fn content_accepts_exactly_the_non_blank_bounded_texts(text in "\\PC{0,50}") {
            let expected = !text.trim().is_empty() && !text.contains('\0');
            prop_assert_eq!(MessageContent::parse(text.clone()).is_ok(), expected);
        }

        #[test]
        fn parsed_content_round_trips(text in "[a-z]{1,40}") {
            let parsed = MessageContent::parse(text.clone()).map(MessageContent::into_inner);
            prop_assert_eq!(parsed, Ok(text));
        }

        #[test]
        fn group_names_are_always_trimmed(text in "\\s{0,3}[a-zA-Z0-9 ]{1,30}\\s{0,3}") {
            if let Ok(name) = GroupName::parse(&text) {
                prop_assert_eq!(name.as_str(), text.trim());
                prop_assert!(!name.as_str().is_empty());
            } else {
                prop_assert!(text.trim().is_empty());
            }
        }

        #[test]
        fn client_ids_of_printable_ascii_parse(text in "[ -~]{1,64}") {
            prop_assert!(ClientMessageId::parse(&text).is_ok());
        }

        #[test]
        fn emoji_never_holds_two_graphemes(a in "\\PC", b in "\\PC") {
            let joined = format!("{a}{b}");
            if let Ok(e) = Emoji::parse(&joined) {
                prop_assert_eq!(e.as_str().graphemes(true).count(), 1);
            }
        }
    }
}
