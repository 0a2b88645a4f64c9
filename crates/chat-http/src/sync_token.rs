//! The sync token on the wire: `v1.<feed id as 32 hex digits>.<position>`, the position in
//! the change feed a client has seen everything up to, and the feed (the deployment's
//! database) it belongs to. Clients treat it as opaque except for one rule: the token after
//! an event is the same text with the number after the last `.` replaced by the event's
//! `pos` (`docs/websocket.md` §6). It carries no user: the caller always comes from the
//! JWT, so a token names a position, never someone's view. Anything [`encode`] does not
//! produce is refused with 400; a token of another feed, or older than the retention, is
//! the service's to refuse (410 `sync_token_expired`).

use chat_domain::{FeedId, FeedPos};
use chat_service::SyncToken;

use crate::error::ApiError;

/// What a token looks like, exactly as [`decode`] accepts it (no leading zeros, lower-case
/// hex), for the OpenAPI document.
pub const PATTERN: &str = r"^v1\.[0-9a-f]{32}\.(0|[1-9][0-9]{0,18})$";

/// Encodes `token` for the wire.
pub fn encode(token: &SyncToken) -> String {
    format!("v1.{}.{}", token.feed_id, token.pos)
}

/// Decodes a token from the wire; `field` names where it came from (`since`) in the
/// refusal.
///
/// # Errors
/// `validation_failed` on `field` for anything [`encode`] did not produce.
pub fn decode(field: &str, text: &str) -> Result<SyncToken, ApiError> {
    parse(text).ok_or_else(|| ApiError::field(field, "is not a valid sync token"))
}

fn parse(text: &str) -> Option<SyncToken> {
    let mut parts = text.split('.');
    let (Some("v1"), Some(feed), Some(pos), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let lower_hex =
        feed.len() == 32 && feed.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let canonical = (pos == "0" || !pos.starts_with('0'))
        && (1..=19).contains(&pos.len())
        && pos.bytes().all(|b| b.is_ascii_digit());
    if !lower_hex || !canonical {
        return None;
    }
    Some(SyncToken {
        feed_id: FeedId::parse_hex(feed).ok()?,
        pos: FeedPos::new(pos.parse().ok()?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(pos: u64) -> SyncToken {
        SyncToken {
            feed_id: FeedId::random(),
            pos: FeedPos::new(pos),
        }
    }

    #[test]
    fn round_trips_and_matches_the_pattern() {
        let pattern = regex::Regex::new(PATTERN).unwrap();
        for pos in [0, 1, 42, 9_999_999_999_999_999_999] {
            let token = token(pos);
            let text = encode(&token);
            assert!(pattern.is_match(&text), "{text}");
            assert_eq!(decode("since", &text), Ok(token));
        }
    }

    #[test]
    fn refuses_what_encode_never_writes_and_the_pattern_refuses_it_too() {
        let pattern = regex::Regex::new(PATTERN).unwrap();
        let feed = FeedId::random().to_string();
        let upper = feed.to_uppercase();
        let cases = [
            String::new(),
            "v1".to_owned(),
            format!("v1.{feed}"),
            format!("v1.{feed}."),
            format!("v1.{feed}.-1"),
            format!("v1.{feed}.01"),
            format!("v1.{feed}.1.2"),
            format!("v1.{feed}.+1"),
            format!("v1.{feed}.1a"),
            format!("v1.{feed}.18446744073709551615"),
            format!("v1.{upper}.1"),
            format!("v2.{feed}.1"),
            format!("v1.{}.1", &feed[1..]),
            format!("v1.{feed}0.1"),
            format!("v1.{}-{}.1", &feed[..8], &feed[9..]),
            format!("v1.{feed}.١"),
            "v3.1.0123456789abcdef0123456789abcdef".to_owned(),
        ];
        for text in cases {
            let refused = decode("since", &text).unwrap_err();
            assert_eq!(refused.code(), "validation_failed", "{text}");
            let problem = refused.problem();
            assert_eq!(problem.errors.unwrap()[0].field, "since", "{text}");
            assert!(!pattern.is_match(&text), "the pattern allows {text}");
        }
    }
}
