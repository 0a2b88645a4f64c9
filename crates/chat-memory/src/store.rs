//! [`MemoryStore`]: the port implementations, each one lock-hold of the shared state.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use chat_crypto::{MessageCipher, StoredFields, row_ids};
use chat_domain::{
    Action, ChangeKind, Conversation, ConversationDetails, ConversationId, ConversationType,
    DisplayName, Emoji, GroupName, Message, MessageContent, MessageId, MessageView, Participant,
    PostingId, ReactionCap, Receipt, Role, Seq, Timestamp, UserId, authorize,
    check_participant_limit, to_stored_precision,
};
use chat_ports::{
    Appended, ArchivedFilter, ConversationChanged, ConversationStore, Deleted, DirectConversation,
    Edited, HistoryPage, HistoryQuery, InboxCursor, InboxItem, InboxPage, InboxQuery, MessageStore,
    NewConversation, NewMessage, ParticipantRemoved, ParticipantsAdded, PostingDirectory,
    ReactionChange, ReadState, ReadStateStore, ReencryptBatch, ReencryptStore, StoreConflict,
    StoreError, UnreadConversation, UnreadSummary, UserDirectory,
};

use crate::state::{Author, State, StoredConversation, aggregate, seal};

/// The in-memory store. Cheap to create; share it as `Arc<MemoryStore>`.
#[derive(Default)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    /// This handle's codec: handles over one state ([`MemoryStore::reopened`]) may hold
    /// different key rings, as processes over one database may.
    cipher: MessageCipher,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store that seals message text with `cipher` (plain with
    /// [`MessageCipher::plain`]).
    pub fn with_cipher(cipher: MessageCipher) -> Self {
        Self {
            state: Arc::default(),
            cipher,
        }
    }

    /// Another handle on the same data that seals with `cipher`, as a process restarted
    /// with another key ring (or a second node configured differently) would.
    pub fn reopened(&self, cipher: MessageCipher) -> Self {
        Self {
            state: Arc::clone(&self.state),
            cipher,
        }
    }

    /// The fields of a message as stored (sealed or plain) with its key id, for tests and
    /// tooling that check what sits at rest.
    pub fn stored_fields(&self, id: MessageId) -> Option<StoredFields> {
        self.lock().messages.get(&id).map(|m| m.stored_fields())
    }

    /// Overwrites the stored fields of a message as they are, bypassing the codec, for
    /// tests that move a ciphertext to another row. Returns whether the message exists.
    pub fn overwrite_stored_fields(&self, id: MessageId, stored: StoredFields) -> bool {
        self.lock()
            .messages
            .get_mut(&id)
            .map(|m| m.set_stored_fields(stored))
            .is_some()
    }

    /// Registers a posting of the platform (the in-memory stand-in for `POSTINGS`).
    pub async fn add_posting(&self, id: PostingId) {
        self.lock().postings.insert(id);
    }

    /// The state, even if a panicking thread poisoned the lock: every operation leaves
    /// the state consistent before it can panic, so the data is still sound.
    /// The operations under the lock seal and open with this handle's codec.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state.cipher.clone_from(&self.cipher);
        state
    }
}

fn participant(
    conversation: ConversationId,
    user: UserId,
    role: Role,
    at: Timestamp,
    last_read_seq: Seq,
) -> Participant {
    Participant {
        conversation_id: conversation,
        user_id: user,
        role,
        joined_at: at,
        left_at: None,
        last_read_at: None,
        last_read_seq,
        is_muted: false,
    }
}

fn insert_conversation(
    state: &mut State,
    conversation: Conversation,
    participants: Vec<Participant>,
) {
    for p in &participants {
        state
            .memberships
            .entry(p.user_id)
            .or_default()
            .insert(conversation.id);
    }
    let activity_key = state.next_activity_key();
    state.conversations.insert(
        conversation.id,
        StoredConversation {
            conversation,
            participants,
            by_seq: Vec::new(),
            client_ids: HashMap::new(),
            activity_key,
        },
    );
}

#[async_trait]
impl ConversationStore for MemoryStore {
    async fn create_conversation(
        &self,
        new: NewConversation,
        announcement: NewMessage,
    ) -> Result<ConversationDetails, StoreError> {
        let mut state = self.lock();
        // Every instant is kept at the stored precision, as MySQL keeps it.
        let at = to_stored_precision(new.created_at);
        let conversation = Conversation {
            id: new.id,
            kind: new.kind,
            name: new.name.map(|n| n.as_str().to_owned()),
            posting_id: new.posting_id,
            created_by: new.created_by,
            created_at: at,
            last_message_at: None,
            is_archived: false,
            archived_at: None,
        };
        let mut participants = vec![participant(
            new.id,
            new.created_by,
            Role::Admin,
            at,
            Seq::ZERO,
        )];
        participants.extend(
            new.members
                .iter()
                .filter(|u| **u != new.created_by)
                .map(|u| participant(new.id, *u, Role::Member, at, Seq::ZERO)),
        );
        insert_conversation(&mut state, conversation, participants);
        state.feed.record(new.id, ChangeKind::ConversationCreated);
        state.append(announcement, Author::Service)?;
        state.details(new.id).ok_or(StoreError::NotFound)
    }

    async fn get_or_create_direct(
        &self,
        id: ConversationId,
        a: UserId,
        b: UserId,
        at: Timestamp,
    ) -> Result<DirectConversation, StoreError> {
        let at = to_stored_precision(at);
        let mut state = self.lock();
        let pair = (a.min(b), a.max(b));
        if let Some(existing) = state.direct_pairs.get(&pair).copied() {
            return Ok(DirectConversation {
                details: state.details(existing).ok_or(StoreError::NotFound)?,
                created: false,
            });
        }
        let conversation = Conversation {
            id,
            kind: ConversationType::Direct,
            name: None,
            posting_id: None,
            created_by: a,
            created_at: at,
            last_message_at: None,
            is_archived: false,
            archived_at: None,
        };
        let mut participants = vec![participant(id, pair.0, Role::Member, at, Seq::ZERO)];
        if pair.1 != pair.0 {
            participants.push(participant(id, pair.1, Role::Member, at, Seq::ZERO));
        }
        insert_conversation(&mut state, conversation, participants);
        state.direct_pairs.insert(pair, id);
        state.feed.record(id, ChangeKind::ConversationCreated);
        Ok(DirectConversation {
            details: state.details(id).ok_or(StoreError::NotFound)?,
            created: true,
        })
    }

    async fn conversation_details(
        &self,
        id: ConversationId,
    ) -> Result<Option<ConversationDetails>, StoreError> {
        Ok(self.lock().details(id))
    }

    async fn rename_conversation(
        &self,
        id: ConversationId,
        actor: UserId,
        name: GroupName,
        announcement: Option<NewMessage>,
    ) -> Result<ConversationChanged, StoreError> {
        let mut state = self.lock();
        state.authorize(id, actor, Action::Rename)?;
        let current = &mut state.stored_conversation_mut(id)?.conversation.name;
        let changed = current.as_deref() != Some(name.as_str());
        *current = Some(name.as_str().to_owned());
        state.settled(id, changed, announcement)
    }

    async fn archive_conversation(
        &self,
        id: ConversationId,
        actor: UserId,
        at: Timestamp,
        announcement: Option<NewMessage>,
    ) -> Result<ConversationChanged, StoreError> {
        let mut state = self.lock();
        state.authorize(id, actor, Action::Archive)?;
        let conversation = &mut state.stored_conversation_mut(id)?.conversation;
        let changed = !conversation.is_archived;
        conversation.is_archived = true;
        conversation.archived_at = Some(to_stored_precision(at));
        state.settled(id, changed, announcement)
    }

    async fn unarchive_conversation(
        &self,
        id: ConversationId,
        actor: UserId,
        announcement: Option<NewMessage>,
    ) -> Result<ConversationChanged, StoreError> {
        let mut state = self.lock();
        state.authorize(id, actor, Action::Archive)?;
        let conversation = &mut state.stored_conversation_mut(id)?.conversation;
        let changed = conversation.is_archived;
        conversation.is_archived = false;
        conversation.archived_at = None;
        state.settled(id, changed, announcement)
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
        let mut state = self.lock();
        let stored = state.authorize(id, actor, Action::AddParticipants)?;
        if stored.conversation.is_archived {
            return Err(StoreError::Conflict(StoreConflict::ConversationArchived));
        }
        let mut joining: Vec<UserId> = users
            .iter()
            .copied()
            .filter(|u| stored.active_participant(*u).is_none())
            .collect();
        joining.sort_unstable();
        joining.dedup();
        let active = stored.participants.iter().filter(|p| p.is_active()).count();
        check_participant_limit(active + joining.len(), max_participants)?;
        let stored = state.stored_conversation_mut(id)?;
        let joined = join(stored, id, &users, to_stored_precision(at));
        for user in &joined {
            state.memberships.entry(*user).or_default().insert(id);
            state.feed.record(
                id,
                ChangeKind::ParticipantAdded {
                    user_id: *user,
                    role: Role::Member,
                },
            );
        }
        let announcement = state.announce(announcement)?;
        // Joiners start with everything up to now read, the announcement of their joining
        // included.
        let stored = state.stored_conversation_mut(id)?;
        let last = stored.last_seq();
        for user in &joined {
            if let Some(p) = stored.participant_mut(*user) {
                p.last_read_seq = p.last_read_seq.max(last);
            }
        }
        Ok(ParticipantsAdded {
            details: state.details(id).ok_or(StoreError::NotFound)?,
            joined,
            announcement,
        })
    }

    async fn remove_participant(
        &self,
        id: ConversationId,
        actor: UserId,
        user: UserId,
        at: Timestamp,
        announcement: Option<NewMessage>,
    ) -> Result<ParticipantRemoved, StoreError> {
        let mut state = self.lock();
        state.authorize(id, actor, Action::RemoveParticipant { target: user })?;
        let stored = state.stored_conversation_mut(id)?;
        stored
            .participant_mut(user)
            .filter(|p| p.is_active())
            .ok_or(StoreError::NotFound)?
            .left_at = Some(to_stored_precision(at));
        let promoted = State::promote_if_no_admin(stored);
        state
            .feed
            .record(id, ChangeKind::ParticipantRemoved { user_id: user });
        if let Some(heir) = promoted {
            state.feed.record(
                id,
                ChangeKind::ParticipantUpdated {
                    user_id: heir,
                    role: Role::Admin,
                },
            );
        }
        let announcement = state.announce(announcement)?;
        Ok(ParticipantRemoved {
            details: state.details(id).ok_or(StoreError::NotFound)?,
            promoted,
            announcement,
        })
    }

    async fn set_role(
        &self,
        id: ConversationId,
        actor: UserId,
        user: UserId,
        role: Role,
        announcement: Option<NewMessage>,
    ) -> Result<ConversationChanged, StoreError> {
        let mut state = self.lock();
        state.authorize(id, actor, Action::SetRole)?;
        let stored = state.stored_conversation_mut(id)?;
        let admins = stored
            .participants
            .iter()
            .filter(|p| p.is_active_admin())
            .count();
        let p = stored
            .participant_mut(user)
            .filter(|p| p.is_active())
            .ok_or(StoreError::NotFound)?;
        if p.role == Role::Admin && role != Role::Admin && admins <= 1 {
            return Err(StoreError::Conflict(StoreConflict::LastAdmin));
        }
        let changed = p.role != role;
        p.role = role;
        if changed {
            state.feed.record(
                id,
                ChangeKind::ParticipantUpdated {
                    user_id: user,
                    role,
                },
            );
        }
        state.settled(id, false, announcement)
    }
}

/// Makes `users` active MEMBERs joining at `at`: new ones are added, those who had left
/// come back with a new `joined_at`, active ones stay as they are. Returns who joined.
fn join(
    stored: &mut StoredConversation,
    id: ConversationId,
    users: &[UserId],
    at: Timestamp,
) -> Vec<UserId> {
    let mut joined = Vec::new();
    for user in users {
        match stored.participant_mut(*user) {
            Some(p) if p.is_active() => {}
            Some(p) => {
                p.role = Role::Member;
                p.joined_at = at;
                p.left_at = None;
                joined.push(*user);
            }
            None => {
                stored
                    .participants
                    .push(participant(id, *user, Role::Member, at, Seq::ZERO));
                joined.push(*user);
            }
        }
    }
    joined
}

impl State {
    /// Decides whether `actor` may do `action` in conversation `id` as it stands under the
    /// store's lock (the rule of [`chat_domain::authorize`]); the conversation when they
    /// may.
    fn authorize(
        &self,
        id: ConversationId,
        actor: UserId,
        action: Action,
    ) -> Result<&StoredConversation, StoreError> {
        let stored = self.conversations.get(&id).ok_or(StoreError::NotFound)?;
        let role = stored.active_participant(actor).map(|p| p.role);
        authorize(stored.conversation.kind, actor, role, action)?;
        Ok(stored)
    }

    /// Decides whether `actor` may do what `action` says with live message `id` (see
    /// [`State::authorize`]), refusing an archived conversation when `writes` (an edit, a
    /// reaction); the active participants, who must hear of the change.
    fn authorize_on_message(
        &self,
        id: MessageId,
        actor: UserId,
        action: impl FnOnce(&Message) -> Action,
        writes: bool,
    ) -> Result<Vec<UserId>, StoreError> {
        let message = &self
            .messages
            .get(&id)
            .filter(|m| !m.message.is_deleted())
            .ok_or(StoreError::NotFound)?
            .message;
        let stored = self.authorize(message.conversation_id, actor, action(message))?;
        if writes && stored.conversation.is_archived {
            return Err(StoreError::Conflict(StoreConflict::ConversationArchived));
        }
        Ok(stored
            .participants
            .iter()
            .filter(|p| p.is_active())
            .map(|p| p.user_id)
            .collect())
    }

    fn stored_conversation_mut(
        &mut self,
        id: ConversationId,
    ) -> Result<&mut StoredConversation, StoreError> {
        self.conversations.get_mut(&id).ok_or(StoreError::NotFound)
    }

    /// Appends the announcement of a change, when there is one.
    fn announce(
        &mut self,
        announcement: Option<NewMessage>,
    ) -> Result<Option<MessageView>, StoreError> {
        announcement
            .map(|new| self.append(new, Author::Service).map(|a| a.view))
            .transpose()
    }

    /// Records a change of the conversation itself (`conversation.updated`) when
    /// `updated`, appends the announcement of a change, and reports the conversation
    /// after it.
    fn settled(
        &mut self,
        id: ConversationId,
        updated: bool,
        announcement: Option<NewMessage>,
    ) -> Result<ConversationChanged, StoreError> {
        if updated {
            self.feed.record(id, ChangeKind::ConversationUpdated);
        }
        let announcement = self.announce(announcement)?;
        Ok(ConversationChanged {
            details: self.details(id).ok_or(StoreError::NotFound)?,
            announcement,
        })
    }
}

#[async_trait]
impl MessageStore for MemoryStore {
    async fn append_message(&self, new: NewMessage) -> Result<Appended, StoreError> {
        self.lock().append(new, Author::User)
    }

    async fn find_message(&self, id: MessageId) -> Result<Option<MessageView>, StoreError> {
        Ok(self.lock().view(id))
    }

    async fn find_messages(&self, ids: &[MessageId]) -> Result<Vec<MessageView>, StoreError> {
        let mut seen = HashSet::with_capacity(ids.len());
        let state = self.lock();
        Ok(ids
            .iter()
            .filter(|id| seen.insert(**id))
            .filter_map(|id| state.view(*id))
            .collect())
    }

    async fn edit_message(
        &self,
        id: MessageId,
        actor: UserId,
        content: MessageContent,
        at: Timestamp,
    ) -> Result<Edited, StoreError> {
        let mut state = self.lock();
        let edit = |m: &Message| Action::EditMessage {
            sender: m.sender_id,
            is_system: m.is_system_message,
        };
        let recipients = state.authorize_on_message(id, actor, edit, true)?;
        let cipher = state.cipher.clone();
        let stored = state.live_message_mut(id)?;
        // Re-sealed as a whole under the active key with the row's ids, as the row names
        // one key for all its fields.
        let mut fields = cipher
            .open(
                row_ids(stored.message.id, stored.message.conversation_id),
                stored.stored_fields(),
            )
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        fields.content = content.into_inner();
        let sealed = seal(&cipher, &stored.message, fields)?;
        stored.set_stored_fields(sealed);
        stored.message.edited_at = Some(to_stored_precision(at));
        let conversation = stored.message.conversation_id;
        state
            .feed
            .record(conversation, ChangeKind::MessageUpdated { message_id: id });
        Ok(Edited {
            view: state.view(id).ok_or(StoreError::NotFound)?,
            recipients,
        })
    }

    async fn delete_message(
        &self,
        id: MessageId,
        actor: UserId,
        at: Timestamp,
    ) -> Result<Deleted, StoreError> {
        let mut state = self.lock();
        let delete = |m: &Message| Action::DeleteMessage {
            sender: m.sender_id,
        };
        let recipients = state.authorize_on_message(id, actor, delete, false)?;
        let cipher = state.cipher.clone();
        let stored = state.live_message_mut(id)?;
        stored.message.deleted_at = Some(to_stored_precision(at));
        let message = stored.opened(&cipher);
        state.feed.record(
            message.conversation_id,
            ChangeKind::MessageDeleted {
                message_id: id,
                seq: message.seq,
            },
        );
        Ok(Deleted {
            message,
            recipients,
        })
    }

    async fn history(
        &self,
        conversation: ConversationId,
        query: HistoryQuery,
    ) -> Result<HistoryPage, StoreError> {
        let state = self.lock();
        let Some(stored) = state.conversations.get(&conversation) else {
            // An unknown conversation has no messages (the MySQL adapter answers alike).
            return Ok(HistoryPage {
                items: Vec::new(),
                has_more: false,
            });
        };
        let live = |id: &&MessageId| {
            state
                .messages
                .get(*id)
                .is_some_and(|m| !m.message.is_deleted())
        };
        let (ids, limit): (Vec<MessageId>, usize) = match query {
            HistoryQuery::Latest(limit) => (
                stored
                    .by_seq
                    .iter()
                    .rev()
                    .filter(live)
                    .take(limit.get() + 1)
                    .copied()
                    .collect(),
                limit.get(),
            ),
            HistoryQuery::Before(seq, limit) => {
                let end = usize::try_from(seq.get().saturating_sub(1))
                    .unwrap_or(0)
                    .min(stored.by_seq.len());
                (
                    stored.by_seq[..end]
                        .iter()
                        .rev()
                        .filter(live)
                        .take(limit.get() + 1)
                        .copied()
                        .collect(),
                    limit.get(),
                )
            }
            HistoryQuery::After(seq, limit) => {
                let start = usize::try_from(seq.get())
                    .unwrap_or(usize::MAX)
                    .min(stored.by_seq.len());
                (
                    stored.by_seq[start..]
                        .iter()
                        .filter(live)
                        .take(limit.get() + 1)
                        .copied()
                        .collect(),
                    limit.get(),
                )
            }
        };
        let has_more = ids.len() > limit;
        let items = ids
            .into_iter()
            .take(limit)
            .filter_map(|id| state.view(id))
            .collect();
        Ok(HistoryPage { items, has_more })
    }

    async fn add_reaction(
        &self,
        message: MessageId,
        user: UserId,
        emoji: Emoji,
        _at: Timestamp,
    ) -> Result<ReactionChange, StoreError> {
        let mut state = self.lock();
        let recipients = state.authorize_on_message(message, user, |_| Action::React, true)?;
        let stored = state.live_message_mut(message)?;
        let present = stored
            .reactions
            .iter()
            .any(|(e, u)| e == emoji.as_str() && *u == user);
        if !present {
            let mut distinct: Vec<&str> =
                stored.reactions.iter().map(|(e, _)| e.as_str()).collect();
            distinct.sort_unstable();
            distinct.dedup();
            let emoji_present = distinct.contains(&emoji.as_str());
            let users_reactions = stored.reactions.iter().filter(|(_, u)| *u == user).count();
            if let Some(cap) = ReactionCap::refused(distinct.len(), emoji_present, users_reactions)
            {
                return Err(StoreError::Conflict(StoreConflict::ReactionCap(cap)));
            }
            stored.reactions.push((emoji.as_str().to_owned(), user));
        }
        let conversation = stored.message.conversation_id;
        let reactions = aggregate(&stored.reactions);
        if !present {
            state.feed.record(
                conversation,
                ChangeKind::ReactionAdded {
                    message_id: message,
                    user_id: user,
                    emoji: emoji.as_str().to_owned(),
                },
            );
        }
        Ok(ReactionChange {
            changed: !present,
            reactions,
            recipients,
        })
    }

    async fn remove_reaction(
        &self,
        message: MessageId,
        user: UserId,
        emoji: Emoji,
    ) -> Result<ReactionChange, StoreError> {
        let mut state = self.lock();
        let recipients = state.authorize_on_message(message, user, |_| Action::React, true)?;
        let stored = state.live_message_mut(message)?;
        let position = stored
            .reactions
            .iter()
            .position(|(e, u)| e == emoji.as_str() && *u == user);
        if let Some(index) = position {
            stored.reactions.remove(index);
        }
        let conversation = stored.message.conversation_id;
        let reactions = aggregate(&stored.reactions);
        if position.is_some() {
            state.feed.record(
                conversation,
                ChangeKind::ReactionRemoved {
                    message_id: message,
                    user_id: user,
                    emoji: emoji.as_str().to_owned(),
                },
            );
        }
        Ok(ReactionChange {
            changed: position.is_some(),
            reactions,
            recipients,
        })
    }

    async fn receipts(&self, message: MessageId) -> Result<Vec<Receipt>, StoreError> {
        let state = self.lock();
        let mut receipts = state
            .messages
            .get(&message)
            .map(|m| m.receipts.clone())
            .unwrap_or_default();
        receipts.sort_by_key(|r| (r.read_at, r.user_id));
        Ok(receipts)
    }
}

impl State {
    fn inbox_item(&self, id: ConversationId, user: UserId) -> Option<InboxItem> {
        let stored = self.conversations.get(&id)?;
        let membership = stored.active_participant(user)?.clone();
        Some(InboxItem {
            details: self.details(id)?,
            unread_count: self.unread_count(stored, &membership),
            last_message: self.last_live_message(stored),
            membership,
        })
    }
}

#[async_trait]
impl ReadStateStore for MemoryStore {
    async fn mark_read(
        &self,
        conversation: ConversationId,
        user: UserId,
        up_to: Option<Seq>,
        at: Timestamp,
    ) -> Result<ReadState, StoreError> {
        let mut state = self.lock();
        let last = state
            .conversations
            .get(&conversation)
            .filter(|c| c.active_participant(user).is_some())
            .ok_or(StoreError::NotFound)?
            .last_seq();
        let moved = state.advance_marker(conversation, user, up_to.unwrap_or(last), at, true);
        let stored = state
            .conversations
            .get(&conversation)
            .ok_or(StoreError::NotFound)?;
        let participant = stored
            .active_participant(user)
            .ok_or(StoreError::NotFound)?;
        Ok(ReadState {
            last_read_seq: participant.last_read_seq,
            last_read_at: participant.last_read_at,
            unread_count: state.unread_count(stored, participant),
            moved,
            recipients: stored
                .participants
                .iter()
                .filter(|p| p.is_active())
                .map(|p| p.user_id)
                .collect(),
        })
    }

    async fn set_muted(
        &self,
        conversation: ConversationId,
        user: UserId,
        muted: bool,
    ) -> Result<Participant, StoreError> {
        let mut state = self.lock();
        let participant = state
            .conversations
            .get_mut(&conversation)
            .and_then(|c| c.participant_mut(user))
            .filter(|p| p.is_active())
            .ok_or(StoreError::NotFound)?;
        participant.is_muted = muted;
        Ok(participant.clone())
    }

    async fn inbox_item(
        &self,
        conversation: ConversationId,
        user: UserId,
    ) -> Result<Option<InboxItem>, StoreError> {
        Ok(self.lock().inbox_item(conversation, user))
    }

    async fn inbox(&self, user: UserId, query: InboxQuery) -> Result<InboxPage, StoreError> {
        let state = self.lock();
        let mut candidates: Vec<(i64, ConversationId)> = state
            .memberships
            .get(&user)
            .into_iter()
            .flatten()
            .filter_map(|id| state.conversations.get(id))
            .filter(|c| c.active_participant(user).is_some())
            .filter(|c| match query.archived {
                ArchivedFilter::Active => !c.conversation.is_archived,
                ArchivedFilter::Archived => c.conversation.is_archived,
                ArchivedFilter::Any => true,
            })
            .map(|c| (c.activity_key, c.conversation.id))
            .filter(|key| match query.after {
                None => true,
                Some(cursor) => *key < (instant_key(cursor.activity_at), cursor.conversation_id),
            })
            .collect();
        candidates.sort_unstable_by(|a, b| b.cmp(a));
        let limit = query.limit.get();
        let has_more = candidates.len() > limit;
        let page = &candidates[..limit.min(candidates.len())];
        let items: Vec<InboxItem> = page
            .iter()
            .filter_map(|(_, id)| state.inbox_item(*id, user))
            .collect();
        let next_cursor = if has_more {
            page.last().map(|(key, id)| InboxCursor {
                activity_at: key_instant(*key),
                conversation_id: *id,
            })
        } else {
            None
        };
        Ok(InboxPage { items, next_cursor })
    }

    async fn unread_summary(&self, user: UserId) -> Result<UnreadSummary, StoreError> {
        let state = self.lock();
        let mut conversations: Vec<UnreadConversation> = state
            .memberships
            .get(&user)
            .into_iter()
            .flatten()
            .filter_map(|id| state.conversations.get(id))
            .filter_map(|stored| {
                let p = stored.active_participant(user)?;
                let unread_count = state.unread_count(stored, p);
                (unread_count > 0).then_some(UnreadConversation {
                    conversation_id: stored.conversation.id,
                    unread_count,
                    is_muted: p.is_muted,
                })
            })
            .collect();
        conversations.sort_by_key(|c| c.conversation_id);
        let total = conversations
            .iter()
            .filter(|c| !c.is_muted)
            .map(|c| c.unread_count)
            .sum();
        Ok(UnreadSummary {
            total,
            conversations,
        })
    }
}

#[async_trait]
impl UserDirectory for MemoryStore {
    async fn missing_users(&self, users: &[UserId]) -> Result<Vec<UserId>, StoreError> {
        let state = self.lock();
        let mut missing: Vec<UserId> = Vec::new();
        for user in users {
            if !state.users.contains_key(user) && !missing.contains(user) {
                missing.push(*user);
            }
        }
        Ok(missing)
    }

    async fn display_names(&self, users: &[UserId]) -> Result<HashMap<UserId, String>, StoreError> {
        let state = self.lock();
        Ok(users
            .iter()
            .filter_map(|u| state.display_name(*u).map(|n| (*u, n)))
            .collect())
    }

    async fn upsert_user(&self, user: UserId, name: Option<DisplayName>) -> Result<(), StoreError> {
        let mut state = self.lock();
        let entry = state.users.entry(user).or_insert(None);
        if let Some(name) = name {
            *entry = Some(name.as_str().to_owned());
        }
        Ok(())
    }
}

#[async_trait]
impl PostingDirectory for MemoryStore {
    async fn posting_exists(&self, posting: PostingId) -> Result<bool, StoreError> {
        Ok(self.lock().postings.contains(&posting))
    }
}

#[async_trait]
impl ReencryptStore for MemoryStore {
    async fn reencrypt_batch(
        &self,
        after: Option<MessageId>,
        limit: u32,
    ) -> Result<ReencryptBatch, StoreError> {
        let mut state = self.lock();
        let cipher = state.cipher.clone();
        if cipher.active_key_id().is_none() {
            return Ok(ReencryptBatch::default());
        }
        let due = |m: &crate::state::StoredMessage| {
            !m.message.is_system_message && cipher.needs_reencrypt(m.key_id.as_deref())
        };
        let mut ids: Vec<MessageId> = state
            .messages
            .iter()
            .filter(|(id, m)| after.is_none_or(|a| **id > a) && due(m))
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        let mut batch = ReencryptBatch {
            last: ids.last().copied(),
            ..ReencryptBatch::default()
        };
        for id in ids {
            let Some(stored) = state.messages.get_mut(&id) else {
                continue;
            };
            let ids = row_ids(stored.message.id, stored.message.conversation_id);
            match cipher.open(ids, stored.stored_fields()) {
                Ok(fields) => {
                    let sealed = seal(&cipher, &stored.message, fields)?;
                    stored.set_stored_fields(sealed);
                    batch.rewritten += 1;
                }
                Err(error) => {
                    tracing::error!(
                        message_id = %id,
                        key_id = stored.key_id.as_deref().unwrap_or(""),
                        %error,
                        "a stored message cannot be decrypted; re-encryption leaves it as it is"
                    );
                    batch.undecryptable += 1;
                }
            }
        }
        let cursor = batch.last.or(after);
        batch.remaining = state
            .messages
            .iter()
            .filter(|(id, m)| cursor.is_none_or(|c| **id > c) && due(m))
            .count() as u64;
        Ok(batch)
    }
}

/// An activity key (microseconds) as the inbox cursor's instant.
fn key_instant(key: i64) -> Timestamp {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(key) * 1_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// An inbox cursor's instant as an activity key (microseconds).
fn instant_key(at: Timestamp) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX)
}
