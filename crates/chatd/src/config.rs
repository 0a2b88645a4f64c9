//! The command line and environment, and their resolution into a checked configuration:
//! the server refuses to start (and says why) rather than run with an unsafe setup.

use std::net::{SocketAddr, ToSocketAddrs};
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chat_crypto::{KeyRing, KeyRingError};
use chat_http::auth::{AuthConfigError, parse_algorithm};
use chat_http::{AuthConfig, DevTokens, HttpSettings, Provisioning, WsConfig};
use chat_realtime::{RealtimeSettings, RedisSettings};
use chat_service::{ActionClass, ActionRates, Rate};
use clap::{Args, Parser, Subcommand};

use crate::feed::FeedSettings;
use crate::startup::AppConfig;
use crate::storage::{StoreChoice, StoreChoiceError};

/// The secret of `--dev` mode: public on purpose, so it is only accepted on loopback.
pub const DEV_SECRET: &str = "chatd-development-secret-never-use-in-production";

/// Where the SQLite file goes without DATABASE_URL and CHAT_DATA_DIR: `chatd-data/` in the
/// working directory.
pub const DEFAULT_DATA_DIR: &str = "chatd-data";

/// `chatd`: the chat server.
#[derive(Debug, Parser)]
#[command(name = "chatd", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Log lines as `text` (default) or `json` (one object per line), on stderr.
    #[arg(long, global = true, env = "CHAT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Settings read from the environment only (by the storage adapter and the log filter),
/// listed in `chatd serve --help` so that every setting the docs name is found there.
pub const ENVIRONMENT_ONLY: &str = "\
Also read from the environment:
  RUST_LOG                      Log filter, e.g. `info` (default) or `chat_mysql=debug,info`
  DATABASE_MAX_CONNECTIONS      MySQL pool size (default 16)
  DATABASE_ACQUIRE_TIMEOUT_MS   How long a request waits for a pooled MySQL connection
                                before it is answered 503 (default 3000)
  DATABASE_STATEMENT_TIMEOUT_MS How long a use case may then run on MySQL: every store
                                call is answered (503 if late) within the acquire timeout
                                plus this (default 2000)
  DATABASE_APPEND_QUEUE         Sends that may wait for the group commit; when full, a
                                send is answered 503 at once (default 1024)";

/// The subcommands.
// Parsed once at start and consumed at once: boxing `serve`'s arguments saves nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs the HTTP server.
    #[command(after_help = ENVIRONMENT_ONLY)]
    Serve(ServeArgs),
    /// Applies the database migrations to DATABASE_URL and exits.
    Migrate(MigrateArgs),
    /// Mints a token with the configured secret (for development and scripts).
    Token(TokenArgs),
    /// Moves stored messages written under other keys, or in plain text, to the key ring's
    /// active key, in batches, while the service keeps running (docs/security.md).
    Reencrypt(ReencryptArgs),
}

/// The key ring that encrypts message text at rest (docs/security.md). Values are never
/// shown in `--help`; prefer the environment or the key file to flags, which other users
/// of the machine may see in the process list.
#[derive(Debug, Clone, Default, Args)]
pub struct EncryptionArgs {
    /// Keys as `id:base64-key` entries, comma separated (256-bit keys).
    #[arg(long, env = chat_crypto::KEYS_VAR, hide_env_values = true)]
    pub encryption_keys: Option<String>,
    /// A file of `id:base64-key` entries (one per line, `#` comments), e.g. a mounted
    /// secret; instead of CHAT_ENCRYPTION_KEYS.
    #[arg(long, env = chat_crypto::KEYS_FILE_VAR, hide_env_values = true)]
    pub encryption_keys_file: Option<String>,
    /// The id of the key that encrypts new messages (needed when several keys are set).
    #[arg(long, env = chat_crypto::ACTIVE_KEY_VAR, hide_env_values = true)]
    pub encryption_active_key: Option<String>,
}

impl EncryptionArgs {
    /// The configured key ring; `None` when no key is configured (plain text).
    ///
    /// # Errors
    /// [`ConfigError::KeyRing`] when the configuration is malformed; the message names a
    /// key id or an entry's position, never a key.
    pub fn key_ring(&self) -> Result<Option<Arc<KeyRing>>, ConfigError> {
        let ring = KeyRing::from_env_lookup(|name| match name {
            chat_crypto::KEYS_VAR => self.encryption_keys.clone(),
            chat_crypto::KEYS_FILE_VAR => self.encryption_keys_file.clone(),
            chat_crypto::ACTIVE_KEY_VAR => self.encryption_active_key.clone(),
            _ => None,
        })?;
        Ok(ring.map(Arc::new))
    }
}

/// `chatd reencrypt`.
#[derive(Debug, Clone, Args)]
pub struct ReencryptArgs {
    /// The database: `mysql://…` or `sqlite://path`; without it, the SQLite file in
    /// CHAT_DATA_DIR.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// The directory of the SQLite database file when DATABASE_URL is not set.
    #[arg(long, env = "CHAT_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// The key ring; its active key is the one rows are moved to.
    #[command(flatten)]
    pub encryption: EncryptionArgs,
    /// Rows per batch (each batch is one short transaction).
    #[arg(long, default_value_t = 500)]
    pub batch_size: u32,
}

/// How tokens are verified.
#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// The HMAC secret tokens are signed with.
    #[arg(long, env = "CHAT_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// The pinned algorithm: HS256 (default), HS384, HS512, RS256, …, ES256, EdDSA.
    #[arg(long, env = "CHAT_JWT_ALGORITHM", default_value = "HS256")]
    pub jwt_algorithm: String,
    /// A PEM file with the public key, for RS*, PS*, ES* and EdDSA.
    #[arg(long, env = "CHAT_JWT_PUBLIC_KEY_PEM")]
    pub jwt_public_key_pem: Option<PathBuf>,
    /// The required `iss` claim.
    #[arg(long, env = "CHAT_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// The required `aud` claim.
    #[arg(long, env = "CHAT_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
}

/// `chatd serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// The address to listen on.
    #[arg(long, env = "CHAT_BIND", default_value = "127.0.0.1:8080")]
    pub bind: String,
    /// The database: `mysql://…` (MySQL/MariaDB), `sqlite://path` (a SQLite file) or
    /// `memory:` (nothing persists); without it, a SQLite file in CHAT_DATA_DIR.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// The directory of the SQLite database file (`chat.db`) when DATABASE_URL is not set;
    /// created when missing.
    #[arg(long, env = "CHAT_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Keep everything in memory: NOTHING PERSISTS (demos and tests).
    #[arg(long)]
    pub ephemeral: bool,
    /// Token verification.
    #[command(flatten)]
    pub auth: AuthArgs,
    /// Browser origins allowed to call the API, comma-separated (`*` for any).
    #[arg(long, env = "CHAT_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// `jit`: a verified token upserts its user; `external`: the platform owns users.
    #[arg(long, env = "CHAT_USER_PROVISIONING", default_value = "jit")]
    pub user_provisioning: String,
    /// Development mode: a built-in secret, loopback only (data persists as without it).
    #[arg(long)]
    pub dev: bool,
    /// Do not run the database migrations at start.
    #[arg(long)]
    pub no_migrate: bool,
    /// Seconds in-flight requests may take to finish after SIGTERM.
    #[arg(long, env = "CHAT_SHUTDOWN_TIMEOUT", default_value_t = 10)]
    pub shutdown_timeout: u64,
    /// Worker threads (default: one per core).
    #[arg(long, env = "CHAT_WORKERS")]
    pub workers: Option<usize>,
    /// Messages one user may send per second, sustained.
    #[arg(long, env = "CHAT_SEND_RATE_PER_SECOND", default_value_t = 50)]
    pub send_rate_per_second: u32,
    /// Messages one user may send in a burst.
    #[arg(long, env = "CHAT_SEND_BURST", default_value_t = 200)]
    pub send_burst: u32,
    /// Per-user rates of the other actions, overriding the defaults (docs/security.md):
    /// comma-separated `ACTION=COUNT/UNIT[:BURST]`, UNIT `s`, `min` or `h`, ACTION one of
    /// edit, delete, react, read, typing, create_group, add_participants, open_direct,
    /// manage, or `*` for all of them; e.g. `react=10/s:40,create_group=60/min:20`.
    #[arg(long, env = "CHAT_RATE_LIMITS", default_value = "")]
    pub rate_limits: String,
    /// The most WebSockets one user may have open on this node (one more is closed
    /// with 4029).
    #[arg(long, env = "CHAT_WS_MAX_CONNECTIONS_PER_USER", default_value_t = 20)]
    pub ws_max_connections_per_user: usize,
    /// Redis (`redis://host:port/db`) over which the nodes of a cluster share real-time
    /// events; without it, events reach the WebSocket connections of this process only.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// The Redis pub/sub channel the nodes of one cluster share.
    #[arg(long, env = "CHAT_REDIS_CHANNEL", default_value = chat_realtime::DEFAULT_CHANNEL)]
    pub redis_channel: String,
    /// Encryption of message text at rest.
    #[command(flatten)]
    pub encryption: EncryptionArgs,
    /// How long the change feed keeps each change (what a client may be away and still
    /// catch up with a token): a duration such as `14d`, `36h`, `90min`, `1h30min`
    /// (units ms, s, min, h, d, w; at least 1min, at most 3650d). Older changes are
    /// purged every minute, in small batches.
    #[arg(long, env = "CHAT_FEED_RETENTION", default_value = "14d", value_parser = parse_retention)]
    pub feed_retention: Duration,
    /// FAULT INJECTION, for tests only: the relay of this process (which publishes
    /// committed changes to the WebSockets) starts only after this delay.
    #[arg(long, env = "CHAT_FAULT_RELAY_START_DELAY", hide = true, value_parser = parse_duration)]
    pub fault_relay_start_delay: Option<Duration>,
}

/// Parses a duration written as one or more `<number><unit>` parts (`14d`, `1h30min`,
/// `250ms`; spaces between parts allowed), units `ms`, `s`, `min` (or `m`), `h`, `d`, `w`.
///
/// # Errors
/// A message saying what is expected.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let expected = || {
        format!(
            "`{text}` is not a duration: write e.g. 14d, 36h, 90min, 1h30min, 30s or 250ms \
             (units ms, s, min, h, d, w)"
        )
    };
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(expected());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let number: u64 = rest[..digits].parse().map_err(|_| expected())?;
        rest = &rest[digits..];
        let letters = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = match &rest[..letters] {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" | "min" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            "d" => Duration::from_secs(86_400),
            "w" => Duration::from_secs(7 * 86_400),
            _ => return Err(expected()),
        };
        rest = rest[letters..].trim_start();
        let part = u32::try_from(number)
            .ok()
            .and_then(|n| unit.checked_mul(n))
            .ok_or_else(expected)?;
        total = total.checked_add(part).ok_or_else(expected)?;
    }
    Ok(total)
}

/// The shortest and the longest retention of the change feed.
pub const RETENTION_RANGE: (Duration, Duration) =
    (Duration::from_secs(60), Duration::from_secs(3650 * 86_400));

/// Parses `CHAT_FEED_RETENTION`: a [`parse_duration`] within [`RETENTION_RANGE`].
///
/// # Errors
/// A message saying what is expected.
pub fn parse_retention(text: &str) -> Result<Duration, String> {
    let retention = parse_duration(text)?;
    if !(RETENTION_RANGE.0..=RETENTION_RANGE.1).contains(&retention) {
        return Err(format!(
            "`{text}`: the feed's retention must be between 1min and 3650d"
        ));
    }
    Ok(retention)
}

/// `chatd migrate`.
#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    /// The database: `mysql://…` or `sqlite://path`; without it, the SQLite file in
    /// CHAT_DATA_DIR.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// The directory of the SQLite database file when DATABASE_URL is not set.
    #[arg(long, env = "CHAT_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
}

impl ReencryptArgs {
    /// The store to re-encrypt.
    ///
    /// # Errors
    /// [`ConfigError::Store`] when DATABASE_URL names no store.
    pub fn store(&self) -> Result<StoreChoice, ConfigError> {
        Ok(StoreChoice::resolve(
            present(self.database_url.clone()).as_deref(),
            &self.data_dir,
            false,
        )?)
    }
}

impl MigrateArgs {
    /// The store to migrate.
    ///
    /// # Errors
    /// [`ConfigError::Store`] when DATABASE_URL names no store.
    pub fn store(&self) -> Result<StoreChoice, ConfigError> {
        Ok(StoreChoice::resolve(
            present(self.database_url.clone()).as_deref(),
            &self.data_dir,
            false,
        )?)
    }
}

/// `chatd token`.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The user id (`sub`).
    #[arg(long)]
    pub user: i64,
    /// The display name (`name`).
    #[arg(long)]
    pub name: Option<String>,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    pub ttl: u64,
    /// Sign with the development secret of `serve --dev` (unless CHAT_JWT_SECRET is set).
    #[arg(long)]
    pub dev: bool,
    /// The HMAC secret.
    #[arg(long, env = "CHAT_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// The `iss` claim.
    #[arg(long, env = "CHAT_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// The `aud` claim.
    #[arg(long, env = "CHAT_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
}

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No way to verify tokens.
    #[error(
        "refusing to start: CHAT_JWT_SECRET is not set, so no token could be verified. Set \
         CHAT_JWT_SECRET (or CHAT_JWT_ALGORITHM and CHAT_JWT_PUBLIC_KEY_PEM for public-key \
         tokens), or run `chatd serve --dev` for a local development server with a built-in \
         secret"
    )]
    NoSecret,
    /// `--dev` on a non-loopback address.
    #[error(
        "refusing to start: --dev uses a public development secret and only listens on \
         loopback, but CHAT_BIND is {0}; bind 127.0.0.1 or drop --dev"
    )]
    DevNotLoopback(String),
    /// The bind address does not parse.
    #[error("CHAT_BIND `{0}` is not a host:port address")]
    Bind(String),
    /// An authentication setting was refused.
    #[error("{0}")]
    Auth(#[from] AuthConfigError),
    /// The public key file could not be read.
    #[error("cannot read CHAT_JWT_PUBLIC_KEY_PEM {path}: {reason}")]
    KeyFile {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// A rate limit of zero would refuse every message.
    #[error("{0} must be at least 1")]
    ZeroRate(&'static str),
    /// `CHAT_RATE_LIMITS` does not parse.
    #[error("CHAT_RATE_LIMITS: {0}")]
    RateLimits(String),
    /// DATABASE_URL, CHAT_DATA_DIR and --ephemeral name no store.
    #[error("refusing to start: {0}")]
    Store(#[from] StoreChoiceError),
    /// The encryption key ring is malformed.
    #[error("refusing to start: the encryption key ring is invalid: {0}")]
    KeyRing(#[from] KeyRingError),
}

/// A checked `serve` configuration.
#[derive(Debug)]
pub struct ServeConfig {
    /// The application.
    pub app: AppConfig,
    /// The database URL, if any.
    pub database_url: Option<String>,
    /// The store to open (from the URL, the data directory and `--ephemeral`).
    pub store: StoreChoice,
    /// Whether to migrate at start (with a database).
    pub migrate: bool,
    /// Whether this is `--dev`.
    pub dev: bool,
    /// The key ring that seals message text at rest; `None` stores plain text.
    pub key_ring: Option<Arc<KeyRing>>,
}

/// The default rates with the overrides of `CHAT_RATE_LIMITS` applied
/// (`ACTION=COUNT/UNIT[:BURST]`, comma-separated; `*` names every action).
///
/// # Errors
/// [`ConfigError::RateLimits`] naming the entry that does not parse.
pub fn parse_rate_limits(text: &str) -> Result<ActionRates, ConfigError> {
    let mut rates = ActionRates::default();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let bad = |why: &str| ConfigError::RateLimits(format!("`{entry}`: {why}"));
        let (name, rate) = entry
            .split_once('=')
            .ok_or_else(|| bad("expected ACTION=COUNT/UNIT[:BURST]"))?;
        let (rate, burst) = match rate.split_once(':') {
            Some((rate, burst)) => (rate, Some(burst)),
            None => (rate, None),
        };
        let (count, unit) = rate
            .split_once('/')
            .ok_or_else(|| bad("expected COUNT/UNIT, e.g. 10/s"))?;
        let positive = |text: &str| {
            text.trim()
                .parse::<NonZeroU32>()
                .map_err(|_| bad("counts are whole numbers from 1"))
        };
        let count = positive(count)?;
        let burst = burst.map(positive).transpose()?.unwrap_or(count);
        let per = match unit.trim() {
            "s" => Duration::from_secs(1),
            "min" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(bad("the unit is s, min or h")),
        };
        let rate = Rate::new(count, per, burst).ok_or_else(|| bad("too fast to measure"))?;
        let name = name.trim();
        if name == "*" {
            rates = ActionRates::uniform(rate);
            continue;
        }
        let action = ActionClass::from_name(name).ok_or_else(|| {
            bad("unknown action (send has CHAT_SEND_RATE_PER_SECOND and CHAT_SEND_BURST)")
        })?;
        if !rates.set(action, rate) {
            return Err(bad(
                "sends are set by CHAT_SEND_RATE_PER_SECOND and CHAT_SEND_BURST",
            ));
        }
    }
    Ok(rates)
}

/// An empty variable counts as unset (`DATABASE_URL=` in a shell).
fn present(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

impl ServeArgs {
    /// Checks the arguments.
    ///
    /// # Errors
    /// [`ConfigError`] saying what to fix.
    pub fn resolve(self) -> Result<ServeConfig, ConfigError> {
        let key_ring = self.encryption.key_ring()?;
        let bind: Vec<SocketAddr> = self
            .bind
            .to_socket_addrs()
            .map_err(|_| ConfigError::Bind(self.bind.clone()))?
            .collect();
        if bind.is_empty() {
            return Err(ConfigError::Bind(self.bind));
        }
        if self.dev && !bind.iter().all(|a| a.ip().is_loopback()) {
            return Err(ConfigError::DevNotLoopback(self.bind));
        }
        let secret = present(self.auth.jwt_secret.clone())
            .or_else(|| self.dev.then(|| DEV_SECRET.to_owned()));
        let mut auth = auth_config(&self.auth, secret.clone())?;
        auth.issuer = present(self.auth.jwt_issuer);
        auth.audience = present(self.auth.jwt_audience);
        if let Some(warning) = unchecked_claims_warning(&auth, self.dev) {
            tracing::warn!("{warning}");
        }
        // The page mints its tokens as `chatd token` does: HS256 with the server's secret,
        // so only when that is how tokens are verified.
        let dev_tokens = secret
            .filter(|_| {
                self.dev
                    && self.auth.jwt_public_key_pem.is_none()
                    && self.auth.jwt_algorithm.eq_ignore_ascii_case("HS256")
            })
            .map(|secret| {
                DevTokens::new(
                    secret.as_bytes(),
                    auth.issuer.clone(),
                    auth.audience.clone(),
                )
            });
        auth.provisioning = Provisioning::parse(&self.user_provisioning)?;
        let allowed_origins: Vec<String> = self
            .allowed_origins
            .into_iter()
            .map(|o| o.trim().to_owned())
            .filter(|o| !o.is_empty())
            .collect();
        let redis = present(self.redis_url).map(|url| RedisSettings {
            url,
            channel: present(Some(self.redis_channel))
                .unwrap_or_else(|| chat_realtime::DEFAULT_CHANNEL.to_owned()),
        });
        let database_url = present(self.database_url);
        let store = StoreChoice::resolve(database_url.as_deref(), &self.data_dir, self.ephemeral)?;
        Ok(ServeConfig {
            app: AppConfig {
                bind,
                auth,
                http: HttpSettings {
                    allowed_origins: allowed_origins.clone(),
                    workers: self.workers,
                    shutdown_timeout: Duration::from_secs(self.shutdown_timeout),
                    handle_signals: true,
                },
                limits: chat_service::Limits {
                    sends_per_second: NonZeroU32::new(self.send_rate_per_second)
                        .ok_or(ConfigError::ZeroRate("CHAT_SEND_RATE_PER_SECOND"))?,
                    send_burst: NonZeroU32::new(self.send_burst)
                        .ok_or(ConfigError::ZeroRate("CHAT_SEND_BURST"))?,
                    rates: parse_rate_limits(&self.rate_limits)?,
                    ..chat_service::Limits::default()
                },
                ws: WsConfig {
                    allowed_origins,
                    max_connections_per_user: if self.ws_max_connections_per_user == 0 {
                        return Err(ConfigError::ZeroRate("CHAT_WS_MAX_CONNECTIONS_PER_USER"));
                    } else {
                        self.ws_max_connections_per_user
                    },
                    ..WsConfig::default()
                },
                realtime: RealtimeSettings {
                    redis,
                    ..RealtimeSettings::default()
                },
                dev_tokens,
                feed: FeedSettings {
                    retention: self.feed_retention,
                    relay_start_delay: self.fault_relay_start_delay,
                },
            },
            database_url,
            store,
            migrate: !self.no_migrate,
            dev: self.dev,
            key_ring,
        })
    }
}

fn auth_config(args: &AuthArgs, secret: Option<String>) -> Result<AuthConfig, ConfigError> {
    let algorithm = parse_algorithm(&args.jwt_algorithm)?;
    if let Some(path) = &args.jwt_public_key_pem {
        let pem = std::fs::read(path).map_err(|err| ConfigError::KeyFile {
            path: path.display().to_string(),
            reason: err.to_string(),
        })?;
        return Ok(AuthConfig::public_key(algorithm, &pem)?);
    }
    let secret = secret.ok_or(ConfigError::NoSecret)?;
    if secret.len() < 32 {
        tracing::warn!("CHAT_JWT_SECRET is shorter than 32 bytes; use a longer random secret");
    }
    Ok(AuthConfig::hmac(algorithm, secret.as_bytes())?)
}

/// The start-up warning when tokens' issuer or audience is not checked outside `--dev`:
/// then any token signed by the key is accepted, whoever it was minted for.
fn unchecked_claims_warning(auth: &AuthConfig, dev: bool) -> Option<String> {
    let unchecked: Vec<&str> = [
        ("CHAT_JWT_ISSUER", auth.issuer.is_none()),
        ("CHAT_JWT_AUDIENCE", auth.audience.is_none()),
    ]
    .into_iter()
    .filter_map(|(name, unset)| unset.then_some(name))
    .collect();
    (!dev && !unchecked.is_empty()).then(|| {
        format!(
            "{} unset: any token signed by the key is accepted, whatever its {}",
            unchecked.join(" and "),
            if unchecked.len() == 2 {
                "issuer and audience"
            } else if auth.issuer.is_none() {
                "issuer"
            } else {
                "audience"
            }
        )
    })
}

impl TokenArgs {
    /// The secret to sign with.
    ///
    /// # Errors
    /// [`ConfigError::NoSecret`] without CHAT_JWT_SECRET and without `--dev`.
    pub fn secret(&self) -> Result<String, ConfigError> {
        present(self.jwt_secret.clone())
            .or_else(|| self.dev.then(|| DEV_SECRET.to_owned()))
            .ok_or(ConfigError::NoSecret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The defaults table in docs/security.md says what the code does.
    #[test]
    fn the_documented_rate_defaults_are_the_defaults() {
        let doc = include_str!("../../../docs/security.md");
        let defaults = ActionRates::default();
        for action in ActionClass::ALL {
            let (count, per, burst) = match defaults.get(action) {
                Some(rate) => (rate.count(), rate.per(), rate.burst()),
                None => {
                    let limits = chat_service::Limits::default();
                    (
                        limits.sends_per_second,
                        Duration::from_secs(1),
                        limits.send_burst,
                    )
                }
            };
            let unit = if per == Duration::from_secs(60) {
                "min"
            } else {
                "s"
            };
            let row = doc
                .lines()
                .find(|line| line.starts_with(&format!("| `{}` |", action.name())))
                .unwrap_or_else(|| panic!("no row for {}", action.name()));
            let expected = format!("| {count}/{unit}, burst {burst} |");
            assert!(row.contains(&expected), "{row} should say {expected}");
        }
    }

    #[test]
    fn rate_limits_override_the_defaults_and_refuse_nonsense() {
        let n = |v| NonZeroU32::new(v).unwrap();
        assert_eq!(parse_rate_limits("").unwrap(), ActionRates::default());
        let rates =
            parse_rate_limits(" react=10/s:40 , create_group=60/min:20,typing=2/s").unwrap();
        assert_eq!(rates.react, Rate::per_second(n(10), n(40)));
        assert_eq!(rates.create_group, Rate::per_minute(n(60), n(20)));
        assert_eq!(rates.typing, Rate::per_second(n(2), n(2)));
        assert_eq!(rates.edit, ActionRates::default().edit);
        let all = parse_rate_limits("*=1/h:5,read=3/s").unwrap();
        assert_eq!(
            all.manage,
            Rate::new(n(1), Duration::from_secs(3600), n(5)).unwrap()
        );
        assert_eq!(all.read, Rate::per_second(n(3), n(3)));
        for bad in [
            "react",
            "react=10",
            "react=0/s",
            "react=10/s:0",
            "react=10/day",
            "send=10/s",
            "shout=1/s",
            "react=-1/s",
        ] {
            let err = parse_rate_limits(bad).unwrap_err().to_string();
            assert!(err.starts_with("CHAT_RATE_LIMITS: `"), "{bad}: {err}");
        }
    }

    #[test]
    fn unset_issuer_or_audience_outside_dev_is_warned_about() {
        let mut auth = AuthConfig::hs256(b"0123456789abcdef0123456789abcdef");
        let warning = unchecked_claims_warning(&auth, false).unwrap();
        assert!(
            warning.contains("CHAT_JWT_ISSUER and CHAT_JWT_AUDIENCE"),
            "{warning}"
        );
        assert!(
            warning.contains("any token signed by the key is accepted"),
            "{warning}"
        );
        assert_eq!(unchecked_claims_warning(&auth, true), None);
        auth.issuer = Some("https://id.example".into());
        let warning = unchecked_claims_warning(&auth, false).unwrap();
        assert!(warning.starts_with("CHAT_JWT_AUDIENCE unset"), "{warning}");
        auth.audience = Some("chat".into());
        assert_eq!(unchecked_claims_warning(&auth, false), None);
    }

    fn serve(args: &[&str]) -> ServeArgs {
        let mut argv = vec!["chatd", "serve"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).expect("parses").command {
            Command::Serve(serve) => serve,
            other => panic!("not serve: {other:?}"),
        }
    }

    fn clean(mut args: ServeArgs) -> ServeArgs {
        args.auth.jwt_secret = None;
        args.auth.jwt_public_key_pem = None;
        args.auth.jwt_algorithm = "HS256".into();
        args.database_url = None;
        args.data_dir = PathBuf::from(DEFAULT_DATA_DIR);
        args.bind = "127.0.0.1:8080".into();
        args.user_provisioning = "jit".into();
        args.encryption = EncryptionArgs::default();
        args
    }

    #[test]
    fn refuses_to_start_without_secret_and_without_dev() {
        let err = clean(serve(&[])).resolve().expect_err("must refuse");
        assert!(matches!(err, ConfigError::NoSecret));
        let text = err.to_string();
        assert!(text.contains("CHAT_JWT_SECRET"), "{text}");
        assert!(text.contains("--dev"), "{text}");
    }

    #[test]
    fn dev_mode_uses_the_development_secret_on_loopback() {
        let mut args = clean(serve(&["--dev"]));
        args.dev = true;
        let config = args.resolve().expect("dev starts");
        assert!(config.dev);
        assert!(config.app.bind.iter().all(|a| a.ip().is_loopback()));
        assert!(config.database_url.is_none());
        // --dev persists: a SQLite file in the default data directory.
        assert_eq!(
            config.store,
            StoreChoice::Sqlite(PathBuf::from("chatd-data/chat.db"))
        );
        assert!(config.app.dev_tokens.is_some(), "the page can sign in");
    }

    #[test]
    fn ephemeral_keeps_everything_in_memory_and_refuses_a_database() {
        let mut args = clean(serve(&["--dev", "--ephemeral"]));
        args.dev = true;
        assert_eq!(
            args.clone().resolve().expect("starts").store,
            StoreChoice::Memory
        );
        args.database_url = Some("mysql://root@127.0.0.1/chat".into());
        let err = args.resolve().expect_err("must refuse");
        assert!(err.to_string().contains("--ephemeral"), "{err}");
    }

    #[test]
    fn data_dir_and_sqlite_urls_choose_the_file() {
        let mut args = clean(serve(&["--dev"]));
        args.dev = true;
        args.data_dir = PathBuf::from("/srv/chat");
        assert_eq!(
            args.clone().resolve().expect("starts").store,
            StoreChoice::Sqlite(PathBuf::from("/srv/chat/chat.db"))
        );
        args.database_url = Some("sqlite:///var/chat.db".into());
        assert_eq!(
            args.clone().resolve().expect("starts").store,
            StoreChoice::Sqlite(PathBuf::from("/var/chat.db"))
        );
        args.database_url = Some("redis://localhost".into());
        assert!(matches!(args.resolve(), Err(ConfigError::Store(_))));
    }

    #[test]
    fn dev_mode_refuses_other_addresses() {
        let mut args = clean(serve(&["--dev"]));
        args.bind = "0.0.0.0:8080".into();
        let err = args.resolve().expect_err("must refuse");
        assert!(matches!(err, ConfigError::DevNotLoopback(_)), "{err}");
    }

    #[test]
    fn a_secret_is_enough() {
        let mut args = clean(serve(&[]));
        args.auth.jwt_secret = Some("s".repeat(40));
        args.database_url = Some(String::new());
        args.allowed_origins = vec!["https://a.example".into(), " ".into()];
        let config = args.resolve().expect("starts");
        assert!(config.database_url.is_none(), "empty DATABASE_URL is unset");
        assert_eq!(config.app.http.allowed_origins, ["https://a.example"]);
        assert!(config.migrate);
        assert!(
            config.app.dev_tokens.is_none(),
            "no token minting outside --dev"
        );
    }

    #[test]
    fn refuses_unknown_algorithm_and_provisioning() {
        let mut args = clean(serve(&[]));
        args.auth.jwt_secret = Some("s".repeat(40));
        args.auth.jwt_algorithm = "none".into();
        assert!(matches!(args.resolve(), Err(ConfigError::Auth(_))));
        let mut args = clean(serve(&[]));
        args.auth.jwt_secret = Some("s".repeat(40));
        args.user_provisioning = "sometimes".into();
        assert!(matches!(args.resolve(), Err(ConfigError::Auth(_))));
    }

    #[test]
    fn durations_parse_in_the_documented_units_and_refuse_the_rest() {
        let secs = Duration::from_secs;
        for (text, expected) in [
            ("14d", secs(14 * 86_400)),
            ("36h", secs(36 * 3600)),
            ("90min", secs(90 * 60)),
            ("90m", secs(90 * 60)),
            ("1h30min", secs(5400)),
            ("1h 30min", secs(5400)),
            (" 2w ", secs(14 * 86_400)),
            ("30s", secs(30)),
            ("250ms", Duration::from_millis(250)),
            ("0s", Duration::ZERO),
        ] {
            assert_eq!(parse_duration(text), Ok(expected), "{text}");
        }
        for bad in [
            "",
            "14",
            "d",
            "14 days",
            "-1d",
            "1.5h",
            "1h30",
            "99999999999999d",
        ] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.contains("not a duration"), "{bad}: {err}");
        }
        assert_eq!(parse_retention("14d"), Ok(secs(14 * 86_400)));
        assert!(
            parse_retention("59s")
                .unwrap_err()
                .contains("between 1min and 3650d")
        );
        assert!(parse_retention("3651d").is_err());
    }

    #[test]
    fn the_feed_retention_defaults_to_14_days_and_the_fault_delay_is_hidden_and_off() {
        let mut args = clean(serve(&["--dev"]));
        args.dev = true;
        assert_eq!(args.feed_retention, Duration::from_secs(14 * 86_400));
        assert_eq!(args.fault_relay_start_delay, None);
        let config = args.resolve().expect("starts");
        assert_eq!(config.app.feed, FeedSettings::default());
        let mut args = clean(serve(&[
            "--dev",
            "--feed-retention",
            "2h",
            "--fault-relay-start-delay",
            "5s",
        ]));
        args.dev = true;
        let feed = args.resolve().expect("starts").app.feed;
        assert_eq!(feed.retention, Duration::from_secs(7200));
        assert_eq!(feed.relay_start_delay, Some(Duration::from_secs(5)));
        assert!(Cli::try_parse_from(["chatd", "serve", "--feed-retention", "10s"]).is_err());
    }

    #[test]
    fn no_migrate_flag() {
        let mut args = clean(serve(&["--no-migrate", "--dev"]));
        args.dev = true;
        assert!(!args.resolve().expect("starts").migrate);
    }
}
