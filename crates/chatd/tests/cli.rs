//! The `chatd` binary end to end: it refuses unsafe configurations with a reason, mints
//! tokens, serves in `--dev` mode and stops gracefully on SIGTERM; on SQLite (the default)
//! it persists across restarts and `kill -9`, and refuses a database file that is locked,
//! unwritable or from a newer schema. Every server started here stores in a temporary data
//! directory (never `chatd-data/` in the repository).
#![allow(clippy::unwrap_used)]

mod fresh_shell;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use chat_test_support::process::spawn_announced;

use serde_json::{Value, json};

/// `chatd` with a clean environment for everything it reads.
fn chatd(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_chatd"));
    command.args(args);
    for name in fresh_shell::CHATD_SETTINGS {
        command.env_remove(name);
    }
    command.env("RUST_LOG", "info");
    command
}

#[test]
fn serve_refuses_to_start_without_secret_and_without_dev() {
    let out = chatd(&["serve"])
        .env("CHAT_BIND", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refusing to start"), "{stderr}");
    assert!(stderr.contains("CHAT_JWT_SECRET"), "{stderr}");
    assert!(stderr.contains("--dev"), "{stderr}");
}

#[test]
fn dev_mode_refuses_a_public_address() {
    let out = chatd(&["serve", "--dev", "--bind", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("loopback"), "{stderr}");
}

#[test]
fn token_needs_a_secret_or_dev() {
    let out = chatd(&["token", "--user", "1"]).output().unwrap();
    assert!(!out.status.success());
    let out = chatd(&["token", "--dev", "--user", "7", "--name", "Ada"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap();
    assert_eq!(token.trim().split('.').count(), 3, "{token}");
    let out = chatd(&["token", "--dev", "--user", "0"]).output().unwrap();
    assert!(!out.status.success(), "user ids are positive");
}

/// 16 bytes, base64: a key of the wrong length.
const SHORT_KEY: &str = "c2hvcnQta2V5LTE2Ynl0ZQ==";
/// 32 bytes, base64.
const GOOD_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

#[test]
fn a_malformed_key_ring_stops_serve_naming_the_key_id_never_the_key() {
    let out = chatd(&["serve", "--dev", "--bind", "127.0.0.1:0"])
        .env("CHAT_ENCRYPTION_KEYS", format!("2026-11:{SHORT_KEY}"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refusing to start"), "{stderr}");
    assert!(stderr.contains("key 2026-11"), "{stderr}");
    assert!(stderr.contains("16 bytes"), "{stderr}");
    assert!(!stderr.contains(SHORT_KEY), "the key leaked: {stderr}");
}

#[test]
fn keys_never_show_in_help() {
    for command in ["serve", "reencrypt"] {
        let out = chatd(&[command, "--help"])
            .env("CHAT_ENCRYPTION_KEYS", format!("2026-11:{GOOD_KEY}"))
            .env("CHAT_ENCRYPTION_ACTIVE_KEY", "2026-11")
            .output()
            .unwrap();
        assert!(out.status.success());
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains("CHAT_ENCRYPTION_KEYS"), "{help}");
        assert!(!help.contains(GOOD_KEY), "a key shows in --help: {help}");
    }
}

#[test]
fn reencrypt_needs_a_key_ring() {
    let out = chatd(&["reencrypt"])
        .env("DATABASE_URL", "mysql://root@127.0.0.1:1/none")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no encryption key ring"), "{stderr}");
}

fn get(address: &str, path: &str, token: Option<&str>) -> String {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// A `chatd serve` process, its address, and its stderr lines (killed if the test fails).
struct Running {
    child: Child,
    address: String,
    /// The lines printed before the address was announced.
    seen: Vec<String>,
    lines: mpsc::Receiver<String>,
}

/// Spawns `command` (a `chatd serve`) and waits until it announces its address.
fn start(mut command: Command) -> Running {
    let (child, announced) = spawn_announced(&mut command, Duration::from_secs(30));
    Running {
        child,
        address: announced.address,
        seen: announced.seen,
        lines: announced.lines,
    }
}

impl Running {
    /// The next stderr line that contains `needle` (within 10 s).
    fn line_with(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("no line with {needle:?}"),
            }
        }
    }

    /// SIGTERM, then waits for the exit.
    fn stop(mut self) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(exit) = self.child.try_wait().unwrap() {
                return exit;
            }
            assert!(Instant::now() < deadline, "chatd did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // SIGKILL; harmless when it has exited already.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn dev_server_serves_and_stops_gracefully_on_sigterm() {
    let server = start(chatd(&[
        "serve",
        "--dev",
        "--ephemeral",
        "--bind",
        "127.0.0.1:0",
    ]));
    let (address, seen) = (server.address.clone(), &server.seen);
    assert!(
        seen.iter().any(|l| l.contains("NOTHING PERSISTS")),
        "the in-memory store is announced: {seen:#?}"
    );

    let health = get(&address, "/healthz", None);
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let token = chatd(&["token", "--dev", "--user", "1"]).output().unwrap();
    let token = String::from_utf8(token.stdout).unwrap();
    let unread = get(&address, "/api/v1/unread", Some(token.trim()));
    assert!(unread.starts_with("HTTP/1.1 200"), "{unread}");
    assert!(
        unread.contains(r#"{"total":0,"conversations":[]}"#),
        "{unread}"
    );
    let anonymous = get(&address, "/api/v1/unread", None);
    assert!(anonymous.starts_with("HTTP/1.1 401"), "{anonymous}");

    let exit = server.stop();
    assert!(exit.success(), "graceful stop exits 0: {exit:?}");
}

/// `chatd serve --dev` on a free port storing in `data_dir` (with the key-ring switch's ring
/// in the key-ring pass).
fn dev_server_in(data_dir: &Path) -> Command {
    let mut command = chatd(&["serve", "--dev", "--bind", "127.0.0.1:0"]);
    // Idle keep-alive connections of the test's clients need not hold up a stop.
    command
        .env("CHAT_DATA_DIR", data_dir)
        .env("CHAT_SHUTDOWN_TIMEOUT", "2")
        .envs(chat_test_support::key_ring::chatd_env());
    command
}

fn dev_token(user: i64) -> String {
    let out = chatd(&["token", "--dev", "--user", &user.to_string()])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Sends `body` (JSON) to `path` as `token`'s user; the status and the JSON answer.
async fn call(
    client: &reqwest::Client,
    address: &str,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> reqwest::Result<(u16, Value)> {
    let mut request = client
        .request(method, format!("http://{address}{path}"))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    Ok((status, body))
}

/// Every message of `conversation`, oldest first (all pages).
async fn history(address: &str, token: &str, conversation: &str) -> Vec<Value> {
    let client = reqwest::Client::new();
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let path =
            format!("/api/v1/conversations/{conversation}/messages?limit=100&after_seq={after}");
        let (status, page) = call(&client, address, token, reqwest::Method::GET, &path, None)
            .await
            .unwrap();
        assert_eq!(status, 200, "{page}");
        let items = page["items"].as_array().unwrap().clone();
        if let Some(last) = items.last() {
            after = last["seq"].as_i64().unwrap();
        }
        all.extend(items);
        if page["has_more"] != json!(true) {
            return all;
        }
    }
}

async fn create_group(address: &str, token: &str) -> String {
    let (status, group) = call(
        &reqwest::Client::new(),
        address,
        token,
        reqwest::Method::POST,
        "/api/v1/conversations",
        Some(json!({"type": "GROUP", "name": "Kept", "participant_ids": []})),
    )
    .await
    .unwrap();
    assert_eq!(status, 201, "{group}");
    group["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn dev_mode_stores_in_the_data_dir_and_survives_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let server = start(dev_server_in(data.path()));
    let file = data.path().join("chat.db");
    let banner = server.line_with("Data:");
    assert!(
        banner.contains(&format!("SQLite file {}", file.display())),
        "the banner says where: {banner}"
    );
    assert!(
        server
            .seen
            .iter()
            .any(|l| l.contains(&file.display().to_string())),
        "the log says where: {:#?}",
        server.seen
    );
    let token = dev_token(1);
    let group = create_group(&server.address, &token).await;
    let (status, _) = call(
        &reqwest::Client::new(),
        &server.address,
        &token,
        reqwest::Method::POST,
        &format!("/api/v1/conversations/{group}/messages"),
        Some(json!({"content": "still here after a restart"})),
    )
    .await
    .unwrap();
    assert_eq!(status, 201);
    let ready = get(&server.address, "/readyz", None);
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    let metrics = get(&server.address, "/metrics", None);
    assert!(
        metrics.contains(r#"chat_db_pool_connections{state="max"}"#),
        "{metrics}"
    );
    assert!(server.stop().success());
    assert!(file.exists());

    let server = start(dev_server_in(data.path()));
    let messages = history(&server.address, &token, &group).await;
    assert!(
        messages
            .iter()
            .any(|m| m["content"] == "still here after a restart"),
        "{messages:#?}"
    );
    assert!(server.stop().success());
}

/// Two more 32-byte keys, base64 (bytes 32..64 and 64..96).
const SECOND_KEY: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";
const THIRD_KEY: &str = "QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8=";

/// [`dev_server_in`] with its own key ring (whatever the key-ring switch says).
fn dev_server_with_ring(data_dir: &Path, keys: &str, active: Option<&str>) -> Command {
    let mut command = dev_server_in(data_dir);
    command.env("CHAT_ENCRYPTION_KEYS", keys);
    match active {
        Some(active) => command.env("CHAT_ENCRYPTION_ACTIVE_KEY", active),
        None => command.env_remove("CHAT_ENCRYPTION_ACTIVE_KEY"),
    };
    command
}

impl Running {
    /// SIGTERM, a clean exit, and every stderr line the server printed.
    fn stop_with_log(mut self) -> Vec<String> {
        let mut log = std::mem::take(&mut self.seen);
        let (_, lines) = mpsc::channel();
        let rest = std::mem::replace(&mut self.lines, lines);
        assert!(self.stop().success());
        while let Ok(line) = rest.recv_timeout(Duration::from_secs(5)) {
            log.push(line);
        }
        log
    }
}

/// Rotation end to end on the binary: messages sealed under one key, `chatd reencrypt`
/// moving them to a new key in batches with progress, the old key removed, and a ring
/// without the key the rows name serving the page with the `undecryptable` marker and an
/// error naming the key id; no key shows in any log line, answer or metric on the way.
#[tokio::test]
async fn rotation_reencrypt_and_a_lost_key_end_to_end_never_show_a_key() {
    let data = tempfile::tempdir().unwrap();
    let mut outputs: Vec<String> = Vec::new();
    let token = dev_token(1);

    let server = start(dev_server_with_ring(
        data.path(),
        &format!("old:{GOOD_KEY}"),
        None,
    ));
    let group = create_group(&server.address, &token).await;
    for text in ["first secret", "second secret"] {
        let (status, sent) = call(
            &reqwest::Client::new(),
            &server.address,
            &token,
            reqwest::Method::POST,
            &format!("/api/v1/conversations/{group}/messages"),
            Some(json!({ "content": text })),
        )
        .await
        .unwrap();
        assert_eq!(status, 201, "{sent}");
        outputs.push(sent.to_string());
    }
    outputs.push(get(&server.address, "/metrics", None));
    // Rotate: a new active key beside the old one. On SQLite, re-encryption waits for the
    // server to stop (one chatd per file); tried while it runs, it changes nothing.
    let ring = format!("old:{GOOD_KEY},new:{SECOND_KEY}");
    let busy = chatd(&["reencrypt"])
        .env("CHAT_DATA_DIR", data.path())
        .env("CHAT_ENCRYPTION_KEYS", &ring)
        .env("CHAT_ENCRYPTION_ACTIVE_KEY", "new")
        .output()
        .unwrap();
    let busy = String::from_utf8_lossy(&busy.stderr).into_owned();
    assert!(busy.contains("in use by another chatd"), "{busy}");
    outputs.push(busy);
    outputs.extend(server.stop_with_log());

    // Re-encrypt with the server stopped, in batches of 1.
    let out = chatd(&["reencrypt", "--batch-size", "1"])
        .env("CHAT_DATA_DIR", data.path())
        .env("CHAT_ENCRYPTION_KEYS", &ring)
        .env("CHAT_ENCRYPTION_ACTIVE_KEY", "new")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("1 rows moved to key new") && stderr.contains("1 remaining"),
        "progress after each batch: {stderr}"
    );
    assert!(
        stderr.contains("done: 2 rows moved to key new; 0 rows could not be decrypted"),
        "{stderr}"
    );
    outputs.push(stderr);
    // Run again: nothing left to do.
    let again = chatd(&["reencrypt"])
        .env("CHAT_DATA_DIR", data.path())
        .env("CHAT_ENCRYPTION_KEYS", &ring)
        .env("CHAT_ENCRYPTION_ACTIVE_KEY", "new")
        .output()
        .unwrap();
    let again = String::from_utf8_lossy(&again.stderr).into_owned();
    assert!(again.contains("done: 0 rows moved"), "{again}");
    outputs.push(again);

    // The old key removed: everything still reads.
    let server = start(dev_server_with_ring(
        data.path(),
        &format!("new:{SECOND_KEY}"),
        None,
    ));
    let messages = history(&server.address, &token, &group).await;
    let texts: Vec<_> = messages
        .iter()
        .filter_map(|m| m["content"].as_str())
        .collect();
    assert!(
        texts.contains(&"first secret") && texts.contains(&"second secret"),
        "{messages:#?}"
    );
    outputs.push(format!("{messages:?}"));
    outputs.extend(server.stop_with_log());

    // A ring without the key the rows name: the page is served, those messages marked.
    let server = start(dev_server_with_ring(
        data.path(),
        &format!("lost:{THIRD_KEY}"),
        None,
    ));
    let messages = history(&server.address, &token, &group).await;
    let marked: Vec<_> = messages
        .iter()
        .filter(|m| m["undecryptable"] == json!(true))
        .collect();
    assert_eq!(marked.len(), 2, "{messages:#?}");
    for message in &marked {
        assert_eq!(message["content"], Value::Null, "{message}");
    }
    assert!(
        messages
            .iter()
            .any(|m| m["is_system_message"] == json!(true) && m["content"].is_string()),
        "the SYSTEM record is plain and readable: {messages:#?}"
    );
    outputs.push(format!("{messages:?}"));
    outputs.push(get(&server.address, "/metrics", None));
    let log = server.stop_with_log();
    assert!(
        log.iter()
            .any(|l| l.contains("cannot be decrypted") && l.contains("new")),
        "an error names the key id: {log:#?}"
    );
    outputs.extend(log);

    for key in [GOOD_KEY, SECOND_KEY, THIRD_KEY] {
        for output in &outputs {
            assert!(!output.contains(key), "a key leaked: {output}");
        }
    }
}

#[test]
fn a_data_dir_in_use_by_another_chatd_stops_start_up() {
    let data = tempfile::tempdir().unwrap();
    let first = start(dev_server_in(data.path()));
    let out = dev_server_in(data.path()).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("in use by another chatd"), "{stderr}");
    assert!(
        stderr.contains(&data.path().join("chat.db").display().to_string()),
        "{stderr}"
    );
    // The first one is unharmed.
    let health = get(&first.address, "/readyz", None);
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(first.stop().success());
}

#[test]
fn an_unwritable_data_dir_stops_start_up() {
    let data = tempfile::tempdir().unwrap();
    // A directory cannot be made under a plain file (this holds even for root).
    let blocker = data.path().join("a-file");
    std::fs::write(&blocker, b"not a directory").unwrap();
    let out = dev_server_in(&blocker.join("data")).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot be created or written"), "{stderr}");
    assert!(stderr.contains("CHAT_DATA_DIR"), "{stderr}");
}

#[tokio::test]
async fn a_database_from_a_newer_chatd_stops_start_up_and_migrate() {
    let data = tempfile::tempdir().unwrap();
    let file = data.path().join("chat.db");
    let url = format!("sqlite://{}", file.display());
    let migrated = chatd(&["migrate"])
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );
    // What a newer chatd would have left: a migration this binary does not know.
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (29991231000000, 'from the future', 1, x'00', 0)",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;

    for args in [
        &["serve", "--dev", "--bind", "127.0.0.1:0"][..],
        &["migrate"],
    ] {
        let out = chatd(args)
            .env("CHAT_DATA_DIR", data.path())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("newer than this chatd"),
            "{args:?}: {stderr}"
        );
        assert!(stderr.contains("29991231000000"), "{args:?}: {stderr}");
    }
}

/// kill -9 while sends are in flight: every send answered 201 before the kill is in the
/// history after a restart, exactly once (WAL, synchronous=FULL, answers after COMMIT).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_sends_survive_kill_9_exactly_once() {
    const SENDS: usize = 600;
    let data = tempfile::tempdir().unwrap();
    let mut command = dev_server_in(data.path());
    command
        .env("CHAT_SEND_RATE_PER_SECOND", "100000")
        .env("CHAT_SEND_BURST", "100000");
    let server = start(command);
    let address = server.address.clone();
    let token = dev_token(1);
    let group = create_group(&address, &token).await;

    let server = Arc::new(Mutex::new(server));
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let killed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let path = format!("/api/v1/conversations/{group}/messages");
    let mut sends = Vec::new();
    for i in 0..SENDS {
        let (client, address, token, path) =
            (client.clone(), address.clone(), token.clone(), path.clone());
        let (acknowledged, killed, server) = (acknowledged.clone(), killed.clone(), server.clone());
        sends.push(tokio::spawn(async move {
            let content = format!("crash-{i}");
            let body = json!({"content": content, "client_message_id": format!("cm-{i}")});
            let reply = call(
                &client,
                &address,
                &token,
                reqwest::Method::POST,
                &path,
                Some(body),
            )
            .await;
            let acked = matches!(&reply, Ok((201, _)));
            if acked && acknowledged.fetch_add(1, Ordering::SeqCst) + 1 == SENDS / 4 {
                // A quarter is acknowledged, the rest in flight or queued: kill -9 now.
                server.lock().unwrap().child.kill().unwrap();
                killed.store(true, Ordering::SeqCst);
            }
            acked.then_some(content)
        }));
    }
    let mut acked = Vec::new();
    for send in sends {
        if let Some(content) = send.await.unwrap() {
            acked.push(content);
        }
    }
    assert!(killed.load(Ordering::SeqCst), "the kill happened");
    assert!(
        acked.len() < SENDS,
        "some sends were cut off by the kill ({} acknowledged)",
        acked.len()
    );
    let status = server.lock().unwrap().child.wait().unwrap();
    assert!(!status.success(), "chatd was killed: {status:?}");

    let server = start(dev_server_in(data.path()));
    let messages = history(&server.address, &token, &group).await;
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for message in &messages {
        *counts
            .entry(message["content"].as_str().unwrap())
            .or_default() += 1;
    }
    for content in &acked {
        assert_eq!(
            counts.get(content.as_str()),
            Some(&1),
            "acknowledged {content} is in history exactly once"
        );
    }
    // Nothing is stored twice, acknowledged or not, and seq has no gap.
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");
    let seqs: Vec<i64> = messages
        .iter()
        .map(|m| m["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
    assert!(server.stop().success());
}

/// Settings the docs name that are not `chatd`'s: they steer the test suite.
const TEST_ONLY_SETTINGS: &[&str] = &[
    "CHAT_REQUIRE_MYSQL",
    "CHAT_REQUIRE_REDIS",
    "CHAT_KEEP_TEST_DB",
    "CHAT_TEST_KEY_RING",
    // Fault injection for tests, hidden from `--help` on purpose.
    "CHAT_FAULT_RELAY_START_DELAY",
];

/// Every `CHAT_*`, `DATABASE_*` and `REDIS_*` variable named in the README or `docs/`.
fn settings_named_in_docs() -> std::collections::BTreeSet<String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    let mut names = std::collections::BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let bytes = text.as_bytes();
        for prefix in ["CHAT_", "DATABASE_", "REDIS_"] {
            for (start, _) in text.match_indices(prefix) {
                if start > 0
                    && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_')
                {
                    continue;
                }
                let end = text[start..]
                    .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
                    .map_or(text.len(), |n| start + n);
                let name = text[start..end].trim_end_matches('_');
                if name.len() > prefix.len() && !TEST_ONLY_SETTINGS.contains(&name) {
                    names.insert(name.to_owned());
                }
            }
        }
    }
    names
}

#[test]
fn the_relay_fault_injection_is_hidden_from_help_and_the_retention_is_listed() {
    let out = chatd(&["serve", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(!help.contains("FAULT"), "{help}");
    assert!(!help.contains("fault-relay-start-delay"), "{help}");
    assert!(help.contains("CHAT_FEED_RETENTION"), "{help}");
    assert!(help.contains("[default: 14d]"), "{help}");
}

#[test]
fn serve_help_lists_every_setting_the_docs_name() {
    let out = chatd(&["serve", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    let named = settings_named_in_docs();
    assert!(named.contains("DATABASE_URL"), "the scan found {named:?}");
    let missing: Vec<_> = named
        .iter()
        .filter(|name| !help.contains(name.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "named in the docs but not in `chatd serve --help`: {missing:?}\n{help}"
    );
}
