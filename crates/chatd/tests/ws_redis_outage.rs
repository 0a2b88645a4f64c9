//! Losing Redis for a moment: a node whose connections to Redis are cut resubscribes,
//! tells its clients to catch up (1012), and both directions of the bridge work again.
//! The cut is made by a TCP proxy between that node and Redis, so that no other Redis
//! client (another test, another process) is disturbed.

mod ws_support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chat_realtime::RedisSettings;
use chatd::Storage;
use futures::StreamExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use ws_support::{WAIT, redis_or_skip, spawn_node_on, test_config};

/// Forwards TCP connections to `upstream` until [`Proxy::cut`] drops them all.
struct Proxy {
    port: u16,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let registry = links.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let link = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                registry.lock().expect("lock").push(link);
            }
        });
        Self {
            port,
            links,
            accept,
        }
    }

    /// Drops every open connection (new ones are still accepted).
    fn cut(&self) {
        for link in self.links.lock().expect("lock").drain(..) {
            link.abort();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_loses_redis_recovers_and_asks_its_clients_to_catch_up() {
    let Some(redis) = redis_or_skip().await else {
        return;
    };
    let mut url = url::Url::parse(&redis.url).unwrap();
    let upstream = format!(
        "{}:{}",
        url.host_str().unwrap_or("127.0.0.1"),
        url.port().unwrap_or(6379)
    );
    let proxy = Proxy::start(upstream).await;
    url.set_port(Some(proxy.port)).unwrap();
    let proxied = RedisSettings {
        url: url.to_string(),
        channel: redis.channel.clone(),
    };

    let store = Storage::memory_with(chat_test_support::key_ring::cipher());
    let a = spawn_node_on(store.clone(), test_config(), Some(proxied)).await;
    let b = spawn_node_on(store, test_config(), Some(redis)).await;
    let group = a.group(1, &[2]).await;
    let mut bob_on_a = a.connect(2).await;
    b.say(1, group, "before").await;
    assert_eq!(
        bob_on_a.expect("message.created").await["message"]["content"],
        "before"
    );

    proxy.cut();
    // A notices, resubscribes, and asks its clients to reconnect and catch up.
    bob_on_a.expect_close(1012).await;
    assert!(a.realtime.wait_ready(WAIT).await, "A subscribed again");

    // B → A works again.
    let mut bob_on_a = a.connect(2).await;
    b.say(1, group, "after").await;
    assert_eq!(
        bob_on_a.expect("message.created").await["message"]["content"],
        "after"
    );

    // A → B works again once A's publishing connection has been re-established; sends made
    // meanwhile succeed all the same (publishing is best effort), and B, seeing the gap in
    // A's publish sequence, asks its clients to catch up (1012): they reconnect.
    let mut alice_on_b = b.connect(1).await;
    let mut delivered = false;
    for attempt in 0..50 {
        a.say(2, group, &format!("probe {attempt}")).await;
        bob_on_a.expect("message.created").await;
        let next = tokio::time::timeout(Duration::from_millis(200), alice_on_b.socket.next()).await;
        match next {
            Ok(Some(Ok(Message::Text(text)))) => {
                let frame: serde_json::Value = serde_json::from_str(&text).unwrap();
                if frame["type"] == "message.created" {
                    delivered = true;
                    break;
                }
            }
            Ok(Some(Ok(Message::Close(Some(close))))) => {
                assert_eq!(u16::from(close.code), 1012, "{close:?}");
                alice_on_b = b.connect(1).await;
            }
            _ => {}
        }
    }
    assert!(delivered, "events published on A reach B again");

    proxy.accept.abort();
    a.stop().await;
    b.stop().await;
}
