//! Translation of driver errors into port errors. SQL text and driver types stop here: what
//! leaves the adapter is a [`StoreError`] whose message names the failure, never a statement.

use chat_ports::StoreError;
use sqlx::mysql::MySqlDatabaseError;

/// MySQL error numbers the adapter gives a meaning to.
pub(crate) mod code {
    /// Duplicate entry for a unique key.
    pub(crate) const DUPLICATE_KEY: u16 = 1062;
    /// A child row references a parent that does not exist.
    pub(crate) const NO_REFERENCED_ROW: u16 = 1452;
    /// A lock wait timed out.
    pub(crate) const LOCK_WAIT_TIMEOUT: u16 = 1205;
    /// The transaction was chosen as a deadlock victim and rolled back.
    pub(crate) const DEADLOCK: u16 = 1213;
    /// The table does not exist (yet: the migrations have not run).
    pub(crate) const NO_SUCH_TABLE: u16 = 1146;
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

/// The MySQL error number of a database error.
pub(crate) fn db_code(error: &sqlx::Error) -> Option<u16> {
    error
        .as_database_error()
        .and_then(|e| e.try_downcast_ref::<MySqlDatabaseError>())
        .map(MySqlDatabaseError::number)
}

/// Whether `error` is a duplicate entry for the unique key named `key`.
pub(crate) fn is_duplicate_of(error: &sqlx::Error, key: &str) -> bool {
    db_code(error) == Some(code::DUPLICATE_KEY)
        && error
            .as_database_error()
            .is_some_and(|e| e.message().contains(key))
}

impl Failure {
    /// A decoding failure of stored data (a value the domain refuses).
    pub(crate) fn corrupt(what: &str) -> Self {
        Failure::Store(StoreError::Unavailable(format!(
            "stored data could not be read: {what}"
        )))
    }

    /// Whether running the whole use case again may succeed (deadlock victim, lock wait
    /// timeout): the transaction was rolled back by the server.
    pub(crate) fn is_transient_conflict(&self) -> bool {
        matches!(self, Failure::Db(e) if matches!(db_code(e), Some(code::DEADLOCK | code::LOCK_WAIT_TIMEOUT)))
    }

    /// Whether a table the statement names does not exist: before the migrations ran.
    pub(crate) fn is_missing_table(&self) -> bool {
        matches!(self, Failure::Db(e) if db_code(e) == Some(code::NO_SUCH_TABLE))
    }

    /// The port error. Driver details go to the log, not to the caller.
    pub(crate) fn into_store(self) -> StoreError {
        match self {
            Failure::Store(e) => e,
            Failure::Db(e) => translate(&e),
        }
    }
}

/// The answer of a call the database did not answer by its deadline.
pub(crate) fn timed_out() -> StoreError {
    StoreError::Unavailable(crate::appender::TIMED_OUT.into())
}

/// Maps a driver error to the port's vocabulary.
pub(crate) fn translate(error: &sqlx::Error) -> StoreError {
    use sqlx::Error as E;
    match error {
        E::RowNotFound => StoreError::NotFound,
        E::PoolTimedOut => StoreError::Unavailable("timed out waiting for a connection".into()),
        E::PoolClosed => StoreError::Unavailable("connection pool closed".into()),
        E::Io(_) => StoreError::Unavailable("database connection failed".into()),
        E::Tls(_) => StoreError::Unavailable("database TLS failure".into()),
        E::Protocol(_) | E::WorkerCrashed => {
            tracing::error!(error = %error, "database protocol failure");
            StoreError::Unavailable("database connection failed".into())
        }
        E::Database(_) => match db_code(error) {
            Some(code::NO_REFERENCED_ROW) => StoreError::NotFound,
            Some(code::DEADLOCK | code::LOCK_WAIT_TIMEOUT) => {
                StoreError::Unavailable("database lock contention; retry".into())
            }
            Some(number) => {
                tracing::error!(error = %error, "database error");
                StoreError::Unavailable(format!("database error {number}"))
            }
            None => {
                tracing::error!(error = %error, "database error");
                StoreError::Unavailable("database error".into())
            }
        },
        // Decoding failures name the column and the type mismatch; they hold no SQL.
        other => {
            tracing::error!(error = %other, "database driver failure");
            StoreError::Unavailable(format!("stored data could not be read: {other}"))
        }
    }
}
