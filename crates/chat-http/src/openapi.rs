//! The OpenAPI 3.1 document, generated from the handlers' annotations and the wire types,
//! then completed by [`document`] with every constraint the server enforces that the
//! annotations cannot spell (patterns that mirror the domain's parsers, ranges, required
//! non-null fields, the cases of a body that depend on one of its fields, the emoji
//! list), so that a request the document allows is one the server accepts, and the
//! reverse. `cargo xtask schemathesis` checks that claim against a running server.

use std::sync::OnceLock;

use chat_domain::Emoji;
use chat_domain::values::{
    MAX_CLIENT_MESSAGE_ID_CHARS, MAX_CONTENT_CHARS, MAX_GROUP_NAME_CHARS, MAX_MEDIA_URL_BYTES,
};
use serde_json::{Value, json};
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::routes::{conversations, messages, ops, sync};

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
        sync::sync,
        ops::healthz,
        ops::readyz,
        ops::metrics,
        ops::openapi,
        crate::ws::connect,
    ),
    modifiers(&BearerAuth, &CommonProblems)
)]
pub struct ApiDoc;

/// The document served at `/api/v1/openapi.json`: [`ApiDoc`] with the server's
/// constraints written in. Built once (the emoji list alone is thousands of parses), so
/// that serving it costs an anonymous client's request nothing more.
pub fn document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or(Value::Null);
        constrain(&mut doc);
        doc
    })
}

/// The `type` of every event the change feed serves (every event but `typing`).
const SYNCED_EVENT_TYPES: [&str; 11] = [
    "message.created",
    "message.updated",
    "message.deleted",
    "reaction.added",
    "reaction.removed",
    "conversation.read",
    "conversation.created",
    "conversation.updated",
    "participant.added",
    "participant.removed",
    "participant.updated",
];

/// White space as Rust's `str::trim` sees it (Unicode `White_Space`), for patterns.
const WHITE_SPACE: &str =
    r"\t\n\u000B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000";
/// Control characters (`char::is_control`), for patterns.
const CONTROL: &str = r"\u0000-\u001F\u007F-\u009F";
/// A UUID in its hyphenated form.
const UUID: &str = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";
/// The media URLs the document promises to accept: `http(s)`, a plain host name, an
/// optional path of printable ASCII (the server accepts more: any absolute `http(s)` URL
/// with a host and no white space, see `MediaUrl`).
const MEDIA_URL: &str =
    "^https?://[a-z][a-z0-9]{0,20}(\\.[a-z][a-z0-9]{0,20}){0,3}(/[!-~]{0,300})?$";

/// Message text (`MessageContent`): not only white space, no NUL.
fn content_pattern() -> String {
    format!("^[^\\u0000]*[^\\u0000{WHITE_SPACE}][^\\u0000]*$")
}

/// A group name (`GroupName`): 1 to 200 characters once trimmed, none of them a control.
fn name_pattern() -> String {
    let inner = MAX_GROUP_NAME_CHARS - 2;
    format!(
        "^[{WHITE_SPACE}]*[^{WHITE_SPACE}{CONTROL}]([^{CONTROL}]{{0,{inner}}}[^{WHITE_SPACE}{CONTROL}])?[{WHITE_SPACE}]*$"
    )
}

/// A positive user id.
fn user_id() -> Value {
    json!({"type": "integer", "format": "int64", "minimum": 1, "maximum": i64::MAX})
}

/// Replaces a schema, keeping its description.
fn replace(schema: Option<&mut Value>, with: Value) {
    let Some(schema) = found(schema) else { return };
    let description = schema.get("description").cloned();
    *schema = with;
    if let (Some(description), Some(object)) = (description, schema.as_object_mut()) {
        object.insert("description".to_owned(), description);
    }
}

/// Adds `fields` to an object schema.
fn extend(schema: Option<&mut Value>, fields: Value) {
    if let (Some(object), Value::Object(fields)) =
        (found(schema).and_then(Value::as_object_mut), fields)
    {
        object.extend(fields);
    }
}

/// Logs a schema that the annotations no longer produce (the tests fail on it).
fn found(schema: Option<&mut Value>) -> Option<&mut Value> {
    if schema.is_none() {
        tracing::error!("the OpenAPI document lacks a schema its constraints name");
    }
    schema
}

/// A component schema by name.
fn component<'a>(doc: &'a mut Value, name: &str) -> Option<&'a mut Value> {
    doc.pointer_mut(&format!("/components/schemas/{name}"))
}

/// The property `name` of a component schema.
fn property<'a>(doc: &'a mut Value, schema: &str, name: &str) -> Option<&'a mut Value> {
    component(doc, schema)?.pointer_mut(&format!("/properties/{name}"))
}

/// The schema of parameter `name` of every operation under `path` that has one.
fn parameters<'a>(doc: &'a mut Value, path: &str, name: &str) -> Vec<&'a mut Value> {
    let Some(item) = doc.pointer_mut(&format!("/paths/{}", path.replace('/', "~1"))) else {
        return Vec::new();
    };
    let Some(operations) = item.as_object_mut() else {
        return Vec::new();
    };
    operations
        .values_mut()
        .filter_map(|operation| operation.get_mut("parameters")?.as_array_mut())
        .flatten()
        .filter(|parameter| parameter["name"] == name)
        .filter_map(|parameter| parameter.get_mut("schema"))
        .collect()
}

/// Writes the server's constraints into `doc`.
fn constrain(doc: &mut Value) {
    let content = json!({"type": "string", "minLength": 1, "maxLength": MAX_CONTENT_CHARS, "pattern": content_pattern()});
    let name = json!({"type": ["string", "null"], "pattern": name_pattern()});

    // Bodies.
    replace(
        property(doc, "CreateConversationBody", "type"),
        json!({"type": "string", "enum": ["GROUP", "POST_LINKED"]}),
    );
    replace(
        property(doc, "CreateConversationBody", "name"),
        name.clone(),
    );
    extend(
        property(doc, "CreateConversationBody", "participant_ids"),
        json!({"items": user_id()}),
    );
    // GROUP needs a name and no posting, POST_LINKED an existing posting: said in the
    // descriptions, not as `if`/`then`, which schemathesis 4 misapplies to other bodies.
    replace(property(doc, "OpenDirectBody", "user_id"), user_id());
    extend(
        component(doc, "OpenDirectBody"),
        json!({"required": ["user_id"]}),
    );
    replace(property(doc, "UpdateConversationBody", "name"), name);
    replace(
        property(doc, "AddParticipantsBody", "user_ids"),
        json!({"type": "array", "minItems": 1, "items": user_id()}),
    );
    extend(
        component(doc, "AddParticipantsBody"),
        json!({"required": ["user_ids"]}),
    );
    replace(
        property(doc, "MembershipBody", "is_muted"),
        json!({"type": "boolean"}),
    );
    extend(
        component(doc, "MembershipBody"),
        json!({"required": ["is_muted"]}),
    );
    replace(property(doc, "SendMessageBody", "content"), content.clone());
    replace(
        property(doc, "SendMessageBody", "message_type"),
        json!({"type": ["string", "null"], "enum": ["TEXT", "IMAGE", "FILE", "LINK", null]}),
    );
    replace(
        property(doc, "SendMessageBody", "media_url"),
        json!({"type": ["string", "null"], "maxLength": MAX_MEDIA_URL_BYTES, "pattern": MEDIA_URL}),
    );
    replace(
        property(doc, "SendMessageBody", "client_message_id"),
        json!({"type": ["string", "null"], "minLength": 1,
               "maxLength": MAX_CLIENT_MESSAGE_ID_CHARS, "pattern": "^[ -~]+$"}),
    );
    extend(
        component(doc, "SendMessageBody"),
        json!({"required": ["content"], "allOf": [
            {"if": {"properties": {"message_type": {"enum": ["IMAGE", "FILE"]}},
                    "required": ["message_type"]},
             "then": {"required": ["media_url"], "properties": {"media_url": {"type": "string"}}}},
        ]}),
    );
    replace(property(doc, "EditMessageBody", "content"), content);
    extend(
        component(doc, "EditMessageBody"),
        json!({"required": ["content"]}),
    );

    // Parameters.
    let page = |default: u32| {
        json!({"type": "integer", "format": "int64", "minimum": 1,
               "maximum": chat_ports::PageLimit::MAX.get(), "default": default})
    };
    for schema in parameters(doc, "/api/v1/conversations", "limit") {
        replace(Some(schema), page(20));
    }
    for schema in parameters(doc, "/api/v1/conversations", "cursor") {
        replace(
            Some(schema),
            json!({"type": "string", "pattern": crate::cursor::PATTERN}),
        );
    }
    for schema in parameters(doc, "/api/v1/conversations", "archived") {
        replace(
            Some(schema),
            json!({"type": "string", "enum": ["false", "true", "any"], "default": "false"}),
        );
    }
    let history = "/api/v1/conversations/{id}/messages";
    for schema in parameters(doc, history, "limit") {
        replace(Some(schema), page(50));
    }
    for field in ["before_seq", "after_seq"] {
        for schema in parameters(doc, history, field) {
            replace(
                Some(schema),
                json!({"type": "integer", "format": "int64", "minimum": 0, "maximum": i64::MAX}),
            );
        }
    }
    for schema in parameters(
        doc,
        "/api/v1/conversations/{id}/participants/{user_id}",
        "user_id",
    ) {
        replace(Some(schema), user_id());
    }
    let emoji: Vec<String> = Emoji::all().map(|e| e.as_str().to_owned()).collect();
    if let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    {
        schemas.insert(
            "Emoji".to_owned(),
            json!({"type": "string", "enum": emoji,
                   "description": "One emoji, fully qualified (skin tones included)."}),
        );
    }
    for schema in parameters(doc, "/api/v1/messages/{id}/reactions/{emoji}", "emoji") {
        replace(Some(schema), json!({"$ref": "#/components/schemas/Emoji"}));
    }
    for path in ["/api/v1/sync", "/api/v1/ws"] {
        for schema in parameters(doc, path, "since") {
            replace(
                Some(schema),
                json!({"type": "string", "pattern": crate::sync_token::PATTERN}),
            );
        }
    }
    for schema in parameters(doc, "/api/v1/sync", "limit") {
        replace(
            Some(schema),
            json!({"type": "integer", "format": "int64", "minimum": 1,
                   "maximum": chat_service::SyncLimit::MAX.get(),
                   "default": crate::routes::sync::DEFAULT_SYNC_LIMIT}),
        );
    }
    replace(
        property(doc, "SyncPageOut", "events"),
        json!({"type": "array", "items": {
            "type": "object",
            "required": ["type", "pos"],
            "properties": {
                "type": {"type": "string", "enum": SYNCED_EVENT_TYPES},
                "pos": {"type": "integer", "format": "int64", "minimum": 1},
            },
            "additionalProperties": true,
        }}),
    );
    replace(
        property(doc, "SyncPageOut", "next"),
        json!({"type": "string", "pattern": crate::sync_token::PATTERN}),
    );
    extend(
        component(doc, "SyncPageOut"),
        json!({"required": ["events", "next", "has_more"]}),
    );
    websocket_handshake(doc);
    uuid_patterns(doc);
}

/// The headers of a WebSocket handshake (RFC 6455), which `GET /api/v1/ws` requires.
fn websocket_handshake(doc: &mut Value) {
    let header = |name: &str, schema: Value, description: &str| {
        json!({"name": name, "in": "header", "required": true, "schema": schema,
               "description": description})
    };
    let headers = [
        header(
            "Upgrade",
            json!({"type": "string", "enum": ["websocket"]}),
            "`websocket`",
        ),
        header(
            "Connection",
            json!({"type": "string", "enum": ["Upgrade"]}),
            "`Upgrade`",
        ),
        header(
            "Sec-WebSocket-Version",
            json!({"type": "string", "enum": ["13"]}),
            "`13`",
        ),
        header(
            "Sec-WebSocket-Key",
            json!({"type": "string", "pattern": "^[A-Za-z0-9+/]{21}[AQgw]==$"}),
            "16 random bytes, base64",
        ),
    ];
    // Beside the query parameters the annotations declare (`since`).
    let Some(operation) =
        found(doc.pointer_mut("/paths/~1api~1v1~1ws/get")).and_then(Value::as_object_mut)
    else {
        return;
    };
    match operation
        .entry("parameters")
        .or_insert_with(|| json!([]))
        .as_array_mut()
    {
        Some(parameters) => parameters.extend(headers),
        None => tracing::error!("the WebSocket operation's parameters are not a list"),
    }
}

/// Gives every `format: uuid` string the pattern the server parses.
fn uuid_patterns(value: &mut Value) {
    match value {
        Value::Object(object) => {
            if object.get("format").and_then(Value::as_str) == Some("uuid") {
                object.insert("pattern".to_owned(), Value::from(UUID));
            }
            object.values_mut().for_each(uuid_patterns);
        }
        Value::Array(items) => items.iter_mut().for_each(uuid_patterns),
        _ => {}
    }
}

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
/// (with `Retry-After`); on a conversation or message (`{id}`), `404`, and for a write
/// `403` and `409`; with a body, `413`. Listed once here rather than on each handler, so
/// that no operation can forget one.
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
            let on_resource = path.contains("{id}");
            let operations: [(bool, &mut Option<Operation>); 5] = [
                (false, &mut item.get),
                (true, &mut item.put),
                (true, &mut item.post),
                (true, &mut item.delete),
                (true, &mut item.patch),
            ];
            for (writes, operation) in operations {
                let Some(operation) = operation else {
                    continue;
                };
                let has_body = operation.request_body.is_some();
                let responses = &mut operation.responses.responses;
                for (status, description, applies) in [
                    (
                        "403",
                        "The caller's role does not allow it (`forbidden`)",
                        writes && on_resource,
                    ),
                    (
                        "404",
                        "No such resource, or the caller may not see it (`not_found`)",
                        on_resource,
                    ),
                    (
                        "409",
                        "The conversation is archived (`conversation_archived`), or the last \
                         admin would be lost (`last_admin`)",
                        writes && on_resource,
                    ),
                    (
                        "413",
                        "The body is larger than 64 KiB (`payload_too_large`)",
                        has_body,
                    ),
                ] {
                    if applies {
                        responses
                            .entry(status.to_owned())
                            .or_insert_with(|| problem(description));
                    }
                }
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

#[cfg(test)]
mod tests {
    use regex::Regex;

    use super::*;

    fn operation<'a>(doc: &'a Value, method: &str, path: &str) -> &'a Value {
        let pointer = format!("/paths/{}/{method}", path.replace('/', "~1"));
        doc.pointer(&pointer)
            .unwrap_or_else(|| panic!("{method} {path}"))
    }

    fn parameter<'a>(doc: &'a Value, method: &str, path: &str, name: &str) -> &'a Value {
        operation(doc, method, path)["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .map(|p| &p["schema"])
            .unwrap_or_else(|| panic!("{name} of {method} {path}"))
    }

    fn statuses(doc: &Value, method: &str, path: &str) -> Vec<String> {
        operation(doc, method, path)["responses"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    }

    #[test]
    fn rule_the_document_states_the_ranges_enums_and_required_fields_the_server_enforces() {
        let doc = document().clone();
        let inbox = "/api/v1/conversations";
        assert_eq!(
            parameter(&doc, "get", inbox, "archived")["enum"],
            json!(["false", "true", "any"])
        );
        let limit = parameter(&doc, "get", inbox, "limit");
        assert_eq!(
            (&limit["minimum"], &limit["maximum"]),
            (&json!(1), &json!(100))
        );
        let history = "/api/v1/conversations/{id}/messages";
        assert_eq!(parameter(&doc, "get", history, "before_seq")["minimum"], 0);
        let participant = "/api/v1/conversations/{id}/participants/{user_id}";
        assert_eq!(
            parameter(&doc, "delete", participant, "user_id")["minimum"],
            1
        );
        let schemas = &doc["components"]["schemas"];
        for (schema, field) in [
            ("OpenDirectBody", "user_id"),
            ("AddParticipantsBody", "user_ids"),
            ("MembershipBody", "is_muted"),
            ("SendMessageBody", "content"),
            ("EditMessageBody", "content"),
            ("CreateConversationBody", "type"),
        ] {
            let required = schemas[schema]["required"].as_array().unwrap();
            assert!(required.contains(&json!(field)), "{schema}.{field}");
            let kind = &schemas[schema]["properties"][field]["type"];
            assert!(
                !kind.as_array().is_some_and(|k| k.contains(&json!("null"))),
                "{schema}.{field} is required, so not nullable"
            );
        }
        assert_eq!(
            schemas["SendMessageBody"]["properties"]["message_type"]["enum"],
            json!(["TEXT", "IMAGE", "FILE", "LINK", null])
        );
        let emoji = schemas["Emoji"]["enum"].as_array().unwrap();
        assert!(emoji.contains(&json!("👍🏿")) && emoji.len() > 3000);
        assert!(!emoji.contains(&json!("a")));
    }

    #[test]
    fn rule_the_patterns_accept_what_the_parsers_accept() {
        let check = |pattern: &str, text: &str, parsed: bool| {
            let regex = Regex::new(pattern).unwrap();
            assert_eq!(regex.is_match(text), parsed, "{pattern} on {text:?}");
        };
        let content = content_pattern();
        for text in ["hi", " a ", "\u{3000}x", "multi\nline"] {
            check(
                &content,
                text,
                chat_domain::MessageContent::parse(text).is_ok(),
            );
        }
        for text in [" ", "\u{3000}", "\t\n", "a\0b"] {
            check(
                &content,
                text,
                chat_domain::MessageContent::parse(text).is_ok(),
            );
        }
        let name = name_pattern();
        let long = "n".repeat(MAX_GROUP_NAME_CHARS + 1);
        for text in [
            "team",
            " team ",
            "\nteam\t",
            "a b",
            " ",
            "",
            "a\u{1}b",
            "a\tb",
            &long[1..],
            &long,
        ] {
            check(&name, text, chat_domain::GroupName::parse(text).is_ok());
        }
        for text in ["0", "x y", "", "\u{7f}", &"k".repeat(65)] {
            check(
                "^[ -~]+$",
                text,
                chat_domain::ClientMessageId::parse(text).is_ok() || text.len() > 64,
            );
        }
        for text in [
            "https://example.com/a?b#c",
            "http://a",
            "ftp://a",
            "http://",
        ] {
            check(MEDIA_URL, text, chat_domain::MediaUrl::parse(text).is_ok());
        }
    }

    #[test]
    fn rule_every_status_an_operation_can_answer_is_declared() {
        let doc = document().clone();
        let edit = statuses(&doc, "patch", "/api/v1/messages/{id}");
        for status in [
            "200", "400", "401", "403", "404", "409", "413", "429", "503",
        ] {
            assert!(
                edit.contains(&status.to_owned()),
                "{status} of PATCH /messages/{{id}}"
            );
        }
        let sync = statuses(&doc, "get", "/api/v1/sync");
        for status in ["200", "400", "401", "410", "429", "503"] {
            assert!(sync.contains(&status.to_owned()), "{status} of GET /sync");
        }
        let limit = parameter(&doc, "get", "/api/v1/sync", "limit");
        assert_eq!(
            (&limit["minimum"], &limit["maximum"], &limit["default"]),
            (&json!(1), &json!(500), &json!(100))
        );
        for path in ["/api/v1/sync", "/api/v1/ws"] {
            assert_eq!(
                parameter(&doc, "get", path, "since")["pattern"],
                crate::sync_token::PATTERN,
                "{path}"
            );
        }
        let page = &doc["components"]["schemas"]["SyncPageOut"];
        assert_eq!(page["required"], json!(["events", "next", "has_more"]));
        assert_eq!(
            page["properties"]["events"]["items"]["required"],
            json!(["type", "pos"])
        );
        let ws = statuses(&doc, "get", "/api/v1/ws");
        for status in ["101", "400", "401", "403"] {
            assert!(ws.contains(&status.to_owned()), "{status} of the handshake");
        }
        assert_eq!(
            parameter(&doc, "get", "/api/v1/ws", "Upgrade")["enum"],
            json!(["websocket"])
        );
    }
}
