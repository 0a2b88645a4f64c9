//! Group commit of concurrent sends: `append_message` calls that arrive while the database is
//! busy are queued and stored together, in one transaction with set-based statements, by a
//! few background workers. Under load this turns many small transactions (five to seven
//! statements each) into one of about as many statements for the whole batch; alone, a send
//! is a batch of one in a transaction of its own.
//!
//! A batch is decided and stored by `send`, as a lone send is. A batch whose writes fail
//! before `COMMIT` (a deadlock, a duplicate key of a writer that does not take the
//! conversation lock, a foreign key) is rolled back and each of its requests is re-run alone
//! by its caller.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chat_crypto::MessageCipher;
use chat_ports::{NewMessage, StoreError};
use sqlx::mysql::MySqlPool;
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::error::Failure;
use crate::send::{Reply, append_alone, decide_and_write};

/// How many requests one transaction takes at most.
const MAX_BATCH: usize = 64;

/// How many batches run at once. Each holds one connection for its transaction; while they
/// run, new requests queue up and form the next batches.
const WORKERS: usize = 3;

/// One queued `append_message` call.
#[derive(Debug)]
struct Request {
    new: NewMessage,
    reply: oneshot::Sender<Reply>,
}

/// The queue of pending appends and its workers, started with the first append.
#[derive(Debug)]
pub(crate) struct Appender {
    queue: mpsc::UnboundedSender<Request>,
    counters: Arc<Counters>,
}

/// Running totals of the workers, for metrics and tests.
#[derive(Debug, Default)]
struct Counters {
    transactions: AtomicU64,
    batches: AtomicU64,
    batched: AtomicU64,
    rolled_back: AtomicU64,
}

/// How the appends were grouped since the store started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppendStats {
    /// Transactions the append workers ran (one per batch, one per lone append).
    pub transactions: u64,
    /// Transactions that stored two or more requests together.
    pub batches: u64,
    /// Requests answered by those batches.
    pub batched_requests: u64,
    /// Batches rolled back before `COMMIT` whose requests were then run alone.
    pub rolled_back: u64,
}

impl Appender {
    /// Starts the workers on the current tokio runtime. They stop when the appender is
    /// dropped (the queue closes).
    pub(crate) fn start(pool: MySqlPool, cipher: MessageCipher) -> Self {
        let (queue, receiver) = mpsc::unbounded_channel();
        let receiver = Arc::new(Mutex::new(receiver));
        let counters = Arc::new(Counters::default());
        for _ in 0..WORKERS {
            let receiver = Arc::clone(&receiver);
            let counters = Arc::clone(&counters);
            // The worker runs single appends with the one-message path directly, and holds
            // no sender of its own queue.
            tokio::spawn(work(pool.clone(), cipher.clone(), receiver, counters));
        }
        Self { queue, counters }
    }

    /// The totals so far.
    pub(crate) fn stats(&self) -> AppendStats {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        AppendStats {
            transactions: get(&self.counters.transactions),
            batches: get(&self.counters.batches),
            batched_requests: get(&self.counters.batched),
            rolled_back: get(&self.counters.rolled_back),
        }
    }

    /// Queues `new` and waits for its batch. `None` when the request could not be queued
    /// (the workers are gone): the caller runs it alone, nothing having been done.
    pub(crate) async fn submit(&self, new: NewMessage) -> Option<Reply> {
        let (reply, answer) = oneshot::channel();
        if let Err(mpsc::error::SendError(_request)) = self.queue.send(Request { new, reply }) {
            return None;
        }
        // A worker that vanished mid-batch (its runtime shut down) may or may not have
        // committed: the outcome is unknown, as when a connection drops during COMMIT.
        Some(answer.await.unwrap_or_else(|_| {
            Reply::Done(Box::new(Err(StoreError::Unavailable(
                "the append was interrupted".into(),
            ))))
        }))
    }
}

/// A worker: takes whatever is queued (up to [`MAX_BATCH`], without waiting for more) and
/// stores it.
async fn work(
    pool: MySqlPool,
    cipher: MessageCipher,
    receiver: Arc<Mutex<mpsc::UnboundedReceiver<Request>>>,
    counters: Arc<Counters>,
) {
    loop {
        let batch = {
            let mut receiver = receiver.lock().await;
            let Some(first) = receiver.recv().await else {
                return;
            };
            let mut batch = vec![first];
            drain(&mut receiver, &mut batch);
            batch
        };
        counters.transactions.fetch_add(1, Ordering::Relaxed);
        if batch.len() == 1 {
            for request in batch {
                let answer = append_alone(&pool, &cipher, &request.new).await;
                let _ = request.reply.send(Reply::Done(Box::new(answer)));
            }
            continue;
        }
        tracing::trace!(size = batch.len(), "group commit of appends");
        counters.batches.fetch_add(1, Ordering::Relaxed);
        counters.batched.fetch_add(
            u64::try_from(batch.len()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        let news: Vec<&NewMessage> = batch.iter().map(|r| &r.new).collect();
        let replies = match store_batch(&pool, &cipher, &news).await {
            Ok(replies) => replies,
            Err(BatchFailure::BeforeCommit(failure)) => {
                tracing::debug!(?failure, "batch of appends rolled back; running them alone");
                counters.rolled_back.fetch_add(1, Ordering::Relaxed);
                news.iter().map(|_| Reply::RunAlone).collect()
            }
            Err(BatchFailure::AtCommit(failure)) => {
                let error = failure.into_store();
                news.iter()
                    .map(|_| Reply::Done(Box::new(Err(error.clone()))))
                    .collect()
            }
        };
        for (request, reply) in batch.into_iter().zip(replies) {
            // The caller may have given up waiting; the batch stands.
            let _ = request.reply.send(reply);
        }
    }
}

/// Moves what is queued into `batch`, up to [`MAX_BATCH`], without waiting.
fn drain(receiver: &mut mpsc::UnboundedReceiver<Request>, batch: &mut Vec<Request>) {
    while batch.len() < MAX_BATCH {
        match receiver.try_recv() {
            Ok(request) => batch.push(request),
            Err(_) => break,
        }
    }
}

/// Why a batch did not store anything, or may not have.
#[derive(Debug)]
enum BatchFailure {
    /// Rolled back: nothing was stored.
    BeforeCommit(Failure),
    /// `COMMIT` failed: the outcome is unknown.
    AtCommit(Failure),
}

/// Stores a batch in one transaction and decides each request's answer.
async fn store_batch(
    pool: &MySqlPool,
    cipher: &MessageCipher,
    news: &[&NewMessage],
) -> Result<Vec<Reply>, BatchFailure> {
    let mut tx = pool
        .begin()
        .await
        .map_err(|e| BatchFailure::BeforeCommit(e.into()))?;
    let decided = decide_and_write(&mut tx, cipher, news)
        .await
        .map_err(BatchFailure::BeforeCommit)?;
    tx.commit()
        .await
        .map_err(|e| BatchFailure::AtCommit(e.into()))?;
    Ok(decided)
}
