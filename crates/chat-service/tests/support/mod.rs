//! The service test harness: a `ChatService` over the in-memory store with a recording
//! event publisher, and short helpers for the common steps.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chat_domain::{
    ConversationId, ConversationType, Delivery, DisplayName, GroupName, MessageBody,
    MessageContent, MessageId, MessageType, MessageView, PostingId, UserId,
};
use chat_memory::MemoryStore;
use chat_ports::{EventPublisher, PublishError};
use chat_service::{ChatService, CreateConversation, InboxItem, Limits, Ports, SendMessage};

/// Keeps every delivery for inspection.
#[derive(Default)]
pub(crate) struct Recorder {
    deliveries: Mutex<Vec<Delivery>>,
}

impl Recorder {
    pub(crate) fn take(&self) -> Vec<Delivery> {
        std::mem::take(&mut *self.deliveries.lock().unwrap())
    }

    /// The names of the events delivered since the last take, in order.
    pub(crate) fn names(&self) -> Vec<&'static str> {
        self.take().iter().map(|d| d.event.name()).collect()
    }
}

#[async_trait]
impl EventPublisher for Recorder {
    async fn publish(&self, delivery: Delivery) -> Result<(), PublishError> {
        self.deliveries.lock().unwrap().push(delivery);
        Ok(())
    }
}

pub(crate) struct TestApp {
    pub(crate) service: Arc<ChatService>,
    pub(crate) store: Arc<MemoryStore>,
    pub(crate) events: Arc<Recorder>,
}

pub(crate) fn uid(id: i64) -> UserId {
    UserId::new(id).unwrap()
}

pub(crate) fn ports(store: Arc<MemoryStore>, events: Arc<dyn EventPublisher>) -> Ports {
    Ports::from_store(store).with_events(events)
}

/// A service with users 1..=10 ("User i").
pub(crate) async fn app() -> TestApp {
    app_with(Limits::default()).await
}

pub(crate) async fn app_with(limits: Limits) -> TestApp {
    let store = Arc::new(MemoryStore::new());
    let events = Arc::new(Recorder::default());
    let service = Arc::new(ChatService::with_limits(
        ports(store.clone(), events.clone()),
        limits,
    ));
    for i in 1..=10 {
        use chat_ports::UserDirectory;
        store
            .upsert_user(
                uid(i),
                Some(DisplayName::parse(&format!("User {i}")).unwrap()),
            )
            .await
            .unwrap();
    }
    TestApp {
        service,
        store,
        events,
    }
}

pub(crate) fn text(content: &str) -> SendMessage {
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

impl TestApp {
    pub(crate) async fn group(&self, creator: i64, members: &[i64]) -> ConversationId {
        let item = self
            .service
            .create_conversation(
                uid(creator),
                CreateConversation {
                    kind: ConversationType::Group,
                    name: Some(GroupName::parse("Team").unwrap()),
                    posting_id: None,
                    participant_ids: members.iter().map(|m| uid(*m)).collect(),
                },
            )
            .await
            .unwrap();
        self.events.take();
        item.details.conversation.id
    }

    pub(crate) async fn posting(&self) -> PostingId {
        let id = PostingId::new();
        self.store.add_posting(id).await;
        id
    }

    pub(crate) async fn send(
        &self,
        sender: i64,
        conversation: ConversationId,
        content: &str,
    ) -> MessageView {
        self.service
            .send_message(uid(sender), conversation, text(content))
            .await
            .unwrap()
            .view
    }

    pub(crate) async fn send_id(
        &self,
        sender: i64,
        conversation: ConversationId,
        content: &str,
    ) -> MessageId {
        self.send(sender, conversation, content).await.message.id
    }

    pub(crate) async fn view(&self, user: i64, conversation: ConversationId) -> InboxItem {
        self.service
            .conversation(uid(user), conversation)
            .await
            .unwrap()
    }

    pub(crate) async fn unread(&self, user: i64, conversation: ConversationId) -> u64 {
        self.view(user, conversation).await.unread_count
    }
}
