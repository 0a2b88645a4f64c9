//! Shared SQL fragments and the decoding of rows into domain values: conversations,
//! participants, messages and reactions, loaded in batches (one query per kind, never one
//! per item).

use std::collections::HashMap;

use chat_domain::{
    Conversation, ConversationDetails, ConversationId, ConversationType, Message, MessageId,
    MessageType, MessageView, Participant, ParticipantView, PostingId, ReactionSummary, Role, Seq,
    Timestamp, UserId,
};
use sqlx::mysql::MySqlRow;
use sqlx::{MySqlConnection, Row};
use time::OffsetDateTime;

use chat_crypto::MessageCipher;

use crate::error::{Failure, Outcome};

/// A user's display name from `app_users` (alias `u`): first and last name joined by a
/// space, trimmed, or NULL.
pub(crate) const NAME_EXPR: &str = "NULLIF(TRIM(CONCAT_WS(' ', NULLIF(TRIM(u.first_name), ''), \
     NULLIF(TRIM(u.last_name), ''))), '')";

/// An ordering key for the ids of rows of the same second: the time inside a version-1 UUID
/// (the database's `UUID()`, used by the previous system) or the id itself (UUIDv7, made by
/// this service, already time-ordered).
pub(crate) fn uuid_order(column: &str) -> String {
    format!(
        "IF(SUBSTRING({column}, 15, 1) = '1', CONCAT(SUBSTRING({column}, 16, 3), \
         SUBSTRING({column}, 10, 4), SUBSTRING({column}, 1, 8)), {column})"
    )
}

/// `?, ?, …` with `n` placeholders.
pub(crate) fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// The instant as stored: UTC, truncated to the second (the columns are `TIMESTAMP`), as
/// every store keeps it ([`chat_domain::to_stored_precision`]).
pub(crate) fn db_time(at: Timestamp) -> OffsetDateTime {
    chat_domain::to_stored_precision(at)
}

/// A fresh, time-ordered row id.
pub(crate) fn new_row_id() -> String {
    uuid::Uuid::now_v7().hyphenated().to_string()
}

/// The key that identifies the DIRECT conversation of a pair, in either order.
pub(crate) fn direct_key(a: UserId, b: UserId) -> String {
    let (low, high) = if a <= b { (a, b) } else { (b, a) };
    format!("{}:{}", low.get(), high.get())
}

fn get<'r, T>(row: &'r MySqlRow, column: &str) -> Outcome<T>
where
    T: sqlx::Decode<'r, sqlx::MySql> + sqlx::Type<sqlx::MySql>,
{
    row.try_get(column).map_err(Failure::from)
}

fn time_or_epoch(row: &MySqlRow, column: &str) -> Outcome<Timestamp> {
    Ok(get::<Option<OffsetDateTime>>(row, column)?.unwrap_or(OffsetDateTime::UNIX_EPOCH))
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

fn seq(value: Option<i64>) -> Outcome<Seq> {
    Seq::new(value.unwrap_or(0)).map_err(|_| Failure::corrupt("seq"))
}

/// The columns [`conversation`] reads, from alias `c`.
pub(crate) const CONVERSATION_COLUMNS: &str = "c.id, c.type, c.name, c.posting_id, c.created_by, \
     c.created_at, c.last_message_at, c.is_archived, c.archived_at";

/// Decodes [`CONVERSATION_COLUMNS`].
pub(crate) fn conversation(row: &MySqlRow) -> Outcome<Conversation> {
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
        last_message_at: get(row, "last_message_at")?,
        is_archived: get::<Option<bool>>(row, "is_archived")?.unwrap_or(false),
        archived_at: get(row, "archived_at")?,
    })
}

/// The columns [`participant`] reads, from alias `p`.
pub(crate) const PARTICIPANT_COLUMNS: &str = "p.conversation_id, p.user_id, p.role, p.joined_at, \
     p.left_at, p.last_read_at, p.last_read_seq, p.is_muted";

/// Decodes [`PARTICIPANT_COLUMNS`].
pub(crate) fn participant(row: &MySqlRow) -> Outcome<Participant> {
    let role: Option<String> = get(row, "role")?;
    Ok(Participant {
        conversation_id: conversation_id(&get::<String>(row, "conversation_id")?)?,
        user_id: user_id(get(row, "user_id")?)?,
        role: match role {
            Some(r) => Role::parse(&r).map_err(|_| Failure::corrupt("role"))?,
            None => Role::Member,
        },
        joined_at: time_or_epoch(row, "joined_at")?,
        left_at: get(row, "left_at")?,
        last_read_at: get(row, "last_read_at")?,
        last_read_seq: seq(get(row, "last_read_seq")?)?,
        is_muted: get::<Option<bool>>(row, "is_muted")?.unwrap_or(false),
    })
}

/// Every participant of the given conversations, with display names, each list earliest
/// joined first.
pub(crate) async fn participants_of(
    conn: &mut MySqlConnection,
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
         ORDER BY p.conversation_id, p.joined_at, {}",
        placeholders(ids.len()),
        uuid_order("p.id"),
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
    conn: &mut MySqlConnection,
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
    conn: &mut MySqlConnection,
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
         CAST(m.media_metadata AS CHAR) AS media_metadata, m.reply_to_id, m.client_message_id, m.created_at, m.edited_at, \
         m.deleted_at, m.is_system_message, m.encryption_key_id, m.media_url_sealed, \
         {NAME_EXPR} AS sender_name"
    )
}

/// Decodes [`message_columns`] into a view without reactions, its text opened with
/// `cipher` (or marked undecryptable). A sealed row keeps its media URL in
/// `media_url_sealed` (migration `20251201000008`).
pub(crate) fn message_view(row: &MySqlRow, cipher: &MessageCipher) -> Outcome<MessageView> {
    let key_id: Option<String> = get(row, "encryption_key_id")?;
    let media_url: Option<String> = match key_id {
        Some(_) => get::<Option<String>>(row, "media_url_sealed")?.or(get(row, "media_url")?),
        None => get(row, "media_url")?,
    };
    let message_type: Option<String> = get(row, "message_type")?;
    let reply_to: Option<String> = get(row, "reply_to_id")?;
    let client_message_id: Option<Vec<u8>> = get(row, "client_message_id")?;
    let mut message = Message {
        id: message_id(&get::<String>(row, "id")?)?,
        conversation_id: conversation_id(&get::<String>(row, "conversation_id")?)?,
        seq: seq(get(row, "seq")?)?,
        sender_id: user_id(get(row, "sender_id")?)?,
        content: get(row, "content")?,
        message_type: match message_type {
            Some(t) => MessageType::parse(&t).map_err(|_| Failure::corrupt("message type"))?,
            None => MessageType::Text,
        },
        media_url,
        media_metadata: get(row, "media_metadata")?,
        reply_to_id: reply_to.as_deref().map(message_id).transpose()?,
        client_message_id: client_message_id
            .map(|bytes| String::from_utf8(bytes).map_err(|_| Failure::corrupt("client id")))
            .transpose()?,
        created_at: time_or_epoch(row, "created_at")?,
        edited_at: get(row, "edited_at")?,
        deleted_at: get(row, "deleted_at")?,
        is_system_message: get::<Option<bool>>(row, "is_system_message")?.unwrap_or(false),
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
/// whole page. Emoji are grouped in Rust, code point by code point: SQL's `GROUP BY emoji`
/// would merge different emoji under the table's collation.
pub(crate) async fn reactions_of(
    conn: &mut MySqlConnection,
    messages: &[MessageId],
) -> Outcome<HashMap<MessageId, Vec<ReactionSummary>>> {
    let mut by_message: HashMap<MessageId, Vec<ReactionSummary>> = HashMap::new();
    if messages.is_empty() {
        return Ok(by_message);
    }
    let sql = reactions_sql(messages.len());
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

/// The reactions of `n` messages, in order of reaction.
pub(crate) fn reactions_sql(n: usize) -> String {
    format!(
        "SELECT r.message_id, r.emoji, r.user_id FROM MESSAGE_REACTIONS r \
         WHERE r.message_id IN ({}) ORDER BY r.message_id, r.created_at, {}",
        placeholders(n),
        uuid_order("r.id"),
    )
}

/// Fills in the reactions of `views` with one query.
pub(crate) async fn with_reactions(
    conn: &mut MySqlConnection,
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
    conn: &mut MySqlConnection,
    cipher: &MessageCipher,
    id: MessageId,
) -> Outcome<Option<MessageView>> {
    Ok(views_by_id(conn, cipher, &[id]).await?.remove(&id))
}

/// Messages by id, deleted or not, with sender names and reactions, their text opened
/// with `cipher` ([`message_view`]): one query for the rows and one for their reactions,
/// whatever the number of ids (the caller bounds it: every id is a placeholder).
pub(crate) async fn views_by_id(
    conn: &mut MySqlConnection,
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

/// The count of `reader`'s unread messages above `after`: from others, live, not SYSTEM.
/// Served by `idx_messages_unread` alone.
pub(crate) const UNREAD_COUNT_SQL: &str = "SELECT COUNT(*) FROM MESSAGES m \
     WHERE m.conversation_id = ? AND m.seq > ? AND m.sender_id <> ? \
       AND m.deleted_at IS NULL AND m.is_system_message IS NOT TRUE";

/// Decodes a count.
pub(crate) fn count(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}
