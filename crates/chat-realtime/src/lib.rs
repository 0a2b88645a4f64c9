//! The real-time transport of one node, on already-encoded frames: [`Fanout`] takes a
//! [`Frame`] (an event encoded once by whoever publishes it), orders it per conversation
//! ([`order`]), queues it on every connection of its recipients on this node ([`hub`]) and,
//! for an ephemeral frame (typing) when Redis is configured, forwards it to the other
//! nodes of the cluster ([`bridge`]). Durable events are not forwarded: each node
//! publishes them from the shared change feed itself (its relay), so Redis carries only
//! what may be lost.
//!
//! This crate knows neither the events' wire format nor WebSocket: the HTTP adapter
//! encodes events into frames, and its WebSocket endpoint drains the hub's queues.

#![forbid(unsafe_code)]

pub mod bridge;
pub mod frame;
pub mod hub;
pub mod order;

use std::sync::Arc;
use std::time::Duration;

pub use bridge::{BridgeError, BridgeStatus, DEFAULT_CHANNEL, RedisBridge, RedisSettings};
pub use frame::{EventClass, Frame};
pub use hub::{Connection, Hub, Offer, Outgoing};
pub use order::Sequencer;

/// How the transport of one node runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealtimeSettings {
    /// How long a `message.created` that arrives ahead of its predecessor (by `seq`) is
    /// held back waiting for it before it is delivered anyway.
    pub reorder_window: Duration,
    /// The Redis channel shared with the other nodes; `None` for a single node.
    pub redis: Option<RedisSettings>,
}

impl Default for RealtimeSettings {
    fn default() -> Self {
        Self {
            reorder_window: Duration::from_millis(250),
            redis: None,
        }
    }
}

/// Why a frame could not be handed to the other nodes (it was delivered on this node).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ForwardError(String);

/// The transport of one node: its hub, its sequencer and, in a cluster, its Redis bridge.
#[derive(Debug)]
pub struct Fanout {
    hub: Arc<Hub>,
    sequencer: Arc<Sequencer>,
    bridge: Option<RedisBridge>,
}

impl Fanout {
    /// A single node: frames reach the connections of this process only.
    pub fn local(reorder_window: Duration) -> Arc<Self> {
        let hub = Arc::new(Hub::default());
        let sequencer = Sequencer::new(Arc::clone(&hub), reorder_window);
        Arc::new(Self {
            hub,
            sequencer,
            bridge: None,
        })
    }

    /// A node as `settings` say: bridged over Redis when they name a channel, else
    /// [`Fanout::local`]. Must be called on the Tokio runtime that is to run the bridge's
    /// tasks.
    ///
    /// Redis need not answer yet: the bridge connects in the background and, until it
    /// has, frames reach this node's connections only ([`Fanout::bridge_status`]).
    ///
    /// # Errors
    /// [`BridgeError`] when the Redis URL is invalid.
    pub async fn start(settings: &RealtimeSettings) -> Result<Arc<Self>, BridgeError> {
        let Some(redis) = &settings.redis else {
            return Ok(Self::local(settings.reorder_window));
        };
        let hub = Arc::new(Hub::default());
        let sequencer = Sequencer::new(Arc::clone(&hub), settings.reorder_window);
        let bridge = RedisBridge::start(redis, Arc::clone(&sequencer))?;
        Ok(Arc::new(Self {
            hub,
            sequencer,
            bridge: Some(bridge),
        }))
    }

    /// The connections of this node.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// The Redis bridge, in a cluster.
    pub fn bridge(&self) -> Option<&RedisBridge> {
        self.bridge.as_ref()
    }

    /// How the Redis bridge is doing; `None` on a single node.
    pub fn bridge_status(&self) -> Option<BridgeStatus> {
        self.bridge.as_ref().map(RedisBridge::status)
    }

    /// Delivers `frame` on this node at once and, when it is ephemeral
    /// ([`Frame::crosses_nodes`]: typing), queues it for the other nodes. Durable frames
    /// stay on this node: every node's relay publishes them from the change feed, so
    /// forwarding them too would deliver them twice. The caller hands a conversation's
    /// durable frames over in commit order (the relay reads them in feed order), so they
    /// are never held for a `seq` they skip ([`Sequencer::offer_in_order`]). Never waits.
    ///
    /// # Errors
    /// [`ForwardError`] when the frame could not be queued for the other nodes (Redis has
    /// been unreachable for a while); it has reached this node's connections regardless.
    pub fn publish(&self, frame: Frame) -> Result<(), ForwardError> {
        let frame = Arc::new(frame);
        // This node's durable frames come from its relay, in commit order.
        self.sequencer.offer_in_order(Arc::clone(&frame));
        if let Some(bridge) = self.bridge.as_ref().filter(|_| frame.crosses_nodes()) {
            bridge.forward(frame).map_err(ForwardError)?;
        }
        Ok(())
    }

    /// Waits until frames from other nodes can arrive (at once on a single node); true
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

#[cfg(test)]
mod tests {
    use bytestring::ByteString;
    use chat_domain::{ConversationId, UserId};

    use super::*;

    #[tokio::test]
    async fn a_local_fanout_delivers_published_frames_to_the_recipients_connections() {
        let fanout = Fanout::start(&RealtimeSettings::default()).await.unwrap();
        assert!(fanout.bridge().is_none());
        assert!(fanout.wait_ready(Duration::from_millis(1)).await);
        let user = UserId::new(1).unwrap();
        let (connection, mut queue) = fanout.hub().connection(8);
        fanout.hub().attach(user, &connection);
        let frame = |recipients: Vec<UserId>, text: &'static str| Frame {
            conversation_id: ConversationId::new(),
            class: EventClass::Ordered,
            recipients,
            payload: ByteString::from_static(text),
        };
        fanout.publish(frame(vec![user], "for you")).unwrap();
        fanout
            .publish(frame(vec![UserId::new(2).unwrap()], "not for you"))
            .unwrap();
        assert_eq!(
            queue.try_recv().unwrap(),
            Outgoing::Text(ByteString::from_static("for you"))
        );
        assert!(queue.try_recv().is_err());

        let mut shutdown = fanout.hub().shutdown_signal();
        fanout.shut_down();
        assert!(*shutdown.borrow_and_update());
    }

    #[tokio::test]
    async fn only_typing_frames_are_forwarded_to_the_other_nodes_and_every_frame_is_delivered_here()
    {
        // A bridge to a port where nothing listens: it starts all the same (degraded).
        let settings = RealtimeSettings {
            redis: Some(RedisSettings::new("redis://127.0.0.1:1")),
            ..RealtimeSettings::default()
        };
        let fanout = Fanout::start(&settings).await.unwrap();
        let bridge = fanout.bridge().expect("a bridge");
        let user = UserId::new(1).unwrap();
        let (connection, mut queue) = fanout.hub().connection(16);
        fanout.hub().attach(user, &connection);
        let conversation = ConversationId::new();
        let frame = |class: EventClass, text: &'static str| Frame {
            conversation_id: conversation,
            class,
            recipients: vec![user],
            payload: ByteString::from_static(text),
        };
        let sent = [
            frame(EventClass::MessageCreated(1), "created 1"),
            frame(EventClass::Typing, "typing 1"),
            frame(EventClass::Ordered, "reaction"),
            frame(EventClass::MessageCreated(2), "created 2"),
            frame(EventClass::Typing, "typing 2"),
        ];
        for one in &sent {
            assert_eq!(one.crosses_nodes(), one.class == EventClass::Typing);
            // Forwarding a typing frame may fail (no Redis): it is delivered here anyway.
            let _ = fanout.publish(one.clone());
        }
        assert_eq!(bridge.forwarded(), 2, "only the two typing frames");
        for one in &sent {
            assert_eq!(
                queue.try_recv().unwrap(),
                Outgoing::Text(one.payload.clone())
            );
        }
        assert!(queue.try_recv().is_err());
    }
}
