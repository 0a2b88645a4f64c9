//! The unread counts by difference (`CONVERSATIONS.counted_total` minus
//! `CONVERSATION_PARTICIPANTS.unread_base`, since 20251201000010) stay equal to the count
//! they replace — messages from others, live, not SYSTEM, above the marker — and each
//! conversation's `counted_total` equal to its countable messages, after every kind of
//! write: sends, deletes, read markers, membership changes, racing senders, and the previous
//! system's writes during the rollout (through the triggers), which also move the
//! conversation's `activity_key`.
#![allow(clippy::unwrap_used)] // Test code: a failed expectation panics.

mod common;

use common::{system, text};

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};

use chat_domain::{
    ConversationId, ConversationType, GroupName, MessageBody, MessageId, Seq, UserId,
};
use chat_mysql::MySqlStore;
use chat_ports::{
    ConversationStore, MessageStore, NewConversation, NewMessage, ReadStateStore, UserDirectory,
};
use futures::future::join_all;
use time::OffsetDateTime;

fn user(id: i64) -> UserId {
    UserId::new(id).unwrap()
}

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
}

/// A later second at each call, so that every send moves the conversation's activity time.
fn tick() -> OffsetDateTime {
    static SECONDS: AtomicI64 = AtomicI64::new(1_800_000_000);
    OffsetDateTime::from_unix_timestamp(SECONDS.fetch_add(1, Ordering::Relaxed)).unwrap()
}

fn message(conversation: ConversationId, sender: i64, body: MessageBody) -> NewMessage {
    NewMessage {
        id: MessageId::new(),
        conversation_id: conversation,
        sender_id: user(sender),
        body,
        reply_to_id: None,
        client_message_id: None,
        created_at: tick(),
    }
}

async fn say(store: &MySqlStore, conversation: ConversationId, sender: i64) -> MessageId {
    store
        .append_message(message(conversation, sender, text("hello")))
        .await
        .unwrap()
        .view
        .message
        .id
}

/// Checks every active membership of the conversation: the unread count by difference
/// equals the count, the conversation's `counted_total` its countable messages, and the
/// inbox item and the badge report the count. Returns user → unread.
async fn check(store: &MySqlStore, conversation: ConversationId, step: &str) -> BTreeMap<i64, u64> {
    let rows: Vec<(i64, i64, i64, bool)> = sqlx::query_as(
        "SELECT p.user_id, c.counted_total - p.unread_base, (SELECT COUNT(*) FROM MESSAGES m \
           WHERE m.conversation_id = p.conversation_id AND m.seq > p.last_read_seq \
             AND m.sender_id <> p.user_id AND m.deleted_at IS NULL \
             AND m.is_system_message IS NOT TRUE), \
           c.counted_total = (SELECT COUNT(*) FROM MESSAGES t WHERE t.conversation_id = c.id \
             AND t.deleted_at IS NULL AND t.is_system_message IS NOT TRUE) \
         FROM CONVERSATION_PARTICIPANTS p JOIN CONVERSATIONS c ON c.id = p.conversation_id \
         WHERE p.conversation_id = ? AND p.left_at IS NULL ORDER BY p.user_id",
    )
    .bind(conversation.to_string())
    .fetch_all(store.pool())
    .await
    .unwrap();
    // The narrow copy the badge and the inbox read (20251201000020) equals the conversation.
    let copied: bool = sqlx::query_scalar(
        "SELECT COUNT(*) = 1 FROM CONVERSATIONS c JOIN CONVERSATION_COUNTERS k \
           ON k.conversation_id = c.id AND k.counted_total = c.counted_total \
           AND k.activity_key = c.activity_key AND k.is_archived = COALESCE(c.is_archived, FALSE) \
         WHERE c.id = ?",
    )
    .bind(conversation.to_string())
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert!(
        copied,
        "{step}: CONVERSATION_COUNTERS differs from CONVERSATIONS"
    );
    let mut unread = BTreeMap::new();
    for (user_id, stored, counted, activity_matches) in rows {
        assert!(
            activity_matches,
            "{step}: user {user_id} counted_total differs from the count"
        );
        assert_eq!(
            stored, counted,
            "{step}: user {user_id} counter {stored}, count {counted}"
        );
        let item = store
            .inbox_item(conversation, user(user_id))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            i64::try_from(item.unread_count).unwrap(),
            counted,
            "{step}: inbox"
        );
        let badge = store.unread_summary(user(user_id)).await.unwrap();
        let listed = badge
            .conversations
            .iter()
            .find(|c| c.conversation_id == conversation)
            .map_or(0, |c| c.unread_count);
        assert_eq!(i64::try_from(listed).unwrap(), counted, "{step}: badge");
        unread.insert(user_id, u64::try_from(counted).unwrap());
    }
    unread
}

fn expect(pairs: &[(i64, u64)]) -> BTreeMap<i64, u64> {
    pairs.iter().copied().collect()
}

async fn group(store: &MySqlStore, members: &[i64]) -> ConversationId {
    let id = ConversationId::new();
    store
        .create_conversation(
            NewConversation {
                id,
                kind: ConversationType::Group,
                name: Some(GroupName::parse("counters").unwrap()),
                posting_id: None,
                created_by: user(1),
                members: members.iter().map(|m| user(*m)).collect(),
                created_at: now(),
            },
            message(id, 1, system("created")),
        )
        .await
        .unwrap();
    id
}

async fn seq_of(store: &MySqlStore, id: MessageId) -> Seq {
    store.find_message(id).await.unwrap().unwrap().message.seq
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn counters_stay_exact_across_every_kind_of_write() {
    let Some(db) = common::fresh_store().await else {
        return;
    };
    let store = db.store.clone();
    for id in 1..=5 {
        store.upsert_user(user(id), None).await.unwrap();
    }
    let c = group(&store, &[2, 3, 4]).await;
    assert_eq!(
        check(&store, c, "created").await,
        expect(&[(1, 0), (2, 0), (3, 0), (4, 0)]),
        "the announcement is SYSTEM"
    );

    // Sends: +1 for every other participant; the sender is at 0.
    let m1 = say(&store, c, 1).await;
    let m2 = say(&store, c, 1).await;
    say(&store, c, 2).await;
    assert_eq!(
        check(&store, c, "sends").await,
        expect(&[(1, 1), (2, 0), (3, 3), (4, 3)])
    );

    // Deleting a message 2 has already read changes nothing for 2; 3 and 4 lose one.
    store.delete_message(m1, user(1), now()).await.unwrap();
    assert_eq!(
        check(&store, c, "delete read").await,
        expect(&[(1, 1), (2, 0), (3, 2), (4, 2)])
    );

    // A SYSTEM message neither counts nor, deleted, uncounts.
    let record = store
        .append_message(message(c, 3, system("note")))
        .await
        .unwrap()
        .view
        .message
        .id;
    assert_eq!(
        check(&store, c, "system").await,
        expect(&[(1, 1), (2, 0), (3, 0), (4, 2)]),
        "3's marker moved to its record"
    );
    store.delete_message(record, user(3), now()).await.unwrap();
    assert_eq!(
        check(&store, c, "delete system").await,
        expect(&[(1, 1), (2, 0), (3, 0), (4, 2)])
    );

    // Deleting one's own message: the others lose it, the sender had never counted it.
    let own = say(&store, c, 4).await;
    assert_eq!(
        check(&store, c, "4 sends").await,
        expect(&[(1, 2), (2, 1), (3, 1), (4, 0)])
    );
    store.delete_message(own, user(4), now()).await.unwrap();
    assert_eq!(
        check(&store, c, "delete own").await,
        expect(&[(1, 1), (2, 0), (3, 0), (4, 0)])
    );

    // mark_read forward to a middle message, back (refused), then to the newest.
    for _ in 0..3 {
        say(&store, c, 1).await;
    }
    assert_eq!(check(&store, c, "three more").await[&2], 3);
    let middle = say(&store, c, 1).await;
    say(&store, c, 1).await;
    let state = store
        .mark_read(c, user(2), Some(seq_of(&store, middle).await), now())
        .await
        .unwrap();
    assert!(state.moved);
    assert_eq!(state.unread_count, 1);
    assert_eq!(check(&store, c, "read to middle").await[&2], 1);
    let back = store
        .mark_read(c, user(2), Some(seq_of(&store, m2).await), now())
        .await
        .unwrap();
    assert!(!back.moved);
    assert_eq!(back.unread_count, 1);
    assert_eq!(check(&store, c, "read back").await[&2], 1);
    let newest = store.mark_read(c, user(2), None, now()).await.unwrap();
    assert_eq!(newest.unread_count, 0);
    assert_eq!(check(&store, c, "read newest").await[&2], 0);

    // Leaving and being re-added: nothing from before the return is unread.
    store
        .remove_participant(c, user(1), user(4), now(), None)
        .await
        .unwrap();
    say(&store, c, 1).await;
    say(&store, c, 2).await;
    check(&store, c, "4 away").await;
    store
        .add_participants(
            c,
            user(1),
            vec![user(4), user(5)],
            now(),
            1000,
            Some(message(c, 1, system("added"))),
        )
        .await
        .unwrap();
    let back = check(&store, c, "re-added").await;
    assert_eq!((back[&4], back[&5]), (0, 0));
    say(&store, c, 2).await;
    let after = check(&store, c, "after re-add").await;
    assert_eq!((after[&4], after[&5]), (1, 1));

    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn counters_stay_exact_under_racing_sends_reads_and_deletes() {
    let Some(db) = common::fresh_store().await else {
        return;
    };
    let store = db.store.clone();
    for id in 1..=4 {
        store.upsert_user(user(id), None).await.unwrap();
    }
    let c = group(&store, &[2, 3, 4]).await;
    let early: Vec<MessageId> = join_all((0..8).map(|_| say(&store, c, 4))).await;

    // Three senders, 15 messages each; meanwhile user 4 keeps marking read, and 4's early
    // messages are deleted.
    let senders = (1..=3).map(|sender| {
        let store = store.clone();
        tokio::spawn(async move {
            for _ in 0..15 {
                say(&store, c, sender).await;
            }
        })
    });
    let reader = {
        let store = store.clone();
        tokio::spawn(async move {
            for _ in 0..15 {
                store.mark_read(c, user(4), None, now()).await.unwrap();
            }
        })
    };
    let deleter = {
        let store = store.clone();
        tokio::spawn(async move {
            for id in early {
                store.delete_message(id, user(4), now()).await.unwrap();
            }
        })
    };
    for task in senders.chain([reader, deleter]) {
        task.await.unwrap();
    }
    let unread = check(&store, c, "after the race").await;
    let total: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM MESSAGES WHERE conversation_id = ? AND seq > 1")
            .bind(c.to_string())
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(total, 8 + 45, "every send stored");
    assert!(unread.values().any(|n| *n > 0), "the check is not vacuous");
    db.finish().await;
}

/// The previous system's writes, as plain SQL during the rollout: the triggers keep the
/// counters exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_follow_the_previous_systems_writes() {
    let Some(db) = common::fresh_store().await else {
        return;
    };
    let store = db.store.clone();
    for id in 1..=4 {
        store.upsert_user(user(id), None).await.unwrap();
    }
    let c = group(&store, &[2, 3]).await;
    let sql = |text: &'static str| {
        let store = store.clone();
        async move {
            sqlx::query(text)
                .bind(c.to_string())
                .execute(store.pool())
                .await
                .unwrap();
        }
    };
    say(&store, c, 1).await;

    // An INSERT without seq, as the previous system sends.
    sql("INSERT INTO MESSAGES (conversation_id, sender_id, content) VALUES (?, 2, 'legacy')").await;
    assert_eq!(
        check(&store, c, "legacy insert").await,
        expect(&[(1, 1), (2, 1), (3, 2)])
    );
    sql(
        "INSERT INTO MESSAGES (conversation_id, sender_id, content, message_type, \
         is_system_message) VALUES (?, 2, 'legacy system', 'SYSTEM', TRUE)",
    )
    .await;
    check(&store, c, "legacy system insert").await;

    // A soft delete, the previous system's way.
    sql("UPDATE MESSAGES SET deleted_at = NOW() \
         WHERE conversation_id = ? AND content = 'legacy'")
    .await;
    assert_eq!(
        check(&store, c, "legacy delete").await,
        expect(&[(1, 0), (2, 1), (3, 1)])
    );
    // And undone.
    sql("UPDATE MESSAGES SET deleted_at = NULL WHERE conversation_id = ? AND content = 'legacy'")
        .await;
    assert_eq!(
        check(&store, c, "legacy undelete").await,
        expect(&[(1, 1), (2, 1), (3, 2)])
    );

    // A read marker moved by time only.
    sql(
        "UPDATE CONVERSATION_PARTICIPANTS SET last_read_at = '2030-01-01 00:00:00' \
         WHERE conversation_id = ? AND user_id = 3",
    )
    .await;
    assert_eq!(check(&store, c, "legacy read").await[&3], 0);

    // A participant added, and one who left brought back, by plain SQL.
    sql("UPDATE CONVERSATION_PARTICIPANTS SET left_at = NOW() \
         WHERE conversation_id = ? AND user_id = 2")
    .await;
    say(&store, c, 1).await;
    sql("UPDATE CONVERSATION_PARTICIPANTS SET left_at = NULL \
         WHERE conversation_id = ? AND user_id = 2")
    .await;
    sql("INSERT INTO CONVERSATION_PARTICIPANTS (conversation_id, user_id) VALUES (?, 4)").await;
    assert_eq!(
        check(&store, c, "legacy membership").await,
        expect(&[(1, 0), (2, 2), (3, 1), (4, 3)]),
        "marker 0: all the others' live messages"
    );

    // The previous system's own activity update moves the inbox order key.
    let key = || async {
        sqlx::query_scalar::<_, i64>("SELECT activity_key FROM CONVERSATIONS WHERE id = ?")
            .bind(c.to_string())
            .fetch_one(store.pool())
            .await
            .unwrap()
    };
    let before = key().await;
    sql("UPDATE CONVERSATIONS SET last_message_at = '2030-01-02 00:00:00' WHERE id = ?").await;
    check(&store, c, "legacy activity").await;
    assert!(key().await > before, "activity_key moved");

    // Archived and unarchived by plain SQL: the copy follows (the inbox filters on it).
    sql("UPDATE CONVERSATIONS SET is_archived = TRUE WHERE id = ?").await;
    check(&store, c, "legacy archive").await;
    sql("UPDATE CONVERSATIONS SET is_archived = NULL WHERE id = ?").await;
    check(&store, c, "legacy unarchive to NULL").await;

    // A hard delete of a live message.
    sql("DELETE FROM MESSAGES WHERE conversation_id = ? AND content = 'legacy'").await;
    assert_eq!(
        check(&store, c, "legacy purge").await,
        expect(&[(1, 0), (2, 2), (3, 1), (4, 2)])
    );

    // A conversation created and removed by plain SQL has its copy created and removed.
    let legacy = ConversationId::new();
    sqlx::query(
        "INSERT INTO CONVERSATIONS (id, type, name, created_by) VALUES (?, 'GROUP', 'old', 1)",
    )
    .bind(legacy.to_string())
    .execute(store.pool())
    .await
    .unwrap();
    let copies = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM CONVERSATION_COUNTERS k JOIN CONVERSATIONS c \
               ON c.id = k.conversation_id AND c.activity_key = k.activity_key \
             WHERE k.conversation_id = ?",
        )
        .bind(legacy.to_string())
        .fetch_one(store.pool())
        .await
        .unwrap()
    };
    assert_eq!(copies().await, 1, "copied on insert");
    sqlx::query("DELETE FROM CONVERSATIONS WHERE id = ?")
        .bind(legacy.to_string())
        .execute(store.pool())
        .await
        .unwrap();
    let left: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM CONVERSATION_COUNTERS WHERE conversation_id = ?")
            .bind(legacy.to_string())
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(left, 0, "removed with the conversation");
    db.finish().await;
}
