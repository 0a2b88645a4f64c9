//! A thin typed client of the chat API for the load generator: tokens, and the few
//! requests the scenarios make.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json};

use crate::server::SECRET;

/// Requests against one server, with a token per user minted up front.
#[derive(Clone)]
pub(crate) struct Api {
    http: reqwest::Client,
    base: String,
    key: EncodingKey,
}

impl Api {
    pub(crate) fn new(base: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .build()?;
        Ok(Self {
            http,
            base: format!("{base}/api/v1"),
            key: EncodingKey::from_secret(SECRET.as_bytes()),
        })
    }

    /// An HS256 token for `user`, valid for two hours.
    pub(crate) fn token(&self, user: i64) -> anyhow::Result<String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let claims =
            json!({ "sub": user.to_string(), "name": format!("Bench {user}"), "exp": now + 7200 });
        Ok(jsonwebtoken::encode(
            &Header::default(),
            &claims,
            &self.key,
        )?)
    }

    async fn call(
        &self,
        user: i64,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(self.token(user)?);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await?;
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        Ok((status, value))
    }

    /// Makes the user exist (just-in-time provisioning by token).
    pub(crate) async fn provision(&self, user: i64) -> anyhow::Result<()> {
        let (status, body) = self
            .call(user, reqwest::Method::GET, "/unread", None)
            .await?;
        if status != 200 {
            bail!("provisioning user {user}: {status} {body}");
        }
        Ok(())
    }

    /// Creates a GROUP and returns its id.
    pub(crate) async fn create_group(
        &self,
        creator: i64,
        members: &[i64],
        name: &str,
    ) -> anyhow::Result<String> {
        let body = json!({ "type": "GROUP", "name": name, "participant_ids": members });
        let (status, value) = self
            .call(creator, reqwest::Method::POST, "/conversations", Some(body))
            .await?;
        if status != 201 {
            bail!("creating a group: {status} {value}");
        }
        value["id"]
            .as_str()
            .map(str::to_owned)
            .context("conversation without id")
    }

    /// Sends a text message; returns (status, message id, seq).
    pub(crate) async fn send(
        &self,
        user: i64,
        conversation: &str,
        content: &str,
    ) -> anyhow::Result<(u16, Option<(String, i64)>)> {
        let body = json!({ "content": content });
        let (status, value) = self
            .call(
                user,
                reqwest::Method::POST,
                &format!("/conversations/{conversation}/messages"),
                Some(body),
            )
            .await?;
        let ack = value["id"]
            .as_str()
            .zip(value["seq"].as_i64())
            .map(|(id, seq)| (id.to_owned(), seq));
        Ok((status, ack))
    }

    /// A GET that must answer 200; returns its body.
    pub(crate) async fn get(&self, user: i64, path: &str) -> anyhow::Result<Value> {
        let (status, value) = self.call(user, reqwest::Method::GET, path, None).await?;
        if status != 200 {
            bail!("GET {path}: {status} {value}");
        }
        Ok(value)
    }

    /// Every message id of a conversation, by paging forward through its history.
    pub(crate) async fn all_message_ids(
        &self,
        user: i64,
        conversation: &str,
    ) -> anyhow::Result<Vec<String>> {
        let mut ids = Vec::new();
        let mut after = 0;
        loop {
            let page = self
                .get(
                    user,
                    &format!("/conversations/{conversation}/messages?after_seq={after}&limit=100"),
                )
                .await?;
            let items = page["items"].as_array().context("history without items")?;
            for item in items {
                ids.push(
                    item["id"]
                        .as_str()
                        .context("message without id")?
                        .to_owned(),
                );
                after = item["seq"].as_i64().context("message without seq")?;
            }
            if !page["has_more"].as_bool().unwrap_or(false) || items.is_empty() {
                return Ok(ids);
            }
        }
    }
}
