//! The middleware every request passes: it gives the request an id (echoed as
//! `X-Request-Id`), runs it inside a tracing span, refuses oversized bodies early, and
//! records its metrics by route pattern. Only the path is logged: never the query, a
//! header or a body, so tokens and message content stay out of the logs.

use std::time::Instant;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, ResponseError, web};
use tracing::Instrument as _;

use crate::AppState;
use crate::error::ApiError;

/// The header that carries the request id.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The middleware function (for `actix_web::middleware::from_fn`).
///
/// # Errors
/// Whatever the inner service returns.
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody + 'static>>, Error> {
    let request_id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let method = req.method().to_string();
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %method,
        path = %req.path(),
    );
    let started = Instant::now();

    let too_large = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|len| len > crate::MAX_BODY_BYTES);
    let mut response = if too_large {
        let (http_req, _) = req.into_parts();
        ServiceResponse::new(http_req, ApiError::PayloadTooLarge.error_response())
            .map_into_right_body()
    } else {
        next.call(req)
            .instrument(span.clone())
            .await?
            .map_into_left_body()
    };

    let status = response.status().as_u16();
    let route = response
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    let seconds = started.elapsed().as_secs_f64();
    if let Some(state) = state {
        state
            .metrics
            .observe_request(&method, &route, status, seconds);
    }
    span.in_scope(|| {
        tracing::info!(
            route = %route,
            status,
            latency_ms = seconds * 1000.0,
            "request answered"
        );
    });
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    Ok(response)
}
