//! Two nodes sharing one store and one Redis: what a client on node A does reaches, in
//! order, a client on node B, and membership changes made on A are honoured on B.

mod ws_support;

use serde_json::json;
use ws_support::{redis_or_skip, shared_store, spawn_node_on, test_config, token, uid};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_events_in_order_and_honour_membership() {
    let Some(redis) = redis_or_skip().await else {
        return;
    };
    let store = shared_store().await;
    eprintln!(
        "two nodes over the {} store, channel {}",
        store.backend, redis.channel
    );
    let a = spawn_node_on(store.first.clone(), test_config(), Some(redis.clone())).await;
    let b = spawn_node_on(store.second.clone(), test_config(), Some(redis)).await;
    let group = a.group(1, &[2]).await;
    let direct = a
        .service
        .open_direct(uid(1), uid(2))
        .await
        .expect("direct conversation")
        .item
        .details
        .conversation
        .id;

    let mut alice = a.connect(1).await;
    let mut alice_on_b = b.connect(1).await;
    let mut bob = b.connect(2).await;

    // A burst sent on A arrives on B in order (and once on A).
    for i in 0..30 {
        alice
            .send_json(json!({"type": "send", "request_id": i, "conversation_id": group.to_string(), "content": format!("m{i}")}))
            .await;
    }
    for client in [&mut bob, &mut alice_on_b] {
        let mut last_seq = 0;
        for i in 0..30 {
            let event = client.expect("message.created").await;
            assert_eq!(event["message"]["content"], format!("m{i}"));
            let seq = event["message"]["seq"].as_i64().unwrap();
            assert!(seq > last_seq, "seq {seq} after {last_seq}");
            last_seq = seq;
        }
    }
    let mut acks = Vec::new();
    for _ in 0..60 {
        let frame = alice.next_json().await;
        match frame["type"].as_str() {
            Some("ack") => acks.push(frame["request_id"].as_i64().unwrap()),
            Some("message.created") => {}
            _ => panic!("unexpected {frame:#}"),
        }
    }
    assert_eq!(acks, (0..30).collect::<Vec<_>>());
    alice.expect_nothing_pending().await;

    // B to A, and typing across nodes.
    bob.send_json(
        json!({"type": "typing", "conversation_id": group.to_string(), "is_typing": true}),
    )
    .await;
    let typing = alice.expect("typing").await;
    assert_eq!(typing["user_id"], 2);
    assert_eq!(alice_on_b.expect("typing").await["user_id"], 2);
    b.say(2, group, "from b").await;
    assert_eq!(
        alice.expect("message.created").await["message"]["content"],
        "from b"
    );
    assert_eq!(
        alice_on_b.expect("message.created").await["message"]["content"],
        "from b"
    );
    assert_eq!(
        bob.expect("message.created").await["message"]["content"],
        "from b"
    );

    // Bob is removed on A (through the REST API): B stops delivering the group to him.
    let http = reqwest::Client::new();
    let removed = http
        .delete(a.http(&format!("/api/v1/conversations/{group}/participants/2")))
        .bearer_auth(token(1))
        .send()
        .await
        .unwrap();
    assert!(removed.status().is_success(), "{removed:?}");
    let event = bob.expect("participant.removed").await;
    assert_eq!(event["user_id"], 2);
    a.say(1, group, "after bob left").await;
    a.say(1, direct, "marker").await;
    // The marker (same publisher, later) arrives; the group message never did.
    let next = bob.expect("message.created").await;
    assert_eq!(next["message"]["content"], "marker");
    bob.expect_nothing_pending().await;

    // Re-added on A: B delivers to him again, at once.
    let added = http
        .post(a.http(&format!("/api/v1/conversations/{group}/participants")))
        .bearer_auth(token(1))
        .json(&json!({"user_ids": [2]}))
        .send()
        .await
        .unwrap();
    assert!(added.status().is_success(), "{added:?}");
    bob.expect("message.created").await; // the SYSTEM record
    assert_eq!(bob.expect("participant.added").await["user_id"], 2);
    a.say(1, group, "welcome back").await;
    assert_eq!(
        bob.expect("message.created").await["message"]["content"],
        "welcome back"
    );

    a.stop().await;
    b.stop().await;
    store.finish().await;
}
