//! Group commit of concurrent sends: `append_message` calls that arrive while the database is
//! busy are queued and stored together, in one transaction with set-based statements, by a
//! few background workers. Under load this turns many small transactions (seven statements
//! each) into one of about nine statements for the whole batch; alone, a send takes the
//! one-message path as before.
//!
//! A batch decides every request's rule (unknown conversation or sender, idempotent repeat,
//! archived) from reads made under the conversations' row locks before it writes anything, so
//! one refused request never fails the others. A batch whose writes fail before `COMMIT` (a
//! deadlock, a duplicate key of a writer that does not take the conversation lock, a foreign
//! key) is rolled back and each of its requests is re-run alone by its caller.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chat_domain::{ConversationId, MessageId, UserId};
use chat_ports::{Appended, NewMessage, StoreConflict, StoreError};
use sqlx::mysql::MySqlPool;
use sqlx::{MySqlConnection, Row};
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::MySqlStore;
use crate::error::{Failure, Outcome};
use crate::messages::stored_view;
use crate::rows::{self, NAME_EXPR, db_time, placeholders};

/// How many requests one transaction takes at most.
const MAX_BATCH: usize = 64;

/// How many batches run at once. Each holds one connection for its transaction; while they
/// run, new requests queue up and form the next batches.
const WORKERS: usize = 3;

/// What a worker answers for one request.
#[derive(Debug)]
pub(crate) enum Reply {
    /// Stored by the batch, or refused with the port error.
    Done(Box<Result<Appended, StoreError>>),
    /// An earlier message with the same idempotency key, to be read by the caller.
    Original {
        /// The original.
        id: MessageId,
        /// The active participants.
        recipients: Vec<UserId>,
    },
    /// The batch was rolled back before anything was stored: run the request alone.
    RunAlone,
}

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
    pub(crate) fn start(pool: MySqlPool) -> Self {
        let (queue, receiver) = mpsc::unbounded_channel();
        let receiver = Arc::new(Mutex::new(receiver));
        let counters = Arc::new(Counters::default());
        for _ in 0..WORKERS {
            let receiver = Arc::clone(&receiver);
            let counters = Arc::clone(&counters);
            // A store without an appender of its own: the worker runs single appends with
            // the one-message path directly, and holds no sender of its own queue.
            let store = MySqlStore::new(pool.clone());
            tokio::spawn(work(store, receiver, counters));
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
    store: MySqlStore,
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
                let answer = store.append_alone(&request.new).await;
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
        let replies = match store_batch(store.pool(), &news).await {
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

/// A conversation of the batch, as read under its row lock and as the batch leaves it.
#[derive(Debug, Default)]
struct ConversationState {
    last_seq: i64,
    is_archived: bool,
    /// Active participants: user → read marker (moved by the batch's sends).
    markers: HashMap<i64, i64>,
    /// Active participants, in the order read.
    recipients: Vec<UserId>,
    /// The batch's new messages here: (seq, sender, counts as unread for others, time).
    sends: Vec<(i64, i64, bool, time::OffsetDateTime)>,
}

/// What the batch decided for one request.
#[derive(Debug)]
enum Decision {
    Refused(StoreError),
    Original(MessageId),
    /// A repeat of a new message earlier in the same batch (index into the batch).
    RepeatOf(usize),
    New {
        seq: i64,
    },
}

/// A receipt range: `reader` passes the others' live messages of `conversation` with seq in
/// `(after, up_to]` at `at`.
struct ReceiptRange {
    conversation: ConversationId,
    reader: i64,
    after: i64,
    up_to: i64,
    at: time::OffsetDateTime,
}

/// Stores a batch in one transaction and decides each request's answer.
async fn store_batch(pool: &MySqlPool, news: &[&NewMessage]) -> Result<Vec<Reply>, BatchFailure> {
    let mut tx = pool
        .begin()
        .await
        .map_err(|e| BatchFailure::BeforeCommit(e.into()))?;
    let decided = decide_and_write(&mut tx, news)
        .await
        .map_err(BatchFailure::BeforeCommit)?;
    tx.commit()
        .await
        .map_err(|e| BatchFailure::AtCommit(e.into()))?;
    Ok(decided)
}

async fn decide_and_write(conn: &mut MySqlConnection, news: &[&NewMessage]) -> Outcome<Vec<Reply>> {
    let mut conversations: Vec<ConversationId> = news.iter().map(|n| n.conversation_id).collect();
    conversations.sort_by_key(|id| id.to_string());
    conversations.dedup();
    let conversation_keys: Vec<String> = conversations.iter().map(ToString::to_string).collect();
    let mut states = lock_conversations(conn, &conversation_keys).await?;
    let names = read_memberships(conn, &conversation_keys, news, &mut states).await?;
    let existing = probe_client_ids(conn, news).await?;

    // Decide in queue order: the first request of a conversation gets the next seq.
    let mut decisions = Vec::with_capacity(news.len());
    let mut receipts = Vec::new();
    let mut new_keys: HashMap<(ConversationId, i64, &[u8]), usize> = HashMap::new();
    for (index, new) in news.iter().enumerate() {
        let sender = new.sender_id.get();
        let Some(state) = states.get_mut(&new.conversation_id) else {
            decisions.push(Decision::Refused(StoreError::NotFound));
            continue;
        };
        let Some(&marker) = state.markers.get(&sender) else {
            // Not an active participant: for them the conversation does not exist.
            decisions.push(Decision::Refused(StoreError::NotFound));
            continue;
        };
        let key = new
            .client_message_id
            .as_ref()
            .map(|c| (new.conversation_id, sender, c.as_str().as_bytes()));
        if let Some(key) = key {
            if let Some(id) = existing.get(&(key.0, key.1, key.2.to_vec())) {
                decisions.push(Decision::Original(*id));
                continue;
            }
            if let Some(&first) = new_keys.get(&key) {
                decisions.push(Decision::RepeatOf(first));
                continue;
            }
        }
        if state.is_archived {
            decisions.push(Decision::Refused(StoreError::Conflict(
                StoreConflict::ConversationArchived,
            )));
            continue;
        }
        let seq = state.last_seq + 1;
        state.last_seq = seq;
        let at = db_time(new.created_at);
        if seq - 1 > marker {
            receipts.push(ReceiptRange {
                conversation: new.conversation_id,
                reader: sender,
                after: marker,
                up_to: seq - 1,
                at,
            });
        }
        state.markers.insert(sender, seq);
        state.sends.push((seq, sender, !new.body.is_system(), at));
        if let Some(key) = key {
            new_keys.insert(key, index);
        }
        decisions.push(Decision::New { seq });
    }

    let created: Vec<(&NewMessage, i64)> = news
        .iter()
        .zip(&decisions)
        .filter_map(|(new, d)| match d {
            Decision::New { seq } => Some((*new, *seq)),
            _ => None,
        })
        .collect();
    if !created.is_empty() {
        insert_messages(conn, &created).await?;
        advance_conversations(conn, &states).await?;
        record_receipts(conn, &receipts).await?;
        update_memberships(conn, &states).await?;
    }

    let mut views: Vec<Option<chat_domain::MessageView>> = Vec::with_capacity(news.len());
    for (new, decision) in news.iter().zip(&decisions) {
        views.push(match decision {
            Decision::New { seq } => Some(stored_view(
                new,
                *seq,
                names.get(&new.sender_id.get()).cloned().flatten(),
            )),
            _ => None,
        });
    }
    let recipients_of = |id: &ConversationId| {
        states
            .get(id)
            .map(|s| s.recipients.clone())
            .unwrap_or_default()
    };
    let replies = news
        .iter()
        .zip(decisions)
        .enumerate()
        .map(|(index, (new, decision))| match decision {
            Decision::Refused(error) => Reply::Done(Box::new(Err(error))),
            Decision::Original(id) => Reply::Original {
                id,
                recipients: recipients_of(&new.conversation_id),
            },
            // The first of the key is a new message of this batch, so its view exists; were
            // it missing, the request would be safe to run alone (its key finds the original).
            Decision::RepeatOf(first) => match views.get(first).cloned().flatten() {
                Some(view) => Reply::Done(Box::new(Ok(Appended {
                    view,
                    created: false,
                    recipients: recipients_of(&new.conversation_id),
                }))),
                None => Reply::RunAlone,
            },
            Decision::New { .. } => Reply::Done(Box::new(
                views
                    .get(index)
                    .cloned()
                    .flatten()
                    .map(|view| Appended {
                        view,
                        created: true,
                        recipients: recipients_of(&new.conversation_id),
                    })
                    .ok_or_else(|| StoreError::Unavailable("stored message not built".into())),
            )),
        })
        .collect();
    Ok(replies)
}

/// Locks the batch's conversations in id order (so that concurrent batches and single
/// appends, which lock one, never wait on each other in a cycle) and reads their state.
async fn lock_conversations(
    conn: &mut MySqlConnection,
    keys: &[String],
) -> Outcome<HashMap<ConversationId, ConversationState>> {
    let sql = format!(
        "SELECT c.id, c.last_seq, c.is_archived FROM CONVERSATIONS c \
         WHERE c.id IN ({}) ORDER BY c.id FOR UPDATE",
        placeholders(keys.len())
    );
    let mut query = sqlx::query(&sql);
    for key in keys {
        query = query.bind(key);
    }
    let mut states = HashMap::new();
    for row in query.fetch_all(&mut *conn).await? {
        let id = rows::conversation_id(&row.try_get::<String, _>("id")?)?;
        states.insert(
            id,
            ConversationState {
                last_seq: row.try_get("last_seq")?,
                is_archived: row
                    .try_get::<Option<bool>, _>("is_archived")?
                    .unwrap_or(false),
                ..ConversationState::default()
            },
        );
    }
    Ok(states)
}

/// Reads the active memberships of the locked conversations (markers, recipients) and the
/// senders' display names, in one query. Returns the names by user.
async fn read_memberships(
    conn: &mut MySqlConnection,
    keys: &[String],
    news: &[&NewMessage],
    states: &mut HashMap<ConversationId, ConversationState>,
) -> Outcome<HashMap<i64, Option<String>>> {
    let senders: Vec<i64> = news
        .iter()
        .map(|n| n.sender_id.get())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let sql = format!(
        "SELECT p.conversation_id, p.user_id, p.last_read_seq, \
           IF(u.id IS NULL, 0, 1) AS named, {NAME_EXPR} AS sender_name \
         FROM CONVERSATION_PARTICIPANTS p \
         LEFT JOIN app_users u ON u.id = p.user_id AND u.id IN ({}) \
         WHERE p.conversation_id IN ({}) AND p.left_at IS NULL",
        placeholders(senders.len()),
        placeholders(keys.len())
    );
    let mut query = sqlx::query(&sql);
    for sender in &senders {
        query = query.bind(sender);
    }
    for key in keys {
        query = query.bind(key);
    }
    let mut names = HashMap::new();
    for row in query.fetch_all(&mut *conn).await? {
        let id = rows::conversation_id(&row.try_get::<String, _>("conversation_id")?)?;
        let user: i64 = row.try_get("user_id")?;
        if row.try_get::<i64, _>("named")? == 1 {
            names.insert(user, row.try_get::<Option<String>, _>("sender_name")?);
        }
        if let Some(state) = states.get_mut(&id) {
            state.markers.insert(user, row.try_get("last_read_seq")?);
            state.recipients.push(rows::user_id(user)?);
        }
    }
    Ok(names)
}

/// The stored messages with the batch's idempotency keys: (conversation, sender, key) → id.
/// Read under the conversations' locks, so no append of the service can add one meanwhile.
async fn probe_client_ids(
    conn: &mut MySqlConnection,
    news: &[&NewMessage],
) -> Outcome<HashMap<(ConversationId, i64, Vec<u8>), MessageId>> {
    let keyed: Vec<&NewMessage> = news
        .iter()
        .copied()
        .filter(|n| n.client_message_id.is_some())
        .collect();
    let mut found = HashMap::new();
    if keyed.is_empty() {
        return Ok(found);
    }
    let conditions = vec![
        "(m.conversation_id = ? AND m.sender_id = ? AND m.client_message_id = ?)";
        keyed.len()
    ]
    .join(" OR ");
    let sql = format!(
        "SELECT m.id, m.conversation_id, m.sender_id, m.client_message_id FROM MESSAGES m \
         WHERE {conditions}"
    );
    let mut query = sqlx::query(&sql);
    for new in &keyed {
        query = query
            .bind(new.conversation_id.to_string())
            .bind(new.sender_id.get())
            .bind(
                new.client_message_id
                    .as_ref()
                    .map(|c| c.as_str().as_bytes()),
            );
    }
    for row in query.fetch_all(&mut *conn).await? {
        let conversation = rows::conversation_id(&row.try_get::<String, _>("conversation_id")?)?;
        let key: Vec<u8> = row.try_get("client_message_id")?;
        found.insert(
            (conversation, row.try_get("sender_id")?, key),
            rows::message_id(&row.try_get::<String, _>("id")?)?,
        );
    }
    Ok(found)
}

/// One multi-row `INSERT` of the new messages.
async fn insert_messages(
    conn: &mut MySqlConnection,
    created: &[(&NewMessage, i64)],
) -> Result<(), sqlx::Error> {
    let sql = format!(
        "INSERT INTO MESSAGES (id, conversation_id, seq, sender_id, content, message_type, \
         media_url, media_metadata, reply_to_id, client_message_id, created_at, \
         is_system_message) VALUES {}",
        vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"; created.len()].join(", ")
    );
    let mut query = sqlx::query(&sql);
    for (new, seq) in created {
        let body = &new.body;
        query = query
            .bind(new.id.to_string())
            .bind(new.conversation_id.to_string())
            .bind(*seq)
            .bind(new.sender_id.get())
            .bind(body.content().as_str())
            .bind(body.message_type().as_str())
            .bind(body.media_url().map(|u| u.as_str()))
            .bind(body.media_metadata().map(|m| m.as_json()))
            .bind(new.reply_to_id.map(|r| r.to_string()))
            .bind(
                new.client_message_id
                    .as_ref()
                    .map(|c| c.as_str().as_bytes()),
            )
            .bind(db_time(new.created_at))
            .bind(body.is_system());
    }
    query.execute(&mut *conn).await?;
    Ok(())
}

/// One `UPDATE` of every conversation that got messages: `last_seq` and `last_message_at`
/// (the time of its last message in the batch).
async fn advance_conversations(
    conn: &mut MySqlConnection,
    states: &HashMap<ConversationId, ConversationState>,
) -> Result<(), sqlx::Error> {
    let advanced: Vec<(String, i64, time::OffsetDateTime)> = states
        .iter()
        .filter_map(|(id, s)| {
            s.sends
                .last()
                .map(|&(_, _, _, at)| (id.to_string(), s.last_seq, at))
        })
        .collect();
    let cases = vec!["WHEN ? THEN ?"; advanced.len()].join(" ");
    let sql = format!(
        "UPDATE CONVERSATIONS SET last_seq = CASE CAST(id AS BINARY) {cases} END, \
         last_message_at = CASE CAST(id AS BINARY) {cases} END WHERE id IN ({})",
        placeholders(advanced.len())
    );
    let mut query = sqlx::query(&sql);
    for (id, seq, _) in &advanced {
        query = query.bind(id.as_bytes()).bind(*seq);
    }
    for (id, _, at) in &advanced {
        query = query.bind(id.as_bytes()).bind(*at);
    }
    for (id, _, _) in &advanced {
        query = query.bind(id);
    }
    query.execute(&mut *conn).await?;
    Ok(())
}

/// Receipts for what each sender passes by answering, in one `INSERT … SELECT` (one branch
/// per range, each a range of `uq_messages_conversation_seq` with constant bounds). The
/// messages inserted earlier in the batch are visible to it: a sender passes the others'
/// messages of the same batch too. Receipts already there are kept as they are.
async fn record_receipts(
    conn: &mut MySqlConnection,
    ranges: &[ReceiptRange],
) -> Result<(), sqlx::Error> {
    if ranges.is_empty() {
        return Ok(());
    }
    let branches = vec![
        "SELECT UUID(), m.id, ?, ? FROM MESSAGES m \
         WHERE m.conversation_id = ? AND m.seq > ? AND m.seq <= ? \
           AND m.sender_id <> ? AND m.deleted_at IS NULL";
        ranges.len()
    ]
    .join(" UNION ALL ");
    let sql = format!(
        "INSERT INTO MESSAGE_READ_RECEIPTS (id, message_id, user_id, read_at) {branches} \
         ON DUPLICATE KEY UPDATE MESSAGE_READ_RECEIPTS.read_at = MESSAGE_READ_RECEIPTS.read_at"
    );
    let mut query = sqlx::query(&sql);
    for range in ranges {
        query = query
            .bind(range.reader)
            .bind(range.at)
            .bind(range.conversation.to_string())
            .bind(range.after)
            .bind(range.up_to)
            .bind(range.reader);
    }
    query.execute(&mut *conn).await?;
    Ok(())
}

/// The membership side of the batch in one `UPDATE` over the active memberships of the
/// conversations that got messages (the single-append rules, applied for several messages):
/// - `activity_at` = the time of the conversation's last message in the batch;
/// - a participant who sent in the batch: marker → their last seq (`last_read_at` its time),
///   `unread_count` = the others' non-SYSTEM messages of the batch after it (everything below
///   is read now, and nothing above the batch exists under the lock);
/// - everyone else: `unread_count` + the batch's non-SYSTEM messages there.
async fn update_memberships(
    conn: &mut MySqlConnection,
    states: &HashMap<ConversationId, ConversationState>,
) -> Result<(), sqlx::Error> {
    struct SenderRow {
        conversation: String,
        user: i64,
        seq: i64,
        at: time::OffsetDateTime,
        unread: i64,
    }
    let mut senders = Vec::new();
    let mut conversations = Vec::new();
    for (id, state) in states {
        let Some(&(_, _, _, last_at)) = state.sends.last() else {
            continue;
        };
        let key = id.to_string();
        let added = state.sends.iter().filter(|s| s.2).count();
        conversations.push((
            key.clone(),
            last_at,
            i64::try_from(added).unwrap_or(i64::MAX),
        ));
        let mut last_of: HashMap<i64, (i64, time::OffsetDateTime)> = HashMap::new();
        for &(seq, sender, _, at) in &state.sends {
            last_of.insert(sender, (seq, at));
        }
        for (user, (seq, at)) in last_of {
            let unread = state
                .sends
                .iter()
                .filter(|s| s.0 > seq && s.1 != user && s.2)
                .count();
            senders.push(SenderRow {
                conversation: key.clone(),
                user,
                seq,
                at,
                unread: i64::try_from(unread).unwrap_or(i64::MAX),
            });
        }
    }
    let sender_cases =
        vec!["WHEN user_id = ? AND CAST(conversation_id AS BINARY) = ? THEN ?"; senders.len()]
            .join(" ");
    let sender_seq_cases = vec![
        "WHEN user_id = ? AND CAST(conversation_id AS BINARY) = ? THEN GREATEST(last_read_seq, ?)";
        senders.len()
    ]
    .join(" ");
    let conversation_cases = vec!["WHEN ? THEN ?"; conversations.len()].join(" ");
    let sql = format!(
        "UPDATE CONVERSATION_PARTICIPANTS SET \
           unread_count = CASE {sender_cases} \
             ELSE unread_count + CASE CAST(conversation_id AS BINARY) {conversation_cases} ELSE 0 END END, \
           last_read_seq = CASE {sender_seq_cases} ELSE last_read_seq END, \
           last_read_at = CASE {sender_cases} ELSE last_read_at END, \
           activity_at = CASE CAST(conversation_id AS BINARY) {conversation_cases} ELSE activity_at END \
         WHERE conversation_id IN ({}) AND left_at IS NULL",
        placeholders(conversations.len())
    );
    let mut query = sqlx::query(&sql);
    for s in &senders {
        query = query
            .bind(s.user)
            .bind(s.conversation.as_bytes())
            .bind(s.unread);
    }
    for (key, _, added) in &conversations {
        query = query.bind(key.as_bytes()).bind(*added);
    }
    for s in &senders {
        query = query
            .bind(s.user)
            .bind(s.conversation.as_bytes())
            .bind(s.seq);
    }
    for s in &senders {
        query = query
            .bind(s.user)
            .bind(s.conversation.as_bytes())
            .bind(s.at);
    }
    for (key, at, _) in &conversations {
        query = query.bind(key.as_bytes()).bind(*at);
    }
    for (key, _, _) in &conversations {
        query = query.bind(key);
    }
    query.execute(&mut *conn).await?;
    Ok(())
}
