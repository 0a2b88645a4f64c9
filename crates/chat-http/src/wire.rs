//! The JSON wire types of the HTTP API and their explicit conversions to and from the
//! domain: request bodies are parsed into value objects here, and responses are built
//! from the service's results here. Nothing outside this crate sees these types.

use chat_domain::{
    ClientMessageId, ConversationType, GroupName, MediaMetadata, MediaUrl, MessageBody,
    MessageContent, MessageId, MessageType, MessageView, Participant, PostingId, ReactionSummary,
    Receipt, Role, Timestamp, UserId, ValidationError,
};
use chat_service::{
    ConversationUpdate, CreateConversation, HistoryPage, InboxItem, ReadState, SendMessage,
    UnreadSummary,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use utoipa::ToSchema;

use crate::error::{ApiError, FieldError};

// ---------------------------------------------------------------------------------------
// Vocabularies, for the OpenAPI document (values travel as their upper-case spelling).

/// What kind of conversation this is.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WireConversationType {
    /// Between two users.
    Direct,
    /// A named group.
    Group,
    /// A group attached to a posting.
    PostLinked,
}

/// A participant's role.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WireRole {
    /// May manage the conversation.
    Admin,
    /// May read and write.
    Member,
}

/// What a message carries.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WireMessageType {
    /// Plain text.
    Text,
    /// An image at `media_url`.
    Image,
    /// A file at `media_url`.
    File,
    /// A link.
    Link,
    /// Written by the service (never accepted from clients).
    System,
}

// ---------------------------------------------------------------------------------------
// Responses.

/// A conversation as the caller sees it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConversationOut {
    /// Its id (UUID).
    #[schema(format = Uuid)]
    pub id: String,
    /// DIRECT, GROUP or POST_LINKED.
    #[serde(rename = "type")]
    #[schema(value_type = WireConversationType)]
    pub kind: String,
    /// The group name (none for DIRECT).
    pub name: Option<String>,
    /// The linked posting (POST_LINKED).
    #[schema(format = Uuid)]
    pub posting_id: Option<String>,
    /// Who created it.
    pub created_by: i64,
    /// When it was created (RFC 3339, UTC, milliseconds).
    #[schema(format = DateTime)]
    pub created_at: String,
    /// When its newest message was sent.
    #[schema(format = DateTime)]
    pub last_message_at: Option<String>,
    /// Whether it is archived (read-only).
    pub is_archived: bool,
    /// When it was archived.
    #[schema(format = DateTime)]
    pub archived_at: Option<String>,
    /// The active participants, earliest joined first.
    pub participants: Vec<ParticipantOut>,
    /// The caller's membership.
    pub membership: MembershipOut,
    /// The newest live message.
    pub last_message: Option<MessageOut>,
}

/// An active participant.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ParticipantOut {
    /// The user.
    pub user_id: i64,
    /// Their display name, when known.
    pub display_name: Option<String>,
    /// ADMIN or MEMBER.
    #[schema(value_type = WireRole)]
    pub role: String,
    /// When they joined.
    #[schema(format = DateTime)]
    pub joined_at: String,
    /// When their read marker last moved.
    #[schema(format = DateTime)]
    pub last_read_at: Option<String>,
    /// Whether they muted the conversation.
    pub is_muted: bool,
}

/// The caller's membership of a conversation.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MembershipOut {
    /// ADMIN or MEMBER.
    #[schema(value_type = WireRole)]
    pub role: String,
    /// When the caller joined.
    #[schema(format = DateTime)]
    pub joined_at: String,
    /// When the caller's read marker last moved.
    #[schema(format = DateTime)]
    pub last_read_at: Option<String>,
    /// The newest `seq` the caller has read.
    pub last_read_seq: i64,
    /// Whether the caller muted it.
    pub is_muted: bool,
    /// Messages the caller has not read.
    pub unread_count: u64,
}

/// A message.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MessageOut {
    /// Its id (UUID).
    #[schema(format = Uuid)]
    pub id: String,
    /// Its conversation.
    #[schema(format = Uuid)]
    pub conversation_id: String,
    /// Its position in the conversation, from 1.
    pub seq: i64,
    /// Who sent it.
    pub sender_id: i64,
    /// The sender's display name, when known.
    pub sender_name: Option<String>,
    /// The text; `null` only when `undecryptable` is true.
    pub content: Option<String>,
    /// TEXT, IMAGE, FILE, LINK or SYSTEM.
    #[schema(value_type = WireMessageType)]
    pub message_type: String,
    /// The media link.
    pub media_url: Option<String>,
    /// Media or system details: a JSON object.
    #[schema(value_type = Option<Object>)]
    pub media_metadata: Option<Value>,
    /// The message it replies to.
    #[schema(format = Uuid)]
    pub reply_to_id: Option<String>,
    /// The sender's idempotency key.
    pub client_message_id: Option<String>,
    /// When it was sent.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// When it was last edited.
    #[schema(format = DateTime)]
    pub edited_at: Option<String>,
    /// Whether the service wrote it.
    pub is_system_message: bool,
    /// Present and `true` when the stored text could not be decrypted (its key is no
    /// longer in the server's key ring, or the stored value was altered): `content`,
    /// `media_url` and `media_metadata` are then `null`. Absent otherwise.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    #[schema(default = false)]
    pub undecryptable: bool,
    /// Reactions per emoji, in order of first use.
    pub reactions: Vec<ReactionOut>,
}

/// The reactions of one emoji.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReactionOut {
    /// The emoji.
    pub emoji: String,
    /// How many users put it.
    pub count: u32,
    /// Who put it.
    pub user_ids: Vec<i64>,
}

/// A message's reactions.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReactionsOut {
    /// Reactions per emoji, in order of first use.
    pub reactions: Vec<ReactionOut>,
}

/// Who read a message, and when.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReceiptOut {
    /// The reader.
    pub user_id: i64,
    /// When.
    #[schema(format = DateTime)]
    pub read_at: String,
}

/// A page of the caller's conversations.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConversationPageOut {
    /// Most recent activity first.
    pub items: Vec<ConversationOut>,
    /// Pass as `cursor` for the next page; null on the last one.
    pub next_cursor: Option<String>,
}

/// A page of history.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MessagePageOut {
    /// Newest first, or oldest first with `after_seq`.
    pub items: Vec<MessageOut>,
    /// Whether more messages lie beyond this page.
    pub has_more: bool,
}

/// The caller's read state after marking read.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReadStateOut {
    /// When the marker last moved.
    #[schema(format = DateTime)]
    pub last_read_at: Option<String>,
    /// The newest `seq` read.
    pub last_read_seq: i64,
    /// Messages still unread.
    pub unread_count: u64,
}

/// The caller's unread badge.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UnreadOut {
    /// Unread messages over unmuted conversations.
    pub total: u64,
    /// Every conversation with unread messages, muted ones included.
    pub conversations: Vec<UnreadConversationOut>,
}

/// The unread count of one conversation.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UnreadConversationOut {
    /// The conversation.
    #[schema(format = Uuid)]
    pub conversation_id: String,
    /// Its unread messages.
    pub unread_count: u64,
    /// Whether the caller muted it.
    pub is_muted: bool,
}

/// Formats an instant as RFC 3339 in UTC with milliseconds (`2026-11-24T10:00:00.000Z`).
pub fn format_time(at: Timestamp) -> String {
    let utc = at.to_offset(time::UtcOffset::UTC);
    let millis =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    utc.format(millis)
        .or_else(|_| utc.format(&Rfc3339))
        .unwrap_or_default()
}

fn format_opt(at: Option<Timestamp>) -> Option<String> {
    at.map(format_time)
}

impl From<&InboxItem> for ConversationOut {
    fn from(item: &InboxItem) -> Self {
        let conversation = &item.details.conversation;
        Self {
            id: conversation.id.to_string(),
            kind: conversation.kind.as_str().to_owned(),
            name: conversation.name.clone(),
            posting_id: conversation.posting_id.map(|p| p.to_string()),
            created_by: conversation.created_by.get(),
            created_at: format_time(conversation.created_at),
            last_message_at: format_opt(conversation.last_message_at),
            is_archived: conversation.is_archived,
            archived_at: format_opt(conversation.archived_at),
            participants: item
                .details
                .active_participants()
                .map(|view| ParticipantOut {
                    user_id: view.participant.user_id.get(),
                    display_name: view.display_name.clone(),
                    role: view.participant.role.as_str().to_owned(),
                    joined_at: format_time(view.participant.joined_at),
                    last_read_at: format_opt(view.participant.last_read_at),
                    is_muted: view.participant.is_muted,
                })
                .collect(),
            membership: MembershipOut::new(&item.membership, item.unread_count),
            last_message: item.last_message.as_ref().map(MessageOut::from),
        }
    }
}

impl MembershipOut {
    /// The wire form of `membership` with its unread count.
    pub fn new(membership: &Participant, unread_count: u64) -> Self {
        Self {
            role: membership.role.as_str().to_owned(),
            joined_at: format_time(membership.joined_at),
            last_read_at: format_opt(membership.last_read_at),
            last_read_seq: membership.last_read_seq.get(),
            is_muted: membership.is_muted,
            unread_count,
        }
    }
}

impl From<&MessageView> for MessageOut {
    fn from(view: &MessageView) -> Self {
        let message = &view.message;
        Self {
            id: message.id.to_string(),
            conversation_id: message.conversation_id.to_string(),
            seq: message.seq.get(),
            sender_id: message.sender_id.get(),
            sender_name: view.sender_name.clone(),
            content: (!message.undecryptable).then(|| message.content.clone()),
            message_type: message.message_type.as_str().to_owned(),
            media_url: message.media_url.clone(),
            // Stored metadata is object text; rows that predate the rules and do not
            // parse are served as null rather than failing the whole response.
            media_metadata: message
                .media_metadata
                .as_deref()
                .and_then(|text| serde_json::from_str(text).ok()),
            reply_to_id: message.reply_to_id.map(|id| id.to_string()),
            client_message_id: message.client_message_id.clone(),
            created_at: format_time(message.created_at),
            edited_at: format_opt(message.edited_at),
            is_system_message: message.is_system_message,
            undecryptable: message.undecryptable,
            reactions: reactions(&view.reactions),
        }
    }
}

/// The wire form of a message's reactions.
pub fn reactions(summaries: &[ReactionSummary]) -> Vec<ReactionOut> {
    summaries
        .iter()
        .map(|r| ReactionOut {
            emoji: r.emoji.clone(),
            count: r.count,
            user_ids: r.user_ids.iter().map(|u| u.get()).collect(),
        })
        .collect()
}

impl From<&Receipt> for ReceiptOut {
    fn from(receipt: &Receipt) -> Self {
        Self {
            user_id: receipt.user_id.get(),
            read_at: format_time(receipt.read_at),
        }
    }
}

impl From<&HistoryPage> for MessagePageOut {
    fn from(page: &HistoryPage) -> Self {
        Self {
            items: page.items.iter().map(MessageOut::from).collect(),
            has_more: page.has_more,
        }
    }
}

impl From<&ReadState> for ReadStateOut {
    fn from(state: &ReadState) -> Self {
        Self {
            last_read_at: format_opt(state.last_read_at),
            last_read_seq: state.last_read_seq.get(),
            unread_count: state.unread_count,
        }
    }
}

impl From<&UnreadSummary> for UnreadOut {
    fn from(summary: &UnreadSummary) -> Self {
        Self {
            total: summary.total,
            conversations: summary
                .conversations
                .iter()
                .map(|c| UnreadConversationOut {
                    conversation_id: c.conversation_id.to_string(),
                    unread_count: c.unread_count,
                    is_muted: c.is_muted,
                })
                .collect(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Requests. Fields are optional on the wire so that a missing one is reported by name;
// enumerations travel as text so that an unknown value is reported by field.

/// A request body, which must be a JSON object: serde's derived structs would also read an
/// array (fields by position), which the API does not allow and its document does not
/// describe.
#[derive(Debug)]
pub struct Object<T>(pub T);

impl<'de, T: serde::de::DeserializeOwned> Deserialize<'de> for Object<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let object = serde_json::Map::<String, Value>::deserialize(deserializer)?;
        serde_json::from_value(Value::Object(object))
            .map(Object)
            .map_err(serde::de::Error::custom)
    }
}

/// Collects field errors while a request is converted, so that every refused field is
/// reported at once.
#[derive(Debug, Default)]
pub(crate) struct Fields {
    errors: Vec<FieldError>,
}

impl Fields {
    /// The value, or `None` after recording why it was refused.
    pub(crate) fn check<T>(&mut self, parsed: Result<T, ValidationError>) -> Option<T> {
        parsed.map_err(|err| self.errors.push(err.into())).ok()
    }

    /// An optional value: absent stays `None`, present must parse.
    pub(crate) fn optional<S, T>(
        &mut self,
        value: Option<S>,
        parse: impl FnOnce(S) -> Result<T, ValidationError>,
    ) -> Result<Option<T>, ()> {
        match value {
            None => Ok(None),
            Some(raw) => self.check(parse(raw)).map(Some).ok_or(()),
        }
    }

    /// A required value.
    pub(crate) fn required<S, T>(
        &mut self,
        field: &'static str,
        value: Option<S>,
        parse: impl FnOnce(S) -> Result<T, ValidationError>,
    ) -> Option<T> {
        match value {
            None => {
                self.errors.push(FieldError::new(field, "is required"));
                None
            }
            Some(raw) => self.check(parse(raw)),
        }
    }

    /// Records a refusal.
    pub(crate) fn refuse(&mut self, field: &'static str, message: impl Into<String>) {
        self.errors.push(FieldError::new(field, message));
    }

    /// The error to answer when something was refused.
    pub(crate) fn into_error(self) -> ApiError {
        if self.errors.is_empty() {
            ApiError::field("body", "is invalid")
        } else {
            ApiError::Validation(self.errors)
        }
    }

    /// Whether nothing was refused.
    pub(crate) fn is_clean(&self) -> bool {
        self.errors.is_empty()
    }
}

fn user_ids(field: &'static str, ids: Vec<i64>) -> Result<Vec<UserId>, ValidationError> {
    ids.into_iter()
        .map(|id| UserId::new(id).map_err(|e| ValidationError::new(field, e.reason())))
        .collect()
}

/// `POST /conversations`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct CreateConversationBody {
    /// GROUP or POST_LINKED.
    #[serde(rename = "type")]
    #[schema(value_type = WireConversationType)]
    pub kind: Option<String>,
    /// The name: required for GROUP.
    pub name: Option<String>,
    /// The posting: required for POST_LINKED.
    #[schema(format = Uuid)]
    pub posting_id: Option<String>,
    /// The other participants.
    #[serde(default)]
    pub participant_ids: Vec<i64>,
}

impl CreateConversationBody {
    /// The use case's request.
    ///
    /// # Errors
    /// `validation_failed` listing every refused field.
    pub fn into_domain(self) -> Result<CreateConversation, ApiError> {
        let mut fields = Fields::default();
        let kind = fields.required("type", self.kind, |t| ConversationType::parse(&t));
        let name = fields.optional(self.name, |n| GroupName::parse(&n));
        let posting_id = fields.optional(self.posting_id, |p| PostingId::parse(&p));
        let participants = fields.check(user_ids("participant_ids", self.participant_ids));
        match (kind, name, posting_id, participants) {
            (Some(kind), Ok(name), Ok(posting_id), Some(participant_ids)) if fields.is_clean() => {
                Ok(CreateConversation {
                    kind,
                    name,
                    posting_id,
                    participant_ids,
                })
            }
            _ => Err(fields.into_error()),
        }
    }
}

/// `POST /conversations/direct`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct OpenDirectBody {
    /// The other user (the caller themself for notes to self).
    pub user_id: Option<i64>,
}

impl OpenDirectBody {
    /// The other user.
    ///
    /// # Errors
    /// `validation_failed` when `user_id` is missing or not positive.
    pub fn into_domain(self) -> Result<UserId, ApiError> {
        let mut fields = Fields::default();
        fields
            .required("user_id", self.user_id, UserId::new)
            .ok_or_else(|| fields.into_error())
    }
}

/// `PATCH /conversations/{id}`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct UpdateConversationBody {
    /// A new name.
    pub name: Option<String>,
    /// Archive (true) or unarchive (false).
    pub is_archived: Option<bool>,
}

impl UpdateConversationBody {
    /// The use case's request.
    ///
    /// # Errors
    /// `validation_failed` for a refused name.
    pub fn into_domain(self) -> Result<ConversationUpdate, ApiError> {
        let mut fields = Fields::default();
        match fields.optional(self.name, |n| GroupName::parse(&n)) {
            Ok(name) => Ok(ConversationUpdate {
                name,
                is_archived: self.is_archived,
            }),
            Err(()) => Err(fields.into_error()),
        }
    }
}

/// `POST /conversations/{id}/participants`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct AddParticipantsBody {
    /// The users to add.
    pub user_ids: Option<Vec<i64>>,
}

impl AddParticipantsBody {
    /// The users to add.
    ///
    /// # Errors
    /// `validation_failed` when `user_ids` is missing or holds a non-positive id.
    pub fn into_domain(self) -> Result<Vec<UserId>, ApiError> {
        let mut fields = Fields::default();
        fields
            .required("user_ids", self.user_ids, |ids| user_ids("user_ids", ids))
            .ok_or_else(|| fields.into_error())
    }
}

/// `PATCH /conversations/{id}/participants/{user_id}`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ChangeRoleBody {
    /// ADMIN or MEMBER.
    #[schema(value_type = WireRole)]
    pub role: Option<String>,
}

impl ChangeRoleBody {
    /// The new role.
    ///
    /// # Errors
    /// `validation_failed` when `role` is missing or unknown.
    pub fn into_domain(self) -> Result<Role, ApiError> {
        let mut fields = Fields::default();
        fields
            .required("role", self.role, |r| Role::parse(&r))
            .ok_or_else(|| fields.into_error())
    }
}

/// `PATCH /conversations/{id}/membership`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct MembershipBody {
    /// Mute (true) or unmute (false).
    pub is_muted: Option<bool>,
}

impl MembershipBody {
    /// Whether to mute.
    ///
    /// # Errors
    /// `validation_failed` when `is_muted` is missing.
    pub fn into_domain(self) -> Result<bool, ApiError> {
        self.is_muted
            .ok_or_else(|| ApiError::field("is_muted", "is required"))
    }
}

/// `POST /conversations/{id}/read` (the body may be omitted).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct MarkReadBody {
    /// Read up to this message (default: the newest).
    #[schema(format = Uuid)]
    pub up_to_message_id: Option<String>,
}

impl MarkReadBody {
    /// The message to read up to.
    ///
    /// # Errors
    /// `validation_failed` for an id that is not a UUID.
    pub fn into_domain(self) -> Result<Option<MessageId>, ApiError> {
        let mut fields = Fields::default();
        fields
            .optional(self.up_to_message_id, |id| {
                MessageId::parse(&id)
                    .map_err(|e| ValidationError::new("up_to_message_id", e.reason()))
            })
            .map_err(|()| fields.into_error())
    }
}

/// `POST /conversations/{id}/messages`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct SendMessageBody {
    /// The text: 1 to 4000 characters, not blank.
    pub content: Option<String>,
    /// TEXT (default), IMAGE, FILE or LINK.
    #[schema(value_type = Option<WireMessageType>)]
    pub message_type: Option<String>,
    /// An http(s) URL; required for IMAGE and FILE.
    pub media_url: Option<String>,
    /// Details about the media: a JSON object of at most 4 KiB.
    #[schema(value_type = Option<Object>)]
    pub media_metadata: Option<Value>,
    /// A live message of the same conversation this one replies to.
    #[schema(format = Uuid)]
    pub reply_to_id: Option<String>,
    /// An idempotency key: repeating it returns the original message.
    pub client_message_id: Option<String>,
}

impl SendMessageBody {
    /// The use case's request.
    ///
    /// # Errors
    /// `validation_failed` listing every refused field.
    pub fn into_domain(self) -> Result<SendMessage, ApiError> {
        let mut fields = Fields::default();
        let content = fields.required("content", self.content, MessageContent::parse);
        let message_type = fields
            .optional(self.message_type, |t| MessageType::parse(&t))
            .map(|t| t.unwrap_or(MessageType::Text));
        let media_url = fields.optional(self.media_url, |u| MediaUrl::parse(&u));
        let media_metadata = match self.media_metadata {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(object)) => fields
                .optional(Some(Value::Object(object).to_string()), |text| {
                    MediaMetadata::parse(&text)
                }),
            Some(_) => {
                fields.refuse("media_metadata", "must be a JSON object");
                Err(())
            }
        };
        let reply_to_id = fields.optional(self.reply_to_id, |id| {
            MessageId::parse(&id).map_err(|e| ValidationError::new("reply_to_id", e.reason()))
        });
        let client_message_id =
            fields.optional(self.client_message_id, |id| ClientMessageId::parse(&id));
        let (
            Some(content),
            Ok(message_type),
            Ok(media_url),
            Ok(media_metadata),
            Ok(reply_to_id),
            Ok(client_message_id),
        ) = (
            content,
            message_type,
            media_url,
            media_metadata,
            reply_to_id,
            client_message_id,
        )
        else {
            return Err(fields.into_error());
        };
        let body = fields.check(MessageBody::from_user(
            content,
            message_type,
            media_url,
            media_metadata,
        ));
        match body {
            Some(body) if fields.is_clean() => Ok(SendMessage {
                body,
                reply_to_id,
                client_message_id,
            }),
            _ => Err(fields.into_error()),
        }
    }
}

/// `PATCH /messages/{id}`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct EditMessageBody {
    /// The new text.
    pub content: Option<String>,
}

impl EditMessageBody {
    /// The new content.
    ///
    /// # Errors
    /// `validation_failed` when `content` is missing or refused.
    pub fn into_domain(self) -> Result<MessageContent, ApiError> {
        let mut fields = Fields::default();
        fields
            .required("content", self.content, MessageContent::parse)
            .ok_or_else(|| fields.into_error())
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn times_are_utc_with_milliseconds() {
        assert_eq!(
            format_time(datetime!(2026-11-24 10:00:00 UTC)),
            "2026-11-24T10:00:00.000Z"
        );
        assert_eq!(
            format_time(datetime!(2026-11-24 12:00:00.123456 +02:00)),
            "2026-11-24T10:00:00.123Z"
        );
    }

    #[test]
    fn bodies_are_objects_not_arrays() {
        let array: Result<Object<UpdateConversationBody>, _> = serde_json::from_str("[null, null]");
        assert!(array.is_err());
        let object: Object<UpdateConversationBody> =
            serde_json::from_str(r#"{"name": "x"}"#).unwrap();
        assert_eq!(object.0.name.as_deref(), Some("x"));
    }

    #[test]
    fn send_reports_every_refused_field() {
        let body: SendMessageBody = serde_json::from_value(serde_json::json!({
            "content": " ",
            "message_type": "VIDEO",
            "media_url": "ftp://x",
            "media_metadata": [1],
        }))
        .unwrap();
        let Err(ApiError::Validation(errors)) = body.into_domain() else {
            panic!("expected a validation error");
        };
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["content", "message_type", "media_url", "media_metadata"]
        );
    }

    fn view(undecryptable: bool) -> MessageView {
        let message = chat_domain::Message {
            id: MessageId::new(),
            conversation_id: chat_domain::ConversationId::new(),
            seq: chat_domain::Seq::new(1).unwrap(),
            sender_id: chat_domain::UserId::new(7).unwrap(),
            content: if undecryptable {
                String::new()
            } else {
                "hi".into()
            },
            message_type: MessageType::Text,
            media_url: None,
            media_metadata: None,
            reply_to_id: None,
            client_message_id: None,
            created_at: datetime!(2026-11-24 10:00:00 UTC),
            edited_at: None,
            deleted_at: None,
            is_system_message: false,
            undecryptable,
        };
        MessageView {
            message,
            sender_name: None,
            reactions: Vec::new(),
        }
    }

    #[test]
    fn an_undecryptable_message_has_null_content_and_the_marker() {
        let json = serde_json::to_value(MessageOut::from(&view(true))).unwrap();
        assert_eq!(json["content"], Value::Null);
        assert_eq!(json["media_url"], Value::Null);
        assert_eq!(json["undecryptable"], Value::Bool(true));
        let json = serde_json::to_value(MessageOut::from(&view(false))).unwrap();
        assert_eq!(json["content"], "hi");
        assert!(json.get("undecryptable").is_none(), "absent when readable");
    }
}
