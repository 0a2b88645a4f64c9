//! The rules a write depends on, checked again inside the write's transaction under the
//! conversation's row lock: the actor's role and active membership
//! ([`chat_domain::authorize`]) and, for changes to messages, the recipients as they stand
//! when the change commits.
//!
//! Every change to a membership (join, leave, removal, role) holds the conversation row
//! `FOR UPDATE`. A change to the conversation or its membership reads the actor under
//! that same exclusive lock; a change to a message (edit, delete, reaction) holds the row
//! `LOCK IN SHARE MODE` first, so no membership change can commit between its check and
//! its commit, while changes to messages still run side by side. Locks are always taken
//! conversation first, then message, then participants, so these writers never wait on
//! each other in a cycle.

use chat_domain::{Action, ConversationId, ConversationType, MessageId, Role, UserId, authorize};
use chat_ports::{StoreConflict, StoreError};
use sqlx::{MySqlConnection, Row};

use crate::error::{Failure, Outcome};
use crate::rows;

/// The actor's role if they are an active participant (a legacy row without a role is a
/// MEMBER).
async fn active_role(
    conn: &mut MySqlConnection,
    id: ConversationId,
    actor: UserId,
) -> Outcome<Option<Role>> {
    let role: Option<Option<String>> = sqlx::query_scalar(
        "SELECT p.role FROM CONVERSATION_PARTICIPANTS p \
         WHERE p.conversation_id = ? AND p.user_id = ? AND p.left_at IS NULL",
    )
    .bind(id.to_string())
    .bind(actor.get())
    .fetch_optional(&mut *conn)
    .await?;
    role.map(|r| match r {
        Some(r) => Role::parse(&r).map_err(|_| Failure::corrupt("role")),
        None => Ok(Role::Member),
    })
    .transpose()
}

/// The conversation's kind.
fn kind_of(row: &sqlx::mysql::MySqlRow) -> Outcome<ConversationType> {
    ConversationType::parse(&row.try_get::<String, _>("type")?)
        .map_err(|_| Failure::corrupt("conversation type"))
}

/// Decides whether `actor` may do `action` in conversation `id`, whose row the caller
/// holds locked `FOR UPDATE`.
///
/// `NotFound` for an unknown conversation or an actor who is not an active participant,
/// `Forbidden` when the rule refuses them.
pub(crate) async fn authorize_locked(
    conn: &mut MySqlConnection,
    id: ConversationId,
    actor: UserId,
    action: Action,
) -> Outcome<()> {
    let row = sqlx::query("SELECT c.type FROM CONVERSATIONS c WHERE c.id = ?")
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(StoreError::NotFound)?;
    let kind = kind_of(&row)?;
    let role = active_role(conn, id, actor).await?;
    authorize(kind, actor, role, action).map_err(StoreError::from)?;
    Ok(())
}

/// How a change to a message takes its conversation's row.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum MessageChange {
    /// An edit or a reaction: the row in share mode (changes to one conversation's
    /// messages run side by side), refused in an archived conversation.
    Content,
    /// A soft delete: the row `FOR UPDATE` at once, because the delete trigger updates the
    /// conversation's `counted_total`; a shared lock upgraded later would deadlock two
    /// deletes (or a delete and a send) of one conversation. Allowed when archived.
    Delete,
}

/// Locks live message `id` for a change by `actor` (its conversation's row as `change`
/// says, then the message's row `FOR UPDATE`) and decides whether they may do what
/// `action` makes of it (its sender and whether it is SYSTEM); the active participants,
/// who must hear of the change.
///
/// `NotFound` when the message does not exist or is deleted, or as [`authorize_locked`];
/// `ConversationArchived` for a [`MessageChange::Content`] in an archived conversation.
pub(crate) async fn lock_message_for(
    conn: &mut MySqlConnection,
    id: MessageId,
    actor: UserId,
    action: impl FnOnce(UserId, bool) -> Action,
    change: MessageChange,
) -> Outcome<Vec<UserId>> {
    // A message never moves to another conversation: a plain read finds which row to lock.
    let conversation: String =
        sqlx::query_scalar("SELECT conversation_id FROM MESSAGES WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&mut *conn)
            .await?
            .ok_or(StoreError::NotFound)?;
    let conversation = rows::conversation_id(&conversation)?;
    let sql = match change {
        MessageChange::Content => {
            "SELECT c.type, c.is_archived FROM CONVERSATIONS c WHERE c.id = ? LOCK IN SHARE MODE"
        }
        MessageChange::Delete => {
            "SELECT c.type, c.is_archived FROM CONVERSATIONS c WHERE c.id = ? FOR UPDATE"
        }
    };
    let row = sqlx::query(sql)
        .bind(conversation.to_string())
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(StoreError::NotFound)?;
    let kind = kind_of(&row)?;
    let archived = row
        .try_get::<Option<bool>, _>("is_archived")?
        .unwrap_or(false);
    let message = sqlx::query(
        "SELECT sender_id, is_system_message FROM MESSAGES \
         WHERE id = ? AND deleted_at IS NULL FOR UPDATE",
    )
    .bind(id.to_string())
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(StoreError::NotFound)?;
    let sender = rows::user_id(message.try_get("sender_id")?)?;
    let is_system = message
        .try_get::<Option<bool>, _>("is_system_message")?
        .unwrap_or(false);
    let role = active_role(conn, conversation, actor).await?;
    authorize(kind, actor, role, action(sender, is_system)).map_err(StoreError::from)?;
    if change == MessageChange::Content && archived {
        return Err(StoreConflict::ConversationArchived.into());
    }
    active_user_ids(conn, conversation).await
}

/// The active participants of a conversation, earliest joined first.
pub(crate) async fn active_user_ids(
    conn: &mut MySqlConnection,
    conversation: ConversationId,
) -> Outcome<Vec<UserId>> {
    let sql = format!(
        "SELECT p.user_id FROM CONVERSATION_PARTICIPANTS p \
         WHERE p.conversation_id = ? AND p.left_at IS NULL ORDER BY p.joined_at, {}",
        rows::uuid_order("p.id")
    );
    let ids: Vec<i64> = sqlx::query_scalar(&sql)
        .bind(conversation.to_string())
        .fetch_all(&mut *conn)
        .await?;
    ids.into_iter().map(rows::user_id).collect()
}
