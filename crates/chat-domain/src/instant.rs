//! The precision at which instants are kept: what a store writes and what a client reads
//! back, the same whichever store keeps them.

use crate::Timestamp;

/// The instant as every store keeps it: UTC, truncated to the whole second.
///
/// The deployed schema's `TIMESTAMP` columns keep whole seconds (migration 1, served as
/// deployed), so every adapter stores and returns instants at this precision; the in-memory
/// store does the same, so that both answer alike (ordering ties included).
pub fn to_stored_precision(at: Timestamp) -> Timestamp {
    let utc = at.to_offset(time::UtcOffset::UTC);
    utc.replace_nanosecond(0).unwrap_or(utc)
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::to_stored_precision;

    #[test]
    fn stored_instants_are_utc_whole_seconds() {
        assert_eq!(
            to_stored_precision(datetime!(2026-03-01 10:20:30.987_654 +02:00)),
            datetime!(2026-03-01 08:20:30 UTC)
        );
        let whole = datetime!(2026-03-01 08:20:30 UTC);
        assert_eq!(to_stored_precision(whole), whole);
        assert_eq!(to_stored_precision(whole).offset(), time::UtcOffset::UTC);
    }
}
