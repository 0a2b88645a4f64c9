//! The middleware every request passes: it gives the request an id (echoed as
//! `X-Request-Id`), runs it inside a tracing span, refuses oversized bodies early, and
//! records its metrics by route pattern. Only the path is logged: never the query, a
//! header or a body, so tokens and message content stay out of the logs.
//!
//! Every metric label and log field comes from a closed set or is bounded: the method is
//! one of the standard ones or `OTHER`, the route is the matched template or `unmatched`,
//! the logged path is cut to [`MAX_LOGGED_PATH`] bytes, and the request id is accepted
//! only when short and printable. A client cannot grow `/metrics` by inventing methods
//! or paths.

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
    let method = method_label(req.method());
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %method,
        path = %bounded_path(req.path()),
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
            .observe_request(method, &route, status, seconds);
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

/// The most bytes of a request path written to the logs.
pub const MAX_LOGGED_PATH: usize = 256;

/// The label of an HTTP method: one of the standard methods, else `OTHER`, so a client
/// inventing methods cannot create new metric series.
pub fn method_label(method: &actix_web::http::Method) -> &'static str {
    use actix_web::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "OTHER",
    }
}

/// The path as logged: cut to at most [`MAX_LOGGED_PATH`] bytes on a character boundary
/// (the path is percent-encoded ASCII, but the cut must never panic).
fn bounded_path(path: &str) -> &str {
    if path.len() <= MAX_LOGGED_PATH {
        return path;
    }
    let mut end = MAX_LOGGED_PATH;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    &path[..end]
}

#[cfg(test)]
mod tests {
    use actix_web::http::Method;

    use super::*;

    #[test]
    fn invented_methods_share_one_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(
            method_label(&Method::from_bytes(b"AAAA1").unwrap()),
            "OTHER"
        );
        assert_eq!(
            method_label(&Method::from_bytes(b"PROPFIND").unwrap()),
            "OTHER"
        );
    }

    #[test]
    fn long_paths_are_cut_for_the_logs() {
        let long = "/é".repeat(200);
        let cut = bounded_path(&long);
        assert!(cut.len() <= MAX_LOGGED_PATH);
        assert!(long.starts_with(cut));
        assert_eq!(bounded_path("/healthz"), "/healthz");
    }
}
