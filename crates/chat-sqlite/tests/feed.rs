//! The change feed on SQLite, beyond the port contract: exactly which entries each write
//! appends, what the log holds at rest with a key ring, that it survives a reopen of the
//! file, that re-encryption is not a change, purging, waiting, a reader's windows, and the
//! plan of the reader's query.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a failed expectation panics.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_crypto::{KeyId, KeyRing, MessageCipher};
use chat_domain::{
    Change, ChangeKind, ConversationDetails, ConversationId, ConversationType, DisplayName, Emoji,
    FeedPos, GroupName, MembershipMove, MessageBody, MessageContent, MessageId, Role, Seq,
    Timestamp, UserId, visible_changes,
};
use chat_ports::{
    ChangeFeed, ConversationStore, MessageStore, NewConversation, NewMessage, ReadStateStore,
    ReencryptStore, UserDirectory,
};
use chat_sqlite::{SqliteSettings, SqliteStore};
use time::OffsetDateTime;

fn user(id: i64) -> UserId {
    UserId::new(id).unwrap()
}

fn at(seconds: i64) -> Timestamp {
    OffsetDateTime::from_unix_timestamp(1_800_000_000 + seconds).unwrap()
}

fn system(content: &str) -> MessageBody {
    MessageBody::system(
        MessageContent::parse(content).unwrap(),
        chat_domain::MediaMetadata::parse(r#"{"event":"test"}"#).unwrap(),
    )
}

fn message(conversation: ConversationId, sender: i64, body: MessageBody, when: i64) -> NewMessage {
    NewMessage {
        id: MessageId::new(),
        conversation_id: conversation,
        sender_id: user(sender),
        body,
        reply_to_id: None,
        client_message_id: None,
        created_at: at(when),
    }
}

async fn users(store: &SqliteStore, n: i64) {
    for i in 1..=n {
        let name = DisplayName::parse(&format!("User {i}")).unwrap();
        store.upsert_user(user(i), Some(name)).await.unwrap();
    }
}

async fn group(store: &SqliteStore, creator: i64, members: &[i64]) -> ConversationDetails {
    let id = ConversationId::new();
    store
        .create_conversation(
            NewConversation {
                id,
                kind: ConversationType::Group,
                name: Some(GroupName::parse("Crew").unwrap()),
                posting_id: None,
                created_by: user(creator),
                members: members.iter().map(|m| user(*m)).collect(),
                created_at: at(0),
            },
            message(id, creator, system("created"), 0),
        )
        .await
        .unwrap()
}

async fn say(store: &SqliteStore, conversation: ConversationId, sender: i64, text: &str) -> Seq {
    store
        .append_message(message(conversation, sender, common::text(text), 1))
        .await
        .unwrap()
        .view
        .message
        .seq
}

async fn head(store: &SqliteStore) -> FeedPos {
    store.feed_bounds().await.unwrap().head
}

/// Every entry after `after`, in one read.
async fn after(store: &SqliteStore, after: FeedPos) -> Vec<Change> {
    store.changes_after(after, 10_000).await.unwrap()
}

/// The kinds of the entries after `from`, checking that they number on from it.
async fn kinds_after(store: &SqliteStore, from: FeedPos) -> Vec<ChangeKind> {
    let changes = after(store, from).await;
    for (i, change) in changes.iter().enumerate() {
        assert_eq!(change.pos.get(), from.get() + i as u64 + 1, "{changes:?}");
    }
    changes.into_iter().map(|c| c.kind).collect()
}

fn read(user_id: i64, seq: i64, when: i64) -> ChangeKind {
    ChangeKind::ConversationRead {
        user_id: user(user_id),
        last_read_seq: Seq::new(seq).unwrap(),
        last_read_at: at(when),
    }
}

#[tokio::test]
async fn every_write_appends_exactly_its_changes() {
    let db = common::fresh_store().await;
    let store = &db.store;
    users(store, 5).await;
    assert_eq!(head(store).await, FeedPos::ZERO);

    let crew = group(store, 1, &[2, 3]).await;
    let id = crew.conversation.id;
    let first = after(store, FeedPos::ZERO).await;
    assert!(first.iter().all(|c| c.conversation_id == id));
    let announcement = match first[1].kind {
        ChangeKind::MessageCreated { message_id } => message_id,
        ref other => panic!("{other:?}"),
    };
    assert_eq!(
        first.iter().map(|c| c.kind.clone()).collect::<Vec<_>>(),
        [
            ChangeKind::ConversationCreated,
            ChangeKind::MessageCreated {
                message_id: announcement
            },
        ]
    );

    // A send: the message only (its sender's marker moving to it is implied, not logged).
    let mark = head(store).await;
    let sent = store
        .append_message(message(id, 2, common::text("hello"), 1))
        .await
        .unwrap()
        .view
        .message;
    assert_eq!(
        kinds_after(store, mark).await,
        [ChangeKind::MessageCreated {
            message_id: sent.id
        },]
    );

    // Edit, reactions (a repeat and a removal of nothing append nothing), delete.
    let mark = head(store).await;
    let content = MessageContent::parse("hello again").unwrap();
    store
        .edit_message(sent.id, user(2), content, at(2))
        .await
        .unwrap();
    let thumbs = Emoji::parse("👍").unwrap();
    for _ in 0..2 {
        store
            .add_reaction(sent.id, user(3), thumbs.clone(), at(3))
            .await
            .unwrap();
    }
    for _ in 0..2 {
        store
            .remove_reaction(sent.id, user(3), thumbs.clone())
            .await
            .unwrap();
    }
    store.delete_message(sent.id, user(2), at(4)).await.unwrap();
    let reaction = |added| {
        let (message_id, user_id, emoji) = (sent.id, user(3), "👍".to_owned());
        if added {
            ChangeKind::ReactionAdded {
                message_id,
                user_id,
                emoji,
            }
        } else {
            ChangeKind::ReactionRemoved {
                message_id,
                user_id,
                emoji,
            }
        }
    };
    assert_eq!(
        kinds_after(store, mark).await,
        [
            ChangeKind::MessageUpdated {
                message_id: sent.id
            },
            reaction(true),
            reaction(false),
            ChangeKind::MessageDeleted {
                message_id: sent.id,
                seq: sent.seq,
            },
        ]
    );

    // Read markers: a move appends, a marker that does not move appends nothing.
    let mark = head(store).await;
    let newest = say(store, id, 1, "one more").await;
    store.mark_read(id, user(3), None, at(5)).await.unwrap();
    store.mark_read(id, user(3), None, at(6)).await.unwrap();
    let kinds = kinds_after(store, mark).await;
    assert_eq!(kinds.len(), 2, "{kinds:?}");
    assert_eq!(kinds[1], read(3, newest.get(), 5));

    // Settings: only what changes something.
    let mark = head(store).await;
    let crew_name = GroupName::parse("Crew").unwrap();
    let renamed = GroupName::parse("Renamed").unwrap();
    store
        .rename_conversation(id, user(1), crew_name, None)
        .await
        .unwrap();
    store
        .rename_conversation(id, user(1), renamed, None)
        .await
        .unwrap();
    store
        .archive_conversation(id, user(1), at(7), None)
        .await
        .unwrap();
    store
        .archive_conversation(id, user(1), at(8), None)
        .await
        .unwrap();
    store
        .unarchive_conversation(id, user(1), None)
        .await
        .unwrap();
    store
        .unarchive_conversation(id, user(1), None)
        .await
        .unwrap();
    assert_eq!(
        kinds_after(store, mark).await,
        vec![ChangeKind::ConversationUpdated; 3]
    );

    // Membership: joins (an active member adds nothing), roles, leaving, promotion.
    let mark = head(store).await;
    store
        .add_participants(id, user(1), vec![user(4), user(2)], at(9), 100, None)
        .await
        .unwrap();
    store
        .set_role(id, user(1), user(4), Role::Admin, None)
        .await
        .unwrap();
    store
        .set_role(id, user(1), user(4), Role::Admin, None)
        .await
        .unwrap();
    store
        .remove_participant(id, user(1), user(1), at(10), None)
        .await
        .unwrap();
    // The last admin leaves: the earliest-joined member (2) is promoted.
    store
        .remove_participant(id, user(4), user(4), at(11), None)
        .await
        .unwrap();
    assert_eq!(
        kinds_after(store, mark).await,
        [
            ChangeKind::ParticipantAdded {
                user_id: user(4),
                role: Role::Member
            },
            ChangeKind::ParticipantUpdated {
                user_id: user(4),
                role: Role::Admin
            },
            ChangeKind::ParticipantRemoved { user_id: user(1) },
            ChangeKind::ParticipantRemoved { user_id: user(4) },
            ChangeKind::ParticipantUpdated {
                user_id: user(2),
                role: Role::Admin
            },
        ]
    );

    // Refused writes append nothing; a DIRECT appends its creation once.
    let mark = head(store).await;
    assert!(
        store
            .append_message(message(id, 5, common::text("not a member"), 12))
            .await
            .is_err()
    );
    assert!(
        store
            .remove_participant(id, user(3), user(2), at(12), None)
            .await
            .is_err()
    );
    let direct = store
        .get_or_create_direct(ConversationId::new(), user(3), user(5), at(12))
        .await
        .unwrap();
    store
        .get_or_create_direct(ConversationId::new(), user(5), user(3), at(13))
        .await
        .unwrap();
    let changes = after(store, mark).await;
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].kind, ChangeKind::ConversationCreated);
    assert_eq!(changes[0].conversation_id, direct.details.conversation.id);
}

#[tokio::test]
async fn a_send_into_a_big_group_appends_one_entry_whatever_its_size() {
    let db = common::fresh_store().await;
    let store = &db.store;
    users(store, 200).await;
    let members: Vec<i64> = (2..=200).collect();
    let big = group(store, 1, &members).await;
    let mark = head(store).await;
    say(store, big.conversation.id, 7, "to everyone").await;
    assert_eq!(head(store).await.get(), mark.get() + 1);
    let mut raw = common::raw::connect(&db.location()).await;
    let rows = common::raw::scalar(&mut raw, "SELECT COUNT(*) FROM CHANGE_LOG", None).await;
    assert_eq!(rows, 3, "creation (2 entries) and the send (1)");
}

/// Reads every text column of `CHANGE_LOG` as one string.
async fn log_text(location: &str) -> String {
    let mut raw = common::raw::connect(location).await;
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT COALESCE(conversation_id, '') || '|' || kind || '|' || COALESCE(message_id, '') \
         || '|' || COALESCE(user_id, '') || '|' || COALESCE(seq, '') || '|' || \
         COALESCE(role, '') || '|' || COALESCE(emoji, '') || '|' || COALESCE(read_at, '') \
         FROM CHANGE_LOG ORDER BY pos",
    )
    .fetch_all(&mut raw)
    .await
    .unwrap();
    rows.join("\n")
}

fn test_ring() -> Arc<KeyRing> {
    let keys = [(KeyId::parse("feed-test").unwrap(), [0x42_u8; 32])];
    Arc::new(KeyRing::from_keys(keys, KeyId::parse("feed-test").unwrap()).unwrap())
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

#[tokio::test]
async fn with_a_key_ring_no_message_text_is_at_rest_in_the_file() {
    let db = common::fresh_store().await;
    let store = db
        .store
        .clone()
        .with_cipher(MessageCipher::new(Some(test_ring())));
    users(&store, 2).await;
    let crew = group(&store, 1, &[2]).await;
    let id = crew.conversation.id;
    let sent = store
        .append_message(message(id, 2, common::text("plaintext-marker-sent"), 1))
        .await
        .unwrap()
        .view
        .message;
    let edited = MessageContent::parse("plaintext-marker-edited").unwrap();
    store
        .edit_message(sent.id, user(2), edited, at(2))
        .await
        .unwrap();
    let secret_name = GroupName::parse("group-name-marker").unwrap();
    store
        .rename_conversation(id, user(1), secret_name, None)
        .await
        .unwrap();
    store
        .add_reaction(sent.id, user(1), Emoji::parse("🎉").unwrap(), at(3))
        .await
        .unwrap();
    store.delete_message(sent.id, user(2), at(4)).await.unwrap();
    // The creation and its announcement, the send, the edit, the rename, the reaction and
    // the delete.
    assert_eq!(head(&store).await.get(), 7);

    // The log's rows: references only.
    let text = log_text(&db.location()).await;
    for marker in ["plaintext-marker", "group-name-marker", "hello", "created"] {
        assert!(!text.contains(marker), "{marker} in the log:\n{text}");
    }
    assert!(text.contains(&sent.id.to_string()), "{text}");
    // The file itself (and its write-ahead log): the message text is nowhere.
    let mut bytes = std::fs::read(db.dir.path().join("chat.db")).unwrap();
    if let Ok(wal) = std::fs::read(db.dir.path().join("chat.db-wal")) {
        bytes.extend(wal);
    }
    assert!(
        contains(&bytes, &sent.id.to_string()),
        "the scan reads rows"
    );
    assert!(!contains(&bytes, "plaintext-marker"));
}

#[tokio::test]
async fn the_feed_survives_a_reopen_of_the_file() {
    let db = common::fresh_store().await;
    let location = db.location();
    users(&db.store, 3).await;
    let crew = group(&db.store, 1, &[2, 3]).await;
    say(&db.store, crew.conversation.id, 2, "before the restart").await;
    let bounds = db.store.feed_bounds().await.unwrap();
    let before = after(&db.store, FeedPos::ZERO).await;
    assert_eq!(before.len() as u64, bounds.head.get());
    db.store.close().await;

    let store = SqliteStore::open(&location, SqliteSettings::default())
        .await
        .unwrap()
        .with_cipher(chat_contract::switch::cipher());
    store.migrate().await.unwrap();
    assert_eq!(store.feed_bounds().await.unwrap(), bounds);
    assert_eq!(after(&store, FeedPos::ZERO).await, before);
    say(&store, crew.conversation.id, 3, "after the restart").await;
    let next = after(&store, bounds.head).await;
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].pos, bounds.head.next());
    // Another file is another feed.
    let other = common::fresh_store().await;
    assert_ne!(
        other.store.feed_bounds().await.unwrap().feed_id,
        bounds.feed_id
    );
    store.close().await;
}

#[tokio::test]
async fn reencryption_appends_nothing() {
    let db = common::fresh_store().await;
    let plain = db.store.clone().with_cipher(MessageCipher::plain());
    users(&plain, 2).await;
    let crew = group(&plain, 1, &[2]).await;
    for i in 0..5 {
        say(&plain, crew.conversation.id, 2, &format!("to seal {i}")).await;
    }
    let before = plain.feed_bounds().await.unwrap();
    let sealing = db
        .store
        .clone()
        .with_cipher(MessageCipher::new(Some(test_ring())));
    let mut cursor = None;
    let mut rewritten = 0;
    loop {
        let batch = sealing.reencrypt_batch(cursor, 2).await.unwrap();
        rewritten += batch.rewritten;
        if batch.last.is_none() {
            break;
        }
        cursor = batch.last;
    }
    assert_eq!(rewritten, 5);
    assert_eq!(sealing.feed_bounds().await.unwrap(), before);
}

#[tokio::test]
async fn a_polling_reader_never_misses_a_committed_change() {
    let db = common::fresh_store().await;
    let store = db.store.clone();
    users(&store, 8).await;
    let crew = group(&store, 1, &(2..=8).collect::<Vec<_>>()).await;
    let id = crew.conversation.id;
    let writers: Vec<_> = (1..=8)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..20 {
                    let sent = store
                        .append_message(message(id, w, common::text(&format!("{w}/{i}")), i))
                        .await
                        .unwrap()
                        .view
                        .message;
                    if i % 3 == 0 {
                        store
                            .add_reaction(sent.id, user(w), Emoji::parse("👍").unwrap(), at(i))
                            .await
                            .unwrap();
                    }
                    if i % 5 == 0 {
                        store.mark_read(id, user(w % 8 + 1), None, at(i)).await.ok();
                    }
                }
            })
        })
        .collect();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (store, done) = (store.clone(), done.clone());
        tokio::spawn(async move {
            let mut seen: Vec<u64> = Vec::new();
            let mut last = FeedPos::ZERO;
            loop {
                // The flag is read before the page: an empty page read after every
                // writer had its answer (so after every commit) means nothing is left.
                let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                let page = store.changes_after(last, 7).await.unwrap();
                if let Some(newest) = page.last() {
                    last = newest.pos;
                }
                seen.extend(page.iter().map(|c| c.pos.get()));
                if page.is_empty() {
                    if finished {
                        return seen;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        })
    };
    for writer in writers {
        writer.await.unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = reader.await.unwrap();
    let all: Vec<u64> = after(&store, FeedPos::ZERO)
        .await
        .iter()
        .map(|c| c.pos.get())
        .collect();
    assert_eq!(all, (1..=head(&store).await.get()).collect::<Vec<_>>());
    assert_eq!(seen, all, "the reader saw every position once, in order");
    // At least a `message.created` per send and a `reaction.added` per reaction.
    assert!(all.len() >= 8 * 20 + 8 * 7, "{}", all.len());
}

#[tokio::test]
async fn purging_moves_the_floor_then_deletes_in_batches() {
    let db = common::fresh_store().await;
    let store = &db.store;
    users(store, 2).await;
    let crew = group(store, 1, &[2]).await;
    for i in 0..3 {
        say(store, crew.conversation.id, 2, &format!("old {i}")).await;
    }
    let before = store.feed_bounds().await.unwrap();
    assert_eq!(before.head.get(), 5);
    let now = OffsetDateTime::now_utc();

    // Nothing is older than a day ago.
    let none = store.purge(now - time::Duration::days(1), 4).await.unwrap();
    assert_eq!(
        (none.floor, none.deleted, none.more),
        (FeedPos::ZERO, 0, false)
    );

    // Everything is older than tomorrow: the floor moves to the head at once, then the
    // entries go 4 at a time, oldest first.
    let tomorrow = now + time::Duration::days(1);
    let first = store.purge(tomorrow, 4).await.unwrap();
    assert_eq!(
        (first.floor, first.deleted, first.more),
        (before.head, 4, true)
    );
    let bounds = store.feed_bounds().await.unwrap();
    assert_eq!((bounds.floor, bounds.head), (before.head, before.head));
    let left = after(store, FeedPos::ZERO).await;
    assert_eq!(
        left.first().map(|c| c.pos.get()),
        Some(5),
        "the oldest went first"
    );
    let mut total = first.deleted;
    let mut calls = 1;
    loop {
        let step = store.purge(tomorrow, 4).await.unwrap();
        total += step.deleted;
        calls += 1;
        if !step.more {
            assert_eq!(step.floor, before.head);
            break;
        }
        assert!(calls < 10);
    }
    assert_eq!(total, 5);
    let bounds = store.feed_bounds().await.unwrap();
    assert_eq!(
        (bounds.floor, bounds.head, bounds.feed_id),
        (before.head, before.head, before.feed_id)
    );
    assert!(after(store, FeedPos::ZERO).await.is_empty());
    // Positions are never handed out twice, also after every entry was deleted.
    say(store, crew.conversation.id, 1, "after the purge").await;
    let next = after(store, FeedPos::ZERO).await;
    assert_eq!(next[0].pos, before.head.next());
    assert_eq!(head(store).await.get(), before.head.get() + 1);
}

#[tokio::test]
async fn waiting_returns_at_a_commit_or_at_the_timeout() {
    let db = common::fresh_store().await;
    let store = db.store.clone();
    users(&store, 2).await;
    let crew = group(&store, 1, &[2]).await;
    let now = head(&store).await;

    // Already past: at once.
    let started = Instant::now();
    let got = store
        .wait_past(FeedPos::ZERO, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(got, now);
    assert!(started.elapsed() < Duration::from_secs(3));

    // Nothing commits: the head, after the timeout.
    let started = Instant::now();
    let got = store
        .wait_past(now, Duration::from_millis(200))
        .await
        .unwrap();
    assert_eq!(got, now);
    assert!(started.elapsed() >= Duration::from_millis(200));

    // A commit wakes the waiter.
    let waiter = {
        let store = store.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let got = store.wait_past(now, Duration::from_secs(10)).await.unwrap();
            (got, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    say(&store, crew.conversation.id, 2, "wake up").await;
    let (got, waited) = waiter.await.unwrap();
    assert_eq!(got.get(), now.get() + 1);
    assert!(waited < Duration::from_secs(5), "{waited:?}");
}

#[tokio::test]
async fn a_readers_changes_come_with_their_membership_windows() {
    let db = common::fresh_store().await;
    let store = &db.store;
    users(store, 3).await;
    let crew = group(store, 1, &[2]).await;
    let id = crew.conversation.id;
    // Another conversation the reader is never in.
    let other = group(store, 1, &[2]).await;
    say(store, id, 1, "before the reader").await;
    let reader = user(3);
    let empty = store
        .reader_changes(reader, FeedPos::ZERO, 100)
        .await
        .unwrap();
    assert!(empty.changes.is_empty() && empty.windows.is_empty());

    store
        .add_participants(id, user(1), vec![reader], at(1), 100, None)
        .await
        .unwrap();
    say(store, id, 2, "while the reader is in").await;
    store
        .remove_participant(id, user(1), reader, at(2), None)
        .await
        .unwrap();
    let removed_at = head(store).await;
    say(store, id, 2, "while the reader is out").await;
    say(store, other.conversation.id, 2, "elsewhere").await;
    store
        .add_participants(id, user(1), vec![reader], at(3), 100, None)
        .await
        .unwrap();
    say(store, id, 1, "back in").await;

    let page = store
        .reader_changes(reader, FeedPos::ZERO, 100)
        .await
        .unwrap();
    assert_eq!(page.head, head(store).await);
    let all_of_crew: Vec<Change> = after(store, FeedPos::ZERO)
        .await
        .into_iter()
        .filter(|c| c.conversation_id == id)
        .collect();
    assert_eq!(
        page.changes, all_of_crew,
        "a superset: every change of the conversation"
    );
    assert_eq!(page.windows.len(), 1);
    let window = page.windows[0];
    assert!(window.active_now);
    assert_eq!(window.first_move_after, Some(MembershipMove::Joined));
    let visible = visible_changes(reader, page.changes.clone(), &page.windows);
    let texts: Vec<&str> = visible.iter().map(|c| c.kind.name()).collect();
    assert_eq!(
        texts,
        [
            "participant.added",
            "message.created",
            "participant.removed",
            "participant.added",
            "message.created",
        ]
    );

    // From just after the removal: the first move is the re-join.
    let later = store.reader_changes(reader, removed_at, 100).await.unwrap();
    assert_eq!(
        later.windows[0].first_move_after,
        Some(MembershipMove::Joined)
    );
    assert!(later.changes.iter().all(|c| c.pos > removed_at));
    // From before the removal (inside the first window): the first move is the removal.
    let inside = store
        .reader_changes(reader, FeedPos::new(removed_at.get() - 1), 2)
        .await
        .unwrap();
    assert_eq!(inside.changes.len(), 2, "the limit holds");
    assert_eq!(
        inside.windows[0].first_move_after,
        Some(MembershipMove::Left)
    );
}

#[tokio::test]
async fn the_readers_query_reads_its_indexes() {
    let db = common::fresh_store().await;
    let mut raw = common::raw::connect(&db.location()).await;
    let rows: Vec<(i64, i64, i64, String)> = sqlx::query_as(&format!(
        "EXPLAIN QUERY PLAN {}",
        chat_sqlite::hot_queries::reader_changes()
    ))
    .bind(1_i64)
    .bind(0_i64)
    .bind(4096_i64)
    .bind(100_i64)
    .fetch_all(&mut raw)
    .await
    .unwrap();
    let plan = rows
        .into_iter()
        .map(|r| r.3)
        .collect::<Vec<_>>()
        .join(" | ");
    // The reader's memberships first, then each conversation's entries after the position.
    assert!(plan.starts_with("SEARCH p USING"), "{plan}");
    assert!(plan.contains("idx_change_log_conversation"), "{plan}");
    let rows: Vec<(i64, i64, i64, String)> = sqlx::query_as(&format!(
        "EXPLAIN QUERY PLAN {}",
        chat_sqlite::hot_queries::reader_windows()
    ))
    .bind(0_i64)
    .bind(1_i64)
    .bind("00000000-0000-0000-0000-000000000000")
    .fetch_all(&mut raw)
    .await
    .unwrap();
    let plan = rows
        .into_iter()
        .map(|r| r.3)
        .collect::<Vec<_>>()
        .join(" | ");
    // The first membership move: a range of the partial index of moves only.
    assert!(
        plan.contains("idx_change_log_membership (user_id=? AND conversation_id=? AND pos>?)"),
        "{plan}"
    );
}

/// Appends `n` entries of a conversation nobody here is in, straight into the log (as
/// other users' traffic would).
async fn filler(location: &str, n: i64) {
    let mut raw = common::raw::connect(location).await;
    sqlx::query(
        "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < ?) \
         INSERT INTO CHANGE_LOG (conversation_id, kind) \
         SELECT '00000000-0000-7000-8000-000000000000', 8 FROM k",
    )
    .bind(n)
    .execute(&mut raw)
    .await
    .unwrap();
}

#[tokio::test]
async fn a_reader_far_behind_pages_through_sparse_changes_exactly() {
    let db = common::fresh_store().await;
    let store = &db.store;
    users(store, 2).await;
    let crew = group(store, 1, &[2]).await;
    let id = crew.conversation.id;
    filler(&db.location(), 9_000).await;
    say(store, id, 2, "after 9000 others").await;
    filler(&db.location(), 30_000).await;
    say(store, id, 1, "after 30000 more").await;
    say(store, id, 2, "right after").await;
    filler(&db.location(), 5).await;

    let expected: Vec<Change> = store
        .changes_after(FeedPos::ZERO, 100_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.conversation_id == id)
        .collect();
    // The creation (2 entries) and three sends (one each).
    assert_eq!(expected.len(), 2 + 3);
    for limit in [1, 2, 4, 100] {
        let mut got = Vec::new();
        let mut from = FeedPos::ZERO;
        loop {
            let page = store.reader_changes(user(2), from, limit).await.unwrap();
            assert!(page.changes.len() <= limit);
            match page.changes.last() {
                Some(last) => from = last.pos,
                None => break,
            }
            got.extend(page.changes);
        }
        assert_eq!(got, expected, "pages of {limit}");
    }
}

/// A request that fails after it has appended an entry is rolled back to its savepoint,
/// inside a batch whose other requests commit: its number is taken back with it, so the
/// positions stay without gaps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_rolled_back_in_a_committed_batch_leaves_no_gap() {
    let db = common::fresh_store().await;
    let store = db.store.clone();
    users(&store, 2).await;
    let crew = group(&store, 1, &[2]).await;
    let id = crew.conversation.id;
    // An existing message id: an announcement reusing it fails on MESSAGES' primary key,
    // after the creation's `conversation.created` entry went in.
    let taken = store
        .append_message(message(id, 2, common::text("taken"), 1))
        .await
        .unwrap()
        .view
        .message
        .id;
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                if i % 2 == 0 {
                    store
                        .append_message(message(id, 1 + i % 2, common::text("ok"), i))
                        .await
                        .map(|_| ())
                } else {
                    let other = ConversationId::new();
                    let mut announcement = message(other, 1, system("created"), i);
                    announcement.id = taken;
                    store
                        .create_conversation(
                            NewConversation {
                                id: other,
                                kind: ConversationType::Group,
                                name: Some(GroupName::parse("Doomed").unwrap()),
                                posting_id: None,
                                created_by: user(1),
                                members: vec![user(2)],
                                created_at: at(i),
                            },
                            announcement,
                        )
                        .await
                        .map(|_| ())
                }
            })
        })
        .collect();
    let mut failed = 0;
    for task in tasks {
        if task.await.unwrap().is_err() {
            failed += 1;
        }
    }
    assert_eq!(failed, 20, "every creation reusing the id fails");
    assert!(
        store.write_stats().largest_batch > 1,
        "some failures shared a batch with sends: {:?}",
        store.write_stats()
    );
    let all = after(&store, FeedPos::ZERO).await;
    let positions: Vec<u64> = all.iter().map(|c| c.pos.get()).collect();
    assert_eq!(
        positions,
        (1..=head(&store).await.get()).collect::<Vec<_>>()
    );
    // The group's creation (2), the first send (1), 20 sends (1 each); no other creation.
    assert_eq!(all.len(), 2 + 1 + 20);
    let created = all
        .iter()
        .filter(|c| c.kind == ChangeKind::ConversationCreated)
        .count();
    assert_eq!(created, 1);
}
