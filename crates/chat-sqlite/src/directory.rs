//! [`UserDirectory`] and [`PostingDirectory`] on the adapter's own `app_users` and
//! `POSTINGS` tables (with SQLite the service is the platform's only store).

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use chat_domain::{DisplayName, PostingId, UserId};
use chat_ports::{PostingDirectory, StoreError, UserDirectory};
use sqlx::{Row, SqliteConnection};

use crate::SqliteStore;
use crate::error::{Failure, Outcome, translate};
use crate::rows::{self, NAME_EXPR, placeholders};

/// The user's name as first and last name read together (`CONCAT_WS` on MySQL), from the
/// row being updated.
const COMPOSED_NAME: &str = "TRIM(COALESCE(first_name, '') || ' ' || COALESCE(last_name, ''))";

/// Makes sure `user` exists, with `name` as display name when one is given, on the writer's
/// connection. A given name replaces the stored one unless first and last name already read
/// as it (byte for byte); then `last_name` is cleared only if it no longer fits.
pub(crate) async fn upsert_user(
    conn: &mut SqliteConnection,
    user: UserId,
    name: Option<&str>,
) -> Outcome<()> {
    // Every assignment sees the old row, so both compare against the stored name.
    let sql = format!(
        "INSERT INTO app_users (id, first_name) VALUES (?, ?) \
         ON CONFLICT (id) DO UPDATE SET \
           first_name = CASE WHEN excluded.first_name IS NULL \
              OR {COMPOSED_NAME} = excluded.first_name THEN first_name ELSE excluded.first_name END, \
           last_name = CASE WHEN excluded.first_name IS NULL \
              OR {COMPOSED_NAME} = excluded.first_name THEN last_name ELSE NULL END"
    );
    sqlx::query(&sql)
        .bind(user.get())
        .bind(name)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

impl SqliteStore {
    async fn existing_users(&self, users: &[UserId]) -> Outcome<Vec<(UserId, Option<String>)>> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT u.id, {NAME_EXPR} AS display_name FROM app_users u WHERE u.id IN ({})",
            placeholders(users.len())
        );
        let mut query = sqlx::query(&sql);
        for user in users {
            query = query.bind(user.get());
        }
        query
            .fetch_all(self.read_pool())
            .await?
            .iter()
            .map(|row| {
                Ok((
                    rows::user_id(row.try_get("id")?)?,
                    row.try_get("display_name")?,
                ))
            })
            .collect()
    }

    /// Whether `user` exists and an upsert with `name` would change nothing (the common
    /// case of a returning user), read without the writer.
    async fn user_is_current(&self, user: UserId, name: Option<&str>) -> Outcome<bool> {
        let sql = format!("SELECT {COMPOSED_NAME} AS composed FROM app_users WHERE id = ?");
        let composed: Option<Option<String>> = sqlx::query_scalar(&sql)
            .bind(user.get())
            .fetch_optional(self.read_pool())
            .await?;
        Ok(match (composed, name) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(stored), Some(name)) => stored.as_deref() == Some(name),
        })
    }
}

/// Distinct users, in order of first appearance.
fn distinct(users: &[UserId]) -> Vec<UserId> {
    let mut seen = HashSet::new();
    users.iter().copied().filter(|u| seen.insert(*u)).collect()
}

#[async_trait]
impl UserDirectory for SqliteStore {
    async fn missing_users(&self, users: &[UserId]) -> Result<Vec<UserId>, StoreError> {
        let wanted = distinct(users);
        let found: HashSet<UserId> = self
            .existing_users(&wanted)
            .await
            .map_err(Failure::into_store)?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        Ok(wanted.into_iter().filter(|u| !found.contains(u)).collect())
    }

    async fn display_names(&self, users: &[UserId]) -> Result<HashMap<UserId, String>, StoreError> {
        Ok(self
            .existing_users(&distinct(users))
            .await
            .map_err(Failure::into_store)?
            .into_iter()
            .filter_map(|(id, name)| name.map(|n| (id, n)))
            .collect())
    }

    async fn upsert_user(&self, user: UserId, name: Option<DisplayName>) -> Result<(), StoreError> {
        let name = name.map(|n| n.as_str().to_owned());
        if self
            .user_is_current(user, name.as_deref())
            .await
            .map_err(Failure::into_store)?
        {
            return Ok(());
        }
        self.write(move |conn| {
            Box::pin(async move { upsert_user(conn, user, name.as_deref()).await })
        })
        .await
    }
}

#[async_trait]
impl PostingDirectory for SqliteStore {
    async fn posting_exists(&self, posting: PostingId) -> Result<bool, StoreError> {
        sqlx::query_scalar::<_, i64>("SELECT 1 FROM POSTINGS WHERE id = ?")
            .bind(posting.to_string())
            .fetch_optional(self.read_pool())
            .await
            .map(|found| found.is_some())
            .map_err(|e| translate(&e))
    }
}
