//! Durability: writes acknowledged before a `kill -9` are all there after reopening, exactly
//! once, and the file opens cleanly (the lock dies with the process).
//!
//! The test runs twice in two processes: as the parent it prepares a database, starts this
//! same test binary again as the child, lets it send until it has acknowledged enough
//! messages, kills it with SIGKILL and checks the file; as the child (when
//! `CHAT_SQLITE_CRASH_CHILD` names the file) it sends from several tasks and prints one
//! `ack <message id>` line per acknowledged send, until it is killed.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a failed expectation panics.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chat_domain::{ConversationId, MessageId, UserId};
use chat_ports::{ChangeFeed, ConversationStore, MessageStore, NewMessage, UserDirectory};
use chat_sqlite::{SqliteSettings, SqliteStore};
use time::OffsetDateTime;

const CHILD: &str = "CHAT_SQLITE_CRASH_CHILD";
const CONVERSATION: &str = "CHAT_SQLITE_CRASH_CONVERSATION";
const ACKS_BEFORE_KILL: usize = 300;

fn user(id: i64) -> UserId {
    UserId::new(id).unwrap()
}

/// The child: sends from eight tasks forever, one `ack` line per acknowledged send.
async fn send_until_killed(location: &str, conversation: ConversationId) {
    let store = SqliteStore::open(location, SqliteSettings::default())
        .await
        .expect("the child opens the file")
        .with_cipher(chat_contract::switch::cipher());
    let tasks = (0..8).map(|task| {
        let store = store.clone();
        tokio::spawn(async move {
            for n in 0.. {
                let id = MessageId::new();
                store
                    .append_message(NewMessage {
                        id,
                        conversation_id: conversation,
                        sender_id: user(1 + task % 2),
                        body: common::text(&format!("task {task} message {n}")),
                        reply_to_id: None,
                        client_message_id: None,
                        created_at: OffsetDateTime::now_utc(),
                    })
                    .await
                    .expect("send");
                println!("ack {id}");
            }
        })
    });
    futures::future::join_all(tasks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_sends_survive_kill_9_exactly_once() {
    if let Ok(location) = std::env::var(CHILD) {
        let conversation = ConversationId::parse(&std::env::var(CONVERSATION).unwrap()).unwrap();
        send_until_killed(&location, conversation).await;
        return;
    }

    let db = common::fresh_store().await;
    for id in 1..=2 {
        db.store.upsert_user(user(id), None).await.unwrap();
    }
    let direct = db
        .store
        .get_or_create_direct(
            ConversationId::new(),
            user(1),
            user(2),
            OffsetDateTime::now_utc(),
        )
        .await
        .unwrap();
    let conversation = direct.details.conversation.id;
    db.store.close().await;

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "acknowledged_sends_survive_kill_9_exactly_once",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, db.location())
        .env(CONVERSATION, conversation.to_string())
        .envs(chat_contract::switch::child_env())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (acks, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(id) = line.strip_prefix("ack ") {
                if acks.send(MessageId::parse(id.trim()).unwrap()).is_err() {
                    break;
                }
            }
        }
    });
    let mut acknowledged = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while acknowledged.len() < ACKS_BEFORE_KILL {
        let left = deadline.saturating_duration_since(Instant::now());
        match received.recv_timeout(left) {
            Ok(id) => acknowledged.push(id),
            Err(e) => {
                let _ = child.kill();
                panic!(
                    "the child acknowledged {} sends, then: {e}",
                    acknowledged.len()
                );
            }
        }
    }
    // SIGKILL, mid-batch: no chance to finish, flush or unlock.
    child.kill().unwrap();
    child.wait().unwrap();
    // Acknowledgements already in the pipe were acknowledged before the kill too.
    while let Ok(id) = received.recv_timeout(Duration::from_millis(200)) {
        acknowledged.push(id);
    }

    let store = SqliteStore::open(&db.location(), SqliteSettings::default())
        .await
        .expect("the file opens after the crash: the lock died with the process")
        .with_cipher(chat_contract::switch::cipher());
    store.migrate().await.unwrap();
    let mut raw = common::raw::connect(&db.location()).await;
    let distinct: HashSet<MessageId> = acknowledged.iter().copied().collect();
    assert_eq!(distinct.len(), acknowledged.len());
    for id in &acknowledged {
        let found = store.find_message(*id).await.unwrap();
        assert!(
            found.is_some_and(|view| !view.message.undecryptable),
            "acknowledged message {id} lost or unreadable"
        );
        let copies = common::raw::scalar(
            &mut raw,
            "SELECT COUNT(*) FROM MESSAGES WHERE id = ?",
            Some(id.to_string()),
        )
        .await;
        assert_eq!(copies, 1);
    }
    // Whatever else committed is whole: seq gap-free, and the conversation agrees.
    let stored = common::raw::scalar(&mut raw, "SELECT COUNT(*) FROM MESSAGES", None).await;
    let last_seq = common::raw::scalar(
        &mut raw,
        "SELECT last_seq FROM CONVERSATIONS WHERE id = ?",
        Some(conversation.to_string()),
    )
    .await;
    let max_seq =
        common::raw::scalar(&mut raw, "SELECT COALESCE(MAX(seq), 0) FROM MESSAGES", None).await;
    assert!(stored >= i64::try_from(acknowledged.len()).unwrap());
    assert_eq!((stored, max_seq), (last_seq, last_seq));
    let integrity: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut raw)
        .await
        .unwrap();
    assert_eq!(integrity, "ok");
    // The change feed committed with the messages: the DIRECT's creation, then for each
    // stored message its `message.created` (and nothing else: the sender's marker move is
    // implied), numbered 1..head without a gap, and the head is where the feed goes on.
    let entries = common::raw::scalar(&mut raw, "SELECT COUNT(*) FROM CHANGE_LOG", None).await;
    let newest = common::raw::scalar(
        &mut raw,
        "SELECT COALESCE(MAX(pos), 0) FROM CHANGE_LOG",
        None,
    )
    .await;
    let announced = common::raw::scalar(
        &mut raw,
        "SELECT COUNT(*) FROM MESSAGES m WHERE (SELECT COUNT(*) FROM CHANGE_LOG l \
         WHERE l.kind = 1 AND l.message_id = m.id) = 1",
        None,
    )
    .await;
    assert_eq!((entries, newest), (1 + stored, 1 + stored));
    assert_eq!(announced, stored, "one message.created per stored message");
    let bounds = store.feed_bounds().await.unwrap();
    assert_eq!(bounds.head.as_i64(), newest);
    store.close().await;
}
