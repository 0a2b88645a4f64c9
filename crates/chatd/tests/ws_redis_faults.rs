//! Redis is for fan-out only: a node starts and serves while Redis is unreachable, joins
//! the bridge when it answers, and whenever events from other nodes may have been lost (a
//! frozen Redis, a publish dropped on the way) its clients are told to catch up (1012)
//! within seconds. Faults are injected by chat-test-support's `FaultProxy` between the
//! nodes and the shared Redis, so that no other Redis client is disturbed.

mod ws_support;

use std::net::{SocketAddr, ToSocketAddrs as _};
use std::time::{Duration, Instant};

use chat_realtime::RedisSettings;
use chat_test_support::proxy::{Cut, FaultProxy};
use chatd::Storage;
use serde_json::Value;
use ws_support::{
    Node, WAIT, WsClient, redis_or_skip, spawn_node_on, spawn_node_unready, test_config, token,
};

/// How long a client may wait to be told to catch up after events were lost.
const CATCH_UP_WITHIN: Duration = Duration::from_secs(6);

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

/// Sends from `from` until `to` receives a `message.created` within a short wait: the
/// direction `from` → `to` works (a publishing connection may need a moment to come back).
async fn delivery_resumes(
    from: &Node,
    sender: i64,
    to: &mut WsClient,
    group: chat_domain::ConversationId,
) {
    for attempt in 0..50 {
        from.say(sender, group, &format!("probe {attempt}")).await;
        let next = tokio::time::timeout(Duration::from_millis(300), to.expect("message.created"));
        if next.await.is_ok() {
            return;
        }
    }
    panic!("events from one node never reached the other again");
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

    // Its own sockets get events.
    let group = a.group(1, &[2]).await;
    let mut bob_on_a = a.connect(2).await;
    a.say(1, group, "local").await;
    assert_eq!(
        bob_on_a.expect("message.created").await["message"]["content"],
        "local"
    );

    // Redis returns: A joins the bridge, tells its clients (who may have missed events of
    // other nodes) to catch up, and cross-node delivery works both ways.
    let b = spawn_node_on(store, test_config(), Some(redis)).await;
    proxy.unfreeze();
    assert!(a.realtime.wait_ready(WAIT).await, "A subscribed");
    bob_on_a.expect_close(1012).await;
    let mut bob_on_a = a.connect(2).await;
    delivery_resumes(&b, 1, &mut bob_on_a, group).await;
    let mut alice_on_b = b.connect(1).await;
    delivery_resumes(&a, 2, &mut alice_on_b, group).await;
    let (status, ready) = get(&a, "/readyz").await;
    assert_eq!(
        (status, &ready["status"]),
        (200, &Value::from("ok")),
        "{ready}"
    );

    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_makes_clients_of_other_nodes_catch_up_within_seconds() {
    let Some(redis) = redis_or_skip().await else {
        return;
    };
    let (proxy, through_proxy) = proxied(&redis).await;
    let store = Storage::memory();
    let a = spawn_node_on(store.clone(), test_config(), Some(through_proxy.clone())).await;
    // Created before B exists, so that its events cannot reach B's clients late.
    let group = a.group(1, &[2]).await;
    let b = spawn_node_on(store, test_config(), Some(through_proxy)).await;
    let mut bob_on_b = b.connect(2).await;
    a.say(1, group, "before").await;
    assert_eq!(
        bob_on_b.expect("message.created").await["message"]["content"],
        "before"
    );

    proxy.freeze();
    let frozen_at = Instant::now();
    for text in ["one", "two", "three"] {
        // Sends succeed (Redis is best effort); they cannot reach B.
        a.say(1, group, text).await;
    }
    bob_on_b.expect_close(1012).await;
    assert!(
        frozen_at.elapsed() < CATCH_UP_WITHIN,
        "told to catch up after {:?}",
        frozen_at.elapsed()
    );
    let status = b.realtime.fanout().bridge_status().expect("a bridge");
    assert!(!status.subscribed, "{status:?}");
    assert!(status.subscriptions_lost >= 1, "{status:?}");

    proxy.unfreeze();
    assert!(b.realtime.wait_ready(WAIT).await, "B subscribed again");
    let mut bob_on_b = b.connect(2).await;
    delivery_resumes(&a, 1, &mut bob_on_b, group).await;

    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_dropped_on_the_way_to_redis_makes_clients_of_other_nodes_catch_up() {
    let Some(redis) = redis_or_skip().await else {
        return;
    };
    let (proxy, through_proxy) = proxied(&redis).await;
    let store = Storage::memory();
    let a = spawn_node_on(store.clone(), test_config(), Some(through_proxy)).await;
    // Created before B exists, so that its events cannot reach B's clients late.
    let group = a.group(1, &[2]).await;
    let b = spawn_node_on(store, test_config(), Some(redis)).await;
    let mut bob_on_b = b.connect(2).await;
    a.say(1, group, "before").await;
    assert_eq!(
        bob_on_b.expect("message.created").await["message"]["content"],
        "before"
    );

    // The pipeline carrying this event is cut before it reaches Redis.
    proxy.cut_on(b"dropped-on-the-way", Cut::BeforeForwarding);
    let sent_at = Instant::now();
    a.say(1, group, "dropped-on-the-way").await;
    bob_on_b.expect_close(1012).await;
    assert!(
        sent_at.elapsed() < CATCH_UP_WITHIN,
        "told to catch up after {:?}",
        sent_at.elapsed()
    );
    assert_eq!(proxy.cuts(), 1);
    let dropped = a.realtime.fanout().bridge_status().expect("a bridge");
    assert!(dropped.events_dropped >= 1, "{dropped:?}");
    let seen = b.realtime.fanout().bridge_status().expect("a bridge");
    assert!(seen.gaps_detected >= 1, "{seen:?}");

    // And A's events reach B again.
    let mut bob_on_b = b.connect(2).await;
    delivery_resumes(&a, 1, &mut bob_on_b, group).await;

    a.stop().await;
    b.stop().await;
}
