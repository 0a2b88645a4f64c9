//! Test support: a fresh, migrated database per test on the server at `DATABASE_URL`.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use async_trait::async_trait;
use chat_contract::{AtRest, AtRestPorts, Fixtures, Ports};
use chat_crypto::{KeyRing, MessageCipher, MessageFields, StoredFields};
use chat_domain::{
    ConversationId, ConversationType, FeedPos, GroupName, MessageId, PostingId, UserId,
};
use chat_mysql::MySqlStore;
use chat_ports::{ChangeFeed, ConversationStore, NewConversation, NewMessage};
use sqlx::{MySqlConnection, Row};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// What happens to these tests without a server.
const SKIPPED: &str = "chat-mysql tests are SKIPPED";

// Each test binary uses a different part of this module.
#[allow(unused_imports)]
pub use chat_test_support::mysql::{TestDb, database_url, server_url};

/// An empty database `chat_test_<secs>_<uuid>` with no schema; `None` (after a loud banner)
/// when no server answers, unless the run requires one.
pub async fn empty_database() -> Option<(MySqlConnection, String)> {
    chat_test_support::mysql::empty_database(SKIPPED).await
}

/// Opens the store on database `name`.
pub async fn open(name: &str) -> MySqlStore {
    chat_test_support::mysql::open(name, 24).await
}

/// A fresh, migrated store, or `None` when no server answers (see [`empty_database`]).
pub async fn fresh_store() -> Option<TestDb> {
    chat_test_support::mysql::fresh_database(SKIPPED, 24).await
}

struct MySqlFixtures(MySqlStore);

#[async_trait]
impl Fixtures for MySqlFixtures {
    async fn add_posting(&self, id: PostingId) {
        sqlx::query("INSERT INTO POSTINGS (id, title) VALUES (?, 'test posting')")
            .bind(id.to_string())
            .execute(self.0.pool())
            .await
            .expect("insert posting");
    }

    /// Waits until the stamper has numbered every committed entry (reads wait for it
    /// too, but only boundedly: this is the test's unbounded-enough wait on a loaded
    /// machine).
    async fn feed_settled(&self) {
        let start = std::time::Instant::now();
        loop {
            let pending: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM CHANGE_LOG WHERE pos IS NULL")
                    .fetch_one(self.0.pool())
                    .await
                    .expect("count unstamped entries");
            if pending == 0 {
                return;
            }
            assert!(
                start.elapsed() < std::time::Duration::from_secs(30),
                "{pending} entries still unstamped after 30 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }
}

/// The same database opened with another key ring, and its text columns read and written
/// with plain SQL.
pub struct MySqlAtRest(pub MySqlStore);

/// The stored text columns of a message as SQL sees them, with its key id (the media URL
/// from `media_url_sealed` when the row names a key).
pub async fn stored_columns(store: &MySqlStore, id: MessageId) -> StoredFields {
    let row = sqlx::query(
        "SELECT content, media_url, media_url_sealed, CAST(media_metadata AS CHAR) AS meta, \
         encryption_key_id FROM MESSAGES WHERE id = ?",
    )
    .bind(id.to_string())
    .fetch_one(store.pool())
    .await
    .expect("the message exists");
    let key_id: Option<String> = row.get("encryption_key_id");
    let media_url: Option<String> = if key_id.is_some() {
        row.get("media_url_sealed")
    } else {
        row.get("media_url")
    };
    StoredFields {
        fields: MessageFields {
            content: row.get("content"),
            media_url,
            media_metadata: row.get("meta"),
        },
        key_id,
    }
}

#[async_trait]
impl AtRest for MySqlAtRest {
    async fn reopen(&self, ring: Option<Arc<KeyRing>>) -> AtRestPorts {
        let store = Arc::new(self.0.clone().with_cipher(MessageCipher::new(ring)));
        let fixtures = Arc::new(MySqlFixtures(self.0.clone()));
        AtRestPorts {
            ports: Ports::from_store(store.clone(), fixtures),
            reencrypt: store,
        }
    }

    async fn stored(&self, id: MessageId) -> StoredFields {
        stored_columns(&self.0, id).await
    }

    async fn overwrite(&self, id: MessageId, stored: StoredFields) {
        let sealed = stored.key_id.is_some();
        let url = stored.fields.media_url;
        sqlx::query(
            "UPDATE MESSAGES SET content = ?, media_url = ?, media_url_sealed = ?, \
             media_metadata = ?, encryption_key_id = ? WHERE id = ?",
        )
        .bind(stored.fields.content)
        .bind(if sealed { None } else { url.clone() })
        .bind(if sealed { url } else { None })
        .bind(stored.fields.media_metadata)
        .bind(stored.key_id)
        .bind(id.to_string())
        .execute(self.0.pool())
        .await
        .expect("overwrite the stored columns");
    }
}

/// The contract suite's factory. Its database is left for the stale-database sweep.
pub async fn fresh_ports() -> Option<Ports> {
    let db = fresh_store().await?;
    let fixtures = Arc::new(MySqlFixtures(db.store.clone()));
    let at_rest = Arc::new(MySqlAtRest(db.store.clone()));
    Some(Ports::from_store(Arc::new(db.store), fixtures).with_at_rest(at_rest))
}

/// A text message body.
pub fn text(content: &str) -> chat_domain::MessageBody {
    chat_domain::MessageBody::from_user(
        chat_domain::MessageContent::parse(content).unwrap(),
        chat_domain::MessageType::Text,
        None,
        None,
    )
    .unwrap()
}

/// A SYSTEM message body.
pub fn system(content: &str) -> chat_domain::MessageBody {
    chat_domain::MessageBody::system(
        chat_domain::MessageContent::parse(content).unwrap(),
        chat_domain::MediaMetadata::parse(r#"{"event":"test"}"#).unwrap(),
    )
}

// The change feed's tests (`change_feed.rs`, `legacy_writes.rs`): a user, an instant, a
// message, a group, and waiting for the stamper.

pub fn user(id: i64) -> UserId {
    UserId::new(id).unwrap()
}

pub fn at(second: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_800_000_000 + second).unwrap()
}

pub fn message(conversation: ConversationId, sender: i64, content: &str) -> NewMessage {
    NewMessage {
        id: MessageId::new(),
        conversation_id: conversation,
        sender_id: user(sender),
        body: text(content),
        reply_to_id: None,
        client_message_id: None,
        created_at: at(1),
    }
}

pub async fn group(store: &MySqlStore, creator: i64, members: &[i64]) -> ConversationId {
    let id = ConversationId::new();
    store
        .create_conversation(
            NewConversation {
                id,
                kind: ConversationType::Group,
                name: Some(GroupName::parse("feed").unwrap()),
                posting_id: None,
                created_by: user(creator),
                members: members.iter().map(|m| user(*m)).collect(),
                created_at: at(0),
            },
            NewMessage {
                body: system("created"),
                ..message(id, creator, "created")
            },
        )
        .await
        .unwrap();
    id
}

pub async fn unstamped(store: &MySqlStore) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM CHANGE_LOG WHERE pos IS NULL")
        .fetch_one(store.pool())
        .await
        .unwrap()
}

/// Waits until every committed entry is numbered; the head then.
pub async fn settled(store: &MySqlStore) -> FeedPos {
    let start = Instant::now();
    while unstamped(store).await > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "entries still unstamped after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    store.feed_bounds().await.unwrap().head
}
