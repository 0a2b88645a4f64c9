//! Translation of driver errors into port errors, and the errors of opening and migrating a
//! database file. SQL text and driver types stop here.

use std::path::PathBuf;

use chat_ports::StoreError;
use sqlx::error::ErrorKind;

/// SQLite primary result codes the adapter gives a meaning to (the low byte of an extended
/// code).
pub(crate) mod code {
    /// The database file is locked by another connection past the busy timeout.
    pub(crate) const BUSY: i64 = 5;
    /// A table is locked (shared cache).
    pub(crate) const LOCKED: i64 = 6;
    /// An attempt to write a read-only database.
    pub(crate) const READONLY: i64 = 8;
    /// The disk is full.
    pub(crate) const FULL: i64 = 13;
    /// The file is not a database.
    pub(crate) const NOTADB: i64 = 26;
}

/// An adapter-internal failure: a driver error not yet interpreted, or a port error decided
/// by the adapter's logic.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The driver failed.
    Db(sqlx::Error),
    /// The use case ends with this port error.
    Store(StoreError),
}

impl From<sqlx::Error> for Failure {
    fn from(error: sqlx::Error) -> Self {
        Failure::Db(error)
    }
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        Failure::Store(error)
    }
}

impl From<chat_ports::StoreConflict> for Failure {
    fn from(conflict: chat_ports::StoreConflict) -> Self {
        Failure::Store(StoreError::Conflict(conflict))
    }
}

/// The adapter's internal result.
pub(crate) type Outcome<T> = Result<T, Failure>;

impl Failure {
    /// A decoding failure of stored data (a value the domain refuses).
    pub(crate) fn corrupt(what: &str) -> Self {
        Failure::Store(StoreError::Unavailable(format!(
            "stored data could not be read: {what}"
        )))
    }

    /// The port error. Driver details go to the log, not to the caller.
    pub(crate) fn into_store(self) -> StoreError {
        match self {
            Failure::Store(e) => e,
            Failure::Db(e) => translate(&e),
        }
    }
}

/// The SQLite primary result code of a database error.
pub(crate) fn primary_code(error: &sqlx::Error) -> Option<i64> {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .and_then(|c| c.parse::<i64>().ok())
        .map(|c| c & 0xff)
}

/// Maps a driver error to the port's vocabulary.
pub(crate) fn translate(error: &sqlx::Error) -> StoreError {
    use sqlx::Error as E;
    match error {
        E::RowNotFound => StoreError::NotFound,
        E::PoolTimedOut => StoreError::Unavailable("timed out waiting for a connection".into()),
        E::PoolClosed => StoreError::Unavailable("the database is closed".into()),
        E::Io(_) => StoreError::Unavailable("database file I/O failed".into()),
        E::Database(db) => {
            if db.kind() == ErrorKind::ForeignKeyViolation {
                // A referenced user, posting, conversation or message does not exist.
                return StoreError::NotFound;
            }
            match primary_code(error) {
                Some(code::BUSY | code::LOCKED) => {
                    StoreError::Unavailable("database busy; retry".into())
                }
                Some(code::FULL) => StoreError::Unavailable("disk full".into()),
                Some(code::READONLY) => StoreError::Unavailable("database is read-only".into()),
                Some(number) => {
                    tracing::error!(error = %error, "database error");
                    StoreError::Unavailable(format!("database error {number}"))
                }
                None => {
                    tracing::error!(error = %error, "database error");
                    StoreError::Unavailable("database error".into())
                }
            }
        }
        // Decoding failures name the column and the type mismatch; they hold no SQL.
        other => {
            tracing::error!(error = %other, "database driver failure");
            StoreError::Unavailable(format!("stored data could not be read: {other}"))
        }
    }
}

/// Why a database file could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The location is not a usable file path (for example `:memory:`: the adapter needs a
    /// file that its writer and readers share).
    #[error("invalid SQLite database location {location:?}: {reason}")]
    InvalidLocation {
        /// What was given.
        location: String,
        /// Why it is refused.
        reason: String,
    },
    /// Another process (another chatd) holds the database.
    #[error(
        "database file {} is in use by another chatd (lock file {} is held); stop it or choose another data directory",
        path.display(), lock.display()
    )]
    InUse {
        /// The database file.
        path: PathBuf,
        /// The lock file next to it.
        lock: PathBuf,
    },
    /// The file or its directory cannot be created or written.
    #[error("database file {} cannot be created or written: {reason}", path.display())]
    Unwritable {
        /// The database file.
        path: PathBuf,
        /// What the system said.
        reason: String,
    },
    /// The file exists but is not a SQLite database (or is damaged).
    #[error("{} is not a SQLite database (or it is damaged): {reason}", path.display())]
    NotADatabase {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        reason: String,
    },
}

/// Why the migrations could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    /// The database was migrated by a newer version of the service: it holds a migration
    /// this binary does not know.
    #[error(
        "the database schema is newer than this chatd: it has migration {version}, and this binary knows migrations up to {known}; run a newer chatd (or restore a backup)"
    )]
    NewerSchema {
        /// The unknown applied migration.
        version: i64,
        /// The newest migration this binary knows.
        known: i64,
    },
    /// An applied migration differs from the embedded one of the same version.
    #[error("migration {version} applied to the database differs from this binary's")]
    Modified {
        /// The migration.
        version: i64,
    },
    /// A migration failed, or the database could not be reached.
    #[error("database migration failed: {0}")]
    Failed(String),
}

/// Classifies a driver error raised while opening `path`.
pub(crate) fn open_error(path: &std::path::Path, error: &sqlx::Error) -> OpenError {
    let reason = error.to_string();
    match primary_code(error) {
        Some(code::NOTADB) => OpenError::NotADatabase {
            path: path.to_owned(),
            reason,
        },
        Some(code::BUSY | code::LOCKED) => OpenError::InUse {
            path: path.to_owned(),
            lock: crate::lock_path(path),
        },
        // READONLY, CANTOPEN, IOERR, FULL and anything else: the file cannot be used.
        _ => OpenError::Unwritable {
            path: path.to_owned(),
            reason,
        },
    }
}
