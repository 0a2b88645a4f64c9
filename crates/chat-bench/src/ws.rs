//! WebSocket clients for the scenarios: connect with a bearer token, wait for `ready`,
//! then report the arrival time of every `message.created` whose content is a bench tag.

use std::time::Instant;

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// An arrival: which tagged message, when.
pub(crate) type Arrival = (usize, Instant);

/// Parses the index out of a bench tag `"<prefix> <index>"`.
pub(crate) fn tag_index(content: &str, prefix: &str) -> Option<usize> {
    content.strip_prefix(prefix)?.trim().parse().ok()
}

/// Opens an authenticated socket to chatd and waits for `ready`.
pub(crate) async fn connect_chatd(
    url: &str,
    token: &str,
) -> anyhow::Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
> {
    let mut request = url.into_client_request()?;
    request
        .headers_mut()
        .insert("Authorization", format!("Bearer {token}").parse()?);
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .context("WebSocket handshake")?;
    let deadline = tokio::time::Duration::from_secs(30);
    loop {
        let frame = tokio::time::timeout(deadline, socket.next())
            .await
            .context("no ready frame in 30 s")?
            .context("socket closed before ready")??;
        if let Message::Text(text) = frame {
            let value: serde_json::Value = serde_json::from_str(&text)?;
            match value["type"].as_str() {
                Some("ready") => return Ok(socket),
                Some("error") => bail!("auth refused: {text}"),
                _ => {}
            }
        }
    }
}

/// Reads a chatd socket until it closes, reporting tagged `message.created` arrivals.
pub(crate) fn watch_chatd<S>(
    mut socket: S,
    prefix: &'static str,
    arrivals: mpsc::UnboundedSender<Arrival>,
) where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
        + futures::Sink<Message>
        + Unpin
        + Send
        + 'static,
{
    tokio::spawn(async move {
        while let Some(Ok(frame)) = socket.next().await {
            match frame {
                Message::Text(text) => {
                    let now = Instant::now();
                    if !text.contains("message.created") {
                        continue;
                    }
                    let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) else {
                        continue;
                    };
                    if value["type"] == "message.created" {
                        if let Some(index) = value["message"]["content"]
                            .as_str()
                            .and_then(|c| tag_index(c, prefix))
                        {
                            let _ = arrivals.send((index, now));
                        }
                    }
                }
                Message::Ping(payload) => {
                    let _ = socket.send(Message::Pong(payload)).await;
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
    });
}
