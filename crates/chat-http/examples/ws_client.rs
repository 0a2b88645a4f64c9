//! A tiny interactive WebSocket client for trying `/api/v1/ws` by hand.
//!
//! ```text
//! cargo run -p chat-http --example ws_client -- ws://127.0.0.1:8080/api/v1/ws "$TOKEN" [CONVERSATION_ID]
//! ```
//!
//! Each line read from stdin is sent: a line starting with `{` as a raw frame, any other
//! line as a `send` frame to CONVERSATION_ID. Every frame received is printed as `<< …`.
//! At the end of stdin the client waits `WS_CLIENT_LINGER` seconds (default 2) for
//! late events, then closes normally.

use std::time::Duration;

use anyhow::Context as _;
use futures::{SinkExt as _, StreamExt as _};
use serde_json::json;
use tokio::io::AsyncBufReadExt as _;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .context("usage: ws_client URL TOKEN [CONVERSATION_ID]")?;
    let token = args
        .next()
        .context("usage: ws_client URL TOKEN [CONVERSATION_ID]")?;
    let conversation = args.next();
    let linger: u64 = std::env::var("WS_CLIENT_LINGER")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);

    let mut request = url.into_client_request()?;
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}"))?,
    );
    let (socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .context("handshake")?;
    let (mut sink, mut stream) = socket.split();

    let printer = tokio::spawn(async move {
        while let Some(message) = stream.next().await {
            match message {
                Ok(Message::Text(text)) => println!("<< {text}"),
                Ok(Message::Close(frame)) => {
                    println!("<< close {frame:?}");
                    break;
                }
                Ok(_) => {}
                Err(err) => {
                    println!("<< error {err}");
                    break;
                }
            }
        }
    });

    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut request_id = 0;
    while let Some(line) = lines.next_line().await? {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let frame = if line.starts_with('{') {
            line.to_owned()
        } else {
            request_id += 1;
            let conversation = conversation
                .as_deref()
                .context("give a CONVERSATION_ID to send plain lines")?;
            json!({
                "type": "send",
                "request_id": request_id,
                "conversation_id": conversation,
                "content": line,
            })
            .to_string()
        };
        println!(">> {frame}");
        sink.send(Message::Text(frame)).await?;
    }
    tokio::time::sleep(Duration::from_secs(linger)).await;
    sink.send(Message::Close(None)).await.ok();
    tokio::time::timeout(Duration::from_secs(2), printer)
        .await
        .ok();
    Ok(())
}
