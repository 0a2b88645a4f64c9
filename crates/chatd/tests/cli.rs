//! The `chatd` binary end to end: it refuses unsafe configurations with a reason, mints
//! tokens, serves in `--dev` mode and stops gracefully on SIGTERM.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// `chatd` with a clean environment for everything it reads.
fn chatd(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_chatd"));
    command.args(args);
    for name in [
        "CHAT_JWT_SECRET",
        "CHAT_JWT_ALGORITHM",
        "CHAT_JWT_PUBLIC_KEY_PEM",
        "CHAT_JWT_ISSUER",
        "CHAT_JWT_AUDIENCE",
        "CHAT_ALLOWED_ORIGINS",
        "CHAT_USER_PROVISIONING",
        "DATABASE_URL",
        "CHAT_BIND",
        "REDIS_URL",
        "CHAT_ENCRYPTION_KEYS",
        "CHAT_ENCRYPTION_KEYS_FILE",
        "CHAT_ENCRYPTION_ACTIVE_KEY",
    ] {
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

#[test]
fn dev_server_serves_and_stops_gracefully_on_sigterm() {
    let mut child = chatd(&["serve", "--dev", "--bind", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let address = loop {
        let line = received
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no address announced: {seen:#?}"));
        if let Some(rest) = line.split("http://").nth(1) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
        seen.push(line);
    };
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

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(std::time::Instant::now() < deadline, "chatd did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "graceful stop exits 0: {exit:?}");
}

/// Settings the docs name that are not `chatd`'s: they steer the test suite.
const TEST_ONLY_SETTINGS: &[&str] = &[
    "CHAT_REQUIRE_MYSQL",
    "CHAT_REQUIRE_REDIS",
    "CHAT_KEEP_TEST_DB",
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
