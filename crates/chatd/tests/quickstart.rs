//! The README's quick start, run as written: its shell blocks are read from `README.md`
//! and executed with `sh` and `curl` against the real `chatd` binary (in a temporary
//! working directory, so the default `chatd-data/` lands there), once without a key ring
//! and once with the ring the README's "Encryption at rest" section makes. Only what
//! cannot run here is translated, and each translation must apply (a README that drifts
//! fails this test instead of being skipped): `cargo run [-q] -p chatd --` becomes the
//! built binary, and the fixed `127.0.0.1:8080` becomes the free port the server announces.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fresh_shell;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chat_test_support::process::spawn_announced;

use serde_json::Value;

/// What Alice says in the README.
const HELLO: &str = "Hello Bob 👋";

/// The settings `chatd` reads, cleared so the quick start sees a fresh shell.
const SETTINGS: &[&str] = fresh_shell::CHATD_SETTINGS;

fn readme() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    std::fs::read_to_string(path).unwrap()
}

/// The text of the `## {title}` section, up to the next `## ` heading.
fn section(readme: &str, title: &str) -> String {
    let start = readme
        .find(&format!("\n## {title}\n"))
        .unwrap_or_else(|| panic!("README has no `## {title}` section"));
    let body = &readme[start + 1..];
    let end = body[3..].find("\n## ").map_or(body.len(), |i| i + 3);
    body[..end].to_owned()
}

/// The bodies of the ```sh blocks of `text`, in order.
fn sh_blocks(text: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), line) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

/// `text` with `from` replaced by `to`, which must occur.
fn translate(text: &str, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "the README's quick start no longer contains {from:?}; update this test: {text}"
    );
    text.replace(from, to)
}

/// A client block of the README made runnable: the binary for `cargo run`, the server's
/// real address for the fixed one.
fn runnable(block: &str) -> String {
    let block = translate(block, "cargo run -q -p chatd --", "\"$CHATD\"");
    translate(&block, "http://127.0.0.1:8080", "http://$ADDRESS")
}

/// The quick start's three blocks: the server command's arguments, the first client block
/// and the block run after the restart.
struct QuickStart {
    serve: Vec<String>,
    first: String,
    after_restart: String,
}

fn quick_start() -> QuickStart {
    let text = section(&readme(), "Quick start");
    let blocks = sh_blocks(&text);
    assert_eq!(blocks.len(), 3, "the quick start's sh blocks: {blocks:#?}");
    let serve = blocks[0].trim();
    let args = serve
        .strip_prefix("cargo run -p chatd -- ")
        .unwrap_or_else(|| panic!("the server command changed: {serve}"));
    assert!(
        text.contains(&format!("start it again (`{serve}`)")),
        "the restart is the same command: {text}"
    );
    QuickStart {
        serve: args.split_whitespace().map(str::to_owned).collect(),
        first: runnable(&blocks[1]),
        // Uses the variables of the first block only (its `API=` line is replayed).
        after_restart: blocks[2].clone(),
    }
}

/// The value of `CHAT_ENCRYPTION_KEYS` that the README's encryption section sets (its
/// `export` line run by `sh`, `openssl` included).
fn readme_key_ring() -> String {
    let text = section(&readme(), "Encryption at rest");
    let export = text
        .lines()
        .find(|line| line.starts_with("export CHAT_ENCRYPTION_KEYS="))
        .expect("the README shows how to set CHAT_ENCRYPTION_KEYS");
    let export = export.split(" #").next().unwrap();
    let out = shell(
        &format!("{export}\nprintf %s \"$CHAT_ENCRYPTION_KEYS\""),
        &[],
    );
    assert!(out.contains(':') && out.len() > 40, "a key ring: {out:?}");
    out
}

/// Runs `script` with `sh -eu` in a clean environment plus `vars`; its stdout.
fn shell(script: &str, vars: &[(&str, String)]) -> String {
    let mut command = Command::new("sh");
    command.args(["-euc", script]);
    for name in SETTINGS {
        command.env_remove(name);
    }
    let out = command
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .output()
        .expect("sh runs (with curl, sed and openssl installed)");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "the README block failed ({}):\n{script}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A `chatd` started as the README starts it, in `dir`.
struct Server {
    child: Child,
    address: String,
    /// The stderr lines printed up to the address announcement.
    seen: Vec<String>,
}

impl Server {
    fn start(dir: &Path, args: &[String], ring: Option<&str>) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_chatd"));
        command.args(args).current_dir(dir);
        for name in SETTINGS {
            command.env_remove(name);
        }
        // The README's 8080 may be taken on a test machine: any free port.
        command
            .env("CHAT_BIND", "127.0.0.1:0")
            .env("CHAT_SHUTDOWN_TIMEOUT", "2")
            .env("RUST_LOG", "info");
        if let Some(ring) = ring {
            command.env("CHAT_ENCRYPTION_KEYS", ring);
        }
        let (child, announced) = spawn_announced(&mut command, Duration::from_secs(30));
        Self {
            child,
            address: announced.address,
            seen: announced.seen,
        }
    }

    /// Ctrl-C, as the README says, and the exit.
    fn stop(mut self) {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(exit) = self.child.try_wait().unwrap() {
                assert!(exit.success(), "chatd stops cleanly on Ctrl-C: {exit:?}");
                return;
            }
            assert!(Instant::now() < deadline, "chatd did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The JSON answers a block printed (each `curl …; echo` prints one line).
fn answers(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect()
}

fn contents(page: &Value) -> Vec<&str> {
    page["items"]
        .as_array()
        .unwrap_or_else(|| panic!("a page of messages: {page}"))
        .iter()
        .filter_map(|m| m["content"].as_str())
        .collect()
}

/// Every file `chatd` left in the data directory, as bytes.
fn data_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let data = dir.join("chatd-data");
    let files: Vec<_> = std::fs::read_dir(&data)
        .unwrap_or_else(|e| panic!("the quick start stores in {}: {e}", data.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    assert!(
        files.iter().any(|(path, _)| path.ends_with("chat.db")),
        "{files:?}"
    );
    files
}

fn holds(files: &[(PathBuf, Vec<u8>)], needle: &str) -> bool {
    files
        .iter()
        .any(|(_, bytes)| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
}

/// Follows the quick start with `ring` as `CHAT_ENCRYPTION_KEYS` (or none); returns the
/// data directory's files after the final stop.
fn follow_the_quick_start(ring: Option<&str>) -> (tempfile::TempDir, Vec<(PathBuf, Vec<u8>)>) {
    let steps = quick_start();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &steps.serve, ring);
    let plain_notices = server
        .seen
        .iter()
        .filter(|l| l.contains("PLAIN TEXT"))
        .count();
    let encrypted_notices = server
        .seen
        .iter()
        .filter(|l| l.contains("message text is encrypted at rest"))
        .count();
    match ring {
        None => assert_eq!(
            (plain_notices, encrypted_notices),
            (1, 0),
            "{:#?}",
            server.seen
        ),
        Some(_) => assert_eq!(
            (plain_notices, encrypted_notices),
            (0, 1),
            "{:#?}",
            server.seen
        ),
    }

    let state = dir.path().join("quickstart.env");
    let chatd = env!("CARGO_BIN_EXE_chatd").to_owned();
    let vars = [
        ("CHATD", chatd.clone()),
        ("ADDRESS", server.address.clone()),
        ("STATE", state.display().to_string()),
    ];
    // The README's variables outlive its block in the reader's terminal: keep them too.
    let first = format!(
        "{}printf 'ALICE=%s\\nBOB=%s\\nCONV=%s\\n' \"$ALICE\" \"$BOB\" \"$CONV\" > \"$STATE\"\n",
        steps.first
    );
    let printed = answers(&shell(&first, &vars));
    assert_eq!(printed.len(), 5, "five answers: {printed:#?}");
    assert_eq!(printed[0]["total"], 0, "Bob starts with nothing unread");
    assert_eq!(printed[1]["content"], HELLO, "the message is sent");
    assert_eq!(printed[2]["total"], 1, "Bob has one unread: {}", printed[2]);
    assert_eq!(contents(&printed[3]), [HELLO], "Bob reads the history");
    assert_eq!(printed[4]["unread_count"], 0, "marked read: {}", printed[4]);

    let kept = std::fs::read_to_string(&state).unwrap();
    let kept: Vec<(String, String)> = kept
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert_eq!(kept.len(), 3, "{kept:?}");
    let bob = kept[1].1.clone();
    // Not in the README: the read shows in Bob's unread count.
    let unread = shell(
        "curl -s -H \"Authorization: Bearer $BOB\" http://$ADDRESS/api/v1/unread",
        &[("BOB", bob), ("ADDRESS", server.address.clone())],
    );
    assert_eq!(answers(&unread)[0]["total"], 0, "{unread}");
    server.stop();

    // Started again, the same way, in the same directory.
    let server = Server::start(dir.path(), &steps.serve, ring);
    let mut vars: Vec<(&str, String)> = vec![("CHATD", chatd), ("ADDRESS", server.address.clone())];
    let mut script = String::new();
    for (name, value) in &kept {
        script.push_str(&format!("{name}='{value}'\n"));
    }
    // The README's `API=` line, from the first block, as the reader's shell still has it.
    let api_line = steps
        .first
        .lines()
        .find(|l| l.starts_with("API="))
        .expect("the quick start sets API");
    script.push_str(api_line);
    script.push('\n');
    script.push_str(&steps.after_restart);
    vars.push(("STATE", state.display().to_string()));
    let printed = answers(&shell(&script, &vars));
    assert_eq!(printed.len(), 1, "{printed:#?}");
    assert_eq!(
        contents(&printed[0]),
        [HELLO],
        "the conversation is still there"
    );
    server.stop();
    let files = data_files(dir.path());
    (dir, files)
}

#[test]
fn the_readme_quick_start_works_without_a_key_ring() {
    let (_dir, files) = follow_the_quick_start(None);
    // The check the key-ring run relies on can see the text when it is there.
    assert!(
        holds(&files, "Hello Bob"),
        "without a ring the text is stored as it is"
    );
}

#[tokio::test]
async fn the_readme_quick_start_works_with_a_key_ring_and_stores_no_plain_text() {
    let ring = readme_key_ring();
    let key_id = ring.split(':').next().unwrap().to_owned();
    let (dir, files) = follow_the_quick_start(Some(&ring));
    assert!(
        !holds(&files, "Hello Bob"),
        "no plain text of the message in {:?}",
        files.iter().map(|(p, _)| p).collect::<Vec<_>>()
    );
    assert!(!holds(&files, "👋"), "not even the emoji");

    // The message row names the README's key and holds the sealed format.
    let file = dir.path().join("chatd-data/chat.db");
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&file)
        .read_only(true);
    let mut conn = sqlx::ConnectOptions::connect(&options).await.unwrap();
    let rows: Vec<(Option<String>, String)> = sqlx::query_as(
        "SELECT encryption_key_id, content FROM MESSAGES WHERE is_system_message = 0",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].0.as_deref(), Some(key_id.as_str()));
    assert!(rows[0].1.starts_with("v1."), "{rows:?}");
}
