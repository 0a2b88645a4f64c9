//! Receipts written after the commit from recorded marker moves (docs/schema.md, "Receipts
//! from marker moves"): "seen by" answers the same while a move is pending and after its
//! receipts are written; `MESSAGE_READ_RECEIPTS` gets exactly the rows the synchronous
//! design wrote, within a bounded lag under load; moves left by a process that stopped
//! before writing their receipts are repaired by the next store on the database; rows the
//! previous system writes keep counting.
#![allow(clippy::unwrap_used)] // Test code: a failed expectation panics.

mod common;

use common::{system, text};

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chat_domain::{ConversationId, ConversationType, GroupName, MessageId, UserId};
use chat_mysql::MySqlStore;
use chat_ports::{
    ConversationStore, MessageStore, NewConversation, NewMessage, ReadStateStore, UserDirectory,
};
use futures::future::join_all;
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use time::OffsetDateTime;

fn user(id: i64) -> UserId {
    UserId::new(id).unwrap()
}

fn at(second: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_800_000_000 + second).unwrap()
}

fn message(conversation: ConversationId, sender: i64, second: i64) -> NewMessage {
    NewMessage {
        id: MessageId::new(),
        conversation_id: conversation,
        sender_id: user(sender),
        body: text("hello"),
        reply_to_id: None,
        client_message_id: None,
        created_at: at(second),
    }
}

async fn group(store: &MySqlStore, members: &[i64]) -> ConversationId {
    let id = ConversationId::new();
    store
        .create_conversation(
            NewConversation {
                id,
                kind: ConversationType::Group,
                name: Some(GroupName::parse("receipts").unwrap()),
                posting_id: None,
                created_by: user(1),
                members: members.iter().map(|m| user(*m)).collect(),
                created_at: at(0),
            },
            NewMessage {
                body: system("created"),
                ..message(id, 1, 0)
            },
        )
        .await
        .unwrap();
    id
}

async fn pending_moves(store: &MySqlStore) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM READ_MARKER_MOVES")
        .fetch_one(store.pool())
        .await
        .unwrap()
}

/// (message, user, read_at) of every stored receipt.
async fn stored_receipts(store: &MySqlStore) -> BTreeSet<(String, i64, OffsetDateTime)> {
    sqlx::query_as::<_, (String, i64, OffsetDateTime)>(
        "SELECT message_id, user_id, read_at FROM MESSAGE_READ_RECEIPTS",
    )
    .fetch_all(store.pool())
    .await
    .unwrap()
    .into_iter()
    .collect()
}

/// Waits until every recorded move has its receipts; how long that took.
async fn settle(store: &MySqlStore, bound: Duration) -> Duration {
    let start = Instant::now();
    while pending_moves(store).await > 0 {
        assert!(
            start.elapsed() < bound,
            "moves still pending after {bound:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    start.elapsed()
}

/// "Seen by" of each message, as the store answers it.
async fn seen_by(store: &MySqlStore, ids: &[MessageId]) -> Vec<Vec<(i64, OffsetDateTime)>> {
    let mut all = Vec::new();
    for id in ids {
        all.push(
            store
                .receipts(*id)
                .await
                .unwrap()
                .iter()
                .map(|r| (r.user_id.get(), r.read_at))
                .collect(),
        );
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_moves_answer_like_receipts_and_are_repaired_by_the_next_store() {
    let Some(db) = common::fresh_store().await else {
        return;
    };
    for id in 1..=3 {
        db.store.upsert_user(user(id), None).await.unwrap();
    }
    // The test's store stops (with its background task); a store without one (made outside
    // any runtime, on a pool of its own) writes next: its moves stay pending, as after a
    // crash between a commit and the receipts.
    let name = db.name.clone();
    assert!(db.store.shut_down(Duration::from_secs(5)).await);
    let options: MySqlConnectOptions = common::database_url(&name).parse().unwrap();
    let pool = MySqlPoolOptions::new()
        .max_connections(4)
        .after_connect(|conn, _meta| Box::pin(chat_mysql::prepare_session(conn)))
        .connect_with(options)
        .await
        .unwrap();
    let stopped = std::thread::spawn(move || MySqlStore::new(pool))
        .join()
        .unwrap();
    let c = group(&stopped, &[2, 3]).await;
    let mut ids = Vec::new();
    for (second, sender) in [(1, 1), (2, 2), (3, 1), (4, 3)] {
        ids.push(
            stopped
                .append_message(message(c, sender, second))
                .await
                .unwrap()
                .view
                .message
                .id,
        );
    }
    stopped.mark_read(c, user(2), None, at(10)).await.unwrap();
    stopped
        .delete_message(ids[2], user(1), at(11))
        .await
        .unwrap();
    // The previous system's own receipt, by plain SQL, earlier than the pending move's.
    sqlx::query(
        "INSERT INTO MESSAGE_READ_RECEIPTS (message_id, user_id, read_at) VALUES (?, 3, ?)",
    )
    .bind(ids[0].to_string())
    .bind(at(3))
    .execute(stopped.pool())
    .await
    .unwrap();
    assert!(pending_moves(&stopped).await > 0);
    let pending = seen_by(&stopped, &ids).await;
    assert_eq!(
        pending,
        vec![
            // Passed by user 2's send at 2, then by the previous system's receipt of user 3
            // at 3 (user 3's own send at 4 passed it later: the first pass counts).
            vec![(2, at(2)), (3, at(3))],
            // User 2's own message: passed by user 1's send at 3 and user 3's at 4.
            vec![(1, at(3)), (3, at(4))],
            // Deleted: no receipts.
            vec![],
            // Passed by user 2's mark_read.
            vec![(2, at(10))],
        ]
    );
    assert!(
        stored_receipts(&stopped).await.len() == 1,
        "only the previous system's row is written yet"
    );

    // The next store on the database writes the receipts of the moves left behind.
    stopped.pool().close().await;
    let restarted = common::open(&name).await;
    settle(&restarted, Duration::from_secs(3)).await;
    assert_eq!(seen_by(&restarted, &ids).await, pending, "the same answers");
    // (The creation announcement's receipts aside: it is not in `ids`.)
    let listed: BTreeSet<String> = ids.iter().map(ToString::to_string).collect();
    let of_listed = |all: BTreeSet<(String, i64, OffsetDateTime)>| -> BTreeSet<_> {
        all.into_iter().filter(|r| listed.contains(&r.0)).collect()
    };
    let stored = of_listed(stored_receipts(&restarted).await);
    let expected: BTreeSet<(String, i64, OffsetDateTime)> = [
        (ids[0], 2, at(2)),
        (ids[0], 3, at(3)),
        (ids[1], 1, at(3)),
        (ids[1], 3, at(4)),
        (ids[3], 2, at(10)),
    ]
    .into_iter()
    .map(|(id, user, read_at)| (id.to_string(), user, read_at))
    .collect();
    assert_eq!(stored, expected, "the rows the synchronous design wrote");
    // Written again (a second run over the same moves): nothing changes.
    assert_eq!(restarted.materialize_receipts().await.unwrap(), 0);
    assert_eq!(of_listed(stored_receipts(&restarted).await), expected);
    assert!(restarted.shut_down(Duration::from_secs(5)).await);
    chat_test_support::mysql::drop_database(&name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_receipts_lag_stays_bounded_under_load() {
    let Some(db) = common::fresh_store().await else {
        return;
    };
    let store = db.store.clone();
    for id in 1..=8 {
        store.upsert_user(user(id), None).await.unwrap();
    }
    let mut conversations = Vec::new();
    for _ in 0..4 {
        conversations.push(group(&store, &[2, 3, 4, 5, 6, 7, 8]).await);
    }
    // 32 loops sending (each send passes the others' messages since the sender's last) and
    // marking read, for a second; then the time until every move has its receipts.
    let started = Instant::now();
    let loops = (0..32_i64).map(|n| {
        let store = store.clone();
        let c = conversations[usize::try_from(n % 4).unwrap()];
        async move {
            let sender = 1 + n % 8;
            let mut sent = 0;
            while started.elapsed() < Duration::from_secs(1) {
                store.append_message(message(c, sender, 1)).await.unwrap();
                if sent % 4 == 0 {
                    store
                        .mark_read(c, user(1 + (n + 1) % 8), None, at(2))
                        .await
                        .unwrap();
                }
                sent += 1;
            }
            sent
        }
    });
    let sent: i64 = join_all(loops).await.into_iter().sum();
    let lag = settle(&store, Duration::from_secs(5)).await;
    println!("{sent} sends in 1 s, then receipts lag {lag:?}");
    assert!(lag < Duration::from_millis(1500), "lag {lag:?}");
    // Every receipt a synchronous write would have made: each reader's receipts are the
    // others' live messages at or below their marker.
    let missing: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM CONVERSATION_PARTICIPANTS p JOIN MESSAGES m \
           ON m.conversation_id = p.conversation_id AND m.seq <= p.last_read_seq \
           AND m.sender_id <> p.user_id AND m.deleted_at IS NULL \
         WHERE NOT EXISTS (SELECT 1 FROM MESSAGE_READ_RECEIPTS r \
           WHERE r.message_id = m.id AND r.user_id = p.user_id)",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(missing, 0, "receipts missing once the lag has passed");
    db.finish().await;
}

/// The benchmark's big-group shape, scaled down: every member of a group of 100 sends in
/// turn (32 in flight), so each send moves its sender's marker past the ~99 messages since
/// their previous one. The send writes one move; the receipts it owes (~99 rows) are the
/// materializer's. Once it has drained, `MESSAGE_READ_RECEIPTS` holds every receipt; the
/// send rate, the receipts owed per second and the time to drain are printed for
/// docs/benchmarks.md (the lag is bounded only while the receipts owed per second stay
/// within what the materializer writes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_group_owes_a_receipt_per_member_per_message_and_they_all_arrive() {
    const MEMBERS: i64 = 100;
    const SENDS: i64 = 2 * MEMBERS;
    let Some(db) = common::fresh_store().await else {
        return;
    };
    let store = db.store.clone();
    for id in 1..=MEMBERS {
        store.upsert_user(user(id), None).await.unwrap();
    }
    let members: Vec<i64> = (2..=MEMBERS).collect();
    let c = group(&store, &members).await;
    let next = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    let started = Instant::now();
    let loops = (0..32).map(|_| {
        let store = store.clone();
        let next = next.clone();
        async move {
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= SENDS {
                    return;
                }
                store
                    .append_message(message(c, 1 + n % MEMBERS, 1 + n))
                    .await
                    .unwrap();
            }
        }
    });
    join_all(loops).await;
    let sending = started.elapsed();
    let pending_after_sends = pending_moves(&store).await;
    let drained = settle(&store, Duration::from_secs(300)).await;
    let receipts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM MESSAGE_READ_RECEIPTS")
        .fetch_one(store.pool())
        .await
        .unwrap();
    let missing: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM CONVERSATION_PARTICIPANTS p JOIN MESSAGES m \
           ON m.conversation_id = p.conversation_id AND m.seq <= p.last_read_seq \
           AND m.sender_id <> p.user_id AND m.deleted_at IS NULL \
         WHERE NOT EXISTS (SELECT 1 FROM MESSAGE_READ_RECEIPTS r \
           WHERE r.message_id = m.id AND r.user_id = p.user_id)",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(missing, 0, "receipts missing once the moves are drained");
    // The second round's senders each passed the MEMBERS - 1 messages sent since their own.
    assert!(
        receipts >= (MEMBERS - 1) * MEMBERS,
        "{receipts} receipts for {SENDS} sends into {MEMBERS} members"
    );
    let total = sending + drained;
    println!(
        "{SENDS} sends into a group of {MEMBERS} in {sending:?} ({:.0}/s), {:.0} receipts owed \
         per send; {pending_after_sends} moves pending after the sends, drained {drained:?} \
         later; {receipts} receipts in {total:?}: {:.0} receipt rows/s",
        SENDS as f64 / sending.as_secs_f64(),
        receipts as f64 / SENDS as f64,
        receipts as f64 / total.as_secs_f64(),
    );
    db.finish().await;
}
