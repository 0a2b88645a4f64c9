//! The per-node hub: which connections each user has open here, and the bounded outbound
//! queue of each (drained by the WebSocket writer of the HTTP adapter). Delivering never
//! waits: a frame is queued or, for a consumer that cannot keep up, dropped (typing) or
//! the connection is kicked (4008).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use bytestring::ByteString;
use chat_domain::UserId;
use tokio::sync::{Notify, mpsc, watch};

use crate::frame::{EventClass, Frame};

/// Something the writer of one connection sends, in queue order.
#[derive(Debug, Clone, PartialEq)]
pub enum Outgoing {
    /// A text frame (an event or a reply).
    Text(ByteString),
    /// A keep-alive ping.
    Ping,
    /// The answer to the client's ping.
    Pong(Bytes),
}

/// What became of a frame offered to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Queued.
    Queued,
    /// Dropped: a typing event for a busy queue, or the connection is going away.
    Dropped,
    /// The queue is full: the connection is a slow consumer and has been kicked.
    Overflow,
}

/// One open connection, as the hub sees it.
#[derive(Debug)]
pub struct Connection {
    id: u64,
    queue: mpsc::Sender<Outgoing>,
    kicked: AtomicBool,
    kick: Notify,
}

impl Connection {
    /// Offers a frame without waiting. Droppable frames are refused once the queue is
    /// half full, so that a burst of typing never crowds out messages.
    pub fn offer(&self, item: Outgoing, droppable: bool) -> Offer {
        if self.kicked.load(Ordering::Acquire) {
            return Offer::Dropped;
        }
        if droppable && self.queue.capacity() * 2 <= self.queue.max_capacity() {
            return Offer::Dropped;
        }
        match self.queue.try_send(item) {
            Ok(()) => Offer::Queued,
            Err(mpsc::error::TrySendError::Closed(_)) => Offer::Dropped,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.kicked.store(true, Ordering::Release);
                self.kick.notify_one();
                Offer::Overflow
            }
        }
    }

    /// Resolves once the connection has been kicked as a slow consumer.
    pub async fn kicked(&self) {
        if self.kicked.load(Ordering::Acquire) {
            return;
        }
        self.kick.notified().await;
    }
}

/// The connections open on this node, by user.
#[derive(Debug)]
pub struct Hub {
    by_user: RwLock<HashMap<UserId, Vec<Arc<Connection>>>>,
    next_id: AtomicU64,
    shutdown: watch::Sender<bool>,
    resync: watch::Sender<u64>,
}

impl Default for Hub {
    fn default() -> Self {
        Self {
            by_user: RwLock::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            shutdown: watch::Sender::new(false),
            resync: watch::Sender::new(0),
        }
    }
}

impl Hub {
    /// A connection with an outbound queue of `capacity` frames, not yet attached to any
    /// user; the receiver is for its writer.
    pub fn connection(&self, capacity: usize) -> (Arc<Connection>, mpsc::Receiver<Outgoing>) {
        let (queue, receiver) = mpsc::channel(capacity.max(2));
        let connection = Arc::new(Connection {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            queue,
            kicked: AtomicBool::new(false),
            kick: Notify::new(),
        });
        (connection, receiver)
    }

    /// Makes `connection` receive `user`'s events from now on.
    pub fn attach(&self, user: UserId, connection: &Arc<Connection>) {
        let mut by_user = self
            .by_user
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        by_user
            .entry(user)
            .or_default()
            .push(Arc::clone(connection));
    }

    /// Makes `connection` receive `user`'s events from now on, unless `user` already has
    /// `max_per_user` connections on this node: then nothing changes and `false` is
    /// returned (the caller closes the connection). Counting and attaching happen under
    /// one lock, so racing connections cannot pass the cap. `first`, when given, is
    /// queued on the connection under that lock, before any event can reach it.
    pub fn try_attach(
        &self,
        user: UserId,
        connection: &Arc<Connection>,
        max_per_user: usize,
        first: Option<Outgoing>,
    ) -> bool {
        let mut by_user = self
            .by_user
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let list = by_user.entry(user).or_default();
        if list.len() >= max_per_user {
            if list.is_empty() {
                by_user.remove(&user);
            }
            return false;
        }
        if let Some(first) = first {
            connection.offer(first, false);
        }
        list.push(Arc::clone(connection));
        true
    }

    /// How many connections `user` has on this node.
    pub fn connections_of(&self, user: UserId) -> usize {
        self.by_user
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&user)
            .map_or(0, Vec::len)
    }

    /// Whether any of `users` has a connection on this node.
    pub fn any_connected(&self, users: &[UserId]) -> bool {
        let by_user = self
            .by_user
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        !by_user.is_empty() && users.iter().any(|user| by_user.contains_key(user))
    }

    /// Stops delivering to `connection` (idempotent).
    pub fn detach(&self, user: UserId, connection: &Connection) {
        let mut by_user = self
            .by_user
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(list) = by_user.get_mut(&user) {
            list.retain(|c| c.id != connection.id);
            if list.is_empty() {
                by_user.remove(&user);
            }
        }
    }

    /// Queues `event` on every connection of its recipients on this node, without waiting.
    /// A connection whose queue is full is kicked and detached at once.
    pub fn deliver(&self, event: &Frame) {
        let droppable = event.class == EventClass::Typing;
        let mut kicked: Vec<(UserId, Arc<Connection>)> = Vec::new();
        {
            let by_user = self
                .by_user
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut seen = HashSet::with_capacity(event.recipients.len());
            for user in &event.recipients {
                if !seen.insert(*user) {
                    continue;
                }
                for connection in by_user.get(user).into_iter().flatten() {
                    let item = Outgoing::Text(event.payload.clone());
                    if connection.offer(item, droppable) == Offer::Overflow {
                        kicked.push((*user, Arc::clone(connection)));
                    }
                }
            }
        }
        for (user, connection) in kicked {
            tracing::warn!(user = %user, connection = connection.id, "slow consumer kicked");
            self.detach(user, &connection);
        }
    }

    /// How many connections receive events on this node.
    pub fn connection_count(&self) -> usize {
        self.by_user
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .map(Vec::len)
            .sum()
    }

    /// Asks every connection, present and future, to close with 1001 (going away).
    pub fn shut_down(&self) {
        self.shutdown.send_replace(true);
    }

    /// Changes once [`Hub::shut_down`] has been called.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Asks every open connection to close with 1012 so that its client reconnects and
    /// catches up. Nothing in this version calls it for a Redis outage any more (durable
    /// events come from the change feed, not from Redis); it stays for whatever may make
    /// a node's connections miss events in the future.
    pub fn resync(&self) {
        self.resync.send_modify(|generation| *generation += 1);
    }

    /// Changes whenever [`Hub::resync`] is called.
    pub fn resync_signal(&self) -> watch::Receiver<u64> {
        self.resync.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use chat_domain::ConversationId;

    use super::*;

    fn user(id: i64) -> UserId {
        UserId::new(id).unwrap()
    }

    fn event(class: EventClass, recipients: Vec<UserId>, text: &str) -> Frame {
        Frame {
            conversation_id: ConversationId::new(),
            class,
            recipients,
            payload: ByteString::from(text.to_owned()),
        }
    }

    fn drain(receiver: &mut mpsc::Receiver<Outgoing>) -> Vec<Outgoing> {
        let mut out = Vec::new();
        while let Ok(item) = receiver.try_recv() {
            out.push(item);
        }
        out
    }

    fn text(s: &str) -> Outgoing {
        Outgoing::Text(ByteString::from(s.to_owned()))
    }

    #[test]
    fn delivers_to_every_connection_of_exactly_the_recipients() {
        let hub = Hub::default();
        let (a1, mut a1_rx) = hub.connection(8);
        let (a2, mut a2_rx) = hub.connection(8);
        let (b, mut b_rx) = hub.connection(8);
        let (c, mut c_rx) = hub.connection(8);
        hub.attach(user(1), &a1);
        hub.attach(user(1), &a2);
        hub.attach(user(2), &b);
        hub.attach(user(3), &c);
        hub.deliver(&event(
            EventClass::Ordered,
            vec![user(1), user(2), user(1)],
            "e",
        ));
        assert_eq!(drain(&mut a1_rx), vec![text("e")]);
        assert_eq!(drain(&mut a2_rx), vec![text("e")]);
        assert_eq!(drain(&mut b_rx), vec![text("e")]);
        assert_eq!(drain(&mut c_rx), vec![]);

        hub.detach(user(1), &a1);
        hub.deliver(&event(EventClass::Ordered, vec![user(1)], "f"));
        assert_eq!(drain(&mut a1_rx), vec![]);
        assert_eq!(drain(&mut a2_rx), vec![text("f")]);
        assert_eq!(hub.connection_count(), 3);
    }

    #[test]
    fn any_connected_answers_for_the_users_with_a_connection_here_only() {
        let hub = Hub::default();
        assert!(!hub.any_connected(&[user(1), user(2)]));
        let (c, _rx) = hub.connection(4);
        hub.attach(user(2), &c);
        assert!(hub.any_connected(&[user(1), user(2)]));
        assert!(!hub.any_connected(&[user(1), user(3)]));
        assert!(!hub.any_connected(&[]));
        hub.detach(user(2), &c);
        assert!(!hub.any_connected(&[user(2)]));
    }

    #[test]
    fn a_user_gets_at_most_the_cap_of_connections() {
        let hub = Hub::default();
        let mut kept = Vec::new();
        for _ in 0..3 {
            let (c, rx) = hub.connection(4);
            assert!(hub.try_attach(user(1), &c, 3, None));
            kept.push((c, rx));
        }
        let (fourth, _rx) = hub.connection(4);
        assert!(!hub.try_attach(user(1), &fourth, 3, None));
        assert_eq!(hub.connections_of(user(1)), 3);
        // Another user is not affected, and a closed connection frees a place.
        let (other, _other_rx) = hub.connection(4);
        assert!(hub.try_attach(user(2), &other, 3, None));
        hub.detach(user(1), &kept[0].0);
        assert!(hub.try_attach(user(1), &fourth, 3, None));
        let (none, mut none_rx) = hub.connection(4);
        assert!(!hub.try_attach(user(3), &none, 0, Some(text("ready"))));
        assert_eq!(hub.connections_of(user(3)), 0);
        assert_eq!(hub.connection_count(), 4);
        // `first` goes out only on an accepted attach, before any event.
        let (fifth, mut fifth_rx) = hub.connection(4);
        assert!(hub.try_attach(user(4), &fifth, 1, Some(text("ready"))));
        hub.deliver(&event(EventClass::Ordered, vec![user(4)], "e"));
        assert_eq!(drain(&mut fifth_rx), vec![text("ready"), text("e")]);
        assert_eq!(drain(&mut none_rx), vec![]);
    }

    #[test]
    fn typing_is_dropped_first_then_a_full_queue_kicks_only_its_connection() {
        let hub = Hub::default();
        let (slow, mut slow_rx) = hub.connection(4);
        let (fast, mut fast_rx) = hub.connection(4);
        hub.attach(user(1), &slow);
        hub.attach(user(2), &fast);
        let both = vec![user(1), user(2)];
        hub.deliver(&event(EventClass::Ordered, both.clone(), "m1"));
        hub.deliver(&event(EventClass::Ordered, both.clone(), "m2"));
        assert_eq!(drain(&mut fast_rx).len(), 2);
        // The slow queue is half full: typing is shed, messages still fit.
        hub.deliver(&event(EventClass::Typing, both.clone(), "t"));
        assert_eq!(drain(&mut fast_rx), vec![text("t")]);
        hub.deliver(&event(EventClass::Ordered, both.clone(), "m3"));
        hub.deliver(&event(EventClass::Ordered, both.clone(), "m4"));
        assert_eq!(drain(&mut fast_rx).len(), 2);
        assert_eq!(hub.connection_count(), 2);
        // Full: the next message kicks the slow connection and nobody else.
        hub.deliver(&event(EventClass::Ordered, both.clone(), "m5"));
        assert_eq!(drain(&mut fast_rx), vec![text("m5")]);
        assert_eq!(hub.connection_count(), 1);
        assert_eq!(
            drain(&mut slow_rx),
            vec![text("m1"), text("m2"), text("m3"), text("m4")]
        );
        assert_eq!(slow.offer(text("late"), false), Offer::Dropped);
        let kicked = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(async {
                tokio::time::timeout(std::time::Duration::from_secs(1), slow.kicked())
                    .await
                    .is_ok()
            });
        assert!(kicked);
    }
}
