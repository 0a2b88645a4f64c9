//! [`ConversationStore`] on MySQL: creation with the announcement in one transaction, the
//! DIRECT get-or-create race settled by the unique `direct_key`, and membership changes
//! serialised by the conversation's row lock.

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
use sqlx::{MySql, MySqlConnection, Row, Transaction};

use crate::MySqlStore;
use crate::change_log::{self, NewChange};
use crate::error::{Failure, Outcome, is_duplicate_of};
use crate::guard::authorize_locked;
use crate::rows::{
    self, db_time, details, direct_key, existing_details, find_view, new_row_id, uuid_order,
};
use crate::writes::{LockedConversation, insert_locked, lock_conversation};

/// The unique key of the DIRECT pair.
const DIRECT_KEY: &str = "uq_conversations_direct_key";

/// Inserts the participants of a conversation created at `at` (`role` and marker each) in
/// one statement; nothing is unread yet and the activity time is the creation time.
async fn insert_participants(
    conn: &mut MySqlConnection,
    conversation: ConversationId,
    members: &[(UserId, Role, i64)],
    at: time::OffsetDateTime,
) -> Result<(), sqlx::Error> {
    if members.is_empty() {
        return Ok(());
    }
    let mut builder = sqlx::QueryBuilder::<sqlx::MySql>::new(
        "INSERT INTO CONVERSATION_PARTICIPANTS \
         (id, conversation_id, user_id, role, joined_at, last_read_seq, is_muted, \
          unread_count, activity_at) ",
    );
    builder.push_values(members, |mut row, (user, role, marker)| {
        row.push_bind(new_row_id())
            .push_bind(conversation.to_string())
            .push_bind(user.get())
            .push_bind(role.as_str())
            .push_bind(at)
            .push_bind(*marker)
            .push_bind(false)
            .push_bind(0)
            .push_bind(at);
    });
    builder.build().execute(&mut *conn).await?;
    Ok(())
}

/// The active participants, earliest joined first, with their roles.
async fn active_roles(
    conn: &mut MySqlConnection,
    conversation: ConversationId,
) -> Outcome<Vec<(UserId, Role)>> {
    let sql = format!(
        "SELECT p.user_id, p.role FROM CONVERSATION_PARTICIPANTS p \
         WHERE p.conversation_id = ? AND p.left_at IS NULL ORDER BY p.joined_at, {}",
        uuid_order("p.id")
    );
    let rows = sqlx::query(&sql)
        .bind(conversation.to_string())
        .fetch_all(&mut *conn)
        .await?;
    rows.iter()
        .map(|row| {
            let role: Option<String> = row.try_get("role")?;
            let role = match role {
                Some(r) => Role::parse(&r).map_err(|_| Failure::corrupt("role"))?,
                None => Role::Member,
            };
            Ok((rows::user_id(row.try_get("user_id")?)?, role))
        })
        .collect()
}

async fn set_role(
    conn: &mut MySqlConnection,
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

impl MySqlStore {
    async fn try_create(
        &self,
        new: &NewConversation,
        announcement: &NewMessage,
    ) -> Outcome<ConversationDetails> {
        let at = db_time(new.created_at);
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO CONVERSATIONS (id, type, name, posting_id, created_by, created_at, \
             is_archived, last_seq) VALUES (?, ?, ?, ?, ?, ?, FALSE, 0)",
        )
        .bind(new.id.to_string())
        .bind(new.kind.as_str())
        .bind(new.name.as_ref().map(|n| n.as_str()))
        .bind(new.posting_id.map(|p| p.to_string()))
        .bind(new.created_by.get())
        .bind(at)
        .execute(&mut *tx)
        .await?;
        let mut members = vec![(new.created_by, Role::Admin, 0)];
        members.extend(
            new.members
                .iter()
                .filter(|m| **m != new.created_by)
                .map(|m| (*m, Role::Member, 0)),
        );
        insert_participants(&mut tx, new.id, &members, at).await?;
        change_log::record(
            &mut tx,
            &[NewChange::new(new.id, ChangeKind::ConversationCreated)],
        )
        .await?;
        // The creator is the announcement's sender: their marker moves to it, like any send.
        let announcement = NewMessage {
            conversation_id: new.id,
            ..announcement.clone()
        };
        insert_locked(&mut tx, &announcement, 1, Some(0)).await?;
        let details = existing_details(&mut tx, new.id).await?;
        tx.commit().await?;
        Ok(details)
    }

    async fn find_direct(&self, key: &str) -> Outcome<Option<ConversationDetails>> {
        let mut conn = self.pool.acquire().await?;
        let id: Option<String> =
            sqlx::query_scalar("SELECT id FROM CONVERSATIONS WHERE direct_key = ?")
                .bind(key)
                .fetch_optional(&mut *conn)
                .await?;
        match id {
            Some(id) => details(&mut conn, rows::conversation_id(&id)?).await,
            None => Ok(None),
        }
    }

    /// A DIRECT conversation of the pair written by the previous system after the
    /// migration (so without `direct_key`) is adopted: it gets the key, unless a racing
    /// call keyed another one first.
    async fn adopt_legacy_direct(&self, a: UserId, b: UserId, key: &str) -> Outcome<bool> {
        let legacy: Option<String> = sqlx::query_scalar(
            "SELECT c.id FROM CONVERSATIONS c \
             JOIN CONVERSATION_PARTICIPANTS p1 ON p1.conversation_id = c.id AND p1.user_id = ? \
             JOIN CONVERSATION_PARTICIPANTS p2 ON p2.conversation_id = c.id AND p2.user_id = ? \
             WHERE c.type = 'DIRECT' AND c.direct_key IS NULL \
               AND NOT EXISTS (SELECT 1 FROM CONVERSATION_PARTICIPANTS px \
                 WHERE px.conversation_id = c.id AND px.user_id NOT IN (?, ?)) \
             ORDER BY c.created_at, c.id LIMIT 1",
        )
        .bind(a.get())
        .bind(b.get())
        .bind(a.get())
        .bind(b.get())
        .fetch_optional(&self.pool)
        .await?;
        let Some(legacy) = legacy else {
            return Ok(false);
        };
        let adopted = sqlx::query(
            "UPDATE CONVERSATIONS SET direct_key = ? WHERE id = ? AND direct_key IS NULL",
        )
        .bind(key)
        .bind(legacy)
        .execute(&self.pool)
        .await;
        match adopted {
            Ok(_) => Ok(true),
            Err(e) if is_duplicate_of(&e, DIRECT_KEY) => Ok(true),
            Err(e) => Err(e.into()),
        }
    }

    async fn try_get_or_create_direct(
        &self,
        id: ConversationId,
        a: UserId,
        b: UserId,
        at: Timestamp,
    ) -> Outcome<DirectConversation> {
        let key = direct_key(a, b);
        if let Some(found) = self.find_direct(&key).await? {
            return Ok(DirectConversation {
                details: found,
                created: false,
            });
        }
        if self.adopt_legacy_direct(a, b, &key).await? {
            if let Some(found) = self.find_direct(&key).await? {
                return Ok(DirectConversation {
                    details: found,
                    created: false,
                });
            }
        }
        let at = db_time(at);
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO CONVERSATIONS (id, type, created_by, created_at, is_archived, \
             last_seq, direct_key) VALUES (?, 'DIRECT', ?, ?, FALSE, 0, ?)",
        )
        .bind(id.to_string())
        .bind(a.get())
        .bind(at)
        .bind(&key)
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(e) if is_duplicate_of(&e, DIRECT_KEY) => {
                // Another call created the pair's conversation first (we waited on its
                // uncommitted key, then lost): serve the winner.
                tx.rollback().await?;
                let winner = self
                    .find_direct(&key)
                    .await?
                    .ok_or(StoreError::Unavailable(
                        "direct conversation vanished".into(),
                    ))?;
                return Ok(DirectConversation {
                    details: winner,
                    created: false,
                });
            }
            Err(e) => return Err(e.into()),
        }
        let mut members = vec![(a, Role::Member, 0)];
        if b != a {
            members.push((b, Role::Member, 0));
        }
        insert_participants(&mut tx, id, &members, at).await?;
        change_log::record(
            &mut tx,
            &[NewChange::new(id, ChangeKind::ConversationCreated)],
        )
        .await?;
        let created = existing_details(&mut tx, id).await?;
        tx.commit().await?;
        Ok(DirectConversation {
            details: created,
            created: true,
        })
    }

    /// Opens a transaction holding the conversation's row lock, which serialises every
    /// change to the conversation and its membership, and decides under it whether
    /// `actor` may do `action` (see [`authorize_locked`]); `NotFound` when there is no
    /// such conversation.
    async fn begin_change(
        &self,
        id: ConversationId,
        actor: UserId,
        action: Action,
    ) -> Outcome<(Transaction<'static, MySql>, LockedConversation)> {
        let mut tx = self.pool.begin().await?;
        let locked = lock_conversation(&mut tx, id)
            .await?
            .ok_or(StoreError::NotFound)?;
        authorize_locked(&mut tx, id, actor, action).await?;
        Ok((tx, locked))
    }

    async fn try_rename(
        &self,
        id: ConversationId,
        actor: UserId,
        name: &GroupName,
        announcement: Option<&NewMessage>,
    ) -> Outcome<ConversationChanged> {
        let (mut tx, locked) = self.begin_change(id, actor, Action::Rename).await?;
        let current: Option<String> =
            sqlx::query_scalar("SELECT name FROM CONVERSATIONS WHERE id = ?")
                .bind(id.to_string())
                .fetch_one(&mut *tx)
                .await?;
        sqlx::query("UPDATE CONVERSATIONS SET name = ? WHERE id = ?")
            .bind(name.as_str())
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        if current.as_deref() != Some(name.as_str()) {
            updated(&mut tx, id).await?;
        }
        let announcement = announce(&mut tx, id, locked.last_seq, announcement).await?;
        settled(tx, id, announcement).await
    }

    async fn try_archive(
        &self,
        id: ConversationId,
        actor: UserId,
        at: Timestamp,
        announcement: Option<&NewMessage>,
    ) -> Outcome<ConversationChanged> {
        let (mut tx, locked) = self.begin_change(id, actor, Action::Archive).await?;
        sqlx::query("UPDATE CONVERSATIONS SET is_archived = TRUE, archived_at = ? WHERE id = ?")
            .bind(db_time(at))
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        if !locked.is_archived {
            updated(&mut tx, id).await?;
        }
        let announcement = announce(&mut tx, id, locked.last_seq, announcement).await?;
        settled(tx, id, announcement).await
    }

    async fn try_unarchive(
        &self,
        id: ConversationId,
        actor: UserId,
        announcement: Option<&NewMessage>,
    ) -> Outcome<ConversationChanged> {
        let (mut tx, locked) = self.begin_change(id, actor, Action::Archive).await?;
        sqlx::query(
            "UPDATE CONVERSATIONS SET is_archived = FALSE, archived_at = NULL WHERE id = ?",
        )
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
        if locked.is_archived {
            updated(&mut tx, id).await?;
        }
        let announcement = announce(&mut tx, id, locked.last_seq, announcement).await?;
        settled(tx, id, announcement).await
    }

    async fn try_add_participants(
        &self,
        id: ConversationId,
        actor: UserId,
        users: &[UserId],
        at: Timestamp,
        max_participants: usize,
        announcement: Option<&NewMessage>,
    ) -> Outcome<ParticipantsAdded> {
        let at = db_time(at);
        let (mut tx, locked) = self
            .begin_change(id, actor, Action::AddParticipants)
            .await?;
        if locked.is_archived {
            return Err(StoreConflict::ConversationArchived.into());
        }
        let active = active_roles(&mut tx, id).await?;
        let mut joined: Vec<UserId> = Vec::new();
        for user in users {
            if !active.iter().any(|(u, _)| u == user) && !joined.contains(user) {
                joined.push(*user);
            }
        }
        check_participant_limit(active.len() + joined.len(), max_participants)
            .map_err(StoreError::from)?;
        // Joiners start with everything read, the announcement of their joining included.
        let newest_after = locked.last_seq + i64::from(announcement.is_some());
        for user in users {
            join(&mut tx, id, *user, at, newest_after, locked.activity_at).await?;
        }
        let added: Vec<NewChange> = joined
            .iter()
            .map(|user| {
                NewChange::new(
                    id,
                    ChangeKind::ParticipantAdded {
                        user_id: *user,
                        role: Role::Member,
                    },
                )
            })
            .collect();
        change_log::record(&mut tx, &added).await?;
        let announcement = announce(&mut tx, id, locked.last_seq, announcement).await?;
        let details = existing_details(&mut tx, id).await?;
        tx.commit().await?;
        Ok(ParticipantsAdded {
            details,
            joined,
            announcement,
        })
    }

    async fn try_remove_participant(
        &self,
        id: ConversationId,
        actor: UserId,
        user: UserId,
        at: Timestamp,
        announcement: Option<&NewMessage>,
    ) -> Outcome<ParticipantRemoved> {
        let action = Action::RemoveParticipant { target: user };
        let (mut tx, locked) = self.begin_change(id, actor, action).await?;
        let removed = sqlx::query(
            "UPDATE CONVERSATION_PARTICIPANTS SET left_at = ? \
             WHERE conversation_id = ? AND user_id = ? AND left_at IS NULL",
        )
        .bind(db_time(at))
        .bind(id.to_string())
        .bind(user.get())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if removed == 0 {
            return Err(StoreError::NotFound.into());
        }
        let promoted = promote_if_no_admin(&mut tx, id).await?;
        let mut changes = vec![NewChange::new(
            id,
            ChangeKind::ParticipantRemoved { user_id: user },
        )];
        changes.extend(promoted.map(|heir| {
            NewChange::new(
                id,
                ChangeKind::ParticipantUpdated {
                    user_id: heir,
                    role: Role::Admin,
                },
            )
        }));
        change_log::record(&mut tx, &changes).await?;
        let announcement = announce(&mut tx, id, locked.last_seq, announcement).await?;
        let details = existing_details(&mut tx, id).await?;
        tx.commit().await?;
        Ok(ParticipantRemoved {
            details,
            promoted,
            announcement,
        })
    }

    async fn try_set_role(
        &self,
        id: ConversationId,
        actor: UserId,
        user: UserId,
        role: Role,
        announcement: Option<&NewMessage>,
    ) -> Outcome<ConversationChanged> {
        let (mut tx, locked) = self.begin_change(id, actor, Action::SetRole).await?;
        let active = active_roles(&mut tx, id).await?;
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
        set_role(&mut tx, id, user, role).await?;
        if *current != role {
            change_log::record(
                &mut tx,
                &[NewChange::new(
                    id,
                    ChangeKind::ParticipantUpdated {
                        user_id: user,
                        role,
                    },
                )],
            )
            .await?;
        }
        let announcement = announce(&mut tx, id, locked.last_seq, announcement).await?;
        settled(tx, id, announcement).await
    }
}

/// Makes `user` an active MEMBER joining at `at`.
async fn join(
    conn: &mut MySqlConnection,
    conversation: ConversationId,
    user: UserId,
    at: time::OffsetDateTime,
    marker: i64,
    activity_at: Option<time::OffsetDateTime>,
) -> Result<(), sqlx::Error> {
    // New: a MEMBER whose marker is at the newest seq, so nothing is unread.
    // Left: reactivated as MEMBER with a new joined_at and marker, its counter
    // reset to that nothing and its activity time refreshed (neither is kept
    // while inactive). Active: unchanged. (Assignments run left to right, so
    // left_at is cleared last.)
    sqlx::query(
        "INSERT INTO CONVERSATION_PARTICIPANTS \
         (id, conversation_id, user_id, role, joined_at, last_read_seq, is_muted, \
          unread_count, activity_at) \
         VALUES (?, ?, ?, 'MEMBER', ?, ?, FALSE, 0, ?) \
         ON DUPLICATE KEY UPDATE \
           role = IF(left_at IS NULL, role, 'MEMBER'), \
           joined_at = IF(left_at IS NULL, joined_at, VALUES(joined_at)), \
           last_read_seq = IF(left_at IS NULL, last_read_seq, \
                              GREATEST(last_read_seq, VALUES(last_read_seq))), \
           unread_count = IF(left_at IS NULL, unread_count, 0), \
           activity_at = VALUES(activity_at), \
           left_at = NULL",
    )
    .bind(new_row_id())
    .bind(conversation.to_string())
    .bind(user.get())
    .bind(at)
    .bind(marker)
    .bind(activity_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// When no active admin remains but active members do, promotes the earliest-joined
/// active member and returns them.
async fn promote_if_no_admin(
    conn: &mut MySqlConnection,
    conversation: ConversationId,
) -> Outcome<Option<UserId>> {
    let active = active_roles(conn, conversation).await?;
    if active.iter().any(|(_, role)| *role == Role::Admin) {
        return Ok(None);
    }
    let Some((heir, _)) = active.first() else {
        return Ok(None);
    };
    set_role(conn, conversation, *heir, Role::Admin).await?;
    Ok(Some(*heir))
}

/// Appends the announcement of a change, when there is one, as the message after
/// `last_seq` of the locked conversation.
async fn announce(
    conn: &mut MySqlConnection,
    conversation: ConversationId,
    last_seq: i64,
    announcement: Option<&NewMessage>,
) -> Outcome<Option<MessageView>> {
    let Some(announcement) = announcement else {
        return Ok(None);
    };
    let announcement = NewMessage {
        conversation_id: conversation,
        ..announcement.clone()
    };
    let marker: Option<i64> = sqlx::query_scalar(
        "SELECT last_read_seq FROM CONVERSATION_PARTICIPANTS \
         WHERE conversation_id = ? AND user_id = ?",
    )
    .bind(conversation.to_string())
    .bind(announcement.sender_id.get())
    .fetch_optional(&mut *conn)
    .await?;
    insert_locked(conn, &announcement, last_seq + 1, marker).await?;
    Ok(Some(
        // A SYSTEM message is stored plain: no key ring is needed to read it back.
        find_view(conn, &MessageCipher::plain(), announcement.id)
            .await?
            .ok_or(StoreError::NotFound)?,
    ))
}

/// Appends the `conversation.updated` of a rename, archive or unarchive that changed
/// something (renaming to the same name, archiving what is archived: nothing).
async fn updated(conn: &mut MySqlConnection, id: ConversationId) -> Result<(), sqlx::Error> {
    change_log::record(conn, &[NewChange::new(id, ChangeKind::ConversationUpdated)]).await
}

/// Reads the conversation after a change and commits.
async fn settled(
    mut tx: Transaction<'static, MySql>,
    id: ConversationId,
    announcement: Option<MessageView>,
) -> Outcome<ConversationChanged> {
    let details = existing_details(&mut tx, id).await?;
    tx.commit().await?;
    Ok(ConversationChanged {
        details,
        announcement,
    })
}

#[async_trait]
impl ConversationStore for MySqlStore {
    async fn create_conversation(
        &self,
        new: NewConversation,
        announcement: NewMessage,
    ) -> Result<ConversationDetails, StoreError> {
        self.written(crate::retrying!(self, self.try_create(&new, &announcement)))
    }

    async fn get_or_create_direct(
        &self,
        id: ConversationId,
        a: UserId,
        b: UserId,
        at: Timestamp,
    ) -> Result<DirectConversation, StoreError> {
        self.written(crate::retrying!(
            self,
            self.try_get_or_create_direct(id, a, b, at)
        ))
    }

    async fn conversation_details(
        &self,
        id: ConversationId,
    ) -> Result<Option<ConversationDetails>, StoreError> {
        let load = async {
            let mut conn = self.pool.acquire().await?;
            details(&mut conn, id).await
        };
        self.bounded(load).await
    }

    async fn rename_conversation(
        &self,
        id: ConversationId,
        actor: UserId,
        name: GroupName,
        announcement: Option<NewMessage>,
    ) -> Result<ConversationChanged, StoreError> {
        self.written(crate::retrying!(
            self,
            self.try_rename(id, actor, &name, announcement.as_ref())
        ))
    }

    async fn archive_conversation(
        &self,
        id: ConversationId,
        actor: UserId,
        at: Timestamp,
        announcement: Option<NewMessage>,
    ) -> Result<ConversationChanged, StoreError> {
        self.written(crate::retrying!(
            self,
            self.try_archive(id, actor, at, announcement.as_ref())
        ))
    }

    async fn unarchive_conversation(
        &self,
        id: ConversationId,
        actor: UserId,
        announcement: Option<NewMessage>,
    ) -> Result<ConversationChanged, StoreError> {
        self.written(crate::retrying!(
            self,
            self.try_unarchive(id, actor, announcement.as_ref())
        ))
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
        self.written(crate::retrying!(
            self,
            self.try_add_participants(
                id,
                actor,
                &users,
                at,
                max_participants,
                announcement.as_ref()
            )
        ))
    }

    async fn remove_participant(
        &self,
        id: ConversationId,
        actor: UserId,
        user: UserId,
        at: Timestamp,
        announcement: Option<NewMessage>,
    ) -> Result<ParticipantRemoved, StoreError> {
        self.written(crate::retrying!(
            self,
            self.try_remove_participant(id, actor, user, at, announcement.as_ref())
        ))
    }

    async fn set_role(
        &self,
        id: ConversationId,
        actor: UserId,
        user: UserId,
        role: Role,
        announcement: Option<NewMessage>,
    ) -> Result<ConversationChanged, StoreError> {
        self.written(crate::retrying!(
            self,
            self.try_set_role(id, actor, user, role, announcement.as_ref())
        ))
    }
}
