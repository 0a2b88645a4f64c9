//! The data held in memory and the synchronous operations on it. Every function here runs
//! under the store's lock, so each is atomic.

use std::collections::{HashMap, HashSet};

use chat_crypto::{MessageCipher, MessageFields, StoredFields, row_ids};
use chat_domain::{
    ChangeKind, Conversation, ConversationDetails, ConversationId, Message, MessageId, MessageView,
    Participant, ParticipantView, PostingId, ReactionSummary, Receipt, Role, Seq, Timestamp,
    UserId, to_stored_precision,
};
use chat_ports::{Appended, NewMessage, StoreConflict, StoreError};

use crate::feed::Feed;

/// Who writes a message being appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Author {
    /// A participant sending a message.
    User,
    /// The service announcing a change (a SYSTEM message).
    Service,
}

/// Everything the store holds.
#[derive(Default)]
pub(crate) struct State {
    pub(crate) users: HashMap<UserId, Option<String>>,
    pub(crate) postings: HashSet<PostingId>,
    pub(crate) conversations: HashMap<ConversationId, StoredConversation>,
    pub(crate) direct_pairs: HashMap<(UserId, UserId), ConversationId>,
    /// Boxed, so that growing the map moves pointers, not whole messages, while every
    /// request waits on the lock.
    pub(crate) messages: HashMap<MessageId, Box<StoredMessage>>,
    /// Every conversation a user ever took part in.
    pub(crate) memberships: HashMap<UserId, HashSet<ConversationId>>,
    /// Seals message text before it is kept and opens it when it is read, as every adapter
    /// does, so that the contract cases on encryption apply here too.
    pub(crate) cipher: MessageCipher,
    /// The newest activity key handed out (see [`State::next_activity_key`]).
    pub(crate) activity_clock: i64,
    /// The change feed, written by the same lock-hold as each change.
    pub(crate) feed: Feed,
}

/// A conversation, its participants in joining order, and its messages by `seq`.
pub(crate) struct StoredConversation {
    pub(crate) conversation: Conversation,
    pub(crate) participants: Vec<Participant>,
    /// `by_seq[i]` holds the message with `seq` i + 1.
    pub(crate) by_seq: Vec<MessageId>,
    /// (sender, client message id) → message, for idempotent sends.
    pub(crate) client_ids: HashMap<(UserId, String), MessageId>,
    /// The inbox order: the key of its latest activity (creation, a message), from
    /// [`State::next_activity_key`], so later activity always sorts first.
    pub(crate) activity_key: i64,
}

impl StoredConversation {
    pub(crate) fn last_seq(&self) -> Seq {
        Seq::new(i64::try_from(self.by_seq.len()).unwrap_or(i64::MAX)).unwrap_or(Seq::ZERO)
    }

    pub(crate) fn participant_mut(&mut self, user: UserId) -> Option<&mut Participant> {
        self.participants.iter_mut().find(|p| p.user_id == user)
    }

    pub(crate) fn active_participant(&self, user: UserId) -> Option<&Participant> {
        self.participants
            .iter()
            .find(|p| p.user_id == user && p.is_active())
    }
}

/// A message with its reactions (in order of reaction) and receipts. Its text and media
/// fields are kept as stored (sealed under `key_id` when that is set).
pub(crate) struct StoredMessage {
    pub(crate) message: Message,
    /// `encryption_key_id`: the key that sealed the text, `None` for plain text.
    pub(crate) key_id: Option<String>,
    pub(crate) reactions: Vec<(String, UserId)>,
    pub(crate) receipts: Vec<Receipt>,
}

impl StoredMessage {
    /// The fields as stored.
    pub(crate) fn stored_fields(&self) -> StoredFields {
        StoredFields {
            fields: MessageFields {
                content: self.message.content.clone(),
                media_url: self.message.media_url.clone(),
                media_metadata: self.message.media_metadata.clone(),
            },
            key_id: self.key_id.clone(),
        }
    }

    /// Replaces the stored fields.
    pub(crate) fn set_stored_fields(&mut self, stored: StoredFields) {
        self.message.content = stored.fields.content;
        self.message.media_url = stored.fields.media_url;
        self.message.media_metadata = stored.fields.media_metadata;
        self.key_id = stored.key_id;
    }

    /// The message as the service sees it: opened (or marked undecryptable).
    pub(crate) fn opened(&self, cipher: &MessageCipher) -> Message {
        let mut message = self.message.clone();
        cipher.open_message(&mut message, self.key_id.as_deref());
        message
    }
}

/// Seals `fields` for the message `message` (plain for SYSTEM messages or without a ring).
pub(crate) fn seal(
    cipher: &MessageCipher,
    message: &Message,
    fields: MessageFields,
) -> Result<StoredFields, StoreError> {
    cipher
        .seal(
            row_ids(message.id, message.conversation_id),
            message.is_system_message,
            fields,
        )
        .map_err(|e| StoreError::Unavailable(e.to_string()))
}

impl State {
    /// The next activity key: the current microsecond, and past every key handed out
    /// before. Every write runs under the store's lock, so the keys follow the order of
    /// the writes exactly, even within one second or when the clock steps back.
    pub(crate) fn next_activity_key(&mut self) -> i64 {
        now_after(&mut self.activity_clock)
    }

    /// A message that exists and is not deleted, for changing it.
    pub(crate) fn live_message_mut(
        &mut self,
        id: MessageId,
    ) -> Result<&mut StoredMessage, StoreError> {
        self.messages
            .get_mut(&id)
            .map(|m| &mut **m)
            .filter(|m| !m.message.is_deleted())
            .ok_or(StoreError::NotFound)
    }

    pub(crate) fn display_name(&self, user: UserId) -> Option<String> {
        self.users.get(&user).cloned().flatten()
    }

    pub(crate) fn details(&self, id: ConversationId) -> Option<ConversationDetails> {
        let stored = self.conversations.get(&id)?;
        Some(ConversationDetails {
            conversation: stored.conversation.clone(),
            participants: stored
                .participants
                .iter()
                .map(|p| ParticipantView {
                    participant: p.clone(),
                    display_name: self.display_name(p.user_id),
                })
                .collect(),
        })
    }

    pub(crate) fn view(&self, id: MessageId) -> Option<MessageView> {
        let stored = self.messages.get(&id)?;
        Some(MessageView {
            message: stored.opened(&self.cipher),
            sender_name: self.display_name(stored.message.sender_id),
            reactions: aggregate(&stored.reactions),
        })
    }

    /// Messages from others, live, not SYSTEM, above `user`'s marker.
    pub(crate) fn unread_count(
        &self,
        stored: &StoredConversation,
        participant: &Participant,
    ) -> u64 {
        let from = usize::try_from(participant.last_read_seq.get()).unwrap_or(usize::MAX);
        stored
            .by_seq
            .iter()
            .skip(from)
            .filter_map(|id| self.messages.get(id))
            .filter(|m| {
                let m = &m.message;
                m.sender_id != participant.user_id && !m.is_deleted() && !m.is_system_message
            })
            .count() as u64
    }

    /// The newest live message of a conversation.
    pub(crate) fn last_live_message(&self, stored: &StoredConversation) -> Option<MessageView> {
        stored
            .by_seq
            .iter()
            .rev()
            .find(|id| {
                self.messages
                    .get(id)
                    .is_some_and(|m| !m.message.is_deleted())
            })
            .and_then(|id| self.view(*id))
    }

    /// Appends a message under the lock: idempotency, `seq`, `last_message_at`, and the
    /// sender's read marker. A user's message also needs an active sender and a
    /// conversation that is not archived; the service's announcements go in regardless,
    /// as they tell of the change (a leave, an archiving) that made those checks fail.
    pub(crate) fn append(
        &mut self,
        new: NewMessage,
        author: Author,
    ) -> Result<Appended, StoreError> {
        let from_user = author == Author::User;
        let stored = self
            .conversations
            .get_mut(&new.conversation_id)
            .ok_or(StoreError::NotFound)?;
        if from_user && stored.active_participant(new.sender_id).is_none() {
            return Err(StoreError::NotFound);
        }
        let recipients: Vec<UserId> = stored
            .participants
            .iter()
            .filter(|p| p.is_active())
            .map(|p| p.user_id)
            .collect();
        let client_key = new
            .client_message_id
            .as_ref()
            .map(|c| (new.sender_id, c.as_str().to_owned()));
        if let Some(existing) = client_key.as_ref().and_then(|k| stored.client_ids.get(k)) {
            let existing = *existing;
            let view = self.view(existing).ok_or(StoreError::NotFound)?;
            return Ok(Appended {
                view,
                created: false,
                recipients,
            });
        }
        if from_user && stored.conversation.is_archived {
            return Err(StoreError::Conflict(StoreConflict::ConversationArchived));
        }
        let seq = stored.last_seq().next();
        let mut message = new.to_stored(seq);
        let plain = MessageFields {
            content: std::mem::take(&mut message.content),
            media_url: message.media_url.take(),
            media_metadata: message.media_metadata.take(),
        };
        // Sealed before anything changes, so a failure leaves the state as it was.
        let sealed = seal(&self.cipher, &message, plain)?;
        let at = message.created_at;
        let activity_key = now_after(&mut self.activity_clock);
        stored.activity_key = activity_key;
        stored.by_seq.push(message.id);
        if let Some(key) = client_key {
            stored.client_ids.insert(key, message.id);
        }
        stored.conversation.last_message_at = Some(at);
        self.messages.insert(
            message.id,
            Box::new(StoredMessage {
                message: Message {
                    content: sealed.fields.content,
                    media_url: sealed.fields.media_url,
                    media_metadata: sealed.fields.media_metadata,
                    ..message
                },
                key_id: sealed.key_id,
                reactions: Vec::new(),
                receipts: Vec::new(),
            }),
        );
        self.feed.record(
            new.conversation_id,
            ChangeKind::MessageCreated { message_id: new.id },
        );
        // The sender's marker move is implied by the `message.created` (its sender has read
        // up to it), so it is not logged: one entry per send (port doc of `ChangeFeed`).
        self.advance_marker(new.conversation_id, new.sender_id, seq, at, false);
        let view = self.view(new.id).ok_or(StoreError::NotFound)?;
        Ok(Appended {
            view,
            created: true,
            recipients,
        })
    }

    /// Moves `user`'s marker forward to `up_to` (never back), recording receipts for the
    /// others' live messages it passes and, when `log` is set, the move in the feed (an
    /// append's move of its sender's marker is implied by its `message.created` and not
    /// logged). Returns whether it moved.
    pub(crate) fn advance_marker(
        &mut self,
        conversation: ConversationId,
        user: UserId,
        up_to: Seq,
        at: Timestamp,
        log: bool,
    ) -> bool {
        let at = to_stored_precision(at);
        let Some(stored) = self.conversations.get_mut(&conversation) else {
            return false;
        };
        let up_to = up_to.min(stored.last_seq());
        let Some(participant) = stored.participant_mut(user) else {
            return false;
        };
        if up_to <= participant.last_read_seq {
            return false;
        }
        let from = usize::try_from(participant.last_read_seq.get()).unwrap_or(usize::MAX);
        let to = usize::try_from(up_to.get()).unwrap_or(usize::MAX);
        participant.last_read_seq = up_to;
        participant.last_read_at = Some(at);
        if log {
            self.feed.record(
                conversation,
                ChangeKind::ConversationRead {
                    user_id: user,
                    last_read_seq: up_to,
                    last_read_at: at,
                },
            );
        }
        let passed: Vec<MessageId> = stored
            .by_seq
            .get(from..to)
            .map(<[MessageId]>::to_vec)
            .unwrap_or_default();
        // A member passes each message at most once: the marker only moves forward, and a
        // (re)joining member starts at the newest seq (`add_participants`), never below a
        // marker they had. So no receipt of this reader can already be on a passed message,
        // and none is searched for: in a big group each message collects a receipt per
        // member, and searching them made each send O(members²) (docs/benchmarks.md).
        for id in passed {
            if let Some(m) = self.messages.get_mut(&id) {
                let live_from_other = m.message.sender_id != user && !m.message.is_deleted();
                if live_from_other {
                    m.receipts.push(Receipt {
                        user_id: user,
                        read_at: at,
                    });
                }
            }
        }
        true
    }

    /// When no active admin remains but active members do, promotes the earliest-joined
    /// active member.
    pub(crate) fn promote_if_no_admin(stored: &mut StoredConversation) -> Option<UserId> {
        let has_admin = stored.participants.iter().any(Participant::is_active_admin);
        if has_admin {
            return None;
        }
        let next = stored
            .participants
            .iter_mut()
            .filter(|p| p.is_active())
            .min_by_key(|p| p.joined_at)?;
        next.role = Role::Admin;
        Some(next.user_id)
    }
}

/// [`State::next_activity_key`] on the clock alone (for when the state is borrowed in parts).
fn now_after(clock: &mut i64) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
    *clock = now.max(clock.saturating_add(1));
    *clock
}

/// Reactions grouped per emoji in order of first use, users in order of reaction.
pub(crate) fn aggregate(reactions: &[(String, UserId)]) -> Vec<ReactionSummary> {
    let mut summaries: Vec<ReactionSummary> = Vec::new();
    for (emoji, user) in reactions {
        match summaries.iter_mut().find(|s| &s.emoji == emoji) {
            Some(summary) => {
                summary.count += 1;
                summary.user_ids.push(*user);
            }
            None => summaries.push(ReactionSummary {
                emoji: emoji.clone(),
                count: 1,
                user_ids: vec![*user],
            }),
        }
    }
    summaries
}
