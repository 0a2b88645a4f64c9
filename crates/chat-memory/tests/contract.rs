//! The port contract suite against the in-memory adapter.

use std::sync::Arc;

use async_trait::async_trait;
use chat_contract::{Fixtures, Ports};
use chat_domain::PostingId;
use chat_memory::MemoryStore;

struct MemoryFixtures(Arc<MemoryStore>);

#[async_trait]
impl Fixtures for MemoryFixtures {
    async fn add_posting(&self, id: PostingId) {
        self.0.add_posting(id).await;
    }
}

async fn fresh() -> Option<Ports> {
    let store = Arc::new(MemoryStore::new());
    let fixtures = Arc::new(MemoryFixtures(store.clone()));
    Some(Ports::from_store(store, fixtures))
}

chat_contract::contract_suite!(fresh);
