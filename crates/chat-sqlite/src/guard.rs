//! The rules a write depends on, checked again on the writer's connection as part of the
//! write: the actor's role and active membership ([`chat_domain::authorize`]) and, for
//! changes to messages, the recipients as they stand when the change commits. The single
//! writer runs each write as one step, so what is read here cannot change before the write.

use chat_domain::{Action, ConversationId, ConversationType, MessageId, Role, UserId, authorize};
use chat_ports::{StoreConflict, StoreError};
use sqlx::{Row, SqliteConnection};

use crate::error::{Failure, Outcome};
use crate::messages::active_user_ids;
use crate::rows;

/// Decides whether `actor` may do `action` in conversation `id` as it is now; whether the
/// conversation is archived when they may.
///
/// `NotFound` for an unknown conversation or an actor who is not an active participant,
/// `Forbidden` when the rule refuses them.
pub(crate) async fn authorize_actor(
    conn: &mut SqliteConnection,
    id: ConversationId,
    actor: UserId,
    action: Action,
) -> Outcome<bool> {
    let row = sqlx::query(
        "SELECT c.type, c.is_archived, \
           (SELECT p.role FROM CONVERSATION_PARTICIPANTS p WHERE p.conversation_id = c.id \
              AND p.user_id = ? AND p.left_at IS NULL) AS actor_role \
         FROM CONVERSATIONS c WHERE c.id = ?",
    )
    .bind(actor.get())
    .bind(id.to_string())
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(StoreError::NotFound)?;
    let kind = ConversationType::parse(&row.try_get::<String, _>("type")?)
        .map_err(|_| Failure::corrupt("conversation type"))?;
    let role = row
        .try_get::<Option<String>, _>("actor_role")?
        .map(|r| Role::parse(&r).map_err(|_| Failure::corrupt("role")))
        .transpose()?;
    authorize(kind, actor, role, action).map_err(StoreError::from)?;
    Ok(row.try_get("is_archived")?)
}

/// Decides whether `actor` may do what `action` makes of live message `id` (its sender and
/// whether it is SYSTEM), refusing an archived conversation when `writes` (an edit, a
/// reaction); the message's conversation (where the change goes in the feed) and its active
/// participants, who must hear of the change.
///
/// `NotFound` when the message does not exist or is deleted, and as [`authorize_actor`].
pub(crate) async fn authorize_on_message(
    conn: &mut SqliteConnection,
    id: MessageId,
    actor: UserId,
    action: impl FnOnce(UserId, bool) -> Action,
    writes: bool,
) -> Outcome<(ConversationId, Vec<UserId>)> {
    let row = sqlx::query(
        "SELECT conversation_id, sender_id, is_system_message FROM MESSAGES \
         WHERE id = ? AND deleted_at IS NULL",
    )
    .bind(id.to_string())
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(StoreError::NotFound)?;
    let conversation = rows::conversation_id(&row.try_get::<String, _>("conversation_id")?)?;
    let sender = rows::user_id(row.try_get("sender_id")?)?;
    let is_system: bool = row.try_get("is_system_message")?;
    let archived = authorize_actor(conn, conversation, actor, action(sender, is_system)).await?;
    if writes && archived {
        return Err(StoreConflict::ConversationArchived.into());
    }
    Ok((conversation, active_user_ids(conn, conversation).await?))
}
