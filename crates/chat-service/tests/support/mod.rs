//! The service test harness: a `ChatService` over the in-memory store (or, in the
//! `rules_sqlite` target, over a fresh SQLite file) with its relay publishing from the
//! change feed into a recording event publisher, and short helpers for the common steps.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chat_domain::{
    ConversationId, ConversationType, Delivery, DisplayName, GroupName, MessageBody,
    MessageContent, MessageId, MessageType, MessageView, PostingId, UserId,
};
use chat_memory::MemoryStore;
use chat_ports::{EventPublisher, PublishError, UserDirectory};
use chat_service::{
    ChatService, CreateConversation, InboxItem, Limits, Ports, Relay, RelayHandle, SendMessage,
};
use chat_test_support::sqlite::TestFile;

/// Keeps every delivery for inspection. Once a relay follows it, every read first waits
/// until the relay has published everything committed so far.
#[derive(Default)]
pub(crate) struct Recorder {
    deliveries: Mutex<Vec<Delivery>>,
    relay: OnceLock<(Arc<ChatService>, RelayHandle)>,
}

impl Recorder {
    /// Starts a relay from the current head of `service`'s feed, publishing into this
    /// recorder (the service's publisher).
    pub(crate) async fn follow(&self, service: Arc<ChatService>) {
        let head = service.feed_head().await.unwrap().pos;
        let relay = Relay::spawn(service.clone(), head);
        assert!(
            self.relay.set((service, relay)).is_ok(),
            "one relay per recorder"
        );
    }

    /// Waits until the relay has published every change committed so far.
    pub(crate) async fn settle(&self) {
        let Some((service, relay)) = self.relay.get() else {
            return;
        };
        let head = service.feed_head().await.unwrap().pos;
        let deadline = Instant::now() + Duration::from_secs(10);
        while relay.position() < head {
            assert!(Instant::now() < deadline, "the relay did not catch up");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Every delivery since the last take, once the relay has caught up.
    pub(crate) async fn take(&self) -> Vec<Delivery> {
        self.settle().await;
        std::mem::take(&mut *self.deliveries.lock().unwrap())
    }

    /// The names of the events delivered since the last take, in order.
    pub(crate) async fn names(&self) -> Vec<&'static str> {
        self.take().await.iter().map(|d| d.event.name()).collect()
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
    /// The store's user directory.
    pub(crate) users: Arc<dyn UserDirectory>,
    pub(crate) events: Arc<Recorder>,
    store: Backend,
}

/// The store under the service.
enum Backend {
    Memory(Arc<MemoryStore>),
    /// The file's directory lives as long as the app.
    Sqlite(TestFile),
}

/// Whether this test target runs the service on SQLite: `rules_sqlite` compiles `rules.rs`
/// a second time, and this harness sees the target's name.
fn on_sqlite() -> bool {
    env!("CARGO_CRATE_NAME") == "rules_sqlite"
}

pub(crate) fn uid(id: i64) -> UserId {
    UserId::new(id).unwrap()
}

pub(crate) fn ports(store: Arc<MemoryStore>, events: Arc<dyn EventPublisher>) -> Ports {
    Ports::from_store(store).with_events(events)
}

/// A service with users 1..=10 ("User i").
pub(crate) async fn app() -> TestApp {
    // The rules, not the abuse limits, are under test here: every class of action but
    // sends (whose limit a rule test covers) gets a budget no test reaches.
    let lots = std::num::NonZeroU32::new(1_000_000).expect("non-zero");
    app_with(Limits {
        rates: chat_service::ActionRates::uniform(chat_service::Rate::per_second(lots, lots)),
        ..Limits::default()
    })
    .await
}

pub(crate) async fn app_with(limits: Limits) -> TestApp {
    let events = Arc::new(Recorder::default());
    let (wired, users, store) = if on_sqlite() {
        let file = chat_test_support::sqlite::fresh_store().await;
        let sqlite = Arc::new(file.store.clone());
        let wired = Ports::from_store(sqlite.clone()).with_events(events.clone());
        (
            wired,
            sqlite as Arc<dyn UserDirectory>,
            Backend::Sqlite(file),
        )
    } else {
        let memory = Arc::new(MemoryStore::with_cipher(
            chat_test_support::key_ring::cipher(),
        ));
        let wired = ports(memory.clone(), events.clone());
        (
            wired,
            memory.clone() as Arc<dyn UserDirectory>,
            Backend::Memory(memory),
        )
    };
    let service = Arc::new(ChatService::with_limits(wired, limits));
    events.follow(service.clone()).await;
    for i in 1..=10 {
        users
            .upsert_user(
                uid(i),
                Some(DisplayName::parse(&format!("User {i}")).unwrap()),
            )
            .await
            .unwrap();
    }
    TestApp {
        service,
        users,
        events,
        store,
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
    /// The in-memory store under the service (the failure-injection tests wire mocks
    /// around it).
    ///
    /// # Panics
    /// On SQLite.
    pub(crate) fn memory(&self) -> Arc<MemoryStore> {
        match &self.store {
            Backend::Memory(store) => store.clone(),
            Backend::Sqlite(_) => panic!("this test needs the in-memory store"),
        }
    }

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
        self.events.take().await;
        item.details.conversation.id
    }

    pub(crate) async fn posting(&self) -> PostingId {
        let id = PostingId::new();
        match &self.store {
            Backend::Memory(store) => store.add_posting(id).await,
            Backend::Sqlite(file) => file.store.add_posting(id, None).await.unwrap(),
        }
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
