//! [`ConversationStore`] on SQLite: creation with the announcement in one step, the DIRECT
//! get-or-create settled by the single writer (and the unique `direct_key`), and one small
//! function per membership change, each run by the writer with its SYSTEM record.

use std::collections::HashSet;

use async_trait::async_trait;
use chat_domain::{ConversationDetails, ConversationId, GroupName, Role, Timestamp, UserId};
use chat_ports::{
    ConversationChange, ConversationStore, MembershipChange, NewConversation, NewMessage,
    StoreConflict, StoreError,
};
use sqlx::{Row, SqliteConnection};

use crate::SqliteStore;
use crate::error::{Failure, Outcome};
use crate::messages::{ConversationState, conversation_state, insert_message};
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
    sqlx::query(
        "INSERT INTO CONVERSATIONS (id, type, name, posting_id, created_by, created_at, \
         is_archived, last_seq) VALUES (?, ?, ?, ?, ?, ?, 0, 0)",
    )
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
    // The creator is the announcement's sender: their marker moves to it, like any send.
    let announcement = NewMessage {
        conversation_id: new.id,
        ..announcement.clone()
    };
    insert_message(conn, &announcement, 1, Some(0)).await?;
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
) -> Outcome<(ConversationDetails, bool)> {
    let key = direct_key(a, b);
    if let Some(found) = find_direct(conn, &key).await? {
        return Ok((found, false));
    }
    let at = db_time(at);
    sqlx::query(
        "INSERT INTO CONVERSATIONS (id, type, created_by, created_at, is_archived, \
         last_seq, direct_key) VALUES (?, 'DIRECT', ?, ?, 0, 0, ?)",
    )
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
    Ok((existing_details(conn, id).await?, true))
}

/// The conversation's state; `NotFound` when it does not exist.
pub(crate) async fn existing_state(
    conn: &mut SqliteConnection,
    id: ConversationId,
) -> Outcome<ConversationState> {
    Ok(conversation_state(conn, id)
        .await?
        .ok_or(StoreError::NotFound)?)
}

/// Sets the name.
pub(crate) async fn rename(
    conn: &mut SqliteConnection,
    id: ConversationId,
    name: &GroupName,
) -> Outcome<()> {
    sqlx::query("UPDATE CONVERSATIONS SET name = ? WHERE id = ?")
        .bind(name.as_str())
        .bind(id.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Makes the conversation read-only.
pub(crate) async fn archive(
    conn: &mut SqliteConnection,
    id: ConversationId,
    at: Timestamp,
) -> Outcome<()> {
    sqlx::query("UPDATE CONVERSATIONS SET is_archived = 1, archived_at = ? WHERE id = ?")
        .bind(db_time(at))
        .bind(id.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Makes the conversation writable again.
pub(crate) async fn unarchive(conn: &mut SqliteConnection, id: ConversationId) -> Outcome<()> {
    sqlx::query("UPDATE CONVERSATIONS SET is_archived = 0, archived_at = NULL WHERE id = ?")
        .bind(id.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Adds users as MEMBERs with their marker at `newest` (nothing before their joining is
/// unread), reactivating those who had left and leaving active ones as they are; refused on
/// an archived conversation. Returns who joined (new and returning, in the order asked).
pub(crate) async fn add_participants(
    conn: &mut SqliteConnection,
    id: ConversationId,
    state: &ConversationState,
    users: &[UserId],
    newest: i64,
    at: Timestamp,
) -> Outcome<Vec<UserId>> {
    if state.is_archived {
        return Err(StoreConflict::ConversationArchived.into());
    }
    let active: HashSet<UserId> = active_roles(conn, id)
        .await?
        .into_iter()
        .map(|(user, _)| user)
        .collect();
    let mut joined = Vec::new();
    for user in users {
        if active.contains(user) || joined.contains(user) {
            continue;
        }
        // New: a MEMBER whose marker is at the newest seq, so nothing is unread. Left:
        // reactivated as MEMBER with a new joined_at and marker, its counter reset to that
        // nothing and its activity time refreshed (neither is kept while inactive).
        sqlx::query(
            "INSERT INTO CONVERSATION_PARTICIPANTS \
             (conversation_id, user_id, role, joined_at, last_read_seq, is_muted, \
              unread_count, activity_at) \
             VALUES (?, ?, 'MEMBER', ?, ?, 0, 0, ?) \
             ON CONFLICT (conversation_id, user_id) DO UPDATE SET \
               role = 'MEMBER', \
               joined_at = excluded.joined_at, \
               last_read_seq = MAX(last_read_seq, excluded.last_read_seq), \
               unread_count = 0, \
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
        joined.push(*user);
    }
    Ok(joined)
}

/// Marks a participant as left; when no active admin remains but active members do, the
/// earliest-joined is promoted to ADMIN and returned.
pub(crate) async fn remove_participant(
    conn: &mut SqliteConnection,
    id: ConversationId,
    user: UserId,
    at: Timestamp,
) -> Outcome<Option<UserId>> {
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
    let active = active_roles(conn, id).await?;
    if active.iter().any(|(_, role)| *role == Role::Admin) {
        return Ok(None);
    }
    match active.first() {
        Some((heir, _)) => {
            set_role(conn, id, *heir, Role::Admin).await?;
            Ok(Some(*heir))
        }
        None => Ok(None),
    }
}

/// Sets an active participant's role; refused when it leaves no active admin.
pub(crate) async fn change_role(
    conn: &mut SqliteConnection,
    id: ConversationId,
    user: UserId,
    role: Role,
) -> Outcome<()> {
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
    set_role(conn, id, user, role).await?;
    Ok(())
}

/// Appends a SYSTEM record of a change as message `seq`, returning its view.
pub(crate) async fn append_record(
    conn: &mut SqliteConnection,
    id: ConversationId,
    record: &NewMessage,
    seq: i64,
) -> Outcome<chat_domain::MessageView> {
    let record = NewMessage {
        conversation_id: id,
        ..record.clone()
    };
    // The sender's marker whether or not they are still active (a "left" record is sent by
    // the one who left).
    let marker: Option<i64> = sqlx::query_scalar(
        "SELECT last_read_seq FROM CONVERSATION_PARTICIPANTS \
         WHERE conversation_id = ? AND user_id = ?",
    )
    .bind(id.to_string())
    .bind(record.sender_id.get())
    .fetch_optional(&mut *conn)
    .await?;
    insert_message(conn, &record, seq, marker).await?;
    Ok(find_view(conn, record.id)
        .await?
        .ok_or(StoreError::NotFound)?)
}

/// Applies `change` and appends `record`, as one write request.
pub(crate) async fn apply_change(
    conn: &mut SqliteConnection,
    id: ConversationId,
    change: &ConversationChange,
    at: Timestamp,
    record: Option<&NewMessage>,
) -> Outcome<MembershipChange> {
    let state = existing_state(conn, id).await?;
    // Joiners start with everything read, the record of their joining included.
    let newest_after = state.last_seq + i64::from(record.is_some());
    let mut promoted = None;
    match change {
        ConversationChange::Rename(name) => rename(conn, id, name).await?,
        ConversationChange::Archive => archive(conn, id, at).await?,
        ConversationChange::Unarchive => unarchive(conn, id).await?,
        ConversationChange::AddParticipants(users) => {
            add_participants(conn, id, &state, users, newest_after, at).await?;
        }
        ConversationChange::RemoveParticipant(user) => {
            promoted = remove_participant(conn, id, *user, at).await?;
        }
        ConversationChange::ChangeRole { user_id, role } => {
            change_role(conn, id, *user_id, *role).await?;
        }
    }
    let record = match record {
        Some(record) => Some(append_record(conn, id, record, newest_after).await?),
        None => None,
    };
    Ok(MembershipChange {
        details: existing_details(conn, id).await?,
        promoted,
        record,
    })
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
    ) -> Result<(ConversationDetails, bool), StoreError> {
        // Most calls find an existing conversation: answered by a reader, without queueing
        // behind the writes.
        if let Some(found) = self
            .try_find_direct(a, b)
            .await
            .map_err(Failure::into_store)?
        {
            return Ok((found, false));
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

    async fn change_conversation(
        &self,
        id: ConversationId,
        change: ConversationChange,
        at: Timestamp,
        record: Option<NewMessage>,
    ) -> Result<MembershipChange, StoreError> {
        self.write(move |conn| {
            Box::pin(async move { apply_change(conn, id, &change, at, record.as_ref()).await })
        })
        .await
    }
}
