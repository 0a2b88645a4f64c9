//! [`Application`]: the one place the server is put together from an [`AppConfig`] and a
//! [`Storage`]: the real-time transport, the service over the ports, the change feed's
//! relay and purge ([`crate::feed`]), the HTTP adapter, bound to its address. `chatd serve` runs it; every black-box test builds its servers
//! with it too (the `spawn_app()` pattern), so tests run the wiring production runs.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use anyhow::Context as _;
use chat_http::{
    AppState, AuthConfig, Authenticator, DevTokens, HttpSettings, Metrics, Realtime, WsConfig,
};
use chat_realtime::{Fanout, RealtimeSettings};
use chat_service::{ChatService, Limits};

pub use crate::feed::FeedSettings;
use crate::feed::{FeedGauges, FeedTasks};
use crate::storage::Storage;

/// What an application is built from (`chatd serve` resolves it from flags and the
/// environment; tests write it).
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// Where to listen (port 0 for any free port).
    pub bind: Vec<SocketAddr>,
    /// Token verification.
    pub auth: AuthConfig,
    /// Server settings.
    pub http: HttpSettings,
    /// The service's limits.
    pub limits: Limits,
    /// WebSocket limits and timings.
    pub ws: WsConfig,
    /// The real-time transport: ordering and, in a cluster, Redis.
    pub realtime: RealtimeSettings,
    /// Development tokens (`--dev` only): the browser client signs in through
    /// `POST /api/v1/dev/token`, which does not exist when this is `None`.
    pub dev_tokens: Option<DevTokens>,
    /// The change feed's retention and the relay's fault injection.
    pub feed: FeedSettings,
}

/// A built application, bound and ready to run.
pub struct Application {
    address: SocketAddr,
    server: Server,
    service: Arc<ChatService>,
    realtime: Arc<Realtime>,
    metrics: Arc<Metrics>,
    /// The relay and the purge, stopped after the server (the relay once it has published
    /// every committed change), within the HTTP shutdown timeout.
    feed: FeedTasks,
    /// Shut down after the server stops, within the HTTP shutdown timeout.
    storage: Storage,
    shutdown_timeout: std::time::Duration,
}

impl Application {
    /// Starts the real-time transport (bridged over Redis when configured, which need not
    /// answer yet), puts the service over `storage`'s ports, starts the relay at the change
    /// feed's head (from then on every committed change is published from the feed to this
    /// node's connections) and the feed's purge, and binds the HTTP server. Nothing is
    /// served until [`Application::run_until_stopped`].
    ///
    /// # Errors
    /// When the Redis URL is invalid (an unreachable Redis is not an error: the bridge
    /// joins when it answers), the change feed's head cannot be read, the metrics cannot
    /// be registered, or the address cannot be bound.
    pub async fn build(config: AppConfig, storage: Storage) -> anyhow::Result<Self> {
        let stored = storage.clone();
        let fanout = Fanout::start(&config.realtime)
            .await
            .context("the Redis URL (REDIS_URL) is invalid")?;
        let realtime = Realtime::new(config.ws.clone(), fanout.clone());
        let service = Arc::new(ChatService::with_limits(
            storage.ports.clone().with_events(realtime.clone()),
            config.limits,
        ));
        prune_rate_limiters_periodically(Arc::downgrade(&service));
        // Before the server takes a request: the relay starts at the head, so every
        // change committed through this node from now on is published.
        let metrics = Metrics::new()?;
        let gauges = FeedGauges::register(metrics.registry())?;
        let feed = FeedTasks::start(
            service.clone(),
            storage.ports.feed.clone(),
            storage.ports.clock.clone(),
            config.feed,
            Some(gauges),
        )
        .await?;
        let shutdown_timeout = config.http.shutdown_timeout;
        let bound = match bind(config, &storage, &service, &realtime, fanout, metrics) {
            Ok(bound) => bound,
            Err(err) => {
                feed.stop(shutdown_timeout).await;
                return Err(err);
            }
        };
        Ok(Self {
            address: bound.address,
            server: bound.server,
            service,
            realtime,
            metrics: bound.metrics,
            feed,
            storage: stored,
            shutdown_timeout,
        })
    }

    /// The address the server is bound to.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Stops the server when asked (`stop(true)` for a graceful stop).
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// The use cases, as the HTTP handlers call them.
    pub fn service(&self) -> &Arc<ChatService> {
        &self.service
    }

    /// The real-time side: its hub and its transport.
    pub fn realtime(&self) -> &Arc<Realtime> {
        &self.realtime
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Serves until the server is stopped through its [`handle`](Self::handle) or, when
    /// the HTTP settings handle signals, until SIGINT or SIGTERM; then the HTTP side
    /// drains (`chat_http::drain`: every WebSocket closed with 1001, the requests in
    /// flight answered). Once the server has stopped (no request in flight), the relay
    /// publishes every change committed until then and stops, then the store is shut down
    /// (its queued and in-flight sends finished and answered), each within the HTTP
    /// shutdown timeout: the caller's runtime, which runs the store's workers, must not
    /// stop before this returns.
    ///
    /// # Errors
    /// When the server fails.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let served = self.server.await;
        if !self.feed.stop(self.shutdown_timeout).await {
            tracing::warn!("the relay did not publish every committed change before stopping");
        }
        if !self.storage.shut_down(self.shutdown_timeout).await {
            tracing::warn!("the store did not finish its work within the shutdown timeout");
        }
        served
    }
}

/// A server bound by [`Application::build`], with its metrics.
struct Bound {
    address: SocketAddr,
    server: Server,
    metrics: Arc<Metrics>,
}

/// Completes the metrics, puts the HTTP state together and binds the server.
fn bind(
    config: AppConfig,
    storage: &Storage,
    service: &Arc<ChatService>,
    realtime: &Arc<Realtime>,
    fanout: Arc<Fanout>,
    mut metrics: Metrics,
) -> anyhow::Result<Bound> {
    let users = storage.ports.users.clone();
    if let Some(probe) = storage.pool.clone() {
        metrics = metrics.with_pool(probe)?;
    }
    if fanout.bridge().is_some() {
        metrics = metrics.with_bridge(Arc::new(move || fanout.bridge_status()))?;
    }
    let metrics = Arc::new(metrics);
    let state = AppState {
        service: service.clone(),
        auth: Arc::new(Authenticator::new(config.auth, users)),
        metrics: metrics.clone(),
        readiness: storage.readiness.clone(),
        realtime: Some(realtime.clone()),
        dev_tokens: config.dev_tokens,
    };
    let listener = TcpListener::bind(&config.bind[..])
        .with_context(|| format!("cannot listen on {:?}", config.bind))?;
    let address = listener.local_addr()?;
    let server = chat_http::serve(listener, state, config.http)?;
    Ok(Bound {
        address,
        server,
        metrics,
    })
}

/// How often the per-user rate limiters forget users whose budget is full again.
const RATE_LIMITER_PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// Prunes the service's rate-limiter maps on a timer, for as long as the service lives.
fn prune_rate_limiters_periodically(service: std::sync::Weak<ChatService>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(RATE_LIMITER_PRUNE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(service) = service.upgrade() else {
                return;
            };
            let remaining = service.prune_rate_limiters();
            tracing::debug!(remaining, "rate limiters pruned");
        }
    });
}
