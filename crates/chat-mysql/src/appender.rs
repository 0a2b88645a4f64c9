//! Group commit of concurrent sends: `append_message` calls that arrive while the database is
//! busy are queued and stored together, in one transaction with set-based statements, by a
//! few background workers. Under load this turns many small transactions (five to seven
//! statements each) into one of about as many statements for the whole batch; alone, a send
//! is a batch of one in a transaction of its own.
//!
//! The workers are *shards by conversation*: a send goes to the queue of the worker its
//! conversation hashes to, so the batches running at once never lock the same conversation
//! row. Sends into one hot conversation never wait for another worker's `COMMIT` holding
//! its lock (each batch takes every send queued for its conversations, one lock and one
//! fsync for all of them), and the shards' transactions commit side by side, their fsyncs
//! grouped by InnoDB. Before the shards, every worker took whatever was queued, so with a
//! few hot conversations each batch locked the rows the batch before it still held and the
//! workers ran one after another (`docs/benchmarks.md`, hot conversations).
//!
//! A batch is decided and stored by `send`, as a lone send is. A batch whose writes fail
//! before `COMMIT` (a deadlock, a duplicate key of a writer that does not take the
//! conversation lock, a foreign key) is rolled back and each of its requests is re-run alone
//! by its caller.
//!
//! The appender is a component of the store, not of a request: its workers are spawned when
//! the store is opened, on the runtime that opens it (chatd's main runtime, which outlives
//! every HTTP worker), and stop only when the store is shut down
//! ([`Appender::shut_down`]: no new sends; what is queued or in flight is finished and
//! answered) or dropped. Its queues are bounded together: a send that finds `capacity`
//! sends already queued is answered `Unavailable` at once. Each request carries a deadline
//! (the acquire timeout plus the statement timeout): its caller stops waiting then, a
//! worker never starts a request whose deadline has passed, and every stage of a batch
//! (taking a connection, its statements, `COMMIT`) is bounded by the earliest deadline of
//! the batch, so a database outage answers every queued send by its deadline instead of
//! one after another. A connection whose
//! statement was cut short by a deadline is closed, never returned to the pool.
//!
//! A batch whose `COMMIT` failed or timed out has an unknown outcome. The worker finds it
//! out on another connection: it locks the batch's conversation rows (which waits for the
//! old transaction, should the server still be running it) and looks for the messages the
//! batch wrote, by id, retrying until the deadline. Committed, the batch's answers stand
//! (so the caller publishes what was stored); not committed, every request is answered
//! `Unavailable`; still unknown at the deadline, `Unavailable` saying so.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use chat_crypto::MessageCipher;
use chat_domain::ConversationId;
use chat_ports::{NewMessage, StoreError};
use sqlx::mysql::MySqlPool;
use sqlx::pool::PoolConnection;
use sqlx::{Connection, MySql, MySqlConnection, QueryBuilder, Transaction};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout_at};

use crate::error::Failure;
use crate::send::{Reply, decide_and_write};
use crate::writes::{lock_conversations, push_list};

/// How many requests one transaction takes at most.
const MAX_BATCH: usize = 64;

/// How many batches run at once: one worker per shard of the conversations. Each holds one
/// connection for its transaction; while they run, new requests queue up and form the
/// next batches.
const WORKERS: usize = 4;

/// How long a caller waits past its deadline for the worker's answer: the worker answers by
/// the deadline, this covers the hand-over.
const ANSWER_GRACE: Duration = Duration::from_millis(250);

/// How long the worker waits between two attempts to find out an unknown `COMMIT`.
const RESOLVE_PAUSE: Duration = Duration::from_millis(50);

/// The answer to a send the database did not answer in time.
pub(crate) const TIMED_OUT: &str = "the database did not answer in time";

/// One queued `append_message` call.
#[derive(Debug)]
struct Request {
    new: NewMessage,
    reply: oneshot::Sender<Reply>,
    /// When the caller stops waiting.
    deadline: Instant,
}

/// What the workers share.
#[derive(Debug)]
struct Shared {
    pool: MySqlPool,
    /// Seals the messages of every batch (docs/security.md).
    cipher: MessageCipher,
    /// Requests queued in every shard and not yet taken by their worker.
    queued: AtomicUsize,
    counters: Counters,
}

/// The queues of pending appends (one per shard) and their workers, started with the store.
#[derive(Debug)]
pub(crate) struct Appender {
    /// One queue per worker; a conversation always goes to the same one. `None` once
    /// [`Appender::shut_down`] began: new sends are refused. Taken and sent under the
    /// lock, so no send is queued after the workers were told to finish what is queued.
    shards: std::sync::Mutex<Option<Vec<mpsc::UnboundedSender<Request>>>>,
    /// How many requests may wait in the queues together.
    capacity: usize,
    shared: Arc<Shared>,
    /// Tells the workers to finish what is queued and stop.
    stop: watch::Sender<bool>,
    workers: std::sync::Mutex<Vec<JoinHandle<()>>>,
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

/// An answer of `Unavailable` for each of `count` requests.
fn unavailable(count: usize, why: &str) -> Vec<Reply> {
    (0..count)
        .map(|_| Reply::Done(Box::new(Err(StoreError::Unavailable(why.to_owned())))))
        .collect()
}

impl Appender {
    /// Starts the workers on the tokio runtime of `runtime`, with room for `capacity`
    /// queued requests. They stop when the appender is shut down or dropped.
    pub(crate) fn start(
        pool: MySqlPool,
        capacity: usize,
        runtime: &tokio::runtime::Handle,
        cipher: MessageCipher,
    ) -> Self {
        let (stop, stopped) = watch::channel(false);
        let shared = Arc::new(Shared {
            pool,
            cipher,
            queued: AtomicUsize::new(0),
            counters: Counters::default(),
        });
        let mut shards = Vec::with_capacity(WORKERS);
        let mut workers = Vec::with_capacity(WORKERS);
        for _ in 0..WORKERS {
            let (queue, receiver) = mpsc::unbounded_channel();
            shards.push(queue);
            workers.push(runtime.spawn(work(Arc::clone(&shared), receiver, stopped.clone())));
        }
        Self {
            shards: std::sync::Mutex::new(Some(shards)),
            capacity: capacity.max(1),
            shared,
            stop,
            workers: std::sync::Mutex::new(workers),
        }
    }

    /// The totals so far.
    pub(crate) fn stats(&self) -> AppendStats {
        let counters = &self.shared.counters;
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        AppendStats {
            transactions: get(&counters.transactions),
            batches: get(&counters.batches),
            batched_requests: get(&counters.batched),
            rolled_back: get(&counters.rolled_back),
        }
    }

    /// Queues `new` and waits for its batch, at most until `deadline` (and a hand-over
    /// grace). [`Reply::RunAlone`] when the workers are gone (nothing having been done).
    ///
    /// # Errors
    /// `Unavailable` at once when the queue is full or the store is shutting down, and when
    /// no answer came by the deadline.
    pub(crate) async fn submit(
        &self,
        new: NewMessage,
        deadline: Instant,
    ) -> Result<Reply, StoreError> {
        let (reply, answer) = oneshot::channel();
        let shard = shard_of(new.conversation_id);
        let request = Request {
            new,
            reply,
            deadline,
        };
        {
            let shards = self
                .shards
                .lock()
                .map_err(|_| StoreError::Unavailable("the append queue is broken".into()))?;
            let Some(shards) = shards.as_ref() else {
                return Err(StoreError::Unavailable(
                    "the store is shutting down; the send was not stored".into(),
                ));
            };
            if self.shared.queued.fetch_add(1, Ordering::AcqRel) >= self.capacity {
                self.shared.queued.fetch_sub(1, Ordering::AcqRel);
                return Err(StoreError::Unavailable(
                    "too many sends are waiting for the database (the append queue is full); \
                     the send was not stored"
                        .into(),
                ));
            }
            if shards[shard].send(request).is_err() {
                // The worker is gone (its runtime shut down): nothing was done.
                self.shared.queued.fetch_sub(1, Ordering::AcqRel);
                return Ok(Reply::RunAlone);
            }
        }
        match timeout_at(deadline + ANSWER_GRACE, answer).await {
            Ok(Ok(reply)) => Ok(reply),
            // A worker that vanished mid-batch (its runtime shut down) may or may not have
            // committed: the outcome is unknown, as when a connection drops during COMMIT.
            Ok(Err(_)) => Err(StoreError::Unavailable("the append was interrupted".into())),
            Err(_) => Err(StoreError::Unavailable(TIMED_OUT.into())),
        }
    }

    /// Refuses new sends, lets the workers finish what is queued and in flight (every
    /// caller is answered), and waits for them, at most `bound`. Whether they all stopped.
    pub(crate) async fn shut_down(&self, bound: Duration) -> bool {
        if let Ok(mut shards) = self.shards.lock() {
            // Dropping the senders: a worker's queue ends once it has taken what is queued.
            *shards = None;
        }
        let _ = self.stop.send(true);
        let workers = self
            .workers
            .lock()
            .map(|mut workers| std::mem::take(&mut *workers))
            .unwrap_or_default();
        let all = async {
            for worker in workers {
                let _ = worker.await;
            }
        };
        tokio::time::timeout(bound, all).await.is_ok()
    }
}

/// The shard (worker) of `conversation`: always the same for a conversation.
fn shard_of(conversation: ConversationId) -> usize {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    conversation.hash(&mut hasher);
    usize::try_from(hasher.finish() % WORKERS as u64).unwrap_or(0)
}

/// A worker of one shard: takes whatever is queued in its queue (up to [`MAX_BATCH`],
/// without waiting for more) and stores it; once stopped, finishes what is queued and
/// returns.
async fn work(
    shared: Arc<Shared>,
    mut receiver: mpsc::UnboundedReceiver<Request>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let first = if *stop.borrow() {
            receiver.try_recv().ok()
        } else {
            tokio::select! {
                request = receiver.recv() => request,
                // Stopped (or the appender dropped): take what is left, if anything.
                _ = stop.changed() => receiver.try_recv().ok(),
            }
        };
        let Some(first) = first else {
            return;
        };
        let mut batch = vec![first];
        drain(&mut receiver, &mut batch);
        shared.queued.fetch_sub(batch.len(), Ordering::AcqRel);
        run(&shared, batch).await;
    }
}

/// Answers the requests whose deadline has passed (not started, so not stored), stores the
/// others in one transaction and answers them.
async fn run(shared: &Shared, batch: Vec<Request>) {
    let now = Instant::now();
    let (batch, late): (Vec<Request>, Vec<Request>) =
        batch.into_iter().partition(|r| r.deadline > now);
    for request in late {
        let why = format!("{TIMED_OUT}; the send was not stored");
        let _ = request
            .reply
            .send(Reply::Done(Box::new(Err(StoreError::Unavailable(why)))));
    }
    let Some(deadline) = batch.iter().map(|r| r.deadline).min() else {
        return;
    };
    let counters = &shared.counters;
    counters.transactions.fetch_add(1, Ordering::Relaxed);
    if batch.len() > 1 {
        tracing::trace!(size = batch.len(), "group commit of appends");
        counters.batches.fetch_add(1, Ordering::Relaxed);
        counters.batched.fetch_add(
            u64::try_from(batch.len()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }
    let news: Vec<&NewMessage> = batch.iter().map(|r| &r.new).collect();
    let replies = match store_batch(&shared.pool, &shared.cipher, &news, deadline).await {
        Ending::Answered(replies) => replies,
        Ending::RolledBack(failure) => {
            if news.len() > 1 {
                tracing::debug!(?failure, "batch of appends rolled back; running them alone");
                counters.rolled_back.fetch_add(1, Ordering::Relaxed);
            }
            news.iter().map(|_| Reply::RunAlone).collect()
        }
    };
    for (request, reply) in batch.into_iter().zip(replies) {
        // The caller may have given up waiting; the batch stands.
        let _ = request.reply.send(reply);
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

/// How a batch ended.
#[derive(Debug)]
enum Ending {
    /// Every request has its answer.
    Answered(Vec<Reply>),
    /// Rolled back before `COMMIT` by a failure of the batch itself (a deadlock, a
    /// duplicate key): nothing was stored; each request is run again alone.
    RolledBack(Failure),
}

/// Whether `failure` says the database is out of reach rather than something about the
/// batch: running the requests alone would only wait again.
fn is_outage(failure: &Failure) -> bool {
    use sqlx::Error as E;
    matches!(
        failure,
        Failure::Db(
            E::Io(_)
                | E::PoolTimedOut
                | E::PoolClosed
                | E::Protocol(_)
                | E::WorkerCrashed
                | E::Tls(_)
        )
    )
}

/// Writes the batch in a transaction on `conn`, leaving it open for `COMMIT`.
async fn write<'c>(
    conn: &'c mut MySqlConnection,
    cipher: &MessageCipher,
    news: &[&NewMessage],
) -> Result<(Transaction<'c, MySql>, Vec<Reply>), Failure> {
    let mut tx = conn.begin().await?;
    let replies = decide_and_write(&mut tx, cipher, news).await?;
    Ok((tx, replies))
}

/// Stores a batch in one transaction and decides each request's answer, every stage
/// bounded by `deadline`.
async fn store_batch(
    pool: &MySqlPool,
    cipher: &MessageCipher,
    news: &[&NewMessage],
    deadline: Instant,
) -> Ending {
    let not_stored = format!("{TIMED_OUT}; the send was not stored");
    let mut conn: PoolConnection<MySql> = match timeout_at(deadline, pool.acquire()).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(error)) => {
            let error = crate::error::translate(&error);
            return Ending::Answered(
                news.iter()
                    .map(|_| Reply::Done(Box::new(Err(error.clone()))))
                    .collect(),
            );
        }
        Err(_) => return Ending::Answered(unavailable(news.len(), &not_stored)),
    };
    let written = {
        let outcome = timeout_at(deadline, write(&mut conn, cipher, news)).await;
        match outcome {
            Err(_) => Written::TimedOut,
            Ok(Err(failure)) if is_outage(&failure) => Written::Outage(failure.into_store()),
            Ok(Err(failure)) => Written::RolledBack(failure),
            Ok(Ok((tx, replies))) => match timeout_at(deadline, tx.commit()).await {
                Ok(Ok(())) => Written::Committed(replies),
                Ok(Err(error)) => {
                    tracing::warn!(%error, "COMMIT of a batch of appends failed; finding out");
                    Written::Unknown(replies)
                }
                Err(_) => {
                    tracing::warn!("COMMIT of a batch of appends timed out; finding out");
                    Written::Unknown(replies)
                }
            },
        }
    };
    match written {
        Written::Committed(replies) => Ending::Answered(replies),
        Written::RolledBack(failure) => Ending::RolledBack(failure),
        Written::Outage(error) => Ending::Answered(
            news.iter()
                .map(|_| Reply::Done(Box::new(Err(error.clone()))))
                .collect(),
        ),
        Written::TimedOut => {
            // Cut short mid-statement: close the connection (the server rolls back what
            // was not committed) rather than return it to the pool in an unknown state.
            drop(conn.detach());
            Ending::Answered(unavailable(news.len(), &not_stored))
        }
        Written::Unknown(replies) => {
            // The connection is broken or stuck in COMMIT: never reuse it.
            drop(conn.detach());
            Ending::Answered(resolve(pool, news, replies, deadline).await)
        }
    }
}

/// How the statements of a batch ended.
enum Written {
    /// Committed: the answers stand.
    Committed(Vec<Reply>),
    /// Rolled back by a failure of the batch itself.
    RolledBack(Failure),
    /// The database is out of reach: nothing was stored.
    Outage(StoreError),
    /// The deadline passed before `COMMIT`: nothing was stored.
    TimedOut,
    /// `COMMIT` failed or timed out: the outcome is unknown.
    Unknown(Vec<Reply>),
}

/// Finds out whether a batch whose `COMMIT` outcome is unknown was stored, retrying until
/// `deadline`, and answers the truth.
async fn resolve(
    pool: &MySqlPool,
    news: &[&NewMessage],
    replies: Vec<Reply>,
    deadline: Instant,
) -> Vec<Reply> {
    let written: Vec<String> = replies
        .iter()
        .filter_map(|reply| match reply {
            Reply::Done(answer) => match answer.as_ref() {
                Ok(appended) if appended.created => Some(appended.view.message.id.to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    if written.is_empty() {
        // The batch wrote nothing: its answers (refusals, repeats) hold either way.
        return replies;
    }
    let conversations: Vec<ConversationId> = news.iter().map(|n| n.conversation_id).collect();
    loop {
        match timeout_at(deadline, stored_count(pool, &conversations, &written)).await {
            Ok(Ok(0)) => {
                tracing::info!("the unknown COMMIT of a batch did not happen");
                return unavailable(
                    news.len(),
                    "the database connection failed before the send was committed; the send \
                     was not stored",
                );
            }
            Ok(Ok(found)) => {
                if found != written.len() {
                    tracing::error!(found, written = written.len(), "a batch was stored in part");
                }
                tracing::info!("the unknown COMMIT of a batch happened");
                return replies;
            }
            Ok(Err(failure)) => {
                tracing::debug!(?failure, "finding out an unknown COMMIT failed; retrying");
                let pause = Instant::now() + RESOLVE_PAUSE;
                if pause >= deadline {
                    break;
                }
                tokio::time::sleep_until(pause).await;
            }
            Err(_) => break,
        }
    }
    unavailable(
        news.len(),
        "the database connection failed during COMMIT and the outcome could not be found out \
         in time; retry with the same client_message_id",
    )
}

/// How many of the messages `ids` are stored, read once the transactions holding the
/// conversations' locks (the batch's own, if the server is still running it) have ended.
async fn stored_count(
    pool: &MySqlPool,
    conversations: &[ConversationId],
    ids: &[String],
) -> Result<usize, Failure> {
    let mut tx = pool.begin().await?;
    lock_conversations(&mut tx, conversations).await?;
    let mut query = QueryBuilder::<MySql>::new("SELECT COUNT(*) FROM MESSAGES WHERE id IN ");
    push_list(&mut query, ids.iter().map(String::as_str));
    let count: i64 = query.build_query_scalar().fetch_one(&mut *tx).await?;
    tx.rollback().await?;
    Ok(usize::try_from(count).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conversation_always_goes_to_the_same_shard_and_conversations_spread_over_all() {
        let conversations: Vec<ConversationId> = (0..400).map(|_| ConversationId::new()).collect();
        let mut per_shard = [0usize; WORKERS];
        for conversation in &conversations {
            let shard = shard_of(*conversation);
            assert_eq!(shard, shard_of(*conversation));
            per_shard[shard] += 1;
        }
        // 400 random ids over 4 shards: each gets a fair share (100 expected).
        for count in per_shard {
            assert!((50..=150).contains(&count), "{per_shard:?}");
        }
    }
}
