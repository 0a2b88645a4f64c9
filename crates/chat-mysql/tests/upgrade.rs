//! The upgrade case: a database created from the schema document as written, holding rows
//! the previous system wrote its way, is migrated and then served by the adapter.
#![allow(clippy::unwrap_used)] // Test code: a failed expectation panics.

mod common;

use chat_domain::{
    ConversationId, Emoji, MessageBody, MessageContent, MessageId, MessageType, UserId,
};
use chat_ports::{
    ConversationStore, HistoryQuery, MessageStore, NewMessage, PageLimit, ReadStateStore,
};
use sqlx::{Connection, Executor, MySqlConnection};
use time::OffsetDateTime;

fn user(id: i64) -> UserId {
    UserId::new(id).unwrap()
}

/// Rows written the previous system's way: ids by `UUID()`, five messages in one second,
/// a reaction, a read marker by time only.
const LEGACY_ROWS: &str = r"
SET time_zone = '+00:00';
INSERT INTO app_users (id, first_name, last_name, email) VALUES
    (1, 'Ada', 'Lovelace', 'ada@example.com'), (2, 'Grace', NULL, 'grace@example.com');
INSERT INTO CONVERSATIONS (type, created_by, created_at, last_message_at)
    VALUES ('DIRECT', 1, '2025-01-01 10:00:00', '2025-01-01 10:00:10');
SET @c = (SELECT id FROM CONVERSATIONS LIMIT 1);
INSERT INTO CONVERSATION_PARTICIPANTS (conversation_id, user_id, role) VALUES (@c, 1, 'MEMBER');
INSERT INTO CONVERSATION_PARTICIPANTS (conversation_id, user_id, role, last_read_at)
    VALUES (@c, 2, 'MEMBER', '2025-01-01 10:00:05');
INSERT INTO MESSAGES (conversation_id, sender_id, content, created_at) VALUES (@c, 1, 'one', '2025-01-01 10:00:05');
INSERT INTO MESSAGES (conversation_id, sender_id, content, created_at) VALUES (@c, 2, 'two', '2025-01-01 10:00:05');
INSERT INTO MESSAGES (conversation_id, sender_id, content, created_at) VALUES (@c, 1, 'three', '2025-01-01 10:00:05');
INSERT INTO MESSAGES (conversation_id, sender_id, content, created_at) VALUES (@c, 2, 'four', '2025-01-01 10:00:05');
INSERT INTO MESSAGES (conversation_id, sender_id, content, created_at) VALUES (@c, 1, 'five', '2025-01-01 10:00:05');
INSERT INTO MESSAGES (conversation_id, sender_id, content, created_at) VALUES (@c, 1, 'six', '2025-01-01 10:00:10');
INSERT INTO MESSAGES (conversation_id, sender_id, content, created_at) VALUES (@c, 1, 'seven', '2025-01-01 10:00:10');
INSERT INTO MESSAGE_REACTIONS (message_id, user_id, emoji)
    SELECT id, 2, '👍' FROM MESSAGES WHERE content = 'one';
";

#[tokio::test]
async fn a_seed_database_with_legacy_rows_is_migrated_and_served() {
    let Some((_admin, name)) = common::empty_database().await else {
        return;
    };
    let url = {
        let mut url = url::Url::parse(&common::server_url()).unwrap();
        url.set_path(&format!("/{name}"));
        url.to_string()
    };
    let mut legacy = MySqlConnection::connect(&url).await.unwrap();
    legacy
        .execute(include_str!("fixtures/seed_schema.sql"))
        .await
        .expect("the seed schema as documented");
    legacy.execute(LEGACY_ROWS).await.expect("legacy rows");
    let conversation: String = sqlx::query_scalar("SELECT id FROM CONVERSATIONS")
        .fetch_one(&mut legacy)
        .await
        .unwrap();
    assert_eq!(
        &conversation[14..15],
        "1",
        "ids made by UUID() are version 1"
    );
    let conversation = ConversationId::parse(&conversation).unwrap();

    let store = common::open(&name).await;
    store
        .migrate()
        .await
        .expect("migrations apply on the seed schema");

    // History: the five messages of one second in insertion order, seqs assigned.
    let page = store
        .history(
            conversation,
            HistoryQuery::Latest(PageLimit::new(20).unwrap()),
        )
        .await
        .unwrap();
    let got: Vec<(i64, String)> = page
        .items
        .iter()
        .rev()
        .map(|v| (v.message.seq.get(), v.message.content.clone()))
        .collect();
    let expected: Vec<(i64, String)> = ["one", "two", "three", "four", "five", "six", "seven"]
        .iter()
        .enumerate()
        .map(|(i, c)| (i64::try_from(i).unwrap() + 1, (*c).to_owned()))
        .collect();
    assert_eq!(got, expected);
    assert_eq!(page.items[6].sender_name.as_deref(), Some("Ada Lovelace"));
    assert_eq!(page.items[6].reactions[0].emoji, "👍");

    // Unread: user 2 read up to 10:00:05 (seq 5); six and seven from user 1 are unread.
    let theirs = store
        .inbox_item(conversation, user(2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(theirs.membership.last_read_seq.get(), 5);
    assert_eq!(theirs.unread_count, 2);
    let mine = store
        .inbox_item(conversation, user(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(mine.unread_count, 2, "two and four, from user 2");
    assert_eq!(mine.last_message.unwrap().message.content, "seven");

    // The pair's conversation is found, not duplicated.
    let at = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
    let found = store
        .get_or_create_direct(ConversationId::new(), user(2), user(1), at)
        .await
        .unwrap();
    assert!(!found.created);
    assert_eq!(found.details.conversation.id, conversation);

    // Sending takes the next seq and a different emoji joins the legacy one.
    let sent = store
        .append_message(NewMessage {
            id: MessageId::new(),
            conversation_id: conversation,
            sender_id: user(2),
            body: MessageBody::from_user(
                MessageContent::parse("eight").unwrap(),
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
        .unwrap();
    assert_eq!(sent.view.message.seq.get(), 8);
    let first = page.items[6].message.id;
    let reacted = store
        .add_reaction(first, user(2), Emoji::parse("👍🏿").unwrap(), at)
        .await
        .unwrap();
    assert!(reacted.changed);
    assert_eq!(reacted.reactions.len(), 2);

    // The previous system, still writing during the rollout: its message gets the next seq
    // from the trigger, and its time-only read marker moves last_read_seq.
    legacy
        .execute(
            sqlx::query(
                "INSERT INTO MESSAGES (conversation_id, sender_id, content) VALUES (?, 1, 'nine')",
            )
            .bind(conversation.to_string()),
        )
        .await
        .unwrap();
    legacy
        .execute(
            sqlx::query(
                "UPDATE CONVERSATION_PARTICIPANTS SET last_read_at = '2025-01-01 10:00:05' \
                 WHERE conversation_id = ? AND user_id = 1",
            )
            .bind(conversation.to_string()),
        )
        .await
        .unwrap();
    let newest = store
        .history(
            conversation,
            HistoryQuery::Latest(PageLimit::new(1).unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(newest.items[0].message.content, "nine");
    assert_eq!(newest.items[0].message.seq.get(), 9);
    let mine = store
        .inbox_item(conversation, user(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(mine.membership.last_read_seq.get(), 5);
    assert_eq!(mine.unread_count, 1, "eight, from user 2");
    let next = store
        .append_message(NewMessage {
            id: MessageId::new(),
            conversation_id: conversation,
            sender_id: user(1),
            body: MessageBody::from_user(
                MessageContent::parse("ten").unwrap(),
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
        .unwrap();
    assert_eq!(next.view.message.seq.get(), 10);

    // Running the migrations again changes nothing.
    store.migrate().await.unwrap();
    store.pool().close().await;
    drop(legacy);
    common::TestDb { store, name }.finish().await;
}
