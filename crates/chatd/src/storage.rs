//! Choosing and opening the store: the in-memory store, or MySQL when `DATABASE_URL` is
//! set. The names of the storage adapters appear only here.

use std::sync::Arc;

use anyhow::Context as _;
use async_trait::async_trait;
use chat_crypto::MessageCipher;
use chat_http::{AlwaysReady, PoolProbe, PoolUsage, Readiness};
use chat_memory::MemoryStore;
use chat_mysql::{MySqlSettings, MySqlStore};
use chat_ports::{
    ConversationStore, MessageStore, PostingDirectory, ReadStateStore, UserDirectory,
};
use chat_service::Ports;

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
            + 'static,
    {
        Self {
            ports: Ports::from_store(store),
            readiness: Arc::new(AlwaysReady),
            pool: None,
            mysql: None,
        }
    }

    /// Shuts the store down once the server has stopped taking requests: the MySQL store
    /// refuses new sends, finishes the batches queued and in flight (answering every
    /// caller) and closes its pool, within `bound`. Nothing to do for the other stores.
    /// Whether it finished in time.
    pub async fn shut_down(&self, bound: std::time::Duration) -> bool {
        match &self.mysql {
            Some(store) => store.shut_down(bound).await,
            None => true,
        }
    }

    /// The in-memory store: nothing persists.
    pub fn memory() -> Self {
        Self::of(Arc::new(MemoryStore::new()))
    }

    /// The in-memory store, sealing message text with `cipher` as a database would.
    pub fn memory_with(cipher: MessageCipher) -> Self {
        Self::of(Arc::new(MemoryStore::with_cipher(cipher)))
    }

    /// MySQL at `database_url` (migrated first when `migrate`), or the in-memory store,
    /// announced loudly, without one.
    ///
    /// # Errors
    /// When the database settings are invalid, the server does not answer, or a migration
    /// fails.
    pub async fn open(database_url: Option<&str>, migrate: bool) -> anyhow::Result<Self> {
        Self::open_with(database_url, migrate, MessageCipher::plain()).await
    }

    /// [`Storage::open`], the store sealing message text at rest with `cipher`.
    ///
    /// # Errors
    /// As [`Storage::open`].
    pub async fn open_with(
        database_url: Option<&str>,
        migrate: bool,
        cipher: MessageCipher,
    ) -> anyhow::Result<Self> {
        match database_url {
            Some(url) => Self::mysql_with(url, migrate, cipher).await,
            None => {
                tracing::warn!(
                    "DATABASE_URL is not set: using the IN-MEMORY store; NOTHING PERSISTS, \
                     every conversation and message is lost when chatd stops"
                );
                Ok(Self::memory_with(cipher))
            }
        }
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
            mysql: Some(store),
        })
    }
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
