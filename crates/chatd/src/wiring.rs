//! Wiring the stores: the in-memory store, or MySQL when `DATABASE_URL` is set. The names
//! of the storage adapters appear only here.

use std::sync::Arc;

use anyhow::Context as _;
use async_trait::async_trait;
use chat_http::{AlwaysReady, PoolProbe, PoolUsage, Readiness};
use chat_memory::MemoryStore;
use chat_mysql::{MySqlSettings, MySqlStore};
use chat_ports::{
    ConversationStore, MessageStore, PostingDirectory, ReadStateStore, UserDirectory,
};

/// The storage side of the service's ports, and how to tell whether it is up.
pub(crate) struct Storage {
    pub(crate) conversations: Arc<dyn ConversationStore>,
    pub(crate) messages: Arc<dyn MessageStore>,
    pub(crate) read_state: Arc<dyn ReadStateStore>,
    pub(crate) users: Arc<dyn UserDirectory>,
    pub(crate) postings: Arc<dyn PostingDirectory>,
    pub(crate) readiness: Arc<dyn Readiness>,
    pub(crate) pool: Option<PoolProbe>,
}

/// The in-memory store: nothing persists.
pub(crate) fn memory() -> Storage {
    let store = Arc::new(MemoryStore::new());
    Storage {
        conversations: store.clone(),
        messages: store.clone(),
        read_state: store.clone(),
        users: store.clone(),
        postings: store,
        readiness: Arc::new(AlwaysReady),
        pool: None,
    }
}

/// Connects to MySQL (reading the pool settings from the environment, with `url` as the
/// database) and, when `migrate`, applies pending migrations.
///
/// # Errors
/// When the settings are invalid, the server does not answer, or a migration fails.
pub(crate) async fn mysql(url: &str, migrate: bool) -> anyhow::Result<Storage> {
    let store = Arc::new(connect(url).await?);
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
    Ok(Storage {
        conversations: store.clone(),
        messages: store.clone(),
        read_state: store.clone(),
        users: store.clone(),
        postings: store.clone(),
        readiness: Arc::new(MySqlReadiness(store)),
        pool: Some(probe),
    })
}

/// Opens the MySQL store.
///
/// # Errors
/// When the settings are invalid or the server does not answer.
pub(crate) async fn connect(url: &str) -> anyhow::Result<MySqlStore> {
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
