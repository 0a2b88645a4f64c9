//! Two nodes sharing one store (MySQL when it answers) and one Redis: each node publishes
//! the durable events from the shared change feed to its own clients, so what a client
//! does on node A reaches, in order and once, a client on node B; membership changes made
//! on A are honoured on B; only typing travels over Redis; and a client that was away
//! resumes on B from a token that A gave it, getting exactly the changes it missed.

#![allow(clippy::unwrap_used)]

mod ws_support;

use std::collections::BTreeSet;
use std::time::Duration;

use chat_domain::{ConversationId, Emoji, MessageBody, MessageContent, MessageId, MessageType};
use chat_service::SendMessage;
use futures::StreamExt as _;
use serde_json::{Value, json};
use ws_support::{
    Node, WsClient, redis_or_skip, shared_store, spawn_node_on, test_config, token, uid,
};

/// The next frame, which is no read-marker move: these tests never mark read, and a send
/// publishes no `conversation.read` (its sender's marker move is implied by its
/// `message.created`).
async fn next_but_reads(client: &mut WsClient) -> Value {
    let frame = client.next_json().await;
    assert_ne!(
        frame["type"], "conversation.read",
        "a send's marker move went out: {frame:#}"
    );
    frame
}

/// Proves that nothing was queued for `client` before now.
async fn nothing_pending_but_reads(client: &mut WsClient) {
    client
        .send_json(json!({"type": "ping", "request_id": "check"}))
        .await;
    assert_eq!(
        next_but_reads(client).await,
        json!({"type": "pong", "request_id": "check"}),
        "an unexpected frame was pending"
    );
}

/// The position of a frame.
fn pos(frame: &Value) -> u64 {
    frame["pos"]
        .as_u64()
        .unwrap_or_else(|| panic!("no pos: {frame:#}"))
}

/// The position a token stands at (`v1.<feed>.<pos>`).
fn token_pos(token: &str) -> u64 {
    token.rsplit('.').next().unwrap().parse().unwrap()
}

/// Sends `text` to `conversation` as `sender` through `node`'s service; the message id.
async fn send(node: &Node, sender: i64, conversation: ConversationId, text: &str) -> MessageId {
    let body = MessageBody::from_user(
        MessageContent::parse(text).unwrap(),
        MessageType::Text,
        None,
        None,
    )
    .unwrap();
    node.service
        .send_message(
            uid(sender),
            conversation,
            SendMessage {
                body,
                reply_to_id: None,
                client_message_id: None,
            },
        )
        .await
        .unwrap()
        .view
        .message
        .id
}

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

    // A burst sent on A arrives on B in order, once (and once on A).
    for i in 0..30 {
        alice
            .send_json(json!({"type": "send", "request_id": i, "conversation_id": group.to_string(), "content": format!("m{i}")}))
            .await;
    }
    for client in [&mut bob, &mut alice_on_b] {
        let mut last_seq = 0;
        let mut last_pos = 0;
        for i in 0..30 {
            let event = client.expect_created().await;
            assert_eq!(event["message"]["content"], format!("m{i}"));
            let seq = event["message"]["seq"].as_i64().unwrap();
            assert!(seq > last_seq, "seq {seq} after {last_seq}");
            assert!(
                pos(&event) > last_pos,
                "pos {} after {last_pos}",
                pos(&event)
            );
            (last_seq, last_pos) = (seq, pos(&event));
        }
        nothing_pending_but_reads(client).await;
    }
    let mut acks = Vec::new();
    let mut created = 0;
    while acks.len() < 30 || created < 30 {
        let frame = next_but_reads(&mut alice).await;
        match frame["type"].as_str() {
            Some("ack") => acks.push(frame["request_id"].as_i64().unwrap()),
            Some("message.created") => created += 1,
            _ => panic!("unexpected {frame:#}"),
        }
    }
    assert_eq!(acks, (0..30).collect::<Vec<_>>());
    assert_eq!(created, 30);
    nothing_pending_but_reads(&mut alice).await;

    // B to A, and typing across nodes (over Redis).
    bob.send_json(
        json!({"type": "typing", "conversation_id": group.to_string(), "is_typing": true}),
    )
    .await;
    let typing = next_but_reads(&mut alice).await;
    assert_eq!(
        (&typing["type"], &typing["user_id"]),
        (&json!("typing"), &json!(2))
    );
    assert!(
        typing.get("pos").is_none(),
        "typing is not in the feed: {typing}"
    );
    assert_eq!(next_but_reads(&mut alice_on_b).await["type"], "typing");
    b.say(2, group, "from b").await;
    for client in [&mut alice, &mut alice_on_b, &mut bob] {
        assert_eq!(
            client.expect_created().await["message"]["content"],
            "from b"
        );
    }

    // Bob is removed on A (through the REST API): he hears of his removal on B (after the
    // announcement), and nothing of the group after it.
    let http = reqwest::Client::new();
    let removed = http
        .delete(a.http(&format!("/api/v1/conversations/{group}/participants/2")))
        .bearer_auth(token(1))
        .send()
        .await
        .unwrap();
    assert!(removed.status().is_success(), "{removed:?}");
    let event = loop {
        let frame = next_but_reads(&mut bob).await;
        if frame["type"] == "message.created" {
            assert_eq!(frame["message"]["is_system_message"], true, "{frame:#}");
            continue;
        }
        break frame;
    };
    assert_eq!(event["type"], "participant.removed", "{event:#}");
    assert_eq!(event["user_id"], 2);
    a.say(1, group, "after bob left").await;
    a.say(1, direct, "marker").await;
    // The marker (later in the feed) arrives; the group message never does.
    let next = bob.expect_created().await;
    assert_eq!(next["message"]["content"], "marker");
    nothing_pending_but_reads(&mut bob).await;

    // Re-added on A: B delivers to him again, at once.
    let added = http
        .post(a.http(&format!("/api/v1/conversations/{group}/participants")))
        .bearer_auth(token(1))
        .json(&json!({"user_ids": [2]}))
        .send()
        .await
        .unwrap();
    assert!(added.status().is_success(), "{added:?}");
    let mut kinds = BTreeSet::new();
    for _ in 0..2 {
        let frame = next_but_reads(&mut bob).await;
        if frame["type"] == "participant.added" {
            assert_eq!(frame["user_id"], 2);
        }
        kinds.insert(frame["type"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        kinds,
        BTreeSet::from(["message.created".to_owned(), "participant.added".to_owned()]),
        "the SYSTEM record and his addition"
    );
    a.say(1, group, "welcome back").await;
    assert_eq!(
        bob.expect_created().await["message"]["content"],
        "welcome back"
    );

    a.stop().await;
    b.stop().await;
    store.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resumes_on_node_b_from_a_token_given_by_node_a_and_gets_exactly_what_it_missed() {
    let Some(redis) = redis_or_skip().await else {
        return;
    };
    let store = shared_store().await;
    eprintln!("resume across nodes over the {} store", store.backend);
    let a = spawn_node_on(store.first.clone(), test_config(), Some(redis.clone())).await;
    let b = spawn_node_on(store.second.clone(), test_config(), Some(redis)).await;
    a.users(&[1, 2, 3]).await;
    let group = a.group(1, &[2]).await;
    let elsewhere = b.group(2, &[3]).await;

    // Alice is on A, takes the token of her `ready`, and goes away.
    let (alice, since) = a.connect_with_token(1).await;
    drop(alice);

    // Meanwhile, on both nodes: a message, its edit, a reaction, Carol added, a message
    // sent and deleted, a read, and things of a conversation Alice is not in.
    let first = send(&b, 2, group, "first").await;
    b.service
        .edit_message(
            uid(2),
            first,
            MessageContent::parse("first, edited").unwrap(),
        )
        .await
        .unwrap();
    a.service
        .add_reaction(uid(2), first, Emoji::parse("👍").unwrap())
        .await
        .unwrap();
    send(&b, 2, elsewhere, "not for alice").await;
    a.service
        .add_participants(uid(1), group, vec![uid(3)])
        .await
        .unwrap();
    let gone = send(&a, 3, group, "soon gone").await;
    b.service.delete_message(uid(3), gone).await.unwrap();
    a.service.mark_read(uid(2), group, None).await.unwrap();

    // Alice comes back on B with A's token.
    let (mut alice, replayed, ready) = b.resume(1, &since).await;
    let next = ready["next"].as_str().unwrap().to_owned();

    // Exactly what `GET /sync` on A answers for the same token: every change she may see,
    // in order, once, nothing from before the token and nothing of the other group.
    let synced: Value = reqwest::Client::new()
        .get(a.http(&format!("/api/v1/sync?since={since}&limit=500")))
        .bearer_auth(token(1))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(synced["has_more"], false, "{synced:#}");
    assert_eq!(
        Value::Array(replayed.clone()),
        synced["events"],
        "replay on B = sync on A"
    );
    let positions: Vec<u64> = replayed.iter().map(pos).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    assert!(
        positions[0] > token_pos(&since),
        "nothing from before the token"
    );
    assert!(
        *positions.last().unwrap() <= token_pos(&next),
        "ready's token covers the replay"
    );
    let kinds: Vec<&str> = replayed
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    for kind in [
        "message.created",
        "message.updated",
        "reaction.added",
        "participant.added",
        "message.deleted",
        "conversation.read",
    ] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    assert!(
        replayed
            .iter()
            .all(|e| e.to_string().contains(&group.to_string())),
        "only the group she is in: {replayed:#?}"
    );
    assert!(
        !replayed.iter().any(|e| e.to_string().contains("soon gone")),
        "deleted content is never served"
    );
    let deleted = replayed
        .iter()
        .find(|e| e["type"] == "message.deleted")
        .unwrap();
    assert_eq!(deleted["message_id"], gone.to_string());

    // Then live, from B's relay, after the replay, with no gap and no duplicate.
    send(&a, 2, group, "live").await;
    let live = alice.expect_created().await;
    assert_eq!(live["message"]["content"], "live");
    assert!(pos(&live) > token_pos(&next), "live after the replay");
    nothing_pending_but_reads(&mut alice).await;

    a.stop().await;
    b.stop().await;
    store.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_typing_travels_over_redis() {
    let Some(redis) = redis_or_skip().await else {
        return;
    };
    let store = shared_store().await;
    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe(&redis.channel).await.unwrap();
    let a = spawn_node_on(store.first.clone(), test_config(), Some(redis.clone())).await;
    let b = spawn_node_on(store.second.clone(), test_config(), Some(redis)).await;
    let group = a.group(1, &[2]).await;
    let mut alice = a.connect(1).await;
    let mut bob = b.connect(2).await;
    let first = send(&a, 1, group, "durable").await;
    a.service
        .add_reaction(uid(2), first, Emoji::parse("🎉").unwrap())
        .await
        .unwrap();
    bob.expect_created().await;
    assert_eq!(next_but_reads(&mut bob).await["type"], "reaction.added");
    alice
        .send_json(
            json!({"type": "typing", "conversation_id": group.to_string(), "is_typing": true}),
        )
        .await;
    assert_eq!(next_but_reads(&mut bob).await["type"], "typing");

    // Everything on the channel meanwhile: heartbeats and that one typing frame.
    let mut messages = pubsub.on_message();
    let mut typing = 0;
    let until = tokio::time::Instant::now() + Duration::from_millis(1500);
    while let Ok(Some(message)) = tokio::time::timeout_at(until, messages.next()).await {
        let envelope: Value = serde_json::from_slice(message.get_payload_bytes()).unwrap();
        if envelope["heartbeat"] == true {
            continue;
        }
        assert_eq!(
            envelope["typing"], true,
            "a durable frame on Redis: {envelope:#}"
        );
        typing += 1;
    }
    assert_eq!(typing, 1, "the typing frame crossed over Redis, once");

    a.stop().await;
    b.stop().await;
    store.finish().await;
}
