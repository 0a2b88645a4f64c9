//! The port contract suite against MySQL/MariaDB, one fresh database per case.
#![allow(clippy::unwrap_used)] // Test code: a failed expectation panics.

mod common;

chat_contract::contract_suite!(common::fresh_ports);
