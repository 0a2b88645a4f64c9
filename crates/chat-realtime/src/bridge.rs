//! The cluster bridge over Redis pub/sub, for the **ephemeral** frames only (`typing`).
//! Durable events (everything stored: messages, reactions, read markers, membership) do
//! not travel here: every node runs its own relay over the shared change feed and hands
//! them to its own connections, so a Redis outage delays nothing durable and loses
//! nothing durable. [`crate::Fanout::publish`] forwards only [`EventClass::Typing`].
//!
//! Each frame forwarded (already delivered on this node) is PUBLISHed once, as its
//! recipients, the pre-encoded frame and the origin node id, to one channel; every node SUBSCRIBEs to it and
//! hands what other nodes published to its sequencer, ignoring its own echo. The envelope
//! is the bridge's own JSON (so that nodes of different versions can share a channel);
//! the frame inside it is carried as the opaque text it is. A durable frame that arrives
//! on the channel comes from a node of an older version (which publishes its events over
//! Redis and writes no change feed): it is delivered, since no relay will deliver it.
//!
//! Redis never takes the node down: the bridge starts whether or not Redis answers,
//! connects (and reconnects) in the background with backoff, and says how it is doing
//! through [`RedisBridge::status`] (for `/readyz` and the metrics):
//! - every frame a node forwards gets the next number of that node's publish sequence
//!   (`pseq`), even when it is dropped (full outbox, failed or timed-out pipeline, no
//!   connection), and every node PUBLISHes a heartbeat carrying the last number it used
//!   at least every [`HEARTBEAT`]; a jump in another node's sequence is counted
//!   ([`BridgeStatus::gaps_detected`]): typing indicators were lost, which needs no
//!   catching up (the next one replaces them), so no connection is closed;
//! - the subscriber receives at least its own heartbeat every [`HEARTBEAT`]; when nothing
//!   arrives for [`SUBSCRIPTION_DEADLINE`], the subscription is presumed dead (a frozen
//!   Redis, a half-open connection), counted, reported as down, and renewed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytestring::ByteString;
use chat_domain::{ConversationId, UserId};
use futures::StreamExt as _;
use redis::aio::MultiplexedConnection;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

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
/// The longest pause between two attempts to connect or subscribe again.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The first pause after a failed attempt to connect or subscribe.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// How long connecting (and subscribing) may take before the attempt is given up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest time between two heartbeats a node publishes.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long a subscription may stay silent (not even this node's own heartbeat) before
/// it is presumed dead.
pub const SUBSCRIPTION_DEADLINE: Duration = Duration::from_secs(3);
/// How long another node may stay silent before its publish sequence is forgotten.
const ORIGIN_EXPIRY: Duration = Duration::from_secs(60);

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

/// Why the bridge could not start: the Redis URL is invalid (an unreachable Redis is not
/// an error; the bridge keeps trying in the background).
#[derive(Debug, thiserror::Error)]
#[error("redis bridge: {0}")]
pub struct BridgeError(#[from] redis::RedisError);

/// How the bridge is doing, for `/readyz` and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BridgeStatus {
    /// The subscription is active: events from other nodes arrive.
    pub subscribed: bool,
    /// The publishing connection is up: events from this node reach the others.
    pub publishing: bool,
    /// Events of this node that never reached Redis (full outbox, failed pipeline, no
    /// connection), since start.
    pub events_dropped: u64,
    /// Jumps seen in other nodes' publish sequences (events lost on the way), since start.
    pub gaps_detected: u64,
    /// Times the subscription was lost (dropped or silent past the deadline), since start.
    pub subscriptions_lost: u64,
}

impl BridgeStatus {
    /// Both directions work.
    pub fn healthy(&self) -> bool {
        self.subscribed && self.publishing
    }
}

/// What the tasks share with the bridge, read by [`RedisBridge::status`].
#[derive(Debug, Default)]
struct Counters {
    publishing: AtomicBool,
    events_dropped: AtomicU64,
    gaps_detected: AtomicU64,
    subscriptions_lost: AtomicU64,
    /// The highest publish sequence number dropped before it reached the outbox.
    skipped_through: AtomicU64,
}

/// The numbering side of the outbox: numbers are taken and events queued under one lock,
/// so that the queue holds them in increasing order.
#[derive(Debug)]
struct Outbox {
    sender: mpsc::Sender<Numbered>,
    last_pseq: u64,
}

/// An event with its number in this node's publish sequence.
#[derive(Debug)]
struct Numbered {
    pseq: u64,
    frame: Arc<Frame>,
}

/// One event, or one heartbeat, on the channel.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    /// The node that published it.
    origin: String,
    /// The event's number in its origin's publish sequence; for a heartbeat, the last
    /// number the origin used. 0 from nodes that do not number (older versions).
    #[serde(default)]
    pseq: u64,
    /// A heartbeat carries no event.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    heartbeat: bool,
    #[serde(default)]
    conversation_id: String,
    /// The `seq` of a `message.created`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seq: Option<i64>,
    #[serde(default)]
    typing: bool,
    #[serde(default)]
    recipients: Vec<i64>,
    /// The frame, exactly as connections are sent it.
    #[serde(default)]
    frame: String,
}

impl Envelope {
    fn new(origin: &str, pseq: u64, event: &Frame) -> Self {
        Self {
            origin: origin.to_owned(),
            pseq,
            heartbeat: false,
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

    fn heartbeat(origin: &str, pseq: u64) -> Self {
        Self {
            origin: origin.to_owned(),
            pseq,
            heartbeat: true,
            conversation_id: String::new(),
            seq: None,
            typing: false,
            recipients: Vec::new(),
            frame: String::new(),
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
/// task; both (re)connect in the background whenever Redis is unreachable, and stop when
/// the bridge is dropped.
#[derive(Debug)]
pub struct RedisBridge {
    node_id: String,
    outbox: Mutex<Outbox>,
    counters: Arc<Counters>,
    subscribed: watch::Receiver<bool>,
    _stop: watch::Sender<()>,
}

impl RedisBridge {
    /// Starts both tasks on the current Tokio runtime, without waiting for Redis: until it
    /// answers, the bridge is degraded ([`RedisBridge::status`]) and this node's events
    /// reach this node only. Events from other nodes go to `sequencer`.
    ///
    /// # Errors
    /// [`BridgeError`] when the URL is invalid.
    pub fn start(settings: &RedisSettings, sequencer: Arc<Sequencer>) -> Result<Self, BridgeError> {
        let client = redis::Client::open(settings.url.as_str())?;
        let node_id = uuid::Uuid::new_v4().to_string();
        let (sender, queue) = mpsc::channel(OUTBOX_CAPACITY);
        let (subscribed_tx, subscribed) = watch::channel(false);
        let (stop, stopped) = watch::channel(());
        let counters = Arc::new(Counters::default());
        tokio::spawn(publish_loop(Publisher {
            client: client.clone(),
            channel: settings.channel.clone(),
            node_id: node_id.clone(),
            queue,
            counters: Arc::clone(&counters),
            stopped: stopped.clone(),
        }));
        tokio::spawn(subscribe_loop(Subscriber {
            client,
            channel: settings.channel.clone(),
            node_id: node_id.clone(),
            sequencer,
            subscribed: subscribed_tx,
            stopped,
            counters: Arc::clone(&counters),
            origins: HashMap::new(),
        }));
        tracing::info!(node = %node_id, channel = %settings.channel, "redis bridge started");
        Ok(Self {
            node_id,
            outbox: Mutex::new(Outbox {
                sender,
                last_pseq: 0,
            }),
            counters,
            subscribed,
            _stop: stop,
        })
    }

    /// This node's id on the channel.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// How the bridge is doing now.
    pub fn status(&self) -> BridgeStatus {
        let counters = &self.counters;
        BridgeStatus {
            subscribed: *self.subscribed.borrow(),
            publishing: counters.publishing.load(Ordering::Relaxed),
            events_dropped: counters.events_dropped.load(Ordering::Relaxed),
            gaps_detected: counters.gaps_detected.load(Ordering::Relaxed),
            subscriptions_lost: counters.subscriptions_lost.load(Ordering::Relaxed),
        }
    }

    /// Queues `event` for the other nodes, without waiting. A refused event still uses
    /// its number of the publish sequence, so that the other nodes see the gap.
    ///
    /// # Errors
    /// The text of the failure when the queue is full (Redis has been slow or unreachable
    /// for a while) or the publishing task is gone.
    pub fn forward(&self, event: Arc<Frame>) -> Result<(), String> {
        let mut outbox = self
            .outbox
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        outbox.last_pseq += 1;
        let pseq = outbox.last_pseq;
        let refused = match outbox.sender.try_send(Numbered { pseq, frame: event }) {
            Ok(()) => return Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => "the redis outbox is full",
            Err(mpsc::error::TrySendError::Closed(_)) => "the redis publisher has stopped",
        };
        self.counters
            .skipped_through
            .fetch_max(pseq, Ordering::SeqCst);
        self.counters.events_dropped.fetch_add(1, Ordering::Relaxed);
        Err(refused.to_owned())
    }

    /// How many frames this node has handed to the bridge since start (the last number
    /// of its publish sequence), whether or not they reached Redis.
    pub fn forwarded(&self) -> u64 {
        self.outbox
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .last_pseq
    }

    /// Waits until the subscription is active, for at most `timeout`; true when it is.
    pub async fn wait_subscribed(&self, timeout: Duration) -> bool {
        let mut subscribed = self.subscribed.clone();
        tokio::time::timeout(timeout, subscribed.wait_for(|active| *active))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// The publishing task's state.
struct Publisher {
    client: redis::Client,
    channel: String,
    node_id: String,
    queue: mpsc::Receiver<Numbered>,
    counters: Arc<Counters>,
    stopped: watch::Receiver<()>,
}

/// Connects to Redis, with a deadline.
async fn connect(client: &redis::Client) -> Result<MultiplexedConnection, String> {
    match tokio::time::timeout(CONNECT_TIMEOUT, client.get_multiplexed_async_connection()).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err("connecting timed out".to_owned()),
    }
}

/// Publishes queued events in batches (one pipeline each), and a heartbeat at least every
/// [`HEARTBEAT`]. Without a connection, frames are dropped (their numbers skipped) rather
/// than held: a typing indicator held through an outage would be stale when it arrived.
async fn publish_loop(mut p: Publisher) {
    let mut connection: Option<MultiplexedConnection> = None;
    let mut retry_at = Instant::now();
    let mut backoff = MIN_BACKOFF;
    let mut last_heartbeat: Option<Instant> = None;
    let mut handled_through = 0u64;
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let received = tokio::select! {
            _ = p.stopped.changed() => return,
            received = tokio::time::timeout(HEARTBEAT, p.queue.recv_many(&mut batch, BATCH)) => received,
        };
        if received == Ok(0) {
            return;
        }
        if connection.is_none() && Instant::now() >= retry_at {
            match connect(&p.client).await {
                Ok(connected) => {
                    connection = Some(connected);
                    backoff = MIN_BACKOFF;
                    p.counters.publishing.store(true, Ordering::Relaxed);
                    tracing::info!("publishing to redis");
                }
                Err(err) => {
                    tracing::warn!(error = %err, "cannot connect to redis to publish; retrying");
                    retry_at = Instant::now() + backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        let events = batch.len();
        let mut pipe = redis::pipe();
        for event in batch.drain(..) {
            handled_through = handled_through.max(event.pseq);
            let envelope = Envelope::new(&p.node_id, event.pseq, &event.frame);
            match serde_json::to_string(&envelope) {
                Ok(payload) => {
                    pipe.cmd("PUBLISH").arg(&p.channel).arg(payload).ignore();
                }
                Err(err) => tracing::warn!(error = %err, "event not encoded for redis"),
            }
        }
        if last_heartbeat.is_none_or(|at| at.elapsed() >= HEARTBEAT) {
            let through = handled_through.max(p.counters.skipped_through.load(Ordering::SeqCst));
            if let Ok(payload) = serde_json::to_string(&Envelope::heartbeat(&p.node_id, through)) {
                pipe.cmd("PUBLISH").arg(&p.channel).arg(payload).ignore();
            }
            last_heartbeat = Some(Instant::now());
        }
        let Some(open) = connection.as_mut() else {
            drop_events(&p.counters, events, "no connection to redis");
            continue;
        };
        let sent = tokio::time::timeout(PUBLISH_TIMEOUT, pipe.query_async::<()>(open)).await;
        let failure = match sent {
            Ok(Ok(())) => continue,
            Ok(Err(err)) => err.to_string(),
            Err(_) => "publishing timed out".to_owned(),
        };
        // The connection's state is unknown: start again on a new one.
        connection = None;
        p.counters.publishing.store(false, Ordering::Relaxed);
        drop_events(&p.counters, events, &failure);
    }
}

fn drop_events(counters: &Counters, events: usize, why: &str) {
    if events > 0 {
        counters
            .events_dropped
            .fetch_add(events as u64, Ordering::Relaxed);
        tracing::warn!(
            events,
            reason = why,
            "events not published to redis; dropped"
        );
    }
}

/// The subscribing task's state.
struct Subscriber {
    client: redis::Client,
    channel: String,
    node_id: String,
    sequencer: Arc<Sequencer>,
    subscribed: watch::Sender<bool>,
    stopped: watch::Receiver<()>,
    counters: Arc<Counters>,
    /// Per other node: the last number of its publish sequence seen, and when.
    origins: HashMap<String, (u64, Instant)>,
}

async fn subscribe_loop(mut sub: Subscriber) {
    let mut backoff = MIN_BACKOFF;
    let mut ever_subscribed = false;
    loop {
        let attempt = async {
            let mut pubsub = sub.client.get_async_pubsub().await?;
            pubsub.subscribe(&sub.channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let outcome = tokio::select! {
            _ = sub.stopped.changed() => return,
            outcome = tokio::time::timeout(CONNECT_TIMEOUT, attempt) => outcome,
        };
        match outcome {
            Ok(Ok(mut pubsub)) => {
                backoff = MIN_BACKOFF;
                sub.subscribed.send_replace(true);
                sub.origins.clear();
                // Only typing indicators travel here: what passed us by meanwhile is
                // stale already, and durable events came from this node's relay.
                if ever_subscribed {
                    tracing::info!("redis subscription restored");
                } else {
                    tracing::info!("subscribed to redis");
                }
                ever_subscribed = true;
                let mut messages = pubsub.on_message();
                let mut deadline = Instant::now() + SUBSCRIPTION_DEADLINE;
                let lost = loop {
                    tokio::select! {
                        _ = sub.stopped.changed() => return,
                        message = tokio::time::timeout_at(deadline, messages.next()) => match message {
                            Ok(Some(message)) => {
                                deadline = Instant::now() + SUBSCRIPTION_DEADLINE;
                                receive(&mut sub, message.get_payload_bytes());
                            }
                            Ok(None) => break "redis subscription lost",
                            Err(_) => break "redis subscription silent past its deadline",
                        },
                    }
                };
                drop(messages);
                drop(pubsub);
                sub.subscribed.send_replace(false);
                sub.counters
                    .subscriptions_lost
                    .fetch_add(1, Ordering::Relaxed);
                // Typing indicators of other nodes pass us by until we are back; durable
                // events keep coming from this node's relay.
                tracing::warn!(
                    reason = lost,
                    "redis subscription down: typing indicators of other nodes are not \
                     delivered until it is back"
                );
            }
            Ok(Err(err)) => tracing::warn!(error = %err, "redis subscription failed; retrying"),
            Err(_) => tracing::warn!("subscribing to redis timed out; retrying"),
        }
        tokio::select! {
            _ = sub.stopped.changed() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

fn receive(sub: &mut Subscriber, payload: &[u8]) {
    let envelope = match serde_json::from_slice::<Envelope>(payload) {
        Ok(envelope) => envelope,
        Err(err) => {
            tracing::warn!(error = %err, "unreadable event on the redis channel");
            return;
        }
    };
    if envelope.origin == sub.node_id {
        return;
    }
    if envelope.pseq > 0 && !in_sequence(sub, &envelope) {
        return;
    }
    if envelope.heartbeat {
        return;
    }
    match envelope.into_event() {
        Some(event) => sub.sequencer.offer(Arc::new(event)),
        None => tracing::warn!("event with a malformed conversation id on the redis channel"),
    }
}

/// Checks `envelope` against its origin's publish sequence: true when its event is to be
/// delivered. A jump (numbers skipped: frames dropped on the way) is counted and logged;
/// an event numbered at or below one already seen (late, after a jump) is not delivered.
fn in_sequence(sub: &mut Subscriber, envelope: &Envelope) -> bool {
    let now = Instant::now();
    if sub.origins.len() > 64 {
        sub.origins
            .retain(|_, (_, seen)| now.duration_since(*seen) < ORIGIN_EXPIRY);
    }
    let Some((last, seen)) = sub.origins.get_mut(&envelope.origin) else {
        // A node not heard from since we subscribed: its sequence starts here.
        sub.origins
            .insert(envelope.origin.clone(), (envelope.pseq, now));
        return true;
    };
    *seen = now;
    let expected = if envelope.heartbeat { *last } else { *last + 1 };
    if envelope.pseq < expected {
        return false;
    }
    let gap = envelope.pseq > expected;
    *last = envelope.pseq;
    if gap {
        sub.counters.gaps_detected.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            origin = %envelope.origin,
            skipped = envelope.pseq - expected,
            "frames of another node were dropped before reaching redis (typing only)"
        );
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{Hub, Outgoing};

    fn subscriber(hub: &Arc<Hub>) -> Subscriber {
        let (subscribed, _) = watch::channel(false);
        let (_, stopped) = watch::channel(());
        Subscriber {
            client: redis::Client::open("redis://127.0.0.1:1").unwrap(),
            channel: DEFAULT_CHANNEL.to_owned(),
            node_id: "this-node".to_owned(),
            sequencer: Sequencer::new(Arc::clone(hub), Duration::from_millis(250)),
            subscribed,
            stopped,
            counters: Arc::new(Counters::default()),
            origins: HashMap::new(),
        }
    }

    fn envelope(pseq: u64, class: EventClass, recipient: UserId, text: &str) -> Vec<u8> {
        let frame = Frame {
            conversation_id: ConversationId::new(),
            class,
            recipients: vec![recipient],
            payload: ByteString::from(text.to_owned()),
        };
        serde_json::to_vec(&Envelope::new("other-node", pseq, &frame)).unwrap()
    }

    #[tokio::test]
    async fn a_gap_in_another_nodes_sequence_is_counted_without_closing_any_connection() {
        let hub = Arc::new(Hub::default());
        let resync = hub.resync_signal();
        let user = UserId::new(1).unwrap();
        let (connection, mut queue) = hub.connection(8);
        hub.attach(user, &connection);
        let mut sub = subscriber(&hub);

        receive(&mut sub, &envelope(1, EventClass::Typing, user, "typing 1"));
        // Numbers 2 and 3 were dropped on the way (typing lost): counted, nobody closed.
        receive(&mut sub, &envelope(4, EventClass::Typing, user, "typing 4"));
        assert_eq!(sub.counters.gaps_detected.load(Ordering::Relaxed), 1);
        assert!(!resync.has_changed().unwrap(), "no 1012 for lost typing");
        // A late number is not delivered; its own echo is ignored.
        receive(&mut sub, &envelope(3, EventClass::Typing, user, "late"));
        let mut echo: Envelope =
            serde_json::from_slice(&envelope(5, EventClass::Typing, user, "echo")).unwrap();
        echo.origin = "this-node".to_owned();
        receive(&mut sub, &serde_json::to_vec(&echo).unwrap());
        // A durable frame on the channel comes from an older node (no change feed): kept.
        receive(
            &mut sub,
            &envelope(5, EventClass::Ordered, user, "from an older node"),
        );
        let texts: Vec<Outgoing> = std::iter::from_fn(|| queue.try_recv().ok()).collect();
        assert_eq!(
            texts,
            ["typing 1", "typing 4", "from an older node"]
                .map(|t| Outgoing::Text(ByteString::from_static(t)))
        );
        assert!(!resync.has_changed().unwrap());
    }
}
