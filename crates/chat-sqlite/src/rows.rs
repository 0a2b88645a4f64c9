//! Shared SQL fragments and the decoding of rows into domain values: conversations,
//! participants, messages and reactions, loaded in batches (one query per kind, never one
//! per item).

use std::collections::HashMap;

use chat_crypto::MessageCipher;
use chat_domain::{
    Conversation, ConversationDetails, ConversationId, ConversationType, Message, MessageId,
    MessageType, MessageView, Participant, ParticipantView, PostingId, ReactionSummary, Role, Seq,
    Timestamp, UserId,
};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};
use time::OffsetDateTime;

use crate::error::{Failure, Outcome};

/// A user's display name from `app_users` (alias `u`): first and last name joined by a
/// space, trimmed, or NULL (MySQL's `CONCAT_WS` over the non-empty parts).
pub(crate) const NAME_EXPR: &str = "NULLIF(TRIM(COALESCE(NULLIF(TRIM(u.first_name), ''), '') \
     || ' ' || COALESCE(NULLIF(TRIM(u.last_name), ''), '')), '')";

/// `?, ?, …` with `n` placeholders.
pub(crate) fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// The instant as stored: whole seconds since the epoch, UTC (the stored precision of
/// [`chat_domain::to_stored_precision`], as on MySQL).
pub(crate) fn db_time(at: Timestamp) -> i64 {
    at.unix_timestamp()
}

/// The stored instant, in UTC.
pub(crate) fn from_db_time(seconds: i64) -> Outcome<Timestamp> {
    OffsetDateTime::from_unix_timestamp(seconds).map_err(|_| Failure::corrupt("timestamp"))
}

/// The key that identifies the DIRECT conversation of a pair, in either order.
pub(crate) fn direct_key(a: UserId, b: UserId) -> String {
    let (low, high) = if a <= b { (a, b) } else { (b, a) };
    format!("{}:{}", low.get(), high.get())
}

fn get<'r, T>(row: &'r SqliteRow, column: &str) -> Outcome<T>
where
    T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    row.try_get(column).map_err(Failure::from)
}

/// An optional stored instant.
pub(crate) fn time_opt(row: &SqliteRow, column: &str) -> Outcome<Option<Timestamp>> {
    get::<Option<i64>>(row, column)?
        .map(from_db_time)
        .transpose()
}

fn time_or_epoch(row: &SqliteRow, column: &str) -> Outcome<Timestamp> {
    Ok(time_opt(row, column)?.unwrap_or(OffsetDateTime::UNIX_EPOCH))
}

pub(crate) fn conversation_id(text: &str) -> Outcome<ConversationId> {
    ConversationId::parse(text).map_err(|_| Failure::corrupt("conversation id"))
}

pub(crate) fn message_id(text: &str) -> Outcome<MessageId> {
    MessageId::parse(text).map_err(|_| Failure::corrupt("message id"))
}

pub(crate) fn user_id(value: i64) -> Outcome<UserId> {
    UserId::new(value).map_err(|_| Failure::corrupt("user id"))
}

pub(crate) fn seq(value: i64) -> Outcome<Seq> {
    Seq::new(value).map_err(|_| Failure::corrupt("seq"))
}

/// Decodes a count.
pub(crate) fn count(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// The columns [`conversation`] reads, from alias `c`.
pub(crate) const CONVERSATION_COLUMNS: &str = "c.id, c.type, c.name, c.posting_id, c.created_by, \
     c.created_at, c.last_message_at, c.is_archived, c.archived_at";

/// Decodes [`CONVERSATION_COLUMNS`].
pub(crate) fn conversation(row: &SqliteRow) -> Outcome<Conversation> {
    let kind: String = get(row, "type")?;
    let posting: Option<String> = get(row, "posting_id")?;
    Ok(Conversation {
        id: conversation_id(&get::<String>(row, "id")?)?,
        kind: ConversationType::parse(&kind).map_err(|_| Failure::corrupt("conversation type"))?,
        name: get(row, "name")?,
        posting_id: posting
            .map(|p| PostingId::parse(&p).map_err(|_| Failure::corrupt("posting id")))
            .transpose()?,
        created_by: user_id(get(row, "created_by")?)?,
        created_at: time_or_epoch(row, "created_at")?,
        last_message_at: time_opt(row, "last_message_at")?,
        is_archived: get::<bool>(row, "is_archived")?,
        archived_at: time_opt(row, "archived_at")?,
    })
}

/// The columns [`participant`] reads, from alias `p`.
pub(crate) const PARTICIPANT_COLUMNS: &str = "p.conversation_id, p.user_id, p.role, p.joined_at, \
     p.left_at, p.last_read_at, p.last_read_seq, p.is_muted";

/// Decodes [`PARTICIPANT_COLUMNS`].
pub(crate) fn participant(row: &SqliteRow) -> Outcome<Participant> {
    let role: String = get(row, "role")?;
    Ok(Participant {
        conversation_id: conversation_id(&get::<String>(row, "conversation_id")?)?,
        user_id: user_id(get(row, "user_id")?)?,
        role: Role::parse(&role).map_err(|_| Failure::corrupt("role"))?,
        joined_at: time_or_epoch(row, "joined_at")?,
        left_at: time_opt(row, "left_at")?,
        last_read_at: time_opt(row, "last_read_at")?,
        last_read_seq: seq(get(row, "last_read_seq")?)?,
        is_muted: get::<bool>(row, "is_muted")?,
    })
}

/// Every participant of the given conversations, with display names, each list earliest
/// joined first (ties in insertion order).
pub(crate) async fn participants_of(
    conn: &mut SqliteConnection,
    ids: &[ConversationId],
) -> Outcome<HashMap<ConversationId, Vec<ParticipantView>>> {
    let mut by_conversation: HashMap<ConversationId, Vec<ParticipantView>> = HashMap::new();
    if ids.is_empty() {
        return Ok(by_conversation);
    }
    let sql = format!(
        "SELECT {PARTICIPANT_COLUMNS}, {NAME_EXPR} AS display_name \
         FROM CONVERSATION_PARTICIPANTS p LEFT JOIN app_users u ON u.id = p.user_id \
         WHERE p.conversation_id IN ({}) \
         ORDER BY p.conversation_id, p.joined_at, p.id",
        placeholders(ids.len()),
    );
    let mut query = sqlx::query(&sql);
    for id in ids {
        query = query.bind(id.to_string());
    }
    for row in query.fetch_all(&mut *conn).await? {
        let participant = participant(&row)?;
        by_conversation
            .entry(participant.conversation_id)
            .or_default()
            .push(ParticipantView {
                participant,
                display_name: get(&row, "display_name")?,
            });
    }
    Ok(by_conversation)
}

/// The conversation with every participant, or `None`.
pub(crate) async fn details(
    conn: &mut SqliteConnection,
    id: ConversationId,
) -> Outcome<Option<ConversationDetails>> {
    let sql = format!("SELECT {CONVERSATION_COLUMNS} FROM CONVERSATIONS c WHERE c.id = ?");
    let Some(row) = sqlx::query(&sql)
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    let conversation = conversation(&row)?;
    let participants = participants_of(conn, &[id])
        .await?
        .remove(&id)
        .unwrap_or_default();
    Ok(Some(ConversationDetails {
        conversation,
        participants,
    }))
}

/// The conversation with every participant; [`chat_ports::StoreError::NotFound`] when it
/// is gone.
pub(crate) async fn existing_details(
    conn: &mut SqliteConnection,
    id: ConversationId,
) -> Outcome<ConversationDetails> {
    details(conn, id)
        .await?
        .ok_or(Failure::Store(chat_ports::StoreError::NotFound))
}

/// The columns [`message_view`] reads, from alias `m` joined with `app_users u`.
pub(crate) fn message_columns() -> String {
    format!(
        "m.id, m.conversation_id, m.seq, m.sender_id, m.content, m.message_type, m.media_url, \
         m.media_metadata, m.reply_to_id, m.client_message_id, m.created_at, m.edited_at, \
         m.deleted_at, m.is_system_message, m.encryption_key_id, {NAME_EXPR} AS sender_name"
    )
}

/// Decodes [`message_columns`] into a view without reactions, its text opened with
/// `cipher` (or marked undecryptable).
pub(crate) fn message_view(row: &SqliteRow, cipher: &MessageCipher) -> Outcome<MessageView> {
    let key_id: Option<String> = get(row, "encryption_key_id")?;
    let message_type: String = get(row, "message_type")?;
    let reply_to: Option<String> = get(row, "reply_to_id")?;
    let mut message = Message {
        id: message_id(&get::<String>(row, "id")?)?,
        conversation_id: conversation_id(&get::<String>(row, "conversation_id")?)?,
        seq: seq(get(row, "seq")?)?,
        sender_id: user_id(get(row, "sender_id")?)?,
        content: get(row, "content")?,
        message_type: MessageType::parse(&message_type)
            .map_err(|_| Failure::corrupt("message type"))?,
        media_url: get(row, "media_url")?,
        media_metadata: get(row, "media_metadata")?,
        reply_to_id: reply_to.as_deref().map(message_id).transpose()?,
        client_message_id: get(row, "client_message_id")?,
        created_at: time_or_epoch(row, "created_at")?,
        edited_at: time_opt(row, "edited_at")?,
        deleted_at: time_opt(row, "deleted_at")?,
        is_system_message: get::<bool>(row, "is_system_message")?,
        undecryptable: false,
    };
    cipher.open_message(&mut message, key_id.as_deref());
    Ok(MessageView {
        message,
        sender_name: get(row, "sender_name")?,
        reactions: Vec::new(),
    })
}

/// The reactions of each of `messages`, per emoji in order of first use. One query for the
/// whole page; emoji compare byte for byte.
pub(crate) async fn reactions_of(
    conn: &mut SqliteConnection,
    messages: &[MessageId],
) -> Outcome<HashMap<MessageId, Vec<ReactionSummary>>> {
    let mut by_message: HashMap<MessageId, Vec<ReactionSummary>> = HashMap::new();
    if messages.is_empty() {
        return Ok(by_message);
    }
    let sql = format!(
        "SELECT r.message_id, r.emoji, r.user_id FROM MESSAGE_REACTIONS r \
         WHERE r.message_id IN ({}) ORDER BY r.message_id, r.created_at, r.id",
        placeholders(messages.len()),
    );
    let mut query = sqlx::query(&sql);
    for id in messages {
        query = query.bind(id.to_string());
    }
    for row in query.fetch_all(&mut *conn).await? {
        let message = message_id(&get::<String>(&row, "message_id")?)?;
        let emoji: String = get(&row, "emoji")?;
        let user = user_id(get(&row, "user_id")?)?;
        let summaries = by_message.entry(message).or_default();
        match summaries.iter_mut().find(|s| s.emoji == emoji) {
            Some(summary) => {
                summary.count = summary.count.saturating_add(1);
                summary.user_ids.push(user);
            }
            None => summaries.push(ReactionSummary {
                emoji,
                count: 1,
                user_ids: vec![user],
            }),
        }
    }
    Ok(by_message)
}

/// Fills in the reactions of `views` with one query.
pub(crate) async fn with_reactions(
    conn: &mut SqliteConnection,
    mut views: Vec<MessageView>,
) -> Outcome<Vec<MessageView>> {
    let ids: Vec<MessageId> = views.iter().map(|v| v.message.id).collect();
    let mut reactions = reactions_of(conn, &ids).await?;
    for view in &mut views {
        view.reactions = reactions.remove(&view.message.id).unwrap_or_default();
    }
    Ok(views)
}

/// A message, deleted or not, with sender name and reactions ([`views_by_id`] of one).
pub(crate) async fn find_view(
    conn: &mut SqliteConnection,
    cipher: &MessageCipher,
    id: MessageId,
) -> Outcome<Option<MessageView>> {
    Ok(views_by_id(conn, cipher, &[id]).await?.remove(&id))
}

/// Messages by id, deleted or not, with sender names and reactions, their text opened
/// with `cipher` ([`message_view`]): one query for the rows and one for their reactions,
/// whatever the number of ids (the caller bounds it: every id is a placeholder).
pub(crate) async fn views_by_id(
    conn: &mut SqliteConnection,
    cipher: &MessageCipher,
    ids: &[MessageId],
) -> Outcome<HashMap<MessageId, MessageView>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let sql = format!(
        "SELECT {} FROM MESSAGES m LEFT JOIN app_users u ON u.id = m.sender_id \
         WHERE m.id IN ({})",
        message_columns(),
        placeholders(ids.len())
    );
    let mut query = sqlx::query(&sql);
    for id in ids {
        query = query.bind(id.to_string());
    }
    let views = query
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|row| message_view(row, cipher))
        .collect::<Outcome<Vec<_>>>()?;
    Ok(with_reactions(conn, views)
        .await?
        .into_iter()
        .map(|v| (v.message.id, v))
        .collect())
}

/// Records receipts for `reader` of the others' live messages with seq in `(after, up_to]`.
/// One `INSERT … SELECT`; receipts already there are kept as they are.
pub(crate) async fn record_receipts(
    conn: &mut SqliteConnection,
    conversation: ConversationId,
    reader: UserId,
    after: i64,
    up_to: i64,
    at: i64,
) -> Result<(), sqlx::Error> {
    if up_to <= after {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO MESSAGE_READ_RECEIPTS (message_id, user_id, read_at) \
         SELECT m.id, ?, ? FROM MESSAGES m \
         WHERE m.conversation_id = ? AND m.seq > ? AND m.seq <= ? \
           AND m.sender_id <> ? AND m.deleted_at IS NULL \
         ORDER BY m.seq \
         ON CONFLICT (message_id, user_id) DO NOTHING",
    )
    .bind(reader.get())
    .bind(at)
    .bind(conversation.to_string())
    .bind(after)
    .bind(up_to)
    .bind(reader.get())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The count of `reader`'s unread messages above `after`: from others, live, not SYSTEM.
/// Served by `idx_messages_unread` alone. Binds: conversation, after, reader.
pub(crate) const UNREAD_COUNT_SQL: &str = "SELECT COUNT(*) FROM MESSAGES m \
     WHERE m.conversation_id = ? AND m.seq > ? AND m.sender_id <> ? \
       AND m.deleted_at IS NULL AND m.is_system_message = 0";
