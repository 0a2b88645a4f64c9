//! The outbound port for real-time delivery of domain events.

use async_trait::async_trait;
use chat_domain::{Delivery, UserId};

use crate::PublishError;

/// Delivers events to the connections of their recipients (on this node and, in a
/// cluster, on every node).
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait EventPublisher: Send + Sync {
    /// Hands `delivery` over for delivery. It MUST NOT wait for slow consumers. Events of
    /// one conversation published one after the other MUST reach each connection in that
    /// order.
    ///
    /// # Errors
    /// [`PublishError`] when the event could not be handed over (for example the cluster
    /// bus is down). The change it announces is stored regardless.
    async fn publish(&self, delivery: Delivery) -> Result<(), PublishError>;

    /// Whether an event for `recipients` published now could reach anyone (for the
    /// real-time adapter: one of them has a connection open on this node). The relay looks
    /// up and publishes only the changes that could: most members of most conversations
    /// are offline, and an event nobody receives is a message lookup wasted. It MUST NOT
    /// answer `false` for a recipient who could receive the event; a publisher that cannot
    /// tell answers `true`, the default.
    fn reaches_any(&self, recipients: &[UserId]) -> bool {
        !recipients.is_empty()
    }
}

/// An [`EventPublisher`] that drops every event: for a service without real-time
/// delivery (tools, tests that do not watch events), as [`SystemClock`](crate::SystemClock)
/// is the do-nothing-special [`Clock`](crate::Clock).
#[derive(Debug, Default, Clone, Copy)]
pub struct DiscardingPublisher;

#[async_trait]
impl EventPublisher for DiscardingPublisher {
    async fn publish(&self, _delivery: Delivery) -> Result<(), PublishError> {
        Ok(())
    }
}
