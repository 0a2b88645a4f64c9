//! Test support: a fresh, migrated database per test on the server at `DATABASE_URL`.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use async_trait::async_trait;
use chat_contract::{Fixtures, Ports};
use chat_domain::PostingId;
use chat_mysql::MySqlStore;
use sqlx::MySqlConnection;

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
}

/// The contract suite's factory. Its database is left for the stale-database sweep.
pub async fn fresh_ports() -> Option<Ports> {
    let db = fresh_store().await?;
    let fixtures = Arc::new(MySqlFixtures(db.store.clone()));
    Some(Ports::from_store(Arc::new(db.store), fixtures))
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
