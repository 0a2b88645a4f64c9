//! The embedded SQLite adapter of the chat service: every storage and directory port of
//! `chat-ports` on `sqlx`'s bundled SQLite, in one database file, with its own migrations
//! (the MySQL schema's tables and meanings in SQLite's types; see
//! `migrations/20260101000001_schema.sql`).
//!
//! Durability: the file is in WAL mode with `synchronous=FULL`, so a write is on disk when
//! its use case returns (it survives `kill -9` and power loss). Concurrency: SQLite has one
//! writer, so every write use case goes through ONE writer task that batches whatever is
//! queued into one `BEGIN IMMEDIATE` transaction, a savepoint per request ([`writer`]);
//! reads run in parallel on a pool of read connections, each multi-query read in one read
//! transaction (one snapshot). One process owns a file: an advisory lock on `<file>.lock`
//! refuses a second one. Timestamps are stored as whole seconds since the epoch (UTC), as
//! the MySQL adapter's `TIMESTAMP` columns do: instants are truncated to the second when
//! written, and what is returned is what is stored.

#![forbid(unsafe_code)]

mod at_rest;
mod conversations;
mod directory;
mod error;
mod feed;
mod guard;
mod messages;
mod read_state;
mod rows;
mod writer;

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chat_crypto::MessageCipher;
use chat_domain::PostingId;
use chat_ports::StoreError;
use futures::future::BoxFuture;
use sqlx::SqliteConnection;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

pub use error::{MigrationError, OpenError};
pub use writer::WriteStats;

use crate::error::{Outcome, translate};

/// The schema migrations, embedded at compile time from this crate's `migrations/`.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Operator-tunable settings of a SQLite store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteSettings {
    /// Connections that serve reads in parallel (default 4).
    pub read_connections: u32,
    /// How long a statement waits for a lock held by another connection before failing
    /// with `StoreError::Unavailable` (default 5 s).
    pub busy_timeout: Duration,
    /// The most write requests one transaction takes (default 256).
    pub max_batch: usize,
}

impl SqliteSettings {
    /// The default number of read connections.
    pub const DEFAULT_READ_CONNECTIONS: u32 = 4;
    /// The default busy timeout.
    pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
    /// The default batch size of the writer.
    pub const DEFAULT_MAX_BATCH: usize = 256;
}

impl Default for SqliteSettings {
    fn default() -> Self {
        Self {
            read_connections: Self::DEFAULT_READ_CONNECTIONS,
            busy_timeout: Self::DEFAULT_BUSY_TIMEOUT,
            max_batch: Self::DEFAULT_MAX_BATCH,
        }
    }
}

/// The lock file that marks a database file as owned by one process: `<file>.lock`.
pub fn lock_path(database: &Path) -> PathBuf {
    let mut name = database.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    database.with_file_name(name)
}

/// The database file a location names: a plain path, `sqlite://path` or `sqlite:path`
/// (a query string such as `?mode=rwc` is ignored).
///
/// # Errors
/// [`OpenError::InvalidLocation`] for an empty location or an in-memory database.
pub fn database_path(location: &str) -> Result<PathBuf, OpenError> {
    let invalid = |reason: &str| OpenError::InvalidLocation {
        location: location.to_owned(),
        reason: reason.to_owned(),
    };
    let path = location
        .strip_prefix("sqlite://")
        .or_else(|| location.strip_prefix("sqlite:"))
        .unwrap_or(location);
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() {
        return Err(invalid("no file path"));
    }
    if path == ":memory:" || path.starts_with("file::memory:") {
        return Err(invalid(
            "an in-memory SQLite database is not supported; use the in-memory store instead",
        ));
    }
    Ok(PathBuf::from(path))
}

/// How busy the connections are, for metrics: the read pool and the one write connection
/// together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Open connections, idle or in use.
    pub size: u32,
    /// Open connections not in use.
    pub idle: u32,
    /// The most connections there can be (the readers and the writer).
    pub max: u32,
}

/// The exclusive advisory lock on `<file>.lock`, held for as long as the store (and its
/// writer) lives.
#[derive(Debug)]
struct FileLock {
    _file: File,
}

impl FileLock {
    fn acquire(database: &Path) -> Result<Self, OpenError> {
        let lock = lock_path(database);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock)
            .map_err(|e| OpenError::Unwritable {
                path: database.to_owned(),
                reason: format!("cannot create lock file {}: {e}", lock.display()),
            })?;
        match fs4::fs_std::FileExt::try_lock_exclusive(&file) {
            Ok(true) => Ok(Self { _file: file }),
            Ok(false) => Err(OpenError::InUse {
                path: database.to_owned(),
                lock,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Err(OpenError::InUse {
                path: database.to_owned(),
                lock,
            }),
            Err(e) => Err(OpenError::Unwritable {
                path: database.to_owned(),
                reason: format!("cannot lock {}: {e}", lock.display()),
            }),
        }
    }
}

/// Every port on one SQLite database file: one writer, several readers.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
    /// Seals message text before it is written and opens it when it is read
    /// (docs/security.md); plain without a key ring.
    cipher: MessageCipher,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    /// The one write connection; used by the writer task, and by migrations.
    write_pool: SqlitePool,
    read_pool: SqlitePool,
    writer: writer::Writer,
    /// Released by [`SqliteStore::close`], else with the last clone and the writer task.
    lock: Mutex<Option<Arc<FileLock>>>,
}

impl SqliteStore {
    /// Opens (creating it and its directory when missing) the database file at `location`
    /// (see [`database_path`]) with `settings`, takes the file's lock, and starts the
    /// writer on the current tokio runtime. Every connection gets WAL journaling,
    /// `synchronous=FULL`, foreign keys and the busy timeout. It does not migrate: call
    /// [`SqliteStore::migrate`].
    ///
    /// # Errors
    /// [`OpenError`]: an invalid location, a file in use by another process, a path that
    /// cannot be created or written, or a file that is not a database.
    pub async fn open(location: &str, settings: SqliteSettings) -> Result<Self, OpenError> {
        let path = database_path(location)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| OpenError::Unwritable {
                path: path.clone(),
                reason: format!("cannot create directory {}: {e}", dir.display()),
            })?;
        }
        let lock = Arc::new(FileLock::acquire(&path)?);
        if path.exists() {
            // SQLite would silently open a read-only file read-only; refuse it up front.
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| OpenError::Unwritable {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
        }
        let base = SqliteConnectOptions::new()
            .filename(&path)
            .foreign_keys(true)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(settings.busy_timeout);
        let write_options = base
            .clone()
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        let write_pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(60))
            .idle_timeout(None)
            .max_lifetime(None)
            .test_before_acquire(false)
            .connect_with(write_options)
            .await
            .map_err(|e| error::open_error(&path, &e))?;
        // Readers never write: query_only turns a mistaken write into an error.
        let read_options = base.pragma("query_only", "ON");
        let read_pool = SqlitePoolOptions::new()
            .max_connections(settings.read_connections.max(1))
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(5))
            .test_before_acquire(false)
            .connect_with(read_options)
            .await
            .map_err(|e| error::open_error(&path, &e))?;
        let writer =
            writer::Writer::start(write_pool.clone(), settings.max_batch, Arc::clone(&lock));
        Ok(Self {
            cipher: MessageCipher::plain(),
            inner: Arc::new(Inner {
                path,
                write_pool,
                read_pool,
                writer,
                lock: Mutex::new(Some(lock)),
            }),
        })
    }

    /// Applies the pending migrations of [`MIGRATOR`] on the write connection.
    ///
    /// # Errors
    /// [`MigrationError::NewerSchema`] when the file was migrated by a newer version (it
    /// holds a migration this binary does not know); [`MigrationError::Modified`] when an
    /// applied migration differs from the embedded one; [`MigrationError::Failed`] when a
    /// migration fails.
    pub async fn migrate(&self) -> Result<(), MigrationError> {
        MIGRATOR
            .run(&self.inner.write_pool)
            .await
            .map_err(|e| match e {
                MigrateError::VersionMissing(version) => MigrationError::NewerSchema {
                    version,
                    known: MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0),
                },
                MigrateError::VersionMismatch(version) => MigrationError::Modified { version },
                other => MigrationError::Failed(other.to_string()),
            })
    }

    /// Whether the database answers (a read on a reader connection).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when it does not.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.inner.read_pool)
            .await
            .map(|_| ())
            .map_err(|e| translate(&e))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The connections' current use (readers and writer together).
    pub fn pool_stats(&self) -> PoolStats {
        let (read, write) = (&self.inner.read_pool, &self.inner.write_pool);
        let idle = |pool: &SqlitePool| u32::try_from(pool.num_idle()).unwrap_or(u32::MAX);
        PoolStats {
            size: read.size().saturating_add(write.size()),
            idle: idle(read).saturating_add(idle(write)),
            max: read
                .options()
                .get_max_connections()
                .saturating_add(write.options().get_max_connections()),
        }
    }

    /// How the writes were grouped into transactions so far.
    pub fn write_stats(&self) -> WriteStats {
        self.inner.writer.stats()
    }

    /// Makes the posting exist (with SQLite, the adapter is the platform's store of
    /// postings too), with `title`. Idempotent.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the store fails.
    pub async fn add_posting(&self, id: PostingId, title: Option<&str>) -> Result<(), StoreError> {
        let title = title.map(str::to_owned);
        self.write(move |conn| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO POSTINGS (id, title) VALUES (?, ?) ON CONFLICT (id) DO NOTHING",
                )
                .bind(id.to_string())
                .bind(title)
                .execute(&mut *conn)
                .await?;
                Ok(())
            })
        })
        .await
    }

    /// Finishes the queued writes, closes every connection and releases the file's lock.
    /// Later calls on any clone fail with [`StoreError::Unavailable`].
    pub async fn close(&self) {
        self.inner.writer.stop().await;
        self.inner.write_pool.close().await;
        self.inner.read_pool.close().await;
        if let Ok(mut lock) = self.inner.lock.lock() {
            lock.take();
        }
    }

    /// The same store (same file, same writer) sealing message text with `cipher`.
    #[must_use]
    pub fn with_cipher(mut self, cipher: MessageCipher) -> Self {
        self.cipher = cipher;
        self
    }

    /// The read connections.
    pub(crate) fn read_pool(&self) -> &SqlitePool {
        &self.inner.read_pool
    }

    /// The change feed's head after each commit (see [`feed`]).
    pub(crate) fn committed_heads(&self) -> tokio::sync::watch::Receiver<chat_domain::FeedPos> {
        self.inner.writer.committed_heads()
    }

    /// Runs `work` as one write request on the writer (see [`writer`]).
    pub(crate) async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Outcome<T>> + Send + 'static,
    {
        self.inner.writer.write(work).await
    }
}

/// The SQL of the hot read paths, exactly as the adapter sends it, for `EXPLAIN QUERY PLAN`
/// checks in tests. Not a stable API.
#[doc(hidden)]
pub mod hot_queries {
    /// The inbox page (first page, active conversations). Binds: user, limit, user.
    pub fn inbox_first_page() -> String {
        crate::read_state::inbox_sql("AND c.is_archived = 0")
    }

    /// The unread badge. Binds: user.
    pub fn unread_summary() -> String {
        crate::read_state::UNREAD_SUMMARY_SQL.to_owned()
    }

    /// A reader's changes in a span of feed positions. Binds: reader, after, up to, limit.
    pub fn reader_changes() -> String {
        crate::feed::reader_changes_sql()
    }

    /// A reader's membership windows over one conversation. Binds: after, reader,
    /// conversation.
    pub fn reader_windows() -> String {
        crate::feed::windows_sql(1)
    }

    /// A history page older than a seq. Binds: conversation, seq, limit.
    pub fn history_before() -> String {
        crate::messages::history_sql("AND m.seq < ?", "DESC")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_name_their_file() {
        let check = |location: &str, expected: Option<&str>| {
            let got = database_path(location).ok();
            assert_eq!(got.as_deref(), expected.map(Path::new), "{location}");
        };
        check("chatd-data/chat.db", Some("chatd-data/chat.db"));
        check("sqlite://chatd-data/chat.db", Some("chatd-data/chat.db"));
        check(
            "sqlite:///var/lib/chatd/chat.db",
            Some("/var/lib/chatd/chat.db"),
        );
        check("sqlite:chat.db?mode=rwc", Some("chat.db"));
        check("sqlite::memory:", None);
        check(":memory:", None);
        check("sqlite://", None);
        check("", None);
    }

    #[test]
    fn the_lock_file_sits_next_to_the_database() {
        assert_eq!(
            lock_path(Path::new("/var/lib/chatd/chat.db")),
            PathBuf::from("/var/lib/chatd/chat.db.lock")
        );
        assert_eq!(
            lock_path(Path::new("chat.db")),
            PathBuf::from("chat.db.lock")
        );
    }

    /// The settings durability rests on, as the writer's connection has them.
    #[tokio::test]
    async fn the_writer_connection_syncs_every_commit() {
        let dir = tempfile::tempdir().unwrap();
        let location = dir.path().join("chat.db").display().to_string();
        let store = SqliteStore::open(&location, SqliteSettings::default())
            .await
            .unwrap();
        let pragmas = store
            .write(|conn| {
                Box::pin(async move {
                    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
                        .fetch_one(&mut *conn)
                        .await?;
                    let mut values = vec![mode];
                    for pragma in ["synchronous", "foreign_keys", "busy_timeout"] {
                        let value: i64 = sqlx::query_scalar(&format!("PRAGMA {pragma}"))
                            .fetch_one(&mut *conn)
                            .await?;
                        values.push(value.to_string());
                    }
                    Ok(values)
                })
            })
            .await
            .unwrap();
        // synchronous 2 is FULL: in WAL mode, the log is synced at every commit.
        assert_eq!(pragmas, ["wal", "2", "1", "5000"]);
        store.close().await;
    }
}
