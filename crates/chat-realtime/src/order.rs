//! Per-conversation ordering between the publishers and the hub. This node's durable
//! events come from its relay, which reads the change feed in commit order: they are
//! offered with [`Sequencer::offer_in_order`] and never held (a `seq` they skip belongs to
//! a message deleted before it was relayed, which will never come). Durable frames that
//! arrive over Redis come from nodes of an older version, whose publishers can overtake
//! each other: a `message.created` among them that arrives ahead of its predecessor is
//! held back ([`Sequencer::offer`]) for at most the reorder window, and every later event
//! of the same conversation waits behind it. The first `message.created` of a
//! conversation this node has no `seq` for goes out at once and becomes the baseline.
//! Typing events are never held.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chat_domain::ConversationId;
use tokio::time::Instant;

use crate::frame::{EventClass, Frame};
use crate::hub::Hub;

/// Lock shards, so that unrelated conversations rarely contend.
const SHARDS: usize = 16;
/// How often (in offers per shard) idle lanes are forgotten.
const PRUNE_EVERY: u64 = 4096;
/// How long an idle lane remembers its last `seq`.
const LANE_IDLE: Duration = Duration::from_secs(600);

/// Orders events per conversation and hands them to the hub.
#[derive(Debug)]
pub struct Sequencer {
    hub: Arc<Hub>,
    window: Duration,
    hasher: RandomState,
    shards: Box<[Mutex<Shard>]>,
}

#[derive(Debug, Default)]
struct Shard {
    lanes: HashMap<ConversationId, Lane>,
    offers: u64,
}

impl Shard {
    /// The lane of `conversation`, touched now; every [`PRUNE_EVERY`] offers, lanes idle
    /// for [`LANE_IDLE`] with nothing held are forgotten first.
    fn lane(&mut self, conversation: ConversationId, now: Instant) -> &mut Lane {
        self.offers += 1;
        if self.offers % PRUNE_EVERY == 0 {
            self.lanes
                .retain(|_, lane| !lane.held.is_empty() || lane.touched + LANE_IDLE > now);
        }
        let lane = self
            .lanes
            .entry(conversation)
            .or_insert_with(|| Lane::new(now));
        lane.touched = now;
        lane
    }
}

#[derive(Debug)]
struct Lane {
    /// The newest `message.created` seq delivered.
    last_seq: Option<i64>,
    /// Events waiting, in delivery order.
    held: VecDeque<Held>,
    touched: Instant,
    timer_armed: bool,
}

#[derive(Debug)]
struct Held {
    event: Arc<Frame>,
    since: Instant,
}

impl Lane {
    fn new(now: Instant) -> Self {
        Self {
            last_seq: None,
            held: VecDeque::new(),
            touched: now,
            timer_armed: false,
        }
    }

    /// Whether `event` may go out now: anything but a `message.created` that skips a seq.
    /// Without a baseline nothing is known to be missing: holding the first
    /// `message.created` would delay every conversation's first message (and every
    /// message after ten idle minutes) for the sake of a predecessor that, published by
    /// this node, has already gone out, so it goes out and becomes the baseline.
    fn releasable(&self, event: &Frame) -> bool {
        match (event.class, self.last_seq) {
            (EventClass::MessageCreated(seq), Some(last)) => seq <= last + 1,
            _ => true,
        }
    }

    fn advance(&mut self, event: &Frame) {
        if let EventClass::MessageCreated(seq) = event.class {
            self.last_seq = Some(self.last_seq.map_or(seq, |last| last.max(seq)));
        }
    }

    /// Queues `event`; a `message.created` goes before any held one with a greater seq.
    fn hold(&mut self, event: Arc<Frame>, now: Instant) {
        let position = match event.class {
            EventClass::MessageCreated(seq) => self.held.iter().position(
                |h| matches!(h.event.class, EventClass::MessageCreated(other) if other > seq),
            ),
            _ => None,
        };
        let held = Held { event, since: now };
        match position {
            Some(index) => self.held.insert(index, held),
            None => self.held.push_back(held),
        }
    }

    /// Delivers from the front what may go out, or has waited out the window.
    fn drain(&mut self, now: Instant, window: Duration, hub: &Hub) {
        while let Some(front) = self.held.front() {
            if !self.releasable(&front.event) && front.since + window > now {
                break;
            }
            if let Some(Held { event, .. }) = self.held.pop_front() {
                self.advance(&event);
                hub.deliver(&event);
            }
        }
    }
}

impl Sequencer {
    /// A sequencer in front of `hub` holding gaps for at most `window`.
    pub fn new(hub: Arc<Hub>, window: Duration) -> Arc<Self> {
        Arc::new(Self {
            hub,
            window,
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
        })
    }

    /// The hub events go to.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    fn shard(&self, conversation: ConversationId) -> MutexGuard<'_, Shard> {
        // The modulo keeps the index below SHARDS, so the cast cannot truncate.
        let index = (self.hasher.hash_one(conversation) % SHARDS as u64) as usize;
        self.shards[index]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Delivers `event` now, or after the events it must follow. Never waits: delivery
    /// itself only queues frames, and happens under the lane's lock so that two
    /// publishers cannot interleave one conversation's events.
    pub fn offer(self: &Arc<Self>, event: Arc<Frame>) {
        if event.class == EventClass::Typing {
            self.hub.deliver(&event);
            return;
        }
        let now = Instant::now();
        let conversation = event.conversation_id;
        let mut shard = self.shard(conversation);
        let lane = shard.lane(conversation, now);
        if lane.held.is_empty() && lane.releasable(&event) {
            lane.advance(&event);
            self.hub.deliver(&event);
            return;
        }
        lane.hold(event, now);
        lane.drain(now, self.window, &self.hub);
        self.arm(conversation, lane);
    }

    /// Delivers `event`, which its publisher hands over in commit order (this node's
    /// relay, reading the change feed): at once, never held for a `seq` it skips. When
    /// the lane already holds frames (an older node's, over Redis), it joins them as
    /// [`Sequencer::offer`] would, so that the conversation's order stays (and a
    /// `message.created` may fill the gap they wait for).
    pub fn offer_in_order(self: &Arc<Self>, event: Arc<Frame>) {
        if event.class == EventClass::Typing {
            self.hub.deliver(&event);
            return;
        }
        let now = Instant::now();
        let conversation = event.conversation_id;
        let mut shard = self.shard(conversation);
        let lane = shard.lane(conversation, now);
        if lane.held.is_empty() {
            lane.advance(&event);
            self.hub.deliver(&event);
            return;
        }
        lane.hold(event, now);
        lane.drain(now, self.window, &self.hub);
        self.arm(conversation, lane);
    }

    /// Delivers whatever of `conversation` has waited out the window.
    fn flush(self: &Arc<Self>, conversation: ConversationId) {
        let mut shard = self.shard(conversation);
        if let Some(lane) = shard.lanes.get_mut(&conversation) {
            lane.timer_armed = false;
            lane.drain(Instant::now(), self.window, &self.hub);
            self.arm(conversation, lane);
        }
    }

    /// Schedules a flush for when the front of a blocked lane has waited out the window.
    fn arm(self: &Arc<Self>, conversation: ConversationId, lane: &mut Lane) {
        let Some(front) = lane.held.front() else {
            return;
        };
        if lane.timer_armed {
            return;
        }
        let due = front.since + self.window;
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                lane.timer_armed = true;
                let this = Arc::clone(self);
                runtime.spawn(async move {
                    tokio::time::sleep_until(due).await;
                    this.flush(conversation);
                });
            }
            // Without a runtime nothing can wait: deliver what is held, in order.
            Err(_) => lane.drain(due, self.window, &self.hub),
        }
    }
}

#[cfg(test)]
mod tests {
    use bytestring::ByteString;
    use chat_domain::UserId;
    use tokio::sync::mpsc;

    use super::*;
    use crate::hub::Outgoing;

    struct Fixture {
        sequencer: Arc<Sequencer>,
        receiver: mpsc::Receiver<Outgoing>,
        _connection: Arc<crate::hub::Connection>,
        conversation: ConversationId,
    }

    fn fixture(window: Duration) -> Fixture {
        let hub = Arc::new(Hub::default());
        let (connection, receiver) = hub.connection(64);
        hub.attach(UserId::new(1).unwrap(), &connection);
        Fixture {
            sequencer: Sequencer::new(hub, window),
            receiver,
            _connection: connection,
            conversation: ConversationId::new(),
        }
    }

    impl Fixture {
        fn offer(&self, class: EventClass, name: &str) {
            self.offer_in(self.conversation, class, name);
        }

        fn offer_in(&self, conversation: ConversationId, class: EventClass, name: &str) {
            self.sequencer.offer(Arc::new(Frame {
                conversation_id: conversation,
                class,
                recipients: vec![UserId::new(1).unwrap()],
                payload: ByteString::from(name.to_owned()),
            }));
        }

        fn received(&mut self) -> Vec<String> {
            let mut out = Vec::new();
            while let Ok(Outgoing::Text(text)) = self.receiver.try_recv() {
                out.push(text.to_string());
            }
            out
        }
    }

    fn created(seq: i64) -> EventClass {
        EventClass::MessageCreated(seq)
    }

    /// Makes the lane know its last seq (`seq`), as after earlier traffic.
    async fn known(f: &mut Fixture, seq: i64) {
        f.offer(created(seq), "known");
        let first = tokio::time::timeout(Duration::from_secs(5), f.receiver.recv()).await;
        assert_eq!(
            first.unwrap(),
            Some(Outgoing::Text(ByteString::from_static("known")))
        );
    }

    #[tokio::test]
    async fn the_first_message_of_an_unknown_lane_goes_out_at_once_as_the_baseline() {
        let mut f = fixture(Duration::from_secs(60));
        f.offer(EventClass::Ordered, "created");
        f.offer(created(3), "m3");
        assert_eq!(f.received(), ["created", "m3"]);
        f.offer(created(4), "m4");
        f.offer(created(6), "m6");
        assert_eq!(f.received(), ["m4"]);
        f.offer(created(5), "m5");
        assert_eq!(f.received(), ["m5", "m6"]);
    }

    #[tokio::test]
    async fn in_order_events_pass_straight_through() {
        let mut f = fixture(Duration::from_secs(60));
        known(&mut f, 4).await;
        f.offer(created(5), "m5");
        f.offer(EventClass::Ordered, "r");
        f.offer(created(6), "m6");
        f.offer(created(6), "m6-again");
        f.offer(created(3), "m3-late");
        assert_eq!(f.received(), ["m5", "r", "m6", "m6-again", "m3-late"]);
    }

    #[tokio::test]
    async fn a_gap_holds_later_events_until_it_is_filled() {
        let mut f = fixture(Duration::from_secs(60));
        known(&mut f, 0).await;
        f.offer(created(1), "m1");
        f.offer(created(3), "m3");
        f.offer(EventClass::Ordered, "after-m3");
        f.offer(created(4), "m4");
        f.offer(EventClass::Typing, "typing");
        let other = ConversationId::new();
        f.offer_in(other, EventClass::Ordered, "other");
        assert_eq!(f.received(), ["m1", "typing", "other"]);
        f.offer(created(2), "m2");
        assert_eq!(f.received(), ["m2", "m3", "after-m3", "m4"]);
    }

    #[tokio::test]
    async fn a_gap_that_is_never_filled_is_skipped_after_the_window() {
        let mut f = fixture(Duration::from_millis(50));
        known(&mut f, 0).await;
        f.offer(created(1), "m1");
        f.offer(created(3), "m3");
        f.offer(created(4), "m4");
        assert_eq!(f.received(), ["m1"]);
        let text = tokio::time::timeout(Duration::from_secs(5), f.receiver.recv())
            .await
            .unwrap();
        assert_eq!(text, Some(Outgoing::Text(ByteString::from_static("m3"))));
        assert_eq!(f.received(), ["m4"]);
        f.offer(created(5), "m5");
        assert_eq!(f.received(), ["m5"]);
    }

    #[tokio::test]
    async fn events_in_commit_order_go_out_at_once_even_past_a_seq_gap() {
        let mut f = fixture(Duration::from_secs(60));
        let in_order = |f: &Fixture, class, name: &str| {
            f.sequencer.offer_in_order(Arc::new(Frame {
                conversation_id: f.conversation,
                class,
                recipients: vec![UserId::new(1).unwrap()],
                payload: ByteString::from(name.to_owned()),
            }));
        };
        in_order(&f, created(1), "m1");
        // m2 was deleted before it was relayed: m3 does not wait for it.
        in_order(&f, created(3), "m3");
        in_order(&f, EventClass::Ordered, "deleted-m2");
        assert_eq!(f.received(), ["m1", "m3", "deleted-m2"]);
        // Behind a frame held for its gap (an older node's, over Redis), the lane's order
        // stays: the in-order frame waits behind it, and one may fill the gap.
        f.offer(created(5), "m5-from-an-older-node");
        in_order(&f, created(6), "m6");
        assert!(f.received().is_empty(), "m6 waits behind the held m5");
        in_order(&f, created(4), "m4");
        assert_eq!(f.received(), ["m4", "m5-from-an-older-node", "m6"]);
    }

    #[tokio::test]
    async fn idle_lanes_are_forgotten_whichever_way_frames_come() {
        let f = fixture(Duration::from_millis(50));
        let lanes = |f: &Fixture| -> usize {
            f.sequencer
                .shards
                .iter()
                .map(|s| s.lock().unwrap().lanes.len())
                .sum()
        };
        for n in 0..100 {
            f.sequencer.offer_in_order(Arc::new(Frame {
                conversation_id: ConversationId::new(),
                class: created(n),
                recipients: vec![UserId::new(1).unwrap()],
                payload: ByteString::from_static("x"),
            }));
        }
        assert_eq!(lanes(&f), 100);
        // Ten minutes and more pass for these lanes.
        let long_ago = Instant::now()
            .checked_sub(LANE_IDLE + Duration::from_secs(1))
            .expect("the clock runs since more than ten minutes");
        for shard in &f.sequencer.shards {
            for lane in shard.lock().unwrap().lanes.values_mut() {
                lane.touched = long_ago;
            }
        }
        // A busy conversation in a shard that holds idle lanes: its offers prune that
        // shard (only the shard offered to prunes, and 100 lanes over 16 shards may leave
        // one empty, so the conversation is picked, not drawn).
        let shard_of =
            |c: ConversationId| (f.sequencer.hasher.hash_one(c) % SHARDS as u64) as usize;
        let idle_in = |index: usize| f.sequencer.shards[index].lock().unwrap().lanes.len();
        let one = std::iter::repeat_with(ConversationId::new)
            .find(|c| idle_in(shard_of(*c)) > 0)
            .unwrap();
        let shard = shard_of(one);
        let others = lanes(&f) - idle_in(shard);
        for _ in 0..PRUNE_EVERY {
            f.sequencer.offer_in_order(Arc::new(Frame {
                conversation_id: one,
                class: EventClass::Ordered,
                recipients: vec![UserId::new(1).unwrap()],
                payload: ByteString::from_static("y"),
            }));
        }
        assert_eq!(
            idle_in(shard),
            1,
            "the shard's idle lanes are forgotten, `one` stays"
        );
        assert_eq!(
            lanes(&f),
            others + 1,
            "the other shards are left as they were"
        );
    }
}
