//! Per-conversation publishing order on one node: the conversation changes that get a
//! `seq` (membership changes and their system messages) are stored and published under
//! the same lock, so this node publishes them in commit order. A send is *not* stored
//! under it (sends into one conversation must reach the store together to share its
//! group commit, and each must meet its own deadline in an outage): it takes the lock
//! only to publish, and a `message.created` that overtakes its predecessor is put back
//! in `seq` order by the hub's sequencer (`chat-realtime`, `order.rs`).

use chat_domain::ConversationId;
use futures::lock::{Mutex, MutexGuard};

/// How many locks conversations are spread over; two conversations share one rarely,
/// and then only wait for each other's commit.
const SHARDS: usize = 1024;

/// A fixed set of async locks, one chosen per conversation by its id.
pub(crate) struct PublishOrder {
    shards: Box<[Mutex<()>]>,
}

impl PublishOrder {
    pub(crate) fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(())).collect(),
        }
    }

    /// Waits for the conversation's turn; the guard holds it until dropped.
    pub(crate) async fn lock(&self, conversation: ConversationId) -> MutexGuard<'_, ()> {
        let bits = conversation.as_uuid().as_u128();
        let folded = (bits ^ (bits >> 64)) as u64;
        // `SHARDS` is a small constant, so the remainder always fits in a usize.
        let index = usize::try_from(folded % SHARDS as u64).unwrap_or(0);
        self.shards[index].lock().await
    }
}
