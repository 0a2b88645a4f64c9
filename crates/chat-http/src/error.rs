//! The one place where errors become HTTP: every failure a handler or extractor can meet
//! is an [`ApiError`], answered as `application/problem+json` (RFC 9457) with a stable
//! `code`.

use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::ServiceResponse;
use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::ErrorHandlerResponse;
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use chat_domain::ValidationError;
use chat_service::{ConflictCode, ServiceError};
use serde::Serialize;
use utoipa::ToSchema;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// How long clients should wait before retrying when the store is unavailable.
const UNAVAILABLE_RETRY_AFTER: Duration = Duration::from_secs(5);

/// One refused input field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// The field, as clients spell it (`content`, `media_url`, `body`, `query`, …).
    pub field: String,
    /// Why it was refused.
    pub message: String,
}

impl FieldError {
    /// A refusal of `field` for `message`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl From<ValidationError> for FieldError {
    fn from(err: ValidationError) -> Self {
        Self::new(err.field(), err.reason())
    }
}

/// An RFC 9457 problem document, as every error is answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem (`urn:chat:problem:<code>`).
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind of problem.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong this time.
    pub detail: String,
    /// The stable, machine-readable code (`not_found`, `validation_failed`, …).
    pub code: String,
    /// The refused fields (for `validation_failed` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
}

/// Everything that can go wrong in answering a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// A use case refused or failed.
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// No valid bearer token; the text says why, for logs and the client.
    #[error("unauthorized: {0}")]
    Unauthorized(&'static str),
    /// The request is malformed: one or more fields were refused.
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    /// No route matches the path.
    #[error("no such route")]
    RouteNotFound,
    /// The route exists but not with this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The body is larger than allowed.
    #[error("payload too large")]
    PayloadTooLarge,
}

impl ApiError {
    /// A validation failure of one field.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Validation(vec![FieldError::new(field, message)])
    }

    /// The stable problem code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Service(err) => match err {
                ServiceError::NotFound => "not_found",
                ServiceError::Forbidden(_) => "forbidden",
                ServiceError::Invalid { .. } => "validation_failed",
                ServiceError::Conflict { code } => match code {
                    ConflictCode::ConversationArchived => "conversation_archived",
                    ConflictCode::LastAdmin => "last_admin",
                    ConflictCode::TooManyEmoji => "too_many_emoji",
                    ConflictCode::TooManyReactions => "too_many_reactions",
                },
                ServiceError::RateLimited { .. } => "rate_limited",
                ServiceError::Unavailable => "unavailable",
                ServiceError::SyncTokenExpired => "sync_token_expired",
            },
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Validation(_) => "validation_failed",
            ApiError::RouteNotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::PayloadTooLarge => "payload_too_large",
        }
    }

    /// The problem document of this error.
    pub fn problem(&self) -> Problem {
        let status = self.status_code();
        let (detail, errors) = match self {
            ApiError::Service(err) => match err {
                ServiceError::NotFound => ("The resource does not exist.".to_owned(), None),
                ServiceError::Forbidden(why) => (capitalised(why), None),
                ServiceError::Invalid { field, reason } => (
                    format!("{field}: {reason}"),
                    Some(vec![FieldError::new(*field, reason.clone())]),
                ),
                ServiceError::Conflict { code } => (
                    match code {
                        ConflictCode::ConversationArchived => {
                            "The conversation is archived and read-only.".to_owned()
                        }
                        ConflictCode::LastAdmin => {
                            "The conversation would be left without an admin.".to_owned()
                        }
                        ConflictCode::TooManyEmoji => format!(
                            "The message already carries {} different emoji.",
                            chat_domain::MAX_DISTINCT_EMOJI_PER_MESSAGE
                        ),
                        ConflictCode::TooManyReactions => format!(
                            "You already put {} reactions on this message.",
                            chat_domain::MAX_REACTIONS_PER_USER_PER_MESSAGE
                        ),
                    },
                    None,
                ),
                ServiceError::RateLimited { retry_after } => (
                    format!(
                        "Too many requests of this kind; retry after {} s.",
                        retry_after_seconds(*retry_after)
                    ),
                    None,
                ),
                ServiceError::Unavailable => (
                    "The service is temporarily unavailable; retry later.".to_owned(),
                    None,
                ),
                ServiceError::SyncTokenExpired => (
                    "The sync token is older than the retention or from another deployment; \
                     reload and start again without a token."
                        .to_owned(),
                    None,
                ),
            },
            ApiError::Unauthorized(why) => (capitalised(why), None),
            ApiError::Validation(errors) => {
                let detail = errors
                    .iter()
                    .map(|e| format!("{}: {}", e.field, e.message))
                    .collect::<Vec<_>>()
                    .join("; ");
                (detail, Some(errors.clone()))
            }
            ApiError::RouteNotFound => ("No route matches this path.".to_owned(), None),
            ApiError::MethodNotAllowed => {
                ("The route does not support this method.".to_owned(), None)
            }
            ApiError::PayloadTooLarge => (
                format!("The body is larger than {} bytes.", crate::MAX_BODY_BYTES),
                None,
            ),
        };
        problem(status, self.code(), detail, errors)
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::Service(ServiceError::RateLimited { retry_after }) => Some(*retry_after),
            ApiError::Service(ServiceError::Unavailable) => Some(UNAVAILABLE_RETRY_AFTER),
            _ => None,
        }
    }
}

impl From<ValidationError> for ApiError {
    fn from(err: ValidationError) -> Self {
        ApiError::Validation(vec![err.into()])
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Service(err) => match err {
                ServiceError::NotFound => StatusCode::NOT_FOUND,
                ServiceError::Forbidden(_) => StatusCode::FORBIDDEN,
                ServiceError::Invalid { .. } => StatusCode::BAD_REQUEST,
                ServiceError::Conflict { .. } => StatusCode::CONFLICT,
                ServiceError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
                ServiceError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                ServiceError::SyncTokenExpired => StatusCode::GONE,
            },
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Validation(_) => StatusCode::BAD_REQUEST,
            ApiError::RouteNotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        response.insert_header((header::CONTENT_TYPE, PROBLEM_JSON));
        if let Some(wait) = self.retry_after() {
            response.insert_header((header::RETRY_AFTER, retry_after_seconds(wait).to_string()));
        }
        if matches!(self, ApiError::Unauthorized(_)) {
            response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        response.body(problem_body(&self.problem()))
    }
}

/// A problem document for `status` with `code`.
fn problem(
    status: StatusCode,
    code: &str,
    detail: String,
    errors: Option<Vec<FieldError>>,
) -> Problem {
    Problem {
        kind: format!("urn:chat:problem:{code}"),
        title: status.canonical_reason().unwrap_or("Error").to_owned(),
        status: status.as_u16(),
        detail,
        code: code.to_owned(),
        errors,
    }
}

fn problem_body(problem: &Problem) -> String {
    // Serialising a struct of strings cannot fail; the fallback keeps this total.
    serde_json::to_string(problem).unwrap_or_else(|_| {
        format!(
            r#"{{"type":"about:blank","title":"Error","status":{},"code":"internal"}}"#,
            problem.status
        )
    })
}

/// Whole seconds, rounded up, never below one.
fn retry_after_seconds(wait: Duration) -> u64 {
    let whole = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    whole.max(1)
}

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => format!("{}{}.", first.to_uppercase(), chars.as_str()),
        None => String::new(),
    }
}

/// The error handler of actix's JSON extractor: malformed JSON and wrong types are 400,
/// an oversized body 413.
pub(crate) fn json_error(err: JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
    match err {
        JsonPayloadError::OverflowKnownLength { .. } | JsonPayloadError::Overflow { .. } => {
            ApiError::PayloadTooLarge.into()
        }
        JsonPayloadError::Deserialize(err) => ApiError::field("body", json_message(&err)).into(),
        JsonPayloadError::ContentType => {
            ApiError::field("body", "the body must be application/json").into()
        }
        other => ApiError::field("body", other.to_string()).into(),
    }
}

/// Describes a JSON error without echoing the body.
pub(crate) fn json_message(err: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match err.classify() {
        Category::Syntax | Category::Eof => {
            format!(
                "malformed JSON at line {} column {}",
                err.line(),
                err.column()
            )
        }
        Category::Data | Category::Io => err.to_string(),
    }
}

/// The error handler of actix's path extractor.
pub(crate) fn path_error(err: PathError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::field("path", err.to_string()).into()
}

/// The error handler of actix's query extractor.
pub(crate) fn query_error(err: QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::field("query", err.to_string()).into()
}

/// Turns any error response that is not a problem document yet (actix's own 404, 405,
/// 413, …) into one, so that clients meet a single error format.
///
/// # Errors
/// Never; the signature is the one actix's `ErrorHandlers` requires.
pub(crate) fn ensure_problem<B: MessageBody + 'static>(
    res: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_problem = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    if is_problem {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let api_error = match status {
        StatusCode::NOT_FOUND => Some(ApiError::RouteNotFound),
        StatusCode::METHOD_NOT_ALLOWED => Some(ApiError::MethodNotAllowed),
        StatusCode::PAYLOAD_TOO_LARGE => Some(ApiError::PayloadTooLarge),
        StatusCode::UNAUTHORIZED => Some(ApiError::Unauthorized("missing or invalid token")),
        _ => None,
    };
    let body = match &api_error {
        Some(err) => problem_body(&err.problem()),
        None => {
            let code = if status.is_server_error() {
                "internal"
            } else {
                "bad_request"
            };
            let detail = if status.is_server_error() {
                "An unexpected error occurred.".to_owned()
            } else {
                "The request was refused.".to_owned()
            };
            problem_body(&problem(status, code, detail, None))
        }
    };
    let (req, res) = res.into_parts();
    let mut response = HttpResponse::with_body(res.status(), BoxBody::new(body));
    for (name, value) in res.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            response.headers_mut().append(name.clone(), value.clone());
        }
    }
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    Ok(ErrorHandlerResponse::Response(
        ServiceResponse::new(req, response).map_into_right_body::<B>(),
    ))
}

#[cfg(test)]
mod tests {
    use actix_web::body::to_bytes;
    use serde_json::{Value, json};

    use super::*;

    async fn rendered(err: ApiError) -> (u16, Option<String>, Value) {
        let response = err.error_response();
        let status = response.status().as_u16();
        assert_eq!(
            response
                .headers()
                .get(header::CONTENT_TYPE)
                .map(|v| v.as_bytes()),
            Some(PROBLEM_JSON.as_bytes())
        );
        let retry = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = to_bytes(response.into_body()).await.unwrap();
        (status, retry, serde_json::from_slice(&bytes).unwrap())
    }

    fn expected(status: u16, title: &str, code: &str, detail: &str) -> Value {
        json!({
            "type": format!("urn:chat:problem:{code}"),
            "title": title,
            "status": status,
            "detail": detail,
            "code": code,
        })
    }

    #[actix_web::test]
    async fn every_error_has_pinned_json() {
        let cases: Vec<(ApiError, u16, Option<&str>, Value)> = vec![
            (
                ApiError::Unauthorized("token expired"),
                401,
                None,
                expected(401, "Unauthorized", "unauthorized", "Token expired."),
            ),
            (
                ServiceError::Forbidden("only admins may do this").into(),
                403,
                None,
                expected(403, "Forbidden", "forbidden", "Only admins may do this."),
            ),
            (
                ServiceError::NotFound.into(),
                404,
                None,
                expected(
                    404,
                    "Not Found",
                    "not_found",
                    "The resource does not exist.",
                ),
            ),
            (
                ServiceError::Invalid {
                    field: "content",
                    reason: "must not be blank".into(),
                }
                .into(),
                400,
                None,
                json!({
                    "type": "urn:chat:problem:validation_failed",
                    "title": "Bad Request",
                    "status": 400,
                    "detail": "content: must not be blank",
                    "code": "validation_failed",
                    "errors": [{"field": "content", "message": "must not be blank"}],
                }),
            ),
            (
                ApiError::Validation(vec![
                    FieldError::new("limit", "must be between 1 and 100"),
                    FieldError::new("cursor", "is not a valid cursor"),
                ]),
                400,
                None,
                json!({
                    "type": "urn:chat:problem:validation_failed",
                    "title": "Bad Request",
                    "status": 400,
                    "detail": "limit: must be between 1 and 100; cursor: is not a valid cursor",
                    "code": "validation_failed",
                    "errors": [
                        {"field": "limit", "message": "must be between 1 and 100"},
                        {"field": "cursor", "message": "is not a valid cursor"},
                    ],
                }),
            ),
            (
                ServiceError::Conflict {
                    code: ConflictCode::ConversationArchived,
                }
                .into(),
                409,
                None,
                expected(
                    409,
                    "Conflict",
                    "conversation_archived",
                    "The conversation is archived and read-only.",
                ),
            ),
            (
                ServiceError::Conflict {
                    code: ConflictCode::LastAdmin,
                }
                .into(),
                409,
                None,
                expected(
                    409,
                    "Conflict",
                    "last_admin",
                    "The conversation would be left without an admin.",
                ),
            ),
            (
                ServiceError::Conflict {
                    code: ConflictCode::TooManyEmoji,
                }
                .into(),
                409,
                None,
                expected(
                    409,
                    "Conflict",
                    "too_many_emoji",
                    "The message already carries 50 different emoji.",
                ),
            ),
            (
                ServiceError::Conflict {
                    code: ConflictCode::TooManyReactions,
                }
                .into(),
                409,
                None,
                expected(
                    409,
                    "Conflict",
                    "too_many_reactions",
                    "You already put 20 reactions on this message.",
                ),
            ),
            (
                ApiError::PayloadTooLarge,
                413,
                None,
                expected(
                    413,
                    "Payload Too Large",
                    "payload_too_large",
                    "The body is larger than 65536 bytes.",
                ),
            ),
            (
                ServiceError::RateLimited {
                    retry_after: Duration::from_millis(1500),
                }
                .into(),
                429,
                Some("2"),
                expected(
                    429,
                    "Too Many Requests",
                    "rate_limited",
                    "Too many requests of this kind; retry after 2 s.",
                ),
            ),
            (
                ServiceError::Unavailable.into(),
                503,
                Some("5"),
                expected(
                    503,
                    "Service Unavailable",
                    "unavailable",
                    "The service is temporarily unavailable; retry later.",
                ),
            ),
            (
                ServiceError::SyncTokenExpired.into(),
                410,
                None,
                expected(
                    410,
                    "Gone",
                    "sync_token_expired",
                    "The sync token is older than the retention or from another deployment; \
                     reload and start again without a token.",
                ),
            ),
            (
                ApiError::RouteNotFound,
                404,
                None,
                expected(404, "Not Found", "not_found", "No route matches this path."),
            ),
            (
                ApiError::MethodNotAllowed,
                405,
                None,
                expected(
                    405,
                    "Method Not Allowed",
                    "method_not_allowed",
                    "The route does not support this method.",
                ),
            ),
        ];
        for (err, status, retry_after, body) in cases {
            let label = format!("{err:?}");
            assert_eq!(
                rendered(err).await,
                (status, retry_after.map(str::to_owned), body),
                "{label}"
            );
        }
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
        assert_eq!(retry_after_seconds(Duration::from_secs(3)), 3);
        assert_eq!(retry_after_seconds(Duration::from_millis(3001)), 4);
    }
}
