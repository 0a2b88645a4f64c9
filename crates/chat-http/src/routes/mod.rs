//! The route handlers, one module per area, and the helpers they share for parsing path
//! segments. Every handler converts wire to domain, calls one use case, and converts the
//! result back; errors go through [`ApiError`](crate::error::ApiError).

pub(crate) mod conversations;
pub(crate) mod messages;
pub(crate) mod ops;
pub(crate) mod sync;

use chat_domain::{ConversationId, MessageId, UserId};

use crate::error::ApiError;

/// A conversation id from the path.
pub(crate) fn conversation_id(text: &str) -> Result<ConversationId, ApiError> {
    Ok(ConversationId::parse(text)?)
}

/// A message id from the path.
pub(crate) fn message_id(text: &str) -> Result<MessageId, ApiError> {
    Ok(MessageId::parse(text)?)
}

/// A user id from the path.
pub(crate) fn user_id(text: &str) -> Result<UserId, ApiError> {
    Ok(UserId::parse(text)?)
}
