//! The timing of a closed loop: workers that each keep one request in flight until told to
//! stop, stopped after the run's duration.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::future::join_all;
use tokio::task::JoinHandle;

/// Raises `stop` (which `workers` watch between requests) once `seconds` have passed, and
/// collects what each worker returns once it has finished its last request.
///
/// # Errors
/// When a worker panicked.
pub(crate) async fn run_for<T>(
    workers: Vec<JoinHandle<T>>,
    stop: &Arc<AtomicBool>,
    seconds: u64,
) -> anyhow::Result<Vec<T>> {
    let timer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            stop.store(true, Ordering::Relaxed);
        })
    };
    let results = join_all(workers).await;
    timer.await?;
    results
        .into_iter()
        .map(|r| r.map_err(anyhow::Error::from))
        .collect()
}
