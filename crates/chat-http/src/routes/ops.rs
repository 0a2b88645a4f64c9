//! Operational routes: liveness, readiness, metrics and the OpenAPI document.

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{ApiError, Problem};

/// The body of the health routes.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Health {
    /// `ok`.
    pub(crate) status: &'static str,
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive", body = Health)))]
pub(crate) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok" })
}

/// The body of `/readyz`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Ready {
    /// `ok`, or `degraded` when the store answers but the Redis bridge does not work in
    /// both directions (the node still serves REST and its own WebSockets).
    #[schema(example = "ok")]
    pub(crate) status: &'static str,
    /// The Redis bridge, when the node is part of a cluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) redis: Option<RedisReadiness>,
}

/// The Redis bridge's part of `/readyz`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RedisReadiness {
    /// `ok` or `degraded`.
    pub(crate) status: &'static str,
    /// Events from other nodes arrive.
    pub(crate) subscribed: bool,
    /// Events from this node reach the others.
    pub(crate) publishing: bool,
}

/// The store is reachable. Answers 200 while the store answers, even when the Redis bridge
/// is degraded (Redis only fans events out between nodes: taking the node out of the load
/// balancer would stop its REST service for nothing); the body says so.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready (`status` is `degraded` when the Redis bridge is)", body = Ready),
        (status = 503, description = "Not ready", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    match state.readiness.check().await {
        Ok(()) => {
            let redis = state
                .realtime
                .as_ref()
                .and_then(|realtime| realtime.fanout().bridge_status())
                .map(|bridge| RedisReadiness {
                    status: if bridge.healthy() { "ok" } else { "degraded" },
                    subscribed: bridge.subscribed,
                    publishing: bridge.publishing,
                });
            let degraded = redis.as_ref().is_some_and(|redis| redis.status != "ok");
            Ok(HttpResponse::Ok().json(Ready {
                status: if degraded { "degraded" } else { "ok" },
                redis,
            }))
        }
        Err(reason) => {
            tracing::warn!(%reason, "not ready");
            Err(chat_service::ServiceError::Unavailable.into())
        }
    }
}

/// Prometheus metrics, in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Metrics", body = String, content_type = "text/plain")))]
pub(crate) async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/plain; version=0.0.4"))
        .body(state.metrics.render())
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object)))]
pub(crate) async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(crate::openapi::document())
}
