//! `/api/v1/conversations…` and `/api/v1/unread`: creating, listing, showing and
//! changing conversations, their participants and the caller's read state.

use actix_web::{HttpResponse, web};
use chat_service::{ArchivedFilter, InboxQuery, PageLimit};
use serde::Deserialize;
use utoipa::IntoParams;

use super::{conversation_id, user_id};
use crate::AppState;
use crate::auth::AuthUser;
use crate::cursor;
use crate::error::{ApiError, FieldError, Problem};
use crate::wire::{
    AddParticipantsBody, ChangeRoleBody, ConversationOut, ConversationPageOut,
    CreateConversationBody, MarkReadBody, MembershipBody, MembershipOut, Object, OpenDirectBody,
    ReadStateOut, UnreadOut, UpdateConversationBody,
};

/// The default page size of `GET /conversations`.
const DEFAULT_INBOX_LIMIT: i64 = 20;

/// Creates a GROUP or POST_LINKED conversation.
#[utoipa::path(
    post, path = "/api/v1/conversations", tag = "conversations",
    request_body = CreateConversationBody,
    responses(
        (status = 201, description = "Created", body = ConversationOut),
        (status = 400, description = "Validation failed", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Unauthorized", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn create(
    state: web::Data<AppState>,
    AuthUser(actor): AuthUser,
    body: web::Json<Object<CreateConversationBody>>,
) -> Result<HttpResponse, ApiError> {
    let request = body.into_inner().0.into_domain()?;
    let item = state.service.create_conversation(actor, request).await?;
    Ok(HttpResponse::Created().json(ConversationOut::from(&item)))
}

/// Opens the DIRECT conversation with a user: 201 when created, 200 when it existed.
#[utoipa::path(
    post, path = "/api/v1/conversations/direct", tag = "conversations",
    request_body = OpenDirectBody,
    responses(
        (status = 200, description = "It existed", body = ConversationOut),
        (status = 201, description = "Created", body = ConversationOut),
        (status = 400, description = "Validation failed", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Unauthorized", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn open_direct(
    state: web::Data<AppState>,
    AuthUser(actor): AuthUser,
    body: web::Json<Object<OpenDirectBody>>,
) -> Result<HttpResponse, ApiError> {
    let other = body.into_inner().0.into_domain()?;
    let opened = state.service.open_direct(actor, other).await?;
    let out = ConversationOut::from(&opened.item);
    Ok(if opened.created {
        HttpResponse::Created().json(out)
    } else {
        HttpResponse::Ok().json(out)
    })
}

/// The query of `GET /conversations`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct InboxParams {
    /// Page size, 1 to 100 (default 20).
    limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// `false` (default), `true` or `any`.
    archived: Option<String>,
}

impl InboxParams {
    fn into_query(self) -> Result<InboxQuery, ApiError> {
        let mut errors = Vec::new();
        let limit = PageLimit::new(self.limit.unwrap_or(DEFAULT_INBOX_LIMIT))
            .map_err(|e| errors.push(FieldError::from(e)))
            .ok();
        let after = match self.cursor.as_deref() {
            None | Some("") => None,
            Some(text) => match cursor::decode(text) {
                Ok(c) => Some(c),
                Err(_) => {
                    errors.push(FieldError::new("cursor", "is not a valid cursor"));
                    None
                }
            },
        };
        let archived = match self.archived.as_deref() {
            None | Some("false") => Some(ArchivedFilter::Active),
            Some("true") => Some(ArchivedFilter::Archived),
            Some("any") => Some(ArchivedFilter::Any),
            Some(_) => {
                errors.push(FieldError::new(
                    "archived",
                    "must be one of false, true, any",
                ));
                None
            }
        };
        match (limit, archived) {
            (Some(limit), Some(archived)) if errors.is_empty() => Ok(InboxQuery {
                limit,
                after,
                archived,
            }),
            _ => Err(ApiError::Validation(errors)),
        }
    }
}

/// The caller's conversations, most recent activity first.
#[utoipa::path(
    get, path = "/api/v1/conversations", tag = "conversations",
    params(InboxParams),
    responses(
        (status = 200, description = "A page", body = ConversationPageOut),
        (status = 400, description = "Validation failed", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Unauthorized", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list(
    state: web::Data<AppState>,
    AuthUser(actor): AuthUser,
    params: web::Query<InboxParams>,
) -> Result<HttpResponse, ApiError> {
    let query = params.into_inner().into_query()?;
    let page = state.service.list_conversations(actor, query).await?;
    Ok(HttpResponse::Ok().json(ConversationPageOut {
        items: page.items.iter().map(ConversationOut::from).collect(),
        next_cursor: page.next_cursor.as_ref().map(cursor::encode),
    }))
}

/// One conversation.
#[utoipa::path(
    get, path = "/api/v1/conversations/{id}", tag = "conversations",
    params(("id" = String, Path, format = Uuid, description = "The conversation")),
    responses(
        (status = 200, description = "The conversation", body = ConversationOut),
        (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn show(
    state: web::Data<AppState>,
    AuthUser(actor): AuthUser,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = conversation_id(&id)?;
    let item = state.service.conversation(actor, id).await?;
    Ok(HttpResponse::Ok().json(ConversationOut::from(&item)))
}

/// Renames, archives or unarchives (admins).
#[utoipa::path(
    patch, path = "/api/v1/conversations/{id}", tag = "conversations",
    params(("id" = String, Path, format = Uuid, description = "The conversation")),
    request_body = UpdateConversationBody,
    responses(
        (status = 200, description = "The conversation", body = ConversationOut),
        (status = 403, description = "Forbidden", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn update(
    state: web::Data<AppState>,
    AuthUser(actor): AuthUser,
    id: web::Path<String>,
    body: web::Json<Object<UpdateConversationBody>>,
) -> Result<HttpResponse, ApiError> {
    let id = conversation_id(&id)?;
    let update = body.into_inner().0.into_domain()?;
    let item = state.service.update_conversation(actor, id, update).await?;
    Ok(HttpResponse::Ok().json(ConversationOut::from(&item)))
}

/// Adds participants (admins).
#[utoipa::path(
    post, path = "/api/v1/conversations/{id}/participants", tag = "participants",
    params(("id" = String, Path, format = Uuid, description = "The conversation")),
    request_body = AddParticipantsBody,
    responses(
        (status = 200, description = "The conversation", body = ConversationOut),
        (status = 403, description = "Forbidden", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Archived", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn add_participants(
    state: web::Data<AppState>,
    AuthUser(actor): AuthUser,
    id: web::Path<String>,
    body: web::Json<Object<AddParticipantsBody>>,
) -> Result<HttpResponse, ApiError> {
    let id = conversation_id(&id)?;
    let users = body.into_inner().0.into_domain()?;
    let item = state.service.add_participants(actor, id, users).await?;
    Ok(HttpResponse::Ok().json(ConversationOut::from(&item)))
}

/// Removes a participant (admins), or leaves when `user_id` is the caller.
#[utoipa::path(
    delete, path = "/api/v1/conversations/{id}/participants/{user_id}", tag = "participants",
    params(
        ("id" = String, Path, format = Uuid, description = "The conversation"),
        ("user_id" = i64, Path, description = "The participant"),
    ),
    responses(
        (status = 204, description = "Removed"),
        (status = 403, description = "Forbidden", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn remove_participant(
    state: web::Data<AppState>,
    AuthUser(actor): AuthUser,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, user) = path.into_inner();
    let id = conversation_id(&id)?;
    let user = user_id(&user)?;
    state.service.remove_participant(actor, id, user).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Changes a participant's role (admins).
#[utoipa::path(
    patch, path = "/api/v1/conversations/{id}/participants/{user_id}", tag = "participants",
    params(
        ("id" = String, Path, format = Uuid, description = "The conversation"),
        ("user_id" = i64, Path, description = "The participant"),
    ),
    request_body = ChangeRoleBody,
    responses(
        (status = 200, description = "The conversation", body = ConversationOut),
        (status = 403, description = "Forbidden", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Last admin", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn change_role(
    state: web::Data<AppState>,
    AuthUser(actor): AuthUser,
    path: web::Path<(String, String)>,
    body: web::Json<Object<ChangeRoleBody>>,
) -> Result<HttpResponse, ApiError> {
    let (id, user) = path.into_inner();
    let id = conversation_id(&id)?;
    let user = user_id(&user)?;
    let role = body.into_inner().0.into_domain()?;
    let item = state.service.change_role(actor, id, user, role).await?;
    Ok(HttpResponse::Ok().json(ConversationOut::from(&item)))
}

/// Mutes or unmutes the conversation for the caller.
#[utoipa::path(
    patch, path = "/api/v1/conversations/{id}/membership", tag = "read state",
    params(("id" = String, Path, format = Uuid, description = "The conversation")),
    request_body = MembershipBody,
    responses(
        (status = 200, description = "The caller's membership", body = MembershipOut),
        (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn set_membership(
    state: web::Data<AppState>,
    AuthUser(actor): AuthUser,
    id: web::Path<String>,
    body: web::Json<Object<MembershipBody>>,
) -> Result<HttpResponse, ApiError> {
    let id = conversation_id(&id)?;
    let muted = body.into_inner().0.into_domain()?;
    let item = state.service.set_muted(actor, id, muted).await?;
    Ok(HttpResponse::Ok().json(MembershipOut::new(&item.membership, item.unread_count)))
}

/// Moves the caller's read marker (default: to the newest message). The body may be
/// omitted.
#[utoipa::path(
    post, path = "/api/v1/conversations/{id}/read", tag = "read state",
    params(("id" = String, Path, format = Uuid, description = "The conversation")),
    request_body(content = Option<MarkReadBody>),
    responses(
        (status = 200, description = "The read state", body = ReadStateOut),
        (status = 400, description = "Validation failed", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not found", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn mark_read(
    state: web::Data<AppState>,
    AuthUser(actor): AuthUser,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let id = conversation_id(&id)?;
    let body: MarkReadBody = if body.iter().all(u8::is_ascii_whitespace) {
        MarkReadBody::default()
    } else {
        serde_json::from_slice::<Object<MarkReadBody>>(&body)
            .map_err(|err| ApiError::field("body", crate::error::json_message(&err)))?
            .0
    };
    let up_to = body.into_domain()?;
    let read = state.service.mark_read(actor, id, up_to).await?;
    Ok(HttpResponse::Ok().json(ReadStateOut::from(&read)))
}

/// The caller's unread badge.
#[utoipa::path(
    get, path = "/api/v1/unread", tag = "read state",
    responses(
        (status = 200, description = "Unread counts", body = UnreadOut),
        (status = 401, description = "Unauthorized", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn unread(
    state: web::Data<AppState>,
    AuthUser(actor): AuthUser,
) -> Result<HttpResponse, ApiError> {
    let summary = state.service.unread(actor).await?;
    Ok(HttpResponse::Ok().json(UnreadOut::from(&summary)))
}
