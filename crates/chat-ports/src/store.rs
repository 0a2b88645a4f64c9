//! The storage ports, one per area of the model. Every method is one use case's worth of
//! work and MUST be atomic: it happens entirely or not at all, and concurrent calls behave
//! as if they ran one after the other.

use async_trait::async_trait;
use chat_domain::{
    ConversationDetails, ConversationId, ConversationType, Emoji, GroupName, Message, MessageBody,
    MessageContent, MessageId, MessageView, Participant, PostingId, ReactionSummary, Receipt, Role,
    Seq, Timestamp, UserId, ValidationError,
};

use crate::StoreError;

/// A page size: 1 to 100.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLimit(u8);

impl PageLimit {
    /// The largest page.
    pub const MAX: PageLimit = PageLimit(100);

    /// Parses a page size.
    ///
    /// # Errors
    /// A [`ValidationError`] on `limit` outside 1..=100.
    pub fn new(value: i64) -> Result<Self, ValidationError> {
        u8::try_from(value)
            .ok()
            .filter(|v| (1..=100).contains(v))
            .map(Self)
            .ok_or_else(|| ValidationError::new("limit", "must be between 1 and 100"))
    }

    /// The size.
    pub fn get(self) -> usize {
        usize::from(self.0)
    }
}

/// The most ids one [`MessageStore::find_messages`] call takes: a page of the change feed
/// (a `sync` page or a relay batch holds at most 500 changes). A store may answer more,
/// in chunks of this size.
pub const FIND_MESSAGES_MAX: usize = 500;

/// A message to append (a user's, or an announcement: a SYSTEM message of the service).
#[derive(Debug, Clone, PartialEq)]
pub struct NewMessage {
    /// Its id, chosen by the service (UUIDv7).
    pub id: MessageId,
    /// The conversation.
    pub conversation_id: ConversationId,
    /// The sender (for announcements: the acting user).
    pub sender_id: UserId,
    /// What it says.
    pub body: MessageBody,
    /// The live message of the same conversation it replies to.
    pub reply_to_id: Option<MessageId>,
    /// The sender's idempotency key.
    pub client_message_id: Option<chat_domain::ClientMessageId>,
    /// When it is sent.
    pub created_at: Timestamp,
}

/// A GROUP or POST_LINKED conversation to create.
#[derive(Debug, Clone, PartialEq)]
pub struct NewConversation {
    /// Its id, chosen by the service.
    pub id: ConversationId,
    /// GROUP or POST_LINKED.
    pub kind: ConversationType,
    /// The name.
    pub name: Option<GroupName>,
    /// The posting (POST_LINKED).
    pub posting_id: Option<PostingId>,
    /// The creator, who becomes its ADMIN.
    pub created_by: UserId,
    /// The other participants, distinct, creator excluded; they become MEMBERs.
    pub members: Vec<UserId>,
    /// When.
    pub created_at: Timestamp,
}

/// The outcome of a change to a conversation's settings or to one participant's role.
#[derive(Debug, Clone, PartialEq)]
pub struct ConversationChanged {
    /// The conversation after the change.
    pub details: ConversationDetails,
    /// The announcement (a SYSTEM message) appended with the change, when one was given.
    pub announcement: Option<MessageView>,
}

/// The outcome of adding participants.
#[derive(Debug, Clone, PartialEq)]
pub struct ParticipantsAdded {
    /// The conversation after the change.
    pub details: ConversationDetails,
    /// The users who joined: new participants and returning ones, in the order asked;
    /// those already active are left out.
    pub joined: Vec<UserId>,
    /// The announcement (a SYSTEM message) appended with the change, when one was given.
    pub announcement: Option<MessageView>,
}

/// The outcome of removing a participant (who left, or was removed).
#[derive(Debug, Clone, PartialEq)]
pub struct ParticipantRemoved {
    /// The conversation after the change.
    pub details: ConversationDetails,
    /// A member promoted to ADMIN because the last admin left.
    pub promoted: Option<UserId>,
    /// The announcement (a SYSTEM message) appended with the change, when one was given.
    pub announcement: Option<MessageView>,
}

/// The DIRECT conversation of a pair.
#[derive(Debug, Clone, PartialEq)]
pub struct DirectConversation {
    /// The conversation and its participants.
    pub details: ConversationDetails,
    /// Whether this call created it (false when it already existed).
    pub created: bool,
}

/// The outcome of appending a message.
#[derive(Debug, Clone, PartialEq)]
pub struct Appended {
    /// The stored message (the original one on a repeated `client_message_id`).
    pub view: MessageView,
    /// False when an earlier message with the same `client_message_id` was returned.
    pub created: bool,
    /// The conversation's active participants when the message was committed: who must
    /// hear of it.
    pub recipients: Vec<UserId>,
}

/// Which page of history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryQuery {
    /// The newest messages, newest first.
    Latest(PageLimit),
    /// Messages with `seq` below the given one, newest first.
    Before(Seq, PageLimit),
    /// Messages with `seq` above the given one, oldest first.
    After(Seq, PageLimit),
}

/// A page of history.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryPage {
    /// Live messages with their reactions, in the query's order.
    pub items: Vec<MessageView>,
    /// Whether more live messages lie beyond the page in the same direction.
    pub has_more: bool,
}

/// The outcome of adding or removing a reaction.
#[derive(Debug, Clone, PartialEq)]
pub struct ReactionChange {
    /// Whether anything changed (false when the reaction was already there, or not).
    pub changed: bool,
    /// The message's reactions afterwards.
    pub reactions: Vec<ReactionSummary>,
    /// The conversation's active participants when the change was committed: who must
    /// hear of it.
    pub recipients: Vec<UserId>,
}

/// The outcome of editing a message.
#[derive(Debug, Clone, PartialEq)]
pub struct Edited {
    /// The message after the edit.
    pub view: MessageView,
    /// The conversation's active participants when the edit was committed: who must hear
    /// of it (a participant removed before it committed is not among them).
    pub recipients: Vec<UserId>,
}

/// The outcome of deleting a message.
#[derive(Debug, Clone, PartialEq)]
pub struct Deleted {
    /// The message, now deleted.
    pub message: Message,
    /// The conversation's active participants when the delete was committed: who must
    /// hear of it.
    pub recipients: Vec<UserId>,
}

/// A participant's read state after marking read.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadState {
    /// The newest `seq` read.
    pub last_read_seq: Seq,
    /// When the marker last moved.
    pub last_read_at: Option<Timestamp>,
    /// Messages still unread.
    pub unread_count: u64,
    /// Whether the marker moved.
    pub moved: bool,
    /// The conversation's active participants when the marker moved: who must hear of it.
    pub recipients: Vec<UserId>,
}

/// Which conversations the inbox lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchivedFilter {
    /// Only those not archived.
    Active,
    /// Only archived ones.
    Archived,
    /// Both.
    Any,
}

/// Where a page of the inbox resumes: after this activity time and id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboxCursor {
    /// The last item's activity instant as the store orders the inbox: finer than the
    /// stored whole-second times (microseconds), so that it follows the order of commits
    /// even within one second. Opaque to callers: pass back what a page returned.
    pub activity_at: Timestamp,
    /// The last item's id (ties broken by id, descending).
    pub conversation_id: ConversationId,
}

/// A page request for the inbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboxQuery {
    /// Page size.
    pub limit: PageLimit,
    /// Resume after this item.
    pub after: Option<InboxCursor>,
    /// Archived filter.
    pub archived: ArchivedFilter,
}

/// One conversation as its participant sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct InboxItem {
    /// The conversation and its participants.
    pub details: ConversationDetails,
    /// The caller's membership.
    pub membership: Participant,
    /// Unread messages: from others, live, not SYSTEM, above the caller's marker.
    pub unread_count: u64,
    /// The newest live message.
    pub last_message: Option<MessageView>,
}

/// A page of the inbox.
#[derive(Debug, Clone, PartialEq)]
pub struct InboxPage {
    /// Most recent activity first.
    pub items: Vec<InboxItem>,
    /// Where the next page starts, when there is one.
    pub next_cursor: Option<InboxCursor>,
}

/// The unread count of one conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadConversation {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// Its unread messages.
    pub unread_count: u64,
    /// Whether the caller muted it (muted ones are left out of the total).
    pub is_muted: bool,
}

/// A user's unread badge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadSummary {
    /// Unread messages over all active, unmuted conversations.
    pub total: u64,
    /// Every active conversation with unread messages, muted ones included.
    pub conversations: Vec<UnreadConversation>,
}

/// Conversations and memberships.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait ConversationStore: Send + Sync {
    /// Creates a GROUP or POST_LINKED conversation: the creator as ADMIN, the members as
    /// MEMBER, and `announcement` (a SYSTEM message) as its first message (`seq` 1), all
    /// in one step.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the store fails; nothing is then stored.
    async fn create_conversation(
        &self,
        new: NewConversation,
        announcement: NewMessage,
    ) -> Result<ConversationDetails, StoreError>;

    /// Returns the DIRECT conversation between `a` and `b` (in either order; `a == b` is a
    /// conversation with oneself), creating it with id `id` when there is none. Both are
    /// MEMBERs. Exactly one conversation MUST exist per pair, also when calls race.
    /// [`DirectConversation::created`] tells whether this call created it.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the store fails.
    async fn get_or_create_direct(
        &self,
        id: ConversationId,
        a: UserId,
        b: UserId,
        at: Timestamp,
    ) -> Result<DirectConversation, StoreError>;

    /// The conversation with every participant it ever had, or `None`.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the store fails.
    async fn conversation_details(
        &self,
        id: ConversationId,
    ) -> Result<Option<ConversationDetails>, StoreError>;

    /// Renames a GROUP or POST_LINKED conversation and, when given, appends
    /// `announcement` (a SYSTEM message) in the same step. It MUST first decide, on the
    /// state it holds locked for the change, whether `actor` may rename it
    /// ([`chat_domain::authorize`] with [`chat_domain::Action::Rename`]).
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown conversation or an `actor` who is not an
    /// active participant; [`StoreError::Forbidden`] when the rule refuses `actor`;
    /// [`StoreError::Unavailable`] when the store fails (nothing is then changed).
    async fn rename_conversation(
        &self,
        id: ConversationId,
        actor: UserId,
        name: GroupName,
        announcement: Option<NewMessage>,
    ) -> Result<ConversationChanged, StoreError>;

    /// Makes the conversation read-only from `at` on and, when given, appends
    /// `announcement` (a SYSTEM message) in the same step: the announcement MUST go in
    /// even though the conversation is now archived. It MUST first decide, under the
    /// lock, whether `actor` may ([`chat_domain::Action::Archive`]).
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown conversation or an `actor` who is not an
    /// active participant; [`StoreError::Forbidden`] when the rule refuses `actor`;
    /// [`StoreError::Unavailable`] when the store fails (nothing is then changed).
    async fn archive_conversation(
        &self,
        id: ConversationId,
        actor: UserId,
        at: Timestamp,
        announcement: Option<NewMessage>,
    ) -> Result<ConversationChanged, StoreError>;

    /// Makes the conversation writable again and, when given, appends `announcement` (a
    /// SYSTEM message) in the same step. It MUST first decide, under the lock, whether
    /// `actor` may ([`chat_domain::Action::Archive`]).
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown conversation or an `actor` who is not an
    /// active participant; [`StoreError::Forbidden`] when the rule refuses `actor`;
    /// [`StoreError::Unavailable`] when the store fails (nothing is then changed).
    async fn unarchive_conversation(
        &self,
        id: ConversationId,
        actor: UserId,
        announcement: Option<NewMessage>,
    ) -> Result<ConversationChanged, StoreError>;

    /// Adds `users` as MEMBERs joining at `at` and, when given, appends `announcement` (a
    /// SYSTEM message) in the same step. It MUST add participants as MEMBER with their
    /// read marker at the conversation's newest `seq` (the announcement of their joining
    /// included), reactivating (as MEMBER, with a new `joined_at`) those who had left,
    /// leave those already active unchanged, and refuse with
    /// [`StoreConflict::ConversationArchived`](crate::StoreConflict) when the conversation
    /// is archived. Under the lock it MUST decide whether `actor` may add
    /// ([`chat_domain::Action::AddParticipants`]) and refuse a change that leaves more
    /// than `max_participants` active participants
    /// ([`chat_domain::check_participant_limit`]), also when adds race.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown conversation or an `actor` who is not an
    /// active participant; [`StoreError::Forbidden`] when the rule refuses `actor`;
    /// [`StoreError::TooManyParticipants`] past the limit; [`StoreError::Conflict`] as
    /// above; [`StoreError::Unavailable`] when the store fails (nothing is then changed).
    async fn add_participants(
        &self,
        id: ConversationId,
        actor: UserId,
        users: Vec<UserId>,
        at: Timestamp,
        max_participants: usize,
        announcement: Option<NewMessage>,
    ) -> Result<ParticipantsAdded, StoreError>;

    /// Marks `user` as having left at `at` and, when given, appends `announcement` (a
    /// SYSTEM message) in the same step. It MUST, when no active admin remains but active
    /// members do, promote the earliest-joined active member to ADMIN and report it in
    /// [`ParticipantRemoved::promoted`].
    ///
    /// This one method serves both leaving (`actor == user`) and being removed: the
    /// store does the same for both (the membership ends, the admin succession runs).
    /// Under the lock it MUST decide whether `actor` may remove `user`
    /// ([`chat_domain::Action::RemoveParticipant`]): of two admins removing each other at
    /// once, the second to take the lock is no longer an active participant and is
    /// refused.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown conversation, or for an `actor` or a `user`
    /// who is not an active participant; [`StoreError::Forbidden`] when the rule refuses
    /// `actor`; [`StoreError::Unavailable`] when the store fails (nothing is then changed).
    async fn remove_participant(
        &self,
        id: ConversationId,
        actor: UserId,
        user: UserId,
        at: Timestamp,
        announcement: Option<NewMessage>,
    ) -> Result<ParticipantRemoved, StoreError>;

    /// Sets an active participant's role and, when given, appends `announcement` (a
    /// SYSTEM message) in the same step. It MUST decide under the lock whether `actor`
    /// may ([`chat_domain::Action::SetRole`]), and refuse a role change that leaves no
    /// active admin with [`StoreConflict::LastAdmin`](crate::StoreConflict).
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown conversation, or for an `actor` or a `user`
    /// who is not an active participant; [`StoreError::Forbidden`] when the rule refuses
    /// `actor`; [`StoreError::Conflict`] as above;
    /// [`StoreError::Unavailable`] when the store fails (nothing is then changed).
    async fn set_role(
        &self,
        id: ConversationId,
        actor: UserId,
        user: UserId,
        role: Role,
        announcement: Option<NewMessage>,
    ) -> Result<ConversationChanged, StoreError>;
}

/// Messages and reactions.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait MessageStore: Send + Sync {
    /// Appends a user's message. In one step it MUST: refuse a sender who is not an active
    /// participant; return the sender's earlier message with the same `client_message_id`
    /// in this conversation unchanged (`created: false`) if there is one, also when such
    /// calls race; refuse an archived conversation; otherwise give the message the next `seq`
    /// of the conversation (so history order is commit order), store it, set the
    /// conversation's `last_message_at`, and move the sender's read marker to it
    /// (recording receipts as [`ReadStateStore::mark_read`] does). It returns the active
    /// participants, so the caller needs no second read to address the event.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown conversation or a sender who is not an
    /// active participant;
    /// [`StoreError::Conflict`] with `ConversationArchived` when it is archived;
    /// [`StoreError::Unavailable`] when the store fails (nothing is then stored).
    async fn append_message(&self, new: NewMessage) -> Result<Appended, StoreError>;

    /// The message, deleted or not, with its sender's name and reactions.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the store fails.
    async fn find_message(&self, id: MessageId) -> Result<Option<MessageView>, StoreError>;

    /// Many messages at once, each exactly as [`MessageStore::find_message`] answers it
    /// (deleted ones included, with sender name and reactions): every id that exists
    /// once, in no particular order; ids that do not exist are left out. It serves the
    /// readers of the change feed, which hydrate a page of changes at a time.
    ///
    /// Callers pass at most [`FIND_MESSAGES_MAX`] ids (one page). A store MUST answer
    /// them with a fixed number of round trips, whatever their number (one lock; one
    /// query for the rows and one for their reactions), never one per id. (No default
    /// method: one looping over `find_message` would bring back the per-message round
    /// trips this method exists to remove, unnoticed.)
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the store fails.
    async fn find_messages(&self, ids: &[MessageId]) -> Result<Vec<MessageView>, StoreError>;

    /// Replaces a live message's content and sets `edited_at`. In one step, under the
    /// lock that membership changes take, it MUST check that `actor` is an active
    /// participant allowed to edit it ([`chat_domain::Action::EditMessage`]) and that the
    /// conversation is not archived, and return the active participants as committed
    /// with the edit ([`Edited::recipients`]).
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when it does not exist or is deleted, or `actor` is not an
    /// active participant; [`StoreError::Forbidden`] when the rule refuses `actor`;
    /// [`StoreError::Conflict`] with `ConversationArchived`;
    /// [`StoreError::Unavailable`] when the store fails.
    async fn edit_message(
        &self,
        id: MessageId,
        actor: UserId,
        content: MessageContent,
        at: Timestamp,
    ) -> Result<Edited, StoreError>;

    /// Soft-deletes a live message. Of racing deletes, exactly one succeeds. In one step,
    /// under the lock that membership and role changes take, it MUST check that `actor`
    /// may delete it ([`chat_domain::Action::DeleteMessage`]: its sender, or an active
    /// admin of a GROUP or POST_LINKED conversation) and return the active participants
    /// as committed with the delete ([`Deleted::recipients`]).
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when it does not exist or is already deleted, or `actor`
    /// is not an active participant; [`StoreError::Forbidden`] when the rule refuses
    /// `actor`; [`StoreError::Unavailable`] when the store fails.
    async fn delete_message(
        &self,
        id: MessageId,
        actor: UserId,
        at: Timestamp,
    ) -> Result<Deleted, StoreError>;

    /// A page of a conversation's live messages, with reactions, fetched by `seq` keyset
    /// (never by offset).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the store fails.
    async fn history(
        &self,
        conversation: ConversationId,
        query: HistoryQuery,
    ) -> Result<HistoryPage, StoreError>;

    /// Puts `user`'s reaction on a live message. Idempotent: adding it again MUST change
    /// nothing (`changed: false`); different emoji are always different reactions
    /// (compared code point by code point). Under the lock that membership changes take,
    /// it MUST check that `user` is an active participant and the conversation is not
    /// archived, and return the active participants as committed
    /// ([`ReactionChange::recipients`]).
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when the message does not exist or is deleted, or `user`
    /// is not an active participant; [`StoreError::Conflict`] with `ConversationArchived`;
    /// [`StoreError::Unavailable`] when the store fails.
    async fn add_reaction(
        &self,
        message: MessageId,
        user: UserId,
        emoji: Emoji,
        at: Timestamp,
    ) -> Result<ReactionChange, StoreError>;

    /// Takes `user`'s reaction off a live message. Idempotent: removing one that is not
    /// there MUST change nothing (`changed: false`); different emoji are always different
    /// reactions (compared code point by code point). Checks and recipients as
    /// [`MessageStore::add_reaction`].
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when the message does not exist or is deleted, or `user`
    /// is not an active participant; [`StoreError::Conflict`] with `ConversationArchived`;
    /// [`StoreError::Unavailable`] when the store fails.
    async fn remove_reaction(
        &self,
        message: MessageId,
        user: UserId,
        emoji: Emoji,
    ) -> Result<ReactionChange, StoreError>;

    /// Who has read the message and when, earliest first.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the store fails.
    async fn receipts(&self, message: MessageId) -> Result<Vec<Receipt>, StoreError>;
}

/// Read markers, mutes, unread counts and the inbox.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait ReadStateStore: Send + Sync {
    /// Moves `user`'s read marker in `conversation` to `up_to` (default: the newest
    /// message). The marker MUST only move forward; receipts MUST be recorded for the
    /// others' live messages it passes. The active participants it returns
    /// ([`ReadState::recipients`]) are those committed with the move.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when the user is not an active participant;
    /// [`StoreError::Unavailable`] when the store fails.
    async fn mark_read(
        &self,
        conversation: ConversationId,
        user: UserId,
        up_to: Option<Seq>,
        at: Timestamp,
    ) -> Result<ReadState, StoreError>;

    /// Mutes or unmutes the conversation for `user`.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when the user is not an active participant;
    /// [`StoreError::Unavailable`] when the store fails.
    async fn set_muted(
        &self,
        conversation: ConversationId,
        user: UserId,
        muted: bool,
    ) -> Result<Participant, StoreError>;

    /// One conversation as `user` sees it, or `None` when they are not an active
    /// participant.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the store fails.
    async fn inbox_item(
        &self,
        conversation: ConversationId,
        user: UserId,
    ) -> Result<Option<InboxItem>, StoreError>;

    /// A page of `user`'s active conversations, most recent activity first: in the order in
    /// which their latest activity (creation, a message) was committed, exactly, even for
    /// conversations active within the same second (ties only between writes that were in
    /// flight at the same time in different conversations).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the store fails.
    async fn inbox(&self, user: UserId, query: InboxQuery) -> Result<InboxPage, StoreError>;

    /// `user`'s unread badge.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the store fails.
    async fn unread_summary(&self, user: UserId) -> Result<UnreadSummary, StoreError>;
}
