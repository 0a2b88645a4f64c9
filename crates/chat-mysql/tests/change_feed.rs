//! The change feed on MySQL (docs/schema.md, "The change feed"): every write appends its
//! entries, numbered after the commit by one stamper per database; no entry that commits
//! late is ever skipped by a polling reader (the AUTO_INCREMENT trap, with a transaction
//! that inserts first and commits last); nothing in the log is message text when a key
//! ring seals it; entries left unstamped by a stopped process are numbered by the next
//! store; two stores ("nodes") on one database have one stamper and read the same
//! positions; a reader in 1000 conversations gets its page quickly, by the planned
//! indexes. The stamper's head kept in memory stays right across a purge to the head and
//! is read again when stale; a stamper cut mid-stamp is taken over without a gap or a
//! duplicate; under load one stamp numbers many commits.
#![allow(clippy::unwrap_used)] // Test code: a failed expectation panics.

mod common;

use common::{at, group, message, settled, text, user};

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_crypto::{KeyId, KeyRing, MessageCipher};
use chat_domain::{
    Change, ConversationId, Emoji, FeedPos, GroupName, MessageContent, MessageId, Role,
    visible_changes,
};
use chat_mysql::{MySqlSettings, MySqlStore};
use chat_ports::{
    ChangeFeed, ConversationStore, MessageStore, NewMessage, ReadStateStore, UserDirectory,
};
use chat_test_support::mysql::{database_url_via, server_address};
use chat_test_support::proxy::{Cut, FaultProxy};
use futures::future::join_all;
use sqlx::{Connection, Executor, MySqlConnection, Row};
use time::OffsetDateTime;

/// Every entry, in position order.
async fn everything(feed: &dyn ChangeFeed) -> Vec<Change> {
    feed.changes_after(FeedPos::ZERO, 1_000_000).await.unwrap()
}

fn assert_gapless(changes: &[Change]) {
    for (index, change) in changes.iter().enumerate() {
        assert_eq!(
            change.pos.get(),
            u64::try_from(index).unwrap() + 1,
            "positions are 1, 2, … without gaps: {changes:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_appends_its_entries_in_its_transaction() {
    let Some(db) = common::fresh_store().await else {
        return;
    };
    let store = &db.store;
    for id in 1..=4 {
        store.upsert_user(user(id), None).await.unwrap();
    }
    let conversation = group(store, 1, &[2]).await;
    let sent = store
        .append_message(message(conversation, 2, "hello"))
        .await
        .unwrap()
        .view
        .message;
    let thumbs = Emoji::parse("👍").unwrap();
    store
        .add_reaction(sent.id, user(1), thumbs.clone(), at(2))
        .await
        .unwrap();
    // A repeat changes nothing and appends nothing.
    store
        .add_reaction(sent.id, user(1), thumbs.clone(), at(2))
        .await
        .unwrap();
    store
        .remove_reaction(sent.id, user(1), thumbs.clone())
        .await
        .unwrap();
    store
        .edit_message(
            sent.id,
            user(2),
            MessageContent::parse("hello again").unwrap(),
            at(3),
        )
        .await
        .unwrap();
    store
        .mark_read(conversation, user(1), None, at(4))
        .await
        .unwrap();
    // The marker does not move: nothing.
    store
        .mark_read(conversation, user(1), None, at(4))
        .await
        .unwrap();
    let renamed = GroupName::parse("renamed").unwrap();
    store
        .rename_conversation(conversation, user(1), renamed.clone(), None)
        .await
        .unwrap();
    store
        .rename_conversation(conversation, user(1), renamed, None)
        .await
        .unwrap();
    store
        .add_participants(conversation, user(1), vec![user(3)], at(5), 100, None)
        .await
        .unwrap();
    store
        .set_role(conversation, user(1), user(3), Role::Admin, None)
        .await
        .unwrap();
    store
        .set_role(conversation, user(1), user(3), Role::Admin, None)
        .await
        .unwrap();
    store
        .remove_participant(conversation, user(1), user(1), at(6), None)
        .await
        .unwrap();
    store.delete_message(sent.id, user(2), at(7)).await.unwrap();
    store
        .archive_conversation(conversation, user(3), at(8), None)
        .await
        .unwrap();
    store
        .unarchive_conversation(conversation, user(3), None)
        .await
        .unwrap();
    let direct = store
        .get_or_create_direct(ConversationId::new(), user(1), user(4), at(9))
        .await
        .unwrap();
    assert!(direct.created);
    store
        .get_or_create_direct(ConversationId::new(), user(4), user(1), at(9))
        .await
        .unwrap();
    // A refused write appends nothing.
    store
        .append_message(message(conversation, 4, "not a member"))
        .await
        .unwrap_err();

    settled(store).await;
    let changes = everything(store).await;
    assert_gapless(&changes);
    let kinds: Vec<&str> = changes.iter().map(|c| c.kind.name()).collect();
    assert_eq!(
        kinds,
        [
            "conversation.created",
            "message.created",
            "message.created",
            "reaction.added",
            "reaction.removed",
            "message.updated",
            "conversation.read",
            "conversation.updated",
            "participant.added",
            "participant.updated",
            "participant.removed",
            "message.deleted",
            "conversation.updated",
            "conversation.updated",
            "conversation.created",
        ]
    );
    let expected_tail = [
        chat_domain::ChangeKind::ParticipantAdded {
            user_id: user(3),
            role: Role::Member,
        },
        chat_domain::ChangeKind::ParticipantUpdated {
            user_id: user(3),
            role: Role::Admin,
        },
        chat_domain::ChangeKind::ParticipantRemoved { user_id: user(1) },
        chat_domain::ChangeKind::MessageDeleted {
            message_id: sent.id,
            seq: sent.seq,
        },
    ];
    assert_eq!(
        changes[8..12]
            .iter()
            .map(|c| c.kind.clone())
            .collect::<Vec<_>>(),
        expected_tail
    );
    assert_eq!(
        changes[3].kind,
        chat_domain::ChangeKind::ReactionAdded {
            message_id: sent.id,
            user_id: user(1),
            emoji: "👍".to_owned(),
        }
    );
    assert!(
        changes[..14]
            .iter()
            .all(|c| c.conversation_id == conversation)
    );
    assert_eq!(changes[14].conversation_id, direct.details.conversation.id);
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_holds_no_message_text_with_a_key_ring() {
    let Some(db) = common::fresh_store().await else {
        return;
    };
    let id = KeyId::parse("2026-11").unwrap();
    let ring = KeyRing::from_keys([(id.clone(), [7_u8; 32])], id).unwrap();
    let store = db
        .store
        .clone()
        .with_cipher(MessageCipher::new(Some(Arc::new(ring))));
    for id in 1..=2 {
        store.upsert_user(user(id), None).await.unwrap();
    }
    let conversation = group(&store, 1, &[2]).await;
    let sent = store
        .append_message(message(conversation, 2, "zebra-secret-4711"))
        .await
        .unwrap()
        .view
        .message;
    store
        .edit_message(
            sent.id,
            user(2),
            MessageContent::parse("okapi-secret-4712").unwrap(),
            at(3),
        )
        .await
        .unwrap();
    store
        .add_reaction(sent.id, user(1), Emoji::parse("🍣").unwrap(), at(4))
        .await
        .unwrap();
    store.delete_message(sent.id, user(2), at(5)).await.unwrap();
    settled(&store).await;
    // Every column of every entry, as bytes.
    let rows = sqlx::query(
        "SELECT CAST(CONCAT_WS('|', id, pos, conversation_id, kind, message_id, user_id, seq, \
           role, emoji, read_at, created_at) AS BINARY) AS everything FROM CHANGE_LOG",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert!(rows.len() >= 6, "the writes appended their entries");
    for row in rows {
        let bytes: Vec<u8> = row.get("everything");
        let seen = String::from_utf8_lossy(&bytes);
        assert!(
            !seen.contains("secret") && !seen.contains("created"),
            "no message text in the log: {seen}"
        );
    }
    // The message text is sealed where it lives, too (the scan above is not vacuous).
    let content: String = sqlx::query_scalar("SELECT content FROM MESSAGES WHERE id = ?")
        .bind(sent.id.to_string())
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert!(!content.contains("secret"));
    db.finish().await;
}

/// A transaction of its own that inserts an entry (taking an id before the writers' ones)
/// and commits only when told.
async fn late_entry(
    name: &str,
    conversation: ConversationId,
    marker: MessageId,
) -> MySqlConnection {
    let mut conn = MySqlConnection::connect(&common::database_url(name))
        .await
        .unwrap();
    conn.execute("BEGIN").await.unwrap();
    sqlx::query("INSERT INTO CHANGE_LOG (conversation_id, kind, message_id) VALUES (?, 2, ?)")
        .bind(conversation.to_string())
        .bind(marker.to_string())
        .execute(&mut conn)
        .await
        .unwrap();
    conn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_polling_reader_never_skips_an_entry_that_commits_late() {
    let Some(db) = common::fresh_store().await else {
        return;
    };
    let store = db.store.clone();
    for id in 1..=9 {
        store.upsert_user(user(id), None).await.unwrap();
    }
    let mut conversations = Vec::new();
    for writer in 1..=8 {
        conversations.push(group(&store, writer, &[9]).await);
    }
    // Inserted first (the smallest id of everything below), committed last.
    let marker = MessageId::new();
    let mut late = late_entry(&db.name, conversations[0], marker).await;
    let late_id: u64 = sqlx::query_scalar("SELECT LAST_INSERT_ID()")
        .fetch_one(&mut late)
        .await
        .unwrap();

    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let store = store.clone();
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            let mut seen: Vec<Change> = Vec::new();
            let mut last = FeedPos::ZERO;
            loop {
                let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                let page = store.changes_after(last, 7).await.unwrap();
                if let Some(newest) = page.last() {
                    last = newest.pos;
                }
                let empty = page.is_empty();
                seen.extend(page);
                if finished && empty {
                    return seen;
                }
                if empty {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        })
    };
    let writers = conversations.iter().enumerate().map(|(index, c)| {
        let store = store.clone();
        let conversation = *c;
        let writer = i64::try_from(index).unwrap() + 1;
        async move {
            for round in 0..12 {
                let sent = store
                    .append_message(message(conversation, writer, "load"))
                    .await
                    .unwrap()
                    .view
                    .message;
                if round % 3 == 0 {
                    store
                        .add_reaction(sent.id, user(9), Emoji::parse("👍").unwrap(), at(2))
                        .await
                        .unwrap();
                    store
                        .mark_read(conversation, user(9), None, at(2))
                        .await
                        .unwrap();
                }
                if round % 4 == 0 {
                    store
                        .edit_message(
                            sent.id,
                            user(writer),
                            MessageContent::parse("edited").unwrap(),
                            at(3),
                        )
                        .await
                        .unwrap();
                }
            }
        }
    });
    join_all(writers).await;
    // The writers' entries are numbered while the late one is still open.
    let before_late = settled(&store).await;
    assert!(before_late.get() > 100);
    late.execute("COMMIT").await.unwrap();
    store
        .wait_past(before_late, Duration::from_secs(5))
        .await
        .unwrap();
    settled(&store).await;
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = reader.await.unwrap();

    let all = everything(&store).await;
    assert_gapless(&all);
    assert_eq!(seen, all, "the poller saw every entry once, in order");
    let late_entry = all
        .iter()
        .find(|c| c.kind == chat_domain::ChangeKind::MessageUpdated { message_id: marker })
        .expect("the late entry is in the feed");
    assert_eq!(
        late_entry.pos,
        before_late.next(),
        "numbered when it committed"
    );
    // It was inserted before every writer's entry of this test.
    let smaller_ids: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM CHANGE_LOG WHERE id > ?")
        .bind(late_id)
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert!(smaller_ids > 100);
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_left_unstamped_are_numbered_by_the_next_store() {
    let Some(db) = common::fresh_store().await else {
        return;
    };
    for id in 1..=2 {
        db.store.upsert_user(user(id), None).await.unwrap();
    }
    let conversation = group(&db.store, 1, &[2]).await;
    let head = settled(&db.store).await;
    assert_eq!(head, FeedPos::new(2), "the creation and its announcement");
    let name = db.name.clone();
    assert!(db.store.shut_down(Duration::from_secs(5)).await);
    // Its stamper has stopped (and released the lock with its connection).
    tokio::time::sleep(Duration::from_millis(300)).await;
    // As after a crash between a write's commit and its numbering.
    let mut conn = MySqlConnection::connect(&common::database_url(&name))
        .await
        .unwrap();
    let ids: Vec<MessageId> = (0..5).map(|_| MessageId::new()).collect();
    for id in &ids {
        sqlx::query("INSERT INTO CHANGE_LOG (conversation_id, kind, message_id) VALUES (?, 1, ?)")
            .bind(conversation.to_string())
            .bind(id.to_string())
            .execute(&mut conn)
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let pending: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM CHANGE_LOG WHERE pos IS NULL")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(pending, 5, "nobody numbers them while no store runs");

    let store = common::open(&name).await;
    let after = store.wait_past(head, Duration::from_secs(5)).await.unwrap();
    assert!(after > head);
    assert_eq!(settled(&store).await, FeedPos::new(7));
    let numbered: Vec<MessageId> = store
        .changes_after(head, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|c| match c.kind {
            chat_domain::ChangeKind::MessageCreated { message_id } => message_id,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(numbered, ids, "numbered in insert order after the old head");
    assert_gapless(&everything(&store).await);
    store.pool().close().await;
    common::TestDb { store, name }.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_share_one_stamper_and_the_same_positions() {
    let Some(db) = common::fresh_store().await else {
        return;
    };
    let a = db.store.clone();
    let b = common::open(&db.name).await;
    for id in 1..=3 {
        a.upsert_user(user(id), None).await.unwrap();
    }
    let start = Instant::now();
    while !(a.stamps_feed() || b.stamps_feed()) {
        assert!(start.elapsed() < Duration::from_secs(5), "nobody stamps");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !(a.stamps_feed() && b.stamps_feed()),
        "one stamper per database"
    );
    let conversation = group(&a, 1, &[2, 3]).await;
    let writes = (0..20).map(|i| {
        let node = if i % 2 == 0 { a.clone() } else { b.clone() };
        async move {
            node.append_message(message(conversation, 1 + i % 3, "both nodes"))
                .await
                .unwrap();
        }
    });
    join_all(writes).await;
    let head = settled(&a).await;
    assert_eq!(
        b.feed_bounds().await.unwrap(),
        a.feed_bounds().await.unwrap()
    );
    let from_a = everything(&a).await;
    assert_eq!(from_a, everything(&b).await);
    assert_gapless(&from_a);
    assert_eq!(
        from_a.len(),
        2 + 20,
        "the creation (2 entries), one entry per send"
    );
    // A token of node A resumes on node B, reader pages included.
    let token = from_a[10].pos;
    let on_b = b.reader_changes(user(2), token, 500).await.unwrap();
    let on_a = a.reader_changes(user(2), token, 500).await.unwrap();
    assert_eq!(on_a, on_b);
    assert_eq!(on_b.changes, from_a[11..].to_vec());

    // The stamping node stops; the other takes over (within its retry of the lock).
    let (leader, survivor) = if a.stamps_feed() { (a, b) } else { (b, a) };
    assert!(leader.shut_down(Duration::from_secs(5)).await);
    let start = Instant::now();
    while !survivor.stamps_feed() {
        assert!(start.elapsed() < Duration::from_secs(10), "no takeover");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    survivor
        .append_message(message(conversation, 2, "after the failover"))
        .await
        .unwrap();
    let past = survivor
        .wait_past(head, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(past > head, "the surviving node numbers new entries");
    assert_gapless(&everything(&survivor).await);
    survivor.pool().close().await;
    chat_test_support::mysql::drop_database(&db.name).await;
}

/// (table, type, key, Extra) of each row of the plan of `sql` with `binds`.
async fn explain(
    store: &MySqlStore,
    sql: &str,
    binds: &[i64],
) -> Vec<(String, String, String, String)> {
    let explain = format!("EXPLAIN {sql}");
    let mut query = sqlx::query(&explain);
    for bind in binds {
        query = query.bind(*bind);
    }
    let plan: Vec<(String, String, String, String)> = query
        .fetch_all(store.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.get::<Option<String>, _>("table").unwrap_or_default(),
                r.get::<Option<String>, _>("type").unwrap_or_default(),
                r.get::<Option<String>, _>("key").unwrap_or_default(),
                r.get::<Option<String>, _>("Extra").unwrap_or_default(),
            )
        })
        .collect();
    for row in &plan {
        eprintln!("{row:?}");
    }
    plan
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_in_1000_conversations_gets_its_page_by_index() {
    let Some(db) = common::fresh_store().await else {
        return;
    };
    let store = db.store.clone();
    for id in 1..=3 {
        store.upsert_user(user(id), None).await.unwrap();
    }
    // The reader (1) in 1000 conversations; as many more without them.
    let mut mine = Vec::new();
    for _ in 0..100 {
        let made = (0..20).map(|i| {
            let store = store.clone();
            async move {
                if i % 2 == 0 {
                    (true, group(&store, 1, &[2]).await)
                } else {
                    (false, group(&store, 2, &[3]).await)
                }
            }
        });
        for (reader_in, id) in join_all(made).await {
            if reader_in {
                mine.push(id);
            }
        }
    }
    assert_eq!(mine.len(), 1000);
    let before = settled(&store).await;
    // 10 new changes for the reader, 10 elsewhere.
    for conversation in mine.iter().take(10) {
        store
            .append_message(NewMessage {
                body: text("new"),
                ..message(*conversation, 2, "new")
            })
            .await
            .unwrap();
    }
    let head = settled(&store).await;
    assert_eq!(
        head.get() - before.get(),
        10,
        "a send is one entry (its sender's marker move is implied)"
    );

    // The page of a reader that keeps up: along the positions.
    let page = store.reader_changes(user(1), before, 100).await.unwrap();
    assert_eq!(page.changes.len(), 10);
    assert_eq!(page.windows.len(), 10);
    assert!(
        page.windows
            .iter()
            .all(|w| w.active_now && w.first_move_after.is_none())
    );
    assert_eq!(
        visible_changes(user(1), page.changes.clone(), &page.windows).len(),
        10
    );

    // Its plan: the positions' range, each entry joined to the reader's membership by key;
    // the first membership move of each row's conversation by its index.
    let plan = explain(
        &store,
        &chat_mysql::hot_queries::reader_changes_by_position(),
        &[1, before.as_i64(), 1, before.as_i64(), head.as_i64(), 100],
    )
    .await;
    let find = |table: &str| {
        plan.iter()
            .find(|row| row.0 == table)
            .unwrap_or_else(|| panic!("{table} in {plan:?}"))
            .clone()
    };
    assert_eq!(plan[0].0, "l");
    assert_eq!(
        (plan[0].1.as_str(), plan[0].2.as_str()),
        ("range", "uq_change_log_pos")
    );
    let p = find("p");
    assert_eq!(
        (p.1.as_str(), p.2.as_str()),
        ("eq_ref", "unique_user_conversation")
    );
    assert_eq!(find("mv").2, "idx_change_log_user");

    // A reader far behind: along their conversations (index only), the rows of the page.
    let stale = store
        .reader_changes(user(1), FeedPos::ZERO, 100)
        .await
        .unwrap();
    assert_eq!(stale.changes.len(), 100);
    let all = everything(&store).await;
    let expected: Vec<Change> = {
        let mine: BTreeSet<ConversationId> = mine.iter().copied().collect();
        all.iter()
            .filter(|c| mine.contains(&c.conversation_id))
            .take(100)
            .cloned()
            .collect()
    };
    assert_eq!(stale.changes, expected);
    let plan = explain(
        &store,
        &chat_mysql::hot_queries::reader_changes_by_conversation(),
        &[1, 0, 0, head.as_i64(), 1, 100],
    )
    .await;
    let l2 = plan
        .iter()
        .find(|row| row.0 == "l2")
        .unwrap_or_else(|| panic!("l2 in {plan:?}"));
    assert_eq!(l2.2, "idx_change_log_conversation");
    assert!(l2.3.contains("Using index"), "{l2:?}");

    // Timing: 10 new changes for a user in 1000 conversations.
    let mut times = Vec::new();
    for _ in 0..200 {
        let start = Instant::now();
        let page = store.reader_changes(user(1), before, 100).await.unwrap();
        times.push(start.elapsed());
        assert_eq!(page.changes.len(), 10);
    }
    times.sort();
    eprintln!(
        "reader_changes, 1000 conversations, 10 new changes: p50 {:?}, p99 {:?}",
        times[100], times[197]
    );
    let mut stale_times = Vec::new();
    for _ in 0..50 {
        let start = Instant::now();
        store
            .reader_changes(user(1), FeedPos::ZERO, 100)
            .await
            .unwrap();
        stale_times.push(start.elapsed());
    }
    stale_times.sort();
    eprintln!(
        "reader_changes from 0 ({} entries): p50 {:?}, p99 {:?}",
        head, stale_times[25], stale_times[49]
    );
    let bytes: Option<u64> = sqlx::query_scalar(
        "SELECT DATA_LENGTH + INDEX_LENGTH FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'CHANGE_LOG'",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    eprintln!(
        "CHANGE_LOG: {} entries, {} bytes (data and indexes, InnoDB pages)",
        head,
        bytes.unwrap_or(0)
    );
    db.finish().await;
}

/// The previous system's writes that the rollout triggers single out (a message inserted
/// without seq, a marker moved by time alone) are appended by the triggers, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_previous_systems_messages_and_marker_moves_are_in_the_feed() {
    let Some(db) = common::fresh_store().await else {
        return;
    };
    let store = db.store.clone();
    for id in 1..=3 {
        store.upsert_user(user(id), None).await.unwrap();
    }
    let conversation = group(&store, 1, &[2, 3]).await;
    let head = settled(&store).await;
    sqlx::query(
        "INSERT INTO MESSAGES (conversation_id, sender_id, content) VALUES (?, 2, 'legacy')",
    )
    .bind(conversation.to_string())
    .execute(store.pool())
    .await
    .unwrap();
    let legacy: String = sqlx::query_scalar("SELECT id FROM MESSAGES WHERE content = 'legacy'")
        .fetch_one(store.pool())
        .await
        .unwrap();
    sqlx::query(
        "UPDATE CONVERSATION_PARTICIPANTS SET last_read_at = '2030-01-01 00:00:00' \
         WHERE conversation_id = ? AND user_id = 3",
    )
    .bind(conversation.to_string())
    .execute(store.pool())
    .await
    .unwrap();
    settled(&store).await;
    let changes = store.changes_after(head, 100).await.unwrap();
    assert_eq!(
        changes.iter().map(|c| c.kind.clone()).collect::<Vec<_>>(),
        [
            chat_domain::ChangeKind::MessageCreated {
                message_id: MessageId::parse(&legacy).unwrap(),
            },
            chat_domain::ChangeKind::ConversationRead {
                user_id: user(3),
                last_read_seq: chat_domain::Seq::new(2).unwrap(),
                last_read_at: OffsetDateTime::from_unix_timestamp(1_893_456_000).unwrap(),
            },
        ]
    );
    assert!(changes.iter().all(|c| c.conversation_id == conversation));
    db.finish().await;
}

/// A long expired stretch is purged over several calls, each looking through a bounded
/// window of positions for the floor, and saying `more` until it is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_expired_stretch_is_purged_in_bounded_calls() {
    let Some(db) = common::fresh_store().await else {
        return;
    };
    let store = db.store.clone();
    // 12 000 entries written long ago (the sequence engine makes the rows).
    sqlx::query(
        "INSERT INTO CHANGE_LOG (conversation_id, kind, created_at) \
         SELECT ?, 8, '2020-01-01 00:00:00' FROM seq_1_to_12000",
    )
    .bind(ConversationId::new().to_string())
    .execute(store.pool())
    .await
    .unwrap();
    assert_eq!(settled(&store).await, FeedPos::new(12_000));
    let cut = OffsetDateTime::from_unix_timestamp(1_609_459_200).unwrap(); // 2021-01-01
    let first = store.purge(cut, 100_000).await.unwrap();
    assert_eq!(first.floor, FeedPos::new(10_000), "one window of positions");
    assert_eq!(first.deleted, 10_000);
    assert!(first.more, "more to purge");
    let second = store.purge(cut, 100_000).await.unwrap();
    assert_eq!(second.floor, FeedPos::new(12_000));
    assert_eq!(second.deleted, 2_000);
    assert!(!second.more);
    let bounds = store.feed_bounds().await.unwrap();
    assert_eq!(
        (bounds.floor, bounds.head),
        (FeedPos::new(12_000), FeedPos::new(12_000))
    );
    db.finish().await;
}

/// Under many concurrent sends, one stamp numbers the entries of many commits (the
/// stamper lets commits gather for a moment after each stamp), and the counts add up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_load_one_stamp_numbers_many_commits() {
    let Some(db) = common::fresh_store().await else {
        return;
    };
    let store = db.store.clone();
    for id in 1..=33 {
        store.upsert_user(user(id), None).await.unwrap();
    }
    let mut conversations = Vec::new();
    for writer in 1..=32 {
        conversations.push(group(&store, writer, &[33]).await);
    }
    let before = settled(&store).await;
    assert!(store.stamps_feed(), "the only store stamps");
    let stats_before = stamp_stats_at(&store, before).await;
    let started = Instant::now();
    let sends = conversations.iter().enumerate().map(|(index, c)| {
        let store = store.clone();
        let conversation = *c;
        let writer = i64::try_from(index).unwrap() + 1;
        async move {
            for _ in 0..SENDS_PER_WRITER {
                store
                    .append_message(message(conversation, writer, "load"))
                    .await
                    .unwrap();
            }
        }
    });
    join_all(sends).await;
    let elapsed = started.elapsed();
    let head = settled(&store).await;
    let stats = stamp_stats_at(&store, head).await;
    let (stamps, entries) = (
        stats.stamps - stats_before.stamps,
        stats.entries - stats_before.entries,
    );
    eprintln!(
        "{entries} entries in {stamps} stamps over {elapsed:?}: {:.1} stamps/s, {:.1} entries \
         per stamp, {:.0} sends/s",
        stamps as f64 / elapsed.as_secs_f64(),
        entries as f64 / stamps.max(1) as f64,
        entries as f64 / elapsed.as_secs_f64(),
    );
    assert_eq!(entries, 32 * SENDS_PER_WRITER, "one entry per send");
    assert!(
        stamps * 2 <= entries,
        "{stamps} stamps for {entries} entries: at least two entries per stamp on average"
    );
    assert_gapless(&everything(&store).await);
    db.finish().await;
}

const SENDS_PER_WRITER: u64 = 40;

/// The stamp counts of the only store on its database once they account for every entry
/// up to `head` (the counts move just after the numbering commits).
async fn stamp_stats_at(store: &MySqlStore, head: FeedPos) -> chat_mysql::StampStats {
    let start = Instant::now();
    loop {
        let stats = store.stamp_stats();
        if stats.entries == head.get() {
            return stats;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{stats:?}: this store numbered every entry up to {head}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The stamper keeps the head in memory while it holds the lock; a purge that moved the
/// floor up to the head (and deleted every entry) leaves it right, and so does the head a
/// new stamper reads from the table then (the floor, not `MAX(pos)` of an empty log).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbering_goes_on_above_a_floor_purged_up_to_the_head() {
    let Some(db) = common::fresh_store().await else {
        return;
    };
    let store = db.store.clone();
    for id in 1..=2 {
        store.upsert_user(user(id), None).await.unwrap();
    }
    let conversation = group(&store, 1, &[2]).await;
    for _ in 0..3 {
        store
            .append_message(message(conversation, 2, "before"))
            .await
            .unwrap();
    }
    let head = settled(&store).await;
    assert_eq!(head, FeedPos::new(5));
    purge_everything(&store, head).await;

    // The same stamper (its head in memory) numbers on from the head.
    store
        .append_message(message(conversation, 2, "after the purge"))
        .await
        .unwrap();
    assert_eq!(settled(&store).await, FeedPos::new(6));
    let after = everything(&store).await;
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].pos, FeedPos::new(6));

    // A new stamper (another store, after this one stopped) reads the head from the
    // table: the floor, the log being empty again.
    purge_everything(&store, FeedPos::new(6)).await;
    let name = db.name.clone();
    assert!(store.shut_down(Duration::from_secs(5)).await);
    let store = common::open(&name).await;
    store
        .append_message(message(conversation, 2, "after the restart"))
        .await
        .unwrap();
    assert_eq!(settled(&store).await, FeedPos::new(7));
    let after = everything(&store).await;
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].pos, FeedPos::new(7));
    store.pool().close().await;
    common::TestDb { store, name }.finish().await;
}

/// Purges every entry: the floor moves to `head`, the log is empty, the head stays.
async fn purge_everything(store: &MySqlStore, head: FeedPos) {
    let future = OffsetDateTime::now_utc() + time::Duration::days(1);
    let purged = store.purge(future, 100_000).await.unwrap();
    assert_eq!((purged.floor, purged.more), (head, false));
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM CHANGE_LOG")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(left, 0, "every entry purged");
    let bounds = store.feed_bounds().await.unwrap();
    assert_eq!((bounds.floor, bounds.head), (head, head));
}

/// A position taken behind the stamper's back (as another stamper would, were the lock
/// broken) makes its remembered head stale: its next stamp numbers nothing, and the one
/// after reads the head again and numbers above it, without a duplicate or a gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_head_is_noticed_and_read_again() {
    let Some(db) = common::fresh_store().await else {
        return;
    };
    let store = db.store.clone();
    for id in 1..=2 {
        store.upsert_user(user(id), None).await.unwrap();
    }
    let conversation = group(&store, 1, &[2]).await;
    let head = settled(&store).await;
    let intruder = MessageId::new();
    sqlx::query(
        "INSERT INTO CHANGE_LOG (pos, conversation_id, kind, message_id) VALUES (?, ?, 2, ?)",
    )
    .bind(head.next().as_i64())
    .bind(conversation.to_string())
    .bind(intruder.to_string())
    .execute(store.pool())
    .await
    .unwrap();
    let sent = store
        .append_message(message(conversation, 2, "after the intruder"))
        .await
        .unwrap()
        .view
        .message;
    assert_eq!(settled(&store).await, head.next().next());
    let all = everything(&store).await;
    assert_gapless(&all);
    let kinds: Vec<_> = all[all.len() - 2..]
        .iter()
        .map(|c| c.kind.clone())
        .collect();
    assert_eq!(
        kinds,
        vec![
            chat_domain::ChangeKind::MessageUpdated {
                message_id: intruder
            },
            chat_domain::ChangeKind::MessageCreated {
                message_id: sent.id
            },
        ]
    );
    db.finish().await;
}

/// The stamping node loses its connection in the middle of a stamp: its statement reached
/// the server (and committed) or not, the client cannot tell. Another node takes the lock
/// over, reads the head from the table and numbers on: every entry exactly once, no gap,
/// whichever way the cut statement went.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stamper_cut_mid_stamp_is_taken_over_without_a_gap_or_a_duplicate() {
    for (cut, frozen) in [
        (Cut::BeforeForwarding, true),
        (Cut::AfterForwarding, true),
        // Unfrozen: the cut node may reconnect and take the lock back itself.
        (Cut::AfterForwarding, false),
    ] {
        cut_mid_stamp(cut, frozen).await;
    }
}

async fn cut_mid_stamp(cut: Cut, frozen: bool) {
    let Some(db) = common::fresh_store().await else {
        return;
    };
    // Node A reaches the database through the proxy; it starts first and stamps.
    db.store.pool().close().await;
    let proxy = FaultProxy::start(server_address()).await.unwrap();
    let mut settings = MySqlSettings::new(database_url_via(&db.name, proxy.address()));
    settings.max_connections = 4;
    let a = MySqlStore::connect(&settings).await.unwrap();
    let start = Instant::now();
    while !a.stamps_feed() {
        assert!(start.elapsed() < Duration::from_secs(5), "A does not stamp");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let b = common::open(&db.name).await;
    for id in 1..=2 {
        b.upsert_user(user(id), None).await.unwrap();
    }
    let conversation = group(&b, 1, &[2]).await;
    let head = settled(&b).await;

    // A's next numbering statement (text protocol: `COM_QUERY`) is cut.
    proxy.cut_on(b"\x03UPDATE CHANGE_LOG", cut);
    let mut sent = Vec::new();
    for _ in 0..3 {
        sent.push(
            b.append_message(message(conversation, 2, "cut"))
                .await
                .unwrap()
                .view
                .message
                .id,
        );
    }
    let start = Instant::now();
    while proxy.cuts() == 0 {
        assert!(start.elapsed() < Duration::from_secs(5), "no stamp was cut");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if frozen {
        // A cannot come back: B takes the lock over (within its retry).
        proxy.freeze();
        let start = Instant::now();
        while !b.stamps_feed() {
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "B does not take over"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for _ in 0..2 {
        sent.push(
            b.append_message(message(conversation, 1, "after the cut"))
                .await
                .unwrap()
                .view
                .message
                .id,
        );
    }
    let settled_head = settled(&b).await;
    assert_eq!(
        settled_head.get() - head.get(),
        5,
        "{cut:?}: five entries numbered above the head"
    );
    let all = everything(&b).await;
    assert_gapless(&all);
    let numbered: Vec<MessageId> = all[all.len() - 5..]
        .iter()
        .map(|c| match c.kind {
            chat_domain::ChangeKind::MessageCreated { message_id } => message_id,
            ref other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(numbered, sent, "{cut:?}: each entry once, in commit order");
    proxy.unfreeze();
    a.pool().close().await;
    b.pool().close().await;
    chat_test_support::mysql::drop_database(&db.name).await;
}
