//! Test support shared by the workspace's test suites (a dev-dependency only): a fresh,
//! migrated MySQL database per test ([`mysql`]), a fresh SQLite file per test ([`sqlite`]),
//! a TCP proxy that freezes or cuts connections to inject database faults ([`proxy`]), a
//! `chatd` process and the address it announces ([`process`]), and
//! the rule every suite follows when a server it needs is absent: skip loudly, and fail
//! when the run requires the server ([`skip_or_fail`]). The stores built here follow the
//! key-ring switch ([`key_ring`], `CHAT_TEST_KEY_RING=1`): sealed at rest in the key-ring
//! pass, plain otherwise.

#![forbid(unsafe_code)]

pub use chat_contract::switch as key_ring;

pub mod mysql;
pub mod process;
pub mod proxy;
pub mod sqlite;

/// Whether this run requires the servers the tests use: under CI (`CI=true`) or when
/// `variable` (such as `CHAT_REQUIRE_MYSQL`) is `1`.
pub fn required(variable: &str) -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
        || std::env::var(variable).is_ok_and(|v| v == "1")
}

/// Prints a banner that `what` is not available at `url` (because of `reason`) and what
/// happens instead (`consequence`, such as "chat-mysql tests are SKIPPED"), then fails
/// the test when the run requires the server (see [`required`]).
///
/// # Panics
/// When the run requires the server: a test that needs an absent server never passes
/// silently in CI.
pub fn skip_or_fail(what: &str, url: &str, reason: &str, consequence: &str, variable: &str) {
    eprintln!(
        "\n{bar}\n!!! {what} NOT AVAILABLE at {url}: {reason}\n!!! {consequence}. Set \
         {variable}=1 (or CI=true) to make this fail.\n{bar}\n",
        bar = "!".repeat(78),
    );
    assert!(
        !required(variable),
        "{what} is required (CI=true or {variable}=1): {reason}"
    );
}
