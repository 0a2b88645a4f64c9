//! Maintenance of messages at rest: moving stored message text to the key ring's active key
//! (`chatd reencrypt`). Not a use case of the service; the operator's command drives it.

use async_trait::async_trait;
use chat_domain::MessageId;

use crate::error::StoreError;

/// What one batch of re-encryption did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReencryptBatch {
    /// Rows rewritten under the active key in this batch.
    pub rewritten: u64,
    /// Rows of this batch left as they are because they cannot be opened (their key is
    /// missing from the ring, or they fail authentication); each is logged with its key id.
    pub undecryptable: u64,
    /// The cursor for the next batch: the greatest id this batch looked at. `None` when
    /// there was nothing left after the given cursor: the run is complete.
    pub last: Option<MessageId>,
    /// Rows still to rewrite after the cursor (`last`, or `after` when the batch was
    /// empty): what the rest of this run has left to do.
    pub remaining: u64,
}

/// Re-encryption of stored messages under the key ring's active key.
#[async_trait]
pub trait ReencryptStore: Send + Sync {
    /// Rewrites, under the active key, up to `limit` messages with an id greater than
    /// `after` (all when `None`), in id order, that are not SYSTEM messages and are stored
    /// in plain text or under another key.
    ///
    /// It MUST be one short atomic step per batch, so the service keeps serving; it MUST
    /// re-read each row inside that step so that an edit committed concurrently is kept (the
    /// rewrite seals the text as it is then, never an older copy); rows already under the
    /// active key MUST be left alone, so a run that is stopped and started again from any
    /// cursor (or from `None`) only finishes the work (idempotent). A row that cannot be
    /// opened MUST be left unchanged and counted in [`ReencryptBatch::undecryptable`].
    /// Without a key ring there is no active key: the batch does nothing and returns
    /// `last: None`.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the store cannot be reached.
    async fn reencrypt_batch(
        &self,
        after: Option<MessageId>,
        limit: u32,
    ) -> Result<ReencryptBatch, StoreError>;
}
