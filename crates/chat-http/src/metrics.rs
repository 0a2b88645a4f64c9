//! Prometheus metrics: requests and latency by route pattern and status, open WebSockets,
//! messages sent and, when a database pool is plugged in, its usage; in a cluster, the
//! state of the Redis bridge.

use std::sync::Arc;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// A snapshot of a connection pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolUsage {
    /// Open connections.
    pub size: u32,
    /// Open connections not in use.
    pub idle: u32,
    /// The most connections the pool may open.
    pub max: u32,
}

/// Reads a pool's usage at scrape time.
pub type PoolProbe = Arc<dyn Fn() -> PoolUsage + Send + Sync>;

/// Reads the Redis bridge's state at scrape time.
pub type BridgeProbe = Arc<dyn Fn() -> Option<chat_realtime::BridgeStatus> + Send + Sync>;

/// The bridge's gauges (up or not, by direction) and counters (by kind of trouble).
struct BridgeMetrics {
    up: IntGaugeVec,
    events: IntCounterVec,
    probe: BridgeProbe,
}

/// The service's metrics and their registry.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    open_websockets: IntGauge,
    messages_sent: IntCounter,
    pool: Option<(IntGaugeVec, PoolProbe)>,
    bridge: Option<BridgeMetrics>,
}

impl Metrics {
    /// Fresh metrics in their own registry.
    ///
    /// # Errors
    /// A `prometheus` error when a metric cannot be registered.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests answered"),
            &["method", "route", "status"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "Time to answer an HTTP request",
            ),
            &["method", "route", "status"],
        )?;
        let open_websockets = IntGauge::new("chat_websockets_open", "Open WebSocket connections")?;
        let messages_sent = IntCounter::new("chat_messages_sent_total", "Messages sent")?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(open_websockets.clone()))?;
        registry.register(Box::new(messages_sent.clone()))?;
        Ok(Self {
            registry,
            requests,
            latency,
            open_websockets,
            messages_sent,
            pool: None,
            bridge: None,
        })
    }

    /// Adds gauges of a database pool, read from `probe` at each scrape.
    ///
    /// # Errors
    /// A `prometheus` error when the gauges cannot be registered.
    pub fn with_pool(mut self, probe: PoolProbe) -> Result<Self, prometheus::Error> {
        let gauges = IntGaugeVec::new(
            Opts::new(
                "chat_db_pool_connections",
                "Database pool connections by state",
            ),
            &["state"],
        )?;
        self.registry.register(Box::new(gauges.clone()))?;
        self.pool = Some((gauges, probe));
        Ok(self)
    }

    /// Adds the Redis bridge's metrics, read from `probe` at each scrape:
    /// `chat_redis_bridge_up{direction="subscribe"|"publish"}` (1 or 0) and
    /// `chat_redis_bridge_events_total{event="dropped"|"gap"|"subscription_lost"}`.
    ///
    /// # Errors
    /// A `prometheus` error when the metrics cannot be registered.
    pub fn with_bridge(mut self, probe: BridgeProbe) -> Result<Self, prometheus::Error> {
        let up = IntGaugeVec::new(
            Opts::new(
                "chat_redis_bridge_up",
                "Whether the Redis bridge works, by direction (1 up, 0 down)",
            ),
            &["direction"],
        )?;
        let events = IntCounterVec::new(
            Opts::new(
                "chat_redis_bridge_events_total",
                "Troubles of the Redis bridge (typing only): frames dropped before Redis, gaps \
                 seen in other nodes' sequences, subscriptions lost",
            ),
            &["event"],
        )?;
        self.registry.register(Box::new(up.clone()))?;
        self.registry.register(Box::new(events.clone()))?;
        self.bridge = Some(BridgeMetrics { up, events, probe });
        Ok(self)
    }

    /// Records one answered request.
    pub fn observe_request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let status = status.to_string();
        let labels = [method, route, status.as_str()];
        self.requests.with_label_values(&labels).inc();
        self.latency.with_label_values(&labels).observe(seconds);
    }

    /// Counts a sent message.
    pub fn message_sent(&self) {
        self.messages_sent.inc();
    }

    /// The gauge of open WebSocket connections (for the real-time transport).
    pub fn open_websockets(&self) -> &IntGauge {
        &self.open_websockets
    }

    /// The registry, for adding metrics of other components.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        if let Some((gauges, probe)) = &self.pool {
            let usage = probe();
            gauges
                .with_label_values(&["open"])
                .set(i64::from(usage.size));
            gauges
                .with_label_values(&["idle"])
                .set(i64::from(usage.idle));
            gauges
                .with_label_values(&["in_use"])
                .set(i64::from(usage.size.saturating_sub(usage.idle)));
            gauges.with_label_values(&["max"]).set(i64::from(usage.max));
        }
        if let Some(bridge) = &self.bridge {
            if let Some(status) = (bridge.probe)() {
                bridge
                    .up
                    .with_label_values(&["subscribe"])
                    .set(i64::from(status.subscribed));
                bridge
                    .up
                    .with_label_values(&["publish"])
                    .set(i64::from(status.publishing));
                for (event, total) in [
                    ("dropped", status.events_dropped),
                    ("gap", status.gaps_detected),
                    ("subscription_lost", status.subscriptions_lost),
                ] {
                    let counter = bridge.events.with_label_values(&[event]);
                    counter.inc_by(total.saturating_sub(counter.get()));
                }
            }
        }
        let mut buffer = Vec::new();
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::warn!(error = %err, "metrics not encoded");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}
