//! The OpenAPI 3.1 document, generated from the handlers' annotations and the wire types.

use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::routes::{conversations, messages, ops};

/// The API description served at `/api/v1/openapi.json`.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "chat",
        description = "Conversations, messages, reactions and read state. Errors are \
            application/problem+json (RFC 9457) with a stable `code`."
    ),
    paths(
        conversations::create,
        conversations::open_direct,
        conversations::list,
        conversations::show,
        conversations::update,
        conversations::add_participants,
        conversations::remove_participant,
        conversations::change_role,
        conversations::set_membership,
        conversations::mark_read,
        conversations::unread,
        messages::history,
        messages::send,
        messages::show,
        messages::edit,
        messages::delete,
        messages::add_reaction,
        messages::remove_reaction,
        messages::receipts,
        ops::healthz,
        ops::readyz,
        ops::metrics,
        ops::openapi,
        crate::ws::connect,
    ),
    modifiers(&BearerAuth, &CommonProblems)
)]
pub struct ApiDoc;

/// Declares the `bearer` security scheme the operations refer to.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// Documents the answers every authenticated operation can give, whatever the handler:
/// `400` (a malformed path, query or body), `401` (no valid token), `429` and `503`
/// (with `Retry-After`). Listed once here rather than on each handler, so that no
/// operation can forget one.
struct CommonProblems;

fn problem(description: &str) -> RefOr<Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                crate::error::PROBLEM_JSON,
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            )
            .build(),
    )
}

impl Modify for CommonProblems {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            if !path.starts_with("/api/v1/") || path == "/api/v1/openapi.json" {
                continue;
            }
            let operations: [&mut Option<Operation>; 5] = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                let responses = &mut operation.responses.responses;
                for (status, description) in [
                    ("400", "Malformed path, query or body (`validation_failed`)"),
                    ("401", "Missing or invalid token (`unauthorized`)"),
                    (
                        "429",
                        "Too many requests (`rate_limited`), with Retry-After",
                    ),
                    (
                        "503",
                        "The store is unavailable (`unavailable`), with Retry-After",
                    ),
                ] {
                    responses
                        .entry(status.to_owned())
                        .or_insert_with(|| problem(description));
                }
            }
        }
    }
}
