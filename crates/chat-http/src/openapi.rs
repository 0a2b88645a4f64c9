//! The OpenAPI 3.1 document, generated from the handlers' annotations and the wire types.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
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
    modifiers(&BearerAuth)
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
