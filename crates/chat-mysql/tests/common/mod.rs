//! Test support: a fresh, migrated database per test on the server at `DATABASE_URL`.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use chat_contract::{Fixtures, Ports};
use chat_domain::PostingId;
use chat_mysql::{MySqlSettings, MySqlStore};
use sqlx::{Connection, Executor, MySqlConnection, Row};

/// Where the test server is, without a database.
pub fn server_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".to_owned())
}

/// The URL of database `name` on the test server.
pub fn database_url(name: &str) -> String {
    let mut url = url::Url::parse(&server_url()).expect("DATABASE_URL is a URL");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// Test databases older than this are dropped by whichever test starts next.
const STALE_AFTER: Duration = Duration::from_secs(30 * 60);

/// A fresh database holding a migrated store; [`TestDb::finish`] drops it.
pub struct TestDb {
    pub store: MySqlStore,
    pub name: String,
}

impl TestDb {
    /// Drops the database (kept, and named on stderr, with `CHAT_KEEP_TEST_DB=1`).
    pub async fn finish(self) {
        self.store.pool().close().await;
        if std::env::var("CHAT_KEEP_TEST_DB").is_ok_and(|v| v == "1") {
            eprintln!("kept test database {}", self.name);
            return;
        }
        if let Ok(mut admin) = MySqlConnection::connect(&server_url()).await {
            let _ = admin
                .execute(format!("DROP DATABASE IF EXISTS `{}`", self.name).as_str())
                .await;
        }
    }
}

fn required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
        || std::env::var("CHAT_REQUIRE_MYSQL").is_ok_and(|v| v == "1")
}

fn banner(reason: &str) {
    eprintln!(
        "\n{bar}\n!!! MySQL/MariaDB NOT AVAILABLE at {url}: {reason}\n!!! chat-mysql tests are \
         SKIPPED. Set DATABASE_URL, or CHAT_REQUIRE_MYSQL=1 to make this fail.\n{bar}\n",
        bar = "!".repeat(78),
        url = server_url()
    );
}

/// An empty database `chat_test_<secs>_<uuid>` with no schema; `None` (after a loud banner)
/// when no server answers, unless the run requires one.
pub async fn empty_database() -> Option<(MySqlConnection, String)> {
    let connect = tokio::time::timeout(
        Duration::from_secs(5),
        MySqlConnection::connect(&server_url()),
    )
    .await;
    let mut admin = match connect {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            banner(&e.to_string());
            assert!(!required(), "MySQL required but unavailable: {e}");
            return None;
        }
        Err(_) => {
            banner("timed out");
            assert!(!required(), "MySQL required but unavailable: timeout");
            return None;
        }
    };
    drop_stale(&mut admin).await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let name = format!("chat_test_{now}_{}", uuid::Uuid::new_v4().simple());
    admin
        .execute(
            format!("CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
                .as_str(),
        )
        .await
        .expect("create test database");
    Some((admin, name))
}

async fn drop_stale(admin: &mut MySqlConnection) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let Ok(rows) = sqlx::query("SHOW DATABASES LIKE 'chat\\_test\\_%'")
        .fetch_all(&mut *admin)
        .await
    else {
        return;
    };
    for row in rows {
        let Ok(name) = row.try_get::<String, _>(0) else {
            continue;
        };
        let created = name
            .split('_')
            .nth(2)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
        if now.saturating_sub(created) > STALE_AFTER.as_secs() {
            let _ = admin
                .execute(format!("DROP DATABASE IF EXISTS `{name}`").as_str())
                .await;
        }
    }
}

/// Opens the store on database `name`.
pub async fn open(name: &str) -> MySqlStore {
    let mut settings = MySqlSettings::new(database_url(name));
    settings.max_connections = 24;
    MySqlStore::connect(&settings).await.expect("connect")
}

/// A fresh, migrated store, or `None` when no server answers (see [`empty_database`]).
pub async fn fresh_store() -> Option<TestDb> {
    let (_admin, name) = empty_database().await?;
    let store = open(&name).await;
    store.migrate().await.expect("migrations apply");
    Some(TestDb { store, name })
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
    let store = Arc::new(db.store);
    Some(Ports {
        conversations: store.clone(),
        messages: store.clone(),
        read_state: store.clone(),
        users: store.clone(),
        postings: store.clone(),
        fixtures: Arc::new(MySqlFixtures((*store).clone())),
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

/// A SYSTEM message body.
pub fn system(content: &str) -> chat_domain::MessageBody {
    chat_domain::MessageBody::system(
        chat_domain::MessageContent::parse(content).unwrap(),
        chat_domain::MediaMetadata::parse(r#"{"event":"test"}"#).unwrap(),
    )
}
