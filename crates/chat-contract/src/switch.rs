//! The key-ring switch of the test suites: with `CHAT_TEST_KEY_RING=1`, every store the
//! fixtures build (memory, SQLite, MySQL, the servers the `chatd` tests start) seals
//! message text under a key ring generated once per test process, so the same tests prove
//! the behaviour with encryption at rest as without. `cargo xtask test` runs the
//! storage-touching suites a second time with it set (the "key-ring pass").
//!
//! Tests that assert what sits at rest, or how `chatd` behaves without a ring, pin their
//! own ring instead of following the switch.

use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use chat_crypto::{KeyRing, MessageCipher};

/// The environment variable that turns the key-ring pass on (`1`).
pub const VARIABLE: &str = "CHAT_TEST_KEY_RING";

/// Carries the generated ring's entries to a child test process (see [`child_env`]), which
/// then uses the parent's key instead of generating its own.
const ENTRIES_VARIABLE: &str = "CHAT_TEST_KEY_RING_ENTRIES";

/// The id of the generated key (the `encryption_key_id` of every sealed row).
pub const KEY_ID: &str = "test-ring";

/// Whether this run is the key-ring pass (`CHAT_TEST_KEY_RING=1`).
pub fn enabled() -> bool {
    std::env::var(VARIABLE).is_ok_and(|value| value == "1")
}

/// The generated ring's entry text (`test-ring:<base64 key>`), the same for the whole
/// process: a store reopened, or a `chatd` restarted, within a test reads what it wrote.
fn entries() -> &'static str {
    static ENTRIES: OnceLock<String> = OnceLock::new();
    ENTRIES.get_or_init(|| {
        if let Some(inherited) = std::env::var(ENTRIES_VARIABLE)
            .ok()
            .filter(|entries| !entries.is_empty())
        {
            return inherited;
        }
        let mut key = [0_u8; 32];
        key[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        key[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        let encoded = base64::engine::general_purpose::STANDARD.encode(key);
        format!("{KEY_ID}:{encoded}")
    })
}

/// The generated key ring in the key-ring pass, `None` otherwise.
pub fn ring() -> Option<Arc<KeyRing>> {
    enabled().then(|| {
        let ring = KeyRing::parse(entries(), Some(KEY_ID)).expect("the generated ring parses");
        Arc::new(ring)
    })
}

/// The cipher a test store seals with: under [`ring`] in the key-ring pass, plain
/// otherwise.
pub fn cipher() -> MessageCipher {
    MessageCipher::new(ring())
}

/// The environment that gives a spawned `chatd` the same ring (`CHAT_ENCRYPTION_KEYS`
/// and `CHAT_ENCRYPTION_ACTIVE_KEY`) in the key-ring pass; empty otherwise.
pub fn chatd_env() -> Vec<(&'static str, String)> {
    if enabled() {
        chatd_env_pinned()
    } else {
        Vec::new()
    }
}

/// The generated ring's configuration for a spawned `chatd`, whether or not the switch is
/// on (for tests that pin a ring of their own).
pub fn chatd_env_pinned() -> Vec<(&'static str, String)> {
    vec![
        ("CHAT_ENCRYPTION_KEYS", entries().to_owned()),
        ("CHAT_ENCRYPTION_ACTIVE_KEY", KEY_ID.to_owned()),
    ]
}

/// The environment that gives a child test process (one that re-runs the test binary) the
/// same switch and the same ring, so what either process writes the other reads.
pub fn child_env() -> Vec<(&'static str, String)> {
    if enabled() {
        vec![
            (VARIABLE, "1".to_owned()),
            (ENTRIES_VARIABLE, entries().to_owned()),
        ]
    } else {
        Vec::new()
    }
}
