//! `/api/v1/conversations/{id}/messages` and `/api/v1/messages…`: history, sending,
//! editing, deleting, reactions and receipts.

use actix_web::{HttpResponse, web};
use chat_domain::{Emoji, Seq};
use chat_service::{HistoryQuery, PageLimit};
use serde::Deserialize;
use utoipa::IntoParams;

use super::{conversation_id, message_id};
use crate::AppState;
use crate::auth::AuthUser;
use crate::error::{ApiError, FieldError, Problem};
use crate::wire::{
    EditMessageBody, MessageOut, MessagePageOut, Object, ReactionsOut, ReceiptOut, SendMessageBody,
    reactions,
};

/// The default page size of history.
const DEFAULT_HISTORY_LIMIT: i64 = 50;

/// The query of `GET /conversations/{id}/messages`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct HistoryParams {
    /// Page size, 1 to 100 (default 50).
    limit: Option<i64>,
    /// Messages before this `seq`, newest first.
    before_seq: Option<i64>,
    /// Messages after this `seq`, oldest first.
    after_seq: Option<i64>,
}

impl HistoryParams {
    fn into_query(self) -> Result<HistoryQuery, ApiError> {
        let mut errors = Vec::new();
        let limit = PageLimit::new(self.limit.unwrap_or(DEFAULT_HISTORY_LIMIT))
            .map_err(|e| errors.push(FieldError::from(e)))
            .ok();
        let mut seq = |field: &'static str, value: Option<i64>| match value.map(Seq::new) {
            None => None,
            Some(Ok(seq)) => Some(seq),
            Some(Err(_)) => {
                errors.push(FieldError::new(field, "must not be negative"));
                None
            }
        };
        let before = seq("before_seq", self.before_seq);
        let after = seq("after_seq", self.after_seq);
        if self.before_seq.is_some() && self.after_seq.is_some() {
            errors.push(FieldError::new(
                "after_seq",
                "before_seq and after_seq cannot be combined",
            ));
        }
        match limit {
            Some(limit) if errors.is_empty() => Ok(match (before, after) {
                (Some(before), _) => HistoryQuery::Before(before, limit),
                (None, Some(after)) => HistoryQuery::After(after, limit),
                (None, None) => HistoryQuery::Latest(limit),
            }),
            _ => Err(ApiError::Validation(errors)),
        }
    }
}

/// A page of a conversation's history.
#[utoipa::path(
    get, path = "/api/v1/conversations/{id}/messages", tag = "messages",
    params(("id" = String, Path, format = Uuid, description = "The conversation"), HistoryParams),
    responses(
        (status = 200, description = "A page", body = MessagePageOut),
        (status = 400, description = "Validation failed", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn history(
    state: web::Data<AppState>,
    AuthUser(actor): AuthUser,
    id: web::Path<String>,
    params: web::Query<HistoryParams>,
) -> Result<HttpResponse, ApiError> {
    let id = conversation_id(&id)?;
    let query = params.into_inner().into_query()?;
    let page = state.service.history(actor, id, query).await?;
    Ok(HttpResponse::Ok().json(MessagePageOut::from(&page)))
}

/// Sends a message: 201, or 200 with the original on a repeated `client_message_id`.
#[utoipa::path(
    post, path = "/api/v1/conversations/{id}/messages", tag = "messages",
    params(("id" = String, Path, format = Uuid, description = "The conversation")),
    request_body = SendMessageBody,
    responses(
        (status = 201, description = "Sent", body = MessageOut),
        (status = 200, description = "Already sent with this client_message_id", body = MessageOut),
        (status = 400, description = "Validation failed", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Archived", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn send(
    state: web::Data<AppState>,
    AuthUser(actor): AuthUser,
    id: web::Path<String>,
    body: web::Json<Object<SendMessageBody>>,
) -> Result<HttpResponse, ApiError> {
    let id = conversation_id(&id)?;
    let request = body.into_inner().0.into_domain()?;
    let sent = state.service.send_message(actor, id, request).await?;
    let out = MessageOut::from(&sent.view);
    Ok(if sent.created {
        state.metrics.message_sent();
        HttpResponse::Created().json(out)
    } else {
        HttpResponse::Ok().json(out)
    })
}

/// One message.
#[utoipa::path(
    get, path = "/api/v1/messages/{id}", tag = "messages",
    params(("id" = String, Path, format = Uuid, description = "The message")),
    responses(
        (status = 200, description = "The message", body = MessageOut),
        (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn show(
    state: web::Data<AppState>,
    AuthUser(actor): AuthUser,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = message_id(&id)?;
    let view = state.service.message(actor, id).await?;
    Ok(HttpResponse::Ok().json(MessageOut::from(&view)))
}

/// Edits a message (its sender).
#[utoipa::path(
    patch, path = "/api/v1/messages/{id}", tag = "messages",
    params(("id" = String, Path, format = Uuid, description = "The message")),
    request_body = EditMessageBody,
    responses(
        (status = 200, description = "The message", body = MessageOut),
        (status = 403, description = "Forbidden", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn edit(
    state: web::Data<AppState>,
    AuthUser(actor): AuthUser,
    id: web::Path<String>,
    body: web::Json<Object<EditMessageBody>>,
) -> Result<HttpResponse, ApiError> {
    let id = message_id(&id)?;
    let content = body.into_inner().0.into_domain()?;
    let view = state.service.edit_message(actor, id, content).await?;
    Ok(HttpResponse::Ok().json(MessageOut::from(&view)))
}

/// Deletes a message (its sender, or an admin).
#[utoipa::path(
    delete, path = "/api/v1/messages/{id}", tag = "messages",
    params(("id" = String, Path, format = Uuid, description = "The message")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "Forbidden", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn delete(
    state: web::Data<AppState>,
    AuthUser(actor): AuthUser,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = message_id(&id)?;
    state.service.delete_message(actor, id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The message and the emoji a reaction route names.
fn reaction_path(path: (String, String)) -> Result<(chat_domain::MessageId, Emoji), ApiError> {
    let (id, emoji) = path;
    Ok((message_id(&id)?, Emoji::parse(&emoji)?))
}

fn reactions_response(summaries: &[chat_domain::ReactionSummary]) -> HttpResponse {
    HttpResponse::Ok().json(ReactionsOut {
        reactions: reactions(summaries),
    })
}

/// Puts the caller's reaction on a message (idempotent).
#[utoipa::path(
    put, path = "/api/v1/messages/{id}/reactions/{emoji}", tag = "messages",
    params(
        ("id" = String, Path, format = Uuid, description = "The message"),
        ("emoji" = String, Path, description = "One emoji, percent-encoded UTF-8"),
    ),
    responses(
        (status = 200, description = "The reactions", body = ReactionsOut),
        (status = 400, description = "Not an emoji", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Archived (`conversation_archived`), the message already carries 50 different emoji (`too_many_emoji`), or the caller already put 20 reactions on it (`too_many_reactions`)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn add_reaction(
    state: web::Data<AppState>,
    AuthUser(actor): AuthUser,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, emoji) = reaction_path(path.into_inner())?;
    let summaries = state.service.add_reaction(actor, id, emoji).await?;
    Ok(reactions_response(&summaries))
}

/// Takes the caller's reaction off a message (idempotent).
#[utoipa::path(
    delete, path = "/api/v1/messages/{id}/reactions/{emoji}", tag = "messages",
    params(
        ("id" = String, Path, format = Uuid, description = "The message"),
        ("emoji" = String, Path, description = "One emoji, percent-encoded UTF-8"),
    ),
    responses(
        (status = 200, description = "The reactions", body = ReactionsOut),
        (status = 400, description = "Not an emoji", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn remove_reaction(
    state: web::Data<AppState>,
    AuthUser(actor): AuthUser,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, emoji) = reaction_path(path.into_inner())?;
    let summaries = state.service.remove_reaction(actor, id, emoji).await?;
    Ok(reactions_response(&summaries))
}

/// Who has read a message.
#[utoipa::path(
    get, path = "/api/v1/messages/{id}/receipts", tag = "messages",
    params(("id" = String, Path, format = Uuid, description = "The message")),
    responses(
        (status = 200, description = "Receipts, earliest first", body = [ReceiptOut]),
        (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn receipts(
    state: web::Data<AppState>,
    AuthUser(actor): AuthUser,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = message_id(&id)?;
    let receipts = state.service.receipts(actor, id).await?;
    let out: Vec<ReceiptOut> = receipts.iter().map(ReceiptOut::from).collect();
    Ok(HttpResponse::Ok().json(out))
}
