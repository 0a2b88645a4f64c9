//! Catching up from the change feed: [`ChatService::sync`] answers the changes a user is
//! entitled to see since a [`SyncToken`], oldest first, each hydrated into the event its
//! WebSocket frame shows, and the token to ask from next. Entitlement is membership over
//! time ([`chat_domain::visible_changes`]): a conversation's changes from the one that
//! added the user to the one that removed them, both included.

use chat_domain::{ChatEvent, FeedId, FeedPos, UserId, ValidationError, visible_changes};

use crate::hydrate::Hydrator;
use crate::{ChatService, ServiceError};

/// How many store pages one `sync` call reads at most when the reader's changes are
/// mostly filtered out (changes before a join, after a removal, or no longer served):
/// enough to fill most pages, small enough to answer in bounded time.
const MAX_ROUNDS: usize = 8;

/// Where a reader stands in one feed. Opaque to clients (the wire encodes it); it names
/// no user, so it grants nothing: the caller is always the authenticated user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SyncToken {
    /// The feed (database) the position belongs to.
    pub feed_id: FeedId,
    /// Every change at or below it has been seen.
    pub pos: FeedPos,
}

/// How many events one `sync` answers at most: 1 to 500, 100 by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncLimit(u16);

impl SyncLimit {
    /// The largest page.
    pub const MAX: SyncLimit = SyncLimit(500);

    /// Parses a page size.
    ///
    /// # Errors
    /// A [`ValidationError`] on `limit` outside 1..=500.
    pub fn new(value: i64) -> Result<Self, ValidationError> {
        u16::try_from(value)
            .ok()
            .filter(|v| (1..=Self::MAX.0).contains(v))
            .map(Self)
            .ok_or_else(|| ValidationError::new("limit", "must be between 1 and 500"))
    }

    /// The size.
    pub fn get(self) -> usize {
        usize::from(self.0)
    }
}

impl Default for SyncLimit {
    fn default() -> Self {
        Self(100)
    }
}

/// One event of a sync page, with its position in the feed.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncedEvent {
    /// The change's position.
    pub pos: FeedPos,
    /// The event, as its WebSocket frame shows it.
    pub event: ChatEvent,
}

/// The answer to [`ChatService::sync`].
#[derive(Debug, Clone, PartialEq)]
pub struct SyncPage {
    /// The changes the caller may see, oldest first, at most the asked limit.
    pub events: Vec<SyncedEvent>,
    /// The token to ask from next (the last position scanned; it moves even when no
    /// event was for the caller).
    pub next: SyncToken,
    /// Whether the feed holds more changes after `next` (ask again at once).
    pub has_more: bool,
}

impl ChatService {
    /// The changes `user` may see after `since`, oldest first, at most `limit`. Without a
    /// token, no events and the current head: the place to start from after a full load.
    ///
    /// # Errors
    /// `SyncTokenExpired` for a token of another feed, one below the retention floor
    /// (changes after it may have been purged) or one above the head (never handed
    /// out by this feed); `Unavailable` when the store fails.
    pub async fn sync(
        &self,
        user: UserId,
        since: Option<SyncToken>,
        limit: SyncLimit,
    ) -> Result<SyncPage, ServiceError> {
        let bounds = self.ports.feed.feed_bounds().await?;
        let Some(since) = since else {
            return Ok(SyncPage {
                events: Vec::new(),
                next: SyncToken {
                    feed_id: bounds.feed_id,
                    pos: bounds.head,
                },
                has_more: false,
            });
        };
        if since.feed_id != bounds.feed_id || since.pos < bounds.floor || since.pos > bounds.head {
            return Err(ServiceError::SyncTokenExpired);
        }
        if since.pos == bounds.head {
            // Nothing committed since: no page to read.
            return Ok(SyncPage {
                events: Vec::new(),
                next: since,
                has_more: false,
            });
        }
        let mut hydrator = Hydrator::new(&*self.ports.messages, &*self.ports.conversations);
        let mut events = Vec::new();
        let mut scanned = since.pos;
        let mut has_more = false;
        for _ in 0..MAX_ROUNDS {
            let want = limit.get() - events.len();
            let page = self.ports.feed.reader_changes(user, scanned, want).await?;
            has_more = page.changes.len() >= want;
            let last = page.changes.last().map(|change| change.pos);
            scanned = match last {
                Some(last) if has_more => last,
                // A page that is not full holds every change of the reader's
                // conversations up to its head: the head is scanned too.
                _ => page.head.max(last.unwrap_or(scanned)).max(scanned),
            };
            let visible = visible_changes(user, page.changes, &page.windows);
            // The page's messages in one lookup, not one per message.
            hydrator.prefetch(&visible).await?;
            for change in visible {
                if let Some(event) = hydrator.hydrate(&change).await? {
                    events.push(SyncedEvent {
                        pos: change.pos,
                        event,
                    });
                }
            }
            if !has_more || events.len() >= limit.get() {
                break;
            }
        }
        // The floor moves before anything is purged: if it is still at or below the
        // token now, nothing after the token was missing from the pages read.
        if self.ports.feed.feed_bounds().await?.floor > since.pos {
            return Err(ServiceError::SyncTokenExpired);
        }
        Ok(SyncPage {
            events,
            next: SyncToken {
                feed_id: bounds.feed_id,
                pos: scanned,
            },
            has_more,
        })
    }

    /// The current head of the feed: the token a client starts from after a full load.
    ///
    /// # Errors
    /// `Unavailable` when the store fails.
    pub async fn feed_head(&self) -> Result<SyncToken, ServiceError> {
        let bounds = self.ports.feed.feed_bounds().await?;
        Ok(SyncToken {
            feed_id: bounds.feed_id,
            pos: bounds.head,
        })
    }
}
