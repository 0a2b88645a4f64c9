//! Failure paths, injected with `mockall`: a storage failure becomes `Unavailable` and
//! leaves nothing half-written; a failing event publisher never loses a stored message
//! and never stops the relay.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns assert by unwrapping too

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chat_domain::{ChatEvent, ConversationId, Delivery, MessageId};
use chat_ports::{
    EventPublisher, MessageStore, MockConversationStore, MockEventPublisher, MockMessageStore,
    PublishError, StoreError,
};
use chat_service::{ChatService, HistoryQuery, PageLimit, Relay, ServiceError};
use support::{app, ports, text, uid};

fn unavailable() -> StoreError {
    StoreError::Unavailable("connection reset".to_owned())
}

#[tokio::test]
async fn a_failing_append_is_unavailable_and_stores_and_announces_nothing() {
    let app = app().await;
    let id = app.group(1, &[2]).await;
    let mut failing = MockMessageStore::new();
    failing
        .expect_append_message()
        .times(1)
        .returning(|_| Err(unavailable()));
    let mut silent = MockEventPublisher::new();
    silent.expect_publish().never();
    let mut wired = ports(app.memory(), Arc::new(silent));
    wired.messages = Arc::new(failing);
    let service = ChatService::new(wired);
    let head = service.feed_head().await.unwrap();

    let err = service
        .send_message(uid(1), id, text("lost?"))
        .await
        .unwrap_err();
    assert_eq!(err, ServiceError::Unavailable);
    assert_eq!(
        service.feed_head().await.unwrap(),
        head,
        "nothing in the feed"
    );
    let page = app
        .memory()
        .history(id, HistoryQuery::Latest(PageLimit::new(10).unwrap()))
        .await
        .unwrap();
    assert_eq!(
        page.items.len(),
        1,
        "only the creation announcement, no half-written message"
    );
    assert_eq!(app.unread(2, id).await, 0);
}

/// Fails the first publish, records the others.
#[derive(Default)]
struct FlakyPublisher {
    calls: AtomicUsize,
    published: Mutex<Vec<Delivery>>,
}

#[async_trait]
impl EventPublisher for FlakyPublisher {
    async fn publish(&self, delivery: Delivery) -> Result<(), PublishError> {
        if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            return Err(PublishError("redis is down".to_owned()));
        }
        self.published.lock().unwrap().push(delivery);
        Ok(())
    }
}

#[tokio::test]
async fn a_failing_publisher_never_loses_a_stored_message_and_the_relay_goes_on() {
    let app = app().await;
    let id = app.group(1, &[2]).await;
    let flaky = Arc::new(FlakyPublisher::default());
    let service = Arc::new(ChatService::new(ports(app.memory(), flaky.clone())));
    let relay = Relay::spawn(service.clone(), service.feed_head().await.unwrap().pos);

    let kept = service
        .send_message(uid(1), id, text("kept"))
        .await
        .unwrap();
    assert!(kept.created);
    let page = service
        .history(
            uid(2),
            id,
            HistoryQuery::Latest(PageLimit::new(10).unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(page.items[0].message.id, kept.view.message.id);
    assert_eq!(app.unread(2, id).await, 1);

    let next = service
        .send_message(uid(2), id, text("next"))
        .await
        .unwrap();
    let head = service.feed_head().await.unwrap().pos;
    while relay.position() < head {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    relay.stop().await;
    let created: Vec<MessageId> = flaky
        .published
        .lock()
        .unwrap()
        .iter()
        .filter_map(|d| match &d.event {
            ChatEvent::MessageCreated(view) => Some(view.message.id),
            _ => None,
        })
        .collect();
    assert_eq!(
        created,
        vec![next.view.message.id],
        "the first publish failed, the relay went on with the next change"
    );
}

#[tokio::test]
async fn an_unreachable_store_makes_every_read_unavailable() {
    let app = app().await;
    let mut down = MockConversationStore::new();
    down.expect_conversation_details()
        .returning(|_| Err(unavailable()));
    let mut wired = ports(app.memory(), app.events.clone());
    wired.conversations = Arc::new(down);
    let service = ChatService::new(wired);
    let id = ConversationId::new();
    assert_eq!(
        service
            .history(uid(1), id, HistoryQuery::Latest(PageLimit::new(5).unwrap()))
            .await
            .unwrap_err(),
        ServiceError::Unavailable
    );
    assert_eq!(
        service.typing(uid(1), id, true).await.unwrap_err(),
        ServiceError::Unavailable
    );
    assert!(app.events.take().await.is_empty());
}

#[tokio::test]
async fn a_failing_delete_changes_nothing() {
    let app = app().await;
    let id = app.group(1, &[2]).await;
    let message = app.send_id(1, id, "stays").await;
    let store = app.memory();
    let mut failing = MockMessageStore::new();
    failing
        .expect_find_message()
        .returning(move |m: MessageId| {
            let store = store.clone();
            futures::executor::block_on(async move { store.find_message(m).await })
        });
    failing
        .expect_delete_message()
        .returning(|_, _, _| Err(unavailable()));
    let mut wired = ports(app.memory(), app.events.clone());
    wired.messages = Arc::new(failing);
    let service = ChatService::new(wired);
    app.events.take().await;
    assert_eq!(
        service.delete_message(uid(1), message).await.unwrap_err(),
        ServiceError::Unavailable
    );
    assert!(
        app.events.take().await.is_empty(),
        "no event for a change that did not happen"
    );
    assert_eq!(
        app.service
            .message(uid(2), message)
            .await
            .unwrap()
            .message
            .content,
        "stays"
    );
}
