//! The WebSocket endpoint `GET /api/v1/ws`: the handshake checks (no token in the query
//! string, the browser `Origin`, the optional `Authorization` header, the optional sync
//! token `since` to resume from), then a [`connection`] task per socket. The protocol is
//! described in `docs/websocket.md`.

mod connection;
mod dedup;
mod protocol;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine as _;
use chat_service::ServiceError;
use tokio::time::Instant;

use crate::AppState;
use crate::auth::LEEWAY_SECONDS;
use crate::error::ApiError;
use connection::Authenticated;

/// The handshake's query.
#[derive(Debug, serde::Deserialize)]
struct HandshakeParams {
    /// A sync token to resume from.
    since: Option<String>,
}

/// The path of the endpoint.
pub const PATH: &str = "/api/v1/ws";

/// Query parameters that smell of a credential; any of them refuses the handshake.
const TOKEN_PARAMETERS: [&str; 5] = ["token", "access_token", "jwt", "auth", "authorization"];

/// Registers `/ws` (under the `/api/v1` scope).
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/ws").route(web::get().to(connect)));
}

/// `GET /api/v1/ws`: upgrades to a WebSocket.
///
/// # Errors
/// 401 for a token in the query string or a bad `Authorization` header, 403 for a browser
/// `Origin` that is not allowed, 400 for a request that is not a WebSocket handshake or a
/// malformed `since`, and 404 when the server runs without the real-time transport.
#[utoipa::path(
    get, path = "/api/v1/ws", tag = "real-time",
    description = "Upgrades to a WebSocket carrying events and client frames; the protocol \
        is described in docs/websocket.md. Authenticate with the Authorization header or, \
        from a browser, with a first frame {\"type\":\"auth\",\"token\":\"…\"} within 10 s. \
        Tokens in the query string are refused. With a sync token (`since` here or in the \
        auth frame) the changes missed since it are replayed before `ready`.",
    params(
        ("since" = Option<String>, Query, description = "A sync token to resume from (`next` of `ready` or of GET /api/v1/sync, kept current with each event's `pos`)"),
    ),
    responses(
        (status = 101, description = "Switching protocols: the WebSocket is open"),
        (status = 400, description = "Not a WebSocket handshake, or a malformed `since` (`validation_failed`)", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Bad token, or a token in the query string", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Origin not allowed", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
    security((), ("bearer" = []))
)]
pub async fn connect(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, actix_web::Error> {
    let Some(realtime) = state.realtime.clone() else {
        return Err(ApiError::RouteNotFound.into());
    };
    if has_query_token(req.query_string()) {
        return Err(ApiError::Unauthorized(
            "tokens in the query string are refused; send an Authorization header or an auth frame",
        )
        .into());
    }
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|host| host.to_str().ok());
        let allowed = origin.to_str().is_ok_and(|origin| {
            realtime.config().origin_allowed(origin) || same_origin(origin, host)
        });
        if !allowed {
            return Err(ApiError::Service(ServiceError::Forbidden(
                "this origin may not open a WebSocket",
            ))
            .into());
        }
    }
    let since = web::Query::<HandshakeParams>::from_query(req.query_string())
        .map_err(|err| ApiError::field("query", err.to_string()))?
        .into_inner()
        .since
        .map(|text| crate::sync_token::decode("since", &text))
        .transpose()?;
    let authenticated = match req.headers().get(header::AUTHORIZATION) {
        None => None,
        Some(value) => {
            let value = value
                .to_str()
                .map_err(|_| ApiError::Unauthorized("the Authorization header is not text"))?;
            let identity = state.auth.authenticate(Some(value)).await?;
            let token = value
                .split_once(' ')
                .map_or(value, |(_, token)| token.trim());
            Some(Authenticated {
                user: identity.user_id,
                expires_at: token_deadline(token),
            })
        }
    };
    let (response, session, stream) = actix_ws::handle(&req, body)?;
    actix_web::rt::spawn(connection::run(
        state,
        realtime,
        session,
        stream,
        authenticated,
        since,
    ));
    Ok(response)
}

/// Verifies a token sent in an `auth` frame, provisioning the user as the header path
/// does.
async fn authenticate(state: &AppState, token: &str) -> Result<Authenticated, ApiError> {
    let identity = state
        .auth
        .authenticate(Some(&format!("Bearer {}", token.trim())))
        .await?;
    Ok(Authenticated {
        user: identity.user_id,
        expires_at: token_deadline(token.trim()),
    })
}

fn has_query_token(query: &str) -> bool {
    query
        .split('&')
        .filter_map(|pair| pair.split('=').next())
        .any(|name| {
            TOKEN_PARAMETERS
                .iter()
                .any(|refused| name.eq_ignore_ascii_case(refused))
        })
}

/// The farthest a connection's expiry timer is set (about 136 years): `Instant` cannot
/// hold an arbitrary `exp`.
const FARTHEST_DEADLINE: Duration = Duration::from_secs(u32::MAX as u64);

/// When a verified token stops being accepted: its `exp` plus the leeway the verifier
/// grants. Only called after the signature has been checked, so reading the claims
/// without verifying them again is sound.
fn token_deadline(token: &str) -> Option<Instant> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?;
    let exp = exp.as_u64().or_else(|| {
        // Fractional seconds are rounded down: expiring a moment early is safe.
        exp.as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f.trunc() as u64)
    })?;
    // The verifier refuses an `exp` past `MAX_EXP_SECONDS`; the checked arithmetic keeps
    // this function from panicking even if that ever changed (a far deadline is capped).
    let exp = exp.min(crate::auth::MAX_EXP_SECONDS);
    let remaining = UNIX_EPOCH
        .checked_add(Duration::from_secs(exp.saturating_add(LEEWAY_SECONDS)))
        .and_then(|deadline| deadline.duration_since(SystemTime::now()).ok())
        .unwrap_or(Duration::ZERO)
        .min(FARTHEST_DEADLINE);
    let now = Instant::now();
    Some(
        now.checked_add(remaining)
            .unwrap_or(now + FARTHEST_DEADLINE / 1024),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_parameters_are_spotted_by_name() {
        let cases = [
            ("", false),
            ("token=abc", true),
            ("x=1&ACCESS_TOKEN=abc", true),
            ("jwt", true),
            ("tokens=1&page=2", false),
            ("x=token", false),
        ];
        for (query, refused) in cases {
            assert_eq!(has_query_token(query), refused, "{query}");
        }
    }

    #[test]
    fn the_deadline_is_exp_plus_leeway() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let token = |exp: u64| {
            let claims = format!(r#"{{"sub":"1","exp":{exp}}}"#);
            format!(
                "h.{}.s",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims)
            )
        };
        let in_an_hour = token_deadline(&token(now + 3600)).unwrap();
        let left = in_an_hour - Instant::now();
        assert!(
            left > Duration::from_secs(3600 + LEEWAY_SECONDS - 5),
            "{left:?}"
        );
        assert!(left <= Duration::from_secs(3600 + LEEWAY_SECONDS));
        let long_ago = token_deadline(&token(1)).unwrap();
        assert!(long_ago <= Instant::now());
        assert_eq!(token_deadline("not-a-jwt"), None);
        // Far `exp` values never panic (2^63 and beyond overflowed `SystemTime` before).
        for exp in [1 << 63, i64::MAX as u64, u64::MAX] {
            let far = token_deadline(&token(exp)).unwrap();
            assert!(far > Instant::now() + Duration::from_secs(3600 * 24 * 365));
        }
    }
}

/// Whether `origin` names the host the request was sent to: the page chatd serves itself
/// (`/`) may always open its WebSocket. The scheme is not compared, because behind a
/// TLS-terminating proxy the page is `https` while this server sees `http`; a page of
/// another site cannot send this server's host as its `Origin`.
fn same_origin(origin: &str, host: Option<&str>) -> bool {
    let Some(host) = host.map(str::trim).filter(|h| !h.is_empty()) else {
        return false;
    };
    origin
        .trim()
        .split_once("://")
        .is_some_and(|(_, authority)| authority.trim_end_matches('/').eq_ignore_ascii_case(host))
}

#[cfg(test)]
mod same_origin_tests {
    use super::same_origin;

    #[test]
    fn the_servers_own_pages_are_same_origin() {
        let cases = [
            ("http://127.0.0.1:8080", Some("127.0.0.1:8080"), true),
            ("https://chat.example.com", Some("chat.example.com"), true),
            ("http://127.0.0.1:8080/", Some("127.0.0.1:8080"), true),
            ("http://127.0.0.1:8081", Some("127.0.0.1:8080"), false),
            ("https://evil.example", Some("chat.example.com"), false),
            (
                "https://chat.example.com.evil.example",
                Some("chat.example.com"),
                false,
            ),
            ("null", Some("chat.example.com"), false),
            ("http://127.0.0.1:8080", None, false),
            ("http://", Some(""), false),
        ];
        for (origin, host, expected) in cases {
            assert_eq!(same_origin(origin, host), expected, "{origin} {host:?}");
        }
    }
}
