//! The change feed's vocabulary: one [`Change`] per durable change, numbered by a
//! [`FeedPos`] that every node of a deployment shares, and the rule that decides which
//! changes a reader may see ([`visible_changes`]: membership over time).
//!
//! A change holds references and small facts (ids, `seq`s, roles, an emoji), never
//! message text or a group name: the feed is hydrated from the current rows when it is
//! read, so deleted content is never served through it and nothing in it needs sealing.

use std::collections::HashMap;
use std::fmt;

use crate::{ConversationId, MessageId, Role, Seq, Timestamp, UserId, ValidationError};

/// A position in the change feed: the changes a reader has seen are those at or below
/// it. Positions are assigned in commit order, without gaps, from 1; `FeedPos::ZERO` is
/// before every change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct FeedPos(u64);

impl FeedPos {
    /// Before every change.
    pub const ZERO: FeedPos = FeedPos(0);

    /// The position `value`.
    pub const fn new(value: u64) -> Self {
        Self(value)
    }

    /// A position read from a signed column (`BIGINT`).
    ///
    /// # Errors
    /// A [`ValidationError`] when the value is negative.
    pub fn from_i64(value: i64) -> Result<Self, ValidationError> {
        u64::try_from(value)
            .map(Self)
            .map_err(|_| ValidationError::new("feed_pos", "must not be negative"))
    }

    /// The number.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The number for a signed column (`BIGINT`); positions stay far below `i64::MAX`.
    pub fn as_i64(self) -> i64 {
        i64::try_from(self.0).unwrap_or(i64::MAX)
    }

    /// The position after this one.
    #[must_use]
    pub const fn next(self) -> Self {
        Self(self.0.saturating_add(1))
    }
}

impl fmt::Display for FeedPos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The identity of one change feed (one database): a token from another feed is not
/// comparable with this one's positions. Chosen at random when the feed is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FeedId(uuid::Uuid);

impl FeedId {
    /// A new, random feed identity.
    pub fn random() -> Self {
        Self(uuid::Uuid::new_v4())
    }

    /// The identity stored as `bytes`.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(uuid::Uuid::from_bytes(bytes))
    }

    /// The stored form.
    pub const fn to_bytes(self) -> [u8; 16] {
        *self.0.as_bytes()
    }

    /// Parses the 32 hex digits [`FeedId`]'s `Display` writes.
    ///
    /// # Errors
    /// A [`ValidationError`] when `text` is not 32 hex digits.
    pub fn parse_hex(text: &str) -> Result<Self, ValidationError> {
        if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ValidationError::new("feed_id", "must be 32 hex digits"));
        }
        uuid::Uuid::try_parse(text)
            .map(Self)
            .map_err(|_| ValidationError::new("feed_id", "must be 32 hex digits"))
    }
}

impl fmt::Display for FeedId {
    /// 32 lower-case hex digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.simple())
    }
}

/// What changed, by reference. Each variant is announced to clients as the
/// [`ChatEvent`](crate::ChatEvent) of the same name, hydrated from the current rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeKind {
    /// A message was appended (any type, SYSTEM announcements included).
    MessageCreated {
        /// The message.
        message_id: MessageId,
    },
    /// A message's content was edited.
    MessageUpdated {
        /// The message.
        message_id: MessageId,
    },
    /// A message was soft-deleted.
    MessageDeleted {
        /// The message.
        message_id: MessageId,
        /// Its position in the conversation.
        seq: Seq,
    },
    /// A reaction was put on a message.
    ReactionAdded {
        /// The message.
        message_id: MessageId,
        /// Who reacted.
        user_id: UserId,
        /// The emoji, as stored.
        emoji: String,
    },
    /// A reaction was taken off a message.
    ReactionRemoved {
        /// The message.
        message_id: MessageId,
        /// Who had reacted.
        user_id: UserId,
        /// The emoji, as stored.
        emoji: String,
    },
    /// A read marker moved forward.
    ConversationRead {
        /// The reader.
        user_id: UserId,
        /// The newest `seq` read.
        last_read_seq: Seq,
        /// When.
        last_read_at: Timestamp,
    },
    /// A conversation was created (a DIRECT one included), with its first participants.
    ConversationCreated,
    /// A conversation was renamed, archived or unarchived.
    ConversationUpdated,
    /// A user was added or re-added.
    ParticipantAdded {
        /// The user.
        user_id: UserId,
        /// Their role.
        role: Role,
    },
    /// A user left or was removed.
    ParticipantRemoved {
        /// The user.
        user_id: UserId,
    },
    /// A participant's role changed.
    ParticipantUpdated {
        /// The participant.
        user_id: UserId,
        /// The new role.
        role: Role,
    },
}

impl ChangeKind {
    /// The wire name of the event it is announced as (`message.created`, …); adapters
    /// store it as the entry's kind.
    pub fn name(&self) -> &'static str {
        match self {
            ChangeKind::MessageCreated { .. } => "message.created",
            ChangeKind::MessageUpdated { .. } => "message.updated",
            ChangeKind::MessageDeleted { .. } => "message.deleted",
            ChangeKind::ReactionAdded { .. } => "reaction.added",
            ChangeKind::ReactionRemoved { .. } => "reaction.removed",
            ChangeKind::ConversationRead { .. } => "conversation.read",
            ChangeKind::ConversationCreated => "conversation.created",
            ChangeKind::ConversationUpdated => "conversation.updated",
            ChangeKind::ParticipantAdded { .. } => "participant.added",
            ChangeKind::ParticipantRemoved { .. } => "participant.removed",
            ChangeKind::ParticipantUpdated { .. } => "participant.updated",
        }
    }

    /// The user whose membership this change starts or ends, if any.
    pub fn membership_move(&self) -> Option<(UserId, MembershipMove)> {
        match self {
            ChangeKind::ParticipantAdded { user_id, .. } => {
                Some((*user_id, MembershipMove::Joined))
            }
            ChangeKind::ParticipantRemoved { user_id } => Some((*user_id, MembershipMove::Left)),
            _ => None,
        }
    }
}

/// One entry of the change feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Its position.
    pub pos: FeedPos,
    /// The conversation it belongs to.
    pub conversation_id: ConversationId,
    /// When it was committed (as the store's clock says).
    pub at: Timestamp,
    /// What changed.
    pub kind: ChangeKind,
}

/// A membership starting or ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MembershipMove {
    /// The user was added (or re-added).
    Joined,
    /// The user left or was removed.
    Left,
}

/// What a store knows of one reader's membership of one conversation, enough to tell
/// whether the reader was a member just after a position `after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MembershipWindow {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// Whether the reader is an active participant now.
    pub active_now: bool,
    /// The reader's first membership change in this conversation after `after`, if any
    /// (the earliest `participant.added` or `participant.removed` about the reader).
    pub first_move_after: Option<MembershipMove>,
}

impl MembershipWindow {
    /// Whether the reader was a member just after `after`: a first move that joins says
    /// no, one that leaves says yes, and without any move the membership is what it is
    /// now.
    pub fn member_at_start(&self) -> bool {
        match self.first_move_after {
            Some(MembershipMove::Joined) => false,
            Some(MembershipMove::Left) => true,
            None => self.active_now,
        }
    }
}

/// The changes (oldest first, all after one position) that `reader` may see: those of
/// a conversation while the reader was a member of it, from the change that added them
/// to the change that removed them, both included; a conversation's creation is seen by
/// its first participants. `windows` must hold one entry for every conversation of
/// `changes`; a conversation without one is not shown.
pub fn visible_changes(
    reader: UserId,
    changes: Vec<Change>,
    windows: &[MembershipWindow],
) -> Vec<Change> {
    let mut member: HashMap<ConversationId, bool> = windows
        .iter()
        .map(|w| (w.conversation_id, w.member_at_start()))
        .collect();
    changes
        .into_iter()
        .filter(|change| {
            let Some(is_member) = member.get_mut(&change.conversation_id) else {
                return false;
            };
            match change.kind.membership_move() {
                Some((user, MembershipMove::Joined)) if user == reader => {
                    *is_member = true;
                    true
                }
                Some((user, MembershipMove::Left)) if user == reader => {
                    let seen = *is_member;
                    *is_member = false;
                    seen
                }
                _ => *is_member,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: i64) -> UserId {
        UserId::new(id).unwrap()
    }

    const READER: i64 = 7;

    /// A change at `pos` of `conversation`.
    fn at(pos: u64, conversation: ConversationId, kind: ChangeKind) -> Change {
        Change {
            pos: FeedPos::new(pos),
            conversation_id: conversation,
            at: time::OffsetDateTime::UNIX_EPOCH,
            kind,
        }
    }

    fn message() -> ChangeKind {
        ChangeKind::MessageCreated {
            message_id: MessageId::new(),
        }
    }

    fn added(id: i64) -> ChangeKind {
        ChangeKind::ParticipantAdded {
            user_id: user(id),
            role: Role::Member,
        }
    }

    fn removed(id: i64) -> ChangeKind {
        ChangeKind::ParticipantRemoved { user_id: user(id) }
    }

    fn window(
        conversation: ConversationId,
        active_now: bool,
        first_move_after: Option<MembershipMove>,
    ) -> MembershipWindow {
        MembershipWindow {
            conversation_id: conversation,
            active_now,
            first_move_after,
        }
    }

    /// Checks that the reader sees exactly the changes of `kinds` marked `true`.
    fn check(
        kinds: Vec<(ChangeKind, bool)>,
        window_of: impl Fn(ConversationId) -> MembershipWindow,
    ) {
        let conversation = ConversationId::new();
        let changes: Vec<Change> = (1_u64..)
            .zip(&kinds)
            .map(|(pos, (kind, _))| at(pos, conversation, kind.clone()))
            .collect();
        let expected: Vec<Change> = changes
            .iter()
            .zip(&kinds)
            .filter(|(_, (_, seen))| *seen)
            .map(|(c, _)| c.clone())
            .collect();
        let seen = visible_changes(user(READER), changes, &[window_of(conversation)]);
        assert_eq!(seen, expected);
    }

    #[test]
    fn member_at_start_follows_the_first_move_else_the_present() {
        let c = ConversationId::new();
        let table = [
            (true, None, true),
            (false, None, false),
            (true, Some(MembershipMove::Joined), false),
            (false, Some(MembershipMove::Joined), false),
            (true, Some(MembershipMove::Left), true),
            (false, Some(MembershipMove::Left), true),
        ];
        for (active_now, first_move, expected) in table {
            assert_eq!(
                window(c, active_now, first_move).member_at_start(),
                expected,
                "active now {active_now}, first move {first_move:?}"
            );
        }
    }

    #[test]
    fn a_member_throughout_sees_everything_others_moves_included() {
        check(
            vec![
                (message(), true),
                (added(2), true),
                (removed(3), true),
                (ChangeKind::ConversationUpdated, true),
            ],
            |c| window(c, true, None),
        );
    }

    #[test]
    fn a_first_participant_sees_the_creation() {
        check(
            vec![(ChangeKind::ConversationCreated, true), (message(), true)],
            |c| window(c, true, None),
        );
    }

    #[test]
    fn a_first_participant_removed_later_sees_the_creation_and_its_removal_only() {
        check(
            vec![
                (ChangeKind::ConversationCreated, true),
                (message(), true),
                (removed(READER), true),
                (message(), false),
                (ChangeKind::ConversationUpdated, false),
            ],
            |c| window(c, false, Some(MembershipMove::Left)),
        );
    }

    #[test]
    fn someone_added_later_sees_from_their_adding_on() {
        check(
            vec![
                (ChangeKind::ConversationCreated, false),
                (message(), false),
                (added(READER), true),
                (message(), true),
            ],
            |c| window(c, true, Some(MembershipMove::Joined)),
        );
    }

    #[test]
    fn a_rejoining_reader_misses_what_happened_while_away() {
        check(
            vec![
                (message(), true),
                (removed(READER), true),
                (message(), false),
                (added(2), false),
                (added(READER), true),
                (message(), true),
                (removed(READER), true),
                (message(), false),
            ],
            |c| window(c, false, Some(MembershipMove::Left)),
        );
        // Resumed while away: the first move ahead is the rejoining.
        check(
            vec![(message(), false), (added(READER), true), (message(), true)],
            |c| window(c, true, Some(MembershipMove::Joined)),
        );
    }

    #[test]
    fn a_never_member_and_a_conversation_without_window_show_nothing() {
        check(vec![(message(), false), (added(2), false)], |c| {
            window(c, false, None)
        });
        let c = ConversationId::new();
        let other = ConversationId::new();
        let seen = visible_changes(
            user(READER),
            vec![at(1, c, message())],
            &[window(other, true, None)],
        );
        assert!(seen.is_empty());
    }

    #[test]
    fn conversations_keep_their_own_windows_and_the_order() {
        let (a, b) = (ConversationId::new(), ConversationId::new());
        let changes = vec![
            at(1, a, message()),
            at(2, b, message()),
            at(3, b, added(READER)),
            at(4, a, removed(READER)),
            at(5, b, message()),
            at(6, a, message()),
        ];
        let seen = visible_changes(
            user(READER),
            changes.clone(),
            &[
                window(a, false, Some(MembershipMove::Left)),
                window(b, true, Some(MembershipMove::Joined)),
            ],
        );
        let positions: Vec<u64> = seen.iter().map(|c| c.pos.get()).collect();
        assert_eq!(positions, vec![1, 3, 4, 5]);
    }
}
