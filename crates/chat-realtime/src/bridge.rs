//! The cluster bridge over Redis pub/sub. Each event published on this node (already
//! delivered here) is PUBLISHed once, as recipients + pre-encoded frame + origin node id,
//! to one channel; every node SUBSCRIBEs to it and hands what other nodes published to its
//! sequencer, ignoring its own echo. Redis keeps the order of one publisher; the sequencer
//! orders `message.created` across publishers. The envelope is the bridge's own JSON (so
//! that nodes of different versions can share a channel); the frame inside it is carried
//! as the opaque text it is.

use std::sync::Arc;
use std::time::Duration;

use bytestring::ByteString;
use chat_domain::{ConversationId, UserId};
use futures::StreamExt as _;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use crate::frame::{EventClass, Frame};
use crate::order::Sequencer;

/// The channel events travel on when none is configured.
pub const DEFAULT_CHANNEL: &str = "chat:events";
/// Events waiting to be PUBLISHed before new ones are refused.
const OUTBOX_CAPACITY: usize = 10_000;
/// Events sent in one pipeline.
const BATCH: usize = 64;
/// How long one pipeline may take before its events are given up.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest pause between two attempts to subscribe again.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Where the bridge connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://host:port/db`.
    pub url: String,
    /// The pub/sub channel shared by every node of the cluster.
    pub channel: String,
}

impl RedisSettings {
    /// Settings for `url` on the default channel.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            channel: DEFAULT_CHANNEL.to_owned(),
        }
    }
}

/// Why the bridge could not start.
#[derive(Debug, thiserror::Error)]
#[error("redis bridge: {0}")]
pub struct BridgeError(#[from] redis::RedisError);

/// One event on the channel.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    /// The node that published it.
    origin: String,
    conversation_id: String,
    /// The `seq` of a `message.created`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seq: Option<i64>,
    #[serde(default)]
    typing: bool,
    recipients: Vec<i64>,
    /// The frame, exactly as connections are sent it.
    frame: String,
}

impl Envelope {
    fn new(origin: &str, event: &Frame) -> Self {
        Self {
            origin: origin.to_owned(),
            conversation_id: event.conversation_id.to_string(),
            seq: match event.class {
                EventClass::MessageCreated(seq) => Some(seq),
                _ => None,
            },
            typing: event.class == EventClass::Typing,
            recipients: event.recipients.iter().map(|u| u.get()).collect(),
            frame: event.payload.to_string(),
        }
    }

    fn into_event(self) -> Option<Frame> {
        Some(Frame {
            conversation_id: ConversationId::parse(&self.conversation_id).ok()?,
            class: match (self.seq, self.typing) {
                (Some(seq), _) => EventClass::MessageCreated(seq),
                (None, true) => EventClass::Typing,
                (None, false) => EventClass::Ordered,
            },
            recipients: self
                .recipients
                .into_iter()
                .filter_map(|id| UserId::new(id).ok())
                .collect(),
            payload: ByteString::from(self.frame),
        })
    }
}

/// A running bridge: a publishing task fed in order through a queue, and a subscribing
/// task that reconnects whenever Redis drops. Both stop when the bridge is dropped.
#[derive(Debug)]
pub struct RedisBridge {
    node_id: String,
    outbox: mpsc::Sender<Arc<Frame>>,
    subscribed: watch::Receiver<bool>,
    _stop: watch::Sender<()>,
}

impl RedisBridge {
    /// Connects to Redis and starts both tasks on the current Tokio runtime. Events from
    /// other nodes go to `sequencer`.
    ///
    /// # Errors
    /// [`BridgeError`] when the URL is invalid or Redis does not answer now.
    pub async fn start(
        settings: &RedisSettings,
        sequencer: Arc<Sequencer>,
    ) -> Result<Self, BridgeError> {
        let client = redis::Client::open(settings.url.as_str())?;
        let publisher = ConnectionManager::new(client.clone()).await?;
        let node_id = uuid::Uuid::new_v4().to_string();
        let (outbox, queue) = mpsc::channel(OUTBOX_CAPACITY);
        let (subscribed_tx, subscribed) = watch::channel(false);
        let (stop, stopped) = watch::channel(());
        tokio::spawn(publish_loop(
            publisher,
            settings.channel.clone(),
            node_id.clone(),
            queue,
        ));
        tokio::spawn(subscribe_loop(Subscriber {
            client,
            channel: settings.channel.clone(),
            node_id: node_id.clone(),
            sequencer,
            subscribed: subscribed_tx,
            stopped,
        }));
        tracing::info!(node = %node_id, channel = %settings.channel, "redis bridge started");
        Ok(Self {
            node_id,
            outbox,
            subscribed,
            _stop: stop,
        })
    }

    /// This node's id on the channel.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Queues `event` for the other nodes, without waiting.
    ///
    /// # Errors
    /// The text of the failure when the queue is full (Redis has been unreachable for a
    /// while) or the publishing task is gone.
    pub fn forward(&self, event: Arc<Frame>) -> Result<(), String> {
        self.outbox.try_send(event).map_err(|err| match err {
            mpsc::error::TrySendError::Full(_) => "the redis outbox is full".to_owned(),
            mpsc::error::TrySendError::Closed(_) => "the redis publisher has stopped".to_owned(),
        })
    }

    /// Waits until the subscription is active, for at most `timeout`; true when it is.
    pub async fn wait_subscribed(&self, timeout: Duration) -> bool {
        let mut subscribed = self.subscribed.clone();
        tokio::time::timeout(timeout, subscribed.wait_for(|active| *active))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

async fn publish_loop(
    mut connection: ConnectionManager,
    channel: String,
    node_id: String,
    mut queue: mpsc::Receiver<Arc<Frame>>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while queue.recv_many(&mut batch, BATCH).await > 0 {
        let mut pipe = redis::pipe();
        for event in batch.drain(..) {
            let envelope = Envelope::new(&node_id, &event);
            match serde_json::to_string(&envelope) {
                Ok(payload) => {
                    pipe.cmd("PUBLISH").arg(&channel).arg(payload).ignore();
                }
                Err(err) => tracing::warn!(error = %err, "event not encoded for redis"),
            }
        }
        let sent: Result<redis::RedisResult<()>, _> =
            tokio::time::timeout(PUBLISH_TIMEOUT, pipe.query_async(&mut connection)).await;
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "events not published to redis"),
            Err(_) => tracing::warn!("publishing to redis timed out; events dropped"),
        }
    }
}

struct Subscriber {
    client: redis::Client,
    channel: String,
    node_id: String,
    sequencer: Arc<Sequencer>,
    subscribed: watch::Sender<bool>,
    stopped: watch::Receiver<()>,
}

async fn subscribe_loop(mut sub: Subscriber) {
    let mut backoff = Duration::from_millis(100);
    let mut ever_subscribed = false;
    loop {
        let attempt = async {
            let mut pubsub = sub.client.get_async_pubsub().await?;
            pubsub.subscribe(&sub.channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let outcome = tokio::select! {
            _ = sub.stopped.changed() => return,
            outcome = attempt => outcome,
        };
        match outcome {
            Ok(mut pubsub) => {
                backoff = Duration::from_millis(100);
                sub.subscribed.send_replace(true);
                if ever_subscribed {
                    // Whatever was published while we were away is lost for our
                    // connections: make their clients reconnect and catch up.
                    tracing::warn!("redis subscription restored; asking clients to resync");
                    sub.sequencer.hub().resync();
                }
                ever_subscribed = true;
                let mut messages = pubsub.on_message();
                loop {
                    tokio::select! {
                        _ = sub.stopped.changed() => return,
                        message = messages.next() => match message {
                            Some(message) => receive(&sub, message.get_payload_bytes()),
                            None => break,
                        },
                    }
                }
                sub.subscribed.send_replace(false);
                tracing::warn!("redis subscription lost; reconnecting");
            }
            Err(err) => tracing::warn!(error = %err, "redis subscription failed; retrying"),
        }
        tokio::select! {
            _ = sub.stopped.changed() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

fn receive(sub: &Subscriber, payload: &[u8]) {
    match serde_json::from_slice::<Envelope>(payload) {
        Ok(envelope) if envelope.origin == sub.node_id => {}
        Ok(envelope) => match envelope.into_event() {
            Some(event) => sub.sequencer.offer(Arc::new(event)),
            None => tracing::warn!("event with a malformed conversation id on the redis channel"),
        },
        Err(err) => tracing::warn!(error = %err, "unreadable event on the redis channel"),
    }
}
