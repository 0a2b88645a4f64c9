//! The opaque inbox cursor: base64url of `v2:<activity micros>:<conversation id>` (the
//! store's exact activity instant, finer than a second so that conversations active within
//! the same second page in order). Cursors of the earlier `v1:<activity millis>:<id>` form
//! are still read. Clients pass it back unchanged; anything else is refused with 400.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chat_domain::ConversationId;
use chat_service::InboxCursor;

use crate::error::ApiError;

/// Encodes a cursor for the wire.
pub fn encode(cursor: &InboxCursor) -> String {
    let micros = cursor.activity_at.unix_timestamp_nanos() / 1_000;
    URL_SAFE_NO_PAD.encode(format!("v2:{micros}:{}", cursor.conversation_id))
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
        ] {
            assert!(decode(text).is_err(), "{text}");
        }
    }
}
