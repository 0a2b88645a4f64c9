//! Operator-tunable connection-pool settings, with defaults suited to a chat backend and a
//! reader for the environment.

use std::time::Duration;

/// How to reach the database and how large the pool may grow.
#[derive(Clone, PartialEq, Eq)]
pub struct MySqlSettings {
    /// `mysql://user:password@host:port/database`.
    pub url: String,
    /// The most connections the pool opens (default 16).
    pub max_connections: u32,
    /// Connections kept open even when idle (default 0).
    pub min_connections: u32,
    /// How long a use case waits for a free connection before failing with
    /// `StoreError::Unavailable` (default 3 s, far below sqlx's 30 s so that callers fail fast).
    pub acquire_timeout: Duration,
    /// How long an idle connection is kept (default 10 min; `None`: forever).
    pub idle_timeout: Option<Duration>,
    /// How long a use case may run once it holds a connection (default 2 s). Every call
    /// of a port is answered within `acquire_timeout + statement_timeout`, with
    /// `StoreError::Unavailable` when the database did not answer in time: a statement
    /// already sent to a frozen server has no other deadline.
    pub statement_timeout: Duration,
    /// How many sends may wait for the group commit (default 1024); when it is full, a
    /// send is answered `StoreError::Unavailable` at once.
    pub append_queue: usize,
}

impl std::fmt::Debug for MySqlSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password.
        f.debug_struct("MySqlSettings")
            .field("url", &"<redacted>")
            .field("max_connections", &self.max_connections)
            .field("min_connections", &self.min_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("append_queue", &self.append_queue)
            .finish()
    }
}

/// A setting in the environment that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// `DATABASE_URL` is not set.
    #[error("DATABASE_URL is not set")]
    MissingUrl,
    /// A numeric variable does not hold a number.
    #[error("{name} must be a non-negative integer, got {value:?}")]
    NotANumber {
        /// The variable.
        name: &'static str,
        /// What it holds.
        value: String,
    },
}

impl MySqlSettings {
    /// The default pool size.
    pub const DEFAULT_MAX_CONNECTIONS: u32 = 16;
    /// The default wait for a free connection.
    pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
    /// The default lifetime of an idle connection.
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
    /// The default time a use case may run once it holds a connection.
    pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(2);
    /// The default bound of the queue of sends waiting for the group commit.
    pub const DEFAULT_APPEND_QUEUE: usize = 1024;

    /// Settings for `url` with every other value at its default.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            min_connections: 0,
            acquire_timeout: Self::DEFAULT_ACQUIRE_TIMEOUT,
            idle_timeout: Some(Self::DEFAULT_IDLE_TIMEOUT),
            statement_timeout: Self::DEFAULT_STATEMENT_TIMEOUT,
            append_queue: Self::DEFAULT_APPEND_QUEUE,
        }
    }

    /// Reads `DATABASE_URL` (required), `DATABASE_MAX_CONNECTIONS`,
    /// `DATABASE_ACQUIRE_TIMEOUT_MS`, `DATABASE_STATEMENT_TIMEOUT_MS` and
    /// `DATABASE_APPEND_QUEUE` (optional).
    ///
    /// # Errors
    /// [`SettingsError`] when the URL is missing or a number is malformed.
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// As [`MySqlSettings::from_env`], reading variables through `lookup` (for tests).
    ///
    /// # Errors
    /// [`SettingsError`] when the URL is missing or a number is malformed.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let url = lookup("DATABASE_URL")
            .filter(|u| !u.trim().is_empty())
            .ok_or(SettingsError::MissingUrl)?;
        let mut settings = Self::new(url);
        let number = |name: &'static str| -> Result<Option<u64>, SettingsError> {
            match lookup(name) {
                None => Ok(None),
                Some(value) => value
                    .trim()
                    .parse::<u64>()
                    .map(Some)
                    .map_err(|_| SettingsError::NotANumber { name, value }),
            }
        };
        if let Some(max) = number("DATABASE_MAX_CONNECTIONS")? {
            settings.max_connections =
                u32::try_from(max.max(1)).map_err(|_| SettingsError::NotANumber {
                    name: "DATABASE_MAX_CONNECTIONS",
                    value: max.to_string(),
                })?;
        }
        if let Some(ms) = number("DATABASE_ACQUIRE_TIMEOUT_MS")? {
            settings.acquire_timeout = Duration::from_millis(ms);
        }
        if let Some(ms) = number("DATABASE_STATEMENT_TIMEOUT_MS")? {
            settings.statement_timeout = Duration::from_millis(ms);
        }
        if let Some(queue) = number("DATABASE_APPEND_QUEUE")? {
            settings.append_queue =
                usize::try_from(queue.max(1)).map_err(|_| SettingsError::NotANumber {
                    name: "DATABASE_APPEND_QUEUE",
                    value: queue.to_string(),
                })?;
        }
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_overrides_defaults() {
        let env = |name: &str| match name {
            "DATABASE_URL" => Some("mysql://root@localhost/chat".to_owned()),
            "DATABASE_MAX_CONNECTIONS" => Some("40".to_owned()),
            "DATABASE_ACQUIRE_TIMEOUT_MS" => Some("250".to_owned()),
            "DATABASE_STATEMENT_TIMEOUT_MS" => Some("750".to_owned()),
            "DATABASE_APPEND_QUEUE" => Some("8".to_owned()),
            _ => None,
        };
        let settings = MySqlSettings::from_lookup(env).expect("valid");
        assert_eq!(settings.statement_timeout, Duration::from_millis(750));
        assert_eq!(settings.append_queue, 8);
        assert_eq!(settings.max_connections, 40);
        assert_eq!(settings.acquire_timeout, Duration::from_millis(250));
        assert_eq!(settings.min_connections, 0);
    }

    #[test]
    fn defaults_and_errors() {
        let only_url = |name: &str| (name == "DATABASE_URL").then(|| "mysql://h/db".to_owned());
        let settings = MySqlSettings::from_lookup(only_url).expect("valid");
        assert_eq!(settings.max_connections, 16);
        assert_eq!(settings.acquire_timeout, Duration::from_secs(3));
        assert_eq!(settings.statement_timeout, Duration::from_secs(2));
        assert_eq!(settings.append_queue, 1024);
        assert!(!format!("{settings:?}").contains("mysql://"));

        assert_eq!(
            MySqlSettings::from_lookup(|_| None),
            Err(SettingsError::MissingUrl)
        );
        let bad = |name: &str| match name {
            "DATABASE_URL" => Some("mysql://h/db".to_owned()),
            "DATABASE_MAX_CONNECTIONS" => Some("many".to_owned()),
            _ => None,
        };
        assert!(matches!(
            MySqlSettings::from_lookup(bad),
            Err(SettingsError::NotANumber {
                name: "DATABASE_MAX_CONNECTIONS",
                ..
            })
        ));
    }
}
