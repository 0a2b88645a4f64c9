//! The browser client: a single page of plain HTML, CSS and JavaScript modules
//! (`crates/chat-http/web/`), embedded in the binary at compile time and served at `/`
//! under a strict Content-Security-Policy; and the development-only token endpoint the
//! page signs in with under `chatd serve --dev` (it is routed only when [`DevTokens`] are
//! configured, so it answers 404 otherwise).

use std::fmt;

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use chat_domain::UserId;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::auth::{MintClaims, mint_hs256};
use crate::error::ApiError;

/// The policy of every page and asset: nothing inline, nothing from elsewhere.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; connect-src 'self' ws: wss:; \
     img-src 'self' data:; style-src 'self'; script-src 'self'; object-src 'none'; \
     base-uri 'none'; frame-ancestors 'none'";

/// The prefix under which the page's assets are served.
pub const ASSETS: &str = "/web";

/// One embedded file: its name under [`ASSETS`], its content type and its bytes.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const INDEX: Asset = Asset {
    name: "index.html",
    content_type: "text/html; charset=utf-8",
    body: include_str!("../web/index.html"),
};

/// Every asset but the page itself.
const FILES: &[Asset] = &[
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../web/app.css"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../web/app.js"),
    },
    Asset {
        name: "api.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../web/api.js"),
    },
    Asset {
        name: "live.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../web/live.js"),
    },
    Asset {
        name: "dom.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../web/dom.js"),
    },
    Asset {
        name: "icon.svg",
        content_type: "image/svg+xml",
        body: include_str!("../web/icon.svg"),
    },
];

/// Registers `/` and the assets.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/").route(web::get().to(index)))
        .service(web::resource(format!("{ASSETS}/{{name}}")).route(web::get().to(asset)));
}

fn respond(asset: &Asset) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, asset.content_type))
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        // The files change with the binary; a reload must see a new build.
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(asset.body)
}

async fn index() -> HttpResponse {
    respond(&INDEX)
}

async fn asset(name: web::Path<String>) -> Result<HttpResponse, ApiError> {
    FILES
        .iter()
        .find(|asset| asset.name == name.as_str())
        .map(respond)
        .ok_or(ApiError::RouteNotFound)
}

/// What development tokens are signed with (`chatd serve --dev` only): the server's own
/// HS256 secret and the claims it requires.
#[derive(Clone)]
pub struct DevTokens {
    secret: Vec<u8>,
    issuer: Option<String>,
    audience: Option<String>,
}

impl DevTokens {
    /// Tokens signed with `secret` (HS256), carrying `issuer` and `audience` when the
    /// verifier requires them.
    pub fn new(secret: &[u8], issuer: Option<String>, audience: Option<String>) -> Self {
        Self {
            secret: secret.to_vec(),
            issuer,
            audience,
        }
    }
}

impl fmt::Debug for DevTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevTokens")
            .field("secret", &"<redacted>")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

/// How long a development token lives.
const DEV_TOKEN_TTL_SECONDS: u64 = 12 * 3600;

/// The body of `POST /api/v1/dev/token`.
#[derive(Debug, Deserialize)]
pub(crate) struct DevTokenIn {
    user_id: i64,
    name: Option<String>,
}

/// A minted development token.
#[derive(Debug, Serialize)]
pub(crate) struct DevTokenOut {
    token: String,
    user_id: i64,
    expires_in: u64,
}

/// Registers `POST /dev/token` (inside `/api/v1`) when development tokens are configured.
pub(crate) fn dev_routes(cfg: &mut web::ServiceConfig, state: &AppState) {
    if state.dev_tokens.is_some() {
        cfg.service(web::resource("/dev/token").route(web::post().to(dev_token)));
    }
}

/// Mints a token for any user: development only (the route does not exist otherwise).
async fn dev_token(
    state: web::Data<AppState>,
    body: web::Json<DevTokenIn>,
) -> Result<HttpResponse, ApiError> {
    let dev = state.dev_tokens.as_ref().ok_or(ApiError::RouteNotFound)?;
    let body = body.into_inner();
    let user = UserId::new(body.user_id)?;
    let name = body
        .name
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty());
    if name.as_ref().is_some_and(|n| n.chars().count() > 100) {
        return Err(ApiError::field("name", "must be at most 100 characters"));
    }
    let mut claims = MintClaims::new(user, name, DEV_TOKEN_TTL_SECONDS);
    claims.iss.clone_from(&dev.issuer);
    claims.aud.clone_from(&dev.audience);
    let token = mint_hs256(&dev.secret, &claims).map_err(|err| {
        tracing::error!(error = %err, "minting a development token failed");
        ApiError::Service(chat_service::ServiceError::Unavailable)
    })?;
    Ok(HttpResponse::Ok().json(DevTokenOut {
        token,
        user_id: body.user_id,
        expires_in: DEV_TOKEN_TTL_SECONDS,
    }))
}
