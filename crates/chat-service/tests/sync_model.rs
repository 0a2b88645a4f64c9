//! A model test of `sync` on the in-memory store: several users make a seeded random mix
//! of every kind of change (the reader is added, removed and re-added along the way); the
//! reader follows with `sync` in pages of random size and applies the events to a
//! client-side model of its state, as a client would. From its latest token and from
//! arbitrary earlier ones (with the state it had there) it must end with exactly the
//! state a fresh load shows, and it must never receive an event of a conversation outside
//! its membership window. The relay, running throughout, must have sent the reader live
//! exactly the changes sync serves it.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns assert by unwrapping too

mod support;

use std::collections::{BTreeMap, BTreeSet, HashSet};

use chat_domain::{
    ChangeKind, ChatEvent, ConversationDetails, ConversationId, ConversationType, Emoji, FeedPos,
    GroupName, MessageContent, MessageId, MessageView, Role, Seq, UserId,
};
use chat_ports::{ChangeFeed, ConversationStore, MessageStore};
use chat_service::{
    ArchivedFilter, ChatService, ConversationUpdate, CreateConversation, HistoryQuery, InboxQuery,
    PageLimit, ServiceError, SyncLimit, SyncToken,
};
use support::{TestApp, app, uid};

const READER: i64 = 1;
const USERS: i64 = 5;
const EMOJI: [&str; 3] = ["🙂", "🍣", "👍"];

/// A small deterministic generator (splitmix64), so a failing seed replays exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap()
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        (!items.is_empty()).then(|| items[self.below(items.len())])
    }
}

/// A message as the client knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MessageModel {
    seq: i64,
    content: String,
    reactions: BTreeSet<(String, i64)>,
}

impl MessageModel {
    fn of(view: &MessageView) -> Self {
        Self {
            seq: view.message.seq.get(),
            content: view.message.content.clone(),
            reactions: view
                .reactions
                .iter()
                .flat_map(|r| r.user_ids.iter().map(|u| (r.emoji.clone(), u.get())))
                .collect(),
        }
    }
}

/// A conversation as the client knows it. A marker is `None` when no event told it: a
/// join puts the joiner's marker at the newest `seq` without a change of its own.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct ConversationModel {
    name: Option<String>,
    archived: bool,
    members: BTreeMap<i64, Role>,
    markers: BTreeMap<i64, Option<i64>>,
    messages: BTreeMap<MessageId, MessageModel>,
}

impl ConversationModel {
    fn settings(&mut self, details: &ConversationDetails) {
        self.name.clone_from(&details.conversation.name);
        self.archived = details.conversation.is_archived;
    }

    fn from_details(details: &ConversationDetails) -> Self {
        let mut model = Self::default();
        model.settings(details);
        for p in details.active_participants() {
            let user = p.participant.user_id.get();
            model.members.insert(user, p.participant.role);
            model
                .markers
                .insert(user, Some(p.participant.last_read_seq.get()));
        }
        model
    }
}

/// What the reader's client holds.
#[derive(Debug, Clone)]
struct Client {
    token: SyncToken,
    conversations: BTreeMap<ConversationId, ConversationModel>,
}

impl Client {
    /// Applies one event, as a client does; a join of the reader loads the conversation.
    async fn apply(&mut self, service: &ChatService, event: ChatEvent) {
        let id = event.conversation_id();
        match event {
            ChatEvent::ConversationCreated(details) => {
                self.conversations
                    .insert(id, ConversationModel::from_details(&details));
            }
            ChatEvent::ConversationUpdated(details) => {
                if let Some(c) = self.conversations.get_mut(&id) {
                    c.settings(&details);
                }
            }
            ChatEvent::ParticipantAdded { user_id, .. } if user_id == uid(READER) => {
                let loaded = load(service, id).await.unwrap_or_default();
                self.conversations.insert(id, loaded);
            }
            ChatEvent::ParticipantRemoved { user_id, .. } if user_id == uid(READER) => {
                self.conversations.remove(&id);
            }
            event => {
                let Some(c) = self.conversations.get_mut(&id) else {
                    return;
                };
                apply_inside(c, event);
            }
        }
    }
}

fn apply_inside(c: &mut ConversationModel, event: ChatEvent) {
    match event {
        ChatEvent::ParticipantAdded { user_id, role, .. } => {
            c.members.insert(user_id.get(), role);
            c.markers.insert(user_id.get(), None);
        }
        ChatEvent::ParticipantRemoved { user_id, .. } => {
            c.members.remove(&user_id.get());
            c.markers.remove(&user_id.get());
        }
        ChatEvent::ParticipantUpdated {
            user_id,
            role: Some(role),
            ..
        } => {
            if let Some(held) = c.members.get_mut(&user_id.get()) {
                *held = role;
            }
        }
        ChatEvent::MessageCreated(view) => {
            // The inference rule: a `message.created` from X at seq N means X's marker is
            // at least N (a send's marker move has no `conversation.read` of its own).
            if let Some(marker) = c.markers.get_mut(&view.message.sender_id.get()) {
                let seq = view.message.seq.get();
                *marker = Some(marker.map_or(seq, |m| m.max(seq)));
            }
            c.messages.insert(view.message.id, MessageModel::of(&view));
        }
        ChatEvent::MessageUpdated(view) => {
            c.messages.insert(view.message.id, MessageModel::of(&view));
        }
        ChatEvent::MessageDeleted { message_id, .. } => {
            c.messages.remove(&message_id);
        }
        ChatEvent::ReactionAdded {
            message_id,
            emoji,
            user_id,
            ..
        } => {
            if let Some(m) = c.messages.get_mut(&message_id) {
                m.reactions.insert((emoji, user_id.get()));
            }
        }
        ChatEvent::ReactionRemoved {
            message_id,
            emoji,
            user_id,
            ..
        } => {
            if let Some(m) = c.messages.get_mut(&message_id) {
                m.reactions.remove(&(emoji, user_id.get()));
            }
        }
        ChatEvent::ConversationRead {
            user_id,
            last_read_seq,
            ..
        } => {
            if let Some(marker) = c.markers.get_mut(&user_id.get()) {
                let seq = last_read_seq.get();
                *marker = Some(marker.map_or(seq, |m| m.max(seq)));
            }
        }
        other => panic!("not an event of the feed: {other:?}"),
    }
}

/// One conversation as a fresh load shows it to the reader, or `None` outside it.
async fn load(service: &ChatService, id: ConversationId) -> Option<ConversationModel> {
    let item = match service.conversation(uid(READER), id).await {
        Ok(item) => item,
        Err(ServiceError::NotFound) => return None,
        Err(err) => panic!("{err}"),
    };
    let mut model = ConversationModel::from_details(&item.details);
    let mut after = Seq::ZERO;
    loop {
        let page = service
            .history(
                uid(READER),
                id,
                HistoryQuery::After(after, PageLimit::new(100).unwrap()),
            )
            .await
            .unwrap();
        for view in &page.items {
            model
                .messages
                .insert(view.message.id, MessageModel::of(view));
            after = view.message.seq;
        }
        if !page.has_more {
            return Some(model);
        }
    }
}

/// Everything a fresh load shows the reader: the inbox, and each conversation's details
/// and history.
async fn fresh_load(service: &ChatService) -> BTreeMap<ConversationId, ConversationModel> {
    let mut ids = Vec::new();
    let mut after = None;
    loop {
        let page = service
            .list_conversations(
                uid(READER),
                InboxQuery {
                    limit: PageLimit::new(100).unwrap(),
                    after,
                    archived: ArchivedFilter::Any,
                },
            )
            .await
            .unwrap();
        ids.extend(page.items.iter().map(|i| i.details.conversation.id));
        after = page.next_cursor;
        if after.is_none() {
            break;
        }
    }
    let mut all = BTreeMap::new();
    for id in ids {
        all.insert(id, load(service, id).await.unwrap());
    }
    all
}

/// The client's state must equal a fresh load, markers aside that no event told.
fn assert_same(
    client: &BTreeMap<ConversationId, ConversationModel>,
    fresh: &BTreeMap<ConversationId, ConversationModel>,
    context: &str,
) {
    assert_eq!(
        client.keys().collect::<Vec<_>>(),
        fresh.keys().collect::<Vec<_>>(),
        "{context}: the conversations"
    );
    for (id, fresh) in fresh {
        let mut mine = client[id].clone();
        let mut known = fresh.clone();
        for (user, marker) in &mine.markers {
            if marker.is_none() {
                known.markers.insert(*user, None);
            }
        }
        assert_eq!(
            mine.markers.keys().collect::<Vec<_>>(),
            known.markers.keys().collect::<Vec<_>>(),
            "{context}: the members of {id}"
        );
        mine.markers.clear();
        let fresh_markers = std::mem::take(&mut known.markers);
        assert_eq!(mine, known, "{context}: conversation {id}");
        for (user, marker) in &client[id].markers {
            assert!(
                marker.is_none() || *marker == fresh_markers[user],
                "{context}: user {user}'s marker in {id}"
            );
        }
    }
}

/// Where the reader was a member after each step of the workload.
struct Windows {
    /// (the head after the step, the conversations the reader was in then), in order.
    steps: Vec<(FeedPos, HashSet<ConversationId>)>,
}

impl Windows {
    async fn record(&mut self, app: &TestApp, conversations: &[ConversationId]) {
        let head = app.service.feed_head().await.unwrap().pos;
        let mut inside = HashSet::new();
        for id in conversations {
            let details = app.memory().conversation_details(*id).await.unwrap();
            if details.is_some_and(|d| d.active_participant(uid(READER)).is_some()) {
                inside.insert(*id);
            }
        }
        self.steps.push((head, inside));
    }

    /// Whether the reader may receive `event` at `pos`: it was a member just after the
    /// step that made it, or the event is its own removal.
    fn allows(&self, pos: FeedPos, event: &ChatEvent) -> bool {
        let step = self.steps.partition_point(|(head, _)| *head < pos);
        assert!(step < self.steps.len(), "an event past the workload: {pos}");
        let conversation = event.conversation_id();
        let inside_after = self.steps[step].1.contains(&conversation);
        let inside_before = step > 0 && self.steps[step - 1].1.contains(&conversation);
        inside_after
            || (inside_before
                && matches!(event, ChatEvent::ParticipantRemoved { user_id, .. } if *user_id == uid(READER)))
    }
}

/// Syncs `client` once with a page of random size; answers whether more is waiting.
async fn sync_once(app: &TestApp, client: &mut Client, windows: &Windows, rng: &mut Rng) -> bool {
    let size = i64::try_from(1 + rng.below(25)).unwrap();
    let page = app
        .service
        .sync(
            uid(READER),
            Some(client.token),
            SyncLimit::new(size).unwrap(),
        )
        .await
        .unwrap();
    let mut last = client.token.pos;
    for synced in page.events {
        assert!(synced.pos > last, "oldest first, each once");
        last = synced.pos;
        assert!(
            windows.allows(synced.pos, &synced.event),
            "{} at {} is outside the reader's membership window",
            synced.event.name(),
            synced.pos
        );
        client.apply(&app.service, synced.event).await;
    }
    assert!(page.next.pos >= last);
    client.token = page.next;
    page.has_more
}

async fn sync_to_end(app: &TestApp, client: &mut Client, windows: &Windows, rng: &mut Rng) {
    for _ in 0..10_000 {
        if !sync_once(app, client, windows, rng).await {
            return;
        }
    }
    panic!("sync never reached the end");
}

/// One random change by a plausible actor; refusals (a rule says no) are fine and change
/// nothing.
async fn random_change(
    app: &TestApp,
    rng: &mut Rng,
    conversations: &mut Vec<ConversationId>,
    messages: &mut Vec<(ConversationId, MessageId, UserId)>,
) {
    let service = &app.service;
    let roll = rng.below(100);
    if conversations.is_empty() || roll < 6 {
        let creator = 1 + i64::try_from(rng.below(5)).unwrap();
        let mut members: Vec<UserId> = (1..=USERS)
            .filter(|u| *u != creator && rng.chance(50))
            .map(uid)
            .collect();
        if rng.chance(50) && creator != READER {
            members.push(uid(READER));
        }
        let created = service
            .create_conversation(
                uid(creator),
                CreateConversation {
                    kind: ConversationType::Group,
                    name: Some(GroupName::parse(&format!("g{}", rng.below(1000))).unwrap()),
                    posting_id: None,
                    participant_ids: members,
                },
            )
            .await
            .unwrap();
        conversations.push(created.details.conversation.id);
        return;
    }
    if roll < 9 {
        let a = 1 + i64::try_from(rng.below(5)).unwrap();
        let b = 1 + i64::try_from(rng.below(5)).unwrap();
        let opened = service.open_direct(uid(a), uid(b)).await.unwrap();
        let id = opened.item.details.conversation.id;
        if !conversations.contains(&id) {
            conversations.push(id);
        }
        return;
    }
    let id = rng.pick(conversations).unwrap();
    let details = app
        .memory()
        .conversation_details(id)
        .await
        .unwrap()
        .unwrap();
    let active: Vec<UserId> = details.active_user_ids();
    let Some(actor) = rng.pick(&active) else {
        return;
    };
    let admins: Vec<UserId> = details
        .active_participants()
        .filter(|p| p.participant.role == Role::Admin)
        .map(|p| p.participant.user_id)
        .collect();
    let admin = rng.pick(&admins).unwrap_or(actor);
    let live: Vec<(MessageId, UserId)> = messages
        .iter()
        .filter(|(c, _, _)| *c == id)
        .map(|(_, m, s)| (*m, *s))
        .collect();
    let outsiders: Vec<UserId> = (1..=USERS)
        .map(uid)
        .filter(|u| !active.contains(u))
        .collect();
    let _ = match roll {
        9..=34 => {
            let sent = service
                .send_message(
                    actor,
                    id,
                    support::text(&format!("m{}", rng.next() % 10_000)),
                )
                .await;
            if let Ok(sent) = sent {
                messages.push((id, sent.view.message.id, actor));
            }
            Ok(())
        }
        35..=41 => match rng.pick(&live) {
            Some((message, sender)) => service
                .edit_message(
                    sender,
                    message,
                    MessageContent::parse(format!("e{}", rng.next() % 10_000)).unwrap(),
                )
                .await
                .map(drop),
            None => Ok(()),
        },
        42..=46 => match rng.pick(&live) {
            Some((message, sender)) => {
                let by = if rng.chance(50) { sender } else { admin };
                service.delete_message(by, message).await
            }
            None => Ok(()),
        },
        47..=58 => match rng.pick(&live) {
            Some((message, _)) => {
                let view = app.memory().find_message(message).await.unwrap().unwrap();
                let placed: Vec<(&str, UserId)> = view
                    .reactions
                    .iter()
                    .flat_map(|r| r.user_ids.iter().map(|u| (r.emoji.as_str(), *u)))
                    .collect();
                match rng.pick(&placed).filter(|_| rng.chance(45)) {
                    Some((emoji, user)) => service
                        .remove_reaction(user, message, Emoji::parse(emoji).unwrap())
                        .await
                        .map(drop),
                    None => {
                        let emoji = Emoji::parse(EMOJI[rng.below(EMOJI.len())]).unwrap();
                        service.add_reaction(actor, message, emoji).await.map(drop)
                    }
                }
            }
            None => Ok(()),
        },
        59..=66 => {
            let up_to = rng.pick(&live).map(|(m, _)| m).filter(|_| rng.chance(50));
            service.mark_read(actor, id, up_to).await.map(drop)
        }
        67..=72 => {
            let update = match rng.below(3) {
                0 => ConversationUpdate {
                    name: Some(GroupName::parse(&format!("r{}", rng.below(1000))).unwrap()),
                    is_archived: None,
                },
                1 => ConversationUpdate {
                    name: None,
                    is_archived: Some(true),
                },
                _ => ConversationUpdate {
                    name: None,
                    is_archived: Some(false),
                },
            };
            service
                .update_conversation(admin, id, update)
                .await
                .map(drop)
        }
        73..=82 => {
            // The reader joins more often than anyone.
            let joiner = if !active.contains(&uid(READER)) && rng.chance(60) {
                Some(uid(READER))
            } else {
                rng.pick(&outsiders)
            };
            match joiner {
                Some(user) => service
                    .add_participants(admin, id, vec![user])
                    .await
                    .map(drop),
                None => Ok(()),
            }
        }
        83..=92 => {
            let leaving = if active.contains(&uid(READER)) && rng.chance(50) {
                uid(READER)
            } else {
                rng.pick(&active).unwrap_or(actor)
            };
            let by = if rng.chance(40) { leaving } else { admin };
            service.remove_participant(by, id, leaving).await
        }
        _ => match rng.pick(&active) {
            Some(user) => {
                let role = if rng.chance(50) {
                    Role::Admin
                } else {
                    Role::Member
                };
                service.change_role(admin, id, user, role).await.map(drop)
            }
            None => Ok(()),
        },
    };
}

async fn run(seed: u64) {
    let app = app().await;
    let mut rng = Rng(seed);
    let start = app.service.feed_head().await.unwrap();
    let mut client = Client {
        token: start,
        conversations: BTreeMap::new(),
    };
    let mut windows = Windows {
        steps: vec![(start.pos, HashSet::new())],
    };
    let mut snapshots = vec![client.clone()];
    let mut conversations = Vec::new();
    let mut messages = Vec::new();
    for _ in 0..400 {
        random_change(&app, &mut rng, &mut conversations, &mut messages).await;
        windows.record(&app, &conversations).await;
        if rng.chance(30) {
            sync_once(&app, &mut client, &windows, &mut rng).await;
            snapshots.push(client.clone());
        }
    }

    // Every kind of change happened, the reader's joins and removals included.
    let feed = app
        .memory()
        .changes_after(start.pos, 100_000)
        .await
        .unwrap();
    let kinds: BTreeSet<&str> = feed.iter().map(|c| c.kind.name()).collect();
    assert_eq!(kinds.len(), 11, "seed {seed}: only {kinds:?}");
    let reader_moves = feed
        .iter()
        .filter(|c| {
            c.kind
                .membership_move()
                .is_some_and(|(user, _)| user == uid(READER))
        })
        .count();
    assert!(reader_moves >= 4, "seed {seed}: the reader joined and left");

    // Live events (the relay) and sync pages are the same changes for the reader: each
    // change it may see reached it live, and nothing else did, but the creation and the
    // edits of messages deleted by the time sync hydrated them (never served).
    let live: BTreeSet<FeedPos> = app
        .events
        .take()
        .await
        .iter()
        .filter(|d| d.recipients.contains(&uid(READER)))
        .map(|d| d.pos.unwrap())
        .collect();
    let mut everything = Client {
        token: start,
        conversations: BTreeMap::new(),
    };
    let mut synced = BTreeSet::new();
    loop {
        let page = app
            .service
            .sync(uid(READER), Some(everything.token), SyncLimit::MAX)
            .await
            .unwrap();
        synced.extend(page.events.iter().map(|e| e.pos));
        everything.token = page.next;
        if !page.has_more {
            break;
        }
    }
    assert!(
        synced.is_subset(&live),
        "seed {seed}: a change sync serves was not live"
    );
    for pos in live.difference(&synced) {
        let change = feed.iter().find(|c| c.pos == *pos).unwrap();
        let message = match change.kind {
            ChangeKind::MessageCreated { message_id }
            | ChangeKind::MessageUpdated { message_id } => message_id,
            ref other => panic!("seed {seed}: {} at {pos} went live only", other.name()),
        };
        let now = app.memory().find_message(message).await.unwrap().unwrap();
        assert!(
            now.message.is_deleted(),
            "seed {seed}: {pos} went live only"
        );
    }

    let fresh = fresh_load(&app.service).await;
    assert!(!fresh.is_empty());
    sync_to_end(&app, &mut client, &windows, &mut rng).await;
    assert_same(
        &client.conversations,
        &fresh,
        &format!("seed {seed}, followed"),
    );
    for _ in 0..6 {
        let index = rng.below(snapshots.len());
        let mut resumed = snapshots[index].clone();
        sync_to_end(&app, &mut resumed, &windows, &mut rng).await;
        assert_same(
            &resumed.conversations,
            &fresh,
            &format!("seed {seed}, resumed from snapshot {index}"),
        );
    }
}

#[tokio::test]
async fn the_reader_converges_on_a_fresh_load_from_any_token() {
    for seed in [1, 2, 3, 0x5EED] {
        run(seed).await;
    }
}
