//! Test support for the WebSocket suites: `spawn_node()` starts the real server on
//! `127.0.0.1:0` with the real-time transport (optionally bridged over Redis) over a
//! store that several nodes may share, and [`WsClient`] is a tokio-tungstenite client
//! with awaiting helpers (every wait has a timeout).

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chat_domain::{
    ConversationId, ConversationType, GroupName, MessageBody, MessageContent, MessageType, UserId,
};
use chat_http::{AuthConfig, HttpSettings, Metrics, MintClaims, Realtime, WsConfig, mint_hs256};
use chat_realtime::{RealtimeSettings, RedisSettings};
use chat_service::{ActionRates, ChatService, CreateConversation, Limits, Rate, SendMessage};
use chat_test_support::mysql::TestDb;
use chat_test_support::sqlite::TestFile;
use chatd::{AppConfig, Application, FeedSettings, Storage};
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The secret test servers verify tokens with.
pub const SECRET: &str = "chat-http-ws-tests-secret-0123456789";
/// The browser origin test servers allow.
pub const ALLOWED_ORIGIN: &str = "https://app.example.com";
/// How long any single wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// Short timings so that deadlines can be observed quickly.
pub fn test_config() -> WsConfig {
    WsConfig {
        allowed_origins: vec![ALLOWED_ORIGIN.to_owned()],
        ..WsConfig::default()
    }
}

/// Limits that never get in a test's way.
pub fn generous_limits() -> Limits {
    let lots = NonZeroU32::new(100_000).expect("non-zero");
    Limits {
        max_participants: 1000,
        sends_per_second: lots,
        send_burst: lots,
        rates: ActionRates::uniform(Rate::per_second(lots, lots)),
    }
}

/// A running node.
pub struct Node {
    pub address: String,
    pub realtime: Arc<Realtime>,
    pub service: Arc<ChatService>,
    pub metrics: Arc<Metrics>,
    pub storage: Storage,
    handle: actix_web::dev::ServerHandle,
    /// The node's own SQLite file, kept (with its directory) as long as the node.
    file: Option<TestFile>,
}

/// Which store a node of its own uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    Memory,
    Sqlite,
}

/// A node over its own store (in memory, or a fresh SQLite file), without Redis.
pub async fn spawn_node(store: Store, config: WsConfig) -> Node {
    spawn_own_node(store, config, FeedSettings::default()).await
}

/// A node over the in-memory store with the given service limits.
pub async fn spawn_node_limited(config: WsConfig, limits: Limits) -> Node {
    spawn_node_with(
        Storage::memory(),
        config,
        None,
        limits,
        FeedSettings::default(),
    )
    .await
}

/// A node over its own store whose relay starts `delay` after the node (from the feed's
/// head at the node's start, as after a crash or an outage): what is committed meanwhile
/// is published in one catch-up, batch after batch.
pub async fn spawn_node_with_late_relay(store: Store, config: WsConfig, delay: Duration) -> Node {
    let feed = FeedSettings {
        relay_start_delay: Some(delay),
        ..FeedSettings::default()
    };
    spawn_own_node(store, config, feed).await
}

/// A node over its own store (in memory, or a fresh SQLite file) with `feed`, without
/// Redis.
async fn spawn_own_node(store: Store, config: WsConfig, feed: FeedSettings) -> Node {
    match store {
        Store::Memory => {
            let storage = Storage::memory_with(chat_test_support::key_ring::cipher());
            spawn_node_with(storage, config, None, generous_limits(), feed).await
        }
        Store::Sqlite => {
            let file = chat_test_support::sqlite::fresh_store().await;
            let storage = Storage::of(Arc::new(file.store.clone()));
            let mut node = spawn_node_with(storage, config, None, generous_limits(), feed).await;
            node.file = Some(file);
            node
        }
    }
}

/// A node over `storage`, built as `chatd serve` builds it, bridged over Redis when
/// `redis` is given; returns once its Redis subscription is active.
pub async fn spawn_node_on(
    storage: Storage,
    config: WsConfig,
    redis: Option<RedisSettings>,
) -> Node {
    let node = spawn_node_unready(storage, config, redis).await;
    assert!(
        node.realtime.wait_ready(WAIT).await,
        "the redis subscription is active"
    );
    node
}

/// [`spawn_node_on`] without waiting for Redis (which may be unreachable).
pub async fn spawn_node_unready(
    storage: Storage,
    config: WsConfig,
    redis: Option<RedisSettings>,
) -> Node {
    spawn_node_with(
        storage,
        config,
        redis,
        generous_limits(),
        FeedSettings::default(),
    )
    .await
}

async fn spawn_node_with(
    storage: Storage,
    config: WsConfig,
    redis: Option<RedisSettings>,
    limits: Limits,
    feed: FeedSettings,
) -> Node {
    let app_config = AppConfig {
        bind: vec!["127.0.0.1:0".parse().expect("an address")],
        auth: AuthConfig::hs256(SECRET.as_bytes()),
        http: HttpSettings {
            allowed_origins: vec![ALLOWED_ORIGIN.to_owned()],
            workers: Some(1),
            handle_signals: false,
            shutdown_timeout: Duration::from_secs(1),
        },
        limits,
        ws: config,
        realtime: RealtimeSettings {
            redis,
            ..RealtimeSettings::default()
        },
        dev_tokens: None,
        feed,
    };
    let app = Application::build(app_config, storage.clone())
        .await
        .expect("the application builds");
    let realtime = app.realtime().clone();
    let node = Node {
        address: format!("127.0.0.1:{}", app.address().port()),
        realtime,
        service: app.service().clone(),
        metrics: app.metrics().clone(),
        storage,
        handle: app.handle(),
        file: None,
    };
    tokio::spawn(app.run_until_stopped());
    node
}

fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// A valid token for `user`.
pub fn token(user: i64) -> String {
    token_expiring(user, now_seconds() + 3600)
}

/// A token for `user` whose `exp` is `exp` (seconds since the epoch).
pub fn token_expiring(user: i64, exp: u64) -> String {
    let mut claims = MintClaims::new(uid(user), Some(format!("User {user}")), 3600);
    claims.exp = exp;
    mint_hs256(SECRET.as_bytes(), &claims).expect("mint")
}

pub fn uid(id: i64) -> UserId {
    UserId::new(id).expect("positive id")
}

/// How a handshake ended when it did not upgrade.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused {
    pub status: u16,
    pub code: Option<String>,
}

impl Node {
    pub fn url(&self) -> String {
        format!("ws://{}/api/v1/ws", self.address)
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Makes the users known to the directory (as a first request would, in JIT mode).
    pub async fn users(&self, ids: &[i64]) {
        for id in ids {
            self.storage
                .ports
                .users
                .upsert_user(uid(*id), None)
                .await
                .expect("user upserted");
        }
    }

    /// A GROUP created by `admin` with `members`.
    pub async fn group(&self, admin: i64, members: &[i64]) -> ConversationId {
        let mut all = vec![admin];
        all.extend_from_slice(members);
        self.users(&all).await;
        let item = self
            .service
            .create_conversation(
                uid(admin),
                CreateConversation {
                    kind: ConversationType::Group,
                    name: Some(GroupName::parse("test group").expect("name")),
                    posting_id: None,
                    participant_ids: members.iter().map(|m| uid(*m)).collect(),
                },
            )
            .await
            .expect("group created");
        item.details.conversation.id
    }

    /// Sends a text message through the service (as the REST API would).
    pub async fn say(&self, sender: i64, conversation: ConversationId, text: &str) -> i64 {
        let body = MessageBody::from_user(
            MessageContent::parse(text).expect("content"),
            MessageType::Text,
            None,
            None,
        )
        .expect("body");
        let sent = self
            .service
            .send_message(
                uid(sender),
                conversation,
                SendMessage {
                    body,
                    reply_to_id: None,
                    client_message_id: None,
                },
            )
            .await
            .expect("message sent");
        sent.view.message.seq.get()
    }

    /// A client of `user` authenticated by header; `ready` already consumed.
    pub async fn connect(&self, user: i64) -> WsClient {
        let mut client = self
            .handshake(Some(&token(user)), None, "")
            .await
            .expect("handshake accepted");
        let ready = client.next_json().await;
        assert_fresh_ready(&ready, user);
        client
    }

    /// A raw handshake.
    pub async fn handshake(
        &self,
        bearer: Option<&str>,
        origin: Option<&str>,
        query: &str,
    ) -> Result<WsClient, Refused> {
        let mut request = format!("{}{query}", self.url())
            .into_client_request()
            .expect("request");
        if let Some(token) = bearer {
            request.headers_mut().insert(
                "authorization",
                HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
            );
        }
        if let Some(origin) = origin {
            request
                .headers_mut()
                .insert("origin", HeaderValue::from_str(origin).expect("header"));
        }
        let stream = TcpStream::connect(&self.address)
            .await
            .expect("tcp connect");
        self.upgrade(request, stream).await
    }

    /// A header-authenticated client whose socket has a tiny receive buffer, so that a
    /// client that stops reading backs up quickly.
    pub async fn connect_small_buffer(&self, user: i64) -> WsClient {
        let mut client = self.handshake_small_buffer(user, "").await;
        assert_eq!(client.next_json().await["type"], "ready");
        client
    }

    /// [`Node::connect_small_buffer`]'s handshake with `query` (such as `?since=…`),
    /// upgraded and nothing read yet.
    pub async fn handshake_small_buffer(&self, user: i64, query: &str) -> WsClient {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("rcvbuf");
        let stream = socket
            .connect(self.address.parse().expect("address"))
            .await
            .expect("tcp connect");
        let mut request = format!("{}{query}", self.url())
            .into_client_request()
            .expect("request");
        request.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {}", token(user))).expect("header"),
        );
        self.upgrade(request, stream).await.expect("upgraded")
    }

    async fn upgrade(
        &self,
        request: tungstenite::handshake::client::Request,
        stream: TcpStream,
    ) -> Result<WsClient, Refused> {
        let handshake = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream));
        match tokio::time::timeout(WAIT, handshake)
            .await
            .expect("handshake in time")
        {
            Ok((socket, _)) => Ok(WsClient { socket }),
            Err(tungstenite::Error::Http(response)) => {
                let code = response
                    .body()
                    .as_ref()
                    .and_then(|body| serde_json::from_slice::<Value>(body).ok())
                    .and_then(|problem| problem["code"].as_str().map(str::to_owned));
                Err(Refused {
                    status: response.status().as_u16(),
                    code,
                })
            }
            Err(other) => panic!("handshake failed: {other}"),
        }
    }

    pub async fn stop(self) {
        self.handle.stop(false).await;
        if let Some(file) = self.file {
            file.finish().await;
        }
    }
}

/// What a client saw last.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    Closed(u16),
    /// The connection ended without a close frame.
    Dropped,
}

/// A WebSocket client.
pub struct WsClient {
    pub socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl WsClient {
    pub async fn send_json(&mut self, frame: Value) {
        self.send_text(frame.to_string()).await;
    }

    pub async fn send_text(&mut self, text: String) {
        tokio::time::timeout(WAIT, self.socket.send(Message::Text(text)))
            .await
            .expect("send in time")
            .expect("sent");
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        tokio::time::timeout(WAIT, self.socket.send(Message::Binary(bytes)))
            .await
            .expect("send in time")
            .expect("sent");
    }

    /// The next text frame, parsed (pings are answered by tungstenite itself).
    pub async fn next_json(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(WAIT, self.socket.next())
                .await
                .expect("a frame in time")
                .expect("the connection is open")
                .expect("a valid frame");
            match message {
                Message::Text(text) => return serde_json::from_str(&text).expect("JSON frame"),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// The next frame, which must be of `kind`.
    pub async fn expect(&mut self, kind: &str) -> Value {
        let frame = self.next_json().await;
        assert_eq!(frame["type"], kind, "{frame:#}");
        frame
    }

    /// The next frames, which must be of `kinds` in any order; returned in `kinds` order.
    pub async fn expect_unordered(&mut self, kinds: &[&str]) -> Vec<Value> {
        let mut frames = Vec::new();
        for _ in kinds {
            frames.push(self.next_json().await);
        }
        kinds
            .iter()
            .map(|kind| {
                let index = frames
                    .iter()
                    .position(|f| f["type"] == *kind)
                    .unwrap_or_else(|| panic!("no {kind} frame among {frames:#?}"));
                frames.remove(index)
            })
            .collect()
    }

    /// Proves that nothing was queued for this client before now: a `ping` sent now is
    /// answered by the very next frame (events are queued before the publisher returns).
    pub async fn expect_nothing_pending(&mut self) {
        let marker = uuid_like();
        self.send_json(json!({"type": "ping", "request_id": marker}))
            .await;
        let frame = self.next_json().await;
        assert_eq!(
            frame,
            json!({"type": "pong", "request_id": marker}),
            "an unexpected frame was pending"
        );
    }

    /// Waits until bytes from the server wait in the socket, without reading them.
    pub async fn wait_for_bytes(&self) {
        let MaybeTlsStream::Plain(stream) = self.socket.get_ref() else {
            panic!("a plain TCP client");
        };
        let mut byte = [0_u8; 1];
        tokio::time::timeout(WAIT, stream.peek(&mut byte))
            .await
            .expect("bytes in time")
            .expect("peeked");
    }

    /// Reads until the connection ends; the text frames seen on the way and the ending.
    pub async fn read_to_end(&mut self) -> (Vec<Value>, Ending) {
        let mut frames = Vec::new();
        loop {
            let next = tokio::time::timeout(WAIT, self.socket.next())
                .await
                .expect("the connection ends in time");
            match next {
                Some(Ok(Message::Text(text))) => {
                    frames.push(serde_json::from_str(&text).expect("JSON frame"));
                }
                Some(Ok(Message::Close(frame))) => {
                    return (frames, Ending::Closed(close_code(frame)));
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return (frames, Ending::Dropped),
            }
        }
    }

    /// Reads until the close frame, which must carry `code`.
    pub async fn expect_close(&mut self, code: u16) {
        let (frames, ending) = self.read_to_end().await;
        assert_eq!(ending, Ending::Closed(code), "frames before: {frames:#?}");
    }
}

/// Asserts a `ready` for `user` that did not resume and carries the token to keep.
#[track_caller]
pub fn assert_fresh_ready(ready: &Value, user: i64) {
    assert_eq!(
        (&ready["type"], &ready["user_id"], &ready["resumed"]),
        (&json!("ready"), &json!(user), &json!(false)),
        "{ready:#}"
    );
    let next = ready["next"].as_str().unwrap_or_default();
    assert!(is_sync_token(next), "ready carries a sync token: {ready:#}");
}

/// Whether `text` looks like a sync token (`v1.<32 hex>.<pos>`).
pub fn is_sync_token(text: &str) -> bool {
    let parts: Vec<&str> = text.split('.').collect();
    parts.len() == 3
        && parts[0] == "v1"
        && parts[1].len() == 32
        && parts[1].bytes().all(|b| b.is_ascii_hexdigit())
        && !parts[2].is_empty()
        && parts[2].bytes().all(|b| b.is_ascii_digit())
}

fn close_code(frame: Option<CloseFrame<'_>>) -> u16 {
    frame.map_or(1005, |f| u16::from(f.code))
}

/// A close code as tungstenite spells it.
pub fn code(value: u16) -> CloseCode {
    CloseCode::from(value)
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("marker-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

// --- Clusters: Redis and a shared store ---------------------------------------------------

/// Settings for Redis at `REDIS_URL` (default `redis://127.0.0.1:6379`) on a channel of
/// this run only; `None` after a loud banner when Redis does not answer and is not
/// required (`CI=true` or `CHAT_REQUIRE_REDIS=1` make that a failure).
pub async fn redis_or_skip() -> Option<RedisSettings> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let ping = async {
        let client = redis::Client::open(url.as_str())?;
        let mut connection = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
    };
    let outcome = match tokio::time::timeout(Duration::from_secs(3), ping).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err("timed out".to_owned()),
    };
    match outcome {
        Ok(()) => Some(RedisSettings {
            url,
            channel: format!("chat:test:{}", uuid::Uuid::new_v4().simple()),
        }),
        Err(reason) => {
            chat_test_support::skip_or_fail(
                "Redis",
                &url,
                &reason,
                "The multi-node WebSocket tests are SKIPPED",
                "CHAT_REQUIRE_REDIS",
            );
            None
        }
    }
}

/// Stores for two nodes that share one database: a fresh MySQL database (one pool per
/// node) when `DATABASE_URL`'s server answers, else one in-memory store.
pub struct SharedStore {
    pub first: Storage,
    pub second: Storage,
    pub backend: &'static str,
    database: Option<TestDb>,
}

pub async fn shared_store() -> SharedStore {
    let Some(db) =
        chat_test_support::mysql::fresh_database("The nodes share an IN-MEMORY store instead", 8)
            .await
    else {
        let store = Storage::memory_with(chat_test_support::key_ring::cipher());
        return SharedStore {
            first: store.clone(),
            second: store,
            backend: "memory",
            database: None,
        };
    };
    let second = chat_test_support::mysql::open(&db.name, 8).await;
    SharedStore {
        first: Storage::of(Arc::new(db.store.clone())),
        second: Storage::of(Arc::new(second)),
        backend: "mysql",
        database: Some(db),
    }
}

impl SharedStore {
    /// Drops the test database, if any.
    pub async fn finish(self) {
        if let Some(db) = self.database {
            db.finish().await;
        }
    }
}

// --- Resuming with a token (the change feed) -----------------------------------------------

impl Node {
    /// A client of `user` authenticated by header, and the token its `ready` carries.
    pub async fn connect_with_token(&self, user: i64) -> (WsClient, String) {
        let mut client = self
            .handshake(Some(&token(user)), None, "")
            .await
            .expect("handshake accepted");
        let ready = client.expect("ready").await;
        let next = ready["next"].as_str().expect("a token in ready").to_owned();
        (client, next)
    }

    /// A client of `user` resuming from `since` (the handshake's `since` parameter): the
    /// events replayed before `ready`, in order, and that `ready` (which must say
    /// `"resumed": true`).
    pub async fn resume(&self, user: i64, since: &str) -> (WsClient, Vec<Value>, Value) {
        let mut client = self
            .handshake(Some(&token(user)), None, &format!("?since={since}"))
            .await
            .expect("handshake accepted");
        let mut replayed = Vec::new();
        loop {
            let frame = client.next_json().await;
            if frame["type"] == "ready" {
                assert_eq!(frame["resumed"], true, "{frame:#}");
                return (client, replayed, frame);
            }
            replayed.push(frame);
        }
    }
}

impl WsClient {
    /// The next `message.created`, passing over the frames that may cross it: `typing`
    /// (a send causes no other frame: its sender's marker move is implied by it).
    pub async fn expect_created(&mut self) -> Value {
        loop {
            let frame = self.next_json().await;
            match frame["type"].as_str() {
                Some("typing") => {}
                _ => {
                    assert_eq!(frame["type"], "message.created", "{frame:#}");
                    return frame;
                }
            }
        }
    }
}

/// `typer` says it is typing in `group` until `watcher` (on another node) hears of it
/// within a short wait: typing crosses the nodes (a publishing connection may need a
/// moment to come back after a cut).
pub async fn typing_crosses(typer: &mut WsClient, watcher: &mut WsClient, group: ConversationId) {
    for _ in 0..50 {
        typer
            .send_json(
                json!({"type": "typing", "conversation_id": group.to_string(), "is_typing": true}),
            )
            .await;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
        if let Ok(frame) = tokio::time::timeout_at(deadline, watcher.next_json()).await {
            assert_eq!(
                frame["type"], "typing",
                "only typing was expected here: {frame:#}"
            );
            return;
        }
    }
    panic!("typing never crossed the nodes again");
}
