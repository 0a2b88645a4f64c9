//! Black-box tests of the HTTP API: a real server on a free port, real HTTP requests.
// Test code may unwrap (clippy.toml allows it in `#[test]` functions only, not in the
// scenario functions the tests share).
#![allow(clippy::unwrap_used)]

mod auth;
mod authorization;
mod conversations;
mod faults;
mod helpers;
mod limits;
mod messages;
mod ops;
mod sync;
mod validation;
mod web;
