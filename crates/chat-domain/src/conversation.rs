//! Conversations and their participants, as stored, and the details view that carries a
//! conversation together with everyone who ever took part.

use crate::{ConversationId, ConversationType, PostingId, Role, Seq, Timestamp, UserId};

/// A stored conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversation {
    /// Its id.
    pub id: ConversationId,
    /// DIRECT, GROUP or POST_LINKED.
    pub kind: ConversationType,
    /// The group name, as stored (none for DIRECT).
    pub name: Option<String>,
    /// The linked posting (POST_LINKED only).
    pub posting_id: Option<PostingId>,
    /// Who created it.
    pub created_by: UserId,
    /// When it was created.
    pub created_at: Timestamp,
    /// When its newest message was sent.
    pub last_message_at: Option<Timestamp>,
    /// Whether it is archived (read-only).
    pub is_archived: bool,
    /// When it was archived.
    pub archived_at: Option<Timestamp>,
}

impl Conversation {
    /// When something last happened: the newest message, else the creation.
    pub fn activity_at(&self) -> Timestamp {
        self.last_message_at.unwrap_or(self.created_at)
    }
}

/// A user's membership of a conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Participant {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// The user.
    pub user_id: UserId,
    /// ADMIN or MEMBER.
    pub role: Role,
    /// When they joined (or rejoined).
    pub joined_at: Timestamp,
    /// When they left or were removed; `None` while active.
    pub left_at: Option<Timestamp>,
    /// When their read marker last moved.
    pub last_read_at: Option<Timestamp>,
    /// The newest `seq` they have read.
    pub last_read_seq: Seq,
    /// Whether notifications and the unread badge leave this conversation out.
    pub is_muted: bool,
}

impl Participant {
    /// Whether the user currently takes part.
    pub fn is_active(&self) -> bool {
        self.left_at.is_none()
    }

    /// Whether the user is an active admin.
    pub fn is_active_admin(&self) -> bool {
        self.is_active() && self.role == Role::Admin
    }
}

/// A participant with the display name the user directory knows.
#[derive(Debug, Clone, PartialEq)]
pub struct ParticipantView {
    /// The membership.
    pub participant: Participant,
    /// The user's display name, if known.
    pub display_name: Option<String>,
}

/// A conversation with every participant it ever had (those who left included, so that a
/// re-added user can be recognised), in order of joining.
#[derive(Debug, Clone, PartialEq)]
pub struct ConversationDetails {
    /// The conversation.
    pub conversation: Conversation,
    /// Every participant, active or not, earliest joined first.
    pub participants: Vec<ParticipantView>,
}

impl ConversationDetails {
    /// The membership of `user`, active or not.
    pub fn participant(&self, user: UserId) -> Option<&Participant> {
        self.participants
            .iter()
            .map(|p| &p.participant)
            .find(|p| p.user_id == user)
    }

    /// The membership of `user` if it is active.
    pub fn active_participant(&self, user: UserId) -> Option<&Participant> {
        self.participant(user).filter(|p| p.is_active())
    }

    /// The active participants' views, earliest joined first.
    pub fn active_participants(&self) -> impl Iterator<Item = &ParticipantView> {
        self.participants
            .iter()
            .filter(|p| p.participant.is_active())
    }

    /// The ids of the active participants.
    pub fn active_user_ids(&self) -> Vec<UserId> {
        self.active_participants()
            .map(|p| p.participant.user_id)
            .collect()
    }

    /// How many active admins there are.
    pub fn active_admin_count(&self) -> usize {
        self.active_participants()
            .filter(|p| p.participant.role == Role::Admin)
            .count()
    }
}
