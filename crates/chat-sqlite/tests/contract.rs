//! The port contract suite against SQLite, one fresh database file per case.
#![allow(clippy::unwrap_used)] // Test code: a failed expectation panics.

mod common;

chat_contract::contract_suite!(common::fresh_ports);
