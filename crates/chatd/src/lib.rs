//! `chatd`: the chat server's composition root. [`config`] reads the command line and the
//! environment into a checked configuration; [`storage`] opens the store it names;
//! [`feed`] runs the change feed's relay and purge; [`startup`] builds the application
//! from them ([`Application`], the one place the
//! server is wired, used by `chatd serve` and by every black-box test); and the
//! subcommands `serve`, `migrate` and `token` are here. The binary is a thin CLI over
//! them.

#![forbid(unsafe_code)]

pub mod config;
pub mod feed;
pub mod startup;
pub mod storage;

use anyhow::Context as _;
use chat_crypto::MessageCipher;
use chat_domain::UserId;
use chat_http::{MintClaims, mint_hs256};
use chat_ports::{ReencryptBatch, ReencryptStore};
use tracing_subscriber::EnvFilter;

pub use startup::{AppConfig, Application, FeedSettings};
pub use storage::{Storage, StoreChoice};

use crate::config::{MigrateArgs, ReencryptArgs, ServeArgs, TokenArgs};

/// Logs to stderr, filtered by `RUST_LOG` (default `info`); JSON lines with
/// `--log-format json` (`CHAT_LOG_FORMAT=json`).
pub fn init_tracing(format: config::LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // A log line that cannot be written (stderr closed: a supervisor that went away) is
        // dropped; reporting it with `eprintln!` would panic the task that logged, the
        // signal handler among them, and chatd would then ignore SIGTERM.
        .log_internal_errors(false);
    if format == config::LogFormat::Json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// `chatd serve`: builds the application from the checked configuration and serves until
/// SIGINT or SIGTERM.
///
/// # Errors
/// When the configuration is refused, the store cannot be reached, the Redis URL is
/// invalid, the address cannot be bound, or the server fails.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.resolve()?;
    if config.app.auth.provisioning == chat_http::Provisioning::External
        && config.store == StoreChoice::Memory
    {
        tracing::warn!(
            "CHAT_USER_PROVISIONING=external with the in-memory store: no user will ever exist"
        );
    }
    match &config.key_ring {
        Some(ring) => tracing::info!(
            active_key = %ring.active_key_id(),
            keys = ring.key_ids().count(),
            "message text is encrypted at rest"
        ),
        None => tracing::info!(
            "no encryption key ring (CHAT_ENCRYPTION_KEYS or CHAT_ENCRYPTION_KEYS_FILE): \
             messages are stored in PLAIN TEXT"
        ),
    }
    let cipher = MessageCipher::new(config.key_ring.clone());
    let storage = Storage::open(&config.store, config.migrate, cipher).await?;
    match &config.app.realtime.redis {
        Some(redis) => {
            tracing::info!(channel = %redis.channel, "real-time events bridged over Redis");
        }
        None => tracing::warn!(
            "REDIS_URL is not set: WebSocket events reach the connections of THIS process \
             only; set it when running more than one chatd"
        ),
    }
    let app = match Application::build(config.app, storage.clone()).await {
        Ok(app) => app,
        Err(err) => {
            // Release the store (a SQLite file's lock) before saying why.
            storage.shut_down(std::time::Duration::from_secs(10)).await;
            return Err(err);
        }
    };
    let address = app.address();
    tracing::info!(%address, "chatd listening");
    if config.dev {
        eprintln!(
            "\nchatd is running in DEVELOPMENT mode on http://{address} (built-in secret, \
             loopback only).\nData: {}.\n\nOpen the web client in two browser tabs (one user per tab):\n\n    \
             http://{address}/\n\nOr mint a token with:\n\n    cargo run -q -p chatd -- token --dev \
             --user 1 --name Alice\n\nthen call e.g.:\n\n    curl -H \"Authorization: Bearer \
             $TOKEN\" http://{address}/api/v1/conversations\n",
            storage.description
        );
    }
    // Shuts the store down (a SQLite file closed and released) once the server has
    // stopped: in-flight requests may still have been writing.
    app.run_until_stopped().await.context("server failed")?;
    tracing::info!("chatd stopped");
    Ok(())
}

/// `chatd migrate`: applies the migrations to `DATABASE_URL`, or to the SQLite file in
/// the data directory without it.
///
/// # Errors
/// For the in-memory store (nothing to migrate), or when the database cannot be opened or
/// reached, or a migration fails (a schema newer than this binary included).
pub async fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    match args.store()? {
        StoreChoice::Memory => {
            anyhow::bail!(
                "DATABASE_URL=memory: has no schema to migrate; `chatd migrate` needs a database"
            )
        }
        StoreChoice::MySql(url) => {
            let store = storage::connect(&url).await?;
            store.migrate().await.context("running migrations")?;
        }
        StoreChoice::Sqlite(path) => {
            let store = storage::open_sqlite(&path).await?;
            let migrated = store.migrate().await;
            store.close().await;
            migrated.with_context(|| {
                format!("cannot migrate the SQLite database {}", path.display())
            })?;
            tracing::info!(file = %path.display(), "SQLite database migrated");
        }
    }
    tracing::info!("database migrations applied");
    Ok(())
}

/// `chatd reencrypt`: moves every user's message not under the active key to it, one batch
/// (one short transaction) at a time, printing progress to stderr. Stopped and started
/// again, it continues where the work remains (rows already moved are not selected).
///
/// # Errors
/// When no key ring or database is configured, the ring is malformed, or the database
/// fails.
pub async fn reencrypt(args: ReencryptArgs) -> anyhow::Result<()> {
    let ring = args
        .encryption
        .key_ring()?
        .context("no encryption key ring is configured (set CHAT_ENCRYPTION_KEYS or CHAT_ENCRYPTION_KEYS_FILE)")?;
    let active = ring.active_key_id().to_string();
    let cipher = MessageCipher::new(Some(ring));
    let progress = |batch: &ReencryptBatch, done: u64| {
        eprintln!(
            "reencrypt: {done} rows moved to key {active}, {} undecryptable skipped so far, \
             {} remaining",
            batch.undecryptable, batch.remaining
        );
    };
    let batch_size = args.batch_size.max(1);
    let totals = match args.store()? {
        StoreChoice::Memory => anyhow::bail!(
            "DATABASE_URL=memory: keeps nothing to re-encrypt; `chatd reencrypt` needs a database"
        ),
        StoreChoice::MySql(url) => {
            let store = storage::connect(&url).await?.with_cipher(cipher);
            run_reencrypt(&store, batch_size, progress).await?
        }
        StoreChoice::Sqlite(path) => {
            let store = storage::open_sqlite(&path).await?.with_cipher(cipher);
            let totals = run_reencrypt(&store, batch_size, progress).await;
            store.close().await;
            totals?
        }
    };
    eprintln!(
        "reencrypt: done: {} rows moved to key {active}; {} rows could not be decrypted and \
         were left as they are (see the log for their key ids)",
        totals.rewritten, totals.undecryptable
    );
    Ok(())
}

/// Runs batches of [`ReencryptStore::reencrypt_batch`] from the start to the end,
/// calling `progress` after each with the batch and the rows moved so far; returns the
/// totals (`rewritten`, `undecryptable`).
///
/// # Errors
/// When a batch fails.
pub async fn run_reencrypt(
    store: &dyn ReencryptStore,
    batch_size: u32,
    mut progress: impl FnMut(&ReencryptBatch, u64),
) -> anyhow::Result<ReencryptBatch> {
    let mut totals = ReencryptBatch::default();
    let mut cursor = None;
    loop {
        let batch = store
            .reencrypt_batch(cursor, batch_size)
            .await
            .context("re-encrypting a batch")?;
        totals.rewritten += batch.rewritten;
        totals.undecryptable += batch.undecryptable;
        totals.remaining = batch.remaining;
        let Some(last) = batch.last else {
            return Ok(totals);
        };
        progress(&batch, totals.rewritten);
        cursor = Some(last);
    }
}

/// `chatd token`: prints a token minted with the configured secret.
///
/// # Errors
/// Without a secret, for a user id that is not positive, or when minting fails.
pub fn token(args: &TokenArgs) -> anyhow::Result<()> {
    let secret = args.secret()?;
    let user = UserId::new(args.user).context("--user")?;
    let mut claims = MintClaims::new(user, args.name.clone(), args.ttl);
    claims.iss = args.jwt_issuer.clone().filter(|v| !v.is_empty());
    claims.aud = args.jwt_audience.clone().filter(|v| !v.is_empty());
    let token = mint_hs256(secret.as_bytes(), &claims).context("minting the token")?;
    println!("{token}");
    Ok(())
}
