//! Choosing and opening the store: a SQLite file (the default, under the data directory),
//! MySQL when `DATABASE_URL` names one, or the in-memory store (`--ephemeral`,
//! `DATABASE_URL=memory:`, tests). The names of the storage adapters appear only here.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use async_trait::async_trait;
use chat_crypto::MessageCipher;
use chat_http::{AlwaysReady, PoolProbe, PoolUsage, Readiness};
use chat_memory::MemoryStore;
use chat_mysql::{MySqlSettings, MySqlStore};
use chat_ports::{
    ChangeFeed, ConversationStore, MessageStore, PostingDirectory, ReadStateStore, UserDirectory,
};
use chat_service::Ports;
use chat_sqlite::{SqliteSettings, SqliteStore};

/// The name of the database file in the data directory (`CHAT_DATA_DIR`).
pub const SQLITE_FILE_NAME: &str = "chat.db";

/// Which store `chatd` uses, as resolved from `DATABASE_URL`, `CHAT_DATA_DIR` and
/// `--ephemeral`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreChoice {
    /// The in-memory store: nothing persists.
    Memory,
    /// A SQLite database file.
    Sqlite(PathBuf),
    /// A MySQL/MariaDB database.
    MySql(String),
}

/// Why `DATABASE_URL` (with `--ephemeral`) names no store.
#[derive(Debug, thiserror::Error)]
pub enum StoreChoiceError {
    /// A scheme no adapter serves.
    #[error(
        "DATABASE_URL must start with mysql://, mariadb://, sqlite:// or be memory:, not {0:?}"
    )]
    UnknownScheme(String),
    /// `--ephemeral` asks for memory while `DATABASE_URL` names a database.
    #[error(
        "--ephemeral keeps everything in memory, but DATABASE_URL names a database; drop one \
         of them"
    )]
    EphemeralWithDatabase,
    /// A `sqlite:` URL that names no usable file.
    #[error("{0}")]
    Sqlite(#[from] chat_sqlite::OpenError),
}

impl StoreChoice {
    /// The store named by `database_url` (already stripped of blanks), else a SQLite file
    /// in `data_dir`, or the in-memory store when `ephemeral`.
    ///
    /// # Errors
    /// [`StoreChoiceError`] for an unknown scheme, an unusable `sqlite:` location, or
    /// `--ephemeral` together with a database.
    pub fn resolve(
        database_url: Option<&str>,
        data_dir: &Path,
        ephemeral: bool,
    ) -> Result<Self, StoreChoiceError> {
        let choice = match database_url.map(str::trim) {
            None => {
                if ephemeral {
                    return Ok(Self::Memory);
                }
                Self::Sqlite(data_dir.join(SQLITE_FILE_NAME))
            }
            Some("memory:") => Self::Memory,
            Some(url) if url.starts_with("sqlite:") => {
                Self::Sqlite(chat_sqlite::database_path(url)?)
            }
            Some(url) if url.starts_with("mysql://") || url.starts_with("mariadb://") => {
                Self::MySql(url.to_owned())
            }
            Some(other) => {
                // Only the scheme: the rest may hold a password.
                let scheme = other.split("://").next().unwrap_or_default();
                return Err(StoreChoiceError::UnknownScheme(format!("{scheme}:…")));
            }
        };
        if ephemeral && choice != Self::Memory {
            return Err(StoreChoiceError::EphemeralWithDatabase);
        }
        Ok(choice)
    }
}

/// Something to do when the server has stopped: finish queued writes, release files.
#[async_trait]
pub trait Closing: Send + Sync {
    /// Closes the store; later calls fail.
    async fn close(&self);
}

/// The storage side of the service's ports, and how to tell whether it is up. Several
/// applications (the nodes of a test cluster) may share one, by cloning it.
#[derive(Clone)]
pub struct Storage {
    /// The storage and directory ports (events and the clock are set by the application).
    pub ports: Ports,
    /// Whether the store answers (`/readyz`).
    pub readiness: Arc<dyn Readiness>,
    /// The connection pool's usage, for the metrics, when there is a pool.
    pub pool: Option<PoolProbe>,
    /// What to close once the server has stopped, when the store holds resources.
    pub closing: Option<Arc<dyn Closing>>,
    /// Where the data is, in words (for the start-up banner).
    pub description: String,
    /// The MySQL store opened by [`Storage::mysql`], shut down with the application (its
    /// append workers run on the runtime that opened it, which must outlive them).
    mysql: Option<Arc<MySqlStore>>,
}

impl Storage {
    /// Every storage and directory port on `store`, always ready, with no pool to watch.
    pub fn of<S>(store: Arc<S>) -> Self
    where
        S: ConversationStore
            + MessageStore
            + ReadStateStore
            + UserDirectory
            + PostingDirectory
            + ChangeFeed
            + 'static,
    {
        Self {
            ports: Ports::from_store(store),
            readiness: Arc::new(AlwaysReady),
            pool: None,
            closing: None,
            description: "a custom store".to_owned(),
            mysql: None,
        }
    }

    /// Shuts the store down once the server has stopped taking requests, within `bound`:
    /// the MySQL store refuses new sends, finishes the batches queued and in flight
    /// (answering every caller) and closes its pool; the SQLite store finishes its queued
    /// writes, closes its connections and releases the file's lock. Nothing to do for the
    /// in-memory store. Whether it finished in time.
    pub async fn shut_down(&self, bound: std::time::Duration) -> bool {
        let mysql = match &self.mysql {
            Some(store) => store.shut_down(bound).await,
            None => true,
        };
        let closed = match &self.closing {
            Some(closing) => tokio::time::timeout(bound, closing.close()).await.is_ok(),
            None => true,
        };
        mysql && closed
    }

    /// The in-memory store: nothing persists.
    pub fn memory() -> Self {
        Self::memory_with(MessageCipher::plain())
    }

    /// The in-memory store, sealing message text with `cipher` as a database would.
    pub fn memory_with(cipher: MessageCipher) -> Self {
        Self {
            description: "IN MEMORY: nothing persists, every conversation is lost when chatd \
                          stops"
                .to_owned(),
            ..Self::of(Arc::new(MemoryStore::with_cipher(cipher)))
        }
    }

    /// Opens the store `choice` names (migrated first when `migrate`, for a database),
    /// sealing message text at rest with `cipher`, and says where the data is; the
    /// in-memory store is announced loudly.
    ///
    /// # Errors
    /// When the database settings are invalid, the database cannot be opened (a SQLite
    /// file in use by another chatd, unwritable, or not a database; a MySQL server that
    /// does not answer), or a migration fails (including a schema newer than this binary).
    pub async fn open(
        choice: &StoreChoice,
        migrate: bool,
        cipher: MessageCipher,
    ) -> anyhow::Result<Self> {
        match choice {
            StoreChoice::MySql(url) => {
                let storage = Self::mysql_with(url, migrate, cipher).await?;
                tracing::info!("storing in MySQL (DATABASE_URL)");
                Ok(storage)
            }
            StoreChoice::Sqlite(path) => {
                let storage = Self::sqlite_with(path, migrate, cipher).await?;
                tracing::info!("storing in the {} (survives restarts)", storage.description);
                Ok(storage)
            }
            StoreChoice::Memory => {
                tracing::warn!(
                    "using the IN-MEMORY store (--ephemeral or DATABASE_URL=memory:): NOTHING \
                     PERSISTS, every conversation and message is lost when chatd stops"
                );
                Ok(Self::memory_with(cipher))
            }
        }
    }

    /// Opens (creating it and its directory when missing) the SQLite file at `path` and,
    /// when `migrate`, applies pending migrations.
    ///
    /// # Errors
    /// When the file is in use by another chatd, cannot be created or written, is not a
    /// database, or its schema is newer than this binary or fails to migrate.
    pub async fn sqlite(path: &Path, migrate: bool) -> anyhow::Result<Self> {
        Self::sqlite_with(path, migrate, MessageCipher::plain()).await
    }

    /// [`Storage::sqlite`], the store sealing message text at rest with `cipher`.
    ///
    /// # Errors
    /// As [`Storage::sqlite`].
    pub async fn sqlite_with(
        path: &Path,
        migrate: bool,
        cipher: MessageCipher,
    ) -> anyhow::Result<Self> {
        let store = Arc::new(open_sqlite(path).await?.with_cipher(cipher));
        if migrate {
            if let Err(err) = store.migrate().await {
                store.close().await;
                return Err(err).with_context(|| {
                    format!("cannot migrate the SQLite database {}", path.display())
                });
            }
            tracing::info!("database migrations applied");
        }
        let description = format!("SQLite file {}", absolute(store.path()).display());
        let probe_store = store.clone();
        let probe: PoolProbe = Arc::new(move || {
            let stats = probe_store.pool_stats();
            PoolUsage {
                size: stats.size,
                idle: stats.idle,
                max: stats.max,
            }
        });
        Ok(Self {
            ports: Ports::from_store(store.clone()),
            readiness: Arc::new(SqliteReadiness(store.clone())),
            pool: Some(probe),
            closing: Some(Arc::new(SqliteClosing(store))),
            description,
            mysql: None,
        })
    }

    /// Connects to MySQL (reading the pool settings from the environment, with `url` as
    /// the database) and, when `migrate`, applies pending migrations.
    ///
    /// # Errors
    /// When the settings are invalid, the server does not answer, or a migration fails.
    pub async fn mysql(url: &str, migrate: bool) -> anyhow::Result<Self> {
        Self::mysql_with(url, migrate, MessageCipher::plain()).await
    }

    /// [`Storage::mysql`], the store sealing message text at rest with `cipher`.
    ///
    /// # Errors
    /// As [`Storage::mysql`].
    pub async fn mysql_with(
        url: &str,
        migrate: bool,
        cipher: MessageCipher,
    ) -> anyhow::Result<Self> {
        let store = Arc::new(connect(url).await?.with_cipher(cipher));
        if migrate {
            store.migrate().await.context("running migrations")?;
            tracing::info!("database migrations applied");
        }
        let probe_store = store.clone();
        let probe: PoolProbe = Arc::new(move || {
            let stats = probe_store.pool_stats();
            PoolUsage {
                size: stats.size,
                idle: stats.idle,
                max: stats.max,
            }
        });
        Ok(Self {
            ports: Ports::from_store(store.clone()),
            readiness: Arc::new(MySqlReadiness(store.clone())),
            pool: Some(probe),
            closing: None,
            description: "MySQL (DATABASE_URL)".to_owned(),
            mysql: Some(store),
        })
    }
}

/// The path as an operator would look for it (relative paths joined to the working
/// directory).
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

/// Opens the SQLite store at `path`, with the adapter's default settings.
///
/// # Errors
/// When the file is in use by another chatd, cannot be created or written, or is not a
/// database.
pub async fn open_sqlite(path: &Path) -> anyhow::Result<SqliteStore> {
    let location = path
        .to_str()
        .with_context(|| format!("the database path {} is not UTF-8", path.display()))?;
    SqliteStore::open(location, SqliteSettings::default())
        .await
        .context("cannot open the SQLite database (CHAT_DATA_DIR or DATABASE_URL=sqlite://…)")
}

/// Opens the MySQL store.
///
/// # Errors
/// When the settings are invalid or the server does not answer.
pub async fn connect(url: &str) -> anyhow::Result<MySqlStore> {
    let mut settings = MySqlSettings::from_lookup(|name| {
        if name == "DATABASE_URL" {
            Some(url.to_owned())
        } else {
            std::env::var(name).ok()
        }
    })
    .context("reading database settings")?;
    settings.url = url.to_owned();
    MySqlStore::connect(&settings)
        .await
        .context("connecting to DATABASE_URL")
}

struct MySqlReadiness(Arc<MySqlStore>);

#[async_trait]
impl Readiness for MySqlReadiness {
    async fn check(&self) -> Result<(), String> {
        self.0.ping().await.map_err(|e| e.to_string())
    }
}

struct SqliteReadiness(Arc<SqliteStore>);

#[async_trait]
impl Readiness for SqliteReadiness {
    async fn check(&self) -> Result<(), String> {
        self.0.ping().await.map_err(|e| e.to_string())
    }
}

struct SqliteClosing(Arc<SqliteStore>);

#[async_trait]
impl Closing for SqliteClosing {
    async fn close(&self) {
        self.0.close().await;
        tracing::info!("SQLite database closed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_follows_database_url_data_dir_and_ephemeral() {
        let dir = Path::new("data");
        let check = |url: Option<&str>, ephemeral: bool| StoreChoice::resolve(url, dir, ephemeral);
        assert_eq!(
            check(None, false).unwrap(),
            StoreChoice::Sqlite(dir.join("chat.db"))
        );
        assert_eq!(check(None, true).unwrap(), StoreChoice::Memory);
        assert_eq!(check(Some("memory:"), false).unwrap(), StoreChoice::Memory);
        assert_eq!(check(Some("memory:"), true).unwrap(), StoreChoice::Memory);
        assert_eq!(
            check(Some("sqlite:///var/lib/chat.db"), false).unwrap(),
            StoreChoice::Sqlite(PathBuf::from("/var/lib/chat.db"))
        );
        assert_eq!(
            check(Some("sqlite://rel/chat.db"), false).unwrap(),
            StoreChoice::Sqlite(PathBuf::from("rel/chat.db"))
        );
        assert_eq!(
            check(Some("mysql://root@127.0.0.1/chat"), false).unwrap(),
            StoreChoice::MySql("mysql://root@127.0.0.1/chat".into())
        );
        assert!(matches!(
            check(Some("postgres://u:secret@h/db"), false),
            Err(StoreChoiceError::UnknownScheme(s)) if !s.contains("secret")
        ));
        assert!(matches!(
            check(Some("mysql://h/db"), true),
            Err(StoreChoiceError::EphemeralWithDatabase)
        ));
        assert!(matches!(
            check(Some("sqlite::memory:"), false),
            Err(StoreChoiceError::Sqlite(_))
        ));
    }
}
