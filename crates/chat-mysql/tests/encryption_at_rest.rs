//! Encryption at rest as the database sees it: after sends with a key ring, plain SQL finds
//! no message text, media URL or metadata, and finds the key id (reactions stay plain); the longest message and the
//! longest media URL fit their columns once sealed.
#![allow(clippy::unwrap_used)] // Test code: a failed expectation panics.

mod common;

use std::sync::Arc;

use chat_crypto::{KeyId, KeyRing, MessageCipher, sealed_len};
use chat_domain::values::{MAX_CONTENT_CHARS, MAX_MEDIA_URL_BYTES};
use chat_domain::{
    ConversationId, Emoji, MediaMetadata, MediaUrl, MessageBody, MessageContent, MessageId,
    MessageType, UserId,
};
use chat_ports::{ConversationStore, MessageStore, NewMessage, UserDirectory};
use sqlx::Row;
use time::OffsetDateTime;

fn user(id: i64) -> UserId {
    UserId::new(id).unwrap()
}

fn cipher() -> MessageCipher {
    let id = KeyId::parse("2026-11").unwrap();
    let ring = KeyRing::from_keys([(id.clone(), [7_u8; 32])], id).unwrap();
    MessageCipher::new(Some(Arc::new(ring)))
}

async fn send(
    store: &chat_mysql::MySqlStore,
    conversation: ConversationId,
    body: MessageBody,
) -> MessageId {
    let new = NewMessage {
        id: MessageId::new(),
        conversation_id: conversation,
        sender_id: user(1),
        body,
        reply_to_id: None,
        client_message_id: None,
        created_at: OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap(),
    };
    store.append_message(new).await.unwrap().view.message.id
}

#[tokio::test]
async fn sql_sees_no_plain_text_and_the_key_id() {
    let Some(db) = common::fresh_store().await else {
        return;
    };
    let store = db.store.clone().with_cipher(cipher());
    let at = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
    store.upsert_user(user(1), None).await.unwrap();
    let direct = store
        .get_or_create_direct(ConversationId::new(), user(1), user(1), at)
        .await
        .unwrap()
        .details;
    let conversation = direct.conversation.id;
    let first = send(
        &store,
        conversation,
        MessageBody::from_user(
            MessageContent::parse("meet at the harbour at nine").unwrap(),
            MessageType::Text,
            None,
            None,
        )
        .unwrap(),
    )
    .await;
    send(
        &store,
        conversation,
        MessageBody::from_user(
            MessageContent::parse("the contract, signed").unwrap(),
            MessageType::File,
            Some(MediaUrl::parse("https://files.example.com/contract-signed.pdf").unwrap()),
            Some(MediaMetadata::parse(r#"{"filename":"contract-signed.pdf"}"#).unwrap()),
        )
        .unwrap(),
    )
    .await;

    let rows = sqlx::query(
        "SELECT content, media_url, media_url_sealed, CAST(media_metadata AS CHAR) AS meta, \
         encryption_key_id FROM MESSAGES WHERE conversation_id = ?",
    )
    .bind(conversation.to_string())
    .fetch_all(db.store.pool())
    .await
    .unwrap();
    assert_eq!(rows.len(), 2);
    for row in &rows {
        let content: String = row.get("content");
        let media_url: Option<String> = row.get("media_url");
        let sealed_url: Option<String> = row.get("media_url_sealed");
        let meta: Option<String> = row.get("meta");
        let key_id: Option<String> = row.get("encryption_key_id");
        assert_eq!(key_id.as_deref(), Some("2026-11"));
        assert_eq!(media_url, None, "a sealed row keeps media_url NULL");
        let at_rest = format!("{content} {sealed_url:?} {meta:?}");
        for secret in [
            "harbour",
            "contract",
            "files.example.com",
            "filename",
            "signed",
        ] {
            assert!(!at_rest.contains(secret), "{secret} readable in {at_rest}");
        }
        assert!(content.starts_with("v1."));
    }

    // Reactions stay plain (an emoji is no user text), on a sealed message too.
    store
        .add_reaction(first, user(1), Emoji::parse("👍").unwrap(), at)
        .await
        .unwrap();
    let emoji: String =
        sqlx::query_scalar("SELECT emoji FROM MESSAGE_REACTIONS WHERE message_id = ?")
            .bind(first.to_string())
            .fetch_one(db.store.pool())
            .await
            .unwrap();
    assert_eq!(emoji, "👍");
    db.finish().await;
}

#[tokio::test]
async fn the_longest_message_and_url_fit_once_sealed() {
    let Some(db) = common::fresh_store().await else {
        return;
    };
    let store = db.store.clone().with_cipher(cipher());
    let at = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
    store.upsert_user(user(1), None).await.unwrap();
    let direct = store
        .get_or_create_direct(ConversationId::new(), user(1), user(1), at)
        .await
        .unwrap()
        .details;
    // 4000 four-byte characters: 16000 bytes, sealed to 21 374 characters (TEXT: 65 535).
    let longest = "😀".repeat(MAX_CONTENT_CHARS);
    assert_eq!(longest.len(), 16_000);
    assert_eq!(sealed_len(longest.len()), 21_374);
    let prefix = "https://cdn.example.com/";
    let url = format!("{prefix}{}", "a".repeat(MAX_MEDIA_URL_BYTES - prefix.len()));
    assert_eq!(url.len(), MAX_MEDIA_URL_BYTES);
    assert_eq!(
        sealed_len(url.len()),
        707,
        "too long for media_url VARCHAR(500)"
    );
    let id = send(
        &store,
        direct.conversation.id,
        MessageBody::from_user(
            MessageContent::parse(&longest).unwrap(),
            MessageType::Image,
            Some(MediaUrl::parse(&url).unwrap()),
            None,
        )
        .unwrap(),
    )
    .await;
    let read = store.find_message(id).await.unwrap().unwrap().message;
    assert!(!read.undecryptable);
    assert_eq!(read.content, longest);
    assert_eq!(read.media_url.as_deref(), Some(url.as_str()));
    let (content_len, url_len): (i64, i64) = sqlx::query_as(
        "SELECT LENGTH(content), LENGTH(media_url_sealed) FROM MESSAGES WHERE id = ?",
    )
    .bind(id.to_string())
    .fetch_one(db.store.pool())
    .await
    .unwrap();
    assert_eq!((content_len, url_len), (21_374, 707));
    db.finish().await;
}
