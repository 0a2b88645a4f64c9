//! A fresh, migrated SQLite store per test, in a temporary directory that lives exactly as
//! long as the store (temporary files are cheap: no server, nothing to skip).

use chat_sqlite::{SqliteSettings, SqliteStore};
use tempfile::TempDir;

/// A migrated store on a file in its own temporary directory; the directory is removed
/// when this is dropped, after the store.
pub struct TestFile {
    /// The store on the file.
    pub store: SqliteStore,
    // Declared after `store`: fields drop in order, so the directory outlives the store.
    dir: TempDir,
}

/// A fresh, migrated store in a new temporary directory, sealing under the key-ring
/// switch's ring in the key-ring pass.
///
/// # Panics
/// When the temporary directory or the database cannot be created: the test cannot run.
pub async fn fresh_store() -> TestFile {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("chat.db");
    let store = SqliteStore::open(
        path.to_str().expect("a UTF-8 temporary path"),
        SqliteSettings::default(),
    )
    .await
    .expect("the SQLite store opens")
    .with_cipher(crate::key_ring::cipher());
    store.migrate().await.expect("migrations apply");
    TestFile { store, dir }
}

impl TestFile {
    /// The temporary directory holding the database file.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Finishes queued writes and closes the store; the directory goes with `self`.
    pub async fn finish(self) {
        self.store.close().await;
    }
}
