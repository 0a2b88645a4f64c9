//! Use cases on conversations and their membership: create, open a DIRECT conversation,
//! list, show, rename, archive, add, remove, leave and change roles.

use std::collections::HashSet;

use chat_domain::{
    Action, ConversationId, ConversationType, GroupName, MessageBody, MessageId, PostingId, Role,
    UserId, authorize, check_participant_limit,
};
use chat_ports::{InboxItem, InboxPage, InboxQuery, NewConversation, NewMessage};

use crate::announcements::Notice;
use crate::{ActionClass, ChatService, ServiceError};

/// A GROUP or POST_LINKED conversation to create.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateConversation {
    /// GROUP or POST_LINKED (DIRECT conversations are opened with
    /// [`ChatService::open_direct`]).
    pub kind: ConversationType,
    /// The name: required for GROUP, optional for POST_LINKED.
    pub name: Option<GroupName>,
    /// The posting: required for POST_LINKED, refused otherwise.
    pub posting_id: Option<PostingId>,
    /// The other participants; duplicates and the creator collapse.
    pub participant_ids: Vec<UserId>,
}

/// The DIRECT conversation [`ChatService::open_direct`] opened.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenedDirect {
    /// The conversation as the caller sees it.
    pub item: InboxItem,
    /// Whether this call created it (false when it already existed).
    pub created: bool,
}

/// Changes to a conversation's settings; absent fields stay as they are.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConversationUpdate {
    /// A new name.
    pub name: Option<GroupName>,
    /// Archive (true) or unarchive (false).
    pub is_archived: Option<bool>,
}

impl ChatService {
    /// Creates a GROUP or POST_LINKED conversation: the creator is ADMIN, the listed
    /// participants MEMBER, and an announcement (a SYSTEM message) tells of the creation.
    ///
    /// # Errors
    /// `Invalid` for DIRECT, a GROUP without a name, a POST_LINKED without an existing
    /// posting, a posting on a GROUP, unknown participants or more than the participant
    /// limit; `Unavailable` when the store fails.
    pub async fn create_conversation(
        &self,
        actor: UserId,
        request: CreateConversation,
    ) -> Result<InboxItem, ServiceError> {
        self.check_rate(ActionClass::CreateGroup, actor)?;
        match request.kind {
            ConversationType::Direct => {
                return Err(ServiceError::invalid(
                    "type",
                    "must be GROUP or POST_LINKED; open DIRECT conversations with /conversations/direct",
                ));
            }
            ConversationType::Group => {
                if request.name.is_none() {
                    return Err(ServiceError::invalid("name", "is required for GROUP"));
                }
                if request.posting_id.is_some() {
                    return Err(ServiceError::invalid(
                        "posting_id",
                        "is only for POST_LINKED conversations",
                    ));
                }
            }
            ConversationType::PostLinked => {
                let posting = request.posting_id.ok_or_else(|| {
                    ServiceError::invalid("posting_id", "is required for POST_LINKED")
                })?;
                if !self.ports.postings.posting_exists(posting).await? {
                    return Err(ServiceError::invalid("posting_id", "no such posting"));
                }
            }
        }
        let members = distinct_except(&request.participant_ids, actor);
        if members.len() + 1 > self.limits.max_participants {
            return Err(ServiceError::invalid(
                "participant_ids",
                format!(
                    "a conversation has at most {} participants",
                    self.limits.max_participants
                ),
            ));
        }
        self.require_existing_users("participant_ids", &members)
            .await?;

        let now = self.now();
        let id = ConversationId::new();
        let announcement = NewMessage {
            id: MessageId::new(),
            conversation_id: id,
            sender_id: actor,
            body: Notice::GroupCreated {
                name: request.name.as_ref().map(GroupName::as_str),
            }
            .body(actor)?,
            reply_to_id: None,
            client_message_id: None,
            created_at: now,
        };
        let details = self
            .ports
            .conversations
            .create_conversation(
                NewConversation {
                    id,
                    kind: request.kind,
                    name: request.name,
                    posting_id: request.posting_id,
                    created_by: actor,
                    members,
                    created_at: now,
                },
                announcement,
            )
            .await?;
        self.conversation(actor, details.conversation.id).await
    }

    /// Opens the DIRECT conversation between the caller and `other` (the caller themself
    /// for notes to self), creating it when there is none;
    /// [`OpenedDirect::created`] tells whether this call created it.
    ///
    /// # Errors
    /// `Invalid` when `other` does not exist; `Unavailable` when the store fails.
    pub async fn open_direct(
        &self,
        actor: UserId,
        other: UserId,
    ) -> Result<OpenedDirect, ServiceError> {
        self.check_rate(ActionClass::OpenDirect, actor)?;
        if other != actor {
            let missing = self.ports.users.missing_users(&[other]).await?;
            if !missing.is_empty() {
                return Err(ServiceError::invalid("user_id", "no such user"));
            }
        }
        let direct = self
            .ports
            .conversations
            .get_or_create_direct(ConversationId::new(), actor, other, self.now())
            .await?;
        let id = direct.details.conversation.id;
        Ok(OpenedDirect {
            item: self.conversation(actor, id).await?,
            created: direct.created,
        })
    }

    /// A page of the caller's conversations, most recent activity first.
    ///
    /// # Errors
    /// `Unavailable` when the store fails.
    pub async fn list_conversations(
        &self,
        actor: UserId,
        query: InboxQuery,
    ) -> Result<InboxPage, ServiceError> {
        Ok(self.ports.read_state.inbox(actor, query).await?)
    }

    /// One conversation as the caller sees it.
    ///
    /// # Errors
    /// `NotFound` unless the caller is an active participant; `Unavailable` when the store
    /// fails.
    pub async fn conversation(
        &self,
        actor: UserId,
        id: ConversationId,
    ) -> Result<InboxItem, ServiceError> {
        self.ports
            .read_state
            .inbox_item(id, actor)
            .await?
            .ok_or(ServiceError::NotFound)
    }

    /// Renames, archives or unarchives. Admins only; in a DIRECT conversation either side
    /// may archive, nobody may rename. Each actual change is told by an announcement (a
    /// SYSTEM message).
    ///
    /// # Errors
    /// `NotFound` for non-participants; `Forbidden` for members and for renaming a DIRECT
    /// conversation; `Unavailable` when the store fails.
    pub async fn update_conversation(
        &self,
        actor: UserId,
        id: ConversationId,
        update: ConversationUpdate,
    ) -> Result<InboxItem, ServiceError> {
        self.check_rate(ActionClass::Manage, actor)?;
        let (details, membership) = self.member_view(id, actor).await?;
        // Checked here to answer early; the store checks again under its lock.
        let (kind, role) = (details.conversation.kind, Some(membership.role));
        if update.name.is_some() {
            authorize(kind, actor, role, Action::Rename)?;
        }
        authorize(kind, actor, role, Action::Archive)?;
        if let Some(name) = update.name {
            if details.conversation.name.as_deref() != Some(name.as_str()) {
                let body = Notice::Renamed(name.as_str()).body(actor)?;
                let announcement = self.announcement(actor, id, body);
                self.ports
                    .conversations
                    .rename_conversation(id, actor, name, Some(announcement))
                    .await?;
            }
        }
        match update.is_archived {
            Some(true) if !details.conversation.is_archived => {
                let body = Notice::Archived.body(actor)?;
                let announcement = self.announcement(actor, id, body);
                self.ports
                    .conversations
                    .archive_conversation(id, actor, self.now(), Some(announcement))
                    .await?;
            }
            Some(false) if details.conversation.is_archived => {
                let body = Notice::Unarchived.body(actor)?;
                let announcement = self.announcement(actor, id, body);
                self.ports
                    .conversations
                    .unarchive_conversation(id, actor, Some(announcement))
                    .await?;
            }
            _ => {}
        }
        self.conversation(actor, id).await
    }

    /// Adds users as MEMBERs (re-activating those who had left). Admins only; never in a
    /// DIRECT or archived conversation.
    ///
    /// # Errors
    /// `NotFound` for non-participants; `Forbidden` for members and DIRECT conversations;
    /// `Conflict(conversation_archived)`; `Invalid` for unknown users or too many
    /// participants; `Unavailable` when the store fails.
    pub async fn add_participants(
        &self,
        actor: UserId,
        id: ConversationId,
        user_ids: Vec<UserId>,
    ) -> Result<InboxItem, ServiceError> {
        self.check_rate(ActionClass::AddParticipants, actor)?;
        let (details, membership) = self.member_view(id, actor).await?;
        let role = Some(membership.role);
        authorize(
            details.conversation.kind,
            actor,
            role,
            Action::AddParticipants,
        )?;
        if details.conversation.is_archived {
            return Err(ServiceError::archived());
        }
        if user_ids.is_empty() {
            return Err(ServiceError::invalid("user_ids", "must not be empty"));
        }
        let new: Vec<UserId> = distinct_except(&user_ids, actor)
            .into_iter()
            .filter(|u| details.active_participant(*u).is_none())
            .collect();
        check_participant_limit(
            details.active_participants().count() + new.len(),
            self.limits.max_participants,
        )?;
        self.require_existing_users("user_ids", &new).await?;
        if !new.is_empty() {
            let body = Notice::ParticipantsAdded(&new).body(actor)?;
            let announcement = self.announcement(actor, id, body);
            self.ports
                .conversations
                .add_participants(
                    id,
                    actor,
                    new,
                    self.now(),
                    self.limits.max_participants,
                    Some(announcement),
                )
                .await?;
            self.forget_active_members(id);
        }
        self.conversation(actor, id).await
    }

    /// Removes a participant, or, when `user` is the caller, leaves. Removing others is for
    /// admins; anyone may leave a GROUP or POST_LINKED conversation; nobody leaves a
    /// DIRECT one. When the last admin goes, the earliest-joined member becomes ADMIN.
    ///
    /// # Errors
    /// `NotFound` for non-participants and for a `user` who is not an active participant;
    /// `Forbidden` for members removing others and for DIRECT conversations;
    /// `Unavailable` when the store fails.
    pub async fn remove_participant(
        &self,
        actor: UserId,
        id: ConversationId,
        user: UserId,
    ) -> Result<(), ServiceError> {
        self.check_rate(ActionClass::Manage, actor)?;
        let (details, membership) = self.member_view(id, actor).await?;
        let action = Action::RemoveParticipant { target: user };
        authorize(
            details.conversation.kind,
            actor,
            Some(membership.role),
            action,
        )?;
        let notice = if user == actor {
            Notice::ParticipantLeft
        } else {
            if details.active_participant(user).is_none() {
                return Err(ServiceError::NotFound);
            }
            Notice::ParticipantRemoved(user)
        };
        let announcement = self.announcement(actor, id, notice.body(actor)?);
        // Leaving and being removed are one change to the store.
        self.ports
            .conversations
            .remove_participant(id, actor, user, self.now(), Some(announcement))
            .await?;
        self.forget_active_members(id);
        Ok(())
    }

    /// Changes a participant's role. Admins only, GROUP and POST_LINKED only; demoting the
    /// last admin is refused.
    ///
    /// # Errors
    /// `NotFound` for non-participants and for a `user` who is not active; `Forbidden`
    /// for members and DIRECT conversations; `Conflict(last_admin)`; `Unavailable` when
    /// the store fails.
    pub async fn change_role(
        &self,
        actor: UserId,
        id: ConversationId,
        user: UserId,
        role: Role,
    ) -> Result<InboxItem, ServiceError> {
        self.check_rate(ActionClass::Manage, actor)?;
        let (details, membership) = self.member_view(id, actor).await?;
        authorize(
            details.conversation.kind,
            actor,
            Some(membership.role),
            Action::SetRole,
        )?;
        let target = details
            .active_participant(user)
            .ok_or(ServiceError::NotFound)?;
        if target.role != role {
            if target.role == Role::Admin && details.active_admin_count() <= 1 {
                return Err(ServiceError::Conflict {
                    code: crate::ConflictCode::LastAdmin,
                });
            }
            let body = Notice::RoleChanged(user, role).body(actor)?;
            let announcement = self.announcement(actor, id, body);
            self.ports
                .conversations
                .set_role(id, actor, user, role, Some(announcement))
                .await?;
        }
        self.conversation(actor, id).await
    }

    /// The announcement (a SYSTEM message) of a change `actor` makes now.
    fn announcement(&self, actor: UserId, id: ConversationId, body: MessageBody) -> NewMessage {
        NewMessage {
            id: MessageId::new(),
            conversation_id: id,
            sender_id: actor,
            body,
            reply_to_id: None,
            client_message_id: None,
            created_at: self.now(),
        }
    }

    async fn require_existing_users(
        &self,
        field: &'static str,
        users: &[UserId],
    ) -> Result<(), ServiceError> {
        if users.is_empty() {
            return Ok(());
        }
        let missing = self.ports.users.missing_users(users).await?;
        if missing.is_empty() {
            Ok(())
        } else {
            let ids: Vec<String> = missing.iter().map(ToString::to_string).collect();
            Err(ServiceError::invalid(
                field,
                format!("unknown users: {}", ids.join(", ")),
            ))
        }
    }
}

/// `users` without duplicates and without `except`, in first-seen order.
fn distinct_except(users: &[UserId], except: UserId) -> Vec<UserId> {
    let mut seen = HashSet::new();
    users
        .iter()
        .copied()
        .filter(|u| *u != except && seen.insert(*u))
        .collect()
}
