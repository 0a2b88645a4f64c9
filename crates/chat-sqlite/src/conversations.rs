//! [`ConversationStore`] on SQLite: creation with the announcement in one step, the DIRECT
//! get-or-create settled by the single writer (and the unique `direct_key`), and one
//! function per change of a conversation or its membership, each run by the writer as one
//! request together with its announcement.

use std::collections::HashSet;

use async_trait::async_trait;
use chat_crypto::MessageCipher;
use chat_domain::{
    Action, ChangeKind, ConversationDetails, ConversationId, GroupName, MessageView, Role,
    Timestamp, UserId, check_participant_limit,
};
use chat_ports::{
    ConversationChanged, ConversationStore, DirectConversation, NewConversation, NewMessage,
    ParticipantRemoved, ParticipantsAdded, StoreConflict, StoreError,
};
use sqlx::{Row, SqliteConnection};

use crate::SqliteStore;
use crate::error::{Failure, Outcome};
use crate::feed::record;
use crate::guard::authorize_actor;
use crate::messages::{ACTIVITY_KEY_NEXT, ConversationState, conversation_state, insert_message};
use crate::rows::{self, db_time, details, direct_key, existing_details, find_view};

/// Inserts the participants of a conversation created at `at` (role and marker each);
/// nothing is unread yet and the activity time is the creation time.
async fn insert_participants(
    conn: &mut SqliteConnection,
    conversation: ConversationId,
    members: &[(UserId, Role)],
    at: i64,
) -> Result<(), sqlx::Error> {
    if members.is_empty() {
        return Ok(());
    }
    let mut builder = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
        "INSERT INTO CONVERSATION_PARTICIPANTS \
         (conversation_id, user_id, role, joined_at, last_read_seq, is_muted, \
          unread_count, activity_at) ",
    );
    builder.push_values(members, |mut row, (user, role)| {
        row.push_bind(conversation.to_string())
            .push_bind(user.get())
            .push_bind(role.as_str())
            .push_bind(at)
            .push_bind(0_i64)
            .push_bind(false)
            .push_bind(0_i64)
            .push_bind(at);
    });
    builder.build().execute(&mut *conn).await?;
    Ok(())
}

/// The active participants, earliest joined first, with their roles.
async fn active_roles(
    conn: &mut SqliteConnection,
    conversation: ConversationId,
) -> Outcome<Vec<(UserId, Role)>> {
    let rows = sqlx::query(
        "SELECT p.user_id, p.role FROM CONVERSATION_PARTICIPANTS p \
         WHERE p.conversation_id = ? AND p.left_at IS NULL ORDER BY p.joined_at, p.id",
    )
    .bind(conversation.to_string())
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|row| {
            let role: String = row.try_get("role")?;
            let role = Role::parse(&role).map_err(|_| Failure::corrupt("role"))?;
            Ok((rows::user_id(row.try_get("user_id")?)?, role))
        })
        .collect()
}

async fn set_role(
    conn: &mut SqliteConnection,
    conversation: ConversationId,
    user: UserId,
    role: Role,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE CONVERSATION_PARTICIPANTS SET role = ? \
         WHERE conversation_id = ? AND user_id = ? AND left_at IS NULL",
    )
    .bind(role.as_str())
    .bind(conversation.to_string())
    .bind(user.get())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Creates a GROUP or POST_LINKED conversation with its announcement as `seq` 1.
pub(crate) async fn create(
    conn: &mut SqliteConnection,
    new: &NewConversation,
    announcement: &NewMessage,
) -> Outcome<ConversationDetails> {
    let at = db_time(new.created_at);
    sqlx::query(&format!(
        "INSERT INTO CONVERSATIONS (id, type, name, posting_id, created_by, created_at, \
             is_archived, last_seq, activity_key) VALUES (?, ?, ?, ?, ?, ?, 0, 0, \
             {ACTIVITY_KEY_NEXT})"
    ))
    .bind(new.id.to_string())
    .bind(new.kind.as_str())
    .bind(new.name.as_ref().map(|n| n.as_str()))
    .bind(new.posting_id.map(|p| p.to_string()))
    .bind(new.created_by.get())
    .bind(at)
    .execute(&mut *conn)
    .await?;
    let mut members = vec![(new.created_by, Role::Admin)];
    members.extend(
        new.members
            .iter()
            .filter(|m| **m != new.created_by)
            .map(|m| (*m, Role::Member)),
    );
    insert_participants(conn, new.id, &members, at).await?;
    record(conn, new.id, &ChangeKind::ConversationCreated).await?;
    // The creator is the announcement's sender: their marker moves to it, like any send.
    let announcement = NewMessage {
        conversation_id: new.id,
        ..announcement.clone()
    };
    insert_message(conn, &MessageCipher::plain(), &announcement, 1, Some(0)).await?;
    existing_details(conn, new.id).await
}

/// The DIRECT conversation of a pair by its key, or `None`.
async fn find_direct(
    conn: &mut SqliteConnection,
    key: &str,
) -> Outcome<Option<ConversationDetails>> {
    let id: Option<String> =
        sqlx::query_scalar("SELECT id FROM CONVERSATIONS WHERE direct_key = ?")
            .bind(key)
            .fetch_optional(&mut *conn)
            .await?;
    match id {
        Some(id) => details(conn, rows::conversation_id(&id)?).await,
        None => Ok(None),
    }
}

/// Returns the pair's DIRECT conversation, creating it when there is none. On the writer:
/// no other write runs between the probe and the insert.
pub(crate) async fn get_or_create_direct(
    conn: &mut SqliteConnection,
    id: ConversationId,
    a: UserId,
    b: UserId,
    at: Timestamp,
) -> Outcome<DirectConversation> {
    let key = direct_key(a, b);
    if let Some(details) = find_direct(conn, &key).await? {
        return Ok(DirectConversation {
            details,
            created: false,
        });
    }
    let at = db_time(at);
    sqlx::query(&format!(
        "INSERT INTO CONVERSATIONS (id, type, created_by, created_at, is_archived, \
             last_seq, direct_key, activity_key) VALUES (?, 'DIRECT', ?, ?, 0, 0, ?, \
             {ACTIVITY_KEY_NEXT})"
    ))
    .bind(id.to_string())
    .bind(a.get())
    .bind(at)
    .bind(&key)
    .execute(&mut *conn)
    .await?;
    let mut members = vec![(a, Role::Member)];
    if b != a {
        members.push((b, Role::Member));
    }
    insert_participants(conn, id, &members, at).await?;
    record(conn, id, &ChangeKind::ConversationCreated).await?;
    Ok(DirectConversation {
        details: existing_details(conn, id).await?,
        created: true,
    })
}

/// The conversation's state; `NotFound` when it does not exist. Every change reads it
/// first: the newest `seq` places the announcement.
async fn existing_state(
    conn: &mut SqliteConnection,
    id: ConversationId,
) -> Outcome<ConversationState> {
    Ok(conversation_state(conn, id)
        .await?
        .ok_or(StoreError::NotFound)?)
}

/// Appends the announcement of a change, when there is one, as the message after
/// `last_seq`.
async fn announce(
    conn: &mut SqliteConnection,
    id: ConversationId,
    last_seq: i64,
    announcement: Option<&NewMessage>,
) -> Outcome<Option<MessageView>> {
    let Some(announcement) = announcement else {
        return Ok(None);
    };
    let announcement = NewMessage {
        conversation_id: id,
        ..announcement.clone()
    };
    // The sender's marker whether or not they are still active (the announcement that
    // someone left is sent by the one who left).
    let marker: Option<i64> = sqlx::query_scalar(
        "SELECT last_read_seq FROM CONVERSATION_PARTICIPANTS \
         WHERE conversation_id = ? AND user_id = ?",
    )
    .bind(id.to_string())
    .bind(announcement.sender_id.get())
    .fetch_optional(&mut *conn)
    .await?;
    insert_message(
        conn,
        &MessageCipher::plain(),
        &announcement,
        last_seq + 1,
        marker,
    )
    .await?;
    Ok(Some(
        // A SYSTEM message is stored plain: no key ring is needed to read it back.
        find_view(conn, &MessageCipher::plain(), announcement.id)
            .await?
            .ok_or(StoreError::NotFound)?,
    ))
}

/// The conversation after a change, with its announcement.
async fn changed(
    conn: &mut SqliteConnection,
    id: ConversationId,
    announcement: Option<MessageView>,
) -> Outcome<ConversationChanged> {
    Ok(ConversationChanged {
        details: existing_details(conn, id).await?,
        announcement,
    })
}

/// Sets the name.
pub(crate) async fn rename(
    conn: &mut SqliteConnection,
    id: ConversationId,
    actor: UserId,
    name: &GroupName,
    announcement: Option<&NewMessage>,
) -> Outcome<ConversationChanged> {
    let state = existing_state(conn, id).await?;
    authorize_actor(conn, id, actor, Action::Rename).await?;
    let renamed =
        sqlx::query("UPDATE CONVERSATIONS SET name = ?1 WHERE id = ?2 AND name IS NOT ?1")
            .bind(name.as_str())
            .bind(id.to_string())
            .execute(&mut *conn)
            .await?
            .rows_affected();
    if renamed > 0 {
        record(conn, id, &ChangeKind::ConversationUpdated).await?;
    }
    let announcement = announce(conn, id, state.last_seq, announcement).await?;
    changed(conn, id, announcement).await
}

/// Makes the conversation read-only; the announcement still goes in.
pub(crate) async fn archive(
    conn: &mut SqliteConnection,
    id: ConversationId,
    actor: UserId,
    at: Timestamp,
    announcement: Option<&NewMessage>,
) -> Outcome<ConversationChanged> {
    let state = existing_state(conn, id).await?;
    authorize_actor(conn, id, actor, Action::Archive).await?;
    sqlx::query("UPDATE CONVERSATIONS SET is_archived = 1, archived_at = ? WHERE id = ?")
        .bind(db_time(at))
        .bind(id.to_string())
        .execute(&mut *conn)
        .await?;
    if !state.is_archived {
        record(conn, id, &ChangeKind::ConversationUpdated).await?;
    }
    let announcement = announce(conn, id, state.last_seq, announcement).await?;
    changed(conn, id, announcement).await
}

/// Makes the conversation writable again.
pub(crate) async fn unarchive(
    conn: &mut SqliteConnection,
    id: ConversationId,
    actor: UserId,
    announcement: Option<&NewMessage>,
) -> Outcome<ConversationChanged> {
    let state = existing_state(conn, id).await?;
    authorize_actor(conn, id, actor, Action::Archive).await?;
    sqlx::query("UPDATE CONVERSATIONS SET is_archived = 0, archived_at = NULL WHERE id = ?")
        .bind(id.to_string())
        .execute(&mut *conn)
        .await?;
    if state.is_archived {
        record(conn, id, &ChangeKind::ConversationUpdated).await?;
    }
    let announcement = announce(conn, id, state.last_seq, announcement).await?;
    changed(conn, id, announcement).await
}

/// Adds users as MEMBERs joining at `at`, with their marker at the newest seq (the
/// announcement of their joining included: nothing before it is unread), reactivating
/// those who had left and leaving active ones as they are; refused on an archived
/// conversation, for an actor the rule refuses, and past `max` active participants.
/// Tells who joined (new and returning, in the order asked).
pub(crate) async fn add_participants(
    conn: &mut SqliteConnection,
    id: ConversationId,
    actor: UserId,
    users: &[UserId],
    at: Timestamp,
    max: usize,
    announcement: Option<&NewMessage>,
) -> Outcome<ParticipantsAdded> {
    let state = existing_state(conn, id).await?;
    authorize_actor(conn, id, actor, Action::AddParticipants).await?;
    if state.is_archived {
        return Err(StoreConflict::ConversationArchived.into());
    }
    let newest = state.last_seq + i64::from(announcement.is_some());
    let active: HashSet<UserId> = active_roles(conn, id)
        .await?
        .into_iter()
        .map(|(user, _)| user)
        .collect();
    let joining: HashSet<&UserId> = users.iter().filter(|u| !active.contains(u)).collect();
    check_participant_limit(active.len() + joining.len(), max).map_err(StoreError::from)?;
    let mut joined = Vec::new();
    for user in users {
        if active.contains(user) || joined.contains(user) {
            continue;
        }
        // New: a MEMBER whose marker is at the newest seq, so nothing is unread (its base
        // is the whole countable total). Left: reactivated as MEMBER with a new joined_at
        // and marker, its count and base reset to that nothing (neither is kept while
        // inactive).
        sqlx::query(
            "INSERT INTO CONVERSATION_PARTICIPANTS \
             (conversation_id, user_id, role, joined_at, last_read_seq, is_muted, \
              unread_count, activity_at, unread_base) \
             VALUES (?1, ?2, 'MEMBER', ?3, ?4, 0, 0, ?5, \
               (SELECT c.counted_total FROM CONVERSATIONS c WHERE c.id = ?1)) \
             ON CONFLICT (conversation_id, user_id) DO UPDATE SET \
               role = 'MEMBER', \
               joined_at = excluded.joined_at, \
               last_read_seq = MAX(last_read_seq, excluded.last_read_seq), \
               unread_count = 0, \
               unread_base = excluded.unread_base, \
               activity_at = excluded.activity_at, \
               left_at = NULL",
        )
        .bind(id.to_string())
        .bind(user.get())
        .bind(db_time(at))
        .bind(newest)
        .bind(state.activity_at)
        .execute(&mut *conn)
        .await?;
        let added = ChangeKind::ParticipantAdded {
            user_id: *user,
            role: Role::Member,
        };
        record(conn, id, &added).await?;
        joined.push(*user);
    }
    let announcement = announce(conn, id, state.last_seq, announcement).await?;
    Ok(ParticipantsAdded {
        details: existing_details(conn, id).await?,
        joined,
        announcement,
    })
}

/// Marks a participant as left; when no active admin remains but active members do, the
/// earliest-joined is promoted to ADMIN and reported.
pub(crate) async fn remove_participant(
    conn: &mut SqliteConnection,
    id: ConversationId,
    actor: UserId,
    user: UserId,
    at: Timestamp,
    announcement: Option<&NewMessage>,
) -> Outcome<ParticipantRemoved> {
    let state = existing_state(conn, id).await?;
    authorize_actor(conn, id, actor, Action::RemoveParticipant { target: user }).await?;
    let removed = sqlx::query(
        "UPDATE CONVERSATION_PARTICIPANTS SET left_at = ? \
         WHERE conversation_id = ? AND user_id = ? AND left_at IS NULL",
    )
    .bind(db_time(at))
    .bind(id.to_string())
    .bind(user.get())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if removed == 0 {
        return Err(StoreError::NotFound.into());
    }
    record(conn, id, &ChangeKind::ParticipantRemoved { user_id: user }).await?;
    let promoted = promote_if_no_admin(conn, id).await?;
    let announcement = announce(conn, id, state.last_seq, announcement).await?;
    Ok(ParticipantRemoved {
        details: existing_details(conn, id).await?,
        promoted,
        announcement,
    })
}

/// When no active admin remains but active members do, promotes the earliest-joined
/// active member and returns them.
async fn promote_if_no_admin(
    conn: &mut SqliteConnection,
    id: ConversationId,
) -> Outcome<Option<UserId>> {
    let active = active_roles(conn, id).await?;
    if active.iter().any(|(_, role)| *role == Role::Admin) {
        return Ok(None);
    }
    let Some((heir, _)) = active.first() else {
        return Ok(None);
    };
    set_role(conn, id, *heir, Role::Admin).await?;
    let promoted = ChangeKind::ParticipantUpdated {
        user_id: *heir,
        role: Role::Admin,
    };
    record(conn, id, &promoted).await?;
    Ok(Some(*heir))
}

/// Sets an active participant's role; refused when it leaves no active admin.
pub(crate) async fn change_role(
    conn: &mut SqliteConnection,
    id: ConversationId,
    actor: UserId,
    user: UserId,
    role: Role,
    announcement: Option<&NewMessage>,
) -> Outcome<ConversationChanged> {
    let state = existing_state(conn, id).await?;
    authorize_actor(conn, id, actor, Action::SetRole).await?;
    let active = active_roles(conn, id).await?;
    let Some((_, current)) = active.iter().find(|(u, _)| *u == user) else {
        return Err(StoreError::NotFound.into());
    };
    let admins_after = active
        .iter()
        .filter(|(u, r)| {
            if *u == user {
                role == Role::Admin
            } else {
                *r == Role::Admin
            }
        })
        .count();
    if *current == Role::Admin && admins_after == 0 {
        return Err(StoreConflict::LastAdmin.into());
    }
    if *current != role {
        set_role(conn, id, user, role).await?;
        let updated = ChangeKind::ParticipantUpdated {
            user_id: user,
            role,
        };
        record(conn, id, &updated).await?;
    }
    let announcement = announce(conn, id, state.last_seq, announcement).await?;
    changed(conn, id, announcement).await
}

impl SqliteStore {
    async fn try_details(&self, id: ConversationId) -> Outcome<Option<ConversationDetails>> {
        let mut tx = self.read_pool().begin().await?;
        let found = details(&mut tx, id).await?;
        tx.commit().await?;
        Ok(found)
    }

    async fn try_find_direct(&self, a: UserId, b: UserId) -> Outcome<Option<ConversationDetails>> {
        let mut tx = self.read_pool().begin().await?;
        let found = find_direct(&mut tx, &direct_key(a, b)).await?;
        tx.commit().await?;
        Ok(found)
    }
}

#[async_trait]
impl ConversationStore for SqliteStore {
    async fn create_conversation(
        &self,
        new: NewConversation,
        announcement: NewMessage,
    ) -> Result<ConversationDetails, StoreError> {
        self.write(move |conn| Box::pin(async move { create(conn, &new, &announcement).await }))
            .await
    }

    async fn get_or_create_direct(
        &self,
        id: ConversationId,
        a: UserId,
        b: UserId,
        at: Timestamp,
    ) -> Result<DirectConversation, StoreError> {
        // Most calls find an existing conversation: answered by a reader, without queueing
        // behind the writes.
        if let Some(details) = self
            .try_find_direct(a, b)
            .await
            .map_err(Failure::into_store)?
        {
            return Ok(DirectConversation {
                details,
                created: false,
            });
        }
        self.write(move |conn| {
            Box::pin(async move { get_or_create_direct(conn, id, a, b, at).await })
        })
        .await
    }

    async fn conversation_details(
        &self,
        id: ConversationId,
    ) -> Result<Option<ConversationDetails>, StoreError> {
        self.try_details(id).await.map_err(Failure::into_store)
    }

    async fn rename_conversation(
        &self,
        id: ConversationId,
        actor: UserId,
        name: GroupName,
        announcement: Option<NewMessage>,
    ) -> Result<ConversationChanged, StoreError> {
        self.write(move |conn| {
            Box::pin(async move { rename(conn, id, actor, &name, announcement.as_ref()).await })
        })
        .await
    }

    async fn archive_conversation(
        &self,
        id: ConversationId,
        actor: UserId,
        at: Timestamp,
        announcement: Option<NewMessage>,
    ) -> Result<ConversationChanged, StoreError> {
        self.write(move |conn| {
            Box::pin(async move { archive(conn, id, actor, at, announcement.as_ref()).await })
        })
        .await
    }

    async fn unarchive_conversation(
        &self,
        id: ConversationId,
        actor: UserId,
        announcement: Option<NewMessage>,
    ) -> Result<ConversationChanged, StoreError> {
        self.write(move |conn| {
            Box::pin(async move { unarchive(conn, id, actor, announcement.as_ref()).await })
        })
        .await
    }

    async fn add_participants(
        &self,
        id: ConversationId,
        actor: UserId,
        users: Vec<UserId>,
        at: Timestamp,
        max_participants: usize,
        announcement: Option<NewMessage>,
    ) -> Result<ParticipantsAdded, StoreError> {
        self.write(move |conn| {
            Box::pin(async move {
                let announcement = announcement.as_ref();
                add_participants(conn, id, actor, &users, at, max_participants, announcement).await
            })
        })
        .await
    }

    async fn remove_participant(
        &self,
        id: ConversationId,
        actor: UserId,
        user: UserId,
        at: Timestamp,
        announcement: Option<NewMessage>,
    ) -> Result<ParticipantRemoved, StoreError> {
        self.write(move |conn| {
            Box::pin(async move {
                remove_participant(conn, id, actor, user, at, announcement.as_ref()).await
            })
        })
        .await
    }

    async fn set_role(
        &self,
        id: ConversationId,
        actor: UserId,
        user: UserId,
        role: Role,
        announcement: Option<NewMessage>,
    ) -> Result<ConversationChanged, StoreError> {
        self.write(move |conn| {
            Box::pin(async move {
                change_role(conn, id, actor, user, role, announcement.as_ref()).await
            })
        })
        .await
    }
}
