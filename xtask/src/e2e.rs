//! `cargo xtask e2e`: the web client in a real browser.
//!
//! Builds `chatd`, starts it in `--dev` mode on a free port over a persistent store (a
//! fresh MySQL/MariaDB database, so a restart keeps the data), starts Debian's
//! `chromedriver` and drives two headless Chromium sessions over WebDriver
//! (`fantoccini`) as two users: they exchange messages in real time, see unread badges
//! rise and clear, typing and "seen by", react, edit and delete, survive a restart of
//! `chatd` with catch-up (nothing missing, nothing doubled), and come back from the
//! browser's network cut (DevTools' offline mode) by resuming from the sync token: what
//! changed meanwhile shows from the replay alone, and a token the server cannot resume
//! from makes the page reload. Screenshots of the key steps go to `target/e2e/`.
//!
//! Without `chromium` and `chromedriver` the run is skipped loudly, and fails under
//! `CI=true`. `cargo xtask test` runs it at its end.

use std::io::Write as _;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::cmd;
use crate::services::Services;

/// How long a step may wait for the page to show what it expects.
const WAIT: Duration = Duration::from_secs(20);

/// The browser and its driver, as Debian's `chromium` and `chromium-driver` install them.
pub(crate) struct Browser {
    chromium: PathBuf,
    chromedriver: PathBuf,
}

impl Browser {
    /// Finds both programs, or says which is missing.
    pub(crate) fn find() -> std::result::Result<Self, String> {
        let chromium = ["chromium", "chromium-browser"]
            .iter()
            .find_map(|name| cmd::find_program(name));
        let chromedriver = cmd::find_program("chromedriver");
        match (chromium, chromedriver) {
            (Some(chromium), Some(chromedriver)) => Ok(Self {
                chromium,
                chromedriver,
            }),
            (None, _) => Err("chromium is not installed".to_owned()),
            (_, None) => Err("chromedriver is not installed".to_owned()),
        }
    }
}

/// `cargo xtask e2e`.
pub(crate) fn run(extra: &[String]) -> Result<()> {
    if let Some(arg) = extra.first() {
        bail!("`cargo xtask e2e` takes no arguments (got `{arg}`)");
    }
    if let Err(missing) = Browser::find() {
        return skip_or_fail(&missing);
    }
    let services = Services::prepare()?;
    run_with(&services)
}

/// The browser tests over services already prepared (`cargo xtask test` calls this last).
pub(crate) fn run_with(services: &Services) -> Result<()> {
    let browser = match Browser::find() {
        Ok(browser) => browser,
        Err(missing) => return skip_or_fail(&missing),
    };
    let started = Instant::now();
    cmd::banner("cargo build -p chatd");
    cmd::run(cmd::cargo().args(["build", "-p", "chatd"]))?;
    let result = run_in_browser(&browser, services);
    let took = cmd::elapsed(started.elapsed());
    match &result {
        Ok(()) => cmd::banner(&format!(
            "cargo xtask e2e: passed in {took}; screenshots in {}",
            out_dir().display()
        )),
        Err(_) => cmd::banner(&format!("cargo xtask e2e: FAILED after {took}")),
    }
    result
}

/// A missing browser: a failure under CI, else a loud skip.
pub(crate) fn skip_or_fail(missing: &str) -> Result<()> {
    if cmd::is_ci() {
        cmd::loud_banner(&[
            format!("browser tests cannot run: {missing}"),
            "CI=true, so this is a failure, not a skip.".to_owned(),
            "Install them: apt-get install -y chromium chromium-driver".to_owned(),
        ]);
        bail!("browser tests cannot run: {missing}");
    }
    cmd::loud_banner(&[
        format!("browser tests (cargo xtask e2e) SKIPPED: {missing}"),
        "The web client is NOT tested in a browser. Install them with".to_owned(),
        "apt-get install -y chromium chromium-driver. Under CI=true this fails.".to_owned(),
    ]);
    Ok(())
}

/// Where screenshots and logs go.
fn out_dir() -> PathBuf {
    cmd::target_dir().join("e2e")
}

fn run_in_browser(browser: &Browser, services: &Services) -> Result<()> {
    let out = out_dir();
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let database = Database::create(services)?;
    let port = free_port()?;
    let chatd = Chatd {
        binary: cmd::target_dir().join("debug").join("chatd"),
        port,
        database_url: database.url.clone(),
        log: out.join("chatd.log"),
    };
    let driver_port = free_port()?;
    let driver = Guard(
        Command::new(&browser.chromedriver)
            .arg(format!("--port={driver_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting chromedriver")?,
    );
    wait_for_port(driver_port, "chromedriver")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(scenario(browser, driver_port, &chatd));
    drop(driver);
    database.drop_it();
    result
}

/// A child process killed when dropped.
pub(crate) struct Guard(pub(crate) Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How to start `chatd`.
struct Chatd {
    binary: PathBuf,
    port: u16,
    database_url: String,
    log: PathBuf,
}

impl Chatd {
    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts it and waits until it answers `/healthz`.
    fn start(&self) -> Result<Guard> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let child = Command::new(&self.binary)
            .args(["serve", "--dev", "--bind"])
            .arg(format!("127.0.0.1:{}", self.port))
            .env("DATABASE_URL", &self.database_url)
            // The default shutdown timeout (10 s per stop step): open connections do not
            // hold the stop (it takes well under a second), so `stop`'s 20 s is a check
            // that they still do not, not a budget to fit timeouts into.
            .env_remove("CHAT_SHUTDOWN_TIMEOUT")
            .env_remove("REDIS_URL")
            .env_remove("CHAT_JWT_SECRET")
            .env_remove("CHAT_BIND")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        let guard = Guard(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if http(self.port, "GET", "/healthz", None, None).is_ok_and(|(status, _)| status == 200)
            {
                return Ok(guard);
            }
            if Instant::now() > deadline {
                bail!("chatd did not answer /healthz; see {}", self.log.display());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops it with SIGTERM (its WebSockets close with 1001) and waits for it to exit.
    fn stop(mut guard: Guard) -> Result<()> {
        let status = Command::new("kill")
            .args(["-TERM", &guard.0.id().to_string()])
            .status()
            .context("running kill")?;
        if !status.success() {
            bail!("kill -TERM chatd failed");
        }
        let signalled = Instant::now();
        let deadline = signalled + Duration::from_secs(20);
        while guard.0.try_wait()?.is_none() {
            if Instant::now() > deadline {
                bail!("chatd did not stop within 20 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        println!(
            "e2e: chatd stopped {:.1?} after SIGTERM",
            signalled.elapsed()
        );
        Ok(())
    }

    /// A development token, minted by the server as the page does.
    fn token(&self, user: i64, name: &str) -> Result<String> {
        let body = json!({"user_id": user, "name": name});
        let (status, reply) = http(self.port, "POST", "/api/v1/dev/token", None, Some(&body))?;
        if status != 200 {
            bail!("POST /api/v1/dev/token answered {status}: {reply}");
        }
        reply["token"]
            .as_str()
            .map(str::to_owned)
            .context("no token in the answer")
    }
}

/// A fresh database on the MySQL/MariaDB server of the tests, dropped at the end.
struct Database {
    url: String,
    server: String,
    name: String,
}

impl Database {
    fn create(services: &Services) -> Result<Self> {
        let server = services
            .var("DATABASE_URL")
            .context("the browser tests need MySQL/MariaDB for a store that survives a restart")?
            .trim_end_matches('/')
            .to_owned();
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let name = format!("chat_e2e_{stamp}_{}", std::process::id());
        mysql_execute(&server, &format!("CREATE DATABASE `{name}`"))?;
        Ok(Self {
            url: format!("{server}/{name}"),
            server,
            name,
        })
    }

    fn drop_it(self) {
        if let Err(err) = mysql_execute(&self.server, &format!("DROP DATABASE `{}`", self.name)) {
            eprintln!("e2e: could not drop database {}: {err:#}", self.name);
        }
    }
}

/// Runs one statement with the `mariadb` (or `mysql`) client against `mysql://user[:password]@host[:port]`.
fn mysql_execute(server: &str, statement: &str) -> Result<()> {
    let rest = server
        .strip_prefix("mysql://")
        .with_context(|| format!("DATABASE_URL is not mysql://…: {server}"))?;
    let (credentials, address) = rest.rsplit_once('@').unwrap_or(("root", rest));
    let (user, password) = credentials.split_once(':').unwrap_or((credentials, ""));
    let (host, port) = address.split_once(':').unwrap_or((address, "3306"));
    let client = cmd::find_program("mariadb")
        .or_else(|| cmd::find_program("mysql"))
        .context("the browser tests need the mariadb (or mysql) client to create a database")?;
    let mut command = Command::new(client);
    command
        .args([
            "--protocol=tcp",
            "-h",
            host,
            "-P",
            port,
            "-u",
            user,
            "-e",
            statement,
        ])
        .env("MYSQL_PWD", password);
    cmd::run(&mut command)
}

/// A port nothing listens on (right now).
pub(crate) fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

pub(crate) fn wait_for_port(port: u16, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("{what} did not listen on port {port}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// One HTTP/1.1 request to the server on `port`: its status and JSON body.
fn http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Result<(u16, Value)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(&body);
    stream.write_all(request.as_bytes())?;
    let response = read_response(&mut stream)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status")?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body)
        .unwrap_or_default();
    let json = serde_json::from_str(body).unwrap_or(Value::Null);
    Ok((status, json))
}

/// One HTTP/1.1 response, head and body: up to its `Content-Length` when it has one (some
/// servers, chromedriver among them, keep the connection open after it despite
/// `Connection: close`), else to the end of the stream.
fn read_response(stream: &mut impl std::io::Read) -> Result<String> {
    let mut response = Vec::new();
    let mut chunk = [0_u8; 8192];
    loop {
        let head = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|at| at + 4);
        if let Some(head) = head {
            let length = String::from_utf8_lossy(&response[..head])
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())
                        .flatten()
                });
            if length.is_some_and(|length| response.len() >= head + length) {
                break;
            }
        }
        let read = stream.read(&mut chunk)?;
        if read == 0 {
            break;
        }
        response.extend_from_slice(&chunk[..read]);
    }
    String::from_utf8(response).context("a response that is not UTF-8")
}

/// One browser session: one user in one window.
struct Page {
    name: &'static str,
    client: Client,
    profile: PathBuf,
    /// chromedriver's port, for the commands fantoccini does not have (the network).
    driver_port: u16,
}

impl Page {
    async fn open(browser: &Browser, driver_port: u16, name: &'static str) -> Result<Self> {
        let profile = out_dir().join(format!("profile-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile)?;
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".to_owned(),
            json!({
                "binary": browser.chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1100,760",
                    format!("--user-data-dir={}", profile.display()),
                ],
            }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{driver_port}"))
            .await
            .with_context(|| format!("starting the browser session of {name}"))?;
        Ok(Self {
            name,
            client,
            profile,
            driver_port,
        })
    }

    /// Cuts (or restores) the browser's network as DevTools' "Offline" does: the page gets
    /// `offline` (`online`) events and `navigator.onLine` follows. Open sockets are not cut
    /// by it: the page closes its own on `offline`, and opens none until `online`.
    async fn set_offline(&self, offline: bool) -> Result<()> {
        let session = self
            .client
            .session_id()
            .await?
            .context("no WebDriver session")?;
        let command = json!({
            "cmd": "Network.emulateNetworkConditions",
            "params": {
                "offline": offline, "latency": 0,
                "downloadThroughput": -1, "uploadThroughput": -1,
            },
        });
        let path = format!("/session/{session}/goog/cdp/execute");
        let (status, reply) = http(self.driver_port, "POST", &path, None, Some(&command))?;
        if status != 200 {
            bail!(
                "{}: chromedriver answered {status} to {command}: {reply}",
                self.name
            );
        }
        Ok(())
    }

    /// Runs `script` in the page and answers what it returns.
    async fn eval(&self, script: &str) -> Result<Value> {
        Ok(self.client.execute(script, Vec::new()).await?)
    }

    async fn close(self) {
        let _ = self.client.close().await;
        let _ = std::fs::remove_dir_all(&self.profile);
    }

    async fn screenshot(&self, step: &str) -> Result<PathBuf> {
        let png = self.client.screenshot().await?;
        let path = out_dir().join(format!("{step}-{}.png", self.name));
        std::fs::write(&path, png).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    async fn click(&self, css: &str) -> Result<()> {
        self.until(&format!("{css} is clickable"), || async {
            match self.client.find(Locator::Css(css)).await {
                Ok(element) => Ok(element.click().await.is_ok()),
                Err(_) => Ok(false),
            }
        })
        .await
    }

    async fn type_into(&self, css: &str, text: &str) -> Result<()> {
        let element = self.client.find(Locator::Css(css)).await?;
        element.send_keys(text).await?;
        Ok(())
    }

    async fn fill(&self, css: &str, text: &str) -> Result<()> {
        let element = self.client.find(Locator::Css(css)).await?;
        element.clear().await?;
        element.send_keys(text).await?;
        Ok(())
    }

    /// The visible texts of every element matching `css`.
    async fn texts(&self, css: &str) -> Result<Vec<String>> {
        let mut texts = Vec::new();
        for element in self.client.find_all(Locator::Css(css)).await? {
            texts.push(element.text().await.unwrap_or_default());
        }
        Ok(texts)
    }

    /// Waits until the visible texts of `css` satisfy `check`.
    async fn until_texts(
        &self,
        what: &str,
        css: &str,
        check: impl Fn(&[String]) -> bool,
    ) -> Result<Vec<String>> {
        let deadline = Instant::now() + WAIT;
        loop {
            let texts = self.texts(css).await?;
            if check(&texts) {
                return Ok(texts);
            }
            if Instant::now() > deadline {
                let shot = self.screenshot("failure").await.ok();
                bail!(
                    "{}: timed out waiting for {what} ({css} shows {texts:?}); screenshot {shot:?}",
                    self.name
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `probe` answers true.
    async fn until<F, Fut>(&self, what: &str, probe: F) -> Result<()>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<bool>>,
    {
        let deadline = Instant::now() + WAIT;
        loop {
            if probe().await? {
                return Ok(());
            }
            if Instant::now() > deadline {
                let shot = self.screenshot("failure").await.ok();
                bail!(
                    "{}: timed out waiting for {what}; screenshot {shot:?}",
                    self.name
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Signs in through the development form.
    async fn sign_in(&self, base: &str, user: i64, name: &str) -> Result<()> {
        self.client.goto(&format!("{base}/")).await?;
        self.until_texts("the development sign-in form", "#dev-form h2", |t| {
            t.iter().any(|t| t.contains("development"))
        })
        .await?;
        self.fill("#dev-user", &user.to_string()).await?;
        self.fill("#dev-name", name).await?;
        self.click("#dev-form button[type=submit]").await?;
        self.until_texts("the online status", "#status", |t| t == ["online"])
            .await?;
        Ok(())
    }

    /// Sends `text` from the composer with Enter.
    async fn send(&self, text: &str) -> Result<()> {
        self.type_into("#text", &format!("{text}{}", Key::Enter))
            .await
    }

    /// Waits until exactly the messages `expected` are shown, in this order.
    async fn until_messages(&self, expected: &[&str]) -> Result<()> {
        self.until_texts(
            &format!("the messages {expected:?}"),
            ".msg:not(.system) .text",
            |texts| texts == expected,
        )
        .await
        .map(drop)
    }
}

/// Exactly one element of `texts` equals `text`.
fn once(texts: &[String], text: &str) -> bool {
    texts.iter().filter(|t| t.as_str() == text).count() == 1
}

async fn scenario(browser: &Browser, driver_port: u16, chatd: &Chatd) -> Result<()> {
    let server = chatd.start()?;
    let base = chatd.base();
    let alice = Page::open(browser, driver_port, "alice").await?;
    let bob = match Page::open(browser, driver_port, "bob").await {
        Ok(bob) => bob,
        Err(err) => {
            alice.close().await;
            return Err(err);
        }
    };
    let result = conversation(chatd, server, &base, &alice, &bob).await;
    alice.close().await;
    bob.close().await;
    result
}

async fn conversation(
    chatd: &Chatd,
    server: Guard,
    base: &str,
    alice: &Page,
    bob: &Page,
) -> Result<()> {
    step("two users sign in with development tokens");
    alice.sign_in(base, 1, "Alice").await?;
    bob.sign_in(base, 2, "Bob").await?;
    alice.screenshot("01-signed-in").await?;

    step("Alice opens a direct conversation with Bob and says hello");
    alice.click(".new summary").await?;
    alice.fill("#direct-user", "2").await?;
    alice.click("#direct-form button[type=submit]").await?;
    alice
        .until_texts("the conversation title", "#conv-title", |t| t == ["Bob"])
        .await?;
    alice.send("Hello Bob").await?;
    alice.until_messages(&["Hello Bob"]).await?;

    step("Bob's inbox shows the conversation with an unread badge of 1");
    bob.until_texts("an unread badge", ".inbox-item .badge", |t| t == ["1"])
        .await?;
    bob.until_texts("the last message", ".inbox-preview", |t| {
        t == ["Alice: Hello Bob"]
    })
    .await?;
    bob.screenshot("02-unread-badge").await?;
    alice.send("Are you there?").await?;
    bob.until_texts("an unread badge", ".inbox-item .badge", |t| t == ["2"])
        .await?;

    step("Bob opens it: the badge clears and Alice sees \"Seen by Bob\"");
    bob.click(".inbox-item").await?;
    bob.until_messages(&["Hello Bob", "Are you there?"]).await?;
    bob.until_texts(
        "no unread badge",
        ".inbox-item .badge",
        <[String]>::is_empty,
    )
    .await?;
    alice
        .until_texts("seen by Bob", ".msg.mine .seen", |t| {
            t.iter().any(|t| t == "Seen by Bob")
        })
        .await?;

    step("Bob types: Alice sees the typing indicator");
    bob.type_into("#text", "Yes, I am").await?;
    alice
        .until_texts("the typing indicator", "#typing", |t| {
            t == ["Bob is typing…"]
        })
        .await?;
    alice.screenshot("03-typing-and-seen").await?;
    bob.type_into("#text", &Key::Enter.to_string()).await?;
    alice
        .until_messages(&["Hello Bob", "Are you there?", "Yes, I am"])
        .await?;
    alice
        .until_texts("no typing indicator", "#typing", |t| t == [""])
        .await?;

    step("Bob reacts to Alice's first message; Alice sees the reaction");
    bob.click(".msg:not(.mine) [data-action=\"react-👍\"]")
        .await?;
    alice
        .until_texts("the 👍 reaction", ".msg.mine .reaction", |t| {
            t == ["👍 1"]
        })
        .await?;
    alice.click(".msg.mine [data-action=\"react-🎉\"]").await?;
    bob.until_texts("both reactions", ".msg:not(.mine) .reaction", |t| {
        t == ["👍 1", "🎉 1"]
    })
    .await?;

    step("Alice edits her first message; Bob sees the edit");
    alice.click(".msg.mine [data-action=edit]").await?;
    alice.fill(".edit-input", "Hello Bob, edited").await?;
    alice
        .type_into(".edit-input", &Key::Enter.to_string())
        .await?;
    bob.until_messages(&["Hello Bob, edited", "Are you there?", "Yes, I am"])
        .await?;
    bob.until_texts("the edited marker", ".msg .edited", |t| t == ["(edited)"])
        .await?;

    step("Alice deletes her second message; it disappears for Bob");
    let second = ".msg.mine:nth-child(2) [data-action=delete]";
    alice
        .until_texts("her second message", ".msg.mine:nth-child(2) .text", |t| {
            t == ["Are you there?"]
        })
        .await?;
    alice.click(second).await?;
    alice.client.accept_alert().await?;
    bob.until_messages(&["Hello Bob, edited", "Yes, I am"])
        .await?;
    bob.screenshot("04-reacted-edited-deleted").await?;
    alice.screenshot("04-reacted-edited-deleted").await?;

    step("chatd restarts; both pages show \"reconnecting…\"");
    Chatd::stop(server)?;
    alice
        .until_texts("reconnecting", "#status", |t| t == ["reconnecting…"])
        .await?;
    bob.until_texts("reconnecting", "#status", |t| t == ["reconnecting…"])
        .await?;
    bob.screenshot("05-reconnecting").await?;
    // Long enough for the pages' back-off to grow, so that they are still away when the
    // server is back and the next messages are sent.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let server = chatd.start()?;

    step("while the pages reconnect, Alice sends and edits over the API");
    let token = chatd.token(1, "Alice")?;
    let (status, conversations) = http(
        chatd.port,
        "GET",
        "/api/v1/conversations",
        Some(&token),
        None,
    )?;
    if status != 200 {
        bail!("GET /api/v1/conversations answered {status}");
    }
    let conversation = conversations["items"][0]["id"]
        .as_str()
        .context("the conversation survived the restart")?
        .to_owned();
    let away = bob.texts("#status").await?;
    let path = format!("/api/v1/conversations/{conversation}/messages?limit=10");
    let (_, history) = http(chatd.port, "GET", &path, Some(&token), None)?;
    let first = history["items"]
        .as_array()
        .and_then(|items| items.iter().find(|m| m["content"] == "Hello Bob, edited"))
        .and_then(|m| m["id"].as_str())
        .context("Alice's first message is in the history")?
        .to_owned();
    let (status, reply) = http(
        chatd.port,
        "PATCH",
        &format!("/api/v1/messages/{first}"),
        Some(&token),
        Some(&json!({"content": "Hello Bob, edited twice"})),
    )?;
    if status != 200 {
        bail!("editing answered {status}: {reply}");
    }
    for text in ["Missed one", "Missed two", "Missed three"] {
        let path = format!("/api/v1/conversations/{conversation}/messages");
        let (status, reply) = http(
            chatd.port,
            "POST",
            &path,
            Some(&token),
            Some(&json!({"content": text})),
        )?;
        if status != 201 && status != 200 {
            bail!("sending {text:?} answered {status}: {reply}");
        }
    }
    println!("e2e: Bob's page was {away:?} while the messages were sent");

    step("both pages catch up: nothing missing, nothing doubled");
    let expected = [
        "Hello Bob, edited twice",
        "Yes, I am",
        "Missed one",
        "Missed two",
        "Missed three",
    ];
    for page in [alice, bob] {
        page.until_texts("online again", "#status", |t| t == ["online"])
            .await?;
        page.until_messages(&expected).await?;
    }
    let texts = bob.texts(".msg .text").await?;
    for text in expected {
        if !once(&texts, text) {
            bail!("bob: {text:?} is not shown exactly once: {texts:?}");
        }
    }
    bob.until_texts("the last message in the inbox", ".inbox-preview", |t| {
        t == ["Alice: Missed three"]
    })
    .await?;

    step("real time still works after the restart");
    bob.send("Back again").await?;
    alice
        .until_texts("Bob's message", ".msg:not(.system) .text", |t| {
            t.last().is_some_and(|t| t == "Back again")
        })
        .await?;
    alice.screenshot("06-after-restart").await?;
    bob.screenshot("06-after-restart").await?;

    step("Alice creates a group with Bob; Bob mutes it; Alice removes Bob and archives it");
    alice.fill("#group-name", "Team").await?;
    alice.fill("#group-members", "2").await?;
    alice.click("#group-form button[type=submit]").await?;
    alice
        .until_texts("the group's title", "#conv-title", |t| t == ["Team"])
        .await?;
    alice.send("Welcome to Team").await?;
    bob.until_texts(
        "the group in the inbox",
        ".inbox-item.unread .inbox-title",
        |t| t.iter().any(|t| t.starts_with("Team")),
    )
    .await?;
    bob.click(".inbox-item.unread").await?;
    bob.until_texts("the group's title", "#conv-title", |t| t == ["Team"])
        .await?;
    bob.click("#mute").await?;
    bob.until_texts("the mute button", "#mute", |t| t == ["Unmute"])
        .await?;
    bob.until_texts("the muted mark", ".inbox-item.active .tag", |t| {
        t.iter().any(|t| t == "🔕")
    })
    .await?;
    offline_and_back(chatd, alice, bob).await?;

    alice.click("#members-toggle").await?;
    alice
        .until_texts("the members", "#member-list li", |t| t.len() == 2)
        .await?;
    alice.screenshot("07-group-members").await?;
    alice.click("#member-list button").await?;
    bob.until_texts("the group gone from the inbox", ".inbox-title", |t| {
        !t.iter().any(|t| t.starts_with("Team"))
    })
    .await?;
    bob.until_texts("no open conversation", "#empty", |t| {
        t == ["Pick a conversation, or start one."]
    })
    .await?;
    alice.click("#archive").await?;
    alice
        .until_texts("the archive button", "#archive", |t| t == ["Unarchive"])
        .await?;
    bob.click(".inbox-item").await?;

    step("a phone-sized window shows one pane at a time");
    bob.client.set_window_size(390, 760).await?;
    bob.until_texts("the conversation", "#conv-title", |t| t == ["Alice"])
        .await?;
    bob.screenshot("08-phone").await?;
    Chatd::stop(server)?;
    Ok(())
}

/// Bob's page goes offline while Alice changes the group open on it (an edit, a delete, a
/// 🎉 reaction, a rename); back online, it resumes from its sync token and shows all of it
/// from the replay alone: no page reload, no history re-read. Then a token the server
/// cannot resume from (another deployment's): the page reloads what it shows and goes on.
async fn offline_and_back(chatd: &Chatd, alice: &Page, bob: &Page) -> Result<()> {
    step("Alice says two more things in the group; Bob sees them");
    alice.send("Lunch at noon?").await?;
    alice.send("Wrong chat, sorry").await?;
    let before = ["Welcome to Team", "Lunch at noon?", "Wrong chat, sorry"];
    bob.until_messages(&before).await?;

    step("Bob goes offline; meanwhile Alice edits, deletes, reacts 🎉 and renames the group");
    // Both vanish if the page reloads; the resource timings list the history reads.
    bob.eval("window.e2eSamePage = true; performance.clearResourceTimings(); return true;")
        .await?;
    bob.set_offline(true).await?;
    bob.until_texts("offline", "#status", |t| t == ["offline"])
        .await?;
    let port = chatd.port;
    let token = chatd.token(1, "Alice")?;
    let group = conversation_named(port, &token, "Team")?;
    let lunch = message_with(port, &token, &group, "Lunch at noon?")?;
    let wrong = message_with(port, &token, &group, "Wrong chat, sorry")?;
    let welcome = message_with(port, &token, &group, "Welcome to Team")?;
    let edit = json!({"content": "Lunch at one?"});
    call(
        port,
        &token,
        "PATCH",
        &format!("/api/v1/messages/{lunch}"),
        Some(&edit),
    )?;
    call(
        port,
        &token,
        "DELETE",
        &format!("/api/v1/messages/{wrong}"),
        None,
    )?;
    let party = percent_encode("🎉");
    let path = format!("/api/v1/messages/{welcome}/reactions/{party}");
    call(port, &token, "PUT", &path, None)?;
    let rename = json!({"name": "Team Rocket"});
    call(
        port,
        &token,
        "PATCH",
        &format!("/api/v1/conversations/{group}"),
        Some(&rename),
    )?;
    alice
        .until_texts("the new name, live", "#conv-title", |t| {
            t == ["Team Rocket"]
        })
        .await?;
    // Offline, nothing reaches Bob's page: it closed its socket and opens none.
    let shown = bob.texts(".msg:not(.system) .text").await?;
    let title = bob.texts("#conv-title").await?;
    if shown != before || title != ["Team"] {
        bail!("bob: changes reached the page while offline: {shown:?} under {title:?}");
    }
    bob.screenshot("07-offline").await?;

    step("Bob is back online: his page resumes from its token and shows it all, without a reload");
    bob.set_offline(false).await?;
    bob.until_texts("online again", "#status", |t| t == ["online"])
        .await?;
    bob.until_messages(&["Welcome to Team", "Lunch at one?"])
        .await?;
    bob.until_texts("the edited marker", ".msg .edited", |t| t == ["(edited)"])
        .await?;
    bob.until_texts("the 🎉 reaction", ".msg:not(.system) .reaction", |t| {
        t == ["🎉 1"]
    })
    .await?;
    bob.until_texts("the new name", "#conv-title", |t| t == ["Team Rocket"])
        .await?;
    bob.until_texts(
        "the new name in the inbox",
        ".inbox-item.active .inbox-title",
        |t| t.iter().any(|t| t.starts_with("Team Rocket")),
    )
    .await?;
    bob.screenshot("07-resumed").await?;
    let seen = bob.eval(CONNECTION_FACTS).await?;
    println!("e2e: Bob's page after the resume: {seen}");
    let last = &seen["last"];
    let since = last["since"].as_str().unwrap_or_default();
    if seen["samePage"] != true {
        bail!("bob: the page was reloaded: {seen}");
    }
    if !is_sync_token(since) || last["resumed"] != true {
        bail!("bob: the reconnect did not resume from a token: {seen}");
    }
    // The edit, the delete, the reaction and the rename, at least.
    if last["replayed"].as_u64().unwrap_or(0) < 4 {
        bail!("bob: the resume replayed too little: {seen}");
    }
    if seen["historyReads"] != json!([]) {
        bail!("bob: the page re-read the history instead of applying the replay: {seen}");
    }
    let moved = position_of(seen["token"].as_str().unwrap_or_default())
        .zip(position_of(since))
        .is_some_and(|(now, then)| now > then);
    if !moved {
        bail!("bob: the sync token did not move past the replay: {seen}");
    }

    step("a token the server cannot resume from: Bob's page reloads what it shows, then goes on");
    bob.set_offline(true).await?;
    bob.until_texts("offline", "#status", |t| t == ["offline"])
        .await?;
    // The same position in another deployment's feed: the server answers
    // sync_token_expired, then a fresh token.
    bob.eval(
        "const live = window.chatLive; \
         live.syncToken = live.syncToken.replace(/^v1\\.[0-9a-f]{32}\\./, `v1.${'0'.repeat(32)}.`); \
         performance.clearResourceTimings(); \
         document.getElementById('toast').textContent = ''; \
         return live.syncToken;",
    )
    .await?;
    let text = json!({"content": "Back to work"});
    let path = format!("/api/v1/conversations/{group}/messages");
    call(port, &token, "POST", &path, Some(&text))?;
    bob.set_offline(false).await?;
    bob.until_texts("online again", "#status", |t| t == ["online"])
        .await?;
    bob.until_messages(&["Welcome to Team", "Lunch at one?", "Back to work"])
        .await?;
    let seen = bob.eval(CONNECTION_FACTS).await?;
    println!("e2e: Bob's page after the expired token: {seen}");
    let last = &seen["last"];
    let since = last["since"].as_str().unwrap_or_default();
    let token_now = seen["token"].as_str().unwrap_or_default();
    if seen["samePage"] != true {
        bail!("bob: the page was reloaded: {seen}");
    }
    if !since.starts_with(&format!("v1.{}.", "0".repeat(32))) || last["resumed"] != false {
        bail!("bob: the foreign token was not refused: {seen}");
    }
    if !is_sync_token(token_now) || token_now.starts_with("v1.000000") {
        bail!("bob: the page did not take the fresh token: {seen}");
    }
    if seen["historyReads"].as_array().is_none_or(Vec::is_empty) {
        bail!("bob: the page did not reload the conversation: {seen}");
    }
    if seen["toast"] != "" {
        bail!("bob: the expired token was shown to the user: {seen}");
    }
    Ok(())
}

/// What the page's connection tells (`live.js`): its last connection, its sync token, the
/// history reads since the timings were cleared, the toast, and whether the page is the
/// one marked before going offline.
const CONNECTION_FACTS: &str = "const live = window.chatLive; \
    return { \
      samePage: window.e2eSamePage === true, \
      last: live.connections[live.connections.length - 1], \
      token: live.syncToken, \
      historyReads: performance.getEntriesByType('resource').map((e) => e.name) \
        .filter((name) => name.includes('/messages?')), \
      toast: document.getElementById('toast').textContent, \
    };";

/// Whether `text` has the shape of a sync token, `v1.<32 hex digits>.<position>`.
fn is_sync_token(text: &str) -> bool {
    let mut parts = text.split('.');
    parts.next() == Some("v1")
        && parts
            .next()
            .is_some_and(|feed| feed.len() == 32 && feed.bytes().all(|b| b.is_ascii_hexdigit()))
        && position_of(text).is_some()
        && parts.count() == 1
}

/// The position a sync token names (its last part).
fn position_of(token: &str) -> Option<u64> {
    token.rsplit_once('.').and_then(|(_, pos)| pos.parse().ok())
}

/// `text` as one URL path segment (every byte but the unreserved ones as `%XX`).
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// One REST call that must succeed (2xx): its JSON answer.
fn call(port: u16, token: &str, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
    let (status, reply) = http(port, method, path, Some(token), body)?;
    if !(200..300).contains(&status) {
        bail!("{method} {path} answered {status}: {reply}");
    }
    Ok(reply)
}

/// The id of the caller's conversation named `name`.
fn conversation_named(port: u16, token: &str, name: &str) -> Result<String> {
    let inbox = call(port, token, "GET", "/api/v1/conversations", None)?;
    inbox["items"]
        .as_array()
        .and_then(|items| items.iter().find(|c| c["name"] == name))
        .and_then(|c| c["id"].as_str())
        .map(str::to_owned)
        .with_context(|| format!("no conversation named {name:?} in {inbox}"))
}

/// The id of the newest message of `conversation` whose text is `content`.
fn message_with(port: u16, token: &str, conversation: &str, content: &str) -> Result<String> {
    let path = format!("/api/v1/conversations/{conversation}/messages?limit=50");
    let history = call(port, token, "GET", &path, None)?;
    history["items"]
        .as_array()
        .and_then(|items| items.iter().rev().find(|m| m["content"] == content))
        .and_then(|m| m["id"].as_str())
        .map(str::to_owned)
        .with_context(|| format!("no message {content:?} in {history}"))
}

fn step(title: &str) {
    println!("e2e: {title}");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection the server keeps open: it hands out `data` a few bytes at a time,
    /// then would block (as a read timeout does) instead of ending.
    struct KeptOpen {
        data: Vec<u8>,
        at: usize,
    }

    impl std::io::Read for KeptOpen {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.at == self.data.len() {
                return Err(std::io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(5).min(self.data.len() - self.at);
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    #[test]
    fn a_response_ends_at_its_content_length_or_at_the_end_of_the_stream() {
        let data = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{\"a\":\"\xc3\xa9\"}".to_vec();
        let mut open = KeptOpen { data, at: 0 };
        let sized = read_response(&mut open).unwrap();
        assert!(sized.ends_with("{\"a\":\"é\"}"), "{sized}");
        // Without a length, the body ends with the stream.
        let mut closed = std::io::Cursor::new(b"HTTP/1.1 200 OK\r\n\r\n[1]".to_vec());
        assert!(read_response(&mut closed).unwrap().ends_with("[1]"));
        // A kept-open connection without a length is an error (the read timeout), not a hang.
        let data = b"HTTP/1.1 200 OK\r\n\r\n[1]".to_vec();
        assert!(read_response(&mut KeptOpen { data, at: 0 }).is_err());
    }

    #[test]
    fn percent_encode_keeps_unreserved_and_encodes_the_rest() {
        assert_eq!(percent_encode("🎉"), "%F0%9F%8E%89");
        assert_eq!(percent_encode("a-b_c.d~e"), "a-b_c.d~e");
        assert_eq!(percent_encode("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn sync_tokens_are_recognised_by_shape() {
        let feed = "0123456789abcdef0123456789abcdef";
        assert!(is_sync_token(&format!("v1.{feed}.42")));
        assert_eq!(position_of(&format!("v1.{feed}.42")), Some(42));
        assert!(!is_sync_token(&format!("v2.{feed}.42")));
        assert!(!is_sync_token(&format!("v1.{feed}.")));
        assert!(!is_sync_token("v1.abc.42"));
        assert!(!is_sync_token(&format!("v1.{feed}.42.1")));
        assert!(!is_sync_token(""));
    }

    #[test]
    fn once_counts_exact_matches() {
        let texts = ["a".to_owned(), "b".to_owned(), "a b".to_owned()];
        assert!(once(&texts, "a"));
        assert!(!once(&texts, "c"));
        let doubled = ["a".to_owned(), "a".to_owned()];
        assert!(!once(&doubled, "a"));
    }
}
