//! The contract cases. Each takes fresh, empty ports and checks one part of the port
//! contracts written on the traits of `chat-ports`.

use std::collections::HashSet;

use chat_domain::{ConversationId, Emoji, GroupName, MessageContent, PostingId, Role, Seq, UserId};
use chat_ports::{ArchivedFilter, HistoryQuery, InboxQuery, PageLimit, StoreConflict, StoreError};
use futures::future::join_all;

use crate::Ports;
use crate::fixtures::{at, new_message, ring, system, text, user, with_client_id};

fn limit(n: i64) -> PageLimit {
    PageLimit::new(n).unwrap()
}

fn seqs(items: &[chat_domain::MessageView]) -> Vec<i64> {
    items.iter().map(|v| v.message.seq.get()).collect()
}

pub async fn direct_conversation_is_found_in_either_direction(ports: Ports) {
    ports.users_up_to(3).await;
    let chat_ports::DirectConversation {
        details: first,
        created,
    } = ports
        .conversations
        .get_or_create_direct(ConversationId::new(), user(1), user(2), at(0))
        .await
        .unwrap();
    assert!(created);
    assert_eq!(
        first.conversation.kind,
        chat_domain::ConversationType::Direct
    );
    let chat_ports::DirectConversation {
        details: again,
        created: created_again,
    } = ports
        .conversations
        .get_or_create_direct(ConversationId::new(), user(2), user(1), at(5))
        .await
        .unwrap();
    assert!(!created_again);
    assert_eq!(again.conversation.id, first.conversation.id);
    let mut members = again.active_user_ids();
    members.sort();
    assert_eq!(members, vec![user(1), user(2)]);
    let chat_ports::DirectConversation {
        details: other,
        created: created_other,
    } = ports
        .conversations
        .get_or_create_direct(ConversationId::new(), user(1), user(3), at(6))
        .await
        .unwrap();
    assert!(created_other);
    assert_ne!(other.conversation.id, first.conversation.id);
}

pub async fn direct_get_or_create_race_creates_exactly_one(ports: Ports) {
    ports.users_up_to(2).await;
    let calls = (0..20).map(|i| {
        let ports = ports.clone();
        tokio::spawn(async move {
            let (a, b) = if i % 2 == 0 { (1, 2) } else { (2, 1) };
            ports
                .conversations
                .get_or_create_direct(ConversationId::new(), user(a), user(b), at(i))
                .await
                .unwrap()
        })
    });
    let results: Vec<_> = join_all(calls)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let ids: HashSet<ConversationId> = results.iter().map(|d| d.details.conversation.id).collect();
    assert_eq!(ids.len(), 1, "one conversation for the pair");
    assert_eq!(results.iter().filter(|d| d.created).count(), 1);
}

pub async fn direct_with_oneself_is_its_own_conversation(ports: Ports) {
    ports.users_up_to(2).await;
    let chat_ports::DirectConversation {
        details: notes,
        created,
    } = ports
        .conversations
        .get_or_create_direct(ConversationId::new(), user(1), user(1), at(0))
        .await
        .unwrap();
    assert!(created);
    assert_eq!(notes.active_user_ids(), vec![user(1)]);
    let chat_ports::DirectConversation {
        details: again,
        created: _,
    } = ports
        .conversations
        .get_or_create_direct(ConversationId::new(), user(1), user(1), at(1))
        .await
        .unwrap();
    assert_eq!(again.conversation.id, notes.conversation.id);
    let chat_ports::DirectConversation {
        details: pair,
        created: _,
    } = ports
        .conversations
        .get_or_create_direct(ConversationId::new(), user(1), user(2), at(2))
        .await
        .unwrap();
    assert_ne!(pair.conversation.id, notes.conversation.id);
}

pub async fn group_creation_stores_roles_and_announcement(ports: Ports) {
    ports.users_up_to(3).await;
    let group = ports.group(1, &[2, 3], at(0)).await;
    assert_eq!(group.conversation.name.as_deref(), Some("Crew 🚀"));
    assert_eq!(group.participant(user(1)).unwrap().role, Role::Admin);
    assert_eq!(group.participant(user(2)).unwrap().role, Role::Member);
    assert_eq!(group.participant(user(3)).unwrap().role, Role::Member);
    let names: Vec<Option<String>> = group
        .participants
        .iter()
        .map(|p| p.display_name.clone())
        .collect();
    assert!(names.contains(&Some("User 2".to_owned())));
    let page = ports
        .messages
        .history(group.conversation.id, HistoryQuery::Latest(limit(10)))
        .await
        .unwrap();
    assert_eq!(seqs(&page.items), vec![1]);
    assert!(page.items[0].message.is_system_message);
    assert_eq!(
        page.items[0].message.media_metadata.as_deref(),
        Some(r#"{"event":"test"}"#)
    );
    let stored = ports
        .conversations
        .conversation_details(group.conversation.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.conversation.last_message_at, Some(at(0)));
    assert!(
        ports
            .conversations
            .conversation_details(ConversationId::new())
            .await
            .unwrap()
            .is_none()
    );
}

pub async fn append_assigns_consecutive_seq_in_commit_order(ports: Ports) {
    ports.users_up_to(2).await;
    let group = ports.group(1, &[2], at(0)).await;
    let id = group.conversation.id;
    // All within the same second: order must still be commit order.
    for i in 0..200 {
        let sender = if i % 3 == 0 { 2 } else { 1 };
        let appended = ports.say(id, sender, &format!("msg {i} 🎉"), at(1)).await;
        assert!(appended.created);
        assert_eq!(appended.view.message.seq.get(), i + 2);
        assert_eq!(appended.view.message.content, format!("msg {i} 🎉"));
    }
    let mut forward = Vec::new();
    let mut after = Seq::ZERO;
    loop {
        let page = ports
            .messages
            .history(id, HistoryQuery::After(after, limit(100)))
            .await
            .unwrap();
        forward.extend(page.items.iter().map(|v| v.message.content.clone()));
        after = page.items.last().unwrap().message.seq;
        if !page.has_more {
            break;
        }
    }
    let expected: Vec<String> = std::iter::once("created".to_owned())
        .chain((0..200).map(|i| format!("msg {i} 🎉")))
        .collect();
    assert_eq!(forward, expected);
    let details = ports
        .conversations
        .conversation_details(id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(details.conversation.last_message_at, Some(at(1)));
}

pub async fn concurrent_appends_get_gap_free_unique_seqs(ports: Ports) {
    ports.users_up_to(4).await;
    let group = ports.group(1, &[2, 3, 4], at(0)).await;
    let id = group.conversation.id;
    let tasks = (1..=4).map(|sender| {
        let ports = ports.clone();
        tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..25 {
                let appended = ports.say(id, sender, &format!("{sender}/{i}"), at(1)).await;
                seqs.push(appended.view.message.seq.get());
            }
            seqs
        })
    });
    let mut all: Vec<i64> = join_all(tasks)
        .await
        .into_iter()
        .flat_map(Result::unwrap)
        .collect();
    all.sort_unstable();
    assert_eq!(all, (2..=101).collect::<Vec<i64>>());
}

pub async fn append_is_idempotent_per_sender_and_client_message_id(ports: Ports) {
    ports.users_up_to(2).await;
    let group = ports.group(1, &[2], at(0)).await;
    let id = group.conversation.id;
    let first = ports
        .messages
        .append_message(with_client_id(
            new_message(id, user(1), text("once"), at(1)),
            "key-1",
        ))
        .await
        .unwrap();
    assert!(first.created);
    let again = ports
        .messages
        .append_message(with_client_id(
            new_message(id, user(1), text("twice?"), at(2)),
            "key-1",
        ))
        .await
        .unwrap();
    assert!(!again.created);
    assert_eq!(again.view.message.id, first.view.message.id);
    assert_eq!(again.view.message.content, "once");
    assert_eq!(
        again.view.message.client_message_id.as_deref(),
        Some("key-1")
    );
    // Another sender may use the same key.
    let other = ports
        .messages
        .append_message(with_client_id(
            new_message(id, user(2), text("mine"), at(3)),
            "key-1",
        ))
        .await
        .unwrap();
    assert!(other.created);
    let page = ports
        .messages
        .history(id, HistoryQuery::Latest(limit(10)))
        .await
        .unwrap();
    assert_eq!(seqs(&page.items), vec![3, 2, 1]);
}

pub async fn idempotent_append_race_stores_one_message(ports: Ports) {
    ports.users_up_to(1).await;
    let group = ports.group(1, &[], at(0)).await;
    let id = group.conversation.id;
    let calls = (0..20).map(|i| {
        let ports = ports.clone();
        tokio::spawn(async move {
            ports
                .messages
                .append_message(with_client_id(
                    new_message(id, user(1), text(&format!("try {i}")), at(1)),
                    "same",
                ))
                .await
                .unwrap()
        })
    });
    let results: Vec<_> = join_all(calls)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let ids: HashSet<_> = results.iter().map(|a| a.view.message.id).collect();
    assert_eq!(ids.len(), 1);
    assert_eq!(results.iter().filter(|a| a.created).count(), 1);
    let page = ports
        .messages
        .history(id, HistoryQuery::Latest(limit(100)))
        .await
        .unwrap();
    assert_eq!(page.items.len(), 2, "the announcement and one message");
}

pub async fn append_refuses_archived_and_unknown_conversations(ports: Ports) {
    ports.users_up_to(2).await;
    let group = ports.group(1, &[2], at(0)).await;
    let id = group.conversation.id;
    ports
        .conversations
        .archive_conversation(id, user(1), at(1), None)
        .await
        .unwrap();
    let refused = ports
        .messages
        .append_message(new_message(id, user(2), text("hello?"), at(2)))
        .await;
    assert_eq!(
        refused.unwrap_err(),
        StoreError::Conflict(StoreConflict::ConversationArchived)
    );
    let unknown = ports
        .messages
        .append_message(new_message(
            ConversationId::new(),
            user(2),
            text("x"),
            at(2),
        ))
        .await;
    assert_eq!(unknown.unwrap_err(), StoreError::NotFound);
    ports
        .conversations
        .unarchive_conversation(id, user(1), None)
        .await
        .unwrap();
    assert!(ports.say(id, 2, "back", at(4)).await.created);
}

pub async fn sending_marks_read_for_the_sender(ports: Ports) {
    ports.users_up_to(2).await;
    let group = ports.group(1, &[2], at(0)).await;
    let id = group.conversation.id;
    let from_two = ports.say(id, 2, "hi", at(1)).await;
    let item = ports
        .read_state
        .inbox_item(id, user(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(item.unread_count, 1);
    let reply = ports.say(id, 1, "hello", at(2)).await;
    let item = ports
        .read_state
        .inbox_item(id, user(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(item.unread_count, 0);
    assert_eq!(item.membership.last_read_seq, reply.view.message.seq);
    assert_eq!(item.membership.last_read_at, Some(at(2)));
    // Sending passed user 2's message: a receipt for user 1.
    let receipts = ports
        .messages
        .receipts(from_two.view.message.id)
        .await
        .unwrap();
    assert_eq!(receipts.len(), 1);
    assert_eq!(receipts[0].user_id, user(1));
    let theirs = ports
        .read_state
        .inbox_item(id, user(2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(theirs.unread_count, 1);
}

pub async fn history_pages_by_seq_and_skips_deleted(ports: Ports) {
    ports.users_up_to(1).await;
    let group = ports.group(1, &[], at(0)).await;
    let id = group.conversation.id;
    let mut ids = Vec::new();
    for i in 2..=11 {
        ids.push(
            ports
                .say(id, 1, &format!("m{i}"), at(i))
                .await
                .view
                .message
                .id,
        );
    }
    // seq 6 (ids[4]) is deleted.
    ports
        .messages
        .delete_message(ids[4], user(1), at(20))
        .await
        .unwrap();
    let newest = ports
        .messages
        .history(id, HistoryQuery::Latest(limit(3)))
        .await
        .unwrap();
    assert_eq!(seqs(&newest.items), vec![11, 10, 9]);
    assert!(newest.has_more);
    let older = ports
        .messages
        .history(id, HistoryQuery::Before(Seq::new(9).unwrap(), limit(3)))
        .await
        .unwrap();
    assert_eq!(seqs(&older.items), vec![8, 7, 5]);
    assert!(older.has_more);
    let oldest = ports
        .messages
        .history(id, HistoryQuery::Before(Seq::new(3).unwrap(), limit(3)))
        .await
        .unwrap();
    assert_eq!(seqs(&oldest.items), vec![2, 1]);
    assert!(!oldest.has_more);
    let forward = ports
        .messages
        .history(id, HistoryQuery::After(Seq::new(4).unwrap(), limit(3)))
        .await
        .unwrap();
    assert_eq!(seqs(&forward.items), vec![5, 7, 8]);
    assert!(forward.has_more);
    let tail = ports
        .messages
        .history(id, HistoryQuery::After(Seq::new(9).unwrap(), limit(5)))
        .await
        .unwrap();
    assert_eq!(seqs(&tail.items), vec![10, 11]);
    assert!(!tail.has_more);
    let nothing = ports
        .messages
        .history(id, HistoryQuery::After(Seq::new(11).unwrap(), limit(5)))
        .await
        .unwrap();
    assert!(nothing.items.is_empty() && !nothing.has_more);
}

pub async fn edit_and_delete_only_touch_live_messages(ports: Ports) {
    ports.users_up_to(1).await;
    let group = ports.group(1, &[], at(0)).await;
    let id = group.conversation.id;
    let sent = ports.say(id, 1, "draft", at(1)).await.view.message;
    let edited = ports
        .messages
        .edit_message(
            sent.id,
            user(1),
            MessageContent::parse("final ✅").unwrap(),
            at(2),
        )
        .await
        .unwrap()
        .view;
    assert_eq!(edited.message.content, "final ✅");
    assert_eq!(edited.message.edited_at, Some(at(2)));
    assert_eq!(edited.message.seq, sent.seq);
    let deleted = ports
        .messages
        .delete_message(sent.id, user(1), at(3))
        .await
        .unwrap()
        .message;
    assert_eq!(deleted.id, sent.id);
    assert_eq!(deleted.seq, sent.seq);
    let found = ports.messages.find_message(sent.id).await.unwrap().unwrap();
    assert_eq!(found.message.deleted_at, Some(at(3)));
    assert_eq!(
        ports
            .messages
            .delete_message(sent.id, user(1), at(4))
            .await
            .unwrap_err(),
        StoreError::NotFound
    );
    assert_eq!(
        ports
            .messages
            .edit_message(
                sent.id,
                user(1),
                MessageContent::parse("again").unwrap(),
                at(4)
            )
            .await
            .unwrap_err(),
        StoreError::NotFound
    );
    assert!(
        ports
            .messages
            .find_message(chat_domain::MessageId::new())
            .await
            .unwrap()
            .is_none()
    );
}

pub async fn reactions_are_idempotent_and_distinct_per_emoji(ports: Ports) {
    ports.users_up_to(2).await;
    let group = ports.group(1, &[2], at(0)).await;
    let message = ports
        .say(group.conversation.id, 1, "lunch?", at(1))
        .await
        .view
        .message
        .id;
    let clock = std::sync::atomic::AtomicI64::new(2);
    let add = |u: i64, e: &str| {
        let ports = ports.clone();
        let emoji = Emoji::parse(e).unwrap();
        let when = at(clock.fetch_add(1, std::sync::atomic::Ordering::SeqCst));
        async move {
            ports
                .messages
                .add_reaction(message, user(u), emoji, when)
                .await
                .unwrap()
        }
    };
    let remove = |u: i64, e: &str| {
        let ports = ports.clone();
        let emoji = Emoji::parse(e).unwrap();
        async move {
            ports
                .messages
                .remove_reaction(message, user(u), emoji)
                .await
                .unwrap()
        }
    };
    assert!(add(1, "🍣").await.changed);
    assert!(
        add(1, "🍺").await.changed,
        "a different emoji is a different reaction"
    );
    assert!(!add(1, "🍣").await.changed, "adding twice changes nothing");
    assert!(add(2, "🍣").await.changed);
    assert!(add(2, "👍🏿").await.changed);
    let last = add(2, "👍").await;
    assert!(last.changed, "skin tones are different emoji");
    let summary: Vec<(String, u32, Vec<UserId>)> = last
        .reactions
        .iter()
        .map(|r| (r.emoji.clone(), r.count, r.user_ids.clone()))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("🍣".to_owned(), 2, vec![user(1), user(2)]),
            ("🍺".to_owned(), 1, vec![user(1)]),
            ("👍🏿".to_owned(), 1, vec![user(2)]),
            ("👍".to_owned(), 1, vec![user(2)]),
        ]
    );
    let removed = remove(1, "🍣").await;
    assert!(removed.changed);
    assert!(
        !remove(1, "🍣").await.changed,
        "removing twice changes nothing"
    );
    // Order of first use among the reactions that remain: 🍺 (user 1) now precedes 🍣,
    // whose first remaining use is user 2's.
    let order: Vec<&str> = removed.reactions.iter().map(|r| r.emoji.as_str()).collect();
    assert_eq!(order, vec!["🍺", "🍣", "👍🏿", "👍"]);
    assert_eq!(removed.reactions[1].user_ids, vec![user(2)]);
    let view = ports.messages.find_message(message).await.unwrap().unwrap();
    assert_eq!(view.reactions, removed.reactions);
    let page = ports
        .messages
        .history(group.conversation.id, HistoryQuery::Latest(limit(1)))
        .await
        .unwrap();
    assert_eq!(page.items[0].reactions, removed.reactions);
}

pub async fn reactions_on_deleted_messages_are_not_found(ports: Ports) {
    ports.users_up_to(1).await;
    let group = ports.group(1, &[], at(0)).await;
    let message = ports
        .say(group.conversation.id, 1, "gone soon", at(1))
        .await
        .view
        .message
        .id;
    ports
        .messages
        .delete_message(message, user(1), at(2))
        .await
        .unwrap();
    let result = ports
        .messages
        .add_reaction(message, user(1), Emoji::parse("👀").unwrap(), at(3))
        .await;
    assert_eq!(result.unwrap_err(), StoreError::NotFound);
}

/// The `n`th of 80 distinct one-code-point emoji (the Emoticons block).
fn nth_emoji(n: u32) -> Emoji {
    let c = char::from_u32(0x1F600 + n).unwrap();
    Emoji::parse(&c.to_string()).unwrap()
}

pub async fn reactions_are_capped_per_message_and_per_user_even_when_racing(ports: Ports) {
    use chat_domain::{
        MAX_DISTINCT_EMOJI_PER_MESSAGE as DISTINCT, MAX_REACTIONS_PER_USER_PER_MESSAGE as PER_USER,
        ReactionCap,
    };
    assert_eq!((DISTINCT, PER_USER), (50, 20));
    ports.users_up_to(6).await;
    let group = ports.group(1, &[2, 3, 4, 5, 6], at(0)).await;
    let message = ports
        .say(group.conversation.id, 1, "react!", at(1))
        .await
        .view
        .message
        .id;
    let add = |u: i64, n: u32| {
        let ports = ports.clone();
        async move {
            ports
                .messages
                .add_reaction(message, user(u), nth_emoji(n), at(2))
                .await
        }
    };
    let refused = |cap| Err(StoreError::Conflict(StoreConflict::ReactionCap(cap)));
    // Per user: 20 reactions, then the 21st is refused; re-adding one is still a no-op.
    for n in 0..20 {
        assert!(add(1, n).await.unwrap().changed, "{n}");
    }
    assert_eq!(
        add(1, 20).await.map(|c| c.changed),
        refused(ReactionCap::PerUser)
    );
    assert!(!add(1, 0).await.unwrap().changed);
    // Distinct emoji: users 2 and 3 bring the message to 49, then to 50.
    for n in 20..40 {
        assert!(add(2, n).await.unwrap().changed, "{n}");
    }
    for n in 40..49 {
        assert!(add(3, n).await.unwrap().changed, "{n}");
    }
    // At 49, several new emoji race: exactly one gets in.
    let racing = join_all((60..66).map(|n| add(4, n))).await;
    let passed = racing.iter().filter(|r| r.is_ok()).count();
    assert_eq!(passed, 1, "{racing:?}");
    for result in racing.into_iter().filter(Result::is_err) {
        assert_eq!(
            result.map(|c| c.changed),
            refused(ReactionCap::DistinctEmoji)
        );
    }
    assert_eq!(
        add(5, 70).await.map(|c| c.changed),
        refused(ReactionCap::DistinctEmoji)
    );
    // An emoji already there may still be added by anyone under their own cap.
    let joined = add(5, 0).await.unwrap();
    assert!(joined.changed);
    assert_eq!(joined.reactions.len(), DISTINCT);
    // Per user, racing: user 6 at 19 reactions adds three existing emoji at once.
    for n in 20..39 {
        assert!(add(6, n).await.unwrap().changed, "{n}");
    }
    let racing = join_all((40..43).map(|n| add(6, n))).await;
    assert_eq!(racing.iter().filter(|r| r.is_ok()).count(), 1, "{racing:?}");
    let view = ports.messages.find_message(message).await.unwrap().unwrap();
    assert_eq!(view.reactions.len(), DISTINCT);
    let mine = view
        .reactions
        .iter()
        .filter(|r| r.user_ids.contains(&user(6)))
        .count();
    assert_eq!(mine, PER_USER);
}

pub async fn mark_read_moves_forward_only_and_records_receipts(ports: Ports) {
    ports.users_up_to(3).await;
    let group = ports.group(1, &[2, 3], at(0)).await;
    let id = group.conversation.id;
    let m2 = ports.say(id, 1, "one", at(1)).await.view.message;
    let m3 = ports.say(id, 3, "two", at(2)).await.view.message;
    let m4 = ports.say(id, 1, "three", at(3)).await.view.message;
    let state = ports
        .read_state
        .mark_read(id, user(2), Some(m3.seq), at(10))
        .await
        .unwrap();
    assert!(state.moved);
    assert_eq!(state.last_read_seq, m3.seq);
    assert_eq!(state.last_read_at, Some(at(10)));
    assert_eq!(state.unread_count, 1);
    let back = ports
        .read_state
        .mark_read(id, user(2), Some(m2.seq), at(11))
        .await
        .unwrap();
    assert!(!back.moved, "the marker never moves back");
    assert_eq!(back.last_read_seq, m3.seq);
    assert_eq!(back.last_read_at, Some(at(10)));
    let receipts = ports.messages.receipts(m2.id).await.unwrap();
    let readers: Vec<UserId> = receipts.iter().map(|r| r.user_id).collect();
    assert!(readers.contains(&user(2)));
    assert!(readers.contains(&user(3)), "user 3 passed it by sending");
    assert!(
        ports
            .messages
            .receipts(m4.id)
            .await
            .unwrap()
            .iter()
            .all(|r| r.user_id != user(2))
    );
    let newest = ports
        .read_state
        .mark_read(id, user(2), None, at(12))
        .await
        .unwrap();
    assert_eq!(newest.last_read_seq, m4.seq);
    assert_eq!(newest.unread_count, 0);
    let r4 = ports.messages.receipts(m4.id).await.unwrap();
    assert_eq!(r4.iter().filter(|r| r.user_id == user(2)).count(), 1);
    assert_eq!(
        r4.iter().find(|r| r.user_id == user(2)).unwrap().read_at,
        at(12)
    );
    assert_eq!(
        ports
            .read_state
            .mark_read(id, user(9), None, at(13))
            .await
            .unwrap_err(),
        StoreError::NotFound
    );
}

pub async fn unread_counts_skip_own_deleted_and_system_messages(ports: Ports) {
    ports.users_up_to(2).await;
    let group = ports.group(1, &[2], at(0)).await;
    let id = group.conversation.id;
    ports.say(id, 1, "a", at(1)).await;
    let doomed = ports.say(id, 1, "b", at(2)).await.view.message.id;
    ports.say(id, 1, "c", at(3)).await;
    ports.say(id, 2, "mine", at(4)).await;
    ports
        .messages
        .append_message(new_message(id, user(1), system("an announcement"), at(5)))
        .await
        .unwrap();
    let item = ports
        .read_state
        .inbox_item(id, user(2))
        .await
        .unwrap()
        .unwrap();
    // user 2's own message moved their marker past a, b, c.
    assert_eq!(item.unread_count, 0);
    ports.say(id, 1, "d", at(6)).await;
    let doomed_later = ports.say(id, 1, "e", at(7)).await.view.message.id;
    ports
        .messages
        .delete_message(doomed, user(1), at(8))
        .await
        .unwrap();
    ports
        .messages
        .delete_message(doomed_later, user(1), at(8))
        .await
        .unwrap();
    let item = ports
        .read_state
        .inbox_item(id, user(2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        item.unread_count, 1,
        "only d: e is deleted, the announcement is SYSTEM"
    );
    let badge = ports.read_state.unread_summary(user(2)).await.unwrap();
    assert_eq!(badge.total, 1);
    assert_eq!(badge.conversations.len(), 1);
    assert_eq!(badge.conversations[0].conversation_id, id);
    assert_eq!(
        item.last_message.unwrap().message.content,
        "d",
        "the newest live message"
    );
}

pub async fn muted_conversations_leave_the_badge_total(ports: Ports) {
    ports.users_up_to(2).await;
    let loud = ports.group(1, &[2], at(0)).await.conversation.id;
    let quiet = ports.group(1, &[2], at(0)).await.conversation.id;
    ports.say(loud, 1, "x", at(1)).await;
    ports.say(quiet, 1, "y", at(1)).await;
    ports.say(quiet, 1, "z", at(2)).await;
    let muted = ports
        .read_state
        .set_muted(quiet, user(2), true)
        .await
        .unwrap();
    assert!(muted.is_muted);
    let badge = ports.read_state.unread_summary(user(2)).await.unwrap();
    assert_eq!(badge.total, 1);
    let quiet_entry = badge
        .conversations
        .iter()
        .find(|c| c.conversation_id == quiet)
        .unwrap();
    assert_eq!((quiet_entry.unread_count, quiet_entry.is_muted), (2, true));
    ports
        .read_state
        .set_muted(quiet, user(2), false)
        .await
        .unwrap();
    assert_eq!(
        ports
            .read_state
            .unread_summary(user(2))
            .await
            .unwrap()
            .total,
        3
    );
    assert_eq!(
        ports
            .read_state
            .set_muted(quiet, user(7), true)
            .await
            .unwrap_err(),
        StoreError::NotFound
    );
}

pub async fn inbox_orders_by_activity_and_paginates(ports: Ports) {
    ports.users_up_to(2).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(ports.group(1, &[2], at(i)).await.conversation.id);
    }
    // Activity: ids[1] newest (message at 100), then ids[4] (created 4 / announcement),
    // ids[3], ids[2], ids[0].
    ports.say(ids[1], 2, "bump", at(100)).await;
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = ports
            .read_state
            .inbox(
                user(1),
                InboxQuery {
                    limit: limit(2),
                    after,
                    archived: ArchivedFilter::Active,
                },
            )
            .await
            .unwrap();
        assert!(page.items.len() <= 2);
        seen.extend(page.items.iter().map(|i| i.details.conversation.id));
        match page.next_cursor {
            Some(cursor) => after = Some(cursor),
            None => break,
        }
    }
    assert_eq!(seen, vec![ids[1], ids[4], ids[3], ids[2], ids[0]]);
    let first = ports
        .read_state
        .inbox(
            user(1),
            InboxQuery {
                limit: limit(1),
                after: None,
                archived: ArchivedFilter::Any,
            },
        )
        .await
        .unwrap();
    let item = &first.items[0];
    assert_eq!(item.unread_count, 1);
    assert_eq!(item.membership.role, Role::Admin);
    assert_eq!(item.last_message.as_ref().unwrap().message.content, "bump");
    assert_eq!(
        item.last_message.as_ref().unwrap().sender_name.as_deref(),
        Some("User 2")
    );
}

pub async fn inbox_filters_archived_and_hides_left_conversations(ports: Ports) {
    ports.users_up_to(3).await;
    let kept = ports.group(1, &[2], at(0)).await.conversation.id;
    let archived = ports.group(1, &[2], at(1)).await.conversation.id;
    let left = ports.group(3, &[2], at(2)).await.conversation.id;
    ports
        .conversations
        .archive_conversation(archived, user(1), at(3), None)
        .await
        .unwrap();
    ports
        .conversations
        .remove_participant(left, user(2), user(2), at(4), None)
        .await
        .unwrap();
    let list = |filter| {
        let ports = ports.clone();
        async move {
            ports
                .read_state
                .inbox(
                    user(2),
                    InboxQuery {
                        limit: limit(10),
                        after: None,
                        archived: filter,
                    },
                )
                .await
                .unwrap()
                .items
                .iter()
                .map(|i| i.details.conversation.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(list(ArchivedFilter::Active).await, vec![kept]);
    assert_eq!(list(ArchivedFilter::Archived).await, vec![archived]);
    assert_eq!(list(ArchivedFilter::Any).await, vec![archived, kept]);
    assert!(
        ports
            .read_state
            .inbox_item(left, user(2))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        ports
            .read_state
            .inbox_item(left, user(3))
            .await
            .unwrap()
            .is_some()
    );
    let badge = ports.read_state.unread_summary(user(2)).await.unwrap();
    assert!(
        badge
            .conversations
            .iter()
            .all(|c| c.conversation_id != left)
    );
}

pub async fn adding_participants_reactivates_and_refuses_archived(ports: Ports) {
    ports.users_up_to(4).await;
    let group = ports.group(1, &[2], at(0)).await;
    let id = group.conversation.id;
    ports.say(id, 1, "before 3 joins", at(1)).await;
    ports
        .conversations
        .remove_participant(id, user(1), user(2), at(2), None)
        .await
        .unwrap();
    let change = ports
        .conversations
        .add_participants(id, user(1), vec![user(2), user(3)], at(3), 1000, None)
        .await
        .unwrap();
    let back = change.details.participant(user(2)).unwrap();
    assert!(back.is_active());
    assert_eq!(back.role, Role::Member);
    assert_eq!(back.joined_at, at(3));
    assert_eq!(
        change
            .details
            .participants
            .iter()
            .filter(|p| p.participant.user_id == user(2))
            .count(),
        1,
        "re-adding reactivates the same membership"
    );
    let newcomer = ports
        .read_state
        .inbox_item(id, user(3))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        newcomer.unread_count, 0,
        "history before joining is not unread"
    );
    assert_eq!(
        change.joined,
        vec![user(2), user(3)],
        "the returning and the new participant joined"
    );
    let again = ports
        .conversations
        .add_participants(id, user(1), vec![user(1), user(3)], at(4), 1000, None)
        .await
        .unwrap();
    assert!(
        again.joined.is_empty(),
        "active participants stay as they are"
    );
    assert_eq!(
        again.details.participant(user(3)).unwrap().joined_at,
        at(3),
        "an active participant keeps their joined_at"
    );
    ports
        .conversations
        .archive_conversation(id, user(1), at(4), None)
        .await
        .unwrap();
    let refused = ports
        .conversations
        .add_participants(id, user(1), vec![user(4)], at(5), 1000, None)
        .await;
    assert_eq!(
        refused.unwrap_err(),
        StoreError::Conflict(StoreConflict::ConversationArchived)
    );
}

pub async fn removing_the_last_admin_promotes_the_earliest_member(ports: Ports) {
    ports.users_up_to(4).await;
    let group = ports.group(1, &[2], at(0)).await;
    let id = group.conversation.id;
    ports
        .conversations
        .add_participants(id, user(1), vec![user(3)], at(5), 1000, None)
        .await
        .unwrap();
    let change = ports
        .conversations
        .remove_participant(id, user(1), user(1), at(6), None)
        .await
        .unwrap();
    assert_eq!(change.promoted, Some(user(2)));
    assert_eq!(
        change.details.participant(user(2)).unwrap().role,
        Role::Admin
    );
    assert_eq!(
        change.details.participant(user(3)).unwrap().role,
        Role::Member
    );
    assert!(!change.details.participant(user(1)).unwrap().is_active());
    let again = ports
        .conversations
        .remove_participant(id, user(3), user(3), at(7), None)
        .await
        .unwrap();
    assert_eq!(again.promoted, None, "an admin remains");
    assert_eq!(
        ports
            .conversations
            .remove_participant(id, user(2), user(3), at(8), None)
            .await
            .unwrap_err(),
        StoreError::NotFound
    );
}

pub async fn demoting_the_last_admin_is_refused(ports: Ports) {
    ports.users_up_to(2).await;
    let group = ports.group(1, &[2], at(0)).await;
    let id = group.conversation.id;
    assert_eq!(
        ports
            .conversations
            .set_role(id, user(1), user(1), Role::Member, None)
            .await
            .unwrap_err(),
        StoreError::Conflict(StoreConflict::LastAdmin)
    );
    ports
        .conversations
        .set_role(id, user(1), user(2), Role::Admin, None)
        .await
        .unwrap();
    let change = ports
        .conversations
        .set_role(id, user(1), user(1), Role::Member, None)
        .await
        .unwrap();
    assert_eq!(
        change.details.participant(user(1)).unwrap().role,
        Role::Member
    );
    assert_eq!(change.details.active_admin_count(), 1);
}

pub async fn announcements_are_appended_with_changes(ports: Ports) {
    ports.users_up_to(2).await;
    let group = ports.group(1, &[2], at(0)).await;
    let id = group.conversation.id;
    let change = ports
        .conversations
        .rename_conversation(
            id,
            user(1),
            GroupName::parse("  New name ").unwrap(),
            Some(new_message(id, user(1), system("renamed"), at(1))),
        )
        .await
        .unwrap();
    assert_eq!(
        change.details.conversation.name.as_deref(),
        Some("New name")
    );
    let announcement = change.announcement.unwrap();
    assert_eq!(announcement.message.seq.get(), 2);
    assert!(announcement.message.is_system_message);
    let archived = ports
        .conversations
        .archive_conversation(
            id,
            user(1),
            at(2),
            Some(new_message(id, user(1), system("archived"), at(2))),
        )
        .await
        .unwrap();
    assert!(archived.details.conversation.is_archived);
    assert_eq!(archived.details.conversation.archived_at, Some(at(2)));
    assert_eq!(
        archived.announcement.unwrap().message.seq.get(),
        3,
        "announcements go in even when archiving"
    );
    let unknown = ports
        .conversations
        .archive_conversation(ConversationId::new(), user(1), at(3), None)
        .await;
    assert_eq!(unknown.unwrap_err(), StoreError::NotFound);
}

pub async fn user_and_posting_directories(ports: Ports) {
    ports.users_up_to(2).await;
    let missing = ports
        .users
        .missing_users(&[user(1), user(5), user(2), user(5), user(6)])
        .await
        .unwrap();
    assert_eq!(missing, vec![user(5), user(6)]);
    ports.users.upsert_user(user(5), None).await.unwrap();
    ports
        .users
        .upsert_user(
            user(1),
            Some(chat_domain::DisplayName::parse("Ada 🦀").unwrap()),
        )
        .await
        .unwrap();
    ports.users.upsert_user(user(1), None).await.unwrap();
    let names = ports
        .users
        .display_names(&[user(1), user(5)])
        .await
        .unwrap();
    assert_eq!(names.get(&user(1)).map(String::as_str), Some("Ada 🦀"));
    assert!(
        ports
            .users
            .missing_users(&[user(5)])
            .await
            .unwrap()
            .is_empty()
    );
    let posting = PostingId::new();
    assert!(!ports.postings.posting_exists(posting).await.unwrap());
    ports.fixtures.add_posting(posting).await;
    assert!(ports.postings.posting_exists(posting).await.unwrap());
}

pub async fn append_names_recipients_and_refuses_outsiders(ports: Ports) {
    ports.users_up_to(4).await;
    let group = ports.group(1, &[2, 3], at(0)).await;
    let id = group.conversation.id;
    let appended = ports.say(id, 2, "to all", at(1)).await;
    let mut recipients = appended.recipients.clone();
    recipients.sort();
    assert_eq!(recipients, vec![user(1), user(2), user(3)]);
    let outsider = ports
        .messages
        .append_message(new_message(id, user(4), text("let me in"), at(2)))
        .await;
    assert_eq!(outsider.unwrap_err(), StoreError::NotFound);
    ports
        .conversations
        .remove_participant(id, user(1), user(3), at(3), None)
        .await
        .unwrap();
    let left = ports
        .messages
        .append_message(new_message(id, user(3), text("still here?"), at(4)))
        .await;
    assert_eq!(
        left.unwrap_err(),
        StoreError::NotFound,
        "a participant who left is an outsider"
    );
    let after = ports.say(id, 1, "without 3", at(5)).await;
    let mut recipients = after.recipients;
    recipients.sort();
    assert_eq!(recipients, vec![user(1), user(2)]);
    let page = ports
        .messages
        .history(id, HistoryQuery::Latest(limit(10)))
        .await
        .unwrap();
    assert_eq!(
        seqs(&page.items),
        vec![3, 2, 1],
        "refused appends took no seq"
    );
}

/// Every instant a client reads back is the one stored: UTC, whole seconds (the deployed
/// schema's `TIMESTAMP` columns), whichever adapter keeps it and whichever way it is read
/// (the append's answer, history, find, details, the inbox, read state and receipts).
pub async fn stored_instants_keep_whole_seconds(ports: Ports) {
    use time::Duration;
    let millis = |seconds: i64, ms: i64| at(seconds) + Duration::milliseconds(ms);
    ports.users_up_to(3).await;
    let group = ports.group(1, &[2], millis(0, 250)).await;
    let id = group.conversation.id;
    assert_eq!(group.conversation.created_at, at(0));
    for p in &group.participants {
        assert_eq!(p.participant.joined_at, at(0), "{p:?}");
    }

    let appended = ports.say(id, 2, "precise", millis(1, 789)).await;
    let sent = appended.view.message.clone();
    assert_eq!(sent.created_at, at(1), "the append's answer");
    let found = ports.messages.find_message(sent.id).await.unwrap().unwrap();
    assert_eq!(found.message.created_at, at(1), "find");
    let page = ports
        .messages
        .history(id, HistoryQuery::Latest(limit(1)))
        .await
        .unwrap();
    assert_eq!(
        page.items[0].message, sent,
        "history returns what the append did"
    );
    let details = ports
        .conversations
        .conversation_details(id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(details.conversation.last_message_at, Some(at(1)));
    let sender = details
        .participants
        .iter()
        .find(|p| p.participant.user_id == user(2))
        .unwrap();
    assert_eq!(
        sender.participant.last_read_at,
        Some(at(1)),
        "sender's marker"
    );

    let edited = ports
        .messages
        .edit_message(
            sent.id,
            user(2),
            MessageContent::parse("edited").unwrap(),
            millis(2, 500),
        )
        .await
        .unwrap()
        .view;
    assert_eq!(edited.message.edited_at, Some(at(2)));

    let read = ports
        .read_state
        .mark_read(id, user(1), None, millis(3, 999))
        .await
        .unwrap();
    assert_eq!(read.last_read_at, Some(at(3)));
    let receipts = ports.messages.receipts(sent.id).await.unwrap();
    assert_eq!(receipts.len(), 1);
    assert_eq!(receipts[0].read_at, at(3), "receipt");

    let inbox = ports
        .read_state
        .inbox(
            user(1),
            InboxQuery {
                limit: limit(10),
                after: None,
                archived: ArchivedFilter::Any,
            },
        )
        .await
        .unwrap();
    assert_eq!(inbox.items[0].details.conversation.activity_at(), at(1));
    assert_eq!(inbox.items[0].membership.last_read_at, Some(at(3)));

    let deleted = ports
        .messages
        .delete_message(sent.id, user(2), millis(4, 1))
        .await
        .unwrap()
        .message;
    assert_eq!(deleted.deleted_at, Some(at(4)));

    let direct = ports
        .conversations
        .get_or_create_direct(ConversationId::new(), user(1), user(3), millis(5, 640))
        .await
        .unwrap()
        .details;
    assert_eq!(direct.conversation.created_at, at(5));
    for p in &direct.participants {
        assert_eq!(p.participant.joined_at, at(5), "{p:?}");
    }
}

// Encryption at rest (docs/security.md). Each case opens the same data with the key rings
// it needs through the adapter's `AtRest` harness.

fn at_rest(ports: &Ports) -> std::sync::Arc<dyn crate::AtRest> {
    ports
        .at_rest
        .clone()
        .expect("the adapter's contract harness provides AtRest (Ports::with_at_rest)")
}

async fn latest(ports: &Ports, conversation: ConversationId) -> Vec<chat_domain::MessageView> {
    ports
        .messages
        .history(conversation, HistoryQuery::Latest(limit(50)))
        .await
        .unwrap()
        .items
}

fn content_of(items: &[chat_domain::MessageView], id: chat_domain::MessageId) -> Option<String> {
    items
        .iter()
        .find(|v| v.message.id == id)
        .filter(|v| !v.message.undecryptable)
        .map(|v| v.message.content.clone())
}

/// The key-ring switch reaches the adapter: in the key-ring pass (`CHAT_TEST_KEY_RING=1`)
/// the suite's own ports seal what they store under the generated ring, so every other
/// case of this suite runs with encryption at rest; otherwise they store plain text.
pub async fn fixtures_follow_the_key_ring_switch(ports: Ports) {
    let harness = at_rest(&ports);
    ports.users_up_to(2).await;
    let group = ports.group(1, &[2], at(0)).await;
    let sent = ports
        .say(group.conversation.id, 1, "switched", at(1))
        .await
        .view
        .message;
    let stored = harness.stored(sent.id).await;
    if crate::switch::enabled() {
        assert_eq!(stored.key_id.as_deref(), Some(crate::switch::KEY_ID));
        assert!(stored.fields.content.starts_with("v1."), "{stored:?}");
    } else {
        assert_eq!(stored.key_id, None);
        assert_eq!(stored.fields.content, "switched");
    }
    let page = latest(&ports, group.conversation.id).await;
    assert_eq!(content_of(&page, sent.id).as_deref(), Some("switched"));
}

pub async fn encrypted_messages_round_trip(ports: Ports) {
    use chat_domain::{MediaMetadata, MediaUrl, MessageBody, MessageType};
    let harness = at_rest(&ports);
    let sealed = harness.reopen(Some(ring(&["k1"], "k1"))).await.ports;
    sealed.users_up_to(2).await;
    let group = sealed.group(1, &[2], at(0)).await;
    let id = group.conversation.id;
    let url = "https://cdn.example.com/private/beach.jpg";
    let body = MessageBody::from_user(
        MessageContent::parse("a secret photo 🌊").unwrap(),
        MessageType::Image,
        Some(MediaUrl::parse(url).unwrap()),
        Some(MediaMetadata::parse(r#"{"width":640}"#).unwrap()),
    )
    .unwrap();
    let sent = sealed
        .messages
        .append_message(new_message(id, user(1), body, at(1)))
        .await
        .unwrap()
        .view
        .message;
    assert_eq!(sent.content, "a secret photo 🌊");
    assert_eq!(sent.media_url.as_deref(), Some(url));

    let stored = harness.stored(sent.id).await;
    assert_eq!(
        stored.key_id.as_deref(),
        Some("k1"),
        "the row names its key"
    );
    assert!(stored.fields.content.starts_with("v1."), "{stored:?}");
    assert!(!stored.fields.content.contains("secret"));
    let stored_url = stored.fields.media_url.clone().unwrap();
    assert!(stored_url.starts_with("v1.") && !stored_url.contains("cdn"));
    let stored_meta = stored.fields.media_metadata.clone().unwrap();
    assert!(stored_meta.starts_with("\"v1.") && !stored_meta.contains("width"));

    let found = sealed
        .messages
        .find_message(sent.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.message, sent, "read back as sent");
    let page = latest(&sealed, id).await;
    assert_eq!(
        content_of(&page, sent.id).as_deref(),
        Some("a secret photo 🌊")
    );
    let inbox = sealed
        .read_state
        .inbox(
            user(2),
            InboxQuery {
                limit: limit(10),
                after: None,
                archived: ArchivedFilter::Any,
            },
        )
        .await
        .unwrap();
    let last = inbox.items[0].last_message.as_ref().unwrap();
    assert_eq!(
        last.message.content, "a secret photo 🌊",
        "the inbox preview"
    );

    // An edit seals the row again with its ids; the media stay readable.
    let edited = sealed
        .messages
        .edit_message(
            sent.id,
            user(1),
            MessageContent::parse("edited secret").unwrap(),
            at(2),
        )
        .await
        .unwrap()
        .view
        .message;
    assert_eq!(edited.content, "edited secret");
    assert_eq!(edited.media_url.as_deref(), Some(url));
    assert_eq!(edited.media_metadata.as_deref(), Some(r#"{"width":640}"#));
    let restored = harness.stored(sent.id).await;
    assert_eq!(restored.key_id.as_deref(), Some("k1"));
    assert!(!restored.fields.content.contains("edited"));
    assert_ne!(restored.fields.content, stored.fields.content);

    // SYSTEM records stay plain.
    let announcement = page.iter().find(|v| v.message.is_system_message).unwrap();
    let stored_announcement = harness.stored(announcement.message.id).await;
    assert_eq!(stored_announcement.key_id, None);
    assert_eq!(stored_announcement.fields.content, "created");

    // Without a key ring, text is stored as it is, with no key id.
    let plain = harness.reopen(None).await.ports;
    let clear = plain.say(id, 2, "in the clear", at(3)).await.view.message;
    let stored_clear = harness.stored(clear.id).await;
    assert_eq!(stored_clear.key_id, None);
    assert_eq!(stored_clear.fields.content, "in the clear");
    let page = latest(&sealed, id).await;
    assert_eq!(content_of(&page, clear.id).as_deref(), Some("in the clear"));
}

pub async fn sealed_text_is_bound_to_its_row(ports: Ports) {
    let harness = at_rest(&ports);
    let sealed = harness.reopen(Some(ring(&["k1"], "k1"))).await.ports;
    sealed.users_up_to(2).await;
    let group = sealed.group(1, &[2], at(0)).await;
    let other = sealed.group(2, &[1], at(0)).await;
    let first = sealed
        .say(group.conversation.id, 1, "first secret", at(1))
        .await;
    let second = sealed.say(group.conversation.id, 2, "second", at(2)).await;
    let elsewhere = sealed
        .say(other.conversation.id, 2, "elsewhere", at(3))
        .await;
    let first_id = first.view.message.id;
    let moved = harness.stored(first_id).await;

    // Moved to another row of the same conversation, and to another conversation.
    for target in [second.view.message.id, elsewhere.view.message.id] {
        harness.overwrite(target, moved.clone()).await;
        let read = sealed.messages.find_message(target).await.unwrap().unwrap();
        assert!(
            read.message.undecryptable,
            "a moved ciphertext must not open"
        );
        assert_eq!(read.message.content, "");
    }
    // Its own row still opens.
    let page = latest(&sealed, group.conversation.id).await;
    assert_eq!(content_of(&page, first_id).as_deref(), Some("first secret"));
}

pub async fn rotation_keeps_old_rows_readable(ports: Ports) {
    let harness = at_rest(&ports);
    let plain = harness.reopen(None).await.ports;
    plain.users_up_to(2).await;
    let group = plain.group(1, &[2], at(0)).await;
    let id = group.conversation.id;
    let old = plain
        .say(id, 1, "before any key", at(1))
        .await
        .view
        .message
        .id;
    let k1 = harness.reopen(Some(ring(&["k1"], "k1"))).await.ports;
    let under_k1 = k1.say(id, 2, "under k1", at(2)).await.view.message.id;
    let rotated = harness.reopen(Some(ring(&["k1", "k2"], "k2"))).await.ports;
    let under_k2 = rotated.say(id, 1, "under k2", at(3)).await.view.message.id;

    assert_eq!(harness.stored(old).await.key_id, None);
    assert_eq!(harness.stored(under_k1).await.key_id.as_deref(), Some("k1"));
    assert_eq!(harness.stored(under_k2).await.key_id.as_deref(), Some("k2"));
    let page = latest(&rotated, id).await;
    assert_eq!(content_of(&page, old).as_deref(), Some("before any key"));
    assert_eq!(content_of(&page, under_k1).as_deref(), Some("under k1"));
    assert_eq!(content_of(&page, under_k2).as_deref(), Some("under k2"));
}

pub async fn reencrypt_is_resumable_and_idempotent(ports: Ports) {
    let harness = at_rest(&ports);
    let plain = harness.reopen(None).await.ports;
    plain.users_up_to(2).await;
    let group = plain.group(1, &[2], at(0)).await;
    let id = group.conversation.id;
    let mut texts = Vec::new();
    for i in 0..3 {
        let text = format!("plain {i}");
        texts.push((plain.say(id, 1, &text, at(i)).await.view.message.id, text));
    }
    let k1 = harness.reopen(Some(ring(&["k1"], "k1"))).await.ports;
    for i in 0..2 {
        let text = format!("k1 {i}");
        texts.push((k1.say(id, 2, &text, at(5 + i)).await.view.message.id, text));
    }
    let rotated = harness.reopen(Some(ring(&["k1", "k2"], "k2"))).await;
    let text = "k2 already".to_owned();
    texts.push((
        rotated.ports.say(id, 1, &text, at(9)).await.view.message.id,
        text,
    ));
    let reencrypt = rotated.reencrypt.clone();

    let first = reencrypt.reencrypt_batch(None, 2).await.unwrap();
    assert_eq!((first.rewritten, first.undecryptable), (2, 0));
    assert_eq!(first.remaining, 3, "{first:?}");
    assert!(first.last.is_some());

    // An edit made meanwhile by a node without the key ring is kept by the rewrite.
    let mut pending = None;
    for (message, _) in &texts {
        if harness.stored(*message).await.key_id.is_none() {
            pending = Some(*message);
            break;
        }
    }
    if let Some(pending) = pending {
        let sender = plain
            .messages
            .find_message(pending)
            .await
            .unwrap()
            .unwrap()
            .message
            .sender_id;
        plain
            .messages
            .edit_message(
                pending,
                sender,
                MessageContent::parse("edited meanwhile").unwrap(),
                at(20),
            )
            .await
            .unwrap();
        for entry in &mut texts {
            if entry.0 == pending {
                entry.1 = "edited meanwhile".to_owned();
            }
        }
    }

    // Stopped and started again from the beginning: it only finishes the work.
    let second = reencrypt.reencrypt_batch(None, 2).await.unwrap();
    assert_eq!((second.rewritten, second.remaining), (2, 1), "{second:?}");
    // Or resumed from its cursor.
    let third = reencrypt.reencrypt_batch(second.last, 2).await.unwrap();
    assert_eq!((third.rewritten, third.remaining), (1, 0), "{third:?}");
    let done = reencrypt.reencrypt_batch(None, 2).await.unwrap();
    assert_eq!((done.rewritten, done.last, done.remaining), (0, None, 0));

    for (message, _) in &texts {
        let stored = harness.stored(*message).await;
        assert_eq!(stored.key_id.as_deref(), Some("k2"), "{message}");
    }
    let page = latest(&rotated.ports, id).await;
    let announcement = page.iter().find(|v| v.message.is_system_message).unwrap();
    assert_eq!(harness.stored(announcement.message.id).await.key_id, None);
    // Once moved, the old key can leave the ring.
    let only_k2 = harness.reopen(Some(ring(&["k2"], "k2"))).await.ports;
    let page = latest(&only_k2, id).await;
    for (message, text) in &texts {
        assert_eq!(content_of(&page, *message).as_deref(), Some(text.as_str()));
    }
}

/// `reencrypt` runs online: edits made at the same moment by a node with the ring are all
/// kept, and every row ends under the active key.
pub async fn reencrypt_racing_edits_keeps_every_edit(ports: Ports) {
    let harness = at_rest(&ports);
    let plain = harness.reopen(None).await.ports;
    plain.users_up_to(2).await;
    let group = plain.group(1, &[2], at(0)).await;
    let id = group.conversation.id;
    let mut messages = Vec::new();
    for i in 0..24 {
        let text = format!("before {i}");
        messages.push(plain.say(id, 1, &text, at(i + 1)).await.view.message.id);
    }
    let sealed = harness.reopen(Some(ring(&["k1"], "k1"))).await;
    let reencrypt = sealed.reencrypt.clone();
    let mover = tokio::spawn(async move {
        let mut cursor = None;
        loop {
            let batch = reencrypt.reencrypt_batch(cursor, 2).await.unwrap();
            match batch.last {
                Some(last) => cursor = Some(last),
                None => return,
            }
        }
    });
    let editors = messages.iter().enumerate().map(|(i, message)| {
        let store = sealed.ports.messages.clone();
        let message = *message;
        tokio::spawn(async move {
            let text = MessageContent::parse(format!("edited {i}")).unwrap();
            store
                .edit_message(message, user(1), text, at(100))
                .await
                .unwrap();
        })
    });
    for editor in join_all(editors).await {
        editor.unwrap();
    }
    mover.await.unwrap();
    // A last pass finds nothing left: the edits sealed under the active key themselves.
    let done = sealed.reencrypt.reencrypt_batch(None, 100).await.unwrap();
    assert_eq!((done.rewritten, done.remaining), (0, 0), "{done:?}");
    let page = latest(&sealed.ports, id).await;
    for (i, message) in messages.iter().enumerate() {
        assert_eq!(
            content_of(&page, *message).as_deref(),
            Some(format!("edited {i}").as_str())
        );
        let stored = harness.stored(*message).await;
        assert_eq!(stored.key_id.as_deref(), Some("k1"));
        assert!(!stored.fields.content.contains("edited"));
    }
}

pub async fn undecryptable_rows_are_reported_and_the_page_served(ports: Ports) {
    let harness = at_rest(&ports);
    let plain = harness.reopen(None).await.ports;
    plain.users_up_to(2).await;
    let group = plain.group(1, &[2], at(0)).await;
    let id = group.conversation.id;
    let clear = plain.say(id, 2, "plain", at(1)).await.view.message.id;
    let k1 = harness.reopen(Some(ring(&["k1"], "k1"))).await.ports;
    let lost = k1
        .say(id, 1, "under a lost key", at(2))
        .await
        .view
        .message
        .id;

    let without_k1 = harness.reopen(Some(ring(&["k2"], "k2"))).await;
    let page = latest(&without_k1.ports, id).await;
    assert_eq!(page.len(), 3, "the page is served");
    assert_eq!(content_of(&page, clear).as_deref(), Some("plain"));
    let bad = page.iter().find(|v| v.message.id == lost).unwrap();
    assert!(bad.message.undecryptable);
    assert_eq!(
        (bad.message.content.as_str(), bad.message.media_url.as_ref()),
        ("", None)
    );
    let inbox = without_k1
        .ports
        .read_state
        .inbox(
            user(2),
            InboxQuery {
                limit: limit(10),
                after: None,
                archived: ArchivedFilter::Any,
            },
        )
        .await
        .unwrap();
    let preview = inbox.items[0].last_message.as_ref().unwrap();
    assert!(preview.message.undecryptable, "the inbox preview is marked");
    // Re-encryption leaves it as it is and says so.
    let batch = without_k1
        .reencrypt
        .reencrypt_batch(None, 10)
        .await
        .unwrap();
    assert_eq!((batch.rewritten, batch.undecryptable), (1, 1), "{batch:?}");
    assert_eq!(harness.stored(lost).await.key_id.as_deref(), Some("k1"));
    // With its key back, it reads again.
    let restored = harness.reopen(Some(ring(&["k1", "k2"], "k2"))).await.ports;
    let page = latest(&restored, id).await;
    assert_eq!(content_of(&page, lost).as_deref(), Some("under a lost key"));
}

/// Issue 11, item 5: two admins removing each other at the same moment. The store decides
/// each removal on the membership it holds locked, so the second to get the lock is no
/// longer an active participant and is refused: exactly one succeeds, and the group keeps
/// an admin. (Without the re-check in the store both succeed.)
pub async fn two_admins_removing_each_other_at_once_exactly_one_succeeds(ports: Ports) {
    ports.users_up_to(3).await;
    for round in 0..5 {
        let group = ports.group(1, &[2, 3], at(round)).await;
        let id = group.conversation.id;
        ports
            .conversations
            .set_role(id, user(1), user(2), Role::Admin, None)
            .await
            .unwrap();
        let removals = [(1, 2), (2, 1)].map(|(actor, target)| {
            let ports = ports.clone();
            tokio::spawn(async move {
                ports
                    .conversations
                    .remove_participant(id, user(actor), user(target), at(round), None)
                    .await
            })
        });
        let outcomes: Vec<_> = join_all(removals)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let succeeded = outcomes.iter().filter(|o| o.is_ok()).count();
        assert_eq!(succeeded, 1, "round {round}: {outcomes:?}");
        let refused = outcomes.into_iter().find_map(Result::err).unwrap();
        assert_eq!(
            refused,
            StoreError::NotFound,
            "round {round}: the loser is no longer a participant"
        );
        let details = ports
            .conversations
            .conversation_details(id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(details.active_participants().count(), 2, "round {round}");
        assert_eq!(details.active_admin_count(), 1, "round {round}");
    }
}

/// Issue 11, item 5: an admin demoted (or removed) by a change that has committed can no
/// longer act as one, even when the caller checked their role before: the store refuses
/// the stale actor's add, rename, archive, role change and removal, and changes nothing.
pub async fn a_demoted_admins_changes_are_refused_by_the_store(ports: Ports) {
    ports.users_up_to(4).await;
    let group = ports.group(1, &[2], at(0)).await;
    let id = group.conversation.id;
    // The service's pre-check would pass here: user 1 is an admin.
    ports
        .conversations
        .set_role(id, user(1), user(2), Role::Admin, None)
        .await
        .unwrap();
    // Then user 2 demotes user 1, and that commits first.
    ports
        .conversations
        .set_role(id, user(2), user(1), Role::Member, None)
        .await
        .unwrap();
    let forbidden = |result: Result<(), StoreError>, what: &str| {
        assert!(
            matches!(result, Err(StoreError::Forbidden(_))),
            "{what}: {result:?}"
        );
    };
    let stale = user(1);
    forbidden(
        ports
            .conversations
            .add_participants(id, stale, vec![user(3)], at(2), 1000, None)
            .await
            .map(|_| ()),
        "add",
    );
    forbidden(
        ports
            .conversations
            .rename_conversation(id, stale, GroupName::parse("mine").unwrap(), None)
            .await
            .map(|_| ()),
        "rename",
    );
    forbidden(
        ports
            .conversations
            .archive_conversation(id, stale, at(2), None)
            .await
            .map(|_| ()),
        "archive",
    );
    forbidden(
        ports
            .conversations
            .set_role(id, stale, user(1), Role::Admin, None)
            .await
            .map(|_| ()),
        "promote oneself",
    );
    forbidden(
        ports
            .conversations
            .remove_participant(id, stale, user(2), at(2), None)
            .await
            .map(|_| ()),
        "remove another",
    );
    let by_two = ports.say(id, 2, "mine", at(3)).await.view.message.id;
    forbidden(
        ports
            .messages
            .delete_message(by_two, stale, at(3))
            .await
            .map(|_| ()),
        "delete another's message",
    );
    let details = ports
        .conversations
        .conversation_details(id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(details.conversation.name.as_deref(), Some("Crew 🚀"));
    assert!(!details.conversation.is_archived);
    assert!(details.participant(user(3)).is_none(), "nobody was added");
    assert_eq!(details.active_participants().count(), 2);
    assert!(
        ports
            .messages
            .find_message(by_two)
            .await
            .unwrap()
            .unwrap()
            .message
            .deleted_at
            .is_none()
    );
    // Removed altogether, user 1 is an outsider: for them the conversation does not exist.
    ports
        .conversations
        .remove_participant(id, user(2), user(1), at(4), None)
        .await
        .unwrap();
    assert_eq!(
        ports
            .conversations
            .rename_conversation(id, stale, GroupName::parse("mine").unwrap(), None)
            .await
            .unwrap_err(),
        StoreError::NotFound
    );
    assert_eq!(
        ports
            .messages
            .add_reaction(by_two, stale, Emoji::parse("👀").unwrap(), at(5))
            .await
            .unwrap_err(),
        StoreError::NotFound
    );
}

/// Issue 11, item 5: adds racing from several tasks never take a conversation past its
/// participant limit: each add counts the active participants under the lock.
pub async fn concurrent_adds_never_pass_the_participant_limit(ports: Ports) {
    const MAX: usize = 1000;
    // 995 participants (the creator and 994 members), then eight adds of one new user
    // each, all at once: five fit.
    ports.users_up_to(1003).await;
    let members: Vec<i64> = (2..=995).collect();
    let group = ports.group(1, &members, at(0)).await;
    let id = group.conversation.id;
    assert_eq!(group.active_participants().count(), 995);
    let adds = (996..=1003).map(|newcomer| {
        let ports = ports.clone();
        tokio::spawn(async move {
            ports
                .conversations
                .add_participants(id, user(1), vec![user(newcomer)], at(1), MAX, None)
                .await
        })
    });
    let outcomes: Vec<_> = join_all(adds)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let added = outcomes.iter().filter(|o| o.is_ok()).count();
    assert_eq!(added, 5, "exactly the room there was");
    for refused in outcomes.into_iter().filter_map(Result::err) {
        assert_eq!(refused, StoreError::TooManyParticipants { max: MAX });
    }
    let details = ports
        .conversations
        .conversation_details(id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(details.active_participants().count(), MAX);
}

/// Issue 11, item 5: who hears of an edit, a delete, a reaction or a read is decided from
/// the membership committed with the change, so a participant removed before it commits
/// is not told (never the edited text after their `participant.removed`).
pub async fn change_recipients_exclude_a_participant_removed_before_the_change(ports: Ports) {
    ports.users_up_to(3).await;
    let group = ports.group(1, &[2, 3], at(0)).await;
    let id = group.conversation.id;
    let message = ports.say(id, 2, "draft", at(1)).await.view.message.id;
    let other = ports.say(id, 2, "another", at(1)).await.view.message.id;
    let theirs = ports.say(id, 3, "mine", at(1)).await.view.message.id;
    ports
        .conversations
        .remove_participant(id, user(1), user(3), at(2), None)
        .await
        .unwrap();
    let sorted = |mut users: Vec<UserId>| {
        users.sort();
        users
    };
    let expected = vec![user(1), user(2)];
    let edited = ports
        .messages
        .edit_message(
            message,
            user(2),
            MessageContent::parse("the secret").unwrap(),
            at(3),
        )
        .await
        .unwrap();
    assert_eq!(sorted(edited.recipients), expected, "edit");
    let reacted = ports
        .messages
        .add_reaction(message, user(1), Emoji::parse("👍").unwrap(), at(4))
        .await
        .unwrap();
    assert_eq!(sorted(reacted.recipients), expected, "reaction added");
    let unreacted = ports
        .messages
        .remove_reaction(message, user(1), Emoji::parse("👍").unwrap())
        .await
        .unwrap();
    assert_eq!(sorted(unreacted.recipients), expected, "reaction removed");
    let read = ports
        .read_state
        .mark_read(id, user(1), None, at(5))
        .await
        .unwrap();
    assert_eq!(sorted(read.recipients), expected, "read");
    let deleted = ports
        .messages
        .delete_message(other, user(1), at(6))
        .await
        .unwrap();
    assert_eq!(sorted(deleted.recipients), expected, "delete by an admin");
    // The removed participant's own message is theirs no more to edit.
    assert_eq!(
        ports
            .messages
            .edit_message(theirs, user(3), MessageContent::parse("x").unwrap(), at(8))
            .await
            .unwrap_err(),
        StoreError::NotFound
    );
}

/// `user`'s active conversations in inbox order, read one item per page (so every cursor is
/// used).
async fn inbox_order(ports: &Ports, user_id: i64) -> Vec<ConversationId> {
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = ports
            .read_state
            .inbox(
                user(user_id),
                InboxQuery {
                    limit: limit(1),
                    after,
                    archived: ArchivedFilter::Active,
                },
            )
            .await
            .unwrap();
        seen.extend(page.items.iter().map(|i| i.details.conversation.id));
        match page.next_cursor {
            Some(cursor) => after = Some(cursor),
            None => return seen,
        }
    }
}

pub async fn inbox_follows_commit_order_within_one_second(ports: Ports) {
    ports.users_up_to(2).await;
    // Everything happens within one (stored, whole) second.
    let a = ports.group(1, &[2], at(0)).await.conversation.id;
    let b = ports.group(1, &[2], at(0)).await.conversation.id;
    let c = ports.group(1, &[2], at(0)).await.conversation.id;
    assert_eq!(
        inbox_order(&ports, 2).await,
        vec![c, b, a],
        "creation order"
    );
    ports.say(a, 2, "one", at(0)).await;
    ports.say(b, 1, "two", at(0)).await;
    ports.say(a, 1, "three", at(0)).await;
    assert_eq!(inbox_order(&ports, 2).await, vec![a, b, c]);
    assert_eq!(inbox_order(&ports, 1).await, vec![a, b, c]);
    ports.say(c, 2, "four", at(0)).await;
    ports.say(b, 2, "five", at(0)).await;
    assert_eq!(inbox_order(&ports, 2).await, vec![b, c, a]);
    // Marking read is not activity.
    ports
        .read_state
        .mark_read(a, user(2), None, at(0))
        .await
        .unwrap();
    assert_eq!(inbox_order(&ports, 2).await, vec![b, c, a]);
}

/// A small deterministic generator of steps (the same steps on every adapter).
pub(crate) struct Steps(pub(crate) u64);

impl Steps {
    /// A number in `0..n`.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// What the model remembers of a message.
struct Modelled {
    id: chat_domain::MessageId,
    seq: i64,
    sender: i64,
    system: bool,
    deleted: bool,
}

pub async fn unread_matches_a_model_under_sends_deletes_marks_and_rejoins(ports: Ports) {
    ports.users_up_to(4).await;
    for seed in 1..=3_u64 {
        let created = ports.group(1, &[2, 3, 4], at(0)).await;
        let id = created.conversation.id;
        let mut steps = Steps(seed);
        let mut messages: Vec<Modelled> = Vec::new();
        let mut markers = [0_i64; 5];
        let mut active = [false, true, true, true, true];
        for u in 1..=4_i64 {
            let item = ports
                .read_state
                .inbox_item(id, user(u))
                .await
                .unwrap()
                .unwrap();
            markers[usize::try_from(u).unwrap()] = item.membership.last_read_seq.get();
        }
        let mut last_seq = created
            .participants
            .iter()
            .map(|p| p.participant.last_read_seq.get())
            .max()
            .unwrap_or(0);
        for step in 0..36_i64 {
            let when = at(step);
            let members: Vec<i64> = (1..=4).filter(|u| active[*u as usize]).collect();
            let pick = members[steps.below(members.len() as u64) as usize];
            match steps.below(12) {
                0..=2 => {
                    let view = ports.say(id, pick, "m", when).await.view.message;
                    markers[pick as usize] = view.seq.get();
                    last_seq = view.seq.get();
                    messages.push(Modelled {
                        id: view.id,
                        seq: view.seq.get(),
                        sender: pick,
                        system: false,
                        deleted: false,
                    });
                }
                3..=4 => {
                    // Several members send at once (a group-committed batch where the
                    // adapter has one).
                    let sends = members
                        .iter()
                        .map(|u| ports.say(id, *u, "burst", when))
                        .collect::<Vec<_>>();
                    for (u, appended) in members.iter().zip(join_all(sends).await) {
                        let view = appended.view.message;
                        let slot = *u as usize;
                        markers[slot] = markers[slot].max(view.seq.get());
                        last_seq = last_seq.max(view.seq.get());
                        messages.push(Modelled {
                            id: view.id,
                            seq: view.seq.get(),
                            sender: *u,
                            system: false,
                            deleted: false,
                        });
                    }
                }
                5 => {
                    let view = ports
                        .messages
                        .append_message(new_message(id, user(pick), system("note"), when))
                        .await
                        .unwrap()
                        .view
                        .message;
                    markers[pick as usize] = view.seq.get();
                    last_seq = view.seq.get();
                    messages.push(Modelled {
                        id: view.id,
                        seq: view.seq.get(),
                        sender: pick,
                        system: true,
                        deleted: false,
                    });
                }
                6..=7 => {
                    let live: Vec<usize> = (0..messages.len())
                        .filter(|i| !messages[*i].deleted && !messages[*i].system)
                        .collect();
                    if !live.is_empty() {
                        let index = live[steps.below(live.len() as u64) as usize];
                        ports
                            .messages
                            .delete_message(messages[index].id, user(1), when)
                            .await
                            .unwrap();
                        messages[index].deleted = true;
                    }
                }
                8..=10 => {
                    let up_to = match steps.below(messages.len() as u64 + 1) as usize {
                        0 => None,
                        i => Some(Seq::new(messages[i - 1].seq).unwrap()),
                    };
                    let state = ports
                        .read_state
                        .mark_read(id, user(pick), up_to, when)
                        .await
                        .unwrap();
                    let target = up_to.map_or(last_seq, |s| s.get().min(last_seq));
                    let slot = pick as usize;
                    markers[slot] = markers[slot].max(target);
                    assert_eq!(state.last_read_seq.get(), markers[slot], "seed {seed}");
                }
                _ => {
                    let u = 2 + steps.below(3) as i64;
                    let slot = u as usize;
                    if active[slot] {
                        ports
                            .conversations
                            .remove_participant(id, user(1), user(u), when, None)
                            .await
                            .unwrap();
                        active[slot] = false;
                    } else {
                        ports
                            .conversations
                            .add_participants(id, user(1), vec![user(u)], when, 1000, None)
                            .await
                            .unwrap();
                        active[slot] = true;
                        markers[slot] = markers[slot].max(last_seq);
                    }
                }
            }
            for u in (1..=4_i64).filter(|u| active[*u as usize]) {
                let marker = markers[u as usize];
                let expected = messages
                    .iter()
                    .filter(|m| m.sender != u && !m.system && !m.deleted && m.seq > marker)
                    .count() as u64;
                let item = ports
                    .read_state
                    .inbox_item(id, user(u))
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(
                    item.membership.last_read_seq.get(),
                    marker,
                    "seed {seed}, step {step}: marker of {u}"
                );
                assert_eq!(
                    item.unread_count, expected,
                    "seed {seed}, step {step}: unread of {u}"
                );
                let badge = ports.read_state.unread_summary(user(u)).await.unwrap();
                let in_badge = badge
                    .conversations
                    .iter()
                    .find(|c| c.conversation_id == id)
                    .map_or(0, |c| c.unread_count);
                assert_eq!(in_badge, expected, "seed {seed}, step {step}: badge of {u}");
            }
        }
    }
}

/// `find_messages` answers a page of ids as `find_message` answers each: the deleted one
/// included, the missing one left out, reactions grouped per emoji (code point by code
/// point), text opened as stored (sealed at rest in the key-ring pass); more than
/// [`chat_ports::FIND_MESSAGES_MAX`] ids still answer.
pub async fn find_messages_answers_a_page_as_find_message_does(ports: Ports) {
    let harness = at_rest(&ports);
    ports.users_up_to(3).await;
    let group = ports.group(1, &[2, 3], at(0)).await;
    let id = group.conversation.id;
    let plain = ports
        .say(id, 1, "plain words 🌍", at(1))
        .await
        .view
        .message
        .id;
    let deleted = ports.say(id, 2, "soon gone", at(2)).await.view.message.id;
    let reacted = ports.say(id, 3, "lunch?", at(3)).await.view.message.id;
    for (who, emoji, when) in [(2, "👍🏽", 4), (3, "❤️", 5), (3, "👍🏽", 6), (1, "👍", 7)]
    {
        ports
            .messages
            .add_reaction(reacted, user(who), Emoji::parse(emoji).unwrap(), at(when))
            .await
            .unwrap();
    }
    ports
        .messages
        .delete_message(deleted, user(2), at(8))
        .await
        .unwrap();
    let missing = chat_domain::MessageId::new();

    // The same id twice is answered once.
    let page = [plain, missing, deleted, reacted, plain];
    let found = ports.messages.find_messages(&page).await.unwrap();
    let mut ids: Vec<_> = found.iter().map(|v| v.message.id).collect();
    ids.sort();
    let mut expected = vec![plain, deleted, reacted];
    expected.sort();
    assert_eq!(
        ids, expected,
        "each existing id once, the missing one left out"
    );
    for view in &found {
        let alone = ports
            .messages
            .find_message(view.message.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(*view, alone, "as find_message answers it");
    }
    let by_id = |id| found.iter().find(|v| v.message.id == id).unwrap();
    assert!(by_id(deleted).message.is_deleted());
    let plain_view = by_id(plain);
    assert_eq!(plain_view.message.content, "plain words 🌍");
    assert!(!plain_view.message.undecryptable);
    assert_eq!(plain_view.sender_name.as_deref(), Some("User 1"));
    let reactions: Vec<(&str, u32, Vec<i64>)> = by_id(reacted)
        .reactions
        .iter()
        .map(|r| {
            let users = r.user_ids.iter().map(|u| u.get()).collect();
            (r.emoji.as_str(), r.count, users)
        })
        .collect();
    assert_eq!(
        reactions,
        vec![
            ("👍🏽", 2, vec![2, 3]),
            ("❤️", 1, vec![3]),
            ("👍", 1, vec![1])
        ],
        "per emoji in order of first use; a skin tone is another emoji"
    );
    let stored = harness.stored(plain).await;
    if crate::switch::enabled() {
        assert_eq!(stored.key_id.as_deref(), Some(crate::switch::KEY_ID));
        assert!(!stored.fields.content.contains("plain"), "{stored:?}");
    } else {
        assert_eq!(stored.key_id, None);
    }

    assert!(ports.messages.find_messages(&[]).await.unwrap().is_empty());
    assert!(
        ports
            .messages
            .find_messages(&[missing])
            .await
            .unwrap()
            .is_empty()
    );
    // Past the bound (the ids a caller should send at most): still every message once.
    let mut many: Vec<_> = (0..chat_ports::FIND_MESSAGES_MAX)
        .map(|_| chat_domain::MessageId::new())
        .collect();
    many.insert(0, reacted);
    many.push(plain);
    let mut found: Vec<_> = ports
        .messages
        .find_messages(&many)
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.message.id)
        .collect();
    found.sort();
    let mut expected = vec![plain, reacted];
    expected.sort();
    assert_eq!(found, expected);
}
