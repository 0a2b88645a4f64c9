//! Per-connection de-duplication by feed position: the hub delivers stored changes at
//! least once (a change replayed on resume may also arrive live, a node may relay one
//! twice), and a client must see each exactly once. Live frames arrive in position order
//! per conversation but not necessarily across conversations, so "drop anything at or
//! below the newest position sent" would drop a change that was merely late; this keeps
//! the positions sent above a floor instead, and raises the floor past the oldest once
//! it holds [`RECENT_POSITIONS`].

use std::collections::BTreeSet;

use chat_domain::FeedPos;

/// How many sent positions above the floor are remembered: a duplicate is recognised
/// when it arrives within this many newer frames of the original, and a late change is
/// still delivered if it is no more than this many frames late.
pub(crate) const RECENT_POSITIONS: usize = 4096;

/// The positions a connection has sent.
#[derive(Debug, Default)]
pub(crate) struct SentPositions {
    /// Everything at or below it counts as sent (the replay ended there, or it fell out
    /// of `recent`).
    floor: FeedPos,
    /// Positions sent above `floor`.
    recent: BTreeSet<FeedPos>,
}

impl SentPositions {
    /// Whether a frame at `pos` is new: if so it counts as sent from now on.
    pub(crate) fn admit(&mut self, pos: FeedPos) -> bool {
        if pos <= self.floor || !self.recent.insert(pos) {
            return false;
        }
        if self.recent.len() > RECENT_POSITIONS {
            if let Some(oldest) = self.recent.pop_first() {
                self.floor = oldest;
            }
        }
        true
    }

    /// Everything at or below `pos` counts as sent (a replay or a fresh load covered it).
    pub(crate) fn raise_floor(&mut self, pos: FeedPos) {
        if pos > self.floor {
            self.floor = pos;
            self.recent = self.recent.split_off(&pos.next());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(pos: u64) -> FeedPos {
        FeedPos::new(pos)
    }

    #[test]
    fn each_position_passes_once_even_out_of_order() {
        let mut sent = SentPositions::default();
        let arrivals = [3, 5, 4, 5, 3, 9, 6, 4, 9];
        let passed: Vec<u64> = arrivals
            .into_iter()
            .filter(|&pos| sent.admit(at(pos)))
            .collect();
        assert_eq!(passed, vec![3, 5, 4, 9, 6]);
    }

    #[test]
    fn the_floor_drops_what_a_replay_covered_and_keeps_what_is_above() {
        let mut sent = SentPositions::default();
        assert!(sent.admit(at(12)));
        sent.raise_floor(at(10));
        assert!(!sent.admit(at(12)), "sent before the floor moved");
        assert!(!sent.admit(at(10)));
        assert!(!sent.admit(at(1)));
        assert!(sent.admit(at(11)));
        sent.raise_floor(at(5));
        assert!(sent.admit(at(13)), "a lower floor changes nothing");
        assert!(!sent.admit(at(13)));
    }

    #[test]
    fn memory_is_bounded_and_the_oldest_becomes_the_floor() {
        let mut sent = SentPositions::default();
        let total = RECENT_POSITIONS as u64 + 10;
        for pos in 1..=total {
            assert!(sent.admit(at(pos)));
        }
        assert_eq!(sent.recent.len(), RECENT_POSITIONS);
        assert_eq!(sent.floor, at(10));
        assert!(!sent.admit(at(5)));
        assert!(!sent.admit(at(total)));
        assert!(sent.admit(at(total + 1)));
    }
}
