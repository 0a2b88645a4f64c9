//! A fresh database per test on the MySQL/MariaDB server at `DATABASE_URL` (default
//! `mysql://root@127.0.0.1:3306`). Test databases are named `chat_test_<secs>_<uuid>`, so
//! that whichever test starts next drops those a dead test left behind.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chat_mysql::{MySqlSettings, MySqlStore};
use sqlx::{Connection, Executor, MySqlConnection, Row};

/// The variable that makes an absent MySQL a failure.
pub const REQUIRE: &str = "CHAT_REQUIRE_MYSQL";
/// Test databases older than this are dropped by whichever test starts next.
const STALE_AFTER: Duration = Duration::from_secs(30 * 60);

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

/// The URL of database `name` reached through `address` (such as a
/// [`crate::proxy::FaultProxy`]) instead of the test server's own address.
pub fn database_url_via(name: &str, address: std::net::SocketAddr) -> String {
    let mut url = url::Url::parse(&database_url(name)).expect("DATABASE_URL is a URL");
    url.set_host(Some(&address.ip().to_string()))
        .expect("an IP address is a host");
    url.set_port(Some(address.port()))
        .expect("the URL takes a port");
    url.to_string()
}

/// The test server's address (host and port of [`server_url`], resolved).
pub fn server_address() -> std::net::SocketAddr {
    let url = url::Url::parse(&server_url()).expect("DATABASE_URL is a URL");
    let host = url.host_str().unwrap_or("127.0.0.1");
    let port = url.port().unwrap_or(3306);
    std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .ok()
        .and_then(|mut addresses| addresses.next())
        .expect("the test server's host resolves")
}

fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after the epoch")
        .as_secs()
}

/// An empty database with no schema, and an admin connection to the server; `None`
/// (after a loud banner saying `consequence`) when no server answers, unless the run
/// requires one (see [`crate::skip_or_fail`]).
pub async fn empty_database(consequence: &str) -> Option<(MySqlConnection, String)> {
    let connect = tokio::time::timeout(
        Duration::from_secs(5),
        MySqlConnection::connect(&server_url()),
    )
    .await;
    let mut admin = match connect {
        Ok(Ok(conn)) => conn,
        failed => {
            let reason = match failed {
                Ok(Err(err)) => err.to_string(),
                _ => "timed out".to_owned(),
            };
            crate::skip_or_fail(
                "MySQL/MariaDB",
                &server_url(),
                &reason,
                consequence,
                REQUIRE,
            );
            return None;
        }
    };
    drop_stale(&mut admin).await;
    let name = format!(
        "chat_test_{}_{}",
        now_seconds(),
        uuid::Uuid::new_v4().simple()
    );
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
    let now = now_seconds();
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

/// Opens a store on database `name` with a pool of `max_connections`, sealing under the
/// key-ring switch's ring in the key-ring pass (see [`crate::key_ring`]).
pub async fn open(name: &str, max_connections: u32) -> MySqlStore {
    let mut settings = MySqlSettings::new(database_url(name));
    settings.max_connections = max_connections;
    MySqlStore::connect(&settings)
        .await
        .expect("connect")
        .with_cipher(crate::key_ring::cipher())
}

/// A fresh database holding a migrated store; [`TestDb::finish`] drops it.
pub struct TestDb {
    /// The store on it.
    pub store: MySqlStore,
    /// The database's name.
    pub name: String,
}

/// A fresh, migrated store with a pool of `max_connections`, or `None` when no server
/// answers (see [`empty_database`]).
pub async fn fresh_database(consequence: &str, max_connections: u32) -> Option<TestDb> {
    let (_admin, name) = empty_database(consequence).await?;
    let store = open(&name, max_connections).await;
    store.migrate().await.expect("migrations apply");
    Some(TestDb { store, name })
}

impl TestDb {
    /// Closes the store's pool and drops the database (kept, and named on stderr, with
    /// `CHAT_KEEP_TEST_DB=1`).
    pub async fn finish(self) {
        self.store.pool().close().await;
        drop_database(&self.name).await;
    }
}

/// Drops database `name` (kept, and named on stderr, with `CHAT_KEEP_TEST_DB=1`); a
/// failure is left to the stale-database sweep.
pub async fn drop_database(name: &str) {
    if std::env::var("CHAT_KEEP_TEST_DB").is_ok_and(|v| v == "1") {
        eprintln!("kept test database {name}");
        return;
    }
    if let Ok(mut admin) = MySqlConnection::connect(&server_url()).await {
        let _ = admin
            .execute(format!("DROP DATABASE IF EXISTS `{name}`").as_str())
            .await;
    }
}
