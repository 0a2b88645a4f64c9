//! The HTTP adapter of the chat service: the only crate that knows HTTP and JSON.
//!
//! [`serve`] runs an actix-web server over a [`ChatService`](chat_service::ChatService)
//! held in [`AppState`]. Handlers convert wire types ([`wire`]) to domain types, call one
//! use case, and convert the result back; every failure is an [`ApiError`] answered as
//! `application/problem+json`. Bearer tokens are checked by [`auth`]; metrics, request ids
//! and logging live in [`metrics`] and [`telemetry`]; [`openapi`] describes every route;
//! [`web`] serves the embedded browser client at `/`.

#![forbid(unsafe_code)]

pub mod app;
pub mod auth;
pub mod cursor;
pub mod drain;
pub mod error;
pub mod metrics;
pub mod openapi;
pub mod readiness;
pub mod realtime;
mod routes;
pub mod sync_token;
pub mod telemetry;
pub mod web;
pub mod wire;
pub mod ws;

pub use app::{AppState, HttpSettings, configure, serve};
pub use auth::{AuthConfig, Authenticator, MintClaims, Provisioning, mint_hs256};
pub use error::{ApiError, Problem};
pub use metrics::{Metrics, PoolProbe, PoolUsage};
pub use readiness::{AlwaysReady, Readiness};
pub use realtime::{Realtime, WsConfig};
pub use web::DevTokens;

/// The largest request body accepted (64 KiB); larger ones are answered with 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
