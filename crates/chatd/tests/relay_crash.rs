//! `kill -9` between a commit and its publication: the real `chatd` binary, whose relay is
//! held back by the hidden fault-injection setting `CHAT_FAULT_RELAY_START_DELAY`,
//! acknowledges a message (201) that it never publishes, and is killed. The event is
//! delayed, never lost: on SQLite, the client that resumes with its token on the restarted
//! process gets it; on MySQL with two nodes, a client live on the other node gets it at
//! once from that node's relay (no Redis involved).
#![allow(clippy::unwrap_used)]

mod fresh_shell;

use std::process::{Child, Command};
use std::sync::mpsc;
use std::time::Duration;

use chat_test_support::process::spawn_announced;

use chat_domain::UserId;
use chat_http::{MintClaims, mint_hs256};
use chatd::config::DEV_SECRET;
use futures::StreamExt as _;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long any single wait may take.
const WAIT: Duration = Duration::from_secs(20);
/// The relay of a process started with it never starts within a test.
const PAUSED: &str = "1h";

/// `chatd serve --dev` on a free port, with a clean environment and `env` on top.
fn chatd(env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_chatd"));
    command.args(["serve", "--dev", "--bind", "127.0.0.1:0"]);
    for name in fresh_shell::CHATD_SETTINGS {
        command.env_remove(name);
    }
    command
        .env("RUST_LOG", "info")
        .env("CHAT_SHUTDOWN_TIMEOUT", "2")
        .envs(chat_test_support::key_ring::chatd_env());
    for (name, value) in env {
        command.env(name, value);
    }
    command
}

/// A running `chatd` (killed with SIGKILL when dropped) and its address.
struct Process {
    child: Child,
    address: String,
    /// Its stderr lines before the address.
    seen: Vec<String>,
    /// Its stderr lines from the address on.
    _log: mpsc::Receiver<String>,
}

impl Process {
    fn start(mut command: Command) -> Self {
        let (child, announced) = spawn_announced(&mut command, WAIT);
        Self {
            child,
            address: announced.address,
            seen: announced.seen,
            _log: announced.lines,
        }
    }

    /// SIGKILL, and the exit reaped.
    fn kill_9(&mut self) {
        self.child.kill().unwrap();
        let status = self.child.wait().unwrap();
        assert!(!status.success(), "killed: {status:?}");
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn token(user: i64) -> String {
    let claims = MintClaims::new(
        UserId::new(user).unwrap(),
        Some(format!("User {user}")),
        3600,
    );
    mint_hs256(DEV_SECRET.as_bytes(), &claims).unwrap()
}

/// `method path` with `body` as `user`; the status and the JSON answer.
async fn call(
    process: &Process,
    user: i64,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .request(method, process.url(path))
        .bearer_auth(token(user))
        .timeout(WAIT);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Users 1 and 2 known (a first request provisions each), and a group of both by 1.
async fn group_of_alice_and_bob(process: &Process) -> String {
    for user in [1, 2] {
        let (status, _) = call(process, user, reqwest::Method::GET, "/api/v1/unread", None).await;
        assert_eq!(status, 200);
    }
    let (status, group) = call(
        process,
        1,
        reqwest::Method::POST,
        "/api/v1/conversations",
        Some(json!({"type": "GROUP", "name": "crash", "participant_ids": [2]})),
    )
    .await;
    assert_eq!(status, 201, "{group}");
    group["id"].as_str().unwrap().to_owned()
}

/// Alice sends `text` to `group`: answered 201 (committed).
async fn send(process: &Process, group: &str, text: &str) {
    let (status, body) = call(
        process,
        1,
        reqwest::Method::POST,
        &format!("/api/v1/conversations/{group}/messages"),
        Some(json!({"content": text})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket of `user` on `process` (resuming from `since`, if given): the socket, the
/// events replayed before `ready`, and `ready`.
async fn connect(process: &Process, user: i64, since: Option<&str>) -> (Socket, Vec<Value>, Value) {
    let query = since.map(|t| format!("?since={t}")).unwrap_or_default();
    let mut request = format!("ws://{}/api/v1/ws{query}", process.address)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {}", token(user))).unwrap(),
    );
    let stream = TcpStream::connect(&process.address).await.unwrap();
    let (mut socket, _) = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream)),
    )
    .await
    .unwrap()
    .unwrap();
    let mut replayed = Vec::new();
    loop {
        let frame = next_json(&mut socket, WAIT).await.expect("ready in time");
        if frame["type"] == "ready" {
            assert_eq!(frame["resumed"], since.is_some(), "{frame:#}");
            return (socket, replayed, frame);
        }
        replayed.push(frame);
    }
}

/// The next text frame within `wait`, parsed; `None` when none came.
async fn next_json(socket: &mut Socket, wait: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, socket.next()).await {
            Err(_) => return None,
            Ok(Some(Ok(Message::Text(text)))) => return Some(serde_json::from_str(&text).unwrap()),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            Ok(other) => panic!("the socket ended: {other:?}"),
        }
    }
}

/// The `message.created` of `text` within [`WAIT`], passing over other events (those of
/// the group's creation).
async fn created(socket: &mut Socket, text: &str) -> Value {
    loop {
        let frame = next_json(socket, WAIT)
            .await
            .unwrap_or_else(|| panic!("{text:?} never came"));
        if frame["type"] == "message.created" && frame["message"]["content"] == text {
            return frame;
        }
    }
}

/// Whether `events` hold the `message.created` of `text`.
fn has_message(events: &[Value], text: &str) -> bool {
    events
        .iter()
        .any(|e| e["type"] == "message.created" && e["message"]["content"] == text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_message_committed_but_never_published_before_kill_9_reaches_the_client_that_resumes()
 {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap().to_owned();
    let mut paused = Process::start(chatd(&[
        ("CHAT_DATA_DIR", &dir),
        ("CHAT_FAULT_RELAY_START_DELAY", PAUSED),
    ]));
    assert!(
        paused.seen.iter().any(|l| l.contains("FAULT INJECTION")),
        "the fault injection is announced: {:#?}",
        paused.seen
    );
    let group = group_of_alice_and_bob(&paused).await;

    // Bob is live on the process, with the token of his `ready`.
    let (mut bob, _, ready) = connect(&paused, 2, None).await;
    let since = ready["next"].as_str().unwrap().to_owned();
    send(&paused, &group, "committed, never published").await;
    assert!(
        next_json(&mut bob, Duration::from_millis(700))
            .await
            .is_none(),
        "the relay is paused: nothing is published"
    );
    paused.kill_9();
    drop(bob);

    // Restarted on the same file (the relay starts at once): Bob resumes with his token.
    let restarted = Process::start(chatd(&[("CHAT_DATA_DIR", &dir)]));
    let (mut bob, replayed, ready) = connect(&restarted, 2, Some(&since)).await;
    assert!(
        has_message(&replayed, "committed, never published"),
        "the resumed client gets the message: {replayed:#?}"
    );
    assert_eq!(
        replayed
            .iter()
            .filter(|e| e["type"] == "message.created")
            .count(),
        1,
        "exactly once: {replayed:#?}"
    );
    assert!(ready["next"].as_str().unwrap() != since);
    // And the restarted process publishes live again.
    send(&restarted, &group, "after the restart").await;
    let live = created(&mut bob, "after the restart").await;
    assert!(live["pos"].as_u64().is_some(), "{live}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_a_client_live_on_node_b_gets_what_node_a_committed_and_died_before_publishing() {
    let Some(db) = chat_test_support::mysql::fresh_database(
        "the kill -9 between commit and publish test on two MySQL nodes is SKIPPED",
        2,
    )
    .await
    else {
        return;
    };
    let url = chat_test_support::mysql::database_url(&db.name);
    // Two nodes over one database and no Redis: durable events need none.
    let mut a = Process::start(chatd(&[
        ("DATABASE_URL", &url),
        ("CHAT_FAULT_RELAY_START_DELAY", PAUSED),
    ]));
    let b = Process::start(chatd(&[("DATABASE_URL", &url)]));
    let group = group_of_alice_and_bob(&a).await;
    let (mut bob_on_a, _, _) = connect(&a, 2, None).await;
    let (mut bob_on_b, _, _) = connect(&b, 2, None).await;

    send(&a, &group, "A committed this and died").await;
    a.kill_9();
    // B's relay publishes what A committed.
    let event = created(&mut bob_on_b, "A committed this and died").await;
    assert!(event["pos"].as_u64().is_some(), "{event}");
    // A never published it (its relay was paused): its socket got nothing before the end.
    let ending = tokio::time::timeout(WAIT, bob_on_a.next()).await.unwrap();
    assert!(
        !matches!(ending, Some(Ok(Message::Text(_)))),
        "A published: {ending:?}"
    );
    drop(b);
    db.finish().await;
}
