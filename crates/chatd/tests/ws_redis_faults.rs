//! Redis carries only typing between nodes: a node starts and serves while Redis is
//! unreachable and joins the bridge when it answers; whatever Redis does (unreachable at
//! start, frozen, a publish dropped on the way), durable events reach the clients of every
//! node from the change feed, at once, and nobody is asked to reconnect; typing crosses
//! the nodes again once Redis is back. Faults are injected by chat-test-support's
//! `FaultProxy` between the nodes and the shared Redis, so that no other Redis client is
//! disturbed.

mod ws_support;

use std::net::{SocketAddr, ToSocketAddrs as _};
use std::time::Duration;

use chat_realtime::RedisSettings;
use chat_test_support::proxy::{Cut, FaultProxy};
use chatd::Storage;
use serde_json::{Value, json};
use ws_support::{
    Node, WAIT, WsClient, redis_or_skip, spawn_node_on, spawn_node_unready, test_config, token,
    typing_crosses,
};

/// How long a durable event may take to reach a client of another node, whatever Redis
/// does (the relay waits at most a second between two looks at the feed).
const DELIVERED_WITHIN: Duration = Duration::from_secs(3);

/// A proxy in front of `redis`, and settings that go through it (same channel).
async fn proxied(redis: &RedisSettings) -> (FaultProxy, RedisSettings) {
    let mut url = url::Url::parse(&redis.url).expect("REDIS_URL");
    let upstream: SocketAddr = (
        url.host_str().unwrap_or("127.0.0.1"),
        url.port().unwrap_or(6379),
    )
        .to_socket_addrs()
        .expect("redis address")
        .next()
        .expect("an address");
    let proxy = FaultProxy::start(upstream).await.expect("proxy");
    url.set_port(Some(proxy.address().port())).expect("port");
    let settings = RedisSettings {
        url: url.to_string(),
        channel: redis.channel.clone(),
    };
    (proxy, settings)
}

/// `GET path` on `node` (with a token for user 1): the status and the body (JSON when it
/// is, else a string).
async fn get(node: &Node, path: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .get(node.http(path))
        .bearer_auth(token(1))
        .timeout(WAIT)
        .send()
        .await
        .expect("an answer");
    let status = response.status().as_u16();
    let text = response.text().await.expect("a body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// The next `message.created` of `client`, which must say `text` and come within
/// [`DELIVERED_WITHIN`].
async fn delivered(client: &mut WsClient, text: &str) -> Value {
    let created = tokio::time::timeout(DELIVERED_WITHIN, client.expect_created())
        .await
        .unwrap_or_else(|_| panic!("{text:?} not delivered within {DELIVERED_WITHIN:?}"));
    assert_eq!(created["message"]["content"], text, "{created:#}");
    created
}

/// Waits until `check` says so, or fails after [`WAIT`].
async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Passes over typing frames (retries still in flight), then proves nothing else is
/// pending (a send publishes no `conversation.read`) and the connection is open (no 1012).
async fn nothing_but_typing_pending(client: &mut WsClient) {
    client
        .send_json(json!({"type": "ping", "request_id": "check"}))
        .await;
    loop {
        let frame = client.next_json().await;
        if frame["type"] != "typing" {
            assert_eq!(frame, json!({"type": "pong", "request_id": "check"}));
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_starts_while_redis_is_unreachable_serves_and_joins_when_redis_returns() {
    let Some(redis) = redis_or_skip().await else {
        return;
    };
    let (proxy, through_proxy) = proxied(&redis).await;
    // A frozen proxy accepts connections and never answers: the worst unreachable Redis.
    proxy.freeze();
    let store = Storage::memory();
    let a = tokio::time::timeout(
        WAIT,
        spawn_node_unready(store.clone(), test_config(), Some(through_proxy)),
    )
    .await
    .expect("the node starts without Redis");

    // REST works, and says the bridge is degraded.
    let (status, ready) = get(&a, "/readyz").await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert_eq!(ready["redis"]["subscribed"], false, "{ready}");
    let (status, listed) = get(&a, "/api/v1/conversations").await;
    assert_eq!(status, 200, "{listed}");
    let (_, metrics) = get(&a, "/metrics").await;
    let metrics = metrics.as_str().expect("text").to_owned();
    assert!(
        metrics.contains("chat_redis_bridge_up{direction=\"subscribe\"} 0"),
        "{metrics}"
    );

    // Its own sockets get events, and so do they from another node, Redis or not.
    let group = a.group(1, &[2]).await;
    let mut bob_on_a = a.connect(2).await;
    a.say(1, group, "local").await;
    delivered(&mut bob_on_a, "local").await;
    let b = spawn_node_on(store, test_config(), Some(redis)).await;
    let mut alice_on_b = b.connect(1).await;
    b.say(1, group, "from B while A has no Redis").await;
    delivered(&mut bob_on_a, "from B while A has no Redis").await;
    delivered(&mut alice_on_b, "from B while A has no Redis").await;
    assert!(
        !a.realtime
            .fanout()
            .bridge_status()
            .expect("a bridge")
            .subscribed
    );

    // Redis returns: A joins the bridge without closing anyone, and typing crosses.
    proxy.unfreeze();
    assert!(a.realtime.wait_ready(WAIT).await, "A subscribed");
    typing_crosses(&mut alice_on_b, &mut bob_on_a, group).await;
    typing_crosses(&mut bob_on_a, &mut alice_on_b, group).await;
    nothing_but_typing_pending(&mut bob_on_a).await;
    nothing_but_typing_pending(&mut alice_on_b).await;
    let (status, ready) = get(&a, "/readyz").await;
    assert_eq!(
        (status, &ready["status"]),
        (200, &Value::from("ok")),
        "{ready}"
    );
    let (_, metrics) = get(&a, "/metrics").await;
    let metrics = metrics.as_str().expect("text").to_owned();
    assert!(
        metrics.contains("chat_redis_bridge_up{direction=\"subscribe\"} 1"),
        "{metrics}"
    );
    // The relay's position is shown beside the feed's head.
    assert!(
        metrics.contains("chat_feed_position{of=\"relayed\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("chat_feed_position{of=\"head\"}"),
        "{metrics}"
    );

    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_delays_no_durable_event_and_typing_comes_back() {
    let Some(redis) = redis_or_skip().await else {
        return;
    };
    let (proxy, through_proxy) = proxied(&redis).await;
    let store = Storage::memory();
    let a = spawn_node_on(store.clone(), test_config(), Some(through_proxy.clone())).await;
    let group = a.group(1, &[2]).await;
    let b = spawn_node_on(store, test_config(), Some(through_proxy)).await;
    let mut alice_on_a = a.connect(1).await;
    let mut bob_on_b = b.connect(2).await;
    a.say(1, group, "before").await;
    delivered(&mut bob_on_b, "before").await;
    typing_crosses(&mut alice_on_a, &mut bob_on_b, group).await;

    proxy.freeze();
    for text in ["one", "two", "three"] {
        a.say(1, group, text).await;
        // At once, from B's own relay: nothing waits for Redis.
        delivered(&mut bob_on_b, text).await;
    }
    // The frozen subscription is found out and reported, and nobody is closed for it.
    eventually("B sees its subscription is dead", || {
        let status = b.realtime.fanout().bridge_status().expect("a bridge");
        !status.subscribed && status.subscriptions_lost >= 1
    })
    .await;
    let (status, ready) = get(&b, "/readyz").await;
    assert_eq!(
        (status, &ready["status"]),
        (200, &Value::from("degraded")),
        "{ready}"
    );
    a.say(1, group, "while B knows Redis is gone").await;
    delivered(&mut bob_on_b, "while B knows Redis is gone").await;
    nothing_but_typing_pending(&mut bob_on_b).await;

    proxy.unfreeze();
    assert!(b.realtime.wait_ready(WAIT).await, "B subscribed again");
    typing_crosses(&mut alice_on_a, &mut bob_on_b, group).await;
    nothing_but_typing_pending(&mut bob_on_b).await;

    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typing_frame_dropped_on_the_way_to_redis_is_counted_and_closes_nobody() {
    let Some(redis) = redis_or_skip().await else {
        return;
    };
    let (proxy, through_proxy) = proxied(&redis).await;
    let store = Storage::memory();
    let a = spawn_node_on(store.clone(), test_config(), Some(through_proxy)).await;
    let group = a.group(1, &[2]).await;
    let b = spawn_node_on(store, test_config(), Some(redis)).await;
    let mut alice_on_a = a.connect(1).await;
    let mut bob_on_b = b.connect(2).await;
    a.say(1, group, "before").await;
    delivered(&mut bob_on_b, "before").await;
    // B knows where A's publish sequence stands (durable events do not number it).
    typing_crosses(&mut alice_on_a, &mut bob_on_b, group).await;

    // The pipeline carrying the next typing frame is cut before it reaches Redis.
    proxy.cut_on(b"is_typing", Cut::BeforeForwarding);
    alice_on_a
        .send_json(
            json!({"type": "typing", "conversation_id": group.to_string(), "is_typing": true}),
        )
        .await;
    eventually("A counts the frame it dropped", || {
        a.realtime
            .fanout()
            .bridge_status()
            .expect("a bridge")
            .events_dropped
            >= 1
    })
    .await;
    assert_eq!(proxy.cuts(), 1);
    // B sees the gap in A's publish sequence (A's next heartbeat or frame) and only
    // counts it: the lost frame was a typing indicator.
    eventually("B sees the gap", || {
        b.realtime
            .fanout()
            .bridge_status()
            .expect("a bridge")
            .gaps_detected
            >= 1
    })
    .await;
    a.say(1, group, "after").await;
    delivered(&mut bob_on_b, "after").await;
    typing_crosses(&mut alice_on_a, &mut bob_on_b, group).await;
    nothing_but_typing_pending(&mut bob_on_b).await;

    a.stop().await;
    b.stop().await;
}
