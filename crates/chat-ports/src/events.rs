//! The outbound port for real-time delivery of domain events.

use async_trait::async_trait;
use chat_domain::Delivery;

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
