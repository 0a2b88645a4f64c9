//! The real-time side of the HTTP adapter: [`Realtime`] implements the service's
//! [`EventPublisher`] port by encoding each event once into JSON ([`frame`]) and handing
//! the frame to the node's transport (`chat-realtime`'s [`Fanout`]: per-conversation
//! ordering, the per-node hub and, in a cluster, the Redis bridge, which the composition
//! root starts). The WebSocket endpoint (`ws/`) drains the hub's queues. The protocol is
//! described in `docs/websocket.md`.

pub mod config;
pub mod frame;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chat_domain::{Delivery, UserId};
use chat_ports::{EventPublisher, PublishError};
use chat_realtime::{Fanout, Hub};

pub use config::WsConfig;

/// The real-time side of one node: its WebSocket limits and its transport.
#[derive(Debug)]
pub struct Realtime {
    config: WsConfig,
    fanout: Arc<Fanout>,
}

impl Realtime {
    /// WebSocket connections with `config` over `fanout` (local or bridged to other
    /// nodes, as the composition root chose).
    pub fn new(config: WsConfig, fanout: Arc<Fanout>) -> Arc<Self> {
        Arc::new(Self { config, fanout })
    }

    /// The limits and timings of connections.
    pub fn config(&self) -> &WsConfig {
        &self.config
    }

    /// The transport.
    pub fn fanout(&self) -> &Arc<Fanout> {
        &self.fanout
    }

    /// The connections of this node.
    pub fn hub(&self) -> &Arc<Hub> {
        self.fanout.hub()
    }

    /// Waits until events from other nodes can arrive (at once on a single node); true
    /// when they can within `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        self.fanout.wait_ready(timeout).await
    }

    /// Closes every connection with 1001 (going away), for a graceful shutdown.
    pub fn shut_down(&self) {
        self.fanout.shut_down();
    }
}

#[async_trait]
impl EventPublisher for Realtime {
    /// Encodes the event once, delivers it on this node at once, then queues it for the
    /// other nodes.
    async fn publish(&self, delivery: Delivery) -> Result<(), PublishError> {
        let frame = frame::encode(&delivery)
            .map_err(|err| PublishError(format!("event not encoded: {err}")))?;
        self.fanout
            .publish(frame)
            .map_err(|err| PublishError(err.to_string()))
    }

    /// Durable events reach this node's connections only (every node relays the feed
    /// itself; only typing crosses nodes), so a recipient without a connection here cannot
    /// receive one. A client that connects later resumes from a token taken after it
    /// attached, which covers every change the relay has already passed.
    fn reaches_any(&self, recipients: &[UserId]) -> bool {
        self.hub().any_connected(recipients)
    }
}
