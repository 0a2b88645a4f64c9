//! The MySQL/MariaDB adapter of the chat service: every storage and directory port of
//! `chat-ports` on `sqlx`, and the migrations that take the seed schema to what the service
//! needs (see `docs/schema.md`).
//!
//! Each use case runs in one transaction at READ COMMITTED, serialised where races matter by
//! explicit row locks: the conversation row (`FOR UPDATE`) for `seq` assignment, idempotent
//! sends and membership changes; the participant row for read markers; unique keys for the
//! DIRECT pair and the idempotency key. Concurrent sends are group-committed: a few
//! background workers store whatever sends are queued in one transaction (`appender`).
//! Timestamps are UTC with second precision (the schema's `TIMESTAMP` columns): instants are
//! truncated to the second before they are written, and what is returned is what is stored.

mod appender;
mod at_rest;
mod conversations;
mod directory;
mod error;
mod messages;
mod read_state;
mod rows;
mod send;
mod settings;
mod writes;

use std::sync::{Arc, OnceLock};

use chat_crypto::MessageCipher;
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::{Executor, migrate::Migrator};

pub use appender::AppendStats;
pub use settings::{MySqlSettings, SettingsError};

/// The schema migrations, embedded at compile time from the workspace's `migrations/`.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations");

/// The database could not be reached or its URL is invalid.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to the database: {0}")]
pub struct ConnectError(String);

/// A migration failed.
#[derive(Debug, thiserror::Error)]
#[error("database migration failed: {0}")]
pub struct MigrationError(String);

/// Applies the pending migrations of [`MIGRATOR`].
///
/// # Errors
/// [`MigrationError`] when a migration fails or the applied ones differ from the embedded
/// ones.
pub async fn migrate(pool: &MySqlPool) -> Result<(), MigrationError> {
    MIGRATOR
        .run(pool)
        .await
        .map_err(|e| MigrationError(e.to_string()))
}

/// How busy the pool is, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Open connections, idle or in use.
    pub size: u32,
    /// Open connections not in use.
    pub idle: u32,
    /// The configured maximum.
    pub max: u32,
}

/// Every port on one MySQL connection pool.
#[derive(Debug, Clone)]
pub struct MySqlStore {
    pool: MySqlPool,
    /// The group commit of concurrent sends, started by the first `append_message` (it
    /// needs a tokio runtime) and shared by every clone of the store.
    appender: Arc<OnceLock<appender::Appender>>,
    /// Seals message text before it is written and opens it when it is read
    /// (docs/security.md); plain without a key ring.
    cipher: MessageCipher,
}

impl MySqlStore {
    /// Opens a pool with `settings`. Each connection gets the session settings the adapter
    /// relies on: `time_zone = '+00:00'` and READ COMMITTED isolation.
    ///
    /// # Errors
    /// [`ConnectError`] when the URL is invalid or the server does not answer within the
    /// acquire timeout.
    pub async fn connect(settings: &MySqlSettings) -> Result<Self, ConnectError> {
        let options: MySqlConnectOptions = settings
            .url
            .parse()
            .map_err(|_| ConnectError("invalid database URL".into()))?;
        let options = options
            .timezone(Some(String::from("+00:00")))
            .charset("utf8mb4");
        let pool = MySqlPoolOptions::new()
            .max_connections(settings.max_connections)
            .min_connections(settings.min_connections)
            .acquire_timeout(settings.acquire_timeout)
            .idle_timeout(settings.idle_timeout)
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    conn.execute("SET time_zone = '+00:00'").await?;
                    conn.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                        .await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(|e| ConnectError(error::translate(&e).to_string()))?;
        Ok(Self::new(pool))
    }

    /// Wraps an existing pool. Its connections MUST use `time_zone = '+00:00'`; READ
    /// COMMITTED is recommended (the adapter takes the locks it needs explicitly).
    pub fn new(pool: MySqlPool) -> Self {
        Self {
            pool,
            appender: Arc::default(),
            cipher: MessageCipher::plain(),
        }
    }

    /// The same store (on the same pool) sealing message text with `cipher`, with a group
    /// commit of its own.
    #[must_use]
    pub fn with_cipher(mut self, cipher: MessageCipher) -> Self {
        self.cipher = cipher;
        // A clone shares the group commit, which seals with the cipher it started with.
        self.appender = Arc::default();
        self
    }

    /// Applies the pending migrations (see [`migrate`]).
    ///
    /// # Errors
    /// [`MigrationError`] when a migration fails.
    pub async fn migrate(&self) -> Result<(), MigrationError> {
        migrate(&self.pool).await
    }

    /// The pool, for the few callers that need plain SQL (test fixtures, health checks).
    pub fn pool(&self) -> &MySqlPool {
        &self.pool
    }

    /// The pool's current size and idle connections.
    pub fn pool_stats(&self) -> PoolStats {
        PoolStats {
            size: self.pool.size(),
            idle: u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX),
            max: self.pool.options().get_max_connections(),
        }
    }

    /// How the appends were grouped into transactions so far (zero before the first).
    pub fn append_stats(&self) -> AppendStats {
        self.appender
            .get()
            .map(appender::Appender::stats)
            .unwrap_or_default()
    }

    /// Whether the database answers.
    ///
    /// # Errors
    /// [`chat_ports::StoreError::Unavailable`] when it does not.
    pub async fn ping(&self) -> Result<(), chat_ports::StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(|e| error::translate(&e))
    }
}

/// The SQL of the hot read paths, exactly as the adapter sends it, for `EXPLAIN` checks in
/// tests and for `docs/schema.md`. Not a stable API.
#[doc(hidden)]
pub mod hot_queries {
    /// The inbox page (first page, active conversations). Binds: user, limit.
    pub fn inbox_first_page() -> String {
        crate::read_state::inbox_sql("AND c.is_archived IS NOT TRUE")
    }

    /// The unread badge. Binds: user.
    pub fn unread_summary() -> String {
        crate::read_state::unread_summary_sql()
    }

    /// A history page older than a seq. Binds: conversation, seq, limit.
    pub fn history_before() -> String {
        crate::messages::history_sql("AND m.seq < ?", "DESC")
    }

    /// The reactions of a page of messages (here: two). Binds: the message ids.
    pub fn reactions_of_two() -> String {
        crate::rows::reactions_sql(2)
    }
}

/// Runs a use case, running it again (up to three more times) when the server rolled it back
/// as a deadlock victim or after a lock wait timeout, then translates its failure.
macro_rules! retrying {
    ($attempt:expr) => {{
        let mut retries = 0u32;
        loop {
            match $attempt.await {
                Err(failure) if failure.is_transient_conflict() && retries < 3 => {
                    retries += 1;
                    tracing::debug!(retries, "transaction rolled back by the server; retrying");
                }
                other => break other.map_err($crate::error::Failure::into_store),
            }
        }
    }};
}
pub(crate) use retrying;
