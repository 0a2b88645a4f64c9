//! The service object: the ports it works through, its limits, and the helpers every use
//! case shares (membership checks, publishing typing).

use std::num::NonZeroU32;
use std::sync::Arc;

use crate::ServiceError;
use crate::active_members::{ACTIVE_MEMBERS_CAPACITY, ACTIVE_MEMBERS_TTL, ActiveMembers};
use crate::rate::{ActionClass, ActionRates, MAX_TRACKED_USERS, Rate, RateLimiters};
use chat_domain::{
    ChatEvent, ConversationDetails, ConversationId, Delivery, Participant, Timestamp, UserId,
};
use chat_ports::{
    ChangeFeed, Clock, ConversationStore, DiscardingPublisher, EventPublisher, MessageStore,
    PostingDirectory, ReadStateStore, SystemClock, UserDirectory,
};

/// Everything the service needs from the outside world.
#[derive(Clone)]
pub struct Ports {
    /// Conversations and memberships.
    pub conversations: Arc<dyn ConversationStore>,
    /// Messages and reactions.
    pub messages: Arc<dyn MessageStore>,
    /// Read markers, unread counts, the inbox.
    pub read_state: Arc<dyn ReadStateStore>,
    /// The platform's users.
    pub users: Arc<dyn UserDirectory>,
    /// The platform's postings.
    pub postings: Arc<dyn PostingDirectory>,
    /// The change feed: every durable change, by position.
    pub feed: Arc<dyn ChangeFeed>,
    /// Real-time delivery.
    pub events: Arc<dyn EventPublisher>,
    /// The time.
    pub clock: Arc<dyn Clock>,
}

impl Ports {
    /// Ports whose five storage and directory ports are all `store` (an adapter that
    /// implements every one of them, as `chat-memory` and `chat-mysql` do), with events
    /// discarded and the system clock until [`Ports::with_events`] and
    /// [`Ports::with_clock`] say otherwise.
    pub fn from_store<S>(store: Arc<S>) -> Self
    where
        S: ConversationStore
            + MessageStore
            + ReadStateStore
            + UserDirectory
            + PostingDirectory
            + ChangeFeed
            + 'static,
    {
        Self {
            conversations: store.clone(),
            messages: store.clone(),
            read_state: store.clone(),
            users: store.clone(),
            postings: store.clone(),
            feed: store,
            events: Arc::new(DiscardingPublisher),
            clock: Arc::new(SystemClock),
        }
    }

    /// The same ports, publishing events through `events`.
    #[must_use]
    pub fn with_events(mut self, events: Arc<dyn EventPublisher>) -> Self {
        self.events = events;
        self
    }

    /// The same ports, telling the time by `clock`.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
}

/// Limits the service enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The most participants a conversation may have.
    pub max_participants: usize,
    /// Messages one user may send per second, sustained.
    pub sends_per_second: NonZeroU32,
    /// Messages one user may send in a burst.
    pub send_burst: NonZeroU32,
    /// The per-user rate of every other class of action.
    pub rates: ActionRates,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_participants: 1000,
            sends_per_second: NonZeroU32::new(50).unwrap_or(NonZeroU32::MIN),
            send_burst: NonZeroU32::new(200).unwrap_or(NonZeroU32::MIN),
            rates: ActionRates::default(),
        }
    }
}

/// The chat service: one method per use case.
pub struct ChatService {
    pub(crate) ports: Ports,
    pub(crate) limits: Limits,
    limiters: RateLimiters,
    active_members: ActiveMembers,
}

impl ChatService {
    /// A service over `ports` with the default [`Limits`].
    pub fn new(ports: Ports) -> Self {
        Self::with_limits(ports, Limits::default())
    }

    /// A service over `ports` with the given limits.
    pub fn with_limits(ports: Ports, limits: Limits) -> Self {
        let send = Rate::per_second(limits.sends_per_second, limits.send_burst);
        Self {
            ports,
            limits,
            limiters: RateLimiters::new(send, &limits.rates, MAX_TRACKED_USERS),
            active_members: ActiveMembers::new(ACTIVE_MEMBERS_TTL, ACTIVE_MEMBERS_CAPACITY),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub(crate) fn now(&self) -> Timestamp {
        self.ports.clock.now()
    }

    /// Spends one of `user`'s budget for `action`, or refuses with `RateLimited`.
    pub(crate) fn check_rate(&self, action: ActionClass, user: UserId) -> Result<(), ServiceError> {
        self.limiters.check(action, user)
    }

    /// Forgets the rate-limiter entries of users whose budget is full again and the
    /// expired entries of the typing membership cache; returns how many entries remain
    /// (users over all action classes, plus cached conversations). `chatd` calls this on
    /// a timer so that the maps keyed by user or conversation stay bounded by recent
    /// activity.
    pub fn prune_rate_limiters(&self) -> usize {
        self.limiters.prune() + self.active_members.prune()
    }

    /// The active participants of `conversation` for a typing frame: from the small
    /// cache when fresh, otherwise read once and remembered (only for a conversation
    /// that exists).
    pub(crate) async fn active_members(
        &self,
        conversation: ConversationId,
    ) -> Result<Arc<[UserId]>, ServiceError> {
        if let Some(members) = self.active_members.get(conversation) {
            return Ok(members);
        }
        let details = self
            .ports
            .conversations
            .conversation_details(conversation)
            .await?
            .ok_or(ServiceError::NotFound)?;
        let members: Arc<[UserId]> = details.active_user_ids().into();
        self.active_members.put(conversation, Arc::clone(&members));
        Ok(members)
    }

    /// The conversation and the actor's active membership; `NotFound` for anyone else.
    pub(crate) async fn member_view(
        &self,
        conversation: ConversationId,
        actor: UserId,
    ) -> Result<(ConversationDetails, Participant), ServiceError> {
        let details = self
            .ports
            .conversations
            .conversation_details(conversation)
            .await?
            .ok_or(ServiceError::NotFound)?;
        let membership = details
            .active_participant(actor)
            .cloned()
            .ok_or(ServiceError::NotFound)?;
        Ok((details, membership))
    }

    /// Makes the typing cache forget `conversation` at once (its membership changed).
    pub(crate) fn forget_active_members(&self, conversation: ConversationId) {
        self.active_members.forget(conversation);
    }

    /// Hands an ephemeral event (typing: never stored, so not in the change feed) to the
    /// publisher. Durable changes are published by the relay, from the feed. Publishing
    /// is best effort: a failure is logged and never fails the use case.
    pub(crate) async fn publish_ephemeral(&self, event: ChatEvent, recipients: Vec<UserId>) {
        if recipients.is_empty() {
            return;
        }
        let name = event.name();
        if let Err(err) = self
            .ports
            .events
            .publish(Delivery {
                event,
                recipients,
                pos: None,
            })
            .await
        {
            tracing::warn!(event = name, error = %err, "event not published");
        }
    }
}
