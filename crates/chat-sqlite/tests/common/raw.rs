//! A plain connection to a test database file, to look at rows the ports do not show.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, SqliteConnection};

/// Opens a connection of its own to the file (the store's lock file is advisory only).
pub async fn connect(location: &str) -> SqliteConnection {
    SqliteConnectOptions::new()
        .filename(location)
        .connect()
        .await
        .expect("raw connection")
}

/// One integer from `sql` with `bind` bound, when given.
pub async fn scalar(conn: &mut SqliteConnection, sql: &str, bind: Option<String>) -> i64 {
    let mut query = sqlx::query_scalar::<_, i64>(sql);
    if let Some(value) = bind {
        query = query.bind(value);
    }
    query.fetch_one(&mut *conn).await.expect("scalar query")
}
