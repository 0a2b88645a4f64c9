//! The statements of a send, each written once: the conversations' row lock, the
//! idempotency probe, and the writes that store messages (the multi-row `INSERT`, the
//! conversations' `last_seq` and counters, the senders' marker moves, the senders'
//! memberships: nothing per member of the group). A lone send, a batch of the group
//! commit, a conversation's announcement and the SYSTEM record of a change all store their
//! messages through [`write_sends`]. The receipts of a marker move are written after the
//! commit from its recorded move (`crate::receipts`), through [`record_receipts`].
//!
//! Multi-row statements are built with [`QueryBuilder`], each value bound next to its
//! placeholder.

use std::collections::{BTreeMap, HashMap};

use chat_crypto::MessageCipher;
use chat_domain::{ChangeKind, ConversationId, MessageId};
use chat_ports::NewMessage;
use sqlx::{MySql, MySqlConnection, QueryBuilder, Row};
use time::OffsetDateTime;

use crate::at_rest::StoredColumns;
use crate::change_log::{self, NewChange};
use crate::error::Outcome;
use crate::rows::{self, db_time};

/// The state of a conversation read under its row lock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LockedConversation {
    /// The newest seq handed out.
    pub(crate) last_seq: i64,
    /// Whether it is archived.
    pub(crate) is_archived: bool,
    /// Its activity time (`last_message_at`, else `created_at`), which every active
    /// membership carries as `activity_at`.
    pub(crate) activity_at: Option<OffsetDateTime>,
}

/// Locks the conversation rows (`FOR UPDATE`) in id order and reads their state: every
/// writer of `seq` and of the memberships takes this lock first, so they run one after the
/// other per conversation, and writers that lock several (a batch) never wait on each
/// other in a cycle. Unknown ids are absent from the answer.
pub(crate) async fn lock_conversations(
    conn: &mut MySqlConnection,
    ids: &[ConversationId],
) -> Outcome<HashMap<ConversationId, LockedConversation>> {
    let mut locked = HashMap::new();
    if ids.is_empty() {
        return Ok(locked);
    }
    let mut keys: Vec<String> = ids.iter().map(ToString::to_string).collect();
    keys.sort();
    keys.dedup();
    let mut query = QueryBuilder::<MySql>::new(
        "SELECT c.id, c.last_seq, c.is_archived, \
           COALESCE(c.last_message_at, c.created_at) AS activity_at \
         FROM CONVERSATIONS c WHERE c.id IN ",
    );
    push_list(&mut query, keys.iter().map(String::as_str));
    query.push(" ORDER BY c.id FOR UPDATE");
    for row in query.build().fetch_all(&mut *conn).await? {
        let id = rows::conversation_id(&row.try_get::<String, _>("id")?)?;
        locked.insert(
            id,
            LockedConversation {
                last_seq: row.try_get("last_seq")?,
                is_archived: row
                    .try_get::<Option<bool>, _>("is_archived")?
                    .unwrap_or(false),
                activity_at: row.try_get("activity_at")?,
            },
        );
    }
    Ok(locked)
}

/// Locks one conversation row (see [`lock_conversations`]); `None` when it does not exist.
pub(crate) async fn lock_conversation(
    conn: &mut MySqlConnection,
    id: ConversationId,
) -> Outcome<Option<LockedConversation>> {
    Ok(lock_conversations(conn, &[id]).await?.remove(&id))
}

/// The idempotency key of a send: (conversation, sender, key bytes).
pub(crate) type ClientKey = (ConversationId, i64, Vec<u8>);

/// The stored messages with the idempotency keys of `news` (those without a key are
/// skipped): key → id. Under the conversations' locks no append of the service can add one
/// meanwhile.
pub(crate) async fn probe_client_ids(
    conn: &mut MySqlConnection,
    news: &[&NewMessage],
) -> Outcome<HashMap<ClientKey, MessageId>> {
    let mut found = HashMap::new();
    let keyed: Vec<(&NewMessage, &str)> = news
        .iter()
        .filter_map(|n| n.client_message_id.as_ref().map(|c| (*n, c.as_str())))
        .collect();
    if keyed.is_empty() {
        return Ok(found);
    }
    let mut query = QueryBuilder::<MySql>::new(
        "SELECT m.id, m.conversation_id, m.sender_id, m.client_message_id FROM MESSAGES m \
         WHERE ",
    );
    let mut conditions = query.separated(" OR ");
    for (new, key) in keyed {
        conditions
            .push("(m.conversation_id = ")
            .push_bind_unseparated(new.conversation_id.to_string())
            .push_unseparated(" AND m.sender_id = ")
            .push_bind_unseparated(new.sender_id.get())
            .push_unseparated(" AND m.client_message_id = ")
            .push_bind_unseparated(key.as_bytes().to_vec())
            .push_unseparated(")");
    }
    for row in query.build().fetch_all(&mut *conn).await? {
        let conversation = rows::conversation_id(&row.try_get::<String, _>("conversation_id")?)?;
        let key: Vec<u8> = row.try_get("client_message_id")?;
        found.insert(
            (conversation, row.try_get("sender_id")?, key),
            rows::message_id(&row.try_get::<String, _>("id")?)?,
        );
    }
    Ok(found)
}

/// A receipt range: `reader` passes the others' live messages of `conversation` with seq in
/// `(after, up_to]` at `at`. An empty range records nothing.
#[derive(Debug, Clone)]
pub(crate) struct ReceiptRange {
    pub(crate) conversation: ConversationId,
    pub(crate) reader: i64,
    pub(crate) after: i64,
    pub(crate) up_to: i64,
    pub(crate) at: OffsetDateTime,
}

/// Stores `created` (each new message with its seq, in seq order per conversation) in
/// conversations whose rows the caller holds locked with `last_seq` just below the first of
/// them: inserts them, advances the conversations, records the senders' marker moves
/// (`receipts`: their receipts follow after the commit) and updates the senders'
/// memberships (see [`update_memberships`]).
pub(crate) async fn write_sends(
    conn: &mut MySqlConnection,
    cipher: &MessageCipher,
    created: &[(&NewMessage, i64)],
    receipts: &[ReceiptRange],
) -> Result<(), sqlx::Error> {
    if created.is_empty() {
        return Ok(());
    }
    let mut by_conversation: BTreeMap<String, Vec<Sent>> = BTreeMap::new();
    for (new, seq) in created {
        by_conversation
            .entry(new.conversation_id.to_string())
            .or_default()
            .push(Sent {
                seq: *seq,
                sender: new.sender_id.get(),
                unread_for_others: !new.body.is_system(),
                at: db_time(new.created_at),
            });
    }
    insert_messages(conn, cipher, created).await?;
    advance_conversations(conn, &by_conversation).await?;
    // The receipts themselves are written after the commit (crate::receipts).
    record_moves(conn, receipts).await?;
    update_memberships(conn, &by_conversation).await?;
    change_log::record(conn, &send_changes(created)).await
}

/// The feed's changes of stored sends, in order: each message's `message.created`, and
/// nothing else. The sender's marker move to it is implied (a `message.created` from X at
/// seq N means X's marker is at least N), so it is not logged: one row per send, and one
/// live frame per send to every member instead of two (`ChangeFeed` port doc).
fn send_changes(created: &[(&NewMessage, i64)]) -> Vec<NewChange> {
    created
        .iter()
        .map(|(new, _)| {
            NewChange::new(
                new.conversation_id,
                ChangeKind::MessageCreated { message_id: new.id },
            )
        })
        .collect()
}

/// Stores `new` as message `seq` of a conversation whose row the caller holds locked with
/// `last_seq = seq - 1` (see [`write_sends`]); the sender passes the others' messages above
/// `sender_marker`, their marker when they have a membership.
pub(crate) async fn insert_locked(
    conn: &mut MySqlConnection,
    new: &NewMessage,
    seq: i64,
    sender_marker: Option<i64>,
) -> Result<(), sqlx::Error> {
    let receipts: Vec<ReceiptRange> = sender_marker
        .map(|marker| ReceiptRange {
            conversation: new.conversation_id,
            reader: new.sender_id.get(),
            after: marker,
            up_to: seq - 1,
            at: db_time(new.created_at),
        })
        .into_iter()
        .collect();
    // Only the service's SYSTEM messages come this way, and they are stored plain.
    write_sends(conn, &MessageCipher::plain(), &[(new, seq)], &receipts).await
}

/// Records each non-empty move of `ranges` as one row, in the caller's transaction.
pub(crate) async fn record_moves(
    conn: &mut MySqlConnection,
    ranges: &[ReceiptRange],
) -> Result<(), sqlx::Error> {
    let moves: Vec<&ReceiptRange> = ranges.iter().filter(|r| r.up_to > r.after).collect();
    if moves.is_empty() {
        return Ok(());
    }
    let mut query = QueryBuilder::<MySql>::new(
        "INSERT INTO READ_MARKER_MOVES (conversation_id, user_id, after_seq, up_to_seq, moved_at) ",
    );
    query.push_values(moves, |mut row, range| {
        row.push_bind(range.conversation.to_string())
            .push_bind(range.reader)
            .push_bind(range.after)
            .push_bind(range.up_to)
            .push_bind(range.at);
    });
    query.build().execute(&mut *conn).await?;
    Ok(())
}

/// A message stored by [`write_sends`], as the conversation's statements need it.
#[derive(Debug, Clone, Copy)]
struct Sent {
    seq: i64,
    sender: i64,
    /// Not SYSTEM: it counts as unread for the other participants.
    unread_for_others: bool,
    at: OffsetDateTime,
}

/// One multi-row `INSERT` of the new messages.
async fn insert_messages(
    conn: &mut MySqlConnection,
    cipher: &MessageCipher,
    created: &[(&NewMessage, i64)],
) -> Result<(), sqlx::Error> {
    let stored: Vec<StoredColumns> = created
        .iter()
        .map(|(new, _)| StoredColumns::seal(cipher, new))
        .collect::<Result<_, _>>()?;
    let mut query = QueryBuilder::<MySql>::new(
        "INSERT INTO MESSAGES (id, conversation_id, seq, sender_id, content, message_type, \
         media_url, media_metadata, reply_to_id, client_message_id, created_at, \
         is_system_message, encryption_key_id, media_url_sealed) ",
    );
    query.push_values(
        created.iter().zip(stored),
        |mut row, ((new, seq), stored)| {
            let body = &new.body;
            row.push_bind(new.id.to_string())
                .push_bind(new.conversation_id.to_string())
                .push_bind(*seq)
                .push_bind(new.sender_id.get())
                .push_bind(stored.content)
                .push_bind(body.message_type().as_str())
                .push_bind(stored.media_url)
                .push_bind(stored.media_metadata)
                .push_bind(new.reply_to_id.map(|r| r.to_string()))
                .push_bind(
                    new.client_message_id
                        .as_ref()
                        .map(|c| c.as_str().as_bytes().to_vec()),
                )
                .push_bind(db_time(new.created_at))
                .push_bind(body.is_system())
                .push_bind(stored.key_id)
                .push_bind(stored.media_url_sealed);
        },
    );
    query.build().execute(&mut *conn).await?;
    Ok(())
}

/// One `UPDATE` of every conversation that got messages: `last_seq` and `last_message_at`
/// become those of its last new message, `counted_total` grows by its new countable
/// (non-SYSTEM) messages, and `activity_key` moves past its previous value to the server's
/// current microsecond (see `ACTIVITY_KEY_NEXT`).
async fn advance_conversations(
    conn: &mut MySqlConnection,
    by_conversation: &BTreeMap<String, Vec<Sent>>,
) -> Result<(), sqlx::Error> {
    let last: Vec<(&String, Sent, i64)> = by_conversation
        .iter()
        .filter_map(|(id, sent)| {
            let counted = sent.iter().filter(|s| s.unread_for_others).count();
            sent.last()
                .map(|s| (id, *s, i64::try_from(counted).unwrap_or(i64::MAX)))
        })
        .collect();
    let mut query =
        QueryBuilder::<MySql>::new("UPDATE CONVERSATIONS SET last_seq = CASE CAST(id AS BINARY)");
    for (id, sent, _) in &last {
        push_arm(&mut query, id, sent.seq);
    }
    query.push(" END, last_message_at = CASE CAST(id AS BINARY)");
    for (id, sent, _) in &last {
        push_arm(&mut query, id, sent.at);
    }
    query.push(" END, counted_total = counted_total + CASE CAST(id AS BINARY)");
    for (id, _, counted) in &last {
        push_arm(&mut query, id, *counted);
    }
    query.push(" ELSE 0 END, activity_key = ");
    query.push(ACTIVITY_KEY_NEXT);
    query.push(" WHERE id IN ");
    push_list(&mut query, last.iter().map(|(id, _, _)| id.as_str()));
    query.build().execute(&mut *conn).await?;
    Ok(())
}

/// The next `CONVERSATIONS.activity_key` of a row being updated: the server's current
/// microsecond, and at least one more than before (so that it strictly grows per
/// conversation even if the clock steps back or two writes share a microsecond). Taken under
/// the conversation's row lock, it orders the inbox in commit order within a conversation,
/// and across conversations in the order in which their writers held the lock.
pub(crate) const ACTIVITY_KEY_NEXT: &str =
    "GREATEST(activity_key + 1, CAST(UNIX_TIMESTAMP(NOW(6)) * 1000000 AS SIGNED))";

/// Receipts for what readers pass, in one `INSERT … SELECT` (one branch per non-empty
/// range, each a range of `uq_messages_conversation_seq` with constant bounds). Messages
/// inserted earlier in the transaction are visible to it: a sender passes the others'
/// messages of the same batch too. Receipts already there are kept as they are.
pub(crate) async fn record_receipts(
    conn: &mut MySqlConnection,
    ranges: &[ReceiptRange],
) -> Result<(), sqlx::Error> {
    let ranges: Vec<&ReceiptRange> = ranges.iter().filter(|r| r.up_to > r.after).collect();
    if ranges.is_empty() {
        return Ok(());
    }
    let mut query = QueryBuilder::<MySql>::new(
        "INSERT INTO MESSAGE_READ_RECEIPTS (id, message_id, user_id, read_at) ",
    );
    for (index, range) in ranges.into_iter().enumerate() {
        if index > 0 {
            query.push(" UNION ALL ");
        }
        query
            .push("SELECT UUID(), m.id, ")
            .push_bind(range.reader)
            .push(", ")
            .push_bind(range.at)
            .push(" FROM MESSAGES m WHERE m.conversation_id = ")
            .push_bind(range.conversation.to_string())
            .push(" AND m.seq > ")
            .push_bind(range.after)
            .push(" AND m.seq <= ")
            .push_bind(range.up_to)
            .push(" AND m.sender_id <> ")
            .push_bind(range.reader)
            .push(" AND m.deleted_at IS NULL");
    }
    query.push(
        " ON DUPLICATE KEY UPDATE MESSAGE_READ_RECEIPTS.read_at = MESSAGE_READ_RECEIPTS.read_at",
    );
    query.build().execute(&mut *conn).await?;
    Ok(())
}

/// A sender's membership after the send: their last new message's seq and time, and the
/// others' messages after it that stay unread for them.
struct SenderRow<'a> {
    conversation: &'a str,
    user: i64,
    seq: i64,
    at: OffsetDateTime,
    unread: i64,
}

impl SenderRow<'_> {
    /// ` WHEN <this membership>`: matches this sender's row.
    fn push_when(&self, query: &mut QueryBuilder<'_, MySql>) {
        query
            .push(" WHEN user_id = ")
            .push_bind(self.user)
            .push(" AND CAST(conversation_id AS BINARY) = ")
            .push_bind(self.conversation.as_bytes().to_vec());
    }
}

/// The membership side of the sends: one `UPDATE` of the **senders'** rows only, whatever
/// the size of the groups (the others' unread counts grow through the conversation's
/// `counted_total`, see [`advance_conversations`]). A sender's marker moves to their last
/// seq (`last_read_at` its time), their unread count becomes the others' non-SYSTEM new
/// messages after it (everything below is read now, and nothing above the new messages
/// exists under the lock) and their base `counted_total - unread`, read from the
/// conversation row updated just before. A sender with no membership has no row; a sender
/// who left (the SYSTEM record of their leaving) has theirs updated, harmlessly.
async fn update_memberships(
    conn: &mut MySqlConnection,
    by_conversation: &BTreeMap<String, Vec<Sent>>,
) -> Result<(), sqlx::Error> {
    let mut senders = Vec::new();
    for (id, sent) in by_conversation {
        let mut last_of: BTreeMap<i64, (i64, OffsetDateTime)> = BTreeMap::new();
        for s in sent {
            last_of.insert(s.sender, (s.seq, s.at));
        }
        for (user, (seq, at)) in last_of {
            let unread = sent
                .iter()
                .filter(|s| s.seq > seq && s.sender != user && s.unread_for_others)
                .count();
            senders.push(SenderRow {
                conversation: id,
                user,
                seq,
                at,
                unread: i64::try_from(unread).unwrap_or(i64::MAX),
            });
        }
    }
    if senders.is_empty() {
        return Ok(());
    }
    let mut query =
        QueryBuilder::<MySql>::new("UPDATE CONVERSATION_PARTICIPANTS SET unread_count = CASE");
    for s in &senders {
        s.push_when(&mut query);
        query.push(" THEN ").push_bind(s.unread);
    }
    query.push(
        " ELSE unread_count END, unread_base = (SELECT c.counted_total FROM CONVERSATIONS c \
         WHERE c.id = CONVERSATION_PARTICIPANTS.conversation_id) - CASE",
    );
    for s in &senders {
        s.push_when(&mut query);
        query.push(" THEN ").push_bind(s.unread);
    }
    query.push(" ELSE 0 END, last_read_seq = CASE");
    for s in &senders {
        s.push_when(&mut query);
        query
            .push(" THEN GREATEST(last_read_seq, ")
            .push_bind(s.seq)
            .push(")");
    }
    query.push(" ELSE last_read_seq END, last_read_at = CASE");
    for s in &senders {
        s.push_when(&mut query);
        query.push(" THEN ").push_bind(s.at);
    }
    query.push(" ELSE last_read_at END WHERE ");
    let mut rows = query.separated(" OR ");
    for s in &senders {
        rows.push("(user_id = ")
            .push_bind_unseparated(s.user)
            .push_unseparated(" AND conversation_id = ")
            .push_bind_unseparated(s.conversation.to_owned())
            .push_unseparated(")");
    }
    query.build().execute(&mut *conn).await?;
    Ok(())
}

/// ` WHEN <id> THEN <value>`: one arm of a `CASE CAST(<id column> AS BINARY)`, which
/// compares the ids byte by byte.
fn push_arm<'a, T>(query: &mut QueryBuilder<'a, MySql>, id: &str, value: T)
where
    T: 'a + sqlx::Encode<'a, MySql> + sqlx::Type<MySql>,
{
    query
        .push(" WHEN ")
        .push_bind(id.as_bytes().to_vec())
        .push(" THEN ")
        .push_bind(value);
}

/// `(<id>, <id>, …)`: the list of an `IN`, one bound value per id.
pub(crate) fn push_list<'a, 'i>(
    query: &mut QueryBuilder<'a, MySql>,
    ids: impl IntoIterator<Item = &'i str>,
) {
    query.push("(");
    let mut list = query.separated(", ");
    for id in ids {
        list.push_bind(id.to_owned());
    }
    query.push(")");
}
