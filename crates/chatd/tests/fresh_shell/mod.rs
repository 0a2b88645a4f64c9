//! The settings `chatd` reads from the environment, for the tests that run the real
//! binary: cleared so that a test sees a fresh shell, whatever the developer exported.

/// Every environment variable `chatd` reads (its clap settings and the key ring's).
pub(crate) const CHATD_SETTINGS: &[&str] = &[
    "CHAT_JWT_SECRET",
    "CHAT_JWT_ALGORITHM",
    "CHAT_JWT_PUBLIC_KEY_PEM",
    "CHAT_JWT_ISSUER",
    "CHAT_JWT_AUDIENCE",
    "CHAT_ALLOWED_ORIGINS",
    "CHAT_USER_PROVISIONING",
    "DATABASE_URL",
    "CHAT_DATA_DIR",
    "CHAT_BIND",
    "REDIS_URL",
    "CHAT_SEND_RATE_PER_SECOND",
    "CHAT_SEND_BURST",
    "CHAT_RATE_LIMITS",
    "CHAT_WS_MAX_CONNECTIONS_PER_USER",
    "CHAT_ENCRYPTION_KEYS",
    "CHAT_ENCRYPTION_KEYS_FILE",
    "CHAT_ENCRYPTION_ACTIVE_KEY",
    "CHAT_FEED_RETENTION",
    "CHAT_FAULT_RELAY_START_DELAY",
    "CHAT_SHUTDOWN_TIMEOUT",
    "CHAT_WORKERS",
    "CHAT_REDIS_CHANNEL",
    "CHAT_LOG_FORMAT",
];
