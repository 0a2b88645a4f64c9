//! [`UserDirectory`] and [`PostingDirectory`] on the platform's own tables, `app_users` and
//! `POSTINGS`.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use chat_domain::{DisplayName, PostingId, UserId};
use chat_ports::{PostingDirectory, StoreError, UserDirectory};
use sqlx::Row;

use crate::MySqlStore;
use crate::error::Outcome;
use crate::rows::{self, NAME_EXPR, placeholders};

impl MySqlStore {
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
            .fetch_all(&self.pool)
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
}

/// Distinct users, in order of first appearance.
fn distinct(users: &[UserId]) -> Vec<UserId> {
    let mut seen = HashSet::new();
    users.iter().copied().filter(|u| seen.insert(*u)).collect()
}

#[async_trait]
impl UserDirectory for MySqlStore {
    async fn missing_users(&self, users: &[UserId]) -> Result<Vec<UserId>, StoreError> {
        let wanted = distinct(users);
        let found: HashSet<UserId> = self
            .bounded(self.existing_users(&wanted))
            .await?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        Ok(wanted.into_iter().filter(|u| !found.contains(u)).collect())
    }

    async fn display_names(&self, users: &[UserId]) -> Result<HashMap<UserId, String>, StoreError> {
        Ok(self
            .bounded(self.existing_users(&distinct(users)))
            .await?
            .into_iter()
            .filter_map(|(id, name)| name.map(|n| (id, n)))
            .collect())
    }

    async fn upsert_user(&self, user: UserId, name: Option<DisplayName>) -> Result<(), StoreError> {
        // A given name replaces the stored one unless first and last name already read as
        // it (byte for byte); then last_name is cleared only if it no longer fits. The
        // assignments run left to right: last_name sees the new first_name.
        let composed = "TRIM(CONCAT_WS(' ', first_name, last_name))";
        let sql = format!(
            "INSERT INTO app_users (id, first_name) VALUES (?, ?) \
             ON DUPLICATE KEY UPDATE \
               first_name = IF(VALUES(first_name) IS NULL \
                  OR BINARY {composed} = BINARY VALUES(first_name), first_name, VALUES(first_name)), \
               last_name = IF(VALUES(first_name) IS NULL \
                  OR BINARY {composed} = BINARY VALUES(first_name), last_name, NULL)"
        );
        let upsert = sqlx::query(&sql)
            .bind(user.get())
            .bind(name.as_ref().map(DisplayName::as_str))
            .execute(&self.pool);
        self.bounded(upsert).await.map(|_| ())
    }
}

#[async_trait]
impl PostingDirectory for MySqlStore {
    async fn posting_exists(&self, posting: PostingId) -> Result<bool, StoreError> {
        let probe = sqlx::query_scalar::<_, i32>("SELECT 1 FROM POSTINGS WHERE id = ?")
            .bind(posting.to_string())
            .fetch_optional(&self.pool);
        self.bounded(probe).await.map(|found| found.is_some())
    }
}
