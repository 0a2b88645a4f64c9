//! `GET /api/v1/sync`: the changes a caller missed since a sync token, oldest first, each
//! exactly as its WebSocket frame shows it, with its feed position `pos`.

use actix_web::{HttpResponse, web};
use chat_service::SyncLimit;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::auth::AuthUser;
use crate::error::{ApiError, FieldError, Problem};
use crate::realtime::frame;
use crate::sync_token;

/// The default page size of sync.
pub(crate) const DEFAULT_SYNC_LIMIT: i64 = 100;

/// The query of `GET /sync`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct SyncParams {
    /// The token of the last sync (`next`), of a WebSocket `ready`, or kept current with
    /// each event's `pos`; without it, no events and the current token.
    since: Option<String>,
    /// Page size, 1 to 500 (default 100).
    limit: Option<i64>,
}

/// A page of changes.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SyncPageOut {
    /// The changes, oldest first: each the JSON of its WebSocket frame (`type` plus
    /// payload, `docs/websocket.md` §3) with its position `pos`.
    #[schema(value_type = Vec<Object>)]
    events: Vec<serde_json::Value>,
    /// The token to send as `since` next time (and to resume a WebSocket with).
    next: String,
    /// Whether more changes are waiting: ask again at once with `next`.
    has_more: bool,
}

/// The changes the caller may see since `since`.
#[utoipa::path(
    get, path = "/api/v1/sync", tag = "sync",
    params(SyncParams),
    responses(
        (status = 200, description = "A page of changes", body = SyncPageOut),
        (status = 400, description = "A malformed `since` or a `limit` out of range (`validation_failed`)", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "The token is older than the retention or from another deployment (`sync_token_expired`): reload and start again without `since`", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn sync(
    state: web::Data<AppState>,
    AuthUser(actor): AuthUser,
    params: web::Query<SyncParams>,
) -> Result<HttpResponse, ApiError> {
    let params = params.into_inner();
    let mut errors = Vec::new();
    let limit = SyncLimit::new(params.limit.unwrap_or(DEFAULT_SYNC_LIMIT))
        .map_err(|e| errors.push(FieldError::from(e)))
        .ok();
    let since = match params.since.map(|text| sync_token::decode("since", &text)) {
        Some(Err(ApiError::Validation(refused))) => {
            errors.extend(refused);
            None
        }
        Some(Err(other)) => return Err(other),
        Some(Ok(token)) => Some(token),
        None => None,
    };
    let Some(limit) = limit.filter(|_| errors.is_empty()) else {
        return Err(ApiError::Validation(errors));
    };
    let page = state.service.sync(actor, since, limit).await?;
    let events = page
        .events
        .iter()
        .map(|synced| frame::event_value(&synced.event, synced.pos))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| {
            tracing::error!(error = %err, "synced event not encoded");
            ApiError::Service(chat_service::ServiceError::Unavailable)
        })?;
    Ok(HttpResponse::Ok().json(SyncPageOut {
        events,
        next: sync_token::encode(&page.next),
        has_more: page.has_more,
    }))
}
