//! Who may do what in a conversation: the one statement of the permission rules (rules 4,
//! 5, 12 and 13 of `docs/rules.md`) and of the participant limit, decided from the
//! conversation's kind and the actor's active membership. The service checks it before a
//! write to answer early, and every store checks it again on the rows it holds locked, so
//! that a rule a write depends on cannot change between the check and the write.

use crate::{ConversationType, Role, UserId};

/// Something an actor does in a conversation that a rule permits or refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Rename it.
    Rename,
    /// Archive or unarchive it.
    Archive,
    /// Add participants.
    AddParticipants,
    /// Remove a participant; `target` is the actor themself when they leave.
    RemoveParticipant {
        /// Who is removed.
        target: UserId,
    },
    /// Change a participant's role.
    SetRole,
    /// Edit a message.
    EditMessage {
        /// The message's sender.
        sender: UserId,
        /// Whether it is a SYSTEM message.
        is_system: bool,
    },
    /// Delete a message.
    DeleteMessage {
        /// The message's sender.
        sender: UserId,
    },
    /// Add or remove one's reaction.
    React,
    /// Move one's read marker.
    MarkRead,
}

/// Why an action is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The actor is not an active participant: for them the conversation does not exist
    /// (rule 4: `NotFound`, never `Forbidden`).
    #[error("not an active participant")]
    NotParticipant,
    /// The actor takes part but the rule does not let them do this.
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// The change would take the conversation past its participant limit.
    #[error("a conversation has at most {max} participants")]
    TooManyParticipants {
        /// The limit.
        max: usize,
    },
}

/// Decides whether `actor`, whose active membership has role `role` (`None` when they are
/// not an active participant), may do `action` in a conversation of kind `kind`.
///
/// # Errors
/// [`Refusal::NotParticipant`] without an active membership; [`Refusal::Forbidden`] with
/// the reason when the rule refuses the actor.
pub fn authorize(
    kind: ConversationType,
    actor: UserId,
    role: Option<Role>,
    action: Action,
) -> Result<(), Refusal> {
    let Some(role) = role else {
        return Err(Refusal::NotParticipant);
    };
    let direct = kind == ConversationType::Direct;
    let admin = role == Role::Admin;
    let refuse = |reason| Err(Refusal::Forbidden(reason));
    match action {
        Action::Rename if direct => refuse("a DIRECT conversation has no name"),
        Action::Rename if !admin => refuse("only admins may change the conversation"),
        Action::Archive if !direct && !admin => refuse("only admins may change the conversation"),
        Action::AddParticipants | Action::SetRole if direct => {
            refuse("a DIRECT conversation has no admin actions")
        }
        Action::AddParticipants | Action::SetRole if !admin => refuse("only admins may do this"),
        Action::RemoveParticipant { .. } if direct => {
            refuse("nobody joins or leaves a DIRECT conversation")
        }
        Action::RemoveParticipant { target } if target != actor && !admin => {
            refuse("only admins may remove participants")
        }
        Action::EditMessage { sender, .. } if sender != actor => {
            refuse("only the sender may edit a message")
        }
        Action::EditMessage {
            is_system: true, ..
        } => refuse("SYSTEM messages cannot be edited"),
        Action::DeleteMessage { sender } if sender != actor && (direct || !admin) => {
            refuse("only the sender or an admin may delete a message")
        }
        _ => Ok(()),
    }
}

/// Decides whether a conversation may have `active_after` active participants (rule 1:
/// at most `max`).
///
/// # Errors
/// [`Refusal::TooManyParticipants`] above the limit.
pub fn check_participant_limit(active_after: usize, max: usize) -> Result<(), Refusal> {
    if active_after > max {
        Err(Refusal::TooManyParticipants { max })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn user(id: i64) -> UserId {
        UserId::new(id).unwrap()
    }

    /// One row per case: kind, role of actor 1 (`None`: not active), action, allowed?
    fn check(kind: ConversationType, role: Option<Role>, action: Action, allowed: bool) {
        let decided = authorize(kind, user(1), role, action);
        assert_eq!(
            decided.is_ok(),
            allowed,
            "{kind:?} {role:?} {action:?}: {decided:?}"
        );
        if role.is_none() {
            assert_eq!(decided, Err(Refusal::NotParticipant));
        }
    }

    #[test]
    fn the_permission_matrix() {
        use Action as A;
        use ConversationType::{Direct, Group, PostLinked};
        let admin = Some(Role::Admin);
        let member = Some(Role::Member);
        let mine = user(1);
        let theirs = user(2);
        for kind in [Group, PostLinked] {
            for (action, admin_may, member_may) in [
                (A::Rename, true, false),
                (A::Archive, true, false),
                (A::AddParticipants, true, false),
                (A::SetRole, true, false),
                (A::RemoveParticipant { target: theirs }, true, false),
                (A::RemoveParticipant { target: mine }, true, true),
                (A::DeleteMessage { sender: theirs }, true, false),
                (A::DeleteMessage { sender: mine }, true, true),
                (
                    A::EditMessage {
                        sender: mine,
                        is_system: false,
                    },
                    true,
                    true,
                ),
                (
                    A::EditMessage {
                        sender: theirs,
                        is_system: false,
                    },
                    false,
                    false,
                ),
                (
                    A::EditMessage {
                        sender: mine,
                        is_system: true,
                    },
                    false,
                    false,
                ),
                (A::React, true, true),
                (A::MarkRead, true, true),
            ] {
                check(kind, admin, action, admin_may);
                check(kind, member, action, member_may);
                check(kind, None, action, false);
            }
        }
        for (action, may) in [
            (A::Rename, false),
            (A::Archive, true),
            (A::AddParticipants, false),
            (A::SetRole, false),
            (A::RemoveParticipant { target: mine }, false),
            (A::DeleteMessage { sender: theirs }, false),
            (A::DeleteMessage { sender: mine }, true),
            (A::React, true),
        ] {
            check(Direct, member, action, may);
            check(Direct, None, action, false);
        }
    }

    #[test]
    fn the_participant_limit_counts_active_participants_after_the_change() {
        assert_eq!(check_participant_limit(1000, 1000), Ok(()));
        assert_eq!(
            check_participant_limit(1001, 1000),
            Err(Refusal::TooManyParticipants { max: 1000 })
        );
    }
}
