//! The in-memory adapter: every storage and directory port of `chat-ports`, held in
//! process memory behind one lock.
//!
//! One lock makes every port method atomic and every pair of calls serialisable, which is
//! exactly the contract the MySQL adapter meets with transactions. Nothing persists: it is
//! the tests' fake and the zero-setup default store of `chatd`.

#![forbid(unsafe_code)]

mod feed;
mod state;
mod store;

pub use store::MemoryStore;
