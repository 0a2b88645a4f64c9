//! The WebSocket endpoint on one node, in process: delivery, ordering, replies, limits,
//! keep-alive and authentication, with real tokio-tungstenite clients; every scenario on
//! the in-memory store and on a SQLite file.
// Test code may unwrap (clippy.toml allows it in `#[test]` functions only, not in the
// scenario functions the store variants share).
#![allow(clippy::unwrap_used)]

mod ws_support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chat_http::WsConfig;
use serde_json::{Value, json};
use ws_support::{
    ALLOWED_ORIGIN, Ending, Node, Refused, Store, WAIT, WsClient, spawn_node,
    spawn_node_with_late_relay, test_config, token, token_expiring, uid,
};

/// Runs a scenario on a node over the in-memory store and on one over a fresh SQLite file.
macro_rules! on_every_store {
    ($($(#[$attr:meta])* $name:ident),+ $(,)?) => {
        $(
            mod $name {
                use crate::ws_support::Store;

                $(#[$attr])*
                async fn memory() {
                    super::$name(Store::Memory).await;
                }

                $(#[$attr])*
                async fn sqlite() {
                    super::$name(Store::Sqlite).await;
                }
            }
        )+
    };
}

on_every_store!(
    #[tokio::test]
    events_reach_every_connection_of_every_participant_and_nobody_else,
    #[tokio::test]
    removal_stops_delivery_at_once_and_adding_starts_it,
    #[tokio::test]
    typing_reaches_only_the_others_and_read_markers_everyone,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    a_burst_of_concurrent_sends_arrives_in_seq_order,
    #[tokio::test]
    requests_are_answered_with_ack_or_error_frames,
    #[tokio::test]
    malformed_frames_get_error_frames_and_the_connection_stays_open,
    #[tokio::test]
    a_frame_over_64_kib_closes_with_1009,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    a_slow_consumer_is_closed_with_4008_while_a_fast_one_gets_everything,
    #[tokio::test]
    unanswered_pings_close_with_4000_and_answered_ones_keep_it_open,
    #[tokio::test]
    shutting_down_closes_every_socket_with_1001,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    the_server_ends_the_tcp_connection_after_the_close_handshake_or_the_close_timeout,
    #[tokio::test]
    handshakes_are_checked_before_upgrading,
    #[tokio::test]
    browsers_authenticate_with_a_first_frame,
    #[tokio::test]
    an_expiring_token_closes_the_socket_with_1008_unless_refreshed,
    #[tokio::test]
    resuming_after_a_gap_replays_every_missed_change_once_then_goes_live,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    no_duplicate_and_no_gap_between_replay_and_live_under_a_burst,
    #[tokio::test]
    a_token_the_server_cannot_resume_from_gets_an_error_then_a_fresh_ready,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    a_client_that_stops_reading_mid_replay_is_closed_with_4008_within_the_replay_deadline,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    a_client_resuming_during_a_long_burst_gets_every_message_once_in_order_without_4008,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    a_live_client_gets_every_message_in_order_when_the_relay_catches_up_on_a_backlog,
);

/// An event frame without its `pos`, after checking that it has one.
#[track_caller]
fn without_pos(mut event: Value) -> Value {
    let pos = event
        .as_object_mut()
        .and_then(|e| e.remove("pos"))
        .unwrap_or_else(|| panic!("a stored change carries its pos"));
    assert!(pos.as_u64().is_some_and(|p| p > 0), "{pos}");
    event
}

/// Reads up to the next frame of `kind`, passing over frames of the `skipped` kinds only.
async fn expect_skipping(client: &mut WsClient, kind: &str, skipped: &[&str]) -> Value {
    loop {
        let frame = client.next_json().await;
        if frame["type"] == kind {
            return frame;
        }
        assert!(
            skipped.iter().any(|s| frame["type"] == *s),
            "expected {kind}, got {frame:#}"
        );
    }
}

fn send_frame(request_id: &str, conversation: impl ToString, content: &str) -> Value {
    json!({
        "type": "send",
        "request_id": request_id,
        "conversation_id": conversation.to_string(),
        "content": content,
    })
}

async fn events_reach_every_connection_of_every_participant_and_nobody_else(store: Store) {
    let node = spawn_node(store, test_config()).await;
    let group = node.group(1, &[2, 3]).await;
    node.users(&[4]).await;
    let mut alice = node.connect(1).await;
    let mut alice_phone = node.connect(1).await;
    let mut bob = node.connect(2).await;
    let mut outsider = node.connect(4).await;
    assert_eq!(node.metrics.open_websockets().get(), 4);

    alice.send_json(send_frame("r1", group, "hello")).await;
    // The sending connection gets both the ack and the event, and nothing else: the move
    // of its read marker is implied by the `message.created` (one frame per send).
    let [own, ack]: [Value; 2] = alice
        .expect_unordered(&["message.created", "ack"])
        .await
        .try_into()
        .unwrap();
    assert_eq!(ack["request_id"], "r1");
    assert_eq!(ack["created"], true);
    let message = ack["message"].clone();
    assert_eq!(message["content"], "hello");
    assert_eq!(message["sender_id"], 1);
    assert_eq!(
        without_pos(own),
        json!({"type": "message.created", "message": message})
    );

    // The sender's other connection and the other participant.
    for client in [&mut alice_phone, &mut bob] {
        let event = client.expect("message.created").await;
        assert_eq!(
            without_pos(event),
            json!({"type": "message.created", "message": message})
        );
    }
    outsider.expect_nothing_pending().await;
    for client in [&mut alice, &mut alice_phone, &mut bob] {
        client.expect_nothing_pending().await;
    }

    drop(outsider);
    tokio::time::timeout(WAIT, async {
        while node.metrics.open_websockets().get() != 3 {
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the gauge follows closed sockets");
    node.stop().await;
}

async fn removal_stops_delivery_at_once_and_adding_starts_it(store: Store) {
    let node = spawn_node(store, test_config()).await;
    let group = node.group(1, &[2]).await;
    node.users(&[3]).await;
    let mut alice = node.connect(1).await;
    let mut bob = node.connect(2).await;
    let mut carol = node.connect(3).await;

    node.service
        .remove_participant(uid(1), group, uid(2))
        .await
        .expect("removed");
    // Bob hears that he is out, and nothing of the conversation after that.
    let removed = bob.expect("participant.removed").await;
    assert_eq!(removed["user_id"], 2);
    assert_eq!(removed["conversation_id"], group.to_string());
    // The SYSTEM record (its move of Alice's read marker is implied, not a frame).
    alice
        .expect_unordered(&["participant.removed", "message.created"])
        .await;
    node.say(1, group, "bob is gone").await;
    alice.expect("message.created").await;
    alice.expect_nothing_pending().await;
    bob.expect_nothing_pending().await;

    node.service
        .add_participants(uid(1), group, vec![uid(2), uid(3)])
        .await
        .expect("added");
    node.say(1, group, "welcome").await;
    // Each hears of the adds from their own on (as `GET /sync` shows them): Bob, added
    // first, of both; Carol of hers.
    for (client, expected) in [(&mut bob, vec![2, 3]), (&mut carol, vec![3])] {
        let mut added = Vec::new();
        loop {
            let event = client.next_json().await;
            if event["type"] == "participant.added" {
                assert_eq!(event["role"], "MEMBER");
                added.push(event["user_id"].as_i64().unwrap());
            }
            if event["type"] == "message.created" && event["message"]["content"] == "welcome" {
                break;
            }
        }
        assert_eq!(added, expected);
    }
    node.stop().await;
}

async fn typing_reaches_only_the_others_and_read_markers_everyone(store: Store) {
    let node = spawn_node(store, test_config()).await;
    let group = node.group(1, &[2]).await;
    let mut alice = node.connect(1).await;
    let mut alice_phone = node.connect(1).await;
    let mut bob = node.connect(2).await;

    alice
        .send_json(
            json!({"type": "typing", "conversation_id": group.to_string(), "is_typing": true}),
        )
        .await;
    let typing = bob.expect("typing").await;
    assert_eq!(
        typing,
        json!({"type": "typing", "conversation_id": group.to_string(), "user_id": 1, "is_typing": true})
    );
    alice.expect_nothing_pending().await;
    alice_phone.expect_nothing_pending().await;

    let seq = node.say(1, group, "read me").await;
    for client in [&mut alice, &mut alice_phone, &mut bob] {
        // The sender's own marker moved with the send: the `message.created` tells it
        // (its sender has read up to its seq); no `conversation.read` follows.
        let created = client.expect("message.created").await;
        assert_eq!(
            (&created["message"]["sender_id"], &created["message"]["seq"]),
            (&json!(1), &json!(seq))
        );
        client.expect_nothing_pending().await;
    }
    bob.send_json(json!({"type": "read", "request_id": 5, "conversation_id": group.to_string()}))
        .await;
    let [read, ack]: [Value; 2] = bob
        .expect_unordered(&["conversation.read", "ack"])
        .await
        .try_into()
        .unwrap();
    assert_eq!(ack, json!({"type": "ack", "request_id": 5}));
    let mut reads = vec![read];
    for client in [&mut alice, &mut alice_phone] {
        reads.push(client.expect("conversation.read").await);
    }
    for read in reads {
        assert_eq!(read["user_id"], 2);
        assert_eq!(read["last_read_seq"], seq);
        assert!(read["last_read_at"].is_string());
    }
    node.stop().await;
}

async fn a_burst_of_concurrent_sends_arrives_in_seq_order(store: Store) {
    let node = spawn_node(store, test_config()).await;
    let group = node.group(1, &[2, 3]).await;
    let mut bob = node.connect(2).await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let service = node.service.clone();
        let sender = if i % 2 == 0 { 1 } else { 3 };
        tasks.push(tokio::spawn(async move {
            let body = chat_domain::MessageBody::from_user(
                chat_domain::MessageContent::parse(format!("burst {i}")).unwrap(),
                chat_domain::MessageType::Text,
                None,
                None,
            )
            .unwrap();
            service
                .send_message(
                    uid(sender),
                    group,
                    chat_service::SendMessage {
                        body,
                        reply_to_id: None,
                        client_message_id: None,
                    },
                )
                .await
                .unwrap();
        }));
    }
    let mut seqs = Vec::new();
    while seqs.len() < 50 {
        let event = expect_skipping(&mut bob, "message.created", &[]).await;
        seqs.push(event["message"]["seq"].as_i64().unwrap());
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut sorted = seqs.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(seqs, sorted, "events arrive in seq order, each once");
    assert_eq!(seqs.last().unwrap() - seqs.first().unwrap(), 49, "no gaps");

    // The same through the socket: 50 pipelined sends from one client.
    let mut alice = node.connect(1).await;
    for i in 0..50 {
        alice
            .send_json(send_frame(
                &format!("b{i}"),
                group,
                &format!("pipelined {i}"),
            ))
            .await;
    }
    let mut seqs = Vec::new();
    while seqs.len() < 50 {
        let event = expect_skipping(&mut bob, "message.created", &[]).await;
        assert_eq!(
            event["message"]["content"],
            format!("pipelined {}", seqs.len())
        );
        seqs.push(event["message"]["seq"].as_i64().unwrap());
    }
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    node.stop().await;
}

async fn requests_are_answered_with_ack_or_error_frames(store: Store) {
    let node = spawn_node(store, test_config()).await;
    let group = node.group(1, &[2]).await;
    let elsewhere = node.group(3, &[]).await;
    let mut alice = node.connect(1).await;

    alice
        .send_json(json!({
            "type": "send", "request_id": "r1", "conversation_id": group.to_string(),
            "content": "idempotent", "client_message_id": "c-1",
        }))
        .await;
    let first = alice.expect_unordered(&["ack", "message.created"]).await[0].clone();
    assert_eq!(first["created"], true);
    alice
        .send_json(json!({
            "type": "send", "request_id": "r2", "conversation_id": group.to_string(),
            "content": "idempotent", "client_message_id": "c-1",
        }))
        .await;
    let again = alice.expect("ack").await;
    assert_eq!(again["created"], false);
    assert_eq!(again["message"]["id"], first["message"]["id"]);
    alice.expect_nothing_pending().await;

    // (frame, expected problem code, expected status)
    let cases = [
        (send_frame("e1", elsewhere, "not mine"), "not_found", 404),
        (send_frame("e2", group, "   "), "validation_failed", 400),
        (
            json!({"type": "send", "request_id": "e3", "conversation_id": group.to_string(),
                   "content": "x", "message_type": "SYSTEM"}),
            "validation_failed",
            400,
        ),
        (
            json!({"type": "typing", "request_id": "e4", "conversation_id": elsewhere.to_string(), "is_typing": true}),
            "not_found",
            404,
        ),
        (
            json!({"type": "read", "request_id": "e5", "conversation_id": elsewhere.to_string()}),
            "not_found",
            404,
        ),
    ];
    for (frame, code, status) in cases {
        let request_id = frame["request_id"].clone();
        alice.send_json(frame).await;
        let error = alice.expect("error").await;
        assert_eq!(error["request_id"], request_id, "{error:#}");
        assert_eq!(error["error"]["code"], code, "{error:#}");
        assert_eq!(error["error"]["status"], status, "{error:#}");
        assert!(error["error"]["detail"].is_string());
    }

    alice
        .send_json(json!({"type": "ping", "request_id": "p"}))
        .await;
    assert_eq!(
        alice.next_json().await,
        json!({"type": "pong", "request_id": "p"})
    );
    node.stop().await;
}

async fn malformed_frames_get_error_frames_and_the_connection_stays_open(store: Store) {
    let node = spawn_node(store, test_config()).await;
    let mut alice = node.connect(1).await;
    // (text, field named in the problem)
    let cases = [
        ("not json", "frame"),
        ("[1, 2]", "frame"),
        ("\"just a string\"", "frame"),
        ("{}", "type"),
        (r#"{"type": 42}"#, "type"),
        (r#"{"type": "dance", "request_id": "d"}"#, "type"),
        (r#"{"type": "send"}"#, "conversation_id"),
        (
            r#"{"type": "send", "conversation_id": "nope", "content": "x"}"#,
            "conversation_id",
        ),
        (
            r#"{"type": "send", "conversation_id": 7, "content": "x"}"#,
            "frame",
        ),
        (
            r#"{"type": "typing", "conversation_id": "0190b2c4-4b1e-7cc0-8e4e-2a2bd0c7a001"}"#,
            "is_typing",
        ),
        (r#"{"type": "ping", "request_id": [1]}"#, "request_id"),
    ];
    for (text, field) in cases {
        alice.send_text(text.to_owned()).await;
        let error = alice.expect("error").await;
        assert_eq!(
            error["error"]["code"], "validation_failed",
            "{text}: {error:#}"
        );
        assert_eq!(
            error["error"]["errors"][0]["field"], field,
            "{text}: {error:#}"
        );
    }
    alice.send_binary(vec![1, 2, 3]).await;
    let error = alice.expect("error").await;
    assert_eq!(error["error"]["errors"][0]["field"], "frame");
    alice.expect_nothing_pending().await;
    node.stop().await;
}

async fn a_frame_over_64_kib_closes_with_1009(store: Store) {
    let node = spawn_node(store, test_config()).await;
    let mut alice = node.connect(1).await;
    // Just at the limit is fine (and a malformed frame).
    alice.send_text("x".repeat(64 * 1024)).await;
    assert_eq!(
        alice.expect("error").await["error"]["code"],
        "validation_failed"
    );
    alice.send_text("x".repeat(64 * 1024 + 1)).await;
    alice.expect_close(1009).await;
    node.stop().await;
}

async fn a_slow_consumer_is_closed_with_4008_while_a_fast_one_gets_everything(store: Store) {
    let node = spawn_node(
        store,
        WsConfig {
            outbound_queue: 64,
            close_timeout: Duration::from_secs(60),
            ..test_config()
        },
    )
    .await;
    let group = node.group(1, &[2, 3]).await;
    let mut slow = node.connect_small_buffer(2).await;
    let mut fast = node.connect(3).await;
    let (progress, mut seen) = tokio::sync::watch::channel(0usize);
    let reader = tokio::spawn(async move {
        let mut seqs = Vec::new();
        loop {
            let event = fast.next_json().await;
            if event["type"] == "message.created" {
                seqs.push(event["message"]["seq"].as_i64().unwrap());
                progress.send_replace(seqs.len());
            } else if event["type"] == "done" {
                return seqs;
            }
        }
    });

    // Flood until the slow consumer is cut off, never letting the fast one fall more than
    // a few frames behind.
    let text = "y".repeat(2000);
    let mut sent = 0;
    while node.realtime.hub().connection_count() == 2 {
        assert!(sent < 20_000, "the slow consumer was never cut off");
        node.say(1, group, &text).await;
        sent += 1;
        if sent % 16 == 0 {
            tokio::time::timeout(WAIT, seen.wait_for(|n| *n + 8 >= sent))
                .await
                .expect("the fast consumer keeps up")
                .unwrap();
        }
    }
    for _ in 0..10 {
        node.say(1, group, &text).await;
        sent += 1;
    }
    tokio::time::timeout(WAIT, seen.wait_for(|n| *n >= sent))
        .await
        .expect("the fast consumer gets everything")
        .unwrap();
    assert_eq!(node.realtime.hub().connection_count(), 1);

    // Now the slow client reads: what was buffered, then the close.
    let (frames, ending) = slow.read_to_end().await;
    assert_eq!(ending, Ending::Closed(4008));
    let created = frames
        .iter()
        .filter(|f| f["type"] == "message.created")
        .count();
    assert!(created < sent, "{created} of {sent}");
    reader.abort();
    node.stop().await;
}

async fn unanswered_pings_close_with_4000_and_answered_ones_keep_it_open(store: Store) {
    let node = spawn_node(
        store,
        WsConfig {
            ping_interval: Duration::from_millis(100),
            ..test_config()
        },
    )
    .await;
    let mut lively = node.connect(1).await;
    let mut silent = node.connect(2).await;
    // The lively client reads (and so answers pings) for many intervals.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(800);
    while tokio::time::Instant::now() < deadline {
        let next =
            tokio::time::timeout_at(deadline, futures::StreamExt::next(&mut lively.socket)).await;
        if let Ok(frame) = next {
            assert!(
                matches!(
                    frame,
                    Some(Ok(tokio_tungstenite::tungstenite::Message::Ping(_)))
                ),
                "{frame:?}"
            );
        }
    }
    lively.expect_nothing_pending().await;
    // The silent one had not read anything: its pings went unanswered.
    let (frames, ending) = silent.read_to_end().await;
    assert_eq!(ending, Ending::Closed(4000), "{frames:?}");
    node.stop().await;
}

async fn shutting_down_closes_every_socket_with_1001(store: Store) {
    let node = spawn_node(store, test_config()).await;
    let mut alice = node.connect(1).await;
    let mut bob = node.connect(2).await;
    node.realtime.shut_down();
    alice.expect_close(1001).await;
    bob.expect_close(1001).await;
    node.stop().await;
}

async fn the_server_ends_the_tcp_connection_after_the_close_handshake_or_the_close_timeout(
    store: Store,
) {
    use futures::{SinkExt as _, StreamExt as _};
    use tokio::io::AsyncReadExt as _;
    use tokio_tungstenite::tungstenite::Message;

    let close_timeout = Duration::from_secs(3);
    let node = spawn_node(
        store,
        WsConfig {
            close_timeout,
            ..test_config()
        },
    )
    .await;
    let mut alice = node.connect(1).await;
    let mut bob = node.connect(2).await;
    let closing = tokio::time::Instant::now();
    node.realtime.shut_down();

    // Alice answers the close frame (tungstenite sends its answer on the flush), then
    // only reads: the server ends the connection, not her.
    let alice = tokio::spawn(async move {
        loop {
            match tokio::time::timeout(WAIT, alice.socket.next())
                .await
                .unwrap()
            {
                Some(Ok(Message::Close(frame))) => {
                    assert_eq!(frame.map(|f| u16::from(f.code)), Some(1001));
                    break;
                }
                Some(Ok(_)) => {}
                other => panic!("no close frame: {other:?}"),
            }
        }
        let _ = alice.socket.flush().await;
        let mut rest = [0_u8; 16];
        let read = tokio::time::timeout(WAIT, alice.socket.get_mut().read(&mut rest)).await;
        assert!(
            matches!(read, Ok(Ok(0))),
            "the server ended the connection: {read:?}"
        );
        closing.elapsed()
    });
    // Bob reads the bytes on the wire and never answers: the server waits for his close
    // frame up to the close timeout, then ends the connection all the same.
    let bob = tokio::spawn(async move {
        let mut wire = Vec::new();
        let read = tokio::time::timeout(
            close_timeout + WAIT,
            bob.socket.get_mut().read_to_end(&mut wire),
        )
        .await;
        assert!(
            matches!(read, Ok(Ok(_))),
            "the server ended the connection: {read:?}"
        );
        // An unmasked close frame carrying 1001 (0x03E9).
        assert_eq!(wire.get(..1), Some(&[0x88][..]), "{wire:?}");
        assert_eq!(wire.get(2..4), Some(&[0x03, 0xE9][..]), "{wire:?}");
        closing.elapsed()
    });
    let (answered, silent) = (alice.await.unwrap(), bob.await.unwrap());
    assert!(
        answered < close_timeout,
        "an answered close ends the connection at once, not after {answered:?}"
    );
    assert!(
        silent >= close_timeout,
        "an unanswered close is waited for {close_timeout:?}, not {silent:?}"
    );
    node.stop().await;
}

/// A handshake and its outcome: (bearer, origin, query, expected).
type HandshakeCase<'a> = (
    Option<&'a str>,
    Option<&'a str>,
    String,
    Result<(), Refused>,
);

#[tokio::test]
async fn rule_acks_queued_before_a_close_are_flushed() {
    use futures::SinkExt as _;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;

    let node = spawn_node(Store::Memory, test_config()).await;
    let group = node.group(1, &[]).await;

    // The client's close follows its sends in one write: the server reads it right after
    // committing the last send, before its writer has had a turn.
    let mut alice = node.connect(1).await;
    let sends = 20;
    for i in 0..sends {
        let frame = send_frame(&format!("r{i}"), group, &format!("m{i}"));
        alice
            .socket
            .feed(Message::Text(frame.to_string()))
            .await
            .unwrap();
    }
    alice
        .socket
        .feed(Message::Close(Some(CloseFrame {
            code: ws_support::code(1000),
            reason: "bye".into(),
        })))
        .await
        .unwrap();
    alice.socket.flush().await.unwrap();
    let (frames, ending) = alice.read_to_end().await;
    let acks: Vec<&Value> = frames.iter().filter(|f| f["type"] == "ack").collect();
    assert_eq!(
        acks.len(),
        sends,
        "acks lost on an echoed close: {frames:#?}"
    );
    assert_eq!(acks[sends - 1]["request_id"], format!("r{}", sends - 1));
    assert_eq!(ending, Ending::Closed(1000));

    // The same on a shutdown (1001): what was committed is acked before the close.
    let mut bob = node.connect(1).await;
    for i in 0..sends {
        let frame = send_frame(&format!("s{i}"), group, &format!("n{i}"));
        bob.socket
            .feed(Message::Text(frame.to_string()))
            .await
            .unwrap();
    }
    bob.socket.flush().await.unwrap();
    let first = bob.next_json().await;
    node.realtime.shut_down();
    let (mut frames, ending) = bob.read_to_end().await;
    assert_eq!(ending, Ending::Closed(1001), "{frames:#?}");
    frames.insert(0, first);
    let acked = frames.iter().filter(|f| f["type"] == "ack").count();
    // Events come from the relay, after the commit: the store says what committed.
    let (status, page) = rest(
        &node,
        1,
        reqwest::Method::GET,
        &format!("/api/v1/conversations/{group}/messages?limit=100"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{page:#}");
    let committed = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["content"].as_str().is_some_and(|c| c.starts_with('n')))
        .count();
    assert!(committed > 0);
    assert_eq!(
        acked, committed,
        "every committed send is acked: {frames:#?}"
    );
    node.stop().await;
}

async fn handshakes_are_checked_before_upgrading(store: Store) {
    let node = spawn_node(store, test_config()).await;
    let expired = token_expiring(1, 1_000);
    let good = token(1);
    let own_origin = format!("http://{}", node.address);
    let ok: Result<(), Refused> = Ok(());
    let refused = |status: u16, code: &str| {
        Err(Refused {
            status,
            code: Some(code.to_owned()),
        })
    };
    let cases: Vec<HandshakeCase<'_>> = vec![
        (Some(&good), None, String::new(), ok),
        (Some(&good), Some(ALLOWED_ORIGIN), String::new(), Ok(())),
        (None, Some(ALLOWED_ORIGIN), String::new(), Ok(())),
        (None, None, String::new(), Ok(())),
        (
            Some(&good),
            Some("https://evil.example"),
            String::new(),
            refused(403, "forbidden"),
        ),
        (None, Some("null"), String::new(), refused(403, "forbidden")),
        // The page chatd serves itself: the Origin names the host the request went to.
        (Some(&good), Some(&own_origin), String::new(), Ok(())),
        (
            None,
            None,
            format!("?token={good}"),
            refused(401, "unauthorized"),
        ),
        (
            Some(&good),
            None,
            format!("?access_token={good}"),
            refused(401, "unauthorized"),
        ),
        (
            Some("not-a-token"),
            None,
            String::new(),
            refused(401, "unauthorized"),
        ),
        (
            Some(&expired),
            None,
            String::new(),
            refused(401, "unauthorized"),
        ),
    ];
    for (bearer, origin, query, expected) in cases {
        let outcome = node.handshake(bearer, origin, &query).await.map(|_| ());
        assert_eq!(
            outcome, expected,
            "bearer {bearer:?}, origin {origin:?}, query {query:?}"
        );
    }
    node.stop().await;
}

async fn browsers_authenticate_with_a_first_frame(store: Store) {
    let node = spawn_node(
        store,
        WsConfig {
            auth_timeout: Duration::from_millis(300),
            ..test_config()
        },
    )
    .await;
    let group = node.group(1, &[2]).await;

    let mut browser = node
        .handshake(None, Some(ALLOWED_ORIGIN), "")
        .await
        .unwrap();
    browser
        .send_json(json!({"type": "auth", "token": token(2)}))
        .await;
    ws_support::assert_fresh_ready(&browser.next_json().await, 2);
    node.say(1, group, "to the browser").await;
    assert_eq!(
        browser.expect("message.created").await["message"]["content"],
        "to the browser"
    );

    // (first frame, close code)
    let cases = [
        (Some(json!({"type": "auth", "token": "garbage"})), 1008),
        (
            Some(json!({"type": "auth", "token": token_expiring(2, 1_000)})),
            1008,
        ),
        (Some(json!({"type": "ping"})), 1008),
        (
            Some(json!({"type": "send", "conversation_id": group.to_string(), "content": "x"})),
            1008,
        ),
        (None, 1008), // nothing within the auth timeout
    ];
    for (frame, code) in cases {
        let mut client = node.handshake(None, None, "").await.unwrap();
        if let Some(frame) = frame {
            client.send_json(frame).await;
        }
        let (frames, ending) = client.read_to_end().await;
        assert!(frames.is_empty(), "{frames:?}");
        assert_eq!(ending, Ending::Closed(code));
    }
    node.stop().await;
}

#[tokio::test]
async fn rule_tokens_expiring_beyond_the_clock_are_refused_without_panic() {
    let node = spawn_node(Store::Memory, test_config()).await;
    for exp in [1u64 << 63, i64::MAX as u64, u64::MAX] {
        let far = token_expiring(1, exp);
        let outcome = node.handshake(Some(&far), None, "").await.map(|_| ());
        assert_eq!(
            outcome,
            Err(Refused {
                status: 401,
                code: Some("unauthorized".to_owned()),
            }),
            "exp {exp}"
        );
        let mut browser = node.handshake(None, None, "").await.unwrap();
        browser
            .send_json(json!({"type": "auth", "token": far}))
            .await;
        let (frames, ending) = browser.read_to_end().await;
        assert!(frames.is_empty(), "{frames:?}");
        assert_eq!(ending, Ending::Closed(1008), "exp {exp}");
    }
    // The node is still serving.
    let mut alice = node.connect(1).await;
    alice.send_json(json!({"type": "ping"})).await;
    alice.expect("pong").await;
    node.stop().await;
}

async fn an_expiring_token_closes_the_socket_with_1008_unless_refreshed(store: Store) {
    let node = spawn_node(store, test_config()).await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Accepted for 2 more seconds (the verifier's leeway is 30 s).
    let leeway = chat_http::auth::LEEWAY_SECONDS;
    let short = token_expiring(1, now + 2 - leeway);

    let mut header_client = node.handshake(Some(&short), None, "").await.unwrap();
    assert_eq!(header_client.expect("ready").await["user_id"], 1);
    let mut frame_client = node.handshake(None, None, "").await.unwrap();
    frame_client
        .send_json(json!({"type": "auth", "token": short}))
        .await;
    frame_client.expect("ready").await;
    let mut refreshed = node.handshake(Some(&short), None, "").await.unwrap();
    refreshed.expect("ready").await;
    refreshed
        .send_json(json!({"type": "auth", "token": token(1)}))
        .await;
    // A refresh answers `ready` without a token: the connection is live and current.
    assert_eq!(
        refreshed.next_json().await,
        json!({"type": "ready", "user_id": 1, "resumed": false})
    );
    // Someone else's token cannot take over a connection.
    refreshed
        .send_json(json!({"type": "auth", "token": token(2)}))
        .await;
    assert_eq!(
        refreshed.expect("error").await["error"]["code"],
        "forbidden"
    );

    header_client.expect_close(1008).await;
    frame_client.expect_close(1008).await;
    refreshed.expect_nothing_pending().await;
    node.stop().await;
}

/// Over their budget, read frames get an `error` frame with `rate_limited` (as HTTP gets
/// 429), while typing frames over theirs are dropped without an answer and reach nobody.
#[tokio::test]
async fn rule_ws_frames_over_budget_get_rate_limited_errors_and_typing_is_dropped_silently() {
    let one_per_minute = |burst| {
        chat_service::Rate::per_minute(
            std::num::NonZeroU32::MIN,
            std::num::NonZeroU32::new(burst).unwrap(),
        )
    };
    let limits = chat_service::Limits {
        rates: chat_service::ActionRates {
            typing: one_per_minute(2),
            ..chat_service::ActionRates::uniform(one_per_minute(1))
        },
        ..ws_support::generous_limits()
    };
    let node = ws_support::spawn_node_limited(test_config(), limits).await;
    let group = node.group(1, &[2]).await;
    let mut alice = node.connect(1).await;
    let mut bob = node.connect(2).await;
    // Something unread, so that marking read moves Alice's marker and tells everyone.
    node.say(2, group, "unread").await;
    for client in [&mut alice, &mut bob] {
        assert_eq!(
            client.expect("message.created").await["message"]["sender_id"],
            2
        );
    }

    alice
        .send_json(
            json!({"type": "read", "request_id": "r1", "conversation_id": group.to_string()}),
        )
        .await;
    let frames = alice.expect_unordered(&["ack", "conversation.read"]).await;
    assert_eq!(frames[0]["request_id"], "r1");
    alice
        .send_json(
            json!({"type": "read", "request_id": "r2", "conversation_id": group.to_string()}),
        )
        .await;
    let error = alice.expect("error").await;
    assert_eq!(error["request_id"], "r2", "{error:#}");
    assert_eq!(error["error"]["code"], "rate_limited", "{error:#}");
    assert_eq!(error["error"]["status"], 429, "{error:#}");

    for (i, expect_ack) in [(1, true), (2, true), (3, false), (4, false)] {
        alice
            .send_json(json!({"type": "typing", "request_id": format!("t{i}"),
                "conversation_id": group.to_string(), "is_typing": true}))
            .await;
        if expect_ack {
            assert_eq!(alice.expect("ack").await["request_id"], format!("t{i}"));
        }
    }
    // Nothing answered the dropped frames: the next frame is the pong of this ping.
    alice.expect_nothing_pending().await;
    bob.expect("conversation.read").await;
    bob.expect("typing").await;
    bob.expect("typing").await;
    bob.expect_nothing_pending().await;
    node.stop().await;
}

/// A user may keep 20 WebSockets open on a node; the 21st, authenticated by header or by
/// an `auth` frame, is closed with 4029 without `ready`, and closing one frees a place.
#[tokio::test]
async fn rule_the_21st_websocket_of_a_user_is_closed_with_4029() {
    let node = spawn_node(Store::Memory, test_config()).await;
    node.users(&[1, 2]).await;
    let mut open = Vec::new();
    for _ in 0..20 {
        open.push(node.connect(1).await);
    }
    let mut by_header = node
        .handshake(Some(&token(1)), None, "")
        .await
        .expect("the handshake itself is accepted");
    let (frames, ending) = by_header.read_to_end().await;
    assert_eq!(ending, Ending::Closed(4029), "{frames:#?}");
    assert!(frames.is_empty(), "no ready: {frames:#?}");
    let mut by_frame = node.handshake(None, None, "").await.unwrap();
    by_frame
        .send_json(json!({"type": "auth", "token": token(1)}))
        .await;
    let (frames, ending) = by_frame.read_to_end().await;
    assert_eq!(ending, Ending::Closed(4029), "{frames:#?}");
    assert!(frames.is_empty(), "no ready: {frames:#?}");
    assert_eq!(node.realtime.hub().connections_of(uid(1)), 20);

    // Another user is not affected.
    node.connect(2).await;
    // Closing one frees its place.
    let mut first = open.remove(0);
    first.socket.close(None).await.unwrap();
    let _ = first.read_to_end().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while node.realtime.hub().connections_of(uid(1)) > 19 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the closed socket is never detached"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    open.push(node.connect(1).await);
    assert_eq!(node.realtime.hub().connections_of(uid(1)), 20);
    node.stop().await;
}

/// A REST call as `user` on `node`; the status and the JSON body.
async fn rest(
    node: &Node,
    user: i64,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .request(method, node.http(path))
        .bearer_auth(token(user));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    let bytes = response.bytes().await.expect("body");
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, body)
}

/// Every change `user` may see since `since`, read through `GET /api/v1/sync` in pages
/// of `limit`; the events and the last `next`.
async fn sync_all(node: &Node, user: i64, since: &str, limit: u32) -> (Vec<Value>, String) {
    let mut events = Vec::new();
    let mut since = since.to_owned();
    loop {
        let (status, page) = rest(
            node,
            user,
            reqwest::Method::GET,
            &format!("/api/v1/sync?since={since}&limit={limit}"),
            None,
        )
        .await;
        assert_eq!(status, 200, "{page:#}");
        events.extend(page["events"].as_array().unwrap().iter().cloned());
        since = page["next"].as_str().unwrap().to_owned();
        if page["has_more"] == false {
            return (events, since);
        }
    }
}

/// The position a sync token stands at.
fn token_pos(token: &str) -> u64 {
    token.rsplit('.').next().unwrap().parse().unwrap()
}

/// Where `node`'s relay stands, by its gauge (set every second): every change at or
/// below it has been published.
fn relayed(node: &Node) -> u64 {
    let metrics = node.metrics.render();
    let line = metrics
        .lines()
        .find_map(|line| line.strip_prefix("chat_feed_position{of=\"relayed\"} "))
        .unwrap_or_else(|| panic!("no relay gauge in {metrics}"));
    line.trim().parse().unwrap()
}

/// Reads a resumed connection up to its `ready`: the replayed events and the `ready`.
async fn replay_until_ready(client: &mut WsClient) -> (Vec<Value>, Value) {
    let mut replayed = Vec::new();
    loop {
        let frame = client.next_json().await;
        if frame["type"] == "ready" {
            return (replayed, frame);
        }
        replayed.push(frame);
    }
}

async fn resuming_after_a_gap_replays_every_missed_change_once_then_goes_live(store: Store) {
    use reqwest::Method;
    let node = spawn_node(store, test_config()).await;
    let group = node.group(1, &[2, 3]).await;
    let bob = node.connect(2).await;
    drop(bob);
    // Bob's token: what a client keeps from its last `ready`.
    let (_, head) = rest(&node, 2, Method::GET, "/api/v1/sync", None).await;
    let since = head["next"].as_str().unwrap().to_owned();

    // While bob is away: every kind of change.
    let (_, first) = rest(
        &node,
        1,
        Method::POST,
        &format!("/api/v1/conversations/{group}/messages"),
        Some(json!({"content": "first 🚆"})),
    )
    .await;
    let first_id = first["id"].as_str().unwrap().to_owned();
    let (_, second) = rest(
        &node,
        1,
        Method::POST,
        &format!("/api/v1/conversations/{group}/messages"),
        Some(json!({"content": "second, soon gone"})),
    )
    .await;
    let second_id = second["id"].as_str().unwrap().to_owned();
    let steps: Vec<(Method, String, Option<Value>, i64)> = vec![
        (
            Method::PATCH,
            format!("/api/v1/messages/{first_id}"),
            Some(json!({"content": "first, edited ✏️"})),
            1,
        ),
        (
            Method::DELETE,
            format!("/api/v1/messages/{second_id}"),
            None,
            1,
        ),
        (
            Method::PUT,
            format!("/api/v1/messages/{first_id}/reactions/%F0%9F%91%8D%F0%9F%8F%BD"),
            None,
            3,
        ),
        (
            Method::POST,
            format!("/api/v1/conversations/{group}/read"),
            Some(json!({})),
            3,
        ),
        (
            Method::POST,
            format!("/api/v1/conversations/{group}/participants"),
            Some(json!({"user_ids": [4]})),
            1,
        ),
        (
            Method::DELETE,
            format!("/api/v1/conversations/{group}/participants/3"),
            None,
            1,
        ),
        (
            Method::PATCH,
            format!("/api/v1/conversations/{group}"),
            Some(json!({"name": "renamed 🎉"})),
            1,
        ),
    ];
    node.users(&[4]).await;
    for (method, path, body, actor) in steps {
        let (status, reply) = rest(&node, actor, method.clone(), &path, body).await;
        assert!(status < 300, "{method} {path}: {status} {reply:#}");
    }

    let mut bob = node
        .handshake(Some(&token(2)), None, &format!("?since={since}"))
        .await
        .unwrap();
    let (replayed, ready) = replay_until_ready(&mut bob).await;
    assert_eq!(ready["resumed"], true, "{ready:#}");
    assert_eq!(ready["user_id"], 2);
    let next = ready["next"].as_str().unwrap().to_owned();

    // In order, exactly once, and exactly what GET /sync serves (the same JSON).
    let positions: Vec<u64> = replayed
        .iter()
        .map(|e| e["pos"].as_u64().unwrap())
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "strictly increasing positions: {positions:?}"
    );
    assert!(positions.iter().all(|&p| p > token_pos(&since)));
    assert!(
        positions.last().is_some_and(|&p| p <= token_pos(&next)),
        "{positions:?} then {ready:#}"
    );
    let (served, rest_next) = sync_all(&node, 2, &since, 3).await;
    assert_eq!(replayed, served);
    assert_eq!(next, rest_next);

    let kinds: Vec<&str> = replayed
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    for kind in [
        "message.created",
        "message.updated",
        "message.deleted",
        "reaction.added",
        "conversation.read",
        "participant.added",
        "participant.removed",
        "conversation.updated",
    ] {
        assert!(kinds.contains(&kind), "{kind} replayed: {kinds:?}");
    }
    let created: Vec<&Value> = replayed
        .iter()
        .filter(|e| e["type"] == "message.created" && e["message"]["is_system_message"] == false)
        .collect();
    // The deleted message is not served; the edited one shows its current content.
    assert_eq!(created.len(), 1, "{created:#?}");
    assert_eq!(created[0]["message"]["content"], "first, edited ✏️");
    assert!(
        !serde_json::to_string(&replayed)
            .unwrap()
            .contains("soon gone")
    );
    let reaction = replayed
        .iter()
        .find(|e| e["type"] == "reaction.added")
        .unwrap();
    assert_eq!(
        (&reaction["emoji"], &reaction["user_id"]),
        (&json!("👍🏽"), &json!(3))
    );
    let order = |kind: &str| kinds.iter().position(|k| *k == kind).unwrap();
    assert!(order("message.deleted") < order("reaction.added"));
    assert!(order("participant.added") < order("participant.removed"));
    assert!(order("participant.removed") < order("conversation.updated"));

    // Then live, every frame with a position after the token `ready` gave (the relay
    // publishes after the commit, so other changes of the send may come first).
    node.say(1, group, "live again").await;
    loop {
        let live = bob.next_json().await;
        assert!(live["pos"].as_u64().unwrap() > token_pos(&next), "{live:#}");
        if live["type"] == "message.created" {
            assert_eq!(live["message"]["content"], "live again");
            break;
        }
    }
    node.stop().await;
}

async fn no_duplicate_and_no_gap_between_replay_and_live_under_a_burst(store: Store) {
    const SENDS: usize = 60;
    let node = std::sync::Arc::new(spawn_node(store, test_config()).await);
    let group = node.group(1, &[2]).await;
    let (_, head) = rest(&node, 2, reqwest::Method::GET, "/api/v1/sync", None).await;
    let since = head["next"].as_str().unwrap().to_owned();
    for i in 0..10 {
        node.say(1, group, &format!("before {i}")).await;
    }
    // A burst of sends from several tasks while bob resumes.
    let burst = {
        let node = std::sync::Arc::clone(&node);
        tokio::spawn(async move {
            let sends = (0..SENDS).map(|i| {
                let node = std::sync::Arc::clone(&node);
                async move { node.say(1, group, &format!("burst {i}")).await }
            });
            futures::future::join_all(sends).await;
        })
    };
    let mut bob = node
        .handshake(Some(&token(2)), None, &format!("?since={since}"))
        .await
        .unwrap();
    let (replayed, ready) = replay_until_ready(&mut bob).await;
    assert_eq!(ready["resumed"], true);
    burst.await.unwrap();
    let mut frames = replayed;
    let mut contents = std::collections::BTreeSet::new();
    for frame in &frames {
        if frame["type"] == "message.created" {
            contents.insert(frame["message"]["content"].as_str().unwrap().to_owned());
        }
    }
    while contents.len() < SENDS + 10 {
        let frame = tokio::time::timeout(WAIT, bob.next_json())
            .await
            .unwrap_or_else(|_| panic!("missing {} of {contents:?}", SENDS + 10 - contents.len()));
        assert!(
            frame["pos"].as_u64().unwrap() > token_pos(ready["next"].as_str().unwrap()),
            "a live frame at or below the replay's end: {frame:#}"
        );
        if frame["type"] == "message.created" {
            let content = frame["message"]["content"].as_str().unwrap().to_owned();
            assert!(contents.insert(content.clone()), "{content} twice");
        }
        frames.push(frame);
    }
    // Exactly what GET /sync serves from the same token: no gap, and no duplicate.
    let mut received = std::collections::BTreeSet::new();
    for frame in &frames {
        let pos = frame["pos"].as_u64().unwrap();
        assert!(received.insert(pos), "position {pos} twice");
    }
    let (served, _) = sync_all(&node, 2, &since, 500).await;
    let served: std::collections::BTreeSet<u64> =
        served.iter().map(|e| e["pos"].as_u64().unwrap()).collect();
    // Changes the relay has still to deliver (read markers of the last sends) come now.
    while !served.is_subset(&received) {
        let frame = bob.next_json().await;
        let pos = frame["pos"].as_u64().unwrap();
        assert!(received.insert(pos), "position {pos} twice: {frame:#}");
    }
    assert_eq!(received, served);
    bob.expect_nothing_pending().await;
    match std::sync::Arc::try_unwrap(node) {
        Ok(node) => node.stop().await,
        Err(_) => panic!("the node is still shared"),
    }
}

async fn a_client_that_stops_reading_mid_replay_is_closed_with_4008_within_the_replay_deadline(
    store: Store,
) {
    use futures::StreamExt as _;
    use tokio::time::{Instant, sleep};

    // Missed sends of about 12 KB each (4000 three-byte characters): the first page of a
    // replay (500 changes, 6 MB) alone is more than the socket buffers on loopback (about
    // 3 MB), actix's channel and the connection's queues hold, so a client that does not
    // read stalls its replay moments after the first bytes reach it, before the server
    // reads (and, with a key ring, decrypts) another page.
    const MISSED: usize = 1000;
    let replay_frame_deadline = Duration::from_secs(1);
    // How long after the first bytes of its replay a stalled client must be cut off: the
    // deadline and some slack, well before the 10 s default would have run out.
    let bound = replay_frame_deadline + Duration::from_secs(3);
    let close_timeout = Duration::from_secs(2);
    let node = spawn_node(
        store,
        WsConfig {
            replay_frame_deadline,
            close_timeout,
            ..test_config()
        },
    )
    .await;
    let at = &node;
    let group = node.group(1, &[2, 3, 4]).await;
    let (_, head) = rest(&node, 2, reqwest::Method::GET, "/api/v1/sync", None).await;
    let since = head["next"].as_str().unwrap().to_owned();
    futures::stream::iter(0..MISSED)
        .map(|i| async move {
            at.say(1, group, &format!("{i:04} {}", "€".repeat(3995)))
                .await
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    // The relay publishes them live after their commits; the resumes start once it has
    // (its gauge is set every second), so that no live burst, which kicks even a fast
    // reader off its full queue, crosses their replays.
    let (_, now) = rest(&node, 1, reqwest::Method::GET, "/api/v1/sync", None).await;
    let head = token_pos(now["next"].as_str().unwrap());
    let relaying = Instant::now() + WAIT;
    while relayed(&node) < head {
        assert!(Instant::now() < relaying, "the relay never reached {head}");
        sleep(Duration::from_millis(50)).await;
    }

    // `user` resumes from the token through a tiny receive buffer and reads nothing: the
    // client, and how long after the first bytes of its replay the server let go of it.
    let stall = |user: i64| {
        let query = format!("?since={since}");
        async move {
            let connected = Instant::now();
            let client = at.handshake_small_buffer(user, &query).await;
            client.wait_for_bytes().await;
            let first_bytes = Instant::now();
            let hub = at.realtime.hub();
            assert_eq!(hub.connections_of(uid(user)), 1, "attached while replaying");
            while hub.connections_of(uid(user)) > 0 {
                assert!(
                    first_bytes.elapsed() < bound,
                    "user {user} is still attached {bound:?} into a replay it does not read"
                );
                sleep(Duration::from_millis(10)).await;
            }
            // Not before a replayed frame had waited its deadline.
            assert!(connected.elapsed() >= replay_frame_deadline);
            (client, first_bytes.elapsed())
        }
    };
    // Every connection's handler ends (the open-WebSockets gauge drops to 0) by `by`.
    let all_ended = |by: Instant| async move {
        while at.metrics.open_websockets().get() > 0 {
            assert!(Instant::now() < by, "a connection is still open");
            sleep(Duration::from_millis(10)).await;
        }
    };

    // One reads again as soon as it is cut off, while the server still tries to get the
    // close frame out (for the close timeout): it gets the start of the replay (never
    // `ready`), then the 4008, behind it.
    let (mut early, early_cut) = stall(2).await;
    let cut = Instant::now();
    let (early_frames, early_ending) = early.read_to_end().await;
    assert_eq!(
        early_ending,
        Ending::Closed(4008),
        "after {} frames",
        early_frames.len()
    );
    drop(early);
    all_ended(cut + close_timeout + Duration::from_secs(2)).await;

    // The other reads nothing within the close timeout: the server gives up on its close
    // frame (queued behind the frames it does not read) and ends the connection. When the
    // client reads at last, it gets the start of the replay, what its socket had taken
    // before the cut, then the end of the connection without a close frame: a socket that
    // is not read cannot carry the 4008, and that end is what the server guarantees.
    let (mut late, late_cut) = stall(3).await;
    let cut = Instant::now();
    all_ended(cut + close_timeout + Duration::from_secs(2)).await;
    let ended = cut.elapsed();
    let (late_frames, late_ending) = late.read_to_end().await;
    assert_eq!(
        late_ending,
        Ending::Dropped,
        "after {} frames",
        late_frames.len()
    );

    // The replay works for a client that reads, from the same token: every send, in
    // order, then `ready`; the stalled ones had the start of that very replay.
    let resuming = Instant::now();
    let (_fast, replayed, ready) = node.resume(4, &since).await;
    let fast = resuming.elapsed();
    assert_eq!(replayed.len(), MISSED, "{ready:#}");
    let positions: Vec<u64> = replayed
        .iter()
        .map(|e| e["pos"].as_u64().unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    assert!(positions[MISSED - 1] <= token_pos(ready["next"].as_str().unwrap()));
    let contents: std::collections::BTreeSet<&str> = replayed
        .iter()
        .map(|e| e["message"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents.len(), MISSED);
    for frames in [&early_frames, &late_frames] {
        assert!(
            !frames.is_empty() && frames.len() < MISSED,
            "{}",
            frames.len()
        );
        assert_eq!(frames[..], replayed[..frames.len()]);
    }
    eprintln!(
        "cut off {early_cut:?} and {late_cut:?} after their replays' first bytes ({} and {} \
         frames read, the second connection ended {ended:?} after its cut); the fast client \
         had all {MISSED} in {fast:?}",
        early_frames.len(),
        late_frames.len(),
    );
    node.stop().await;
}

async fn a_client_resuming_during_a_long_burst_gets_every_message_once_in_order_without_4008(
    store: Store,
) {
    use std::collections::BTreeSet;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::time::{Instant, sleep, sleep_until};

    // Far more sends than a connection's outbound queue holds (1,024 frames); bob resumes
    // from before them once half are stored, and the other half is published live while
    // his replay runs. Small messages: the replay is long in frames, cheap in bytes (and
    // in sealing, with a key ring).
    const BURST: usize = 3000;
    // Chunks of 20 concurrent sends (SQLite commits each chunk at once), at most one
    // chunk every 5 ms (4000 sends a second), each stored before the next starts: the
    // relay keeps up and hands the hub a steady stream, never a pile larger than a
    // connection's queue at once, which would fill the queue of any connection whose
    // writer is not scheduled at that moment (on a loaded machine), replay or not.
    const CHUNK: usize = 20;
    const EVERY: Duration = Duration::from_millis(5);
    let node = Arc::new(spawn_node(store, test_config()).await);
    let group = node.group(1, &[2]).await;
    let (_, head) = rest(&node, 2, reqwest::Method::GET, "/api/v1/sync", None).await;
    let since = head["next"].as_str().unwrap().to_owned();
    let stored = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let burst = {
        let node = Arc::clone(&node);
        let stored = Arc::clone(&stored);
        tokio::spawn(async move {
            let (node, stored) = (&node, &stored);
            let numbers: Vec<usize> = (0..BURST).collect();
            for (k, chunk) in (0_u32..).zip(numbers.chunks(CHUNK)) {
                sleep_until(started + EVERY * k).await;
                futures::future::join_all(chunk.iter().map(|i| async move {
                    node.say(1, group, &format!("{i:04} {}", "€".repeat(50)))
                        .await;
                    stored.fetch_add(1, Ordering::Relaxed);
                }))
                .await;
            }
        })
    };
    while stored.load(Ordering::Relaxed) < BURST / 2 {
        assert!(started.elapsed() < 2 * WAIT, "the burst is too slow");
        sleep(Duration::from_millis(5)).await;
    }
    // Bob reads as fast as he can. A close (the 4008 of a full queue) fails `next_json`,
    // which expects text frames.
    let mut bob = node
        .handshake(Some(&token(2)), None, &format!("?since={since}"))
        .await
        .unwrap();
    let (mut frames, ready) = replay_until_ready(&mut bob).await;
    assert_eq!(ready["resumed"], true, "{ready:#}");
    let replayed = frames.len();
    let at_ready = stored.load(Ordering::Relaxed);
    let created = |frames: &[Value]| {
        frames
            .iter()
            .filter(|f| f["type"] == "message.created")
            .count()
    };
    while created(&frames) < BURST {
        frames.push(bob.next_json().await);
    }
    burst.await.unwrap();
    let elapsed = started.elapsed();

    // Every message of the burst once, in order: positions and `seq`s rise throughout,
    // across the replay and the live frames, and the positions are exactly those that
    // GET /sync serves from the same token; nothing else is pending.
    let positions: Vec<u64> = frames.iter().map(|f| f["pos"].as_u64().unwrap()).collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "positions rise: {positions:?}"
    );
    let messages: Vec<&Value> = frames
        .iter()
        .filter(|f| f["type"] == "message.created")
        .map(|f| &f["message"])
        .collect();
    let seqs: Vec<i64> = messages
        .iter()
        .map(|m| m["seq"].as_i64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "seqs rise: {seqs:?}");
    let numbers: BTreeSet<usize> = messages
        .iter()
        .map(|m| m["content"].as_str().unwrap()[..4].parse().unwrap())
        .collect();
    assert_eq!(numbers, (0..BURST).collect::<BTreeSet<_>>());
    let (served, _) = sync_all(&node, 2, &since, 500).await;
    let served: Vec<u64> = served.iter().map(|e| e["pos"].as_u64().unwrap()).collect();
    assert_eq!(positions, served);
    bob.expect_nothing_pending().await;
    eprintln!(
        "{replayed} frames replayed, then `ready` with {at_ready} of the {BURST} sends stored; \
         all {BURST} read {elapsed:?} after the burst began"
    );
    drop(bob);
    match Arc::try_unwrap(node) {
        Ok(node) => node.stop().await,
        Err(_) => panic!("the node is still shared"),
    }
}

/// A relay that starts late (after a crash, an outage, a slow store) catches up on what was
/// committed meanwhile in batches of up to 500 changes, published at once: a live client
/// that reads gets them all, once and in order, and is not closed as a slow consumer.
async fn a_live_client_gets_every_message_in_order_when_the_relay_catches_up_on_a_backlog(
    store: Store,
) {
    use tokio::time::Instant;

    // More than three relay batches (500 changes each), all committed before the relay
    // starts; more than a connection's outbound queue holds (1,024 frames).
    const BACKLOG: usize = 1600;
    const CHUNK: usize = 50;
    // Long enough for SQLite to store the backlog on a loaded machine (about 1 s alone).
    const DELAY: Duration = Duration::from_secs(10);
    let started = Instant::now();
    let node = spawn_node_with_late_relay(store, test_config(), DELAY).await;
    let group = node.group(1, &[2]).await;
    let mut bob = node.connect(2).await;
    let numbers: Vec<usize> = (0..BACKLOG).collect();
    for chunk in numbers.chunks(CHUNK) {
        futures::future::join_all(chunk.iter().map(|i| {
            let node = &node;
            async move {
                node.say(1, group, &format!("{i:04} 🎉 {}", "é".repeat(40)))
                    .await
            }
        }))
        .await;
    }
    let stored = started.elapsed();
    assert!(
        stored < DELAY,
        "the backlog was stored before the relay started ({stored:?})"
    );
    // Nothing was published yet: the relay has not started.
    bob.expect_nothing_pending().await;

    // Bob reads as fast as he can; a close (4008) fails `next_json`, which expects text.
    let mut numbers_seen = Vec::with_capacity(BACKLOG);
    let mut positions = Vec::with_capacity(BACKLOG);
    while numbers_seen.len() < BACKLOG {
        let frame = bob.next_json().await;
        positions.push(frame["pos"].as_u64().unwrap());
        if frame["type"] == "message.created" {
            let content = frame["message"]["content"].as_str().unwrap();
            numbers_seen.push(content[..4].parse::<usize>().unwrap());
        }
    }
    assert_eq!(numbers_seen, (0..BACKLOG).collect::<Vec<_>>());
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "positions rise: {positions:?}"
    );
    bob.expect_nothing_pending().await;
    assert_eq!(node.realtime.hub().connection_count(), 1);
    eprintln!("{BACKLOG} sends stored in {stored:?}, then relayed at once and all read");
    node.stop().await;
}

async fn a_token_the_server_cannot_resume_from_gets_an_error_then_a_fresh_ready(store: Store) {
    let node = spawn_node(store, test_config()).await;
    node.users(&[1]).await;
    // Malformed in the handshake: refused before upgrading.
    for query in [
        "?since=garbage",
        "?since=",
        "?since=v1.0123456789abcdef0123456789abcdef.01",
    ] {
        let refused = node.handshake(Some(&token(1)), None, query).await.err();
        assert_eq!(
            refused,
            Some(Refused {
                status: 400,
                code: Some("validation_failed".to_owned()),
            }),
            "{query}"
        );
    }
    // Of another feed (another deployment's database): 410's code, then a fresh start.
    let foreign = "v1.0123456789abcdef0123456789abcdef.5";
    let mut client = node
        .handshake(Some(&token(1)), None, &format!("?since={foreign}"))
        .await
        .unwrap();
    let error = client.expect("error").await;
    assert_eq!(error["error"]["code"], "sync_token_expired", "{error:#}");
    assert_eq!(error["error"]["status"], 410);
    ws_support::assert_fresh_ready(&client.next_json().await, 1);
    // Malformed in an auth frame: the same, with validation_failed.
    let mut browser = node.handshake(None, None, "").await.unwrap();
    browser
        .send_json(json!({"type": "auth", "token": token(1), "since": "v9.nope"}))
        .await;
    let error = browser.expect("error").await;
    assert_eq!(error["error"]["code"], "validation_failed", "{error:#}");
    assert_eq!(error["error"]["errors"][0]["field"], "since");
    ws_support::assert_fresh_ready(&browser.next_json().await, 1);
    // Older than the retention: the feed's floor has moved past it (a purge).
    let group = node.group(1, &[]).await;
    let (_, head) = rest(&node, 1, reqwest::Method::GET, "/api/v1/sync", None).await;
    let old = head["next"].as_str().unwrap().to_owned();
    let mut live = node.connect(1).await;
    node.say(1, group, "then purged").await;
    // The relay has published the send's one change before the purge.
    live.expect("message.created").await;
    let later = node.storage.ports.clock.now() + Duration::from_secs(3600);
    for round in 0.. {
        let purged = node.storage.ports.feed.purge(later, 1000).await.unwrap();
        if !purged.more {
            break;
        }
        assert!(round < 10, "the purge ends: {purged:?}");
    }
    let (status, problem) = tokio::time::timeout(
        WAIT,
        rest(
            &node,
            1,
            reqwest::Method::GET,
            &format!("/api/v1/sync?since={old}"),
            None,
        ),
    )
    .await
    .expect("GET /sync answers a purged token in time");
    assert_eq!(
        (status, &problem["code"]),
        (410, &json!("sync_token_expired"))
    );
    let mut client = node
        .handshake(Some(&token(1)), None, &format!("?since={old}"))
        .await
        .unwrap();
    let error = client.expect("error").await;
    assert_eq!(error["error"]["code"], "sync_token_expired", "{error:#}");
    ws_support::assert_fresh_ready(&client.next_json().await, 1);
    // A good token in an auth frame resumes (nothing missed here).
    let (_, head) = rest(&node, 1, reqwest::Method::GET, "/api/v1/sync", None).await;
    let since = head["next"].as_str().unwrap();
    let mut resumed = node.handshake(None, None, "").await.unwrap();
    resumed
        .send_json(json!({"type": "auth", "token": token(1), "since": since}))
        .await;
    let ready = resumed.expect("ready").await;
    assert_eq!(ready["resumed"], true, "{ready:#}");
    assert_eq!(ready["next"], since);
    resumed.expect_nothing_pending().await;
    node.stop().await;
}
