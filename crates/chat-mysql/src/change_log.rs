//! The write side of the change feed (docs/schema.md, "The change feed"): every write of
//! the adapter appends its changes to `CHANGE_LOG` in its own transaction, through
//! [`record`] (changes known to the caller, one multi-row `INSERT`) or [`record_message`]
//! (a change about one message, its conversation and `seq` taken from the row). Rows are
//! written unstamped (`pos` NULL); `crate::feed`'s stamper numbers them after the commit.
//! An entry holds references and small facts only, never message text or a group name.

use chat_domain::{ChangeKind, ConversationId, MembershipMove, MessageId, Role, Seq, UserId};
use sqlx::{MySql, MySqlConnection, QueryBuilder};
use time::OffsetDateTime;

use crate::rows::db_time;

/// A change to append, in the caller's transaction.
#[derive(Debug, Clone)]
pub(crate) struct NewChange {
    /// Its conversation.
    pub(crate) conversation: ConversationId,
    /// What changed.
    pub(crate) kind: ChangeKind,
}

impl NewChange {
    /// `kind` in `conversation`.
    pub(crate) fn new(conversation: ConversationId, kind: ChangeKind) -> Self {
        Self { conversation, kind }
    }
}

/// The stored code of a kind (`CHANGE_LOG.kind`, listed in the migration). The triggers
/// that append the previous system's writes (migrations `20251201000013` and
/// `20251201000021`) write the same codes and columns in SQL: change them together.
pub(crate) fn code(kind: &ChangeKind) -> u8 {
    match kind {
        ChangeKind::MessageCreated { .. } => 1,
        ChangeKind::MessageUpdated { .. } => 2,
        ChangeKind::MessageDeleted { .. } => 3,
        ChangeKind::ReactionAdded { .. } => 4,
        ChangeKind::ReactionRemoved { .. } => 5,
        ChangeKind::ConversationRead { .. } => 6,
        ChangeKind::ConversationCreated => 7,
        ChangeKind::ConversationUpdated => 8,
        ChangeKind::ParticipantAdded { .. } => 9,
        ChangeKind::ParticipantRemoved { .. } => 10,
        ChangeKind::ParticipantUpdated { .. } => 11,
    }
}

/// The membership move of a stored kind code, if it is one (`feed.rs` names the two
/// codes in SQL too).
pub(crate) const fn move_of(code: u8) -> Option<MembershipMove> {
    match code {
        9 => Some(MembershipMove::Joined),
        10 => Some(MembershipMove::Left),
        _ => None,
    }
}

/// The columns of an entry: (message, user, seq, role, emoji bytes, read_at).
type Columns = (
    Option<MessageId>,
    Option<UserId>,
    Option<Seq>,
    Option<Role>,
    Option<Vec<u8>>,
    Option<OffsetDateTime>,
);

fn columns(kind: &ChangeKind) -> Columns {
    match kind {
        ChangeKind::MessageCreated { message_id } | ChangeKind::MessageUpdated { message_id } => {
            (Some(*message_id), None, None, None, None, None)
        }
        ChangeKind::MessageDeleted { message_id, seq } => {
            (Some(*message_id), None, Some(*seq), None, None, None)
        }
        ChangeKind::ReactionAdded {
            message_id,
            user_id,
            emoji,
        }
        | ChangeKind::ReactionRemoved {
            message_id,
            user_id,
            emoji,
        } => (
            Some(*message_id),
            Some(*user_id),
            None,
            None,
            Some(emoji.as_bytes().to_vec()),
            None,
        ),
        ChangeKind::ConversationRead {
            user_id,
            last_read_seq,
            last_read_at,
        } => (
            None,
            Some(*user_id),
            Some(*last_read_seq),
            None,
            None,
            Some(db_time(*last_read_at)),
        ),
        ChangeKind::ConversationCreated | ChangeKind::ConversationUpdated => {
            (None, None, None, None, None, None)
        }
        ChangeKind::ParticipantAdded { user_id, role }
        | ChangeKind::ParticipantUpdated { user_id, role } => {
            (None, Some(*user_id), None, Some(*role), None, None)
        }
        ChangeKind::ParticipantRemoved { user_id } => {
            (None, Some(*user_id), None, None, None, None)
        }
    }
}

/// Appends `changes`, in this order, with one multi-row `INSERT` in the caller's
/// transaction (nothing for none).
pub(crate) async fn record(
    conn: &mut MySqlConnection,
    changes: &[NewChange],
) -> Result<(), sqlx::Error> {
    if changes.is_empty() {
        return Ok(());
    }
    let mut query = QueryBuilder::<MySql>::new(
        "INSERT INTO CHANGE_LOG (conversation_id, kind, message_id, user_id, seq, role, emoji, \
         read_at) ",
    );
    query.push_values(changes, |mut row, change| {
        let (message, user, seq, role, emoji, read_at) = columns(&change.kind);
        row.push_bind(change.conversation.to_string())
            .push_bind(code(&change.kind))
            .push_bind(message.map(|m| m.to_string()))
            .push_bind(user.map(UserId::get))
            .push_bind(seq.map(Seq::get))
            .push_bind(role.map(Role::as_str))
            .push_bind(emoji)
            .push_bind(read_at);
    });
    query.build().execute(&mut *conn).await?;
    Ok(())
}

/// Appends `kind` (a reaction's change) about message `message`, its conversation read
/// from the row, in one `INSERT … SELECT` in the caller's transaction (which holds the
/// message's row). `kind` must name `message`.
pub(crate) async fn record_message(
    conn: &mut MySqlConnection,
    message: MessageId,
    kind: &ChangeKind,
) -> Result<(), sqlx::Error> {
    let (_, user, _, _, emoji, _) = columns(kind);
    sqlx::query(
        "INSERT INTO CHANGE_LOG (conversation_id, kind, message_id, user_id, emoji) \
         SELECT m.conversation_id, ?, m.id, ?, ? FROM MESSAGES m WHERE m.id = ?",
    )
    .bind(code(kind))
    .bind(user.map(UserId::get))
    .bind(emoji)
    .bind(message.to_string())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Test code: a failed expectation panics.
mod tests {
    use super::*;

    #[test]
    fn membership_moves_are_codes_9_and_10() {
        let joined = ChangeKind::ParticipantAdded {
            user_id: UserId::new(1).unwrap(),
            role: Role::Member,
        };
        let left = ChangeKind::ParticipantRemoved {
            user_id: UserId::new(1).unwrap(),
        };
        assert_eq!(code(&joined), 9);
        assert_eq!(code(&left), 10);
        assert_eq!(move_of(9), Some(MembershipMove::Joined));
        assert_eq!(move_of(10), Some(MembershipMove::Left));
        assert_eq!(move_of(11), None);
    }
}
