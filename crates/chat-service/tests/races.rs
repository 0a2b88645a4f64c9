//! Races between the service's early check and the store's write, injected with `mockall`:
//! a change that commits in between must decide the outcome and the recipients, not what
//! the service read before.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns assert by unwrapping too

mod support;

use std::sync::Arc;

use chat_domain::{ChatEvent, MessageContent, MessageId, UserId};
use chat_ports::{ConversationStore, MessageStore, MockMessageStore};
use chat_service::{ChatService, ServiceError};
use support::{app, ports, uid};

/// Issue 11, item 5: user 3 is removed after the service checked the edit and before the
/// store commits it; the edited text goes only to those still taking part.
#[tokio::test]
async fn an_edit_is_published_to_the_participants_committed_with_it() {
    let app = app().await;
    let id = app.group(1, &[2, 3]).await;
    let message = app.send_id(2, id, "draft").await;
    let store = app.memory();
    let mut racing = MockMessageStore::new();
    let finder = store.clone();
    racing.expect_find_message().returning(move |m: MessageId| {
        let store = finder.clone();
        futures::executor::block_on(async move { store.find_message(m).await })
    });
    let editor = store.clone();
    racing.expect_edit_message().times(1).returning(
        move |m: MessageId, actor: UserId, content: MessageContent, at| {
            let store = editor.clone();
            futures::executor::block_on(async move {
                // The removal commits first.
                store
                    .remove_participant(id, uid(1), uid(3), at, None)
                    .await
                    .unwrap();
                store.edit_message(m, actor, content, at).await
            })
        },
    );
    let mut wired = ports(store, app.events.clone());
    wired.messages = Arc::new(racing);
    let service = ChatService::new(wired);
    app.events.take().await;

    service
        .edit_message(uid(2), message, MessageContent::parse("secret").unwrap())
        .await
        .unwrap();
    let deliveries = app.events.take().await;
    let updated = deliveries
        .iter()
        .find(|d| matches!(d.event, ChatEvent::MessageUpdated(_)))
        .unwrap();
    let mut recipients = updated.recipients.clone();
    recipients.sort();
    assert_eq!(
        recipients,
        vec![uid(1), uid(2)],
        "user 3 left before the edit"
    );
}

/// Issue 11, item 5: the admin is demoted after the service checked their role; the store's
/// refusal maps to the answer the service's own check gives (`403`), and nothing changes.
#[tokio::test]
async fn a_demotion_that_commits_first_makes_the_add_forbidden() {
    let app = app().await;
    let id = app.group(1, &[2]).await;
    app.service
        .change_role(uid(1), id, uid(2), chat_domain::Role::Admin)
        .await
        .unwrap();
    let store = app.memory();
    // The demotion lands between the check and the store's write: called directly on the
    // store, as a second node would.
    let checked = app.service.conversation(uid(1), id).await.unwrap();
    assert_eq!(checked.membership.role, chat_domain::Role::Admin);
    store
        .set_role(id, uid(2), uid(1), chat_domain::Role::Member, None)
        .await
        .unwrap();
    let refused = store
        .add_participants(
            id,
            uid(1),
            vec![uid(3)],
            checked.details.conversation.created_at,
            1000,
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(
        ServiceError::from(refused),
        ServiceError::Forbidden("only admins may do this")
    );
    let after = app.service.conversation(uid(2), id).await.unwrap();
    assert!(
        after.details.participant(uid(3)).is_none(),
        "nobody was added"
    );
}
