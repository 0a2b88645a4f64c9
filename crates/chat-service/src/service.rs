//! The service object: the ports it works through, its limits, and the helpers every use
//! case shares (membership checks, publishing).

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use chat_domain::{
    ChatEvent, ConversationDetails, ConversationId, Delivery, Participant, Timestamp, UserId,
};
use chat_ports::{
    Clock, ConversationStore, DiscardingPublisher, EventPublisher, MessageStore, PostingDirectory,
    ReadStateStore, SystemClock, UserDirectory,
};
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::ServiceError;
use crate::ordering::PublishOrder;

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
            + 'static,
    {
        Self {
            conversations: store.clone(),
            messages: store.clone(),
            read_state: store.clone(),
            users: store.clone(),
            postings: store,
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
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_participants: 1000,
            sends_per_second: NonZeroU32::new(50).unwrap_or(NonZeroU32::MIN),
            send_burst: NonZeroU32::new(200).unwrap_or(NonZeroU32::MIN),
        }
    }
}

/// The chat service: one method per use case.
pub struct ChatService {
    pub(crate) ports: Ports,
    pub(crate) limits: Limits,
    send_limiter: DefaultKeyedRateLimiter<UserId>,
    pub(crate) order: PublishOrder,
}

impl ChatService {
    /// A service over `ports` with the default [`Limits`].
    pub fn new(ports: Ports) -> Self {
        Self::with_limits(ports, Limits::default())
    }

    /// A service over `ports` with the given limits.
    pub fn with_limits(ports: Ports, limits: Limits) -> Self {
        let quota = Quota::per_second(limits.sends_per_second).allow_burst(limits.send_burst);
        Self {
            ports,
            limits,
            send_limiter: RateLimiter::keyed(quota),
            order: PublishOrder::new(),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub(crate) fn now(&self) -> Timestamp {
        self.ports.clock.now()
    }

    /// Refuses a send when `user` exceeds their rate.
    pub(crate) fn check_send_rate(&self, user: UserId) -> Result<(), ServiceError> {
        self.send_limiter.check_key(&user).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ServiceError::RateLimited {
                retry_after: wait.max(Duration::from_secs(1)),
            }
        })
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

    /// Hands an event to the publisher. Publishing is best effort: the change is stored
    /// already, so a failure is logged and never undoes or fails the use case.
    pub(crate) async fn publish(&self, event: ChatEvent, recipients: Vec<UserId>) {
        if recipients.is_empty() {
            return;
        }
        let name = event.name();
        if let Err(err) = self
            .ports
            .events
            .publish(Delivery { event, recipients })
            .await
        {
            tracing::warn!(event = name, error = %err, "event not published");
        }
    }
}
