//! Running the change feed in the process: the **relay**, which publishes every committed
//! change from the feed to this node's WebSockets (started at the feed's head, after the
//! store and the real-time transport; stopped after the HTTP drain, once it has published
//! everything committed), and the **retention purge**, which deletes changes older than
//! `CHAT_FEED_RETENTION` every minute (and at start), in small batches with a pause
//! between them so that writers never wait long.
//!
//! Every node runs both: each relay reads the shared log and delivers to its own
//! connections (durable events never travel over Redis), and the purges of several nodes
//! over one database only race to delete the same old rows, which the store allows.
//!
//! With metrics, a watch task sets every second the gauges `chat_feed_position{of="head"|
//! "floor"|"relayed"}`: the feed's newest and oldest kept positions and the relay's (the
//! relay's lag is `head - relayed`).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use chat_domain::FeedPos;
use chat_ports::{ChangeFeed, Clock, Purged, StoreError};
use chat_service::{ChatService, Relay, RelayHandle};
use prometheus::{IntGaugeVec, Opts, Registry};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How the change feed runs in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedSettings {
    /// How long each change is kept (`CHAT_FEED_RETENTION`).
    pub retention: Duration,
    /// Fault injection (`CHAT_FAULT_RELAY_START_DELAY`, hidden): the relay starts only
    /// after this delay, so that a test can kill the process between a commit and its
    /// publication. `None` in production.
    pub relay_start_delay: Option<Duration>,
}

/// The default retention: 14 days.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(14 * 86_400);

impl Default for FeedSettings {
    fn default() -> Self {
        Self {
            retention: DEFAULT_RETENTION,
            relay_start_delay: None,
        }
    }
}

/// How often the purge runs.
pub const PURGE_INTERVAL: Duration = Duration::from_secs(60);
/// Changes deleted per purge call (one short store operation).
pub const PURGE_BATCH: usize = 1000;
/// The pause between two purge batches, so that writers get the store in between.
pub const PURGE_PAUSE: Duration = Duration::from_millis(50);
/// The most purge calls of one run; a larger backlog (a retention just shortened) is
/// worked off over the next runs.
pub const PURGE_MAX_BATCHES: u64 = 1000;
/// How often the stop waits look at the relay's position.
const POLL: Duration = Duration::from_millis(10);
/// How often the gauges are set.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// The gauge `chat_feed_position{of="head"|"floor"|"relayed"}`.
#[derive(Debug, Clone)]
pub struct FeedGauges(IntGaugeVec);

impl FeedGauges {
    /// Registers the gauge in `registry`.
    ///
    /// # Errors
    /// A `prometheus` error when it cannot be registered.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let gauge = IntGaugeVec::new(
            Opts::new(
                "chat_feed_position",
                "Positions in the change feed: the newest (head), the oldest kept (floor), \
                 and the last this node's relay published (relayed)",
            ),
            &["of"],
        )?;
        registry.register(Box::new(gauge.clone()))?;
        Ok(Self(gauge))
    }

    fn set(&self, of: &str, pos: FeedPos) {
        self.0
            .with_label_values(&[of])
            .set(i64::try_from(pos.get()).unwrap_or(i64::MAX));
    }
}

/// The relay, the purge and the gauges of one application, started together and stopped
/// together.
pub struct FeedTasks {
    feed: Arc<dyn ChangeFeed>,
    relay: Arc<Mutex<Option<RelayHandle>>>,
    delayed_start: Option<JoinHandle<()>>,
    purge: JoinHandle<()>,
    watch: Option<JoinHandle<()>>,
    stop_tasks: watch::Sender<bool>,
}

impl FeedTasks {
    /// Starts the relay at the feed's head (now, or after the fault-injection delay), the
    /// purge (at once, then every [`PURGE_INTERVAL`]) and, with `gauges`, the task that
    /// sets them every [`WATCH_INTERVAL`].
    ///
    /// # Errors
    /// When the feed's head cannot be read.
    pub async fn start(
        service: Arc<ChatService>,
        feed: Arc<dyn ChangeFeed>,
        clock: Arc<dyn Clock>,
        settings: FeedSettings,
        gauges: Option<FeedGauges>,
    ) -> anyhow::Result<Self> {
        let head = feed
            .feed_bounds()
            .await
            .context("cannot read the change feed's head")?
            .head;
        let relay = Arc::new(Mutex::new(None));
        let delayed_start = match settings.relay_start_delay {
            None => {
                *lock(&relay) = Some(Relay::spawn(service, head));
                tracing::info!(from = %head, "relay started: committed changes are published from the feed");
                None
            }
            Some(delay) => {
                tracing::warn!(
                    ?delay,
                    "FAULT INJECTION (CHAT_FAULT_RELAY_START_DELAY): the relay starts late; \
                     committed changes are not published until then"
                );
                let slot = Arc::clone(&relay);
                Some(tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    *lock(&slot) = Some(Relay::spawn(service, head));
                    tracing::info!(from = %head, "relay started after the injected delay");
                }))
            }
        };
        let (stop_tasks, stopped) = watch::channel(false);
        let watch = gauges.map(|gauges| {
            tokio::spawn(watch_positions(
                Arc::clone(&feed),
                Arc::clone(&relay),
                gauges,
                stopped.clone(),
            ))
        });
        let purge = tokio::spawn(purge_periodically(
            Arc::clone(&feed),
            clock,
            settings.retention,
            stopped,
        ));
        Ok(Self {
            feed,
            relay,
            delayed_start,
            purge,
            watch,
            stop_tasks,
        })
    }

    /// Where the relay stands: every change at or below it has been published (`None`
    /// while its start is delayed).
    pub fn relay_position(&self) -> Option<FeedPos> {
        lock(&self.relay).as_ref().map(RelayHandle::position)
    }

    /// Stops the purge, lets the relay publish every change committed until now (at most
    /// `bound`), and stops it. Called once no request is in flight any more. Whether the
    /// relay caught up with the head in time.
    pub async fn stop(mut self, bound: Duration) -> bool {
        let deadline = Instant::now() + bound;
        self.stop_tasks.send_replace(true);
        if let Some(watch) = self.watch.take() {
            watch.abort();
        }
        if let Some(start) = self.delayed_start.take() {
            // A relay that has not started yet (fault injection) never will.
            start.abort();
        }
        let relay = lock(&self.relay).take();
        let caught_up = match relay {
            Some(relay) => {
                let caught_up = catch_up(&*self.feed, &relay, deadline).await;
                let position = relay.position();
                // Stopping finishes the batch in hand: bounded like the rest.
                let left = deadline.saturating_duration_since(Instant::now());
                let stopped = tokio::time::timeout(left.max(POLL), relay.stop())
                    .await
                    .is_ok();
                if caught_up && stopped {
                    tracing::info!(
                        %position,
                        "relay stopped: every committed change was published"
                    );
                } else {
                    tracing::warn!(
                        %position,
                        stopped,
                        "the relay did not publish every committed change before the \
                         shutdown timeout; clients catch up with their token"
                    );
                }
                caught_up && stopped
            }
            None => true,
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if tokio::time::timeout(left.max(POLL), &mut self.purge)
            .await
            .is_err()
        {
            self.purge.abort();
        }
        caught_up
    }
}

impl Drop for FeedTasks {
    /// An application dropped without running (a test's, or a start-up that failed later)
    /// leaves no task behind holding the store: the purge and a delayed relay start are
    /// cancelled, and the relay stops with its handle.
    fn drop(&mut self) {
        self.stop_tasks.send_replace(true);
        self.purge.abort();
        for task in [self.delayed_start.take(), self.watch.take()]
            .into_iter()
            .flatten()
        {
            task.abort();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Sets the gauges every [`WATCH_INTERVAL`] until `stopped`.
async fn watch_positions(
    feed: Arc<dyn ChangeFeed>,
    relay: Arc<Mutex<Option<RelayHandle>>>,
    gauges: FeedGauges,
    mut stopped: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => return,
            _ = tick.tick() => {}
        }
        if let Some(position) = lock(&relay).as_ref().map(RelayHandle::position) {
            gauges.set("relayed", position);
        }
        match feed.feed_bounds().await {
            Ok(bounds) => {
                gauges.set("head", bounds.head);
                gauges.set("floor", bounds.floor);
            }
            Err(err) => tracing::debug!(error = %err, "feed bounds unknown for the metrics"),
        }
    }
}

/// Waits until `relay` has published every change committed now, or `deadline`.
async fn catch_up(feed: &dyn ChangeFeed, relay: &RelayHandle, deadline: Instant) -> bool {
    let head = match tokio::time::timeout_at(deadline, feed.feed_bounds()).await {
        Ok(Ok(bounds)) => bounds.head,
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "the change feed's head is unknown at shutdown");
            return false;
        }
        Err(_) => return false,
    };
    loop {
        if relay.position() >= head {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// What one purge run deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PurgeRun {
    /// Entries deleted.
    pub deleted: u64,
    /// Purge calls (batches).
    pub batches: u64,
    /// The floor after the run.
    pub floor: FeedPos,
}

/// Deletes every change committed before `now - retention`: [`ChangeFeed::purge`] with
/// `batch` entries at a time ([`PURGE_BATCH`] in production), again while it says there
/// are more (at most [`PURGE_MAX_BATCHES`] calls), pausing `pause` between two calls.
///
/// # Errors
/// The store's error; what was deleted before it stays deleted.
pub async fn purge_expired(
    feed: &dyn ChangeFeed,
    clock: &dyn Clock,
    retention: Duration,
    batch: usize,
    pause: Duration,
) -> Result<PurgeRun, StoreError> {
    let older_than = clock.now() - retention;
    let mut run = PurgeRun::default();
    loop {
        let Purged {
            floor,
            deleted,
            more,
        } = feed.purge(older_than, batch).await?;
        run.deleted += deleted;
        run.batches += 1;
        run.floor = floor;
        if !more || run.batches >= PURGE_MAX_BATCHES {
            return Ok(run);
        }
        tokio::time::sleep(pause).await;
    }
}

/// Runs [`purge_expired`] at once and then every [`PURGE_INTERVAL`] until `stopped`.
async fn purge_periodically(
    feed: Arc<dyn ChangeFeed>,
    clock: Arc<dyn Clock>,
    retention: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(PURGE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => return,
            _ = tick.tick() => {}
        }
        let run = tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => return,
            run = purge_expired(&*feed, &*clock, retention, PURGE_BATCH, PURGE_PAUSE) => run,
        };
        match run {
            Ok(run) if run.deleted > 0 => tracing::info!(
                deleted = run.deleted,
                batches = run.batches,
                floor = %run.floor,
                "change feed purged past its retention"
            ),
            Ok(run) => tracing::debug!(floor = %run.floor, "nothing to purge from the change feed"),
            Err(err) => tracing::warn!(
                error = %err,
                "purging the change feed failed; trying again in a minute"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use async_trait::async_trait;
    use chat_domain::{Delivery, Timestamp, UserId};
    use chat_memory::MemoryStore;
    use chat_ports::{EventPublisher, PublishError};
    use chat_service::{ActionRates, Limits, Ports, Rate};

    use super::*;

    /// Remembers the position of every delivery published.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<FeedPos>>);

    #[async_trait]
    impl EventPublisher for Recorder {
        async fn publish(&self, delivery: Delivery) -> Result<(), PublishError> {
            if let Some(pos) = delivery.pos {
                lock(&self.0).push(pos);
            }
            Ok(())
        }
    }

    /// A clock that says what the test says.
    struct FixedClock(Timestamp);

    impl Clock for FixedClock {
        fn now(&self) -> Timestamp {
            self.0
        }
    }

    fn uid(id: i64) -> UserId {
        UserId::new(id).unwrap()
    }

    /// A service over a fresh in-memory store, publishing to a recorder.
    async fn service() -> (Arc<ChatService>, Arc<MemoryStore>, Arc<Recorder>) {
        let store = Arc::new(MemoryStore::new());
        let recorder = Arc::new(Recorder::default());
        let lots = NonZeroU32::new(100_000).unwrap();
        let service = Arc::new(ChatService::with_limits(
            Ports::from_store(store.clone()).with_events(recorder.clone()),
            Limits {
                sends_per_second: lots,
                send_burst: lots,
                rates: ActionRates::uniform(Rate::per_second(lots, lots)),
                ..Limits::default()
            },
        ));
        (service, store, recorder)
    }

    /// `count` direct conversations opened by user 1: changes in the feed.
    async fn changes(service: &ChatService, store: &MemoryStore, count: i64) -> FeedPos {
        use chat_ports::UserDirectory as _;
        for other in 2..2 + count {
            store.upsert_user(uid(1), None).await.unwrap();
            store.upsert_user(uid(other), None).await.unwrap();
            service.open_direct(uid(1), uid(other)).await.unwrap();
        }
        store.feed_bounds().await.unwrap().head
    }

    #[tokio::test]
    async fn the_purge_deletes_what_is_older_than_the_retention_in_batches_and_nothing_newer() {
        let (service, store, _) = service().await;
        let head = changes(&service, &store, 5).await;
        assert!(head.get() >= 5, "{head}");
        let now = chat_ports::SystemClock.now();
        let retention = Duration::from_secs(3600);

        // Everything is younger than the retention: nothing goes.
        let run = purge_expired(&*store, &FixedClock(now), retention, 2, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(run.deleted, 0);
        assert_eq!(
            store.changes_after(FeedPos::ZERO, 100).await.unwrap().len() as u64,
            head.get()
        );

        // An hour and a day later everything is older: deleted 2 at a time, floor = head.
        let later = now + Duration::from_secs(90_000);
        let run = purge_expired(&*store, &FixedClock(later), retention, 2, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(run.deleted, head.get());
        assert_eq!(run.batches, head.get().div_ceil(2), "batches of 2");
        assert_eq!(run.floor, head);
        let bounds = store.feed_bounds().await.unwrap();
        assert_eq!((bounds.floor, bounds.head), (head, head));
        assert!(
            store
                .changes_after(FeedPos::ZERO, 100)
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn stopping_publishes_every_committed_change_first() {
        let (service, store, recorder) = service().await;
        let before = changes(&service, &store, 2).await;
        let tasks = FeedTasks::start(
            service.clone(),
            store.clone(),
            Arc::new(chat_ports::SystemClock),
            FeedSettings::default(),
            None,
        )
        .await
        .unwrap();
        assert_eq!(tasks.relay_position(), Some(before), "starts at the head");
        let head = changes(&service, &store, 40).await;
        assert!(
            tasks.stop(Duration::from_secs(10)).await,
            "caught up in time"
        );
        let published = lock(&recorder.0).clone();
        let expected: Vec<FeedPos> = (before.get() + 1..=head.get()).map(FeedPos::new).collect();
        assert_eq!(
            published, expected,
            "every change after the start, once, in order"
        );
    }

    #[tokio::test]
    async fn dropped_tasks_release_the_store() {
        let (service, store, _) = service().await;
        let tasks = FeedTasks::start(
            service.clone(),
            store.clone(),
            Arc::new(chat_ports::SystemClock),
            FeedSettings {
                relay_start_delay: Some(Duration::from_secs(3600)),
                ..FeedSettings::default()
            },
            None,
        )
        .await
        .unwrap();
        let held = Arc::strong_count(&store);
        drop(tasks);
        drop(service);
        // The aborted tasks drop what they held once the runtime has run them down.
        for _ in 0..100 {
            if Arc::strong_count(&store) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(Arc::strong_count(&store), 1, "was {held}");
    }

    #[tokio::test]
    async fn a_delayed_relay_publishes_nothing_until_its_delay_and_stops_cleanly() {
        let (service, store, recorder) = service().await;
        let tasks = FeedTasks::start(
            service.clone(),
            store.clone(),
            Arc::new(chat_ports::SystemClock),
            FeedSettings {
                relay_start_delay: Some(Duration::from_secs(3600)),
                ..FeedSettings::default()
            },
            None,
        )
        .await
        .unwrap();
        changes(&service, &store, 3).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(tasks.relay_position(), None);
        assert!(tasks.stop(Duration::from_secs(1)).await);
        assert!(lock(&recorder.0).is_empty(), "nothing published");
    }

    #[tokio::test]
    async fn the_gauges_show_the_head_the_floor_and_the_relays_position() {
        let (service, store, _) = service().await;
        let registry = Registry::new();
        let gauges = FeedGauges::register(&registry).unwrap();
        let tasks = FeedTasks::start(
            service.clone(),
            store.clone(),
            Arc::new(chat_ports::SystemClock),
            FeedSettings::default(),
            Some(gauges.clone()),
        )
        .await
        .unwrap();
        let head = changes(&service, &store, 3).await;
        let value = |of: &str| gauges.0.with_label_values(&[of]).get();
        let expected = i64::try_from(head.get()).unwrap();
        for _ in 0..500 {
            if value("head") == expected && value("relayed") == expected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!((value("head"), value("relayed")), (expected, expected));
        assert_eq!(value("floor"), 0);
        let text = {
            use prometheus::Encoder as _;
            let mut buffer = Vec::new();
            prometheus::TextEncoder::new()
                .encode(&registry.gather(), &mut buffer)
                .unwrap();
            String::from_utf8(buffer).unwrap()
        };
        assert!(
            text.contains(&format!("chat_feed_position{{of=\"relayed\"}} {expected}")),
            "{text}"
        );
        assert!(tasks.stop(Duration::from_secs(5)).await);
    }
}
