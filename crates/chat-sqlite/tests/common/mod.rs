//! Test support: a fresh, migrated store on a database file in a temporary directory that
//! lives as long as the store's ports.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use async_trait::async_trait;
use chat_contract::{Fixtures, Ports};
use chat_domain::PostingId;
use chat_sqlite::{SqliteSettings, SqliteStore};

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

/// A fresh, migrated store.
pub async fn fresh_store() -> TestDb {
    let dir = tempfile::tempdir().expect("temporary directory");
    let location = dir.path().join("chat.db").display().to_string();
    let store = SqliteStore::open(&location, SqliteSettings::default())
        .await
        .expect("open");
    store.migrate().await.expect("migrations apply");
    TestDb { store, dir }
}

struct SqliteFixtures {
    store: SqliteStore,
    /// Kept for as long as the ports: the database file lives in it.
    _dir: tempfile::TempDir,
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
    let store = Arc::new(db.store.clone());
    Some(Ports {
        conversations: store.clone(),
        messages: store.clone(),
        read_state: store.clone(),
        users: store.clone(),
        postings: store,
        fixtures: Arc::new(SqliteFixtures {
            store: db.store,
            _dir: db.dir,
        }),
    })
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
