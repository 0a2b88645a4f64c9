//! Test support: `spawn_app()` starts the real server on `127.0.0.1:0` over its own store
//! (in memory, a fresh SQLite file, or a fresh MySQL database), and returns typed request helpers and a token
//! minting helper.
#![allow(unreachable_pub)]

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use chat_domain::UserId;
use chat_http::{AuthConfig, DevTokens, HttpSettings, MintClaims, Readiness, WsConfig, mint_hs256};
use chat_realtime::RealtimeSettings;
use chat_service::Limits;
use chat_test_support::mysql::TestDb;
use chatd::{AppConfig, Application, Storage};
use reqwest::Method;
use serde_json::Value;

/// The secret test servers verify tokens with.
pub const SECRET: &str = "chat-http-tests-secret-0123456789abcdef";

/// Which store a test server uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Sqlite,
    MySql,
}

/// What a test server's store holds on to, to be released when it finishes.
enum Held {
    Nothing,
    MySql(TestDb),
    /// The storage (to close) and its directory, which must outlive it.
    Sqlite(Storage, tempfile::TempDir),
}

/// Knobs for unusual servers.
#[derive(Default)]
pub struct Options {
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub limits: Option<Limits>,
    pub readiness: Option<Arc<dyn Readiness>>,
    /// Serve `POST /api/v1/dev/token` (as `chatd serve --dev` does).
    pub dev_tokens: bool,
    /// HTTP worker threads (default 1).
    pub workers: Option<usize>,
}

/// A running server.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    database: Held,
    handle: actix_web::dev::ServerHandle,
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts a problem document with `status` and `code`.
    #[track_caller]
    pub fn assert_problem(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{:#?}", self.body);
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{self:?}"
        );
        assert_eq!(self.body["code"], code, "{:#?}", self.body);
        assert_eq!(self.body["status"], status);
        assert!(self.body["type"].is_string());
        assert!(self.body["title"].is_string());
        assert!(self.body["detail"].is_string());
    }
}

/// An in-memory server.
pub async fn spawn_app() -> TestApp {
    spawn_with(Backend::Memory, Options::default())
        .await
        .expect("memory backend always starts")
}

/// A server on `backend`, built as `chatd serve` builds it; `None` (after a loud banner)
/// when MySQL is not reachable and not required.
pub async fn spawn_with(backend: Backend, options: Options) -> Option<TestApp> {
    let (storage, database) = match backend {
        Backend::Memory => (
            Storage::memory_with(chat_test_support::key_ring::cipher()),
            Held::Nothing,
        ),
        Backend::Sqlite => {
            // As `chatd serve` opens it: migrated, with its ping and pool gauges.
            let dir = tempfile::tempdir().expect("a temporary directory");
            let storage = Storage::sqlite_with(
                &dir.path().join("chat.db"),
                true,
                chat_test_support::key_ring::cipher(),
            )
            .await
            .expect("the SQLite store opens");
            (storage.clone(), Held::Sqlite(storage, dir))
        }
        Backend::MySql => {
            let db =
                chat_test_support::mysql::fresh_database("the API tests on MySQL are SKIPPED", 8)
                    .await?;
            (Storage::of(Arc::new(db.store.clone())), Held::MySql(db))
        }
    };
    Some(start(storage, database, options).await)
}

/// A server on `store`, a MySQL store the test opened itself on `db` (through a fault
/// proxy, with its own timeouts).
pub async fn spawn_on_mysql(store: chat_mysql::MySqlStore, db: TestDb) -> TestApp {
    start(
        Storage::of(Arc::new(store)),
        Held::MySql(db),
        Options::default(),
    )
    .await
}

/// Builds and starts the application on `storage`, as `chatd serve` does.
async fn start(mut storage: Storage, database: Held, options: Options) -> TestApp {
    if let Some(readiness) = options.readiness {
        storage.readiness = readiness;
    }
    let mut auth = AuthConfig::hs256(SECRET.as_bytes());
    auth.issuer = options.issuer;
    auth.audience = options.audience;
    let config = AppConfig {
        bind: vec!["127.0.0.1:0".parse().expect("an address")],
        auth,
        http: HttpSettings {
            workers: Some(options.workers.unwrap_or(1)),
            handle_signals: false,
            shutdown_timeout: Duration::from_secs(1),
            ..HttpSettings::default()
        },
        // Abuse limits other than the send rate stay out of the way unless a test sets
        // them (`tests/api/limits.rs` does).
        limits: options.limits.unwrap_or_else(|| {
            let lots = std::num::NonZeroU32::new(1_000_000).expect("non-zero");
            Limits {
                rates: chat_service::ActionRates::uniform(chat_service::Rate::per_second(
                    lots, lots,
                )),
                ..Limits::default()
            }
        }),
        ws: WsConfig::default(),
        realtime: RealtimeSettings::default(),
        dev_tokens: options
            .dev_tokens
            .then(|| DevTokens::new(SECRET.as_bytes(), None, None)),
        feed: chatd::FeedSettings::default(),
    };
    let app = Application::build(config, storage)
        .await
        .expect("the application builds");
    let port = app.address().port();
    let handle = app.handle();
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        client: reqwest::Client::new(),
        database,
        handle,
    }
}

impl TestApp {
    /// Stops the server and drops its database (or closes and removes its SQLite file).
    pub async fn finish(self) {
        self.handle.stop(false).await;
        match self.database {
            Held::Nothing => {}
            Held::MySql(db) => db.finish().await,
            Held::Sqlite(storage, dir) => {
                storage.shut_down(Duration::from_secs(5)).await;
                drop(dir);
            }
        }
    }

    /// A valid token for `user`.
    pub fn token(&self, user: i64) -> String {
        token_for(user, Some(format!("User {user}")))
    }

    /// A client acting as `user`, provisioned (JIT) by a first request.
    pub async fn login(&self, user: i64) -> Client<'_> {
        let client = Client {
            app: self,
            token: Some(self.token(user)),
        };
        let reply = client.get("/api/v1/unread").await;
        assert_eq!(reply.status, 200, "login of {user}: {reply:?}");
        client
    }

    /// A client sending `authorization` verbatim (or nothing).
    pub fn raw(&self, token: Option<String>) -> Client<'_> {
        Client { app: self, token }
    }

    /// Sends a request with an arbitrary body and headers.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<reqwest::Body>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.address));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("body read");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Reply {
            status,
            headers,
            body,
        }
    }
}

/// A valid token for `user` with `name`.
pub fn token_for(user: i64, name: Option<String>) -> String {
    let user = UserId::new(user).expect("positive user id");
    mint_hs256(SECRET.as_bytes(), &MintClaims::new(user, name, 600)).expect("token minted")
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// Percent-encodes every byte that is not unreserved (for emoji in paths).
pub fn pct(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Requests as one user.
pub struct Client<'a> {
    pub app: &'a TestApp,
    pub token: Option<String>,
}

impl Client<'_> {
    pub async fn request(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let body = body.map(|b| reqwest::Body::from(b.to_string()));
        let headers: &[(&str, &str)] = &[("content-type", "application/json")];
        self.app
            .send(method, path, self.token.as_deref(), body, headers)
            .await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.request(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.request(Method::POST, path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Reply {
        self.request(Method::PATCH, path, Some(body)).await
    }

    pub async fn put(&self, path: &str) -> Reply {
        self.request(Method::PUT, path, None).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.request(Method::DELETE, path, None).await
    }

    /// Creates a GROUP with `members`; returns its id.
    pub async fn create_group(&self, name: &str, members: &[i64]) -> String {
        let reply = self
            .post(
                "/api/v1/conversations",
                serde_json::json!({"type": "GROUP", "name": name, "participant_ids": members}),
            )
            .await;
        assert_eq!(reply.status, 201, "{reply:?}");
        reply.body["id"].as_str().expect("id").to_owned()
    }

    /// Sends a text message; returns the message.
    pub async fn say(&self, conversation: &str, content: &str) -> Value {
        let reply = self
            .post(
                &format!("/api/v1/conversations/{conversation}/messages"),
                serde_json::json!({"content": content}),
            )
            .await;
        assert_eq!(reply.status, 201, "{reply:?}");
        reply.body
    }
}

/// A readiness probe that always fails.
pub struct NeverReady;

#[async_trait]
impl Readiness for NeverReady {
    async fn check(&self) -> Result<(), String> {
        Err("store down".into())
    }
}

/// Runs a scenario against the in-memory store, a SQLite file and MySQL (skipped loudly
/// when MySQL is absent and not required).
macro_rules! on_every_backend {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                use crate::helpers::{Backend, Options, spawn_with};

                #[tokio::test]
                async fn memory() {
                    let app = spawn_with(Backend::Memory, Options::default()).await.expect("memory");
                    super::$name(&app).await;
                    app.finish().await;
                }

                #[tokio::test]
                async fn sqlite() {
                    let app = spawn_with(Backend::Sqlite, Options::default()).await.expect("sqlite");
                    super::$name(&app).await;
                    app.finish().await;
                }

                #[tokio::test]
                async fn mysql() {
                    let Some(app) = spawn_with(Backend::MySql, Options::default()).await else {
                        return;
                    };
                    super::$name(&app).await;
                    app.finish().await;
                }
            }
        )+
    };
}
pub(crate) use on_every_backend;
