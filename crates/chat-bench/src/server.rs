//! Starting and stopping the real `chatd` binary for a scenario, and reading its memory.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

/// Which store the server runs on.
#[derive(Debug, Clone)]
pub(crate) enum Store {
    Memory,
    /// A SQLite file in `dir` (chatd's default store).
    Sqlite {
        dir: PathBuf,
    },
    MySql {
        url: String,
    },
    /// MySQL with a key ring: message text sealed at rest (docs/security.md).
    MySqlEncrypted {
        url: String,
    },
}

/// The key ring of the encrypted runs: a fixed benchmark key (32 bytes, base64).
pub(crate) const BENCH_KEYS: &str = "bench:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

impl Store {
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Store::Memory => "memory",
            Store::Sqlite { .. } => "sqlite",
            Store::MySql { .. } => "mysql",
            Store::MySqlEncrypted { .. } => "mysql-encrypted",
        }
    }
}

/// A running `chatd serve`.
pub(crate) struct Server {
    child: Child,
    /// The store it runs on (a scenario may read the store's own figures).
    pub(crate) store: Store,
    pub(crate) base: String,
    pub(crate) ws_url: String,
    pid: u32,
}

pub(crate) const SECRET: &str = "chat-bench-secret-not-for-production-0123456789";

impl Server {
    /// Starts `chatd serve` on a free loopback port and waits until `/readyz` answers.
    pub(crate) async fn start(chatd: &Path, store: &Store, log_dir: &Path) -> anyhow::Result<Self> {
        let port = free_port()?;
        let log_path: PathBuf = log_dir.join(format!("chatd-{}-{port}.log", store.label()));
        let log = std::fs::File::create(&log_path).context("creating the server log")?;
        let mut command = Command::new(chatd);
        command
            .arg("serve")
            .env("CHAT_BIND", format!("127.0.0.1:{port}"))
            .env("CHAT_JWT_SECRET", SECRET)
            .env("CHAT_SEND_RATE_PER_SECOND", "1000000")
            .env("CHAT_SEND_BURST", "1000000")
            .env("CHAT_RATE_LIMITS", "*=1000000/s:1000000")
            .env("CHAT_WS_MAX_CONNECTIONS_PER_USER", "1000000")
            .env("RUST_LOG", "warn")
            .env_remove("REDIS_URL")
            .env_remove("CHAT_ENCRYPTION_KEYS")
            .env_remove("CHAT_ENCRYPTION_KEYS_FILE")
            .env_remove("CHAT_ENCRYPTION_ACTIVE_KEY")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        match store {
            Store::Memory => {
                command.env("DATABASE_URL", "memory:");
            }
            Store::Sqlite { dir } => {
                command.env(
                    "DATABASE_URL",
                    format!("sqlite://{}", dir.join("chat.db").display()),
                );
            }
            Store::MySql { url } => {
                command.env("DATABASE_URL", url);
            }
            Store::MySqlEncrypted { url } => {
                command
                    .env("DATABASE_URL", url)
                    .env("CHAT_ENCRYPTION_KEYS", BENCH_KEYS);
            }
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", chatd.display()))?;
        let pid = child.id().context("chatd exited at once")?;
        let server = Self {
            child,
            store: store.clone(),
            base: format!("http://127.0.0.1:{port}"),
            ws_url: format!("ws://127.0.0.1:{port}/api/v1/ws"),
            pid,
        };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(response) = client.get(format!("{}/readyz", server.base)).send().await {
                if response.status().is_success() {
                    return Ok(server);
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "chatd did not become ready in 60 s; see {}",
                    log_path.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The server's resident memory in KiB.
    pub(crate) fn rss_kib(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .context("no VmRSS in /proc/<pid>/status")
    }

    pub(crate) async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}
