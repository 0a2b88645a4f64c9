//! An [`EventPublisher`] that discards every event, until the real-time transport
//! (WebSocket hub and cluster bridge) is plugged in by the composition root.

use async_trait::async_trait;
use chat_domain::Delivery;
use chat_ports::{EventPublisher, PublishError};

/// Drops every event.
#[derive(Debug, Default, Clone, Copy)]
pub struct DiscardingPublisher;

#[async_trait]
impl EventPublisher for DiscardingPublisher {
    async fn publish(&self, delivery: Delivery) -> Result<(), PublishError> {
        tracing::trace!(event = delivery.event.name(), "event discarded");
        Ok(())
    }
}
