//! The opaque inbox cursor: base64url of `v1:<activity millis>:<conversation id>`. Clients
//! pass it back unchanged; anything else is refused with 400.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chat_domain::ConversationId;
use chat_service::InboxCursor;

use crate::error::ApiError;

/// Encodes a cursor for the wire.
pub fn encode(cursor: &InboxCursor) -> String {
    let millis = cursor.activity_at.unix_timestamp_nanos() / 1_000_000;
    URL_SAFE_NO_PAD.encode(format!("v1:{millis}:{}", cursor.conversation_id))
}

/// Decodes a cursor from the wire.
///
/// # Errors
/// `validation_failed` on `cursor` for anything [`encode`] did not produce.
pub fn decode(text: &str) -> Result<InboxCursor, ApiError> {
    let bad = || ApiError::field("cursor", "is not a valid cursor");
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
    }

    #[test]
    fn refuses_garbage() {
        for text in [
            "",
            "!!!",
            "djE6YWJjOmRlZg",
            &URL_SAFE_NO_PAD.encode("v2:1:x"),
        ] {
            assert!(decode(text).is_err(), "{text}");
        }
    }
}
