//! Group commit of concurrent sends: bursts of appends that are stored in shared transactions
//! must be decided per request exactly as one-by-one appends would be (unknown conversation,
//! non-member, archived, idempotent repeats inside and across batches), with gap-free seqs,
//! exact counters, markers and receipts — checked against `COUNT` queries and a replay.
#![allow(clippy::unwrap_used)] // Test code: a failed expectation panics.

mod common;

use common::{system, text};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_domain::{
    ClientMessageId, ConversationId, ConversationType, GroupName, MessageBody, MessageId, UserId,
};
use chat_mysql::MySqlStore;
use chat_ports::{
    Appended, ConversationStore, MessageStore, NewConversation, NewMessage, StoreConflict,
    StoreError, UserDirectory,
};
use futures::future::join_all;
use time::OffsetDateTime;

fn user(id: i64) -> UserId {
    UserId::new(id).unwrap()
}

fn at(second: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_800_000_000 + second).unwrap()
}

fn message(
    conversation: ConversationId,
    sender: i64,
    body: MessageBody,
    key: Option<&str>,
) -> NewMessage {
    NewMessage {
        id: MessageId::new(),
        conversation_id: conversation,
        sender_id: user(sender),
        body,
        reply_to_id: None,
        client_message_id: key.map(|k| ClientMessageId::parse(k).unwrap()),
        created_at: at(10),
    }
}

async fn group(store: &MySqlStore, creator: i64, members: &[i64]) -> ConversationId {
    let id = ConversationId::new();
    store
        .create_conversation(
            NewConversation {
                id,
                kind: ConversationType::Group,
                name: Some(GroupName::parse("batch").unwrap()),
                posting_id: None,
                created_by: user(creator),
                members: members.iter().map(|m| user(*m)).collect(),
                created_at: at(0),
            },
            message(id, creator, system("created"), None),
        )
        .await
        .unwrap();
    id
}

/// user → last_read_seq of the active memberships.
async fn markers(store: &MySqlStore, conversation: ConversationId) -> BTreeMap<i64, i64> {
    sqlx::query_as::<_, (i64, i64)>(
        "SELECT user_id, last_read_seq FROM CONVERSATION_PARTICIPANTS \
         WHERE conversation_id = ? AND left_at IS NULL",
    )
    .bind(conversation.to_string())
    .fetch_all(store.pool())
    .await
    .unwrap()
    .into_iter()
    .collect()
}

/// (message, user) of every receipt of the conversation, once the receipts of every
/// recorded marker move are written (by the store's background task: the lag is bounded,
/// about a second at most, or this fails).
async fn receipts(store: &MySqlStore, conversation: ConversationId) -> BTreeSet<(String, i64)> {
    let waited = std::time::Instant::now();
    loop {
        let pending: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM READ_MARKER_MOVES WHERE conversation_id = ?")
                .bind(conversation.to_string())
                .fetch_one(store.pool())
                .await
                .unwrap();
        if pending == 0 {
            break;
        }
        assert!(
            waited.elapsed() < std::time::Duration::from_secs(3),
            "{pending} marker moves still without receipts after {:?}",
            waited.elapsed()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    sqlx::query_as::<_, (String, i64)>(
        "SELECT r.message_id, r.user_id FROM MESSAGE_READ_RECEIPTS r \
         JOIN MESSAGES m ON m.id = r.message_id WHERE m.conversation_id = ?",
    )
    .bind(conversation.to_string())
    .fetch_all(store.pool())
    .await
    .unwrap()
    .into_iter()
    .collect()
}

/// Every stored message of the conversation by seq: (seq, id, sender, created_at).
async fn stored(
    store: &MySqlStore,
    conversation: ConversationId,
) -> Vec<(i64, String, i64, OffsetDateTime)> {
    sqlx::query_as(
        "SELECT seq, id, sender_id, created_at FROM MESSAGES WHERE conversation_id = ? ORDER BY seq",
    )
    .bind(conversation.to_string())
    .fetch_all(store.pool())
    .await
    .unwrap()
}

/// A conversation's state before a burst.
struct Before {
    markers: BTreeMap<i64, i64>,
    receipts: BTreeSet<(String, i64)>,
    last_seq: i64,
}

async fn before(store: &MySqlStore, conversation: ConversationId) -> Before {
    Before {
        markers: markers(store, conversation).await,
        receipts: receipts(store, conversation).await,
        last_seq: stored(store, conversation).await.last().map_or(0, |m| m.0),
    }
}

/// Checks the conversation after a burst against counts and a replay of its messages: seqs
/// are 1..=last_seq, `last_message_at` is the newest message's time, every active
/// membership's unread count (`counted_total - unread_base`) equals the count and the
/// conversation's `counted_total` its countable messages, every
/// sender's marker is at their newest message (or where it was), and the receipts are those
/// of the replay (each sender passes the others' messages between their marker and theirs).
async fn check(store: &MySqlStore, conversation: ConversationId, before: &Before) {
    let messages = stored(store, conversation).await;
    let seqs: Vec<i64> = messages.iter().map(|m| m.0).collect();
    let count = i64::try_from(seqs.len()).unwrap();
    assert_eq!(seqs, (1..=count).collect::<Vec<_>>(), "gap-free seqs");
    let (last_seq, last_message_at): (i64, Option<OffsetDateTime>) =
        sqlx::query_as("SELECT last_seq, last_message_at FROM CONVERSATIONS WHERE id = ?")
            .bind(conversation.to_string())
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(last_seq, count, "last_seq");
    assert_eq!(
        last_message_at,
        messages.last().map(|m| m.3),
        "last_message_at"
    );

    let rows: Vec<(i64, i64, i64, bool)> = sqlx::query_as(
        "SELECT p.user_id, c.counted_total - p.unread_base, (SELECT COUNT(*) FROM MESSAGES m \
           WHERE m.conversation_id = p.conversation_id AND m.seq > p.last_read_seq \
             AND m.sender_id <> p.user_id AND m.deleted_at IS NULL \
             AND m.is_system_message IS NOT TRUE), \
           c.counted_total = (SELECT COUNT(*) FROM MESSAGES t WHERE t.conversation_id = c.id \
             AND t.deleted_at IS NULL AND t.is_system_message IS NOT TRUE) \
         FROM CONVERSATION_PARTICIPANTS p JOIN CONVERSATIONS c ON c.id = p.conversation_id \
         WHERE p.conversation_id = ? AND p.left_at IS NULL",
    )
    .bind(conversation.to_string())
    .fetch_all(store.pool())
    .await
    .unwrap();
    for (user_id, counter, counted, activity) in rows {
        assert_eq!(
            counter, counted,
            "user {user_id}: unread (by difference) vs COUNT"
        );
        assert!(activity, "user {user_id}: counted_total vs COUNT");
    }

    // Replay the messages stored after the snapshot.
    let mut replayed = before.markers.clone();
    let mut expected = before.receipts.clone();
    for (seq, _, sender, _) in messages.iter().filter(|m| m.0 > before.last_seq) {
        let marker = replayed.get(sender).copied().unwrap();
        for (_, id, _, _) in messages
            .iter()
            .filter(|m| m.0 > marker && m.0 < *seq && m.2 != *sender)
        {
            expected.insert((id.clone(), *sender));
        }
        replayed.insert(*sender, *seq);
    }
    assert_eq!(markers(store, conversation).await, replayed, "read markers");
    assert_eq!(receipts(store, conversation).await, expected, "receipts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_mixed_sends_is_decided_per_request() {
    let Some(db) = common::fresh_store().await else {
        return;
    };
    let store = Arc::new(db.store.clone());
    for id in 1..=6 {
        store.upsert_user(user(id), None).await.unwrap();
    }
    let g1 = group(&store, 1, &[2, 3]).await;
    let g2 = group(&store, 1, &[2, 4, 5]).await;
    let archived = group(&store, 1, &[2]).await;
    let left = group(&store, 1, &[3]).await;
    store
        .archive_conversation(archived, user(1), at(1), None)
        .await
        .unwrap();
    store
        .remove_participant(left, user(3), user(3), at(1), None)
        .await
        .unwrap();
    // A key stored before the burst: its repeats return it from the probe.
    let earlier = store
        .append_message(message(g2, 4, text("before"), Some("early")))
        .await
        .unwrap();
    let live = [g1, g2, left];
    let mut snapshots = HashMap::new();
    for c in live {
        snapshots.insert(c, before(&store, c).await);
    }

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Expect {
        Created,
        Repeat(&'static str),
        Earlier,
        NotFound,
        Archived,
    }
    let unknown = ConversationId::new();
    let mut burst: Vec<(NewMessage, Expect)> = Vec::new();
    for round in 0..6 {
        for sender in [1, 2, 3] {
            burst.push((
                message(g1, sender, text(&format!("g1 {round}")), None),
                Expect::Created,
            ));
        }
        for sender in [1, 2, 4, 5] {
            burst.push((
                message(g2, sender, text(&format!("g2 {round}")), None),
                Expect::Created,
            ));
        }
        burst.push((message(left, 1, text("still here"), None), Expect::Created));
        burst.push((message(g2, 5, system("a record"), None), Expect::Created));
        burst.push((message(g1, 6, text("outsider"), None), Expect::NotFound));
        burst.push((message(left, 3, text("gone"), None), Expect::NotFound));
        burst.push((message(unknown, 1, text("nowhere"), None), Expect::NotFound));
        burst.push((
            message(archived, 2, text("archived"), None),
            Expect::Archived,
        ));
        burst.push((
            message(g1, 1, text("dup"), Some("dup-1")),
            Expect::Repeat("g1/1/dup-1"),
        ));
        burst.push((
            message(g1, 2, text("dup"), Some("dup-1")),
            Expect::Repeat("g1/2/dup-1"),
        ));
        burst.push((
            message(g2, 4, text("again"), Some("early")),
            Expect::Earlier,
        ));
    }
    let calls = burst
        .iter()
        .map(|(new, _)| store.append_message(new.clone()));
    let results: Vec<Result<Appended, StoreError>> = join_all(calls).await;

    let mut repeats: HashMap<&str, Vec<&Appended>> = HashMap::new();
    for ((new, expect), result) in burst.iter().zip(&results) {
        match (expect, result) {
            (Expect::Created, Ok(a)) => {
                assert!(a.created, "{new:?}");
                assert_eq!(a.view.message.id, new.id);
            }
            (Expect::Repeat(key), Ok(a)) => repeats.entry(key).or_default().push(a),
            (Expect::Earlier, Ok(a)) => {
                assert!(!a.created);
                assert_eq!(a.view.message.id, earlier.view.message.id);
            }
            (Expect::NotFound, Err(StoreError::NotFound)) => {}
            (Expect::Archived, Err(StoreError::Conflict(StoreConflict::ConversationArchived))) => {}
            (expect, result) => panic!("{new:?}: expected {expect:?}, got {result:?}"),
        }
        if let Ok(a) = result {
            let mut recipients: Vec<i64> = a.recipients.iter().map(|u| u.get()).collect();
            recipients.sort_unstable();
            let mut active: Vec<i64> = markers(&store, new.conversation_id)
                .await
                .into_keys()
                .collect();
            active.sort_unstable();
            assert_eq!(recipients, active, "recipients");
        }
    }
    assert_eq!(repeats.len(), 2);
    for (key, answers) in repeats {
        assert_eq!(answers.len(), 6, "{key}");
        assert_eq!(
            answers.iter().filter(|a| a.created).count(),
            1,
            "{key}: one created"
        );
        let ids: BTreeSet<MessageId> = answers.iter().map(|a| a.view.message.id).collect();
        assert_eq!(ids.len(), 1, "{key}: one message");
    }
    let keyed: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM MESSAGES WHERE client_message_id IN (?, ?)")
            .bind(b"dup-1".as_slice())
            .bind(b"early".as_slice())
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(keyed, 3, "one row per (conversation, sender, key)");
    for c in live {
        check(&store, c, &snapshots[&c]).await;
    }
    let archived_seq: i64 = sqlx::query_scalar("SELECT last_seq FROM CONVERSATIONS WHERE id = ?")
        .bind(archived.to_string())
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(
        archived_seq, 1,
        "nothing stored in the archived conversation"
    );
    let stats = store.append_stats();
    assert!(
        stats.batched_requests > 0,
        "the burst formed batches: {stats:?}"
    );
    assert_eq!(stats.rolled_back, 0, "{stats:?}");
    db.finish().await;
}

/// The benchmark's shape in process: 32 loops over 64 groups of 4, senders rotating, each
/// loop waiting for its previous send. Prints the rate and how the sends were grouped.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_sending_loops_are_grouped_and_exact() {
    let Some(db) = common::fresh_store().await else {
        return;
    };
    let store = Arc::new(db.store.clone());
    for id in 1..=256 {
        store.upsert_user(user(id), None).await.unwrap();
    }
    let mut groups = Vec::new();
    for g in 0..64_i64 {
        let first = g * 4 + 1;
        groups.push((
            group(&store, first, &[first + 1, first + 2, first + 3]).await,
            first,
        ));
    }
    let mut snapshots = HashMap::new();
    for (c, _) in &groups {
        snapshots.insert(*c, before(&store, *c).await);
    }
    let groups = Arc::new(groups);
    let deadline = Instant::now() + Duration::from_secs(2);
    let loops = (0..32_usize).map(|task| {
        let store = Arc::clone(&store);
        let groups = Arc::clone(&groups);
        tokio::spawn(async move {
            let mut sent = 0_usize;
            while Instant::now() < deadline {
                let (conversation, first) = groups[task + 32 * (sent % 2)];
                let sender = first + i64::try_from(sent / 2 % 4).unwrap();
                let appended = store
                    .append_message(message(conversation, sender, text("load"), None))
                    .await
                    .unwrap();
                assert!(appended.created);
                sent += 1;
            }
            sent
        })
    });
    let started = Instant::now();
    let sent: usize = join_all(loops).await.into_iter().map(Result::unwrap).sum();
    let rate = sent as f64 / started.elapsed().as_secs_f64();
    let stats = store.append_stats();
    eprintln!(
        "{sent} sends, {rate:.0}/s; {stats:?}, mean batch {:.1}",
        stats.batched_requests as f64 / stats.batches.max(1) as f64
    );
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) - 64 FROM MESSAGES")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(rows, i64::try_from(sent).unwrap(), "every send stored once");
    for (c, _) in groups.iter() {
        check(&store, *c, &snapshots[c]).await;
    }
    db.finish().await;
}

/// A request whose insert fails inside a batch (here: a reply to a message that does not
/// exist, refused by the foreign key) rolls the batch back; every request of it then runs
/// alone, so only that one fails and the others are stored once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_insert_rolls_its_batch_back_and_the_others_run_alone() {
    let Some(db) = common::fresh_store().await else {
        return;
    };
    let store = Arc::new(db.store.clone());
    for id in 1..=4 {
        store.upsert_user(user(id), None).await.unwrap();
    }
    let g1 = group(&store, 1, &[2]).await;
    let g2 = group(&store, 3, &[4]).await;
    let mut snapshots = HashMap::new();
    for c in [g1, g2] {
        snapshots.insert(c, before(&store, c).await);
    }
    let mut stored_total = 0;
    for burst in 0..3 {
        let mut sends = Vec::new();
        for i in 0..20_i64 {
            let (conversation, sender) = if i % 2 == 0 {
                (g1, 1 + i / 2 % 2)
            } else {
                (g2, 3 + i / 2 % 2)
            };
            sends.push(message(
                conversation,
                sender,
                text(&format!("{burst}/{i}")),
                None,
            ));
        }
        let mut bad = message(g1, 2, text("reply to nothing"), Some("bad"));
        bad.reply_to_id = Some(MessageId::new());
        sends.insert(10, bad);
        let results = join_all(sends.iter().map(|n| store.append_message(n.clone()))).await;
        for (new, result) in sends.iter().zip(results) {
            if new.reply_to_id.is_some() {
                assert!(matches!(result, Err(StoreError::NotFound)), "{result:?}");
            } else {
                assert!(result.unwrap().created);
                stored_total += 1;
            }
        }
        if store.append_stats().rolled_back > 0 {
            break;
        }
    }
    let stats = store.append_stats();
    assert!(
        stats.rolled_back > 0,
        "the failing request shared a batch: {stats:?}"
    );
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) - 2 FROM MESSAGES")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(rows, stored_total);
    for c in [g1, g2] {
        check(&store, c, &snapshots[&c]).await;
    }
    db.finish().await;
}
