//! The relay: live events are published from the committed change feed, not by the use
//! cases. One task reads the feed in position order (`wait_past`, then `numbered_after`),
//! hydrates each change into its event, addresses it to the conversation's members at
//! that point of the feed, and hands it to the [`EventPublisher`](chat_ports::EventPublisher)
//! with its position. A crash between a commit and its publishing delays the event (the
//! next relay starts from the feed), it never loses it.
//!
//! Recipients follow membership over time, exactly as `sync` does: every change goes to
//! the conversation's active participants just after it, and `participant.removed` also
//! to the user who is gone. The relay keeps each conversation's members in a bounded
//! cache, updated from the membership changes it relays (it sees them all, in order).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chat_domain::{Change, ChangeKind, ConversationId, Delivery, FeedPos, UserId};
use chat_ports::{ChangeFeed, StoreError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::ChatService;
use crate::hydrate::Hydrator;

/// The most changes read and published per batch.
pub const RELAY_BATCH: usize = 500;

/// The most conversations whose members the relay remembers.
pub const RELAY_MEMBERS_CAPACITY: usize = 4096;

/// How many pages past a batch the relay reads to learn the membership changes of a
/// conversation it meets for the first time.
const LOOKAHEAD_PAGES: usize = 4;

/// How long one wait for new changes lasts before the relay asks again.
const WAIT: Duration = Duration::from_secs(1);

/// The first and the longest pause after a store error.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// The pause after a wait that promised changes and a read that found none.
const IDLE_PAUSE: Duration = Duration::from_millis(10);

/// Publishing from the committed log.
#[derive(Debug)]
pub struct Relay;

impl Relay {
    /// Starts relaying every change after `from` (chatd passes the head at start-up), on
    /// the current tokio runtime.
    pub fn spawn(service: Arc<ChatService>, from: FeedPos) -> RelayHandle {
        let position = Arc::new(AtomicU64::new(from.get()));
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(
            service,
            RelayState::new(from, RELAY_MEMBERS_CAPACITY),
            Arc::clone(&position),
            stopped,
        ));
        RelayHandle {
            position,
            stop,
            task,
        }
    }
}

/// A running relay. Dropping the handle stops the relay too (after the batch in hand),
/// without waiting for it.
#[derive(Debug)]
pub struct RelayHandle {
    position: Arc<AtomicU64>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl RelayHandle {
    /// The last position relayed: every change at or below it has been handed to the
    /// publisher.
    pub fn position(&self) -> FeedPos {
        FeedPos::new(self.position.load(Ordering::Acquire))
    }

    /// Stops the relay: it finishes the batch in hand, then returns.
    pub async fn stop(self) {
        // The task may have ended already (its runtime shutting down): nothing to tell.
        let _ = self.stop.send(true);
        if let Err(err) = self.task.await {
            tracing::warn!(error = %err, "relay task ended abnormally");
        }
    }
}

async fn run(
    service: Arc<ChatService>,
    mut state: RelayState,
    position: Arc<AtomicU64>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut backoff = BACKOFF_MIN;
    while !*stopped.borrow() {
        let waited = tokio::select! {
            waited = service.ports.feed.wait_past(state.last, WAIT) => waited,
            _ = stopped.changed() => return,
        };
        match waited {
            Ok(head) if head <= state.last => continue,
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(error = %err, after = %state.last, "relay: feed not readable");
                if pause(&mut backoff, &mut stopped).await {
                    return;
                }
                continue;
            }
        }
        loop {
            let result = state.relay_batch(&service, &position).await;
            match result {
                Ok(relayed) => {
                    backoff = BACKOFF_MIN;
                    if relayed == 0 {
                        // The head said there was more but nothing was readable yet:
                        // never spin on it.
                        if pause(&mut { IDLE_PAUSE }, &mut stopped).await {
                            return;
                        }
                        break;
                    }
                    if relayed < RELAY_BATCH || *stopped.borrow() {
                        break;
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, after = %state.last, "relay: retrying");
                    if pause(&mut backoff, &mut stopped).await {
                        return;
                    }
                }
            }
        }
    }
}

/// Sleeps for the backoff (doubling it for next time); true when stopped meanwhile.
async fn pause(backoff: &mut Duration, stopped: &mut watch::Receiver<bool>) -> bool {
    let wait = *backoff;
    *backoff = (*backoff * 2).min(BACKOFF_MAX);
    tokio::select! {
        () = tokio::time::sleep(wait) => *stopped.borrow(),
        _ = stopped.changed() => true,
    }
}

/// What the relay knows: the last position relayed and the members of the conversations
/// it has seen.
pub(crate) struct RelayState {
    pub(crate) last: FeedPos,
    members: MemberCache,
}

impl RelayState {
    pub(crate) fn new(last: FeedPos, capacity: usize) -> Self {
        Self {
            last,
            members: MemberCache::new(capacity),
        }
    }

    /// Reads the changes after the last one relayed (at most [`RELAY_BATCH`]) and
    /// publishes each in order; answers how many were read. A store error stops the batch
    /// at the change it happened on, which is read again next time: nothing is skipped,
    /// nothing published twice.
    pub(crate) async fn relay_batch(
        &mut self,
        service: &ChatService,
        position: &AtomicU64,
    ) -> Result<usize, StoreError> {
        let ports = &service.ports;
        let changes = ports.feed.numbered_after(self.last, RELAY_BATCH).await?;
        if changes.is_empty() {
            // The head is past the relay but nothing is readable after it: retention
            // purged the rest while the relay was behind. Move up to the floor (what was
            // purged is lost to live delivery; clients catch up from a token, or get 410
            // and reload), so that the next wait sleeps instead of spinning.
            let bounds = ports.feed.feed_bounds().await?;
            if bounds.floor > self.last {
                tracing::warn!(from = %self.last, to = %bounds.floor, "relay: changes purged before they were published");
                self.last = bounds.floor;
                position.store(bounds.floor.get(), Ordering::Release);
            }
            return Ok(0);
        }
        if let Some(first) = changes.first() {
            if first.pos > self.last.next() {
                // Positions are gapless: only retention makes a hole, when the relay fell
                // further behind than the feed keeps.
                tracing::warn!(from = %self.last, to = %first.pos, "relay: changes purged before they were published");
            }
        }
        // One lookup of a conversation serves its members and its events.
        let mut hydrator = Hydrator::new(&*ports.messages, &*ports.conversations);
        self.members
            .load_missing(&changes, &*ports.feed, &mut hydrator)
            .await?;
        // Who hears of each change, in feed order (the member cache follows every
        // membership change, heard or not); then only the changes that can reach someone
        // (a recipient connected on this node) are looked up, in one lookup for the batch,
        // and published.
        let addressed: Vec<Vec<UserId>> = changes
            .iter()
            .map(|change| {
                let recipients = self.members.apply(change);
                if change.kind.membership_move().is_some() {
                    service.forget_active_members(change.conversation_id);
                }
                if ports.events.reaches_any(&recipients) {
                    recipients
                } else {
                    Vec::new()
                }
            })
            .collect();
        let heard: Vec<Change> = changes
            .iter()
            .zip(&addressed)
            .filter(|(_, recipients)| !recipients.is_empty())
            .map(|(change, _)| change.clone())
            .collect();
        if let Err(err) = self
            .publish(
                service,
                &mut hydrator,
                &changes,
                addressed,
                &heard,
                position,
            )
            .await
        {
            // The cache has applied the whole batch, but the batch is read again from the
            // change that failed: the batch's conversations are loaded afresh then, as of
            // that change.
            for change in &changes {
                self.members.forget(change.conversation_id);
            }
            return Err(err);
        }
        Ok(changes.len())
    }

    /// Looks up `heard` (the changes of `changes` someone can hear, in one lookup) and
    /// publishes each change of `changes` to its `addressed` recipients in order, moving
    /// the relay's position past each. A store error stops at the change it happened on.
    async fn publish(
        &mut self,
        service: &ChatService,
        hydrator: &mut Hydrator<'_>,
        changes: &[Change],
        addressed: Vec<Vec<UserId>>,
        heard: &[Change],
        position: &AtomicU64,
    ) -> Result<(), StoreError> {
        hydrator.prefetch(heard).await?;
        for (change, recipients) in changes.iter().zip(addressed) {
            if !recipients.is_empty() {
                if let Some(event) = hydrator.hydrate(change).await? {
                    let name = event.name();
                    let delivery = Delivery {
                        event,
                        recipients,
                        pos: Some(change.pos),
                    };
                    if let Err(err) = service.ports.events.publish(delivery).await {
                        // The hub's business from here: live clients catch up from the
                        // feed with their token.
                        tracing::warn!(event = name, pos = %change.pos, error = %err, "event not published");
                    }
                }
            }
            self.last = change.pos;
            position.store(change.pos.get(), Ordering::Release);
        }
        Ok(())
    }
}

/// The membership changes of `conversations` committed after `changes`, oldest first, up
/// to the head (at most [`LOOKAHEAD_PAGES`] pages).
async fn later_moves(
    changes: &[Change],
    conversations: &[ConversationId],
    feed: &dyn ChangeFeed,
) -> Result<Vec<Change>, StoreError> {
    let Some(mut after) = changes.last().map(|c| c.pos) else {
        return Ok(Vec::new());
    };
    let wanted: HashSet<ConversationId> = conversations.iter().copied().collect();
    let mut moves = Vec::new();
    for _ in 0..LOOKAHEAD_PAGES {
        // `changes_after`, not `numbered_after`: the members were loaded before this read,
        // so every move they reflect must be read here, numbered or not yet.
        let page = feed.changes_after(after, RELAY_BATCH).await?;
        let full = page.len() >= RELAY_BATCH;
        if let Some(last) = page.last() {
            after = last.pos;
        }
        moves.extend(
            page.into_iter().filter(|c| {
                wanted.contains(&c.conversation_id) && c.kind.membership_move().is_some()
            }),
        );
        if !full {
            break;
        }
    }
    Ok(moves)
}

struct Members {
    /// The active participants, in the order they were loaded or joined.
    users: Vec<UserId>,
    used: u64,
}

/// Conversation → its active participants as of the last change relayed; bounded, the
/// least recently used conversations go first.
struct MemberCache {
    entries: HashMap<ConversationId, Members>,
    capacity: usize,
    clock: u64,
}

impl MemberCache {
    fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            // A batch's conversations must all fit.
            capacity: capacity.max(RELAY_BATCH),
            clock: 0,
        }
    }

    /// Loads the members of the batch's conversations that are not cached, as of the
    /// position before the batch: the current participants, with every membership change
    /// committed since undone, newest first: the batch's own, and those after it, read
    /// once the participants were (at most [`LOOKAHEAD_PAGES`] more pages: a relay that
    /// far behind may address a change of a conversation it meets for the first time by a
    /// later membership).
    async fn load_missing(
        &mut self,
        changes: &[Change],
        feed: &dyn ChangeFeed,
        conversations: &mut Hydrator<'_>,
    ) -> Result<(), StoreError> {
        let in_batch: HashSet<ConversationId> = changes.iter().map(|c| c.conversation_id).collect();
        let missing: Vec<ConversationId> = in_batch
            .iter()
            .copied()
            .filter(|id| !self.entries.contains_key(id))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let mut loaded = Vec::with_capacity(missing.len());
        for id in &missing {
            let users: Vec<UserId> = conversations
                .conversation(*id)
                .await?
                .map(|details| details.active_user_ids())
                .unwrap_or_default();
            loaded.push((*id, users));
        }
        let later = later_moves(changes, &missing, feed).await?;
        self.make_room(missing.len(), &in_batch);
        for (id, mut users) in loaded {
            let moves = changes.iter().chain(later.iter());
            for change in moves.rev().filter(|c| c.conversation_id == id) {
                match &change.kind {
                    ChangeKind::ParticipantAdded { user_id, .. } => {
                        users.retain(|u| u != user_id);
                    }
                    ChangeKind::ParticipantRemoved { user_id } if !users.contains(user_id) => {
                        users.push(*user_id);
                    }
                    _ => {}
                }
            }
            self.clock += 1;
            self.entries.insert(
                id,
                Members {
                    users,
                    used: self.clock,
                },
            );
        }
        Ok(())
    }

    /// Evicts the least recently used conversations outside `keep` until `incoming` more
    /// fit (and a quarter of the capacity besides, so evictions are rare).
    fn make_room(&mut self, incoming: usize, keep: &HashSet<ConversationId>) {
        if self.entries.len() + incoming <= self.capacity {
            return;
        }
        let target = self
            .capacity
            .saturating_sub(incoming)
            .saturating_sub(self.capacity / 4);
        let mut candidates: Vec<(u64, ConversationId)> = self
            .entries
            .iter()
            .filter(|(id, _)| !keep.contains(id))
            .map(|(id, members)| (members.used, *id))
            .collect();
        candidates.sort_unstable_by_key(|(used, _)| *used);
        let excess = self.entries.len().saturating_sub(target);
        for (_, id) in candidates.into_iter().take(excess) {
            self.entries.remove(&id);
        }
    }

    /// Applies `change` to its conversation's members and answers who must hear of it.
    fn apply(&mut self, change: &Change) -> Vec<UserId> {
        self.clock += 1;
        let clock = self.clock;
        let members = self
            .entries
            .entry(change.conversation_id)
            .or_insert_with(|| Members {
                users: Vec::new(),
                used: clock,
            });
        members.used = clock;
        match &change.kind {
            ChangeKind::ParticipantAdded { user_id, .. } => {
                if !members.users.contains(user_id) {
                    members.users.push(*user_id);
                }
                members.users.clone()
            }
            ChangeKind::ParticipantRemoved { user_id } => {
                members.users.retain(|u| u != user_id);
                let mut recipients = members.users.clone();
                recipients.push(*user_id);
                recipients
            }
            _ => members.users.clone(),
        }
    }

    /// Drops what is known of `conversation`'s members (loaded again when next needed).
    fn forget(&mut self, conversation: ConversationId) {
        self.entries.remove(&conversation);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use chat_domain::Timestamp;

    use super::*;

    fn change(pos: u64, conversation: ConversationId, kind: ChangeKind) -> Change {
        Change {
            pos: FeedPos::new(pos),
            conversation_id: conversation,
            at: Timestamp::UNIX_EPOCH,
            kind,
        }
    }

    fn uid(id: i64) -> UserId {
        UserId::new(id).unwrap()
    }

    #[test]
    fn members_follow_the_membership_changes_and_a_removal_reaches_the_removed() {
        let mut cache = MemberCache::new(RELAY_BATCH);
        let c = ConversationId::new();
        let added = |user| ChangeKind::ParticipantAdded {
            user_id: uid(user),
            role: chat_domain::Role::Member,
        };
        assert_eq!(cache.apply(&change(1, c, added(1))), vec![uid(1)]);
        assert_eq!(cache.apply(&change(2, c, added(2))), vec![uid(1), uid(2)]);
        // Twice is once.
        assert_eq!(cache.apply(&change(3, c, added(2))), vec![uid(1), uid(2)]);
        let removed = ChangeKind::ParticipantRemoved { user_id: uid(1) };
        assert_eq!(cache.apply(&change(4, c, removed)), vec![uid(2), uid(1)]);
        assert_eq!(
            cache.apply(&change(5, c, ChangeKind::ConversationUpdated)),
            vec![uid(2)]
        );
    }

    #[test]
    fn the_cache_stays_bounded_and_keeps_the_batch_and_the_recently_used() {
        let mut cache = MemberCache::new(RELAY_BATCH);
        let conversations: Vec<ConversationId> =
            (0..RELAY_BATCH).map(|_| ConversationId::new()).collect();
        for (i, c) in conversations.iter().enumerate() {
            cache.apply(&change(i as u64 + 1, *c, ChangeKind::ConversationCreated));
        }
        assert_eq!(cache.len(), RELAY_BATCH);
        // The oldest is used again; a batch of ten new conversations needs room.
        cache.apply(&change(
            1000,
            conversations[0],
            ChangeKind::ConversationUpdated,
        ));
        let batch: HashSet<ConversationId> = (0..10).map(|_| ConversationId::new()).collect();
        cache.make_room(batch.len(), &batch);
        assert!(cache.len() + batch.len() <= RELAY_BATCH);
        assert!(
            cache.entries.contains_key(&conversations[0]),
            "recently used"
        );
        assert!(
            !cache.entries.contains_key(&conversations[1]),
            "least recently used"
        );
        // Conversations of the batch in hand are never evicted.
        let mut keep: HashSet<ConversationId> = conversations[2..].iter().copied().collect();
        keep.insert(conversations[0]);
        let before = cache.len();
        cache.make_room(RELAY_BATCH, &keep);
        assert_eq!(cache.len(), before, "nothing outside the batch to evict");
    }
}
