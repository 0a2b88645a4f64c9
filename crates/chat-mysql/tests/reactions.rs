//! Emoji that the schema's collation confuses stay different reactions.
#![allow(clippy::unwrap_used)] // Test code: a failed expectation panics.

mod common;

use chat_domain::{
    ConversationId, Emoji, MessageBody, MessageContent, MessageId, MessageType, UserId,
};
use chat_ports::{ConversationStore, MessageStore, NewMessage, UserDirectory};
use time::OffsetDateTime;

fn user(id: i64) -> UserId {
    UserId::new(id).unwrap()
}

#[tokio::test]
async fn different_emoji_from_one_user_are_different_reactions() {
    let Some(db) = common::fresh_store().await else {
        return;
    };
    let store = db.store.clone();
    let at = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
    store.upsert_user(user(1), None).await.unwrap();
    let direct = store
        .get_or_create_direct(ConversationId::new(), user(1), user(1), at)
        .await
        .unwrap()
        .details;
    let message = store
        .append_message(NewMessage {
            id: MessageId::new(),
            conversation_id: direct.conversation.id,
            sender_id: user(1),
            body: MessageBody::from_user(
                MessageContent::parse("dinner").unwrap(),
                MessageType::Text,
                None,
                None,
            )
            .unwrap(),
            reply_to_id: None,
            client_message_id: None,
            created_at: at,
        })
        .await
        .unwrap()
        .view
        .message
        .id;
    // The collation the seed schema uses really does confuse them.
    let equal: i64 = sqlx::query_scalar(
        "SELECT CAST('🍣' AS CHAR CHARACTER SET utf8mb4) COLLATE utf8mb4_unicode_ci \
         = CAST('🍺' AS CHAR CHARACTER SET utf8mb4) COLLATE utf8mb4_unicode_ci",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(equal, 1, "the trap this test guards against");

    for (i, emoji) in ["🍣", "🍺", "👍", "👍🏿"].into_iter().enumerate() {
        let change = store
            .add_reaction(message, user(1), Emoji::parse(emoji).unwrap(), at)
            .await
            .unwrap();
        assert!(change.changed, "{emoji} is a new reaction");
        assert_eq!(change.reactions.len(), i + 1);
    }
    let again = store
        .add_reaction(message, user(1), Emoji::parse("🍺").unwrap(), at)
        .await
        .unwrap();
    assert!(!again.changed, "the same emoji twice is one reaction");
    let emoji: Vec<String> = again.reactions.iter().map(|r| r.emoji.clone()).collect();
    assert_eq!(emoji, vec!["🍣", "🍺", "👍", "👍🏿"]);
    let rows: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM MESSAGE_REACTIONS WHERE message_id = ?")
            .bind(message.to_string())
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(rows, 4);
    // Removing 🍺 leaves 🍣 alone.
    let removed = store
        .remove_reaction(message, user(1), Emoji::parse("🍺").unwrap())
        .await
        .unwrap();
    assert!(removed.changed);
    let left: Vec<&str> = removed.reactions.iter().map(|r| r.emoji.as_str()).collect();
    assert_eq!(left, vec!["🍣", "👍", "👍🏿"]);
    db.finish().await;
}

/// Issue 11, item 3: one user toggling one reaction from several tasks at once is a
/// legitimate race. MariaDB picks deadlock victims among such transactions; the adapter
/// must absorb them (bounded retries with jittered backoff), never answer `Unavailable`,
/// and leave the reaction in a state one of the calls explains.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_users_concurrent_toggles_of_one_reaction_never_fail() {
    let Some(db) = common::fresh_store().await else {
        return;
    };
    let store = db.store.clone();
    let at = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
    store.upsert_user(user(1), None).await.unwrap();
    let direct = store
        .get_or_create_direct(ConversationId::new(), user(1), user(1), at)
        .await
        .unwrap()
        .details;
    let message = store
        .append_message(NewMessage {
            id: MessageId::new(),
            conversation_id: direct.conversation.id,
            sender_id: user(1),
            body: MessageBody::from_user(
                MessageContent::parse("toggle me").unwrap(),
                MessageType::Text,
                None,
                None,
            )
            .unwrap(),
            reply_to_id: None,
            client_message_id: None,
            created_at: at,
        })
        .await
        .unwrap()
        .view
        .message
        .id;
    let emoji = Emoji::parse("👍").unwrap();
    // Twelve tasks, each toggling the same reaction in a loop, all at once: the shape of
    // the measured incident (one user, many connections, one reaction).
    let mut tasks = Vec::new();
    for task in 0..12u32 {
        let store = store.clone();
        let emoji = emoji.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..120u32 {
                let change = if (task + round) % 2 == 0 {
                    store
                        .add_reaction(message, user(1), emoji.clone(), at)
                        .await
                } else {
                    store.remove_reaction(message, user(1), emoji.clone()).await
                };
                let change = change
                    .unwrap_or_else(|e| panic!("task {task}, round {round}: a toggle failed: {e}"));
                assert!(change.reactions.len() <= 1, "one reaction at most");
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    // Consistent afterwards: at most one row, and the view agrees with the rows.
    let rows: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM MESSAGE_REACTIONS WHERE message_id = ?")
            .bind(message.to_string())
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert!(rows <= 1, "{rows} rows for one reaction");
    let seen = store.find_message(message).await.unwrap().unwrap();
    let counted: u32 = seen.reactions.iter().map(|r| r.count).sum();
    assert_eq!(i64::from(counted), rows, "the view agrees with the rows");
    db.finish().await;
}
