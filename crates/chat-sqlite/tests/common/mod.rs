//! Test support: a fresh, migrated store on a database file in a temporary directory that
//! lives as long as the store's ports.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use async_trait::async_trait;
use chat_contract::{AtRest, AtRestPorts, Fixtures, Ports};
use chat_crypto::{KeyRing, MessageCipher, MessageFields, StoredFields};
use chat_domain::{MessageId, PostingId};
use chat_sqlite::{SqliteSettings, SqliteStore};
use sqlx::Row;

pub mod raw;

/// A migrated store on a fresh file, with the directory that holds it (removed on drop).
pub struct TestDb {
    pub store: SqliteStore,
    pub dir: tempfile::TempDir,
}

impl TestDb {
    /// The database file's location.
    pub fn location(&self) -> String {
        self.dir.path().join("chat.db").display().to_string()
    }
}

/// A fresh, migrated store (sealing under the key-ring switch's ring in the key-ring pass).
pub async fn fresh_store() -> TestDb {
    let dir = tempfile::tempdir().expect("temporary directory");
    let location = dir.path().join("chat.db").display().to_string();
    let store = SqliteStore::open(&location, SqliteSettings::default())
        .await
        .expect("open")
        .with_cipher(chat_contract::switch::cipher());
    store.migrate().await.expect("migrations apply");
    TestDb { store, dir }
}

struct SqliteFixtures {
    store: SqliteStore,
    /// Kept for as long as the ports: the database file lives in it.
    _dir: Arc<tempfile::TempDir>,
}

/// The same file opened with another key ring (another handle on the same writer), and
/// its text columns read and written over a connection of its own.
pub struct SqliteAtRest {
    pub store: SqliteStore,
    pub location: String,
    dir: Arc<tempfile::TempDir>,
}

#[async_trait]
impl AtRest for SqliteAtRest {
    async fn reopen(&self, ring: Option<Arc<KeyRing>>) -> AtRestPorts {
        let store = Arc::new(self.store.clone().with_cipher(MessageCipher::new(ring)));
        let fixtures = Arc::new(SqliteFixtures {
            store: self.store.clone(),
            _dir: self.dir.clone(),
        });
        AtRestPorts {
            ports: ports_on(store.clone(), fixtures),
            reencrypt: store,
        }
    }

    async fn stored(&self, id: MessageId) -> StoredFields {
        let mut conn = raw::connect(&self.location).await;
        let row = sqlx::query(
            "SELECT content, media_url, media_metadata, encryption_key_id FROM MESSAGES \
             WHERE id = ?",
        )
        .bind(id.to_string())
        .fetch_one(&mut conn)
        .await
        .expect("the message exists");
        StoredFields {
            fields: MessageFields {
                content: row.get("content"),
                media_url: row.get("media_url"),
                media_metadata: row.get("media_metadata"),
            },
            key_id: row.get("encryption_key_id"),
        }
    }

    async fn overwrite(&self, id: MessageId, stored: StoredFields) {
        let mut conn = raw::connect(&self.location).await;
        sqlx::query(
            "UPDATE MESSAGES SET content = ?, media_url = ?, media_metadata = ?, \
             encryption_key_id = ? WHERE id = ?",
        )
        .bind(stored.fields.content)
        .bind(stored.fields.media_url)
        .bind(stored.fields.media_metadata)
        .bind(stored.key_id)
        .bind(id.to_string())
        .execute(&mut conn)
        .await
        .expect("overwrite the stored columns");
    }
}

fn ports_on(store: Arc<SqliteStore>, fixtures: Arc<SqliteFixtures>) -> Ports {
    Ports::from_store(store, fixtures)
}

#[async_trait]
impl Fixtures for SqliteFixtures {
    async fn add_posting(&self, id: PostingId) {
        self.store
            .add_posting(id, Some("test posting"))
            .await
            .expect("insert posting");
    }
}

/// The contract suite's factory: a fresh database file per case.
pub async fn fresh_ports() -> Option<Ports> {
    let db = fresh_store().await;
    let location = db.location();
    let dir = Arc::new(db.dir);
    let store = Arc::new(db.store.clone());
    let at_rest = Arc::new(SqliteAtRest {
        store: db.store.clone(),
        location,
        dir: dir.clone(),
    });
    let fixtures = Arc::new(SqliteFixtures {
        store: db.store,
        _dir: dir,
    });
    Some(ports_on(store, fixtures).with_at_rest(at_rest))
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
