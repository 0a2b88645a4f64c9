//! A small, bounded, short-lived cache of each conversation's active participants, so that
//! typing frames (many, cheap, never stored) do not each load the conversation from the
//! store. A membership change made through this service forgets the entry at once; one
//! made on another node is seen once the entry expires.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chat_domain::{ConversationId, UserId};

/// How long an entry is trusted.
pub const ACTIVE_MEMBERS_TTL: Duration = Duration::from_secs(2);

/// The most conversations held at once.
pub const ACTIVE_MEMBERS_CAPACITY: usize = 10_000;

struct Entry {
    loaded: Instant,
    members: Arc<[UserId]>,
}

/// Conversation → its active participants, as last read.
pub(crate) struct ActiveMembers {
    entries: Mutex<HashMap<ConversationId, Entry>>,
    ttl: Duration,
    capacity: usize,
}

impl ActiveMembers {
    pub(crate) fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            ttl,
            capacity: capacity.max(1),
        }
    }

    /// The active participants of `conversation`, when a fresh entry is held.
    pub(crate) fn get(&self, conversation: ConversationId) -> Option<Arc<[UserId]>> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries
            .get(&conversation)
            .filter(|entry| entry.loaded.elapsed() < self.ttl)
            .map(|entry| Arc::clone(&entry.members))
    }

    /// Remembers the active participants of `conversation`. When the cache is full,
    /// expired entries go first, and if none has expired everything goes: the cache is
    /// only a shortcut, and a bound matters more than a hit rate.
    pub(crate) fn put(&self, conversation: ConversationId, members: Arc<[UserId]>) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= self.capacity && !entries.contains_key(&conversation) {
            let ttl = self.ttl;
            entries.retain(|_, entry| entry.loaded.elapsed() < ttl);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(
            conversation,
            Entry {
                loaded: Instant::now(),
                members,
            },
        );
    }

    /// Forgets `conversation` (its membership changed).
    pub(crate) fn forget(&self, conversation: ConversationId) {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&conversation);
    }

    /// Drops expired entries; returns how many remain.
    pub(crate) fn prune(&self) -> usize {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let ttl = self.ttl;
        entries.retain(|_, entry| entry.loaded.elapsed() < ttl);
        entries.shrink_to_fit();
        entries.len()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(ids: &[i64]) -> Arc<[UserId]> {
        ids.iter().map(|id| UserId::new(*id).unwrap()).collect()
    }

    #[test]
    fn entries_expire_and_are_forgotten() {
        let cache = ActiveMembers::new(Duration::from_millis(30), 10);
        let c = ConversationId::new();
        cache.put(c, members(&[1, 2]));
        assert_eq!(cache.get(c).as_deref(), Some(&members(&[1, 2])[..]));
        cache.forget(c);
        assert!(cache.get(c).is_none());
        cache.put(c, members(&[1]));
        std::thread::sleep(Duration::from_millis(40));
        assert!(cache.get(c).is_none());
        assert_eq!(cache.prune(), 0);
    }

    #[test]
    fn the_cache_never_holds_more_than_its_capacity() {
        let cache = ActiveMembers::new(Duration::from_secs(60), 100);
        for _ in 0..1000 {
            cache.put(ConversationId::new(), members(&[1]));
            assert!(cache.len() <= 100);
        }
        let kept = ConversationId::new();
        cache.put(kept, members(&[7]));
        assert!(cache.get(kept).is_some());
    }
}
