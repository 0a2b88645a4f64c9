//! The service rules on SQLite: every test of `rules.rs`, compiled a second time in this
//! target, where the harness (`support`, which reads the target's name) puts the service
//! on a fresh SQLite file per test instead of the in-memory store.

#[path = "rules.rs"]
mod rules;
