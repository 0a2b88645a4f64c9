//! One or more tests per business rule of the service, named after the rule's number.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns assert by unwrapping too

mod support;

use std::collections::HashSet;

use chat_domain::{
    ChatEvent, ClientMessageId, ConversationType, Emoji, GroupName, MediaUrl, MessageBody,
    MessageContent, MessageId, MessageType, PostingId, Role, Seq,
};
use chat_service::{
    ArchivedFilter, ConflictCode, ConversationUpdate, CreateConversation, HistoryQuery, InboxQuery,
    OpenedDirect, PageLimit, SendMessage, ServiceError,
};
use futures::future::join_all;
use support::{app, text, uid};

fn create(kind: ConversationType, name: Option<&str>, members: &[i64]) -> CreateConversation {
    CreateConversation {
        kind,
        name: name.map(|n| GroupName::parse(n).unwrap()),
        posting_id: None,
        participant_ids: members.iter().map(|m| uid(*m)).collect(),
    }
}

fn invalid_field(err: ServiceError) -> &'static str {
    match err {
        ServiceError::Invalid { field, .. } => field,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

fn conflict(err: ServiceError) -> ConflictCode {
    match err {
        ServiceError::Conflict { code } => code,
        other => panic!("expected Conflict, got {other:?}"),
    }
}

fn forbidden<T>(result: Result<T, ServiceError>) -> bool {
    matches!(result, Err(ServiceError::Forbidden(_)))
}

fn limit(n: i64) -> PageLimit {
    PageLimit::new(n).unwrap()
}

// Rule 1 ------------------------------------------------------------------------------

#[tokio::test]
async fn rule_01_group_creator_is_admin_members_are_members_duplicates_collapse() {
    let app = app().await;
    let item = app
        .service
        .create_conversation(
            uid(1),
            create(ConversationType::Group, Some("Team"), &[2, 3, 2, 1, 3]),
        )
        .await
        .unwrap();
    let roles: Vec<(i64, Role)> = item
        .details
        .active_participants()
        .map(|p| (p.participant.user_id.get(), p.participant.role))
        .collect();
    assert_eq!(
        roles,
        vec![(1, Role::Admin), (2, Role::Member), (3, Role::Member)]
    );
    assert_eq!(item.membership.role, Role::Admin);
    let events = app.events.take().await;
    assert_eq!(events[0].event.name(), "conversation.created");
    let recipients: HashSet<i64> = events[0].recipients.iter().map(|u| u.get()).collect();
    assert_eq!(recipients, HashSet::from([1, 2, 3]));
}

#[tokio::test]
async fn rule_01_unknown_participants_are_invalid() {
    let app = app().await;
    let err = app
        .service
        .create_conversation(
            uid(1),
            create(ConversationType::Group, Some("Team"), &[2, 99]),
        )
        .await
        .unwrap_err();
    assert_eq!(invalid_field(err), "participant_ids");
    let inbox = app
        .service
        .list_conversations(
            uid(1),
            InboxQuery {
                limit: limit(10),
                after: None,
                archived: ArchivedFilter::Any,
            },
        )
        .await
        .unwrap();
    assert!(inbox.items.is_empty(), "nothing created");
}

#[tokio::test]
async fn rule_01_at_most_1000_participants() {
    let app = app().await;
    for i in 11..=1001 {
        app.users.upsert_user(uid(i), None).await.unwrap();
    }
    let too_many: Vec<i64> = (2..=1001).collect();
    let err = app
        .service
        .create_conversation(
            uid(1),
            create(ConversationType::Group, Some("Big"), &too_many),
        )
        .await
        .unwrap_err();
    assert_eq!(invalid_field(err), "participant_ids");
    let just_right: Vec<i64> = (2..=1000).collect();
    let item = app
        .service
        .create_conversation(
            uid(1),
            create(ConversationType::Group, Some("Big"), &just_right),
        )
        .await
        .unwrap();
    assert_eq!(item.details.active_participants().count(), 1000);
    let err = app
        .service
        .add_participants(uid(1), item.details.conversation.id, vec![uid(1001)])
        .await
        .unwrap_err();
    assert_eq!(invalid_field(err), "user_ids");
}

#[tokio::test]
async fn rule_01_group_needs_a_name_and_direct_is_not_created_here() {
    let app = app().await;
    let err = app
        .service
        .create_conversation(uid(1), create(ConversationType::Group, None, &[2]))
        .await
        .unwrap_err();
    assert_eq!(invalid_field(err), "name");
    let err = app
        .service
        .create_conversation(uid(1), create(ConversationType::Direct, None, &[2]))
        .await
        .unwrap_err();
    assert_eq!(invalid_field(err), "type");
}

// Rule 2 ------------------------------------------------------------------------------

#[tokio::test]
async fn rule_02_post_linked_needs_an_existing_posting_and_name_is_optional() {
    let app = app().await;
    let mut request = create(ConversationType::PostLinked, None, &[2]);
    assert_eq!(
        invalid_field(
            app.service
                .create_conversation(uid(1), request.clone())
                .await
                .unwrap_err()
        ),
        "posting_id"
    );
    request.posting_id = Some(PostingId::new());
    assert_eq!(
        invalid_field(
            app.service
                .create_conversation(uid(1), request.clone())
                .await
                .unwrap_err()
        ),
        "posting_id"
    );
    let posting = app.posting().await;
    request.posting_id = Some(posting);
    let item = app
        .service
        .create_conversation(uid(1), request)
        .await
        .unwrap();
    assert_eq!(item.details.conversation.kind, ConversationType::PostLinked);
    assert_eq!(item.details.conversation.posting_id, Some(posting));
    assert_eq!(item.details.conversation.name, None);
    assert_eq!(item.membership.role, Role::Admin);
    let mut group = create(ConversationType::Group, Some("x"), &[]);
    group.posting_id = Some(posting);
    assert_eq!(
        invalid_field(
            app.service
                .create_conversation(uid(1), group)
                .await
                .unwrap_err()
        ),
        "posting_id"
    );
}

// Rule 3 ------------------------------------------------------------------------------

#[tokio::test]
async fn rule_03_direct_get_or_create_in_either_direction() {
    let app = app().await;
    let OpenedDirect {
        item: first,
        created,
    } = app.service.open_direct(uid(1), uid(2)).await.unwrap();
    assert!(created);
    let OpenedDirect {
        item: second,
        created: created_again,
    } = app.service.open_direct(uid(2), uid(1)).await.unwrap();
    assert!(!created_again);
    assert_eq!(
        first.details.conversation.id,
        second.details.conversation.id
    );
    assert_eq!(first.details.conversation.kind, ConversationType::Direct);
    assert_eq!(app.events.names().await, vec!["conversation.created"]);
    assert_eq!(
        invalid_field(app.service.open_direct(uid(1), uid(77)).await.unwrap_err()),
        "user_id"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rule_03_direct_race_creates_exactly_one() {
    let app = app().await;
    let calls = (0..20).map(|i| {
        let service = app.service.clone();
        tokio::spawn(async move {
            let (a, b) = if i % 2 == 0 { (1, 2) } else { (2, 1) };
            service.open_direct(uid(a), uid(b)).await.unwrap()
        })
    });
    let results: Vec<_> = join_all(calls)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let ids: HashSet<_> = results
        .iter()
        .map(|o| o.item.details.conversation.id)
        .collect();
    assert_eq!(ids.len(), 1);
    assert_eq!(results.iter().filter(|o| o.created).count(), 1);
}

#[tokio::test]
async fn rule_03_notes_to_self_are_a_separate_direct_conversation() {
    let app = app().await;
    let OpenedDirect {
        item: notes,
        created,
    } = app.service.open_direct(uid(1), uid(1)).await.unwrap();
    assert!(created);
    assert_eq!(notes.details.active_user_ids(), vec![uid(1)]);
    let pair = app.service.open_direct(uid(1), uid(2)).await.unwrap().item;
    assert_ne!(notes.details.conversation.id, pair.details.conversation.id);
    let OpenedDirect {
        item: again,
        created,
    } = app.service.open_direct(uid(1), uid(1)).await.unwrap();
    assert!(!created);
    assert_eq!(again.details.conversation.id, notes.details.conversation.id);
}

// Rule 4 ------------------------------------------------------------------------------

#[tokio::test]
async fn rule_04_outsiders_and_leavers_see_nothing() {
    let app = app().await;
    let id = app.group(1, &[2, 3]).await;
    let message = app.send_id(1, id, "secret").await;
    app.service
        .remove_participant(uid(3), id, uid(3))
        .await
        .unwrap();
    for outsider in [4, 3] {
        let u = uid(outsider);
        assert_eq!(
            app.service.conversation(u, id).await.unwrap_err(),
            ServiceError::NotFound
        );
        assert_eq!(
            app.service
                .history(u, id, HistoryQuery::Latest(limit(10)))
                .await
                .unwrap_err(),
            ServiceError::NotFound
        );
        assert_eq!(
            app.service.message(u, message).await.unwrap_err(),
            ServiceError::NotFound
        );
        assert_eq!(
            app.service.receipts(u, message).await.unwrap_err(),
            ServiceError::NotFound
        );
        assert_eq!(
            app.service
                .add_reaction(u, message, Emoji::parse("👍").unwrap())
                .await
                .unwrap_err(),
            ServiceError::NotFound
        );
        assert_eq!(
            app.service
                .send_message(u, id, text("let me in"))
                .await
                .unwrap_err(),
            ServiceError::NotFound
        );
        assert_eq!(
            app.service.mark_read(u, id, None).await.unwrap_err(),
            ServiceError::NotFound
        );
        assert_eq!(
            app.service
                .edit_message(u, message, MessageContent::parse("x").unwrap())
                .await
                .unwrap_err(),
            ServiceError::NotFound
        );
        assert_eq!(
            app.service.delete_message(u, message).await.unwrap_err(),
            ServiceError::NotFound
        );
        assert_eq!(
            app.service
                .update_conversation(
                    u,
                    id,
                    ConversationUpdate {
                        is_archived: Some(true),
                        ..Default::default()
                    }
                )
                .await
                .unwrap_err(),
            ServiceError::NotFound
        );
        assert_eq!(
            app.service.set_muted(u, id, true).await.unwrap_err(),
            ServiceError::NotFound
        );
        assert_eq!(
            app.service.typing(u, id, true).await.unwrap_err(),
            ServiceError::NotFound
        );
    }
}

// Rule 5 ------------------------------------------------------------------------------

#[tokio::test]
async fn rule_05_admin_only_actions_are_forbidden_to_members() {
    let app = app().await;
    let id = app.group(1, &[2, 3]).await;
    let member = uid(2);
    assert!(forbidden(
        app.service
            .update_conversation(
                member,
                id,
                ConversationUpdate {
                    name: Some(GroupName::parse("x").unwrap()),
                    is_archived: None
                }
            )
            .await
    ));
    assert!(forbidden(
        app.service
            .update_conversation(
                member,
                id,
                ConversationUpdate {
                    name: None,
                    is_archived: Some(true)
                }
            )
            .await
    ));
    assert!(forbidden(
        app.service.add_participants(member, id, vec![uid(4)]).await
    ));
    assert!(forbidden(
        app.service.remove_participant(member, id, uid(3)).await
    ));
    assert!(forbidden(
        app.service
            .change_role(member, id, uid(3), Role::Admin)
            .await
    ));
    // The admin may do all of it.
    let renamed = app
        .service
        .update_conversation(
            uid(1),
            id,
            ConversationUpdate {
                name: Some(GroupName::parse("Renamed").unwrap()),
                is_archived: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        renamed.details.conversation.name.as_deref(),
        Some("Renamed")
    );
    app.service
        .add_participants(uid(1), id, vec![uid(4)])
        .await
        .unwrap();
    app.service
        .remove_participant(uid(1), id, uid(4))
        .await
        .unwrap();
    app.service
        .change_role(uid(1), id, uid(3), Role::Admin)
        .await
        .unwrap();
}

#[tokio::test]
async fn rule_05_direct_conversations_have_no_admin_actions_but_either_side_archives() {
    let app = app().await;
    let item = app.service.open_direct(uid(1), uid(2)).await.unwrap().item;
    let id = item.details.conversation.id;
    for actor in [1, 2] {
        let a = uid(actor);
        assert!(forbidden(
            app.service
                .update_conversation(
                    a,
                    id,
                    ConversationUpdate {
                        name: Some(GroupName::parse("x").unwrap()),
                        is_archived: None
                    }
                )
                .await
        ));
        assert!(forbidden(
            app.service.add_participants(a, id, vec![uid(3)]).await
        ));
        assert!(forbidden(
            app.service.remove_participant(a, id, uid(3 - actor)).await
        ));
        assert!(forbidden(app.service.remove_participant(a, id, a).await));
        assert!(forbidden(
            app.service.change_role(a, id, a, Role::Admin).await
        ));
    }
    let archived = app
        .service
        .update_conversation(
            uid(2),
            id,
            ConversationUpdate {
                name: None,
                is_archived: Some(true),
            },
        )
        .await
        .unwrap();
    assert!(archived.details.conversation.is_archived);
    let back = app
        .service
        .update_conversation(
            uid(1),
            id,
            ConversationUpdate {
                name: None,
                is_archived: Some(false),
            },
        )
        .await
        .unwrap();
    assert!(!back.details.conversation.is_archived);
}

// Rule 6 ------------------------------------------------------------------------------

#[tokio::test]
async fn rule_06_leaving_keeps_history_and_promotes_the_earliest_member() {
    let app = app().await;
    let id = app.group(1, &[2, 3]).await;
    app.send(2, id, "hello").await;
    app.events.take().await;
    app.service
        .remove_participant(uid(1), id, uid(1))
        .await
        .unwrap();
    let names = app.events.names().await;
    assert!(names.contains(&"participant.removed"));
    assert!(names.contains(&"participant.updated"));
    let view = app.view(2, id).await;
    assert_eq!(view.membership.role, Role::Admin, "user 2 joined first");
    let left = view.details.participant(uid(1)).unwrap();
    assert!(
        left.left_at.is_some(),
        "the membership is kept, marked left"
    );
    let page = app
        .service
        .history(uid(2), id, HistoryQuery::Latest(limit(10)))
        .await
        .unwrap();
    assert!(page.items.iter().any(|m| m.message.content == "hello"));
}

#[tokio::test]
async fn rule_06_demoting_the_last_admin_conflicts() {
    let app = app().await;
    let id = app.group(1, &[2]).await;
    let err = app
        .service
        .change_role(uid(1), id, uid(1), Role::Member)
        .await
        .unwrap_err();
    assert_eq!(conflict(err), ConflictCode::LastAdmin);
    app.service
        .change_role(uid(1), id, uid(2), Role::Admin)
        .await
        .unwrap();
    let item = app
        .service
        .change_role(uid(1), id, uid(1), Role::Member)
        .await
        .unwrap();
    assert_eq!(item.membership.role, Role::Member);
}

#[tokio::test]
async fn rule_06_re_adding_a_user_who_left_reactivates_them() {
    let app = app().await;
    let id = app.group(1, &[2]).await;
    app.service
        .remove_participant(uid(2), id, uid(2))
        .await
        .unwrap();
    assert!(app.service.conversation(uid(2), id).await.is_err());
    app.service
        .add_participants(uid(1), id, vec![uid(2)])
        .await
        .unwrap();
    let view = app.view(2, id).await;
    assert_eq!(view.membership.role, Role::Member);
    assert_eq!(
        view.details
            .participants
            .iter()
            .filter(|p| p.participant.user_id == uid(2))
            .count(),
        1
    );
}

// Rule 7 ------------------------------------------------------------------------------

#[tokio::test]
async fn rule_07_archived_conversations_are_read_only() {
    let app = app().await;
    let id = app.group(1, &[2]).await;
    let message = app.send_id(2, id, "before").await;
    app.service
        .update_conversation(
            uid(1),
            id,
            ConversationUpdate {
                name: None,
                is_archived: Some(true),
            },
        )
        .await
        .unwrap();
    let archived = |r: Result<_, ServiceError>| {
        assert_eq!(
            conflict(r.err().unwrap()),
            ConflictCode::ConversationArchived
        )
    };
    archived(
        app.service
            .send_message(uid(2), id, text("after"))
            .await
            .map(|_| ()),
    );
    archived(
        app.service
            .edit_message(uid(2), message, MessageContent::parse("x").unwrap())
            .await
            .map(|_| ()),
    );
    archived(
        app.service
            .add_reaction(uid(1), message, Emoji::parse("🎉").unwrap())
            .await
            .map(|_| ()),
    );
    archived(
        app.service
            .add_participants(uid(1), id, vec![uid(3)])
            .await
            .map(|_| ()),
    );
    // Reading and marking read still work.
    let page = app
        .service
        .history(uid(1), id, HistoryQuery::Latest(limit(10)))
        .await
        .unwrap();
    assert!(page.items.iter().any(|m| m.message.id == message));
    let state = app.service.mark_read(uid(1), id, None).await.unwrap();
    assert_eq!(state.unread_count, 0);
}

// Rule 8 ------------------------------------------------------------------------------

#[tokio::test]
async fn rule_08_system_messages_record_every_change() {
    let app = app().await;
    let id = app.group(1, &[2, 3]).await;
    app.service
        .add_participants(uid(1), id, vec![uid(4), uid(5)])
        .await
        .unwrap();
    app.service
        .remove_participant(uid(1), id, uid(5))
        .await
        .unwrap();
    app.service
        .remove_participant(uid(4), id, uid(4))
        .await
        .unwrap();
    app.service
        .change_role(uid(1), id, uid(2), Role::Admin)
        .await
        .unwrap();
    app.service
        .update_conversation(
            uid(1),
            id,
            ConversationUpdate {
                name: Some(GroupName::parse("New").unwrap()),
                is_archived: None,
            },
        )
        .await
        .unwrap();
    app.service
        .update_conversation(
            uid(1),
            id,
            ConversationUpdate {
                name: None,
                is_archived: Some(true),
            },
        )
        .await
        .unwrap();
    app.service
        .update_conversation(
            uid(1),
            id,
            ConversationUpdate {
                name: None,
                is_archived: Some(false),
            },
        )
        .await
        .unwrap();
    let page = app
        .service
        .history(uid(1), id, HistoryQuery::After(Seq::ZERO, limit(100)))
        .await
        .unwrap();
    let events: Vec<String> = page
        .items
        .iter()
        .map(|m| {
            assert!(m.message.is_system_message);
            assert_eq!(m.message.message_type, MessageType::System);
            let meta = m.message.media_metadata.clone().unwrap();
            let start = meta.find("\"event\":\"").unwrap() + 9;
            meta[start..].split('"').next().unwrap().to_owned()
        })
        .collect();
    assert_eq!(
        events,
        vec![
            "group_created",
            "participants_added",
            "participant_removed",
            "participant_left",
            "role_changed",
            "renamed",
            "archived",
            "unarchived"
        ]
    );
    let left = &page.items[3].message;
    assert_eq!(left.sender_id, uid(4), "the acting user is the sender");
    assert!(
        page.items[1]
            .message
            .media_metadata
            .as_deref()
            .unwrap()
            .contains("[4,5]")
    );
}

// Rule 9 ------------------------------------------------------------------------------

#[tokio::test]
async fn rule_09_send_validates_type_media_and_reply() {
    let app = app().await;
    let id = app.group(1, &[2]).await;
    let other = app.group(1, &[2]).await;
    let content = || MessageContent::parse("pic").unwrap();
    // IMAGE without a URL cannot even be built; with one it is sent.
    assert!(MessageBody::from_user(content(), MessageType::Image, None, None).is_err());
    let image = MessageBody::from_user(
        content(),
        MessageType::Image,
        Some(MediaUrl::parse("https://cdn.example.com/cat.png").unwrap()),
        Some(chat_domain::MediaMetadata::parse(r#"{"width":640}"#).unwrap()),
    )
    .unwrap();
    let sent = app
        .service
        .send_message(
            uid(1),
            id,
            SendMessage {
                body: image,
                reply_to_id: None,
                client_message_id: None,
            },
        )
        .await
        .unwrap()
        .view;
    assert_eq!(
        sent.message.media_url.as_deref(),
        Some("https://cdn.example.com/cat.png")
    );
    // Clients may not send SYSTEM.
    let system = MessageBody::system(content(), chat_domain::MediaMetadata::parse("{}").unwrap());
    let err = app
        .service
        .send_message(
            uid(1),
            id,
            SendMessage {
                body: system,
                reply_to_id: None,
                client_message_id: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(invalid_field(err), "message_type");
    // A reply must point at a live message of the same conversation.
    let elsewhere = app.send_id(1, other, "elsewhere").await;
    let deleted = app.send_id(1, id, "doomed").await;
    app.service.delete_message(uid(1), deleted).await.unwrap();
    for target in [elsewhere, deleted, MessageId::new()] {
        let mut reply = text("re");
        reply.reply_to_id = Some(target);
        let err = app
            .service
            .send_message(uid(2), id, reply)
            .await
            .unwrap_err();
        assert_eq!(invalid_field(err), "reply_to_id");
    }
    let mut reply = text("re");
    reply.reply_to_id = Some(sent.message.id);
    let answer = app
        .service
        .send_message(uid(2), id, reply)
        .await
        .unwrap()
        .view;
    assert_eq!(answer.message.reply_to_id, Some(sent.message.id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rule_09_seq_follows_commit_order_within_one_second() {
    let app = app().await;
    let id = app.group(1, &[2]).await;
    let tasks = (0..4).map(|t| {
        let service = app.service.clone();
        tokio::spawn(async move {
            for i in 0..25 {
                service
                    .send_message(uid(1 + t % 2), id, text(&format!("{t}-{i}")))
                    .await
                    .unwrap();
            }
        })
    });
    join_all(tasks).await;
    let page = app
        .service
        .history(uid(1), id, HistoryQuery::After(Seq::ZERO, limit(100)))
        .await
        .unwrap();
    let seqs: Vec<i64> = page.items.iter().map(|m| m.message.seq.get()).collect();
    assert_eq!(seqs, (1..=100).collect::<Vec<_>>());
    let rest = app
        .service
        .history(
            uid(1),
            id,
            HistoryQuery::After(Seq::new(100).unwrap(), limit(100)),
        )
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 1);
    // Each sender's own messages keep their order.
    let mine: Vec<&str> = page
        .items
        .iter()
        .chain(rest.items.iter())
        .map(|m| m.message.content.as_str())
        .filter(|c| c.starts_with("0-"))
        .collect();
    let expected: Vec<String> = (0..25).map(|i| format!("0-{i}")).collect();
    assert_eq!(mine, expected);
}

// Rule 10 -----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rule_10_idempotent_send_returns_the_original_once_even_when_racing() {
    let app = app().await;
    let id = app.group(1, &[2]).await;
    let calls = (0..20).map(|i| {
        let service = app.service.clone();
        tokio::spawn(async move {
            let mut request = text(&format!("attempt {i}"));
            request.client_message_id = Some(ClientMessageId::parse("retry-1").unwrap());
            service.send_message(uid(2), id, request).await.unwrap()
        })
    });
    let results: Vec<_> = join_all(calls)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let ids: HashSet<MessageId> = results.iter().map(|s| s.view.message.id).collect();
    assert_eq!(ids.len(), 1);
    assert_eq!(results.iter().filter(|s| s.created).count(), 1);
    let created_events = app
        .events
        .take()
        .await
        .into_iter()
        .filter(|d| matches!(d.event, ChatEvent::MessageCreated(_)))
        .count();
    assert_eq!(created_events, 1, "no second event");
    let page = app
        .service
        .history(uid(1), id, HistoryQuery::Latest(limit(100)))
        .await
        .unwrap();
    assert_eq!(
        page.items
            .iter()
            .filter(|m| !m.message.is_system_message)
            .count(),
        1
    );
}

// Rule 11 -----------------------------------------------------------------------------

#[tokio::test]
async fn rule_11_sending_marks_read_for_the_sender() {
    let app = app().await;
    let id = app.group(1, &[2]).await;
    app.send(2, id, "one").await;
    app.send(2, id, "two").await;
    assert_eq!(app.unread(1, id).await, 2);
    let mine = app.send(1, id, "three").await;
    let view = app.view(1, id).await;
    assert_eq!(view.unread_count, 0);
    assert_eq!(view.membership.last_read_seq, mine.message.seq);
    assert_eq!(app.unread(2, id).await, 1);
}

// Rule 12 -----------------------------------------------------------------------------

#[tokio::test]
async fn rule_12_only_the_sender_edits_live_non_system_messages() {
    let app = app().await;
    let id = app.group(1, &[2]).await;
    let message = app.send_id(2, id, "typo").await;
    let new = || MessageContent::parse("fixed 🛠️").unwrap();
    assert!(matches!(
        app.service.edit_message(uid(1), message, new()).await,
        Err(ServiceError::Forbidden(_))
    ));
    let edited = app
        .service
        .edit_message(uid(2), message, new())
        .await
        .unwrap();
    assert_eq!(edited.message.content, "fixed 🛠️");
    assert!(edited.message.edited_at.is_some());
    assert!(app.events.names().await.contains(&"message.updated"));
    let system = app
        .service
        .history(uid(1), id, HistoryQuery::After(Seq::ZERO, limit(1)))
        .await
        .unwrap()
        .items[0]
        .message
        .id;
    assert!(matches!(
        app.service.edit_message(uid(1), system, new()).await,
        Err(ServiceError::Forbidden(_))
    ));
    app.service.delete_message(uid(2), message).await.unwrap();
    assert_eq!(
        app.service
            .edit_message(uid(2), message, new())
            .await
            .unwrap_err(),
        ServiceError::NotFound
    );
}

// Rule 13 -----------------------------------------------------------------------------

#[tokio::test]
async fn rule_13_delete_by_sender_or_group_admin_and_deleted_messages_vanish() {
    let app = app().await;
    let id = app.group(1, &[2, 3]).await;
    let by_two = app.send_id(2, id, "two says").await;
    let by_three = app.send_id(3, id, "three says").await;
    app.service
        .add_reaction(uid(1), by_three, Emoji::parse("😂").unwrap())
        .await
        .unwrap();
    assert!(matches!(
        app.service.delete_message(uid(3), by_two).await,
        Err(ServiceError::Forbidden(_))
    ));
    app.service.delete_message(uid(2), by_two).await.unwrap();
    app.service.delete_message(uid(1), by_three).await.unwrap(); // admin
    assert_eq!(
        app.service
            .delete_message(uid(1), by_three)
            .await
            .unwrap_err(),
        ServiceError::NotFound
    );
    let page = app
        .service
        .history(uid(1), id, HistoryQuery::Latest(limit(10)))
        .await
        .unwrap();
    assert!(
        page.items
            .iter()
            .all(|m| m.message.id != by_two && m.message.id != by_three)
    );
    assert_eq!(
        app.unread(1, id).await,
        0,
        "deleted messages are not unread"
    );
    assert!(
        app.view(1, id)
            .await
            .last_message
            .unwrap()
            .message
            .is_system_message
    );
    assert_eq!(
        app.service.message(uid(1), by_three).await.unwrap_err(),
        ServiceError::NotFound
    );
    assert_eq!(
        app.service.receipts(uid(1), by_three).await.unwrap_err(),
        ServiceError::NotFound
    );
    assert_eq!(
        app.service
            .remove_reaction(uid(1), by_three, Emoji::parse("😂").unwrap())
            .await
            .unwrap_err(),
        ServiceError::NotFound
    );
    // In a DIRECT conversation only the sender deletes.
    let direct = app.service.open_direct(uid(1), uid(2)).await.unwrap().item;
    let theirs = app.send_id(2, direct.details.conversation.id, "mine").await;
    assert!(matches!(
        app.service.delete_message(uid(1), theirs).await,
        Err(ServiceError::Forbidden(_))
    ));
    let deleted_events: Vec<_> = app
        .events
        .take()
        .await
        .into_iter()
        .filter(|d| matches!(d.event, ChatEvent::MessageDeleted { .. }))
        .collect();
    assert_eq!(deleted_events.len(), 2);
}

// Rule 14 -----------------------------------------------------------------------------

#[tokio::test]
async fn rule_14_reactions_are_idempotent_distinct_and_ordered_by_first_use() {
    let app = app().await;
    let id = app.group(1, &[2]).await;
    let message = app.send_id(1, id, "🍱?").await;
    let add = |u: i64, e: &str| {
        let service = app.service.clone();
        let emoji = Emoji::parse(e).unwrap();
        async move { service.add_reaction(uid(u), message, emoji).await.unwrap() }
    };
    let remove = |u: i64, e: &str| {
        let service = app.service.clone();
        let emoji = Emoji::parse(e).unwrap();
        async move {
            service
                .remove_reaction(uid(u), message, emoji)
                .await
                .unwrap()
        }
    };
    add(2, "🍣").await;
    add(2, "🍺").await;
    add(2, "🍣").await;
    let after = add(1, "🍣").await;
    let summary: Vec<(&str, u32)> = after.iter().map(|r| (r.emoji.as_str(), r.count)).collect();
    assert_eq!(summary, vec![("🍣", 2), ("🍺", 1)]);
    assert_eq!(after[0].user_ids, vec![uid(2), uid(1)]);
    let names = app.events.names().await;
    assert_eq!(
        names.iter().filter(|n| **n == "reaction.added").count(),
        3,
        "no event for a repeat"
    );
    remove(2, "🍺").await;
    let after = remove(2, "🍺").await;
    assert_eq!(after.len(), 1);
    assert_eq!(app.events.names().await, vec!["reaction.removed"]);
}

// Rule 15 -----------------------------------------------------------------------------

#[tokio::test]
async fn rule_15_mark_read_moves_forward_records_receipts_and_counts_unread() {
    let app = app().await;
    let id = app.group(1, &[2, 3]).await;
    let first = app.send(1, id, "a").await;
    let second = app.send(3, id, "b").await;
    app.send(1, id, "c").await;
    assert_eq!(app.unread(2, id).await, 3);
    let state = app
        .service
        .mark_read(uid(2), id, Some(second.message.id))
        .await
        .unwrap();
    assert_eq!(
        (state.last_read_seq, state.unread_count),
        (second.message.seq, 1)
    );
    let names = app.events.names().await;
    assert!(names.contains(&"conversation.read"));
    let back = app
        .service
        .mark_read(uid(2), id, Some(first.message.id))
        .await
        .unwrap();
    assert_eq!(back.last_read_seq, second.message.seq, "never moves back");
    assert!(
        !app.events.names().await.contains(&"conversation.read"),
        "no event when it does not move"
    );
    let receipts = app
        .service
        .receipts(uid(1), first.message.id)
        .await
        .unwrap();
    assert!(receipts.iter().any(|r| r.user_id == uid(2)));
    let all = app.service.mark_read(uid(2), id, None).await.unwrap();
    assert_eq!(all.unread_count, 0);
    let other = app.group(1, &[2]).await;
    let foreign = app.send_id(1, other, "elsewhere").await;
    let err = app
        .service
        .mark_read(uid(2), id, Some(foreign))
        .await
        .unwrap_err();
    assert_eq!(invalid_field(err), "up_to_message_id");
}

// Rule 16 -----------------------------------------------------------------------------

#[tokio::test]
async fn rule_16_muted_conversations_leave_the_total_badge() {
    let app = app().await;
    let loud = app.group(1, &[2]).await;
    let quiet = app.group(1, &[2]).await;
    app.send(1, loud, "x").await;
    app.send(1, quiet, "y").await;
    let item = app.service.set_muted(uid(2), quiet, true).await.unwrap();
    assert!(item.membership.is_muted);
    let badge = app.service.unread(uid(2)).await.unwrap();
    assert_eq!(badge.total, 1);
    assert_eq!(badge.conversations.len(), 2);
    assert!(
        !app.view(1, quiet).await.membership.is_muted,
        "mute is per participant"
    );
}

// Rule 17 -----------------------------------------------------------------------------

#[tokio::test]
async fn rule_17_inbox_is_most_recent_first_paginated_and_filterable() {
    let app = app().await;
    let a = app.group(1, &[2]).await;
    let b = app.group(1, &[2]).await;
    let c = app.group(1, &[2]).await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    app.send(2, a, "bump a").await;
    app.service
        .update_conversation(
            uid(1),
            b,
            ConversationUpdate {
                name: None,
                is_archived: Some(true),
            },
        )
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    app.send(2, c, "bump c").await;
    let page = |after, archived| {
        let service = app.service.clone();
        async move {
            service
                .list_conversations(
                    uid(1),
                    InboxQuery {
                        limit: limit(1),
                        after,
                        archived,
                    },
                )
                .await
                .unwrap()
        }
    };
    let first = page(None, ArchivedFilter::Active).await;
    assert_eq!(first.items[0].details.conversation.id, c);
    assert_eq!(first.items[0].unread_count, 1);
    assert_eq!(
        first.items[0]
            .last_message
            .as_ref()
            .unwrap()
            .message
            .content,
        "bump c"
    );
    let second = page(first.next_cursor, ArchivedFilter::Active).await;
    assert_eq!(second.items[0].details.conversation.id, a);
    assert!(second.next_cursor.is_none());
    let archived = page(None, ArchivedFilter::Archived).await;
    assert_eq!(archived.items[0].details.conversation.id, b);
}

// Rule 18 -----------------------------------------------------------------------------

#[tokio::test]
async fn rule_18_history_pages_by_seq_newest_first_or_forward() {
    let app = app().await;
    let id = app.group(1, &[2]).await;
    for i in 0..120 {
        app.send(1 + i % 2, id, &format!("m{i}")).await;
    }
    let latest = app
        .service
        .history(uid(1), id, HistoryQuery::Latest(limit(50)))
        .await
        .unwrap();
    assert_eq!(latest.items.len(), 50);
    assert_eq!(latest.items[0].message.seq.get(), 121);
    assert!(latest.has_more);
    let oldest_seen = latest.items.last().unwrap().message.seq;
    let older = app
        .service
        .history(uid(1), id, HistoryQuery::Before(oldest_seen, limit(100)))
        .await
        .unwrap();
    assert_eq!(older.items.len(), 71);
    assert!(!older.has_more);
    assert_eq!(older.items.last().unwrap().message.seq.get(), 1);
    let forward = app
        .service
        .history(
            uid(1),
            id,
            HistoryQuery::After(Seq::new(100).unwrap(), limit(10)),
        )
        .await
        .unwrap();
    let seqs: Vec<i64> = forward.items.iter().map(|m| m.message.seq.get()).collect();
    assert_eq!(seqs, (101..=110).collect::<Vec<_>>());
    assert!(forward.has_more);
    // Reactions come with the page.
    let target = latest.items[0].message.id;
    app.service
        .add_reaction(uid(2), target, Emoji::parse("🔥").unwrap())
        .await
        .unwrap();
    let again = app
        .service
        .history(uid(1), id, HistoryQuery::Latest(limit(1)))
        .await
        .unwrap();
    assert_eq!(again.items[0].reactions[0].emoji, "🔥");
}

// Typing and limits ---------------------------------------------------------------------

#[tokio::test]
async fn typing_reaches_the_others_only_and_is_not_stored() {
    let app = app().await;
    let id = app.group(1, &[2, 3]).await;
    app.service.typing(uid(1), id, true).await.unwrap();
    let deliveries = app.events.take().await;
    assert_eq!(deliveries.len(), 1);
    let recipients: HashSet<i64> = deliveries[0].recipients.iter().map(|u| u.get()).collect();
    assert_eq!(recipients, HashSet::from([2, 3]));
    let page = app
        .service
        .history(uid(1), id, HistoryQuery::Latest(limit(10)))
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1, "only the creation announcement");
}

/// The recipients of the one typing event delivered since the last take.
async fn typing_recipients(app: &support::TestApp) -> HashSet<i64> {
    let deliveries = app.events.take().await;
    let typing: Vec<_> = deliveries
        .into_iter()
        .filter(|d| d.event.name() == "typing")
        .collect();
    assert_eq!(typing.len(), 1);
    typing[0].recipients.iter().map(|u| u.get()).collect()
}

/// Typing membership comes from a short-lived cache, but a change made through this
/// service is seen at once: a removed participant neither types nor hears typing, an
/// added one does both, and a leaver too.
#[tokio::test]
async fn typing_follows_membership_changes_at_once() {
    let app = app().await;
    let id = app.group(1, &[2, 3]).await;
    app.service.typing(uid(1), id, true).await.unwrap();
    assert_eq!(typing_recipients(&app).await, HashSet::from([2, 3]));
    app.service
        .remove_participant(uid(1), id, uid(3))
        .await
        .unwrap();
    app.users.upsert_user(uid(4), None).await.unwrap();
    app.service
        .add_participants(uid(1), id, vec![uid(4)])
        .await
        .unwrap();
    app.events.take().await;
    app.service.typing(uid(1), id, true).await.unwrap();
    assert_eq!(typing_recipients(&app).await, HashSet::from([2, 4]));
    assert_eq!(
        app.service.typing(uid(3), id, true).await.unwrap_err(),
        ServiceError::NotFound
    );
    app.service.typing(uid(4), id, false).await.unwrap();
    assert_eq!(typing_recipients(&app).await, HashSet::from([1, 2]));
    app.service
        .remove_participant(uid(2), id, uid(2))
        .await
        .unwrap();
    app.events.take().await;
    assert_eq!(
        app.service.typing(uid(2), id, true).await.unwrap_err(),
        ServiceError::NotFound
    );
}

#[tokio::test]
async fn sending_too_fast_is_rate_limited() {
    let limits = chat_service::Limits {
        sends_per_second: std::num::NonZeroU32::new(1).unwrap(),
        send_burst: std::num::NonZeroU32::new(3).unwrap(),
        ..Default::default()
    };
    let app = support::app_with(limits).await;
    let id = app.group(1, &[2]).await;
    for i in 0..3 {
        app.send(1, id, &format!("{i}")).await;
    }
    let err = app
        .service
        .send_message(uid(1), id, text("one too many"))
        .await
        .unwrap_err();
    assert!(matches!(err, ServiceError::RateLimited { retry_after } if retry_after.as_secs() >= 1));
    // Another user is not affected.
    app.send(2, id, "me too").await;
}
