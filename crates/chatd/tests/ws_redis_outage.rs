//! Losing Redis for a moment: durable events keep reaching the clients of both nodes
//! (each node publishes them from the shared change feed, not through Redis), nobody is
//! asked to reconnect, and once the node has resubscribed typing crosses the nodes again.
//! The cut is made by a TCP proxy between that node and Redis, so that no other Redis
//! client (another test, another process) is disturbed.

mod ws_support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chat_realtime::RedisSettings;
use chatd::Storage;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use ws_support::{WAIT, WsClient, redis_or_skip, spawn_node_on, test_config, typing_crosses};

/// Forwards TCP connections to `upstream`; [`Proxy::down`] drops them all and refuses new
/// ones until [`Proxy::up`].
struct Proxy {
    port: u16,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
    down: Arc<AtomicBool>,
    accept: JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let registry = links.clone();
        let down = Arc::new(AtomicBool::new(false));
        let refusing = down.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if refusing.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
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
            down,
            accept,
        }
    }

    /// Drops every open connection and refuses new ones: Redis is gone for this node.
    fn down(&self) {
        self.down.store(true, Ordering::SeqCst);
        for link in self.links.lock().expect("lock").drain(..) {
            link.abort();
        }
    }

    /// Accepts connections again.
    fn up(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}

/// Passes over the typing frames still coming from the retries of [`typing_crosses`],
/// then proves nothing else is pending.
async fn drain_typing_then_nothing_pending(client: &mut WsClient) {
    let marker = json!({"type": "ping", "request_id": "drain"});
    client.send_json(marker).await;
    loop {
        let frame = client.next_json().await;
        match frame["type"].as_str() {
            Some("typing") => {}
            _ => {
                assert_eq!(frame, json!({"type": "pong", "request_id": "drain"}));
                return;
            }
        }
    }
}

/// Waits until `check` says so, or fails after [`WAIT`].
async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_loses_redis_keeps_every_durable_event_and_gets_typing_back() {
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
    let mut alice_on_b = b.connect(1).await;
    b.say(1, group, "before").await;
    assert_eq!(
        bob_on_a.expect_created().await["message"]["content"],
        "before"
    );
    assert_eq!(
        alice_on_b.expect_created().await["message"]["content"],
        "before"
    );
    typing_crosses(&mut alice_on_b, &mut bob_on_a, group).await;

    proxy.down();
    let bridge_of_a = || a.realtime.fanout().bridge_status().expect("a bridge");
    eventually("A notices its subscription is gone", || {
        let status = bridge_of_a();
        status.subscriptions_lost >= 1 && !status.subscribed
    })
    .await;
    // Durable events go on both ways, from each node's relay, to the same sockets.
    b.say(1, group, "during, from B").await;
    a.say(2, group, "during, from A").await;
    for client in [&mut bob_on_a, &mut alice_on_b] {
        let first = client.expect_created().await;
        let second = client.expect_created().await;
        assert_eq!(first["message"]["content"], "during, from B");
        assert_eq!(second["message"]["content"], "during, from A");
        assert!(
            first["pos"].as_u64().unwrap() < second["pos"].as_u64().unwrap(),
            "{first} {second}"
        );
    }
    assert!(
        !bridge_of_a().subscribed,
        "Redis was still out for A meanwhile"
    );
    // Typing is what an outage costs: B's does not reach A.
    alice_on_b
        .send_json(
            json!({"type": "typing", "conversation_id": group.to_string(), "is_typing": true}),
        )
        .await;
    let nothing = tokio::time::timeout(Duration::from_millis(300), bob_on_a.next_json()).await;
    assert!(
        nothing.is_err(),
        "typing crossed without Redis: {nothing:?}"
    );
    proxy.up();

    // A subscribes again; typing crosses both ways again.
    assert!(a.realtime.wait_ready(WAIT).await, "A subscribed again");
    typing_crosses(&mut alice_on_b, &mut bob_on_a, group).await;
    typing_crosses(&mut bob_on_a, &mut alice_on_b, group).await;
    b.say(1, group, "after").await;
    for client in [&mut bob_on_a, &mut alice_on_b] {
        // Typing frames still in flight from the retries are passed over.
        let created = client.expect_created().await;
        assert_eq!(created["message"]["content"], "after");
    }
    // Nobody was asked to reconnect (a close frame would have failed a read above) and
    // no event came twice.
    for client in [&mut bob_on_a, &mut alice_on_b] {
        drain_typing_then_nothing_pending(client).await;
    }
    assert_eq!(
        a.realtime.fanout().bridge_status().map(|s| s.subscribed),
        Some(true)
    );

    proxy.accept.abort();
    a.stop().await;
    b.stop().await;
}
