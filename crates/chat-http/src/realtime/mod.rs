//! The real-time layer behind `/api/v1/ws`: [`Realtime`] implements the service's
//! [`EventPublisher`] port. Each event is encoded once ([`frame`]), ordered per
//! conversation ([`order`]), queued on every connection of its recipients on this node
//! ([`hub`]) and, when Redis is configured, forwarded to the other nodes ([`bridge`]).
//! The protocol is described in `docs/websocket.md`.

pub mod bridge;
pub mod config;
pub mod frame;
pub mod hub;
pub mod order;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chat_domain::Delivery;
use chat_ports::{EventPublisher, PublishError};

pub use bridge::{BridgeError, RedisBridge, RedisSettings};
pub use config::WsConfig;
pub use frame::{EventClass, OutboundEvent};
pub use hub::Hub;
pub use order::Sequencer;

/// The real-time transport of one node: its hub, its sequencer, its limits and, in a
/// cluster, its Redis bridge.
#[derive(Debug)]
pub struct Realtime {
    config: WsConfig,
    hub: Arc<Hub>,
    sequencer: Arc<Sequencer>,
    bridge: Option<RedisBridge>,
}

impl Realtime {
    /// A single node: events reach the connections of this process only.
    pub fn local(config: WsConfig) -> Arc<Self> {
        let hub = Arc::new(Hub::default());
        let sequencer = Sequencer::new(Arc::clone(&hub), config.reorder_window);
        Arc::new(Self {
            config,
            hub,
            sequencer,
            bridge: None,
        })
    }

    /// A node of a cluster whose nodes share events over Redis pub/sub. Must be called
    /// on the Tokio runtime that is to run the bridge's tasks.
    ///
    /// # Errors
    /// [`BridgeError`] when the URL is invalid or Redis does not answer.
    pub async fn clustered(
        config: WsConfig,
        redis: &RedisSettings,
    ) -> Result<Arc<Self>, BridgeError> {
        let hub = Arc::new(Hub::default());
        let sequencer = Sequencer::new(Arc::clone(&hub), config.reorder_window);
        let bridge = RedisBridge::start(redis, Arc::clone(&sequencer)).await?;
        Ok(Arc::new(Self {
            config,
            hub,
            sequencer,
            bridge: Some(bridge),
        }))
    }

    /// The limits and timings of connections.
    pub fn config(&self) -> &WsConfig {
        &self.config
    }

    /// The connections of this node.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// The Redis bridge, in a cluster.
    pub fn bridge(&self) -> Option<&RedisBridge> {
        self.bridge.as_ref()
    }

    /// Waits until events from other nodes can arrive (at once on a single node); true
    /// when they can within `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        match &self.bridge {
            Some(bridge) => bridge.wait_subscribed(timeout).await,
            None => true,
        }
    }

    /// Closes every connection with 1001 (going away), for a graceful shutdown.
    pub fn shut_down(&self) {
        self.hub.shut_down();
    }
}

#[async_trait]
impl EventPublisher for Realtime {
    /// Delivers on this node at once, then queues the event for the other nodes.
    async fn publish(&self, delivery: Delivery) -> Result<(), PublishError> {
        let event = OutboundEvent::encode(&delivery)
            .map_err(|err| PublishError(format!("event not encoded: {err}")))?;
        let event = Arc::new(event);
        self.sequencer.offer(Arc::clone(&event));
        if let Some(bridge) = &self.bridge {
            bridge.forward(event).map_err(PublishError)?;
        }
        Ok(())
    }
}
