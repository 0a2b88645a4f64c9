//! The contract cases of the change feed (`chat_ports::ChangeFeed`): what each write
//! appends, that a polling reader never misses a committed change, that a reader sees
//! exactly the changes of its membership windows, retention, and waiting.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chat_domain::{
    Change, ChangeKind, ConversationId, ConversationType, Emoji, FeedPos, GroupName,
    MembershipMove, MessageContent, MessageId, Role, Seq, UserId, visible_changes,
};
use chat_ports::{NewConversation, ReaderChanges};
use futures::future::join_all;
use time::OffsetDateTime;

use crate::Ports;
use crate::cases::Steps;
use crate::fixtures::{at, new_message, system, text, user, with_client_id};

fn seq(n: i64) -> Seq {
    Seq::new(n).unwrap()
}

fn emoji(e: &str) -> Emoji {
    Emoji::parse(e).unwrap()
}

/// The feed's bounds once every committed change is readable.
async fn bounds(ports: &Ports) -> chat_ports::FeedBounds {
    ports.fixtures.feed_settled().await;
    ports.feed.feed_bounds().await.unwrap()
}

/// The head once every committed change is readable.
async fn head(ports: &Ports) -> FeedPos {
    bounds(ports).await.head
}

/// Every change after `after` once every committed change is readable, read in pages
/// of 100.
async fn all_after(ports: &Ports, after: FeedPos) -> Vec<Change> {
    ports.fixtures.feed_settled().await;
    let mut out: Vec<Change> = Vec::new();
    let mut cursor = after;
    loop {
        let page = ports.feed.changes_after(cursor, 100).await.unwrap();
        assert!(page.len() <= 100, "a page holds at most the limit");
        let Some(last) = page.last() else {
            return out;
        };
        cursor = last.pos;
        out.extend(page);
    }
}

/// Creates a GROUP of `creator` and `members` named "Crew" whose announcement is sent by
/// the creator; the announcement's id.
async fn create_group(
    ports: &Ports,
    id: ConversationId,
    creator: i64,
    members: &[i64],
    when: chat_domain::Timestamp,
) -> MessageId {
    let announcement = new_message(id, user(creator), system("created"), when);
    let announcement_id = announcement.id;
    ports
        .conversations
        .create_conversation(
            NewConversation {
                id,
                kind: ConversationType::Group,
                name: Some(GroupName::parse("Crew").unwrap()),
                posting_id: None,
                created_by: user(creator),
                members: members.iter().map(|m| user(*m)).collect(),
                created_at: when,
            },
            announcement,
        )
        .await
        .unwrap();
    announcement_id
}

/// Follows the feed write by write: [`Follower::expect`] checks that exactly the given
/// changes were appended since the last check, at the next positions.
struct Follower {
    cursor: FeedPos,
}

impl Follower {
    async fn start(ports: &Ports) -> Self {
        Self {
            cursor: head(ports).await,
        }
    }

    async fn expect(
        &mut self,
        ports: &Ports,
        what: &str,
        expected: &[(ConversationId, ChangeKind)],
    ) {
        let got = all_after(ports, self.cursor).await;
        let kinds: Vec<(ConversationId, ChangeKind)> = got
            .iter()
            .map(|c| (c.conversation_id, c.kind.clone()))
            .collect();
        assert_eq!(kinds, expected, "{what}");
        let now = OffsetDateTime::now_utc();
        for (offset, change) in (1_u64..).zip(&got) {
            assert_eq!(
                change.pos.get(),
                self.cursor.get() + offset,
                "{what}: positions follow on without gaps"
            );
            assert!(
                (now - change.at).abs() < time::Duration::hours(1),
                "{what}: an entry is stamped with the store's clock ({}), not the write's",
                change.at
            );
        }
        if let Some(last) = got.last() {
            self.cursor = last.pos;
        }
        assert_eq!(
            head(ports).await,
            self.cursor,
            "{what}: the head is the newest change"
        );
    }

    async fn nothing(&mut self, ports: &Ports, what: &str) {
        self.expect(ports, what, &[]).await;
    }
}

pub async fn feed_records_each_message_write(ports: Ports) {
    ports.users_up_to(4).await;
    let start = bounds(&ports).await;
    assert_eq!(start.head, FeedPos::ZERO, "a fresh store's feed is empty");
    assert_eq!(start.floor, FeedPos::ZERO);
    assert!(
        ports
            .feed
            .changes_after(FeedPos::ZERO, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let mut feed = Follower::start(&ports).await;
    let id = ConversationId::new();
    let created = create_group(&ports, id, 1, &[2, 3], at(0)).await;
    feed.expect(
        &ports,
        "a group's creation: the conversation and its announcement (the creator's marker is implied)",
        &[
            (id, ChangeKind::ConversationCreated),
            (
                id,
                ChangeKind::MessageCreated {
                    message_id: created,
                },
            ),
        ],
    )
    .await;

    let hi = ports.say(id, 2, "hi 👋", at(1)).await.view.message;
    feed.expect(
        &ports,
        "a send: the message only (the sender's marker is implied)",
        &[(id, ChangeKind::MessageCreated { message_id: hi.id })],
    )
    .await;

    let keyed = with_client_id(new_message(id, user(3), text("once"), at(2)), "feed-1");
    let once = ports
        .messages
        .append_message(keyed.clone())
        .await
        .unwrap()
        .view
        .message;
    feed.expect(
        &ports,
        "a send with a client message id",
        &[(
            id,
            ChangeKind::MessageCreated {
                message_id: once.id,
            },
        )],
    )
    .await;
    let mut repeat = keyed;
    repeat.id = MessageId::new();
    let again = ports.messages.append_message(repeat).await.unwrap();
    assert!(!again.created);
    feed.nothing(&ports, "a repeated send").await;
    assert!(
        ports
            .messages
            .append_message(new_message(id, user(4), text("let me in"), at(3)))
            .await
            .is_err()
    );
    feed.nothing(&ports, "a send by an outsider").await;

    let edited = MessageContent::parse("hi, edited ✏️").unwrap();
    ports
        .messages
        .edit_message(hi.id, user(2), edited.clone(), at(4))
        .await
        .unwrap();
    feed.expect(
        &ports,
        "an edit",
        &[(id, ChangeKind::MessageUpdated { message_id: hi.id })],
    )
    .await;
    assert!(
        ports
            .messages
            .edit_message(hi.id, user(3), edited.clone(), at(4))
            .await
            .is_err()
    );
    feed.nothing(&ports, "an edit of someone else's message")
        .await;

    let party = || ChangeKind::ReactionAdded {
        message_id: hi.id,
        user_id: user(3),
        emoji: emoji("🎉").as_str().to_owned(),
    };
    ports
        .messages
        .add_reaction(hi.id, user(3), emoji("🎉"), at(5))
        .await
        .unwrap();
    feed.expect(&ports, "a reaction", &[(id, party())]).await;
    let repeated = ports
        .messages
        .add_reaction(hi.id, user(3), emoji("🎉"), at(5))
        .await
        .unwrap();
    assert!(!repeated.changed);
    feed.nothing(&ports, "a repeated reaction").await;
    ports
        .messages
        .remove_reaction(hi.id, user(3), emoji("🎉"))
        .await
        .unwrap();
    feed.expect(
        &ports,
        "a reaction taken off",
        &[(
            id,
            ChangeKind::ReactionRemoved {
                message_id: hi.id,
                user_id: user(3),
                emoji: emoji("🎉").as_str().to_owned(),
            },
        )],
    )
    .await;
    ports
        .messages
        .remove_reaction(hi.id, user(3), emoji("🎉"))
        .await
        .unwrap();
    feed.nothing(&ports, "taking off a reaction that is not there")
        .await;
    assert!(
        ports
            .messages
            .add_reaction(hi.id, user(4), emoji("🎉"), at(5))
            .await
            .is_err()
    );
    feed.nothing(&ports, "a reaction by an outsider").await;

    let read = ports
        .read_state
        .mark_read(id, user(1), None, at(6))
        .await
        .unwrap();
    assert!(read.moved);
    feed.expect(
        &ports,
        "a read marker moving",
        &[(
            id,
            ChangeKind::ConversationRead {
                user_id: user(1),
                last_read_seq: once.seq,
                last_read_at: at(6),
            },
        )],
    )
    .await;
    ports
        .read_state
        .mark_read(id, user(1), None, at(7))
        .await
        .unwrap();
    ports
        .read_state
        .mark_read(id, user(2), Some(seq(1)), at(7))
        .await
        .unwrap();
    feed.nothing(&ports, "read markers that do not move").await;
    assert!(
        ports
            .read_state
            .mark_read(id, user(4), None, at(7))
            .await
            .is_err()
    );
    feed.nothing(&ports, "an outsider marking read").await;
    ports.read_state.set_muted(id, user(2), true).await.unwrap();
    feed.nothing(&ports, "muting is not a change of the feed")
        .await;

    ports
        .messages
        .delete_message(once.id, user(3), at(8))
        .await
        .unwrap();
    feed.expect(
        &ports,
        "a delete",
        &[(
            id,
            ChangeKind::MessageDeleted {
                message_id: once.id,
                seq: once.seq,
            },
        )],
    )
    .await;
    assert!(
        ports
            .messages
            .delete_message(once.id, user(3), at(9))
            .await
            .is_err()
    );
    assert!(
        ports
            .messages
            .edit_message(once.id, user(3), edited, at(9))
            .await
            .is_err()
    );
    assert!(
        ports
            .messages
            .add_reaction(once.id, user(1), emoji("🎉"), at(9))
            .await
            .is_err()
    );
    feed.nothing(&ports, "writes to a deleted message").await;
    let last = ports.say(id, 1, "the end", at(10)).await.view.message;
    feed.expect(
        &ports,
        "a send after the refused writes",
        &[(
            id,
            ChangeKind::MessageCreated {
                message_id: last.id,
            },
        )],
    )
    .await;
}

pub async fn feed_records_each_conversation_write(ports: Ports) {
    ports.users_up_to(6).await;
    let id = ConversationId::new();
    create_group(&ports, id, 1, &[2, 3], at(0)).await;
    let mut feed = Follower::start(&ports).await;
    let crew2 = || GroupName::parse("Crew 2 🚀").unwrap();

    ports
        .conversations
        .rename_conversation(id, user(1), crew2(), None)
        .await
        .unwrap();
    feed.expect(&ports, "a rename", &[(id, ChangeKind::ConversationUpdated)])
        .await;
    ports
        .conversations
        .rename_conversation(id, user(1), crew2(), None)
        .await
        .unwrap();
    feed.nothing(&ports, "a rename to the same name").await;
    assert!(
        ports
            .conversations
            .rename_conversation(id, user(2), crew2(), None)
            .await
            .is_err()
    );
    feed.nothing(&ports, "a rename by a member").await;
    let announcement = new_message(id, user(1), system("renamed"), at(2));
    let announcement_id = announcement.id;
    let renamed = ports
        .conversations
        .rename_conversation(
            id,
            user(1),
            GroupName::parse("Crew").unwrap(),
            Some(announcement),
        )
        .await
        .unwrap();
    let announced = renamed.announcement.unwrap().message;
    assert_eq!(announced.id, announcement_id);
    feed.expect(
        &ports,
        "a rename with its announcement: the change and the announcement",
        &[
            (id, ChangeKind::ConversationUpdated),
            (
                id,
                ChangeKind::MessageCreated {
                    message_id: announcement_id,
                },
            ),
        ],
    )
    .await;

    ports
        .conversations
        .archive_conversation(id, user(1), at(3), None)
        .await
        .unwrap();
    feed.expect(
        &ports,
        "archiving",
        &[(id, ChangeKind::ConversationUpdated)],
    )
    .await;
    assert!(
        ports
            .messages
            .append_message(new_message(id, user(2), text("anyone?"), at(3)))
            .await
            .is_err()
    );
    assert!(
        ports
            .conversations
            .add_participants(id, user(1), vec![user(4)], at(3), 100, None)
            .await
            .is_err()
    );
    feed.nothing(&ports, "writes refused by the archiving")
        .await;
    ports
        .conversations
        .unarchive_conversation(id, user(1), None)
        .await
        .unwrap();
    feed.expect(
        &ports,
        "unarchiving",
        &[(id, ChangeKind::ConversationUpdated)],
    )
    .await;
    ports
        .conversations
        .unarchive_conversation(id, user(1), None)
        .await
        .unwrap();
    feed.nothing(&ports, "unarchiving a live conversation")
        .await;

    let added = ports
        .conversations
        .add_participants(id, user(1), vec![user(4), user(5)], at(4), 100, None)
        .await
        .unwrap();
    assert_eq!(added.joined, vec![user(4), user(5)]);
    feed.expect(
        &ports,
        "adding participants: one entry per user who joined",
        &[
            (
                id,
                ChangeKind::ParticipantAdded {
                    user_id: user(4),
                    role: Role::Member,
                },
            ),
            (
                id,
                ChangeKind::ParticipantAdded {
                    user_id: user(5),
                    role: Role::Member,
                },
            ),
        ],
    )
    .await;
    let none = ports
        .conversations
        .add_participants(id, user(1), vec![user(4)], at(4), 100, None)
        .await
        .unwrap();
    assert!(none.joined.is_empty());
    feed.nothing(&ports, "adding an active participant").await;
    assert!(
        ports
            .conversations
            .add_participants(id, user(2), vec![user(6)], at(4), 100, None)
            .await
            .is_err()
    );
    assert!(
        ports
            .conversations
            .add_participants(id, user(1), vec![user(6)], at(4), 5, None)
            .await
            .is_err()
    );
    feed.nothing(&ports, "adds by a member and past the limit")
        .await;

    ports
        .conversations
        .set_role(id, user(1), user(4), Role::Admin, None)
        .await
        .unwrap();
    feed.expect(
        &ports,
        "a role change",
        &[(
            id,
            ChangeKind::ParticipantUpdated {
                user_id: user(4),
                role: Role::Admin,
            },
        )],
    )
    .await;
    ports
        .conversations
        .set_role(id, user(1), user(4), Role::Admin, None)
        .await
        .unwrap();
    feed.nothing(&ports, "setting the role a participant has")
        .await;
    assert!(
        ports
            .conversations
            .set_role(id, user(2), user(3), Role::Admin, None)
            .await
            .is_err()
    );
    feed.nothing(&ports, "a role change by a member").await;

    let left = ports
        .conversations
        .remove_participant(id, user(5), user(5), at(5), None)
        .await
        .unwrap();
    assert_eq!(left.promoted, None);
    feed.expect(
        &ports,
        "leaving",
        &[(id, ChangeKind::ParticipantRemoved { user_id: user(5) })],
    )
    .await;
    let announcement = new_message(id, user(1), system("removed"), at(6));
    let announcement_id = announcement.id;
    let removed = ports
        .conversations
        .remove_participant(id, user(1), user(4), at(6), Some(announcement))
        .await
        .unwrap();
    assert_eq!(removed.promoted, None);
    let announced = removed.announcement.unwrap().message;
    assert_eq!(announced.id, announcement_id);
    feed.expect(
        &ports,
        "a removal with its announcement",
        &[
            (id, ChangeKind::ParticipantRemoved { user_id: user(4) }),
            (
                id,
                ChangeKind::MessageCreated {
                    message_id: announcement_id,
                },
            ),
        ],
    )
    .await;
    let last_admin = ports
        .conversations
        .remove_participant(id, user(1), user(1), at(7), None)
        .await
        .unwrap();
    let heir = last_admin.promoted.expect("a member is promoted");
    feed.expect(
        &ports,
        "the last admin leaving: the removal, then the promotion",
        &[
            (id, ChangeKind::ParticipantRemoved { user_id: user(1) }),
            (
                id,
                ChangeKind::ParticipantUpdated {
                    user_id: heir,
                    role: Role::Admin,
                },
            ),
        ],
    )
    .await;
    assert!(
        ports
            .conversations
            .remove_participant(id, heir, user(5), at(8), None)
            .await
            .is_err()
    );
    feed.nothing(&ports, "removing someone who already left")
        .await;

    let direct = ports
        .conversations
        .get_or_create_direct(ConversationId::new(), user(2), user(3), at(9))
        .await
        .unwrap();
    assert!(direct.created);
    let direct_id = direct.details.conversation.id;
    feed.expect(
        &ports,
        "a DIRECT conversation created",
        &[(direct_id, ChangeKind::ConversationCreated)],
    )
    .await;
    let found = ports
        .conversations
        .get_or_create_direct(ConversationId::new(), user(3), user(2), at(9))
        .await
        .unwrap();
    assert!(!found.created);
    feed.nothing(&ports, "a DIRECT conversation found").await;
    ports
        .conversations
        .rename_conversation(id, heir, crew2(), None)
        .await
        .unwrap();
    feed.expect(
        &ports,
        "a rename after the no-ops",
        &[(id, ChangeKind::ConversationUpdated)],
    )
    .await;
}

pub async fn feed_entries_per_send_do_not_grow_with_the_group(ports: Ports) {
    ports.users_up_to(201).await;
    let id = ConversationId::new();
    let members: Vec<i64> = (2..=201).collect();
    let start = head(&ports).await;
    create_group(&ports, id, 1, &members, at(0)).await;
    let creation = all_after(&ports, start).await;
    assert_eq!(
        creation.len(),
        2,
        "creating a group of 201 appends the creation and the announcement"
    );
    let mut feed = Follower::start(&ports).await;
    let sent = ports.say(id, 7, "to everyone", at(1)).await.view.message;
    feed.expect(
        &ports,
        "a send into a group of 201",
        &[(
            id,
            ChangeKind::MessageCreated {
                message_id: sent.id,
            },
        )],
    )
    .await;
    // Ten senders at once (one batch where an adapter groups commits).
    let before = head(&ports).await;
    let sends = (10..20).map(|sender| ports.say(id, sender, "burst", at(2)));
    let ids: HashSet<MessageId> = join_all(sends)
        .await
        .into_iter()
        .map(|a| a.view.message.id)
        .collect();
    let burst = all_after(&ports, before).await;
    assert_eq!(burst.len(), 10, "one entry per send, whatever the group");
    let created: HashSet<MessageId> = burst
        .iter()
        .filter_map(|c| match c.kind {
            ChangeKind::MessageCreated { message_id } => Some(message_id),
            _ => None,
        })
        .collect();
    assert_eq!(created, ids);
    assert!(
        burst
            .iter()
            .all(|c| matches!(c.kind, ChangeKind::MessageCreated { .. })),
        "a send's marker move is implied by its message.created, not logged"
    );
    let after_burst = head(&ports).await;
    assert_eq!(after_burst.get(), before.get() + 10);
    ports
        .read_state
        .mark_read(id, user(150), None, at(3))
        .await
        .unwrap();
    assert_eq!(
        all_after(&ports, after_burst).await.len(),
        1,
        "one entry for a marker, whatever the group"
    );
}

/// What one writer of [`polling_reader_never_misses_a_committed_change`] did: the number
/// of entries its writes appended.
async fn write_mix(ports: Ports, id: ConversationId, writer: i64, rounds: i64) -> usize {
    let mut entries = 0;
    let mut mine: Option<MessageId> = None;
    let mut reacted = false;
    for round in 0..rounds {
        match (round % 4, mine) {
            (0, _) | (_, None) => {
                let sent = ports.say(id, writer, "race 🏁", at(round)).await;
                mine = Some(sent.view.message.id);
                reacted = false;
                // The message only: the sender's marker move is implied by it.
                entries += 1;
            }
            (1, Some(message)) => {
                let change = if reacted {
                    ports
                        .messages
                        .remove_reaction(message, user(writer), emoji("👍"))
                        .await
                        .unwrap()
                } else {
                    ports
                        .messages
                        .add_reaction(message, user(writer), emoji("👍"), at(round))
                        .await
                        .unwrap()
                };
                assert!(change.changed);
                reacted = !reacted;
                entries += 1;
            }
            (2, _) => {
                let read = ports
                    .read_state
                    .mark_read(id, user(writer), None, at(round))
                    .await
                    .unwrap();
                entries += usize::from(read.moved);
            }
            (_, Some(message)) => {
                let content = MessageContent::parse(format!("edit {round}")).unwrap();
                ports
                    .messages
                    .edit_message(message, user(writer), content, at(round))
                    .await
                    .unwrap();
                entries += 1;
            }
        }
    }
    entries
}

pub async fn polling_reader_never_misses_a_committed_change(ports: Ports) {
    ports.users_up_to(8).await;
    let id = ConversationId::new();
    create_group(&ports, id, 1, &[2, 3, 4, 5, 6, 7, 8], at(0)).await;
    let start = head(&ports).await;
    // The number of entries the writers appended, once they are all answered.
    let target = Arc::new(AtomicUsize::new(usize::MAX));
    // Two readers: one polls `changes_after`; the other reads `numbered_after` and waits
    // with `wait_past` between pages, as the relay does.
    let readers: Vec<_> = [false, true]
        .into_iter()
        .map(|relay_like| {
            let ports = ports.clone();
            let target = target.clone();
            tokio::spawn(poll_feed(ports, start, target, relay_like))
        })
        .collect();
    let writers = (1..=8).map(|writer| tokio::spawn(write_mix(ports.clone(), id, writer, 24)));
    let expected: usize = join_all(writers)
        .await
        .into_iter()
        .map(Result::unwrap)
        .sum();
    target.store(expected, Ordering::SeqCst);
    let full = all_after(&ports, start).await;
    assert_eq!(full.len(), expected, "every write appended its entries");
    let positions: Vec<u64> = full.iter().map(|c| c.pos.get()).collect();
    let consecutive: Vec<u64> = (start.get() + 1..=start.get() + expected as u64).collect();
    assert_eq!(positions, consecutive, "positions are gapless");
    for (reader, relay_like) in readers.into_iter().zip([false, true]) {
        let seen = reader.await.unwrap();
        assert_eq!(
            seen.len(),
            full.len(),
            "the polling reader (relay-like: {relay_like}) saw every committed change, once"
        );
        assert_eq!(
            seen, full,
            "the polling reader (relay-like: {relay_like}) saw the feed as it stands"
        );
    }
}

/// Reads the feed from `start` in pages of 7 until it has seen `target` changes (once the
/// writers have set it): with `changes_after`, or, `relay_like`, with `numbered_after`
/// and `wait_past` between pages. Every page continues exactly where the last one ended.
async fn poll_feed(
    ports: Ports,
    start: FeedPos,
    target: Arc<AtomicUsize>,
    relay_like: bool,
) -> Vec<Change> {
    let mut seen: Vec<Change> = Vec::new();
    let mut cursor = start;
    let mut deadline: Option<Instant> = None;
    loop {
        let expected = target.load(Ordering::SeqCst);
        if seen.len() >= expected {
            return seen;
        }
        if expected != usize::MAX {
            // Every write has been answered; an adapter may need a moment before a
            // committed change is readable, but not for ever.
            let deadline =
                *deadline.get_or_insert_with(|| Instant::now() + Duration::from_secs(30));
            assert!(
                Instant::now() < deadline,
                "committed changes stay unreadable (relay-like: {relay_like}): {} of \
                 {expected} seen",
                seen.len()
            );
        }
        let page = if relay_like {
            ports.feed.numbered_after(cursor, 7).await.unwrap()
        } else {
            ports.feed.changes_after(cursor, 7).await.unwrap()
        };
        assert!(page.len() <= 7);
        for (offset, change) in (1_u64..).zip(&page) {
            assert_eq!(
                change.pos.get(),
                cursor.get() + offset,
                "a page continues exactly where the last one ended"
            );
        }
        if let Some(last) = page.last() {
            cursor = last.pos;
        }
        if page.is_empty() {
            if relay_like {
                ports
                    .feed
                    .wait_past(cursor, Duration::from_millis(50))
                    .await
                    .unwrap();
            } else {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        seen.extend(page);
    }
}

/// A reader following its own changes in pages of random size.
struct Reader {
    cursor: FeedPos,
    seen: Vec<Change>,
}

impl Reader {
    /// Reads pages until one comes back short.
    async fn catch_up(&mut self, ports: &Ports, reader: UserId, dice: &mut Steps) {
        loop {
            let size = 1 + usize::try_from(dice.below(9)).unwrap();
            let page = ports
                .feed
                .reader_changes(reader, self.cursor, size)
                .await
                .unwrap();
            check_page(ports, reader, self.cursor, size, &page).await;
            let short = page.changes.len() < size;
            self.cursor = page
                .changes
                .last()
                .map_or(self.cursor.max(page.head), |c| c.pos);
            self.seen
                .extend(visible_changes(reader, page.changes, &page.windows));
            if short {
                return;
            }
        }
    }
}

/// What a page of [`chat_ports::ChangeFeed::reader_changes`] promises.
async fn check_page(
    ports: &Ports,
    reader: UserId,
    after: FeedPos,
    size: usize,
    page: &ReaderChanges,
) {
    assert!(page.changes.len() <= size, "at most the limit");
    let mut last = after;
    for change in &page.changes {
        assert!(change.pos > last, "oldest first, after the position asked");
        assert!(change.pos <= page.head, "nothing past the head");
        last = change.pos;
        assert!(
            page.windows
                .iter()
                .any(|w| w.conversation_id == change.conversation_id),
            "a window for every conversation of the page"
        );
        let details = ports
            .conversations
            .conversation_details(change.conversation_id)
            .await
            .unwrap()
            .unwrap();
        assert!(
            details.participant(reader).is_some(),
            "only conversations the reader has a participant row in"
        );
    }
}

/// The writes the model of [`reader_sees_exactly_its_membership_windows`] makes.
struct Script {
    dice: Steps,
    conversations: Vec<ConversationId>,
    /// The GROUPs among them, where membership changes.
    groups: Vec<ConversationId>,
    /// Messages sent: id, conversation, sender.
    messages: Vec<(MessageId, ConversationId, UserId)>,
}

/// The reader of the model case; users 1 to 4 are the others.
const READER: i64 = 5;

impl Script {
    fn pick<T: Copy>(&mut self, from: &[T]) -> Option<T> {
        if from.is_empty() {
            return None;
        }
        let index = self.dice.below(from.len() as u64);
        Some(from[usize::try_from(index).unwrap()])
    }

    fn coin(&mut self) -> bool {
        self.dice.below(2) == 0
    }

    /// One random write at step `step`: the conversation it was about (`None` when there
    /// was nothing to do) and whether it succeeded.
    async fn step(&mut self, ports: &Ports, step: i64) -> Option<(ConversationId, bool)> {
        let when = at(step);
        let op = if self.conversations.is_empty() {
            0
        } else {
            self.dice.below(20)
        };
        if op == 0 {
            let id = ConversationId::new();
            let creator = 1 + i64::try_from(self.dice.below(4)).unwrap();
            let members: Vec<i64> = (1..=READER)
                .filter(|u| *u != creator)
                .filter(|_| self.dice.below(2) == 0)
                .collect();
            create_group(ports, id, creator, &members, when).await;
            self.conversations.push(id);
            self.groups.push(id);
            return Some((id, true));
        }
        if op == 1 {
            let a = 1 + i64::try_from(self.dice.below(5)).unwrap();
            let b = 1 + i64::try_from(self.dice.below(5)).unwrap();
            let direct = ports
                .conversations
                .get_or_create_direct(ConversationId::new(), user(a), user(b), when)
                .await
                .unwrap();
            let id = direct.details.conversation.id;
            if !self.conversations.contains(&id) {
                self.conversations.push(id);
            }
            return Some((id, true));
        }
        // Membership and conversation changes go to GROUPs (a DIRECT refuses them all).
        let among = if (10..=18).contains(&op) && !self.groups.is_empty() {
            self.groups.clone()
        } else {
            self.conversations.clone()
        };
        let id = self.pick(&among)?;
        let details = ports
            .conversations
            .conversation_details(id)
            .await
            .unwrap()
            .unwrap();
        let active = details.active_user_ids();
        let admins: Vec<UserId> = details
            .participants
            .iter()
            .filter(|p| p.participant.is_active_admin())
            .map(|p| p.participant.user_id)
            .collect();
        let everyone: Vec<UserId> = (1..=READER).map(user).collect();
        let actor = if admins.is_empty() || self.dice.below(5) == 0 {
            self.pick(&everyone)?
        } else {
            self.pick(&admins)?
        };
        let member = self.pick(&active).unwrap_or(actor);
        let announce = |sender: UserId, coin: bool| {
            coin.then(|| new_message(id, sender, system("announced"), when))
        };
        let ok = match op {
            2..=5 => {
                let new = new_message(id, member, text("hello 👋"), when);
                let message = new.id;
                let sent = ports.messages.append_message(new).await;
                if sent.is_ok() {
                    self.messages.push((message, id, member));
                }
                sent.is_ok()
            }
            6..=8 => {
                let mine: Vec<(MessageId, ConversationId, UserId)> = self
                    .messages
                    .iter()
                    .copied()
                    .filter(|m| m.1 == id)
                    .collect();
                let (message, _, sender) = self.pick(&mine)?;
                match op {
                    6 => {
                        let content = MessageContent::parse(format!("edit {step}")).unwrap();
                        ports
                            .messages
                            .edit_message(message, sender, content, when)
                            .await
                            .is_ok()
                    }
                    7 => ports
                        .messages
                        .delete_message(message, sender, when)
                        .await
                        .is_ok(),
                    _ => {
                        let e = self.pick(&["👍", "🎉", "🚀"])?;
                        if self.coin() {
                            ports
                                .messages
                                .add_reaction(message, member, emoji(e), when)
                                .await
                                .is_ok()
                        } else {
                            ports
                                .messages
                                .remove_reaction(message, member, emoji(e))
                                .await
                                .is_ok()
                        }
                    }
                }
            }
            9 => {
                let up_to = if self.coin() {
                    None
                } else {
                    Some(seq(1 + i64::try_from(self.dice.below(8)).unwrap()))
                };
                ports
                    .read_state
                    .mark_read(id, member, up_to, when)
                    .await
                    .is_ok()
            }
            10 => {
                let name = *["Crew", "Ship"].get(usize::try_from(self.dice.below(2)).unwrap())?;
                let announcement = announce(actor, self.coin());
                match self.dice.below(4) {
                    0 | 1 => ports
                        .conversations
                        .rename_conversation(
                            id,
                            actor,
                            GroupName::parse(name).unwrap(),
                            announcement,
                        )
                        .await
                        .is_ok(),
                    2 => ports
                        .conversations
                        .archive_conversation(id, actor, when, announcement)
                        .await
                        .is_ok(),
                    _ => ports
                        .conversations
                        .unarchive_conversation(id, actor, announcement)
                        .await
                        .is_ok(),
                }
            }
            11..=14 => {
                let mut users = Vec::new();
                if self.dice.below(3) != 0 {
                    users.push(user(READER));
                }
                if let Some(other) = self.pick(&everyone) {
                    users.push(other);
                }
                let announcement = announce(actor, self.coin());
                ports
                    .conversations
                    .add_participants(id, actor, users, when, 10, announcement)
                    .await
                    .is_ok()
            }
            15..=17 => {
                let target = if self.coin() { user(READER) } else { member };
                let actor = if self.coin() { target } else { actor };
                let announcement = announce(actor, self.coin());
                ports
                    .conversations
                    .remove_participant(id, actor, target, when, announcement)
                    .await
                    .is_ok()
            }
            18 => {
                let role = if self.coin() {
                    Role::Admin
                } else {
                    Role::Member
                };
                ports
                    .conversations
                    .set_role(id, actor, member, role, None)
                    .await
                    .is_ok()
            }
            _ => {
                // A send by the reader, when it can.
                let new = new_message(id, user(READER), text("reader here"), when);
                let message = new.id;
                let sent = ports.messages.append_message(new).await;
                if sent.is_ok() {
                    self.messages.push((message, id, user(READER)));
                }
                sent.is_ok()
            }
        };
        Some((id, ok))
    }
}

/// Whether the reader is an active participant of `id` now.
async fn reader_is_member(ports: &Ports, id: ConversationId) -> bool {
    ports
        .conversations
        .conversation_details(id)
        .await
        .unwrap()
        .and_then(|d| d.participant(user(READER)).map(|p| p.is_active()))
        .unwrap_or(false)
}

pub async fn reader_sees_exactly_its_membership_windows(ports: Ports) {
    ports.users_up_to(READER).await;
    let reader = user(READER);
    let (mut joins, mut removals, mut rejoins, mut hidden) = (0, 0, 0, 0);
    let mut removed_from: HashSet<ConversationId> = HashSet::new();
    // Whether the reader is an active participant, per conversation, as the store says
    // after each write.
    let mut membership: HashMap<ConversationId, bool> = HashMap::new();
    for seed in 1..=3_u64 {
        let start = head(&ports).await;
        let mut script = Script {
            dice: Steps(seed),
            conversations: Vec::new(),
            groups: Vec::new(),
            messages: Vec::new(),
        };
        let mut cursor = start;
        let mut expected: Vec<Change> = Vec::new();
        let mut live = Reader {
            cursor: start,
            seen: Vec::new(),
        };
        for step in 0..200 {
            let Some((id, ok)) = script.step(&ports, step).await else {
                continue;
            };
            let appended = all_after(&ports, cursor).await;
            if !ok {
                assert!(
                    appended.is_empty(),
                    "seed {seed} step {step}: a refused write appends nothing"
                );
                continue;
            }
            let was_member = membership.get(&id).copied().unwrap_or(false);
            let is_member = reader_is_member(&ports, id).await;
            membership.insert(id, is_member);
            // The model: a creation is seen by its first participants; otherwise the
            // reader sees a change while a member, from the change that adds them to the
            // one that removes them, both included.
            let creation = appended
                .iter()
                .any(|c| c.kind == ChangeKind::ConversationCreated);
            let mut member = if creation { is_member } else { was_member };
            for change in appended {
                assert_eq!(
                    change.conversation_id, id,
                    "seed {seed} step {step}: a write appends to its own conversation"
                );
                cursor = change.pos;
                let visible = match change.kind.membership_move() {
                    Some((u, MembershipMove::Joined)) if u == reader => {
                        joins += 1;
                        rejoins += usize::from(removed_from.contains(&id));
                        member = true;
                        true
                    }
                    Some((u, MembershipMove::Left)) if u == reader => {
                        removals += 1;
                        removed_from.insert(id);
                        let seen = member;
                        member = false;
                        seen
                    }
                    _ => member,
                };
                if visible {
                    expected.push(change);
                } else {
                    hidden += 1;
                }
            }
            assert_eq!(
                member, is_member,
                "seed {seed} step {step}: the feed tells of every membership change of the reader"
            );
            if script.dice.below(4) == 0 {
                live.catch_up(&ports, reader, &mut script.dice).await;
            }
        }
        live.catch_up(&ports, reader, &mut script.dice).await;
        assert_eq!(
            live.seen, expected,
            "seed {seed}: the reader that followed along sees exactly its windows"
        );
        // Resuming from arbitrary positions, in pages of random size.
        let span = cursor.get() - start.get();
        for round in 0..6 {
            let from = if round == 0 {
                start
            } else {
                FeedPos::new(start.get() + script.dice.below(span + 1))
            };
            let mut resumed = Reader {
                cursor: from,
                seen: Vec::new(),
            };
            resumed.catch_up(&ports, reader, &mut script.dice).await;
            while resumed.cursor < cursor {
                resumed.catch_up(&ports, reader, &mut script.dice).await;
            }
            let want: Vec<Change> = expected.iter().filter(|c| c.pos > from).cloned().collect();
            assert_eq!(
                resumed.seen, want,
                "seed {seed}: a reader resuming after {from} sees exactly its windows"
            );
        }
    }
    assert!(joins > 1, "the reader was added ({joins})");
    assert!(removals > 1, "the reader was removed ({removals})");
    assert!(rejoins > 1, "the reader was added again ({rejoins})");
    assert!(hidden > 0, "some changes were not the reader's to see");
}

pub async fn purge_raises_the_floor_first_and_keeps_the_head(ports: Ports) {
    ports.users_up_to(3).await;
    let id = ConversationId::new();
    create_group(&ports, id, 1, &[2, 3], at(0)).await;
    for i in 0..5 {
        ports.say(id, 2 + i % 2, "old news", at(i)).await;
    }
    let start = bounds(&ports).await;
    let old = all_after(&ports, FeedPos::ZERO).await;
    assert_eq!(old.len() as u64, start.head.get());

    let long_ago = OffsetDateTime::now_utc() - time::Duration::days(3650);
    let nothing = ports.feed.purge(long_ago, 10).await.unwrap();
    assert_eq!(nothing.deleted, 0, "nothing is that old");
    assert!(!nothing.more);
    assert_eq!(nothing.floor, start.floor);
    assert_eq!(all_after(&ports, FeedPos::ZERO).await, old);

    // Newer entries, in a later second.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    ports.say(id, 3, "fresh", at(9)).await;
    ports.say(id, 2, "fresher", at(9)).await;
    let fresh = all_after(&ports, start.head).await;
    assert_eq!(fresh.len(), 2, "one entry per send");
    assert!(fresh[0].at > old.last().unwrap().at);
    let split = ports.feed.purge(fresh[0].at, 1_000).await.unwrap();
    assert_eq!(
        split.floor, start.head,
        "the floor is the newest older change"
    );
    assert_eq!(split.deleted, start.head.get());
    assert!(!split.more);
    assert_eq!(all_after(&ports, FeedPos::ZERO).await, fresh);

    let top = head(&ports).await;
    let far_future = OffsetDateTime::now_utc() + time::Duration::days(3650);
    let first = ports.feed.purge(far_future, 1).await.unwrap();
    assert_eq!(
        first.floor, top,
        "the floor moves first, before the deleting"
    );
    assert_eq!(first.deleted, 1);
    assert!(first.more);
    let mut deleted = first.deleted;
    let mut calls = 1;
    loop {
        let purged = ports.feed.purge(far_future, 1).await.unwrap();
        assert!(purged.deleted <= 1, "at most the batch");
        deleted += purged.deleted;
        calls += 1;
        assert!(calls < 100);
        if !purged.more {
            break;
        }
    }
    assert_eq!(deleted, 2);
    let after_purge = bounds(&ports).await;
    assert_eq!(after_purge.floor, top);
    assert_eq!(after_purge.head, top, "purging never lowers the head");
    assert_eq!(after_purge.feed_id, start.feed_id);
    assert!(all_after(&ports, FeedPos::ZERO).await.is_empty());
    let page = ports
        .feed
        .reader_changes(user(1), FeedPos::ZERO, 10)
        .await
        .unwrap();
    assert!(page.changes.is_empty());
    assert_eq!(page.head, top);

    let next = ports
        .say(id, 2, "after the purge", at(10))
        .await
        .view
        .message;
    let after = all_after(&ports, FeedPos::ZERO).await;
    assert_eq!(after.len(), 1, "one entry per send");
    assert_eq!(after[0].pos, top.next(), "positions are never reused");
    assert_eq!(
        after[0].kind,
        ChangeKind::MessageCreated {
            message_id: next.id
        }
    );
    let again = ports.feed.purge(long_ago, 10).await.unwrap();
    assert_eq!(again.floor, top, "the floor never goes down");
    assert_eq!(again.deleted, 0);
}

pub async fn feed_identity_is_stable_and_wait_past_wakes_on_commit(ports: Ports) {
    ports.users_up_to(2).await;
    let first = bounds(&ports).await;
    let id = ConversationId::new();
    create_group(&ports, id, 1, &[2], at(0)).await;
    let current = bounds(&ports).await;
    assert_eq!(current.feed_id, first.feed_id, "one feed, one identity");
    if let Some(at_rest) = &ports.at_rest {
        let reopened = at_rest.reopen(None).await;
        let other = reopened.ports.feed.feed_bounds().await.unwrap();
        assert_eq!(other.feed_id, current.feed_id, "the identity is the data's");
        assert_eq!(other.head, current.head);
    }
    let top = current.head;
    let started = Instant::now();
    assert_eq!(
        ports
            .feed
            .wait_past(FeedPos::ZERO, Duration::from_secs(20))
            .await
            .unwrap(),
        top,
        "past already: the head at once"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let started = Instant::now();
    assert_eq!(
        ports
            .feed
            .wait_past(top, Duration::from_millis(300))
            .await
            .unwrap(),
        top,
        "nothing new: the head when the time is up"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let waiter = {
        let ports = ports.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let woke = ports
                .feed
                .wait_past(top, Duration::from_secs(60))
                .await
                .unwrap();
            (woke, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    ports.say(id, 2, "wake up ⏰", at(1)).await;
    let (woke, waited) = waiter.await.unwrap();
    assert!(woke > top, "a commit wakes the waiter");
    assert!(waited < Duration::from_secs(10), "promptly ({waited:?})");
}
