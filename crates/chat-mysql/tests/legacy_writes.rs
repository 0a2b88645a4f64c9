//! The previous system's writes in the change feed (migration `20251201000021`,
//! docs/schema.md, "Writes of the previous system"): its statements, run on a plain
//! connection as it runs them (no session mark), each append exactly the entry the
//! service appends for the same change, once, and nothing for a no-op; a reader whose
//! membership the previous system changes sees exactly its window through the port; the
//! service's own writes still append one entry each, and what the triggers cost them.
#![allow(clippy::unwrap_used)] // Test code: a failed expectation panics.

mod common;

use common::{at, group, message, settled, user};

use std::time::{Duration, Instant};

use chat_domain::{ChangeKind, ConversationId, Emoji, MessageId, Role, Seq, visible_changes};
use chat_mysql::MySqlStore;
use chat_ports::{ChangeFeed, MessageStore, UserDirectory};
use sqlx::{Connection, Executor, MySqlConnection};
use time::OffsetDateTime;

/// The migration under test, run again to put its triggers back after a measurement
/// without them (every statement is `CREATE OR REPLACE`).
const MIGRATION: &str =
    include_str!("../../../migrations/20251201000021_change_log_all_legacy_writes.sql");

/// A connection of the previous system: opened plainly, without the service's session
/// preparation (so without its mark).
async fn previous_system(name: &str) -> MySqlConnection {
    MySqlConnection::connect(&common::database_url(name))
        .await
        .unwrap()
}

/// One statement of the previous system (`?` bound to `binds`, in order) and the entries
/// it must append, in order, all in `conversation`.
struct Case<'a> {
    what: &'a str,
    sql: &'a str,
    binds: Vec<String>,
    conversation: ConversationId,
    expected: Vec<ChangeKind>,
}

/// Runs each case on `legacy` and checks that exactly its entries were appended, at the
/// next positions, readable through `changes_after`.
async fn check(store: &MySqlStore, legacy: &mut MySqlConnection, cases: Vec<Case<'_>>) {
    for case in cases {
        let head = settled(store).await;
        let mut query = sqlx::query(case.sql);
        for bind in &case.binds {
            query = query.bind(bind);
        }
        query.execute(&mut *legacy).await.unwrap();
        let after = settled(store).await;
        let got = store.changes_after(head, 100).await.unwrap();
        let kinds: Vec<(ConversationId, ChangeKind)> = got
            .iter()
            .map(|c| (c.conversation_id, c.kind.clone()))
            .collect();
        let expected: Vec<(ConversationId, ChangeKind)> = case
            .expected
            .into_iter()
            .map(|kind| (case.conversation, kind))
            .collect();
        assert_eq!(kinds, expected, "{}", case.what);
        assert_eq!(
            after.get() - head.get(),
            u64::try_from(expected.len()).unwrap(),
            "{}: the head moved by the entries appended",
            case.what
        );
    }
}

fn case<'a>(
    what: &'a str,
    sql: &'a str,
    binds: &[&str],
    conversation: ConversationId,
    expected: Vec<ChangeKind>,
) -> Case<'a> {
    Case {
        what,
        sql,
        binds: binds.iter().map(|b| (*b).to_owned()).collect(),
        conversation,
        expected,
    }
}

fn reaction_added(message: MessageId, user_id: i64, emoji: &str) -> ChangeKind {
    ChangeKind::ReactionAdded {
        message_id: message,
        user_id: user(user_id),
        emoji: emoji.to_owned(),
    }
}

fn reaction_removed(message: MessageId, user_id: i64, emoji: &str) -> ChangeKind {
    ChangeKind::ReactionRemoved {
        message_id: message,
        user_id: user(user_id),
        emoji: emoji.to_owned(),
    }
}

fn added(user_id: i64, role: Role) -> ChangeKind {
    ChangeKind::ParticipantAdded {
        user_id: user(user_id),
        role,
    }
}

fn removed(user_id: i64) -> ChangeKind {
    ChangeKind::ParticipantRemoved {
        user_id: user(user_id),
    }
}

/// Every kind of the previous system's writes appends the service's entry once; no-ops,
/// duplicates, rolled-back statements and columns the feed does not show append nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_write_of_the_previous_system_appends_its_entry_once() {
    let Some(db) = common::fresh_store().await else {
        return;
    };
    let store = db.store.clone();
    for id in 1..=5 {
        store.upsert_user(user(id), None).await.unwrap();
    }
    let marked: Option<i64> = sqlx::query_scalar("SELECT @chat_service_session")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(marked, Some(1), "the store's connections carry the mark");
    let c = group(&store, 1, &[2, 3]).await;
    let m = store
        .append_message(message(c, 2, "hello"))
        .await
        .unwrap()
        .view
        .message;
    assert_eq!(m.seq.get(), 2, "after the creation's announcement");
    let (cs, ms) = (c.to_string(), m.id.to_string());
    let (cs, ms) = (cs.as_str(), ms.as_str());
    let updated = ChangeKind::MessageUpdated { message_id: m.id };
    let deleted = ChangeKind::MessageDeleted {
        message_id: m.id,
        seq: m.seq,
    };
    let mut legacy = previous_system(&db.name).await;
    check(
        &store,
        &mut legacy,
        vec![
            case(
                "an edit",
                "UPDATE MESSAGES SET content = 'edited', edited_at = NOW() WHERE id = ?",
                &[ms],
                c,
                vec![updated.clone()],
            ),
            case(
                "the same content again, edited_at unchanged: a no-op",
                "UPDATE MESSAGES SET content = 'edited' WHERE id = ?",
                &[ms],
                c,
                vec![],
            ),
            case(
                "an edit the collation calls equal (compared byte for byte)",
                "UPDATE MESSAGES SET content = 'EDITED' WHERE id = ?",
                &[ms],
                c,
                vec![updated.clone()],
            ),
            case(
                "a column the feed does not show",
                "UPDATE MESSAGES SET client_message_id = 'legacy-key' WHERE id = ?",
                &[ms],
                c,
                vec![],
            ),
            case(
                "a soft delete",
                "UPDATE MESSAGES SET deleted_at = NOW() WHERE id = ?",
                &[ms],
                c,
                vec![deleted.clone()],
            ),
            case(
                "deleted again (another time)",
                "UPDATE MESSAGES SET deleted_at = '2030-01-01 00:00:00' WHERE id = ?",
                &[ms],
                c,
                vec![],
            ),
            case(
                "an edit of a deleted message: nothing to serve",
                "UPDATE MESSAGES SET content = 'ghost' WHERE id = ?",
                &[ms],
                c,
                vec![],
            ),
            case(
                "an undelete: the message as it is now",
                "UPDATE MESSAGES SET deleted_at = NULL, content = 'back' WHERE id = ?",
                &[ms],
                c,
                vec![updated.clone()],
            ),
            case(
                "a reaction",
                "INSERT INTO MESSAGE_REACTIONS (id, message_id, user_id, emoji) \
                 VALUES (UUID(), ?, 3, '👍🏽')",
                &[ms],
                c,
                vec![reaction_added(m.id, 3, "👍🏽")],
            ),
            case(
                "the same reaction again (skipped by the unique key)",
                "INSERT IGNORE INTO MESSAGE_REACTIONS (id, message_id, user_id, emoji) \
                 VALUES (UUID(), ?, 3, '👍🏽')",
                &[ms],
                c,
                vec![],
            ),
            case(
                "another emoji from the same user",
                "INSERT INTO MESSAGE_REACTIONS (id, message_id, user_id, emoji) \
                 VALUES (UUID(), ?, 3, '❤️')",
                &[ms],
                c,
                vec![reaction_added(m.id, 3, "❤️")],
            ),
            case(
                "a reaction removed",
                "DELETE FROM MESSAGE_REACTIONS \
                 WHERE message_id = ? AND user_id = 3 AND emoji_bin = CAST('👍🏽' AS BINARY)",
                &[ms],
                c,
                vec![reaction_removed(m.id, 3, "👍🏽")],
            ),
            case(
                "removing what is not there",
                "DELETE FROM MESSAGE_REACTIONS \
                 WHERE message_id = ? AND user_id = 3 AND emoji_bin = CAST('👍🏽' AS BINARY)",
                &[ms],
                c,
                vec![],
            ),
            case(
                "a reaction changed in place: the old one off, the new one on",
                "UPDATE MESSAGE_REACTIONS SET emoji = '👍🏽' WHERE message_id = ? AND user_id = 3",
                &[ms],
                c,
                vec![
                    reaction_removed(m.id, 3, "❤️"),
                    reaction_added(m.id, 3, "👍🏽"),
                ],
            ),
            case(
                "a participant added",
                "INSERT INTO CONVERSATION_PARTICIPANTS (conversation_id, user_id) VALUES (?, 4)",
                &[cs],
                c,
                vec![added(4, Role::Member)],
            ),
            case(
                "a role changed",
                "UPDATE CONVERSATION_PARTICIPANTS SET role = 'ADMIN' \
                 WHERE conversation_id = ? AND user_id = 4",
                &[cs],
                c,
                vec![ChangeKind::ParticipantUpdated {
                    user_id: user(4),
                    role: Role::Admin,
                }],
            ),
            case(
                "the same role again (in another case)",
                "UPDATE CONVERSATION_PARTICIPANTS SET role = 'admin' \
                 WHERE conversation_id = ? AND user_id = 4",
                &[cs],
                c,
                vec![],
            ),
            case(
                "a marker moved by time alone (20251201000013): conversation.read only",
                "UPDATE CONVERSATION_PARTICIPANTS SET last_read_at = '2030-01-01 00:00:00' \
                 WHERE conversation_id = ? AND user_id = 4",
                &[cs],
                c,
                vec![ChangeKind::ConversationRead {
                    user_id: user(4),
                    last_read_seq: Seq::new(2).unwrap(),
                    last_read_at: OffsetDateTime::from_unix_timestamp(1_893_456_000).unwrap(),
                }],
            ),
            case(
                "a removal",
                "UPDATE CONVERSATION_PARTICIPANTS SET left_at = NOW() \
                 WHERE conversation_id = ? AND user_id = 4",
                &[cs],
                c,
                vec![removed(4)],
            ),
            case(
                "removed again (another time)",
                "UPDATE CONVERSATION_PARTICIPANTS SET left_at = '2030-01-01 00:00:00' \
                 WHERE conversation_id = ? AND user_id = 4",
                &[cs],
                c,
                vec![],
            ),
            case(
                "the role of someone who left",
                "UPDATE CONVERSATION_PARTICIPANTS SET role = 'MEMBER' \
                 WHERE conversation_id = ? AND user_id = 4",
                &[cs],
                c,
                vec![],
            ),
            case(
                "a re-join, with a role",
                "UPDATE CONVERSATION_PARTICIPANTS SET left_at = NULL, role = 'ADMIN' \
                 WHERE conversation_id = ? AND user_id = 4",
                &[cs],
                c,
                vec![added(4, Role::Admin)],
            ),
            case(
                "a membership row deleted outright",
                "DELETE FROM CONVERSATION_PARTICIPANTS WHERE conversation_id = ? AND user_id = 3",
                &[cs],
                c,
                vec![removed(3)],
            ),
            case(
                "a rename",
                "UPDATE CONVERSATIONS SET name = 'renamed' WHERE id = ?",
                &[cs],
                c,
                vec![ChangeKind::ConversationUpdated],
            ),
            case(
                "the same name again",
                "UPDATE CONVERSATIONS SET name = 'renamed' WHERE id = ?",
                &[cs],
                c,
                vec![],
            ),
            case(
                "a rename the collation calls equal",
                "UPDATE CONVERSATIONS SET name = 'Renamed' WHERE id = ?",
                &[cs],
                c,
                vec![ChangeKind::ConversationUpdated],
            ),
            case(
                "archived",
                "UPDATE CONVERSATIONS SET is_archived = TRUE, archived_at = NOW() WHERE id = ?",
                &[cs],
                c,
                vec![ChangeKind::ConversationUpdated],
            ),
            case(
                "archived again",
                "UPDATE CONVERSATIONS SET is_archived = TRUE WHERE id = ?",
                &[cs],
                c,
                vec![],
            ),
            case(
                "unarchived to NULL",
                "UPDATE CONVERSATIONS SET is_archived = NULL, archived_at = NULL WHERE id = ?",
                &[cs],
                c,
                vec![ChangeKind::ConversationUpdated],
            ),
            case(
                "NULL to FALSE: not archived either way",
                "UPDATE CONVERSATIONS SET is_archived = FALSE WHERE id = ?",
                &[cs],
                c,
                vec![],
            ),
            case(
                "the activity time (the counters' triggers run, the feed has nothing)",
                "UPDATE CONVERSATIONS SET last_message_at = '2030-01-02 00:00:00' WHERE id = ?",
                &[cs],
                c,
                vec![],
            ),
        ],
    )
    .await;

    // A rolled-back statement leaves nothing, the trigger's entry included.
    let head = settled(&store).await;
    legacy.execute("BEGIN").await.unwrap();
    sqlx::query("UPDATE CONVERSATIONS SET name = 'never' WHERE id = ?")
        .bind(cs)
        .execute(&mut legacy)
        .await
        .unwrap();
    legacy.execute("ROLLBACK").await.unwrap();
    assert_eq!(settled(&store).await, head, "a rollback appends nothing");

    // A message the previous system inserts (20251201000013), then removes outright.
    sqlx::query("INSERT INTO MESSAGES (conversation_id, sender_id, content) VALUES (?, 2, 'x')")
        .bind(cs)
        .execute(&mut legacy)
        .await
        .unwrap();
    let (raw, seq): (String, i64) =
        sqlx::query_as("SELECT id, seq FROM MESSAGES WHERE conversation_id = ? AND content = 'x'")
            .bind(cs)
            .fetch_one(&mut legacy)
            .await
            .unwrap();
    let x = MessageId::parse(&raw).unwrap();
    settled(&store).await;
    check(
        &store,
        &mut legacy,
        vec![case(
            "a live message deleted outright",
            "DELETE FROM MESSAGES WHERE id = ?",
            &[&raw],
            c,
            vec![ChangeKind::MessageDeleted {
                message_id: x,
                seq: Seq::new(seq).unwrap(),
            }],
        )],
    )
    .await;

    // A conversation of the previous system: created, then its participants, then all of
    // them removed by one statement (one entry per row).
    let d = ConversationId::new();
    let ds = d.to_string();
    check(
        &store,
        &mut legacy,
        vec![
            case(
                "a conversation created",
                "INSERT INTO CONVERSATIONS (id, type, name, created_by) \
                 VALUES (?, 'GROUP', 'old', 1)",
                &[&ds],
                d,
                vec![ChangeKind::ConversationCreated],
            ),
            case(
                "its participants, in one statement",
                "INSERT INTO CONVERSATION_PARTICIPANTS (conversation_id, user_id, role) \
                 VALUES (?, 1, 'ADMIN'), (?, 5, NULL), (?, 2, 'MEMBER')",
                &[&ds, &ds, &ds],
                d,
                vec![
                    added(1, Role::Admin),
                    added(5, Role::Member),
                    added(2, Role::Member),
                ],
            ),
            case(
                "everyone removed in one statement: one entry per row",
                "UPDATE CONVERSATION_PARTICIPANTS SET left_at = NOW() \
                 WHERE conversation_id = ? ORDER BY user_id",
                &[&ds],
                d,
                vec![removed(1), removed(2), removed(5)],
            ),
        ],
    )
    .await;
    legacy.close().await.unwrap();
    db.finish().await;
}

/// A reader the previous system adds and then removes sees, through `reader_changes`,
/// exactly the changes from its `participant.added` to its `participant.removed`, the
/// previous system's edits, deletes and reactions included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_sees_the_previous_systems_writes_within_its_window() {
    let Some(db) = common::fresh_store().await else {
        return;
    };
    let store = db.store.clone();
    for id in 1..=3 {
        store.upsert_user(user(id), None).await.unwrap();
    }
    let c = group(&store, 1, &[2]).await;
    let before = store
        .append_message(message(c, 2, "before"))
        .await
        .unwrap()
        .view
        .message;
    let start = settled(&store).await;
    let mut legacy = previous_system(&db.name).await;
    let (cs, bs) = (c.to_string(), before.id.to_string());
    let statements = [
        // Before the reader joins: not theirs to see.
        (
            "UPDATE MESSAGES SET content = 'edited before' WHERE id = ?",
            bs.clone(),
        ),
        (
            "INSERT INTO CONVERSATION_PARTICIPANTS (conversation_id, user_id) VALUES (?, 3)",
            cs.clone(),
        ),
        (
            "INSERT INTO MESSAGE_REACTIONS (id, message_id, user_id, emoji) \
             VALUES (UUID(), ?, 3, '❤️')",
            bs.clone(),
        ),
        (
            "UPDATE MESSAGES SET deleted_at = NOW() WHERE id = ?",
            bs.clone(),
        ),
        (
            "UPDATE CONVERSATIONS SET name = 'while a member' WHERE id = ?",
            cs.clone(),
        ),
        (
            "UPDATE CONVERSATION_PARTICIPANTS SET left_at = NOW() \
             WHERE conversation_id = ? AND user_id = 3",
            cs.clone(),
        ),
        // After the reader left: not theirs to see.
        (
            "UPDATE CONVERSATIONS SET name = 'after' WHERE id = ?",
            cs.clone(),
        ),
    ];
    for (sql, bind) in statements {
        sqlx::query(sql)
            .bind(bind)
            .execute(&mut legacy)
            .await
            .unwrap();
    }
    settled(&store).await;
    let everything = store.changes_after(start, 100).await.unwrap();
    assert_eq!(
        everything.len(),
        7,
        "one entry per statement: {everything:#?}"
    );
    let page = store.reader_changes(user(3), start, 100).await.unwrap();
    let seen: Vec<ChangeKind> = visible_changes(user(3), page.changes, &page.windows)
        .into_iter()
        .map(|c| c.kind)
        .collect();
    assert_eq!(
        seen,
        [
            added(3, Role::Member),
            reaction_added(before.id, 3, "❤️"),
            ChangeKind::MessageDeleted {
                message_id: before.id,
                seq: before.seq,
            },
            ChangeKind::ConversationUpdated,
            removed(3),
        ]
    );
    // A member throughout sees all of it.
    let page = store.reader_changes(user(2), start, 100).await.unwrap();
    let seen = visible_changes(user(2), page.changes, &page.windows);
    assert_eq!(seen, everything);
    legacy.close().await.unwrap();
    db.finish().await;
}

/// The service's own writes append exactly their own entries (the triggers see the mark):
/// 2000 reactions added and removed through the store append 2000 entries. Prints what
/// the triggers cost those writes, measured against the same writes with the triggers of
/// `20251201000021` dropped (interleaved rounds; the figures go to docs/schema.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_services_own_writes_append_one_entry_each_and_what_the_mark_costs() {
    let Some(db) = common::fresh_store().await else {
        return;
    };
    let store = db.store.clone();
    for id in 1..=2 {
        store.upsert_user(user(id), None).await.unwrap();
    }
    let c = group(&store, 1, &[2]).await;
    let m = store
        .append_message(message(c, 2, "react to me"))
        .await
        .unwrap()
        .view
        .message;
    let emoji = [Emoji::parse("👍🏽").unwrap(), Emoji::parse("❤️").unwrap()];
    const PER_ROUND: usize = 500;
    let mut with = Vec::new();
    let mut without = Vec::new();
    // Warm-up (connections, statement caches), not counted.
    for e in &emoji {
        store
            .add_reaction(m.id, user(2), e.clone(), at(2))
            .await
            .unwrap();
        store
            .remove_reaction(m.id, user(2), e.clone())
            .await
            .unwrap();
    }
    // Rounds with, without, without, with: drift of the machine's load cancels out.
    for (round, triggers) in [true, false, false, true].into_iter().enumerate() {
        if triggers {
            sqlx::raw_sql(MIGRATION)
                .execute(store.pool())
                .await
                .unwrap();
        } else {
            for name in ["insert", "update", "delete"] {
                sqlx::raw_sql(&format!(
                    "DROP TRIGGER IF EXISTS trg_change_log_reactions_{name}"
                ))
                .execute(store.pool())
                .await
                .unwrap();
            }
        }
        let head = settled(&store).await;
        let start = Instant::now();
        for i in 0..PER_ROUND / 2 {
            let e = &emoji[i % 2];
            let on = store
                .add_reaction(m.id, user(1), e.clone(), at(2))
                .await
                .unwrap();
            let off = store
                .remove_reaction(m.id, user(1), e.clone())
                .await
                .unwrap();
            assert!(on.changed && off.changed);
        }
        let elapsed = start.elapsed();
        let entries = settled(&store).await.get() - head.get();
        assert_eq!(
            entries,
            u64::try_from(PER_ROUND).unwrap(),
            "round {round} (triggers: {triggers}): one entry per reaction added or removed"
        );
        let times = if triggers { &mut with } else { &mut without };
        times.push(elapsed);
    }
    let per_write = |times: &[Duration]| {
        times.iter().sum::<Duration>() / u32::try_from(times.len() * PER_ROUND).unwrap()
    };
    eprintln!(
        "reactions through the store, {} writes each way: with the triggers {:?} per write \
         (rounds {:?}), without {:?} per write (rounds {:?})",
        2 * PER_ROUND,
        per_write(&with),
        with,
        per_write(&without),
        without
    );
    db.finish().await;
}
