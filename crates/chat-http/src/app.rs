//! Building the actix application: the shared [`AppState`], the route table
//! ([`configure`]), and the server with its middleware, limits and graceful shutdown
//! ([`serve`]). The real-time transport adds its `/api/v1/ws` route from its own module
//! through [`configure`].

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_cors::Cors;
use actix_web::dev::Server;
use actix_web::http::{Method, header};
use actix_web::middleware::{ErrorHandlers, from_fn};
use actix_web::{App, HttpServer, web};
use chat_service::ChatService;

use crate::auth::Authenticator;
use crate::drain::Drain;
use crate::error::{ApiError, ensure_problem, json_error, path_error, query_error};
use crate::metrics::Metrics;
use crate::readiness::Readiness;
use crate::routes::{conversations, messages, ops, sync};
use crate::telemetry::observe;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The use cases.
    pub service: Arc<ChatService>,
    /// Token verification and user provisioning.
    pub auth: Arc<Authenticator>,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// Whether the store answers.
    pub readiness: Arc<dyn Readiness>,
    /// The real-time transport behind `/api/v1/ws` (also the service's event publisher);
    /// without it the endpoint answers 404.
    pub realtime: Option<Arc<crate::realtime::Realtime>>,
    /// Development tokens (`chatd serve --dev`): with them `POST /api/v1/dev/token`
    /// mints a token for any user; without them that route does not exist.
    pub dev_tokens: Option<crate::web::DevTokens>,
}

/// How the server runs.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Browser origins allowed to call the API (`*` for any); empty for none.
    pub allowed_origins: Vec<String>,
    /// Worker threads (default: one per core).
    pub workers: Option<usize>,
    /// How long, after a shutdown signal, the server waits for the requests in flight to
    /// be answered and the WebSockets to close before it stops anyway.
    pub shutdown_timeout: Duration,
    /// Whether SIGINT/SIGTERM stop the server (off in tests that run many servers).
    pub handle_signals: bool,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            allowed_origins: Vec::new(),
            workers: None,
            shutdown_timeout: Duration::from_secs(10),
            handle_signals: true,
        }
    }
}

/// Registers the shared state, the extractor limits and error handlers, and every route
/// (the browser client at `/` included).
pub fn configure(cfg: &mut web::ServiceConfig, state: &AppState) {
    cfg.app_data(web::Data::new(state.clone()))
        .app_data(
            web::JsonConfig::default()
                .limit(crate::MAX_BODY_BYTES)
                .content_type_required(false)
                .error_handler(json_error),
        )
        .app_data(web::PayloadConfig::new(crate::MAX_BODY_BYTES))
        .app_data(web::PathConfig::default().error_handler(path_error))
        .app_data(web::QueryConfig::default().error_handler(query_error))
        .service(web::resource("/healthz").route(web::get().to(ops::healthz)))
        .service(web::resource("/readyz").route(web::get().to(ops::readyz)))
        .service(web::resource("/metrics").route(web::get().to(ops::metrics)))
        .configure(crate::web::routes)
        .service(web::scope("/api/v1").configure(|cfg| {
            crate::web::dev_routes(cfg, state);
            api_routes(cfg);
        }));
}

/// The `/api/v1` routes.
fn api_routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/openapi.json").route(web::get().to(ops::openapi)))
        .configure(crate::ws::routes)
        .service(
            web::resource("/conversations")
                .route(web::get().to(conversations::list))
                .route(web::post().to(conversations::create)),
        )
        .service(
            web::resource("/conversations/direct")
                .route(web::post().to(conversations::open_direct)),
        )
        .service(
            web::resource("/conversations/{id}")
                .route(web::get().to(conversations::show))
                .route(web::patch().to(conversations::update)),
        )
        .service(
            web::resource("/conversations/{id}/participants")
                .route(web::post().to(conversations::add_participants)),
        )
        .service(
            web::resource("/conversations/{id}/participants/{user_id}")
                .route(web::delete().to(conversations::remove_participant))
                .route(web::patch().to(conversations::change_role)),
        )
        .service(
            web::resource("/conversations/{id}/membership")
                .route(web::patch().to(conversations::set_membership)),
        )
        .service(
            web::resource("/conversations/{id}/read")
                .route(web::post().to(conversations::mark_read)),
        )
        .service(
            web::resource("/conversations/{id}/messages")
                .route(web::get().to(messages::history))
                .route(web::post().to(messages::send)),
        )
        .service(
            web::resource("/messages/{id}")
                .route(web::get().to(messages::show))
                .route(web::patch().to(messages::edit))
                .route(web::delete().to(messages::delete)),
        )
        .service(
            web::resource("/messages/{id}/reactions/{emoji}")
                .route(web::put().to(messages::add_reaction))
                .route(web::delete().to(messages::remove_reaction)),
        )
        .service(web::resource("/messages/{id}/receipts").route(web::get().to(messages::receipts)))
        .service(web::resource("/unread").route(web::get().to(conversations::unread)))
        .service(web::resource("/sync").route(web::get().to(sync::sync)));
}

fn cors(origins: &[String]) -> Cors {
    let cors = Cors::default()
        .allowed_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allowed_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            crate::telemetry::REQUEST_ID,
        ])
        .expose_headers([crate::telemetry::REQUEST_ID, header::RETRY_AFTER])
        .max_age(600);
    if origins.iter().any(|o| o == "*") {
        cors.allow_any_origin()
    } else {
        origins
            .iter()
            .fold(cors, |cors, origin| cors.allowed_origin(origin))
            // The WebSocket endpoint checks origins itself and answers 403.
            .allowed_origin_fn(|_, head| head.uri.path() == crate::ws::PATH)
    }
}

/// Starts serving on `listener`; the returned server runs until it is stopped or, when
/// `settings.handle_signals`, until SIGINT or SIGTERM, after which it drains
/// ([`crate::drain`]: new requests `503`, WebSockets closed with 1001, the requests in
/// flight answered and the close handshakes done, within `settings.shutdown_timeout`)
/// and then stops, dropping the connections left (idle keep-alive ones).
///
/// # Errors
/// An I/O error when the listener cannot be used.
pub fn serve(
    listener: TcpListener,
    state: AppState,
    settings: HttpSettings,
) -> std::io::Result<Server> {
    let origins = settings.allowed_origins.clone();
    let realtime = state.realtime.clone();
    let drain = Drain::default();
    let gate_state = web::Data::new(drain.clone());
    let mut server = HttpServer::new(move || {
        let state = state.clone();
        App::new()
            .app_data(gate_state.clone())
            .wrap(ErrorHandlers::new().default_handler(ensure_problem))
            .wrap(cors(&origins))
            .wrap(from_fn(observe))
            .wrap(from_fn(crate::drain::gate))
            .configure(|cfg| configure(cfg, &state))
            .default_service(web::to(|| async {
                Err::<web::Json<()>, _>(ApiError::RouteNotFound)
            }))
    })
    .shutdown_timeout(settings.shutdown_timeout.as_secs())
    .listen(listener)?;
    if let Some(workers) = settings.workers {
        server = server.workers(workers);
    }
    // Signals are handled here, not by actix: drain first, then stop (see `drain`).
    let server = server.disable_signals().run();
    if settings.handle_signals {
        crate::drain::stop_on_signal(drain, server.handle(), realtime, settings.shutdown_timeout);
    }
    Ok(server)
}
