//! The port contract suite against the in-memory adapter.

use std::sync::Arc;

use async_trait::async_trait;
use chat_contract::{AtRest, AtRestPorts, Fixtures, Ports};
use chat_crypto::{KeyRing, MessageCipher, StoredFields};
use chat_domain::{MessageId, PostingId};
use chat_memory::MemoryStore;

struct MemoryFixtures(Arc<MemoryStore>);

#[async_trait]
impl Fixtures for MemoryFixtures {
    async fn add_posting(&self, id: PostingId) {
        self.0.add_posting(id).await;
    }
}

/// The same data under another key ring: another handle on the same state.
struct MemoryAtRest(Arc<MemoryStore>);

#[async_trait]
impl AtRest for MemoryAtRest {
    async fn reopen(&self, ring: Option<Arc<KeyRing>>) -> AtRestPorts {
        let store = Arc::new(self.0.reopened(MessageCipher::new(ring)));
        let fixtures = Arc::new(MemoryFixtures(store.clone()));
        AtRestPorts {
            ports: Ports::from_store(store.clone(), fixtures),
            reencrypt: store,
        }
    }

    async fn stored(&self, id: MessageId) -> StoredFields {
        self.0.stored_fields(id).expect("the message exists")
    }

    async fn overwrite(&self, id: MessageId, stored: StoredFields) {
        assert!(
            self.0.overwrite_stored_fields(id, stored),
            "the message exists"
        );
    }
}

async fn fresh() -> Option<Ports> {
    let store = Arc::new(MemoryStore::with_cipher(chat_contract::switch::cipher()));
    let fixtures = Arc::new(MemoryFixtures(store.clone()));
    let at_rest = Arc::new(MemoryAtRest(store.clone()));
    Some(Ports::from_store(store, fixtures).with_at_rest(at_rest))
}

chat_contract::contract_suite!(fresh);
