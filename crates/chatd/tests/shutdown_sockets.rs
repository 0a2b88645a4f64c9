//! SIGTERM with connections open: the real `chatd` binary, given a shutdown timeout far
//! longer than its stop needs (60 s), closes each authenticated WebSocket with 1001, ends
//! its TCP connection once the close handshake is done, ends an idle keep-alive HTTP
//! connection too, and exits well before the timeout: open connections do not hold the
//! stop. Run on the in-memory store, and on a fresh MySQL database (its store shutdown
//! included) when the test server answers.
#![allow(clippy::unwrap_used)]

mod fresh_shell;

use std::process::{Child, Command, ExitStatus};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chat_test_support::process::spawn_announced;

use chat_domain::UserId;
use chat_http::{MintClaims, mint_hs256};
use chatd::config::DEV_SECRET;
use futures::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The shutdown timeout the server is given: far more than its stop needs.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(60);
/// Well before the timeout: a stop that waited for the timeout, or for every connection's
/// own timer, fails this.
const PROMPT: Duration = Duration::from_secs(15);
/// The WebSocket close timeout (`WsConfig::close_timeout`'s default): a server that ends a
/// connection only once it has passed did not end it after the close handshake.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// actix-web's HTTP keep-alive, which chatd keeps: an idle connection that the stop left
/// open would be ended by its own timer this long after its last answer.
const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// How long one step of the clients may take before the test fails.
const WAIT: Duration = Duration::from_secs(30);
/// How many WebSockets are open at the SIGTERM (one user each).
const SOCKETS: i64 = 4;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_sigterm_closes_open_websockets_and_exits_well_before_the_shutdown_timeout() {
    sigterm_with_connections_open("memory:").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_mysql_sigterm_closes_open_websockets_and_exits_well_before_the_shutdown_timeout() {
    let Some(db) = chat_test_support::mysql::fresh_database(
        "the SIGTERM-with-open-WebSockets test on MySQL is SKIPPED",
        2,
    )
    .await
    else {
        return;
    };
    sigterm_with_connections_open(&chat_test_support::mysql::database_url(&db.name)).await;
    db.finish().await;
}

/// Opens [`SOCKETS`] authenticated WebSockets and an idle keep-alive HTTP connection to a
/// fresh `chatd` on `database_url`, sends it SIGTERM, and checks how each connection and
/// the process end.
async fn sigterm_with_connections_open(database_url: &str) {
    let mut process = Process::start(database_url);
    let mut sockets = Vec::new();
    for user in 1..=SOCKETS {
        sockets.push(connect(&process.address, user).await);
    }
    let idle = keep_alive_connection(&process.address).await;

    process.terminate();
    let signalled = Instant::now();
    let closings: Vec<_> = sockets
        .into_iter()
        .map(|socket| tokio::spawn(closed_by_server(socket)))
        .collect();
    let idle_end = tokio::spawn(async move {
        let mut idle = idle;
        let mut byte = [0_u8; 1];
        let read = tokio::time::timeout(WAIT, idle.read(&mut byte)).await;
        (read.map(|read| read.map_err(|e| e.kind())), Instant::now())
    });
    let exit = process.wait_exit(WAIT).await;
    let stopped = signalled.elapsed();
    let log = process.log();

    for (n, closing) in closings.into_iter().enumerate() {
        let (code, ended) = closing.await.unwrap();
        assert_eq!(code, 1001, "socket {n} closed with 1001\n{log}");
        let ended = ended
            .unwrap_or_else(|| panic!("socket {n}: the server kept the TCP connection\n{log}"));
        assert!(
            ended.duration_since(signalled) < CLOSE_TIMEOUT,
            "socket {n}: the server ended the TCP connection {:?} after SIGTERM, not after the close \
             handshake\n{log}",
            ended.duration_since(signalled)
        );
    }
    let (read, ended) = idle_end.await.unwrap();
    assert!(
        matches!(read, Ok(Ok(0) | Err(std::io::ErrorKind::ConnectionReset))),
        "the idle keep-alive connection is ended by the server: {read:?}\n{log}"
    );
    // Ended by the stop, not by its keep-alive timer (which a graceful actix stop waits
    // for, once a second, holding the process that long).
    assert!(
        ended.duration_since(signalled) < KEEP_ALIVE / 2,
        "the idle connection ended {:?} after SIGTERM\n{log}",
        ended.duration_since(signalled)
    );
    let exit = exit.unwrap_or_else(|| panic!("chatd still runs {WAIT:?} after SIGTERM\n{log}"));
    assert!(exit.success(), "a graceful stop exits 0: {exit:?}\n{log}");
    eprintln!(
        "chatd ({database_url}) exited {stopped:?} after SIGTERM; idle connection ended after {:?}",
        ended.duration_since(signalled)
    );
    assert!(
        stopped < PROMPT,
        "chatd took {stopped:?} to stop with a {SHUTDOWN_TIMEOUT:?} shutdown timeout\n{log}"
    );
}

/// A running `chatd serve --dev` (killed when dropped), its address and its stderr lines.
struct Process {
    child: Child,
    address: String,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Process {
    fn start(database_url: &str) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_chatd"));
        command.args(["serve", "--dev", "--bind", "127.0.0.1:0"]);
        for name in fresh_shell::CHATD_SETTINGS {
            command.env_remove(name);
        }
        command
            .env("DATABASE_URL", database_url)
            .env(
                "CHAT_SHUTDOWN_TIMEOUT",
                SHUTDOWN_TIMEOUT.as_secs().to_string(),
            )
            // Connections spread over two workers, as on a small production machine.
            .env("CHAT_WORKERS", "2")
            .env("RUST_LOG", "info")
            .envs(chat_test_support::key_ring::chatd_env());
        let (child, announced) = spawn_announced(&mut command, WAIT);
        Self {
            child,
            address: announced.address,
            lines: announced.lines,
            seen: announced.seen,
        }
    }

    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM");
    }

    /// The exit status, once the process has exited (within `wait`).
    async fn wait_exit(&mut self, wait: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// What the process logged so far, from the stop signal on (for failure messages).
    fn log(&mut self) -> String {
        self.seen.extend(self.lines.try_iter());
        self.seen
            .iter()
            .skip_while(|line| !line.contains("stop signal received"))
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
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

/// A WebSocket of `user`, authenticated by its handshake, past its `ready`.
async fn connect(address: &str, user: i64) -> Socket {
    let mut request = format!("ws://{address}/api/v1/ws")
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {}", token(user))).unwrap(),
    );
    let stream = TcpStream::connect(address).await.unwrap();
    let (mut socket, _) = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream)),
    )
    .await
    .unwrap()
    .unwrap();
    loop {
        let frame = tokio::time::timeout(WAIT, socket.next())
            .await
            .expect("ready in time")
            .expect("the socket is open")
            .unwrap();
        if let Message::Text(text) = frame {
            let frame: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(frame["type"], "ready", "{frame:#}");
            return socket;
        }
    }
}

/// Reads `socket` to the server's close frame and answers it (the close handshake); then
/// reads the TCP connection underneath until the server ends it. The close code, and when
/// the connection ended (`None` if it did not within [`WAIT`]).
async fn closed_by_server(mut socket: Socket) -> (u16, Option<Instant>) {
    let code = loop {
        match tokio::time::timeout(WAIT, socket.next())
            .await
            .expect("a close frame in time")
        {
            Some(Ok(Message::Close(frame))) => {
                break frame.map_or(1005, |frame| u16::from(frame.code));
            }
            Some(Ok(_)) => {}
            other => panic!("the socket ended without a close frame: {other:?}"),
        }
    };
    // tungstenite has queued its answering close frame: this sends it. (It then reports
    // the handshake complete, as an error.)
    let _ = socket.flush().await;
    let stream = socket.get_mut();
    let mut rest = [0_u8; 64];
    let ended = match tokio::time::timeout(WAIT, stream.read(&mut rest)).await {
        Ok(Ok(0)) => Some(Instant::now()),
        Ok(Err(err)) if err.kind() == std::io::ErrorKind::ConnectionReset => Some(Instant::now()),
        Ok(other) => panic!("bytes after the close frame: {other:?}"),
        Err(_) => None,
    };
    (code, ended)
}

/// A connection that made one request and stays open, idle (HTTP/1.1 keep-alive).
async fn keep_alive_connection(address: &str) -> TcpStream {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream
        .write_all(format!("GET /healthz HTTP/1.1\r\nHost: {address}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = Vec::new();
    let mut chunk = [0_u8; 1024];
    loop {
        let read = tokio::time::timeout(WAIT, stream.read(&mut chunk))
            .await
            .expect("an answer in time")
            .unwrap();
        assert!(read > 0, "the connection stays open after its answer");
        response.extend_from_slice(&chunk[..read]);
        let text = String::from_utf8_lossy(&response);
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        let length: usize = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().unwrap())
            })
            .expect("a Content-Length");
        if body.len() >= length {
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            assert!(
                !head.to_ascii_lowercase().contains("connection: close"),
                "{head}"
            );
            return stream;
        }
    }
}
