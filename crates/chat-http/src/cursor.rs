//! The opaque inbox cursor: `v3.<activity micros>.<conversation id as 32 hex digits>`: the
//! store's exact activity instant, finer than a second so that conversations active within
//! the same second page in order, in a form the OpenAPI document can describe exactly
//! ([`PATTERN`]). Clients pass it back unchanged; anything else is refused with 400.
//! Cursors of the previous form (base64url of `v1:<millis>:<id>`) are still read, so pages
//! in flight across an upgrade go on.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chat_domain::ConversationId;
use chat_service::InboxCursor;

use crate::error::ApiError;

/// What a cursor looks like (an empty `cursor` stands for the first page).
pub const PATTERN: &str = r"^(v3\.[0-9]{1,18}\.[0-9a-f]{32})?$";

/// Encodes a cursor for the wire.
pub fn encode(cursor: &InboxCursor) -> String {
    let micros = cursor.activity_at.unix_timestamp_nanos() / 1_000;
    format!("v3.{micros}.{}", cursor.conversation_id.as_uuid().simple())
}

/// Decodes a cursor of the current form; `None` for anything else.
fn decode_v3(text: &str) -> Option<InboxCursor> {
    let mut parts = text.split('.');
    let (Some("v3"), Some(micros), Some(id), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let digits = |s: &str, max: usize| {
        !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_digit())
    };
    let hex = id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !digits(micros, 18) || !hex {
        return None;
    }
    let micros: i128 = micros.parse().ok()?;
    Some(InboxCursor {
        activity_at: time::OffsetDateTime::from_unix_timestamp_nanos(micros * 1_000).ok()?,
        conversation_id: ConversationId::parse(id).ok()?,
    })
}

/// Decodes a cursor from the wire.
///
/// # Errors
/// `validation_failed` on `cursor` for anything [`encode`] did not produce.
pub fn decode(text: &str) -> Result<InboxCursor, ApiError> {
    let bad = || ApiError::field("cursor", "is not a valid cursor");
    if text.starts_with("v3.") {
        return decode_v3(text).ok_or_else(bad);
    }
    let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let mut parts = text.splitn(3, ':');
    let (Some(version), Some(instant), Some(id)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let nanos_per_unit: i128 = match version {
        "v1" => 1_000_000,
        "v2" => 1_000,
        _ => return Err(bad()),
    };
    let instant: i128 = instant.parse().map_err(|_| bad())?;
    let nanos = instant.checked_mul(nanos_per_unit).ok_or_else(bad)?;
    let activity_at = time::OffsetDateTime::from_unix_timestamp_nanos(nanos).map_err(|_| bad())?;
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
            activity_at: datetime!(2026-11-24 10:00:00.123_456 UTC),
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
    fn reads_the_earlier_millisecond_form() {
        let id = ConversationId::new();
        let text = URL_SAFE_NO_PAD.encode(format!("v1:1795860000123:{id}"));
        assert_eq!(
            decode(&text),
            Ok(InboxCursor {
                activity_at: datetime!(2026-11-28 10:00:00.123 UTC),
                conversation_id: id,
            })
        );
    }

    #[test]
    fn refuses_garbage() {
        for text in [
            "",
            "!!!",
            "djE6YWJjOmRlZg",
            &URL_SAFE_NO_PAD.encode("v2:1:x"),
            &URL_SAFE_NO_PAD.encode(format!("v3:1:{}", ConversationId::new())),
            "v3.1.abc",
            "v3..0123456789abcdef0123456789abcdef",
            "v3.1.0123456789ABCDEF0123456789ABCDEF",
            "v3.1.0123456789abcdef0123456789abcdef.",
            "v3.1234567890123456789.0123456789abcdef0123456789abcdef",
            "v2.1.0123456789abcdef0123456789abcdef",
        ] {
            assert!(decode(text).is_err(), "{text}");
        }
    }
}
