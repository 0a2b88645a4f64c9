//! The one writer. SQLite lets one connection write at a time, so every write use case is
//! queued to a single task that owns the write path (a pool of one connection). The task takes
//! whatever is queued (up to a batch size, without waiting for more) and runs it in ONE
//! `BEGIN IMMEDIATE … COMMIT` transaction, each request inside a `SAVEPOINT` of its own: a
//! request that fails is rolled back to its savepoint and answered with its error, and the
//! others still commit. Answers are sent only after `COMMIT` (so an acknowledged write is
//! durable: WAL with `synchronous=FULL` syncs at every commit), and one fsync serves the whole
//! batch: the group commit of the MySQL appender, for every write.
//!
//! Before each `COMMIT` the task reads the change feed's head (the newest `CHANGE_LOG`
//! position, see [`crate::feed`]) and, once the batch has committed, publishes it on a
//! `watch` channel: what [`chat_ports::ChangeFeed::wait_past`] waits on.
//!
//! Because requests run one after the other on one connection, every invariant that needs
//! atomicity under races (one DIRECT per pair, gap-free `seq`, one row per idempotency key, at
//! least one admin) is a plain read-then-write here.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chat_domain::FeedPos;
use chat_ports::StoreError;
use futures::future::BoxFuture;
use sqlx::sqlite::{SqliteConnection, SqlitePool};
use sqlx::{Connection, Executor};
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::Outcome;

/// One queued write request.
trait Request: Send {
    /// Runs the request's work on the writer's connection (inside its savepoint).
    fn run<'c>(self: Box<Self>, conn: &'c mut SqliteConnection) -> BoxFuture<'c, Box<dyn Pending>>;
    /// Answers the request with `error` without running it.
    fn refuse(self: Box<Self>, error: StoreError);
}

/// A queued write request, whatever its result type.
type Work = Box<dyn Request>;

/// A request: its work and where to answer.
struct Call<F, T> {
    work: F,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<F, T> Request for Call<F, T>
where
    T: Send + 'static,
    F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Outcome<T>> + Send + 'static,
{
    fn run<'c>(self: Box<Self>, conn: &'c mut SqliteConnection) -> BoxFuture<'c, Box<dyn Pending>> {
        let Call { work, reply } = *self;
        Box::pin(async move {
            let result = work(conn).await;
            Box::new(Answer { result, reply }) as Box<dyn Pending>
        })
    }

    fn refuse(self: Box<Self>, error: StoreError) {
        let _ = self.reply.send(Err(error));
    }
}

/// A request's result held until the batch's `COMMIT`.
trait Pending: Send {
    /// Whether the request succeeded (its savepoint is released) or failed (rolled back).
    fn succeeded(&self) -> bool;
    /// Answers the caller; `commit` is the batch's failure, when it did not commit.
    fn deliver(self: Box<Self>, commit: Option<StoreError>);
}

struct Answer<T> {
    result: Outcome<T>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T: Send> Pending for Answer<T> {
    fn succeeded(&self) -> bool {
        self.result.is_ok()
    }

    fn deliver(self: Box<Self>, commit: Option<StoreError>) {
        let answer = match (commit, self.result) {
            // A request refused by the rules changed nothing: its answer stands.
            (_, Err(failure)) => Err(failure.into_store()),
            (Some(error), Ok(_)) => Err(error),
            (None, Ok(value)) => Ok(value),
        };
        // The caller may have given up waiting; the write stands.
        let _ = self.reply.send(answer);
    }
}

/// What the writer is asked.
enum Job {
    /// A write request.
    Write(Work),
    /// Finish what is queued before this, then stop.
    Stop(oneshot::Sender<()>),
}

/// Running totals of the writer, for metrics and tests.
#[derive(Debug, Default)]
struct Counters {
    transactions: AtomicU64,
    requests: AtomicU64,
    largest: AtomicU64,
}

/// How the writes were grouped into transactions since the store opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Transactions (batches) committed or attempted.
    pub transactions: u64,
    /// Write requests run in them.
    pub requests: u64,
    /// The most requests one transaction held.
    pub largest_batch: u64,
}

/// The handle to the writer task; cheap to share.
#[derive(Debug)]
pub(crate) struct Writer {
    queue: mpsc::Sender<Job>,
    counters: Arc<Counters>,
    /// The feed's head as of the newest commit (0 until the first one).
    heads: watch::Receiver<FeedPos>,
}

impl Writer {
    /// Starts the writer task on the current tokio runtime, on `pool` (one connection).
    /// `keep` lives as long as the task (the lock on the database file).
    pub(crate) fn start<K: Send + Sync + 'static>(
        pool: SqlitePool,
        max_batch: usize,
        keep: Arc<K>,
    ) -> Self {
        let (queue, receiver) = mpsc::channel(max_batch.max(1) * 4);
        let counters = Arc::new(Counters::default());
        let (head, heads) = watch::channel(FeedPos::ZERO);
        tokio::spawn(run(
            pool,
            receiver,
            max_batch.max(1),
            Arc::clone(&counters),
            head,
            keep,
        ));
        Self {
            queue,
            counters,
            heads,
        }
    }

    /// Runs `work` as one write request and waits for its batch to commit.
    ///
    /// `work` MUST leave the connection as it found it apart from its writes (no
    /// transaction statements of its own): it runs inside a savepoint.
    pub(crate) async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Outcome<T>> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Work = Box::new(Call { work, reply });
        self.queue
            .send(Job::Write(job))
            .await
            .map_err(|_| StoreError::Unavailable("the database is closed".into()))?;
        // A writer that vanished mid-batch (its runtime shut down) may or may not have
        // committed: the outcome is unknown, as when a connection drops during COMMIT.
        answer
            .await
            .unwrap_or_else(|_| Err(StoreError::Unavailable("the write was interrupted".into())))
    }

    /// Lets the queued requests finish, then stops the task.
    pub(crate) async fn stop(&self) {
        let (done, stopped) = oneshot::channel();
        if self.queue.send(Job::Stop(done)).await.is_ok() {
            let _ = stopped.await;
        }
    }

    /// The feed's head after each commit of a batch.
    pub(crate) fn committed_heads(&self) -> watch::Receiver<FeedPos> {
        self.heads.clone()
    }

    /// The totals so far.
    pub(crate) fn stats(&self) -> WriteStats {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        WriteStats {
            transactions: get(&self.counters.transactions),
            requests: get(&self.counters.requests),
            largest_batch: get(&self.counters.largest),
        }
    }
}

/// The writer task: one batch at a time until the queue closes or a stop arrives.
async fn run<K>(
    pool: SqlitePool,
    mut receiver: mpsc::Receiver<Job>,
    max_batch: usize,
    counters: Arc<Counters>,
    head: watch::Sender<FeedPos>,
    keep: Arc<K>,
) {
    let mut stop: Option<oneshot::Sender<()>> = None;
    while stop.is_none() {
        let Some(first) = receiver.recv().await else {
            break;
        };
        let mut batch = Vec::new();
        match first {
            Job::Write(work) => batch.push(work),
            Job::Stop(done) => stop = Some(done),
        }
        while stop.is_none() && batch.len() < max_batch {
            match receiver.try_recv() {
                Ok(Job::Write(work)) => batch.push(work),
                Ok(Job::Stop(done)) => stop = Some(done),
                Err(_) => break,
            }
        }
        if batch.is_empty() {
            continue;
        }
        let size = u64::try_from(batch.len()).unwrap_or(u64::MAX);
        counters.transactions.fetch_add(1, Ordering::Relaxed);
        counters.requests.fetch_add(size, Ordering::Relaxed);
        counters.largest.fetch_max(size, Ordering::Relaxed);
        run_batch(&pool, batch, &head).await;
    }
    drop(keep);
    if let Some(done) = stop {
        let _ = done.send(());
    }
}

/// Runs a batch in one transaction and answers every request after it ends.
async fn run_batch(pool: &SqlitePool, batch: Vec<Work>, head: &watch::Sender<FeedPos>) {
    let mut conn = match pool.acquire().await {
        Ok(conn) => conn,
        Err(e) => {
            let error = crate::error::translate(&e);
            // Nothing ran: each request is answered with the failure by running nothing.
            for work in batch {
                fail_unrun(work, error.clone());
            }
            return;
        }
    };
    if let Err(e) = conn.execute("BEGIN IMMEDIATE").await {
        let error = crate::error::translate(&e);
        for work in batch {
            fail_unrun(work, error.clone());
        }
        return;
    }
    let mut done: Vec<Box<dyn Pending>> = Vec::with_capacity(batch.len());
    let mut broken: Option<StoreError> = None;
    for work in batch {
        if let Some(error) = &broken {
            fail_unrun(work, error.clone());
            continue;
        }
        if let Err(e) = conn.execute("SAVEPOINT request").await {
            let error = crate::error::translate(&e);
            fail_unrun(work, error.clone());
            broken = Some(error);
            continue;
        }
        let pending = work.run(&mut conn).await;
        let end = if pending.succeeded() {
            conn.execute("RELEASE request").await
        } else {
            match conn.execute("ROLLBACK TO request").await {
                Ok(_) => conn.execute("RELEASE request").await,
                Err(e) => Err(e),
            }
        };
        if let Err(e) = end {
            // The transaction is no longer usable (SQLite may have rolled it back after an
            // I/O error): nothing of the batch commits.
            broken = Some(crate::error::translate(&e));
        }
        done.push(pending);
    }
    // The head this batch commits (None before the feed's migration, or on a failure that
    // COMMIT will report anyway).
    let committed = if broken.is_none() {
        sqlx::query_scalar::<_, i64>(crate::feed::HEAD_SQL)
            .fetch_one(&mut *conn)
            .await
            .ok()
            .and_then(|pos| FeedPos::from_i64(pos).ok())
    } else {
        None
    };
    let outcome = match broken {
        Some(error) => {
            let _ = conn.execute("ROLLBACK").await;
            Some(error)
        }
        None => match conn.execute("COMMIT").await {
            Ok(_) => {
                if let Some(pos) = committed {
                    head.send_if_modified(|current| {
                        let newer = pos > *current;
                        if newer {
                            *current = pos;
                        }
                        newer
                    });
                }
                None
            }
            Err(e) => {
                tracing::error!(error = %e, "commit of a write batch failed");
                let error = crate::error::translate(&e);
                // Leave no transaction open on the connection whatever happened.
                let _ = conn.execute("ROLLBACK").await;
                Some(error)
            }
        },
    };
    if outcome.is_some() {
        // Do not return a connection in an unknown state to the pool.
        let _ = conn.detach().close().await;
    }
    for pending in done {
        pending.deliver(outcome.clone());
    }
}

/// Answers a request that did not run with `error`.
fn fail_unrun(work: Work, error: StoreError) {
    work.refuse(error);
}
