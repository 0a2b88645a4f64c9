//! The opaque inbox cursor: `v2.<activity millis>.<conversation id as 32 hex digits>`, a
//! form the OpenAPI document can describe exactly ([`PATTERN`]). Clients pass it back
//! unchanged; anything else is refused with 400. Cursors of the previous form (base64url
//! of `v1:<millis>:<id>`) are still read, so pages in flight across an upgrade go on.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chat_domain::ConversationId;
use chat_service::InboxCursor;

use crate::error::ApiError;

/// What a cursor looks like (an empty `cursor` stands for the first page).
pub const PATTERN: &str = r"^(v2\.[0-9]{1,14}\.[0-9a-f]{32})?$";

/// Encodes a cursor for the wire.
pub fn encode(cursor: &InboxCursor) -> String {
    let millis = cursor.activity_at.unix_timestamp_nanos() / 1_000_000;
    format!("v2.{millis}.{}", cursor.conversation_id.as_uuid().simple())
}

/// Decodes a cursor of the current form; `None` for anything else.
fn decode_v2(text: &str) -> Option<InboxCursor> {
    let mut parts = text.split('.');
    let (Some("v2"), Some(millis), Some(id), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let digits = |s: &str, max: usize| {
        !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_digit())
    };
    let hex = id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !digits(millis, 14) || !hex {
        return None;
    }
    let millis: i128 = millis.parse().ok()?;
    Some(InboxCursor {
        activity_at: time::OffsetDateTime::from_unix_timestamp_nanos(millis * 1_000_000).ok()?,
        conversation_id: ConversationId::parse(id).ok()?,
    })
}

/// Decodes a cursor from the wire.
///
/// # Errors
/// `validation_failed` on `cursor` for anything [`encode`] did not produce.
pub fn decode(text: &str) -> Result<InboxCursor, ApiError> {
    let bad = || ApiError::field("cursor", "is not a valid cursor");
    if text.starts_with("v2.") {
        return decode_v2(text).ok_or_else(bad);
    }
    let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let mut parts = text.splitn(3, ':');
    let (Some("v1"), Some(millis), Some(id)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    let millis: i128 = millis.parse().map_err(|_| bad())?;
    let activity_at =
        time::OffsetDateTime::from_unix_timestamp_nanos(millis * 1_000_000).map_err(|_| bad())?;
    let conversation_id = ConversationId::parse(id).map_err(|_| bad())?;
    Ok(InboxCursor {
        activity_at,
        conversation_id,
    })
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn round_trips() {
        let cursor = InboxCursor {
            activity_at: datetime!(2026-11-24 10:00:00.123 UTC),
            conversation_id: ConversationId::new(),
        };
        assert_eq!(decode(&encode(&cursor)), Ok(cursor));
        let text = encode(&cursor);
        let pattern = regex::Regex::new(PATTERN).unwrap();
        assert!(pattern.is_match(&text), "{text}");
    }

    #[test]
    fn reads_cursors_of_the_previous_form() {
        let cursor = InboxCursor {
            activity_at: datetime!(2026-11-24 10:00:00.123 UTC),
            conversation_id: ConversationId::new(),
        };
        let legacy = URL_SAFE_NO_PAD.encode(format!("v1:1795514400123:{}", cursor.conversation_id));
        assert_eq!(decode(&legacy), Ok(cursor));
    }

    #[test]
    fn refuses_garbage() {
        for text in [
            "",
            "!!!",
            "djE6YWJjOmRlZg",
            &URL_SAFE_NO_PAD.encode("v2:1:x"),
            "v2.1.abc",
            "v2..0123456789abcdef0123456789abcdef",
            "v2.1.0123456789ABCDEF0123456789ABCDEF",
            "v2.1.0123456789abcdef0123456789abcdef.",
            "v2.123456789012345.0123456789abcdef0123456789abcdef",
        ] {
            assert!(decode(text).is_err(), "{text}");
        }
    }
}
