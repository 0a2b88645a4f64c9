//! Hydration: turning a change of the feed (references and small facts) into the
//! [`ChatEvent`] of the same name, as the WebSocket frame shows it, from the current rows.
//! Shared by `sync` (a page for one reader) and the relay (live publishing). A message
//! that is gone or deleted is never served: its `message.updated` is skipped and its
//! `message.created` is served as what it still tells, the move of its sender's marker
//! (`conversation.read` at its `seq` and time: a send's marker move has no entry of its
//! own, see the `ChangeFeed` port doc); its `message.deleted` still goes out.
//!
//! A reader first hands the hydrator its whole page ([`Hydrator::prefetch`]): the
//! messages the page names are loaded with one `find_messages` call, so a page costs the
//! store a fixed number of round trips, not one per message.

use std::collections::{HashMap, HashSet};

use chat_domain::{
    Change, ChangeKind, ChatEvent, ConversationDetails, ConversationId, MessageId, MessageView,
};
use chat_ports::{ConversationStore, FIND_MESSAGES_MAX, MessageStore, StoreError};

/// Hydrates the changes of one page (or one batch), looking each message and each
/// conversation up at most once: the page's messages all at once after
/// [`Hydrator::prefetch`], any other one (and each conversation) when first met.
pub(crate) struct Hydrator<'a> {
    messages: &'a dyn MessageStore,
    conversations: &'a dyn ConversationStore,
    message_cache: HashMap<MessageId, Option<MessageView>>,
    conversation_cache: HashMap<ConversationId, Option<ConversationDetails>>,
}

impl<'a> Hydrator<'a> {
    pub(crate) fn new(
        messages: &'a dyn MessageStore,
        conversations: &'a dyn ConversationStore,
    ) -> Self {
        Self {
            messages,
            conversations,
            message_cache: HashMap::new(),
            conversation_cache: HashMap::new(),
        }
    }

    /// Loads, in one [`MessageStore::find_messages`] call per [`FIND_MESSAGES_MAX`] of
    /// them, every message `changes` will need (those of `message.created` and
    /// `message.updated`) that is not known yet; one the store does not have is
    /// remembered as gone. [`Hydrator::hydrate`] then finds them without a lookup.
    ///
    /// # Errors
    /// The store's error when the lookup fails; nothing is remembered for the ids of the
    /// failed call.
    pub(crate) async fn prefetch(&mut self, changes: &[Change]) -> Result<(), StoreError> {
        let mut asked = HashSet::new();
        let wanted: Vec<MessageId> = changes
            .iter()
            .filter_map(message_needed)
            .filter(|id| !self.message_cache.contains_key(id) && asked.insert(*id))
            .collect();
        for ids in wanted.chunks(FIND_MESSAGES_MAX) {
            let found = self.messages.find_messages(ids).await?;
            let mut by_id: HashMap<MessageId, MessageView> = found
                .into_iter()
                .map(|view| (view.message.id, view))
                .collect();
            for id in ids {
                self.message_cache.insert(*id, by_id.remove(id));
            }
        }
        Ok(())
    }

    /// The event `change` is announced as, or `None` when there is nothing to serve (the
    /// message is gone or deleted, the conversation is gone).
    ///
    /// # Errors
    /// The store's error when a lookup fails; nothing is cached for it.
    pub(crate) async fn hydrate(
        &mut self,
        change: &Change,
    ) -> Result<Option<ChatEvent>, StoreError> {
        let conversation_id = change.conversation_id;
        Ok(match &change.kind {
            ChangeKind::MessageCreated { message_id } => {
                self.message(*message_id).await?.map(|view| {
                    if view.message.is_deleted() {
                        // The content is not served; the sender's implied marker move is.
                        ChatEvent::ConversationRead {
                            conversation_id,
                            user_id: view.message.sender_id,
                            last_read_seq: view.message.seq,
                            last_read_at: view.message.created_at,
                        }
                    } else {
                        ChatEvent::MessageCreated(view)
                    }
                })
            }
            ChangeKind::MessageUpdated { message_id } => self
                .live_message(*message_id)
                .await?
                .map(ChatEvent::MessageUpdated),
            ChangeKind::MessageDeleted { message_id, seq } => Some(ChatEvent::MessageDeleted {
                conversation_id,
                message_id: *message_id,
                seq: *seq,
            }),
            ChangeKind::ReactionAdded {
                message_id,
                user_id,
                emoji,
            } => Some(ChatEvent::ReactionAdded {
                conversation_id,
                message_id: *message_id,
                emoji: emoji.clone(),
                user_id: *user_id,
            }),
            ChangeKind::ReactionRemoved {
                message_id,
                user_id,
                emoji,
            } => Some(ChatEvent::ReactionRemoved {
                conversation_id,
                message_id: *message_id,
                emoji: emoji.clone(),
                user_id: *user_id,
            }),
            ChangeKind::ConversationRead {
                user_id,
                last_read_seq,
                last_read_at,
            } => Some(ChatEvent::ConversationRead {
                conversation_id,
                user_id: *user_id,
                last_read_seq: *last_read_seq,
                last_read_at: *last_read_at,
            }),
            ChangeKind::ConversationCreated => self
                .conversation(conversation_id)
                .await?
                .map(ChatEvent::ConversationCreated),
            ChangeKind::ConversationUpdated => self
                .conversation(conversation_id)
                .await?
                .map(ChatEvent::ConversationUpdated),
            ChangeKind::ParticipantAdded { user_id, role } => Some(ChatEvent::ParticipantAdded {
                conversation_id,
                user_id: *user_id,
                role: *role,
            }),
            ChangeKind::ParticipantRemoved { user_id } => Some(ChatEvent::ParticipantRemoved {
                conversation_id,
                user_id: *user_id,
            }),
            ChangeKind::ParticipantUpdated { user_id, role } => {
                Some(ChatEvent::ParticipantUpdated {
                    conversation_id,
                    user_id: *user_id,
                    role: Some(*role),
                })
            }
        })
    }

    /// The message as it is now, when it exists and is not deleted.
    async fn live_message(&mut self, id: MessageId) -> Result<Option<MessageView>, StoreError> {
        Ok(self
            .message(id)
            .await?
            .filter(|view| !view.message.is_deleted()))
    }

    /// The message as it is now (deleted or not), when it exists: from what
    /// [`Hydrator::prefetch`] loaded, else looked up alone.
    async fn message(&mut self, id: MessageId) -> Result<Option<MessageView>, StoreError> {
        if let Some(cached) = self.message_cache.get(&id) {
            return Ok(cached.clone());
        }
        let found = self.messages.find_message(id).await?;
        self.message_cache.insert(id, found.clone());
        Ok(found)
    }

    /// The conversation with its participants as it is now.
    pub(crate) async fn conversation(
        &mut self,
        id: ConversationId,
    ) -> Result<Option<ConversationDetails>, StoreError> {
        if let Some(cached) = self.conversation_cache.get(&id) {
            return Ok(cached.clone());
        }
        let found = self.conversations.conversation_details(id).await?;
        self.conversation_cache.insert(id, found.clone());
        Ok(found)
    }
}

/// The message whose current row `change`'s event is made of, if any.
fn message_needed(change: &Change) -> Option<MessageId> {
    match change.kind {
        ChangeKind::MessageCreated { message_id } | ChangeKind::MessageUpdated { message_id } => {
            Some(message_id)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use chat_domain::{
        ChangeKind, ConversationType, DisplayName, FeedPos, GroupName, MessageBody, MessageContent,
        MessageType, Role, Seq, UserId,
    };
    use chat_memory::MemoryStore;
    use chat_ports::{ChangeFeed, MockConversationStore, MockMessageStore, UserDirectory};

    use super::*;
    use crate::{ChatService, CreateConversation, Ports, SendMessage};

    fn uid(id: i64) -> UserId {
        UserId::new(id).unwrap()
    }

    fn text(content: &str) -> SendMessage {
        SendMessage {
            body: MessageBody::from_user(
                MessageContent::parse(content).unwrap(),
                MessageType::Text,
                None,
                None,
            )
            .unwrap(),
            reply_to_id: None,
            client_message_id: None,
        }
    }

    /// A group of users 1 and 2 with a message that is then edited and one that is
    /// deleted; answers the store and the feed's changes.
    async fn fixture() -> (Arc<MemoryStore>, Vec<Change>) {
        let store = Arc::new(MemoryStore::new());
        for i in 1..=2 {
            let name = DisplayName::parse(&format!("User {i}")).unwrap();
            store.upsert_user(uid(i), Some(name)).await.unwrap();
        }
        let service = ChatService::new(Ports::from_store(store.clone()));
        let item = service
            .create_conversation(
                uid(1),
                CreateConversation {
                    kind: ConversationType::Group,
                    name: Some(GroupName::parse("Team").unwrap()),
                    posting_id: None,
                    participant_ids: vec![uid(2)],
                },
            )
            .await
            .unwrap();
        let id = item.details.conversation.id;
        let kept = service
            .send_message(uid(1), id, text("first"))
            .await
            .unwrap();
        let gone = service
            .send_message(uid(2), id, text("gone"))
            .await
            .unwrap();
        service
            .edit_message(
                uid(1),
                kept.view.message.id,
                MessageContent::parse("edited").unwrap(),
            )
            .await
            .unwrap();
        service
            .delete_message(uid(2), gone.view.message.id)
            .await
            .unwrap();
        service
            .change_role(uid(1), id, uid(2), Role::Admin)
            .await
            .unwrap();
        let changes = store.changes_after(FeedPos::ZERO, 100).await.unwrap();
        (store, changes)
    }

    #[tokio::test]
    async fn each_change_becomes_the_event_of_its_name_from_the_current_rows() {
        let (store, changes) = fixture().await;
        let mut hydrator = Hydrator::new(&*store, &*store);
        let mut served = Vec::new();
        for change in &changes {
            match hydrator.hydrate(change).await.unwrap() {
                Some(event) => {
                    // A deleted message's creation is served as its sender's marker move.
                    let deleted_send = matches!(change.kind, ChangeKind::MessageCreated { .. })
                        && matches!(event, ChatEvent::ConversationRead { .. });
                    assert!(event.name() == change.kind.name() || deleted_send);
                    assert_eq!(event.conversation_id(), change.conversation_id);
                    served.push(event);
                }
                None => served.push(ChatEvent::Typing {
                    conversation_id: change.conversation_id,
                    user_id: uid(1),
                    is_typing: false,
                }),
            }
        }
        let texts: Vec<Option<String>> = served
            .iter()
            .filter_map(|e| match e {
                ChatEvent::MessageCreated(view) | ChatEvent::MessageUpdated(view) => {
                    Some(Some(view.message.content.clone()))
                }
                ChatEvent::Typing { .. } => Some(None),
                _ => None,
            })
            .collect();
        // Creation announcement, "first" (as it is now), "gone" served without its text
        // (below), the edit (as it is now), the role change's announcement.
        assert_eq!(
            texts,
            vec![
                Some("User 1 created the group \u{201c}Team\u{201d}".to_owned()),
                Some("edited".to_owned()),
                Some("edited".to_owned()),
                Some("User 1 made user 2 ADMIN".to_owned()),
            ]
        );
        assert!(served.iter().any(|e| matches!(
            e,
            ChatEvent::ParticipantUpdated { user_id, role: Some(Role::Admin), .. } if *user_id == uid(2)
        )));
        let deleted = changes
            .iter()
            .find_map(|c| match c.kind {
                ChangeKind::MessageDeleted { message_id, seq } => Some((message_id, seq)),
                _ => None,
            })
            .unwrap();
        assert!(served.iter().any(|e| matches!(
            e,
            ChatEvent::MessageDeleted { message_id, seq, .. } if (*message_id, *seq) == deleted
        )));
        // "gone"'s creation: its sender's marker at its seq, the text nowhere.
        assert!(served.iter().any(|e| matches!(
            e,
            ChatEvent::ConversationRead { user_id, last_read_seq, .. }
                if (*user_id, *last_read_seq) == (uid(2), deleted.1)
        )));
        assert_eq!(deleted.1, Seq::new(3).unwrap());
    }

    /// The distinct messages the changes' events are made of.
    fn named_messages(changes: &[Change]) -> HashSet<MessageId> {
        changes.iter().filter_map(message_needed).collect()
    }

    /// A message store over `store` that counts single lookups and fails none.
    fn counting_single(store: &Arc<MemoryStore>, count: &Arc<AtomicUsize>) -> MockMessageStore {
        let mut messages = MockMessageStore::new();
        let (finder, count) = (store.clone(), count.clone());
        messages.expect_find_message().returning(move |id| {
            count.fetch_add(1, Ordering::SeqCst);
            let store = finder.clone();
            futures::executor::block_on(async move { store.find_message(id).await })
        });
        messages
    }

    #[tokio::test]
    async fn without_a_prefetch_each_message_and_conversation_is_looked_up_once() {
        let (store, changes) = fixture().await;
        let message_lookups = Arc::new(AtomicUsize::new(0));
        let conversation_lookups = Arc::new(AtomicUsize::new(0));
        let mut messages = counting_single(&store, &message_lookups);
        messages.expect_find_messages().never();
        let mut conversations = MockConversationStore::new();
        let (finder, count) = (store.clone(), conversation_lookups.clone());
        conversations
            .expect_conversation_details()
            .returning(move |id| {
                count.fetch_add(1, Ordering::SeqCst);
                let store = finder.clone();
                futures::executor::block_on(async move { store.conversation_details(id).await })
            });
        let mut hydrator = Hydrator::new(&messages, &conversations);
        // The page twice over: the second pass is served from the cache.
        for change in changes.iter().chain(changes.iter()) {
            hydrator.hydrate(change).await.unwrap();
        }
        assert_eq!(
            message_lookups.load(Ordering::SeqCst),
            named_messages(&changes).len()
        );
        assert_eq!(conversation_lookups.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_prefetched_page_costs_one_lookup_and_hydrates_as_one_by_one() {
        let (store, changes) = fixture().await;
        let batches: Arc<std::sync::Mutex<Vec<Vec<MessageId>>>> = Arc::default();
        let mut messages = MockMessageStore::new();
        messages.expect_find_message().never();
        let (finder, asked) = (store.clone(), batches.clone());
        messages
            .expect_find_messages()
            .returning(move |ids: &[MessageId]| {
                asked.lock().unwrap().push(ids.to_vec());
                let (store, ids) = (finder.clone(), ids.to_vec());
                futures::executor::block_on(async move { store.find_messages(&ids).await })
            });
        // A message the store does not have: remembered as gone, not asked again.
        let missing = Change {
            kind: ChangeKind::MessageUpdated {
                message_id: MessageId::new(),
            },
            ..changes[0].clone()
        };
        let page: Vec<Change> = changes.iter().cloned().chain([missing.clone()]).collect();
        let mut prefetched = Hydrator::new(&messages, &*store);
        prefetched.prefetch(&page).await.unwrap();
        // Again (the next page of the same reader): everything is known already.
        prefetched.prefetch(&page).await.unwrap();
        let mut one_by_one = Hydrator::new(&*store, &*store);
        for change in &page {
            assert_eq!(
                prefetched.hydrate(change).await.unwrap(),
                one_by_one.hydrate(change).await.unwrap(),
                "{}",
                change.kind.name()
            );
        }
        let batches = batches.lock().unwrap().clone();
        assert_eq!(batches.len(), 1, "one lookup for the page: {batches:?}");
        let asked: HashSet<MessageId> = batches[0].iter().copied().collect();
        assert_eq!(asked.len(), batches[0].len(), "each message asked once");
        assert_eq!(asked, named_messages(&page));
        assert_eq!(prefetched.hydrate(&missing).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_failed_lookup_is_an_error_and_is_not_remembered() {
        let (store, changes) = fixture().await;
        let calls = Arc::new(AtomicUsize::new(0));
        let mut messages = MockMessageStore::new();
        let (finder, count) = (store.clone(), calls.clone());
        messages.expect_find_message().returning(move |id| {
            if count.fetch_add(1, Ordering::SeqCst) == 0 {
                return Err(StoreError::Unavailable("down".to_owned()));
            }
            let store = finder.clone();
            futures::executor::block_on(async move { store.find_message(id).await })
        });
        let created = changes
            .iter()
            .find(|c| matches!(c.kind, ChangeKind::MessageCreated { .. }))
            .unwrap();
        let mut hydrator = Hydrator::new(&messages, &*store);
        assert!(hydrator.hydrate(created).await.is_err());
        assert!(matches!(
            hydrator.hydrate(created).await.unwrap(),
            Some(ChatEvent::MessageCreated(_))
        ));
    }

    #[tokio::test]
    async fn a_failed_prefetch_is_an_error_and_remembers_nothing() {
        let (store, changes) = fixture().await;
        let calls = Arc::new(AtomicUsize::new(0));
        let mut messages = MockMessageStore::new();
        let (finder, count) = (store.clone(), calls.clone());
        messages
            .expect_find_messages()
            .returning(move |ids: &[MessageId]| {
                if count.fetch_add(1, Ordering::SeqCst) == 0 {
                    return Err(StoreError::Unavailable("down".to_owned()));
                }
                let (store, ids) = (finder.clone(), ids.to_vec());
                futures::executor::block_on(async move { store.find_messages(&ids).await })
            });
        messages.expect_find_message().never();
        let mut hydrator = Hydrator::new(&messages, &*store);
        assert!(hydrator.prefetch(&changes).await.is_err());
        // Nothing was remembered as gone: the next prefetch asks again and serves it.
        hydrator.prefetch(&changes).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        let created = changes
            .iter()
            .find(|c| matches!(c.kind, ChangeKind::MessageCreated { .. }))
            .unwrap();
        assert!(matches!(
            hydrator.hydrate(created).await.unwrap(),
            Some(ChatEvent::MessageCreated(_))
        ));
    }
}
