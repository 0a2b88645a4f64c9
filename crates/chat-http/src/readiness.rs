//! The readiness probe behind `GET /readyz`: whether the store can be reached.

use async_trait::async_trait;

/// Tells whether the service can do its work (the store answers).
#[async_trait]
pub trait Readiness: Send + Sync {
    /// `Ok` when ready.
    ///
    /// # Errors
    /// Why the service is not ready (for logs; never sent to clients).
    async fn check(&self) -> Result<(), String>;
}

/// Always ready (the in-memory store).
#[derive(Debug, Default, Clone, Copy)]
pub struct AlwaysReady;

#[async_trait]
impl Readiness for AlwaysReady {
    async fn check(&self) -> Result<(), String> {
        Ok(())
    }
}
