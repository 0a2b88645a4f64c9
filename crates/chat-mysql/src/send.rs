//! What a transaction of sends decides and stores: a lone send is a batch of one, and a
//! batch of the group commit (`appender`) is decided the same way, request by request.
//!
//! A batch decides every request's rule (unknown conversation or sender, idempotent repeat,
//! archived) from reads made under the conversations' row locks before it writes anything,
//! so one refused request never fails the others; then it stores the new messages with the
//! set-based statements of `writes`.

use std::collections::{HashMap, HashSet};

use chat_crypto::MessageCipher;
use chat_domain::{ConversationId, MessageId, MessageView, Seq, UserId};
use chat_ports::{Appended, NewMessage, StoreConflict, StoreError};
use sqlx::mysql::MySqlPool;
use sqlx::{MySql, MySqlConnection, QueryBuilder, Row};

use crate::error::{Failure, Outcome, is_duplicate_of};
use crate::rows::{self, NAME_EXPR, db_time, find_view};
use crate::writes::{ReceiptRange, lock_conversations, probe_client_ids, push_list, write_sends};

/// The unique key of the idempotency key.
const CLIENT_ID_KEY: &str = "uq_messages_client_message_id";

/// What a batch answers for one request.
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

/// Appends one message in a transaction of its own (the path of a send that arrives alone,
/// and of a batch's requests when the batch was rolled back), re-run after a deadlock or
/// lock wait timeout.
pub(crate) async fn append_alone(
    pool: &MySqlPool,
    cipher: &MessageCipher,
    new: &NewMessage,
) -> Result<Appended, StoreError> {
    crate::retrying!(try_append_alone(pool, cipher, new))
}

async fn try_append_alone(
    pool: &MySqlPool,
    cipher: &MessageCipher,
    new: &NewMessage,
) -> Outcome<Appended> {
    match append_once(pool, cipher, new).await {
        // A racing send with the same key (from a writer that does not take the
        // conversation lock) committed after our probe: run again, the probe now finds it.
        Err(Failure::Db(e)) if is_duplicate_of(&e, CLIENT_ID_KEY) => {
            append_once(pool, cipher, new).await
        }
        other => other,
    }
}

async fn append_once(
    pool: &MySqlPool,
    cipher: &MessageCipher,
    new: &NewMessage,
) -> Outcome<Appended> {
    let mut tx = pool.begin().await?;
    let reply = decide_and_write(&mut tx, cipher, &[new]).await?.pop();
    tx.commit().await?;
    match reply {
        Some(Reply::Done(answer)) => (*answer).map_err(Failure::Store),
        Some(Reply::Original { id, recipients }) => original(pool, cipher, id, recipients).await,
        // A batch of one is never a repeat of another request of it.
        Some(Reply::RunAlone) | None => {
            Err(StoreError::Unavailable("the append was not decided".into()).into())
        }
    }
}

/// The answer to an idempotent repeat: the original as stored, read outside the batch's
/// transaction.
pub(crate) async fn original(
    pool: &MySqlPool,
    cipher: &MessageCipher,
    id: MessageId,
    recipients: Vec<UserId>,
) -> Outcome<Appended> {
    let mut conn = pool.acquire().await?;
    let view = find_view(&mut conn, cipher, id)
        .await?
        .ok_or(StoreError::Unavailable(
            "idempotent original vanished".into(),
        ))?;
    Ok(Appended {
        view,
        created: false,
        recipients,
    })
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

/// Decides each request of `news` under the conversations' locks, in queue order (the first
/// request of a conversation gets the next seq), stores the new messages, and answers each.
pub(crate) async fn decide_and_write(
    conn: &mut MySqlConnection,
    cipher: &MessageCipher,
    news: &[&NewMessage],
) -> Outcome<Vec<Reply>> {
    let conversations: Vec<ConversationId> = news.iter().map(|n| n.conversation_id).collect();
    let mut states: HashMap<ConversationId, ConversationState> =
        lock_conversations(conn, &conversations)
            .await?
            .into_iter()
            .map(|(id, locked)| {
                let state = ConversationState {
                    last_seq: locked.last_seq,
                    is_archived: locked.is_archived,
                    ..ConversationState::default()
                };
                (id, state)
            })
            .collect();
    let names = read_memberships(conn, news, &mut states).await?;
    let existing = probe_client_ids(conn, news).await?;

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
        // Receipts for what the sender passes by answering: the others' messages between
        // their marker and this one.
        receipts.push(ReceiptRange {
            conversation: new.conversation_id,
            reader: sender,
            after: marker,
            up_to: seq - 1,
            at: db_time(new.created_at),
        });
        state.markers.insert(sender, seq);
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
    write_sends(conn, cipher, &created, &receipts).await?;

    let views: Vec<Option<MessageView>> = news
        .iter()
        .zip(&decisions)
        .map(|(new, decision)| match decision {
            Decision::New { seq } => Some(new.to_stored_view(
                Seq::new(*seq).unwrap_or(Seq::ZERO),
                names.get(&new.sender_id.get()).cloned().flatten(),
            )),
            _ => None,
        })
        .collect();
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

/// Reads the active memberships of the locked conversations (markers, recipients) and the
/// senders' display names, in one query. Returns the names by user.
async fn read_memberships(
    conn: &mut MySqlConnection,
    news: &[&NewMessage],
    states: &mut HashMap<ConversationId, ConversationState>,
) -> Outcome<HashMap<i64, Option<String>>> {
    let mut names = HashMap::new();
    if states.is_empty() {
        return Ok(names);
    }
    let senders: HashSet<i64> = news.iter().map(|n| n.sender_id.get()).collect();
    let mut query = QueryBuilder::<MySql>::new(format!(
        "SELECT p.conversation_id, p.user_id, p.last_read_seq, \
           IF(u.id IS NULL, 0, 1) AS named, {NAME_EXPR} AS sender_name \
         FROM CONVERSATION_PARTICIPANTS p \
         LEFT JOIN app_users u ON u.id = p.user_id AND u.id IN ("
    ));
    let mut list = query.separated(", ");
    for sender in senders {
        list.push_bind(sender);
    }
    query.push(") WHERE p.conversation_id IN ");
    let ids: Vec<String> = states.keys().map(ToString::to_string).collect();
    push_list(&mut query, ids.iter().map(String::as_str));
    query.push(" AND p.left_at IS NULL");
    for row in query.build().fetch_all(&mut *conn).await? {
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
