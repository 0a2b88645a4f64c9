//! The MySQL/MariaDB adapter of the chat service: every storage and directory port of
//! `chat-ports` on `sqlx`, and the migrations that take the seed schema to what the service
//! needs (see `docs/schema.md`).
//!
//! Each use case runs in one transaction at READ COMMITTED, serialised where races matter by
//! explicit row locks: the conversation row (`FOR UPDATE`) for `seq` assignment, idempotent
//! sends and membership changes; the participant row for read markers; unique keys for the
//! DIRECT pair and the idempotency key. Concurrent sends are group-committed: a few
//! background workers, started with the store, store whatever sends are queued in one
//! transaction (`appender`). Every call of a port has a deadline (the acquire timeout plus
//! the statement timeout) and answers `StoreError::Unavailable` when the database did not
//! answer by it.
//! Timestamps are UTC with second precision (the schema's `TIMESTAMP` columns): instants are
//! truncated to the second before they are written, and what is returned is what is stored.

#![forbid(unsafe_code)]

mod appender;
mod at_rest;
mod change_log;
mod conversations;
mod directory;
mod error;
mod feed;
mod guard;
mod messages;
mod read_state;
mod receipts;
mod rows;
mod send;
mod settings;
mod writes;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chat_crypto::MessageCipher;
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlPool, MySqlPoolOptions};
use sqlx::{Executor, migrate::Migrator};

pub use appender::AppendStats;
pub use feed::StampStats;
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

/// Prepares a connection for the store, once, when it is opened: UTC (`time_zone =
/// '+00:00'`, which the adapter's instants rely on), READ COMMITTED (the adapter takes the
/// locks it needs explicitly), and the mark `@chat_service_session = 1`. The mark is how
/// the triggers of migration `20251201000021` tell the service's writes (which append their
/// own change-feed entries) from the previous system's (for which the triggers append
/// them): see docs/schema.md, "Writes of the previous system". [`MySqlStore::connect`]
/// runs it on every connection of its pool; a pool handed to [`MySqlStore::new`] must too.
///
/// # Errors
/// The driver's error when a statement fails (the connection is then unusable).
pub async fn prepare_session(conn: &mut MySqlConnection) -> Result<(), sqlx::Error> {
    conn.execute("SET time_zone = '+00:00', @chat_service_session = 1")
        .await?;
    conn.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        .await?;
    Ok(())
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
    /// The group commit of concurrent sends, started with the store on the runtime that
    /// opened it and shared by every clone of the store; `None` when the store was made
    /// outside a tokio runtime (each send then runs alone).
    appender: Option<Arc<appender::Appender>>,
    /// The deadline of every call of a port: the acquire timeout plus the statement
    /// timeout.
    call_timeout: Duration,
    /// Room in the append queue, for a group commit started again by
    /// [`MySqlStore::with_cipher`].
    append_queue: usize,
    /// Seals message text before it is written and opens it when it is read
    /// (docs/security.md); plain without a key ring.
    cipher: MessageCipher,
    /// The change feed's stamper (started with the store) and its wake-up.
    feed: Arc<feed::Feed>,
}

impl MySqlStore {
    /// Opens a pool with `settings`. Each connection gets the session settings the adapter
    /// relies on when it is opened (see [`prepare_session`]).
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
            .after_connect(|conn, _meta| Box::pin(prepare_session(conn)))
            .connect_with(options)
            .await
            .map_err(|e| ConnectError(error::translate(&e).to_string()))?;
        Ok(Self::start(
            pool,
            settings.statement_timeout,
            settings.append_queue,
        ))
    }

    /// Wraps an existing pool, with the default statement timeout and append queue (see
    /// [`MySqlSettings`]). Its connections MUST be prepared with [`prepare_session`] when
    /// they are opened (`MySqlPoolOptions::after_connect`): without its mark, the triggers
    /// take the store's edits, deletes, reactions and membership changes for the previous
    /// system's and append each of them to the change feed a second time. Called within a
    /// tokio runtime, the append workers are spawned on it: it must outlive the store (or
    /// [`MySqlStore::shut_down`] be awaited before it stops).
    pub fn new(pool: MySqlPool) -> Self {
        Self::start(
            pool,
            MySqlSettings::DEFAULT_STATEMENT_TIMEOUT,
            MySqlSettings::DEFAULT_APPEND_QUEUE,
        )
    }

    fn start(pool: MySqlPool, statement_timeout: Duration, append_queue: usize) -> Self {
        let call_timeout = pool.options().get_acquire_timeout() + statement_timeout;
        let cipher = MessageCipher::plain();
        receipts::spawn_materializer(&pool);
        let feed = feed::spawn_stamper(&pool, call_timeout);
        Self {
            feed,
            appender: spawn_appender(&pool, append_queue, &cipher),
            pool,
            call_timeout,
            append_queue,
            cipher,
        }
    }

    /// The same store (on the same pool) sealing message text with `cipher`, with a group
    /// commit of its own (the clone's appender seals with the cipher it started with).
    #[must_use]
    pub fn with_cipher(mut self, cipher: MessageCipher) -> Self {
        self.appender = spawn_appender(&self.pool, self.append_queue, &cipher);
        self.cipher = cipher;
        self
    }

    /// Stops taking sends, finishes the batches queued and in flight (every caller is
    /// answered), then closes the pool; gives up waiting after `bound`. Whether everything
    /// finished in time. The store answers `Unavailable` afterwards.
    pub async fn shut_down(&self, bound: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + bound;
        let drained = match &self.appender {
            Some(appender) => appender.shut_down(bound).await,
            None => true,
        };
        // The receipts of the moves recorded so far (a crash leaves them to the next start).
        let materialized = tokio::time::timeout_at(deadline, receipts::materialize_all(&self.pool))
            .await
            .is_ok_and(|done| done.is_ok());
        let drained = drained && materialized;
        let closed = tokio::time::timeout_at(deadline, self.pool.close())
            .await
            .is_ok();
        drained && closed
    }

    /// The deadline of every call of a port (the acquire timeout plus the statement
    /// timeout).
    pub fn call_timeout(&self) -> Duration {
        self.call_timeout
    }

    /// Passes on the outcome of a write, waking the feed's stamper when it committed (its
    /// entries are then numbered at once, not at the next poll).
    pub(crate) fn written<T>(
        &self,
        outcome: Result<T, chat_ports::StoreError>,
    ) -> Result<T, chat_ports::StoreError> {
        if outcome.is_ok() {
            self.feed.written();
        }
        outcome
    }

    /// Runs `work` (a use case) within the call deadline, translating its failure.
    pub(crate) async fn bounded<T, E>(
        &self,
        work: impl Future<Output = Result<T, E>>,
    ) -> Result<T, chat_ports::StoreError>
    where
        E: Into<error::Failure>,
    {
        match tokio::time::timeout(self.call_timeout, work).await {
            Ok(done) => done.map_err(|e| e.into().into_store()),
            Err(_) => Err(error::timed_out()),
        }
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
            .as_deref()
            .map(appender::Appender::stats)
            .unwrap_or_default()
    }

    /// Turns every read-marker move recorded so far into `MESSAGE_READ_RECEIPTS` rows now
    /// (the background task does it within about a second anyway). How many moves.
    ///
    /// # Errors
    /// [`chat_ports::StoreError::Unavailable`] when the database fails.
    pub async fn materialize_receipts(&self) -> Result<usize, chat_ports::StoreError> {
        self.bounded(receipts::materialize_all(&self.pool)).await
    }

    /// Whether this store's stamper currently numbers the change feed's entries (holds the
    /// deployment's stamper lock; one store per database does). For metrics and tests.
    pub fn stamps_feed(&self) -> bool {
        self.feed.is_leading()
    }

    /// Whether the database answers.
    ///
    /// # Errors
    /// [`chat_ports::StoreError::Unavailable`] when it does not.
    pub async fn ping(&self) -> Result<(), chat_ports::StoreError> {
        self.bounded(sqlx::query("SELECT 1").execute(&self.pool))
            .await
            .map(|_| ())
    }
}

/// The group commit on the current tokio runtime, `None` outside one.
fn spawn_appender(
    pool: &MySqlPool,
    append_queue: usize,
    cipher: &MessageCipher,
) -> Option<Arc<appender::Appender>> {
    tokio::runtime::Handle::try_current().ok().map(|runtime| {
        Arc::new(appender::Appender::start(
            pool.clone(),
            append_queue,
            &runtime,
            cipher.clone(),
        ))
    })
}

/// The SQL of the hot read paths, exactly as the adapter sends it, for `EXPLAIN` checks in
/// tests and for `docs/schema.md`. Not a stable API.
#[doc(hidden)]
pub mod hot_queries {
    /// The inbox page (first page, active conversations). Binds: user, limit, user.
    pub fn inbox_first_page() -> String {
        crate::read_state::inbox_sql("AND NOT k.is_archived")
    }

    /// The unread badge. Binds: user.
    pub fn unread_summary() -> String {
        crate::read_state::unread_summary_sql()
    }

    /// A history page older than a seq. Binds: conversation, seq, limit.
    pub fn history_before() -> String {
        crate::messages::history_sql("AND m.seq < ?", "DESC")
    }

    /// A reader's change-feed page along the positions (a reader that keeps up). Binds:
    /// reader, after, reader, after, head, limit.
    pub fn reader_changes_by_position() -> String {
        crate::feed::reader_page_sql(true)
    }

    /// A reader's change-feed page along their conversations (a reader far behind).
    /// Binds: reader, after, after, head, reader, limit.
    pub fn reader_changes_by_conversation() -> String {
        crate::feed::reader_page_sql(false)
    }

    /// The reactions of a page of messages (here: two). Binds: the message ids.
    pub fn reactions_of_two() -> String {
        crate::rows::reactions_sql(2)
    }
}

/// How many times a use case rolled back by the server (deadlock victim, lock wait
/// timeout) is run again before its failure is answered. Each retry waits a jittered,
/// growing pause first (see [`retry_pause`]); all of them stay within the call deadline.
pub(crate) const MAX_RETRIES: u32 = 8;

/// The pause before retry number `retry` (1-based): "full jitter" over an exponentially
/// growing window (4 ms, 8 ms, … capped at 128 ms), so that transactions which deadlocked
/// each other do not meet again at once. The randomness comes from std's per-instance
/// hasher keys: the jitter needs to differ between tasks, not to be unpredictable.
pub(crate) fn retry_pause(retry: u32) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let window_ms = 4u64 << retry.saturating_sub(1).min(5);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(retry);
    Duration::from_micros(hasher.finish() % (window_ms * 1000) + 1)
}

/// Runs a use case of `$store`, running it again (up to [`MAX_RETRIES`] more times, each
/// after a jittered pause) when the server rolled it back as a deadlock victim or after a
/// lock wait timeout, then translates its failure; all of it within the store's call
/// deadline. Only whole transactions are retried: the server rolled the failed one back,
/// so nothing of it stays. Without a store, unbounded (the caller bounds it).
macro_rules! retrying {
    ($store:expr, $attempt:expr) => {{
        let attempts = async { $crate::retrying!(@loop $attempt) };
        $store.bounded(attempts).await
    }};
    ($attempt:expr) => {{
        $crate::retrying!(@loop $attempt).map_err($crate::error::Failure::into_store)
    }};
    (@loop $attempt:expr) => {{
        let mut retries = 0u32;
        loop {
            match $attempt.await {
                Err(failure)
                    if failure.is_transient_conflict() && retries < $crate::MAX_RETRIES =>
                {
                    retries += 1;
                    tracing::debug!(retries, "transaction rolled back by the server; retrying");
                    tokio::time::sleep($crate::retry_pause(retries)).await;
                }
                other => break other,
            }
        }
    }};
}
pub(crate) use retrying;
