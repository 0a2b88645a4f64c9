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
